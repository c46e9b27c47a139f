//! OpenTelemetry consistent probability sampling: 56-bit thresholds and randomness, their `th:`
//! and `rv:` encodings, and the `ot` entry of the W3C `tracestate` that carries them
//! (<https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/>).
//!
//! Behaves as the Collector's `pkg/sampling` does, so that a fleet mixing sluice and the
//! Collector reads and writes the same values (see `docs/probabilistic-sampler.md`).

use std::fmt::Write as _;

use thiserror::Error;

/// 2^56: thresholds and randomness are 56-bit.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// Hex digits of a full-precision value.
const HEX_DIGITS: usize = 14;
/// The smallest probability a threshold can express.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// Why a sampling value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SamplingError {
    /// A probability outside `[2^-56, 1]`.
    #[error("sampling probability out of the range [1/MaxAdjustedCount, 1]")]
    ProbabilityRange,
    /// A `th:` of more than 14 digits.
    #[error("t-value exceeds 14 hex digits")]
    TValueLength,
    /// An `rv:` of other than 14 digits.
    #[error("r-value must have 14 hex digits")]
    RValueLength,
    /// Not hexadecimal, or a tracestate that breaks the W3C or OpenTelemetry syntax.
    #[error("invalid syntax")]
    Syntax,
    /// A tracestate longer than the W3C limit.
    #[error("tracestate too large")]
    Size,
}

/// A rejection threshold: an item is sampled when its randomness is at least the threshold.
/// `0` samples everything; [`Threshold::NEVER`] nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Threshold(u64);

impl Threshold {
    /// Samples everything (probability 1).
    pub const ALWAYS: Threshold = Threshold(0);
    /// Samples nothing.
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// The threshold with this 56-bit value.
    pub fn from_unsigned(value: u64) -> Option<Threshold> {
        (value <= MAX_ADJUSTED_COUNT).then_some(Threshold(value))
    }

    /// The 56-bit value.
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The threshold of probability `p` at full precision.
    ///
    /// # Errors
    /// [`SamplingError::ProbabilityRange`] outside `[2^-56, 1]`.
    pub fn from_probability(p: f64) -> Result<Threshold, SamplingError> {
        if !(MIN_PROBABILITY..=1.0).contains(&p) {
            return Err(SamplingError::ProbabilityRange);
        }
        let scaled = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
        Ok(Threshold(MAX_ADJUSTED_COUNT - scaled))
    }

    /// The threshold of probability `p`, rounded to `precision` significant hex digits (`0`
    /// means full precision).
    ///
    /// Leading zero digits (of the probability, or of the rejection probability) do not count;
    /// more digits than 14 means full precision.
    ///
    /// # Errors
    /// [`SamplingError::ProbabilityRange`] outside `[2^-56, 1]`.
    pub fn from_probability_with_precision(
        p: f64,
        precision: u8,
    ) -> Result<Threshold, SamplingError> {
        if precision == 0 {
            return Threshold::from_probability(p);
        }
        if !(MIN_PROBABILITY..=1.0).contains(&p) {
            return Err(SamplingError::ProbabilityRange);
        }
        if p == 1.0 {
            return Ok(Threshold::ALWAYS);
        }
        // Leading zero digits carry no information, of the rejection probability (near 1) and
        // of the probability (near 0) alike: each adds a digit, up to full precision.
        let mut precision = usize::from(precision);
        let mut reject = 1.0 - p;
        while reject * 16.0 < 1.0 {
            reject *= 16.0;
            precision += 1;
        }
        let mut accept = p;
        while accept * 16.0 < 1.0 {
            accept *= 16.0;
            precision += 1;
        }
        let precision = precision.min(HEX_DIGITS);
        let scaled = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let mut rejected = MAX_ADJUSTED_COUNT - scaled;
        let shift = 4 * (HEX_DIGITS - precision) as u32;
        if shift > 0 {
            rejected += 1 << (shift - 1);
            rejected = (rejected >> shift) << shift;
        }
        Ok(Threshold(rejected))
    }

    /// The probability of sampling, in `[0, 1]`.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// Whether an item of randomness `r` is sampled.
    pub fn should_sample(self, r: Randomness) -> bool {
        r.0 >= self.0
    }

    /// Parses a `th:` value: 1 to 14 hex digits, trailing zeros implied.
    ///
    /// # Errors
    /// [`SamplingError::TValueLength`] or [`SamplingError::Syntax`].
    pub fn parse(tvalue: &str) -> Result<Threshold, SamplingError> {
        if tvalue.len() > HEX_DIGITS {
            return Err(SamplingError::TValueLength);
        }
        let value = parse_hex(tvalue)?;
        Ok(Threshold(value << (4 * (HEX_DIGITS - tvalue.len()))))
    }

    /// The `th:` encoding: 14 hex digits without trailing zeros, `0` for always.
    pub fn tvalue(self) -> String {
        if self.0 == 0 {
            return "0".to_owned();
        }
        let mut out = String::with_capacity(HEX_DIGITS);
        let _ = write!(out, "{:014x}", self.0);
        out.truncate(out.trim_end_matches('0').len());
        out
    }
}

/// The 56 bits of randomness an item is sampled by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Randomness(u64);

impl Randomness {
    /// The randomness that every threshold but [`Threshold::NEVER`] samples.
    pub const ALL: Randomness = Randomness(MAX_ADJUSTED_COUNT - 1);

    /// The randomness with this value (its low 56 bits).
    pub fn from_unsigned(value: u64) -> Randomness {
        Randomness(value & (MAX_ADJUSTED_COUNT - 1))
    }

    /// The 56-bit value.
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The W3C randomness of a trace id: its last 7 bytes; `None` for an invalid (all-zero or
    /// not 16 bytes) id.
    pub fn from_trace_id(trace_id: &[u8]) -> Option<Randomness> {
        if trace_id.len() != 16 || trace_id.iter().all(|&b| b == 0) {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[1..].copy_from_slice(&trace_id[9..]);
        Some(Randomness(u64::from_be_bytes(bytes)))
    }

    /// Parses an `rv:` value: exactly 14 hex digits.
    ///
    /// # Errors
    /// [`SamplingError::RValueLength`] or [`SamplingError::Syntax`].
    pub fn parse(rvalue: &str) -> Result<Randomness, SamplingError> {
        if rvalue.len() != HEX_DIGITS {
            return Err(SamplingError::RValueLength);
        }
        Ok(Randomness(parse_hex(rvalue)?))
    }

    /// The `rv:` encoding: 14 lower-case hex digits.
    pub fn rvalue(self) -> String {
        format!("{:014x}", self.0)
    }
}

fn parse_hex(digits: &str) -> Result<u64, SamplingError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SamplingError::Syntax);
    }
    u64::from_str_radix(digits, 16).map_err(|_| SamplingError::Syntax)
}

/// The `ot` entry of a tracestate: `th`, `rv` and the other `key:value` fields, kept in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelTraceState {
    /// `th`, as parsed, with its original text.
    threshold: Option<(Threshold, String)>,
    /// `rv`, as parsed, with its original text (upper case passes through).
    randomness: Option<(Randomness, String)>,
    /// Other fields.
    extra: Vec<(String, String)>,
}

/// The W3C limit on a tracestate, and the OpenTelemetry one on its `ot` value.
const MAX_W3C_LENGTH: usize = 1024;
const MAX_OT_LENGTH: usize = 256;
const MAX_W3C_MEMBERS: usize = 32;

impl OtelTraceState {
    /// Parses an `ot` value: `key:value` fields separated by `;`.
    ///
    /// # Errors
    /// A [`SamplingError`] for bad syntax or a bad `th` or `rv`.
    pub fn parse(input: &str) -> Result<OtelTraceState, SamplingError> {
        if input.len() > MAX_OT_LENGTH {
            return Err(SamplingError::Size);
        }
        let mut state = OtelTraceState::default();
        for field in input.split(';') {
            let (key, value) = field.split_once(':').ok_or(SamplingError::Syntax)?;
            let key_ok = key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let value_ok = value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !key_ok || !value_ok {
                return Err(SamplingError::Syntax);
            }
            match key {
                "th" => state.threshold = Some((Threshold::parse(value)?, value.to_owned())),
                "rv" => state.randomness = Some((Randomness::parse(value)?, value.to_owned())),
                _ => state.extra.push((key.to_owned(), value.to_owned())),
            }
        }
        Ok(state)
    }

    /// The arriving threshold, if any.
    pub fn threshold(&self) -> Option<Threshold> {
        self.threshold.as_ref().map(|(t, _)| *t)
    }

    /// The explicit randomness, if any.
    pub fn randomness(&self) -> Option<Randomness> {
        self.randomness.as_ref().map(|(r, _)| *r)
    }

    /// Sets the explicit randomness.
    pub fn set_randomness(&mut self, r: Randomness) {
        self.randomness = Some((r, r.rvalue()));
    }

    /// Removes the threshold (an arriving one the randomness contradicts).
    pub fn clear_threshold(&mut self) {
        self.threshold = None;
    }

    /// Records that the item was sampled at `threshold`.
    ///
    /// # Errors
    /// [`SamplingError::ProbabilityRange`] when that would raise the probability already
    /// recorded (the threshold is left as it was).
    pub fn update_threshold(&mut self, threshold: Threshold) -> Result<(), SamplingError> {
        if self.threshold().is_some_and(|t| t > threshold) {
            return Err(SamplingError::ProbabilityRange);
        }
        self.threshold = Some((threshold, threshold.tvalue()));
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.threshold.is_none() && self.randomness.is_none() && self.extra.is_empty()
    }

    fn write(&self, out: &mut String) {
        let mut first = true;
        let mut field = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(';');
            }
            first = false;
            out.push_str(key);
            out.push(':');
            out.push_str(value);
        };
        if let Some((_, text)) = &self.randomness {
            field(out, "rv", text);
        }
        if let Some((_, text)) = &self.threshold {
            field(out, "th", text);
        }
        for (key, value) in &self.extra {
            field(out, key, value);
        }
    }
}

/// A W3C `tracestate`: the OpenTelemetry entry, parsed, and the other vendors' entries as they
/// were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    /// The `ot` entry.
    pub ot: OtelTraceState,
    others: Vec<(String, String)>,
}

fn w3c_key_ok(key: &str) -> bool {
    let punct = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b);
    match key.split_once('@') {
        None => {
            key.len() <= 256
                && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && key.bytes().all(punct)
        }
        Some((tenant, system)) => {
            (1..=241).contains(&tenant.len())
                && tenant
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant.bytes().all(punct)
                && (1..=14).contains(&system.len())
                && system
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase())
                && system.bytes().all(punct)
        }
    }
}

fn w3c_value_ok(value: &str) -> bool {
    let chr = |b: u8| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=';
    (1..=256).contains(&value.len())
        && value.bytes().all(chr)
        && value.bytes().last().is_some_and(|b| b != b' ')
}

impl TraceState {
    /// Parses a tracestate; the empty string is an empty tracestate.
    ///
    /// # Errors
    /// A [`SamplingError`] for a tracestate that breaks the W3C syntax or whose `ot` entry is
    /// malformed.
    pub fn parse(input: &str) -> Result<TraceState, SamplingError> {
        if input.len() > MAX_W3C_LENGTH {
            return Err(SamplingError::Size);
        }
        let mut state = TraceState::default();
        let mut members = 0;
        for member in input.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            members += 1;
            if members > MAX_W3C_MEMBERS {
                return Err(SamplingError::Syntax);
            }
            let (key, value) = member.split_once('=').ok_or(SamplingError::Syntax)?;
            if !w3c_key_ok(key) || !w3c_value_ok(value) {
                return Err(SamplingError::Syntax);
            }
            if key == "ot" {
                state.ot = OtelTraceState::parse(value)?;
            } else {
                state.others.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(state)
    }

    /// The encoding: the `ot` entry first (the one this writer changed, as W3C asks), then the
    /// others in their order.
    pub fn serialize(&self) -> String {
        let mut out = String::new();
        if !self.ot.is_empty() {
            out.push_str("ot=");
            self.ot.write(&mut out);
        }
        for (key, value) in &self.others {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_encode_as_the_collector_writes_them() {
        let th = |p: f64, prec: u8| {
            Threshold::from_probability_with_precision(p, prec)
                .unwrap()
                .tvalue()
        };
        assert_eq!(th(1.0, 4), "0");
        assert_eq!(th(0.5, 4), "8");
        assert_eq!(th(0.25, 4), "c");
        assert_eq!(th(0.01, 0), "fd70a3d70a3d71");
        assert_eq!(th(0.01, 3), "fd71");
        assert_eq!(th(0.4, 3), "99a");
        assert_eq!(th(0.6, 4), "6666");
        assert_eq!(th(0.4 * 0.5, 6), "cccccd");
        assert_eq!(th(0.4, 6), "99999a");
        // Leading zeros add precision: 10 significant digits after five zeros, from a
        // percentage held in 32 bits as the Collector's config holds it.
        let pct = ((1.0 - 8e-7) * 100.0) as f32;
        assert_eq!(th(f64::from(pct) / 100.0, 10), "00000cccccccd");
        // And small probabilities: 1% at 4 digits is written with 5.
        assert_eq!(th(0.01, 4), "fd70a");
        assert_eq!(
            Threshold::from_probability_with_precision(1e-20, 4),
            Err(SamplingError::ProbabilityRange)
        );
    }

    #[test]
    fn tvalues_and_rvalues_parse_as_the_spec_says() {
        assert_eq!(Threshold::parse("8").unwrap().unsigned(), 0x80000000000000);
        assert_eq!(
            Threshold::parse("80000000000000").unwrap(),
            Threshold::parse("8").unwrap()
        );
        assert_eq!(
            Threshold::parse("abababababababab"),
            Err(SamplingError::TValueLength)
        );
        assert_eq!(Threshold::parse("-1"), Err(SamplingError::Syntax));
        assert_eq!(Threshold::parse(""), Err(SamplingError::Syntax));
        assert_eq!(
            Randomness::parse("abababababababab"),
            Err(SamplingError::RValueLength)
        );
        assert_eq!(
            Randomness::parse("FD70A3D70A3D71").unwrap().unsigned(),
            0xfd70a3d70a3d71
        );
        let tid = hex::decode("fefefefefefefefefe80000000000000").unwrap();
        assert_eq!(
            Randomness::from_trace_id(&tid).unwrap().unsigned(),
            0x80000000000000
        );
        assert_eq!(Randomness::from_trace_id(&[0; 16]), None);
    }

    #[test]
    fn tracestate_keeps_other_vendors_and_puts_ot_first() {
        let mut ts =
            TraceState::parse("congo=t61rcWkgMzE, ot=rv:FD70A3D70A3D71;x:y ,rojo=00f067aa0ba902b7")
                .unwrap();
        assert_eq!(ts.ot.randomness().unwrap().unsigned(), 0xfd70a3d70a3d71);
        ts.ot
            .update_threshold(Threshold::parse("fd7").unwrap())
            .unwrap();
        assert_eq!(
            ts.serialize(),
            "ot=rv:FD70A3D70A3D71;th:fd7;x:y,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // A threshold may only fall in probability.
        assert!(
            ts.ot
                .update_threshold(Threshold::parse("8").unwrap())
                .is_err()
        );
        assert!(TraceState::parse("ot=th:8;rv:70000000000000").is_ok());
        assert_eq!(
            TraceState::parse("ot=rv:abababababababab").unwrap_err(),
            SamplingError::RValueLength
        );
        assert!(TraceState::parse("ot=th").is_err());
        assert!(TraceState::parse("Bad=1").is_err());
        assert_eq!(TraceState::parse("").unwrap().serialize(), "");
    }
}
