use super::*;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use sluice_core::Consumer;
use sluice_fixtures::kv;

/// Collects what the sampler hands on.
#[derive(Default)]
struct Collect(Mutex<Vec<Span>>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.0
            .lock()
            .unwrap()
            .extend(sluice_fixtures::spans(&batch));
        Ok(())
    }
}

impl Collect {
    fn traces(&self) -> HashMap<u32, usize> {
        let mut out = HashMap::default();
        for s in self.0.lock().unwrap().iter() {
            *out.entry(u32::from_be_bytes(s.trace_id[..4].try_into().unwrap()))
                .or_default() += 1;
        }
        out
    }
}

fn tid(n: u32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[..4].copy_from_slice(&n.to_be_bytes());
    t[8..16].copy_from_slice(
        &u64::from(n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_be_bytes(),
    );
    t[15] |= 1;
    t
}

fn span(trace: u32, index: u8, ms: u64, error: bool, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: tid(trace),
        span_id: vec![index + 1, 0, 0, 0, 0, 0, 0, 1],
        parent_span_id: if index == 0 {
            vec![]
        } else {
            vec![1, 0, 0, 0, 0, 0, 0, 1]
        },
        name: format!("op {index}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + ms * 1_000_000,
        status: error.then(|| Status {
            code: 2,
            ..Default::default()
        }),
        attributes: attrs,
        ..Default::default()
    }
}

fn batch(spans: Vec<Span>) -> Batch {
    sluice_fixtures::traces_batch(vec![kv("service.name", sluice_fixtures::s("shop"))], spans)
}

fn start(
    config: serde_json::Value,
) -> (
    Arc<dyn Processor>,
    Arc<Collect>,
    CancellationToken,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let sink = Arc::new(Collect::default());
    let component = TailSamplingFactory.build("tail_sampling", &config).unwrap();
    let shutdown = CancellationToken::new();
    let instance = component
        .instance(PipelineContext {
            id: "tail_sampling".into(),
            pipeline: "traces".into(),
            signal: Signal::Traces,
            output: Output::new("tail_sampling", Signal::Traces, sink.clone()),
            shutdown: shutdown.clone(),
        })
        .unwrap();
    (instance.processor, sink, shutdown, instance.tasks)
}

fn problems(config: serde_json::Value) -> Vec<String> {
    TailSamplingFactory
        .check("processors.tail_sampling", &config)
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn errors_and_slow_traces_are_kept_whole_and_the_rest_at_the_probabilistic_share() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "10s",
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}},
            {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
        ]
    }));
    let n = 3000u32;
    // Each trace's three spans arrive in three requests, the root last; trace i % 10 == 0 has an
    // error in its second span, i % 10 == 1 is slow.
    for index in [2u8, 1, 0] {
        let spans = (0..n)
            .map(|i| {
                let error = i % 10 == 0 && index == 1;
                let ms = if i % 10 == 1 && index == 0 { 6000 } else { 10 };
                span(i, index, ms, error, vec![])
            })
            .collect();
        assert!(p.process(batch(spans)).await.unwrap().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "decided before decision_wait"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let kept = sink.traces();
    assert!(kept.values().all(|&c| c == 3), "a trace arrived in part");
    for i in 0..n {
        if i % 10 < 2 {
            assert!(
                kept.contains_key(&i),
                "trace {i} (error or slow) was not kept"
            );
        }
    }
    let rest = kept.keys().filter(|&&i| i % 10 >= 2).count() as f64;
    let total = f64::from(n) * 0.8;
    let sd = (total * 0.1 * 0.9).sqrt();
    assert!(
        (rest - total * 0.1).abs() < 5.0 * sd,
        "kept {rest} of {total} normal traces"
    );
    // Late spans follow the decision taken.
    let kept_normal = *kept.keys().find(|&&i| i % 10 >= 2).unwrap();
    let dropped_normal = (2..n)
        .find(|i| i % 10 >= 2 && !kept.contains_key(i))
        .unwrap();
    let late = p
        .process(batch(vec![
            span(kept_normal, 3, 10, false, vec![]),
            span(dropped_normal, 3, 10, false, vec![]),
        ]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.items(), 1);
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn past_num_traces_the_oldest_are_decided_early_not_dropped() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "60s",
        "num_traces": 100,
        "policies": [{"name": "all", "type": "always_sample"}]
    }));
    for i in 0..1000u32 {
        p.process(batch(vec![span(i, 0, 10, false, vec![])]))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Everything past the first hundred forced the oldest out, decided and kept.
    let kept = sink.traces();
    assert!(kept.len() >= 900, "{}", kept.len());
    assert!(
        (0..800).all(|i| kept.contains_key(&i)),
        "the oldest were not the ones decided early"
    );
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sink.traces().len(), 1000, "shutdown decides what is held");
}

#[tokio::test(start_paused = true)]
async fn a_trace_of_100k_spans_does_not_hold_up_the_others() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "2s",
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    for chunk in 0..100u32 {
        let spans = (0..1000u32)
            .map(|i| span(7, ((chunk * 1000 + i) % 200) as u8 + 1, 10, false, vec![]))
            .collect();
        p.process(batch(spans)).await.unwrap();
    }
    for i in 100..600u32 {
        p.process(batch(vec![span(i, 0, 10, true, vec![])]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = sink.traces();
    assert_eq!(kept.len(), 500, "every error trace is decided and kept");
    assert!(!kept.contains_key(&7));
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_root_span_shortens_the_wait_when_configured() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "30s",
        "decision_wait_after_root_received": "1s",
        "policies": [{"name": "all", "type": "always_sample"}]
    }));
    p.process(batch(vec![span(1, 1, 10, false, vec![])]))
        .await
        .unwrap();
    p.process(batch(vec![
        span(2, 1, 10, false, vec![]),
        span(2, 0, 10, false, vec![]),
    ]))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.traces().keys().copied().collect::<Vec<_>>(), vec![2]);
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

fn decide(policy: serde_json::Value, spans: Vec<Span>) -> bool {
    let config: TailSamplingConfig =
        serde_json::from_value(serde_json::json!({"policies": [policy]})).unwrap();
    let policies = config.compile("p").unwrap();
    let b = batch(spans);
    let trace = TraceData {
        batches: std::slice::from_ref(&b),
        spans: b.items() as u64,
        bytes: b.size(),
        trace_id: [1; 16],
    };
    combine(policies.iter().map(|(_, p)| p.evaluate(&trace)))
}

#[test]
fn each_policy_decides_as_the_collector_documents() {
    let s = any_value::Value::StringValue;
    let attr = |k: &str, v: any_value::Value| vec![kv(k, v)];
    // latency: from the earliest start to the latest end, lower bound exclusive, upper
    // inclusive, and the whole trace counts (a long trace does not pass an upper bound).
    let lat = serde_json::json!({"name": "l", "type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 200}});
    assert!(decide(lat.clone(), vec![span(1, 0, 101, false, vec![])]));
    assert!(decide(lat.clone(), vec![span(1, 0, 200, false, vec![])]));
    assert!(!decide(lat.clone(), vec![span(1, 0, 100, false, vec![])]));
    assert!(!decide(lat.clone(), vec![span(1, 0, 201, false, vec![])]));
    assert!(!decide(
        lat,
        vec![
            span(1, 1, 150, false, vec![]),
            span(1, 0, 300, false, vec![])
        ]
    ));
    // string_attribute: exact, regex, and inverted (a missing key samples).
    let st = |values: serde_json::Value, regex: bool, invert: bool| serde_json::json!({"name": "s", "type": "string_attribute", "string_attribute": {"key": "http.route", "values": values, "enabled_regex_matching": regex, "invert_match": invert}});
    assert!(decide(
        st(serde_json::json!(["/a"]), false, false),
        vec![span(1, 0, 1, false, attr("http.route", s("/a".into())))]
    ));
    assert!(!decide(
        st(serde_json::json!(["/a"]), false, false),
        vec![span(1, 0, 1, false, attr("http.route", s("/ab".into())))]
    ));
    assert!(decide(
        st(serde_json::json!(["^/a.*"]), true, false),
        vec![span(1, 0, 1, false, attr("http.route", s("/ab".into())))]
    ));
    assert!(!decide(
        st(serde_json::json!(["/health"]), false, true),
        vec![span(
            1,
            0,
            1,
            false,
            attr("http.route", s("/health".into()))
        )]
    ));
    assert!(decide(
        st(serde_json::json!(["/health"]), false, true),
        vec![span(1, 0, 1, false, vec![])]
    ));
    // Resource attributes count too.
    assert!(decide(
        serde_json::json!({"name": "r", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["shop"]}}),
        vec![span(1, 0, 1, false, vec![])]
    ));
    // probabilistic: FNV-1a 64 of the salt and the trace id against the share of 2^64; trace
    // id 01..10 hashes to 0xdbcf64d5420f4cad with the default salt (about 85.9% of the range).
    let id: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
    assert_eq!(
        policy::trace_hash(b"default-hash-seed", &id),
        0xdbcf_64d5_420f_4cad
    );
    assert_eq!(
        policy::trace_hash(b"custom-salt", &id),
        0x71de_bceb_a3f6_b115
    );
    // numeric_attribute, inclusive; 0 means unbounded.
    let num = serde_json::json!({"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "http.status_code", "min_value": 500, "max_value": 599}});
    assert!(decide(
        num.clone(),
        vec![span(
            1,
            0,
            1,
            false,
            attr("http.status_code", any_value::Value::IntValue(500))
        )]
    ));
    assert!(!decide(
        num,
        vec![span(
            1,
            0,
            1,
            false,
            attr("http.status_code", any_value::Value::IntValue(404))
        )]
    ));
    // boolean_attribute.
    let b = serde_json::json!({"name": "b", "type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": true}});
    assert!(decide(
        b.clone(),
        vec![span(
            1,
            0,
            1,
            false,
            attr("debug", any_value::Value::BoolValue(true))
        )]
    ));
    assert!(!decide(
        b,
        vec![span(
            1,
            0,
            1,
            false,
            attr("debug", any_value::Value::BoolValue(false))
        )]
    ));
    // span_count.
    let sc = serde_json::json!({"name": "c", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 3}});
    assert!(!decide(sc.clone(), vec![span(1, 0, 1, false, vec![])]));
    assert!(decide(
        sc,
        vec![span(1, 0, 1, false, vec![]), span(1, 1, 1, false, vec![])]
    ));
    // trace_state.
    let mut with_ts = span(1, 0, 1, false, vec![]);
    with_ts.trace_state = "vendor=x, tier=gold".into();
    assert!(decide(
        serde_json::json!({"name": "t", "type": "trace_state", "trace_state": {"key": "tier", "values": ["gold"]}}),
        vec![with_ts]
    ));
    // ottl_condition.
    let ottl = serde_json::json!({"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["attributes[\"user.tier\"] == \"vip\""]}});
    assert!(decide(
        ottl.clone(),
        vec![span(1, 0, 1, false, attr("user.tier", s("vip".into())))]
    ));
    assert!(!decide(ottl, vec![span(1, 0, 1, false, vec![])]));
    // trace_flags: the W3C sampled flag on any span.
    let mut flagged = span(1, 0, 1, false, vec![]);
    flagged.flags = 0x101;
    let tf = serde_json::json!({"name": "f", "type": "trace_flags"});
    assert!(decide(tf.clone(), vec![flagged]));
    assert!(!decide(tf, vec![span(1, 0, 1, false, vec![])]));
    // not: turns its policy's verdict around.
    let not = serde_json::json!({"name": "n", "type": "not", "not": {"not_sub_policy": {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}}});
    assert!(decide(not.clone(), vec![span(1, 0, 1, false, vec![])]));
    assert!(!decide(not, vec![span(1, 0, 1, true, vec![])]));
    // and: all must sample.
    let and = serde_json::json!({"name": "a", "type": "and", "and": {"and_sub_policy": [
        {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "r", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["shop"]}},
    ]}});
    assert!(decide(and.clone(), vec![span(1, 0, 1, true, vec![])]));
    assert!(!decide(and, vec![span(1, 0, 1, false, vec![])]));
}

#[test]
fn a_drop_policy_and_an_inverted_match_veto_the_others() {
    let config: TailSamplingConfig = serde_json::from_value(serde_json::json!({"policies": [
        {"name": "all", "type": "always_sample"},
        {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "h", "type": "string_attribute", "string_attribute": {"key": "http.route", "values": ["/health"]}}
        ]}},
    ]})).unwrap();
    let policies = config.compile("p").unwrap();
    let check = |route: &str| {
        let b = batch(vec![span(
            1,
            0,
            1,
            false,
            vec![kv(
                "http.route",
                any_value::Value::StringValue(route.into()),
            )],
        )]);
        let trace = TraceData {
            batches: std::slice::from_ref(&b),
            spans: 1,
            bytes: b.size(),
            trace_id: [1; 16],
        };
        combine(policies.iter().map(|(_, p)| p.evaluate(&trace)))
    };
    assert!(!check("/health"));
    assert!(check("/orders"));
}

#[test]
fn rate_limiting_and_composite_spend_per_second_budgets() {
    let config: TailSamplingConfig = serde_json::from_value(serde_json::json!({"policies": [
        {"name": "rate", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 3}}
    ]}))
    .unwrap();
    let policies = config.compile("p").unwrap();
    let b = batch(vec![
        span(1, 0, 1, false, vec![]),
        span(1, 1, 1, false, vec![]),
    ]);
    let trace = TraceData {
        batches: std::slice::from_ref(&b),
        spans: 2,
        bytes: b.size(),
        trace_id: [1; 16],
    };
    // A bucket of 6 (twice the rate), full at the start: three traces of 2 spans, not a fourth.
    for _ in 0..3 {
        assert_eq!(policies[0].1.evaluate(&trace), Decision::Sampled);
    }
    assert_eq!(policies[0].1.evaluate(&trace), Decision::NotSampled);
    let config: TailSamplingConfig = serde_json::from_value(serde_json::json!({"policies": [
        {"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 4,
            "policy_order": ["errors", "all"],
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "all", "type": "always_sample"}
            ],
            "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "all", "percent": 50}]
        }}
    ]})).unwrap();
    let policies = config.compile("p").unwrap();
    let kept = (0..4)
        .filter(|_| policies[0].1.evaluate(&trace) == Decision::Sampled)
        .count();
    assert_eq!(
        kept, 1,
        "the `all` share is 2 spans a second: one trace of 2 spans"
    );
}

#[test]
fn configs_the_sampler_cannot_honour_are_refused_with_the_key() {
    assert!(problems(serde_json::json!({"policies": []}))[0].contains("at least one policy"));
    assert!(
        problems(serde_json::json!({"policies": [{"name": "x", "type": "nope"}]}))[0]
            .contains("policies[0].type")
    );
    assert!(
        problems(serde_json::json!({"policies": [{"name": "x", "type": "latency"}]}))[0]
            .contains("policies[0].latency")
    );
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["BAD"]}}]}))[0].contains("status_codes[0]"));
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "string_attribute", "string_attribute": {"key": "k", "values": ["("], "enabled_regex_matching": true}}]}))[0].contains("values[0]"));
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "ottl_condition", "ottl_condition": {"span": ["nonsense ++"]}}]}))[0].contains("ottl_condition.span[0]"));
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "always_sample"}, {"name": "x", "type": "always_sample"}]}))[0].contains("duplicate"));
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "drop", "drop": {"drop_sub_policy": []}}]}))[0].contains("drop every trace"));
    assert!(problems(serde_json::json!({"sampling_strategy": "span-ingest", "policies": [{"name": "x", "type": "always_sample"}]}))[0].contains("span-ingest"));
    assert!(problems(serde_json::json!({"block_on_overflow": true, "policies": [{"name": "x", "type": "always_sample"}]}))[0].contains("decides the oldest traces early"));
    let warned = problems(
        serde_json::json!({"num_shards": 4, "policies": [{"name": "s", "type": "and", "and": {"and_sub_policy": [{"name": "x", "type": "string_attribute", "string_attribute": {"key": "k", "values": ["v"], "cache_max_size": 10}}]}}]}),
    );
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned
            .iter()
            .all(|w| w.starts_with("warning:") && w.contains("has no effect")),
        "{warned:?}"
    );
    assert!(
        warned[1].contains("policies[0].and.and_sub_policy[0].string_attribute.cache_max_size"),
        "{warned:?}"
    );
    assert!(problems(serde_json::json!({"policies": [{"name": "x", "type": "ottl_condition", "ottl_condition": {"error_mode": "explode", "span": ["name == \"a\""]}}]}))[0].contains("error_mode"));
    assert!(problems(serde_json::json!({"decision_wait": "10s", "num_traces": 10, "decision_cache": {"sampled_cache_size": 10}, "policies": [{"name": "x", "type": "always_sample"}]})).is_empty());
}

#[tokio::test(start_paused = true)]
async fn under_memory_pressure_the_oldest_traces_are_decided_early_and_memory_comes_back() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "60s",
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    // The memory limiter's gate, as a receiver uses it: reserve before handing a batch on, and
    // refuse (the client retries) while there is no room.
    let budget = 100_000;
    let gate = sluice_core::MemoryGate::new("memory_limiter", budget);
    let mut sent = 0;
    for i in 0..3000u32 {
        let mut b = batch(vec![span(i, 0, 10, i % 10 == 0, vec![])]);
        sent += b.size();
        let reservation = loop {
            match gate.reserve(b.size()) {
                Ok(r) => break r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        b.hold(reservation);
        p.process(b).await.unwrap();
        assert!(gate.in_flight() <= budget);
    }
    // 3000 single-span traces are several times the budget: they got in only because the oldest
    // were decided early, long before their 60 s were up, and the dropped ones gave their bytes
    // back.
    assert!(sent > budget * 2, "{sent}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = sink.traces();
    assert!(
        kept.len() > 100,
        "early decisions kept {} error traces",
        kept.len()
    );
    assert!(
        kept.keys().all(|i| i % 10 == 0),
        "only error traces are kept"
    );
    assert!(gate.in_flight() < budget, "{}", gate.in_flight());
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_trace_past_maximum_trace_size_bytes_is_dropped_with_its_late_spans() {
    let (p, sink, shutdown, tasks) = start(serde_json::json!({
        "decision_wait": "1s",
        "maximum_trace_size_bytes": 2000,
        "policies": [{"name": "all", "type": "always_sample"}]
    }));
    // Trace 1 grows past 2000 bytes; trace 2 stays small.
    for i in 0..40u8 {
        p.process(batch(vec![span(1, i, 10, false, vec![])]))
            .await
            .unwrap();
    }
    p.process(batch(vec![span(2, 0, 10, false, vec![])]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.traces().keys().copied().collect::<Vec<_>>(), vec![2]);
    // Its late spans follow: dropped.
    assert!(
        p.process(batch(vec![span(1, 99, 10, false, vec![])]))
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!sink.traces().contains_key(&1));
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}
