//! A crash-safe, append-only on-disk log with per-consumer positions: the storage behind the
//! exporters' persistent sending queue.
//!
//! Records (an opaque payload, normally an encoded OTLP request, plus its item count) are
//! appended in order and numbered with consecutive sequence numbers starting at 1. Named
//! consumers read the log in order, each from its own position, and acknowledge records in any
//! order; a consumer's persisted *watermark* is the highest sequence number `S` such that every
//! record `<= S` is acknowledged. After a restart a consumer resumes after its watermark, so
//! records acknowledged above it are delivered again (at-least-once).
//!
//! # Layout
//!
//! One directory holds:
//!
//! - `seg-<first seq, 20 digits>.log`: segment files, each up to `segment_bytes` long (a record
//!   larger than that gets a segment of its own). The last one is the *active* segment the
//!   writer appends to. A segment is deleted once every consumer's watermark is past its last
//!   record; a fully consumed active segment is replaced by a fresh one at the next append.
//! - `cursor-<hex of the consumer name>`: a consumer's watermark, replaced atomically (write
//!   `….tmp`, fsync, rename, fsync the directory).
//! - `quarantine/<segment file name>.<offset>`: damaged bytes moved aside by recovery.
//!
//! Within a segment, sequence numbers are consecutive and the first one is the number in the
//! file name. Between segments they may jump (after quarantined damage or a lost tail).
//!
//! # Record format
//!
//! All integers are little-endian:
//!
//! | bytes | field                                                                   |
//! |-------|-------------------------------------------------------------------------|
//! | 4     | `u32 payload_len`                                                       |
//! | 4     | `u32 crc32` (crc32fast/IEEE over `seq`, `items` and the payload, in order) |
//! | 8     | `u64 seq`                                                               |
//! | 4     | `u32 items`                                                             |
//! | n     | payload                                                                 |
//!
//! A cursor file is 16 bytes: the magic `SLC1`, the `u64` watermark and a `u32` crc32 of the
//! twelve bytes before it.
//!
//! # Durability
//!
//! A dedicated writer thread owns every write. Append requests queue on a channel; the writer
//! takes all pending ones, writes each, and then, depending on [`Fsync`]:
//!
//! - [`Fsync::Always`]: one `sync_data` for the whole group (group commit) before any of them is
//!   answered or becomes readable;
//! - [`Fsync::Interval`]: answers right after the writes (the data is in the page cache and
//!   survives a process crash) and syncs at most once per interval;
//! - [`Fsync::Never`]: writes only (segments are synced when sealed under the other modes and on
//!   [`DiskLog::close`] under every mode).
//!
//! A failed `sync_data` under `Always` fails the whole group with [`AppendError::Io`], but its
//! records stay in the log (the caller's retry may therefore duplicate them).
//!
//! Cursor files are always fsynced when written. The writer writes a consumer's cursor after
//! every watermark advance under `Always` (advances that happen while a write is pending are
//! coalesced into it), at most every 100 ms per consumer under `Interval` and `Never`, and for
//! every consumer on close. A lagging cursor only causes re-delivery, never loss.
//!
//! Dropping a [`DiskLog`] without [`DiskLog::close`] behaves like a crash: nothing more is
//! synced, and cursors may lag behind the acknowledgements.
//!
//! # Recovery
//!
//! [`DiskLog::open`] scans every segment in order. The first record with a short header, a short
//! payload, a bad checksum or an unexpected sequence number ends the intact part of its segment:
//!
//! - in the last segment, when no valid record follows it anywhere in the file, it is a torn
//!   tail and the file is truncated there ([`Recovery::torn_bytes`]);
//! - otherwise the rest of that segment is copied to `quarantine/` and the segment truncated
//!   there ([`Recovery::quarantined_bytes`], [`Recovery::quarantined`]).
//!
//! Damaged data never makes `open` fail; only I/O errors do. A missing cursor makes a new
//! consumer and a damaged one is reset ([`Recovery::reset_cursors`]); both start at the oldest
//! record on disk. Sequence numbers continue after the highest intact record, and after every
//! watermark found in a cursor file, so a new record is never mistaken for an acknowledged one.
//!
//! # Bound
//!
//! `max_bytes` bounds the bytes of segment files still needed by some consumer. An append that
//! would exceed it either fails with [`AppendError::Full`] ([`OnFull::Refuse`]) or deletes the
//! oldest sealed segments first ([`OnFull::DropOldest`]), moving every consumer past them and
//! reporting what was lost in [`Appended`].
//!
//! One directory is used by one `DiskLog` at a time: `open` takes an exclusive lock on its
//! `LOCK` file (released on drop, or by the kernel when the process dies) and fails with
//! `ResourceBusy` while another log holds it.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

/// Bytes of a record header before its payload.
pub const RECORD_HEADER_LEN: u64 = 20;

const HEADER: usize = RECORD_HEADER_LEN as usize;
const CURSOR_MAGIC: &[u8; 4] = b"SLC1";
const CURSOR_LEN: usize = 16;
/// Under `Interval` and `Never`, a consumer's cursor is written at most this often.
const CURSOR_PERIOD: Duration = Duration::from_millis(100);
/// Most append requests the writer commits as one group.
const MAX_GROUP: usize = 1024;
/// Longest consumer name (its hex form names a file).
const MAX_CONSUMER_NAME: usize = 100;
const QUARANTINE_DIR: &str = "quarantine";
/// The file an open log holds an exclusive lock on.
const LOCK_FILE: &str = "LOCK";

/// How appended records reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `append` returns after the record is written and synced; concurrent appends share one
    /// `sync_data` (group commit).
    Always,
    /// `append` returns after the write; the writer syncs at most once per interval.
    Interval(Duration),
    /// `append` returns after the write; segments are synced only on close.
    Never,
}

/// What an append does when the log is at `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Fail with [`AppendError::Full`] and write nothing.
    Refuse,
    /// Delete the oldest sealed segments until the record fits and report what they held.
    DropOldest,
}

/// Where and how a log stores its records.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log's directory (created if missing).
    pub dir: PathBuf,
    /// Bound on the bytes of segment files still needed by some consumer; at least
    /// `segment_bytes`.
    pub max_bytes: u64,
    /// Size at which a new segment file is started; greater than zero.
    pub segment_bytes: u64,
    /// When appended records are synced.
    pub fsync: Fsync,
    /// What an append does when the log is full.
    pub on_full: OnFull,
}

/// What [`DiskLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Intact records left on disk after opening (consumed segments are deleted first).
    pub records: u64,
    /// Items in those records.
    pub items: u64,
    /// Bytes cut off the end of the last segment (a write torn by a crash).
    pub torn_bytes: u64,
    /// Bytes moved to quarantine (damage before intact data).
    pub quarantined_bytes: u64,
    /// The quarantine files written.
    pub quarantined: Vec<PathBuf>,
    /// Consumers whose cursor file was damaged; they restart at the oldest record.
    pub reset_cursors: Vec<String>,
    /// Consumers without a cursor file; they start at the oldest record.
    pub new_consumers: Vec<String>,
}

/// A successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence number.
    pub seq: u64,
    /// Records deleted by [`OnFull::DropOldest`] before some consumer acknowledged them.
    pub dropped_records: u64,
    /// Items in those records.
    pub dropped_items: u64,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The log is at `max_bytes` and refuses records; nothing was written. Retryable once
    /// consumers acknowledge records.
    #[error("disk log is full")]
    Full,
    /// The record can never fit in the log.
    #[error("record of {size} bytes exceeds the disk log bound of {max} bytes")]
    TooLarge {
        /// The record's size on disk, header included.
        size: u64,
        /// The log's `max_bytes` (or the format's limit).
        max: u64,
    },
    /// The log is closed.
    #[error("disk log is closed")]
    Closed,
    /// Writing or syncing failed.
    #[error("disk log i/o: {0}")]
    Io(#[from] io::Error),
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// The item count given to [`DiskLog::append`].
    pub items: u32,
    /// The payload given to [`DiskLog::append`].
    pub payload: Bytes,
}

/// Consecutive records for one consumer, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// The records, never empty, in increasing sequence order.
    pub records: Vec<Record>,
}

impl ReadBatch {
    /// Items in all records.
    pub fn items(&self) -> u64 {
        self.records.iter().map(|r| u64::from(r.items)).sum()
    }

    /// Payload bytes in all records.
    pub fn bytes(&self) -> u64 {
        self.records.iter().map(|r| r.payload.len() as u64).sum()
    }
}

/// One consumer's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer's name.
    pub name: String,
    /// Highest sequence number up to which everything is acknowledged.
    pub watermark: u64,
    /// Records after the watermark.
    pub records_pending: u64,
    /// Items in those records.
    pub items_pending: u64,
}

/// A snapshot for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes of all segment files.
    pub bytes_on_disk: u64,
    /// Segment files.
    pub segments: usize,
    /// The largest `records_pending` over consumers.
    pub records_pending: u64,
    /// Records skipped by readers because they failed their checksum after the log was opened.
    pub corrupt_records: u64,
    /// Per consumer, in registration order.
    pub consumers: Vec<ConsumerStats>,
}

/// The log: one writer thread, any number of readers.
pub struct DiskLog {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    closing: AtomicBool,
    /// Consumer names, in registration order (the index of each consumer's state).
    names: Vec<String>,
    /// Per consumer: serializes its reads and caches the segment file it reads.
    read_caches: Vec<tokio::sync::Mutex<Option<OpenSegment>>>,
    /// Holds the directory's `LOCK` (released when the log is dropped).
    _lock: File,
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.shared.config.dir)
            .finish_non_exhaustive()
    }
}

/// A consumer's view of the log. Clones share the consumer's position, so several workers may
/// read and acknowledge concurrently.
#[derive(Clone)]
pub struct Reader {
    log: Arc<DiskLog>,
    consumer: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("consumer", &self.consumer())
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: LogConfig,
    state: Mutex<State>,
    notify: Notify,
}

/// Where a record sits in its segment file; its sequence number is the segment's first one
/// plus its index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u32,
    items: u32,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    size: u64,
    items: u64,
    entries: Vec<Entry>,
}

impl Segment {
    fn new(first_seq: u64, path: PathBuf) -> Self {
        Segment {
            first_seq,
            path,
            size: 0,
            items: 0,
            entries: Vec::new(),
        }
    }

    /// The sequence number after this segment's last record.
    fn end_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    fn last_seq(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.end_seq() - 1)
    }
}

#[derive(Debug)]
struct ConsumerState {
    name: String,
    cursor: PathBuf,
    /// Every record `<= watermark` is done.
    watermark: u64,
    /// The smallest sequence number not yet delivered.
    next_seq: u64,
    /// Acknowledged records above the watermark.
    acked: BTreeSet<u64>,
    /// The watermark changed since the cursor was last written.
    dirty: bool,
    last_write: Option<Instant>,
    write_failed: bool,
}

#[derive(Debug)]
struct State {
    /// Ordered by first sequence number; the last one is the active segment. Never empty.
    segments: VecDeque<Segment>,
    /// Sum of the segments' sizes.
    bytes: u64,
    /// The sequence number the next append gets.
    next_seq: u64,
    /// Readers see records up to this sequence number (written, and synced under `Always`).
    visible: u64,
    consumers: Vec<ConsumerState>,
    closed: bool,
    corrupt_records: u64,
}

/// A segment file a reader keeps open between batches.
#[derive(Debug)]
struct OpenSegment {
    first_seq: u64,
    file: File,
}

enum Msg {
    Append(AppendRequest),
    /// A cursor became dirty.
    Wake,
    Close(oneshot::Sender<()>),
}

struct AppendRequest {
    payload: Bytes,
    items: u32,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DiskLog {
    /// Opens (or creates) the log in `config.dir` for the given consumers, repairing damage as
    /// described in the [module docs](self).
    ///
    /// Blocking: it reads every segment once (one at a time) and may fsync; call it from
    /// `spawn_blocking` or before the runtime's hot path.
    ///
    /// # Errors
    /// `InvalidInput` for a bad configuration (`segment_bytes` zero, `max_bytes` below it, no
    /// consumers, or a consumer name that is empty, longer than 100 bytes or repeated), and
    /// any I/O error reading, repairing or creating files. Damaged data is never an error.
    pub fn open(config: LogConfig, consumers: &[&str]) -> io::Result<(Arc<DiskLog>, Recovery)> {
        validate(&config, consumers)?;
        fs::create_dir_all(&config.dir)?;
        let dir = config.dir.clone();
        // An exclusive lock for as long as this log is open: two processes appending to one
        // directory would corrupt it. The kernel releases it when the process dies.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("{} is in use by another open log", dir.display()),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut recovery = Recovery::default();
        let (segment_files, cursor_files) = list_dir(&dir)?;

        let mut segments = VecDeque::new();
        // The smallest sequence number the next segment may start with.
        let mut floor = 1u64;
        let count = segment_files.len();
        for (i, (first_seq, path)) in segment_files.into_iter().enumerate() {
            let last_file = i + 1 == count;
            let buf = fs::read(&path)?;
            let overlaps = first_seq < floor;
            let scan = if overlaps {
                Scan::default()
            } else {
                scan_segment(&buf, first_seq)
            };
            if scan.good_end < buf.len() {
                let damaged = (buf.len() - scan.good_end) as u64;
                let expected = first_seq + scan.entries.len() as u64;
                let torn = last_file && !overlaps && !resyncs(&buf, scan.good_end, expected);
                if torn {
                    recovery.torn_bytes += damaged;
                } else {
                    let moved = quarantine(&dir, &path, scan.good_end, &buf[scan.good_end..])?;
                    recovery.quarantined_bytes += damaged;
                    recovery.quarantined.push(moved);
                }
                truncate_file(&path, scan.good_end as u64)?;
                tracing::warn!(
                    path = %path.display(),
                    offset = scan.good_end,
                    bytes = damaged,
                    torn,
                    "disk log segment damaged"
                );
            }
            let segment = Segment {
                first_seq,
                path,
                size: scan.good_end as u64,
                items: scan.items,
                entries: scan.entries,
            };
            if segment.entries.is_empty() && !last_file {
                fs::remove_file(&segment.path)?;
                continue;
            }
            floor = floor.max(segment.end_seq()).max(segment.first_seq + 1);
            segments.push_back(segment);
        }

        // Watermarks: of registered consumers, and the highest of any cursor file.
        let mut highest_watermark = 0u64;
        for path in &cursor_files {
            if let Ok(bytes) = fs::read(path)
                && let Some(watermark) = parse_cursor(&bytes)
            {
                highest_watermark = highest_watermark.max(watermark);
            }
        }
        let mut known = Vec::with_capacity(consumers.len());
        for name in consumers {
            let cursor = dir.join(cursor_name(name));
            let watermark = match fs::read(&cursor) {
                Ok(bytes) => {
                    let parsed = parse_cursor(&bytes);
                    if parsed.is_none() {
                        recovery.reset_cursors.push((*name).to_owned());
                        tracing::warn!(consumer = %name, "disk log cursor damaged, consumer restarts at the oldest record");
                    }
                    parsed
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    recovery.new_consumers.push((*name).to_owned());
                    None
                }
                Err(e) => return Err(e),
            };
            known.push((name, cursor, watermark));
        }

        let last_end = segments.back().map_or(1, Segment::end_seq);
        let next_seq = last_end.max(highest_watermark.saturating_add(1)).max(1);
        let reuse_last = segments.back().is_some_and(|s| s.end_seq() == next_seq);
        if !reuse_last {
            if segments.back().is_some_and(|s| s.entries.is_empty())
                && let Some(empty) = segments.pop_back()
            {
                fs::remove_file(&empty.path)?;
            }
            let path = dir.join(segment_name(next_seq));
            OpenOptions::new().create(true).append(true).open(&path)?;
            segments.push_back(Segment::new(next_seq, path));
        }
        let active_path = segments
            .back()
            .map(|s| s.path.clone())
            .ok_or_else(|| io::Error::other("disk log has no active segment"))?;
        let active = OpenOptions::new().append(true).open(&active_path)?;

        let oldest = segments
            .iter()
            .find(|s| !s.entries.is_empty())
            .map_or(next_seq, |s| s.first_seq);
        let consumer_states = known
            .into_iter()
            .map(|(name, cursor, watermark)| {
                let fresh = watermark.is_none();
                let watermark = watermark.unwrap_or(oldest - 1);
                ConsumerState {
                    name: (*name).to_owned(),
                    cursor,
                    watermark,
                    next_seq: watermark + 1,
                    acked: BTreeSet::new(),
                    dirty: fresh,
                    last_write: None,
                    write_failed: false,
                }
            })
            .collect::<Vec<_>>();
        let bytes = segments.iter().map(|s| s.size).sum();
        let mut state = State {
            segments,
            bytes,
            next_seq,
            visible: next_seq - 1,
            consumers: consumer_states,
            closed: false,
            corrupt_records: 0,
        };
        for path in state.pop_consumed() {
            fs::remove_file(path)?;
        }
        sync_dir(&dir)?;
        for segment in &state.segments {
            recovery.records += segment.entries.len() as u64;
            recovery.items += segment.items;
        }

        let read_caches = (0..state.consumers.len())
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            notify: Notify::new(),
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            active,
            truncate_active: false,
            unsynced: false,
            dir_dirty: false,
            last_sync: Instant::now(),
            carried_drops: (0, 0),
            syncer: None,
        };
        if matches!(writer.shared.config.fsync, Fsync::Interval(_)) {
            let (jobs, incoming) = mpsc::channel();
            std::thread::Builder::new()
                .name("sluice-disk-sync".into())
                .spawn(move || syncer(incoming))?;
            writer.syncer = Some(jobs);
        }
        let handle = std::thread::Builder::new()
            .name("sluice-disk-log".into())
            .spawn(move || writer.run())?;
        let log = DiskLog {
            shared,
            tx: Some(tx),
            writer: Some(handle),
            closing: AtomicBool::new(false),
            names: consumers.iter().map(|c| (*c).to_owned()).collect(),
            read_caches,
            _lock: lock,
        };
        Ok((Arc::new(log), recovery))
    }

    /// Appends a record and returns its sequence number once it is written (and synced under
    /// [`Fsync::Always`]).
    ///
    /// # Errors
    /// [`AppendError::Full`] under [`OnFull::Refuse`] when the log is at `max_bytes`,
    /// [`AppendError::TooLarge`] for a record that can never fit, [`AppendError::Closed`] after
    /// [`DiskLog::close`], and [`AppendError::Io`] when writing or syncing fails.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the request: the record may still be appended.
    pub async fn append(&self, payload: Bytes, items: u32) -> Result<Appended, AppendError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        let tx = self.tx.as_ref().ok_or(AppendError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Msg::Append(AppendRequest {
            payload,
            items,
            reply,
        }))
        .map_err(|_| AppendError::Closed)?;
        answer.await.unwrap_or(Err(AppendError::Closed))
    }

    /// The reader of a consumer registered at [`DiskLog::open`], or `None` for an unknown name.
    pub fn reader(self: &Arc<Self>, consumer: &str) -> Option<Reader> {
        let index = lock(&self.shared.state)
            .consumers
            .iter()
            .position(|c| c.name == consumer)?;
        Some(Reader {
            log: Arc::clone(self),
            consumer: index,
        })
    }

    /// A snapshot for metrics.
    pub fn stats(&self) -> LogStats {
        let state = lock(&self.shared.state);
        let consumers = state
            .consumers
            .iter()
            .map(|c| {
                let (records, items) = state.pending_after(c.watermark);
                ConsumerStats {
                    name: c.name.clone(),
                    watermark: c.watermark,
                    records_pending: records,
                    items_pending: items,
                }
            })
            .collect::<Vec<_>>();
        LogStats {
            bytes_on_disk: state.bytes,
            segments: state.segments.len(),
            records_pending: consumers
                .iter()
                .map(|c| c.records_pending)
                .max()
                .unwrap_or(0),
            corrupt_records: state.corrupt_records,
            consumers,
        }
    }

    /// Finishes the appends already requested, syncs the active segment, writes every cursor
    /// and stops the writer. Afterwards appends fail with [`AppendError::Closed`] and readers
    /// return `None` (records not yet read stay on disk for the next open). Acknowledgements
    /// made after close are not persisted, so stop the consumers first. Idempotent.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let Some(tx) = &self.tx else { return };
        let (done, finished) = oneshot::channel();
        if tx.send(Msg::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }

    fn wake_writer(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Wake);
        }
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        // Disconnects the channel: the writer finishes what is queued and exits.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

impl Reader {
    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.log.names[self.consumer]
    }

    /// Records after this consumer's watermark (delivered but unacknowledged ones included).
    pub fn pending_records(&self) -> u64 {
        let state = lock(&self.log.shared.state);
        state
            .pending_after(state.consumers[self.consumer].watermark)
            .0
    }

    /// Bytes of the log's segment files (shared by every consumer of the log).
    pub fn bytes_on_disk(&self) -> u64 {
        lock(&self.log.shared.state).bytes
    }

    /// Items in the records after this consumer's watermark.
    pub fn pending_items(&self) -> u64 {
        let state = lock(&self.log.shared.state);
        state
            .pending_after(state.consumers[self.consumer].watermark)
            .1
    }

    /// Waits for and returns the next run of records for this consumer: at least one record,
    /// and more while the batch stays within `max_items` items and `max_bytes` payload bytes.
    /// Returns `Ok(None)` once the log is closed (records not read stay on disk).
    ///
    /// Records that fail their checksum here (damage after open) are skipped, logged and
    /// counted in [`LogStats::corrupt_records`], and count as acknowledged.
    ///
    /// # Errors
    /// An I/O error reading a segment file; the position is unchanged, so a later call retries.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call delivers nothing and moves nothing.
    pub async fn next(&self, max_items: u64, max_bytes: u64) -> io::Result<Option<ReadBatch>> {
        self.read(max_items, max_bytes, true).await
    }

    /// Like [`Reader::next`] but returns `Ok(None)` at once when no record is available.
    ///
    /// # Errors
    /// As [`Reader::next`].
    pub async fn try_next(&self, max_items: u64, max_bytes: u64) -> io::Result<Option<ReadBatch>> {
        self.read(max_items, max_bytes, false).await
    }

    /// Marks a delivered record done for this consumer. Idempotent; acknowledgements of
    /// records not delivered yet are ignored. The watermark advances over every contiguous
    /// acknowledged record (gaps in the numbering count as done), and segments every consumer
    /// is past are deleted.
    pub fn ack(&self, seq: u64) {
        let (deleted, wake) = lock(&self.log.shared.state).ack(self.consumer, seq);
        remove_files(deleted);
        if wake {
            self.log.wake_writer();
        }
    }

    async fn read(
        &self,
        max_items: u64,
        max_bytes: u64,
        wait: bool,
    ) -> io::Result<Option<ReadBatch>> {
        let shared = &self.log.shared;
        let mut cache = self.log.read_caches[self.consumer].lock().await;
        loop {
            let notified = shared.notify.notified();
            let plan = {
                let state = lock(&shared.state);
                if state.closed {
                    return Ok(None);
                }
                state.plan(self.consumer, max_items, max_bytes)
            };
            if plan.is_empty() {
                if !wait {
                    return Ok(None);
                }
                notified.await;
                continue;
            }
            let open = cache.take();
            let (open, outcome) = tokio::task::spawn_blocking(move || read_plan(open, plan))
                .await
                .map_err(io::Error::other)?;
            *cache = open;
            let got = match outcome {
                Ok(got) => got,
                Err(ReadFailure::Vanished(first_seq)) => {
                    let still_there = lock(&shared.state)
                        .segments
                        .iter()
                        .any(|s| s.first_seq == first_seq);
                    if still_there {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("disk log segment {} is missing", segment_name(first_seq)),
                        ));
                    }
                    // Dropped meanwhile: plan again from the moved position.
                    continue;
                }
                Err(ReadFailure::Io(e)) => return Err(e),
            };
            let (records, deleted, wake) = lock(&shared.state).commit(self.consumer, got);
            remove_files(deleted);
            if wake {
                self.log.wake_writer();
            }
            if !records.is_empty() {
                return Ok(Some(ReadBatch { records }));
            }
        }
    }
}

/// A contiguous byte range of one segment to read for a batch.
#[derive(Debug)]
struct Part {
    first_seq: u64,
    path: PathBuf,
    offset: u64,
    len: u64,
    records: Vec<Planned>,
}

/// A record expected at `at` bytes into its [`Part`].
#[derive(Debug)]
struct Planned {
    seq: u64,
    at: u64,
    len: u32,
    items: u32,
}

/// Planned records as read: `None` for one that failed its checks.
type ReadRecords = Vec<(u64, Option<Record>)>;

enum ReadFailure {
    /// The segment file is gone (a concurrent drop deleted it).
    Vanished(u64),
    Io(io::Error),
}

impl State {
    fn min_watermark(&self) -> u64 {
        self.consumers
            .iter()
            .map(|c| c.watermark)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The segment and entry index of the first record whose sequence number is `>= seq`.
    fn locate(&self, seq: u64) -> Option<(usize, usize)> {
        let start = self
            .segments
            .partition_point(|s| s.first_seq <= seq)
            .saturating_sub(1);
        for (index, segment) in self.segments.iter().enumerate().skip(start) {
            if segment.entries.is_empty() || segment.end_seq() <= seq {
                continue;
            }
            let entry = seq.saturating_sub(segment.first_seq);
            return Some((index, entry as usize));
        }
        None
    }

    /// The sequence number of the first record `>= seq`.
    fn first_seq_from(&self, seq: u64) -> Option<u64> {
        let (segment, entry) = self.locate(seq)?;
        Some(self.segments[segment].first_seq + entry as u64)
    }

    /// Records and items after `watermark`.
    fn pending_after(&self, watermark: u64) -> (u64, u64) {
        let (mut records, mut items) = (0u64, 0u64);
        for segment in &self.segments {
            if segment.end_seq() <= watermark.saturating_add(1) {
                continue;
            }
            if segment.first_seq > watermark {
                records += segment.entries.len() as u64;
                items += segment.items;
            } else {
                let from = (watermark + 1 - segment.first_seq) as usize;
                let tail = segment.entries.get(from..).unwrap_or_default();
                records += tail.len() as u64;
                items += tail.iter().map(|e| u64::from(e.items)).sum::<u64>();
            }
        }
        (records, items)
    }

    /// What consumer `index` reads next: visible records from its position, within the limits
    /// (but at least one).
    fn plan(&self, index: usize, max_items: u64, max_bytes: u64) -> Vec<Part> {
        let mut parts = Vec::new();
        let Some((mut segment_index, mut entry_index)) =
            self.locate(self.consumers[index].next_seq)
        else {
            return parts;
        };
        let (mut items, mut bytes, mut taken) = (0u64, 0u64, 0usize);
        while let Some(segment) = self.segments.get(segment_index) {
            let mut part: Option<Part> = None;
            let mut done = false;
            while let Some(entry) = segment.entries.get(entry_index) {
                let seq = segment.first_seq + entry_index as u64;
                let (entry_items, entry_bytes) = (u64::from(entry.items), u64::from(entry.len));
                let over = items + entry_items > max_items || bytes + entry_bytes > max_bytes;
                if seq > self.visible || (taken > 0 && over) {
                    done = true;
                    break;
                }
                let part = part.get_or_insert_with(|| Part {
                    first_seq: segment.first_seq,
                    path: segment.path.clone(),
                    offset: entry.offset,
                    len: 0,
                    records: Vec::new(),
                });
                let at = entry.offset - part.offset;
                part.records.push(Planned {
                    seq,
                    at,
                    len: entry.len,
                    items: entry.items,
                });
                part.len = at + RECORD_HEADER_LEN + entry_bytes;
                items += entry_items;
                bytes += entry_bytes;
                taken += 1;
                entry_index += 1;
            }
            parts.extend(part);
            if done {
                break;
            }
            segment_index += 1;
            entry_index = 0;
        }
        parts
    }

    /// Takes what a read of consumer `index` returned: moves its position, skips records
    /// dropped meanwhile and treats damaged ones as acknowledged. Returns the records, the
    /// segment files to delete and whether to wake the writer.
    fn commit(&mut self, index: usize, got: ReadRecords) -> (Vec<Record>, Vec<PathBuf>, bool) {
        let floor = self.consumers[index].next_seq;
        let mut records = Vec::with_capacity(got.len());
        let mut corrupt = Vec::new();
        let mut last = None;
        for (seq, record) in got {
            if seq < floor {
                continue;
            }
            last = Some(seq);
            match record {
                Some(record) => records.push(record),
                None => corrupt.push(seq),
            }
        }
        if let Some(last) = last {
            self.consumers[index].next_seq = last + 1;
        }
        if corrupt.is_empty() {
            return (records, Vec::new(), false);
        }
        tracing::warn!(
            consumer = %self.consumers[index].name,
            seqs = ?corrupt,
            "disk log records failed their checksum and are skipped"
        );
        self.corrupt_records += corrupt.len() as u64;
        self.consumers[index].acked.extend(corrupt);
        let (deleted, wake) = self.settle(index);
        (records, deleted, wake)
    }

    /// Records an acknowledgement; returns the segment files to delete and whether to wake the
    /// writer.
    fn ack(&mut self, index: usize, seq: u64) -> (Vec<PathBuf>, bool) {
        let consumer = &mut self.consumers[index];
        if seq <= consumer.watermark || seq >= consumer.next_seq {
            return (Vec::new(), false);
        }
        consumer.acked.insert(seq);
        self.settle(index)
    }

    /// Advances consumer `index`'s watermark; when it moved, marks its cursor dirty and pops
    /// the segments no consumer needs any more.
    fn settle(&mut self, index: usize) -> (Vec<PathBuf>, bool) {
        let before = self.consumers[index].watermark;
        self.advance(index);
        let consumer = &mut self.consumers[index];
        if consumer.watermark == before {
            return (Vec::new(), false);
        }
        let wake = !consumer.dirty;
        consumer.dirty = true;
        (self.pop_consumed(), wake)
    }

    /// Moves consumer `index`'s watermark over every acknowledged record that directly follows
    /// it; sequence numbers without a record count as done.
    fn advance(&mut self, index: usize) {
        loop {
            let watermark = self.consumers[index].watermark;
            let Some(next) = self.first_seq_from(watermark.saturating_add(1)) else {
                break;
            };
            let consumer = &mut self.consumers[index];
            if !consumer.acked.remove(&next) {
                break;
            }
            consumer.watermark = next;
        }
        let consumer = &mut self.consumers[index];
        if consumer
            .acked
            .first()
            .is_some_and(|&seq| seq <= consumer.watermark)
        {
            consumer.acked = consumer.acked.split_off(&(consumer.watermark + 1));
        }
    }

    /// Removes the sealed segments every consumer is past; returns their paths.
    fn pop_consumed(&mut self) -> Vec<PathBuf> {
        let min = self.min_watermark();
        let mut deleted = Vec::new();
        while self.segments.len() > 1 {
            let needed = self
                .segments
                .front()
                .and_then(Segment::last_seq)
                .is_some_and(|last| last > min);
            if needed {
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                self.bytes -= segment.size;
                deleted.push(segment.path);
            }
        }
        deleted
    }

    /// Removes the oldest segment and moves every consumer past it. Returns its path and the
    /// records (and their items) some consumer had not acknowledged.
    fn drop_oldest(&mut self) -> Option<(PathBuf, u64, u64)> {
        let min = self.min_watermark();
        let segment = self.segments.pop_front()?;
        self.bytes -= segment.size;
        let (mut records, mut items) = (0u64, 0u64);
        for (index, entry) in segment.entries.iter().enumerate() {
            if segment.first_seq + index as u64 > min {
                records += 1;
                items += u64::from(entry.items);
            }
        }
        if let Some(last) = segment.last_seq() {
            for index in 0..self.consumers.len() {
                let consumer = &mut self.consumers[index];
                let before = consumer.watermark;
                consumer.next_seq = consumer.next_seq.max(last + 1);
                consumer.watermark = consumer.watermark.max(last);
                self.advance(index);
                let consumer = &mut self.consumers[index];
                if consumer.watermark != before {
                    consumer.dirty = true;
                }
            }
        }
        Some((segment.path, records, items))
    }
}

/// The writer thread: owns the active segment file, every sync and every cursor write.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    active: File,
    /// A failed write may have left bytes after the active segment's last record.
    truncate_active: bool,
    /// Records written since the last sync.
    unsynced: bool,
    /// A segment file was created since the last directory sync.
    dir_dirty: bool,
    last_sync: Instant,
    /// Records and items dropped for an append that then failed; reported with the next one.
    carried_drops: (u64, u64),
    /// Under [`Fsync::Interval`]: a thread that runs the periodic syncs, so appends never wait
    /// behind one (measured: p99 latency 32 ms with the sync on the writer, once a second).
    syncer: Option<mpsc::Sender<SyncJob>>,
}

/// A sync handed to the syncer thread: a handle on a segment file, and the directory when a
/// segment was created since the last sync.
struct SyncJob {
    file: File,
    dir: Option<PathBuf>,
}

/// Runs [`SyncJob`]s until the writer is gone.
fn syncer(jobs: mpsc::Receiver<SyncJob>) {
    while let Ok(job) = jobs.recv() {
        if let Err(e) = job.file.sync_data() {
            tracing::warn!(error = %e, "disk log sync failed");
        }
        if let Some(dir) = job.dir
            && let Err(e) = sync_dir(&dir)
        {
            tracing::warn!(error = %e, "disk log directory sync failed");
        }
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.deadline() {
                None => match self.rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return,
                },
                Some(at) => {
                    match self
                        .rx
                        .recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            let mut appends = Vec::new();
            let mut closers = Vec::new();
            let mut next = first;
            while let Some(msg) = next {
                match msg {
                    Msg::Append(request) if closers.is_empty() => appends.push(request),
                    Msg::Append(request) => {
                        let _ = request.reply.send(Err(AppendError::Closed));
                    }
                    Msg::Wake => {}
                    Msg::Close(done) => closers.push(done),
                }
                if appends.len() >= MAX_GROUP {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if !appends.is_empty() {
                self.append_group(appends);
            }
            if !closers.is_empty() {
                self.shut_down();
                for done in closers {
                    let _ = done.send(());
                }
                return;
            }
            self.sync_if_due();
            self.write_cursors(false);
        }
    }

    /// When the writer must wake up without a message: for an interval sync or a cursor write.
    fn deadline(&self) -> Option<Instant> {
        let mut at = None;
        if let Fsync::Interval(every) = self.shared.config.fsync
            && (self.unsynced || self.dir_dirty)
        {
            at = self.last_sync.checked_add(every);
        }
        let always = self.shared.config.fsync == Fsync::Always;
        let state = lock(&self.shared.state);
        for consumer in state.consumers.iter().filter(|c| c.dirty) {
            let due = cursor_due(consumer, always).unwrap_or_else(Instant::now);
            at = Some(at.map_or(due, |at: Instant| at.min(due)));
        }
        at
    }

    /// Writes a group of appends, syncs once under `Always`, publishes and answers them.
    fn append_group(&mut self, requests: Vec<AppendRequest>) {
        let always = self.shared.config.fsync == Fsync::Always;
        let mut answers = Vec::with_capacity(requests.len());
        let mut deleted = Vec::new();
        let mut wrote = false;
        {
            let shared = Arc::clone(&self.shared);
            let mut state = lock(&shared.state);
            for request in requests {
                let answer = if state.closed {
                    Err(AppendError::Closed)
                } else {
                    self.append_one(&mut state, &request.payload, request.items, &mut deleted)
                };
                wrote |= answer.is_ok();
                answers.push((request.reply, answer));
            }
            if wrote && !always {
                state.visible = state.next_seq - 1;
            }
        }
        remove_files(deleted);
        if wrote {
            if always {
                if let Err(e) = self.sync() {
                    tracing::warn!(error = %e, "disk log sync failed");
                    for (_, answer) in &mut answers {
                        if answer.is_ok() {
                            *answer = Err(AppendError::Io(io::Error::new(e.kind(), e.to_string())));
                        }
                    }
                }
                let mut state = lock(&self.shared.state);
                state.visible = state.next_seq - 1;
            } else {
                self.unsynced = true;
            }
            self.shared.notify.notify_waiters();
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    /// Writes one record, rolling and dropping segments as needed. The record becomes readable
    /// when the group is published.
    fn append_one(
        &mut self,
        state: &mut State,
        payload: &Bytes,
        items: u32,
        deleted: &mut Vec<PathBuf>,
    ) -> Result<Appended, AppendError> {
        let (max_bytes, segment_bytes, on_full) = {
            let config = &self.shared.config;
            (config.max_bytes, config.segment_bytes, config.on_full)
        };
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(AppendError::TooLarge {
                size: RECORD_HEADER_LEN + payload.len() as u64,
                max: RECORD_HEADER_LEN + u64::from(u32::MAX),
            });
        };
        let size = RECORD_HEADER_LEN + u64::from(len);
        if size > max_bytes {
            return Err(AppendError::TooLarge {
                size,
                max: max_bytes,
            });
        }
        let min = state.min_watermark();
        let Some(active) = state.segments.back() else {
            return Err(io::Error::other("disk log has no active segment").into());
        };
        if self.truncate_active {
            self.active.set_len(active.size)?;
            self.truncate_active = false;
        }
        // A fully consumed active segment is replaced (and deleted) rather than grown.
        let consumed = active.last_seq().is_some_and(|last| last <= min);
        let outgrown = !active.entries.is_empty() && active.size + size > segment_bytes;
        let needed = state.bytes - if consumed { active.size } else { 0 };
        if on_full == OnFull::Refuse && needed + size > max_bytes {
            return Err(AppendError::Full);
        }
        if consumed || outgrown {
            self.roll(state)?;
            deleted.extend(state.pop_consumed());
        }
        let (mut dropped_records, mut dropped_items) = std::mem::take(&mut self.carried_drops);
        while state.bytes + size > max_bytes && state.segments.len() > 1 {
            if let Some((path, records, items)) = state.drop_oldest() {
                deleted.push(path);
                dropped_records += records;
                dropped_items += items;
            }
            deleted.extend(state.pop_consumed());
        }
        if dropped_records > 0 {
            tracing::warn!(
                records = dropped_records,
                items = dropped_items,
                "disk log full, dropped the oldest records"
            );
        }
        let seq = state.next_seq;
        let written = if state.bytes + size > max_bytes {
            Err(AppendError::Full)
        } else {
            let header = encode_header(len, seq, items, payload);
            write_record(&mut self.active, &header, payload).map_err(AppendError::Io)
        };
        let Some(active) = state.segments.back_mut() else {
            return Err(io::Error::other("disk log has no active segment").into());
        };
        if let Err(e) = written {
            self.carried_drops = (dropped_records, dropped_items);
            if matches!(e, AppendError::Io(_)) && self.active.set_len(active.size).is_err() {
                self.truncate_active = true;
            }
            return Err(e);
        }
        active.entries.push(Entry {
            offset: active.size,
            len,
            items,
        });
        active.size += size;
        active.items += u64::from(items);
        state.bytes += size;
        state.next_seq += 1;
        Ok(Appended {
            seq,
            dropped_records,
            dropped_items,
        })
    }

    /// Seals the active segment and starts a new one named after the next sequence number.
    fn roll(&mut self, state: &mut State) -> io::Result<()> {
        match (&self.syncer, self.shared.config.fsync) {
            (_, Fsync::Never) => {}
            (Some(syncer), Fsync::Interval(_)) => {
                let file = self.active.try_clone()?;
                if syncer.send(SyncJob { file, dir: None }).is_err() {
                    self.active.sync_data()?;
                }
            }
            _ => self.active.sync_data()?,
        }
        let first_seq = state.next_seq;
        let path = self.shared.config.dir.join(segment_name(first_seq));
        self.active = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        self.dir_dirty = true;
        state.segments.push_back(Segment::new(first_seq, path));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.last_sync = Instant::now();
        self.active.sync_data()?;
        if self.dir_dirty {
            sync_dir(&self.shared.config.dir)?;
            self.dir_dirty = false;
        }
        self.unsynced = false;
        Ok(())
    }

    fn sync_if_due(&mut self) {
        let Fsync::Interval(every) = self.shared.config.fsync else {
            return;
        };
        if !(self.unsynced || self.dir_dirty) || self.last_sync.elapsed() < every {
            return;
        }
        let handed_off = match (&self.syncer, self.active.try_clone()) {
            (Some(syncer), Ok(file)) => {
                let dir = self.dir_dirty.then(|| self.shared.config.dir.clone());
                syncer.send(SyncJob { file, dir }).is_ok()
            }
            _ => false,
        };
        if handed_off {
            self.last_sync = Instant::now();
            self.unsynced = false;
            self.dir_dirty = false;
        } else if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "disk log sync failed");
        }
    }

    /// Writes the cursors that are due (or all of them).
    fn write_cursors(&mut self, all: bool) {
        let always = self.shared.config.fsync == Fsync::Always;
        let now = Instant::now();
        let jobs = {
            let mut state = lock(&self.shared.state);
            state
                .consumers
                .iter_mut()
                .enumerate()
                .filter(|(_, c)| {
                    all || (c.dirty && cursor_due(c, always).is_none_or(|due| due <= now))
                })
                .map(|(index, c)| {
                    c.dirty = false;
                    c.last_write = Some(now);
                    (index, c.cursor.clone(), c.watermark)
                })
                .collect::<Vec<_>>()
        };
        if jobs.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for (index, path, watermark) in &jobs {
            if let Err(e) = write_cursor(path, *watermark) {
                tracing::warn!(path = %path.display(), error = %e, "disk log cursor write failed");
                failed.push(*index);
            }
        }
        if let Err(e) = sync_dir(&self.shared.config.dir) {
            tracing::warn!(error = %e, "disk log directory sync failed");
            failed = jobs.iter().map(|(index, _, _)| *index).collect();
        }
        let mut state = lock(&self.shared.state);
        for (index, _, _) in &jobs {
            state.consumers[*index].write_failed = false;
        }
        for index in failed {
            let consumer = &mut state.consumers[index];
            consumer.dirty = true;
            consumer.write_failed = true;
        }
    }

    fn shut_down(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.notify.notify_waiters();
        // Pending periodic syncs finish on their own; this one covers everything written.
        self.syncer = None;
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "disk log sync on close failed");
        }
        self.write_cursors(true);
    }
}

/// When a dirty cursor is due: `None` for now.
fn cursor_due(consumer: &ConsumerState, always: bool) -> Option<Instant> {
    let last = consumer.last_write?;
    if always && !consumer.write_failed {
        return None;
    }
    last.checked_add(CURSOR_PERIOD)
}

/// Reads the planned ranges (blocking), reusing the open segment file when it is the same.
fn read_plan(
    mut open: Option<OpenSegment>,
    plan: Vec<Part>,
) -> (Option<OpenSegment>, Result<ReadRecords, ReadFailure>) {
    let mut got = Vec::new();
    for part in plan {
        let mut segment = match open.take() {
            Some(segment) if segment.first_seq == part.first_seq => segment,
            _ => match File::open(&part.path) {
                Ok(file) => OpenSegment {
                    first_seq: part.first_seq,
                    file,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return (None, Err(ReadFailure::Vanished(part.first_seq)));
                }
                Err(e) => return (None, Err(ReadFailure::Io(e))),
            },
        };
        let buf = match read_range(&mut segment.file, part.offset, part.len) {
            Ok(buf) => Bytes::from(buf),
            Err(e) => return (None, Err(ReadFailure::Io(e))),
        };
        open = Some(segment);
        for planned in part.records {
            got.push((planned.seq, decode_planned(&buf, &planned)));
        }
    }
    (open, Ok(got))
}

/// The planned record in `buf`, if it is intact and what the index says.
fn decode_planned(buf: &Bytes, planned: &Planned) -> Option<Record> {
    let at = usize::try_from(planned.at).ok()?;
    let (header, end) = record_at(buf, at, |seq| seq == planned.seq)?;
    if header.len != planned.len || header.items != planned.items {
        return None;
    }
    Some(Record {
        seq: header.seq,
        items: header.items,
        payload: buf.slice(at + HEADER..end),
    })
}

fn read_range(file: &mut File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // A short file yields a short buffer; the records beyond its end fail their checks.
    Read::by_ref(file).take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A record's header fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: u32,
    seq: u64,
    items: u32,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn checksum(seq: u64, items: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&items.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode_header(len: u32, seq: u64, items: u32, payload: &[u8]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&checksum(seq, items, payload).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..20].copy_from_slice(&items.to_le_bytes());
    header
}

/// The intact record at `at` whose sequence number `accept`s, and where it ends.
fn record_at(buf: &[u8], at: usize, accept: impl Fn(u64) -> bool) -> Option<(Header, usize)> {
    let header = buf.get(at..at.checked_add(HEADER)?)?;
    let len = le_u32(header, 0)?;
    let crc = le_u32(header, 4)?;
    let seq = le_u64(header, 8)?;
    let items = le_u32(header, 16)?;
    if !accept(seq) {
        return None;
    }
    let start = at + HEADER;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let payload = buf.get(start..end)?;
    (checksum(seq, items, payload) == crc).then_some((Header { len, seq, items }, end))
}

fn write_record(file: &mut File, header: &[u8], payload: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(header), IoSlice::new(payload)];
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The intact prefix of a segment file.
#[derive(Debug, Default)]
struct Scan {
    entries: Vec<Entry>,
    items: u64,
    good_end: usize,
}

fn scan_segment(buf: &[u8], first_seq: u64) -> Scan {
    let mut scan = Scan::default();
    let mut expected = first_seq;
    while scan.good_end < buf.len() {
        let Some((header, end)) = record_at(buf, scan.good_end, |seq| seq == expected) else {
            break;
        };
        scan.entries.push(Entry {
            offset: scan.good_end as u64,
            len: header.len,
            items: header.items,
        });
        scan.items += u64::from(header.items);
        scan.good_end = end;
        expected = expected.saturating_add(1);
    }
    scan
}

/// Whether an intact record with a plausible sequence number starts anywhere after `from`.
fn resyncs(buf: &[u8], from: usize, expected: u64) -> bool {
    let limit = expected.saturating_add(buf.len() as u64);
    (from + 1..buf.len())
        .any(|at| record_at(buf, at, |seq| seq >= expected && seq <= limit).is_some())
}

fn encode_cursor(watermark: u64) -> [u8; CURSOR_LEN] {
    let mut bytes = [0u8; CURSOR_LEN];
    bytes[0..4].copy_from_slice(CURSOR_MAGIC);
    bytes[4..12].copy_from_slice(&watermark.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn parse_cursor(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != CURSOR_LEN || bytes.get(0..4)? != CURSOR_MAGIC {
        return None;
    }
    (crc32fast::hash(bytes.get(0..12)?) == le_u32(bytes, 12)?).then_some(le_u64(bytes, 4)?)
}

fn write_cursor(path: &Path, watermark: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&encode_cursor(watermark))?;
    file.sync_data()?;
    drop(file);
    fs::rename(&tmp, path)
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn cursor_name(consumer: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(7 + 2 * consumer.len());
    name.push_str("cursor-");
    for byte in consumer.bytes() {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    name
}

type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// Segment files in order, and cursor files; removes leftover temporary cursor files.
fn list_dir(dir: &Path) -> io::Result<Listing> {
    let mut segments = Vec::new();
    let mut cursors = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_segment_name(name) {
            segments.push((first_seq, entry.path()));
        } else if name.starts_with("cursor-") {
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            } else {
                cursors.push(entry.path());
            }
        }
    }
    segments.sort_by_key(|(first_seq, _)| *first_seq);
    Ok((segments, cursors))
}

fn truncate_file(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Copies damaged bytes to `quarantine/<segment file name>.<offset>`.
fn quarantine(dir: &Path, segment: &Path, offset: usize, bytes: &[u8]) -> io::Result<PathBuf> {
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine)?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = quarantine.join(format!("{name}.{offset}"));
    let mut file = File::create(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_dir(&quarantine)?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_files(paths: Vec<PathBuf>) {
    for path in paths {
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "disk log could not delete a segment");
        }
    }
}

fn validate(config: &LogConfig, consumers: &[&str]) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    if config.segment_bytes == 0 {
        return invalid("disk log segment_bytes must be greater than zero".into());
    }
    if config.max_bytes < config.segment_bytes {
        return invalid(format!(
            "disk log max_bytes ({}) must be at least segment_bytes ({})",
            config.max_bytes, config.segment_bytes
        ));
    }
    if consumers.is_empty() {
        return invalid("disk log needs at least one consumer".into());
    }
    for (index, name) in consumers.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_CONSUMER_NAME {
            return invalid(format!(
                "disk log consumer name {name:?} must be 1 to {MAX_CONSUMER_NAME} bytes"
            ));
        }
        if consumers[..index].contains(name) {
            return invalid(format!("disk log consumer {name:?} is registered twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
