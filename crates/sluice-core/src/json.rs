//! OTLP/JSON ↔ protobuf transcoding, shared by the OTLP/HTTP receiver and the Kafka
//! components (`otlp_json`).
//!
//! Sluice keeps telemetry encoded as protobuf bytes through the whole pipeline,
//! so an OTLP/HTTP JSON request is not deserialised into prost structs only to
//! be re-encoded: [`json_to_protobuf`] walks the parsed JSON document against a
//! static description of the OTLP messages ([`schema`]) and writes the wire
//! encoding of the corresponding `Export*ServiceRequest` directly.
//!
//! Fields are emitted in the order prost emits them and proto3 defaults are
//! skipped the way prost skips them, so for any request the output is
//! byte-identical to `prost::Message::encode_to_vec` of the same request.
//!
//! Reading follows the OTLP/JSON rules of the OTLP specification and is
//! lenient where the Go collector is lenient:
//! - keys are the lowerCamelCase JSON names; the snake_case proto names are
//!   accepted too; unknown keys are ignored at any depth; `null` means absent;
//! - trace and span ids are hex (any case), not base64; `""` means absent;
//! - other `bytes` are base64, standard or URL-safe, padded or not;
//! - enums are integers or value names (`"SPAN_KIND_SERVER"`);
//! - integers are JSON numbers or decimal strings, refused when out of their
//!   type's range; doubles are numbers or strings (`"NaN"`, `"Infinity"`,
//!   `"-Infinity"` exactly, as the protobuf JSON mapping spells them, or
//!   `"1.5"`); other spellings (`"nan"`, `"inf"`) are refused. Doubles are
//!   parsed exactly because this crate enables serde_json's `float_roundtrip`
//!   feature (its default parser is sometimes off by one ULP).
//!
//! Setting two members of the same oneof (e.g. both `stringValue` and
//! `intValue`) is rejected rather than resolved by key order, because
//! `serde_json::Map` does not preserve document order and any choice would be
//! arbitrary.

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::Signal;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::schema::{self, EnumDesc, FieldDesc, Kind, Label, MessageDesc};

/// The deepest message nesting accepted below the request message.
///
/// serde_json already refuses documents nested deeper than 128 levels, which
/// bounds every recursion here; this limit is the transcoder's own guard so it
/// never relies on the parser's configuration. Legitimate OTLP needs about 8
/// levels plus 2 per level of `arrayValue`/`kvlistValue` nesting.
const MAX_DEPTH: usize = 64;

/// Why an OTLP/JSON body could not be transcoded.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The body is not valid JSON (this includes nesting beyond serde_json's
    /// recursion limit).
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// The body is valid JSON but not a valid OTLP/JSON request. `path` names
    /// the offending value, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId`
    /// (or `request body` for the document itself).
    #[error("{path}: {message}")]
    Invalid {
        /// Where: a JSON path, or the message name.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// Transcodes an OTLP/JSON request body into the protobuf encoding of the
/// signal's `Export*ServiceRequest` (`ExportTraceServiceRequest`,
/// `ExportMetricsServiceRequest` or `ExportLogsServiceRequest`).
pub fn json_to_protobuf(signal: Signal, body: &[u8]) -> Result<Vec<u8>, JsonError> {
    let document: Value = serde_json::from_slice(body).map_err(syntax_error)?;
    // Protobuf is usually well under half the size of the equivalent JSON.
    let mut transcoder = Transcoder {
        out: Vec::with_capacity(body.len() / 2),
        path: Vec::new(),
        depth: 0,
    };
    let Value::Object(object) = &document else {
        return Err(transcoder.expected("an object", &document));
    };
    transcoder.message(schema::request_for(signal), object)?;
    Ok(transcoder.out)
}

/// Converts a serde_json parse error, moving the position out of the message
/// into the structured fields so the Display reads naturally.
fn syntax_error(err: serde_json::Error) -> JsonError {
    let (line, column) = (err.line(), err.column());
    let mut message = err.to_string();
    let position = format!(" at line {line} column {column}");
    if let Some(stripped) = message.strip_suffix(&position) {
        message.truncate(stripped.len());
    }
    JsonError::Syntax {
        line,
        column,
        message,
    }
}

/// One step of the path from the document root to the value being transcoded.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The transcoding state: the output buffer and where in the document we are.
struct Transcoder<'a> {
    out: Vec<u8>,
    /// Kept up to date while walking so an error can name its location; it is
    /// only rendered to a string when an error actually occurs.
    path: Vec<Segment<'a>>,
    /// Number of messages currently open below the request message.
    depth: usize,
}

impl<'a> Transcoder<'a> {
    /// Writes the fields of `desc` found in `object`, in schema (= prost) order.
    fn message(
        &mut self,
        desc: &'static MessageDesc,
        object: &'a Map<String, Value>,
    ) -> Result<(), JsonError> {
        // The oneof member already written, if any, with the key it came from.
        // Members of one oneof are adjacent in the schema, so remembering the
        // last one is enough.
        let mut oneof_seen: Option<(&'static str, &'a str)> = None;
        for field in desc.fields {
            let Some((key, value)) = lookup(object, field) else {
                continue;
            };
            self.path.push(Segment::Key(key));
            if let Label::Oneof(group) = field.label {
                let conflict = oneof_seen.filter(|&(seen_group, _)| seen_group == group);
                if let Some((_, seen_key)) = conflict {
                    return Err(self.error(format!(
                        "conflicts with `{seen_key}`: only one member of oneof {group} may be set"
                    )));
                }
                oneof_seen = Some((group, key));
            }
            self.field(field, value)?;
            self.path.pop();
        }
        Ok(())
    }

    /// Writes one present (non-null) field.
    fn field(&mut self, field: &'static FieldDesc, value: &'a Value) -> Result<(), JsonError> {
        match field.label {
            Label::Singular => self.value(field.number, field.kind, value, false),
            // Explicit presence: the field is written even when it holds the
            // default value, so the receiver can tell "set to 0" from "unset".
            Label::Optional | Label::Oneof(_) => self.value(field.number, field.kind, value, true),
            Label::Repeated => {
                let Value::Array(items) = value else {
                    return Err(self.expected("an array", value));
                };
                if field.kind.is_packable() {
                    return self.packed(field, items);
                }
                for (index, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(index));
                    // Every element of a repeated field is written, defaults included.
                    self.value(field.number, field.kind, item, true)?;
                    self.path.pop();
                }
                Ok(())
            }
        }
    }

    /// Writes a packed repeated scalar field: one length-delimited record
    /// holding the concatenated payloads, omitted entirely when empty (as prost
    /// does).
    fn packed(&mut self, field: &'static FieldDesc, items: &'a [Value]) -> Result<(), JsonError> {
        if items.is_empty() {
            return Ok(());
        }
        let start = self.begin_length_delimited(field.number);
        for (index, item) in items.iter().enumerate() {
            self.path.push(Segment::Index(index));
            let scalar = self.scalar(field.kind, item)?;
            scalar.write_payload(&mut self.out);
            self.path.pop();
        }
        self.end_length_delimited(start);
        Ok(())
    }

    /// Writes one value of a field. With `always` false, a scalar holding its
    /// proto3 default is skipped; messages are always written when present
    /// (an empty JSON object still says "this message is set").
    fn value(
        &mut self,
        number: u32,
        kind: Kind,
        value: &'a Value,
        always: bool,
    ) -> Result<(), JsonError> {
        if let Kind::Message(desc) = kind {
            let Value::Object(object) = value else {
                return Err(self.expected("an object", value));
            };
            if self.depth >= MAX_DEPTH {
                return Err(self.error(format!(
                    "{} nested too deeply (more than {MAX_DEPTH} levels of messages)",
                    desc.name
                )));
            }
            self.depth += 1;
            let start = self.begin_length_delimited(number);
            self.message(desc, object)?;
            self.end_length_delimited(start);
            self.depth -= 1;
            return Ok(());
        }
        let scalar = self.scalar(kind, value)?;
        if always || !scalar.is_default() {
            write_key(number, scalar.wire_type(), &mut self.out);
            scalar.write_payload(&mut self.out);
        }
        Ok(())
    }

    fn scalar(&self, kind: Kind, value: &'a Value) -> Result<Scalar<'a>, JsonError> {
        parse_scalar(kind, value).map_err(|message| self.error(message))
    }

    /// Starts a length-delimited record: writes the key and a one-byte
    /// placeholder for the length, and returns where the contents start.
    fn begin_length_delimited(&mut self, number: u32) -> usize {
        write_key(number, WIRE_LEN, &mut self.out);
        self.out.push(0);
        self.out.len()
    }

    /// Finishes a record started at `start` by filling in its length.
    ///
    /// Most records are shorter than 128 bytes, so their one-byte placeholder
    /// is simply overwritten; longer ones widen it, shifting the contents once
    /// (a memmove, cheaper than encoding each child into its own buffer).
    fn end_length_delimited(&mut self, start: usize) {
        let len = self.out.len() - start;
        let (bytes, n) = varint_bytes(len as u64);
        if n == 1 {
            self.out[start - 1] = bytes[0];
        } else {
            self.out
                .splice(start - 1..start, bytes[..n].iter().copied());
        }
    }

    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError::Invalid {
            path: render_path(&self.path),
            message: message.into(),
        }
    }

    fn expected(&self, what: &str, value: &Value) -> JsonError {
        self.error(expected(what, value))
    }
}

/// Finds a field in a JSON object by its JSON name, or else its proto name.
/// A `null` value counts as absent.
fn lookup<'a>(object: &'a Map<String, Value>, field: &FieldDesc) -> Option<(&'a str, &'a Value)> {
    let present = |name: &str| {
        object
            .get_key_value(name)
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.as_str(), value))
    };
    present(field.json_name).or_else(|| {
        if field.proto_name == field.json_name {
            None
        } else {
            present(field.proto_name)
        }
    })
}

fn render_path(path: &[Segment<'_>]) -> String {
    if path.is_empty() {
        return "request body".to_owned();
    }
    let mut rendered = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !rendered.is_empty() {
                    rendered.push('.');
                }
                rendered.push_str(key);
            }
            Segment::Index(index) => {
                let _ = write!(rendered, "[{index}]");
            }
        }
    }
    rendered
}

// ---------------------------------------------------------------------------
// Scalars

/// Protobuf wire types.
const WIRE_VARINT: u32 = 0;
const WIRE_I64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_I32: u32 = 5;

/// A scalar value converted from JSON, ready to be written.
enum Scalar<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Double(f64),
    Bytes(Cow<'a, [u8]>),
}

impl Scalar<'_> {
    /// Whether prost would skip this value in an implicit-presence field.
    /// For doubles that is `value == 0.0`, which also holds for `-0.0`.
    fn is_default(&self) -> bool {
        match self {
            Scalar::Varint(v) | Scalar::Fixed64(v) => *v == 0,
            Scalar::Fixed32(v) => *v == 0,
            Scalar::Double(v) => *v == 0.0,
            Scalar::Bytes(bytes) => bytes.is_empty(),
        }
    }

    fn wire_type(&self) -> u32 {
        match self {
            Scalar::Varint(_) => WIRE_VARINT,
            Scalar::Fixed32(_) => WIRE_I32,
            Scalar::Fixed64(_) | Scalar::Double(_) => WIRE_I64,
            Scalar::Bytes(_) => WIRE_LEN,
        }
    }

    /// Writes the value without its key (the form packed fields concatenate).
    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Varint(v) => write_varint(*v, out),
            Scalar::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Bytes(bytes) => {
                write_varint(bytes.len() as u64, out);
                out.extend_from_slice(bytes);
            }
        }
    }
}

fn write_key(number: u32, wire_type: u32, out: &mut Vec<u8>) {
    write_varint(u64::from((number << 3) | wire_type), out);
}

fn write_varint(value: u64, out: &mut Vec<u8>) {
    let (bytes, n) = varint_bytes(value);
    out.extend_from_slice(&bytes[..n]);
}

/// The base-128 varint encoding of `value` and its length.
fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    (bytes, n + 1)
}

/// Converts a JSON value to a scalar of `kind`; the error is a message
/// without the path (the caller adds it).
fn parse_scalar(kind: Kind, value: &Value) -> Result<Scalar<'_>, String> {
    Ok(match kind {
        Kind::String => Scalar::Bytes(Cow::Borrowed(expect_str(value)?.as_bytes())),
        Kind::Bytes => Scalar::Bytes(Cow::Owned(decode_base64(expect_str(value)?)?)),
        Kind::HexId(len) => Scalar::Bytes(Cow::Owned(decode_hex_id(expect_str(value)?, len)?)),
        Kind::Bool => Scalar::Varint(u64::from(parse_bool(value)?)),
        // int32 and enums are sign-extended to 64 bits, as protobuf requires.
        Kind::Int32 => Scalar::Varint(i64::from(parse_int::<i32>(value, "int32")?) as u64),
        Kind::Enum(desc) => Scalar::Varint(i64::from(parse_enum(desc, value)?) as u64),
        Kind::Int64 => Scalar::Varint(parse_int::<i64>(value, "int64")? as u64),
        Kind::Uint32 => Scalar::Varint(u64::from(parse_int::<u32>(value, "uint32")?)),
        Kind::Uint64 => Scalar::Varint(parse_int::<u64>(value, "uint64")?),
        Kind::Sint32 => {
            let v = parse_int::<i32>(value, "sint32")?;
            Scalar::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
        }
        Kind::Fixed32 => Scalar::Fixed32(parse_int::<u32>(value, "fixed32")?),
        Kind::Fixed64 => Scalar::Fixed64(parse_int::<u64>(value, "fixed64")?),
        Kind::Sfixed64 => Scalar::Fixed64(parse_int::<i64>(value, "sfixed64")? as u64),
        Kind::Double => Scalar::Double(parse_double(value)?),
        // Messages never reach here (see `Transcoder::value`), and cannot be
        // packed; answer with an error rather than a panic regardless.
        Kind::Message(desc) => return Err(format!("{} is not a scalar", desc.name)),
    })
}

fn expect_str(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| expected("a string", value))
}

fn parse_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        // Lenient, like the Go collector.
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(expected("a boolean", other)),
    }
}

/// 2^63 and 2^64, exactly representable as doubles.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Parses an integer given as a JSON number or a decimal string and checks
/// that it fits `T` (`type_name` is the proto type, for the message). Every
/// integer kind goes through here, so int64, uint64, sfixed64 and fixed64
/// fields all refuse out-of-range values the same way.
fn parse_int<T: TryFrom<i128>>(value: &Value, type_name: &str) -> Result<T, String> {
    let out_of_range = || format!("{} is out of range for {type_name}", describe(value));
    let wide: i128 = match value {
        Value::Number(number) => {
            if let Some(n) = number.as_i64() {
                n.into()
            } else if let Some(n) = number.as_u64() {
                n.into()
            } else {
                // A float: accept it when it is integral (`1e3`, `5.0`) and strictly inside
                // (-2^63, 2^64). serde_json makes an integer literal a float only when it fits
                // neither i64 nor u64, and rounding can land it exactly on -2^63:
                // `-9223372036854775809` arrives as -2^63, which must not pass as i64::MIN.
                match number.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 => {
                        if f <= -TWO_POW_63 || f >= TWO_POW_64 {
                            return Err(out_of_range());
                        }
                        f as i128
                    }
                    _ => return Err(expected("an integer", value)),
                }
            }
        }
        Value::String(s) => match s.parse::<i128>() {
            Ok(n) => n,
            Err(_) => {
                let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(out_of_range());
                }
                return Err(expected("an integer", value));
            }
        },
        other => return Err(expected("an integer", other)),
    };
    T::try_from(wide).map_err(|_| out_of_range())
}

/// Parses an enum given as its value name, or as an integer (number or
/// string). Unknown integers are kept: proto3 enums are open.
fn parse_enum(desc: &EnumDesc, value: &Value) -> Result<i32, String> {
    match value {
        Value::String(name) => match desc.value_of(name) {
            Some(number) => Ok(number),
            None => parse_int::<i32>(value, desc.name)
                .map_err(|_| format!("unknown {} value {}", desc.name, describe(value))),
        },
        Value::Number(_) => parse_int::<i32>(value, desc.name),
        other => Err(expected("an enum name or integer", other)),
    }
}

/// Parses a double given as a JSON number, a numeric string, or one of the
/// three spellings the protobuf JSON mapping gives the special values.
fn parse_double(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => number.as_f64().ok_or_else(|| expected("a number", value)),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            // Rust's float parser also reads `nan`, `inf`, `+Infinity` and the
            // like in any case, and reads `1e400` as infinity: only its finite
            // results are numbers here.
            _ => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(f),
                Ok(_) if s.bytes().any(|b| b.is_ascii_digit()) => {
                    Err(format!("{} is out of range for double", describe(value)))
                }
                Ok(_) => Err(format!(
                    r#"{} (special values are spelled "NaN", "Infinity" and "-Infinity")"#,
                    expected("a number", value)
                )),
                Err(_) => Err(expected("a number", value)),
            },
        },
        other => Err(expected("a number", other)),
    }
}

/// The standard and URL-safe base64 alphabets, accepting input with or
/// without padding (proto3 JSON parsers accept both).
const LENIENT_BASE64: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT_BASE64);
const URL_SAFE_BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT_BASE64);

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let engine = if text.contains(['-', '_']) {
        &URL_SAFE_BASE64
    } else {
        &STANDARD_BASE64
    };
    engine.decode(text).map_err(|err| match err {
        base64::DecodeError::InvalidByte(offset, byte) => format!(
            "invalid base64: unexpected character {:?} at offset {offset}",
            char::from(byte)
        ),
        base64::DecodeError::InvalidLength(len) => {
            format!("invalid base64: {len} symbols is not a valid length")
        }
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("invalid base64: invalid last symbol at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "invalid base64: invalid padding".to_owned(),
    })
}

/// Decodes a hex trace/span id of `len` bytes; the empty string is the
/// absent id.
fn decode_hex_id(text: &str, len: usize) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let count = text.chars().count();
    if count != 2 * len {
        return Err(format!("expected {} hex characters, got {count}", 2 * len));
    }
    if let Some((position, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(format!(
            "invalid hex character {c:?} at position {position}"
        ));
    }
    let mut bytes = vec![0; len];
    hex::decode_to_slice(text, &mut bytes).map_err(|err| format!("invalid hex: {err}"))?;
    Ok(bytes)
}

fn expected(what: &str, value: &Value) -> String {
    format!("expected {what}, got {}", describe(value))
}

/// A short rendering of a JSON value for error messages: scalars as JSON
/// (long strings truncated), containers by their type.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let prefix: String = s.chars().take(MAX_CHARS).collect();
            format!("{}...", Value::String(prefix))
        }
        scalar => scalar.to_string(),
    }
}

/// Transcodes the protobuf encoding of a signal's `Export*ServiceRequest` into OTLP/JSON, the
/// reverse of [`json_to_protobuf`], walking the wire format against the same schema and writing
/// the text as it goes (nothing is decoded into prost structs or a JSON tree). The output is what
/// the OTLP specification and the Collector write: lowerCamelCase keys, trace and span ids in
/// lowercase hex, other bytes in standard base64, 64-bit integers as decimal strings, enums as
/// numbers, non-finite doubles as `"NaN"`, `"Infinity"` and `"-Infinity"`; fields in the schema's
/// order, a repeated field's values in wire order, the last value of a singular field (as
/// protobuf reads it). Fields unknown to the schema are left out.
///
/// # Errors
/// [`JsonError::Invalid`] naming the message when the bytes are not a well-formed request.
pub fn protobuf_to_json(signal: Signal, request: &[u8]) -> Result<Vec<u8>, JsonError> {
    let mut out = String::with_capacity(request.len() * 2);
    write_message(schema::request_for(signal), request, 0, &mut out)?;
    Ok(out.into_bytes())
}

fn wire_error(desc: &MessageDesc, message: impl std::fmt::Display) -> JsonError {
    JsonError::Invalid {
        path: desc.name.to_owned(),
        message: message.to_string(),
    }
}

fn write_message(
    desc: &MessageDesc,
    bytes: &[u8],
    depth: usize,
    out: &mut String,
) -> Result<(), JsonError> {
    if depth > MAX_DEPTH {
        return Err(wire_error(desc, "nested too deep"));
    }
    // The known fields by their place in the schema; a stable sort keeps a repeated field's
    // values in wire order (prost writes them together, in schema order, so this rarely moves).
    let mut fields: Vec<(usize, crate::wire::Field<'_>)> = Vec::new();
    for field in crate::wire::fields(bytes) {
        let field = field.map_err(|err| wire_error(desc, err))?;
        if let Some(index) = desc.index(field.number) {
            fields.push((index, field));
        }
    }
    fields.sort_by_key(|(index, _)| *index);
    out.push('{');
    let mut k = 0;
    while k < fields.len() {
        let index = fields[k].0;
        let end = k + fields[k..].iter().take_while(|(i, _)| *i == index).count();
        let fd = &desc.fields[index];
        if k > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(fd.json_name);
        out.push_str("\":");
        if fd.label == Label::Repeated {
            out.push('[');
            let mut first = true;
            for (_, field) in &fields[k..end] {
                if fd.kind.is_packable() && field.wire_type == crate::wire::WireType::Len {
                    unpack(desc, fd.kind, field.payload, &mut first, out)?;
                } else {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write_value(desc, fd.kind, field, depth, out)?;
                }
            }
            out.push(']');
        } else {
            write_value(desc, fd.kind, &fields[end - 1].1, depth, out)?;
        }
        k = end;
    }
    out.push('}');
    Ok(())
}

/// The values of a packed repeated scalar field, each preceded by a comma but the first.
fn unpack(
    desc: &MessageDesc,
    kind: Kind,
    mut payload: &[u8],
    first: &mut bool,
    out: &mut String,
) -> Result<(), JsonError> {
    while !payload.is_empty() {
        if !*first {
            out.push(',');
        }
        *first = false;
        let used = match kind {
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
                let Some(bytes) = payload.first_chunk::<8>() else {
                    return Err(wire_error(desc, "packed field is not whole values"));
                };
                write_fixed64(kind, u64::from_le_bytes(*bytes), out);
                8
            }
            Kind::Fixed32 => {
                let Some(bytes) = payload.first_chunk::<4>() else {
                    return Err(wire_error(desc, "packed field is not whole values"));
                };
                let _ = write!(out, "{}", u32::from_le_bytes(*bytes));
                4
            }
            _ => {
                let mut pos = 0;
                let raw = crate::wire::read_varint(payload, &mut pos)
                    .ok_or_else(|| wire_error(desc, "malformed varint"))?;
                write_varint_json(kind, raw, out);
                pos
            }
        };
        payload = &payload[used..];
    }
    Ok(())
}

fn write_value(
    desc: &MessageDesc,
    kind: Kind,
    field: &crate::wire::Field<'_>,
    depth: usize,
    out: &mut String,
) -> Result<(), JsonError> {
    use crate::wire::WireType;
    let mismatch = || {
        wire_error(
            desc,
            format!("field {} has the wrong wire type", field.number),
        )
    };
    match (kind, field.wire_type) {
        (Kind::String, WireType::Len) => write_string(
            std::str::from_utf8(field.payload)
                .map_err(|_| wire_error(desc, format!("field {} is not UTF-8", field.number)))?,
            out,
        ),
        (Kind::Bytes, WireType::Len) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(field.payload, out);
            out.push('"');
        }
        (Kind::HexId(_), WireType::Len) => {
            out.push('"');
            for b in field.payload {
                let _ = write!(out, "{b:02x}");
            }
            out.push('"');
        }
        (Kind::Message(inner), WireType::Len) => {
            write_message(inner, field.payload, depth + 1, out)?;
        }
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, WireType::Fixed64) => {
            write_fixed64(kind, field.fixed64().ok_or_else(mismatch)?, out);
        }
        (Kind::Fixed32, WireType::Fixed32) => {
            let _ = write!(out, "{}", field.fixed32().ok_or_else(mismatch)?);
        }
        (_, WireType::Varint) => write_varint_json(kind, field.varint().ok_or_else(mismatch)?, out),
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn write_fixed64(kind: Kind, raw: u64, out: &mut String) {
    match kind {
        Kind::Double => {
            let v = f64::from_bits(raw);
            if v.is_nan() {
                out.push_str("\"NaN\"");
            } else if v.is_infinite() {
                out.push_str(if v > 0.0 {
                    "\"Infinity\""
                } else {
                    "\"-Infinity\""
                });
            } else if let Some(n) = serde_json::Number::from_f64(v) {
                let _ = write!(out, "{n}");
            }
        }
        Kind::Sfixed64 => {
            let _ = write!(out, "\"{}\"", raw as i64);
        }
        _ => {
            let _ = write!(out, "\"{raw}\"");
        }
    }
}

fn write_varint_json(kind: Kind, raw: u64, out: &mut String) {
    let _ = match kind {
        Kind::Bool => write!(out, "{}", raw != 0),
        Kind::Int64 => write!(out, "\"{}\"", raw as i64),
        Kind::Uint64 => write!(out, "\"{raw}\""),
        Kind::Int32 | Kind::Enum(_) => write!(out, "{}", raw as i32),
        Kind::Sint32 => write!(out, "{}", ((raw >> 1) as i32) ^ -((raw & 1) as i32)),
        _ => write!(out, "{}", raw as u32),
    };
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}
