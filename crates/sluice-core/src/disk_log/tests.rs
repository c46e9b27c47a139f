use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;

use proptest::prelude::*;

use super::*;

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "sluice-disk-log-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Payload of record `i`: 11 bytes, so a record takes 31 bytes and 3 fit in a 100-byte segment.
fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:04}"))
}

const RECORD: u64 = 31;

fn config(dir: &Path, fsync: Fsync) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 100,
        fsync,
        on_full: OnFull::Refuse,
    }
}

fn open(config: &LogConfig, consumers: &[&str]) -> (Arc<DiskLog>, Recovery) {
    DiskLog::open(config.clone(), consumers).expect("open")
}

/// Appends records `range` (payload `payload(i)`, 2 items each) and checks their seqs.
async fn append_range(log: &DiskLog, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let appended = log.append(payload(i), 2).await.expect("append");
        assert_eq!(appended.seq, i);
        assert_eq!((appended.dropped_records, appended.dropped_items), (0, 0));
    }
}

/// Every record available now, in batches of at most `max_items` items.
async fn drain(reader: &Reader, max_items: u64) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some(batch) = reader.try_next(max_items, 1 << 20).await.expect("read") {
        assert!(!batch.records.is_empty());
        records.extend(batch.records);
    }
    records
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-"))
        .collect::<Vec<_>>();
    names.sort();
    names
}

fn consumer_stats(log: &DiskLog, name: &str) -> ConsumerStats {
    log.stats()
        .consumers
        .into_iter()
        .find(|c| c.name == name)
        .expect("consumer")
}

#[tokio::test]
async fn round_trip_with_two_consumers_at_different_speeds() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Always);
    let (log, recovery) = open(&config, &["fast", "slow"]);
    assert_eq!(recovery.new_consumers, ["fast", "slow"]);
    append_range(&log, 1..=10).await;
    assert_eq!(
        segment_files(dir.path()),
        [
            segment_name(1),
            segment_name(4),
            segment_name(7),
            segment_name(10)
        ]
    );

    let fast = log.reader("fast").expect("reader");
    let slow = log.reader("slow").expect("reader");
    assert!(log.reader("nobody").is_none());

    // Batches respect the item limit (2 items per record), always taking at least one record.
    let batch = fast.next(4, 1 << 20).await.expect("read").expect("batch");
    assert_eq!(seqs(&batch.records), [1, 2]);
    assert_eq!((batch.items(), batch.bytes()), (4, 22));
    assert_eq!(batch.records[0].payload, payload(1));
    let batch = fast.next(1, 1 << 20).await.expect("read").expect("batch");
    assert_eq!(seqs(&batch.records), [3]);
    let batch = fast.next(100, 12).await.expect("read").expect("batch");
    assert_eq!(seqs(&batch.records), [4], "byte limit");
    let rest = drain(&fast, 6).await;
    assert_eq!(seqs(&rest), (5..=10).collect::<Vec<_>>());
    for seq in 1..=10 {
        fast.ack(seq);
    }
    // The slow consumer still needs everything.
    assert_eq!(segment_files(dir.path()).len(), 4);

    let slow_batch = drain(&slow, 8).await;
    assert_eq!(seqs(&slow_batch), (1..=10).collect::<Vec<_>>());
    for seq in 1..=4 {
        slow.ack(seq);
    }
    // Both are past segment 1 (records 1-3) only.
    assert_eq!(
        segment_files(dir.path()),
        [segment_name(4), segment_name(7), segment_name(10)]
    );
    let stats = log.stats();
    assert_eq!(stats.segments, 3);
    assert_eq!(stats.bytes_on_disk, 7 * RECORD);
    assert_eq!(stats.records_pending, 6);
    assert_eq!(consumer_stats(&log, "fast").records_pending, 0);
    let slow_stats = consumer_stats(&log, "slow");
    assert_eq!(
        (
            slow_stats.watermark,
            slow_stats.records_pending,
            slow_stats.items_pending
        ),
        (4, 6, 12)
    );
    assert_eq!((slow.pending_records(), slow.pending_items()), (6, 12));
    assert_eq!((fast.pending_records(), fast.pending_items()), (0, 0));

    log.close().await;
    assert!(matches!(
        log.append(payload(11), 1).await,
        Err(AppendError::Closed)
    ));
    assert_eq!(slow.next(10, 1 << 20).await.expect("read"), None);
    drop((fast, slow, log));

    // Each consumer resumes after its watermark; numbering continues.
    let (log, recovery) = open(&config, &["fast", "slow"]);
    assert_eq!(recovery.records, 7);
    assert_eq!(recovery.items, 14);
    assert!(recovery.new_consumers.is_empty() && recovery.reset_cursors.is_empty());
    let fast = log.reader("fast").expect("reader");
    let slow = log.reader("slow").expect("reader");
    assert!(drain(&fast, 100).await.is_empty());
    let again = drain(&slow, 100).await;
    assert_eq!(seqs(&again), (5..=10).collect::<Vec<_>>());
    assert_eq!(again[0].payload, payload(5));
    append_range(&log, 11..=11).await;
    assert_eq!(seqs(&drain(&fast, 100).await), [11]);
    log.close().await;
}

#[tokio::test]
async fn out_of_order_acks_advance_the_watermark_only_when_contiguous() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Never);
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=6).await;
    let reader = log.reader("a").expect("reader");
    let batch = reader
        .next(10, 1 << 20)
        .await
        .expect("read")
        .expect("batch");
    assert_eq!(seqs(&batch.records), [1, 2, 3, 4, 5]);

    reader.ack(6); // not delivered yet: ignored
    reader.ack(3);
    reader.ack(2);
    assert_eq!(consumer_stats(&log, "a").watermark, 0);
    reader.ack(1);
    assert_eq!(consumer_stats(&log, "a").watermark, 3);
    reader.ack(5);
    reader.ack(5);
    assert_eq!(consumer_stats(&log, "a").watermark, 3);
    assert_eq!(segment_files(dir.path()), [segment_name(4)]);
    reader.ack(1); // already done
    assert_eq!(consumer_stats(&log, "a").watermark, 3);

    log.close().await;
    drop((reader, log));

    // Record 5 was acked above the watermark: delivered again, with 4 and 6.
    let (log, _) = open(&config, &["a"]);
    assert_eq!(segment_files(dir.path()), [segment_name(4)]);
    let reader = log.reader("a").expect("reader");
    assert_eq!(seqs(&drain(&reader, 100).await), [4, 5, 6]);
    reader.ack(6);
    reader.ack(4);
    assert_eq!(consumer_stats(&log, "a").watermark, 4);
    reader.ack(5);
    assert_eq!(consumer_stats(&log, "a").watermark, 6);
    log.close().await;
}

#[tokio::test]
async fn a_crash_loses_no_appended_record() {
    for fsync in [
        Fsync::Always,
        Fsync::Interval(Duration::from_secs(3600)),
        Fsync::Never,
    ] {
        let dir = TempDir::new();
        let config = config(dir.path(), fsync);
        let (log, _) = open(&config, &["a", "b"]);
        append_range(&log, 1..=20).await;
        let a = log.reader("a").expect("reader");
        let read = a.next(10, 1 << 20).await.expect("read").expect("batch");
        assert_eq!(read.records.len(), 5);
        for seq in 1..=5 {
            a.ack(seq);
        }
        // A crash: no close.
        drop((a, log));

        let (log, recovery) = open(&config, &["a", "b"]);
        assert_eq!(recovery.torn_bytes + recovery.quarantined_bytes, 0);
        assert_eq!(recovery.records, 20, "{fsync:?}");
        let a = log.reader("a").expect("reader");
        let b = log.reader("b").expect("reader");
        let a_seqs = seqs(&drain(&a, 100).await);
        // The cursor may lag behind the acknowledgements, never ahead of them.
        let first = a_seqs.first().copied().unwrap_or(21);
        assert!(first <= 6, "{fsync:?}: a resumed at {first}");
        assert_eq!(a_seqs, (first..=20).collect::<Vec<_>>());
        let b_records = drain(&b, 100).await;
        assert_eq!(seqs(&b_records), (1..=20).collect::<Vec<_>>());
        for record in &b_records {
            assert_eq!(record.payload, payload(record.seq));
            assert_eq!(record.items, 2);
        }
        append_range(&log, 21..=21).await;
        log.close().await;
    }
}

#[tokio::test]
async fn a_torn_last_record_is_cut_and_numbering_continues() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Always);
    config.segment_bytes = 1000;
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=5).await;
    log.close().await;
    drop(log);

    let segment = dir.path().join(segment_name(1));
    let file = OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    file.set_len(5 * RECORD - 7).expect("truncate");
    drop(file);

    let (log, recovery) = open(&config, &["a"]);
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.torn_bytes, RECORD - 7);
    assert_eq!(recovery.quarantined_bytes, 0);
    assert!(recovery.quarantined.is_empty());
    assert_eq!(fs::metadata(&segment).expect("stat").len(), 4 * RECORD);
    let reader = log.reader("a").expect("reader");
    assert_eq!(seqs(&drain(&reader, 100).await), [1, 2, 3, 4]);
    append_range(&log, 5..=5).await;
    assert_eq!(seqs(&drain(&reader, 100).await), [5]);
    log.close().await;
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Interval(Duration::from_millis(1)));
    config.segment_bytes = 1000;
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=5).await;
    drop(log);

    let segment = dir.path().join(segment_name(1));
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment");
    file.write_all(&[0xab; 37]).expect("garbage");
    drop(file);

    let (log, recovery) = open(&config, &["a"]);
    assert_eq!(recovery.records, 5);
    assert_eq!(recovery.torn_bytes, 37);
    assert_eq!(recovery.quarantined_bytes, 0);
    append_range(&log, 6..=6).await;
    let reader = log.reader("a").expect("reader");
    let records = drain(&reader, 100).await;
    assert_eq!(seqs(&records), [1, 2, 3, 4, 5, 6]);
    assert_eq!(records[5].payload, payload(6));
    log.close().await;
}

#[tokio::test]
async fn damage_in_an_earlier_segment_is_quarantined() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Always);
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=9).await;
    log.close().await;
    drop(log);

    // Flip a payload byte of record 2, in the first of three segments.
    let first = dir.path().join(segment_name(1));
    let mut bytes = fs::read(&first).expect("read");
    let at = (RECORD + RECORD_HEADER_LEN + 3) as usize;
    bytes[at] ^= 0x01;
    fs::write(&first, &bytes).expect("write");

    let (log, recovery) = open(&config, &["a"]);
    let quarantined = dir
        .path()
        .join("quarantine")
        .join(format!("{}.{RECORD}", segment_name(1)));
    assert_eq!(recovery.quarantined, std::slice::from_ref(&quarantined));
    assert_eq!(recovery.quarantined_bytes, 2 * RECORD);
    assert_eq!(recovery.torn_bytes, 0);
    assert_eq!(recovery.records, 7);
    assert_eq!(
        fs::read(&quarantined).expect("quarantine file"),
        bytes[RECORD as usize..]
    );
    assert_eq!(fs::metadata(&first).expect("stat").len(), RECORD);

    // Later segments are intact; the numbering jumps over the gap.
    let reader = log.reader("a").expect("reader");
    let records = drain(&reader, 100).await;
    assert_eq!(seqs(&records), [1, 4, 5, 6, 7, 8, 9]);
    for seq in [1, 4, 5, 6, 7, 8, 9] {
        reader.ack(seq);
    }
    assert_eq!(consumer_stats(&log, "a").watermark, 9);
    append_range(&log, 10..=10).await;
    log.close().await;
}

#[tokio::test]
async fn damage_followed_by_intact_records_in_the_last_segment_is_quarantined() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Always);
    config.segment_bytes = 1000;
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=4).await;
    log.close().await;
    drop(log);

    let segment = dir.path().join(segment_name(1));
    let mut bytes = fs::read(&segment).expect("read");
    bytes[RECORD as usize + 4] ^= 0xff; // the checksum of record 2
    fs::write(&segment, &bytes).expect("write");

    let (log, recovery) = open(&config, &["a"]);
    assert_eq!(recovery.torn_bytes, 0);
    assert_eq!(recovery.quarantined_bytes, 3 * RECORD);
    assert_eq!(recovery.records, 1);
    let reader = log.reader("a").expect("reader");
    assert_eq!(seqs(&drain(&reader, 100).await), [1]);
    // The quarantined records' numbers may be reused; the consumer never acked them.
    let appended = log.append(payload(2), 2).await.expect("append");
    assert_eq!(appended.seq, 2);
    assert_eq!(seqs(&drain(&reader, 100).await), [2]);
    log.close().await;
}

#[tokio::test]
async fn a_damaged_cursor_restarts_its_consumer_at_the_oldest_record() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Always);
    let (log, _) = open(&config, &["a", "b"]);
    append_range(&log, 1..=6).await;
    let a = log.reader("a").expect("reader");
    let b = log.reader("b").expect("reader");
    for record in drain(&a, 100).await {
        a.ack(record.seq);
    }
    let batch = b.next(4, 1 << 20).await.expect("read").expect("batch");
    assert_eq!(seqs(&batch.records), [1, 2]);
    for record in batch.records {
        b.ack(record.seq);
    }
    log.close().await;
    drop((a, b, log));

    fs::write(dir.path().join(cursor_name("a")), b"not a cursor").expect("write");
    fs::remove_file(dir.path().join(cursor_name("b"))).expect("remove");
    let (log, recovery) = open(&config, &["a", "b"]);
    assert_eq!(recovery.reset_cursors, ["a"]);
    assert_eq!(recovery.new_consumers, ["b"]);
    let a = log.reader("a").expect("reader");
    let b = log.reader("b").expect("reader");
    assert_eq!(seqs(&drain(&a, 100).await), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&drain(&b, 100).await), [1, 2, 3, 4, 5, 6]);
    // Numbering continues after the highest record.
    append_range(&log, 7..=7).await;
    log.close().await;
}

#[tokio::test]
async fn a_full_log_refuses_until_acks_free_a_segment() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Always);
    config.max_bytes = 200;
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=6).await;
    let files = segment_files(dir.path());
    assert!(matches!(
        log.append(payload(7), 2).await,
        Err(AppendError::Full)
    ));
    // Nothing was written.
    assert_eq!(segment_files(dir.path()), files);
    assert_eq!(log.stats().bytes_on_disk, 6 * RECORD);

    let reader = log.reader("a").expect("reader");
    let read = drain(&reader, 2).await;
    assert_eq!(read.len(), 6);
    reader.ack(1);
    reader.ack(2);
    assert!(matches!(
        log.append(payload(7), 2).await,
        Err(AppendError::Full)
    ));
    reader.ack(3);
    append_range(&log, 7..=7).await;
    assert_eq!(seqs(&drain(&reader, 100).await), [7]);

    assert!(matches!(
        log.append(Bytes::from(vec![0u8; 200]), 1).await,
        Err(AppendError::TooLarge {
            size: 220,
            max: 200
        })
    ));
    log.close().await;
}

#[tokio::test]
async fn drop_oldest_drops_whole_segments_and_moves_consumers_past_them() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Always);
    config.max_bytes = 200;
    config.on_full = OnFull::DropOldest;
    let (log, _) = open(&config, &["a", "b"]);
    append_range(&log, 1..=6).await;
    let a = log.reader("a").expect("reader");
    let b = log.reader("b").expect("reader");
    let first = a.next(2, 1 << 20).await.expect("read").expect("batch");
    assert_eq!(seqs(&first.records), [1]);
    a.ack(1);

    // b has acknowledged nothing: records 1-3 are lost for it.
    let appended = log.append(payload(7), 2).await.expect("append");
    assert_eq!(
        appended,
        Appended {
            seq: 7,
            dropped_records: 3,
            dropped_items: 6
        }
    );
    assert_eq!(
        segment_files(dir.path()),
        [segment_name(4), segment_name(7)]
    );
    assert_eq!(log.stats().bytes_on_disk, 4 * RECORD);
    // Both continue at the next surviving record.
    assert_eq!(seqs(&drain(&b, 100).await), [4, 5, 6, 7]);
    assert_eq!(seqs(&drain(&a, 100).await), [4, 5, 6, 7]);
    assert_eq!(consumer_stats(&log, "b").watermark, 3);
    a.ack(2); // inside the dropped range: ignored
    assert_eq!(consumer_stats(&log, "a").watermark, 3);

    // Records everyone acknowledged are not counted as dropped.
    for seq in 4..=7 {
        a.ack(seq);
    }
    b.ack(4);
    append_range_dropping(&log, 8..=10).await;
    log.close().await;
}

/// Appends under `DropOldest` until segment 4 (acked by `b` only up to 4) gets dropped.
async fn append_range_dropping(log: &DiskLog, range: std::ops::RangeInclusive<u64>) {
    let mut dropped = (0, 0);
    for i in range {
        let appended = log.append(payload(i), 2).await.expect("append");
        assert_eq!(appended.seq, i);
        dropped.0 += appended.dropped_records;
        dropped.1 += appended.dropped_items;
    }
    // Segment 4 holds 4, 5, 6; b had acked 4.
    assert_eq!(dropped, (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_under_always_get_consecutive_seqs() {
    let dir = TempDir::new();
    let mut config = config(dir.path(), Fsync::Always);
    config.segment_bytes = 4096;
    let (log, _) = open(&config, &["a"]);
    let tasks = (0..32u64)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..8u64 {
                    let id = task * 8 + i;
                    let appended = log.append(payload(id), 1).await.expect("append");
                    seqs.push((appended.seq, id));
                }
                seqs
            })
        })
        .collect::<Vec<_>>();
    let mut by_seq = BTreeMap::new();
    for task in tasks {
        for (seq, id) in task.await.expect("task") {
            assert!(by_seq.insert(seq, id).is_none(), "seq {seq} twice");
        }
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=256).collect::<Vec<_>>()
    );
    let reader = log.reader("a").expect("reader");
    let records = drain(&reader, 1000).await;
    assert_eq!(records.len(), 256);
    for record in records {
        assert_eq!(record.payload, payload(by_seq[&record.seq]));
    }
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_reader_share_one_position() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Never);
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=60).await;
    let reader = log.reader("a").expect("reader");
    let workers = (0..3)
        .map(|_| {
            let reader = reader.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(batch) = reader.try_next(4, 1 << 20).await.expect("read") {
                    let batch_seqs = seqs(&batch.records);
                    assert!(batch_seqs.windows(2).all(|w| w[0] < w[1]));
                    for seq in &batch_seqs {
                        reader.ack(*seq);
                    }
                    seen.extend(batch_seqs);
                }
                seen
            })
        })
        .collect::<Vec<_>>();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=60).collect::<Vec<_>>());
    assert_eq!(consumer_stats(&log, "a").watermark, 60);
    log.close().await;
}

#[tokio::test]
async fn next_waits_for_an_append_and_ends_on_close() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Always);
    let (log, _) = open(&config, &["a"]);
    let reader = log.reader("a").expect("reader");
    let waiting = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.next(10, 1 << 20).await })
    };
    tokio::task::yield_now().await;
    append_range(&log, 1..=1).await;
    let batch = waiting.await.expect("task").expect("read").expect("batch");
    assert_eq!(seqs(&batch.records), [1]);

    let waiting = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.next(10, 1 << 20).await })
    };
    tokio::task::yield_now().await;
    log.close().await;
    assert_eq!(waiting.await.expect("task").expect("read"), None);
}

#[tokio::test]
async fn a_record_damaged_after_open_is_skipped_and_counted() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Always);
    let (log, _) = open(&config, &["a"]);
    append_range(&log, 1..=3).await;
    let segment = dir.path().join(segment_name(1));
    let mut bytes = fs::read(&segment).expect("read");
    bytes[(RECORD + RECORD_HEADER_LEN) as usize] ^= 0x80;
    fs::write(&segment, &bytes).expect("write");

    let reader = log.reader("a").expect("reader");
    let records = drain(&reader, 100).await;
    assert_eq!(seqs(&records), [1, 3]);
    assert_eq!(log.stats().corrupt_records, 1);
    reader.ack(1);
    reader.ack(3);
    assert_eq!(consumer_stats(&log, "a").watermark, 3);
    log.close().await;
}

#[test]
fn bad_configurations_are_refused() {
    let dir = TempDir::new();
    let mut bad = config(dir.path(), Fsync::Never);
    bad.max_bytes = 50;
    let refused = |config: &LogConfig, consumers: &[&str]| {
        DiskLog::open(config.clone(), consumers)
            .err()
            .map(|e| e.kind())
    };
    assert_eq!(refused(&bad, &["a"]), Some(io::ErrorKind::InvalidInput));
    let good = config(dir.path(), Fsync::Never);
    assert_eq!(refused(&good, &[]), Some(io::ErrorKind::InvalidInput));
    assert_eq!(
        refused(&good, &["a", "a"]),
        Some(io::ErrorKind::InvalidInput)
    );
    assert_eq!(refused(&good, &[""]), Some(io::ErrorKind::InvalidInput));
}

#[test]
fn names_and_formats() {
    assert_eq!(segment_name(42), "seg-00000000000000000042.log");
    assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
    assert_eq!(parse_segment_name("seg-42.log"), None);
    assert_eq!(
        cursor_name("otlp/backend"),
        "cursor-6f746c702f6261636b656e64"
    );
    assert_eq!(parse_cursor(&encode_cursor(77)), Some(77));
    let mut damaged = encode_cursor(77);
    damaged[5] ^= 1;
    assert_eq!(parse_cursor(&damaged), None);
    let header = encode_header(3, 9, 4, b"abc");
    let mut record = header.to_vec();
    record.extend_from_slice(b"abc");
    let (parsed, end) = record_at(&record, 0, |seq| seq == 9).expect("record");
    assert_eq!((parsed.len, parsed.seq, parsed.items, end), (3, 9, 4, 23));
    assert!(record_at(&record[..22], 0, |_| true).is_none());
}

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, items: u32 },
    Read { consumer: usize, max_items: u64 },
    Ack { consumer: usize, pick: usize },
    Reopen { crash: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..40, 0u32..5).prop_map(|(len, items)| Op::Append { len, items }),
        3 => (0usize..2, 0u64..8).prop_map(|(consumer, max_items)| Op::Read { consumer, max_items }),
        3 => (0usize..2, any::<usize>()).prop_map(|(consumer, pick)| Op::Ack { consumer, pick }),
        1 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
    ]
}

fn fsync_mode() -> impl Strategy<Value = Fsync> {
    prop_oneof![
        Just(Fsync::Always),
        Just(Fsync::Interval(Duration::from_millis(2))),
        Just(Fsync::Never),
    ]
}

/// What the model knows of one consumer.
#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    /// Delivered since the last (re)open.
    delivered: BTreeSet<u64>,
    last: Option<u64>,
    unacked: Vec<u64>,
}

impl Seen {
    fn deliver(
        &mut self,
        batch: &ReadBatch,
        appended: &BTreeMap<u64, (Bytes, u32)>,
    ) -> Result<(), TestCaseError> {
        for record in &batch.records {
            prop_assert!(
                self.last.is_none_or(|last| last < record.seq),
                "out of order: {} after {:?}",
                record.seq,
                self.last
            );
            self.last = Some(record.seq);
            let expected = appended.get(&record.seq);
            prop_assert_eq!(expected, Some(&(record.payload.clone(), record.items)));
            self.delivered.insert(record.seq);
            self.unacked.push(record.seq);
        }
        Ok(())
    }
}

async fn run_model(ops: Vec<Op>, fsync: Fsync) -> Result<(), TestCaseError> {
    const NAMES: [&str; 2] = ["a", "b"];
    let dir = TempDir::new();
    let config = LogConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 400,
        segment_bytes: 120,
        fsync,
        on_full: OnFull::Refuse,
    };
    let (mut log, _) = open(&config, &NAMES);
    let mut appended: BTreeMap<u64, (Bytes, u32)> = BTreeMap::new();
    let mut seen = [Seen::default(), Seen::default()];
    for (counter, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { len, items } => {
                let mut text = format!("{counter}:");
                text.extend(std::iter::repeat_n('x', len));
                let payload = Bytes::from(text);
                match log.append(payload.clone(), items).await {
                    Ok(done) => {
                        prop_assert_eq!((done.dropped_records, done.dropped_items), (0, 0));
                        let highest = appended.keys().next_back().copied().unwrap_or(0);
                        prop_assert!(done.seq > highest);
                        appended.insert(done.seq, (payload, items));
                    }
                    Err(AppendError::Full) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("append: {e}"))),
                }
            }
            Op::Read {
                consumer,
                max_items,
            } => {
                let reader = log.reader(NAMES[consumer]).expect("reader");
                let batch = reader
                    .try_next(max_items, 1 << 20)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
                if let Some(batch) = batch {
                    seen[consumer].deliver(&batch, &appended)?;
                }
            }
            Op::Ack { consumer, pick } => {
                let seen = &mut seen[consumer];
                if !seen.unacked.is_empty() {
                    let seq = seen.unacked.swap_remove(pick % seen.unacked.len());
                    log.reader(NAMES[consumer]).expect("reader").ack(seq);
                    seen.acked.insert(seq);
                }
            }
            Op::Reopen { crash } => {
                if !crash {
                    log.close().await;
                }
                drop(log);
                let (reopened, recovery) = open(&config, &NAMES);
                prop_assert_eq!(recovery.torn_bytes + recovery.quarantined_bytes, 0);
                log = reopened;
                for seen in &mut seen {
                    seen.delivered.clear();
                    seen.unacked.clear();
                    seen.last = None;
                }
            }
        }
    }
    for (consumer, name) in NAMES.iter().enumerate() {
        let reader = log.reader(name).expect("reader");
        while let Some(batch) = reader
            .try_next(3, 1 << 20)
            .await
            .map_err(|e| TestCaseError::fail(format!("read: {e}")))?
        {
            seen[consumer].deliver(&batch, &appended)?;
        }
        for seq in appended.keys() {
            let seen = &seen[consumer];
            prop_assert!(
                seen.acked.contains(seq) || seen.delivered.contains(seq),
                "consumer {} lost record {}",
                name,
                seq
            );
        }
    }
    log.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_unacknowledged_record_is_lost_or_reordered(
        ops in proptest::collection::vec(op(), 1..80),
        fsync in fsync_mode(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(run_model(ops, fsync))?;
    }
}

#[test]
fn a_directory_in_use_cannot_be_opened_twice() {
    let dir = TempDir::new();
    let config = config(dir.path(), Fsync::Never);
    let (first, _) = open(&config, &["a"]);
    let second = DiskLog::open(config.clone(), &["a"]);
    let err = second.expect_err("the directory is locked");
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    let (_again, _) = open(&config, &["a"]);
}
