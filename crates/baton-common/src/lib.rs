//! Baton's common layer: the data shared between the eBPF programs and userspace.
//!
//! Everything here compiles for `bpfel-unknown-none` as well as for the host, so it is
//! `no_std`, allocation-free and panic-free on every path the kernel runs. Structs that
//! live in eBPF maps are `#[repr(C)]` with explicit padding, and their sizes are tested,
//! because the kernel and userspace must agree on them byte for byte.
//!
//! This crate must never depend on `std`, allocate, or hold anything the verifier would
//! reject (unbounded loops, recursion, floating point).
//!
//! - [`counter`]: the traffic counter's map key and value.
//! - [`translate`]: the per-packet TCP translation of a handed-off connection (sequence,
//!   acknowledgement, SACK, timestamps, window) and incremental checksum updates.
//! - [`handoff_option`]: the authenticated TCP option in the replayed SYN, and the walk
//!   over a TCP options area that finds and blanks it.
//! - [`siphash`]: SipHash-2-4, the handoff option's MAC.
//! - [`stamp`]: the back-end's identity in the TSval, by which any front-end forwards a
//!   handed-off flow it has no entry for.
//! - [`claim`]: probes and claims, by which a front-end finds the back-end of a flow
//!   whose client sends no timestamps.
//! - [`syncookie`]: SYN cookies, made by the protocol core and by the fast path alike.
//! - [`tcp_options`]: where timestamps, SACK blocks and window scale lie in an options area.
//! - [`icmp`]: ICMP errors to a VIP (path MTU): the wire view, the flow they quote,
//!   and the quote's rewrite into the server's terms.
//! - [`ipv6`]: the IPv6 header, the bounded walk over its extension headers, the
//!   pseudo-header sum and 128-bit address rewrites, the MSS an MTU leaves.
//! - [`icmpv6`]: ICMPv6 "packet too big" to a VIP, as [`icmp`] is for ICMPv4.
//! - [`layout`]: Ethernet, IPv4 and TCP header offsets, flags and accessors, shared by
//!   both eBPF programs and the cookie SYN/ACK frame writer.
//! - [`backend`]: the back-end module's flow table, configuration and counters.
//! - [`frontend`]: the front-end fast path's flow table, configuration and counters.
#![no_std]

pub mod backend;
pub mod claim;
pub mod counter;
pub mod frontend;
pub mod handoff_option;
pub mod icmp;
pub mod icmpv6;
pub mod ipv6;
pub mod kernel_dispatch;
pub mod layout;
pub mod siphash;
pub mod stamp;
pub mod syn_prime;
pub mod syncookie;
pub mod tcp_options;
pub mod translate;
