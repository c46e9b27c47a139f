//! The persistent queue's recovery: a segment file of any bytes (and a cursor file from the
//! first bytes) is opened, repaired and read to its end; what it reports must add up.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use sluice_core::disk_log::{DiskLog, Fsync, LogConfig, OnFull};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let Some((&cursor_len, rest)) = data.split_first() else {
        return;
    };
    let (cursor, segment) = rest.split_at(usize::from(cursor_len).min(rest.len()));
    let dir = std::env::temp_dir().join(format!(
        "sluice-fuzz-disk-log-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seg-{:020}.log", 1)), segment).unwrap();
    if !cursor.is_empty() {
        std::fs::write(dir.join("cursor-61"), cursor).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = LogConfig {
            dir: dir.clone(),
            max_bytes: 1 << 20,
            segment_bytes: 64 << 10,
            fsync: Fsync::Never,
            on_full: OnFull::Refuse,
        };
        if let Ok((log, recovery)) = DiskLog::open(config, &["a"]) {
            let reader = log.reader("a").unwrap();
            let mut records = 0u64;
            while let Ok(Some(batch)) = reader.try_next(1000, 1 << 20).await {
                records += batch.records.len() as u64;
                if let Some(last) = batch.records.last() {
                    reader.ack(last.seq);
                }
            }
            assert!(records <= recovery.records, "{records} read, {recovery:?}");
            log.close().await;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
});
