//! The OTLP messages as far as decoding needs them: for every field, what prost requires of its
//! encoding. The intake checks items against this schema so that whatever it acknowledges decodes
//! in every exporter; an item that does not is refused alone, never the batch it would join.
//!
//! prost refuses, and so does this check: a string that is not UTF-8, a known field sent with a
//! wire type its type cannot have (a string sent as a varint), a packed repeated field that is
//! not a whole number of values, a varint over ten bytes or past `u64`, a key past `u32`, and
//! messages nested deeper than prost's recursion limit. Unknown fields are skipped, as prost
//! skips them, but they must still be framed. Groups are refused outright (the walker never
//! accepted them; no OTLP encoder writes them).

use super::{FieldProblem, read_varint};

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not public): a decode starts with this
/// budget, each nested message takes one, and skipping an unknown field needs one left. The
/// strictest decoder of a batch decodes the whole request, so the request has the whole budget.
pub(crate) const RECURSION_LIMIT: u32 = 100;

/// What one field number of a message must look like on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Not in the schema: skipped by decoders, framing only.
    Unknown,
    /// `string`: length-delimited UTF-8.
    Str,
    /// `bytes`: length-delimited, anything.
    Bytes,
    /// `int32`, `int64`, `uint32`, `sint32`, `bool`, enums: a varint.
    Varint,
    /// `fixed64`, `sfixed64`, `double`.
    Fixed64,
    /// `fixed32`.
    Fixed32,
    /// `repeated fixed64` / `repeated double`: unpacked elements or a packed run of 8-byte values.
    RepeatedFixed64,
    /// `repeated uint64`: unpacked varints or a packed run of varints.
    RepeatedVarint,
    /// A nested message.
    Message(&'static Msg),
    /// A repeated nested message (checked alike; errors name the occurrence).
    Repeated(&'static Msg),
}

/// One message type: field kinds and names, indexed by field number (OTLP's numbers are small).
pub(crate) struct Msg {
    pub(crate) kinds: &'static [Kind],
    pub(crate) names: &'static [&'static str],
}

impl Msg {
    #[inline]
    pub(crate) fn kind(&self, number: u32) -> Kind {
        self.kinds
            .get(number as usize)
            .copied()
            .unwrap_or(Kind::Unknown)
    }

    pub(crate) fn name(&self, number: u32) -> &'static str {
        self.names.get(number as usize).copied().unwrap_or("")
    }

    /// The message type of field `number`, for walking down the levels of a request.
    pub(crate) fn child(&self, number: u32) -> &'static Msg {
        match self.kind(number) {
            Kind::Message(m) | Kind::Repeated(m) => m,
            _ => &EMPTY,
        }
    }
}

use Kind::{
    Bytes as B, Fixed32 as F32, Fixed64 as F64, Message as M, Repeated as R,
    RepeatedFixed64 as RF64, RepeatedVarint as RV, Str as S, Unknown as U, Varint as V,
};

static EMPTY: Msg = Msg {
    kinds: &[],
    names: &[],
};

// common.v1
static ANY_VALUE: Msg = Msg {
    kinds: &[U, S, V, V, F64, M(&ARRAY_VALUE), M(&KEY_VALUE_LIST), B, V],
    names: &[
        "",
        "string_value",
        "bool_value",
        "int_value",
        "double_value",
        "array_value",
        "kvlist_value",
        "bytes_value",
        "string_value_strindex",
    ],
};
static ARRAY_VALUE: Msg = Msg {
    kinds: &[U, R(&ANY_VALUE)],
    names: &["", "values"],
};
static KEY_VALUE_LIST: Msg = Msg {
    kinds: &[U, R(&KEY_VALUE)],
    names: &["", "values"],
};
static KEY_VALUE: Msg = Msg {
    kinds: &[U, S, M(&ANY_VALUE), V],
    names: &["", "key", "value", "key_strindex"],
};
static SCOPE: Msg = Msg {
    kinds: &[U, S, S, R(&KEY_VALUE), V],
    names: &[
        "",
        "name",
        "version",
        "attributes",
        "dropped_attributes_count",
    ],
};
static ENTITY_REF: Msg = Msg {
    kinds: &[U, S, S, S, S],
    names: &["", "schema_url", "type", "id_keys", "description_keys"],
};
// resource.v1
static RESOURCE: Msg = Msg {
    kinds: &[U, R(&KEY_VALUE), V, R(&ENTITY_REF)],
    names: &["", "attributes", "dropped_attributes_count", "entity_refs"],
};

// trace.v1
pub(crate) static TRACES_REQUEST: Msg = Msg {
    kinds: &[U, R(&RESOURCE_SPANS)],
    names: &["", "resource_spans"],
};
static RESOURCE_SPANS: Msg = Msg {
    kinds: &[U, M(&RESOURCE), R(&SCOPE_SPANS), S],
    names: &["", "resource", "scope_spans", "schema_url"],
};
static SCOPE_SPANS: Msg = Msg {
    kinds: &[U, M(&SCOPE), R(&SPAN), S],
    names: &["", "scope", "spans", "schema_url"],
};
static SPAN: Msg = Msg {
    kinds: &[
        U,
        B,
        B,
        S,
        B,
        S,
        V,
        F64,
        F64,
        R(&KEY_VALUE),
        V,
        R(&EVENT),
        V,
        R(&LINK),
        V,
        M(&STATUS),
        F32,
    ],
    names: &[
        "",
        "trace_id",
        "span_id",
        "trace_state",
        "parent_span_id",
        "name",
        "kind",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "attributes",
        "dropped_attributes_count",
        "events",
        "dropped_events_count",
        "links",
        "dropped_links_count",
        "status",
        "flags",
    ],
};
static EVENT: Msg = Msg {
    kinds: &[U, F64, S, R(&KEY_VALUE), V],
    names: &[
        "",
        "time_unix_nano",
        "name",
        "attributes",
        "dropped_attributes_count",
    ],
};
static LINK: Msg = Msg {
    kinds: &[U, B, B, S, R(&KEY_VALUE), V, F32],
    names: &[
        "",
        "trace_id",
        "span_id",
        "trace_state",
        "attributes",
        "dropped_attributes_count",
        "flags",
    ],
};
static STATUS: Msg = Msg {
    kinds: &[U, U, S, V],
    names: &["", "", "message", "code"],
};

// logs.v1
pub(crate) static LOGS_REQUEST: Msg = Msg {
    kinds: &[U, R(&RESOURCE_LOGS)],
    names: &["", "resource_logs"],
};
static RESOURCE_LOGS: Msg = Msg {
    kinds: &[U, M(&RESOURCE), R(&SCOPE_LOGS), S],
    names: &["", "resource", "scope_logs", "schema_url"],
};
static SCOPE_LOGS: Msg = Msg {
    kinds: &[U, M(&SCOPE), R(&LOG_RECORD), S],
    names: &["", "scope", "log_records", "schema_url"],
};
static LOG_RECORD: Msg = Msg {
    kinds: &[
        U,
        F64,
        V,
        S,
        U,
        M(&ANY_VALUE),
        R(&KEY_VALUE),
        V,
        F32,
        B,
        B,
        F64,
        S,
    ],
    names: &[
        "",
        "time_unix_nano",
        "severity_number",
        "severity_text",
        "",
        "body",
        "attributes",
        "dropped_attributes_count",
        "flags",
        "trace_id",
        "span_id",
        "observed_time_unix_nano",
        "event_name",
    ],
};

// metrics.v1
pub(crate) static METRICS_REQUEST: Msg = Msg {
    kinds: &[U, R(&RESOURCE_METRICS)],
    names: &["", "resource_metrics"],
};
static RESOURCE_METRICS: Msg = Msg {
    kinds: &[U, M(&RESOURCE), R(&SCOPE_METRICS), S],
    names: &["", "resource", "scope_metrics", "schema_url"],
};
static SCOPE_METRICS: Msg = Msg {
    kinds: &[U, M(&SCOPE), R(&METRIC), S],
    names: &["", "scope", "metrics", "schema_url"],
};
static METRIC: Msg = Msg {
    kinds: &[
        U,
        S,
        S,
        S,
        U,
        M(&GAUGE),
        U,
        M(&SUM),
        U,
        M(&HISTOGRAM),
        M(&EXPONENTIAL_HISTOGRAM),
        M(&SUMMARY),
        R(&KEY_VALUE),
    ],
    names: &[
        "",
        "name",
        "description",
        "unit",
        "",
        "gauge",
        "",
        "sum",
        "",
        "histogram",
        "exponential_histogram",
        "summary",
        "metadata",
    ],
};
static GAUGE: Msg = Msg {
    kinds: &[U, R(&NUMBER_DATA_POINT)],
    names: &["", "data_points"],
};
static SUM: Msg = Msg {
    kinds: &[U, R(&NUMBER_DATA_POINT), V, V],
    names: &["", "data_points", "aggregation_temporality", "is_monotonic"],
};
static HISTOGRAM: Msg = Msg {
    kinds: &[U, R(&HISTOGRAM_DATA_POINT), V],
    names: &["", "data_points", "aggregation_temporality"],
};
static EXPONENTIAL_HISTOGRAM: Msg = Msg {
    kinds: &[U, R(&EXPONENTIAL_HISTOGRAM_DATA_POINT), V],
    names: &["", "data_points", "aggregation_temporality"],
};
static SUMMARY: Msg = Msg {
    kinds: &[U, R(&SUMMARY_DATA_POINT)],
    names: &["", "data_points"],
};
static NUMBER_DATA_POINT: Msg = Msg {
    kinds: &[U, U, F64, F64, F64, R(&EXEMPLAR), F64, R(&KEY_VALUE), V],
    names: &[
        "",
        "",
        "start_time_unix_nano",
        "time_unix_nano",
        "as_double",
        "exemplars",
        "as_int",
        "attributes",
        "flags",
    ],
};
static HISTOGRAM_DATA_POINT: Msg = Msg {
    kinds: &[
        U,
        U,
        F64,
        F64,
        F64,
        F64,
        RF64,
        RF64,
        R(&EXEMPLAR),
        R(&KEY_VALUE),
        V,
        F64,
        F64,
    ],
    names: &[
        "",
        "",
        "start_time_unix_nano",
        "time_unix_nano",
        "count",
        "sum",
        "bucket_counts",
        "explicit_bounds",
        "exemplars",
        "attributes",
        "flags",
        "min",
        "max",
    ],
};
static EXPONENTIAL_HISTOGRAM_DATA_POINT: Msg = Msg {
    kinds: &[
        U,
        R(&KEY_VALUE),
        F64,
        F64,
        F64,
        F64,
        V,
        F64,
        M(&BUCKETS),
        M(&BUCKETS),
        V,
        R(&EXEMPLAR),
        F64,
        F64,
        F64,
    ],
    names: &[
        "",
        "attributes",
        "start_time_unix_nano",
        "time_unix_nano",
        "count",
        "sum",
        "scale",
        "zero_count",
        "positive",
        "negative",
        "flags",
        "exemplars",
        "min",
        "max",
        "zero_threshold",
    ],
};
static BUCKETS: Msg = Msg {
    kinds: &[U, V, RV],
    names: &["", "offset", "bucket_counts"],
};
static SUMMARY_DATA_POINT: Msg = Msg {
    kinds: &[
        U,
        U,
        F64,
        F64,
        F64,
        F64,
        R(&VALUE_AT_QUANTILE),
        R(&KEY_VALUE),
        V,
    ],
    names: &[
        "",
        "",
        "start_time_unix_nano",
        "time_unix_nano",
        "count",
        "sum",
        "quantile_values",
        "attributes",
        "flags",
    ],
};
static VALUE_AT_QUANTILE: Msg = Msg {
    kinds: &[U, F64, F64],
    names: &["", "quantile", "value"],
};
static EXEMPLAR: Msg = Msg {
    kinds: &[U, U, F64, F64, B, B, F64, R(&KEY_VALUE)],
    names: &[
        "",
        "",
        "time_unix_nano",
        "as_double",
        "span_id",
        "trace_id",
        "as_int",
        "filtered_attributes",
    ],
};

/// Where in an item a problem sits, innermost field first; rendered only when reported.
#[derive(Debug)]
pub(crate) struct Bad {
    /// (message, field number, occurrence index of that field within the message) per level,
    /// innermost first.
    pub(crate) trail: Vec<(&'static Msg, u32, Option<usize>)>,
    pub(crate) problem: FieldProblem,
}

impl Bad {
    fn new(problem: FieldProblem) -> Self {
        Bad {
            trail: Vec::new(),
            problem,
        }
    }

    /// The path below the item, like `attributes[2].value.string_value`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (msg, number, index) in self.trail.iter().rev() {
            if !out.is_empty() {
                out.push('.');
            }
            match msg.name(*number) {
                "" => out.push_str(&format!("field {number}")),
                name => out.push_str(name),
            }
            if let Some(i) = index {
                out.push_str(&format!("[{i}]"));
            }
        }
        out
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// Checks one encoded field of `msg` (already framed: `payload` is its value for wire type 2)
/// against the schema, with `budget` the recursion budget `msg` is decoded with.
#[inline]
pub(crate) fn check_field(
    msg: &'static Msg,
    number: u32,
    wire_type: u8,
    payload: &[u8],
    budget: u32,
) -> Result<(), Bad> {
    let wrong = |expected: &'static str| {
        Err(Bad::new(FieldProblem::WrongWireType {
            expected,
            got: wire_type_name(wire_type),
        }))
    };
    match (msg.kind(number), wire_type) {
        (Kind::Unknown, _) => {
            if budget == 0 {
                return Err(Bad::new(FieldProblem::TooDeep {
                    limit: RECURSION_LIMIT,
                }));
            }
            Ok(())
        }
        (Kind::Str, 2) => match std::str::from_utf8(payload) {
            Ok(_) => Ok(()),
            Err(_) => Err(Bad::new(FieldProblem::NotUtf8)),
        },
        (Kind::Str, _) => wrong("a string"),
        (Kind::Bytes, 2) => Ok(()),
        (Kind::Bytes, _) => wrong("bytes"),
        (Kind::Varint, 0) | (Kind::Fixed64, 1) | (Kind::Fixed32, 5) => Ok(()),
        (Kind::Varint, _) => wrong("a varint"),
        (Kind::Fixed64, _) => wrong("a 64-bit fixed value"),
        (Kind::Fixed32, _) => wrong("a 32-bit fixed value"),
        (Kind::RepeatedFixed64, 1) | (Kind::RepeatedVarint, 0) => Ok(()),
        (Kind::RepeatedFixed64, 2) => {
            if payload.len().is_multiple_of(8) {
                Ok(())
            } else {
                Err(Bad::new(FieldProblem::Packed))
            }
        }
        (Kind::RepeatedVarint, 2) => {
            let mut pos = 0;
            while pos < payload.len() {
                if read_varint(payload, &mut pos).is_none() {
                    return Err(Bad::new(FieldProblem::Packed));
                }
            }
            Ok(())
        }
        (Kind::RepeatedFixed64, _) => wrong("64-bit fixed values"),
        (Kind::RepeatedVarint, _) => wrong("varints"),
        (Kind::Message(inner) | Kind::Repeated(inner), 2) => {
            if budget == 0 {
                return Err(Bad::new(FieldProblem::TooDeep {
                    limit: RECURSION_LIMIT,
                }));
            }
            check_message(inner, payload, budget - 1)
        }
        (Kind::Message(_) | Kind::Repeated(_), _) => wrong("a message"),
    }
}

fn wire_type_name(wire_type: u8) -> &'static str {
    match wire_type {
        0 => "a varint",
        1 => "a 64-bit fixed value",
        2 => "a length-delimited value",
        5 => "a 32-bit fixed value",
        _ => "a group",
    }
}

/// Checks every field of an encoded `msg`, at every depth, with `budget` the recursion budget
/// `msg` is decoded with.
pub(crate) fn check_message(msg: &'static Msg, buf: &[u8], budget: u32) -> Result<(), Bad> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos).ok_or(Bad::new(FieldProblem::Varint))?;
        let number = match u32::try_from(key) {
            Ok(k) if k >> 3 != 0 => k >> 3,
            _ => return Err(Bad::new(FieldProblem::FieldNumber)),
        };
        let wire_type = (key & 7) as u8;
        let mut payload: &[u8] = &[];
        let framed = match wire_type {
            0 => read_varint(buf, &mut pos).map(|_| ()),
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                (buf.len() - pos >= width).then(|| pos += width)
            }
            2 => read_varint(buf, &mut pos).and_then(|len| {
                let len = usize::try_from(len).ok()?;
                (len <= buf.len() - pos).then(|| {
                    payload = &buf[pos..pos + len];
                    pos += len;
                })
            }),
            other => return Err(Bad::new(FieldProblem::InvalidWireType(other))),
        };
        if framed.is_none() {
            return Err(at(
                msg,
                buf,
                start,
                number,
                Bad::new(FieldProblem::Truncated),
            ));
        }
        if let Err(bad) = check_field(msg, number, wire_type, payload, budget) {
            return Err(at(msg, buf, start, number, bad));
        }
    }
    Ok(())
}

/// Adds the field at `start` of `buf` to the trail, with its occurrence index when it is a
/// repeated message (counted only now, on the error path).
pub(crate) fn at(msg: &'static Msg, buf: &[u8], start: usize, number: u32, mut bad: Bad) -> Bad {
    let index = matches!(msg.kind(number), Kind::Repeated(_)).then(|| {
        super::fields(&buf[..start])
            .map_while(Result::ok)
            .filter(|f| f.number == number)
            .count()
    });
    bad.trail.push((msg, number, index));
    bad
}
