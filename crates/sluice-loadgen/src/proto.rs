//! A minimal protobuf wire-format reader: iterates over the fields of one message without decoding
//! it, so that the load generator can locate timestamps and the sink can count Jaeger spans.
//!
//! Offsets are absolute: a [`Fields`] iterator is created with the offset of its message within the
//! outermost buffer, so nested walks report positions that can be patched in the original bytes.

use std::fmt;

/// Why a byte string is not a well-formed protobuf message (offsets are absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProtoError {
    /// A varint ran past the end of its message or over ten bytes.
    Varint {
        /// Where the varint starts.
        offset: usize,
    },
    /// A field claims more bytes than remain in its message.
    Truncated {
        /// Where the field's value starts.
        offset: usize,
        /// The field number.
        field: u32,
        /// The bytes the field needs.
        needed: u64,
        /// The bytes that remain.
        remaining: usize,
    },
    /// A wire type that protobuf does not define, or a deprecated group.
    WireType {
        /// Where the field's tag starts.
        offset: usize,
        /// The field number.
        field: u32,
        /// The wire type found.
        wire_type: u8,
    },
    /// Field number zero, or one that does not fit in 32 bits.
    FieldNumber {
        /// Where the field's tag starts.
        offset: usize,
    },
    /// A known field encoded with a wire type its schema does not allow.
    Unexpected {
        /// Where the field's value starts.
        offset: usize,
        /// The field number.
        field: u32,
        /// What the schema says the field is.
        expected: &'static str,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Varint { offset } => write!(f, "malformed varint at byte {offset}"),
            ProtoError::Truncated {
                offset,
                field,
                needed,
                remaining,
            } => write!(
                f,
                "field {field} at byte {offset} needs {needed} bytes but only {remaining} remain"
            ),
            ProtoError::WireType {
                offset,
                field,
                wire_type,
            } => write!(
                f,
                "invalid wire type {wire_type} for field {field} at byte {offset}"
            ),
            ProtoError::FieldNumber { offset } => {
                write!(f, "invalid field number at byte {offset}")
            }
            ProtoError::Unexpected {
                offset,
                field,
                expected,
            } => write!(f, "field {field} at byte {offset} is not a {expected}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// The value of one field, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: an embedded message, string, bytes or packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field number.
    pub(crate) number: u32,
    /// The field's value.
    pub(crate) value: Value<'a>,
    /// Absolute offset of the value's first byte (after the tag and any length prefix).
    pub(crate) offset: usize,
}

impl<'a> Field<'a> {
    /// The field as an embedded message: its bytes and their absolute offset.
    pub(crate) fn message(&self) -> Result<(&'a [u8], usize), ProtoError> {
        match self.value {
            Value::Bytes(b) => Ok((b, self.offset)),
            _ => Err(self.unexpected("length-delimited message")),
        }
    }

    /// The field as a `fixed64`.
    pub(crate) fn fixed64(&self) -> Result<u64, ProtoError> {
        match self.value {
            Value::Fixed64(v) => Ok(v),
            _ => Err(self.unexpected("fixed64")),
        }
    }

    fn unexpected(&self, expected: &'static str) -> ProtoError {
        ProtoError::Unexpected {
            offset: self.offset,
            field: self.number,
            expected,
        }
    }
}

/// Iterates over the fields of one message; stops after the first error.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// The fields of `message`, which starts at absolute offset `base`.
    pub(crate) fn new(message: &'a [u8], base: usize) -> Fields<'a> {
        Fields {
            buf: message,
            pos: 0,
            base,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                break;
            };
            self.pos += 1;
            // The tenth byte may only carry the 64th bit.
            if i == 9 && b > 1 {
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Varint {
            offset: self.base + start,
        })
    }

    /// Takes `n` bytes for field `field`, or fails if fewer remain.
    fn take(&mut self, field: u32, n: u64) -> Result<&'a [u8], ProtoError> {
        let remaining = self.buf.len() - self.pos;
        let truncated = ProtoError::Truncated {
            offset: self.base + self.pos,
            field,
            needed: n,
            remaining,
        };
        let n = usize::try_from(n).map_err(|_| truncated.clone())?;
        if n > remaining {
            return Err(truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn field(&mut self) -> Result<Field<'a>, ProtoError> {
        let tag_at = self.base + self.pos;
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3)
            .ok()
            .filter(|&n| n != 0)
            .ok_or(ProtoError::FieldNumber { offset: tag_at })?;
        let wire_type = (tag & 7) as u8;
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                let offset = self.base + self.pos;
                let b = self.take(number, 8)?;
                let v = <[u8; 8]>::try_from(b).map_err(|_| ProtoError::Truncated {
                    offset,
                    field: number,
                    needed: 8,
                    remaining: b.len(),
                })?;
                return Ok(Field {
                    number,
                    value: Value::Fixed64(u64::from_le_bytes(v)),
                    offset,
                });
            }
            2 => {
                let len = self.varint()?;
                let offset = self.base + self.pos;
                let b = self.take(number, len)?;
                return Ok(Field {
                    number,
                    value: Value::Bytes(b),
                    offset,
                });
            }
            5 => {
                let offset = self.base + self.pos;
                let b = self.take(number, 4)?;
                let v = <[u8; 4]>::try_from(b).map_err(|_| ProtoError::Truncated {
                    offset,
                    field: number,
                    needed: 4,
                    remaining: b.len(),
                })?;
                return Ok(Field {
                    number,
                    value: Value::Fixed32(u32::from_le_bytes(v)),
                    offset,
                });
            }
            _ => {
                return Err(ProtoError::WireType {
                    offset: tag_at,
                    field: number,
                    wire_type,
                });
            }
        };
        Ok(Field {
            number,
            value,
            offset: tag_at,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.field();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &[u8]) -> Result<Vec<Field<'_>>, ProtoError> {
        Fields::new(b, 0).collect()
    }

    #[test]
    fn reads_every_wire_type() {
        // field 1 varint 300, field 2 fixed64 7, field 3 bytes "ab", field 4 fixed32 9.
        let b = [
            0x08, 0xac, 0x02, 0x11, 7, 0, 0, 0, 0, 0, 0, 0, 0x1a, 2, b'a', b'b', 0x25, 9, 0, 0, 0,
        ];
        let f = all(&b).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!((f[0].number, f[0].value), (1, Value::Varint(300)));
        assert_eq!(
            (f[1].number, f[1].value, f[1].offset),
            (2, Value::Fixed64(7), 4)
        );
        assert_eq!(
            (f[2].number, f[2].value, f[2].offset),
            (3, Value::Bytes(b"ab"), 14)
        );
        assert_eq!((f[3].number, f[3].value), (4, Value::Fixed32(9)));
    }

    #[test]
    fn rejects_malformed_input() {
        assert!(matches!(all(&[0x08]), Err(ProtoError::Varint { .. })));
        assert!(matches!(all(&[0x08, 0x80]), Err(ProtoError::Varint { .. })));
        assert!(matches!(
            all(&[0x11, 1, 2]),
            Err(ProtoError::Truncated { .. })
        ));
        assert!(matches!(
            all(&[0x1a, 5, 1]),
            Err(ProtoError::Truncated { .. })
        ));
        assert!(matches!(all(&[0x25, 1]), Err(ProtoError::Truncated { .. })));
        assert!(matches!(all(&[0x0b]), Err(ProtoError::WireType { .. })));
        assert!(matches!(
            all(&[0x00, 0]),
            Err(ProtoError::FieldNumber { .. })
        ));
        assert!(matches!(
            all(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02
            ]),
            Err(ProtoError::Varint { .. })
        ));
    }

    #[test]
    fn nested_offsets_are_absolute() {
        // field 1 message { field 2 fixed64 5 }
        let b = [0x0a, 9, 0x11, 5, 0, 0, 0, 0, 0, 0, 0];
        let outer = all(&b).unwrap();
        let (inner, at) = outer[0].message().unwrap();
        let inner: Vec<_> = Fields::new(inner, at).collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].offset, 3);
        assert_eq!(inner[0].fixed64(), Ok(5));
        assert!(inner[0].message().is_err());
    }
}
