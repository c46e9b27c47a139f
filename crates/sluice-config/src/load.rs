//! Reading a configuration file: YAML through the `config` crate, then `${env:VAR}` expansion.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{Problem, Problems};

/// The top level of a configuration file, in the OpenTelemetry Collector's shape.
///
/// Component sections keep their raw values: each component type deserializes its own typed
/// config, so that validation errors name the component's own fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `receivers:` by component id.
    #[serde(default)]
    pub receivers: BTreeMap<String, Value>,
    /// `processors:` by component id.
    #[serde(default)]
    pub processors: BTreeMap<String, Value>,
    /// `exporters:` by component id.
    #[serde(default)]
    pub exporters: BTreeMap<String, Value>,
    /// `extensions:` by component id.
    #[serde(default)]
    pub extensions: BTreeMap<String, Value>,
    /// Accepted for compatibility with Collector configs; sluice has no connectors yet, and
    /// validation says so when this is not empty.
    #[serde(default)]
    pub connectors: BTreeMap<String, Value>,
    /// `service:`, which says what runs.
    #[serde(default)]
    pub service: ServiceConfig,
}

/// The `service:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Extensions to start, by id.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Pipelines by id (`traces`, `metrics/2`, `logs/archive`).
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Sluice's own logs and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// One pipeline: where data comes from, what happens to it, where it goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Receiver ids feeding the pipeline.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// Processor ids, applied in this order.
    #[serde(default)]
    pub processors: Vec<String>,
    /// Exporter ids; each gets its own copy of the data.
    #[serde(default)]
    pub exporters: Vec<String>,
}

/// `service.telemetry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.telemetry.logs`.
    #[serde(default)]
    pub logs: LogsTelemetry,
    /// `service.telemetry.metrics`.
    #[serde(default)]
    pub metrics: MetricsTelemetry,
}

/// `service.telemetry.logs`: sluice's own structured logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsTelemetry {
    /// `debug`, `info` (default), `warn` or `error`; `RUST_LOG` overrides it when set.
    #[serde(default = "default_level")]
    pub level: String,
    /// `console` (human-readable text, default) or `json`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: default_level(),
            encoding: default_encoding(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

fn default_encoding() -> String {
    "console".to_owned()
}

/// `service.telemetry.metrics`: where the `otelcol_*` self-metrics are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTelemetry {
    /// `host:port` of the Prometheus endpoint (path `/metrics`); default `0.0.0.0:8888`.
    /// An empty string turns the endpoint off.
    #[serde(default = "default_metrics_address")]
    pub address: String,
    /// `none`, `basic`, `normal` (default) or `detailed`; `none` turns the endpoint off.
    #[serde(default = "default_metrics_level")]
    pub level: String,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: default_metrics_address(),
            level: default_metrics_level(),
        }
    }
}

fn default_metrics_address() -> String {
    "0.0.0.0:8888".to_owned()
}

fn default_metrics_level() -> String {
    "normal".to_owned()
}

/// Parses YAML text, expands environment references, and reads the top-level shape.
///
/// `env` answers variable look-ups (the process environment in production, a map in tests), so
/// nothing reads the environment behind the caller's back.
///
/// # Errors
/// Every problem found: YAML syntax, unset variables (each named with its path), unknown
/// top-level keys.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RawConfig, Problems> {
    let value = parse_yaml(text).map_err(|p| Problems(vec![p]))?;
    let mut problems = Vec::new();
    let value = expand(value, "", env, &mut problems);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        other => other,
    };
    serde_path_to_error::deserialize::<_, RawConfig>(value)
        .map_err(|e| Problems(vec![Problem::from_path_error(&e)]))
}

fn parse_yaml(text: &str) -> Result<Value, Problem> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| Problem::error("", format!("invalid YAML: {e}")))
}

/// Expands `${env:VAR}`, `${VAR}` and `${env:VAR:-default}` in every string of the tree, and
/// `$$` to a literal `$`. A string that is exactly one reference takes the type its value has in
/// YAML (`${env:PORT}` can fill a number), as in the Collector.
fn expand(
    value: Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Value {
    match value {
        Value::String(s) => expand_string(&s, path, env, problems),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| expand(v, &format!("{path}[{i}]"), env, problems))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let v = expand(v, &child, env, problems);
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn expand_string(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Value {
    if !s.contains('$') {
        return Value::String(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut references = 0;
    let mut only_reference = true;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        if pos > 0 {
            only_reference = false;
        }
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            only_reference = false;
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                problems.push(Problem::error(path, format!("unterminated `${{` in `{s}`")));
                return Value::String(s.to_owned());
            };
            let reference = &body[..end];
            match resolve(reference, env) {
                Ok(v) => out.push_str(&v),
                Err(message) => {
                    problems.push(Problem::error(path, message));
                }
            }
            references += 1;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            only_reference = false;
            rest = after;
        }
    }
    if !rest.is_empty() {
        only_reference = false;
    }
    out.push_str(rest);
    if references == 1 && only_reference {
        // Typed like YAML: "4317" becomes a number, "true" a boolean.
        if let Some(typed) = yaml_scalar(&out) {
            return typed;
        }
    }
    Value::String(out)
}

fn yaml_scalar(text: &str) -> Option<Value> {
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(Value::from(u));
    }
    let looks_numeric = text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
    match text.parse::<f64>() {
        Ok(f) if looks_numeric && f.is_finite() => {
            serde_json::Number::from_f64(f).map(Value::Number)
        }
        _ => None,
    }
}

fn resolve(reference: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (scheme, rest) = match reference.split_once(':') {
        Some((scheme, rest)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
            (Some(scheme), rest)
        }
        _ => (None, reference),
    };
    match scheme {
        None | Some("env") => {}
        Some(other) => {
            return Err(format!(
                "unsupported config provider `{other}` in `${{{reference}}}`; only `env` is supported"
            ));
        }
    }
    let (name, default) = match rest.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (rest, None),
    };
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(format!(
            "invalid environment variable name `{name}` in `${{{reference}}}`"
        ));
    }
    match (env(name), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set and has no default (write `${{env:{name}:-default}}` to give one)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4317".into()),
            "HOST" => Some("collector".into()),
            "TOKEN" => Some("s3cr3t".into()),
            _ => None,
        }
    }

    #[test]
    fn keeps_empty_component_sections() {
        let c = parse("exporters:\n  debug:\n  otlp/Upstream: {}\n", &env).unwrap();
        assert_eq!(c.exporters.len(), 2);
        assert_eq!(c.exporters["debug"], Value::Null);
        assert!(
            c.exporters.contains_key("otlp/Upstream"),
            "ids keep their case"
        );
    }

    #[test]
    fn expands_every_reference_form() {
        let c = parse(
            "receivers:\n  otlp:\n    a: ${env:HOST}:${PORT}\n    b: ${env:PORT}\n    c: ${env:MISSING:-fallback}\n    d: cost $$5\n    e: Bearer ${TOKEN}\n",
            &env,
        )
        .unwrap();
        let r = &c.receivers["otlp"];
        assert_eq!(r["a"], "collector:4317");
        assert_eq!(r["b"], 4317, "a lone reference takes its YAML type");
        assert_eq!(r["c"], "fallback");
        assert_eq!(r["d"], "cost $5");
        assert_eq!(r["e"], "Bearer s3cr3t");
    }

    #[test]
    fn an_unset_variable_without_default_is_an_error_naming_it_and_its_path() {
        let err = parse(
            "exporters:\n  otlp:\n    endpoint: ${env:NOPE}\n    headers: { x: \"${ALSO_NOPE}\" }\n",
            &env,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exporters.otlp.endpoint"), "{text}");
        assert!(text.contains("`NOPE` is not set"), "{text}");
        assert!(text.contains("exporters.otlp.headers.x"), "{text}");
        assert!(text.contains("`ALSO_NOPE`"), "{text}");
    }

    #[test]
    fn unknown_top_level_keys_are_rejected_with_their_name() {
        let err = parse("recievers: {}\n", &env).unwrap_err().to_string();
        assert!(err.contains("recievers"), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        let err = parse("receivers: [\n", &env).unwrap_err().to_string();
        assert!(err.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn reads_pipelines_and_telemetry() {
        let c = parse(
            "service:\n  pipelines:\n    traces/2:\n      receivers: [otlp]\n      exporters: [debug]\n  telemetry:\n    logs: { level: debug, encoding: json }\n    metrics: { address: 127.0.0.1:9999 }\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.service.pipelines["traces/2"].receivers, ["otlp"]);
        assert_eq!(c.service.telemetry.logs.encoding, "json");
        assert_eq!(c.service.telemetry.metrics.address, "127.0.0.1:9999");
    }
}
