//! End-to-end tests: the real `sluice` binary, real OTLP clients (the opentelemetry-otlp crate and
//! the Python OpenTelemetry SDK), raw requests for edge cases, and an OTLP sink.

mod admin_view;
mod auth;
mod config_files;
mod connectors;
mod deploy;
mod edge_cases;
mod faults;
mod gateway;
mod hostile_clients;
mod hostile_config;
mod jaeger;
mod kafka;
mod loki;
mod overload;
mod pipeline;
mod postgres;
mod processors;
mod prometheus;
mod python_sdk;
mod query;
mod real_deployment;
mod redaction;
mod rust_sdk;
mod sampling;
mod span_stats;
mod spanmetrics;
mod support;
mod tenants;
mod tls;
