//! What the operator decides: services, TCP terms, limits, timers and secrets.

use std::{net::SocketAddr, time::Duration};

use crate::request::{DEFAULT_MAX_HEAD_LEN, MAX_HEADERS, RequestLimits};
use crate::wire::Checksums;

/// Most back-ends one connection may be handed to before the client is reset; the bound
/// of [`Config::max_candidates`], so that the list of tried back-ends is a fixed array in
/// the connection rather than a growable vector.
pub const MAX_CANDIDATES: usize = 4;

/// The smallest MSS every IPv4 host must accept (RFC 9293 §3.7.1, RFC 879).
pub const MIN_MSS: u16 = 536;

/// The front-end's configuration. [`Config::default`] gives working values for a LAN;
/// only [`Config::services`] and the two secrets must be set.
#[derive(Clone)]
pub struct Config {
    /// The virtual services (VIP and port) whose connections the front-end handles.
    /// A packet to anything else is dropped and counted. IPv4 and IPv6 alike: a
    /// client's family picks the VIP addresses (and back-ends) of that family.
    pub services: Vec<SocketAddr>,
    /// Local secret for ISNs (RFC 6528), timestamp offsets (RFC 7323 §7.1), SYN cookies
    /// (RFC 4987 §3.6) and the flow table's hash. Random at start-up, never shared. A
    /// restart with a new secret invalidates outstanding cookies, nothing else.
    pub secret: [u8; 16],
    /// The key shared with the back-ends for the handoff option's tag
    /// ([`baton_common::handoff_option`]).
    pub handoff_key: [u8; 16],
    /// Largest MSS the front-end announces to IPv4 clients; the SYN/ACK carries the
    /// smaller of this and the client's (RFC 9293 §3.7.1). IPv6 clients get 20 bytes
    /// less ([`Config::mss_for`]): the same MTU carries IPv6's 40-byte header.
    pub mss: u16,
    /// `ws_f`: the window-scale shift announced to clients that offer window scaling
    /// (RFC 7323 §2). At most 14.
    pub window_shift: u8,
    /// Whether to agree to SACK when a client offers it (RFC 2018 §2).
    pub sack: bool,
    /// Whether to agree to timestamps when a client offers them (RFC 7323 §3).
    pub timestamps: bool,
    /// Whether to grant ECN to a client whose SYN asks for it (ECE and CWR, RFC 3168
    /// §6.1.1), as a Linux server does: the SYN/ACK carries ECE and the SYN' the client's
    /// ECE and CWR, so the back-end's kernel negotiates ECN with the client too. A
    /// back-end that refuses it (Linux with `net.ipv4.tcp_ecn = 0`) leaves the client
    /// believing in an ECN the back-end ignores; the back-end module then drops the
    /// client's CE-marked segments, which turns those congestion marks into the losses a
    /// path without ECN would have had (RFC 6040 §4.2's rule for a Not-ECT inner header),
    /// and the front-end counts the connection in `backend_terms_mismatch`. The request's
    /// own segments, received here and replayed Not-ECT, lose any CE mark they carried
    /// (at most `max_request_len` bytes once per connection).
    pub ecn: bool,
    /// Largest request head the front-end buffers before dispatching, and the most
    /// bytes it acknowledges itself (default 16 KiB).
    pub max_request_len: usize,
    /// Most HTTP header fields in a request head, at most [`MAX_HEADERS`].
    pub max_headers: usize,
    /// Most connections tracked at once, in every state. The flow table never grows past
    /// it; a SYN that finds it full is answered with a SYN cookie.
    pub max_connections: usize,
    /// Most connections in SYN-RECEIVED at once; past it new SYNs get SYN cookies and no
    /// state (RFC 4987 §3.6).
    pub max_half_open: usize,
    /// Whether to answer with SYN cookies when a table is full; without, such SYNs are
    /// dropped.
    pub syn_cookies: bool,
    /// Whether the fast path answers every SYN with a cookie, not only under a flood
    /// ([`super::FrontEnd::wants_syn_cookies`]; needs `syn_cookies`): the handshake then
    /// costs the slow path nothing, and the core meets the connection at its first data
    /// segment, which brings the cookie back. A client without timestamps keeps window
    /// scaling, SACK and ECN through the fast path's half-open map
    /// ([`super::HalfOpenSyns`]; docs/design.md, "SYN floods").
    pub every_syn_in_fast_path: bool,
    /// First SYN/ACK retransmission timeout (RFC 6298 §2.1: 1 s).
    pub syn_ack_rto: Duration,
    /// SYN/ACK retransmissions before the handshake times out; the handshake timeout is
    /// therefore `syn_ack_rto * (2^(retries + 1) - 1)` (15 s with the defaults).
    pub syn_ack_retries: u8,
    /// Time from the handshake's completion to a complete request head; past it the
    /// client is reset (slowloris).
    pub request_timeout: Duration,
    /// First retransmission timeout of the handoff's SYN' and request segments. The
    /// back-ends are on the LAN, so this is far below a WAN RTO.
    pub handoff_rto: Duration,
    /// Retransmissions to one back-end before trying the next candidate.
    pub handoff_retries: u8,
    /// Back-ends tried per connection before resetting the client, 1..=[`MAX_CANDIDATES`].
    pub max_candidates: u8,
    /// The one-turn handoff (docs/design.md, "One-turn handoff"): a request that fits
    /// in one segment rides in the SYN', nothing waits for the back-end's SYN/ACK', and
    /// the client's retransmissions of its request, not timers, drive the SYN''s. Needs
    /// back-end modules that complete the server's handshake themselves; a back-end
    /// whose SYN/ACK' shows it took only the SYN gets the request as before.
    pub one_turn: bool,
    /// Client packets held per connection while a handoff is under way.
    pub max_queued_packets: usize,
    /// Client bytes (whole IPv4 packets) held per connection while a handoff is under way.
    pub max_queued_bytes: usize,
    /// First retransmission timeout of an error response (431, 400, 503) to the client.
    pub response_rto: Duration,
    /// Retransmissions of an error response before the client is reset.
    pub response_retries: u8,
    /// TIME-WAIT-like grace after a close (the client's FIN, or a RST either way) before
    /// the flow is freed, so late retransmissions still reach the back-end. Linux waits
    /// 60 s (`TCP_TIMEWAIT_LEN`); the back-end keeps the real TIME-WAIT, so less is
    /// enough. Once handed off, it lasts until the client has been quiet this long: the
    /// front-end never sees the server's FIN, so after the client's half-close the
    /// server may still be sending, and the client's ACKs keep the flow. A full table
    /// ends the quiet grace period nearest its end for a new client.
    pub time_wait: Duration,
    /// A handed-off flow the slow path has not heard of for this long is freed. The
    /// fast path forwards without telling, so the daemon reports activity it sees in the
    /// XDP table with [`super::FrontEnd::note_activity`]. It is also what frees a flow
    /// whose client went away without a FIN or RST (the server's FIN, which the
    /// front-end no longer sees, could not shorten it).
    pub idle_timeout: Duration,
    /// Most outputs waiting in [`super::FrontEnd::poll_output`]: a guard for a caller
    /// that does not drain. Packets past it are dropped (`Stats::output_overflows`);
    /// events are queued all the same and counted (`Stats::events_past_bound`), since a
    /// dropped [`super::Event`] would leave the fast path out of step. A caller must
    /// drain often enough never to reach it.
    pub max_pending_outputs: usize,
    /// Whether to verify IPv4 and TCP checksums of incoming packets. `Trust` is for
    /// packets whose checksums the NIC verified, or test fixtures.
    pub checksums: Checksums,
    /// TTL of packets the front-end originates.
    pub ttl: u8,
    /// Probes a second at most ([`super::Output::Probe`]; docs/design.md, "Clients
    /// without timestamps: probe and claim"): a client segment without timestamps of a
    /// flow no one here knows, which is no cookie's ACK, is sent to the back-ends to
    /// claim rather than reset. 0 (the default here; the daemon's is 1,000) keeps the
    /// reset.
    pub probe_rate: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            secret: [0; 16],
            handoff_key: [0; 16],
            mss: 1460,
            window_shift: 7,
            sack: true,
            timestamps: true,
            ecn: true,
            max_request_len: DEFAULT_MAX_HEAD_LEN,
            max_headers: 100,
            max_connections: 65_536,
            max_half_open: 4_096,
            syn_cookies: true,
            every_syn_in_fast_path: false,
            syn_ack_rto: Duration::from_secs(1),
            syn_ack_retries: 3,
            request_timeout: Duration::from_secs(10),
            handoff_rto: Duration::from_millis(200),
            handoff_retries: 3,
            max_candidates: 3,
            one_turn: false,
            max_queued_packets: 32,
            max_queued_bytes: 64 * 1024,
            response_rto: Duration::from_secs(1),
            response_retries: 3,
            time_wait: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3600),
            max_pending_outputs: 8192,
            checksums: Checksums::Verify,
            ttl: 64,
            probe_rate: 0,
        }
    }
}

impl Config {
    /// Checks the values that would make the state machine misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.services.is_empty() {
            return Err(ConfigError::NoServices);
        }
        if self.window_shift > baton_common::translate::MAX_WINDOW_SHIFT {
            return Err(ConfigError::WindowShift(self.window_shift));
        }
        if self.mss < MIN_MSS {
            return Err(ConfigError::Mss(self.mss));
        }
        if self.max_candidates == 0 || usize::from(self.max_candidates) > MAX_CANDIDATES {
            return Err(ConfigError::Candidates(self.max_candidates));
        }
        if self.max_request_len == 0 || self.max_headers == 0 || self.max_headers > MAX_HEADERS {
            return Err(ConfigError::RequestLimits);
        }
        if self.max_connections == 0 || u32::try_from(self.max_connections).is_err() {
            return Err(ConfigError::Connections(self.max_connections));
        }
        Ok(())
    }

    /// The largest MSS announced to a client of the family `ipv6` says: [`Config::mss`]
    /// for IPv4, 20 bytes less for IPv6, whose fixed header is 40 bytes to IPv4's 20
    /// (`baton_common::ipv6::ipv6_mss`: the MTU less 60), never below [`MIN_MSS`].
    pub fn mss_for(&self, ipv6: bool) -> u16 {
        if ipv6 {
            self.mss.saturating_sub(20).max(MIN_MSS)
        } else {
            self.mss
        }
    }

    /// The request parser's limits.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_head_len: self.max_request_len,
            max_headers: self.max_headers,
        }
    }
}

/// A configuration the front-end refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No virtual service to answer for.
    #[error("no services configured")]
    NoServices,
    /// A window shift above 14 (RFC 7323 §2.3).
    #[error("window shift {0} above 14")]
    WindowShift(u8),
    /// An MSS below the IPv4 minimum of 536.
    #[error("MSS {0} below 536")]
    Mss(u16),
    /// A candidate count outside 1..=MAX_CANDIDATES.
    #[error("max_candidates {0} outside 1..=4")]
    Candidates(u8),
    /// A zero request length, or a header count outside 1..=128.
    #[error("bad request limits")]
    RequestLimits,
    /// A connection limit of zero or beyond u32.
    #[error("max_connections {0} out of range")]
    Connections(usize),
    /// A 503 body longer than [`super::MAX_UNAVAILABLE_BODY`].
    #[error("a 503 body of {0} bytes; at most 1024 fit the one segment it is sent in")]
    UnavailableBody(usize),
}
