//! `/v1/testbeds`: test beds applied from a file, one module per operation. Their errors are
//! the service's, mapped in `http/error.rs`.

pub mod apply;
pub mod collect;
pub mod delete;
pub mod get;
pub mod list;
