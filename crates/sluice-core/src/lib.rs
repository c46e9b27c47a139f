//! The core of sluice: signals and encoded batches, the consumer interface and fan-out, memory
//! admission, the exporter helper (queue, retry, timeout), component factory traits, the OTLP
//! schema and the wire walker that checks requests against it, and the names of self-metrics. It knows no concrete component.

pub mod anyvalue;
pub mod auth;
mod batch;
pub mod blocking;
pub mod client;
mod component;
pub mod connector;
mod consumer;
pub mod disk_log;
pub mod durable;
mod error;
pub mod exporter;
pub mod extension;
mod gate;
pub mod intake;
pub mod json;
pub mod labels;
pub mod metrics;
pub mod processor;
pub mod schema;
mod signal;
pub mod store;
pub mod view;
pub mod watch;
pub mod wire;

pub use batch::{Batch, BatchBuilder};
pub use component::{
    BuildError, BuiltExporter, DirectExporter, ExporterContext, ExporterFactory, ProcessorFactory,
    Receiver, ReceiverFactory, ReceiverOutputs, build_exporter, check_exporter, check_typed, typed,
};
pub use connector::{Admission, ConnectorComponent, ConnectorContext, ConnectorFactory, Route};
pub use consumer::{Consumer, Fanout, FanoutPolicy};
pub use error::{ConsumeError, ErrorCode};
pub use exporter::{ErasedExporter, ExportError, Exporter, ExporterHelper, HelperSettings};
pub use extension::{Extension, ExtensionFactory, Host, ServiceStatus};
pub use gate::{MemoryGate, Reservation};
pub use intake::{Accepted, ConnectionLoad, Intake, Upload};
pub use processor::{
    Chain, Instance, Output, PipelineContext, Processor, ProcessorComponent, ProcessorStage,
};
pub use signal::Signal;
