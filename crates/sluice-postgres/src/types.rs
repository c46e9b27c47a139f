//! Two PostgreSQL types bound in their binary form without a date or JSON library in between:
//! `timestamptz` from OTLP's Unix nanoseconds, and `jsonb` from JSON text we wrote ourselves.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz`: microseconds since 2000-01-01 UTC, PostgreSQL's binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Timestamp(i64);

impl Timestamp {
    /// From OTLP's nanoseconds since the Unix epoch, truncated to PostgreSQL's microseconds.
    pub(crate) fn from_unix_nanos(nanos: u64) -> Self {
        // u64 nanoseconds are at most about 1.8e16 microseconds: no overflow.
        Timestamp((nanos / 1000) as i64 - PG_EPOCH_MICROS)
    }

    /// Microseconds since the Unix epoch.
    pub(crate) fn unix_micros(self) -> i64 {
        self.0 + PG_EPOCH_MICROS
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1184))
    }
}

impl PgHasArrayType for Timestamp {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1185))
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
}

/// A `jsonb` value from JSON text (binary form: format version 1, then the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jsonb(pub(crate) String);

impl Type<Postgres> for Jsonb {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(3802))
    }
}

impl PgHasArrayType for Jsonb {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(3807))
    }
}

impl Encode<'_, Postgres> for Jsonb {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.push(1);
        buf.extend(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        assert_eq!(Timestamp::from_unix_nanos(946_684_800_000_000_000).0, 0);
        assert_eq!(Timestamp::from_unix_nanos(946_684_800_000_001_999).0, 1);
        assert_eq!(Timestamp::from_unix_nanos(0).0, -PG_EPOCH_MICROS);
        assert_eq!(
            Timestamp::from_unix_nanos(1_700_000_000_123_456_789).unix_micros(),
            1_700_000_000_123_456
        );
        assert!(Timestamp::from_unix_nanos(u64::MAX).0 > 0);
    }
}
