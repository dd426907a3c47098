//! Rhyzome's link emulator, one process per emulated network. QEMU exchanges each NIC's
//! Ethernet frames with it as UDP datagrams on the loopback of libvirt's network namespace
//! (`<interface type='udp'>`); it switches them like a learning bridge, applies each sending
//! NIC's conditions (latency, jitter, seeded loss, rate, down) and the network's partitions,
//! and has a host-side tap with the gateway address. It runs detached from the daemon, keeps
//! its state in a file, and is told what to do over a UNIX control socket.
//!
//! `link.rs` (one NIC's conditions), `switch.rs` (learning and partitions) and `rng.rs` are
//! pure and tested frame by frame; `engine.rs` is the single-threaded event loop;
//! `state.rs` the persisted desired state; `protocol.rs` the control channel; `tap.rs` the
//! host port and the entry into a network namespace.

pub mod engine;
pub mod link;
pub mod protocol;
pub mod rng;
pub mod state;
pub mod supervise;
pub mod switch;
pub mod tap;
