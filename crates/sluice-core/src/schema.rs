//! A static, table-driven description of every OTLP message reachable from the
//! three `Export*ServiceRequest` messages: the one copy of the OTLP schema that sluice
//! uses, by the OTLP/JSON transcoder (names, JSON forms, encoding order) and by the
//! intake's check that every item would decode (wire types, UTF-8, packing).
//!
//! The tables are transcribed from the prost code generated for
//! opentelemetry-proto 0.33.1 (`#[prost(<type>, tag = "N")]` attributes), which
//! is the protobuf schema the rest of the pipeline decodes with.
//!
//! **Order matters.** Within a [`MessageDesc`] the fields are listed in the
//! order prost encodes them: ascending field number, except that all members
//! of a `oneof` sit together at the position of the oneof's *smallest* tag
//! (prost sorts struct fields by their minimum tag and encodes a oneof as one
//! field). Emitting fields in table order therefore reproduces prost's
//! canonical bytes exactly, which the tests check byte for byte.

use crate::Signal;

/// How a field's value is represented in OTLP/JSON and on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `string`: a JSON string, written as UTF-8.
    String,
    /// `bytes` other than ids: standard (or URL-safe) base64 in JSON.
    Bytes,
    /// `bytes` holding a trace or span id: hex in OTLP/JSON (not base64, the
    /// spec's one deviation from proto3 JSON). The value is the id's length in
    /// bytes (16 for trace ids, 8 for span ids).
    HexId(usize),
    /// `bool`.
    Bool,
    /// `int32`: varint of the sign-extended value.
    Int32,
    /// `int64`: varint of the two's-complement value.
    Int64,
    /// `uint32`: varint.
    Uint32,
    /// `uint64`: varint.
    Uint64,
    /// `sint32`: zigzag varint.
    Sint32,
    /// `fixed32`: 4 little-endian bytes.
    Fixed32,
    /// `fixed64`: 8 little-endian bytes.
    Fixed64,
    /// `sfixed64`: 8 little-endian bytes, signed.
    Sfixed64,
    /// `double`: 8 little-endian bytes.
    Double,
    /// `enum`: an int32 varint; JSON may carry the number or the value name.
    Enum(&'static EnumDesc),
    /// A nested message, length-delimited.
    Message(&'static MessageDesc),
}

impl Kind {
    /// Whether a repeated field of this kind is packed. Proto3 packs every
    /// repeated scalar numeric field by default; strings, bytes and messages
    /// cannot be packed.
    pub fn is_packable(self) -> bool {
        !matches!(
            self,
            Kind::String | Kind::Bytes | Kind::HexId(_) | Kind::Message(_)
        )
    }
}

/// The cardinality and presence discipline of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// A proto3 singular field. Scalars have implicit presence: their default
    /// value (0, "", false, empty) is not written, like prost. Message fields
    /// always have explicit presence and are written whenever present.
    Singular,
    /// A proto3 `optional` scalar: written whenever present, even when zero.
    Optional,
    /// A member of the named `oneof`: written whenever present, even when
    /// default, because which member is set is itself information.
    Oneof(&'static str),
    /// A repeated field (packed if [`Kind::is_packable`]).
    Repeated,
}

/// One field of a message.
#[derive(Debug)]
pub struct FieldDesc {
    /// The lowerCamelCase name used in OTLP/JSON.
    pub json_name: &'static str,
    /// The original snake_case proto field name, accepted leniently.
    pub proto_name: &'static str,
    /// The protobuf field number.
    pub number: u32,
    /// The value's type.
    pub kind: Kind,
    /// Singular, optional, oneof member or repeated.
    pub label: Label,
}

/// A message: its name (for error messages) and its fields in encoding order.
#[derive(Debug)]
pub struct MessageDesc {
    /// The proto message name.
    pub name: &'static str,
    /// The fields, in the order prost encodes them.
    pub fields: &'static [FieldDesc],
    /// Position in `fields` of each field number, [`NONE`] where there is none: the wire check
    /// looks a field up by number for every field of every item.
    by_number: [u8; MAX_NUMBER + 1],
}

/// The largest field number in an OTLP message (`Span.flags`).
const MAX_NUMBER: usize = 16;
/// No field has this number.
const NONE: u8 = u8::MAX;

impl MessageDesc {
    /// A message with its index by field number, built at compile time.
    ///
    /// # Panics
    /// At compile time, when a field number is over [`MAX_NUMBER`].
    pub(crate) const fn new(name: &'static str, fields: &'static [FieldDesc]) -> Self {
        let mut by_number = [NONE; MAX_NUMBER + 1];
        let mut i = 0;
        while i < fields.len() {
            let number = fields[i].number as usize;
            assert!(number <= MAX_NUMBER, "an OTLP field number over MAX_NUMBER");
            by_number[number] = i as u8;
            i += 1;
        }
        MessageDesc {
            name,
            fields,
            by_number,
        }
    }

    /// The place in [`MessageDesc::fields`] of the field with protobuf number `number`.
    #[inline]
    pub fn index(&self, number: u32) -> Option<usize> {
        let at = *self.by_number.get(number as usize)?;
        (at != NONE).then_some(at as usize)
    }

    /// The field with protobuf number `number`, if the message has one.
    #[inline]
    pub fn field(&self, number: u32) -> Option<&'static FieldDesc> {
        let at = *self.by_number.get(number as usize)?;
        (at != NONE).then(|| &self.fields[at as usize])
    }
}

/// An enum: its name (for error messages) and its named values.
#[derive(Debug)]
pub struct EnumDesc {
    /// The proto enum name.
    pub name: &'static str,
    /// Value names and numbers.
    pub values: &'static [(&'static str, i32)],
}

impl EnumDesc {
    /// Looks a value up by its proto name (e.g. `SPAN_KIND_SERVER`).
    pub fn value_of(&self, name: &str) -> Option<i32> {
        self.values
            .iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|&(_, number)| number)
    }
}

/// The request message a signal's OTLP/JSON body encodes.
pub fn request_for(signal: Signal) -> &'static MessageDesc {
    match signal {
        Signal::Traces => &EXPORT_TRACE_SERVICE_REQUEST,
        Signal::Metrics => &EXPORT_METRICS_SERVICE_REQUEST,
        Signal::Logs => &EXPORT_LOGS_SERVICE_REQUEST,
    }
}

// ---------------------------------------------------------------------------
// Table constructors: one per label, so each table row reads like the proto.

const fn singular(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> FieldDesc {
    field(json, proto, number, kind, Label::Singular)
}

const fn optional(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> FieldDesc {
    field(json, proto, number, kind, Label::Optional)
}

const fn repeated(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> FieldDesc {
    field(json, proto, number, kind, Label::Repeated)
}

const fn oneof(
    group: &'static str,
    json: &'static str,
    proto: &'static str,
    number: u32,
    kind: Kind,
) -> FieldDesc {
    field(json, proto, number, kind, Label::Oneof(group))
}

const fn field(
    json_name: &'static str,
    proto_name: &'static str,
    number: u32,
    kind: Kind,
    label: Label,
) -> FieldDesc {
    FieldDesc {
        json_name,
        proto_name,
        number,
        kind,
        label,
    }
}

const TRACE_ID: Kind = Kind::HexId(16);
const SPAN_ID: Kind = Kind::HexId(8);

// ---------------------------------------------------------------------------
// opentelemetry.proto.collector.{trace,metrics,logs}.v1

static EXPORT_TRACE_SERVICE_REQUEST: MessageDesc = MessageDesc::new(
    "ExportTraceServiceRequest",
    &[repeated(
        "resourceSpans",
        "resource_spans",
        1,
        Kind::Message(&RESOURCE_SPANS),
    )],
);

static EXPORT_METRICS_SERVICE_REQUEST: MessageDesc = MessageDesc::new(
    "ExportMetricsServiceRequest",
    &[repeated(
        "resourceMetrics",
        "resource_metrics",
        1,
        Kind::Message(&RESOURCE_METRICS),
    )],
);

static EXPORT_LOGS_SERVICE_REQUEST: MessageDesc = MessageDesc::new(
    "ExportLogsServiceRequest",
    &[repeated(
        "resourceLogs",
        "resource_logs",
        1,
        Kind::Message(&RESOURCE_LOGS),
    )],
);

// ---------------------------------------------------------------------------
// opentelemetry.proto.resource.v1 and opentelemetry.proto.common.v1

static RESOURCE: MessageDesc = MessageDesc::new(
    "Resource",
    &[
        repeated("attributes", "attributes", 1, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            2,
            Kind::Uint32,
        ),
        repeated("entityRefs", "entity_refs", 3, Kind::Message(&ENTITY_REF)),
    ],
);

static ENTITY_REF: MessageDesc = MessageDesc::new(
    "EntityRef",
    &[
        singular("schemaUrl", "schema_url", 1, Kind::String),
        singular("type", "type", 2, Kind::String),
        repeated("idKeys", "id_keys", 3, Kind::String),
        repeated("descriptionKeys", "description_keys", 4, Kind::String),
    ],
);

static INSTRUMENTATION_SCOPE: MessageDesc = MessageDesc::new(
    "InstrumentationScope",
    &[
        singular("name", "name", 1, Kind::String),
        singular("version", "version", 2, Kind::String),
        repeated("attributes", "attributes", 3, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            4,
            Kind::Uint32,
        ),
    ],
);

/// `KeyValue`, which the wire check treats on a fast path of its own.
pub(crate) static KEY_VALUE: MessageDesc = MessageDesc::new(
    "KeyValue",
    &[
        singular("key", "key", 1, Kind::String),
        singular("value", "value", 2, Kind::Message(&ANY_VALUE)),
        singular("keyStrindex", "key_strindex", 3, Kind::Int32),
    ],
);

/// The name of [`ANY_VALUE`]'s oneof (named in conflict errors).
const ANY_VALUE_ONEOF: &str = "AnyValue.value";

static ANY_VALUE: MessageDesc = MessageDesc::new(
    "AnyValue",
    &[
        oneof(
            ANY_VALUE_ONEOF,
            "stringValue",
            "string_value",
            1,
            Kind::String,
        ),
        oneof(ANY_VALUE_ONEOF, "boolValue", "bool_value", 2, Kind::Bool),
        oneof(ANY_VALUE_ONEOF, "intValue", "int_value", 3, Kind::Int64),
        oneof(
            ANY_VALUE_ONEOF,
            "doubleValue",
            "double_value",
            4,
            Kind::Double,
        ),
        oneof(
            ANY_VALUE_ONEOF,
            "arrayValue",
            "array_value",
            5,
            Kind::Message(&ARRAY_VALUE),
        ),
        oneof(
            ANY_VALUE_ONEOF,
            "kvlistValue",
            "kvlist_value",
            6,
            Kind::Message(&KEY_VALUE_LIST),
        ),
        oneof(ANY_VALUE_ONEOF, "bytesValue", "bytes_value", 7, Kind::Bytes),
        oneof(
            ANY_VALUE_ONEOF,
            "stringValueStrindex",
            "string_value_strindex",
            8,
            Kind::Int32,
        ),
    ],
);

static ARRAY_VALUE: MessageDesc = MessageDesc::new(
    "ArrayValue",
    &[repeated("values", "values", 1, Kind::Message(&ANY_VALUE))],
);

static KEY_VALUE_LIST: MessageDesc = MessageDesc::new(
    "KeyValueList",
    &[repeated("values", "values", 1, Kind::Message(&KEY_VALUE))],
);

// ---------------------------------------------------------------------------
// opentelemetry.proto.trace.v1

static RESOURCE_SPANS: MessageDesc = MessageDesc::new(
    "ResourceSpans",
    &[
        singular("resource", "resource", 1, Kind::Message(&RESOURCE)),
        repeated("scopeSpans", "scope_spans", 2, Kind::Message(&SCOPE_SPANS)),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static SCOPE_SPANS: MessageDesc = MessageDesc::new(
    "ScopeSpans",
    &[
        singular("scope", "scope", 1, Kind::Message(&INSTRUMENTATION_SCOPE)),
        repeated("spans", "spans", 2, Kind::Message(&SPAN)),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static SPAN: MessageDesc = MessageDesc::new(
    "Span",
    &[
        singular("traceId", "trace_id", 1, TRACE_ID),
        singular("spanId", "span_id", 2, SPAN_ID),
        singular("traceState", "trace_state", 3, Kind::String),
        singular("parentSpanId", "parent_span_id", 4, SPAN_ID),
        singular("name", "name", 5, Kind::String),
        singular("kind", "kind", 6, Kind::Enum(&SPAN_KIND)),
        singular(
            "startTimeUnixNano",
            "start_time_unix_nano",
            7,
            Kind::Fixed64,
        ),
        singular("endTimeUnixNano", "end_time_unix_nano", 8, Kind::Fixed64),
        repeated("attributes", "attributes", 9, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            10,
            Kind::Uint32,
        ),
        repeated("events", "events", 11, Kind::Message(&SPAN_EVENT)),
        singular(
            "droppedEventsCount",
            "dropped_events_count",
            12,
            Kind::Uint32,
        ),
        repeated("links", "links", 13, Kind::Message(&SPAN_LINK)),
        singular("droppedLinksCount", "dropped_links_count", 14, Kind::Uint32),
        singular("status", "status", 15, Kind::Message(&STATUS)),
        singular("flags", "flags", 16, Kind::Fixed32),
    ],
);

static SPAN_EVENT: MessageDesc = MessageDesc::new(
    "Span.Event",
    &[
        singular("timeUnixNano", "time_unix_nano", 1, Kind::Fixed64),
        singular("name", "name", 2, Kind::String),
        repeated("attributes", "attributes", 3, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            4,
            Kind::Uint32,
        ),
    ],
);

static SPAN_LINK: MessageDesc = MessageDesc::new(
    "Span.Link",
    &[
        singular("traceId", "trace_id", 1, TRACE_ID),
        singular("spanId", "span_id", 2, SPAN_ID),
        singular("traceState", "trace_state", 3, Kind::String),
        repeated("attributes", "attributes", 4, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            5,
            Kind::Uint32,
        ),
        singular("flags", "flags", 6, Kind::Fixed32),
    ],
);

// Field 1 of Status (deprecated_code) is reserved and no longer exists.
static STATUS: MessageDesc = MessageDesc::new(
    "Status",
    &[
        singular("message", "message", 2, Kind::String),
        singular("code", "code", 3, Kind::Enum(&STATUS_CODE)),
    ],
);

static SPAN_KIND: EnumDesc = EnumDesc {
    name: "SpanKind",
    values: &[
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_SERVER", 2),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
    ],
};

static STATUS_CODE: EnumDesc = EnumDesc {
    name: "StatusCode",
    values: &[
        ("STATUS_CODE_UNSET", 0),
        ("STATUS_CODE_OK", 1),
        ("STATUS_CODE_ERROR", 2),
    ],
};

// ---------------------------------------------------------------------------
// opentelemetry.proto.metrics.v1

static RESOURCE_METRICS: MessageDesc = MessageDesc::new(
    "ResourceMetrics",
    &[
        singular("resource", "resource", 1, Kind::Message(&RESOURCE)),
        repeated(
            "scopeMetrics",
            "scope_metrics",
            2,
            Kind::Message(&SCOPE_METRICS),
        ),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static SCOPE_METRICS: MessageDesc = MessageDesc::new(
    "ScopeMetrics",
    &[
        singular("scope", "scope", 1, Kind::Message(&INSTRUMENTATION_SCOPE)),
        repeated("metrics", "metrics", 2, Kind::Message(&METRIC)),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static METRIC: MessageDesc = MessageDesc::new(
    "Metric",
    &[
        singular("name", "name", 1, Kind::String),
        singular("description", "description", 2, Kind::String),
        singular("unit", "unit", 3, Kind::String),
        // oneof data (tags 5, 7, 9, 10, 11) is encoded at the position of tag 5.
        oneof("Metric.data", "gauge", "gauge", 5, Kind::Message(&GAUGE)),
        oneof("Metric.data", "sum", "sum", 7, Kind::Message(&SUM)),
        oneof(
            "Metric.data",
            "histogram",
            "histogram",
            9,
            Kind::Message(&HISTOGRAM),
        ),
        oneof(
            "Metric.data",
            "exponentialHistogram",
            "exponential_histogram",
            10,
            Kind::Message(&EXPONENTIAL_HISTOGRAM),
        ),
        oneof(
            "Metric.data",
            "summary",
            "summary",
            11,
            Kind::Message(&SUMMARY),
        ),
        repeated("metadata", "metadata", 12, Kind::Message(&KEY_VALUE)),
    ],
);

static GAUGE: MessageDesc = MessageDesc::new(
    "Gauge",
    &[repeated(
        "dataPoints",
        "data_points",
        1,
        Kind::Message(&NUMBER_DATA_POINT),
    )],
);

static SUM: MessageDesc = MessageDesc::new(
    "Sum",
    &[
        repeated(
            "dataPoints",
            "data_points",
            1,
            Kind::Message(&NUMBER_DATA_POINT),
        ),
        singular(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(&AGGREGATION_TEMPORALITY),
        ),
        singular("isMonotonic", "is_monotonic", 3, Kind::Bool),
    ],
);

static HISTOGRAM: MessageDesc = MessageDesc::new(
    "Histogram",
    &[
        repeated(
            "dataPoints",
            "data_points",
            1,
            Kind::Message(&HISTOGRAM_DATA_POINT),
        ),
        singular(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(&AGGREGATION_TEMPORALITY),
        ),
    ],
);

static EXPONENTIAL_HISTOGRAM: MessageDesc = MessageDesc::new(
    "ExponentialHistogram",
    &[
        repeated(
            "dataPoints",
            "data_points",
            1,
            Kind::Message(&EXPONENTIAL_HISTOGRAM_DATA_POINT),
        ),
        singular(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(&AGGREGATION_TEMPORALITY),
        ),
    ],
);

static SUMMARY: MessageDesc = MessageDesc::new(
    "Summary",
    &[repeated(
        "dataPoints",
        "data_points",
        1,
        Kind::Message(&SUMMARY_DATA_POINT),
    )],
);

static NUMBER_DATA_POINT: MessageDesc = MessageDesc::new(
    "NumberDataPoint",
    &[
        singular(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        singular("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        // oneof value (tags 4, 6) is encoded at the position of tag 4.
        oneof(
            "NumberDataPoint.value",
            "asDouble",
            "as_double",
            4,
            Kind::Double,
        ),
        oneof(
            "NumberDataPoint.value",
            "asInt",
            "as_int",
            6,
            Kind::Sfixed64,
        ),
        repeated("exemplars", "exemplars", 5, Kind::Message(&EXEMPLAR)),
        repeated("attributes", "attributes", 7, Kind::Message(&KEY_VALUE)),
        singular("flags", "flags", 8, Kind::Uint32),
    ],
);

static HISTOGRAM_DATA_POINT: MessageDesc = MessageDesc::new(
    "HistogramDataPoint",
    &[
        singular(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        singular("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        singular("count", "count", 4, Kind::Fixed64),
        optional("sum", "sum", 5, Kind::Double),
        repeated("bucketCounts", "bucket_counts", 6, Kind::Fixed64),
        repeated("explicitBounds", "explicit_bounds", 7, Kind::Double),
        repeated("exemplars", "exemplars", 8, Kind::Message(&EXEMPLAR)),
        repeated("attributes", "attributes", 9, Kind::Message(&KEY_VALUE)),
        singular("flags", "flags", 10, Kind::Uint32),
        optional("min", "min", 11, Kind::Double),
        optional("max", "max", 12, Kind::Double),
    ],
);

static EXPONENTIAL_HISTOGRAM_DATA_POINT: MessageDesc = MessageDesc::new(
    "ExponentialHistogramDataPoint",
    &[
        repeated("attributes", "attributes", 1, Kind::Message(&KEY_VALUE)),
        singular(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        singular("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        singular("count", "count", 4, Kind::Fixed64),
        optional("sum", "sum", 5, Kind::Double),
        singular("scale", "scale", 6, Kind::Sint32),
        singular("zeroCount", "zero_count", 7, Kind::Fixed64),
        singular("positive", "positive", 8, Kind::Message(&BUCKETS)),
        singular("negative", "negative", 9, Kind::Message(&BUCKETS)),
        singular("flags", "flags", 10, Kind::Uint32),
        repeated("exemplars", "exemplars", 11, Kind::Message(&EXEMPLAR)),
        optional("min", "min", 12, Kind::Double),
        optional("max", "max", 13, Kind::Double),
        singular("zeroThreshold", "zero_threshold", 14, Kind::Double),
    ],
);

static BUCKETS: MessageDesc = MessageDesc::new(
    "ExponentialHistogramDataPoint.Buckets",
    &[
        singular("offset", "offset", 1, Kind::Sint32),
        repeated("bucketCounts", "bucket_counts", 2, Kind::Uint64),
    ],
);

static SUMMARY_DATA_POINT: MessageDesc = MessageDesc::new(
    "SummaryDataPoint",
    &[
        singular(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        singular("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        singular("count", "count", 4, Kind::Fixed64),
        singular("sum", "sum", 5, Kind::Double),
        repeated(
            "quantileValues",
            "quantile_values",
            6,
            Kind::Message(&VALUE_AT_QUANTILE),
        ),
        repeated("attributes", "attributes", 7, Kind::Message(&KEY_VALUE)),
        singular("flags", "flags", 8, Kind::Uint32),
    ],
);

static VALUE_AT_QUANTILE: MessageDesc = MessageDesc::new(
    "SummaryDataPoint.ValueAtQuantile",
    &[
        singular("quantile", "quantile", 1, Kind::Double),
        singular("value", "value", 2, Kind::Double),
    ],
);

static EXEMPLAR: MessageDesc = MessageDesc::new(
    "Exemplar",
    &[
        singular("timeUnixNano", "time_unix_nano", 2, Kind::Fixed64),
        // oneof value (tags 3, 6) is encoded at the position of tag 3.
        oneof("Exemplar.value", "asDouble", "as_double", 3, Kind::Double),
        oneof("Exemplar.value", "asInt", "as_int", 6, Kind::Sfixed64),
        singular("spanId", "span_id", 4, SPAN_ID),
        singular("traceId", "trace_id", 5, TRACE_ID),
        repeated(
            "filteredAttributes",
            "filtered_attributes",
            7,
            Kind::Message(&KEY_VALUE),
        ),
    ],
);

static AGGREGATION_TEMPORALITY: EnumDesc = EnumDesc {
    name: "AggregationTemporality",
    values: &[
        ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
        ("AGGREGATION_TEMPORALITY_DELTA", 1),
        ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
    ],
};

// ---------------------------------------------------------------------------
// opentelemetry.proto.logs.v1

static RESOURCE_LOGS: MessageDesc = MessageDesc::new(
    "ResourceLogs",
    &[
        singular("resource", "resource", 1, Kind::Message(&RESOURCE)),
        repeated("scopeLogs", "scope_logs", 2, Kind::Message(&SCOPE_LOGS)),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static SCOPE_LOGS: MessageDesc = MessageDesc::new(
    "ScopeLogs",
    &[
        singular("scope", "scope", 1, Kind::Message(&INSTRUMENTATION_SCOPE)),
        repeated("logRecords", "log_records", 2, Kind::Message(&LOG_RECORD)),
        singular("schemaUrl", "schema_url", 3, Kind::String),
    ],
);

static LOG_RECORD: MessageDesc = MessageDesc::new(
    "LogRecord",
    &[
        singular("timeUnixNano", "time_unix_nano", 1, Kind::Fixed64),
        singular(
            "severityNumber",
            "severity_number",
            2,
            Kind::Enum(&SEVERITY_NUMBER),
        ),
        singular("severityText", "severity_text", 3, Kind::String),
        // Field 4 is reserved.
        singular("body", "body", 5, Kind::Message(&ANY_VALUE)),
        repeated("attributes", "attributes", 6, Kind::Message(&KEY_VALUE)),
        singular(
            "droppedAttributesCount",
            "dropped_attributes_count",
            7,
            Kind::Uint32,
        ),
        singular("flags", "flags", 8, Kind::Fixed32),
        singular("traceId", "trace_id", 9, TRACE_ID),
        singular("spanId", "span_id", 10, SPAN_ID),
        singular(
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            11,
            Kind::Fixed64,
        ),
        singular("eventName", "event_name", 12, Kind::String),
    ],
);

static SEVERITY_NUMBER: EnumDesc = EnumDesc {
    name: "SeverityNumber",
    values: &[
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
        ("SEVERITY_NUMBER_TRACE", 1),
        ("SEVERITY_NUMBER_TRACE2", 2),
        ("SEVERITY_NUMBER_TRACE3", 3),
        ("SEVERITY_NUMBER_TRACE4", 4),
        ("SEVERITY_NUMBER_DEBUG", 5),
        ("SEVERITY_NUMBER_DEBUG2", 6),
        ("SEVERITY_NUMBER_DEBUG3", 7),
        ("SEVERITY_NUMBER_DEBUG4", 8),
        ("SEVERITY_NUMBER_INFO", 9),
        ("SEVERITY_NUMBER_INFO2", 10),
        ("SEVERITY_NUMBER_INFO3", 11),
        ("SEVERITY_NUMBER_INFO4", 12),
        ("SEVERITY_NUMBER_WARN", 13),
        ("SEVERITY_NUMBER_WARN2", 14),
        ("SEVERITY_NUMBER_WARN3", 15),
        ("SEVERITY_NUMBER_WARN4", 16),
        ("SEVERITY_NUMBER_ERROR", 17),
        ("SEVERITY_NUMBER_ERROR2", 18),
        ("SEVERITY_NUMBER_ERROR3", 19),
        ("SEVERITY_NUMBER_ERROR4", 20),
        ("SEVERITY_NUMBER_FATAL", 21),
        ("SEVERITY_NUMBER_FATAL2", 22),
        ("SEVERITY_NUMBER_FATAL3", 23),
        ("SEVERITY_NUMBER_FATAL4", 24),
    ],
};

/// Every message in the schema, for tests that check the tables' invariants.
pub static ALL_MESSAGES: &[&MessageDesc] = &[
    &EXPORT_TRACE_SERVICE_REQUEST,
    &EXPORT_METRICS_SERVICE_REQUEST,
    &EXPORT_LOGS_SERVICE_REQUEST,
    &RESOURCE,
    &ENTITY_REF,
    &INSTRUMENTATION_SCOPE,
    &KEY_VALUE,
    &ANY_VALUE,
    &ARRAY_VALUE,
    &KEY_VALUE_LIST,
    &RESOURCE_SPANS,
    &SCOPE_SPANS,
    &SPAN,
    &SPAN_EVENT,
    &SPAN_LINK,
    &STATUS,
    &RESOURCE_METRICS,
    &SCOPE_METRICS,
    &METRIC,
    &GAUGE,
    &SUM,
    &HISTOGRAM,
    &EXPONENTIAL_HISTOGRAM,
    &SUMMARY,
    &NUMBER_DATA_POINT,
    &HISTOGRAM_DATA_POINT,
    &EXPONENTIAL_HISTOGRAM_DATA_POINT,
    &BUCKETS,
    &SUMMARY_DATA_POINT,
    &VALUE_AT_QUANTILE,
    &EXEMPLAR,
    &RESOURCE_LOGS,
    &SCOPE_LOGS,
    &LOG_RECORD,
];
