//! The back-end module's tc programs (docs/design.md, "Packet walk", steps 5, 6, 8 and 9,
//! and "The one-turn handoff") on the simulation's packets. Every decision is the
//! programs' own: a function of `baton_common::backend` that
//! `crates/baton-ebpf/src/backend.rs` calls too, on the entry the programs keep
//! ([`BackendFlow`]) and with their counters ([`stat`]):
//!
//! - the SYN' program (`backend_syn`, which the ingress hands every SYN to by tail call,
//!   [`is_syn`]): [`admit_syn`] on what [`find_handoff_option`] and
//!   [`HandoffOption::parse_and_verify`] found and on the SYN's data, and
//!   [`BackendFlow::is_same_connection`] for whether a verified SYN' keeps its entry;
//! - the ingress on other client segments: [`client_segment_fate`], then
//!   [`BackendFlow::drops`] for a CE mark;
//! - the egress: [`BackendFlow::syn_ack_fate`] and [`SynAckFate::marks`] for a SYN/ACK',
//!   [`BackendFlow::keeps_syn_ack`] once its terms are recorded,
//!   [`BackendFlow::completes_handshake`] and [`BackendFlow::local_ack`] for the client's
//!   ACK made of an absorbed one (`backend_local_ack`, fed to the ingress:
//!   [`EgressTo::OwnIngress`]), [`server_segment_fate`] for every other segment and
//!   [`frontend_copy`] for the copies to the front-end;
//! - a SYN' repeated once that ACK was made: [`BackendFlow::answers_repeated_syn`] and
//!   [`SynAckProof::write`] (`backend_repeated_syn`), the SYN/ACK' it makes going to the
//!   front-end ([`BackendModule::to_frontend`]); the window the ACK announces, from the
//!   SYN' as `backend_ingress` reads it ([`syn_prime_window_shift`], [`client_ack_window`]).
//!
//! What is left here is what the programs do with kernel helpers: reading and writing the
//! fields, the map (a `HashMap`, no LRU), the redirect to the front-end
//! ([`EgressTo::FrontEnd`]), and the checksums, updated with the RFC 1624
//! [`csum_replace2`]/[`csum_replace4`] (and their odd-offset forms) where the programs
//! use `bpf_l3_csum_replace`/`bpf_l4_csum_replace` (same arithmetic, plus
//! `CHECKSUM_PARTIAL` handling). No checksum is ever recomputed from scratch here; the
//! network verifies each one at the next hop. Not modelled: the key rotation's previous
//! key, a tail call to an empty slot, and the agent's sweep of entries whose socket is
//! gone.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use baton_common::backend::{
    BackendFlow, ClientSegmentFate, HandoffOptionCheck, SYN_ACK_PROOF_ROOM, ServerSegmentFate,
    SynAckFate, SynAckProof, SynAckSeen, SynAdmission, Verdict, admit_syn, client_segment_fate,
    frontend_copy, is_syn, server_segment_fate, stat,
};
use baton_common::handoff_option::{
    HandoffBinding, HandoffBindingV6, HandoffOption, HandoffOptionError, blank_option,
    find_handoff_option,
};
use baton_common::ipv6::csum_replace16;
use baton_common::layout::{
    IP_CHECK, IP_SADDR, IPV4_HLEN, SACKOPT_EDGES, SEQ_LEN, TCP_ACK_SEQ, TCP_CHECK, TCP_DEST,
    TCP_DOFF, TCP_FLAGS, TCP_HLEN, TCP_OPTIONS, TCP_SEQ, TCP_SOURCE, TCP_WINDOW, TSOPT_TSECR,
    TSOPT_TSVAL,
    tcp_flag::{ACK, SYN},
};

use super::packet::{dscp_ecn, dst_addr, fill_checksums, ip_bounds, src_addr, write_addr};
use baton_common::siphash::SipKey;
use baton_common::stamp::{self, StampedFlow};
use baton_common::syn_prime::{SYN_PRIME_OPTIONS_LEN, syn_prime_window_shift};
use baton_common::tcp_options::{sack, timestamps, window_shift};
use baton_common::translate::{
    SynAckTerms, Translation, client_ack_window, csum_replace2, csum_replace4, csum_replace4_odd,
};

/// A flow as the back-end sees it: the client's address and port (the back-end's own
/// address and the service port are fixed per module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client_ip: IpAddr,
    pub client_port: u16,
}

/// The programs' per-CPU counter array, summed: one per outcome, indexed by [`stat`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ModuleCounters([u64; stat::COUNT as usize]);

impl ModuleCounters {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    fn count(&mut self, index: u32) {
        self.0[index as usize] += 1;
    }
}

impl fmt::Debug for ModuleCounters {
    /// The counters that moved, by name, as `baton backend` logs them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                stat::NAMES
                    .iter()
                    .zip(self.0)
                    .filter(|(_, value)| *value != 0),
            )
            .finish()
    }
}

/// Where an egress packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressTo {
    /// The normal route towards its destination address (the client, via the router).
    Route,
    /// Redirected to the front-end (at L2 in the lab).
    FrontEnd,
    /// Fed to this host's own ingress (`bpf_clone_redirect` with `BPF_F_INGRESS`): the
    /// client's ACK the egress makes to complete the server's handshake.
    OwnIngress,
}

pub struct BackendModule {
    key: SipKey,
    /// The back-end's own address, and the VIP: of the world's family.
    addr: IpAddr,
    vip: IpAddr,
    /// The service port the back-end's server listens on.
    port: u16,
    flows: HashMap<FlowKey, BackendFlow>,
    pub counters: ModuleCounters,
    /// The configuration map's flags (`BackendConfig`): `COMPLETE_HANDSHAKE` or not.
    pub config_flags: u32,
    /// What the ingress sent the front-end (the SYN/ACK' answering a repeated SYN'),
    /// for the world to take.
    pub to_frontend: Vec<Vec<u8>>,
}

/// Offsets of one IPv4 or IPv6 TCP packet, proved in bounds (the simulation's IPv6
/// packets carry no extension headers; the module's IPv6 path is to walk them as the
/// front-end does).
struct Layout {
    /// Start of the TCP header.
    tcp: usize,
    /// Length of the TCP header (with options).
    tcp_header_len: usize,
    /// Bytes after the TCP header, from the IPv4 total length as the programs read it.
    payload_len: usize,
}

impl Layout {
    /// Checks the lengths the rewrite relies on; anything else is passed untouched by the
    /// caller (the kernel drops what its TCP cannot parse).
    fn of(pkt: &[u8]) -> Option<Self> {
        let (ihl, total) = ip_bounds(pkt)?;
        if pkt.len() < ihl + TCP_HLEN {
            return None;
        }
        let tcp_header_len = usize::from(pkt[ihl + TCP_DOFF] >> 4) * 4;
        if tcp_header_len < TCP_HLEN || pkt.len() < ihl + tcp_header_len {
            return None;
        }
        Some(Self {
            tcp: ihl,
            tcp_header_len,
            payload_len: total.saturating_sub(ihl + tcp_header_len),
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
    if old == new {
        return;
    }
    let check = csum_replace2(be16(pkt, tcp + TCP_CHECK), old, new);
    pkt[at..at + 2].copy_from_slice(&new.to_be_bytes());
    pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
}

/// Rewrites the source address: the IPv4 header checksum and, through the pseudo-header,
/// the TCP checksum (`bpf_l3_csum_replace` and `bpf_l4_csum_replace` with
/// `BPF_F_PSEUDO_HDR` in tc); for IPv6, TCP's alone, by `csum_replace16`'s diff (IPv6
/// has no header checksum). The VIP's port is the service port in the simulation, so
/// the source port stays.
fn rewrite_src_addr(pkt: &mut [u8], tcp: usize, new: IpAddr) {
    match (src_addr(pkt), new) {
        (IpAddr::V4(old), IpAddr::V4(new)) => {
            let (old, new) = (u32::from(old), u32::from(new));
            let ip_check = csum_replace4(be16(pkt, IP_CHECK), old, new);
            let tcp_check = csum_replace4(be16(pkt, tcp + TCP_CHECK), old, new);
            pkt[IP_SADDR..IP_SADDR + 4].copy_from_slice(&new.to_be_bytes());
            pkt[IP_CHECK..IP_CHECK + 2].copy_from_slice(&ip_check.to_be_bytes());
            pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&tcp_check.to_be_bytes());
        }
        (IpAddr::V6(old), IpAddr::V6(new)) => {
            let check = csum_replace16(be16(pkt, tcp + TCP_CHECK), &old.octets(), &new.octets());
            write_addr(pkt, false, IpAddr::V6(new));
            pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
        }
        _ => panic!("a packet of one family rewritten to the other"),
    }
}

impl BackendModule {
    pub fn new(key: [u8; 16], addr: IpAddr, vip: IpAddr, port: u16) -> Self {
        Self {
            key: SipKey::from_bytes(key),
            addr,
            vip,
            port,
            flows: HashMap::new(),
            counters: ModuleCounters([0; stat::COUNT as usize]),
            config_flags: 0,
            to_frontend: Vec::new(),
        }
    }

    pub fn flow(&self, key: FlowKey) -> Option<&BackendFlow> {
        self.flows.get(&key)
    }

    /// Installs a flow entry by hand, as if a handoff had happened: for the harness
    /// self-test only, which runs the translation path without a front-end. Without a
    /// client ISN, as an entry of an older build: every SYN/ACK goes to the front-end.
    pub fn install_flow(&mut self, key: FlowKey, translation: Translation) {
        self.flows
            .insert(key, BackendFlow::new(translation, 0, SYN, 0));
    }

    /// Counts a verdict, as the programs' `finish` does.
    fn finish(&mut self, verdict: Verdict) -> Verdict {
        let (Verdict::Pass(index) | Verdict::Drop(index)) = verdict;
        self.counters.count(index);
        verdict
    }

    /// `backend_ingress`, on a packet arriving for the back-end's TCP; `None` for a packet
    /// not to the service port, which passes uncounted.
    pub fn ingress(&mut self, pkt: &mut [u8]) -> Option<Verdict> {
        let Some(layout) = Layout::of(pkt) else {
            return Some(self.finish(Verdict::Pass(stat::IN_MALFORMED)));
        };
        let tcp = layout.tcp;
        if be16(pkt, tcp + TCP_DEST) != self.port {
            return None;
        }
        let key = FlowKey {
            client_ip: src_addr(pkt),
            client_port: be16(pkt, tcp + TCP_SOURCE),
        };
        let flags = pkt[tcp + TCP_FLAGS];
        if is_syn(flags) {
            // The tail call: the agent fills the slot before it attaches the ingress.
            let verdict = self.syn(pkt, &layout, key);
            return Some(self.finish(verdict));
        }
        let flow = match client_segment_fate(self.flows.get(&key), flags) {
            ClientSegmentFate::Verdict(verdict) => return Some(self.finish(verdict)),
            ClientSegmentFate::Translate => self.flows[&key],
        };
        translate_in(pkt, &layout, flow.translation, flags);
        let verdict = if flow.drops(dscp_ecn(pkt)) {
            Verdict::Drop(stat::IN_CE_DROPPED)
        } else {
            Verdict::Pass(stat::IN_TRANSLATED)
        };
        Some(self.finish(verdict))
    }

    /// `backend_syn`: a SYN' is accepted only with an authentic option, which becomes
    /// the flow entry and is then blanked; any other SYN passes, unless it carries data
    /// ([`admit_syn`]).
    fn syn(&mut self, pkt: &mut [u8], layout: &Layout, key: FlowKey) -> Verdict {
        let tcp = layout.tcp;
        let options = layout.options();
        let data_len = layout.payload_len as u32;
        let span = match find_handoff_option(&pkt[options.clone()]) {
            Ok(Some(span)) => span,
            Ok(None) => return admit_syn(HandoffOptionCheck::Absent, data_len).verdict(),
            Err(_) => return admit_syn(HandoffOptionCheck::Unreadable, data_len).verdict(),
        };
        let client_isn = be32(pkt, tcp + TCP_SEQ);
        // The tag's message by family: IPv4's, or IPv6's `HandoffBindingV6` ("BTN2").
        let option_bytes = &pkt[options.start + span.start..options.end];
        let verified = match (key.client_ip, self.addr) {
            (IpAddr::V4(client), IpAddr::V4(backend)) => HandoffOption::parse_and_verify(
                option_bytes,
                &self.key,
                &HandoffBinding {
                    client_ip: client.octets(),
                    client_port: key.client_port,
                    backend_ip: backend.octets(),
                    backend_port: self.port,
                    client_isn,
                },
            ),
            (IpAddr::V6(client), IpAddr::V6(backend)) => HandoffOption::parse_and_verify(
                option_bytes,
                &self.key,
                &HandoffBindingV6 {
                    client_ip: client.octets(),
                    client_port: key.client_port,
                    backend_ip: backend.octets(),
                    backend_port: self.port,
                    client_isn,
                },
            ),
            _ => Err(HandoffOptionError::BadTag),
        };
        let check = match verified {
            Ok(option) => Ok(option),
            Err(HandoffOptionError::BadTag) => Err(HandoffOptionCheck::BadTag),
            Err(_) => Err(HandoffOptionCheck::BadOption),
        };
        let option = match check {
            Ok(option) => option,
            Err(check) => return admit_syn(check, data_len).verdict(),
        };
        let admission = admit_syn(HandoffOptionCheck::Verified, data_len);
        // A repeated SYN' of the same connection keeps its entry (which may be complete
        // already); a new connection on the same ports replaces it.
        let same = self
            .flows
            .get(&key)
            .filter(|flow| flow.is_same_connection(client_isn))
            .copied();
        if let Some(flow) = same
            && flow.answers_repeated_syn()
        {
            // `backend_repeated_syn`: the server's handshake was completed here; the
            // SYN/ACK' its repeat would have been goes to the front-end instead.
            return self.answer_repeated_syn(pkt, layout, flow, option.isn_f(), option.tsv_f());
        }
        if same.is_none() {
            // `backend_ingress` reads the shift at its constant offset in the SYN'.
            let client_window = pkt[options.clone()]
                .first_chunk::<SYN_PRIME_OPTIONS_LEN>()
                .filter(|_| options.len() == SYN_PRIME_OPTIONS_LEN)
                .and_then(syn_prime_window_shift)
                .map_or(0, |shift| {
                    client_ack_window(be16(pkt, tcp + TCP_WINDOW), shift)
                });
            let flow = BackendFlow::new(
                option.translation().with_client_window(client_window),
                client_isn,
                pkt[tcp + TCP_FLAGS],
                data_len as u16,
            );
            self.flows.insert(key, flow);
        }
        let check = be16(pkt, tcp + TCP_CHECK);
        match blank_option(&mut pkt[options], span, check) {
            Ok(check) => {
                pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
            }
            Err(_) => return Verdict::Drop(stat::REWRITE_FAILED),
        }
        if let SynAdmission::Accept { with_data: true } = admission {
            self.counters.count(stat::IN_SYN_DATA_ACCEPTED);
        }
        admission.verdict()
    }

    /// `backend_repeated_syn`: the SYN' cut to its headers and made the SYN/ACK' for the
    /// front-end ([`SynAckProof`]); the SYN' itself dropped.
    fn answer_repeated_syn(
        &mut self,
        pkt: &[u8],
        layout: &Layout,
        flow: BackendFlow,
        isn_f: u32,
        tsv_f: u32,
    ) -> Verdict {
        let tcp_len = layout.tcp_header_len;
        let mut headers = [0u8; SYN_ACK_PROOF_ROOM];
        let ipv6 = pkt[0] >> 4 == 6;
        if ipv6 {
            // `SynAckProof` writes IPv4's headers: the model's IPv6 answer is the same
            // segment behind an IPv6 header (what the module's IPv6 path is to send),
            // made from an IPv4 shape with no addresses, its checksum made again.
            headers[0] = 0x45;
            headers[IPV4_HLEN..IPV4_HLEN + tcp_len]
                .copy_from_slice(&pkt[layout.tcp..layout.tcp + tcp_len]);
        } else {
            if layout.tcp != IPV4_HLEN {
                return Verdict::Drop(stat::IN_MALFORMED);
            }
            headers[..IPV4_HLEN + tcp_len].copy_from_slice(&pkt[..IPV4_HLEN + tcp_len]);
        }
        let vip_addr = match self.vip {
            IpAddr::V4(vip) => vip.octets(),
            IpAddr::V6(_) => [0; 4],
        };
        let proof = SynAckProof {
            isn_f,
            tsv_f,
            request_len: flow.syn_data_len(),
            vip_addr,
            vip_port: self.port.to_be_bytes(),
        };
        let Some(total) = proof.write(&mut headers, tcp_len) else {
            return Verdict::Drop(stat::IN_MALFORMED);
        };
        let answer = &headers[..usize::from(total)];
        let answer = if ipv6 {
            let segment = &answer[IPV4_HLEN..];
            let mut v6 = vec![0u8; 40 + segment.len()];
            v6[0] = 0x60;
            v6[4..6].copy_from_slice(&(segment.len() as u16).to_be_bytes());
            v6[6] = 6;
            v6[7] = pkt[7];
            write_addr(&mut v6, false, self.vip);
            write_addr(&mut v6, true, src_addr(pkt));
            v6[40..].copy_from_slice(segment);
            fill_checksums(&mut v6);
            v6
        } else {
            answer.to_vec()
        };
        self.to_frontend.push(answer);
        Verdict::Drop(stat::IN_SYN_REPEAT_ANSWERED)
    }

    /// `backend_local_ack`: the absorbed SYN/ACK' turned into the client's ACK
    /// ([`BackendFlow::local_ack`]), addresses and ports swapped (which leaves the
    /// checksums as they were), the changed fields' checksum updated as the program's
    /// `Rewrite` does.
    fn local_ack(&mut self, mut pkt: Vec<u8>, layout: &Layout, key: FlowKey) -> Option<Vec<u8>> {
        let flow = self.flows[&key];
        if !BackendFlow::completes_handshake(self.config_flags, flow.state, flow.translation)
            || flow.answers_repeated_syn()
        {
            return None;
        }
        let tcp = layout.tcp;
        let ts = timestamps(&pkt[layout.options()]).map(|ts| layout.options().start + ts);
        let ack = flow.local_ack(SynAckSeen {
            seq: be32(&pkt, tcp + TCP_SEQ),
            ack: be32(&pkt, tcp + TCP_ACK_SEQ),
            tsval: ts.map_or(0, |at| be32(&pkt, at + TSOPT_TSVAL)),
            tsecr: ts.map_or(0, |at| be32(&pkt, at + TSOPT_TSECR)),
        });
        rewrite32(&mut pkt, tcp, tcp + TCP_SEQ, ack.seq);
        rewrite32(&mut pkt, tcp, tcp + TCP_ACK_SEQ, ack.ack);
        let doff_flags = be16(&pkt, tcp + TCP_DOFF);
        let new = (doff_flags & 0xff00) | u16::from(ACK);
        let check = csum_replace2(be16(&pkt, tcp + TCP_CHECK), doff_flags, new);
        pkt[tcp + TCP_DOFF..tcp + TCP_DOFF + 2].copy_from_slice(&new.to_be_bytes());
        pkt[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
        rewrite_window(&mut pkt, tcp, ack.window);
        if let Some(at) = ts {
            rewrite32(&mut pkt, tcp, at + TSOPT_TSVAL, ack.tsval);
            rewrite32(&mut pkt, tcp, at + TSOPT_TSECR, ack.tsecr);
        }
        let (src, dst) = (src_addr(&pkt), dst_addr(&pkt));
        write_addr(&mut pkt, false, dst);
        write_addr(&mut pkt, true, src);
        let (sport, dport) = (be16(&pkt, tcp + TCP_SOURCE), be16(&pkt, tcp + TCP_DEST));
        pkt[tcp + TCP_SOURCE..tcp + TCP_SOURCE + 2].copy_from_slice(&dport.to_be_bytes());
        pkt[tcp + TCP_DEST..tcp + TCP_DEST + 2].copy_from_slice(&sport.to_be_bytes());
        self.flow_mut(key).state |= BackendFlow::HANDSHAKE_COMPLETED;
        self.counters.count(stat::OUT_HANDSHAKE_COMPLETED);
        Some(pkt)
    }

    /// `backend_egress`, on a packet the back-end's TCP sends: where the packet (and any
    /// copy) goes; nothing if it is dropped.
    pub fn egress(&mut self, mut pkt: Vec<u8>) -> Vec<(EgressTo, Vec<u8>)> {
        let Some(layout) = Layout::of(&pkt) else {
            self.counters.count(stat::OUT_MALFORMED);
            return vec![(EgressTo::Route, pkt)];
        };
        let tcp = layout.tcp;
        if be16(&pkt, tcp + TCP_SOURCE) != self.port || src_addr(&pkt) == self.vip {
            return vec![(EgressTo::Route, pkt)];
        }
        let key = FlowKey {
            client_ip: dst_addr(&pkt),
            client_port: be16(&pkt, tcp + TCP_DEST),
        };
        let Some(&flow) = self.flows.get(&key) else {
            self.counters.count(stat::OUT_NOT_HANDED_OFF);
            return vec![(EgressTo::Route, pkt)];
        };
        let flags = pkt[tcp + TCP_FLAGS];
        let syn_ack = flags & (SYN | ACK) == SYN | ACK;
        if syn_ack {
            let fate = flow.syn_ack_fate(be32(&pkt, tcp + TCP_ACK_SEQ));
            match fate {
                SynAckFate::ToFrontend => {}
                SynAckFate::Absorbed | SynAckFate::RepeatToFrontend => {
                    if fate == SynAckFate::RepeatToFrontend {
                        self.counters.count(stat::OUT_SYN_ACK_REPEAT_TO_FRONTEND);
                    }
                    self.flow_mut(key).state |= fate.marks();
                }
                SynAckFate::OtherConnection => {
                    self.flows.remove(&key);
                    self.counters.count(stat::OUT_STALE_FLOW_REMOVED);
                    return vec![(EgressTo::Route, pkt)];
                }
            }
        } else {
            match server_segment_fate(&flow, flags) {
                ServerSegmentFate::Translate => {}
                ServerSegmentFate::Drop(index) => {
                    self.counters.count(index);
                    return Vec::new();
                }
                ServerSegmentFate::ControlToFrontend => {
                    rewrite_src_addr(&mut pkt, tcp, self.vip);
                    self.counters.count(stat::OUT_CONTROL_TO_FRONTEND);
                    return vec![(EgressTo::FrontEnd, pkt)];
                }
            }
        }
        let options = &pkt[layout.options()];
        if syn_ack {
            // The back-end's terms complete the entry (a repeat leaves a complete one as
            // it is); the state notes an ECN refusal.
            let terms = SynAckTerms {
                isn: be32(&pkt, tcp + TCP_SEQ),
                tsval: timestamps(options).map_or(0, |ts| {
                    be32(&pkt, layout.options().start + ts + TSOPT_TSVAL)
                }),
                window_shift: window_shift(options).unwrap_or(0),
            };
            // The stamp, as the egress makes it (`baton_common::stamp`): every later TSval
            // to the client carries it, so the simulated client's PAWS checks run on
            // stamped TSvals. The VIP's port is the service's in the simulation.
            // The stamp binds IPv4 addresses (`baton_common::stamp`): an IPv6 back-end
            // does not stamp yet (0 leaves the TSvals as translated), and the core takes
            // an unstamped answer as the current back-end's.
            let stamp = match (key.client_ip, self.vip, self.addr) {
                (IpAddr::V4(client), IpAddr::V4(vip), IpAddr::V4(backend)) => stamp::stamp(
                    &self.key,
                    &StampedFlow {
                        client_addr: client.octets(),
                        client_port: key.client_port,
                        vip_addr: vip.octets(),
                        vip_port: self.port,
                        backend_addr: backend.octets(),
                        backend_port: self.port,
                    },
                ),
                _ => 0,
            };
            let config_flags = self.config_flags;
            let flow = self.flow_mut(key);
            flow.translation = flow.translation.with_backend(terms);
            if flow.translation.has_timestamps() && stamp != 0 {
                flow.translation = flow.translation.with_stamp(stamp);
            }
            flow.state |= flow.state_after_syn_ack(flags);
            if BackendFlow::keeps_syn_ack(flow.state) {
                let completes =
                    BackendFlow::completes_handshake(config_flags, flow.state, flow.translation);
                self.counters.count(stat::OUT_SYN_ACK_ABSORBED);
                return if completes && let Some(ack) = self.local_ack(pkt, &layout, key) {
                    vec![(EgressTo::OwnIngress, ack)]
                } else {
                    Vec::new()
                };
            }
        }
        let flow = self.flows[&key];
        rewrite_src_addr(&mut pkt, tcp, self.vip);
        // The SYN/ACK' keeps the front-end's TSval (the egress leaves the stamp out).
        let translation = if syn_ack {
            flow.translation.with_stamp(0)
        } else {
            flow.translation
        };
        translate_out(&mut pkt, &layout, translation, !syn_ack);
        if syn_ack {
            // The client already had its SYN/ACK from the front-end.
            self.counters.count(stat::OUT_SYN_ACK_TO_FRONTEND);
            return vec![(EgressTo::FrontEnd, pkt)];
        }
        self.counters.count(stat::OUT_TRANSLATED);
        let copy = frontend_copy(flags, layout.payload_len as u32, flow.state);
        let Some(counter) = copy.counter else {
            return vec![(EgressTo::Route, pkt)];
        };
        if copy.confirms {
            self.flow_mut(key).state |= BackendFlow::CONFIRMED;
        }
        self.counters.count(counter);
        vec![(EgressTo::FrontEnd, pkt.clone()), (EgressTo::Route, pkt)]
    }

    fn flow_mut(&mut self, key: FlowKey) -> &mut BackendFlow {
        self.flows.get_mut(&key).expect("the entry just read")
    }
}

/// C -> B: ack, SACK edges and TSecr into the back-end's terms (docs/design.md, "Packet
/// walk", step 8).
fn translate_in(pkt: &mut [u8], layout: &Layout, t: Translation, flags: u8) {
    let tcp = layout.tcp;
    if flags & ACK != 0 {
        let ack = be32(pkt, tcp + TCP_ACK_SEQ);
        rewrite32(pkt, tcp, tcp + TCP_ACK_SEQ, t.ack_to_backend(ack));
    }
    let base = layout.options().start;
    if t.has_timestamps()
        && let Some(ts) = timestamps(&pkt[layout.options()])
    {
        let at = base + ts + TSOPT_TSECR;
        let tsecr = be32(pkt, at);
        rewrite32(pkt, tcp, at, t.tsecr_to_backend(tsecr));
    }
    if t.has_sack()
        && let Some((at, blocks)) = sack(&pkt[layout.options()])
    {
        for edge in 0..2 * blocks {
            let at = base + at + SACKOPT_EDGES + edge * SEQ_LEN;
            let old = be32(pkt, at);
            rewrite32(pkt, tcp, at, t.sack_edge_to_backend(old));
        }
    }
}

/// B -> C rewrites of the TCP header: seq, TSval and (not on SYNs, whose window is never
/// scaled, RFC 7323 section 2.2) the window.
fn translate_out(pkt: &mut [u8], layout: &Layout, t: Translation, rescale: bool) {
    let tcp = layout.tcp;
    let seq = be32(pkt, tcp + TCP_SEQ);
    rewrite32(pkt, tcp, tcp + TCP_SEQ, t.seq_to_client(seq));
    if t.has_timestamps()
        && let Some(ts) = timestamps(&pkt[layout.options()])
    {
        let at = layout.options().start + ts + TSOPT_TSVAL;
        let tsval = be32(pkt, at);
        rewrite32(pkt, tcp, at, t.tsval_to_client(tsval));
    }
    if rescale {
        let window = be16(pkt, tcp + TCP_WINDOW);
        rewrite_window(pkt, tcp, t.window_to_client(window));
    }
}
