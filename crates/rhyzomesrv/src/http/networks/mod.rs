//! `/v1/networks`: managed networks and the conditions of emulated ones, one module per
//! operation. Their errors are the
//! service's, mapped in `http/error.rs`.

pub mod conditions;
pub mod create;
pub mod delete;
pub mod get;
pub mod heal;
pub mod link;
pub mod list;
pub mod partition;
