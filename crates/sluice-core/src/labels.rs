//! Label names in the Prometheus data model, which Prometheus and Loki share: attribute keys
//! normalized by the OpenTelemetry specification's Prometheus compatibility rules, so that an
//! attribute becomes the same label in both stores.

/// Replaces every character that `valid` rejects with `_` and collapses runs of `_` into one.
pub fn sanitize(input: &str, valid: fn(char) -> bool) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if valid(c) {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// The label name of an attribute key, matching `[a-zA-Z_][a-zA-Z0-9_]*`: characters outside
/// `[a-zA-Z0-9]` become `_`, runs of `_` collapse into one (so the result never starts with the
/// reserved `__`), and a leading digit gets the prefix `key_`.
///
/// `None` for a key that leaves nothing but underscores (empty, or only invalid characters): the
/// attribute is not sent.
pub fn label_name(key: &str) -> Option<String> {
    let sanitized = sanitize(key, |c| c.is_ascii_alphanumeric());
    if sanitized.chars().all(|c| c == '_') {
        return None;
    }
    if sanitized.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(format!("key_{sanitized}"));
    }
    Some(sanitized)
}

/// Whether a label name is already valid (`[a-zA-Z_][a-zA-Z0-9_]*`), so it may be used as given
/// (labels named in the configuration).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes a label value as a quoted string in the Prometheus text and selector syntax: `\`, `"`
/// and newlines escaped.
pub fn write_quoted(out: &mut String, value: &str) {
    out.push('"');
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}
