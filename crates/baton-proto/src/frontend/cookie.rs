//! Keyed hashes: initial sequence numbers (RFC 6528), timestamp offsets (RFC 7323 §7.1),
//! SYN cookies (RFC 4987 §3.6) and the flow table's hasher.
//!
//! All are SipHash-2-4 ([`baton_common::siphash`]) under sub-keys derived from the
//! configured local secret, so the front-end has no randomness source of its own and a
//! simulation with a fixed secret is reproducible.
//!
//! # SYN cookie layout and fidelity
//!
//! The ISN of a cookie SYN/ACK is, as in Linux's `secure_tcp_syn_cookie`:
//!
//! ```text
//! isn_f = H1(flow) + client_isn + (minute << 24) + ((H2(flow, minute, client_isn) + mss_index) mod 2^24)
//! ```
//!
//! `minute` is a 60-second counter (8 bits travel); a cookie is honoured for up to two
//! minutes. What survives the round trip through the client:
//!
//! | client's SYN offered | kept | how |
//! |---|---|---|
//! | MSS | rounded down to 536, 1300, 1440 or 1460 | 2 bits in the cookie (Linux's `msstab`) |
//! | window scale | exactly (shift 0..=14) | TSval low 4 bits, echoed in TSecr; only with timestamps |
//! | SACK-permitted | yes | TSval bit 4; only with timestamps |
//! | timestamps | yes | the ACK carries TSopt; `tsv_f` is its TSecr |
//! | anything else (TFO, MPTCP, ...) | no | never mirrored, so never agreed anyway |
//!
//! Without timestamps there is nowhere to keep window scale and SACK, so a cookie SYN/ACK
//! to such a client offers neither (Linux's `tcp_clear_options` when `want_cookie` and no
//! timestamp). The SYN' rebuilt from a cookie carries the rounded MSS and the client's
//! window from the ACK; the client's SYN TSval is replaced by the ACK's, which is later.

use std::hash::{BuildHasher, Hasher};

use baton_common::siphash::{SipKey, siphash24};

use super::{FlowKey, Instant};

/// MSS values a cookie can carry, smallest first (Linux `msstab`, net/ipv4/syncookies.c).
pub(crate) const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// Bits of the cookie below the minute counter.
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// A cookie is honoured in the minute it was made and the one after (Linux
/// `MAX_SYNCOOKIE_AGE`).
const MAX_COOKIE_AGE: u32 = 2;
/// Length of one cookie "minute" in nanoseconds.
const COOKIE_MINUTE_NANOS: u64 = 60_000_000_000;

/// TSval low bits carrying options in a cookie SYN/ACK (Linux `TSBITS`).
const TS_OPT_BITS: u32 = 6;
const TS_OPT_MASK: u32 = (1 << TS_OPT_BITS) - 1;
/// Window shift field in the TSval; 0xf means "no window scaling".
const TS_OPT_WSCALE_MASK: u32 = 0xf;
/// SACK-permitted bit in the TSval.
const TS_OPT_SACK: u32 = 1 << 4;

/// The sub-keys derived from [`super::Config::secret`].
#[derive(Clone)]
pub(crate) struct Secrets {
    isn: SipKey,
    tsval: SipKey,
    cookie1: SipKey,
    cookie2: SipKey,
    flows: SipKey,
    /// The key shared with the back-ends, for the handoff option's tag.
    pub handoff: SipKey,
}

impl Secrets {
    pub fn new(secret: [u8; 16], handoff_key: [u8; 16]) -> Self {
        let master = SipKey::from_bytes(secret);
        // One PRF call per key word, domain-separated by label, so that learning one
        // sub-key's outputs says nothing about another's.
        let derive = |label: &[u8; 7]| {
            let word = |n: u8| {
                let mut msg = [0u8; 8];
                msg[..7].copy_from_slice(label);
                msg[7] = n;
                siphash24(&master, &msg)
            };
            SipKey {
                k0: word(0),
                k1: word(1),
            }
        };
        Self {
            isn: derive(b"isn-v1 "),
            tsval: derive(b"tsval-1"),
            cookie1: derive(b"cookie1"),
            cookie2: derive(b"cookie2"),
            flows: derive(b"flows-1"),
            handoff: SipKey::from_bytes(handoff_key),
        }
    }

    /// The initial sequence number for `flow` at `now`: RFC 6528 §3,
    /// `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`, with `M` a
    /// 4-microsecond clock and `F` SipHash-2-4.
    pub fn isn(&self, now: Instant, flow: &FlowKey) -> u32 {
        let m = (now.as_nanos() / 4_000) as u32;
        m.wrapping_add(siphash24(&self.isn, &flow.to_bytes()) as u32)
    }

    /// `tsv_f`: a per-connection random offset plus a 1 ms clock (RFC 7323 §5.4, §7.1),
    /// so that TSvals reveal nothing of the host's uptime and differ between connections.
    pub fn tsval(&self, now: Instant, flow: &FlowKey) -> u32 {
        now.as_millis_u32()
            .wrapping_add(siphash24(&self.tsval, &flow.to_bytes()) as u32)
    }

    /// The cookie ISN for a SYN with `client_isn` on `flow` at `now` whose MSS rounds
    /// down to `MSS_TABLE[mss_index]`.
    pub fn make_cookie(&self, now: Instant, flow: &FlowKey, client_isn: u32, mss: u16) -> u32 {
        let minute = cookie_minute(now);
        let mss_index = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        self.h1(flow)
            .wrapping_add(client_isn)
            .wrapping_add(minute << COOKIE_BITS)
            .wrapping_add(self.h2(flow, minute, client_isn).wrapping_add(mss_index) & COOKIE_MASK)
    }

    /// The MSS a valid, fresh `cookie` (the ACK's `ack - 1`) encodes for a client whose
    /// ISN was `client_isn` (the ACK's `seq - 1`), or `None`. As Linux's
    /// `__cookie_v4_check`.
    pub fn check_cookie(
        &self,
        now: Instant,
        flow: &FlowKey,
        client_isn: u32,
        cookie: u32,
    ) -> Option<u16> {
        let diff = cookie.wrapping_sub(self.h1(flow)).wrapping_sub(client_isn);
        let minute_now = cookie_minute(now);
        let age = minute_now.wrapping_sub(diff >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
        if age >= MAX_COOKIE_AGE {
            return None;
        }
        let minute = minute_now.wrapping_sub(age);
        let mss_index = diff.wrapping_sub(self.h2(flow, minute, client_isn)) & COOKIE_MASK;
        MSS_TABLE.get(mss_index as usize).copied()
    }

    fn h1(&self, flow: &FlowKey) -> u32 {
        siphash24(&self.cookie1, &flow.to_bytes()) as u32
    }

    /// Unlike Linux, the client's ISN is also hashed here, not only added: otherwise an
    /// ACK whose `seq` is off by `k` would pass with the MSS index moved by `k`.
    fn h2(&self, flow: &FlowKey, minute: u32, client_isn: u32) -> u32 {
        let mut msg = [0u8; 20];
        msg[..12].copy_from_slice(&flow.to_bytes());
        msg[12..16].copy_from_slice(&minute.to_be_bytes());
        msg[16..].copy_from_slice(&client_isn.to_be_bytes());
        siphash24(&self.cookie2, &msg) as u32
    }

    /// A keyed hasher for the flow table: deterministic for a given secret, and
    /// unpredictable to clients, who choose the keys (source address and port).
    pub fn flow_hasher(&self) -> FlowHashBuilder {
        FlowHashBuilder(self.flows)
    }
}

fn cookie_minute(now: Instant) -> u32 {
    (now.as_nanos() / COOKIE_MINUTE_NANOS) as u32
}

/// `tsv` with its low bits replaced by the options a cookie must remember (Linux
/// `cookie_init_timestamp`). The clock loses 6 bits of resolution; it stays monotonic
/// over 64 ms, which is all PAWS needs (RFC 7323 §5).
pub(crate) fn encode_ts_options(tsv: u32, window_scale: Option<u8>, sack: bool) -> u32 {
    let ws = window_scale.map_or(TS_OPT_WSCALE_MASK, |s| u32::from(s.min(14)));
    let sack = if sack { TS_OPT_SACK } else { 0 };
    (tsv & !TS_OPT_MASK) | ws | sack
}

/// The options [`encode_ts_options`] put in a TSval, read back from the TSecr.
pub(crate) fn decode_ts_options(tsecr: u32) -> (Option<u8>, bool) {
    let ws = tsecr & TS_OPT_WSCALE_MASK;
    let window_scale = (ws != TS_OPT_WSCALE_MASK).then(|| ws.min(14) as u8);
    (window_scale, tsecr & TS_OPT_SACK != 0)
}

/// Builds [`FlowHasher`]s keyed with the flow sub-key.
#[derive(Clone)]
pub(crate) struct FlowHashBuilder(SipKey);

impl BuildHasher for FlowHashBuilder {
    type Hasher = FlowHasher;

    fn build_hasher(&self) -> FlowHasher {
        FlowHasher {
            key: self.0,
            buf: [0; 16],
            len: 0,
        }
    }
}

/// SipHash-2-4 over the (at most 16) bytes a [`FlowKey`] writes. Longer input is folded
/// in by xor, which no caller produces.
pub(crate) struct FlowHasher {
    key: SipKey,
    buf: [u8; 16],
    len: usize,
}

impl Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[self.len % 16] ^= b;
            self.len += 1;
        }
    }

    fn finish(&self) -> u64 {
        siphash24(&self.key, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            client: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), port),
            service: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10), 80),
        }
    }

    #[test]
    fn cookie_round_trips_mss_and_expires() {
        let s = Secrets::new([7; 16], [0; 16]);
        let t0 = Instant::from_nanos(5 * COOKIE_MINUTE_NANOS + 1);
        for (mss, want) in [(1460, 1460), (1400, 1300), (9000, 1460), (100, 536)] {
            let c = s.make_cookie(t0, &flow(1000), 42, mss);
            assert_eq!(s.check_cookie(t0, &flow(1000), 42, c), Some(want));
            let later = t0 + std::time::Duration::from_secs(61);
            assert_eq!(s.check_cookie(later, &flow(1000), 42, c), Some(want));
            let stale = t0 + std::time::Duration::from_secs(121);
            assert_eq!(s.check_cookie(stale, &flow(1000), 42, c), None);
            assert_eq!(s.check_cookie(t0, &flow(1001), 42, c), None, "other flow");
            assert_eq!(s.check_cookie(t0, &flow(1000), 43, c), None, "other ISN");
        }
    }

    #[test]
    fn a_random_ack_is_rarely_a_cookie() {
        let s = Secrets::new([9; 16], [0; 16]);
        let t = Instant::from_nanos(1);
        let accepted = (0..100_000u32)
            .filter(|n| {
                s.check_cookie(t, &flow(2000), 1, n.wrapping_mul(2_654_435_761))
                    .is_some()
            })
            .count();
        // 2 valid minutes * 4 MSS values in 2^32: about 2^-29 per guess.
        assert_eq!(accepted, 0);
    }

    #[test]
    fn ts_options_round_trip() {
        for ws in [None, Some(0), Some(7), Some(14)] {
            for sack in [false, true] {
                let ts = encode_ts_options(0xdead_beef, ws, sack);
                assert_eq!(ts & !TS_OPT_MASK, 0xdead_beef & !TS_OPT_MASK);
                assert_eq!(decode_ts_options(ts), (ws, sack));
            }
        }
    }

    #[test]
    fn isn_advances_with_the_clock_and_differs_per_flow() {
        let s = Secrets::new([1; 16], [0; 16]);
        let a = s.isn(Instant::from_nanos(0), &flow(1));
        let b = s.isn(Instant::from_nanos(4_000_000), &flow(1));
        assert_eq!(b.wrapping_sub(a), 1000, "4 µs ticks (RFC 6528 §3)");
        assert_ne!(a, s.isn(Instant::from_nanos(0), &flow(2)));
    }
}
