//! Span statistics rollups (migration 0002): the fold of pending rows into per-minute and
//! per-hour rows, and the duration histograms they hold.
//!
//! Every trace batch appends its new spans' counts to `span_stats_pending` in the statement that
//! inserts them, so counts are exact and replays add nothing. [`fold`] moves pending rows into
//! `span_stats_minute` and `span_stats_hour`; a reader sums hour rows for the whole hours of its
//! window, minute rows for the rest, and the pending rows not folded yet.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

/// How often the exporter folds pending rows.
pub(crate) const FOLD_PERIOD: Duration = Duration::from_secs(5);

/// Pending rows moved by one fold statement; a fold repeats until fewer are left.
const FOLD_ROWS: i64 = 20_000;

/// Folds pending rows into the rollup of one time unit (`minute` or `hour`): the moved rows'
/// histograms are summed per key, added to the row already there, and written back. Only ever
/// run under the fold's advisory lock, so no two folds merge into one row at once.
macro_rules! fold_into {
    ($unit:literal) => {
        concat!(
            $unit,
            "_totals AS (
    SELECT date_trunc('",
            $unit,
            "', minute, 'UTC') AS t, service_name, name,
           sum(spans)::bigint AS spans, sum(errors)::bigint AS errors
    FROM moved GROUP BY 1, 2, 3
), ",
            $unit,
            "_hist AS (
    SELECT t, service_name, name, array_agg(bucket ORDER BY bucket) AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM (SELECT date_trunc('",
            $unit,
            "', m.minute, 'UTC') AS t, m.service_name, m.name, b.bucket,
                 sum(b.n)::bigint AS n
          FROM moved AS m, unnest(m.buckets, m.counts) AS b (bucket, n)
          GROUP BY 1, 2, 3, 4) AS per_bucket
    GROUP BY 1, 2, 3
), ",
            $unit,
            "_rows AS (
    INSERT INTO span_stats_",
            $unit,
            " AS r
    SELECT s.t, s.service_name, s.name, s.spans, s.errors, h.buckets, h.counts
    FROM ",
            $unit,
            "_totals AS s JOIN ",
            $unit,
            "_hist AS h USING (t, service_name, name)
    ON CONFLICT (",
            $unit,
            ", service_name, name) DO UPDATE SET
        spans = r.spans + excluded.spans,
        errors = r.errors + excluded.errors,
        (buckets, counts) = (
            SELECT array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket)
            FROM (SELECT bucket, sum(n)::bigint AS n
                  FROM (SELECT * FROM unnest(r.buckets, r.counts)
                        UNION ALL
                        SELECT * FROM unnest(excluded.buckets, excluded.counts)) AS u (bucket, n)
                  GROUP BY 1) AS merged)
    RETURNING 1
)"
        )
    };
}

const FOLD: &str = concat!(
    "WITH moved AS (
    DELETE FROM span_stats_pending
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM span_stats_pending LIMIT $1))
    RETURNING minute, service_name, name, spans, errors, buckets, counts
), ",
    fold_into!("minute"),
    ", ",
    fold_into!("hour"),
    "
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM minute_rows)"
);

/// Folds every pending row visible now into the rollups; returns how many it moved, or `None`
/// when another collector is folding (it holds the lock, and will do it).
pub(crate) async fn fold(pool: &PgPool) -> Result<Option<u64>, sqlx::Error> {
    let mut moved_total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let (moved, _): (i64, i64) = sqlx::query_as(FOLD)
            .bind(FOLD_ROWS)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        moved_total += u64::try_from(moved).unwrap_or(0);
        if moved < FOLD_ROWS {
            return Ok(Some(moved_total));
        }
    }
}

/// The advisory lock key the fold holds (any constant other sluice locks do not use).
const LOCK_KEY: i64 = 0x736c_7569_6365_7374; // "sluicest"

/// Bucket 0 holds durations of at most 1 ns; bucket `i > 0` holds (2^((i-1)/8), 2^(i/8)].
pub const BUCKETS_PER_OCTAVE: f64 = 8.0;

/// The most a percentile read from a histogram is off from the exact one, relatively:
/// (γ - 1) / (γ + 1) with γ = 2^(1/8); plus half a nanosecond, as values are whole
/// nanoseconds.
pub const RELATIVE_ERROR: f64 = 0.043_294_617_5;

/// The bucket of a duration, as `sluice_duration_bucket` computes it in SQL.
#[must_use]
pub fn bucket(duration_ns: i64) -> i16 {
    if duration_ns <= 1 {
        return 0;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let b = ((duration_ns as f64).ln() * (BUCKETS_PER_OCTAVE / std::f64::consts::LN_2)).ceil();
    #[allow(clippy::cast_possible_truncation)]
    let b = b as i16;
    b
}

/// The value reported for a percentile falling in bucket `i`: the point of its range with the
/// smallest worst-case relative error, 2·γ^i / (1 + γ).
#[must_use]
pub fn representative(bucket: i16) -> u64 {
    if bucket <= 0 {
        return 1;
    }
    let gamma = 2f64.powf(1.0 / BUCKETS_PER_OCTAVE);
    let upper = 2f64.powf(f64::from(bucket) / BUCKETS_PER_OCTAVE);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = (2.0 * upper / (1.0 + gamma)).round() as u64;
    v
}

/// Span counts and a duration histogram, summed over rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) spans: u64,
    pub(crate) errors: u64,
    pub(crate) histogram: BTreeMap<i16, u64>,
}

impl Stats {
    /// Adds one row: its totals and its histogram (`buckets` and `counts` side by side).
    pub(crate) fn add(&mut self, spans: i64, errors: i64, buckets: &[i16], counts: &[i64]) {
        self.spans += u64::try_from(spans).unwrap_or(0);
        self.errors += u64::try_from(errors).unwrap_or(0);
        for (b, n) in buckets.iter().zip(counts) {
            *self.histogram.entry(*b).or_default() += u64::try_from(*n).unwrap_or(0);
        }
    }

    /// The duration at each fraction, as `percentile_disc` picks it (the first duration whose
    /// rank reaches `fraction` of the count), read from the histogram: each within
    /// [`RELATIVE_ERROR`] of the exact value. Zero with no spans.
    pub(crate) fn percentiles<const N: usize>(&self, fractions: [f64; N]) -> [u64; N] {
        let total: u64 = self.histogram.values().sum();
        fractions.map(|f| {
            if total == 0 {
                return 0;
            }
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let rank = ((f * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (b, n) in &self.histogram {
                seen += n;
                if seen >= rank {
                    return representative(*b);
                }
            }
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_prometheus_schema_3() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 8);
        assert_eq!(bucket(3), 13);
        assert_eq!(bucket(1024), 80);
        assert_eq!(bucket(1025), 81);
        assert_eq!(bucket(i64::MAX), 504);
        assert_eq!(bucket(-5), 0);
    }

    #[test]
    fn the_stated_error_is_the_bucket_width_bound() {
        let gamma = 2f64.powf(1.0 / BUCKETS_PER_OCTAVE);
        assert!(((gamma - 1.0) / (gamma + 1.0) - RELATIVE_ERROR).abs() < 1e-9);
    }

    #[test]
    fn every_small_duration_is_reported_within_the_stated_error() {
        // The reported value is rounded to whole nanoseconds: half of one more, which matters
        // only for durations of a few nanoseconds.
        for d in 2..=200_000i64 {
            let got = representative(bucket(d));
            #[allow(clippy::cast_precision_loss)]
            let (error, rounding) = ((got as f64 - d as f64).abs(), 0.5 / d as f64);
            #[allow(clippy::cast_precision_loss)]
            let error = error / d as f64;
            assert!(
                error <= RELATIVE_ERROR + rounding,
                "{d} ns reported as {got}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_percentile_is_within_the_stated_error_of_percentile_disc(
            mut durations in proptest::collection::vec(2i64..=4_000_000_000_000, 1..400),
            f in 0.0f64..=1.0,
        ) {
            let mut stats = Stats::default();
            for d in &durations {
                stats.add(1, 0, &[bucket(*d)], &[1]);
            }
            durations.sort_unstable();
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rank = ((f * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
            let exact = durations[rank - 1];
            let [got] = stats.percentiles([f]);
            #[allow(clippy::cast_precision_loss)]
            let error = (got as f64 - exact as f64).abs() / exact as f64;
            #[allow(clippy::cast_precision_loss)]
            let rounding = 0.5 / exact as f64;
            prop_assert!(error <= RELATIVE_ERROR + rounding, "{got} vs {exact}: {error}");
            prop_assert_eq!(stats.spans, durations.len() as u64);
        }
    }
}
