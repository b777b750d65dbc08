//! The real front-end ([`baton_proto::frontend::FrontEnd`]) as a simulation node, driven
//! by the virtual clock, with a model of the front-end's XDP fast path beside it.
//!
//! The fast path takes a flow in from [`Event::RequestSent`] (awaiting the back-end's
//! answer) and [`Event::HandedOff`], and lets it go on [`Event::Closed`]/[`Event::Reset`],
//! as the daemon does with the XDP table. A client packet of an entry is rewritten
//! (destination := back-end, RFC 1624 checksum updates through `baton_common`) and sent
//! on without the state machine seeing it, as `baton-ebpf/src/frontend.rs` does: SYNs go
//! to the slow path (`XDP_PASS`); while the entry awaits the answer only a segment
//! acknowledging data past the front-end's SYN/ACK is forwarded, and the core is told
//! (`FrontEnd::note_backend_answered`); the others go up, counted towards the entry's
//! `client_next` all the same. A FIN or RST is forwarded, and the core told
//! (`FrontEnd::note_client_fin`, `FrontEnd::note_client_reset`) only when it sits at the
//! entry's `client_next` (`decide_client_segment`, the program's own decision), as the
//! program does through its ring, which the daemon reads before the next packet. Every
//! forwarded segment stamps its entry with the time, and the core is told of the stamps
//! (`FrontEnd::note_activity`) before its timers run, as the daemon's scan does once a
//! second: the idle timeout and the grace period after the client's FIN run from the
//! client's last segment. Nothing from a back-end is taken in: its copies go up.
//!
//! While cookies are engaged the model answers a bare SYN as the program does, with the
//! same functions: the choice of options (`syncookie::agreed_options`), the cookie, and,
//! for a client without timestamps, the entry in the half-open map
//! ([`SimHalfOpenMap`]), which the core takes through [`FrontEnd::handle_packet_with`]
//! as the daemon lends it the BPF map.
//!
//! The core's outputs are applied as the daemon applies them: one stream, each in turn.
//! Normally the node drains after every input; a scenario can make it stall
//! ([`RealFront::stall`]), as a daemon busy or stopped does: the fast path keeps
//! forwarding, while what it tells the core and the packets it passes up wait, and are
//! handled all in one round when the node resumes, before one drain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use baton_common::ipv6::csum_replace16;

/// An address's bytes as the stamp's back-end id takes them: IPv4's four, or the last
/// four of an IPv6 address (IPv6 back-ends do not stamp yet, so no echo names one; the
/// id only has to be some back-end's).
fn id_bytes(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(ip) => {
            let o = ip.octets();
            [o[12], o[13], o[14], o[15]]
        }
    }
}
use std::time::Duration;

use baton_common::{
    frontend::{
        AwaitedAnswer, ClientSegment, Echo, FlowNotice, FrontendFlow, decide_client_segment,
    },
    kernel_dispatch::{
        self, HandoffTerms, KernelBackend, KernelDecision, KernelHandoffConfig, RequestSegment,
        SCRATCH_LEN,
    },
    layout::ETH_HLEN,
    stamp,
    syn_prime::{
        SYN_PRIME_FRAME_HEADERS_LEN, payload_sum_from_checksum, write_syn_prime_frame_headers,
    },
    syncookie::{self, HalfOpenSyn, SynCookieConfig},
    translate::{csum_replace4, ones_complement_add, tcp_ipv4_pseudo_header_sum},
};
use baton_dispatch::{Dispatcher, KernelProgram};
use baton_proto::frontend::{
    Backend, Config, Dispatch, Event, Feedback, FlowKey, FrontEnd, HalfOpenSyns, Instant, Output,
    StateName,
};
use baton_proto::request::ClientRequest;
use baton_proto::wire::TcpFlags;

use super::net::NodeId;
use super::packet::{PacketInfo, ip_bounds, write_addr};
use super::world::FrontNode;

/// What the dispatcher was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchCall {
    pub host: Option<String>,
    pub tls: bool,
    pub path: Option<String>,
    pub excluded: Vec<Backend>,
    pub chose: Option<Backend>,
}

/// A test dispatcher: the first back-end in its list not yet tried, or the scenario's
/// content-aware dispatcher (`rules`) where it has one; records each call, the feedback
/// it is given and the kernel's choices it is told of ([`Dispatch::assign`]).
pub struct SimDispatch {
    pub backends: Vec<Backend>,
    pub calls: Vec<DispatchCall>,
    pub feedback: Vec<Feedback>,
    /// The scenario's `[dispatch]`: it decides what the core dispatches, and its rules,
    /// compiled, are what the modelled XDP program's matcher runs.
    pub rules: Option<Dispatcher>,
    /// The back-ends of the handoffs the kernel made, as the core booked them.
    pub assigned: Vec<Backend>,
}

impl Dispatch for SimDispatch {
    fn feedback(&mut self, now: Instant, flow: &FlowKey, feedback: Feedback) {
        self.feedback.push(feedback);
        if let Some(rules) = &mut self.rules {
            rules.feedback(now, flow, feedback);
        }
    }

    fn assign(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        backend: Backend,
    ) {
        self.assigned.push(backend);
        if let Some(rules) = &mut self.rules {
            Dispatch::assign(rules, now, flow, request, backend);
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let chose = match &mut self.rules {
            Some(rules) => rules.dispatch(now, flow, request, exclude),
            None => self.backends.iter().copied().find(|b| !exclude.contains(b)),
        };
        self.calls.push(DispatchCall {
            host: request.host().map(str::to_owned),
            tls: matches!(request, ClientRequest::Tls(_)),
            path: match request {
                ClientRequest::Http(head) => Some(head.path().to_owned()),
                ClientRequest::Tls(_) => None,
            },
            excluded: exclude.to_vec(),
            chose,
        });
        chose
    }
}

pub fn instant(now: Duration) -> Instant {
    Instant::from_nanos(now.as_nanos() as u64)
}

fn duration(at: Instant) -> Duration {
    Duration::from_nanos(at.as_nanos())
}

/// An entry of the modelled XDP table.
#[derive(Clone, Copy, Debug)]
pub struct FastEntry {
    pub backend: IpAddr,
    /// While the core waits for the back-end's confirmation: the front-end's ISN, past
    /// which a client segment must acknowledge data to be forwarded.
    pub awaiting_answer: Option<u32>,
    /// The client's next sequence number as the program has seen it.
    pub client_next: u32,
    /// When the program last forwarded a segment of the flow (its `last_seen_ns`), and
    /// whether the core has been told of it since.
    pub last_seen: Option<Duration>,
    pub seen_noted: bool,
}

/// What the fast path tells the core (through the program's ring in the daemon).
#[derive(Clone, Copy, Debug)]
enum Notice {
    Answered,
    ClientFin,
    ClientReset,
}

/// The model of the program's half-open map: the SYN options of clients without
/// timestamps, by flow, until the core takes them (unbounded: the simulation's clients
/// are few, and the core's unit tests cover an entry gone).
#[derive(Default)]
pub struct SimHalfOpenMap(pub HashMap<FlowKey, HalfOpenSyn>);

impl HalfOpenSyns for SimHalfOpenMap {
    fn take(&mut self, flow: &FlowKey) -> Option<HalfOpenSyn> {
        self.0.remove(flow)
    }
}

/// An input that waits while the node stalls.
enum Input {
    /// A record of the handoffs ring: the request segment as it arrived, and the
    /// back-end the program sent its SYN' to.
    Handoff(Duration, Vec<u8>, Backend),
    Notice(Duration, Notice, FlowKey),
    Packet(Duration, Vec<u8>),
}

/// The model of the program's handoff in the kernel (docs/design.md, "The handoff in
/// the kernel"): its configuration as the daemon writes it, the compiled rules in force,
/// one CPU's round-robin counters, and what it counted.
pub struct KernelModel {
    pub config: KernelHandoffConfig,
    pub program: KernelProgram,
    /// When the rules were last compiled: the daemon rewrites them every second.
    compiled_at: Duration,
    cursors: Vec<u32>,
    /// `handed_off_in_kernel`, and `pass_request_to_slow_path` with its reasons
    /// (`kernel_dispatch::reason`: the matcher's and the handoff's own checks').
    pub handed_off: u64,
    pub to_slow_path: Vec<u32>,
    /// Records the core did not adopt (their entries removed, as the daemon does).
    pub refused: u64,
}

/// How often the daemon rewrites the kernel's rules (`ACTIVITY_SCAN`).
const RULES_REWRITTEN_EVERY: Duration = Duration::from_secs(1);

pub struct RealFront {
    pub fe: FrontEnd<SimDispatch>,
    /// The XDP forwarding table: client (address, port) -> its entry.
    pub fast_path: HashMap<(IpAddr, u16), FastEntry>,
    pub events: Vec<Event>,
    pub fast_path_packets: u64,
    /// Cookie SYN/ACKs the modelled program sent, and handshake ACKs it took in.
    pub syn_acks_from_xdp: u64,
    pub handshake_acks_absorbed: u64,
    /// Closed flows the modelled program replaced with a new connection's SYN.
    pub closed_flows_replaced: u64,
    /// The modelled program's half-open map, and the entries it wrote.
    pub half_open: SimHalfOpenMap,
    pub half_open_kept: u64,
    /// The handoff in the kernel, when the scenario turns it on.
    pub kernel: Option<KernelModel>,
    /// Flows whose entry the program wrote with its handoff, while the core adopts them:
    /// its `RequestSent` leaves the entry as it is (the daemon's `kernel_adopted`).
    kernel_adopted: std::collections::HashSet<(IpAddr, u16)>,
    out: Vec<Vec<u8>>,
    /// While `Some`, the slow path is stalled and its inputs wait here.
    stalled: Option<Vec<Input>>,
}

impl RealFront {
    pub fn new(config: Config, backends: Vec<Backend>) -> Self {
        let dispatch = SimDispatch {
            backends,
            calls: Vec::new(),
            feedback: Vec::new(),
            rules: None,
            assigned: Vec::new(),
        };
        Self {
            fe: FrontEnd::new(config, dispatch).expect("valid front-end config"),
            fast_path: HashMap::new(),
            events: Vec::new(),
            fast_path_packets: 0,
            syn_acks_from_xdp: 0,
            handshake_acks_absorbed: 0,
            closed_flows_replaced: 0,
            half_open: SimHalfOpenMap::default(),
            half_open_kept: 0,
            kernel: None,
            kernel_adopted: std::collections::HashSet::new(),
            out: Vec::new(),
            stalled: None,
        }
    }

    /// A front-end whose `rules` decide, and whose fast path hands off in the kernel
    /// what the rules' compiled form routes (`[tcp] kernel_dispatch`): on, as the daemon
    /// has it, only if `config` hands off in one turn and answers every SYN in XDP.
    pub fn with_kernel_dispatch(config: Config, rules: Dispatcher) -> Self {
        let enabled = config.one_turn && config.every_syn_in_fast_path;
        let handoff = KernelHandoffConfig::new(config.handoff_key, config.mss, enabled);
        let limits = config.request_limits();
        let program = rules.compile_kernel(limits.max_head_len, limits.max_headers);
        let mut front = Self::new(config, Vec::new());
        front.fe.dispatcher_mut().rules = Some(rules);
        front.kernel = Some(KernelModel {
            config: handoff,
            cursors: vec![0; program.pools.len()],
            program,
            compiled_at: Duration::ZERO,
            handed_off: 0,
            to_slow_path: Vec::new(),
            refused: 0,
        });
        front
    }

    /// Stops the slow path, as a busy or stopped daemon: from now on its inputs wait.
    pub fn stall(&mut self) {
        self.stalled.get_or_insert_with(Vec::new);
    }

    /// Whether the slow path is stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// Whether a client FIN the fast path forwarded waits to be told.
    pub fn client_fin_waiting(&self) -> bool {
        self.stalled
            .iter()
            .flatten()
            .any(|i| matches!(i, Input::Notice(_, Notice::ClientFin, _)))
    }

    /// Whether a SYN waits to be read.
    pub fn syn_waiting(&self) -> bool {
        self.stalled.iter().flatten().any(|i| match i {
            Input::Packet(_, pkt) => PacketInfo::parse(pkt).is_ok_and(|p| p.has(TcpFlags::SYN)),
            Input::Notice(..) | Input::Handoff(..) => false,
        })
    }

    /// Handles every input that waited, in order, as one round of the daemon's loop,
    /// then applies the round's outputs.
    pub fn resume(&mut self) {
        let waiting = self.stalled.take().unwrap_or_default();
        // The handoffs ring first, as the daemon reads it before the notices and before
        // every packet: all of it was written before anything here is handled.
        let (handoffs, rest): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|i| matches!(i, Input::Handoff(..)));
        for input in handoffs.into_iter().chain(rest) {
            match input {
                Input::Handoff(at, packet, backend) => self.adopt(at, &packet, backend),
                Input::Notice(at, notice, flow) => self.tell(at, notice, &flow),
                Input::Packet(at, pkt) => {
                    self.fe
                        .handle_packet_with(instant(at), &pkt, &mut self.half_open)
                }
            }
        }
        self.drain();
    }

    /// The daemon reads a record of the handoffs ring (`note_kernel_handoffs`): the core
    /// adopts the connection, and a record it refuses has its entry taken out of the
    /// table, so that nothing is forwarded that no one tracks.
    fn adopt(&mut self, now: Duration, packet: &[u8], backend: Backend) {
        let Ok(info) = PacketInfo::parse(packet) else {
            return;
        };
        let key = (info.src, info.sport);
        self.kernel_adopted.insert(key);
        let adopted = self.fe.adopt_kernel_handoff(instant(now), packet, backend);
        // Its `RequestSent` (applied in this drain, or the stalled round's) takes the mark.
        if !adopted {
            self.kernel_adopted.remove(&key);
            self.fast_path.remove(&key);
            if let Some(kernel) = &mut self.kernel {
                kernel.refused += 1;
            }
        }
    }

    fn tell(&mut self, now: Duration, notice: Notice, flow: &FlowKey) {
        let now = instant(now);
        match notice {
            Notice::Answered => self.fe.note_backend_answered(now, flow),
            Notice::ClientFin => self.fe.note_client_fin(now, flow),
            Notice::ClientReset => self.fe.note_client_reset(now, flow),
        }
    }

    /// The fast path tells the core of `notice`: at once, or after the stall.
    fn notify(&mut self, now: Duration, notice: Notice, flow: FlowKey) {
        match &mut self.stalled {
            Some(waiting) => waiting.push(Input::Notice(now, notice, flow)),
            None => self.tell(now, notice, &flow),
        }
    }

    /// The default configuration for the lab: one service, secrets from the seed.
    pub fn lab_config(vip: IpAddr, port: u16, key: [u8; 16], seed: u64) -> Config {
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..].copy_from_slice(&(!seed).to_le_bytes());
        Config {
            services: vec![SocketAddr::new(vip, port)],
            secret,
            handoff_key: key,
            ..Config::default()
        }
    }

    pub fn dispatch_calls(&mut self) -> &[DispatchCall] {
        &self.fe.dispatcher_mut().calls
    }

    pub fn state_of(&self, client: SocketAddr, service: SocketAddr) -> Option<StateName> {
        self.fe.connection_state(&FlowKey { client, service })
    }

    /// Applies the core's outputs, each in turn, as the daemon does.
    fn drain(&mut self) {
        while let Some(output) = self.fe.poll_output() {
            let event = match output {
                Output::Transmit(t) => {
                    let info = PacketInfo::parse(&t.packet).expect("front-end packets parse");
                    assert_eq!(
                        t.destination, info.dst,
                        "Transmit::destination differs from the packet's: {info}"
                    );
                    self.out.push(t.packet);
                    continue;
                }
                Output::Event(event) => event,
                // The simulation's front-ends are not probed across (its clients all
                // send timestamps, and its cores keep the reset: `probe_rate` 0).
                Output::Probe(_) => continue,
            };
            match &event {
                Event::RequestSent(h)
                    if self
                        .kernel_adopted
                        .remove(&(h.flow.client.ip(), h.flow.client.port())) =>
                {
                    // The program wrote the entry with its handoff, and may have moved it
                    // on since: left as it is.
                }
                Event::RequestSent(h) => {
                    let entry = FastEntry {
                        backend: h.backend.ip(),
                        awaiting_answer: Some(h.isn_f),
                        client_next: h.client_next,
                        last_seen: None,
                        seen_noted: true,
                    };
                    self.fast_path
                        .insert((h.flow.client.ip(), h.flow.client.port()), entry);
                }
                Event::HandedOff(h)
                    if h.confirmed_by_fast_path
                        && self
                            .fast_path
                            .contains_key(&(h.flow.client.ip(), h.flow.client.port())) =>
                {
                    // As the daemon does: the program cleared its entry's wait itself, and
                    // the entry stays as it is.
                }
                Event::HandedOff(h) => {
                    // As the daemon does: the later of the core's number and the entry's.
                    let key = (h.flow.client.ip(), h.flow.client.port());
                    let old = self.fast_path.get(&key);
                    let client_next = match old {
                        Some(e) if (e.client_next.wrapping_sub(h.client_next) as i32) > 0 => {
                            e.client_next
                        }
                        _ => h.client_next,
                    };
                    let entry = FastEntry {
                        backend: h.backend.ip(),
                        awaiting_answer: None,
                        client_next,
                        last_seen: old.and_then(|e| e.last_seen),
                        seen_noted: old.is_none_or(|e| e.seen_noted),
                    };
                    self.fast_path
                        .insert((h.flow.client.ip(), h.flow.client.port()), entry);
                }
                Event::Closed { flow, .. } | Event::Reset { flow, .. } => {
                    self.fast_path
                        .remove(&(flow.client.ip(), flow.client.port()));
                }
            }
            self.events.push(event);
        }
    }

    /// The XDP program: forwards a client packet of an installed flow, answers a SYN or
    /// takes in the handshake's ACK while cookies are engaged, or returns the packet for
    /// the slow path.
    fn xdp(&mut self, now: Duration, mut pkt: Vec<u8>) -> Option<Vec<u8>> {
        let info = PacketInfo::parse(&pkt).ok()?;
        let key = (info.src, info.sport);
        let Some(&entry) = self.fast_path.get(&key) else {
            return self.xdp_no_flow(now, pkt, &info);
        };
        if info.has(TcpFlags::SYN) {
            // A bare SYN with another ISN on a flow whose client closed it, with kernel
            // dispatch on and SYNs answered here: the entry goes and the SYN is answered like any other
            // (the program's `replaced_by_syn`, on the close state the daemon records).
            let flow = FlowKey {
                client: SocketAddr::new(info.src, info.sport),
                service: SocketAddr::new(info.dst, info.dport),
            };
            let bare = info.flags.bits() & 0x17 == TcpFlags::SYN.bits();
            let replaced = bare
                && self.kernel.is_some()
                && self.fe.wants_syn_cookies(true)
                && self.fe.handover(&flow).is_some_and(|h| {
                    FrontendFlow {
                        close_state: h.close_state(),
                        client_isn: h.client_isn,
                        ..FrontendFlow::default()
                    }
                    .replaced_by_syn(info.seq)
                });
            if replaced {
                self.fast_path.remove(&key);
                self.closed_flows_replaced += 1;
                return self.xdp_no_flow(now, pkt, &info);
            }
            return Some(pkt);
        }
        let (ihl, _) = ip_bounds(&pkt)?;
        // The program's own decision (the simulation's segments carry complete
        // checksums and the ring never fills, so every segment not held is forwarded).
        let doff = usize::from(pkt[ihl + 12] >> 4) * 4;
        let decision = decide_client_segment(
            entry.client_next,
            entry.awaiting_answer.map(|isn_f| AwaitedAnswer {
                isn_f,
                backend_id: stamp::backend_id(id_bytes(entry.backend)),
            }),
            ClientSegment {
                seq: info.seq,
                ack: info.ack,
                flags: pkt[ihl + 13],
                payload_len: info.payload_len as u32,
                echo: Echo::of_options(&pkt[ihl + 20..ihl + doff]),
            },
        );
        if let Some(e) = self.fast_path.get_mut(&key) {
            e.client_next = decision.client_next;
        }
        if decision.hold {
            return Some(pkt);
        }
        if let Some(e) = self.fast_path.get_mut(&key) {
            e.last_seen = Some(now);
            e.seen_noted = false;
        }
        let backend = entry.backend;
        let flow = FlowKey {
            client: SocketAddr::new(info.src, info.sport),
            service: SocketAddr::new(info.dst, info.dport),
        };
        // Told in the order the daemon reads one notice's bits.
        if decision.notice & FlowNotice::BACKEND_ANSWERED != 0 {
            if let Some(e) = self.fast_path.get_mut(&key) {
                e.awaiting_answer = None;
            }
            self.notify(now, Notice::Answered, flow);
        }
        if decision.notice & FlowNotice::CLIENT_FIN != 0 {
            self.notify(now, Notice::ClientFin, flow);
        }
        if decision.notice & FlowNotice::CLIENT_RST != 0 {
            self.notify(now, Notice::ClientReset, flow);
        }
        if decision.notice != 0 && !self.is_stalled() {
            self.drain();
        }
        let tcp_check = u16::from_be_bytes([pkt[ihl + 16], pkt[ihl + 17]]);
        match (info.dst, backend) {
            (IpAddr::V4(old), IpAddr::V4(new)) => {
                let (old, new) = (u32::from(old), u32::from(new));
                let ip_check = u16::from_be_bytes([pkt[10], pkt[11]]);
                pkt[10..12].copy_from_slice(&csum_replace4(ip_check, old, new).to_be_bytes());
                pkt[ihl + 16..ihl + 18]
                    .copy_from_slice(&csum_replace4(tcp_check, old, new).to_be_bytes());
            }
            // IPv6: no header checksum; TCP's covers the address (`csum_replace16`, the
            // update the program's IPv6 path is to make).
            (IpAddr::V6(old), IpAddr::V6(new)) => {
                let check = csum_replace16(tcp_check, &old.octets(), &new.octets());
                pkt[ihl + 16..ihl + 18].copy_from_slice(&check.to_be_bytes());
            }
            _ => panic!("a flow of one family forwarded to the other: {info}"),
        }
        write_addr(&mut pkt, true, backend);
        self.fast_path_packets += 1;
        self.out.push(pkt);
        None
    }
}

impl RealFront {
    /// The daemon's activity scan: the core told of every entry forwarded for since the
    /// last scan, with the stamp's own time. Run before the core's timers, which is when
    /// it matters; the daemon's runs every second, which gives the same `last_heard`.
    fn note_activity(&mut self, now: Duration) {
        // The simulation's one service: the modelled table is keyed by the client alone.
        let service = self.fe.config().services[0];
        for (&(ip, port), entry) in &mut self.fast_path {
            let Some(seen) = entry.last_seen.filter(|_| !entry.seen_noted) else {
                continue;
            };
            entry.seen_noted = true;
            let flow = FlowKey {
                client: SocketAddr::new(ip, port),
                service,
            };
            self.fe.note_activity(instant(now), &flow, instant(seen));
        }
    }

    /// The program on a segment of no flow in its table, while the core asks for cookies
    /// (as the daemon engages them): a bare SYN is answered with the cookie SYN/ACK
    /// `baton_common::syncookie` builds (the program's own code), its options kept in the
    /// half-open map if the cookie cannot keep them (no timestamps), and a bare ACK whose
    /// cookie checks is taken in (`handshake_ack_absorbed`). Everything else goes up.
    fn xdp_no_flow(&mut self, now: Duration, pkt: Vec<u8>, info: &PacketInfo) -> Option<Vec<u8>> {
        // The program's SYN cookies and its handoff in the kernel are IPv4's (the IPv6
        // path is the XDP program's own step): an IPv6 segment of no flow goes up, where
        // the core answers it, with its own cookies if engaged.
        if info.src.is_ipv6() {
            return Some(pkt);
        }
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (info.src, info.dst) else {
            return Some(pkt);
        };
        // SYN, FIN, RST, ACK: the bits that tell a bare SYN or a bare ACK.
        let control = info.flags.bits() & 0x17;
        // A request (the program's `hand_off_request`): handed off in the kernel, or up.
        if control == 0x10 && info.payload_len > 0 && self.kernel.is_some() {
            return self.hand_off_in_kernel(now, pkt, info);
        }
        if !self.fe.wants_syn_cookies(true) {
            return Some(pkt);
        }
        let flow = syncookie::flow_bytes(src.octets(), dst.octets(), info.sport, info.dport);
        let now_ns = now.as_nanos() as u64;
        // As the daemon writes it with a half-open map.
        let mut config = self.fe.syn_cookie_config();
        config.flags |= SynCookieConfig::HALF_OPEN;
        if control == 0x02 && info.payload_len == 0 {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let header_len = usize::from(pkt[ihl + 12] >> 4) * 4;
            let mut area = [0u8; syncookie::OPTIONS_AREA];
            let options_len = header_len.saturating_sub(20).min(40);
            area[..options_len].copy_from_slice(&pkt[ihl + 20..ihl + 20 + options_len]);
            let mut options = syncookie::parse_syn_options(&area, options_len)?;
            options.ecn_setup = syncookie::ecn_setup_syn(info.flags.bits() as u8, pkt[1]);
            let agreed = syncookie::agreed_options(config.flags, config.window_shift, &options);
            let syn_in_map = agreed.need_the_half_open_map();
            if syn_in_map {
                let key = FlowKey {
                    client: SocketAddr::new(info.src, info.sport),
                    service: SocketAddr::new(info.dst, info.dport),
                };
                let entry = HalfOpenSyn::new(info.seq, info.window, &options, &agreed);
                self.half_open.0.insert(key, entry);
                self.half_open_kept += 1;
            }
            let answer =
                syncookie::cookie_syn_ack(&config, now_ns, &flow, info.seq, &options, syn_in_map);
            let to = syncookie::SynAddresses {
                client_mac: [0; 6],
                our_mac: [0; 6],
                client_addr: src.octets(),
                service_addr: dst.octets(),
                client_port: info.sport,
                service_port: info.dport,
            };
            let frame = syncookie::syn_ack_frame(&to, info.seq, config.window, &answer);
            self.syn_acks_from_xdp += 1;
            // The IPv4 packet inside the frame the program sends.
            self.out.push(frame[14..].to_vec());
            return None;
        }
        if control == 0x10 && info.payload_len == 0 {
            let cookie = info.ack.wrapping_sub(1);
            let client_isn = info.seq.wrapping_sub(1);
            if syncookie::check_cookie(&config.keys, now_ns, &flow, client_isn, cookie).is_some() {
                self.handshake_acks_absorbed += 1;
                return None;
            }
        }
        Some(pkt)
    }
}

impl RealFront {
    /// The program's handoff in the kernel (`hand_off_request`, `finish_handoff`,
    /// `emit_syn_prime` in `baton-ebpf/src/frontend.rs`) on a client data segment of no
    /// flow, with the program's functions: the cookie's check, the terms
    /// (`kernel_dispatch::handoff_terms`), the matcher over the compiled rules
    /// (`kernel_dispatch::decide`), the back-end and the handoff option
    /// (`kernel_dispatch::choose_backend`), and the SYN''s headers written over the
    /// request's (`syn_prime`). Then, as the program does, the flow into the table
    /// awaiting the answer, the record into the ring, the SYN' out; and the daemon reads
    /// the record before anything else (at once, or when a stalled round resumes).
    /// Anything the program leaves to the core goes up as it arrived.
    fn hand_off_in_kernel(
        &mut self,
        now: Duration,
        pkt: Vec<u8>,
        info: &PacketInfo,
    ) -> Option<Vec<u8>> {
        let kernel = self.kernel.as_mut()?;
        if kernel.config.flags & KernelHandoffConfig::ENABLED == 0 {
            return Some(pkt);
        }
        if now >= kernel.compiled_at + RULES_REWRITTEN_EVERY {
            // The daemon's rewrite (start, then every scan): health verdicts reach the
            // kernel's rules within a second.
            let limits = self.fe.config().request_limits();
            let rules = self.fe.dispatcher_mut().rules.as_ref()?;
            kernel.program = rules.compile_kernel(limits.max_head_len, limits.max_headers);
            kernel.cursors.resize(kernel.program.pools.len(), 0);
            kernel.compiled_at = now;
        }
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (info.src, info.dst) else {
            return Some(pkt);
        };
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let header_len = usize::from(pkt[ihl + 12] >> 4) * 4;
        let cookies = self.fe.syn_cookie_config();
        let flow = syncookie::flow_bytes(src.octets(), dst.octets(), info.sport, info.dport);
        let client_isn = info.seq.wrapping_sub(1);
        let Some(cookie) = syncookie::check_cookie(
            &cookies.keys,
            now.as_nanos() as u64,
            &flow,
            client_isn,
            info.ack.wrapping_sub(1),
        ) else {
            // Not a cookie of ours: up, as a segment of no flow.
            return Some(pkt);
        };
        let Some(timestamps) =
            kernel_dispatch::data_segment_timestamps(&pkt[ihl + 20..ihl + header_len])
        else {
            kernel
                .to_slow_path
                .push(kernel_dispatch::reason::TCP_OPTIONS);
            return Some(pkt);
        };
        // The payload's sum from the request's checksum (a partial one goes up), as the
        // program has no loop over the payload.
        let tcp_len = pkt.len() - ihl;
        let check = u16::from_be_bytes([pkt[ihl + 16], pkt[ihl + 17]]);
        let pseudo = tcp_ipv4_pseudo_header_sum(src.octets(), dst.octets(), tcp_len as u16);
        if check == pseudo {
            kernel
                .to_slow_path
                .push(kernel_dispatch::reason::PARTIAL_CHECKSUM);
            return Some(pkt);
        }
        let header_sum = (0..header_len / 2).filter(|&i| i != 8).fold(0, |sum, i| {
            ones_complement_add(
                sum,
                u16::from_be_bytes([pkt[ihl + 2 * i], pkt[ihl + 2 * i + 1]]),
            )
        });
        let segment = RequestSegment {
            client_addr: src.octets(),
            service_addr: dst.octets(),
            client_port: info.sport,
            service_port: info.dport,
            seq: info.seq,
            ack: info.ack,
            flags: pkt[ihl + 13],
            window_field: info.window,
            ttl: pkt[8],
            timestamps,
            payload_len: info.payload_len as u32,
        };
        let mut terms = HandoffTerms {
            prime: baton_common::syn_prime::SynPrime {
                client_addr: [0; 4],
                backend_addr: [0; 4],
                client_port: 0,
                backend_port: 0,
                client_isn: 0,
                window: 0,
                ttl: 0,
                ecn: false,
                mss: None,
                window_shift: None,
                sack_permitted: false,
                tsval: None,
                handoff: [0; baton_common::handoff_option::HANDOFF_OPTION_LEN],
            },
            option: baton_common::handoff_option::HandoffOption::new(0, 0, 0, 0),
            flow: Default::default(),
        };
        if let Err(why) =
            kernel_dispatch::handoff_terms(&kernel.config, &cookies, &cookie, &segment, &mut terms)
        {
            kernel.to_slow_path.push(why);
            return Some(pkt);
        }
        let payload = &pkt[ihl + header_len..];
        let mut scratch = [0u8; SCRATCH_LEN];
        let decision = kernel_dispatch::decide(
            &kernel.program.tables(),
            payload,
            &mut scratch,
            &mut kernel.cursors,
        );
        let chosen = (decision.verdict == KernelDecision::HAND_OFF)
            .then(|| {
                kernel
                    .program
                    .backends
                    .get(decision.backend as usize)
                    .copied()
            })
            .flatten();
        let Some(backend) = chosen else {
            kernel.to_slow_path.push(decision.reason);
            return Some(pkt);
        };
        // The simulation's LAN carries IPv4 packets: the MACs are the daemon's business.
        let written = KernelBackend {
            addr_be: u32::from_ne_bytes(backend.ip().octets()),
            port_be: backend.port().to_be(),
            mac: [0; 6],
            flags: KernelBackend::USABLE,
            load_slot: 0,
        };
        kernel_dispatch::choose_backend(&mut terms, &kernel.config.handoff_key, &written);
        kernel.handed_off += 1;
        // The table (the model's flow table holds no such flow: this is its no-flow
        // path), then the ring, then the SYN'.
        let key = (info.src, info.sport);
        self.fast_path.insert(
            key,
            FastEntry {
                backend: IpAddr::V4(*backend.ip()),
                awaiting_answer: Some(terms.flow.isn_f),
                client_next: terms.flow.client_next,
                last_seen: None,
                seen_noted: true,
            },
        );
        let mut frame = [0u8; SYN_PRIME_FRAME_HEADERS_LEN];
        write_syn_prime_frame_headers(
            &mut frame,
            &terms.flow.backend_mac,
            &[0; 6],
            &terms.prime,
            payload.len() as u16,
            payload_sum_from_checksum(check, pseudo, header_sum),
        );
        let mut syn_prime = frame[ETH_HLEN..].to_vec();
        syn_prime.extend_from_slice(payload);
        self.out.push(syn_prime);
        match &mut self.stalled {
            Some(waiting) => waiting.push(Input::Handoff(now, pkt, backend.into())),
            None => {
                self.adopt(now, &pkt, backend.into());
                self.drain();
            }
        }
        None
    }
}

impl FrontNode for RealFront {
    fn receive(&mut self, now: Duration, from: NodeId, pkt: Vec<u8>) {
        let pkt = if from == NodeId::Client {
            match self.xdp(now, pkt) {
                Some(pkt) => pkt,
                None => return,
            }
        } else {
            pkt
        };
        if let Some(waiting) = &mut self.stalled {
            waiting.push(Input::Packet(now, pkt));
            return;
        }
        self.fe
            .handle_packet_with(instant(now), &pkt, &mut self.half_open);
        self.drain();
    }

    fn poll(&mut self, now: Duration) {
        if self.is_stalled() {
            return;
        }
        self.note_activity(now);
        if self.fe.poll_timeout().is_some_and(|at| at <= instant(now)) {
            self.fe.handle_timeout(instant(now));
        }
        self.drain();
    }

    fn next_wakeup(&mut self) -> Option<Duration> {
        if self.is_stalled() {
            return None;
        }
        self.fe.poll_timeout().map(duration)
    }

    fn take_transmits(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!(
            "connections {}, fast path entries {}, fast-path packets {}, events {:?}, stats {:?}",
            self.fe.connection_count(),
            self.fast_path.len(),
            self.fast_path_packets,
            self.events,
            self.fe.stats()
        )
    }
}
