//! The `baton` binary's library: daemons, operations and the lab, on top of the protocol,
//! dispatch and eBPF layers.
//!
//! This is the only layer that touches the operating system (namespaces, sockets, eBPF
//! loading). It must never hold protocol or dispatch logic: those stay in `baton-proto`
//! and `baton-dispatch`, where they are tested without a kernel.

pub mod backend;
pub mod bench;
pub mod counter;
pub mod daemon_lock;
pub mod ebpf;
pub mod frontend;
pub mod handoff_key;
pub mod lab;
pub mod log;
pub mod metrics;
pub mod neighbours;
pub mod netlink;
pub mod netns;
pub mod pins;
pub mod signals;
pub mod static_server;
pub mod status;
pub mod webroot;
