//! A parsed summary of one IPv4 or IPv6 TCP packet, for routing, fault rules, monitors and the
//! trace printed when a scenario fails. Parsing goes through `baton_proto::wire`;
//! [`PacketInfo::parse_verified`] also checks both checksums, which every hop of the
//! simulated network does, so an incremental update that went wrong fails the scenario
//! at the hop that carried it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use baton_common::handoff_option::{HANDOFF_OPTION_KIND, find_handoff_option};
use baton_proto::wire::{
    Checksums, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpFlags, TcpRepr,
    TcpSegment, WireError,
};

/// The simulation's address family: every scenario runs over both, a world being all of
/// one (a connection never mixes families).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Where a packet's TCP header starts and its IP packet ends, by its version: IPv4's
/// IHL and total length, or IPv6's fixed header (the simulation's hosts and the core
/// send no extension headers) and payload length. `None` for anything else.
pub fn ip_bounds(pkt: &[u8]) -> Option<(usize, usize)> {
    match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
            (ihl >= 20 && total >= ihl && total <= pkt.len() && pkt.get(9) == Some(&6))
                .then_some((ihl, total))
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
            (pkt.len() >= 40 + payload && pkt.get(6) == Some(&6)).then_some((40, 40 + payload))
        }
        _ => None,
    }
}

/// The source address of an IPv4 or IPv6 packet (its version checked by the caller).
pub fn src_addr(pkt: &[u8]) -> IpAddr {
    if pkt[0] >> 4 == 6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).unwrap()))
    } else {
        IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]))
    }
}

/// The destination address, as [`src_addr`].
pub fn dst_addr(pkt: &[u8]) -> IpAddr {
    if pkt[0] >> 4 == 6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).unwrap()))
    } else {
        IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]))
    }
}

/// Writes `addr` as the packet's source (`dst: false`) or destination, no checksum
/// touched: the caller's.
pub fn write_addr(pkt: &mut [u8], dst: bool, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let at = if dst { 16 } else { 12 };
            pkt[at..at + 4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            let at = if dst { 24 } else { 8 };
            pkt[at..at + 16].copy_from_slice(&a.octets());
        }
    }
}

/// The DSCP and ECN bits: IPv4's type of service, IPv6's traffic class.
pub fn dscp_ecn(pkt: &[u8]) -> u8 {
    if pkt[0] >> 4 == 6 {
        (pkt[0] << 4) | (pkt[1] >> 4)
    } else {
        pkt[1]
    }
}

/// The unfolded sum of the TCP pseudo-header of a segment of `len` bytes between the
/// packet's addresses, in its family (RFC 9293 §3.1, RFC 8200 §8.1).
fn pseudo_sum(pkt: &[u8], len: usize) -> u64 {
    if pkt[0] >> 4 == 6 {
        let mut pseudo = [0u8; 40];
        pseudo[..32].copy_from_slice(&pkt[8..40]);
        pseudo[32..36].copy_from_slice(&(len as u32).to_be_bytes());
        pseudo[39] = 6;
        sum_words(&pseudo)
    } else {
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&pkt[12..20]);
        pseudo[9] = 6;
        pseudo[10..].copy_from_slice(&(len as u16).to_be_bytes());
        sum_words(&pseudo)
    }
}

/// TCP option kinds the harness looks for (RFC 9293 section 3.2, RFC 7323, RFC 2018).
pub mod kind {
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
}

/// What the harness needs to know of a packet, copied out so it can be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub payload_len: usize,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub mss: Option<u16>,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    pub sack: [Option<(u32, u32)>; 4],
    /// The segment carries a handoff option (kind 254), authentic or not.
    pub handoff_option: bool,
}

impl PacketInfo {
    /// Parses an IPv4 or IPv6 packet carrying TCP and verifies its checksums (IPv4's
    /// header checksum, and TCP's over the family's pseudo-header): what every hop of
    /// the network does to every packet.
    pub fn parse_verified(bytes: &[u8]) -> Result<Self, WireError> {
        let info = Self::parse(bytes)?;
        let (tcp, total) = ip_bounds(bytes).ok_or(WireError::BadTcpHeaderLength(0))?;
        if bytes[0] >> 4 == 4 && fold(sum_words(&bytes[..tcp])) != 0xffff {
            return Err(WireError::BadIpChecksum);
        }
        let segment = &bytes[tcp..total];
        if fold(pseudo_sum(bytes, segment.len()) + sum_words(segment)) != 0xffff {
            return Err(WireError::BadTcpChecksum);
        }
        Ok(info)
    }

    /// Parses an IPv4 or IPv6 packet carrying TCP, without looking at checksums (for
    /// packets the network has already verified).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let (src, dst, segment) = if bytes.first().map(|b| b >> 4) == Some(6) {
            let ip = Ipv6Packet::new_checked(bytes)?;
            let (ipv6, offset) = Ipv6Repr::parse(&ip)?;
            if ipv6.next_header != IpProtocol::Tcp {
                return Err(WireError::NotTcp(ipv6.next_header.into()));
            }
            let seg = TcpSegment::new_checked(ip.into_upper_layer_payload(offset))?;
            (IpAddr::V6(ipv6.src_addr), IpAddr::V6(ipv6.dst_addr), seg)
        } else {
            let ip = Ipv4Packet::new_checked(bytes)?;
            let ipv4 = Ipv4Repr::parse(&ip, Checksums::Trust)?;
            if ipv4.protocol != IpProtocol::Tcp {
                return Err(WireError::NotTcp(ipv4.protocol.into()));
            }
            let seg = TcpSegment::new_checked(ip.into_payload())?;
            (IpAddr::V4(ipv4.src_addr), IpAddr::V4(ipv4.dst_addr), seg)
        };
        let tcp = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => TcpRepr::parse(&segment, s, d, Checksums::Trust)?,
            (IpAddr::V6(s), IpAddr::V6(d)) => TcpRepr::parse(&segment, s, d, Checksums::Trust)?,
            _ => unreachable!("one header, one family"),
        };
        let mut sack = [None; 4];
        for (slot, block) in sack.iter_mut().zip(tcp.sack_blocks.iter()) {
            *slot = block.map(|b| (b.left, b.right));
        }
        Ok(Self {
            src,
            dst,
            sport: tcp.src_port,
            dport: tcp.dst_port,
            seq: tcp.seq_number,
            ack: tcp.ack_number,
            flags: tcp.flags,
            window: tcp.window_len,
            payload_len: tcp.payload.len(),
            window_scale: tcp.window_scale,
            sack_permitted: tcp.sack_permitted,
            mss: tcp.max_seg_size,
            timestamps: tcp.timestamps.map(|t| (t.tsval, t.tsecr)),
            sack,
            handoff_option: matches!(find_handoff_option(segment.options()), Ok(Some(_)))
                || tcp.unknown_options.find(HANDOFF_OPTION_KIND).is_some(),
        })
    }

    pub fn has(&self, flag: TcpFlags) -> bool {
        self.flags.contains(flag)
    }

    /// SYN without ACK: a client's SYN or the replayed SYN'.
    pub fn is_syn(&self) -> bool {
        self.has(TcpFlags::SYN) && !self.has(TcpFlags::ACK)
    }

    pub fn is_syn_ack(&self) -> bool {
        self.has(TcpFlags::SYN) && self.has(TcpFlags::ACK)
    }

    pub fn is_rst(&self) -> bool {
        self.has(TcpFlags::RST)
    }

    pub fn is_fin(&self) -> bool {
        self.has(TcpFlags::FIN)
    }

    /// An ACK with no data and no SYN/FIN/RST.
    pub fn is_pure_ack(&self) -> bool {
        self.has(TcpFlags::ACK)
            && self.payload_len == 0
            && !self.has(TcpFlags::SYN)
            && !self.is_fin()
            && !self.is_rst()
    }

    /// Sequence space the segment occupies (data, SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        self.payload_len as u32
            + u32::from(self.has(TcpFlags::SYN))
            + u32::from(self.has(TcpFlags::FIN))
    }
}

/// The one's-complement sum of `data` as big-endian 16-bit words (RFC 1071), unfolded:
/// eight bytes at a time, because the simulation checks every packet at every hop and the
/// test profile is unoptimized. Two 32-bit halves sum to the same folded value as their
/// four 16-bit words, since 2^16 = 1 modulo 0xffff.
fn sum_words(data: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_be_bytes(word);
        sum += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let v = u64::from_be_bytes(tail);
    sum + (v >> 32) + (v & 0xffff_ffff)
}

/// Fills in the IPv4 header checksum (IPv6 has none) and the TCP checksum of `pkt` (for
/// the smoltcp devices, faster than smoltcp's own in an unoptimized build).
pub fn fill_checksums(pkt: &mut [u8]) {
    let Some((tcp, total)) = ip_bounds(pkt) else {
        return;
    };
    if total < tcp + 20 {
        return;
    }
    if pkt[0] >> 4 == 4 {
        pkt[10..12].fill(0);
        let ip = !fold(sum_words(&pkt[..tcp]));
        pkt[10..12].copy_from_slice(&ip.to_be_bytes());
    }
    pkt[tcp + 16..tcp + 18].fill(0);
    let sum = !fold(pseudo_sum(pkt, total - tcp) + sum_words(&pkt[tcp..total]));
    pkt[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

impl fmt::Display for PacketInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut flags = String::new();
        for (flag, c) in [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
        ] {
            if self.has(flag) {
                flags.push(c);
            }
        }
        write!(
            f,
            "{}:{} > {}:{} [{flags}] seq={} ack={} win={} len={}",
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.seq,
            self.ack,
            self.window,
            self.payload_len
        )?;
        if let Some(ws) = self.window_scale {
            write!(f, " ws={ws}")?;
        }
        if self.sack_permitted {
            write!(f, " sackok")?;
        }
        if let Some((tsval, tsecr)) = self.timestamps {
            write!(f, " ts={tsval}/{tsecr}")?;
        }
        for (l, r) in self.sack.iter().flatten() {
            write!(f, " sack={l}-{r}")?;
        }
        if self.handoff_option {
            write!(f, " handoff-opt")?;
        }
        Ok(())
    }
}

/// A TCP segment from `from` to `to` (IPv4 with DF, or IPv6, by the addresses' family)
/// with the given numbers, flags (the TCP header's byte 13) and window, the timestamps
/// option if `timestamps` (TSval, TSecr) is given, carrying `data`; checksums filled.
/// What the simulation's own senders (the fast-open stand-in, forged segments) put on
/// the wire.
#[allow(clippy::too_many_arguments, reason = "one argument per header field")]
pub fn tcp_segment(
    from: (IpAddr, u16),
    to: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    timestamps: Option<(u32, u32)>,
    data: &[u8],
) -> Vec<u8> {
    let ip = if from.0.is_ipv6() { 40 } else { 20 };
    let options_len = if timestamps.is_some() { 12 } else { 0 };
    let header = ip + 20 + options_len;
    let total = header + data.len();
    let mut pkt = vec![0u8; total];
    if from.0.is_ipv6() {
        pkt[0] = 0x60;
        pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        pkt[6] = 6;
        pkt[7] = 64;
    } else {
        pkt[0] = 0x45;
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[6] = 0x40; // DF
        pkt[8] = 64;
        pkt[9] = 6;
    }
    write_addr(&mut pkt, false, from.0);
    write_addr(&mut pkt, true, to.0);
    let t = ip;
    pkt[t..t + 2].copy_from_slice(&from.1.to_be_bytes());
    pkt[t + 2..t + 4].copy_from_slice(&to.1.to_be_bytes());
    pkt[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    pkt[t + 8..t + 12].copy_from_slice(&ack.to_be_bytes());
    pkt[t + 12] = (((20 + options_len) / 4) << 4) as u8;
    pkt[t + 13] = flags;
    pkt[t + 14..t + 16].copy_from_slice(&window.to_be_bytes());
    if let Some((tsval, tsecr)) = timestamps {
        pkt[t + 20..t + 24].copy_from_slice(&[1, 1, 8, 10]);
        pkt[t + 24..t + 28].copy_from_slice(&tsval.to_be_bytes());
        pkt[t + 28..t + 32].copy_from_slice(&tsecr.to_be_bytes());
    }
    pkt[header..].copy_from_slice(data);
    fill_checksums(&mut pkt);
    pkt
}
