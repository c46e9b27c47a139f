//! The `memory_limiter` processor: keeps the process under its memory limit by refusing data
//! with retryable errors before it is read, not after it has been decoded.
//!
//! Two mechanisms, because the Collector's single one (polling the heap) reacts too late:
//! 1. Admission by bytes. Receivers consult the limiter's [`MemoryGate`] before reading a
//!    request and reserve its size before handing it on; the reservation lives as long as any
//!    copy of the data (batcher, exporter queues, retries). In-flight data therefore never
//!    exceeds the budget, whatever the clients do, and no poll interval is involved.
//! 2. A memory watcher. Every `check_interval` it reads the process's memory (the allocator's
//!    live bytes where the binary provides them, else RSS) and refuses everything while usage is
//!    above the soft limit (`limit - spike_limit`). This catches memory the budget does not see.
//!
//! Memory in use is the allocator's live bytes plus the resident overhead they do not cover
//! (code, stacks), measured at start. The budget is a third of the headroom between the soft
//! limit and that usage at start-up: the overload test (tests/e2e/overload.rs) measured resident
//! memory at about three times the data admitted, because besides the batch itself each export
//! attempt holds an encoded copy, and batch building, decompression and socket buffers add more.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, MemoryGate, PipelineContext, Processor,
    ProcessorComponent, ProcessorFactory, metrics as names, typed,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;

/// `processors.memory_limiter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often the memory watcher measures (default `1s`). Admission by bytes needs no
    /// polling, so this only paces the second line of defence.
    pub check_interval: HumanDuration,
    /// Hard limit in MiB. One of `limit_mib` and `limit_percentage` is required.
    pub limit_mib: u64,
    /// Headroom below the hard limit in MiB; the soft limit is `limit_mib - spike_limit_mib`
    /// (default 20% of `limit_mib`).
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of the container's cgroup memory limit (or of physical memory
    /// where no cgroup limit is set).
    pub limit_percentage: u64,
    /// Headroom as a percentage (default 20% of `limit_percentage`).
    pub spike_limit_percentage: u64,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: HumanDuration::from_secs(1),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

impl MemoryLimiterConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.check_interval.is_zero() {
            problems.push(Problem::error(
                format!("{path}.check_interval"),
                "must be greater than zero",
            ));
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            problems.push(Problem::error(
                path,
                "set `limit_mib` or `limit_percentage`",
            ));
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            problems.push(Problem::error(
                format!("{path}.spike_limit_mib"),
                "must be less than limit_mib",
            ));
        }
        if self.limit_percentage > 100 {
            problems.push(Problem::error(
                format!("{path}.limit_percentage"),
                "must be between 1 and 100",
            ));
        }
        if self.limit_percentage > 0 && self.spike_limit_percentage >= self.limit_percentage {
            problems.push(Problem::error(
                format!("{path}.spike_limit_percentage"),
                "must be less than limit_percentage",
            ));
        }
        problems
    }

    /// Hard and soft limits in bytes; `total` is the memory available to the process.
    fn limits(&self, total: u64) -> (u64, u64) {
        if self.limit_mib > 0 {
            let hard = self.limit_mib * MIB;
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib * MIB
            } else {
                hard / 5
            };
            (hard, hard - spike)
        } else {
            let hard = total / 100 * self.limit_percentage;
            let spike = if self.spike_limit_percentage > 0 {
                total / 100 * self.spike_limit_percentage
            } else {
                hard / 5
            };
            (hard, hard.saturating_sub(spike))
        }
    }
}

/// A reading of the process's memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryReading {
    /// Resident set size in bytes.
    pub rss: u64,
    /// Bytes the allocator holds for live objects, where the binary's allocator reports them.
    /// Preferred over RSS for the soft limit, because freed memory an allocator keeps for reuse
    /// would otherwise look like pressure that never ends.
    pub allocated: Option<u64>,
}

/// Measures the process's memory; supplied by the binary, which knows its allocator.
pub type MemoryProbe = Arc<dyn Fn() -> MemoryReading + Send + Sync>;

/// Reads RSS from `/proc/self/statm` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// The memory the process may use: the cgroup limit where one is set, else physical memory.
pub fn available_memory() -> u64 {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    // cgroup v1 reports "no limit" as a huge number.
    .find(|&v| v < (1 << 60));
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    match cgroup {
        Some(limit) if physical == 0 || limit < physical => limit,
        _ => physical,
    }
}

/// One memory limiter: a gate shared by every pipeline that lists it, and the watcher that
/// measures memory for it.
struct Limiter {
    id: String,
    gate: Arc<MemoryGate>,
    /// Taken by `start`.
    watcher: Mutex<Option<Watcher>>,
}

impl ProcessorComponent for Limiter {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        Ok(Instance::new(Arc::new(LimiterStage {
            refused: metrics::counter!(names::processor_refused(ctx.signal), "processor" => ctx.id.clone()),
            refused_new: metrics::counter!(names::memory_limiter_refused(ctx.signal), "processor" => ctx.id.clone()),
            id: self.id.clone(),
            gate: Arc::clone(&self.gate),
        })))
    }

    fn gate(&self) -> Option<Arc<MemoryGate>> {
        Some(Arc::clone(&self.gate))
    }

    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let watcher = self
            .watcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        watcher
            .map(|w| tokio::spawn(watch(w, shutdown)))
            .into_iter()
            .collect()
    }
}

/// Watches memory and flips the gate's refusal flag.
struct Watcher {
    id: String,
    gate: Arc<MemoryGate>,
    probe: MemoryProbe,
    /// Resident bytes the heap statistic does not cover.
    overhead: u64,
    hard: u64,
    soft: u64,
    interval: Duration,
}

async fn watch(w: Watcher, shutdown: CancellationToken) {
    let Watcher {
        id,
        gate,
        probe,
        overhead,
        hard,
        soft,
        interval,
    } = w;
    metrics::gauge!(names::MEMORY_LIMITER_LIMIT_BYTES, "processor" => id.clone(), "limit" => "soft")
        .set(soft as f64);
    metrics::gauge!(names::MEMORY_LIMITER_LIMIT_BYTES, "processor" => id.clone(), "limit" => "hard")
        .set(hard as f64);
    let used_gauge = metrics::gauge!(names::MEMORY_LIMITER_MEMORY_BYTES, "processor" => id.clone());
    let in_flight_gauge =
        metrics::gauge!(names::MEMORY_LIMITER_IN_FLIGHT_BYTES, "processor" => id.clone());
    let budget_gauge = metrics::gauge!(names::MEMORY_LIMITER_LIMIT_BYTES, "processor" => id.clone(), "limit" => "in_flight");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let reading = probe();
        let used = reading.allocated.map_or(reading.rss, |a| a + overhead);
        used_gauge.set(used as f64);
        in_flight_gauge.set(gate.in_flight() as f64);
        budget_gauge.set(gate.budget() as f64);
        let refuse = used >= soft || reading.rss >= hard;
        if refuse != gate.is_refusing() {
            gate.set_refusing(refuse);
            if refuse {
                tracing::warn!(processor = %id, used_mib = used / MIB, rss_mib = reading.rss / MIB, soft_limit_mib = soft / MIB, hard_limit_mib = hard / MIB, "memory above the soft limit, refusing data");
            } else {
                tracing::info!(processor = %id, used_mib = used / MIB, "memory back below the soft limit, accepting data");
            }
        }
    }
}

struct LimiterStage {
    id: String,
    gate: Arc<MemoryGate>,
    refused: Counter,
    refused_new: Counter,
}

#[async_trait]
impl Processor for LimiterStage {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        // Receivers already asked the gate; this catches data that was admitted just before
        // pressure set in and is still on its way.
        if self.gate.is_refusing() {
            self.refused.increment(batch.items() as u64);
            self.refused_new.increment(batch.items() as u64);
            return Err(ConsumeError::unavailable(format!(
                "data refused by {}: memory usage is above the soft limit, retry later",
                self.id
            )));
        }
        Ok(Some(batch))
    }
}

/// Builds `memory_limiter` processors. One limiter (gate and watcher) exists per component id,
/// shared by every pipeline that lists it, since it guards the whole process.
pub struct MemoryLimiterFactory {
    probe: MemoryProbe,
    available: u64,
}

impl MemoryLimiterFactory {
    /// A factory measuring memory with `probe`.
    pub fn new(probe: MemoryProbe) -> Self {
        MemoryLimiterFactory {
            probe,
            available: available_memory(),
        }
    }
}

impl ProcessorFactory for MemoryLimiterFactory {
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &MemoryLimiterConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let config: MemoryLimiterConfig = typed(&path, config)?;
        if let Some(p) = config.check(&path).into_iter().next() {
            return Err(BuildError::Config(p));
        }
        let (hard, soft) = config.limits(self.available);
        // Resident memory the heap statistic does not see (code, stacks, allocator metadata),
        // measured once: usage is then live heap plus this overhead.
        let start = (self.probe)();
        let overhead = start.allocated.map_or(0, |a| start.rss.saturating_sub(a));
        let baseline = start.allocated.unwrap_or(start.rss) + overhead;
        let budget = (soft.saturating_sub(baseline) / 3).max(MIB);
        let gate = MemoryGate::new(id, budget as usize);
        tracing::info!(processor = %id, hard_limit_mib = hard / MIB, soft_limit_mib = soft / MIB, in_flight_budget_mib = budget / MIB, "memory limiter ready");
        Ok(Box::new(Limiter {
            id: id.to_owned(),
            gate: Arc::clone(&gate),
            watcher: Mutex::new(Some(Watcher {
                id: id.to_owned(),
                gate,
                probe: Arc::clone(&self.probe),
                overhead,
                hard,
                soft,
                interval: config.check_interval.get(),
            })),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{Consumer, Output, ProcessorStage, Signal};
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Null;

    #[async_trait]
    impl Consumer for Null {
        async fn consume(&self, _: Batch) -> Result<(), ConsumeError> {
            Ok(())
        }
    }

    #[test]
    fn limits_follow_the_collector() {
        let c = MemoryLimiterConfig {
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(c.limits(0), (100 * MIB, 80 * MIB));
        let c = MemoryLimiterConfig {
            limit_percentage: 50,
            spike_limit_percentage: 10,
            ..Default::default()
        };
        assert_eq!(c.limits(1000 * MIB), (500 * MIB, 400 * MIB));
    }

    #[test]
    fn config_problems_name_their_keys() {
        let f = MemoryLimiterFactory::new(Arc::new(MemoryReading::default));
        let p = f.check(
            "processors.memory_limiter",
            &serde_json::json!({"check_interval": "1s"}),
        );
        assert_eq!(
            p[0].to_string(),
            "error: processors.memory_limiter: set `limit_mib` or `limit_percentage`"
        );
        let p = f.check(
            "processors.memory_limiter",
            &serde_json::json!({"limit_mib": 100, "spike_limit_mib": 100}),
        );
        assert!(
            p[0].to_string()
                .contains("spike_limit_mib: must be less than limit_mib")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_above_the_soft_limit_and_recovers_below_it() {
        let used = Arc::new(AtomicU64::new(10 * MIB));
        let probe: MemoryProbe = {
            let used = Arc::clone(&used);
            Arc::new(move || MemoryReading {
                rss: used.load(Ordering::Relaxed),
                allocated: Some(used.load(Ordering::Relaxed)),
            })
        };
        let factory = MemoryLimiterFactory::new(probe);
        let shutdown = CancellationToken::new();
        let component = factory
            .build(
                "memory_limiter",
                &serde_json::json!({"limit_mib": 100, "check_interval": "100ms"}),
            )
            .unwrap();
        let tasks = component.start(shutdown.clone());
        assert_eq!(tasks.len(), 1, "one watcher");
        assert!(component.start(shutdown.clone()).is_empty(), "started once");
        let instance = component
            .instance(PipelineContext {
                id: "memory_limiter".into(),
                pipeline: "traces".into(),
                signal: Signal::Traces,
                output: Output::new("memory_limiter", Signal::Traces, Arc::new(Null)),
                shutdown: shutdown.clone(),
            })
            .unwrap();
        let built = ProcessorStage::new(
            "memory_limiter",
            Signal::Traces,
            instance.processor,
            Output::new("memory_limiter", Signal::Traces, Arc::new(Null)),
        );
        let gate = component.gate().unwrap();
        assert_eq!(
            gate.budget() as u64,
            70 * MIB / 3,
            "a third of soft (80) minus baseline (10)"
        );
        let batch = || Batch::from_trusted(Signal::Traces, bytes::Bytes::new(), 1);
        built.consume(batch()).await.unwrap();
        used.store(90 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let err = built.consume(batch()).await.unwrap_err();
        assert!(err.is_retryable());
        assert!(gate.check(0).is_err());
        used.store(50 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(150)).await;
        built.consume(batch()).await.unwrap();
        shutdown.cancel();
    }

    #[test]
    fn reads_this_process_memory() {
        assert!(rss_bytes() > 0);
        assert!(available_memory() > 0);
    }
}
