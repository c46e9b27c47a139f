//! Self-metric names, following the OpenTelemetry Collector's internal telemetry so that existing
//! dashboards work unchanged. Labels: `receiver`, `transport`, `processor`, `exporter`,
//! `data_type` — never ids of data, URLs or error strings.

use crate::Signal;

macro_rules! per_signal {
    ($(#[$doc:meta])* $fn:ident, $prefix:literal) => {
        $(#[$doc])*
        pub fn $fn(signal: Signal) -> &'static str {
            match signal {
                Signal::Traces => concat!($prefix, "spans"),
                Signal::Metrics => concat!($prefix, "metric_points"),
                Signal::Logs => concat!($prefix, "log_records"),
            }
        }
    };
}

per_signal!(
    /// Items a receiver pushed into the pipeline successfully (`receiver`, `transport`).
    receiver_accepted, "otelcol_receiver_accepted_"
);
per_signal!(
    /// Items a receiver could not push into the pipeline (`receiver`, `transport`).
    receiver_refused, "otelcol_receiver_refused_"
);
per_signal!(
    /// Items a receiver rejected as malformed (`receiver`, `transport`).
    receiver_failed, "otelcol_receiver_failed_"
);
per_signal!(
    /// Items a processor refused (`processor`): the memory limiter under pressure.
    processor_refused, "otelcol_processor_refused_"
);
per_signal!(
    /// Items the memory limiter refused (`processor`), the Collector's newer name.
    memory_limiter_refused, "otelcol_processor_memory_limiter_refused_"
);
per_signal!(
    /// Items a processor dropped after admitting them (`processor`): a permanent refusal downstream.
    processor_dropped, "otelcol_processor_dropped_"
);
per_signal!(
    /// Items an exporter delivered (`exporter`).
    exporter_sent, "otelcol_exporter_sent_"
);
per_signal!(
    /// Items an exporter gave up on (`exporter`).
    exporter_send_failed, "otelcol_exporter_send_failed_"
);
per_signal!(
    /// Items refused because an exporter's sending queue was full (`exporter`).
    exporter_enqueue_failed, "otelcol_exporter_enqueue_failed_"
);

/// Requests a receiver handled, by `outcome` (`success`, `refused`, `failure`).
pub const RECEIVER_REQUESTS: &str = "otelcol_receiver_requests";
/// Items per batch the batch processor sent (histogram; `processor`).
pub const BATCH_SEND_SIZE: &str = "otelcol_processor_batch_batch_send_size";
/// Bytes per batch the batch processor sent (histogram; `processor`).
pub const BATCH_SEND_SIZE_BYTES: &str = "otelcol_processor_batch_batch_send_size_bytes";
/// Batches sent because `send_batch_size` was reached (`processor`).
pub const BATCH_SIZE_TRIGGER_SEND: &str = "otelcol_processor_batch_batch_size_trigger_send";
/// Batches sent because `timeout` expired (`processor`).
pub const BATCH_TIMEOUT_TRIGGER_SEND: &str = "otelcol_processor_batch_timeout_trigger_send";
/// Items entering a processor (`processor`, `otel_signal`).
pub const PROCESSOR_INCOMING_ITEMS: &str = "otelcol_processor_incoming_items";
/// Items leaving a processor (`processor`, `otel_signal`).
pub const PROCESSOR_OUTGOING_ITEMS: &str = "otelcol_processor_outgoing_items";
/// Points the `prometheusremotewrite` exporter could not translate (delta or unspecified
/// temporality, invalid points), by exporter.
pub const PROMETHEUSREMOTEWRITE_DROPPED_METRIC_POINTS: &str =
    "otelcol_exporter_prometheusremotewrite_dropped_metric_points";
/// Points the `prometheus` exporter cannot serve (non-monotonic deltas, exponential histograms
/// in the text format, invalid points), by exporter.
pub const PROMETHEUS_DROPPED_METRIC_POINTS: &str =
    "otelcol_exporter_prometheus_dropped_metric_points";
/// Log records the `loki` exporter could not send because they had no label at all (every
/// default label turned off and no hint), by exporter; the Collector's Loki exporter's name.
pub const LOKI_MISSING_LABELS: &str = "otelcol_lokiexporter_send_failed_due_to_missing_labels";
/// Batches waiting in an exporter's sending queue (`exporter`, `data_type`), in the queue's sizer unit.
pub const EXPORTER_QUEUE_SIZE: &str = "otelcol_exporter_queue_size";
/// Capacity of an exporter's sending queue (`exporter`, `data_type`), in the queue's sizer unit.
pub const EXPORTER_QUEUE_CAPACITY: &str = "otelcol_exporter_queue_capacity";
/// Spans the `filter` processor dropped (`filter`: the processor's id). The Collector names it
/// `otelcol_processor_filter_spans.filtered`; Prometheus names cannot hold the dot.
pub const FILTER_SPANS_FILTERED: &str = "otelcol_processor_filter_spans_filtered";
/// Data points the `filter` processor dropped (`filter`).
pub const FILTER_DATAPOINTS_FILTERED: &str = "otelcol_processor_filter_datapoints_filtered";
/// Log records the `filter` processor dropped (`filter`).
pub const FILTER_LOGS_FILTERED: &str = "otelcol_processor_filter_logs_filtered";
/// Spans the `probabilistic_sampler` decided (`processor`, `policy`: where the randomness came
/// from, `sampled`).
pub const PROBABILISTIC_SAMPLER_COUNT_TRACES_SAMPLED: &str =
    "otelcol_processor_probabilistic_sampler_count_traces_sampled";
/// Log records the `probabilistic_sampler` decided (`processor`, `policy`, `sampled`).
pub const PROBABILISTIC_SAMPLER_COUNT_LOGS_SAMPLED: &str =
    "otelcol_processor_probabilistic_sampler_count_logs_sampled";
/// Traces each `tail_sampling` policy sampled or not (`processor`, `policy`, `sampled`).
pub const TAIL_SAMPLING_COUNT_TRACES_SAMPLED: &str =
    "otelcol_processor_tail_sampling_count_traces_sampled";
/// Traces `tail_sampling` sampled or not, all policies together (`processor`, `sampled`).
pub const TAIL_SAMPLING_GLOBAL_COUNT_TRACES_SAMPLED: &str =
    "otelcol_processor_tail_sampling_global_count_traces_sampled";
/// Spans of the traces `tail_sampling` decided (`processor`, `sampled`).
pub const TAIL_SAMPLING_COUNT_SPANS_SAMPLED: &str =
    "otelcol_processor_tail_sampling_count_spans_sampled";
/// Microseconds the policies took to decide one trace (`processor`).
pub const TAIL_SAMPLING_DECISION_LATENCY: &str =
    "otelcol_processor_tail_sampling_sampling_decision_latency";
/// Traces held for a decision (`processor`).
pub const TAIL_SAMPLING_TRACES_ON_MEMORY: &str =
    "otelcol_processor_tail_sampling_sampling_traces_on_memory";
/// Traces dropped before their decision: the Collector's count, always 0 in sluice, which decides
/// such traces early instead (`processor`).
pub const TAIL_SAMPLING_TRACE_DROPPED_TOO_EARLY: &str =
    "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early";
/// Traces decided before their wait was over, because `num_traces` were held or memory was
/// short (`processor`); sluice's own.
pub const TAIL_SAMPLING_EARLY_DECISION: &str = "otelcol_processor_tail_sampling_early_decision";
/// Spans that arrived after their trace was decided, by that decision (`processor`,
/// `decision`: `sampled` or `not_sampled`); sluice's own.
pub const TAIL_SAMPLING_LATE_SPANS: &str = "otelcol_processor_tail_sampling_late_spans";
/// Traces dropped undecided for passing `maximum_trace_size_bytes` (`processor`).
pub const TAIL_SAMPLING_TRACES_DROPPED_TOO_LARGE: &str =
    "otelcol_processor_tail_sampling_traces_dropped_too_large";
/// Traces seen for the first time (`processor`).
pub const TAIL_SAMPLING_NEW_TRACE_ID_RECEIVED: &str =
    "otelcol_processor_tail_sampling_new_trace_id_received";
/// Backends on a `loadbalancing` exporter's ring (`exporter`, `resolver`).
pub const LOADBALANCER_NUM_BACKENDS: &str = "otelcol_loadbalancer_num_backends";
/// Resolutions by a `loadbalancing` exporter's resolver (`exporter`, `resolver`, `success`).
pub const LOADBALANCER_NUM_RESOLUTIONS: &str = "otelcol_loadbalancer_num_resolutions";
/// Resolutions that changed the ring (`exporter`, `resolver`).
pub const LOADBALANCER_NUM_BACKEND_UPDATES: &str = "otelcol_loadbalancer_num_backend_updates";
/// Sends to each backend by outcome (`exporter`, `endpoint`, `success`).
pub const LOADBALANCER_BACKEND_OUTCOME: &str = "otelcol_loadbalancer_backend_outcome";
/// Milliseconds each send to a backend took (`exporter`, `endpoint`).
pub const LOADBALANCER_BACKEND_LATENCY: &str = "otelcol_loadbalancer_backend_latency";
/// Items a failing backend could not take that were routed to the next owner on the ring
/// (`exporter`); sluice's own.
pub const LOADBALANCER_REROUTED_ITEMS: &str = "otelcol_loadbalancer_rerouted_items";
/// Records a `kafka` exporter wrote, by the broker's answer (`exporter`, `topic`, `outcome`).
pub const KAFKA_EXPORTER_RECORDS: &str = "otelcol_kafka_exporter_records";
/// Bytes of those records before compression (`exporter`, `topic`, `outcome`).
pub const KAFKA_EXPORTER_BYTES_UNCOMPRESSED: &str = "otelcol_kafka_exporter_bytes_uncompressed";
/// Seconds one export attempt took to be acknowledged (`exporter`, `outcome`).
pub const KAFKA_EXPORTER_WRITE_LATENCY: &str = "otelcol_kafka_exporter_write_latency";
/// Items larger than `producer.max_message_bytes` alone, which Kafka cannot take (`exporter`);
/// sluice's own.
pub const KAFKA_EXPORTER_OVERSIZED_ITEMS: &str = "sluice_kafka_exporter_oversized_items";
/// Records a `kafka` receiver read, by what became of them (`receiver`, `topic`, `outcome`:
/// `success` when the pipeline took it, `failure` when it could never be taken).
pub const KAFKA_RECEIVER_RECORDS: &str = "otelcol_kafka_receiver_records";
/// The offset of the last record the pipeline took (`receiver`, `topic`, `partition`).
pub const KAFKA_RECEIVER_CURRENT_OFFSET: &str = "otelcol_kafka_receiver_current_offset";
/// Records on the broker not yet taken, per partition (`receiver`, `topic`, `partition`).
pub const KAFKA_RECEIVER_OFFSET_LAG: &str = "otelcol_kafka_receiver_offset_lag";
/// Partitions assigned to a receiver (`receiver`).
pub const KAFKA_RECEIVER_PARTITION_START: &str = "otelcol_kafka_receiver_partition_start";
/// Partitions revoked from a receiver (`receiver`).
pub const KAFKA_RECEIVER_PARTITION_CLOSE: &str = "otelcol_kafka_receiver_partition_close";
/// Records that would not decode, by signal (`receiver`, `topic`, `partition`).
pub fn kafka_receiver_unmarshal_failed(signal: crate::Signal) -> &'static str {
    match signal {
        crate::Signal::Traces => "otelcol_kafka_receiver_unmarshal_failed_spans",
        crate::Signal::Metrics => "otelcol_kafka_receiver_unmarshal_failed_metric_points",
        crate::Signal::Logs => "otelcol_kafka_receiver_unmarshal_failed_log_records",
    }
}
/// Traces the `memory` exporter evicted, the oldest first, to stay within its bounds
/// (`exporter`); sluice's own.
pub const MEMORY_STORE_EVICTED_TRACES: &str = "sluice_memory_store_evicted_traces";
/// Requests to `jaeger_query` its authenticator refused (`extension`, `listener`: `http` or
/// `remote_storage`); sluice's own.
pub const QUERY_REFUSED_REQUESTS: &str = "sluice_jaeger_query_refused_requests";
/// Bytes of spans the `memory` exporter holds (`exporter`); sluice's own.
pub const MEMORY_STORE_BYTES: &str = "sluice_memory_store_bytes";
/// Attributes the `redaction` processor removed, keys not allowed (`processor`, `otel_signal`);
/// sluice's own: the Collector's redaction processor has no metrics.
pub const REDACTION_REDACTED_KEYS: &str = "sluice_processor_redaction_redacted_keys";
/// Values the `redaction` processor masked or hashed, whole or in part (`processor`,
/// `otel_signal`); sluice's own.
pub const REDACTION_MASKED_VALUES: &str = "sluice_processor_redaction_masked_values";
/// Items a routing connector dropped because they met no route and it has no
/// `default_pipelines` (`connector`, `otel_signal`); sluice's own.
pub const ROUTING_UNMATCHED_ITEMS: &str = "sluice_routing_unmatched_items";
/// Export requests under way (`exporter`).
pub const EXPORTER_IN_FLIGHT: &str = "otelcol_exporter_in_flight_requests";
/// Bytes the memory limiters hold for data in flight (`processor`); sluice's own.
pub const MEMORY_LIMITER_IN_FLIGHT_BYTES: &str = "sluice_memory_limiter_in_flight_bytes";
/// The memory limiters' measured memory (`processor`); sluice's own.
pub const MEMORY_LIMITER_MEMORY_BYTES: &str = "sluice_memory_limiter_memory_bytes";
/// The memory limiters' limits in bytes (`processor`, `limit`: `soft` refuses new data once the
/// measured memory reaches it, `hard` once RSS does, `in_flight` is the byte budget of data held
/// in flight, the `memory` exporter's store included); sluice's own.
pub const MEMORY_LIMITER_LIMIT_BYTES: &str = "sluice_memory_limiter_limit_bytes";
/// Resident set size of the process.
pub const PROCESS_MEMORY_RSS: &str = "otelcol_process_memory_rss";
/// CPU seconds the process used.
pub const PROCESS_CPU_SECONDS: &str = "otelcol_process_cpu_seconds";
/// Seconds since the process started.
pub const PROCESS_UPTIME: &str = "otelcol_process_uptime";
/// Bytes the allocator holds for live objects.
pub const PROCESS_HEAP_ALLOC_BYTES: &str = "otelcol_process_runtime_heap_alloc_bytes";
