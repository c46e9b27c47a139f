//! The `forward` connector: hands everything it takes to every pipeline that receives from it,
//! as the Collector's does. It joins pipelines so that, say, a pipeline per tenant can share a
//! common tail.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::{
    BuildError, ConnectorComponent, ConnectorContext, ConnectorFactory, Consumer, Fanout,
    FanoutPolicy, Signal, typed,
};

/// `connectors.forward`: no settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardConfig {}

/// Builds `forward` connectors.
#[derive(Debug, Default)]
pub struct ForwardFactory;

impl ConnectorFactory for ForwardFactory {
    fn type_name(&self) -> &'static str {
        "forward"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn connects(&self, from: Signal, to: Signal) -> bool {
        from == to
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed::<ForwardConfig>(path, config, |_| Vec::new())
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ConnectorComponent>, BuildError> {
        let _: ForwardConfig = typed(&format!("connectors.{id}"), config)?;
        Ok(Box::new(Forward))
    }
}

struct Forward;

impl ConnectorComponent for Forward {
    fn instance(&self, ctx: ConnectorContext) -> Result<Arc<dyn Consumer>, BuildError> {
        let consumers: Vec<Arc<dyn Consumer>> = ctx
            .routes
            .into_values()
            .filter(|route| route.signal == ctx.from)
            .map(|route| route.consumer)
            .collect();
        if consumers.is_empty() {
            return Err(BuildError::Other(format!(
                "connector {} has no {} pipeline to forward to",
                ctx.id, ctx.from
            )));
        }
        // Every pipeline must take the data, as from a receiver: a refusal reaches the sender.
        Ok(Fanout::build(consumers, FanoutPolicy::All))
    }
}
