//! The line of a Loki entry, in the three formats of the Collector's Loki exporter:
//!
//! - `json`: `{"body":…,"traceid":"…","spanid":"…","severity":"…","flags":N,"attributes":{…},
//!   "resources":{…},"instrumentation_scope":{"name":"…","version":"…"}}`, empty members left out;
//! - `logfmt`: the body's own pairs (a map body flattened with `_`, a string body that is already
//!   logfmt kept as its pairs, any other string as `msg`), then `traceID`, `spanID`, `severity`,
//!   `flags` (replacing pairs of the body with those keys), `attribute_<key>`, `resource_<key>`,
//!   `instrumentation_scope_name`, `instrumentation_scope_version`;
//! - `raw`: the body's string form alone.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use sluice_core::anyvalue::{self, hex, write_json, write_json_object, write_json_string};

use super::Rendered;

/// A line format, chosen per resource by the `loki.format` hint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Format {
    #[default]
    Json,
    Logfmt,
    Raw,
}

impl Format {
    /// The format a hint names; an unknown name falls back to `json`, so that no record is lost
    /// to a typo in a hint (the Collector dropped such records).
    pub(crate) fn from_hint(hint: &str) -> Format {
        match hint.trim() {
            "logfmt" => Format::Logfmt,
            "raw" => Format::Raw,
            _ => Format::Json,
        }
    }
}

/// The resource's attributes as lines of this format write them.
pub(crate) fn render_resource(format: Format, attributes: &[KeyValue]) -> Rendered {
    match format {
        Format::Json if attributes.is_empty() => Rendered::Json(String::new()),
        Format::Json => {
            let mut out = String::new();
            write_json_object(&mut out, attributes, false);
            Rendered::Json(out)
        }
        Format::Logfmt => {
            let mut pairs = Vec::new();
            for kv in attributes {
                flatten(&format!("resource_{}", kv.key), value_of(kv), &mut pairs);
            }
            Rendered::Logfmt(pairs)
        }
        Format::Raw => Rendered::Nothing,
    }
}

/// The line for a record with its remaining attributes, the resource rendered once, and the
/// scope's name and version.
pub(crate) fn write(
    format: Format,
    record: &LogRecord,
    attributes: &[KeyValue],
    resource: &Rendered,
    scope: (&str, &str),
) -> String {
    let body = record.body.as_ref().and_then(|b| b.value.as_ref());
    match format {
        Format::Json => json(record, body, attributes, resource, scope),
        Format::Logfmt => logfmt(record, body, attributes, resource, scope),
        Format::Raw => anyvalue::to_string(body),
    }
}

fn value_of(kv: &KeyValue) -> Option<&Value> {
    kv.value.as_ref().and_then(|v| v.value.as_ref())
}

fn json(
    record: &LogRecord,
    body: Option<&Value>,
    attributes: &[KeyValue],
    resource: &Rendered,
    (scope_name, scope_version): (&str, &str),
) -> String {
    let resources_len = match resource {
        Rendered::Json(resources) => resources.len(),
        _ => 0,
    };
    let mut out = String::with_capacity(256 + resources_len);
    out.push('{');
    let mut first = true;
    let mut member = |out: &mut String, name: &str| {
        if !std::mem::replace(&mut first, false) {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if body.is_some() {
        member(&mut out, "body");
        write_json(&mut out, body, false);
    }
    if record.trace_id.iter().any(|&b| b != 0) {
        member(&mut out, "traceid");
        let _ = write!(out, "\"{}\"", hex(&record.trace_id));
    }
    if record.span_id.iter().any(|&b| b != 0) {
        member(&mut out, "spanid");
        let _ = write!(out, "\"{}\"", hex(&record.span_id));
    }
    if !record.severity_text.is_empty() {
        member(&mut out, "severity");
        write_json_string(&mut out, &record.severity_text, false);
    }
    if record.flags != 0 {
        member(&mut out, "flags");
        let _ = write!(out, "{}", record.flags);
    }
    if !attributes.is_empty() {
        member(&mut out, "attributes");
        write_json_object(&mut out, attributes, false);
    }
    if let Rendered::Json(resources) = resource
        && !resources.is_empty()
    {
        member(&mut out, "resources");
        out.push_str(resources);
    }
    if !scope_name.is_empty() {
        member(&mut out, "instrumentation_scope");
        out.push_str("{\"name\":");
        write_json_string(&mut out, scope_name, false);
        if !scope_version.is_empty() {
            out.push_str(",\"version\":");
            write_json_string(&mut out, scope_version, false);
        }
        out.push('}');
    }
    out.push('}');
    out
}

fn logfmt(
    record: &LogRecord,
    body: Option<&Value>,
    attributes: &[KeyValue],
    resource: &Rendered,
    (scope_name, scope_version): (&str, &str),
) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match body {
        None => {}
        Some(Value::StringValue(text)) => match parse_logfmt(text) {
            Some(parsed) => pairs = parsed,
            None => pairs.push(("msg".to_owned(), text.clone())),
        },
        Some(map @ Value::KvlistValue(_)) => flatten("", Some(map), &mut pairs),
        Some(array @ Value::ArrayValue(_)) => flatten("body", Some(array), &mut pairs),
        Some(other) => pairs.push(("msg".to_owned(), anyvalue::to_string(Some(other)))),
    }
    let mut replace_or_append =
        |key: &str, value: String| match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => pairs.push((key.to_owned(), value)),
        };
    if record.trace_id.iter().any(|&b| b != 0) {
        replace_or_append("traceID", hex(&record.trace_id));
    }
    if record.span_id.iter().any(|&b| b != 0) {
        replace_or_append("spanID", hex(&record.span_id));
    }
    if !record.severity_text.is_empty() {
        replace_or_append("severity", record.severity_text.clone());
    }
    if record.flags != 0 {
        replace_or_append("flags", record.flags.to_string());
    }
    for kv in attributes {
        flatten(&format!("attribute_{}", kv.key), value_of(kv), &mut pairs);
    }
    if let Rendered::Logfmt(resources) = resource {
        pairs.extend(resources.iter().cloned());
    }
    if !scope_name.is_empty() {
        pairs.push((
            "instrumentation_scope_name".to_owned(),
            scope_name.to_owned(),
        ));
        if !scope_version.is_empty() {
            pairs.push((
                "instrumentation_scope_version".to_owned(),
                scope_version.to_owned(),
            ));
        }
    }
    let mut out = String::with_capacity(128);
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_key(&mut out, key);
        out.push('=');
        write_value(&mut out, value);
    }
    out
}

/// A value as logfmt pairs: scalars as one pair, maps and arrays flattened into `key_sub` and
/// `key_0` pairs (no prefix for a map body's own keys), empty values left out.
fn flatten(key: &str, value: Option<&Value>, out: &mut Vec<(String, String)>) {
    let prefixed = |sub: &str| {
        if key.is_empty() {
            sub.to_owned()
        } else {
            format!("{key}_{sub}")
        }
    };
    match value {
        None => {}
        Some(Value::KvlistValue(map)) => {
            for kv in &map.values {
                flatten(&prefixed(&kv.key), value_of(kv), out);
            }
        }
        Some(Value::ArrayValue(array)) => {
            for (i, v) in array.values.iter().enumerate() {
                flatten(&prefixed(&i.to_string()), v.value.as_ref(), out);
            }
        }
        Some(scalar) => out.push((key.to_owned(), anyvalue::to_string(Some(scalar)))),
    }
}

/// A key with the characters logfmt cannot carry in keys (space and controls, `=`, `"`) made `_`.
fn write_key(out: &mut String, key: &str) {
    if key.is_empty() {
        out.push('_');
        return;
    }
    for c in key.chars() {
        out.push(if c <= ' ' || c == '=' || c == '"' || c == '\u{7f}' {
            '_'
        } else {
            c
        });
    }
}

/// A value, quoted (with `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes) when it holds a
/// space, `=`, `"` or a control character.
fn write_value(out: &mut String, value: &str) {
    if !value
        .chars()
        .any(|c| c <= ' ' || c == '=' || c == '"' || c == '\u{7f}')
    {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The pairs of a string that is already logfmt (`a=1 b="x y"`): every token a `key=value`.
/// `None` for anything else (plain text), which is then carried whole as `msg`.
pub(crate) fn parse_logfmt(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start_matches(' ');
    while !rest.is_empty() {
        let end = rest.find(['=', ' ', '"']).unwrap_or(rest.len());
        let key = &rest[..end];
        rest = &rest[end..];
        if key.is_empty() || !rest.starts_with('=') {
            return None;
        }
        rest = &rest[1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let (value, after) = unquote(quoted)?;
            rest = after;
            value
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let value = &rest[..end];
            if value.contains('"') || value.contains('=') {
                return None;
            }
            rest = &rest[end..];
            value.to_owned()
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        pairs.push((key.to_owned(), value));
        rest = rest.trim_start_matches(' ');
    }
    (!pairs.is_empty()).then_some(pairs)
}

/// The contents of a quoted value up to its closing quote, and what follows it.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}
