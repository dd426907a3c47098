//! `rhyzomesrv`: the Rhyzome daemon as a library, so that tests and the thin `main.rs` share
//! one code path.
//!
//! Layout, outside in:
//! - [`config`]: the `rhyzome.conf` file;
//! - [`auth`]: tokens, roles, tenant prefixes, quotas and rate limits;
//! - [`http`]: the `/v1` API, one module per operation, and its OpenAPI document;
//! - [`service`]: what each operation does, and the [`service::reconcile`]r;
//! - [`store`]: desired and observed state in SQLite;
//! - [`backend`]: the hypervisor boundary: typed domain definitions, libvirt (which renders
//!   them as XML), and a fake for tests;
//! - [`blobs`], [`kernels`], [`console`]: the content-addressed blob store, kernel images,
//!   console logs;
//! - [`images`]: uploaded images in the blob store, and their inspection;
//! - [`tls`]: HTTPS certificates;
//! - [`daemon`]: wiring it all together and serving;
//! - [`systemd`], [`reload`], [`logging`]: running as a systemd service (readiness, watchdog,
//!   SIGHUP reload, the journal);
//! - `testing` (with the `testing` feature, which test builds turn on): a whole daemon over the
//!   fake hypervisor, for tests and benchmarks.

pub mod auth;
pub mod backend;
pub mod blobs;
pub mod config;
pub mod console;
pub mod daemon;
pub mod files;
pub mod http;
pub mod images;
pub mod kernels;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod service;
pub mod store;
pub mod systemd;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
