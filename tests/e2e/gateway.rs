//! The gateway tier: sluice agents with the `loadbalancing` exporter in front of sluice gateways
//! with `tail_sampling`. Each trace's spans enter through different agents and every trace is
//! decided on exactly one gateway; a dead backend's share goes to the next owner, counted; and a
//! gateway leaving and another joining through DNS (a hosts file in a private mount namespace)
//! loses nothing the agents acknowledged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::support::{Ports, Sink, Sluice, TempDir, attr, free_port, hex, kv, string};

/// A gateway: OTLP in on `grpc` (at `ip`), `tail_sampling` keeping every trace, its name
/// stamped on the resource, out to the sink.
fn gateway(name: &str, ip: &str, grpc: u16, sink: u16) -> Sluice {
    let ports = Ports::new();
    let common = ports.common().replace(
        &format!("127.0.0.1:{}", ports.grpc),
        &format!("{ip}:{grpc}"),
    );
    let config = format!(
        "{common}processors:\n  tail_sampling:\n    decision_wait: 1s\n    policies: [{{name: all, type: always_sample}}]\n  resource:\n    attributes: [{{key: gateway, value: {name}, action: upsert}}]\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [tail_sampling, resource, batch], exporters: [otlp]}}\n{telemetry}",
        telemetry = ports.telemetry(),
    );
    Sluice::start(ports, &config)
}

/// An agent's `loadbalancing` exporter with `resolver` and a persistent queue in `queue`.
fn agent_config(ports: &Ports, resolver: &str, queue: &std::path::Path) -> String {
    format!(
        "{common}exporters:\n  loadbalancing:\n    routing_key: traceID\n    protocol:\n      otlp:\n        tls: {{insecure: true}}\n        compression: none\n        timeout: 2s\n        retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}}\n        sending_queue: {{storage: file, directory: {queue}}}\n    resolver:\n{resolver}service:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [loadbalancing]}}\n{telemetry}",
        common = ports.common(),
        queue = queue.display(),
        telemetry = ports.telemetry(),
    )
}

fn trace_id(n: u32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[..4].copy_from_slice(&n.to_be_bytes());
    t[4..12].copy_from_slice(
        &u64::from(n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes(),
    );
    t[15] = 7;
    t
}

/// Span `index` of each trace in `traces`, in one request.
fn request(traces: impl Iterator<Item = u32>, index: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("checkout"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: traces
                    .map(|n| Span {
                        trace_id: trace_id(n),
                        span_id: [&n.to_be_bytes()[..], &[index, 0, 0, 1]].concat(),
                        name: format!("step {index}"),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_001_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// For each trace id, the gateways its spans came through and how many spans arrived.
fn by_trace(sink: &Sink) -> HashMap<String, (HashSet<String>, usize)> {
    let mut out: HashMap<String, (HashSet<String>, usize)> = HashMap::new();
    for r in sink.snapshot().traces {
        for rs in r.resource_spans {
            let gw = rs
                .resource
                .as_ref()
                .and_then(|res| match attr(&res.attributes, "gateway") {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let e = out.entry(hex(&s.trace_id)).or_default();
                    e.0.insert(gw.clone());
                    e.1 += 1;
                }
            }
        }
    }
    out
}

fn static_resolver(endpoints: &[String]) -> String {
    format!(
        "      static:\n        hostnames: [{}]\n",
        endpoints.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trace_entering_through_two_agents_is_decided_on_exactly_one_gateway() {
    let sink = Sink::start().await;
    let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let gateways: Vec<Sluice> = (0..3)
        .map(|i| gateway(&format!("gw-{i}"), "127.0.0.1", grpc[i], sink.grpc_port))
        .collect();
    let endpoints: Vec<String> = grpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let queue = TempDir::new("lb-queue");
    let agents: Vec<Sluice> = (0..2)
        .map(|i| {
            let ports = Ports::new();
            let config = agent_config(
                &ports,
                &static_resolver(&endpoints),
                &queue.0.join(format!("a{i}")),
            );
            Sluice::start(ports, &config)
        })
        .collect();
    let mut clients = Vec::new();
    for a in &agents {
        clients.push(
            TraceServiceClient::connect(format!("http://127.0.0.1:{}", a.ports.grpc))
                .await
                .unwrap(),
        );
    }
    let n = 600u32;
    // Span k of every trace enters through agent k % 2, in its own request.
    for index in 0..4u8 {
        for chunk in (0..n).collect::<Vec<_>>().chunks(150) {
            clients[usize::from(index % 2)]
                .export(request(chunk.iter().copied(), index))
                .await
                .unwrap();
        }
    }
    sink.wait_for(Duration::from_secs(30), "every span", |r| {
        r.span_count() >= (n * 4) as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traces = by_trace(&sink);
    assert_eq!(traces.len(), n as usize);
    for (id, (gws, spans)) in &traces {
        assert_eq!(*spans, 4, "trace {id} arrived with {spans} spans");
        assert_eq!(gws.len(), 1, "trace {id} was decided on {gws:?}");
    }
    // Each trace was decided once, on one gateway, and every gateway had a share.
    let mut decided = 0.0;
    for g in &gateways {
        let d = g
            .metric("otelcol_processor_tail_sampling_global_count_traces_sampled{processor=\"tail_sampling\",sampled=\"true\"}")
            .await;
        assert!(d > f64::from(n) / 6.0, "a gateway decided only {d} traces");
        decided += d;
    }
    assert_eq!(decided, f64::from(n));
    let backends = agents[0]
        .metric("otelcol_loadbalancer_num_backends{exporter=\"loadbalancing\",resolver=\"static\"}")
        .await;
    assert_eq!(backends, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backends_share_goes_to_the_next_owner_and_is_counted() {
    let sink = Sink::start().await;
    let live: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let _gateways: Vec<Sluice> = (0..2)
        .map(|i| gateway(&format!("gw-{i}"), "127.0.0.1", live[i], sink.grpc_port))
        .collect();
    // Nothing listens on the third.
    let dead = free_port();
    let endpoints: Vec<String> = live
        .iter()
        .chain(std::iter::once(&dead))
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let queue = TempDir::new("lb-queue");
    let ports = Ports::new();
    let agent = Sluice::start(
        ports,
        &agent_config(&ports, &static_resolver(&endpoints), &queue.0),
    );
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let n = 900u32;
    for index in 0..2u8 {
        client.export(request(0..n, index)).await.unwrap();
    }
    sink.wait_for(Duration::from_secs(30), "every span", |r| {
        r.span_count() >= (n * 2) as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traces = by_trace(&sink);
    assert_eq!(traces.len(), n as usize);
    assert!(
        traces.values().all(|(g, s)| *s == 2 && g.len() == 1),
        "a trace was split"
    );
    let rerouted = agent
        .metric("otelcol_loadbalancer_rerouted_items{exporter=\"loadbalancing\"}")
        .await;
    assert!(rerouted >= f64::from(n) / 6.0, "rerouted {rerouted}");
    let dead_failures = agent
        .metric(&format!("otelcol_loadbalancer_backend_outcome{{exporter=\"loadbalancing\",endpoint=\"127.0.0.1:{dead}\",success=\"false\"}}"))
        .await;
    assert!(dead_failures >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_leaving_and_joining_through_dns_lose_nothing_the_agent_acknowledged() {
    let sink = Sink::start().await;
    // Three gateways on one port at three loopback addresses, as pods behind a headless service.
    let port = free_port();
    let mut g2 = gateway("gw-2", "127.0.0.2", port, sink.grpc_port);
    let _g3 = gateway("gw-3", "127.0.0.3", port, sink.grpc_port);
    let _g4 = gateway("gw-4", "127.0.0.4", port, sink.grpc_port);
    let dir = TempDir::new("lb-dns");
    let hosts = dir.0.join("hosts");
    let base = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    // Written in place, so the file mounted over /etc/hosts changes with it.
    let write_hosts = |ips: &[&str]| {
        let mut text = base.clone();
        for ip in ips {
            text.push_str(&format!("\n{ip} gateways.observability.svc"));
        }
        text.push('\n');
        std::fs::write(&hosts, text).unwrap();
    };
    write_hosts(&["127.0.0.2", "127.0.0.3"]);
    let ports = Ports::new();
    let resolver = format!(
        "      dns:\n        hostname: gateways.observability.svc\n        port: {port}\n        interval: 300ms\n        timeout: 1s\n"
    );
    let agent = Sluice::start_with_hosts(
        ports,
        &agent_config(&ports, &resolver, &dir.0.join("queue")),
        &hosts,
    );
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let backends = agent
        .wait_metric(
            "otelcol_loadbalancer_num_backends{exporter=\"loadbalancing\",resolver=\"dns\"}",
            2.0,
        )
        .await;
    assert_eq!(backends, 2.0, "{}", agent.logs());
    let rounds = 30u32;
    let per_round = 40u32;
    for round in 0..rounds {
        let traces = round * per_round..(round + 1) * per_round;
        client.export(request(traces.clone(), 0)).await.unwrap();
        client.export(request(traces, 1)).await.unwrap();
        if round == 10 {
            // A rolling update: gw-2 leaves the name and stops (deciding what it holds), gw-4
            // joins.
            write_hosts(&["127.0.0.3", "127.0.0.4"]);
            tokio::time::sleep(Duration::from_millis(700)).await;
            g2.terminate();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = rounds * per_round;
    sink.wait_for(Duration::from_secs(40), "every span", |r| {
        let ids: HashSet<Vec<u8>> = r.spans().into_iter().map(|s| s.trace_id).collect();
        ids.len() >= total as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let traces = by_trace(&sink);
    for n in 0..total {
        let (_, spans) = traces
            .get(&hex(&trace_id(n)))
            .unwrap_or_else(|| panic!("trace {n} was lost"));
        assert!(*spans >= 2, "trace {n} arrived with {spans} spans");
    }
    let after: HashSet<&String> = (rounds - 5..rounds)
        .flat_map(|r| r * per_round..(r + 1) * per_round)
        .flat_map(|n| traces[&hex(&trace_id(n))].0.iter())
        .collect();
    assert!(
        after.contains(&"gw-4".to_owned()),
        "gw-4 got nothing after it joined: {after:?}"
    );
    assert!(
        !after.contains(&"gw-2".to_owned()),
        "gw-2 got traces after it left"
    );
    let updates = agent
        .metric(
            "otelcol_loadbalancer_num_backend_updates{exporter=\"loadbalancing\",resolver=\"dns\"}",
        )
        .await;
    assert!(updates >= 2.0, "{updates}");
}
