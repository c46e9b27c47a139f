use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as PbLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PbSpan};
use sluice_fixtures::kv;

fn config(yaml: serde_json::Value) -> ProbabilisticSamplerConfig {
    serde_json::from_value(yaml).unwrap()
}

fn span(tid: &str, ts: &str, attrs: Vec<KeyValue>) -> PbSpan {
    PbSpan {
        trace_id: hex::decode(tid).unwrap(),
        span_id: vec![0, 0, 0, 0, 0xfe, 0xfe, 0xfe, 0xfe],
        trace_state: ts.into(),
        name: "spanName".into(),
        attributes: attrs,
        ..Default::default()
    }
}

fn traces(spans: Vec<PbSpan>) -> Batch {
    sluice_fixtures::traces_batch(Vec::new(), spans)
}

/// The spans a sampler keeps, and the counts by (policy, sampled).
fn run(rules: &Rules, batch: Batch) -> (Vec<PbSpan>, Counts) {
    let mut editor = Decide {
        rules,
        counts: Counts::default(),
    };
    let batch = batch.edit(&mut editor);
    (sluice_fixtures::spans(&batch), editor.counts)
}

fn one(c: &ProbabilisticSamplerConfig, s: PbSpan) -> Option<String> {
    let (kept, _) = run(&Rules::new(c, false), traces(vec![s]));
    kept.into_iter().next().map(|s| s.trace_state)
}

/// As [`one`], for a span sluice's intake would refuse (an all-zero trace id), which a
/// processor must still survive.
fn one_unchecked(c: &ProbabilisticSamplerConfig, s: PbSpan) -> Option<String> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![s],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = Batch::from_trusted(Signal::Traces, request.encode_to_vec().into(), 1);
    let (kept, _) = run(&Rules::new(c, false), batch);
    kept.into_iter().next().map(|s| s.trace_state)
}

#[test]
fn hash_seed_decisions_equal_the_collectors_on_its_100_vectors() {
    let vectors = include_str!("hash_seed_50pct.txt");
    let mut checked = 0;
    for line in vectors.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split(' ');
        let seed: u32 = parts.next().unwrap().parse().unwrap();
        let tid = parts.next().unwrap();
        let expected: bool = parts.next().unwrap().parse().unwrap();
        let c = config(serde_json::json!({"sampling_percentage": 50, "hash_seed": seed}));
        let kept = one(&c, span(tid, "", vec![])).is_some();
        assert_eq!(kept, expected, "seed {seed} trace {tid}");
        checked += 1;
    }
    assert_eq!(checked, 100);
}

#[test]
fn hash_seed_writes_rv_and_the_14_bit_threshold_on_what_it_keeps() {
    for (pct, tvalue) in [
        (100.0, "0"),
        (75.0, "4"),
        (50.0, "8"),
        (25.0, "c"),
        (10.0, "e668"),
        (100.0 / 3.0, "aaac"),
    ] {
        let c = config(serde_json::json!({"sampling_percentage": pct, "mode": "hash_seed"}));
        let rules = Rules::new(&c, false);
        let mut found = 0;
        for i in 1u64..2000 {
            let tid = format!("{:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
            let Some(s) = run(&rules, traces(vec![span(&tid, "", vec![])])).0.pop() else {
                continue;
            };
            let ts = TraceState::parse(&s.trace_state).unwrap();
            assert_eq!(ts.ot.threshold().unwrap().tvalue(), tvalue, "{pct}%");
            assert!(
                ts.ot
                    .threshold()
                    .unwrap()
                    .should_sample(ts.ot.randomness().unwrap())
            );
            assert!(s.trace_state.starts_with("ot=rv:"), "{}", s.trace_state);
            found += 1;
        }
        assert!(found > 100, "{pct}%: {found}");
    }
}

/// The Collector's `Test_tracesamplerprocessor_TraceState` cases: (name, percent, precision,
/// arriving tracestate, trace id, sampling.priority, expected tracestate when equalizing and
/// when proportional, `None` for dropped).
#[test]
fn consistent_modes_read_and_write_tracestate_as_the_collector_does() {
    let default_tid = "fefefefefefefefefe80000000000000";
    // Samples at every probability: the last 14 digits are all `f`.
    let improbable = "111111111111111111ffffffffffffff";
    type Case<'a> = (
        &'a str,
        f32,
        u8,
        &'a str,
        &'a str,
        Option<i64>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "100 percent",
            100.0,
            4,
            "",
            default_tid,
            None,
            Some("ot=th:0"),
            Some("ot=th:0"),
        ),
        (
            "50 percent sampled",
            50.0,
            4,
            "",
            default_tid,
            None,
            Some("ot=th:8"),
            Some("ot=th:8"),
        ),
        (
            "1 percent sampled",
            1.0,
            0,
            "ot=rv:FD70A3D70A3D71",
            default_tid,
            None,
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
        ),
        (
            "1 percent sampled with rvalue and precision 4",
            1.0,
            4,
            "ot=rv:FD70A3D70A3D71",
            default_tid,
            None,
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
        ),
        (
            "1 percent with rvalue at precision 3 rounds up",
            1.0,
            3,
            "ot=rv:FD70A3D70A3D71",
            default_tid,
            None,
            None,
            None,
        ),
        (
            "25 percent sampled",
            25.0,
            4,
            "",
            "ddddddddddddddddddc0000000000000",
            None,
            Some("ot=th:c"),
            Some("ot=th:c"),
        ),
        (
            "25 percent unsampled",
            25.0,
            4,
            "",
            "ddddddddddddddddddb0000000000000",
            None,
            None,
            None,
        ),
        (
            "incoming 50 percent at 25 percent not sampled",
            25.0,
            4,
            "ot=th:8",
            default_tid,
            None,
            None,
            None,
        ),
        (
            "incoming 50 percent at 25 percent sampled",
            25.0,
            4,
            "ot=th:8",
            "ffffffffffffffffffffffffffffffff",
            None,
            Some("ot=th:c"),
            Some("ot=th:e"),
        ),
        (
            "tiny probability rounding",
            100.0 / 16384.0,
            0,
            "ot=th:fffc",
            improbable,
            None,
            Some("ot=th:fffc"),
            Some("ot=th:fffffff"),
        ),
        (
            "almost 100pct sampling",
            ((1.0 - 8e-7) * 100.0) as f32,
            10,
            "",
            improbable,
            None,
            Some("ot=th:00000cccccccd"),
            Some("ot=th:00000cccccccd"),
        ),
        (
            "probability underflow",
            1.0 / 16.0,
            0,
            "ot=th:fffffffffffff8",
            improbable,
            None,
            Some("ot=th:fffffffffffff8"),
            None,
        ),
        (
            "1 percent not sampled with rvalue",
            1.0,
            0,
            "ot=rv:FD70A3D70A3D70",
            default_tid,
            None,
            None,
            None,
        ),
        (
            "49 percent not sampled",
            49.0,
            4,
            "",
            default_tid,
            None,
            None,
            None,
        ),
        (
            "1 percent sampled with tid",
            1.0,
            4,
            "",
            "a0a0a0a0a0a0a0a0a0fe000000000000",
            None,
            Some("ot=th:fd70a"),
            Some("ot=th:fd70a"),
        ),
        (
            "sampled by priority",
            1.0,
            4,
            "",
            default_tid,
            Some(2),
            Some("ot=th:0"),
            Some("ot=th:0"),
        ),
        (
            "not sampled by priority",
            99.0,
            4,
            "",
            default_tid,
            Some(0),
            None,
            None,
        ),
        (
            "incoming 50 percent",
            50.0,
            4,
            "ot=rv:90000000000000;th:80000000000000",
            default_tid,
            None,
            Some("ot=rv:90000000000000;th:8"),
            None,
        ),
        (
            "incoming 50 percent with no rvalue",
            50.0,
            4,
            "ot=th:8",
            default_tid,
            None,
            Some("ot=th:8"),
            None,
        ),
        (
            "equalizing vs proportional",
            50.0,
            4,
            "ot=rv:c0000000000000;th:8",
            default_tid,
            None,
            Some("ot=rv:c0000000000000;th:8"),
            Some("ot=rv:c0000000000000;th:c"),
        ),
        (
            "inconsistent threshold arriving",
            100.0,
            4,
            "ot=rv:40000000000000;th:8",
            default_tid,
            None,
            Some("ot=rv:40000000000000;th:0"),
            Some("ot=rv:40000000000000;th:0"),
        ),
        (
            "inconsistent threshold not sampled",
            1.0,
            4,
            "ot=rv:40000000000000;th:8",
            default_tid,
            None,
            None,
            None,
        ),
        (
            "40 percent precision 3",
            40.0,
            3,
            "ot=rv:a0000000000000",
            default_tid,
            None,
            Some("ot=rv:a0000000000000;th:99a"),
            Some("ot=rv:a0000000000000;th:99a"),
        ),
        (
            "arriving 50 percent sampled at 40 percent",
            40.0,
            6,
            "ot=th:8",
            "a0a0a0a0a0a0a0a0a0d0000000000000",
            None,
            Some("ot=th:99999a"),
            Some("ot=th:cccccd"),
        ),
        (
            "arriving 50 percent sampled at 40 percent partly sampled",
            40.0,
            3,
            "ot=th:8",
            "a0a0a0a0a0a0a0a0a0b0000000000000",
            None,
            Some("ot=th:99a"),
            None,
        ),
        (
            "arriving 50 percent sampled at 40 percent not sampled",
            40.0,
            3,
            "ot=th:8",
            "a0a0a0a0a0a0a0a0a080000000000000",
            None,
            None,
            None,
        ),
        (
            "200 percent equals 100 percent",
            200.0,
            4,
            "",
            default_tid,
            None,
            Some("ot=th:0"),
            Some("ot=th:0"),
        ),
    ];
    for (name, pct, precision, ts, tid, priority, equalizing, proportional) in cases {
        for (mode, expected) in [("equalizing", equalizing), ("proportional", proportional)] {
            let mut c = config(serde_json::json!({"sampling_percentage": pct, "mode": mode}));
            c.sampling_precision = precision;
            // The Collector's table builds its configs by hand, so `fail_closed` is false but
            // where a case sets it.
            c.fail_closed = name == "inconsistent threshold not sampled";
            let attrs = priority
                .map(|p| vec![kv("sampling.priority", any_value::Value::IntValue(p))])
                .unwrap_or_default();
            let got = one(&c, span(tid, ts, attrs));
            assert_eq!(got.as_deref(), expected, "{mode} {name}");
        }
    }
}

#[test]
fn unreadable_randomness_is_dropped_when_failing_closed_and_kept_otherwise() {
    let tid = "fefefefefefefefefe80000000000000";
    for (name, tid, ts) in [
        ("missing randomness", "00000000000000000000000000000000", ""),
        ("invalid r-value", tid, "ot=rv:abababababababab"),
        ("invalid t-value", tid, "ot=th:abababababababab"),
        ("t-value syntax", tid, "ot=th:-1"),
        (
            "inconsistent t-value trace id",
            "ffffffffffffffffff70000000000000",
            "ot=th:8",
        ),
        (
            "inconsistent t-value r-value",
            tid,
            "ot=th:8;rv:70000000000000",
        ),
    ] {
        for mode in ["equalizing", "proportional"] {
            let closed = config(serde_json::json!({"sampling_percentage": 100, "mode": mode}));
            assert_eq!(
                one_unchecked(&closed, span(tid, ts, vec![])),
                None,
                "{mode} {name}"
            );
            let open = config(
                serde_json::json!({"sampling_percentage": 100, "mode": mode, "fail_closed": false}),
            );
            assert!(
                one_unchecked(&open, span(tid, ts, vec![])).is_some(),
                "{mode} {name}"
            );
        }
    }
    // In hash_seed mode, arriving consistent-sampling values are an error.
    let c = config(serde_json::json!({"sampling_percentage": 100, "hash_seed": 1}));
    assert_eq!(one(&c, span(tid, "ot=th:8", vec![])), None);
    assert_eq!(one(&c, span(tid, "ot=rv:80000000000000", vec![])), None);
}

#[test]
fn sampling_priority_overrides_in_every_type_the_collector_reads() {
    let tid = "01000000000000000000000000000000";
    let cases = [
        (any_value::Value::IntValue(2), 0.0, true),
        (any_value::Value::DoubleValue(1.0), 0.0, true),
        (any_value::Value::StringValue("1".into()), 0.0, true),
        (any_value::Value::IntValue(0), 100.0, false),
        (any_value::Value::DoubleValue(0.0), 100.0, false),
        (any_value::Value::StringValue("0".into()), 100.0, false),
        (any_value::Value::IntValue(-1), 100.0, true),
        (any_value::Value::StringValue("NaN".into()), 100.0, true),
    ];
    for mode in ["hash_seed", "equalizing", "proportional"] {
        for (value, pct, kept) in cases.clone() {
            let c = config(serde_json::json!({"sampling_percentage": pct, "mode": mode}));
            let got = one(
                &c,
                span(tid, "", vec![kv("sampling.priority", value.clone())]),
            );
            assert_eq!(got.is_some(), kept, "{mode} {value:?} at {pct}%");
        }
    }
}

#[test]
fn the_kept_share_of_100k_random_traces_is_within_binomial_bounds() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 100_000usize;
    let spans: Vec<PbSpan> = (0..n)
        .map(|_| {
            let tid: [u8; 16] = rng.random();
            span(&hex::encode(tid), "", vec![])
        })
        .collect();
    for mode in ["hash_seed", "equalizing", "proportional"] {
        for pct in [1.0f64, 10.0, 50.0] {
            let c = config(serde_json::json!({"sampling_percentage": pct, "mode": mode}));
            let (kept, counts) = run(&Rules::new(&c, false), traces(spans.clone()));
            let p = pct / 100.0;
            let mean = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            let got = kept.len() as f64;
            assert!(
                (got - mean).abs() < 5.0 * sd,
                "{mode} {pct}%: kept {got}, expected {mean} ± {}",
                5.0 * sd
            );
            let source = if mode == "hash_seed" {
                Source::TraceIdHash
            } else {
                Source::TraceIdW3c
            };
            assert_eq!(counts.0[source.index()][1], kept.len() as u64);
            assert_eq!(counts.0[source.index()][0], (n - kept.len()) as u64);
        }
    }
}

fn logs(records: Vec<PbLog>) -> Batch {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::decode(Signal::Logs, request.encode_to_vec().into()).unwrap()
}

fn kept_logs(rules: &Rules, batch: Batch) -> Vec<PbLog> {
    let mut editor = Decide {
        rules,
        counts: Counts::default(),
    };
    let batch = batch.edit(&mut editor);
    ExportLogsServiceRequest::decode(batch.data().clone())
        .unwrap()
        .resource_logs
        .into_iter()
        .flat_map(|r| r.scope_logs)
        .flat_map(|s| s.log_records)
        .collect()
}

fn attr<'a>(record: &'a PbLog, key: &str) -> Option<&'a str> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

#[test]
fn logs_sample_by_a_record_attribute_and_record_their_randomness_and_threshold() {
    let c = config(serde_json::json!({
        "sampling_percentage": 25, "attribute_source": "record", "from_attribute": "log.id"
    }));
    let rules = Rules::new(&c, true);
    let records: Vec<PbLog> = (0..4000)
        .map(|i| PbLog {
            attributes: vec![kv(
                "log.id",
                any_value::Value::StringValue(format!("id-{i}")),
            )],
            ..Default::default()
        })
        .collect();
    let kept = kept_logs(&rules, logs(records.clone()));
    assert!((800..1200).contains(&kept.len()), "{}", kept.len());
    for record in &kept {
        assert_eq!(attr(record, "sampling.threshold"), Some("c"));
        let r = Randomness::parse(attr(record, "sampling.randomness").unwrap()).unwrap();
        assert!(Threshold::parse("c").unwrap().should_sample(r));
        // The decision is the hash of the attribute's value with the seed.
        let id = attr(record, "log.id").unwrap();
        assert!(u64::from(seeded_hash(id.as_bytes(), 0) & 0x3fff) < 4096);
    }
    // The same records decide the same way again.
    assert_eq!(kept_logs(&rules, logs(records)).len(), kept.len());
}

#[test]
fn a_log_priority_attribute_raises_the_probability_to_its_percentage() {
    let c = config(serde_json::json!({
        "sampling_percentage": 1, "mode": "equalizing", "sampling_priority": "priority"
    }));
    let rules = Rules::new(&c, true);
    let records: Vec<PbLog> = (0u64..2000)
        .map(|i| PbLog {
            trace_id: [
                i.to_be_bytes(),
                (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes(),
            ]
            .concat(),
            attributes: vec![kv("priority", any_value::Value::DoubleValue(100.0))],
            ..Default::default()
        })
        .collect();
    let kept = kept_logs(&rules, logs(records));
    assert_eq!(kept.len(), 2000);
    assert!(
        kept.iter()
            .all(|r| attr(r, "sampling.threshold") == Some("0"))
    );
}

#[test]
fn unusable_configs_are_refused_with_the_key() {
    let problems = |v: serde_json::Value| {
        ProbabilisticSamplerFactory
            .check("processors.probabilistic_sampler", &v)
            .into_iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        problems(serde_json::json!({"sampling_percentage": -1}))[0]
            .contains("negative sampling rate")
    );
    assert!(problems(serde_json::json!({"sampling_percentage": 1e-20}))[0].contains("too small"));
    assert!(
        problems(serde_json::json!({"sampling_precision": 15}))[0].contains("sampling_precision")
    );
    assert!(problems(serde_json::json!({"mode": "random"}))[0].contains("mode"));
    assert!(
        problems(serde_json::json!({"attribute_source": "record"}))[0].contains("from_attribute")
    );
    assert!(problems(serde_json::json!({"sampling_percentage": 15.3, "hash_seed": 22})).is_empty());
}
