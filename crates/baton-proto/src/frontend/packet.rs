//! Parsing what arrives and building what leaves, on top of [`crate::wire`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::{
    Checksums, IpProtocol, IpRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpFlags, TcpRepr,
    TcpSegment, TcpTimestamps, WireError, ipv4, ipv6,
};

/// Parses an IPv4 or IPv6 packet carrying a TCP segment, by its version field. An IPv6
/// packet's extension headers are walked (`Ipv6Repr::parse`): a fragment, a routing
/// header with segments left, AH, ESP or an unknown one is an error, counted by the
/// caller as IPv4's fragments and bad headers are.
pub(crate) fn parse(
    packet: &[u8],
    checksums: Checksums,
) -> Result<(IpRepr, TcpRepr<'_>), WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(6) => parse_v6(packet, checksums),
        _ => parse_v4(packet, checksums),
    }
}

fn parse_v4(packet: &[u8], checksums: Checksums) -> Result<(IpRepr, TcpRepr<'_>), WireError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    let ipv4 = Ipv4Repr::parse(&ip, checksums)?;
    if ipv4.protocol != IpProtocol::Tcp {
        return Err(WireError::NotTcp(ipv4.protocol.into()));
    }
    let segment = TcpSegment::new_checked(ip.into_payload())?;
    let tcp = TcpRepr::parse(&segment, ipv4.src_addr, ipv4.dst_addr, checksums)?;
    Ok((IpRepr::V4(ipv4), tcp))
}

fn parse_v6(packet: &[u8], checksums: Checksums) -> Result<(IpRepr, TcpRepr<'_>), WireError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let (ipv6, offset) = Ipv6Repr::parse(&ip)?;
    if ipv6.next_header != IpProtocol::Tcp {
        return Err(WireError::NotTcp(ipv6.next_header.into()));
    }
    let segment = TcpSegment::new_checked(ip.into_upper_layer_payload(offset))?;
    let tcp = TcpRepr::parse(&segment, ipv6.src_addr, ipv6.dst_addr, checksums)?;
    Ok((IpRepr::V6(ipv6), tcp))
}

/// Builds a packet from `src` to `dst` around `tcp`: IPv4 with a 20-byte header and DF
/// set, or IPv6 with the fixed header alone (no extension headers, flow label 0, TTL as
/// hop limit). Addresses of two families are an error ([`WireError::MixedFamilies`]):
/// a connection never mixes them, and no such packet exists.
pub(crate) fn build(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    tcp: &TcpRepr<'_>,
) -> Result<Vec<u8>, WireError> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => build_v4(src, dst, ttl, tcp),
        (IpAddr::V6(src), IpAddr::V6(dst)) => build_v6(src, dst, ttl, tcp),
        _ => Err(WireError::MixedFamilies),
    }
}

fn build_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tcp: &TcpRepr<'_>,
) -> Result<Vec<u8>, WireError> {
    let tcp_len = tcp.buffer_len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::Tcp,
        payload_len: tcp_len,
        ttl,
        ident: 0,
        // Linux sets DF on every TCP segment for path MTU discovery (RFC 1191).
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut buf = vec![0; ipv4::HEADER_LEN + tcp_len];
    let (head, rest) = buf.split_at_mut(ipv4::HEADER_LEN);
    ip.emit(head)?;
    tcp.emit(src, dst, rest)?;
    Ok(buf)
}

fn build_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    tcp: &TcpRepr<'_>,
) -> Result<Vec<u8>, WireError> {
    let tcp_len = tcp.buffer_len();
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp_len,
        hop_limit,
        traffic_class: 0,
        // Linux's default (`net.ipv6.auto_flowlabels`) labels each socket's flow; the
        // front-end's own segments are few per connection and a zero label is valid
        // (RFC 6437 §2: a node that does not label sets zero).
        flow_label: 0,
    };
    let mut buf = vec![0; ipv6::HEADER_LEN + tcp_len];
    let (head, rest) = buf.split_at_mut(ipv6::HEADER_LEN);
    ip.emit(head)?;
    tcp.emit(src, dst, rest)?;
    Ok(buf)
}

/// The IPv6 twin of an IPv4 packet `v4` the front-end built (the SYN', written by the
/// one layout `baton_common::syn_prime` has, which is IPv4's): the same TCP segment,
/// byte for byte but for its checksum, recomputed over IPv6's pseudo-header, behind a
/// fixed IPv6 header from `src` to `dst` with `hop_limit`. The SYN' is Not-ECT in either
/// family (traffic class 0).
pub(crate) fn reframe_v6(
    v4: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
) -> Result<Vec<u8>, WireError> {
    let segment = Ipv4Packet::new_checked(v4)?.into_payload();
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: segment.len(),
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut buf = vec![0; ipv6::HEADER_LEN + segment.len()];
    let (head, rest) = buf.split_at_mut(ipv6::HEADER_LEN);
    ip.emit(head)?;
    rest.copy_from_slice(segment);
    TcpSegment::new_checked(rest)?.fill_checksum(src, dst);
    Ok(buf)
}

/// A segment with no options or payload: the base every builder starts from.
pub(crate) fn bare_segment(
    src_port: u16,
    dst_port: u16,
    seq_number: u32,
    ack_number: u32,
    flags: TcpFlags,
    window_len: u16,
) -> TcpRepr<'static> {
    TcpRepr::bare(
        src_port, dst_port, seq_number, ack_number, flags, window_len,
    )
}

/// With timestamps when `tsval` is `Some`.
pub(crate) fn with_timestamps(mut tcp: TcpRepr<'_>, ts: Option<(u32, u32)>) -> TcpRepr<'_> {
    tcp.timestamps = ts.map(|(tsval, tsecr)| TcpTimestamps { tsval, tsecr });
    tcp
}

/// A copy of the client packet `raw` with its destination rewritten to `to`, the
/// checksums recomputed: what the XDP program does to every packet of a handed-off flow
/// (docs/design.md, "Packet walk", step 8). Bytes past the IPv4 total length (IPv6
/// payload length) are dropped. IPv6 has no header checksum; TCP's covers the address
/// in its pseudo-header. `to` of the other family than `raw` is an error.
pub(crate) fn rewrite_destination(raw: &[u8], to: SocketAddr) -> Result<Vec<u8>, WireError> {
    match (raw.first().map(|b| b >> 4), to) {
        (Some(6), SocketAddr::V6(to)) => {
            let ip = Ipv6Packet::new_checked(raw)?;
            let (_, offset) = Ipv6Repr::parse(&ip)?;
            let mut buf = raw[..ipv6::HEADER_LEN + ip.payload_len()].to_vec();
            let mut ip = Ipv6Packet::new_checked(&mut buf[..])?;
            let src = ip.src_addr();
            ip.set_dst_addr(*to.ip());
            let mut segment = TcpSegment::new_checked(&mut buf[offset..])?;
            segment.set_dst_port(to.port());
            segment.fill_checksum(src, *to.ip());
            Ok(buf)
        }
        (Some(6), SocketAddr::V4(_)) => Err(WireError::MixedFamilies),
        (_, SocketAddr::V6(_)) => Err(WireError::MixedFamilies),
        (_, SocketAddr::V4(to)) => {
            let total_len = Ipv4Packet::new_checked(raw)?.total_len();
            let mut buf = raw[..total_len].to_vec();
            let mut ip = Ipv4Packet::new_checked(&mut buf[..])?;
            let src = ip.src_addr();
            ip.set_dst_addr(*to.ip());
            ip.fill_checksum();
            let mut segment = TcpSegment::new_checked(ip.payload_mut())?;
            segment.set_dst_port(to.port());
            segment.fill_checksum(src, *to.ip());
            Ok(buf)
        }
    }
}

/// Sequence-space comparison modulo 2^32 (RFC 9293 §3.4): whether `a` comes before `b`.
pub(crate) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Whether `a` comes at or before `b` in sequence space.
pub(crate) fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client packet held during the handoff is forwarded with its ECN field as it
    /// arrived (RFC 3168 §5), as the XDP program forwards every later one.
    #[test]
    fn a_rewritten_destination_keeps_the_ecn_field() {
        let tcp = bare_segment(40_000, 80, 1, 2, TcpFlags::ACK | TcpFlags::PSH, 500);
        let client = Ipv4Addr::new(198, 18, 0, 2);
        let backend = std::net::SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 11), 8080);
        for ecn in 0..=3 {
            let mut raw =
                build(client.into(), Ipv4Addr::new(198, 18, 2, 1).into(), 64, &tcp).unwrap();
            raw[1] = 0xb8 | ecn;
            Ipv4Packet::new_checked(&mut raw[..])
                .unwrap()
                .fill_checksum();
            let out = rewrite_destination(&raw, backend.into()).unwrap();
            let (ip, tcp) = parse(&out, Checksums::Verify).unwrap();
            assert_eq!(ip.dscp_ecn(), 0xb8 | ecn);
            assert_eq!(
                (ip.dst_addr(), tcp.dst_port),
                (IpAddr::V4(*backend.ip()), 8080)
            );
        }
    }

    /// The IPv6 twin: the traffic class kept, the extension headers the client sent
    /// kept (a destination options header here), the TCP checksum made again over the
    /// new destination's pseudo-header; a back-end of the other family refused.
    #[test]
    fn an_ipv6_rewrite_keeps_the_traffic_class_and_extension_headers() {
        let tcp = bare_segment(40_000, 80, 1, 2, TcpFlags::ACK | TcpFlags::PSH, 500);
        let client: Ipv6Addr = "2001:2::2".parse().unwrap();
        let vip: Ipv6Addr = "2001:2:0:1::10".parse().unwrap();
        let backend: SocketAddr = "[2001:2:0:2::1]:8080".parse().unwrap();
        let plain = build(client.into(), vip.into(), 64, &tcp).unwrap();
        // Destination options (Next Header 60), 8 bytes of padding, before TCP.
        let mut raw = plain[..40].to_vec();
        raw[6] = 60;
        raw.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        raw.extend_from_slice(&plain[40..]);
        let payload_len = (raw.len() - 40) as u16;
        raw[4..6].copy_from_slice(&payload_len.to_be_bytes());
        raw[0] = 0x6b;
        raw[1] = 0x80; // traffic class 0xb8
        let out = rewrite_destination(&raw, backend).unwrap();
        assert_eq!(out.len(), raw.len());
        assert_eq!(
            out[..8],
            raw[..8],
            "version, class, label, length, next header"
        );
        assert_eq!(out[40..48], raw[40..48], "the extension header");
        let (ip, tcp) = parse(&out, Checksums::Verify).unwrap();
        assert_eq!(ip.dscp_ecn(), 0xb8);
        assert_eq!((ip.src_addr(), tcp.dst_port), (IpAddr::V6(client), 8080));
        assert_eq!(ip.dst_addr(), backend.ip());
        let v4: SocketAddr = "198.18.2.1:8080".parse().unwrap();
        assert_eq!(rewrite_destination(&raw, v4), Err(WireError::MixedFamilies));
        assert_eq!(
            build(client.into(), Ipv4Addr::LOCALHOST.into(), 64, &tcp),
            Err(WireError::MixedFamilies)
        );
    }
}
