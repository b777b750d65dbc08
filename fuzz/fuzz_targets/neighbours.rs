//! The rtnetlink neighbour dump parser on arbitrary datagrams: no panics, and whatever
//! it accepts is an entry of the requested interface with an address of either family.
//!
//! The module is included by path because `baton` builds eBPF in its build script; that
//! is why `neighbours.rs` depends on nothing but `std`, `libc` and `netlink.rs` (included
//! beside it, as the `crate::netlink` it names).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/baton/src/netlink.rs"]
#[expect(
    dead_code,
    reason = "only the message and attribute walks are fuzzed, not the socket"
)]
mod netlink;

#[path = "../../crates/baton/src/neighbours.rs"]
#[expect(
    dead_code,
    reason = "only the pure parser is fuzzed, not the socket code"
)]
mod neighbours;

use neighbours::{DumpStatus, parse_dump};

fuzz_target!(|data: &[u8]| {
    // The first eight bytes pick the sequence number and the interface, so the fuzzer
    // can make its messages match.
    let Some((head, datagram)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seq = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    let ifindex = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let mut found = Vec::new();
    let result = parse_dump(datagram, seq, ifindex, &mut |n| found.push(n));
    // Each entry needs a header, an ndmsg, a destination and an address attribute.
    assert!(found.len() <= datagram.len() / (16 + 12 + 8 + 10));
    if result == Ok(DumpStatus::Done) {
        assert!(datagram.len() >= 16);
    }
    // Parsing is a pure function of its input.
    let mut again = Vec::new();
    assert_eq!(
        parse_dump(datagram, seq, ifindex, &mut |n| again.push(n)),
        result
    );
    assert_eq!(again, found);
});
