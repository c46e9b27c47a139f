use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::line::parse_logfmt;
use super::*;

use sluice_fixtures::{kv, s};

fn record(body: &str, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_700_000_000_123_456_789,
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes,
        ..Default::default()
    }
}

fn request(resources: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: resources
            .into_iter()
            .map(|(attributes, records)| ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

fn run(resources: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> Translation {
    translate_encoded(&request(resources), DefaultLabels::default(), 42).unwrap()
}

fn only_stream(t: &Translation) -> &Stream {
    assert_eq!(t.tenants.len(), 1, "{t:?}");
    assert_eq!(t.tenants[0].streams.len(), 1, "{t:?}");
    &t.tenants[0].streams[0]
}

fn service() -> Vec<KeyValue> {
    vec![
        kv("service.name", s("api")),
        kv("service.namespace", s("shop")),
        kv("service.instance.id", s("pod-7")),
    ]
}

#[test]
fn default_labels_are_the_collectors() {
    let mut r = record("started", vec![]);
    r.severity_number = 9;
    r.severity_text = "Information".into();
    let t = run(vec![(service(), vec![r])]);
    let stream = only_stream(&t);
    assert_eq!(
        stream.selector(),
        r#"{exporter="OTLP", instance="pod-7", job="shop/api", level="INFO"}"#
    );
    assert_eq!(stream.entries[0].0, 1_700_000_000_123_456_789);
    // The resource attributes stay in the line: only hinted ones leave it.
    assert_eq!(
        stream.entries[0].1,
        r#"{"body":"started","severity":"Information","resources":{"service.name":"api","service.namespace":"shop","service.instance.id":"pod-7"}}"#
    );
}

#[test]
fn job_is_the_name_alone_without_a_namespace_and_absent_without_a_name() {
    let t = run(vec![
        (
            vec![kv("service.name", s("api"))],
            vec![record("a", vec![])],
        ),
        (
            vec![kv("service.namespace", s("shop"))],
            vec![record("b", vec![])],
        ),
    ]);
    let selectors: Vec<String> = t.tenants[0].streams.iter().map(Stream::selector).collect();
    assert_eq!(
        selectors,
        [r#"{exporter="OTLP"}"#, r#"{exporter="OTLP", job="api"}"#]
    );
}

#[test]
fn level_comes_from_the_severity_number_or_a_level_attribute_and_only_when_set() {
    let levels = [
        (1, "TRACE"),
        (4, "TRACE"),
        (5, "DEBUG"),
        (12, "INFO"),
        (13, "WARN"),
        (17, "ERROR"),
        (24, "FATAL"),
    ];
    for (number, level) in levels {
        let mut r = record("x", vec![]);
        r.severity_number = number;
        let t = run(vec![(vec![], vec![r])]);
        let stream = only_stream(&t);
        assert_eq!(
            stream.labels,
            [
                ("exporter".to_owned(), "OTLP".to_owned()),
                ("level".to_owned(), level.to_owned())
            ],
            "severity {number}"
        );
    }
    // An attribute named level wins, and leaves the line for the label.
    let mut r = record("x", vec![kv("level", s("warning")), kv("k", s("v"))]);
    r.severity_number = 9;
    let t = run(vec![(vec![], vec![r])]);
    let stream = only_stream(&t);
    assert_eq!(stream.selector(), r#"{exporter="OTLP", level="warning"}"#);
    assert_eq!(
        stream.entries[0].1,
        r#"{"body":"x","attributes":{"k":"v"}}"#
    );
    // Unspecified severity: no level label, and a level attribute stays in the line.
    let t = run(vec![(
        vec![],
        vec![record("x", vec![kv("level", s("warning"))])],
    )]);
    let stream = only_stream(&t);
    assert_eq!(stream.selector(), r#"{exporter="OTLP"}"#);
    assert_eq!(
        stream.entries[0].1,
        r#"{"body":"x","attributes":{"level":"warning"}}"#
    );
}

#[test]
fn hints_promote_attributes_to_normalized_labels_and_leave_the_line() {
    let resource = vec![
        kv("service.name", s("api")),
        kv("k8s.namespace.name", s("prod")),
        kv("cloud.region", s("eu-1")),
        kv(HINT_RESOURCES, s("k8s.namespace.name, cloud.region")),
    ];
    let r = record(
        "hello",
        vec![
            kv("http.method", s("GET")),
            kv("user", s("u1")),
            kv("status", Value::IntValue(200)),
            kv(
                HINT_ATTRIBUTES,
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("http.method")),
                        },
                        AnyValue {
                            value: Some(s("status")),
                        },
                    ],
                }),
            ),
        ],
    );
    let t = run(vec![(resource, vec![r])]);
    let stream = only_stream(&t);
    assert_eq!(
        stream.selector(),
        r#"{cloud_region="eu-1", exporter="OTLP", http_method="GET", job="api", k8s_namespace_name="prod", status="200"}"#
    );
    assert_eq!(
        stream.entries[0].1,
        r#"{"body":"hello","attributes":{"user":"u1"},"resources":{"service.name":"api"}}"#
    );
}

#[test]
fn a_record_may_promote_resource_attributes_and_a_hint_may_name_a_nested_path() {
    let resource = vec![kv("host.name", s("h1")), kv("host.arch", s("arm"))];
    let nested = Value::KvlistValue(KeyValueList {
        values: vec![kv("route", s("/cart"))],
    });
    let r1 = record(
        "a",
        vec![
            kv(HINT_RESOURCES, s("host.name")),
            kv("http", nested),
            kv(HINT_ATTRIBUTES, s("http.route, missing")),
        ],
    );
    let r2 = record("b", vec![]);
    let t = run(vec![(resource, vec![r1, r2])]);
    let streams = &t.tenants[0].streams;
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0].selector(), r#"{exporter="OTLP"}"#);
    assert_eq!(
        streams[0].entries[0].1,
        r#"{"body":"b","resources":{"host.name":"h1","host.arch":"arm"}}"#
    );
    assert_eq!(
        streams[1].selector(),
        r#"{exporter="OTLP", host_name="h1", http_route="/cart"}"#
    );
    // The nested map stays in the line: only a top-level key equal to a label leaves it.
    assert_eq!(
        streams[1].entries[0].1,
        r#"{"body":"a","attributes":{"http":{"route":"/cart"}},"resources":{"host.arch":"arm"}}"#
    );
}

#[test]
fn tenants_come_from_the_resource_first_then_the_record() {
    let r_tenant = |t: &str| record("x", vec![kv("org", s(t)), kv(HINT_TENANT, s("org"))]);
    let t = run(vec![
        (
            vec![kv("team", s("blue")), kv(HINT_TENANT, s("team"))],
            vec![r_tenant("ignored"), record("y", vec![])],
        ),
        (vec![], vec![r_tenant("red"), record("z", vec![])]),
    ]);
    let tenants: Vec<(Option<&str>, usize)> = t
        .tenants
        .iter()
        .map(|t| {
            (
                t.tenant.as_deref(),
                t.streams.iter().map(|s| s.entries.len()).sum(),
            )
        })
        .collect();
    assert_eq!(tenants, [(Some("blue"), 2), (Some("red"), 1), (None, 1)]);
    // The tenant hint itself is not in the line; the named attribute is (it is not a label).
    let red = &t.tenants[1].streams[0].entries[0].1;
    assert_eq!(red, r#"{"body":"x","attributes":{"org":"red"}}"#);
}

#[test]
fn the_json_line_carries_ids_severity_flags_scope_and_structured_bodies() {
    let mut r = record("x", vec![kv("n", Value::DoubleValue(1.5))]);
    r.trace_id = vec![0xab; 16];
    r.span_id = vec![0x01; 8];
    r.flags = 1;
    r.severity_text = "WARN".into();
    r.body = Some(AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![
                kv("msg", s("a \"quoted\"\nline")),
                kv("n", Value::IntValue(3)),
            ],
        })),
    });
    let data = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app.db".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                log_records: vec![r],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let t = translate_encoded(&data, DefaultLabels::default(), 0).unwrap();
    let line = &only_stream(&t).entries[0].1;
    assert_eq!(
        line,
        r#"{"body":{"msg":"a \"quoted\"\nline","n":3},"traceid":"abababababababababababababababab","spanid":"0101010101010101","severity":"WARN","flags":1,"attributes":{"n":1.5},"instrumentation_scope":{"name":"app.db","version":"1.2"}}"#
    );
    serde_json::from_str::<serde_json::Value>(line).expect("the line is JSON");
}

#[test]
fn the_logfmt_and_raw_formats() {
    let logfmt = vec![kv(HINT_FORMAT, s("logfmt")), kv("host", s("h 1"))];
    let mut r = record("GET /cart took 3ms", vec![kv("user", s("u=1"))]);
    r.trace_id = vec![1; 16];
    r.severity_text = "INFO".into();
    let already = record(r#"level=info msg="cart loaded" items=3"#, vec![]);
    let t = run(vec![(logfmt, vec![r, already])]);
    let entries = &only_stream(&t).entries;
    assert_eq!(
        entries[0].1,
        r#"msg="GET /cart took 3ms" traceID=01010101010101010101010101010101 severity=INFO attribute_user="u=1" resource_host="h 1""#
    );
    assert_eq!(
        entries[1].1,
        r#"level=info msg="cart loaded" items=3 resource_host="h 1""#
    );

    let raw = vec![kv(HINT_FORMAT, s("raw"))];
    let mut r = record("plain text", vec![kv("k", s("v"))]);
    r.body = Some(AnyValue {
        value: Some(Value::IntValue(7)),
    });
    let t = run(vec![(raw, vec![record("plain text", vec![]), r])]);
    let lines: Vec<&str> = only_stream(&t)
        .entries
        .iter()
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(lines, ["plain text", "7"]);
}

#[test]
fn logfmt_bodies_are_recognized_only_when_every_token_is_a_pair() {
    assert_eq!(
        parse_logfmt(r#"a=1 b="x y" c= d="q\"uote""#),
        Some(vec![
            ("a".into(), "1".into()),
            ("b".into(), "x y".into()),
            ("c".into(), String::new()),
            ("d".into(), "q\"uote".into())
        ])
    );
    for text in [
        "plain words",
        "a=1 trailing",
        "=1",
        "a=\"unterminated",
        "a=b=c",
        "",
        "a=\"x\"y",
    ] {
        assert_eq!(parse_logfmt(text), None, "{text:?}");
    }
}

#[test]
fn a_map_body_is_flattened_in_logfmt_and_body_pairs_give_way_to_the_records_fields() {
    let mut r = record("", vec![]);
    r.body = Some(AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![
                kv("severity", s("from body")),
                kv(
                    "req",
                    Value::KvlistValue(KeyValueList {
                        values: vec![kv("path", s("/a"))],
                    }),
                ),
                kv(
                    "tags",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(s("x")),
                        }],
                    }),
                ),
            ],
        })),
    });
    r.severity_text = "ERROR".into();
    let t = run(vec![(vec![kv(HINT_FORMAT, s("logfmt"))], vec![r])]);
    assert_eq!(
        only_stream(&t).entries[0].1,
        "severity=ERROR req_path=/a tags_0=x"
    );
}

#[test]
fn records_without_any_label_are_counted_not_sent() {
    let none = DefaultLabels {
        exporter: false,
        job: false,
        instance: false,
        level: false,
    };
    let data = request(vec![(
        service(),
        vec![
            record("dropped", vec![]),
            record("kept", vec![kv("k", s("v")), kv(HINT_ATTRIBUTES, s("k"))]),
        ],
    )]);
    let t = translate_encoded(&data, none, 0).unwrap();
    assert_eq!(t.missing_labels, 1);
    assert_eq!(only_stream(&t).selector(), r#"{k="v"}"#);
}

#[test]
fn entries_are_sorted_by_time_and_records_without_time_take_the_observed_or_export_time() {
    let mut late = record("late", vec![]);
    late.time_unix_nano = 300;
    let mut early = record("early", vec![]);
    early.time_unix_nano = 100;
    let mut observed = record("observed", vec![]);
    observed.time_unix_nano = 0;
    observed.observed_time_unix_nano = 200;
    let mut timeless = record("timeless", vec![]);
    timeless.time_unix_nano = 0;
    let data = request(vec![(vec![], vec![late, early, observed, timeless])]);
    let t = translate_encoded(&data, DefaultLabels::default(), 250).unwrap();
    let entries: Vec<(i64, &str)> = only_stream(&t)
        .entries
        .iter()
        .map(|(t, l)| (*t, &l[9..l.find("\"}").unwrap()]))
        .collect();
    assert_eq!(
        entries,
        [
            (100, "early"),
            (200, "observed"),
            (250, "timeless"),
            (300, "late")
        ]
    );
}

#[test]
fn empty_label_values_and_unnamable_keys_make_no_label() {
    let resource = vec![
        kv("service.name", s("")),
        kv("!!!", s("x")),
        kv(HINT_RESOURCES, s("!!!")),
    ];
    let t = run(vec![(resource, vec![record("a", vec![])])]);
    assert_eq!(only_stream(&t).selector(), r#"{exporter="OTLP"}"#);
}

#[test]
fn broken_requests_are_an_error() {
    assert!(translate_encoded(&[0x0a, 0x05, 0x01], DefaultLabels::default(), 0).is_err());
}
