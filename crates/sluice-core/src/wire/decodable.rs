//! What prost requires of each field's encoding, read off sluice's one OTLP schema
//! ([`crate::schema`]). The intake checks items against it so that whatever it acknowledges
//! decodes in every exporter; an item that does not is refused alone, never the batch it would
//! join.
//!
//! prost refuses, and so does this check: a string that is not UTF-8, a known field sent with a
//! wire type its type cannot have (a string sent as a varint), a packed repeated field that is
//! not a whole number of values, a varint over ten bytes or past `u64`, a key past `u32`, and
//! messages nested deeper than prost's recursion limit. Unknown fields are skipped, as prost
//! skips them, but they must still be framed. Groups are refused outright (the walker never
//! accepted them; no OTLP encoder writes them).

use super::{FieldProblem, read_varint};
use crate::schema::{KEY_VALUE, Kind, Label, MessageDesc as Msg};

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not public): a decode starts with this
/// budget, each nested message takes one, and skipping an unknown field needs one left. The
/// strictest decoder of a batch decodes the whole request, so the request has the whole budget.
pub(crate) const RECURSION_LIMIT: u32 = 100;

/// The message type of field `number` of `msg`, for walking down the levels of a request.
pub(crate) fn child(msg: &'static Msg, number: u32) -> &'static Msg {
    match msg.field(number).map(|f| f.kind) {
        Some(Kind::Message(m)) => m,
        _ => &EMPTY,
    }
}

static EMPTY: Msg = Msg::new("Empty", &[]);

/// Where in an item a problem sits, innermost field first; rendered only when reported.
#[derive(Debug)]
pub(crate) struct Bad {
    /// (message, field number, occurrence index of that field within the message) per level,
    /// innermost first.
    pub(crate) trail: Vec<(&'static Msg, u32, Option<usize>)>,
    pub(crate) problem: FieldProblem,
}

impl Bad {
    /// Boxed: the check returns `Result<(), Box<Bad>>`, one register on the path that matters,
    /// where an unboxed error made every call of the recursion pass a large result through
    /// memory.
    #[cold]
    fn new(problem: FieldProblem) -> Box<Self> {
        Box::new(Bad {
            trail: Vec::new(),
            problem,
        })
    }

    /// The path below the item, like `attributes[2].value.string_value`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (msg, number, index) in self.trail.iter().rev() {
            if !out.is_empty() {
                out.push('.');
            }
            match msg.field(*number) {
                Some(field) => out.push_str(field.proto_name),
                None => out.push_str(&format!("field {number}")),
            }
            if let Some(i) = index {
                out.push_str(&format!("[{i}]"));
            }
        }
        out
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
) -> Result<(), Box<Bad>> {
    let wrong = |expected: &'static str| {
        Err(Bad::new(FieldProblem::WrongWireType {
            expected,
            got: wire_type_name(wire_type),
        }))
    };
    let Some(field) = msg.field(number) else {
        // Unknown: skipped by prost, which still needs recursion budget to skip it.
        if budget == 0 {
            return Err(Bad::new(FieldProblem::TooDeep {
                limit: RECURSION_LIMIT,
            }));
        }
        return Ok(());
    };
    let repeated = field.label == Label::Repeated;
    match (field.kind, wire_type) {
        // Most strings are ASCII, which a word-at-a-time scan confirms faster than a UTF-8
        // decoder (a fifth of the check's time went to `from_utf8` on short keys).
        (Kind::String, 2) => {
            if payload.is_ascii() || std::str::from_utf8(payload).is_ok() {
                Ok(())
            } else {
                Err(Bad::new(FieldProblem::NotUtf8))
            }
        }
        (Kind::String, _) => wrong("a string"),
        (Kind::Bytes | Kind::HexId(_), 2) => Ok(()),
        (Kind::Bytes | Kind::HexId(_), _) => wrong("bytes"),
        (Kind::Message(inner), 2) => {
            if budget == 0 {
                return Err(Bad::new(FieldProblem::TooDeep {
                    limit: RECURSION_LIMIT,
                }));
            }
            // Attributes are the bulk of every item: the common ones pass without tables.
            if budget >= 2 && std::ptr::eq(inner, &KEY_VALUE) && key_value_fast(payload) {
                return Ok(());
            }
            check_message(inner, payload, budget - 1)
        }
        (Kind::Message(_), _) => wrong("a message"),
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, 1) | (Kind::Fixed32, 5) => Ok(()),
        // prost takes a repeated scalar packed or not.
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, 2) if repeated => packed_fixed(payload, 8),
        (Kind::Fixed32, 2) if repeated => packed_fixed(payload, 4),
        (Kind::Fixed64 | Kind::Sfixed64 | Kind::Double, _) => wrong("a 64-bit fixed value"),
        (Kind::Fixed32, _) => wrong("a 32-bit fixed value"),
        // Bool, the integer kinds and enums are varints.
        (_, 0) => Ok(()),
        (_, 2) if repeated => {
            let mut pos = 0;
            while pos < payload.len() {
                if read_varint(payload, &mut pos).is_none() {
                    return Err(Bad::new(FieldProblem::Packed));
                }
            }
            Ok(())
        }
        (_, _) => wrong("a varint"),
    }
}

/// Whether a `KeyValue` is one of the common shapes that certainly decodes: an ASCII key (1) and
/// a value (2) holding scalars only (an ASCII string, a bool or int varint, a double, bytes).
/// `false` says nothing: the general check then decides, and names any problem. It takes no
/// recursion budget beyond the two levels its caller checked.
fn key_value_fast(buf: &[u8]) -> bool {
    fields_fast(buf, |tag, buf, pos| match tag {
        0x0a => len_value(buf, pos).is_some_and(<[u8]>::is_ascii),
        0x12 => len_value(buf, pos).is_some_and(any_value_fast),
        _ => false,
    })
}

/// [`key_value_fast`] for an `AnyValue` of scalars.
fn any_value_fast(buf: &[u8]) -> bool {
    fields_fast(buf, |tag, buf, pos| match tag {
        0x0a => len_value(buf, pos).is_some_and(<[u8]>::is_ascii),
        0x3a => len_value(buf, pos).is_some(),
        0x10 | 0x18 => read_varint(buf, pos).is_some(),
        0x21 if buf.len() - *pos >= 8 => {
            *pos += 8;
            true
        }
        _ => false,
    })
}

/// Walks one-byte tags, each field read by `field` (tag, buffer, position after the tag); `false`
/// as soon as one is not of the expected shapes.
#[inline(always)]
fn fields_fast(buf: &[u8], field: impl Fn(u8, &[u8], &mut usize) -> bool) -> bool {
    let mut pos = 0;
    while pos < buf.len() {
        let tag = buf[pos];
        pos += 1;
        if !field(tag, buf, &mut pos) {
            return false;
        }
    }
    true
}

/// The payload of a length-delimited value whose length prefix starts at `pos`.
#[inline]
fn len_value<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf, pos)?).ok()?;
    let value = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(value)
}

fn packed_fixed(payload: &[u8], width: usize) -> Result<(), Box<Bad>> {
    if payload.len().is_multiple_of(width) {
        Ok(())
    } else {
        Err(Bad::new(FieldProblem::Packed))
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
pub(crate) fn check_message(msg: &'static Msg, buf: &[u8], budget: u32) -> Result<(), Box<Bad>> {
    let mut pos = 0;
    while pos < buf.len() {
        let (start, number, wire_type, payload) = next_field(msg, buf, &mut pos)?;
        if let Err(bad) = check_field(msg, number, wire_type, payload, budget) {
            return Err(at(msg, buf, start, number, bad));
        }
    }
    Ok(())
}

/// Frames the field at `pos` and moves past it: where it starts, its number, wire type and (for
/// length-delimited fields) payload. Always inlined: it is the inner loop of the check.
#[inline(always)]
fn next_field<'a>(
    msg: &'static Msg,
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<(usize, u32, u8, &'a [u8]), Box<Bad>> {
    let start = *pos;
    let key = read_varint(buf, pos).ok_or_else(|| Bad::new(FieldProblem::Varint))?;
    let number = match u32::try_from(key) {
        Ok(k) if k >> 3 != 0 => k >> 3,
        _ => return Err(Bad::new(FieldProblem::FieldNumber)),
    };
    let wire_type = (key & 7) as u8;
    let mut payload: &[u8] = &[];
    let framed = match wire_type {
        0 => read_varint(buf, pos).map(|_| ()),
        1 | 5 => {
            let width = if wire_type == 1 { 8 } else { 4 };
            (buf.len() - *pos >= width).then(|| *pos += width)
        }
        2 => len_value(buf, pos).map(|value| payload = value),
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
    Ok((start, number, wire_type, payload))
}

/// An id field an item carries: (field number, name, length, required). A required id must be
/// present, of its length and not all zeros (the OTLP specification calls such ids invalid);
/// others may be empty.
pub(crate) type IdField = (u32, &'static str, usize, bool);

/// Why an item is refused.
pub(crate) enum ItemFault {
    /// An id of the wrong length or wire type.
    IdLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A required id that is absent, empty or all zeros.
    MissingId(&'static str),
    /// A field that would not decode.
    Undecodable(Box<Bad>),
}

/// Checks one item (span, data point, log record) in one pass: its ids, and every field at
/// every depth against the schema.
pub(crate) fn check_item(
    msg: &'static Msg,
    buf: &[u8],
    budget: u32,
    ids: &[IdField],
) -> Result<(), ItemFault> {
    let mut seen = [false; 4];
    let mut pos = 0;
    while pos < buf.len() {
        let (start, number, wire_type, payload) =
            next_field(msg, buf, &mut pos).map_err(ItemFault::Undecodable)?;
        if let Some(slot) = ids.iter().position(|id| id.0 == number) {
            let (_, what, expected, required) = ids[slot];
            let got = payload.len();
            if wire_type != 2 || (got != expected && got != 0) {
                return Err(ItemFault::IdLength {
                    what,
                    expected,
                    got,
                });
            }
            seen[slot] = required && got != 0 && payload.iter().any(|&b| b != 0);
            continue;
        }
        if let Err(bad) = check_field(msg, number, wire_type, payload, budget) {
            return Err(ItemFault::Undecodable(at(msg, buf, start, number, bad)));
        }
    }
    for (slot, &(_, what, _, required)) in ids.iter().enumerate() {
        if required && !seen[slot] {
            return Err(ItemFault::MissingId(what));
        }
    }
    Ok(())
}

/// Adds the field at `start` of `buf` to the trail, with its occurrence index when it is a
/// repeated message (counted only now, on the error path).
pub(crate) fn at(
    msg: &'static Msg,
    buf: &[u8],
    start: usize,
    number: u32,
    mut bad: Box<Bad>,
) -> Box<Bad> {
    let index = msg
        .field(number)
        .is_some_and(|f| f.label == Label::Repeated && matches!(f.kind, Kind::Message(_)))
        .then(|| {
            super::fields(&buf[..start])
                .map_while(Result::ok)
                .filter(|f| f.number == number)
                .count()
        });
    bad.trail.push((msg, number, index));
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fast path never passes what the general check refuses.
        #[test]
        fn the_key_value_fast_path_passes_nothing_the_general_check_refuses(
            bytes in prop::collection::vec(
                prop::sample::select(vec![0x0a_u8, 0x12, 0x10, 0x18, 0x21, 0x3a, 0x01, 0x02, 0x05, 0x80, 0xff, b'k', 0xc3]),
                0..40,
            ),
        ) {
            if key_value_fast(&bytes) {
                prop_assert!(check_message(&KEY_VALUE, &bytes, 2).is_ok(), "{bytes:?}");
            }
        }
    }

    #[test]
    fn common_attributes_take_the_fast_path() {
        // key "k", string value "v"; key "n", int 5; key "d", double; key "b", bytes.
        for kv in [
            &[0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v'][..],
            &[0x0a, 1, b'n', 0x12, 2, 0x18, 5],
            &[0x0a, 1, b'd', 0x12, 9, 0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],
            &[0x0a, 1, b'b', 0x12, 3, 0x3a, 1, 0xff],
        ] {
            assert!(key_value_fast(kv), "{kv:?}");
            assert!(check_message(&KEY_VALUE, kv, 2).is_ok());
        }
        // Not ASCII, nested, or broken: the general check decides.
        assert!(!key_value_fast(&[0x0a, 2, 0xc3, 0xa9]));
        assert!(check_message(&KEY_VALUE, &[0x0a, 2, 0xc3, 0xa9], 2).is_ok());
        assert!(!key_value_fast(&[0x0a, 1, 0xff]));
        assert!(!key_value_fast(&[0x12, 2, 0x2a, 0x00]));
        assert!(!key_value_fast(&[0x0a, 5, b'k']));
    }
}
