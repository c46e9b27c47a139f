//! The samplers' cost per span, on one request of 100 load-generator spans (the shared fixtures,
//! as in `sluice-processors`' `privacy` bench).
//!
//! `probabilistic_sampler` at 10% in its three modes (most spans dropped; the kept ones get their
//! `tracestate` rewritten), and at 100% in `hash_seed` mode (every span rewritten: the worst
//! case).
//!
//! `cargo bench -p sluice-sampling --bench sampling` (`ONLY=<case>` for one case and more rounds).
//! Each case is timed as the best of 30 rounds of 100 requests, the cases interleaved round by
//! round, for the reason the `privacy` bench gives (a noisy shared 2-core machine).

use std::hint::black_box;
use std::sync::Arc;

use sluice_core::{Batch, Output, PipelineContext, Processor, ProcessorFactory, Signal};
use sluice_sampling::ProbabilisticSamplerFactory;
use tokio_util::sync::CancellationToken;

fn built(factory: &dyn ProcessorFactory, config: serde_json::Value) -> Arc<dyn Processor> {
    let component = factory.build(factory.type_name(), &config).unwrap();
    component
        .instance(PipelineContext {
            id: factory.type_name().into(),
            pipeline: "traces".into(),
            signal: Signal::Traces,
            output: Output::new(
                factory.type_name(),
                Signal::Traces,
                Arc::new(sluice_fixtures::Discard),
            ),
            shutdown: CancellationToken::new(),
        })
        .unwrap()
        .processor
}

type Case = (&'static str, Option<Arc<dyn Processor>>);

fn cases() -> Vec<Case> {
    let sampler = |config: serde_json::Value| Some(built(&ProbabilisticSamplerFactory, config));
    vec![
        ("decode_only", None),
        (
            "probabilistic_hash_seed_10_percent",
            sampler(serde_json::json!({"sampling_percentage": 10, "hash_seed": 7})),
        ),
        (
            "probabilistic_hash_seed_100_percent_all_rewritten",
            sampler(serde_json::json!({"sampling_percentage": 100, "hash_seed": 7})),
        ),
        (
            "probabilistic_equalizing_10_percent",
            sampler(serde_json::json!({"sampling_percentage": 10, "mode": "equalizing"})),
        ),
        (
            "probabilistic_proportional_10_percent",
            sampler(serde_json::json!({"sampling_percentage": 10, "mode": "proportional"})),
        ),
    ]
}

fn request() -> bytes::Bytes {
    sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos())
        .remove(0)
        .into()
}

/// One pass of `case` over `requests` requests.
fn run(
    runtime: &tokio::runtime::Runtime,
    case: &Case,
    data: &bytes::Bytes,
    requests: usize,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    for _ in 0..requests {
        let batch = Batch::decode(Signal::Traces, data.clone()).unwrap();
        match &case.1 {
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
    let data = request();
    if !std::env::args().any(|a| a == "--bench") {
        for case in &cases {
            run(&runtime, case, &data, 1);
        }
        println!("sampling: every case runs (run with `cargo bench` to time them)");
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
            *best = (*best).min(run(&runtime, case, &data, requests) / requests as u32);
        }
    }
    let base = best[0];
    for (case, best) in cases.iter().zip(&best) {
        let per_span = best.as_nanos() as f64 / 100.0;
        let over = best.saturating_sub(base).as_nanos() as f64 / 100.0;
        println!(
            "{:<52} {:>8.0} ns/span  (+{:>6.0} ns/span over decoding)",
            case.0, per_span, over
        );
    }
}
