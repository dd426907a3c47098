//! End-to-end tests: the real `rhyzomesrv` binary against the real libvirtd of the lab
//! (`scripts/lab.sh`: a network namespace with a bridge, libvirtd running inside it), booting
//! the project's own test unikernel under TCG, and `rhyzomectl` driving it.
//!
//! They need root, QEMU and libvirt; without them they fail with a message saying so, they are
//! never skipped. Each test uses its own daemon, state directory, instance names and guest
//! addresses, so they can run in parallel.

mod cross_host;
mod dashboard;
mod devices;
mod emulated;
mod gossip;
mod harness;
mod hosts;
mod images;
mod lifecycle;
mod links;
mod metrics;
mod networks;
mod ownership;
mod recovery;
mod restarts;
mod seed;
mod testbed;
mod testbed_file;
mod testbed_ops;
mod testbeds;
mod unprivileged;
mod volumes;
