//! Reading a configuration file: a bounded pre-scan of the YAML events, YAML through the
//! `config` crate, then `${env:VAR}` expansion.
//!
//! The pre-scan exists because a config file is input too: the `config` crate builds its trees
//! recursively, copies an anchored node at every alias and clones each value once per mapping
//! above it, so a 20 KB file nested 10,000 deep overflowed the stack and an 852-byte alias bomb
//! allocated gigabytes. Every step after the pre-scan is bounded by what it checked.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;
use yaml_rust2::ScanError;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

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
    /// `host:port` of the Prometheus endpoint (path `/metrics`); unset, `0.0.0.0:8888` (see
    /// [`RawConfig::self_metrics_address`]). An empty string turns the endpoint off.
    #[serde(default)]
    pub address: Option<String>,
    /// `none`, `basic`, `normal` (default) or `detailed`; `none` turns the endpoint off.
    #[serde(default = "default_metrics_level")]
    pub level: String,
    /// Server TLS for the endpoint, with the receivers' keys (`cert_file`, `key_file`,
    /// `client_ca_file`, ...); checked and built by the binary, which knows their shape.
    #[serde(default)]
    pub tls: Option<serde_json::Value>,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: None,
            level: default_metrics_level(),
            tls: None,
        }
    }
}

/// The self-metrics address when none is configured.
pub(crate) const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:8888";

/// The port of a `host:port` endpoint.
pub(crate) fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

impl RawConfig {
    /// The `prometheus` exporters (ids `prometheus` and `prometheus/...`) and the ports they
    /// listen on.
    pub fn scrape_ports(&self) -> Vec<(String, u16)> {
        self.exporters
            .iter()
            .filter(|(id, _)| *id == "prometheus" || id.starts_with("prometheus/"))
            .filter_map(|(id, v)| {
                let port = port_of(v.get("endpoint")?.as_str()?)?;
                Some((id.clone(), port))
            })
            .collect()
    }

    /// Where the self-metrics are served, or why they are not: off when the address is empty
    /// or the level `none`; off too when no address is configured and a `prometheus` exporter
    /// takes the default port (configs written for the Collector do: its telemetry settings
    /// move it; sluice keeps the exporter where the config puts it and says so).
    ///
    /// # Errors
    /// [`SelfMetricsOff`], saying why.
    pub fn self_metrics_address(&self) -> Result<String, SelfMetricsOff> {
        let metrics = &self.service.telemetry.metrics;
        if metrics.level == "none" {
            return Err(SelfMetricsOff::LevelNone);
        }
        match &metrics.address {
            Some(a) if a.is_empty() => Err(SelfMetricsOff::EmptyAddress),
            Some(a) => Ok(a.clone()),
            None => {
                let default_port = port_of(DEFAULT_METRICS_ADDRESS);
                match self
                    .scrape_ports()
                    .into_iter()
                    .find(|(_, p)| Some(*p) == default_port)
                {
                    Some((exporter, port)) => Err(SelfMetricsOff::PortTaken { exporter, port }),
                    None => Ok(DEFAULT_METRICS_ADDRESS.to_owned()),
                }
            }
        }
    }
}

/// Why the self-metrics are not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelfMetricsOff {
    /// `service.telemetry.metrics.level: none`.
    #[error("service.telemetry.metrics.level is none")]
    LevelNone,
    /// `service.telemetry.metrics.address: ""`.
    #[error("service.telemetry.metrics.address is empty")]
    EmptyAddress,
    /// No address configured, and a `prometheus` exporter listens on the default port.
    #[error(
        "exporters.{exporter} listens on port {port}, the self-metrics default; set service.telemetry.metrics.address to serve them elsewhere"
    )]
    PortTaken {
        /// The exporter's id.
        exporter: String,
        /// The port.
        port: u16,
    },
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
/// Every problem found: a file past the loader's bounds (size, nesting depth, alias expansion,
/// see [`check_bounds`]), YAML syntax, unset variables (each named with its path), unknown
/// top-level keys.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RawConfig, Problems> {
    check_bounds(text).map_err(|p| Problems(vec![p]))?;
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

/// Largest config file accepted, in bytes. Collector configs are kilobytes; 4 MiB leaves room
/// for inline certificates and long OTTL statements, and caps what the YAML scanner may hold
/// before the pre-scan sees an event: it keeps every token of a flow collection (`[...]`) until
/// the collection closes, about ten bytes per byte of input.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting of collections, counted after alias expansion and with each `.` of a
/// top-level key as one more level (the `config` crate splits `a.b: 1` into nested tables).
/// Real Collector configs stay under 15 levels. Every step after the pre-scan (the `config`
/// crate's tree building and conversions, [`expand`], serde, dropping the trees) recurses once
/// per level: 10,000 levels overflowed the main thread's stack.
const MAX_NESTING_DEPTH: usize = 64;

/// Most nodes (scalars and collections) a document may have once every alias is expanded. The
/// loader copies the anchored node at each alias, so nine levels of ten aliases each turn
/// 852 bytes into a billion nodes; a large real config has a few thousand.
const MAX_EXPANDED_NODES: u64 = 100_000;

/// Most work, in bytes copied, that loading may do. The `config` crate deep-merges each
/// top-level section by cloning every value once per mapping above it, and [`expand`] writes
/// each value's whole key path, so a node costs (its text + [`NODE_COST`]) times its level,
/// plus the length of its key path. The node and depth bounds alone let a 200 KB file (100,000
/// scalars under 63 mappings) make `config` allocate 600 MB, and let one long string behind an
/// alias be copied at every use. A large real config (5,000 nodes, 6 levels) costs about 4 MB.
const MAX_LOAD_COST: u64 = 64 * 1024 * 1024;

/// What one node counts in [`MAX_LOAD_COST`] besides its text: measured, a value in the
/// `config` crate's tree with its share of the map that holds it takes about 100 bytes.
const NODE_COST: u64 = 100;

/// Refuses a document that the loader could not read in bounded stack, memory and time.
///
/// Reads the YAML events with yaml-rust2, the parser under the `config` crate (so both see the
/// same document), without building any tree or expanding any alias: each anchored node's
/// expanded size is computed once, when it closes, and each alias adds that size. The parser
/// keeps its nesting on a heap stack when pulled event by event (only its `load` recurses), and
/// its scanner refuses flow collections nested past 255 levels.
///
/// # Errors
/// The first bound exceeded, with its line where there is one: the file size
/// ([`MAX_CONFIG_BYTES`]), nesting depth ([`MAX_NESTING_DEPTH`]), expanded node count
/// ([`MAX_EXPANDED_NODES`]), loading work ([`MAX_LOAD_COST`]), a top-level key `config` would
/// read as an array index, or a YAML syntax error.
fn check_bounds(text: &str) -> Result<(), Problem> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Problem::error(
            "",
            format!(
                "the config is {} bytes, more than the {MAX_CONFIG_BYTES} ({} MiB) a config may have",
                text.len(),
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    let mut bounds = Bounds::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(scan_problem)?;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(value, _, anchor, _) => bounds.scalar(value, anchor, mark)?,
            Event::SequenceStart(anchor, _) => bounds.open(false, anchor, mark)?,
            Event::MappingStart(anchor, _) => bounds.open(true, anchor, mark)?,
            Event::SequenceEnd | Event::MappingEnd => bounds.close(),
            Event::Alias(id) => bounds.alias(id, mark)?,
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

fn scan_problem(e: ScanError) -> Problem {
    // The scanner's own cap on flow nesting (255 levels) fires before any event reaches the
    // depth check, because it holds a flow collection's tokens until the collection closes.
    if e.info() == "recursion limit exceeded" {
        return too_deep("nesting", e.marker());
    }
    Problem::error("", format!("invalid YAML: {e}"))
}

fn too_deep(what: &str, mark: &Marker) -> Problem {
    Problem::error(
        "",
        format!(
            "{what} deeper than {MAX_NESTING_DEPTH} levels at {}",
            position(mark)
        ),
    )
}

fn position(mark: &Marker) -> String {
    // yaml-rust2 counts lines from 1 and columns from 0.
    format!("line {}, column {}", mark.line(), mark.col() + 1)
}

/// Running sums over the expanded document.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    nodes: u64,
    /// Sum of the nodes' weights: [`NODE_COST`] plus their text.
    weight: u64,
    /// Sum of weight × level + key path length: see [`MAX_LOAD_COST`].
    cost: u64,
}

/// An open collection.
#[derive(Debug)]
struct Frame {
    mapping: bool,
    /// Its anchor id; 0 for none.
    anchor: usize,
    /// 1 for a document's root, counting aliases expanded and dotted top-level keys.
    level: usize,
    /// Bytes of the keys above it, its own key included.
    path: u64,
    /// A mapping's nodes alternate key, value; true when the next one is a key.
    next_is_key: bool,
    /// Levels and path bytes that the last key adds to its value.
    key_levels: usize,
    key_bytes: u64,
    /// The totals before it opened: the difference when it closes is its own expanded size.
    opened_at: Totals,
    /// Deepest collection level inside it, aliases expanded.
    deepest: usize,
}

/// What an alias to a closed anchored node adds.
#[derive(Debug)]
struct Anchor {
    nodes: u64,
    weight: u64,
    /// Its cost placed at level 0 under an empty key path: placed at level `l` under a path of
    /// `p` bytes it costs `l * weight + p * nodes + cost`.
    cost: u64,
    /// Collection levels inside, its own included; 0 for a scalar.
    height: usize,
    /// An anchored scalar's text, for an alias used as a key.
    scalar: Option<String>,
}

/// Where the next node goes.
struct Place {
    level: usize,
    path: u64,
    /// Whether it is a mapping key, and whether of a document's top-level mapping.
    key: Option<bool>,
}

#[derive(Debug, Default)]
struct Bounds {
    stack: Vec<Frame>,
    total: Totals,
    anchors: HashMap<usize, Anchor>,
}

impl Bounds {
    /// Places the next node in its parent, and moves a mapping on from key to value or back.
    fn place(&mut self) -> Place {
        let top_level = self.stack.len() == 1;
        let Some(parent) = self.stack.last_mut() else {
            return Place {
                level: 1,
                path: 0,
                key: None,
            };
        };
        if !parent.mapping {
            return Place {
                level: parent.level + 1,
                path: parent.path,
                key: None,
            };
        }
        let is_key = parent.next_is_key;
        parent.next_is_key = !is_key;
        if is_key {
            // What this key adds to its value is known once the key is read: `set_key`.
            parent.key_levels = 0;
            parent.key_bytes = 0;
            Place {
                level: parent.level + 1,
                path: parent.path,
                key: Some(top_level),
            }
        } else {
            Place {
                level: parent.level + 1 + parent.key_levels,
                path: parent.path.saturating_add(parent.key_bytes),
                key: None,
            }
        }
    }

    /// Records what the scalar key just placed adds to its value's place.
    fn set_key(&mut self, text: &str, top_level: bool, mark: &Marker) -> Result<(), Problem> {
        let mut levels = 0;
        if top_level {
            // `config` reads a top-level key as a path: `a.b` nests a table per `.`, and `a[9]`
            // grows an array to that index (`a[100000000000]` aborted on allocation).
            if text.contains('[') {
                return Err(Problem::error(
                    "",
                    format!(
                        "the top-level key `{}` at {} contains `[`, which the loader would read as an array index; sluice has no such key",
                        shorten(text),
                        position(mark)
                    ),
                ));
            }
            levels = text.matches('.').count();
            if 1 + levels > MAX_NESTING_DEPTH {
                return Err(too_deep(
                    &format!(
                        "the top-level key `{}` (each `.` a level) nests",
                        shorten(text)
                    ),
                    mark,
                ));
            }
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.key_levels = levels;
            parent.key_bytes = text.len() as u64;
        }
        Ok(())
    }

    fn scalar(&mut self, text: String, anchor: usize, mark: Marker) -> Result<(), Problem> {
        let place = self.place();
        let weight = NODE_COST.saturating_add(text.len() as u64);
        let cost = weight
            .saturating_mul(place.level as u64)
            .saturating_add(place.path);
        self.add(1, weight, cost, &mark, "the node")?;
        if let Some(top_level) = place.key {
            self.set_key(&text, top_level, &mark)?;
        }
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchor {
                    nodes: 1,
                    weight,
                    cost: 0,
                    height: 0,
                    scalar: Some(text),
                },
            );
        }
        Ok(())
    }

    fn open(&mut self, mapping: bool, anchor: usize, mark: Marker) -> Result<(), Problem> {
        let place = self.place();
        if place.level > MAX_NESTING_DEPTH {
            return Err(too_deep("nesting", &mark));
        }
        let opened_at = self.total;
        let cost = NODE_COST
            .saturating_mul(place.level as u64)
            .saturating_add(place.path);
        self.add(1, NODE_COST, cost, &mark, "the node")?;
        self.stack.push(Frame {
            mapping,
            anchor,
            level: place.level,
            path: place.path,
            next_is_key: true,
            key_levels: 0,
            key_bytes: 0,
            opened_at,
            deepest: place.level,
        });
        Ok(())
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if let Some(parent) = self.stack.last_mut() {
            parent.deepest = parent.deepest.max(frame.deepest);
        }
        if frame.anchor != 0 {
            let nodes = self.total.nodes - frame.opened_at.nodes;
            let weight = self.total.weight - frame.opened_at.weight;
            let placed = (frame.level as u64)
                .saturating_mul(weight)
                .saturating_add(frame.path.saturating_mul(nodes));
            let cost = (self.total.cost - frame.opened_at.cost).saturating_sub(placed);
            self.anchors.insert(
                frame.anchor,
                Anchor {
                    nodes,
                    weight,
                    cost,
                    height: frame.deepest - frame.level + 1,
                    scalar: None,
                },
            );
        }
    }

    fn alias(&mut self, id: usize, mark: Marker) -> Result<(), Problem> {
        let place = self.place();
        // An alias to a node still open (`&a [*a]`) has nothing to copy yet: the loader makes
        // it a bad value, one node.
        let (nodes, weight, cost, height) = match self.anchors.get(&id) {
            Some(a) => (a.nodes, a.weight, a.cost, a.height),
            None => (1, NODE_COST, 0, 0),
        };
        if height > 0 {
            let deepest = place.level + height - 1;
            if deepest > MAX_NESTING_DEPTH {
                return Err(too_deep("the alias expands to nesting", &mark));
            }
            if let Some(parent) = self.stack.last_mut() {
                parent.deepest = parent.deepest.max(deepest);
            }
        }
        let cost = (place.level as u64)
            .saturating_mul(weight)
            .saturating_add(place.path.saturating_mul(nodes))
            .saturating_add(cost);
        self.add(nodes, weight, cost, &mark, "the alias")?;
        if let Some(top_level) = place.key {
            // Taken out and put back rather than cloned: a long anchored key used often would
            // otherwise be copied at every use.
            let text = self.anchors.get_mut(&id).and_then(|a| a.scalar.take());
            let result = self.set_key(text.as_deref().unwrap_or(""), top_level, &mark);
            if let (Some(a), Some(text)) = (self.anchors.get_mut(&id), text) {
                a.scalar = Some(text);
            }
            result?;
        }
        Ok(())
    }

    fn add(
        &mut self,
        nodes: u64,
        weight: u64,
        cost: u64,
        mark: &Marker,
        what: &str,
    ) -> Result<(), Problem> {
        let t = &mut self.total;
        t.nodes = t.nodes.saturating_add(nodes);
        t.weight = t.weight.saturating_add(weight);
        t.cost = t.cost.saturating_add(cost);
        if t.nodes > MAX_EXPANDED_NODES {
            return Err(Problem::error(
                "",
                format!(
                    "{what} at {} takes the document past {MAX_EXPANDED_NODES} nodes once aliases are expanded",
                    position(mark)
                ),
            ));
        }
        if t.cost > MAX_LOAD_COST {
            return Err(Problem::error(
                "",
                format!(
                    "{what} at {} makes the document too large to load: over {} MiB once aliases are expanded and each node and key path is counted at every level of nesting above it",
                    position(mark),
                    MAX_LOAD_COST >> 20
                ),
            ));
        }
        Ok(())
    }
}

/// At most 40 characters of a key, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Expands `${env:VAR}`, `${VAR}` and `${env:VAR:-default}` in every string of the tree, and
/// `$$` to a literal `$`. A string that is exactly one reference takes the type its value has in
/// YAML (`${env:PORT}` can fill a number), as in the Collector.
///
/// Recursive: [`check_bounds`] has refused documents nested deeper than [`MAX_NESTING_DEPTH`],
/// and counted the key paths written here in [`MAX_LOAD_COST`].
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

    #[test]
    fn a_prometheus_exporter_on_the_default_port_turns_the_self_metrics_off_unless_placed() {
        let none = |_: &str| None;
        let exporter = "exporters:\n  prometheus:\n    endpoint: 0.0.0.0:8888\n";
        let c = parse(exporter, &none).unwrap();
        assert_eq!(c.scrape_ports(), [("prometheus".to_owned(), 8888)]);
        let why = c.self_metrics_address().unwrap_err();
        assert_eq!(
            why,
            SelfMetricsOff::PortTaken {
                exporter: "prometheus".into(),
                port: 8888
            }
        );
        assert!(
            why.to_string()
                .starts_with("exporters.prometheus listens on port 8888"),
            "{why}"
        );
        let placed = format!(
            "{exporter}service:\n  telemetry:\n    metrics:\n      address: 127.0.0.1:9999\n"
        );
        let c = parse(&placed, &none).unwrap();
        assert_eq!(c.self_metrics_address().unwrap(), "127.0.0.1:9999");
        let c = parse(
            "exporters:\n  prometheus/x:\n    endpoint: 0.0.0.0:8889\n",
            &none,
        )
        .unwrap();
        assert_eq!(c.self_metrics_address().unwrap(), DEFAULT_METRICS_ADDRESS);
    }

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
        assert_eq!(
            c.service.telemetry.metrics.address.as_deref(),
            Some("127.0.0.1:9999")
        );
    }

    fn refusal(text: &str) -> String {
        parse(text, &env).unwrap_err().to_string()
    }

    /// The billion-laughs document: nine levels, each a list of ten aliases to the one below.
    fn alias_bomb() -> String {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let items = vec![format!("*{prev}"); 10].join(",");
            text.push_str(&format!("{name}: &{name} [{items}]\n"));
        }
        text
    }

    #[test]
    fn refuses_a_deep_block_sequence_on_one_line() {
        let err = refusal(&format!("{}x\n", "- ".repeat(10_000)));
        assert!(err.contains("nesting deeper than 64 levels"), "{err}");
        assert!(err.contains("line 1, column 129"), "{err}");
    }

    #[test]
    fn refuses_a_deep_block_sequence_over_many_lines() {
        let text: String = (0..1_000)
            .map(|i| format!("{}-\n", "  ".repeat(i)))
            .collect();
        let err = refusal(&text);
        assert!(
            err.contains("nesting deeper than 64 levels at line 65"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_deep_block_mapping() {
        let text: String = (0..1_600)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect();
        let err = refusal(&text);
        assert!(
            err.contains("nesting deeper than 64 levels at line 65"),
            "{err}"
        );
    }

    #[test]
    fn refuses_deep_flow_collections() {
        for text in [
            "[".repeat(100_000),
            format!("k: {}{}", "[".repeat(70), "]".repeat(70)),
            format!("{}1{}", "{a: ".repeat(70), "}".repeat(70)),
        ] {
            let err = refusal(&text);
            assert!(err.contains("nesting deeper than 64 levels"), "{err}");
        }
    }

    #[test]
    fn refuses_an_alias_bomb_naming_the_alias_that_crosses_the_bound() {
        let text = alias_bomb();
        assert!(text.len() < 1_000, "{} bytes", text.len());
        let err = refusal(&text);
        assert!(
            err.contains("the alias at line 5, column 29 takes the document past 100000 nodes"),
            "{err}"
        );
    }

    #[test]
    fn refuses_an_alias_that_nests_past_the_depth_bound() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let text = format!(
            "a: &a {}\nb: {}*a{}\n",
            deep(40),
            "[".repeat(30),
            "]".repeat(30)
        );
        let err = refusal(&text);
        assert!(
            err.contains("the alias expands to nesting deeper than 64 levels at line 2"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_long_string_repeated_through_aliases() {
        let text = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 100].join(",")
        );
        let err = refusal(&text);
        assert!(
            err.contains("the alias at line 2") && err.contains("too large to load"),
            "{err}"
        );
    }

    #[test]
    fn refuses_many_nodes_deep_under_mappings() {
        // Within the node and depth bounds, but `config` would clone the list once per mapping.
        let mut text: String = (0..60).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
        text.push_str(&format!(
            "{}b: [{}]\n",
            "  ".repeat(60),
            vec!["1"; 20_000].join(",")
        ));
        let err = refusal(&text);
        assert!(err.contains("too large to load"), "{err}");
    }

    #[test]
    fn refuses_a_long_key_above_many_nodes() {
        // Every value's path repeats the key above it. An explicit key (`?`) may be longer than
        // the 1024 characters of an implicit one.
        let text = format!(
            "? {}\n: [{}]\n",
            "k".repeat(1 << 20),
            vec!["1"; 1_000].join(",")
        );
        let err = refusal(&text);
        assert!(err.contains("too large to load"), "{err}");
    }

    #[test]
    fn refuses_a_file_over_the_size_bound() {
        let text = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
        let err = refusal(&text);
        assert!(err.contains("more than the 4194304 (4 MiB)"), "{err}");
    }

    #[test]
    fn refuses_a_top_level_key_with_an_array_subscript() {
        let err = refusal("a[100000000000]: 1\n");
        assert!(
            err.contains("top-level key `a[100000000000]` at line 1")
                && err.contains("array index"),
            "{err}"
        );
    }

    #[test]
    fn counts_each_dot_of_a_top_level_key_as_a_level() {
        let key = vec!["a"; 100].join(".");
        let err = refusal(&format!("{key}: 1\n"));
        assert!(err.contains("deeper than 64 levels"), "{err}");
        let err = refusal(&format!(
            "{}: {}1{}\n",
            vec!["a"; 40].join("."),
            "[".repeat(30),
            "]".repeat(30)
        ));
        assert!(err.contains("nesting deeper than 64 levels"), "{err}");
    }

    #[test]
    fn a_dotted_top_level_key_still_loads_as_nested_sections() {
        let c = parse("exporters.debug: {}\n", &env).unwrap();
        assert!(c.exporters.contains_key("debug"), "{:?}", c.exporters);
    }

    #[test]
    fn loads_a_config_that_shares_blocks_through_anchors() {
        let c = parse(
            "exporters:\n  otlp/a: &upstream\n    endpoint: ${env:HOST}:4317\n    tls: { insecure: true }\n  otlp/b: *upstream\nservice:\n  pipelines:\n    traces:\n      receivers: &in [otlp]\n      exporters: [otlp/a]\n    logs:\n      receivers: *in\n      exporters: [otlp/b]\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.exporters["otlp/a"], c.exporters["otlp/b"]);
        assert_eq!(c.exporters["otlp/b"]["endpoint"], "collector:4317");
        assert_eq!(c.exporters["otlp/b"]["tls"]["insecure"], true);
        assert_eq!(c.service.pipelines["logs"].receivers, ["otlp"]);
    }

    #[test]
    fn loads_a_config_nested_to_the_depth_bound() {
        let text = format!(
            "receivers:\n  otlp: {{ a: {}1{} }}\n",
            "[".repeat(MAX_NESTING_DEPTH - 3),
            "]".repeat(MAX_NESTING_DEPTH - 3)
        );
        parse(&text, &env).unwrap();
        let text = format!(
            "receivers:\n  otlp: {{ a: {}1{} }}\n",
            "[".repeat(MAX_NESTING_DEPTH - 2),
            "]".repeat(MAX_NESTING_DEPTH - 2)
        );
        let err = refusal(&text);
        assert!(err.contains("nesting deeper than 64 levels"), "{err}");
    }

    #[test]
    fn an_alias_counts_what_its_anchor_expands_to() {
        // Measured against the same document written out: an alias costs what the copy would.
        let mut written = Bounds::default();
        let mut aliased = Bounds::default();
        for (bounds, text) in [
            (
                &mut written,
                "x: [[a, bb], {k: ccc}]\ny: {z: [[a, bb], {k: ccc}]}\n",
            ),
            (&mut aliased, "x: &n [[a, bb], {k: ccc}]\ny: {z: *n}\n"),
        ] {
            let mut parser = Parser::new_from_str(text);
            loop {
                let (event, mark) = parser.next_token().unwrap();
                match event {
                    Event::StreamEnd => break,
                    Event::Scalar(v, _, a, _) => bounds.scalar(v, a, mark).unwrap(),
                    Event::SequenceStart(a, _) => bounds.open(false, a, mark).unwrap(),
                    Event::MappingStart(a, _) => bounds.open(true, a, mark).unwrap(),
                    Event::SequenceEnd | Event::MappingEnd => bounds.close(),
                    Event::Alias(id) => bounds.alias(id, mark).unwrap(),
                    _ => {}
                }
            }
        }
        assert_eq!(written.total.nodes, aliased.total.nodes);
        assert_eq!(written.total.weight, aliased.total.weight);
        assert_eq!(written.total.cost, aliased.total.cost);
    }
}
