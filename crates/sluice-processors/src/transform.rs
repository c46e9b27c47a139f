//! The `transform` processor: OTTL statements (the editors of `sluice_ottl`, each with an
//! optional `where` condition) applied to spans, log records and data points, in the Collector's
//! config shape (`trace_statements`, `metric_statements`, `log_statements`, each a list of
//! `{context, statements}` groups).
//!
//! Conditions are evaluated on the encoded item; only items a statement applies to are decoded,
//! and only those that changed are re-encoded. Endpoint normalization is the usual use:
//! `replace_pattern(name, "/[0-9]+", "/{id}")` (see `config/privacy.yaml`).

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{Context, Editor, Item, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, typed,
};
use sluice_ottl::{Editable, ErrorMode, Scope, Statement, Subject};

/// `processors.transform`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// `propagate` (default), `ignore` or `silent`. Sluice's statements cannot fail at run time
    /// (a target of another type is left alone), so all three behave alike.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Statement groups for traces (context `span`).
    #[serde(default)]
    pub trace_statements: Vec<Value>,
    /// Statement groups for metrics (context `datapoint`).
    #[serde(default)]
    pub metric_statements: Vec<Value>,
    /// Statement groups for logs (context `log`).
    #[serde(default)]
    pub log_statements: Vec<Value>,
}

/// One `{context, statements}` group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    context: String,
    statements: Vec<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default, rename = "error_mode")]
    _error_mode: ErrorMode,
}

#[derive(Debug, Default)]
struct Rules {
    traces: Vec<Statement>,
    metrics: Vec<Statement>,
    logs: Vec<Statement>,
}

fn compile_groups(
    path: &str,
    groups: &[Value],
    scope: Scope,
    context_name: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Statement> {
    let mut out = Vec::new();
    for (i, raw) in groups.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if raw.is_string() {
            problems.push(Problem::error(
                &at,
                format!("statements without a context are not supported yet; write them in a group: `{{context: {context_name}, statements: [...]}}`"),
            ));
            continue;
        }
        let group: Group = match serde_json::from_value(raw.clone()) {
            Ok(g) => g,
            Err(e) => {
                problems.push(Problem::error(&at, e.to_string()));
                continue;
            }
        };
        if group.context != context_name
            && !(context_name == "log" && group.context == "log_record")
        {
            problems.push(Problem::error(
                format!("{at}.context"),
                format!(
                    "the `{}` context is not supported here yet; sluice transforms `{context_name}`",
                    group.context
                ),
            ));
            continue;
        }
        if !group.conditions.is_empty() {
            problems.push(Problem::error(
                format!("{at}.conditions"),
                "group conditions are not supported yet; add `where <condition>` to each statement",
            ));
        }
        match sluice_ottl::parse_statement_list(&group.statements, scope) {
            Ok(list) => out.extend(list),
            Err((j, e)) => problems.push(Problem::error(
                format!("{at}.statements[{j}]"),
                format!("`{}`: {e}", group.statements[j]),
            )),
        }
    }
    out
}

fn compile(path: &str, c: &TransformConfig) -> Result<Rules, Vec<Problem>> {
    let mut problems = Vec::new();
    let rules = Rules {
        traces: compile_groups(
            &format!("{path}.trace_statements"),
            &c.trace_statements,
            Scope::Span,
            "span",
            &mut problems,
        ),
        metrics: compile_groups(
            &format!("{path}.metric_statements"),
            &c.metric_statements,
            Scope::DataPoint,
            "datapoint",
            &mut problems,
        ),
        logs: compile_groups(
            &format!("{path}.log_statements"),
            &c.log_statements,
            Scope::Log,
            "log",
            &mut problems,
        ),
    };
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

/// Applies `statements` to a decoded message's parts; the new encoding when it changed.
fn edit<M: Message + Default>(
    raw: &[u8],
    statements: &[&Statement],
    parts: impl FnOnce(&mut M) -> Editable<'_>,
) -> Option<Vec<u8>> {
    let mut message = M::decode(raw).ok()?;
    let mut editable = parts(&mut message);
    for statement in statements {
        statement.apply(&mut editable);
    }
    let encoded = message.encode_to_vec();
    (encoded != raw).then_some(encoded)
}

fn attributes_only(attributes: &mut Vec<KeyValue>) -> Editable<'_> {
    Editable {
        name: None,
        body: None,
        severity_text: None,
        attributes,
    }
}

struct Apply<'a>(&'a Rules);

impl Editor for Apply<'_> {
    fn item(&mut self, context: &Context<'_>, item: &Item<'_>) -> Verdict {
        let all = match item {
            Item::Span(_) => &self.0.traces,
            Item::Log(_) => &self.0.logs,
            Item::Point(_) => &self.0.metrics,
        };
        let subject = Subject::Item(context, item);
        let applicable: Vec<&Statement> = all.iter().filter(|s| s.applies(&subject)).collect();
        if applicable.is_empty() {
            return Verdict::Keep;
        }
        let raw = item.raw();
        let changed = match item {
            Item::Span(_) => {
                edit::<opentelemetry_proto::tonic::trace::v1::Span>(raw, &applicable, |s| {
                    Editable {
                        name: Some(&mut s.name),
                        body: None,
                        severity_text: None,
                        attributes: &mut s.attributes,
                    }
                })
            }
            Item::Log(_) => {
                edit::<opentelemetry_proto::tonic::logs::v1::LogRecord>(raw, &applicable, |l| {
                    Editable {
                        name: None,
                        body: Some(&mut l.body),
                        severity_text: Some(&mut l.severity_text),
                        attributes: &mut l.attributes,
                    }
                })
            }
            Item::Point(point) => {
                let before = point.raw();
                point
                    .edit(|attributes, _| {
                        let mut editable = attributes_only(attributes);
                        for statement in &applicable {
                            statement.apply(&mut editable);
                        }
                        true
                    })
                    .filter(|encoded| encoded.as_slice() != before)
            }
        };
        match changed {
            Some(encoded) => Verdict::Replace(encoded),
            None => Verdict::Keep,
        }
    }
}

/// Batches over this many bytes are transformed on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

struct TransformProcessor {
    rules: Arc<Rules>,
}

#[async_trait]
impl Processor for TransformProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let rules = Arc::clone(&self.rules);
        let size = batch.size();
        let batch = sluice_core::blocking::off_workers(size, OFF_WORKERS_ABOVE, move || {
            batch.edit(&mut Apply(&rules))
        })
        .await
        .ok_or_else(|| ConsumeError::internal("the transform processor failed"))?;
        Ok(Some(batch))
    }
}

struct TransformComponent(Arc<Rules>);

impl ProcessorComponent for TransformComponent {
    fn instance(&self, _ctx: PipelineContext) -> Result<Instance, BuildError> {
        Ok(Instance::new(Arc::new(TransformProcessor {
            rules: Arc::clone(&self.0),
        })))
    }
}

/// Builds `transform` processors.
#[derive(Debug, Default)]
pub struct TransformFactory;

impl ProcessorFactory for TransformFactory {
    fn type_name(&self) -> &'static str {
        "transform"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &TransformConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let c: TransformConfig = typed(&path, config)?;
        let rules = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(TransformComponent(Arc::new(rules))))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use sluice_core::Signal;

    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn traces(spans: Vec<Span>) -> Batch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::decode(Signal::Traces, request.encode_to_vec().into()).unwrap()
    }

    fn rules(config: serde_json::Value) -> Rules {
        let c: TransformConfig = serde_json::from_value(config).unwrap();
        compile("processors.transform", &c).unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn normalizes_endpoints_where_the_condition_holds_and_keeps_other_spans_as_they_were() {
        let r = rules(serde_json::json!({
            "error_mode": "ignore",
            "trace_statements": [{
                "context": "span",
                "statements": [
                    r#"replace_pattern(name, "/[0-9]+(/|$)", "/{id}$1") where kind == SPAN_KIND_SERVER"#,
                    r#"replace_pattern(attributes["url.path"], "/[0-9]+", "/{id}")"#,
                ],
            }],
        }));
        let span = |id: u8, name: &str, kind: i32, path: &str| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: name.into(),
            kind,
            attributes: vec![kv("url.path", path)],
            ..Default::default()
        };
        let batch = traces(vec![
            span(1, "GET /users/123/orders/9", 2, "/users/123"),
            span(2, "GET /users/123", 3, "/x"),
        ]);
        let out = batch.edit(&mut Apply(&r));
        let request = ExportTraceServiceRequest::decode(out.data().clone()).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].name, "GET /users/{id}/orders/{id}");
        assert_eq!(spans[0].attributes, vec![kv("url.path", "/users/{id}")]);
        assert_eq!(
            spans[1].name, "GET /users/123",
            "a client span: the where clause is false"
        );
        assert_eq!(spans[1].attributes, vec![kv("url.path", "/x")]);
        // Nothing to change: the same bytes.
        let clean = traces(vec![span(3, "GET /", 2, "/")]);
        let before = clean.data().as_ptr();
        assert_eq!(clean.edit(&mut Apply(&r)).data().as_ptr(), before);
    }

    #[test]
    fn what_sluice_cannot_honour_is_refused_with_paths() {
        let problems = TransformFactory.check(
            "processors.transform",
            &serde_json::json!({
                "trace_statements": [
                    "set(span.attributes[\"a\"], \"b\")",
                    {"context": "resource", "statements": ["set(attributes[\"a\"], \"b\")"]},
                    {"context": "span", "statements": ["set(attributes[\"a\"], \"b\")", "merge_maps(attributes, attributes, \"upsert\")"]},
                ],
            }),
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with(
                "error: processors.transform.trace_statements[0]: statements without a context"
            ),
            "{text:?}"
        );
        assert!(
            text[1].starts_with(
                "error: processors.transform.trace_statements[1].context: the `resource` context"
            ),
            "{text:?}"
        );
        assert!(
            text[2].starts_with(
                "error: processors.transform.trace_statements[2].statements[1]: `merge_maps"
            ),
            "{text:?}"
        );
    }
}
