//! Tenants through one gateway: receivers keep request metadata (`include_metadata`), the
//! `resource` processor stamps the tenant header on the data (`from_context`), the batch
//! processor never mixes tenants in one batch (`metadata_keys`), and the routing connector sends
//! one tenant to its own backend (`context: request`). Two clients, over gRPC and HTTP, send
//! interleaved; every request each backend receives is checked.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Ports, Sink, Sluice, attr, string, trace_request};

/// The `tenant.id` of each resource of a request the sink received.
fn tenants_of(request: &ExportTraceServiceRequest) -> Vec<Option<String>> {
    request
        .resource_spans
        .iter()
        .map(|rs| {
            let attributes = rs.resource.as_ref().map(|r| &r.attributes[..]);
            attr(attributes.unwrap_or_default(), "tenant.id").and_then(|v| match v {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                    Some(s.clone())
                }
                _ => None,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tenants_arrive_stamped_never_share_a_batch_and_route_apart() {
    let all = Sink::start().await;
    let acme = Sink::start().await;
    let others = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", include_metadata: true}}
      http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
processors:
  resource/tenant:
    attributes:
      - {{key: tenant.id, from_context: metadata.x-tenant-id, action: upsert}}
  batch:
    timeout: 300ms
    send_batch_size: 100000
    metadata_keys: [X-Tenant-Id]
connectors:
  routing:
    default_pipelines: [traces/others]
    table:
      - context: request
        condition: request["x-tenant-id"] == "acme"
        pipelines: [traces/acme]
exporters:
  otlp/all: {{endpoint: "http://127.0.0.1:{all}"}}
  otlp/acme: {{endpoint: "http://127.0.0.1:{acme}"}}
  otlp/others: {{endpoint: "http://127.0.0.1:{others}"}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [resource/tenant, batch], exporters: [otlp/all, routing]}}
    traces/acme: {{receivers: [routing], exporters: [otlp/acme]}}
    traces/others: {{receivers: [routing], exporters: [otlp/others]}}
{telemetry}"#,
        grpc = ports.grpc,
        http = ports.http,
        health = ports.health,
        all = all.grpc_port,
        acme = acme.grpc_port,
        others = others.grpc_port,
        telemetry = ports.telemetry(),
    );
    let _sluice = Sluice::start(ports, &config);

    // acme over gRPC, beta over HTTP, and a client claiming "acme" in its own resource but
    // sending no tenant header: it must not reach acme's backend.
    let mut grpc = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let rounds = 20;
    for round in 0..rounds {
        let mut request = tonic::Request::new(trace_request(5, &format!("acme{round}"), 0));
        request
            .metadata_mut()
            .insert("x-tenant-id", "acme".parse().unwrap());
        grpc.export(request).await.unwrap();
        let answer = http
            .post(format!("http://127.0.0.1:{}/v1/traces", ports.http))
            .header("content-type", "application/x-protobuf")
            .header("X-Tenant-Id", "beta")
            .body(trace_request(3, &format!("beta{round}"), 0).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let mut anonymous = trace_request(1, &format!("anon{round}"), 0);
        anonymous.resource_spans[0]
            .resource
            .as_mut()
            .unwrap()
            .attributes
            .push(crate::support::kv("tenant.id", string("acme")));
        grpc.export(anonymous).await.unwrap();
    }
    let total = rounds * (5 + 3 + 1);
    all.wait_for(Duration::from_secs(15), "every span", |r| {
        r.span_count() >= total
    })
    .await;
    acme.wait_for(Duration::from_secs(15), "acme's spans", |r| {
        r.span_count() >= rounds * 5
    })
    .await;
    others
        .wait_for(Duration::from_secs(15), "the other spans", |r| {
            r.span_count() >= rounds * 4
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every request at the all-tenants backend holds one client's data only (told apart by
    // span name), and the header tenants' resources carry their tenant.
    let received = all.snapshot();
    assert_eq!(received.span_count(), total);
    let mut kinds = std::collections::BTreeSet::new();
    for request in &received.traces {
        let prefixes: std::collections::BTreeSet<&str> = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| {
                s.name
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            })
            .collect();
        assert_eq!(prefixes.len(), 1, "a batch mixes clients: {prefixes:?}");
        let kind = prefixes.into_iter().next().unwrap();
        let expected = match kind {
            "beta" => "beta",
            // The anonymous client's own claim is left as it is: no header, nothing to stamp.
            _ => "acme",
        };
        assert!(
            tenants_of(request)
                .iter()
                .all(|t| t.as_deref() == Some(expected)),
            "{kind}: {:?}",
            tenants_of(request)
        );
        kinds.insert(kind.to_owned());
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["acme", "anon", "beta"]
    );

    // Routing by the request header: acme's backend gets exactly acme's spans, not the
    // anonymous client's that only claim to be acme in their data.
    let acme_spans = acme.snapshot().spans();
    assert_eq!(acme_spans.len(), rounds * 5);
    assert!(acme_spans.iter().all(|s| s.name.starts_with("acme")));
    let other_spans = others.snapshot().spans();
    assert_eq!(other_spans.len(), rounds * 4);
    assert!(
        other_spans
            .iter()
            .all(|s| s.name.starts_with("beta") || s.name.starts_with("anon"))
    );
}
