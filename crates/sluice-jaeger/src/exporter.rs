//! The `jaeger` exporter: translate each batch and send it with `CollectorService/PostSpans`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{ByteSize, Problem};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterFactory, HelperSettings,
    check_typed, typed,
};
use sluice_net::{Compression, CompressionParams, Compressor, TlsClientConfig, UnaryClient};

use crate::proto::{self, POST_SPANS_PATH, PostSpansRequest};
use crate::translate;

/// `exporters.jaeger`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JaegerConfig {
    /// The Jaeger collector's gRPC endpoint, `host:port` (TLS unless `tls.insecure: true`) or a
    /// URL; Jaeger listens on 14250.
    pub endpoint: String,
    /// TLS settings (rustls).
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// gRPC metadata sent with every request, e.g. `authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `none` (default: Jaeger's collector is not known to accept compressed requests) or `gzip`
    /// (the one compression gRPC servers accept by default).
    #[serde(default = "no_compression")]
    pub compression: Compression,
    /// `level` for gzip, 1 to 9 (default 1).
    #[serde(default)]
    pub compression_params: CompressionParams,
    /// Largest `PostSpans` request sent; bigger batches are split (default `4MiB`, the gRPC
    /// default receive limit of Jaeger's collector).
    #[serde(default = "default_max_request")]
    pub max_request_size: ByteSize,
    /// `authenticator`: the extension whose credentials every request carries.
    #[serde(default)]
    pub auth: Option<sluice_core::auth::AuthSettings>,
}

fn no_compression() -> Compression {
    Compression::None
}

fn default_max_request() -> ByteSize {
    ByteSize::mib(4)
}

impl JaegerConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = self.tls.check(path);
        if matches!(self.compression, Compression::Zstd | Compression::Snappy) {
            p.push(Problem::error(
                format!("{path}.compression"),
                "Jaeger's collector accepts gzip only; use gzip or none",
            ));
        } else {
            p.extend(Compressor::check(
                self.compression,
                self.compression_params,
                path,
            ));
        }
        if self.endpoint.is_empty() {
            p.push(Problem::error(format!("{path}.endpoint"), "is required"));
        }
        if self.max_request_size.bytes() < 1024 {
            p.push(Problem::error(
                format!("{path}.max_request_size"),
                "must be at least 1KiB",
            ));
        }
        p
    }
}

/// Encodes Jaeger batches as `PostSpansRequest`s no larger than `max` bytes, splitting a batch's
/// spans in halves until each part fits. A single span larger than `max` is sent alone: the
/// collector may refuse it, which is reported as a permanent error for that request.
pub(crate) fn encode_requests(batches: Vec<proto::Batch>, max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pending = batches;
    while let Some(batch) = pending.pop() {
        let request = PostSpansRequest { batch: Some(batch) };
        if request.encoded_len() <= max
            || request.batch.as_ref().is_some_and(|b| b.spans.len() <= 1)
        {
            out.push(Bytes::from(request.encode_to_vec()));
            continue;
        }
        let Some(mut batch) = request.batch else {
            continue;
        };
        let tail = batch.spans.split_off(batch.spans.len() / 2);
        pending.push(proto::Batch {
            spans: tail,
            process: batch.process.clone(),
        });
        pending.push(batch);
    }
    out
}

struct JaegerExporter {
    client: UnaryClient,
    max_request: usize,
}

/// The encoded `PostSpansRequest`s, each at most `max` bytes, of an encoded OTLP trace request:
/// the exporter's whole encoding step.
///
/// One ResourceSpans is decoded, translated and encoded at a time, so the decoded and
/// translated forms of a batch (several times its encoded size) never all exist at once: a
/// batch of 8 resources needs an eighth of the transient memory of decoding it whole.
///
/// # Errors
/// A permanent [`ExportError`] when the request does not decode.
pub fn post_spans_requests(data: &[u8], max: usize) -> Result<Vec<Bytes>, ExportError> {
    let mut out = Vec::new();
    for message in sluice_core::wire::resource_messages(data) {
        let message =
            message.map_err(|e| ExportError::permanent(format!("cannot decode batch: {e}")))?;
        let resource_spans = ResourceSpans::decode(message)
            .map_err(|e| ExportError::permanent(format!("cannot decode batch: {e}")))?;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans],
        };
        out.extend(encode_requests(translate(&request), max));
    }
    Ok(out)
}

#[async_trait]
impl Exporter for JaegerExporter {
    /// The `PostSpans` requests of a batch, one per Jaeger batch, compressed when configured.
    type Encoded = Vec<sluice_net::Message>;

    fn encode(&self, batch: &Batch) -> Result<Vec<sluice_net::Message>, ExportError> {
        post_spans_requests(batch.data(), self.max_request)?
            .into_iter()
            .map(|request| self.client.prepare(request))
            .collect()
    }

    async fn send(&self, requests: &Vec<sluice_net::Message>) -> Result<(), ExportError> {
        // One call per Jaeger batch, as the Collector's exporter did. A retry resends every
        // request of the batch: delivery is at least once.
        for request in requests {
            self.client.call(request).await?;
        }
        Ok(())
    }
}

/// Builds `jaeger` exporters.
#[derive(Debug, Default)]
pub struct JaegerExporterFactory;

impl ExporterFactory for JaegerExporterFactory {
    fn type_name(&self) -> &'static str {
        "jaeger"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &JaegerConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: JaegerConfig = typed(&path, config)?;
        let auth = context.client_auth(&path, c.auth.as_ref())?;
        let channel = sluice_net::channel(&c.endpoint, &c.tls)?;
        let metadata = sluice_net::metadata(&c.headers)?;
        Ok(BuiltExporter::Push(Arc::new(JaegerExporter {
            client: UnaryClient::new(
                channel,
                POST_SPANS_PATH,
                metadata,
                Compressor::new(c.compression, c.compression_params).map_err(BuildError::Other)?,
            )
            .with_auth(auth),
            max_request: c.max_request_size.bytes() as usize,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u8) -> proto::Span {
        proto::Span {
            trace_id: vec![1; 16],
            span_id: vec![i; 8],
            operation_name: "x".repeat(100),
            ..Default::default()
        }
    }

    #[test]
    fn oversized_batches_are_split_until_every_request_fits() {
        let process = proto::Process {
            service_name: "svc".into(),
            tags: vec![],
        };
        let batch = proto::Batch {
            spans: (0..50).map(span).collect(),
            process: Some(process.clone()),
        };
        let requests = encode_requests(vec![batch], 1024);
        assert!(requests.len() > 1);
        let mut ids = Vec::new();
        for r in &requests {
            assert!(r.len() <= 1024);
            let decoded = PostSpansRequest::decode(r.clone()).unwrap().batch.unwrap();
            assert_eq!(
                decoded.process.as_ref(),
                Some(&process),
                "every part keeps its process"
            );
            ids.extend(decoded.spans.into_iter().map(|s| s.span_id[0]));
        }
        ids.sort();
        assert_eq!(ids, (0..50).collect::<Vec<u8>>(), "every span exactly once");
    }

    #[test]
    fn batches_are_translated_one_resource_at_a_time_with_the_same_result() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
        let resource_spans = |service: &str, spans: u8| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![i + 1; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("{service}-{i}"),
                        start_time_unix_nano: 1_000,
                        end_time_unix_nano: 2_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans("a", 2),
                resource_spans("empty", 0),
                resource_spans("b", 3),
            ],
        };
        let encoded = request.encode_to_vec();
        let mut streamed: Vec<PostSpansRequest> = post_spans_requests(&encoded, 1 << 20)
            .unwrap()
            .iter()
            .map(|b| PostSpansRequest::decode(&b[..]).unwrap())
            .collect();
        let mut whole: Vec<PostSpansRequest> = encode_requests(translate(&request), 1 << 20)
            .iter()
            .map(|b| PostSpansRequest::decode(&b[..]).unwrap())
            .collect();
        let service = |r: &PostSpansRequest| {
            r.batch
                .as_ref()
                .and_then(|b| b.process.as_ref())
                .map(|p| p.service_name.clone())
        };
        streamed.sort_by_key(service);
        whole.sort_by_key(service);
        assert_eq!(streamed.len(), 2, "one request per resource with spans");
        assert_eq!(streamed, whole);
        for cut in [1, 7, encoded.len() / 2, encoded.len() - 1] {
            let e = post_spans_requests(&encoded[..cut], 1 << 20).unwrap_err();
            assert!(!e.retryable && e.message.contains("cannot decode"), "{e:?}");
        }
    }

    #[test]
    fn a_single_span_too_large_is_sent_alone() {
        let mut big = span(1);
        big.operation_name = "y".repeat(5000);
        let requests = encode_requests(
            vec![proto::Batch {
                spans: vec![big],
                process: None,
            }],
            1024,
        );
        assert_eq!(requests.len(), 1);
    }

    #[test]
    fn config_defaults_and_problems() {
        let c: JaegerConfig =
            serde_json::from_value(serde_json::json!({"endpoint": "jaeger:14250"})).unwrap();
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.max_request_size.bytes(), 4 << 20);
        let p = JaegerExporterFactory.check(
            "exporters.jaeger",
            &serde_json::json!({"endpoint": "", "max_request_size": 10}),
        );
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"error: exporters.jaeger.endpoint: is required".to_owned()));
        assert!(text.contains(
            &"error: exporters.jaeger.max_request_size: must be at least 1KiB".to_owned()
        ));
    }
}
