//! Attribute values for protocols that are not OTLP: the specification's "AnyValue
//! representation for non-OTLP protocols" (common/README.md). Shared by every translator (Jaeger
//! tags, Prometheus labels, Loki lines, PostgreSQL columns) so the rendering exists once.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// Sets attribute `key` to `value`: in place when present, appended when not. The one upsert
/// the processors that rewrite decoded attributes share.
pub fn set(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    let value = Some(AnyValue { value: Some(value) });
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attributes.push(KeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
    }
}

/// The specification's string form of an AnyValue: strings as they are, booleans, integers and
/// floats as JSON literals (`NaN`, `Infinity`, `-Infinity` unquoted), bytes as base64, an empty
/// value as the empty string, arrays and maps as JSON (map keys in their given order).
pub fn to_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(value)) => value.clone(),
        Some(Value::BoolValue(value)) => value.to_string(),
        Some(Value::IntValue(value)) => value.to_string(),
        Some(Value::DoubleValue(value)) => float_to_string(*value),
        Some(Value::BytesValue(value)) => {
            let mut out = String::with_capacity(value.len().div_ceil(3) * 4);
            write_base64(&mut out, value);
            out
        }
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            let mut out = String::new();
            write_json(&mut out, value, false);
            out
        }
        // A string-table reference belongs to the profiles signal; elsewhere it reads as absent.
        Some(Value::StringValueStrindex(_)) | None => String::new(),
    }
}

/// A float as a JSON number, or `NaN`, `Infinity`, `-Infinity` for the values JSON lacks.
fn float_to_string(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "Infinity".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Infinity".to_owned()
    } else {
        // Finite, so always Some; the shortest representation that reads back exactly.
        serde_json::Number::from_f64(value)
            .map_or_else(|| format!("{value:?}"), |number| number.to_string())
    }
}

/// An open JSON container whose elements remain to be written.
enum Frame<'a> {
    Array {
        items: std::slice::Iter<'a, AnyValue>,
        first: bool,
    },
    Object {
        entries: std::slice::Iter<'a, KeyValue>,
        first: bool,
    },
}

/// Writes a value as a JSON element, per the specification's rules for array elements and map
/// values: strings, bytes (base64) and special floats as JSON strings, empty values as `null`,
/// arrays and maps (keys in order, duplicates kept) nested. Iterative, so nesting depth is bounded
/// only by memory, never by the stack. With `nul_safe`, U+0000 is written as U+FFFD, for stores
/// that cannot hold it (PostgreSQL's `text` and `jsonb`).
pub fn write_json(out: &mut String, value: Option<&Value>, nul_safe: bool) {
    let mut stack = Vec::new();
    write_json_element(out, value, &mut stack, nul_safe);
    drain_frames(out, stack, nul_safe);
}

/// Writes attributes as one JSON object, values as in [`write_json`] (duplicate keys kept in
/// order; a JSON reader keeps the last).
pub fn write_json_object(out: &mut String, attributes: &[KeyValue], nul_safe: bool) {
    out.push('{');
    let stack = vec![Frame::Object {
        entries: attributes.iter(),
        first: true,
    }];
    drain_frames(out, stack, nul_safe);
}

/// Writes the remaining elements of every open container, innermost first.
fn drain_frames<'a>(out: &mut String, mut stack: Vec<Frame<'a>>, nul_safe: bool) {
    loop {
        let next = match stack.last_mut() {
            None => break,
            Some(Frame::Array { items, first }) => items.next().map(|item| {
                if !std::mem::replace(first, false) {
                    out.push(',');
                }
                item.value.as_ref()
            }),
            Some(Frame::Object { entries, first }) => entries.next().map(|entry| {
                if !std::mem::replace(first, false) {
                    out.push(',');
                }
                write_json_string(out, &entry.key, nul_safe);
                out.push(':');
                entry.value.as_ref().and_then(|value| value.value.as_ref())
            }),
        };
        match next {
            Some(element) => write_json_element(out, element, &mut stack, nul_safe),
            None => match stack.pop() {
                Some(Frame::Array { .. }) => out.push(']'),
                Some(Frame::Object { .. }) => out.push('}'),
                None => {}
            },
        }
    }
}

/// Writes a scalar element, or opens a container and pushes its frame.
fn write_json_element<'a>(
    out: &mut String,
    value: Option<&'a Value>,
    stack: &mut Vec<Frame<'a>>,
    nul_safe: bool,
) {
    match value {
        Some(Value::StringValue(value)) => write_json_string(out, value, nul_safe),
        Some(Value::BoolValue(value)) => out.push_str(if *value { "true" } else { "false" }),
        Some(Value::IntValue(value)) => out.push_str(&value.to_string()),
        Some(Value::DoubleValue(value)) => {
            let number = float_to_string(*value);
            if value.is_finite() {
                out.push_str(&number);
            } else {
                write_json_string(out, &number, false);
            }
        }
        Some(Value::BytesValue(value)) => {
            // The base64 alphabet needs no JSON escaping.
            out.push('"');
            write_base64(out, value);
            out.push('"');
        }
        Some(Value::ArrayValue(array)) => {
            out.push('[');
            stack.push(Frame::Array {
                items: array.values.iter(),
                first: true,
            });
        }
        Some(Value::KvlistValue(map)) => {
            out.push('{');
            stack.push(Frame::Object {
                entries: map.values.iter(),
                first: true,
            });
        }
        Some(Value::StringValueStrindex(_)) | None => out.push_str("null"),
    }
}

/// Writes a JSON string literal (RFC 8259): quotes, backslashes and control characters escaped;
/// with `nul_safe`, U+0000 becomes U+FFFD.
pub fn write_json_string(out: &mut String, value: &str, nul_safe: bool) {
    out.push('"');
    // Runs that need no escape are copied whole: most text has none at all.
    let mut rest = value;
    while let Some(at) = rest
        .bytes()
        .position(|b| b < 0x20 || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..at]);
        // The byte found is ASCII, so `at` and `at + 1` are character boundaries.
        escape(out, char::from(rest.as_bytes()[at]), nul_safe);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Writes the escape of a quote, a backslash or a control character.
fn escape(out: &mut String, c: char, nul_safe: bool) {
    match c {
        '\0' if nul_safe => out.push('\u{fffd}'),
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c => {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Writes bytes in base64 (RFC 4648 section 4: standard alphabet, padded).
fn write_base64(out: &mut String, bytes: &[u8]) {
    // The index is masked to 6 bits, so it is always within the 64-entry alphabet.
    let sextet =
        |group: u32, shift: u32| char::from(BASE64_ALPHABET[((group >> shift) & 0x3f) as usize]);
    for chunk in bytes.chunks(3) {
        match *chunk {
            [a, b, c] => {
                let group = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
                out.extend([
                    sextet(group, 18),
                    sextet(group, 12),
                    sextet(group, 6),
                    sextet(group, 0),
                ]);
            }
            [a, b] => {
                let group = u32::from(a) << 16 | u32::from(b) << 8;
                out.extend([sextet(group, 18), sextet(group, 12), sextet(group, 6), '=']);
            }
            [a] => {
                let group = u32::from(a) << 16;
                out.extend([sextet(group, 18), sextet(group, 12), '=', '=']);
            }
            _ => {}
        }
    }
}

/// Bytes as lowercase hexadecimal: how trace and span ids are written outside OTLP's binary form
/// (Prometheus exemplars, Loki lines, PostgreSQL columns, the debug exporter).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;

    #[test]
    fn nul_safe_json_replaces_nul_and_keeps_the_rest() {
        let attributes = vec![KeyValue {
            key: "k\u{0}".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("a\u{0}b\\u0000".into())),
            }),
            ..Default::default()
        }];
        let mut out = String::new();
        write_json_object(&mut out, &attributes, true);
        assert_eq!(out, "{\"k\u{fffd}\":\"a\u{fffd}b\\\\u0000\"}");
        let mut plain = String::new();
        write_json_object(&mut plain, &attributes, false);
        assert_eq!(plain, "{\"k\\u0000\":\"a\\u0000b\\\\u0000\"}");
        let mut empty = String::new();
        write_json_object(&mut empty, &[], true);
        assert_eq!(empty, "{}");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        write_json_string(
            &mut out,
            "q\"b\\n\nr\rt\tb\u{8}f\u{c}c\u{1}\u{1f}é\u{7f}/",
            false,
        );
        assert_eq!(
            out,
            format!("{}\u{7f}/\"", r#""q\"b\\n\nr\rt\tb\bf\fc\u0001\u001fé"#)
        );
        let array = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::StringValue("say \"hi\"".to_owned())),
            }],
        });
        assert_eq!(to_string(Some(&array)), r#"["say \"hi\""]"#);
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_a_json_string_that_reads_back(text in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            write_json_string(&mut out, &text, false);
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            let mut out = String::new();
            write_base64(&mut out, input.as_bytes());
            assert_eq!(out, expected, "base64({input:?})");
        }
        let mut out = String::new();
        write_base64(&mut out, &[0xfb, 0xff, 0xbf]);
        assert_eq!(out, "+/+/");
    }

    #[test]
    fn ids_are_lowercase_hex() {
        assert_eq!(hex(&[0x4b, 0xf9, 0x00, 0xff]), "4bf900ff");
        assert_eq!(hex(&[]), "");
    }
}
