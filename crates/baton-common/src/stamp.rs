//! The back-end's identity stamped in the TSval (docs/design.md, "Stateless forwarding
//! by the stamp"): any front-end forwards a handed-off flow it has no entry for, with no
//! state shared between front-ends, by the back-end named in the client's TSecr.
//!
//! The back-end's egress replaces the low 16 bits of every TSval it sends on a
//! handed-off connection with the flow's stamp; the client echoes it in TSecr (RFC 7323
//! §3.2: the TSecr of its segments is the latest in-order TSval it received); a
//! front-end whose flow table misses the segment reads it back, checks it and forwards.
//!
//! ```text
//!  TSval bits 31..16    15      14..8          7..0
//! +-----------------+------+--------------+--------------+
//! | the clock       | mark | back-end id  | MAC          |
//! +-----------------+------+--------------+--------------+
//! ```
//!
//! - **mark** (1 bit): set in every stamp, cleared in every TSval a front-end sends
//!   itself ([`front_tsval`]: the core's `tsv_f` and the cookie SYN/ACK's), so that the
//!   echo of a front-end's own TSval (a handshake's ACK, a request before its handoff,
//!   a flow whose entry is elsewhere) is never taken for a stamp, whatever its bits.
//! - **back-end id** (7 bits): the low 7 bits of the back-end's address
//!   ([`backend_id`]). Both sides know it without configuration; a front-end leaves out
//!   back-ends that share one (docs/operations.md says how to number them).
//! - **MAC** (8 bits): SipHash-2-4 under the handoff key over the flow as the client
//!   sees it (client and service addresses and ports) and the back-end's address and
//!   port ([`StampedFlow`]). A client naming another back-end than its own, or echoing
//!   its stamp on another flow, guesses 8 bits: one try in 256 passes, and every failed
//!   one is dropped and counted (`stat::STAMP_FORGED`). What a pass buys it is its own
//!   segment sent to a back-end that has no connection for it, which answers with a
//!   reset; another client's flow can be reached only by spoofing its 4-tuple, and
//!   then only while no front-end has an entry for it (ECMP sends the spoofed segments
//!   to the same front-end as the real ones).
//!
//! 16 bits, as Cheetah's TCP-timestamp cookie: fewer would make the MAC a formality or
//! the id space too small for a pool; more would coarsen the clock further.
//!
//! **The clock**: a stamped TSval is the next value at or after the translated one whose
//! low 16 bits are the stamp ([`stamped_tsval`]): monotonic (PAWS, RFC 7323 §5, holds),
//! ahead of the back-end's clock by less than [`RESOLUTION`] ticks, and advancing in
//! steps of [`RESOLUTION`] ticks (65.536 s at Linux's 1 ms). The client's own RTT
//! measurement is untouched (it echoes its TSval in our TSecr, which no one rewrites).
//! The back-end's timestamp RTT samples (which Linux takes only for acknowledgements of
//! retransmitted data, preferring its own send times) see an echo that is never earlier
//! than the TSval the back-end sent, so a sample is never overestimated and a
//! spurious-retransmission undo (Eifel, RFC 3522) is never taken wrongly; a sample whose
//! echo lies ahead of the back-end's clock is discarded by Linux (`tcp_rtt_tsopt_us`),
//! as Karn's algorithm would, and one that does not is short by less than the
//! resolution.

use crate::siphash::{SipKey, siphash24};

/// The TSval's low bits that carry the stamp.
pub const STAMP_BITS: u32 = 16;
/// The stamp's mask in a TSval.
pub const STAMP_MASK: u32 = (1 << STAMP_BITS) - 1;
/// The steps a stamped TSval advances in, in the back-end's clock ticks.
pub const RESOLUTION: u32 = 1 << STAMP_BITS;
/// Set in every stamp, clear in every TSval a front-end sends ([`front_tsval`]).
pub const MARK: u16 = 1 << 15;
/// Where the back-end id sits in the stamp.
pub const ID_SHIFT: u32 = 8;
/// How many back-end ids there are.
pub const IDS: usize = 128;
const ID_MASK: u16 = 0x7f;
const MAC_MASK: u16 = 0xff;

/// The flow a stamp is bound to: the client's 4-tuple as the front-end sees it, and the
/// back-end that holds the connection. Addresses as on the wire (network order bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampedFlow {
    pub client_addr: [u8; 4],
    pub client_port: u16,
    pub vip_addr: [u8; 4],
    pub vip_port: u16,
    pub backend_addr: [u8; 4],
    pub backend_port: u16,
}

impl StampedFlow {
    /// The MAC's input: a version tag, then the fields in a fixed order.
    #[inline(always)]
    const fn message(&self) -> [u8; 24] {
        let c = self.client_addr;
        let v = self.vip_addr;
        let b = self.backend_addr;
        let cp = self.client_port.to_be_bytes();
        let vp = self.vip_port.to_be_bytes();
        let bp = self.backend_port.to_be_bytes();
        [
            b'B', b'T', b'S', b'1', c[0], c[1], c[2], c[3], v[0], v[1], v[2], v[3], b[0], b[1],
            b[2], b[3], cp[0], cp[1], vp[0], vp[1], bp[0], bp[1], 0, 0,
        ]
    }
}

/// The id a back-end is known by in stamps: the low 7 bits of its address.
#[inline(always)]
pub const fn backend_id(backend_addr: [u8; 4]) -> u8 {
    backend_addr[3] & ID_MASK as u8
}

/// The flow's stamp under `key`: the mark, the back-end's id, the MAC.
#[inline(always)]
pub fn stamp(key: &SipKey, flow: &StampedFlow) -> u16 {
    let mac = siphash24(key, &flow.message()) as u16 & MAC_MASK;
    MARK | (u16::from(backend_id(flow.backend_addr)) << ID_SHIFT) | mac
}

/// `tsval` stamped: the first value at or after it (modulo 2^32) whose low bits are
/// `stamp`. Monotonic in `tsval`, and less than [`RESOLUTION`] ahead of it.
#[inline(always)]
pub const fn stamped_tsval(tsval: u32, stamp: u16) -> u32 {
    tsval.wrapping_add((stamp as u32).wrapping_sub(tsval) & STAMP_MASK)
}

/// A TSval a front-end sends itself: never a stamp's, whatever the clock says.
#[inline(always)]
pub const fn front_tsval(tsval: u32) -> u32 {
    tsval & !(MARK as u32)
}

/// The stamp a TSecr carries, if it is marked as one (not yet checked).
#[inline(always)]
pub const fn stamp_of(tsecr: u32) -> Option<u16> {
    let stamp = (tsecr & STAMP_MASK) as u16;
    if stamp & MARK != 0 { Some(stamp) } else { None }
}

/// The back-end id a stamp names.
#[inline(always)]
pub const fn id_of(stamp: u16) -> u8 {
    ((stamp >> ID_SHIFT) & ID_MASK) as u8
}

/// Whether `stamp` is the one the back-end in `flow` gave this flow under `key`: a
/// stamp naming another back-end, made for another flow or under another key fails.
#[inline(always)]
pub fn verify(key: &SipKey, flow: &StampedFlow, stamp: u16) -> bool {
    self::stamp(key, flow) == stamp
}

/// What a front-end does with a client segment of a flow its table misses, by its TSecr
/// ([`judge_stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampVerdict {
    /// Not a stamp (the echo of a front-end's own TSval, or no timestamps): as before,
    /// the slow path's.
    NotAStamp,
    /// A stamp naming an id no back-end of the service has: dropped, counted.
    UnknownBackend,
    /// A stamp that does not verify for this flow and the back-end it names: dropped,
    /// counted.
    Forged,
    /// A valid stamp: forwarded to the back-end the table names, and the flow learned.
    Forward,
}

/// The judgement of a missed flow's TSecr (`tsecr`) for the flow `client` →
/// `service` (addresses as on the wire, ports in host order), given the front-end's
/// entry for the id the stamp names (`backend`, looked up by the caller with
/// [`id_of`]). The XDP program and the host tests call it alike.
#[inline(always)]
pub fn judge_stamp(
    key: &SipKey,
    tsecr: u32,
    client: ([u8; 4], u16),
    service: ([u8; 4], u16),
    backend: Option<&StampedBackend>,
) -> StampVerdict {
    let Some(stamp) = stamp_of(tsecr) else {
        return StampVerdict::NotAStamp;
    };
    let Some(backend) = backend.filter(|b| b.flags & StampedBackend::USABLE != 0) else {
        return StampVerdict::UnknownBackend;
    };
    let flow = StampedFlow {
        client_addr: client.0,
        client_port: client.1,
        vip_addr: service.0,
        vip_port: service.1,
        backend_addr: backend.addr_be.to_ne_bytes(),
        backend_port: u16::from_be_bytes(backend.port_be.to_ne_bytes()),
    };
    // The table's entry must be the id's own: a back-end whose address gives another id
    // never verifies (the daemon writes none such, but the check costs nothing).
    if backend_id(flow.backend_addr) != id_of(stamp) || !verify(key, &flow, stamp) {
        return StampVerdict::Forged;
    }
    StampVerdict::Forward
}

/// A back-end a front-end forwards stamped flows to, by id (the front-end's table of
/// [`IDS`] entries, written by its daemon).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampedBackend {
    pub addr_be: u32,
    pub port_be: u16,
    pub mac: [u8; 6],
    pub _pad: [u8; 4],
    /// [`StampedBackend::USABLE`].
    pub flags: u32,
}

impl StampedBackend {
    /// The entry names a back-end of a service (its MAC known, its id its own).
    pub const USABLE: u32 = 1 << 0;
}

/// The front-end's stamp configuration (one entry): the key, and whether stamped flows
/// are forwarded at all.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StampConfig {
    pub key: SipKey,
    /// [`StampConfig::ENABLED`].
    pub flags: u32,
    pub _pad: u32,
}

impl StampConfig {
    /// Forward flows the table misses by their stamp.
    pub const ENABLED: u32 = 1 << 0;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integer fields and explicit padding: every bit pattern is a
    // value.
    unsafe impl aya::Pod for super::StampedBackend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StampConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: SipKey = SipKey {
        k0: 0x0706_0504_0302_0100,
        k1: 0x0f0e_0d0c_0b0a_0908,
    };

    fn flow() -> StampedFlow {
        StampedFlow {
            client_addr: [198, 18, 0, 2],
            client_port: 40_000,
            vip_addr: [198, 18, 2, 1],
            vip_port: 80,
            backend_addr: [198, 18, 1, 12],
            backend_port: 80,
        }
    }

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(core::mem::size_of::<StampedBackend>(), 20);
        assert_eq!(core::mem::size_of::<StampConfig>(), 24);
    }

    #[test]
    fn a_stamp_names_its_backend_and_verifies() {
        let s = stamp(&KEY, &flow());
        assert_eq!(id_of(s), 12);
        let tsval = stamped_tsval(0x1234_5678, s);
        assert_eq!(stamp_of(tsval), Some(s));
        assert!(verify(&KEY, &flow(), s));
    }

    #[test]
    fn a_front_ends_own_tsval_is_never_a_stamp() {
        for tsval in [0, 0xffff_ffff, 0x8000, 0x1234_ffff] {
            assert_eq!(stamp_of(front_tsval(tsval)), None);
        }
    }

    #[test]
    fn the_front_ends_tsvals_never_carry_the_mark() {
        let keys = crate::syncookie::CookieKeys {
            cookie1: SipKey { k0: 1, k1: 2 },
            cookie2: SipKey { k0: 3, k1: 4 },
            tsval: SipKey { k0: 5, k1: 6 },
        };
        for ms in (0..200_000u64).step_by(997) {
            let tsv = crate::syncookie::tsval(&keys, ms * 1_000_000, &[1; 12]);
            assert_eq!(stamp_of(tsv), None, "the core's tsv_f at {ms} ms");
            let cookie = crate::syncookie::encode_ts_options(tsv | 0x8000, Some(7), true, true);
            assert_eq!(stamp_of(cookie), None, "a cookie's TSval");
        }
    }

    #[test]
    fn another_key_fails() {
        let other = SipKey { k0: 1, k1: 2 };
        // One key in 256 could pass by chance: some other key must fail.
        assert!((0..4).any(|k0| !verify(&SipKey { k0, ..other }, &flow(), stamp(&KEY, &flow()))));
    }

    fn entry(f: &StampedFlow) -> StampedBackend {
        StampedBackend {
            addr_be: u32::from_ne_bytes(f.backend_addr),
            port_be: u16::from_ne_bytes(f.backend_port.to_be_bytes()),
            mac: [2, 0, 0, 0, 0, 1],
            _pad: [0; 4],
            flags: StampedBackend::USABLE,
        }
    }

    #[test]
    fn a_front_end_forwards_a_valid_stamp_and_drops_the_rest() {
        let f = flow();
        let tsecr = stamped_tsval(0x0102_0304, stamp(&KEY, &f));
        let judge = |tsecr, client_port, backend: Option<&StampedBackend>| {
            judge_stamp(
                &KEY,
                tsecr,
                (f.client_addr, client_port),
                (f.vip_addr, f.vip_port),
                backend,
            )
        };
        assert_eq!(
            judge(tsecr, f.client_port, Some(&entry(&f))),
            StampVerdict::Forward
        );
        assert_eq!(
            judge(front_tsval(tsecr), f.client_port, Some(&entry(&f))),
            StampVerdict::NotAStamp
        );
        assert_eq!(
            judge(tsecr, f.client_port, None),
            StampVerdict::UnknownBackend
        );
        let unusable = StampedBackend {
            flags: 0,
            ..entry(&f)
        };
        assert_eq!(
            judge(tsecr, f.client_port, Some(&unusable)),
            StampVerdict::UnknownBackend
        );
        // Another back-end with the same id (another /25): its flows' stamps differ.
        let twin = StampedFlow {
            backend_addr: [198, 18, 1, 12 + 128],
            ..f
        };
        assert_eq!(
            judge(tsecr, f.client_port, Some(&entry(&twin))),
            StampVerdict::Forged
        );
        // The id of another back-end: the MAC was made for this one.
        let other_id = tsecr ^ (1 << ID_SHIFT);
        let other = StampedFlow {
            backend_addr: [198, 18, 1, 13],
            ..f
        };
        assert_eq!(
            judge(other_id, f.client_port, Some(&entry(&other))),
            StampVerdict::Forged
        );
        // The stamp echoed on another connection of the same client.
        assert!(
            [1, 2, 3]
                .iter()
                .any(|d| judge(tsecr, f.client_port + d, Some(&entry(&f))) == StampVerdict::Forged)
        );
    }

    /// A stamp carried over to another flow passes as often as an 8-bit MAC lets it,
    /// one try in 256: over every other client port of one flow, a fixed key and flow
    /// (so the count is the same every run; a property test drawing two flows failed
    /// one run in about 250 by chance), between half and twice that.
    #[test]
    fn a_stamp_passes_for_another_flow_one_time_in_256() {
        let f = flow();
        let s = stamp(&KEY, &f);
        let passed = (0..=u16::MAX)
            .filter(|&p| p != f.client_port)
            .filter(|&p| {
                verify(
                    &KEY,
                    &StampedFlow {
                        client_port: p,
                        ..f
                    },
                    s,
                )
            })
            .count();
        assert!(
            (128..=512).contains(&passed),
            "{passed} of 65,535 other ports"
        );
    }

    proptest! {
        /// A stamp verifies for its own flow, and a flipped bit fails. (Another flow
        /// passing is a matter of chance, one in 256: counted, not drawn, below.)
        #[test]
        fn a_flipped_bit_fails(
            client_port: u16, backend_last in 0u8..=255, bit in 0u32..16,
        ) {
            let mut f = flow();
            f.client_port = client_port;
            f.backend_addr[3] = backend_last;
            let s = stamp(&KEY, &f);
            prop_assert!(verify(&KEY, &f, s));
            prop_assert!(!verify(&KEY, &f, s ^ (1 << bit)));
        }

        /// Consecutive TSvals of a connection stay monotonic once stamped (the client's
        /// PAWS test, RFC 7323 §5.3, compares them modulo 2^32), each less than the
        /// resolution ahead of the back-end's clock, never behind it, and the echo
        /// translated back is never earlier than what the back-end sent (its RTT
        /// samples are never overestimated).
        #[test]
        fn stamped_tsvals_are_monotonic_and_close(
            start: u32, steps in proptest::collection::vec(0u32..200_000, 1..50),
            ts_delta: u32, client_port: u16,
        ) {
            let s = stamp(&KEY, &StampedFlow { client_port, ..flow() });
            let mut tsval_b = start;
            let mut last = stamped_tsval(tsval_b.wrapping_add(ts_delta), s);
            for step in steps {
                tsval_b = tsval_b.wrapping_add(step);
                let translated = tsval_b.wrapping_add(ts_delta);
                let stamped = stamped_tsval(translated, s);
                prop_assert!(stamped.wrapping_sub(last) as i32 >= 0, "monotonic");
                let ahead = stamped.wrapping_sub(translated);
                prop_assert!(ahead < RESOLUTION, "within the resolution");
                prop_assert_eq!(stamped & STAMP_MASK, u32::from(s));
                // The back-end's ingress subtracts `ts_delta` from the echo.
                let echo_b = stamped.wrapping_sub(ts_delta);
                prop_assert!(echo_b.wrapping_sub(tsval_b) < RESOLUTION, "never earlier");
                last = stamped;
            }
        }
    }
}
