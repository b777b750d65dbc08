//! Dispatch in the kernel (issue 19): what the front-end's XDP program needs to hand off
//! a request whose head arrives whole in one segment without the slow path. The request
//! matcher and the compiled rules live here as pure functions over plain bytes, called
//! by the XDP program (`baton-ebpf`'s `dispatch.rs`, one step per `bpf_loop` iteration)
//! and by the host tests, which compare them with `baton-dispatch`.
//!
//! The kernel answers only when it can answer exactly as the slow path would; anything
//! else is [`KernelDecision::SLOW_PATH`] with a [`reason`], and the daemon decides as
//! without the kernel path. The pieces, in the order a request meets them:
//!
//! 1. [`RequestScan`]: the request head, copied into a [`SCRATCH_LEN`]-byte buffer, read
//!    a run of plain bytes at a time and byte by byte between them ([`RequestScan::step`]
//!    reads [`SCAN_STEP_MOVES`] bytes through its state machine). It accepts only a
//!    head `baton_proto::request::parse_request` parses to the same method, path, Host and
//!    extension: an upper-case method, an origin-form path that is already normal
//!    (nothing to decode, no `//`, no dot segments), `HTTP/1.0` or `HTTP/1.1`, CRLF line
//!    ends, token header names, printable header values, one Host of host-name bytes
//!    (lower-cased in place, port and trailing dot cut as `RequestView` does), ending
//!    with the empty line exactly at the segment's end. Or, for a segment that starts
//!    with a TLS handshake record, [`HelloScan`]: a ClientHello whole in one record that
//!    is the whole segment, read field by field ([`HelloScan::step`], one field a step)
//!    as `parse_client_hello` reads it, its SNI lower-cased and taken as the host.
//! 2. [`CookieWalk`], when the request has Cookie fields and the rules or a sticky pool
//!    read cookies: the cookies the rule set names, found as `RequestView::cookie` finds
//!    them ([`COOKIE_STEP_MOVES`] runs and bytes a step).
//! 3. [`RuleEval`]: the rules as one postfix program of [`KernelTerm`]s in `[dispatch]`
//!    order, in three-valued (Kleene) logic: a condition the kernel cannot judge (a
//!    regex, a header, a cookie it does not read) is *unknown*, and a rule whose
//!    condition is unknown stops the program with the slow path, so a later rule is never
//!    taken where an earlier one might have matched.
//! 4. The pool ([`KernelPool`]): its sticky cookie first (by id: the id's first eight
//!    bytes, one word, find the member, and confirm it unless the id is longer,
//!    [`StickyId`]; by hash: rendezvous), then round robin over a slot
//!    array that is one period of nginx's smooth weighted round robin, or rendezvous
//!    hashing of the path, URL or Host over the pool's members exactly as
//!    `baton-dispatch` does it ([`hash_bytes`], [`mix64`]: the one definition both use).
//!
//! Every table the program reads is bounded (the `MAX_*` constants); a configuration
//! past a bound compiles the affected conditions or pools to "slow path", never to a
//! wrong answer.

use crate::{
    frontend::FrontendFlow,
    handoff_option::{HANDOFF_OPTION_LEN, HandoffBinding, HandoffOption},
    siphash::SipKey,
    syn_prime::{SynPrime, window_in_syn},
    syncookie::{Cookie, KeptOptions, SynCookieConfig, decode_ts_options},
};

/// Entries of the back-ends table (`FRONTEND_BACKENDS`, an array): every back-end of
/// every pool the kernel may pick, indexed as the compiled pools name them.
pub const MAX_KERNEL_BACKENDS: u32 = 256;

/// A back-end as the XDP program hands off to it: where the SYN'+request goes.
/// Network byte order for the address and port, as in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelBackend {
    pub addr_be: u32,
    pub port_be: u16,
    /// The back-end's MAC on the LAN, as the daemon resolved it.
    pub mac: [u8; 6],
    /// [`KernelBackend::USABLE`] when the daemon has written a resolved MAC and the
    /// back-end may take new connections; otherwise a decision naming it goes up to the
    /// slow path.
    pub flags: u16,
    /// Where the back-end's connections are counted (`FRONTEND_BACKEND_OPENED`,
    /// `FRONTEND_BACKEND_BOOKED`): a slot the daemon gives each back-end's address for
    /// its whole life, the same in every generation, since a connection outlives the
    /// rule set it was decided by.
    pub load_slot: u16,
}

impl KernelBackend {
    pub const USABLE: u16 = 1 << 0;
}

/// Slots of the connection counts (`FRONTEND_BACKEND_OPENED`, `FRONTEND_BACKEND_BOOKED`):
/// one per back-end address a daemon has known.
pub const MAX_LOAD_SLOTS: u32 = MAX_KERNEL_BACKENDS;

/// A back-end's active connections, the figure least connections (and LARD) compare,
/// from the two counts both engines read: `opened`, the handoffs the XDP program made to
/// it (it adds one, atomically, at each), and `booked`, the daemon's books, which only
/// the daemon writes: connections it counted (confirmed handoffs, its own and the
/// kernel's it adopted) less those that ended, less every kernel handoff it has read the
/// record of (from then on that connection is in its books). Both wrap, as `u64`; the
/// sum is the count, read as signed and clamped at zero (the daemon may read a record a
/// moment before the kernel's increment shows).
#[inline(always)]
pub const fn backend_load(opened: u64, booked: u64) -> u32 {
    let n = opened.wrapping_add(booked) as i64;
    if n <= 0 {
        0
    } else if n >= u32::MAX as i64 {
        u32::MAX
    } else {
        n as u32
    }
}

/// Weighted least connections, the pick both engines make (`baton-dispatch`'s
/// `LeastConnections`, the XDP program's least-connections pools): offered the
/// candidates in order from a rotating start, it keeps the first with the fewest active
/// connections per unit of weight, compared as `load_a * weight_b < load_b * weight_a`
/// (no division). The first of equals wins, so the rotation breaks ties.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastLoaded {
    best: Option<(u32, u64, u64)>,
}

impl LeastLoaded {
    /// Offers candidate `index` with `load` active connections and `weight`.
    #[inline(always)]
    pub fn offer(&mut self, index: u32, load: u32, weight: u32) {
        let (load, weight) = (u64::from(load), u64::from(weight));
        if self.best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
            self.best = Some((index, load, weight));
        }
    }

    /// The candidate picked, `None` if none was offered.
    #[inline(always)]
    pub fn chosen(&self) -> Option<u32> {
        self.best.map(|(i, _, _)| i)
    }
}

/// Where a LARD pool's server set for one target slot is kept
/// (`FRONTEND_LARD_SETS`, a hash map the daemon writes): the pool, by its index in its
/// generation's pools table (`generation * MAX_KERNEL_POOLS + pool`), and the slot,
/// the target hash's low bits ([`lard_set_key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelLardKey {
    pub pool: u32,
    pub slot: u32,
}

/// One slot of a LARD pool's target table, as `baton-dispatch`'s `Lard` keeps it: the
/// target it holds (its full hash: a slot is shared by every target whose hash has its
/// low bits), the server set (a mask of member indices) and when the set may shrink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLardSet {
    pub target: u64,
    pub servers: u64,
    /// `CLOCK_MONOTONIC` nanoseconds (the daemon's clock, `bpf_ktime_get_ns`'s) of the
    /// set's last change plus the pool's `shrink_after`: after it a set of two or more
    /// whose members' loads differ loses its most loaded one.
    pub shrink_at: u64,
}

/// Entries of `FRONTEND_LARD_SETS`, both generations together: the target slots the
/// LARD pools have used (the map holds only those, and the slow path decides a target
/// whose write found it full).
pub const MAX_LARD_SETS: u32 = 1 << 17;

/// The key of `target`'s set in pool `pool` of `generation`, whose table has `targets`
/// slots (a power of two).
#[inline(always)]
pub const fn lard_set_key(generation: u32, pool: u32, target: u64, targets: u32) -> KernelLardKey {
    KernelLardKey {
        pool: generation * MAX_KERNEL_POOLS + pool,
        slot: (target as u32) & targets.wrapping_sub(1),
    }
}

/// The member LARD's "least loaded" search starts from for `target` among `members`,
/// so that new targets spread over idle members instead of piling onto the first.
#[inline(always)]
pub const fn lard_start(target: u64, members: u32) -> u32 {
    if members == 0 {
        0
    } else {
        (target % members as u64) as u32
    }
}

/// Whether LARD sends a target away from its set's least loaded member `load`: over
/// `high` while some member is under `low`, or at twice `high` in any case (Pai et al.
/// 1998, figure 4).
#[inline(always)]
pub const fn lard_overloaded(load: u32, under_low: bool, high: u32) -> bool {
    (load > high && under_low) || load as u64 >= 2 * high as u64
}

/// One pass over a LARD pool's members for one target, the pass both engines make
/// (`baton-dispatch`'s `Lard::select`, the XDP program's LARD pools): offered every
/// member in order from [`lard_start`], wrapping, it keeps the least loaded up member
/// and the least loaded live one (up and in the target's set), each the first of
/// equals, the most a live one has, and whether some up member is under `low_load`.
/// [`LardScan::read_only`] then answers where `Lard::select` would pick without
/// changing the set, and sends the rest up.
#[derive(Clone, Copy, Debug, Default)]
pub struct LardScan {
    under_low: bool,
    /// The least loaded up member and its load.
    least: Option<(u32, u32)>,
    /// The least loaded live member and its load.
    least_live: Option<(u32, u32)>,
    most_live: u32,
}

impl LardScan {
    /// Offers member `index`, with `load` active connections: `up` if it may take the
    /// connection, `in_set` if the target's set names it.
    #[inline(always)]
    pub fn offer(&mut self, index: u32, up: bool, in_set: bool, load: u32, low: u32) {
        if !up {
            return;
        }
        self.under_low |= load < low;
        if self.least.is_none_or(|(_, l)| load < l) {
            self.least = Some((index, load));
        }
        if in_set {
            if self.least_live.is_none_or(|(_, l)| load < l) {
                self.least_live = Some((index, load));
            }
            self.most_live = self.most_live.max(load);
        }
    }

    /// The least loaded up member (LARD's choice for a new member), `None` if none is up.
    #[inline(always)]
    pub fn least(&self) -> Option<(u32, u32)> {
        self.least
    }

    /// The least loaded live member, `None` if no member of the set is up.
    #[inline(always)]
    pub fn least_live(&self) -> Option<(u32, u32)> {
        self.least_live
    }

    /// Whether some up member has fewer than `low` active connections.
    #[inline(always)]
    pub fn under_low(&self) -> bool {
        self.under_low
    }

    /// The member `Lard::select` picks for `target` at `now` (nanoseconds) from `set`
    /// (the slot's entry, `None` when the slot has none), when it would pick without
    /// changing the set; otherwise [`reason::LARD_SET`] (or [`reason::POOL_DOWN`]
    /// when no member is up, where it answers nothing). The cases that change a set:
    /// the slot holds another target or none; no member of the set is up; the least
    /// loaded live member is overloaded ([`lard_overloaded`]) and the least loaded up
    /// member is not in the set; a set of two or more, past its `shrink_at`, whose
    /// most loaded live member has more than the least. (Overloaded with the least
    /// loaded up member already in the set, that member is the least loaded live one,
    /// the first of equals in the same order, and nothing changes.)
    #[inline(always)]
    pub fn read_only(
        &self,
        set: Option<&KernelLardSet>,
        target: u64,
        high: u32,
        now: u64,
    ) -> Result<u32, u32> {
        let Some((least, _)) = self.least else {
            return Err(reason::POOL_DOWN);
        };
        let Some(set) = set.filter(|s| s.target == target) else {
            return Err(reason::LARD_SET);
        };
        let Some((n, load)) = self.least_live else {
            return Err(reason::LARD_SET);
        };
        if lard_overloaded(load, self.under_low, high) && least != n {
            return Err(reason::LARD_SET);
        }
        if set.servers.count_ones() > 1 && self.most_live > load && now > set.shrink_at {
            return Err(reason::LARD_SET);
        }
        Ok(n)
    }
}

/// The matcher's answer for one request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDecision {
    /// What to do: [`KernelDecision::HAND_OFF`] (to `backend`) or
    /// [`KernelDecision::SLOW_PATH`] (the daemon decides, as without the kernel path).
    pub verdict: u32,
    /// The index of the chosen back-end in the back-ends table.
    pub backend: u32,
    /// The rule that matched (its position in `[dispatch]`), for the counters and the
    /// access log; `u32::MAX` for the default pool.
    pub rule: u32,
    /// Why the slow path: one of the matcher's reasons, counted.
    pub reason: u32,
}

impl KernelDecision {
    pub const SLOW_PATH: u32 = 0;
    pub const HAND_OFF: u32 = 1;
}

/// What the XDP program needs to hand a request off itself, written by `baton frontend`
/// at start (the map `FRONTEND_KERNEL_HANDOFF`, not pinned: every daemon writes its
/// own).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KernelHandoffConfig {
    /// The key the handoff option's tag is made with, shared with the back-ends.
    pub handoff_key: crate::siphash::SipKey,
    /// [`KernelHandoffConfig::ENABLED`]: without it every request goes up, as before.
    pub flags: u32,
    /// The longest request the SYN' carries: the front-end's `[tcp] mss` less the 20
    /// bytes the SYN''s 40 bytes of options take beyond the 20 a data segment's
    /// timestamps take, as the core's one-turn handoff has it (`mss + 40` bytes in all).
    pub max_payload: u32,
}

impl KernelHandoffConfig {
    pub const ENABLED: u32 = 1 << 0;

    /// The configuration for a front-end whose handoff key is `handoff_key` and whose
    /// `[tcp] mss` is `mss`; `enabled` when the daemon hands off in one turn, XDP answers
    /// every SYN and `[tcp] kernel_dispatch` is on (the handoff in the kernel starts from
    /// XDP's cookie and sends the request in the SYN').
    pub fn new(handoff_key: [u8; 16], mss: u16, enabled: bool) -> Self {
        Self {
            handoff_key: SipKey::from_bytes(handoff_key),
            flags: if enabled { Self::ENABLED } else { 0 },
            // The core's one-turn bound: a SYN' of at most `mss + 40` bytes, 60 of them
            // headers.
            max_payload: u32::from(mss).saturating_sub(20),
        }
    }
}

/// Bytes of the ring `FRONTEND_HANDOFFS` in which the program tells the daemon of each
/// handoff it made: a [`KernelHandoffRecord`] and the request segment's IPv4 packet, as
/// it arrived, about 600 bytes for a typical request; 4 MiB hold some 7,000, a second
/// of handoffs at a rate the daemon keeps up with by far (it reads the ring every round
/// and wakes for it). A handoff that finds the ring full is not made: the request goes
/// up to the slow path, which hands it off itself. A power of two, as the kernel
/// requires.
pub const HANDOFF_RING_SIZE: u32 = 1 << 22;

/// Bytes of records in `FRONTEND_HANDOFFS` at which the program wakes the daemon: about
/// fifty handoffs. Below it the daemon finds them at its next round, at the latest
/// after `HANDOFF_READ_INTERVAL_MS`.
pub const HANDOFF_WAKE_BYTES: u64 = 32 * 1024;

/// The longest the daemon leaves records in `FRONTEND_HANDOFFS` unread while it has
/// nothing else to do: the adoption's delay at a low rate of connections. Nothing
/// waits on it but the daemon's books (a client's next segment up finds its connection
/// adopted first).
pub const HANDOFF_READ_INTERVAL_MS: u64 = 2;

/// The longest IPv4 packet a [`KernelHandoffRecord`] carries: a whole frame of the
/// front-end's MTU (1500) fits; a longer one is not handed off in the kernel.
pub const MAX_RECORDED_PACKET: usize = 1536;

/// The head of a record in `FRONTEND_HANDOFFS`, followed by `packet_len` bytes: the
/// client's request segment as it arrived (its IPv4 packet), from which the daemon's
/// protocol core builds the connection the program handed off, exactly as it would have
/// for a request it had handed off itself, but without sending the SYN' again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelHandoffRecord {
    /// The back-end's address and port, network byte order, as in the SYN'.
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
    /// [`KernelDecision::rule`].
    pub rule: u32,
    pub packet_len: u32,
}

/// The per-CPU scratch the program builds a record in before it copies it to the ring
/// (`bpf_ringbuf_output` takes a length the verifier can bound; a reservation would
/// need a constant one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KernelHandoffScratch {
    pub record: KernelHandoffRecord,
    /// A power of two, so that a masked length bounds every copy.
    pub packet: [u8; 2048],
}

/// The client's first data segment as the handoff in the kernel reads it: the fields
/// [`handoff_terms`] makes the SYN''s terms from (docs/design.md, "The handoff in the
/// kernel", steps 1 and 2). Addresses in network order, numbers as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSegment {
    pub client_addr: [u8; 4],
    pub service_addr: [u8; 4],
    pub client_port: u16,
    pub service_port: u16,
    pub seq: u32,
    /// The acknowledgement: the cookie, plus one.
    pub ack: u32,
    /// The TCP flags byte.
    pub flags: u8,
    /// The window field, scaled by the client's shift.
    pub window_field: u16,
    pub ttl: u8,
    /// The TSval and TSecr ([`data_segment_timestamps`]).
    pub timestamps: Option<(u32, u32)>,
    pub payload_len: u32,
}

/// What the handoff in the kernel sends and keeps: the SYN''s terms (the back-end's
/// address, port and the encoded option are filled in once the matcher chose it), the
/// handoff option's fields, and the flow's table value (back-end to be filled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffTerms {
    pub prime: SynPrime,
    pub option: HandoffOption,
    pub flow: FrontendFlow,
}

/// Bytes of the one option layout a client's first data segment has besides none:
/// Linux's NOP, NOP, timestamps.
pub const LINUX_TIMESTAMPS_LEN: usize = 12;

/// The timestamps of a client's first data segment from its options area (`options`,
/// the TCP header's bytes past the first 20): `Some(None)` without options,
/// `Some(Some((tsval, tsecr)))` for Linux's NOP, NOP, timestamps, and `None` for any
/// other layout, which the slow path judges. A constant layout, not a walk: the walk's
/// variable offsets are what the verifier refuses in the handoff's frame, and a first
/// data segment has no other options.
#[inline(always)]
pub fn data_segment_timestamps(options: &[u8]) -> Option<Option<(u32, u32)>> {
    if options.is_empty() {
        return Some(None);
    }
    let o: &[u8; LINUX_TIMESTAMPS_LEN] = options.try_into().ok()?;
    if o[..4] != [1, 1, 8, 10] {
        return None;
    }
    let (v, e) = (
        2 + crate::layout::TSOPT_TSVAL,
        2 + crate::layout::TSOPT_TSECR,
    );
    Some(Some((
        u32::from_be_bytes([o[v], o[v + 1], o[v + 2], o[v + 3]]),
        u32::from_be_bytes([o[e], o[e + 1], o[e + 2], o[e + 3]]),
    )))
}

/// The terms of the SYN' the XDP program sends for `segment`, a request whose cookie
/// checked as `cookie`, into `terms`: exactly the core's cookie path's
/// (`on_cookie_ack`) and its one-turn SYN' (`start_handoff`), so that the connection the
/// core adopts is the one the back-end was told of. `Err` with the [`reason`], `terms`
/// unspecified, for a request the kernel leaves to the slow path: urgent data (the core
/// ignores the pointer), a cookie whose options wait in the half-open map (the core
/// takes the entry), a request over `kernel.max_payload` (the core's one-turn bound), or
/// a closed window (the three turns, as the core's `start_handoff` says why).
///
/// Written in place rather than returned: the XDP program builds the terms in a per-CPU
/// map value, off its 512 bytes of stack.
#[inline(always)]
pub fn handoff_terms(
    kernel: &KernelHandoffConfig,
    cookies: &SynCookieConfig,
    cookie: &Cookie,
    segment: &RequestSegment,
    terms: &mut HandoffTerms,
) -> Result<(), u32> {
    if segment.flags & crate::layout::tcp_flag::URG != 0 {
        return Err(reason::URGENT);
    }
    if cookie.syn_in_map {
        return Err(reason::HALF_OPEN_OPTIONS);
    }
    if segment.payload_len > kernel.max_payload {
        return Err(reason::OVER_MSS);
    }
    // As the core's cookie path: timestamps only if still enabled; the TSecr is the
    // cookie SYN/ACK's TSval, which kept the options.
    let timestamps = if cookies.flags & SynCookieConfig::TIMESTAMPS != 0 {
        segment.timestamps
    } else {
        None
    };
    let kept = match timestamps {
        Some((_, tsecr)) => decode_ts_options(tsecr),
        None => KeptOptions::NONE,
    };
    let window = window_in_syn(segment.window_field, kept.window_scale);
    if window == 0 {
        return Err(reason::ZERO_WINDOW);
    }
    let sack = kept.sack && cookies.flags & SynCookieConfig::SACK != 0;
    let ecn = kept.ecn && cookies.flags & SynCookieConfig::ECN != 0;
    let client_isn = segment.seq.wrapping_sub(1);
    let isn_f = segment.ack.wrapping_sub(1);
    terms.prime = SynPrime {
        client_addr: segment.client_addr,
        backend_addr: [0; 4],
        client_port: segment.client_port,
        backend_port: 0,
        client_isn,
        window,
        ttl: segment.ttl,
        ecn,
        mss: Some(cookie.mss),
        window_shift: kept.window_scale,
        sack_permitted: sack,
        tsval: timestamps.map(|(tsval, _)| tsval),
        handoff: [0; HANDOFF_OPTION_LEN],
    };
    terms.option = HandoffOption::new(
        isn_f,
        timestamps.map_or(0, |(_, tsecr)| tsecr),
        kept.window_scale.map_or(0, |_| cookies.window_shift),
        if timestamps.is_some() {
            HandoffOption::TIMESTAMPS
        } else {
            0
        } | if sack { HandoffOption::SACK } else { 0 },
    );
    terms.flow = FrontendFlow {
        backend_addr_be: 0,
        backend_port_be: 0,
        backend_mac: [0; 6],
        client_isn,
        close_state: FrontendFlow::AWAITING_ANSWER,
        isn_f,
        client_next: segment.seq.wrapping_add(segment.payload_len),
        reserved: 0,
        last_seen_ns: 0,
    };
    Ok(())
}

/// The chosen back-end into `terms` and the handoff option encoded with `key` (the
/// core's own `HandoffOption::encode`), once the matcher routed the request.
#[inline(always)]
pub fn choose_backend(terms: &mut HandoffTerms, key: &SipKey, backend: &KernelBackend) {
    terms.prime.backend_addr = backend.addr_be.to_ne_bytes();
    terms.prime.backend_port = u16::from_be(backend.port_be);
    terms.flow.backend_addr_be = backend.addr_be;
    terms.flow.backend_port_be = backend.port_be;
    terms.flow.backend_mac = backend.mac;
    let p = &terms.prime;
    let binding = HandoffBinding {
        client_ip: p.client_addr,
        client_port: p.client_port,
        backend_ip: p.backend_addr,
        backend_port: p.backend_port,
        client_isn: p.client_isn,
    };
    terms.prime.handoff = terms.option.encode(key, &binding);
}

/// Back-ends per generation of the compiled tables: the back-ends table holds two
/// generations, so that a reload writes one while requests read the other.
pub const BACKENDS_PER_GENERATION: u32 = MAX_KERNEL_BACKENDS / 2;

/// Why a request went to the slow path: [`KernelDecision::reason`] (1 to 27, the
/// matcher's), or the handoff's own checks around it (28 on). Zero for a hand-off. The
/// XDP program counts each request it passes up (`stat::PASS_REQUEST_TO_SLOW_PATH`) once
/// under its reason, in the per-CPU array `FRONTEND_SLOW_PATH_REASONS`, which the daemon
/// exports by [`reason::NAMES`].
pub mod reason {
    /// Kernel dispatch is off, or the daemon has written no rules yet.
    pub const OFF: u32 = 1;
    /// The segment is empty or longer than the scratch buffer ([`super::SCRATCH_LEN`]).
    pub const SEGMENT_SIZE: u32 = 2;
    /// The payload (or the TCP header, for its sum) could not be read from the frame.
    pub const LOAD: u32 = 3;
    /// The method is not upper-case letters followed by one space (TLS, HTTP/2's
    /// preface, lower-case or exotic methods, garbage).
    pub const METHOD: u32 = 4;
    /// The target is not origin-form (`*`, absolute-form, authority-form).
    pub const TARGET_FORM: u32 = 5;
    /// The path has a byte the kernel does not judge: `%` (percent-encoding), `\`, `#`,
    /// control or non-ASCII bytes.
    pub const PATH_BYTES: u32 = 6;
    /// The path is not normal: `//`, `.` or `..` segments (the slow path resolves them).
    pub const PATH_NOT_NORMAL: u32 = 7;
    /// The query has a byte that is not printable ASCII, or a fragment.
    pub const QUERY_BYTES: u32 = 8;
    /// The version is not `HTTP/1.0` or `HTTP/1.1`, or the request line does not end
    /// in CRLF.
    pub const VERSION: u32 = 9;
    /// A header name with a byte other than letters, digits, `-` and `_`.
    pub const HEADER_NAME: u32 = 10;
    /// A header value with a control or non-ASCII byte.
    pub const HEADER_VALUE: u32 = 11;
    /// A line that starts with a space or tab (obs-fold, RFC 9112 §5.2).
    pub const OBS_FOLD: u32 = 12;
    /// A line that does not end in CRLF.
    pub const LINE_END: u32 = 13;
    /// A Host value that is not a plain host name with an optional numeric port, or
    /// empty after its trailing dot, or over 255 bytes.
    pub const HOST: u32 = 14;
    /// More than one Host field (the slow path answers 400).
    pub const HOST_REPEATED: u32 = 15;
    /// The head does not end within the segment.
    pub const INCOMPLETE: u32 = 16;
    /// Bytes after the head's empty line (a body or a pipelined request).
    pub const TRAILING_BYTES: u32 = 17;
    /// More header fields, or more bytes, than the daemon's request limits allow.
    pub const LIMITS: u32 = 18;
    /// A rule whose condition the kernel cannot judge for this request might match.
    pub const RULE: u32 = 19;
    /// The chosen pool's policy does not run in the kernel.
    pub const POOL_POLICY: u32 = 20;
    /// The chosen pool is sticky and the kernel cannot tell which back-end its cookie
    /// names: a cookie it does not follow and a request with a Cookie field, cookies it
    /// could not read, or an id whose hash is another id's.
    pub const STICKY: u32 = 21;
    /// No back-end of the chosen pool is up (the slow path answers 503).
    pub const POOL_DOWN: u32 = 22;
    /// A compiled table is inconsistent (an index past its map), or a lookup of a
    /// one-entry map failed: never for tables the daemon wrote.
    pub const TABLES: u32 = 23;
    /// The chosen back-end has no resolved MAC, or may take no new connection.
    pub const BACKEND_UNUSABLE: u32 = 24;
    /// The consistent-hash key is missing from the request (no Host: the slow path
    /// hashes the client's address instead).
    pub const HASH_KEY: u32 = 25;
    /// A ClientHello the slow path would refuse or read otherwise: a record or
    /// handshake header, a length or a vector that does not fit, a repeated extension,
    /// two host names, a host name of other than visible ASCII.
    pub const TLS_MALFORMED: u32 = 26;
    /// The ClientHello is not whole in one TLS record that is the whole segment (a
    /// hello over several records or segments, or a record with more after it).
    pub const TLS_FRAGMENTED: u32 = 27;

    // The handoff's own checks, around the matcher (`baton-ebpf`'s `frontend.rs` and
    // [`super::handoff_terms`]): the request may be one the matcher would route, but
    // the SYN' cannot be built or sent here.

    /// TCP options other than none or Linux's NOP, NOP, timestamps: the slow path reads
    /// any layout.
    pub const TCP_OPTIONS: u32 = 28;
    /// The checksum field holds the partial (pseudo-header) sum a checksum-offloading
    /// sender leaves, from which the payload's sum cannot be recovered.
    pub const PARTIAL_CHECKSUM: u32 = 29;
    /// The segment has the urgent flag.
    pub const URGENT: u32 = 30;
    /// The cookie says the client's SYN options wait in the half-open map (a client
    /// without timestamps), which only the protocol core takes.
    pub const HALF_OPEN_OPTIONS: u32 = 31;
    /// The request is longer than one SYN' may carry (`[tcp] mss` less 20 bytes).
    pub const OVER_MSS: u32 = 32;
    /// The client's window is zero.
    pub const ZERO_WINDOW: u32 = 33;
    /// The flow table refused the flow: full, or the flow is there already (a copy of
    /// the request handed off on another CPU a moment before).
    pub const FLOW_TABLE: u32 = 34;
    /// The ring of handoffs for the daemon is full (no daemon has read it for a while),
    /// or the request is too long to record there.
    pub const HANDOFF_RING_FULL: u32 = 35;
    /// The frame could not grow to the SYN''s headers.
    pub const FRAME: u32 = 36;
    /// A LARD pool's pick would change its target's server set (a new target, a set
    /// whose members are all down, a member added under load, a shrink due): the
    /// daemon's `Lard` decides and writes the changed set back for the next request.
    pub const LARD_SET: u32 = 37;
    /// Most reasons plus one, for counter arrays.
    pub const COUNT: u32 = 38;

    /// Reason names, by reason, for metrics and `baton status`; index 0 is no reason (a
    /// hand-off) and is never counted.
    pub const NAMES: [&str; COUNT as usize] = [
        "none",
        "off",
        "segment_size",
        "load",
        "method",
        "target_form",
        "path_bytes",
        "path_not_normal",
        "query_bytes",
        "version",
        "header_name",
        "header_value",
        "obs_fold",
        "line_end",
        "host",
        "host_repeated",
        "incomplete",
        "trailing_bytes",
        "limits",
        "rule",
        "pool_policy",
        "sticky",
        "pool_down",
        "tables",
        "backend_unusable",
        "hash_key",
        "tls_malformed",
        "tls_fragmented",
        "tcp_options",
        "partial_checksum",
        "urgent",
        "half_open_options",
        "over_mss",
        "zero_window",
        "flow_table",
        "handoff_ring_full",
        "frame",
        "lard_set",
    ];
}

/// Bytes of the scratch buffer the request is copied into: a power of two, so that
/// every index is masked into it, and over one Ethernet MSS, so that any one segment
/// fits.
pub const SCRATCH_LEN: usize = 2048;
const SCRATCH_MASK: usize = SCRATCH_LEN - 1;
/// Bytes one [`RequestScan::step`] reads at most: enough that a common request takes a
/// handful of `bpf_loop` iterations, few enough that the verifier checks the step cheaply.
pub const SCAN_STEP_BYTES: u32 = 16;
/// Bytes one [`RequestScan::step`] reads through its state machine, each after the
/// run of plain bytes before it: so at least this many a step, most of a short head in
/// one. Fewer than [`SCAN_STEP_BYTES`]: the verifier walks the runs' loop for each.
pub const SCAN_STEP_MOVES: u32 = 8;
/// Moves (a run of plain bytes and the byte after it) a [`CookieWalk`] step makes: few,
/// since the verifier walks the runs' loops for each.
pub const COOKIE_STEP_MOVES: u32 = 4;
/// `bpf_loop` iterations that walk any segment's Cookie fields: each move but a field's
/// end reads a byte at least, and each field has a `Cookie:` before it that the walk
/// does not read.
pub const MAX_COOKIE_STEPS: u32 = SCRATCH_LEN as u32 / COOKIE_STEP_MOVES + 1;
/// `bpf_loop` iterations that scan a whole buffer (or walk its cookies).
pub const MAX_SCAN_STEPS: u32 = SCRATCH_LEN as u32 / SCAN_STEP_MOVES + 1;
const _: () = assert!(SCAN_STEP_MOVES <= SCAN_STEP_BYTES);
/// Longest host, as `baton-dispatch` hashes it on the stack.
pub const MAX_HOST_LEN: u32 = 255;

mod phase {
    pub const METHOD: u32 = 0;
    pub const TARGET: u32 = 1;
    pub const PATH: u32 = 2;
    pub const QUERY: u32 = 3;
    pub const VERSION: u32 = 4;
    pub const LINE: u32 = 5;
    pub const NAME: u32 = 6;
    pub const VALUE: u32 = 7;
    pub const VALUE_LF: u32 = 8;
    pub const HOST_SPACE: u32 = 9;
    pub const HOST: u32 = 10;
    pub const HOST_PORT: u32 = 11;
    pub const FINAL_LF: u32 = 12;
    pub const DONE: u32 = 13;
    pub const SLOW: u32 = 14;
}

/// Candidate header names while a name is read: bit set while the name read so far is
/// a prefix of it (case-insensitively).
const NAME_HOST: u32 = 1;
const NAME_COOKIE: u32 = 2;

/// What a scan found: the request's parts as offsets into the scratch buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestScan {
    at: u32,
    len: u32,
    phase: u32,
    /// Why the slow path, once `phase` is `SLOW`.
    reason: u32,
    /// Where the token being read (header name, version) started.
    mark: u32,
    names: u32,
    pub method_end: u32,
    pub path_start: u32,
    pub path_end: u32,
    /// The byte after `?`, or 0 without a query.
    pub query_start: u32,
    pub query_end: u32,
    /// The first byte of the path's current (at the end: last) segment.
    segment: u32,
    /// The last `.` of the current segment, or 0.
    dot: u32,
    /// The extension's first byte (it ends at `path_end`), or 0 without one.
    pub ext_start: u32,
    /// The Host's name, lower-cased in the buffer, without port or trailing dot;
    /// `host_end == host_start` when the request has no Host (or an empty one).
    pub host_start: u32,
    pub host_end: u32,
    /// Header fields seen.
    pub headers: u32,
    /// [`RequestScan::HOST_FIELD`], [`RequestScan::COOKIE_FIELD`],
    /// [`RequestScan::COOKIES_UNREAD`], [`RequestScan::TLS`].
    pub fields: u32,
    /// The Cookie fields' values (from after the colon to the CR), the first
    /// [`MAX_COOKIE_FIELDS`] of them: what [`CookieWalk`] reads.
    pub cookie_fields: u32,
    pub cookie_field_start: [u32; MAX_COOKIE_FIELDS],
    pub cookie_field_end: [u32; MAX_COOKIE_FIELDS],
    /// The cookies the rule set names ([`KernelRuleSet::cookie_names`]), as
    /// [`CookieWalk`] found them: bit `k` set when cookie `k` is present, its value
    /// (trimmed, as `RequestView::cookie` has it) at `cookie_value_start[k]..
    /// cookie_value_end[k]`, and what follows its last separator (the whole value
    /// without one) from `cookie_id_start[k]`.
    pub cookies_found: u32,
    pub cookie_value_start: [u32; MAX_KERNEL_COOKIES],
    pub cookie_value_end: [u32; MAX_KERNEL_COOKIES],
    pub cookie_id_start: [u32; MAX_KERNEL_COOKIES],
}

impl RequestScan {
    /// The request has a Host field (perhaps empty).
    pub const HOST_FIELD: u32 = 1;
    /// The request has a Cookie field.
    pub const COOKIE_FIELD: u32 = 2;
    /// The request has more Cookie fields than the kernel reads
    /// ([`MAX_COOKIE_FIELDS`]), or [`CookieWalk`] did not finish: whether it has a
    /// cookie is unknown.
    pub const COOKIES_UNREAD: u32 = 4;
    /// A TLS ClientHello ([`HelloScan`]): the host is its SNI, and it has no method,
    /// path, query, headers or cookies.
    pub const TLS: u32 = 8;

    /// A scan of the first `len` bytes of the buffer.
    #[inline(always)]
    pub fn new(len: usize) -> Self {
        let mut scan = Self::default();
        scan.start(len);
        scan
    }

    /// Makes this value a new scan of the first `len` bytes, in place (see
    /// [`zero_words`]).
    #[inline(always)]
    pub fn start(&mut self, len: usize) {
        zero_words(self);
        self.phase = phase::METHOD;
        if len == 0 || len > SCRATCH_LEN {
            self.phase = phase::SLOW;
            self.reason = reason::SEGMENT_SIZE;
        } else {
            self.len = len as u32;
        }
    }

    /// Reads [`SCAN_STEP_MOVES`] bytes through the state machine, each after the run of
    /// plain bytes before it (at most [`PLAIN_RUN`] of them, see
    /// [`RequestScan::skip_plain`]); `false` once the scan is over (the head's end, or a
    /// reason for the slow path). Lower-cases the Host in `buf`.
    #[inline(always)]
    pub fn step(&mut self, buf: &mut [u8; SCRATCH_LEN]) -> bool {
        for _ in 0..SCAN_STEP_MOVES {
            self.skip_plain(buf);
            if !self.byte(buf) {
                return false;
            }
        }
        true
    }

    /// Reads one byte through the state machine, without the runs [`RequestScan::step`]
    /// steps over: what that must come to, for the tests and the fuzz target.
    #[doc(hidden)]
    pub fn step_one_byte(&mut self, buf: &mut [u8; SCRATCH_LEN]) -> bool {
        self.byte(buf)
    }

    /// Steps over the bytes ahead that [`RequestScan::byte`] would read without changing
    /// anything but the position: in a header value, printable bytes and tabs; in a
    /// query, printable bytes but `#`; in a path, path bytes but `/` and `.`; in a
    /// header name that can no longer be Host or Cookie, name bytes; in a Host, its
    /// lower-case bytes; and the whole `HTTP/1.x` CRLF at once. Most of a head is such
    /// runs, and a byte of a run costs a few instructions here against the state
    /// machine's dispatch on its phase; the byte that ends a run, and every byte of the
    /// other phases, go through `byte` as before, so the outcome is the same.
    #[inline(always)]
    fn skip_plain(&mut self, buf: &[u8; SCRATCH_LEN]) {
        // SAFETY: a read of a field through a valid reference; from memory for the
        // verifier, as `position`.
        let phase = unsafe { core::ptr::read_volatile(&self.phase) };
        let len = self.len;
        let at = self.position();
        let class = match phase {
            phase::VALUE => PLAIN_VALUE,
            phase::QUERY => PLAIN_QUERY,
            phase::PATH => PLAIN_PATH,
            phase::NAME if self.names == 0 => PLAIN_NAME,
            phase::HOST => PLAIN_HOST,
            phase::VERSION if at == self.mark && at + 10 <= len => {
                if is_version(buf, at) {
                    self.at = at + 10;
                    self.phase = phase::LINE;
                }
                return;
            }
            _ => return,
        };
        skip_run(buf, &mut self.at, len, class);
    }

    /// The position, read from memory: in the XDP program the scan lives in map memory,
    /// whose bytes the verifier does not track, so the run's end reaches `byte` as an
    /// unknown number and the verifier's paths after each run of every length converge
    /// (kept in a register, the position stayed exact and each length made a path of
    /// its own, past the verifier's budget).
    #[inline(always)]
    fn position(&self) -> u32 {
        // SAFETY: a read of a field through a valid reference.
        unsafe { core::ptr::read_volatile(&self.at) }
    }

    /// The scan's outcome: `Ok` when the head is complete, ends at the segment's end and
    /// is within `max_head_len` bytes and `max_headers` fields; else the slow path's
    /// reason.
    pub fn finish(&self, max_head_len: u32, max_headers: u32) -> Result<(), u32> {
        match self.phase {
            phase::DONE if self.len > max_head_len || self.headers > max_headers => {
                Err(reason::LIMITS)
            }
            phase::DONE => Ok(()),
            phase::SLOW => Err(self.reason),
            _ => Err(reason::INCOMPLETE),
        }
    }

    /// Whether the request has a Host (non-empty).
    #[inline(always)]
    pub fn has_host(&self) -> bool {
        self.host_end > self.host_start
    }

    /// Whether this is a TLS ClientHello's scan ([`HelloScan::request`]).
    #[inline(always)]
    pub fn is_tls(&self) -> bool {
        self.fields & Self::TLS != 0
    }

    /// Cookie `k` of the rule set's names: `Some(Some((value_start, value_end,
    /// id_start)))` when present, `Some(None)` when absent, `None` when the kernel
    /// cannot tell.
    #[inline(always)]
    pub fn cookie(&self, k: u32) -> Option<Option<(u32, u32, u32)>> {
        if self.fields & Self::COOKIES_UNREAD != 0 || k >= MAX_KERNEL_COOKIES as u32 {
            return None;
        }
        if self.cookies_found & (1 << k) == 0 {
            return Some(None);
        }
        let k = k as usize & (MAX_KERNEL_COOKIES - 1);
        Some(Some((
            self.cookie_value_start[k],
            self.cookie_value_end[k],
            self.cookie_id_start[k],
        )))
    }

    #[inline(always)]
    fn slow(&mut self, why: u32) -> bool {
        self.phase = phase::SLOW;
        self.reason = why;
        false
    }

    /// One byte of the head.
    #[inline(always)]
    fn byte(&mut self, buf: &mut [u8; SCRATCH_LEN]) -> bool {
        let at = self.position();
        if self.phase >= phase::DONE {
            return false;
        }
        if at >= self.len {
            return self.slow(reason::INCOMPLETE);
        }
        let b = buf[at as usize & SCRATCH_MASK];
        self.at = at + 1;
        match self.phase {
            phase::METHOD => match b {
                b'A'..=b'Z' => {}
                b' ' if at > 0 => {
                    self.method_end = at;
                    self.phase = phase::TARGET;
                }
                _ => return self.slow(reason::METHOD),
            },
            phase::TARGET => {
                if b != b'/' {
                    return self.slow(reason::TARGET_FORM);
                }
                self.path_start = at;
                self.segment = at + 1;
                self.phase = phase::PATH;
            }
            phase::PATH => match b {
                b'/' => {
                    if !self.segment_is_plain(buf, at) || at == self.segment {
                        return self.slow(reason::PATH_NOT_NORMAL);
                    }
                    self.segment = at + 1;
                    self.dot = 0;
                }
                b'.' => self.dot = at,
                b'?' | b' ' => {
                    if !self.segment_is_plain(buf, at) {
                        return self.slow(reason::PATH_NOT_NORMAL);
                    }
                    self.path_end = at;
                    // `HttpRequestHead::file_extension`: after the last dot of the last
                    // segment, with something before the dot and after it.
                    if self.dot > self.segment && self.dot + 1 < at {
                        self.ext_start = self.dot + 1;
                    }
                    if b == b'?' {
                        self.query_start = at + 1;
                        self.phase = phase::QUERY;
                    } else {
                        self.mark = at + 1;
                        self.phase = phase::VERSION;
                    }
                }
                _ if is_path_byte(b) => {}
                _ => return self.slow(reason::PATH_BYTES),
            },
            phase::QUERY => match b {
                b' ' => {
                    self.query_end = at;
                    self.mark = at + 1;
                    self.phase = phase::VERSION;
                }
                b'#' => return self.slow(reason::QUERY_BYTES),
                0x21..=0x7e => {}
                _ => return self.slow(reason::QUERY_BYTES),
            },
            phase::VERSION => {
                const VERSION: &[u8; 10] = b"HTTP/1.1\r\n";
                let k = (at - self.mark) as usize;
                let ok = match k {
                    7 => b == b'0' || b == b'1',
                    0..=9 => b == VERSION[k],
                    _ => false,
                };
                if !ok {
                    return self.slow(reason::VERSION);
                }
                if k == 9 {
                    self.phase = phase::LINE;
                }
            }
            phase::LINE => match b {
                b'\r' => self.phase = phase::FINAL_LF,
                b' ' | b'\t' => return self.slow(reason::OBS_FOLD),
                _ if is_name_byte(b) => {
                    self.mark = at;
                    self.names = NAME_HOST | NAME_COOKIE;
                    self.name_byte(0, b);
                    self.phase = phase::NAME;
                }
                _ => return self.slow(reason::HEADER_NAME),
            },
            phase::NAME => match b {
                b':' => {
                    let name_len = at - self.mark;
                    self.headers += 1;
                    if name_len == 4 && self.names & NAME_HOST != 0 {
                        if self.fields & Self::HOST_FIELD != 0 {
                            return self.slow(reason::HOST_REPEATED);
                        }
                        self.fields |= Self::HOST_FIELD;
                        self.phase = phase::HOST_SPACE;
                    } else {
                        let cookie = name_len == 6 && self.names & NAME_COOKIE != 0;
                        // From here `names` says whether the value is a Cookie field's.
                        self.names = 0;
                        if cookie {
                            self.fields |= Self::COOKIE_FIELD;
                            let k = self.cookie_fields;
                            if k < MAX_COOKIE_FIELDS as u32 {
                                self.cookie_field_start[k as usize & (MAX_COOKIE_FIELDS - 1)] =
                                    at + 1;
                                self.names = NAME_COOKIE;
                            } else {
                                self.fields |= Self::COOKIES_UNREAD;
                            }
                        }
                        self.phase = phase::VALUE;
                    }
                }
                _ if is_name_byte(b) => self.name_byte(at - self.mark, b),
                _ => return self.slow(reason::HEADER_NAME),
            },
            phase::VALUE => match b {
                b'\r' => {
                    if self.names & NAME_COOKIE != 0 {
                        let k = self.cookie_fields;
                        self.cookie_field_end[k as usize & (MAX_COOKIE_FIELDS - 1)] = at;
                        self.cookie_fields = k + 1;
                    }
                    self.phase = phase::VALUE_LF;
                }
                b'\t' | 0x20..=0x7e => {}
                _ => return self.slow(reason::HEADER_VALUE),
            },
            phase::VALUE_LF => {
                if b != b'\n' {
                    return self.slow(reason::LINE_END);
                }
                self.phase = phase::LINE;
            }
            phase::HOST_SPACE | phase::HOST => {
                if self.phase == phase::HOST_SPACE {
                    if b == b' ' || b == b'\t' {
                        return true;
                    }
                    self.host_start = at;
                    self.phase = phase::HOST;
                }
                match b {
                    b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {}
                    b'A'..=b'Z' => buf[at as usize & SCRATCH_MASK] = b | 0x20,
                    b':' | b'\r' => {
                        if !self.end_host(buf, at) {
                            return false;
                        }
                        self.phase = if b == b':' {
                            phase::HOST_PORT
                        } else {
                            phase::VALUE_LF
                        };
                    }
                    _ => return self.slow(reason::HOST),
                }
            }
            phase::HOST_PORT => match b {
                b'0'..=b'9' => {}
                b'\r' => self.phase = phase::VALUE_LF,
                _ => return self.slow(reason::HOST),
            },
            phase::FINAL_LF => {
                if b != b'\n' {
                    return self.slow(reason::LINE_END);
                }
                if at + 1 != self.len {
                    return self.slow(reason::TRAILING_BYTES);
                }
                self.phase = phase::DONE;
                return false;
            }
            _ => return false,
        }
        true
    }

    /// Narrows the candidate names by the `k`th byte of a header name.
    #[inline(always)]
    fn name_byte(&mut self, k: u32, b: u8) {
        let lower = b | 0x20;
        let k = k as usize;
        if k >= 4 || lower != b"host"[k & 3] {
            self.names &= !NAME_HOST;
        }
        if k >= 6 || lower != b"cookie"[k % 6] {
            self.names &= !NAME_COOKIE;
        }
    }

    /// The Host's name ends before `at` (a `:` or the line's CR): cut a trailing dot.
    #[inline(always)]
    fn end_host(&mut self, buf: &[u8; SCRATCH_LEN], at: u32) -> bool {
        let mut end = at;
        if end == self.host_start {
            // `Host:` or `Host: :80`: no host, as `host_of` says.
            self.host_start = 0;
            self.host_end = 0;
            return true;
        }
        if buf[(end - 1) as usize & SCRATCH_MASK] == b'.' {
            end -= 1;
        }
        if end == self.host_start || end - self.host_start > MAX_HOST_LEN {
            return self.slow(reason::HOST);
        }
        self.host_end = end;
        true
    }

    /// The path segment from `self.segment` to `end` is neither `.` nor `..`.
    #[inline(always)]
    fn segment_is_plain(&self, buf: &[u8; SCRATCH_LEN], end: u32) -> bool {
        let start = self.segment;
        let dot = |i: u32| buf[i as usize & SCRATCH_MASK] == b'.';
        match end.wrapping_sub(start) {
            1 => !dot(start),
            2 => !(dot(start) && dot(start + 1)),
            _ => true,
        }
    }
}

/// The scratch states that [`zero_words`] may clear: `repr(C)`, of `u32` and `u64`
/// fields only, so that all-zero bytes are a value of the type.
///
/// # Safety
/// Only for such types.
unsafe trait PlainWords: Sized {}
// SAFETY: each is `repr(C)` with `u32`, `u64` and arrays of `u32` fields only.
unsafe impl PlainWords for RequestScan {}
// SAFETY: as above.
unsafe impl PlainWords for CookieWalk {}
// SAFETY: as above.
unsafe impl PlainWords for HelloScan {}
// SAFETY: as above.
unsafe impl PlainWords for RuleEval {}

/// Writes zero over `value` four bytes at a time. A new scan state built as a value and
/// assigned into the XDP program's scratch made the compiler clear it with `memset`,
/// which for BPF is a loop storing one byte per iteration: 152 of them for a
/// [`RequestScan`], about a quarter of a whole decision. Volatile, so that the stores
/// are not merged back into that `memset`.
#[inline(always)]
fn zero_words<T: PlainWords>(value: &mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(4) && core::mem::align_of::<T>() >= 4) };
    let words = (value as *mut T).cast::<u32>();
    for i in 0..core::mem::size_of::<T>() / 4 {
        // SAFETY: word `i` lies within `value` and is aligned (the assertion above), and
        // all-zero bytes are a value of `T` (`PlainWords`).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// Bytes [`RequestScan::skip_plain`] steps over at most at once: about a long header
/// value's, so that one run covers it and the verifier still checks the loop cheaply.
pub const PLAIN_RUN: u32 = 64;

/// Steps the position `at` over the bytes of `class` ([`PLAIN_BYTES`]) ahead of it, up to
/// `end`: eight at a time while all eight are, then one by one, [`PLAIN_RUN`] and seven
/// more at most; returns where the run ends. The one run of both [`RequestScan`]'s and
/// [`CookieWalk`]'s `skip_plain`. The position goes through memory after each advance
/// (read back volatile; in the XDP program it lives in map memory, whose bytes the
/// verifier does not track), so that the verifier sees one path per loop, not one per
/// length of run.
#[inline(always)]
fn skip_run(buf: &[u8; SCRATCH_LEN], at: &mut u32, end: u32, class: u32) -> u32 {
    // SAFETY (each volatile read): a read through a valid reference.
    let mut pos = unsafe { core::ptr::read_volatile(at) };
    for _ in 0..PLAIN_RUN / 8 {
        if pos + 8 > end {
            break;
        }
        let mut plain = 1 << class;
        for k in 0..8 {
            plain &= PLAIN_BYTES[usize::from(buf[(pos as usize + k) & SCRATCH_MASK])];
        }
        if plain == 0 {
            break;
        }
        *at = pos + 8;
        pos = unsafe { core::ptr::read_volatile(at) };
    }
    for _ in 0..7 {
        if pos >= end
            || PLAIN_BYTES[usize::from(buf[pos as usize & SCRATCH_MASK])] & 1 << class == 0
        {
            break;
        }
        *at = pos + 1;
        pos = unsafe { core::ptr::read_volatile(at) };
    }
    pos
}

/// The runs of plain bytes [`RequestScan::skip_plain`] knows, by phase.
const PLAIN_VALUE: u32 = 0;
const PLAIN_QUERY: u32 = 1;
const PLAIN_PATH: u32 = 2;
const PLAIN_NAME: u32 = 3;
const PLAIN_HOST: u32 = 4;
/// A cookie pair's bytes up to its end (`;`), for [`CookieWalk::skip_plain`].
const PLAIN_COOKIE_PAIR: u32 = 5;
/// A cookie value's letters and digits.
const PLAIN_COOKIE_VALUE: u32 = 6;
/// What comes before a cookie pair's name: spaces, tabs and `;`.
const PLAIN_COOKIE_LEAD: u32 = 7;

/// For each byte, the classes of runs it belongs to (bit `class`): what
/// [`RequestScan::byte`] steps over without a change in each phase (a header value's
/// printable bytes and tab; a query's printable bytes but `#`; a path's bytes but `/`
/// and `.`; a header name's; a Host's lower-case ones). One table lookup a byte.
static PLAIN_BYTES: [u8; 256] = plain_bytes();

const fn plain_bytes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut classes = 0;
        if b == b'\t' || (b >= 0x20 && b <= 0x7e) {
            classes |= 1 << PLAIN_VALUE;
        }
        if b >= 0x21 && b <= 0x7e && b != b'#' {
            classes |= 1 << PLAIN_QUERY;
        }
        if is_path_byte(b) && b != b'/' && b != b'.' {
            classes |= 1 << PLAIN_PATH;
        }
        if is_name_byte(b) {
            classes |= 1 << PLAIN_NAME;
        }
        if matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_') {
            classes |= 1 << PLAIN_HOST;
        }
        if b != b';' {
            classes |= 1 << PLAIN_COOKIE_PAIR;
        }
        if b.is_ascii_alphanumeric() {
            classes |= 1 << PLAIN_COOKIE_VALUE;
        }
        if b == b' ' || b == b'\t' || b == b';' {
            classes |= 1 << PLAIN_COOKIE_LEAD;
        }
        table[i] = classes;
        i += 1;
    }
    table
}

/// Whether the ten bytes at `at` are `HTTP/1.1` or `HTTP/1.0` and CRLF, as the
/// version phase reads them one by one.
#[inline(always)]
fn is_version(buf: &[u8; SCRATCH_LEN], at: u32) -> bool {
    const VERSION: &[u8; 10] = b"HTTP/1.1\r\n";
    let mut same = true;
    for (k, want) in VERSION.iter().enumerate() {
        let b = buf[(at as usize + k) & SCRATCH_MASK];
        same &= b == *want || (k == 7 && b == b'0');
    }
    same
}

/// Path bytes that mean themselves to every server: RFC 3986 `pchar` without `%`
/// (`unreserved`, `sub-delims`, `:` and `@`), and `/`.
#[inline(always)]
const fn is_path_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\''
        | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/')
}

/// Header name bytes the kernel reads: a subset of RFC 9110's `tchar`.
#[inline(always)]
const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Cookie fields of one request the kernel reads: HTTP/1.1 clients send one (RFC 6265
/// §5.4); a request with more leaves every cookie unknown.
pub const MAX_COOKIE_FIELDS: usize = 4;
/// Distinct cookie names a rule set reads in the kernel (rules' `cookie` conditions and
/// sticky pools together); the names past it stay in userspace.
pub const MAX_KERNEL_COOKIES: usize = 4;
/// Longest cookie name the kernel looks for.
pub const MAX_COOKIE_NAME_LEN: usize = 64;
/// Words of a cookie name [`CookieWalk::skip_plain`] compares in one run: the rest of
/// a name of up to 17 bytes (the first byte is read alone, narrowing the names).
const NAME_RUN_WORDS: u32 = 2;

/// A cookie name the kernel looks for, and the separator a sticky pool by id cuts its
/// value at ([`KernelCookieName::NO_SEPARATOR`] without one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCookieName {
    pub len: u32,
    /// A byte, or [`KernelCookieName::NO_SEPARATOR`].
    pub separator: u32,
    pub bytes: [u8; MAX_COOKIE_NAME_LEN],
}

impl Default for KernelCookieName {
    fn default() -> Self {
        Self {
            len: 0,
            separator: Self::NO_SEPARATOR,
            bytes: [0; MAX_COOKIE_NAME_LEN],
        }
    }
}

impl KernelCookieName {
    pub const NO_SEPARATOR: u32 = 0x100;

    /// `None` for a name the kernel does not look for: empty, longer than
    /// [`MAX_COOKIE_NAME_LEN`], or with a byte that is not visible ASCII or is `;` or `=`
    /// (no pair's trimmed name has one, so the slow path never finds it either, but the
    /// slow path says so). Likewise a separator that is not one such byte.
    pub fn new(name: &[u8], separator: Option<&[u8]>) -> Option<Self> {
        let visible = |b: &u8| (0x21..=0x7e).contains(b) && *b != b';' && *b != b'=';
        if name.is_empty() || !name.iter().all(visible) {
            return None;
        }
        let separator = match separator {
            None => Self::NO_SEPARATOR,
            Some([b]) if visible(b) => u32::from(*b),
            Some(_) => return None,
        };
        let mut n = Self {
            separator,
            ..Self::default()
        };
        n.bytes.get_mut(..name.len())?.copy_from_slice(name);
        n.len = name.len() as u32;
        Some(n)
    }
}

mod cookie_phase {
    /// Before a pair's name (spaces, empty pairs).
    pub const LEAD: u32 = 0;
    pub const NAME: u32 = 1;
    /// Spaces after name bytes: the name's end, unless more name follows.
    pub const NAME_SPACE: u32 = 2;
    /// After `=`, before the value's first byte.
    pub const VALUE_LEAD: u32 = 3;
    pub const VALUE: u32 = 4;
}

const NO_POSITION: u32 = u32::MAX;

/// The walk over a request's Cookie fields ([`RequestScan::cookie_fields`]) that finds
/// the cookies the rule set names, exactly as `baton-dispatch`'s `RequestView::cookie`
/// does: every Cookie field in order, split at `;`, each pair split at its first `=`
/// (pairs without one skipped), name and value trimmed of spaces and tabs, names
/// compared byte for byte, the first pair of a name counting. Results go into the
/// scan's `cookie_*` fields; [`COOKIE_STEP_MOVES`] moves a step (a run of bytes that
/// change nothing found, [`CookieWalk::skip_plain`], and a byte, or a field's end), so
/// [`MAX_COOKIE_STEPS`] steps read any segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieWalk {
    field: u32,
    at: u32,
    end: u32,
    phase: u32,
    /// Non-zero once every field was read.
    done: u32,
    name_len: u32,
    /// Names (bit `k`: [`KernelRuleSet::cookie_names`]`[k]`) the pair's name read so
    /// far may be.
    candidates: u32,
    value_start: u32,
    value_end: u32,
    /// The last separator of each candidate in the value read so far.
    last_separator: [u32; MAX_KERNEL_COOKIES],
    /// The class of a value's runs ([`CookieWalk::skip_plain`]): its letters and digits,
    /// or none (0) when a name's separator is one; the rule set's, found once a walk.
    value_run: u32,
}

impl CookieWalk {
    /// A walk over `scan`'s Cookie fields, for the cookie names of `set`.
    #[inline(always)]
    pub fn new(scan: &RequestScan, set: &KernelRuleSet) -> Self {
        let mut walk = Self::default();
        walk.start(scan, set);
        walk
    }

    /// Makes this value a new walk over `scan`'s Cookie fields, for the cookie names of
    /// `set`, in place.
    #[inline(always)]
    pub fn start(&mut self, scan: &RequestScan, set: &KernelRuleSet) {
        zero_words(self);
        self.at = scan.cookie_field_start[0];
        self.end = scan.cookie_field_end[0];
        self.phase = cookie_phase::LEAD;
        self.forget_separators();
        // A separator that is a letter or digit ends a run of them: then no run.
        let mut letters = 1u8 << PLAIN_COOKIE_VALUE;
        for name in &set.cookie_names {
            letters &= !PLAIN_BYTES[name.separator as usize & 0xff]
                | if name.separator < 0x100 { 0 } else { 0xff };
        }
        self.value_run = u32::from(letters);
    }

    /// Makes up to [`COOKIE_STEP_MOVES`] moves; `false` once every field is read.
    #[inline(always)]
    pub fn step(
        &mut self,
        scan: &mut RequestScan,
        buf: &[u8; SCRATCH_LEN],
        set: &KernelRuleSet,
    ) -> bool {
        let fields = if scan.cookie_fields < MAX_COOKIE_FIELDS as u32 {
            scan.cookie_fields
        } else {
            MAX_COOKIE_FIELDS as u32
        };
        for _ in 0..COOKIE_STEP_MOVES {
            if self.field >= fields {
                self.done = 1;
                return false;
            }
            if self.at >= self.end {
                // The field's end ends its last pair.
                self.end_pair(scan);
                self.field += 1;
                let k = self.field as usize & (MAX_COOKIE_FIELDS - 1);
                self.at = scan.cookie_field_start[k];
                self.end = scan.cookie_field_end[k];
                continue;
            }
            self.skip_plain(buf, set);
            let at = self.position();
            if at >= self.end {
                continue;
            }
            self.at = at + 1;
            let b = buf[at as usize & SCRATCH_MASK];
            self.byte(scan, set, at, b);
        }
        // The last field read in the step's last move: over now, not a step later.
        if self.field >= fields {
            self.done = 1;
            return false;
        }
        true
    }

    /// Reads up to [`COOKIE_STEP_MOVES`] bytes one by one, without the runs
    /// [`CookieWalk::step`] steps over: what that must come to, for the tests and the
    /// fuzz target.
    #[doc(hidden)]
    pub fn step_byte_by_byte(
        &mut self,
        scan: &mut RequestScan,
        buf: &[u8; SCRATCH_LEN],
        set: &KernelRuleSet,
    ) -> bool {
        let fields = scan.cookie_fields.min(MAX_COOKIE_FIELDS as u32);
        for _ in 0..COOKIE_STEP_MOVES {
            if self.field >= fields {
                self.done = 1;
                return false;
            }
            if self.at >= self.end {
                self.end_pair(scan);
                self.field += 1;
                let k = self.field as usize & (MAX_COOKIE_FIELDS - 1);
                self.at = scan.cookie_field_start[k];
                self.end = scan.cookie_field_end[k];
                continue;
            }
            let at = self.at;
            self.at = at + 1;
            let b = buf[at as usize & SCRATCH_MASK];
            self.byte(scan, set, at, b);
        }
        true
    }

    /// Steps over the bytes ahead that [`CookieWalk::byte`] would read to no effect on
    /// what the walk finds: before a pair, spaces, tabs and `;`; with no name left that
    /// the pair may be, everything up to
    /// the next `;` (the pair's end; its `=` and spaces no longer matter); in a value,
    /// letters and digits (unless a name's separator is one), which only move the
    /// value's end; and, in a name that is one name's only, the rest of that name, up
    /// to eight bytes compared at once, when the bytes ahead are it (then the byte after
    /// them is the pair's `=`, or what tells it is another name). The walk read every
    /// byte through its state machine, about 5.5 ns a byte, most of a request's cookie
    /// time; the bytes that end a run go through `byte` as before, so the outcome is the
    /// same.
    #[inline(always)]
    fn skip_plain(&mut self, buf: &[u8; SCRATCH_LEN], set: &KernelRuleSet) {
        // SAFETY: a read of a field through a valid reference; from memory for the
        // verifier, as `RequestScan::position`.
        let phase = unsafe { core::ptr::read_volatile(&self.phase) };
        let candidates = self.candidates;
        let end = self.end;
        let at = self.position();
        let class = if phase == cookie_phase::LEAD {
            PLAIN_COOKIE_LEAD
        } else if candidates == 0 {
            PLAIN_COOKIE_PAIR
        } else if phase == cookie_phase::VALUE || phase == cookie_phase::VALUE_LEAD {
            let letters = self.value_run;
            if letters == 0
                || at >= end
                || u32::from(PLAIN_BYTES[usize::from(buf[at as usize & SCRATCH_MASK])]) & letters
                    == 0
            {
                return;
            }
            if phase == cookie_phase::VALUE_LEAD {
                // The value's first byte, as `byte` takes it.
                self.value_start = at;
                self.phase = cookie_phase::VALUE;
            }
            PLAIN_COOKIE_VALUE
        } else if phase == cookie_phase::NAME && candidates & (candidates - 1) == 0 {
            // One name left: the rest of it, eight bytes at a time.
            let name =
                &set.cookie_names[candidates.trailing_zeros() as usize & (MAX_KERNEL_COOKIES - 1)];
            for _ in 0..NAME_RUN_WORDS {
                // From memory, as the position: a length the compiler carried from the
                // last turn let it drop the index's mask, and the verifier could not
                // bound the read.
                // SAFETY: a read of a field through a valid reference.
                let k = unsafe { core::ptr::read_volatile(&self.name_len) };
                let at = self.position();
                // Eight bytes of the name read from `k`, those past its end masked off:
                // within its bytes (a name's last seven are read byte by byte).
                if k >= name.len || k as usize + 8 > MAX_COOKIE_NAME_LEN {
                    return;
                }
                let n = if name.len - k < 8 { name.len - k } else { 8 };
                if at + n > end || word_at(buf, at, n) != word_at(&name.bytes, k, n) {
                    return;
                }
                self.name_len = k + n;
                self.at = at + n;
            }
            return;
        } else {
            return;
        };
        let to = skip_run(buf, &mut self.at, end, class);
        if class == PLAIN_COOKIE_VALUE && to != at {
            self.value_end = to;
        }
    }

    /// The position, read from memory, as [`RequestScan::position`] and for the same
    /// reason.
    #[inline(always)]
    fn position(&self) -> u32 {
        // SAFETY: a read of a field through a valid reference.
        unsafe { core::ptr::read_volatile(&self.at) }
    }

    /// Marks the cookies unknown if the walk did not read every field.
    #[inline(always)]
    pub fn finish(&self, scan: &mut RequestScan) {
        if self.done == 0 {
            scan.fields |= RequestScan::COOKIES_UNREAD;
        }
    }

    #[inline(always)]
    fn byte(&mut self, scan: &mut RequestScan, set: &KernelRuleSet, at: u32, b: u8) {
        let space = b == b' ' || b == b'\t';
        match self.phase {
            cookie_phase::LEAD => {
                if space || b == b';' {
                    return;
                }
                self.forget_separators();
                if b == b'=' {
                    // An empty name: no name the kernel looks for is empty.
                    self.candidates = 0;
                    self.start_value(at);
                } else {
                    let names = set.cookies.min(MAX_KERNEL_COOKIES as u32);
                    self.candidates = (1u32 << names) - 1;
                    self.name_len = 0;
                    self.name_byte(set, b);
                    self.phase = cookie_phase::NAME;
                }
            }
            cookie_phase::NAME | cookie_phase::NAME_SPACE => {
                if b == b'=' {
                    for k in 0..MAX_KERNEL_COOKIES {
                        if set.cookie_names[k].len != self.name_len {
                            self.candidates &= !(1 << k);
                        }
                    }
                    self.start_value(at);
                } else if b == b';' {
                    // A pair without `=`: skipped.
                    self.phase = cookie_phase::LEAD;
                } else if space {
                    self.phase = cookie_phase::NAME_SPACE;
                } else {
                    if self.phase == cookie_phase::NAME_SPACE {
                        // A space inside the name: no name the kernel looks for has one.
                        self.candidates = 0;
                    }
                    self.name_byte(set, b);
                    self.phase = cookie_phase::NAME;
                }
            }
            cookie_phase::VALUE_LEAD | cookie_phase::VALUE => {
                if b == b';' {
                    self.end_pair(scan);
                } else if !space {
                    if self.phase == cookie_phase::VALUE_LEAD {
                        self.value_start = at;
                        self.phase = cookie_phase::VALUE;
                    }
                    self.value_end = at + 1;
                    for k in 0..MAX_KERNEL_COOKIES {
                        if set.cookie_names[k].separator == u32::from(b) {
                            self.last_separator[k] = at;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// No separator seen yet, for each name. A word at a time, volatile: assigned as an
    /// array, the compiler filled it with `memset`, for BPF a loop storing one byte per
    /// iteration (16 of them at every pair, about half of the walk's time).
    #[inline(always)]
    fn forget_separators(&mut self) {
        for separator in &mut self.last_separator {
            // SAFETY: a write through a valid reference.
            unsafe { core::ptr::write_volatile(separator, NO_POSITION) };
        }
    }

    #[inline(always)]
    fn start_value(&mut self, at: u32) {
        self.value_start = at + 1;
        self.value_end = at + 1;
        self.phase = cookie_phase::VALUE_LEAD;
    }

    /// The `name_len`th byte of a pair's name narrows the candidates.
    #[inline(always)]
    fn name_byte(&mut self, set: &KernelRuleSet, b: u8) {
        let k = self.name_len;
        self.name_len = k.saturating_add(1);
        for c in 0..MAX_KERNEL_COOKIES {
            let name = &set.cookie_names[c];
            let same = k < name.len
                && (k as usize) < MAX_COOKIE_NAME_LEN
                && name.bytes[k as usize & (MAX_COOKIE_NAME_LEN - 1)] == b;
            if !same {
                self.candidates &= !(1 << c);
            }
        }
    }

    /// A pair ends (`;` or the field's end): a candidate it names, not found before,
    /// is found.
    #[inline(always)]
    fn end_pair(&mut self, scan: &mut RequestScan) {
        let has_value = self.phase == cookie_phase::VALUE_LEAD || self.phase == cookie_phase::VALUE;
        if has_value {
            for k in 0..MAX_KERNEL_COOKIES {
                let bit = 1u32 << k;
                if self.candidates & bit == 0 || scan.cookies_found & bit != 0 {
                    continue;
                }
                scan.cookies_found |= bit;
                scan.cookie_value_start[k] = self.value_start;
                scan.cookie_value_end[k] = self.value_end;
                scan.cookie_id_start[k] = if self.last_separator[k] == NO_POSITION {
                    self.value_start
                } else {
                    self.last_separator[k] + 1
                };
            }
        }
        self.candidates = 0;
        self.phase = cookie_phase::LEAD;
    }
}

/// Extensions a ClientHello scan's step walks over, at most (it stops at server_name
/// and ALPN, which it reads).
pub const EXTENSIONS_PER_STEP: u32 = 8;

/// The TLS record content type of a handshake (RFC 8446 §5.1): a segment that starts
/// with it is read as a ClientHello ([`HelloScan`]), as `parse_request` does.
pub const TLS_HANDSHAKE: u8 = 22;
/// RFC 8446 §5.1: a record's fragment is at most 2^14 bytes.
const TLS_MAX_FRAGMENT: u32 = 1 << 14;
/// `bpf_loop` iterations that read any ClientHello of one segment: a step reads one
/// field (two bytes at least: an ALPN name) or [`SCAN_STEP_BYTES`] of the host name.
pub const MAX_HELLO_STEPS: u32 = SCRATCH_LEN as u32 / 2 + 8;

mod hello_phase {
    pub const RECORD: u32 = 0;
    pub const VERSION: u32 = 1;
    pub const CIPHERS: u32 = 2;
    pub const COMPRESSION: u32 = 3;
    pub const EXTENSIONS: u32 = 4;
    pub const EXTENSION: u32 = 5;
    pub const SNI_LIST: u32 = 6;
    pub const SNI_ENTRY: u32 = 7;
    pub const SNI_NAME: u32 = 8;
    pub const ALPN_LIST: u32 = 9;
    pub const ALPN_NAME: u32 = 10;
    pub const DONE: u32 = 11;
    pub const SLOW: u32 = 12;
}

const SEEN_SNI: u32 = 1;
const SEEN_ALPN: u32 = 2;

/// A TLS ClientHello (RFC 8446 §4.1.2) whole in one record that is the whole segment,
/// read field by field ([`HelloScan::step`], one field a `bpf_loop` iteration): the
/// record and handshake headers, the version, random and session id, the cipher
/// suites, the compression methods and every extension, checked as
/// `baton_proto::request::parse_client_hello` checks them (the server_name extension's
/// list and host name, RFC 6066 §3, and the ALPN list, RFC 7301 §3.1, whose errors the
/// slow path refuses too; one of each). The host name is lower-cased in the buffer.
/// Anything the slow path would refuse or read otherwise goes to the slow path: it
/// parses the hello again and decides as without the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloScan {
    at: u32,
    len: u32,
    phase: u32,
    reason: u32,
    /// The end of the handshake body (the segment's end).
    end: u32,
    /// The end of the current extension's data.
    data_end: u32,
    seen: u32,
    /// The SNI host name, when the hello has one (`sni_end` is 0 without).
    pub sni_start: u32,
    pub sni_end: u32,
}

impl HelloScan {
    /// A scan of the first `len` bytes of the buffer, which start with
    /// [`TLS_HANDSHAKE`].
    #[inline(always)]
    pub fn new(len: usize) -> Self {
        let mut scan = Self::default();
        scan.start(len);
        scan
    }

    /// Makes this value a new scan of the first `len` bytes, in place.
    #[inline(always)]
    pub fn start(&mut self, len: usize) {
        zero_words(self);
        self.phase = hello_phase::RECORD;
        if len == 0 || len > SCRATCH_LEN {
            self.phase = hello_phase::SLOW;
            self.reason = reason::SEGMENT_SIZE;
        } else {
            self.len = len as u32;
        }
    }

    #[inline(always)]
    fn slow(&mut self, why: u32) -> bool {
        self.phase = hello_phase::SLOW;
        self.reason = why;
        false
    }

    #[inline(always)]
    fn malformed(&mut self) -> bool {
        self.slow(reason::TLS_MALFORMED)
    }

    /// Reads one field; `false` once the scan is over.
    #[inline(always)]
    pub fn step(&mut self, buf: &mut [u8; SCRATCH_LEN]) -> bool {
        let byte = |i: u32| u32::from(buf[i as usize & SCRATCH_MASK]);
        let u16_at = |i: u32| byte(i) << 8 | byte(i + 1);
        let at = self.at;
        match self.phase {
            hello_phase::RECORD => {
                // Record header (5 bytes), handshake header (4).
                if self.len < 9 {
                    return self.slow(reason::TLS_FRAGMENTED);
                }
                if byte(1) != 3 {
                    return self.malformed();
                }
                let record = u16_at(3);
                if record == 0 || record > TLS_MAX_FRAGMENT {
                    return self.malformed();
                }
                if byte(5) != 1 {
                    return self.malformed();
                }
                let message = byte(6) << 16 | u16_at(7);
                if 5 + record != self.len || 4 + message != record {
                    return self.slow(reason::TLS_FRAGMENTED);
                }
                self.at = 9;
                self.end = self.len;
                self.phase = hello_phase::VERSION;
            }
            hello_phase::VERSION => {
                // legacy_version, random, legacy_session_id<0..32>.
                if at + 35 > self.end || byte(at) != 3 {
                    return self.malformed();
                }
                let session = byte(at + 34);
                self.at = at + 35 + session;
                if session > 32 || self.at > self.end {
                    return self.malformed();
                }
                self.phase = hello_phase::CIPHERS;
            }
            hello_phase::CIPHERS => {
                if at + 2 > self.end {
                    return self.malformed();
                }
                let n = u16_at(at);
                self.at = at + 2 + n;
                if n == 0 || n % 2 != 0 || self.at > self.end {
                    return self.malformed();
                }
                self.phase = hello_phase::COMPRESSION;
            }
            hello_phase::COMPRESSION => {
                if at + 1 > self.end {
                    return self.malformed();
                }
                let n = byte(at);
                self.at = at + 1 + n;
                if n == 0 || self.at > self.end {
                    return self.malformed();
                }
                // Without extensions (a TLS 1.2 hello may end here): no SNI.
                self.phase = if self.at == self.end {
                    hello_phase::DONE
                } else {
                    hello_phase::EXTENSIONS
                };
            }
            hello_phase::EXTENSIONS => {
                if at + 2 > self.end || at + 2 + u16_at(at) != self.end {
                    return self.malformed();
                }
                self.at = at + 2;
                self.phase = hello_phase::EXTENSION;
            }
            hello_phase::EXTENSION => {
                // The extensions the scan only steps over, several a step: a hello has a
                // dozen or more, and a step's own cost was most of each one's.
                let mut at = at;
                let mut kind = None;
                for _ in 0..EXTENSIONS_PER_STEP {
                    if at == self.end {
                        self.at = at;
                        self.phase = hello_phase::DONE;
                        return false;
                    }
                    if at + 4 > self.end {
                        return self.malformed();
                    }
                    let data_end = at + 4 + u16_at(at + 2);
                    if data_end > self.end {
                        return self.malformed();
                    }
                    let this = u16_at(at);
                    if this == 0 || this == 16 {
                        self.at = at + 4;
                        self.data_end = data_end;
                        kind = Some(this);
                        break;
                    }
                    at = data_end;
                }
                let Some(kind) = kind else {
                    self.at = at;
                    return true;
                };
                // RFC 8446 §4.2: one extension of each type.
                let seen = if kind == 0 { SEEN_SNI } else { SEEN_ALPN };
                if self.seen & seen != 0 {
                    return self.malformed();
                }
                self.seen |= seen;
                self.phase = if seen == SEEN_SNI {
                    hello_phase::SNI_LIST
                } else {
                    hello_phase::ALPN_LIST
                };
            }
            hello_phase::SNI_LIST | hello_phase::ALPN_LIST => {
                // The list fills the extension's data exactly; a server_name list is
                // not empty.
                if at + 2 > self.data_end {
                    return self.malformed();
                }
                let n = u16_at(at);
                let sni = self.phase == hello_phase::SNI_LIST;
                if at + 2 + n != self.data_end || (sni && n == 0) {
                    return self.malformed();
                }
                self.at = at + 2;
                self.phase = if sni {
                    hello_phase::SNI_ENTRY
                } else {
                    hello_phase::ALPN_NAME
                };
            }
            hello_phase::SNI_ENTRY => {
                if at >= self.data_end {
                    self.phase = hello_phase::EXTENSION;
                    return true;
                }
                if byte(at) != 0 {
                    // RFC 6066 §3: an unknown name_type ends what can be read.
                    self.at = self.data_end;
                    self.phase = hello_phase::EXTENSION;
                    return true;
                }
                if at + 3 > self.data_end {
                    return self.malformed();
                }
                let start = at + 3;
                let end = start + u16_at(at + 1);
                // One host_name, not empty.
                if end > self.data_end || end == start || self.sni_end != 0 {
                    return self.malformed();
                }
                self.sni_start = start;
                self.sni_end = end;
                self.at = start;
                self.phase = hello_phase::SNI_NAME;
            }
            hello_phase::SNI_NAME => {
                for _ in 0..SCAN_STEP_BYTES {
                    let i = self.at;
                    if i >= self.sni_end {
                        self.phase = hello_phase::SNI_ENTRY;
                        return true;
                    }
                    let b = buf[i as usize & SCRATCH_MASK];
                    match b {
                        b'A'..=b'Z' => buf[i as usize & SCRATCH_MASK] = b | 0x20,
                        0x21..=0x7e => {}
                        _ => return self.malformed(),
                    }
                    self.at = i + 1;
                }
            }
            hello_phase::ALPN_NAME => {
                if at >= self.data_end {
                    self.phase = hello_phase::EXTENSION;
                    return true;
                }
                let n = byte(at);
                self.at = at + 1 + n;
                if n == 0 || self.at > self.data_end {
                    return self.malformed();
                }
            }
            _ => return false,
        }
        true
    }

    /// The scan's outcome, as a [`RequestScan`] the rules read (its host the SNI without
    /// a trailing dot, as `RequestView` has it, and nothing else), or the slow path's
    /// reason: the hello within `max_head_len` bytes, a host name of at most
    /// [`MAX_HOST_LEN`] bytes.
    #[inline(always)]
    pub fn request(&self, buf: &[u8; SCRATCH_LEN], max_head_len: u32) -> Result<RequestScan, u32> {
        let mut scan = RequestScan::default();
        self.request_into(buf, max_head_len, &mut scan)?;
        Ok(scan)
    }

    /// [`HelloScan::request`], written into `scan` in place.
    #[inline(always)]
    pub fn request_into(
        &self,
        buf: &[u8; SCRATCH_LEN],
        max_head_len: u32,
        scan: &mut RequestScan,
    ) -> Result<(), u32> {
        match self.phase {
            hello_phase::DONE if self.len > max_head_len => return Err(reason::LIMITS),
            hello_phase::DONE => {}
            hello_phase::SLOW => return Err(self.reason),
            _ => return Err(reason::TLS_FRAGMENTED),
        }
        scan.start(self.len as usize);
        scan.phase = phase::DONE;
        scan.fields = RequestScan::TLS;
        if self.sni_end > self.sni_start {
            let mut end = self.sni_end;
            // `RequestView` cuts one trailing dot, as for a Host.
            if buf[(end - 1) as usize & SCRATCH_MASK] == b'.' {
                end -= 1;
            }
            if end == self.sni_start || end - self.sni_start > MAX_HOST_LEN {
                return Err(reason::HOST);
            }
            scan.host_start = self.sni_start;
            scan.host_end = end;
        }
        Ok(())
    }
}

/// Terms per generation of the rule program.
pub const MAX_TERMS: u32 = 1024;
/// Terms one `bpf_loop` step of the XDP program runs: a term is a few dozen
/// instructions, so a step per term spent as much on the step as on the term.
pub const TERMS_PER_STEP: u32 = 4;
/// `bpf_loop` iterations that run `terms` terms.
#[inline(always)]
pub const fn eval_steps(terms: u32) -> u32 {
    terms.div_ceil(TERMS_PER_STEP)
}
/// Texts (host names, paths, extensions, methods) per generation.
pub const MAX_TEXTS: u32 = 512;
/// Longest text a term compares; a longer host or path compiles to "unknown".
pub const MAX_TEXT_LEN: usize = 128;
/// Deepest the postfix program's stack may grow within a rule: two bits a value in a
/// `u64`. A rule nested deeper compiles to "unknown".
pub const MAX_EVAL_DEPTH: u32 = 32;
/// Pools per generation.
pub const MAX_KERNEL_POOLS: u32 = 64;
/// Slots (round robin) and members (hashing) of every pool together, per generation.
pub const MAX_POOL_SLOTS: u32 = 4096;
/// Longest round-robin period (one slot a pick): a pool whose weights, divided by their
/// greatest common divisor, add up to more goes to the slow path.
pub const MAX_ROUND_ROBIN_SLOTS: u32 = 256;
/// Most up members of a hashing pool: the kernel scores each in a bounded loop.
pub const MAX_HASH_MEMBERS: u32 = 32;

/// A text a term compares with a part of the request. Host names and extensions are
/// stored lower case.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelText {
    pub len: u32,
    pub bytes: [u8; MAX_TEXT_LEN],
}

impl Default for KernelText {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; MAX_TEXT_LEN],
        }
    }
}

impl KernelText {
    /// `None` when `text` is longer than [`MAX_TEXT_LEN`].
    pub fn new(text: &[u8]) -> Option<Self> {
        let mut t = Self::default();
        t.bytes.get_mut(..text.len())?.copy_from_slice(text);
        t.len = text.len() as u32;
        Some(t)
    }

    /// The values of a set term (`EXTENSION_IN`, `METHOD_IN`), one [`SET_WORD`] each,
    /// zero-padded; `None` unless there are at most [`MAX_SET_VALUES`], each a
    /// [`set_value`].
    pub fn set<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut t = Self::default();
        for (k, value) in values.into_iter().enumerate() {
            if k >= MAX_SET_VALUES || !set_value(value) {
                return None;
            }
            t.bytes[k * SET_WORD..][..value.len()].copy_from_slice(value);
            t.len = ((k + 1) * SET_WORD) as u32;
        }
        Some(t)
    }
}

impl KernelText {
    /// The entries of a list term (`HOST_IN`, `SNI_IN`, `PATH_IN`), one
    /// [`LIST_SLOT`] each: a header byte (the entry's length, with [`LIST_PARTIAL`] for
    /// a host suffix or a path prefix), then the entry. `None` unless there are 1 to
    /// [`MAX_LIST_ENTRIES`] entries of 1 to [`MAX_LIST_ENTRY_LEN`] bytes.
    pub fn list<'a>(entries: impl IntoIterator<Item = (&'a [u8], bool)>) -> Option<Self> {
        let mut t = Self::default();
        for (k, (entry, partial)) in entries.into_iter().enumerate() {
            if k >= MAX_LIST_ENTRIES || entry.is_empty() || entry.len() > MAX_LIST_ENTRY_LEN {
                return None;
            }
            let slot = &mut t.bytes[k * LIST_SLOT..][..LIST_SLOT];
            slot[0] = entry.len() as u8 | if partial { LIST_PARTIAL } else { 0 };
            slot[1..][..entry.len()].copy_from_slice(entry);
            t.len = ((k + 1) * LIST_SLOT) as u32;
        }
        (t.len != 0).then_some(t)
    }
}

/// Bytes of one entry of a list term, its header byte included: a slot of fixed size,
/// so that the kernel's loop over the entries and its loop over an entry's bytes each
/// have a bound of their own (four entries of 31 bytes at most, where one loop over a
/// text of entries of any length made the verifier walk apart every path through it).
pub const LIST_SLOT: usize = 32;
/// Entries one list term holds.
pub const MAX_LIST_ENTRIES: usize = MAX_TEXT_LEN / LIST_SLOT;
/// Longest entry of a list term; a longer host or path is a leaf of its own.
pub const MAX_LIST_ENTRY_LEN: usize = LIST_SLOT - 1;
/// A list entry's header bit: the entry is a suffix of the host (`HOST_IN`, `SNI_IN`,
/// `*.` wildcards, kept with their dot) or a prefix of the path (`PATH_IN`); without
/// it, the whole host or path.
pub const LIST_PARTIAL: u8 = 0x80;

/// Bytes of one value of a set term: a value is compared as one little-endian word.
pub const SET_WORD: usize = 8;
/// Values one set term holds.
pub const MAX_SET_VALUES: usize = MAX_TEXT_LEN / SET_WORD;

/// Whether `value` can be a set term's: 1 to [`SET_WORD`] bytes, none zero (the
/// padding), so that two values are equal exactly when their words are. Others stay
/// leaves of their own.
pub const fn set_value(value: &[u8]) -> bool {
    if value.is_empty() || value.len() > SET_WORD {
        return false;
    }
    let mut k = 0;
    while k < value.len() {
        if value[k] == 0 {
            return false;
        }
        k += 1;
    }
    true
}

/// One instruction of the rule program. Leaves push true, false or unknown; `AND`, `OR`
/// and `NOT` combine in Kleene's logic; `RULE_END`, or a term marked
/// [`KernelTerm::ENDS_RULE`], ends a rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTerm {
    /// One of the `KernelTerm` constants, with [`KernelTerm::ENDS_RULE`] or not.
    pub op: u32,
    /// The text a comparing leaf uses (an index into the texts), or the pool a
    /// `RULE_END` chooses.
    pub arg: u32,
    /// The rule (its index in `[dispatch]`) a `RULE_END` or a term that
    /// [`KernelTerm::ENDS_RULE`] ends.
    pub rule: u32,
    /// The cookie (an index into [`KernelRuleSet::cookie_names`]) a `COOKIE_PRESENT` or
    /// `COOKIE_EQUALS` reads.
    pub cookie: u32,
    /// The pool a term that [`KernelTerm::ENDS_RULE`] chooses.
    pub pool: u32,
}

impl KernelTerm {
    pub const FALSE: u32 = 0;
    pub const TRUE: u32 = 1;
    /// A condition the kernel does not judge (a regex, a header, a service).
    pub const UNKNOWN: u32 = 2;
    /// The Host is the text.
    pub const HOST_EXACT: u32 = 3;
    /// The Host ends with the text (`.example.com`) and has more before it.
    pub const HOST_SUFFIX: u32 = 4;
    pub const PATH_EXACT: u32 = 5;
    pub const PATH_PREFIX: u32 = 6;
    /// The extension is the text, ASCII case-insensitively.
    pub const EXTENSION: u32 = 7;
    pub const METHOD: u32 = 8;
    /// False when the request has no Cookie field, else unknown: a cookie whose name the
    /// kernel does not look for.
    pub const COOKIE: u32 = 9;
    /// False when the request has no query, else unknown.
    pub const QUERY: u32 = 10;
    pub const AND: u32 = 11;
    pub const OR: u32 = 12;
    pub const NOT: u32 = 13;
    /// Pops the rule's value: true chooses pool `arg`, false goes on to the next rule,
    /// unknown sends the request to the slow path.
    pub const RULE_END: u32 = 14;
    /// A TLS ClientHello whose SNI is the text (never for plaintext HTTP).
    pub const SNI_EXACT: u32 = 15;
    /// ... whose SNI ends with the text and has more before it.
    pub const SNI_SUFFIX: u32 = 16;
    /// The cookie `cookie` is present (unknown when the kernel could not read the
    /// request's cookies).
    pub const COOKIE_PRESENT: u32 = 17;
    /// ... and its value is the text.
    pub const COOKIE_EQUALS: u32 = 18;
    /// The extension is one of the text's values ([`KernelText::set`]), ASCII
    /// case-insensitively: one term for `extension = ["png", "jpg", ...]`, where a leaf
    /// per value and an `OR` between each two cost a term each.
    pub const EXTENSION_IN: u32 = 19;
    /// The method is one of the text's values.
    pub const METHOD_IN: u32 = 20;
    /// The host is one of the text's entries ([`KernelText::list`]), exact or a
    /// `*.` wildcard's suffix: one term for `host = ["a.example", "*.b.example"]`,
    /// where a leaf per entry and an `OR` between each two cost a term each.
    pub const HOST_IN: u32 = 21;
    /// A TLS ClientHello whose SNI is one of the text's entries (never for HTTP).
    pub const SNI_IN: u32 = 22;
    /// The path is one of the text's entries, exact or (with [`LIST_PARTIAL`]) a
    /// prefix: `path = [...]` and `path_prefix = [...]`.
    pub const PATH_IN: u32 = 23;
    /// Or-ed into a term's `op`: once the term has pushed its value, the rule ends as
    /// at a `RULE_END` choosing `pool`. Every rule's last term carries it, so that the
    /// `RULE_END` of its own, a term a rule like the others, costs nothing: a rule of
    /// one condition is one term.
    pub const ENDS_RULE: u32 = 1 << 8;

    /// A leaf that compares a part of the request with a text ([`KernelTerm::ENDS_RULE`]
    /// or not).
    pub const fn uses_text(op: u32) -> bool {
        let op = op & !Self::ENDS_RULE;
        (op >= Self::HOST_EXACT && op <= Self::METHOD)
            || op == Self::SNI_EXACT
            || op == Self::SNI_SUFFIX
            || op == Self::COOKIE_EQUALS
            || op == Self::EXTENSION_IN
            || op == Self::METHOD_IN
            || op == Self::HOST_IN
            || op == Self::SNI_IN
            || op == Self::PATH_IN
    }
}

/// Kleene's three values, two bits each on the evaluation stack.
const V_FALSE: u64 = 0;
const V_TRUE: u64 = 1;
const V_UNKNOWN: u64 = 2;

/// The rule program's run: one term per [`RuleEval::step`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEval {
    stack: u64,
    depth: u32,
    /// The next term.
    pub at: u32,
    /// [`RuleEval::RUNNING`], [`RuleEval::CHOSEN`] or [`RuleEval::SLOW`].
    pub outcome: u32,
    /// The pool chosen.
    pub pool: u32,
    /// The rule that chose it, or stopped the run; `u32::MAX` for the default pool.
    pub rule: u32,
    /// Why the slow path.
    pub reason: u32,
}

impl RuleEval {
    pub const RUNNING: u32 = 0;
    pub const CHOSEN: u32 = 1;
    pub const SLOW: u32 = 2;

    pub const fn new() -> Self {
        Self {
            stack: 0,
            depth: 0,
            at: 0,
            outcome: Self::RUNNING,
            pool: 0,
            rule: u32::MAX,
            reason: 0,
        }
    }

    /// Makes this value [`RuleEval::new`], in place.
    #[inline(always)]
    pub fn start(&mut self) {
        zero_words(self);
        self.outcome = Self::RUNNING;
        self.rule = u32::MAX;
    }

    /// Runs `term` (the program's term number `self.at`), whose text is `text` (any
    /// text for terms that use none); `false` once the run is over.
    #[inline(always)]
    pub fn step(
        &mut self,
        scan: &RequestScan,
        buf: &[u8; SCRATCH_LEN],
        term: &KernelTerm,
        text: &KernelText,
    ) -> bool {
        if self.outcome != Self::RUNNING {
            return false;
        }
        self.at += 1;
        // The kind of term, whether or not it ends its rule.
        let op = term.op & !KernelTerm::ENDS_RULE;
        let value = match op {
            KernelTerm::FALSE => V_FALSE,
            KernelTerm::TRUE => V_TRUE,
            KernelTerm::UNKNOWN => V_UNKNOWN,
            KernelTerm::HOST_EXACT
            | KernelTerm::HOST_SUFFIX
            | KernelTerm::SNI_EXACT
            | KernelTerm::SNI_SUFFIX => {
                let mode = if op == KernelTerm::HOST_EXACT || op == KernelTerm::SNI_EXACT {
                    Compare::Exact
                } else {
                    Compare::Suffix
                };
                // The host is the SNI for TLS (`RequestView::host`); an SNI is TLS's only.
                let sni = op == KernelTerm::SNI_EXACT || op == KernelTerm::SNI_SUFFIX;
                truth(
                    (scan.is_tls() || !sni)
                        && scan.has_host()
                        && compare(buf, scan.host_start, scan.host_end, text, mode),
                )
            }
            KernelTerm::HOST_IN | KernelTerm::SNI_IN => truth(
                (scan.is_tls() || op == KernelTerm::HOST_IN)
                    && scan.has_host()
                    && in_list(buf, scan.host_start, scan.host_end, text, true),
            ),
            // A ClientHello has no method, path or extension: those are false for it.
            KernelTerm::PATH_EXACT
            | KernelTerm::PATH_PREFIX
            | KernelTerm::METHOD
            | KernelTerm::METHOD_IN
            | KernelTerm::PATH_IN
                if scan.is_tls() =>
            {
                V_FALSE
            }
            KernelTerm::PATH_EXACT => truth(compare(
                buf,
                scan.path_start,
                scan.path_end,
                text,
                Compare::Exact,
            )),
            KernelTerm::PATH_PREFIX => truth(compare(
                buf,
                scan.path_start,
                scan.path_end,
                text,
                Compare::Prefix,
            )),
            KernelTerm::EXTENSION => truth(
                scan.ext_start != 0
                    && compare(buf, scan.ext_start, scan.path_end, text, Compare::Folded),
            ),
            KernelTerm::PATH_IN => truth(in_list(buf, scan.path_start, scan.path_end, text, false)),
            KernelTerm::METHOD => truth(compare(buf, 0, scan.method_end, text, Compare::Exact)),
            KernelTerm::EXTENSION_IN => {
                truth(scan.ext_start != 0 && in_set(buf, scan.ext_start, scan.path_end, text, 0x20))
            }
            KernelTerm::METHOD_IN => truth(in_set(buf, 0, scan.method_end, text, 0)),
            KernelTerm::COOKIE => {
                if scan.fields & RequestScan::COOKIE_FIELD == 0 {
                    V_FALSE
                } else {
                    V_UNKNOWN
                }
            }
            KernelTerm::COOKIE_PRESENT | KernelTerm::COOKIE_EQUALS => {
                match scan.cookie(term.cookie) {
                    None => V_UNKNOWN,
                    Some(None) => V_FALSE,
                    Some(Some(_)) if op == KernelTerm::COOKIE_PRESENT => V_TRUE,
                    Some(Some((start, end, _))) => {
                        truth(compare(buf, start, end, text, Compare::Exact))
                    }
                }
            }
            KernelTerm::QUERY => {
                if scan.query_start == 0 {
                    V_FALSE
                } else {
                    V_UNKNOWN
                }
            }
            KernelTerm::AND | KernelTerm::OR => {
                let (Some(b), Some(a)) = (self.pop(), self.pop()) else {
                    return self.broken();
                };
                let and = op == KernelTerm::AND;
                match (a, b) {
                    (V_FALSE, _) | (_, V_FALSE) if and => V_FALSE,
                    (V_TRUE, V_TRUE) if and => V_TRUE,
                    (V_TRUE, _) | (_, V_TRUE) if !and => V_TRUE,
                    (V_FALSE, V_FALSE) if !and => V_FALSE,
                    _ => V_UNKNOWN,
                }
            }
            KernelTerm::NOT => match self.pop() {
                Some(V_TRUE) => V_FALSE,
                Some(V_FALSE) => V_TRUE,
                Some(_) => V_UNKNOWN,
                None => return self.broken(),
            },
            KernelTerm::RULE_END => return self.end_rule(term.rule, term.arg),
            _ => return self.broken(),
        };
        if self.depth >= MAX_EVAL_DEPTH {
            return self.broken();
        }
        self.stack = (self.stack << 2) | value;
        self.depth += 1;
        if term.op & KernelTerm::ENDS_RULE != 0 {
            return self.end_rule(term.rule, term.pool);
        }
        true
    }

    /// The end of rule `rule`: its value popped, true chooses `pool`, false goes on to
    /// the next rule, unknown sends the request to the slow path.
    #[inline(always)]
    fn end_rule(&mut self, rule: u32, pool: u32) -> bool {
        let value = self.pop();
        if self.depth != 0 {
            return self.broken();
        }
        self.rule = rule;
        match value {
            Some(V_TRUE) => {
                self.outcome = Self::CHOSEN;
                self.pool = pool;
                false
            }
            Some(V_FALSE) => {
                self.rule = u32::MAX;
                true
            }
            Some(_) => {
                self.outcome = Self::SLOW;
                self.reason = reason::RULE;
                false
            }
            None => self.broken(),
        }
    }

    /// The program ran out of terms (`terms` of them) without a rule choosing: the
    /// default pool. A run the terms cut short goes to the slow path.
    #[inline(always)]
    pub fn finish(&mut self, terms: u32, default_pool: u32) {
        if self.outcome == Self::RUNNING {
            if self.at == terms && self.depth == 0 {
                self.outcome = Self::CHOSEN;
                self.pool = default_pool;
                self.rule = u32::MAX;
            } else {
                self.broken();
            }
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<u64> {
        if self.depth == 0 {
            return None;
        }
        let value = self.stack & 3;
        self.stack >>= 2;
        self.depth -= 1;
        Some(value)
    }

    #[inline(always)]
    fn broken(&mut self) -> bool {
        self.outcome = Self::SLOW;
        self.reason = reason::TABLES;
        false
    }
}

#[inline(always)]
fn truth(b: bool) -> u64 {
    if b { V_TRUE } else { V_FALSE }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Exact,
    Prefix,
    /// The request's part ends with the text and is longer.
    Suffix,
    /// Exact, the request's bytes lower-cased.
    Folded,
}

/// Compares the request's bytes `start..end` with `text`.
#[inline(always)]
fn compare(
    buf: &[u8; SCRATCH_LEN],
    start: u32,
    end: u32,
    text: &KernelText,
    mode: Compare,
) -> bool {
    let have = end.wrapping_sub(start);
    let want = text.len;
    if end < start || want as usize > MAX_TEXT_LEN {
        return false;
    }
    let from = match mode {
        Compare::Exact | Compare::Folded if have != want => return false,
        Compare::Prefix if have < want => return false,
        Compare::Suffix if have <= want => return false,
        Compare::Suffix => end - want,
        _ => start,
    };
    let fold = if mode == Compare::Folded { 0x20 } else { 0 };
    // The count through `black_box`, bounded again: without it the compiler counts the
    // loop by the request's length (equal to the text's, for an exact comparison),
    // which the verifier cannot bound.
    let count = core::hint::black_box(want) as usize;
    if count > MAX_TEXT_LEN {
        return false;
    }
    for k in 0..count {
        let mut b = buf[(from as usize + k) & SCRATCH_MASK];
        if b.is_ascii_uppercase() {
            b |= fold;
        }
        if b != text.bytes[k] {
            return false;
        }
    }
    true
}

/// Whether the request's bytes `start..end` (upper-case letters or-ed with `fold`) are
/// one of the set's values: the bytes as one word, compared with each value's word.
/// A call of its own in BPF: inlined into each of the rule program's step's terms, its
/// two loops made the verifier walk 43,000 more instructions, for no time saved.
#[inline(never)]
fn in_set(buf: &[u8; SCRATCH_LEN], start: u32, end: u32, set: &KernelText, fold: u8) -> bool {
    let have = end.wrapping_sub(start);
    if end < start || have == 0 || have as usize > SET_WORD {
        return false;
    }
    let mut word = 0u64;
    for k in 0..SET_WORD {
        if k as u32 >= have {
            break;
        }
        let mut b = buf[(start as usize + k) & SCRATCH_MASK];
        if b == 0 {
            // The values' padding: no value has it (the scan lets none through anyway).
            return false;
        }
        if b.is_ascii_uppercase() {
            b |= fold;
        }
        word |= u64::from(b) << (8 * k);
    }
    for k in 0..MAX_SET_VALUES {
        if (k * SET_WORD) as u32 >= set.len {
            break;
        }
        let value = &set.bytes[k * SET_WORD..][..SET_WORD];
        let value = u64::from_le_bytes([
            value[0], value[1], value[2], value[3], value[4], value[5], value[6], value[7],
        ]);
        if value == word {
            return true;
        }
    }
    false
}

/// Whether the request's bytes `start..end` are one of a list term's entries
/// ([`KernelText::list`]); a partial entry is a suffix (`suffix`, hosts: the part
/// longer than it) or a prefix (paths). An entry whose length cannot fit is passed over
/// without a byte compared (most, for a request the list does not name); the others
/// are compared byte by byte up to the first difference. Inlined into each term of a
/// step: as a call of its own (as [`in_set`] is) it cost about 15 ns more a list, and
/// the verifier walked 2,900 instructions more.
#[inline(always)]
fn in_list(buf: &[u8; SCRATCH_LEN], start: u32, end: u32, list: &KernelText, suffix: bool) -> bool {
    if end < start {
        return false;
    }
    let have = end - start;
    for k in 0..MAX_LIST_ENTRIES {
        if (k * LIST_SLOT) as u32 >= list.len {
            break;
        }
        let slot = &list.bytes[k * LIST_SLOT..][..LIST_SLOT];
        let header = slot[0];
        let len = u32::from(header & !LIST_PARTIAL);
        let from = if header & LIST_PARTIAL == 0 {
            if have != len {
                continue;
            }
            start
        } else if suffix {
            if have <= len {
                continue;
            }
            end - len
        } else {
            if have < len {
                continue;
            }
            start
        };
        // The count through `black_box`, bounded again, as in `compare`.
        let count = core::hint::black_box(len) as usize;
        if count == 0 || count > MAX_LIST_ENTRY_LEN {
            continue;
        }
        let mut same = true;
        for i in 0..count {
            if buf[(from as usize + i) & SCRATCH_MASK] != slot[1 + i] {
                same = false;
                break;
            }
        }
        if same {
            return true;
        }
    }
    false
}

/// A pool as the kernel picks from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelPool {
    /// One of the `KernelPool` policies.
    pub policy: u32,
    /// Why the slow path, for [`KernelPool::SLOW_PATH`].
    pub reason: u32,
    /// The pool's first slot in the slots table, and how many it has (0: none up).
    pub first_slot: u32,
    pub slots: u32,
    /// [`KernelPool::STICKY`], [`KernelPool::STICKY_BY_ID`], [`KernelPool::STICKY_BY_HASH`].
    pub flags: u32,
    /// A sticky pool's cookie: an index into [`KernelRuleSet::cookie_names`].
    pub cookie: u32,
    /// The sticky pool's own slots, after its policy's: by id, one per up member with
    /// an id (its id's first eight bytes in `seed`, [`sticky_id_word`], its text in
    /// `id_text`); by hash, the up members in the pool's order (rendezvous, as
    /// `consistent_hash`).
    pub sticky_first: u32,
    pub sticky_slots: u32,
    /// LARD: the thresholds in active connections (`low_load`, `high_load`).
    pub lard_low: u32,
    pub lard_high: u32,
    /// LARD: the target table's size, a power of two (a target's slot is its hash's low
    /// bits, as in `baton-dispatch`'s `Lard`).
    pub lard_targets: u32,
    pub _pad: u32,
}

impl KernelPool {
    /// The slow path picks (LARD, weighted hashing, other keys).
    pub const SLOW_PATH: u32 = 0;
    /// `slots` is one period of smooth weighted round robin over the up members.
    pub const ROUND_ROBIN: u32 = 1;
    /// Rendezvous hashing of the path over the up members (`slots`).
    pub const HASH_PATH: u32 = 2;
    /// ... of the path and the query.
    pub const HASH_URL: u32 = 3;
    /// ... of the Host, lower case.
    pub const HASH_HOST: u32 = 4;
    /// Weighted least connections over the up members (`slots`, each slot's `seed`
    /// its member's weight), from the connection counts ([`backend_load`],
    /// [`LeastLoaded`]); ties go to the first from a per-CPU rotating start.
    pub const LEAST_CONNECTIONS: u32 = 5;
    /// LARD with replication on the path's hash (`baton-dispatch`'s `Lard`, read-only:
    /// [`LardScan`]): `slots` are every member in the pool's order, up or not (a slot's
    /// `seed` is 1 for an up member, 0 for one that is down), since a server set names
    /// members by their index; the sets are in `FRONTEND_LARD_SETS`.
    pub const LARD_PATH: u32 = 6;
    /// ... on the path and the query's.
    pub const LARD_URL: u32 = 7;
    /// ... on the Host's, lower case.
    pub const LARD_HOST: u32 = 8;
    /// A sticky pool the kernel cannot follow (a cookie name or separator it does not
    /// read, weighted hashing): a request with a Cookie field goes to the slow path
    /// (without one the pool's policy picks, as in `baton-dispatch`).
    pub const STICKY: u32 = 1;
    /// Sticky by id: the cookie's value (after its last separator) names a member by
    /// its id; an id of no up member leaves the pick to the policy.
    pub const STICKY_BY_ID: u32 = 2;
    /// Sticky by hash: the cookie's value is hashed onto the up members.
    pub const STICKY_BY_HASH: u32 = 4;
}

/// One slot of a pool: a back-end (its index in its generation of the back-ends table)
/// and, for hashing, its rendezvous seed (the hash of its address and port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSlot {
    pub backend: u32,
    /// A sticky-by-id slot's id: an index into the texts (0 for other slots).
    pub id_text: u32,
    /// Hashing: the member's rendezvous seed; sticky by id: its id's first eight bytes
    /// ([`sticky_id_word`]); least connections: its weight.
    pub seed: u64,
}

/// One generation of the compiled rules: what the terms, pools and slots tables hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRuleSet {
    /// [`KernelRuleSet::ENABLED`] once written.
    pub flags: u32,
    pub terms: u32,
    pub default_pool: u32,
    /// The daemon's request limits: a head past them goes to the slow path, which
    /// answers 431.
    pub max_head_len: u32,
    pub max_headers: u32,
    /// The cookies the kernel reads, `cookies` of them (rules' `cookie` conditions and
    /// sticky pools name them by index).
    pub cookies: u32,
    pub cookie_names: [KernelCookieName; MAX_KERNEL_COOKIES],
}

impl KernelRuleSet {
    pub const ENABLED: u32 = 1;
}

/// Which pool part of the request a hashing policy hashes, as offsets (`None`: the key
/// is missing and the slow path hashes the client's address).
#[inline(always)]
pub fn hash_key_range(policy: u32, scan: &RequestScan) -> Option<(u32, u32)> {
    // A LARD pool's target is the same key as hashing's.
    let policy = match policy {
        KernelPool::LARD_PATH => KernelPool::HASH_PATH,
        KernelPool::LARD_URL => KernelPool::HASH_URL,
        KernelPool::LARD_HOST => KernelPool::HASH_HOST,
        other => other,
    };
    match policy {
        // A ClientHello has no path: the slow path hashes the client's address.
        KernelPool::HASH_PATH | KernelPool::HASH_URL if !scan.is_tls() => {
            Some((scan.path_start, scan.path_end))
        }
        KernelPool::HASH_HOST if scan.has_host() => Some((scan.host_start, scan.host_end)),
        _ => None,
    }
}

/// `baton-dispatch`'s URL key: the path's hash mixed with the query's, when there is
/// a query (even an empty one).
#[inline(always)]
pub fn url_hash(path_hash: u64, query_hash: u64) -> u64 {
    mix64(path_hash ^ query_hash.rotate_left(17))
}

/// Rendezvous hashing with equal weights (`baton-dispatch`'s `rendezvous` when every
/// member weighs the same): the member with the highest `mix64(key ^ seed)`, the first
/// on ties. Feed the up members in the pool's order with [`Rendezvous::offer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rendezvous {
    best: Option<(u32, u64)>,
}

impl Rendezvous {
    #[inline(always)]
    pub fn offer(&mut self, key: u64, slot: &KernelSlot) {
        let h = mix64(key ^ slot.seed);
        if self.best.is_none_or(|(_, b)| h > b) {
            self.best = Some((slot.backend, h));
        }
    }

    pub fn chosen(&self) -> Option<u32> {
        self.best.map(|(b, _)| b)
    }
}

/// The round-robin slot for the pick whose number is `cursor` (a per-CPU counter).
#[inline(always)]
pub fn round_robin_slot(pool: &KernelPool, cursor: u32) -> Option<u32> {
    if pool.slots == 0 {
        return None;
    }
    Some(pool.first_slot + cursor % pool.slots)
}

/// Multipliers from the 64-bit murmur3 finaliser and from wyhash's constants.
const K1: u64 = 0xff51_afd7_ed55_8ccd;
const K2: u64 = 0xc4ce_b9fe_1a85_ec53;
const K3: u64 = 0x9e37_79b9_7f4a_7c15;

/// The murmur3 64-bit finaliser: every input bit affects every output bit. With
/// [`hash_bytes`], the stable hash `baton-dispatch` hashes keys with, here so that the
/// kernel picks the same back-end.
#[inline(always)]
pub const fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(K1);
    h ^= h >> 33;
    h = h.wrapping_mul(K2);
    h ^= h >> 33;
    h
}

/// A stable 64-bit hash of `bytes` (the same across runs, builds and Rust releases, so
/// a restarted front-end sends each key where it went before): eight bytes at a time,
/// the tail zero-padded, then [`mix64`]. Pinned by tests; [`HashWalk`] computes it in
/// steps.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = hash_start(bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = hash_word(h, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = hash_word(h, u64::from_le_bytes(tail));
    }
    mix64(h)
}

#[inline(always)]
const fn hash_start(len: u64) -> u64 {
    K3 ^ len.wrapping_mul(K1)
}

#[inline(always)]
const fn hash_word(h: u64, word: u64) -> u64 {
    (h ^ mix64(word)).rotate_left(29).wrapping_mul(K3)
}

/// [`hash_bytes`] of the buffer's bytes `start..end`, eight bytes a step, for
/// `bpf_loop`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashWalk {
    h: u64,
    at: u32,
    end: u32,
}

impl HashWalk {
    #[inline(always)]
    pub fn new(start: u32, end: u32) -> Self {
        let end = if end < start { start } else { end };
        Self {
            h: hash_start(u64::from(end - start)),
            at: start,
            end,
        }
    }

    /// Hashes the next eight bytes (fewer at the end); `false` once done.
    #[inline(always)]
    pub fn step(&mut self, buf: &[u8; SCRATCH_LEN]) -> bool {
        if self.at >= self.end {
            return false;
        }
        self.h = hash_word(self.h, word_at(buf, self.at, self.end - self.at));
        self.at += 8;
        self.at < self.end
    }

    pub fn finish(&self) -> u64 {
        mix64(self.h)
    }
}

/// `bpf_loop` iterations that hash a whole buffer.
pub const MAX_HASH_STEPS: u32 = SCRATCH_LEN as u32 / 8 + 1;
/// Steps of [`HashWalk`] the XDP program runs in line before it turns to `bpf_loop`:
/// a key of up to 32 bytes (most paths and hosts) is hashed without a loop's call per
/// step.
pub const HASH_STEPS_INLINE: u32 = 4;

/// What the chosen pool needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolPick {
    /// The back-end in this slot (round robin).
    Slot(u32),
    /// Rendezvous over the pool's slots of the hash of the buffer's `start..end` (mixed
    /// with the query's, for [`KernelPool::HASH_URL`] with a query).
    Hash { start: u32, end: u32, url: bool },
    /// Sticky by id: the sticky slot whose id is the buffer's `start..end`
    /// ([`StickyId`]); with none, the policy picks ([`policy_pick`]).
    StickyId { start: u32, end: u32 },
    /// Sticky by hash: rendezvous over the sticky slots of the hash of the cookie's
    /// value, `start..end`.
    StickyHash { start: u32, end: u32 },
    /// Least connections over the pool's slots, offered from slot `start` on (the
    /// pool's counter, so that ties rotate), wrapping.
    Least { start: u32 },
    /// LARD: the target is the hash of the buffer's `start..end` (mixed with the
    /// query's when `url`); its set is looked up ([`lard_set_key`]) and the members
    /// offered to a [`LardScan`] from [`lard_start`] on.
    Lard { start: u32, end: u32, url: bool },
}

/// The first step of picking from `pool` for the request `scan` read; `cursor` is the
/// pool's round-robin counter. `Err`: the slow path's reason.
/// A sticky pool reads its cookie first, as `baton-dispatch` does: present, it picks
/// by it; absent, the policy picks.
#[inline(always)]
pub fn pool_pick(pool: &KernelPool, scan: &RequestScan, cursor: u32) -> Result<PoolPick, u32> {
    if pool.flags & KernelPool::STICKY != 0 && scan.fields & RequestScan::COOKIE_FIELD != 0 {
        return Err(reason::STICKY);
    }
    if pool.flags & (KernelPool::STICKY_BY_ID | KernelPool::STICKY_BY_HASH) != 0 {
        match scan.cookie(pool.cookie) {
            None => return Err(reason::STICKY),
            Some(None) => {}
            Some(Some((start, end, id_start))) => {
                if pool.sticky_slots > MAX_HASH_MEMBERS {
                    return Err(reason::TABLES);
                }
                return Ok(if pool.flags & KernelPool::STICKY_BY_HASH != 0 {
                    PoolPick::StickyHash { start, end }
                } else {
                    PoolPick::StickyId {
                        start: id_start,
                        end,
                    }
                });
            }
        }
    }
    policy_pick(pool, scan, cursor)
}

/// The pool's policy's first step, stickiness aside.
#[inline(always)]
pub fn policy_pick(pool: &KernelPool, scan: &RequestScan, cursor: u32) -> Result<PoolPick, u32> {
    if pool.policy == KernelPool::SLOW_PATH {
        return Err(pool.reason);
    }
    if pool.slots == 0 {
        return Err(reason::POOL_DOWN);
    }
    match pool.policy {
        KernelPool::ROUND_ROBIN => round_robin_slot(pool, cursor)
            .map(PoolPick::Slot)
            .ok_or(reason::POOL_DOWN),
        KernelPool::LEAST_CONNECTIONS => {
            if pool.slots > MAX_HASH_MEMBERS {
                return Err(reason::TABLES);
            }
            Ok(PoolPick::Least {
                start: cursor % pool.slots,
            })
        }
        KernelPool::HASH_PATH | KernelPool::HASH_URL | KernelPool::HASH_HOST => {
            if pool.slots > MAX_HASH_MEMBERS {
                return Err(reason::TABLES);
            }
            let (start, end) = hash_key_range(pool.policy, scan).ok_or(reason::HASH_KEY)?;
            Ok(PoolPick::Hash {
                start,
                end,
                url: pool.policy == KernelPool::HASH_URL && scan.query_start != 0,
            })
        }
        KernelPool::LARD_PATH | KernelPool::LARD_URL | KernelPool::LARD_HOST => {
            if pool.slots > MAX_HASH_MEMBERS || !pool.lard_targets.is_power_of_two() {
                return Err(reason::TABLES);
            }
            let (start, end) = hash_key_range(pool.policy, scan).ok_or(reason::HASH_KEY)?;
            Ok(PoolPick::Lard {
                start,
                end,
                url: pool.policy == KernelPool::LARD_URL && scan.query_start != 0,
            })
        }
        _ => Err(reason::TABLES),
    }
}

/// A sticky-by-id slot's word ([`KernelSlot::seed`]): the id's first eight bytes, little
/// endian, zero-padded. `None` for an id with a zero byte, which no request's cookie
/// has (the scan lets none into a header) and which would look like a shorter id's
/// padding: its member is left out of the slots, and an id it names is never found,
/// as in `baton-dispatch`.
pub fn sticky_id_word(id: &[u8]) -> Option<u64> {
    if id.contains(&0) {
        return None;
    }
    let mut word = [0u8; 8];
    let n = id.len().min(8);
    word[..n].copy_from_slice(&id[..n]);
    Some(u64::from_le_bytes(word))
}

/// The id a sticky-by-id cookie names, the buffer's `start..end`, as the pool's sticky
/// slots are searched for it: a slot whose word ([`sticky_id_word`]) is not the id's
/// first eight bytes is not its member, one compare each; one whose word is, is its
/// member when the id is shorter than eight bytes (neither has a zero byte, so the
/// padding says where each ends: equal words are equal ids), and else when its text is
/// the id byte for byte ([`StickyId::is`]); when it is not (two ids of eight bytes or
/// more that begin alike), the slow path picks. Exact, never a hash: no collision can
/// take one id for another. Both engines search the slots so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StickyId {
    start: u32,
    end: u32,
    word: u64,
}

impl StickyId {
    #[inline(always)]
    pub fn new(buf: &[u8; SCRATCH_LEN], start: u32, end: u32) -> Self {
        let end = if end < start { start } else { end };
        Self {
            start,
            end,
            word: word_at(buf, start, end - start),
        }
    }

    /// Whether `slot` may be the id's: its word is the id's first eight bytes.
    #[inline(always)]
    pub fn may_be(&self, slot: &KernelSlot) -> bool {
        slot.seed == self.word
    }

    /// Whether a slot that [`StickyId::may_be`] the id's is: the id is whole in the word,
    /// without the slot's text read.
    #[inline(always)]
    pub fn is_whole_word(&self) -> bool {
        self.end - self.start < 8
    }

    /// Whether the id is `text`, byte for byte: for a slot the id may be
    /// ([`StickyId::may_be`]) when the word does not hold it whole.
    #[inline(always)]
    pub fn is(&self, buf: &[u8; SCRATCH_LEN], text: &KernelText) -> bool {
        compare(buf, self.start, self.end, text, Compare::Exact)
    }
}

/// The buffer's `left` bytes from `at` (at most eight) as one little-endian word,
/// zero-padded: eight bytes read whatever `left`, then those past it cleared, so no
/// branch a byte.
#[inline(always)]
fn word_at<const N: usize>(buf: &[u8; N], at: u32, left: u32) -> u64 {
    const { assert!(N.is_power_of_two()) };
    let mut word = 0u64;
    for k in 0..8u32 {
        word |= u64::from(buf[(at + k) as usize & (N - 1)]) << (8 * k);
    }
    if left < 8 {
        word &= (1u64 << (8 * left)) - 1;
    }
    word
}

/// One generation of the compiled tables as plain slices: what the daemon writes into
/// the maps, and what the host's tests run [`decide`] on.
#[derive(Clone, Copy, Debug)]
pub struct RuleTables<'a> {
    pub set: KernelRuleSet,
    pub terms: &'a [KernelTerm],
    pub texts: &'a [KernelText],
    pub pools: &'a [KernelPool],
    pub slots: &'a [KernelSlot],
    /// Active connections per back-end (by its index in the compiled back-ends), as
    /// [`backend_load`] reads them from the counts; a back-end past the end has none.
    pub loads: &'a [u32],
    /// The LARD pools' server sets, as `FRONTEND_LARD_SETS` holds them (generation 0).
    pub lard_sets: &'a [(KernelLardKey, KernelLardSet)],
    /// The time, for LARD's shrink: `CLOCK_MONOTONIC` nanoseconds, as the daemon's
    /// `Instant`.
    pub now: u64,
}

/// The kernel's decision for `payload`, the whole payload of a client's first data
/// segment, by the same steps the XDP program takes (`baton-ebpf`'s
/// `dispatch::decide_request`), over `tables` in memory. `cursors` holds each pool's
/// round-robin counter (one CPU's). The back-end is an index into the compiled
/// back-ends (generation 0).
pub fn decide(
    tables: &RuleTables<'_>,
    payload: &[u8],
    buf: &mut [u8; SCRATCH_LEN],
    cursors: &mut [u32],
) -> KernelDecision {
    let slow = |reason, rule| KernelDecision {
        verdict: KernelDecision::SLOW_PATH,
        backend: 0,
        rule,
        reason,
    };
    if tables.set.flags & KernelRuleSet::ENABLED == 0 {
        return slow(reason::OFF, u32::MAX);
    }
    if let Some(dst) = buf.get_mut(..payload.len()) {
        dst.copy_from_slice(payload);
    }
    let read = if payload.first() == Some(&TLS_HANDSHAKE) {
        let mut hello = HelloScan::new(payload.len());
        for _ in 0..MAX_HELLO_STEPS {
            if !hello.step(buf) {
                break;
            }
        }
        hello.request(buf, tables.set.max_head_len)
    } else {
        let mut scan = RequestScan::new(payload.len());
        for _ in 0..MAX_SCAN_STEPS {
            if !scan.step(buf) {
                break;
            }
        }
        scan.finish(tables.set.max_head_len, tables.set.max_headers)
            .map(|()| scan)
    };
    let mut scan = match read {
        Ok(scan) => scan,
        Err(why) => return slow(why, u32::MAX),
    };
    if scan.cookie_fields != 0 && tables.set.cookies != 0 {
        let mut walk = CookieWalk::new(&scan, &tables.set);
        for _ in 0..MAX_COOKIE_STEPS {
            if !walk.step(&mut scan, buf, &tables.set) {
                break;
            }
        }
        walk.finish(&mut scan);
    }
    let mut eval = RuleEval::new();
    let terms = tables.set.terms.min(tables.terms.len() as u32);
    for term in &tables.terms[..terms as usize] {
        let text = tables
            .texts
            .get(term.arg as usize)
            .copied()
            .unwrap_or_default();
        if !eval.step(&scan, buf, term, &text) {
            break;
        }
    }
    eval.finish(terms, tables.set.default_pool);
    if eval.outcome != RuleEval::CHOSEN {
        return slow(eval.reason, eval.rule);
    }
    let Some(pool) = tables.pools.get(eval.pool as usize) else {
        return slow(reason::TABLES, eval.rule);
    };
    let cursor = cursors.get_mut(eval.pool as usize);
    let count = cursor.as_ref().map_or(0, |c| **c);
    let slots_of = |first: u32, n: u32| tables.slots.iter().skip(first as usize).take(n as usize);
    let mut pick = pool_pick(pool, &scan, count);
    if let Ok(PoolPick::StickyId { start, end }) = pick {
        let id = StickyId::new(buf, start, end);
        match slots_of(pool.sticky_first, pool.sticky_slots).find(|s| id.may_be(s)) {
            Some(slot) => {
                if !id.is_whole_word() {
                    let text = tables.texts.get(slot.id_text as usize);
                    if !text.is_some_and(|text| id.is(buf, text)) {
                        return slow(reason::STICKY, eval.rule);
                    }
                }
                return hand_off(slot.backend, eval.rule);
            }
            // No up member has that id: the policy picks.
            None => pick = policy_pick(pool, &scan, count),
        }
    }
    let backend = match pick {
        Err(why) => return slow(why, eval.rule),
        Ok(PoolPick::Slot(slot)) => {
            if let Some(c) = cursor {
                *c = c.wrapping_add(1);
            }
            tables.slots.get(slot as usize).map(|s| s.backend)
        }
        Ok(PoolPick::Least { start }) => {
            if let Some(c) = cursor {
                *c = c.wrapping_add(1);
            }
            let mut pick = LeastLoaded::default();
            for k in 0..pool.slots {
                let at = pool.first_slot + (start + k) % pool.slots;
                let Some(slot) = tables.slots.get(at as usize) else {
                    return slow(reason::TABLES, eval.rule);
                };
                let load = tables.loads.get(slot.backend as usize).copied();
                pick.offer(slot.backend, load.unwrap_or(0), slot.seed as u32);
            }
            pick.chosen()
        }
        Ok(PoolPick::Hash { start, end, url }) => {
            let mut key = walk_hash(buf, start, end);
            if url {
                key = url_hash(key, walk_hash(buf, scan.query_start, scan.query_end));
            }
            let mut pick = Rendezvous::default();
            for slot in slots_of(pool.first_slot, pool.slots) {
                pick.offer(key, slot);
            }
            pick.chosen()
        }
        Ok(PoolPick::StickyHash { start, end }) => {
            let key = walk_hash(buf, start, end);
            let mut pick = Rendezvous::default();
            for slot in slots_of(pool.sticky_first, pool.sticky_slots) {
                pick.offer(key, slot);
            }
            match pick.chosen() {
                Some(b) => Some(b),
                None => return slow(reason::POOL_DOWN, eval.rule),
            }
        }
        Ok(PoolPick::Lard { start, end, url }) => {
            let mut target = walk_hash(buf, start, end);
            if url {
                target = url_hash(target, walk_hash(buf, scan.query_start, scan.query_end));
            }
            let key = lard_set_key(0, eval.pool, target, pool.lard_targets);
            let set = tables
                .lard_sets
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s);
            let servers = set.map_or(0, |s| s.servers);
            let first = lard_start(target, pool.slots);
            let mut pass = LardScan::default();
            for k in 0..pool.slots {
                let i = (first + k) % pool.slots;
                let Some(slot) = tables.slots.get((pool.first_slot + i) as usize) else {
                    return slow(reason::TABLES, eval.rule);
                };
                let load = tables.loads.get(slot.backend as usize).copied();
                let in_set = i < 64 && servers & (1 << i) != 0;
                pass.offer(i, slot.seed != 0, in_set, load.unwrap_or(0), pool.lard_low);
            }
            match pass.read_only(set, target, pool.lard_high, tables.now) {
                Ok(i) => tables
                    .slots
                    .get((pool.first_slot + i) as usize)
                    .map(|s| s.backend),
                Err(why) => return slow(why, eval.rule),
            }
        }
        Ok(PoolPick::StickyId { .. }) => None,
    };
    match backend {
        Some(backend) => hand_off(backend, eval.rule),
        None => slow(reason::TABLES, eval.rule),
    }
}

fn hand_off(backend: u32, rule: u32) -> KernelDecision {
    KernelDecision {
        verdict: KernelDecision::HAND_OFF,
        backend,
        rule,
        reason: 0,
    }
}

fn walk_hash(buf: &[u8; SCRATCH_LEN], start: u32, end: u32) -> u64 {
    let mut walk = HashWalk::new(start, end);
    for _ in 0..MAX_HASH_STEPS {
        if !walk.step(buf) {
            break;
        }
    }
    walk.finish()
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain data without padding or pointers.
unsafe impl aya::Pod for KernelBackend {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelHandoffConfig {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelDecision {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelText {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelTerm {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelPool {}
#[cfg(feature = "user")]
// SAFETY: as above (`_pad` is explicit).
unsafe impl aya::Pod for KernelSlot {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelRuleSet {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelLardKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelLardSet {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    #[test]
    fn shared_structs_have_their_documented_sizes() {
        assert_eq!(core::mem::size_of::<KernelBackend>(), 16);
        assert_eq!(core::mem::size_of::<KernelDecision>(), 16);
        assert_eq!(core::mem::size_of::<KernelHandoffConfig>(), 24);
        assert_eq!(core::mem::size_of::<KernelHandoffRecord>(), 16);
        assert_eq!(core::mem::size_of::<KernelHandoffScratch>(), 16 + 2048);
        assert_eq!(core::mem::size_of::<KernelTerm>(), 20);
        assert_eq!(core::mem::size_of::<KernelText>(), 4 + MAX_TEXT_LEN);
        assert_eq!(core::mem::size_of::<KernelPool>(), 48);
        assert_eq!(core::mem::size_of::<KernelLardKey>(), 8);
        assert_eq!(core::mem::size_of::<KernelLardSet>(), 24);
        assert_eq!(core::mem::size_of::<KernelSlot>(), 16);
        assert_eq!(core::mem::size_of::<KernelRuleSet>(), 24 + 4 * 72);
        assert_eq!(core::mem::size_of::<KernelCookieName>(), 72);
        assert_eq!(core::mem::size_of::<RequestScan>(), 40 * 4);
        assert_eq!(core::mem::size_of::<RuleEval>(), 32);
    }

    /// The reasons' names label metrics: one per reason from 1 to `COUNT - 1`, unique,
    /// lower-case words, each in its constant's place (checked at both ends and at a
    /// few between, so that a reason added without its name shifts a checked one).
    #[test]
    fn reason_names_are_unique_and_cover_every_reason() {
        let names = &reason::NAMES[1..];
        assert_eq!(names.len(), reason::COUNT as usize - 1);
        for (i, a) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(a), "{a} twice");
            assert!(
                !a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{a:?}"
            );
            assert_ne!(*a, reason::NAMES[0], "index 0 is no reason");
        }
        for (r, name) in [
            (reason::OFF, "off"),
            (reason::PATH_BYTES, "path_bytes"),
            (reason::INCOMPLETE, "incomplete"),
            (reason::TLS_FRAGMENTED, "tls_fragmented"),
            (reason::TCP_OPTIONS, "tcp_options"),
            (reason::FRAME, "frame"),
            (reason::LARD_SET, "lard_set"),
        ] {
            assert_eq!(reason::NAMES[r as usize], name);
        }
        assert_eq!(reason::LARD_SET, reason::COUNT - 1, "the last reason");
    }

    #[test]
    fn the_hash_is_pinned() {
        // Pinned: a change here moves every consistently hashed key to another back-end.
        assert_eq!(hash_bytes(b""), 0x9ca0_66f1_a4ab_2eea);
        assert_eq!(hash_bytes(b"/img/logo.svg"), 0x1fce_971a_2581_8fc2);
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
    }

    #[test]
    fn the_walk_hashes_as_hash_bytes() {
        let mut buf = [0u8; SCRATCH_LEN];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        for (start, end) in [(0, 0), (3, 4), (5, 13), (1, 17), (100, 1000), (2040, 2048)] {
            let walked = walk_hash(&buf, start, end);
            assert_eq!(walked, hash_bytes(&buf[start as usize..end as usize]));
        }
    }

    fn scan(head: &[u8]) -> (RequestScan, [u8; SCRATCH_LEN]) {
        let mut buf = [0u8; SCRATCH_LEN];
        buf[..head.len()].copy_from_slice(head);
        let mut scan = RequestScan::new(head.len());
        for _ in 0..MAX_SCAN_STEPS {
            if !scan.step(&mut buf) {
                break;
            }
        }
        (scan, buf)
    }

    /// The scan byte by byte, without the runs `step` skips.
    fn scan_by_bytes(head: &[u8]) -> (RequestScan, [u8; SCRATCH_LEN]) {
        let mut buf = [0u8; SCRATCH_LEN];
        buf[..head.len()].copy_from_slice(head);
        let mut scan = RequestScan::new(head.len());
        for _ in 0..SCRATCH_LEN + 1 {
            if !scan.step_one_byte(&mut buf) {
                break;
            }
        }
        (scan, buf)
    }

    /// The runs `step` steps over change nothing a byte-by-byte scan would: the same
    /// state at the end (every field, the internal ones too) and the same buffer, for
    /// heads that run through every phase, cut and bent at every byte.
    #[test]
    fn skipped_runs_end_where_the_byte_by_byte_scan_ends() {
        let heads: [&[u8]; 6] = [
            b"GET /static/app.js?v=3&x=%41 HTTP/1.1\r\nHost: WWW.Example.com.:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\tx\r\nCookie: a=1; JSESSIONID=9F2C1A.be2\r\nAccept: */*\r\n\r\n",
            b"POST /a/b/../c/./d.tar.gz?q#frag HTTP/1.0\r\nhost:x\r\nX-Long-Header-Name_1: v\r\n\r\n",
            b"GET //x HTTP/1.1\r\n\r\n",
            b"GET /img/logo.png HTTP/1.2\r\nHost: img.baton.test\r\n\r\n",
            b"GET /a HTTP/1.1\n\r\n\r\n",
            b"DELETE /users/123?debug HTTP/1.1\r\nCookie:  JSESSIONID = be2 ; x=y\r\n \r\n\r\n",
        ];
        let mut tried = 0;
        for head in heads {
            for cut in 1..=head.len() {
                for bend in [
                    None,
                    Some(0x00),
                    Some(b' '),
                    Some(b'.'),
                    Some(b'/'),
                    Some(0x80),
                    Some(0x7f),
                    Some(0x1f),
                    Some(b'\t'),
                ] {
                    let mut bent = head[..cut].to_vec();
                    if let Some(b) = bend {
                        // Anywhere in the head, the cut's last byte past the cut (a
                        // position modulo the cut's length would bend only byte 0).
                        let at = ((cut * 37) % head.len()).min(cut - 1);
                        bent[at] = b;
                    }
                    let (skipping, skipped_buf) = scan(&bent);
                    let (stepping, stepped_buf) = scan_by_bytes(&bent);
                    assert_eq!(skipping, stepping, "{bent:?}");
                    assert!(skipped_buf[..] == stepped_buf[..]);
                    tried += 1;
                }
            }
        }
        assert!(tried > 1000);
    }

    /// A state started in place over a used one is a new one: the scratch value's
    /// states are reused by every request on the CPU.
    #[test]
    fn a_state_started_over_a_used_one_is_new() {
        let (mut used, buf) = scan(b"GET /a HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\n\r\n");
        used.start(20);
        let fresh = RequestScan {
            len: 20,
            phase: phase::METHOD,
            ..RequestScan::default()
        };
        assert_eq!(used, fresh);

        let (scan, _) = scan(b"GET / HTTP/1.1\r\nCookie: x=1\r\n\r\n");
        let mut walk = CookieWalk {
            field: 3,
            candidates: 7,
            done: 1,
            ..CookieWalk::default()
        };
        walk.start(&scan, &KernelRuleSet::default());
        let mut fresh = CookieWalk {
            at: scan.cookie_field_start[0],
            end: scan.cookie_field_end[0],
            phase: cookie_phase::LEAD,
            value_run: 1 << PLAIN_COOKIE_VALUE,
            ..CookieWalk::default()
        };
        fresh.last_separator = [NO_POSITION; MAX_KERNEL_COOKIES];
        assert_eq!(walk, fresh);

        let mut eval = RuleEval {
            stack: 9,
            depth: 2,
            at: 5,
            outcome: RuleEval::SLOW,
            pool: 3,
            rule: 1,
            reason: 4,
        };
        eval.start();
        assert_eq!(eval, RuleEval::new());

        let mut hello = HelloScan::new(300);
        for _ in 0..4 {
            hello.step(&mut buf.clone());
        }
        hello.start(30);
        let fresh = HelloScan {
            len: 30,
            phase: hello_phase::RECORD,
            ..HelloScan::default()
        };
        assert_eq!(hello, fresh);
    }

    fn part(buf: &[u8], start: u32, end: u32) -> &[u8] {
        &buf[start as usize..end as usize]
    }

    #[test]
    fn reads_a_plain_request() {
        let (s, buf) = scan(
            b"GET /img/Logo.PNG?v=3 HTTP/1.1\r\nHost: Shop.Example.COM.:8080\r\n\
              User-Agent: curl/8.5.0\r\nCookie: a=b\r\n\r\n",
        );
        assert_eq!(s.finish(16384, 100), Ok(()));
        assert_eq!(part(&buf, 0, s.method_end), b"GET");
        assert_eq!(part(&buf, s.path_start, s.path_end), b"/img/Logo.PNG");
        assert_eq!(part(&buf, s.ext_start, s.path_end), b"PNG");
        assert_eq!(part(&buf, s.query_start, s.query_end), b"v=3");
        assert_eq!(part(&buf, s.host_start, s.host_end), b"shop.example.com");
        assert_eq!(s.headers, 3);
        assert_eq!(
            s.fields,
            RequestScan::HOST_FIELD | RequestScan::COOKIE_FIELD
        );
        assert_eq!(s.finish(16384, 2), Err(reason::LIMITS));
    }

    #[test]
    fn what_the_kernel_leaves_to_the_slow_path() {
        for (head, why) in [
            (&b""[..], reason::SEGMENT_SIZE),
            (b"\x16\x03\x01\x02\x00", reason::METHOD),
            (b"get / HTTP/1.1\r\n\r\n", reason::METHOD),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", reason::TARGET_FORM),
            (b"GET http://a/ HTTP/1.1\r\n\r\n", reason::TARGET_FORM),
            (b"GET /%61 HTTP/1.1\r\n\r\n", reason::PATH_BYTES),
            (b"GET /a\\b HTTP/1.1\r\n\r\n", reason::PATH_BYTES),
            (b"GET /a#f HTTP/1.1\r\n\r\n", reason::PATH_BYTES),
            (b"GET //a HTTP/1.1\r\n\r\n", reason::PATH_NOT_NORMAL),
            (b"GET /a/./b HTTP/1.1\r\n\r\n", reason::PATH_NOT_NORMAL),
            (b"GET /a/.. HTTP/1.1\r\n\r\n", reason::PATH_NOT_NORMAL),
            (b"GET /a?x#f HTTP/1.1\r\n\r\n", reason::QUERY_BYTES),
            (b"GET / HTTP/2.0\r\n\r\n", reason::VERSION),
            (b"GET / HTTP/1.1\n\n", reason::VERSION),
            (b"GET / HTTP/1.1\r\nX y: z\r\n\r\n", reason::HEADER_NAME),
            (b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", reason::HEADER_VALUE),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", reason::OBS_FOLD),
            (b"GET / HTTP/1.1\r\nX: a\n\r\n", reason::HEADER_VALUE),
            (b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n", reason::LINE_END),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", reason::HOST),
            (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", reason::HOST),
            (b"GET / HTTP/1.1\r\nHost: .\r\n\r\n", reason::HOST),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nhOsT: a\r\n\r\n",
                reason::HOST_REPEATED,
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", reason::INCOMPLETE),
            (b"POST / HTTP/1.1\r\n\r\nbody", reason::TRAILING_BYTES),
        ] {
            let (s, _) = scan(head);
            assert_eq!(
                s.finish(16384, 100),
                Err(why),
                "{:?}",
                core::str::from_utf8(head)
            );
        }
    }

    /// The rule set's cookie names, `(name, separator)`.
    fn cookie_set(names: &[(&str, Option<&str>)]) -> KernelRuleSet {
        let mut set = KernelRuleSet::default();
        for (k, (name, sep)) in names.iter().enumerate() {
            set.cookie_names[k] =
                KernelCookieName::new(name.as_bytes(), sep.map(str::as_bytes)).unwrap();
        }
        set.cookies = names.len() as u32;
        set
    }

    fn walk_cookies(scan: &mut RequestScan, buf: &[u8; SCRATCH_LEN], set: &KernelRuleSet) {
        let mut walk = CookieWalk::new(scan, set);
        for _ in 0..MAX_COOKIE_STEPS {
            if !walk.step(scan, buf, set) {
                break;
            }
        }
        walk.finish(scan);
    }

    #[test]
    fn cookies_are_read_as_the_slow_path_reads_them() {
        let (mut s, buf) = scan(
            b"GET / HTTP/1.1\r\nCookie: a=1; sid = x.y.be2 ;flag; JSESSIONID=\r\n\
              X: sid=no\r\ncookie: sid=second; s id=3; lang=en\r\n\r\n",
        );
        assert_eq!(s.finish(16384, 100), Ok(()));
        assert_eq!(s.cookie_fields, 2);
        let set = cookie_set(&[
            ("sid", Some(".")),
            ("lang", None),
            ("JSESSIONID", None),
            ("flag", None),
        ]);
        walk_cookies(&mut s, &buf, &set);
        let value = |k: u32| s.cookie(k).unwrap().map(|(a, b, _)| part(&buf, a, b));
        let id = |k: u32| s.cookie(k).unwrap().map(|(_, b, i)| part(&buf, i, b));
        // The first `sid`, trimmed, and what follows its last separator.
        assert_eq!(value(0), Some(&b"x.y.be2"[..]));
        assert_eq!(id(0), Some(&b"be2"[..]));
        // From the second Cookie field; an empty value is a value.
        assert_eq!(value(1), Some(&b"en"[..]));
        assert_eq!(id(1), Some(&b"en"[..]));
        assert_eq!(value(2), Some(&b""[..]));
        // A pair without `=` is no cookie.
        assert_eq!(value(3), None);

        // More Cookie fields than the kernel keeps: every cookie unknown.
        let (mut s, buf) = scan(
            b"GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: b=1\r\nCookie: c=1\r\n\
              Cookie: d=1\r\nCookie: sid=1\r\n\r\n",
        );
        assert_eq!(s.finish(16384, 100), Ok(()));
        walk_cookies(&mut s, &buf, &set);
        assert_eq!(s.cookie(0), None);
    }

    /// The walk's runs (`CookieWalk::skip_plain`) end where a walk byte by byte ends:
    /// a name's eight bytes at once that are not quite the name, a value's letters up to
    /// a separator that is a letter, a pair no name can be with `=` and spaces in it.
    #[test]
    fn the_cookie_walks_runs_find_what_a_walk_byte_by_byte_finds() {
        let heads: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nCookie: lang=en; JSESSIONID=9F2C1A.be2\r\n\r\n",
            b"GET / HTTP/1.1\r\nCookie: JSESSIONIDX=1; JSESSIONI=2; JSESSIONID =abcXdefXg \r\n\r\n",
            b"GET / HTTP/1.1\r\nCookie: zz=a=b c; sessionsession=3;session=q1w2e3r4t5y6u7i8o9p0x\r\n\r\n",
            b"GET / HTTP/1.1\r\nCookie: beta = 1 ; debug\r\nCookie: debug=;beta=0123456789abcdefXYZ\r\n\r\n",
            b"GET / HTTP/1.1\r\nCookie: averyveryverylongcookienamethatnothingreads=0123456789012345678901234567890123456789; session=s7\r\n\r\n",
        ];
        // With a separator that is a letter, and without: a value's letters are a run
        // only without.
        let sets = [
            cookie_set(&[
                ("JSESSIONID", Some(".")),
                ("session", Some("x")),
                ("beta", None),
                ("debug", Some("-")),
            ]),
            cookie_set(&[
                ("JSESSIONID", Some(".")),
                ("session", None),
                ("beta", None),
                ("debug", Some("-")),
            ]),
        ];
        for (head, set) in heads.iter().flat_map(|h| sets.iter().map(move |s| (*h, s))) {
            let (mut runs, buf) = scan(head);
            assert_eq!(runs.finish(16384, 100), Ok(()));
            let mut by_byte = runs;
            walk_cookies(&mut runs, &buf, set);
            let mut walk = CookieWalk::new(&by_byte, set);
            for _ in 0..MAX_COOKIE_STEPS {
                if !walk.step_byte_by_byte(&mut by_byte, &buf, set) {
                    break;
                }
            }
            walk.finish(&mut by_byte);
            assert_eq!(runs, by_byte, "{:?}", core::str::from_utf8(head));
            assert_ne!(runs.cookies_found, 0, "{:?}", core::str::from_utf8(head));
        }

        // Two names with the same first eight bytes: eight bytes at once only with one
        // name left.
        let set = cookie_set(&[("sessionAB", None), ("sessionCD", None)]);
        let (mut s, buf) = scan(b"GET / HTTP/1.1\r\nCookie: sessionAB=1\r\n\r\n");
        assert_eq!(s.finish(16384, 100), Ok(()));
        walk_cookies(&mut s, &buf, &set);
        assert_eq!(s.cookies_found, 1);
    }

    /// A sticky id is found by its first eight bytes and confirmed by its text only when
    /// the word does not hold it whole: never one id taken for another, whatever they
    /// share.
    #[test]
    fn a_sticky_id_is_its_slots_word_and_text_exactly() {
        let ids: [&[u8]; 3] = [b"be2", b"be20", b"node-0001"];
        let slots: Vec<(KernelSlot, KernelText)> = ids
            .iter()
            .map(|id| {
                let seed = sticky_id_word(id).unwrap();
                let slot = KernelSlot {
                    seed,
                    ..KernelSlot::default()
                };
                (slot, KernelText::new(id).unwrap())
            })
            .collect();
        // Which slot the request's id is, as `decide` and the XDP program search.
        let find = |request: &[u8]| -> Option<Option<usize>> {
            let mut buf = [b'x'; SCRATCH_LEN];
            buf[100..][..request.len()].copy_from_slice(request);
            let id = StickyId::new(&buf, 100, 100 + request.len() as u32);
            let k = slots.iter().position(|(slot, _)| id.may_be(slot))?;
            Some((id.is_whole_word() || id.is(&buf, &slots[k].1)).then_some(k))
        };
        assert_eq!(find(b"be2"), Some(Some(0)));
        assert_eq!(find(b"be20"), Some(Some(1)));
        assert_eq!(find(b"node-0001"), Some(Some(2)));
        // Bytes after the id (the buffer's `x`) are not the id's.
        assert_eq!(find(b"be"), None);
        assert_eq!(find(b""), None);
        // Eight bytes that begin a longer id are not it; nor is a longer id that
        // begins alike (then the slow path picks).
        assert_eq!(find(b"node-000"), Some(None));
        assert_eq!(find(b"node-0002"), Some(None));
        // An id with a zero byte has no word: it would look like `be2`'s.
        assert_eq!(sticky_id_word(b"be2\0"), None);
        assert_eq!(
            sticky_id_word(b"ABCDEFGHIJ"),
            Some(u64::from_le_bytes(*b"ABCDEFGH"))
        );
    }

    #[test]
    fn cookie_names_the_kernel_does_not_look_for() {
        for (name, sep) in [
            ("", None),
            ("a b", None),
            ("a=b", None),
            ("a;b", None),
            ("caf\u{e9}", None),
            ("sid", Some("::")),
            ("sid", Some(" ")),
        ] {
            assert_eq!(
                KernelCookieName::new(name.as_bytes(), sep.map(str::as_bytes)),
                None,
                "{name:?} {sep:?}"
            );
        }
        assert!(KernelCookieName::new(&[b'a'; MAX_COOKIE_NAME_LEN + 1], None).is_none());
    }

    /// A one-record ClientHello with these extensions (type, data).
    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01, 1, 0]);
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut out = vec![22, 3, 1];
        out.extend(((body.len() + 4) as u16).to_be_bytes());
        out.push(1);
        out.extend(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend(body);
        out
    }

    fn server_name(names: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for n in names {
            list.push(0);
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(*n);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        data
    }

    fn read_hello(raw: &[u8]) -> (Result<RequestScan, u32>, [u8; SCRATCH_LEN]) {
        let mut buf = [0u8; SCRATCH_LEN];
        buf[..raw.len()].copy_from_slice(raw);
        let mut hello = HelloScan::new(raw.len());
        for _ in 0..MAX_HELLO_STEPS {
            if !hello.step(&mut buf) {
                break;
            }
        }
        (hello.request(&buf, 16384), buf)
    }

    #[test]
    fn a_client_hello_is_read_field_by_field() {
        let alpn = (16, b"\x00\x03\x02h2".to_vec());
        let raw = hello(&[
            (43, vec![2, 3, 4]),
            (0, server_name(&[b"Shop.Example.COM."])),
            alpn.clone(),
        ]);
        let (scan, buf) = read_hello(&raw);
        let scan = scan.unwrap();
        assert!(scan.is_tls());
        assert_eq!(
            part(&buf, scan.host_start, scan.host_end),
            b"shop.example.com"
        );
        // No server_name: no host.
        let (scan, _) = read_hello(&hello(core::slice::from_ref(&alpn)));
        assert!(!scan.unwrap().has_host());
        for (raw, why) in [
            (
                hello(&[(0, server_name(&[b"a", b"b"]))]),
                reason::TLS_MALFORMED,
            ),
            (hello(&[(0, server_name(&[b"a b"]))]), reason::TLS_MALFORMED),
            (hello(&[alpn.clone(), alpn.clone()]), reason::TLS_MALFORMED),
            (
                hello(&[(16, b"\x00\x03\x02h2\x00".to_vec())]),
                reason::TLS_MALFORMED,
            ),
            (hello(&[(0, server_name(&[b"."]))]), reason::HOST),
            (raw[..raw.len() - 1].to_vec(), reason::TLS_FRAGMENTED),
            (
                [&raw[..], &[23, 3, 3, 0, 1, 0]].concat(),
                reason::TLS_FRAGMENTED,
            ),
        ] {
            assert_eq!(read_hello(&raw).0.map(|_| ()), Err(why), "{raw:02x?}");
        }
    }

    #[test]
    fn hosts_without_a_name_and_http_1_0() {
        for head in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        ] {
            let (s, _) = scan(head);
            assert_eq!(s.finish(16384, 100), Ok(()));
            assert!(!s.has_host());
        }
    }

    fn text(s: &str) -> KernelText {
        KernelText::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn rules_run_in_kleene_logic_and_stop_at_an_unknown_rule() {
        let texts = [
            KernelText::default(),
            text(".example.com"),
            text("/api/"),
            text("png"),
        ];
        let term = |op, arg, rule| KernelTerm {
            op,
            arg,
            rule,
            cookie: 0,
            pool: 0,
        };
        // 0: host *.example.com AND NOT cookie -> pool 1
        // 1: path_prefix /api/ OR cookie        -> pool 2 (unknown with a cookie)
        // 2: extension png                      -> pool 3
        let terms = [
            term(KernelTerm::HOST_SUFFIX, 1, 0),
            term(KernelTerm::COOKIE, 0, 0),
            term(KernelTerm::NOT, 0, 0),
            term(KernelTerm::AND, 0, 0),
            term(KernelTerm::RULE_END, 1, 0),
            term(KernelTerm::PATH_PREFIX, 2, 1),
            term(KernelTerm::COOKIE, 0, 1),
            term(KernelTerm::OR, 0, 1),
            term(KernelTerm::RULE_END, 2, 1),
            term(KernelTerm::EXTENSION, 3, 2),
            term(KernelTerm::RULE_END, 3, 2),
        ];
        let run = |head: &[u8]| {
            let (s, buf) = scan(head);
            assert_eq!(s.finish(16384, 100), Ok(()));
            let mut eval = RuleEval::new();
            for t in &terms {
                if !eval.step(&s, &buf, t, &texts[t.arg as usize % texts.len()]) {
                    break;
                }
            }
            eval.finish(terms.len() as u32, 0);
            (eval.outcome, eval.pool, eval.rule)
        };
        let chosen = RuleEval::CHOSEN;
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: www.Example.com\r\n\r\n"),
            (chosen, 1, 0)
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            (chosen, 0, u32::MAX)
        );
        assert_eq!(
            run(b"GET /api/x HTTP/1.1\r\nHost: a.example.org\r\nCookie: c=1\r\n\r\n"),
            (chosen, 2, 1)
        );
        // A rule that is unknown for this request stops the run, though a later one matches.
        assert_eq!(
            run(b"GET /api/x HTTP/1.1\r\nHost: a.example.com\r\nCookie: c=1\r\n\r\n").0,
            RuleEval::SLOW
        );
        assert_eq!(
            run(b"GET /x.PNG HTTP/1.1\r\nCookie: c=1\r\n\r\n").0,
            RuleEval::SLOW
        );
        assert_eq!(run(b"GET /x.PNG HTTP/1.1\r\n\r\n"), (chosen, 3, 2));
        assert_eq!(run(b"GET /.png HTTP/1.1\r\n\r\n"), (chosen, 0, u32::MAX));
    }
}
