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
}

impl Class {
    /// The section name in the file.
    pub fn section(self) -> &'static str {
        match self {
            Class::Receiver => "receivers",
            Class::Processor => "processors",
            Class::Exporter => "exporters",
            Class::Extension => "extensions",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Class::Receiver => "receiver",
            Class::Processor => "processor",
            Class::Exporter => "exporter",
            Class::Extension => "extension",
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
    if !config.connectors.is_empty() {
        problems.push(Problem::error(
            "connectors",
            "sluice does not support connectors yet",
        ));
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
    for (i, id) in config.service.extensions.iter().enumerate() {
        used.insert((Class::Extension, id.clone()));
        if !config.extensions.contains_key(id) {
            problems.push(Problem::error(
                format!("service.extensions[{i}]"),
                format!("extension `{id}` is not defined under `extensions`"),
            ));
        }
    }
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
    if !metrics.address.is_empty()
        && let Err(message) = check_endpoint(&metrics.address)
    {
        problems.push(Problem::error("service.telemetry.metrics.address", message));
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
                (Class::Processor, "batch") => Some(&["traces", "metrics", "logs"]),
                (Class::Exporter, "postgres") => Some(&["traces", "logs"]),
                (Class::Extension, "health_check") => Some(&[]),
                _ => None,
            }
        }
        fn type_names(&self, class: Class) -> Vec<&'static str> {
            match class {
                Class::Receiver => vec!["otlp"],
                Class::Processor => vec!["batch"],
                Class::Exporter => vec!["debug", "otlp", "postgres"],
                Class::Extension => vec!["health_check"],
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
