//! The XDP program's walk over a SYN's options (`baton_common::syncookie`) against the
//! protocol core's TCP parser: whatever the core refuses the walk refuses too (so the
//! slow path judges it, flood or not), and whatever the core accepts the walk reads the
//! same (MSS, window scale, SACK-permitted, TSval), so that a cookie SYN/ACK made in XDP
//! agrees with one made by the core.
#![no_main]

use std::net::Ipv4Addr;

use baton_common::syncookie::{OPTIONS_AREA, parse_syn_options};
use baton_proto::wire::{Checksums, TcpRepr, TcpSegment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The options area as a SYN carries it: whole 32-bit words, at most 40 bytes.
    let options = &data[..data.len().min(40)];
    let len = options.len().div_ceil(4) * 4;
    let mut segment = [0u8; 60];
    segment[12] = ((20 + len as u8) / 4) << 4;
    segment[13] = 0x02; // SYN
    segment[20..20 + options.len()].copy_from_slice(options);
    let mut area = [0u8; OPTIONS_AREA];
    area[..len].copy_from_slice(&segment[20..20 + len]);
    let walked = parse_syn_options(&area, len);

    let parsed = TcpSegment::new_checked(&segment[..20 + len]).and_then(|s| {
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 1, 10));
        TcpRepr::parse(&s, src, dst, Checksums::Trust)
    });
    match parsed {
        Err(_) => assert_eq!(walked, None, "the core refuses {options:02x?}"),
        Ok(tcp) => {
            let walked = walked.unwrap_or_else(|| panic!("the core accepts {options:02x?}"));
            assert_eq!(walked.mss, tcp.max_seg_size, "{options:02x?}");
            assert_eq!(walked.window_scale, tcp.window_scale, "{options:02x?}");
            assert_eq!(walked.sack_permitted, tcp.sack_permitted, "{options:02x?}");
            assert_eq!(walked.tsval, tcp.timestamps.map(|t| t.tsval), "{options:02x?}");
        }
    }
});
