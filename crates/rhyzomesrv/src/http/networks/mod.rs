//! `/v1/networks`: managed networks, one module per operation. Their errors are the
//! service's, mapped in `http/error.rs`.

pub mod create;
pub mod delete;
pub mod get;
pub mod list;
