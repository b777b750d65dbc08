//! The front-end fast path for IPv6 (docs/design.md, "IPv6: the plan", "The front-end's
//! XDP program"): a program of its own, `frontend_forward_v6`, which `frontend_forward`
//! reaches by tail call (`FRONTEND_PROGRAMS`) for an IPv6 frame, so that it has its own
//! verifier budget and IPv4's path is the same as without it (IPv4 TCP reaches the
//! EtherType's compare only once `classify` has found a frame not its own).
//!
//! A client segment of an IPv6 flow in `FRONTEND_FLOWS_V6` (the IPv4 table's twin,
//! 16-byte addresses) is judged with the decision IPv4's segments are
//! (`baton_common::frontend::decide_client_segment`), rewritten to its back-end (the
//! destination address and port, MACs; IPv6 has no header checksum, the TCP checksum is
//! updated with `csum_replace16`) and sent back out (`XDP_TX`); the client's FIN and RST
//! at the expected number are told to the daemon through `FRONTEND_NOTICES_V6`, as
//! IPv4's through `FRONTEND_NOTICES`. The checksum rules are IPv4's (frontend.rs, module
//! docs, "Checksums"): a payload's complete field is updated incrementally, a partial one
//! goes up; a header-only segment is summed whole.
//!
//! Before TCP, the extension headers are walked (`baton_common::ipv6::
//! walk_extension_headers`): a fragment, AH or ESP, a routing header with segments left,
//! an unknown extension header or more than four, to a VIP6, are dropped and counted
//! (`stat::DROP_IPV6_*`). TCP after extension headers crossed (hop-by-hop, destination
//! options) has no constant offset: it goes up, counted as IPv4 with options is
//! (`stat::PASS_UNUSUAL_IP`).
//!
//! What goes up untouched: segments of flows the table does not hold (counted as IPv4's
//! are), SYNs (the slow path's IPv6 SYN handling, cookies in XDP and dispatch in the
//! kernel are not built for IPv6: every IPv6 SYN goes up), neighbour discovery and echo
//! (ICMPv6 133 to 137, 128, 129, uncounted), and anything to no VIP6. An ICMPv6 "packet
//! too big" to a VIP6 goes to the back-end of the flow its quote names
//! (`icmpv6_to_vip`), as IPv4's "fragmentation needed" does.

use aya_ebpf::{
    bindings::{BPF_RB_NO_WAKEUP, xdp_action::XDP_PASS},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{HashMap, RingBuf},
    programs::XdpContext,
};
use baton_common::{
    frontend::{
        AwaitedAnswer, ClientSegment, DEFAULT_FLOW_TABLE_SIZE, Echo, FlowNotice, FlowNoticeV6,
        FrontendConfig, FrontendFlow, FrontendFlowKeyV6, FrontendFlowV6, FrontendServiceV6,
        MAX_SERVICES, NOTICE_RING_SIZE, decide_client_segment, redirected_tcp_checksum_v6, stat,
        tcp_checksum,
    },
    icmp::{QUOTED_TCP_LEN, QuotedTcp},
    icmpv6::{
        ICMPV6_CHECK, ICMPV6_HEAD_LEN, ICMPV6_PACKET_TOO_BIG, ICMPV6_TYPE, Icmpv6Message,
        icmpv6_check_for_destination, parse_packet_too_big, quoted_segment_v6,
    },
    ipv6::{
        ETH_IPV6_LEN, EXTENSION_PEEK_LEN, IP6_DADDR, IP6_PAYLOAD_LEN, IP6_SADDR, IPV6_ALEN,
        IPV6_HLEN, Ipv6Address, Ipv6Error, Ipv6Header, Ipv6Payload, ipv6_daddr, ipv6_payload_len,
        ipv6_upper_layer, ipv6_version, next_header, tcp_ipv6_pseudo_header_sum,
    },
    kernel_dispatch::LINUX_TIMESTAMPS_LEN,
    layout::{
        ETH_ALEN, ETH_DEST, ETH_HLEN, TCP_CHECK, TCP_DEST, TCP_HLEN, TCP_MAX_HLEN, TcpHeader,
        addressed_to, tcp_ack_seq, tcp_check, tcp_dest,
        tcp_flag::{FIN, RST, SYN},
        tcp_flags, tcp_header_len, tcp_seq, tcp_source,
    },
    translate::ones_complement_add,
};

use crate::frontend::{DROP, FRONTEND_CONFIG, NOT_OURS, TRANSMIT, act, bytes_at};

// The IPv6 flow table, the twin of `FRONTEND_FLOWS` (pinned beside it by `baton
// frontend`, as `FRONTEND_FLOWS_V6`); the daemon writes entries, this program reads them,
// advances `client_next`, clears `AWAITING_ANSWER` and records a noticed close, as for
// IPv4.
#[map]
static FRONTEND_FLOWS_V6: HashMap<FrontendFlowKeyV6, FrontendFlowV6> =
    HashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

// The IPv6 services, (VIP6, port) and (VIP6, 0): rewritten by every daemon at start.
#[map]
static FRONTEND_SERVICES_V6: HashMap<FrontendServiceV6, u32> =
    HashMap::with_max_entries(MAX_SERVICES * 2, 0);

// Pinned too: the IPv6 flows' notices, a ring of their own (`FlowNoticeV6` says why).
#[map]
static FRONTEND_NOTICES_V6: RingBuf = RingBuf::with_byte_size(NOTICE_RING_SIZE, 0);

/// The TCP (or ICMPv6) header's offset when no extension header precedes it.
const TCP6: usize = ETH_IPV6_LEN;
const TCP_MAX_WORDS: usize = TCP_MAX_HLEN / 2;

/// [`walk_v6`]'s answers besides the coded ones: TCP, or ICMPv6, right after the fixed
/// header.
const TCP_NEXT: u32 = u32::MAX - 1;
const ICMPV6_NEXT: u32 = u32::MAX - 2;

#[xdp]
pub fn frontend_forward_v6(ctx: XdpContext) -> u32 {
    // Each step a function of its own called from here, so that their stack frames are
    // siblings rather than a chain past the verifier's 512 bytes.
    let answer = match walk_v6(&ctx) {
        TCP_NEXT => tcp_v6(&ctx),
        ICMPV6_NEXT => icmpv6_to_vip(&ctx),
        answer => answer,
    };
    match answer {
        NOT_OURS => XDP_PASS,
        answer => act(answer),
    }
}

/// The 8 bytes at `offset` from the frame's start, for the extension-header walk.
#[inline(always)]
fn peek(ctx: &XdpContext, offset: usize) -> Option<[u8; EXTENSION_PEEK_LEN]> {
    let mut out = [0u8; EXTENSION_PEEK_LEN];
    // A power of two less one: the verifier's bound on the offset (the walk never asks
    // past the payload length, a u16, beyond the 54 bytes of headers).
    let at = (offset as u32) & 0x1_ffff;
    // SAFETY: `out` holds the bytes asked for; the kernel checks the packet side.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            at,
            out.as_mut_ptr().cast(),
            EXTENSION_PEEK_LEN as u32,
        )
    };
    (loaded == 0).then_some(out)
}

/// The frame's Ethernet and fixed IPv6 headers, if it holds them: one bounds check, the
/// fields read at constant offsets from the pointer. (An `Option` of each field's bytes,
/// zipped, had the compiler read the payload of a `None`, which the verifier refused.)
#[inline(always)]
fn fixed_header(ctx: &XdpContext) -> Option<*const u8> {
    bytes_at::<ETH_IPV6_LEN>(ctx, 0).map(|p| p as *const u8)
}

/// Whether (`addr`, `port_be`) is one of the front-end's IPv6 services; port 0 asks
/// whether `addr` is a VIP6 at all.
#[inline(always)]
fn is_service_v6(addr: &Ipv6Address, port_be: u16) -> bool {
    let key = FrontendServiceV6 {
        vip_addr: *addr,
        vip_port_be: port_be,
        _pad: 0,
    };
    // SAFETY: only the presence is read.
    unsafe { FRONTEND_SERVICES_V6.get(key) }.is_some()
}

/// `answer` if `daddr` is a VIP6, else [`NOT_OURS`]: what is wrong with a packet is
/// counted only for the front-end's own addresses.
#[inline(always)]
fn if_to_a_vip(daddr: &Ipv6Address, answer: u32) -> u32 {
    if is_service_v6(daddr, 0) {
        answer
    } else {
        NOT_OURS
    }
}

/// The frame's checks and the walk over its extension headers: [`TCP_NEXT`] or
/// [`ICMPV6_NEXT`] for those right after the fixed header, else the program's answer,
/// coded as `classify`'s is (frontend.rs): [`NOT_OURS`], a `stat` to pass up with,
/// `DROP | stat`.
#[inline(never)]
fn walk_v6(ctx: &XdpContext) -> u32 {
    let Some(config) = FRONTEND_CONFIG.get(0) else {
        return NOT_OURS;
    };
    if config.flags & FrontendConfig::ENABLED == 0 {
        return NOT_OURS;
    }
    let Some(headers) = fixed_header(ctx) else {
        return NOT_OURS;
    };
    // SAFETY: `fixed_header` checked the frame holds both; read once onto the stack.
    let (eth, h): ([u8; ETH_ALEN], Ipv6Header) = unsafe {
        (
            headers.cast::<[u8; ETH_ALEN]>().read_unaligned(),
            headers.add(ETH_HLEN).cast::<Ipv6Header>().read_unaligned(),
        )
    };
    // Another host's frame (`addressed_to`), or no IPv6 header: not ours.
    if !addressed_to(eth, config.interface_mac) || ipv6_version(&h) != 6 {
        return NOT_OURS;
    }
    let available = ctx.data_end() - ctx.data() - ETH_HLEN;
    let answer = match ipv6_upper_layer(&h, available, |at| peek(ctx, ETH_HLEN + at)) {
        Ok(Ipv6Payload::Upper {
            protocol: next_header::TCP,
            offset: IPV6_HLEN,
        }) => return TCP_NEXT,
        // Crossed extension headers (hop-by-hop, destination options, routing with no
        // segments left): no constant offset, up as IPv4 options go.
        Ok(Ipv6Payload::Upper {
            protocol: next_header::TCP,
            ..
        }) => stat::PASS_UNUSUAL_IP,
        // Only right after the fixed header (a router's error carries no extension
        // header); any other ICMPv6 goes up as it came.
        Ok(Ipv6Payload::Upper {
            protocol: next_header::ICMPV6,
            offset: IPV6_HLEN,
        }) => return ICMPV6_NEXT,
        Ok(Ipv6Payload::Upper { .. }) => return NOT_OURS,
        Ok(Ipv6Payload::Fragment { .. }) => DROP | stat::DROP_IPV6_FRAGMENT,
        Ok(Ipv6Payload::Authentication | Ipv6Payload::EncapsulatingSecurity) => {
            DROP | stat::DROP_IPV6_IPSEC
        }
        Ok(Ipv6Payload::RoutingSegmentsLeft { .. }) => DROP | stat::DROP_IPV6_ROUTING,
        Ok(Ipv6Payload::NoNextHeader | Ipv6Payload::UnknownExtension(_))
        | Err(Ipv6Error::MisplacedHopByHop) => DROP | stat::DROP_IPV6_EXTENSION,
        Err(Ipv6Error::TooManyExtensionHeaders) => DROP | stat::DROP_IPV6_TOO_MANY_EXTENSIONS,
        // A payload length past the frame, an extension header cut short: the kernel's
        // to judge, as IPv4's malformed headers are.
        Err(_) => stat::PASS_MALFORMED,
    };
    if_to_a_vip(&ipv6_daddr(&h), answer)
}

/// The TCP path (TCP right after the fixed header, which `walk_v6` checked): the
/// program's answer.
#[inline(never)]
fn tcp_v6(ctx: &XdpContext) -> u32 {
    let Some(config) = FRONTEND_CONFIG.get(0) else {
        return NOT_OURS;
    };
    let Some(headers) = fixed_header(ctx) else {
        return NOT_OURS;
    };
    // SAFETY: `fixed_header` checked the frame holds them; read once onto the stack.
    let (payload_len, client_addr, vip_addr): ([u8; 2], Ipv6Address, Ipv6Address) = unsafe {
        let h = headers.add(ETH_HLEN);
        (
            h.add(IP6_PAYLOAD_LEN).cast::<[u8; 2]>().read_unaligned(),
            h.add(IP6_SADDR).cast::<Ipv6Address>().read_unaligned(),
            h.add(IP6_DADDR).cast::<Ipv6Address>().read_unaligned(),
        )
    };
    let Some(tcp) = bytes_at::<TCP_HLEN>(ctx, TCP6) else {
        return if_to_a_vip(&vip_addr, stat::PASS_MALFORMED);
    };
    // SAFETY: `bytes_at` checked the bounds.
    let tcp: TcpHeader = unsafe { tcp.read_unaligned() };
    let key = FrontendFlowKeyV6 {
        client_addr,
        vip_addr,
        client_port_be: u16::from_ne_bytes(tcp_source(&tcp)),
        vip_port_be: u16::from_ne_bytes(tcp_dest(&tcp)),
    };
    // The table first, the services only for the rest, as for IPv4.
    let flow = FRONTEND_FLOWS_V6.get_ptr_mut(key);
    if flow.is_none() && !is_service_v6(&key.vip_addr, key.vip_port_be) {
        return NOT_OURS;
    }
    let flags = tcp_flags(&tcp);
    if flags & SYN != 0 {
        // Every IPv6 SYN is the slow path's (no cookies or kernel dispatch for IPv6).
        return stat::PASS_CONTROL;
    }
    let Some(flow) = flow else {
        return if flags & (FIN | RST) != 0 {
            stat::PASS_CONTROL
        } else {
            stat::PASS_NO_FLOW
        };
    };
    // The lengths every later step trusts, checked once against the frame. Bytes past
    // the payload length (Ethernet padding) are not the segment's.
    let tcp_len = usize::from(u16::from_be_bytes(payload_len));
    let header_len = tcp_header_len(&tcp);
    if header_len < TCP_HLEN || tcp_len < header_len || ctx.data() + TCP6 + tcp_len > ctx.data_end()
    {
        return stat::PASS_MALFORMED;
    }
    // SAFETY: a map value pointer, valid for this program run.
    let (close_state, isn_f, client_next) =
        unsafe { ((*flow).close_state, (*flow).isn_f, (*flow).client_next) };
    let (awaiting_answer, echo) = if close_state & FrontendFlow::AWAITING_ANSWER != 0 {
        let awaited = AwaitedAnswer {
            isn_f,
            // SAFETY: as above.
            backend_id: unsafe { (*flow).backend_id() },
        };
        (Some(awaited), client_echo_v6(ctx, header_len))
    } else {
        (None, Echo::Unread)
    };
    let decision = decide_client_segment(
        client_next,
        awaiting_answer,
        ClientSegment {
            seq: u32::from_be_bytes(tcp_seq(&tcp)),
            ack: u32::from_be_bytes(tcp_ack_seq(&tcp)),
            flags,
            payload_len: (tcp_len - header_len) as u32,
            echo,
        },
    );
    if decision.hold {
        // SAFETY: as above; racing CPUs store numbers of the same stream.
        unsafe { (*flow).client_next = decision.client_next };
        return stat::PASS_AWAITING_ANSWER;
    }
    let answer = if decision.notice == 0 {
        match rewrite_v6(ctx, config, &key, &tcp, flow) {
            TRANSMIT => TRANSMIT | decision.counter,
            pass => pass,
        }
    } else {
        // Reserved first: a full ring must leave the segment as it arrived.
        match FRONTEND_NOTICES_V6.reserve::<FlowNoticeV6>(0) {
            None => stat::PASS_RING_FULL,
            Some(mut notice) => match rewrite_v6(ctx, config, &key, &tcp, flow) {
                TRANSMIT => {
                    let what = decision.notice;
                    // SAFETY: as above; racing CPUs only clear or set the same bits.
                    unsafe {
                        if what & FlowNotice::BACKEND_ANSWERED != 0 {
                            (*flow).close_state &= !FrontendFlow::AWAITING_ANSWER;
                        }
                        (*flow).close_state |= FrontendFlow::close_state_noticed(what);
                    }
                    notice.write(FlowNoticeV6 {
                        key,
                        what,
                        // SAFETY: as above.
                        client_isn: unsafe { (*flow).client_isn },
                    });
                    // Committed before `XDP_TX` sends the segment on.
                    notice.submit(u64::from(BPF_RB_NO_WAKEUP));
                    TRANSMIT | decision.counter
                }
                other => {
                    notice.discard(u64::from(BPF_RB_NO_WAKEUP));
                    other
                }
            },
        }
    };
    // Segments on their way to the back-end (from here, or from the slow path) move the
    // expected number on; ones the slow path will drop do not (as for IPv4).
    if answer & TRANSMIT != 0
        || answer == stat::PASS_PARTIAL_CHECKSUM
        || answer == stat::PASS_RING_FULL
    {
        // SAFETY: as above.
        unsafe { (*flow).client_next = decision.client_next };
    }
    answer
}

/// What a client segment's TSecr says of whose answer it acknowledges, as IPv4's
/// `client_echo`: the timestamps option first in the options area, or no options.
#[inline(always)]
fn client_echo_v6(ctx: &XdpContext, header_len: usize) -> Echo {
    if header_len == TCP_HLEN {
        return Echo::of_options(&[]);
    }
    if header_len < TCP_HLEN + LINUX_TIMESTAMPS_LEN {
        return Echo::Unread;
    }
    match bytes_at::<LINUX_TIMESTAMPS_LEN>(ctx, TCP6 + TCP_HLEN) {
        // SAFETY: `bytes_at` checked the bounds.
        Some(p) => Echo::of_options(&unsafe { p.read_unaligned() }),
        None => Echo::Unread,
    }
}

/// Rewrites a segment of a handed-off IPv6 flow towards its back-end (`tcp_v6` checked
/// its lengths against the frame): [`TRANSMIT`] when done, or a `stat` to pass it up
/// untouched with (a partial checksum on a payload, a bad one on a header-only segment,
/// a frame shorter than checked). Nothing is written until every check has passed. A
/// function of its own, so that its stack is not added to `tcp_v6`'s in one frame.
#[inline(never)]
fn rewrite_v6(
    ctx: &XdpContext,
    config: &FrontendConfig,
    key: &FrontendFlowKeyV6,
    tcp: &TcpHeader,
    flow: *mut FrontendFlowV6,
) -> u32 {
    rewrite_v6_or_malformed(ctx, config, key, tcp, flow).unwrap_or(stat::PASS_MALFORMED)
}

#[inline(always)]
fn rewrite_v6_or_malformed(
    ctx: &XdpContext,
    config: &FrontendConfig,
    key: &FrontendFlowKeyV6,
    tcp: &TcpHeader,
    flow: *mut FrontendFlowV6,
) -> Option<u32> {
    let saddr = &key.client_addr;
    let daddr = &key.vip_addr;
    // SAFETY: bounds-checked by `bytes_at`.
    let payload_len = unsafe { bytes_at::<2>(ctx, ETH_HLEN + IP6_PAYLOAD_LEN)?.read_unaligned() };
    let tcp_len = usize::from(u16::from_be_bytes(payload_len));
    let header_len = tcp_header_len(tcp);
    // SAFETY: a map value pointer, valid for this program run; the address read in place.
    let (new_daddr, backend_port_be, m) = unsafe {
        (
            &(*flow).backend_addr,
            (*flow).backend_port_be,
            (*flow).backend_mac,
        )
    };
    let old_port = u16::from_be_bytes(tcp_dest(tcp));
    let new_port = u16::from_be_bytes(backend_port_be.to_ne_bytes());
    let check = u16::from_be_bytes(tcp_check(tcp));
    let old_pseudo = tcp_ipv6_pseudo_header_sum(saddr, daddr, tcp_len as u32);
    let new_check = if tcp_len > header_len {
        match redirected_tcp_checksum_v6(
            check,
            old_pseudo,
            (daddr, old_port),
            (new_daddr, new_port),
        ) {
            Some(new_check) => new_check,
            None => return Some(stat::PASS_PARTIAL_CHECKSUM),
        }
    } else {
        // Header only: summed whole, but for the destination port and the checksum.
        let words = tcp_header_sum_v6(ctx, header_len)?;
        let complete = ones_complement_add(ones_complement_add(old_pseudo, words), old_port);
        if ones_complement_add(complete, check) != 0xffff && check != old_pseudo {
            return Some(stat::PASS_BAD_CHECKSUM);
        }
        let new_pseudo = tcp_ipv6_pseudo_header_sum(saddr, new_daddr, tcp_len as u32);
        tcp_checksum(new_pseudo, ones_complement_add(words, new_port))
    };
    let eth = bytes_at::<{ 2 * ETH_ALEN }>(ctx, ETH_DEST)?;
    let daddr_at = bytes_at::<IPV6_ALEN>(ctx, ETH_HLEN + IP6_DADDR)?;
    let port_at = bytes_at::<2>(ctx, TCP6 + TCP_DEST)?;
    let check_at = bytes_at::<2>(ctx, TCP6 + TCP_CHECK)?;
    let s = config.interface_mac;
    // SAFETY: every pointer was bounds-checked by `bytes_at`; XDP owns the buffer.
    unsafe {
        eth.write_unaligned([
            m[0], m[1], m[2], m[3], m[4], m[5], s[0], s[1], s[2], s[3], s[4], s[5],
        ]);
        daddr_at.write_unaligned(*new_daddr);
        port_at.write_unaligned(new_port.to_be_bytes());
        check_at.write_unaligned(new_check.to_be_bytes());
        (*flow).last_seen_ns = bpf_ktime_get_coarse_ns();
    }
    Some(TRANSMIT)
}

/// The one's-complement sum of the TCP header's words (`header_len` bytes, at most 60),
/// but for the destination port and the checksum; `None` if the frame is shorter.
#[inline(always)]
fn tcp_header_sum_v6(ctx: &XdpContext, header_len: usize) -> Option<u16> {
    let mut sum: u16 = 0;
    for i in 0..TCP_MAX_WORDS {
        if i * 2 >= header_len {
            break;
        }
        if i == TCP_DEST / 2 || i == TCP_CHECK / 2 {
            continue;
        }
        let word = bytes_at::<2>(ctx, TCP6 + i * 2)?;
        // SAFETY: bounds checked by `bytes_at`.
        sum = ones_complement_add(sum, u16::from_be_bytes(unsafe { word.read_unaligned() }));
    }
    Some(sum)
}

/// An ICMPv6 message right after the fixed header: a "packet too big" to a VIP6 goes to
/// the back-end of the flow its quote names (`baton_common::icmpv6`), its outer
/// destination rewritten as a client segment's and the ICMPv6 checksum, which covers
/// that destination (RFC 4443 §2.3), updated (`icmpv6_check_for_destination`); the quote
/// is the back-end module's to put in its server's terms. Answers `TRANSMIT | stat`,
/// `DROP | stat` (no flow, malformed), or [`NOT_OURS`] for any other ICMPv6 (neighbour
/// discovery, echo), which goes up untouched and uncounted.
#[inline(never)]
fn icmpv6_to_vip(ctx: &XdpContext) -> u32 {
    let Some(config) = FRONTEND_CONFIG.get(0) else {
        return NOT_OURS;
    };
    let (Some(headers), Some(kind)) = (fixed_header(ctx), bytes_at::<1>(ctx, TCP6 + ICMPV6_TYPE))
    else {
        return NOT_OURS;
    };
    // SAFETY: `fixed_header` and `bytes_at` checked the frame holds them; read once.
    let (h, kind): (Ipv6Header, [u8; 1]) = unsafe {
        (
            headers.add(ETH_HLEN).cast::<Ipv6Header>().read_unaligned(),
            kind.read_unaligned(),
        )
    };
    let daddr = ipv6_daddr(&h);
    if kind[0] != ICMPV6_PACKET_TOO_BIG || !is_service_v6(&daddr, 0) {
        return NOT_OURS;
    }
    let Some(head) = bytes_at::<ICMPV6_HEAD_LEN>(ctx, TCP6) else {
        return DROP | stat::DROP_ICMP_MALFORMED;
    };
    // SAFETY: `bytes_at` checked the bounds.
    let head: [u8; ICMPV6_HEAD_LEN] = unsafe { head.read_unaligned() };
    // The message's length: the payload length, which the walk checked the frame holds.
    let available = usize::from(ipv6_payload_len(&h));
    let error = match parse_packet_too_big(&head, daddr, available, |at| peek(ctx, TCP6 + at)) {
        Ok(Icmpv6Message::PacketTooBig(error)) if error.quotes_its_destination() => error,
        Ok(Icmpv6Message::Other) => return NOT_OURS,
        _ => return DROP | stat::DROP_ICMP_MALFORMED,
    };
    let mut tcp: QuotedTcp = [0; QUOTED_TCP_LEN];
    let at = ((TCP6 + error.quoted_tcp) as u32) & 0x1_ffff;
    // SAFETY: `tcp` holds the 8 bytes asked for; the kernel checks the packet side.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, at, tcp.as_mut_ptr().cast(), QUOTED_TCP_LEN as u32) }
        != 0
    {
        return DROP | stat::DROP_ICMP_MALFORMED;
    }
    let key = FrontendFlowKeyV6::of_quote(&quoted_segment_v6(&error, &tcp));
    let Some(flow) = FRONTEND_FLOWS_V6.get_ptr(key) else {
        return DROP | stat::DROP_ICMP_NO_FLOW;
    };
    // SAFETY: a map value pointer, valid for this program run; copied out at once.
    let target = unsafe { *flow };
    let check = icmpv6_check_for_destination(
        [head[ICMPV6_CHECK], head[ICMPV6_CHECK + 1]],
        &daddr,
        &target.backend_addr,
    );
    let (Some(eth), Some(daddr_at), Some(check_at)) = (
        bytes_at::<{ 2 * ETH_ALEN }>(ctx, ETH_DEST),
        bytes_at::<IPV6_ALEN>(ctx, ETH_HLEN + IP6_DADDR),
        bytes_at::<2>(ctx, TCP6 + ICMPV6_CHECK),
    ) else {
        return DROP | stat::DROP_ICMP_MALFORMED;
    };
    let m = target.backend_mac;
    let s = config.interface_mac;
    // SAFETY: every pointer was bounds-checked by `bytes_at`; XDP owns the buffer.
    unsafe {
        eth.write_unaligned([
            m[0], m[1], m[2], m[3], m[4], m[5], s[0], s[1], s[2], s[3], s[4], s[5],
        ]);
        daddr_at.write_unaligned(target.backend_addr);
        check_at.write_unaligned(check);
    }
    TRANSMIT | stat::FORWARDED_ICMP
}
