//! `/v1/instances`: one module per operation.

pub mod console;
pub mod create;
pub mod delete;
pub mod get;
pub mod link;
pub mod list;
pub mod restart;
pub mod start;
pub mod stats;
pub mod stop;
