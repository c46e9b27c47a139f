//! The built-in components: the one place that knows every component type.

use std::sync::Arc;

use serde_json::Value;
use sluice_config::{Catalog, Class, ComponentId, Problem};
use sluice_core::{
    ConnectorFactory, ExporterFactory, ExtensionFactory, ProcessorFactory, ReceiverFactory, Signal,
};
use sluice_processors::{
    AttributesFactory, BatchFactory, FilterFactory, MemoryLimiterFactory, MemoryProbe,
    RedactionFactory, ResourceFactory, TransformFactory,
};

use crate::health::HealthCheckFactory;

/// Every component type this binary can run, by class.
pub(crate) struct Registry {
    pub(crate) receivers: Vec<Arc<dyn ReceiverFactory>>,
    pub(crate) processors: Vec<Arc<dyn ProcessorFactory>>,
    pub(crate) exporters: Vec<Arc<dyn ExporterFactory>>,
    pub(crate) connectors: Vec<Arc<dyn ConnectorFactory>>,
    pub(crate) extensions: Vec<Arc<dyn ExtensionFactory>>,
}

impl Registry {
    /// The built-in components; `probe` measures memory for the memory limiter.
    pub(crate) fn builtin(probe: MemoryProbe) -> Self {
        Registry {
            receivers: vec![
                Arc::new(sluice_otlp::OtlpReceiverFactory),
                Arc::new(sluice_kafka::KafkaReceiverFactory),
            ],
            processors: vec![
                Arc::new(MemoryLimiterFactory::new(probe)),
                Arc::new(ResourceFactory),
                Arc::new(BatchFactory),
                Arc::new(RedactionFactory),
                Arc::new(AttributesFactory),
                Arc::new(FilterFactory),
                Arc::new(TransformFactory),
                Arc::new(sluice_sampling::ProbabilisticSamplerFactory),
                Arc::new(sluice_sampling::TailSamplingFactory),
            ],
            exporters: vec![
                Arc::new(sluice_otlp::OtlpExporterFactory),
                Arc::new(sluice_otlp::OtlpHttpExporterFactory),
                Arc::new(sluice_otlp::DebugExporterFactory),
                Arc::new(sluice_otlp::LoadBalancingExporterFactory {
                    name: "loadbalancing",
                }),
                // The Collector's newer spelling (contrib v0.144), kept as an alias there too.
                Arc::new(sluice_otlp::LoadBalancingExporterFactory {
                    name: "load_balancing",
                }),
                Arc::new(sluice_jaeger::JaegerExporterFactory),
                Arc::new(sluice_prometheus::RemoteWriteExporterFactory),
                Arc::new(sluice_prometheus::ScrapeExporterFactory),
                Arc::new(sluice_postgres::PostgresExporterFactory),
                Arc::new(sluice_loki::LokiExporterFactory),
                Arc::new(sluice_kafka::KafkaExporterFactory),
                Arc::new(sluice_query::MemoryExporterFactory),
            ],
            connectors: vec![
                Arc::new(sluice_connectors::ForwardFactory),
                Arc::new(sluice_connectors::RoutingFactory),
                Arc::new(sluice_connectors::SpanMetricsFactory),
            ],
            extensions: vec![
                Arc::new(HealthCheckFactory),
                Arc::new(sluice_auth::BearerTokenAuthFactory),
                Arc::new(sluice_auth::BasicAuthFactory),
                Arc::new(sluice_query::JaegerQueryFactory),
            ],
        }
    }

    pub(crate) fn receiver(&self, type_name: &str) -> Option<&Arc<dyn ReceiverFactory>> {
        self.receivers.iter().find(|f| f.type_name() == type_name)
    }

    pub(crate) fn processor(&self, type_name: &str) -> Option<&Arc<dyn ProcessorFactory>> {
        self.processors.iter().find(|f| f.type_name() == type_name)
    }

    pub(crate) fn exporter(&self, type_name: &str) -> Option<&Arc<dyn ExporterFactory>> {
        self.exporters.iter().find(|f| f.type_name() == type_name)
    }

    pub(crate) fn connector(&self, type_name: &str) -> Option<&Arc<dyn ConnectorFactory>> {
        self.connectors.iter().find(|f| f.type_name() == type_name)
    }

    pub(crate) fn extension(&self, type_name: &str) -> Option<&Arc<dyn ExtensionFactory>> {
        self.extensions.iter().find(|f| f.type_name() == type_name)
    }
}

impl Catalog for Registry {
    fn signals(&self, class: Class, type_name: &str) -> Option<&'static [&'static str]> {
        match class {
            Class::Receiver => self.receiver(type_name).map(|f| f.signals()),
            Class::Processor => self.processor(type_name).map(|f| f.signals()),
            Class::Exporter => self.exporter(type_name).map(|f| f.signals()),
            Class::Extension => self.extension(type_name).map(|_| &[][..]),
            Class::Connector => self.connector(type_name).map(|f| f.signals()),
        }
    }

    fn type_names(&self, class: Class) -> Vec<&'static str> {
        match class {
            Class::Receiver => self.receivers.iter().map(|f| f.type_name()).collect(),
            Class::Processor => self.processors.iter().map(|f| f.type_name()).collect(),
            Class::Exporter => self.exporters.iter().map(|f| f.type_name()).collect(),
            Class::Extension => self.extensions.iter().map(|f| f.type_name()).collect(),
            Class::Connector => self.connectors.iter().map(|f| f.type_name()).collect(),
        }
    }

    fn check(&self, class: Class, id: &ComponentId, path: &str, value: &Value) -> Vec<Problem> {
        let t = id.type_name();
        match class {
            Class::Receiver => self.receiver(t).map(|f| f.check(path, value)),
            Class::Processor => self.processor(t).map(|f| f.check(path, value)),
            Class::Exporter => self
                .exporter(t)
                .map(|f| sluice_core::check_exporter(f.as_ref(), path, value)),
            Class::Extension => self.extension(t).map(|f| f.check(path, value)),
            Class::Connector => self.connector(t).map(|f| f.check(path, value)),
        }
        .unwrap_or_default()
    }

    fn holds_data(&self, type_name: &str) -> bool {
        self.processor(type_name).is_some_and(|f| f.holds_data())
    }

    fn keeps_own_log(&self, type_name: &str, config: &Value) -> bool {
        self.processor(type_name)
            .is_some_and(|f| f.keeps_own_log(config))
    }

    fn guards_storage(&self, type_name: &str) -> bool {
        self.processor(type_name)
            .is_some_and(|f| f.guards_storage())
    }

    fn check_connector(
        &self,
        type_name: &str,
        path: &str,
        value: &Value,
        receiving: &[&str],
    ) -> Vec<Problem> {
        self.connector(type_name)
            .map(|f| f.check_pipelines(path, value, receiving))
            .unwrap_or_default()
    }

    fn connects(&self, type_name: &str, from: &str, to: &str) -> bool {
        match (
            self.connector(type_name),
            Signal::from_name(from),
            Signal::from_name(to),
        ) {
            (Some(f), Some(from), Some(to)) => f.connects(from, to),
            _ => false,
        }
    }
}
