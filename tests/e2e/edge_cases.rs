//! Raw requests at the edges of the protocol: JSON, gzip, malformed bodies, wrong content types,
//! oversize and decompression bombs, wrong methods, partial success; over HTTP and gRPC.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use sluice_net::RawCodec;

use crate::support::{Ports, Sink, Sluice, export_request, frame, h2_connect, hex, trace_request};

struct Fixture {
    sink: Sink,
    sluice: Sluice,
    client: reqwest::Client,
}

async fn fixture() -> Fixture {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n        max_recv_msg_size_mib: 1\n      http:\n        endpoint: 127.0.0.1:{}\n        max_request_body_size: 1MiB\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\nprocessors:\n  batch:\n    timeout: 20ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n{}",
        ports.grpc,
        ports.http,
        ports.health,
        sink.grpc_port,
        ports.telemetry()
    );
    Fixture {
        sink,
        sluice: Sluice::start(ports, &config),
        client: reqwest::Client::new(),
    }
}

impl Fixture {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.sluice.ports.http)
    }

    async fn post(
        &self,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String, Option<String>, Vec<u8>) {
        let mut r = self
            .client
            .post(self.url())
            .header("content-type", content_type);
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        let response = r.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let ct = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            status,
            ct,
            retry_after,
            response.bytes().await.unwrap().to_vec(),
        )
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_edge_cases_get_clear_answers() {
    let f = fixture().await;

    // OTLP/JSON with hex ids, an integer enum and a string int64; the response is JSON too.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-client"}}]},
        "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","spanId":"00f067aa0ba902b7",
        "name":"json-span","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000001000,
        "attributes":[{"key":"n","value":{"intValue":"42"}}],"unknownField":true}]}]}]}"#;
    let (status, ct, _, body) = f.post("application/json", None, json.into()).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({})
    );

    // gzip-compressed protobuf.
    let (status, ct, _, _) = f
        .post(
            "application/x-protobuf",
            Some("gzip"),
            gzip(&trace_request(3, "gz", 0).encode_to_vec()),
        )
        .await;
    assert_eq!((status, ct.as_str()), (200, "application/x-protobuf"));

    f.sink
        .wait_for(Duration::from_secs(10), "json and gzip spans", |r| {
            r.span_count() == 4
        })
        .await;
    let spans = f.sink.received.lock().unwrap().spans();
    let json_span = spans.iter().find(|s| s.name == "json-span").unwrap();
    assert_eq!(hex(&json_span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(json_span.kind, 2);
    assert_eq!(json_span.end_time_unix_nano, 1_700_000_000_000_001_000);

    // Malformed protobuf: 400 with a google.rpc.Status naming the problem.
    let (status, ct, retry, body) = f
        .post("application/x-protobuf", None, vec![0x0a, 0xff, 0x01, 0x02])
        .await;
    assert_eq!(
        (status, ct.as_str(), retry),
        (400, "application/x-protobuf", None)
    );
    let s = RpcStatus::decode(body.as_slice()).unwrap();
    assert_eq!(s.code, 3, "INVALID_ARGUMENT");
    assert!(
        s.message.contains("invalid traces request") && s.message.contains("exceeds"),
        "{}",
        s.message
    );

    // Malformed JSON: 400 with a JSON status naming the path.
    let (status, _, _, body) = f
        .post(
            "application/json",
            None,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"xyz"}]}]}]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("resourceSpans[0].scopeSpans[0].spans[0].spanId"),
        "{v}"
    );

    // Wrong content type: 415; unknown encoding: 400; wrong method: 405; unknown path: 404.
    assert_eq!(f.post("text/plain", None, b"hello".to_vec()).await.0, 415);
    assert_eq!(
        f.post("application/x-protobuf", Some("br"), vec![]).await.0,
        400
    );
    let get = f.client.get(f.url()).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let nowhere = f
        .client
        .post(f.url().replace("traces", "profiles"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);

    // Oversize: a body over 1 MiB gets 413, and so does a small gzip body that inflates past it.
    let big = trace_request(10, "big", 200 * 1024).encode_to_vec();
    assert_eq!(f.post("application/x-protobuf", None, big).await.0, 413);
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 256 << 10);
    let (status, _, _, body) = f.post("application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(status, 413);
    assert!(
        RpcStatus::decode(body.as_slice())
            .unwrap()
            .message
            .contains("limit")
    );

    // A span with a bad id is rejected alone: partial success, the others delivered.
    let mut req = trace_request(3, "partial", 0);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
    let (status, _, _, body) = f
        .post("application/x-protobuf", None, req.encode_to_vec())
        .await;
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("span_id must be 8 bytes, got 3"),
        "{}",
        partial.error_message
    );
    f.sink
        .wait_for(
            Duration::from_secs(10),
            "the two valid partial spans",
            |r| {
                r.spans()
                    .iter()
                    .filter(|s| s.name.starts_with("partial-"))
                    .count()
                    == 2
            },
        )
        .await;
    assert_eq!(
        f.sluice
            .metric("otelcol_receiver_failed_spans{receiver=\"otlp\",transport=\"http\"}")
            .await,
        1.0
    );
    assert!(f.sluice.logs().lines().all(|l| !l.contains("panicked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_edge_cases_get_the_right_status_codes() {
    let f = fixture().await;
    let endpoint = format!("http://127.0.0.1:{}", f.sluice.ports.grpc);
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Malformed protobuf: INVALID_ARGUMENT naming the problem.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let err = raw
        .unary::<Bytes, Bytes, _>(
            tonic::Request::new(Bytes::from_static(&[0x0a, 0x7f])),
            path.clone(),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("invalid traces request"),
        "{}",
        err.message()
    );

    // Over max_recv_msg_size_mib: RESOURCE_EXHAUSTED, and gzip is accepted.
    let mut client = TraceServiceClient::new(channel.clone())
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20);
    let err = client
        .export(trace_request(10, "huge", 200 * 1024))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        err.message()
    );
    let ok = client
        .export(trace_request(2, "grpc-gzip", 0))
        .await
        .unwrap();
    assert!(ok.get_ref().partial_success.is_none());

    // Partial success over gRPC.
    let mut req = trace_request(2, "grpc-partial", 0);
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![9; 5];
    let response = client.export(req).await.unwrap().into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);

    f.sink
        .wait_for(Duration::from_secs(10), "gzip and partial spans", |r| {
            r.span_count() == 3
        })
        .await;
}

/// `data` compressed as a client configured for `encoding` sends it.
fn compressed(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::bulk::compress(data, 3).unwrap(),
        // The block format, as Prometheus and the Collector's clients send it.
        "snappy" => snap::raw::Encoder::new().compress_vec(data).unwrap(),
        "x-snappy-framed" | "snappy-framed" => {
            let mut e = snap::write::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.into_inner().unwrap()
        }
        "lz4" => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("no encoder for {other}"),
    }
}

/// One unary gRPC call with a message compressed as `encoding` says: the `grpc-status` and
/// `grpc-message` it got, and the server's `grpc-accept-encoding`.
async fn grpc_call(port: u16, encoding: &str, payload: Vec<u8>) -> (String, String, String) {
    let mut client = h2_connect(port).await.ready().await.unwrap();
    let (response, mut stream) = client
        .send_request(export_request(port, Some(encoding)), false)
        .unwrap();
    // The server may answer before it reads the body (an encoding it refuses is answered from
    // the headers), closing the stream first: then sending fails, and the answer is what counts.
    let _ = stream.send_data(Bytes::from(frame(true, &payload)), true);
    let response = response.await.unwrap();
    let header = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let accept = header(response.headers(), "grpc-accept-encoding");
    let (parts, mut body) = response.into_parts();
    while let Some(chunk) = body.data().await {
        let _ = chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let status = |k: &str| {
        let from_trailers = header(&trailers, k);
        if from_trailers.is_empty() {
            header(&parts.headers, k)
        } else {
            from_trailers
        }
    };
    (status("grpc-status"), status("grpc-message"), accept)
}

/// Every compression the Collector's receivers accept is accepted (HTTP: gzip, deflate, zstd,
/// snappy block and framed, x-snappy-framed, lz4; gRPC: gzip, deflate, zstd, snappy), and a
/// small body that expands past the limit is refused for each, never expanded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_compression_the_collector_accepts_is_accepted_and_capped() {
    let f = fixture().await;
    let zeros = vec![0u8; 16 << 20];
    let http = [
        ("deflate", "deflate"),
        ("zstd", "zstd"),
        ("snappy", "snappy"),
        ("snappy-framed", "snappy"),
        ("x-snappy-framed", "x-snappy-framed"),
        ("lz4", "lz4"),
    ];
    for (i, (encoder, header)) in http.iter().enumerate() {
        let request = trace_request(2, &format!("http-{i}"), 0).encode_to_vec();
        let (status, _, _, body) = f
            .post(
                "application/x-protobuf",
                Some(header),
                compressed(encoder, &request),
            )
            .await;
        assert_eq!(status, 200, "{encoder}: {body:?}");
        let bomb = compressed(encoder, &zeros);
        assert!(bomb.len() < 1 << 20, "{encoder}: {} bytes", bomb.len());
        let (status, _, _, body) = f.post("application/x-protobuf", Some(header), bomb).await;
        assert_eq!(status, 413, "{encoder}");
        assert!(
            RpcStatus::decode(body.as_slice())
                .unwrap()
                .message
                .contains("limit"),
            "{encoder}"
        );
    }
    let (status, _, _, body) = f
        .post("application/x-protobuf", Some("br"), vec![1, 2, 3])
        .await;
    assert_eq!(status, 400, "an unknown encoding is bad data: {body:?}");

    for (i, encoding) in ["gzip", "deflate", "zstd", "snappy"].iter().enumerate() {
        let request = trace_request(2, &format!("grpc-{i}"), 0).encode_to_vec();
        let (status, message, accept) = grpc_call(
            f.sluice.ports.grpc,
            encoding,
            compressed(encoding, &request),
        )
        .await;
        assert_eq!(status, "0", "{encoding}: {message}");
        assert_eq!(accept, "gzip,deflate,zstd,snappy");
        let (status, message, _) =
            grpc_call(f.sluice.ports.grpc, encoding, compressed(encoding, &zeros)).await;
        assert_eq!(status, "8", "{encoding}: RESOURCE_EXHAUSTED, got {message}");
    }
    let (status, message, accept) = grpc_call(f.sluice.ports.grpc, "lz4", vec![1]).await;
    assert_eq!(
        status, "12",
        "lz4 is HTTP only: UNIMPLEMENTED, got {message}"
    );
    assert_eq!(accept, "gzip,deflate,zstd,snappy");

    f.sink
        .wait_for(Duration::from_secs(10), "every compressed request", |r| {
            r.span_count() == 2 * (http.len() + 4)
        })
        .await;
}
