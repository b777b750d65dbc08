//! Per-connection state and the rules each state applies to segments and timers.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use baton_common::{
    frontend::{FlowNotice, acknowledges_backend_data, judge_client_segment},
    handoff_option::{HandoffBinding, HandoffBindingV6, HandoffOption},
    stamp::{self, StampedFlow},
    syn_prime::{
        SYN_PRIME_HEADERS_LEN, SynPrime, payload_sum, window_in_syn, write_syn_prime_headers,
    },
    syncookie::{self, KeptOptions, SynOptions, decode_ts_options},
};

use super::config::{MAX_CANDIDATES, MIN_MSS};
use super::packet::{self, bare_segment, seq_le, seq_lt, with_timestamps};
use super::{
    Backend, Dispatch, Event, Feedback, FlowBytes, FlowKey, FrontEnd, HalfOpenSyns, HandedOff,
    HandoffFailure, Handover, Instant, KernelHandoff, ResetReason, SynCookieConfig,
};
use crate::request::{ClientRequest, parse_request};
use crate::wire::{Checksums, IpRepr, TcpFlags, TcpRepr, TcpTimestamps};

/// Where a connection is, as [`FrontEnd::connection_state`] reports it.
///
/// | state | entered on | timer | leaves on |
/// |---|---|---|---|
/// | `SynReceived` | client SYN, SYN/ACK sent | SYN/ACK retransmission, doubling (RFC 6298 §5) | the handshake's ACK; RST; timeout → reset |
/// | `Receiving` | the handshake's ACK (or a valid cookie ACK) | request timeout (slowloris) | a complete head → dispatch; error → response or reset; FIN/RST → freed |
/// | `HandingOffSynSent` | dispatch chose a back-end, SYN' sent | SYN' retransmission, doubling | SYN/ACK' → request sent (its first segment is the ACK'); exhausted or RST → next candidate |
/// | `HandingOffRequestSent` | valid SYN/ACK' | request retransmission, doubling | back-end's ACK of the request's last byte → handed off |
/// | `Forwarding` | handoff confirmed | idle timeout | the client's FIN, or a RST either way → grace |
/// | `Closing` | error response (with FIN) sent | response retransmission | client ACKs the FIN → grace; exhausted → reset |
/// | `TimeWait` | close or reset observed | grace period: once handed off, ends only when the client has been quiet that long | timer → freed, `Closed`/`Reset` event |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateName {
    /// SYN/ACK sent, awaiting the handshake's ACK.
    SynReceived,
    /// Established with the client, buffering its request head.
    Receiving,
    /// SYN' sent to a back-end, awaiting its SYN/ACK'.
    HandingOffSynSent,
    /// Request sent (its first segment is the ACK'), awaiting the back-end's acknowledgement of the request.
    HandingOffRequestSent,
    /// Handed off: client packets go to the back-end.
    Forwarding,
    /// Error response and FIN sent, awaiting the client's acknowledgement.
    Closing,
    /// Closed or reset; lingering for late packets. Once handed off: the client has
    /// sent its FIN (the server may still be sending) or a RST went either way, and the
    /// client's segments are still forwarded until it has been quiet for the grace
    /// period.
    TimeWait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    SynSent,
    RequestSent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Closed,
    Reset(ResetReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    SynReceived,
    Receiving,
    HandingOff(Phase),
    Forwarding,
    Closing,
    TimeWait(Outcome),
}

/// What a handler wants done with the connection it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Put it back.
    Keep,
    /// Free it.
    Free,
    /// Free it, then handle the segment again as one for an unknown flow (a new SYN
    /// reusing the 4-tuple of a connection in its grace period).
    Replay,
}

/// What the front-end keeps of the client's SYN, to answer it and to replay it as the
/// SYN' (docs/design.md, "Packet walk", step 4). Only options the front-end agreed to are
/// replayed, so the back-end can never negotiate something the client does not know
/// about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSyn {
    /// The client's ISN.
    isn: u32,
    /// The SYN's window field (never scaled, RFC 7323 §2.2).
    window: u16,
    /// The client's MSS option, if any.
    mss: Option<u16>,
    /// The client's window shift, if it offered window scaling (the front-end always
    /// agrees).
    window_scale: Option<u8>,
    /// The SYN's TSval (the ACK's, after a cookie).
    tsval: u32,
    /// The SYN's TTL, replayed.
    ttl: u8,
}

/// The front-end's side of the handshake, as the client knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrontTerms {
    isn_f: u32,
    /// TSval of every segment the front-end sends the client: it never advances, so
    /// that the back-end's translated TSvals, which start again from `tsv_f`, never
    /// look older than one the client has seen (PAWS, RFC 7323 §5).
    tsv_f: u32,
    /// The shift announced, if window scaling was negotiated.
    ws_f: Option<u8>,
    timestamps: bool,
    sack: bool,
    /// ECN granted: the SYN/ACK carried ECE, and the SYN' carries ECE and CWR.
    ecn: bool,
}

/// One tracked connection. Its size is pinned by a test (see
/// [`super::CONNECTION_SIZE_BOUND`]); the heap holds only the request buffer and the
/// packets held during a handoff, both bounded by configuration.
pub(crate) struct Connection {
    pub(crate) flow: FlowKey,
    pub(crate) state: State,
    syn: ClientSyn,
    terms: FrontTerms,
    /// Next client sequence number expected; everything before it is buffered (before
    /// the handoff) and acknowledged.
    rcv_nxt: u32,
    /// From dispatch on: the client's next sequence number as the front-end has seen it,
    /// past the request, the segments held during the handoff and those forwarded after
    /// it (`judge_client_segment`). A client FIN or RST is acted on only at exactly this
    /// number, so a blind one cannot end the connection (RFC 5961).
    client_next: u32,
    /// Next sequence number the front-end sends the client.
    snd_nxt: u32,
    /// The client's latest TSval (TS.Recent, RFC 7323 §4.3): echoed to the client,
    /// replayed to the back-end.
    ts_recent: u32,
    /// The client's latest window field.
    client_window: u16,
    /// The back-end's MSS from its SYN/ACK'.
    backend_mss: u16,
    /// Retransmissions so far in the current state.
    tries: u8,
    /// Back-ends tried so far, `tried[..candidates]`; the last is the current one.
    candidates: u8,
    pub(crate) handed_off: bool,
    /// The client's FIN has been seen (at exactly the expected number): after the
    /// handoff, the connection is in its grace period.
    client_fin: bool,
    /// The dispatched request is not acknowledged yet: the back-end's first segment
    /// acknowledges it, straight to the client, and the front-end only does so itself if
    /// the handoff's first timer fires first (see `receive_request`).
    ack_owed: bool,
    /// The request rode in the SYN' to the current back-end (the one-turn handoff).
    request_in_syn: bool,
    tried: [Option<Backend>; MAX_CANDIDATES],
    /// Current retransmission timeout.
    rto: Duration,
    /// The armed deadline, mirrored in the front-end's timer set.
    pub(crate) timer: Option<Instant>,
    /// When a packet of the flow was last seen (by the slow path, or by the fast path as
    /// the daemon reports). The idle timer and, once handed off, the grace period's are
    /// armed lazily: each fires at most once per period and re-arms itself from this,
    /// rather than every packet moving it.
    pub(crate) last_heard: Instant,
    /// The error response being delivered in `Closing`: shared with the front-end, so
    /// that a new 503 body (a reload) never changes bytes already sent.
    response: Option<Arc<[u8]>>,
    /// The client's bytes, up to the request limit; released at the handoff.
    request: Vec<u8>,
    /// Client packets held during the handoff, in arrival order.
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
}

impl Connection {
    /// The client's ISN.
    pub(crate) fn client_isn(&self) -> u32 {
        self.syn.isn
    }

    /// Whether the request went to the current back-end: in the SYN', or after its
    /// SYN/ACK'.
    fn request_out(&self) -> bool {
        self.request_in_syn || self.state == State::HandingOff(Phase::RequestSent)
    }

    fn new(flow: FlowKey, state: State, syn: ClientSyn, terms: FrontTerms) -> Self {
        Self {
            flow,
            state,
            syn,
            terms,
            rcv_nxt: syn.isn.wrapping_add(1),
            client_next: syn.isn.wrapping_add(1),
            snd_nxt: terms.isn_f.wrapping_add(1),
            ts_recent: syn.tsval,
            client_window: syn.window,
            backend_mss: MIN_MSS,
            tries: 0,
            candidates: 0,
            handed_off: false,
            ack_owed: false,
            request_in_syn: false,
            client_fin: false,
            tried: [None; MAX_CANDIDATES],
            rto: Duration::ZERO,
            timer: None,
            last_heard: Instant::ZERO,
            response: None,
            request: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// A connection handed off by another front-end, rebuilt from its [`Handover`]
    /// (see [`FrontEnd::adopt`]).
    ///
    /// Only what a handed-off connection still reads is real: the back-end (forwarding,
    /// events), the client's ISN (the grace period's test for a new SYN on the 4-tuple),
    /// whether the client's FIN was seen, and the state. The rest of the client's SYN and the
    /// front-end's terms (`isn_f`, `tsv_f`, window scale, SACK) are known only to the
    /// previous front-end and are zeroed, which is safe because after a handoff the
    /// front-end never builds a segment of its own for the connection: it only forwards
    /// the client's (the SYN/ACK, ACKs, error responses, resets and the SYN' are all
    /// reachable only before the handoff or in `Closing`, which a handed-off connection
    /// never enters), and its idle timeout and grace period free it silently. `rcv_nxt`
    /// (the client ISN + 1, as [`Connection::new`] sets it) is read only before the
    /// handoff and in a close the front-end makes itself.
    pub(crate) fn adopted(flow: FlowKey, handover: &Handover, ttl: u8) -> Self {
        let syn = ClientSyn {
            isn: handover.client_isn,
            window: 0,
            mss: None,
            window_scale: None,
            tsval: 0,
            ttl,
        };
        let terms = FrontTerms {
            isn_f: 0,
            tsv_f: 0,
            ws_f: None,
            timestamps: false,
            sack: false,
            ecn: false,
        };
        let state = match handover.reset {
            Some(reason) => State::TimeWait(Outcome::Reset(reason)),
            None if handover.client_fin => State::TimeWait(Outcome::Closed),
            None => State::Forwarding,
        };
        let mut conn = Self::new(flow, state, syn, terms);
        conn.client_next = handover.client_next;
        conn.handed_off = true;
        conn.tried[0] = Some(handover.backend);
        conn.candidates = 1;
        conn.client_fin = handover.client_fin;
        conn
    }

    /// What another front-end needs to adopt this connection, once it is handed off.
    pub(crate) fn handover(&self) -> Option<Handover> {
        if !self.handed_off {
            return None;
        }
        let reset = match self.state {
            State::Forwarding | State::TimeWait(Outcome::Closed) => None,
            State::TimeWait(Outcome::Reset(reason)) => Some(reason),
            _ => return None,
        };
        Some(Handover {
            backend: self.backend()?,
            client_isn: self.syn.isn,
            client_next: self.client_next,
            client_fin: self.client_fin,
            reset,
        })
    }

    /// In the grace period, whether the client was heard after its timer was armed
    /// (which was `time_wait` after the client's last segment then): its grace period
    /// will go on when the timer fires, so it is not one to end for a new connection.
    pub(crate) fn heard_during_grace(&self, time_wait: Duration) -> bool {
        self.timer
            .is_some_and(|deadline| self.last_heard + time_wait > deadline)
    }

    pub(crate) fn state_name(&self) -> StateName {
        match self.state {
            State::SynReceived => StateName::SynReceived,
            State::Receiving => StateName::Receiving,
            State::HandingOff(Phase::SynSent) => StateName::HandingOffSynSent,
            State::HandingOff(Phase::RequestSent) => StateName::HandingOffRequestSent,
            State::Forwarding => StateName::Forwarding,
            State::Closing => StateName::Closing,
            State::TimeWait(_) => StateName::TimeWait,
        }
    }

    /// The back-end currently (or last) chosen.
    fn backend(&self) -> Option<Backend> {
        self.candidates
            .checked_sub(1)
            .and_then(|i| self.tried.get(usize::from(i)).copied().flatten())
    }

    /// The client's latest window as a SYN' announces it ([`window_in_syn`]); its shift
    /// applies only if both sides sent the option (RFC 7323 §2.2).
    fn window_in_syn(&self) -> u16 {
        let shift = self.terms.ws_f.and(self.syn.window_scale);
        window_in_syn(self.client_window, shift)
    }

    fn tsopt(&self) -> Option<(u32, u32)> {
        self.terms
            .timestamps
            .then_some((self.terms.tsv_f, self.ts_recent))
    }
}

/// Responses for requests that cannot be handed off. `Connection: close`: the front-end
/// closes right after (RFC 9110 §15.5.1, §15.6.4; RFC 6585 §5). Each goes out as one
/// segment with the FIN, which is why the 503's configurable body is bounded by
/// [`super::MAX_UNAVAILABLE_BODY`].
const RESPONSE_400: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The error responses, built once (the 503 again when its body changes).
pub(crate) struct Responses {
    bad_request: Arc<[u8]>,
    too_large: Arc<[u8]>,
    unavailable: Arc<[u8]>,
}

impl Responses {
    pub(crate) fn new() -> Self {
        Self {
            bad_request: RESPONSE_400.into(),
            too_large: RESPONSE_431.into(),
            unavailable: unavailable_response(b"").into(),
        }
    }

    pub(crate) fn set_unavailable_body(&mut self, body: &[u8]) {
        self.unavailable = unavailable_response(body).into();
    }
}

/// `503 Service Unavailable` with `body` (HTML, as HAProxy's and nginx's error pages).
fn unavailable_response(body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(128 + body.len());
    r.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\n");
    if !body.is_empty() {
        r.extend_from_slice(b"Content-Type: text/html; charset=utf-8\r\n");
    }
    r.extend_from_slice(
        format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    r.extend_from_slice(body);
    r
}

/// Whether the client's SYN asks for ECN in a way a server grants: the one definition the
/// fast path's cookie SYN/ACKs use too.
fn ecn_setup(ip: &IpRepr, tcp: &TcpRepr<'_>) -> bool {
    syncookie::ecn_setup_syn(tcp.flags.bits() as u8, ip.dscp_ecn())
}

/// The client's SYN as the choice of options ([`syncookie::agreed_options`]) reads it.
fn syn_options(ip: &IpRepr, tcp: &TcpRepr<'_>) -> SynOptions {
    SynOptions {
        mss: tcp.max_seg_size,
        window_scale: tcp.window_scale,
        sack_permitted: tcp.sack_permitted,
        tsval: tcp.timestamps.map(|ts| ts.tsval),
        ecn_setup: ecn_setup(ip, tcp),
    }
}

/// What the request parser and the dispatcher made of the buffer.
enum Decision {
    NeedMore,
    Dispatched { tls: bool, backend: Option<Backend> },
    Refused(Option<u16>),
}

/// Whether `tcp` is a bare SYN with another ISN than `conn`'s own: a new connection on
/// the 4-tuple, not the old connection's SYN repeated (only that one repeats its ISN).
/// The callers let it end a handed-off connection only after an accepted FIN or RST.
fn opens_a_new_connection(conn: &Connection, tcp: &TcpRepr<'_>) -> bool {
    tcp.flags.contains(TcpFlags::SYN)
        && !tcp.flags.contains(TcpFlags::ACK)
        && tcp.seq_number != conn.syn.isn
}

impl<D: Dispatch> FrontEnd<D> {
    // ----- client segments -----

    /// Whether `tcp`, on the 4-tuple of `conn` (handed off and closed, in its grace
    /// period), is the first segment of a new connection whose SYN the fast path answered
    /// with a cookie: an ACK without SYN or RST, for another ISN than `conn`'s, whose
    /// acknowledgement is a valid cookie. Only the client can send it (the cookie is
    /// keyed and bound to the 4-tuple and ISN), and only after its old connection ended.
    fn answered_new_connection(&self, now: Instant, conn: &Connection, tcp: &TcpRepr<'_>) -> bool {
        let client_isn = tcp.seq_number.wrapping_sub(1);
        self.config.syn_cookies
            && tcp.flags.contains(TcpFlags::ACK)
            && !tcp.flags.contains(TcpFlags::SYN)
            && !tcp.flags.contains(TcpFlags::RST)
            && client_isn != conn.syn.isn
            && self
                .secrets
                .check_cookie(now, &conn.flow, client_isn, tcp.ack_number.wrapping_sub(1))
                .is_some()
    }

    pub(super) fn on_client_segment(
        &mut self,
        now: Instant,
        flow: FlowKey,
        ip: &IpRepr,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
        syns: &mut dyn HalfOpenSyns,
    ) {
        if tcp.flags.contains(TcpFlags::SYN) && tcp.flags.contains(TcpFlags::FIN) {
            // No SYN may carry a FIN: Linux drops such a segment unanswered, whatever the
            // socket's state (`tcp_rcv_state_process`, `tcp_validate_incoming`), and so
            // does the front-end, before it can open or touch a connection.
            self.stats.syn_fin_dropped += 1;
            return;
        }
        let Some(slot) = self.slot_of(&flow) else {
            self.on_unknown_client_segment(now, flow, ip, tcp, raw, syns);
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        match self.client_segment(now, slot, &mut conn, tcp, raw) {
            Next::Keep => self.put(slot, conn),
            Next::Free => self.release(slot, conn),
            Next::Replay => {
                self.release(slot, conn);
                self.on_unknown_client_segment(now, flow, ip, tcp, raw, syns);
            }
        }
    }

    fn on_unknown_client_segment(
        &mut self,
        now: Instant,
        flow: FlowKey,
        ip: &IpRepr,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
        syns: &mut dyn HalfOpenSyns,
    ) {
        let flags = tcp.flags;
        if flags.contains(TcpFlags::RST) {
            // Never answer a RST (RFC 9293 §3.10.7.1).
            self.stats.stray_segments += 1;
            return;
        }
        if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) {
            self.on_syn(now, flow, ip, tcp);
            return;
        }
        if flags.contains(TcpFlags::ACK)
            && !flags.contains(TcpFlags::SYN)
            && self.config.syn_cookies
            && self.on_cookie_ack(now, flow, ip, tcp, raw, syns)
        {
            return;
        }
        self.stats.stray_segments += 1;
        if flags.contains(TcpFlags::ACK)
            && !flags.contains(TcpFlags::SYN)
            && tcp.timestamps.is_none()
            && self.probes.enabled()
        {
            // No stamp to forward it by: perhaps a flow the routers moved here from
            // another front-end, whose client sends no timestamps. The back-end that
            // holds it claims it to the fast path; a reset would end it.
            if self.outputs.len() >= self.config.max_pending_outputs {
                self.stats.output_overflows += 1;
            } else if raw.len() <= baton_common::claim::MAX_PROBED_PACKET
                && self.probes.take(now.as_nanos())
            {
                self.stats.probes_sent += 1;
                self.outputs.push_back(super::Output::Probe(raw.to_vec()));
            } else {
                self.stats.probes_over_limit += 1;
            }
            return;
        }
        if self.config.every_syn_in_fast_path && flags.contains(TcpFlags::ACK) {
            // Every connection starts from a cookie, which only a segment at the
            // client's ISN + 1 brings back: one past a lost first segment (the client's
            // next data, or its ACK of a repeated SYN/ACK) fails the check, yet belongs
            // to a live connection that the retransmission of that first segment will
            // start. A reset would end it; dropped, the client resends.
            self.stats.stray_dropped_for_cookies += 1;
            return;
        }
        self.send_stray_reset(flow, tcp);
    }

    /// A SYN for a new connection (docs/design.md, "Packet walk", step 1).
    fn on_syn(&mut self, now: Instant, flow: FlowKey, ip: &IpRepr, tcp: &TcpRepr<'_>) {
        self.stats.syns_received += 1;
        // Data in a SYN (TCP Fast Open, RFC 7413) is not acknowledged; the client sends
        // it again after the handshake (RFC 7413 §4.2.2: fall back to a regular
        // handshake when the SYN/ACK does not acknowledge the data).
        // The options the fast path's cookie SYN/ACKs offer too: one choice.
        let agreed = syncookie::agreed_options(
            self.option_flags(),
            self.config.window_shift,
            &syn_options(ip, tcp),
        );
        if self.half_open >= self.config.max_half_open || !self.make_room(now) {
            if self.config.syn_cookies {
                self.send_cookie_syn_ack(now, flow, ip, tcp);
            } else {
                self.stats.syns_dropped_table_full += 1;
            }
            return;
        }
        let Some(slot) = self.allocate() else {
            self.stats.syns_dropped_table_full += 1;
            return;
        };
        let syn = ClientSyn {
            isn: tcp.seq_number,
            window: tcp.window_len,
            mss: tcp.max_seg_size,
            window_scale: tcp.window_scale,
            tsval: tcp.timestamps.map_or(0, |ts| ts.tsval),
            ttl: ip.ttl(),
        };
        let timestamps = agreed.timestamps.is_some();
        let terms = FrontTerms {
            isn_f: self.secrets.isn(now, &flow),
            tsv_f: if timestamps {
                self.secrets.tsval(now, &flow)
            } else {
                0
            },
            ws_f: agreed.window_shift,
            timestamps,
            sack: agreed.sack,
            ecn: agreed.ecn,
        };
        let mut conn = Connection::new(flow, State::SynReceived, syn, terms);
        conn.rto = self.config.syn_ack_rto;
        self.send_syn_ack(&conn.flow, &conn.syn, &conn.terms);
        self.stats.syn_acks_sent += 1;
        let deadline = now + conn.rto;
        self.arm(slot, &mut conn, deadline);
        self.insert(slot, conn);
    }

    /// A stateless SYN/ACK whose ISN is a SYN cookie (RFC 4987 §3.6); see
    /// [`super::cookie`] for what it keeps of the SYN.
    fn send_cookie_syn_ack(&mut self, now: Instant, flow: FlowKey, ip: &IpRepr, tcp: &TcpRepr<'_>) {
        // The same decisions as the fast path's cookie SYN/ACKs: one definition. The core
        // keeps no half-open map of its own: a client without timestamps gets the
        // cookie's terms here (the XDP program's answers, with its map, are the common
        // case; this one is for the SYNs it passes up).
        let config = self.syn_cookie_config();
        let options = syn_options(ip, tcp);
        if syncookie::agreed_options(config.flags, config.window_shift, &options)
            .need_the_half_open_map()
        {
            self.stats.syn_cookies_without_options += 1;
        }
        let answer = match flow.to_bytes() {
            FlowBytes::V4(bytes) => syncookie::cookie_syn_ack(
                &config,
                now.as_nanos(),
                &bytes,
                tcp.seq_number,
                &options,
                false,
            ),
            // IPv6: the 36-byte flow, whose hashes carry Linux's IPv6 MSS table, and the
            // MSS an IPv6 client is announced (`Config::mss_for`).
            FlowBytes::V6(bytes) => {
                let config = SynCookieConfig {
                    max_mss: self.config.mss_for(true),
                    ..config
                };
                let hashes =
                    syncookie::cookie_hashes(&config.keys, now.as_nanos(), &bytes, tcp.seq_number);
                syncookie::cookie_syn_ack_with(
                    &config,
                    &hashes,
                    now.as_nanos(),
                    tcp.seq_number,
                    &options,
                    false,
                )
            }
        };
        let syn = ClientSyn {
            isn: tcp.seq_number,
            window: tcp.window_len,
            // RFC 9293 §3.7.1: without an MSS option, assume 536.
            mss: Some(tcp.max_seg_size.unwrap_or(MIN_MSS)),
            window_scale: tcp.window_scale,
            tsval: tcp.timestamps.map_or(0, |ts| ts.tsval),
            ttl: ip.ttl(),
        };
        let terms = FrontTerms {
            isn_f: answer.isn,
            tsv_f: answer.timestamps.map_or(0, |(tsv, _)| tsv),
            ws_f: answer.window_shift,
            timestamps: answer.timestamps.is_some(),
            sack: answer.sack,
            ecn: answer.ecn,
        };
        self.send_syn_ack(&flow, &syn, &terms);
        self.stats.syn_acks_sent += 1;
        self.stats.syn_cookies_sent += 1;
    }

    /// An ACK for no known flow: if it carries a valid SYN cookie, the connection is
    /// rebuilt and the segment processed. Returns whether it was a valid cookie.
    ///
    /// What the SYN/ACK agreed to beyond the MSS comes back in the ACK's TSecr, or, for a
    /// cookie the fast path marked (a client without timestamps), from its half-open map
    /// (`syns`), bound to the client's ISN. A marked cookie whose entry is gone (the map's
    /// LRU evicted it) or is another connection's (another ISN: a stale ACK of an earlier
    /// connection on the ports, whose taking costs the newer one its entry too) is reset
    /// ([`super::Stats::half_open_entries_lost`]): the client scales every window it
    /// announces by a shift only the entry knew, and a connection built without it
    /// would hand the back-end terms the client never agreed to. The reset answers a
    /// segment whose cookie verified, as RFC 9293 §3.10.7.1 answers one of no connection
    /// (`<SEQ=SEG.ACK><CTL=RST>`; RFC 5961 is about the resets a host accepts, and a blind
    /// sender still has to guess the cookie); the client learns at once, where a silent
    /// drop would leave it resending its request until it gives up.
    fn on_cookie_ack(
        &mut self,
        now: Instant,
        flow: FlowKey,
        ip: &IpRepr,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
        syns: &mut dyn HalfOpenSyns,
    ) -> bool {
        let client_isn = tcp.seq_number.wrapping_sub(1);
        let isn_f = tcp.ack_number.wrapping_sub(1);
        let Some(cookie) = self.secrets.check_cookie(now, &flow, client_isn, isn_f) else {
            return false;
        };
        self.stats.syn_cookies_accepted += 1;
        self.make_room(now);
        let Some(slot) = self.allocate() else {
            // The client believes it is connected; its retransmissions retry this (the
            // half-open map's entry, if any, still waits for them).
            self.stats.cookie_acks_dropped_table_full += 1;
            return true;
        };
        // Timestamps agreed: the ACK's TSecr is the SYN/ACK's TSval, which kept the rest.
        let timestamps = tcp
            .timestamps
            .filter(|_| self.config.timestamps && !cookie.syn_in_map);
        let (kept, mss, syn_window) = if cookie.syn_in_map {
            match syns.take(&flow) {
                Some(entry) if entry.client_isn == client_isn => {
                    self.stats.half_open_entries_used += 1;
                    (entry.kept(), entry.mss, Some(entry.window))
                }
                _ => {
                    self.stats.half_open_entries_lost += 1;
                    self.free.push(slot);
                    self.send_reset(flow, tcp);
                    return true;
                }
            }
        } else if let Some(ts) = timestamps {
            (decode_ts_options(ts.tsecr), cookie.mss, None)
        } else {
            (KeptOptions::NONE, cookie.mss, None)
        };
        // ECN only if it is still enabled, as SACK (Linux's `cookie_ecn_ok`).
        let (window_scale, sack, ecn) = (
            kept.window_scale,
            kept.sack && self.config.sack,
            kept.ecn && self.config.ecn,
        );
        // The SYN's window is unscaled; the ACK's is scaled by the client's shift. The
        // half-open map kept the SYN's own.
        let window = syn_window.unwrap_or(
            (u32::from(tcp.window_len) << window_scale.unwrap_or(0).min(14))
                .min(u32::from(u16::MAX)) as u16,
        );
        let syn = ClientSyn {
            isn: client_isn,
            window,
            mss: Some(mss),
            window_scale,
            tsval: timestamps.map_or(0, |ts| ts.tsval),
            ttl: ip.ttl(),
        };
        let terms = FrontTerms {
            isn_f,
            tsv_f: timestamps.map_or(0, |ts| ts.tsecr),
            ws_f: window_scale.map(|_| self.config.window_shift),
            timestamps: timestamps.is_some(),
            sack,
            ecn,
        };
        let mut conn = Connection::new(flow, State::Receiving, syn, terms);
        self.stats.handshakes_completed += 1;
        self.arm(slot, &mut conn, now + self.config.request_timeout);
        match self.client_segment(now, slot, &mut conn, tcp, raw) {
            Next::Keep => self.insert(slot, conn),
            Next::Free | Next::Replay => {
                if let Some(deadline) = conn.timer {
                    self.timers.remove(&(deadline, slot));
                }
                self.free.push(slot);
            }
        }
        true
    }

    fn client_segment(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
    ) -> Next {
        match conn.state {
            State::SynReceived | State::Receiving => {
                self.client_before_dispatch(now, slot, conn, tcp, raw)
            }
            State::HandingOff(phase) => {
                self.client_during_handoff(now, slot, conn, phase, tcp, raw)
            }
            State::Forwarding => self.client_after_handoff(now, slot, conn, tcp, raw),
            State::TimeWait(_) if conn.handed_off && opens_a_new_connection(conn, tcp) => {
                // A new connection on the 4-tuple of one whose client has closed (its FIN
                // at exactly the expected number: a blind FIN does not count, RFC 5961)
                // or that was reset: a client that closed second reuses its port at once
                // (Connection: close under load). Forwarded to the old back-end it would
                // meet that socket's TIME-WAIT, so the grace period ends here and the SYN
                // starts a handshake of its own (RFC 9293 section 3.10.7.4).
                self.stats.time_wait_reused += 1;
                self.finish(now, conn, Outcome::Closed);
                Next::Replay
            }
            State::TimeWait(_)
                if conn.handed_off && self.answered_new_connection(now, conn, tcp) =>
            {
                // The same, when the fast path answered the new connection's SYN itself
                // (`FrontendFlow::replaced_by_syn`, the same judgement on the close state
                // the daemon recorded): its first segment after the handshake, or its
                // request handed off in the kernel, brings back a cookie for another ISN.
                self.stats.time_wait_reused += 1;
                self.stats.time_wait_reused_by_fast_path += 1;
                self.finish(now, conn, Outcome::Closed);
                Next::Replay
            }
            State::TimeWait(_) if conn.handed_off => {
                self.client_after_handoff(now, slot, conn, tcp, raw)
            }
            State::Closing | State::TimeWait(_) => self.client_while_closing(now, slot, conn, tcp),
        }
    }

    /// A client RST before the handoff completed (RFC 5961 §3.2): at exactly the next
    /// sequence number expected it frees everything (and resets the back-end, if a
    /// handoff was under way); elsewhere in the window it draws a challenge ACK, which a
    /// real client answers with a RST at the right number, and changes nothing; out of
    /// the window it is dropped. In SYN-RECEIVED an in-window one is dropped without a
    /// challenge: the SYN/ACK's retransmission already tells the client where it is.
    fn client_reset_before_handoff(
        &mut self,
        now: Instant,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
    ) -> Next {
        let expected = self.expected_client_seq(conn);
        if tcp.seq_number == expected {
            self.stats.client_resets_before_handoff += 1;
            return self.abort(now, conn, ResetReason::ClientReset, false);
        }
        let window = self.config.max_request_len.max(1) as u32;
        if seq_lt(expected, tcp.seq_number)
            && seq_lt(tcp.seq_number, expected.wrapping_add(window))
            && conn.state != State::SynReceived
        {
            self.stats.client_resets_challenged += 1;
            self.send_ack(conn);
            return Next::Keep;
        }
        self.stats.client_resets_ignored += 1;
        Next::Keep
    }

    /// The client sequence number a RST must carry to be acted on: `rcv_nxt` while the
    /// front-end receives the request, [`Connection::client_next`] from dispatch on.
    fn expected_client_seq(&self, conn: &Connection) -> u32 {
        match conn.state {
            State::SynReceived | State::Receiving => conn.rcv_nxt,
            _ => conn.client_next,
        }
    }

    /// Judges a client segment of a connection past dispatch by its sequence number
    /// (`judge_client_segment`, the fast path's arithmetic): moves `client_next` on and
    /// says which close, if any, to act on, counting the ones ignored.
    fn judge_client(&mut self, conn: &mut Connection, tcp: &TcpRepr<'_>) -> u32 {
        let verdict = judge_client_segment(
            conn.client_next,
            tcp.seq_number,
            tcp.payload.len() as u32,
            tcp.flags.contains(TcpFlags::FIN),
            tcp.flags.contains(TcpFlags::RST),
        );
        conn.client_next = verdict.client_next;
        if verdict.ignored_close {
            if tcp.flags.contains(TcpFlags::RST) {
                self.stats.client_resets_ignored += 1;
            } else {
                self.stats.client_fins_ignored += 1;
            }
        }
        verdict.close
    }

    /// SYN-RECEIVED and ESTABLISHED before dispatch (docs/design.md, "Packet walk", steps 2 and 3).
    fn client_before_dispatch(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
    ) -> Next {
        let flags = tcp.flags;
        if flags.contains(TcpFlags::RST) {
            return self.client_reset_before_handoff(now, conn, tcp);
        }
        if flags.contains(TcpFlags::SYN) {
            if tcp.seq_number == conn.syn.isn && !flags.contains(TcpFlags::ACK) {
                // A retransmitted SYN: our SYN/ACK or the client's ACK was lost. Repeat
                // ourselves (RFC 9293 §3.10.7.4).
                if conn.state == State::SynReceived {
                    self.send_syn_ack(&conn.flow, &conn.syn, &conn.terms);
                    self.stats.syn_ack_retransmits += 1;
                } else {
                    self.send_ack(conn);
                }
            } else {
                self.stats.unacceptable_segments += 1;
            }
            return Next::Keep;
        }
        if !flags.contains(TcpFlags::ACK) {
            self.stats.unacceptable_segments += 1;
            return Next::Keep;
        }
        if tcp.ack_number != conn.snd_nxt {
            if conn.state == State::SynReceived
                && self.config.syn_cookies
                && tcp.seq_number.wrapping_sub(1) == conn.syn.isn
                && self
                    .secrets
                    .check_cookie(
                        now,
                        &conn.flow,
                        conn.syn.isn,
                        tcp.ack_number.wrapping_sub(1),
                    )
                    .is_some()
            {
                // The client's SYN was answered twice: by us with state, then (its
                // retransmission) by the fast path with a cookie, engaged meanwhile, and
                // the cookie's answer arrived first. Its ACK is good: start over from it.
                return Next::Replay;
            }
            self.stats.unacceptable_segments += 1;
            if conn.state == State::SynReceived {
                // RFC 9293 §3.10.7.4: an unacceptable ACK in SYN-RECEIVED draws
                // <SEQ=SEG.ACK><CTL=RST>.
                self.send_stray_reset(conn.flow, tcp);
            } else {
                self.send_ack(conn);
            }
            return Next::Keep;
        }
        if conn.state == State::SynReceived {
            conn.state = State::Receiving;
            self.half_open = self.half_open.saturating_sub(1);
            self.update_gauges();
            self.stats.handshakes_completed += 1;
            self.arm(slot, conn, now + self.config.request_timeout);
        }
        // RFC 7323 §4.3: TS.Recent takes the TSval of a segment that covers RCV.NXT.
        if let Some(ts) = tcp.timestamps
            && seq_le(tcp.seq_number, conn.rcv_nxt)
        {
            conn.ts_recent = ts.tsval;
        }
        conn.client_window = tcp.window_len;
        self.receive_request(now, slot, conn, tcp, raw)
    }

    /// Buffers in-order request bytes, then asks whether the head is complete.
    fn receive_request(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
    ) -> Next {
        let payload = tcp.payload;
        let fin = tcp.flags.contains(TcpFlags::FIN);
        if payload.is_empty() && !fin {
            return Next::Keep;
        }
        if seq_lt(conn.rcv_nxt, tcp.seq_number) {
            // A gap: the front-end keeps no out-of-order data (at most 16 KiB arrive
            // before dispatch, and the client's SACK or RTO resends the hole). A
            // duplicate ACK tells the client where the hole starts (RFC 9293 §3.10.7.4).
            self.stats.out_of_order_dropped += 1;
            self.send_ack(conn);
            return Next::Keep;
        }
        let skip = conn.rcv_nxt.wrapping_sub(tcp.seq_number) as usize;
        let Some(new) = payload.get(skip..) else {
            // Entirely old: our ACK was lost; repeat it.
            self.send_ack(conn);
            return Next::Keep;
        };
        let room = self
            .config
            .max_request_len
            .saturating_sub(conn.request.len());
        let take = new.len().min(room);
        if take < new.len() {
            // Past the window the front-end announced; the client should not send it.
            self.stats.request_bytes_trimmed += (new.len() - take) as u64;
        }
        let fin_in_order = fin && take == new.len();
        if take == 0 {
            if fin_in_order {
                self.stats.client_early_closes += 1;
                return self.abort(now, conn, ResetReason::ClientClosedEarly, true);
            }
            self.send_ack(conn);
            return Next::Keep;
        }
        let was_empty = conn.request.is_empty();
        conn.request.extend_from_slice(&new[..take]);
        conn.rcv_nxt = conn.rcv_nxt.wrapping_add(take as u32);
        let decision = if self.worth_parsing(conn, was_empty, &new[..take]) {
            self.decide(now, conn)
        } else {
            Decision::NeedMore
        };
        match decision {
            Decision::NeedMore => {
                if fin_in_order {
                    // Half-closed before the head was complete: no request will come.
                    self.stats.client_early_closes += 1;
                    return self.abort(now, conn, ResetReason::ClientClosedEarly, true);
                }
                self.send_ack(conn);
                Next::Keep
            }
            Decision::Refused(Some(status)) => self.respond(now, slot, conn, status),
            Decision::Refused(None) => {
                // TLS, malformed: an HTTP answer means nothing to a TLS client.
                self.stats.tls_resets += 1;
                self.abort(now, conn, ResetReason::MalformedTls, true)
            }
            Decision::Dispatched { tls, backend } => {
                match backend {
                    Some(backend) => {
                        // From here on the client's sequence space is judged against
                        // `client_next` (the request's end, and its FIN if it came with
                        // it: in order, so acted on).
                        conn.client_next = conn.rcv_nxt.wrapping_add(u32::from(fin_in_order));
                        conn.client_fin = fin_in_order;
                        // The back-end acknowledges the request, to the client directly,
                        // within a round trip on the LAN, so an ACK from here now would
                        // be a frame more per connection for nothing (RFC 9293 §3.8.6.3
                        // lets an ACK wait up to 500 ms). If the handoff's first timer
                        // fires first, the ACK goes then (`pay_owed_ack`), before the
                        // client's own retransmission timer (200 ms at least) has cost
                        // more than a segment.
                        conn.ack_owed = true;
                        self.start_handoff(now, slot, conn, backend);
                        if fin_in_order {
                            // The client half-closed right after its request: the FIN is
                            // the back-end's to acknowledge, so hold the segment for it.
                            self.hold(conn, raw);
                        }
                        Next::Keep
                    }
                    None if tls => {
                        self.stats.no_backend += 1;
                        self.stats.tls_resets += 1;
                        self.abort(now, conn, ResetReason::NoBackend, true)
                    }
                    None => {
                        self.stats.no_backend += 1;
                        self.respond(now, slot, conn, 503)
                    }
                }
            }
        }
    }

    /// Whether the new bytes can have completed or invalidated the head, so that parsing
    /// the whole buffer again is worth it. Without this a client sending one byte per
    /// segment would make the front-end parse 16 KiB thousands of times.
    fn worth_parsing(&self, conn: &Connection, was_empty: bool, new: &[u8]) -> bool {
        was_empty
            // A TLS record header says how much is needed: the parser stops early.
            || conn.request.first() == Some(&0x16)
            // An HTTP head ends with an empty line (RFC 9112 §2.1).
            || new.contains(&b'\n')
            || conn.request.len() >= self.config.max_request_len
    }

    /// The dispatcher's `choice`, unless it is of the other family than the client's
    /// (counted): a connection never mixes families, so such a back-end is no back-end.
    fn of_clients_family(&mut self, flow: &FlowKey, choice: Option<Backend>) -> Option<Backend> {
        match choice {
            Some(backend) if !flow.same_family(&backend) => {
                self.stats.backend_family_mismatches += 1;
                None
            }
            choice => choice,
        }
    }

    /// Parses the buffer and, when the head is complete, dispatches it.
    fn decide(&mut self, now: Instant, conn: &Connection) -> Decision {
        let limits = self.config.request_limits();
        match parse_request(&conn.request, &limits) {
            Ok(None) => Decision::NeedMore,
            Ok(Some(request)) => Decision::Dispatched {
                tls: matches!(request, ClientRequest::Tls(_)),
                backend: match self.kernel_handoff {
                    // The fast path decided and sent the SYN' (`adopt_kernel_handoff`):
                    // the dispatcher books its choice instead of making one.
                    KernelHandoff::Chosen(backend) => {
                        self.kernel_handoff = KernelHandoff::Sent;
                        self.dispatcher.assign(now, &conn.flow, &request, backend);
                        Some(backend)
                    }
                    _ => {
                        let choice = self.dispatcher.dispatch(now, &conn.flow, &request, &[]);
                        self.of_clients_family(&conn.flow, choice)
                    }
                },
            },
            Err(error) => Decision::Refused(error.http_status()),
        }
    }

    /// Client segments while a handoff is under way (docs/design.md, "Packet walk", step 7).
    fn client_during_handoff(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        phase: Phase,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
    ) -> Next {
        let flags = tcp.flags;
        if flags.contains(TcpFlags::RST) {
            return self.client_reset_before_handoff(now, conn, tcp);
        }
        if flags.contains(TcpFlags::SYN) {
            self.stats.unacceptable_segments += 1;
            return Next::Keep;
        }
        let data_end = tcp.seq_number.wrapping_add(tcp.payload.len() as u32);
        let new_data = !tcp.payload.is_empty() && seq_lt(conn.rcv_nxt, data_end);
        let fin = flags.contains(TcpFlags::FIN);
        // An acknowledgement of data past the SYN/ACK is of data only the back-end can
        // have sent: it has the request, whatever happened to its copy to us.
        let acks_backend_data = flags.contains(TcpFlags::ACK)
            && acknowledges_backend_data(conn.terms.isn_f, tcp.ack_number);
        if new_data || fin || acks_backend_data {
            // Bytes past the request are the back-end's to acknowledge: held, in order,
            // and flushed to it after the handoff.
            self.hold(conn, raw);
            if self.judge_client(conn, tcp) == FlowNotice::CLIENT_FIN {
                conn.client_fin = true;
            }
        } else if !tcp.payload.is_empty() && conn.request_in_syn {
            // Only the back-end acknowledges a request that rode in the SYN'. A resend
            // moves the handoff on (the SYN' again, and in the end another back-end), so
            // it counts only as the client's own: the whole request at exactly its
            // numbers, acknowledging the front-end's SYN/ACK; a blind segment would have
            // to guess the client's ISN (RFC 5961's bar). Anything else is dropped.
            if flags.contains(TcpFlags::ACK)
                && tcp.ack_number == conn.terms.isn_f.wrapping_add(1)
                && tcp.seq_number == conn.syn.isn.wrapping_add(1)
                && data_end == conn.rcv_nxt
            {
                return self.request_resent(now, slot, conn);
            }
            self.stats.unacceptable_segments += 1;
        } else if !tcp.payload.is_empty() {
            // Bytes the front-end already acknowledged (that ACK was lost), or has yet
            // to: the client's timer beat ours.
            self.send_ack(conn);
            conn.ack_owed = false;
        }
        if acks_backend_data && phase == Phase::RequestSent {
            match self.answer_sender(conn, tcp) {
                AnswerSender::Current => {}
                AnswerSender::Unverified => self.stats.unverified_answer_echoes += 1,
                AnswerSender::Earlier(index) => {
                    self.stats.earlier_backend_answers += 1;
                    self.take_earlier_backend(conn, index);
                }
            }
            return self.complete_handoff(now, slot, conn, false);
        }
        Next::Keep
    }

    /// Whose answer a client segment acknowledging back-end data acknowledges, by the
    /// stamp its TSecr echoes (docs/design.md, "The answer names its back-end"): the
    /// back-end tried whose id the stamp names and for whose flow its MAC checks.
    fn answer_sender(&self, conn: &Connection, tcp: &TcpRepr<'_>) -> AnswerSender {
        let current = usize::from(conn.candidates.saturating_sub(1));
        if current == 0 {
            return AnswerSender::Current;
        }
        let Some(stamp) = tcp
            .timestamps
            .filter(|_| conn.terms.timestamps)
            .and_then(|ts| stamp::stamp_of(ts.tsecr))
        else {
            return AnswerSender::Current;
        };
        // The stamp's MAC binds IPv4 addresses (`baton_common::stamp`); IPv6 back-ends
        // do not stamp yet, so an IPv6 answer is the current back-end's, as an unstamped
        // one is.
        let (IpAddr::V4(client_ip), IpAddr::V4(vip)) =
            (conn.flow.client.ip(), conn.flow.service.ip())
        else {
            return AnswerSender::Current;
        };
        let named = conn.tried.iter().enumerate().find_map(|(index, backend)| {
            let backend = (*backend)?;
            let IpAddr::V4(backend_ip) = backend.ip() else {
                return None;
            };
            let flow = StampedFlow {
                client_addr: client_ip.octets(),
                client_port: conn.flow.client.port(),
                vip_addr: vip.octets(),
                vip_port: conn.flow.service.port(),
                backend_addr: backend_ip.octets(),
                backend_port: backend.port(),
            };
            (stamp::id_of(stamp) == stamp::backend_id(flow.backend_addr)
                && stamp::verify(&self.secrets.handoff, &flow, stamp))
            .then_some(index)
        });
        match named {
            Some(index) if index == current => AnswerSender::Current,
            Some(index) => AnswerSender::Earlier(index),
            None => AnswerSender::Unverified,
        }
    }

    /// The back-end tried at `index` answered the client: it becomes the current one,
    /// and the one tried since (which may have the request too) gets resets. The
    /// candidates after it are forgotten, which only the attribution of their late
    /// SYN/ACK''s needed, and those now draw resets ([`syn_ack_sender`]).
    fn take_earlier_backend(&mut self, conn: &mut Connection, index: usize) {
        if let Some(current) = conn.backend() {
            self.send_resets(conn, current, conn.request_out());
        }
        conn.candidates = (index + 1) as u8;
    }

    /// Client segments of a handed-off flow that still reach the slow path (before the
    /// fast path has its entry, or in the grace period): forwarded, as XDP would, and
    /// heard (the grace period lasts until the client has been quiet that long).
    fn client_after_handoff(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
        raw: &[u8],
    ) -> Next {
        if let Some(backend) = conn.backend() {
            self.forward(raw, backend);
        }
        conn.last_heard = now;
        if conn.state != State::Forwarding {
            return Next::Keep;
        }
        // Forwarded whatever it is, for the back-end's TCP to judge; the front-end acts
        // only on a FIN or RST at exactly the number expected (`judge_client_segment`).
        match self.judge_client(conn, tcp) {
            FlowNotice::CLIENT_RST => {
                // The grace period, during which the flow is still forwarded.
                self.enter_time_wait(now, slot, conn, Outcome::Reset(ResetReason::ClientReset));
            }
            FlowNotice::CLIENT_FIN => self.client_closed(now, slot, conn),
            _ => {}
        }
        Next::Keep
    }

    /// A client RST at the expected number, told by the fast path: the grace period.
    pub(super) fn client_reset_noted(&mut self, now: Instant, slot: u32, conn: &mut Connection) {
        conn.last_heard = now;
        self.enter_time_wait(now, slot, conn, Outcome::Reset(ResetReason::ClientReset));
    }

    /// The client's FIN of a forwarding flow, at exactly the expected number, gone to its
    /// back-end: read by the slow path or told by the fast path
    /// ([`FrontEnd::note_client_fin`]). The grace period starts: the client has no more
    /// to send, and what the front-end still forwards (its ACKs of a server that goes on
    /// sending after the client's half-close, retransmissions) keeps the flow until the
    /// client has been quiet for the grace period (`on_timeout`). The server's FIN is
    /// never waited for: the back-end no longer copies it (docs/design.md, "Packet walk",
    /// step 9).
    pub(super) fn client_closed(&mut self, now: Instant, slot: u32, conn: &mut Connection) {
        if conn.state != State::Forwarding {
            return;
        }
        conn.last_heard = now;
        conn.client_fin = true;
        self.check_closed(now, slot, conn);
    }

    /// `Closing` and a grace period that was never handed off: the front-end's own
    /// close. Client data is read and discarded (a lingering close, as web servers do,
    /// so the client reads the response rather than a reset).
    fn client_while_closing(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
    ) -> Next {
        let flags = tcp.flags;
        if flags.contains(TcpFlags::RST) {
            if tcp.seq_number != conn.rcv_nxt {
                // Only a RST at exactly the next number ends it (RFC 5961 §3.2).
                self.stats.client_resets_ignored += 1;
                return Next::Keep;
            }
            return match conn.state {
                State::TimeWait(outcome) => {
                    self.finish(now, conn, outcome);
                    Next::Free
                }
                _ => self.abort(now, conn, ResetReason::ClientReset, false),
            };
        }
        if flags.contains(TcpFlags::SYN) {
            if matches!(conn.state, State::TimeWait(_)) && seq_lt(conn.rcv_nxt, tcp.seq_number) {
                // A new connection reusing the 4-tuple with a higher ISN, which TIME-WAIT
                // accepts (RFC 9293 §3.10.7.4 note, RFC 6191).
                self.finish(now, conn, Outcome::Closed);
                return Next::Replay;
            }
            self.stats.unacceptable_segments += 1;
            return Next::Keep;
        }
        if conn.state == State::Closing
            && flags.contains(TcpFlags::ACK)
            && tcp.ack_number == conn.snd_nxt
        {
            self.enter_time_wait(now, slot, conn, Outcome::Closed);
        }
        let fin = u32::from(flags.contains(TcpFlags::FIN));
        let end = tcp
            .seq_number
            .wrapping_add(tcp.payload.len() as u32)
            .wrapping_add(fin);
        if seq_le(tcp.seq_number, conn.rcv_nxt) && seq_lt(conn.rcv_nxt, end) {
            conn.rcv_nxt = end;
        }
        if !tcp.payload.is_empty() || fin == 1 {
            self.send_ack(conn);
        }
        Next::Keep
    }

    // ----- back-end segments -----

    pub(super) fn on_backend_segment(&mut self, now: Instant, flow: FlowKey, tcp: &TcpRepr<'_>) {
        let Some(slot) = self.slot_of(&flow) else {
            self.stats.stray_backend_segments += 1;
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        let next = match conn.state {
            State::HandingOff(phase) => {
                self.backend_during_handoff(now, slot, &mut conn, phase, tcp)
            }
            State::Forwarding | State::TimeWait(_) if conn.handed_off => {
                self.backend_after_handoff(now, slot, &mut conn, tcp)
            }
            _ => {
                self.stats.stray_backend_segments += 1;
                Next::Keep
            }
        };
        match next {
            Next::Keep => self.put(slot, conn),
            Next::Free | Next::Replay => self.release(slot, conn),
        }
    }

    /// The SYN/ACK', and the confirmation that the back-end has the request
    /// (docs/design.md, "Packet walk", steps 6 and 7).
    fn backend_during_handoff(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        phase: Phase,
        tcp: &TcpRepr<'_>,
    ) -> Next {
        let flags = tcp.flags;
        if flags.contains(TcpFlags::RST) {
            // No listener, or the back-end's ingress refused the option.
            self.stats.backend_refusals += 1;
            return self.next_candidate(now, slot, conn, HandoffFailure::Refused);
        }
        if flags.contains(TcpFlags::SYN) && flags.contains(TcpFlags::ACK) {
            // Translated by the back-end's egress: its seq is isn_f, and it acknowledges
            // the client's SYN (and, in a one-turn handoff, perhaps the request with it).
            let syn_acked = conn.syn.isn.wrapping_add(1);
            match syn_ack_sender(conn, tcp) {
                SynAckSender::Current => {}
                SynAckSender::Earlier(index) => {
                    // A back-end given up, whose server (which may have the request)
                    // still repeats its SYN/ACK': taken for the current one's, it would
                    // confirm a handoff the current back-end may never have had the
                    // request for, and the client's resends would go to it, not as a
                    // SYN', for ever. It gets a reset again (the first may be lost).
                    self.stats.earlier_backend_syn_acks += 1;
                    if let Some(Some(earlier)) = conn.tried.get(index) {
                        self.send_resets(conn, *earlier, true);
                    }
                    return Next::Keep;
                }
                SynAckSender::Unknown if self.acknowledges_request_in_syn(conn, tcp) => {
                    // No echo to tell the current back-end's repeat from an earlier
                    // one's (a client without timestamps): the current back-end's server
                    // gets its ACK' (harmless to a server without the connection), the
                    // earlier ones their resets again, and the handoff waits for the
                    // client's acknowledgement of the answer.
                    self.stats.unattributed_syn_acks += 1;
                    self.answer_backend_syn_ack(conn, tcp);
                    self.reset_earlier_candidates(conn);
                    return Next::Keep;
                }
                SynAckSender::Unknown => {}
            }
            if self.acknowledges_request_in_syn(conn, tcp) {
                // The back-end has the request: a repeat of the SYN/ACK' its module
                // absorbed, or a module that copies every SYN/ACK'. Its server waits in
                // SYN-RECV for the client's ACK, which goes first.
                self.answer_backend_syn_ack(conn, tcp);
                return self.complete_handoff(now, slot, conn, false);
            }
            if tcp.seq_number != conn.terms.isn_f || tcp.ack_number != syn_acked {
                self.stats.bad_syn_acks += 1;
                return Next::Keep;
            }
            if conn.request_in_syn {
                // The back-end took the SYN and dropped its data: the request goes after
                // it, as in the three-turn handoff. The fast path already awaits.
                conn.request_in_syn = false;
                self.stats.requests_after_syn_ack += 1;
                conn.backend_mss = tcp.max_seg_size.unwrap_or(MIN_MSS).max(MIN_MSS);
                self.send_request(conn);
                conn.tries = 0;
                conn.rto = self.config.handoff_rto;
                let deadline = now + conn.rto;
                self.arm(slot, conn, deadline);
                return Next::Keep;
            }
            let first = phase == Phase::SynSent;
            if first {
                conn.backend_mss = tcp.max_seg_size.unwrap_or(MIN_MSS).max(MIN_MSS);
                // A back-end that refuses ECN the client was granted (no ECE here) is
                // counted too: its module turns the client's CE marks into drops
                // (`Config::ecn`).
                if conn.terms.timestamps != tcp.timestamps.is_some()
                    || (conn.terms.sack && !tcp.sack_permitted)
                    || (conn.terms.ecn && !tcp.flags.contains(TcpFlags::ECE))
                {
                    self.stats.backend_terms_mismatch += 1;
                }
                conn.state = State::HandingOff(Phase::RequestSent);
                conn.tries = 0;
                conn.rto = self.config.handoff_rto;
            }
            // The fast path takes the flow in before the request goes out: the
            // back-end's answer can reach the client, and the client's acknowledgement
            // of it the front-end, before the next output is applied.
            if first && let Some(handoff) = self.handoff_of(conn) {
                self.emit(Event::RequestSent(handoff));
            }
            // In RequestSent a repeated SYN/ACK' means our ACK' was lost: answer now
            // rather than at the timer (RFC 9293 §3.10.7.3).
            self.send_request(conn);
            let deadline = now + conn.rto;
            self.arm(slot, conn, deadline);
            return Next::Keep;
        }
        if phase == Phase::RequestSent
            && flags.contains(TcpFlags::ACK)
            && seq_le(conn.rcv_nxt, tcp.ack_number)
        {
            return self.complete_handoff(now, slot, conn, false);
        }
        self.stats.unacceptable_segments += 1;
        Next::Keep
    }

    /// Whether a back-end segment is a SYN/ACK' that acknowledges the request a one-turn
    /// SYN' carried: from the front-end's ISN, acknowledging exactly the request's end
    /// (what the back-end's egress sends the front-end of a server that took the request
    /// with TCP Fast Open and repeats its SYN/ACK').
    fn acknowledges_request_in_syn(&self, conn: &Connection, tcp: &TcpRepr<'_>) -> bool {
        conn.request_in_syn
            && tcp.flags.contains(TcpFlags::SYN | TcpFlags::ACK)
            && !tcp.flags.contains(TcpFlags::RST)
            && tcp.seq_number == conn.terms.isn_f
            && tcp.ack_number == conn.rcv_nxt
            && tcp.ack_number != conn.syn.isn.wrapping_add(1)
    }

    /// The client's ACK' for a server that took a one-turn request in its SYN' and
    /// repeats its SYN/ACK': the handshake's completing ACK, at the request's end,
    /// acknowledging the SYN, in the client's terms (the back-end's ingress translates
    /// it, docs/design.md, "Packet walk", step 7).
    ///
    /// The client cannot send it: its SYN/ACK was the front-end's, and the server's stays
    /// on the back-end. Linux's fast-open child in SYN-RECV sends its answer once and then
    /// retransmits nothing but the SYN/ACK until a client segment in its window
    /// completes the handshake (`tcp_retransmit_timer`, `tcp_check_req`); a client whose
    /// whole answer was lost on the way has nothing to acknowledge, and its resent request
    /// starts before that window, so it only draws a bare ACK that silences it. Without
    /// this ACK' such a client waits for ever. Every repeat is answered (the module sends
    /// each to the front-end), so a lost ACK' costs one more of the server's SYN/ACK
    /// timeouts, not the connection.
    ///
    /// The timestamps echo the SYN/ACK' answered, which the ingress turns back into the
    /// server's own recent TSval, so that its first RTT sample is this exchange's and not
    /// the time since its first SYN/ACK (the server's retransmission timeout, which its
    /// answer waits for, starts from that sample); the TSval is the client's latest,
    /// at least the SYN''s, which the server's PAWS check compares it with.
    fn answer_backend_syn_ack(&mut self, conn: &Connection, syn_ack: &TcpRepr<'_>) {
        let Some(backend) = conn.backend() else {
            return;
        };
        self.stats.syn_ack_repeats_answered += 1;
        let ack_prime = bare_segment(
            conn.flow.client.port(),
            backend.port(),
            conn.rcv_nxt,
            conn.terms.isn_f.wrapping_add(1),
            TcpFlags::ACK,
            conn.client_window,
        );
        let ts = conn.terms.timestamps.then(|| {
            let echoed = syn_ack.timestamps.map_or(conn.terms.tsv_f, |ts| ts.tsval);
            (conn.ts_recent, echoed)
        });
        let ack_prime = with_timestamps(ack_prime, ts);
        let packet = packet::build(
            conn.flow.client.ip(),
            backend.ip(),
            conn.syn.ttl,
            &ack_prime,
        );
        self.transmit(packet);
    }

    /// Copies of the back-end's segments after the handoff (docs/design.md, "Packet
    /// walk", step 9): a RST starts the grace period, and a SYN/ACK' repeated by the
    /// server of a one-turn handoff gets the client's ACK'. Anything else changes nothing. A
    /// FIN here is the copy of a first answer that carried it, overtaken by the fast
    /// path's word that the client acknowledged that answer (`Connection: close`), or a
    /// FIN copy from a back-end module of an older build (a rolling upgrade): counted and
    /// ignored, since the close is tracked from the client's side.
    fn backend_after_handoff(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        tcp: &TcpRepr<'_>,
    ) -> Next {
        if conn.state == State::Forwarding && self.acknowledges_request_in_syn(conn, tcp) {
            // The server of a one-turn handoff is still in SYN-RECV: the handoff was
            // confirmed by an earlier repeat whose ACK' the network lost, or by the
            // client's acknowledgement of the answer, lost between the fast path and the
            // server; the answer, or its retransmissions, may never reach the client.
            // Unless the server is one given up before this back-end was chosen: it
            // gets a reset again, and the current one nothing.
            if let SynAckSender::Earlier(index) = syn_ack_sender(conn, tcp) {
                self.stats.earlier_backend_syn_acks += 1;
                if let Some(Some(earlier)) = conn.tried.get(index) {
                    self.send_resets(conn, *earlier, true);
                }
                return Next::Keep;
            }
            conn.last_heard = now;
            self.answer_backend_syn_ack(conn, tcp);
            return Next::Keep;
        }
        if tcp.flags.contains(TcpFlags::RST) {
            if conn.state == State::Forwarding {
                conn.last_heard = now;
                self.enter_time_wait(now, slot, conn, Outcome::Reset(ResetReason::BackendReset));
            }
        } else if tcp.flags.contains(TcpFlags::FIN) {
            self.stats.backend_fins_ignored += 1;
        }
        Next::Keep
    }

    // ----- timers -----

    pub(super) fn on_timeout(&mut self, now: Instant, slot: u32, conn: &mut Connection) -> Next {
        match conn.state {
            State::SynReceived => {
                if conn.tries < self.config.syn_ack_retries {
                    conn.tries += 1;
                    conn.rto = conn.rto.saturating_mul(2);
                    self.send_syn_ack(&conn.flow, &conn.syn, &conn.terms);
                    self.stats.syn_ack_retransmits += 1;
                    let deadline = now + conn.rto;
                    self.arm(slot, conn, deadline);
                    Next::Keep
                } else {
                    self.stats.handshake_timeouts += 1;
                    self.abort(now, conn, ResetReason::HandshakeTimeout, true)
                }
            }
            State::Receiving => {
                self.stats.request_timeouts += 1;
                self.abort(now, conn, ResetReason::RequestTimeout, true)
            }
            State::HandingOff(_) if conn.request_in_syn => {
                // Neither the client nor the back-end heard from for a quiet period. Not
                // proof that the back-end has the request: the client's resends may have
                // been lost (a Linux client's first retransmission after a 200 ms tail
                // loss probe comes about 2 s later, so one lost resend makes 3 s of
                // silence), and a back-end that never had the SYN' would then get the
                // client's segments with no connection to take them. A back-end that has
                // it shows it (its SYN/ACK' repeats, every one sent here, or the client's
                // acknowledgement of its answer), so the SYN' goes again instead.
                if conn.tries < self.config.handoff_retries {
                    self.stats.syn_primes_after_silence += 1;
                }
                let quiet = self.quiet_period(conn);
                self.send_request_in_syn_again(now, slot, conn, quiet)
            }
            State::HandingOff(phase) => {
                self.pay_owed_ack(conn);
                if conn.tries < self.config.handoff_retries {
                    conn.tries += 1;
                    conn.rto = conn.rto.saturating_mul(2);
                    match phase {
                        Phase::SynSent => {
                            self.send_syn_prime(conn);
                            self.stats.syn_prime_retransmits += 1;
                        }
                        Phase::RequestSent => {
                            self.send_request(conn);
                            self.stats.request_retransmits += 1;
                        }
                    }
                    let deadline = now + conn.rto;
                    self.arm(slot, conn, deadline);
                    Next::Keep
                } else {
                    self.stats.backend_timeouts += 1;
                    self.next_candidate(now, slot, conn, HandoffFailure::Silent)
                }
            }
            State::Forwarding => {
                let deadline = self.idle_deadline(conn);
                if deadline > now {
                    // Heard from since the timer was armed: not idle yet.
                    self.arm(slot, conn, deadline);
                    return Next::Keep;
                }
                self.stats.idle_timeouts += 1;
                self.finish(now, conn, Outcome::Reset(ResetReason::IdleTimeout));
                Next::Free
            }
            State::Closing => {
                if conn.tries < self.config.response_retries {
                    conn.tries += 1;
                    conn.rto = conn.rto.saturating_mul(2);
                    self.send_response(conn);
                    self.stats.response_retransmits += 1;
                    let deadline = now + conn.rto;
                    self.arm(slot, conn, deadline);
                    Next::Keep
                } else {
                    self.abort(now, conn, ResetReason::ResponseUnacknowledged, true)
                }
            }
            State::TimeWait(outcome) => {
                // A handed-off connection's grace period ends only once the client has
                // been quiet for its length: after a half-close the server may still be
                // sending, and the client's ACKs (forwarded by the fast path, which the
                // daemon reports) must go on reaching it. Freed, the flow's next client
                // segment would meet no entry and be answered with a reset.
                let quiet_until = conn.last_heard + self.config.time_wait;
                if conn.handed_off && quiet_until > now {
                    self.stats.time_wait_extended += 1;
                    self.arm(slot, conn, quiet_until);
                    return Next::Keep;
                }
                self.finish(now, conn, outcome);
                Next::Free
            }
        }
    }

    // ----- transitions -----

    /// Sends the SYN' to `backend` (docs/design.md, "Packet walk", step 4).
    fn start_handoff(&mut self, now: Instant, slot: u32, conn: &mut Connection, backend: Backend) {
        if let Some(entry) = conn.tried.get_mut(usize::from(conn.candidates)) {
            *entry = Some(backend);
            conn.candidates += 1;
        }
        if conn.candidates == 1 {
            self.stats.handoffs_started += 1;
        }
        conn.tries = 0;
        conn.rto = self.config.handoff_rto;
        // The SYN' is all the back-end hears of the client before it answers: Linux's
        // fast-open path takes its send window from the SYN's window field
        // (`tcp_fastopen_create_child`), where the three-turn ACK' would have carried the
        // client's latest. A closed window takes the three turns: announced in a SYN'
        // it would hold the answer until the client's window update, which the core does
        // not pass on while it awaits the answer (the update acknowledges nothing of the
        // back-end's), so neither side would send again.
        // A handoff the fast path made (`adopt_kernel_handoff`): its SYN' is out, with
        // the request, under the same conditions as below.
        let sent_by_kernel = self.kernel_handoff == KernelHandoff::Sent;
        let one_turn = sent_by_kernel || (self.config.one_turn && conn.window_in_syn() > 0);
        if self.config.one_turn && !one_turn && conn.candidates == 1 {
            self.stats.closed_window_handoffs += 1;
        }
        let syn_prime = if sent_by_kernel {
            self.kernel_handoff = KernelHandoff::Adopted;
            Some(None)
        } else if one_turn {
            self.syn_prime(conn, true)
                // The MTU: the IPv4 MSS and 40 bytes of headers, which is also the IPv6
                // MSS (20 less) and 60.
                .filter(|p| p.len() <= usize::from(self.config.mss) + 40)
                .map(Some)
        } else {
            None
        };
        conn.request_in_syn = syn_prime.is_some();
        match syn_prime {
            Some(packet) => {
                // One turn: the back-end has everything once the SYN' arrives. The fast
                // path takes the flow in, awaiting the answer, before it goes out.
                conn.state = State::HandingOff(Phase::RequestSent);
                conn.ack_owed = false;
                if let Some(handoff) = self.handoff_of(conn) {
                    self.emit(Event::RequestSent(handoff));
                }
                match packet {
                    Some(packet) => self.transmit(Ok(packet)),
                    None => self.stats.kernel_handoffs_adopted += 1,
                }
                self.stats.requests_in_syn += 1;
                // `last_heard` and `rto` hold the time of the client's latest sending of
                // its request and the gap before it (or the last quiet period, after
                // which the front-end sent the SYN' itself), until the handoff completes.
                conn.last_heard = now;
                conn.rto = Duration::ZERO;
                let deadline = now + self.quiet_period(conn);
                self.arm(slot, conn, deadline);
            }
            None => {
                conn.state = State::HandingOff(Phase::SynSent);
                self.send_syn_prime(conn);
                let deadline = now + conn.rto;
                self.arm(slot, conn, deadline);
            }
        }
        self.stats.syn_primes_sent += 1;
    }

    /// How long a one-turn handoff waits without hearing the client again before it
    /// sends the SYN' again itself: the client resends its request until some
    /// acknowledgement reaches it, and each resend sends the SYN' again, so this timer
    /// only fires when resends were lost (or the client is gone) and no proof came from
    /// the back-end either. The client's timer is not known: at least 3 s (three times
    /// RFC 6298's largest initial timeout), and 2.5 times the last gap between its
    /// sendings (or the last quiet period), so that the front-end's own SYN''s stay
    /// rarer than the client's resends.
    fn quiet_period(&self, conn: &Connection) -> Duration {
        conn.rto
            .saturating_mul(5)
            .checked_div(2)
            .unwrap_or_default()
            .max(Duration::from_secs(3))
    }

    /// The client resent its request during a one-turn handoff: nothing acknowledged it,
    /// so the SYN' or the back-end's answer was lost, or the back-end is gone. The SYN'
    /// goes again.
    fn request_resent(&mut self, now: Instant, slot: u32, conn: &mut Connection) -> Next {
        let gap = now.saturating_duration_since(conn.last_heard);
        conn.last_heard = now;
        self.send_request_in_syn_again(now, slot, conn, gap)
    }

    /// The SYN' with the request again, on a client's resend or after a quiet period
    /// (`gap`, what the next quiet period grows from): a duplicate is harmless at the
    /// back-end at every stage, and draws a repeat of its SYN/ACK' if its server has the
    /// request. Past [`super::Config::handoff_retries`] the back-end has failed
    /// ([`HandoffFailure::Silent`]) and the next candidate is tried.
    fn send_request_in_syn_again(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        gap: Duration,
    ) -> Next {
        if conn.tries >= self.config.handoff_retries {
            self.stats.backend_timeouts += 1;
            return self.next_candidate(now, slot, conn, HandoffFailure::Silent);
        }
        conn.tries += 1;
        conn.rto = gap;
        if let Some(packet) = self.syn_prime(conn, true) {
            self.transmit(Ok(packet));
        }
        self.stats.syn_prime_retransmits += 1;
        let deadline = now + self.quiet_period(conn);
        self.arm(slot, conn, deadline);
        Next::Keep
    }

    /// Gives up on the current back-end, tells the dispatcher why
    /// ([`Feedback::Failed`]), and asks it for another, excluding every one tried. The
    /// client never saw the failed back-end, so this is safe (docs/design.md, "Packet
    /// walk", step 7).
    fn next_candidate(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        cause: HandoffFailure,
    ) -> Next {
        if let Some(backend) = conn.backend() {
            self.dispatcher
                .feedback(now, &conn.flow, Feedback::Failed { backend, cause });
        }
        // Lets the failed back-end drop whatever half-open state it has.
        if let Some(backend) = conn.backend() {
            self.send_resets(conn, backend, conn.request_out());
        }
        let tried = usize::from(conn.candidates);
        if tried >= usize::from(self.config.max_candidates) {
            self.stats.backends_exhausted += 1;
            return self.abort_after_backend(now, conn);
        }
        let mut exclude = [Backend::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); MAX_CANDIDATES];
        for (slot, backend) in exclude.iter_mut().zip(conn.tried.iter().flatten()) {
            *slot = *backend;
        }
        let exclude = &exclude[..tried];
        let limits = self.config.request_limits();
        let choice = match parse_request(&conn.request, &limits) {
            Ok(Some(request)) => {
                let choice = self.dispatcher.dispatch(now, &conn.flow, &request, exclude);
                self.of_clients_family(&conn.flow, choice)
            }
            _ => None,
        };
        match choice {
            Some(backend) if !exclude.contains(&backend) => {
                self.start_handoff(now, slot, conn, backend);
                Next::Keep
            }
            _ => {
                self.stats.backends_exhausted += 1;
                self.abort_after_backend(now, conn)
            }
        }
    }

    /// Resets the client after the last candidate failed; the back-end was already told.
    fn abort_after_backend(&mut self, now: Instant, conn: &mut Connection) -> Next {
        conn.state = State::Receiving;
        self.abort(now, conn, ResetReason::BackendsExhausted, true)
    }

    /// The fast path forwarded a client segment acknowledging data past the front-end's
    /// SYN/ACK, which only the back-end can have sent ([`FrontEnd::note_backend_answered`]):
    /// the back-end has the request, as when the slow path sees such a segment
    /// (`client_during_handoff`), and the handoff is done. Anything else is left alone.
    pub(super) fn backend_answered(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
    ) -> Next {
        if conn.state != State::HandingOff(Phase::RequestSent) {
            self.stats.backend_answers_out_of_phase += 1;
            return Next::Keep;
        }
        self.stats.handoffs_confirmed_by_fast_path += 1;
        self.complete_handoff(now, slot, conn, true)
    }

    /// What the fast path needs of a handoff under way or done; `None` before a
    /// back-end is chosen.
    fn handoff_of(&self, conn: &Connection) -> Option<HandedOff> {
        Some(HandedOff {
            flow: conn.flow,
            backend: conn.backend()?,
            client_isn: conn.syn.isn,
            client_next: conn.client_next,
            isn_f: conn.terms.isn_f,
            tsv_f: conn.terms.tsv_f,
            ws_f: conn.terms.ws_f.unwrap_or(0),
            timestamps: conn.terms.timestamps,
            sack: conn.terms.sack,
            request_end: conn.rcv_nxt,
            candidate: conn.candidates,
            confirmed_by_fast_path: false,
        })
    }

    /// The back-end has the request: the handoff is done. `by_fast_path`: the fast path
    /// saw the proof and told of it ([`FrontEnd::note_backend_answered`]).
    fn complete_handoff(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        by_fast_path: bool,
    ) -> Next {
        let Some(handoff) = self.handoff_of(conn) else {
            return Next::Keep;
        };
        let backend = handoff.backend;
        conn.state = State::Forwarding;
        conn.handed_off = true;
        // The back-end has answered the client, acknowledging the request.
        conn.ack_owed = false;
        self.handed_off += 1;
        self.stats.handoffs_completed += 1;
        self.dispatcher
            .feedback(now, &conn.flow, Feedback::HandedOff { backend });
        // Held client packets go first, in order, before the fast path takes over.
        while let Some(held) = conn.queue.pop_front() {
            self.forward(&held, backend);
        }
        conn.queued_bytes = 0;
        conn.queue = VecDeque::new();
        conn.request = Vec::new();
        self.emit(Event::HandedOff(HandedOff {
            request_end: conn.rcv_nxt,
            confirmed_by_fast_path: by_fast_path,
            ..handoff
        }));
        conn.last_heard = now;
        let deadline = self.idle_deadline(conn);
        self.arm(slot, conn, deadline);
        self.check_closed(now, slot, conn);
        Next::Keep
    }

    /// When a forwarding flow last heard from at `conn.last_heard` counts as idle:
    /// [`Config::idle_timeout`] after it.
    pub(super) fn idle_deadline(&self, conn: &Connection) -> Instant {
        conn.last_heard + self.config.idle_timeout
    }

    /// A forwarding flow whose client has sent its FIN (held during the handoff, or
    /// just seen) enters its grace period.
    fn check_closed(&mut self, now: Instant, slot: u32, conn: &mut Connection) {
        if conn.state == State::Forwarding && conn.client_fin {
            self.enter_time_wait(now, slot, conn, Outcome::Closed);
        }
    }

    fn enter_time_wait(
        &mut self,
        now: Instant,
        slot: u32,
        conn: &mut Connection,
        outcome: Outcome,
    ) {
        if !matches!(conn.state, State::TimeWait(_)) {
            self.time_wait += 1;
        }
        conn.state = State::TimeWait(outcome);
        conn.response = None;
        self.arm(slot, conn, now + self.config.time_wait);
    }

    /// Ends a grace period before its timer, as the timer would (`make_room`).
    pub(super) fn end_grace(&mut self, now: Instant, conn: &Connection) {
        if let State::TimeWait(outcome) = conn.state {
            self.finish(now, conn, outcome);
        }
    }

    /// Sends an error response with FIN and waits for its acknowledgement.
    fn respond(&mut self, now: Instant, slot: u32, conn: &mut Connection, status: u16) -> Next {
        // An `Arc` clone: no allocation per response.
        conn.response = Some(match status {
            431 => {
                self.stats.responses_431 += 1;
                self.responses.too_large.clone()
            }
            503 => {
                self.stats.responses_503 += 1;
                self.responses.unavailable.clone()
            }
            _ => {
                self.stats.responses_400 += 1;
                self.responses.bad_request.clone()
            }
        });
        conn.request = Vec::new();
        conn.state = State::Closing;
        conn.tries = 0;
        conn.rto = self.config.response_rto;
        self.send_response(conn);
        conn.snd_nxt = conn
            .terms
            .isn_f
            .wrapping_add(1)
            .wrapping_add(conn.response.as_deref().map_or(0, <[u8]>::len) as u32)
            .wrapping_add(1);
        let deadline = now + conn.rto;
        self.arm(slot, conn, deadline);
        Next::Keep
    }

    /// Aborts: raises the event, resets the client if asked and the back-end if a
    /// handoff was under way, and frees. The event goes first: it takes the flow out of
    /// the fast path, which must be done before the client can answer the reset with a
    /// new connection on the same port.
    fn abort(
        &mut self,
        now: Instant,
        conn: &mut Connection,
        reason: ResetReason,
        reset_client: bool,
    ) -> Next {
        self.finish(now, conn, Outcome::Reset(reason));
        if reset_client {
            let rst = bare_segment(
                conn.flow.service.port(),
                conn.flow.client.port(),
                conn.snd_nxt,
                conn.rcv_nxt,
                TcpFlags::RST | TcpFlags::ACK,
                0,
            );
            self.send_to_client(&conn.flow, &rst);
        }
        if matches!(conn.state, State::HandingOff(_))
            && let Some(backend) = conn.backend()
        {
            self.send_resets(conn, backend, conn.request_out());
        }
        Next::Free
    }

    /// Counts the end of a connection, tells the dispatcher if it had been asked about
    /// it ([`Feedback::Ended`]), and raises its event.
    fn finish(&mut self, now: Instant, conn: &Connection, outcome: Outcome) {
        let flow = conn.flow;
        let backend = conn.backend();
        if conn.candidates > 0 {
            let reason = match outcome {
                Outcome::Closed => None,
                Outcome::Reset(reason) => Some(reason),
            };
            let handed_off = if conn.handed_off { backend } else { None };
            self.dispatcher
                .feedback(now, &flow, Feedback::Ended { handed_off, reason });
        }
        match outcome {
            Outcome::Closed => {
                self.stats.closes += 1;
                self.emit(Event::Closed { flow, backend });
            }
            Outcome::Reset(reason) => {
                self.stats.resets += 1;
                self.emit(Event::Reset {
                    flow,
                    backend,
                    reason,
                });
            }
        }
    }

    /// Queues a client packet for the back-end until the handoff completes.
    fn hold(&mut self, conn: &mut Connection, raw: &[u8]) {
        if conn.queue.len() >= self.config.max_queued_packets
            || conn.queued_bytes + raw.len() > self.config.max_queued_bytes
        {
            // The client retransmits it; by then the handoff may be done.
            self.stats.queue_overflows += 1;
            return;
        }
        conn.queued_bytes += raw.len();
        conn.queue.push_back(raw.to_vec());
        self.stats.packets_queued += 1;
    }

    // ----- packets out -----

    fn forward(&mut self, raw: &[u8], backend: Backend) {
        self.stats.packets_forwarded += 1;
        let packet = packet::rewrite_destination(raw, backend);
        self.transmit(packet);
    }

    fn send_to_client(&mut self, flow: &FlowKey, tcp: &TcpRepr<'_>) {
        let packet = packet::build(flow.service.ip(), flow.client.ip(), self.config.ttl, tcp);
        self.transmit(packet);
    }

    /// The window the front-end announces: the request buffer's free space, so the
    /// right edge stays put as bytes arrive.
    ///
    /// Rounded up to the next unit of `2^ws_f`: rounded down, the last partial unit would
    /// never be offered, the client would stall a few bytes short of the limit and an
    /// oversized head would end in a request timeout instead of a 431. The client may so
    /// send up to `2^ws_f - 1` bytes past the limit; they are trimmed (and counted), and
    /// the full buffer is what makes the parser answer "too large".
    fn receive_window(&self, conn: &Connection) -> u16 {
        let room = self
            .config
            .max_request_len
            .saturating_sub(conn.request.len());
        let unit = 1usize << conn.terms.ws_f.unwrap_or(0).min(14);
        room.div_ceil(unit).min(usize::from(u16::MAX)) as u16
    }

    fn send_syn_ack(&mut self, flow: &FlowKey, syn: &ClientSyn, terms: &FrontTerms) {
        // Not scaled in a SYN (RFC 7323 §2.2).
        let window = self.config.max_request_len.min(usize::from(u16::MAX)) as u16;
        let flags = if terms.ecn {
            TcpFlags::SYN | TcpFlags::ACK | TcpFlags::ECE
        } else {
            TcpFlags::SYN | TcpFlags::ACK
        };
        let mut tcp = bare_segment(
            flow.service.port(),
            flow.client.port(),
            terms.isn_f,
            syn.isn.wrapping_add(1),
            flags,
            window,
        );
        // Mirror the client: MSS clamped to ours (RFC 9293 §3.7.1), window scale only if
        // offered (RFC 7323 §2.2), SACK-permitted only if offered (RFC 2018 §2),
        // timestamps only if offered, echoing its TSval (RFC 7323 §3.2), ECN only if
        // asked: ECE and not CWR (RFC 3168 §6.1.1), the SYN' then asking the back-end
        // for it in the client's name (`Config::ecn`).
        tcp.max_seg_size = Some(syn.mss.map_or(self.config.mss_for(flow.is_ipv6()), |mss| {
            mss.clamp(MIN_MSS, self.config.mss_for(flow.is_ipv6()))
        }));
        tcp.window_scale = terms.ws_f;
        tcp.sack_permitted = terms.sack;
        if terms.timestamps {
            tcp.timestamps = Some(TcpTimestamps {
                tsval: terms.tsv_f,
                tsecr: syn.tsval,
            });
        }
        self.send_to_client(flow, &tcp);
    }

    /// The request's acknowledgement, when the back-end has not given it in time.
    fn pay_owed_ack(&mut self, conn: &mut Connection) {
        if conn.ack_owed {
            conn.ack_owed = false;
            self.send_ack(conn);
            self.stats.request_acks_at_timer += 1;
        }
    }

    fn send_ack(&mut self, conn: &Connection) {
        let tcp = bare_segment(
            conn.flow.service.port(),
            conn.flow.client.port(),
            conn.snd_nxt,
            conn.rcv_nxt,
            TcpFlags::ACK,
            self.receive_window(conn),
        );
        let tcp = with_timestamps(tcp, conn.tsopt());
        self.send_to_client(&conn.flow, &tcp);
    }

    fn send_response(&mut self, conn: &Connection) {
        let mut tcp = bare_segment(
            conn.flow.service.port(),
            conn.flow.client.port(),
            conn.terms.isn_f.wrapping_add(1),
            conn.rcv_nxt,
            TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN,
            self.receive_window(conn),
        );
        tcp.payload = conn.response.as_deref().unwrap_or_default();
        let tcp = with_timestamps(tcp, conn.tsopt());
        self.send_to_client(&conn.flow, &tcp);
    }

    /// The reset answering a segment of no connection, counted as such.
    fn send_stray_reset(&mut self, flow: FlowKey, tcp: &TcpRepr<'_>) {
        self.stats.stray_resets_sent += 1;
        self.send_reset(flow, tcp);
    }

    /// The reset answering `tcp` (RFC 9293 §3.10.7.1): `<SEQ=SEG.ACK><CTL=RST>` for a
    /// segment with an ACK, else `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
    fn send_reset(&mut self, flow: FlowKey, tcp: &TcpRepr<'_>) {
        let rst = if tcp.flags.contains(TcpFlags::ACK) {
            bare_segment(
                flow.service.port(),
                flow.client.port(),
                tcp.ack_number,
                0,
                TcpFlags::RST,
                0,
            )
        } else {
            bare_segment(
                flow.service.port(),
                flow.client.port(),
                0,
                tcp.seq_number.wrapping_add(tcp.segment_len() as u32),
                TcpFlags::RST | TcpFlags::ACK,
                0,
            )
        };
        self.send_to_client(&flow, &rst);
    }

    /// The client's SYN, replayed to the back-end with the handoff option
    /// (docs/design.md, "Packet walk", step 4). Only options the front-end agreed to are
    /// replayed, and ECE and CWR only if it granted ECN (RFC 3168 §6.1.1: the back-end's
    /// kernel then negotiates ECN as it would with the client); any SYN data is dropped.
    /// The SYN' is Not-ECT, as every SYN must be (same section; Linux refuses ECN to an
    /// ECT SYN).
    fn send_syn_prime(&mut self, conn: &Connection) {
        if let Some(packet) = self.syn_prime(conn, false) {
            self.transmit(Ok(packet));
        }
    }

    /// The SYN' to the current back-end, carrying the request as its payload if
    /// `with_request` (the one-turn handoff); `None` without a back-end, or if it cannot
    /// be built (counted).
    fn syn_prime(&mut self, conn: &Connection, with_request: bool) -> Option<Vec<u8>> {
        let backend = conn.backend()?;
        let terms = &conn.terms;
        let mut flags = 0;
        if terms.timestamps {
            flags |= HandoffOption::TIMESTAMPS;
        }
        if terms.sack {
            flags |= HandoffOption::SACK;
        }
        let option = HandoffOption::new(terms.isn_f, terms.tsv_f, terms.ws_f.unwrap_or(0), flags);
        // The tag binds both addresses: IPv4's 32-byte message, or IPv6's ("BTN2", 56
        // bytes), with the option's bytes the same on the wire either way.
        let encoded = match (conn.flow.client.ip(), backend.ip()) {
            (IpAddr::V4(client), IpAddr::V4(backend_ip)) => option.encode(
                &self.secrets.handoff,
                &HandoffBinding {
                    client_ip: client.octets(),
                    client_port: conn.flow.client.port(),
                    backend_ip: backend_ip.octets(),
                    backend_port: backend.port(),
                    client_isn: conn.syn.isn,
                },
            ),
            (IpAddr::V6(client), IpAddr::V6(backend_ip)) => option.encode(
                &self.secrets.handoff,
                &HandoffBindingV6 {
                    client_ip: client.octets(),
                    client_port: conn.flow.client.port(),
                    backend_ip: backend_ip.octets(),
                    backend_port: backend.port(),
                    client_isn: conn.syn.isn,
                },
            ),
            // Never chosen (`of_clients_family`); nothing to send.
            _ => {
                self.stats.emit_errors += 1;
                return None;
            }
        };
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(ip) => ip.octets(),
            IpAddr::V6(_) => [0; 4],
        };
        // With the request, the client's window as it sent the request: the back-end
        // answers at once, sending into it (see `start_handoff`). A bare SYN''s window
        // is replaced by the ACK''s.
        let window = if with_request {
            conn.window_in_syn()
        } else {
            conn.syn.window
        };
        // The layout the XDP program writes for the handoffs decided in the kernel
        // (`baton_common::syn_prime`), so a back-end sees one SYN' whichever path sent it.
        let prime = SynPrime {
            // IPv6's SYN' is this one's segment behind an IPv6 header (below).
            client_addr: v4(conn.flow.client.ip()),
            backend_addr: v4(backend.ip()),
            client_port: conn.flow.client.port(),
            backend_port: backend.port(),
            client_isn: conn.syn.isn,
            window,
            ttl: conn.syn.ttl,
            ecn: terms.ecn,
            mss: conn.syn.mss,
            window_shift: conn.syn.window_scale,
            sack_permitted: terms.sack,
            tsval: terms
                .timestamps
                .then(|| syn_prime_tsval(conn, usize::from(conn.candidates.saturating_sub(1)))),
            handoff: encoded,
        };
        let payload: &[u8] = if with_request { &conn.request } else { &[] };
        let Ok(payload_len) = u16::try_from(payload.len()) else {
            self.stats.emit_errors += 1;
            return None;
        };
        let mut packet = vec![0; SYN_PRIME_HEADERS_LEN + payload.len()];
        let (headers, rest) = packet.split_at_mut(SYN_PRIME_HEADERS_LEN);
        rest.copy_from_slice(payload);
        if let Ok(headers) = <&mut [u8; SYN_PRIME_HEADERS_LEN]>::try_from(headers) {
            write_syn_prime_headers(headers, &prime, payload_len, payload_sum(payload));
        }
        match (conn.flow.client.ip(), backend.ip()) {
            // One layout of the segment for both families: the IPv4 SYN''s TCP header
            // and payload, its checksum made again over IPv6's pseudo-header.
            (IpAddr::V6(client), IpAddr::V6(backend_ip)) => {
                match packet::reframe_v6(&packet, client, backend_ip, conn.syn.ttl) {
                    Ok(packet) => Some(packet),
                    Err(_) => {
                        self.stats.emit_errors += 1;
                        None
                    }
                }
            }
            _ => Some(packet),
        }
    }

    /// The client's ACK' and its buffered bytes, replayed to the back-end in the
    /// client's terms: `ack` in the front-end's sequence space and TSecr on the
    /// front-end's clock, which the back-end's ingress translates (docs/design.md,
    /// "Packet walk", steps 7 and 8).
    ///
    /// The ACK' is the request's first segment: a segment that completes the handshake
    /// may carry data (RFC 9293 §3.10.7.3, SYN-RECEIVED), so a separate bare ACK' would
    /// only cost the slow path a send and the back-end a segment per connection. A bare
    /// ACK' goes out only for an empty request, which dispatch never hands off today.
    fn send_request(&mut self, conn: &Connection) {
        let Some(backend) = conn.backend() else {
            return;
        };
        let src_port = conn.flow.client.port();
        let ack = conn.terms.isn_f.wrapping_add(1);
        let ts = conn
            .terms
            .timestamps
            .then_some((conn.ts_recent, conn.terms.tsv_f));
        let first = conn.syn.isn.wrapping_add(1);
        if !conn.request.is_empty() {
            self.send_request_segments(conn, backend, first, ack, ts);
            return;
        }
        let ack_prime = bare_segment(
            src_port,
            backend.port(),
            first,
            ack,
            TcpFlags::ACK,
            conn.client_window,
        );
        let ack_prime = with_timestamps(ack_prime, ts);
        let client = conn.flow.client.ip();
        let packet = packet::build(client, backend.ip(), conn.syn.ttl, &ack_prime);
        self.transmit(packet);
    }

    /// The request's bytes as segments from `first`, each acknowledging the back-end's
    /// SYN (`ack`); the first completes the back-end's handshake.
    fn send_request_segments(
        &mut self,
        conn: &Connection,
        backend: Backend,
        first: u32,
        ack: u32,
        ts: Option<(u32, u32)>,
    ) {
        let src_port = conn.flow.client.port();
        let client = conn.flow.client.ip();
        // Segments no larger than the back-end's MSS less the timestamp option. The
        // back-end's initial receive window (64 KiB on Linux) exceeds the request limit,
        // so all are sent at once.
        let overhead = if ts.is_some() { 12 } else { 0 };
        let mss = self.config.mss_for(conn.flow.is_ipv6());
        let segment = usize::from(conn.backend_mss.min(mss)) - overhead;
        let chunks = conn.request.chunks(segment.max(1));
        let count = chunks.len();
        let mut seq = first;
        for (i, chunk) in chunks.enumerate() {
            let flags = if i + 1 == count {
                TcpFlags::ACK | TcpFlags::PSH
            } else {
                TcpFlags::ACK
            };
            let mut tcp = bare_segment(
                src_port,
                backend.port(),
                seq,
                ack,
                flags,
                conn.client_window,
            );
            tcp.payload = chunk;
            let tcp = with_timestamps(tcp, ts);
            let packet = packet::build(client, backend.ip(), conn.syn.ttl, &tcp);
            self.transmit(packet);
            seq = seq.wrapping_add(chunk.len() as u32);
        }
    }

    /// Resets for a back-end that failed (or failed earlier, and still repeats its
    /// SYN/ACK'), at each sequence number its server may be waiting at: the SYN''s end
    /// (a SYN' whose data the server did not take, or before the request went out) and
    /// the request's end, where a server that took the request waits. Linux acts on a RST
    /// only at exactly the next sequence number it expects (RFC 5961 §3.2; a listener's
    /// request sock on any in its window): one at the SYN''s end alone, all that was sent
    /// before, was dropped by a fast-open server that had taken the request, which went on
    /// repeating its SYN/ACK' for a minute. The other of the two is dropped: out of the
    /// window, or meeting no connection. `request_out`: the request may have reached the
    /// back-end (otherwise the first is enough).
    fn send_resets(&mut self, conn: &Connection, backend: Backend, request_out: bool) {
        let syn_end = conn.syn.isn.wrapping_add(1);
        self.send_backend_reset(conn, backend, syn_end);
        if request_out && conn.rcv_nxt != syn_end {
            self.send_backend_reset(conn, backend, conn.rcv_nxt);
        }
    }

    /// [`Self::send_resets`] to every back-end tried before the current one.
    fn reset_earlier_candidates(&mut self, conn: &Connection) {
        let earlier = usize::from(conn.candidates.saturating_sub(1));
        for backend in conn.tried[..earlier.min(MAX_CANDIDATES)].iter().flatten() {
            self.send_resets(conn, *backend, true);
        }
    }

    /// One RST to `backend` from the client's address and port, at `seq`.
    fn send_backend_reset(&mut self, conn: &Connection, backend: Backend, seq: u32) {
        self.reset_backend_at(conn.flow.client, conn.syn.ttl, backend, seq);
    }

    /// One RST to `backend` from `client`, at `seq`: no ACK, since the front-end never
    /// learns the server's ISN (RFC 9293 §3.10.7.3 accepts a RST on its sequence number
    /// alone; RFC 5961 §3.2 wants it exact).
    fn reset_backend_at(&mut self, client: SocketAddr, ttl: u8, backend: Backend, seq: u32) {
        let rst = bare_segment(client.port(), backend.port(), seq, 0, TcpFlags::RST, 0);
        let packet = packet::build(client.ip(), backend.ip(), ttl, &rst);
        self.transmit(packet);
    }

    /// The back-end of a handoff the fast path made and the core did not adopt
    /// ([`FrontEnd::adopt_kernel_handoff`]: the table full, the cookie no longer good,
    /// another connection tracked on the ports, a request the core parses otherwise,
    /// not a service of this configuration). The program's SYN' brought the server the
    /// request, so it holds a half-open connection, or a fast-open child that took the
    /// request, that no one will complete or close: reset, at the SYN''s end and at the
    /// request's end, as [`Self::send_resets`] does for a back-end given up. The SYN'
    /// carried the client's ISN (`kernel_dispatch::handoff_terms`: `client_isn` is the
    /// request's sequence number less one, the flow's `client_next` past the request),
    /// so both numbers come from the request segment. Not when the core tracks a
    /// connection on the ports with that same client ISN: its back-ends are the core's
    /// to reset, and one of them may be this one, serving it.
    pub(super) fn reset_refused_handoff(&mut self, packet: &[u8], backend: Backend) {
        // Checksums trusted: the record is the program's copy of a segment it checked,
        // and a reset that finds no connection changes nothing.
        let Ok((ip, tcp)) = packet::parse(packet, Checksums::Trust) else {
            return;
        };
        let flow = FlowKey {
            client: SocketAddr::new(ip.src_addr(), tcp.src_port),
            service: SocketAddr::new(ip.dst_addr(), tcp.dst_port),
        };
        let client_isn = tcp.seq_number.wrapping_sub(1);
        let tracked = self.flows.get(&flow).is_some_and(|&slot| {
            self.slots
                .get(slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|conn| conn.syn.isn == client_isn)
        });
        if tracked {
            return;
        }
        self.stats.refused_handoffs_reset += 1;
        let syn_end = tcp.seq_number;
        let request_end = syn_end.wrapping_add(tcp.payload.len() as u32);
        self.reset_backend_at(flow.client, ip.ttl(), backend, syn_end);
        if request_end != syn_end {
            self.reset_backend_at(flow.client, ip.ttl(), backend, request_end);
        }
    }
}

/// Which of the back-ends tried sent the answer a client acknowledges
/// ([`FrontEnd::answer_sender`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerSender {
    /// The current candidate's, or no stamp to tell (a client without timestamps, a
    /// back-end that does not stamp).
    Current,
    /// The candidate at this index of `tried`, given up since.
    Earlier(usize),
    /// A stamp that checks for none of the back-ends tried: taken as the current one's.
    Unverified,
}

/// Which of the back-ends tried sent a SYN/ACK'. The egress gives every back-end's the
/// VIP's address and the front-end's ISN, and a one-turn server's acknowledges the same
/// request, so only its echo tells: each candidate's SYN' carries a TSval of its own
/// ([`syn_prime_tsval`]), which its server echoes in every SYN/ACK it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SynAckSender {
    /// The current candidate's (the only one's, if no other was tried).
    Current,
    /// The candidate at this index of `tried`, given up since.
    Earlier(usize),
    /// After a change of candidate, a SYN/ACK' without an echo (a client without
    /// timestamps), or echoing none of our SYN''s TSvals.
    Unknown,
}

fn syn_ack_sender(conn: &Connection, tcp: &TcpRepr<'_>) -> SynAckSender {
    if conn.candidates <= 1 {
        return SynAckSender::Current;
    }
    let Some(ts) = tcp.timestamps.filter(|_| conn.terms.timestamps) else {
        return SynAckSender::Unknown;
    };
    let current = usize::from(conn.candidates) - 1;
    // Every back-end tried, the ones after the current too: an earlier back-end taken
    // back for its answer ([`FrontEnd::take_earlier_backend`]) leaves them behind it.
    let tried = conn.tried.iter().take_while(|b| b.is_some()).count();
    match (0..tried).find(|&index| syn_prime_tsval(conn, index) == ts.tsecr) {
        Some(index) if index == current => SynAckSender::Current,
        Some(index) => SynAckSender::Earlier(index),
        None => SynAckSender::Unknown,
    }
}

/// The TSval of the SYN' to the candidate at `index` of `tried`: the client's (its
/// request's, after a cookie) for the first, as the kernel's SYN' carries it, and one
/// tick less for each later one, so that every candidate's SYN/ACK' names it by its echo
/// ([`syn_ack_sender`]). Older, never newer, than the client's own: the back-end's PAWS
/// check compares the client's next segments with it (RFC 7323 §5), and a TSval one
/// tick older only makes the client's first RTT sample from the back-end's echo that
/// tick longer.
fn syn_prime_tsval(conn: &Connection, index: usize) -> u32 {
    conn.syn.tsval.wrapping_sub(index as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_fits_its_documented_bound() {
        let size = std::mem::size_of::<Connection>();
        assert!(
            size <= super::super::CONNECTION_SIZE_BOUND,
            "Connection is {size} bytes"
        );
    }

    /// The window a SYN announces for a window field sent after it: scaled when scaling
    /// is in effect, the shift capped at 14 (RFC 7323 §2.3), the bytes at 16 bits.
    #[test]
    fn a_window_in_a_syn_is_the_scaled_field_in_sixteen_bits() {
        for (field, shift, syn) in [
            (0, Some(7), 0),
            (0, None, 0),
            (100, None, 100),
            (3, Some(7), 384),
            (511, Some(7), 65_408),
            (512, Some(7), u16::MAX),
            (u16::MAX, None, u16::MAX),
            (1, Some(15), 1 << 14),
            (4, Some(14), u16::MAX),
        ] {
            assert_eq!(window_in_syn(field, shift), syn, "{field} << {shift:?}");
        }
    }
}
