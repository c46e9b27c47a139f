//! Item-level access to encoded batches: read resources, scopes, metrics and items (spans, span
//! events and links, log records, metric data points) where they lie in the request's bytes, and
//! edit a batch (drop, keep or rewrite at any level, or split it into one batch per key) without
//! decoding what is not touched.
//!
//! Views borrow the request: every accessor walks the protobuf fields of one small message and
//! returns slices of it, so a processor that only reads (a sampler looking at trace ids and
//! status codes, a router looking at one resource attribute) allocates nothing. Accessors expect
//! a request the intake accepted (see [`crate::wire::inspect`]); on malformed bytes they return
//! defaults, never panic. Singular fields follow protobuf's rule that the last occurrence wins.
//!
//! Edits go through [`Batch::edit`](crate::Batch::edit), [`Batch::retain`](crate::Batch::retain)
//! and [`Batch::group_by`](crate::Batch::group_by) (see [`edit`]).

pub mod edit;
#[cfg(test)]
mod tests;

pub use edit::{Editor, Reach, Verdict};

use prost::Message;

use crate::wire;

/// One field as the scanner reads it.
#[derive(Clone, Copy)]
pub(crate) struct Scanned<'a> {
    pub(crate) number: u32,
    pub(crate) wire_type: u8,
    /// The value: the payload of a length-delimited field, the bytes of a fixed one, the
    /// encoded varint.
    pub(crate) value: &'a [u8],
    /// The whole field, tag included.
    pub(crate) raw: &'a [u8],
}

impl Scanned<'_> {
    fn fixed64(&self) -> Option<u64> {
        (self.wire_type == 1).then(|| u64::from_le_bytes(self.value.try_into().unwrap_or_default()))
    }

    fn fixed32(&self) -> Option<u32> {
        (self.wire_type == 5).then(|| u32::from_le_bytes(self.value.try_into().unwrap_or_default()))
    }

    fn varint(&self) -> Option<u64> {
        (self.wire_type == 0).then(|| wire::read_varint(self.value, &mut 0).unwrap_or(0))
    }
}

/// The fields of a message, read without the error reporting of [`wire::fields`]: the views read
/// requests the intake already checked, and on malformed bytes the scan just ends.
#[derive(Clone)]
pub(crate) struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Scan<'a> {
    type Item = Scanned<'a>;

    #[inline]
    fn next(&mut self) -> Option<Scanned<'a>> {
        let buf = self.buf;
        let start = self.pos;
        let mut pos = start;
        let key = wire::read_varint(buf, &mut pos).filter(|_| start < buf.len());
        let Some(key) = key else {
            self.pos = buf.len();
            return None;
        };
        let wire_type = (key & 7) as u8;
        let mut value_start = pos;
        let end = match wire_type {
            0 => wire::read_varint(buf, &mut pos).map(|_| pos),
            1 => pos.checked_add(8),
            5 => pos.checked_add(4),
            2 => wire::read_varint(buf, &mut pos).and_then(|len| {
                value_start = pos;
                usize::try_from(len)
                    .ok()
                    .and_then(|len| pos.checked_add(len))
            }),
            _ => None,
        };
        let number = u32::try_from(key >> 3).unwrap_or(0);
        match end {
            Some(end) if end <= buf.len() && number != 0 => {
                self.pos = end;
                Some(Scanned {
                    number,
                    wire_type,
                    value: &buf[value_start..end],
                    raw: &buf[start..end],
                })
            }
            _ => {
                self.pos = buf.len();
                None
            }
        }
    }
}

pub(crate) fn each(msg: &[u8]) -> Scan<'_> {
    Scan { buf: msg, pos: 0 }
}

/// The payload of the last length-delimited field `number`.
fn last_len(msg: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    for f in each(msg) {
        if f.number == number && f.wire_type == 2 {
            found = Some(f.value);
        }
    }
    found
}

fn string(msg: &[u8], number: u32) -> &str {
    last_len(msg, number)
        .and_then(|s| std::str::from_utf8(s).ok())
        .unwrap_or_default()
}

fn bytes(msg: &[u8], number: u32) -> &[u8] {
    last_len(msg, number).unwrap_or_default()
}

fn varint(msg: &[u8], number: u32) -> u64 {
    each(msg)
        .filter(|f| f.number == number)
        .filter_map(|f| f.varint())
        .last()
        .unwrap_or(0)
}

fn fixed64(msg: &[u8], number: u32) -> u64 {
    each(msg)
        .filter(|f| f.number == number)
        .filter_map(|f| f.fixed64())
        .last()
        .unwrap_or(0)
}

fn fixed32(msg: &[u8], number: u32) -> u32 {
    each(msg)
        .filter(|f| f.number == number)
        .filter_map(|f| f.fixed32())
        .last()
        .unwrap_or(0)
}

/// The messages of the repeated field `number`.
fn repeated(msg: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    each(msg)
        .filter(move |f| f.number == number && f.wire_type == 2)
        .map(|f| f.value)
}

fn key_values(msg: &[u8], number: u32) -> impl Iterator<Item = KeyValue<'_>> {
    repeated(msg, number).map(KeyValue)
}

/// Decodes a view's message with prost, for an edit; a message the intake accepted decodes.
fn decode<M: Message + Default>(raw: &[u8]) -> M {
    M::decode(raw).unwrap_or_default()
}

/// A `string` field, borrowed from the request: its bytes as they lie, checked for UTF-8 only
/// when read as a `str`, so that code matching bytes (a key compared with a name, a value scanned
/// for patterns) does not pay for the check. The intake refuses strings that are not UTF-8 (see
/// [`crate::wire::inspect`]); should one reach a view anyway, it reads as `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Str<'a>(&'a [u8]);

impl<'a> Str<'a> {
    /// The string.
    #[inline]
    pub fn as_str(&self) -> &'a str {
        std::str::from_utf8(self.0).unwrap_or_default()
    }

    /// The bytes, unchecked.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Str<'a> {
        Str(s.as_bytes())
    }
}

impl PartialEq<str> for Str<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// One attribute: an encoded `KeyValue`.
#[derive(Debug, Clone, Copy)]
pub struct KeyValue<'a>(&'a [u8]);

impl<'a> KeyValue<'a> {
    /// The key.
    pub fn key(&self) -> &'a str {
        string(self.0, 1)
    }

    /// Whether the key is `key` (bytes compared, no UTF-8 check).
    pub fn has_key(&self, key: &str) -> bool {
        bytes(self.0, 1) == key.as_bytes()
    }

    /// The key and the value, in one pass over the attribute.
    pub fn parts(&self) -> (Str<'a>, AnyValue<'a>) {
        // The common encoding, read without the general scanner: the key (field 1), then the
        // value (field 2), each shorter than 128 bytes, and nothing else.
        let b = self.0;
        if let [0x0a, key_len, rest @ ..] = b
            && *key_len < 0x80
            && let Some((key, [0x12, value_len, value @ ..])) =
                rest.split_at_checked(usize::from(*key_len))
            && *value_len < 0x80
            && value.len() == usize::from(*value_len)
        {
            return (Str(key), AnyValue::read(value));
        }
        let (mut key, mut value) = (&[][..], None);
        for f in each(self.0) {
            match (f.number, f.wire_type) {
                (1, 2) => key = f.value,
                (2, 2) => value = Some(f.value),
                _ => {}
            }
        }
        (Str(key), value.map_or(AnyValue::Empty, AnyValue::read))
    }

    /// The value.
    pub fn value(&self) -> AnyValue<'a> {
        last_len(self.0, 2).map_or(AnyValue::Empty, AnyValue::read)
    }

    /// The encoded `KeyValue`.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }
}

/// An attribute value, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValue<'a> {
    /// No value set.
    Empty,
    /// `string_value`.
    String(Str<'a>),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value`: an encoded `ArrayValue`; see [`AnyValue::array`].
    Array(&'a [u8]),
    /// `kvlist_value`: an encoded `KeyValueList`; see [`AnyValue::entries`].
    Kvlist(&'a [u8]),
}

impl<'a> AnyValue<'a> {
    /// Reads an encoded `AnyValue`; the last member of the oneof present wins.
    pub fn read(raw: &'a [u8]) -> AnyValue<'a> {
        // The common encodings, one member and nothing else, read without the general scanner.
        match raw {
            [0x0a, len, s @ ..] if *len < 0x80 && s.len() == usize::from(*len) => {
                return AnyValue::String(Str(s));
            }
            [0x21, rest @ ..] if rest.len() == 8 => {
                let bits = u64::from_le_bytes(rest.try_into().unwrap_or_default());
                return AnyValue::Double(f64::from_bits(bits));
            }
            [tag @ (0x10 | 0x18), rest @ ..] if !rest.is_empty() => {
                let mut pos = 0;
                if let Some(v) = wire::read_varint(rest, &mut pos)
                    && pos == rest.len()
                {
                    return if *tag == 0x10 {
                        AnyValue::Bool(v != 0)
                    } else {
                        AnyValue::Int(v as i64)
                    };
                }
            }
            _ => {}
        }
        let mut value = AnyValue::Empty;
        for f in each(raw) {
            value = match (f.number, f.wire_type) {
                (1, 2) => AnyValue::String(Str(f.value)),
                (2, 0) => AnyValue::Bool(f.varint().unwrap_or(0) != 0),
                (3, 0) => AnyValue::Int(f.varint().unwrap_or(0) as i64),
                (4, 1) => AnyValue::Double(f64::from_bits(f.fixed64().unwrap_or(0))),
                (5, 2) => AnyValue::Array(f.value),
                (6, 2) => AnyValue::Kvlist(f.value),
                (7, 2) => AnyValue::Bytes(f.value),
                _ => value,
            };
        }
        value
    }

    /// The string, for a `string_value`.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValue::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The elements of an `array_value` (none for other values).
    pub fn array(&self) -> impl Iterator<Item = AnyValue<'a>> + use<'a> {
        let raw = match self {
            AnyValue::Array(raw) => *raw,
            _ => &[],
        };
        repeated(raw, 1).map(AnyValue::read)
    }

    /// The entries of a `kvlist_value` (none for other values).
    pub fn entries(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        let raw = match self {
            AnyValue::Kvlist(raw) => *raw,
            _ => &[],
        };
        key_values(raw, 1)
    }
}

/// The first attribute named `key` among `attributes`.
fn find<'a>(mut attributes: impl Iterator<Item = KeyValue<'a>>, key: &str) -> Option<AnyValue<'a>> {
    attributes.find(|kv| kv.has_key(key)).map(|kv| kv.value())
}

/// A `ResourceSpans`, `ResourceMetrics` or `ResourceLogs` message.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a>(pub(crate) &'a [u8]);

impl<'a> Resource<'a> {
    /// The encoded `Resource*` message.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// The encoded `Resource` (empty when absent).
    pub fn resource(&self) -> &'a [u8] {
        bytes(self.0, 1)
    }

    /// The resource's attributes.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.resource(), 1)
    }

    /// The resource attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
        find(self.attributes(), key)
    }

    /// `schema_url`.
    pub fn schema_url(&self) -> &'a str {
        string(self.0, 3)
    }

    /// The resource decoded, to change it and hand back with [`Verdict::resource`].
    pub fn decode(&self) -> opentelemetry_proto::tonic::resource::v1::Resource {
        decode(self.resource())
    }
}

/// A `ScopeSpans`, `ScopeMetrics` or `ScopeLogs` message.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a>(pub(crate) &'a [u8]);

impl<'a> Scope<'a> {
    /// The encoded `Scope*` message.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// The encoded `InstrumentationScope` (empty when absent).
    pub fn scope(&self) -> &'a [u8] {
        bytes(self.0, 1)
    }

    /// The scope's name.
    pub fn name(&self) -> &'a str {
        string(self.scope(), 1)
    }

    /// The scope's version.
    pub fn version(&self) -> &'a str {
        string(self.scope(), 2)
    }

    /// The scope's attributes.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.scope(), 3)
    }

    /// `schema_url`.
    pub fn schema_url(&self) -> &'a str {
        string(self.0, 3)
    }

    /// The scope decoded, to change it and hand back with [`Verdict::scope`].
    pub fn decode(&self) -> opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        decode(self.scope())
    }
}

/// The kind of a metric: which member of `Metric.data` it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `gauge` (field 5).
    Gauge,
    /// `sum` (field 7).
    Sum,
    /// `histogram` (field 9).
    Histogram,
    /// `exponential_histogram` (field 10).
    ExponentialHistogram,
    /// `summary` (field 11).
    Summary,
}

impl MetricKind {
    pub(crate) fn from_field(number: u32) -> Option<MetricKind> {
        Some(match number {
            5 => MetricKind::Gauge,
            7 => MetricKind::Sum,
            9 => MetricKind::Histogram,
            10 => MetricKind::ExponentialHistogram,
            11 => MetricKind::Summary,
            _ => return None,
        })
    }

    fn field(self) -> u32 {
        match self {
            MetricKind::Gauge => 5,
            MetricKind::Sum => 7,
            MetricKind::Histogram => 9,
            MetricKind::ExponentialHistogram => 10,
            MetricKind::Summary => 11,
        }
    }
}

/// A `Metric` message.
#[derive(Debug, Clone, Copy)]
pub struct Metric<'a>(pub(crate) &'a [u8]);

impl<'a> Metric<'a> {
    /// The encoded `Metric`.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// `name`.
    pub fn name(&self) -> &'a str {
        string(self.0, 1)
    }

    /// `description`.
    pub fn description(&self) -> &'a str {
        string(self.0, 2)
    }

    /// `unit`.
    pub fn unit(&self) -> &'a str {
        string(self.0, 3)
    }

    /// Which kind of data it holds (`None` for a metric without data).
    pub fn kind(&self) -> Option<MetricKind> {
        each(self.0)
            .filter(|f| f.wire_type == 2)
            .filter_map(|f| MetricKind::from_field(f.number))
            .last()
    }

    /// `aggregation_temporality` of a sum, histogram or exponential histogram (0 otherwise).
    pub fn temporality(&self) -> i32 {
        match self.kind() {
            Some(
                k @ (MetricKind::Sum | MetricKind::Histogram | MetricKind::ExponentialHistogram),
            ) => varint(bytes(self.0, k.field()), 2) as i32,
            _ => 0,
        }
    }

    /// `is_monotonic` of a sum.
    pub fn is_monotonic(&self) -> bool {
        self.kind() == Some(MetricKind::Sum) && varint(bytes(self.0, 7), 3) != 0
    }

    /// `metadata`.
    pub fn metadata(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 12)
    }
}

/// A `Span` message.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a>(pub(crate) &'a [u8]);

impl<'a> Span<'a> {
    /// The encoded `Span`.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// `trace_id` (16 bytes in an accepted request).
    pub fn trace_id(&self) -> &'a [u8] {
        bytes(self.0, 1)
    }

    /// `span_id` (8 bytes in an accepted request).
    pub fn span_id(&self) -> &'a [u8] {
        bytes(self.0, 2)
    }

    /// `trace_state`.
    pub fn trace_state(&self) -> &'a str {
        string(self.0, 3)
    }

    /// `parent_span_id` (empty for a root span).
    pub fn parent_span_id(&self) -> &'a [u8] {
        bytes(self.0, 4)
    }

    /// `flags`.
    pub fn flags(&self) -> u32 {
        fixed32(self.0, 16)
    }

    /// `name`.
    pub fn name(&self) -> &'a str {
        string(self.0, 5)
    }

    /// `kind` (`SpanKind`: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub fn kind(&self) -> i32 {
        varint(self.0, 6) as i32
    }

    /// `start_time_unix_nano`.
    pub fn start_time_unix_nano(&self) -> u64 {
        fixed64(self.0, 7)
    }

    /// `end_time_unix_nano`.
    pub fn end_time_unix_nano(&self) -> u64 {
        fixed64(self.0, 8)
    }

    /// The span's duration in nanoseconds (zero when it ends before it starts).
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano()
            .saturating_sub(self.start_time_unix_nano())
    }

    /// `attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 9)
    }

    /// The span attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
        find(self.attributes(), key)
    }

    /// `events`.
    pub fn events(&self) -> impl Iterator<Item = SpanEvent<'a>> + use<'a> {
        repeated(self.0, 11).map(SpanEvent)
    }

    /// `links`.
    pub fn links(&self) -> impl Iterator<Item = SpanLink<'a>> + use<'a> {
        repeated(self.0, 13).map(SpanLink)
    }

    /// `status.code` (`StatusCode`: 0 unset, 1 ok, 2 error).
    pub fn status_code(&self) -> i32 {
        varint(bytes(self.0, 15), 3) as i32
    }

    /// `status.message`.
    pub fn status_message(&self) -> &'a str {
        string(bytes(self.0, 15), 2)
    }

    /// The fields a sampler or router reads, in one pass over the span instead of one per
    /// accessor.
    pub fn summary(&self) -> SpanSummary<'a> {
        let mut out = SpanSummary::default();
        for f in each(self.0) {
            match (f.number, f.wire_type) {
                (1, 2) => out.trace_id = f.value,
                (2, 2) => out.span_id = f.value,
                (4, 2) => out.parent_span_id = f.value,
                (5, 2) => out.name = std::str::from_utf8(f.value).unwrap_or_default(),
                (6, 0) => out.kind = f.varint().unwrap_or(0) as i32,
                (7, 1) => out.start_time_unix_nano = f.fixed64().unwrap_or(0),
                (8, 1) => out.end_time_unix_nano = f.fixed64().unwrap_or(0),
                (15, 2) => {
                    out.status_code = varint(f.value, 3) as i32;
                    out.status_message = string(f.value, 2);
                }
                _ => {}
            }
        }
        out
    }

    /// The span decoded, to change it and hand back with [`Verdict::replace`].
    pub fn decode(&self) -> opentelemetry_proto::tonic::trace::v1::Span {
        decode(self.0)
    }

    /// The span's name, kind, attributes, events, links and status message in one pass, in the
    /// order they are encoded: for a reader that visits them all (a redactor) without a pass per
    /// accessor.
    pub fn parts(&self) -> impl Iterator<Item = SpanPart<'a>> + use<'a> {
        each(self.0).map(|f| match (f.number, f.wire_type) {
            (5, 2) => SpanPart::Name(Str(f.value)),
            (6, 0) => SpanPart::Kind(f.varint().unwrap_or(0) as i32),
            (9, 2) => SpanPart::Attribute(KeyValue(f.value)),
            (11, 2) => SpanPart::Event(SpanEvent(f.value)),
            (13, 2) => SpanPart::Link(SpanLink(f.value)),
            (15, 2) => SpanPart::StatusMessage(Str(bytes(f.value, 2))),
            _ => SpanPart::Other,
        })
    }
}

/// One field of a span, as [`Span::parts`] reads it.
#[derive(Debug, Clone, Copy)]
pub enum SpanPart<'a> {
    /// `name`.
    Name(Str<'a>),
    /// `kind`.
    Kind(i32),
    /// One of `attributes`.
    Attribute(KeyValue<'a>),
    /// One of `events`.
    Event(SpanEvent<'a>),
    /// One of `links`.
    Link(SpanLink<'a>),
    /// `status.message`.
    StatusMessage(Str<'a>),
    /// Any other field.
    Other,
}

/// What [`Span::summary`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanSummary<'a> {
    /// `trace_id`.
    pub trace_id: &'a [u8],
    /// `span_id`.
    pub span_id: &'a [u8],
    /// `parent_span_id`.
    pub parent_span_id: &'a [u8],
    /// `name`.
    pub name: &'a str,
    /// `kind`.
    pub kind: i32,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// `status.code`.
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a str,
}

/// A `Span.Event` message.
#[derive(Debug, Clone, Copy)]
pub struct SpanEvent<'a>(&'a [u8]);

impl<'a> SpanEvent<'a> {
    /// The encoded event.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// `time_unix_nano`.
    pub fn time_unix_nano(&self) -> u64 {
        fixed64(self.0, 1)
    }

    /// `name`.
    pub fn name(&self) -> &'a str {
        string(self.0, 2)
    }

    /// `attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 3)
    }
}

/// A `Span.Link` message.
#[derive(Debug, Clone, Copy)]
pub struct SpanLink<'a>(&'a [u8]);

impl<'a> SpanLink<'a> {
    /// The encoded link.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// `trace_id`.
    pub fn trace_id(&self) -> &'a [u8] {
        bytes(self.0, 1)
    }

    /// `span_id`.
    pub fn span_id(&self) -> &'a [u8] {
        bytes(self.0, 2)
    }

    /// `trace_state`.
    pub fn trace_state(&self) -> &'a str {
        string(self.0, 3)
    }

    /// `attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 4)
    }
}

/// A `LogRecord` message.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a>(pub(crate) &'a [u8]);

impl<'a> LogRecord<'a> {
    /// The encoded `LogRecord`.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// `time_unix_nano`.
    pub fn time_unix_nano(&self) -> u64 {
        fixed64(self.0, 1)
    }

    /// `observed_time_unix_nano`.
    pub fn observed_time_unix_nano(&self) -> u64 {
        fixed64(self.0, 11)
    }

    /// `severity_number` (1 to 24; 0 unspecified).
    pub fn severity_number(&self) -> i32 {
        varint(self.0, 2) as i32
    }

    /// `severity_text`.
    pub fn severity_text(&self) -> &'a str {
        string(self.0, 3)
    }

    /// `body`.
    pub fn body(&self) -> AnyValue<'a> {
        last_len(self.0, 5).map_or(AnyValue::Empty, AnyValue::read)
    }

    /// `attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 6)
    }

    /// The log attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
        find(self.attributes(), key)
    }

    /// `flags`.
    pub fn flags(&self) -> u32 {
        fixed32(self.0, 8)
    }

    /// `trace_id` (empty when the record is not tied to a trace).
    pub fn trace_id(&self) -> &'a [u8] {
        bytes(self.0, 9)
    }

    /// `span_id`.
    pub fn span_id(&self) -> &'a [u8] {
        bytes(self.0, 10)
    }

    /// `event_name`.
    pub fn event_name(&self) -> &'a str {
        string(self.0, 12)
    }

    /// The record decoded, to change it and hand back with [`Verdict::replace`].
    pub fn decode(&self) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
        decode(self.0)
    }
}

/// A metric data point of any kind.
#[derive(Debug, Clone, Copy)]
pub struct DataPoint<'a> {
    pub(crate) raw: &'a [u8],
    pub(crate) kind: MetricKind,
}

impl<'a> DataPoint<'a> {
    /// The point decoded by its kind, its attributes and exemplars (none for summaries) handed
    /// to `edit`: the new encoding when `edit` says it changed them, `None` when it did not (or
    /// the point does not decode, which the intake's check rules out).
    pub fn edit(
        &self,
        edit: impl FnOnce(
            &mut Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
            &mut [opentelemetry_proto::tonic::metrics::v1::Exemplar],
        ) -> bool,
    ) -> Option<Vec<u8>> {
        use opentelemetry_proto::tonic::metrics::v1 as m;
        fn with<M: Message + Default>(
            raw: &[u8],
            parts: impl FnOnce(&mut M) -> bool,
        ) -> Option<Vec<u8>> {
            let mut point = M::decode(raw).ok()?;
            parts(&mut point).then(|| point.encode_to_vec())
        }
        match self.kind() {
            MetricKind::Gauge | MetricKind::Sum => {
                with(self.raw(), |p: &mut m::NumberDataPoint| {
                    edit(&mut p.attributes, &mut p.exemplars)
                })
            }
            MetricKind::Histogram => with(self.raw(), |p: &mut m::HistogramDataPoint| {
                edit(&mut p.attributes, &mut p.exemplars)
            }),
            MetricKind::ExponentialHistogram => {
                with(self.raw(), |p: &mut m::ExponentialHistogramDataPoint| {
                    edit(&mut p.attributes, &mut p.exemplars)
                })
            }
            MetricKind::Summary => with(self.raw(), |p: &mut m::SummaryDataPoint| {
                edit(&mut p.attributes, &mut [])
            }),
        }
    }

    /// The encoded point (`NumberDataPoint`, `HistogramDataPoint`, ...).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The kind of its metric, which tells its message type.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    fn attributes_field(&self) -> u32 {
        match self.kind {
            MetricKind::Gauge | MetricKind::Sum | MetricKind::Summary => 7,
            MetricKind::Histogram => 9,
            MetricKind::ExponentialHistogram => 1,
        }
    }

    /// `attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.raw, self.attributes_field())
    }

    /// The point attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
        find(self.attributes(), key)
    }

    /// `start_time_unix_nano`.
    pub fn start_time_unix_nano(&self) -> u64 {
        fixed64(self.raw, 2)
    }

    /// `time_unix_nano`.
    pub fn time_unix_nano(&self) -> u64 {
        fixed64(self.raw, 3)
    }

    /// The value of a gauge or sum point, as a float (`as_int` converted).
    pub fn number(&self) -> Option<f64> {
        if !matches!(self.kind, MetricKind::Gauge | MetricKind::Sum) {
            return None;
        }
        each(self.raw)
            .filter_map(|f| match (f.number, f.fixed64()) {
                (4, Some(bits)) => Some(f64::from_bits(bits)),
                (6, Some(int)) => Some(int as i64 as f64),
                _ => None,
            })
            .last()
    }

    /// `count` of a histogram, exponential histogram or summary point.
    pub fn count(&self) -> Option<u64> {
        (!matches!(self.kind, MetricKind::Gauge | MetricKind::Sum)).then(|| fixed64(self.raw, 4))
    }

    /// `sum` of a histogram, exponential histogram or summary point, when set.
    pub fn sum(&self) -> Option<f64> {
        if matches!(self.kind, MetricKind::Gauge | MetricKind::Sum) {
            return None;
        }
        each(self.raw)
            .filter(|f| f.number == 5)
            .filter_map(|f| f.fixed64())
            .last()
            .map(f64::from_bits)
    }

    /// The attributes of the point's exemplars (`filtered_attributes`), one iterator per exemplar.
    pub fn exemplars(&self) -> impl Iterator<Item = Exemplar<'a>> + use<'a> {
        let field = match self.kind {
            MetricKind::Gauge | MetricKind::Sum => 5,
            MetricKind::Histogram => 8,
            MetricKind::ExponentialHistogram => 11,
            // Summaries have no exemplars: field 0 matches nothing.
            MetricKind::Summary => 0,
        };
        repeated(self.raw, field).map(Exemplar)
    }
}

/// An `Exemplar` message.
#[derive(Debug, Clone, Copy)]
pub struct Exemplar<'a>(&'a [u8]);

impl<'a> Exemplar<'a> {
    /// `filtered_attributes`.
    pub fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + use<'a> {
        key_values(self.0, 7)
    }

    /// `trace_id`.
    pub fn trace_id(&self) -> &'a [u8] {
        bytes(self.0, 5)
    }

    /// `span_id`.
    pub fn span_id(&self) -> &'a [u8] {
        bytes(self.0, 4)
    }
}

/// One item of a batch: the unit the `otelcol_*_items` metrics count.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A span, in a traces batch.
    Span(Span<'a>),
    /// A log record, in a logs batch.
    Log(LogRecord<'a>),
    /// A metric data point, in a metrics batch.
    Point(DataPoint<'a>),
}

impl<'a> Item<'a> {
    /// The encoded item.
    pub fn raw(&self) -> &'a [u8] {
        match self {
            Item::Span(s) => s.raw(),
            Item::Log(l) => l.raw(),
            Item::Point(p) => p.raw(),
        }
    }

    /// The item's own attributes.
    pub fn attributes(&self) -> Box<dyn Iterator<Item = KeyValue<'a>> + 'a> {
        match self {
            Item::Span(s) => Box::new(s.attributes()),
            Item::Log(l) => Box::new(l.attributes()),
            Item::Point(p) => Box::new(p.attributes()),
        }
    }

    /// The item's trace id: a span's, or a log record's (empty when it has none, and for data
    /// points).
    pub fn trace_id(&self) -> &'a [u8] {
        match self {
            Item::Span(s) => s.trace_id(),
            Item::Log(l) => l.trace_id(),
            Item::Point(_) => &[],
        }
    }

    /// The span, for a traces batch.
    pub fn as_span(&self) -> Option<&Span<'a>> {
        match self {
            Item::Span(s) => Some(s),
            _ => None,
        }
    }

    /// The log record, for a logs batch.
    pub fn as_log(&self) -> Option<&LogRecord<'a>> {
        match self {
            Item::Log(l) => Some(l),
            _ => None,
        }
    }

    /// The data point, for a metrics batch.
    pub fn as_point(&self) -> Option<&DataPoint<'a>> {
        match self {
            Item::Point(p) => Some(p),
            _ => None,
        }
    }
}

/// Where an item sits: its resource, its scope and, for a data point, its metric.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The `Resource*` message holding the item.
    pub resource: Resource<'a>,
    /// The `Scope*` message holding the item.
    pub scope: Scope<'a>,
    /// The metric, for a data point.
    pub metric: Option<Metric<'a>>,
}
