//! Prometheus names for OTLP metrics, units and attribute keys, by the OpenTelemetry
//! specification ("OTLP Metric points to Prometheus": Metric Metadata and Metric Attributes).
//!
//! Where the specification and the Collector's translator (prometheus/otlptranslator, which
//! contrib's `prometheusremotewrite` exporter uses) differ, the specification wins:
//!
//! * **Consecutive underscores are always collapsed**, in metric and label names alike. The
//!   Collector keeps a `__x__` label wrapper intact and, with suffixes off, keeps `__` inside metric
//!   names. As a consequence no attribute can ever produce a reserved `__`-prefixed label.
//! * **A leading or trailing `_` of a metric name is kept** ("discouraged characters SHOULD be
//!   replaced with `_`"); the Collector splits the name into tokens and so trims them. A trailing
//!   `_` still disappears when a suffix is appended, since runs of `_` collapse.
//! * **A unit suffix is added unless the name already ends with the unit** (before the type
//!   suffix). The Collector skips the suffix when the unit word appears *anywhere* in the name
//!   (`seconds_since_boot` with unit `s` stays unsuffixed there; here it becomes
//!   `seconds_since_boot_seconds`).
//! * **`_total` is added unless the name already ends with `_total`**; the Collector removes every
//!   `total` token first (`total_requests` → `requests_total` there, `total_requests_total` here).
//! * **Only the bracketed portions of a unit are dropped** (`By{compressed}` → `bytes`); the
//!   Collector ignores the whole unit part that contains a brace.
//! * **The unit table is the specification's**, which has `kBy` for kilobytes (UCUM's prefix is
//!   a lower-case `k`); the Collector's `KBy` is accepted too.
//!
//! Kept from the Collector where the specification is silent: the `_ratio` suffix for gauges with
//! unit `1` (an implementation convention, not in the specification), unit `1` adding no suffix
//! otherwise, the per-unit words (`s` → `second`, `m` → `minute`, …, plus UCUM's `min`), the `_`
//! prefix of a metric name that starts with a digit, and the `key_` prefix of a label name that
//! does.

use sluice_core::labels::sanitize;

use crate::proto::MetricType;

/// What an OTLP metric becomes in Prometheus; it decides the type suffix and metadata type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    /// An OTLP Gauge: a Prometheus gauge.
    Gauge,
    /// A monotonic cumulative OTLP Sum: a Prometheus counter, named with `_total`.
    Counter,
    /// A non-monotonic cumulative OTLP Sum: a Prometheus gauge, without `_ratio`.
    NonMonotonicSum,
    /// An explicit-bucket OTLP Histogram: a classic Prometheus histogram.
    Histogram,
    /// An OTLP ExponentialHistogram: a Prometheus native histogram.
    ExponentialHistogram,
    /// An OTLP Summary: a Prometheus summary.
    Summary,
}

impl MetricKind {
    /// The Prometheus metadata type of the metric family.
    pub(crate) fn metric_type(self) -> MetricType {
        match self {
            MetricKind::Gauge | MetricKind::NonMonotonicSum => MetricType::Gauge,
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram | MetricKind::ExponentialHistogram => MetricType::Histogram,
            MetricKind::Summary => MetricType::Summary,
        }
    }

    /// The type-specific suffix (after the unit), if this kind with this unit has one.
    fn type_suffix(self, unit: &str) -> Option<&'static str> {
        match self {
            MetricKind::Counter => Some("total"),
            MetricKind::Gauge if unit.trim() == "1" => Some("ratio"),
            _ => None,
        }
    }
}

/// The UCUM units the specification's table (and the Collector) turn into words.
fn main_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "kBy" | "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        // Dimensionless: no word (a gauge gets `_ratio` instead, see `MetricKind::type_suffix`).
        "1" => "",
        _ => return None,
    })
}

/// The words for the denominator of a rate unit (`m/s` → `per_second`), singular.
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" | "min" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Whether a character may appear in a metric name (besides `_`, which is handled apart).
fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Removes UCUM annotations (`{packet}`): from each `{` through the next `}`, or through the end
/// when unbalanced. A stray `}` goes too.
fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = false;
    for c in unit.chars() {
        match c {
            '{' => depth = true,
            '}' => depth = false,
            c if !depth => out.push(c),
            _ => {}
        }
    }
    out
}

/// A unit word cleaned for use inside a metric name: invalid characters to `_`, runs collapsed,
/// no `_` at either end.
fn clean_unit(word: &str) -> String {
    sanitize(word, is_metric_char).trim_matches('_').to_owned()
}

/// The Prometheus word for an OTLP (UCUM) unit, as used for the name suffix and the UNIT
/// metadata: `s` → `seconds`, `By/s` → `bytes_per_second`, `{packet}/s` → `per_second`,
/// `1` → `` (empty), unknown units cleaned but otherwise kept (`custom.unit` → `custom_unit`).
pub(crate) fn unit_word(unit: &str) -> String {
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main, Some(per)),
        None => (unit, None),
    };
    let main = strip_annotations(main);
    let main = main.trim();
    let main = clean_unit(main_unit_word(main).unwrap_or(main));
    let per = per
        .map(|per| {
            let per = strip_annotations(per);
            let per = per.trim();
            clean_unit(per_unit_word(per).unwrap_or(per))
        })
        .unwrap_or_default();
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

/// The unit for a metric family's UNIT metadata: the unit word, or `ratio` for a gauge with unit
/// `1` (matching the name suffix).
pub(crate) fn metadata_unit(unit: &str, kind: MetricKind) -> String {
    match kind.type_suffix(unit) {
        Some("ratio") => "ratio".to_owned(),
        _ => unit_word(unit),
    }
}

/// The Prometheus metric (family) name of an OTLP metric, matching `[a-zA-Z_:][a-zA-Z0-9_:]*`:
///
/// 1. characters outside `[a-zA-Z0-9:]` become `_`, and runs of `_` collapse into one;
/// 2. with `add_suffixes`, the unit word (see [`unit_word`]) is appended unless the name already
///    ends with it (a name ending with the start of it gets only the rest: `io_bytes` with `By/s`
///    → `io_bytes_per_second`, so no suffix is ever doubled), then `_total` for a counter or
///    `_ratio` for a gauge with unit `1`, unless the name already ends with that suffix (in which
///    case the unit goes before it: `requests_total` with `1/s` → `requests_per_second_total`);
/// 3. a name starting with a digit gets a `_` prefix.
///
/// `None` when nothing but underscores remains (an empty name, or one of only invalid
/// characters): such a metric cannot be sent.
pub(crate) fn metric_name(
    name: &str,
    unit: &str,
    kind: MetricKind,
    add_suffixes: bool,
) -> Option<String> {
    let sanitized = sanitize(name, is_metric_char);
    let leading = sanitized.starts_with('_');
    let trailing = sanitized.len() > 1 && sanitized.ends_with('_');
    let mut tokens: Vec<String> = sanitized
        .split('_')
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect();
    let mut appended = false;
    if add_suffixes {
        let type_suffix = kind.type_suffix(unit);
        if let Some(suffix) = type_suffix
            && tokens.last().is_some_and(|last| last == suffix)
        {
            tokens.pop();
        }
        let word = unit_word(unit);
        let unit_tokens: Vec<&str> = word.split('_').filter(|t| !t.is_empty()).collect();
        // The longest end of the name that is a start of the unit is not repeated.
        let overlap = (0..=tokens.len().min(unit_tokens.len()))
            .rev()
            .find(|&k| {
                tokens[tokens.len() - k..]
                    .iter()
                    .zip(&unit_tokens[..k])
                    .all(|(a, b)| a == b)
            })
            .unwrap_or(0);
        for token in &unit_tokens[overlap..] {
            tokens.push((*token).to_owned());
            appended = true;
        }
        if let Some(suffix) = type_suffix {
            tokens.push(suffix.to_owned());
            appended = true;
        }
    }
    let body = tokens.join("_");
    let mut out = String::with_capacity(body.len() + 2);
    if leading {
        out.push('_');
    }
    out.push_str(&body);
    if trailing && !appended && !body.is_empty() {
        out.push('_');
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.chars().all(|c| c == '_') {
        return None;
    }
    Some(out)
}

/// A bucket bound or quantile as a label value, like Go's `strconv.FormatFloat(v, 'f', -1, 64)`:
/// the shortest decimal that reads back exactly, never in exponent form; `+Inf`, `-Inf`, `NaN`.
pub(crate) fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's Display for f64 is the shortest round-trip form without an exponent.
        format!("{value}")
    }
}
