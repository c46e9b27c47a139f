//! OTLP logs as Loki streams, labelled the way the Collector's Loki exporter labelled them (so a
//! config and its dashboards move over unchanged):
//!
//! - default labels, each of which `default_labels_enabled` may turn off: `exporter="OTLP"`;
//!   `job` from `service.namespace/service.name` (or `service.name` alone; none without a
//!   name); `instance` from `service.instance.id`; `level` from the record's `level` attribute
//!   or, when it has none, from its severity number (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`,
//!   `FATAL`), only for records whose severity number is set;
//! - hints: `loki.resource.labels` (on the resource or the record) names resource attributes,
//!   `loki.attribute.labels` names record attributes, to become labels (a comma-separated string
//!   or an array; a name not found as a key is looked up as a path into map values, `http.req`
//!   finding `{"http": {"req": ...}}`); `loki.tenant` names the attribute whose value is the
//!   tenant (`X-Scope-OrgID`), the resource's first; `loki.format` on the resource chooses the
//!   line: `json` (default), `logfmt` or `raw`;
//! - hint attributes and attributes that became labels are left out of the line;
//! - label names are normalized as Prometheus label names (`service.name` → `service_name`), the
//!   same rule as the `prometheus` exporters'; empty values are no label (Prometheus' rule);
//! - a record left without any label cannot be stored by Loki: it is counted, not sent.
//!
//! The timestamp is the record's, else its observed time, else the time of export. Streams are
//! grouped by tenant and label set; entries are sorted by time within a stream, so that Loki
//! versions that refuse out-of-order entries take them.

mod line;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use sluice_core::anyvalue;
use sluice_core::labels::label_name;

pub(crate) use line::Format;

/// Names record attributes to become labels.
pub const HINT_ATTRIBUTES: &str = "loki.attribute.labels";
/// Names resource attributes to become labels.
pub const HINT_RESOURCES: &str = "loki.resource.labels";
/// Names the attribute whose value is the tenant.
pub const HINT_TENANT: &str = "loki.tenant";
/// Chooses the line format: `json`, `logfmt` or `raw`.
pub const HINT_FORMAT: &str = "loki.format";

fn is_hint(key: &str) -> bool {
    matches!(
        key,
        HINT_ATTRIBUTES | HINT_RESOURCES | HINT_TENANT | HINT_FORMAT
    )
}

/// Which default labels are set (`default_labels_enabled`: a label left out of the map stays on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultLabels {
    /// `exporter="OTLP"`.
    pub exporter: bool,
    /// `job` from `service.namespace` and `service.name`.
    pub job: bool,
    /// `instance` from `service.instance.id`.
    pub instance: bool,
    /// `level` from the severity.
    pub level: bool,
}

impl Default for DefaultLabels {
    fn default() -> Self {
        DefaultLabels {
            exporter: true,
            job: true,
            instance: true,
            level: true,
        }
    }
}

/// One Loki stream: its labels (normalized names, sorted) and its entries in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `(name, value)`, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(unix nanoseconds, line)`, sorted by time.
    pub entries: Vec<(i64, String)>,
}

impl Stream {
    /// The label set in Loki's selector syntax, as the push protobuf carries it:
    /// `{exporter="OTLP", job="shop/api"}`.
    pub fn selector(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push('=');
            sluice_core::labels::write_quoted(&mut out, value);
        }
        out.push('}');
        out
    }
}

/// The streams of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStreams {
    /// The tenant named by a `loki.tenant` hint; `None` where no hint names one (the configured
    /// headers then decide, e.g. a static `X-Scope-OrgID`).
    pub tenant: Option<String>,
    /// Sorted by label set.
    pub streams: Vec<Stream>,
}

/// What a batch of logs becomes.
#[derive(Debug, Default)]
pub struct Translation {
    /// Per tenant, in order of first appearance.
    pub tenants: Vec<TenantStreams>,
    /// Records left without any label, which Loki cannot store.
    pub missing_labels: usize,
}

/// Why an encoded request could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The request's framing is broken.
    #[error(transparent)]
    Framing(#[from] sluice_core::wire::WireError),
    /// A ResourceLogs does not decode.
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// Translates an encoded `ExportLogsServiceRequest`, one ResourceLogs decoded at a time;
/// `now_ns` stamps records that carry no time at all.
///
/// # Errors
/// [`DecodeError`] naming the framing or decoding problem.
pub fn translate_encoded(
    request: &[u8],
    defaults: DefaultLabels,
    now_ns: i64,
) -> Result<Translation, DecodeError> {
    let mut translator = Translator::new(defaults, now_ns);
    for message in sluice_core::wire::resource_messages(request) {
        let resource_logs = <ResourceLogs as prost::Message>::decode(message?)?;
        translator.resource_logs(&resource_logs);
    }
    Ok(translator.finish())
}

/// Where entries of one tenant and label set gather.
type StreamKey = (Option<String>, Vec<(String, String)>);

struct Translator {
    defaults: DefaultLabels,
    now_ns: i64,
    streams: HashMap<StreamKey, Vec<(i64, String)>>,
    tenant_order: Vec<Option<String>>,
    missing_labels: usize,
}

/// What a resource gives every one of its records.
struct ResourceContext<'a> {
    attributes: &'a [KeyValue],
    /// Default and hinted labels from the resource alone, by attribute key (not yet normalized).
    labels: BTreeMap<String, String>,
    /// The same, normalized, for records that add none of their own.
    normalized: Vec<(String, String)>,
    tenant: Option<String>,
    format: Format,
    /// The resource attributes as written in lines, for the common case that no record removes
    /// any more of them: `(removed keys, rendering)`.
    rendered: Option<(Vec<String>, Rendered)>,
}

/// The resource attributes as a line writes them.
pub(crate) enum Rendered {
    /// A JSON object, for `json` lines.
    Json(String),
    /// `resource_<key>=value` pairs, for `logfmt` lines.
    Logfmt(Vec<(String, String)>),
    /// Not written (`raw` lines).
    Nothing,
}

impl Translator {
    fn new(defaults: DefaultLabels, now_ns: i64) -> Self {
        Translator {
            defaults,
            now_ns,
            streams: HashMap::new(),
            tenant_order: Vec::new(),
            missing_labels: 0,
        }
    }

    fn resource_logs(&mut self, resource_logs: &ResourceLogs) {
        let attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let mut labels = BTreeMap::new();
        if self.defaults.exporter {
            labels.insert("exporter".to_owned(), "OTLP".to_owned());
        }
        if self.defaults.job
            && let Some(job) = job(attributes)
        {
            labels.insert("job".to_owned(), job);
        }
        if self.defaults.instance
            && let Some(instance) = get(attributes, "service.instance.id")
        {
            labels.insert("instance".to_owned(), text(instance));
        }
        if let Some(hint) = get(attributes, HINT_RESOURCES) {
            select(attributes, hint, &mut labels);
        }
        let tenant = get(attributes, HINT_TENANT).and_then(|hint| tenant(attributes, hint));
        let format = get(attributes, HINT_FORMAT)
            .map(|hint| Format::from_hint(&text(hint)))
            .unwrap_or_default();
        let mut resource = ResourceContext {
            attributes,
            normalized: normalize(labels.clone()),
            labels,
            tenant,
            format,
            rendered: None,
        };
        for scope_logs in &resource_logs.scope_logs {
            self.scope_logs(&mut resource, scope_logs);
        }
    }

    fn scope_logs(&mut self, resource: &mut ResourceContext<'_>, scope_logs: &ScopeLogs) {
        let scope = scope_logs.scope.as_ref();
        let scope_name = scope.map_or("", |s| s.name.as_str());
        let scope_version = scope.map_or("", |s| s.version.as_str());
        for record in &scope_logs.log_records {
            self.record(resource, (scope_name, scope_version), record);
        }
    }

    fn record(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: (&str, &str),
        record: &LogRecord,
    ) {
        let attributes = &record.attributes[..];
        let level = if self.defaults.level {
            level(record)
        } else {
            None
        };
        let own_hints = attributes
            .iter()
            .any(|kv| matches!(kv.key.as_str(), HINT_RESOURCES | HINT_ATTRIBUTES));
        // Most records add no label of their own: the resource's are used as they are.
        let mut labels = Cow::Borrowed(&resource.labels);
        if own_hints || level.is_some() {
            let labels = labels.to_mut();
            if let Some(hint) = get(attributes, HINT_RESOURCES) {
                select(resource.attributes, hint, labels);
            }
            if let Some(hint) = get(attributes, HINT_ATTRIBUTES) {
                select(attributes, hint, labels);
            }
            if let Some(level) = level {
                let level = get(attributes, "level").map_or_else(|| level.to_owned(), text);
                labels.insert("level".to_owned(), level);
            }
        }
        let tenant = resource
            .tenant
            .clone()
            .or_else(|| get(attributes, HINT_TENANT).and_then(|hint| tenant(attributes, hint)));

        // Attributes that became labels, and hints, are left out of the line.
        let removed = |key: &str| is_hint(key) || labels.contains_key(key);
        let own: Cow<'_, [KeyValue]> = if attributes.iter().any(|kv| removed(&kv.key)) {
            Cow::Owned(
                attributes
                    .iter()
                    .filter(|kv| !removed(&kv.key))
                    .cloned()
                    .collect(),
            )
        } else {
            Cow::Borrowed(attributes)
        };
        let resource_removed: Vec<String> = resource
            .attributes
            .iter()
            .filter(|kv| removed(&kv.key))
            .map(|kv| kv.key.clone())
            .collect();
        let cached = matches!(&resource.rendered, Some((keys, _)) if *keys == resource_removed);
        if !cached {
            let kept: Vec<KeyValue> = resource
                .attributes
                .iter()
                .filter(|kv| !resource_removed.contains(&kv.key))
                .cloned()
                .collect();
            let rendered = line::render_resource(resource.format, &kept);
            resource.rendered = Some((resource_removed, rendered));
        }
        let rendered = resource
            .rendered
            .as_ref()
            .map_or(&Rendered::Nothing, |(_, r)| r);
        let line = line::write(resource.format, record, &own, rendered, scope);

        let normalized = match labels {
            Cow::Borrowed(_) => resource.normalized.clone(),
            Cow::Owned(labels) => normalize(labels),
        };
        if normalized.is_empty() {
            self.missing_labels += 1;
            return;
        }
        if !self.tenant_order.contains(&tenant) {
            self.tenant_order.push(tenant.clone());
        }
        let timestamp = self.timestamp(record);
        self.streams
            .entry((tenant, normalized))
            .or_default()
            .push((timestamp, line));
    }

    fn timestamp(&self, record: &LogRecord) -> i64 {
        let nanos = if record.time_unix_nano != 0 {
            record.time_unix_nano
        } else if record.observed_time_unix_nano != 0 {
            record.observed_time_unix_nano
        } else {
            return self.now_ns;
        };
        i64::try_from(nanos).unwrap_or(i64::MAX)
    }

    fn finish(self) -> Translation {
        let mut by_tenant: HashMap<Option<String>, Vec<Stream>> = HashMap::new();
        for ((tenant, labels), mut entries) in self.streams {
            entries.sort_by_key(|(t, _)| *t);
            by_tenant
                .entry(tenant)
                .or_default()
                .push(Stream { labels, entries });
        }
        let tenants = self
            .tenant_order
            .into_iter()
            .filter_map(|tenant| {
                let mut streams = by_tenant.remove(&tenant)?;
                streams.sort_by(|a, b| a.labels.cmp(&b.labels));
                Some(TenantStreams { tenant, streams })
            })
            .collect();
        Translation {
            tenants,
            missing_labels: self.missing_labels,
        }
    }
}

/// Labels by attribute key as Loki labels: names normalized (a later key wins where two keys
/// normalize to one name), empty values and unnamable keys left out, sorted by name.
fn normalize(labels: BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut normalized: Vec<(String, String)> = Vec::with_capacity(labels.len());
    for (key, value) in labels {
        if value.is_empty() {
            continue;
        }
        let Some(name) = label_name(&key) else {
            continue;
        };
        match normalized.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => normalized.push((name, value)),
        }
    }
    normalized.sort();
    normalized
}

/// A value's string form (the specification's, as labels and tenants take it).
fn text(value: &Value) -> String {
    anyvalue::to_string(Some(value))
}

/// The value of the first attribute with this key.
fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// An attribute by key, else by a dotted path into map values.
fn lookup<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    if let Some(value) = get(attributes, key) {
        return Some(value);
    }
    let (first, rest) = key.split_once('.')?;
    let value = get(attributes, first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::KvlistValue(map) => lookup(&map.values, rest),
        _ => None,
    }
}

/// `job`: `service.namespace/service.name`, or `service.name` alone.
fn job(attributes: &[KeyValue]) -> Option<String> {
    let name = text(get(attributes, "service.name")?);
    Some(match get(attributes, "service.namespace") {
        Some(namespace) => format!("{}/{name}", text(namespace)),
        None => name,
    })
}

/// The attribute names a hint lists: a comma-separated string or an array of names.
fn hinted_names(hint: &Value) -> Vec<String> {
    match hint {
        Value::StringValue(names) => names.split(',').map(|n| n.trim().to_owned()).collect(),
        Value::ArrayValue(array) => array
            .values
            .iter()
            .map(|v: &AnyValue| anyvalue::to_string(v.value.as_ref()).trim().to_owned())
            .collect(),
        other => vec![text(other).trim().to_owned()],
    }
}

/// Adds the attributes a hint names as labels, keyed by the names as the hint gives them.
fn select(attributes: &[KeyValue], hint: &Value, labels: &mut BTreeMap<String, String>) {
    for name in hinted_names(hint) {
        if let Some(value) = lookup(attributes, &name) {
            labels.insert(name, text(value));
        }
    }
}

/// The tenant a `loki.tenant` hint names: the value of that attribute.
fn tenant(attributes: &[KeyValue], hint: &Value) -> Option<String> {
    let name = text(hint);
    lookup(attributes, name.trim())
        .map(text)
        .filter(|t| !t.is_empty())
}

/// The `level` of a record whose severity number is set.
fn level(record: &LogRecord) -> Option<&'static str> {
    Some(match record.severity_number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => return None,
    })
}
