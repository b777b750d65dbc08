//! SYN cookies (RFC 4987 §3.6): the one definition of their arithmetic, used by the
//! protocol core (`baton-proto`, which answers SYNs with cookies once its half-open table
//! is full, and checks every cookie ACK) and by the front-end's XDP program (which answers
//! a flood's SYNs itself while the core asks it to, or every SYN with `[tcp]
//! syns_in_xdp`, so that they never cost an skb, a packet-socket copy or a trip through
//! userspace).
//!
//! # Layout and fidelity
//!
//! The ISN of a cookie SYN/ACK is, as in Linux's `secure_tcp_syn_cookie`:
//!
//! ```text
//! isn_f = H1(flow) + client_isn + (minute << 24) + ((H2(flow, minute, client_isn) + index) mod 2^24)
//! index = mss_index | (4 if the SYN's options are in the half-open map)
//! ```
//!
//! `minute` is a 60-second count of `CLOCK_MONOTONIC` (8 bits travel); a cookie is
//! honoured for up to two minutes. What survives the round trip through the client:
//!
//! | client's SYN offered | kept | how |
//! |---|---|---|
//! | MSS | rounded down to 536, 1300, 1440 or 1460 (exactly, in the half-open map) | 2 bits of the index (Linux's `msstab`) |
//! | window scale | exactly (shift 0..=14) | TSval low 4 bits, echoed in TSecr; without timestamps, the half-open map |
//! | SACK-permitted | yes | TSval bit 4; without timestamps, the half-open map |
//! | ECN (an ECN-setup SYN, RFC 3168 §6.1.1) | yes | TSval bit 5 (Linux's `TS_OPT_ECN`); without timestamps, the half-open map |
//! | timestamps | yes | the ACK carries TSopt; `tsv_f` is its TSecr |
//! | anything else (TFO, MPTCP, ...) | no | never mirrored, so never agreed anyway |
//!
//! # Clients without timestamps: the half-open map
//!
//! Without timestamps a cookie has nowhere to keep window scale, SACK and ECN (Linux
//! answers such a client with none of them: `tcp_clear_options` when `want_cookie` and
//! no timestamp). The XDP program instead keeps what it agreed to in a bounded LRU hash
//! keyed by the 4-tuple, the half-open map ([`HalfOpenSyn`], `[tcp] half_open_entries`),
//! answers with the options the core's own SYN/ACK would offer ([`agreed_options`]), and
//! marks the cookie: bit 2 of the index ([`Cookie::syn_in_map`]). The protocol core takes
//! the entry (one lookup-and-delete) with the client's first data segment, which brings
//! the cookie back. The entry is bound to the client's ISN; one gone (evicted by newer
//! SYNs: a flood of SYNs without timestamps faster than the map's size per round trip)
//! or of another ISN leaves the core unable to know the client's window shift, which the
//! client now applies to every window it announces: the core resets the connection
//! (counted), rather than complete it on terms the client did not agree to. Only when
//! the map is off (`half_open_entries = 0`) or refuses the entry does the SYN/ACK fall
//! back to the cookie's own encoding, offering none of them (counted).
//!
//! # What a blind forger's guess is worth
//!
//! To complete a handshake without seeing the SYN/ACK, an ACK must carry a cookie that
//! checks: the minute field one of the two honoured (2 of 256 values) and the low 24 bits
//! within the valid indexes of `H2` (8 of 2^24: 4 MSS indexes, with the half-open bit or
//! without). Per guess: 2 × 8 / 2^32 = 2^-28, where Linux's cookies (4 indexes) give
//! 2^-29: the half-open bit costs one bit of the hash. What a forger who also sent the
//! SYN (from the spoofed address, the SYN/ACK going there) finds in the map is what that
//! SYN said, nothing more.
//!
//! # IPv6
//!
//! An IPv6 flow is hashed over its 36 bytes ([`flow_bytes_v6`]: both 16-byte addresses and
//! the ports) and its MSS index names one of Linux's IPv6 values ([`MSS_TABLE_V6`],
//! `msstab` in net/ipv6/syncookies.c: the minimum MTU of 1,280 and the common 1,480,
//! 1,500 and 9,000, less 60 bytes of headers). The flow's type picks both
//! ([`CookieFlow`]), so a cookie made for one family never checks for the other's flow.
//!
//! Everything is SipHash-2-4 ([`crate::siphash`]) over fixed-length messages, so the eBPF
//! program runs exactly the host's code, without loops the verifier cannot bound.

use crate::{
    layout::{
        ETH_DEST, ETH_HLEN, ETH_IPV4_LEN, ETH_P_IP, ETH_PROTO, ETH_SOURCE, IP_CHECK, IP_DADDR,
        IP_DF, IP_SADDR, IPPROTO_TCP, IPV4_VERSION_IHL_NO_OPTIONS, TCP_ACK_SEQ, TCP_CHECK,
        TCP_DEST, TCP_DOFF, TCP_OPTIONS, TCP_SEQ, TCP_SOURCE, TCP_WINDOW, TSOPT_TSECR, TSOPT_TSVAL,
        tcp_flag::{ACK, CWR, ECE, SYN},
    },
    siphash::{SipKey, siphash24},
    translate::ones_complement_add,
};

/// MSS values an IPv4 cookie can carry, smallest first (Linux `msstab`,
/// net/ipv4/syncookies.c).
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// MSS values an IPv6 cookie can carry, smallest first (Linux `msstab`,
/// net/ipv6/syncookies.c): MTUs of 1,280, 1,480, 1,500 and 9,000 less 60.
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];
/// The MSS assumed when a SYN has no MSS option (RFC 9293 §3.7.1).
pub const DEFAULT_MSS: u16 = 536;

/// Bits of the cookie below the minute counter.
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// The index bit saying the SYN's options are in the half-open map (module docs).
const INDEX_SYN_IN_MAP: u32 = 1 << 2;
/// The largest valid index: an MSS index (0..=3), with or without [`INDEX_SYN_IN_MAP`].
const MAX_INDEX: u32 = INDEX_SYN_IN_MAP | 3;
/// A cookie is honoured in the minute it was made and the one after (Linux
/// `MAX_SYNCOOKIE_AGE`).
const MAX_COOKIE_AGE: u32 = 2;
/// Length of one cookie "minute" in nanoseconds.
pub const COOKIE_MINUTE_NANOS: u64 = 60_000_000_000;

/// TSval low bits carrying options in a cookie SYN/ACK (Linux `TSBITS`).
pub const TS_OPT_BITS: u32 = 6;
const TS_OPT_MASK: u32 = (1 << TS_OPT_BITS) - 1;
/// Window shift field in the TSval; 0xf means "no window scaling".
const TS_OPT_WSCALE_MASK: u32 = 0xf;
/// SACK-permitted bit in the TSval.
const TS_OPT_SACK: u32 = 1 << 4;
/// ECN bit in the TSval: the SYN/ACK granted ECN (Linux `TS_OPT_ECN`,
/// `cookie_timestamp_decode` and `cookie_ecn_ok` in net/ipv4/syncookies.c).
const TS_OPT_ECN: u32 = 1 << 5;

/// Whether a SYN asks for ECN in a way a server may grant (RFC 3168 §6.1.1): ECE and CWR
/// both set (`tcp_flags`, the TCP header's byte 13), and the IP header's ECN field
/// (`tos`, byte 1, low two bits) Not-ECT. A SYN must not be ECT (RFC 3168 §6.1.1); one
/// that is tells of a path that rewrites the field, and Linux refuses ECN to it
/// (`tcp_ecn_create_request`, net/ipv4/tcp_input.c), as Baton does.
#[inline(always)]
pub const fn ecn_setup_syn(tcp_flags: u8, tos: u8) -> bool {
    tcp_flags & (ECE | CWR) == ECE | CWR && tos & 0b11 == 0
}

/// The keys a cookie SYN/ACK is made with: sub-keys the protocol core derives from its
/// secret, copied into the fast path's map so that XDP makes the cookies the core checks.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKeys {
    /// `H1`: the per-flow offset.
    pub cookie1: SipKey,
    /// `H2`: the per-flow, per-minute, per-ISN check bits.
    pub cookie2: SipKey,
    /// The per-connection TSval offset (RFC 7323 §7.1).
    pub tsval: SipKey,
}

/// Never prints the keys.
impl core::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieKeys(..)")
    }
}

/// The 12 bytes the keyed hashes cover: client address, service address, client port,
/// service port, each in network order.
#[inline(always)]
pub const fn flow_bytes(
    client_addr: [u8; 4],
    service_addr: [u8; 4],
    client_port: u16,
    service_port: u16,
) -> [u8; 12] {
    let [cp0, cp1] = client_port.to_be_bytes();
    let [sp0, sp1] = service_port.to_be_bytes();
    [
        client_addr[0],
        client_addr[1],
        client_addr[2],
        client_addr[3],
        service_addr[0],
        service_addr[1],
        service_addr[2],
        service_addr[3],
        cp0,
        cp1,
        sp0,
        sp1,
    ]
}

/// The 36 bytes the keyed hashes cover for an IPv6 flow: client address, service address,
/// client port, service port, each in network order.
#[inline(always)]
pub const fn flow_bytes_v6(
    client_addr: [u8; 16],
    service_addr: [u8; 16],
    client_port: u16,
    service_port: u16,
) -> [u8; 36] {
    let mut flow = [0u8; 36];
    let mut i = 0;
    while i < 16 {
        flow[i] = client_addr[i];
        flow[16 + i] = service_addr[i];
        i += 1;
    }
    let [cp0, cp1] = client_port.to_be_bytes();
    let [sp0, sp1] = service_port.to_be_bytes();
    flow[32] = cp0;
    flow[33] = cp1;
    flow[34] = sp0;
    flow[35] = sp1;
    flow
}

/// A flow's bytes as the cookie hashes take them: [`flow_bytes`] for IPv4 (12 bytes) or
/// [`flow_bytes_v6`] for IPv6 (36). Sealed: the layouts are what both engines hash.
pub trait CookieFlow: sealed::Sealed {
    /// The MSS values the family's cookies carry.
    const MSS_TABLE: [u16; 4];
    /// SipHash-2-4 of the flow's bytes under `key` (`H1`, the TSval offset).
    fn hash(&self, key: &SipKey) -> u64;
    /// `H2`: SipHash-2-4 of the flow's bytes, the minute and the client's ISN.
    fn hash_with(&self, key: &SipKey, minute: u32, client_isn: u32) -> u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for [u8; 12] {}
    impl Sealed for [u8; 36] {}
}

impl CookieFlow for [u8; 12] {
    const MSS_TABLE: [u16; 4] = MSS_TABLE;

    #[inline(always)]
    fn hash(&self, key: &SipKey) -> u64 {
        siphash24(key, self)
    }

    #[inline(always)]
    fn hash_with(&self, key: &SipKey, minute: u32, client_isn: u32) -> u64 {
        let flow = self;
        let m = minute.to_be_bytes();
        let i = client_isn.to_be_bytes();
        let msg = [
            flow[0], flow[1], flow[2], flow[3], flow[4], flow[5], flow[6], flow[7], flow[8],
            flow[9], flow[10], flow[11], m[0], m[1], m[2], m[3], i[0], i[1], i[2], i[3],
        ];
        siphash24(key, &msg)
    }
}

impl CookieFlow for [u8; 36] {
    const MSS_TABLE: [u16; 4] = MSS_TABLE_V6;

    #[inline(always)]
    fn hash(&self, key: &SipKey) -> u64 {
        siphash24(key, self)
    }

    #[inline(always)]
    fn hash_with(&self, key: &SipKey, minute: u32, client_isn: u32) -> u64 {
        let mut msg = [0u8; 44];
        let mut i = 0;
        while i < 36 {
            msg[i] = self[i];
            i += 1;
        }
        let [m0, m1, m2, m3] = minute.to_be_bytes();
        let [i0, i1, i2, i3] = client_isn.to_be_bytes();
        msg[36] = m0;
        msg[37] = m1;
        msg[38] = m2;
        msg[39] = m3;
        msg[40] = i0;
        msg[41] = i1;
        msg[42] = i2;
        msg[43] = i3;
        siphash24(key, &msg)
    }
}

/// The cookie minute of a `CLOCK_MONOTONIC` reading.
#[inline(always)]
pub const fn cookie_minute(now_ns: u64) -> u32 {
    (now_ns / COOKIE_MINUTE_NANOS) as u32
}

/// Index into [`MSS_TABLE`] of the largest entry not above `mss` (0 below 536).
#[inline(always)]
pub const fn mss_index(mss: u16) -> u32 {
    mss_index_in(&MSS_TABLE, mss)
}

/// Index into `table` of the largest entry not above `mss` (0 below the first).
#[inline(always)]
pub const fn mss_index_in(table: &[u16; 4], mss: u16) -> u32 {
    if mss >= table[3] {
        3
    } else if mss >= table[2] {
        2
    } else if mss >= table[1] {
        1
    } else {
        0
    }
}

#[inline(always)]
fn h1<F: CookieFlow>(keys: &CookieKeys, flow: &F) -> u32 {
    flow.hash(&keys.cookie1) as u32
}

/// Unlike Linux, the client's ISN is also hashed here, not only added: otherwise an ACK
/// whose `seq` is off by `k` would pass with the MSS index moved by `k`.
#[inline(always)]
fn h2<F: CookieFlow>(keys: &CookieKeys, flow: &F, minute: u32, client_isn: u32) -> u32 {
    flow.hash_with(&keys.cookie2, minute, client_isn) as u32
}

/// The keyed hashes a cookie SYN/ACK needs, computed before anything that depends on the
/// SYN's options: the XDP program hashes first and walks the options after, so that the
/// verifier follows the hashing once rather than once per way the walk can end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieHashes {
    minute: u32,
    h1: u32,
    h2: u32,
    tsval_offset: u32,
}

/// [`CookieHashes`] for a SYN with `client_isn` on `flow` at `now_ns`.
#[inline(always)]
pub fn cookie_hashes<F: CookieFlow>(
    keys: &CookieKeys,
    now_ns: u64,
    flow: &F,
    client_isn: u32,
) -> CookieHashes {
    let minute = cookie_minute(now_ns);
    CookieHashes {
        minute,
        h1: h1(keys, flow),
        h2: h2(keys, flow, minute, client_isn),
        tsval_offset: flow.hash(&keys.tsval) as u32,
    }
}

/// The cookie ISN from its hashes, for an IPv4 SYN whose MSS rounds down to
/// `MSS_TABLE[mss_index(mss)]`, marked if its options are in the half-open map
/// (`syn_in_map`).
#[inline(always)]
pub const fn cookie_isn(hashes: &CookieHashes, client_isn: u32, mss: u16, syn_in_map: bool) -> u32 {
    cookie_isn_in(hashes, client_isn, mss, syn_in_map, &MSS_TABLE)
}

/// [`cookie_isn`] for a family whose MSS values are `table` ([`CookieFlow::MSS_TABLE`]).
/// The table is an argument rather than a field of [`CookieHashes`], whose size the XDP
/// program's stack budget feels.
#[inline(always)]
pub const fn cookie_isn_in(
    hashes: &CookieHashes,
    client_isn: u32,
    mss: u16,
    syn_in_map: bool,
    table: &[u16; 4],
) -> u32 {
    let index = if syn_in_map {
        mss_index_in(table, mss) | INDEX_SYN_IN_MAP
    } else {
        mss_index_in(table, mss)
    };
    hashes
        .h1
        .wrapping_add(client_isn)
        .wrapping_add(hashes.minute << COOKIE_BITS)
        .wrapping_add(hashes.h2.wrapping_add(index) & COOKIE_MASK)
}

/// The cookie ISN for a SYN with `client_isn` on `flow` at `now_ns` whose MSS rounds
/// down to `MSS_TABLE[mss_index(mss)]`, marked if its options are in the half-open map.
#[inline(always)]
pub fn make_cookie<F: CookieFlow>(
    keys: &CookieKeys,
    now_ns: u64,
    flow: &F,
    client_isn: u32,
    mss: u16,
    syn_in_map: bool,
) -> u32 {
    cookie_isn_in(
        &cookie_hashes(keys, now_ns, flow, client_isn),
        client_isn,
        mss,
        syn_in_map,
        &F::MSS_TABLE,
    )
}

/// What a valid cookie says of the SYN it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    /// The client's MSS, rounded down to one of the family's MSS values ([`MSS_TABLE`],
    /// [`MSS_TABLE_V6`]).
    pub mss: u16,
    /// The SYN's options are in the fast path's half-open map ([`HalfOpenSyn`]), not in
    /// the TSval: the SYN/ACK agreed to window scaling, SACK or ECN with a client
    /// without timestamps.
    pub syn_in_map: bool,
}

/// What a valid, fresh `cookie` (the ACK's `ack - 1`) says for a client whose ISN was
/// `client_isn` (the ACK's `seq - 1`), or `None`. As Linux's `__cookie_v4_check`.
#[inline(always)]
pub fn check_cookie<F: CookieFlow>(
    keys: &CookieKeys,
    now_ns: u64,
    flow: &F,
    client_isn: u32,
    cookie: u32,
) -> Option<Cookie> {
    match check_cookie_with_in(
        &cookie_hashes(keys, now_ns, flow, client_isn),
        client_isn,
        cookie,
        &F::MSS_TABLE,
    ) {
        CookieCheck::Valid(found) => Some(found),
        CookieCheck::MinutesOld(age) => check_cookie_with_in(
            &cookie_hashes(
                keys,
                now_ns.wrapping_sub(u64::from(age) * COOKIE_MINUTE_NANOS),
                flow,
                client_isn,
            ),
            client_isn,
            cookie,
            &F::MSS_TABLE,
        )
        .valid(),
        CookieCheck::Invalid => None,
    }
}

/// What [`check_cookie_with`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieCheck {
    /// Made in the hashes' minute; what it says.
    Valid(Cookie),
    /// Made this many minutes before the hashes' (fewer than the two a cookie lives):
    /// check it again with hashes of that minute.
    MinutesOld(u32),
    /// Not a cookie of this flow and client ISN, or too old.
    Invalid,
}

impl CookieCheck {
    /// What a [`CookieCheck::Valid`] cookie says.
    #[inline(always)]
    pub const fn valid(self) -> Option<Cookie> {
        match self {
            Self::Valid(found) => Some(found),
            _ => None,
        }
    }
}

/// [`check_cookie`] from hashes already made ([`cookie_hashes`] for the flow and client
/// ISN at the check's time): the XDP program hashes in a frame of its own, shared with
/// its SYN answers, and calls it again for an older minute only when asked.
#[inline(always)]
pub const fn check_cookie_with(hashes: &CookieHashes, client_isn: u32, cookie: u32) -> CookieCheck {
    check_cookie_with_in(hashes, client_isn, cookie, &MSS_TABLE)
}

/// [`check_cookie_with`] for a family whose MSS values are `table`.
#[inline(always)]
pub const fn check_cookie_with_in(
    hashes: &CookieHashes,
    client_isn: u32,
    cookie: u32,
    table: &[u16; 4],
) -> CookieCheck {
    let diff = cookie.wrapping_sub(hashes.h1).wrapping_sub(client_isn);
    let age = hashes.minute.wrapping_sub(diff >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
    if age >= MAX_COOKIE_AGE {
        return CookieCheck::Invalid;
    }
    if age > 0 {
        return CookieCheck::MinutesOld(age);
    }
    let index = diff.wrapping_sub(hashes.h2) & COOKIE_MASK;
    if index <= MAX_INDEX {
        CookieCheck::Valid(Cookie {
            mss: table[(index & 3) as usize],
            syn_in_map: index & INDEX_SYN_IN_MAP != 0,
        })
    } else {
        CookieCheck::Invalid
    }
}

/// `tsv_f`: a per-connection random offset plus a 1 ms clock (RFC 7323 §5.4, §7.1), so
/// that TSvals reveal nothing of the host's uptime and differ between connections.
#[inline(always)]
pub fn tsval<F: CookieFlow>(keys: &CookieKeys, now_ns: u64, flow: &F) -> u32 {
    // Never taken for a back-end's stamp when the client echoes it (`crate::stamp`):
    // sent once per connection, so the bit cleared costs no monotonicity.
    crate::stamp::front_tsval(ms_clock(now_ns).wrapping_add(flow.hash(&keys.tsval) as u32))
}

#[inline(always)]
const fn ms_clock(now_ns: u64) -> u32 {
    (now_ns / 1_000_000) as u32
}

/// `tsv` with its low bits replaced by the options a cookie must remember (Linux
/// `cookie_init_timestamp`): the client's window shift, SACK and whether the SYN/ACK
/// granted ECN. The clock loses 6 bits of resolution; it stays monotonic over 64 ms,
/// which is all PAWS needs (RFC 7323 §5).
#[inline(always)]
pub const fn encode_ts_options(tsv: u32, window_scale: Option<u8>, sack: bool, ecn: bool) -> u32 {
    let ws = match window_scale {
        Some(s) if s < 14 => s as u32,
        Some(_) => 14,
        None => TS_OPT_WSCALE_MASK,
    };
    let sack = if sack { TS_OPT_SACK } else { 0 };
    let ecn = if ecn { TS_OPT_ECN } else { 0 };
    // Never taken for a back-end's stamp, as [`tsval`].
    crate::stamp::front_tsval((tsv & !TS_OPT_MASK) | ws | sack | ecn)
}

/// The options [`encode_ts_options`] put in a TSval, read back from the TSecr.
#[inline(always)]
pub const fn decode_ts_options(tsecr: u32) -> KeptOptions {
    let ws = tsecr & TS_OPT_WSCALE_MASK;
    let window_scale = if ws == TS_OPT_WSCALE_MASK {
        None
    } else if ws > 14 {
        Some(14)
    } else {
        Some(ws as u8)
    };
    KeptOptions {
        window_scale,
        sack: tsecr & TS_OPT_SACK != 0,
        ecn: tsecr & TS_OPT_ECN != 0,
    }
}

/// What a cookie SYN/ACK agreed to beyond the MSS, as its TSval remembers it
/// ([`decode_ts_options`]) or the half-open map ([`HalfOpenSyn::kept`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptOptions {
    /// The client's window shift, if it offered window scaling.
    pub window_scale: Option<u8>,
    /// SACK was agreed.
    pub sack: bool,
    /// ECN was granted (the SYN/ACK carried ECE).
    pub ecn: bool,
}

impl KeptOptions {
    /// Nothing agreed beyond the MSS: a cookie SYN/ACK without timestamps or the map.
    pub const NONE: Self = Self {
        window_scale: None,
        sack: false,
        ecn: false,
    };
}

/// What the fast path needs to answer SYNs with cookies, written by the daemon into the
/// fast path's `FRONTEND_SYN_COOKIES` map; [`SynCookieConfig::ENGAGED`] is set and
/// cleared as the protocol core's half-open table fills and drains.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynCookieConfig {
    pub keys: CookieKeys,
    /// [`SynCookieConfig::ENGAGED`], [`SynCookieConfig::TIMESTAMPS`],
    /// [`SynCookieConfig::SACK`].
    pub flags: u32,
    /// The front-end's own MSS: the SYN/ACK offers the client's, clamped to
    /// `DEFAULT_MSS..=max_mss`.
    pub max_mss: u16,
    /// The SYN/ACK's (unscaled) window.
    pub window: u16,
    /// The window shift offered to a client that offers window scaling.
    pub window_shift: u8,
    pub _pad: [u8; 7],
}

impl SynCookieConfig {
    /// Answer SYNs with cookies in XDP; without it SYNs go to the slow path.
    pub const ENGAGED: u32 = 1 << 0;
    /// Timestamps are enabled (`[tcp] timestamps`): agreed when the client offers them.
    pub const TIMESTAMPS: u32 = 1 << 1;
    /// SACK is enabled (`[tcp] sack`): agreed when the client offers it.
    pub const SACK: u32 = 1 << 2;
    /// ECN is enabled (`[tcp] ecn`): granted to an ECN-setup SYN.
    pub const ECN: u32 = 1 << 3;
    /// The half-open map is on (`[tcp] half_open_entries` above 0): the options of a
    /// client without timestamps are kept there (module docs).
    pub const HALF_OPEN: u32 = 1 << 4;
}

/// What a SYN/ACK agrees to of a client's SYN: the one choice of the protocol core's own
/// SYN/ACKs, of the cookie SYN/ACKs (the core's and the XDP program's) and of the
/// simulation's model of the program ([`agreed_options`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgreedOptions {
    /// The window shift the front-end announces (its own), if the client offered window
    /// scaling.
    pub window_shift: Option<u8>,
    /// SACK-permitted.
    pub sack: bool,
    /// ECN granted: ECE in the SYN/ACK.
    pub ecn: bool,
    /// Timestamps: the client's TSval, echoed as the SYN/ACK's TSecr.
    pub timestamps: Option<u32>,
}

impl AgreedOptions {
    /// Whether a cookie must keep something beyond the MSS that only timestamps (the
    /// TSval) or the half-open map can hold: window scaling, SACK or ECN without
    /// timestamps.
    #[inline(always)]
    pub const fn need_the_half_open_map(&self) -> bool {
        self.timestamps.is_none() && (self.window_shift.is_some() || self.sack || self.ecn)
    }
}

/// What a SYN/ACK agrees to of `options` under the front-end's settings: `flags` (of
/// [`SynCookieConfig::TIMESTAMPS`], [`SynCookieConfig::SACK`], [`SynCookieConfig::ECN`])
/// and its `window_shift`. Each only if the client offered it: window scaling always
/// then, with the front-end's shift (RFC 7323 §2.2), SACK-permitted if enabled (RFC 2018
/// §2), timestamps if enabled, echoing the client's TSval (RFC 7323 §3.2), ECN if
/// enabled and the SYN is an ECN-setup SYN (RFC 3168 §6.1.1).
#[inline(always)]
pub const fn agreed_options(flags: u32, window_shift: u8, options: &SynOptions) -> AgreedOptions {
    AgreedOptions {
        window_shift: match options.window_scale {
            Some(_) => Some(window_shift),
            None => None,
        },
        sack: options.sack_permitted && flags & SynCookieConfig::SACK != 0,
        ecn: options.ecn_setup && flags & SynCookieConfig::ECN != 0,
        timestamps: match options.tsval {
            Some(tsval) if flags & SynCookieConfig::TIMESTAMPS != 0 => Some(tsval),
            _ => None,
        },
    }
}

/// What the fast path keeps of a SYN whose cookie cannot (no timestamps agreed, and
/// window scaling, SACK or ECN agreed: [`AgreedOptions::need_the_half_open_map`]), in
/// its half-open map, an LRU hash keyed by the 4-tuple
/// ([`crate::frontend::FrontendFlowKey`]), until the protocol core takes it at the
/// client's first data segment (module docs).
///
/// Layout (12 bytes, no implicit padding, pinned by a test): `client_isn` (0..4), `mss`
/// (4..6), `window` (6..8), `window_scale` (8), `flags` (9), padding (10..12).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalfOpenSyn {
    /// The client's ISN: the entry is this connection's, not another's on the same ports.
    pub client_isn: u32,
    /// The client's MSS option ([`DEFAULT_MSS`] if it sent none), exactly.
    pub mss: u16,
    /// The SYN's window field (never scaled, RFC 7323 §2.2), replayed in the SYN'.
    pub window: u16,
    /// The client's window shift, [`HalfOpenSyn::NO_WINDOW_SCALE`] if it offered none.
    pub window_scale: u8,
    /// [`HalfOpenSyn::SACK`], [`HalfOpenSyn::ECN`]: what the SYN/ACK agreed to.
    pub flags: u8,
    pub _pad: [u8; 2],
}

impl HalfOpenSyn {
    /// SACK was agreed.
    pub const SACK: u8 = 1 << 0;
    /// ECN was granted.
    pub const ECN: u8 = 1 << 1;
    /// `window_scale` of a client that offered no window scaling.
    pub const NO_WINDOW_SCALE: u8 = 0xff;

    /// The entry for a SYN with `client_isn`, window field `window` and `options`, whose
    /// SYN/ACK agreed to `agreed`.
    #[inline(always)]
    pub const fn new(
        client_isn: u32,
        window: u16,
        options: &SynOptions,
        agreed: &AgreedOptions,
    ) -> Self {
        let sack = if agreed.sack { Self::SACK } else { 0 };
        let ecn = if agreed.ecn { Self::ECN } else { 0 };
        Self {
            client_isn,
            mss: match options.mss {
                Some(mss) => mss,
                None => DEFAULT_MSS,
            },
            window,
            window_scale: match options.window_scale {
                Some(shift) => shift,
                None => Self::NO_WINDOW_SCALE,
            },
            flags: sack | ecn,
            _pad: [0; 2],
        }
    }

    /// What the SYN/ACK agreed to, as a TSval would have kept it (a shift above 14 taken
    /// as 14, RFC 7323 §2.3).
    #[inline(always)]
    pub const fn kept(&self) -> KeptOptions {
        KeptOptions {
            window_scale: match self.window_scale {
                Self::NO_WINDOW_SCALE => None,
                s if s > 14 => Some(14),
                s => Some(s),
            },
            sack: self.flags & Self::SACK != 0,
            ecn: self.flags & Self::ECN != 0,
        }
    }
}

/// The options of a client's SYN that a cookie SYN/ACK answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// The client's TSval, if it sent timestamps.
    pub tsval: Option<u32>,
    /// The SYN is an ECN-setup SYN ([`ecn_setup_syn`]). Not an option but header flags:
    /// the options walk leaves it false and the caller sets it from the headers.
    pub ecn_setup: bool,
}

/// Room for a SYN's options (at most 40 bytes) and the reads a walk makes from an index
/// masked to 0..=63 (up to 5 bytes on), so that every read stays in bounds for the eBPF
/// verifier without a check the compiler could fold away.
pub const OPTIONS_AREA: usize = 72;

/// The options of a SYN whose options area is `area[..len]` (`area` zero past `len`):
/// [`SynOptionsWalk`] to its end. `None` for an area that is malformed: an option length
/// below 2 or running past `len`, or a known kind (MSS, window scale, SACK-permitted,
/// SACK, timestamps) of another length: what the protocol core refuses too, so that the slow
/// path judges it (and drops it, counted) whether or not a flood is on. The
/// `syn_options` fuzz target checks it against the core's parser.
pub fn parse_syn_options(area: &[u8; OPTIONS_AREA], len: usize) -> Option<SynOptions> {
    let mut walk = SynOptionsWalk::new(len);
    for _ in 0..MAX_OPTION_STEPS {
        if !walk.step(area) {
            break;
        }
    }
    walk.finish()
}

/// Most steps a walk can take: one byte each at least, 40 bytes at most.
pub const MAX_OPTION_STEPS: u32 = 40;

/// A walk over a SYN's options, one option per [`SynOptionsWalk::step`]. The XDP program
/// runs the steps from `bpf_loop`, whose callback the verifier checks once, where an
/// inlined loop with four kinds of option to remember made it follow every path through
/// 40 iterations (past its million instructions).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOptionsWalk {
    at: u32,
    len: u32,
    malformed: bool,
    out: SynOptions,
}

impl SynOptionsWalk {
    /// A walk over an options area of `len` bytes (40 at most).
    #[inline(always)]
    pub const fn new(len: usize) -> Self {
        Self {
            at: 0,
            len: if len > 40 { 40 } else { len as u32 },
            malformed: false,
            out: SynOptions {
                mss: None,
                window_scale: None,
                sack_permitted: false,
                tsval: None,
                ecn_setup: false,
            },
        }
    }

    /// Reads one option (or NOP); `false` once the walk is over: the area's end, End of
    /// Option List, or a malformed option. Every index is masked into the area (below
    /// 40 the mask changes nothing), so that every read is in bounds for the verifier.
    #[inline(always)]
    pub fn step(&mut self, area: &[u8; OPTIONS_AREA]) -> bool {
        const MASK: usize = 63;
        let at = self.at as usize & MASK;
        let len = self.len as usize;
        if at >= len {
            return false;
        }
        let byte = |i: usize| area[(at + i) & MASK];
        let kind = byte(0);
        if kind == 0 {
            return false;
        }
        if kind == 1 {
            self.at = at as u32 + 1;
            return true;
        }
        let size = usize::from(byte(1));
        if size < 2 || at + size > len {
            self.malformed = true;
            return false;
        }
        match (kind, size) {
            (2, 4) => self.out.mss = Some(u16::from_be_bytes([byte(2), byte(3)])),
            (3, 3) => self.out.window_scale = Some(byte(2)),
            (4, 2) => self.out.sack_permitted = true,
            (8, 10) => {
                self.out.tsval = Some(u32::from_be_bytes([byte(2), byte(3), byte(4), byte(5)]))
            }
            // SACK blocks (meaningless in a SYN, but well-formed): 1 to 4 of them.
            (5, 10 | 18 | 26 | 34) => {}
            // A known kind with another length: the protocol core refuses the SYN, so
            // the slow path gets it, to answer (or not) as it does without a flood.
            (2..=5 | 8, _) => {
                self.malformed = true;
                return false;
            }
            _ => {}
        }
        self.at = (at + size) as u32;
        true
    }

    /// What the walk found, or `None` if it met a malformed option.
    #[inline(always)]
    pub const fn finish(self) -> Option<SynOptions> {
        if self.malformed { None } else { Some(self.out) }
    }
}

/// What a cookie SYN/ACK says, decided from the SYN in one place for the protocol core
/// and the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieSynAck {
    /// The SYN/ACK's ISN.
    pub isn: u32,
    /// The MSS option's value.
    pub mss: u16,
    /// The window shift to offer (`None`: no window-scale option).
    pub window_shift: Option<u8>,
    /// Whether to offer SACK-permitted.
    pub sack: bool,
    /// Whether to grant ECN (ECE in the SYN/ACK, RFC 3168 §6.1.1).
    pub ecn: bool,
    /// `(TSval, TSecr)`, if timestamps are agreed.
    pub timestamps: Option<(u32, u32)>,
}

/// The cookie SYN/ACK for a SYN with `client_isn` and `options` on `flow` at `now_ns`,
/// under the enabled features in `config.flags`; `syn_in_map` when the SYN's options are
/// in the half-open map ([`HalfOpenSyn`]).
#[inline(always)]
pub fn cookie_syn_ack(
    config: &SynCookieConfig,
    now_ns: u64,
    flow: &[u8; 12],
    client_isn: u32,
    options: &SynOptions,
    syn_in_map: bool,
) -> CookieSynAck {
    let hashes = cookie_hashes(&config.keys, now_ns, flow, client_isn);
    cookie_syn_ack_with(config, &hashes, now_ns, client_isn, options, syn_in_map)
}

/// [`cookie_syn_ack`] from hashes already made ([`cookie_hashes`] at the same `now_ns`).
/// The options are [`agreed_options`]' choice, kept in the TSval with timestamps, in the
/// half-open map without them (`syn_in_map`, the cookie then marked), and otherwise not
/// offered (all but the MSS): a cookie SYN/ACK offers nothing it cannot remember.
#[inline(always)]
pub fn cookie_syn_ack_with(
    config: &SynCookieConfig,
    hashes: &CookieHashes,
    now_ns: u64,
    client_isn: u32,
    options: &SynOptions,
    syn_in_map: bool,
) -> CookieSynAck {
    let client_mss = match options.mss {
        Some(mss) => mss,
        None => DEFAULT_MSS,
    };
    let mss = if client_mss < DEFAULT_MSS {
        DEFAULT_MSS
    } else if client_mss > config.max_mss {
        config.max_mss
    } else {
        client_mss
    };
    let agreed = agreed_options(config.flags, config.window_shift, options);
    let (isn, window_shift, sack, ecn, timestamps) = match agreed.timestamps {
        Some(client_tsval) => {
            let tsv = encode_ts_options(
                ms_clock(now_ns).wrapping_add(hashes.tsval_offset),
                options.window_scale,
                agreed.sack,
                agreed.ecn,
            );
            (
                cookie_isn(hashes, client_isn, client_mss, false),
                agreed.window_shift,
                agreed.sack,
                agreed.ecn,
                Some((tsv, client_tsval)),
            )
        }
        None if syn_in_map => (
            cookie_isn(hashes, client_isn, client_mss, true),
            agreed.window_shift,
            agreed.sack,
            agreed.ecn,
            None,
        ),
        // Nowhere to keep window scale, SACK and ECN: offer none of them.
        None => (
            cookie_isn(hashes, client_isn, client_mss, false),
            None,
            false,
            false,
            None,
        ),
    };
    CookieSynAck {
        isn,
        mss,
        window_shift,
        sack,
        ecn,
        timestamps,
    }
}

/// The length of the SYN/ACK frame [`syn_ack_frame`] builds: Ethernet (14), IPv4 without
/// options (20), TCP with 20 bytes of options (40).
pub const SYN_ACK_FRAME_LEN: usize = 74;

/// The addresses of a SYN a frame answers, from the SYN's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAddresses {
    /// The SYN's Ethernet source (the answer's destination) and destination (our own).
    pub client_mac: [u8; 6],
    pub our_mac: [u8; 6],
    pub client_addr: [u8; 4],
    pub service_addr: [u8; 4],
    pub client_port: u16,
    pub service_port: u16,
}

/// The whole Ethernet frame of a cookie SYN/ACK: what the XDP program transmits in place
/// of the SYN, and what the host tests parse. The options always take 20 bytes, in
/// Linux's order, an option not agreed left as NOPs, so the frame has one length and
/// every write is at a constant offset:
///
/// ```text
/// MSS(4) | SACK-permitted(2) or NOP NOP | timestamps(10) or 10 NOPs | NOP window-scale(3) or 4 NOPs
/// ```
///
/// IPv4: TTL 64, DF, ID 0 (an atomic datagram, RFC 6864 §4.1), both checksums complete.
pub fn syn_ack_frame(
    to: &SynAddresses,
    client_isn: u32,
    window: u16,
    answer: &CookieSynAck,
) -> [u8; SYN_ACK_FRAME_LEN] {
    let mut frame = [0u8; SYN_ACK_FRAME_LEN];
    write_syn_ack_frame(&mut frame, to, client_isn, window, answer);
    frame
}

/// [`syn_ack_frame`], written over `f` (every byte): the XDP program writes the frame
/// in place, since a copy on its stack would not fit beside the rest.
#[inline(always)]
pub fn write_syn_ack_frame(
    f: &mut [u8; SYN_ACK_FRAME_LEN],
    to: &SynAddresses,
    client_isn: u32,
    window: u16,
    answer: &CookieSynAck,
) {
    const IP: usize = ETH_HLEN;
    const TCP: usize = ETH_IPV4_LEN;
    const TCP_LEN: usize = SYN_ACK_FRAME_LEN - TCP;
    // Where each option starts, in the fixed order above.
    const MSS: usize = TCP + TCP_OPTIONS;
    const SACK_PERMITTED: usize = MSS + 4;
    const TIMESTAMPS: usize = SACK_PERMITTED + 2;
    const WINDOW_SCALE: usize = TIMESTAMPS + 10;
    put(f, ETH_DEST, &to.client_mac);
    put(f, ETH_SOURCE, &to.our_mac);
    put(f, ETH_PROTO, &ETH_P_IP);
    // IPv4 header up to the addresses: version and length, TOS, total length, ID (0,
    // RFC 6864 §4.1), flags and fragment offset (DF), TTL, protocol, checksum (summed as
    // zero).
    #[rustfmt::skip]
    const IPV4_HEAD: [u8; IP_SADDR] = [
        IPV4_VERSION_IHL_NO_OPTIONS, 0, 0, (SYN_ACK_FRAME_LEN - ETH_HLEN) as u8, 0, 0,
        (IP_DF >> 8) as u8, 0, 64, IPPROTO_TCP, 0, 0,
    ];
    put(f, IP, &IPV4_HEAD);
    put(f, IP + IP_SADDR, &to.service_addr);
    put(f, IP + IP_DADDR, &to.client_addr);
    let ip_check = !sum_words(f, IP, TCP);
    put(f, IP + IP_CHECK, &ip_check.to_be_bytes());
    // TCP header.
    put(f, TCP + TCP_SOURCE, &to.service_port.to_be_bytes());
    put(f, TCP + TCP_DEST, &to.client_port.to_be_bytes());
    put(f, TCP + TCP_SEQ, &answer.isn.to_be_bytes());
    put(
        f,
        TCP + TCP_ACK_SEQ,
        &client_isn.wrapping_add(1).to_be_bytes(),
    );
    // SYN and ACK, and ECE when ECN is granted (never CWR, RFC 3168 §6.1.1). The IP
    // header's ECN field stays Not-ECT: a SYN/ACK is never ECT (same section).
    let data_offset = ((TCP_LEN / 4) << 4) as u8;
    let flags = if answer.ecn {
        SYN | ACK | ECE
    } else {
        SYN | ACK
    };
    put(f, TCP + TCP_DOFF, &[data_offset, flags]);
    put(f, TCP + TCP_WINDOW, &window.to_be_bytes());
    // Checksum (summed as zero) and urgent pointer.
    put(f, TCP + TCP_CHECK, &[0, 0, 0, 0]);
    // Options.
    let mss = answer.mss.to_be_bytes();
    put(f, MSS, &[2, 4, mss[0], mss[1]]);
    put(
        f,
        SACK_PERMITTED,
        &if answer.sack { [4, 2] } else { [1, 1] },
    );
    match answer.timestamps {
        Some((tsval, tsecr)) => {
            put(f, TIMESTAMPS, &[8, 10]);
            put(f, TIMESTAMPS + TSOPT_TSVAL, &tsval.to_be_bytes());
            put(f, TIMESTAMPS + TSOPT_TSECR, &tsecr.to_be_bytes());
        }
        None => put(f, TIMESTAMPS, &[1; 10]),
    }
    match answer.window_shift {
        Some(shift) => put(f, WINDOW_SCALE, &[1, 3, 3, shift]),
        None => put(f, WINDOW_SCALE, &[1; 4]),
    }
    // The pseudo-header: addresses, protocol, TCP length (40).
    let pseudo = ones_complement_add(
        ones_complement_add(sum_words(f, IP + IP_SADDR, TCP), u16::from(IPPROTO_TCP)),
        TCP_LEN as u16,
    );
    let tcp_check = !ones_complement_add(pseudo, sum_words(f, TCP, SYN_ACK_FRAME_LEN));
    put(f, TCP + TCP_CHECK, &tcp_check.to_be_bytes());
}

#[inline(always)]
fn put<const N: usize>(frame: &mut [u8; SYN_ACK_FRAME_LEN], at: usize, bytes: &[u8; N]) {
    let mut i = 0;
    while i < N {
        if let Some(b) = frame.get_mut(at + i) {
            *b = bytes[i];
        }
        i += 1;
    }
}

/// The one's-complement sum of the big-endian words of `frame[start..end]` (even bounds),
/// with constant bounds for the verifier.
#[inline(always)]
fn sum_words(frame: &[u8; SYN_ACK_FRAME_LEN], start: usize, end: usize) -> u16 {
    let mut sum = 0u16;
    let mut i = start;
    while i + 1 < end {
        if let (Some(&hi), Some(&lo)) = (frame.get(i), frame.get(i + 1)) {
            sum = ones_complement_add(sum, u16::from_be_bytes([hi, lo]));
        }
        i += 2;
    }
    sum
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers only, no implicit padding (sizes tested below).
    unsafe impl aya::Pod for super::CookieKeys {}
    unsafe impl aya::Pod for super::SynCookieConfig {}
    unsafe impl aya::Pod for super::HalfOpenSyn {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: [u8; 12] = flow_bytes([198, 18, 0, 2], [198, 18, 1, 10], 1000, 80);

    fn keys(seed: u64) -> CookieKeys {
        CookieKeys {
            cookie1: SipKey { k0: seed, k1: 1 },
            cookie2: SipKey { k0: seed, k1: 2 },
            tsval: SipKey { k0: seed, k1: 3 },
        }
    }

    #[test]
    fn cookie_round_trips_mss_and_expires() {
        let k = keys(7);
        let t0 = 5 * COOKIE_MINUTE_NANOS + 1;
        let other = flow_bytes([198, 18, 0, 2], [198, 18, 1, 10], 1001, 80);
        for (mss, want) in [(1460, 1460), (1400, 1300), (9000, 1460), (100, 536)] {
            let c = make_cookie(&k, t0, &FLOW, 42, mss, false);
            let found = Cookie {
                mss: want,
                syn_in_map: false,
            };
            assert_eq!(check_cookie(&k, t0, &FLOW, 42, c), Some(found));
            let later = t0 + 61_000_000_000;
            assert_eq!(check_cookie(&k, later, &FLOW, 42, c), Some(found));
            // Marked: the same MSS, and the mark read back, in either minute.
            let marked = make_cookie(&k, t0, &FLOW, 42, mss, true);
            assert_ne!(marked, c);
            let in_map = Cookie {
                syn_in_map: true,
                ..found
            };
            assert_eq!(check_cookie(&k, t0, &FLOW, 42, marked), Some(in_map));
            assert_eq!(check_cookie(&k, later, &FLOW, 42, marked), Some(in_map));
            let stale = t0 + 121_000_000_000;
            assert_eq!(check_cookie(&k, stale, &FLOW, 42, c), None);
            assert_eq!(check_cookie(&k, t0, &other, 42, c), None, "other flow");
            assert_eq!(check_cookie(&k, t0, &FLOW, 43, c), None, "other ISN");
            assert_eq!(check_cookie(&keys(8), t0, &FLOW, 42, c), None, "other key");
        }
    }

    const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const VIP_V6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
    const FLOW_V6: [u8; 36] = flow_bytes_v6(CLIENT_V6, VIP_V6, 1000, 80);

    /// An IPv6 cookie carries IPv6's MSS values and depends on every byte of the flow.
    #[test]
    fn an_ipv6_cookie_round_trips_its_own_mss_values() {
        let k = keys(7);
        let t0 = 5 * COOKIE_MINUTE_NANOS + 1;
        for (mss, want) in [
            (1440, 1440),
            (1430, 1420),
            (9000, 8940),
            (1280, 1220),
            (100, 1220),
        ] {
            for marked in [false, true] {
                let c = make_cookie(&k, t0, &FLOW_V6, 42, mss, marked);
                let found = Cookie {
                    mss: want,
                    syn_in_map: marked,
                };
                assert_eq!(check_cookie(&k, t0, &FLOW_V6, 42, c), Some(found));
                assert_eq!(
                    check_cookie(&k, t0 + 61_000_000_000, &FLOW_V6, 42, c),
                    Some(found)
                );
                assert_eq!(
                    check_cookie(&k, t0 + 121_000_000_000, &FLOW_V6, 42, c),
                    None
                );
                assert_eq!(check_cookie(&k, t0, &FLOW_V6, 43, c), None, "other ISN");
                for i in 0..36 {
                    let mut other = FLOW_V6;
                    other[i] ^= 0x80;
                    assert_eq!(check_cookie(&k, t0, &other, 42, c), None, "byte {i}");
                }
            }
        }
        assert_eq!(
            FLOW_V6[32..],
            [0x03, 0xe8, 0, 80],
            "ports after the addresses"
        );
        assert_eq!(FLOW_V6[..16], CLIENT_V6);
        assert_eq!(FLOW_V6[16..32], VIP_V6);
        assert_ne!(
            tsval(&k, t0, &FLOW_V6),
            tsval(&k, t0, &flow_bytes_v6(CLIENT_V6, VIP_V6, 1001, 80)),
            "the TSval offset is per flow"
        );
    }

    #[test]
    fn a_random_ack_is_rarely_a_cookie() {
        let k = keys(9);
        let accepted = (0..100_000u32)
            .filter(|n| check_cookie(&k, 1, &FLOW, 1, n.wrapping_mul(2_654_435_761)).is_some())
            .count();
        // 2 valid minutes * 8 indexes (4 MSS values, marked or not) in 2^32: 2^-28 per
        // guess (module docs).
        assert_eq!(accepted, 0);
    }

    #[test]
    fn ts_options_round_trip() {
        for ws in [None, Some(0), Some(7), Some(14)] {
            for sack in [false, true] {
                for ecn in [false, true] {
                    let ts = encode_ts_options(0xdead_beef, ws, sack, ecn);
                    // The clock's bits, but for the stamp's mark (`crate::stamp`).
                    assert_eq!(
                        ts & !TS_OPT_MASK,
                        crate::stamp::front_tsval(0xdead_beef) & !TS_OPT_MASK
                    );
                    let want = KeptOptions {
                        window_scale: ws,
                        sack,
                        ecn,
                    };
                    assert_eq!(decode_ts_options(ts), want);
                }
            }
        }
        assert_eq!(
            decode_ts_options(encode_ts_options(0, Some(15), false, false)).window_scale,
            Some(14)
        );
        // Linux's layout: shift in bits 0-3, SACK bit 4, ECN bit 5.
        assert_eq!(encode_ts_options(0, Some(7), true, true), 0x37);
    }

    #[test]
    fn flow_bytes_are_addresses_then_ports_in_network_order() {
        assert_eq!(FLOW, [198, 18, 0, 2, 198, 18, 1, 10, 0x03, 0xe8, 0, 80]);
    }

    fn config(flags: u32) -> SynCookieConfig {
        SynCookieConfig {
            keys: keys(3),
            flags,
            max_mss: 1400,
            window: 16384,
            window_shift: 7,
            _pad: [0; 7],
        }
    }

    const LINUX: SynOptions = SynOptions {
        mss: Some(1460),
        window_scale: Some(9),
        sack_permitted: true,
        tsval: Some(77),
        ecn_setup: false,
    };

    #[test]
    fn a_syn_ack_mirrors_what_the_cookie_can_keep() {
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK;
        let a = cookie_syn_ack(&config(all), 1, &FLOW, 500, &LINUX, false);
        assert_eq!(a.mss, 1400, "clamped to ours");
        assert_eq!(
            a.window_shift,
            Some(7),
            "ours, offered because the client's was"
        );
        assert!(a.sack);
        let (tsv, tsecr) = a.timestamps.unwrap();
        assert_eq!(tsecr, 77, "the client's TSval echoed");
        let kept = decode_ts_options(tsv);
        assert_eq!(
            (kept.window_scale, kept.sack, kept.ecn),
            (Some(9), true, false),
            "the client's shift kept"
        );
        assert_eq!(
            check_cookie(&config(all).keys, 1, &FLOW, 500, a.isn),
            Some(Cookie {
                mss: 1460,
                syn_in_map: false
            })
        );

        // No timestamps from the client: no window scale, no SACK.
        let bare = SynOptions {
            tsval: None,
            ..LINUX
        };
        let b = cookie_syn_ack(&config(all), 1, &FLOW, 500, &bare, false);
        assert_eq!((b.window_shift, b.sack, b.timestamps), (None, false, None));
        // Timestamps or SACK disabled here.
        let c = cookie_syn_ack(
            &config(SynCookieConfig::TIMESTAMPS),
            1,
            &FLOW,
            500,
            &LINUX,
            false,
        );
        assert!(!c.sack && c.timestamps.is_some());
        let d = cookie_syn_ack(&config(SynCookieConfig::SACK), 1, &FLOW, 500, &LINUX, false);
        assert_eq!((d.window_shift, d.sack, d.timestamps), (None, false, None));
        // No MSS option: 536 assumed, and offered.
        let e = cookie_syn_ack(
            &config(all),
            1,
            &FLOW,
            500,
            &SynOptions { mss: None, ..LINUX },
            false,
        );
        assert_eq!(e.mss, 536);
        assert_eq!(
            check_cookie(&config(all).keys, 1, &FLOW, 500, e.isn).map(|c| c.mss),
            Some(536)
        );
    }

    #[test]
    fn an_ecn_setup_syn_is_granted_ecn_through_the_tsval_only_with_timestamps() {
        // RFC 3168 §6.1.1: ECE and CWR, on a Not-ECT SYN.
        assert!(ecn_setup_syn(0x02 | 0x40 | 0x80, 0));
        assert!(
            ecn_setup_syn(0x02 | 0x40 | 0x80, 0xb8),
            "DSCP bits don't matter"
        );
        assert!(!ecn_setup_syn(0x02 | 0x40, 0), "ECE alone");
        assert!(!ecn_setup_syn(0x02 | 0x80, 0), "CWR alone");
        for ect in 1..=3 {
            assert!(!ecn_setup_syn(0x02 | 0x40 | 0x80, ect), "an ECT or CE SYN");
        }
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let asks = SynOptions {
            ecn_setup: true,
            ..LINUX
        };
        let a = cookie_syn_ack(&config(all), 1, &FLOW, 500, &asks, false);
        assert!(a.ecn);
        assert!(
            decode_ts_options(a.timestamps.unwrap().0).ecn,
            "kept for the ACK"
        );
        let to = SynAddresses {
            client_mac: [2; 6],
            our_mac: [3; 6],
            client_addr: [198, 18, 0, 2],
            service_addr: [198, 18, 1, 10],
            client_port: 1000,
            service_port: 80,
        };
        let frame = syn_ack_frame(&to, 500, 16384, &a);
        assert_eq!(frame[47], 0x52, "SYN, ACK and ECE; not CWR");
        assert_eq!(frame[15] & 0b11, 0, "the SYN/ACK itself is Not-ECT");
        let plain = syn_ack_frame(
            &to,
            500,
            16384,
            &cookie_syn_ack(&config(all), 1, &FLOW, 500, &LINUX, false),
        );
        assert_eq!(plain[47], 0x12, "no ECE for a SYN that did not ask");
        // Not granted: disabled, no timestamps (nowhere to remember it), or not asked.
        let off = cookie_syn_ack(
            &config(all & !SynCookieConfig::ECN),
            1,
            &FLOW,
            500,
            &asks,
            false,
        );
        assert!(!off.ecn && !decode_ts_options(off.timestamps.unwrap().0).ecn);
        let no_ts = SynOptions {
            tsval: None,
            ..asks
        };
        assert!(!cookie_syn_ack(&config(all), 1, &FLOW, 500, &no_ts, false).ecn);
        assert!(!cookie_syn_ack(&config(all), 1, &FLOW, 500, &LINUX, false).ecn);
    }

    fn area(bytes: &[u8]) -> ([u8; OPTIONS_AREA], usize) {
        let mut area = [0u8; OPTIONS_AREA];
        area[..bytes.len()].copy_from_slice(bytes);
        (area, bytes.len())
    }

    #[test]
    fn syn_options_of_common_stacks() {
        // Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
        let (a, n) = area(&[
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let linux = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            tsval: Some(256),
            ecn_setup: false,
        };
        assert_eq!(parse_syn_options(&a, n), Some(linux));
        // Windows: MSS, NOP, window scale, NOP, NOP, SACK-permitted; no timestamps.
        let (a, n) = area(&[2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2]);
        let windows = SynOptions {
            mss: Some(1460),
            window_scale: Some(8),
            sack_permitted: true,
            tsval: None,
            ecn_setup: false,
        };
        assert_eq!(parse_syn_options(&a, n), Some(windows));
        // None at all; an End of Option List and what follows it.
        assert_eq!(
            parse_syn_options(&[0; OPTIONS_AREA], 0),
            Some(SynOptions::default())
        );
        let (a, n) = area(&[0, 0, 0, 0, 2, 4, 5, 180]);
        assert_eq!(parse_syn_options(&a, n), Some(SynOptions::default()));
        // Unknown kinds: skipped.
        let (a, n) = area(&[30, 4, 0, 0, 2, 4, 5, 180]);
        assert_eq!(parse_syn_options(&a, n).unwrap().mss, Some(1460));
    }

    #[test]
    fn malformed_syn_options_are_refused() {
        for bad in [
            &[2, 0, 0, 0][..],    // length 0
            &[2, 1, 0, 0][..],    // length 1
            &[8, 10, 0, 0][..],   // past the area
            &[1, 1, 1, 3, 3][..], // window scale cut short
            &[2][..],             // no length byte
        ] {
            let (a, n) = area(bad);
            assert_eq!(parse_syn_options(&a, n), None, "{bad:?}");
        }
    }

    #[test]
    fn the_config_layout_is_fixed() {
        assert_eq!(core::mem::size_of::<CookieKeys>(), 48);
        assert_eq!(core::mem::size_of::<SynCookieConfig>(), 64);
        assert_eq!(core::mem::size_of::<HalfOpenSyn>(), 12);
        assert_eq!(core::mem::offset_of!(HalfOpenSyn, window_scale), 8);
        assert_eq!(core::mem::offset_of!(HalfOpenSyn, flags), 9);
    }

    /// Windows' SYN: MSS, window scale 8, SACK-permitted, no timestamps; ECN asked.
    const WINDOWS: SynOptions = SynOptions {
        mss: Some(1460),
        window_scale: Some(8),
        sack_permitted: true,
        tsval: None,
        ecn_setup: true,
    };

    #[test]
    fn the_options_agreed_are_the_clients_offer_within_the_settings() {
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let ecn_linux = SynOptions {
            ecn_setup: true,
            ..LINUX
        };
        assert_eq!(
            agreed_options(all, 7, &ecn_linux),
            AgreedOptions {
                window_shift: Some(7),
                sack: true,
                ecn: true,
                timestamps: Some(77),
            },
            "ours announced, the client's TSval echoed"
        );
        assert_eq!(
            agreed_options(0, 7, &ecn_linux),
            AgreedOptions {
                window_shift: Some(7),
                sack: false,
                ecn: false,
                timestamps: None,
            },
            "window scaling is always agreed when offered"
        );
        assert_eq!(
            agreed_options(all, 7, &SynOptions::default()),
            AgreedOptions {
                window_shift: None,
                sack: false,
                ecn: false,
                timestamps: None,
            },
            "nothing offered, nothing agreed"
        );
        assert!(!agreed_options(all, 7, &LINUX).need_the_half_open_map());
        assert!(agreed_options(all, 7, &WINDOWS).need_the_half_open_map());
        assert!(!agreed_options(all, 7, &SynOptions::default()).need_the_half_open_map());
        let sack_only = SynOptions {
            sack_permitted: true,
            ..SynOptions::default()
        };
        assert!(agreed_options(all, 7, &sack_only).need_the_half_open_map());
        assert!(!agreed_options(0, 7, &sack_only).need_the_half_open_map());
    }

    #[test]
    fn a_syn_without_timestamps_keeps_its_options_in_the_half_open_map() {
        let all = SynCookieConfig::TIMESTAMPS
            | SynCookieConfig::SACK
            | SynCookieConfig::ECN
            | SynCookieConfig::HALF_OPEN;
        let config = config(all);
        // In the map: offered as the core's own SYN/ACK would, the cookie marked.
        let a = cookie_syn_ack(&config, 1, &FLOW, 500, &WINDOWS, true);
        assert_eq!(
            (a.window_shift, a.sack, a.ecn, a.timestamps),
            (Some(7), true, true, None)
        );
        assert_eq!(
            check_cookie(&config.keys, 1, &FLOW, 500, a.isn),
            Some(Cookie {
                mss: 1460,
                syn_in_map: true
            })
        );
        // Not in the map: the cookie's own encoding, nothing but the MSS.
        let b = cookie_syn_ack(&config, 1, &FLOW, 500, &WINDOWS, false);
        assert_eq!(
            (b.window_shift, b.sack, b.ecn, b.timestamps),
            (None, false, false, None)
        );
        assert_eq!(
            check_cookie(&config.keys, 1, &FLOW, 500, b.isn).map(|c| c.syn_in_map),
            Some(false)
        );
        // With timestamps the TSval keeps them: never marked.
        let c = cookie_syn_ack(&config, 1, &FLOW, 500, &LINUX, true);
        assert_eq!(c, cookie_syn_ack(&config, 1, &FLOW, 500, &LINUX, false));
        // The entry: what the SYN said and the SYN/ACK agreed, read back as a TSval would.
        let agreed = agreed_options(config.flags, config.window_shift, &WINDOWS);
        let entry = HalfOpenSyn::new(500, 64_240, &WINDOWS, &agreed);
        assert_eq!(
            (entry.client_isn, entry.mss, entry.window),
            (500, 1460, 64_240)
        );
        assert_eq!(
            entry.kept(),
            KeptOptions {
                window_scale: Some(8),
                sack: true,
                ecn: true
            }
        );
        let plain = SynOptions {
            mss: None,
            window_scale: None,
            ..WINDOWS
        };
        let no_sack = agreed_options(SynCookieConfig::ECN, 7, &plain);
        let entry = HalfOpenSyn::new(500, 1, &plain, &no_sack);
        assert_eq!(entry.mss, DEFAULT_MSS);
        assert_eq!(
            entry.kept(),
            KeptOptions {
                window_scale: None,
                sack: false,
                ecn: true
            }
        );
        let huge = HalfOpenSyn {
            window_scale: 15,
            ..entry
        };
        assert_eq!(huge.kept().window_scale, Some(14), "RFC 7323 §2.3");
    }
}
