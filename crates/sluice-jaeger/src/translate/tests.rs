use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue as OtlpKeyValue, KeyValueList,
    any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
    span::{Event, Link, SpanKind},
    status::StatusCode,
};
use proptest::prelude::*;
use prost::Message as _;

use super::{translate, value_to_string};
use crate::proto::{self, ValueType};

const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
];
const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];
const PARENT_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73];
const OTHER_TRACE_ID: [u8; 16] = [0x11; 16];
const OTHER_SPAN_ID: [u8; 8] = [0x22; 8];

// ---- OTLP builders ----

fn av(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn attr(key: &str, value: Value) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.to_owned(),
        value: Some(av(value)),
        ..Default::default()
    }
}

fn str_attr(key: &str, value: &str) -> OtlpKeyValue {
    attr(key, Value::StringValue(value.to_owned()))
}

fn array(values: Vec<Value>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: values.into_iter().map(av).collect(),
    })
}

fn map(entries: Vec<OtlpKeyValue>) -> Value {
    Value::KvlistValue(KeyValueList { values: entries })
}

fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_owned(),
        version: version.to_owned(),
        ..Default::default()
    }
}

/// A sampled span with ids, a name, a start and a 1.5 s duration, and nothing else.
fn span() -> OtlpSpan {
    OtlpSpan {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        name: "GET /users".to_owned(),
        flags: 0x1,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_001_623_456_789,
        ..Default::default()
    }
}

fn resource_spans(
    resource_attributes: Vec<OtlpKeyValue>,
    scopes: Vec<(Option<InstrumentationScope>, Vec<OtlpSpan>)>,
) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource_attributes,
            ..Default::default()
        }),
        scope_spans: scopes
            .into_iter()
            .map(|(scope, spans)| ScopeSpans {
                scope,
                spans,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

/// Translates a single span of service `svc` without a scope and returns its Jaeger span.
fn translate_span(span: OtlpSpan) -> proto::Span {
    translate_scoped_span(None, span)
}

fn translate_scoped_span(scope: Option<InstrumentationScope>, span: OtlpSpan) -> proto::Span {
    let batches = translate(&request(vec![resource_spans(
        vec![str_attr("service.name", "svc")],
        vec![(scope, vec![span])],
    )]));
    assert_eq!(batches.len(), 1);
    let mut spans = batches
        .into_iter()
        .next()
        .map(|b| b.spans)
        .unwrap_or_default();
    assert_eq!(spans.len(), 1);
    spans.remove(0)
}

// ---- Jaeger builders ----

fn jstr(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: ValueType::String as i32,
        v_str: value.to_owned(),
        ..Default::default()
    }
}

fn jbool(key: &str, value: bool) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: ValueType::Bool as i32,
        v_bool: value,
        ..Default::default()
    }
}

fn jint(key: &str, value: i64) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: ValueType::Int64 as i32,
        v_int64: value,
        ..Default::default()
    }
}

fn jfloat(key: &str, value: f64) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: ValueType::Float64 as i32,
        v_float64: value,
        ..Default::default()
    }
}

fn jbinary(key: &str, value: &[u8]) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: ValueType::Binary as i32,
        v_binary: value.to_vec(),
        ..Default::default()
    }
}

fn span_ref(trace_id: &[u8], span_id: &[u8], ref_type: proto::SpanRefType) -> proto::SpanRef {
    proto::SpanRef {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        ref_type: ref_type as i32,
    }
}

fn ts(seconds: i64, nanos: i32) -> Option<proto::Timestamp> {
    Some(proto::Timestamp { seconds, nanos })
}

// ---- Process ----

#[test]
fn service_name_names_the_process_and_other_resource_attributes_become_tags() {
    let batches = translate(&request(vec![resource_spans(
        vec![
            str_attr("host.name", "box-1"),
            str_attr("service.name", "checkout"),
            attr("process.pid", Value::IntValue(4242)),
            attr("debug", Value::BoolValue(true)),
        ],
        vec![(None, vec![span()])],
    )]));
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].process,
        Some(proto::Process {
            service_name: "checkout".to_owned(),
            tags: vec![
                jstr("host.name", "box-1"),
                jint("process.pid", 4242),
                jbool("debug", true),
            ],
        })
    );
}

#[test]
fn missing_service_name_becomes_unknown_service() {
    let mut without_resource = resource_spans(vec![], vec![(None, vec![span()])]);
    without_resource.resource = None;
    let batches = translate(&request(vec![
        resource_spans(
            vec![str_attr("host.name", "box-1")],
            vec![(None, vec![span()])],
        ),
        without_resource,
    ]));
    let processes: Vec<_> = batches.into_iter().map(|b| b.process).collect();
    assert_eq!(
        processes,
        vec![
            Some(proto::Process {
                service_name: "unknown_service".to_owned(),
                tags: vec![jstr("host.name", "box-1")],
            }),
            Some(proto::Process {
                service_name: "unknown_service".to_owned(),
                tags: vec![],
            }),
        ]
    );
}

#[test]
fn empty_service_name_becomes_unknown_service() {
    let batches = translate(&request(vec![
        resource_spans(
            vec![str_attr("service.name", "")],
            vec![(None, vec![span()])],
        ),
        resource_spans(
            vec![OtlpKeyValue {
                key: "service.name".to_owned(),
                value: None,
                ..Default::default()
            }],
            vec![(None, vec![span()])],
        ),
    ]));
    let names: Vec<_> = batches
        .into_iter()
        .map(|b| b.process.map(|p| (p.service_name, p.tags)))
        .collect();
    assert_eq!(
        names,
        vec![
            Some(("unknown_service".to_owned(), vec![])),
            Some(("unknown_service".to_owned(), vec![])),
        ]
    );
}

#[test]
fn non_string_service_name_is_rendered_in_its_string_form() {
    let cases = [
        (Value::IntValue(-42), "-42"),
        (Value::BoolValue(false), "false"),
        (Value::DoubleValue(2.5), "2.5"),
        (Value::DoubleValue(f64::NEG_INFINITY), "-Infinity"),
        (
            Value::BytesValue(b"hello world".to_vec()),
            "aGVsbG8gd29ybGQ=",
        ),
        (
            array(vec![Value::StringValue("a".to_owned()), Value::IntValue(1)]),
            r#"["a",1]"#,
        ),
    ];
    for (value, expected) in cases {
        let batches = translate(&request(vec![resource_spans(
            vec![attr("service.name", value), str_attr("host.name", "h")],
            vec![(None, vec![span()])],
        )]));
        assert_eq!(
            batches.into_iter().map(|b| b.process).collect::<Vec<_>>(),
            vec![Some(proto::Process {
                service_name: expected.to_owned(),
                tags: vec![jstr("host.name", "h")],
            })],
            "service.name = {expected}"
        );
    }
}

#[test]
fn resource_without_spans_produces_no_batch() {
    let batches = translate(&request(vec![
        resource_spans(vec![str_attr("service.name", "empty")], vec![]),
        resource_spans(
            vec![str_attr("service.name", "a")],
            vec![(None, vec![span()])],
        ),
        resource_spans(
            vec![str_attr("service.name", "empty-scopes")],
            vec![(None, vec![]), (Some(scope("s", "1")), vec![])],
        ),
        resource_spans(
            vec![str_attr("service.name", "b")],
            vec![(None, vec![]), (None, vec![span()])],
        ),
    ]));
    let names: Vec<_> = batches
        .iter()
        .map(|b| b.process.as_ref().map(|p| p.service_name.as_str()))
        .collect();
    assert_eq!(names, vec![Some("a"), Some("b")]);
    assert!(translate(&request(vec![])).is_empty());
}

#[test]
fn spans_of_all_scopes_share_one_batch_and_leave_span_process_unset() {
    let mut first = span();
    first.name = "first".to_owned();
    let mut second = span();
    second.name = "second".to_owned();
    let mut third = span();
    third.name = "third".to_owned();
    let batches = translate(&request(vec![resource_spans(
        vec![str_attr("service.name", "svc")],
        vec![
            (Some(scope("a", "")), vec![first, second]),
            (Some(scope("b", "")), vec![third]),
        ],
    )]));
    assert_eq!(batches.len(), 1);
    let summary: Vec<_> = batches[0]
        .spans
        .iter()
        .map(|s| {
            (
                s.operation_name.as_str(),
                s.process.clone(),
                s.process_id.as_str(),
                s.tags.first().map(|t| t.v_str.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("first", None, "", Some("a")),
            ("second", None, "", Some("a")),
            ("third", None, "", Some("b")),
        ]
    );
}

// ---- Span ----

#[test]
fn a_minimal_span_translates_to_the_complete_jaeger_span() {
    assert_eq!(
        translate_span(span()),
        proto::Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: SPAN_ID.to_vec(),
            operation_name: "GET /users".to_owned(),
            references: vec![],
            flags: 1,
            start_time: ts(1_700_000_000, 123_456_789),
            duration: Some(proto::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            tags: vec![],
            logs: vec![],
            process: None,
            process_id: String::new(),
            warnings: vec![],
        }
    );
}

#[test]
fn ids_are_copied_unchanged_even_when_malformed() {
    let mut malformed = span();
    malformed.trace_id = vec![1, 2, 3];
    malformed.span_id = vec![];
    let jaeger = translate_span(malformed);
    assert_eq!(
        (jaeger.trace_id, jaeger.span_id),
        (vec![1, 2, 3], Vec::new())
    );
}

#[test]
fn start_time_and_duration_keep_nanosecond_precision() {
    let mut otlp = span();
    otlp.start_time_unix_nano = 999_999_999;
    otlp.end_time_unix_nano = 3_000_000_000;
    let jaeger = translate_span(otlp);
    assert_eq!(
        (jaeger.start_time, jaeger.duration, jaeger.warnings),
        (
            ts(0, 999_999_999),
            Some(proto::Duration {
                seconds: 2,
                nanos: 1,
            }),
            vec![]
        )
    );

    let mut extreme = span();
    extreme.start_time_unix_nano = 0;
    extreme.end_time_unix_nano = u64::MAX;
    let jaeger = translate_span(extreme);
    assert_eq!(
        (jaeger.start_time, jaeger.duration),
        (
            ts(0, 0),
            Some(proto::Duration {
                seconds: 18_446_744_073,
                nanos: 709_551_615,
            })
        )
    );
}

#[test]
fn negative_duration_is_clamped_with_a_warning() {
    let mut otlp = span();
    otlp.start_time_unix_nano = 2_000_000_001;
    otlp.end_time_unix_nano = 2_000_000_000;
    let jaeger = translate_span(otlp);
    assert_eq!(
        (jaeger.start_time, jaeger.duration, jaeger.warnings),
        (
            ts(2, 1),
            Some(proto::Duration {
                seconds: 0,
                nanos: 0,
            }),
            vec!["end time before start time; duration set to 0".to_owned()]
        )
    );
}

#[test]
fn zero_duration_has_no_warning() {
    let mut otlp = span();
    otlp.end_time_unix_nano = otlp.start_time_unix_nano;
    let jaeger = translate_span(otlp);
    assert_eq!(
        (jaeger.duration, jaeger.warnings),
        (
            Some(proto::Duration {
                seconds: 0,
                nanos: 0,
            }),
            vec![]
        )
    );
}

fn flags_of(otlp_flags: u32) -> u32 {
    let mut otlp = span();
    otlp.flags = otlp_flags;
    translate_span(otlp).flags
}

#[test]
fn sampled_flag_is_set_when_the_w3c_sampled_bit_is_set() {
    assert_eq!(
        [0x01, 0x03, 0x101, 0x301, 0xffff_ffff].map(flags_of),
        [1, 1, 1, 1, 1]
    );
}

#[test]
fn sampled_flag_is_set_when_the_trace_flags_are_unset() {
    // 0: the field was left unset; 256 and 768: only the "has is_remote" / "is_remote" bits.
    assert_eq!([0, 0x100, 0x300].map(flags_of), [1, 1, 1]);
}

#[test]
fn sampled_flag_is_clear_when_trace_flags_lack_the_sampled_bit() {
    assert_eq!([0x02, 0x80, 0x1fe].map(flags_of), [0, 0, 0]);
}

#[test]
fn parent_is_the_first_child_of_reference() {
    let mut otlp = span();
    otlp.parent_span_id = PARENT_ID.to_vec();
    otlp.links = vec![Link {
        trace_id: OTHER_TRACE_ID.to_vec(),
        span_id: OTHER_SPAN_ID.to_vec(),
        ..Default::default()
    }];
    assert_eq!(
        translate_span(otlp).references,
        vec![
            span_ref(&TRACE_ID, &PARENT_ID, proto::SpanRefType::ChildOf),
            span_ref(
                &OTHER_TRACE_ID,
                &OTHER_SPAN_ID,
                proto::SpanRefType::FollowsFrom
            ),
        ]
    );
}

#[test]
fn empty_or_all_zero_parent_adds_no_reference() {
    for parent in [vec![], vec![0; 8]] {
        let mut otlp = span();
        otlp.parent_span_id = parent;
        assert_eq!(translate_span(otlp).references, vec![]);
    }
}

#[test]
fn links_follow_from_unless_their_ref_type_is_child_of() {
    let link = |span_id: u8, attributes: Vec<OtlpKeyValue>| Link {
        trace_id: OTHER_TRACE_ID.to_vec(),
        span_id: vec![span_id; 8],
        trace_state: "k=v".to_owned(),
        attributes,
        dropped_attributes_count: 3,
        flags: 0x1,
    };
    let mut otlp = span();
    otlp.links = vec![
        link(1, vec![str_attr("opentracing.ref_type", "child_of")]),
        link(2, vec![str_attr("opentracing.ref_type", "follows_from")]),
        link(3, vec![str_attr("peer", "x")]),
        link(4, vec![str_attr("opentracing.ref_type", "CHILD_OF")]),
        link(
            5,
            vec![attr("opentracing.ref_type", Value::BoolValue(true))],
        ),
    ];
    assert_eq!(
        translate_span(otlp).references,
        vec![
            span_ref(&OTHER_TRACE_ID, &[1; 8], proto::SpanRefType::ChildOf),
            span_ref(&OTHER_TRACE_ID, &[2; 8], proto::SpanRefType::FollowsFrom),
            span_ref(&OTHER_TRACE_ID, &[3; 8], proto::SpanRefType::FollowsFrom),
            span_ref(&OTHER_TRACE_ID, &[4; 8], proto::SpanRefType::FollowsFrom),
            span_ref(&OTHER_TRACE_ID, &[5; 8], proto::SpanRefType::FollowsFrom),
        ]
    );
}

#[test]
fn link_with_parent_ids_overrides_the_first_reference_type() {
    let mut otlp = span();
    otlp.parent_span_id = PARENT_ID.to_vec();
    otlp.links = vec![
        Link {
            trace_id: OTHER_TRACE_ID.to_vec(),
            span_id: OTHER_SPAN_ID.to_vec(),
            ..Default::default()
        },
        // Same ids as the parent, no ref type: FOLLOWS_FROM replaces CHILD_OF, not added again.
        Link {
            trace_id: TRACE_ID.to_vec(),
            span_id: PARENT_ID.to_vec(),
            ..Default::default()
        },
        // The parent's span id in another trace is a different span.
        Link {
            trace_id: OTHER_TRACE_ID.to_vec(),
            span_id: PARENT_ID.to_vec(),
            ..Default::default()
        },
    ];
    assert_eq!(
        translate_span(otlp.clone()).references,
        vec![
            span_ref(&TRACE_ID, &PARENT_ID, proto::SpanRefType::FollowsFrom),
            span_ref(
                &OTHER_TRACE_ID,
                &OTHER_SPAN_ID,
                proto::SpanRefType::FollowsFrom
            ),
            span_ref(&OTHER_TRACE_ID, &PARENT_ID, proto::SpanRefType::FollowsFrom),
        ]
    );

    // A parent link typed child_of keeps the parent a CHILD_OF.
    otlp.links[1].attributes = vec![str_attr("opentracing.ref_type", "child_of")];
    assert_eq!(
        translate_span(otlp).references[0],
        span_ref(&TRACE_ID, &PARENT_ID, proto::SpanRefType::ChildOf)
    );
}

// ---- Tags ----

#[test]
fn span_tags_come_in_the_documented_order() {
    let mut otlp = span();
    otlp.attributes = vec![
        str_attr("http.method", "GET"),
        attr("http.status_code", Value::IntValue(500)),
    ];
    otlp.kind = SpanKind::Server as i32;
    otlp.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "boom".to_owned(),
    });
    otlp.trace_state = "vendor=abc".to_owned();
    otlp.dropped_attributes_count = 1;
    otlp.dropped_events_count = 2;
    otlp.dropped_links_count = 3;
    assert_eq!(
        translate_scoped_span(Some(scope("io.opentelemetry.http", "1.2.3")), otlp).tags,
        vec![
            jstr("otel.scope.name", "io.opentelemetry.http"),
            jstr("otel.scope.version", "1.2.3"),
            jstr("otel.library.name", "io.opentelemetry.http"),
            jstr("otel.library.version", "1.2.3"),
            jstr("http.method", "GET"),
            jint("http.status_code", 500),
            jstr("span.kind", "server"),
            jstr("otel.status_code", "ERROR"),
            jbool("error", true),
            jstr("otel.status_description", "boom"),
            jstr("w3c.tracestate", "vendor=abc"),
            jint("otel.dropped_attributes_count", 1),
            jint("otel.dropped_events_count", 2),
            jint("otel.dropped_links_count", 3),
        ]
    );
}

#[test]
fn scope_is_tagged_under_scope_and_deprecated_library_keys() {
    assert_eq!(
        translate_scoped_span(Some(scope("lib", "0.1")), span()).tags,
        vec![
            jstr("otel.scope.name", "lib"),
            jstr("otel.scope.version", "0.1"),
            jstr("otel.library.name", "lib"),
            jstr("otel.library.version", "0.1"),
        ]
    );
}

#[test]
fn empty_scope_name_or_version_adds_no_tag() {
    assert_eq!(
        translate_scoped_span(Some(scope("lib", "")), span()).tags,
        vec![
            jstr("otel.scope.name", "lib"),
            jstr("otel.library.name", "lib")
        ]
    );
    assert_eq!(
        translate_scoped_span(Some(scope("", "0.1")), span()).tags,
        vec![
            jstr("otel.scope.version", "0.1"),
            jstr("otel.library.version", "0.1")
        ]
    );
    assert_eq!(
        translate_scoped_span(Some(scope("", "")), span()).tags,
        vec![]
    );
    assert_eq!(translate_scoped_span(None, span()).tags, vec![]);
}

#[test]
fn span_attributes_become_tags_in_order() {
    let mut otlp = span();
    otlp.attributes = vec![str_attr("b", "1"), str_attr("a", "2"), str_attr("b", "3")];
    assert_eq!(
        translate_span(otlp).tags,
        vec![jstr("b", "1"), jstr("a", "2"), jstr("b", "3")]
    );
}

fn tags_of_kind(kind: i32) -> Vec<proto::KeyValue> {
    let mut otlp = span();
    otlp.kind = kind;
    translate_span(otlp).tags
}

#[test]
fn remote_span_kinds_become_span_kind_tags() {
    let kinds = [
        (SpanKind::Client, "client"),
        (SpanKind::Server, "server"),
        (SpanKind::Producer, "producer"),
        (SpanKind::Consumer, "consumer"),
    ];
    for (kind, name) in kinds {
        assert_eq!(tags_of_kind(kind as i32), vec![jstr("span.kind", name)]);
    }
}

#[test]
fn internal_kind_adds_no_tag() {
    assert_eq!(tags_of_kind(SpanKind::Internal as i32), vec![]);
}

#[test]
fn unspecified_or_unknown_kind_adds_no_tag() {
    assert_eq!(tags_of_kind(SpanKind::Unspecified as i32), vec![]);
    assert_eq!(tags_of_kind(99), vec![]);
    assert_eq!(tags_of_kind(-1), vec![]);
}

fn tags_of_status(code: i32, message: &str) -> Vec<proto::KeyValue> {
    let mut otlp = span();
    otlp.status = Some(Status {
        code,
        message: message.to_owned(),
    });
    translate_span(otlp).tags
}

#[test]
fn ok_status_is_tagged_without_error() {
    assert_eq!(
        tags_of_status(StatusCode::Ok as i32, ""),
        vec![jstr("otel.status_code", "OK")]
    );
}

#[test]
fn error_status_is_tagged_with_error_true() {
    assert_eq!(
        tags_of_status(StatusCode::Error as i32, ""),
        vec![jstr("otel.status_code", "ERROR"), jbool("error", true)]
    );
}

#[test]
fn unset_or_unknown_status_adds_no_status_tags() {
    assert_eq!(tags_of_status(StatusCode::Unset as i32, ""), vec![]);
    assert_eq!(tags_of_status(7, ""), vec![]);
    let mut no_status = span();
    no_status.status = None;
    assert_eq!(translate_span(no_status).tags, vec![]);
}

#[test]
fn status_description_is_tagged_whatever_the_code() {
    assert_eq!(
        tags_of_status(StatusCode::Unset as i32, "why"),
        vec![jstr("otel.status_description", "why")]
    );
    assert_eq!(
        tags_of_status(StatusCode::Ok as i32, "fine"),
        vec![
            jstr("otel.status_code", "OK"),
            jstr("otel.status_description", "fine")
        ]
    );
}

#[test]
fn trace_state_becomes_the_w3c_tracestate_tag() {
    let mut otlp = span();
    otlp.trace_state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned();
    assert_eq!(
        translate_span(otlp).tags,
        vec![jstr(
            "w3c.tracestate",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        )]
    );
}

#[test]
fn dropped_counts_become_tags() {
    let mut otlp = span();
    otlp.dropped_attributes_count = u32::MAX;
    otlp.dropped_links_count = 7;
    assert_eq!(
        translate_span(otlp).tags,
        vec![
            jint("otel.dropped_attributes_count", i64::from(u32::MAX)),
            jint("otel.dropped_links_count", 7),
        ]
    );
    let mut only_events = span();
    only_events.dropped_events_count = 2;
    assert_eq!(
        translate_span(only_events).tags,
        vec![jint("otel.dropped_events_count", 2)]
    );
}

// ---- Events ----

#[test]
fn events_become_logs_with_the_name_first() {
    let mut otlp = span();
    otlp.events = vec![
        Event {
            time_unix_nano: 1_700_000_000_500_000_001,
            name: "exception".to_owned(),
            attributes: vec![
                str_attr("exception.type", "IOError"),
                attr("retry", Value::IntValue(2)),
            ],
            dropped_attributes_count: 0,
        },
        Event {
            time_unix_nano: 5,
            name: "second".to_owned(),
            ..Default::default()
        },
    ];
    assert_eq!(
        translate_span(otlp).logs,
        vec![
            proto::Log {
                timestamp: ts(1_700_000_000, 500_000_001),
                fields: vec![
                    jstr("event", "exception"),
                    jstr("exception.type", "IOError"),
                    jint("retry", 2),
                ],
            },
            proto::Log {
                timestamp: ts(0, 5),
                fields: vec![jstr("event", "second")],
            },
        ]
    );
}

#[test]
fn event_attribute_named_event_wins_over_the_name() {
    let mut otlp = span();
    otlp.events = vec![Event {
        time_unix_nano: 1,
        name: "ignored".to_owned(),
        attributes: vec![str_attr("a", "1"), attr("event", Value::IntValue(3))],
        dropped_attributes_count: 0,
    }];
    assert_eq!(
        translate_span(otlp).logs,
        vec![proto::Log {
            timestamp: ts(0, 1),
            fields: vec![jstr("a", "1"), jint("event", 3)],
        }]
    );
}

#[test]
fn event_without_a_name_has_no_event_field() {
    let mut otlp = span();
    otlp.events = vec![
        Event {
            time_unix_nano: 1,
            attributes: vec![str_attr("a", "1")],
            ..Default::default()
        },
        Event::default(),
    ];
    assert_eq!(
        translate_span(otlp).logs,
        vec![
            proto::Log {
                timestamp: ts(0, 1),
                fields: vec![jstr("a", "1")],
            },
            proto::Log {
                timestamp: ts(0, 0),
                fields: vec![],
            },
        ]
    );
}

#[test]
fn event_dropped_attributes_count_becomes_the_last_field() {
    let mut otlp = span();
    otlp.events = vec![Event {
        time_unix_nano: 2_000_000_000,
        name: "retry".to_owned(),
        attributes: vec![str_attr("a", "1")],
        dropped_attributes_count: 4,
    }];
    assert_eq!(
        translate_span(otlp).logs,
        vec![proto::Log {
            timestamp: ts(2, 0),
            fields: vec![
                jstr("event", "retry"),
                jstr("a", "1"),
                jint("otel.dropped_attributes_count", 4),
            ],
        }]
    );
}

// ---- Attribute values ----

fn tags_of_attributes(attributes: Vec<OtlpKeyValue>) -> Vec<proto::KeyValue> {
    let mut otlp = span();
    otlp.attributes = attributes;
    translate_span(otlp).tags
}

#[test]
fn primitive_attributes_keep_their_types() {
    assert_eq!(
        tags_of_attributes(vec![
            str_attr("s", "text"),
            attr("b", Value::BoolValue(false)),
            attr("i", Value::IntValue(i64::MIN)),
            attr("d", Value::DoubleValue(0.25)),
            attr("x", Value::BytesValue(vec![0, 1, 255])),
        ]),
        vec![
            jstr("s", "text"),
            jbool("b", false),
            jint("i", i64::MIN),
            jfloat("d", 0.25),
            jbinary("x", &[0, 1, 255]),
        ]
    );
}

#[test]
fn arrays_and_maps_become_json_strings() {
    assert_eq!(
        tags_of_attributes(vec![
            attr(
                "list",
                array(vec![
                    Value::StringValue("a".to_owned()),
                    Value::IntValue(-3),
                    Value::BoolValue(true),
                    Value::DoubleValue(1.5),
                ]),
            ),
            attr(
                "map",
                map(vec![
                    str_attr("z", "last-key-first"),
                    attr("a", array(vec![Value::IntValue(1), Value::IntValue(2)])),
                    attr("m", map(vec![attr("deep", Value::BoolValue(false))])),
                ]),
            ),
            attr("empty_list", array(vec![])),
            attr("empty_map", map(vec![])),
        ]),
        vec![
            jstr("list", r#"["a",-3,true,1.5]"#),
            jstr(
                "map",
                r#"{"z":"last-key-first","a":[1,2],"m":{"deep":false}}"#
            ),
            jstr("empty_list", "[]"),
            jstr("empty_map", "{}"),
        ]
    );
}

#[test]
fn nested_values_follow_the_json_element_rules() {
    let empty = AnyValue { value: None };
    let list = Value::ArrayValue(ArrayValue {
        values: vec![
            av(Value::DoubleValue(f64::NAN)),
            av(Value::DoubleValue(f64::INFINITY)),
            av(Value::DoubleValue(f64::NEG_INFINITY)),
            av(Value::DoubleValue(1e300)),
            av(Value::BytesValue(b"hello world".to_vec())),
            empty,
            av(Value::StringValueStrindex(3)),
            av(map(vec![
                OtlpKeyValue {
                    key: "none".to_owned(),
                    value: None,
                    ..Default::default()
                },
                attr("dup", Value::IntValue(1)),
                attr("dup", Value::IntValue(2)),
            ])),
        ],
    });
    assert_eq!(
        tags_of_attributes(vec![attr("list", list)]),
        vec![jstr(
            "list",
            r#"["NaN","Infinity","-Infinity",1e+300,"aGVsbG8gd29ybGQ=",null,null,{"none":null,"dup":1,"dup":2}]"#
        )]
    );
}

#[test]
fn deep_nesting_does_not_exhaust_the_stack() {
    let depth = 100_000;
    let mut value = Value::IntValue(1);
    for _ in 0..depth {
        value = array(vec![value]);
    }
    let expected = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(value_to_string(Some(&value)), expected);
    // Dropping a 100 000-deep value recurses in the generated Drop; unwind it iteratively.
    while let Value::ArrayValue(mut array) = value {
        value = array
            .values
            .pop()
            .and_then(|inner| inner.value)
            .unwrap_or(Value::IntValue(0));
    }
}

#[test]
fn empty_values_become_empty_strings() {
    assert_eq!(
        tags_of_attributes(vec![
            OtlpKeyValue {
                key: "absent".to_owned(),
                value: None,
                ..Default::default()
            },
            OtlpKeyValue {
                key: "empty".to_owned(),
                value: Some(AnyValue { value: None }),
                ..Default::default()
            },
            attr("strindex", Value::StringValueStrindex(1)),
        ]),
        vec![jstr("absent", ""), jstr("empty", ""), jstr("strindex", "")]
    );
}

// ---- Wire ----

#[test]
fn fully_populated_batch_survives_a_prost_round_trip() {
    let mut otlp = span();
    otlp.parent_span_id = PARENT_ID.to_vec();
    otlp.links = vec![Link {
        trace_id: OTHER_TRACE_ID.to_vec(),
        span_id: OTHER_SPAN_ID.to_vec(),
        ..Default::default()
    }];
    otlp.kind = SpanKind::Client as i32;
    otlp.trace_state = "a=b".to_owned();
    otlp.attributes = vec![
        str_attr("s", "text"),
        attr("b", Value::BoolValue(true)),
        attr("i", Value::IntValue(-7)),
        attr("d", Value::DoubleValue(-0.5)),
        attr("x", Value::BytesValue(vec![9, 8, 7])),
        attr("l", array(vec![Value::IntValue(1)])),
    ];
    otlp.events = vec![Event {
        time_unix_nano: 3,
        name: "e".to_owned(),
        attributes: vec![str_attr("k", "v")],
        dropped_attributes_count: 1,
    }];
    otlp.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "m".to_owned(),
    });
    otlp.dropped_attributes_count = 1;
    otlp.dropped_events_count = 1;
    otlp.dropped_links_count = 1;
    let mut backwards = span();
    backwards.end_time_unix_nano = 0;
    let batches = translate(&request(vec![resource_spans(
        vec![
            str_attr("service.name", "svc"),
            attr("host.id", Value::IntValue(5)),
        ],
        vec![(Some(scope("lib", "1.0")), vec![otlp, backwards])],
    )]));
    assert_eq!(batches.len(), 1);
    let Some(batch) = batches.into_iter().next() else {
        return;
    };
    assert_eq!(batch.spans.len(), 2);
    assert_eq!(batch.spans[1].warnings.len(), 1);

    let request = proto::PostSpansRequest { batch: Some(batch) };
    let bytes = request.encode_to_vec();
    assert_eq!(
        proto::PostSpansRequest::decode(bytes.as_slice()),
        Ok(request)
    );
}

// ---- Properties ----

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(AnyValue { value: None }),
        ".{0,8}".prop_map(|s| av(Value::StringValue(s))),
        any::<bool>().prop_map(|b| av(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| av(Value::IntValue(i))),
        any::<f64>().prop_map(|d| av(Value::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| av(Value::BytesValue(b))),
        any::<i32>().prop_map(|i| av(Value::StringValueStrindex(i))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| av(Value::ArrayValue(ArrayValue { values }))),
            prop::collection::vec(("[a-z.]{0,6}", inner), 0..4).prop_map(|entries| {
                av(map(entries
                    .into_iter()
                    .map(|(key, value)| OtlpKeyValue {
                        key,
                        value: Some(value),
                        ..Default::default()
                    })
                    .collect()))
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<OtlpKeyValue>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("service.name".to_owned()),
                Just("event".to_owned()),
                Just("opentracing.ref_type".to_owned()),
                "[a-z.]{0,8}",
            ],
            prop::option::of(any_value()),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(key, value)| OtlpKeyValue {
                key,
                value,
                ..Default::default()
            })
            .collect()
    })
}

fn ids(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

fn otlp_span() -> impl Strategy<Value = OtlpSpan> {
    (
        (ids(17), ids(9), ids(9), ".{0,12}", any::<u32>(), -1..7i32),
        (any::<u64>(), any::<u64>(), attributes()),
        prop::collection::vec((any::<u64>(), ".{0,6}", attributes(), any::<u32>()), 0..3),
        prop::collection::vec((ids(16), ids(8), attributes()), 0..3),
        prop::option::of((-1..4i32, ".{0,6}")),
        (".{0,6}", any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, flags, kind),
                (start, end, attributes),
                events,
                links,
                status,
                (trace_state, dropped_attributes, dropped_events, dropped_links),
            )| OtlpSpan {
                trace_id,
                span_id,
                parent_span_id,
                name,
                flags,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events: events
                    .into_iter()
                    .map(|(time_unix_nano, name, attributes, dropped)| Event {
                        time_unix_nano,
                        name,
                        attributes,
                        dropped_attributes_count: dropped,
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|(trace_id, span_id, attributes)| Link {
                        trace_id,
                        span_id,
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                status: status.map(|(code, message)| Status { code, message }),
                trace_state,
                dropped_attributes_count: dropped_attributes,
                dropped_events_count: dropped_events,
                dropped_links_count: dropped_links,
            },
        )
}

fn otlp_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (
        prop::option::of((".{0,6}", ".{0,4}")),
        prop::collection::vec(otlp_span(), 0..4),
    )
        .prop_map(|(scope, spans)| ScopeSpans {
            scope: scope.map(|(name, version)| InstrumentationScope {
                name,
                version,
                ..Default::default()
            }),
            spans,
            ..Default::default()
        });
    let resource_spans = (
        prop::option::of(attributes()),
        prop::collection::vec(scope_spans, 0..3),
    )
        .prop_map(|(attributes, scope_spans)| ResourceSpans {
            resource: attributes.map(|attributes| Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans,
            ..Default::default()
        });
    prop::collection::vec(resource_spans, 0..4).prop_map(request)
}

proptest! {
    #[test]
    fn random_requests_keep_every_span_and_one_batch_per_non_empty_resource(
        request in otlp_request()
    ) {
        let batches = translate(&request);

        let non_empty: Vec<&ResourceSpans> = request
            .resource_spans
            .iter()
            .filter(|rs| rs.scope_spans.iter().any(|ss| !ss.spans.is_empty()))
            .collect();
        prop_assert_eq!(batches.len(), non_empty.len());

        for (batch, resource_spans) in batches.iter().zip(&non_empty) {
            let expected: Vec<(&[u8], &[u8], &str)> = resource_spans
                .scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice(), s.name.as_str()))
                .collect();
            let actual: Vec<(&[u8], &[u8], &str)> = batch
                .spans
                .iter()
                .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice(), s.operation_name.as_str()))
                .collect();
            prop_assert_eq!(actual, expected);

            let process = batch.process.as_ref();
            prop_assert!(process.is_some_and(|p| !p.service_name.is_empty()));
            prop_assert!(process.is_some_and(|p| p.tags.iter().all(|t| t.key != "service.name")));
            for span in &batch.spans {
                prop_assert!(span.process.is_none() && span.process_id.is_empty());
                prop_assert!(span.start_time.is_some() && span.duration.is_some());
                prop_assert!(span.flags <= 1);
            }
        }

        let total_in: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        let total_out: usize = batches.iter().map(|b| b.spans.len()).sum();
        prop_assert_eq!(total_out, total_in);

        // Whatever came in, the result encodes as a PostSpansRequest and decodes back.
        for batch in batches {
            let request = proto::PostSpansRequest { batch: Some(batch) };
            let decoded = proto::PostSpansRequest::decode(request.encode_to_vec().as_slice());
            prop_assert!(decoded.is_ok());
        }
    }
}
