//! The `attributes` processor: the Collector's attribute actions (`crate::actions`) on the
//! attributes of spans, log records and metric data points, for the items its `include` and
//! `exclude` properties select (strict or regexp matching on services, span names and kinds,
//! attributes, resources, libraries, log bodies and severities, metric names).
//!
//! Matching reads the encoded item through `sluice_core::view`; only selected items are decoded,
//! and only those the actions change are re-encoded.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use regex::RegexSet;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{self, Context, Editor, Item, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, Signal, typed,
};

use crate::actions::{self, Action, Compiled, apply};
use sluice_core::client::ClientInfo;

/// `processors.attributes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// The actions, applied in order to each selected item's attributes.
    pub actions: Vec<Action>,
    /// Only items matching these properties are changed.
    #[serde(default)]
    pub include: Option<MatchProperties>,
    /// Items matching these properties are left alone (checked after `include`).
    #[serde(default)]
    pub exclude: Option<MatchProperties>,
}

/// `include` / `exclude`: every property given must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchProperties {
    /// `strict` (equality) or `regexp` (for `services`, `span_names`, `libraries`, log bodies
    /// and severity texts, metric names, and string attribute values).
    pub match_type: String,
    /// The Collector's regexp cache settings; accepted, and without effect here (sluice's
    /// regexes are compiled once).
    #[serde(default)]
    pub regexp: Option<Value>,
    /// `service.name` of the item's resource, any of (traces).
    #[serde(default)]
    pub services: Vec<String>,
    /// Span names, any of (traces).
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Span kinds (`SPAN_KIND_SERVER` or `Server`), any of (traces).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// String log bodies, any of (logs).
    #[serde(default)]
    pub log_bodies: Vec<String>,
    /// Log severity texts, any of (logs).
    #[serde(default)]
    pub log_severity_texts: Vec<String>,
    /// The lowest log severity number that matches (logs).
    #[serde(default)]
    pub log_severity_number: Option<SeverityMatch>,
    /// Metric names, any of (metrics).
    #[serde(default)]
    pub metric_names: Vec<String>,
    /// Item attributes, all of (traces, logs).
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Resource attributes, all of.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
    /// Instrumentation scopes, any of (traces, logs).
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
}

/// One attribute to match: present, or equal (strict) or matching (regexp) when `value` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The key.
    pub key: String,
    /// The value, if it matters.
    #[serde(default)]
    pub value: Option<Value>,
}

/// One instrumentation scope to match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    /// The scope name.
    pub name: String,
    /// The version; any when absent.
    #[serde(default)]
    pub version: Option<String>,
}

/// `log_severity_number`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMatch {
    /// The lowest severity matched: a number (9) or a name (`INFO`, `WARN2`).
    pub min: Value,
    /// Whether records without a severity match.
    #[serde(default)]
    pub match_undefined: bool,
}

/// Strings matched strictly or by regular expressions.
#[derive(Debug, Clone)]
enum Strings {
    Strict(HashSet<String>),
    Regexp(RegexSet),
}

impl Strings {
    fn matches(&self, s: &str) -> bool {
        match self {
            Strings::Strict(set) => set.contains(s),
            Strings::Regexp(set) => set.is_match(s),
        }
    }
}

#[derive(Debug, Clone)]
enum ValueMatch {
    Present,
    Strict(Value),
    Regexp(regex::Regex),
}

/// One compiled attribute condition.
#[derive(Debug, Clone)]
struct Condition {
    key: String,
    value: ValueMatch,
}

impl Condition {
    fn matches(&self, value: Option<view::AnyValue<'_>>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match &self.value {
            ValueMatch::Present => true,
            ValueMatch::Regexp(r) => value.as_str().is_some_and(|s| r.is_match(s)),
            ValueMatch::Strict(want) => match (want, value) {
                (Value::String(w), view::AnyValue::String(s)) => s == w.as_str(),
                (Value::Bool(w), view::AnyValue::Bool(b)) => *w == b,
                (Value::Number(n), view::AnyValue::Int(i)) => n.as_i64() == Some(i),
                (Value::Number(n), view::AnyValue::Double(d)) => n.as_f64() == Some(d),
                _ => false,
            },
        }
    }
}

/// Compiled `include` or `exclude` properties; `None` fields are not given.
#[derive(Debug, Clone, Default)]
struct Matcher {
    services: Option<Strings>,
    span_names: Option<Strings>,
    span_kinds: Option<HashSet<i32>>,
    log_bodies: Option<Strings>,
    log_severity_texts: Option<Strings>,
    log_severity: Option<(i32, bool)>,
    metric_names: Option<Strings>,
    attributes: Vec<Condition>,
    resources: Vec<Condition>,
    libraries: Vec<(Strings, Option<String>)>,
}

fn span_kind(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SPAN_KIND_").unwrap_or(name);
    Some(match name.to_ascii_lowercase().as_str() {
        "unspecified" => 0,
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => return None,
    })
}

/// A severity number from its number or its name (`INFO`, `WARN2`, `SEVERITY_NUMBER_ERROR`).
fn severity(value: &Value) -> Option<i32> {
    if let Some(n) = value.as_i64() {
        return i32::try_from(n).ok().filter(|n| (0..=24).contains(n));
    }
    let name = value.as_str()?.to_ascii_uppercase();
    let name = name.strip_prefix("SEVERITY_NUMBER_").unwrap_or(&name);
    let (base, offset) = match name.char_indices().last() {
        Some((i, c @ '2'..='4')) => (&name[..i], i32::from(c as u8 - b'1')),
        _ => (name, 0),
    };
    let base = match base {
        "UNSPECIFIED" if offset == 0 => return Some(0),
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    Some(base + offset)
}

fn compile_matcher(path: &str, m: &MatchProperties, problems: &mut Vec<Problem>) -> Matcher {
    let before = problems.len();
    let regexp = match m.match_type.as_str() {
        "strict" => false,
        "regexp" => true,
        other => {
            problems.push(Problem::error(
                format!("{path}.match_type"),
                format!("`{other}` is not a match type; use strict or regexp"),
            ));
            false
        }
    };
    let mut strings = |field: &str, list: &[String]| -> Option<Strings> {
        if list.is_empty() {
            return None;
        }
        if regexp {
            match RegexSet::new(list) {
                Ok(set) => Some(Strings::Regexp(set)),
                Err(e) => {
                    problems.push(Problem::error(
                        format!("{path}.{field}"),
                        format!("not a valid regular expression: {e}"),
                    ));
                    None
                }
            }
        } else {
            Some(Strings::Strict(list.iter().cloned().collect()))
        }
    };
    let services = strings("services", &m.services);
    let span_names = strings("span_names", &m.span_names);
    let log_bodies = strings("log_bodies", &m.log_bodies);
    let log_severity_texts = strings("log_severity_texts", &m.log_severity_texts);
    let metric_names = strings("metric_names", &m.metric_names);
    let libraries: Vec<(Strings, Option<String>)> = m
        .libraries
        .iter()
        .filter_map(|l| {
            Some((
                strings("libraries", std::slice::from_ref(&l.name))?,
                l.version.clone(),
            ))
        })
        .collect();
    let mut conditions = |field: &str, list: &[AttributeMatch]| -> Vec<Condition> {
        list.iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let value = match (&a.value, regexp) {
                    (None, _) => ValueMatch::Present,
                    (Some(Value::String(r)), true) => match regex::Regex::new(r) {
                        Ok(r) => ValueMatch::Regexp(r),
                        Err(e) => {
                            problems.push(Problem::error(
                                format!("{path}.{field}[{i}].value"),
                                format!("not a valid regular expression: {e}"),
                            ));
                            return None;
                        }
                    },
                    (Some(v @ (Value::String(_) | Value::Bool(_) | Value::Number(_))), false) => {
                        ValueMatch::Strict(v.clone())
                    }
                    (Some(_), _) => {
                        problems.push(Problem::error(
                            format!("{path}.{field}[{i}].value"),
                            if regexp {
                                "must be a string (a regular expression) with match_type regexp"
                            } else {
                                "must be a string, number or boolean"
                            },
                        ));
                        return None;
                    }
                };
                Some(Condition {
                    key: a.key.clone(),
                    value,
                })
            })
            .collect()
    };
    let attributes = conditions("attributes", &m.attributes);
    let resources = conditions("resources", &m.resources);
    let span_kinds = (!m.span_kinds.is_empty()).then(|| {
        m.span_kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let kind = span_kind(k);
                if kind.is_none() {
                    problems.push(Problem::error(
                        format!("{path}.span_kinds[{i}]"),
                        format!(
                            "`{k}` is not a span kind; use SPAN_KIND_SERVER, SPAN_KIND_CLIENT, ..."
                        ),
                    ));
                }
                kind
            })
            .collect()
    });
    let log_severity = m.log_severity_number.as_ref().and_then(|s| {
        let min = severity(&s.min);
        if min.is_none() {
            problems.push(Problem::error(
                format!("{path}.log_severity_number.min"),
                "not a severity: use a number from 0 to 24 or a name such as INFO or WARN2",
            ));
        }
        Some((min?, s.match_undefined))
    });
    let matcher = Matcher {
        services,
        span_names,
        span_kinds,
        log_bodies,
        log_severity_texts,
        log_severity,
        metric_names,
        attributes,
        resources,
        libraries,
    };
    if matcher.is_empty() && problems.len() == before {
        problems.push(Problem::error(
            path,
            "give at least one property to match (services, span_names, span_kinds, attributes, resources, libraries, log_bodies, log_severity_texts, log_severity_number or metric_names)",
        ));
    }
    matcher
}

impl Matcher {
    fn is_empty(&self) -> bool {
        self.services.is_none()
            && self.span_names.is_none()
            && self.span_kinds.is_none()
            && self.log_bodies.is_none()
            && self.log_severity_texts.is_none()
            && self.log_severity.is_none()
            && self.metric_names.is_none()
            && self.attributes.is_empty()
            && self.resources.is_empty()
            && self.libraries.is_empty()
    }

    /// The properties that cannot apply to `signal`, as the Collector refuses them.
    fn misplaced(&self, signal: Signal) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |given: bool, name: &'static str, allowed: &[Signal]| {
            if given && !allowed.contains(&signal) {
                out.push(name);
            }
        };
        use Signal::{Logs, Metrics, Traces};
        check(self.services.is_some(), "services", &[Traces]);
        check(self.span_names.is_some(), "span_names", &[Traces]);
        check(self.span_kinds.is_some(), "span_kinds", &[Traces]);
        check(self.log_bodies.is_some(), "log_bodies", &[Logs]);
        check(
            self.log_severity_texts.is_some(),
            "log_severity_texts",
            &[Logs],
        );
        check(self.log_severity.is_some(), "log_severity_number", &[Logs]);
        check(self.metric_names.is_some(), "metric_names", &[Metrics]);
        check(!self.attributes.is_empty(), "attributes", &[Traces, Logs]);
        check(!self.libraries.is_empty(), "libraries", &[Traces, Logs]);
        out
    }

    /// Whether every property given matches the item.
    fn matches(&self, context: &Context<'_>, item: &Item<'_>) -> bool {
        let resource = &context.resource;
        if let Some(services) = &self.services
            && !resource
                .attribute("service.name")
                .and_then(|v| v.as_str())
                .is_some_and(|s| services.matches(s))
        {
            return false;
        }
        if !self
            .resources
            .iter()
            .all(|c| c.matches(resource.attribute(&c.key)))
        {
            return false;
        }
        if !self.libraries.is_empty() {
            let scope = &context.scope;
            let hit = self.libraries.iter().any(|(name, version)| {
                name.matches(scope.name())
                    && version.as_deref().is_none_or(|v| v == scope.version())
            });
            if !hit {
                return false;
            }
        }
        if !self.attributes.is_empty() {
            let attributes: Vec<view::KeyValue<'_>> = item.attributes().collect();
            let get = |key: &str| {
                attributes
                    .iter()
                    .find(|kv| kv.has_key(key))
                    .map(|kv| kv.value())
            };
            if !self.attributes.iter().all(|c| c.matches(get(&c.key))) {
                return false;
            }
        }
        match item {
            Item::Span(span) => {
                let summary = span.summary();
                self.span_names
                    .as_ref()
                    .is_none_or(|n| n.matches(summary.name))
                    && self
                        .span_kinds
                        .as_ref()
                        .is_none_or(|k| k.contains(&summary.kind))
            }
            Item::Log(log) => {
                self.log_bodies
                    .as_ref()
                    .is_none_or(|b| log.body().as_str().is_some_and(|s| b.matches(s)))
                    && self
                        .log_severity_texts
                        .as_ref()
                        .is_none_or(|t| t.matches(log.severity_text()))
                    && self.log_severity.is_none_or(|(min, undefined)| {
                        let n = log.severity_number();
                        if n == 0 { undefined } else { n >= min }
                    })
            }
            Item::Point(_) => self
                .metric_names
                .as_ref()
                .is_none_or(|names| context.metric.is_some_and(|m| names.matches(m.name()))),
        }
    }
}

/// The compiled configuration.
#[derive(Debug)]
struct Rules {
    actions: Vec<Compiled>,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

fn compile(path: &str, c: &AttributesConfig) -> Result<Rules, Vec<Problem>> {
    let mut problems = Vec::new();
    let actions = match actions::compile(&format!("{path}.actions"), &c.actions) {
        Ok(a) => a,
        Err(p) => {
            problems.extend(p);
            Vec::new()
        }
    };
    let include = c
        .include
        .as_ref()
        .map(|m| compile_matcher(&format!("{path}.include"), m, &mut problems));
    let exclude = c
        .exclude
        .as_ref()
        .map(|m| compile_matcher(&format!("{path}.exclude"), m, &mut problems));
    if problems.is_empty() {
        Ok(Rules {
            actions,
            include,
            exclude,
        })
    } else {
        Err(problems)
    }
}

impl Rules {
    fn selects(&self, context: &Context<'_>, item: &Item<'_>) -> bool {
        self.include
            .as_ref()
            .is_none_or(|m| m.matches(context, item))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|m| m.matches(context, item))
    }

    /// The item's new encoding, or `None` when the actions left it as it was.
    fn apply(&self, item: &Item<'_>, client: Option<&ClientInfo>) -> Option<Vec<u8>> {
        let a = &self.actions;
        match item {
            Item::Span(span) => {
                let mut decoded = span.decode();
                apply(a, &mut decoded.attributes, client).then(|| decoded.encode_to_vec())
            }
            Item::Log(log) => {
                let mut decoded = log.decode();
                apply(a, &mut decoded.attributes, client).then(|| decoded.encode_to_vec())
            }
            Item::Point(point) => point.edit(|attributes, _| apply(a, attributes, client)),
        }
    }
}

/// The rules, and who sent the batch they edit.
struct Apply<'a>(&'a Rules, Option<Arc<ClientInfo>>);

impl Editor for Apply<'_> {
    fn item(&mut self, context: &Context<'_>, item: &Item<'_>) -> Verdict {
        if !self.0.selects(context, item) {
            return Verdict::Keep;
        }
        match self.0.apply(item, self.1.as_deref()) {
            Some(encoded) => Verdict::Replace(encoded),
            None => Verdict::Keep,
        }
    }
}

/// Batches over this many bytes are processed on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

struct AttributesProcessor {
    rules: Arc<Rules>,
}

#[async_trait]
impl Processor for AttributesProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let rules = Arc::clone(&self.rules);
        let size = batch.size();
        let batch = sluice_core::blocking::off_workers(size, OFF_WORKERS_ABOVE, move || {
            let client = batch.client().cloned();
            batch.edit(&mut Apply(&rules, client))
        })
        .await
        .ok_or_else(|| ConsumeError::internal("the attributes processor failed"))?;
        Ok(Some(batch))
    }
}

struct AttributesComponent {
    id: String,
    rules: Arc<Rules>,
}

impl ProcessorComponent for AttributesComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        for (name, matcher) in [
            ("include", &self.rules.include),
            ("exclude", &self.rules.exclude),
        ] {
            let misplaced = matcher
                .as_ref()
                .map(|m| m.misplaced(ctx.signal))
                .unwrap_or_default();
            if let Some(field) = misplaced.first() {
                return Err(BuildError::Config(Problem::error(
                    format!("processors.{}.{name}.{field}", self.id),
                    format!(
                        "does not apply to {} (pipeline `{}`)",
                        ctx.signal, ctx.pipeline
                    ),
                )));
            }
        }
        Ok(Instance::new(Arc::new(AttributesProcessor {
            rules: Arc::clone(&self.rules),
        })))
    }
}

/// Builds `attributes` processors.
#[derive(Debug, Default)]
pub struct AttributesFactory;

impl ProcessorFactory for AttributesFactory {
    fn type_name(&self) -> &'static str {
        "attributes"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &AttributesConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let c: AttributesConfig = typed(&path, config)?;
        let rules = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(AttributesComponent {
            id: id.to_owned(),
            rules: Arc::new(rules),
        }))
    }
}

#[cfg(test)]
mod tests;
