//! The `routing` connector: sends each resource, span, log record or data point to the pipelines
//! of the first route of its table whose condition it meets, or to `default_pipelines`, in the
//! Collector's config shape (`table`, `context`, `condition`/`statement`, `pipelines`,
//! `default_pipelines`, `error_mode`). A batch is split with `Batch::group_by`, so a batch whose
//! items all take one route is handed on as it is, and nothing is decoded.
//!
//! Conditions are the OTTL subset of `sluice_ottl`. The `request` context routes by the
//! client's headers, kept by a receiver with `include_metadata: true` (or, after a `batch`
//! processor, those of its `metadata_keys`), in the Collector's restricted grammar:
//! `request["X-Tenant"] == "acme"` or `!=`; header names match in any case. A request route is
//! decided once per batch. Anything not supported is refused by `sluice validate`.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::{
    Batch, BuildError, ConnectorComponent, ConnectorContext, ConnectorFactory, ConsumeError,
    Consumer, Fanout, FanoutPolicy, Signal, metrics as names, typed,
};

use sluice_ottl::{Condition, ErrorMode, Scope, Subject};

/// `connectors.routing`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Pipelines for what meets no route; what meets none and has no default is dropped and
    /// counted (`sluice_routing_unmatched_items`).
    #[serde(default)]
    pub default_pipelines: Vec<String>,
    /// `propagate` (default), `ignore` or `silent`: what to do when a condition fails to
    /// evaluate. Sluice's conditions cannot fail at run time (a missing attribute is `nil`), so
    /// the three behave alike.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// The routes, tried in order; the first that matches takes the item.
    pub table: Vec<RouteConfig>,
}

/// One route of `table`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `resource` (default), `span`, `log`, `metric` or `datapoint`.
    #[serde(default)]
    pub context: Option<String>,
    /// `route() where <condition>`.
    #[serde(default)]
    pub statement: Option<String>,
    /// An OTTL condition.
    #[serde(default)]
    pub condition: Option<String>,
    /// Where matching data goes.
    pub pipelines: Vec<String>,
}

/// The signals a context can route.
fn context_signals(scope: Scope) -> &'static [Signal] {
    match scope {
        Scope::Resource => &[Signal::Traces, Signal::Metrics, Signal::Logs],
        Scope::Span | Scope::SpanEvent => &[Signal::Traces],
        Scope::Log => &[Signal::Logs],
        Scope::Metric | Scope::DataPoint => &[Signal::Metrics],
    }
}

/// What a route tests.
enum Test {
    /// An OTTL condition on each item (or resource).
    Data(Scope, Condition),
    /// A header of the request that brought the batch.
    Request(RequestCondition),
}

/// A condition outside the request context's grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}`: the request context takes one comparison, `request[\"<header>\"] == \"<value>\"` or `!=`"
)]
struct NotARequestCondition(String);

/// `request["<key>"] == "<value>"` (or `!=`): whether any of the header's values is `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestCondition {
    key: String,
    value: String,
    negated: bool,
}

impl RequestCondition {
    fn parse(text: &str) -> Result<RequestCondition, NotARequestCondition> {
        let invalid = || NotARequestCondition(text.to_owned());
        let rest = text
            .trim()
            .strip_prefix("request[")
            .ok_or_else(invalid)?
            .trim_start();
        let (key, rest) = quoted(rest).ok_or_else(invalid)?;
        let rest = rest.trim_start().strip_prefix(']').ok_or_else(invalid)?;
        let rest = rest.trim_start();
        let (negated, rest) = if let Some(r) = rest.strip_prefix("==") {
            (false, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (true, r)
        } else {
            return Err(invalid());
        };
        let (value, rest) = quoted(rest.trim_start()).ok_or_else(invalid)?;
        if !rest.trim().is_empty() || key.is_empty() {
            return Err(invalid());
        }
        Ok(RequestCondition {
            key,
            value,
            negated,
        })
    }

    fn holds(&self, client: Option<&sluice_core::client::ClientInfo>) -> bool {
        let found = client.is_some_and(|c| c.metadata(&self.key).contains(&self.value));
        found != self.negated
    }
}

/// A double-quoted string (with `\"` and `\\` escapes) at the start of `text`, and what follows.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

struct CompiledRoute {
    test: Test,
    pipelines: Vec<String>,
}

impl CompiledRoute {
    fn signals(&self) -> &'static [Signal] {
        match &self.test {
            Test::Data(scope, _) => context_signals(*scope),
            Test::Request(_) => &[Signal::Traces, Signal::Metrics, Signal::Logs],
        }
    }

    fn per_resource(&self) -> bool {
        match &self.test {
            Test::Data(scope, _) => scope.per_resource(),
            Test::Request(_) => true,
        }
    }
}

fn compile(path: &str, config: &RoutingConfig) -> Result<Vec<CompiledRoute>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut routes = Vec::new();
    if config.table.is_empty() {
        problems.push(Problem::error(
            format!("{path}.table"),
            "needs at least one route",
        ));
    }
    for (i, route) in config.table.iter().enumerate() {
        let at = format!("{path}.table[{i}]");
        let context = route.context.as_deref().unwrap_or("resource");
        if route.pipelines.is_empty() {
            problems.push(Problem::error(
                format!("{at}.pipelines"),
                "needs at least one pipeline",
            ));
        }
        let scope = if context == "request" {
            match (&route.statement, &route.condition) {
                (None, Some(text)) => match RequestCondition::parse(text) {
                    Ok(condition) => routes.push(CompiledRoute {
                        test: Test::Request(condition),
                        pipelines: route.pipelines.clone(),
                    }),
                    Err(e) => {
                        problems.push(Problem::error(format!("{at}.condition"), e.to_string()));
                    }
                },
                _ => problems.push(Problem::error(
                    at.clone(),
                    "the request context takes a `condition`, not a `statement`",
                )),
            }
            continue;
        } else if let Some(scope) = Scope::parse(context).filter(|s| *s != Scope::SpanEvent) {
            scope
        } else {
            problems.push(Problem::error(
                format!("{at}.context"),
                format!(
                    "unknown context `{context}`; use resource, span, log, metric or datapoint"
                ),
            ));
            continue;
        };
        let parsed = match (&route.statement, &route.condition) {
            (Some(statement), None) => sluice_ottl::parse_statement(statement, scope)
                .map_err(|e| (format!("{at}.statement"), e.to_string())),
            (None, Some(text)) => sluice_ottl::parse(text, scope)
                .map_err(|e| (format!("{at}.condition"), e.to_string())),
            _ => Err((
                at.clone(),
                "set one of `statement` and `condition`".to_owned(),
            )),
        };
        match parsed {
            Ok(condition) => routes.push(CompiledRoute {
                test: Test::Data(scope, condition),
                pipelines: route.pipelines.clone(),
            }),
            Err((at, message)) => problems.push(Problem::error(at, message)),
        }
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(problems)
    }
}

/// Builds `routing` connectors.
#[derive(Debug, Default)]
pub struct RoutingFactory;

impl ConnectorFactory for RoutingFactory {
    fn type_name(&self) -> &'static str {
        "routing"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn connects(&self, from: Signal, to: Signal) -> bool {
        from == to
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &RoutingConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn check_pipelines(&self, path: &str, config: &Value, receiving: &[&str]) -> Vec<Problem> {
        let Ok(c) = sluice_config::component_config::<RoutingConfig>(path, config) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut named = |at: String, pipeline: &String| {
            if !receiving.contains(&pipeline.as_str()) {
                problems.push(Problem::error(
                    at,
                    format!(
                        "pipeline `{pipeline}` does not list this connector among its receivers"
                    ),
                ));
            }
        };
        for (i, route) in c.table.iter().enumerate() {
            for (j, pipeline) in route.pipelines.iter().enumerate() {
                named(format!("{path}.table[{i}].pipelines[{j}]"), pipeline);
            }
        }
        for (j, pipeline) in c.default_pipelines.iter().enumerate() {
            named(format!("{path}.default_pipelines[{j}]"), pipeline);
        }
        problems
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ConnectorComponent>, BuildError> {
        let path = format!("connectors.{id}");
        let c: RoutingConfig = typed(&path, config)?;
        let routes = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(Routing {
            routes: Arc::new(routes),
            default_pipelines: c.default_pipelines,
        }))
    }
}

struct Routing {
    routes: Arc<Vec<CompiledRoute>>,
    default_pipelines: Vec<String>,
}

impl ConnectorComponent for Routing {
    fn instance(&self, ctx: ConnectorContext) -> Result<Arc<dyn Consumer>, BuildError> {
        let consumers = |pipelines: &[String]| -> Result<Option<Arc<dyn Consumer>>, BuildError> {
            let mut out = Vec::new();
            for pipeline in pipelines {
                match ctx.routes.get(pipeline) {
                    Some(route) if route.signal == ctx.from => out.push(route.consumer.clone()),
                    // A route to a pipeline of another signal serves that signal's instance.
                    Some(_) => {}
                    None => {
                        return Err(BuildError::Other(format!(
                            "connector {}: pipeline `{pipeline}` does not receive from it",
                            ctx.id
                        )));
                    }
                }
            }
            Ok((!out.is_empty()).then(|| Fanout::build(out, FanoutPolicy::All)))
        };
        let mut targets = Vec::new();
        let mut routes = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.signals().contains(&ctx.from) {
                continue;
            }
            if let Some(target) = consumers(&route.pipelines)? {
                routes.push(index);
                targets.push(target);
            }
        }
        let default = consumers(&self.default_pipelines)?;
        Ok(Arc::new(Router {
            routes: Arc::clone(&self.routes),
            active: routes,
            targets,
            default,
            unmatched: metrics::counter!(names::ROUTING_UNMATCHED_ITEMS, "connector" => ctx.id.clone(), "otel_signal" => ctx.from.as_str()),
            per_resource: self.routes.iter().all(CompiledRoute::per_resource),
        }))
    }
}

/// A routing connector's exporter side for one signal.
struct Router {
    routes: Arc<Vec<CompiledRoute>>,
    /// Indexes into `routes` of the routes for this signal, with `targets` alongside.
    active: Vec<usize>,
    targets: Vec<Arc<dyn Consumer>>,
    default: Option<Arc<dyn Consumer>>,
    unmatched: Counter,
    /// Whether every route looks only at resources: decide once per resource.
    per_resource: bool,
}

/// The group of items meeting no route.
const DEFAULT: usize = usize::MAX;

#[async_trait]
impl Consumer for Router {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        // Request routes are decided once for the whole batch.
        let client = batch.client().cloned();
        let decided: Vec<Option<bool>> = self
            .active
            .iter()
            .map(|&r| match &self.routes[r].test {
                Test::Request(condition) => Some(condition.holds(client.as_deref())),
                Test::Data(..) => None,
            })
            .collect();
        // The first route that matches takes everything when no data route comes before it.
        let whole = decided
            .iter()
            .position(|d| *d != Some(false))
            .filter(|&k| decided[k] == Some(true));
        let all_request = decided.iter().all(Option::is_some);
        let groups = if whole.is_some() || all_request {
            vec![(whole.unwrap_or(DEFAULT), batch)]
        } else {
            self.group(batch, &decided)
        };
        let mut result = Ok(());
        for (target, batch) in groups {
            let consumer = if target == DEFAULT {
                self.default.as_ref()
            } else {
                self.targets.get(target)
            };
            let Some(consumer) = consumer else {
                self.unmatched.increment(batch.items() as u64);
                continue;
            };
            // Every group is offered, whatever the others' fate; the first refusal is reported,
            // so the sender retries (at least once, as from a receiver's fan-out).
            if let Err(err) = consumer.consume(batch).await
                && result.is_ok()
            {
                result = Err(err);
            }
        }
        result
    }
}

impl Router {
    /// Splits `batch` by the first route each item meets; `decided` holds the request routes'
    /// outcomes.
    fn group(&self, batch: Batch, decided: &[Option<bool>]) -> Vec<(usize, Batch)> {
        // The last resource decided (its address within the batch) and where it went.
        let mut last: Option<(usize, usize)> = None;
        batch.group_by(|context, item| {
            let resource = context.resource.raw().as_ptr() as usize;
            if self.per_resource
                && let Some((seen, target)) = last
                && seen == resource
            {
                return target;
            }
            let target = self
                .active
                .iter()
                .zip(decided)
                .position(|(&r, decided)| match (&self.routes[r].test, decided) {
                    (_, Some(holds)) => *holds,
                    (Test::Data(_, condition), None) => {
                        condition.holds(&Subject::Item(context, item))
                    }
                    (Test::Request(_), None) => false,
                })
                .unwrap_or(DEFAULT);
            last = Some((resource, target));
            target
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::client::{AuthInfo, ClientInfo};

    #[test]
    fn request_conditions_parse_the_collectors_grammar_only() {
        assert_eq!(
            RequestCondition::parse(r#"request["X-Tenant"] == "acme""#),
            Ok(RequestCondition {
                key: "X-Tenant".into(),
                value: "acme".into(),
                negated: false
            })
        );
        assert_eq!(
            RequestCondition::parse(r#" request[ "x" ]!="a \"b\"" "#),
            Ok(RequestCondition {
                key: "x".into(),
                value: "a \"b\"".into(),
                negated: true
            })
        );
        for bad in [
            r#"request["x"] == "a" or request["x"] == "b""#,
            r#"request["x"] > "a""#,
            r#"request[x] == "a""#,
            r#"request[""] == "a""#,
            r#"attributes["x"] == "a""#,
            r#"request["x"] == "a"#,
        ] {
            assert!(RequestCondition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_conditions_match_any_value_in_any_case() {
        let acme = RequestCondition::parse(r#"request["X-Tenant"] == "acme""#).unwrap();
        let not_acme = RequestCondition::parse(r#"request["X-Tenant"] != "acme""#).unwrap();
        let client = ClientInfo::new(
            [("x-tenant", &b"beta"[..]), ("x-tenant", &b"acme"[..])],
            &AuthInfo::none(),
        )
        .unwrap();
        assert!(acme.holds(Some(&client)));
        assert!(!not_acme.holds(Some(&client)));
        assert!(!acme.holds(None));
        assert!(not_acme.holds(None));
    }
}
