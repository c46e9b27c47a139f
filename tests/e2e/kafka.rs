//! The `kafka` exporter and receiver against a real Kafka-protocol broker: Tansu, built from
//! crates.io by the test command (scripts/tansu.sh) and started here on free ports. Sluice A
//! (OTLP in, `kafka` out) and sluice B (`kafka` in, OTLP out) carry what a real SDK sends intact;
//! B killed mid-stream loses nothing; B pauses while its sink is away; two B share a group.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::python_sdk::{python, run_script};
use crate::support::{PeakRss, Ports, Received, Sink, Sluice, TempDir, free_port, kv, string};

/// A Tansu broker on a free port, in memory; killed on drop.
pub(crate) struct Tansu {
    child: Child,
    pub(crate) port: u16,
    _dir: TempDir,
}

impl Tansu {
    pub(crate) fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    /// On `port`.
    pub(crate) fn start_on(port: u16) -> Tansu {
        let bin = std::env::var("SLUICE_TANSU").unwrap_or_else(|_| {
            panic!("SLUICE_TANSU is not set: run the test command from README.md (scripts/test.sh), which builds the Tansu broker once (scripts/tansu.sh) and points SLUICE_TANSU at it")
        });
        let dir = TempDir::new("tansu");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&dir.0)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("tansu.log")).unwrap())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topics`, each with `partitions` partitions.
    pub(crate) async fn create(&self, topics: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("an admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        for r in results {
            r.expect("topic created");
        }
    }

    /// Every record of `topic` from the start: (partition, key, payload).
    pub(crate) fn read_all(
        &self,
        topic: &str,
        want: usize,
    ) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push((
                    m.partition(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        out
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PIPELINES: &str = "traces: {receivers: [otlp], exporters: [otlp, kafka]}\n    metrics: {receivers: [otlp], exporters: [otlp, kafka]}\n    logs: {receivers: [otlp], exporters: [otlp, kafka]}";

/// Sluice A: OTLP in; out to the sink `direct` (what was sent, for comparison) and to Kafka.
fn sluice_a(tansu: &Tansu, direct: &Sink, kafka: &str) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "{}exporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\n  kafka:\n    brokers: [{}]\n{kafka}\nservice:\n  pipelines:\n    {PIPELINES}\n{}",
        ports.common(),
        direct.grpc_port,
        tansu.brokers(),
        ports.telemetry()
    );
    Sluice::start(ports, &config)
}

/// Sluice B: `kafka` in (the receiver's settings in `kafka`), OTLP out to `sink`.
fn sluice_b(tansu: &Tansu, sink: &Sink, kafka: &str, exporter: &str) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "receivers:\n  kafka:\n    brokers: [{}]\n    initial_offset: earliest\n{kafka}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\n{exporter}\nservice:\n  pipelines:\n    traces: {{receivers: [kafka], exporters: [otlp]}}\n    metrics: {{receivers: [kafka], exporters: [otlp]}}\n    logs: {{receivers: [kafka], exporters: [otlp]}}\n{}",
        tansu.brokers(),
        ports.health,
        sink.grpc_port,
        ports.telemetry()
    );
    Sluice::start(ports, &config)
}

/// Every item with its resource and scope, encoded, sorted: two sinks hold the same data
/// exactly when these are equal, however batching grouped it.
fn items(r: &Received) -> Vec<Vec<u8>> {
    fn encoded<M: prost::Message>(m: &Option<M>) -> Vec<u8> {
        m.as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default()
    }
    /// Each data point, after what it shares with the others of its metric.
    fn each<P: prost::Message>(shared: String, points: &[P]) -> Vec<Vec<u8>> {
        points
            .iter()
            .map(|p| [shared.as_bytes(), &p.encode_to_vec()].concat())
            .collect()
    }
    let mut out = Vec::new();
    for rs in r.traces.iter().flat_map(|t| &t.resource_spans) {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push([encoded(&rs.resource), encoded(&ss.scope), s.encode_to_vec()].concat());
            }
        }
    }
    for rl in r.logs.iter().flat_map(|l| &l.resource_logs) {
        for sl in &rl.scope_logs {
            for l in &sl.log_records {
                out.push([encoded(&rl.resource), encoded(&sl.scope), l.encode_to_vec()].concat());
            }
        }
    }
    for rm in r.metrics.iter().flat_map(|m| &m.resource_metrics) {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let head = format!("{}|{}|{}|{:?}|", m.name, m.description, m.unit, m.metadata);
                let points = match &m.data {
                    Some(Data::Gauge(g)) => each(head, &g.data_points),
                    Some(Data::Sum(s)) => each(
                        format!("{head}{}{}", s.aggregation_temporality, s.is_monotonic),
                        &s.data_points,
                    ),
                    Some(Data::Histogram(h)) => each(
                        format!("{head}{}", h.aggregation_temporality),
                        &h.data_points,
                    ),
                    Some(Data::ExponentialHistogram(h)) => each(
                        format!("{head}{}", h.aggregation_temporality),
                        &h.data_points,
                    ),
                    Some(Data::Summary(s)) => each(head, &s.data_points),
                    None => Vec::new(),
                };
                for p in points {
                    out.push([encoded(&rm.resource), encoded(&sm.scope), p].concat());
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_s_traces_metrics_and_logs_cross_kafka_intact_in_both_encodings() {
    python();
    let tansu = Tansu::start();
    for encoding in ["otlp_proto", "otlp_json"] {
        let topics = [
            format!("{encoding}_spans"),
            format!("{encoding}_metrics"),
            format!("{encoding}_logs"),
        ];
        tansu
            .create(&topics.iter().map(String::as_str).collect::<Vec<_>>(), 3)
            .await;
        let signals = |key: &str| {
            format!(
                "    traces: {{{key}: {0}, encoding: {encoding}}}\n    metrics: {{{key}: {1}, encoding: {encoding}}}\n    logs: {{{key}: {2}, encoding: {encoding}}}",
                topics[0], topics[1], topics[2]
            )
        };
        let (direct, through) = (Sink::start().await, Sink::start().await);
        let b = sluice_b(
            &tansu,
            &through,
            &format!(
                "    group_id: e2e-{encoding}\n{}",
                signals("topics")
                    .replace("{topics: ", "{topics: [")
                    .replace(", encoding", "], encoding")
            ),
            "",
        );
        let a = sluice_a(&tansu, &direct, &signals("topic"));
        let endpoint = format!("http://127.0.0.1:{}", a.ports.grpc);
        let summary = run_script(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            "grpc",
            "--service-name",
            &format!("kafka-{encoding}"),
            "--spans",
            "30",
            "--logs",
            "20",
            "--metrics",
        ]);
        assert_eq!(summary["spans"], 31);
        direct
            .wait_for(Duration::from_secs(20), "what A exported directly", |r| {
                r.span_count() == 31 && r.log_count() == 20 && !r.metrics.is_empty()
            })
            .await;
        let want = items(&direct.snapshot());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = items(&through.snapshot());
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{encoding}: B delivered {} items, A sent {}; differing: {:?}\nA:\n{}\nB:\n{}",
                got.len(),
                want.len(),
                got.iter().filter(|g| !want.contains(g)).count(),
                a.logs(),
                b.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            b.metric("otelcol_receiver_accepted_spans{receiver=\"kafka\",transport=\"kafka\"}")
                .await,
            31.0
        );
    }
}

/// A request of `traces` traces of `spans` spans each, every id unique to `request`.
fn traces(request: u64, traces: u64, spans: u64) -> ExportTraceServiceRequest {
    let mut all = Vec::new();
    for t in 0..traces {
        for s in 0..spans {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&request.to_be_bytes());
            trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
            all.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: ((request << 32) | (t << 12) | (s + 1))
                    .to_be_bytes()
                    .to_vec(),
                name: format!("op-{s}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + s,
                end_time_unix_nano: 1_700_000_000_001_000_000 + s,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("kafka-e2e"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: all,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_traces_by_id_puts_every_span_of_a_trace_in_one_partition() {
    let tansu = Tansu::start();
    tansu.create(&["by_id_spans"], 4).await;
    let direct = Sink::start().await;
    let a = sluice_a(
        &tansu,
        &direct,
        "    partition_traces_by_id: true\n    traces: {topic: by_id_spans}",
    );
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", a.ports.grpc))
        .await
        .unwrap();
    // 40 requests of 10 traces of 5 spans; each trace's spans in two requests, one each half.
    for request in 0..20u64 {
        let mut first = traces(request, 10, 5);
        let mut second = first.clone();
        first.resource_spans[0].scope_spans[0]
            .spans
            .retain(|s| s.name.as_str() < "op-2");
        second.resource_spans[0].scope_spans[0]
            .spans
            .retain(|s| s.name.as_str() >= "op-2");
        client.export(first).await.unwrap();
        client.export(second).await.unwrap();
    }
    // One record per trace per request: 20 × 10 × 2.
    let records = tansu.read_all("by_id_spans", 400);
    assert_eq!(records.len(), 400, "records on the topic");
    let mut partitions: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    let mut spans = 0;
    for (partition, key, payload) in &records {
        let request = ExportTraceServiceRequest::decode(&payload[..]).unwrap();
        let ids: BTreeSet<Vec<u8>> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.trace_id.clone())
            .collect();
        assert_eq!(ids.len(), 1, "one trace per record");
        let id = ids.into_iter().next().unwrap();
        assert_eq!(
            key.as_deref(),
            Some(crate::support::hex(&id).as_bytes()),
            "keyed by the trace id in hex"
        );
        spans += request.resource_spans[0].scope_spans[0].spans.len();
        partitions.entry(id).or_default().insert(*partition);
    }
    assert_eq!(spans, 1000);
    assert_eq!(partitions.len(), 200);
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "a trace spread over partitions: {partitions:?}"
    );
    let used: BTreeSet<i32> = partitions.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "every trace in one partition of four: {used:?}"
    );
}

/// Tansu 0.6.0 answers a fetch at an offset inside a record batch with nothing (Kafka answers
/// with the batch that holds it, and the client skips what it has seen), so a consumer that
/// resumes mid-batch (after a pause, a restart or a rebalance, from its committed offset) would
/// skip the rest of that batch there. Where a test resumes mid-stream, A writes one record per
/// batch, so that every offset begins a batch (README, "Kafka").
const ONE_RECORD_PER_BATCH: &str = "    producer: {flush_max_messages: 1, linger: 0s}";

/// Span ids received, with how many times each.
fn span_ids(r: &Received) -> BTreeMap<Vec<u8>, usize> {
    let mut ids = BTreeMap::new();
    for s in r.spans() {
        *ids.entry(s.span_id).or_insert(0) += 1;
    }
    ids
}

/// Sends `requests` requests of 10 spans to A, one every `every`, in the background.
fn send_stream(grpc: u16, requests: u64, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        for r in 0..requests {
            client.export(traces(r + 1, 2, 5)).await.unwrap();
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_killed_twice_mid_stream_loses_nothing_and_repeats_little() {
    let tansu = Tansu::start();
    tansu.create(&["kill_spans"], 3).await;
    let (direct, sink) = (Sink::start().await, Sink::start().await);
    let a = sluice_a(
        &tansu,
        &direct,
        &format!("    traces: {{topic: kill_spans}}\n{ONE_RECORD_PER_BATCH}"),
    );
    let receiver = "    group_id: e2e-kill\n    traces: {topics: [kill_spans]}\n    autocommit: {interval: 200ms}";
    let mut b = sluice_b(&tansu, &sink, receiver, "");
    let sending = send_stream(a.ports.grpc, 300, Duration::from_millis(10));
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(b.pid().to_string())
            .status();
        drop(b);
        b = sluice_b(&tansu, &sink, receiver, "");
    }
    sending.await.unwrap();
    let want = 3000;
    let deadline = Instant::now() + Duration::from_secs(60);
    while span_ids(&sink.snapshot()).len() < want {
        assert!(
            Instant::now() < deadline,
            "B delivered {} distinct spans of {want}:\n{}",
            span_ids(&sink.snapshot()).len(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = span_ids(&sink.snapshot());
    assert_eq!(ids.len(), want, "every span, nothing else");
    let repeated: usize = ids.values().map(|n| n - 1).sum();
    // What can repeat is what B had taken but not yet committed at each kill: at most the
    // records of one commit interval (200 ms, about 20 requests of 10 spans) plus those in hand.
    assert!(repeated <= 2 * 400, "{repeated} spans delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_pauses_while_its_sink_is_away_with_flat_memory_and_catches_up() {
    let tansu = Tansu::start();
    tansu.create(&["away_spans"], 2).await;
    let (direct, sink) = (Sink::start().await, Sink::start().await);
    let a = sluice_a(
        &tansu,
        &direct,
        &format!("    traces: {{topic: away_spans}}\n{ONE_RECORD_PER_BATCH}"),
    );
    // B's exporter holds little and gives up on an attempt quickly, so its pipeline refuses.
    let b = sluice_b(
        &tansu,
        &sink,
        "    group_id: e2e-away\n    traces: {topics: [away_spans]}",
        "    timeout: 500ms\n    sending_queue: {queue_size: 4, num_consumers: 1}\n    retry_on_failure: {initial_interval: 100ms, max_interval: 1s}",
    );
    sink.set_hang(true);
    let sending = send_stream(a.ports.grpc, 400, Duration::from_millis(5));
    let rss = PeakRss::start(b.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let early = crate::support::rss_kib(b.pid(), "VmRSS:");
    sending.await.unwrap();
    // The records wait in Kafka: the lag grows to most of what was sent.
    let lag = |b: &Sluice| {
        let b = b.ports.metrics;
        async move {
            let text = reqwest::get(format!("http://127.0.0.1:{b}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|l| l.starts_with("otelcol_kafka_receiver_offset_lag{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0.0;
    while Instant::now() < deadline {
        seen = lag(&b).await;
        if seen >= 300.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen >= 300.0,
        "lag {seen} records while paused:\n{}",
        b.logs()
    );
    let late = crate::support::rss_kib(b.pid(), "VmRSS:");
    assert!(
        late < early + 32 * 1024,
        "B's memory grew from {early} KiB to {late} KiB while paused"
    );
    assert!(b.logs().contains("partitions paused"), "{}", b.logs());
    sink.set_hang(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while span_ids(&sink.snapshot()).len() < 4000 {
        if Instant::now() >= deadline {
            let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", b.ports.metrics))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let text: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("kafka")
                            || l.contains("exporter_sen")
                            || l.contains("receiver_"))
                })
                .collect();
            panic!(
                "B caught up to {} of 4000 spans ({} records on the sink):\n{}\n{}",
                span_ids(&sink.snapshot()).len(),
                sink.snapshot().traces.len(),
                text.join("\n"),
                b.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(span_ids(&sink.snapshot()).len(), 4000);
    let peak = rss.stop_mib();
    assert!(peak < 200, "B peaked at {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_bs_share_the_partitions_and_one_takes_over_when_the_other_dies() {
    let tansu = Tansu::start();
    tansu.create(&["group_spans"], 4).await;
    let (direct, sink) = (Sink::start().await, Sink::start().await);
    let a = sluice_a(
        &tansu,
        &direct,
        &format!("    traces: {{topic: group_spans}}\n{ONE_RECORD_PER_BATCH}"),
    );
    let receiver = "    group_id: e2e-group\n    traces: {topics: [group_spans]}\n    session_timeout: 6s\n    heartbeat_interval: 1s\n    autocommit: {interval: 200ms}";
    let b1 = sluice_b(&tansu, &sink, receiver, "");
    let b2 = sluice_b(&tansu, &sink, receiver, "");
    let sending = send_stream(a.ports.grpc, 300, Duration::from_millis(20));
    // Both take part: each is assigned partitions and takes records.
    let deadline = Instant::now() + Duration::from_secs(30);
    let taken = |s: &Sluice| {
        let port = s.ports.metrics;
        async move {
            let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|l| {
                    l.starts_with("otelcol_kafka_receiver_records{")
                        && l.contains("outcome=\"success\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    while taken(&b1).await == 0.0 || taken(&b2).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "both members take records:\n{}\n{}",
            b1.logs(),
            b2.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut b2 = b2;
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(b2.pid().to_string())
        .status();
    let _ = b2.child.wait();
    sending.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while span_ids(&sink.snapshot()).len() < 3000 {
        assert!(
            Instant::now() < deadline,
            "{} of 3000 spans after one member died:\n{}",
            span_ids(&sink.snapshot()).len(),
            b1.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(span_ids(&sink.snapshot()).len(), 3000);
    assert!(b1.logs().contains("partitions assigned"), "{}", b1.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeps_what_it_acknowledged_while_the_broker_is_down_and_writes_it_when_it_comes() {
    let port = free_port();
    // No broker yet: A acknowledges into its queue and retries.
    let ports = Ports::new();
    let config = format!(
        "{}exporters:\n  kafka:\n    brokers: [127.0.0.1:{port}]\n    traces: {{topic: late_spans}}\n    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s}}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [kafka]}}\n{}",
        ports.common(),
        ports.telemetry()
    );
    let a = Sluice::start(ports, &config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", a.ports.grpc))
        .await
        .unwrap();
    for r in 0..30 {
        client.export(traces(r + 1, 2, 5)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.metric("otelcol_exporter_sent_spans{exporter=\"kafka\"}")
            .await
            == 0.0,
        "nothing can be sent without a broker"
    );
    let tansu = Tansu::start_on(port);
    tansu.create(&["late_spans"], 2).await;
    let sink = Sink::start().await;
    let _b = sluice_b(
        &tansu,
        &sink,
        "    group_id: e2e-late\n    traces: {topics: [late_spans]}",
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while span_ids(&sink.snapshot()).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "{} of 300 spans after the broker came:\n{}",
            span_ids(&sink.snapshot()).len(),
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(span_ids(&sink.snapshot()).len(), 300);
    assert_eq!(
        a.metric("otelcol_exporter_send_failed_spans{exporter=\"kafka\"}")
            .await,
        0.0
    );
}
