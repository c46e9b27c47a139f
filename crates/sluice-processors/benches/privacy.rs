//! The `redaction` processor's cost per span, on one request of 100 load-generator spans (the
//! shared fixtures, as in `sluice-core`'s `hot_path`): the built-in `pii` and `secrets` sets with
//! no personal data present (every string is checked, nothing is re-encoded), the same with an
//! email in one span in ten (those spans are decoded, redacted and re-encoded), and the
//! Collector's shape of config with `allowed_keys` (every span loses attributes).
//!
//! Then `transform` with four `replace_pattern` rules (endpoint normalization), `attributes`
//! inserting and deleting on server spans, and `filter` dropping one span in twenty.
//!
//! `cargo bench -p sluice-processors --bench privacy` (`ONLY=<case>` for one case and more rounds).
//!
//! Each case is timed as the best of 30 rounds of 100 requests, the cases interleaved round by
//! round: on a shared 2-core VM, Criterion's medians moved by 40% between runs of the same code,
//! while the best of many short rounds (the run the neighbours disturbed least) repeats within a
//! few percent.

use std::hint::black_box;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use sluice_core::{Batch, Output, PipelineContext, Processor, ProcessorFactory, Signal};
use sluice_processors::{AttributesFactory, FilterFactory, RedactionFactory, TransformFactory};
use tokio_util::sync::CancellationToken;

fn processor(config: serde_json::Value) -> Arc<dyn Processor> {
    built(&RedactionFactory, config)
}

fn built(factory: &dyn ProcessorFactory, config: serde_json::Value) -> Arc<dyn Processor> {
    let component = factory.build(factory.type_name(), &config).unwrap();
    component
        .instance(PipelineContext {
            id: "redaction".into(),
            pipeline: "traces".into(),
            signal: Signal::Traces,
            output: Output::new(
                "redaction",
                Signal::Traces,
                Arc::new(sluice_fixtures::Discard),
            ),
            shutdown: CancellationToken::new(),
        })
        .unwrap()
        .processor
}

/// One request of 100 spans; with `pii`, every tenth span carries an email attribute.
fn request(pii: bool) -> bytes::Bytes {
    let raw = sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos()).remove(0);
    if !pii {
        return raw.into();
    }
    let mut request = ExportTraceServiceRequest::decode(raw.as_slice()).unwrap();
    let mut n = 0;
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                if n % 10 == 0 {
                    span.attributes.push(KeyValue {
                        key: "user.email".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "user{n}@example.com"
                            ))),
                        }),
                        ..Default::default()
                    });
                }
                n += 1;
            }
        }
    }
    request.encode_to_vec().into()
}

type Case = (&'static str, Option<Arc<dyn Processor>>, bytes::Bytes);

fn cases() -> Vec<Case> {
    let sets = serde_json::json!({"allow_all_keys": true, "builtin_patterns": ["pii", "secrets"]});
    vec![
        // For scale: what taking the request as a batch costs without a processor.
        ("decode_only", None, request(false)),
        (
            "redaction_walk_only_allow_all_keys_no_patterns",
            Some(processor(serde_json::json!({"allow_all_keys": true}))),
            request(false),
        ),
        (
            "redaction_pii_and_secrets_sets_no_pii",
            Some(processor(sets.clone())),
            request(false),
        ),
        (
            "redaction_pii_and_secrets_sets_pii_in_10_percent",
            Some(processor(sets)),
            request(true),
        ),
        (
            "redaction_allowed_keys_and_blocked_values",
            Some(processor(serde_json::json!({
                "allowed_keys": ["http.method", "http.status_code", "http.route", "db.system"],
                "blocked_values": ["4[0-9]{12}(?:[0-9]{3})?", "5[1-5][0-9]{14}"],
            }))),
            request(false),
        ),
        (
            "transform_four_replace_patterns",
            Some(built(
                &TransformFactory,
                serde_json::json!({"trace_statements": [{"context": "span", "statements": [
                    r#"replace_pattern(name, "/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "/{id}")"#,
                    r#"replace_pattern(name, "/[0-9]+(/|$)", "/{id}$1")"#,
                    r#"replace_pattern(attributes["url.full"], "/[0-9]+(/|$)", "/{id}$1")"#,
                    r#"replace_pattern(attributes["http.route"], "/[0-9]+(/|$)", "/{id}$1")"#,
                ]}]}),
            )),
            request(false),
        ),
        (
            "attributes_insert_and_delete_on_server_spans",
            Some(built(
                &AttributesFactory,
                serde_json::json!({
                    "include": {"match_type": "strict", "span_kinds": ["SPAN_KIND_SERVER"]},
                    "actions": [
                        {"key": "tier", "value": "web", "action": "insert"},
                        {"key": "user_agent.original", "action": "delete"},
                    ],
                }),
            )),
            request(false),
        ),
        (
            "filter_dropping_5_percent",
            Some(built(
                &FilterFactory,
                // The fixture's span names end in `/items/<i % 7>`, and about 3% are errors: a
                // name and a status that together select about one span in twenty.
                serde_json::json!({"traces": {"span": [
                    r#"IsMatch(name, "/items/6$") and status.code == STATUS_CODE_ERROR"#,
                    r#"attributes["http.response.status_code"] == 404"#,
                    r#"name == "GET /api/v1/orders/{id}/items/5" and kind == SPAN_KIND_SERVER"#,
                ]}}),
            )),
            request(false),
        ),
    ]
}

/// One pass of `case` over `requests` requests.
fn run(runtime: &tokio::runtime::Runtime, case: &Case, requests: usize) -> std::time::Duration {
    let (_, processor, data) = case;
    let started = std::time::Instant::now();
    for _ in 0..requests {
        let batch = Batch::decode(Signal::Traces, data.clone()).unwrap();
        match processor {
            Some(p) => {
                black_box(runtime.block_on(p.process(black_box(batch))).unwrap());
            }
            None => {
                black_box(batch);
            }
        }
    }
    started.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let only = std::env::var("ONLY").ok();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| {
            only.as_deref()
                .is_none_or(|o| c.0 == o || c.0 == "decode_only")
        })
        .collect();
    // `cargo test --all-targets` runs this target without `--bench`: one pass of each case.
    if !std::env::args().any(|a| a == "--bench") {
        for case in &cases {
            run(&runtime, case, 1);
        }
        println!("privacy: every case runs (run with `cargo bench` to time them)");
        return;
    }
    let (rounds, requests) = if only.is_some() {
        (300, 100)
    } else {
        (30, 100)
    };
    let mut best = vec![std::time::Duration::MAX; cases.len()];
    for _ in 0..rounds {
        for (case, best) in cases.iter().zip(&mut best) {
            *best = (*best).min(run(&runtime, case, requests) / requests as u32);
        }
    }
    let decode = best[0].as_secs_f64() * 1e6;
    println!("| case | per 100 spans (best of {rounds} rounds) | per span over decode_only |");
    println!("|---|---:|---:|");
    for (case, best) in cases.iter().zip(&best) {
        let micros = best.as_secs_f64() * 1e6;
        println!(
            "| `{}` | {micros:.1} µs | {:.2} µs |",
            case.0,
            (micros - decode) / 100.0
        );
    }
}
