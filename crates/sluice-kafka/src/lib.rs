//! The `kafka` exporter and receiver: OTLP through Kafka topics, in the Collector's config.
//!
//! - The exporter writes each batch as one or more records (`otlp_proto` or `otlp_json`), keyed
//!   by trace id or by resource when asked, split by items to stay under `max_message_bytes`, and
//!   acknowledges the batch upstream only once the broker has acknowledged every record with the
//!   configured `required_acks`.
//! - The receiver consumes as a member of a consumer group and hands each record to core's
//!   receiver intake; a record's offset is committed only after the pipeline has taken it, and
//!   while the pipeline refuses, the receiver pauses its partitions rather than buffer.
//!
//! Both use librdkafka (README, "Kafka", says why). This crate must not depend on any other
//! component crate.

mod client;
mod exporter;
mod receiver;

pub use client::{AuthConfig, Brokers, ClientConfig, SaslConfig};
pub use exporter::{KafkaExporterConfig, KafkaExporterFactory};
pub use receiver::{KafkaReceiverConfig, KafkaReceiverFactory};
