//! The back-end module (the patent's BTCP_BE): tc ingress and egress on the back-end's LAN
//! interface, so that an unmodified server answers a handed-off client directly, as if it
//! were the front-end (docs/design.md, "Packet walk", steps 5, 6, 8 and 9).
//!
//! - ingress: translates every client segment of a handed-off flow (ack, SACK blocks,
//!   TSecr), and hands every SYN to the service port by tail call to `backend_syn`,
//!   which accepts a SYN' only with a handoff option that verifies under the shared key,
//!   records the flow, blanks the option and passes the SYN up. Two programs, so that each
//!   has the verifier's million instructions and 512 bytes of stack to itself: together
//!   they walked 998,001 of the million, and the SYN' path (once per connection) must be
//!   able to grow without costing the per-packet path anything. Only a SYN pays for the
//!   tail call.
//! - egress: turns the SYN/ACK' into the front-end's terms and sends it to the front-end,
//!   or, when it acknowledges the request the SYN' carried (a one-turn handoff), records
//!   the translation and drops it; then rewrites every back-end segment (source VIP, seq,
//!   TSval, window), copies segments to the front-end until the back-end has answered
//!   (its acknowledgement of the request is in that first answer), and copies a RST to
//!   it. Never a FIN once the flow is confirmed: the front-end tracks the close from the
//!   client's side (`frontend_copy` says why). With `BackendConfig::STAMPS`, every TSval
//!   to the client carries the flow's stamp (this back-end's id and a MAC, computed once
//!   at the SYN/ACK'; `baton_common::stamp`), by which any front-end forwards the flow.
//! - ICMP: an ICMPv4 "fragmentation needed" the front-end forwarded (a router's error
//!   about a response segment, sent to the VIP) goes from the ingress by tail call to
//!   `backend_icmp`, which puts its quote back in the server's terms (source, sequence
//!   number, checksums), so that the kernel lowers its path MTU towards the client
//!   (docs/design.md, "ICMP errors and path MTU"). Its IPv6 twin: an ICMPv6 "packet too
//!   big" goes from `backend_ingress_v6` by tail call to `backend_icmp_v6`, which does
//!   the same with `quote_to_backend_v6`.
//! - probes: a front-end's probe (`baton_common::claim`, EtherType 0x88B5) goes by the
//!   same tail call to `backend_icmp`, which claims a flow this module holds (the frame
//!   sent back to the prober as 0x88B6 with the flow's stamp) and drops every other
//!   probe, counted (docs/design.md, "Clients without timestamps: probe and claim").
//! - ECN: TCP flags pass untouched both ways (the SYN''s ECE and CWR reach the server,
//!   the SYN/ACK''s ECE the front-end), and no program writes the IPv4 ECN field (the
//!   address rewrite updates the header checksum incrementally, RFC 1624). Where the
//!   server refused the ECN the front-end granted the client, ingress drops the client's
//!   CE-marked segments (`BackendFlow::drops`).
//!
//! All arithmetic and every decision come from `baton_common` (tested on the host, and
//! run by the simulation's model of this module: `baton_common::backend`'s functions). Packets are read and
//! written with the skb helpers and checksums fixed with `bpf_l3/l4_csum_replace`, which
//! are right for `CHECKSUM_PARTIAL` packets, the norm on egress, and for GSO super-packets,
//! whose headers are all we touch.

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_F_INGRESS, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM, TC_ACT_PIPE, TC_ACT_SHOT,
    },
    helpers::{bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes},
    macros::{classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray},
    programs::TcContext,
};
use baton_common::{
    backend::{
        BackendConfig, BackendConfigV6, BackendFlow, BackendFlowKey, BackendFlowKeyV6,
        ClientSegmentFate, DEFAULT_FLOW_TABLE_SIZE, HandoffOptionCheck, LocalAck,
        SYN_ACK_PROOF_ROOM, ServerSegmentFate, SynAckFate, SynAckProof, SynAckSeen, SynAdmission,
        Verdict, admit_syn, ce, client_segment_fate, frontend_copy, ingress_program,
        ipv6_fragment_fate, ipv6_program, is_syn, server_segment_fate, stat,
    },
    claim::{self, ETH_P_PROBE, Trailer},
    handoff_option::{
        BindingAddress, HANDOFF_OPTION_LEN, HandoffBinding, HandoffOption, HandoffOptionError,
        MAX_OPTIONS_LEN, find_handoff_option,
    },
    icmp::{
        Endpoint, ICMP, ICMP_CHECK, ICMP_CODE, ICMP_TYPE, IPPROTO_ICMP, Icmpv4Head, Icmpv4Message,
        QUOTED_IP, QUOTED_TCP_LEN, QuoteRewriteV4, QuotedTcp, is_frag_needed, parse_icmpv4_head,
        quote_to_backend_v4, quoted_segment_v4,
    },
    icmpv6::{
        ICMPV6_CHECK, ICMPV6_HEAD_LEN, ICMPV6_PACKET_TOO_BIG, ICMPV6_TYPE, Icmpv6Head,
        Icmpv6Message, QUOTED_IPV6, QuoteRewriteV6, parse_packet_too_big, quote_to_backend_v6,
        quoted_segment_v6,
    },
    ipv6::{
        ETH_IPV6_LEN, ETH_P_IPV6, EXTENSION_PEEK_LEN, FRAGMENT_HLEN, IP6_DADDR, IP6_NEXT_HEADER,
        IP6_PAYLOAD_LEN, IP6_SADDR, IPV6_HLEN, Ipv6Address, Ipv6Header, Ipv6Payload,
        ipv6_upper_layer, next_header,
    },
    layout::{
        ETH_ALEN, ETH_DEST, ETH_HLEN, ETH_IPV4_LEN, ETH_PROTO, ETH_SOURCE, EthIpv4, IP_CHECK,
        IP_DADDR, IP_SADDR, IP_TOS, IP_TOT_LEN, IPPROTO_TCP, IPV4_HLEN, SACKOPT_EDGES, SEQ_LEN,
        TCP_ACK_SEQ, TCP_CHECK, TCP_DOFF, TCP_HLEN, TCP_OPTIONS, TCP_SEQ, TCP_SOURCE, TCP_WINDOW,
        TSOPT_TSECR, TSOPT_TSVAL, TcpHeader, ip_check, ip_daddr, ip_header_len, ip_protocol,
        ip_saddr, ip_tot_len, ip_version, ip_version_ihl, is_fragment, is_ipv4, tcp_ack_seq,
        tcp_dest,
        tcp_flag::{ACK, SYN},
        tcp_flags, tcp_header_len, tcp_seq, tcp_source, tcp_window,
    },
    stamp::{self, StampedFlow},
    syn_prime::syn_prime_window_shift,
    tcp_options::{sack, timestamps, window_shift},
    translate::{ChecksumDiff, SynAckTerms, Translation, client_ack_window, csum_replace4},
};

// Not pinned here: `baton backend` pins them under its own directory (so restarts reuse
// them), while tests load the object with maps of their own.
#[map]
static BACKEND_FLOWS: LruHashMap<BackendFlowKey, BackendFlow> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
static BACKEND_CONFIG: Array<BackendConfig> = Array::with_max_entries(1, 0);

/// The IPv6 flow table, [`BACKEND_FLOWS`]'s twin keyed by 16-byte addresses (its own map,
/// so that the IPv4 table keeps its pinned layout), sized with it by the agent.
#[map]
static BACKEND_FLOWS_V6: LruHashMap<BackendFlowKeyV6, BackendFlow> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

/// The VIP's IPv6 address ([`BackendConfigV6`]); IPv6 is passed untouched until the agent
/// enables it.
#[map]
static BACKEND_CONFIG_V6: Array<BackendConfigV6> = Array::with_max_entries(1, 0);

/// The IPv6 programs, by [`ipv6_program`] slot: reached by tail call from the IPv4 entry
/// programs on EtherType 0x86DD, so that each IPv6 path has a verifier budget of its
/// own (the IPv4 ones leave no room for a second family inline, docs/design.md
/// "Limits"), and IPv4 pays nothing for them.
#[map]
static BACKEND_V6_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(ipv6_program::SLOTS, 0);

#[map]
static BACKEND_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The frame's first bytes as `backend_icmp_v6` reads them: Ethernet, the fixed IPv6
/// header, the ICMPv6 header and the quoted fixed header.
const ICMPV6_FRAME_HEAD_LEN: usize = ETH_IPV6_LEN + ICMPV6_HEAD_LEN;

/// `backend_icmp_v6`'s copy of the frame's first [`ICMPV6_FRAME_HEAD_LEN`] bytes, loaded
/// here in one helper call rather than onto the stack, as Cilium and Katran keep large
/// per-packet state: with them on the stack the program needed all of its 512 bytes
/// (LLVM refused it at 520). Per CPU, so a program run has it to itself (tc programs run
/// with preemption off); not pinned: it holds nothing between runs.
#[map]
static ICMPV6_SCRATCH: PerCpuArray<[u8; ICMPV6_FRAME_HEAD_LEN]> =
    PerCpuArray::with_max_entries(1, 0);

/// The programs the ingress tail-calls, by [`ingress_program`] slot. The agent pins it
/// and fills it before it attaches the ingress; a prog array is emptied by the kernel
/// once no pin or descriptor holds it, whatever programs still use it.
#[map]
static BACKEND_INGRESS_PROGRAMS: ProgramArray =
    ProgramArray::with_max_entries(ingress_program::SLOTS, 0);

#[classifier]
pub fn backend_ingress(ctx: TcContext) -> i32 {
    finish(ingress(&ctx))
}

/// The SYN' path, reached only by tail call from `backend_ingress`
/// ([`ingress_program::SYN`]).
#[classifier]
pub fn backend_syn(ctx: TcContext) -> i32 {
    finish(syn::<V4>(&ctx))
}

/// The ICMP error path, reached only by tail call from `backend_ingress`
/// ([`ingress_program::ICMP`]): a program of its own, so that the ingress's verifier
/// budget is not spent on it.
#[classifier]
pub fn backend_icmp(ctx: TcContext) -> i32 {
    finish(icmp_error(&ctx))
}

/// A SYN' repeated once the server's handshake was completed locally, reached only by
/// tail call from `backend_syn` once its option verified ([`ingress_program::REPEATED_SYN`]).
#[classifier]
pub fn backend_repeated_syn(ctx: TcContext) -> i32 {
    finish(repeated_syn(&ctx))
}

/// The client's ACK made of an absorbed SYN/ACK', reached only by tail call from
/// `backend_egress` ([`ingress_program::LOCAL_ACK`]).
#[classifier]
pub fn backend_local_ack(ctx: TcContext) -> i32 {
    finish(local_ack(&ctx))
}

#[classifier]
pub fn backend_egress(ctx: TcContext) -> i32 {
    finish(egress(&ctx))
}

/// The IPv6 ingress, reached only by tail call from `backend_ingress`
/// ([`ipv6_program::INGRESS`]): the same path as IPv4's, over [`V6`].
#[classifier]
pub fn backend_ingress_v6(ctx: TcContext) -> i32 {
    finish(ingress_v6(&ctx))
}

/// The IPv6 SYN' path, reached only by tail call from `backend_ingress_v6`
/// ([`ipv6_program::SYN`]).
#[classifier]
pub fn backend_syn_v6(ctx: TcContext) -> i32 {
    finish(syn::<V6>(&ctx))
}

/// The IPv6 egress, reached only by tail call from `backend_egress`
/// ([`ipv6_program::EGRESS`]).
#[classifier]
pub fn backend_egress_v6(ctx: TcContext) -> i32 {
    finish(egress_v6(&ctx))
}

/// The ICMPv6 "packet too big" path, reached only by tail call from
/// `backend_ingress_v6` ([`ipv6_program::ICMP`]): `backend_icmp`'s twin, a program of
/// its own so that neither the IPv6 ingress's budget nor its stack is spent on it.
#[classifier]
pub fn backend_icmp_v6(ctx: TcContext) -> i32 {
    finish(icmpv6_error(&ctx))
}

#[inline(always)]
fn finish(verdict: Option<Verdict>) -> i32 {
    match verdict {
        // Not IPv4 TCP for the service: not ours, and not counted, so unrelated traffic
        // costs one parse and no map access.
        None => TC_ACT_PIPE,
        Some(Verdict::Pass(stat)) => {
            count(stat);
            TC_ACT_PIPE
        }
        Some(Verdict::Drop(stat)) => {
            count(stat);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn count(stat: u32) {
    if let Some(counter) = BACKEND_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

/// The headers a program needs, read with two loads (Ethernet and the fixed IP header,
/// then the fixed TCP header): helper calls are most of a packet's cost here. `A` is the
/// family's address ([`Family::Addr`]).
struct Segment<A> {
    tcp: usize,
    saddr: A,
    daddr: A,
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    window: [u8; 2],
    ip_check: [u8; 2],
    flags: u8,
    options_len: usize,
    payload_len: usize,
    /// The first fragment of an IPv6 segment (its TCP header behind a fragment header):
    /// never translated ([`ipv6_fragment_fate`]). Always false for IPv4, whose
    /// fragments [`V4::parse`] does not take.
    fragment: bool,
}

/// Reads Ethernet, IPv4 and TCP headers. `None`: not IPv4 TCP, or a fragment.
#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Option<Result<Segment<[u8; 4]>, ()>> {
    let l3: EthIpv4 = ctx.load(ETH_DEST).ok()?;
    if !is_ipv4(&l3) {
        return None;
    }
    let version_ihl = ip_version_ihl(&l3);
    if ip_version(version_ihl) != 4 || ip_protocol(&l3) != IPPROTO_TCP {
        return None;
    }
    if is_fragment(&l3) {
        return None; // a fragment: only the first has the TCP header; never ours
    }
    let ihl = ip_header_len(version_ihl);
    if ihl < IPV4_HLEN {
        return Some(Err(()));
    }
    let tcp = ETH_HLEN + ihl;
    let Ok(h) = ctx.load::<TcpHeader>(tcp) else {
        return Some(Err(()));
    };
    let header_len = tcp_header_len(&h);
    if header_len < TCP_HLEN {
        return Some(Err(()));
    }
    let total_len = usize::from(ip_tot_len(&l3));
    Some(Ok(Segment {
        tcp,
        saddr: ip_saddr(&l3),
        daddr: ip_daddr(&l3),
        sport: tcp_source(&h),
        dport: tcp_dest(&h),
        seq: tcp_seq(&h),
        ack: tcp_ack_seq(&h),
        window: tcp_window(&h),
        ip_check: ip_check(&l3),
        flags: tcp_flags(&h),
        options_len: header_len - TCP_HLEN,
        // GSO super-packets carry the whole length here (or 0 with BIG TCP, where the
        // saturating subtraction gives 0 and only the "has payload" hint is lost).
        payload_len: total_len.saturating_sub(ihl + header_len),
        fragment: false,
    }))
}

/// The farthest an IPv6 TCP header can start from the frame's first byte: the fixed
/// header, four extension headers of at most 2,048 bytes and a fragment header
/// (`baton_common::ipv6::walk_extension_headers`), within the mask [`parse_v6`] applies.
const IPV6_TCP_MASK: usize = 0x3fff;

/// Reads Ethernet, IPv6 (walking the extension headers, `baton_common::ipv6`) and TCP
/// headers. `None`: not IPv6 TCP, a later fragment, or a header the walk refuses or
/// cannot cross (AH, ESP, a routing header with segments left, unknown or too many
/// headers, a truncated chain): none of them can be told to be a handed-off flow's, and
/// the kernel judges them as it would without the module. A first fragment carrying TCP
/// is read (its TCP header follows the fragment header) and marked, so that the caller
/// can tell whether it is a handed-off flow's ([`ipv6_fragment_fate`]).
#[inline(always)]
fn parse_v6(ctx: &TcContext) -> Option<Result<Segment<[u8; 16]>, ()>> {
    let l3: [u8; ETH_IPV6_LEN] = ctx.load(ETH_DEST).ok()?;
    if [l3[ETH_PROTO], l3[ETH_PROTO + 1]] != ETH_P_IPV6 {
        return None;
    }
    let ip: &Ipv6Header = l3[ETH_HLEN..].first_chunk()?;
    let available = (ctx.len() as usize).saturating_sub(ETH_HLEN);
    // The last header the walk read: a fragment header names what follows it.
    let mut last = (0usize, [0u8; 8]);
    let walk = ipv6_upper_layer(ip, available, |at| {
        let peek = ctx.load::<[u8; 8]>(ETH_HLEN + at).ok()?;
        last = (at, peek);
        Some(peek)
    });
    let (at, fragment) = match walk {
        Ok(Ipv6Payload::Upper { protocol, offset }) if protocol == IPPROTO_TCP => (offset, false),
        Ok(Ipv6Payload::Fragment { offset: 0, .. }) if last.1[0] == IPPROTO_TCP => {
            (last.0 + FRAGMENT_HLEN, true)
        }
        _ => return None,
    };
    let tcp = (ETH_HLEN + opaque(ctx, at)) & IPV6_TCP_MASK;
    let Ok(h) = ctx.load::<TcpHeader>(tcp) else {
        return Some(Err(()));
    };
    let header_len = tcp_header_len(&h);
    if header_len < TCP_HLEN {
        return Some(Err(()));
    }
    let total_len = usize::from(u16::from_be_bytes([
        l3[ETH_HLEN + IP6_PAYLOAD_LEN],
        l3[ETH_HLEN + IP6_PAYLOAD_LEN + 1],
    ])) + IPV6_HLEN;
    Some(Ok(Segment {
        tcp,
        saddr: *l3[ETH_HLEN + IP6_SADDR..].first_chunk()?,
        daddr: *l3[ETH_HLEN + IP6_DADDR..].first_chunk()?,
        sport: tcp_source(&h),
        dport: tcp_dest(&h),
        seq: tcp_seq(&h),
        ack: tcp_ack_seq(&h),
        window: tcp_window(&h),
        ip_check: [0; 2],
        flags: tcp_flags(&h),
        options_len: header_len - TCP_HLEN,
        payload_len: total_len.saturating_sub(tcp - ETH_HLEN + header_len),
        fragment,
    }))
}

/// The control block word [`opaque`] passes a value through.
const CB_SCRATCH: usize = 3;

/// `value`, passed through the packet's control block so that the verifier knows only
/// that it is a 32-bit number: the TCP header's offset after the extension-header walk
/// is a different known range on each of the walk's paths (no header, one, two, ...),
/// and the verifier, which prunes a path only where an earlier one covered its ranges,
/// would walk everything after it once per path (five times the IPv4 path's
/// instructions). Masked by the caller, it is one range on every path.
#[inline(always)]
fn opaque(ctx: &TcContext, value: usize) -> usize {
    // SAFETY: the context pointer the kernel passed in; `cb` is the programs' scratch
    // space, and this word is read back at once. Volatile, so that the compiler keeps the
    // store and the load.
    unsafe {
        let word = core::ptr::addr_of_mut!((*ctx.skb.skb).cb[CB_SCRATCH]);
        core::ptr::write_volatile(word, value as u32);
        core::ptr::read_volatile(word) as usize
    }
}

/// What differs between the families on the TCP path: the headers, the flow table, the
/// VIP, the source rewrite and the program array a SYN goes on through. Everything else
/// (the translation, the decisions, the option's blanking) is the same code, generic over
/// this.
trait Family {
    /// The address, as the packet holds it: `[u8; 4]` or `[u8; 16]`.
    type Addr: BindingAddress + PartialEq;
    /// The flow table's key.
    type Key: 'static;
    /// Whether this family's flows may have the server's handshake completed here
    /// (`backend_local_ack`) and answer a repeated SYN' (`backend_repeated_syn`): both
    /// IPv4 only so far, their programs building IPv4 headers. Without them an IPv6
    /// one-turn handoff's server stays in SYN-RECV until the front-end's ACK', as with
    /// `complete_handshake` off.
    const LOCAL_HANDSHAKE: bool;
    fn parse(ctx: &TcContext) -> Option<Result<Segment<Self::Addr>, ()>>;
    fn flows() -> &'static LruHashMap<Self::Key, BackendFlow>;
    fn key(
        client: Self::Addr,
        client_port: [u8; 2],
        backend: Self::Addr,
        backend_port: [u8; 2],
    ) -> Self::Key;
    /// The VIP's address in this family, `None` where the agent has not enabled it.
    fn vip(config: &BackendConfig) -> Option<Self::Addr>;
    /// The packet's length from the IP header's first byte, as its header says.
    fn ip_len(ctx: &TcContext) -> Option<usize>;
    /// The ECN field's byte (IPv4's TOS, IPv6's traffic class).
    fn tos(ctx: &TcContext) -> Option<u8>;
    /// The source address becomes the VIP (see the implementations).
    fn source_to_vip(ctx: &TcContext, seg: &Segment<Self::Addr>, vip: Self::Addr)
    -> Result<(), ()>;
    /// The flow's stamp (`baton_common::stamp`), 0 for none.
    fn stamp(config: &BackendConfig, vip: Self::Addr, seg: &Segment<Self::Addr>) -> u16;
    /// Tail-calls the family's SYN' program; returns only if its slot is empty.
    fn tail_call_syn(ctx: &TcContext);
}

struct V4;
struct V6;

impl Family for V4 {
    type Addr = [u8; 4];
    type Key = BackendFlowKey;
    const LOCAL_HANDSHAKE: bool = true;

    #[inline(always)]
    fn parse(ctx: &TcContext) -> Option<Result<Segment<[u8; 4]>, ()>> {
        parse_v4(ctx)
    }

    #[inline(always)]
    fn flows() -> &'static LruHashMap<BackendFlowKey, BackendFlow> {
        &BACKEND_FLOWS
    }

    #[inline(always)]
    fn key(
        client: [u8; 4],
        client_port: [u8; 2],
        backend: [u8; 4],
        backend_port: [u8; 2],
    ) -> BackendFlowKey {
        BackendFlowKey {
            client_addr_be: u32::from_ne_bytes(client),
            backend_addr_be: u32::from_ne_bytes(backend),
            client_port_be: u16::from_ne_bytes(client_port),
            backend_port_be: u16::from_ne_bytes(backend_port),
        }
    }

    #[inline(always)]
    fn vip(config: &BackendConfig) -> Option<[u8; 4]> {
        Some(config.vip_addr_be.to_ne_bytes())
    }

    #[inline(always)]
    fn ip_len(ctx: &TcContext) -> Option<usize> {
        let total: [u8; 2] = ctx.load(ETH_HLEN + IP_TOT_LEN).ok()?;
        Some(usize::from(u16::from_be_bytes(total)))
    }

    #[inline(always)]
    fn tos(ctx: &TcContext) -> Option<u8> {
        ctx.load::<u8>(ETH_HLEN + IP_TOS).ok()
    }

    /// The IPv4 header checksum is always complete, so it is updated in place; the TCP
    /// checksum covers the address through the pseudo-header, which only the kernel's
    /// helper updates right for both complete and `CHECKSUM_PARTIAL` packets.
    #[inline(always)]
    fn source_to_vip(ctx: &TcContext, seg: &Segment<[u8; 4]>, vip: [u8; 4]) -> Result<(), ()> {
        if vip == seg.saddr {
            return Ok(());
        }
        let check = csum_replace4(
            u16::from_be_bytes(seg.ip_check),
            u32::from_be_bytes(seg.saddr),
            u32::from_be_bytes(vip),
        );
        // SAFETY: `packet_mut` checked both fields lie inside the packet's linear data.
        unsafe {
            *packet_mut::<[u8; 4]>(ctx, ETH_HLEN + IP_SADDR)? = vip;
            *packet_mut::<[u8; 2]>(ctx, ETH_HLEN + IP_CHECK)? = check.to_be_bytes();
        }
        ctx.l4_csum_replace(
            seg.tcp + TCP_CHECK,
            u64::from(u32::from_ne_bytes(seg.saddr)),
            u64::from(u32::from_ne_bytes(vip)),
            u64::from(BPF_F_PSEUDO_HDR) | 4,
        )
        .map_err(|_| ())
    }

    #[inline(always)]
    fn stamp(config: &BackendConfig, vip: [u8; 4], seg: &Segment<[u8; 4]>) -> u16 {
        stamp::stamp(
            &config.handoff_key,
            &StampedFlow {
                client_addr: seg.daddr,
                client_port: u16::from_be_bytes(seg.dport),
                vip_addr: vip,
                vip_port: u16::from_be_bytes(config.vip_port_be.to_ne_bytes()),
                backend_addr: seg.saddr,
                backend_port: u16::from_be_bytes(seg.sport),
            },
        )
    }

    #[inline(always)]
    fn tail_call_syn(ctx: &TcContext) {
        // SAFETY: the context the kernel passed this program; nothing runs after a
        // successful call.
        unsafe {
            BACKEND_INGRESS_PROGRAMS.tail_call(ctx, ingress_program::SYN);
        }
    }
}

impl Family for V6 {
    type Addr = [u8; 16];
    type Key = BackendFlowKeyV6;
    const LOCAL_HANDSHAKE: bool = false;

    #[inline(always)]
    fn parse(ctx: &TcContext) -> Option<Result<Segment<[u8; 16]>, ()>> {
        parse_v6(ctx)
    }

    #[inline(always)]
    fn flows() -> &'static LruHashMap<BackendFlowKeyV6, BackendFlow> {
        &BACKEND_FLOWS_V6
    }

    #[inline(always)]
    fn key(
        client: [u8; 16],
        client_port: [u8; 2],
        backend: [u8; 16],
        backend_port: [u8; 2],
    ) -> BackendFlowKeyV6 {
        BackendFlowKeyV6 {
            client_addr: client,
            backend_addr: backend,
            client_port_be: u16::from_ne_bytes(client_port),
            backend_port_be: u16::from_ne_bytes(backend_port),
        }
    }

    #[inline(always)]
    fn vip(_config: &BackendConfig) -> Option<[u8; 16]> {
        let v6 = BACKEND_CONFIG_V6.get(0)?;
        (v6.flags & BackendConfigV6::ENABLED != 0).then_some(v6.vip_addr)
    }

    #[inline(always)]
    fn ip_len(ctx: &TcContext) -> Option<usize> {
        let payload: [u8; 2] = ctx.load(ETH_HLEN + IP6_PAYLOAD_LEN).ok()?;
        Some(usize::from(u16::from_be_bytes(payload)) + IPV6_HLEN)
    }

    /// The traffic class, which straddles the first two bytes (RFC 8200 §3), laid out as
    /// IPv4's TOS (RFC 3168 §5).
    #[inline(always)]
    fn tos(ctx: &TcContext) -> Option<u8> {
        let head: [u8; 2] = ctx.load(ETH_HLEN).ok()?;
        Some((head[0] << 4) | (head[1] >> 4))
    }

    /// IPv6 has no header checksum (RFC 8200 §3): the address is written and the TCP
    /// checksum, which covers it through the pseudo-header (§8.1), updated by the
    /// difference of its eight words (`ChecksumDiff::address16`) in one helper call,
    /// flagged as a pseudo-header change so that a `CHECKSUM_PARTIAL` packet's field (the
    /// pseudo-header's sum) is updated too, as Cilium's IPv6 source rewrite does. Egress
    /// only: an egress skb is never `CHECKSUM_COMPLETE`, whose `csum` the helper would
    /// also adjust (kernels before `BPF_F_IPV6` wrongly so for IPv6).
    #[inline(always)]
    fn source_to_vip(ctx: &TcContext, seg: &Segment<[u8; 16]>, vip: [u8; 16]) -> Result<(), ()> {
        if vip == seg.saddr {
            return Ok(());
        }
        // SAFETY: `packet_mut` checked the field lies inside the packet's linear data.
        unsafe { *packet_mut::<[u8; 16]>(ctx, ETH_HLEN + IP6_SADDR)? = vip };
        let diff = ChecksumDiff::new().address16(&seg.saddr, &vip);
        ctx.l4_csum_replace(
            seg.tcp + TCP_CHECK,
            0,
            u64::from(diff.as_wsum()),
            u64::from(BPF_F_PSEUDO_HDR),
        )
        .map_err(|_| ())
    }

    /// None yet: the stamp's MAC binds IPv4 addresses (`baton_common::stamp`), and the
    /// front-end forwards no IPv6 flow by stamp.
    #[inline(always)]
    fn stamp(_config: &BackendConfig, _vip: [u8; 16], _seg: &Segment<[u8; 16]>) -> u16 {
        0
    }

    #[inline(always)]
    fn tail_call_syn(ctx: &TcContext) {
        // SAFETY: as for IPv4.
        unsafe {
            BACKEND_V6_PROGRAMS.tail_call(ctx, ipv6_program::SYN);
        }
    }
}

/// Hands an IPv6 frame to the family's program in `slot` of [`BACKEND_V6_PROGRAMS`]
/// (which does not return); anything else, or with the slot empty, is not ours.
#[inline(always)]
fn to_ipv6_program(ctx: &TcContext, slot: u32) -> Option<Verdict> {
    let proto: [u8; 2] = ctx.load(ETH_PROTO).ok()?;
    if proto == ETH_P_IPV6 {
        // SAFETY: the context the kernel passed this program; nothing runs after a
        // successful call.
        unsafe {
            BACKEND_V6_PROGRAMS.tail_call(ctx, slot);
        }
    }
    None
}

#[inline(always)]
fn config() -> Option<BackendConfig> {
    config_in_map().copied()
}

/// The configuration where it lies in its map, not copied: the SYN' program's stack has
/// no room for a copy beside the IPv6 binding's (the map value stays valid for the
/// program's run).
#[inline(always)]
fn config_in_map() -> Option<&'static BackendConfig> {
    let config = BACKEND_CONFIG.get(0)?;
    (config.flags & BackendConfig::ENABLED != 0).then_some(config)
}

/// Room for any options area a data offset can describe (60 bytes), of which TCP allows
/// 40; the walkers only ever see the first 40 ([`opts`]).
type OptionsBuf = [u8; 60];

#[inline(always)]
fn opts(buf: &OptionsBuf) -> &[u8; MAX_OPTIONS_LEN] {
    buf.first_chunk::<MAX_OPTIONS_LEN>()
        .unwrap_or(&[0; MAX_OPTIONS_LEN])
}

/// Copies the options area onto the stack in one load. The rest of the buffer stays
/// zero, which reads as End of Option List, so callers walk the whole fixed buffer: every
/// index is then checked against a constant, which the verifier can follow.
#[inline(always)]
fn load_options<A>(ctx: &TcContext, seg: &Segment<A>, buf: &mut OptionsBuf) -> Result<usize, ()> {
    // Options are whole 32-bit words; the mask gives the verifier the bound it needs for
    // a variable-length load (at most 60, which the buffer has room for, so the bound
    // holds even where the compiler moves the 40-byte check below).
    let len = (seg.options_len as u32) & 0x3c;
    if len == 0 {
        return Ok(0);
    }
    if len > MAX_OPTIONS_LEN as u32 {
        return Err(());
    }
    // SAFETY: `buf` holds 60 >= len bytes; the kernel checks the packet side.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            (seg.tcp + TCP_OPTIONS) as u32,
            buf.as_mut_ptr().cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(());
    }
    Ok(len as usize)
}

fn ingress(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    let seg = match parse_v4(ctx) {
        Some(Ok(seg)) => seg,
        Some(Err(())) => return Some(Verdict::Pass(stat::IN_MALFORMED)),
        // Not TCP (or a fragment): only an ICMP error (or IPv6) is looked at further,
        // after the TCP path, which pays nothing for it.
        None => return icmp_error_in(ctx),
    };
    ingress_segment::<V4>(ctx, &config, &seg)
}

/// `backend_ingress_v6`: the IPv6 frame `backend_ingress` handed over, parsed
/// ([`parse_v6`]), on the same path as IPv4's.
fn ingress_v6(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    V6::vip(&config)?;
    let seg = match parse_v6(ctx) {
        Some(Ok(seg)) => seg,
        Some(Err(())) => return Some(Verdict::Pass(stat::IN_MALFORMED)),
        // Not TCP: only a "packet too big" is looked at further, as IPv4's ICMP is.
        None => return icmpv6_error_in(ctx),
    };
    ingress_segment::<V6>(ctx, &config, &seg)
}

/// An ICMPv6 "packet too big" right after the fixed header goes on in `backend_icmp_v6`
/// by tail call ([`ipv6_program::ICMP`]); other ICMPv6 (neighbour discovery, echo), and
/// ICMPv6 behind extension headers, is not ours: a router's error carries none, and the
/// front-end forwards no other (`frontend_forward_v6`). With the slot empty the error
/// passes untouched, counted, as IPv4's does ([`icmp_error_in`]). Inlined: the kernel
/// allows a tail call only from a function returning `int`.
#[inline(always)]
fn icmpv6_error_in(ctx: &TcContext) -> Option<Verdict> {
    let next: [u8; 1] = ctx.load(ETH_HLEN + IP6_NEXT_HEADER).ok()?;
    if next[0] != next_header::ICMPV6 {
        return None;
    }
    let kind: [u8; 1] = ctx.load(ETH_IPV6_LEN + ICMPV6_TYPE).ok()?;
    if kind[0] != ICMPV6_PACKET_TOO_BIG {
        return None;
    }
    // SAFETY: the context is the one the kernel passed this program, as the helper
    // needs; nothing here runs after a successful call.
    unsafe { BACKEND_V6_PROGRAMS.tail_call(ctx, ipv6_program::ICMP) };
    Some(Verdict::Pass(stat::IN_ICMP_UNCHECKED))
}

/// `backend_icmp_v6`: an ICMPv6 "packet too big" the front-end forwarded for a
/// handed-off IPv6 flow, `icmp_error`'s twin (docs/design.md, "ICMP errors and path
/// MTU"), read again with the shared view (`baton_common::icmpv6`). The quote names the
/// segment as the client's path saw it (from VIP6, in the front-end's sequence space);
/// Linux's `tcp_v6_err` looks the socket up by the quoted addresses and ports and drops
/// an error whose quoted sequence number is not within `snd_una..snd_nxt`, so the quote
/// is put back into the terms of the segment the server sent (`quote_to_backend_v6`:
/// source address and port, sequence number, and the ICMPv6 checksum, the only one: IPv6
/// has no header checksum). The kernel then lowers the route's MTU towards the client.
/// An error about no handed-off flow passes untouched (one from VIP6 finds no socket),
/// counted; so does a malformed one; one about the server's own traffic is not ours.
///
/// Only ICMPv6 right after the fixed header, at constant offsets (what
/// `icmpv6_error_in` hands over): no outer walk, and nothing copied that a pointer into
/// its map can give (the configuration, the flow's translation), which keeps the stack
/// within the verifier's 512 bytes where a copy of `icmp_error` with the outer walk did
/// not fit.
fn icmpv6_error(ctx: &TcContext) -> Option<Verdict> {
    let config = config_in_map()?;
    // Where it lies in its map, not copied (see below).
    let v6 = BACKEND_CONFIG_V6.get(0)?;
    if v6.flags & BackendConfigV6::ENABLED == 0 {
        return None;
    }
    let scratch = ICMPV6_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot holds `ICMPV6_FRAME_HEAD_LEN` bytes; the kernel checks
    // the packet side. The slot is this run's alone (see `ICMPV6_SCRATCH`).
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            ETH_DEST as u32,
            scratch.cast(),
            ICMPV6_FRAME_HEAD_LEN as u32,
        )
    };
    if loaded != 0 {
        // Shorter than a "packet too big" quoting anything: not ours unless it is one.
        let kind: [u8; 1] = ctx.load(ETH_IPV6_LEN + ICMPV6_TYPE).ok()?;
        return (kind[0] == ICMPV6_PACKET_TOO_BIG)
            .then_some(Verdict::Pass(stat::IN_ICMP_MALFORMED));
    }
    // SAFETY: as above; read in place, never copied.
    let frame: &[u8; ICMPV6_FRAME_HEAD_LEN] = unsafe { &*scratch };
    let (l3, head) = frame.split_first_chunk::<ETH_IPV6_LEN>()?;
    let head: &Icmpv6Head = head.first_chunk()?;
    if [l3[ETH_PROTO], l3[ETH_PROTO + 1]] != ETH_P_IPV6
        || l3[ETH_HLEN + IP6_NEXT_HEADER] != next_header::ICMPV6
    {
        return None;
    }
    // The message's length: the payload length, within the frame.
    let payload = u16::from_be_bytes([
        l3[ETH_HLEN + IP6_PAYLOAD_LEN],
        l3[ETH_HLEN + IP6_PAYLOAD_LEN + 1],
    ]);
    let available = usize::from(payload).min((ctx.len() as usize).saturating_sub(ETH_IPV6_LEN));
    let destination: Ipv6Address = *l3[ETH_HLEN + IP6_DADDR..].first_chunk()?;
    let read = |at: usize| ctx.load::<[u8; EXTENSION_PEEK_LEN]>(ETH_IPV6_LEN + at).ok();
    let error = match parse_packet_too_big(head, destination, available, read) {
        Ok(Icmpv6Message::PacketTooBig(error)) => error,
        Ok(Icmpv6Message::Other) => return None,
        Err(_) => return Some(Verdict::Pass(stat::IN_ICMP_MALFORMED)),
    };
    // Within the frame (the view checked it against `available`); one range on every
    // path of the quote's walk for the verifier, as in `parse_v6`.
    let quoted_tcp = (ETH_IPV6_LEN + opaque(ctx, error.quoted_tcp)) & IPV6_TCP_MASK;
    let Ok(tcp) = ctx.load::<QuotedTcp>(quoted_tcp) else {
        return Some(Verdict::Pass(stat::IN_ICMP_MALFORMED));
    };
    let quote = quoted_segment_v6(&error, &tcp);
    // About a segment from another address or port (the server's own direct clients):
    // not ours.
    if quote.vip.addr != v6.vip_addr
        || u16::from_ne_bytes(quote.vip.port.to_be_bytes()) != config.vip_port_be
    {
        return None;
    }
    // The front-end sent the error on to this host's address, as a client segment.
    let backend = Endpoint {
        addr: error.destination,
        port: u16::from_be_bytes(config.service_port_be.to_ne_bytes()),
    };
    let Some(flow) = BACKEND_FLOWS_V6.get_ptr(quote.backend_flow_key(backend)) else {
        return Some(Verdict::Pass(stat::IN_ICMP_NOT_HANDED_OFF));
    };
    // SAFETY: a map value pointer, valid for this program run; read in place.
    let translation = unsafe { &(*flow).translation };
    if translation.is_awaiting_syn_ack() {
        // The server has sent the client nothing yet: nothing to translate with.
        return Some(Verdict::Pass(stat::IN_ICMP_NOT_HANDED_OFF));
    }
    let r = quote_to_backend_v6(head, &tcp, backend, translation);
    Some(match write_quote_v6(ctx, quoted_tcp, &r) {
        Ok(()) => Verdict::Pass(stat::IN_ICMP_TRANSLATED),
        Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
    })
}

/// Writes [`quote_to_backend_v6`]'s fields into the packet, as [`write_quote`] does
/// IPv4's: the ICMPv6 checksum written makes up for every other change, so the
/// message's sum, and a `CHECKSUM_COMPLETE` skb's `csum`, stays as it arrived.
#[inline(always)]
fn write_quote_v6(ctx: &TcContext, quoted_tcp: usize, r: &QuoteRewriteV6) -> Result<(), ()> {
    let end = quoted_tcp + QUOTED_TCP_LEN;
    if ctx.data() + end > ctx.data_end() {
        ctx.pull_data(end as u32).map_err(|_| ())?;
    }
    let icmp = ETH_IPV6_LEN;
    // SAFETY: `packet_mut` checked every field lies inside the packet's linear data.
    unsafe {
        *packet_mut::<Ipv6Address>(ctx, icmp + QUOTED_IPV6 + IP6_SADDR)? = r.quoted_saddr;
        *packet_mut::<[u8; 2]>(ctx, quoted_tcp + TCP_SOURCE)? = r.quoted_sport;
        *packet_mut::<[u8; 4]>(ctx, quoted_tcp + TCP_SEQ)? = r.quoted_seq;
        *packet_mut::<[u8; 2]>(ctx, icmp + ICMPV6_CHECK)? = r.icmp_check;
    }
    Ok(())
}

/// A client segment of either family: a SYN goes on to the family's SYN' program, any
/// other is translated by its flow's entry ([`client_segment_fate`]).
#[inline(always)]
fn ingress_segment<F: Family>(
    ctx: &TcContext,
    config: &BackendConfig,
    seg: &Segment<F::Addr>,
) -> Option<Verdict> {
    if u16::from_ne_bytes(seg.dport) != config.service_port_be {
        return None;
    }
    if seg.fragment {
        let held = F::flows().get_ptr(flow_key_in::<F>(seg)).is_some();
        return ipv6_fragment_fate(held, stat::IN_IPV6_FRAGMENT);
    }
    if is_syn(seg.flags) {
        // A SYN (a SYN', or a direct client's) goes on in `backend_syn`: the tail
        // call does not return when the slot holds a program. Its verdict is that
        // program's, its counters too.
        // The window the client's ACK will announce, should the egress complete the
        // server's handshake, goes along in the control block (see `client_window`).
        // SAFETY: the context is the one the kernel passed this program, as the helper
        // needs (`cb` is the programs' scratch space); nothing here runs after a
        // successful call.
        unsafe { (*ctx.skb.skb).cb[CB_CLIENT_WINDOW] = client_window(ctx, seg) };
        F::tail_call_syn(ctx);
        // Unchecked, a SYN may still not bring data to the server (see `syn`).
        return Some(admit_syn(HandoffOptionCheck::Unchecked, seg.payload_len as u32).verdict());
    }
    let key = flow_key_in::<F>(seg);
    // SAFETY: a map value pointer, valid for this program run; copied out at once.
    let value = F::flows().get_ptr(key).map(|flow| unsafe { *flow });
    if let ClientSegmentFate::Verdict(verdict) = client_segment_fate(value.as_ref(), seg.flags) {
        return Some(verdict);
    }
    // Only a flow in the table is translated.
    let value = value?;
    Some(match translate_in(ctx, seg, &value.translation) {
        // Decided last, after the rewrite: with this branch before it, the verifier
        // walked the rewrite on more paths than its million instructions allow. The TOS
        // byte is read only for a flow that refused ECN (`BackendFlow::drops`).
        Ok(()) if value.refuses_ecn() && ce_marked::<F>(ctx) => {
            // A congestion mark the server would ignore: a loss instead
            // (`BackendFlow::drops`).
            Verdict::Drop(stat::IN_CE_DROPPED)
        }
        Ok(()) => Verdict::Pass(stat::IN_TRANSLATED),
        Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
    })
}

/// An ICMPv4 "fragmentation needed" goes on in `backend_icmp` by tail call
/// ([`ingress_program::ICMP`]); other ICMP, and anything else not TCP, is not ours.
/// Should the slot be empty, the error passes untouched, its quote untranslated (the
/// kernel finds no socket for it and drops it), counted. Inlined: the kernel allows a
/// tail call only from a function returning `int`.
#[inline(always)]
fn icmp_error_in(ctx: &TcContext) -> Option<Verdict> {
    let l3: EthIpv4 = ctx.load(ETH_DEST).ok()?;
    if [l3[ETH_PROTO], l3[ETH_PROTO + 1]] == ETH_P_IPV6 {
        // IPv6 goes on in `backend_ingress_v6` (with its slot empty, untouched).
        return to_ipv6_program(ctx, ipv6_program::INGRESS);
    }
    if is_probe(&l3) {
        // A front-end's probe goes the same way (`claim`): the slot's program is the
        // module's path for what is not TCP, so that the ingress pays nothing for it.
        // SAFETY: as below.
        unsafe { BACKEND_INGRESS_PROGRAMS.tail_call(ctx, ingress_program::ICMP) };
        // Never to the stack, which would drop it anyway (no handler), but counted.
        return Some(Verdict::Drop(stat::PROBE_MALFORMED));
    }
    if !is_ipv4(&l3) || ip_protocol(&l3) != IPPROTO_ICMP {
        return None;
    }
    let icmp: [u8; 2] = ctx
        .load(ETH_HLEN + ip_header_len(ip_version_ihl(&l3)))
        .ok()?;
    if !is_frag_needed(icmp[ICMP_TYPE], icmp[ICMP_CODE]) {
        return None;
    }
    // SAFETY: the context is the one the kernel passed this program, as the helper
    // needs; nothing here runs after a successful call.
    unsafe { BACKEND_INGRESS_PROGRAMS.tail_call(ctx, ingress_program::ICMP) };
    Some(Verdict::Pass(stat::IN_ICMP_UNCHECKED))
}

/// `backend_icmp`: an ICMPv4 "fragmentation needed" the front-end forwarded for a
/// handed-off flow (docs/design.md, "ICMP errors and path MTU"), read again (the entry
/// program passes nothing but the packet) with the shared view (`baton_common::icmp`).
/// Its quote names the segment as the client's path saw it: from the VIP, in the
/// front-end's sequence space. The kernel's `tcp_v4_err` looks the socket up by the
/// quoted addresses and ports and acts only on a quoted sequence number within
/// `snd_una..snd_nxt`, so the quote is put back into the terms of the segment the
/// server sent (`quote_to_backend_v4`: source address and port, sequence number, the
/// quoted IPv4 header's checksum and the ICMP checksum); then the kernel lowers the
/// route's MTU towards the client and the server retransmits smaller. An error about
/// no handed-off flow passes untouched (the kernel judges it as it would without the
/// module: one from the VIP finds no socket), counted; so does a malformed one.
fn icmp_error(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    let l3: EthIpv4 = ctx.load(ETH_DEST).ok()?;
    if is_probe(&l3) {
        return Some(claim(ctx, &config, &l3));
    }
    if !is_ipv4(&l3) || ip_protocol(&l3) != IPPROTO_ICMP {
        return None;
    }
    let Ok(head) = ctx.load::<Icmpv4Head>(ETH_HLEN) else {
        return Some(Verdict::Pass(stat::IN_ICMP_MALFORMED));
    };
    let available = (ctx.len() as usize).saturating_sub(ETH_HLEN);
    let error = match parse_icmpv4_head(&head, available) {
        Ok(Icmpv4Message::FragNeeded(error)) => error,
        Ok(Icmpv4Message::Other) => return None,
        Err(_) => return Some(Verdict::Pass(stat::IN_ICMP_MALFORMED)),
    };
    // At most 88 bytes in (`parse_icmpv4_head`); the mask keeps that bound in sight of
    // the verifier.
    let quoted_tcp = (ETH_HLEN + error.quoted_tcp) & 0x7f;
    let Ok(tcp) = ctx.load::<QuotedTcp>(quoted_tcp) else {
        return Some(Verdict::Pass(stat::IN_ICMP_MALFORMED));
    };
    let quote = quoted_segment_v4(&error, &tcp);
    // About a segment from another address or port (the server's own direct clients):
    // not ours.
    if u32::from_ne_bytes(quote.vip.addr) != config.vip_addr_be
        || u16::from_ne_bytes(quote.vip.port.to_be_bytes()) != config.vip_port_be
    {
        return None;
    }
    // The front-end sent the error on to this host's address, as a client segment.
    let backend = Endpoint {
        addr: error.destination,
        port: u16::from_be_bytes(config.service_port_be.to_ne_bytes()),
    };
    // SAFETY: a map value pointer, valid for this program run; copied out at once.
    let Some(flow) = BACKEND_FLOWS
        .get_ptr(quote.backend_flow_key(backend))
        .map(|flow| unsafe { *flow })
    else {
        return Some(Verdict::Pass(stat::IN_ICMP_NOT_HANDED_OFF));
    };
    if flow.translation.is_awaiting_syn_ack() {
        // The server has sent the client nothing yet: nothing to translate with.
        return Some(Verdict::Pass(stat::IN_ICMP_NOT_HANDED_OFF));
    }
    let r = quote_to_backend_v4(&head, &tcp, backend, &flow.translation);
    Some(match write_quote(ctx, quoted_tcp, &r) {
        Ok(()) => Verdict::Pass(stat::IN_ICMP_TRANSLATED),
        Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
    })
}

/// Whether the frame is a front-end's probe (`baton_common::claim`).
#[inline(always)]
fn is_probe(l3: &EthIpv4) -> bool {
    [l3[ETH_PROTO], l3[ETH_PROTO + 1]] == ETH_P_PROBE
}

/// A front-end's probe (docs/design.md, "Clients without timestamps: probe and claim"):
/// a client segment of a flow that front-end does not know, its IPv4 packet unchanged,
/// and a trailer naming this back-end's address and port. A flow this module holds
/// (established: its SYN/ACK' seen) is claimed: the frame goes back to the prober's MAC
/// as a claim, the stamp the egress gives the flow in its trailer
/// (`baton_common::claim::claim_stamp`), out of this interface; the original is
/// dropped. A flow it does not hold, and anything malformed, is dropped and counted:
/// never passed up, where the stack has no handler for the EtherType and, were the
/// packet ever delivered as IPv4, would reset a connection another back-end holds.
/// The trailer is written in place: the probe brings its room, so no resize is needed.
#[inline(always)]
fn claim(ctx: &TcContext, config: &BackendConfig, head: &EthIpv4) -> Verdict {
    let Ok(at) = claim::trailer_offset(head, ctx.len() as usize) else {
        return Verdict::Drop(stat::PROBE_MALFORMED);
    };
    // At most 1500 bytes in: the mask keeps a bound in sight of the verifier.
    let at = at & 0x7ff;
    let (Ok(tcp), Ok(raw)) = (
        ctx.load::<TcpHeader>(ETH_IPV4_LEN),
        ctx.load::<[u8; claim::TRAILER_LEN]>(at),
    ) else {
        return Verdict::Drop(stat::PROBE_MALFORMED);
    };
    let mut trailer = Trailer::from_bytes(&raw);
    let client = (ip_saddr(head), u16::from_be_bytes(tcp_source(&tcp)));
    let service = (ip_daddr(head), u16::from_be_bytes(tcp_dest(&tcp)));
    if u32::from_ne_bytes(service.0) != config.vip_addr_be
        || tcp_dest(&tcp) != config.vip_port_be.to_ne_bytes()
    {
        return Verdict::Drop(stat::PROBE_NOT_HELD);
    }
    let key = BackendFlowKey {
        client_addr_be: u32::from_ne_bytes(client.0),
        backend_addr_be: u32::from_ne_bytes(trailer.backend_addr),
        client_port_be: u16::from_ne_bytes(tcp_source(&tcp)),
        backend_port_be: u16::from_ne_bytes(trailer.backend_port.to_be_bytes()),
    };
    // SAFETY: a map value pointer, valid for this program run; read at once.
    let held = BACKEND_FLOWS
        .get_ptr(key)
        .is_some_and(|flow| unsafe { !(*flow).translation.is_awaiting_syn_ack() });
    if !held {
        return Verdict::Drop(stat::PROBE_NOT_HELD);
    }
    trailer.stamp = claim::claim_stamp(&config.handoff_key, client, service, &trailer);
    let Ok(eth) = ctx.load::<[u8; ETH_HLEN]>(ETH_DEST) else {
        return Verdict::Drop(stat::PROBE_MALFORMED);
    };
    // SAFETY: the context pointer the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ctx
        .store(ETH_DEST, &claim::claim_ethernet(&eth), 0)
        .is_err()
        || ctx
            .store(at + claim::TRAILER_STAMP, &trailer.stamp.to_be_bytes(), 0)
            .is_err()
        || ctx.clone_redirect(ifindex, 0).is_err()
    {
        return Verdict::Drop(stat::PROBE_MALFORMED);
    }
    // The clone went out as the claim; the probe itself ends here.
    Verdict::Drop(stat::PROBE_CLAIMED)
}

/// Writes [`quote_to_backend_v4`]'s fields into the packet, its headers pulled into the
/// linear area first if they are not there. The ICMP checksum written makes up for
/// every other change, so the message's sum, and with it a `CHECKSUM_COMPLETE` skb's
/// `csum`, stays as it arrived.
#[inline(always)]
fn write_quote(ctx: &TcContext, quoted_tcp: usize, r: &QuoteRewriteV4) -> Result<(), ()> {
    let end = quoted_tcp + QUOTED_TCP_LEN;
    if ctx.data() + end > ctx.data_end() {
        ctx.pull_data(end as u32).map_err(|_| ())?;
    }
    let quoted_ip = ETH_HLEN + QUOTED_IP;
    // SAFETY: `packet_mut` checked every field lies inside the packet's linear data.
    unsafe {
        *packet_mut::<[u8; 4]>(ctx, quoted_ip + IP_SADDR)? = r.quoted_saddr;
        *packet_mut::<[u8; 2]>(ctx, quoted_ip + IP_CHECK)? = r.quoted_ip_check;
        *packet_mut::<[u8; 2]>(ctx, quoted_tcp + TCP_SOURCE)? = r.quoted_sport;
        *packet_mut::<[u8; 4]>(ctx, quoted_tcp + TCP_SEQ)? = r.quoted_seq;
        *packet_mut::<[u8; 2]>(ctx, ETH_HLEN + ICMP + ICMP_CHECK)? = r.icmp_check;
    }
    Ok(())
}

/// The flow key of a client segment (source: the client).
#[inline(always)]
fn flow_key_in<F: Family>(seg: &Segment<F::Addr>) -> F::Key {
    F::key(seg.saddr, seg.sport, seg.daddr, seg.dport)
}

/// `backend_syn`: the packet parsed again (the entry program passes nothing
/// else, see [`ingress_program`]) and its checks repeated, so that the program decides
/// soundly on whatever reaches it, then [`ingress_syn`].
fn syn<F: Family>(ctx: &TcContext) -> Option<Verdict> {
    let config = config_in_map()?;
    F::vip(config)?;
    let seg = match F::parse(ctx)? {
        Ok(seg) => seg,
        Err(()) => return Some(Verdict::Pass(stat::IN_MALFORMED)),
    };
    if u16::from_ne_bytes(seg.dport) != config.service_port_be || !is_syn(seg.flags) || seg.fragment
    {
        return None;
    }
    Some(ingress_syn::<F>(ctx, config, &seg))
}

/// A SYN whose handoff option is not verified (`check` says why): passed or dropped as
/// [`admit_syn`] says, which drops it if it carries data. The one-turn handoff has the
/// server take a SYN's data with TCP Fast Open and no cookie, which would otherwise
/// answer any spoofed SYN with a response to its forged source
/// (docs/one-turn-handoff-notes.md, "Security"). Decided on each such path before the
/// option is verified.
#[inline(always)]
fn unverified<F: Family>(
    ctx: &TcContext,
    seg: &Segment<F::Addr>,
    check: HandoffOptionCheck,
) -> Verdict {
    admit_syn(check, syn_data_len::<F>(ctx, seg) as u32).verdict()
}

/// The length of a SYN's data, from the IPv4 total length read again: kept in
/// [`Segment`] across the option's verification, it cost the SYN' program the 32 bytes of
/// stack that the verifier's 512 (for it and `parse_and_verify` together) no longer had.
/// An unreadable length counts as data, so that it is dropped rather than passed.
#[inline(always)]
fn syn_data_len<F: Family>(ctx: &TcContext, seg: &Segment<F::Addr>) -> usize {
    match F::ip_len(ctx) {
        Some(total) => total.saturating_sub(seg.tcp - ETH_HLEN + TCP_HLEN + seg.options_len),
        None => 1,
    }
}

#[inline(always)]
fn ingress_syn<F: Family>(
    ctx: &TcContext,
    config: &BackendConfig,
    seg: &Segment<F::Addr>,
) -> Verdict {
    // The option's 20 bytes, copied out of the options area, which is not kept across
    // the verification: the SYN' program's stack has no room for both beside the IPv6
    // binding. An option shorter than 20 bytes where the area ends is malformed, as the
    // verification would find it.
    let (option_bytes, start) = {
        let mut options_buf: OptionsBuf = [0; 60];
        let Ok(len) = load_options(ctx, seg, &mut options_buf) else {
            return unverified::<F>(ctx, seg, HandoffOptionCheck::Unreadable);
        };
        let options = opts(&options_buf);
        let span = match find_handoff_option(options) {
            Ok(Some(span)) => span,
            Ok(None) => return unverified::<F>(ctx, seg, HandoffOptionCheck::Absent),
            // An area we cannot walk is the kernel's to judge unless it claims to be ours.
            Err(_) => return unverified::<F>(ctx, seg, HandoffOptionCheck::Unreadable),
        };
        if span.start + span.len > len {
            // Runs past the options area into our zero padding: truncated.
            return unverified::<F>(ctx, seg, HandoffOptionCheck::Unreadable);
        }
        let Some(&bytes) = options
            .get(span.start..)
            .and_then(|s| s.first_chunk::<HANDOFF_OPTION_LEN>())
        else {
            return admit_syn(HandoffOptionCheck::BadOption, 0).verdict();
        };
        (bytes, span.start)
    };
    let seq = seg.seq;
    let binding = HandoffBinding {
        client_ip: seg.saddr,
        client_port: u16::from_be_bytes(seg.sport),
        backend_ip: seg.daddr,
        backend_port: u16::from_be_bytes(seg.dport),
        client_isn: u32::from_be_bytes(seq),
    };
    // During a key rotation, the key being retired is tried when the current one fails.
    // The key is chosen first and the option verified once with it. A reference into the
    // configuration map, not a copy: the SYN' program's stack has no room for the copy
    // beside the IPv6 binding (the verifier walks the verification once per key instead).
    let previous = config.flags & BackendConfig::PREVIOUS_KEY != 0
        && matches!(
            HandoffOption::parse_and_verify(&option_bytes, &config.handoff_key, &binding),
            Err(HandoffOptionError::BadTag)
        );
    let tag_key = if previous {
        &config.previous_handoff_key
    } else {
        &config.handoff_key
    };
    let option = match HandoffOption::parse_and_verify(&option_bytes, tag_key, &binding) {
        Ok(option) => option,
        // Dropped whatever they carry: data plays no part in the decision.
        Err(HandoffOptionError::BadTag) => {
            return admit_syn(HandoffOptionCheck::BadTag, 0).verdict();
        }
        Err(_) => return admit_syn(HandoffOptionCheck::BadOption, 0).verdict(),
    };
    if previous {
        count(stat::IN_SYN_PREVIOUS_KEY);
    }
    // Made now, not before the verification, whose stack it would share (the IPv6 key is
    // 36 bytes).
    let key = &flow_key_in::<F>(seg);
    // A repeated SYN' of the same connection keeps its entry (which may be complete
    // already); a new connection on the same ports replaces it.
    // SAFETY: the value is read once and copied; no reference outlives the lookup.
    let same = unsafe { F::flows().get(key) }
        .is_some_and(|flow| flow.is_same_connection(binding.client_isn));
    if F::LOCAL_HANDSHAKE && same && completed_here::<F>(key, binding.client_isn) != 0 {
        // The server's handshake was completed here (`BackendFlow::answers_repeated_syn`):
        // it would answer the SYN with a challenge ACK to the client, so the SYN/ACK'
        // the front-end needs as proof is made for it, in a program of its own (this one
        // has no stack to spare), which does not return; with its slot empty the SYN'
        // goes to the server as before. The option's terms go in the control block,
        // which the tail call keeps.
        // SAFETY: the context pointer the kernel passed in; `cb` is the program's
        // scratch space, read only by the program called next.
        unsafe {
            (*ctx.skb.skb).cb[0] = option.isn_f();
            (*ctx.skb.skb).cb[1] = option.tsv_f();
            BACKEND_INGRESS_PROGRAMS.tail_call(ctx, ingress_program::REPEATED_SYN)
        };
    }
    if !same
        && F::flows()
            .insert(
                key,
                BackendFlow::new(
                    option
                        .translation()
                        .with_client_window(passed_client_window(ctx)),
                    binding.client_isn,
                    seg.flags,
                    syn_data_len::<F>(ctx, seg) as u16,
                ),
                u64::from(BPF_ANY),
            )
            .is_err()
    {
        return Verdict::Drop(stat::IN_FLOW_TABLE_FULL);
    }
    // The server must see a plain SYN: NOPs in place of the option, checksum fixed.
    let mut rewrite = Rewrite::new(ctx, seg);
    let at = seg.tcp + TCP_OPTIONS + start;
    for chunk in 0..HANDOFF_OPTION_LEN / 4 {
        let i = chunk * 4;
        let Some(&old) = option_bytes
            .get(i..i + 4)
            .and_then(|s| s.first_chunk::<4>())
        else {
            return Verdict::Drop(stat::REWRITE_FAILED);
        };
        if rewrite.field4(at + chunk * 4, old, [1; 4]).is_err() {
            return Verdict::Drop(stat::REWRITE_FAILED);
        }
    }
    if rewrite.finish().is_err() {
        return Verdict::Drop(stat::REWRITE_FAILED);
    }
    // Decided here, at the end, so that nothing more is kept on the stack across the
    // option's verification (see `syn_data_len`).
    let admission = admit_syn(
        HandoffOptionCheck::Verified,
        syn_data_len::<F>(ctx, seg) as u32,
    );
    if let SynAdmission::Accept { with_data: true } = admission {
        count(stat::IN_SYN_DATA_ACCEPTED);
    }
    admission.verdict()
}

/// 1 if the entry of `key` is of the connection `client_isn` and its server's handshake
/// was completed by the egress (`BackendFlow::answers_repeated_syn`), else 0.
///
/// Out of line (a BPF subprogram, returning an integer as one must) and given only the
/// key and a scalar, like [`client_window`]: inlined, the two took the SYN' program's
/// stack, with the option's verification's, past the 512 bytes the verifier allows a
/// call chain.
#[inline(never)]
fn completed_here<F: Family>(key: &F::Key, client_isn: u32) -> u32 {
    // SAFETY: the value is read once; no reference outlives the lookup.
    let completed = unsafe { F::flows().get(key) }
        .is_some_and(|flow| flow.is_same_connection(client_isn) && flow.answers_repeated_syn());
    u32::from(completed)
}

/// Marks [`CB_CLIENT_WINDOW`] as written by this build's `backend_ingress`: the control
/// block is not cleared before tc runs, and an entry program of an older build (a live
/// upgrade) writes nothing there.
const CLIENT_WINDOW_WRITTEN: u32 = 0xb7_0000;
/// The control block word in which `backend_ingress` hands `backend_syn` the window
/// field the client's handshake-completing ACK will announce.
const CB_CLIENT_WINDOW: usize = 2;

/// The window field the client's handshake-completing ACK will announce, should the
/// egress make it ([`Translation::client_window`]): the SYN''s window field in the
/// client's scale, its shift read at its constant offset in the SYN'
/// (`baton_common::syn_prime`). Worked out by `backend_ingress` before its tail call and
/// handed over in the control block: in the SYN' program, a walk of the options took it
/// past the verifier's million instructions, and even this read past the 512 bytes of
/// stack it and the option's verification may use together. 0, and no such ACK, for a
/// SYN' of another layout.
#[inline(always)]
fn client_window<A>(ctx: &TcContext, seg: &Segment<A>) -> u32 {
    let Ok(options) = ctx.load::<[u8; MAX_OPTIONS_LEN]>(seg.tcp + TCP_OPTIONS) else {
        return CLIENT_WINDOW_WRITTEN;
    };
    let window = match syn_prime_window_shift(&options) {
        Some(shift) => client_ack_window(u16::from_be_bytes(seg.window), shift),
        None => 0,
    };
    CLIENT_WINDOW_WRITTEN | u32::from(window)
}

/// What [`client_window`] handed over, or 0 if the entry program did not write it.
#[inline(always)]
fn passed_client_window(ctx: &TcContext) -> u16 {
    // SAFETY: the context pointer the kernel passed in.
    let word = unsafe { (*ctx.skb.skb).cb[CB_CLIENT_WINDOW] };
    if word & 0xffff_0000 == CLIENT_WINDOW_WRITTEN {
        word as u16
    } else {
        0
    }
}

/// Whether the packet's ECN field is CE (RFC 3168 §5). The TOS byte (IPv6's traffic
/// class) is read here and never written by either program.
#[inline(always)]
fn ce_marked<F: Family>(ctx: &TcContext) -> bool {
    F::tos(ctx).is_some_and(ce)
}

/// C→B: ack, SACK edges and TSecr into the back-end's terms.
#[inline(always)]
fn translate_in<A>(ctx: &TcContext, seg: &Segment<A>, t: &Translation) -> Result<(), ()> {
    let mut rewrite = Rewrite::new(ctx, seg);
    if seg.flags & ACK != 0 {
        let new = t.ack_to_backend(u32::from_be_bytes(seg.ack)).to_be_bytes();
        rewrite.field4(seg.tcp + TCP_ACK_SEQ, seg.ack, new)?;
    }
    if t.has_timestamps() || t.has_sack() {
        let mut options_buf: OptionsBuf = [0; 60];
        load_options(ctx, seg, &mut options_buf)?;
        let options = opts(&options_buf);
        let base = seg.tcp + TCP_OPTIONS;
        if t.has_timestamps()
            && let Some(ts) = timestamps(options)
        {
            let old = field4(options, ts + TSOPT_TSECR)?;
            let new = t.tsecr_to_backend(u32::from_be_bytes(old)).to_be_bytes();
            rewrite.field4(base + ts + TSOPT_TSECR, old, new)?;
        }
        if t.has_sack()
            && let Some((at, blocks)) = sack(options)
        {
            for edge in 0..2 * baton_common::tcp_options::MAX_SACK_BLOCKS {
                if edge >= 2 * blocks {
                    break;
                }
                let at = at + SACKOPT_EDGES + edge * SEQ_LEN;
                let old = field4_barrier(options, at)?;
                let new = t
                    .sack_edge_to_backend(u32::from_be_bytes(old))
                    .to_be_bytes();
                rewrite.field4(base + at, old, new)?;
            }
        }
    }
    rewrite.finish()
}

fn egress(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    // Not IPv4 TCP: IPv6 goes on in `backend_egress_v6`.
    let Some(parsed) = parse_v4(ctx) else {
        return to_ipv6_program(ctx, ipv6_program::EGRESS);
    };
    let seg = match parsed {
        Ok(seg) => seg,
        Err(()) => return Some(Verdict::Pass(stat::OUT_MALFORMED)),
    };
    egress_segment::<V4>(ctx, &config, &seg)
}

/// `backend_egress_v6`: the IPv6 frame `backend_egress` handed over, on the same path as
/// IPv4's.
fn egress_v6(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    let seg = match parse_v6(ctx)? {
        Ok(seg) => seg,
        Err(()) => return Some(Verdict::Pass(stat::OUT_MALFORMED)),
    };
    egress_segment::<V6>(ctx, &config, &seg)
}

/// A server segment of either family.
#[inline(always)]
fn egress_segment<F: Family>(
    ctx: &TcContext,
    config: &BackendConfig,
    seg: &Segment<F::Addr>,
) -> Option<Verdict> {
    let vip = F::vip(config)?;
    // Our own copies to the front-end pass here again, already from the VIP: not counted.
    if u16::from_ne_bytes(seg.sport) != config.service_port_be || seg.saddr == vip {
        return None;
    }
    let key = F::key(seg.daddr, seg.dport, seg.saddr, seg.sport);
    if seg.fragment {
        let held = F::flows().get_ptr(&key).is_some();
        return ipv6_fragment_fate(held, stat::OUT_IPV6_FRAGMENT);
    }
    let Some(flow) = F::flows().get_ptr_mut(&key) else {
        return Some(Verdict::Pass(stat::OUT_NOT_HANDED_OFF));
    };
    // SAFETY: a map value pointer, valid for this program run.
    let mut value = unsafe { *flow };
    let syn_ack = seg.flags & (SYN | ACK) == (SYN | ACK);
    if syn_ack {
        let fate = value.syn_ack_fate(u32::from_be_bytes(seg.ack));
        match fate {
            SynAckFate::ToFrontend => {}
            SynAckFate::Absorbed | SynAckFate::RepeatToFrontend => {
                if fate == SynAckFate::RepeatToFrontend {
                    // The server retransmits it: the client resent its request (whose
                    // acknowledgement rode on the absorbed one) and the front-end the
                    // SYN', or the server's timer fired. It goes to the front-end below,
                    // translated: the proof that the server has the request, and its
                    // call for the client's ACK, which the front-end answers.
                    count(stat::OUT_SYN_ACK_REPEAT_TO_FRONTEND);
                }
                // Noted in the map, not in a variable: the SYN/ACK' rewrite below
                // then walks the same paths for either fate (the egress's verifier
                // budget has no room for two).
                // SAFETY: a map value pointer, valid for this program run.
                unsafe { (*flow).state |= fate.marks() };
            }
            SynAckFate::OtherConnection => {
                // The server answers another SYN than this entry's SYN' (which it, like
                // a retransmission of its SYN/ACK', would acknowledge as `client_isn +
                // 1`, or past the SYN''s data): a new connection on the ports of an
                // earlier handed-off one, from a client reaching this host's own
                // address. Taken for the old connection, its SYN/ACK would go to the
                // front-end and the client would never connect. Entries of older builds
                // (`client_isn` 0) cannot tell, and keep the old behaviour.
                let _ = F::flows().remove(&key);
                return Some(Verdict::Pass(stat::OUT_STALE_FLOW_REMOVED));
            }
        }
    }
    if !syn_ack {
        match server_segment_fate(&value, seg.flags) {
            ServerSegmentFate::Translate => {}
            ServerSegmentFate::Drop(stat) => return Some(Verdict::Drop(stat)),
            // The server refused the connection before the handoff finished: the
            // front-end must learn of it to try another back-end.
            ServerSegmentFate::ControlToFrontend => {
                return Some(
                    match to_frontend_addresses::<F>(ctx, seg, config, vip)
                        .and_then(|()| set_dst_mac(ctx, config.frontend_mac))
                    {
                        Ok(()) => Verdict::Pass(stat::OUT_CONTROL_TO_FRONTEND),
                        Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
                    },
                );
            }
        }
    }
    let mut options_buf: OptionsBuf = [0; 60];
    if load_options(ctx, seg, &mut options_buf).is_err() {
        return Some(Verdict::Drop(stat::REWRITE_FAILED));
    }
    let options = opts(&options_buf);
    if syn_ack {
        let isn = seg.seq;
        let tsval = match timestamps(options) {
            Some(ts) => match field4(options, ts + TSOPT_TSVAL) {
                Ok(v) => u32::from_be_bytes(v),
                Err(()) => return Some(Verdict::Drop(stat::REWRITE_FAILED)),
            },
            None => 0,
        };
        value.translation = value.translation.with_backend(SynAckTerms {
            isn: u32::from_be_bytes(isn),
            tsval,
            window_shift: window_shift(options).unwrap_or(0),
        });
        // The stamp, once per connection (`baton_common::stamp`): kept in the entry for
        // every later segment to the client, and left out of this SYN/ACK', whose TSval
        // the front-end set and the client never sees.
        let stamp =
            if config.flags & BackendConfig::STAMPS != 0 && value.translation.has_timestamps() {
                F::stamp(config, vip, seg)
            } else {
                0
            };
        value.translation = value.translation.with_stamp(0);
        // SAFETY: as above; the completed translation serves every later segment. The
        // flags pass untouched (ECE included: the front-end reads the server's answer to
        // the ECN request); the entry notes a refusal, written straight to the map so
        // that nothing below depends on it. An absorbed SYN/ACK' has marked it already.
        let state = unsafe {
            (*flow).translation = value.translation.with_stamp(stamp);
            (*flow).state |= value.state_after_syn_ack(seg.flags);
            (*flow).state
        };
        let absorbed = BackendFlow::keeps_syn_ack(state);
        if absorbed {
            // The server took the request with the SYN' (one-turn handoff): the
            // SYN/ACK' stays here; the flow is confirmed, so that nothing but a RST is
            // copied to the front-end, which learns of the handoff from the client's
            // acknowledgement of the answer (noticed by its XDP). The client had its
            // SYN/ACK from the front-end, and the front-end needs none (docs/design.md,
            // "The one-turn handoff"). And the client's ACK of it, which the client
            // cannot send, is made of it here (`BackendFlow::completes_handshake`).
            if F::LOCAL_HANDSHAKE
                && BackendFlow::completes_handshake(config.flags, state, value.translation)
            {
                // In a program of its own (`backend_local_ack`), which does not return
                // and whose verdict is this one's: inline, it took this program past the
                // verifier's million instructions. With its slot empty the server stays
                // in SYN-RECV and repeats its SYN/ACK', which goes to the front-end, as
                // without the completion.
                // SAFETY: the context the kernel passed this program, as the helper needs.
                unsafe { BACKEND_INGRESS_PROGRAMS.tail_call(ctx, ingress_program::LOCAL_ACK) };
            }
            return Some(Verdict::Drop(stat::OUT_SYN_ACK_ABSORBED));
        }
    }
    if translate_out::<F>(ctx, seg, config, vip, &value.translation, options, syn_ack).is_err() {
        return Some(Verdict::Drop(stat::REWRITE_FAILED));
    }
    if syn_ack {
        // The SYN/ACK' goes to the front-end only: the client already had its SYN/ACK.
        return Some(match set_dst_mac(ctx, config.frontend_mac) {
            Ok(()) => Verdict::Pass(stat::OUT_SYN_ACK_TO_FRONTEND),
            Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
        });
    }
    let copy = frontend_copy(seg.flags, seg.payload_len as u32, value.state);
    if let Some(counter) = copy.counter {
        if copy_to_frontend(ctx, config.frontend_mac).is_err() {
            return Some(Verdict::Drop(stat::REWRITE_FAILED));
        }
        if copy.confirms {
            // SAFETY: as above.
            unsafe { (*flow).state |= BackendFlow::CONFIRMED };
        }
        count(counter);
    }
    Some(Verdict::Pass(stat::OUT_TRANSLATED))
}

/// `backend_local_ack`: the absorbed SYN/ACK' parsed again and its entry looked up again
/// (the egress passes nothing but the packet), the client's ACK made of it and fed to
/// the ingress ([`complete_handshake`]) if the entry still calls for it
/// (`BackendFlow::completes_handshake`, not yet done), and the SYN/ACK' dropped as the
/// egress would have.
fn local_ack(ctx: &TcContext) -> Option<Verdict> {
    const ABSORBED: Verdict = Verdict::Drop(stat::OUT_SYN_ACK_ABSORBED);
    let config = config()?;
    let Some(Ok(seg)) = parse_v4(ctx) else {
        return Some(ABSORBED);
    };
    if u16::from_ne_bytes(seg.sport) != config.service_port_be
        || seg.flags & (SYN | ACK) != SYN | ACK
    {
        return Some(ABSORBED);
    }
    let key = BackendFlowKey {
        client_addr_be: u32::from_ne_bytes(seg.daddr),
        backend_addr_be: u32::from_ne_bytes(seg.saddr),
        client_port_be: u16::from_ne_bytes(seg.dport),
        backend_port_be: u16::from_ne_bytes(seg.sport),
    };
    let Some(flow) = BACKEND_FLOWS.get_ptr_mut(key) else {
        return Some(ABSORBED);
    };
    // SAFETY: a map value pointer, valid for this program run.
    let value = unsafe { *flow };
    if !BackendFlow::completes_handshake(config.flags, value.state, value.translation)
        || value.answers_repeated_syn()
    {
        return Some(ABSORBED);
    }
    let mut options_buf: OptionsBuf = [0; 60];
    if load_options(ctx, &seg, &mut options_buf).is_err() {
        return Some(ABSORBED);
    }
    let options = opts(&options_buf);
    let ts = timestamps(options);
    let (tsval, tsecr) = match ts {
        Some(ts) => match (
            field4(options, ts + TSOPT_TSVAL),
            field4(options, ts + TSOPT_TSECR),
        ) {
            (Ok(tsval), Ok(tsecr)) => (u32::from_be_bytes(tsval), u32::from_be_bytes(tsecr)),
            _ => return Some(ABSORBED),
        },
        None => (0, 0),
    };
    let ack = value.local_ack(SynAckSeen {
        seq: u32::from_be_bytes(seg.seq),
        ack: u32::from_be_bytes(seg.ack),
        tsval,
        tsecr,
    });
    if complete_handshake(ctx, &seg, &ack, ts).is_ok() {
        // SAFETY: as above.
        unsafe { (*flow).state |= BackendFlow::HANDSHAKE_COMPLETED };
        count(stat::OUT_HANDSHAKE_COMPLETED);
    }
    Some(ABSORBED)
}

/// Turns the absorbed SYN/ACK' (dropped after this) into the client's ACK `ack` and
/// feeds a clone of it to this interface's ingress (`BPF_F_INGRESS`, as Katran and
/// Cilium reflect packets), where `backend_ingress` translates it like any client
/// segment and the server's TCP completes its handshake. Addresses, ports and MACs are
/// swapped, which leaves both checksums as they were (one's-complement sums commute,
/// the pseudo-header's too); the fields that change go through [`Rewrite`], right for a
/// `CHECKSUM_PARTIAL` SYN/ACK' as for a complete one. The SYN/ACK''s other options
/// (MSS, window scale, SACK-permitted) stay: Linux reads them only on a SYN
/// (`tcp_parse_options`). The destination MAC becomes this interface's own, or the
/// stack would take the clone for another host's.
#[inline(always)]
fn complete_handshake(
    ctx: &TcContext,
    seg: &Segment<[u8; 4]>,
    ack: &LocalAck,
    ts: Option<usize>,
) -> Result<(), ()> {
    let doff: [u8; 2] = ctx.load(seg.tcp + TCP_DOFF).map_err(|_| ())?;
    let mut rewrite = Rewrite::new(ctx, seg);
    rewrite.field4(seg.tcp + TCP_SEQ, seg.seq, ack.seq.to_be_bytes())?;
    rewrite.field4(seg.tcp + TCP_ACK_SEQ, seg.ack, ack.ack.to_be_bytes())?;
    rewrite.field2(seg.tcp + TCP_DOFF, doff, [doff[0], ACK])?;
    rewrite.field2(seg.tcp + TCP_WINDOW, seg.window, ack.window.to_be_bytes())?;
    if let Some(ts) = ts {
        let at = seg.tcp + TCP_OPTIONS + ts;
        let tsval: [u8; 4] = ctx.load(at + TSOPT_TSVAL).map_err(|_| ())?;
        let tsecr: [u8; 4] = ctx.load(at + TSOPT_TSECR).map_err(|_| ())?;
        rewrite.field4(at + TSOPT_TSVAL, tsval, ack.tsval.to_be_bytes())?;
        rewrite.field4(at + TSOPT_TSECR, tsecr, ack.tsecr.to_be_bytes())?;
    }
    rewrite.finish()?;
    let macs: [u8; 2 * ETH_ALEN] = ctx.load(ETH_DEST).map_err(|_| ())?;
    let ports: [u8; 4] = ctx.load(seg.tcp + TCP_SOURCE).map_err(|_| ())?;
    // SAFETY: `packet_mut` checked each field lies inside the packet's linear data.
    unsafe {
        *packet_mut::<[u8; 4]>(ctx, ETH_HLEN + IP_SADDR)? = seg.daddr;
        *packet_mut::<[u8; 4]>(ctx, ETH_HLEN + IP_DADDR)? = seg.saddr;
        *packet_mut::<[u8; 4]>(ctx, seg.tcp + TCP_SOURCE)? =
            [ports[2], ports[3], ports[0], ports[1]];
        *packet_mut::<[u8; 2 * ETH_ALEN]>(ctx, ETH_DEST)? = [
            macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2],
            macs[3], macs[4], macs[5],
        ];
    }
    // SAFETY: the context pointer the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ctx.clone_redirect(ifindex, u64::from(BPF_F_INGRESS))
        .map_err(|_| ())
}

/// `backend_repeated_syn`: the SYN' parsed again and its entry looked up again (the
/// entry program passes nothing but the packet and, from `backend_syn`, the verified
/// option's `isn_f` and `tsv_f` in `cb`), then turned into the SYN/ACK' the server's
/// repeat would have been ([`SynAckProof`]), sent to the front-end, and dropped: the
/// server, established, has nothing to learn from it.
fn repeated_syn(ctx: &TcContext) -> Option<Verdict> {
    let config = config()?;
    let seg = match parse_v4(ctx)? {
        Ok(seg) => seg,
        Err(()) => return Some(Verdict::Drop(stat::IN_MALFORMED)),
    };
    if u16::from_ne_bytes(seg.dport) != config.service_port_be || !is_syn(seg.flags) {
        return None;
    }
    // SAFETY: the value is read once and copied.
    let flow = unsafe { BACKEND_FLOWS.get(flow_key_in::<V4>(&seg)) }.copied();
    let Some(flow) = flow
        .filter(|f| f.is_same_connection(u32::from_be_bytes(seg.seq)) && f.answers_repeated_syn())
    else {
        return Some(Verdict::Drop(stat::REWRITE_FAILED));
    };
    // A SYN' has no IP options (the front-end builds it), which the proof's layout
    // relies on.
    if seg.tcp != ETH_HLEN + IPV4_HLEN {
        return Some(Verdict::Drop(stat::IN_MALFORMED));
    }
    let tcp_len = TCP_HLEN + seg.options_len;
    let len = ((IPV4_HLEN + tcp_len) as u32) & 0x7f;
    if len as usize > SYN_ACK_PROOF_ROOM || (len as usize) < IPV4_HLEN + TCP_HLEN {
        return Some(Verdict::Drop(stat::IN_MALFORMED));
    }
    let mut headers = [0u8; SYN_ACK_PROOF_ROOM];
    // SAFETY: `headers` holds SYN_ACK_PROOF_ROOM >= len bytes; the kernel checks the
    // packet side.
    if unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            ETH_HLEN as u32,
            headers.as_mut_ptr().cast(),
            len,
        )
    } != 0
    {
        return Some(Verdict::Drop(stat::REWRITE_FAILED));
    }
    // SAFETY: the context pointer the kernel passed in; `backend_syn` wrote the two
    // words before its tail call.
    let (isn_f, tsv_f) = unsafe { ((*ctx.skb.skb).cb[0], (*ctx.skb.skb).cb[1]) };
    let proof = SynAckProof {
        isn_f,
        tsv_f,
        request_len: flow.syn_data_len(),
        vip_addr: config.vip_addr_be.to_ne_bytes(),
        vip_port: config.vip_port_be.to_ne_bytes(),
    };
    if proof.write(&mut headers, tcp_len).is_none() {
        return Some(Verdict::Drop(stat::IN_MALFORMED));
    }
    Some(match send_proof(ctx, &config, &headers, len) {
        Ok(()) => Verdict::Drop(stat::IN_SYN_REPEAT_ANSWERED),
        Err(()) => Verdict::Drop(stat::REWRITE_FAILED),
    })
}

/// The SYN' cut to its headers, which become `headers` (`len` bytes from the IPv4
/// header), from this interface to the front-end's MAC, and a clone of it sent out of
/// the interface (the egress passes it: its source is the VIP).
#[inline(always)]
fn send_proof(
    ctx: &TcContext,
    config: &BackendConfig,
    headers: &[u8; SYN_ACK_PROOF_ROOM],
    len: u32,
) -> Result<(), ()> {
    let own: [u8; ETH_ALEN] = ctx.load(ETH_DEST).map_err(|_| ())?;
    // SAFETY: the context pointer the kernel passed in; `headers` holds at least `len`
    // bytes (checked by the caller against its size).
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb.cast(), ETH_HLEN as u32 + len, 0) != 0 {
            return Err(());
        }
        if bpf_skb_store_bytes(
            ctx.skb.skb.cast(),
            ETH_HLEN as u32,
            headers.as_ptr().cast(),
            len,
            u64::from(BPF_F_RECOMPUTE_CSUM),
        ) != 0
        {
            return Err(());
        }
    }
    ctx.store(ETH_SOURCE, &own, 0).map_err(|_| ())?;
    set_dst_mac(ctx, config.frontend_mac)?;
    // SAFETY: the context pointer the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ctx.clone_redirect(ifindex, 0).map_err(|_| ())
}

/// B→C: source VIP, seq, TSval and (except on SYN) the window into the client's terms.
#[inline(always)]
fn translate_out<F: Family>(
    ctx: &TcContext,
    seg: &Segment<F::Addr>,
    config: &BackendConfig,
    vip: F::Addr,
    t: &Translation,
    options: &[u8; MAX_OPTIONS_LEN],
    syn: bool,
) -> Result<(), ()> {
    let mut rewrite = Rewrite::new(ctx, seg);
    let new = t.seq_to_client(u32::from_be_bytes(seg.seq)).to_be_bytes();
    rewrite.field4(seg.tcp + TCP_SEQ, seg.seq, new)?;
    if !syn {
        // RFC 7323 section 2.2: the window of a SYN segment is never scaled.
        let new = t
            .window_to_client(u16::from_be_bytes(seg.window))
            .to_be_bytes();
        rewrite.field2(seg.tcp + TCP_WINDOW, seg.window, new)?;
    }
    if t.has_timestamps()
        && let Some(ts) = timestamps(options)
    {
        let old = field4(options, ts + TSOPT_TSVAL)?;
        let new = t.tsval_to_client(u32::from_be_bytes(old)).to_be_bytes();
        rewrite.field4(seg.tcp + TCP_OPTIONS + ts + TSOPT_TSVAL, old, new)?;
    }
    rewrite.port_to_vip(config)?;
    rewrite.finish()?;
    F::source_to_vip(ctx, seg, vip)
}

/// The source port becomes the VIP's, when they differ, as part of a [`Rewrite`].
impl Rewrite<'_> {
    #[inline(always)]
    fn port_to_vip(&mut self, config: &BackendConfig) -> Result<(), ()> {
        let port = config.vip_port_be.to_ne_bytes();
        let old = self.sport;
        self.field2(self.tcp + TCP_SOURCE, old, port)
    }
}

/// The addresses and port a control segment needs to reach the front-end as the VIP's.
#[inline(always)]
fn to_frontend_addresses<F: Family>(
    ctx: &TcContext,
    seg: &Segment<F::Addr>,
    config: &BackendConfig,
    vip: F::Addr,
) -> Result<(), ()> {
    let mut rewrite = Rewrite::new(ctx, seg);
    rewrite.port_to_vip(config)?;
    rewrite.finish()?;
    F::source_to_vip(ctx, seg, vip)
}

#[inline(always)]
fn set_dst_mac(ctx: &TcContext, mac: [u8; 6]) -> Result<(), ()> {
    ctx.store(ETH_DEST, &mac, 0).map_err(|_| ())
}

/// Sends a copy of the (already translated) segment to the front-end on the same link,
/// then restores the original destination MAC for the client-bound original. The copy
/// passes through this program again, where its source (now the VIP) matches no flow.
#[inline(always)]
fn copy_to_frontend(ctx: &TcContext, frontend_mac: [u8; 6]) -> Result<(), ()> {
    let original: [u8; ETH_ALEN] = ctx.load(ETH_DEST).map_err(|_| ())?;
    set_dst_mac(ctx, frontend_mac)?;
    // SAFETY: the context pointer the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ctx.clone_redirect(ifindex, 0).map_err(|_| ())?;
    set_dst_mac(ctx, original)
}

#[inline(always)]
fn field4(options: &[u8; MAX_OPTIONS_LEN], at: usize) -> Result<[u8; 4], ()> {
    options
        .get(at..at + 4)
        .and_then(|s| s.first_chunk::<4>())
        .copied()
        .ok_or(())
}

/// [`field4`] for an index the compiler would otherwise turn into a stack pointer before
/// the bounds check, checking a copy: the verifier, which tracks bounds per register,
/// then sees a pointer that may leave the buffer ("invalid variable-offset read from
/// stack") even though the check holds. The index passes through `black_box` after the
/// check, so the pointer can only be made from the checked value.
#[inline(always)]
fn field4_barrier(options: &[u8; MAX_OPTIONS_LEN], at: usize) -> Result<[u8; 4], ()> {
    if at + 4 > MAX_OPTIONS_LEN {
        return Err(());
    }
    field4(options, core::hint::black_box(at))
}

/// A pointer to `T` at `offset` in the packet's linear data, checked against its end so
/// the verifier accepts the access.
#[inline(always)]
fn packet_mut<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, ()> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// The field rewrites of one segment: each written straight into the packet, their
/// checksum difference summed and applied with one helper call in [`Rewrite::finish`]
/// (a helper call per field was most of a packet's cost). Headers are pulled into the
/// linear area first if they are not there already.
struct Rewrite<'a> {
    ctx: &'a TcContext,
    tcp: usize,
    sport: [u8; 2],
    diff: ChecksumDiff,
    changed: bool,
    linear: Result<(), ()>,
}

impl<'a> Rewrite<'a> {
    #[inline(always)]
    fn new<A>(ctx: &'a TcContext, seg: &Segment<A>) -> Self {
        let headers = seg.tcp + TCP_OPTIONS + seg.options_len;
        let linear = if ctx.data() + headers <= ctx.data_end() {
            Ok(())
        } else {
            ctx.pull_data(headers as u32).map_err(|_| ())
        };
        Self {
            ctx,
            tcp: seg.tcp,
            sport: seg.sport,
            diff: ChecksumDiff::new(),
            changed: false,
            linear,
        }
    }

    /// A 4-byte field at packet offset `at`, from `old` to `new`.
    #[inline(always)]
    fn field4(&mut self, at: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), ()> {
        self.linear?;
        if old == new {
            return Ok(());
        }
        // SAFETY: checked inside the packet by `packet_mut`; `[u8; 4]` has alignment 1.
        unsafe { *packet_mut::<[u8; 4]>(self.ctx, at)? = new };
        self.diff = self.diff.field4(old, new, (at - self.tcp) & 1 == 1);
        self.changed = true;
        Ok(())
    }

    /// A 2-byte field at packet offset `at`, from `old` to `new`.
    #[inline(always)]
    fn field2(&mut self, at: usize, old: [u8; 2], new: [u8; 2]) -> Result<(), ()> {
        self.linear?;
        if old == new {
            return Ok(());
        }
        // SAFETY: as in `field4`.
        unsafe { *packet_mut::<[u8; 2]>(self.ctx, at)? = new };
        self.diff = self.diff.field2(old, new, (at - self.tcp) & 1 == 1);
        self.changed = true;
        Ok(())
    }

    /// Applies the summed difference to the TCP checksum (the helper's "by diff" form,
    /// size 0), which leaves a `CHECKSUM_PARTIAL` packet's field alone, as it must.
    #[inline(always)]
    fn finish(self) -> Result<(), ()> {
        if !self.changed {
            return Ok(());
        }
        self.ctx
            .l4_csum_replace(self.tcp + TCP_CHECK, 0, u64::from(self.diff.as_wsum()), 0)
            .map_err(|_| ())
    }
}
