//! The `resource` processor: the Collector's attribute actions (`crate::actions`) on resource
//! attributes.
//!
//! Only the small `Resource` message of each `Resource*` entry is decoded and re-encoded; scopes
//! and items are copied as bytes (see `sluice_core::view::edit`).

use std::sync::Arc;

use crate::actions::{self, Action, Compiled, apply};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::client::ClientInfo;
use sluice_core::view::{self, Editor, Reach, Verdict};
use sluice_core::{
    Batch, BuildError, ConsumeError, Instance, PipelineContext, Processor, ProcessorComponent,
    ProcessorFactory, typed,
};

/// `processors.resource`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Actions applied in order to every resource of every signal: the Collector's attribute
    /// actions (`insert`, `update`, `upsert`, `delete`, `hash`, `extract`, `convert`).
    pub attributes: Vec<Action>,
}

fn compile(path: &str, config: &ResourceConfig) -> Result<Vec<Compiled>, Vec<Problem>> {
    actions::compile(&format!("{path}.attributes"), &config.attributes)
}

struct ResourceProcessor {
    actions: Arc<Vec<Compiled>>,
}

/// Applies the actions to each resource of data the client sent; only the `Resource` message
/// is decoded.
struct Apply<'a>(&'a [Compiled], Option<Arc<ClientInfo>>);

impl Editor for Apply<'_> {
    fn reach(&self) -> Reach {
        Reach::Resources
    }

    fn resource(&mut self, view: &view::Resource<'_>) -> Verdict {
        let mut resource = view.decode();
        if apply(self.0, &mut resource.attributes, self.1.as_deref()) {
            Verdict::resource(view, &resource)
        } else {
            Verdict::Keep
        }
    }
}

#[async_trait]
impl Processor for ResourceProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let client = batch.client().cloned();
        Ok(Some(batch.edit(&mut Apply(&self.actions, client))))
    }
}

/// The same actions for every pipeline.
struct ResourceComponent(Arc<Vec<Compiled>>);

impl ProcessorComponent for ResourceComponent {
    fn instance(&self, _ctx: PipelineContext) -> Result<Instance, BuildError> {
        Ok(Instance::new(Arc::new(ResourceProcessor {
            actions: Arc::clone(&self.0),
        })))
    }
}

/// Builds `resource` processors.
#[derive(Debug, Default)]
pub struct ResourceFactory;

impl ProcessorFactory for ResourceFactory {
    fn type_name(&self) -> &'static str {
        "resource"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &ResourceConfig| {
            compile(path, c).err().unwrap_or_default()
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let c: ResourceConfig = typed(&path, config)?;
        let actions = compile(&path, &c).map_err(|mut p| BuildError::Config(p.remove(0)))?;
        Ok(Box::new(ResourceComponent(Arc::new(actions))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_actions_are_reported_with_paths() {
        let problems = ResourceFactory.check(
            "processors.resource",
            &serde_json::json!({"attributes": [
                {"key": "a", "action": "insert"},
                {"key": "b", "action": "explode"},
            ]}),
        );
        let text = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("processors.resource.attributes[1].action"),
            "{text}"
        );
        let problems = ResourceFactory.check(
            "processors.resource",
            &serde_json::json!({"attributes": [{"key": "a", "action": "insert"}]}),
        );
        assert_eq!(
            problems[0].to_string(),
            "error: processors.resource.attributes[0]: action `insert` needs `value`, `from_attribute`, `from_context` or `default_value`"
        );
    }
}
