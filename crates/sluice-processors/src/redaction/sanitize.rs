//! The `redaction` processor's `url_sanitizer` and `db_sanitizer`: values that vary per request
//! (ids in URL paths, literals in queries) are replaced, so that what is left is safe to store
//! and groups well.

/// A URL or path with every segment that identifies something rather than names a route
/// replaced by `*`, and its query and fragment removed (they carry tokens and personal data):
/// `https://api.example.com/users/12345/orders/9f1c2d3e-...?token=x` becomes
/// `https://api.example.com/users/*/orders/*`.
pub(crate) fn url(value: &str) -> String {
    let end = value.find(['?', '#']).unwrap_or(value.len());
    let value = &value[..end];
    // Keep `scheme://authority` as it is.
    let (prefix, path) = match value.find("://") {
        Some(i) => {
            let rest = &value[i + 3..];
            let slash = rest.find('/').map_or(value.len(), |j| i + 3 + j);
            value.split_at(slash)
        }
        None => ("", value),
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(prefix);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_identifier(segment) {
            out.push('*');
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// Whether a path segment identifies an object: a number, a UUID, a hex string of 8 characters
/// or more with a digit in it, or a long token mixing letters and digits.
pub(crate) fn is_identifier(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return true;
    }
    let hex = bytes.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-');
    if hex && digits > 0 && bytes.iter().filter(|b| **b != b'-').count() >= 8 {
        return true;
    }
    let token = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
    token && bytes.len() >= 16 && digits >= 2 && digits < bytes.len()
}

/// The database languages `db_sanitizer` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sql,
    Redis,
    Valkey,
    Memcached,
    Mongo,
    OpenSearch,
    Es,
}

impl Db {
    /// `value` sanitized as this language; `None` when it does not parse as one (a JSON
    /// sanitizer given something that is not JSON), so that another may try.
    pub(crate) fn sanitize(self, value: &str) -> Option<String> {
        match self {
            Db::Sql => Some(sql(value)),
            Db::Redis | Db::Valkey => Some(redis(value)),
            Db::Memcached => Some(memcached(value)),
            Db::Mongo | Db::OpenSearch | Db::Es => json(value),
        }
    }
}

/// SQL with every literal replaced by `?`: quoted strings (with `''` and backslash escapes),
/// numbers that are not part of an identifier, hex and binary literals; comments are removed.
/// Identifiers, keywords, quoted identifiers (`"col"`, `` `col` ``) and placeholders (`$1`, `?`,
/// `:name`) stay.
pub(crate) fn sql(query: &str) -> String {
    let b = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    // Whether the previous significant character continues an identifier.
    let mut in_word = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                i = skip_quoted(b, i, b'\'');
                out.push('?');
                in_word = false;
            }
            b'"' | b'`' => {
                let end = skip_quoted(b, i, c);
                out.push_str(&query[i..end]);
                i = end;
                in_word = false;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = query[i + 2..].find("*/").map_or(b.len(), |j| i + 2 + j + 2);
            }
            b'0'..=b'9' if !in_word => {
                // A number: digits, a fraction, an exponent; or 0x.. / 0b.. / x'..'.
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'+' || b[i] == b'-') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let _ = start;
                out.push('?');
            }
            b'$' | b':' | b'@' if b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) => {
                // A placeholder or variable: kept with its name.
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push_str(&query[start..i]);
                in_word = true;
            }
            _ => {
                let ch = query[i..].chars().next().unwrap_or(' ');
                in_word = ch.is_alphanumeric() || ch == '_';
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// The index just past a quoted run starting at `start` with `quote`, honouring doubled quotes
/// and backslash escapes; the end of the input when it is not closed.
fn skip_quoted(b: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote == b'\'' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Redis (and Valkey) commands, one per line, keeping the command and its key and replacing
/// every further argument by `?`: `SET user:1 "alice@example.com" EX 60` becomes
/// `SET user:1 ? ? ?`. `AUTH` loses every argument.
pub(crate) fn redis(commands: &str) -> String {
    commands
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let Some(command) = words.next() else {
                return String::new();
            };
            let mut out = command.to_owned();
            let keep = if command.eq_ignore_ascii_case("auth") {
                0
            } else {
                1
            };
            for (i, word) in words.enumerate() {
                out.push(' ');
                out.push_str(if i < keep { word } else { "?" });
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Memcached text protocol: the command lines stay, the data blocks that follow storage
/// commands are dropped.
pub(crate) fn memcached(command: &str) -> String {
    command
        .split_once("\r\n")
        .map_or(command, |(line, _)| line)
        .to_owned()
}

/// A JSON query (MongoDB, OpenSearch, Elasticsearch) with every scalar replaced by `"?"`,
/// keys kept; `None` when it is not JSON.
pub(crate) fn json(query: &str) -> Option<String> {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => map.values_mut().for_each(walk),
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Null => {}
            other => *other = serde_json::Value::String("?".to_owned()),
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(query).ok()?;
    walk(&mut value);
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_lose_ids_queries_and_fragments() {
        assert_eq!(
            url(
                "https://api.example.com/users/12345/orders/9f1c2d3e-aaaa-4bbb-8ccc-0123456789ab?token=x#top"
            ),
            "https://api.example.com/users/*/orders/*"
        );
        assert_eq!(url("/users/123/orders/9f1c2d3e"), "/users/*/orders/*");
        assert_eq!(url("/api/v2/items"), "/api/v2/items");
        assert_eq!(url("/files/deadbeefcafe1234/raw"), "/files/*/raw");
        assert_eq!(url("/reset/Zx81kQ2mP0aT7rLw9"), "/reset/*");
        assert_eq!(url("/health"), "/health");
        assert_eq!(url("http://host:8080"), "http://host:8080");
        // Words that happen to be hex stay: no digit.
        assert_eq!(url("/cafe/beef"), "/cafe/beef");
    }

    #[test]
    fn sql_literals_become_placeholders() {
        assert_eq!(
            sql(
                "SELECT * FROM users WHERE email = 'jane@example.com' AND id = 42 AND t1.x > 3.5e-2"
            ),
            "SELECT * FROM users WHERE email = ? AND id = ? AND t1.x > ?"
        );
        assert_eq!(
            sql("INSERT INTO t (a, \"b c\") VALUES ('it''s', 0x1F, -7) -- note jane@example.com"),
            "INSERT INTO t (a, \"b c\") VALUES (?, ?, -?) "
        );
        assert_eq!(
            sql("UPDATE t SET v = 'a\\'b' /* 555-123-4567 */ WHERE k = $1 AND n = :name"),
            "UPDATE t SET v = ?  WHERE k = $1 AND n = :name"
        );
        assert_eq!(sql("SELECT 'unterminated"), "SELECT ?");
    }

    #[test]
    fn redis_keeps_commands_and_keys() {
        assert_eq!(
            redis("SET user:1 \"alice@example.com\" EX 60\nGET user:1\nAUTH hunter2"),
            "SET user:1 ? ? ?\nGET user:1\nAUTH ?"
        );
    }

    #[test]
    fn memcached_drops_data_blocks_and_json_loses_scalars() {
        assert_eq!(memcached("set k 0 60 5\r\nhello\r\n"), "set k 0 60 5");
        assert_eq!(
            json(r#"{"find":"users","filter":{"email":"a@b.co","age":{"$gt":30}},"tags":["x",1,null]}"#).unwrap(),
            r#"{"filter":{"age":{"$gt":"?"},"email":"?"},"find":"?","tags":["?","?",null]}"#
        );
        assert_eq!(json("not json"), None);
    }
}
