//! A protobuf wire-format walker for OTLP export requests.
//!
//! Batches stay encoded as `Export*ServiceRequest` bytes from receiver to exporter. An export
//! request is nothing but a repeated `Resource*` field, so the walker only needs to know, for each
//! nesting level, which field numbers hold the children that lead to the countable items (spans,
//! metric data points, log records). Everything else at a level is "header" and is copied verbatim.
//! This is enough to validate, count and split requests without decoding a single attribute
//! (item-level reading and editing is [`crate::view`]'s); property tests prove it agrees with prost (see the tests at the end).

mod decodable;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Signal;
use crate::schema::{MessageDesc as Msg, request_for};

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
    #[error("{path}: invalid field number (zero, or a key past 32 bits)")]
    FieldZero {
        /// Where in the message.
        path: String,
    },
    /// A required trace or span id that is absent, empty or all zeros (the OTLP specification
    /// calls such ids invalid).
    #[error("{path}: {what} is required and must not be empty or all zeros")]
    MissingId {
        /// Where in the message.
        path: String,
        /// Which id (`trace_id`, `span_id`).
        what: &'static str,
    },
    /// A field inside an item, resource or scope that the protobuf decoders would refuse.
    #[error("{path}: {problem}")]
    Undecodable {
        /// Where in the message, down to the field.
        path: String,
        /// What is wrong with it.
        problem: FieldProblem,
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

/// Why a field would not decode (see [`WireError::Undecodable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// A `string` field whose bytes are not UTF-8 (proto3 and prost require it).
    #[error("string is not valid UTF-8")]
    NotUtf8,
    /// A known field sent with a wire type its type cannot have.
    #[error("sent as {got} where the schema has {expected}")]
    WrongWireType {
        /// What the schema requires.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// Messages nested deeper than the protobuf decoders accept.
    #[error("nested deeper than the {limit} levels protobuf decoders accept")]
    TooDeep {
        /// The decoders' recursion limit.
        limit: u32,
    },
    /// A packed repeated field that is not a whole number of values.
    #[error("packed repeated field is not a whole number of values")]
    Packed,
    /// A varint that runs past its buffer, over ten bytes or past 64 bits.
    #[error("malformed varint")]
    Varint,
    /// A value longer than what remains of its message.
    #[error("value runs past the end of its message")]
    Truncated,
    /// A wire type protobuf does not define, or a group.
    #[error("invalid wire type {0}")]
    InvalidWireType(u8),
    /// Field number zero, or a key past 32 bits.
    #[error("invalid field number")]
    FieldNumber,
}

/// The protobuf wire types this walker understands (groups are refused as malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// Wire type 0.
    Varint = 0,
    /// Wire type 1: eight little-endian bytes.
    Fixed64 = 1,
    /// Wire type 2: a length-prefixed message, string, bytes or packed repeated field.
    Len = 2,
    /// Wire type 5: four little-endian bytes.
    Fixed32 = 5,
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

    /// The value of a `fixed32` field, `None` for other wire types.
    pub fn fixed32(&self) -> Option<u32> {
        let bytes = self.raw.last_chunk::<4>()?;
        (self.wire_type == WireType::Fixed32).then(|| u32::from_le_bytes(*bytes))
    }

    /// The value of a varint field, `None` for other wire types.
    pub fn varint(&self) -> Option<u64> {
        if self.wire_type != WireType::Varint {
            return None;
        }
        let mut pos = 0;
        read_varint(self.raw, &mut pos)?;
        read_varint(self.raw, &mut pos)
    }
}

/// The fields of one encoded message, each framed and checked (tag, wire type, length) as it is
/// read; the first framing error is the last item. For tools that need more of the wire format
/// than [`inspect`] and [`split`] offer, such as patching timestamps in
/// place.
pub fn fields(message: &[u8]) -> impl Iterator<Item = Result<Field<'_>, WireError>> {
    Fields::new(message, &String::new)
}

#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
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
            // The tenth byte may only carry the 64th bit, as prost and protobuf-go require.
            return (i < 9 || byte < 2).then_some(value);
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
            // prost refuses keys past 32 bits, so a field number of 2^29 or more is malformed.
            let number = u32::try_from(key).map_or(0, |k| k >> 3);
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
pub(crate) fn put_len_header(out: &mut BytesMut, number: u32, len: usize) {
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

pub(crate) fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// The shape of one signal's request: per nesting level, the field numbers that hold children.
/// The last level's children are the countable items.
/// Deeper than any shape's levels (metrics: resource, scope, metric, data point).
pub(crate) const MAX_DEPTH: usize = 8;

pub(crate) struct Shape {
    pub(crate) levels: &'static [&'static [u32]],
    names: &'static [&'static str],
    /// Id fields checked on each item.
    item_ids: &'static [decodable::IdField],
}

const TRACES: Shape = Shape {
    levels: &[&[1], &[2], &[2]],
    names: &["resource_spans", "scope_spans", "spans"],
    item_ids: &[
        (1, "trace_id", 16, true),
        (2, "span_id", 8, true),
        (4, "parent_span_id", 8, false),
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
    item_ids: &[(9, "trace_id", 16, false), (10, "span_id", 8, false)],
};

pub(crate) fn shape(signal: Signal) -> &'static Shape {
    match signal {
        Signal::Traces => &TRACES,
        Signal::Metrics => &METRICS,
        Signal::Logs => &LOGS,
    }
}

/// Validates an export request down to every field of every item and counts the items.
///
/// Every level is framed (tags, wire types, lengths), every item, resource and scope is checked
/// against the OTLP schema as the protobuf decoders would check it (see [`inspect`]), and trace
/// and span ids must be valid.
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
    /// Items that would not decode or carry invalid ids, to be dropped and reported as a
    /// partial success.
    pub rejected: usize,
    /// The first of those problems, for the partial-success message.
    pub first_rejection: Option<WireError>,
}

/// Validates a request so that what it accepts decodes in every exporter, counting the items
/// that would not instead of failing the request, so that one bad span does not lose its
/// neighbours.
///
/// The levels down to the items must be framed soundly; that is checked first. Then each item
/// (span, data point, log record) is checked at every depth against the OTLP schema as prost
/// decodes it: UTF-8 strings, wire types of known fields, packed fields, varints and nesting
/// within prost's recursion limit; and its ids. A resource, scope or metric whose own fields
/// fail takes every item beneath it along. [`retain_valid`] then drops exactly those items.
///
/// # Errors
/// A [`WireError`] when the framing of the levels is broken: nothing in the request can be
/// trusted.
pub fn inspect(signal: Signal, request: &[u8]) -> Result<Inspection, WireError> {
    let shape = shape(signal);
    let mut path = Vec::with_capacity(shape.levels.len());
    let mut inspection = Inspection {
        items: 0,
        rejected: 0,
        first_rejection: None,
    };
    inspect_level(
        shape,
        0,
        request,
        request_for(signal),
        decodable::RECURSION_LIMIT,
        &mut path,
        &mut inspection,
    )?;
    Ok(inspection)
}

/// Drops the items [`inspect`] rejected (and resources, scopes or metrics whose own fields would
/// not decode, with their items), keeping everything else byte for byte.
pub fn retain_valid(signal: Signal, request: &[u8]) -> Bytes {
    let shape = shape(signal);
    let mut out = BytesMut::with_capacity(request.len());
    retain_level(
        shape,
        0,
        request,
        request_for(signal),
        decodable::RECURSION_LIMIT,
        &mut out,
    );
    out.freeze()
}

/// Requests larger than this are checked off the async workers: [`inspect`] costs about 0.5 µs
/// per span, so 256 KiB (about 450 spans) stays under a quarter of a millisecond.
pub const CHECK_OFF_WORKERS_ABOVE: usize = 256 * 1024;

/// [`inspect`], and the request without what it rejected: the very same bytes when nothing was,
/// else [`retain_valid`]'s. What the intake does with a request, and what an exporter does with
/// a batch its decoder refused.
///
/// # Errors
/// As [`inspect`].
pub fn checked(signal: Signal, request: Bytes) -> Result<(Bytes, Inspection), WireError> {
    let inspection = inspect(signal, &request)?;
    let kept = if inspection.rejected > 0 {
        retain_valid(signal, &request)
    } else {
        request
    };
    Ok((kept, inspection))
}

fn retain_level(
    shape: &Shape,
    depth: usize,
    msg: &[u8],
    desc: &'static Msg,
    budget: u32,
    out: &mut BytesMut,
) {
    let Some(children) = shape.levels.get(depth) else {
        return;
    };
    let no_path = String::new;
    for field in Fields::new(msg, &no_path).map_while(Result::ok) {
        if !(children.contains(&field.number) && field.wire_type == WireType::Len) {
            out.extend_from_slice(field.raw);
            continue;
        }
        let child = decodable::child(desc, field.number);
        if budget == 0 {
            continue;
        }
        if depth + 1 == shape.levels.len() {
            if check_item(shape, field.payload, child, budget - 1, &[]).is_ok() {
                out.extend_from_slice(field.raw);
            }
            continue;
        }
        if check_headers(shape, depth + 1, field.payload, child, budget - 1, &[]).is_err() {
            continue;
        }
        let mut kept = BytesMut::new();
        retain_level(
            shape,
            depth + 1,
            field.payload,
            child,
            budget - 1,
            &mut kept,
        );
        put_len_header(out, field.number, kept.len());
        out.extend_from_slice(&kept);
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

/// The error for a schema problem below the message at `path`.
fn undecodable(shape: &Shape, path: &[usize], bad: &decodable::Bad) -> WireError {
    let mut at = render_path(shape, path);
    let below = bad.render();
    if !below.is_empty() {
        at.push('.');
        at.push_str(&below);
    }
    WireError::Undecodable {
        path: at,
        problem: bad.problem.clone(),
    }
}

/// Checks the fields of a level message that are not its children (a resource, a scope, a
/// metric's name, a schema url) against the schema.
fn check_headers(
    shape: &Shape,
    depth: usize,
    msg: &[u8],
    desc: &'static Msg,
    budget: u32,
    path: &[usize],
) -> Result<(), WireError> {
    let children = shape.levels[depth];
    let no_path = String::new;
    for field in Fields::new(msg, &no_path).map_while(Result::ok) {
        if children.contains(&field.number) && field.wire_type == WireType::Len {
            continue;
        }
        let wire_type = field.wire_type as u8;
        if let Err(mut bad) =
            decodable::check_field(desc, field.number, wire_type, field.payload, budget)
        {
            bad.trail.push((desc, field.number, None));
            return Err(undecodable(shape, path, &bad));
        }
    }
    Ok(())
}

fn reject(inspection: &mut Inspection, items: usize, err: WireError) {
    inspection.rejected += items;
    if items > 0 {
        inspection.first_rejection.get_or_insert(err);
    }
}

fn inspect_level(
    shape: &Shape,
    depth: usize,
    msg: &[u8],
    desc: &'static Msg,
    budget: u32,
    path: &mut Vec<usize>,
    inspection: &mut Inspection,
) -> Result<(), WireError> {
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
        if !children.contains(&field.number) {
            continue;
        }
        if field.wire_type != WireType::Len {
            return Err(WireError::WireType {
                path: describe(),
                field: field.number,
                wire_type: field.wire_type as u8,
            });
        }
        let child = decodable::child(desc, field.number);
        path.push(index);
        index += 1;
        let last = depth + 1 == shape.levels.len();
        if budget == 0 {
            let bad = decodable::Bad {
                trail: Vec::new(),
                problem: FieldProblem::TooDeep {
                    limit: decodable::RECURSION_LIMIT,
                },
            };
            let items = if last {
                1
            } else {
                count_levels(&shape.levels[depth + 1..], field.payload)
            };
            reject(inspection, items, undecodable(shape, path, &bad));
        } else if last {
            match check_item(shape, field.payload, child, budget - 1, path) {
                Ok(()) => inspection.items += 1,
                Err(err) => reject(inspection, 1, err),
            }
        } else {
            match check_headers(shape, depth + 1, field.payload, child, budget - 1, path) {
                Ok(()) => inspect_level(
                    shape,
                    depth + 1,
                    field.payload,
                    child,
                    budget - 1,
                    path,
                    inspection,
                )?,
                Err(err) => {
                    // Broken framing below still fails the whole request.
                    validate_framing(&shape.levels[depth + 1..], field.payload, shape, path)?;
                    let items = count_levels(&shape.levels[depth + 1..], field.payload);
                    reject(inspection, items, err);
                }
            }
        }
        path.pop();
    }
    Ok(())
}

/// Checks the framing of the levels of a subtree down to its items, so that a subtree rejected
/// for a header problem still fails the request when its levels are malformed.
fn validate_framing(
    levels: &[&[u32]],
    msg: &[u8],
    shape: &Shape,
    path: &[usize],
) -> Result<(), WireError> {
    let describe = || render_path(shape, path);
    let Some((children, rest)) = levels.split_first() else {
        return Ok(());
    };
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
            validate_framing(rest, field.payload, shape, path)?;
        }
    }
    Ok(())
}

/// Checks one item: its ids, and every field at every depth against the schema, in one pass.
fn check_item(
    shape: &Shape,
    item: &[u8],
    desc: &'static Msg,
    budget: u32,
    path: &[usize],
) -> Result<(), WireError> {
    decodable::check_item(desc, item, budget, shape.item_ids).map_err(|fault| match fault {
        decodable::ItemFault::IdLength {
            what,
            expected,
            got,
        } => WireError::IdLength {
            path: render_path(shape, path),
            what,
            expected,
            got,
        },
        decodable::ItemFault::MissingId(what) => WireError::MissingId {
            path: render_path(shape, path),
            what,
        },
        decodable::ItemFault::Undecodable(bad) => undecodable(shape, path, &bad),
    })
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

pub(crate) fn count_levels(levels: &[&[u32]], msg: &[u8]) -> usize {
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

    /// A span with every field set, so that the schema check meets every wire type.
    fn span(i: u64) -> Span {
        use opentelemetry_proto::tonic::trace::v1::{Status, span};
        Span {
            trace_id: vec![7; 16],
            // All-zero ids are invalid: span 0 gets id 1.
            span_id: (i + 1).to_be_bytes().to_vec(),
            trace_state: "ot=th:8".into(),
            parent_span_id: vec![0; 8],
            flags: 0x301,
            name: format!("span-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_000_000_500 + i,
            attributes: vec![kv("i", &i.to_string())],
            dropped_attributes_count: 1,
            events: vec![span::Event {
                time_unix_nano: 5,
                name: "exception".into(),
                attributes: vec![kv("exception.message", "boom")],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![span::Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "k=v".into(),
                attributes: vec![kv("l", "1")],
                dropped_attributes_count: 4,
                flags: 0x100,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "bad".into(),
                code: 2,
            }),
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

    fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = *byte,
                1 => bytes.insert(i, *byte),
                _ => bytes[i] ^= 0x80,
            }
        }
        bytes
    }

    fn accepted_bytes_decode<R: Message + Default, T: Message + Default>(
        signal: Signal,
        bytes: &[u8],
        items: impl Fn(&R) -> usize,
    ) -> Result<(), TestCaseError> {
        let Ok(inspection) = inspect(signal, bytes) else {
            return Ok(());
        };
        let kept = retain_valid(signal, bytes);
        let decoded = R::decode(kept.clone());
        prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
        prop_assert_eq!(items(&decoded.unwrap()), inspection.items);
        for message in resource_messages(&kept) {
            prop_assert!(T::decode(message.unwrap()).is_ok());
        }
        prop_assert_eq!(validate_and_count(signal, &kept), Ok(inspection.items));
        Ok(())
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

        /// For any bytes the intake accepts, prost decodes what it keeps, whole and one
        /// resource at a time (as every exporter decodes), with exactly the items it counted.
        #[test]
        fn whatever_is_accepted_decodes_in_every_decoder(
            traces in traces_strategy(),
            metrics in metrics_strategy(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let bytes = mutate(traces.encode_to_vec(), &edits);
            accepted_bytes_decode::<ExportTraceServiceRequest, ResourceSpans>(Signal::Traces, &bytes, |r| trace_items(r).len())?;
            let bytes = mutate(metrics.encode_to_vec(), &edits);
            accepted_bytes_decode::<ExportMetricsServiceRequest, ResourceMetrics>(Signal::Metrics, &bytes, |r| metric_points(r).len())?;
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

    /// A length-delimited field, for building requests prost would never write.
    fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_len_header(&mut out, number, payload.len());
        out.extend_from_slice(payload);
        out.to_vec()
    }

    /// A traces request of one resource and one scope around the given encoded spans.
    fn spans_request(spans: &[Vec<u8>]) -> Vec<u8> {
        let scope: Vec<u8> = spans.iter().flat_map(|s| len_field(2, s)).collect();
        len_field(1, &len_field(2, &scope))
    }

    fn nested_value(levels: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(any_value::Value::StringValue("leaf".into())),
        };
        for _ in 0..levels {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
                )),
            };
        }
        v
    }

    #[test]
    fn every_field_prost_writes_is_accepted() {
        use opentelemetry_proto::tonic::metrics::v1::{
            Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Summary,
            SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets,
            summary_data_point::ValueAtQuantile,
        };
        let exemplars = vec![Exemplar {
            filtered_attributes: vec![kv("e", "1")],
            time_unix_nano: 3,
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            value: Some(exemplar::Value::AsInt(-4)),
        }];
        let scope = Some(InstrumentationScope {
            name: "lib".into(),
            version: "1".into(),
            attributes: vec![kv("s", "1")],
            dropped_attributes_count: 1,
        });
        let resource = Some(Resource {
            attributes: vec![kv("service.name", "svc")],
            dropped_attributes_count: 2,
            ..Default::default()
        });
        let metric = |name: &str, data| Metric {
            name: name.into(),
            description: "d".into(),
            unit: "s".into(),
            metadata: vec![kv("m", "1")],
            data: Some(data),
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource.clone(),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope.clone(),
                    metrics: vec![
                        metric(
                            "sum",
                            metric::Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    attributes: vec![kv("a", "b")],
                                    start_time_unix_nano: 1,
                                    time_unix_nano: 2,
                                    exemplars: exemplars.clone(),
                                    flags: 1,
                                    value: Some(number_data_point::Value::AsDouble(1.5)),
                                }],
                                aggregation_temporality: 1,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "histogram",
                            metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: vec![kv("a", "b")],
                                    start_time_unix_nano: 1,
                                    time_unix_nano: 2,
                                    count: 3,
                                    sum: Some(4.0),
                                    bucket_counts: vec![1, 2],
                                    explicit_bounds: vec![0.5],
                                    exemplars: exemplars.clone(),
                                    flags: 1,
                                    min: Some(0.1),
                                    max: Some(9.0),
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                        metric(
                            "exponential",
                            metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    attributes: vec![kv("a", "b")],
                                    start_time_unix_nano: 1,
                                    time_unix_nano: 2,
                                    count: 3,
                                    sum: Some(4.0),
                                    scale: -3,
                                    zero_count: 1,
                                    positive: Some(Buckets {
                                        offset: -2,
                                        bucket_counts: vec![1, 300],
                                    }),
                                    negative: Some(Buckets::default()),
                                    flags: 1,
                                    exemplars: exemplars.clone(),
                                    min: Some(0.1),
                                    max: Some(9.0),
                                    zero_threshold: 0.001,
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                        metric(
                            "summary",
                            metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    attributes: vec![kv("a", "b")],
                                    start_time_unix_nano: 1,
                                    time_unix_nano: 2,
                                    count: 3,
                                    sum: 4.0,
                                    quantile_values: vec![ValueAtQuantile {
                                        quantile: 0.5,
                                        value: 1.0,
                                    }],
                                    flags: 1,
                                }],
                            }),
                        ),
                    ],
                    schema_url: "u".into(),
                }],
                schema_url: "u".into(),
            }],
        };
        assert_eq!(
            validate_and_count(Signal::Metrics, &request.encode_to_vec()),
            Ok(4)
        );
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                scope_logs: vec![ScopeLogs {
                    scope,
                    log_records: vec![LogRecord {
                        time_unix_nano: 1,
                        observed_time_unix_nano: 2,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(nested_value(3)),
                        attributes: vec![kv("a", "b")],
                        dropped_attributes_count: 1,
                        flags: 1,
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        event_name: "e".into(),
                    }],
                    schema_url: "u".into(),
                }],
                schema_url: "u".into(),
            }],
        };
        assert_eq!(
            validate_and_count(Signal::Logs, &logs.encode_to_vec()),
            Ok(1)
        );
    }

    #[test]
    fn the_reported_span_named_0xff_is_rejected_alone() {
        let hex =
            "0a26122412220a104bf92f3577b34da6a3ce929d0e0e4736120800f067aa0ba902b72a04ff626164";
        let bad: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert!(ExportTraceServiceRequest::decode(bad.as_slice()).is_err());
        let err = validate_and_count(Signal::Traces, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_spans[0].scope_spans[0].spans[0].name: string is not valid UTF-8"
        );
        // Joined with another client's span, only the bad one goes.
        let mut joined = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        joined.extend_from_slice(&bad);
        let i = inspect(Signal::Traces, &joined).unwrap();
        assert_eq!((i.items, i.rejected), (1, 1));
        let kept =
            ExportTraceServiceRequest::decode(retain_valid(Signal::Traces, &joined)).unwrap();
        assert_eq!(trace_items(&kept).len(), 1);
        assert_eq!(trace_items(&kept)[0].2, span(1));
    }

    #[test]
    fn nesting_is_accepted_exactly_as_deep_as_prost_decodes() {
        let mut last_ok = None;
        for levels in 40..60 {
            let mut s = span(1);
            s.attributes = vec![KeyValue {
                key: "deep".into(),
                value: Some(nested_value(levels)),
                ..Default::default()
            }];
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![s],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let bytes = req.encode_to_vec();
            let prost_ok = ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok();
            let ours = validate_and_count(Signal::Traces, &bytes);
            assert_eq!(prost_ok, ours.is_ok(), "{levels} levels: {ours:?}");
            if prost_ok {
                last_ok = Some(levels);
            } else {
                assert!(
                    ours.unwrap_err()
                        .to_string()
                        .contains("nested deeper than the 100 levels"),
                );
            }
        }
        // The bound the reporter found (about 47 array levels) lies inside the range tried.
        assert!(matches!(last_ok, Some(40..=58)), "{last_ok:?}");
    }

    #[test]
    fn fields_prost_would_refuse_reject_their_item_with_a_path() {
        let good = span(1).encode_to_vec();
        let with = |extra: &[u8]| {
            let mut s = good.clone();
            s.extend_from_slice(extra);
            s
        };
        let mut bad_value = vec![0x0a, 0x01, b'k', 0x12, 0x03, 0x0a, 0x01, 0xc3];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // name (5) sent as a varint.
            (
                with(&[0x28, 0x01]),
                "spans[1].name: sent as a varint where the schema has a string",
            ),
            // An attribute whose string value is cut UTF-8.
            (
                with(&len_field(9, &bad_value)),
                "spans[1].attributes[1].value.string_value: string is not valid UTF-8",
            ),
            // An attribute value whose length runs past its message.
            (
                with(&len_field(
                    9,
                    &[0x0a, 0x01, b'k', 0x12, 0x05, 0x0a, 0x01, b'v'],
                )),
                "spans[1].attributes[1].value: value runs past the end of its message",
            ),
            // start_time_unix_nano (7) as a varint.
            (
                with(&[0x38, 0x05]),
                "spans[1].start_time_unix_nano: sent as a varint where the schema has a 64-bit fixed value",
            ),
            // An event whose name is not UTF-8.
            (
                with(&len_field(11, &len_field(2, &[0xff]))),
                "spans[1].events[1].name: string is not valid UTF-8",
            ),
        ];
        for (bad, expected) in cases {
            let bytes = spans_request(&[good.clone(), bad]);
            let i = inspect(Signal::Traces, &bytes).unwrap();
            assert_eq!((i.items, i.rejected), (1, 1), "{expected}");
            let err = i.first_rejection.unwrap().to_string();
            assert!(err.ends_with(expected), "{err} / {expected}");
            assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
            let kept = retain_valid(Signal::Traces, &bytes);
            let kept = ExportTraceServiceRequest::decode(kept).unwrap();
            assert_eq!(trace_items(&kept).len(), 1);
        }
        // A resource attribute that is not UTF-8 takes every span of its resource along.
        bad_value[7] = 0xff;
        let resource = len_field(1, &len_field(1, &bad_value));
        let scope: Vec<u8> = len_field(2, &[len_field(2, &good), len_field(2, &good)].concat());
        let mut bytes = len_field(1, &[resource, scope].concat());
        bytes.extend(spans_request(std::slice::from_ref(&good)));
        let i = inspect(Signal::Traces, &bytes).unwrap();
        assert_eq!((i.items, i.rejected), (1, 2));
        assert_eq!(
            i.first_rejection.unwrap().to_string(),
            "resource_spans[0].resource.attributes[0].value.string_value: string is not valid UTF-8"
        );
        let kept = ExportTraceServiceRequest::decode(retain_valid(Signal::Traces, &bytes)).unwrap();
        assert_eq!(trace_items(&kept).len(), 1);
    }

    #[test]
    fn spans_need_trace_and_span_ids_that_are_not_all_zeros() {
        for (trace_id, span_id, what) in [
            (vec![], vec![1; 8], "trace_id"),
            (vec![0; 16], vec![1; 8], "trace_id"),
            (vec![1; 16], vec![], "span_id"),
            (vec![1; 16], vec![0; 8], "span_id"),
        ] {
            let s = Span {
                trace_id,
                span_id,
                ..span(1)
            };
            let bytes = spans_request(&[span(2).encode_to_vec(), s.encode_to_vec()]);
            let i = inspect(Signal::Traces, &bytes).unwrap();
            assert_eq!((i.items, i.rejected), (1, 1));
            assert_eq!(
                i.first_rejection.unwrap().to_string(),
                format!(
                    "resource_spans[0].scope_spans[0].spans[1]: {what} is required and must not be empty or all zeros"
                )
            );
        }
        // Logs may carry no trace context at all.
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            validate_and_count(Signal::Logs, &req.encode_to_vec()),
            Ok(1)
        );
    }

    #[test]
    fn malformed_packed_fields_varints_and_keys_are_refused_like_prost() {
        // A histogram point whose packed bucket_counts (6) is not a whole number of fixed64s.
        let point = len_field(6, &[0; 12]);
        let hist = len_field(9, &len_field(1, &point));
        let metric = len_field(2, &[len_field(1, b"m"), hist].concat());
        let bytes = len_field(1, &len_field(2, &metric));
        assert!(ExportMetricsServiceRequest::decode(bytes.as_slice()).is_err());
        let err = validate_and_count(Signal::Metrics, &bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_metrics[0].scope_metrics[0].metrics[0].data[0].data_points[0].bucket_counts: packed repeated field is not a whole number of values"
        );
        // A ten-byte varint past 64 bits (dropped_attributes_count, 10).
        let mut s = span(1).encode_to_vec();
        s.extend_from_slice(&[
            0x50, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ]);
        let bytes = spans_request(&[s]);
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        assert!(validate_and_count(Signal::Traces, &bytes).is_err());
        // A key past 32 bits (field 2^29, varint).
        let mut s = span(1).encode_to_vec();
        s.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00]);
        let bytes = spans_request(&[s]);
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        assert!(validate_and_count(Signal::Traces, &bytes).is_err());
        // Unknown fields are skipped, as prost skips them.
        let mut s = span(1).encode_to_vec();
        s.extend_from_slice(&[0xf8, 0x01, 0x05]);
        let bytes = spans_request(&[s]);
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok());
        assert_eq!(validate_and_count(Signal::Traces, &bytes), Ok(1));
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
