//! Sluice's configuration: the OpenTelemetry Collector's YAML shape, loaded with environment
//! expansion and validated strictly, every problem reported with its path.
//!
//! This crate knows the shape (receivers, processors, exporters, extensions, service.pipelines)
//! but no component: the binary hands validation a [`Catalog`] of the component types it has.

mod load;
mod units;
mod validate;

use std::fmt;

pub use load::{
    LogsTelemetry, MAX_CONFIG_BYTES, MetricsTelemetry, PipelineConfig, RawConfig, SelfMetricsOff,
    ServiceConfig, TelemetryConfig, parse,
};
pub use units::{ByteSize, HumanDuration};
pub use validate::{Catalog, Class, ComponentId, check_endpoint, connector_edges, validate};

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot run.
    Error,
    /// It runs, but something is probably not what was meant.
    Warning,
}

/// One thing wrong with a configuration, with the path of the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path (`exporters.otlp.endpoint`); empty for the whole file.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
            severity: Severity::Warning,
        }
    }

    /// Converts a serde error that knows where it happened.
    pub fn from_path_error<E: fmt::Display>(e: &serde_path_to_error::Error<E>) -> Self {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problem::error(path, e.inner().to_string())
    }

    /// Prefixes the path with `prefix` (a component's own path inside the file).
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{level}: {}", self.message)
        } else {
            write!(f, "{level}: {}: {}", self.path, self.message)
        }
    }
}

/// A list of problems, displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether any of them is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Warning)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Deserializes one component's raw config into its typed struct, reporting the exact path.
///
/// A missing section (`debug:` with nothing under it) reads as an empty map, so every field takes
/// its default.
///
/// # Errors
/// The first problem serde meets, with its path under `prefix`.
pub fn component_config<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: &serde_json::Value,
) -> Result<T, Problem> {
    let value = match value {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        other => other.clone(),
    };
    serde_path_to_error::deserialize(value).map_err(|e| Problem::from_path_error(&e).under(prefix))
}
