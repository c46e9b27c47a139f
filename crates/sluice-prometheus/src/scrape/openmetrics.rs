//! The OpenMetrics text format 1.0.0 (`enable_open_metrics: true`), served when the scraper asks
//! for `application/openmetrics-text`. Against the Prometheus text format it differs in:
//!
//! * a counter family is named without `_total`, its samples with it;
//! * types are `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `unknown`;
//! * counter samples and histogram buckets carry their latest exemplar
//!   (`# {trace_id="…",span_id="…"} value timestamp`), which is why people turn it on;
//! * timestamps are in seconds; the page ends with `# EOF`.
//!
//! Native histograms have no form in it either: they are left out and counted, as in the text
//! format.

use std::fmt::Write as _;

use super::{Family, Latest, Series, write_labels};
use crate::proto::{Label, MetricType};
use crate::translate::format_float;

/// The content type of the format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for this format.
pub(crate) fn accepted(accept: &str) -> bool {
    accept.contains("application/openmetrics-text")
}

/// Appends one family. Returns how many native histograms were left out.
pub(crate) fn write_family(
    out: &mut String,
    family: &str,
    meta: Option<&Family>,
    members: &[(&str, &Series)],
    send_timestamps: bool,
) -> u64 {
    let kind = meta.map_or(MetricType::Unknown, |f| f.metric_type);
    let (name, word) = match kind {
        MetricType::Counter => (family.strip_suffix("_total").unwrap_or(family), "counter"),
        MetricType::Gauge | MetricType::Info | MetricType::Stateset => (family, "gauge"),
        MetricType::Histogram => (family, "histogram"),
        MetricType::Gaugehistogram => (family, "gaugehistogram"),
        MetricType::Summary => (family, "summary"),
        MetricType::Unknown => (family, "unknown"),
    };
    let mut body = String::new();
    let mut left_out = 0;
    for (series_name, series) in members {
        // A counter's samples end in `_total`, whatever the translation named them.
        let sample_name = if kind == MetricType::Counter {
            format!("{name}_total")
        } else {
            (*series_name).to_owned()
        };
        let with_exemplars = kind == MetricType::Counter || series_name.ends_with("_bucket");
        for (labels, latest) in series.iter() {
            if latest.native.is_some() {
                left_out += 1;
                continue;
            }
            line(
                &mut body,
                &sample_name,
                labels,
                latest,
                send_timestamps,
                with_exemplars,
            );
        }
    }
    if body.is_empty() {
        return left_out;
    }
    let help = meta
        .map(|f| f.help.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    let _ = writeln!(out, "# TYPE {name} {word}");
    let _ = writeln!(out, "# HELP {name} {}", escape(help));
    out.push_str(&body);
    left_out
}

fn line(
    out: &mut String,
    name: &str,
    labels: &[Label],
    latest: &Latest,
    send_timestamps: bool,
    with_exemplars: bool,
) {
    out.push_str(name);
    write_labels(out, labels);
    let _ = write!(out, " {}", format_float(latest.value));
    if send_timestamps {
        write_seconds(out, latest.timestamp_ms);
    }
    if with_exemplars && let Some(e) = &latest.exemplar {
        out.push_str(" # ");
        write_labels(out, &e.labels);
        if e.labels.is_empty() {
            out.push_str("{}");
        }
        let _ = write!(out, " {}", format_float(e.value));
        write_seconds(out, e.timestamp);
    }
    out.push('\n');
}

/// ` <seconds>.<millis>`.
fn write_seconds(out: &mut String, ms: i64) {
    let _ = write!(out, " {}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
}

/// HELP text with `\`, newlines and `"` escaped, as OpenMetrics wants.
fn escape(help: &str) -> String {
    help.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}
