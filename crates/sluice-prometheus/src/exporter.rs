//! The `prometheusremotewrite` exporter: translate, shard by series, encode, Snappy-compress and
//! POST to a remote-write endpoint.
//!
//! Samples of one series must arrive in timestamp order. Batches are therefore exported one at a
//! time (the sending queue has a single consumer), and parallelism comes from inside a batch:
//! its series are split into `remote_write_queue.num_consumers` shards by a hash of their labels
//! and the shards are sent concurrently. One series always lands in the same shard, and shard
//! requests of one batch finish before the next batch starts, so per-series order holds.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{ByteSize, Problem};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterFactory, HelperSettings,
    check_typed, typed,
};

use sluice_net::TlsClientConfig;

use crate::proto::{TimeSeries, WriteRequest};
use crate::translate::{TranslateOptions, translate_encoded};

/// Headers the remote-write specification reserves; configuration may not override them.
const RESERVED_HEADERS: [&str; 4] = [
    "content-encoding",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// `exporters.prometheusremotewrite`, in the shape of the Collector's exporter of that name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The remote-write URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: String,
    /// Extra headers (e.g. `authorization`); the protocol's own headers cannot be overridden.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Labels added to every series (a series' own label of the same name wins).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Put every resource attribute on every series instead of only on `target_info`.
    #[serde(default)]
    pub resource_to_telemetry_conversion: Enabled,
    /// Append unit and `_total` suffixes to metric names (default `true`).
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// How names are translated; overrides `add_metric_suffixes` when set.
    #[serde(default)]
    pub translation_strategy: Option<TranslationStrategy>,
    /// Send metric metadata (type, help, unit) with each request (default `false`).
    #[serde(default)]
    pub send_metadata: bool,
    /// Largest uncompressed request (default `3000000` bytes, the Collector's); a batch larger
    /// than this is sent as several requests.
    #[serde(default = "default_max_batch")]
    pub max_batch_size_bytes: ByteSize,
    /// Parallel senders.
    #[serde(default)]
    pub remote_write_queue: RemoteWriteQueue,
    /// TLS: `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// `authenticator`: the extension whose credentials every request carries
    /// (`bearertokenauth`, `basicauth` with `client_auth`).
    #[serde(default)]
    pub auth: Option<sluice_core::auth::AuthSettings>,
}

/// `translation_strategy`: how OTLP names become Prometheus names (the Collector's newer key,
/// which overrides `add_metric_suffixes` when set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TranslationStrategy {
    /// Names escaped to `[a-zA-Z0-9_:]`, with unit and type suffixes (the default).
    UnderscoreEscapingWithSuffixes,
    /// Names escaped, without suffixes.
    UnderscoreEscapingWithoutSuffixes,
    /// UTF-8 names with suffixes: refused (the text format 0.0.4 and Prometheus 2 need escaped
    /// names).
    #[serde(rename = "NoUTF8EscapingWithSuffixes")]
    NoUtf8EscapingWithSuffixes,
    /// OTLP names as they are: refused, for the same reason.
    NoTranslation,
}

impl TranslationStrategy {
    /// Whether names get suffixes: the strategy's answer when one is set, else
    /// `add_metric_suffixes`.
    pub(crate) fn suffixes(strategy: Option<Self>, add_metric_suffixes: bool) -> bool {
        match strategy {
            Some(
                TranslationStrategy::UnderscoreEscapingWithoutSuffixes
                | TranslationStrategy::NoTranslation,
            ) => false,
            Some(_) => true,
            None => add_metric_suffixes,
        }
    }

    /// The problem with a strategy sluice cannot honour.
    pub(crate) fn check(strategy: Option<Self>, path: &str) -> Option<Problem> {
        matches!(
            strategy,
            Some(TranslationStrategy::NoUtf8EscapingWithSuffixes | TranslationStrategy::NoTranslation)
        )
        .then(|| {
            Problem::error(
                format!("{path}.translation_strategy"),
                "UTF-8 metric names are not supported: sluice escapes names for the text format 0.0.4 and Prometheus 2 (use UnderscoreEscapingWithSuffixes or UnderscoreEscapingWithoutSuffixes)",
            )
        })
    }
}

/// `{ enabled: bool }`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Whether the feature is on.
    #[serde(default)]
    pub enabled: bool,
}

/// `remote_write_queue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueue {
    /// Accepted for compatibility; the sending queue carries the batches.
    pub enabled: bool,
    /// Accepted for compatibility; see `sending_queue.queue_size`.
    pub queue_size: Option<u64>,
    /// Concurrent requests per batch, each carrying a disjoint shard of series (default `5`).
    pub num_consumers: usize,
}

impl Default for RemoteWriteQueue {
    fn default() -> Self {
        RemoteWriteQueue {
            enabled: true,
            queue_size: None,
            num_consumers: 5,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_max_batch() -> ByteSize {
    ByteSize(3_000_000)
}

impl RemoteWriteConfig {
    fn options(&self) -> TranslateOptions {
        TranslateOptions {
            add_metric_suffixes: TranslationStrategy::suffixes(
                self.translation_strategy,
                self.add_metric_suffixes,
            ),
            resource_to_telemetry_conversion: self.resource_to_telemetry_conversion.enabled,
            external_labels: self
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            send_metadata: self.send_metadata,
        }
    }

    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            p.push(Problem::error(
                format!("{path}.endpoint"),
                "must be a URL starting with http:// or https://",
            ));
        }
        for name in self.headers.keys() {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                p.push(Problem::error(
                    format!("{path}.headers.{name}"),
                    "is set by the remote-write protocol and cannot be overridden",
                ));
            }
        }
        if self.remote_write_queue.num_consumers == 0 {
            p.push(Problem::error(
                format!("{path}.remote_write_queue.num_consumers"),
                "must be at least 1",
            ));
        }
        if self.max_batch_size_bytes.bytes() < 1024 {
            p.push(Problem::error(
                format!("{path}.max_batch_size_bytes"),
                "must be at least 1KiB",
            ));
        }
        p.extend(TranslationStrategy::check(self.translation_strategy, path));
        p.extend(self.tls.check(path));
        p
    }
}

/// Splits series into `shards` groups by a hash of their labels, so that one series always goes
/// to the same shard.
pub(crate) fn shard(series: Vec<TimeSeries>, shards: usize) -> Vec<Vec<TimeSeries>> {
    let shards = shards.max(1);
    let mut out: Vec<Vec<TimeSeries>> = (0..shards).map(|_| Vec::new()).collect();
    for s in series {
        // A fixed seed: a series must land in the same shard in every batch, to stay in order.
        let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
        for l in &s.labels {
            l.name.hash(&mut h);
            l.value.hash(&mut h);
        }
        out[(h.finish() % shards as u64) as usize].push(s);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Encodes a shard as requests of at most `max` bytes (a single series larger than `max` goes
/// alone). Metadata rides with the first request.
pub(crate) fn encode(
    series: Vec<TimeSeries>,
    metadata: Vec<crate::proto::MetricMetadata>,
    max: usize,
) -> Vec<Bytes> {
    // Each series is written as it is added (WriteRequest.timeseries is field 1), so its size
    // is computed once here and once by prost's length prefix, not again for a whole request.
    let mut out = Vec::new();
    let mut current = bytes::BytesMut::new();
    WriteRequest {
        timeseries: Vec::new(),
        metadata,
    }
    .encode_raw(&mut current);
    let mut has_series = false;
    for s in series {
        let len = s.encoded_len();
        let field = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if has_series && current.len() + field > max {
            out.push(current.split().freeze());
        }
        prost::encoding::message::encode(1, &s, &mut current);
        has_series = true;
    }
    if !current.is_empty() {
        out.push(current.freeze());
    }
    out
}

/// What the exporter sends for one batch.
#[derive(Debug)]
pub struct WriteRequests {
    /// Per shard (series hashed by label set, so a series keeps its shard), Snappy-compressed
    /// `WriteRequest` bodies of at most the configured size before compression, sent in order.
    pub shards: Vec<Vec<Bytes>>,
    /// Data points not translated, by reason, with counts.
    pub dropped: Vec<(&'static str, usize)>,
}

/// The remote-write bodies for an encoded OTLP metrics request: the exporter's whole encoding
/// step (translation, sharding, encoding, Snappy compression), run on the blocking pool and done
/// once per batch, not again for each retry of a body. Metadata rides with the first body.
///
/// # Errors
/// A permanent [`ExportError`] when the request does not decode or a body cannot be compressed.
pub fn write_requests(
    data: &[u8],
    options: &TranslateOptions,
    shards: usize,
    max: usize,
) -> Result<WriteRequests, ExportError> {
    let t = translate_encoded(data, options)
        .map_err(|e| ExportError::permanent(format!("cannot decode batch: {e}")))?;
    let mut metadata = Some(t.metadata);
    let mut snappy = snap::raw::Encoder::new();
    let shards = shard(t.series, shards)
        .into_iter()
        .map(|s| {
            encode(s, metadata.take().unwrap_or_default(), max)
                .into_iter()
                .map(|body| {
                    snappy.compress_vec(&body).map(Bytes::from).map_err(|e| {
                        ExportError::permanent(format!("snappy compression failed: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WriteRequests {
        shards,
        dropped: t.dropped,
    })
}

struct RemoteWriteExporter {
    id: String,
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    auth: Option<Arc<dyn sluice_core::auth::ClientAuthenticator>>,
    options: TranslateOptions,
    shards: usize,
    max_request: usize,
    drops: metrics::Counter,
}

impl RemoteWriteExporter {
    /// Sends one Snappy-compressed `WriteRequest`.
    async fn post(&self, compressed: Bytes) -> Result<(), ExportError> {
        let request = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(compressed);
        let request = sluice_net::authorize(request, self.auth.as_ref());
        let answer = sluice_net::send(request, &self.endpoint).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        // The specification: retry 5xx, may retry 429, never other 4xx (Prometheus answers
        // out-of-order and duplicate samples with 400).
        let retryable = answer.status.is_server_error() || answer.status.as_u16() == 429;
        Err(answer.error(&self.endpoint, None, retryable))
    }
}

#[async_trait]
impl Exporter for RemoteWriteExporter {
    /// Per shard, the Snappy-compressed `WriteRequest` bodies of a batch.
    type Encoded = Vec<Vec<Bytes>>;

    fn encode(&self, batch: &Batch) -> Result<Vec<Vec<Bytes>>, ExportError> {
        let WriteRequests { shards, dropped } =
            write_requests(batch.data(), &self.options, self.shards, self.max_request)?;
        // Counted here, once per batch, however many times the batch is retried.
        for (reason, count) in dropped {
            self.drops.increment(count as u64);
            tracing::debug!(exporter = %self.id, reason, count, "data points not translated");
        }
        Ok(shards)
    }

    async fn send(&self, requests: &Vec<Vec<Bytes>>) -> Result<(), ExportError> {
        let sends = requests.iter().map(|shard| async move {
            for body in shard {
                self.post(body.clone()).await?;
            }
            Ok::<(), ExportError>(())
        });
        let results = futures::future::join_all(sends).await;
        // A retryable failure wins, so the batch is retried; repeated samples with the same
        // timestamp and value are accepted by Prometheus.
        let mut permanent = None;
        for r in results {
            match r {
                Err(e) if e.retryable => return Err(e),
                Err(e) => permanent = Some(e),
                Ok(()) => {}
            }
        }
        permanent.map_or(Ok(()), Err)
    }
}

/// Builds `prometheusremotewrite` exporters.
#[derive(Debug, Default)]
pub struct RemoteWriteExporterFactory;

impl ExporterFactory for RemoteWriteExporterFactory {
    fn type_name(&self) -> &'static str {
        "prometheusremotewrite"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["metrics"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &RemoteWriteConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        helper: &mut HelperSettings,
        context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: RemoteWriteConfig = typed(&path, config)?;
        let auth = context.client_auth(&path, c.auth.as_ref())?;
        let client = sluice_net::http_client(&c.tls)?;
        let headers = sluice_net::http_headers(&c.headers)?;
        // One queue consumer, so that samples stay in order; `remote_write_queue.num_consumers`
        // shards each batch across parallel requests instead.
        helper.queue.num_consumers = 1;
        Ok(BuiltExporter::Push(Arc::new(RemoteWriteExporter {
            id: id.to_owned(),
            client,
            endpoint: c.endpoint.clone(),
            headers,
            auth,
            options: c.options(),
            shards: c.remote_write_queue.num_consumers,
            max_request: c.max_batch_size_bytes.bytes() as usize,
            drops: metrics::counter!(sluice_core::metrics::PROMETHEUSREMOTEWRITE_DROPPED_METRIC_POINTS, "exporter" => id.to_owned()),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Label, Sample};

    fn series(name: &str, n: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: (0..n)
                .map(|i| Sample {
                    value: i as f64,
                    timestamp: i as i64,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_series_always_lands_in_the_same_shard() {
        let all: Vec<TimeSeries> = (0..100).map(|i| series(&format!("m{i}"), 1)).collect();
        let a = shard(all.clone(), 5);
        let b = shard(all, 5);
        assert_eq!(a, b);
        assert!(a.len() > 1);
        assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 100);
    }

    #[test]
    fn requests_stay_under_the_size_limit_and_keep_every_series() {
        let all: Vec<TimeSeries> = (0..50).map(|i| series(&format!("m{i}"), 20)).collect();
        let bodies = encode(all, vec![], 2048);
        assert!(bodies.len() > 1);
        let mut n = 0;
        for b in &bodies {
            assert!(b.len() <= 2048, "{}", b.len());
            n += WriteRequest::decode(b.clone()).unwrap().timeseries.len();
        }
        assert_eq!(n, 50);
    }

    #[test]
    fn reserved_headers_cannot_be_overridden() {
        let p = RemoteWriteExporterFactory.check(
            "exporters.prometheusremotewrite",
            &serde_json::json!({"endpoint": "http://p:9090/api/v1/write", "headers": {"Content-Type": "text/plain"}}),
        );
        assert_eq!(
            p[0].to_string(),
            "error: exporters.prometheusremotewrite.headers.Content-Type: is set by the remote-write protocol and cannot be overridden"
        );
    }
}
