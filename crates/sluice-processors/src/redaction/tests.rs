use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::prelude::*;
use prost::Message;
use sluice_core::Signal;

use super::detect::Clean;
use super::*;
use crate::testing::{kv, s};

fn rules(config: serde_json::Value) -> Rules {
    let c: RedactionConfig = serde_json::from_value(config).unwrap();
    compile("processors.redaction", &c).unwrap_or_else(|p| panic!("{p:?}"))
}

fn map(entries: Vec<KeyValue>) -> any_value::Value {
    any_value::Value::KvlistValue(KeyValueList { values: entries })
}

fn array(values: Vec<any_value::Value>) -> any_value::Value {
    any_value::Value::ArrayValue(ArrayValue {
        values: values
            .into_iter()
            .map(|v| AnyValue { value: Some(v) })
            .collect(),
    })
}

/// Redacts one attribute list as the processor does for a span's attributes.
fn redact(rules: &Rules, mut attributes: Vec<KeyValue>) -> Vec<KeyValue> {
    rules.redact_map(&mut attributes, &mut Totals::default());
    attributes
}

fn run(rules: &Rules, signal: Signal, request: Vec<u8>) -> (Batch, Batch, Totals) {
    let before = Batch::decode(signal, request.into()).unwrap();
    let mut editor = Redact::new(rules);
    let after = before.clone().edit(&mut editor);
    (before, after, editor.totals)
}

#[test]
fn allowed_keys_fail_closed_and_ignored_keys_pass_untouched() {
    let r = rules(serde_json::json!({
        "allowed_keys": ["id", "note"],
        "ignored_keys": ["safe"],
        "blocked_values": ["4[0-9]{15}"],
    }));
    let out = redact(
        &r,
        vec![
            kv("id", s("7")),
            kv("secret", s("x")),
            kv("note", s("card 4111111111111111 used")),
            kv("safe", s("4111111111111111")),
        ],
    );
    assert_eq!(
        out,
        vec![
            kv("id", s("7")),
            kv("note", s("card **** used")),
            kv("safe", s("4111111111111111")),
        ]
    );
    // Nothing allowed: every attribute goes.
    let none = rules(serde_json::json!({}));
    assert!(redact(&none, vec![kv("a", s("1")), kv("b", s("2"))]).is_empty());
}

#[test]
fn allowed_values_win_over_blocked_values_and_blocked_keys_mask_whole_values() {
    let r = rules(serde_json::json!({
        "allow_all_keys": true,
        "blocked_values": ["[a-z.]+@[a-z.]+"],
        "allowed_values": [".+@mycompany\\.com"],
        "blocked_key_patterns": [".*token.*"],
    }));
    let out = redact(
        &r,
        vec![
            kv("to", s("jane@example.com")),
            kv("from", s("ops@mycompany.com")),
            kv("api_token", s("abc")),
            kv("refresh_token", any_value::Value::IntValue(12)),
        ],
    );
    assert_eq!(
        out,
        vec![
            kv("to", s("****")),
            kv("from", s("ops@mycompany.com")),
            kv("api_token", s("****")),
            kv("refresh_token", s("****")),
        ]
    );
}

#[test]
fn summary_attributes_follow_the_collector() {
    let config = |summary: &str| {
        rules(serde_json::json!({
            "allowed_keys": ["a", "b", "c"],
            "ignored_keys": ["i"],
            "blocked_values": ["secret"],
            "allowed_values": ["^ok$"],
            "summary": summary,
        }))
    };
    let input = || {
        vec![
            kv("a", s("my secret")),
            kv("b", s("ok")),
            kv("z", s("gone")),
            kv("y", s("gone too")),
            kv("i", s("secret but ignored")),
            kv("c", s("plain")),
        ]
    };
    let debug = redact(&config("debug"), input());
    assert_eq!(
        debug[4..],
        [
            kv(summary::REDACTED_KEYS, s("y,z")),
            kv(summary::REDACTED_COUNT, any_value::Value::IntValue(2)),
            kv(summary::MASKED_KEYS, s("a")),
            kv(summary::MASKED_COUNT, any_value::Value::IntValue(1)),
            kv(summary::ALLOWED_KEYS, s("b")),
            kv(summary::ALLOWED_COUNT, any_value::Value::IntValue(1)),
            kv(summary::IGNORED_COUNT, any_value::Value::IntValue(1)),
        ]
    );
    assert_eq!(debug[0], kv("a", s("my ****")));
    let info = redact(&config("info"), input());
    assert_eq!(
        info[4..],
        [
            kv(summary::REDACTED_COUNT, any_value::Value::IntValue(2)),
            kv(summary::MASKED_COUNT, any_value::Value::IntValue(1)),
            kv(summary::ALLOWED_COUNT, any_value::Value::IntValue(1)),
            kv(summary::IGNORED_COUNT, any_value::Value::IntValue(1)),
        ]
    );
    assert_eq!(redact(&config("silent"), input()).len(), 4);
}

#[test]
fn hash_functions_give_the_hex_digest_of_each_match() {
    let card = "4111 1111 1111 1111";
    for (function, digest) in [
        ("md5", "b4365ef04ef8296b2eb23bcf1fda017f"),
        ("sha1", "f37b13464e451a214b39507061af9c9a2613fbab"),
        (
            "sha3",
            "f2c10a9e260541170d27399a9e00e9e88198e94072afe736d1964b0ac9d945cb",
        ),
    ] {
        let r = rules(serde_json::json!({
            "allow_all_keys": true,
            "builtin_patterns": ["payment_card"],
            "hash_function": function,
        }));
        let out = redact(&r, vec![kv("k", s(&format!("paid with {card}.")))]);
        assert_eq!(
            out,
            vec![kv("k", s(&format!("paid with {digest}.")))],
            "{function}"
        );
    }
    let key = "k".repeat(32);
    let r = rules(serde_json::json!({
        "allow_all_keys": true,
        "builtin_patterns": ["payment_card"],
        "hash_function": "hmac-sha256",
        "hmac_key": key,
    }));
    assert_eq!(
        redact(&r, vec![kv("k", s(card))]),
        vec![kv(
            "k",
            s("25662c1dcd2936bddda2d83654f94f464bd9b8cfeb3665c19aac7b8048e92282")
        )]
    );
}

#[test]
fn nested_maps_and_arrays_are_walked_with_the_same_rules() {
    let r = rules(serde_json::json!({
        "allowed_keys": ["user", "email", "tags"],
        "builtin_patterns": ["email"],
        "summary": "debug",
    }));
    let out = redact(
        &r,
        vec![kv(
            "user",
            map(vec![
                kv("email", s("jane@example.com")),
                kv("password", s("hunter2")),
                kv("tags", array(vec![s("a"), s("b@example.org")])),
            ]),
        )],
    );
    assert_eq!(
        out[0],
        kv(
            "user",
            map(vec![
                kv("email", s("****")),
                kv("tags", array(vec![s("a"), s("****")])),
            ])
        )
    );
    assert_eq!(out[1], kv(summary::REDACTED_KEYS, s("user.password")));
    assert_eq!(
        out[3],
        kv(summary::MASKED_KEYS, s("user.email,user.tags.[1]"))
    );
}

#[test]
fn redact_all_types_masks_numbers_by_their_text() {
    let config = |all: bool| {
        rules(serde_json::json!({
            "allow_all_keys": true,
            "builtin_patterns": ["payment_card"],
            "redact_all_types": all,
        }))
    };
    let input = || {
        vec![kv(
            "card",
            any_value::Value::IntValue(4_111_111_111_111_111),
        )]
    };
    assert_eq!(redact(&config(false), input()), input());
    assert_eq!(redact(&config(true), input()), vec![kv("card", s("****"))]);
}

#[test]
fn url_and_db_sanitizers_apply_to_their_attributes_and_span_names() {
    let r = rules(serde_json::json!({
        "allow_all_keys": true,
        "url_sanitizer": {"enabled": true, "attributes": ["url.full"]},
        "db_sanitizer": {"sql": {"enabled": true, "attributes": ["db.statement"]}},
    }));
    let out = redact(
        &r,
        vec![
            kv(
                "url.full",
                s("https://shop.example/users/42/cart?session=abc"),
            ),
            kv("db.statement", s("SELECT * FROM t WHERE email = 'a@b.co'")),
            kv("other", s("/users/42")),
        ],
    );
    assert_eq!(
        out,
        vec![
            kv("url.full", s("https://shop.example/users/*/cart")),
            kv("db.statement", s("SELECT * FROM t WHERE email = ?")),
            kv("other", s("/users/42")),
        ]
    );
    let mut server = Span {
        name: "GET /users/42".into(),
        kind: SpanKind::Server as i32,
        ..Default::default()
    };
    r.redact_span(&mut server, &mut Totals::default());
    assert_eq!(server.name, "GET /users/*");
    let mut internal = Span {
        name: "/users/42".into(),
        kind: SpanKind::Internal as i32,
        ..Default::default()
    };
    r.redact_span(&mut internal, &mut Totals::default());
    assert_eq!(internal.name, "/users/42");
    // Database spans' names are statements.
    let mut query = Span {
        name: "SELECT * FROM t WHERE id = 42".into(),
        kind: SpanKind::Client as i32,
        attributes: vec![kv("db.system.name", s("postgresql"))],
        ..Default::default()
    };
    r.redact_span(&mut query, &mut Totals::default());
    assert_eq!(query.name, "SELECT * FROM t WHERE id = ?");
}

const EMAIL: &str = "jane.doe@example.com";
const SSN: &str = "123-45-6789";
const CARD: &str = "4111-1111-1111-1111";
const NOT_A_CARD: &str = "4111-1111-1111-1112";

fn pii_rules() -> Rules {
    rules(serde_json::json!({"allow_all_keys": true, "builtin_patterns": ["pii"]}))
}

fn traces_with_pii_everywhere() -> Vec<u8> {
    let attrs = |tag: &str| {
        vec![
            kv("who", s(&format!("{tag} {EMAIL}"))),
            kv("order", s(NOT_A_CARD)),
        ]
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attrs("resource"),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: attrs("scope"),
                    ..Default::default()
                }),
                spans: vec![
                    Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: format!("charge {CARD}"),
                        attributes: attrs("span"),
                        events: vec![span::Event {
                            name: format!("mail to {EMAIL}"),
                            attributes: vec![kv("ssn", s(SSN))],
                            ..Default::default()
                        }],
                        links: vec![span::Link {
                            trace_id: vec![3; 16],
                            span_id: vec![4; 8],
                            attributes: vec![kv("by", s(EMAIL))],
                            ..Default::default()
                        }],
                        status: Some(Status {
                            message: format!("declined {CARD}"),
                            code: 2,
                        }),
                        ..Default::default()
                    },
                    Span {
                        trace_id: vec![1; 16],
                        span_id: vec![5; 8],
                        name: "clean".into(),
                        attributes: vec![kv("n", any_value::Value::IntValue(1))],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn every_place_in_a_span_is_redacted_and_clean_spans_keep_their_bytes() {
    let r = pii_rules();
    let (before, after, totals) = run(&r, Signal::Traces, traces_with_pii_everywhere());
    for secret in [EMAIL, SSN, CARD] {
        assert!(contains(before.data(), secret));
        assert!(!contains(after.data(), secret), "{secret} survived");
    }
    // A Luhn-invalid number is not a card.
    assert!(contains(after.data(), NOT_A_CARD));
    let out = ExportTraceServiceRequest::decode(after.data().clone()).unwrap();
    let rs = &out.resource_spans[0];
    assert_eq!(
        rs.resource.as_ref().unwrap().attributes[0],
        kv("who", s("resource ****"))
    );
    let ss = &rs.scope_spans[0];
    assert_eq!(
        ss.scope.as_ref().unwrap().attributes[0],
        kv("who", s("scope ****"))
    );
    let span = &ss.spans[0];
    assert_eq!(span.name, "charge ****");
    assert_eq!(span.status.as_ref().unwrap().message, "declined ****");
    assert_eq!(span.events[0].name, "mail to ****");
    assert_eq!(span.events[0].attributes, vec![kv("ssn", s("****"))]);
    assert_eq!(span.links[0].attributes, vec![kv("by", s("****"))]);
    assert_eq!(span.trace_id, vec![1; 16]);
    assert_eq!(ss.spans[1].name, "clean");
    // resource, scope, span attribute, name, status, event name, event attribute, link.
    assert_eq!(totals.masked, 8);
    assert_eq!(after.items(), 2);

    // Nothing to redact: the very same bytes.
    let clean = rules(serde_json::json!({"allow_all_keys": true, "builtin_patterns": ["secrets"]}));
    let (before, after, totals) = run(&clean, Signal::Traces, traces_with_pii_everywhere());
    assert_eq!(before.data().as_ptr(), after.data().as_ptr());
    assert_eq!(totals.masked, 0);
}

#[test]
fn log_bodies_are_redacted_as_strings_maps_and_arrays() {
    let r = rules(serde_json::json!({
        "allowed_keys": ["user", "msg"],
        "builtin_patterns": ["pii"],
        "summary": "debug",
    }));
    let log = |body: any_value::Value| LogRecord {
        body: Some(AnyValue { value: Some(body) }),
        attributes: vec![kv("user", s(EMAIL)), kv("drop.me", s("x"))],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(s(&format!("login by {EMAIL} with {CARD}"))),
                    log(map(vec![
                        kv("msg", s(&format!("ssn {SSN}"))),
                        kv("user", map(vec![kv("msg", s(EMAIL)), kv("pw", s("x"))])),
                    ])),
                    log(array(vec![s(EMAIL), s("fine")])),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let (_, after, _) = run(&r, Signal::Logs, request);
    for secret in [EMAIL, SSN, CARD] {
        assert!(!contains(after.data(), secret), "{secret} survived");
    }
    let out = ExportLogsServiceRequest::decode(after.data().clone()).unwrap();
    let logs = &out.resource_logs[0].scope_logs[0].log_records;
    let body = |i: usize| logs[i].body.as_ref().unwrap().value.clone().unwrap();
    assert_eq!(body(0), s("login by **** with ****"));
    assert_eq!(
        body(1),
        map(vec![
            kv("msg", s("ssn ****")),
            kv("user", map(vec![kv("msg", s("****"))])),
        ])
    );
    assert_eq!(body(2), array(vec![s("****"), s("fine")]));
    let attrs = &logs[1].attributes;
    assert_eq!(attrs[0], kv("user", s("****")));
    assert!(attrs.contains(&kv(summary::REDACTED_KEYS, s("drop.me"))));
    assert!(attrs.contains(&kv(summary::BODY_REDACTED_KEYS, s("user.pw"))));
    assert!(attrs.contains(&kv(summary::BODY_MASKED_KEYS, s("msg,user.msg"))));
    assert!(
        logs[0]
            .attributes
            .contains(&kv(summary::BODY_MASKED_KEYS, s("body")))
    );
}

#[test]
fn data_point_and_exemplar_attributes_are_redacted() {
    let r = pii_rules();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("user", s(EMAIL))],
                            value: Some(number_data_point::Value::AsInt(3)),
                            exemplars: vec![Exemplar {
                                filtered_attributes: vec![kv("ssn", s(SSN))],
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let (_, after, totals) = run(&r, Signal::Metrics, request);
    assert_eq!(totals.masked, 2);
    let out = ExportMetricsServiceRequest::decode(after.data().clone()).unwrap();
    let Some(metric::Data::Gauge(g)) = &out.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!()
    };
    assert_eq!(g.data_points[0].attributes, vec![kv("user", s("****"))]);
    assert_eq!(
        g.data_points[0].exemplars[0].filtered_attributes,
        vec![kv("ssn", s("****"))]
    );
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(3))
    );
}

#[test]
fn the_hmac_key_never_shows_in_debug_output() {
    let c: RedactionConfig = serde_json::from_value(serde_json::json!({
        "hash_function": "hmac-sha256",
        "hmac_key": "a-very-secret-key-of-32-bytes-xx",
    }))
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("a-very-secret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn invalid_configs_are_refused_with_paths() {
    let problems = RedactionFactory.check(
        "processors.redaction",
        &serde_json::json!({
            "blocked_values": ["("],
            "builtin_patterns": ["emails"],
            "hash_function": "crc32",
            "summary": "loud",
        }),
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text[0].contains("processors.redaction.blocked_values[0]: not a valid regular expression"),
        "{text:?}"
    );
    assert!(
        text[1].contains("processors.redaction.builtin_patterns[0]: unknown pattern set `emails`"),
        "{text:?}"
    );
    assert!(
        text[2].contains("processors.redaction.hash_function: unknown hash function `crc32`"),
        "{text:?}"
    );
    assert!(
        text[3].contains("processors.redaction.summary: unknown summary `loud`"),
        "{text:?}"
    );
    let short = RedactionFactory.check(
        "processors.redaction",
        &serde_json::json!({"hash_function": "hmac-sha512", "hmac_key": "short"}),
    );
    assert_eq!(
        short[0].to_string(),
        "error: processors.redaction.hmac_key: `hmac-sha512` needs an `hmac_key` of at least 64 bytes"
    );
    let unknown = RedactionFactory.check(
        "processors.redaction",
        &serde_json::json!({"allow_all": true}),
    );
    assert!(unknown[0].to_string().contains("allow_all"), "{unknown:?}");
}

/// A random attribute value: words of lowercase letters (which no pattern matches), or one of
/// the planted secrets, nested in maps and arrays.
fn value_tree() -> impl Strategy<Value = any_value::Value> {
    let leaf = prop_oneof![
        "[a-z ]{0,12}".prop_map(|w| s(&w)),
        prop::sample::select(vec![EMAIL, SSN, CARD]).prop_map(|p| s(&format!("x {p} y"))),
        any::<i64>().prop_map(any_value::Value::IntValue),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|kvs| map(kvs.into_iter().map(|(k, v)| kv(&k, v)).collect())),
        ]
    })
}

/// What the redaction of `value` must give: each planted secret replaced by `****`.
fn expected(value: &any_value::Value) -> any_value::Value {
    match value {
        any_value::Value::StringValue(text) => s(&text
            .replace(EMAIL, "****")
            .replace(SSN, "****")
            .replace(CARD, "****")),
        any_value::Value::ArrayValue(a) => array(
            a.values
                .iter()
                .map(|v| expected(v.value.as_ref().unwrap()))
                .collect(),
        ),
        any_value::Value::KvlistValue(l) => map(l
            .values
            .iter()
            .map(|e| {
                kv(
                    &e.key,
                    expected(e.value.as_ref().unwrap().value.as_ref().unwrap()),
                )
            })
            .collect()),
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn planted_secrets_never_survive_and_everything_else_is_unchanged(
        attributes in prop::collection::vec(("[a-z.]{1,8}", value_tree()), 0..6),
        body in value_tree(),
    ) {
        let r = pii_rules();
        let attributes: Vec<KeyValue> = attributes.iter().map(|(k, v)| kv(k, v.clone())).collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: attributes.clone(), ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue { value: Some(body.clone()) }),
                        attributes: attributes.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let (_, after, _) = run(&r, Signal::Logs, request);
        for secret in [EMAIL, SSN, CARD] {
            prop_assert!(!contains(after.data(), secret));
        }
        let out = ExportLogsServiceRequest::decode(after.data().clone()).unwrap();
        let want: Vec<KeyValue> = attributes
            .iter()
            .map(|a| kv(&a.key, expected(a.value.as_ref().unwrap().value.as_ref().unwrap())))
            .collect();
        let rl = &out.resource_logs[0];
        prop_assert_eq!(&rl.resource.as_ref().unwrap().attributes, &want);
        let log = &rl.scope_logs[0].log_records[0];
        prop_assert_eq!(&log.attributes, &want);
        prop_assert_eq!(log.body.as_ref().unwrap().value.as_ref().unwrap(), &expected(&body));
    }
}

#[test]
fn the_clean_cache_matches_exact_bytes_and_never_holds_what_was_masked() {
    let mut clean = Clean::new();
    assert!(!clean.holds(b"shop.example.com"));
    clean.remember(b"shop.example.com");
    assert!(clean.holds(b"shop.example.com"));
    // Same length and the same first, middle and last bytes: the same slot, other bytes.
    assert_eq!(
        Clean::slot(b"shop.example.com"),
        Clean::slot(b"sxop.example.cxm")
    );
    assert!(!clean.holds(b"sxop.example.cxm"));
    assert!(!clean.holds(b""));

    // A value that repeats with personal data in it is masked every time; its clean neighbours
    // (cached after the first span) stay as they were.
    let r = rules(serde_json::json!({"allow_all_keys": true, "builtin_patterns": ["pii"]}));
    let spans: Vec<Span> = (0..4)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![i + 1; 8],
            name: "GET /users".into(),
            attributes: vec![
                kv("user", s("jane@example.com")),
                kv("host", s("shop.example.com")),
            ],
            ..Default::default()
        })
        .collect();
    let request = crate::testing::traces(Vec::new(), spans).data().to_vec();
    let (_, after, totals) = run(&r, Signal::Traces, request);
    for span in &crate::testing::spans(&after) {
        assert_eq!(
            span.attributes,
            vec![kv("user", s("****")), kv("host", s("shop.example.com"))]
        );
    }
    assert_eq!(totals.masked, 4);
}
