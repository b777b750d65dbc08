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
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use baton_common::{
    frontend::{ClientSegment, FlowNotice, decide_client_segment},
    syncookie::{self, HalfOpenSyn, SynCookieConfig},
    translate::csum_replace4,
};
use baton_proto::frontend::{
    Backend, Config, Dispatch, Event, Feedback, FlowKey, FrontEnd, HalfOpenSyns, Instant, Output,
    StateName,
};
use baton_proto::request::ClientRequest;
use baton_proto::wire::TcpFlags;

use super::net::NodeId;
use super::packet::PacketInfo;
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

/// A test dispatcher: the first back-end in its list not yet tried; records each call
/// and the feedback it is given.
pub struct SimDispatch {
    pub backends: Vec<Backend>,
    pub calls: Vec<DispatchCall>,
    pub feedback: Vec<Feedback>,
}

impl Dispatch for SimDispatch {
    fn feedback(&mut self, _now: Instant, _flow: &FlowKey, feedback: Feedback) {
        self.feedback.push(feedback);
    }

    fn dispatch(
        &mut self,
        _now: Instant,
        _flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let chose = self.backends.iter().copied().find(|b| !exclude.contains(b));
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
    pub backend: Ipv4Addr,
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
    Notice(Duration, Notice, FlowKey),
    Packet(Duration, Vec<u8>),
}

pub struct RealFront {
    pub fe: FrontEnd<SimDispatch>,
    /// The XDP forwarding table: client (address, port) -> its entry.
    pub fast_path: HashMap<(Ipv4Addr, u16), FastEntry>,
    pub events: Vec<Event>,
    pub fast_path_packets: u64,
    /// Cookie SYN/ACKs the modelled program sent, and handshake ACKs it took in.
    pub syn_acks_from_xdp: u64,
    pub handshake_acks_absorbed: u64,
    /// The modelled program's half-open map, and the entries it wrote.
    pub half_open: SimHalfOpenMap,
    pub half_open_kept: u64,
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
        };
        Self {
            fe: FrontEnd::new(config, dispatch).expect("valid front-end config"),
            fast_path: HashMap::new(),
            events: Vec::new(),
            fast_path_packets: 0,
            syn_acks_from_xdp: 0,
            handshake_acks_absorbed: 0,
            half_open: SimHalfOpenMap::default(),
            half_open_kept: 0,
            out: Vec::new(),
            stalled: None,
        }
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
            Input::Notice(..) => false,
        })
    }

    /// Handles every input that waited, in order, as one round of the daemon's loop,
    /// then applies the round's outputs.
    pub fn resume(&mut self) {
        for input in self.stalled.take().unwrap_or_default() {
            match input {
                Input::Notice(at, notice, flow) => self.tell(at, notice, &flow),
                Input::Packet(at, pkt) => {
                    self.fe
                        .handle_packet_with(instant(at), &pkt, &mut self.half_open)
                }
            }
        }
        self.drain();
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
    pub fn lab_config(vip: Ipv4Addr, port: u16, key: [u8; 16], seed: u64) -> Config {
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..].copy_from_slice(&(!seed).to_le_bytes());
        Config {
            services: vec![SocketAddrV4::new(vip, port)],
            secret,
            handoff_key: key,
            ..Config::default()
        }
    }

    pub fn dispatch_calls(&mut self) -> &[DispatchCall] {
        &self.fe.dispatcher_mut().calls
    }

    pub fn state_of(&self, client: SocketAddrV4, service: SocketAddrV4) -> Option<StateName> {
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
            };
            match &event {
                Event::RequestSent(h) => {
                    let entry = FastEntry {
                        backend: *h.backend.ip(),
                        awaiting_answer: Some(h.isn_f),
                        client_next: h.client_next,
                        last_seen: None,
                        seen_noted: true,
                    };
                    self.fast_path
                        .insert((*h.flow.client.ip(), h.flow.client.port()), entry);
                }
                Event::HandedOff(h)
                    if h.confirmed_by_fast_path
                        && self
                            .fast_path
                            .contains_key(&(*h.flow.client.ip(), h.flow.client.port())) =>
                {
                    // As the daemon does: the program cleared its entry's wait itself, and
                    // the entry stays as it is.
                }
                Event::HandedOff(h) => {
                    // As the daemon does: the later of the core's number and the entry's.
                    let key = (*h.flow.client.ip(), h.flow.client.port());
                    let old = self.fast_path.get(&key);
                    let client_next = match old {
                        Some(e) if (e.client_next.wrapping_sub(h.client_next) as i32) > 0 => {
                            e.client_next
                        }
                        _ => h.client_next,
                    };
                    let entry = FastEntry {
                        backend: *h.backend.ip(),
                        awaiting_answer: None,
                        client_next,
                        last_seen: old.and_then(|e| e.last_seen),
                        seen_noted: old.is_none_or(|e| e.seen_noted),
                    };
                    self.fast_path
                        .insert((*h.flow.client.ip(), h.flow.client.port()), entry);
                }
                Event::Closed { flow, .. } | Event::Reset { flow, .. } => {
                    self.fast_path
                        .remove(&(*flow.client.ip(), flow.client.port()));
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
            return Some(pkt);
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        // The program's own decision (the simulation's segments carry complete
        // checksums and the ring never fills, so every segment not held is forwarded).
        let decision = decide_client_segment(
            entry.client_next,
            entry.awaiting_answer,
            ClientSegment {
                seq: info.seq,
                ack: info.ack,
                flags: pkt[ihl + 13],
                payload_len: info.payload_len as u32,
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
            client: SocketAddrV4::new(info.src, info.sport),
            service: SocketAddrV4::new(info.dst, info.dport),
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
        let old = u32::from(info.dst);
        let new = u32::from(backend);
        let ip_check = u16::from_be_bytes([pkt[10], pkt[11]]);
        let tcp_check = u16::from_be_bytes([pkt[ihl + 16], pkt[ihl + 17]]);
        pkt[10..12].copy_from_slice(&csum_replace4(ip_check, old, new).to_be_bytes());
        pkt[ihl + 16..ihl + 18].copy_from_slice(&csum_replace4(tcp_check, old, new).to_be_bytes());
        pkt[16..20].copy_from_slice(&backend.octets());
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
                client: SocketAddrV4::new(ip, port),
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
        if !self.fe.wants_syn_cookies(true) {
            return Some(pkt);
        }
        // SYN, FIN, RST, ACK: the bits that tell a bare SYN or a bare ACK.
        let control = info.flags.bits() & 0x17;
        let flow =
            syncookie::flow_bytes(info.src.octets(), info.dst.octets(), info.sport, info.dport);
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
                    client: SocketAddrV4::new(info.src, info.sport),
                    service: SocketAddrV4::new(info.dst, info.dport),
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
                client_addr: info.src.octets(),
                service_addr: info.dst.octets(),
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
