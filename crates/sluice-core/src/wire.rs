//! A protobuf wire-format walker for OTLP export requests.
//!
//! Batches stay encoded as `Export*ServiceRequest` bytes from receiver to exporter. An export
//! request is nothing but a repeated `Resource*` field, so the walker only needs to know, for each
//! nesting level, which field numbers hold the children that lead to the countable items (spans,
//! metric data points, log records). Everything else at a level is "header" and is copied verbatim.
//! This is enough to validate, count, split and rewrite resources without decoding a single
//! attribute; property tests prove it agrees with prost (see the tests at the end).

use bytes::{BufMut, Bytes, BytesMut};

use crate::Signal;

/// Why a byte string is not a well-formed OTLP export request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A varint ran past the end of its buffer or over ten bytes.
    #[error("{path}: malformed varint")]
    Varint {
        /// Where in the message.
        path: String,
    },
    /// A length-delimited field claims more bytes than remain.
    #[error("{path}: field {field} length {len} exceeds the {remaining} bytes remaining")]
    Truncated {
        /// Where in the message.
        path: String,
        /// The field number.
        field: u32,
        /// The length the field claims.
        len: u64,
        /// What remains of the enclosing message.
        remaining: usize,
    },
    /// A wire type that protobuf does not define, or a deprecated group.
    #[error("{path}: invalid wire type {wire_type} for field {field}")]
    WireType {
        /// Where in the message.
        path: String,
        /// The field number.
        field: u32,
        /// The wire type found.
        wire_type: u8,
    },
    /// Field number zero is reserved.
    #[error("{path}: invalid field number 0")]
    FieldZero {
        /// Where in the message.
        path: String,
    },
    /// A trace or span id of the wrong length.
    #[error("{path}: {what} must be {expected} bytes, got {got}")]
    IdLength {
        /// Where in the message.
        path: String,
        /// Which id (`trace_id`, `span_id`, `parent_span_id`).
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length found.
        got: usize,
    },
}

/// The protobuf wire types this walker understands (groups are refused as malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// Wire type 0.
    Varint,
    /// Wire type 1: eight little-endian bytes.
    Fixed64,
    /// Wire type 2: a length-prefixed message, string, bytes or packed repeated field.
    Len,
    /// Wire type 5: four little-endian bytes.
    Fixed32,
}

/// One field of a message: its number, wire type, and the complete bytes it occupies (tag included)
/// plus, for length-delimited fields, the payload.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// How its value is encoded.
    pub wire_type: WireType,
    /// The whole field, tag and length prefix included: what to copy verbatim.
    pub raw: &'a [u8],
    /// The payload of a length-delimited field (empty for other wire types).
    pub payload: &'a [u8],
    /// Where the value starts (after the tag and any length prefix), counted from the start of
    /// the message being walked: add the message's own offset for a position in the request.
    pub value_start: usize,
}

impl Field<'_> {
    /// The value of a `fixed64` field, `None` for other wire types.
    pub fn fixed64(&self) -> Option<u64> {
        let bytes = self.raw.last_chunk::<8>()?;
        (self.wire_type == WireType::Fixed64).then(|| u64::from_le_bytes(*bytes))
    }
}

/// The fields of one encoded message, each framed and checked (tag, wire type, length) as it is
/// read; the first framing error is the last item. For tools that need more of the wire format
/// than [`inspect`], [`split`] and [`rewrite_resources`] offer, such as patching timestamps in
/// place.
pub fn fields(message: &[u8]) -> impl Iterator<Item = Result<Field<'_>, WireError>> {
    Fields::new(message, &String::new)
}

#[inline]
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Tags and most lengths are one byte: take them without entering the loop.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Iterates over the fields of one message, validating tags and lengths as it goes.
struct Fields<'a, 'p> {
    buf: &'a [u8],
    pos: usize,
    path: &'p dyn Fn() -> String,
}

impl<'a, 'p> Fields<'a, 'p> {
    fn new(buf: &'a [u8], path: &'p dyn Fn() -> String) -> Self {
        Fields { buf, pos: 0, path }
    }
}

impl<'a> Iterator for Fields<'a, '_> {
    type Item = Result<Field<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let result = (|| {
            let key = read_varint(self.buf, &mut self.pos).ok_or_else(|| WireError::Varint {
                path: (self.path)(),
            })?;
            let number = u32::try_from(key >> 3).unwrap_or(u32::MAX);
            if number == 0 {
                return Err(WireError::FieldZero {
                    path: (self.path)(),
                });
            }
            let wire_type = match key & 7 {
                0 => WireType::Varint,
                1 => WireType::Fixed64,
                2 => WireType::Len,
                5 => WireType::Fixed32,
                other => {
                    return Err(WireError::WireType {
                        path: (self.path)(),
                        field: number,
                        wire_type: other as u8,
                    });
                }
            };
            let remaining = |pos: usize| self.buf.len() - pos;
            let mut payload: &[u8] = &[];
            let mut value_start = self.pos;
            match wire_type {
                WireType::Varint => {
                    read_varint(self.buf, &mut self.pos).ok_or_else(|| WireError::Varint {
                        path: (self.path)(),
                    })?;
                }
                WireType::Fixed64 | WireType::Fixed32 => {
                    let width = if wire_type == WireType::Fixed64 { 8 } else { 4 };
                    if remaining(self.pos) < width {
                        return Err(WireError::Truncated {
                            path: (self.path)(),
                            field: number,
                            len: width as u64,
                            remaining: remaining(self.pos),
                        });
                    }
                    self.pos += width;
                }
                WireType::Len => {
                    let len =
                        read_varint(self.buf, &mut self.pos).ok_or_else(|| WireError::Varint {
                            path: (self.path)(),
                        })?;
                    if len > remaining(self.pos) as u64 {
                        return Err(WireError::Truncated {
                            path: (self.path)(),
                            field: number,
                            len,
                            remaining: remaining(self.pos),
                        });
                    }
                    let len = len as usize;
                    value_start = self.pos;
                    payload = &self.buf[self.pos..self.pos + len];
                    self.pos += len;
                }
            }
            Ok(Field {
                number,
                wire_type,
                raw: &self.buf[start..self.pos],
                payload,
                value_start,
            })
        })();
        if result.is_err() {
            // Stop after the first error: the rest of the buffer cannot be framed.
            self.pos = self.buf.len();
        }
        Some(result)
    }
}

/// Writes a length-delimited field header (tag and length).
fn put_len_header(out: &mut BytesMut, number: u32, len: usize) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, len as u64);
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// The shape of one signal's request: per nesting level, the field numbers that hold children.
/// The last level's children are the countable items.
/// Deeper than any shape's levels (metrics: resource, scope, metric, data point).
const MAX_DEPTH: usize = 8;

struct Shape {
    levels: &'static [&'static [u32]],
    names: &'static [&'static str],
    /// Id fields checked on each item: (field number, name, length).
    item_ids: &'static [(u32, &'static str, usize)],
}

const TRACES: Shape = Shape {
    levels: &[&[1], &[2], &[2]],
    names: &["resource_spans", "scope_spans", "spans"],
    item_ids: &[
        (1, "trace_id", 16),
        (2, "span_id", 8),
        (4, "parent_span_id", 8),
    ],
};

// Metric.data is a oneof: gauge = 5, sum = 7, histogram = 9, exponential_histogram = 10,
// summary = 11; each holds `data_points = 1`.
const METRICS: Shape = Shape {
    levels: &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]],
    names: &[
        "resource_metrics",
        "scope_metrics",
        "metrics",
        "data",
        "data_points",
    ],
    item_ids: &[],
};

const LOGS: Shape = Shape {
    levels: &[&[1], &[2], &[2]],
    names: &["resource_logs", "scope_logs", "log_records"],
    item_ids: &[(9, "trace_id", 16), (10, "span_id", 8)],
};

fn shape(signal: Signal) -> &'static Shape {
    match signal {
        Signal::Traces => &TRACES,
        Signal::Metrics => &METRICS,
        Signal::Logs => &LOGS,
    }
}

/// Validates the framing of an export request down to its items and counts the items.
///
/// Every level is framed (tags, wire types, lengths), each item's own fields are framed, and trace
/// and span ids must have their exact lengths (or be empty).
///
/// # Errors
/// A [`WireError`] naming the path of the first problem found.
pub fn validate_and_count(signal: Signal, request: &[u8]) -> Result<usize, WireError> {
    let inspection = inspect(signal, request)?;
    match inspection.first_rejection {
        Some(err) => Err(err),
        None => Ok(inspection.items),
    }
}

/// What [`inspect`] found in a request whose framing is sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Valid items.
    pub items: usize,
    /// Items with invalid ids, to be dropped and reported as a partial success.
    pub rejected: usize,
    /// The first of those problems, for the partial-success message.
    pub first_rejection: Option<WireError>,
}

/// Validates framing like [`validate_and_count`], but counts items with invalid ids as rejected
/// instead of failing the request, so that one bad span does not lose its neighbours.
///
/// # Errors
/// A [`WireError`] when the framing itself is broken: nothing in the request can be trusted.
pub fn inspect(signal: Signal, request: &[u8]) -> Result<Inspection, WireError> {
    let shape = shape(signal);
    let mut path = Vec::with_capacity(shape.levels.len());
    let mut inspection = Inspection {
        items: 0,
        rejected: 0,
        first_rejection: None,
    };
    inspect_level(shape, 0, request, &mut path, &mut inspection)?;
    Ok(inspection)
}

/// Drops the items [`inspect`] rejected, keeping everything else byte for byte.
pub fn retain_valid(signal: Signal, request: &[u8]) -> Bytes {
    let shape = shape(signal);
    let mut out = BytesMut::with_capacity(request.len());
    retain_level(shape, shape.levels, request, &mut out);
    out.freeze()
}

fn retain_level(shape: &Shape, levels: &[&[u32]], msg: &[u8], out: &mut BytesMut) {
    let Some((children, rest)) = levels.split_first() else {
        return;
    };
    let no_path = String::new;
    for field in Fields::new(msg, &no_path).map_while(Result::ok) {
        if !(children.contains(&field.number) && field.wire_type == WireType::Len) {
            out.extend_from_slice(field.raw);
            continue;
        }
        if rest.is_empty() {
            if check_item(shape, field.payload, &[]).is_ok() {
                out.extend_from_slice(field.raw);
            }
            continue;
        }
        let mut child = BytesMut::new();
        retain_level(shape, rest, field.payload, &mut child);
        put_len_header(out, field.number, child.len());
        out.extend_from_slice(&child);
    }
}

fn render_path(shape: &Shape, path: &[usize]) -> String {
    if path.is_empty() {
        return "request".to_owned();
    }
    let mut out = String::new();
    for (depth, index) in path.iter().enumerate() {
        if depth > 0 {
            out.push('.');
        }
        out.push_str(shape.names[depth]);
        out.push('[');
        out.push_str(&index.to_string());
        out.push(']');
    }
    out
}

fn inspect_level(
    shape: &Shape,
    depth: usize,
    msg: &[u8],
    path: &mut Vec<usize>,
    inspection: &mut Inspection,
) -> Result<(), WireError> {
    if depth == shape.levels.len() {
        match check_item(shape, msg, path) {
            Ok(()) => inspection.items += 1,
            Err(err @ WireError::IdLength { .. }) => {
                inspection.rejected += 1;
                inspection.first_rejection.get_or_insert(err);
            }
            Err(framing) => return Err(framing),
        }
        return Ok(());
    }
    let children = shape.levels[depth];
    let mut index = 0;
    // The path to this message, for error messages. Copied into an array because `path` changes
    // while the fields are walked; a Vec clone here was an allocation per message.
    let mut at = [0usize; MAX_DEPTH];
    let depth_here = path.len().min(MAX_DEPTH);
    at[..depth_here].copy_from_slice(&path[..depth_here]);
    let describe = || render_path(shape, &at[..depth_here]);
    for field in Fields::new(msg, &describe) {
        let field = field?;
        if children.contains(&field.number) {
            if field.wire_type != WireType::Len {
                return Err(WireError::WireType {
                    path: describe(),
                    field: field.number,
                    wire_type: field.wire_type as u8,
                });
            }
            path.push(index);
            inspect_level(shape, depth + 1, field.payload, path, inspection)?;
            path.pop();
            index += 1;
        }
    }
    Ok(())
}

fn check_item(shape: &Shape, item: &[u8], path: &[usize]) -> Result<(), WireError> {
    let describe = || render_path(shape, path);
    for field in Fields::new(item, &describe) {
        let field = field?;
        if let Some((_, what, expected)) = shape.item_ids.iter().find(|(n, ..)| *n == field.number)
        {
            let got = field.payload.len();
            if field.wire_type != WireType::Len || (got != *expected && got != 0) {
                return Err(WireError::IdLength {
                    path: describe(),
                    what,
                    expected: *expected,
                    got,
                });
            }
        }
    }
    Ok(())
}

/// Counts the items of a request already validated by [`validate_and_count`], without allocating.
/// Malformed input counts as whatever could be framed.
pub fn count(signal: Signal, request: &[u8]) -> usize {
    count_levels(shape(signal).levels, request)
}

/// Splits a validated request after its first `n` items.
///
/// Returns the encoded head (exactly `min(n, total)` items) and the tail (the rest). Header fields
/// (resources, scopes, metric descriptors, schema urls) are copied into both halves wherever both
/// hold some of their children, so each half is a complete, self-describing request. Children that
/// hold no items (an empty scope, a metric without points) stay in the half where they appear.
pub fn split(signal: Signal, request: &[u8], n: usize) -> (Bytes, Bytes) {
    let mut head = BytesMut::with_capacity(request.len().min(1 << 20));
    let mut tail = BytesMut::new();
    let mut remaining = n;
    split_level(
        shape(signal).levels,
        request,
        &mut remaining,
        &mut head,
        &mut tail,
    );
    (head.freeze(), tail.freeze())
}

/// Splits one message's body into `head` and `tail`, consuming up to `remaining` items into head.
fn split_level(
    levels: &[&[u32]],
    msg: &[u8],
    remaining: &mut usize,
    head: &mut BytesMut,
    tail: &mut BytesMut,
) {
    let Some((children, rest)) = levels.split_first() else {
        return;
    };
    // Headers are written to a half only if that half gets children, so buffer them first.
    let no_path = String::new;
    let fields: Vec<Field<'_>> = Fields::new(msg, &no_path).map_while(Result::ok).collect();
    let mut head_children = BytesMut::new();
    let mut tail_children = BytesMut::new();
    for field in &fields {
        if !(children.contains(&field.number) && field.wire_type == WireType::Len) {
            continue;
        }
        if *remaining == 0 {
            tail_children.extend_from_slice(field.raw);
            continue;
        }
        let items = count_levels(rest, field.payload);
        if items <= *remaining {
            *remaining -= items;
            head_children.extend_from_slice(field.raw);
            continue;
        }
        // The split point falls inside this child.
        let mut child_head = BytesMut::new();
        let mut child_tail = BytesMut::new();
        split_level(
            rest,
            field.payload,
            remaining,
            &mut child_head,
            &mut child_tail,
        );
        put_len_header(&mut head_children, field.number, child_head.len());
        head_children.extend_from_slice(&child_head);
        put_len_header(&mut tail_children, field.number, child_tail.len());
        tail_children.extend_from_slice(&child_tail);
    }
    let headers = fields
        .iter()
        .filter(|f| !(children.contains(&f.number) && f.wire_type == WireType::Len));
    if !head_children.is_empty() {
        for f in headers.clone() {
            head.extend_from_slice(f.raw);
        }
        head.extend_from_slice(&head_children);
    }
    if !tail_children.is_empty() {
        for f in headers {
            tail.extend_from_slice(f.raw);
        }
        tail.extend_from_slice(&tail_children);
    }
}

fn count_levels(levels: &[&[u32]], msg: &[u8]) -> usize {
    let Some((children, rest)) = levels.split_first() else {
        return 1;
    };
    let no_path = String::new;
    Fields::new(msg, &no_path)
        .map_while(Result::ok)
        .filter(|f| children.contains(&f.number) && f.wire_type == WireType::Len)
        .map(|f| count_levels(rest, f.payload))
        .sum()
}

/// Rewrites the `resource` (field 1) of every top-level `Resource*` message of a validated request.
///
/// `rewrite` receives the encoded `Resource` (`None` when the message has none) and returns the
/// new encoding, or `None` to leave that message untouched. Everything else (scopes, items, schema
/// url) is copied verbatim: only the small resource message is ever decoded by the caller.
///
/// # Errors
/// Whatever `rewrite` returns.
pub fn rewrite_resources<E>(
    request: &[u8],
    mut rewrite: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Bytes, E> {
    let no_path = String::new;
    let mut out = BytesMut::with_capacity(request.len() + 64);
    for top in Fields::new(request, &no_path).map_while(Result::ok) {
        if top.number != 1 || top.wire_type != WireType::Len {
            out.extend_from_slice(top.raw);
            continue;
        }
        let inner: Vec<Field<'_>> = Fields::new(top.payload, &no_path)
            .map_while(Result::ok)
            .collect();
        // Proto3 merges repeated occurrences of a singular message field; OTLP encoders emit one.
        let resource = inner
            .iter()
            .rfind(|f| f.number == 1 && f.wire_type == WireType::Len)
            .map(|f| f.payload);
        let Some(new_resource) = rewrite(resource)? else {
            out.extend_from_slice(top.raw);
            continue;
        };
        let rest_len: usize = inner
            .iter()
            .filter(|f| f.number != 1)
            .map(|f| f.raw.len())
            .sum();
        let resource_field_len = 1 + varint_len(new_resource.len() as u64) + new_resource.len();
        put_len_header(&mut out, 1, resource_field_len + rest_len);
        put_len_header(&mut out, 1, new_resource.len());
        out.extend_from_slice(&new_resource);
        for f in inner.iter().filter(|f| f.number != 1) {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out.freeze())
}

/// Iterates over the top-level `Resource*` messages (field 1) of an encoded export request, still
/// encoded, so that exporters which must decode can decode one resource's data at a time instead
/// of the whole batch at once. Other fields are skipped; malformed framing ends the iteration
/// with an error.
pub fn resource_messages(request: &[u8]) -> impl Iterator<Item = Result<&[u8], WireError>> {
    let mut fields = Fields::new(request, &String::new);
    std::iter::from_fn(move || {
        loop {
            match fields.next()? {
                Ok(f) if f.number == 1 && f.wire_type == WireType::Len => {
                    return Some(Ok(f.payload));
                }
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    })
}

/// Iterates over the encoded `Resource` of each top-level `Resource*` message (`None` where absent).
pub fn resources(request: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let no_path = String::new;
    let tops: Vec<Field<'_>> = Fields::new(request, &no_path)
        .map_while(Result::ok)
        .filter(|f| f.number == 1 && f.wire_type == WireType::Len)
        .collect();
    tops.into_iter().map(|top| {
        let no_path = String::new;
        Fields::new(top.payload, &no_path)
            .map_while(Result::ok)
            .filter(|f| f.number == 1 && f.wire_type == WireType::Len)
            .last()
            .map(|f| f.payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_locate_values_and_read_fixed64() {
        // field 1 varint 150, field 7 fixed64 5, field 2 "hi", field 5 fixed32 9
        let mut m = vec![0x08, 0x96, 0x01, 0x39];
        m.extend_from_slice(&5u64.to_le_bytes());
        m.extend_from_slice(&[0x12, 2, b'h', b'i', 0x2d]);
        m.extend_from_slice(&9u32.to_le_bytes());
        let f: Vec<Field<'_>> = fields(&m).map(Result::unwrap).collect();
        assert_eq!(
            f.iter()
                .map(|f| (f.number, f.wire_type, f.value_start))
                .collect::<Vec<_>>(),
            [
                (1, WireType::Varint, 1),
                (7, WireType::Fixed64, 4),
                (2, WireType::Len, 14),
                (5, WireType::Fixed32, 17),
            ]
        );
        assert_eq!(f[1].fixed64(), Some(5));
        assert_eq!(f[0].fixed64(), None);
        assert_eq!(f[3].fixed64(), None);
        assert_eq!(f[2].payload, b"hi");
        assert_eq!(
            &m[f[1].value_start..f[1].value_start + 8],
            5u64.to_le_bytes()
        );
        // A truncated fixed64 is the last item, an error.
        let errors: Vec<_> = fields(&m[..8]).filter_map(Result::err).collect();
        assert_eq!(errors.len(), 1);
        assert!(fields(&m[..8]).last().unwrap().is_err());
    }
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;
    use prost::Message;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn span(i: u64) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: i.to_be_bytes().to_vec(),
            name: format!("span-{i}"),
            attributes: vec![kv("i", &i.to_string())],
            ..Default::default()
        }
    }

    fn traces_strategy() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let scope = (0usize..5, any::<bool>()).prop_map(|(n, named)| ScopeSpans {
            scope: named.then(|| InstrumentationScope {
                name: "lib".into(),
                ..Default::default()
            }),
            spans: (0..n as u64).map(span).collect(),
            schema_url: "s".into(),
        });
        let resource = (prop::collection::vec(scope, 0..4), any::<bool>()).prop_map(
            |(scope_spans, with_resource)| ResourceSpans {
                resource: with_resource.then(|| Resource {
                    attributes: vec![kv("service.name", "svc")],
                    ..Default::default()
                }),
                scope_spans,
                schema_url: "r".into(),
            },
        );
        prop::collection::vec(resource, 0..4)
            .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    fn metrics_strategy() -> impl Strategy<Value = ExportMetricsServiceRequest> {
        let metric = (0usize..4, 0u8..3).prop_map(|(n, kind)| {
            let points: Vec<NumberDataPoint> = (0..n)
                .map(|i| NumberDataPoint {
                    time_unix_nano: i as u64,
                    value: Some(number_data_point::Value::AsInt(i as i64)),
                    ..Default::default()
                })
                .collect();
            let data = match kind {
                0 => metric::Data::Gauge(Gauge {
                    data_points: points,
                }),
                1 => metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: 2,
                    is_monotonic: true,
                }),
                _ => metric::Data::Histogram(Histogram {
                    data_points: (0..n)
                        .map(|i| HistogramDataPoint {
                            count: i as u64,
                            bucket_counts: vec![1, 2],
                            explicit_bounds: vec![1.0],
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: 2,
                }),
            };
            Metric {
                name: "m".into(),
                unit: "s".into(),
                data: Some(data),
                ..Default::default()
            }
        });
        let scope = prop::collection::vec(metric, 0..4).prop_map(|metrics| ScopeMetrics {
            metrics,
            ..Default::default()
        });
        let resource =
            prop::collection::vec(scope, 0..3).prop_map(|scope_metrics| ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics,
                schema_url: String::new(),
            });
        prop::collection::vec(resource, 0..3)
            .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
    }

    fn metric_points(req: &ExportMetricsServiceRequest) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    match &m.data {
                        Some(metric::Data::Gauge(g)) => out.extend(
                            g.data_points
                                .iter()
                                .map(|p| ("g".to_owned(), p.time_unix_nano)),
                        ),
                        Some(metric::Data::Sum(s)) => out.extend(
                            s.data_points
                                .iter()
                                .map(|p| ("s".to_owned(), p.time_unix_nano)),
                        ),
                        Some(metric::Data::Histogram(h)) => {
                            out.extend(h.data_points.iter().map(|p| ("h".to_owned(), p.count)))
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }

    fn trace_items(req: &ExportTraceServiceRequest) -> Vec<(Option<Resource>, String, Span)> {
        req.resource_spans
            .iter()
            .flat_map(|rs| {
                rs.scope_spans.iter().flat_map(move |ss| {
                    ss.spans.iter().map(move |s| {
                        (
                            rs.resource.clone(),
                            ss.scope
                                .as_ref()
                                .map(|s| s.name.clone())
                                .unwrap_or_default(),
                            s.clone(),
                        )
                    })
                })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn walker_counts_spans_like_prost(req in traces_strategy()) {
            let bytes = req.encode_to_vec();
            let expected: usize = trace_items(&req).len();
            prop_assert_eq!(validate_and_count(Signal::Traces, &bytes).unwrap(), expected);
            prop_assert_eq!(count(Signal::Traces, &bytes), expected);
        }

        #[test]
        fn split_keeps_every_span_once_with_its_resource_and_scope(req in traces_strategy(), n in 0usize..20) {
            let bytes = req.encode_to_vec();
            let total = count(Signal::Traces, &bytes);
            let (head, tail) = split(Signal::Traces, &bytes, n);
            let head_req = ExportTraceServiceRequest::decode(head.clone()).unwrap();
            let tail_req = ExportTraceServiceRequest::decode(tail.clone()).unwrap();
            prop_assert_eq!(count(Signal::Traces, &head), n.min(total));
            prop_assert_eq!(count(Signal::Traces, &tail), total - n.min(total));
            let mut joined = trace_items(&head_req);
            joined.extend(trace_items(&tail_req));
            prop_assert_eq!(joined, trace_items(&req));
        }

        #[test]
        fn merging_is_concatenation(a in traces_strategy(), b in traces_strategy()) {
            let mut bytes = a.encode_to_vec();
            bytes.extend(b.encode_to_vec());
            let merged = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let mut expected = a.resource_spans.clone();
            expected.extend(b.resource_spans.clone());
            prop_assert_eq!(merged.resource_spans, expected);
        }

        #[test]
        fn split_metrics_at_data_points(req in metrics_strategy(), n in 0usize..30) {
            let bytes = req.encode_to_vec();
            let points = metric_points(&req);
            prop_assert_eq!(validate_and_count(Signal::Metrics, &bytes).unwrap(), points.len());
            let (head, tail) = split(Signal::Metrics, &bytes, n);
            prop_assert_eq!(count(Signal::Metrics, &head), n.min(points.len()));
            let mut joined = metric_points(&ExportMetricsServiceRequest::decode(head).unwrap());
            joined.extend(metric_points(&ExportMetricsServiceRequest::decode(tail).unwrap()));
            prop_assert_eq!(joined, points);
        }

        #[test]
        fn rewrite_resources_matches_prost(req in traces_strategy()) {
            let bytes = req.encode_to_vec();
            let out = rewrite_resources::<()>(&bytes, |r| {
                let mut res = r.map(|r| Resource::decode(r).unwrap()).unwrap_or_default();
                res.attributes.push(kv("added", "yes"));
                Ok(Some(res.encode_to_vec()))
            }).unwrap();
            let mut expected = req.clone();
            for rs in &mut expected.resource_spans {
                rs.resource.get_or_insert_with(Resource::default).attributes.push(kv("added", "yes"));
            }
            prop_assert_eq!(ExportTraceServiceRequest::decode(out).unwrap(), expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for signal in Signal::ALL {
                let _ = validate_and_count(signal, &bytes);
                let _ = split(signal, &bytes, 3);
                let _ = count(signal, &bytes);
            }
        }
    }

    #[test]
    fn counts_log_records() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 3],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            validate_and_count(Signal::Logs, &req.encode_to_vec()).unwrap(),
            3
        );
    }

    #[test]
    fn rejects_span_id_of_wrong_length() {
        let mut s = span(1);
        s.span_id = vec![1, 2, 3];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(0), s],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let err = validate_and_count(Signal::Traces, &req.encode_to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_spans[0].scope_spans[0].spans[1]: span_id must be 8 bytes, got 3"
        );
    }

    #[test]
    fn inspect_rejects_only_the_bad_items_and_retain_drops_them() {
        let mut bad = span(1);
        bad.trace_id = vec![1; 15];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(0), bad, span(2)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        let i = inspect(Signal::Traces, &bytes).unwrap();
        assert_eq!((i.items, i.rejected), (2, 1));
        let kept = ExportTraceServiceRequest::decode(retain_valid(Signal::Traces, &bytes)).unwrap();
        let names: Vec<_> = kept.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["span-0", "span-2"]);
    }

    #[test]
    fn rejects_truncated_request_naming_the_field() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::default(); 1],
        };
        let mut bytes = req.encode_to_vec();
        bytes.extend_from_slice(&[0x0a, 0x05, 0x01]);
        let err = validate_and_count(Signal::Traces, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Truncated {
                    field: 1,
                    len: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
