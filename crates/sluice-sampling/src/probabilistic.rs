//! The `probabilistic_sampler` processor: keeps a share of spans or log records, decided per
//! item as the Collector decides it, so that a fleet mixing sluice and the Collector keeps the
//! same traces (see `docs/probabilistic-sampler.md` for the facts this follows).
//!
//! Decisions read the encoded items; only a kept item whose sampling information changes (a
//! span's `tracestate`, a log record's `sampling.*` attributes) is rewritten.

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{AnyValue, Context, Editor, Item, LogRecord, Span, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, Signal, typed,
};

use opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue;

use crate::threshold::{MIN_PROBABILITY, Randomness, Threshold, TraceState};

/// `processors.probabilistic_sampler`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticSamplerConfig {
    /// The share to keep, in percent; over 100 means 100. Held in 32 bits, as the Collector
    /// holds it, so that decisions at the edges agree.
    #[serde(default)]
    pub sampling_percentage: f32,
    /// The seed of the trace-id hash (`hash_seed` mode).
    #[serde(default)]
    pub hash_seed: u32,
    /// `hash_seed`, `equalizing` or `proportional`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Whether an item whose randomness cannot be read (or contradicts its threshold) is dropped
    /// (`true`) or kept.
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// Hex digits of the threshold written in `th:`, 1 to 14.
    #[serde(default = "four")]
    pub sampling_precision: u8,
    /// Logs: `traceID` (default) or `record` (the `from_attribute` value).
    #[serde(default)]
    pub attribute_source: AttributeSource,
    /// Logs: the attribute hashed for randomness when there is no trace id, or with
    /// `attribute_source: record`.
    #[serde(default)]
    pub from_attribute: String,
    /// Logs: an attribute holding a percentage that raises the record's sampling probability.
    #[serde(default)]
    pub sampling_priority: String,
}

fn yes() -> bool {
    true
}

fn four() -> u8 {
    4
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The Collector's original sampler: a seeded FNV hash of the trace id, 14 bits.
    HashSeed,
    /// OpenTelemetry consistent sampling at a fixed threshold.
    Equalizing,
    /// OpenTelemetry consistent sampling, multiplying the arriving probability.
    Proportional,
}

/// `attribute_source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AttributeSource {
    /// The record's trace id.
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The `from_attribute` attribute.
    #[serde(rename = "record")]
    Record,
}

impl ProbabilisticSamplerConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let ratio = f64::from(self.sampling_percentage) / 100.0;
        if ratio.is_nan() || ratio.is_infinite() {
            problems.push(Problem::error(
                format!("{path}.sampling_percentage"),
                format!("sampling rate is invalid: {}%", self.sampling_percentage),
            ));
        } else if ratio < 0.0 {
            problems.push(Problem::error(
                format!("{path}.sampling_percentage"),
                format!("negative sampling rate: {}%", self.sampling_percentage),
            ));
        } else if ratio != 0.0 && ratio < MIN_PROBABILITY {
            problems.push(Problem::error(
                format!("{path}.sampling_percentage"),
                format!("sampling rate is too small: {}%", self.sampling_percentage),
            ));
        }
        if !(1..=14).contains(&self.sampling_precision) {
            problems.push(Problem::error(
                format!("{path}.sampling_precision"),
                format!(
                    "invalid sampling precision {}: it must be between 1 and 14 hex digits",
                    self.sampling_precision
                ),
            ));
        }
        if self.attribute_source == AttributeSource::Record && self.from_attribute.is_empty() {
            problems.push(Problem::error(
                format!("{path}.from_attribute"),
                "`attribute_source: record` needs `from_attribute`",
            ));
        }
        problems
    }
}

/// FNV-1a (32 bits) over the seed's four bytes, little-endian, then `bytes`: the Collector's
/// `hash_seed` hash.
pub fn seeded_hash(bytes: &[u8], seed: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in seed.to_le_bytes().iter().chain(bytes) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

const BUCKETS: u64 = 0x4000;

/// The 56-bit randomness the `hash_seed` mode derives from a 32-bit hash: its 14 decision bits
/// (inverted) on top, so that `R >= T` decides as `hash & 0x3fff < rate` always did.
fn hashed_randomness(bytes: &[u8], seed: u32) -> Randomness {
    let hash = seeded_hash(bytes, seed);
    let low = u64::from(hash) & (BUCKETS - 1);
    let unused = u64::from(hash >> 14);
    let mixed = unused ^ (unused << 10);
    Randomness::from_unsigned(((BUCKETS - 1 - low) << 42) | (mixed << 14) | low)
}

/// The decision rule of the configured mode.
#[derive(Debug, Clone, Copy)]
enum Sampler {
    Never,
    HashSeed { seed: u32, threshold: Threshold },
    Equalizing { threshold: Threshold },
    Proportional { ratio: f64, precision: u8 },
}

impl Sampler {
    fn new(c: &ProbabilisticSamplerConfig, logs: bool) -> Sampler {
        let pct = c.sampling_percentage.min(100.0);
        // The Collector's default mode; `logs` only changes where randomness comes from.
        let _ = logs;
        let mode = c.mode.unwrap_or(Mode::HashSeed);
        if pct <= 0.0 {
            return Sampler::Never;
        }
        let ratio = (f64::from(pct) / 100.0).max(MIN_PROBABILITY);
        match mode {
            Mode::Equalizing => Sampler::Equalizing {
                threshold: Threshold::from_probability_with_precision(ratio, c.sampling_precision)
                    .unwrap_or(Threshold::ALWAYS),
            },
            Mode::Proportional => Sampler::Proportional {
                ratio,
                precision: c.sampling_precision,
            },
            Mode::HashSeed => {
                // Multiplied in 32 bits and truncated, as the Collector has always done.
                let rate = (pct * (BUCKETS as f32 / 100.0)) as u64;
                if rate == 0 {
                    return Sampler::Never;
                }
                Sampler::HashSeed {
                    seed: c.hash_seed,
                    threshold: Threshold::from_unsigned((BUCKETS - rate) << 42)
                        .unwrap_or(Threshold::NEVER),
                }
            }
        }
    }

    fn decide(&self, arriving: Option<Threshold>) -> Threshold {
        match *self {
            Sampler::Never => Threshold::NEVER,
            Sampler::HashSeed { threshold, .. } => threshold,
            Sampler::Equalizing { threshold } => match arriving {
                Some(t) if t > threshold => t,
                _ => threshold,
            },
            Sampler::Proportional { ratio, precision } => {
                let incoming = arriving.map_or(1.0, Threshold::probability);
                // A product under 2^-56 never samples.
                Threshold::from_probability_with_precision(incoming * ratio, precision)
                    .unwrap_or(Threshold::NEVER)
            }
        }
    }
}

/// Where an item's randomness came from: the `policy` label of the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    TraceIdHash,
    TraceIdW3c,
    SamplingRandomness,
    Missing,
    SamplingPriority,
    /// The `from_attribute` attribute's hash.
    Attribute,
}

const SOURCES: usize = 6;

impl Source {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self, attribute: &str) -> String {
        match self {
            Source::TraceIdHash => "trace_id_hash".into(),
            Source::TraceIdW3c => "trace_id_w3c".into(),
            Source::SamplingRandomness => "sampling_randomness".into(),
            Source::Missing => "missing_randomness".into(),
            Source::SamplingPriority => "sampling_priority".into(),
            Source::Attribute => attribute.to_owned(),
        }
    }
}

/// Why an item could not be decided by its randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    Missing,
    Inconsistent,
    InUse,
    Malformed,
}

/// The sampling information an item carries, parsed, and whether it changed.
enum Carrier {
    /// A span's tracestate.
    Span(TraceState),
    /// A log record's `sampling.threshold` and `sampling.randomness`.
    Log {
        threshold: Option<Threshold>,
        randomness: Option<Randomness>,
        set_randomness: Option<Randomness>,
    },
}

impl Carrier {
    fn threshold(&self) -> Option<Threshold> {
        match self {
            Carrier::Span(ts) => ts.ot.threshold(),
            Carrier::Log { threshold, .. } => *threshold,
        }
    }

    fn clear_threshold(&mut self) {
        match self {
            Carrier::Span(ts) => ts.ot.clear_threshold(),
            Carrier::Log { threshold, .. } => *threshold = None,
        }
    }
}

/// The randomness of an item, its source, its carrier, and what went wrong reading them.
struct Reading {
    randomness: Randomness,
    source: Source,
    carrier: Option<Carrier>,
    trouble: Option<Trouble>,
}

/// Per-batch counts by (source, sampled).
#[derive(Default)]
struct Counts([[u64; 2]; SOURCES]);

struct Rules {
    sampler: Sampler,
    fail_closed: bool,
    precision: u8,
    source: AttributeSource,
    from_attribute: String,
    priority_attribute: String,
}

/// The consistent modes' randomness: the explicit `rv` when there is one, else the trace id's
/// last 7 bytes.
fn consistent_randomness(explicit: Option<Randomness>, trace_id: &[u8]) -> (Randomness, Source) {
    match explicit {
        Some(r) => (r, Source::SamplingRandomness),
        None => match Randomness::from_trace_id(trace_id) {
            Some(r) => (r, Source::TraceIdW3c),
            None => (Randomness::ALL, Source::Missing),
        },
    }
}

fn parse_priority(value: Option<AnyValue<'_>>) -> Option<bool> {
    let n = match value? {
        AnyValue::Int(i) => i as f64,
        AnyValue::Double(d) => d,
        AnyValue::String(s) => s.as_str().parse::<f64>().ok()?,
        _ => return None,
    };
    if n == 0.0 {
        Some(false)
    } else if n > 0.0 {
        Some(true)
    } else {
        None
    }
}

impl Rules {
    fn new(c: &ProbabilisticSamplerConfig, logs: bool) -> Rules {
        Rules {
            sampler: Sampler::new(c, logs),
            fail_closed: c.fail_closed,
            precision: c.sampling_precision,
            source: c.attribute_source,
            from_attribute: c.from_attribute.clone(),
            priority_attribute: c.sampling_priority.clone(),
        }
    }

    fn span_reading(&self, span: &Span<'_>) -> Reading {
        let parsed = TraceState::parse(span.trace_state());
        let tid = span.trace_id();
        let valid_tid = tid.len() == 16 && tid.iter().any(|&b| b != 0);
        match self.sampler {
            Sampler::Never => Reading {
                randomness: Randomness::ALL,
                source: Source::SamplingPriority,
                trouble: parsed.is_err().then_some(Trouble::Malformed),
                carrier: parsed.ok().map(Carrier::Span),
            },
            Sampler::HashSeed { seed, .. } => {
                let (randomness, source) = if valid_tid {
                    (hashed_randomness(tid, seed), Source::TraceIdHash)
                } else {
                    (Randomness::ALL, Source::Missing)
                };
                let (carrier, trouble) = match parsed {
                    Err(_) => (None, Some(Trouble::Malformed)),
                    Ok(ts) if ts.ot.randomness().is_some() || ts.ot.threshold().is_some() => {
                        (None, Some(Trouble::InUse))
                    }
                    Ok(mut ts) => {
                        ts.ot.set_randomness(randomness);
                        (Some(Carrier::Span(ts)), None)
                    }
                };
                Reading {
                    randomness,
                    source,
                    carrier,
                    trouble,
                }
            }
            Sampler::Equalizing { .. } | Sampler::Proportional { .. } => match parsed {
                Err(_) => Reading {
                    randomness: Randomness::ALL,
                    source: Source::Missing,
                    carrier: None,
                    trouble: Some(Trouble::Malformed),
                },
                Ok(ts) => {
                    let (randomness, source) = consistent_randomness(ts.ot.randomness(), tid);
                    Reading {
                        randomness,
                        source,
                        carrier: Some(Carrier::Span(ts)),
                        trouble: None,
                    }
                }
            },
        }
    }

    fn log_reading(&self, log: &LogRecord<'_>) -> Reading {
        let text = |key: &str| match log.attribute(key) {
            Some(AnyValue::String(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        };
        let mut malformed = false;
        let threshold = text("sampling.threshold")
            .and_then(|t| Threshold::parse(t).map_err(|_| malformed = true).ok());
        let randomness = text("sampling.randomness")
            .and_then(|r| Randomness::parse(r).map_err(|_| malformed = true).ok());
        let carrier = Carrier::Log {
            threshold,
            randomness,
            set_randomness: None,
        };
        let tid = log.trace_id();
        let valid_tid = tid.len() == 16 && tid.iter().any(|&b| b != 0);
        let attribute_bytes = || -> Option<Vec<u8>> {
            if self.from_attribute.is_empty() {
                return None;
            }
            Some(match log.attribute(&self.from_attribute)? {
                AnyValue::Bytes(b) => b.to_vec(),
                AnyValue::String(s) => s.as_bytes().to_vec(),
                AnyValue::Int(i) => i.to_string().into_bytes(),
                AnyValue::Double(d) => d.to_string().into_bytes(),
                AnyValue::Bool(b) => b.to_string().into_bytes(),
                _ => return None,
            })
        };
        let trouble = malformed.then_some(Trouble::Malformed);
        match self.sampler {
            Sampler::Never => Reading {
                randomness: Randomness::ALL,
                source: Source::SamplingPriority,
                carrier: Some(carrier),
                trouble,
            },
            Sampler::HashSeed { seed, .. } => {
                let by_trace = self.source == AttributeSource::TraceId && valid_tid;
                let (randomness, source) = if by_trace {
                    (hashed_randomness(tid, seed), Source::TraceIdHash)
                } else if let Some(bytes) = attribute_bytes() {
                    (hashed_randomness(&bytes, seed), Source::Attribute)
                } else {
                    (Randomness::ALL, Source::Missing)
                };
                if trouble.is_some() {
                    return Reading {
                        randomness,
                        source,
                        carrier: None,
                        trouble,
                    };
                }
                if randomness_or_threshold(&carrier) {
                    return Reading {
                        randomness,
                        source,
                        carrier: None,
                        trouble: Some(Trouble::InUse),
                    };
                }
                Reading {
                    randomness,
                    source,
                    carrier: Some(Carrier::Log {
                        threshold,
                        randomness: None,
                        set_randomness: Some(randomness),
                    }),
                    trouble: None,
                }
            }
            Sampler::Equalizing { .. } | Sampler::Proportional { .. } => {
                let (randomness, source) = consistent_randomness(randomness, tid);
                Reading {
                    randomness,
                    source,
                    carrier: if trouble.is_some() {
                        None
                    } else {
                        Some(carrier)
                    },
                    trouble,
                }
            }
        }
    }

    /// The decision for one item, and the item's new encoding when it is kept with changed
    /// sampling information.
    fn decide(&self, item: &Item<'_>, counts: &mut Counts) -> Verdict {
        let mut reading = match item {
            Item::Span(span) => self.span_reading(span),
            Item::Log(log) => self.log_reading(log),
            Item::Point(_) => return Verdict::Keep,
        };
        // The consistency check: an arriving threshold the randomness would not have passed is
        // cleared.
        if reading.trouble.is_none() {
            if reading.source == Source::Missing {
                reading.trouble = Some(Trouble::Missing);
            } else if let Some(carrier) = reading.carrier.as_mut()
                && carrier
                    .threshold()
                    .is_some_and(|t| !t.should_sample(reading.randomness))
            {
                carrier.clear_threshold();
                reading.trouble = Some(Trouble::Inconsistent);
            }
        }
        let mut threshold = match reading.trouble {
            Some(_) if self.fail_closed => Threshold::NEVER,
            Some(_) => Threshold::ALWAYS,
            None => self
                .sampler
                .decide(reading.carrier.as_ref().and_then(Carrier::threshold)),
        };
        let mut source = reading.source;
        match item {
            Item::Span(span) => {
                if let Some(keep) = parse_priority(span.attribute("sampling.priority")) {
                    threshold = if keep {
                        Threshold::ALWAYS
                    } else {
                        Threshold::NEVER
                    };
                    source = Source::SamplingPriority;
                }
            }
            Item::Log(log) if !self.priority_attribute.is_empty() => {
                let pct = match log.attribute(&self.priority_attribute) {
                    Some(AnyValue::Int(i)) => i as f64,
                    Some(AnyValue::Double(d)) => d,
                    _ => 0.0,
                };
                if pct != 0.0
                    && let Ok(t) =
                        Threshold::from_probability_with_precision(pct / 100.0, self.precision)
                    && t < threshold
                {
                    threshold = t;
                }
            }
            _ => {}
        }
        let sampled = threshold.should_sample(reading.randomness);
        counts.0[source.index()][usize::from(sampled)] += 1;
        if !sampled {
            return Verdict::Drop;
        }
        match (item, reading.carrier) {
            (Item::Span(span), Some(Carrier::Span(mut ts))) => {
                let _ = ts.ot.update_threshold(threshold);
                let new = ts.serialize();
                if new == span.trace_state() {
                    Verdict::Keep
                } else {
                    Verdict::span_trace_state(span, &new)
                }
            }
            (
                Item::Log(log),
                Some(Carrier::Log {
                    threshold: arriving,
                    set_randomness,
                    ..
                }),
            ) => {
                let mut record = log.decode();
                if let Some(r) = set_randomness {
                    sluice_core::anyvalue::set(
                        &mut record.attributes,
                        "sampling.randomness",
                        StringValue(r.rvalue()),
                    );
                }
                if arriving.is_none_or(|a| threshold >= a) {
                    sluice_core::anyvalue::set(
                        &mut record.attributes,
                        "sampling.threshold",
                        StringValue(threshold.tvalue()),
                    );
                }
                Verdict::Replace(record.encode_to_vec())
            }
            _ => Verdict::Keep,
        }
    }
}

fn randomness_or_threshold(carrier: &Carrier) -> bool {
    matches!(carrier, Carrier::Log { threshold, randomness, .. } if threshold.is_some() || randomness.is_some())
}

struct Decide<'a> {
    rules: &'a Rules,
    counts: Counts,
}

impl Editor for Decide<'_> {
    fn item(&mut self, _context: &Context<'_>, item: &Item<'_>) -> Verdict {
        self.rules.decide(item, &mut self.counts)
    }
}

/// Batches over this many bytes are sampled on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

struct SamplerProcessor {
    rules: Arc<Rules>,
    /// By source, then not sampled / sampled.
    counters: Vec<[metrics::Counter; 2]>,
}

#[async_trait]
impl Processor for SamplerProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let rules = Arc::clone(&self.rules);
        let (batch, counts) =
            sluice_core::blocking::off_workers(batch.size(), OFF_WORKERS_ABOVE, move || {
                let mut editor = Decide {
                    rules: &rules,
                    counts: Counts::default(),
                };
                let batch = batch.edit(&mut editor);
                (batch, editor.counts)
            })
            .await
            .ok_or_else(|| ConsumeError::internal("the probabilistic sampler failed"))?;
        for (source, pair) in counts.0.iter().enumerate() {
            for (sampled, &n) in pair.iter().enumerate() {
                if n > 0 {
                    self.counters[source][sampled].increment(n);
                }
            }
        }
        Ok(Some(batch))
    }
}

struct SamplerComponent {
    config: ProbabilisticSamplerConfig,
}

impl ProcessorComponent for SamplerComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        let logs = ctx.signal == Signal::Logs;
        let c = &self.config;
        let rules = Rules::new(c, logs);
        let name = if logs {
            sluice_core::metrics::PROBABILISTIC_SAMPLER_COUNT_LOGS_SAMPLED
        } else {
            sluice_core::metrics::PROBABILISTIC_SAMPLER_COUNT_TRACES_SAMPLED
        };
        let sources = [
            Source::TraceIdHash,
            Source::TraceIdW3c,
            Source::SamplingRandomness,
            Source::Missing,
            Source::SamplingPriority,
            Source::Attribute,
        ];
        let counters = sources
            .iter()
            .map(|s| {
                let policy = s.name(&c.from_attribute);
                [false, true].map(|sampled| {
                    metrics::counter!(name, "processor" => ctx.id.clone(), "policy" => policy.clone(), "sampled" => sampled.to_string())
                })
            })
            .collect();
        Ok(Instance::new(Arc::new(SamplerProcessor {
            rules: Arc::new(rules),
            counters,
        })))
    }
}

/// Builds `probabilistic_sampler` processors.
#[derive(Debug, Default)]
pub struct ProbabilisticSamplerFactory;

impl ProcessorFactory for ProbabilisticSamplerFactory {
    fn type_name(&self) -> &'static str {
        "probabilistic_sampler"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &ProbabilisticSamplerConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let config: ProbabilisticSamplerConfig = typed(&path, config)?;
        if let Some(problem) = config.check(&path).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        Ok(Box::new(SamplerComponent { config }))
    }
}

#[cfg(test)]
mod tests;
