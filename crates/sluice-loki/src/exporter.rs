//! The `loki` exporter: translate each batch into streams, pack them into push requests of at
//! most `max_request_size`, and POST them to `/loki/api/v1/push`, one tenant per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{ByteSize, Problem};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterFactory, HelperSettings,
    check_typed, typed,
};
use sluice_net::TlsClientConfig;

use crate::translate::{DefaultLabels, Stream, translate_encoded};

/// Headers the push protocol sets; configuration may not override them.
const RESERVED_HEADERS: [&str; 2] = ["content-encoding", "content-type"];

/// The header that names a Loki tenant.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// `exporters.loki`, in the shape of the Collector's Loki exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// The push URL, e.g. `http://loki:3100/loki/api/v1/push`.
    pub endpoint: String,
    /// Extra headers (e.g. `authorization`, or a static `X-Scope-OrgID`; a `loki.tenant` hint
    /// overrides the latter for the records it names a tenant for).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Turns default labels off (`exporter`, `job`, `instance`, `level`; all on by default).
    #[serde(default)]
    pub default_labels_enabled: DefaultLabels,
    /// `protobuf` (default: `logproto.PushRequest`, Snappy-compressed, as the Collector sent) or
    /// `json` (Loki's JSON push body, for proxies that inspect it). Sluice's own key.
    #[serde(default)]
    pub encoding: Encoding,
    /// Largest push body before compression (default `4MiB`, under Loki's default ingestion burst
    /// of 6MB, which refuses a larger push however long it waits); larger batches are sent as
    /// several requests, a stream split across them when needed. Sluice's own key.
    #[serde(default = "default_max_request")]
    pub max_request_size: ByteSize,
    /// TLS: `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// `authenticator`: the extension whose credentials every request carries
    /// (`bearertokenauth`, `basicauth` with `client_auth`).
    #[serde(default)]
    pub auth: Option<sluice_core::auth::AuthSettings>,
}

/// How push bodies are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `logproto.PushRequest`, Snappy block-compressed, `application/x-protobuf`.
    #[default]
    Protobuf,
    /// `{"streams":[{"stream":{…},"values":[["<ns>","<line>"]]}]}`, `application/json`.
    Json,
}

fn default_max_request() -> ByteSize {
    ByteSize::mib(4)
}

impl LokiConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            p.push(Problem::error(
                format!("{path}.endpoint"),
                "must be a URL starting with http:// or https:// (Loki's push URL, e.g. http://loki:3100/loki/api/v1/push)",
            ));
        }
        for name in self.headers.keys() {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                p.push(Problem::error(
                    format!("{path}.headers.{name}"),
                    "is set by the push protocol and cannot be overridden",
                ));
            }
        }
        if self.max_request_size.bytes() < 1024 {
            p.push(Problem::error(
                format!("{path}.max_request_size"),
                "must be at least 1KiB",
            ));
        }
        p.extend(self.tls.check(path));
        p
    }
}

/// One push request: its tenant (if a hint named one) and its body, compressed as sent.
#[derive(Debug, Clone)]
pub struct PushBody {
    /// `X-Scope-OrgID` for this request; `None` leaves the configured headers to decide.
    pub tenant: Option<String>,
    /// The body as sent.
    pub body: Bytes,
}

/// What the exporter sends for one batch.
#[derive(Debug)]
pub struct PushRequests {
    /// In order: per tenant, requests of at most the configured size before compression.
    pub requests: Vec<PushBody>,
    /// Records left without any label, which Loki cannot store (not sent).
    pub missing_labels: usize,
}

/// The push requests for an encoded OTLP logs request: the exporter's whole encoding step
/// (translation, packing, encoding, compression), done once per batch, not again for each retry.
///
/// # Errors
/// A permanent [`ExportError`] when the request does not decode or a body cannot be compressed.
pub fn push_requests(
    data: &[u8],
    defaults: DefaultLabels,
    encoding: Encoding,
    max: usize,
    now_ns: i64,
) -> Result<PushRequests, ExportError> {
    let t = translate_encoded(data, defaults, now_ns)
        .map_err(|e| ExportError::permanent(format!("cannot decode batch: {e}")))?;
    let mut requests = Vec::new();
    let mut snappy = snap::raw::Encoder::new();
    for tenant in t.tenants {
        let selectors: Vec<String> = tenant.streams.iter().map(Stream::selector).collect();
        let body = |parts: &[Part]| -> Result<Bytes, ExportError> {
            match encoding {
                Encoding::Protobuf => snappy
                    .compress_vec(&protobuf(&tenant.streams, &selectors, parts))
                    .map(Bytes::from)
                    .map_err(|e| ExportError::permanent(format!("snappy compression failed: {e}"))),
                Encoding::Json => Ok(Bytes::from(json(&tenant.streams, parts))),
            }
        };
        let mut body = body;
        for parts in pack(&tenant.streams, &selectors, max) {
            requests.push(PushBody {
                tenant: tenant.tenant.clone(),
                body: body(&parts)?,
            });
        }
    }
    Ok(PushRequests {
        requests,
        missing_labels: t.missing_labels,
    })
}

/// Entries `range` of stream `stream`, as one part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    stream: usize,
    range: std::ops::Range<usize>,
}

/// Most bytes the protobuf framing adds to an entry beyond its line (entry, timestamp and line
/// tags and lengths, a timestamp's two varints), so that a request packed by this bound never
/// exceeds its limit once encoded.
const ENTRY_OVERHEAD: usize = 40;
/// The same for a stream beyond its selector.
const STREAM_OVERHEAD: usize = 24;

/// Splits streams into requests of at most `max` bytes (by an upper bound on their encoded size,
/// which also bounds the JSON form: its escapes aside, JSON adds less per entry than this),
/// keeping each stream's entries in order. A single entry larger than `max` goes alone.
pub(crate) fn pack(streams: &[Stream], selectors: &[String], max: usize) -> Vec<Vec<Part>> {
    let mut requests = Vec::new();
    let mut current: Vec<Part> = Vec::new();
    let mut size = 0;
    for (index, stream) in streams.iter().enumerate() {
        let header = selectors[index].len() + STREAM_OVERHEAD;
        let mut start = 0;
        let mut open = false;
        for (i, (_, line)) in stream.entries.iter().enumerate() {
            let cost = line.len() + ENTRY_OVERHEAD + if open { 0 } else { header };
            if size > 0 && size + cost > max {
                if open {
                    current.push(Part {
                        stream: index,
                        range: start..i,
                    });
                }
                requests.push(std::mem::take(&mut current));
                size = 0;
                start = i;
                open = false;
            }
            size += line.len() + ENTRY_OVERHEAD + if open { 0 } else { header };
            open = true;
        }
        if open {
            current.push(Part {
                stream: index,
                range: start..stream.entries.len(),
            });
        }
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

/// A `logproto.PushRequest` of these parts, encoded straight from the streams (the lines are
/// written once, not copied into messages first).
fn protobuf(streams: &[Stream], selectors: &[String], parts: &[Part]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, int32, int64};
    let string_field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let timestamp = |ns: i64| {
        // `nanos` is always within 0..1e9, so it fits.
        (
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as i32,
        )
    };
    let timestamp_len = |(seconds, nanos): (i64, i32)| {
        (if seconds != 0 {
            int64::encoded_len(1, &seconds)
        } else {
            0
        }) + if nanos != 0 {
            int32::encoded_len(2, &nanos)
        } else {
            0
        }
    };
    let entry_len = |ns: i64, line: &str| {
        let t = timestamp_len(timestamp(ns));
        1 + encoded_len_varint(t as u64)
            + t
            + if line.is_empty() {
                0
            } else {
                string_field(line.len())
            }
    };
    let stream_len = |part: &Part| {
        string_field(selectors[part.stream].len())
            + streams[part.stream].entries[part.range.clone()]
                .iter()
                .map(|(ns, line)| {
                    let len = entry_len(*ns, line);
                    1 + encoded_len_varint(len as u64) + len
                })
                .sum::<usize>()
    };
    let lengths: Vec<usize> = parts.iter().map(stream_len).collect();
    let total: usize = lengths
        .iter()
        .map(|len| 1 + encoded_len_varint(*len as u64) + len)
        .sum();
    let mut out = Vec::with_capacity(total);
    for (part, stream_len) in parts.iter().zip(lengths) {
        let selector = &selectors[part.stream];
        let entries = &streams[part.stream].entries[part.range.clone()];
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(stream_len as u64, &mut out);
        prost::encoding::string::encode(1, selector, &mut out);
        for (ns, line) in entries {
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(entry_len(*ns, line) as u64, &mut out);
            let (seconds, nanos) = timestamp(*ns);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(timestamp_len((seconds, nanos)) as u64, &mut out);
            if seconds != 0 {
                int64::encode(1, &seconds, &mut out);
            }
            if nanos != 0 {
                int32::encode(2, &nanos, &mut out);
            }
            if !line.is_empty() {
                prost::encoding::string::encode(2, line, &mut out);
            }
        }
    }
    out
}

fn json(streams: &[Stream], parts: &[Part]) -> String {
    use sluice_core::anyvalue::write_json_string;
    let mut out = String::from("{\"streams\":[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let stream = &streams[part.stream];
        out.push_str("{\"stream\":{");
        for (j, (name, value)) in stream.labels.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_json_string(&mut out, name, false);
            out.push(':');
            write_json_string(&mut out, value, false);
        }
        out.push_str("},\"values\":[");
        for (j, (ns, line)) in stream.entries[part.range.clone()].iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("[\"");
            out.push_str(&ns.to_string());
            out.push_str("\",");
            write_json_string(&mut out, line, false);
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

struct LokiExporter {
    id: String,
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    auth: Option<Arc<dyn sluice_core::auth::ClientAuthenticator>>,
    defaults: DefaultLabels,
    encoding: Encoding,
    max_request: usize,
    missing_labels: metrics::Counter,
}

impl LokiExporter {
    async fn post(&self, request: &PushBody) -> Result<(), ExportError> {
        let mut builder = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone());
        builder = match self.encoding {
            Encoding::Protobuf => {
                builder.header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            }
            Encoding::Json => builder.header(reqwest::header::CONTENT_TYPE, "application/json"),
        };
        if let Some(tenant) = &request.tenant {
            builder = builder.header(TENANT_HEADER, tenant);
        }
        let builder = sluice_net::authorize(builder, self.auth.as_ref());
        let answer = sluice_net::send(builder.body(request.body.clone()), &self.endpoint).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        // Loki answers 429 when a tenant is over its ingestion rate (retry, honouring
        // Retry-After) and 5xx when a distributor or ingester fails (retry); any other 4xx is
        // about the data itself (out of order, too old, line too long, bad labels) and will not
        // change on a retry.
        let retryable = answer.status.is_server_error() || answer.status.as_u16() == 429;
        Err(answer.error(&self.endpoint, None, retryable))
    }
}

#[async_trait]
impl Exporter for LokiExporter {
    /// The push requests of a batch, in order.
    type Encoded = Vec<PushBody>;

    fn encode(&self, batch: &Batch) -> Result<Vec<PushBody>, ExportError> {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let PushRequests {
            requests,
            missing_labels,
        } = push_requests(
            batch.data(),
            self.defaults,
            self.encoding,
            self.max_request,
            now_ns,
        )?;
        if missing_labels > 0 {
            // Counted here, once per batch, however many times the batch is retried.
            self.missing_labels.increment(missing_labels as u64);
            tracing::warn!(
                exporter = %self.id,
                records = missing_labels,
                "log records without any label are not sent: Loki cannot store them (enable a default label or add a hint)"
            );
        }
        Ok(requests)
    }

    async fn send(&self, requests: &Vec<PushBody>) -> Result<(), ExportError> {
        // In order, one at a time: entries of a stream stay in time order across requests. A
        // retry resends every request of the batch; Loki ignores an entry it already has (same
        // stream, timestamp and line), so delivery is at least once without duplicates.
        for request in requests {
            self.post(request).await?;
        }
        Ok(())
    }
}

/// Builds `loki` exporters.
#[derive(Debug, Default)]
pub struct LokiExporterFactory;

impl ExporterFactory for LokiExporterFactory {
    fn type_name(&self) -> &'static str {
        "loki"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &LokiConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: LokiConfig = typed(&path, config)?;
        let auth = context.client_auth(&path, c.auth.as_ref())?;
        Ok(BuiltExporter::Push(Arc::new(LokiExporter {
            id: id.to_owned(),
            client: sluice_net::http_client(&c.tls)?,
            endpoint: c.endpoint.clone(),
            headers: sluice_net::http_headers(&c.headers)?,
            auth,
            defaults: c.default_labels_enabled,
            encoding: c.encoding,
            max_request: c.max_request_size.bytes() as usize,
            missing_labels: metrics::counter!(
                sluice_core::metrics::LOKI_MISSING_LABELS,
                "exporter" => id.to_owned()
            ),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
    use proptest::prelude::*;
    use prost::Message;

    fn stream(name: &str, lines: &[usize]) -> Stream {
        Stream {
            labels: vec![("job".to_owned(), name.to_owned())],
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, len)| (i as i64 * 700_000_001 - 1_000_000_000, "x".repeat(*len)))
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn packed_requests_stay_under_the_limit_and_keep_every_entry_in_order(
            shape in proptest::collection::vec(proptest::collection::vec(0usize..700, 0..40), 1..6),
            max in 1024usize..8192,
        ) {
            let streams: Vec<Stream> = shape
                .iter()
                .enumerate()
                .map(|(i, lines)| stream(&format!("s{i}"), lines))
                .collect();
            let selectors: Vec<String> = streams.iter().map(Stream::selector).collect();
            let requests = pack(&streams, &selectors, max);
            let mut seen: Vec<Vec<(i64, String)>> = vec![Vec::new(); streams.len()];
            for parts in &requests {
                prop_assert!(!parts.is_empty());
                let encoded = protobuf(&streams, &selectors, parts);
                prop_assert_eq!(
                    PushRequest::decode(&encoded[..]).unwrap(),
                    PushRequest {
                        streams: parts
                            .iter()
                            .map(|part| StreamAdapter {
                                labels: selectors[part.stream].clone(),
                                entries: streams[part.stream].entries[part.range.clone()]
                                    .iter()
                                    .map(|(ns, line)| EntryAdapter {
                                        timestamp: Some(Timestamp {
                                            seconds: ns.div_euclid(1_000_000_000),
                                            nanos: ns.rem_euclid(1_000_000_000) as i32,
                                        }),
                                        line: line.clone(),
                                        ..Default::default()
                                    })
                                    .collect(),
                                hash: 0,
                            })
                            .collect(),
                        format: String::new(),
                    }
                );
                let single = parts.len() == 1 && parts[0].range.len() == 1;
                prop_assert!(encoded.len() <= max || single, "{} > {max}", encoded.len());
                prop_assert!(json(&streams, parts).len() <= max || single);
                for part in parts {
                    seen[part.stream].extend(streams[part.stream].entries[part.range.clone()].iter().cloned());
                }
            }
            for (i, s) in streams.iter().enumerate() {
                prop_assert_eq!(&seen[i], &s.entries);
            }
        }
    }

    #[test]
    fn an_entry_larger_than_the_limit_goes_alone() {
        let streams = vec![stream("a", &[10, 5000, 10])];
        let selectors: Vec<String> = streams.iter().map(Stream::selector).collect();
        let requests = pack(&streams, &selectors, 1024);
        let ranges: Vec<Vec<(usize, usize)>> = requests
            .iter()
            .map(|parts| parts.iter().map(|p| (p.range.start, p.range.end)).collect())
            .collect();
        assert_eq!(ranges, [[(0, 1)], [(1, 2)], [(2, 3)]]);
    }

    #[test]
    fn json_bodies_are_lokis_push_shape() {
        let streams = vec![Stream {
            labels: vec![
                ("job".to_owned(), "api".to_owned()),
                ("level".to_owned(), "INFO".to_owned()),
            ],
            entries: vec![(1_700_000_000_000_000_001, "line \"one\"".to_owned())],
        }];
        let body = json(
            &streams,
            &[Part {
                stream: 0,
                range: 0..1,
            }],
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"streams": [{"stream": {"job": "api", "level": "INFO"}, "values": [["1700000000000000001", "line \"one\""]]}]})
        );
    }

    #[test]
    fn the_config_is_checked() {
        let check = |config: serde_json::Value| -> Vec<String> {
            LokiExporterFactory
                .check("exporters.loki", &config)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(
            check(serde_json::json!({"endpoint": "http://loki:3100/loki/api/v1/push"})).is_empty()
        );
        assert_eq!(
            check(
                serde_json::json!({"endpoint": "loki:3100", "headers": {"Content-Type": "text/plain"}})
            ),
            [
                "error: exporters.loki.endpoint: must be a URL starting with http:// or https:// (Loki's push URL, e.g. http://loki:3100/loki/api/v1/push)",
                "error: exporters.loki.headers.Content-Type: is set by the push protocol and cannot be overridden",
            ]
        );
        let unknown = check(
            serde_json::json!({"endpoint": "http://l/", "default_labels_enabled": {"host": false}}),
        );
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].contains("unknown field `host`"), "{unknown:?}");
        let encoding = check(serde_json::json!({"endpoint": "http://l/", "encoding": "avro"}));
        assert!(
            encoding[0].contains("unknown variant `avro`"),
            "{encoding:?}"
        );
    }
}
