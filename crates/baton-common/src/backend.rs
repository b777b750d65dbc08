//! The back-end module's maps: the flow table, the configuration and the counters that
//! the tc programs (`backend_ingress`, `backend_syn`, `backend_egress`) share with
//! `baton backend`; and the programs' per-packet decisions, as pure functions that the
//! programs and the simulation's back-end module both call, so that the simulation runs
//! the kernel's logic rather than a copy of it: [`admit_syn`] for a SYN,
//! [`client_segment_fate`] and [`BackendFlow::drops`] for the ingress's other segments,
//! [`BackendFlow::syn_ack_fate`] and [`BackendFlow::keeps_syn_ack`] for a SYN/ACK',
//! [`BackendFlow::completes_handshake`] and [`BackendFlow::local_ack`] for the client's
//! ACK the egress makes of an absorbed one, [`BackendFlow::answers_repeated_syn`] and
//! [`SynAckProof`] for a SYN' repeated after that, [`server_segment_fate`] and
//! [`frontend_copy`] for the egress's other segments.

// ECN-Echo and Congestion Window Reduced, in the TCP header's flags (RFC 3168 §6.1).
use crate::handoff_option::{HANDOFF_OPTION_KIND, HANDOFF_OPTION_LEN};
use crate::layout::tcp_flag::{ACK, CWR as TCP_CWR, ECE as TCP_ECE, RST, SYN};
use crate::layout::{
    IP_CHECK, IP_DADDR, IP_SADDR, IP_TOT_LEN, IPV4_HLEN, TCP_ACK_SEQ, TCP_CHECK, TCP_DEST,
    TCP_FLAGS, TCP_HLEN, TCP_MAX_HLEN, TCP_SEQ, TCP_SOURCE, TCP_URG_PTR, TSOPT_TSECR, TSOPT_TSVAL,
};
use crate::siphash::SipKey;
use crate::translate::{Translation, ones_complement_add, tcp_ipv4_pseudo_header_sum};

/// Default number of flow-table entries. An entry costs 104 bytes as the kernel accounts
/// it (key 12 + value 24 + LRU hash element overhead; `bpftool map show` memlock), all
/// preallocated: 109 MB at this size. `flow_table_size` sets it.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1_048_576;

/// A handed-off connection as the back-end sees it: addresses and ports in network byte
/// order, exactly as they sit in the packet, so the programs copy them without swapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendFlowKey {
    pub client_addr_be: u32,
    pub backend_addr_be: u32,
    pub client_port_be: u16,
    pub backend_port_be: u16,
}

/// [`BackendFlowKey`]'s IPv6 twin, the key of the IPv6 flow table (a map of its own, so
/// that the IPv4 table keeps the layout pinned tables have; docs/design.md, "IPv6: the
/// plan"): the addresses as the packet holds them, ports in network byte order. 36 bytes,
/// no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendFlowKeyV6 {
    pub client_addr: [u8; 16],
    pub backend_addr: [u8; 16],
    pub client_port_be: u16,
    pub backend_port_be: u16,
}

/// A flow-table value: how to translate, and where the handoff stands.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendFlow {
    pub translation: Translation,
    /// [`BackendFlow::CONFIRMED`], [`BackendFlow::ECN_GRANTED`],
    /// [`BackendFlow::ECN_REFUSED`], [`BackendFlow::SYN_ACK_ABSORBED`] in the low bits;
    /// bits 16..32 hold the length of the data the SYN' carried
    /// ([`BackendFlow::syn_data_len`]; 0 for a SYN' without data, and in entries of older
    /// builds), kept here so that the value keeps the size pinned tables have.
    pub state: u32,
    /// The client's ISN (the SYN''s sequence number), which tells a repeated SYN' of
    /// this connection from a new connection on the same ports
    /// ([`BackendFlow::is_same_connection`]). Zero in entries of older builds.
    pub client_isn: u32,
}

impl BackendFlow {
    /// The back-end has sent response data, so its acknowledgement of the whole request
    /// has reached the front-end: egress stops copying segments to the front-end (only
    /// a RST still goes there, [`frontend_copy`]).
    pub const CONFIRMED: u32 = 1 << 0;
    /// The SYN' asked for ECN (ECE and CWR, RFC 3168 §6.1.1): the front-end granted it
    /// to the client in its SYN/ACK, so the client sends ECT segments.
    pub const ECN_GRANTED: u32 = 1 << 1;
    /// ECN was granted to the client but the server's SYN/ACK' refused it (no ECE: Linux
    /// with `net.ipv4.tcp_ecn = 0`). The server ignores CE marks on this connection, so
    /// a congestion mark on the client's segments would be lost: ingress drops them
    /// instead ([`BackendFlow::drops`]).
    pub const ECN_REFUSED: u32 = 1 << 2;
    /// The server's SYN/ACK' acknowledged the SYN''s data (a one-turn handoff taken by
    /// TCP Fast Open's server path) and was dropped on the back-end: the front-end learns
    /// of the handoff from the client's acknowledgement of the answer. Set with
    /// [`BackendFlow::CONFIRMED`], so that no answer is copied to the front-end either
    /// (docs/design.md, "The one-turn handoff"): only a RST ever is.
    pub const SYN_ACK_ABSORBED: u32 = 1 << 3;
    /// The server retransmitted its absorbed SYN/ACK' (the client resent its request,
    /// whose acknowledgement rode on the absorbed one, and the front-end sent the SYN'
    /// again; or the server's timer): every retransmission goes to the front-end, the
    /// proof that this back-end has the request (a slow application is not a dead
    /// back-end) and the server's call for the client's ACK, which the front-end sends
    /// in the client's name ([`SynAckFate::RepeatToFrontend`]).
    pub const SYN_ACK_REPEATED: u32 = 1 << 4;
    /// The egress completed the server's handshake itself: with the first SYN/ACK' that
    /// acknowledged the request (the one absorbed), it made the client's ACK and fed it
    /// to the ingress ([`BackendFlow::local_ack`]), so that the server is established
    /// at once and sends a lost answer again on its own retransmission timer. A SYN'
    /// repeated after that is answered for the server ([`BackendFlow::answers_repeated_syn`]).
    pub const HANDSHAKE_COMPLETED: u32 = 1 << 5;
    /// Where [`BackendFlow::syn_data_len`] sits in `state`.
    const SYN_DATA_SHIFT: u32 = 16;

    /// The entry a verified SYN' makes; `syn_flags` is its TCP header's byte 13 and
    /// `syn_data_len` the length of the request it carries (0 without one; a one-turn
    /// SYN' carries at most one segment, so it fits 16 bits, and a longer claim is taken
    /// as its low 16 bits, which can only make the SYN/ACK' go to the front-end).
    pub const fn new(
        translation: Translation,
        client_isn: u32,
        syn_flags: u8,
        syn_data_len: u16,
    ) -> Self {
        let ecn = if syn_flags & (TCP_ECE | TCP_CWR) == TCP_ECE | TCP_CWR {
            Self::ECN_GRANTED
        } else {
            0
        };
        Self {
            translation,
            state: ecn | ((syn_data_len as u32) << Self::SYN_DATA_SHIFT),
            client_isn,
        }
    }

    /// The length of the data the entry's SYN' carried.
    pub const fn syn_data_len(&self) -> u32 {
        self.state >> Self::SYN_DATA_SHIFT
    }

    /// What the egress does with a SYN/ACK from the server whose acknowledgement number
    /// is `ack` (in the client's numbers: the egress never translates it), given what
    /// earlier SYN/ACK's of the entry did (its [`BackendFlow::SYN_ACK_ABSORBED`] and
    /// [`BackendFlow::SYN_ACK_REPEATED`]).
    ///
    /// - `client_isn + 1`: the server took the SYN alone (a SYN' without data, or fast
    ///   open refused: its queue full, SYN cookies in use, a listener without
    ///   `fastopen`): [`SynAckFate::ToFrontend`], which sends the request after it
    ///   (step 7), as before the one-turn handoff. Also for entries of older builds
    ///   (`client_isn` 0), which cannot tell.
    /// - past it by at most the SYN''s data: the server has the request (Linux takes a
    ///   SYN's data whole or not at all, so the ack is exactly `client_isn + 1 + len`,
    ///   the range only errs toward keeping the connection). The first such SYN/ACK' is
    ///   [`SynAckFate::Absorbed`]; the server sends it again while nothing has completed
    ///   its handshake (a repeated SYN', or its own timer), and every repeat is
    ///   [`SynAckFate::RepeatToFrontend`]: until its handshake completes, the server
    ///   sends nothing else again, its answer included.
    /// - anything else answers another SYN: [`SynAckFate::OtherConnection`].
    #[inline(always)]
    pub const fn syn_ack_fate(&self, ack: u32) -> SynAckFate {
        if self.client_isn == 0 {
            return SynAckFate::ToFrontend;
        }
        let acked = ack.wrapping_sub(self.client_isn.wrapping_add(1));
        if acked == 0 {
            SynAckFate::ToFrontend
        } else if acked > self.syn_data_len() {
            SynAckFate::OtherConnection
        } else if self.state & Self::SYN_ACK_ABSORBED != 0 {
            SynAckFate::RepeatToFrontend
        } else {
            SynAckFate::Absorbed
        }
    }

    /// Whether the SYN/ACK' just recorded, whose fate's [`SynAckFate::marks`] are in
    /// `state`, stays on the back-end: only the first that acknowledges the request
    /// ([`SynAckFate::Absorbed`]). Read from the entry's state rather than from the fate,
    /// so that the egress can keep the fate in the map and walk one rewrite path for
    /// every fate (its verifier budget has no room for two).
    #[inline(always)]
    pub const fn keeps_syn_ack(state: u32) -> bool {
        state & (Self::SYN_ACK_ABSORBED | Self::SYN_ACK_REPEATED) == Self::SYN_ACK_ABSORBED
    }

    /// The state once the server's SYN/ACK', whose TCP header's byte 13 is
    /// `syn_ack_flags`, has left: [`BackendFlow::ECN_REFUSED`] added if the SYN' asked
    /// for ECN and the server did not agree (RFC 3168 §6.1.1: ECE in the SYN/ACK).
    ///
    /// Branch-free, so that it adds no path for the verifier to walk through the egress
    /// program's SYN/ACK' rewrite (a tight fit under its million instructions).
    #[inline(always)]
    pub const fn state_after_syn_ack(&self, syn_ack_flags: u8) -> u32 {
        // ECN_GRANTED (bit 1) moved onto ECN_REFUSED (bit 2), unless ECE (bit 6 of the
        // flags) moved onto the same bit clears it.
        let granted = (self.state & Self::ECN_GRANTED) << 1;
        let agreed = (syn_ack_flags as u32 & TCP_ECE as u32) >> 4;
        self.state | (granted & !agreed)
    }

    /// Whether the egress completes the server's handshake with the SYN/ACK' just
    /// recorded (the entry's `state` and `translation` once it is): the first that
    /// acknowledges the request ([`BackendFlow::keeps_syn_ack`]), of an entry that knows
    /// the window the client's ACK announces ([`Translation::client_window`]; entries of
    /// older builds do not, and keep the server in SYN-RECV as those builds did).
    ///
    /// Linux's fast-open child in SYN-RECV sends its answer once and then nothing but
    /// its SYN/ACK until a client segment completes its handshake (`tcp_retransmit_timer`
    /// calls only `tcp_fastopen_synack_timer` while the child has its request sock), and
    /// the client, whose SYN/ACK was the front-end's, never answers the server's: an
    /// answer lost whole would wait for the front-end to answer one of the server's
    /// repeats, each of which, or its answer, the network can lose too (six repeats
    /// over 63 s). Completed here, the server retransmits the answer on its own timer.
    /// It is sound because the client completed its handshake (with the front-end)
    /// before it sent the request the SYN' carried. Once per flow: only the first
    /// SYN/ACK' is kept; a second ACK would be a duplicate ACK, harmless to Linux.
    ///
    /// Only with [`BackendConfig::COMPLETE_HANDSHAKE`] in `config_flags` (on by default,
    /// `complete_handshake` in the agent's configuration). A server so established
    /// sends its answer to the client on its own timer, even if the front-end has
    /// meanwhile given this back-end up as silent (every proof lost) and its resets are
    /// lost too; the front-end then tells whose answer the client acknowledges by the
    /// stamp its TSecr echoes, and takes this back-end back (docs/design.md, "The answer
    /// names its back-end").
    #[inline(always)]
    pub const fn completes_handshake(
        config_flags: u32,
        state: u32,
        translation: Translation,
    ) -> bool {
        config_flags & BackendConfig::COMPLETE_HANDSHAKE != 0
            && Self::keeps_syn_ack(state)
            && translation.client_window() != 0
    }

    /// The client's handshake-completing ACK of the SYN/ACK' `syn_ack`, in the client's
    /// terms (the ingress translates it as it does every client segment): at the
    /// request's end, acknowledging the server's SYN, announcing the window the SYN'
    /// announced, with the client's TSval of the SYN' (which the SYN/ACK' echoes, so the
    /// server's PAWS check takes it) and an echo of the SYN/ACK''s TSval.
    ///
    /// The server's first RTT sample, from its SYN/ACK to this ACK, is then a few
    /// microseconds (Linux takes it from the SYN/ACK's send time,
    /// `tcp_synack_rtt_meas`); its retransmission timeout is floored at 200 ms
    /// (`TCP_RTO_MIN`) and later samples, of the client's own ACKs, correct the
    /// estimate.
    #[inline(always)]
    pub const fn local_ack(&self, syn_ack: SynAckSeen) -> LocalAck {
        let t = self.translation;
        LocalAck {
            seq: syn_ack.ack,
            ack: t.seq_to_client(syn_ack.seq).wrapping_add(1),
            window: t.client_window(),
            tsval: syn_ack.tsecr,
            tsecr: t.with_stamp(0).tsval_to_client(syn_ack.tsval),
        }
    }

    /// Whether the SYN' program answers a repeated SYN' of this entry's connection
    /// itself ([`SynAckProof`]) rather than pass it to the server: once the egress has
    /// completed the server's handshake ([`BackendFlow::HANDSHAKE_COMPLETED`]).
    ///
    /// The front-end sends the SYN' again when the client resends its request (nothing
    /// has acknowledged it), and a SYN/ACK' that acknowledges the request is how it
    /// learns that this back-end has it: a back-end that answers none of its
    /// `handoff_retries` SYN''s is given up as dead. A server in SYN-RECV gave that
    /// proof itself (it repeats its SYN/ACK on a repeated SYN); an established one
    /// answers a SYN with a challenge ACK to the client (RFC 5961 section 4.2,
    /// rate-limited), which the front-end never sees. The entry says what the server's
    /// SYN/ACK said (it acknowledged the request), so the proof is made from it, at
    /// once and whatever the server's rate limits. Before the completion the SYN' goes
    /// to the server as it always did, and its repeated SYN/ACK' is the proof.
    #[inline(always)]
    pub const fn answers_repeated_syn(&self) -> bool {
        self.state & Self::HANDSHAKE_COMPLETED != 0
    }

    /// Whether ingress drops a client segment whose IPv4 TOS byte is `tos`: a CE mark
    /// (ECN field `0b11`) on a connection whose server refused the ECN the client was
    /// granted. The server would ignore the mark, and the client, which reacts to loss,
    /// would never slow down; dropped, the mark becomes the loss a path without ECN
    /// would have had, as RFC 6040 §4.2 has a tunnel's egress drop a CE-marked packet
    /// whose inner header is Not-ECT. ECT(0) and ECT(1) segments pass, as every segment
    /// of every other flow: the programs never rewrite the ECN field.
    pub const fn drops(&self, tos: u8) -> bool {
        self.refuses_ecn() && ce(tos)
    }

    /// The server refused the ECN the client was granted: the first half of
    /// [`BackendFlow::drops`], for a caller that reads the TOS byte only when it is needed.
    #[inline(always)]
    pub const fn refuses_ecn(&self) -> bool {
        self.state & Self::ECN_REFUSED != 0
    }

    /// Whether a verified SYN' with `client_isn` belongs to this entry's connection: a
    /// retransmitted or delayed SYN' (the front-end resends it when the SYN/ACK' is
    /// slow). Its entry must be kept: reset to awaiting the SYN/ACK' after the server
    /// has answered, it would drop every later segment of the server's (the duplicate
    /// SYN draws an ACK, never a SYN/ACK, from an established socket). Any other SYN' on
    /// the same ports is a new connection and replaces the entry.
    pub const fn is_same_connection(&self, client_isn: u32) -> bool {
        self.client_isn == client_isn && self.client_isn != 0
    }

    pub const fn is_confirmed(&self) -> bool {
        self.state & Self::CONFIRMED != 0
    }
}

/// What the egress reads of a server's SYN/ACK' to make the client's ACK
/// ([`BackendFlow::local_ack`]), in the server's terms, as sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynAckSeen {
    /// `isn_b`.
    pub seq: u32,
    /// The client's ISN + 1 + the request's length.
    pub ack: u32,
    /// The server's TSval and its echo of the SYN''s (0 without timestamps).
    pub tsval: u32,
    pub tsecr: u32,
}

/// The fields of the client's handshake-completing ACK ([`BackendFlow::local_ack`]):
/// a pure ACK from the client's address and port to the back-end's, in the client's
/// terms. The timestamps go only where the SYN/ACK' had them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalAck {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub tsval: u32,
    pub tsecr: u32,
}

/// Room for the IPv4 header (without options) and the TCP header of a SYN' that
/// [`SynAckProof::write`] turns into a SYN/ACK'.
pub const SYN_ACK_PROOF_ROOM: usize = IPV4_HLEN + TCP_MAX_HLEN;

/// The SYN/ACK' the SYN' program sends the front-end for the server, in answer to a
/// SYN' repeated once the server's handshake was completed locally
/// ([`BackendFlow::answers_repeated_syn`]): what the server's own repeat looked like
/// after the egress (from the VIP, `seq = isn_f`, acknowledging the request,
/// `TSval = tsv_f`, echoing the SYN''s TSval, which tells the front-end which of its
/// candidates answers), made from the SYN' itself and its verified option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAckProof {
    /// From the SYN''s handoff option.
    pub isn_f: u32,
    pub tsv_f: u32,
    /// The request's length, as the entry recorded it from the first SYN'
    /// ([`BackendFlow::syn_data_len`]): what the server's SYN/ACK' acknowledged.
    pub request_len: u32,
    /// The VIP's address and port, in network order as in the packet.
    pub vip_addr: [u8; 4],
    pub vip_port: [u8; 2],
}

impl SynAckProof {
    /// Rewrites `headers`, a SYN''s IPv4 header (20 bytes, no options) and its TCP header
    /// of `tcp_len` bytes in the front-end's layout (`crate::syn_prime`: 40 bytes of
    /// options, each at its constant offset, so that every write here is at one, as the
    /// verifier wants of writes to the stack), into the SYN/ACK' without data: addresses
    /// and ports swapped (the source the VIP's), the acknowledgement past the request,
    /// SYN and ACK alone, the handoff option blanked to NOPs, the timestamps the
    /// front-end's TSval and the SYN''s echoed, and both checksums computed afresh (a
    /// received SYN' has complete ones, and its data goes). The other options are the
    /// SYN''s (the client's agreed terms), which the front-end reads only of a first
    /// SYN/ACK'. Returns the IPv4 total length, or `None` for a SYN' of another layout.
    #[inline(always)]
    pub fn write(&self, headers: &mut [u8; SYN_ACK_PROOF_ROOM], tcp_len: usize) -> Option<u16> {
        use crate::syn_prime::SYN_PRIME_TCP_HLEN;
        const TCP: usize = IPV4_HLEN;
        const OPTIONS: usize = TCP + TCP_HLEN;
        /// Where the SYN' layout puts the timestamps and the handoff option.
        const TIMESTAMPS: usize = OPTIONS + 4 + 2;
        const HANDOFF: usize = OPTIONS + SYN_PRIME_TCP_HLEN - TCP_HLEN - HANDOFF_OPTION_LEN;
        if tcp_len != SYN_PRIME_TCP_HLEN
            || headers[HANDOFF..HANDOFF + 2] != [HANDOFF_OPTION_KIND, HANDOFF_OPTION_LEN as u8]
        {
            return None;
        }
        let timestamps = match headers[TIMESTAMPS..TIMESTAMPS + 2] {
            [8, 10] => true,
            [NOP, NOP] => false,
            _ => return None,
        };
        let client = read4(headers, IP_SADDR);
        write4(headers, IP_SADDR, self.vip_addr);
        write4(headers, IP_DADDR, client);
        let total = (IPV4_HLEN + tcp_len) as u16;
        write2(headers, IP_TOT_LEN, total.to_be_bytes());
        let client_port = read2(headers, TCP + TCP_SOURCE);
        write2(headers, TCP + TCP_SOURCE, self.vip_port);
        write2(headers, TCP + TCP_DEST, client_port);
        let client_isn = u32::from_be_bytes(read4(headers, TCP + TCP_SEQ));
        write4(headers, TCP + TCP_SEQ, self.isn_f.to_be_bytes());
        let ack = client_isn.wrapping_add(1).wrapping_add(self.request_len);
        write4(headers, TCP + TCP_ACK_SEQ, ack.to_be_bytes());
        headers[TCP + TCP_FLAGS] = SYN | ACK;
        write2(headers, TCP + TCP_URG_PTR, [0; 2]);
        for byte in &mut headers[HANDOFF..HANDOFF + HANDOFF_OPTION_LEN] {
            *byte = NOP;
        }
        if timestamps {
            let client_tsval = read4(headers, TIMESTAMPS + TSOPT_TSVAL);
            write4(headers, TIMESTAMPS + TSOPT_TSVAL, self.tsv_f.to_be_bytes());
            write4(headers, TIMESTAMPS + TSOPT_TSECR, client_tsval);
        }
        write2(headers, IP_CHECK, [0; 2]);
        let mut ip_sum = 0;
        for word in 0..IPV4_HLEN / 2 {
            ip_sum = ones_complement_add(ip_sum, u16::from_be_bytes(read2(headers, 2 * word)));
        }
        write2(headers, IP_CHECK, (!ip_sum).to_be_bytes());
        write2(headers, TCP + TCP_CHECK, [0; 2]);
        let mut sum = tcp_ipv4_pseudo_header_sum(self.vip_addr, client, tcp_len as u16);
        for word in 0..SYN_PRIME_TCP_HLEN / 2 {
            sum = ones_complement_add(sum, u16::from_be_bytes(read2(headers, TCP + 2 * word)));
        }
        write2(headers, TCP + TCP_CHECK, (!sum).to_be_bytes());
        Some(total)
    }
}

/// The NOP option (RFC 9293 section 3.2).
const NOP: u8 = 1;

#[inline(always)]
fn read2<const N: usize>(bytes: &[u8; N], at: usize) -> [u8; 2] {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => [a, b],
        _ => [0; 2],
    }
}

#[inline(always)]
fn read4<const N: usize>(bytes: &[u8; N], at: usize) -> [u8; 4] {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => [0; 4],
    }
}

#[inline(always)]
fn write2<const N: usize>(bytes: &mut [u8; N], at: usize, value: [u8; 2]) {
    if let Some(field) = bytes.get_mut(at..at + 2) {
        field.copy_from_slice(&value);
    }
}

#[inline(always)]
fn write4<const N: usize>(bytes: &mut [u8; N], at: usize, value: [u8; 4]) {
    if let Some(field) = bytes.get_mut(at..at + 4) {
        field.copy_from_slice(&value);
    }
}

/// Where a server's SYN/ACK goes ([`BackendFlow::syn_ack_fate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynAckFate {
    /// The SYN/ACK' of a SYN' without data, or one whose data the server did not take:
    /// translated and sent to the front-end (step 6).
    ToFrontend,
    /// The first to acknowledge the SYN''s data: the translation is recorded and the
    /// segment dropped, so that it never leaves the back-end; the flow is confirmed
    /// (docs/design.md, "The one-turn handoff").
    Absorbed,
    /// A repeat of an absorbed one: translated and sent to the front-end
    /// ([`stat::OUT_SYN_ACK_REPEAT_TO_FRONTEND`]), the proof that this back-end has the
    /// request, so that a slow application is not taken for a dead back-end, and the
    /// server's call for the ACK that completes its handshake. Linux's fast-open child
    /// retransmits nothing but its SYN/ACK until then, so an answer lost whole on its
    /// way to the client, which leaves the client nothing to acknowledge, is sent again
    /// only once the front-end has answered (docs/design.md, "The one-turn handoff").
    /// The server's timer bounds the repeats (six, over 63 s), and the answer ends them.
    RepeatToFrontend,
    /// It answers another SYN on the entry's ports: the entry is stale, removed, and the
    /// segment passed untouched ([`stat::OUT_STALE_FLOW_REMOVED`]).
    OtherConnection,
}

impl SynAckFate {
    /// The [`BackendFlow`] state bits the entry takes on with this SYN/ACK'.
    #[inline(always)]
    pub const fn marks(self) -> u32 {
        match self {
            Self::Absorbed => BackendFlow::SYN_ACK_ABSORBED | BackendFlow::CONFIRMED,
            Self::RepeatToFrontend => {
                BackendFlow::SYN_ACK_REPEATED
                    | BackendFlow::SYN_ACK_ABSORBED
                    | BackendFlow::CONFIRMED
            }
            Self::ToFrontend | Self::OtherConnection => 0,
        }
    }
}

/// What a program does with a packet, with the counter ([`stat`]) it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to the stack (tcx: the next program, then the stack).
    Pass(u32),
    /// Dropped.
    Drop(u32),
}

/// Whether a segment to the service port is a SYN (a SYN', or a direct client's), which
/// the ingress hands to the SYN' program ([`admit_syn`]) rather than look up a flow.
#[inline(always)]
pub const fn is_syn(flags: u8) -> bool {
    flags & (SYN | ACK) == SYN
}

/// What the SYN' program found of a handoff option in a SYN to the service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffOptionCheck {
    /// No handoff option: a direct client's SYN.
    Absent,
    /// An options area that cannot be read or walked, or a handoff option running past
    /// it: the kernel's to judge, unless it carries data.
    Unreadable,
    /// The SYN' program was not reached (its slot empty, which the agent never leaves
    /// it while the ingress is attached): nothing was checked.
    Unchecked,
    /// A handoff option whose tag does not verify (forged, or copied from another
    /// connection).
    BadTag,
    /// A handoff option that is malformed.
    BadOption,
    /// A handoff option that verifies under the key, or the previous key during a
    /// rotation.
    Verified,
}

/// What becomes of a SYN to the service port ([`admit_syn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynAdmission {
    /// Passed up or dropped as it is.
    Verdict(Verdict),
    /// A SYN': the flow recorded ([`BackendFlow::new`]; kept if the entry is of the same
    /// connection, [`BackendFlow::is_same_connection`]), the option blanked, the SYN
    /// passed up ([`stat::IN_SYN_ACCEPTED`]). `with_data`: it carries the request, for
    /// the server's TCP Fast Open path ([`stat::IN_SYN_DATA_ACCEPTED`] too).
    Accept { with_data: bool },
}

impl SynAdmission {
    /// What the program returns: an admitted SYN passes up ([`stat::IN_SYN_ACCEPTED`])
    /// once its entry is recorded and its option blanked.
    #[inline(always)]
    pub const fn verdict(self) -> Verdict {
        match self {
            Self::Verdict(verdict) => verdict,
            Self::Accept { .. } => Verdict::Pass(stat::IN_SYN_ACCEPTED),
        }
    }
}

/// The SYN' program's decision on a SYN to the service port that carries `data_len`
/// bytes (docs/design.md, "Packet walk", step 5, and "The one-turn handoff"):
///
/// - a verified option admits the SYN, data or not;
/// - a bad tag or a malformed option is dropped;
/// - any other SYN passes as a direct client's, unless it carries data: with TCP Fast
///   Open's no-cookie mode (`tcp_fastopen` `0x200`, which one-turn handoffs need) the
///   server would answer a spoofed SYN with a response to its forged source, so only a
///   verified option lets data ride on a SYN ([`stat::IN_SYN_DATA_DROPPED`]). A real
///   TFO client retries without data when its SYN goes unanswered.
#[inline(always)]
pub const fn admit_syn(check: HandoffOptionCheck, data_len: u32) -> SynAdmission {
    let verdict = match check {
        HandoffOptionCheck::Verified => {
            return SynAdmission::Accept {
                with_data: data_len > 0,
            };
        }
        HandoffOptionCheck::BadTag => Verdict::Drop(stat::IN_SYN_BAD_TAG),
        HandoffOptionCheck::BadOption => Verdict::Drop(stat::IN_SYN_BAD_OPTION),
        _ if data_len > 0 => Verdict::Drop(stat::IN_SYN_DATA_DROPPED),
        HandoffOptionCheck::Absent => Verdict::Pass(stat::IN_SYN_PLAIN),
        HandoffOptionCheck::Unreadable => Verdict::Pass(stat::IN_MALFORMED),
        HandoffOptionCheck::Unchecked => Verdict::Pass(stat::IN_SYN_UNCHECKED),
    };
    SynAdmission::Verdict(verdict)
}

/// What the ingress does with a client segment to the service port that is not a SYN
/// ([`client_segment_fate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSegmentFate {
    /// Passed or dropped untouched.
    Verdict(Verdict),
    /// Translated into the back-end's terms (ack, SACK edges, TSecr), then passed
    /// ([`stat::IN_TRANSLATED`]), unless [`BackendFlow::drops`] its CE mark.
    Translate,
}

/// The ingress's decision on a client segment (not a SYN, [`is_syn`]) with TCP flags
/// `flags` by its flow's entry, `None` if it has none: a segment of no handed-off flow
/// passes untouched (a direct client's); one of a flow whose SYN/ACK' has not left is
/// dropped, since there is nothing to translate it with (the front-end retransmits),
/// except a RST without ACK, which has nothing to translate: the front-end's reset of a
/// SYN' it gave up, or whose handoff in the kernel its core refused, sent as soon as it
/// knows, often before the server has answered. Passed, it meets the server's own check
/// of its sequence number (RFC 5961 §3.2); dropped, it left the server holding the
/// request and answering a client no one forwards for. Any other is translated.
#[inline(always)]
pub const fn client_segment_fate(flow: Option<&BackendFlow>, flags: u8) -> ClientSegmentFate {
    match flow {
        None => ClientSegmentFate::Verdict(Verdict::Pass(stat::IN_NOT_HANDED_OFF)),
        Some(flow) if flow.translation.is_awaiting_syn_ack() => {
            ClientSegmentFate::Verdict(if flags & RST != 0 && flags & ACK == 0 {
                Verdict::Pass(stat::IN_RESET_BEFORE_SYN_ACK)
            } else {
                Verdict::Drop(stat::IN_BEFORE_SYN_ACK)
            })
        }
        Some(_) => ClientSegmentFate::Translate,
    }
}

/// What the egress does with a server segment of a handed-off flow that is not a
/// SYN/ACK ([`server_segment_fate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSegmentFate {
    /// Dropped untranslated.
    Drop(u32),
    /// A RST before the SYN/ACK' has left: the server refused the connection before the
    /// handoff finished, and the front-end must learn of it to try another back-end. Sent
    /// to the front-end from the VIP's address and port, its numbers untranslated
    /// ([`stat::OUT_CONTROL_TO_FRONTEND`]).
    ControlToFrontend,
    /// Translated into the front-end's terms and sent to the client
    /// ([`stat::OUT_TRANSLATED`]); a copy may go to the front-end ([`frontend_copy`]).
    Translate,
}

/// The egress's decision on a server segment other than a SYN/ACK whose TCP flags are
/// `flags`, by its flow's entry: translated once the SYN/ACK' has given the back-end's
/// terms; before that only a RST has anywhere to go (the front-end).
#[inline(always)]
pub const fn server_segment_fate(flow: &BackendFlow, flags: u8) -> ServerSegmentFate {
    if !flow.translation.is_awaiting_syn_ack() {
        ServerSegmentFate::Translate
    } else if flags & RST != 0 {
        ServerSegmentFate::ControlToFrontend
    } else {
        ServerSegmentFate::Drop(stat::OUT_BEFORE_SYN_ACK)
    }
}

/// Whether a translated server segment is copied to the front-end, and what it does to
/// the entry ([`frontend_copy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendCopy {
    /// The counter of the copy ([`stat::OUT_CONTROL_TO_FRONTEND`],
    /// [`stat::OUT_COPY_TO_FRONTEND`]), or `None`: no copy.
    pub counter: Option<u32>,
    /// The segment carries the server's first response data: the entry becomes
    /// [`BackendFlow::CONFIRMED`] (its acknowledgement of the whole request is in that
    /// segment, and the copy takes it to the front-end).
    pub confirms: bool,
}

/// Which translated server segments of a flow in state `state` go to the front-end as a
/// copy too (docs/design.md, "Packet walk", steps 7 and 9). The one place that decides
/// it, for the egress and the simulation alike:
///
/// - every segment until the server has sent response data (the flow unconfirmed), FIN
///   included ([`stat::OUT_COPY_TO_FRONTEND`]): a three-turn handoff is confirmed by the
///   server's acknowledgement of the request, which rides on whatever it sends first;
/// - a RST always ([`stat::OUT_CONTROL_TO_FRONTEND`]): a server's abort is rare, and the
///   client it reaches goes quiet without a FIN, so without the copy the front-end would
///   keep the flow until its idle timeout (an hour) rather than its grace period;
/// - nothing else, a FIN included: the front-end tracks the close from what it sees of
///   the client (its FIN or RST, then its silence for the grace period) and needs
///   nothing of the server's; a copy per connection would cost its slow path a receive.
#[inline(always)]
pub const fn frontend_copy(flags: u8, payload_len: u32, state: u32) -> FrontendCopy {
    let confirmed = state & BackendFlow::CONFIRMED != 0;
    FrontendCopy {
        counter: if flags & RST != 0 {
            Some(stat::OUT_CONTROL_TO_FRONTEND)
        } else if !confirmed {
            Some(stat::OUT_COPY_TO_FRONTEND)
        } else {
            None
        },
        confirms: !confirmed && payload_len > 0,
    }
}

/// The ECN field of the IPv4 TOS byte, and its Congestion Experienced codepoint
/// (RFC 3168 §5).
const ECN_MASK: u8 = 0b11;
const ECN_CE: u8 = 0b11;

/// Whether an IPv4 TOS byte's ECN field says Congestion Experienced (RFC 3168 §5).
#[inline(always)]
pub const fn ce(tos: u8) -> bool {
    tos & ECN_MASK == ECN_CE
}

/// The one entry of the configuration map, written by `baton backend` before it attaches
/// the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// The key the front-end signs handoff options with.
    pub handoff_key: SipKey,
    /// The virtual service the back-end answers as.
    pub vip_addr_be: u32,
    pub vip_port_be: u16,
    /// The back-end's own port that handed-off connections arrive on.
    pub service_port_be: u16,
    /// Where SYN/ACK's and control copies go: the front-end's MAC on the LAN.
    pub frontend_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// [`BackendConfig::ENABLED`], [`BackendConfig::PREVIOUS_KEY`],
    /// [`BackendConfig::STAMPS`].
    pub flags: u32,
    pub _pad2: u32,
    /// During a key rotation, the key being retired: options it signs are still
    /// accepted (counted apart) while [`BackendConfig::PREVIOUS_KEY`] is set, so that
    /// front-ends can move to the new key one by one.
    pub previous_handoff_key: SipKey,
}

impl BackendConfig {
    /// Without it the programs pass everything untouched.
    pub const ENABLED: u32 = 1 << 0;
    /// `previous_handoff_key` is in use.
    pub const PREVIOUS_KEY: u32 = 1 << 1;
    /// Stamp the back-end's identity in the TSval of every segment sent to a client
    /// ([`crate::stamp`]), under `handoff_key`, so that any front-end can forward the
    /// flow without an entry for it.
    pub const STAMPS: u32 = 1 << 2;
    /// Complete the server's handshake of a one-turn handoff locally
    /// ([`BackendFlow::completes_handshake`]); `complete_handshake` in the agent's
    /// configuration, off by default.
    pub const COMPLETE_HANDSHAKE: u32 = 1 << 3;
}

/// The IPv6 part of the configuration, in a map of its own (`BACKEND_CONFIG_V6`) so that
/// [`BackendConfig`] keeps its pinned layout: the VIP's IPv6 address the back-end answers
/// IPv6 clients as. The port, key, service port and front-end MAC are
/// [`BackendConfig`]'s, shared by both families. Without [`BackendConfigV6::ENABLED`]
/// the programs pass every IPv6 packet untouched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendConfigV6 {
    pub vip_addr: [u8; 16],
    /// [`BackendConfigV6::ENABLED`].
    pub flags: u32,
    pub _pad: u32,
}

impl BackendConfigV6 {
    /// `vip_addr` holds the VIP's IPv6 address: the IPv6 path is on.
    pub const ENABLED: u32 = 1 << 0;
}

/// What the programs do with the first fragment of an IPv6 TCP segment to (ingress) or
/// from (egress) the service port, `held` telling whether its flow is a handed-off one:
/// the module translates no fragment (the TCP header is in this one, but the options and
/// the checksum's data are spread over all), so one of a handed-off flow is dropped and
/// counted (`stat`: [`stat::IN_IPV6_FRAGMENT`] or [`stat::OUT_IPV6_FRAGMENT`]), which TCP
/// repairs as a loss; Linux's TCP, doing path MTU discovery, never sends one. Any other
/// fragment, and a later fragment (whose ports nothing can read), passes untouched
/// (`None`, uncounted: not the module's), as do packets the extension-header walk refuses
/// (AH, ESP, a routing header with segments left, unknown or too many headers).
#[inline(always)]
pub const fn ipv6_fragment_fate(held: bool, stat: u32) -> Option<Verdict> {
    if held {
        Some(Verdict::Drop(stat))
    } else {
        None
    }
}

/// Indexes of the per-CPU counter array: one per outcome of the programs, so that every
/// packet they touch or refuse is accounted for.
pub mod stat {
    /// A SYN' with a valid handoff option: flow recorded, option blanked, passed up.
    pub const IN_SYN_ACCEPTED: u32 = 0;
    /// A SYN without a handoff option: a direct client, passed untouched.
    pub const IN_SYN_PLAIN: u32 = 1;
    /// A handoff option whose tag does not verify (forged, or copied from another
    /// connection): dropped.
    pub const IN_SYN_BAD_TAG: u32 = 2;
    /// A handoff option that is truncated or malformed: dropped.
    pub const IN_SYN_BAD_OPTION: u32 = 3;
    /// A client segment of a handed-off flow, translated (ack, SACK, TSecr).
    pub const IN_TRANSLATED: u32 = 4;
    /// A client segment for a flow whose SYN/ACK' has not left yet: dropped (the
    /// front-end retransmits).
    pub const IN_BEFORE_SYN_ACK: u32 = 5;
    /// A segment to the service port of no handed-off flow: passed untouched.
    pub const IN_NOT_HANDED_OFF: u32 = 6;
    /// An unreadable or malformed IPv4/TCP header or options area: passed untouched for
    /// the kernel to judge, or dropped when it carried a handoff option.
    pub const IN_MALFORMED: u32 = 7;
    /// The flow table refused an insert: the SYN' is dropped.
    pub const IN_FLOW_TABLE_FULL: u32 = 8;
    /// B's SYN/ACK', turned into the front-end's terms and sent to the front-end.
    pub const OUT_SYN_ACK_TO_FRONTEND: u32 = 9;
    /// A back-end segment of a handed-off flow, translated and sent to the client.
    pub const OUT_TRANSLATED: u32 = 10;
    /// A copy sent to the front-end while the handoff is unconfirmed.
    pub const OUT_COPY_TO_FRONTEND: u32 = 11;
    /// A RST copied to the front-end (of a translated flow, or before the SYN/ACK': the
    /// server refused the SYN'). FINs are not copied once a flow is confirmed
    /// ([`super::frontend_copy`]; an unconfirmed one counts as
    /// [`OUT_COPY_TO_FRONTEND`]); builds before that counted them here.
    pub const OUT_CONTROL_TO_FRONTEND: u32 = 12;
    /// A back-end segment of no handed-off flow: passed untouched.
    pub const OUT_NOT_HANDED_OFF: u32 = 13;
    /// A back-end segment for a flow still awaiting its SYN/ACK' that is not a RST:
    /// dropped.
    pub const OUT_BEFORE_SYN_ACK: u32 = 14;
    /// An unreadable or malformed header on egress: passed untouched.
    pub const OUT_MALFORMED: u32 = 15;
    /// A kernel helper failed mid-rewrite: the segment is dropped rather than sent
    /// half-translated; TCP retransmits it.
    pub const REWRITE_FAILED: u32 = 16;
    /// Of [`IN_SYN_ACCEPTED`], the SYN's whose option verified only with the previous
    /// key (a key rotation under way): once it stops growing, every front-end has the
    /// new key and the previous one can go.
    pub const IN_SYN_PREVIOUS_KEY: u32 = 17;
    /// A SYN/ACK that answers another SYN than the entry's SYN': the server accepted a
    /// new connection on a handed-off connection's ports (a client reaching the
    /// back-end's own address from a port it used through the VIP before). The stale
    /// entry is removed and the segment passed untouched, so the new connection is the
    /// client's own and not taken for the old one.
    pub const OUT_STALE_FLOW_REMOVED: u32 = 18;
    /// A client segment marked CE on a flow whose server refused the ECN the front-end
    /// granted the client: dropped, so that the client sees the congestion as a loss
    /// ([`super::BackendFlow::drops`]).
    pub const IN_CE_DROPPED: u32 = 19;
    /// A SYN the ingress could not hand to its SYN' program (the slot
    /// [`super::ingress_program::SYN`] empty, which the agent never leaves it while the
    /// ingress is attached): passed untouched and unverified, no entry made. A SYN' so
    /// passed draws the server's SYN/ACK straight to the client, which resets it, and the
    /// front-end tries another back-end; a direct client is served as ever.
    pub const IN_SYN_UNCHECKED: u32 = 20;
    /// A SYN carrying data without a handoff option that verifies: dropped. With TCP
    /// Fast Open's no-cookie mode (`tcp_fastopen` `0x200`, which one-turn handoffs need)
    /// the server would otherwise answer any spoofed SYN with a response to its forged
    /// source. A real TFO client retries without data when its SYN goes unanswered.
    pub const IN_SYN_DATA_DROPPED: u32 = 21;
    /// Of [`IN_SYN_ACCEPTED`], the SYN's that carry the request (a one-turn handoff).
    pub const IN_SYN_DATA_ACCEPTED: u32 = 22;
    /// A SYN/ACK' that acknowledges the SYN''s data: its translation recorded, the
    /// segment dropped (the front-end needs it not; the client must never see it).
    pub const OUT_SYN_ACK_ABSORBED: u32 = 23;
    /// Never counted now: it counted the repeats of an absorbed SYN/ACK' after the
    /// first, which were dropped, until every repeat went to the front-end
    /// ([`super::SynAckFate::RepeatToFrontend`]). The slot stays so that the counter
    /// array keeps its size (pinned across upgrades) and later indexes their meaning.
    pub const OUT_SYN_ACK_REPEAT_DROPPED: u32 = 24;
    /// A retransmission of an absorbed SYN/ACK': sent to the front-end (also counted in
    /// `OUT_SYN_ACK_TO_FRONTEND`), the proof that the server has the request and its
    /// call for the client's ACK, which the front-end sends.
    pub const OUT_SYN_ACK_REPEAT_TO_FRONTEND: u32 = 25;
    /// An ICMP "fragmentation needed" (or ICMPv6 "packet too big") the front-end
    /// forwarded for a handed-off flow, its quote rewritten into the server's terms
    /// (`crate::icmp::quote_to_backend_v4`, `crate::icmpv6::quote_to_backend_v6`) and
    /// passed up: the kernel lowers the path MTU towards the client.
    pub const IN_ICMP_TRANSLATED: u32 = 26;
    /// An ICMP "fragmentation needed" (or ICMPv6 "packet too big") quoting a segment
    /// from the VIP of no flow in the table (or one still awaiting its SYN/ACK'): passed
    /// untouched; the kernel finds no socket for a quote from the VIP and drops it.
    pub const IN_ICMP_NOT_HANDED_OFF: u32 = 27;
    /// An ICMP "fragmentation needed" (or ICMPv6 "packet too big") whose quote is
    /// malformed or unreadable: passed untouched, for the kernel to judge as it would
    /// without the module.
    pub const IN_ICMP_MALFORMED: u32 = 28;
    /// An ICMP error the ingress could not hand to its ICMP program (the slot
    /// [`super::ingress_program::ICMP`], or [`super::ipv6_program::ICMP`] for an ICMPv6
    /// "packet too big", empty): passed untouched, untranslated.
    pub const IN_ICMP_UNCHECKED: u32 = 29;
    /// An absorbed SYN/ACK' of which the egress made the client's ACK and fed it to the
    /// ingress, completing the server's handshake
    /// ([`super::BackendFlow::completes_handshake`]). Its shortfall against
    /// [`OUT_SYN_ACK_ABSORBED`] (the clone refused, an entry of an older build) left
    /// those servers in SYN-RECV, as before.
    pub const OUT_HANDSHAKE_COMPLETED: u32 = 30;
    /// A SYN' repeated after the server's handshake was completed locally: answered with
    /// a SYN/ACK' to the front-end made from it ([`super::SynAckProof`]), the proof that
    /// this back-end has the request, and kept from the server.
    pub const IN_SYN_REPEAT_ANSWERED: u32 = 31;
    /// A client RST without ACK for a flow whose SYN/ACK' has not left (the front-end's
    /// reset of a SYN' it gave up or did not adopt): passed untouched, for the server's
    /// TCP to judge by its sequence number ([`super::client_segment_fate`]).
    pub const IN_RESET_BEFORE_SYN_ACK: u32 = 32;
    /// A probe (`crate::claim`) for a flow this back-end holds: turned into a claim,
    /// the flow's stamp in its trailer, and sent back to the front-end that asked.
    pub const PROBE_CLAIMED: u32 = 33;
    /// A probe for a flow this back-end does not hold: dropped, never passed to the
    /// stack (whose reset would end the connection another back-end holds).
    pub const PROBE_NOT_HELD: u32 = 34;
    /// A probe that is malformed (`crate::claim::FrameError`) or could not be turned
    /// around (the ICMP slot of an older build, a failed rewrite): dropped.
    pub const PROBE_MALFORMED: u32 = 35;
    /// The first fragment of an IPv6 segment to the service port of a handed-off flow:
    /// dropped ([`super::ipv6_fragment_fate`]).
    pub const IN_IPV6_FRAGMENT: u32 = 36;
    /// The first fragment of an IPv6 segment from the service port of a handed-off flow:
    /// dropped ([`super::ipv6_fragment_fate`]).
    pub const OUT_IPV6_FRAGMENT: u32 = 37;
    /// Number of counters.
    pub const COUNT: u32 = 38;

    /// Counter names, by index, for logs and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "in_syn_accepted",
        "in_syn_plain",
        "in_syn_bad_tag",
        "in_syn_bad_option",
        "in_translated",
        "in_before_syn_ack",
        "in_not_handed_off",
        "in_malformed",
        "in_flow_table_full",
        "out_syn_ack_to_frontend",
        "out_translated",
        "out_copy_to_frontend",
        "out_control_to_frontend",
        "out_not_handed_off",
        "out_before_syn_ack",
        "out_malformed",
        "rewrite_failed",
        "in_syn_previous_key",
        "out_stale_flow_removed",
        "in_ce_dropped",
        "in_syn_unchecked",
        "in_syn_data_dropped",
        "in_syn_data_accepted",
        "out_syn_ack_absorbed",
        "out_syn_ack_repeat_dropped",
        "out_syn_ack_repeat_to_frontend",
        "in_icmp_translated",
        "in_icmp_not_handed_off",
        "in_icmp_malformed",
        "in_icmp_unchecked",
        "out_handshake_completed",
        "in_syn_repeat_answered",
        "in_reset_before_syn_ack",
        "probe_claimed",
        "probe_not_held",
        "probe_malformed",
        "in_ipv6_fragment",
        "out_ipv6_fragment",
    ];
}

/// Slots of the ingress's program array (`BACKEND_INGRESS_PROGRAMS`, a
/// `BPF_MAP_TYPE_PROG_ARRAY`): the programs `backend_ingress` hands a segment to by tail
/// call, each verified on its own, under its own million instructions, so that the
/// per-packet translation path and the once-per-connection SYN' path do not share one
/// budget (docs/design.md, "Packet walk", step 5).
///
/// The entry program passes nothing but the packet: a tail-called program parses it again
/// and reads the same maps. So an entry program of one build can call the program of
/// another for the same slot (as during a live upgrade, when the agent fills the pinned
/// array before it replaces the entry); a build that changes what a slot's program
/// expects must give it a new slot.
pub mod ingress_program {
    /// `backend_syn`: a SYN to the service port. Verifies a handoff option,
    /// records the flow and blanks the option; passes a plain SYN untouched.
    pub const SYN: u32 = 0;
    /// `backend_icmp`: an ICMPv4 "fragmentation needed" the front-end forwarded
    /// (`crate::icmp`). Rewrites its quote into the server's terms.
    pub const ICMP: u32 = 1;
    /// `backend_repeated_syn`: a SYN' of a flow whose server's handshake the egress
    /// completed ([`super::BackendFlow::answers_repeated_syn`]), reached only from
    /// `backend_syn` once its option has verified, with `isn_f` and `tsv_f` in the
    /// packet's control block (`cb[0]`, `cb[1]`): answered with a SYN/ACK' to the
    /// front-end ([`super::SynAckProof`]). Empty, the SYN' goes to the server as before
    /// (which answers it with a challenge ACK to the client).
    pub const REPEATED_SYN: u32 = 2;
    /// `backend_local_ack`: a SYN/ACK' the egress absorbs whose entry calls for the
    /// server's handshake to be completed ([`super::BackendFlow::completes_handshake`]),
    /// reached by tail call from `backend_egress` (the one slot an egress program uses;
    /// the array is the module's, whichever hook calls): makes the client's ACK
    /// ([`super::BackendFlow::local_ack`]), feeds it to the ingress and drops the
    /// SYN/ACK'. Empty, the SYN/ACK' is dropped alone and the server stays in SYN-RECV.
    pub const LOCAL_ACK: u32 = 3;
    /// Slots in the map: room for programs later builds add, without reshaping the
    /// pinned map (a prog array loses its programs when its last pin and descriptor go).
    pub const SLOTS: u32 = 4;
}

/// Slots of the IPv6 program array (`BACKEND_V6_PROGRAMS`, a map of its own so that the
/// pinned [`ingress_program`] array keeps its shape): the IPv6 paths, each a program of
/// its own reached by tail call, so that each has its own verifier budget (the IPv4
/// ingress and egress have no room for a second family inline) and IPv4 pays nothing for
/// them. Like [`ingress_program`], an entry program passes nothing but the packet.
pub mod ipv6_program {
    /// `backend_ingress_v6`: an IPv6 frame on ingress, from `backend_ingress`.
    pub const INGRESS: u32 = 0;
    /// `backend_syn_v6`: an IPv6 SYN to the service port, from `backend_ingress_v6`.
    pub const SYN: u32 = 1;
    /// `backend_egress_v6`: an IPv6 frame on egress, from `backend_egress`.
    pub const EGRESS: u32 = 2;
    /// `backend_icmp_v6`: an ICMPv6 "packet too big" right after the fixed header, from
    /// `backend_ingress_v6` (`crate::icmpv6`). Rewrites its quote into the server's
    /// terms, as [`super::ingress_program::ICMP`]'s program does ICMPv4's.
    pub const ICMP: u32 = 3;
    /// Slots in the map, with room for the IPv6 programs later builds add (the
    /// handshake completed here).
    pub const SLOTS: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers only, padding explicit (checked by the size tests).
    unsafe impl aya::Pod for super::BackendFlowKey {}
    unsafe impl aya::Pod for super::BackendFlow {}
    unsafe impl aya::Pod for super::BackendConfig {}
    unsafe impl aya::Pod for super::BackendFlowKeyV6 {}
    unsafe impl aya::Pod for super::BackendConfigV6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tcp_flag::FIN;
    use crate::translate::SynAckTerms;
    use core::mem::size_of;

    #[test]
    fn a_repeated_syn_prime_keeps_its_entry_and_a_new_connection_replaces_it() {
        let t = Translation::awaiting_syn_ack(
            SynAckTerms {
                isn: 7,
                tsval: 9,
                window_shift: 7,
            },
            0,
        );
        let entry = BackendFlow::new(t, 1000, 0x02, 0);
        assert!(entry.is_same_connection(1000), "the same SYN' again");
        assert!(
            !entry.is_same_connection(2000),
            "a new connection on the ports"
        );
        // An entry an older build wrote (no ISN) is always replaced, as before.
        assert!(!BackendFlow::new(t, 0, 0x02, 0).is_same_connection(0));
    }

    #[test]
    fn ce_marks_are_dropped_only_where_the_server_refused_the_ecn_granted() {
        const SYN: u8 = 0x02;
        const SYN_ACK: u8 = 0x12;
        let t = Translation::default();
        let granted = BackendFlow::new(t, 1, SYN | TCP_ECE | TCP_CWR, 0);
        assert_eq!(granted.state, BackendFlow::ECN_GRANTED);
        for (flags, what) in [(SYN, "plain"), (SYN | TCP_ECE, "ECE alone")] {
            assert_eq!(BackendFlow::new(t, 1, flags, 0).state, 0, "{what}");
        }
        let agreed = BackendFlow {
            state: granted.state_after_syn_ack(SYN_ACK | TCP_ECE),
            ..granted
        };
        let refused = BackendFlow {
            state: granted.state_after_syn_ack(SYN_ACK),
            ..granted
        };
        let never = BackendFlow::new(t, 1, SYN, 0);
        assert_eq!(never.state_after_syn_ack(SYN_ACK), 0, "nothing to refuse");
        assert_eq!(
            refused.state & BackendFlow::ECN_REFUSED,
            BackendFlow::ECN_REFUSED
        );
        // CE with any DSCP; Not-ECT, ECT(1) and ECT(0) never.
        for tos in [0b11, 0xbb] {
            assert!(refused.drops(tos));
            assert!(!agreed.drops(tos), "the server echoes it");
            assert!(!never.drops(tos), "a Not-ECT client is not marked");
        }
        for tos in [0b00, 0b01, 0b10, 0xb8] {
            assert!(!refused.drops(tos));
        }
    }

    #[test]
    fn a_syn_ack_acknowledging_the_syn_data_is_absorbed_and_one_acknowledging_the_syn_goes_on() {
        let t = Translation::default();
        let isn = u32::MAX - 10; // the acknowledgement wraps
        let one_turn = BackendFlow::new(t, isn, 0x02 | TCP_ECE | TCP_CWR, 57);
        assert_eq!(one_turn.syn_data_len(), 57);
        assert_eq!(one_turn.state & 0xffff, BackendFlow::ECN_GRANTED);
        let at = |n: u32| one_turn.syn_ack_fate(isn.wrapping_add(n));
        assert_eq!(at(1), SynAckFate::ToFrontend, "fast open refused: fallback");
        assert_eq!(at(58), SynAckFate::Absorbed, "the request taken whole");
        assert_eq!(at(59), SynAckFate::OtherConnection);
        assert_eq!(at(0), SynAckFate::OtherConnection);
        assert_eq!(at(0x8000_0000), SynAckFate::OtherConnection);
        // Without data, only the SYN can be acknowledged; older entries always go on.
        let plain = BackendFlow::new(t, isn, 0x02, 0);
        assert_eq!(
            plain.syn_ack_fate(isn.wrapping_add(1)),
            SynAckFate::ToFrontend
        );
        assert_eq!(
            plain.syn_ack_fate(isn.wrapping_add(2)),
            SynAckFate::OtherConnection
        );
        let old = BackendFlow::new(t, 0, 0x02, 0);
        assert_eq!(old.syn_ack_fate(12345), SynAckFate::ToFrontend);
        // The later state changes keep the length.
        let after = BackendFlow {
            state: one_turn.state_after_syn_ack(0x12) | BackendFlow::CONFIRMED,
            ..one_turn
        };
        assert_eq!(after.syn_data_len(), 57);
        assert!(after.drops(0b11), "ECN refused");
    }

    #[test]
    fn every_repeat_of_an_absorbed_syn_ack_goes_to_the_front_end() {
        let isn = 4000;
        let mut flow = BackendFlow::new(Translation::default(), isn, 0x02, 57);
        let request_acked = isn.wrapping_add(58);
        // (fate, whether the SYN/ACK' stays here), for the server's first SYN/ACK' and
        // its six timer repeats: each repeat is the server asking for the client's ACK,
        // which only the front-end can send, so none may be lost on the back-end.
        let walk = [(SynAckFate::Absorbed, true)]
            .into_iter()
            .chain([(SynAckFate::RepeatToFrontend, false); 6]);
        for (i, (fate, stays)) in walk.enumerate() {
            assert_eq!(flow.syn_ack_fate(request_acked), fate, "SYN/ACK' {i}");
            flow.state |= fate.marks();
            assert_eq!(
                BackendFlow::keeps_syn_ack(flow.state),
                stays,
                "SYN/ACK' {i}"
            );
            assert!(flow.is_confirmed(), "nothing of the answer is copied");
        }
        assert_eq!(flow.syn_data_len(), 57, "the marks keep the length");
        // One that acknowledges only the SYN, or answers another SYN, is told apart
        // whatever the marks.
        assert_eq!(
            flow.syn_ack_fate(isn.wrapping_add(1)),
            SynAckFate::ToFrontend
        );
        assert_eq!(
            flow.syn_ack_fate(isn.wrapping_add(59)),
            SynAckFate::OtherConnection
        );
        for fate in [SynAckFate::ToFrontend, SynAckFate::OtherConnection] {
            assert_eq!(fate.marks(), 0, "{fate:?} leaves the entry as it is");
        }
    }

    #[test]
    fn only_the_first_syn_ack_acknowledging_the_request_completes_the_handshake() {
        let isn = 4000;
        let front = SynAckTerms {
            isn: 7000,
            tsval: 50_000,
            window_shift: 7,
        };
        let t =
            Translation::awaiting_syn_ack(front, Translation::TIMESTAMPS).with_client_window(502);
        let mut flow = BackendFlow::new(t, isn, 0x02, 57);
        let request_acked = isn.wrapping_add(58);
        flow.translation = flow.translation.with_backend(SynAckTerms {
            isn: 3000,
            tsval: 20_000,
            window_shift: 9,
        });
        assert_eq!(flow.translation.client_window(), 502, "kept by the terms");
        let mut made = 0;
        for i in 0..4 {
            let fate = flow.syn_ack_fate(request_acked);
            flow.state |= fate.marks();
            if BackendFlow::completes_handshake(
                BackendConfig::COMPLETE_HANDSHAKE,
                flow.state,
                flow.translation,
            ) {
                made += 1;
                flow.state |= BackendFlow::HANDSHAKE_COMPLETED;
            }
            assert_eq!(made, 1, "SYN/ACK' {i}");
            assert!(flow.answers_repeated_syn());
        }
        // The ACK, in the client's terms: the ingress takes it back to the server's.
        let ack = flow.local_ack(SynAckSeen {
            seq: 3000,
            ack: request_acked,
            tsval: 20_000,
            tsecr: 900,
        });
        assert_eq!(
            ack,
            LocalAck {
                seq: request_acked,
                ack: 7001,
                window: 502,
                tsval: 900,
                tsecr: 50_000,
            }
        );
        assert_eq!(flow.translation.ack_to_backend(ack.ack), 3001);
        assert_eq!(flow.translation.tsecr_to_backend(ack.tsecr), 20_000);
        // The stamp leaves the echo alone: the server must get its own TSval back.
        let stamped = BackendFlow {
            translation: flow.translation.with_stamp(0x1234),
            ..flow
        };
        assert_eq!(
            stamped
                .local_ack(SynAckSeen {
                    tsval: 20_000,
                    ..SynAckSeen::default()
                })
                .tsecr,
            50_000
        );
        // Without a window (an entry of an older build) the server stays in SYN-RECV.
        let old = BackendFlow::new(t.with_client_window(0), isn, 0x02, 57);
        let state = old.state | SynAckFate::Absorbed.marks();
        assert!(!BackendFlow::completes_handshake(
            BackendConfig::COMPLETE_HANDSHAKE,
            state,
            old.translation
        ));
        // Nor without the agent's setting.
        let absorbed =
            flow.state & !BackendFlow::SYN_ACK_REPEATED & !BackendFlow::HANDSHAKE_COMPLETED;
        assert!(!BackendFlow::completes_handshake(
            0,
            absorbed,
            flow.translation
        ));
        assert!(BackendFlow::completes_handshake(
            BackendConfig::COMPLETE_HANDSHAKE,
            absorbed,
            flow.translation
        ));
        // Before the completion a repeated SYN' goes to the server.
        assert!(!old.answers_repeated_syn());
    }

    #[test]
    fn the_client_window_survives_the_translation_flags() {
        let t = Translation::awaiting_syn_ack(SynAckTerms::default(), Translation::SACK)
            .with_client_window(0xffff);
        assert!(t.has_sack() && !t.has_timestamps() && t.is_awaiting_syn_ack());
        assert_eq!(t.with_client_window(3).client_window(), 3);
        assert_eq!(crate::translate::client_ack_window(64_256, Some(7)), 502);
        assert_eq!(crate::translate::client_ack_window(65_535, Some(7)), 511);
        assert_eq!(
            crate::translate::client_ack_window(65_535, Some(20)),
            3,
            "14 at most"
        );
        assert_eq!(crate::translate::client_ack_window(8_000, None), 8_000);
    }

    #[test]
    fn a_syn_ack_proof_is_made_of_the_repeated_syn_prime() {
        use crate::handoff_option::{HandoffBinding, HandoffOption};
        use crate::translate::ones_complement_sum;
        let (client, backend, vip) = ([198, 19, 0, 10], [198, 18, 1, 11], [198, 18, 0, 100]);
        let isn_c = u32::MAX - 3; // the acknowledgement wraps
        let option = HandoffOption::new(7000, 50_000, 7, HandoffOption::TIMESTAMPS).encode(
            &SipKey::from_bytes([7; 16]),
            &HandoffBinding {
                client_ip: client,
                client_port: 40_000,
                backend_ip: backend,
                backend_port: 8080,
                client_isn: isn_c,
            },
        );
        // IPv4, then TCP with MSS, SACK-permitted, timestamps (TSval 900), NOP, window
        // scale 7 and the handoff option: 40 bytes of options.
        let mut headers = [0u8; SYN_ACK_PROOF_ROOM];
        headers[..20].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 19, 0, 10, 198, 18, 1, 11,
        ]);
        headers[20..22].copy_from_slice(&40_000u16.to_be_bytes());
        headers[22..24].copy_from_slice(&8080u16.to_be_bytes());
        headers[24..28].copy_from_slice(&isn_c.to_be_bytes());
        headers[32] = 15 << 4;
        headers[33] = SYN;
        headers[34..36].copy_from_slice(&64_256u16.to_be_bytes());
        headers[38] = 0xff; // an urgent pointer left over
        headers[40..60].copy_from_slice(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 3, 132, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        headers[60..80].copy_from_slice(&option);
        let proof = SynAckProof {
            isn_f: 7000,
            tsv_f: 50_000,
            request_len: 93,
            vip_addr: vip,
            vip_port: 80u16.to_be_bytes(),
        };
        assert_eq!(
            proof.write(&mut headers.clone(), 56),
            None,
            "another layout"
        );
        let mut no_option = headers;
        no_option[60] = NOP;
        assert_eq!(proof.write(&mut no_option, 60), None, "no handoff option");
        assert_eq!(proof.write(&mut headers, 60), Some(80));
        assert_eq!(!ones_complement_sum(&headers[..20]), 0, "IPv4 checksum");
        let pseudo = tcp_ipv4_pseudo_header_sum(vip, client, 60);
        assert_eq!(
            !ones_complement_add(pseudo, ones_complement_sum(&headers[20..80])),
            0,
            "TCP checksum"
        );
        assert_eq!(&headers[2..4], &80u16.to_be_bytes());
        assert_eq!(
            (&headers[12..16], &headers[16..20]),
            (&vip[..], &client[..])
        );
        assert_eq!(&headers[20..22], &80u16.to_be_bytes());
        assert_eq!(&headers[22..24], &40_000u16.to_be_bytes());
        assert_eq!(&headers[24..28], &7000u32.to_be_bytes());
        assert_eq!(
            &headers[28..32],
            &90u32.to_be_bytes(),
            "isn_c + 1 + 93, wrapped"
        );
        assert_eq!((headers[33], &headers[38..40]), (SYN | ACK, &[0u8, 0][..]));
        assert_eq!(&headers[48..52], &50_000u32.to_be_bytes(), "TSval = tsv_f");
        assert_eq!(
            &headers[52..56],
            &900u32.to_be_bytes(),
            "TSecr = the SYN''s"
        );
        assert_eq!(&headers[60..80], &[NOP; 20], "the option blanked");
        assert_eq!(&headers[40..48], &[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
    }

    #[test]
    fn a_syn_is_admitted_by_its_option_and_data_only_with_a_verified_one() {
        use HandoffOptionCheck::*;
        use SynAdmission::{Accept, Verdict as V};
        let cases = [
            // (what the option check found, data length, admission)
            (Verified, 0, Accept { with_data: false }),
            (Verified, 57, Accept { with_data: true }),
            (BadTag, 0, V(Verdict::Drop(stat::IN_SYN_BAD_TAG))),
            (BadTag, 57, V(Verdict::Drop(stat::IN_SYN_BAD_TAG))),
            (BadOption, 0, V(Verdict::Drop(stat::IN_SYN_BAD_OPTION))),
            (BadOption, 57, V(Verdict::Drop(stat::IN_SYN_BAD_OPTION))),
            (Absent, 0, V(Verdict::Pass(stat::IN_SYN_PLAIN))),
            (Absent, 1, V(Verdict::Drop(stat::IN_SYN_DATA_DROPPED))),
            (Unreadable, 0, V(Verdict::Pass(stat::IN_MALFORMED))),
            (Unreadable, 57, V(Verdict::Drop(stat::IN_SYN_DATA_DROPPED))),
            (Unchecked, 0, V(Verdict::Pass(stat::IN_SYN_UNCHECKED))),
            (Unchecked, 57, V(Verdict::Drop(stat::IN_SYN_DATA_DROPPED))),
        ];
        for (check, len, admission) in cases {
            assert_eq!(
                admit_syn(check, len),
                admission,
                "{check:?} with {len} bytes"
            );
        }
        assert!(is_syn(SYN) && is_syn(SYN | TCP_ECE | TCP_CWR));
        assert!(!is_syn(SYN | ACK) && !is_syn(ACK) && !is_syn(FIN | ACK));
    }

    #[test]
    fn client_segments_are_translated_only_once_the_syn_ack_has_given_the_terms() {
        let terms = SynAckTerms {
            isn: 7,
            tsval: 9,
            window_shift: 7,
        };
        let awaiting = BackendFlow::new(Translation::awaiting_syn_ack(terms, 0), 1, SYN, 0);
        let complete = BackendFlow::new(Translation::new(terms, terms, 0), 1, SYN, 0);
        let pass = |s| ClientSegmentFate::Verdict(Verdict::Pass(s));
        let drop = |s| ClientSegmentFate::Verdict(Verdict::Drop(s));
        assert_eq!(
            client_segment_fate(None, ACK),
            pass(stat::IN_NOT_HANDED_OFF)
        );
        assert_eq!(
            client_segment_fate(Some(&awaiting), ACK),
            drop(stat::IN_BEFORE_SYN_ACK)
        );
        // A RST has nothing to translate, unless it acknowledges something.
        assert_eq!(
            client_segment_fate(Some(&awaiting), RST),
            pass(stat::IN_RESET_BEFORE_SYN_ACK)
        );
        assert_eq!(
            client_segment_fate(Some(&awaiting), RST | ACK),
            drop(stat::IN_BEFORE_SYN_ACK)
        );
        for flags in [ACK, RST, RST | ACK] {
            assert_eq!(
                client_segment_fate(Some(&complete), flags),
                ClientSegmentFate::Translate
            );
        }
        // The server's segments: before the SYN/ACK' only a RST goes anywhere.
        for (flags, fate) in [
            (ACK, ServerSegmentFate::Drop(stat::OUT_BEFORE_SYN_ACK)),
            (ACK | FIN, ServerSegmentFate::Drop(stat::OUT_BEFORE_SYN_ACK)),
            (RST, ServerSegmentFate::ControlToFrontend),
            (RST | ACK, ServerSegmentFate::ControlToFrontend),
        ] {
            assert_eq!(server_segment_fate(&awaiting, flags), fate, "{flags:#x}");
            assert_eq!(
                server_segment_fate(&complete, flags),
                ServerSegmentFate::Translate
            );
        }
    }

    #[test]
    fn the_front_end_gets_copies_until_the_answer_and_every_rst_but_no_fin_after() {
        const C: u32 = BackendFlow::CONFIRMED;
        let copy = |counter, confirms| FrontendCopy { counter, confirms };
        let to_front = Some(stat::OUT_COPY_TO_FRONTEND);
        let control = Some(stat::OUT_CONTROL_TO_FRONTEND);
        let cases = [
            // (flags, payload, state, copy)
            (ACK, 0, 0, copy(to_front, false)),
            (ACK, 100, 0, copy(to_front, true)),
            // Unconfirmed, a FIN goes as any segment does (the confirmation may ride on
            // it); confirmed, it goes to the client alone.
            (ACK | FIN, 100, 0, copy(to_front, true)),
            (ACK | FIN, 0, 0, copy(to_front, false)),
            (ACK, 0, C, copy(None, false)),
            (ACK, 100, C, copy(None, false)),
            (ACK | FIN, 0, C, copy(None, false)),
            (ACK | FIN, 100, C, copy(None, false)),
            (RST, 0, 0, copy(control, false)),
            (RST | ACK, 0, C, copy(control, false)),
            (RST | ACK | FIN, 0, C, copy(control, false)),
            // An absorbed SYN/ACK' confirms the flow: nothing but a RST.
            (
                ACK | FIN,
                0,
                C | BackendFlow::SYN_ACK_ABSORBED,
                copy(None, false),
            ),
            (
                ACK,
                100,
                C | BackendFlow::SYN_ACK_ABSORBED,
                copy(None, false),
            ),
        ];
        for (flags, payload, state, expected) in cases {
            assert_eq!(
                frontend_copy(flags, payload, state),
                expected,
                "flags {flags:#x}, {payload} bytes, state {state:#x}"
            );
        }
    }

    #[test]
    fn kernel_shared_layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<BackendFlowKey>(), 12);
        assert_eq!(size_of::<BackendFlow>(), 24);
        assert_eq!(size_of::<BackendConfig>(), 56);
        assert_eq!(size_of::<BackendFlowKeyV6>(), 36);
        assert_eq!(size_of::<BackendConfigV6>(), 24);
    }

    #[test]
    fn only_a_handed_off_flows_ipv6_fragment_is_dropped() {
        assert_eq!(
            ipv6_fragment_fate(true, stat::IN_IPV6_FRAGMENT),
            Some(Verdict::Drop(stat::IN_IPV6_FRAGMENT))
        );
        assert_eq!(ipv6_fragment_fate(false, stat::OUT_IPV6_FRAGMENT), None);
    }

    #[test]
    fn counter_names_are_unique() {
        for (i, a) in stat::NAMES.iter().enumerate() {
            assert!(!stat::NAMES[i + 1..].contains(a), "{a} twice");
        }
    }
}
