//! Whole-file validation: component ids and types, pipelines and the graph they form.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::{Problem, Problems, RawConfig};

/// The four kinds of component a configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// `receivers:`
    Receiver,
    /// `processors:`
    Processor,
    /// `exporters:`
    Exporter,
    /// `extensions:`
    Extension,
    /// `connectors:`: an exporter in one pipeline and a receiver in another.
    Connector,
}

impl Class {
    /// The section name in the file.
    pub fn section(self) -> &'static str {
        match self {
            Class::Receiver => "receivers",
            Class::Processor => "processors",
            Class::Exporter => "exporters",
            Class::Extension => "extensions",
            Class::Connector => "connectors",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Class::Receiver => "receiver",
            Class::Processor => "processor",
            Class::Exporter => "exporter",
            Class::Extension => "extension",
            Class::Connector => "connector",
        }
    }
}

/// A component id: `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    type_name: String,
    name: Option<String>,
}

impl ComponentId {
    /// Parses `type[/name]`.
    ///
    /// # Errors
    /// A message saying what is wrong with the id.
    pub fn parse(id: &str) -> Result<Self, String> {
        let (type_name, name) = match id.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (id, None),
        };
        let type_ok = type_name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && type_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !type_ok {
            return Err(format!(
                "invalid component id `{id}`: the type must start with a letter and hold only letters, digits and `_`"
            ));
        }
        if let Some(n) = name
            && (n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == '/'))
        {
            return Err(format!(
                "invalid component id `{id}`: the name after `/` must be non-empty, without spaces or `/`"
            ));
        }
        Ok(ComponentId {
            type_name: type_name.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    /// The component type (`otlp`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The optional name after the slash.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{n}", self.type_name),
            None => f.write_str(&self.type_name),
        }
    }
}

/// What validation needs to know of the component types a binary has.
pub trait Catalog {
    /// The pipeline types (`traces`, `metrics`, `logs`) a component type supports, or `None` when
    /// the type is unknown. Extensions return an empty list.
    fn signals(&self, class: Class, type_name: &str) -> Option<&'static [&'static str]>;

    /// Every known type of a class, for "did you mean" messages.
    fn type_names(&self, class: Class) -> Vec<&'static str>;

    /// Checks one component's own configuration; `path` is where it sits in the file.
    fn check(&self, class: Class, id: &ComponentId, path: &str, value: &Value) -> Vec<Problem>;

    /// Whether a connector type takes `from` data (as an exporter of a `from` pipeline) and
    /// emits `to` data (as a receiver of a `to` pipeline).
    fn connects(&self, _type_name: &str, _from: &str, _to: &str) -> bool {
        false
    }

    /// Whether a processor type holds data and hands it on later (`batch`, a tail sampler).
    fn holds_data(&self, _type_name: &str) -> bool {
        false
    }

    /// Whether a processor, configured so, keeps what it holds in a write-ahead log of its own
    /// (`tail_sampling` with `storage`).
    fn keeps_own_log(&self, _type_name: &str, _config: &Value) -> bool {
        false
    }

    /// Whether a processor type removes what must never be stored (`redaction`), so that it
    /// must run before a persistent queue writes the data to disk.
    fn guards_storage(&self, _type_name: &str) -> bool {
        false
    }

    /// Checks a connector's config against the pipelines that receive from it.
    fn check_connector(
        &self,
        _type_name: &str,
        _path: &str,
        _value: &Value,
        _receiving: &[&str],
    ) -> Vec<Problem> {
        Vec::new()
    }
}

const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

/// Validates a parsed configuration against a catalog of component types.
///
/// Collects every problem rather than stopping at the first: unknown types, invalid component
/// settings, pipelines naming undefined or unsuitable components, and (as warnings) components
/// defined but never used.
pub fn validate(config: &RawConfig, catalog: &dyn Catalog) -> Problems {
    let mut problems = Vec::new();
    let sections = [
        (Class::Receiver, &config.receivers),
        (Class::Processor, &config.processors),
        (Class::Exporter, &config.exporters),
        (Class::Extension, &config.extensions),
        (Class::Connector, &config.connectors),
    ];
    for (class, section) in sections {
        for (id, value) in section {
            let path = format!("{}.{id}", class.section());
            let parsed = match ComponentId::parse(id) {
                Ok(parsed) => parsed,
                Err(message) => {
                    problems.push(Problem::error(path, message));
                    continue;
                }
            };
            if catalog.signals(class, parsed.type_name()).is_none() {
                problems.push(Problem::error(
                    path,
                    format!(
                        "unknown {} type `{}`; known types: {}",
                        class.noun(),
                        parsed.type_name(),
                        catalog.type_names(class).join(", ")
                    ),
                ));
                continue;
            }
            problems.extend(catalog.check(class, &parsed, &path, value));
        }
    }
    for id in config.connectors.keys() {
        for (class, section) in [
            (Class::Receiver, &config.receivers),
            (Class::Exporter, &config.exporters),
        ] {
            if section.contains_key(id) {
                problems.push(Problem::error(
                    format!("connectors.{id}"),
                    format!(
                        "`{id}` is defined both as a connector and under `{}`; a pipeline could not tell which is meant",
                        class.section()
                    ),
                ));
            }
        }
    }

    let mut used: BTreeSet<(Class, String)> = BTreeSet::new();
    if config.service.pipelines.is_empty() {
        problems.push(Problem::error(
            "service.pipelines",
            "no pipelines are configured; add at least one (traces, metrics or logs)",
        ));
    }
    for (pipeline_id, pipeline) in &config.service.pipelines {
        let path = format!("service.pipelines.{pipeline_id}");
        let signal = match ComponentId::parse(pipeline_id) {
            Ok(id) if SIGNALS.contains(&id.type_name()) => {
                SIGNALS.into_iter().find(|s| *s == id.type_name())
            }
            Ok(id) => {
                problems.push(Problem::error(
                    &path,
                    format!(
                        "unknown pipeline type `{}`; use traces, metrics or logs",
                        id.type_name()
                    ),
                ));
                None
            }
            Err(message) => {
                problems.push(Problem::error(&path, message));
                None
            }
        };
        let lists = [
            (
                Class::Receiver,
                "receivers",
                &pipeline.receivers,
                &config.receivers,
            ),
            (
                Class::Processor,
                "processors",
                &pipeline.processors,
                &config.processors,
            ),
            (
                Class::Exporter,
                "exporters",
                &pipeline.exporters,
                &config.exporters,
            ),
        ];
        for (class, key, list, defined) in lists {
            if list.is_empty() && class != Class::Processor {
                problems.push(Problem::error(
                    format!("{path}.{key}"),
                    format!("a pipeline needs at least one {}", class.noun()),
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, id) in list.iter().enumerate() {
                let item_path = format!("{path}.{key}[{i}]");
                if !seen.insert(id) {
                    problems.push(Problem::error(
                        &item_path,
                        format!("{} `{id}` is listed twice", class.noun()),
                    ));
                }
                let connector = class != Class::Processor
                    && config.connectors.contains_key(id)
                    && !defined.contains_key(id);
                if connector {
                    used.insert((Class::Connector, id.clone()));
                    continue;
                }
                used.insert((class, id.clone()));
                if !defined.contains_key(id) {
                    problems.push(Problem::error(
                        &item_path,
                        format!(
                            "{} `{id}` is not defined under `{}`",
                            class.noun(),
                            class.section()
                        ),
                    ));
                    continue;
                }
                let (Some(signal), Ok(parsed)) = (signal, ComponentId::parse(id)) else {
                    continue;
                };
                if let Some(supported) = catalog.signals(class, parsed.type_name())
                    && !supported.contains(&signal)
                {
                    problems.push(Problem::error(
                        &item_path,
                        format!(
                            "{} `{id}` does not support {signal}; it supports {}",
                            class.noun(),
                            supported.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    problems.extend(check_connectors(config, catalog));
    problems.extend(check_persistent_queues(config, catalog));
    for (i, id) in config.service.extensions.iter().enumerate() {
        used.insert((Class::Extension, id.clone()));
        if !config.extensions.contains_key(id) {
            problems.push(Problem::error(
                format!("service.extensions[{i}]"),
                format!("extension `{id}` is not defined under `extensions`"),
            ));
        }
    }
    problems.extend(check_authenticators(config));
    problems.extend(check_stores(config));
    for (class, section) in sections {
        for id in section.keys() {
            if !used.contains(&(class, id.clone())) {
                problems.push(Problem::warning(
                    format!("{}.{id}", class.section()),
                    format!(
                        "{} `{id}` is defined but not used by any {}; it will not run",
                        class.noun(),
                        if class == Class::Extension {
                            "`service.extensions` entry"
                        } else {
                            "pipeline"
                        }
                    ),
                ));
            }
        }
    }

    let logs = &config.service.telemetry.logs;
    if !["debug", "info", "warn", "error", "trace"]
        .contains(&logs.level.to_ascii_lowercase().as_str())
    {
        problems.push(Problem::error(
            "service.telemetry.logs.level",
            format!(
                "unknown log level `{}`; use debug, info, warn or error",
                logs.level
            ),
        ));
    }
    if !["console", "json", "text"].contains(&logs.encoding.as_str()) {
        problems.push(Problem::error(
            "service.telemetry.logs.encoding",
            format!("unknown encoding `{}`; use console or json", logs.encoding),
        ));
    }
    let metrics = &config.service.telemetry.metrics;
    if let Some(address) = metrics.address.as_deref().filter(|a| !a.is_empty()) {
        if let Err(message) = check_endpoint(address) {
            problems.push(Problem::error("service.telemetry.metrics.address", message));
        }
        let port = crate::load::port_of(address);
        if let Some((id, port)) = config
            .scrape_ports()
            .into_iter()
            .find(|(_, p)| Some(*p) == port)
        {
            problems.push(Problem::error(
                "service.telemetry.metrics.address",
                format!(
                    "port {port} is also exporters.{id}'s endpoint: give one of them another port"
                ),
            ));
        }
    } else if metrics.address.is_none()
        && let Err(why) = config.self_metrics_address()
        && metrics.level != "none"
    {
        problems.push(Problem::warning(
            "service.telemetry.metrics.address",
            format!("the self-metrics are off: {why}"),
        ));
    }
    if !["none", "basic", "normal", "detailed"].contains(&metrics.level.as_str()) {
        problems.push(Problem::error(
            "service.telemetry.metrics.level",
            format!(
                "unknown level `{}`; use none, basic, normal or detailed",
                metrics.level
            ),
        ));
    }
    Problems(problems)
}

/// The exporter of a pipeline with a persistent queue (`sending_queue.storage: file`), if any.
fn persistent_exporter<'a>(config: &'a RawConfig, exporters: &'a [String]) -> Option<&'a str> {
    exporters
        .iter()
        .find(|id| {
            config
                .exporters
                .get(*id)
                .and_then(|c| c.get("sending_queue"))
                .is_some_and(|q| {
                    q.get("storage").and_then(Value::as_str) == Some("file")
                        && q.get("enabled").and_then(Value::as_bool) != Some(false)
                })
        })
        .map(String::as_str)
}

/// The exporter types whose stores an extension can read (`jaeger_query.storage.traces`).
const READABLE_STORES: [&str; 2] = ["memory", "postgres"];

/// Every `storage: {traces: X}` under an extension must name a `memory` or `postgres` exporter
/// that runs in a traces pipeline: a store nobody writes would answer every query with nothing.
fn check_stores(config: &RawConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (id, value) in &config.extensions {
        if id.split('/').next() != Some("jaeger_query") {
            continue;
        }
        let Some(name) = value
            .get("storage")
            .and_then(|s| s.get("traces"))
            .and_then(|t| t.as_str())
        else {
            continue;
        };
        let path = format!("extensions.{id}.storage.traces");
        let kind = name.split('/').next().unwrap_or(name);
        if !config.exporters.contains_key(name) {
            problems.push(Problem::error(
                path,
                format!("exporter `{name}` is not defined under `exporters`"),
            ));
        } else if !READABLE_STORES.contains(&kind) {
            problems.push(Problem::error(
                path,
                format!(
                    "exporter `{name}` keeps no readable store; name a {} exporter",
                    READABLE_STORES.join(" or ")
                ),
            ));
        } else if !config.service.pipelines.iter().any(|(pipeline, p)| {
            pipeline.split('/').next() == Some("traces") && p.exporters.iter().any(|e| e == name)
        }) {
            problems.push(Problem::error(
                path,
                format!("exporter `{name}` is in no traces pipeline, so its store stays empty"),
            ));
        }
    }
    problems
}

/// Every `auth: {authenticator: X}` under a receiver or an exporter must name an extension that
/// is defined and listed in `service.extensions` (it must run to be asked), and a `basicauth`
/// must be configured for the side that names it.
fn check_authenticators(config: &RawConfig) -> Vec<Problem> {
    fn walk(value: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let here = format!("{path}.{k}");
                if k == "auth"
                    && let Some(name) = v.get("authenticator").and_then(|a| a.as_str())
                {
                    out.push((format!("{here}.authenticator"), name.to_owned()));
                }
                walk(v, &here, out);
            }
        }
    }
    let mut found = Vec::new();
    for (id, value) in &config.receivers {
        walk(value, &format!("receivers.{id}"), &mut found);
    }
    // An extension serving requests (`jaeger_query`) starts after the extensions listed before
    // it, so the authenticator it names must be one of those.
    let mut problems = Vec::new();
    for (id, value) in &config.extensions {
        let before = found.len();
        walk(value, &format!("extensions.{id}"), &mut found);
        let position = |name: &str| config.service.extensions.iter().position(|e| e == name);
        for (path, name) in &found[before..] {
            if let (Some(own), Some(theirs)) = (position(id), position(name))
                && theirs > own
            {
                problems.push(Problem::error(
                    path.clone(),
                    format!("authenticator `{name}` must be listed before `{id}` in service.extensions: extensions start in that order"),
                ));
            }
        }
    }
    let servers = found.len();
    for (id, value) in &config.exporters {
        walk(value, &format!("exporters.{id}"), &mut found);
    }
    for (i, (path, name)) in found.into_iter().enumerate() {
        let Some(extension) = config.extensions.get(&name) else {
            problems.push(Problem::error(
                path,
                format!("authenticator `{name}` is not defined under `extensions`"),
            ));
            continue;
        };
        if !config.service.extensions.contains(&name) {
            problems.push(Problem::error(
                path,
                format!("authenticator `{name}` is not listed in `service.extensions`, so it does not run"),
            ));
            continue;
        }
        // basicauth is one side or the other, by which of its keys is set.
        if name.split('/').next() == Some("basicauth") {
            let (side, key) = if i < servers {
                ("server", "htpasswd")
            } else {
                ("client", "client_auth")
            };
            if extension.get(key).is_none() {
                problems.push(Problem::error(
                    path,
                    format!("`{name}` authenticates {side}s only with `{key}` set"),
                ));
            }
        }
    }
    problems
}

/// The rule for persistent queues: a pipeline's disk log is written right before its first
/// processor that holds data, so clients are answered once their data is on disk; processors
/// after it run on what the exporters read back, the reading standing in for `batch`. Any other
/// processor that holds data cannot be honoured there, and a processor that guards storage
/// (`redaction`) placed after the log would let what it removes reach the disk.
fn check_persistent_queues(config: &RawConfig, catalog: &dyn Catalog) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (pipeline_id, pipeline) in &config.service.pipelines {
        let Some(exporter) = persistent_exporter(config, &pipeline.exporters) else {
            continue;
        };
        let type_of = |id: &String| {
            ComponentId::parse(id)
                .ok()
                .map(|p| p.type_name().to_owned())
        };
        let own_log = |id: &String, t: &str| {
            config
                .processors
                .get(id)
                .is_some_and(|c| catalog.keeps_own_log(t, c))
        };
        let log_at = pipeline
            .processors
            .iter()
            .position(|id| type_of(id).is_some_and(|t| catalog.holds_data(&t) && !own_log(id, &t)));
        for (i, id) in pipeline.processors.iter().enumerate() {
            let Some(type_name) = type_of(id) else {
                continue;
            };
            if let Some(at) = log_at
                && i > at
                && catalog.guards_storage(&type_name)
            {
                let first = &pipeline.processors[at];
                problems.push(Problem::error(
                    format!("service.pipelines.{pipeline_id}.processors[{i}]"),
                    format!(
                        "processor `{id}` must come before `{first}`: exporter `{exporter}` has a persistent queue, whose log is written before `{first}`, so what `{id}` removes would be stored on disk. List `{id}` before `{first}` (it works item by item, so the result is the same)"
                    ),
                ));
            }
            // The log keeps the data, not the request metadata that came with it: what reads
            // that metadata after the log would silently find none.
            let after_log = log_at.is_some_and(|at| i >= at);
            let settings = config.processors.get(id);
            if after_log
                && type_name == "batch"
                && settings.is_some_and(|c| {
                    c.get("metadata_keys")
                        .and_then(|k| k.as_array())
                        .is_some_and(|k| !k.is_empty())
                })
            {
                problems.push(Problem::error(
                    format!("processors.{id}.metadata_keys"),
                    format!(
                        "cannot be honoured in pipeline `{pipeline_id}`: exporter `{exporter}` has a persistent queue, whose log keeps data but not request metadata, and whose reader stands in for `{id}`. Keep tenants apart in front of it (a `routing` connector with `context: request`), or use a memory queue"
                    ),
                ));
            }
            if after_log && settings.is_some_and(reads_client_context) {
                problems.push(Problem::error(
                    format!("service.pipelines.{pipeline_id}.processors[{i}]"),
                    format!(
                        "processor `{id}` reads `from_context`, but it runs after the persistent queue of exporter `{exporter}`, whose log keeps data but not request metadata. List it before the first processor that holds data"
                    ),
                ));
            }
            let type_name = type_name.as_str();
            if own_log(id, type_name) {
                if let Some(at) = log_at
                    && i > at
                {
                    let first = &pipeline.processors[at];
                    problems.push(Problem::error(
                        format!("service.pipelines.{pipeline_id}.processors[{i}]"),
                        format!(
                            "processor `{id}` keeps its own write-ahead log and must come before `{first}`, where the persistent queue of exporter `{exporter}` writes its log"
                        ),
                    ));
                }
            } else if type_name != "batch" && catalog.holds_data(type_name) {
                problems.push(Problem::error(
                    format!("service.pipelines.{pipeline_id}.processors[{i}]"),
                    format!(
                        "processor `{id}` holds data before handing it on, and exporter `{exporter}` has a persistent queue: the queue's log is written before the first processor that holds data, so that a client is answered only once its data is on disk, and only `batch` can be stood in for by the queue's reader. Give `{id}` a write-ahead log of its own (`storage`), or run it in a pipeline of its own in front of this one, joined by a `forward` connector"
                    ),
                ));
            }
        }
    }
    problems
}

/// Whether a component's config takes values from the request (`from_context` anywhere in it).
fn reads_client_context(config: &serde_json::Value) -> bool {
    match config {
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "from_context" || reads_client_context(v)),
        serde_json::Value::Array(items) => items.iter().any(reads_client_context),
        _ => false,
    }
}

/// Checks how pipelines use connectors: each connector is an exporter in some pipeline and a
/// receiver in another, for a pair of signals its type supports, and the pipelines joined by
/// connectors form no cycle.
fn check_connectors(config: &RawConfig, catalog: &dyn Catalog) -> Vec<Problem> {
    let mut problems = Vec::new();
    let signal_of = |pipeline_id: &str| {
        ComponentId::parse(pipeline_id)
            .ok()
            .and_then(|id| SIGNALS.into_iter().find(|s| *s == id.type_name()))
    };
    for id in config.connectors.keys() {
        let Ok(parsed) = ComponentId::parse(id) else {
            continue;
        };
        if catalog
            .signals(Class::Connector, parsed.type_name())
            .is_none()
        {
            continue;
        }
        let pipelines = &config.service.pipelines;
        let from: Vec<(&String, &str)> = pipelines
            .iter()
            .filter(|(_, p)| p.exporters.contains(id))
            .filter_map(|(pid, _)| Some((pid, signal_of(pid)?)))
            .collect();
        let to: Vec<(&String, &str)> = pipelines
            .iter()
            .filter(|(_, p)| p.receivers.contains(id))
            .filter_map(|(pid, _)| Some((pid, signal_of(pid)?)))
            .collect();
        let path = format!("connectors.{id}");
        let receiving: Vec<&str> = to.iter().map(|(p, _)| p.as_str()).collect();
        problems.extend(catalog.check_connector(
            parsed.type_name(),
            &path,
            &config.connectors[id],
            &receiving,
        ));
        if from.is_empty() != to.is_empty() {
            let (used, missing) = if from.is_empty() {
                ("a receiver", "an exporter")
            } else {
                ("an exporter", "a receiver")
            };
            problems.push(Problem::error(
                &path,
                format!("connector `{id}` is used as {used} but not as {missing}: a connector joins the pipeline it exports from to the pipelines it receives into"),
            ));
            continue;
        }
        for (pipeline, signal) in &from {
            if !to
                .iter()
                .any(|(_, to)| catalog.connects(parsed.type_name(), signal, to))
            {
                problems.push(Problem::error(
                    format!("service.pipelines.{pipeline}.exporters"),
                    format!(
                        "connector `{id}` takes {signal} here, but no pipeline receiving from it is of a kind it can emit from {signal}"
                    ),
                ));
            }
        }
        for (pipeline, signal) in &to {
            if !from
                .iter()
                .any(|(_, from)| catalog.connects(parsed.type_name(), from, signal))
            {
                problems.push(Problem::error(
                    format!("service.pipelines.{pipeline}.receivers"),
                    format!(
                        "connector `{id}` emits {signal} here, but no pipeline exporting to it gives it data it can turn into {signal}"
                    ),
                ));
            }
        }
    }
    if let Some(cycle) = connector_cycle(config) {
        problems.push(Problem::error(
            "service.pipelines",
            format!(
                "connectors join pipelines in a cycle, so data would go round for ever: {cycle}"
            ),
        ));
    }
    problems
}

/// The pipelines downstream of `pipeline` through connectors, with the connector that joins them.
pub fn connector_edges<'a>(config: &'a RawConfig, pipeline: &str) -> Vec<(&'a str, &'a str)> {
    let Some(p) = config.service.pipelines.get(pipeline) else {
        return Vec::new();
    };
    let mut edges = Vec::new();
    for connector in p
        .exporters
        .iter()
        .filter(|e| config.connectors.contains_key(*e))
    {
        for (next, q) in &config.service.pipelines {
            if q.receivers.contains(connector) {
                edges.push((connector.as_str(), next.as_str()));
            }
        }
    }
    edges
}

/// A cycle of pipelines joined by connectors, written `a -[c]-> b -[d]-> a`, if there is one.
fn connector_cycle(config: &RawConfig) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        config: &'a RawConfig,
        pipeline: &'a str,
        marks: &mut std::collections::BTreeMap<&'a str, Mark>,
        path: &mut Vec<(&'a str, &'a str)>,
    ) -> Option<String> {
        marks.insert(pipeline, Mark::Open);
        for (connector, next) in connector_edges(config, pipeline) {
            path.push((connector, next));
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|(_, p)| *p == next).unwrap_or(0);
                    let mut text = next.to_owned();
                    for (c, p) in &path[start + 1..] {
                        text.push_str(&format!(" -[{c}]-> {p}"));
                    }
                    return Some(text);
                }
                Mark::New => {
                    if let Some(cycle) = visit(config, next, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
            path.pop();
        }
        marks.insert(pipeline, Mark::Done);
        None
    }
    let mut marks = std::collections::BTreeMap::new();
    for pipeline in config.service.pipelines.keys() {
        if marks.get(pipeline.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            let mut path = vec![("", pipeline.as_str())];
            if let Some(cycle) = visit(config, pipeline, &mut marks, &mut path) {
                return Some(cycle);
            }
        }
    }
    None
}

/// Checks a `host:port` listening endpoint.
///
/// # Errors
/// A message naming what is wrong (missing port, port out of range).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!(
            "endpoint `{endpoint}` needs a port, like `localhost:4317`"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "endpoint `{endpoint}` needs a host, like `0.0.0.0:{port}`"
        ));
    }
    match port.parse::<u16>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "invalid port `{port}` in endpoint `{endpoint}`; ports are 0 to 65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Severity, parse};

    struct TestCatalog;

    impl Catalog for TestCatalog {
        fn signals(&self, class: Class, type_name: &str) -> Option<&'static [&'static str]> {
            match (class, type_name) {
                (Class::Receiver, "otlp") | (Class::Exporter, "otlp" | "debug") => {
                    Some(&["traces", "metrics", "logs"])
                }
                (Class::Processor, "batch" | "tail_sampling" | "redaction" | "attributes") => {
                    Some(&["traces", "metrics", "logs"])
                }
                (Class::Exporter, "postgres") => Some(&["traces", "logs"]),
                (Class::Exporter, "memory") => Some(&["traces"]),
                (Class::Extension, "health_check" | "jaeger_query") => Some(&[]),
                (Class::Connector, "forward" | "spanmetrics") => {
                    Some(&["traces", "metrics", "logs"])
                }
                _ => None,
            }
        }
        fn type_names(&self, class: Class) -> Vec<&'static str> {
            match class {
                Class::Receiver => vec!["otlp"],
                Class::Processor => vec!["batch"],
                Class::Exporter => vec!["debug", "memory", "otlp", "postgres"],
                Class::Extension => vec!["health_check", "jaeger_query"],
                Class::Connector => vec!["forward", "spanmetrics"],
            }
        }
        fn holds_data(&self, type_name: &str) -> bool {
            matches!(type_name, "batch" | "tail_sampling")
        }
        fn keeps_own_log(&self, type_name: &str, config: &Value) -> bool {
            type_name == "tail_sampling" && config.get("storage").is_some()
        }
        fn guards_storage(&self, type_name: &str) -> bool {
            type_name == "redaction"
        }
        fn connects(&self, type_name: &str, from: &str, to: &str) -> bool {
            match type_name {
                "forward" => from == to,
                "spanmetrics" => from == "traces" && to == "metrics",
                _ => false,
            }
        }
        fn check(&self, _: Class, _: &ComponentId, path: &str, value: &Value) -> Vec<Problem> {
            match value.get("bad") {
                Some(_) => vec![Problem::error(format!("{path}.bad"), "unknown field `bad`")],
                None => vec![],
            }
        }
    }

    fn problems(yaml: &str) -> Vec<String> {
        let config = parse(yaml, &|_| None).unwrap();
        validate(&config, &TestCatalog)
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_config_has_no_problems() {
        let p = problems(
            "receivers: {otlp: {}}\nprocessors: {batch: {}}\nexporters: {debug: {}}\nextensions: {health_check: {}}\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces: {receivers: [otlp], processors: [batch], exporters: [debug]}\n    metrics/2: {receivers: [otlp], exporters: [debug]}\n",
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn collects_every_problem_with_its_path() {
        let p = problems(
            "receivers: {otlp: {bad: 1}, kafka: {}}\nexporters: {postgres: {}, debug: {}, otlp/unused: {}}\nservice:\n  pipelines:\n    metrics: {receivers: [otlp, otlp], processors: [nope], exporters: [postgres]}\n    spans: {receivers: [otlp], exporters: [debug]}\n    logs: {receivers: [otlp], exporters: []}\n",
        );
        let expect = [
            "error: receivers.otlp.bad: unknown field `bad`",
            "error: receivers.kafka: unknown receiver type `kafka`; known types: otlp",
            "error: service.pipelines.metrics.receivers[1]: receiver `otlp` is listed twice",
            "error: service.pipelines.metrics.processors[0]: processor `nope` is not defined under `processors`",
            "error: service.pipelines.metrics.exporters[0]: exporter `postgres` does not support metrics; it supports traces, logs",
            "error: service.pipelines.spans: unknown pipeline type `spans`; use traces, metrics or logs",
            "error: service.pipelines.logs.exporters: a pipeline needs at least one exporter",
            "warning: exporters.otlp/unused: exporter `otlp/unused` is defined but not used by any pipeline; it will not run",
        ];
        for e in expect {
            assert!(p.iter().any(|x| x == e), "missing {e:?} in {p:#?}");
        }
    }

    #[test]
    fn a_query_service_reads_only_a_store_some_traces_pipeline_writes() {
        let config = |store: &str, exporters: &str| {
            format!(
                "receivers: {{otlp: {{}}}}\nexporters: {{debug: {{}}, memory: {{}}, postgres: {{}}}}\nextensions: {{jaeger_query: {{storage: {{traces: {store}}}}}}}\nservice:\n  extensions: [jaeger_query]\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [{exporters}]}}\n    logs: {{receivers: [otlp], exporters: [postgres]}}\n"
            )
        };
        let errors = |yaml: String| -> Vec<String> {
            problems(&yaml)
                .into_iter()
                .filter(|p| p.starts_with("error"))
                .collect()
        };
        assert!(errors(config("memory", "memory, debug")).is_empty());
        assert!(errors(config("postgres", "postgres")).is_empty());
        let at = "error: extensions.jaeger_query.storage.traces: ";
        assert_eq!(
            errors(config("debug", "debug, memory")),
            [format!(
                "{at}exporter `debug` keeps no readable store; name a memory or postgres exporter"
            )]
        );
        assert_eq!(
            errors(config("nothing", "memory")),
            [format!(
                "{at}exporter `nothing` is not defined under `exporters`"
            )]
        );
        assert_eq!(
            errors(config("postgres", "memory")),
            [format!(
                "{at}exporter `postgres` is in no traces pipeline, so its store stays empty"
            )]
        );
    }

    #[test]
    fn connectors_join_pipelines_of_signals_they_support() {
        let p = problems(
            "receivers: {otlp: {}}\nexporters: {debug: {}}\nconnectors: {forward: {}, spanmetrics: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [forward, spanmetrics]}\n    traces/2: {receivers: [forward], exporters: [debug]}\n    metrics: {receivers: [spanmetrics], exporters: [debug]}\n",
        );
        assert!(p.is_empty(), "{p:?}");
        let p = problems(
            "receivers: {otlp: {}}\nexporters: {debug: {}}\nconnectors: {forward: {}, spanmetrics: {}, forward/half: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [forward, forward/half]}\n    logs: {receivers: [forward], exporters: [debug]}\n    metrics: {receivers: [otlp], exporters: [spanmetrics]}\n    traces/2: {receivers: [spanmetrics], exporters: [debug]}\n",
        );
        let expect = [
            "error: service.pipelines.traces.exporters: connector `forward` takes traces here, but no pipeline receiving from it is of a kind it can emit from traces",
            "error: service.pipelines.logs.receivers: connector `forward` emits logs here, but no pipeline exporting to it gives it data it can turn into logs",
            "error: connectors.forward/half: connector `forward/half` is used as an exporter but not as a receiver: a connector joins the pipeline it exports from to the pipelines it receives into",
            "error: service.pipelines.metrics.exporters: connector `spanmetrics` takes metrics here, but no pipeline receiving from it is of a kind it can emit from metrics",
        ];
        for e in expect {
            assert!(p.iter().any(|x| x == e), "missing {e:?} in {p:#?}");
        }
    }

    #[test]
    fn a_processor_holding_data_cannot_sit_behind_a_persistent_queue() {
        let config = |storage: &str| {
            format!(
                "receivers: {{otlp: {{}}}}\nprocessors: {{batch: {{}}, tail_sampling: {{}}}}\nexporters: {{otlp: {{sending_queue: {{storage: {storage}, directory: /q}}}}}}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [tail_sampling, batch], exporters: [otlp]}}\n"
            )
        };
        let p = problems(&config("file"));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("error: service.pipelines.traces.processors[0]: processor `tail_sampling` holds data before handing it on, and exporter `otlp` has a persistent queue"),
            "{p:#?}"
        );
        assert!(problems(&config("memory")).is_empty());
    }

    #[test]
    fn a_processor_with_its_own_log_may_come_before_a_persistent_queue_and_not_after() {
        let config = |order: &str| {
            format!(
                "receivers: {{otlp: {{}}}}\nprocessors: {{batch: {{}}, tail_sampling: {{storage: {{directory: /wal}}}}}}\nexporters: {{otlp: {{sending_queue: {{storage: file, directory: /q}}}}}}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [{order}], exporters: [otlp]}}\n"
            )
        };
        assert_eq!(
            problems(&config("tail_sampling, batch")),
            Vec::<String>::new()
        );
        let p = problems(&config("batch, tail_sampling"));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].contains("keeps its own write-ahead log and must come before `batch`"),
            "{p:#?}"
        );
    }

    #[test]
    fn redaction_after_the_log_of_a_persistent_queue_is_refused() {
        let config = |order: &str, storage: &str| {
            format!(
                "receivers: {{otlp: {{}}}}\nprocessors: {{batch: {{}}, redaction: {{}}}}\nexporters: {{otlp: {{sending_queue: {{storage: {storage}, directory: /q}}}}}}\nservice:\n  pipelines:\n    logs: {{receivers: [otlp], processors: [{order}], exporters: [otlp]}}\n"
            )
        };
        assert_eq!(
            problems(&config("batch, redaction", "file")),
            [
                "error: service.pipelines.logs.processors[1]: processor `redaction` must come before `batch`: exporter `otlp` has a persistent queue, whose log is written before `batch`, so what `redaction` removes would be stored on disk. List `redaction` before `batch` (it works item by item, so the result is the same)"
            ]
        );
        assert!(problems(&config("redaction, batch", "file")).is_empty());
        assert!(problems(&config("batch, redaction", "memory")).is_empty());
    }

    #[test]
    fn request_metadata_is_not_read_after_the_log_of_a_persistent_queue() {
        let config = |order: &str, storage: &str| {
            format!(
                "receivers: {{otlp: {{}}}}\nprocessors: {{batch: {{metadata_keys: [x-tenant]}}, attributes: {{actions: [{{key: t, from_context: metadata.x-tenant, action: upsert}}]}}}}\nexporters: {{otlp: {{sending_queue: {{storage: {storage}, directory: /q}}}}}}\nservice:\n  pipelines:\n    logs: {{receivers: [otlp], processors: [{order}], exporters: [otlp]}}\n"
            )
        };
        assert_eq!(
            problems(&config("batch, attributes", "file")),
            [
                "error: processors.batch.metadata_keys: cannot be honoured in pipeline `logs`: exporter `otlp` has a persistent queue, whose log keeps data but not request metadata, and whose reader stands in for `batch`. Keep tenants apart in front of it (a `routing` connector with `context: request`), or use a memory queue",
                "error: service.pipelines.logs.processors[1]: processor `attributes` reads `from_context`, but it runs after the persistent queue of exporter `otlp`, whose log keeps data but not request metadata. List it before the first processor that holds data",
            ]
        );
        assert!(problems(&config("batch, attributes", "memory")).is_empty());
    }

    #[test]
    fn a_cycle_of_connectors_is_refused_with_its_path() {
        let p = problems(
            "receivers: {otlp: {}}\nexporters: {debug: {}}\nconnectors: {forward/a: {}, forward/b: {}, forward/c: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [forward/a]}\n    traces/1: {receivers: [forward/a, forward/c], exporters: [forward/b]}\n    traces/2: {receivers: [forward/b], exporters: [forward/c, debug]}\n",
        );
        assert!(
            p.contains(&"error: service.pipelines: connectors join pipelines in a cycle, so data would go round for ever: traces/1 -[forward/b]-> traces/2 -[forward/c]-> traces/1".to_owned()),
            "{p:#?}"
        );
        let p = problems(
            "receivers: {otlp: {}}\nexporters: {debug: {}}\nconnectors: {forward: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp, forward], exporters: [forward, debug]}\n",
        );
        assert!(
            p.contains(&"error: service.pipelines: connectors join pipelines in a cycle, so data would go round for ever: traces -[forward]-> traces".to_owned()),
            "{p:#?}"
        );
    }

    #[test]
    fn unused_components_are_warnings_not_errors() {
        let config = parse(
            "receivers: {otlp: {}}\nexporters: {debug: {}, otlp: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n",
            &|_| None,
        )
        .unwrap();
        let p = validate(&config, &TestCatalog);
        assert!(!p.has_errors());
        assert_eq!(p.warnings().count(), 1);
        assert_eq!(p.0[0].severity, Severity::Warning);
    }

    #[test]
    fn parses_component_ids() {
        let id = ComponentId::parse("otlp/upstream").unwrap();
        assert_eq!((id.type_name(), id.name()), ("otlp", Some("upstream")));
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("9lives").is_err());
        assert_eq!(ComponentId::parse("debug").unwrap().to_string(), "debug");
    }

    #[test]
    fn checks_endpoints() {
        assert!(check_endpoint("localhost:4317").is_ok());
        assert!(check_endpoint("[::1]:4317").is_ok());
        assert!(
            check_endpoint("localhost")
                .unwrap_err()
                .contains("needs a port")
        );
        assert!(
            check_endpoint("0.0.0.0:99999")
                .unwrap_err()
                .contains("invalid port `99999`")
        );
    }
}
