//! The simulated lab: a client, a front-end, back-ends and the network between them,
//! driven by a virtual clock.
//!
//! Routing follows the lab (docs/design.md, "The lab"): the client's packets to the VIP reach
//! the front-end; the front-end's reach the back-end or the client by destination
//! address; a back-end's egress goes to the client (VIP-sourced packets, by route) or to
//! the front-end (its SYN/ACK' and the copies its egress makes).
//!
//! Each step delivers the packets due, polls every node, and moves the clock to the
//! earliest next event (a delivery or a node's timer). A scenario ends when its `done`
//! check passes, or fails with a report (seed, scenario, each node's state, monitor
//! findings, the last packets) when the virtual-time limit or the step limit is reached.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use smoltcp::socket::tcp;

use baton_common::backend::{Verdict, stat};

use super::backend_module::{BackendModule, EgressTo, FlowKey};
use super::host::{ClientApp, ServerApp, TcpHost};
use super::net::{Network, NodeId};
use super::packet::{Family, PacketInfo, kind};

/// The lab's addresses, in the benchmarking range 198.18.0.0/15, or their IPv6 twins in
/// 2001:2::/48 (docs/design.md, "The lab": 2001:2:0:N::H beside 198.18.N.H).
#[derive(Clone, Debug)]
pub struct Addrs {
    pub client: IpAddr,
    pub client_gw: IpAddr,
    pub vip: IpAddr,
    pub front: IpAddr,
    pub lan_gw: IpAddr,
    pub backends: Vec<IpAddr>,
}

impl Addrs {
    /// The lab in `family`.
    pub fn lab_in(family: Family, backends: usize) -> Self {
        let v4 = Self::lab_v4(backends);
        match family {
            Family::V4 => v4,
            Family::V6 => Self {
                client: v6_twin(v4.client),
                client_gw: v6_twin(v4.client_gw),
                vip: v6_twin(v4.vip),
                front: v6_twin(v4.front),
                lan_gw: v6_twin(v4.lan_gw),
                backends: v4.backends.into_iter().map(v6_twin).collect(),
            },
        }
    }

    fn lab_v4(backends: usize) -> Self {
        let ip = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        Self {
            client: ip(198, 19, 0, 10),
            client_gw: ip(198, 19, 0, 1),
            vip: ip(198, 18, 0, 100),
            front: ip(198, 18, 1, 2),
            lan_gw: ip(198, 18, 1, 1),
            backends: (0..backends)
                .map(|i| ip(198, 18, 1, 11 + i as u8))
                .collect(),
        }
    }
}

/// 198.N.M.H's twin: 2001:2:N-18:M::H (the lab's `v6_for`, with the client's 198.19
/// network as 2001:2:1:M::H).
fn v6_twin(ip: IpAddr) -> IpAddr {
    let IpAddr::V4(ip) = ip else {
        return ip;
    };
    let [_, n, m, h] = ip.octets();
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        2,
        u16::from(n - 18),
        u16::from(m),
        0,
        0,
        0,
        u16::from(h),
    ))
}

/// The front-end's place in the simulation: the real state machine, or the harness
/// self-test's stand-in.
pub trait FrontNode {
    /// A packet arrives from `from`.
    fn receive(&mut self, now: Duration, from: NodeId, pkt: Vec<u8>);
    /// Lets timers due at `now` fire.
    fn poll(&mut self, now: Duration);
    /// When the node next wants [`FrontNode::poll`].
    fn next_wakeup(&mut self) -> Option<Duration>;
    /// Packets to send, routed by destination address.
    fn take_transmits(&mut self) -> Vec<Vec<u8>>;
    /// State for the failure report.
    fn describe(&self) -> String;
    /// For scenarios that inspect the concrete node.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// What the client-side monitor found: a Linux client's PAWS check (RFC 7323
/// section 5.3), which smoltcp does not do.
#[derive(Debug, Default)]
pub struct ClientMonitor {
    /// TSval of the SYN/ACK the client accepted (the front-end's `tsv_f`).
    pub tsv_f: Option<u32>,
    /// Highest TSval seen from the VIP.
    pub ts_recent: Option<u32>,
    /// The window shift of the SYN/ACK the client accepted (`ws_f`), if it had one.
    pub ws_f: Option<u8>,
    /// Segments dropped as PAWS would: TSval older than `tsv_f`, or more than
    /// [`PAWS_REORDER_SLACK_MS`] older than the newest (reordering allowance).
    pub paws_drops: u64,
    /// One past the highest sequence number the client sent (its FIN counted).
    pub snd_nxt: Option<u32>,
    /// The highest acknowledgement delivered to the client.
    pub snd_una: Option<u32>,
    /// ACKs kept from smoltcp in its closing states ([`World::stalls_smoltcp_close`]).
    pub closing_acks_withheld: u64,
    /// The front-end's own bare ACKs (TSval `tsv_f`) that acknowledge nothing the
    /// client has not had acknowledged, dropped by PAWS as a Linux client would once
    /// it has seen the back-end's stamped TSvals (`baton_common::stamp`), up to a
    /// step ahead: the core's acknowledgement of a request at its timer
    /// (`request_acks_at_timer`) reaching the client after the back-end's answer. Not a
    /// finding: it tells the client nothing.
    pub redundant_acks_dropped: u64,
    pub findings: Vec<String>,
}

/// TSvals within this many ticks below the newest are accepted: Linux's
/// `TCP_PAWS_WINDOW` (`tcp_paws_check`), which allows for a segment reordered within one
/// tick and nothing more. (It was 2 s, which hid such drops: a back-end given up whose
/// reset it ignored answered the client after the next one had, with stamped TSvals
/// seconds apart.)
pub const PAWS_REORDER_SLACK_MS: u32 = 1;

/// What the back-end-side monitor checks after ingress translation, against what the
/// back-end's TCP itself sent (before egress translation): every ACK, SACK edge and TSecr
/// it receives names its own sequence space and clock; and every window the client
/// reads (with the shift it learned from the front-end) allows no byte more than the
/// back-end's window did, and at most one scaling unit less.
#[derive(Debug, Default)]
pub struct BackendMonitor {
    pub isn_b: Option<u32>,
    /// One past the highest sequence number sent.
    pub snd_max: Option<u32>,
    pub ws_b: u8,
    pub tsval_first: Option<u32>,
    pub tsval_last: Option<u32>,
    pub violations: u64,
    pub findings: Vec<String>,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

impl BackendMonitor {
    fn note(&mut self, finding: String) {
        self.violations += 1;
        if self.findings.len() < 8 {
            self.findings.push(finding);
        }
    }

    /// A segment the back-end's TCP sends, before egress.
    fn sent(&mut self, info: &PacketInfo) {
        // The first SYN/ACK' sets the terms; a retransmission (a later TSval) does not.
        if info.is_syn_ack() && self.isn_b.is_none() {
            self.isn_b = Some(info.seq);
            self.ws_b = info.window_scale.unwrap_or(0);
            self.tsval_first = info.timestamps.map(|t| t.0);
        }
        let end = info.seq.wrapping_add(info.seq_len());
        if self.snd_max.is_none_or(|m| seq_lt(m, end)) {
            self.snd_max = Some(end);
        }
        if let Some((tsval, _)) = info.timestamps {
            self.tsval_last = Some(tsval);
        }
    }

    /// A segment on its way to the client: `raw` as B's TCP sent it, `sent` after egress.
    /// The client reads `sent.window` with the shift of the SYN/ACK it accepted.
    fn check_window(&mut self, raw: &PacketInfo, sent: &PacketInfo, ws_f: Option<u8>) {
        let ws_b = u32::from(self.ws_b.min(14));
        let ws_f = u32::from(ws_f.unwrap_or(0).min(14));
        let allowed = u64::from(raw.window) << ws_b;
        let seen = u64::from(sent.window) << ws_f;
        let unit = 1u64 << ws_f;
        if seen > allowed || (allowed.min(0xffff << ws_f) - seen) >= unit {
            self.note(format!(
                "window: B allowed {allowed} bytes (field {} << {ws_b}), the client reads \
                 {seen} (field {} << {ws_f}): {sent}",
                raw.window, sent.window
            ));
        }
    }

    /// A segment the back-end's TCP receives, after ingress.
    fn received(&mut self, info: &PacketInfo) {
        let (Some(isn_b), Some(snd_max)) = (self.isn_b, self.snd_max) else {
            return;
        };
        if info.is_rst() || info.has(baton_proto::wire::TcpFlags::SYN) {
            return;
        }
        if info.has(baton_proto::wire::TcpFlags::ACK)
            && !(seq_le(isn_b, info.ack) && seq_le(info.ack, snd_max))
        {
            self.note(format!(
                "ACK {} outside B's sent range {isn_b}..={snd_max}: {info}",
                info.ack
            ));
        }
        for (left, right) in info.sack.iter().flatten() {
            if !(seq_lt(isn_b, *left) && seq_lt(*left, *right) && seq_le(*right, snd_max)) {
                self.note(format!(
                    "SACK block {left}-{right} outside B's sent range {isn_b}..={snd_max}: {info}"
                ));
            }
        }
        // The client echoes stamped TSvals (`baton_common::stamp`), which B's ingress
        // translates back to at most a resolution step after what B sent, never before:
        // B's RTT samples may be short by less than the step or discarded, never long.
        let step = baton_common::stamp::RESOLUTION - 1;
        if let (Some((_, tsecr)), Some(first), Some(last)) =
            (info.timestamps, self.tsval_first, self.tsval_last)
            && info.has(baton_proto::wire::TcpFlags::ACK)
            && !(seq_le(first, tsecr) && seq_le(tsecr, last.wrapping_add(step)))
        {
            self.note(format!(
                "TSecr {tsecr} is not a TSval B sent, nor less than a stamp's step after one \
                 ({first}..={last}+{step}): {info}"
            ));
        }
    }
}

pub struct ClientNode {
    pub host: TcpHost,
    pub app: ClientApp,
    pub monitor: ClientMonitor,
    /// Strip SACK-permitted from the client's SYN (smoltcp always offers it): a client
    /// without SACK.
    pub strip_sack_permitted: bool,
    /// Lay out the timestamps of the client's segments after its SYN as Linux does
    /// (NOP, NOP, timestamps), where smoltcp puts them first and pads with EOLs: the
    /// one layout the XDP program hands off in the kernel.
    pub linux_timestamps: bool,
}

pub struct BackendNode {
    pub host: TcpHost,
    pub server: ServerApp,
    pub module: BackendModule,
    pub monitor: BackendMonitor,
    /// A dead back-end: everything sent to it vanishes.
    pub silent: bool,
    /// A back-end with nothing listening on the service's port: its TCP answers every
    /// SYN with a RST (RFC 9293 §3.10.7.1, as Linux does for a closed port), which its
    /// module sends to the front-end, the handoff not having finished.
    pub refusing: bool,
    pub ingress_drops: Vec<&'static str>,
}

impl BackendNode {
    pub fn finished(&mut self) -> bool {
        self.server.finished(&mut self.host)
    }

    pub fn state(&mut self) -> tcp::State {
        self.server.state(&mut self.host)
    }
}

pub struct World {
    pub seed: u64,
    pub scenario: String,
    pub now: Duration,
    pub addrs: Addrs,
    pub net: Network,
    pub client: ClientNode,
    pub front: Box<dyn FrontNode>,
    pub backends: Vec<BackendNode>,
    pub steps: u64,
}

/// Hard bound on loop iterations, whatever the clock does.
const MAX_STEPS: u64 = 5_000_000;

impl World {
    /// The client's flow key as the back-end module sees it.
    pub fn client_flow(&mut self) -> FlowKey {
        FlowKey {
            client_ip: self.addrs.client,
            client_port: self.client.app.spec.port,
        }
    }

    /// Runs until `done` returns true, or fails with a report once the clock passes
    /// `limit`. `done` is called once per step and may also act (abort the client...).
    pub fn run(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut World) -> bool,
    ) -> Result<(), String> {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(self.report("step limit reached (livelock?)"));
            }
            while let Some((from, to, pkt)) = self.net.pop_due(self.now) {
                self.deliver(from, to, pkt);
            }
            self.poll_nodes();
            if let Some(mismatch) = &self.client.app.mismatch {
                let msg = format!("client response differs: {mismatch}");
                return Err(self.report(&msg));
            }
            if done(self) {
                return Ok(());
            }
            let next = self.next_event();
            match next {
                Some(at) if at <= limit => {
                    // A timer in the past means "poll again now"; make sure time moves
                    // if nothing else does, so a node that keeps asking cannot spin.
                    self.now = if at > self.now {
                        at
                    } else {
                        self.now + Duration::from_micros(1)
                    };
                }
                Some(_) => return Err(self.report("virtual time limit reached")),
                None => return Err(self.report("nothing left to happen (deadlock)")),
            }
        }
    }

    fn next_event(&mut self) -> Option<Duration> {
        let now = self.now;
        let mut next = self.net.next_delivery();
        let mut consider = |at: Option<Duration>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n: Duration| n.min(at)));
            }
        };
        consider(self.client.host.poll_at(now));
        for b in &mut self.backends {
            consider(b.host.poll_at(now));
            consider(b.server.wake_at(now));
        }
        consider(self.front.next_wakeup());
        next
    }

    fn poll_nodes(&mut self) {
        let now = self.now;
        // Client.
        self.client.app.step(&mut self.client.host);
        self.client.host.poll(now);
        self.client.app.step(&mut self.client.host);
        self.client.host.poll(now);
        for pkt in std::mem::take(&mut self.client.host.device.tx) {
            let mut pkt = clamp_mss(pkt);
            if self.client.strip_sack_permitted {
                pkt = strip_sack_permitted(pkt);
            }
            if self.client.linux_timestamps {
                pkt = linux_timestamps(pkt);
            }
            let info = PacketInfo::parse(&pkt).expect("client packet parses");
            assert_eq!(
                info.dst, self.addrs.vip,
                "the client only talks to the VIP: {info}"
            );
            let end = info.seq.wrapping_add(info.seq_len());
            let m = &mut self.client.monitor;
            if m.snd_nxt.is_none_or(|n| seq_lt(n, end)) {
                m.snd_nxt = Some(end);
            }
            self.net.send(now, NodeId::Client, NodeId::FrontEnd, pkt);
        }
        // Back-ends.
        for i in 0..self.backends.len() {
            let mut out = Vec::new();
            {
                let b = &mut self.backends[i];
                let mut sent = Vec::new();
                loop {
                    b.server.step(now, &mut b.host);
                    b.host.poll(now);
                    b.server.step(now, &mut b.host);
                    b.host.poll(now);
                    sent.extend(b.host.take_sent(now));
                    // Until what the fast-open path handed smoltcp is taken in.
                    if !b.host.has_input() {
                        break;
                    }
                }
                for pkt in sent {
                    let raw = PacketInfo::parse(&pkt).expect("smoltcp packets parse");
                    b.monitor.sent(&raw);
                    for (to, pkt) in b.module.egress(pkt) {
                        if to == EgressTo::Route && !raw.has(baton_proto::wire::TcpFlags::SYN) {
                            let sent = PacketInfo::parse(&pkt).expect("egress packets parse");
                            b.monitor
                                .check_window(&raw, &sent, self.client.monitor.ws_f);
                        }
                        out.push((to, pkt));
                    }
                }
            }
            for (to, pkt) in out {
                let to = match to {
                    EgressTo::FrontEnd => NodeId::FrontEnd,
                    EgressTo::Route => self.route_by_dst(&pkt),
                    EgressTo::OwnIngress => {
                        // The host's own backlog, not the network: nothing loses it.
                        self.deliver(NodeId::Backend(i), NodeId::Backend(i), pkt);
                        continue;
                    }
                };
                self.net.send(now, NodeId::Backend(i), to, pkt);
            }
        }
        // Front-end.
        self.front.poll(now);
        for pkt in self.front.take_transmits() {
            let to = self.route_by_dst(&pkt);
            self.net.send(now, NodeId::FrontEnd, to, pkt);
        }
    }

    fn route_by_dst(&self, pkt: &[u8]) -> NodeId {
        let info = PacketInfo::parse(pkt).expect("routed packets parse");
        if info.dst == self.addrs.client {
            NodeId::Client
        } else if info.dst == self.addrs.vip || info.dst == self.addrs.front {
            NodeId::FrontEnd
        } else if let Some(i) = self.addrs.backends.iter().position(|&b| b == info.dst) {
            NodeId::Backend(i)
        } else {
            panic!("no route to {}: {info}", info.dst)
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, mut pkt: Vec<u8>) {
        let now = self.now;
        match to {
            NodeId::Client => {
                let info = PacketInfo::parse(&pkt).expect("delivered packets parse");
                if self.paws_rejects(&info) || self.stalls_smoltcp_close(&info) {
                    return;
                }
                self.client.host.device.rx.push_back(clamp_mss(pkt));
            }
            NodeId::FrontEnd => self.front.receive(now, from, pkt),
            NodeId::Backend(i) => {
                let b = &mut self.backends[i];
                if b.silent {
                    return;
                }
                let verdict = b.module.ingress(&mut pkt);
                // What the ingress sent the front-end itself (a repeated SYN''s answer).
                for answer in std::mem::take(&mut b.module.to_frontend) {
                    self.net
                        .send(now, NodeId::Backend(i), NodeId::FrontEnd, answer);
                }
                let b = &mut self.backends[i];
                match verdict {
                    None | Some(Verdict::Pass(_)) => {
                        match PacketInfo::parse_verified(&pkt) {
                            Ok(info) => b.monitor.received(&info),
                            Err(e) => panic!(
                                "seed {} {}: backend{i} ingress produced an invalid packet ({e})",
                                self.seed, self.scenario
                            ),
                        }
                        let info = PacketInfo::parse(&pkt).expect("verified above");
                        if b.refusing && info.has(baton_proto::wire::TcpFlags::SYN) {
                            let reset = super::packet::tcp_segment(
                                (info.dst, info.dport),
                                (info.src, info.sport),
                                0,
                                info.seq.wrapping_add(1 + info.payload_len as u32),
                                0x14, // RST, ACK
                                0,
                                None,
                                &[],
                            );
                            for (to, pkt) in b.module.egress(reset) {
                                let to = match to {
                                    EgressTo::FrontEnd => NodeId::FrontEnd,
                                    EgressTo::Route | EgressTo::OwnIngress => {
                                        self.route_by_dst(&pkt)
                                    }
                                };
                                self.net.send(now, NodeId::Backend(i), to, pkt);
                            }
                            return;
                        }
                        b.host.receive(now, pkt);
                    }
                    Some(Verdict::Drop(why)) => b.ingress_drops.push(stat::NAMES[why as usize]),
                }
            }
        }
    }

    /// Whether `info`, for the client, is a duplicate bare ACK (it acknowledges nothing
    /// new, and something the client sent is unacknowledged) while the client's socket
    /// is closing (CLOSE-WAIT, CLOSING, LAST-ACK): smoltcp stops its retransmission
    /// timer on any ACK in these states (`set_for_idle`, without the `ack_all` check it
    /// makes in ESTABLISHED and FIN-WAIT-1), so a FIN the network lost would never go
    /// again, where a Linux client's timer runs while anything is unacknowledged. Such
    /// an ACK tells a Linux client nothing, so it is kept from smoltcp, and counted.
    fn stalls_smoltcp_close(&mut self, info: &PacketInfo) -> bool {
        let closing = matches!(
            self.client.app.state(&mut self.client.host),
            tcp::State::CloseWait | tcp::State::Closing | tcp::State::LastAck
        );
        let m = &mut self.client.monitor;
        let duplicate = m.snd_una.is_some_and(|una| !seq_lt(una, info.ack))
            && m.snd_nxt.is_some_and(|n| seq_lt(info.ack, n));
        if info.has(baton_proto::wire::TcpFlags::ACK)
            && m.snd_una.is_none_or(|una| seq_lt(una, info.ack))
        {
            m.snd_una = Some(info.ack);
        }
        let stalls = closing && info.is_pure_ack() && duplicate;
        if stalls {
            m.closing_acks_withheld += 1;
        }
        stalls
    }

    /// A Linux client's PAWS check on a segment from the VIP (RFC 7323 section 5.3).
    fn paws_rejects(&mut self, info: &PacketInfo) -> bool {
        let m = &mut self.client.monitor;
        if info.is_syn_ack() && m.ws_f.is_none() {
            m.ws_f = info.window_scale;
        }
        let Some((tsval, _)) = info.timestamps else {
            return false;
        };
        if info.is_syn_ack() && m.tsv_f.is_none() {
            m.tsv_f = Some(tsval);
            m.ts_recent = Some(tsval);
            return false;
        }
        if info.is_rst() {
            return false;
        }
        let older_than_syn_ack = m.tsv_f.is_some_and(|f| seq_lt(tsval, f));
        let older_than_recent = m
            .ts_recent
            .is_some_and(|r| seq_lt(tsval, r.wrapping_sub(PAWS_REORDER_SLACK_MS)));
        if !older_than_syn_ack
            && older_than_recent
            && Some(tsval) == m.tsv_f
            && info.payload_len == 0
            && info.flags == baton_proto::wire::TcpFlags::ACK
            && m.snd_una.is_some_and(|una| seq_le(info.ack, una))
        {
            m.redundant_acks_dropped += 1;
            return true;
        }
        if older_than_syn_ack || older_than_recent {
            m.paws_drops += 1;
            if m.findings.len() < 8 {
                m.findings.push(format!(
                    "PAWS drop: TSval {tsval} older than tsv_f {:?} / ts_recent {:?}: {info}",
                    m.tsv_f, m.ts_recent
                ));
            }
            return true;
        }
        if m.ts_recent.is_none_or(|r| seq_lt(r, tsval)) {
            m.ts_recent = Some(tsval);
        }
        false
    }

    /// The failure report: seed, scenario, every node's state, monitors, last packets.
    pub fn report(&mut self, what: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {:?}, seed {}: {what} at virtual {:?} after {} steps",
            self.scenario, self.seed, self.now, self.steps
        );
        let client = self.client.app.describe(&mut self.client.host);
        let _ = writeln!(out, "  {client}");
        let _ = writeln!(out, "  client monitor: {:?}", self.client.monitor);
        for (i, b) in self.backends.iter_mut().enumerate() {
            let _ = writeln!(
                out,
                "  backend{i}: {}; silent {}; module {:?}; ingress drops {:?}",
                b.server.describe(&mut b.host),
                b.silent,
                b.module.counters,
                b.ingress_drops
            );
            let _ = writeln!(
                out,
                "  backend{i} monitor: {} violations {:?}",
                b.monitor.violations, b.monitor.findings
            );
        }
        let _ = writeln!(out, "  front-end: {}", self.front.describe());
        let _ = writeln!(out, "  packets in flight: {}", self.net.in_flight());
        let _ = writeln!(out, "  last packets:\n{}", self.net.trace());
        out
    }

    /// Checks every monitor is quiet: no PAWS drop, no translation outside B's terms.
    pub fn check_monitors(&mut self) -> Result<(), String> {
        if self.client.monitor.paws_drops > 0 {
            return Err(self.report("the client's PAWS check dropped segments"));
        }
        if self.backends.iter().any(|b| b.monitor.violations > 0) {
            return Err(self.report("a back-end received segments outside its own terms"));
        }
        Ok(())
    }

    /// The client read the whole expected response, both ends closed, and no RST was
    /// sent anywhere.
    pub fn clean_finish(&mut self) -> bool {
        let client_done = self.client.app.finished(&mut self.client.host);
        let server_done = self
            .backends
            .iter_mut()
            .any(|b| b.server.finished(&mut b.host));
        client_done && server_done
    }
}

/// The MSS the router clamps SYNs to, both ways, as routers commonly do.
///
/// smoltcp 0.12 sizes a segment by the MSS alone and leaves its options out of the
/// count, so a full-sized segment with timestamps (1460 + 52 bytes) exceeds a 1500-byte
/// MTU and its device refuses it. A clamp to 1400 leaves room for 40 bytes of options.
pub const MSS_CLAMP: u16 = 1400;

/// Lowers the MSS option of a SYN to [`MSS_CLAMP`] and recomputes the checksum.
fn clamp_mss(mut pkt: Vec<u8>) -> Vec<u8> {
    use baton_common::handoff_option::find_option;
    use baton_proto::wire::TcpSegment;
    let Ok(info) = PacketInfo::parse(&pkt) else {
        return pkt;
    };
    if !info.has(baton_proto::wire::TcpFlags::SYN) || info.mss.is_none_or(|m| m <= MSS_CLAMP) {
        return pkt;
    }
    let (ihl, _) = super::packet::ip_bounds(&pkt).expect("checked");
    let mut changed = false;
    let mut seg = TcpSegment::new_checked(&mut pkt[ihl..]).expect("checked");
    if let Ok(Some(span)) = find_option(seg.options_mut(), kind::MSS) {
        seg.options_mut()[span.start + 2..span.start + 4].copy_from_slice(&MSS_CLAMP.to_be_bytes());
        changed = true;
    }
    if changed {
        super::packet::fill_checksums(&mut pkt);
    }
    pkt
}

/// Replaces the SACK-permitted option of a SYN with two NOPs (a middlebox's doing) and
/// recomputes the checksum.
fn strip_sack_permitted(mut pkt: Vec<u8>) -> Vec<u8> {
    use baton_common::handoff_option::find_option;
    use baton_proto::wire::TcpSegment;
    let Ok(info) = PacketInfo::parse(&pkt) else {
        return pkt;
    };
    if !info.is_syn() {
        return pkt;
    }
    let (ihl, _) = super::packet::ip_bounds(&pkt).expect("checked");
    let mut changed = false;
    let mut seg = TcpSegment::new_checked(&mut pkt[ihl..]).expect("checked");
    if let Ok(Some(span)) = find_option(seg.options_mut(), kind::SACK_PERMITTED) {
        seg.options_mut()[span.start..span.start + span.len].fill(1);
        changed = true;
    }
    if changed {
        super::packet::fill_checksums(&mut pkt);
    }
    pkt
}

/// A client segment's options `[TS, len, TSval, TSecr, EOL, EOL]` (smoltcp's) rewritten
/// as Linux lays them out, `[NOP, NOP, TS, len, TSval, TSecr]`; checksum refilled.
fn linux_timestamps(mut pkt: Vec<u8>) -> Vec<u8> {
    use baton_proto::wire::TcpSegment;
    let Ok(info) = PacketInfo::parse(&pkt) else {
        return pkt;
    };
    if info.is_syn() {
        return pkt;
    }
    let (ihl, _) = super::packet::ip_bounds(&pkt).expect("checked");
    let mut changed = false;
    let mut seg = TcpSegment::new_checked(&mut pkt[ihl..]).expect("checked");
    let options = seg.options_mut();
    if options.len() == 12 && options[..2] == [8, 10] && options[10..] == [0, 0] {
        options.copy_within(..10, 2);
        options[..2].copy_from_slice(&[1, 1]);
        changed = true;
    }
    if changed {
        super::packet::fill_checksums(&mut pkt);
    }
    pkt
}
