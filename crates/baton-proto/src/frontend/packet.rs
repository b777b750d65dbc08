//! Parsing what arrives and building what leaves, on top of [`crate::wire`].

use std::net::Ipv4Addr;

use crate::wire::{
    Checksums, IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags, TcpRepr, TcpSegment, TcpTimestamps,
    WireError, ipv4,
};

/// Parses an IPv4 packet carrying a TCP segment.
pub(crate) fn parse(
    packet: &[u8],
    checksums: Checksums,
) -> Result<(Ipv4Repr, TcpRepr<'_>), WireError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    let ipv4 = Ipv4Repr::parse(&ip, checksums)?;
    if ipv4.protocol != IpProtocol::Tcp {
        return Err(WireError::NotTcp(ipv4.protocol.into()));
    }
    let segment = TcpSegment::new_checked(ip.into_payload())?;
    let tcp = TcpRepr::parse(&segment, ipv4.src_addr, ipv4.dst_addr, checksums)?;
    Ok((ipv4, tcp))
}

/// Builds an IPv4 packet (20-byte header, DF set) around `tcp`.
pub(crate) fn build(
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

/// A copy of the client packet `raw` with its destination rewritten to `to`, both
/// checksums recomputed: what the XDP program does to every packet of a handed-off flow
/// (docs/design.md, "Packet walk", step 8). Bytes past the IPv4 total length are dropped.
pub(crate) fn rewrite_destination(
    raw: &[u8],
    to: std::net::SocketAddrV4,
) -> Result<Vec<u8>, WireError> {
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
            let mut raw = build(client, Ipv4Addr::new(198, 18, 2, 1), 64, &tcp).unwrap();
            raw[1] = 0xb8 | ecn;
            Ipv4Packet::new_checked(&mut raw[..])
                .unwrap()
                .fill_checksum();
            let out = rewrite_destination(&raw, backend).unwrap();
            let (ip, tcp) = parse(&out, Checksums::Verify).unwrap();
            assert_eq!(ip.dscp_ecn, 0xb8 | ecn);
            assert_eq!((ip.dst_addr, tcp.dst_port), (*backend.ip(), 8080));
        }
    }
}
