//! What compressing an export costs: every candidate compressor, at the levels an exporter would
//! use, on one batch of the load generator's payloads (sluice-fixtures) per signal, as large as
//! the batch processor's default (8192 items). Reports the median CPU time per MiB of input, the
//! cost per item and the compression ratio, as a Markdown table for `bench/RESULTS.md`.
//!
//! Candidates for gzip (the Collector's default `compression`): `miniz_oxide` (`flate2`'s default
//! backend, which sluice used before this benchmark), `zlib-rs` called on the whole buffer,
//! sluice's export path (`flate2` on its `zlib-rs` backend, streaming), and `libdeflate`
//! (whole-buffer only, which is what an exporter has: the batch is encoded before it is
//! compressed). Then zstd and Snappy as sluice's exporters send them, the Collector's other
//! `compression` values, for their cost beside gzip's. Every output is decompressed and compared
//! with the input, so a candidate that compresses wrongly fails the benchmark.
//!
//! `cargo bench -p sluice-net --bench compression` (`QUICK=1` for one batch and fewer rounds).

use std::io::Read;
use std::time::{Duration, Instant};

use sluice_core::Signal;
use sluice_net::{Coding, Compression, CompressionParams, Compressor, decompress};

/// One candidate: its name, its level, and the function that compresses a whole buffer.
struct Candidate {
    name: &'static str,
    level: i32,
    /// `true` when the output is gzip (checked by decompressing with `flate2`).
    gzip: bool,
    compress: fn(&[u8], i32) -> Vec<u8>,
}

/// What sluice's exporters send, through the production path: `flate2` on its `zlib-rs` backend,
/// zstd and Snappy as [`Compressor`] runs them.
fn sluice(compression: Compression, data: &[u8], level: i32) -> Vec<u8> {
    let level = (level > 0).then_some(level);
    Compressor::new(compression, CompressionParams { level })
        .unwrap()
        .compress(data, false)
        .unwrap()
        .unwrap()
        .to_vec()
}

fn sluice_gzip(data: &[u8], level: i32) -> Vec<u8> {
    sluice(Compression::Gzip, data, level)
}

/// `miniz_oxide`, `flate2`'s default backend (what sluice exported with before this benchmark),
/// with the gzip header and trailer `flate2` puts around it.
fn miniz(data: &[u8], level: i32) -> Vec<u8> {
    let level = u8::try_from(level).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, level));
    out.extend(crc32fast::hash(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn zlib_rs(data: &[u8], level: i32) -> Vec<u8> {
    let mut config = zlib_rs::DeflateConfig::new(level);
    // 15 bits of window, plus 16: a gzip wrapper rather than zlib's.
    config.window_bits = 31;
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 32];
    let (written, code) = zlib_rs::compress_slice(&mut out, data, config);
    assert_eq!(code, zlib_rs::ReturnCode::Ok);
    let len = written.len();
    out.truncate(len);
    out
}

fn libdeflate(data: &[u8], level: i32) -> Vec<u8> {
    let level = libdeflater::CompressionLvl::new(level).unwrap();
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
    let len = compressor.gzip_compress(data, &mut out).unwrap();
    out.truncate(len);
    out
}

fn zstd(data: &[u8], level: i32) -> Vec<u8> {
    sluice(Compression::Zstd, data, level)
}

fn snappy(data: &[u8], _level: i32) -> Vec<u8> {
    sluice(Compression::Snappy, data, 0)
}

fn candidates() -> Vec<Candidate> {
    type Compress = fn(&[u8], i32) -> Vec<u8>;
    let gzips: [(&'static str, Compress); 4] = [
        ("miniz_oxide (flate2's default)", miniz),
        ("zlib-rs, whole buffer", zlib_rs),
        ("sluice: flate2 on zlib-rs", sluice_gzip),
        ("libdeflate", libdeflate),
    ];
    let mut all = Vec::new();
    for level in 1..=6 {
        for (name, compress) in gzips {
            all.push(Candidate {
                name,
                level,
                gzip: true,
                compress,
            });
        }
    }
    for level in [1, 3] {
        all.push(Candidate {
            name: "zstd",
            level,
            gzip: false,
            compress: zstd,
        });
    }
    all.push(Candidate {
        name: "snappy",
        level: 0,
        gzip: false,
        compress: snappy,
    });
    all
}

/// A batch of about `items` items: load-generator requests of 100 items, concatenated as the
/// batch processor does (concatenated requests are one valid request).
fn batch(signal: Signal, items: usize) -> Vec<u8> {
    sluice_fixtures::pool(signal, 100, items / 100, sluice_fixtures::now_nanos()).concat()
}

fn check(candidate: &Candidate, input: &[u8], output: &[u8]) {
    let restored = if candidate.gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(output)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if candidate.name == "zstd" {
        zstd::bulk::decompress(output, input.len()).unwrap()
    } else {
        snap::raw::Decoder::new().decompress_vec(output).unwrap()
    };
    assert!(
        restored == input,
        "{} {} does not round-trip",
        candidate.name,
        candidate.level
    );
}

/// The median time of compressing `input` once, over at least `rounds` rounds and 300 ms.
fn median(candidate: &Candidate, input: &[u8], rounds: usize) -> Duration {
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < rounds || started.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        let out = (candidate.compress)(std::hint::black_box(input), candidate.level);
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    times[times.len() / 2]
}

/// What receiving one compressed request of 100 spans costs: [`sluice_net::decompress`] with its
/// size cap, as the receivers call it.
fn decompression() {
    let request =
        sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos()).remove(0);
    println!();
    println!(
        "| coding (one request of 100 spans, {} bytes) | compressed bytes | µs to decompress | ns per span |",
        request.len()
    );
    println!("|---|---:|---:|---:|");
    let cases = [
        (Coding::Gzip, sluice_gzip(&request, 1)),
        (Coding::Zstd, zstd(&request, 3)),
        (Coding::Snappy, snappy(&request, 0)),
    ];
    for (coding, body) in cases {
        let out = decompress(coding, &body, 64 << 20).unwrap().unwrap();
        assert!(out == request, "{coding:?} does not round-trip");
        let mut times = Vec::new();
        let started = Instant::now();
        while times.len() < 200 || started.elapsed() < Duration::from_millis(300) {
            let t = Instant::now();
            std::hint::black_box(
                decompress(coding, std::hint::black_box(&body), 64 << 20).unwrap(),
            );
            times.push(t.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2].as_secs_f64();
        println!(
            "| {} | {} | {:.1} | {:.0} |",
            coding.name(),
            body.len(),
            median * 1e6,
            median * 1e9 / 100.0
        );
    }
}

fn main() {
    // `cargo test --all-targets` runs this target without `--bench` (and unoptimized): it then
    // only checks that every candidate round-trips, on a small batch, timing nothing.
    if !std::env::args().any(|a| a == "--bench") {
        let input = batch(Signal::Traces, 300);
        for candidate in candidates() {
            check(
                &candidate,
                &input,
                &(candidate.compress)(&input, candidate.level),
            );
        }
        println!("compression: every candidate round-trips (run with `cargo bench` to time them)");
        return;
    }
    let quick = std::env::var_os("QUICK").is_some();
    if std::env::var_os("DECOMPRESSION").is_some() {
        decompression();
        return;
    }
    let items = 8200;
    let rounds = if quick { 1 } else { 15 };
    let signals: &[Signal] = if quick {
        &[Signal::Traces]
    } else {
        &Signal::ALL
    };
    println!("| signal | compressor | level | ms per MiB | ns per item | ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    for &signal in signals {
        let input = batch(signal, items);
        let mib = input.len() as f64 / f64::from(1u32 << 20);
        for candidate in candidates() {
            let output = (candidate.compress)(&input, candidate.level);
            check(&candidate, &input, &output);
            let time = median(&candidate, &input, rounds).as_secs_f64();
            println!(
                "| {signal} | {} | {} | {:.2} | {:.0} | {:.2} |",
                candidate.name,
                if candidate.level == 0 {
                    "-".to_owned()
                } else {
                    candidate.level.to_string()
                },
                time * 1e3 / mib,
                time * 1e9 / items as f64,
                input.len() as f64 / output.len() as f64,
            );
        }
    }
    decompression();
}
