//! Clients that are hostile, or careless: a 200 must mean the data is kept, and no client may make
//! sluice drop another client's data, break its memory bound, or hold its connections forever.
//! Each case is a raw request against the real binary (HTTP/1 by hand, HTTP/2 through `h2`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use prost::Message;
use sluice_net::RpcStatus;

use crate::support::{
    Ports, Sink, Sluice, export_request, frame, h2_connect, rss_kib, string, trace_request,
};

/// The reporter's smallest reproducer: one span named `\xffbad` (not UTF-8).
const BAD_NAME: &str =
    "0a26122412220a104bf92f3577b34da6a3ce929d0e0e4736120800f067aa0ba902b72a04ff626164";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A config with the given receiver settings under `grpc:` and `http:`, a memory limiter of
/// `limit_mib`, a batch processor, and the sink plus a decoding `debug` exporter.
fn config(ports: &Ports, sink: u16, grpc: &str, http: &str, limit_mib: u64) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
{grpc}
      http:
        endpoint: 127.0.0.1:{http_port}
{http}
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
processors:
  memory_limiter:
    check_interval: 50ms
    limit_mib: {limit_mib}
  batch:
    timeout: 200ms
exporters:
  debug:
    verbosity: normal
  otlp:
    endpoint: http://127.0.0.1:{sink}
    retry_on_failure: {{initial_interval: 100ms}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [debug, otlp]}}
{telemetry}",
        grpc_port = ports.grpc,
        http_port = ports.http,
        health = ports.health,
        telemetry = ports.telemetry(),
    )
}

async fn post(port: u16, body: Vec<u8>, content_type: &str) -> (u16, Vec<u8>, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.bytes().await.unwrap().to_vec(), retry)
}

/// What a raw gRPC call got back.
#[derive(Debug)]
struct GrpcOutcome {
    status: i32,
    message: String,
    details: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts a call whose message prefix declares `declared` bytes, sends `sent` of them and
/// leaves the stream open.
async fn stall_call(
    client: &h2::client::SendRequest<Bytes>,
    port: u16,
    declared: u32,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut stream) = client
        .send_request(export_request(port, None), false)
        .unwrap();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(declared);
    body.put_slice(&vec![0x0a; sent]);
    let _ = stream.send_data(body.freeze(), false);
    (response, stream)
}

/// One unary call with `body` as the raw request stream.
async fn grpc_call(port: u16, encoding: Option<&str>, body: Vec<u8>) -> GrpcOutcome {
    let client = h2_connect(port).await;
    let mut client = client.ready().await.unwrap();
    let (response, mut stream) = client
        .send_request(export_request(port, encoding), false)
        .unwrap();
    stream.send_data(Bytes::from(body), true).unwrap();
    let response = response.await.unwrap();
    let mut headers = response.headers().clone();
    let mut recv = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    if let Ok(Some(trailers)) = recv.trailers().await {
        headers.extend(trailers);
    }
    let text = |k: &str| headers.get(k).map(|v| v.to_str().unwrap().to_owned());
    GrpcOutcome {
        status: text("grpc-status").map_or(-1, |s| s.parse().unwrap()),
        message: percent_decode(&text("grpc-message").unwrap_or_default()),
        details: text("grpc-status-details-bin").map(|d| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d.trim_end_matches('='))
                .unwrap()
        }),
        body: data,
    }
}

/// A length-delimited protobuf field.
fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn names_at_sink(sink: &Sink) -> Vec<String> {
    sink.received
        .lock()
        .unwrap()
        .spans()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_span_is_refused_and_other_clients_spans_are_kept() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));

    // Another client's valid span, then the reporter's span named `\xffbad`: that one is
    // refused as invalid (nothing of it is left), the first is kept.
    let good = trace_request(1, "good", 0).encode_to_vec();
    let (status, _, _) = post(ports.http, good, "application/x-protobuf").await;
    assert_eq!(status, 200);
    let (status, body, retry) = post(ports.http, unhex(BAD_NAME), "application/x-protobuf").await;
    let s = RpcStatus::decode(body.as_slice()).unwrap();
    assert_eq!((status, s.code, retry), (400, 3, None), "{}", s.message);
    assert!(
        s.message
            .contains("spans[0].name: string is not valid UTF-8"),
        "{}",
        s.message
    );

    // One gRPC request mixing a valid span with four that no decoder would take: a partial
    // success naming the first, and the valid span delivered.
    let mut deep = AnyValue {
        value: Some(string("leaf")),
    };
    for _ in 0..60 {
        deep = AnyValue {
            value: Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::ArrayValue(ArrayValue {
                    values: vec![deep],
                }),
            ),
        };
    }
    let mut request = trace_request(5, "mixed", 0);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes = vec![KeyValue {
        key: "deep".into(),
        value: Some(deep),
        ..Default::default()
    }];
    spans[3].trace_id = vec![0; 16];
    spans[4].span_id = vec![];
    // Span 2 gets a string field (trace_state, 3) sent as a varint, and an attribute whose value
    // runs past its message; spliced in by hand, as no encoder would write them.
    let mut broken = spans[2].encode_to_vec();
    broken.extend_from_slice(&[0x18, 0x01]);
    broken.extend_from_slice(&[0x4a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x09, 0x0a]);
    let encoded: Vec<Vec<u8>> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 2 {
                broken.clone()
            } else {
                s.encode_to_vec()
            }
        })
        .collect();
    let bytes = len_field(
        1,
        &len_field(
            2,
            &encoded
                .iter()
                .flat_map(|s| len_field(2, s))
                .collect::<Vec<u8>>(),
        ),
    );
    assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
    let outcome = grpc_call(ports.grpc, None, frame(false, &bytes)).await;
    assert_eq!(outcome.status, 0, "{outcome:?}");
    let response = ExportTraceServiceResponse::decode(&outcome.body[5..]).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 4, "{}", partial.error_message);
    assert!(
        partial
            .error_message
            .contains("nested deeper than the 100 levels"),
        "{}",
        partial.error_message
    );

    // OTLP/JSON: an all-zero trace id is invalid; nothing is left, so 400 naming it.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00000000000000000000000000000000","spanId":"00f067aa0ba902b7","name":"zero"}]}]}]}"#;
    let (status, body, _) = post(ports.http, json.as_bytes().to_vec(), "application/json").await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("trace_id is required and must not be empty or all zeros"),
        "{body}"
    );

    sink.wait_for(Duration::from_secs(10), "the valid spans", |r| {
        let names: Vec<String> = r.spans().into_iter().map(|s| s.name).collect();
        names.contains(&"good-0".to_owned()) && names.contains(&"mixed-0".to_owned())
    })
    .await;
    let names = names_at_sink(&sink);
    assert_eq!(names.len(), 2, "{names:?}");
    let logs = sluice.logs();
    assert!(!logs.contains("cannot decode"), "{logs}");
    assert!(
        logs.contains("good-0") && logs.contains("mixed-0"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reads_every_gzip_member_and_refuses_a_second_message() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let _sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));

    // Two gzip members, each a whole request: valid gzip, and the two requests concatenated
    // are one request with both spans.
    let mut members = gzip(&trace_request(1, "member-one", 0).encode_to_vec());
    members.extend(gzip(&trace_request(1, "member-two", 0).encode_to_vec()));
    let outcome = grpc_call(ports.grpc, Some("gzip"), frame(true, &members)).await;
    assert_eq!(outcome.status, 0, "{outcome:?}");

    // A unary call carrying two messages is refused whole.
    let mut two = frame(false, &trace_request(1, "second-a", 0).encode_to_vec());
    two.extend(frame(
        false,
        &trace_request(1, "second-b", 0).encode_to_vec(),
    ));
    let outcome = grpc_call(ports.grpc, None, two).await;
    assert_eq!(outcome.status, 3, "{outcome:?}");
    assert!(outcome.message.contains("one message"), "{outcome:?}");

    sink.wait_for(Duration::from_secs(10), "both gzip members", |r| {
        r.spans().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut names = names_at_sink(&sink);
    names.sort();
    assert_eq!(names, ["member-one-0", "member-two-0"]);
}

/// Peak resident memory of the process so far, in MiB.
fn peak_rss_mib(sluice: &Sluice) -> u64 {
    rss_kib(sluice.pid(), "VmHWM:") / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_uploads_count_against_the_budget_and_time_out() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let grpc = "        read_timeout: 3s\n        max_recv_msg_size_mib: 8";
    let http = "        read_timeout: 3s";
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, grpc, http, 200));
    let in_flight = "sluice_memory_limiter_in_flight_bytes{processor=\"memory_limiter\"}";

    // Twenty HTTP uploads declare 10 MiB, send 9 MiB and stall. An upload that is never
    // answered reads nothing within its 15 s read timeout, and the count below fails.
    let uploads: Vec<_> = (0..20)
        .map(|_| {
            let port = ports.http;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                write!(
                    s,
                    "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                    10 << 20
                )
                .unwrap();
                // Written in pieces; a refused upload may be answered and closed mid-way.
                let chunk = vec![0x0a; 64 << 10];
                for _ in 0..(9 << 20) / chunk.len() {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    // Thirty gRPC calls on three connections declare 4 MB, send 3.8 MB and stall.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let client = h2_connect(ports.grpc).await;
        for _ in 0..10 {
            let (response, stream) = stall_call(&client, ports.grpc, 4_000_000, 3_800_000).await;
            calls.push(tokio::spawn(async move {
                let response = response.await;
                drop(stream);
                match response {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    Err(e) => Some(format!("{e}")),
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = sluice.metric(in_flight).await;
    assert!(held > 0.0, "bytes being received are counted");
    // Once the stalled uploads time out, their memory is released and others are served.
    let mut answers = Vec::new();
    for u in uploads {
        answers.push(u.join().unwrap());
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    let timed_out = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    assert!(timed_out >= 1, "{answers:?}");
    assert_eq!(timed_out + refused, 20, "{answers:?}");
    // DEADLINE_EXCEEDED (4) for the admitted calls, UNAVAILABLE (14) for the refused ones.
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s.as_deref(), Some("4" | "14"))),
        "{statuses:?}"
    );
    assert_eq!(sluice.wait_metric(in_flight, 0.0).await, 0.0);
    let (status, _, _) = post(
        ports.http,
        trace_request(1, "after", 0).encode_to_vec(),
        "application/x-protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let peak = peak_rss_mib(&sluice);
    eprintln!("peak RSS with 20 stalled HTTP uploads and 30 stalled gRPC calls: {peak} MiB");
    assert!(peak < 200, "peak RSS {peak} MiB against limit_mib 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_open_unlimited_streams_or_hold_the_budget_with_empty_ones() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));
    let client = h2_connect(ports.grpc).await;
    // One whole call first, so that the server's SETTINGS have surely arrived.
    {
        let mut c = client.clone().ready().await.unwrap();
        let (response, mut stream) = c
            .send_request(export_request(ports.grpc, None), false)
            .unwrap();
        let body = frame(false, &trace_request(1, "first", 0).encode_to_vec());
        stream.send_data(Bytes::from(body), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(client.current_max_send_streams(), 100);
    let in_flight = "sluice_memory_limiter_in_flight_bytes{processor=\"memory_limiter\"}";
    assert_eq!(
        sluice.wait_metric(in_flight, 0.0).await,
        0.0,
        "the first call was exported"
    );
    // Header-only streams, never finished.
    let mut open = Vec::new();
    for _ in 0..100 {
        let mut c = client.clone().ready().await.unwrap();
        let (response, stream) = c
            .send_request(export_request(ports.grpc, None), false)
            .unwrap();
        open.push((response, stream));
    }
    // The server advertised its limit, so a client queues a 101st stream; the limiter holds
    // nothing for empty streams, and other clients are served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sluice.metric(in_flight).await, 0.0);
    let (status, _, _) = post(
        ports.http,
        trace_request(1, "other", 0).encode_to_vec(),
        "application/x-protobuf",
    )
    .await;
    assert_eq!(status, 200);
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalling_many_streams_holds_only_its_share_of_the_budget() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let grpc = "        read_timeout: 20s";
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, grpc, "", 200));
    // One connection: twenty calls each declare 4 MB, send most of it and stall.
    let client = h2_connect(ports.grpc).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stall_call(&client, ports.grpc, 4_000_000, 3_000_000).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = sluice
        .metric("sluice_memory_limiter_in_flight_bytes{processor=\"memory_limiter\"}")
        .await;
    // limit_mib 200 gives a budget of about 47 MB; a connection's share is a quarter of it.
    assert!(
        held > 0.0 && held <= 16_000_000.0,
        "one connection holds {held} bytes"
    );
    // Another client's 20 MB request fits in what is left.
    let request = trace_request(2000, "fair", 10_000).encode_to_vec();
    assert!(request.len() > 20_000_000);
    let (status, body, _) = post(ports.http, request, "application/x-protobuf").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_memory_budget_is_too_large_not_retry_later() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let grpc = "        max_recv_msg_size_mib: 100";
    let http = "        max_request_body_size: 100MiB";
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, grpc, http, 200));
    // limit_mib 200: the in-flight budget is a third of the headroom under the soft limit.
    let big = trace_request(6000, "big", 10_000).encode_to_vec();
    assert!(big.len() > 60_000_000);
    for _ in 0..2 {
        let (status, body, retry) = post(ports.http, big.clone(), "application/x-protobuf").await;
        let s = RpcStatus::decode(body.as_slice()).unwrap();
        assert_eq!((status, retry), (413, None), "{}", s.message);
        assert!(s.message.contains("in-flight budget"), "{}", s.message);
    }
    for _ in 0..2 {
        let outcome = grpc_call(ports.grpc, None, frame(false, &big)).await;
        assert_eq!(outcome.status, 8, "RESOURCE_EXHAUSTED: {outcome:?}");
        assert!(outcome.message.contains("in-flight budget"), "{outcome:?}");
        let details = RpcStatus::decode(outcome.details.unwrap_or_default().as_slice()).unwrap();
        assert!(
            details.details.is_empty(),
            "no RetryInfo: retrying cannot help"
        );
    }
    // A small request still goes through.
    let (status, _, _) = post(
        ports.http,
        trace_request(1, "small", 0).encode_to_vec(),
        "application/x-protobuf",
    )
    .await;
    assert_eq!(status, 200);
    drop(sluice);
}

/// Whether the server closed `s` within `within` (a read returns end of stream or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_surplus_connections_are_closed() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let grpc = "        max_connections: 40\n        keepalive:\n          server_parameters:\n            max_connection_idle: 1s";
    let http = "        idle_timeout: 1s\n        read_header_timeout: 1s\n        read_timeout: 2s\n        max_connections: 40";
    let _sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, grpc, http, 200));
    let connect = |port| TcpStream::connect(("127.0.0.1", port)).unwrap();

    // Forty idle connections fill the listener: a forty-first is closed at once.
    let mut idle: Vec<TcpStream> = (0..40).map(|_| connect(ports.http)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut surplus = connect(ports.http);
    assert!(closed_within(&mut surplus, Duration::from_millis(500)));
    // The idle ones are closed after idle_timeout.
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(5)));
    }

    // Slowloris: headers a byte at a time are cut off by read_header_timeout.
    let mut slow = connect(ports.http);
    let mut cut = false;
    for b in b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cut || closed_within(&mut slow, Duration::from_secs(3)),
        "a slowloris connection stays open"
    );

    // A chunked body that stalls is answered 408 after read_timeout.
    let mut stalled = connect(ports.http);
    write!(
        stalled,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\n\x02\x12\x00\r\n"
    )
    .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = stalled.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An idle HTTP/2 connection to the gRPC listener is sent away too.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ports.grpc))
        .await
        .unwrap();
    let (_client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "an idle gRPC connection stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_other_clients_are_served() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let _sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));
    let big = "x".repeat(100 << 10);
    let body = prost::Message::encode_to_vec(&crate::support::trace_request(1, "ok", 0));
    // HTTP/1: 431 for 100 KiB of headers.
    let answer = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{}/v1/traces", ports.http))
        .header("content-type", "application/x-protobuf")
        .header("x-padding", big.as_str())
        .body(body.clone())
        .send()
        .await;
    match answer {
        Ok(a) => assert_eq!(a.status(), 431),
        // hyper may also close the connection as it answers.
        Err(e) => assert!(e.is_request() || e.is_connect(), "{e}"),
    }
    // gRPC (HTTP/2): the call with 100 KiB of metadata is refused.
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://127.0.0.1:{}", ports.grpc),
    )
    .await
    .unwrap();
    let mut request = tonic::Request::new(crate::support::trace_request(1, "big", 0));
    request
        .metadata_mut()
        .insert("x-padding", big.parse().unwrap());
    assert!(client.export(request).await.is_err());
    // Well-behaved clients are served, on both.
    let (status, _, _) = post(ports.http, body, "application/x-protobuf").await;
    assert_eq!(status, 200);
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://127.0.0.1:{}", ports.grpc),
    )
    .await
    .unwrap();
    client
        .export(crate::support::trace_request(1, "fine", 0))
        .await
        .unwrap();
}

/// An HTTP/2 rapid-reset flood (CVE-2023-44487) on one connection: open a stream, reset it,
/// again and again, `pace` apart (none: as fast as the client can write). Returns the streams
/// opened and reset before the server closed the connection, or `None` if it never did.
async fn rapid_reset(port: u16, pace: Option<Duration>, attempts: usize) -> Option<usize> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::spawn(connection);
    for sent in 0..attempts {
        if ended.is_finished() {
            return Some(sent);
        }
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => return Some(sent),
        };
        let Ok((_response, mut stream)) = client.send_request(export_request(port, None), false)
        else {
            return Some(sent);
        };
        match pace {
            Some(pace) => tokio::time::sleep(pace).await,
            None if sent % 64 == 0 => tokio::task::yield_now().await,
            None => {}
        }
        stream.send_reset(h2::Reason::CANCEL);
    }
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .ok()
        .map(|_| attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_cut_off_and_other_clients_are_served() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));
    let rss_before = rss_kib(sluice.pid(), "VmRSS:");
    // As fast as it goes: the streams are reset before sluice takes them, and h2's limit on
    // those ends the connection. Paced a little: sluice takes each stream and starts reading
    // it, and its own budget for abandoned requests (1,000, then 100 a second) ends it.
    let fast = tokio::spawn(rapid_reset(ports.grpc, None, 1_000_000));
    let paced = tokio::spawn(rapid_reset(
        ports.grpc,
        Some(Duration::from_millis(1)),
        20_000,
    ));
    // Meanwhile a well-behaved client is served.
    let mut served = 0;
    while !(fast.is_finished() && paced.is_finished()) {
        let (status, _, _) = post(
            ports.http,
            trace_request(1, "good", 0).encode_to_vec(),
            "application/x-protobuf",
        )
        .await;
        assert_eq!(status, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fast = fast.await.unwrap();
    let paced = paced.await.unwrap();
    eprintln!(
        "rapid reset: fast flood cut off after {fast:?} streams, paced after {paced:?}; {served} exports served meanwhile"
    );
    assert!(
        fast.is_some_and(|n| n < 1_000_000),
        "the fast flood was never cut off"
    );
    // Paced, each stream is usually taken by sluice before its reset arrives, and sluice's
    // budget (1,000, then 100 a second: `Abandoned`'s unit test) ends it; on a loaded machine
    // resets can again arrive first, and h2's limit ends it sooner. Either way it ends.
    let paced = paced.expect("the paced flood was never cut off");
    assert!(paced < 5000, "the paced flood ran {paced} streams");
    assert!(served > 0);
    let rss_after = rss_kib(sluice.pid(), "VmRSS:");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    if paced >= 1000 {
        assert!(sluice.logs().contains("rapid-reset"), "{}", sluice.logs());
    }
    // And a new connection is served as ever.
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    client.export(trace_request(1, "after", 0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_leave_sluice_serving_within_its_memory() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, sink.grpc_port, "", "", 200));
    // Half on each listener: plain TCP for HTTP, and HTTP/2 connections that finished their
    // handshake for gRPC; none sends a request.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let port = if i % 2 == 0 { ports.http } else { ports.grpc };
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let mut h2_idle = Vec::new();
    for _ in 0..50 {
        h2_idle.push(h2_connect(ports.grpc).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A well-behaved client over each transport is served.
    let (status, _, _) = post(
        ports.http,
        trace_request(1, "http-amid-idle", 0).encode_to_vec(),
        "application/x-protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    client
        .export(trace_request(1, "grpc-amid-idle", 0))
        .await
        .unwrap();
    sink.wait_for(Duration::from_secs(10), "both spans", |r| {
        r.span_count() >= 2
    })
    .await;
    let rss = rss_kib(sluice.pid(), "VmRSS:") / 1024;
    assert!(
        rss < 200,
        "RSS {rss} MiB with 1,050 idle connections, limit_mib 200"
    );
    eprintln!("1,050 idle connections: RSS {rss} MiB");
    drop(idle);
    drop(h2_idle);
}
