use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;

use super::*;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", Value::StringValue(service.into()))],
        ..Default::default()
    })
}

#[test]
fn ids_are_lowercase_hex_and_zero_parents_are_roots() {
    assert_eq!(hex(&[0x4b, 0xf9, 0x00, 0xff]), "4bf900ff");
    assert_eq!(optional_id(&[]), None);
    assert_eq!(optional_id(&[0; 8]), None);
    assert_eq!(
        optional_id(&[0, 0, 0, 0, 0, 0, 0, 1]).as_deref(),
        Some("0000000000000001")
    );
}

#[test]
fn nul_becomes_the_replacement_character_everywhere() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("svc\0"),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "s\0".into(),
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "a\0b".into(),
                    attributes: vec![kv("k\0", Value::StringValue("v\0".into()))],
                    status: Some(Status {
                        message: "m\0".into(),
                        code: 2,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let rows = traces(&request, &[]);
    assert_eq!(rows.spans.name[0], "a\u{fffd}b");
    assert_eq!(rows.spans.status_message[0], "m\u{fffd}");
    assert_eq!(rows.spans.scope_name[0], "s\u{fffd}");
    assert_eq!(rows.spans.service_name[0].as_deref(), Some("svc\u{fffd}"));
    assert_eq!(rows.spans.attributes[0].0, "{\"k\u{fffd}\":\"v\u{fffd}\"}");
    assert_eq!(rows.spans.status_code[0], "error");
}

#[test]
fn promoted_attributes_are_gathered_per_trace_last_value_winning() {
    let span = |trace: u8, value: &str| Span {
        trace_id: vec![trace; 16],
        span_id: vec![trace; 8],
        attributes: vec![
            kv("enduser.id", Value::StringValue(value.into())),
            kv("other", Value::IntValue(1)),
        ],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("svc"),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(2, "b"), span(1, "a1"), span(1, "a2")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let rows = traces(&request, &["enduser.id".to_owned()]);
    assert_eq!(rows.promoted_trace_id, [hex(&[1; 16]), hex(&[2; 16])]);
    assert_eq!(
        rows.promoted_attributes,
        [
            Jsonb(r#"{"enduser.id":"a1","enduser.id":"a2"}"#.into()),
            Jsonb(r#"{"enduser.id":"b"}"#.into())
        ]
    );
    assert!(traces(&request, &[]).promoted_trace_id.is_empty());
}

/// The key of `record("one")` from the `svc` resource, as released: it must never change.
const PINNED_LOG_ID: i64 = 5_315_402_848_440_167_565;

#[test]
fn log_ids_are_stable_and_tell_records_apart() {
    let record = |body: &str| LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        body: Some(AnyValue {
            value: Some(Value::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let request = |records: Vec<LogRecord>| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("svc"),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let a = request(vec![record("one"), record("two")]);
    let first = logs(&a, 1).log_id;
    assert_eq!(first, logs(&a, 2).log_id, "the same records, the same keys");
    assert_ne!(first[0], first[1]);
    // Pinned: the key must not change between releases, or replays after an upgrade duplicate.
    let b = request(vec![record("one")]);
    assert_eq!(logs(&b, 0).log_id[0], first[0]);
    assert_eq!(first[0], PINNED_LOG_ID, "the log key changed: {}", first[0]);
    let no_time = request(vec![LogRecord::default()]);
    assert_eq!(
        logs(&no_time, 5_000_000_000).time[0].unix_micros(),
        5_000_000,
        "neither time nor observed time: the receipt time"
    );
}

#[test]
fn bodies_keep_their_kind() {
    let cases = [
        (
            Some(Value::StringValue("text".into())),
            "string",
            Some("text"),
        ),
        (Some(Value::IntValue(-3)), "int", Some("-3")),
        (Some(Value::DoubleValue(0.5)), "double", Some("0.5")),
        (Some(Value::BoolValue(true)), "bool", Some("true")),
        (
            Some(Value::BytesValue(vec![1, 2, 3])),
            "bytes",
            Some("AQID"),
        ),
        (
            Some(Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::IntValue(1)),
                }],
            })),
            "array",
            Some("[1]"),
        ),
        (None, "empty", None),
    ];
    for (value, kind, text) in cases {
        assert_eq!(body(value.as_ref()), (kind, text.map(str::to_owned)));
    }
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        any::<[u8; 4]>(),
        any::<u8>(),
        0u64..2_000_000_000_000_000_000,
        0u64..10_000_000_000,
        0usize..3,
        0usize..3,
        "[a-z\\x00]{0,6}",
        0i32..7,
        0i32..4,
    )
        .prop_map(|(t, s, start, dur, events, links, name, kind, code)| Span {
            trace_id: [t.as_slice(), &[0; 12]].concat(),
            span_id: vec![s; 8],
            parent_span_id: if s % 2 == 0 { vec![] } else { vec![s / 2; 8] },
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            events: (0..events)
                .map(|i| Event {
                    time_unix_nano: start + i as u64,
                    name: format!("e{i}"),
                    ..Default::default()
                })
                .collect(),
            links: (0..links)
                .map(|i| Link {
                    trace_id: vec![i as u8; 16],
                    span_id: vec![i as u8; 8],
                    ..Default::default()
                })
                .collect(),
            status: Some(Status {
                message: String::new(),
                code,
            }),
            attributes: vec![kv("n", Value::IntValue(i64::from(s)))],
            ..Default::default()
        })
}

proptest! {
    #[test]
    fn every_column_has_one_value_per_row(
        groups in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(arb_span(), 0..6)), 0..4),
    ) {
        let request = ExportTraceServiceRequest {
            resource_spans: groups
                .iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: resource(&format!("svc{service}")),
                    scope_spans: vec![ScopeSpans { spans: spans.clone(), ..Default::default() }],
                    ..Default::default()
                })
                .collect(),
        };
        let rows = traces(&request, &["n".to_owned()]);
        let spans: Vec<&Span> = groups.iter().flat_map(|(_, s)| s).collect();
        let s = &rows.spans;
        let n = spans.len();
        for len in [s.trace_id.len(), s.span_id.len(), s.parent_span_id.len(), s.trace_state.len(),
                    s.flags.len(), s.name.len(), s.kind.len(), s.start_time.len(), s.end_time.len(),
                    s.duration_ns.len(), s.status_code.len(), s.status_message.len(),
                    s.service_name.len(), s.resource_id.len(), s.scope_name.len(),
                    s.scope_version.len(), s.attributes.len(), s.dropped_attributes_count.len(),
                    s.dropped_events_count.len(), s.dropped_links_count.len()] {
            prop_assert_eq!(len, n);
        }
        let events: usize = spans.iter().map(|s| s.events.len()).sum();
        let e = &rows.events;
        for len in [e.trace_id.len(), e.span_id.len(), e.span_start_time.len(), e.event_index.len(),
                    e.time.len(), e.name.len(), e.attributes.len(), e.dropped_attributes_count.len()] {
            prop_assert_eq!(len, events);
        }
        let links: usize = spans.iter().map(|s| s.links.len()).sum();
        let l = &rows.links;
        for len in [l.trace_id.len(), l.span_id.len(), l.span_start_time.len(), l.link_index.len(),
                    l.linked_trace_id.len(), l.linked_span_id.len(), l.trace_state.len(),
                    l.flags.len(), l.attributes.len(), l.dropped_attributes_count.len()] {
            prop_assert_eq!(len, links);
        }
        // One resource row per distinct resource; every span points at one of them.
        let distinct: std::collections::HashSet<u8> = groups.iter().map(|(svc, _)| *svc).collect();
        prop_assert_eq!(rows.resources.resource_id.len(), distinct.len());
        for id in &s.resource_id {
            prop_assert!(rows.resources.resource_id.contains(id));
        }
        for (i, span) in spans.iter().enumerate() {
            prop_assert_eq!(&s.span_id[i], &hex(&span.span_id));
            prop_assert_eq!(s.duration_ns[i] as u64, span.end_time_unix_nano - span.start_time_unix_nano);
            prop_assert!(!s.name[i].contains('\0'));
            prop_assert_eq!(s.parent_span_id[i].is_none(), span.parent_span_id.iter().all(|b| *b == 0));
        }
        // Every trace with spans has its promoted `n`.
        let traces: std::collections::HashSet<&String> = s.trace_id.iter().collect();
        prop_assert_eq!(rows.promoted_trace_id.len(), traces.len());
    }
}
