//! A base-2 exponential histogram of non-negative values, as OTLP's `ExponentialHistogram`
//! defines it: bucket `i` at scale `s` holds values in `(2^(i/2^s), 2^((i+1)/2^s)]`. It starts at
//! the finest scale and halves its resolution whenever the buckets would span more than
//! `max_size`, as the OpenTelemetry SDKs do.

/// The finest scale used: 2^20 buckets per power of two.
const MAX_SCALE: i32 = 20;
/// The coarsest scale: one bucket per power of 2^(2^10), wider than any f64 range.
const MIN_SCALE: i32 = -10;

/// Positive buckets and a zero count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exponential {
    pub(crate) scale: i32,
    /// The index of `counts[0]`.
    pub(crate) offset: i32,
    pub(crate) counts: Vec<u64>,
    pub(crate) zero_count: u64,
    max_size: usize,
}

impl Exponential {
    pub(crate) fn new(max_size: usize) -> Self {
        Exponential {
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: 0,
            max_size: max_size.max(1),
        }
    }

    /// The bucket index of a positive finite `value` at `scale`: `ceil(log2(value) * 2^scale) - 1`,
    /// computed exactly for powers of two (which are bucket upper bounds).
    fn index(value: f64, scale: i32) -> i32 {
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let mantissa = bits & ((1 << 52) - 1);
        if exponent > -1023 && mantissa == 0 {
            // An exact power of two 2^e is the upper bound of bucket (e << scale) - 1.
            return if scale >= 0 {
                (exponent << scale) - 1
            } else {
                (exponent - 1) >> -scale
            };
        }
        if scale > 0 {
            let scaled = value.log2() * f64::from(1 << scale);
            (scaled.ceil() as i32).saturating_sub(1)
        } else {
            // At scale <= 0 a bucket spans 2^(-scale) powers of two: use the exponent alone.
            let e = if exponent == -1023 {
                // Subnormal: compute the exponent from the value itself.
                value.log2().floor() as i32
            } else {
                exponent
            };
            e >> -scale
        }
    }

    /// Records a value; negative and non-finite values count as zero (durations cannot be
    /// negative).
    pub(crate) fn record(&mut self, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.zero_count += 1;
            return;
        }
        let mut index = Self::index(value, self.scale);
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(1);
            return;
        }
        // Coarsen until the new index fits with the existing range.
        loop {
            let low = self.offset.min(index);
            let high = (self.offset + self.counts.len() as i32 - 1).max(index);
            if ((high - low) as usize) < self.max_size || self.scale <= MIN_SCALE {
                break;
            }
            self.downscale();
            index = Self::index(value, self.scale);
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += 1;
    }

    /// Halves the resolution: bucket `i` joins bucket `i >> 1`.
    fn downscale(&mut self) {
        let new_offset = self.offset >> 1;
        let mut merged: Vec<u64> = Vec::with_capacity(self.counts.len() / 2 + 1);
        for (i, count) in self.counts.iter().enumerate() {
            let at = ((self.offset + i as i32) >> 1) - new_offset;
            let at = at as usize;
            if at >= merged.len() {
                merged.resize(at + 1, 0);
            }
            merged[at] += count;
        }
        self.counts = merged;
        self.offset = new_offset;
        self.scale -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds of bucket `index` at `scale`.
    fn bounds(index: i32, scale: i32) -> (f64, f64) {
        let base = 2f64.powf(2f64.powi(-scale));
        (base.powi(index), base.powi(index + 1))
    }

    #[test]
    fn values_land_in_the_bucket_whose_bounds_hold_them() {
        for scale in [-2, 0, 1, 3, 8, 20] {
            for value in [0.001, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 7.9, 1000.0, 123_456.7] {
                let i = Exponential::index(value, scale);
                let (low, high) = bounds(i, scale);
                let tolerance = high * 1e-9;
                assert!(
                    low - tolerance <= value && value <= high + tolerance,
                    "scale {scale}: {value} in bucket {i} = ({low}, {high}]"
                );
            }
        }
        // Powers of two are upper bounds: 2 is in (1, 2] at scale 0, bucket 0.
        assert_eq!(Exponential::index(2.0, 0), 0);
        assert_eq!(Exponential::index(1.0, 0), -1);
        assert_eq!(Exponential::index(4.0, 1), 3);
    }

    #[test]
    fn the_range_is_held_within_max_size_by_downscaling_and_no_count_is_lost() {
        let mut h = Exponential::new(20);
        let values = [0.0, 0.1, 1.0, 2.5, 17.0, 900.0, 31_000.0, 1.0e6];
        for v in values {
            h.record(v);
        }
        assert!(h.counts.len() <= 20, "{h:?}");
        assert_eq!(h.zero_count, 1);
        assert_eq!(h.counts.iter().sum::<u64>(), values.len() as u64 - 1);
        for v in &values[1..] {
            let i = Exponential::index(*v, h.scale);
            assert!(
                i >= h.offset && i < h.offset + h.counts.len() as i32,
                "{v} outside the buckets at scale {}",
                h.scale
            );
        }
        assert!(h.scale < MAX_SCALE);
    }
}
