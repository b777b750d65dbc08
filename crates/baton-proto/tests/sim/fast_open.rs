//! A stand-in for Linux's TCP Fast Open server path, which smoltcp has none of: smoltcp
//! ignores the data of a SYN (RFC 9293), where a back-end set up for the one-turn
//! handoff (`net.ipv4.tcp_fastopen = 0x202` and a listener with `TCP_FASTOPEN`, nginx's
//! `listen ... fastopen=N`; docs/one-turn-handoff-notes.md) takes the request the SYN'
//! carries, answers at once and acknowledges it in its SYN/ACK. The stand-in sits
//! between the back-end module and smoltcp, where the kernel's TCP would be, and only
//! for a SYN with data:
//!
//! - it gives smoltcp the SYN without its data; when smoltcp's SYN/ACK comes out (the
//!   handshake's numbers now known), it makes that SYN/ACK acknowledge the data too, and
//!   hands smoltcp the client's completing ACK carrying the data, so the server reads the
//!   request and answers before the client has said anything more, as Linux's child
//!   socket in SYN-RECV does (`tcp_fastopen_create_child`);
//! - until a client segment completes the handshake (Linux's SYN-RECV; smoltcp is
//!   already established), it keeps Linux's rules, which decide whether an answer lost
//!   on its way to the client is ever sent again:
//!   - the answer goes out once and is not retransmitted: `tcp_retransmit_timer` calls
//!     only `tcp_fastopen_synack_timer` while the child has its request sock ("before we
//!     receive ACK to our SYN-ACK don't retransmit anything else"). smoltcp's
//!     retransmissions are held back and go out once the handshake completes (Linux's
//!     `tcp_rcv_synrecv_state_fastopen` rearms the retransmission timer, and the loss
//!     state its SYN/ACK timer entered sends the rest);
//!   - only a segment in the child's window completes the handshake (`tcp_check_req`,
//!     `tcp_in_window`): one at the request's end, which a client sends once it has
//!     some of the answer. The client's request sent again whole ends there but starts
//!     before it: out of the window, it is dropped and answered with a bare ACK
//!     (`req->rsk_ops->send_ack`, which acknowledges the request, so the client stops
//!     sending it);
//!   - a repeated SYN of the connection is answered with the SYN/ACK again (its data
//!     thrown away; `tcp_check_req`, "pure retransmitted SYN"), and the SYN/ACK goes
//!     again on Linux's timer: 1 s, then doubling, six times (`tcp_fastopen_synack_timer`:
//!     `tcp_synack_retries` + 1), each with a fresh TSval. Answers to repeated SYNs and
//!     to out-of-window segments without data share one limit, one per 500 ms
//!     (`tcp_invalid_ratelimit`, the request sock's `last_oow_ack_time`); a segment
//!     with data is always answered (`tcp_oow_rate_limited`);
//!   - a RST ends the child only at exactly its next expected sequence number, past the
//!     SYN's data (`tcp_validate_incoming`, RFC 5961 §3.2), also one that arrives before
//!     smoltcp's SYN/ACK has come out; any other is dropped.
//!
//! Once established, a repeated SYN draws a challenge ACK (RFC 5961 §4.2,
//! `tcp_send_challenge_ack`), at most one per 500 ms, at the latest numbers smoltcp sent;
//! the back-end module keeps the front-end's repeated SYN''s from a server whose
//! handshake it completed, so only a server established otherwise meets them.
//!
//! Where it differs from Linux: the held retransmissions go out at once when the
//! handshake completes, where Linux may wait for its retransmission timer; a RST in the
//! window but not at its next expected number draws no challenge ACK (RFC 5961 §3.2);
//! a segment of an established connection reaches smoltcp without the stand-in's
//! checks; and the socket is not
//! dropped after the last SYN/ACK. With `enabled` off it stands for a back-end without
//! fast open (`tcp_fastopen = 1`, or a listener made before the sysctl): every packet
//! goes to smoltcp as it is, which acknowledges only the SYN.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use baton_proto::wire::TcpFlags;

use super::packet::{PacketInfo, fill_checksums, ip_bounds};

/// Linux's first SYN/ACK retransmission timeout (`TCP_TIMEOUT_INIT`).
const SYN_ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// SYN/ACK retransmissions of a fast-open child: `tcp_synack_retries` (5) + 1.
const SYN_ACK_RETRIES: u32 = 6;
/// At most one answer per this long to repeated SYNs and out-of-window segments
/// (`net.ipv4.tcp_invalid_ratelimit`).
const OUT_OF_WINDOW_RATE_LIMIT: Duration = Duration::from_millis(500);

/// A connection whose SYN carried data.
struct Child {
    client_isn: u32,
    data: Vec<u8>,
    /// The SYN's TSval, window field and window shift, for the completing ACK.
    tsval: Option<u32>,
    window: u16,
    window_shift: Option<u8>,
    state: ChildState,
}

impl Child {
    /// The child's next expected sequence number: past the SYN and its data.
    fn rcv_nxt(&self) -> u32 {
        self.client_isn
            .wrapping_add(1)
            .wrapping_add(self.data.len() as u32)
    }
}

enum ChildState {
    /// smoltcp has the bare SYN; its SYN/ACK has not come out yet.
    SynGiven,
    /// The SYN/ACK acknowledging the data is out and the data delivered; no client
    /// segment has acknowledged the SYN/ACK yet (Linux's SYN-RECV).
    SynReceived {
        /// The SYN/ACK as sent, to send again.
        syn_ack: Vec<u8>,
        isn_b: u32,
        /// The window field of the child's bare ACKs: the SYN/ACK's, scaled by the
        /// shift it announced.
        window: u16,
        retransmits: u32,
        next_retransmit: Duration,
        /// When a repeated SYN or an out-of-window segment was last answered.
        last_answer: Option<Duration>,
        /// smoltcp has not yet sent anything since it was handed the data: its first
        /// segment may be a bare ACK of the data, which Linux never sends (its SYN/ACK
        /// acknowledged the data) and which would tell the client its request arrived.
        ack_of_data_owed: bool,
        /// Past the last byte (or FIN) smoltcp has sent: what it sends below this is a
        /// retransmission.
        snd_nxt: u32,
        /// smoltcp's retransmissions, held back until the handshake completes.
        held: Vec<Vec<u8>>,
    },
    /// The client acknowledged the SYN/ACK (or the back-end module did, for it).
    Established {
        /// Past the last byte (or FIN) smoltcp has sent, and the acknowledgement and
        /// window field of its latest segment: what a challenge ACK carries.
        snd_nxt: u32,
        rcv_nxt: u32,
        window: u16,
        /// When a SYN was last answered with a challenge ACK.
        last_answer: Option<Duration>,
    },
}

/// The kernel's fast-open server path for one host; see the module's docs.
pub struct FastOpen {
    pub enabled: bool,
    children: HashMap<(IpAddr, u16), Child>,
    /// Segments for smoltcp that the stand-in made (the completing ACK with the data).
    pub to_smoltcp: Vec<Vec<u8>>,
    /// Segments the stand-in sends itself (the SYN/ACK again), as the kernel does.
    pub to_wire: Vec<Vec<u8>>,
    /// SYN/ACKs the stand-in sent itself (repeats).
    pub syn_acks_repeated: u32,
    /// SYNs whose data it took.
    pub syns_with_data_taken: u32,
    /// Retransmissions smoltcp made in SYN-RECV, held back.
    pub retransmissions_held: u32,
    /// Client segments out of a child's window, dropped (and answered).
    pub out_of_window: u32,
    /// RSTs not at a child's next expected sequence number, dropped.
    pub resets_ignored: u32,
    /// RSTs at it, which ended the child.
    pub resets_taken: u32,
    /// Challenge ACKs answering a repeated SYN on an established connection.
    pub challenge_acks: u32,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl FastOpen {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            children: HashMap::new(),
            to_smoltcp: Vec::new(),
            to_wire: Vec::new(),
            syn_acks_repeated: 0,
            syns_with_data_taken: 0,
            retransmissions_held: 0,
            out_of_window: 0,
            resets_ignored: 0,
            resets_taken: 0,
            challenge_acks: 0,
        }
    }

    /// A packet arriving for the host's TCP (after the back-end module's ingress): what
    /// smoltcp gets of it, if anything. What the stand-in answers itself, with the host's
    /// TSval `tsval`, goes to [`FastOpen::to_wire`].
    pub fn receive(&mut self, now: Duration, tsval: u32, pkt: Vec<u8>) -> Option<Vec<u8>> {
        if !self.enabled {
            return Some(pkt);
        }
        let info = PacketInfo::parse(&pkt).expect("the network verified it");
        let key = (info.src, info.sport);
        if info.is_syn() {
            let same = self
                .children
                .get(&key)
                .is_some_and(|c| c.client_isn == info.seq);
            if !same {
                self.children.remove(&key);
                if info.payload_len == 0 {
                    return Some(pkt);
                }
                let (bare, data) = split_syn(&pkt);
                self.children.insert(
                    key,
                    Child {
                        client_isn: info.seq,
                        data,
                        tsval: info.timestamps.map(|(tsval, _)| tsval),
                        window: info.window,
                        window_shift: info.window_scale,
                        state: ChildState::SynGiven,
                    },
                );
                self.syns_with_data_taken += 1;
                return Some(bare);
            }
            // A repeated SYN: in SYN-RECV the SYN/ACK again (its data thrown away); on an
            // established socket a challenge ACK (RFC 5961 section 4.2: out of the window,
            // `tcp_validate_incoming` sends one, `tcp_send_challenge_ack`), under the same
            // per-socket limit; before the SYN/ACK nothing (smoltcp has it).
            let child = self.children.get_mut(&key).expect("found above");
            let ts_recent = child.tsval;
            match &mut child.state {
                ChildState::SynReceived {
                    syn_ack,
                    last_answer,
                    ..
                } if last_answer
                    .is_none_or(|at| now.saturating_sub(at) >= OUT_OF_WINDOW_RATE_LIMIT) =>
                {
                    *last_answer = Some(now);
                    self.to_wire.push(with_tsval(syn_ack, tsval));
                    self.syn_acks_repeated += 1;
                }
                ChildState::Established {
                    snd_nxt,
                    rcv_nxt,
                    window,
                    last_answer,
                } if last_answer
                    .is_none_or(|at| now.saturating_sub(at) >= OUT_OF_WINDOW_RATE_LIMIT) =>
                {
                    *last_answer = Some(now);
                    self.to_wire.push(data_segment(
                        (info.dst, info.dport),
                        (info.src, info.sport),
                        *snd_nxt,
                        *rcv_nxt,
                        *window,
                        ts_recent.map(|client| (tsval, client)),
                        &[],
                    ));
                    self.challenge_acks += 1;
                }
                _ => {}
            }
            return None;
        }
        let Some(child) = self.children.get_mut(&key) else {
            return Some(pkt);
        };
        let rcv_nxt = child.rcv_nxt();
        let ts_recent = child.tsval;
        if info.is_rst() && matches!(child.state, ChildState::SynGiven) {
            // Linux makes the child in SYN-RECV as the SYN arrives, the data taken: a RST
            // before smoltcp's SYN/ACK came out meets the same rule as after it (below).
            // Taken, it goes to smoltcp at smoltcp's own next number (it has the bare SYN
            // only), and the child is gone: a SYN again with the same ISN is a new
            // connection, as for Linux once the RST freed its child.
            if info.seq != rcv_nxt {
                self.resets_ignored += 1;
                return None;
            }
            self.resets_taken += 1;
            let client_isn = child.client_isn;
            self.children.remove(&key);
            let mut pkt = pkt;
            let ihl = tcp_start(&pkt);
            pkt[ihl + 4..ihl + 8].copy_from_slice(&client_isn.wrapping_add(1).to_be_bytes());
            fill_checksums(&mut pkt);
            return Some(pkt);
        }
        let ChildState::SynReceived {
            isn_b,
            window,
            last_answer,
            snd_nxt,
            held,
            ..
        } = &mut child.state
        else {
            return Some(pkt);
        };
        if info.is_rst() {
            // Linux's fast-open child is a full socket in SYN-RECV: a RST ends it only at
            // exactly the next sequence number it expects, past the SYN's data
            // (`tcp_validate_incoming`, RFC 5961 §3.2); one out of the window is dropped,
            // one in it draws a challenge ACK (not modelled: dropped too).
            if info.seq != rcv_nxt {
                self.resets_ignored += 1;
                return None;
            }
            self.resets_taken += 1;
            self.children.remove(&key);
            return Some(pkt);
        }
        // `tcp_in_window` against the child's receive window (its SYN/ACK's, at most
        // 64 KiB), the FIN counted.
        let end = info.seq.wrapping_add(info.seq_len());
        let in_window = info.seq == rcv_nxt
            || (seq_lt(rcv_nxt, end)
                && seq_lt(info.seq, rcv_nxt.wrapping_add(u32::from(u16::MAX))));
        if !in_window {
            self.out_of_window += 1;
            // Only segments without data count against the limit (`tcp_oow_rate_limited`:
            // data is not likely part of an ACK loop).
            let limited = info.payload_len == 0
                && last_answer.is_some_and(|at| now.saturating_sub(at) < OUT_OF_WINDOW_RATE_LIMIT);
            if !limited {
                *last_answer = Some(now);
                self.to_wire.push(data_segment(
                    (info.dst, info.dport),
                    (info.src, info.sport),
                    *snd_nxt,
                    rcv_nxt,
                    *window,
                    ts_recent.map(|client| (tsval, client)),
                    &[],
                ));
            }
            return None;
        }
        if info.has(TcpFlags::ACK) && seq_lt(*isn_b, info.ack) {
            // The handshake completes: what smoltcp retransmitted meanwhile goes out.
            for segment in held.drain(..) {
                self.to_wire.push(with_tsval(&segment, tsval));
            }
            child.state = ChildState::Established {
                snd_nxt: *snd_nxt,
                rcv_nxt,
                window: *window,
                last_answer: None,
            };
        }
        Some(pkt)
    }

    /// A packet smoltcp sends: what leaves the host, if anything. A SYN/ACK answering a
    /// SYN whose data was taken acknowledges the data, and smoltcp is handed the client's
    /// completing ACK with the data ([`FastOpen::to_smoltcp`]); smoltcp's bare ACK of that
    /// data goes no further.
    pub fn sent(&mut self, now: Duration, mut pkt: Vec<u8>) -> Option<Vec<u8>> {
        if !self.enabled {
            return Some(pkt);
        }
        let info = PacketInfo::parse(&pkt).expect("smoltcp's packets parse");
        let Some(child) = self.children.get_mut(&(info.dst, info.dport)) else {
            return Some(pkt);
        };
        if let ChildState::Established {
            snd_nxt,
            rcv_nxt,
            window,
            ..
        } = &mut child.state
        {
            let end = info.seq.wrapping_add(info.seq_len());
            if seq_lt(*snd_nxt, end) {
                *snd_nxt = end;
            }
            if info.has(TcpFlags::ACK) && seq_lt(*rcv_nxt, info.ack) {
                *rcv_nxt = info.ack;
            }
            *window = info.window;
            return Some(pkt);
        }
        if let ChildState::SynReceived {
            ack_of_data_owed,
            snd_nxt,
            held,
            ..
        } = &mut child.state
        {
            if *ack_of_data_owed {
                *ack_of_data_owed = false;
                if info.is_pure_ack() {
                    return None;
                }
            }
            let end = info.seq.wrapping_add(info.seq_len());
            if info.seq_len() > 0 && !seq_lt(*snd_nxt, end) {
                // Sent before: Linux retransmits nothing but the SYN/ACK in SYN-RECV.
                held.retain(|p| PacketInfo::parse(p).map(|h| h.seq) != Ok(info.seq));
                held.push(pkt);
                self.retransmissions_held += 1;
                return None;
            }
            if seq_lt(*snd_nxt, end) {
                *snd_nxt = end;
            }
        }
        if !info.is_syn_ack()
            || !matches!(child.state, ChildState::SynGiven)
            || info.ack != child.client_isn.wrapping_add(1)
        {
            return Some(pkt);
        }
        let ihl = tcp_start(&pkt);
        let ack = info.ack.wrapping_add(child.data.len() as u32);
        pkt[ihl + 8..ihl + 12].copy_from_slice(&ack.to_be_bytes());
        fill_checksums(&mut pkt);
        let shift = child.window_shift.unwrap_or(0).min(14);
        // The client's TSval from its SYN, echoing the SYN/ACK's.
        let timestamps = child
            .tsval
            .zip(info.timestamps)
            .map(|(client, (server, _))| (client, server));
        self.to_smoltcp.push(data_segment(
            (info.dst, info.dport),
            (info.src, info.sport),
            child.client_isn.wrapping_add(1),
            info.seq.wrapping_add(1),
            child.window >> shift,
            timestamps,
            &child.data,
        ));
        let syn_ack_shift = info.window_scale.unwrap_or(0).min(14);
        child.state = ChildState::SynReceived {
            syn_ack: pkt.clone(),
            isn_b: info.seq,
            window: info.window >> syn_ack_shift,
            retransmits: 0,
            next_retransmit: now + SYN_ACK_TIMEOUT,
            last_answer: None,
            ack_of_data_owed: true,
            snd_nxt: info.seq.wrapping_add(1),
            held: Vec::new(),
        };
        Some(pkt)
    }

    /// Linux's SYN/ACK timer: the SYN/ACKs due at `now` to [`FastOpen::to_wire`], each
    /// with the host's TSval `tsval`.
    pub fn poll(&mut self, now: Duration, tsval: u32) {
        for child in self.children.values_mut() {
            if let ChildState::SynReceived {
                syn_ack,
                retransmits,
                next_retransmit,
                ..
            } = &mut child.state
                && *retransmits < SYN_ACK_RETRIES
                && *next_retransmit <= now
            {
                *retransmits += 1;
                *next_retransmit = now + SYN_ACK_TIMEOUT * (1 << *retransmits);
                self.to_wire.push(with_tsval(syn_ack, tsval));
                self.syn_acks_repeated += 1;
            }
        }
    }

    /// When the next SYN/ACK is due.
    pub fn poll_at(&self) -> Option<Duration> {
        self.children
            .values()
            .filter_map(|child| match child.state {
                ChildState::SynReceived {
                    retransmits,
                    next_retransmit,
                    ..
                } if retransmits < SYN_ACK_RETRIES => Some(next_retransmit),
                _ => None,
            })
            .min()
    }
}

/// Where the TCP header of a packet the network verified starts.
fn tcp_start(pkt: &[u8]) -> usize {
    ip_bounds(pkt).map_or(20, |(tcp, _)| tcp)
}

/// A SYN's headers alone (its IPv4 total length or IPv6 payload length cut, checksums
/// filled) and its data.
fn split_syn(pkt: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (ihl, total) = ip_bounds(pkt).expect("a verified packet");
    let headers = ihl + usize::from(pkt[ihl + 12] >> 4) * 4;
    let mut bare = pkt[..headers].to_vec();
    if pkt[0] >> 4 == 6 {
        bare[4..6].copy_from_slice(&((headers - ihl) as u16).to_be_bytes());
    } else {
        bare[2..4].copy_from_slice(&(headers as u16).to_be_bytes());
    }
    fill_checksums(&mut bare);
    (bare, pkt[headers..total].to_vec())
}

/// A copy of `segment` (a SYN/ACK sent again, a held retransmission) with its TSval
/// (if it has timestamps) set to `tsval`.
fn with_tsval(segment: &[u8], tsval: u32) -> Vec<u8> {
    let mut pkt = segment.to_vec();
    let ihl = tcp_start(&pkt);
    let end = ihl + usize::from(pkt[ihl + 12] >> 4) * 4;
    let options = ihl + 20..end;
    if let Some(ts) = baton_common::tcp_options::timestamps(&pkt[options.clone()]) {
        let at = options.start + ts + 2;
        pkt[at..at + 4].copy_from_slice(&tsval.to_be_bytes());
        fill_checksums(&mut pkt);
    }
    pkt
}

/// A TCP segment with ACK (and PSH if it carries data) from `from` to `to`
/// carrying `data`, with the timestamps option if `timestamps` (TSval, TSecr) is given;
/// checksums filled.
fn data_segment(
    from: (IpAddr, u16),
    to: (IpAddr, u16),
    seq: u32,
    ack: u32,
    window: u16,
    timestamps: Option<(u32, u32)>,
    data: &[u8],
) -> Vec<u8> {
    // ACK, and PSH with data.
    let flags = if data.is_empty() { 0x10 } else { 0x18 };
    super::packet::tcp_segment(from, to, seq, ack, flags, window, timestamps, data)
}
