//! Attribute actions, as the OpenTelemetry Collector's `attraction` package defines them for the
//! `resource` and `attributes` processors: `insert`, `update`, `upsert`, `delete`, `hash`,
//! `extract` and `convert`, applied in order to one attribute list. One copy for both processors.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_config::Problem;
use sluice_core::client::ClientInfo;

/// One action on an attribute list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The attribute acted on (for `extract`, the one values are extracted from).
    #[serde(default)]
    pub key: Option<String>,
    /// The value to set (string, number or boolean); for insert, update, upsert.
    #[serde(default)]
    pub value: Option<Value>,
    /// Take the value from this other attribute instead (nothing happens if it is absent, unless
    /// `default_value` is set).
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Take the value from the client that sent the data: `metadata.<header>` (the receiver
    /// needs `include_metadata: true`) or `auth.<attribute>` (`auth.username` from `basicauth`).
    /// Several header values are joined with `;`. Before a `batch` processor, or after one with
    /// `metadata_keys` naming the header.
    #[serde(default)]
    pub from_context: Option<String>,
    /// The value used when `from_attribute` finds nothing.
    #[serde(default)]
    pub default_value: Option<Value>,
    /// A regular expression: the keys `delete` and `hash` act on, or, for `extract`, the
    /// pattern whose named groups become attributes.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `convert`: `int`, `double` or `string`.
    #[serde(default)]
    pub converted_type: Option<String>,
    /// What to do.
    pub action: ActionKind,
}

/// What an [`Action`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Add the attribute only if the key is absent.
    Insert,
    /// Change the attribute only if the key is present.
    Update,
    /// Insert or update.
    Upsert,
    /// Remove the attribute (`key`) or every attribute whose key matches `pattern`.
    Delete,
    /// Replace the value by the hex SHA-256 of its bytes (the Collector's current hasher:
    /// strings as UTF-8, integers and doubles as 8 little-endian bytes, booleans as one byte).
    Hash,
    /// Set an attribute per named group of `pattern` matched against the value of `key`.
    Extract,
    /// Change the value's type to `converted_type`.
    Convert,
}

#[derive(Debug, Clone)]
enum Source {
    Literal(any_value::Value),
    Attribute(String, Option<any_value::Value>),
    /// `from_context`, and the default when the client has no such value.
    Context(String, Option<any_value::Value>),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Int,
    Double,
    String,
}

/// An action checked and ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    key: Option<String>,
    kind: ActionKind,
    source: Source,
    pattern: Option<Regex>,
    target: Option<Target>,
}

fn literal(value: &Value) -> Option<any_value::Value> {
    Some(match value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    })
}

/// Checks `actions` (found at `path`, a list) and compiles them; every problem, with its path.
pub(crate) fn compile(path: &str, actions: &[Action]) -> Result<Vec<Compiled>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut compiled = Vec::new();
    if actions.is_empty() {
        problems.push(Problem::error(path, "at least one action is required"));
    }
    for (i, a) in actions.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = format!("{:?}", a.action).to_lowercase();
        let mut error = |field: &str, message: String| {
            let place = if field.is_empty() {
                at.clone()
            } else {
                format!("{at}.{field}")
            };
            problems.push(Problem::error(place, message));
        };
        if a.key.as_deref() == Some("") {
            error("key", "must not be empty".into());
        }
        match a.from_context.as_deref() {
            Some("client.address") => error(
                "from_context",
                "`client.address` is not carried with the data; use a header (`metadata.x-forwarded-for`) or `auth.*`".into(),
            ),
            Some(c) if c.is_empty() || c == "metadata." || c == "auth." => {
                error("from_context", "names no header or attribute".into());
            }
            Some(_) if a.value.is_some() || a.from_attribute.is_some() => error(
                "",
                "set one of `value`, `from_attribute` and `from_context`".into(),
            ),
            _ => {}
        }
        let sets = matches!(
            a.action,
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert
        );
        let default = match a.default_value.as_ref().map(literal) {
            Some(None) => {
                error(
                    "default_value",
                    "must be a string, number or boolean".into(),
                );
                None
            }
            Some(v) => v,
            None => None,
        };
        let source = match (&a.value, &a.from_attribute) {
            (Some(_), Some(_)) => {
                error(
                    "",
                    "set either `value` or `from_attribute`, not both".into(),
                );
                Source::None
            }
            (Some(v), None) => match literal(v) {
                Some(l) => Source::Literal(l),
                None => {
                    error("value", "must be a string, number or boolean".into());
                    Source::None
                }
            },
            (None, Some(from)) => Source::Attribute(from.clone(), default.clone()),
            (None, None) if a.from_context.is_some() => {
                Source::Context(a.from_context.clone().unwrap_or_default(), default.clone())
            }
            (None, None) => match default.clone() {
                Some(d) => Source::Literal(d),
                None => Source::None,
            },
        };
        if sets && a.key.is_none() {
            error("key", format!("action `{name}` needs a `key`"));
        }
        if sets && matches!(source, Source::None) {
            error(
                "",
                format!(
                    "action `{name}` needs `value`, `from_attribute`, `from_context` or `default_value`"
                ),
            );
        }
        if !sets
            && (a.value.is_some()
                || a.from_attribute.is_some()
                || a.from_context.is_some()
                || a.default_value.is_some())
        {
            error(
                "",
                format!(
                    "action `{name}` takes no `value`, `from_attribute`, `from_context` or `default_value`"
                ),
            );
        }
        let pattern = match a.pattern.as_deref().map(Regex::new) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                error("pattern", format!("not a valid regular expression: {e}"));
                None
            }
            None => None,
        };
        match a.action {
            ActionKind::Delete | ActionKind::Hash if a.key.is_none() && a.pattern.is_none() => {
                error("", format!("action `{name}` needs a `key` or a `pattern`"));
            }
            ActionKind::Extract => {
                if a.key.is_none() {
                    error("key", "action `extract` needs a `key`".into());
                }
                match &pattern {
                    None if a.pattern.is_none() => {
                        error("pattern", "action `extract` needs a `pattern`".into())
                    }
                    Some(r) if r.capture_names().flatten().next().is_none() => error(
                        "pattern",
                        "action `extract` needs named groups (`(?P<name>...)`)".into(),
                    ),
                    _ => {}
                }
            }
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert if a.pattern.is_some() => {
                error("pattern", format!("action `{name}` takes no `pattern`"));
            }
            _ => {}
        }
        let target = match (a.action, a.converted_type.as_deref()) {
            (ActionKind::Convert, Some("int")) => Some(Target::Int),
            (ActionKind::Convert, Some("double")) => Some(Target::Double),
            (ActionKind::Convert, Some("string")) => Some(Target::String),
            (ActionKind::Convert, Some(other)) => {
                error(
                    "converted_type",
                    format!("`{other}` is not a type; use int, double or string"),
                );
                None
            }
            (ActionKind::Convert, None) => {
                error(
                    "converted_type",
                    "action `convert` needs `converted_type`".into(),
                );
                None
            }
            (_, Some(_)) => {
                error(
                    "converted_type",
                    format!("action `{name}` takes no `converted_type`"),
                );
                None
            }
            (_, None) => None,
        };
        if a.action == ActionKind::Convert && a.key.is_none() {
            error("key", "action `convert` needs a `key`".into());
        }
        compiled.push(Compiled {
            key: a.key.clone(),
            kind: a.action,
            source,
            pattern,
            target,
        });
    }
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems)
    }
}

/// The hex SHA-256 of a value's bytes, as the Collector's hasher takes them; `None` for values
/// it leaves alone (maps, arrays, bytes, empty).
pub(crate) fn hash_value(value: &any_value::Value) -> Option<String> {
    let digest = match value {
        any_value::Value::StringValue(s) => Sha256::digest(s.as_bytes()),
        any_value::Value::BoolValue(b) => Sha256::digest([u8::from(*b)]),
        any_value::Value::IntValue(i) => Sha256::digest(i.to_le_bytes()),
        any_value::Value::DoubleValue(d) => Sha256::digest(d.to_bits().to_le_bytes()),
        _ => return None,
    };
    Some(hex::encode(digest))
}

fn convert(value: &any_value::Value, target: Target) -> Option<any_value::Value> {
    use any_value::Value as V;
    Some(match (target, value) {
        (Target::Int, V::IntValue(_))
        | (Target::Double, V::DoubleValue(_))
        | (Target::String, V::StringValue(_)) => return None,
        (Target::Int, V::DoubleValue(d)) => V::IntValue(*d as i64),
        (Target::Int, V::BoolValue(b)) => V::IntValue(i64::from(*b)),
        (Target::Int, V::StringValue(s)) => V::IntValue(s.trim().parse().ok()?),
        (Target::Double, V::IntValue(i)) => V::DoubleValue(*i as f64),
        (Target::Double, V::BoolValue(b)) => V::DoubleValue(if *b { 1.0 } else { 0.0 }),
        (Target::Double, V::StringValue(s)) => V::DoubleValue(s.trim().parse().ok()?),
        (Target::String, V::IntValue(i)) => V::StringValue(i.to_string()),
        (Target::String, V::DoubleValue(d)) => V::StringValue(d.to_string()),
        (Target::String, V::BoolValue(b)) => V::StringValue(b.to_string()),
        _ => return None,
    })
}

pub(crate) use sluice_core::anyvalue::set;

/// The value of `key`, if present.
pub(crate) fn value_of<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Applies the actions in order to one attribute list of data `client` sent; whether it changed.
pub(crate) fn apply(
    actions: &[Compiled],
    attributes: &mut Vec<KeyValue>,
    client: Option<&ClientInfo>,
) -> bool {
    let before = attributes.clone();
    for action in actions {
        let key = action.key.as_deref().unwrap_or_default();
        match action.kind {
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                let present = attributes.iter().any(|kv| kv.key == key);
                let wanted = match action.kind {
                    ActionKind::Insert => !present,
                    ActionKind::Update => present,
                    _ => true,
                };
                if !wanted {
                    continue;
                }
                let value = match &action.source {
                    Source::Literal(v) => Some(v.clone()),
                    Source::Attribute(from, default) => value_of(attributes, from)
                        .cloned()
                        .or_else(|| default.clone()),
                    Source::Context(name, default) => client
                        .and_then(|c| c.lookup(name))
                        .map(any_value::Value::StringValue)
                        .or_else(|| default.clone()),
                    Source::None => None,
                };
                if let Some(v) = value {
                    set(attributes, key, v);
                }
            }
            ActionKind::Delete => attributes.retain(|kv| {
                !(action.key.as_deref() == Some(kv.key.as_str())
                    || action.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key)))
            }),
            ActionKind::Hash => {
                for kv in attributes.iter_mut() {
                    let selected = action.key.as_deref() == Some(kv.key.as_str())
                        || action.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key));
                    if let Some(hashed) = kv
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .filter(|_| selected)
                        .and_then(hash_value)
                    {
                        kv.value = Some(AnyValue {
                            value: Some(any_value::Value::StringValue(hashed)),
                        });
                    }
                }
            }
            ActionKind::Extract => {
                let (Some(pattern), Some(any_value::Value::StringValue(text))) =
                    (&action.pattern, value_of(attributes, key))
                else {
                    continue;
                };
                let Some(captures) = pattern.captures(text) else {
                    continue;
                };
                let found: Vec<(String, String)> = pattern
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, name)| {
                        Some((name?.to_owned(), captures.get(i)?.as_str().to_owned()))
                    })
                    .collect();
                for (name, value) in found {
                    set(attributes, &name, any_value::Value::StringValue(value));
                }
            }
            ActionKind::Convert => {
                let Some(target) = action.target else {
                    continue;
                };
                if let Some(new) = value_of(attributes, key).and_then(|v| convert(v, target)) {
                    set(attributes, key, new);
                }
            }
        }
    }
    *attributes != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn actions(list: serde_json::Value) -> Vec<Compiled> {
        let list: Vec<Action> = serde_json::from_value(list).unwrap();
        compile("actions", &list).unwrap()
    }

    #[test]
    fn insert_update_upsert_delete_and_defaults_follow_the_collector() {
        let a = actions(serde_json::json!([
            {"key": "env", "value": "prod", "action": "insert"},
            {"key": "service.name", "value": "ignored", "action": "insert"},
            {"key": "region", "value": "eu", "action": "update"},
            {"key": "team", "value": 7, "action": "upsert"},
            {"key": "copy", "from_attribute": "service.name", "action": "upsert"},
            {"key": "zone", "from_attribute": "cloud.zone", "default_value": "z1", "action": "insert"},
            {"key": "secret", "action": "delete"},
            {"pattern": "^tmp\\.", "action": "delete"},
        ]));
        let mut attrs = vec![
            kv("service.name", s("api")),
            kv("secret", s("x")),
            kv("tmp.a", s("1")),
            kv("tmp.b", s("2")),
        ];
        assert!(apply(&a, &mut attrs, None));
        assert_eq!(
            attrs,
            vec![
                kv("service.name", s("api")),
                kv("env", s("prod")),
                kv("team", any_value::Value::IntValue(7)),
                kv("copy", s("api")),
                kv("zone", s("z1")),
            ]
        );
        // Nothing to do: unchanged, and said so.
        let update =
            actions(serde_json::json!([{"key": "absent", "value": 1, "action": "update"}]));
        let mut attrs = vec![kv("a", s("1"))];
        assert!(!apply(&update, &mut attrs, None));
    }

    #[test]
    fn hash_takes_the_bytes_the_collector_hashes() {
        let a = actions(serde_json::json!([
            {"key": "user", "action": "hash"},
            {"key": "n", "action": "hash"},
        ]));
        let mut attrs = vec![
            kv("user", s("alice")),
            kv("n", any_value::Value::IntValue(1)),
        ];
        apply(&a, &mut attrs, None);
        assert_eq!(
            attrs[0],
            kv(
                "user",
                s("2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90")
            )
        );
        // SHA-256 of 01 00 00 00 00 00 00 00 (little-endian 1).
        assert_eq!(
            attrs[1],
            kv(
                "n",
                s("7c9fa136d4413fa6173637e883b6998d32e1d675f88cddff9dcbcf331820f4b8")
            )
        );
    }

    #[test]
    fn extract_sets_named_groups_and_convert_changes_types() {
        let a = actions(serde_json::json!([
            {"key": "http.url", "pattern": "^/users/(?P<user_id>[0-9]+)/orders/(?P<order_id>[0-9a-f]+)$", "action": "extract"},
            {"key": "code", "converted_type": "int", "action": "convert"},
            {"key": "ratio", "converted_type": "string", "action": "convert"},
            {"key": "bad", "converted_type": "double", "action": "convert"},
        ]));
        let mut attrs = vec![
            kv("http.url", s("/users/42/orders/9f1c")),
            kv("code", s("200")),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("bad", s("not a number")),
        ];
        apply(&a, &mut attrs, None);
        assert_eq!(
            attrs,
            vec![
                kv("http.url", s("/users/42/orders/9f1c")),
                kv("code", any_value::Value::IntValue(200)),
                kv("ratio", s("0.5")),
                kv("bad", s("not a number")),
                kv("user_id", s("42")),
                kv("order_id", s("9f1c")),
            ]
        );
    }

    #[test]
    fn from_context_takes_the_clients_header_or_auth_attribute() {
        let list: Vec<Action> = serde_json::from_value(serde_json::json!([
            {"key": "tenant", "from_context": "metadata.X-Tenant-Id", "action": "upsert"},
            {"key": "user", "from_context": "auth.username", "action": "insert"},
            {"key": "region", "from_context": "metadata.x-region", "default_value": "none", "action": "insert"},
            {"key": "absent", "from_context": "metadata.x-absent", "action": "insert"},
        ]))
        .unwrap();
        let a = compile("actions", &list).unwrap();
        let client = ClientInfo::new(
            [("x-tenant-id", &b"acme"[..]), ("x-tenant-id", &b"beta"[..])],
            &sluice_core::client::AuthInfo::none().with("username", "ann"),
        )
        .unwrap();
        let mut attrs = vec![kv("tenant", s("spoofed"))];
        assert!(apply(&a, &mut attrs, Some(&client)));
        assert_eq!(
            attrs,
            vec![
                kv("tenant", s("acme;beta")),
                kv("user", s("ann")),
                kv("region", s("none")),
            ]
        );
        // Data with no client info gets only the defaults.
        let mut attrs = Vec::new();
        apply(&a, &mut attrs, None);
        assert_eq!(attrs, vec![kv("region", s("none"))]);
    }

    #[test]
    fn invalid_actions_are_reported_with_paths() {
        let list: Vec<Action> = serde_json::from_value(serde_json::json!([
            {"key": "a", "action": "insert"},
            {"key": "b", "pattern": "[", "action": "delete"},
            {"key": "c", "pattern": "(no names)", "action": "extract"},
            {"key": "d", "converted_type": "float", "action": "convert"},
            {"key": "e", "from_context": "client.address", "action": "upsert"},
            {"action": "hash"},
            {"key": "g", "from_context": "auth.username", "action": "delete"},
        ]))
        .unwrap();
        let text: Vec<String> = compile("processors.attributes.actions", &list)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "error: processors.attributes.actions[0]: action `insert` needs `value`, `from_attribute`, `from_context` or `default_value`",
                "error: processors.attributes.actions[1].pattern: not a valid regular expression: regex parse error:\n    [\n    ^\nerror: unclosed character class",
                "error: processors.attributes.actions[2].pattern: action `extract` needs named groups (`(?P<name>...)`)",
                "error: processors.attributes.actions[3].converted_type: `float` is not a type; use int, double or string",
                "error: processors.attributes.actions[4].from_context: `client.address` is not carried with the data; use a header (`metadata.x-forwarded-for`) or `auth.*`",
                "error: processors.attributes.actions[5]: action `hash` needs a `key` or a `pattern`",
                "error: processors.attributes.actions[6]: action `delete` takes no `value`, `from_attribute`, `from_context` or `default_value`",
            ]
        );
    }
}
