//! The `redaction` processor: keeps personal data and secrets out of the telemetry that leaves
//! sluice, in the OpenTelemetry Collector's config shape.
//!
//! Per attribute, in the Collector's order: a key in `ignored_keys` (or matching
//! `ignored_key_patterns`) passes untouched; without `allow_all_keys`, a key not in
//! `allowed_keys` is removed (the list fails closed); a value matching `allowed_values` is kept;
//! a key matching `blocked_key_patterns` has its whole value masked; otherwise the URL and
//! database sanitizers configured for the key run, then every part of the value matching
//! `blocked_values` or an enabled `builtin_patterns` set is masked (`****`, or a hex digest with
//! `hash_function`). Maps and arrays inside values are walked with the same rules.
//!
//! Where the Collector stops at span, span event and data point attributes and log attributes
//! and bodies, sluice covers every place personal data is reported to hide: resource and scope
//! attributes, span event and link attributes, exemplar attributes, span names, span status
//! messages and span event names (values only: they have no key).
//!
//! Detection reads the encoded batch through `sluice_core::view` and decodes only the items,
//! resources and scopes that change; a batch in which nothing matched is handed on as the same
//! bytes.

mod detect;
mod patterns;
mod sanitize;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::Exemplar;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use regex::{Regex, RegexSet};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::view::{self, Context, Editor, Item, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, typed,
};

use self::detect::Detect;
use self::patterns::{Hint, Shape};
use self::sanitize::Db;
use crate::actions::{set, value_of};

/// `processors.redaction`. Its `Debug` leaves out `hmac_key`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep every attribute key; `allowed_keys` is then not consulted. Values are still checked.
    #[serde(default)]
    pub allow_all_keys: bool,
    /// The attribute keys kept; every other key is removed. Empty: every attribute is removed
    /// (the list fails closed), unless `allow_all_keys`.
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    /// Keys passed on untouched: neither removed nor checked.
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    /// Regular expressions for keys passed on untouched.
    #[serde(default)]
    pub ignored_key_patterns: Vec<String>,
    /// Regular expressions for keys whose whole value is masked.
    #[serde(default)]
    pub blocked_key_patterns: Vec<String>,
    /// Regular expressions for the parts of values that are masked.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Regular expressions for values kept even when they match a blocked value.
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// Sluice's named pattern sets, masked like `blocked_values`: `email`, `phone`, `us_ssn`,
    /// `payment_card` (Luhn-checked), `ipv4`, `ipv6`, `jwt`, `bearer_token`, `api_key`, or the
    /// groups `pii` (email, phone, us_ssn, payment_card), `secrets` (jwt, bearer_token,
    /// api_key), `network` (ipv4, ipv6) and `all`.
    #[serde(default)]
    pub builtin_patterns: Vec<String>,
    /// Replace what is masked by its hex digest instead of `****`: `md5`, `sha1`, `sha3`
    /// (SHA3-256), `hmac-sha256` or `hmac-sha512` (with `hmac_key`).
    #[serde(default)]
    pub hash_function: Option<String>,
    /// The key of the HMAC hash functions: at least 32 bytes for `hmac-sha256`, 64 for
    /// `hmac-sha512`.
    #[serde(default)]
    pub hmac_key: Option<String>,
    /// The diagnostic attributes added where something was redacted: `debug` (counts and key
    /// names), `info` (counts) or `silent` (none, the default).
    #[serde(default)]
    pub summary: Option<String>,
    /// Also check values that are not strings (numbers, booleans) by their text; a masked one
    /// becomes a string.
    #[serde(default)]
    pub redact_all_types: bool,
    /// Replace ids in URLs (numbers, UUIDs, hex and token path segments) by `*` and remove their
    /// query strings.
    #[serde(default)]
    pub url_sanitizer: Option<UrlSanitizerConfig>,
    /// Replace the literals of database statements.
    #[serde(default)]
    pub db_sanitizer: Option<DbSanitizerConfig>,
}

impl std::fmt::Debug for RedactionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactionConfig")
            .field("allow_all_keys", &self.allow_all_keys)
            .field("allowed_keys", &self.allowed_keys)
            .field("ignored_keys", &self.ignored_keys)
            .field("ignored_key_patterns", &self.ignored_key_patterns)
            .field("blocked_key_patterns", &self.blocked_key_patterns)
            .field("blocked_values", &self.blocked_values)
            .field("allowed_values", &self.allowed_values)
            .field("builtin_patterns", &self.builtin_patterns)
            .field("hash_function", &self.hash_function)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("summary", &self.summary)
            .field("redact_all_types", &self.redact_all_types)
            .field("url_sanitizer", &self.url_sanitizer)
            .field("db_sanitizer", &self.db_sanitizer)
            .finish()
    }
}

/// `url_sanitizer`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlSanitizerConfig {
    /// Whether URLs are sanitized.
    #[serde(default)]
    pub enabled: bool,
    /// The attribute keys holding URLs.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Also the names of client and server spans that contain `/` (default true).
    #[serde(default)]
    pub sanitize_span_name: Option<bool>,
    /// Also string log bodies (default false).
    #[serde(default)]
    pub sanitize_log_body: Option<bool>,
}

/// `db_sanitizer`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSanitizerConfig {
    /// SQL: literals become `?`.
    #[serde(default)]
    pub sql: DbLanguageConfig,
    /// Redis: arguments after the key become `?`.
    #[serde(default)]
    pub redis: DbLanguageConfig,
    /// Valkey: as Redis.
    #[serde(default)]
    pub valkey: DbLanguageConfig,
    /// Memcached: data blocks are dropped.
    #[serde(default)]
    pub memcached: DbLanguageConfig,
    /// MongoDB JSON queries: scalars become `"?"`.
    #[serde(default)]
    pub mongo: DbLanguageConfig,
    /// OpenSearch JSON bodies: scalars become `"?"`.
    #[serde(default)]
    pub opensearch: DbLanguageConfig,
    /// Elasticsearch JSON bodies: scalars become `"?"`.
    #[serde(default)]
    pub es: DbLanguageConfig,
    /// Also the names of database spans (those with `db.system`; default true), which are
    /// often the statement itself.
    #[serde(default)]
    pub sanitize_span_name: Option<bool>,
}

/// One language of `db_sanitizer`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbLanguageConfig {
    /// Whether statements in this language are sanitized.
    #[serde(default)]
    pub enabled: bool,
    /// The attribute keys holding statements. Empty: string log bodies only.
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// The summary attributes, as the Collector names them.
mod summary {
    pub(super) const REDACTED_KEYS: &str = "redaction.redacted.keys";
    pub(super) const REDACTED_COUNT: &str = "redaction.redacted.count";
    pub(super) const MASKED_KEYS: &str = "redaction.masked.keys";
    pub(super) const MASKED_COUNT: &str = "redaction.masked.count";
    pub(super) const ALLOWED_KEYS: &str = "redaction.allowed.keys";
    pub(super) const ALLOWED_COUNT: &str = "redaction.allowed.count";
    pub(super) const IGNORED_COUNT: &str = "redaction.ignored.count";
    pub(super) const BODY_REDACTED_KEYS: &str = "redaction.body.redacted.keys";
    pub(super) const BODY_REDACTED_COUNT: &str = "redaction.body.redacted.count";
    pub(super) const BODY_MASKED_KEYS: &str = "redaction.body.masked.keys";
    pub(super) const BODY_MASKED_COUNT: &str = "redaction.body.masked.count";
    pub(super) const BODY_ALLOWED_KEYS: &str = "redaction.body.allowed.keys";
    pub(super) const BODY_ALLOWED_COUNT: &str = "redaction.body.allowed.count";
    pub(super) const BODY_IGNORED_COUNT: &str = "redaction.body.ignored.count";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Summary {
    Silent,
    Info,
    Debug,
}

/// How masked text is replaced.
#[derive(Clone)]
enum Hasher {
    Md5,
    Sha1,
    Sha3,
    HmacSha256(Vec<u8>),
    HmacSha512(Vec<u8>),
}

impl Hasher {
    fn digest(&self, text: &str) -> String {
        use hmac::Mac;
        use sha2::Digest;
        let bytes = text.as_bytes();
        match self {
            Hasher::Md5 => hex::encode(md5::Md5::digest(bytes)),
            Hasher::Sha1 => hex::encode(sha1::Sha1::digest(bytes)),
            Hasher::Sha3 => hex::encode(sha3::Sha3_256::digest(bytes)),
            Hasher::HmacSha256(key) => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(bytes);
                hex::encode(mac.finalize().into_bytes())
            }
            Hasher::HmacSha512(key) => {
                let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(bytes);
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }
}

/// A pattern whose matches are masked: a user's (`blocked_values`) or a built-in, with the check
/// a match must pass and the hint a text must pass for the regex to run at all.
struct Blocked {
    regex: Regex,
    check: Option<fn(&str) -> bool>,
    hint: Option<Hint>,
}

/// What happens to an attribute, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    Ignore,
    Redact,
    Mask,
    Check,
}

/// The compiled configuration.
struct Rules {
    allow_all_keys: bool,
    allowed: HashSet<String>,
    ignored: HashSet<String>,
    ignored_patterns: Option<RegexSet>,
    blocked_keys: Option<RegexSet>,
    allowed_values: Option<RegexSet>,
    /// The user's patterns first (in `user_blocked`'s order), then the built-ins.
    blocked: Vec<Blocked>,
    /// The user's `blocked_values` at once: one pass says which may match.
    user_blocked: Option<RegexSet>,
    /// The shortest text any blocked pattern can match (0 with user patterns).
    min_len: usize,
    /// The hints of the built-in patterns, together (the user's patterns have none).
    hints: Vec<Hint>,
    /// Whether any rule goes by attribute keys (else every attribute is checked alike, and its
    /// key is not read as text).
    keys_matter: bool,
    /// Whether a sanitizer is configured for some attribute keys.
    sanitizes_by_key: bool,
    hasher: Option<Hasher>,
    summary: Summary,
    redact_all_types: bool,
    url_attributes: HashSet<String>,
    url_span_names: bool,
    url_log_bodies: bool,
    /// Per attribute key, the database languages its statements are sanitized as.
    db_attributes: Vec<(String, Vec<Db>)>,
    /// The languages for string log bodies (those configured without attributes).
    db_log_bodies: Vec<Db>,
    db_span_names: Vec<Db>,
}

fn regex_set(path: &str, patterns: &[String], problems: &mut Vec<Problem>) -> Option<RegexSet> {
    for (i, p) in patterns.iter().enumerate() {
        if let Err(e) = Regex::new(p) {
            problems.push(Problem::error(
                format!("{path}[{i}]"),
                format!("not a valid regular expression: {e}"),
            ));
        }
    }
    if patterns.is_empty() {
        return None;
    }
    RegexSet::new(patterns).ok()
}

fn compile(path: &str, c: &RedactionConfig) -> Result<Rules, Vec<Problem>> {
    let mut problems = Vec::new();
    let ignored_patterns = regex_set(
        &format!("{path}.ignored_key_patterns"),
        &c.ignored_key_patterns,
        &mut problems,
    );
    let blocked_keys = regex_set(
        &format!("{path}.blocked_key_patterns"),
        &c.blocked_key_patterns,
        &mut problems,
    );
    let allowed_values = regex_set(
        &format!("{path}.allowed_values"),
        &c.allowed_values,
        &mut problems,
    );
    let mut blocked = Vec::new();
    let mut sources = Vec::new();
    for (i, p) in c.blocked_values.iter().enumerate() {
        match Regex::new(p) {
            Ok(regex) => {
                blocked.push(Blocked {
                    regex,
                    check: None,
                    hint: None,
                });
                sources.push(p.clone());
            }
            Err(e) => problems.push(Problem::error(
                format!("{path}.blocked_values[{i}]"),
                format!("not a valid regular expression: {e}"),
            )),
        }
    }
    let mut enabled: Vec<&'static str> = Vec::new();
    for (i, name) in c.builtin_patterns.iter().enumerate() {
        match patterns::resolve(name) {
            Some(builtins) => {
                for b in builtins {
                    if !enabled.contains(&b.name) {
                        enabled.push(b.name);
                        blocked.push(Blocked {
                            regex: patterns::compile(b),
                            check: b.check,
                            hint: Some(b.hint),
                        });
                    }
                }
            }
            None => problems.push(Problem::error(
                format!("{path}.builtin_patterns[{i}]"),
                format!(
                    "unknown pattern set `{name}`; use one of {}",
                    patterns::names().join(", ")
                ),
            )),
        }
    }
    let user_blocked = (!sources.is_empty())
        .then(|| RegexSet::new(&sources).ok())
        .flatten();
    let min_len = if c.blocked_values.is_empty() {
        enabled
            .iter()
            .filter_map(|name| patterns::BUILTINS.iter().find(|b| b.name == *name))
            .map(|b| b.min_len)
            .min()
            .unwrap_or(0)
    } else {
        0
    };
    let hasher = match c.hash_function.as_deref() {
        None | Some("" | "none") => None,
        Some("md5") => Some(Hasher::Md5),
        Some("sha1") => Some(Hasher::Sha1),
        Some("sha3") => Some(Hasher::Sha3),
        Some(f @ ("hmac-sha256" | "hmac-sha512")) => {
            let (min, long) = if f == "hmac-sha256" {
                (32, false)
            } else {
                (64, true)
            };
            match c.hmac_key.as_deref() {
                Some(key) if key.len() >= min => Some(if long {
                    Hasher::HmacSha512(key.as_bytes().to_vec())
                } else {
                    Hasher::HmacSha256(key.as_bytes().to_vec())
                }),
                _ => {
                    problems.push(Problem::error(
                        format!("{path}.hmac_key"),
                        format!("`{f}` needs an `hmac_key` of at least {min} bytes"),
                    ));
                    None
                }
            }
        }
        Some(other) => {
            problems.push(Problem::error(
                format!("{path}.hash_function"),
                format!(
                    "unknown hash function `{other}`; use md5, sha1, sha3, hmac-sha256 or hmac-sha512"
                ),
            ));
            None
        }
    };
    if c.hmac_key.is_some()
        && !matches!(
            c.hash_function.as_deref(),
            Some("hmac-sha256" | "hmac-sha512")
        )
    {
        problems.push(Problem::error(
            format!("{path}.hmac_key"),
            "only the hmac-sha256 and hmac-sha512 hash functions take a key",
        ));
    }
    let summary = match c.summary.as_deref() {
        None | Some("" | "silent") => Summary::Silent,
        Some("info") => Summary::Info,
        Some("debug") => Summary::Debug,
        Some(other) => {
            problems.push(Problem::error(
                format!("{path}.summary"),
                format!("unknown summary `{other}`; use debug, info or silent"),
            ));
            Summary::Silent
        }
    };
    let url = c.url_sanitizer.clone().unwrap_or_default();
    let db = c.db_sanitizer.clone().unwrap_or_default();
    let languages = [
        (Db::Sql, &db.sql),
        (Db::Redis, &db.redis),
        (Db::Valkey, &db.valkey),
        (Db::Memcached, &db.memcached),
        (Db::Mongo, &db.mongo),
        (Db::OpenSearch, &db.opensearch),
        (Db::Es, &db.es),
    ];
    let mut db_attributes: Vec<(String, Vec<Db>)> = Vec::new();
    let mut db_log_bodies = Vec::new();
    for (language, config) in languages.iter().filter(|(_, c)| c.enabled) {
        if config.attributes.is_empty() {
            db_log_bodies.push(*language);
        }
        for key in &config.attributes {
            match db_attributes.iter_mut().find(|(k, _)| k == key) {
                Some((_, list)) => list.push(*language),
                None => db_attributes.push((key.clone(), vec![*language])),
            }
        }
    }
    let enabled_languages: Vec<Db> = languages
        .iter()
        .filter(|(_, c)| c.enabled)
        .map(|(l, _)| *l)
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut allowed: HashSet<String> = c.allowed_keys.iter().cloned().collect();
    // The summary attributes the processor writes itself are always allowed.
    for key in [
        summary::REDACTED_KEYS,
        summary::REDACTED_COUNT,
        summary::MASKED_KEYS,
        summary::MASKED_COUNT,
        summary::IGNORED_COUNT,
    ] {
        allowed.insert(key.to_owned());
    }
    let mut rules = Rules {
        allow_all_keys: c.allow_all_keys,
        allowed,
        ignored: c.ignored_keys.iter().cloned().collect(),
        ignored_patterns,
        blocked_keys,
        allowed_values,
        blocked,
        user_blocked,
        min_len,
        hints: Vec::new(),
        keys_matter: true,
        sanitizes_by_key: true,
        hasher,
        summary,
        redact_all_types: c.redact_all_types,
        url_attributes: if url.enabled {
            url.attributes.iter().cloned().collect()
        } else {
            HashSet::new()
        },
        url_span_names: url.enabled && url.sanitize_span_name.unwrap_or(true),
        url_log_bodies: url.enabled && url.sanitize_log_body.unwrap_or(false),
        db_attributes,
        db_log_bodies,
        db_span_names: if db.sanitize_span_name.unwrap_or(true) {
            enabled_languages
        } else {
            Vec::new()
        },
    };
    rules.hints = rules.blocked.iter().filter_map(|b| b.hint).collect();
    rules.sanitizes_by_key = !rules.url_attributes.is_empty() || !rules.db_attributes.is_empty();
    rules.keys_matter = !rules.allow_all_keys
        || !rules.ignored.is_empty()
        || rules.ignored_patterns.is_some()
        || rules.blocked_keys.is_some()
        || rules.sanitizes_by_key;
    Ok(rules)
}

/// What redaction did to one attribute map (or log body): the keys, with their paths inside
/// nested values, for the summary attributes and the processor's counters.
#[derive(Debug, Default)]
struct Tally {
    redacted: Vec<String>,
    masked: Vec<String>,
    allowed: Vec<String>,
    ignored: Vec<String>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        self.redacted.is_empty()
            && self.masked.is_empty()
            && self.allowed.is_empty()
            && self.ignored.is_empty()
    }
}

/// Totals over a batch, for the counters.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    redacted: u64,
    masked: u64,
}

fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn string_value(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

/// A scalar's text, as the Collector's `AsString` gives it.
fn scalar_text(value: &view::AnyValue<'_>) -> Option<String> {
    match value {
        view::AnyValue::Int(i) => Some(i.to_string()),
        view::AnyValue::Double(d) => Some(d.to_string()),
        view::AnyValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn owned_scalar_text(value: &any_value::Value) -> Option<String> {
    match value {
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Rules {
    fn key_action(&self, key: &str) -> KeyAction {
        // Empty sets are not consulted: hashing every key costs more than the rest of the check.
        if (!self.ignored.is_empty() && self.ignored.contains(key))
            || self
                .ignored_patterns
                .as_ref()
                .is_some_and(|s| s.is_match(key))
        {
            return KeyAction::Ignore;
        }
        if !self.allow_all_keys && !self.allowed.contains(key) {
            return KeyAction::Redact;
        }
        if self.blocked_keys.as_ref().is_some_and(|s| s.is_match(key)) {
            return KeyAction::Mask;
        }
        KeyAction::Check
    }

    fn summary_on(&self) -> bool {
        self.summary != Summary::Silent
    }

    fn is_allowed_value(&self, s: &str) -> bool {
        self.allowed_values
            .as_ref()
            .is_some_and(|set| set.is_match(s))
    }

    /// The replacement of one masked piece of text.
    fn mask(&self, text: &str) -> String {
        match &self.hasher {
            Some(h) => h.digest(text),
            None => "****".to_owned(),
        }
    }

    /// `s` with every blocked part masked; `None` when nothing was.
    fn mask_blocked(&self, s: &str) -> Option<String> {
        if self.blocked.is_empty() || s.len() < self.min_len.max(1) {
            return None;
        }
        let user = self.user_blocked.as_ref().map(|set| set.matches(s));
        let shape = Shape::of(if self.hints.is_empty() {
            &[]
        } else {
            s.as_bytes()
        });
        let candidate = |index: usize, b: &Blocked| match &b.hint {
            Some(hint) => hint.admits(&shape),
            None => user.as_ref().is_some_and(|m| m.matched(index)),
        };
        // Most texts are candidates for no pattern: one pass over the blocked list says so
        // before any regex runs or any text is copied.
        if !self
            .blocked
            .iter()
            .enumerate()
            .any(|(i, b)| candidate(i, b))
        {
            return None;
        }
        let mut current = Cow::Borrowed(s);
        for (index, b) in self.blocked.iter().enumerate() {
            if !candidate(index, b) {
                continue;
            }
            let replaced = b.regex.replace_all(&current, |caps: &regex::Captures<'_>| {
                let m = &caps[0];
                if b.check.is_none_or(|check| check(m)) {
                    self.mask(m)
                } else {
                    m.to_owned()
                }
            });
            if let Cow::Owned(new) = replaced {
                current = Cow::Owned(new);
            }
        }
        match current {
            Cow::Owned(new) if new != s => Some(new),
            _ => None,
        }
    }

    /// A string value of attribute `key` (`None` for values without a key: names, bodies) after
    /// the sanitizers configured for the key and the blocked patterns; `None` when unchanged.
    fn redact_text(
        &self,
        key: Option<&str>,
        s: &str,
        sanitizers: Sanitizers<'_>,
    ) -> Option<String> {
        let mut current = Cow::Borrowed(s);
        if sanitizers.url
            || (!self.url_attributes.is_empty()
                && key.is_some_and(|k| self.url_attributes.contains(k)))
        {
            let sanitized = sanitize::url(&current);
            if sanitized != *current {
                current = Cow::Owned(sanitized);
            }
        }
        let languages = match key {
            Some(k) => self
                .db_attributes
                .iter()
                .find(|(key, _)| key == k)
                .map_or(&[][..], |(_, l)| l.as_slice()),
            None => sanitizers.db,
        };
        // The first language that parses the statement sanitizes it.
        if let Some(sanitized) = languages.iter().find_map(|l| l.sanitize(&current))
            && sanitized != *current
        {
            current = Cow::Owned(sanitized);
        }
        if let Some(masked) = self.mask_blocked(&current) {
            current = Cow::Owned(masked);
        }
        match current {
            Cow::Owned(new) if new != s => Some(new),
            _ => None,
        }
    }

    /// The sanitizers of a span's name: the URL sanitizer for client and server spans whose name
    /// holds a path, the database sanitizers for database spans (those with `db.system`).
    fn span_name_sanitizers(&self, kind: i32, name: &[u8], db: bool) -> Sanitizers<'_> {
        let url = self.url_span_names
            && name.contains(&b'/')
            && (kind == SpanKind::Client as i32 || kind == SpanKind::Server as i32);
        Sanitizers {
            url,
            db: if db { &self.db_span_names } else { &[] },
        }
    }

    fn log_body_sanitizers(&self) -> Sanitizers<'_> {
        Sanitizers {
            url: self.url_log_bodies,
            db: &self.db_log_bodies,
        }
    }

    // ---- Redaction of decoded messages ----

    /// Redacts an attribute list in place, recording into `tally` with key paths under `prefix`.
    fn redact_attributes(&self, attributes: &mut Vec<KeyValue>, tally: &mut Tally, prefix: &str) {
        attributes.retain_mut(|kv| {
            let key_path = path(prefix, &kv.key);
            match self.key_action(&kv.key) {
                KeyAction::Ignore => {
                    tally.ignored.push(key_path);
                    true
                }
                KeyAction::Redact => {
                    tally.redacted.push(key_path);
                    false
                }
                KeyAction::Mask => {
                    let text = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        Some(other) => owned_scalar_text(other).unwrap_or_default(),
                        None => String::new(),
                    };
                    if self.is_allowed_value(&text) {
                        tally.allowed.push(key_path);
                    } else {
                        kv.value = string_value(self.mask(&text));
                        tally.masked.push(key_path);
                    }
                    true
                }
                KeyAction::Check => {
                    if let Some(value) = kv.value.as_mut().and_then(|v| v.value.as_mut()) {
                        self.redact_value(Some(&kv.key), value, tally, &key_path);
                    }
                    true
                }
            }
        });
    }

    /// Redacts one value (of attribute `key`, or inside a body when `None`).
    fn redact_value(
        &self,
        key: Option<&str>,
        value: &mut any_value::Value,
        tally: &mut Tally,
        at: &str,
    ) {
        match value {
            any_value::Value::StringValue(s) => {
                if self.is_allowed_value(s) {
                    tally.allowed.push(at.to_owned());
                } else if let Some(new) = self.redact_text(key, s, Sanitizers::NONE) {
                    *s = new;
                    tally.masked.push(at.to_owned());
                }
            }
            any_value::Value::KvlistValue(list) => {
                self.redact_attributes(&mut list.values, tally, at);
            }
            any_value::Value::ArrayValue(array) => {
                for (i, element) in array.values.iter_mut().enumerate() {
                    if let Some(v) = element.value.as_mut() {
                        self.redact_value(key, v, tally, &format!("{at}.[{i}]"));
                    }
                }
            }
            other if self.redact_all_types => {
                if let Some(text) = owned_scalar_text(other) {
                    if self.is_allowed_value(&text) {
                        tally.allowed.push(at.to_owned());
                    } else if let Some(new) = self.mask_blocked(&text) {
                        *other = any_value::Value::StringValue(new);
                        tally.masked.push(at.to_owned());
                    }
                }
            }
            _ => {}
        }
    }

    /// Masks a text without a key (a name, a status message) in place; records it under `name`.
    fn redact_named_text(
        &self,
        text: &mut String,
        sanitizers: Sanitizers<'_>,
        tally: &mut Tally,
        name: &str,
    ) {
        if self.is_allowed_value(text) {
            return;
        }
        if let Some(new) = self.redact_text(None, text, sanitizers) {
            *text = new;
            tally.masked.push(name.to_owned());
        }
    }

    /// Redacts an attribute list and adds its summary attributes; returns what it did.
    fn redact_map(&self, attributes: &mut Vec<KeyValue>, totals: &mut Totals) {
        let mut tally = Tally::default();
        self.redact_attributes(attributes, &mut tally, "");
        self.finish(attributes, &tally, false, totals);
    }

    /// Counts a tally and writes its summary attributes into `attributes`, as the Collector
    /// does: key lists (sorted, comma-separated, merged with lists already there) at `debug`,
    /// counts (added to counts already there) at `info` and `debug`.
    fn finish(
        &self,
        attributes: &mut Vec<KeyValue>,
        tally: &Tally,
        body: bool,
        totals: &mut Totals,
    ) {
        totals.redacted += tally.redacted.len() as u64;
        totals.masked += tally.masked.len() as u64;
        if tally.is_empty() || !self.summary_on() {
            return;
        }
        let names = if body {
            [
                (
                    summary::BODY_REDACTED_KEYS,
                    summary::BODY_REDACTED_COUNT,
                    &tally.redacted,
                ),
                (
                    summary::BODY_MASKED_KEYS,
                    summary::BODY_MASKED_COUNT,
                    &tally.masked,
                ),
                (
                    summary::BODY_ALLOWED_KEYS,
                    summary::BODY_ALLOWED_COUNT,
                    &tally.allowed,
                ),
                ("", summary::BODY_IGNORED_COUNT, &tally.ignored),
            ]
        } else {
            [
                (
                    summary::REDACTED_KEYS,
                    summary::REDACTED_COUNT,
                    &tally.redacted,
                ),
                (summary::MASKED_KEYS, summary::MASKED_COUNT, &tally.masked),
                (
                    summary::ALLOWED_KEYS,
                    summary::ALLOWED_COUNT,
                    &tally.allowed,
                ),
                ("", summary::IGNORED_COUNT, &tally.ignored),
            ]
        };
        for (keys_attr, count_attr, keys) in names {
            if keys.is_empty() {
                continue;
            }
            if self.summary == Summary::Debug && !keys_attr.is_empty() {
                let mut all: Vec<String> = keys.clone();
                if let Some(existing) = find_string(attributes, keys_attr) {
                    all.extend(
                        existing
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                }
                all.sort();
                set(
                    attributes,
                    keys_attr,
                    any_value::Value::StringValue(all.join(",")),
                );
            }
            let mut count = keys.len() as i64;
            if let Some(any_value::Value::IntValue(existing)) = value_of(attributes, count_attr) {
                count += existing;
            }
            set(attributes, count_attr, any_value::Value::IntValue(count));
        }
    }

    fn redact_span(
        &self,
        span: &mut opentelemetry_proto::tonic::trace::v1::Span,
        totals: &mut Totals,
    ) {
        let mut tally = Tally::default();
        self.redact_attributes(&mut span.attributes, &mut tally, "");
        let db = !self.db_span_names.is_empty()
            && span
                .attributes
                .iter()
                .any(|kv| DB_SYSTEM.contains(&kv.key.as_str()));
        let sanitizers = self.span_name_sanitizers(span.kind, span.name.as_bytes(), db);
        self.redact_named_text(&mut span.name, sanitizers, &mut tally, "name");
        if let Some(status) = span.status.as_mut() {
            self.redact_named_text(
                &mut status.message,
                Sanitizers::NONE,
                &mut tally,
                "status.message",
            );
        }
        self.finish(&mut span.attributes, &tally, false, totals);
        for event in &mut span.events {
            let mut tally = Tally::default();
            self.redact_attributes(&mut event.attributes, &mut tally, "");
            self.redact_named_text(&mut event.name, Sanitizers::NONE, &mut tally, "name");
            self.finish(&mut event.attributes, &tally, false, totals);
        }
        for link in &mut span.links {
            self.redact_map(&mut link.attributes, totals);
        }
    }

    fn redact_log(
        &self,
        log: &mut opentelemetry_proto::tonic::logs::v1::LogRecord,
        totals: &mut Totals,
    ) {
        self.redact_map(&mut log.attributes, totals);
        let mut tally = Tally::default();
        if let Some(body) = log.body.as_mut().and_then(|b| b.value.as_mut()) {
            match body {
                any_value::Value::StringValue(s) => {
                    if self.is_allowed_value(s) {
                        tally.allowed.push("body".to_owned());
                    } else if let Some(new) = self.redact_text(None, s, self.log_body_sanitizers())
                    {
                        *s = new;
                        tally.masked.push("body".to_owned());
                    }
                }
                any_value::Value::KvlistValue(list) => {
                    self.redact_attributes(&mut list.values, &mut tally, "");
                }
                any_value::Value::ArrayValue(array) => {
                    for (i, element) in array.values.iter_mut().enumerate() {
                        if let Some(v) = element.value.as_mut() {
                            self.redact_value(None, v, &mut tally, &format!("[{i}]"));
                        }
                    }
                }
                other => self.redact_value(None, other, &mut tally, "body"),
            }
        }
        self.finish(&mut log.attributes, &tally, true, totals);
    }

    fn redact_exemplars(&self, exemplars: &mut [Exemplar], totals: &mut Totals) {
        for e in exemplars {
            self.redact_map(&mut e.filtered_attributes, totals);
        }
    }

    /// The redacted encoding of a data point.
    fn redact_point(&self, point: &view::DataPoint<'_>, totals: &mut Totals) -> Option<Vec<u8>> {
        point.edit(|attributes, exemplars| {
            self.redact_map(attributes, totals);
            self.redact_exemplars(exemplars, totals);
            true
        })
    }
}

/// The attributes that mark a database span (the current semantic conventions' and the older).
const DB_SYSTEM: [&str; 2] = ["db.system.name", "db.system"];

/// Which sanitizers apply to a text that has no attribute key.
#[derive(Clone, Copy)]
struct Sanitizers<'a> {
    url: bool,
    db: &'a [Db],
}

impl Sanitizers<'_> {
    const NONE: Sanitizers<'static> = Sanitizers {
        url: false,
        db: &[],
    };
}

fn find_string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value_of(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The editor one batch goes through.
struct Redact<'a> {
    rules: &'a Rules,
    detect: Detect<'a>,
    totals: Totals,
}

impl<'a> Redact<'a> {
    fn new(rules: &'a Rules) -> Redact<'a> {
        Redact {
            rules,
            detect: Detect::new(rules),
            totals: Totals::default(),
        }
    }
}

impl Editor for Redact<'_> {
    fn resource(&mut self, resource: &view::Resource<'_>) -> Verdict {
        if !self.detect.attributes_change(resource.attributes()) {
            return Verdict::Keep;
        }
        let mut decoded = resource.decode();
        self.rules
            .redact_map(&mut decoded.attributes, &mut self.totals);
        Verdict::resource(resource, &decoded)
    }

    fn scope(&mut self, _resource: &view::Resource<'_>, scope: &view::Scope<'_>) -> Verdict {
        if !self.detect.attributes_change(scope.attributes()) {
            return Verdict::Keep;
        }
        let mut decoded = scope.decode();
        self.rules
            .redact_map(&mut decoded.attributes, &mut self.totals);
        Verdict::scope(scope, &decoded)
    }

    fn item(&mut self, _context: &Context<'_>, item: &Item<'_>) -> Verdict {
        match item {
            Item::Span(span) => {
                if !self.detect.span_changes(span) {
                    return Verdict::Keep;
                }
                let mut decoded = span.decode();
                self.rules.redact_span(&mut decoded, &mut self.totals);
                Verdict::replace(&decoded)
            }
            Item::Log(log) => {
                if !self.detect.log_changes(log) {
                    return Verdict::Keep;
                }
                let mut decoded = log.decode();
                self.rules.redact_log(&mut decoded, &mut self.totals);
                Verdict::replace(&decoded)
            }
            Item::Point(point) => {
                if !self.detect.point_changes(point) {
                    return Verdict::Keep;
                }
                match self.rules.redact_point(point, &mut self.totals) {
                    Some(encoded) => Verdict::Replace(encoded),
                    None => Verdict::Drop,
                }
            }
        }
    }
}

/// Batches over this many bytes are redacted on the blocking pool: checking every string
/// against the patterns costs about a microsecond per span.
const REDACT_OFF_WORKERS_ABOVE: usize = 64 * 1024;

struct RedactionProcessor {
    rules: Arc<Rules>,
    redacted: metrics::Counter,
    masked: metrics::Counter,
}

#[async_trait]
impl Processor for RedactionProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let rules = Arc::clone(&self.rules);
        let size = batch.size();
        let (batch, totals) =
            sluice_core::blocking::off_workers(size, REDACT_OFF_WORKERS_ABOVE, move || {
                let mut editor = Redact::new(&rules);
                let batch = batch.edit(&mut editor);
                (batch, editor.totals)
            })
            .await
            .ok_or_else(|| ConsumeError::internal("redaction failed"))?;
        self.redacted.increment(totals.redacted);
        self.masked.increment(totals.masked);
        Ok(Some(batch))
    }
}

struct RedactionComponent {
    id: String,
    rules: Arc<Rules>,
}

impl ProcessorComponent for RedactionComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        let counter = |name: &'static str| metrics::counter!(name, "processor" => self.id.clone(), "otel_signal" => ctx.signal.as_str());
        Ok(Instance::new(Arc::new(RedactionProcessor {
            rules: Arc::clone(&self.rules),
            redacted: counter(sluice_core::metrics::REDACTION_REDACTED_KEYS),
            masked: counter(sluice_core::metrics::REDACTION_MASKED_VALUES),
        })))
    }
}

/// Builds `redaction` processors.
#[derive(Debug, Default)]
pub struct RedactionFactory;

impl ProcessorFactory for RedactionFactory {
    fn type_name(&self) -> &'static str {
        "redaction"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn guards_storage(&self) -> bool {
        true
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &RedactionConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let c: RedactionConfig = typed(&path, config)?;
        let rules = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(RedactionComponent {
            id: id.to_owned(),
            rules: Arc::new(rules),
        }))
    }
}

#[cfg(test)]
mod tests;
