//! The `filter` processor: drops the spans, span events, metrics, data points and log records
//! for which any of its OTTL conditions is true, in the Collector's config shape
//! (`traces.span`, `traces.spanevent`, `metrics.metric`, `metrics.datapoint`, `logs.log_record`).
//!
//! Conditions are the OTTL subset of `sluice_ottl`, evaluated on the encoded items; only spans
//! that lose events are decoded. What the subset does not cover, and the Collector's legacy
//! `include`/`exclude` match configuration, are refused by `sluice validate`.

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{Context, Editor, Item, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, Signal, typed,
};
use sluice_ottl::{Condition, ErrorMode, Scope, Subject};

/// `processors.filter`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// `propagate` (default), `ignore` or `silent`: what the Collector does when a condition
    /// fails to evaluate. Sluice's conditions cannot fail at run time (a missing attribute is
    /// `nil`, a type mismatch is false), so all three behave alike.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Conditions on spans (`span`) and span events (`spanevent`).
    #[serde(default)]
    pub traces: TracesConditions,
    /// Conditions on metrics (`metric`) and data points (`datapoint`).
    #[serde(default)]
    pub metrics: MetricsConditions,
    /// Conditions on log records (`log_record`).
    #[serde(default)]
    pub logs: LogsConditions,
}

/// `traces`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConditions {
    /// A span is dropped when any of these is true.
    #[serde(default)]
    pub span: Vec<String>,
    /// A span event is dropped when any of these is true.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// `metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConditions {
    /// A metric, with all its points, is dropped when any of these is true.
    #[serde(default)]
    pub metric: Vec<String>,
    /// A data point is dropped when any of these is true.
    #[serde(default)]
    pub datapoint: Vec<String>,
}

/// `logs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConditions {
    /// A log record is dropped when any of these is true.
    #[serde(default)]
    pub log_record: Vec<String>,
}

/// The compiled conditions.
#[derive(Debug, Default)]
struct Rules {
    span: Vec<Condition>,
    spanevent: Vec<Condition>,
    metric: Vec<Condition>,
    datapoint: Vec<Condition>,
    log_record: Vec<Condition>,
}

/// The Collector's legacy match configuration, which sluice refuses with a pointer to OTTL.
fn legacy(path: &str, config: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.get("spans").is_some() {
        problems.push(Problem::error(
            format!("{path}.spans"),
            "the legacy `spans.include`/`exclude` match configuration is not supported; write OTTL conditions under `traces.span`",
        ));
    }
    for signal in ["metrics", "logs"] {
        for key in ["include", "exclude"] {
            if config.get(signal).and_then(|s| s.get(key)).is_some() {
                problems.push(Problem::error(
                    format!("{path}.{signal}.{key}"),
                    format!(
                        "the legacy `include`/`exclude` match configuration is not supported; write OTTL conditions under `{signal}.{}`",
                        if signal == "logs" { "log_record" } else { "metric" }
                    ),
                ));
            }
        }
    }
    problems
}

fn compile(path: &str, c: &FilterConfig) -> Result<Rules, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut parse = |at: &str, list: &[String], scope: Scope| -> Vec<Condition> {
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| match sluice_ottl::parse(text, scope) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(Problem::error(
                        format!("{path}.{at}[{i}]"),
                        format!("`{text}`: {e}"),
                    ));
                    None
                }
            })
            .collect()
    };
    let rules = Rules {
        span: parse("traces.span", &c.traces.span, Scope::Span),
        spanevent: parse("traces.spanevent", &c.traces.spanevent, Scope::SpanEvent),
        metric: parse("metrics.metric", &c.metrics.metric, Scope::Metric),
        datapoint: parse("metrics.datapoint", &c.metrics.datapoint, Scope::DataPoint),
        log_record: parse("logs.log_record", &c.logs.log_record, Scope::Log),
    };
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

fn any(conditions: &[Condition], subject: &Subject<'_, '_>) -> bool {
    conditions.iter().any(|c| c.holds(subject))
}

/// The editor one batch goes through, counting what it drops.
struct Drop<'a> {
    rules: &'a Rules,
    dropped: u64,
}

impl Editor for Drop<'_> {
    fn item(&mut self, context: &Context<'_>, item: &Item<'_>) -> Verdict {
        let subject = Subject::Item(context, item);
        let drop = match item {
            Item::Span(_) => any(&self.rules.span, &subject),
            Item::Log(_) => any(&self.rules.log_record, &subject),
            // A metric condition reads only the metric, its scope and resource, so it drops every
            // point of the metric alike, and the emptied metric goes with them.
            Item::Point(_) => {
                any(&self.rules.metric, &subject) || any(&self.rules.datapoint, &subject)
            }
        };
        if drop {
            self.dropped += 1;
            return Verdict::Drop;
        }
        match item {
            Item::Span(span) if !self.rules.spanevent.is_empty() => {
                let doomed: Vec<bool> = span
                    .events()
                    .map(|e| any(&self.rules.spanevent, &Subject::Event(context, span, &e)))
                    .collect();
                if !doomed.contains(&true) {
                    return Verdict::Keep;
                }
                let mut decoded = span.decode();
                let mut i = 0;
                decoded.events.retain(|_| {
                    let keep = !doomed.get(i).copied().unwrap_or(false);
                    i += 1;
                    keep
                });
                Verdict::Replace(decoded.encode_to_vec())
            }
            _ => Verdict::Keep,
        }
    }
}

/// Batches over this many bytes are filtered on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

struct FilterProcessor {
    rules: Arc<Rules>,
    filtered: metrics::Counter,
}

#[async_trait]
impl Processor for FilterProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let rules = Arc::clone(&self.rules);
        let size = batch.size();
        let (batch, dropped) =
            sluice_core::blocking::off_workers(size, OFF_WORKERS_ABOVE, move || {
                let mut editor = Drop {
                    rules: &rules,
                    dropped: 0,
                };
                let batch = batch.edit(&mut editor);
                (batch, editor.dropped)
            })
            .await
            .ok_or_else(|| ConsumeError::internal("the filter processor failed"))?;
        self.filtered.increment(dropped);
        Ok(Some(batch))
    }
}

struct FilterComponent {
    id: String,
    rules: Arc<Rules>,
}

impl ProcessorComponent for FilterComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        let name = match ctx.signal {
            Signal::Traces => sluice_core::metrics::FILTER_SPANS_FILTERED,
            Signal::Metrics => sluice_core::metrics::FILTER_DATAPOINTS_FILTERED,
            Signal::Logs => sluice_core::metrics::FILTER_LOGS_FILTERED,
        };
        Ok(Instance::new(Arc::new(FilterProcessor {
            rules: Arc::clone(&self.rules),
            filtered: metrics::counter!(name, "filter" => self.id.clone()),
        })))
    }
}

/// Builds `filter` processors.
#[derive(Debug, Default)]
pub struct FilterFactory;

impl ProcessorFactory for FilterFactory {
    fn type_name(&self) -> &'static str {
        "filter"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        let legacy = legacy(path, config);
        if !legacy.is_empty() {
            return legacy;
        }
        sluice_core::check_typed(path, config, |c: &FilterConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        if let Some(problem) = legacy(&path, config).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        let c: FilterConfig = typed(&path, config)?;
        let rules = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(FilterComponent {
            id: id.to_owned(),
            rules: Arc::new(rules),
        }))
    }
}

#[cfg(test)]
mod tests;
