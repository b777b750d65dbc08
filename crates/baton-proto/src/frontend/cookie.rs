//! Keyed hashes: initial sequence numbers (RFC 6528), timestamp offsets (RFC 7323 §7.1),
//! SYN cookies (RFC 4987 §3.6) and the flow table's hasher.
//!
//! All are SipHash-2-4 ([`baton_common::siphash`]) under sub-keys derived from the
//! configured local secret, so the front-end has no randomness source of its own and a
//! simulation with a fixed secret is reproducible.
//!
//! The SYN cookie arithmetic itself is [`baton_common::syncookie`], shared with the
//! fast path's XDP program, which answers a flood's SYNs with the same cookies; its docs
//! give the layout and what a cookie keeps of the SYN.

use std::hash::{BuildHasher, Hasher};

use baton_common::{
    siphash::{SipKey, siphash24},
    syncookie::{self, Cookie, CookieKeys},
};

use super::{FlowBytes, FlowKey, Instant};

/// The sub-keys derived from [`super::Config::secret`].
#[derive(Clone)]
pub(crate) struct Secrets {
    isn: SipKey,
    /// SYN cookies' `H1` and `H2` and the TSval offset.
    cookies: CookieKeys,
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
            cookies: CookieKeys {
                cookie1: derive(b"cookie1"),
                cookie2: derive(b"cookie2"),
                tsval: derive(b"tsval-1"),
            },
            flows: derive(b"flows-1"),
            handoff: SipKey::from_bytes(handoff_key),
        }
    }

    /// The initial sequence number for `flow` at `now`: RFC 6528 §3,
    /// `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`, with `M` a
    /// 4-microsecond clock and `F` SipHash-2-4.
    pub fn isn(&self, now: Instant, flow: &FlowKey) -> u32 {
        let m = (now.as_nanos() / 4_000) as u32;
        let f = match flow.to_bytes() {
            FlowBytes::V4(bytes) => siphash24(&self.isn, &bytes),
            FlowBytes::V6(bytes) => siphash24(&self.isn, &bytes),
        };
        m.wrapping_add(f as u32)
    }

    /// `tsv_f`: a per-connection random offset plus a 1 ms clock (RFC 7323 §5.4, §7.1),
    /// so that TSvals reveal nothing of the host's uptime and differ between connections.
    pub fn tsval(&self, now: Instant, flow: &FlowKey) -> u32 {
        match flow.to_bytes() {
            FlowBytes::V4(bytes) => syncookie::tsval(&self.cookies, now.as_nanos(), &bytes),
            FlowBytes::V6(bytes) => syncookie::tsval(&self.cookies, now.as_nanos(), &bytes),
        }
    }

    /// The keys cookies and TSvals are made with, for the fast path.
    pub fn cookie_keys(&self) -> CookieKeys {
        self.cookies
    }

    /// What a valid, fresh `cookie` (the ACK's `ack - 1`) says for a client whose ISN was
    /// `client_isn` (the ACK's `seq - 1`), or `None`.
    pub fn check_cookie(
        &self,
        now: Instant,
        flow: &FlowKey,
        client_isn: u32,
        cookie: u32,
    ) -> Option<Cookie> {
        let now = now.as_nanos();
        match flow.to_bytes() {
            FlowBytes::V4(bytes) => {
                syncookie::check_cookie(&self.cookies, now, &bytes, client_isn, cookie)
            }
            // The IPv6 flow's hashes carry IPv6's MSS table (`MSS_TABLE_V6`).
            FlowBytes::V6(bytes) => {
                syncookie::check_cookie(&self.cookies, now, &bytes, client_isn, cookie)
            }
        }
    }

    /// A keyed hasher for the flow table: deterministic for a given secret, and
    /// unpredictable to clients, who choose the keys (source address and port).
    pub fn flow_hasher(&self) -> FlowHashBuilder {
        FlowHashBuilder(self.flows)
    }
}

/// Builds [`FlowHasher`]s keyed with the flow sub-key.
#[derive(Clone)]
pub(crate) struct FlowHashBuilder(SipKey);

impl BuildHasher for FlowHashBuilder {
    type Hasher = FlowHasher;

    fn build_hasher(&self) -> FlowHasher {
        FlowHasher {
            key: self.0,
            buf: [0; FLOW_HASH_INPUT],
            len: 0,
        }
    }
}

/// The most a [`FlowKey`] writes: an IPv6 flow's 36 bytes.
const FLOW_HASH_INPUT: usize = 36;

/// SipHash-2-4 over the bytes a [`FlowKey`] writes: an IPv4 flow's 12 (hashed as 16,
/// zero-padded), an IPv6 flow's 36. Longer input is folded in by xor, which no caller
/// produces.
pub(crate) struct FlowHasher {
    key: SipKey,
    buf: [u8; FLOW_HASH_INPUT],
    len: usize,
}

impl Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[self.len % FLOW_HASH_INPUT] ^= b;
            self.len += 1;
        }
    }

    fn finish(&self) -> u64 {
        match self.buf.first_chunk::<16>() {
            Some(short) if self.len <= 16 => siphash24(&self.key, short),
            _ => siphash24(&self.key, &self.buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn flow(port: u16) -> FlowKey {
        FlowKey::v4(
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), port),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10), 80),
        )
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
