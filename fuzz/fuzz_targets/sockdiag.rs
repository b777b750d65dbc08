//! The sock_diag dump parser on arbitrary datagrams: no panics, and whatever it accepts
//! is a connection on the requested port.
//!
//! The module is included by path because `baton` builds eBPF in its build script; that
//! is why `sockdiag.rs` depends on nothing but `std`, `libc` and `netlink.rs` (included
//! beside it, as the `crate::netlink` it names).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/baton/src/netlink.rs"]
#[expect(
    dead_code,
    reason = "only the message and attribute walks are fuzzed, not the socket"
)]
mod netlink;

#[path = "../../crates/baton/src/backend/sockdiag.rs"]
#[expect(
    dead_code,
    reason = "only the pure parser is fuzzed, not the socket code"
)]
mod sockdiag;

use sockdiag::{DumpStatus, parse_dump};

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the port, so the fuzzer can make its sockets match.
    let Some((port, datagram)) = data.split_first_chunk::<2>() else {
        return;
    };
    let local_port = u16::from_be_bytes(*port);
    let mut out = HashSet::new();
    let result = parse_dump(datagram, local_port, &mut out);
    for conn in &out {
        assert_eq!(conn.local.port(), local_port, "connection on another port");
    }
    // Each netlink message holds at most one socket: a header and an inet_diag_msg.
    assert!(out.len() <= datagram.len() / (16 + 72));
    if result == Ok(DumpStatus::Done) {
        // Done comes from a DONE or ERROR message, which is at least a header long.
        assert!(datagram.len() >= 16);
    }
    // Parsing is a pure function of its input.
    let mut again = HashSet::new();
    assert_eq!(parse_dump(datagram, local_port, &mut again), result);
    assert_eq!(again, out);
});
