//! Ethernet/IPv4/TCP parsing: no input panics, and whatever parses re-emits into bytes
//! that parse back to the same representation.
#![no_main]

use std::net::Ipv4Addr;

use baton_proto::wire::{
    Checksums, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv4Repr, TcpFrameRepr, TcpRepr, TcpSegment,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for checksums in [Checksums::Verify, Checksums::Trust] {
        if let Ok(frame) = TcpFrameRepr::parse(data, checksums) {
            round_trip_frame(&frame);
        }
    }
    // Each layer on its own, from the start of the input, as if the layers below had
    // already been stripped.
    if let Ok(frame) = EthernetFrame::new_checked(data) {
        let repr = EthernetRepr::parse(&frame);
        let mut out = [0; 14];
        assert_eq!(repr.emit(&mut out), Ok(14));
        assert_eq!(out[..], data[..14]);
    }
    if let Ok(packet) = Ipv4Packet::new_checked(data) {
        let _ = (packet.options(), packet.payload(), packet.verify_checksum());
        if let Ok(repr) = Ipv4Repr::parse(&packet, Checksums::Trust) {
            let mut out = [0; 20];
            if repr.emit(&mut out).is_ok() {
                let again = Ipv4Packet::new_checked(&out[..]);
                // The emitted header promises a payload it does not hold.
                assert!(repr.payload_len == 0 || again.is_err());
            }
        }
    }
    if let Ok(segment) = TcpSegment::new_checked(data) {
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 1, 10));
        for option in segment.options_iter() {
            let _ = option;
        }
        let _ = (segment.payload(), segment.verify_checksum(src, dst));
        if let Ok(repr) = TcpRepr::parse(&segment, src, dst, Checksums::Trust) {
            let mut out = vec![0; repr.buffer_len()];
            let len = repr
                .emit(src, dst, &mut out)
                .expect("a parsed segment re-emits");
            let again = TcpSegment::new_checked(&out[..len]).expect("emitted segment is valid");
            assert_eq!(
                TcpRepr::parse(&again, src, dst, Checksums::Verify),
                Ok(repr)
            );
        }
    }
});

fn round_trip_frame(frame: &TcpFrameRepr<'_>) {
    let bytes = frame.to_vec().expect("a parsed frame re-emits");
    let again = TcpFrameRepr::parse(&bytes, Checksums::Verify).expect("an emitted frame parses");
    // The IPv4 payload length follows the TCP header, whose option layout emit chooses.
    assert_eq!(again.ipv4.payload_len, frame.tcp.buffer_len());
    assert_eq!(
        again.ipv4,
        Ipv4Repr {
            payload_len: again.ipv4.payload_len,
            ..frame.ipv4
        }
    );
    assert_eq!(again.ethernet, frame.ethernet);
    assert_eq!(again.tcp, frame.tcp);
    // Emitting is deterministic: the second generation is byte-identical.
    assert_eq!(again.to_vec().expect("re-emits"), bytes);
}
