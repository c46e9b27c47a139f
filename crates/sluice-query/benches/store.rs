//! The `memory` exporter's cost per span on ingest: decoding a batch of the load generator's spans
//! (1,000, as the batch processor builds them from 10 requests) and filing them by trace,
//! eviction included once the store is full; against decoding the same batch with prost alone,
//! for scale. And what a search of a full store costs.
//!
//! `cargo bench -p sluice-query`

use std::hint::black_box;

// The sluice binary's allocator: these steps allocate, and glibc's malloc would dominate.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_core::Signal;
use sluice_core::store::{TraceQuery, TraceReader};
use sluice_query::MemoryStore;

fn benches(c: &mut Criterion) {
    let now = sluice_fixtures::now_nanos();
    let data = sluice_fixtures::pool(Signal::Traces, 100, 10, now).concat();
    let spans = ExportTraceServiceRequest::decode(&data[..])
        .unwrap()
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum::<usize>();
    let mut g = c.benchmark_group("memory_store_1000_spans");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    // A 16 MiB store, kept full: every insert evicts about as much as it adds.
    let store = MemoryStore::new("bench", 16 << 20, 0);
    g.bench_function("decode_and_insert", |b| {
        b.iter(|| store.insert(ExportTraceServiceRequest::decode(black_box(&data[..])).unwrap()))
    });
    g.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let held = store.len();
    let mut g = c.benchmark_group("memory_store_search");
    g.throughput(Throughput::Elements(held as u64));
    let query = TraceQuery::window(0, u64::MAX, 20);
    g.bench_function("find_trace_ids_full_store", |b| {
        b.iter(|| {
            runtime
                .block_on(store.find_trace_ids(black_box(&query)))
                .unwrap()
        })
    });
    g.finish();

    // The default store (64 MiB) full of small traces: every span of the batch gets a fresh
    // trace id in groups of 10, so the store holds many traces of 10 spans, as a service's
    // ordinary traffic would fill it. Searches read every trace: their cost grows with it.
    let store = MemoryStore::new("bench", 64 << 20, 0);
    let template = ExportTraceServiceRequest::decode(&data[..]).unwrap();
    let mut next_trace = 0u64;
    while store.bytes() < 60 << 20 {
        let mut request = template.clone();
        for span in request
            .resource_spans
            .iter_mut()
            .flat_map(|r| &mut r.scope_spans)
            .flat_map(|s| &mut s.spans)
        {
            next_trace += 1;
            span.trace_id = [(next_trace / 10).to_be_bytes(), [0x5a; 8]].concat();
        }
        store.insert(request);
    }
    let held = next_trace;
    eprintln!(
        "memory store of small traces: {} traces, {held} spans inserted, {} MiB held",
        store.len(),
        store.bytes() >> 20
    );
    let mut g = c.benchmark_group("memory_store_64mib_small_traces");
    g.throughput(Throughput::Elements(store.len() as u64));
    g.sample_size(20);
    let newest = TraceQuery::window(0, u64::MAX, 20);
    g.bench_function("newest_20", |b| {
        b.iter(|| {
            runtime
                .block_on(store.find_trace_ids(black_box(&newest)))
                .unwrap()
        })
    });
    let mut failed = TraceQuery::window(0, u64::MAX, 20);
    failed.status = Some(2);
    failed.min_duration = Some(u64::MAX / 2);
    g.bench_function("no_match_scans_every_span", |b| {
        b.iter(|| {
            runtime
                .block_on(store.find_trace_ids(black_box(&failed)))
                .unwrap()
        })
    });
    g.bench_function("operation_stats_all", |b| {
        b.iter(|| {
            runtime
                .block_on(store.operation_stats(None, 0, u64::MAX / 2))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
