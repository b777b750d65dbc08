//! The front-end fast path (the patent's BIP_FE; docs/design.md, "Packet walk", step 8):
//! XDP on the front-end's LAN interface, one program for every service the front-end
//! serves (`FRONTEND_SERVICES`). A client segment of a handed-off connection gets its
//! destination (address, port if it differs, MACs) rewritten to the back-end, its
//! checksums fixed, and goes straight back out of the same interface (`XDP_TX`), never
//! touching the front-end's stack or its slow path. SYNs go up (`XDP_PASS`): the slow
//! path tracks opens and forwards those itself. So do segments of unknown flows, and
//! segments whose checksum is partial (below). IPv4 fragments to a service are dropped
//! and counted (`stat::DROP_FRAGMENT`).
//!
//! # Client FINs and RSTs: acted on only at the expected sequence number
//!
//! Nobody off the path may end a connection through the front-end that they could not
//! end on a plain Linux server (RFC 5961; docs/design.md, "Client FINs and RSTs"). The
//! flow's value keeps `client_next`, the client's next sequence number as seen here,
//! advanced by every in-order segment (`baton_common::frontend::judge_client_segment`,
//! the arithmetic the protocol core uses too). A client FIN or RST is always forwarded,
//! for the back-end's TCP to judge, but the core is told of it (and so starts a close or
//! a grace period) only when it sits at exactly `client_next`; any other is counted
//! (`stat::FORWARDED_FIN_IGNORED`, `stat::FORWARDED_RST_IGNORED`) and changes nothing
//! here. A blind RST in the back-end's window draws its challenge ACK (RFC 5961 §3.2),
//! which a real client answers with a RST at the exact number, and that one is acted on.
//!
//! # Notices: what the core must know, told through a ring
//!
//! Some segments the program forwards or takes in matter to the protocol core, which
//! tracks every connection's handoff and close. The program tells the daemon of them
//! through `FRONTEND_NOTICES`, a BPF ring it reads before each packet it handles
//! (`FastPath::note_flow_notices`; docs/design.md, "The notices ring"):
//!
//! - **the client's FIN** (`FlowNotice::CLIENT_FIN`) **and RST** (`CLIENT_RST`), at the
//!   expected sequence number: forwarded, and the core tracks the close (the grace
//!   period, and a new SYN on the port told from the old connection's). The patent has
//!   the FIN travel through the front-end so that it can free the connection's state; it
//!   does, without a trip through userspace;
//! - **the client's reply to the back-end's answer** (`BACKEND_ANSWERED`). The daemon
//!   takes a flow in as soon as the request has gone to the back-end, marked
//!   `AWAITING_ANSWER`; the back-end's confirmation (a copy of its first segment, in a
//!   three-turn handoff; none at all in a one-turn one) reaches the daemon through a
//!   busy packet socket, often after the client, quicker, has acknowledged the response
//!   and sent its FIN. A client segment acknowledging data past the front-end's SYN/ACK
//!   proves the back-end has the request (the core's own test,
//!   `baton_common::frontend::acknowledges_backend_data`): it is forwarded, the mark
//!   cleared, and the core completes the handoff. Other segments of a marked flow go up,
//!   for the core to hold until then.
//!
//! Nothing from a back-end is taken in here: the back-ends copy the front-end only what
//! a handoff under way needs, and RSTs (`baton_common::backend::frontend_copy`), which all go up.
//! The close is tracked from the client's side alone (docs/design.md, "Packet walk",
//! step 9), so the back-end's FIN is neither copied nor needed; a FIN copy from a
//! back-end module of an older build goes up too, and the core counts and ignores it.
//! (A first answer that carries the server's FIN is still copied, as the confirmation
//! of a handoff under way.)
//!
//! The slow path thus carries almost no client segment of a handed-off connection: each
//! would cost the daemon's one thread a receive and a send (veth runs the receivers'
//! softirq work inside the send). A notice is
//! committed before its segment is transmitted, so it is in the ring before anything the
//! segment causes (the back-end's ACK, the client's next SYN on the port) can reach the
//! daemon. A ring, not bits in the flow's value, because the daemon writes whole values
//! and would clobber a bit set between its read and its write. No wakeup is asked for
//! (`BPF_RB_NO_WAKEUP`): the daemon reads the ring at every round and before every
//! packet, and a wakeup per notice would cost an `irq_work`. When the ring is full (no
//! daemon for seconds), the segment goes up instead (`stat::PASS_RING_FULL`), and the
//! slow path forwards it.
//!
//! # Flows handed off elsewhere: the back-end's stamp
//!
//! A client segment of a flow the table misses whose TSecr carries a back-end's stamp
//! (`baton_common::stamp`: the back-ends write their id and a MAC over the flow into the
//! low bits of every TSval they send) is forwarded to the back-end it names and the flow
//! learned, if the stamp verifies under the handoff key (`stat::LEARNED_BY_STAMP`, a
//! `FlowNotice::LEARNED`); a forged or stale one is dropped (`stat::DROP_STAMP_FORGED`,
//! `stat::DROP_STAMP_UNKNOWN_BACKEND`). So a flow handed off by another front-end (ECMP
//! moved it here) or before this one started keeps flowing, with no state shared
//! (docs/design.md, "Stateless forwarding by the stamp").
//!
//! A client without timestamps carries no stamp: its segments go up, the core probes
//! the back-ends for the flow, and the one that holds it answers with a claim (EtherType
//! 0x88B6, `baton_common::claim`) that this program judges like a stamp: the flow is
//! learned (`stat::LEARNED_BY_CLAIM`) and the segment inside forwarded, or the claim
//! dropped (`stat::DROP_CLAIM_FORGED` and its kin; docs/design.md, "Clients without
//! timestamps: probe and claim").
//!
//! # ICMP errors to a VIP
//!
//! A router's "fragmentation needed" about a segment a back-end sent as the VIP's comes
//! here; it goes to the back-end of the flow its quote names, as a client segment would
//! (`icmp_to_vip`, `stat::FORWARDED_ICMP`), and the back-end's module puts the quote in
//! its server's terms. Quotes of no flow and malformed errors are dropped and counted;
//! other ICMP goes up as before (docs/design.md, "ICMP errors and path MTU").
//!
//! # XDP, not tc: the evidence
//!
//! The slow path captures with an `AF_PACKET` socket. Device taps run in
//! `__netif_receive_skb_core` *before* tc ingress, so with a tc program every fast-path
//! packet would still be cloned to the daemon, which would forward it a second time. XDP
//! runs before the taps: an `XDP_TX`'d segment never reaches them, and no skb is built
//! for it on the front-end at all.
//!
//! # Checksums
//!
//! The price is that XDP sees bytes, not an skb's checksum state, and after `XDP_TX`
//! nothing downstream completes a checksum: the TCP checksum must leave here complete.
//! Frames from a real wire always carry complete ones. A sender that offloads
//! (`CHECKSUM_PARTIAL`) leaves only the pseudo-header sum in the field
//! (`tcp_v4_send_check`, net/ipv4/tcp_ipv4.c) for its device to complete; over veths
//! nothing does, and native XDP on a veth (`veth_xdp_rcv_skb`, drivers/net/veth.c) sends
//! an `xdp_frame` without that state, so the back-end would verify the partial sum and
//! drop the segment. An XDP program cannot tell the two forms apart without summing the
//! whole segment, so it trusts a field to be complete unless it is visibly partial, as
//! L4 balancers do (IPVS in NAT mode updates it incrementally, `tcp_fast_csum_update` in
//! net/netfilter/ipvs/ip_vs_proto_tcp.c; Katran leaves it untouched inside its
//! encapsulation):
//!
//! - **segments with payload** (requests on a kept-alive connection, uploads): a field
//!   equal to the arriving segment's pseudo-header sum is taken as partial and the
//!   segment goes up (`stat::PASS_PARTIAL_CHECKSUM`) to the slow path, which completes it
//!   (`TP_STATUS_CSUMNOTREADY`) and forwards it. Any other field is taken as complete and
//!   updated incrementally for the new address and port
//!   (`baton_common::frontend::redirected_tcp_checksum`, RFC 1624): no loop over the
//!   payload. An incremental update keeps a wrong checksum exactly as wrong, so a segment
//!   corrupted on its way still fails the back-end's TCP checksum and is dropped there
//!   (TcpInCsumErrors), never laundered. A complete checksum that happens to equal the
//!   pseudo-header sum (one in 2^16) merely takes the slow path;
//! - **header-only segments** (ACKs, window updates: everything a downloading client
//!   sends) are summed whole, at most 60 bytes: a field that is the right complete
//!   checksum or the partial sum is replaced by the complete checksum for the new
//!   destination; anything else goes up (`stat::PASS_BAD_CHECKSUM`) for the slow path to
//!   verify and drop. Incremental updates would do for a complete field too, but the
//!   whole sum, cheap at this size, also keeps a partial-checksum client's downloads
//!   (a container on the same host, say) entirely in XDP instead of sending every ACK
//!   through userspace.
//!
//! The lab's client sends complete checksums (`baton lab up` turns transmit checksum
//! offload off on its interface), as a host behind a real wire does, so the lab runs
//! the production path; a test turns offload back on to check the partial one.
//! Generic (skb-mode) XDP is not used: it keeps the skb's `CHECKSUM_PARTIAL` state
//! through `XDP_TX`, so a device would later add the payload sum to the complete
//! checksum written here.
//!
//! The veth pitfall applies (docs/design.md, "Pitfalls"): a veth drops `XDP_TX`'d frames
//! unless its peer has an XDP program (GRO alone, `ethtool -K p-fe gro on`, did not make
//! `p-fe` take them: only the first few forwarded ACKs arrived and downloads stalled
//! after about 15 KB). The lab therefore attaches an `XDP_PASS` program to `p-fe`
//! (`baton-ebpf/src/lab.rs`); a real switch port needs nothing of the kind.
//!
//! # SYN cookies under a flood
//!
//! While the protocol core's half-open table is full (a SYN flood), the daemon sets
//! `SynCookieConfig::ENGAGED` in `FRONTEND_SYN_COOKIES`, and this program answers each
//! bare SYN to a service that belongs to no handed-off flow itself: the SYN's frame is
//! turned into a cookie SYN/ACK (`baton_common::syncookie`, the arithmetic the core checks
//! the client's ACK with) and sent back out (`XDP_TX`, `stat::SYN_COOKIES_SENT`). A
//! flood's SYNs then cost no skb, no copy to the packet socket and no trip through
//! userspace, so they cannot crowd out the legitimate clients' segments, the back-ends'
//! replies or the health checks in the queues between. A SYN this program cannot answer
//! (options it cannot walk, data, an IPv4 header with options, a frame it cannot resize)
//! goes up, where the core answers it with the same cookie (docs/design.md, "SYN
//! floods"). With `[tcp] syns_in_xdp` it answers every bare SYN so.
//!
//! A cookie keeps window scale, SACK and ECN in the TSval, so only for a client with
//! timestamps. For one without, the program keeps what the SYN/ACK agreed to in the
//! half-open map (`FRONTEND_HALF_OPEN`, an LRU hash by 4-tuple), offers it as the core's
//! own SYN/ACK would (`syncookie::agreed_options`), and marks the cookie; the core takes
//! the entry with the client's request (`baton_common::syncookie`, "Clients without
//! timestamps"; `stat::HALF_OPEN_KEPT`, `stat::SYN_ACK_WITHOUT_OPTIONS`).
//!
//! Only IPv4 headers without options are forwarded (the TCP header is then at a constant
//! offset, which keeps every packet access a constant the verifier follows); the rest
//! goes up, counted.
//!
//! # IPv6
//!
//! An IPv6 frame goes to `frontend_forward_v6` (`frontend_v6.rs`) by tail call, asked
//! only once `classify` found the frame not IPv4's, so IPv4 TCP pays nothing for it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
        xdp_md,
    },
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_ktime_get_coarse_ns, bpf_loop, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
            bpf_xdp_load_bytes,
        },
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use baton_common::{
    claim,
    frontend::frontend_program,
    frontend::{
        AwaitedAnswer, ClientSegment, ClientSegmentDecision, DEFAULT_FLOW_TABLE_SIZE,
        DEFAULT_HALF_OPEN_ENTRIES, Echo, FlowNotice, FrontendConfig, FrontendFlow, FrontendFlowKey,
        FrontendService, MAX_SERVICES, NOTICE_RING_SIZE, decide_client_segment,
        redirected_tcp_checksum, stat, tcp_checksum,
    },
    handoff_option::MAX_OPTIONS_LEN,
    icmp::{
        ICMP_CODE, ICMP_HLEN, ICMP_TYPE, ICMPV4_HEAD_LEN, IPPROTO_ICMP, Icmpv4Message,
        QUOTED_TCP_LEN, QuotedTcp, is_frag_needed, parse_icmpv4_head, quoted_segment_v4,
    },
    ipv6::ETH_P_IPV6,
    kernel_dispatch::{
        HANDOFF_RING_SIZE, HANDOFF_WAKE_BYTES, HandoffTerms, KernelBackend, KernelDecision,
        KernelHandoffConfig, KernelHandoffRecord, KernelHandoffScratch, LINUX_TIMESTAMPS_LEN,
        MAX_RECORDED_PACKET, RequestSegment, choose_backend, data_segment_timestamps,
        handoff_terms, reason,
    },
    layout::{
        ETH_ALEN, ETH_DEST, ETH_HLEN, ETH_IPV4_LEN, ETH_P_IP, ETH_PROTO, EthIpv4, IP_CHECK,
        IP_DADDR, IPPROTO_TCP, IPV4_HLEN, IPV4_VERSION_IHL_NO_OPTIONS, TCP_CHECK, TCP_DEST,
        TCP_HLEN, TCP_MAX_HLEN, TCP_OPTIONS, TcpHeader, addressed_to, eth_dest, eth_source,
        ip_check, ip_daddr, ip_protocol, ip_saddr, ip_tos, ip_tot_len, ip_ttl, ip_version_ihl,
        is_fragment, is_ipv4, tcp_ack_seq, tcp_check, tcp_dest,
        tcp_flag::{ACK, FIN, RST, SYN},
        tcp_flags, tcp_header_len, tcp_seq, tcp_source, tcp_window,
    },
    siphash::SipKey,
    stamp::{self, StampConfig, StampVerdict, StampedBackend},
    syn_prime::{
        SYN_PRIME_FRAME_HEADERS_LEN, SYN_PRIME_TCP_HLEN, payload_sum_from_checksum,
        write_syn_prime_frame_headers,
    },
    syncookie::{
        self, HalfOpenSyn, MAX_OPTION_STEPS, OPTIONS_AREA, SYN_ACK_FRAME_LEN, SynAddresses,
        SynCookieConfig, SynOptions, SynOptionsWalk, write_syn_ack_frame,
    },
    translate::{csum_replace4, ones_complement_add, tcp_ipv4_pseudo_header_sum},
};

// `baton frontend` pins the flows, config, stats and notices maps (and the XDP link)
// under `<pin_dir>/frontend-<iface>/`
// when it loads the object, and reuses the pins when it finds them: the maps and the
// program outlive the daemon, so handed-off flows keep forwarding across its restart,
// and a newer program replaces this one in the link against the same maps. The flow
// value's `client_isn` and `close_state` are the daemon's; of them this program only
// reads and clears `close_state`'s `AWAITING_ANSWER`, and sets the close a notice tells
// (`FrontendFlow::close_state_noticed`).
#[map]
static FRONTEND_FLOWS: HashMap<FrontendFlowKey, FrontendFlow> =
    HashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
pub(crate) static FRONTEND_CONFIG: Array<FrontendConfig> = Array::with_max_entries(1, 0);

// The virtual services, (VIP, port) and (VIP, 0) for each VIP: rewritten by every
// daemon at start, before its program sees a packet.
#[map]
static FRONTEND_SERVICES: HashMap<FrontendService, u32> =
    HashMap::with_max_entries(MAX_SERVICES * 2, 0);

#[map]
static FRONTEND_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

// Pinned too: notices of segments forwarded while no daemon runs wait here for the next.
#[map]
static FRONTEND_NOTICES: RingBuf = RingBuf::with_byte_size(NOTICE_RING_SIZE, 0);

// Not pinned: every daemon writes its own keys at start, and sets and clears
// `ENGAGED` as its half-open table fills and drains.
#[map]
static FRONTEND_SYN_COOKIES: Array<SynCookieConfig> = Array::with_max_entries(1, 0);

// The half-open map: the SYN options of clients without timestamps whose cookie cannot
// keep them (`baton_common::syncookie`, "Clients without timestamps"), written here and
// taken (looked up and deleted) by the daemon's protocol core at the client's first data
// segment; the LRU evicts the rest (floods, clients that never send). Sized by the
// daemon (`[tcp] half_open_entries`). Not pinned: like the core's own half-open
// connections, the handshakes under way at a restart are not carried over.
/// The cookie hashes of the SYN `answer_syn` is answering and the time they were made
/// at (`hash_syn_for_answer`), off its stack frame.
#[map]
static SYN_HASHES: PerCpuArray<SynHashes> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
struct SynHashes {
    hashes: syncookie::CookieHashes,
    now: u64,
}

#[map]
static FRONTEND_HALF_OPEN: LruHashMap<FrontendFlowKey, HalfOpenSyn> =
    LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);

// The daemon's local secret, pinned and never read here: a restarted or upgraded daemon
// takes it over, so that cookies this program gave out across the swap still verify.
#[map]
static FRONTEND_SECRET: Array<[u8; 16]> = Array::with_max_entries(1, 0);

// Stateless forwarding by the stamp (docs/design.md, "Stateless forwarding by the
// stamp"): the key and the back-ends by id, written by every daemon at start and when
// the back-ends or their MACs change. Not pinned.
#[map]
static FRONTEND_STAMP_CONFIG: Array<StampConfig> = Array::with_max_entries(1, 0);

#[map]
static FRONTEND_STAMP_BACKENDS: Array<StampedBackend> =
    Array::with_max_entries(stamp::IDS as u32, 0);

// Kernel dispatch (docs/design.md, "Dispatch in the kernel"): the handoff key and the
// switch, written by every daemon at start (not pinned); the ring of handoffs made here,
// read by the daemon; the scratch a record is built in.
#[map]
static FRONTEND_KERNEL_HANDOFF: Array<KernelHandoffConfig> = Array::with_max_entries(1, 0);

#[map]
static FRONTEND_HANDOFFS: RingBuf = RingBuf::with_byte_size(HANDOFF_RING_SIZE, 0);

#[map]
static HANDOFF_SCRATCH: PerCpuArray<KernelHandoffScratch> = PerCpuArray::with_max_entries(1, 0);

// Why each request counted `stat::PASS_REQUEST_TO_SLOW_PATH` went up, by
// `kernel_dispatch::reason` (one count each, so the reasons add up to that counter).
// Pinned beside `FRONTEND_STATS`, and counting as long: a map of its own, so that the
// stats map keeps its shape across an upgrade.
// The programs `frontend_forward` tail-calls (`frontend_program`): the IPv6 path, a
// program of its own so that it has a verifier budget of its own. Filled by `baton
// frontend` after it loads the programs; not pinned (every daemon fills its own).
#[map]
static FRONTEND_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(frontend_program::SLOTS, 0);

#[map]
static FRONTEND_SLOW_PATH_REASONS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(reason::COUNT, 0);

/// The TCP header's offset when the IPv4 header has no options (the only case forwarded).
const TCP: usize = ETH_IPV4_LEN;
const TCP_MAX_WORDS: usize = TCP_MAX_HLEN / 2;
/// FIN, SYN, RST, ACK: a bare SYN has only SYN among these.
const HANDSHAKE_FLAGS: u8 = FIN | SYN | RST | ACK;

/// A client segment's lengths, checked against its frame by `forward`.
#[derive(Clone, Copy)]
struct Segment {
    /// The TCP header and payload.
    tcp_len: usize,
    /// The TCP header alone, options included.
    header_len: usize,
}

/// What the program decided.
enum Verdict {
    /// Rewritten: transmit, counting this `stat`.
    Transmit(u32),
    /// Taken in: drop, counting this `stat`.
    Drop(u32),
    /// A bare SYN for no handed-off flow: answered with a cookie if cookies are engaged
    /// (`answer_syn`), else up to the slow path like other control segments.
    Syn,
    /// A bare SYN that replaced a closed flow (its entry removed): as `Syn`.
    SynOnClosedFlow,
    /// An ACK (no SYN, FIN or RST) of no handed-off flow: taken in if it is the
    /// handshake's answering a cookie (`is_handshake_ack`), else up.
    BareAck,
    /// Up to the stack (and the slow path), counting `stat`.
    Pass(u32),
}

#[xdp]
pub fn frontend_forward(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        // An IPv6 frame: the IPv6 program's (`frontend_v6.rs`), by tail call, asked only
        // here so that IPv4 TCP pays nothing for it; with no program in the slot, up
        // untouched, as before IPv6 was built.
        NOT_OURS if is_ipv6(&ctx) => {
            // SAFETY: the context is the program's own; a tail call that fails returns.
            unsafe { FRONTEND_PROGRAMS.tail_call(&ctx, frontend_program::IPV6) };
            XDP_PASS
        }
        // Not IPv4 TCP to VIP:port: not ours, not counted, unless it is an ICMP error
        // about a handed-off flow (asked only here, so that TCP pays nothing for it).
        NOT_OURS => match learn_by_claim(&ctx) {
            NOT_A_CLAIM => match icmp_to_vip(&ctx) {
                NOT_OURS => XDP_PASS,
                transmit if transmit & TRANSMIT != 0 => {
                    count(transmit & !TRANSMIT);
                    XDP_TX
                }
                drop => {
                    count(drop & !DROP);
                    XDP_DROP
                }
            },
            claimed => act(claimed),
        },
        syn @ (BARE_SYN | SYN_ON_CLOSED_FLOW) => {
            if syn == SYN_ON_CLOSED_FLOW {
                count(stat::CLOSED_FLOW_REPLACED);
            }
            if hash_syn_for_answer(&ctx) && answer_syn(&ctx).is_some() {
                count(stat::SYN_COOKIES_SENT);
                XDP_TX
            } else {
                count(stat::PASS_CONTROL);
                XDP_PASS
            }
        }
        BARE_ACK => {
            // A stamp first: a marked TSecr is never the echo of this front-end's own
            // TSval (`baton_common::stamp`), so no handshake or request is taken for
            // one, and a flow handed off elsewhere costs no cookie check.
            let learned = learn_by_stamp(&ctx);
            if learned != NOT_STAMPED {
                count(learned & !(TRANSMIT | DROP));
                return if learned & TRANSMIT != 0 {
                    XDP_TX
                } else if learned & DROP != 0 {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
            }
            if is_handshake_ack(&ctx) {
                count(stat::HANDSHAKE_ACK_ABSORBED);
                XDP_DROP
            } else {
                match hand_off_request(&ctx) {
                    READY => match hand_off_routed(&ctx) {
                        HANDED_OFF => {
                            count(stat::HANDED_OFF_IN_KERNEL);
                            XDP_TX
                        }
                        slow => to_slow_path(slow),
                    },
                    NOT_A_REQUEST => {
                        count(stat::PASS_NO_FLOW);
                        XDP_PASS
                    }
                    slow => to_slow_path(slow),
                }
            }
        }
        answer => act(answer),
    }
}

/// The XDP action of a coded answer (`TRANSMIT | stat`, `DROP | stat`, or a `stat` to
/// pass up with), its `stat` counted: how both entry points, IPv4's and IPv6's, end.
#[inline(always)]
pub(crate) fn act(answer: u32) -> u32 {
    match answer {
        transmit if transmit & TRANSMIT != 0 => {
            count(transmit & !TRANSMIT);
            XDP_TX
        }
        drop if drop & DROP != 0 => {
            count(drop & !DROP);
            XDP_DROP
        }
        pass => {
            count(pass);
            XDP_PASS
        }
    }
}

/// Whether the frame's EtherType is IPv6's.
#[inline(always)]
fn is_ipv6(ctx: &XdpContext) -> bool {
    // SAFETY: `bytes_at` checked the bounds.
    bytes_at::<2>(ctx, ETH_PROTO).is_some_and(|p| unsafe { p.read_unaligned() } == ETH_P_IPV6)
}

/// [`classify`]'s answers besides a `stat` index to pass up with, or one to transmit
/// with (`TRANSMIT | stat`) or drop with (`DROP | stat`); matched before those.
pub(crate) const NOT_OURS: u32 = u32::MAX;
const BARE_SYN: u32 = u32::MAX - 1;
const BARE_ACK: u32 = u32::MAX - 2;
const SYN_ON_CLOSED_FLOW: u32 = u32::MAX - 3;
pub(crate) const TRANSMIT: u32 = 1 << 31;
pub(crate) const DROP: u32 = 1 << 30;

/// [`forward`] as a plain number across a BPF-to-BPF call: an enum with a payload
/// returned from a function that is not inlined leaves the payload's register undefined
/// for the variants without one, which the verifier refuses to read. A function of its
/// own, as `answer_syn` is, so that each has a stack frame of its own (one frame for
/// both would pass the verifier's 512 bytes).
#[inline(never)]
fn classify(ctx: &XdpContext) -> u32 {
    match forward(ctx) {
        None => NOT_OURS,
        Some(Verdict::Transmit(stat)) => TRANSMIT | stat,
        Some(Verdict::Drop(stat)) => DROP | stat,
        Some(Verdict::Syn) => BARE_SYN,
        Some(Verdict::SynOnClosedFlow) => SYN_ON_CLOSED_FLOW,
        Some(Verdict::BareAck) => BARE_ACK,
        Some(Verdict::Pass(stat)) => stat,
    }
}

/// An ICMPv4 "fragmentation needed" to a VIP (docs/design.md, "ICMP errors and path
/// MTU"): the flow its quote names (`baton_common::icmp`) is looked up by the key its
/// client segments are forwarded by, and the error goes to that flow's back-end
/// unchanged but for what a client segment has rewritten (the MACs, the destination
/// address and the IPv4 header checksum; the ICMP message, which no checksum here
/// covers, untouched): the back-end's module puts the quote into its server's terms.
/// Answers `TRANSMIT | stat`, `DROP | stat` (a quote of no flow in the table, or a
/// malformed error), or [`NOT_OURS`] for anything else, which passes up as before: other
/// ICMP to a VIP (an echo request, which the front-end's own stack answers; other
/// unreachables, which it drops, having no socket for them). Nothing is ever answered
/// here. The ICMP checksum is not verified: the back-end's kernel does (`icmp_rcv`), and
/// the module's update keeps a wrong one wrong. A function of its own, reached only by
/// what `classify` found not ours, so that the TCP path is the same as without it.
#[inline(never)]
fn icmp_to_vip(ctx: &XdpContext) -> u32 {
    let Some(config) = FRONTEND_CONFIG.get(0) else {
        return NOT_OURS;
    };
    if config.flags & FrontendConfig::ENABLED == 0 {
        return NOT_OURS;
    }
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack.
    let (Some(l3), Some(icmp)) = (
        bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }),
        bytes_at::<ICMP_HLEN>(ctx, ETH_IPV4_LEN).map(|p| unsafe { p.read_unaligned() }),
    ) else {
        return NOT_OURS;
    };
    if !is_ipv4(&l3)
        || ip_protocol(&l3) != IPPROTO_ICMP
        || !addressed_to(eth_dest(&l3), config.interface_mac)
        || !is_frag_needed(icmp[ICMP_TYPE], icmp[ICMP_CODE])
        || !is_service(u32::from_ne_bytes(ip_daddr(&l3)), 0)
    {
        return NOT_OURS;
    }
    // SAFETY: as above.
    let Some(head) =
        bytes_at::<ICMPV4_HEAD_LEN>(ctx, ETH_HLEN).map(|p| unsafe { p.read_unaligned() })
    else {
        return DROP | stat::DROP_ICMP_MALFORMED;
    };
    let available = ctx.data_end() - ctx.data() - ETH_HLEN;
    let error = match parse_icmpv4_head(&head, available) {
        Ok(Icmpv4Message::FragNeeded(error)) if error.quotes_its_destination() => error,
        Ok(Icmpv4Message::Other) => return NOT_OURS,
        Ok(Icmpv4Message::FragNeeded(_)) => return DROP | stat::DROP_ICMP_MALFORMED,
        Err(_) => return DROP | stat::DROP_ICMP_MALFORMED,
    };
    let mut tcp: QuotedTcp = [0; QUOTED_TCP_LEN];
    // A power of two less one: the verifier's bound on the offset (the quoted header
    // ends at most 88 bytes in, which `parse_icmpv4_head` checked the datagram holds).
    let at = ((ETH_HLEN + error.quoted_tcp) as u32) & 0x7f;
    // SAFETY: `tcp` holds the 8 bytes asked for; the kernel checks the packet side.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, at, tcp.as_mut_ptr().cast(), QUOTED_TCP_LEN as u32) }
        != 0
    {
        return DROP | stat::DROP_ICMP_MALFORMED;
    }
    let key = quoted_segment_v4(&error, &tcp).frontend_flow_key();
    let Some(flow) = FRONTEND_FLOWS.get_ptr(key) else {
        return DROP | stat::DROP_ICMP_NO_FLOW;
    };
    // SAFETY: a map value pointer, valid for this program run; copied out at once.
    let target = unsafe { *flow };
    let daddr = ip_daddr(&l3);
    let new_daddr = target.backend_addr_be.to_ne_bytes();
    let check = csum_replace4(
        u16::from_be_bytes(ip_check(&l3)),
        u32::from_be_bytes(daddr),
        u32::from_be_bytes(new_daddr),
    );
    let (Some(eth), Some(check_at), Some(daddr_at)) = (
        bytes_at::<{ 2 * ETH_ALEN }>(ctx, ETH_DEST),
        bytes_at::<2>(ctx, ETH_HLEN + IP_CHECK),
        bytes_at::<4>(ctx, ETH_HLEN + IP_DADDR),
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
        check_at.write_unaligned(check.to_be_bytes());
        daddr_at.write_unaligned(new_daddr);
    }
    TRANSMIT | stat::FORWARDED_ICMP
}

/// What a client segment's TSecr says of whose answer it acknowledges
/// (`baton_common::frontend::Echo`), read only for a flow awaiting the answer: the
/// timestamps option at the start of the options area, where every common client puts
/// it (a constant offset), or no options; any other layout is left to the core.
#[inline(always)]
fn client_echo(ctx: &XdpContext, header_len: usize) -> Echo {
    if header_len == TCP_HLEN {
        return Echo::of_options(&[]);
    }
    if header_len < TCP_HLEN + LINUX_TIMESTAMPS_LEN {
        return Echo::Unread;
    }
    match bytes_at::<LINUX_TIMESTAMPS_LEN>(ctx, TCP + TCP_HLEN) {
        // SAFETY: `bytes_at` checked the bounds.
        Some(p) => Echo::of_options(&unsafe { p.read_unaligned() }),
        None => Echo::Unread,
    }
}

/// [`learn_by_stamp`]'s answer for a segment whose TSecr is no stamp (or with stamps
/// off): it goes on as before.
const NOT_STAMPED: u32 = u32::MAX;

/// A client segment (ACK, no SYN, FIN or RST) of a flow the table misses, judged by its
/// TSecr (`baton_common::stamp::judge_stamp`; docs/design.md, "Stateless forwarding by
/// the stamp"): a valid stamp of a back-end of the service has the segment forwarded to
/// it and the flow learned (its entry written, the daemon told); a forged or stale one
/// is dropped. Answers `TRANSMIT | stat`, `DROP | stat`, a `stat` to pass up with, or
/// [`NOT_STAMPED`]. Only the timestamps option at the start of the options area, where
/// every common client puts it, is read (a constant offset); a segment with another
/// layout goes on as before. A function of its own, so that the MAC's stack is not
/// added to `classify`'s.
#[inline(never)]
fn learn_by_stamp(ctx: &XdpContext) -> u32 {
    let (Some(stamps), Some(config)) = (FRONTEND_STAMP_CONFIG.get(0), FRONTEND_CONFIG.get(0))
    else {
        return NOT_STAMPED;
    };
    if stamps.flags & StampConfig::ENABLED == 0 {
        return NOT_STAMPED;
    }
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack (`forward` checked
    // them to be IPv4 without options, TCP, to the service).
    let (Some(l3), Some(tcp), Some(ts)) = (
        bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }),
        bytes_at::<TCP_HLEN>(ctx, TCP).map(|p| unsafe { p.read_unaligned() }),
        bytes_at::<LINUX_TIMESTAMPS_LEN>(ctx, TCP + TCP_HLEN)
            .map(|p| unsafe { p.read_unaligned() }),
    ) else {
        return NOT_STAMPED;
    };
    let header_len = tcp_header_len(&tcp);
    if header_len < TCP_HLEN + LINUX_TIMESTAMPS_LEN || ts[..4] != [1, 1, 8, 10] {
        return NOT_STAMPED;
    }
    let tsecr = u32::from_be_bytes([ts[8], ts[9], ts[10], ts[11]]);
    let Some(stamp) = stamp::stamp_of(tsecr) else {
        return NOT_STAMPED;
    };
    let backend = FRONTEND_STAMP_BACKENDS.get(u32::from(stamp::id_of(stamp)));
    let client = (ip_saddr(&l3), u16::from_be_bytes(tcp_source(&tcp)));
    let service = (ip_daddr(&l3), u16::from_be_bytes(tcp_dest(&tcp)));
    match stamp::judge_stamp(&stamps.key, tsecr, client, service, backend) {
        StampVerdict::NotAStamp => return NOT_STAMPED,
        StampVerdict::UnknownBackend => return DROP | stat::DROP_STAMP_UNKNOWN_BACKEND,
        StampVerdict::Forged => return DROP | stat::DROP_STAMP_FORGED,
        StampVerdict::Forward => {}
    }
    let Some(backend) = backend else {
        return NOT_STAMPED;
    };
    learn(ctx, config, &l3, &tcp, backend, stat::LEARNED_BY_STAMP)
}

/// Learns a flow whose back-end a verified stamp named (`backend`, from the stamp
/// table): its entry written, the daemon told, and the segment forwarded as any
/// handed-off flow's. Answers `TRANSMIT | learned_stat` for a flow learned here,
/// `TRANSMIT | stat::FORWARDED` for one another CPU learned first, or a `stat` to pass
/// up with, the segment and the table as they were.
#[inline(always)]
fn learn(
    ctx: &XdpContext,
    config: &FrontendConfig,
    l3: &EthIpv4,
    tcp: &TcpHeader,
    backend: &StampedBackend,
    learned_stat: u32,
) -> u32 {
    let header_len = tcp_header_len(tcp);
    let client = (ip_saddr(l3), u16::from_be_bytes(tcp_source(tcp)));
    let service = (ip_daddr(l3), u16::from_be_bytes(tcp_dest(tcp)));
    let total_len = usize::from(ip_tot_len(l3));
    if total_len < IPV4_HLEN + header_len || ctx.data() + ETH_HLEN + total_len > ctx.data_end() {
        return stat::PASS_MALFORMED;
    }
    let segment = Segment {
        tcp_len: total_len - IPV4_HLEN,
        header_len,
    };
    let key = FrontendFlowKey {
        client_addr_be: u32::from_ne_bytes(client.0),
        vip_addr_be: u32::from_ne_bytes(service.0),
        client_port_be: u16::from_ne_bytes(tcp_source(tcp)),
        vip_port_be: u16::from_ne_bytes(tcp_dest(tcp)),
    };
    // The flow as handed off: nothing awaited, the client's next number past this
    // segment (what it sends is judged against it from now on), no ISN known (a SYN on
    // its ports is then a new connection, which it is: the client cannot resend an
    // old one's SYN after data).
    let learned = FrontendFlow {
        backend_addr_be: backend.addr_be,
        backend_port_be: backend.port_be,
        backend_mac: backend.mac,
        client_isn: 0,
        close_state: 0,
        isn_f: 0,
        client_next: u32::from_be_bytes(tcp_seq(tcp))
            .wrapping_add((segment.tcp_len - header_len) as u32),
        reserved: 0,
        last_seen_ns: 0,
    };
    // Reserved first: a full ring must leave the table and the segment as they were.
    let Some(mut notice) = FRONTEND_NOTICES.reserve::<FlowNotice>(0) else {
        return stat::PASS_RING_FULL;
    };
    // Only if no other CPU learned it first; then its entry serves.
    let fresh = FRONTEND_FLOWS
        .insert(key, learned, u64::from(BPF_NOEXIST))
        .is_ok();
    let Some(flow) = FRONTEND_FLOWS.get_ptr_mut(key) else {
        notice.discard(u64::from(BPF_RB_NO_WAKEUP));
        return stat::PASS_NO_FLOW;
    };
    match forward_flow(ctx, config, l3, tcp, segment, flow) {
        Verdict::Transmit(_) if fresh => {
            notice.write(FlowNotice {
                key,
                what: FlowNotice::LEARNED,
                // The learned entry's: no ISN is known of a flow learned by its stamp.
                client_isn: 0,
            });
            // Committed before `XDP_TX` sends the segment on, as every notice.
            notice.submit(u64::from(BPF_RB_NO_WAKEUP));
            TRANSMIT | learned_stat
        }
        Verdict::Transmit(_) => {
            notice.discard(u64::from(BPF_RB_NO_WAKEUP));
            TRANSMIT | stat::FORWARDED
        }
        other => {
            notice.discard(u64::from(BPF_RB_NO_WAKEUP));
            if fresh {
                // Nothing forwarded, nothing learned: the segment goes up as it came.
                let _ = FRONTEND_FLOWS.remove(key);
            }
            match other {
                Verdict::Pass(stat) => stat,
                _ => stat::PASS_MALFORMED,
            }
        }
    }
}

/// [`learn_by_claim`]'s answer for a frame that is no claim to this front-end: it goes
/// on as before.
const NOT_A_CLAIM: u32 = u32::MAX;

/// A back-end's claim (`baton_common::claim`; docs/design.md, "Clients without
/// timestamps: probe and claim"): the answer to a probe the slow path sent for a client
/// segment of a flow nobody here knew, whose client sends no timestamps. Its stamp is
/// judged as a TSecr's is (`claim::judge_claim`); a valid one has the flow learned as
/// [`learn_by_stamp`] learns it, and the segment inside (the trailer cut, IPv4's
/// EtherType restored) forwarded to the back-end the stamp table names. A forged or
/// malformed claim, or one naming no back-end here, is dropped and counted. Answers
/// `TRANSMIT | stat`, `DROP | stat`, a `stat` to pass up with, or [`NOT_A_CLAIM`]
/// (another EtherType, or a claim to another host's MAC, passed up untouched as any
/// such frame). A function of its own, reached only by what `classify` found not
/// ours, so that the TCP path is the same as without it.
#[inline(never)]
fn learn_by_claim(ctx: &XdpContext) -> u32 {
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack.
    let Some(head) = bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }) else {
        return NOT_A_CLAIM;
    };
    if [head[ETH_PROTO], head[ETH_PROTO + 1]] != claim::ETH_P_CLAIM {
        return NOT_A_CLAIM;
    }
    let (Some(stamps), Some(config)) = (FRONTEND_STAMP_CONFIG.get(0), FRONTEND_CONFIG.get(0))
    else {
        return NOT_A_CLAIM;
    };
    if config.flags & FrontendConfig::ENABLED == 0
        || !addressed_to(eth_dest(&head), config.interface_mac)
    {
        return NOT_A_CLAIM;
    }
    let len = ctx.data_end() - ctx.data();
    let Ok(at) = claim::trailer_offset(&head, len) else {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    };
    let mut raw = [0u8; claim::TRAILER_LEN];
    // A power of two less one: the verifier's bound on the offset (`trailer_offset`
    // checked the frame holds the trailer there).
    let at = at & 0xffff;
    // SAFETY: `raw` holds the bytes asked for; the kernel checks the packet side.
    if unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            at as u32,
            raw.as_mut_ptr().cast(),
            claim::TRAILER_LEN as u32,
        )
    } != 0
    {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    }
    let trailer = claim::Trailer::from_bytes(&raw);
    // SAFETY: as above.
    let Some(tcp) = bytes_at::<TCP_HLEN>(ctx, TCP).map(|p| unsafe { p.read_unaligned() }) else {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    };
    let client = (ip_saddr(&head), u16::from_be_bytes(tcp_source(&tcp)));
    let service = (ip_daddr(&head), u16::from_be_bytes(tcp_dest(&tcp)));
    if !is_service(
        u32::from_ne_bytes(service.0),
        u16::from_ne_bytes(tcp_dest(&tcp)),
    ) {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    }
    let backend = if stamps.flags & StampConfig::ENABLED != 0 {
        FRONTEND_STAMP_BACKENDS.get(u32::from(stamp::id_of(trailer.stamp)))
    } else {
        None
    };
    match claim::judge_claim(&stamps.key, &trailer, client, service, backend) {
        StampVerdict::Forward => {}
        StampVerdict::UnknownBackend => return DROP | stat::DROP_CLAIM_UNKNOWN_BACKEND,
        StampVerdict::Forged | StampVerdict::NotAStamp => return DROP | stat::DROP_CLAIM_FORGED,
    }
    let Some(backend) = backend else {
        return DROP | stat::DROP_CLAIM_UNKNOWN_BACKEND;
    };
    let backend = *backend;
    // The client's segment again: the trailer (and any padding after it) cut, the
    // EtherType IPv4's.
    let cut = (len - at) as i32;
    // SAFETY: the context pointer the kernel passed in; shrinking only.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -cut) } != 0 {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    }
    let Some(proto) = bytes_at::<2>(ctx, ETH_PROTO) else {
        return DROP | stat::DROP_CLAIM_MALFORMED;
    };
    // SAFETY: bounds-checked by `bytes_at`; XDP owns the buffer.
    unsafe { proto.write_unaligned(ETH_P_IP) };
    // The headers as they now are (the copies read before the resize, which left them
    // in place): reading them again gave a program the verifier refused.
    let mut l3 = head;
    l3[ETH_PROTO] = ETH_P_IP[0];
    l3[ETH_PROTO + 1] = ETH_P_IP[1];
    match learn(ctx, config, &l3, &tcp, &backend, stat::LEARNED_BY_CLAIM) {
        transmit if transmit & TRANSMIT != 0 => transmit,
        // Nothing forwarded: a segment the slow path would only probe for again.
        _ => DROP | stat::DROP_CLAIM_MALFORMED,
    }
}

/// Whether a closed flow's SYN is answered here (`SynCookieConfig::ENGAGED`) so that its
/// request can be handed off in the kernel (`KernelHandoffConfig::ENABLED`): without
/// kernel dispatch the slow path takes such a connection whole, as before.
#[inline(always)]
fn replacing_closed_flows() -> bool {
    FRONTEND_SYN_COOKIES
        .get(0)
        .is_some_and(|c| c.flags & SynCookieConfig::ENGAGED != 0)
        && FRONTEND_KERNEL_HANDOFF
            .get(0)
            .is_some_and(|k| k.flags & KernelHandoffConfig::ENABLED != 0)
}

/// Whether (`addr_be`, `port_be`) is one of the front-end's services; port 0 asks
/// whether `addr_be` is a VIP at all.
#[inline(always)]
fn is_service(addr_be: u32, port_be: u16) -> bool {
    let key = FrontendService {
        vip_addr_be: addr_be,
        vip_port_be: port_be,
        _pad: 0,
    };
    // SAFETY: only the presence is read.
    unsafe { FRONTEND_SERVICES.get(key) }.is_some()
}

#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = FRONTEND_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

/// A request the kernel leaves to the slow path (`answer`: [`TO_SLOW_PATH`] with the
/// reason): counted, and its reason, then passed up as it arrived.
#[inline(always)]
fn to_slow_path(answer: u32) -> u32 {
    count(stat::PASS_REQUEST_TO_SLOW_PATH);
    if let Some(counter) = FRONTEND_SLOW_PATH_REASONS.get_ptr_mut(answer & !TO_SLOW_PATH) {
        // SAFETY: as in `count`.
        unsafe { *counter += 1 };
    }
    XDP_PASS
}

/// A pointer to `N` bytes at `offset`, if the packet holds them.
#[inline(always)]
pub(crate) fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut [u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut [u8; N])
}

#[inline(always)]
fn forward(ctx: &XdpContext) -> Option<Verdict> {
    let config = *FRONTEND_CONFIG.get(0)?;
    if config.flags & FrontendConfig::ENABLED == 0 {
        return None;
    }
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack.
    let l3 = unsafe { bytes_at::<TCP>(ctx, 0)?.read_unaligned() };
    if !is_ipv4(&l3) || ip_protocol(&l3) != IPPROTO_TCP {
        return None;
    }
    // Another host's frame (a dead front-end's, flooded by the switch): the stack drops
    // it, and nothing here may act on it (`addressed_to`).
    if !addressed_to(eth_dest(&l3), config.interface_mac) {
        return None;
    }
    let daddr = u32::from_ne_bytes(ip_daddr(&l3));
    let saddr = u32::from_ne_bytes(ip_saddr(&l3));
    if ip_version_ihl(&l3) != IPV4_VERSION_IHL_NO_OPTIONS || is_fragment(&l3) {
        // No ports at a fixed offset (IPv4 options), or maybe none at all (a fragment):
        // told apart by the address alone, which the services map holds with port 0.
        if !is_service(daddr, 0) {
            return None;
        }
        if is_fragment(&l3) {
            // Nothing reassembles here, and clients of a TCP service set DF.
            return Some(Verdict::Drop(stat::DROP_FRAGMENT));
        }
        // IPv4 options: the slow path's.
        return Some(Verdict::Pass(stat::PASS_UNUSUAL_IP));
    }
    let Some(tcp_ptr) = bytes_at::<TCP_HLEN>(ctx, TCP) else {
        // Too short for a TCP header: counted if it is for a VIP.
        return is_service(daddr, 0).then_some(Verdict::Pass(stat::PASS_MALFORMED));
    };
    // SAFETY: as above.
    let tcp = unsafe { tcp_ptr.read_unaligned() };
    let dport = u16::from_ne_bytes(tcp_dest(&tcp));
    let key = FrontendFlowKey {
        client_addr_be: saddr,
        vip_addr_be: daddr,
        client_port_be: u16::from_ne_bytes(tcp_source(&tcp)),
        vip_port_be: dport,
    };
    // The flow table holds only the services' flows (the daemon installs no other, and a
    // successor refuses to adopt one of a service it no longer has), so a segment of a
    // flow in it needs no lookup of the services: the table first, one hash lookup per
    // forwarded segment, and the services only for the rest.
    // Not to a service (a back-end's copy to this interface among them): not ours.
    let flow = FRONTEND_FLOWS.get_ptr_mut(key);
    if flow.is_none() && !is_service(daddr, dport) {
        return None;
    }
    let flags = tcp_flags(&tcp);
    if flags & SYN != 0 {
        if flags & HANDSHAKE_FLAGS == SYN {
            let Some(flow) = flow else {
                return Some(Verdict::Syn);
            };
            // A SYN on the ports of a flow whose client has closed, with another ISN: a
            // new connection. With kernel dispatch and SYNs answered here, its entry goes and the SYN
            // is answered like any other, so that its request can be handed off here too
            // (the core frees the old connection when the new one reaches it).
            // SAFETY: a map value pointer, valid for this program run.
            let old = unsafe { *flow };
            if old.replaced_by_syn(u32::from_be_bytes(tcp_seq(&tcp))) && replacing_closed_flows() {
                let _ = FRONTEND_FLOWS.remove(key);
                return Some(Verdict::SynOnClosedFlow);
            }
        }
        // Any other SYN on a handed-off flow's port is the slow path's to judge.
        return Some(Verdict::Pass(stat::PASS_CONTROL));
    }
    let Some(flow) = flow else {
        if flags & HANDSHAKE_FLAGS == ACK {
            return Some(Verdict::BareAck);
        }
        return Some(Verdict::Pass(if flags & (FIN | RST) != 0 {
            stat::PASS_CONTROL
        } else {
            stat::PASS_NO_FLOW
        }));
    };
    // The lengths every later step trusts (the judgement's payload length, the
    // rewrite's checksums), checked once against the frame.
    let total_len = usize::from(ip_tot_len(&l3));
    let header_len = tcp_header_len(&tcp);
    if header_len < TCP_HLEN
        || total_len < IPV4_HLEN + header_len
        || ctx.data() + ETH_HLEN + total_len > ctx.data_end()
    {
        return Some(Verdict::Pass(stat::PASS_MALFORMED));
    }
    let segment = Segment {
        tcp_len: total_len - IPV4_HLEN,
        header_len,
    };
    // SAFETY: a map value pointer, valid for this program run.
    let (close_state, isn_f, client_next) =
        unsafe { ((*flow).close_state, (*flow).isn_f, (*flow).client_next) };
    // What the segment does to the connection (the decision the simulation's model
    // runs too): judged by its sequence number, only a FIN or RST at exactly the number
    // expected is told to the core (module docs), and while the flow awaits the answer
    // only the proof of one goes on.
    let (awaiting_answer, echo) = if close_state & FrontendFlow::AWAITING_ANSWER != 0 {
        // SAFETY: as above.
        let backend_addr = unsafe { (*flow).backend_addr_be };
        let awaited = AwaitedAnswer {
            isn_f,
            backend_id: stamp::backend_id(backend_addr.to_ne_bytes()),
        };
        (Some(awaited), client_echo(ctx, header_len))
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
            payload_len: (segment.tcp_len - header_len) as u32,
            echo,
        },
    );
    if decision.hold {
        // Held by the core and forwarded after the handoff: counted as seen.
        // SAFETY: as above; racing CPUs store numbers of the same stream.
        unsafe { (*flow).client_next = decision.client_next };
        return Some(Verdict::Pass(stat::PASS_AWAITING_ANSWER));
    }
    let verdict = if decision.notice == 0 {
        match forward_flow(ctx, &config, &l3, &tcp, segment, flow) {
            Verdict::Transmit(_) => Verdict::Transmit(decision.counter),
            other => other,
        }
    } else {
        forward_noticed(ctx, &config, &l3, &tcp, segment, flow, key, decision)
    };
    // Segments on their way to the back-end (from here, or from the slow path, which
    // forwards the ones it is passed for these reasons) move the expected number on;
    // ones the slow path will drop (a bad checksum, malformed) do not.
    if matches!(
        verdict,
        Verdict::Transmit(_)
            | Verdict::Pass(stat::PASS_PARTIAL_CHECKSUM)
            | Verdict::Pass(stat::PASS_RING_FULL)
    ) {
        // SAFETY: as above.
        unsafe { (*flow).client_next = decision.client_next };
    }
    Some(verdict)
}

/// A segment the core must be told of (`decision.notice`, [`FlowNotice`]): the notice
/// written to the ring and the segment forwarded, counted as `decision.counter`, with a
/// flow's `AWAITING_ANSWER` cleared if this is the answer; or, if the ring is full or
/// the segment must go up anyway, the segment passed up untouched and nothing written.
#[expect(
    clippy::too_many_arguments,
    reason = "the segment as `forward` parsed and checked it, passed on rather than parsed again"
)]
#[inline(always)]
fn forward_noticed(
    ctx: &XdpContext,
    config: &FrontendConfig,
    l3: &EthIpv4,
    tcp: &TcpHeader,
    segment: Segment,
    flow: *mut FrontendFlow,
    key: FrontendFlowKey,
    decision: ClientSegmentDecision,
) -> Verdict {
    // Reserved first: a full ring must leave the segment as it arrived.
    let Some(mut notice) = FRONTEND_NOTICES.reserve::<FlowNotice>(0) else {
        return Verdict::Pass(stat::PASS_RING_FULL);
    };
    match forward_flow(ctx, config, l3, tcp, segment, flow) {
        Verdict::Transmit(_) => {
            let what = decision.notice;
            if what & FlowNotice::BACKEND_ANSWERED != 0 {
                // SAFETY: a map value pointer, valid for this program run. Racing CPUs
                // only ever clear the same bit; the daemon's next write of the value
                // (the completed handoff's) leaves it clear too.
                unsafe { (*flow).close_state &= !FrontendFlow::AWAITING_ANSWER };
            }
            let closed = FrontendFlow::close_state_noticed(what);
            if closed != 0 {
                // The close the core will record from this notice, recorded here at once
                // (`close_state_noticed` says why). SAFETY: as above; racing CPUs only
                // ever set the same bits.
                unsafe { (*flow).close_state |= closed };
            }
            notice.write(FlowNotice {
                key,
                what,
                // SAFETY: a map value pointer, valid for this program run.
                client_isn: unsafe { (*flow).client_isn },
            });
            // Committed before `XDP_TX` sends the segment on (module docs).
            notice.submit(u64::from(BPF_RB_NO_WAKEUP));
            Verdict::Transmit(decision.counter)
        }
        other => {
            notice.discard(u64::from(BPF_RB_NO_WAKEUP));
            other
        }
    }
}

/// Rewrites a segment of a handed-off flow. Nothing is written until every check has
/// passed, so a segment passed up is the one that arrived.
#[inline(always)]
fn forward_flow(
    ctx: &XdpContext,
    config: &FrontendConfig,
    l3: &EthIpv4,
    tcp: &TcpHeader,
    segment: Segment,
    flow: *mut FrontendFlow,
) -> Verdict {
    // SAFETY: a map value pointer, valid for this program run; copied out at once.
    let target = unsafe { *flow };
    let Segment {
        tcp_len,
        header_len,
    } = segment;
    let saddr = ip_saddr(l3);
    let daddr = ip_daddr(l3);
    let new_daddr = target.backend_addr_be.to_ne_bytes();
    let old_port = u16::from_be_bytes(tcp_dest(tcp));
    let new_port = u16::from_be_bytes(target.backend_port_be.to_ne_bytes());
    let check = u16::from_be_bytes(tcp_check(tcp));
    let old_pseudo = tcp_ipv4_pseudo_header_sum(saddr, daddr, tcp_len as u16);

    let new_check = if tcp_len > header_len {
        // Payload: complete fields are updated, partial ones go up (module docs).
        match redirected_tcp_checksum(
            check,
            old_pseudo,
            (u32::from_be_bytes(daddr), old_port),
            (u32::from_be_bytes(new_daddr), new_port),
        ) {
            Some(new_check) => new_check,
            None => return Verdict::Pass(stat::PASS_PARTIAL_CHECKSUM),
        }
    } else {
        // Header only: summed whole. The header's words except the destination port
        // and the checksum, which differ between the old and the new sum.
        let Some(words) = tcp_header_sum(ctx, header_len, [TCP_DEST / 2, TCP_CHECK / 2]) else {
            return Verdict::Pass(stat::PASS_MALFORMED);
        };
        let complete = ones_complement_add(ones_complement_add(old_pseudo, words), old_port);
        // Complete and right, or the partial sum an offloading sender leaves.
        if ones_complement_add(complete, check) != 0xffff && check != old_pseudo {
            return Verdict::Pass(stat::PASS_BAD_CHECKSUM);
        }
        let new_pseudo = tcp_ipv4_pseudo_header_sum(saddr, new_daddr, tcp_len as u16);
        tcp_checksum(new_pseudo, ones_complement_add(words, new_port))
    };
    let ip_check = csum_replace4(
        u16::from_be_bytes(ip_check(l3)),
        u32::from_be_bytes(daddr),
        u32::from_be_bytes(new_daddr),
    );

    let (Some(eth), Some(ip_check_at), Some(daddr_at), Some(port_at), Some(check_at)) = (
        bytes_at::<{ 2 * ETH_ALEN }>(ctx, ETH_DEST),
        bytes_at::<2>(ctx, ETH_HLEN + IP_CHECK),
        bytes_at::<4>(ctx, ETH_HLEN + IP_DADDR),
        bytes_at::<2>(ctx, TCP + TCP_DEST),
        bytes_at::<2>(ctx, TCP + TCP_CHECK),
    ) else {
        return Verdict::Pass(stat::PASS_MALFORMED);
    };
    let m = target.backend_mac;
    let s = config.interface_mac;
    // SAFETY: every pointer was bounds-checked by `bytes_at`; XDP owns the buffer.
    unsafe {
        eth.write_unaligned([
            m[0], m[1], m[2], m[3], m[4], m[5], s[0], s[1], s[2], s[3], s[4], s[5],
        ]);
        ip_check_at.write_unaligned(ip_check.to_be_bytes());
        daddr_at.write_unaligned(new_daddr);
        port_at.write_unaligned(new_port.to_be_bytes());
        check_at.write_unaligned(new_check.to_be_bytes());
        // A plain store: racing CPUs all write "now". The coarse clock (the same
        // CLOCK_MONOTONIC, at tick resolution) is enough for a scan once a second, and
        // cheaper per packet than the precise one.
        (*flow).last_seen_ns = bpf_ktime_get_coarse_ns();
    }
    Verdict::Transmit(stat::FORWARDED)
}

/// The one's-complement sum of the TCP header's 16-bit words (`header_len` bytes, at
/// most 60), leaving out the words at the indexes in `skip` (`usize::MAX` for none).
/// `None` if the packet is shorter than the header.
#[inline(always)]
fn tcp_header_sum(ctx: &XdpContext, header_len: usize, skip: [usize; 2]) -> Option<u16> {
    let mut sum: u16 = 0;
    for i in 0..TCP_MAX_WORDS {
        if i * 2 >= header_len {
            break;
        }
        if i == skip[0] || i == skip[1] {
            continue;
        }
        let word = bytes_at::<2>(ctx, TCP + i * 2)?;
        // SAFETY: bounds checked by `bytes_at`.
        sum = ones_complement_add(sum, u16::from_be_bytes(unsafe { word.read_unaligned() }));
    }
    Some(sum)
}

/// Replaces a bare SYN with its cookie SYN/ACK, if cookies are engaged and the SYN is one
/// this program can answer; `None` leaves the frame as it arrived, for the slow path.
///
/// A function of its own (a BPF-to-BPF call), so that its stack is not added to the
/// forwarding path's in one frame past the verifier's 512 bytes.
#[inline(never)]
fn answer_syn(ctx: &XdpContext) -> Option<()> {
    let cookies = FRONTEND_SYN_COOKIES.get(0)?;
    if cookies.flags & SynCookieConfig::ENGAGED == 0 {
        return None;
    }
    let config = FRONTEND_CONFIG.get(0)?;
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack (`forward` checked
    // them to be IPv4 without options, TCP, to the service).
    let l3 = unsafe { bytes_at::<TCP>(ctx, 0)?.read_unaligned() };
    let tcp = unsafe { bytes_at::<TCP_HLEN>(ctx, TCP)?.read_unaligned() };
    let total_len = usize::from(ip_tot_len(&l3));
    let header_len = tcp_header_len(&tcp);
    // Data in a SYN (TCP Fast Open) and odd lengths: the slow path's.
    if header_len < TCP_HLEN
        || total_len != IPV4_HLEN + header_len
        || ctx.data() + ETH_HLEN + total_len > ctx.data_end()
    {
        return None;
    }
    let client_isn = u32::from_be_bytes(tcp_seq(&tcp));
    let to = SynAddresses {
        client_mac: eth_source(&l3),
        our_mac: config.interface_mac,
        client_addr: ip_saddr(&l3),
        service_addr: ip_daddr(&l3),
        client_port: u16::from_be_bytes(tcp_source(&tcp)),
        service_port: u16::from_be_bytes(tcp_dest(&tcp)),
    };
    // The SYN's checksum, summed whole (no payload, so at most 60 bytes): a corrupted
    // SYN gets no answer here, as the kernel would give none. The partial sum an
    // offloading sender leaves is taken, as in `forward_flow`.
    let tcp_len = header_len as u16;
    let pseudo = tcp_ipv4_pseudo_header_sum(to.client_addr, to.service_addr, tcp_len);
    let words = tcp_header_sum(ctx, header_len, [usize::MAX; 2])?;
    let check = u16::from_be_bytes(tcp_check(&tcp));
    if ones_complement_add(pseudo, words) != 0xffff && check != pseudo {
        return None;
    }
    // The hashes `hash_syn_for_answer` made of this SYN, before the walk over the
    // options: the verifier then checks the hashing once, not once per way the walk
    // ends.
    let made = SYN_HASHES.get(0)?;
    let (hashes, now) = (&made.hashes, made.now);
    let mut options = syn_options(ctx.ctx, header_len - TCP_HLEN)?;
    // ECN is asked for in the header, not the options (RFC 3168 §6.1.1).
    options.ecn_setup = syncookie::ecn_setup_syn(tcp_flags(&tcp), ip_tos(&l3));
    // Resize to the answer's length; a frame that cannot be resized goes up unchanged.
    // Before the half-open map is written, so that a SYN that goes up leaves no entry;
    // nothing of the SYN is read from the frame after it.
    let delta = SYN_ACK_FRAME_LEN as i32 - (ctx.data_end() - ctx.data()) as i32;
    if delta != 0 {
        // SAFETY: the context pointer is the program's own.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return None;
        }
    }
    // Without timestamps, what the cookie cannot keep goes into the half-open map, and
    // the SYN/ACK offers it as the core's own would; if it cannot, it offers none of it.
    let agreed = syncookie::agreed_options(cookies.flags, cookies.window_shift, &options);
    let syn_in_map = agreed.need_the_half_open_map()
        && keep_half_open(
            cookies.flags,
            &FrontendFlowKey {
                client_addr_be: u32::from_ne_bytes(to.client_addr),
                vip_addr_be: u32::from_ne_bytes(to.service_addr),
                client_port_be: u16::from_ne_bytes(tcp_source(&tcp)),
                vip_port_be: u16::from_ne_bytes(tcp_dest(&tcp)),
            },
            &HalfOpenSyn::new(
                client_isn,
                u16::from_be_bytes(tcp_window(&tcp)),
                &options,
                &agreed,
            ),
        );
    let answer =
        syncookie::cookie_syn_ack_with(cookies, hashes, now, client_isn, &options, syn_in_map);
    let out = bytes_at::<SYN_ACK_FRAME_LEN>(ctx, 0)?;
    // SAFETY: bounds checked by `bytes_at`; XDP owns the buffer, and nothing of the SYN
    // is read from it any more.
    write_syn_ack_frame(
        unsafe { &mut *out },
        &to,
        client_isn,
        cookies.window,
        &answer,
    );
    Some(())
}

/// Writes `syn` into the half-open map under `key`, if the map is on (`flags`, the
/// daemon's [`SynCookieConfig::HALF_OPEN`]); `false`, counted, if it is off or refuses
/// the entry (an LRU hash evicts rather than fill, so refusals are not expected). An
/// entry already there (the client's SYN again, or a new connection on the ports) is
/// replaced: the latest SYN is the one the client's ACK answers. Inlined: as a frame of
/// its own it made the verifier walk more of the program, not less.
#[inline(always)]
fn keep_half_open(flags: u32, key: &FrontendFlowKey, syn: &HalfOpenSyn) -> bool {
    if flags & SynCookieConfig::HALF_OPEN != 0 && FRONTEND_HALF_OPEN.insert(key, syn, 0).is_ok() {
        count(stat::HALF_OPEN_KEPT);
        true
    } else {
        count(stat::SYN_ACK_WITHOUT_OPTIONS);
        false
    }
}

/// Whether a bare ACK of no handed-off flow is the handshake's last segment answering a
/// cookie SYN/ACK (while cookies are engaged): no payload, and `ack - 1` a fresh cookie
/// for `seq - 1`. The core needs nothing from it: the client's first data segment brings
/// the same cookie back, and the core rebuilds the connection from that. Any other ACK
/// goes up as before (a stateful handshake's, or a stray one the core answers with a
/// reset). Called from the entry point, like `answer_syn`, so that its stack (the two
/// hashes) is not added to `classify`'s.
#[inline(never)]
fn is_handshake_ack(ctx: &XdpContext) -> bool {
    let Some(cookies) = FRONTEND_SYN_COOKIES.get(0) else {
        return false;
    };
    if cookies.flags & SynCookieConfig::ENGAGED == 0 {
        return false;
    }
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack (`forward` checked
    // them to be IPv4 without options, TCP, to the service).
    let Some(l3) = bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }) else {
        return false;
    };
    let Some(tcp) = bytes_at::<TCP_HLEN>(ctx, TCP).map(|p| unsafe { p.read_unaligned() }) else {
        return false;
    };
    if usize::from(ip_tot_len(&l3)) != IPV4_HLEN + tcp_header_len(&tcp) {
        return false;
    }
    let flow = syncookie::flow_bytes(
        ip_saddr(&l3),
        ip_daddr(&l3),
        u16::from_be_bytes(tcp_source(&tcp)),
        u16::from_be_bytes(tcp_dest(&tcp)),
    );
    let client_isn = u32::from_be_bytes(tcp_seq(&tcp)).wrapping_sub(1);
    let cookie = u32::from_be_bytes(tcp_ack_seq(&tcp)).wrapping_sub(1);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The hashes in `hash_syn`'s frame, the one the SYN answers use (a second caller of
    // the hashing would make the compiler outline it, a frame more on the SYN answer's
    // chain), and again for the minute before if the cookie is that old.
    let hashes = hash_syn(&cookies.keys, now, &flow, client_isn);
    match syncookie::check_cookie_with(&hashes, client_isn, cookie) {
        syncookie::CookieCheck::Valid(_) => true,
        syncookie::CookieCheck::MinutesOld(age) => {
            let then = now.wrapping_sub(u64::from(age) * syncookie::COOKIE_MINUTE_NANOS);
            let hashes = hash_syn(&cookies.keys, then, &flow, client_isn);
            syncookie::check_cookie_with(&hashes, client_isn, cookie)
                .valid()
                .is_some()
        }
        syncookie::CookieCheck::Invalid => false,
    }
}

/// The cookie's hashes; a function of its own, like [`syn_options`], so that the stack
/// of each is not added to `answer_syn`'s (the verifier allows 512 bytes along a chain
/// of calls).
#[inline(never)]
fn hash_syn(
    keys: &syncookie::CookieKeys,
    now: u64,
    flow: &[u8; 12],
    client_isn: u32,
) -> syncookie::CookieHashes {
    syncookie::cookie_hashes(keys, now, flow, client_isn)
}

/// The cookie's hashes of a bare SYN `answer_syn` is to answer, made now and kept in
/// `SYN_HASHES` for it; `false` (nothing made) while cookies are not engaged. Called from
/// the entry point before `answer_syn` rather than from it: with the hashing in its chain
/// of calls, `answer_syn`'s frame, the hashing's and SipHash's passed the verifier's 512
/// bytes once the hashes carried their family's MSS values.
#[inline(never)]
fn hash_syn_for_answer(ctx: &XdpContext) -> bool {
    let Some(cookies) = FRONTEND_SYN_COOKIES.get(0) else {
        return false;
    };
    if cookies.flags & SynCookieConfig::ENGAGED == 0 {
        return false;
    }
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack (`forward` checked
    // them to be IPv4 without options, TCP, to the service).
    let (Some(l3), Some(tcp), Some(slot)) = (
        bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }),
        bytes_at::<TCP_HLEN>(ctx, TCP).map(|p| unsafe { p.read_unaligned() }),
        SYN_HASHES.get_ptr_mut(0),
    ) else {
        return false;
    };
    let flow = syncookie::flow_bytes(
        ip_saddr(&l3),
        ip_daddr(&l3),
        u16::from_be_bytes(tcp_source(&tcp)),
        u16::from_be_bytes(tcp_dest(&tcp)),
    );
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let hashes =
        syncookie::cookie_hashes(&cookies.keys, now, &flow, u32::from_be_bytes(tcp_seq(&tcp)));
    // SAFETY: this CPU's slot, read only by this program run's `answer_syn`.
    unsafe { slot.write(SynHashes { hashes, now }) };
    true
}

/// The options of a SYN whose options area is `len` bytes: copied onto the stack in one
/// load and walked with the shared walk (`SynOptionsWalk`), one step per `bpf_loop`
/// iteration. `None` for an area the walk rejects: the slow path judges those (and
/// counts them as malformed).
#[inline(never)]
fn syn_options(ctx: *mut xdp_md, len: usize) -> Option<SynOptions> {
    let mut walk = OptionsLoop {
        area: [0u8; OPTIONS_AREA],
        walk: SynOptionsWalk::new(0),
    };
    // Options are whole 32-bit words; the mask gives the verifier the load's bound.
    let len = (len as u32) & 0x3c;
    if len > MAX_OPTIONS_LEN as u32 {
        return None;
    }
    if len > 0 {
        // SAFETY: `area` holds 72 >= len bytes; the kernel checks the packet side.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                ctx,
                (TCP + TCP_OPTIONS) as u32,
                walk.area.as_mut_ptr().cast(),
                len,
            )
        };
        if rc != 0 {
            return None;
        }
    }
    walk.walk = SynOptionsWalk::new(len as usize);
    // SAFETY: `options_step` is a BPF function taking the `OptionsLoop` passed with it.
    unsafe {
        bpf_loop(
            MAX_OPTION_STEPS,
            options_step as *mut c_void,
            (&mut walk as *mut OptionsLoop).cast(),
            0,
        );
    }
    walk.walk.finish()
}

/// The state `options_step` works on, on `syn_options`' stack.
#[repr(C)]
struct OptionsLoop {
    area: [u8; OPTIONS_AREA],
    walk: SynOptionsWalk,
}

/// One step of the walk; `bpf_loop` stops at a non-zero return.
unsafe extern "C" fn options_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `syn_options` passes its own `OptionsLoop`, alive for the whole loop.
    let state = unsafe { &mut *ctx.cast::<OptionsLoop>() };
    if state.walk.step(&state.area) { 0 } else { 1 }
}

/// The answers of [`hand_off_request`] (`READY`, `NOT_A_REQUEST`, `TO_SLOW_PATH | why`)
/// and of [`finish_handoff`] (`HANDED_OFF`, `TO_SLOW_PATH | why`).
const HANDED_OFF: u32 = 0;
/// No request to hand off here: no payload, kernel dispatch off, not a cookie of ours.
const NOT_A_REQUEST: u32 = 1;
/// A request the kernel leaves to the slow path, or'd with why (a
/// `kernel_dispatch::reason`, counted by [`to_slow_path`]).
const TO_SLOW_PATH: u32 = 1 << 31;
/// A request prepared for the matcher (`HANDOFF_WORK`).
const READY: u32 = 3;

/// Hands off a client's request in the kernel (docs/design.md, "Dispatch in the kernel"):
/// a data segment of no handed-off flow whose acknowledgement is a valid cookie (XDP
/// answered the SYN and took in the handshake's ACK: `[tcp] syns_in_xdp`), whose head
/// the kernel's matcher judges whole and routes (`crate::dispatch::decide_request`), is
/// rewritten in place into the SYN' carrying it (`baton_common::syn_prime`), the flow
/// taken into the table awaiting the back-end's answer, and the daemon told through
/// `FRONTEND_HANDOFFS` (the request segment as it arrived), from which its protocol core
/// builds the connection as if it had made the handoff. What the program cannot judge
/// exactly as the core would goes up untouched: the core then does it all, as without
/// this path.
///
/// Nothing is written to the frame, the table or the ring until every check has passed,
/// and the frame is restored if a later step fails, so a request passed up is the one
/// that arrived.
#[inline(never)]
fn hand_off_request(ctx: &XdpContext) -> u32 {
    let Some(kernel) = FRONTEND_KERNEL_HANDOFF.get(0) else {
        return NOT_A_REQUEST;
    };
    if kernel.flags & KernelHandoffConfig::ENABLED == 0 {
        return NOT_A_REQUEST;
    }
    let Some(cookies) = FRONTEND_SYN_COOKIES.get(0) else {
        return NOT_A_REQUEST;
    };
    // SAFETY: `bytes_at` checked the bounds; read once onto the stack (`forward` checked
    // them to be IPv4 without options, TCP, to the service, no SYN, FIN or RST).
    let Some(l3) = bytes_at::<TCP>(ctx, 0).map(|p| unsafe { p.read_unaligned() }) else {
        return NOT_A_REQUEST;
    };
    let Some(tcp) = bytes_at::<TCP_HLEN>(ctx, TCP).map(|p| unsafe { p.read_unaligned() }) else {
        return NOT_A_REQUEST;
    };
    let total_len = usize::from(ip_tot_len(&l3));
    let header_len = tcp_header_len(&tcp);
    if header_len < TCP_HLEN
        || total_len <= IPV4_HLEN + header_len
        || ctx.data() + ETH_HLEN + total_len > ctx.data_end()
    {
        return NOT_A_REQUEST;
    }
    let payload_len = total_len - IPV4_HLEN - header_len;
    let seq = u32::from_be_bytes(tcp_seq(&tcp));
    let client_isn = seq.wrapping_sub(1);
    let isn_f = u32::from_be_bytes(tcp_ack_seq(&tcp)).wrapping_sub(1);
    let (client_addr, service_addr) = (ip_saddr(&l3), ip_daddr(&l3));
    let (client_port, service_port) = (
        u16::from_be_bytes(tcp_source(&tcp)),
        u16::from_be_bytes(tcp_dest(&tcp)),
    );
    let flow = syncookie::flow_bytes(client_addr, service_addr, client_port, service_port);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let hashes = hash_syn(&cookies.keys, now, &flow, client_isn);
    let cookie = match syncookie::check_cookie_with(&hashes, client_isn, isn_f) {
        syncookie::CookieCheck::Valid(cookie) => cookie,
        syncookie::CookieCheck::MinutesOld(age) => {
            let then = now.wrapping_sub(u64::from(age) * syncookie::COOKIE_MINUTE_NANOS);
            let hashes = hash_syn(&cookies.keys, then, &flow, client_isn);
            match syncookie::check_cookie_with(&hashes, client_isn, isn_f).valid() {
                Some(cookie) => cookie,
                None => return NOT_A_REQUEST,
            }
        }
        syncookie::CookieCheck::Invalid => return NOT_A_REQUEST,
    };
    // From here on it is a request the kernel could take: anything else is counted.
    let Some(timestamps) = request_timestamps(ctx, header_len) else {
        return TO_SLOW_PATH | reason::TCP_OPTIONS;
    };
    // The payload's sum, from the segment's checksum; a partial one (an offloading
    // sender's) goes up, as in `forward_flow`.
    let check = u16::from_be_bytes(tcp_check(&tcp));
    let pseudo =
        tcp_ipv4_pseudo_header_sum(client_addr, service_addr, (total_len - IPV4_HLEN) as u16);
    if check == pseudo {
        return TO_SLOW_PATH | reason::PARTIAL_CHECKSUM;
    }
    let Some(header_sum) = tcp_header_sum(ctx, header_len, [TCP_CHECK / 2, usize::MAX]) else {
        return TO_SLOW_PATH | reason::LOAD;
    };
    let Some(work) = HANDOFF_WORK.get_ptr_mut(0) else {
        return TO_SLOW_PATH | reason::TABLES;
    };
    // SAFETY: a per-CPU map value, this CPU's alone while the program runs. The SYN''s
    // terms, the flow's key and value are built there, off the stack (the verifier
    // allows 512 bytes along a chain of calls).
    let work = unsafe { &mut *work };
    // The terms, and which requests the kernel leaves to the core, are
    // `baton_common::kernel_dispatch`'s, the simulation's model's too.
    let segment = RequestSegment {
        client_addr,
        service_addr,
        client_port,
        service_port,
        seq,
        ack: u32::from_be_bytes(tcp_ack_seq(&tcp)),
        flags: tcp_flags(&tcp),
        window_field: u16::from_be_bytes(tcp_window(&tcp)),
        ttl: ip_ttl(&l3),
        timestamps,
        payload_len: payload_len as u32,
    };
    if let Err(why) = handoff_terms(kernel, cookies, &cookie, &segment, &mut work.terms) {
        return TO_SLOW_PATH | why;
    }
    work.key = FrontendFlowKey {
        client_addr_be: u32::from_ne_bytes(client_addr),
        vip_addr_be: u32::from_ne_bytes(service_addr),
        client_port_be: u16::from_ne_bytes(tcp_source(&tcp)),
        vip_port_be: u16::from_ne_bytes(tcp_dest(&tcp)),
    };
    work.header_len = header_len as u32;
    work.total_len = total_len as u32;
    work.payload_sum = payload_sum_from_checksum(check, pseudo, header_sum);
    work.payload_offset = (TCP + header_len) as u32;
    work.payload_len = payload_len as u32;
    READY
}

/// The second half of a handoff in the kernel, once the matcher routed the request that
/// [`hand_off_request`] prepared in `HANDOFF_WORK` (a call of its own from the entry
/// point, as the matcher is: each chain of calls keeps within the verifier's 512 bytes
/// of stack).
#[inline(never)]
fn finish_handoff(ctx: &XdpContext, decision: &KernelDecision) -> u32 {
    if decision.verdict != KernelDecision::HAND_OFF {
        return TO_SLOW_PATH | decision.reason;
    }
    let Some(backend) = crate::dispatch::FRONTEND_BACKENDS.get(decision.backend) else {
        return TO_SLOW_PATH | reason::TABLES;
    };
    if backend.flags & KernelBackend::USABLE == 0 {
        return TO_SLOW_PATH | reason::BACKEND_UNUSABLE;
    }
    let (Some(kernel), Some(config), Some(work)) = (
        FRONTEND_KERNEL_HANDOFF.get(0),
        FRONTEND_CONFIG.get(0),
        HANDOFF_WORK.get_ptr_mut(0),
    ) else {
        return TO_SLOW_PATH | reason::TABLES;
    };
    // SAFETY: a per-CPU map value, this CPU's alone while the program runs; filled by
    // `hand_off_request` in this run.
    let work = unsafe { &mut *work };
    work.rule = decision.rule;
    encode_handoff_option(&kernel.handoff_key, backend, work);
    let done = emit_syn_prime(ctx, &config.interface_mac, work);
    if done == HANDED_OFF {
        // Counted with the record that tells the daemon of it, which takes the
        // connection into its own books when it reads it.
        crate::dispatch::count_handoff(backend.load_slot);
    }
    done
}

/// The matcher's decision on the request [`hand_off_request`] prepared, and the handoff
/// if it routes it: two calls from here, so that neither adds its stack to the other's.
#[inline(always)]
fn hand_off_routed(ctx: &XdpContext) -> u32 {
    let Some(work) = HANDOFF_WORK.get(0) else {
        return TO_SLOW_PATH | reason::TABLES;
    };
    let (offset, len) = (work.payload_offset as usize, work.payload_len as usize);
    let decision = crate::dispatch::decide_request(ctx, offset, len);
    finish_handoff(ctx, &decision)
}

/// What [`hand_off_request`] builds for [`emit_syn_prime`], in a per-CPU map value.
struct HandoffWork {
    terms: HandoffTerms,
    key: FrontendFlowKey,
    header_len: u32,
    total_len: u32,
    payload_sum: u16,
    rule: u32,
    /// Where the request's bytes lie in the frame, for the matcher.
    payload_offset: u32,
    payload_len: u32,
}

#[map]
static HANDOFF_WORK: PerCpuArray<HandoffWork> = PerCpuArray::with_max_entries(1, 0);

/// The back-end into `work.terms` and the handoff option encoded
/// (`kernel_dispatch::choose_backend`: `HandoffOption::encode`, the core's own); a frame
/// of its own for the hashing's stack.
#[inline(never)]
fn encode_handoff_option(key: &SipKey, backend: &KernelBackend, work: &mut HandoffWork) {
    choose_backend(&mut work.terms, key, backend);
}

/// Turns the request's frame into the SYN' and takes the flow in (see
/// [`hand_off_request`]): `HANDED_OFF`, or `TO_SLOW_PATH | why` with the frame as it
/// arrived.
#[inline(never)]
fn emit_syn_prime(ctx: &XdpContext, our_mac: &[u8; ETH_ALEN], work: &HandoffWork) -> u32 {
    let header_len = work.header_len as usize;
    let total_len = work.total_len as usize;
    if !(TCP_HLEN..=SYN_PRIME_TCP_HLEN).contains(&header_len) || total_len <= IPV4_HLEN + header_len
    {
        return TO_SLOW_PATH | reason::FRAME;
    }
    let payload_len = total_len - IPV4_HLEN - header_len;
    // The SYN''s header is longer than the request's (60 bytes of TCP header against
    // the request's 20 to 60): the frame grows at the front, the payload stays in place.
    let grow = (SYN_PRIME_TCP_HLEN - header_len) as i32;
    // SAFETY: the context pointer is the program's own.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return TO_SLOW_PATH | reason::FRAME;
    }
    let Some(frame) = bytes_at::<SYN_PRIME_FRAME_HEADERS_LEN>(ctx, 0) else {
        // SAFETY: as above; gives back what was just taken.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grow) };
        return TO_SLOW_PATH | reason::FRAME;
    };
    // Only a flow not in the table yet: a copy of the request handed off on another CPU
    // a moment ago has its entry, and this one goes up, to the core, which knows it.
    if FRONTEND_FLOWS
        .insert(work.key, work.terms.flow, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // SAFETY: as above.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grow) };
        return TO_SLOW_PATH | reason::FLOW_TABLE;
    }
    // The daemon's record last: once it is in the ring, the handoff is made. The request
    // segment as it arrived now starts `grow` bytes into the frame.
    if !record_request(ctx, ETH_HLEN + grow as usize, total_len, work) {
        let _ = FRONTEND_FLOWS.remove(work.key);
        // SAFETY: as above.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grow) };
        return TO_SLOW_PATH | reason::HANDOFF_RING_FULL;
    }
    // SAFETY: bounds checked by `bytes_at`; XDP owns the buffer, and nothing of the
    // request's headers is read from it any more.
    write_syn_prime_frame_headers(
        unsafe { &mut *frame },
        &work.terms.flow.backend_mac,
        our_mac,
        &work.terms.prime,
        payload_len as u16,
        work.payload_sum,
    );
    HANDED_OFF
}

/// The request segment's TSval and TSecr (`kernel_dispatch::data_segment_timestamps`):
/// `Some(None)` without options, `None` for any layout but NOP, NOP, timestamps, which
/// the slow path judges. The area is read at one constant length or not at all.
#[inline(always)]
fn request_timestamps(ctx: &XdpContext, header_len: usize) -> Option<Option<(u32, u32)>> {
    if header_len == TCP_HLEN {
        return data_segment_timestamps(&[]);
    }
    if header_len != TCP_HLEN + LINUX_TIMESTAMPS_LEN {
        return None;
    }
    // SAFETY: bounds checked by `bytes_at`; read once onto the stack.
    let o = unsafe { bytes_at::<LINUX_TIMESTAMPS_LEN>(ctx, TCP + TCP_OPTIONS)?.read_unaligned() };
    data_segment_timestamps(&o)
}

/// Tells the daemon of a handoff made here: a [`KernelHandoffRecord`] and the request's
/// IPv4 packet (`len` bytes at `offset` of the frame) into `FRONTEND_HANDOFFS`; `false`
/// if the ring is full or the packet too long to record.
#[inline(never)]
fn record_request(ctx: &XdpContext, offset: usize, len: usize, work: &HandoffWork) -> bool {
    let Some(scratch) = HANDOFF_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    if len > MAX_RECORDED_PACKET {
        return false;
    }
    // A power of two less one: the verifier's bound on the copies.
    let len = (len as u32) & 0x7ff;
    if len == 0 {
        return false;
    }
    // SAFETY: a per-CPU map value, this CPU's alone while the program runs.
    let scratch = unsafe { &mut *scratch };
    scratch.record = KernelHandoffRecord {
        backend_addr_be: work.terms.flow.backend_addr_be,
        backend_port_be: work.terms.flow.backend_port_be,
        _pad: 0,
        rule: work.rule,
        packet_len: len,
    };
    // SAFETY: `packet` holds 2048 > len bytes; the kernel checks the packet side.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            offset as u32,
            scratch.packet.as_mut_ptr().cast(),
            len,
        )
    };
    if rc != 0 {
        return false;
    }
    let total = (size_of::<KernelHandoffRecord>() as u32 + len) as usize;
    // SAFETY: the scratch is `#[repr(C)]`, the record then the packet, `total` bytes of
    // it written above.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (scratch as *const KernelHandoffScratch).cast::<u8>(),
            total.min(size_of::<KernelHandoffScratch>()),
        )
    };
    // The daemon is woken only once a batch waits (`HANDOFF_WAKE_BYTES`); it reads the
    // ring anyway every round, before every packet, and at least every
    // `HANDOFF_READ_INTERVAL`. A wakeup per record woke it once per connection: a
    // system call and a context switch each, most of what it then spent per connection.
    let wake = if FRONTEND_HANDOFFS.query(u64::from(BPF_RB_AVAIL_DATA)) >= HANDOFF_WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    FRONTEND_HANDOFFS
        .output::<[u8]>(bytes, u64::from(wake))
        .is_ok()
}
