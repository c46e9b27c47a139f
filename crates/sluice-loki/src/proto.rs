//! Loki's push API messages (`logproto`, from grafana/loki `pkg/push/push.proto`), written as
//! prost structs. The gogoproto options of the original change only Go types and JSON tags, not
//! the wire format; field numbers and types are the definition's. The exporter writes its bodies
//! straight from its streams (see `exporter::protobuf`); these structs state the format, and
//! its tests decode every body with them.

#![allow(missing_docs)]

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
    /// How the streams were ingested (`loki` or `otlp`); set by Loki itself, left empty by clients.
    #[prost(string, tag = "2")]
    pub format: String,
}

/// `logproto.StreamAdapter`: one stream, its label set in the selector syntax
/// (`{job="api", level="INFO"}`), and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Loki's own hash of the labels; clients leave it zero.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `logproto.EntryAdapter`: one log line with its timestamp.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
    /// Only in query responses; never sent.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPairAdapter>,
}
