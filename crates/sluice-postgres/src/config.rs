//! `exporters.postgres`: where to write, how many connections, schema management, retention.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sluice_config::{HumanDuration, Problem};
use sluice_core::HelperSettings;
use sqlx::postgres::PgConnectOptions;

/// `exporters.postgres`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The database, as a URL: `postgres://user:password@host:5432/db?sslmode=require`. Usually
    /// `${env:DATABASE_URL}`. The password is never logged.
    pub endpoint: String,
    /// The connection pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Apply the schema migrations (embedded in the binary) when the exporter first connects
    /// (default `true`). Turn off when a DBA applies `migrations/` by hand; sluice then only checks
    /// that the schema is at the version it knows.
    #[serde(default = "yes")]
    pub migrate: bool,
    /// Drop partitions whose whole time range is older than this (default `14d`; `0` keeps
    /// everything forever). Checked every `partition_interval / 4`, at most hourly.
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// The time range of one partition of `spans`, `span_events`, `span_links` and `logs`
    /// (default `1d`, aligned to midnight UTC; at least `1m`). Partitions for the next interval are
    /// created ahead of time. Shorter intervals make retention finer and each partition's
    /// indexes smaller; longer ones mean fewer tables.
    #[serde(default = "default_partition_interval")]
    pub partition_interval: HumanDuration,
    /// Span attributes copied onto their trace's row (`traces.attributes`, GIN-indexed), so that
    /// traces can be found by them without scanning spans: e.g. `[enduser.id, user_id]`.
    #[serde(default)]
    pub promoted_attributes: Vec<String>,
    /// How the query service (`jaeger_query` naming this exporter) reads what it wrote.
    #[serde(default)]
    pub query: QueryConfig,
}

/// `exporters.postgres.query`: the reads' own small pool, separate from the writes', in
/// read-only sessions with a statement timeout.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// The database as the reads see it (default: `endpoint`). Give a read-only role here; the
    /// README lists the grants it needs.
    pub endpoint: Option<String>,
    /// Most connections the reads hold open (default `4`).
    pub max_connections: u32,
    /// Longest one read statement may run (default `10s`); PostgreSQL cancels it after that.
    pub statement_timeout: HumanDuration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            endpoint: None,
            max_connections: 4,
            statement_timeout: HumanDuration::from_secs(10),
        }
    }
}

impl fmt::Debug for QueryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryConfig")
            .field("endpoint", &self.endpoint.as_deref().map(redacted))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// `exporters.postgres.pool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Most connections held open (default `8`). Writes of different batches run in parallel,
    /// one per connection.
    pub max_connections: u32,
    /// Longest wait to open a connection (default `5s`).
    pub connect_timeout: HumanDuration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 8,
            connect_timeout: HumanDuration::from_secs(5),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_retention() -> HumanDuration {
    HumanDuration::from_secs(14 * 86_400)
}

fn default_partition_interval() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}

/// The helper's defaults for this exporter: writing a batch may take longer than a send, so the
/// per-attempt `timeout` defaults to `10s`.
pub(crate) fn helper_defaults() -> HelperSettings {
    HelperSettings {
        timeout: Duration::from_secs(10),
        ..HelperSettings::default()
    }
}

/// The endpoint with its password replaced, for logs and `Debug`.
pub(crate) fn redacted(endpoint: &str) -> String {
    // postgres://user:password@host/...: hide what lies between the first ':' after the scheme
    // and the '@'.
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return "<unparsable endpoint>".to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => endpoint.to_owned(),
        },
        None => endpoint.to_owned(),
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("endpoint", &redacted(&self.endpoint))
            .field("pool", &self.pool)
            .field("migrate", &self.migrate)
            .field("retention", &self.retention)
            .field("partition_interval", &self.partition_interval)
            .field("promoted_attributes", &self.promoted_attributes)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// Bounds the queue's workers by the pool: each writes on its own connection, and more
    /// workers than connections would only queue on the pool.
    pub(crate) fn tighten(&self, helper: &mut HelperSettings) {
        helper.queue.num_consumers = helper
            .queue
            .num_consumers
            .min(self.pool.max_connections as usize)
            .max(1);
    }

    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, String> {
        connect_options(&self.endpoint, "sluice")
    }

    /// The reads' connections: read-only sessions with a statement timeout.
    pub(crate) fn query_options(&self) -> Result<PgConnectOptions, String> {
        let endpoint = self.query.endpoint.as_deref().unwrap_or(&self.endpoint);
        let timeout = self.query.statement_timeout.get().as_millis();
        Ok(connect_options(endpoint, "sluice-query")?.options([
            ("default_transaction_read_only", "on".to_owned()),
            ("statement_timeout", timeout.to_string()),
        ]))
    }

    pub(crate) fn partition_interval(&self) -> Duration {
        self.partition_interval.get()
    }

    pub(crate) fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = self.check_writes(path);
        if let Some(endpoint) = &self.query.endpoint
            && let Err(message) = connect_options(endpoint, "sluice-query")
        {
            p.push(Problem::error(format!("{path}.query.endpoint"), message));
        }
        if self.query.max_connections == 0 {
            p.push(Problem::error(
                format!("{path}.query.max_connections"),
                "must be at least 1",
            ));
        }
        if self.query.statement_timeout.is_zero() {
            p.push(Problem::error(
                format!("{path}.query.statement_timeout"),
                "must be positive",
            ));
        }
        p
    }
}

/// Connection options from a postgres:// URL, named `application` in `pg_stat_activity`.
fn connect_options(endpoint: &str, application: &str) -> Result<PgConnectOptions, String> {
    if !(endpoint.starts_with("postgres://") || endpoint.starts_with("postgresql://")) {
        return Err(format!(
            "must be a postgres:// or postgresql:// URL, not `{}`",
            redacted(endpoint)
        ));
    }
    PgConnectOptions::from_str(endpoint)
        .map(|o| o.application_name(application))
        .map_err(|e| {
            format!(
                "is not a PostgreSQL URL ({})",
                strip_password(&e.to_string())
            )
        })
}

impl PostgresConfig {
    fn check_writes(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.endpoint.trim().is_empty() {
            p.push(Problem::error(format!("{path}.endpoint"), "is required"));
        } else if let Err(message) = self.connect_options() {
            p.push(Problem::error(format!("{path}.endpoint"), message));
        }
        if self.pool.max_connections == 0 {
            p.push(Problem::error(
                format!("{path}.pool.max_connections"),
                "must be at least 1",
            ));
        }
        if self.partition_interval.get() < Duration::from_secs(60) {
            p.push(Problem::error(
                format!("{path}.partition_interval"),
                "must be at least 1m",
            ));
        }
        if !self.retention.is_zero() && self.retention.get() < self.partition_interval.get() {
            p.push(Problem::error(
                format!("{path}.retention"),
                "must be 0 (keep forever) or at least partition_interval",
            ));
        }
        for (i, key) in self.promoted_attributes.iter().enumerate() {
            if key.is_empty() {
                p.push(Problem::error(
                    format!("{path}.promoted_attributes[{i}]"),
                    "must not be empty",
                ));
            }
        }
        p
    }
}

/// Error messages from URL parsing may quote the URL; never let a password through.
fn strip_password(message: &str) -> String {
    message
        .split_whitespace()
        .map(|word| {
            if word.contains("://") {
                redacted(word)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> PostgresConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(serde_json::json!({"endpoint": "postgres://u:p@h/db"}));
        assert!(c.migrate);
        assert_eq!(c.pool.max_connections, 8);
        assert_eq!(c.retention.get(), Duration::from_secs(14 * 86_400));
        assert_eq!(c.partition_interval(), Duration::from_secs(86_400));
        let mut helper = helper_defaults();
        assert_eq!(helper.timeout, Duration::from_secs(10));
        helper.queue.num_consumers = 10;
        c.tighten(&mut helper);
        assert_eq!(helper.queue.num_consumers, 8);
        assert!(c.check("exporters.postgres").is_empty());
    }

    #[test]
    fn passwords_never_reach_debug_output() {
        let c = parse(serde_json::json!({"endpoint": "postgres://user:s3cret@db:5432/x"}));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("postgres://user:***@db:5432/x"), "{debug}");
        assert_eq!(redacted("postgres://db/x"), "postgres://db/x");
        assert_eq!(redacted("nonsense"), "<unparsable endpoint>");
    }

    #[test]
    fn problems_are_reported_with_their_paths() {
        let c = parse(serde_json::json!({
            "endpoint": "mysql://u:hunter2@h/db",
            "pool": {"max_connections": 0},
            "partition_interval": "10s",
            "retention": "1h",
            "promoted_attributes": [""],
        }));
        let text: Vec<String> = c
            .check("exporters.postgres")
            .iter()
            .map(ToString::to_string)
            .collect();
        let joined = text.join("\n");
        assert!(joined.contains("exporters.postgres.endpoint"), "{joined}");
        assert!(!joined.contains("hunter2"), "{joined}");
        assert!(joined.contains("exporters.postgres.pool.max_connections: must be at least 1"));
        assert!(joined.contains("exporters.postgres.partition_interval: must be at least 1m"));
        assert!(joined.contains("exporters.postgres.promoted_attributes[0]: must not be empty"));
        let c = parse(serde_json::json!({"endpoint": "postgres://h/db", "retention": "1h"}));
        let joined: Vec<String> = c.check("e").iter().map(ToString::to_string).collect();
        assert_eq!(
            joined,
            ["error: e.retention: must be 0 (keep forever) or at least partition_interval"]
        );
    }
}
