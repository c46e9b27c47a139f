//! The `prometheus` (scrape) exporter: what taking a batch costs per point, and how long a scrape
//! of 100,000 series takes, over HTTP as Prometheus scrapes it.
//!
//! `cargo bench -p sluice-prometheus --bench scrape`
//!
//! The load generator's metrics (100 points a request, a third of them histograms of 15
//! buckets), each request its own instance so that every point is a series of its own: 1,000
//! requests hold 100,000 points. Timed as the best of rounds, as the privacy bench is (this VM's
//! noise moves medians by tens of percent).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The sluice binary's allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use sluice_core::{Batch, BuiltExporter, DirectExporter, ExporterFactory, HelperSettings, Signal};
use sluice_prometheus::ScrapeExporterFactory;
use tokio_util::sync::CancellationToken;

fn exporter(port: u16) -> Arc<dyn DirectExporter> {
    let config = serde_json::json!({"endpoint": format!("127.0.0.1:{port}")});
    match ScrapeExporterFactory
        .build(
            "prometheus",
            &config,
            &mut HelperSettings::default(),
            &sluice_core::ExporterContext::default(),
        )
        .unwrap()
    {
        BuiltExporter::Direct(e) => e,
        BuiltExporter::Push(_) => unreachable!("the prometheus exporter has no queue"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let requests = if quick { 10 } else { 1_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = sluice_fixtures::pool(Signal::Metrics, 100, requests, sluice_fixtures::now_nanos());
    let points = 100 * requests;
    runtime.block_on(async move {
        let port = free_port();
        let exporter = exporter(port);
        let shutdown = CancellationToken::new();
        exporter.start(shutdown.clone());
        // Taking the batches: every point a new series the first round, an update after.
        let mut take = Duration::MAX;
        for _ in 0..if quick { 1 } else { 5 } {
            let started = Instant::now();
            for request in &pool {
                let batch = Batch::decode(Signal::Metrics, request.clone().into()).unwrap();
                exporter.consume(black_box(batch)).await.unwrap();
            }
            take = take.min(started.elapsed());
        }
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/metrics");
        let mut scrape = Duration::MAX;
        let mut bytes = 0;
        for _ in 0..if quick { 1 } else { 10 } {
            let started = Instant::now();
            let page = client.get(&url).send().await.unwrap().text().await.unwrap();
            scrape = scrape.min(started.elapsed());
            bytes = page.len();
        }
        let series = {
            let page = client.get(&url).send().await.unwrap().text().await.unwrap();
            page.lines().filter(|l| !l.starts_with('#')).count()
        };
        shutdown.cancel();
        if quick {
            assert!(series > 0, "the page is empty");
            println!("scrape: {points} points taken, {series} series served (run with `cargo bench` to time it)");
            return;
        }
        println!("| step | best of rounds | per point or series |");
        println!("|---|---:|---:|");
        println!(
            "| take {requests} requests ({points} points, after the first round updates of existing series) | {:.1} ms | {:.2} µs a point |",
            take.as_secs_f64() * 1e3,
            take.as_secs_f64() * 1e6 / points as f64
        );
        println!(
            "| scrape over HTTP ({series} series lines, {:.1} MiB) | {:.1} ms | {:.2} µs a series line |",
            bytes as f64 / f64::from(1u32 << 20),
            scrape.as_secs_f64() * 1e3,
            scrape.as_secs_f64() * 1e6 / series as f64
        );
    });
}
