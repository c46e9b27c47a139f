//! `tail_sampling` policies: the Collector's config shape, compiled, and evaluated on the spans
//! of one trace as they arrived (encoded, read through `sluice_core::view`).

use std::sync::Mutex;
use std::time::Instant;

use regex::Regex;
use serde::Deserialize;
use sluice_config::Problem;
use sluice_core::view::{AnyValue, Context, Item, Resource, Span};
use sluice_ottl::{Condition, Scope, Subject};

/// One policy as configured: `name`, `type` and the type's own section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The name in metrics and logs.
    pub name: String,
    /// The policy type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `latency`.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// `numeric_attribute`.
    #[serde(default)]
    pub numeric_attribute: Option<NumericConfig>,
    /// `probabilistic`.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `status_code`.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// `string_attribute`.
    #[serde(default)]
    pub string_attribute: Option<StringConfig>,
    /// `boolean_attribute`.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanConfig>,
    /// `rate_limiting`.
    #[serde(default)]
    pub rate_limiting: Option<RateConfig>,
    /// `bytes_limiting`.
    #[serde(default)]
    pub bytes_limiting: Option<BytesConfig>,
    /// `span_count`.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// `trace_state`.
    #[serde(default)]
    pub trace_state: Option<TraceStateConfig>,
    /// `ottl_condition`.
    #[serde(default)]
    pub ottl_condition: Option<OttlConfig>,
    /// `and`.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// `not`.
    #[serde(default)]
    pub not: Option<NotConfig>,
    /// `drop`.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// `composite`.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
}

/// `latency`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Sampled when the trace lasts longer than this (whole milliseconds).
    #[serde(default)]
    pub threshold_ms: i64,
    /// And at most this long (inclusive; `0`: no bound).
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

/// `numeric_attribute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericConfig {
    /// The attribute.
    pub key: String,
    /// Lowest value that matches (inclusive); absent or 0: no bound.
    #[serde(default)]
    pub min_value: Option<i64>,
    /// Highest value that matches (inclusive); absent or 0: no bound.
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Sample the traces that do not match.
    #[serde(default)]
    pub invert_match: bool,
}

/// `probabilistic`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Mixed into the hash, so layers of samplers decide independently (default
    /// `default-hash-seed`, as in the Collector).
    #[serde(default)]
    pub hash_salt: String,
    /// Share of traces kept, in percent.
    #[serde(default)]
    pub sampling_percentage: f64,
}

/// `status_code`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `OK`, `ERROR`, `UNSET`.
    pub status_codes: Vec<String>,
}

/// `string_attribute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringConfig {
    /// The attribute (on spans or their resource).
    pub key: String,
    /// Values, or regular expressions with `enabled_regex_matching`.
    #[serde(default)]
    pub values: Vec<String>,
    /// Match `values` as regular expressions.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility: sluice compiles one set of expressions and needs no cache.
    #[serde(default)]
    pub cache_max_size: Option<usize>,
    /// Sample the traces that do not match.
    #[serde(default)]
    pub invert_match: bool,
}

/// `boolean_attribute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanConfig {
    /// The attribute.
    pub key: String,
    /// The value that matches.
    pub value: bool,
    /// Sample the traces that do not match.
    #[serde(default)]
    pub invert_match: bool,
}

/// `rate_limiting`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Spans sampled per second, on average.
    pub spans_per_second: i64,
    /// Burst allowed (default: twice `spans_per_second`).
    #[serde(default)]
    pub burst_capacity: Option<i64>,
}

/// `bytes_limiting`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesConfig {
    /// Encoded bytes of spans sampled per second, on average.
    pub bytes_per_second: i64,
    /// Burst allowed (default: twice `bytes_per_second`).
    #[serde(default)]
    pub burst_capacity: Option<i64>,
}

/// `span_count`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Fewest spans that match.
    #[serde(default)]
    pub min_spans: i64,
    /// Most spans that match (`0`: no bound).
    #[serde(default)]
    pub max_spans: i64,
}

/// `trace_state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// The tracestate key.
    pub key: String,
    /// Its values that match.
    pub values: Vec<String>,
}

/// `ottl_condition`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConfig {
    /// `propagate` (default), `ignore` or `silent`: sluice's conditions cannot fail at run time
    /// (a missing attribute is `nil`), so all three behave alike; another value is refused.
    #[serde(default)]
    pub error_mode: sluice_ottl::ErrorMode,
    /// Conditions on spans; any true samples the trace.
    #[serde(default)]
    pub span: Vec<String>,
    /// Conditions on span events.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// `and`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Every one must sample.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    /// The policy whose verdict is turned around.
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `drop`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// When every one matches, the trace is dropped whatever the other policies say.
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Spans per second the composite samples at most.
    pub max_total_spans_per_second: i64,
    /// The sub-policies' names, in the order they are asked.
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Each sub-policy's share of `max_total_spans_per_second`, in percent.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One `rate_allocation` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// The sub-policy's name.
    pub policy: String,
    /// Its share, in percent.
    pub percent: i64,
}

/// A policy's verdict on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The policy does not ask for the trace.
    NotSampled,
    /// The policy samples the trace.
    Sampled,
    /// A `drop` policy matched: the trace is dropped, whatever the others say.
    Dropped,
}

/// What a policy sees of a trace.
pub(crate) struct TraceData<'a> {
    /// The held pieces, in arrival order.
    pub(crate) batches: &'a [sluice_core::Batch],
    /// Spans held.
    pub(crate) spans: u64,
    /// Encoded bytes held.
    pub(crate) bytes: usize,
    /// The trace id.
    pub(crate) trace_id: [u8; 16],
}

impl TraceData<'_> {
    /// Calls `f` on every span with its context until it returns `true`; whether one did.
    pub(crate) fn any(&self, mut f: impl FnMut(&Context<'_>, &Span<'_>) -> bool) -> bool {
        struct Visit<'f, F> {
            f: &'f mut F,
            found: bool,
        }
        impl<F: FnMut(&Context<'_>, &Span<'_>) -> bool> sluice_core::view::Editor for Visit<'_, F> {
            fn item(
                &mut self,
                context: &Context<'_>,
                item: &Item<'_>,
            ) -> sluice_core::view::Verdict {
                if !self.found
                    && let Item::Span(span) = item
                {
                    self.found = (self.f)(context, span);
                }
                sluice_core::view::Verdict::Keep
            }
        }
        let mut visit = Visit {
            f: &mut f,
            found: false,
        };
        for batch in self.batches {
            let _ = batch.clone().edit(&mut visit);
            if visit.found {
                return true;
            }
        }
        false
    }
}

/// A token bucket (the Collector's `golang.org/x/time/rate` limiter): full at the start,
/// refilled at `per_second` up to `burst`; a trace takes its cost at once or not at all.
pub(crate) struct Bucket {
    per_second: f64,
    burst: f64,
    /// When it was last refilled, and the tokens then.
    state: Mutex<(Instant, f64)>,
}

impl Bucket {
    fn new(per_second: f64, burst: f64) -> Bucket {
        Bucket {
            per_second,
            burst,
            state: Mutex::new((Instant::now(), burst)),
        }
    }

    fn take(&self, cost: f64) -> bool {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.0).as_secs_f64() * self.per_second;
        *b = (now, (b.1 + refill).min(self.burst));
        let fits = cost <= b.1;
        if fits {
            b.1 -= cost;
        }
        fits
    }
}

/// A compiled policy.
pub(crate) enum Policy {
    Always,
    Latency {
        above_ms: u64,
        upper_ms: Option<u64>,
    },
    Numeric {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Probabilistic {
        salt: Vec<u8>,
        threshold: u64,
    },
    StatusCode {
        codes: Vec<i32>,
    },
    Strings {
        key: String,
        exact: Vec<String>,
        regexes: Vec<Regex>,
        invert: bool,
    },
    Boolean {
        key: String,
        value: bool,
        invert: bool,
    },
    Rate(Bucket),
    TraceFlags,
    Not(Box<Policy>),
    Bytes(Bucket),
    SpanCount {
        min: u64,
        max: Option<u64>,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
    Ottl {
        span: Vec<Condition>,
        spanevent: Vec<Condition>,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite {
        max_per_second: u64,
        subs: Vec<(Policy, u64)>,
        window: Mutex<(Instant, u64, Vec<u64>)>,
    },
}

fn attribute<'a>(context: &Context<'a>, span: &Span<'a>, key: &str) -> Option<AnyValue<'a>> {
    span.attribute(key)
        .or_else(|| resource_attribute(&context.resource, key))
}

fn resource_attribute<'a>(resource: &Resource<'a>, key: &str) -> Option<AnyValue<'a>> {
    resource.attribute(key)
}

/// The Collector's tail-sampling `probabilistic` hash: FNV-1a (64 bits) over the salt and the
/// trace id, compared with the percentage of the 64-bit range.
pub(crate) fn trace_hash(salt: &[u8], trace_id: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.iter().chain(trace_id) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Policy {
    /// Compiles one policy; problems name their path.
    pub(crate) fn compile(
        path: &str,
        c: &PolicyConfig,
        problems: &mut Vec<Problem>,
    ) -> Option<Policy> {
        let missing = |problems: &mut Vec<Problem>, section: &str| {
            problems.push(Problem::error(
                format!("{path}.{section}"),
                format!("a `{section}` policy needs its `{section}` section"),
            ));
            None
        };
        Some(match c.kind.as_str() {
            "always_sample" => Policy::Always,
            "latency" => {
                let Some(l) = &c.latency else {
                    return missing(problems, "latency");
                };
                if l.upper_threshold_ms != 0 && l.upper_threshold_ms < l.threshold_ms {
                    problems.push(Problem::error(
                        format!("{path}.latency.upper_threshold_ms"),
                        "must not be lower than `threshold_ms`",
                    ));
                }
                let ms = |ms: i64| u64::try_from(ms).unwrap_or(0);
                Policy::Latency {
                    above_ms: ms(l.threshold_ms),
                    upper_ms: (l.upper_threshold_ms > 0).then(|| ms(l.upper_threshold_ms)),
                }
            }
            "numeric_attribute" => {
                let Some(n) = &c.numeric_attribute else {
                    return missing(problems, "numeric_attribute");
                };
                Policy::Numeric {
                    key: n.key.clone(),
                    min: n.min_value.unwrap_or(i64::MIN),
                    max: n.max_value.unwrap_or(i64::MAX),
                    invert: n.invert_match,
                }
            }
            "probabilistic" => {
                let Some(p) = &c.probabilistic else {
                    return missing(problems, "probabilistic");
                };
                let pct = p.sampling_percentage.clamp(0.0, 100.0);
                let salt = if p.hash_salt.is_empty() {
                    "default-hash-seed"
                } else {
                    p.hash_salt.as_str()
                };
                Policy::Probabilistic {
                    salt: salt.as_bytes().to_vec(),
                    threshold: if pct >= 100.0 {
                        u64::MAX
                    } else {
                        (pct / 100.0 * u64::MAX as f64) as u64
                    },
                }
            }
            "status_code" => {
                let Some(s) = &c.status_code else {
                    return missing(problems, "status_code");
                };
                let mut codes = Vec::new();
                for (i, code) in s.status_codes.iter().enumerate() {
                    match code.as_str() {
                        "UNSET" => codes.push(0),
                        "OK" => codes.push(1),
                        "ERROR" => codes.push(2),
                        other => problems.push(Problem::error(
                            format!("{path}.status_code.status_codes[{i}]"),
                            format!("unknown status code `{other}`: use OK, ERROR or UNSET"),
                        )),
                    }
                }
                if s.status_codes.is_empty() {
                    problems.push(Problem::error(
                        format!("{path}.status_code.status_codes"),
                        "must list at least one status code",
                    ));
                }
                Policy::StatusCode { codes }
            }
            "string_attribute" => {
                let Some(s) = &c.string_attribute else {
                    return missing(problems, "string_attribute");
                };
                let mut regexes = Vec::new();
                if s.enabled_regex_matching {
                    for (i, v) in s.values.iter().enumerate() {
                        match Regex::new(v) {
                            Ok(r) => regexes.push(r),
                            Err(e) => problems.push(Problem::error(
                                format!("{path}.string_attribute.values[{i}]"),
                                format!("`{v}` is not a regular expression: {e}"),
                            )),
                        }
                    }
                }
                Policy::Strings {
                    key: s.key.clone(),
                    exact: if s.enabled_regex_matching {
                        Vec::new()
                    } else {
                        s.values.clone()
                    },
                    regexes,
                    invert: s.invert_match,
                }
            }
            "boolean_attribute" => {
                let Some(b) = &c.boolean_attribute else {
                    return missing(problems, "boolean_attribute");
                };
                Policy::Boolean {
                    key: b.key.clone(),
                    value: b.value,
                    invert: b.invert_match,
                }
            }
            "rate_limiting" => {
                let Some(r) = &c.rate_limiting else {
                    return missing(problems, "rate_limiting");
                };
                // The Collector's token bucket: it starts full, and a trace takes as many tokens
                // as it has spans.
                let per_second = r.spans_per_second.max(0) as f64;
                let burst = r
                    .burst_capacity
                    .map_or(per_second * 2.0, |b| b.max(0) as f64);
                Policy::Rate(Bucket::new(per_second, burst))
            }
            "bytes_limiting" => {
                let Some(b) = &c.bytes_limiting else {
                    return missing(problems, "bytes_limiting");
                };
                let per_second = b.bytes_per_second.max(0) as f64;
                let burst = b
                    .burst_capacity
                    .map_or(per_second * 2.0, |c| c.max(0) as f64);
                Policy::Bytes(Bucket::new(per_second, burst))
            }
            "span_count" => {
                let Some(s) = &c.span_count else {
                    return missing(problems, "span_count");
                };
                if s.max_spans != 0 && s.max_spans < s.min_spans {
                    problems.push(Problem::error(
                        format!("{path}.span_count.max_spans"),
                        "must not be lower than `min_spans`",
                    ));
                }
                Policy::SpanCount {
                    min: u64::try_from(s.min_spans).unwrap_or(0),
                    max: (s.max_spans > 0).then_some(s.max_spans as u64),
                }
            }
            "trace_state" => {
                let Some(t) = &c.trace_state else {
                    return missing(problems, "trace_state");
                };
                Policy::TraceState {
                    key: t.key.clone(),
                    values: t.values.clone(),
                }
            }
            "ottl_condition" => {
                let Some(o) = &c.ottl_condition else {
                    return missing(problems, "ottl_condition");
                };
                let mut parse = |list: &[String], scope: Scope, at: &str| -> Vec<Condition> {
                    list.iter()
                        .enumerate()
                        .filter_map(|(i, text)| match sluice_ottl::parse(text, scope) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                problems.push(Problem::error(
                                    format!("{path}.ottl_condition.{at}[{i}]"),
                                    format!("`{text}`: {e}"),
                                ));
                                None
                            }
                        })
                        .collect()
                };
                Policy::Ottl {
                    span: parse(&o.span, Scope::Span, "span"),
                    spanevent: parse(&o.spanevent, Scope::SpanEvent, "spanevent"),
                }
            }
            "trace_flags" => Policy::TraceFlags,
            "not" => {
                let Some(n) = &c.not else {
                    return missing(problems, "not");
                };
                Policy::Not(Box::new(Policy::compile(
                    &format!("{path}.not.not_sub_policy"),
                    &n.not_sub_policy,
                    problems,
                )?))
            }
            "and" => {
                let Some(a) = &c.and else {
                    return missing(problems, "and");
                };
                if a.and_sub_policy.is_empty() {
                    problems.push(Problem::error(
                        format!("{path}.and.and_sub_policy"),
                        "must list at least one policy (an empty `and` would sample every trace)",
                    ));
                }
                Policy::And(compile_list(
                    &format!("{path}.and.and_sub_policy"),
                    &a.and_sub_policy,
                    problems,
                ))
            }
            "drop" => {
                let Some(d) = &c.drop else {
                    return missing(problems, "drop");
                };
                if d.drop_sub_policy.is_empty() {
                    problems.push(Problem::error(
                        format!("{path}.drop.drop_sub_policy"),
                        "must list at least one policy (an empty `drop` would drop every trace)",
                    ));
                }
                Policy::Drop(compile_list(
                    &format!("{path}.drop.drop_sub_policy"),
                    &d.drop_sub_policy,
                    problems,
                ))
            }
            "composite" => {
                let Some(cc) = &c.composite else {
                    return missing(problems, "composite");
                };
                let max = u64::try_from(cc.max_total_spans_per_second).unwrap_or(0);
                let mut subs = Vec::new();
                for (i, name) in cc.policy_order.iter().enumerate() {
                    let Some((j, sub)) = cc
                        .composite_sub_policy
                        .iter()
                        .enumerate()
                        .find(|(_, p)| &p.name == name)
                    else {
                        problems.push(Problem::error(
                            format!("{path}.composite.policy_order[{i}]"),
                            format!("no sub-policy is named `{name}`"),
                        ));
                        continue;
                    };
                    let share = cc
                        .rate_allocation
                        .iter()
                        .find(|r| &r.policy == name)
                        .map_or(0, |r| r.percent.max(0) as u64);
                    if let Some(p) = Policy::compile(
                        &format!("{path}.composite.composite_sub_policy[{j}]"),
                        sub,
                        problems,
                    ) {
                        subs.push((p, max * share / 100));
                    }
                }
                let n = subs.len();
                Policy::Composite {
                    max_per_second: max,
                    subs,
                    window: Mutex::new((Instant::now(), 0, vec![0; n])),
                }
            }
            other => {
                problems.push(Problem::error(
                    format!("{path}.type"),
                    format!("unknown policy type `{other}`: sluice has always_sample, latency, numeric_attribute, probabilistic, status_code, string_attribute, boolean_attribute, rate_limiting, bytes_limiting, span_count, trace_state, trace_flags, ottl_condition, and, not, drop, composite"),
                ));
                return None;
            }
        })
    }

    /// The verdict on one trace.
    pub(crate) fn evaluate(&self, trace: &TraceData<'_>) -> Decision {
        let sampled = |yes: bool| {
            if yes {
                Decision::Sampled
            } else {
                Decision::NotSampled
            }
        };
        // `invert_match` flips the verdict (the Collector since v0.156, #48976; before, an
        // inverted match vetoed every other policy).
        let inverted = |matched: bool, invert: bool| sampled(matched != invert);
        match self {
            Policy::Always => Decision::Sampled,
            Policy::Latency { above_ms, upper_ms } => {
                // From the earliest start to the latest end of the whole trace, in whole
                // milliseconds; the lower bound is exclusive, the upper inclusive (the Collector
                // since #49595, without its early exit that let a long trace pass an upper
                // bound, #43948).
                let (mut start, mut end) = (u64::MAX, 0u64);
                trace.any(|_, span| {
                    start = start.min(span.start_time_unix_nano());
                    end = end.max(span.end_time_unix_nano());
                    false
                });
                let ms = end.saturating_sub(start) / 1_000_000;
                sampled(ms > *above_ms && upper_ms.is_none_or(|u| ms <= u))
            }
            Policy::Numeric {
                key,
                min,
                max,
                invert,
            } => {
                let matched = trace.any(|context, span| match attribute(context, span, key) {
                    Some(AnyValue::Int(v)) => (*min..=*max).contains(&v),
                    _ => false,
                });
                inverted(matched, *invert)
            }
            Policy::Probabilistic { salt, threshold } => {
                sampled(trace_hash(salt, &trace.trace_id) <= *threshold && *threshold > 0)
            }
            Policy::StatusCode { codes } => {
                sampled(trace.any(|_, span| codes.contains(&span.status_code())))
            }
            Policy::Strings {
                key,
                exact,
                regexes,
                invert,
            } => {
                let matched = trace.any(|context, span| match attribute(context, span, key) {
                    Some(AnyValue::String(s)) => {
                        let s = s.as_str();
                        exact.iter().any(|v| v == s) || regexes.iter().any(|r| r.is_match(s))
                    }
                    _ => false,
                });
                inverted(matched, *invert)
            }
            Policy::Boolean { key, value, invert } => {
                let matched = trace.any(|context, span| matches!(attribute(context, span, key), Some(AnyValue::Bool(b)) if b == *value));
                inverted(matched, *invert)
            }
            Policy::Rate(bucket) => sampled(bucket.take(trace.spans as f64)),
            Policy::TraceFlags => sampled(trace.any(|_, span| span.flags() & 1 == 1)),
            Policy::Not(inner) => match inner.evaluate(trace) {
                Decision::Sampled => Decision::NotSampled,
                Decision::NotSampled => Decision::Sampled,
                other => other,
            },
            Policy::Bytes(bucket) => sampled(bucket.take(trace.bytes as f64)),
            Policy::SpanCount { min, max } => {
                sampled(trace.spans >= *min && max.is_none_or(|m| trace.spans <= m))
            }
            Policy::TraceState { key, values } => sampled(trace.any(|_, span| {
                span.trace_state()
                    .split(',')
                    .filter_map(|m| m.trim().split_once('='))
                    .any(|(k, v)| k == key && values.iter().any(|x| x == v))
            })),
            Policy::Ottl {
                span: conditions,
                spanevent,
            } => sampled(trace.any(|context, span| {
                let item = Item::Span(*span);
                conditions
                    .iter()
                    .any(|c| c.holds(&Subject::Item(context, &item)))
                    || (!spanevent.is_empty()
                        && span.events().any(|e| {
                            spanevent
                                .iter()
                                .any(|c| c.holds(&Subject::Event(context, span, &e)))
                        }))
            })),
            Policy::And(subs) => sampled(
                !subs.is_empty() && subs.iter().all(|p| p.evaluate(trace) == Decision::Sampled),
            ),
            Policy::Drop(subs) => {
                if !subs.is_empty() && subs.iter().all(|p| p.evaluate(trace) == Decision::Sampled) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Policy::Composite {
                max_per_second,
                subs,
                window,
            } => {
                let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
                if w.0.elapsed().as_secs() >= 1 {
                    w.0 = Instant::now();
                    w.1 = 0;
                    w.2.iter_mut().for_each(|n| *n = 0);
                }
                for (i, (policy, budget)) in subs.iter().enumerate() {
                    if policy.evaluate(trace) != Decision::Sampled {
                        continue;
                    }
                    let spent = w.2[i];
                    if spent + trace.spans <= *budget && w.1 + trace.spans <= *max_per_second {
                        w.2[i] += trace.spans;
                        w.1 += trace.spans;
                        return Decision::Sampled;
                    }
                }
                Decision::NotSampled
            }
        }
    }
}

/// Warnings for keys of `list` (and the policies inside) that change nothing in sluice.
pub(crate) fn no_effect(path: &str, list: &[PolicyConfig], out: &mut Vec<Problem>) {
    for (i, c) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(s) = &c.string_attribute
            && s.cache_max_size.is_some()
        {
            out.push(Problem::warning(
                format!("{at}.string_attribute.cache_max_size"),
                "has no effect: sluice matches the compiled expressions directly, without a result cache",
            ));
        }
        if let Some(a) = &c.and {
            no_effect(&format!("{at}.and.and_sub_policy"), &a.and_sub_policy, out);
        }
        if let Some(d) = &c.drop {
            no_effect(
                &format!("{at}.drop.drop_sub_policy"),
                &d.drop_sub_policy,
                out,
            );
        }
        if let Some(n) = &c.not {
            no_effect(
                &format!("{at}.not"),
                std::slice::from_ref(&*n.not_sub_policy),
                out,
            );
        }
        if let Some(cc) = &c.composite {
            no_effect(
                &format!("{at}.composite.composite_sub_policy"),
                &cc.composite_sub_policy,
                out,
            );
        }
    }
}

/// Compiles a list of policies, refusing duplicate names.
pub(crate) fn compile_list(
    path: &str,
    list: &[PolicyConfig],
    problems: &mut Vec<Problem>,
) -> Vec<Policy> {
    let mut names = std::collections::HashSet::new();
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if !names.insert(c.name.as_str()) {
                problems.push(Problem::error(
                    format!("{path}[{i}].name"),
                    format!("duplicate policy name `{}`", c.name),
                ));
            }
            Policy::compile(&format!("{path}[{i}]"), c, problems)
        })
        .collect()
}

/// The trace's fate from all its policies' verdicts: a `drop` match drops it; otherwise any
/// policy that samples it keeps it.
pub(crate) fn combine(verdicts: impl IntoIterator<Item = Decision>) -> bool {
    let mut sampled = false;
    for d in verdicts {
        match d {
            Decision::Dropped => return false,
            Decision::Sampled => sampled = true,
            Decision::NotSampled => {}
        }
    }
    sampled
}
