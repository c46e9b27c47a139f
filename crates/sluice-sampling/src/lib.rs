//! Samplers: `probabilistic_sampler` (per item, consistent with the Collector's decisions) and
//! `tail_sampling` (per trace, once its spans have arrived).
//!
//! Both work on encoded batches through `sluice_core::view` and decode only what they change.
//! This crate must not depend on any other component crate.

mod probabilistic;
mod tail;
pub mod threshold;

pub use probabilistic::{
    AttributeSource, Mode, ProbabilisticSamplerConfig, ProbabilisticSamplerFactory, seeded_hash,
};
pub use tail::{
    DecisionCacheConfig, EARLY_ABOVE, PolicyConfig, TailSamplingConfig, TailSamplingFactory,
};
