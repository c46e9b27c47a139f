//! Jaeger's v2 remote storage API (`jaeger.storage.v2.TraceReader`, `DependencyReader`,
//! `Capabilities`), so a Jaeger v2 whose `jaeger_storage` backend is `grpc` pointing here shows
//! what sluice stored, in Jaeger UI, with no storage of its own.
//!
//! `GetTraces` and `FindTraces` stream `TracesData` chunks as the spec says: a chunk holds spans
//! of one trace only, a large trace continues over consecutive chunks, and no chunk is empty.
//! `FindTraceSummaries` answers UNIMPLEMENTED, which the spec allows.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use http::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use sluice_core::store::{Trace, TraceId, TraceQuery};
use sluice_net::RawCodec;
use tonic::Status;

use crate::extension::{Api, DEFAULT_LIMIT, Failure, kind_name, kind_of};
use crate::proto;

/// A chunk of `GetTraces` / `FindTraces` holds at most about this many bytes of spans (a
/// client's default message limit is 4 MiB).
const CHUNK_BYTES: usize = 1 << 20;

/// The gRPC service, over `api`.
#[derive(Clone)]
pub(crate) struct StorageService {
    pub(crate) api: Arc<Api>,
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Status {
        match failure {
            Failure::BadRequest(m) => Status::invalid_argument(m),
            Failure::NotFound(m) => Status::not_found(m),
            Failure::Unavailable(m) => Status::unavailable(m),
        }
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

fn decode<M: Message + Default>(bytes: &Bytes) -> Result<M, Status> {
    M::decode(bytes.clone())
        .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

/// Splits traces into chunks of one trace each, a large trace over consecutive chunks.
pub(crate) fn chunks(traces: Vec<(TraceId, Trace)>) -> Vec<Bytes> {
    let mut out = Vec::new();
    for (_, trace) in traces {
        let mut chunk: Vec<ResourceSpans> = Vec::new();
        let mut size = 0;
        for resource_spans in trace.resource_spans {
            for scope_spans in resource_spans.scope_spans {
                let mut part = ScopeSpans {
                    scope: scope_spans.scope.clone(),
                    spans: Vec::new(),
                    schema_url: scope_spans.schema_url.clone(),
                };
                for span in scope_spans.spans {
                    // With its field tag and length prefix.
                    let len =
                        span.encoded_len() + 1 + prost::length_delimiter_len(span.encoded_len());
                    if size > 0 && size + len > CHUNK_BYTES {
                        if !part.spans.is_empty() {
                            push(
                                &mut chunk,
                                &resource_spans.resource,
                                &resource_spans.schema_url,
                                std::mem::replace(
                                    &mut part,
                                    ScopeSpans {
                                        scope: scope_spans.scope.clone(),
                                        spans: Vec::new(),
                                        schema_url: scope_spans.schema_url.clone(),
                                    },
                                ),
                            );
                        }
                        out.push(encode(std::mem::take(&mut chunk)));
                        size = 0;
                    }
                    size += len;
                    part.spans.push(span);
                }
                if !part.spans.is_empty() {
                    push(
                        &mut chunk,
                        &resource_spans.resource,
                        &resource_spans.schema_url,
                        part,
                    );
                }
            }
        }
        if !chunk.is_empty() {
            out.push(encode(chunk));
        }
    }
    out
}

/// Adds `part` to `chunk` under its resource (the last one when it is the same).
fn push(
    chunk: &mut Vec<ResourceSpans>,
    resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>,
    schema_url: &str,
    part: ScopeSpans,
) {
    match chunk.last_mut() {
        Some(last) if last.resource == *resource && last.schema_url == schema_url => {
            last.scope_spans.push(part);
        }
        _ => chunk.push(ResourceSpans {
            resource: resource.clone(),
            scope_spans: vec![part],
            schema_url: schema_url.to_owned(),
        }),
    }
}

fn encode(resource_spans: Vec<ResourceSpans>) -> Bytes {
    Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

/// A search from `TraceQueryParameters`.
fn query(
    params: Option<proto::TraceQueryParameters>,
    max_limit: usize,
) -> Result<TraceQuery, Status> {
    let p = params.ok_or_else(|| Status::invalid_argument("query is required"))?;
    // A search that would be widened by ignoring part of it is refused: Capabilities declares
    // no structured-filter support, so Jaeger sends none, and anything else asking gets told.
    if !p.filter.is_empty() {
        return Err(Status::invalid_argument(
            "structured filters are not supported; use service_name, operation_name, attributes and durations",
        ));
    }
    if p.pagination
        .as_ref()
        .is_some_and(|page| page.page_size > 0 || !page.page_token.is_empty())
    {
        return Err(Status::invalid_argument(
            "pagination is not supported; use search_depth",
        ));
    }
    let (Some(min), Some(max)) = (p.start_time_min, p.start_time_max) else {
        return Err(Status::invalid_argument(
            "start_time_min and start_time_max are required",
        ));
    };
    let (start_min, start_max) = (
        proto::nanos(min.seconds, min.nanos),
        proto::nanos(max.seconds, max.nanos),
    );
    if start_min > start_max {
        return Err(Status::invalid_argument(
            "start_time_min is after start_time_max",
        ));
    }
    let depth = usize::try_from(p.search_depth).unwrap_or(0);
    Ok(TraceQuery {
        service: Some(p.service_name).filter(|s| !s.is_empty()),
        operation: Some(p.operation_name).filter(|s| !s.is_empty()),
        attributes: p
            .attributes
            .iter()
            .map(|kv| {
                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                (kv.key.clone(), sluice_core::anyvalue::to_string(value))
            })
            .collect(),
        status: None,
        text: None,
        min_duration: p
            .duration_min
            .map(|d| proto::nanos(d.seconds, d.nanos))
            .filter(|d| *d > 0),
        max_duration: p
            .duration_max
            .map(|d| proto::nanos(d.seconds, d.nanos))
            .filter(|d| *d > 0),
        start_min,
        start_max,
        limit: if depth == 0 { DEFAULT_LIMIT } else { depth }.min(max_limit),
    })
}

impl StorageService {
    async fn unary(&self, path: &str, body: Bytes) -> Result<Bytes, Status> {
        let api = &self.api;
        let answer = match path {
            proto::GET_SERVICES => {
                let services = api.read(|r| async move { r.services().await }).await?;
                proto::GetServicesResponse { services }.encode_to_vec()
            }
            proto::GET_OPERATIONS => {
                let request: proto::GetOperationsRequest = decode(&body)?;
                let kind = kind_of(Some(request.span_kind.as_str()).filter(|k| !k.is_empty()))?;
                let service = request.service;
                let ops = api
                    .read(|r| async move { r.operations(&service, kind).await })
                    .await?;
                proto::GetOperationsResponse {
                    operations: ops
                        .into_iter()
                        .map(|o| proto::Operation {
                            span_kind: kind_name(o.kind).to_owned(),
                            name: o.name,
                        })
                        .collect(),
                }
                .encode_to_vec()
            }
            proto::FIND_TRACE_IDS => {
                let request: proto::FindTracesRequest = decode(&body)?;
                let query = query(request.query, api.max_limit())?;
                let ids = api
                    .read(|r| async move { r.find_trace_ids(&query).await })
                    .await?;
                proto::FindTraceIdsResponse {
                    trace_ids: ids
                        .iter()
                        .map(|id| proto::FoundTraceId {
                            trace_id: id.to_vec(),
                            start: None,
                            end: None,
                        })
                        .collect(),
                    next_page_token: String::new(),
                }
                .encode_to_vec()
            }
            proto::GET_DEPENDENCIES => {
                let request: proto::GetDependenciesRequest = decode(&body)?;
                let start = request
                    .start_time
                    .map_or(0, |t| proto::nanos(t.seconds, t.nanos));
                let end = request
                    .end_time
                    .map_or(u64::MAX, |t| proto::nanos(t.seconds, t.nanos));
                let deps = api
                    .read(|r| async move { r.dependencies(start, end).await })
                    .await?;
                proto::GetDependenciesResponse {
                    dependencies: deps
                        .into_iter()
                        .map(|d| proto::Dependency {
                            parent: d.parent,
                            child: d.child,
                            call_count: d.call_count,
                            source: String::new(),
                        })
                        .collect(),
                }
                .encode_to_vec()
            }
            proto::GET_CAPABILITIES => proto::GetCapabilitiesResponse {
                search: Some(proto::SearchCapabilities {
                    // Both stores search any service, and match every condition in one span.
                    without_service_name: true,
                    same_span_conjunction: true,
                }),
            }
            .encode_to_vec(),
            _ => return Err(Status::unimplemented(format!("{path} is not served here"))),
        };
        Ok(Bytes::from(answer))
    }

    async fn streaming(&self, path: &str, body: Bytes) -> Result<Chunks, Status> {
        let api = &self.api;
        let traces = match path {
            proto::GET_TRACES => {
                let request: proto::GetTracesRequest = decode(&body)?;
                let mut out = Vec::new();
                for params in request.query {
                    let id = TraceId::try_from(params.trace_id.as_slice())
                        .map_err(|_| Status::invalid_argument("a trace_id is not 16 bytes"))?;
                    let range = match (params.start_time, params.end_time) {
                        (None, None) => None,
                        (s, e) => Some((
                            s.map_or(0, |t| proto::nanos(t.seconds, t.nanos)),
                            e.map_or(u64::MAX, |t| proto::nanos(t.seconds, t.nanos)),
                        )),
                    };
                    out.extend(
                        api.read(|r| async move { r.traces(&[id], range).await })
                            .await?,
                    );
                }
                out
            }
            proto::FIND_TRACES => {
                let request: proto::FindTracesRequest = decode(&body)?;
                let query = query(request.query, api.max_limit())?;
                api.read(|r| async move {
                    let ids = r.find_trace_ids(&query).await?;
                    r.traces(&ids, None).await
                })
                .await?
            }
            _ => return Err(Status::unimplemented(format!("{path} is not served here"))),
        };
        let chunks: Vec<Result<Bytes, Status>> = chunks(traces).into_iter().map(Ok).collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

impl tower::Service<Request<hyper::body::Incoming>> for StorageService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            let response = if path == proto::GET_TRACES || path == proto::FIND_TRACES {
                let service = tower::service_fn(move |r: tonic::Request<Bytes>| {
                    let (this, path) = (this.clone(), path.clone());
                    async move {
                        this.streaming(&path, r.into_inner())
                            .await
                            .map(tonic::Response::new)
                    }
                });
                grpc.server_streaming(service, request).await
            } else {
                let service = tower::service_fn(move |r: tonic::Request<Bytes>| {
                    let (this, path) = (this.clone(), path.clone());
                    async move {
                        this.unary(&path, r.into_inner())
                            .await
                            .map(tonic::Response::new)
                    }
                });
                grpc.unary(service, request).await
            };
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn trace(id: u8, spans: usize, pad: usize) -> (TraceId, Trace) {
        (
            [id; 16],
            Trace {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: (0..spans)
                            .map(|i| Span {
                                trace_id: vec![id; 16],
                                span_id: (i as u64).to_be_bytes().to_vec(),
                                name: "x".repeat(pad),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
        )
    }

    #[test]
    fn chunks_hold_one_trace_each_never_empty_and_a_large_trace_continues_in_order() {
        let chunks = chunks(vec![trace(1, 10_000, 300), trace(2, 3, 1), trace(3, 0, 0)]);
        let decoded: Vec<ExportTraceServiceRequest> = chunks
            .iter()
            .map(|c| {
                assert!(c.len() <= CHUNK_BYTES + 1024, "{}", c.len());
                ExportTraceServiceRequest::decode(c.clone()).unwrap()
            })
            .collect();
        assert!(decoded.len() > 2, "the large trace is split");
        let mut seen: Vec<(u8, u64)> = Vec::new();
        for chunk in &decoded {
            let spans: Vec<&Span> = chunk
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .collect();
            assert!(!spans.is_empty());
            let first = spans[0].trace_id[0];
            assert!(
                spans.iter().all(|s| s.trace_id[0] == first),
                "one trace per chunk"
            );
            seen.extend(spans.iter().map(|s| {
                (
                    first,
                    u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap()),
                )
            }));
        }
        let want: Vec<(u8, u64)> = (0..10_000)
            .map(|i| (1, i))
            .chain((0..3).map(|i| (2, i)))
            .collect();
        assert_eq!(seen, want, "every span once, in order, chunks consecutive");
    }

    #[test]
    fn searches_it_cannot_honour_whole_are_refused_not_widened() {
        let window = proto::TraceQueryParameters {
            start_time_min: Some(proto::timestamp(1)),
            start_time_max: Some(proto::timestamp(2)),
            ..Default::default()
        };
        assert!(query(Some(window.clone()), 100).is_ok());
        for (asked, needle) in [
            (
                proto::TraceQueryParameters {
                    filter: vec![0x0a, 0x02, 0x65, 0x71],
                    ..window.clone()
                },
                "structured filters",
            ),
            (
                proto::TraceQueryParameters {
                    pagination: Some(proto::Pagination {
                        page_size: 10,
                        page_token: String::new(),
                    }),
                    ..window.clone()
                },
                "pagination",
            ),
            (
                proto::TraceQueryParameters {
                    start_time_min: None,
                    ..window.clone()
                },
                "start_time_min",
            ),
        ] {
            let status = query(Some(asked), 100).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(needle), "{status:?}");
        }
    }
}
