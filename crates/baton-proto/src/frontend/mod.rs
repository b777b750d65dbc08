//! The front-end connection state machine (docs/design.md, "Packet walk"), sans-IO.
//!
//! [`FrontEnd`] answers clients' handshakes for the virtual services, buffers and parses
//! each client's first request, asks a [`Dispatch`] implementation for a back-end, hands
//! the connection off by replaying the client's SYN (with the authenticated handoff
//! option) and request to it, and then tracks the connection until it closes. It opens no
//! socket, reads no clock and draws no random number: packets and time come in as
//! arguments, packets and events go out as values.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     // inputs, as many as the caller likes:
//!     front_end.handle_packet(now, ipv4_packet);   // a packet the fast path passed up
//!     front_end.note_client_fin(now, &flow);       // what the fast path did, told
//!     front_end.handle_timeout(now);               // when the armed timer fires
//!     // then apply every output, in the order given:
//!     while let Some(output) = front_end.poll_output() {
//!         match output {
//!             Output::Transmit(t) => send(t.destination, &t.packet),
//!             Output::Event(e) => apply(e),        // the fast path's flow table
//!         }
//!     }
//!     timer = front_end.poll_timeout();
//! }
//! ```
//!
//! # The order of outputs is the contract
//!
//! The outputs form one stream, and applying each in turn, completely, before the next
//! is all the caller must do: the core puts them in the order the world must see them.
//! The rules it keeps, each of which a lab test once caught broken:
//!
//! - **A flow leaves the fast path before anything that ends it goes out.** A
//!   [`Event::Closed`] or [`Event::Reset`] comes before the reset it sends and before
//!   the SYN/ACK of a new connection reusing its port, so the client's answer never
//!   meets the old entry (which would send it to the old back-end).
//! - **A flow enters the fast path, awaiting the answer, before its request goes out.**
//!   [`Event::RequestSent`] comes before the request (the ACK'): the back-end's first
//!   segment reaches the client directly, and the client's acknowledgement of it can
//!   reach the fast path before the caller's next step.
//! - **A flow is forwarded by the fast path only after the packets held for it.**
//!   [`Event::HandedOff`] comes after the client packets held during the handoff have
//!   been queued for the back-end, so the client's bytes reach it in order.
//! - **Outputs of several inputs keep their inputs' order.** A caller may handle many
//!   inputs before draining (the daemon reads a batch of packets per round): a flow
//!   handed off by one packet and ended by the next is taken in and then out again,
//!   never left behind.
//!
//! The dispatcher is told of each connection's fate directly, at the moment the core
//! knows it ([`Dispatch::feedback`]); it is not an output.
//!
//! # Addressing (L3 mode)
//!
//! - Client to service: `C → V`, the packets `handle_packet` mostly sees.
//! - Front-end to client: `V → C` (SYN/ACK, ACKs, error responses, resets).
//! - Front-end to back-end: `C → B` with the back-end's address and port as destination
//!   (the SYN', the ACK', request data, forwarded client packets).
//! - Back-end to front-end: the SYN/ACK', copies of its segments until the handoff is
//!   confirmed, and of its RSTs (never of a later FIN), already
//!   translated by the back-end's egress into what the client would see, so `V → C`,
//!   with `seq` in the front-end's sequence space (a SYN/ACK' has `seq == isn_f`).
//!   The front-end tells them from client packets by their source being a service. It
//!   never forwards a back-end segment to the client: the egress sends the original to
//!   the client and only a copy here.
//!
//! # Life of a connection
//!
//! `SynReceived → Receiving → HandingOff(SynSent → RequestSent) → Forwarding → TimeWait`,
//! or `Receiving → Closing → TimeWait` for an error response, or a reset from any state.
//! See [`StateName`] for each state's rules and timers.
//!
//! # Choices
//!
//! - **SYN cookies** (RFC 4987 §3.6) engage when [`Config::max_half_open`] connections
//!   are in SYN-RECEIVED or the table is full, or always with
//!   [`Config::every_syn_in_fast_path`] (the fast path then answers every SYN and the
//!   core meets each connection at its first data segment). Fidelity, as Linux: the MSS rounds down to
//!   536/1300/1440/1460 (2 bits of the cookie); window shift, SACK-permitted and ECN
//!   ride in the low 6 bits of `tsv_f` and come back in the ACK's TSecr. Without
//!   timestamps the fast path keeps them in its half-open map and marks the cookie
//!   (a third bit); the core takes the entry at the client's first data segment
//!   ([`HalfOpenSyns`], lent to [`FrontEnd::handle_packet_with`]), and resets a marked
//!   connection whose entry is gone. The core's own cookie SYN/ACKs (the SYNs the fast
//!   path passes up) keep no map and offer a client without timestamps none of them.
//!   The cookie's hash also covers the client's ISN, so an ACK with a shifted `seq` fails.
//! - **ISNs** are RFC 6528's `M + F(4-tuple, secret)` with SipHash-2-4; `tsv_f` is a
//!   keyed per-connection offset plus a 1 ms clock (RFC 7323 §7.1).
//! - **The front-end's TSval never advances**: every segment it sends the client carries
//!   `tsv_f`, because the back-end's translated TSvals start again from `tsv_f` and the
//!   client's PAWS check (RFC 7323 §5) would drop anything older than what it saw.
//! - **Request over the limit: HTTP 431** with `Connection: close` and FIN, not a reset:
//!   the client learns why (RFC 6585 §5), and the window announced never lets it send
//!   more than the limit, so the response is the only answer needed. The close lingers
//!   (client data is acknowledged and discarded) so that the client reads the response;
//!   unacknowledged, the response is retransmitted, then the client is reset.
//! - **Garbage**: a first byte that starts neither an HTTP request line nor a TLS
//!   handshake record, or a malformed HTTP head, gets **400** and a close; a malformed
//!   ClientHello gets a **reset**, since an HTTP answer means nothing to a TLS client.
//! - **No back-end: 503** for HTTP, a reset for TLS (same reason). The 503's body is the
//!   daemon's to choose ([`FrontEnd::set_unavailable_body`], empty by default); it goes
//!   out in the one segment that carries the FIN, so it is bounded by
//!   [`MAX_UNAVAILABLE_BODY`].
//! - **Candidate selection**: the dispatcher is called again with the back-ends already
//!   tried in `exclude` (no candidate list is stored), at most [`Config::max_candidates`]
//!   times; a back-end fails by staying silent through [`Config::handoff_retries`]
//!   retransmissions (exponential back-off from [`Config::handoff_rto`]) or by answering
//!   RST. The failed back-end gets a RST for its half-open state. After the last, the
//!   client is reset: it never saw any back-end, so changing back-end is always safe.
//! - **Confirmation** is the back-end's acknowledgement of the request's last byte
//!   (copied by its egress), or, if that copy is lost, a client ACK beyond `isn_f + 1`,
//!   which only the back-end's data can have caused. Only then is [`Event::HandedOff`]
//!   raised: installing the fast path for good at the SYN/ACK' (docs/design.md,
//!   "Packet walk", step 7) would make switching to another candidate impossible.
//! - **The request's acknowledgement** comes from the back-end: its first segment reaches
//!   the client directly within a round trip on the LAN, so one from the front-end at
//!   dispatch would be a frame more per connection for nothing. The front-end sends its
//!   own only if the handoff's first timer fires before confirmation
//!   ([`Stats::request_acks_at_timer`]), or at once if the client resends the request.
//! - **Client data during the handoff** past the request is not acknowledged by the
//!   front-end: it is held (bounded by [`Config::max_queued_packets`] and
//!   [`Config::max_queued_bytes`], overflow dropped and counted, the client retransmits)
//!   and flushed to the back-end in order. Pure ACKs with nothing new are absorbed.
//! - **Client FIN**: before the request head is complete, the client gets a reset and
//!   everything is freed. A FIN after a complete head (a client that half-closes after
//!   its request) is held and forwarded: the request is served. A client RST at any
//!   point before the handoff completes frees everything, and resets the back-end.
//! - **Out-of-order request bytes** are dropped with a duplicate ACK rather than
//!   buffered: at most 16 KiB arrive before dispatch, and the client's retransmission
//!   fills the hole.
//! - **Options in the SYN'**: only what the front-end agreed to with the client (MSS,
//!   window scale, SACK-permitted, timestamps) plus the handoff option, and ECE and CWR
//!   only if it granted the client ECN ([`Config::ecn`]); unknown options (TFO, MPTCP,
//!   ...) and SYN data are dropped, so the back-end never agrees to something the client
//!   was refused.
//!
//! # Restarts: handover and adoption
//!
//! A handed-off connection needs little of the front-end: its back-end, and the state of
//! its close. The daemon keeps that beside the fast path's flow entry, which outlives
//! it (pinned in bpffs), so a restarted daemon can take the connection over:
//! [`FrontEnd::handover`] reads what to keep of a handed-off connection,
//! [`FrontEnd::adopt`] makes a new front-end track it again, as a connection in
//! `Forwarding` (or in its grace period, if it had closed or been reset): its slow-path
//! packets (FIN, RST, data) are forwarded, its close is tracked and its entry removed when
//! done, exactly as if this front-end had handed it off. Nothing is sent on adoption and no
//! [`Event::HandedOff`] is raised: the fast path already has the flow. Connections not yet
//! handed off (handshake, request, handoff under way) cannot be carried over; the daemon's
//! drain lets them finish before it stops.
//!
//! # Memory
//!
//! Each tracked connection costs one `Connection` struct (size pinned by a test, at most
//! [`CONNECTION_SIZE_BOUND`] bytes) in a slab of at most
//! [`Config::max_connections`], a flow-table entry and a timer entry, plus on the heap
//! the request buffer (at most [`Config::max_request_len`], released at handoff) and the
//! packets held during the handoff (at most [`Config::max_queued_bytes`]). SYN cookies
//! cost nothing. The output queue is bounded by [`Config::max_pending_outputs`]. Every
//! refusal is counted in [`Stats`].

pub mod config;
mod connection;
mod cookie;
mod packet;
pub mod time;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

pub use config::{Config, ConfigError, MAX_CANDIDATES};
pub use connection::StateName;
pub use time::Instant;

use crate::request::ClientRequest;
use connection::Connection;
use cookie::{FlowHashBuilder, Secrets};

pub use baton_common::syncookie::{HalfOpenSyn, SynCookieConfig};

/// The bound the size test holds the per-connection state to, in bytes (heap excluded).
/// 384 since the addresses became family-generic: a `SocketAddr` is 32 bytes to
/// `SocketAddrV4`'s 6, and a connection holds six (its flow's two and the candidates
/// tried), 148 bytes more per slot (9.7 MB more at 65,536 connections).
pub const CONNECTION_SIZE_BOUND: usize = 384;

/// The longest 503 body [`FrontEnd::set_unavailable_body`] takes: the response goes out
/// as one segment, so with its head (about 150 bytes) and IPv4 and TCP headers it stays
/// under the 1280-byte MTU that any path this side of a tunnel carries unfragmented.
pub const MAX_UNAVAILABLE_BODY: usize = 1024;

/// How many of the earliest timers a full table looks through for a grace period to end
/// (`FrontEnd::make_room`): enough to pass the handshakes and handoffs under way, few
/// enough that a SYN to a table full of live connections costs little.
const EVICTION_SCAN: usize = 256;

/// A back-end: the address and port the handed-off connection goes to. Of the client's
/// family: a connection never mixes families, and a back-end of the other family is
/// never chosen for it (counted in [`Stats::backend_family_mismatches`] if a dispatcher
/// offers one).
pub type Backend = SocketAddr;

/// One client connection to one virtual service, as the client names it. Both addresses
/// are of one family (the packet's), IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The virtual service (VIP and port) the client connected to.
    pub service: SocketAddr,
}

/// The bytes the keyed hashes cover for a flow: `baton_common::syncookie::flow_bytes`
/// (IPv4, 12 bytes) or `flow_bytes_v6` (IPv6, 36), the layouts the fast path hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowBytes {
    V4([u8; 12]),
    V6([u8; 36]),
}

impl FlowKey {
    /// An IPv4 flow (the daemon's fast-path tables, which are IPv4's).
    pub fn v4(client: std::net::SocketAddrV4, service: std::net::SocketAddrV4) -> Self {
        Self {
            client: client.into(),
            service: service.into(),
        }
    }

    /// Whether the flow is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// Whether `backend` is of the flow's family, the only kind it may be handed to.
    pub fn same_family(&self, backend: &Backend) -> bool {
        self.client.is_ipv6() == backend.is_ipv6()
    }

    /// The bytes the keyed hashes cover: client address, service address, client port,
    /// service port, in network order. A flow's two addresses are of one family; were
    /// they not (no packet makes such a key), the IPv4 one is mapped into IPv6.
    pub(crate) fn to_bytes(self) -> FlowBytes {
        use baton_common::syncookie::{flow_bytes, flow_bytes_v6};
        let (cport, sport) = (self.client.port(), self.service.port());
        match (self.client.ip(), self.service.ip()) {
            (IpAddr::V4(c), IpAddr::V4(s)) => {
                FlowBytes::V4(flow_bytes(c.octets(), s.octets(), cport, sport))
            }
            (c, s) => FlowBytes::V6(flow_bytes_v6(v6_octets(c), v6_octets(s), cport, sport)),
        }
    }
}

/// An address's 16 bytes: IPv6's own, IPv4's mapped (RFC 4291 §2.5.5.2).
fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self.to_bytes() {
            FlowBytes::V4(b) => state.write(&b),
            FlowBytes::V6(b) => state.write(&b),
        }
    }
}

/// The content-aware decision: which back-end serves this request.
///
/// [`Dispatch::dispatch`] is called when a request head is complete, and again, with the
/// back-ends already tried in `exclude`, each time a handoff to a back-end fails, up to
/// [`Config::max_candidates`] back-ends in all. Returning a back-end already in `exclude`
/// counts as `None`. `None` for the first call answers the client 503 (or resets a TLS
/// client); `None` on a later call resets the client.
///
/// Everything a dispatcher learns comes in as an argument: the time of the input being
/// handled, and through [`Dispatch::feedback`] what became of each back-end it chose, so
/// that it never has to infer a failure from `exclude` or read a clock.
///
/// Implemented for closures `FnMut(&FlowKey, &ClientRequest, &[Backend]) -> Option<Backend>`
/// (which take no time and want no feedback).
pub trait Dispatch {
    /// Picks a back-end for `request` on `flow` at `now`, other than those in `exclude`.
    fn dispatch(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend>;

    /// What became of a connection this dispatcher chose a back-end for, at `now`. For
    /// each connection dispatched: one [`Feedback::Failed`] per back-end that did not
    /// take it (before the next [`Dispatch::dispatch`] call for it), at most one
    /// [`Feedback::HandedOff`], and one [`Feedback::Ended`], last. Does nothing by
    /// default.
    fn feedback(&mut self, now: Instant, flow: &FlowKey, feedback: Feedback) {
        let _ = (now, flow, feedback);
    }

    /// The fast path chose `backend` for `request` on `flow` at `now` and handed the
    /// connection off itself (kernel dispatch; [`FrontEnd::adopt_kernel_handoff`]): book
    /// it as a decision of this dispatcher's (rule hits, the access log's names). The
    /// feedback that follows is as for [`Dispatch::dispatch`]. Does nothing by default.
    fn assign(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        backend: Backend,
    ) {
        let _ = (now, flow, request, backend);
    }
}

/// Where [`FrontEnd::adopt_kernel_handoff`] has got within one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelHandoff {
    /// No adoption under way: the dispatcher decides.
    None,
    /// The fast path chose this back-end; the request is being parsed.
    Chosen(Backend),
    /// The choice was booked; the handoff starts without sending its SYN'.
    Sent,
    /// The connection is handing off, as if the core had sent the SYN'.
    Adopted,
}

impl<F> Dispatch for F
where
    F: FnMut(&FlowKey, &ClientRequest<'_>, &[Backend]) -> Option<Backend>,
{
    fn dispatch(
        &mut self,
        _now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        self(flow, request, exclude)
    }
}

/// The fast path's half-open map as the core reads it: the SYN options of clients without
/// timestamps whose SYN the XDP program answered with a cookie it marked
/// (`baton_common::syncookie`, "Clients without timestamps"). The core stays without I/O:
/// the caller lends it for one [`FrontEnd::handle_packet_with`] call; the daemon's
/// implementation is one lookup-and-delete system call on the BPF map, the simulation's
/// its model of the program's map. Asked only for a cookie that verified and is marked,
/// so once per such connection.
pub trait HalfOpenSyns {
    /// Removes `flow`'s entry and returns it, if there is one.
    fn take(&mut self, flow: &FlowKey) -> Option<HalfOpenSyn>;
}

/// No half-open map (no fast path, or none lent): a marked cookie finds its entry gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHalfOpenMap;

impl HalfOpenSyns for NoHalfOpenMap {
    fn take(&mut self, _flow: &FlowKey) -> Option<HalfOpenSyn> {
        None
    }
}

/// What the core tells the dispatcher of a connection it dispatched
/// ([`Dispatch::feedback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// `backend` did not take the connection; another is asked for, if
    /// [`Config::max_candidates`] allows, or the client is reset.
    Failed {
        /// The back-end that failed.
        backend: Backend,
        /// How.
        cause: HandoffFailure,
    },
    /// `backend` has the request: the handoff is complete, and the connection is the
    /// back-end's until it ends.
    HandedOff {
        /// The back-end that took it.
        backend: Backend,
    },
    /// The connection is over and freed (after its grace period, if it had one).
    Ended {
        /// The back-end it had been handed off to, if it was.
        handed_off: Option<Backend>,
        /// Why it was reset, or `None` for a clean close.
        reason: Option<ResetReason>,
    },
}

/// How a back-end failed a handoff ([`Feedback::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffFailure {
    /// It answered the SYN' with a RST: no listener, or its module refused the option.
    Refused,
    /// It stayed silent through every retransmission ([`Config::handoff_retries`]).
    Silent,
}

/// One thing the caller must do, in the order [`FrontEnd::poll_output`] gives them (see
/// "The order of outputs is the contract" above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a packet.
    Transmit(Transmit),
    /// Ask every back-end whether it holds the flow of this client segment (the IPv4
    /// packet as it arrived, checksums complete): a segment without timestamps of a flow
    /// the core does not know, which is no cookie's ACK ([`Config::probe_rate`];
    /// `baton_common::claim`). The caller sends it to each back-end as a probe frame;
    /// the one that holds the flow claims it to the fast path, which learns the flow and
    /// forwards the segment. Nothing comes back to the core.
    Probe(Vec<u8>),
    /// Change the fast path's flow table (and learn of a connection's end).
    Event(Event),
}

/// An IP packet to send, of the connection's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes: the client (packets from the VIP) or a back-end. Equal to the
    /// packet's destination address.
    pub destination: IpAddr,
    /// The whole IPv4 or IPv6 packet, checksums filled in.
    pub packet: Vec<u8>,
}

/// What the fast path's flow table must learn of (an [`Output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The back-end accepted the SYN' and the request went to it (the ACK'), not yet
    /// confirmed: the fast path may take the flow in, forwarding only client segments
    /// that prove the back-end has answered (they acknowledge data past the front-end's
    /// SYN/ACK, which only the back-end can have sent) and telling the core of the first
    /// ([`FrontEnd::note_backend_answered`]). The rest still come up to the core, which
    /// holds them until the handoff completes. Raised once per back-end tried; a
    /// [`Event::Reset`] follows if the handoff fails for good. Without it the client's
    /// reply to the response would often reach the core before the back-end's copy of
    /// that response, so every connection's last segments took the slow path.
    RequestSent(HandedOff),
    /// The back-end has the request: install the flow in the fast path (XDP forwarding
    /// table). From now on the client's packets go straight to `backend`.
    HandedOff(HandedOff),
    /// The connection ended cleanly (the client's FIN, or an error response delivered)
    /// and its grace period is over: remove any fast-path entry.
    Closed {
        /// The connection.
        flow: FlowKey,
        /// The back-end it was handed to, if it was.
        backend: Option<Backend>,
    },
    /// The connection was aborted, and is freed (after the grace period if it had been
    /// handed off): remove any fast-path entry.
    Reset {
        /// The connection.
        flow: FlowKey,
        /// The back-end it was handed to or being handed to, if any.
        backend: Option<Backend>,
        /// Why.
        reason: ResetReason,
    },
}

/// A handoff (completed, or under way for [`Event::RequestSent`]): what the fast path needs, and the terms the back-end's
/// translation was built from. `seq_delta` and `ts_delta` are not here: the back-end's
/// egress computes them from its own ISN and TSval, which the front-end never sees
/// (the SYN/ACK' it receives is already translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedOff {
    /// The connection.
    pub flow: FlowKey,
    /// Where its packets now go.
    pub backend: Backend,
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// The client's next sequence number as the front-end has seen it: where the fast
    /// path starts judging the client's FIN and RST
    /// (`baton_common::frontend::FrontendFlow::client_next`).
    pub client_next: u32,
    /// The front-end's initial sequence number, as the client knows it.
    pub isn_f: u32,
    /// The front-end's TSval (0 without timestamps).
    pub tsv_f: u32,
    /// The window shift the front-end announced (0 without window scaling).
    pub ws_f: u8,
    /// Whether timestamps were negotiated with the client.
    pub timestamps: bool,
    /// Whether SACK was negotiated with the client.
    pub sack: bool,
    /// The client sequence number just past the bytes replayed to the back-end.
    pub request_end: u32,
    /// 1 for the first back-end tried, 2 for the second, ...
    pub candidate: u8,
    /// In [`Event::HandedOff`]: the fast path saw the back-end's answer and told of it
    /// ([`FrontEnd::note_backend_answered`]), clearing its entry's wait itself, so the
    /// entry taken in at [`Event::RequestSent`] already forwards as it should.
    pub confirmed_by_fast_path: bool,
}

/// What a front-end must know to take over a handed-off connection from another (a
/// restarted daemon): see [`FrontEnd::handover`] and [`FrontEnd::adopt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// Where the connection's client packets go.
    pub backend: Backend,
    /// The client's initial sequence number: a SYN repeating it during the grace period
    /// is the old connection's and is forwarded, any other SYN starts a new connection
    /// on the 4-tuple (see [`Stats::time_wait_reused`]).
    pub client_isn: u32,
    /// The client's next sequence number, as the previous front-end saw it: a FIN or RST
    /// is acted on only there.
    pub client_next: u32,
    /// The client's FIN has been seen: the connection is in its grace period.
    pub client_fin: bool,
    /// The connection was reset ([`ResetReason::ClientReset`] or
    /// [`ResetReason::BackendReset`]) and is in its grace period.
    pub reset: Option<ResetReason>,
}

impl Handover {
    /// How far the close has got, as the fast path's table records it
    /// (`baton_common::frontend::FrontendFlow::close_state`): the daemon writes it for a
    /// successor, and the program reads it to tell a flow its client closed
    /// (`FrontendFlow::replaced_by_syn`).
    pub fn close_state(&self) -> u32 {
        use baton_common::frontend::FrontendFlow;
        let mut bits = 0;
        if self.client_fin {
            bits |= FrontendFlow::CLIENT_FIN;
        }
        match self.reset {
            None => {}
            Some(ResetReason::ClientReset) => bits |= FrontendFlow::CLIENT_RESET,
            Some(_) => bits |= FrontendFlow::BACKEND_RESET,
        }
        bits
    }
}

/// Why [`FrontEnd::adopt`] refused a connection. Each refusal is also counted in
/// [`Stats::adoptions_refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    /// The flow is already tracked.
    #[error("the flow is already tracked")]
    Exists,
    /// [`Config::max_connections`] connections are tracked.
    #[error("the connection table is full")]
    TableFull,
    /// The flow's service is not one of [`Config::services`].
    #[error("not a configured service")]
    NotAService,
    /// The back-end is of the other family than the flow: a connection never mixes them.
    #[error("the back-end's address family is not the client's")]
    FamilyMismatch,
}

/// Why a connection was reset or abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The client sent a RST.
    ClientReset,
    /// The back-end sent a RST after the handoff.
    BackendReset,
    /// The client sent a FIN before its request head was complete.
    ClientClosedEarly,
    /// The client never acknowledged the SYN/ACK.
    HandshakeTimeout,
    /// The request head was not complete within [`Config::request_timeout`].
    RequestTimeout,
    /// The client speaks TLS but its ClientHello is malformed (an HTTP answer means
    /// nothing to it).
    MalformedTls,
    /// A TLS client for which the dispatcher found no back-end.
    NoBackend,
    /// Every candidate back-end failed or refused the handoff.
    BackendsExhausted,
    /// The client never acknowledged an error response.
    ResponseUnacknowledged,
    /// Nothing was heard of a handed-off flow for [`Config::idle_timeout`].
    IdleTimeout,
}

/// Counters, readable by the daemon at any time. Every packet dropped or refused is in
/// one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets given to `handle_packet`.
    pub packets_received: u64,
    /// Packets that did not parse as IPv4 or IPv6 + TCP (truncated, bad checksum,
    /// fragment, an IPv6 extension header not crossed...).
    pub malformed: u64,
    /// Of those, IPv6 packets with a fragment header: the TCP header may be in another
    /// fragment, and the front-end does not reassemble (as for IPv4's fragments).
    pub ipv6_fragments: u64,
    /// Of those, IPv6 packets whose extension headers the walk does not cross (a routing
    /// header with segments left, AH, ESP, no next header, unknown, too many).
    pub ipv6_extension_headers_refused: u64,
    /// Back-ends of the other family than the client's: offered by the dispatcher
    /// (taken as no back-end), by the fast path ([`FrontEnd::adopt_kernel_handoff`],
    /// refused) or in a [`Handover`] ([`AdoptError::FamilyMismatch`]).
    pub backend_family_mismatches: u64,
    /// Packets neither to nor from a configured service.
    pub not_for_service: u64,
    /// Client SYNs received for unknown flows.
    pub syns_received: u64,
    /// SYN/ACKs sent, first transmissions, stateful and cookie.
    pub syn_acks_sent: u64,
    /// SYN/ACK retransmissions (timer or duplicate SYN).
    pub syn_ack_retransmits: u64,
    /// SYN/ACKs carrying a SYN cookie instead of creating state.
    pub syn_cookies_sent: u64,
    /// ACKs that carried a valid cookie and created a connection.
    pub syn_cookies_accepted: u64,
    /// SYNs dropped because a table was full and cookies are off.
    pub syns_dropped_table_full: u64,
    /// Valid cookie ACKs dropped because the connection table was full.
    pub cookie_acks_dropped_table_full: u64,
    /// Cookie SYN/ACKs the core sent to clients without timestamps that offered window
    /// scaling, SACK or ECN, offering none of them: the cookie cannot keep them, and the
    /// core keeps no half-open map of its own (the fast path's answers keep them in its
    /// map; these are the SYNs it passed up).
    pub syn_cookies_without_options: u64,
    /// Cookie ACKs the fast path had marked (a client without timestamps) whose SYN
    /// options were taken from its half-open map ([`HalfOpenSyns`]).
    pub half_open_entries_used: u64,
    /// Cookie ACKs the fast path had marked whose half-open entry was gone (evicted) or
    /// another connection's (another client ISN): reset, since the client's window
    /// shift is lost (see `on_cookie_ack`).
    pub half_open_entries_lost: u64,
    /// Handshakes completed (stateful or cookie).
    pub handshakes_completed: u64,
    /// Connections reset for lack of the handshake's ACK.
    pub handshake_timeouts: u64,
    /// Segments for no known flow that were neither SYN nor a valid cookie ACK.
    pub stray_segments: u64,
    /// RSTs sent in answer to stray segments (RFC 9293 §3.10.7.1).
    pub stray_resets_sent: u64,
    /// Client segments without timestamps of no known flow sent to the back-ends to
    /// claim ([`Output::Probe`]) instead of being reset.
    pub probes_sent: u64,
    /// Such segments dropped unanswered because the probes' rate was spent (not reset:
    /// the flow may be live on a back-end).
    pub probes_over_limit: u64,
    /// Stray ACKs dropped unanswered because every connection starts from a cookie
    /// ([`Config::every_syn_in_fast_path`]): one past a lost first segment fails the
    /// cookie's check but belongs to a live connection.
    pub stray_dropped_for_cookies: u64,
    /// Segments dropped by a connection: bad ACK, unacceptable RST, no ACK flag,
    /// unexpected flags for the state.
    pub unacceptable_segments: u64,
    /// New SYNs that ended a handed-off connection's grace period early, reusing its
    /// 4-tuple.
    pub time_wait_reused: u64,
    /// Of those, connections whose SYN the fast path answered (it removed the closed
    /// flow's entry), found by their first segment's cookie.
    pub time_wait_reused_by_fast_path: u64,
    /// Connections in their grace period ended early to make room in a full table for a
    /// new client (the one nearest its end each time; see `make_room`).
    pub time_wait_evicted: u64,
    /// Grace periods of handed-off connections that went on past their length because
    /// the client was heard in the meantime (a server still sending after the client's
    /// half-close, the client acknowledging): the timer re-armed from the last segment.
    pub time_wait_extended: u64,
    /// Client data segments beyond the next expected byte, dropped (not buffered).
    pub out_of_order_dropped: u64,
    /// Client bytes past the request limit, not buffered or acknowledged.
    pub request_bytes_trimmed: u64,
    /// Connections reset for an incomplete request head at the request timeout.
    pub request_timeouts: u64,
    /// Clients that closed (FIN) before their request head was complete.
    pub client_early_closes: u64,
    /// Client RSTs before the handoff completed, at exactly the next sequence number:
    /// the connection ended.
    pub client_resets_before_handoff: u64,
    /// Client RSTs in the window but not at exactly the next sequence number, before the
    /// handoff completed: answered with a challenge ACK, nothing else (RFC 5961 §3.2).
    pub client_resets_challenged: u64,
    /// Client RSTs out of the window, or (after the handoff, or in a close of the
    /// front-end's own) not at exactly the next sequence number: forwarded or dropped,
    /// and not acted on.
    pub client_resets_ignored: u64,
    /// Client FINs not at the next sequence number, during or after the handoff:
    /// forwarded, not acted on (`baton_common::frontend::judge_client_segment`).
    pub client_fins_ignored: u64,
    /// SYNs with FIN set: dropped unanswered, as Linux does.
    pub syn_fin_dropped: u64,
    /// Client RSTs the fast path forwarded and told of ([`FrontEnd::note_client_reset`]).
    pub client_resets_from_fast_path: u64,
    /// 400 Bad Request responses.
    pub responses_400: u64,
    /// 431 Request Header Fields Too Large responses.
    pub responses_431: u64,
    /// 503 Service Unavailable responses (no back-end).
    pub responses_503: u64,
    /// Error responses retransmitted.
    pub response_retransmits: u64,
    /// TLS clients reset: malformed ClientHello, or no back-end.
    pub tls_resets: u64,
    /// Handoffs started (first candidate).
    pub handoffs_started: u64,
    /// SYN's sent, all candidates, first transmissions.
    pub syn_primes_sent: u64,
    /// SYN' retransmissions (in a one-turn handoff: SYN''s sent again because the
    /// client resent its request).
    pub syn_prime_retransmits: u64,
    /// SYN''s that carried the request (the one-turn handoff, [`Config::one_turn`]),
    /// those the fast path sent included.
    pub requests_in_syn: u64,
    /// Handoffs the fast path made itself (kernel dispatch), adopted
    /// ([`FrontEnd::adopt_kernel_handoff`]).
    pub kernel_handoffs_adopted: u64,
    /// The fast path's word that a back-end answered, for a flow the core does not track
    /// (the caller holds such word for a handoff the fast path made until it adopts it).
    pub backend_answers_unknown: u64,
    /// Such word for a connection no longer (or not yet) awaiting its answer.
    pub backend_answers_out_of_phase: u64,
    /// Such handoffs the core did not come to adopt (the segment judged otherwise: a
    /// connection already on the ports, an incomplete request); the caller drops the fast
    /// path's entry.
    pub kernel_handoffs_refused: u64,
    /// Of those, handoffs whose back-end was sent resets: the fast path's SYN' had
    /// brought it the request, and its server would otherwise hold the half-open
    /// connection, repeating its SYN/ACK', until its own timers gave up.
    pub refused_handoffs_reset: u64,
    /// One-turn handoffs whose back-end took only the SYN (its SYN/ACK' acknowledged no
    /// data): the request went after it, as in the three-turn handoff.
    pub requests_after_syn_ack: u64,
    /// Handoffs that took the three turns although [`Config::one_turn`] is on, because
    /// the client's window was closed when its request was dispatched: the ACK' carries
    /// it, as the client sent it, where a SYN' announcing it would leave the back-end's
    /// answer waiting for a window update the core does not pass on.
    pub closed_window_handoffs: u64,
    /// SYN''s with the request sent again because neither the client (which resends an
    /// unacknowledged request) nor the back-end was heard from for a quiet period: the
    /// client's resends were lost, or it is gone. Counted in `syn_prime_retransmits` too.
    pub syn_primes_after_silence: u64,
    /// SYN/ACK's of one-turn handoffs (the server's repeats, its request taken with the
    /// SYN') answered with the client's ACK', which completes the server's handshake so
    /// that it sends its answer again if that was lost.
    pub syn_ack_repeats_answered: u64,
    /// SYN/ACK's from a back-end given up earlier in the same handoff, told by their echo
    /// of that back-end's SYN''s TSval: its server took the request after all and repeats
    /// its SYN/ACK'. Answered with resets, never taken for the current back-end's.
    pub earlier_backend_syn_acks: u64,
    /// SYN/ACK's acknowledging a one-turn request after a change of back-end, without an
    /// echo to tell whose (a client without timestamps): answered with the ACK' to the
    /// current back-end and resets to the earlier ones, and not taken as proof that the
    /// current back-end has the request.
    pub unattributed_syn_acks: u64,
    /// Client acknowledgements of an answer whose echo names (by a stamp that checks) a
    /// back-end given up earlier in the same handoff: its server, its handshake
    /// completed by its module, answered the client after all. That back-end becomes
    /// the connection's, and the one tried since gets resets (docs/design.md, "The
    /// answer names its back-end").
    pub earlier_backend_answers: u64,
    /// Client acknowledgements of an answer whose echo is marked as a stamp that checks
    /// for none of the back-ends tried: taken as the current back-end's proof, as an
    /// unstamped one is (a back-end that does not stamp sends TSvals with the mark's
    /// bit set half the time).
    pub unverified_answer_echoes: u64,
    /// ACK' and request retransmissions.
    pub request_retransmits: u64,
    /// Dispatched requests the front-end acknowledged itself, at the handoff's first
    /// timer, because the back-end had not (its acknowledgement normally reaches the
    /// client first and makes the front-end's unnecessary).
    pub request_acks_at_timer: u64,
    /// Back-end SYN/ACK's that did not match (wrong `seq` or `ack`), dropped.
    pub bad_syn_acks: u64,
    /// SYN/ACK's whose options disagree with what the client negotiated (timestamps or
    /// SACK missing, or no ECE where the client was granted ECN): the connection goes on,
    /// but this is a misconfigured back-end.
    pub backend_terms_mismatch: u64,
    /// Back-ends that reset a handoff.
    pub backend_refusals: u64,
    /// Back-ends abandoned after exhausting retransmissions.
    pub backend_timeouts: u64,
    /// Connections reset because every candidate failed.
    pub backends_exhausted: u64,
    /// Dispatcher answers of "no back-end" for a first request.
    pub no_backend: u64,
    /// Handoffs completed.
    pub handoffs_completed: u64,
    /// Client packets held during a handoff.
    pub packets_queued: u64,
    /// Client packets dropped because the handoff queue was full.
    pub queue_overflows: u64,
    /// Client packets forwarded to a back-end by the slow path (held ones and late ones).
    pub packets_forwarded: u64,
    /// Handoffs completed on the fast path's word that a client segment acknowledged
    /// the back-end's data ([`FrontEnd::note_backend_answered`]).
    pub handoffs_confirmed_by_fast_path: u64,
    /// Client FINs the fast path forwarded and told of ([`FrontEnd::note_client_fin`]).
    pub client_fins_from_fast_path: u64,
    /// Client FINs the fast path told of for flows no longer tracked (ended in between).
    pub client_fins_unknown: u64,
    /// Back-end FINs read after the handoff: the copy of a first answer that carried the
    /// FIN, reaching the core after the fast path confirmed the handoff, or a FIN copy
    /// from a back-end module of an older build (a rolling upgrade). Counted and ignored,
    /// since the close is tracked from the client's side.
    pub backend_fins_ignored: u64,
    /// Segments from a back-end for no known flow, or in a state that expects none.
    pub stray_backend_segments: u64,
    /// Flows freed after a clean close.
    pub closes: u64,
    /// Flows freed after a reset or timeout.
    pub resets: u64,
    /// Handed-off flows freed as idle.
    pub idle_timeouts: u64,
    /// Handed-off connections taken over from a previous front-end ([`FrontEnd::adopt`]).
    pub adopted: u64,
    /// Adoptions refused (flow already tracked, table full, unknown service).
    pub adoptions_refused: u64,
    /// Packets that could not be built (options overflow); never expected.
    pub emit_errors: u64,
    /// Packets not sent because the caller did not drain [`FrontEnd::poll_output`].
    pub output_overflows: u64,
    /// Events queued past `max_pending_outputs` (never dropped; see
    /// [`Config::max_pending_outputs`]): a caller that does not drain often enough.
    pub events_past_bound: u64,
    /// Connections currently tracked.
    pub connections: u64,
    /// Connections currently in SYN-RECEIVED.
    pub half_open: u64,
}

/// The front-end's state: every tracked connection, the timers, the output queues.
pub struct FrontEnd<D> {
    config: Config,
    dispatcher: D,
    secrets: Secrets,
    /// Connection slots; `None` is free. Never longer than `max_connections`.
    slots: Vec<Option<Connection>>,
    /// Free slot indices.
    free: Vec<u32>,
    flows: HashMap<FlowKey, u32, FlowHashBuilder>,
    /// Armed timers, one per connection at most, as (deadline, slot).
    timers: BTreeSet<(Instant, u32)>,
    /// What the caller must do, in order ([`FrontEnd::poll_output`]).
    outputs: VecDeque<Output>,
    stats: Stats,
    half_open: usize,
    /// Tracked connections that are handed off (forwarding or in their grace period).
    handed_off: usize,
    /// Tracked connections in their grace period, which a full table may end early
    /// ([`FrontEnd::make_room`]).
    time_wait: usize,
    responses: connection::Responses,
    /// Set only during [`FrontEnd::adopt_kernel_handoff`].
    kernel_handoff: KernelHandoff,
    /// The probes' rate limit ([`Config::probe_rate`]).
    probes: baton_common::claim::ProbeBudget,
}

impl<D: Dispatch> FrontEnd<D> {
    /// A front-end with no connections.
    pub fn new(config: Config, dispatcher: D) -> Result<Self, ConfigError> {
        config.validate()?;
        let secrets = Secrets::new(config.secret, config.handoff_key);
        let flows = HashMap::with_hasher(secrets.flow_hasher());
        Ok(Self {
            dispatcher,
            secrets,
            slots: Vec::new(),
            free: Vec::new(),
            flows,
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            half_open: 0,
            handed_off: 0,
            time_wait: 0,
            responses: connection::Responses::new(),
            kernel_handoff: KernelHandoff::None,
            probes: baton_common::claim::ProbeBudget::new(config.probe_rate),
            config,
        })
    }

    /// Sets the body of the 503 response sent when the dispatcher finds no back-end for
    /// an HTTP request (sent as `text/html`; empty by default). Responses already under
    /// way keep the body they started with.
    pub fn set_unavailable_body(&mut self, body: &[u8]) -> Result<(), ConfigError> {
        if body.len() > MAX_UNAVAILABLE_BODY {
            return Err(ConfigError::UnavailableBody(body.len()));
        }
        self.responses.set_unavailable_body(body);
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dispatcher, e.g. to update its back-end set.
    pub fn dispatcher_mut(&mut self) -> &mut D {
        &mut self.dispatcher
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many connections are tracked.
    pub fn connection_count(&self) -> usize {
        self.flows.len()
    }

    /// How many tracked connections ended here, never handed off: the front-end answered
    /// them itself (an error response, 400, 431 or 503, in `Closing`) or they were reset
    /// before a handoff, and they wait out their close or grace period (`TimeWait`).
    /// Neither in progress nor any back-end's. A walk over the table, for gauges read
    /// now and then (a metrics scrape), not per packet.
    pub fn answered_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|c| {
                !c.handed_off
                    && matches!(
                        c.state_name(),
                        connection::StateName::Closing | connection::StateName::TimeWait
                    )
            })
            .count()
    }

    /// What the fast path needs to answer SYNs with the cookies this front-end checks:
    /// its keys and TCP settings. [`SynCookieConfig::ENGAGED`] is left clear; the caller
    /// sets it while [`FrontEnd::wants_syn_cookies`]. So is [`SynCookieConfig::HALF_OPEN`]:
    /// the fast path that has a half-open map sets it, and lends the map to
    /// [`FrontEnd::handle_packet_with`].
    pub fn syn_cookie_config(&self) -> SynCookieConfig {
        SynCookieConfig {
            keys: self.secrets.cookie_keys(),
            flags: self.option_flags(),
            max_mss: self.config.mss,
            // Not scaled in a SYN (RFC 7323 §2.2); as the core's own SYN/ACKs.
            window: self.config.max_request_len.min(usize::from(u16::MAX)) as u16,
            window_shift: self.config.window_shift,
            _pad: [0; 7],
        }
    }

    /// The enabled options as [`SynCookieConfig`] flags, for the one choice of what a
    /// SYN/ACK agrees to (`baton_common::syncookie::agreed_options`).
    fn option_flags(&self) -> u32 {
        let mut flags = 0;
        if self.config.timestamps {
            flags |= SynCookieConfig::TIMESTAMPS;
        }
        if self.config.sack {
            flags |= SynCookieConfig::SACK;
        }
        if self.config.ecn {
            flags |= SynCookieConfig::ECN;
        }
        flags
    }

    /// Whether new SYNs should be answered with cookies rather than create state: cookies
    /// are on and the fast path answers every SYN ([`Config::every_syn_in_fast_path`]),
    /// or the half-open table is full, or the connection table is with no grace period
    /// to end for room (`FrontEnd::make_room`). `engaged` is
    /// the caller's current answer; once engaged, cookies stay until the half-open table
    /// is down to half, so that a flood's end is not mistaken for its gaps.
    pub fn wants_syn_cookies(&self, engaged: bool) -> bool {
        if !self.config.syn_cookies {
            return false;
        }
        if self.config.every_syn_in_fast_path {
            return true;
        }
        let max = self.config.max_half_open;
        self.half_open >= max
            || (engaged && self.half_open > max / 2)
            || (self.table_full() && self.time_wait == 0)
    }

    /// How many tracked connections are not handed off: in their handshake, receiving
    /// their request, being handed off, or closing with an error response. These are the
    /// ones only this front-end can finish; a handed-off one can be adopted by another
    /// ([`FrontEnd::adopt`]).
    pub fn unfinished_count(&self) -> usize {
        self.flows.len() - self.handed_off
    }

    /// The state of `flow`'s connection, if tracked (for tests and `baton status`).
    pub fn connection_state(&self, flow: &FlowKey) -> Option<StateName> {
        let &slot = self.flows.get(flow)?;
        self.slots
            .get(slot as usize)?
            .as_ref()
            .map(|c| c.state_name())
    }

    /// Handles one IPv4 packet (no link-layer header) that arrived for a service: from a
    /// client, or from a back-end's egress. Never panics; anything it cannot use is
    /// counted in [`Stats`] and dropped. With no half-open map to read: for a front-end
    /// whose fast path keeps none ([`FrontEnd::handle_packet_with`]).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.handle_packet_with(now, packet, &mut NoHalfOpenMap);
    }

    /// [`FrontEnd::handle_packet`], with the fast path's half-open map lent for the call:
    /// a client's first data segment whose cookie the fast path marked takes its SYN's
    /// options from there.
    pub fn handle_packet_with(&mut self, now: Instant, packet: &[u8], syns: &mut dyn HalfOpenSyns) {
        self.stats.packets_received += 1;
        self.take_packet(now, packet, syns);
    }

    /// [`FrontEnd::handle_packet_with`] without counting a packet received: also the
    /// way in for a request the fast path handed off itself, which the slow path never
    /// received.
    fn take_packet(&mut self, now: Instant, packet: &[u8], syns: &mut dyn HalfOpenSyns) {
        let (ip, tcp) = match packet::parse(packet, self.config.checksums) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.stats.malformed += 1;
                match error {
                    crate::wire::WireError::Ipv6Fragment { .. } => self.stats.ipv6_fragments += 1,
                    crate::wire::WireError::Ipv6ExtensionHeader { .. }
                    | crate::wire::WireError::TooManyIpv6ExtensionHeaders => {
                        self.stats.ipv6_extension_headers_refused += 1;
                    }
                    _ => {}
                }
                return;
            }
        };
        let dst = SocketAddr::new(ip.dst_addr(), tcp.dst_port);
        let src = SocketAddr::new(ip.src_addr(), tcp.src_port);
        if self.config.services.contains(&dst) {
            let flow = FlowKey {
                client: src,
                service: dst,
            };
            self.on_client_segment(now, flow, &ip, &tcp, packet, syns);
        } else if self.config.services.contains(&src) {
            let flow = FlowKey {
                client: dst,
                service: src,
            };
            self.on_backend_segment(now, flow, &tcp);
        } else {
            self.stats.not_for_service += 1;
        }
    }

    /// A handoff the fast path made itself (kernel dispatch; docs/design.md, "Dispatch
    /// in the kernel"): `packet` is the client's request segment as it arrived (an IPv4
    /// packet, its cookie in the acknowledgement), `backend` the back-end the fast path
    /// chose and sent the SYN' with the request to, the flow already in its table
    /// awaiting the answer. The core builds the connection exactly as for a request it
    /// hands off itself in one turn (the cookie checked, the request parsed, the
    /// dispatcher told through [`Dispatch::assign`], [`Event::RequestSent`] emitted) and
    /// sends nothing now; from then on it is one of its own, its loss and failure
    /// handling included. `false` if it did not come to the handoff (a segment the core
    /// judges otherwise, counted), for the caller to drop the fast path's entry.
    pub fn adopt_kernel_handoff(&mut self, now: Instant, packet: &[u8], backend: Backend) -> bool {
        struct NoHalfOpenSyns;
        impl HalfOpenSyns for NoHalfOpenSyns {
            // The fast path hands off no client whose options wait in its half-open map.
            fn take(&mut self, _: &FlowKey) -> Option<HalfOpenSyn> {
                None
            }
        }
        // The fast path hands a client to a back-end of its own family; one of the other
        // would be a bug there, refused here rather than mixing families.
        let client_is_v6 = packet.first().map(|b| b >> 4) == Some(6);
        if client_is_v6 != backend.is_ipv6() {
            self.stats.backend_family_mismatches += 1;
            self.stats.kernel_handoffs_refused += 1;
            return false;
        }
        self.kernel_handoff = KernelHandoff::Chosen(backend);
        self.take_packet(now, packet, &mut NoHalfOpenSyns);
        let adopted = self.kernel_handoff == KernelHandoff::Adopted;
        self.kernel_handoff = KernelHandoff::None;
        if !adopted {
            self.stats.kernel_handoffs_refused += 1;
            self.reset_refused_handoff(packet, backend);
        }
        adopted
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, slot)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(mut conn) = self.take(slot) else {
                continue;
            };
            conn.timer = None;
            match self.on_timeout(now, slot, &mut conn) {
                connection::Next::Keep => self.put(slot, conn),
                connection::Next::Free | connection::Next::Replay => self.release(slot, conn),
            }
        }
    }

    /// Tells the front-end that the fast path forwarded a client segment of `flow` at
    /// `last_seen` (the stamp the daemon reads from the XDP table; taken as `now` if
    /// later), pushing back its idle timeout and, once the client has closed, the end of
    /// its grace period. An older stamp than one already noted changes nothing.
    pub fn note_activity(&mut self, now: Instant, flow: &FlowKey, last_seen: Instant) {
        let Some(&slot) = self.flows.get(flow) else {
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        // The connection's timer re-arms itself from this when it fires. The stamp's
        // own time rather than `now`: a stamp read after the client's FIN was told is
        // often the FIN's own, which is no sign of life (`make_room` tells a grace
        // period whose client was heard in it from one whose was not).
        conn.last_heard = conn.last_heard.max(last_seen.min(now));
        self.put(slot, conn);
    }

    /// The fast path forwarded `flow`'s client FIN itself (the FIN never reaches
    /// [`FrontEnd::handle_packet`]): tracked as if the slow path had forwarded it, so the
    /// grace period starts and a new SYN on the port is told from the old connection's.
    /// A flow not forwarding (unknown, or already in its grace period) is left as it is.
    pub fn note_client_fin(&mut self, now: Instant, flow: &FlowKey) {
        let Some(&slot) = self.flows.get(flow) else {
            self.stats.client_fins_unknown += 1;
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        if conn.handed_off {
            self.stats.client_fins_from_fast_path += 1;
            self.client_closed(now, slot, &mut conn);
        }
        self.put(slot, conn);
    }

    /// The fast path forwarded `flow`'s client RST, at exactly the sequence number the
    /// connection expected (it tells of no other): the grace period starts, as if the
    /// slow path had forwarded it. A flow not forwarding is left as it is.
    pub fn note_client_reset(&mut self, now: Instant, flow: &FlowKey) {
        let Some(&slot) = self.flows.get(flow) else {
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        if conn.handed_off && conn.state == connection::State::Forwarding {
            self.stats.client_resets_from_fast_path += 1;
            self.client_reset_noted(now, slot, &mut conn);
        }
        self.put(slot, conn);
    }

    /// The client's ISN of the connection the core tracks on `flow`, if it is not closed
    /// (in its grace period or closing). The fast path's notices name the connection's
    /// ISN, so that one is applied only to the connection it is of; one of no open
    /// connection is of a new connection on the same ports, which the fast path answered
    /// and handed off itself and the core has not adopted yet.
    pub fn tracks_open_isn(&self, flow: &FlowKey) -> Option<u32> {
        self.slot_of(flow)
            .and_then(|slot| self.slots.get(slot as usize)?.as_ref())
            .filter(|conn| {
                !matches!(
                    conn.state_name(),
                    connection::StateName::TimeWait | connection::StateName::Closing
                )
            })
            .map(connection::Connection::client_isn)
    }

    /// The fast path forwarded a client segment of `flow` acknowledging data only its
    /// back-end can have sent (see [`Event::RequestSent`]): if the handoff is still
    /// waiting for the back-end's confirmation, it is complete now ([`Event::HandedOff`]
    /// follows). Otherwise nothing changes.
    pub fn note_backend_answered(&mut self, now: Instant, flow: &FlowKey) {
        let Some(&slot) = self.flows.get(flow) else {
            self.stats.backend_answers_unknown += 1;
            return;
        };
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        match self.backend_answered(now, slot, &mut conn) {
            connection::Next::Keep => self.put(slot, conn),
            connection::Next::Free | connection::Next::Replay => self.release(slot, conn),
        }
    }

    /// What to keep of `flow` so that another front-end can [`FrontEnd::adopt`] it:
    /// `Some` once it is handed off (forwarding, or in its grace period after a close
    /// or reset), `None` otherwise.
    pub fn handover(&self, flow: &FlowKey) -> Option<Handover> {
        let &slot = self.flows.get(flow)?;
        self.slots.get(slot as usize)?.as_ref()?.handover()
    }

    /// Takes over a connection that another front-end handed off (a restarted daemon
    /// adopting the flows it finds in the pinned fast-path table). From now on it is
    /// tracked as if handed off here: client segments that reach the slow path are
    /// forwarded to `handover.backend`, the client's FIN and RSTs either way are tracked,
    /// and [`Event::Closed`] or [`Event::Reset`] is raised when it ends (or it is freed as
    /// idle after [`Config::idle_timeout`]). With the client's FIN seen, or a reset, it
    /// starts a full grace period ([`Config::time_wait`]) from `now`: the old one's end
    /// is not known, and longer is the safe side. Sends nothing and raises no event; the
    /// dispatcher is told of it as a handoff ([`Feedback::HandedOff`]).
    pub fn adopt(
        &mut self,
        now: Instant,
        flow: FlowKey,
        handover: Handover,
    ) -> Result<(), AdoptError> {
        let refused = if !self.config.services.contains(&flow.service) {
            Some(AdoptError::NotAService)
        } else if !flow.same_family(&handover.backend) {
            self.stats.backend_family_mismatches += 1;
            Some(AdoptError::FamilyMismatch)
        } else if self.flows.contains_key(&flow) {
            Some(AdoptError::Exists)
        } else {
            None
        };
        if let Some(error) = refused {
            self.stats.adoptions_refused += 1;
            return Err(error);
        }
        let Some(slot) = self.allocate() else {
            self.stats.adoptions_refused += 1;
            return Err(AdoptError::TableFull);
        };
        let mut conn = Connection::adopted(flow, &handover, self.config.ttl);
        conn.last_heard = now;
        let deadline = match conn.state_name() {
            StateName::Forwarding => self.idle_deadline(&conn),
            _ => now + self.config.time_wait,
        };
        self.arm(slot, &mut conn, deadline);
        self.insert(slot, conn);
        self.stats.adopted += 1;
        // The dispatcher counts it as its back-end's until it ends, as if handed off here.
        self.dispatcher.feedback(
            now,
            &flow,
            Feedback::HandedOff {
                backend: handover.backend,
            },
        );
        Ok(())
    }

    /// The next thing to do: apply each completely, in the order given, before the next
    /// (see "The order of outputs is the contract" above).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`FrontEnd::handle_timeout`] next, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    // ----- plumbing shared by the state handlers -----

    fn slot_of(&self, flow: &FlowKey) -> Option<u32> {
        self.flows.get(flow).copied()
    }

    /// Moves a connection out of its slot so that handlers can borrow `self` freely.
    fn take(&mut self, slot: u32) -> Option<Connection> {
        self.slots.get_mut(slot as usize)?.take()
    }

    fn put(&mut self, slot: u32, conn: Connection) {
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            *entry = Some(conn);
        }
    }

    /// A free slot, or `None` when `max_connections` are tracked.
    fn allocate(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        if self.slots.len() >= self.config.max_connections {
            return None;
        }
        self.slots.push(None);
        // validate() bounds max_connections to u32.
        Some((self.slots.len() - 1) as u32)
    }

    fn table_full(&self) -> bool {
        self.free.is_empty() && self.slots.len() >= self.config.max_connections
    }

    /// Frees a slot in a full table by ending the grace period nearest its end, if one
    /// is among the [`EVICTION_SCAN`] earliest timers; `true` if the table has room.
    ///
    /// Clients from many addresses fill the table with grace periods at any sustained
    /// rate above `max_connections / time_wait` (2,184 a second with the defaults), and
    /// a grace period only forwards late retransmissions, while the back-end keeps the
    /// real TIME-WAIT. So a new connection takes the place of the oldest one, as Linux
    /// stops keeping TIME-WAIT sockets past `tcp_max_tw_buckets`. Live connections are
    /// never ended for a new one, and neither is a grace period whose client was heard
    /// since its timer was armed: after the client's half-close the server may still be
    /// sending, which only the client's ACKs show (Linux keeps a FIN-WAIT-2 socket past
    /// `tcp_max_tw_buckets` too). Timers are ordered by deadline and every grace period
    /// lasts `time_wait` from its client's last segment, so the first quiet one met is
    /// the oldest; the scan is bounded because the earliest timers may all be
    /// handshakes, handoffs and busy grace periods.
    fn make_room(&mut self, now: Instant) -> bool {
        if !self.table_full() {
            return true;
        }
        // A table full of live connections: nothing to look for, on every SYN.
        if self.time_wait == 0 {
            return false;
        }
        let victim = self
            .timers
            .iter()
            .take(EVICTION_SCAN)
            .map(|&(_, slot)| slot)
            .find(|&slot| {
                self.slots
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| {
                        c.state_name() == connection::StateName::TimeWait
                            && !c.heard_during_grace(self.config.time_wait)
                    })
            });
        let Some(slot) = victim else {
            return false;
        };
        let Some(conn) = self.take(slot) else {
            return false;
        };
        self.stats.time_wait_evicted += 1;
        self.end_grace(now, &conn);
        self.release(slot, conn);
        true
    }

    /// Inserts a new connection.
    fn insert(&mut self, slot: u32, conn: Connection) {
        self.flows.insert(conn.flow, slot);
        if conn.state_name() == connection::StateName::SynReceived {
            self.half_open += 1;
        }
        if conn.handed_off {
            self.handed_off += 1;
        }
        if conn.state_name() == connection::StateName::TimeWait {
            self.time_wait += 1;
        }
        self.put(slot, conn);
        self.update_gauges();
    }

    /// Frees a connection taken out of `slot`: timer, flow entry, slot.
    fn release(&mut self, slot: u32, conn: Connection) {
        if let Some(deadline) = conn.timer {
            self.timers.remove(&(deadline, slot));
        }
        if conn.state_name() == connection::StateName::SynReceived {
            self.half_open = self.half_open.saturating_sub(1);
        }
        if conn.handed_off {
            self.handed_off = self.handed_off.saturating_sub(1);
        }
        if conn.state_name() == connection::StateName::TimeWait {
            self.time_wait = self.time_wait.saturating_sub(1);
        }
        self.flows.remove(&conn.flow);
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            *entry = None;
        }
        self.free.push(slot);
        self.update_gauges();
    }

    fn update_gauges(&mut self) {
        self.stats.connections = self.flows.len() as u64;
        self.stats.half_open = self.half_open as u64;
    }

    /// Arms the connection's single timer for `deadline`, replacing any earlier one.
    fn arm(&mut self, slot: u32, conn: &mut Connection, deadline: Instant) {
        if let Some(old) = conn.timer.take() {
            self.timers.remove(&(old, slot));
        }
        self.timers.insert((deadline, slot));
        conn.timer = Some(deadline);
    }

    fn transmit(&mut self, packet: Result<Vec<u8>, crate::wire::WireError>) {
        let Ok(packet) = packet else {
            self.stats.emit_errors += 1;
            return;
        };
        if self.outputs.len() >= self.config.max_pending_outputs {
            self.stats.output_overflows += 1;
            return;
        }
        // The destination address is bytes 16..20 of the IPv4 header `build` wrote,
        // 24..40 of the IPv6 one.
        let destination = match packet.first().map(|b| b >> 4) {
            Some(6) => packet
                .get(24..40)
                .and_then(|d| <[u8; 16]>::try_from(d).ok())
                .map_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), IpAddr::from),
            _ => packet
                .get(16..20)
                .and_then(|d| <[u8; 4]>::try_from(d).ok())
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::from),
        };
        self.outputs.push_back(Output::Transmit(Transmit {
            destination,
            packet,
        }));
    }

    /// Queues `event`, past `max_pending_outputs` too (counted in
    /// `Stats::events_past_bound`): a dropped event would leave the fast path's table out
    /// of step with the core for good (a flow's entry never removed forwards the next
    /// connection on its ports to the old back-end), where a dropped packet is only a
    /// loss TCP repairs. Each event is one connection's change of state, so they are as
    /// bounded as the work of one call.
    fn emit(&mut self, event: Event) {
        if self.outputs.len() >= self.config.max_pending_outputs {
            self.stats.events_past_bound += 1;
        }
        self.outputs.push_back(Output::Event(event));
    }
}
