//! The SYN' as it leaves the front-end (docs/design.md, "Packet walk", step 4): one
//! layout, written by the protocol core for the handoffs it decides and by the XDP
//! program for those decided in the kernel ("Dispatch in the kernel"), so that a
//! back-end sees the same segment whichever path sent it.
//!
//! The options always take 40 bytes, in Linux's order, an option not agreed left as
//! NOPs, so every write is at a constant offset (the XDP program writes the headers in
//! place over the request segment's):
//!
//! ```text
//! MSS(4) or 4 NOPs | SACK-permitted(2) or NOP NOP | timestamps(10) or 10 NOPs
//!   | NOP window-scale(3) or 4 NOPs | handoff option(20)
//! ```
//!
//! IPv4: no options, DF, ID 0 (an atomic datagram, RFC 6864 §4.1), Not-ECT (a SYN is
//! never ECT, RFC 3168 §6.1.1), the client's TTL; both checksums complete. The TCP
//! checksum takes the payload's sum as an argument: the core sums the request it holds,
//! the XDP program recovers it from the request segment's own checksum
//! ([`payload_sum_from_checksum`]) instead of summing the payload again.

use crate::{
    handoff_option::HANDOFF_OPTION_LEN,
    layout::{
        ETH_ALEN, ETH_HLEN, ETH_P_IP, IP_CHECK, IP_DADDR, IP_DF, IP_SADDR, IPPROTO_TCP, IPV4_HLEN,
        IPV4_VERSION_IHL_NO_OPTIONS, TCP_ACK_SEQ, TCP_CHECK, TCP_DEST, TCP_DOFF, TCP_HLEN,
        TCP_OPTIONS, TCP_SEQ, TCP_SOURCE, TCP_WINDOW, TSOPT_TSECR, TSOPT_TSVAL,
        tcp_flag::{CWR, ECE, SYN},
    },
    translate::{ones_complement_add, tcp_ipv4_pseudo_header_sum},
};

/// The SYN''s options area: 40 bytes, the most TCP allows.
pub const SYN_PRIME_OPTIONS_LEN: usize = 40;
/// The SYN''s TCP header.
pub const SYN_PRIME_TCP_HLEN: usize = TCP_HLEN + SYN_PRIME_OPTIONS_LEN;
/// The SYN''s IPv4 and TCP headers, before its payload (the request, in a one-turn
/// handoff).
pub const SYN_PRIME_HEADERS_LEN: usize = IPV4_HLEN + SYN_PRIME_TCP_HLEN;
/// The headers with Ethernet's, as the XDP program writes them.
pub const SYN_PRIME_FRAME_HEADERS_LEN: usize = ETH_HLEN + SYN_PRIME_HEADERS_LEN;

/// Where the window scale option (after its NOP) lies in the SYN''s options area.
pub const SYN_PRIME_WINDOW_SCALE_AT: usize = 4 + 2 + 10;

/// The client's window shift as a SYN' of this layout announces it, read at its constant
/// offset, as a program with no instructions to spare for a walk of the options can:
/// `Some(Some(shift))`; `Some(None)` for four NOPs (the client offered no scaling); `None`
/// for anything else, a SYN' of another layout, whose shift is unknown.
#[inline(always)]
pub const fn syn_prime_window_shift(options: &[u8; SYN_PRIME_OPTIONS_LEN]) -> Option<Option<u8>> {
    const AT: usize = SYN_PRIME_WINDOW_SCALE_AT;
    match [
        options[AT],
        options[AT + 1],
        options[AT + 2],
        options[AT + 3],
    ] {
        [1, 3, 3, shift] => Some(Some(shift)),
        [1, 1, 1, 1] => Some(None),
        _ => None,
    }
}

/// What a SYN' says: the client's side of the handshake it completed with the
/// front-end, replayed to the back-end, and the handoff option that vouches for the
/// front-end's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynPrime {
    pub client_addr: [u8; 4],
    pub backend_addr: [u8; 4],
    pub client_port: u16,
    pub backend_port: u16,
    /// The client's ISN: the SYN''s sequence number.
    pub client_isn: u32,
    /// The window field: the client's SYN's, or, with the request aboard, the window
    /// the client announced with it (see the core's `start_handoff`).
    pub window: u16,
    /// The client's TTL, as the client's own segments carry it.
    pub ttl: u8,
    /// ECN was granted: the SYN' asks for it (ECE and CWR).
    pub ecn: bool,
    pub mss: Option<u16>,
    /// The client's window shift, if it offered window scaling.
    pub window_shift: Option<u8>,
    pub sack_permitted: bool,
    /// The client's TSval, if timestamps were agreed (TSecr is zero in a SYN).
    pub tsval: Option<u32>,
    /// The encoded handoff option (`HandoffOption::encode`).
    pub handoff: [u8; HANDOFF_OPTION_LEN],
}

/// Writes the SYN''s IPv4 and TCP headers over `h` (every byte), for a payload of
/// `payload_len` bytes whose one's-complement sum (of big-endian words, as they lie
/// after the headers) is `payload_sum`.
#[inline(always)]
pub fn write_syn_prime_headers(
    h: &mut [u8; SYN_PRIME_HEADERS_LEN],
    p: &SynPrime,
    payload_len: u16,
    payload_sum: u16,
) {
    const TCP: usize = IPV4_HLEN;
    const MSS: usize = TCP + TCP_OPTIONS;
    const SACK_PERMITTED: usize = MSS + 4;
    const TIMESTAMPS: usize = SACK_PERMITTED + 2;
    const WINDOW_SCALE: usize = TCP + TCP_OPTIONS + SYN_PRIME_WINDOW_SCALE_AT;
    const HANDOFF: usize = WINDOW_SCALE + 4;
    let total = (SYN_PRIME_HEADERS_LEN as u16).wrapping_add(payload_len);
    let total = total.to_be_bytes();
    #[rustfmt::skip]
    let ipv4_head: [u8; IP_SADDR] = [
        IPV4_VERSION_IHL_NO_OPTIONS, 0, total[0], total[1], 0, 0,
        (IP_DF >> 8) as u8, 0, p.ttl, IPPROTO_TCP, 0, 0,
    ];
    put(h, 0, &ipv4_head);
    put(h, IP_SADDR, &p.client_addr);
    put(h, IP_DADDR, &p.backend_addr);
    let ip_check = !sum_words(h, 0, IPV4_HLEN, 0);
    put(h, IP_CHECK, &ip_check.to_be_bytes());

    put(h, TCP + TCP_SOURCE, &p.client_port.to_be_bytes());
    put(h, TCP + TCP_DEST, &p.backend_port.to_be_bytes());
    put(h, TCP + TCP_SEQ, &p.client_isn.to_be_bytes());
    put(h, TCP + TCP_ACK_SEQ, &[0; 4]);
    let data_offset = ((SYN_PRIME_TCP_HLEN / 4) << 4) as u8;
    let flags = if p.ecn { SYN | ECE | CWR } else { SYN };
    put(h, TCP + TCP_DOFF, &[data_offset, flags]);
    put(h, TCP + TCP_WINDOW, &p.window.to_be_bytes());
    // Checksum (summed as zero) and urgent pointer.
    put(h, TCP + TCP_CHECK, &[0; 4]);
    match p.mss {
        Some(mss) => {
            let mss = mss.to_be_bytes();
            put(h, MSS, &[2, 4, mss[0], mss[1]]);
        }
        None => put(h, MSS, &[1; 4]),
    }
    put(
        h,
        SACK_PERMITTED,
        &if p.sack_permitted { [4, 2] } else { [1, 1] },
    );
    match p.tsval {
        Some(tsval) => {
            put(h, TIMESTAMPS, &[8, 10]);
            put(h, TIMESTAMPS + TSOPT_TSVAL, &tsval.to_be_bytes());
            put(h, TIMESTAMPS + TSOPT_TSECR, &[0; 4]);
        }
        None => put(h, TIMESTAMPS, &[1; 10]),
    }
    match p.window_shift {
        Some(shift) => put(h, WINDOW_SCALE, &[1, 3, 3, shift]),
        None => put(h, WINDOW_SCALE, &[1; 4]),
    }
    put(h, HANDOFF, &p.handoff);
    let tcp_len = (SYN_PRIME_TCP_HLEN as u16).wrapping_add(payload_len);
    let pseudo = tcp_ipv4_pseudo_header_sum(p.client_addr, p.backend_addr, tcp_len);
    let sum = ones_complement_add(
        ones_complement_add(pseudo, payload_sum),
        sum_words(h, TCP, SYN_PRIME_HEADERS_LEN, 0),
    );
    put(h, TCP + TCP_CHECK, &(!sum).to_be_bytes());
}

/// The SYN''s headers with an Ethernet header before them, from `our_mac` to
/// `backend_mac`: what the XDP program writes over the front of the request segment's
/// frame.
#[inline(always)]
pub fn write_syn_prime_frame_headers(
    f: &mut [u8; SYN_PRIME_FRAME_HEADERS_LEN],
    backend_mac: &[u8; ETH_ALEN],
    our_mac: &[u8; ETH_ALEN],
    p: &SynPrime,
    payload_len: u16,
    payload_sum: u16,
) {
    let mut i = 0;
    while i < ETH_ALEN {
        f[i] = backend_mac[i];
        f[ETH_ALEN + i] = our_mac[i];
        i += 1;
    }
    f[2 * ETH_ALEN] = ETH_P_IP[0];
    f[2 * ETH_ALEN + 1] = ETH_P_IP[1];
    let (_, headers) = f.split_at_mut(ETH_HLEN);
    if let Ok(headers) = <&mut [u8; SYN_PRIME_HEADERS_LEN]>::try_from(headers) {
        write_syn_prime_headers(headers, p, payload_len, payload_sum);
    }
}

/// The window a SYN' announces for the client: a SYN's window field is never scaled
/// (RFC 7323 §2.2), so `window_field`, from a segment after the SYN, is shifted by the
/// client's `shift` when scaling is in effect (at most 14, §2.3) and capped at what the
/// field holds. Exact below 64 KiB; above, less than the client's, which only slows the
/// back-end's first flight until the client's next ACK announces the rest.
#[inline(always)]
pub const fn window_in_syn(window_field: u16, shift: Option<u8>) -> u16 {
    let shift = match shift {
        Some(s) if s < 14 => s,
        Some(_) => 14,
        None => 0,
    };
    let bytes = (window_field as u32) << shift;
    if bytes > u16::MAX as u32 {
        u16::MAX
    } else {
        bytes as u16
    }
}

/// The one's-complement sum of a segment's payload, recovered from its complete TCP
/// checksum `check`, its pseudo-header sum `pseudo` and the sum of its TCP header's
/// words with the checksum field left out `header_sum`: the checksum is the complement
/// of the sum of the three, so the payload's is what remains. No loop over the payload.
/// A corrupted segment gives a wrong sum, and so a SYN' whose checksum fails at the
/// back-end, as the segment would have: nothing is laundered.
#[inline(always)]
pub const fn payload_sum_from_checksum(check: u16, pseudo: u16, header_sum: u16) -> u16 {
    // x - y in one's complement is x + !y.
    ones_complement_add(ones_complement_add(!check, !pseudo), !header_sum)
}

/// The one's-complement sum of `bytes` as big-endian words, an odd last byte padded
/// with zero (RFC 1071): the payload's, for the core, which holds the request.
pub fn payload_sum(bytes: &[u8]) -> u16 {
    let mut sum = 0u16;
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum = ones_complement_add(sum, u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum = ones_complement_add(sum, u16::from_be_bytes([*last, 0]));
    }
    sum
}

#[inline(always)]
fn put<const N: usize>(h: &mut [u8; SYN_PRIME_HEADERS_LEN], at: usize, bytes: &[u8; N]) {
    let mut i = 0;
    while i < N {
        if let Some(b) = h.get_mut(at + i) {
            *b = bytes[i];
        }
        i += 1;
    }
}

/// The one's-complement sum of the big-endian words of `h[start..end]` (even bounds),
/// starting from `sum`, with constant bounds for the verifier.
#[inline(always)]
fn sum_words(h: &[u8; SYN_PRIME_HEADERS_LEN], start: usize, end: usize, mut sum: u16) -> u16 {
    let mut i = start;
    while i + 1 < end {
        if let (Some(&hi), Some(&lo)) = (h.get(i), h.get(i + 1)) {
            sum = ones_complement_add(sum, u16::from_be_bytes([hi, lo]));
        }
        i += 2;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::tcp_checksum;

    fn example() -> SynPrime {
        SynPrime {
            client_addr: [198, 18, 0, 2],
            backend_addr: [198, 18, 1, 11],
            client_port: 40_000,
            backend_port: 80,
            client_isn: 0x1234_5678,
            window: 64_240,
            ttl: 63,
            ecn: true,
            mss: Some(1460),
            window_shift: Some(7),
            sack_permitted: true,
            tsval: Some(0xdead_beef),
            handoff: [
                254, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            ],
        }
    }

    fn whole(p: &SynPrime, payload: &[u8]) -> [u8; 200] {
        let mut h = [0u8; SYN_PRIME_HEADERS_LEN];
        write_syn_prime_headers(&mut h, p, payload.len() as u16, payload_sum(payload));
        let mut out = [0u8; 200];
        out[..SYN_PRIME_HEADERS_LEN].copy_from_slice(&h);
        out[SYN_PRIME_HEADERS_LEN..SYN_PRIME_HEADERS_LEN + payload.len()].copy_from_slice(payload);
        out
    }

    #[test]
    fn checksums_verify_over_the_whole_packet() {
        let payload = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let len = SYN_PRIME_HEADERS_LEN + payload.len();
        let out = whole(&example(), payload);
        // The IPv4 header sums to all ones.
        let mut ip = 0u16;
        for w in out[..IPV4_HLEN].chunks_exact(2) {
            ip = ones_complement_add(ip, u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(ip, 0xffff);
        let pseudo =
            tcp_ipv4_pseudo_header_sum([198, 18, 0, 2], [198, 18, 1, 11], (len - IPV4_HLEN) as u16);
        let mut tcp = pseudo;
        let mut padded = out;
        padded[len] = 0;
        for w in padded[IPV4_HLEN..len + (len & 1)].chunks_exact(2) {
            tcp = ones_complement_add(tcp, u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(tcp, 0xffff);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, len);
        assert_eq!(out[IPV4_HLEN + TCP_DOFF], 0xf0, "a 60-byte TCP header");
        assert_eq!(out[IPV4_HLEN + TCP_DOFF + 1], SYN | ECE | CWR);
    }

    #[test]
    fn options_not_agreed_are_nops() {
        let mut p = example();
        (p.mss, p.window_shift, p.sack_permitted, p.tsval) = (None, None, false, None);
        p.ecn = false;
        let out = whole(&p, b"x");
        let options = &out[IPV4_HLEN + TCP_HLEN..SYN_PRIME_HEADERS_LEN];
        assert!(options[..20].iter().all(|&b| b == 1));
        assert_eq!(&options[20..], &p.handoff);
        assert_eq!(out[IPV4_HLEN + TCP_DOFF + 1], SYN);
    }

    #[test]
    fn the_window_shift_is_read_back_at_its_constant_offset() {
        let options = |p: &SynPrime| -> [u8; SYN_PRIME_OPTIONS_LEN] {
            let out = whole(p, b"x");
            *out[IPV4_HLEN + TCP_HLEN..SYN_PRIME_HEADERS_LEN]
                .first_chunk()
                .unwrap()
        };
        let mut p = example();
        for shift in [Some(7), Some(0), None] {
            p.window_shift = shift;
            assert_eq!(syn_prime_window_shift(&options(&p)), Some(shift));
        }
        // Another layout (an MSS option where the shift should be) is not read.
        let mut other = options(&p);
        other[SYN_PRIME_WINDOW_SCALE_AT..SYN_PRIME_WINDOW_SCALE_AT + 4]
            .copy_from_slice(&[2, 4, 5, 0xb4]);
        assert_eq!(syn_prime_window_shift(&other), None);
    }

    #[test]
    fn the_payload_sum_comes_back_out_of_a_segment_checksum() {
        // A request segment's header (with options) and payload, its checksum complete.
        let header: [u8; 32] = [
            0x9c, 0x40, 0, 80, 0, 0, 0, 2, 0, 0, 0, 9, 0x80, 0x18, 1, 0, 0, 0, 0, 0, 1, 1, 8, 10,
            1, 2, 3, 4, 5, 6, 7, 8,
        ];
        for payload in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"odd", b"", &[0xff; 1400]] {
            let tcp_len = (header.len() + payload.len()) as u16;
            let pseudo = tcp_ipv4_pseudo_header_sum([1, 2, 3, 4], [5, 6, 7, 8], tcp_len);
            let header_sum = payload_sum(&header);
            let check = tcp_checksum(
                pseudo,
                ones_complement_add(header_sum, payload_sum(payload)),
            );
            let recovered = payload_sum_from_checksum(check, pseudo, header_sum);
            // Equal as one's-complement numbers (0 and 0xffff are both zero).
            let canon = |x: u16| if x == 0xffff { 0 } else { x };
            assert_eq!(canon(recovered), canon(payload_sum(payload)), "{payload:?}");
        }
    }
}
