//! Building the pipelines a configuration describes, running them, and shutting down in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use sluice_config::{ComponentId, RawConfig};
use sluice_core::{
    Consumer, ExporterHelper, Fanout, FanoutPolicy, MemoryGate, ProcessorContext, ReceiverOutputs,
    Signal,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::{self, Health, HealthCheckConfig};
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
    processors: CancellationToken,
    last: CancellationToken,
    receiver_tasks: Vec<JoinHandle<()>>,
    processor_tasks: Vec<JoinHandle<()>>,
    helpers: Vec<Arc<ExporterHelper>>,
    exporter_tasks: Vec<JoinHandle<()>>,
    side_tasks: Vec<JoinHandle<()>>,
    health: Arc<Health>,
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
        health: Arc<Health>,
        side_tasks: Vec<JoinHandle<()>>,
        last: CancellationToken,
    ) -> anyhow::Result<Service> {
        let receivers = CancellationToken::new();
        let processors = CancellationToken::new();
        let mut processor_tasks = Vec::new();
        let mut helpers: BTreeMap<(String, Signal), Arc<ExporterHelper>> = BTreeMap::new();
        let mut heads: BTreeMap<String, PipelineHead> = BTreeMap::new();

        for (pipeline_id, pipeline) in &config.service.pipelines {
            let signal = signal_of(pipeline_id)?;
            let mut outputs: Vec<Arc<dyn Consumer>> = Vec::new();
            for exporter_id in &pipeline.exporters {
                let key = (exporter_id.clone(), signal);
                if let Some(helper) = helpers.get(&key) {
                    outputs.push(helper.clone());
                    continue;
                }
                let factory = registry
                    .exporter(&type_of(exporter_id)?)
                    .ok_or_else(|| anyhow!("unknown exporter `{exporter_id}`"))?;
                let raw = &config.exporters[exporter_id];
                let built = factory
                    .build(exporter_id, signal, raw)
                    .with_context(|| format!("cannot build exporter {exporter_id}"))?;
                let helper = ExporterHelper::new(
                    exporter_id.clone(),
                    signal,
                    built.exporter,
                    built.settings,
                );
                helpers.insert(key, helper.clone());
                outputs.push(helper);
            }
            // A dead exporter whose queue is full must not block the others.
            let mut next = Fanout::build(outputs, FanoutPolicy::Any);
            let mut gates = Vec::new();
            for processor_id in pipeline.processors.iter().rev() {
                let factory = registry
                    .processor(&type_of(processor_id)?)
                    .ok_or_else(|| anyhow!("unknown processor `{processor_id}`"))?;
                let built = factory
                    .build(
                        &config.processors[processor_id],
                        ProcessorContext {
                            id: processor_id.clone(),
                            signal,
                            next,
                            shutdown: processors.clone(),
                        },
                    )
                    .with_context(|| {
                        format!("cannot build processor {processor_id} in pipeline {pipeline_id}")
                    })?;
                next = built.consumer;
                gates.extend(built.gate);
                processor_tasks.extend(built.tasks);
            }
            heads.insert(
                pipeline_id.clone(),
                PipelineHead {
                    signal,
                    consumer: next,
                    gates,
                },
            );
        }

        let helpers: Vec<Arc<ExporterHelper>> = helpers.into_values().collect();
        let exporter_tasks = helpers.iter().flat_map(|h| h.start()).collect();

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
            let mut outputs = ReceiverOutputs::default();
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

        health.watch(helpers.clone());
        health.set_ready(true);
        tracing::info!(
            pipelines = config.service.pipelines.len(),
            "sluice is ready"
        );
        Ok(Service {
            receivers,
            processors,
            last,
            receiver_tasks,
            processor_tasks,
            helpers,
            exporter_tasks,
            side_tasks,
            health,
        })
    }

    /// Stops accepting, flushes batches, drains queues until `deadline`, then drops (and counts)
    /// what is left.
    pub(crate) async fn shutdown(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        self.health.set_ready(false);
        tracing::info!(deadline = ?deadline, "shutting down: receivers stop accepting");
        self.receivers.cancel();
        // Batchers flush now rather than after the receivers end: a request in flight waits for
        // the batch its data went out in, so receivers cannot finish before batchers do.
        tracing::info!("flushing batches");
        self.processors.cancel();
        join_all_until(self.processor_tasks, until).await;
        join_all_until(self.receiver_tasks, until).await;
        tracing::info!("draining exporter queues");
        for helper in &self.helpers {
            helper.close();
        }
        if !join_all_until(self.exporter_tasks, until).await {
            let dropped: usize = self.helpers.iter().map(|h| h.abort()).sum();
            tracing::error!(
                dropped_items = dropped,
                "shutdown deadline passed before queues drained"
            );
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

/// Starts the health check extension if the configuration enables it.
pub(crate) async fn start_extensions(
    config: &RawConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for id in &config.service.extensions {
        if type_of(id)? == "health_check" {
            let c: HealthCheckConfig = sluice_config::component_config(
                &format!("extensions.{id}"),
                &config.extensions[id],
            )
            .map_err(|p| anyhow!("{p}"))?;
            tasks.push(health::serve(&c, health.clone(), shutdown.clone()).await?);
        }
    }
    Ok(tasks)
}
