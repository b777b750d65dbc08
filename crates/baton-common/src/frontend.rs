//! The front-end fast path's maps (the patent's BIP_FE): the flow table, the
//! configuration and the counters that the XDP program (`frontend_forward`) shares with
//! `baton frontend`.
//!
//! `baton frontend` pins the three maps (and the program's XDP link) in bpffs, so they
//! outlive the daemon: a restarted daemon reopens them, finds the handed-off flows in
//! the flow table and takes them over. That is why a flow's value carries, beside what
//! the program needs, what the daemon's protocol core needs to go on tracking the
//! connection ([`FrontendFlow::client_isn`], [`FrontendFlow::close_state`]).

use crate::{
    icmp::QuotedSegment,
    ipv6::{Ipv6Address, csum_replace16},
    layout::tcp_flag::{ACK, FIN, RST},
    translate::{csum_replace2, csum_replace4},
};

/// Default number of flow-table entries: one per handed-off connection. An entry costs
/// the key and value (12 + 40 bytes, each rounded up to 8 by the kernel) plus its
/// per-element overhead, all preallocated: measured, `bpftool map show` reports memlock
/// 31,458,400 B for the default size, 120 B an entry.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;

/// Entries of the half-open map by default (`[tcp] half_open_entries`): the SYN options
/// of clients without timestamps whose handshake the program answered
/// (`crate::syncookie::HalfOpenSyn`), each until the client's first data segment takes
/// it, a round trip later. An LRU hash, so the oldest go first when it is full: at the
/// default, a client's entry outlives 65,536 newer SYNs without timestamps (a flood of
/// 1 million a second leaves it 65 ms). The kernel preallocates it all: a 12-byte key
/// and a 12-byte value, each rounded up to 8, and the element's overhead, measured by
/// `bpftool map show` at 6,292,352 B memlock, 96 B an entry.
pub const DEFAULT_HALF_OPEN_ENTRIES: u32 = 65_536;

/// Bytes of the ring (`BPF_MAP_TYPE_RINGBUF`) in which the program tells the daemon what
/// it forwarded that the protocol core must know of: one [`FlowNotice`] per segment,
/// 32 bytes with the ring's 8-byte header (rounded up to 8), so about 32,000 notices:
/// two per connection at most, over a second of connections at the top rate, time for a
/// restarted daemon to come and read them. A segment that finds the ring full goes up
/// to the slow path ([`stat::PASS_RING_FULL`]), which forwards it. A power of two, as the
/// kernel requires.
pub const NOTICE_RING_SIZE: u32 = 1 << 20;

/// What the program tells the daemon of a segment it forwarded (the ring above): which
/// flow, and what happened ([`FlowNotice::CLIENT_FIN`] or [`FlowNotice::CLIENT_RST`],
/// [`FlowNotice::BACKEND_ANSWERED`], one or both).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowNotice {
    pub key: FrontendFlowKey,
    pub what: u32,
    /// The client's ISN of the connection whose entry the segment was forwarded by
    /// ([`FrontendFlow::client_isn`]): with kernel dispatch two connections on the same
    /// ports can follow each other faster than the daemon reads, and a notice must be
    /// applied to the one it is of. Not in the notices of older builds (16 bytes).
    pub client_isn: u32,
}

impl FlowNotice {
    /// The length of a notice written by a build before [`FlowNotice::client_isn`]: the
    /// ring is pinned, and a daemon may find such notices left by the program it
    /// replaced.
    pub const LEN_WITHOUT_ISN: usize = 16;
}

impl FlowNotice {
    /// The client's FIN went to the back-end: the core tracks the close.
    pub const CLIENT_FIN: u32 = 1 << 0;
    /// A client segment acknowledged data past the front-end's SYN/ACK, which only the
    /// back-end can have sent, while the flow awaited that
    /// ([`FrontendFlow::AWAITING_ANSWER`]): the back-end has the request, and the core
    /// completes the handoff.
    pub const BACKEND_ANSWERED: u32 = 1 << 1;
    /// Retired: a program of an older build took in a back-end's copy of its FIN. The
    /// back-ends no longer copy their FINs and the close is tracked from the client's
    /// side, so no program writes it; the bit stays reserved because the ring is pinned
    /// and a daemon may find such a notice left by the program it replaced (it ignores
    /// it).
    pub const BACKEND_FIN: u32 = 1 << 2;
    /// The client's RST, at exactly the sequence number the connection expects
    /// ([`judge_client_segment`]), went to the back-end: the core starts the grace
    /// period.
    pub const CLIENT_RST: u32 = 1 << 3;
    /// A segment of a flow the table did not have, whose TSecr carried a valid stamp
    /// of a back-end of the service (`crate::stamp`): forwarded to it and its entry
    /// written, as for a flow handed off elsewhere. The daemon hands the flow to the
    /// core (as an adopted one), so that its close and idle time are tracked.
    pub const LEARNED: u32 = 1 << 4;
}

/// What a client segment of a handed-off connection does to the front-end's view of the
/// client's sequence space ([`judge_client_segment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSegmentVerdict {
    /// The client's next sequence number after the segment.
    pub client_next: u32,
    /// [`FlowNotice::CLIENT_FIN`] if the segment carries a FIN at exactly the expected
    /// sequence number, [`FlowNotice::CLIENT_RST`] for such a RST, else 0: the only
    /// closes the front-end acts on.
    pub close: u32,
    /// The segment carries a FIN or RST the front-end does not act on (it is forwarded
    /// all the same, for the back-end's TCP to judge).
    pub ignored_close: bool,
}

/// Judges a client segment of a handed-off connection against `client_next`, the
/// client's next sequence number as the front-end has seen it: the one arithmetic the
/// XDP program and the protocol core share, so that nobody off the path can end a
/// connection through the front-end with a segment a plain Linux server would ignore.
///
/// - A RST is acted on only at exactly `client_next` (RFC 5961 §3.2; RFC 9293
///   §3.10.7.4). Any other RST is forwarded unacted: the back-end's TCP, which knows the
///   window, drops it or answers a challenge ACK, and a real client answers that with
///   a RST at the right number.
/// - Data and FIN advance `client_next` only when the segment starts at or before it and
///   reaches past it (in order, or overlapping what was seen). A segment beyond a gap
///   does not: the front-end keeps no out-of-order map. A FIN is acted on only when it
///   sits at exactly `client_next` once the segment's data is counted (RFC 5961 §4's
///   reasoning applied to FIN: only the sender, or someone on its path, knows the
///   number).
///
/// A blind attacker must therefore guess the exact 32-bit number, as against Linux. The
/// price: a FIN arriving ahead of a client segment still in flight (reordering between
/// client and front-end) is forwarded but not acted on, so that connection is freed by
/// the idle timeout rather than its grace period.
///
/// `payload_len` excludes the FIN. `fin` and `rst` are the segment's flags.
#[inline(always)]
pub const fn judge_client_segment(
    client_next: u32,
    seq: u32,
    payload_len: u32,
    fin: bool,
    rst: bool,
) -> ClientSegmentVerdict {
    if rst {
        let exact = seq == client_next;
        return ClientSegmentVerdict {
            client_next,
            close: if exact { FlowNotice::CLIENT_RST } else { 0 },
            ignored_close: !exact,
        };
    }
    let data_end = seq.wrapping_add(payload_len);
    // In order: seq <= client_next <= data_end, in sequence-space order.
    let in_order = (client_next.wrapping_sub(seq) as i32) >= 0
        && (data_end.wrapping_sub(client_next) as i32) >= 0;
    if !in_order {
        return ClientSegmentVerdict {
            client_next,
            close: 0,
            ignored_close: fin,
        };
    }
    if fin {
        ClientSegmentVerdict {
            client_next: data_end.wrapping_add(1),
            close: FlowNotice::CLIENT_FIN,
            ignored_close: false,
        }
    } else {
        ClientSegmentVerdict {
            client_next: data_end,
            close: 0,
            ignored_close: false,
        }
    }
}

/// The header fields of a client segment that [`decide_client_segment`] reads, numeric
/// (`from_be_bytes` of the packet's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSegment {
    pub seq: u32,
    pub ack: u32,
    /// The TCP flags byte (`crate::layout::tcp_flag`).
    pub flags: u8,
    /// The payload's length, the FIN not counted.
    pub payload_len: u32,
    /// What its TSecr says of the back-end whose answer it acknowledges ([`Echo`]);
    /// read only while the flow awaits the answer.
    pub echo: Echo,
}

/// What a client segment's TSecr says of whose TSval it echoes (docs/design.md, "The
/// answer names its back-end"). A back-end module stamps its id into every TSval it
/// sends (`crate::stamp`), so the client's acknowledgement of an answer names the
/// back-end that sent it: with the back-ends completing their servers' handshakes, a
/// back-end given up (its answer late, the front-end's resets of it lost) can still
/// answer the client while the next one is tried, and its answer must not be taken for
/// the next one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// No timestamps, or the echo of a TSval without the stamp's mark: names no one.
    Unstamped,
    /// A stamp naming this back-end id (its MAC unchecked here: the core checks it).
    Stamp(u8),
    /// Options the fast path does not read (not the timestamps option first): the core
    /// judges.
    Unread,
}

impl Echo {
    /// The echo of a segment whose options area starts with `options` (at least the
    /// first [`crate::kernel_dispatch::LINUX_TIMESTAMPS_LEN`] bytes of it, or all of a
    /// shorter one): none; the timestamps option first, after two NOPs (Linux, the BSDs
    /// and Windows, SACK blocks after it) or without them (smaller stacks, smoltcp); or
    /// anything else.
    #[inline(always)]
    pub fn of_options(options: &[u8]) -> Self {
        if options.is_empty() {
            return Echo::Unstamped;
        }
        match options {
            [1, 1, 8, 10, _, _, _, _, a, b, c, d, ..] | [8, 10, _, _, _, _, a, b, c, d, ..] => {
                Self::of_tsecr(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            _ => Echo::Unread,
        }
    }

    /// The echo of a segment whose TSecr is `tsecr`.
    #[inline(always)]
    pub const fn of_tsecr(tsecr: u32) -> Self {
        match crate::stamp::stamp_of(tsecr) {
            Some(stamp) => Echo::Stamp(crate::stamp::id_of(stamp)),
            None => Echo::Unstamped,
        }
    }

    /// Whether an acknowledgement with this echo may be the answer of the back-end
    /// whose id is `backend_id`: unstamped (a client without timestamps, a back-end that
    /// does not stamp), or stamped with that id.
    #[inline(always)]
    pub const fn may_name(self, backend_id: u8) -> bool {
        match self {
            Echo::Unstamped => true,
            Echo::Stamp(id) => id == backend_id,
            Echo::Unread => false,
        }
    }
}

/// A flow awaiting the back-end's answer, as the fast path checks a proof of it: the
/// front-end's ISN (what the proof must acknowledge data past) and the id
/// (`crate::stamp::backend_id`) of the back-end the entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AwaitedAnswer {
    pub isn_f: u32,
    pub backend_id: u8,
}

/// What the fast path does with a client segment of a flow in its table, before any
/// check of the frame's checksum ([`decide_client_segment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSegmentDecision {
    /// The entry's `client_next` once the segment is on its way to the back-end:
    /// forwarded, held by the core, or passed up for the slow path to forward (a partial
    /// checksum, a full ring). Not for a segment the slow path will drop (a bad
    /// checksum, malformed).
    pub client_next: u32,
    /// The entry awaits the back-end's answer and the segment is no proof of one: up,
    /// for the core to hold until the handoff completes
    /// ([`stat::PASS_AWAITING_ANSWER`]); nothing below applies.
    pub hold: bool,
    /// What the core must be told as the segment is forwarded ([`FlowNotice`] bits:
    /// `CLIENT_FIN`, `CLIENT_RST`, `BACKEND_ANSWERED`); 0 for nothing. With
    /// `BACKEND_ANSWERED` the entry's [`FrontendFlow::AWAITING_ANSWER`] is cleared too.
    pub notice: u32,
    /// The counter ([`stat`]) of the segment once forwarded, or
    /// [`stat::PASS_AWAITING_ANSWER`] when held.
    pub counter: u32,
}

/// The fast path's decision on a client segment of a flow in its table: `client_next`
/// is the entry's, `awaiting_answer` its `isn_f` while it carries
/// [`FrontendFlow::AWAITING_ANSWER`]. The one decision the XDP program runs and the
/// simulation's model of it calls (docs/design.md, "Packet walk", steps 7 and 8, and
/// "Client FINs and RSTs"):
///
/// - the segment is judged against `client_next` ([`judge_client_segment`]): only a FIN
///   or RST at exactly the expected number is told to the core;
/// - while the entry awaits the answer, only a segment acknowledging data past
///   `isn_f + 1` ([`acknowledges_backend_data`]) whose echo may name the entry's
///   back-end ([`Echo::may_name`]) is forwarded, and told as the proof; any other is
///   held, counted towards `client_next` all the same (the core then tells whose answer
///   a stamp names);
/// - the counter names the most telling of what the segment did: an exact FIN, an exact
///   RST, the proof, a FIN or RST not acted on, else a plain forward.
///
/// The checksums, the ring's room and the rewrite are the caller's: a segment passed up
/// for one of them keeps the notice untold.
#[inline(always)]
pub const fn decide_client_segment(
    client_next: u32,
    awaiting_answer: Option<AwaitedAnswer>,
    segment: ClientSegment,
) -> ClientSegmentDecision {
    let fin = segment.flags & FIN != 0;
    let rst = segment.flags & RST != 0;
    let judged = judge_client_segment(client_next, segment.seq, segment.payload_len, fin, rst);
    let mut notice = judged.close;
    if let Some(awaited) = awaiting_answer {
        if segment.flags & ACK == 0
            || !acknowledges_backend_data(awaited.isn_f, segment.ack)
            || !segment.echo.may_name(awaited.backend_id)
        {
            return ClientSegmentDecision {
                client_next: judged.client_next,
                hold: true,
                notice: 0,
                counter: stat::PASS_AWAITING_ANSWER,
            };
        }
        notice |= FlowNotice::BACKEND_ANSWERED;
    }
    let counter = if notice & FlowNotice::CLIENT_FIN != 0 {
        stat::FORWARDED_FIN
    } else if notice & FlowNotice::CLIENT_RST != 0 {
        stat::FORWARDED_RST
    } else if notice & FlowNotice::BACKEND_ANSWERED != 0 {
        stat::FORWARDED_ANSWER
    } else if judged.ignored_close {
        if rst {
            stat::FORWARDED_RST_IGNORED
        } else {
            stat::FORWARDED_FIN_IGNORED
        }
    } else {
        stat::FORWARDED
    };
    ClientSegmentDecision {
        client_next: judged.client_next,
        hold: false,
        notice,
        counter,
    }
}

/// A handed-off connection as the front-end sees it: the client's address and port and
/// the virtual service it connected to, in network byte order exactly as they sit in
/// the packet, so the program copies them without swapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendFlowKey {
    pub client_addr_be: u32,
    pub vip_addr_be: u32,
    pub client_port_be: u16,
    pub vip_port_be: u16,
}

/// Where a handed-off connection's client packets go, and what a restarted daemon needs
/// to take the connection over (`baton_proto::frontend::Handover`).
///
/// Layout (40 bytes, no implicit padding, pinned by a test): back-end address (0..4),
/// port (4..6), MAC (6..12), `client_isn` (12..16), `close_state` (16..20), `isn_f`
/// (20..24), `client_next` (24..28), reserved (28..32), `last_seen_ns` (32..40). The
/// program reads the first three, `isn_f` and the [`FrontendFlow::AWAITING_ANSWER`]
/// bit of `close_state`, which it clears; it reads and writes `client_next` and writes
/// `last_seen_ns`. The rest is the daemon's alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendFlow {
    /// The back-end's address and port: the packet's new destination.
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    /// The back-end's MAC on the LAN: the frame's new destination.
    pub backend_mac: [u8; 6],
    /// The client's initial sequence number (host order). Not read by the program: a
    /// restarted daemon needs it to tell the connection's own SYN, repeated during the
    /// grace period after its close, from a new connection on the same 4-tuple.
    pub client_isn: u32,
    /// How far the connection's close has got, as the daemon last saw it: `CLIENT_FIN`,
    /// `CLIENT_RESET`, `BACKEND_RESET` (bits below; `BACKEND_FIN` only in entries of
    /// older builds). A restarted daemon resumes close tracking from it, so that a
    /// connection whose client's FIN (or a RST) the previous daemon saw still leaves the
    /// table after its grace period rather than at the idle timeout. Written by the daemon within a second of a change, and at its
    /// exit. Bit [`FrontendFlow::AWAITING_ANSWER`] is the program's cue, not a close
    /// state, and the only bit the program reads.
    pub close_state: u32,
    /// The front-end's initial sequence number as the client knows it (host order):
    /// while the flow awaits the back-end's answer, a client segment acknowledging data
    /// past `isn_f + 1` is the proof the program forwards on.
    pub isn_f: u32,
    /// The client's next sequence number as the front-end has seen it (host order):
    /// what a client FIN or RST must carry to be acted on ([`judge_client_segment`]).
    /// The daemon sets it when it takes the flow in (the end of what the client sent
    /// before the handoff), the program advances it with every in-order segment it
    /// forwards or passes up to be forwarded. The daemon's rewrites of a value keep the
    /// later of its own and the table's.
    pub client_next: u32,
    /// Zero; keeps `last_seen_ns` 8-byte aligned.
    pub reserved: u32,
    /// `CLOCK_MONOTONIC` at tick resolution (`bpf_ktime_get_coarse_ns`) of the last
    /// packet forwarded; 0 before the first. The daemon reads it to push back the connection's idle timeout. Written
    /// without atomics: CPUs racing only ever store "now", and any of them will do.
    pub last_seen_ns: u64,
}

impl FrontendFlow {
    /// [`FrontendFlow::close_state`]: the client's FIN has been seen.
    pub const CLIENT_FIN: u32 = 1 << 0;
    /// [`FrontendFlow::close_state`]: the back-end's FIN had been seen. Written only by
    /// daemons of older builds, when the back-ends copied their FINs; read by none (the
    /// close ends with the client's FIN). Reserved, since the table is pinned.
    pub const BACKEND_FIN: u32 = 1 << 1;
    /// [`FrontendFlow::close_state`]: the client reset the connection (grace period).
    pub const CLIENT_RESET: u32 = 1 << 2;
    /// [`FrontendFlow::close_state`]: the back-end reset the connection (grace period).
    pub const BACKEND_RESET: u32 = 1 << 3;
    /// In [`FrontendFlow::close_state`], set by the daemon when it takes a flow in at
    /// the request's going out, before the back-end has confirmed it: the program then
    /// forwards only a client segment acknowledging data past [`FrontendFlow::isn_f`]
    /// plus one (the back-end's answer has reached the client, so the back-end has the
    /// request), clears the bit and tells the daemon ([`FlowNotice::BACKEND_ANSWERED`]);
    /// everything else goes up, for the core to hold until the handoff completes.
    pub const AWAITING_ANSWER: u32 = 1 << 31;

    /// The close state a notice records (`FlowNotice::CLIENT_FIN` → [`Self::CLIENT_FIN`],
    /// `FlowNotice::CLIENT_RST` → [`Self::CLIENT_RESET`]; nothing else closes). The
    /// program ORs it into the entry as it sends the notice: the core reaches the same
    /// judgement from that notice (the same segment, at exactly the expected number), so
    /// the daemon need not write it back (a lookup and an update per connection, system
    /// calls both), and a SYN reusing the ports meets the closed entry at once.
    #[inline(always)]
    pub const fn close_state_noticed(notice: u32) -> u32 {
        let mut state = 0;
        if notice & FlowNotice::CLIENT_FIN != 0 {
            state |= Self::CLIENT_FIN;
        }
        if notice & FlowNotice::CLIENT_RST != 0 {
            state |= Self::CLIENT_RESET;
        }
        state
    }

    /// Whether a bare SYN with sequence number `syn_seq` on this flow's 4-tuple opens a
    /// new connection that may replace the flow: its client has closed (its FIN or RST
    /// was acted on at exactly the expected number, so no blind segment set this: RFC
    /// 5961), as the daemon recorded in the table, and the SYN is not the old
    /// connection's own (another ISN). A client that closed second reuses its port at
    /// once; the core's `time_wait_reused` is the same judgement.
    #[inline(always)]
    pub const fn replaced_by_syn(&self, syn_seq: u32) -> bool {
        self.close_state & (Self::CLIENT_FIN | Self::CLIENT_RESET) != 0
            && syn_seq != self.client_isn
    }
}

/// The one entry of the configuration map, written by `baton frontend` before it
/// attaches the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendConfig {
    /// The MAC of the interface the program is attached to: forwarded frames' source.
    pub interface_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// [`FrontendConfig::ENABLED`]; without it the program passes everything untouched.
    pub flags: u32,
}

impl FrontendConfig {
    pub const ENABLED: u32 = 1 << 0;
}

/// Most virtual services (VIP and port pairs) one front-end serves: the size of the
/// services map. One daemon and one program serve them all.
pub const MAX_SERVICES: u32 = 64;

/// A virtual service the front-end serves, the key of the services map: only packets
/// to one (client segments) are the program's.
/// Network byte order, as in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendService {
    pub vip_addr_be: u32,
    pub vip_port_be: u16,
    pub _pad: u16,
}

/// The IPv6 twin of [`FrontendFlowKey`] (docs/design.md, "IPv6: the plan"): the key of
/// the IPv6 flow table, a map of its own so that the pinned IPv4 table keeps its layout.
/// Addresses as the packet carries them; ports in network byte order, as in the IPv4
/// key. 36 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendFlowKeyV6 {
    pub client_addr: Ipv6Address,
    pub vip_addr: Ipv6Address,
    pub client_port_be: u16,
    pub vip_port_be: u16,
}

impl FrontendFlowKeyV6 {
    /// The key of the connection a "packet too big" quotes (`crate::icmpv6`): the quoted
    /// destination is the client, the quoted source the service, as
    /// `QuotedSegment::frontend_flow_key` is for IPv4.
    #[inline(always)]
    pub const fn of_quote(quote: &QuotedSegment<Ipv6Address>) -> Self {
        Self {
            client_addr: quote.client.addr,
            vip_addr: quote.vip.addr,
            client_port_be: u16::from_ne_bytes(quote.client.port.to_be_bytes()),
            vip_port_be: u16::from_ne_bytes(quote.vip.port.to_be_bytes()),
        }
    }
}

/// The IPv6 twin of [`FrontendFlow`]: the same fields, the same meaning and the same
/// close-state bits (`FrontendFlow::CLIENT_FIN`, ..., `FrontendFlow::AWAITING_ANSWER`),
/// with the back-end's 16-byte address.
///
/// Layout (48 bytes, no implicit padding, pinned by a test): back-end address (0..16),
/// port (16..18), MAC (18..24), `client_isn` (24..28), `close_state` (28..32), `isn_f`
/// (32..36), `client_next` (36..40), `last_seen_ns` (40..48).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendFlowV6 {
    pub backend_addr: Ipv6Address,
    pub backend_port_be: u16,
    pub backend_mac: [u8; 6],
    pub client_isn: u32,
    pub close_state: u32,
    pub isn_f: u32,
    pub client_next: u32,
    pub last_seen_ns: u64,
}

impl FrontendFlowV6 {
    /// The id its back-end is known by in stamps (`crate::stamp::backend_id`): the low 7
    /// bits of the address, its last byte's for IPv6 as for IPv4.
    #[inline(always)]
    pub const fn backend_id(&self) -> u8 {
        let a = &self.backend_addr;
        crate::stamp::backend_id([a[12], a[13], a[14], a[15]])
    }
}

/// The IPv6 twin of [`FrontendService`]: a VIP6 and port, or port 0 for "is this a VIP6
/// at all", the key of the IPv6 services map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendServiceV6 {
    pub vip_addr: Ipv6Address,
    pub vip_port_be: u16,
    pub _pad: u16,
}

/// The IPv6 twin of [`FlowNotice`], in a ring of its own (`FRONTEND_NOTICES_V6`): the
/// IPv4 ring's readers tell its records apart by length alone (16 or 20 bytes), so an
/// IPv6 record there would read as a wrong IPv4 notice to a daemon of an older build.
/// The `what` bits are [`FlowNotice`]'s. 44 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowNoticeV6 {
    pub key: FrontendFlowKeyV6,
    pub what: u32,
    pub client_isn: u32,
}

/// The slots of `FRONTEND_PROGRAMS`, the program array `frontend_forward` tail-calls.
pub mod frontend_program {
    /// `frontend_forward_v6`: an IPv6 frame (EtherType 0x86DD).
    pub const IPV6: u32 = 0;
    /// The array's size: room for more without a reshaped map.
    pub const SLOTS: u32 = 4;
}

/// Indexes of the per-CPU counter array: one per outcome, so that every packet to the
/// service that the program sees is accounted for. Packets not to VIP:port are passed
/// without a count (a parse and no map access).
pub mod stat {
    /// A client segment of a handed-off flow, rewritten towards its back-end and
    /// transmitted (`XDP_TX`).
    pub const FORWARDED: u32 = 0;
    /// A segment of no handed-off flow: passed to the slow path.
    pub const PASS_NO_FLOW: u32 = 1;
    /// SYN, or a FIN or RST of no handed-off flow: passed to the slow path, which tracks
    /// opens and closes.
    pub const PASS_CONTROL: u32 = 2;
    /// A segment with payload of a handed-off flow whose TCP checksum field holds the
    /// partial (pseudo-header) sum a `CHECKSUM_PARTIAL` sender leaves, not a complete
    /// checksum: passed to the slow path, which completes it and forwards it (see
    /// [`super::redirected_tcp_checksum`] and the module docs of
    /// `baton-ebpf/src/frontend.rs`). Zero behind a real wire, which carries complete
    /// checksums only.
    pub const PASS_PARTIAL_CHECKSUM: u32 = 3;
    /// An IPv4 header with options, or TCP after IPv6 extension headers (the TCP header
    /// then at no constant offset): passed to the slow path.
    pub const PASS_UNUSUAL_IP: u32 = 4;
    /// A truncated or malformed IPv4/IPv6/TCP header: passed for the kernel to judge.
    pub const PASS_MALFORMED: u32 = 5;
    /// A header-only segment whose TCP checksum is neither complete and right nor the
    /// partial (pseudo-header) sum an offloading sender leaves: passed to the slow path,
    /// which verifies and drops it, rather than forwarded with a laundered checksum.
    pub const PASS_BAD_CHECKSUM: u32 = 6;
    /// A SYN answered here with a cookie SYN/ACK (`XDP_TX`), while the protocol core
    /// asks for it (its half-open table is full: a flood; or always, with `[tcp]
    /// syns_in_xdp`); no state until the client's first data segment brings the cookie
    /// back to the slow path (`crate::syncookie`), but for a client without timestamps
    /// the half-open map's entry ([`HALF_OPEN_KEPT`]).
    pub const SYN_COOKIES_SENT: u32 = 7;
    /// A client FIN of a handed-off flow, rewritten and transmitted like any of its
    /// segments (`XDP_TX`) after a notice was written to the ring
    /// ([`super::NOTICE_RING_SIZE`]) for the daemon's protocol core. Not counted in
    /// [`FORWARDED`].
    pub const FORWARDED_FIN: u32 = 8;
    /// A segment that needed a notice passed up because the ring was full (no daemon
    /// has read it for a while): the slow path forwards it, or the client's
    /// retransmission reaches the next daemon.
    pub const PASS_RING_FULL: u32 = 9;
    /// A client segment of a flow awaiting its back-end's answer
    /// ([`super::FrontendFlow::AWAITING_ANSWER`]) that does not acknowledge any: passed
    /// to the slow path, which holds it until the handoff completes.
    pub const PASS_AWAITING_ANSWER: u32 = 10;
    /// A client segment (not a FIN) acknowledging the back-end's answer while its flow
    /// awaited it: forwarded, the flow's bit cleared and the daemon told
    /// ([`super::FlowNotice::BACKEND_ANSWERED`]). Not counted in [`FORWARDED`].
    pub const FORWARDED_ANSWER: u32 = 11;
    /// Retired: a back-end's copy of its FIN, taken in by a program of an older build.
    /// The back-ends no longer copy their FINs (the close is tracked from the client's
    /// side), and this program takes in nothing from a back-end: every copy goes up,
    /// uncounted. The slot keeps its index so that the counters after it keep theirs in
    /// the pinned map; it only ever shows what older programs counted.
    pub const BACKEND_FIN_NOTED: u32 = 12;
    /// A client FIN of a handed-off flow not at the sequence number the connection
    /// expects (`judge_client_segment`): forwarded for the back-end's TCP to judge, with
    /// no notice, so nothing changes on the front-end. A blind FIN, or one overtaking
    /// the client's last data.
    pub const FORWARDED_FIN_IGNORED: u32 = 13;
    /// A client RST of a handed-off flow at exactly the expected sequence number:
    /// forwarded after a notice ([`super::FlowNotice::CLIENT_RST`]); the core starts the
    /// grace period.
    pub const FORWARDED_RST: u32 = 14;
    /// A client RST of a handed-off flow at any other sequence number: forwarded with no
    /// notice (the back-end's TCP drops it or answers a challenge ACK, RFC 5961 §3.2).
    pub const FORWARDED_RST_IGNORED: u32 = 15;
    /// An IPv4 fragment to the service: dropped here (`XDP_DROP`). Clients of a TCP
    /// service do not fragment (Linux sets DF and follows the path MTU), the TCP header
    /// may be in another fragment, and the front-end reassembles nothing.
    pub const DROP_FRAGMENT: u32 = 16;
    /// The handshake's bare ACK of a connection whose SYN/ACK carried a cookie: the
    /// cookie checked here (`crate::syncookie::check_cookie`) and the segment dropped
    /// (`XDP_DROP`). It carries nothing the front-end needs: the client's first data
    /// segment brings the cookie back again, and the core rebuilds the connection from
    /// that one. Counted only while cookies are engaged.
    pub const HANDSHAKE_ACK_ABSORBED: u32 = 17;
    /// Of the [`SYN_COOKIES_SENT`]: a SYN without timestamps whose SYN/ACK agreed to
    /// window scaling, SACK or ECN, its options kept in the half-open map
    /// (`crate::syncookie::HalfOpenSyn`) and the cookie marked so; the protocol core
    /// takes the entry at the client's first data segment.
    pub const HALF_OPEN_KEPT: u32 = 18;
    /// Of the [`SYN_COOKIES_SENT`]: a SYN without timestamps that offered window scaling,
    /// SACK or ECN (within the settings), answered without them because the half-open
    /// map is off (`[tcp] half_open_entries = 0`) or refused the entry: the cookie's own
    /// encoding, which keeps only the MSS.
    pub const SYN_ACK_WITHOUT_OPTIONS: u32 = 19;
    /// A client's request, its head whole in one segment after a cookie handshake,
    /// handed off by the program itself: the segment rewritten into the SYN' carrying
    /// it, and transmitted to the back-end the kernel's dispatch chose
    /// (`baton_common::kernel_dispatch`; docs/design.md, "Dispatch in the kernel").
    pub const HANDED_OFF_IN_KERNEL: u32 = 20;
    /// Such a request the program did not hand off (a rule the kernel cannot evaluate,
    /// a head over one segment, a client without timestamps whose options wait in the
    /// half-open map, no usable back-end, a full ring): passed to the slow path, which
    /// decides as it would without the kernel's dispatch. Each is counted once more under
    /// its reason (`crate::kernel_dispatch::reason`) in a map of its own.
    pub const PASS_REQUEST_TO_SLOW_PATH: u32 = 21;
    /// A bare SYN on the ports of a flow whose client has closed
    /// ([`super::FrontendFlow::replaced_by_syn`]), with kernel dispatch on and SYNs
    /// answered here: the
    /// old flow's entry removed, and the SYN answered with a cookie like any other (also
    /// counted `syn_cookies_sent`), so that the new connection's request can be handed
    /// off in the kernel. The core frees the old connection when the new one's first
    /// segment or handoff reaches it.
    pub const CLOSED_FLOW_REPLACED: u32 = 22;
    /// A segment of a flow the table did not have whose TSecr named a back-end of the
    /// service with a valid stamp (`crate::stamp`): forwarded, and the flow learned
    /// (its entry written, [`super::FlowNotice::LEARNED`] told).
    pub const LEARNED_BY_STAMP: u32 = 23;
    /// A stamp whose MAC does not verify for the flow and the back-end it names (a
    /// client naming another back-end, or echoing a stamp on another flow): dropped,
    /// never forwarded or learned.
    pub const DROP_STAMP_FORGED: u32 = 24;
    /// A stamp naming a back-end id the front-end has no back-end for (one removed
    /// from the service, or ids shared by two): dropped.
    pub const DROP_STAMP_UNKNOWN_BACKEND: u32 = 25;
    /// An ICMP "fragmentation needed" to a VIP whose quote names a handed-off flow
    /// (`crate::icmp`): sent on unchanged to the flow's back-end, its destination and
    /// MACs rewritten as a client segment's (docs/design.md, "ICMP errors and path MTU").
    pub const FORWARDED_ICMP: u32 = 26;
    /// An ICMP "fragmentation needed" to a VIP quoting no flow in the table: dropped
    /// (no back-end to tell; the front-end's own stack has no socket for it either).
    pub const DROP_ICMP_NO_FLOW: u32 = 27;
    /// An ICMP "fragmentation needed" to a VIP that is malformed (truncated quote, a
    /// quote that is no IPv4, fragments, a quoted source other than the VIP;
    /// `crate::icmp::IcmpError`): dropped.
    pub const DROP_ICMP_MALFORMED: u32 = 28;
    /// A back-end's claim (`crate::claim`) of a flow the slow path probed for, whose
    /// stamp verified: the flow learned as by [`LEARNED_BY_STAMP`] and the probed
    /// segment forwarded to that back-end.
    pub const LEARNED_BY_CLAIM: u32 = 29;
    /// A claim whose stamp does not verify for the flow it carries (or carries none):
    /// dropped.
    pub const DROP_CLAIM_FORGED: u32 = 30;
    /// A claim naming a back-end id the stamp table has no back-end for: dropped.
    pub const DROP_CLAIM_UNKNOWN_BACKEND: u32 = 31;
    /// A claim that is malformed (`crate::claim::FrameError`), to a service this
    /// front-end does not have, or that could not be turned back into the segment:
    /// dropped.
    pub const DROP_CLAIM_MALFORMED: u32 = 32;
    /// An IPv6 fragment (a fragment header first after the fixed header and any
    /// extension headers crossed) to a VIP: dropped, as IPv4's are ([`DROP_FRAGMENT`]).
    pub const DROP_IPV6_FRAGMENT: u32 = 33;
    /// An IPv6 packet to a VIP with an Authentication Header or an Encapsulating Security
    /// Payload: IPsec, which Baton does not terminate. Dropped.
    pub const DROP_IPV6_IPSEC: u32 = 34;
    /// An IPv6 packet to a VIP with a routing header whose segments left is not zero: the
    /// VIP would be a waypoint and the TCP checksum covers the final destination. Dropped.
    pub const DROP_IPV6_ROUTING: u32 = 35;
    /// An IPv6 packet to a VIP with an extension header the walk does not cross
    /// (Mobility, HIP, Shim6, the experimental values), No Next Header, or a hop-by-hop
    /// header other than first (`crate::ipv6::walk_extension_headers`). Dropped.
    pub const DROP_IPV6_EXTENSION: u32 = 36;
    /// An IPv6 packet to a VIP with more extension headers than
    /// `crate::ipv6::MAX_EXTENSION_HEADERS` before its upper layer. Dropped.
    pub const DROP_IPV6_TOO_MANY_EXTENSIONS: u32 = 37;
    /// Number of counters.
    pub const COUNT: u32 = 38;

    /// Counter names, by index, for logs and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "forwarded",
        "pass_no_flow",
        "pass_control",
        "pass_partial_checksum",
        "pass_unusual_ip",
        "pass_malformed",
        "pass_bad_checksum",
        "syn_cookies_sent",
        "forwarded_fin",
        "pass_ring_full",
        "pass_awaiting_answer",
        "forwarded_answer",
        "backend_fin_noted",
        "forwarded_fin_ignored",
        "forwarded_rst",
        "forwarded_rst_ignored",
        "drop_fragment",
        "handshake_ack_absorbed",
        "half_open_kept",
        "syn_ack_without_options",
        "handed_off_in_kernel",
        "pass_request_to_slow_path",
        "closed_flow_replaced",
        "learned_by_stamp",
        "drop_stamp_forged",
        "drop_stamp_unknown_backend",
        "forwarded_icmp",
        "drop_icmp_no_flow",
        "drop_icmp_malformed",
        "learned_by_claim",
        "drop_claim_forged",
        "drop_claim_unknown_backend",
        "drop_claim_malformed",
        "drop_ipv6_fragment",
        "drop_ipv6_ipsec",
        "drop_ipv6_routing",
        "drop_ipv6_extension",
        "drop_ipv6_too_many_extensions",
    ];
}

/// Whether a client's acknowledgement number `ack` acknowledges data past the
/// front-end's SYN/ACK (sequence number `isn_f`), which only the back-end can have sent
/// after a handoff: the proof that the back-end has the request, for the protocol core
/// and the program alike ([`FrontendFlow::AWAITING_ANSWER`]). Sequence-space order
/// (RFC 9293 section 3.4): `ack` after `isn_f + 1`.
#[inline(always)]
pub const fn acknowledges_backend_data(isn_f: u32, ack: u32) -> bool {
    (ack.wrapping_sub(isn_f.wrapping_add(1)) as i32) > 0
}

/// The TCP checksum of a header-only IPv4 segment, computed whole: the one's-complement
/// sum of the pseudo-header (`pseudo`, from [`crate::translate::tcp_ipv4_pseudo_header_sum`]
/// or its eBPF equivalent) and of `header_sum`, the TCP header's words with the checksum
/// field taken as zero.
#[inline(always)]
pub const fn tcp_checksum(pseudo: u16, header_sum: u16) -> u16 {
    !crate::translate::ones_complement_add(pseudo, header_sum)
}

/// The TCP checksum of a client segment the fast path redirects from VIP:port (`from`) to
/// a back-end (`to`), given its checksum field `check` and `pseudo`, the pseudo-header
/// sum of the segment as it arrived ([`crate::translate::tcp_ipv4_pseudo_header_sum`]);
/// or `None` when `check` equals `pseudo`, the partial sum a `CHECKSUM_PARTIAL` sender
/// leaves for the device to complete, which a redirect must not forward (the module docs
/// of `baton-ebpf/src/frontend.rs` say why).
///
/// Any other field is taken as complete, as frames from a real wire are, and updated
/// incrementally for the new destination address and port (RFC 1624 equation 3,
/// [`csum_replace4`], [`csum_replace2`]), without reading the payload. The update keeps
/// a wrong checksum exactly as wrong, so a segment corrupted on its way still fails the
/// back-end's verification. A complete checksum equal to the pseudo-header sum (one in
/// 2^16) is mistaken for a partial one, which only sends that segment the slow way.
///
/// All values numeric (`from_be_bytes` of the packet's bytes).
#[inline(always)]
pub const fn redirected_tcp_checksum(
    check: u16,
    pseudo: u16,
    from: (u32, u16),
    to: (u32, u16),
) -> Option<u16> {
    if check == pseudo {
        return None;
    }
    let check = csum_replace4(check, from.0, to.0);
    if from.1 == to.1 {
        Some(check)
    } else {
        Some(csum_replace2(check, from.1, to.1))
    }
}

/// [`redirected_tcp_checksum`] for IPv6: `pseudo` is the arriving segment's IPv6
/// pseudo-header sum (`crate::ipv6::tcp_ipv6_pseudo_header_sum`), and the destination
/// address's change enters by [`csum_replace16`], RFC 1624's equation over its eight
/// words. IPv6 has no header checksum, so this is the rewrite's only checksum. `None`
/// for the partial sum a `CHECKSUM_PARTIAL` sender leaves (`tcp_v6_send_check`).
#[inline(always)]
pub const fn redirected_tcp_checksum_v6(
    check: u16,
    pseudo: u16,
    from: (&Ipv6Address, u16),
    to: (&Ipv6Address, u16),
) -> Option<u16> {
    if check == pseudo {
        return None;
    }
    let check = csum_replace16(check, from.0, to.0);
    if from.1 == to.1 {
        Some(check)
    } else {
        Some(csum_replace2(check, from.1, to.1))
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers only, padding explicit (checked by the size tests).
    unsafe impl aya::Pod for super::FrontendFlowKey {}
    unsafe impl aya::Pod for super::FrontendFlow {}
    unsafe impl aya::Pod for super::FrontendConfig {}
    unsafe impl aya::Pod for super::FrontendService {}
    unsafe impl aya::Pod for super::FlowNotice {}
    unsafe impl aya::Pod for super::FrontendFlowKeyV6 {}
    unsafe impl aya::Pod for super::FrontendFlowV6 {}
    unsafe impl aya::Pod for super::FrontendServiceV6 {}
    unsafe impl aya::Pod for super::FlowNoticeV6 {}
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_notice_records_the_close_the_core_will_judge_from_it() {
        assert_eq!(
            FrontendFlow::close_state_noticed(FlowNotice::CLIENT_FIN),
            FrontendFlow::CLIENT_FIN
        );
        assert_eq!(
            FrontendFlow::close_state_noticed(FlowNotice::CLIENT_RST),
            FrontendFlow::CLIENT_RESET
        );
        assert_eq!(
            FrontendFlow::close_state_noticed(
                FlowNotice::CLIENT_FIN | FlowNotice::BACKEND_ANSWERED
            ),
            FrontendFlow::CLIENT_FIN
        );
        assert_eq!(
            FrontendFlow::close_state_noticed(FlowNotice::BACKEND_ANSWERED),
            0
        );
        assert_eq!(FrontendFlow::close_state_noticed(FlowNotice::LEARNED), 0);
        // What it records is what makes a SYN with another ISN a new connection.
        let closed = FrontendFlow {
            close_state: FrontendFlow::close_state_noticed(FlowNotice::CLIENT_FIN),
            client_isn: 7,
            ..FrontendFlow::default()
        };
        assert!(closed.replaced_by_syn(8));
        assert!(!closed.replaced_by_syn(7));
    }
    use super::*;
    use crate::translate::{ones_complement_sum, tcp_ipv4_pseudo_header_sum};
    use core::mem::size_of;

    #[test]
    fn kernel_shared_layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FrontendFlowKey>(), 12);
        assert_eq!(size_of::<FrontendFlow>(), 40);
        assert_eq!(core::mem::offset_of!(FrontendFlow, client_isn), 12);
        assert_eq!(core::mem::offset_of!(FrontendFlow, close_state), 16);
        assert_eq!(core::mem::offset_of!(FrontendFlow, isn_f), 20);
        assert_eq!(core::mem::offset_of!(FrontendFlow, client_next), 24);
        assert_eq!(core::mem::offset_of!(FrontendFlow, last_seen_ns), 32);
        assert_eq!(size_of::<FrontendConfig>(), 12);
        assert_eq!(size_of::<FrontendService>(), 8);
        assert_eq!(size_of::<FlowNotice>(), 20);
        assert_eq!(size_of::<FrontendFlowKeyV6>(), 36);
        assert_eq!(size_of::<FrontendFlowV6>(), 48);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, backend_port_be), 16);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, backend_mac), 18);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, client_isn), 24);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, close_state), 28);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, isn_f), 32);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, client_next), 36);
        assert_eq!(core::mem::offset_of!(FrontendFlowV6, last_seen_ns), 40);
        assert_eq!(size_of::<FrontendServiceV6>(), 20);
        assert_eq!(size_of::<FlowNoticeV6>(), 44);
        assert_eq!(
            core::mem::offset_of!(FlowNotice, client_isn),
            FlowNotice::LEN_WITHOUT_ISN
        );
    }

    /// The IPv6 redirect's incremental checksum equals a recomputation over the new
    /// pseudo-header, with and without a port change, and refuses the partial sum.
    #[test]
    fn an_ipv6_redirect_checksum_equals_a_recomputation() {
        use crate::ipv6::tcp_ipv6_pseudo_header_sum;
        let client = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let vip = [0x20, 1, 0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let backend = [0x20, 1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0xfe, 0xdc, 0, 11];
        let mut segment = [0u8; 27];
        for (i, b) in segment.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(5);
        }
        for (old_port, new_port) in [(80u16, 8080u16), (80, 80)] {
            segment[2..4].copy_from_slice(&old_port.to_be_bytes());
            segment[16..18].copy_from_slice(&[0, 0]);
            let len = segment.len() as u32;
            let check = |seg: &[u8], dst| {
                let pseudo = tcp_ipv6_pseudo_header_sum(&client, dst, len);
                !crate::translate::ones_complement_add(pseudo, ones_complement_sum(seg))
            };
            let old = check(&segment, &vip);
            let mut moved = segment;
            moved[2..4].copy_from_slice(&new_port.to_be_bytes());
            let want = check(&moved, &backend);
            let pseudo = tcp_ipv6_pseudo_header_sum(&client, &vip, len);
            assert_eq!(
                redirected_tcp_checksum_v6(old, pseudo, (&vip, old_port), (&backend, new_port)),
                Some(want)
            );
            assert_eq!(
                redirected_tcp_checksum_v6(pseudo, pseudo, (&vip, old_port), (&backend, new_port)),
                None
            );
        }
    }

    #[test]
    fn only_acknowledgements_past_the_syn_ack_prove_an_answer() {
        for isn_f in [0, 1_000, u32::MAX - 1, u32::MAX] {
            assert!(!acknowledges_backend_data(isn_f, isn_f), "{isn_f}");
            assert!(
                !acknowledges_backend_data(isn_f, isn_f.wrapping_add(1)),
                "{isn_f}"
            );
            assert!(
                acknowledges_backend_data(isn_f, isn_f.wrapping_add(2)),
                "{isn_f}"
            );
            assert!(acknowledges_backend_data(
                isn_f,
                isn_f.wrapping_add(1 << 30)
            ));
            // An old acknowledgement, before the SYN/ACK.
            assert!(
                !acknowledges_backend_data(isn_f, isn_f.wrapping_sub(5)),
                "{isn_f}"
            );
        }
    }

    #[test]
    fn only_a_close_at_the_expected_number_is_acted_on() {
        for next in [0u32, 1_000, u32::MAX - 2, u32::MAX] {
            // RST: exactly at `next`, nowhere else (in the window or far off).
            let exact = judge_client_segment(next, next, 0, false, true);
            assert_eq!(
                (exact.close, exact.client_next),
                (FlowNotice::CLIENT_RST, next)
            );
            for off in [1u32, 1_000, 3_000_000, 1 << 31, u32::MAX] {
                let v = judge_client_segment(next, next.wrapping_add(off), 0, false, true);
                assert_eq!((v.close, v.ignored_close, v.client_next), (0, true, next));
            }
            // FIN alone at `next`; with data ending at `next`; a far-off one.
            let fin = judge_client_segment(next, next, 0, true, false);
            assert_eq!(fin.close, FlowNotice::CLIENT_FIN);
            assert_eq!(fin.client_next, next.wrapping_add(1));
            let with_data = judge_client_segment(next, next.wrapping_sub(10), 25, true, false);
            assert_eq!(with_data.close, FlowNotice::CLIENT_FIN);
            assert_eq!(with_data.client_next, next.wrapping_add(16));
            let blind = judge_client_segment(next, next.wrapping_add(3_000_000), 0, true, false);
            assert_eq!((blind.close, blind.ignored_close), (0, true));
            assert_eq!(blind.client_next, next);
            // A repeated FIN (already counted) is not acted on again.
            let again = judge_client_segment(next.wrapping_add(1), next, 0, true, false);
            assert_eq!((again.close, again.client_next), (0, next.wrapping_add(1)));
        }
    }

    #[test]
    fn data_advances_only_in_order() {
        let next = u32::MAX - 5; // across the wrap
        assert_eq!(
            judge_client_segment(next, next, 100, false, false).client_next,
            94
        );
        // Overlapping: starts before, ends after.
        assert_eq!(
            judge_client_segment(next, next.wrapping_sub(50), 100, false, false).client_next,
            next.wrapping_add(50)
        );
        // Old, and beyond a gap: no change.
        assert_eq!(
            judge_client_segment(next, next.wrapping_sub(200), 100, false, false).client_next,
            next
        );
        assert_eq!(
            judge_client_segment(next, next.wrapping_add(1), 100, false, false).client_next,
            next
        );
        // A bare ACK at `next` changes nothing.
        let ack = judge_client_segment(next, next, 0, false, false);
        assert_eq!(
            (ack.client_next, ack.close, ack.ignored_close),
            (next, 0, false)
        );
    }

    #[test]
    fn each_decision_names_its_counter_and_notice() {
        use crate::layout::tcp_flag::{ACK, FIN, PSH, RST};
        let next = u32::MAX - 3; // across the wrap
        let isn_f = 7_000;
        let seg = |seq: u32, ack: u32, flags: u8, payload_len: u32| ClientSegment {
            seq,
            ack,
            flags,
            payload_len,
            echo: Echo::Unstamped,
        };
        let decide = |awaiting: Option<u32>, s| {
            let awaiting = awaiting.map(|isn_f| AwaitedAnswer {
                isn_f,
                backend_id: 11,
            });
            let d = decide_client_segment(next, awaiting, s);
            (d.client_next, d.hold, d.notice, d.counter)
        };
        let answer = isn_f + 100;
        // Handed off.
        assert_eq!(
            decide(None, seg(next, answer, ACK | PSH, 10)),
            (next.wrapping_add(10), false, 0, stat::FORWARDED)
        );
        assert_eq!(
            decide(None, seg(next.wrapping_sub(5), answer, FIN | ACK, 5)),
            (
                next.wrapping_add(1),
                false,
                FlowNotice::CLIENT_FIN,
                stat::FORWARDED_FIN
            )
        );
        assert_eq!(
            decide(None, seg(next.wrapping_add(1), answer, FIN | ACK, 0)),
            (next, false, 0, stat::FORWARDED_FIN_IGNORED)
        );
        assert_eq!(
            decide(None, seg(next, 0, RST, 0)),
            (next, false, FlowNotice::CLIENT_RST, stat::FORWARDED_RST)
        );
        assert_eq!(
            decide(None, seg(next.wrapping_add(1), 0, RST, 0)),
            (next, false, 0, stat::FORWARDED_RST_IGNORED)
        );
        // Awaiting the answer: held unless it acknowledges data past the SYN/ACK.
        assert_eq!(
            decide(Some(isn_f), seg(next, isn_f + 1, ACK | PSH, 10)),
            (next.wrapping_add(10), true, 0, stat::PASS_AWAITING_ANSWER)
        );
        assert_eq!(
            decide(Some(isn_f), seg(next, answer, FIN, 0)),
            (next.wrapping_add(1), true, 0, stat::PASS_AWAITING_ANSWER),
            "no ACK flag: no proof, whatever the number"
        );
        assert_eq!(
            decide(Some(isn_f), seg(next, answer, ACK, 0)),
            (
                next,
                false,
                FlowNotice::BACKEND_ANSWERED,
                stat::FORWARDED_ANSWER
            )
        );
        assert_eq!(
            decide(Some(isn_f), seg(next, answer, FIN | ACK, 0)),
            (
                next.wrapping_add(1),
                false,
                FlowNotice::CLIENT_FIN | FlowNotice::BACKEND_ANSWERED,
                stat::FORWARDED_FIN
            )
        );
        assert_eq!(
            decide(Some(isn_f), seg(next, answer, RST | ACK, 0)),
            (
                next,
                false,
                FlowNotice::CLIENT_RST | FlowNotice::BACKEND_ANSWERED,
                stat::FORWARDED_RST
            )
        );
        // The proof with a FIN not acted on counts as the proof.
        assert_eq!(
            decide(Some(isn_f), seg(next.wrapping_add(9), answer, FIN | ACK, 0)),
            (
                next,
                false,
                FlowNotice::BACKEND_ANSWERED,
                stat::FORWARDED_ANSWER
            )
        );
        // The proof names its back-end: the entry's id, or none; another id, or options
        // not read, go up for the core to tell whose answer it is.
        let echoed = |echo| ClientSegment {
            echo,
            ..seg(next, answer, ACK, 0)
        };
        for (echo, proof) in [
            (Echo::Stamp(11), true),
            (Echo::Unstamped, true),
            (Echo::Stamp(12), false),
            (Echo::Unread, false),
        ] {
            assert_eq!(decide(Some(isn_f), echoed(echo)).1, !proof, "{echo:?}");
            assert!(!decide(None, echoed(echo)).1, "handed off: {echo:?}");
        }
    }

    #[test]
    fn an_echo_is_read_from_the_timestamps_option_first() {
        extern crate std;
        let stamped = crate::stamp::stamped_tsval(
            0x1234_0000,
            crate::stamp::MARK | (5 << crate::stamp::ID_SHIFT) | 0x42,
        );
        let ts = |tsecr: u32| {
            let mut o = std::vec![1, 1, 8, 10, 0, 0, 0, 9];
            o.extend_from_slice(&tsecr.to_be_bytes());
            o
        };
        assert_eq!(Echo::of_options(&[]), Echo::Unstamped);
        assert_eq!(Echo::of_options(&ts(stamped)), Echo::Stamp(5));
        // With SACK blocks after it, as Linux sends.
        let mut sack = ts(stamped);
        sack.extend_from_slice(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(Echo::of_options(&sack), Echo::Stamp(5));
        // A front-end's own TSval: never marked.
        assert_eq!(
            Echo::of_options(&ts(crate::stamp::front_tsval(u32::MAX))),
            Echo::Unstamped
        );
        // Without the NOPs, EOLs after it.
        let mut bare = ts(stamped)[2..].to_vec();
        bare.extend_from_slice(&[0, 0]);
        assert_eq!(Echo::of_options(&bare), Echo::Stamp(5));
        // Another layout, or too short to hold the option.
        assert_eq!(Echo::of_options(&[1, 1, 4, 2]), Echo::Unread);
        assert_eq!(Echo::of_options(&ts(stamped)[..8]), Echo::Unread);
        assert!(Echo::Unstamped.may_name(3) && Echo::Stamp(3).may_name(3));
        assert!(!Echo::Stamp(4).may_name(3) && !Echo::Unread.may_name(3));
    }

    #[test]
    fn counter_names_are_unique() {
        for (i, a) in stat::NAMES.iter().enumerate() {
            assert!(!stat::NAMES[i + 1..].contains(a), "{a} twice");
        }
    }

    #[test]
    fn whole_checksum_verifies() {
        // A bare ACK with a timestamps option.
        let mut tcp = [
            0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x10, 0x01, 0xf5, 0, 0, 0, 0, 1,
            1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7,
        ];
        let (s, d) = ([198, 18, 0, 2], [198, 18, 1, 11]);
        let pseudo = tcp_ipv4_pseudo_header_sum(s, d, tcp.len() as u16);
        let check = tcp_checksum(pseudo, ones_complement_sum(&tcp));
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        let all = crate::translate::ones_complement_add(pseudo, ones_complement_sum(&tcp));
        assert_eq!(all, 0xffff);
    }

    /// The complete checksum of `segment` (its checksum field ignored) from `saddr` to
    /// `daddr`, numeric.
    fn full_checksum(saddr: [u8; 4], daddr: [u8; 4], segment: &[u8]) -> u16 {
        let mut zeroed = segment.to_vec();
        zeroed[16..18].copy_from_slice(&[0, 0]);
        let pseudo = tcp_ipv4_pseudo_header_sum(saddr, daddr, segment.len() as u16);
        tcp_checksum(pseudo, ones_complement_sum(&zeroed))
    }

    #[test]
    fn a_partial_checksum_is_not_redirected() {
        let (client, vip) = ([198, 18, 0, 2], [198, 18, 2, 1]);
        let pseudo = tcp_ipv4_pseudo_header_sum(client, vip, 20 + 100);
        let to = (u32::from_be_bytes([198, 18, 1, 11]), 8080);
        assert_eq!(
            redirected_tcp_checksum(pseudo, pseudo, (u32::from_be_bytes(vip), 80), to),
            None
        );
    }

    mod property {
        use super::*;
        use proptest::{prelude::*, sample::Index};

        proptest! {
            /// Against a model in unwrapped integers: a segment covering `next` advances
            /// it to its end, anything else changes nothing, and a FIN or RST is acted
            /// on only at exactly the number expected.
            #[test]
            fn judging_matches_an_unwrapped_model(
                next: u32,
                offset in -70_000i64..70_000,
                payload_len in 0u32..65_536,
                fin: bool,
                rst: bool,
            ) {
                let seq = (i64::from(next) + offset).rem_euclid(1 << 32) as u32;
                let v = judge_client_segment(next, seq, payload_len, fin, rst);
                let end = offset + i64::from(payload_len);
                if rst {
                    prop_assert_eq!(v.client_next, next);
                    prop_assert_eq!(v.close == FlowNotice::CLIENT_RST, offset == 0);
                } else if offset <= 0 && end >= 0 {
                    let fin_len = i64::from(fin);
                    let want = (i64::from(next) + end + fin_len).rem_euclid(1 << 32) as u32;
                    prop_assert_eq!(v.client_next, want);
                    prop_assert_eq!(v.close == FlowNotice::CLIENT_FIN, fin);
                } else {
                    prop_assert_eq!(v.client_next, next);
                    prop_assert_eq!(v.close, 0);
                    prop_assert_eq!(v.ignored_close, fin);
                }
            }

            /// The decision is the judgement of the segment, plus the wait for the answer:
            /// held exactly when awaiting and no proof, and a notice exactly when the
            /// judgement acts on a close or the proof is seen.
            #[test]
            fn deciding_is_judging_plus_the_wait(
                next: u32,
                seq: u32,
                ack: u32,
                flags: u8,
                payload_len in 0u32..65_536,
                awaiting: Option<u32>,
                stamp: Option<u8>,
                backend_id in 0u8..128,
            ) {
                use crate::layout::tcp_flag::{ACK, FIN, RST};
                let echo = stamp.map_or(Echo::Unstamped, |id| Echo::Stamp(id & 0x7f));
                let segment = ClientSegment { seq, ack, flags, payload_len, echo };
                let awaited = awaiting.map(|isn_f| AwaitedAnswer { isn_f, backend_id });
                let d = decide_client_segment(next, awaited, segment);
                let judged =
                    judge_client_segment(next, seq, payload_len, flags & FIN != 0, flags & RST != 0);
                prop_assert_eq!(d.client_next, judged.client_next);
                let proof = flags & ACK != 0
                    && echo.may_name(backend_id)
                    && awaiting.is_some_and(|isn_f| acknowledges_backend_data(isn_f, ack));
                prop_assert_eq!(d.hold, awaiting.is_some() && !proof);
                if d.hold {
                    prop_assert_eq!((d.notice, d.counter), (0, stat::PASS_AWAITING_ANSWER));
                } else {
                    let answered = if proof { FlowNotice::BACKEND_ANSWERED } else { 0 };
                    prop_assert_eq!(d.notice, judged.close | answered);
                    prop_assert!(d.counter != stat::PASS_AWAITING_ANSWER);
                    prop_assert_eq!(d.counter == stat::FORWARDED, d.notice == 0 && !judged.ignored_close);
                }
            }

            /// A complete checksum, redirected, equals the checksum computed whole over the
            /// redirected segment; one corrupted bit stays a wrong checksum after it.
            #[test]
            fn redirected_checksum_equals_recomputation_and_keeps_errors(
                header: [u8; 20],
                payload in proptest::collection::vec(any::<u8>(), 1..1500),
                client: [u8; 4],
                vip: [u8; 4],
                backend: [u8; 4],
                backend_port: u16,
                flip: Index,
                bit in 0u8..8,
            ) {
                let mut seg = header.to_vec();
                seg.extend_from_slice(&payload);
                let check = full_checksum(client, vip, &seg);
                seg[16..18].copy_from_slice(&check.to_be_bytes());
                let pseudo = tcp_ipv4_pseudo_header_sum(client, vip, seg.len() as u16);
                prop_assume!(check != pseudo); // the one-in-2^16 collision
                let vip_port = u16::from_be_bytes([seg[2], seg[3]]);
                let from = (u32::from_be_bytes(vip), vip_port);
                let to = (u32::from_be_bytes(backend), backend_port);
                let redirected = redirected_tcp_checksum(check, pseudo, from, to).unwrap();
                seg[2..4].copy_from_slice(&backend_port.to_be_bytes());
                prop_assert_eq!(redirected, full_checksum(client, backend, &seg));

                // The same segment with one payload bit flipped after its checksum was made.
                let at = 20 + flip.index(payload.len());
                seg[2..4].copy_from_slice(&vip_port.to_be_bytes());
                seg[at] ^= 1 << bit;
                let redirected = redirected_tcp_checksum(check, pseudo, from, to).unwrap();
                seg[2..4].copy_from_slice(&backend_port.to_be_bytes());
                prop_assert_ne!(redirected, full_checksum(client, backend, &seg));
            }
        }
    }
}
