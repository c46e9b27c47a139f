//! The `loadbalancing` exporter's own cost per span: splitting a request of 100 load-generator
//! spans (the shared fixtures) by the owner of each span's trace id on a ring of three backends,
//! which it does before every send; what follows is the `otlp` exporter's send to each owner.
//!
//! `cargo bench -p sluice-otlp --bench loadbalancing`. Best of 30 rounds of 1,000 requests, for
//! the reason the `privacy` bench gives (a noisy shared 2-core machine).

use std::hint::black_box;

use sluice_core::{Batch, Signal};
use sluice_otlp::{Ring, RoutingKey};

fn main() {
    let data: bytes::Bytes =
        sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos())
            .remove(0)
            .into();
    let ring = Ring::new(&["gw-1:4317".into(), "gw-2:4317".into(), "gw-3:4317".into()]);
    let (rounds, requests) = if std::env::args().any(|a| a == "--bench") {
        (30, 1000)
    } else {
        (1, 1)
    };
    let mut best = [std::time::Duration::MAX; 2];
    for _ in 0..rounds {
        for (case, best) in best.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            for _ in 0..requests {
                let batch = Batch::decode(Signal::Traces, data.clone()).unwrap();
                if case == 1 {
                    black_box(ring.split(batch, RoutingKey::TraceId, &[], |_| true));
                } else {
                    black_box(batch);
                }
            }
            *best = (*best).min(started.elapsed() / requests as u32);
        }
    }
    let per_span = |d: std::time::Duration| d.as_nanos() as f64 / 100.0;
    println!(
        "decode_only {:.0} ns/span; split by trace-id owner, 3 backends: {:.0} ns/span ({:.0} over decoding)",
        per_span(best[0]),
        per_span(best[1]),
        per_span(best[1]) - per_span(best[0])
    );
}
