//! The back-end module: in Rust, exactly what the back-end's tc eBPF programs do
//! (docs/design.md, "Packet walk", steps 5, 6, 8 and 9), so the simulation exercises the same
//! arithmetic the kernel will run. Every rewrite goes through `baton_common`:
//! [`find_handoff_option`], [`HandoffOption::parse_and_verify`], [`blank_option`] and
//! [`find_option`] for options, [`Translation`] for every field, and the RFC 1624
//! [`csum_replace2`]/[`csum_replace4`] (and their odd-offset forms) for every checksum.
//! No checksum is ever recomputed from scratch here; the network verifies each one at
//! the next hop.
//!
//! Kept in its own file so it can be compared line by line with the eBPF programs:
//! - [`BackendModule::ingress`] is the tc ingress program, and [`BackendModule::ingress_syn`]
//!   the SYN' program (`backend_syn`) it hands every SYN to by tail call; the model calls
//!   it directly, as the kernel does whenever the program array is filled, which the
//!   agent ensures before the ingress is attached;
//! - [`BackendModule::egress`] is the tc egress program; [`EgressTo::FrontEnd`] stands for
//!   a redirect (or `bpf_clone_redirect` copy) to the front-end's MAC.
//!
//! Where the eBPF programs differ: they use `bpf_l3_csum_replace`/`bpf_l4_csum_replace`
//! (same arithmetic, plus `CHECKSUM_PARTIAL` handling), a hash map instead of a
//! `HashMap`, and per-CPU counters instead of [`ModuleCounters`].

use std::collections::HashMap;
use std::net::Ipv4Addr;

use baton_common::handoff_option::{
    HandoffBinding, HandoffOption, OptionSpan, blank_option, find_handoff_option, find_option,
};
use baton_common::layout::{
    IP_CHECK, IP_DADDR, IP_PROTOCOL, IP_SADDR, IPPROTO_TCP, IPV4_HLEN, SACKOPT_EDGES, TCP_ACK_SEQ,
    TCP_CHECK, TCP_DEST, TCP_DOFF, TCP_FLAGS, TCP_HLEN, TCP_OPTIONS, TCP_SEQ, TCP_SOURCE,
    TCP_WINDOW, TSOPT_TSECR, TSOPT_TSVAL, ip_header_len, ip_version,
    tcp_flag::{ACK, FIN, RST, SYN},
};
use baton_common::siphash::SipKey;
use baton_common::tcp_options::{KIND_SACK, KIND_TIMESTAMPS, KIND_WINDOW_SCALE};
use baton_common::translate::{
    SackBlock, SynAckTerms, Translation, csum_replace2, csum_replace4, csum_replace4_odd,
};

/// A flow as the back-end sees it: the client's address and port (the back-end's own
/// address and the service port are fixed per module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client_ip: Ipv4Addr,
    pub client_port: u16,
}

/// The per-flow map value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub translation: Translation,
    /// The option the flow was accepted with, so that a retransmitted SYN' (same option)
    /// keeps the entry and a new handoff of the same 4-tuple replaces it.
    pub option: Option<HandoffOption>,
    /// Highest acknowledgement number (client terms) already copied to the front-end.
    pub copied_ack: Option<u32>,
}

/// Why a packet was dropped, or what was done; one counter each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleCounters {
    pub handoff_syns: u64,
    pub handoff_syns_retransmitted: u64,
    pub direct_syns: u64,
    pub bad_options: u64,
    pub ingress_translated: u64,
    pub ingress_awaiting_drop: u64,
    pub syn_acks_to_front: u64,
    pub egress_translated: u64,
    pub copies_to_front: u64,
    pub malformed: u64,
}

/// What ingress decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Up to the back-end's TCP (possibly rewritten in place).
    Pass,
    /// Dropped, with the counter's name.
    Drop(&'static str),
}

/// Where an egress packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressTo {
    /// The normal route towards its destination address (the client, via the router).
    Route,
    /// Redirected to the front-end (at L2 in the lab).
    FrontEnd,
}

pub struct BackendModule {
    key: SipKey,
    /// The back-end's own address.
    addr: Ipv4Addr,
    vip: Ipv4Addr,
    /// The service port the back-end's server listens on.
    port: u16,
    flows: HashMap<FlowKey, Flow>,
    pub counters: ModuleCounters,
}

/// Offsets of one IPv4/TCP packet, proved in bounds.
struct Layout {
    /// Start of the TCP header.
    tcp: usize,
    /// Length of the TCP header (with options).
    tcp_header_len: usize,
}

impl Layout {
    /// Checks the lengths the rewrite relies on; anything else is passed untouched by the
    /// caller (the kernel drops what its TCP cannot parse).
    fn of(pkt: &[u8]) -> Option<Self> {
        let ihl = ip_header_len(*pkt.first()?);
        if ip_version(*pkt.first()?) != 4
            || ihl < IPV4_HLEN
            || pkt.len() < ihl + TCP_HLEN
            || *pkt.get(IP_PROTOCOL)? != IPPROTO_TCP
        {
            return None;
        }
        let tcp_header_len = usize::from(pkt[ihl + TCP_DOFF] >> 4) * 4;
        if tcp_header_len < TCP_HLEN || pkt.len() < ihl + tcp_header_len {
            return None;
        }
        Some(Self {
            tcp: ihl,
            tcp_header_len,
        })
    }

    fn options(&self) -> std::ops::Range<usize> {
        self.tcp + TCP_OPTIONS..self.tcp + self.tcp_header_len
    }
}

fn be16(pkt: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([pkt[at], pkt[at + 1]])
}

fn be32(pkt: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]])
}

fn addr(pkt: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3])
}

/// Rewrites the 32-bit field at `at` (absolute offset, inside the TCP header at `tcp`)
/// and updates the TCP checksum for it, choosing the odd-offset form when the field does
/// not start on a 16-bit boundary of the header (options need not be aligned).
fn rewrite32(pkt: &mut [u8], tcp: usize, at: usize, new: u32) {
    let old = be32(pkt, at);
    if old == new {
        return;
    }
    let check = be16(pkt, tcp + TCP_CHECK);
    let check = if (at - tcp).is_multiple_of(2) {
        csum_replace4(check, old, new)
    } else {
        csum_replace4_odd(check, old, new)
    };
    pkt[at..at + 4].copy_from_slice(&new.to_be_bytes());
    pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
}

/// Rewrites the window field and updates the TCP checksum.
fn rewrite_window(pkt: &mut [u8], tcp: usize, new: u16) {
    let at = tcp + TCP_WINDOW;
    let old = be16(pkt, at);
    let check = csum_replace2(be16(pkt, tcp + TCP_CHECK), old, new);
    pkt[at..at + 2].copy_from_slice(&new.to_be_bytes());
    pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
}

/// Rewrites the source address: the IPv4 header checksum and, through the pseudo-header,
/// the TCP checksum (`bpf_l3_csum_replace` and `bpf_l4_csum_replace` with
/// `BPF_F_PSEUDO_HDR` in tc).
fn rewrite_src_addr(pkt: &mut [u8], tcp: usize, new: Ipv4Addr) {
    let old = u32::from(addr(pkt, IP_SADDR));
    let new = u32::from(new);
    let ip_check = csum_replace4(be16(pkt, IP_CHECK), old, new);
    let tcp_check = csum_replace4(be16(pkt, tcp + TCP_CHECK), old, new);
    pkt[IP_SADDR..IP_SADDR + 4].copy_from_slice(&new.to_be_bytes());
    pkt[IP_CHECK..IP_CHECK + 2].copy_from_slice(&ip_check.to_be_bytes());
    pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&tcp_check.to_be_bytes());
}

/// The span of option `kind` if its length is `len`; a malformed area or another length
/// counts as absent (the kernel's parser would ignore it too).
fn option_span(pkt: &[u8], layout: &Layout, kind: u8) -> Option<OptionSpan> {
    let options = &pkt[layout.options()];
    find_option(options, kind).ok().flatten()
}

impl BackendModule {
    pub fn new(key: [u8; 16], addr: Ipv4Addr, vip: Ipv4Addr, port: u16) -> Self {
        Self {
            key: SipKey::from_bytes(key),
            addr,
            vip,
            port,
            flows: HashMap::new(),
            counters: ModuleCounters::default(),
        }
    }

    pub fn flow(&self, key: FlowKey) -> Option<&Flow> {
        self.flows.get(&key)
    }

    /// Installs a flow entry by hand, as if a handoff had happened: for the harness
    /// self-test only, which runs the translation path without a front-end.
    pub fn install_flow(&mut self, key: FlowKey, translation: Translation) {
        self.flows.insert(
            key,
            Flow {
                translation,
                option: None,
                copied_ack: None,
            },
        );
    }

    /// The tc ingress program, on a packet arriving for the back-end's TCP.
    pub fn ingress(&mut self, pkt: &mut [u8]) -> Verdict {
        let Some(layout) = Layout::of(pkt) else {
            self.counters.malformed += 1;
            return Verdict::Pass;
        };
        let tcp = layout.tcp;
        if addr(pkt, IP_DADDR) != self.addr || be16(pkt, tcp + TCP_DEST) != self.port {
            return Verdict::Pass;
        }
        let key = FlowKey {
            client_ip: addr(pkt, IP_SADDR),
            client_port: be16(pkt, tcp + TCP_SOURCE),
        };
        let flags = pkt[tcp + TCP_FLAGS];
        if flags & SYN != 0 && flags & ACK == 0 {
            return self.ingress_syn(pkt, &layout, key);
        }
        let Some(flow) = self.flows.get(&key).copied() else {
            // Not a handed-off flow: a direct connection.
            return Verdict::Pass;
        };
        let t = flow.translation;
        if t.is_awaiting_syn_ack() {
            // Nothing but a SYN' can be meant for a flow whose SYN/ACK' B has not sent,
            // except a RST (the front-end abandoning the handoff): it passes, and the
            // entry goes with the half-open connection it ends.
            if flags & RST != 0 {
                self.flows.remove(&key);
                return Verdict::Pass;
            }
            self.counters.ingress_awaiting_drop += 1;
            return Verdict::Drop("awaiting SYN/ACK'");
        }
        // C -> B: ack -= seq_delta, SACK edges -= seq_delta, TSecr -= ts_delta
        // (docs/design.md, "Packet walk", step 8).
        if flags & ACK != 0 {
            let ack = be32(pkt, tcp + TCP_ACK_SEQ);
            rewrite32(pkt, tcp, tcp + TCP_ACK_SEQ, t.ack_to_backend(ack));
        }
        if t.has_sack()
            && let Some(span) = option_span(pkt, &layout, KIND_SACK)
        {
            let first = layout.options().start + span.start + SACKOPT_EDGES;
            let blocks = (span.len - 2) / 8;
            for i in 0..blocks.min(4) {
                let at = first + 8 * i;
                let block = t.sack_block_to_backend(SackBlock {
                    left: be32(pkt, at),
                    right: be32(pkt, at + 4),
                });
                rewrite32(pkt, tcp, at, block.left);
                rewrite32(pkt, tcp, at + 4, block.right);
            }
        }
        if t.has_timestamps()
            && let Some(span) = option_span(pkt, &layout, KIND_TIMESTAMPS)
            && span.len == 10
        {
            let at = layout.options().start + span.start + TSOPT_TSECR;
            let tsecr = be32(pkt, at);
            rewrite32(pkt, tcp, at, t.tsecr_to_backend(tsecr));
        }
        self.counters.ingress_translated += 1;
        Verdict::Pass
    }

    /// Ingress of a SYN, the tail-called `backend_syn`: a handoff SYN' is accepted only
    /// with an authentic option, which becomes the flow entry and is then blanked
    /// (docs/design.md, "Packet walk", step 5).
    fn ingress_syn(&mut self, pkt: &mut [u8], layout: &Layout, key: FlowKey) -> Verdict {
        let tcp = layout.tcp;
        let options = layout.options();
        let span = match find_handoff_option(&pkt[options.clone()]) {
            Ok(Some(span)) => span,
            Ok(None) => {
                // A plain SYN (a direct connection) passes untouched and leaves any entry
                // alone: entries go when the agent sees B's socket gone, and ingress
                // stays a lookup, never a delete, on the SYN path. The harness self-test
                // relies on this to install a flow by hand before the client's SYN.
                self.counters.direct_syns += 1;
                return Verdict::Pass;
            }
            Err(_) => {
                self.counters.bad_options += 1;
                return Verdict::Drop("malformed options");
            }
        };
        let binding = HandoffBinding {
            client_ip: key.client_ip.octets(),
            client_port: key.client_port,
            backend_ip: self.addr.octets(),
            backend_port: self.port,
            client_isn: be32(pkt, tcp + TCP_SEQ),
        };
        let option = match HandoffOption::parse_and_verify(
            &pkt[options.start + span.start..options.end],
            &self.key,
            &binding,
        ) {
            Ok(option) => option,
            Err(_) => {
                self.counters.bad_options += 1;
                return Verdict::Drop("handoff option rejected");
            }
        };
        match self.flows.get(&key) {
            Some(flow) if flow.option == Some(option) => {
                self.counters.handoff_syns_retransmitted += 1;
            }
            _ => {
                self.flows.insert(
                    key,
                    Flow {
                        translation: option.translation(),
                        option: Some(option),
                        copied_ack: None,
                    },
                );
                self.counters.handoff_syns += 1;
            }
        }
        let check = be16(pkt, tcp + TCP_CHECK);
        match blank_option(&mut pkt[options], span, check) {
            Ok(check) => {
                pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
                Verdict::Pass
            }
            Err(_) => {
                self.counters.bad_options += 1;
                Verdict::Drop("handoff option rejected")
            }
        }
    }

    /// The tc egress program, on a packet the back-end's TCP sends. Returns where the
    /// packet (and any copy) goes.
    pub fn egress(&mut self, mut pkt: Vec<u8>) -> Vec<(EgressTo, Vec<u8>)> {
        let Some(layout) = Layout::of(&pkt) else {
            self.counters.malformed += 1;
            return vec![(EgressTo::Route, pkt)];
        };
        let tcp = layout.tcp;
        if addr(&pkt, IP_SADDR) != self.addr || be16(&pkt, tcp + TCP_SOURCE) != self.port {
            return vec![(EgressTo::Route, pkt)];
        }
        let key = FlowKey {
            client_ip: addr(&pkt, IP_DADDR),
            client_port: be16(&pkt, tcp + TCP_DEST),
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return vec![(EgressTo::Route, pkt)];
        };
        let flags = pkt[tcp + TCP_FLAGS];
        if flags & SYN != 0 {
            // SYN/ACK': complete the entry with B's terms (docs/design.md, "Packet walk", step 6),
            // put it in the front-end's terms (source VIP, seq isn_f, TSval tsv_f: what
            // the client would see) and send it to the front-end, not the client. A
            // retransmitted SYN/ACK' leaves the completed entry as it is.
            let tsval = option_span(&pkt, &layout, KIND_TIMESTAMPS)
                .filter(|s| s.len == 10)
                .map(|s| be32(&pkt, layout.options().start + s.start + TSOPT_TSVAL));
            let window_shift = option_span(&pkt, &layout, KIND_WINDOW_SCALE)
                .filter(|s| s.len == 3)
                .map_or(0, |s| pkt[layout.options().start + s.start + 2]);
            flow.translation = flow.translation.with_backend(SynAckTerms {
                isn: be32(&pkt, tcp + TCP_SEQ),
                tsval: tsval.unwrap_or(0),
                window_shift,
            });
            let t = flow.translation;
            rewrite_src_addr(&mut pkt, tcp, self.vip);
            translate_to_client(&mut pkt, &layout, t, false);
            self.counters.syn_acks_to_front += 1;
            return vec![(EgressTo::FrontEnd, pkt)];
        }
        if flow.translation.is_awaiting_syn_ack() {
            // B's TCP answering a flow whose SYN/ACK' it never sent (a RST to a stray
            // segment): nothing to translate with; let the client see it untranslated
            // would confuse it, so it goes to the front-end, which owns the flow.
            return vec![(EgressTo::FrontEnd, pkt)];
        }
        // B -> C: source := VIP, seq += seq_delta, TSval += ts_delta, window rescaled
        // (docs/design.md, "Packet walk", step 8).
        let t = flow.translation;
        rewrite_src_addr(&mut pkt, tcp, self.vip);
        translate_to_client(&mut pkt, &layout, t, true);
        self.counters.egress_translated += 1;

        // The front-end learns that B has the request from B's acknowledgements, and of
        // B's FIN and RST (docs/design.md, "Packet walk", steps 7 and 9). The egress does
        // not know where the request ends, so it copies every segment whose ACK is new,
        // every pure ACK (B's answer to a retransmitted request segment repeats its
        // ACK) and every FIN and RST. During a download the client sends only ACKs, so
        // B's acknowledgement does not move and nothing else is copied.
        let ack = be32(&pkt, tcp + TCP_ACK_SEQ);
        let payload_len = pkt.len() - tcp - layout.tcp_header_len;
        let new_ack = flags & ACK != 0
            && flow
                .copied_ack
                .is_none_or(|copied| (ack.wrapping_sub(copied) as i32) > 0);
        let pure_ack = flags & ACK != 0 && flags & (FIN | RST) == 0 && payload_len == 0;
        let copy = new_ack || pure_ack || flags & (FIN | RST) != 0;
        if new_ack {
            flow.copied_ack = Some(ack);
        }
        if copy {
            self.counters.copies_to_front += 1;
            vec![(EgressTo::FrontEnd, pkt.clone()), (EgressTo::Route, pkt)]
        } else {
            vec![(EgressTo::Route, pkt)]
        }
    }
}

/// B -> C rewrites of the TCP header: seq, TSval and (not on SYNs, whose window is never
/// scaled, RFC 7323 section 2.2) the window.
fn translate_to_client(pkt: &mut [u8], layout: &Layout, t: Translation, rescale: bool) {
    let tcp = layout.tcp;
    let seq = be32(pkt, tcp + TCP_SEQ);
    rewrite32(pkt, tcp, tcp + TCP_SEQ, t.seq_to_client(seq));
    if t.has_timestamps()
        && let Some(span) = option_span(pkt, layout, KIND_TIMESTAMPS)
        && span.len == 10
    {
        let at = layout.options().start + span.start + TSOPT_TSVAL;
        let tsval = be32(pkt, at);
        rewrite32(pkt, tcp, at, t.tsval_to_client(tsval));
    }
    if rescale && t.ws_b != t.ws_f {
        let window = be16(pkt, tcp + TCP_WINDOW);
        rewrite_window(pkt, tcp, t.window_to_client(window));
    }
}
