//! A parsed summary of one IPv4/TCP packet, for routing, fault rules, monitors and the
//! trace printed when a scenario fails. Parsing goes through `baton_proto::wire`;
//! [`PacketInfo::parse_verified`] also checks both checksums, which every hop of the
//! simulated network does, so an incremental update that went wrong fails the scenario
//! at the hop that carried it.

use std::fmt;
use std::net::Ipv4Addr;

use baton_common::handoff_option::{HANDOFF_OPTION_KIND, find_handoff_option};
use baton_proto::wire::{
    Checksums, IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags, TcpRepr, TcpSegment, WireError,
};

/// TCP option kinds the harness looks for (RFC 9293 section 3.2, RFC 7323, RFC 2018).
pub mod kind {
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
}

/// What the harness needs to know of a packet, copied out so it can be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
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
    /// Parses an IPv4 packet carrying TCP and verifies both checksums: what every hop of
    /// the network does to every packet.
    pub fn parse_verified(bytes: &[u8]) -> Result<Self, WireError> {
        let info = Self::parse(bytes)?;
        let ihl = usize::from(bytes[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if fold(sum_words(&bytes[..ihl])) != 0xffff {
            return Err(WireError::BadIpChecksum);
        }
        let segment = &bytes[ihl..total];
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&info.src.octets());
        pseudo[4..8].copy_from_slice(&info.dst.octets());
        pseudo[9] = 6;
        pseudo[10..].copy_from_slice(&(segment.len() as u16).to_be_bytes());
        if fold(sum_words(&pseudo) + sum_words(segment)) != 0xffff {
            return Err(WireError::BadTcpChecksum);
        }
        Ok(info)
    }

    /// Parses an IPv4 packet carrying TCP, without looking at checksums (for packets the
    /// network has already verified).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let ip = Ipv4Packet::new_checked(bytes)?;
        let ipv4 = Ipv4Repr::parse(&ip, Checksums::Trust)?;
        if ipv4.protocol != IpProtocol::Tcp {
            return Err(WireError::NotTcp(ipv4.protocol.into()));
        }
        let seg = TcpSegment::new_checked(ip.payload())?;
        let tcp = TcpRepr::parse(&seg, ipv4.src_addr, ipv4.dst_addr, Checksums::Trust)?;
        let mut sack = [None; 4];
        for (slot, block) in sack.iter_mut().zip(tcp.sack_blocks.iter()) {
            *slot = block.map(|b| (b.left, b.right));
        }
        Ok(Self {
            src: ipv4.src_addr,
            dst: ipv4.dst_addr,
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
            handoff_option: matches!(find_handoff_option(seg.options()), Ok(Some(_)))
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

/// Fills in the IPv4 header checksum and the TCP checksum of `pkt` (for the smoltcp
/// devices, faster than smoltcp's own in an unoptimized build).
pub fn fill_checksums(pkt: &mut [u8]) {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
    if total < ihl + 20 {
        return;
    }
    pkt[10..12].fill(0);
    let ip = !fold(sum_words(&pkt[..ihl]));
    pkt[10..12].copy_from_slice(&ip.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&pkt[12..20]);
    pseudo[9] = 6;
    pseudo[10..].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
    pkt[ihl + 16..ihl + 18].fill(0);
    let tcp = !fold(sum_words(&pseudo) + sum_words(&pkt[ihl..total]));
    pkt[ihl + 16..ihl + 18].copy_from_slice(&tcp.to_be_bytes());
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

/// An IPv4 TCP segment from `from` to `to` with the given numbers, flags (the TCP
/// header's byte 13) and window, the timestamps option if `timestamps` (TSval, TSecr) is
/// given, carrying `data`; checksums filled. What the simulation's own senders (the
/// fast-open stand-in, forged segments) put on the wire.
#[allow(clippy::too_many_arguments, reason = "one argument per header field")]
pub fn tcp_segment(
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    timestamps: Option<(u32, u32)>,
    data: &[u8],
) -> Vec<u8> {
    let options_len = if timestamps.is_some() { 12 } else { 0 };
    let header = 40 + options_len;
    let total = header + data.len();
    let mut pkt = vec![0u8; total];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    pkt[6] = 0x40; // DF
    pkt[8] = 64;
    pkt[9] = 6;
    pkt[12..16].copy_from_slice(&from.0.octets());
    pkt[16..20].copy_from_slice(&to.0.octets());
    pkt[20..22].copy_from_slice(&from.1.to_be_bytes());
    pkt[22..24].copy_from_slice(&to.1.to_be_bytes());
    pkt[24..28].copy_from_slice(&seq.to_be_bytes());
    pkt[28..32].copy_from_slice(&ack.to_be_bytes());
    pkt[32] = (((20 + options_len) / 4) << 4) as u8;
    pkt[33] = flags;
    pkt[34..36].copy_from_slice(&window.to_be_bytes());
    if let Some((tsval, tsecr)) = timestamps {
        pkt[40..44].copy_from_slice(&[1, 1, 8, 10]);
        pkt[44..48].copy_from_slice(&tsval.to_be_bytes());
        pkt[48..52].copy_from_slice(&tsecr.to_be_bytes());
    }
    pkt[header..].copy_from_slice(data);
    fill_checksums(&mut pkt);
    pkt
}
