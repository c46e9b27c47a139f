//! What prost requires of each field's encoding, read off sluice's one OTLP schema
//! ([`crate::schema`]). The intake checks items against it so that whatever it acknowledges
//! decodes in every exporter; an item that does not is refused alone, never the batch it would
//! join.
//!
//! prost refuses, and so does this check: a string that is not UTF-8, a known field sent with a
//! wire type its type cannot have (a string sent as a varint), a packed repeated field that is
//! not a whole number of values, a varint over ten bytes or past `u64`, a key past `u32`, and
//! messages nested deeper than prost's recursion limit. Unknown fields are skipped, as prost
//! skips them, but they must still be framed. Groups are refused outright (the walker never
//! accepted them; no OTLP encoder writes them).

use super::{FieldProblem, read_varint};
use crate::schema::{Kind, Label, MessageDesc as Msg};

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not public): a decode starts with this
/// budget, each nested message takes one, and skipping an unknown field needs one left. The
/// strictest decoder of a batch decodes the whole request, so the request has the whole budget.
pub(crate) const RECURSION_LIMIT: u32 = 100;

/// The message type of field `number` of `msg`, for walking down the levels of a request.
pub(crate) fn child(msg: &'static Msg, number: u32) -> &'static Msg {
    match msg.field(number).map(|f| f.kind) {
        Some(Kind::Message(m)) => m,
        _ => &EMPTY,
    }
}

static EMPTY: Msg = Msg::new("Empty", &[]);

/// Where in an item a problem sits, innermost field first; rendered only when reported.
#[derive(Debug)]
pub(crate) struct Bad {
    /// (message, field number, occurrence index of that field within the message) per level,
    /// innermost first.
    pub(crate) trail: Vec<(&'static Msg, u32, Option<usize>)>,
    pub(crate) problem: FieldProblem,
}

impl Bad {
    fn new(problem: FieldProblem) -> Self {
        Bad {
            trail: Vec::new(),
            problem,
        }
    }

    /// The path below the item, like `attributes[2].value.string_value`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (msg, number, index) in self.trail.iter().rev() {
            if !out.is_empty() {
                out.push('.');
            }
            match msg.field(*number) {
                Some(field) => out.push_str(field.proto_name),
                None => out.push_str(&format!("field {number}")),
            }
            if let Some(i) = index {
                out.push_str(&format!("[{i}]"));
            }
        }
        out
    }
}

/// Checks one encoded field of `msg` (already framed: `payload` is its value for wire type 2)
/// against the schema, with `budget` the recursion budget `msg` is decoded with.
#[inline]
pub(crate) fn check_field(
    msg: &'static Msg,
    number: u32,
    wire_type: u8,
    payload: &[u8],
    budget: u32,
) -> Result<(), Bad> {
    let wrong = |expected: &'static str| {
        Err(Bad::new(FieldProblem::WrongWireType {
            expected,
            got: wire_type_name(wire_type),
        }))
    };
    let Some(field) = msg.field(number) else {
        // Unknown: skipped by prost, which still needs recursion budget to skip it.
        if budget == 0 {
            return Err(Bad::new(FieldProblem::TooDeep {
                limit: RECURSION_LIMIT,
            }));
        }
        return Ok(());
    };
    let repeated = field.label == Label::Repeated;
    match (field.kind, wire_type) {
        (Kind::String, 2) => match std::str::from_utf8(payload) {
            Ok(_) => Ok(()),
            Err(_) => Err(Bad::new(FieldProblem::NotUtf8)),
        },
        (Kind::String, _) => wrong("a string"),
        (Kind::Bytes | Kind::HexId(_), 2) => Ok(()),
        (Kind::Bytes | Kind::HexId(_), _) => wrong("bytes"),
        (Kind::Message(inner), 2) => {
            if budget == 0 {
                return Err(Bad::new(FieldProblem::TooDeep {
                    limit: RECURSION_LIMIT,
                }));
            }
            check_message(inner, payload, budget - 1)
        }
        (Kind::Message(_), _) => wrong("a message"),
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, 1) | (Kind::Fixed32, 5) => Ok(()),
        // prost takes a repeated scalar packed or not.
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, 2) if repeated => packed_fixed(payload, 8),
        (Kind::Fixed32, 2) if repeated => packed_fixed(payload, 4),
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, _) => wrong("a 64-bit fixed value"),
        (Kind::Fixed32, _) => wrong("a 32-bit fixed value"),
        // Bool, the integer kinds and enums are varints.
        (_, 0) => Ok(()),
        (_, 2) if repeated => {
            let mut pos = 0;
            while pos < payload.len() {
                if read_varint(payload, &mut pos).is_none() {
                    return Err(Bad::new(FieldProblem::Packed));
                }
            }
            Ok(())
        }
        (_, _) => wrong("a varint"),
    }
}

fn packed_fixed(payload: &[u8], width: usize) -> Result<(), Bad> {
    if payload.len().is_multiple_of(width) {
        Ok(())
    } else {
        Err(Bad::new(FieldProblem::Packed))
    }
}

fn wire_type_name(wire_type: u8) -> &'static str {
    match wire_type {
        0 => "a varint",
        1 => "a 64-bit fixed value",
        2 => "a length-delimited value",
        5 => "a 32-bit fixed value",
        _ => "a group",
    }
}

/// Checks every field of an encoded `msg`, at every depth, with `budget` the recursion budget
/// `msg` is decoded with.
pub(crate) fn check_message(msg: &'static Msg, buf: &[u8], budget: u32) -> Result<(), Bad> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos).ok_or(Bad::new(FieldProblem::Varint))?;
        let number = match u32::try_from(key) {
            Ok(k) if k >> 3 != 0 => k >> 3,
            _ => return Err(Bad::new(FieldProblem::FieldNumber)),
        };
        let wire_type = (key & 7) as u8;
        let mut payload: &[u8] = &[];
        let framed = match wire_type {
            0 => read_varint(buf, &mut pos).map(|_| ()),
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                (buf.len() - pos >= width).then(|| pos += width)
            }
            2 => read_varint(buf, &mut pos).and_then(|len| {
                let len = usize::try_from(len).ok()?;
                (len <= buf.len() - pos).then(|| {
                    payload = &buf[pos..pos + len];
                    pos += len;
                })
            }),
            other => return Err(Bad::new(FieldProblem::InvalidWireType(other))),
        };
        if framed.is_none() {
            return Err(at(
                msg,
                buf,
                start,
                number,
                Bad::new(FieldProblem::Truncated),
            ));
        }
        if let Err(bad) = check_field(msg, number, wire_type, payload, budget) {
            return Err(at(msg, buf, start, number, bad));
        }
    }
    Ok(())
}

/// Adds the field at `start` of `buf` to the trail, with its occurrence index when it is a
/// repeated message (counted only now, on the error path).
pub(crate) fn at(msg: &'static Msg, buf: &[u8], start: usize, number: u32, mut bad: Bad) -> Bad {
    let index = msg
        .field(number)
        .is_some_and(|f| f.label == Label::Repeated && matches!(f.kind, Kind::Message(_)))
        .then(|| {
            super::fields(&buf[..start])
                .map_while(Result::ok)
                .filter(|f| f.number == number)
                .count()
        });
    bad.trail.push((msg, number, index));
    bad
}
