//! The `prometheus` exporter: keeps the latest value of every series, translated from OTLP by
//! the same rules as `prometheusremotewrite` ([`crate::translate`]: names, units, labels,
//! `target_info`, histograms, summaries, exponential histograms as native histograms), for
//! Prometheus to scrape at `endpoint` (any path). The page is in the protobuf format when the
//! scraper asks for it ([`exposition`]; Prometheus does when its native histograms are on), else
//! in the text format 0.0.4. The Collector's config: `endpoint`, `namespace`, `const_labels`,
//! `send_timestamps`, `metric_expiration`, `resource_to_telemetry_conversion`,
//! `add_metric_suffixes`, `translation_strategy`.
//!
//! Delta sums and histograms are accumulated into cumulative ones as the Collector's exporter
//! does ([`delta`]). Where it differs from the Collector's, and says so when a config asks:
//!
//! * Exponential histograms are served as native histograms in the protobuf format. The text
//!   format has no form for them: a text scrape leaves them out and counts each one left out
//!   (the Collector converts them to classic buckets, losing their resolution).
//! * With `enable_open_metrics: true`, a scraper that asks for OpenMetrics gets it
//!   ([`openmetrics`]), exemplars included; protobuf still wins when asked for first.
//!
//! A family without an OTLP description gets its name as help (`promtool check metrics` wants
//! help on every family). A series disappears after `metric_expiration` (default 5m) without a new point, or at once
//! when a point marks it stale (`FLAG_NO_RECORDED_VALUE`). Each scrape renders the families in
//! name order and the series of a family in the order they first came.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ConsumeError, Consumer, DirectExporter, ExporterFactory,
    HelperSettings, typed,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::{Enabled, TranslationStrategy};
use crate::proto::{self, Label, MetricType, STALE_NAN_BITS};
use crate::translate::{TranslateOptions, format_float, translate};

mod delta;
mod exposition;
mod openmetrics;

/// `exporters.prometheus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Where Prometheus scrapes (`host:port`).
    pub endpoint: String,
    /// Prefixed to every metric name, with `_`.
    #[serde(default)]
    pub namespace: String,
    /// Labels on every series, unless a series has a label of that name.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// Whether samples carry their points' timestamps (default false: Prometheus stamps them at
    /// scrape time).
    #[serde(default)]
    pub send_timestamps: bool,
    /// How long a series stays without a new point (default 5m).
    #[serde(default = "default_expiration")]
    pub metric_expiration: HumanDuration,
    /// Copy resource attributes onto every series.
    #[serde(default)]
    pub resource_to_telemetry_conversion: Enabled,
    /// Serve the OpenMetrics text format, with exemplars, to scrapers that ask for it.
    #[serde(default)]
    pub enable_open_metrics: bool,
    /// Unit and type suffixes on names (default true).
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// How names are translated; overrides `add_metric_suffixes` when set.
    #[serde(default)]
    pub translation_strategy: Option<TranslationStrategy>,
}

fn default_expiration() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn yes() -> bool {
    true
}

/// One series' latest sample: a value, or a native histogram (from an exponential one).
#[derive(Debug, Clone)]
struct Latest {
    value: f64,
    native: Option<proto::Histogram>,
    /// The newest exemplar of a counter or bucket series, for the OpenMetrics format.
    exemplar: Option<proto::Exemplar>,
    timestamp_ms: i64,
    updated: Instant,
}

/// One family's type and help, as its first metric set them.
#[derive(Debug, Clone)]
struct Family {
    metric_type: MetricType,
    help: String,
}

/// The series of one metric name, by their other labels, in the order they first came (hashed:
/// a batch updates many, and sorting them at every scrape cost more than the rest of it).
type Series = indexmap::IndexMap<Vec<Label>, Latest, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct State {
    /// By metric name (`__name__`), each behind a lock of its own: a scrape renders one name at
    /// a time, so a batch waits for at most one name's rendering, not the whole page.
    series: BTreeMap<String, Arc<Mutex<Series>>>,
    families: BTreeMap<String, Family>,
    /// The running totals of delta series.
    totals: delta::Totals,
}

/// What the pipelines write and the scrape endpoint reads.
struct Shared {
    config: ScrapeConfig,
    options: TranslateOptions,
    state: Mutex<State>,
    dropped: metrics::Counter,
    /// The size of the last page rendered, to decide where the next one is.
    last_page: AtomicUsize,
}

/// The formats a scrape may ask for.
#[derive(Debug, Clone, Copy)]
enum Format {
    Protobuf,
    OpenMetrics,
    Text,
}

/// The content type of the text format.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Batches and pages over this many bytes are handled on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

/// The exporter, and its listening socket until it starts serving.
struct ScrapeExporter {
    shared: Arc<Shared>,
    listener: Mutex<Option<std::net::TcpListener>>,
}

impl Shared {
    fn new(id: &str, config: ScrapeConfig) -> Shared {
        let options = TranslateOptions {
            add_metric_suffixes: TranslationStrategy::suffixes(
                config.translation_strategy,
                config.add_metric_suffixes,
            ),
            resource_to_telemetry_conversion: config.resource_to_telemetry_conversion.enabled,
            external_labels: config
                .const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            send_metadata: true,
        };
        let dropped = metrics::counter!(
            sluice_core::metrics::PROMETHEUS_DROPPED_METRIC_POINTS,
            "exporter" => id.to_owned(),
        );
        Shared {
            config,
            options,
            state: Mutex::new(State::default()),
            dropped,
            last_page: AtomicUsize::new(0),
        }
    }

    /// Takes one batch's series into the state.
    fn take(&self, request: &[u8]) -> Result<(), ConsumeError> {
        let mut request = ExportMetricsServiceRequest::decode(request)
            .map_err(|e| ConsumeError::invalid(format!("prometheus exporter: {e}")))?;
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .totals
            .cumulate(&mut request, Instant::now());
        let translation = translate(&request, &self.options);
        let dropped: usize = translation.dropped.iter().map(|(_, n)| n).sum();
        if dropped > 0 {
            self.dropped.increment(dropped as u64);
            tracing::debug!(dropped = ?translation.dropped, "points not exposed for scraping");
        }
        let now = Instant::now();
        let namespaced = |name: &str| {
            if self.config.namespace.is_empty() {
                name.to_owned()
            } else {
                format!("{}_{name}", self.config.namespace)
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for m in &translation.metadata {
            let name = namespaced(&m.metric_family_name);
            state.families.entry(name).or_insert_with(|| Family {
                metric_type: MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown),
                help: m.help.clone(),
            });
        }
        for series in translation.series {
            // A sample, or (from an exponential histogram) a native histogram: the newest.
            let sample = series.samples.iter().max_by_key(|s| s.timestamp);
            let native = series.histograms.iter().max_by_key(|h| h.timestamp);
            let exemplar = series.exemplars.iter().max_by_key(|e| e.timestamp).cloned();
            let (sample_value, native, timestamp_ms) = match (sample, native) {
                (Some(s), _) => (s.value, None, s.timestamp),
                (None, Some(h)) => (h.sum, Some(h.clone()), h.timestamp),
                (None, None) => continue,
            };
            let mut name = String::new();
            let labels: Vec<Label> = series
                .labels
                .into_iter()
                .filter_map(|l| {
                    if l.name == "__name__" {
                        name = namespaced(&l.value);
                        None
                    } else {
                        Some(l)
                    }
                })
                .collect();
            let family = state.series.entry(name).or_insert_with(|| {
                Arc::new(Mutex::new(Series::with_hasher(
                    foldhash::fast::RandomState::default(),
                )))
            });
            let mut family = family.lock().unwrap_or_else(|e| e.into_inner());
            if sample_value.to_bits() == STALE_NAN_BITS {
                family.shift_remove(&labels);
                continue;
            }
            match family.get_mut(&labels) {
                // An older point than the one kept (points arrive out of order across batches).
                Some(kept) if kept.timestamp_ms > timestamp_ms => kept.updated = now,
                kept => {
                    // A point without exemplars leaves the last one standing.
                    let exemplar = exemplar.or_else(|| kept.and_then(|k| k.exemplar.take()));
                    family.insert(
                        labels,
                        Latest {
                            value: sample_value,
                            native,
                            exemplar,
                            timestamp_ms,
                            updated: now,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Visits every family with its member series (`x`, `x_bucket`, `x_sum`, `x_count`), in
    /// name order, each member under its own lock and free of series that expired as of `now`.
    /// The state's lock is held only to list the names.
    fn walk(&self, now: Instant, mut visit: impl FnMut(&str, Option<&Family>, &[(&str, &Series)])) {
        let expiration = self.config.metric_expiration.get();
        let (names, families) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.totals.expire(now, expiration);
            let names: Vec<(String, Arc<Mutex<Series>>)> = state
                .series
                .iter()
                .map(|(n, s)| (n.clone(), Arc::clone(s)))
                .collect();
            (names, state.families.clone())
        };
        // Group the series by family: `x_bucket`, `x_sum` and `x_count` belong to histogram `x`.
        let mut grouped: BTreeMap<&str, Vec<(&str, &Mutex<Series>)>> = BTreeMap::new();
        for (name, series) in &names {
            grouped
                .entry(family_of(name, &families))
                .or_default()
                .push((name.as_str(), series));
        }
        let mut emptied = false;
        for (family, members) in grouped {
            let mut guards: Vec<(&str, std::sync::MutexGuard<'_, Series>)> = members
                .into_iter()
                .map(|(name, series)| {
                    let mut series = series.lock().unwrap_or_else(|e| e.into_inner());
                    series.retain(|_, latest| now.duration_since(latest.updated) < expiration);
                    emptied |= series.is_empty();
                    (name, series)
                })
                .collect();
            guards.retain(|(_, series)| !series.is_empty());
            // A family whose series all went stale or expired is not listed.
            if guards.is_empty() {
                continue;
            }
            let members: Vec<(&str, &Series)> = guards
                .iter()
                .map(|(name, series)| (*name, &**series))
                .collect();
            visit(family, families.get(family), &members);
        }
        if emptied {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .series
                .retain(|_, s| !s.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
        }
    }

    /// The text exposition of every series updated within the expiration. Native histograms
    /// have no text form: they are left out, and counted.
    fn render(&self, now: Instant) -> String {
        let mut out = String::new();
        let mut body = String::new();
        let mut left_out = 0;
        self.walk(now, |family, meta, members| {
            body.clear();
            for (name, series) in members {
                for (labels, latest) in series.iter() {
                    if latest.native.is_some() {
                        left_out += 1;
                    } else {
                        self.line(&mut body, name, labels, latest);
                    }
                }
            }
            if body.is_empty() {
                return;
            }
            if let Some(f) = meta {
                // `promtool check metrics` wants help on every family: a metric without a
                // description is helped by its name.
                let help = if f.help.is_empty() { family } else { &f.help };
                let _ = writeln!(out, "# HELP {family} {}", escape_help(help));
                let _ = writeln!(out, "# TYPE {family} {}", type_word(f.metric_type));
            }
            out.push_str(&body);
        });
        if left_out > 0 {
            self.dropped.increment(left_out);
        }
        out
    }

    /// The OpenMetrics exposition of every series updated within the expiration, with exemplars.
    fn render_openmetrics(&self, now: Instant) -> String {
        let mut out = String::new();
        let mut left_out = 0;
        self.walk(now, |family, meta, members| {
            left_out += openmetrics::write_family(
                &mut out,
                family,
                meta,
                members,
                self.config.send_timestamps,
            );
        });
        if left_out > 0 {
            self.dropped.increment(left_out);
        }
        out.push_str("# EOF\n");
        out
    }

    /// The protobuf exposition of every series updated within the expiration.
    fn render_protobuf(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        self.walk(now, |family, meta, members| {
            exposition::write_family(&mut out, family, meta, members, self.config.send_timestamps);
        });
        out
    }

    /// One sample line.
    fn line(&self, out: &mut String, name: &str, labels: &[Label], latest: &Latest) {
        out.push_str(name);
        write_labels(out, labels);
        let _ = write!(out, " {}", format_float(latest.value));
        if self.config.send_timestamps {
            let _ = write!(out, " {}", latest.timestamp_ms);
        }
        out.push('\n');
    }
}

/// `{name="value",...}`, or nothing for no labels: the same in the text format and OpenMetrics.
fn write_labels(out: &mut String, labels: &[Label]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&l.name);
        out.push('=');
        sluice_core::labels::write_quoted(out, &l.value);
    }
    out.push('}');
}

/// The family a series name belongs to: itself, or a histogram or summary it is a part of.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|f| {
                matches!(f.metric_type, MetricType::Histogram | MetricType::Summary)
            })
        {
            return base;
        }
    }
    name
}

fn type_word(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge | MetricType::Info | MetricType::Stateset => "gauge",
        MetricType::Histogram | MetricType::Gaugehistogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Unknown => "untyped",
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[async_trait]
impl Consumer for ScrapeExporter {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        // Translating a batch costs about 12 µs a point: large batches leave the async workers.
        let shared = Arc::clone(&self.shared);
        sluice_core::blocking::off_workers(batch.size(), OFF_WORKERS_ABOVE, move || {
            shared.take(batch.data())
        })
        .await
        .ok_or_else(|| ConsumeError::internal("the prometheus exporter failed"))?
    }
}

impl DirectExporter for ScrapeExporter {
    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let exporter = Arc::clone(&self.shared);
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(listener) = taken.and_then(|l| tokio::net::TcpListener::from_std(l).ok()) else {
            return Vec::new();
        };
        vec![tokio::spawn(async move {
            tracing::info!(endpoint = ?listener.local_addr().ok(), "prometheus exporter listening for scrapes");
            let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                let exporter = Arc::clone(&exporter);
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let format = if exposition::accepted(accept) {
                    Format::Protobuf
                } else if exporter.config.enable_open_metrics && openmetrics::accepted(accept) {
                    Format::OpenMetrics
                } else {
                    Format::Text
                };
                async move {
                    // Rendering takes about a microsecond a series line: a page as large as the
                    // last one was over the threshold is rendered off the async workers.
                    let last = exporter.last_page.load(Ordering::Relaxed);
                    let (content_type, page) =
                        sluice_core::blocking::off_workers(last, OFF_WORKERS_ABOVE, move || {
                            let now = Instant::now();
                            let (content_type, page) = match format {
                                Format::Protobuf => {
                                    (exposition::CONTENT_TYPE, exporter.render_protobuf(now))
                                }
                                Format::OpenMetrics => (
                                    openmetrics::CONTENT_TYPE,
                                    exporter.render_openmetrics(now).into_bytes(),
                                ),
                                Format::Text => {
                                    (TEXT_CONTENT_TYPE, exporter.render(now).into_bytes())
                                }
                            };
                            exporter.last_page.store(page.len(), Ordering::Relaxed);
                            (content_type, page)
                        })
                        .await
                        .unwrap_or((TEXT_CONTENT_TYPE, Vec::new()));
                    ([(axum::http::header::CONTENT_TYPE, content_type)], page)
                }
            });
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        })]
    }
}

/// Builds `prometheus` exporters.
#[derive(Debug, Default)]
pub struct ScrapeExporterFactory;

fn problems(path: &str, c: &ScrapeConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.endpoint.trim().is_empty() {
        out.push(Problem::error(
            format!("{path}.endpoint"),
            "required: the address Prometheus scrapes (`0.0.0.0:8889`)",
        ));
    }
    out.extend(TranslationStrategy::check(c.translation_strategy, path));
    out
}

impl ExporterFactory for ScrapeExporterFactory {
    fn type_name(&self) -> &'static str {
        "prometheus"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["metrics"]
    }

    fn helper_defaults(&self) -> Option<HelperSettings> {
        None
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &ScrapeConfig| problems(path, c))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        _context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: ScrapeConfig = typed(&path, config)?;
        if let Some(problem) = problems(&path, &c).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        // Bound here, so that a taken port stops the start with its reason, before any data
        // is accepted.
        let listener = std::net::TcpListener::bind(&c.endpoint)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| BuildError::Bind {
                endpoint: c.endpoint.clone(),
                source,
            })?;
        Ok(BuiltExporter::Direct(Arc::new(ScrapeExporter {
            shared: Arc::new(Shared::new(id, c)),
            listener: Mutex::new(Some(listener)),
        })))
    }
}

#[cfg(test)]
mod tests;
