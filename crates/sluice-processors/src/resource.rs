//! The `resource` processor: insert, update, upsert, delete or hash resource attributes.
//!
//! Only the small `Resource` message of each `Resource*` entry is decoded and re-encoded; scopes
//! and items are copied as bytes (see `sluice_core::view::edit`).

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_config::Problem;
use sluice_core::view::{self, Editor, Reach, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, typed,
};

/// `processors.resource`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Actions applied in order to every resource of every signal.
    pub attributes: Vec<Action>,
}

/// One action on a resource attribute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The attribute key acted on.
    pub key: String,
    /// The value to set (string, number or boolean); for insert, update, upsert.
    #[serde(default)]
    pub value: Option<Value>,
    /// Take the value from this other resource attribute instead (no-op if it is absent).
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// What to do.
    pub action: ActionKind,
}

/// What an [`Action`] does, as in the Collector's attributes actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Add the attribute only if the key is absent.
    Insert,
    /// Change the attribute only if the key is present.
    Update,
    /// Insert or update.
    Upsert,
    /// Remove the attribute.
    Delete,
    /// Replace the value by the hex SHA-256 of its bytes (the Collector's current hash).
    Hash,
}

#[derive(Debug, Clone)]
enum Source {
    Literal(any_value::Value),
    Attribute(String),
    None,
}

#[derive(Debug, Clone)]
struct Compiled {
    key: String,
    kind: ActionKind,
    source: Source,
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

fn compile(path: &str, config: &ResourceConfig) -> Result<Vec<Compiled>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut actions = Vec::new();
    if config.attributes.is_empty() {
        problems.push(Problem::error(
            format!("{path}.attributes"),
            "at least one action is required",
        ));
    }
    for (i, a) in config.attributes.iter().enumerate() {
        let at = format!("{path}.attributes[{i}]");
        if a.key.is_empty() {
            problems.push(Problem::error(format!("{at}.key"), "must not be empty"));
        }
        let needs_value = matches!(
            a.kind(),
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert
        );
        let source = match (&a.value, &a.from_attribute) {
            (Some(_), Some(_)) => {
                problems.push(Problem::error(
                    &at,
                    "set either `value` or `from_attribute`, not both",
                ));
                Source::None
            }
            (Some(v), None) => match literal(v) {
                Some(l) => Source::Literal(l),
                None => {
                    problems.push(Problem::error(
                        format!("{at}.value"),
                        "must be a string, number or boolean",
                    ));
                    Source::None
                }
            },
            (None, Some(attr)) => Source::Attribute(attr.clone()),
            (None, None) => Source::None,
        };
        if needs_value && a.value.is_none() && a.from_attribute.is_none() {
            problems.push(Problem::error(
                &at,
                format!("action `{:?}` needs `value` or `from_attribute`", a.action).to_lowercase(),
            ));
        }
        if !needs_value && !matches!(source, Source::None) {
            problems.push(Problem::error(
                &at,
                format!(
                    "action `{:?}` takes no `value` or `from_attribute`",
                    a.action
                )
                .to_lowercase(),
            ));
        }
        actions.push(Compiled {
            key: a.key.clone(),
            kind: a.action,
            source,
        });
    }
    if problems.is_empty() {
        Ok(actions)
    } else {
        Err(problems)
    }
}

impl Action {
    fn kind(&self) -> ActionKind {
        self.action
    }
}

fn hash_value(value: &any_value::Value) -> Option<String> {
    // Bytes hashed as the Collector's attraction hasher does.
    let bytes: Vec<u8> = match value {
        any_value::Value::StringValue(s) => s.as_bytes().to_vec(),
        any_value::Value::BoolValue(b) => vec![u8::from(*b)],
        any_value::Value::IntValue(i) => i.to_be_bytes().to_vec(),
        any_value::Value::DoubleValue(d) => d.to_bits().to_be_bytes().to_vec(),
        any_value::Value::BytesValue(b) => b.clone(),
        _ => return None,
    };
    Some(hex::encode(Sha256::digest(&bytes)))
}

/// Applies the actions to one attribute list.
fn apply(actions: &[Compiled], attributes: &mut Vec<KeyValue>) {
    for action in actions {
        let position = attributes.iter().position(|kv| kv.key == action.key);
        let value = match &action.source {
            Source::Literal(v) => Some(v.clone()),
            Source::Attribute(from) => attributes
                .iter()
                .find(|kv| &kv.key == from)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone()),
            Source::None => None,
        };
        match (action.kind, position) {
            (ActionKind::Insert, None) | (ActionKind::Upsert, None) => {
                if let Some(v) = value {
                    attributes.push(KeyValue {
                        key: action.key.clone(),
                        value: Some(AnyValue { value: Some(v) }),
                        ..Default::default()
                    });
                }
            }
            (ActionKind::Update, Some(i)) | (ActionKind::Upsert, Some(i)) => {
                if let Some(v) = value {
                    attributes[i].value = Some(AnyValue { value: Some(v) });
                }
            }
            (ActionKind::Delete, Some(_)) => attributes.retain(|kv| kv.key != action.key),
            (ActionKind::Hash, Some(i)) => {
                let hashed = attributes[i]
                    .value
                    .as_ref()
                    .and_then(|v| v.value.as_ref())
                    .and_then(hash_value);
                if let Some(h) = hashed {
                    attributes[i].value = Some(AnyValue {
                        value: Some(any_value::Value::StringValue(h)),
                    });
                }
            }
            _ => {}
        }
    }
}

struct ResourceProcessor {
    actions: Arc<Vec<Compiled>>,
}

/// Applies the actions to each resource; only the `Resource` message is decoded.
struct Apply<'a>(&'a [Compiled]);

impl Editor for Apply<'_> {
    fn reach(&self) -> Reach {
        Reach::Resources
    }

    fn resource(&mut self, view: &view::Resource<'_>) -> Verdict {
        let mut resource = view.decode();
        apply(self.0, &mut resource.attributes);
        Verdict::resource(view, &resource)
    }
}

#[async_trait]
impl Processor for ResourceProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        Ok(Some(batch.edit(&mut Apply(&self.actions))))
    }
}

/// The same actions for every pipeline.
struct ResourceComponent(Arc<Vec<Compiled>>);

impl ProcessorComponent for ResourceComponent {
    fn instance(&self, _ctx: PipelineContext) -> Result<Instance, BuildError> {
        Ok(Instance::new(Arc::new(ResourceProcessor {
            actions: Arc::clone(&self.0),
        })))
    }
}

/// Builds `resource` processors.
#[derive(Debug, Default)]
pub struct ResourceFactory;

impl ProcessorFactory for ResourceFactory {
    fn type_name(&self) -> &'static str {
        "resource"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &ResourceConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let c: ResourceConfig = typed(&path, config)?;
        let actions = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(ResourceComponent(Arc::new(actions))))
    }
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

    fn actions(yaml_json: serde_json::Value) -> Vec<Compiled> {
        let c: ResourceConfig = serde_json::from_value(yaml_json).unwrap();
        compile("processors.resource", &c).unwrap()
    }

    #[test]
    fn insert_update_upsert_delete_follow_the_collector() {
        let a = actions(serde_json::json!({"attributes": [
            {"key": "env", "value": "prod", "action": "insert"},
            {"key": "service.name", "value": "ignored", "action": "insert"},
            {"key": "region", "value": "eu", "action": "update"},
            {"key": "team", "value": 7, "action": "upsert"},
            {"key": "copy", "from_attribute": "service.name", "action": "upsert"},
            {"key": "secret", "action": "delete"},
        ]}));
        let mut attrs = vec![kv("service.name", s("api")), kv("secret", s("x"))];
        apply(&a, &mut attrs);
        assert_eq!(
            attrs,
            vec![
                kv("service.name", s("api")),
                kv("env", s("prod")),
                kv("team", any_value::Value::IntValue(7)),
                kv("copy", s("api")),
            ]
        );
    }

    #[test]
    fn hash_is_sha256_hex_of_the_value() {
        let a = actions(serde_json::json!({"attributes": [{"key": "user", "action": "hash"}]}));
        let mut attrs = vec![kv("user", s("alice"))];
        apply(&a, &mut attrs);
        assert_eq!(
            attrs[0].value.as_ref().unwrap().value,
            Some(s(
                "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
            ))
        );
    }

    #[test]
    fn invalid_actions_are_reported_with_paths() {
        let problems = ResourceFactory.check(
            "processors.resource",
            &serde_json::json!({"attributes": [
                {"key": "a", "action": "insert"},
                {"key": "b", "action": "explode"},
            ]}),
        );
        let text = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("processors.resource.attributes[1].action"),
            "{text}"
        );
        let problems = ResourceFactory.check(
            "processors.resource",
            &serde_json::json!({"attributes": [{"key": "a", "action": "insert"}]}),
        );
        assert_eq!(
            problems[0].to_string(),
            "error: processors.resource.attributes[0]: action `insert` needs `value` or `from_attribute`"
        );
    }
}
