//! Flows of clients without timestamps, found by asking the back-ends (docs/design.md,
//! "Clients without timestamps: probe and claim"; issue 20, item 4).
//!
//! A client that did not negotiate timestamps (RFC 7323 forbids a server to add them)
//! echoes no stamp ([`crate::stamp`]), so a front-end the routers moved its flow to
//! cannot tell from the segment which back-end holds the connection. It asks them:
//!
//! - **probe** (EtherType [`ETH_P_PROBE`], 0x88B5, IEEE 802 "local experimental 1"): the
//!   front-end's slow path sends the client's segment, its IPv4 packet unchanged, to
//!   each back-end it knows, with a [`Trailer`] after it naming the back-end asked
//!   (its address and port: the back-end's tc program knows neither its own address nor
//!   the VIP's segment's back-end side, and looks the flow up by them) and a zero stamp;
//! - **claim** ([`ETH_P_CLAIM`], 0x88B6, "local experimental 2"): the back-end whose
//!   flow table holds the flow turns the probe around to the prober's MAC, the stamp it
//!   gives the flow ([`crate::stamp::stamp`]) written into the trailer; the others drop
//!   it, counted (never to their stack, whose reset would end the connection);
//! - the front-end's XDP program judges the claim's stamp as it judges a TSecr's
//!   ([`judge_claim`], [`crate::stamp::judge_stamp`]), learns the flow and forwards the
//!   segment (trailer cut, EtherType restored) to that back-end.
//!
//! ```text
//!  Ethernet (type 0x88B5 / 0x88B6) | IPv4 packet, as the client sent it | trailer (8)
//!  trailer: back-end address (4) | back-end port (2) | stamp (2, 0 in a probe)
//! ```
//!
//! Everything in the trailer is in network order. The trailer sits right after the IPv4
//! packet, at its total length: a frame's padding (a short frame padded to Ethernet's
//! 60 bytes) comes after it and is cut with it.
//!
//! Only IPv4 packets without options are probed (the front-end forwards only those).

use crate::{
    layout::{
        ETH_ALEN, ETH_DEST, ETH_HLEN, ETH_PROTO, ETH_SOURCE, EthIpv4, IPPROTO_TCP, IPV4_HLEN,
        IPV4_VERSION_IHL_NO_OPTIONS, TCP_HLEN, ip_protocol, ip_tot_len, ip_version_ihl,
        is_fragment,
    },
    siphash::SipKey,
    stamp::{self, StampVerdict, StampedBackend, StampedFlow},
};

/// The probe's EtherType: IEEE 802 local experimental 1 (0x88B5), as its bytes.
pub const ETH_P_PROBE: [u8; 2] = [0x88, 0xb5];
/// The claim's EtherType: IEEE 802 local experimental 2 (0x88B6), as its bytes.
pub const ETH_P_CLAIM: [u8; 2] = [0x88, 0xb6];
/// The trailer's length.
pub const TRAILER_LEN: usize = 8;
/// Where the stamp sits in the trailer.
pub const TRAILER_STAMP: usize = 6;
/// The longest IPv4 packet a probe carries: what the slow path reads and the lab's
/// links carry (1500), with room for the trailer on a link of Ethernet's usual MTU
/// left to the sender (a longer segment is not probed).
pub const MAX_PROBED_PACKET: usize = 1500 - TRAILER_LEN;

/// The trailer of a probe or a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The back-end asked (a probe) or answering (a claim), as on the wire.
    pub backend_addr: [u8; 4],
    /// Its port, host order.
    pub backend_port: u16,
    /// 0 in a probe; the flow's stamp in a claim.
    pub stamp: u16,
}

impl Trailer {
    #[inline(always)]
    pub const fn to_bytes(&self) -> [u8; TRAILER_LEN] {
        let a = self.backend_addr;
        let p = self.backend_port.to_be_bytes();
        let s = self.stamp.to_be_bytes();
        [a[0], a[1], a[2], a[3], p[0], p[1], s[0], s[1]]
    }

    #[inline(always)]
    pub const fn from_bytes(b: &[u8; TRAILER_LEN]) -> Self {
        Self {
            backend_addr: [b[0], b[1], b[2], b[3]],
            backend_port: u16::from_be_bytes([b[4], b[5]]),
            stamp: u16::from_be_bytes([b[6], b[7]]),
        }
    }
}

/// Why a probe or claim frame is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not IPv4 without options inside (version, header length).
    NotIpv4,
    /// Not TCP, or a fragment.
    NotTcp,
    /// A total length shorter than the IPv4 and TCP headers.
    TooShort,
    /// The frame ends before the trailer does.
    Truncated,
}

/// Where the trailer of a probe or claim frame `len` bytes long starts, given its first
/// [`crate::layout::ETH_IPV4_LEN`] bytes (the EtherType is the caller's to check): right after the
/// IPv4 packet.
#[inline(always)]
pub fn trailer_offset(head: &EthIpv4, len: usize) -> Result<usize, FrameError> {
    if ip_version_ihl(head) != IPV4_VERSION_IHL_NO_OPTIONS {
        return Err(FrameError::NotIpv4);
    }
    if ip_protocol(head) != IPPROTO_TCP || is_fragment(head) {
        return Err(FrameError::NotTcp);
    }
    let total = usize::from(ip_tot_len(head));
    if total < IPV4_HLEN + TCP_HLEN {
        return Err(FrameError::TooShort);
    }
    let at = ETH_HLEN + total;
    if at + TRAILER_LEN > len {
        return Err(FrameError::Truncated);
    }
    Ok(at)
}

/// The probe frame asking `backend` about `packet` (an IPv4 packet as the client sent
/// it, cut at its total length: a link's padding after it would hide the trailer),
/// from `own_mac` to `backend_mac`, written into `out`; its length, or `None` when
/// `out` is too short or the packet shorter than its total length.
pub fn write_probe(
    out: &mut [u8],
    own_mac: [u8; ETH_ALEN],
    backend_mac: [u8; ETH_ALEN],
    backend: ([u8; 4], u16),
    packet: &[u8],
) -> Option<usize> {
    let total = u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]);
    let packet = packet.get(..usize::from(total))?;
    let len = ETH_HLEN + packet.len() + TRAILER_LEN;
    let frame = out.get_mut(..len)?;
    frame[ETH_DEST..ETH_DEST + ETH_ALEN].copy_from_slice(&backend_mac);
    frame[ETH_SOURCE..ETH_SOURCE + ETH_ALEN].copy_from_slice(&own_mac);
    frame[ETH_PROTO..ETH_HLEN].copy_from_slice(&ETH_P_PROBE);
    frame[ETH_HLEN..ETH_HLEN + packet.len()].copy_from_slice(packet);
    let trailer = Trailer {
        backend_addr: backend.0,
        backend_port: backend.1,
        stamp: 0,
    };
    frame[ETH_HLEN + packet.len()..].copy_from_slice(&trailer.to_bytes());
    Some(len)
}

/// The Ethernet header of the claim answering a probe whose header is `probe`: back to
/// the prober (the probe's source, so that in a tier only that front-end hears it),
/// from the address the probe came to (the back-end's own).
#[inline(always)]
pub const fn claim_ethernet(probe: &[u8; ETH_HLEN]) -> [u8; ETH_HLEN] {
    let p = probe;
    [
        p[6],
        p[7],
        p[8],
        p[9],
        p[10],
        p[11],
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        ETH_P_CLAIM[0],
        ETH_P_CLAIM[1],
    ]
}

/// The stamp a back-end claims a flow with: the one its egress would write into the
/// flow's TSvals, for the client's 4-tuple as the front-end sees it (`client`,
/// `service`: addresses as on the wire, ports in host order) and the back-end the
/// trailer names (whose flow table holds the flow under that address and port).
#[inline(always)]
pub fn claim_stamp(
    key: &SipKey,
    client: ([u8; 4], u16),
    service: ([u8; 4], u16),
    trailer: &Trailer,
) -> u16 {
    stamp::stamp(
        key,
        &StampedFlow {
            client_addr: client.0,
            client_port: client.1,
            vip_addr: service.0,
            vip_port: service.1,
            backend_addr: trailer.backend_addr,
            backend_port: trailer.backend_port,
        },
    )
}

/// The front-end's judgement of a claim for the flow `client` → `service`, given its
/// stamp table's entry for the id the claim's stamp names (`backend`): the same as a
/// TSecr's ([`stamp::judge_stamp`]), except that a claim without a stamp's mark is
/// forged (a claim is never anything else). A claim is forwarded to the back-end the
/// table names, never to the trailer's address.
#[inline(always)]
pub fn judge_claim(
    key: &SipKey,
    trailer: &Trailer,
    client: ([u8; 4], u16),
    service: ([u8; 4], u16),
    backend: Option<&StampedBackend>,
) -> StampVerdict {
    match stamp::judge_stamp(key, u32::from(trailer.stamp), client, service, backend) {
        StampVerdict::NotAStamp => StampVerdict::Forged,
        verdict => verdict,
    }
}

/// The probes' rate limit: a token bucket of one second's worth, counted in
/// nanoseconds of credit so that it needs no division per probe. Random ACKs to the VIP
/// cannot make the LAN carry more than `rate` probe rounds a second (each one frame per
/// back-end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeBudget {
    /// The credit, in nanoseconds, at `at_ns`.
    credit_ns: u64,
    at_ns: u64,
    /// What a probe costs: 10^9 / rate; 0 when probing is off.
    cost_ns: u64,
}

impl ProbeBudget {
    const BURST_NS: u64 = 1_000_000_000;

    /// `rate` probes a second, a second's worth at once; 0 turns probing off.
    pub const fn new(rate: u32) -> Self {
        let cost_ns = if rate == 0 {
            0
        } else {
            Self::BURST_NS / rate as u64
        };
        Self {
            credit_ns: Self::BURST_NS,
            at_ns: 0,
            cost_ns,
        }
    }

    /// Whether probing is on at all.
    pub const fn enabled(&self) -> bool {
        self.cost_ns != 0
    }

    /// Takes one probe's worth at `now_ns` (a monotonic clock); `false` when probing is
    /// off or over its rate.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if self.cost_ns == 0 {
            return false;
        }
        let elapsed = now_ns.saturating_sub(self.at_ns);
        self.at_ns = self.at_ns.max(now_ns);
        self.credit_ns = self
            .credit_ns
            .saturating_add(elapsed)
            .min(Self::BURST_NS.max(self.cost_ns));
        if self.credit_ns < self.cost_ns {
            return false;
        }
        self.credit_ns -= self.cost_ns;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ETH_IPV4_LEN;

    const KEY: SipKey = SipKey {
        k0: 0x0706_0504_0302_0100,
        k1: 0x0f0e_0d0c_0b0a_0908,
    };
    const CLIENT: ([u8; 4], u16) = ([198, 18, 0, 2], 40_000);
    const SERVICE: ([u8; 4], u16) = ([198, 18, 2, 1], 80);
    const BACKEND: ([u8; 4], u16) = ([198, 18, 1, 11], 8080);

    fn table_entry() -> StampedBackend {
        StampedBackend {
            addr_be: u32::from_ne_bytes(BACKEND.0),
            port_be: u16::from_ne_bytes(BACKEND.1.to_be_bytes()),
            mac: [2, 0xba, 0x70, 0x12, 1, 11],
            _pad: [0; 4],
            flags: StampedBackend::USABLE,
        }
    }

    /// An Ethernet frame holding a 40-byte IPv4 TCP packet (no options) and a trailer.
    fn probe() -> [u8; ETH_HLEN + 40 + TRAILER_LEN] {
        let mut packet = [0u8; 40];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&40u16.to_be_bytes());
        packet[9] = IPPROTO_TCP;
        let mut frame = [0u8; ETH_HLEN + 40 + TRAILER_LEN];
        let len = write_probe(
            &mut frame,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            BACKEND,
            &packet,
        )
        .unwrap();
        assert_eq!(len, frame.len());
        frame
    }

    fn head(frame: &[u8]) -> EthIpv4 {
        frame[..ETH_IPV4_LEN].try_into().unwrap()
    }

    #[test]
    fn a_probe_round_trips_and_its_trailer_is_found() {
        let frame = probe();
        assert_eq!(frame[12..14], ETH_P_PROBE);
        let at = trailer_offset(&head(&frame), frame.len()).unwrap();
        assert_eq!(at, ETH_HLEN + 40);
        let t = Trailer::from_bytes(frame[at..].try_into().unwrap());
        assert_eq!(
            (t.backend_addr, t.backend_port, t.stamp),
            (BACKEND.0, BACKEND.1, 0)
        );
        // Padding after the trailer is allowed and ignored.
        assert_eq!(trailer_offset(&head(&frame), frame.len() + 6), Ok(at));
        // A link's padding after the packet is not carried into the probe.
        let mut padded = [0u8; 46];
        padded[..40].copy_from_slice(&frame[ETH_HLEN..ETH_HLEN + 40]);
        let mut again = [0u8; 100];
        let len = write_probe(&mut again, [0; 6], [0; 6], BACKEND, &padded).unwrap();
        assert_eq!(len, frame.len());
        assert_eq!(again[ETH_HLEN..len], frame[ETH_HLEN..]);
        assert_eq!(
            write_probe(&mut again, [0; 6], [0; 6], BACKEND, &padded[..39]),
            None
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        let frame = probe();
        assert_eq!(
            trailer_offset(&head(&frame), frame.len() - 1),
            Err(FrameError::Truncated)
        );
        let mut h = head(&frame);
        h[ETH_HLEN] = 0x46;
        assert_eq!(trailer_offset(&h, 200), Err(FrameError::NotIpv4));
        let mut h = head(&frame);
        h[ETH_HLEN + 9] = 17;
        assert_eq!(trailer_offset(&h, 200), Err(FrameError::NotTcp));
        let mut h = head(&frame);
        h[ETH_HLEN + 6] = 0x20;
        assert_eq!(trailer_offset(&h, 200), Err(FrameError::NotTcp));
        let mut h = head(&frame);
        h[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(trailer_offset(&h, 200), Err(FrameError::TooShort));
    }

    #[test]
    fn a_claim_goes_back_to_the_prober_from_the_backend() {
        let frame = probe();
        let eth = claim_ethernet(frame[..ETH_HLEN].try_into().unwrap());
        assert_eq!(eth[..6], [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth[6..12], [2, 0, 0, 0, 0, 2]);
        assert_eq!(eth[12..], ETH_P_CLAIM);
    }

    #[test]
    fn a_claim_verifies_only_for_its_flow_and_backend() {
        let mut t = Trailer {
            backend_addr: BACKEND.0,
            backend_port: BACKEND.1,
            stamp: 0,
        };
        t.stamp = claim_stamp(&KEY, CLIENT, SERVICE, &t);
        let entry = table_entry();
        assert_eq!(
            judge_claim(&KEY, &t, CLIENT, SERVICE, Some(&entry)),
            StampVerdict::Forward
        );
        // The stamp is the one the egress writes into the flow's TSvals.
        let tsecr = u32::from(t.stamp);
        assert_eq!(
            stamp::judge_stamp(&KEY, tsecr, CLIENT, SERVICE, Some(&entry)),
            StampVerdict::Forward
        );
        // Another client port, another key, a flipped bit, no stamp at all: forged.
        let other = (CLIENT.0, CLIENT.1 + 1);
        assert_eq!(
            judge_claim(&KEY, &t, other, SERVICE, Some(&entry)),
            StampVerdict::Forged
        );
        let key2 = SipKey { k0: 1, k1: 2 };
        assert_eq!(
            judge_claim(&key2, &t, CLIENT, SERVICE, Some(&entry)),
            StampVerdict::Forged
        );
        let flipped = Trailer {
            stamp: t.stamp ^ 1,
            ..t
        };
        assert_eq!(
            judge_claim(&KEY, &flipped, CLIENT, SERVICE, Some(&entry)),
            StampVerdict::Forged
        );
        let unstamped = Trailer { stamp: 0, ..t };
        assert_eq!(
            judge_claim(&KEY, &unstamped, CLIENT, SERVICE, Some(&entry)),
            StampVerdict::Forged
        );
        assert_eq!(
            judge_claim(&KEY, &t, CLIENT, SERVICE, None),
            StampVerdict::UnknownBackend
        );
    }

    #[test]
    fn the_budget_allows_its_rate_and_no_more() {
        let mut budget = ProbeBudget::new(1000);
        let start = 5_000_000_000;
        // A second's worth at once, then one per millisecond.
        let burst = (0..2000).filter(|_| budget.take(start)).count();
        assert_eq!(burst, 1000);
        assert!(!budget.take(start + 999_999));
        assert!(budget.take(start + 1_000_000));
        assert!(!budget.take(start + 1_000_000));
        // Over ten seconds at most the rate, whatever is asked.
        let mut taken = 0;
        for i in 0..100_000u64 {
            if budget.take(start + 1_000_000 + i * 100_000) {
                taken += 1;
            }
        }
        assert!((9_990..=10_000).contains(&taken), "{taken}");
        let mut off = ProbeBudget::new(0);
        assert!(!off.enabled());
        assert!(!off.take(start));
    }
}
