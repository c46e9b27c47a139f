//! Building the pipelines a configuration describes, running them, and shutting down in order.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use sluice_config::{ComponentId, RawConfig};
use sluice_core::disk_log::{DiskLog, Fsync, LogConfig, OnFull};
use sluice_core::durable::{DurableTap, TapLog};
use sluice_core::exporter::{FsyncPolicy, OnFull as OnFullPolicy};
use sluice_core::{
    Admission, BuiltExporter, Chain, ConnectorComponent, ConnectorContext, Consumer,
    ExporterHelper, Fanout, FanoutPolicy, HelperSettings, Host, MemoryGate, Output,
    PipelineContext, ProcessorComponent, ProcessorStage, ReceiverOutputs, Route, ServiceStatus,
    Signal,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// One pipeline's entry point and the memory gates guarding it.
struct PipelineHead {
    signal: Signal,
    consumer: Arc<dyn Consumer>,
    gates: Vec<Arc<MemoryGate>>,
}

/// The pipelines a receiver feeds for one signal, and their memory gates.
type Inputs = (Vec<Arc<dyn Consumer>>, Vec<Arc<MemoryGate>>);

/// A running collector.
pub(crate) struct Service {
    receivers: CancellationToken,
    /// Per processor of each pipeline, upstream first: the token it stops on, and its tasks. A
    /// processor hands on what it holds before the next one stops, a pipeline feeding others
    /// through connectors flushes before they do, and each connector's own work stops between
    /// the pipelines that feed it and those it feeds.
    pipelines: Vec<(CancellationToken, Vec<JoinHandle<()>>)>,
    /// The processor components' own work (memory watchers), stopped after every pipeline.
    components: CancellationToken,
    component_tasks: Vec<JoinHandle<()>>,
    last: CancellationToken,
    receiver_tasks: Vec<JoinHandle<()>>,
    helpers: Vec<Arc<ExporterHelper>>,
    exporter_tasks: Vec<JoinHandle<()>>,
    /// Cancelled once the queues have drained: the exporters' own tasks end.
    exporters_done: CancellationToken,
    exporter_own_tasks: Vec<JoinHandle<()>>,
    side_tasks: Vec<JoinHandle<()>>,
    status: Arc<ServiceStatus>,
    /// The pipelines' persistent queues, closed last so every acknowledgement is recorded.
    logs: Vec<Arc<DiskLog>>,
}

fn signal_of(pipeline_id: &str) -> anyhow::Result<Signal> {
    let id = ComponentId::parse(pipeline_id).map_err(|e| anyhow!(e))?;
    Signal::from_name(id.type_name())
        .ok_or_else(|| anyhow!("unknown pipeline type in `{pipeline_id}`"))
}

fn type_of(id: &str) -> anyhow::Result<String> {
    Ok(ComponentId::parse(id)
        .map_err(|e| anyhow!(e))?
        .type_name()
        .to_owned())
}

impl Service {
    /// Builds every component and starts listening. The configuration must have passed
    /// validation.
    pub(crate) async fn start(
        config: &RawConfig,
        registry: &Registry,
        status: Arc<ServiceStatus>,
        mut side_tasks: Vec<JoinHandle<()>>,
        last: CancellationToken,
    ) -> anyhow::Result<Service> {
        let (extension_tasks, authenticators, exporter_context) =
            start_extensions(config, registry, &status, &last).await?;
        side_tasks.extend(extension_tasks);
        let receivers = CancellationToken::new();
        let components_done = CancellationToken::new();
        let mut pipeline_stops = Vec::new();
        // What each entry of `pipeline_stops` stops: a pipeline's id, or a connector's.
        let mut stop_ids: Vec<String> = Vec::new();
        let mut helpers: BTreeMap<(String, Signal), Arc<ExporterHelper>> = BTreeMap::new();
        let mut heads: BTreeMap<String, PipelineHead> = BTreeMap::new();
        let mut logs: Vec<Arc<DiskLog>> = Vec::new();
        // Components are built once per id and shared by the pipelines listing them.
        let mut components: BTreeMap<String, Box<dyn ProcessorComponent>> = BTreeMap::new();
        let mut exporters: BTreeMap<String, (BuiltExporter, HelperSettings)> = BTreeMap::new();
        let mut connectors: BTreeMap<String, Box<dyn ConnectorComponent>> = BTreeMap::new();

        // Pipelines fed by connectors are built before the pipelines feeding them.
        for pipeline_id in downstream_first(config) {
            let pipeline = &config.service.pipelines[pipeline_id];
            let signal = signal_of(pipeline_id)?;
            // Each processor instance stops on its own token, upstream first, so that what a
            // processor holds (a tail sampler's traces) is handed to the next while it still
            // takes data: (position in the pipeline, token, tasks).
            let mut stages: Vec<(usize, CancellationToken, Vec<JoinHandle<()>>)> = Vec::new();
            let mut outputs: Vec<Arc<dyn Consumer>> = Vec::new();
            // Exporters with a persistent queue, by queue directory.
            let mut durable: BTreeMap<PathBuf, Vec<Arc<ExporterHelper>>> = BTreeMap::new();
            for exporter_id in &pipeline.exporters {
                if config.connectors.contains_key(exporter_id)
                    && !config.exporters.contains_key(exporter_id)
                {
                    outputs.push(connector_instance(
                        config,
                        registry,
                        &mut connectors,
                        &heads,
                        exporter_id,
                        signal,
                    )?);
                    continue;
                }
                let exporter = once_per_id(&mut exporters, exporter_id, "exporter", || {
                    let factory = registry
                        .exporter(&type_of(exporter_id)?)
                        .ok_or_else(|| anyhow!("unknown exporter `{exporter_id}`"))?;
                    Ok(sluice_core::build_exporter(
                        factory.as_ref(),
                        exporter_id,
                        &config.exporters[exporter_id],
                        &exporter_context,
                    )?)
                })?;
                let (exporter, settings) = match exporter {
                    (BuiltExporter::Direct(direct), _) => {
                        outputs.push(direct.clone());
                        continue;
                    }
                    (BuiltExporter::Push(exporter), settings) => (exporter, settings),
                };
                let key = (exporter_id.clone(), signal);
                let helper = helpers
                    .entry(key)
                    .or_insert_with(|| {
                        ExporterHelper::new(
                            exporter_id.clone(),
                            signal,
                            Arc::clone(exporter),
                            settings.clone(),
                        )
                    })
                    .clone();
                match helper.settings().queue.directory.clone() {
                    Some(dir) if helper.settings().queue.is_persistent() => {
                        durable.entry(dir).or_default().push(helper);
                    }
                    _ => outputs.push(helper),
                }
            }
            // A persistent queue's log is written right before the first processor that holds
            // data (`batch`), so a client is answered only once its data is on disk. The
            // processors after that place run on what each exporter reads back from the log,
            // its reading in runs standing in for `batch` (validation refuses any other
            // processor that holds data in such a pipeline); the memory-queued exporters get
            // every processor as stages.
            // A processor that keeps its own write-ahead log (tail_sampling with `storage`)
            // counts as not holding: the queue's log goes after it.
            let holds = |id: &String| {
                type_of(id)
                    .ok()
                    .and_then(|t| registry.processor(&t))
                    .is_some_and(|f| {
                        f.holds_data()
                            && !config
                                .processors
                                .get(id)
                                .is_some_and(|c| f.keeps_own_log(c))
                    })
            };
            let first_batch = pipeline
                .processors
                .iter()
                .position(holds)
                .unwrap_or(pipeline.processors.len());
            let mut after_log = Chain::default();
            if !durable.is_empty() {
                for (index, processor_id) in pipeline
                    .processors
                    .iter()
                    .enumerate()
                    .skip(first_batch)
                    .filter(|(_, id)| !holds(id))
                {
                    let component =
                        processor_component(&mut components, registry, config, processor_id)?;
                    let token = CancellationToken::new();
                    let instance = component
                        .instance(PipelineContext {
                            id: processor_id.clone(),
                            pipeline: pipeline_id.clone(),
                            signal,
                            output: Output::new(processor_id, signal, Arc::new(ReaderOnly)),
                            shutdown: token.clone(),
                        })
                        .with_context(|| {
                            format!(
                                "cannot build processor {processor_id} in pipeline {pipeline_id}"
                            )
                        })?;
                    after_log.push(processor_id, signal, instance.processor);
                    stages.push((index, token, instance.tasks));
                }
            }
            let memory_exporters = !outputs.is_empty();
            // A dead exporter whose queue is full must not block the others.
            let mut next = Fanout::build(outputs, FanoutPolicy::Any);
            let mut gates = Vec::new();
            let mut tap_logs = Vec::new();
            for (dir, readers) in &durable {
                let (log, exporters) = open_log(dir, pipeline_id, readers).await?;
                for helper in readers {
                    let reader = log
                        .reader(helper.id())
                        .ok_or_else(|| anyhow!("the disk log lost its consumer {}", helper.id()))?;
                    helper.attach(reader, after_log.clone());
                }
                logs.push(log.clone());
                tap_logs.push(TapLog::new(log, exporters, signal));
            }
            let mut tap_logs = Some(tap_logs).filter(|t| !t.is_empty());
            for (index, processor_id) in pipeline.processors.iter().enumerate().rev() {
                if index < first_batch
                    && let Some(logs) = tap_logs.take()
                {
                    next = DurableTap::new(signal, logs, memory_exporters.then_some(next));
                }
                if index >= first_batch && !memory_exporters && !durable.is_empty() {
                    // Only persistent queues downstream: they run these as they read.
                    continue;
                }
                let component =
                    processor_component(&mut components, registry, config, processor_id)?;
                let output = Output::new(processor_id, signal, next);
                let token = CancellationToken::new();
                let instance = component
                    .instance(PipelineContext {
                        id: processor_id.clone(),
                        pipeline: pipeline_id.clone(),
                        signal,
                        output: output.clone(),
                        shutdown: token.clone(),
                    })
                    .with_context(|| {
                        format!("cannot build processor {processor_id} in pipeline {pipeline_id}")
                    })?;
                next = ProcessorStage::new(processor_id, signal, instance.processor, output);
                gates.extend(component.gate());
                stages.push((index, token, instance.tasks));
            }
            if let Some(logs) = tap_logs.take() {
                next = DurableTap::new(signal, logs, memory_exporters.then_some(next));
            }
            heads.insert(
                pipeline_id.clone(),
                PipelineHead {
                    signal,
                    consumer: next,
                    gates,
                },
            );
            // Pushed downstream first, as the pipelines are; the list is reversed below.
            stages.sort_by_key(|(index, _, _)| std::cmp::Reverse(*index));
            if stages.is_empty() {
                stages.push((0, CancellationToken::new(), Vec::new()));
            }
            for (_, token, tasks) in stages {
                pipeline_stops.push((token, tasks));
                stop_ids.push(pipeline_id.clone());
            }
        }
        // Built downstream first; stopped upstream first.
        pipeline_stops.reverse();
        stop_ids.reverse();

        let mut component_tasks = Vec::new();
        for component in components.values() {
            component_tasks.extend(component.start(components_done.clone()));
        }
        // A connector's own work (the span metrics' last flush) stops right after the last
        // pipeline that feeds it has flushed, and before the pipelines it feeds stop: everything
        // it took is counted, and what it writes out is still taken.
        for (connector_id, component) in &connectors {
            let stop = CancellationToken::new();
            let tasks = component.start(stop.clone());
            let at = stop_ids
                .iter()
                .rposition(|id| {
                    config
                        .service
                        .pipelines
                        .get(id)
                        .is_some_and(|p| p.exporters.contains(connector_id))
                })
                .map_or(0, |i| i + 1);
            pipeline_stops.insert(at, (stop, tasks));
            stop_ids.insert(at, connector_id.clone());
        }
        let helpers: Vec<Arc<ExporterHelper>> = helpers.into_values().collect();
        let exporter_tasks = helpers.iter().flat_map(|h| h.start()).collect();
        // The exporters' own work (maintenance, servers) stops after their queues have drained.
        let exporters_done = CancellationToken::new();
        let mut exporter_own_tasks = Vec::new();
        for (exporter, _) in exporters.values() {
            exporter_own_tasks.extend(match exporter {
                BuiltExporter::Push(exporter) => exporter.start_any(exporters_done.clone()),
                BuiltExporter::Direct(direct) => direct.start(exporters_done.clone()),
            });
        }

        let mut receiver_tasks = Vec::new();
        for (receiver_id, raw) in &config.receivers {
            let mut per_signal: BTreeMap<Signal, Inputs> = BTreeMap::new();
            for (pipeline_id, pipeline) in &config.service.pipelines {
                if pipeline.receivers.contains(receiver_id) {
                    let head = &heads[pipeline_id];
                    let entry = per_signal.entry(head.signal).or_default();
                    entry.0.push(head.consumer.clone());
                    for gate in &head.gates {
                        if !entry.1.iter().any(|g| Arc::ptr_eq(g, gate)) {
                            entry.1.push(gate.clone());
                        }
                    }
                }
            }
            if per_signal.is_empty() {
                continue;
            }
            let mut outputs = ReceiverOutputs {
                authenticators: authenticators.clone(),
                ..Default::default()
            };
            for (signal, (consumers, gates)) in per_signal {
                // Every pipeline must take the data, or the client retries (at-least-once).
                outputs
                    .consumers
                    .insert(signal, Fanout::build(consumers, FanoutPolicy::All));
                outputs.gates.insert(signal, gates);
            }
            let factory = registry
                .receiver(&type_of(receiver_id)?)
                .ok_or_else(|| anyhow!("unknown receiver `{receiver_id}`"))?;
            let receiver = factory
                .build(receiver_id, raw)
                .with_context(|| format!("cannot build receiver {receiver_id}"))?;
            let tasks = receiver
                .start(outputs, receivers.clone())
                .await
                .with_context(|| format!("cannot start receiver {receiver_id}"))?;
            receiver_tasks.extend(tasks);
        }

        status.watch(helpers.clone());
        status.set_ready(true);
        tracing::info!(
            pipelines = config.service.pipelines.len(),
            "sluice is ready"
        );
        Ok(Service {
            receivers,
            pipelines: pipeline_stops,
            components: components_done,
            component_tasks,
            last,
            receiver_tasks,
            helpers,
            exporter_tasks,
            exporters_done,
            exporter_own_tasks,
            side_tasks,
            status,
            logs,
        })
    }

    /// Stops accepting, flushes batches, drains queues until `deadline`, then drops (and counts)
    /// what is left.
    pub(crate) async fn shutdown(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        self.status.set_ready(false);
        tracing::info!(deadline = ?deadline, "shutting down: receivers stop accepting");
        self.receivers.cancel();
        // Batchers flush now rather than after the receivers end: a request in flight waits for
        // the batch its data went out in, so receivers cannot finish before batchers do.
        tracing::info!("flushing batches");
        for (processors, tasks) in self.pipelines {
            processors.cancel();
            join_all_until(tasks, until).await;
        }
        self.components.cancel();
        join_all_until(self.component_tasks, until).await;
        join_all_until(self.receiver_tasks, until).await;
        tracing::info!("draining exporter queues");
        for helper in &self.helpers {
            helper.close();
        }
        if !join_all_until(self.exporter_tasks, until).await {
            let dropped: usize = self.helpers.iter().map(|h| h.abort()).sum();
            if dropped > 0 {
                tracing::error!(
                    dropped_items = dropped,
                    "shutdown deadline passed before queues drained"
                );
            }
        }
        self.exporters_done.cancel();
        join_all_until(self.exporter_own_tasks, until).await;
        for log in &self.logs {
            log.close().await;
        }
        self.last.cancel();
        join_all_until(
            self.side_tasks,
            tokio::time::Instant::now() + Duration::from_secs(2),
        )
        .await;
        tracing::info!("sluice stopped");
    }
}

/// Opens (and recovers, on the blocking pool) the disk log of one pipeline in one queue directory, read by `readers`.
/// Exporters sharing it get the strictest of their settings: the smallest `max_bytes`, the most
/// frequent sync, and `refuse` over `drop_oldest`.
async fn open_log(
    dir: &Path,
    pipeline_id: &str,
    readers: &[Arc<ExporterHelper>],
) -> anyhow::Result<(Arc<DiskLog>, Vec<String>)> {
    let queues: Vec<_> = readers.iter().map(|h| &h.settings().queue).collect();
    let max_bytes = queues
        .iter()
        .map(|q| q.max_bytes.bytes())
        .min()
        .unwrap_or(1 << 30);
    let fsync = if queues.iter().any(|q| q.fsync == FsyncPolicy::Always) {
        Fsync::Always
    } else if let Some(interval) = queues
        .iter()
        .filter(|q| q.fsync == FsyncPolicy::Interval)
        .map(|q| q.fsync_interval.get())
        .min()
    {
        Fsync::Interval(interval)
    } else {
        Fsync::Never
    };
    let on_full = if queues.iter().any(|q| q.on_full == OnFullPolicy::Refuse) {
        OnFull::Refuse
    } else {
        OnFull::DropOldest
    };
    // Segments of an eighth of the bound: space comes back in eighths as data is acknowledged.
    let segment_bytes = (max_bytes / 8).clamp(64 << 10, 64 << 20);
    let path = dir.join(pipeline_id.replace('/', "_"));
    let exporters: Vec<String> = readers.iter().map(|h| h.id().to_owned()).collect();
    let config = LogConfig {
        dir: path.clone(),
        max_bytes,
        segment_bytes,
        fsync,
        on_full,
    };
    let names = exporters.clone();
    // Recovery reads every segment: up to `max_bytes` of file I/O, off the async workers.
    let (log, recovery) = tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        DiskLog::open(config, &names)
    })
    .await
    .context("the persistent queue's recovery task failed")?
    .with_context(|| format!("cannot open the persistent queue in {}", path.display()))?;
    if recovery.torn_bytes > 0
        || recovery.quarantined_bytes > 0
        || !recovery.reset_cursors.is_empty()
    {
        tracing::warn!(
            pipeline = %pipeline_id,
            dir = %path.display(),
            records = recovery.records,
            items = recovery.items,
            torn_bytes = recovery.torn_bytes,
            quarantined_bytes = recovery.quarantined_bytes,
            quarantined = ?recovery.quarantined,
            reset_cursors = ?recovery.reset_cursors,
            "persistent queue recovered from damage: torn tail cut off, damaged data quarantined"
        );
    } else if recovery.records > 0 {
        tracing::info!(pipeline = %pipeline_id, dir = %path.display(), records = recovery.records, items = recovery.items, "persistent queue reopened with data to send");
    }
    Ok((log, exporters))
}

/// Awaits tasks until `until`; returns whether all finished in time (the rest are aborted).
async fn join_all_until(tasks: Vec<JoinHandle<()>>, until: tokio::time::Instant) -> bool {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = futures_join(tasks);
    match tokio::time::timeout_at(until, all).await {
        Ok(()) => true,
        Err(_) => {
            for a in aborts {
                a.abort();
            }
            false
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Processor `id`'s component, built on first use.
fn processor_component<'a>(
    components: &'a mut BTreeMap<String, Box<dyn ProcessorComponent>>,
    registry: &Registry,
    config: &RawConfig,
    id: &str,
) -> anyhow::Result<&'a mut Box<dyn ProcessorComponent>> {
    once_per_id(components, id, "processor", || {
        let factory = registry
            .processor(&type_of(id)?)
            .ok_or_else(|| anyhow!("unknown processor `{id}`"))?;
        Ok(factory.build(id, &config.processors[id])?)
    })
}

/// Component `id` of `built`, built by `build` on first use: every component is built once per
/// id and shared by the pipelines listing it.
fn once_per_id<'a, T>(
    built: &'a mut BTreeMap<String, T>,
    id: &str,
    class: &str,
    build: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<&'a mut T> {
    Ok(match built.entry(id.to_owned()) {
        Entry::Occupied(done) => done.into_mut(),
        Entry::Vacant(slot) => {
            slot.insert(build().with_context(|| format!("cannot build {class} {id}"))?)
        }
    })
}

/// The output of a processor that runs after a persistent queue's log: the reader hands on what
/// it returns, so it has nothing to hand on by itself.
struct ReaderOnly;

#[async_trait::async_trait]
impl Consumer for ReaderOnly {
    async fn consume(&self, _: sluice_core::Batch) -> Result<(), sluice_core::ConsumeError> {
        Err(sluice_core::ConsumeError::internal(
            "a processor behind a persistent queue cannot hand on data by itself",
        ))
    }
}

/// Builds and starts the extensions `service.extensions` lists, in order; they stop last.
/// The running extensions' tasks, those of them that authenticate servers' clients, by id,
/// and those that authenticate exporters, for building them.
type Extensions = (
    Vec<JoinHandle<()>>,
    BTreeMap<String, Arc<dyn sluice_core::auth::ServerAuthenticator>>,
    sluice_core::ExporterContext,
);

async fn start_extensions(
    config: &RawConfig,
    registry: &Registry,
    status: &Arc<ServiceStatus>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Extensions> {
    let mut exporters = sluice_core::ExporterContext::default();
    let mut tasks = Vec::new();
    let mut authenticators = BTreeMap::new();
    for id in &config.service.extensions {
        let host = Host {
            status: Arc::clone(status),
            stores: Arc::clone(&exporters.stores),
            authenticators: authenticators.clone(),
        };
        let factory = registry
            .extension(&type_of(id)?)
            .ok_or_else(|| anyhow!("unknown extension `{id}`"))?;
        let extension = factory
            .build(id, &config.extensions[id])
            .with_context(|| format!("cannot build extension {id}"))?;
        tasks.extend(
            extension
                .start(&host, shutdown.clone())
                .await
                .with_context(|| format!("cannot start extension {id}"))?,
        );
        if let Some(authenticator) = extension.server_authenticator() {
            authenticators.insert(id.clone(), authenticator);
        }
        if let Some(authenticator) = extension.client_authenticator() {
            exporters.authenticators.insert(id.clone(), authenticator);
        }
    }
    Ok((tasks, authenticators, exporters))
}

/// Pipeline ids in an order where every pipeline comes after the pipelines it feeds through
/// connectors (validation has refused cycles).
fn downstream_first(config: &RawConfig) -> Vec<&String> {
    fn visit<'a>(config: &'a RawConfig, id: &'a String, out: &mut Vec<&'a String>) {
        if out.contains(&id) {
            return;
        }
        for (_, next) in sluice_config::connector_edges(config, id) {
            if let Some((next, _)) = config.service.pipelines.get_key_value(next) {
                visit(config, next, out);
            }
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    let mut out = Vec::new();
    for id in config.service.pipelines.keys() {
        visit(config, id, &mut out);
    }
    out
}

/// The exporter side of connector `id` in a pipeline of `signal`: the component is built once,
/// and each pipeline receiving from it is entered through an [`Admission`].
fn connector_instance(
    config: &RawConfig,
    registry: &Registry,
    connectors: &mut BTreeMap<String, Box<dyn ConnectorComponent>>,
    heads: &BTreeMap<String, PipelineHead>,
    id: &str,
    signal: Signal,
) -> anyhow::Result<Arc<dyn Consumer>> {
    let component = once_per_id(connectors, id, "connector", || {
        let factory = registry
            .connector(&type_of(id)?)
            .ok_or_else(|| anyhow!("unknown connector `{id}`"))?;
        Ok(factory.build(id, &config.connectors[id])?)
    })?;
    let mut routes = BTreeMap::new();
    for (pipeline_id, pipeline) in &config.service.pipelines {
        if !pipeline.receivers.iter().any(|r| r == id) {
            continue;
        }
        let head = heads.get(pipeline_id).ok_or_else(|| {
            anyhow!("pipeline {pipeline_id} is not built before connector {id} feeds it")
        })?;
        routes.insert(
            pipeline_id.clone(),
            Route {
                pipeline: pipeline_id.clone(),
                signal: head.signal,
                consumer: Admission::new(
                    id,
                    head.signal,
                    head.gates.clone(),
                    head.consumer.clone(),
                ),
            },
        );
    }
    component
        .instance(ConnectorContext {
            id: id.to_owned(),
            from: signal,
            routes,
        })
        .with_context(|| format!("cannot build connector {id}"))
}
