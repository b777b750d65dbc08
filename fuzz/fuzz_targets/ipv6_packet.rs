//! IPv6 parsing, the walk over extension headers the eBPF programs will share
//! (`baton_common::ipv6`) and the wire view over it (`baton_proto::wire::ipv6`), on
//! arbitrary packets: no input panics, the walk reads only within the payload length and
//! at most its bound of times, the two layers agree on where the upper layer starts, a
//! TCP segment found there re-emits into one that parses back the same with its checksum
//! over the IPv6 pseudo-header, and a 128-bit address rewrite updated incrementally
//! equals a recomputation.
#![no_main]

use std::net::Ipv6Addr;

use baton_common::ipv6::{
    EXTENSION_PEEK_LEN, IPV6_HLEN, Ipv6Payload, MAX_EXTENSION_HEADERS, csum_replace16,
    ipv6_payload_len, ipv6_upper_layer, ipv6_upper_layer_of,
};
use baton_proto::wire::{Checksums, IpProtocol, Ipv6Packet, Ipv6Repr, TcpRepr, TcpSegment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let walked = ipv6_upper_layer_of(data);
    if let Some(header) = data.first_chunk::<IPV6_HLEN>() {
        let end = IPV6_HLEN + usize::from(ipv6_payload_len(header));
        let mut reads = 0;
        let again = ipv6_upper_layer(header, data.len(), |at| {
            reads += 1;
            assert!(at >= IPV6_HLEN && at + EXTENSION_PEEK_LEN <= end, "read at {at}");
            data[at..].first_chunk::<EXTENSION_PEEK_LEN>().copied()
        });
        assert_eq!(again, walked);
        assert!(reads <= MAX_EXTENSION_HEADERS + 1);
        if let Ok(Ipv6Payload::Upper { offset, .. }) = walked {
            assert!(offset >= IPV6_HLEN && offset <= end && end <= data.len());
            assert_eq!((offset - IPV6_HLEN) % 8, 0);
        }
    }

    let Ok(packet) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.flow_label(), packet.traffic_class(), packet.payload());
    let parsed = Ipv6Repr::parse(&packet);
    match (&parsed, &walked) {
        (Ok((repr, offset)), Ok(Ipv6Payload::Upper { protocol, offset: at })) => {
            assert_eq!((u8::from(repr.next_header), *offset), (*protocol, *at));
        }
        (Err(_), Ok(Ipv6Payload::Upper { .. })) | (Ok(_), _) => {
            panic!("the view and the walk disagree: {parsed:?} {walked:?}")
        }
        _ => {}
    }
    let Ok((ip, offset)) = parsed else {
        return;
    };
    let mut out = [0; IPV6_HLEN];
    assert_eq!(ip.emit(&mut out), Ok(IPV6_HLEN));
    if ip.next_header != IpProtocol::Tcp {
        return;
    }
    let (src, dst) = (ip.src_addr, ip.dst_addr);
    let Ok(segment) = TcpSegment::new_checked(packet.clone().into_upper_layer_payload(offset))
    else {
        return;
    };
    let _ = segment.verify_checksum(src, dst);
    let Ok(repr) = TcpRepr::parse(&segment, src, dst, Checksums::Trust) else {
        return;
    };
    let mut bytes = vec![0; repr.buffer_len()];
    let len = repr.emit(src, dst, &mut bytes).expect("a parsed segment re-emits");
    let again = TcpSegment::new_checked(&bytes[..len]).expect("emitted segment is valid");
    assert_eq!(TcpRepr::parse(&again, src, dst, Checksums::Verify), Ok(repr));

    // The source rewritten to an address taken from the input, incrementally and anew.
    let new = Ipv6Addr::from(*data.first_chunk::<16>().unwrap_or(&[0; 16]));
    let check = u16::from_be_bytes([bytes[16], bytes[17]]);
    let updated = csum_replace16(check, &src.octets(), &new.octets());
    let mut fresh = vec![0; len];
    repr.emit(new, dst, &mut fresh).expect("re-emits");
    assert_eq!(updated.to_be_bytes(), [fresh[16], fresh[17]]);
});
