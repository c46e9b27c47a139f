//! Connectors with the real binary: `routing` sends one tenant's spans to one exporter and the
//! rest to another, nothing lost or duplicated; `forward` joins pipelines; `sluice validate`
//! refuses a cycle of connectors with its path.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::{Ports, Sink, Sluice, attr, kv, sluice_validate, string};

/// A resource of `tenant` holding spans named `{tenant}-{i}`, the span `audit` among them when
/// `audit` is set.
fn resource(tenant: &str, spans: usize, audit: bool) -> ResourceSpans {
    let mut list: Vec<Span> = (0..spans)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("{tenant}-{i}"),
            ..Default::default()
        })
        .collect();
    if audit {
        list.push(Span {
            trace_id: vec![8; 16],
            span_id: 99u64.to_be_bytes().to_vec(),
            name: "audit".into(),
            attributes: vec![kv("audit", string("yes"))],
            ..Default::default()
        });
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", string("checkout")),
                kv("tenant", string(tenant)),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: list,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn post(port: u16, request: &ExportTraceServiceRequest) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn names(sink: &Sink) -> Vec<String> {
    let mut names: Vec<String> = sink
        .snapshot()
        .spans()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_sends_one_tenants_spans_to_one_exporter_and_the_rest_to_another() {
    let (acme, audit, other) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    let ports = Ports::new();
    let config = format!(
        r#"{common}processors:
  batch: {{timeout: 50ms}}
  resource/acme:
    attributes: [{{key: routed, value: acme, action: upsert}}]
exporters:
  otlp/acme: {{endpoint: "http://127.0.0.1:{a}", tls: {{insecure: true}}}}
  otlp/audit: {{endpoint: "http://127.0.0.1:{b}", tls: {{insecure: true}}}}
  otlp/other: {{endpoint: "http://127.0.0.1:{c}", tls: {{insecure: true}}}}
connectors:
  routing:
    default_pipelines: [traces/other]
    table:
      - context: span
        condition: attributes["audit"] == "yes"
        pipelines: [traces/audit]
      - statement: route() where attributes["tenant"] == "acme"
        pipelines: [traces/acme]
service:
  pipelines:
    traces/in: {{receivers: [otlp], exporters: [routing]}}
    traces/acme: {{receivers: [routing], processors: [resource/acme, batch], exporters: [otlp/acme]}}
    traces/audit: {{receivers: [routing], processors: [batch], exporters: [otlp/audit]}}
    traces/other: {{receivers: [routing], processors: [batch], exporters: [otlp/other]}}
{telemetry}"#,
        common = ports.common(),
        a = acme.grpc_port,
        b = audit.grpc_port,
        c = other.grpc_port,
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    // A request mixing tenants (split), one of a single tenant (handed on whole), and a
    // resource without the attribute (default route).
    post(
        ports.http,
        &ExportTraceServiceRequest {
            resource_spans: vec![
                resource("acme", 3, true),
                resource("globex", 2, false),
                resource("acme", 1, false),
            ],
        },
    )
    .await;
    post(
        ports.http,
        &ExportTraceServiceRequest {
            resource_spans: vec![resource("acme", 2, false)],
        },
    )
    .await;
    let mut anonymous = resource("nobody", 1, true);
    anonymous.resource = None;
    post(
        ports.http,
        &ExportTraceServiceRequest {
            resource_spans: vec![anonymous],
        },
    )
    .await;

    for (sink, want) in [(&acme, 6), (&audit, 2), (&other, 3)] {
        sink.wait_for(Duration::from_secs(10), "routed spans", |r| {
            r.span_count() >= want
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(&acme),
        ["acme-0", "acme-0", "acme-0", "acme-1", "acme-1", "acme-2"]
    );
    assert_eq!(
        names(&audit),
        ["audit", "audit"],
        "the span route comes first"
    );
    assert_eq!(
        names(&other),
        ["globex-0", "globex-1", "nobody-0"],
        "unmatched data takes the default"
    );
    // The acme pipeline's own processor ran on what was routed to it, with its resource kept.
    for request in &acme.snapshot().traces {
        for rs in &request.resource_spans {
            let attributes = &rs.resource.as_ref().unwrap().attributes;
            assert_eq!(attr(attributes, "tenant"), Some(&string("acme")));
            assert_eq!(attr(attributes, "routed"), Some(&string("acme")));
        }
    }
    // Data entering a pipeline through the connector is counted as a receiver's.
    let accepted = "otelcol_receiver_accepted_spans{receiver=\"routing\",transport=\"connector\"}";
    assert_eq!(sluice.wait_metric(accepted, 11.0).await, 11.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_hands_everything_to_every_pipeline_it_feeds() {
    let (first, second) = (Sink::start().await, Sink::start().await);
    let ports = Ports::new();
    let config = format!(
        r#"{common}processors:
  resource/tag:
    attributes: [{{key: stage, value: second, action: insert}}]
exporters:
  otlp/first: {{endpoint: "http://127.0.0.1:{a}", tls: {{insecure: true}}}}
  otlp/second: {{endpoint: "http://127.0.0.1:{b}", tls: {{insecure: true}}}}
connectors:
  forward: {{}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [forward, otlp/first]}}
    traces/second: {{receivers: [forward], processors: [resource/tag], exporters: [otlp/second]}}
{telemetry}"#,
        common = ports.common(),
        a = first.grpc_port,
        b = second.grpc_port,
        telemetry = ports.telemetry(),
    );
    let _sluice = Sluice::start(ports, &config);
    post(
        ports.http,
        &ExportTraceServiceRequest {
            resource_spans: vec![resource("acme", 4, false)],
        },
    )
    .await;
    for sink in [&first, &second] {
        sink.wait_for(Duration::from_secs(10), "4 spans", |r| r.span_count() == 4)
            .await;
    }
    let tagged = |sink: &Sink| {
        sink.snapshot().traces[0].resource_spans[0]
            .resource
            .as_ref()
            .and_then(|r| attr(&r.attributes, "stage").cloned())
    };
    assert_eq!(tagged(&first), None, "the first pipeline's data is its own");
    assert_eq!(tagged(&second), Some(string("second")));
}

#[test]
fn validate_refuses_a_cycle_of_connectors_and_a_route_to_a_pipeline_that_is_not_fed() {
    let (ok, stderr) = sluice_validate(
        "receivers: {otlp: {protocols: {http: {}}}}\nexporters: {debug: {}}\nconnectors: {forward/a: {}, forward/b: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp, forward/b], exporters: [forward/a]}\n    traces/2: {receivers: [forward/a], exporters: [forward/b, debug]}\n",
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("connectors join pipelines in a cycle, so data would go round for ever: traces -[forward/a]-> traces/2 -[forward/b]-> traces"),
        "{stderr}"
    );
    let (ok, stderr) = sluice_validate(
        "receivers: {otlp: {protocols: {http: {}}}}\nexporters: {debug: {}}\nconnectors:\n  routing:\n    table: [{condition: 'attributes[\"t\"] == \"a\"', pipelines: [traces/nope]}, {context: request, condition: 'request[\"X-Tenant\"] == \"a\" and true', pipelines: [traces/out]}]\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [routing]}\n    traces/out: {receivers: [routing], exporters: [debug]}\n",
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("connectors.routing.table[0].pipelines[0]: pipeline `traces/nope` does not list this connector among its receivers"),
        "{stderr}"
    );
    assert!(
        stderr.contains("connectors.routing.table[1].condition: `request[\"X-Tenant\"] == \"a\" and true`: the request context takes one comparison"),
        "{stderr}"
    );
}
