//! The subset of the OpenTelemetry Transformation Language (OTTL) that sluice understands, shared
//! by the components that take OTTL (the `routing` connector, the `filter` and `transform`
//! processors): conditions parsed once and evaluated against the encoded items of
//! `sluice_core::view` without decoding, and statements (editors) applied to decoded items.
//! What the subset does not cover is refused when the configuration is checked, naming it. Not a
//! component.

mod condition;
mod statement;

/// `error_mode` of every component that takes OTTL: what to do when a condition or statement
/// fails to evaluate. Sluice's cannot fail at run time (a missing attribute is `nil`, a value of
/// another type compares unequal or is left alone), so the three behave alike; the key is taken
/// so that the Collector's configs run, and an unknown value is refused.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Fail the batch (the Collector's default).
    #[default]
    Propagate,
    /// Go on, logging.
    Ignore,
    /// Go on quietly.
    Silent,
}

pub use condition::{
    Condition, ConditionError, Scope, Subject, infer_scope, parse, parse_statement,
};
pub use statement::{Editable, Statement, parse_statement_list};
