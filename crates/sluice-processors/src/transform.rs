//! The `transform` processor: OTTL statements (the editors of `sluice_ottl`, each with an
//! optional `where` condition) applied to resources, spans, span events, log records and data
//! points, in the Collector's config shape: `trace_statements`, `metric_statements` and
//! `log_statements`, each a list of `{context, conditions, statements}` groups (contexts
//! `resource`, `span`, `spanevent`, `log`, `datapoint`; a group's statements apply where any of
//! its `conditions` holds) or of flat statements whose context is inferred from their paths
//! (`set(span.attributes["k"], "v")`), as the Collector's current versions take them.
//!
//! Conditions are evaluated on the encoded item as it arrived; only items a statement applies to
//! are decoded, and only those that changed are re-encoded. Endpoint normalization is the usual use:
//! `replace_pattern(name, "/[0-9]+", "/{id}")` (see `config/privacy.yaml`).

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{self, Context, Editor, Item, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, Signal, typed,
};
use sluice_ottl::{Condition, Editable, ErrorMode, Scope, Statement, Subject};

/// `processors.transform`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// `propagate` (default), `ignore` or `silent`. Sluice's statements cannot fail at run time
    /// (a target of another type is left alone), so all three behave alike.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Statement groups (or flat statements) for traces: contexts `resource`, `span`,
    /// `spanevent`.
    #[serde(default)]
    pub trace_statements: Vec<Value>,
    /// For metrics: contexts `resource`, `datapoint`.
    #[serde(default)]
    pub metric_statements: Vec<Value>,
    /// For logs: contexts `resource`, `log` (or `log_record`).
    #[serde(default)]
    pub log_statements: Vec<Value>,
}

/// One group as configured: `{context, conditions, statements}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupConfig {
    context: String,
    statements: Vec<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default, rename = "error_mode")]
    _error_mode: ErrorMode,
}

/// One group, compiled: its statements apply to an item when any of its conditions holds (or
/// it has none), each statement's own `where` permitting.
#[derive(Debug)]
struct Group {
    conditions: Vec<Condition>,
    statements: Vec<Statement>,
}

impl Group {
    /// Adds the statements that apply to `subject` to `out`.
    fn applicable<'g>(&'g self, subject: &Subject<'_, '_>, out: &mut Vec<&'g Statement>) {
        if self.conditions.is_empty() || self.conditions.iter().any(|c| c.holds(subject)) {
            out.extend(self.statements.iter().filter(|s| s.applies(subject)));
        }
    }
}

fn applicable<'g>(groups: &'g [Group], subject: &Subject<'_, '_>) -> Vec<&'g Statement> {
    let mut out = Vec::new();
    for group in groups {
        group.applicable(subject, &mut out);
    }
    out
}

/// One signal's groups, by the context they edit.
#[derive(Debug, Default)]
struct SignalRules {
    resource: Vec<Group>,
    /// `span`, `log` or `datapoint`.
    item: Vec<Group>,
    /// `spanevent` (traces).
    event: Vec<Group>,
}

#[derive(Debug, Default)]
struct Rules {
    traces: SignalRules,
    metrics: SignalRules,
    logs: SignalRules,
}

/// The contexts of one signal's statements, most specific first (the order in which a flat
/// statement's context is inferred), with their names.
fn contexts(signal: Signal) -> &'static [(Scope, &'static str)] {
    match signal {
        Signal::Traces => &[
            (Scope::SpanEvent, "spanevent"),
            (Scope::Span, "span"),
            (Scope::Resource, "resource"),
        ],
        Signal::Metrics => &[
            (Scope::DataPoint, "datapoint"),
            (Scope::Resource, "resource"),
        ],
        Signal::Logs => &[(Scope::Log, "log"), (Scope::Resource, "resource")],
    }
}

fn compile_groups(
    path: &str,
    groups: &[Value],
    signal: Signal,
    problems: &mut Vec<Problem>,
) -> SignalRules {
    let contexts = contexts(signal);
    let names: Vec<&str> = contexts.iter().map(|(_, n)| *n).collect();
    let mut out = SignalRules::default();
    for (i, raw) in groups.iter().enumerate() {
        let at = format!("{path}[{i}]");
        // A flat statement: its context is inferred from the paths it names, as the Collector
        // does (`set(span.name, ...)`).
        let (scope, config) = if let Some(text) = raw.as_str() {
            let scopes: Vec<Scope> = contexts.iter().map(|(s, _)| *s).collect();
            let Some(scope) = sluice_ottl::infer_scope(text, &scopes) else {
                problems.push(Problem::error(
                    &at,
                    format!(
                        "`{text}`: the context cannot be inferred; name it in the paths (`{}.attributes[\"k\"]`) or write a group `{{context: ..., statements: [...]}}`",
                        names[0]
                    ),
                ));
                continue;
            };
            let config = GroupConfig {
                context: String::new(),
                statements: vec![text.to_owned()],
                conditions: Vec::new(),
                _error_mode: ErrorMode::default(),
            };
            (scope, config)
        } else {
            let config: GroupConfig = match serde_json::from_value(raw.clone()) {
                Ok(g) => g,
                Err(e) => {
                    problems.push(Problem::error(&at, e.to_string()));
                    continue;
                }
            };
            let name = match config.context.as_str() {
                "log_record" => "log",
                other => other,
            };
            let Some(&(scope, _)) = contexts.iter().find(|(_, n)| *n == name) else {
                problems.push(Problem::error(
                    format!("{at}.context"),
                    format!(
                        "the `{}` context is not supported here; sluice transforms {}",
                        config.context,
                        names.join(", ")
                    ),
                ));
                continue;
            };
            (scope, config)
        };
        let mut conditions = Vec::new();
        for (j, text) in config.conditions.iter().enumerate() {
            match sluice_ottl::parse(text, scope) {
                Ok(c) => conditions.push(c),
                Err(e) => problems.push(Problem::error(
                    format!("{at}.conditions[{j}]"),
                    format!("`{text}`: {e}"),
                )),
            }
        }
        let statements = match sluice_ottl::parse_statement_list(&config.statements, scope) {
            Ok(list) => list,
            Err((j, e)) => {
                let at = if raw.is_string() {
                    at.clone()
                } else {
                    format!("{at}.statements[{j}]")
                };
                problems.push(Problem::error(
                    at,
                    format!("`{}`: {e}", config.statements[j]),
                ));
                continue;
            }
        };
        // Conditions are evaluated on the data as it arrived: one that reads resource
        // attributes after a `resource` group wrote some would not see the writes.
        let reads_resource = conditions.iter().any(Condition::reads_resource_attributes)
            || statements.iter().any(Statement::reads_resource_attributes);
        if scope != Scope::Resource && reads_resource && !out.resource.is_empty() {
            problems.push(Problem::error(
                &at,
                "a condition here reads resource attributes after a `resource` group edits them; sluice evaluates conditions on the data as it arrived, so put the `resource` group in a transform processor of its own, before this one",
            ));
            continue;
        }
        let group = Group {
            conditions,
            statements,
        };
        match scope {
            Scope::Resource => out.resource.push(group),
            Scope::SpanEvent => out.event.push(group),
            _ => out.item.push(group),
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
            Signal::Traces,
            &mut problems,
        ),
        metrics: compile_groups(
            &format!("{path}.metric_statements"),
            &c.metric_statements,
            Signal::Metrics,
            &mut problems,
        ),
        logs: compile_groups(
            &format!("{path}.log_statements"),
            &c.log_statements,
            Signal::Logs,
            &mut problems,
        ),
    };
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

fn apply_all(statements: &[&Statement], mut editable: Editable<'_>) {
    for statement in statements {
        statement.apply(&mut editable);
    }
}

fn attributes_only(attributes: &mut Vec<KeyValue>) -> Editable<'_> {
    Editable {
        name: None,
        body: None,
        severity_text: None,
        attributes,
    }
}

/// Applies one signal's groups to a batch.
struct Apply<'a>(&'a SignalRules);

impl Editor for Apply<'_> {
    fn resource(&mut self, resource: &view::Resource<'_>) -> Verdict {
        let statements = applicable(&self.0.resource, &Subject::Resource(resource));
        if statements.is_empty() {
            return Verdict::Keep;
        }
        let mut decoded = resource.decode();
        let before = decoded.clone();
        apply_all(&statements, attributes_only(&mut decoded.attributes));
        if decoded == before {
            Verdict::Keep
        } else {
            Verdict::resource(resource, &decoded)
        }
    }

    fn item(&mut self, context: &Context<'_>, item: &Item<'_>) -> Verdict {
        let rules = self.0;
        if rules.item.is_empty() && rules.event.is_empty() {
            return Verdict::Keep;
        }
        let statements = applicable(&rules.item, &Subject::Item(context, item));
        let raw = item.raw();
        let changed = match item {
            Item::Span(span) => {
                // Each event's statements, by the event's position.
                let events: Vec<(usize, Vec<&Statement>)> = if rules.event.is_empty() {
                    Vec::new()
                } else {
                    span.events()
                        .enumerate()
                        .map(|(i, e)| {
                            (
                                i,
                                applicable(&rules.event, &Subject::Event(context, span, &e)),
                            )
                        })
                        .filter(|(_, s)| !s.is_empty())
                        .collect()
                };
                if statements.is_empty() && events.is_empty() {
                    return Verdict::Keep;
                }
                let mut decoded = span.decode();
                apply_all(
                    &statements,
                    Editable {
                        name: Some(&mut decoded.name),
                        body: None,
                        severity_text: None,
                        attributes: &mut decoded.attributes,
                    },
                );
                for (i, list) in events {
                    if let Some(event) = decoded.events.get_mut(i) {
                        apply_all(
                            &list,
                            Editable {
                                name: Some(&mut event.name),
                                body: None,
                                severity_text: None,
                                attributes: &mut event.attributes,
                            },
                        );
                    }
                }
                Some(decoded.encode_to_vec())
            }
            _ if statements.is_empty() => return Verdict::Keep,
            Item::Log(log) => {
                let mut decoded = log.decode();
                apply_all(
                    &statements,
                    Editable {
                        name: None,
                        body: Some(&mut decoded.body),
                        severity_text: Some(&mut decoded.severity_text),
                        attributes: &mut decoded.attributes,
                    },
                );
                Some(decoded.encode_to_vec())
            }
            Item::Point(point) => point.edit(|attributes, _| {
                apply_all(&statements, attributes_only(attributes));
                true
            }),
        };
        match changed {
            Some(encoded) if encoded.as_slice() != raw => Verdict::Replace(encoded),
            _ => Verdict::Keep,
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
            let signal = match batch.signal() {
                Signal::Traces => &rules.traces,
                Signal::Metrics => &rules.metrics,
                Signal::Logs => &rules.logs,
            };
            batch.edit(&mut Apply(signal))
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
    use crate::testing;

    fn kv(k: &str, v: &str) -> KeyValue {
        testing::kv(k, testing::s(v))
    }

    fn traces(spans: Vec<Span>) -> Batch {
        testing::traces(Vec::new(), spans)
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
        let out = batch.edit(&mut Apply(&r.traces));
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
        assert_eq!(clean.edit(&mut Apply(&r.traces)).data().as_ptr(), before);
    }

    #[test]
    fn what_sluice_cannot_honour_is_refused_with_paths() {
        let problems = TransformFactory.check(
            "processors.transform",
            &serde_json::json!({
                "trace_statements": [
                    "set(attributes[\"a\"], \"b\")",
                    {"context": "scope", "statements": ["set(attributes[\"a\"], \"b\")"]},
                    {"context": "span", "statements": ["set(attributes[\"a\"], \"b\")", "merge_maps(attributes, attributes, \"upsert\")"]},
                    {"context": "span", "conditions": ["IsThing(name)"], "statements": []},
                    {"context": "resource", "statements": ["set(attributes[\"env\"], \"prod\")"]},
                    {"context": "span", "conditions": ["resource.attributes[\"env\"] == \"prod\""], "statements": ["set(name, \"x\")"]},
                ],
            }),
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let expected = [
            "error: processors.transform.trace_statements[0]: `set(attributes[\"a\"], \"b\")`: the context cannot be inferred",
            "error: processors.transform.trace_statements[1].context: the `scope` context is not supported here; sluice transforms spanevent, span, resource",
            "error: processors.transform.trace_statements[2].statements[1]: `merge_maps",
            "error: processors.transform.trace_statements[3].conditions[0]: `IsThing(name)`",
            "error: processors.transform.trace_statements[5]: a condition here reads resource attributes after a `resource` group",
        ];
        assert_eq!(text.len(), expected.len(), "{text:#?}");
        for (got, want) in text.iter().zip(expected) {
            assert!(
                got.starts_with(want),
                "{got}\n  does not start with\n{want}"
            );
        }
    }

    fn decoded(batch: &Batch) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(batch.data().clone()).unwrap()
    }

    #[test]
    fn resource_span_and_spanevent_contexts_with_group_conditions() {
        let r = rules(serde_json::json!({
            "trace_statements": [
                {"context": "resource", "conditions": ["attributes[\"env\"] == \"staging\""],
                 "statements": ["set(attributes[\"env\"], \"stage\")", "delete_key(attributes, \"secret\")"]},
                {"context": "span", "conditions": ["kind == SPAN_KIND_SERVER", "name == \"job\""],
                 "statements": ["set(attributes[\"tier\"], \"web\")"]},
                {"context": "spanevent", "conditions": ["name == \"exception\""],
                 "statements": ["delete_key(attributes, \"exception.stacktrace\")", "set(name, \"error\") where span.name == \"job\""]},
            ],
        }));
        let event = |name: &str| opentelemetry_proto::tonic::trace::v1::span::Event {
            name: name.into(),
            attributes: vec![
                kv("exception.stacktrace", "at x"),
                kv("exception.type", "E"),
            ],
            ..Default::default()
        };
        let span = |id: u8, name: &str, kind: i32| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: name.into(),
            kind,
            events: vec![event("exception"), event("log")],
            ..Default::default()
        };
        let request = |env: &str| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv("env", env), kv("secret", "s")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, "GET /", 2), span(2, "job", 1), span(3, "q", 3)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch =
            Batch::decode(Signal::Traces, request("staging").encode_to_vec().into()).unwrap();
        let out = decoded(&batch.edit(&mut Apply(&r.traces)));
        let rs = &out.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![kv("env", "stage")]
        );
        let spans = &rs.scope_spans[0].spans;
        // Either group condition selects: the server span and the span named `job`.
        assert_eq!(spans[0].attributes, vec![kv("tier", "web")]);
        assert_eq!(spans[1].attributes, vec![kv("tier", "web")]);
        assert!(spans[2].attributes.is_empty());
        for (i, s) in spans.iter().enumerate() {
            // Only `exception` events lose their stack trace; only the `job` span's are renamed.
            assert_eq!(
                s.events[0].attributes,
                vec![kv("exception.type", "E")],
                "span {i}"
            );
            assert_eq!(s.events[0].name, if i == 1 { "error" } else { "exception" });
            assert_eq!(s.events[1], event("log"));
        }
        // A resource the condition does not select keeps its attributes.
        let batch = Batch::decode(Signal::Traces, request("prod").encode_to_vec().into()).unwrap();
        let out = decoded(&batch.edit(&mut Apply(&r.traces)));
        assert_eq!(
            out.resource_spans[0].resource.as_ref().unwrap().attributes,
            vec![kv("env", "prod"), kv("secret", "s")]
        );
    }

    #[test]
    fn flat_statements_take_their_context_from_their_paths() {
        let r = rules(serde_json::json!({
            "trace_statements": [
                r#"set(resource.attributes["region"], "eu")"#,
                r#"replace_pattern(span.name, "/[0-9]+", "/{id}") where span.kind == SPAN_KIND_SERVER"#,
                r#"set(spanevent.attributes["seen"], true) where spanevent.name == "exception""#,
                r#"delete_key(span.attributes, "drop.me")"#,
            ],
        }));
        assert_eq!(r.traces.resource.len(), 1);
        assert_eq!(r.traces.item.len(), 2);
        assert_eq!(r.traces.event.len(), 1);
        let batch = traces(vec![Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            name: "GET /users/42".into(),
            kind: 2,
            attributes: vec![kv("drop.me", "x"), kv("keep", "y")],
            events: vec![opentelemetry_proto::tonic::trace::v1::span::Event {
                name: "exception".into(),
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let out = decoded(&batch.edit(&mut Apply(&r.traces)));
        let rs = &out.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![kv("region", "eu")]
        );
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(span.attributes, vec![kv("keep", "y")]);
        assert_eq!(
            span.events[0].attributes,
            vec![KeyValue {
                key: "seen".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::BoolValue(true)),
                }),
                ..Default::default()
            }]
        );
    }
}
