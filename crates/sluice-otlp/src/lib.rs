//! placeholder
mod json;
