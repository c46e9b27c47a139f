//! The subset of the OpenTelemetry Transformation Language (OTTL) that sluice understands, shared
//! by the components that take OTTL (the `routing` connector, the `filter` and `transform`
//! processors): conditions parsed once and evaluated against the encoded items of
//! `sluice_core::view` without decoding, and statements (editors) applied to decoded items.
//! What the subset does not cover is refused when the configuration is checked, naming it. Not a
//! component.

mod condition;
mod statement;

pub use condition::{Condition, ConditionError, Scope, Subject, parse, parse_statement};
pub use statement::{Editable, Statement, parse_statement_list};
