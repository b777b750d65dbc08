//! The IPv6 path (`frontend_forward_v6`, reached from `frontend_forward` by tail call;
//! docs/design.md, "IPv6: the plan"): a known IPv6 flow's segments rewritten to its
//! back-end, each checked against a frame built with the back-end's address and its
//! checksum summed whole here; every drop of the extension-header walk and its counter;
//! what goes up untouched (unknown flows, SYNs, neighbour discovery, echo); the client's
//! FIN and RST told through the IPv6 ring; and "packet too big" to the VIP6 forwarded to
//! the flow's back-end or dropped.

use aya::maps::ProgramArray;
use baton_common::{
    frontend::{FlowNoticeV6, FrontendFlowKeyV6, FrontendFlowV6, FrontendServiceV6},
    ipv6::{ipv6_pseudo_header_sum, next_header},
};

use super::*;

const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VIP6: [u8; 16] = baton::lab::VIP6.octets();
const BACKEND6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11];
/// The frame's IPv6 header starts at [`IP`], its TCP header (no extension headers) here.
const TCP6: usize = 54;

/// Loads `frontend_forward_v6` and puts it in `frontend_forward`'s program array, as the
/// daemon does (`fastpath::v6::fill_programs`).
pub(super) fn load_ipv6_program(ebpf: &mut Ebpf) {
    let prog: &mut Xdp = ebpf
        .program_mut("frontend_forward_v6")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load()
        .unwrap_or_else(|e| panic!("verifier refused frontend_forward_v6: {e:?}"));
    let fd = prog.fd().unwrap().try_clone().unwrap();
    let mut slots: ProgramArray<_> =
        ProgramArray::try_from(ebpf.map_mut("FRONTEND_PROGRAMS").unwrap()).unwrap();
    slots
        .set(baton_common::frontend::frontend_program::IPV6, &fd, 0)
        .unwrap();
}

/// VIP6:80 and VIP6 itself, as the daemon writes them (`fastpath::v6::service_keys`).
pub(super) fn add_services(p: &mut Program) {
    let mut services: HashMap<_, FrontendServiceV6, u32> =
        HashMap::try_from(p.ebpf.map_mut("FRONTEND_SERVICES_V6").unwrap()).unwrap();
    for port in [SERVICE_PORT, 0] {
        let key = FrontendServiceV6 {
            vip_addr: VIP6,
            vip_port_be: u16::from_ne_bytes(port.to_be_bytes()),
            _pad: 0,
        };
        services.insert(key, 1, 0).unwrap();
    }
}

impl Program {
    fn set_flow6(&mut self, key: FrontendFlowKeyV6, value: FrontendFlowV6) {
        let mut flows: HashMap<_, FrontendFlowKeyV6, FrontendFlowV6> =
            HashMap::try_from(self.ebpf.map_mut("FRONTEND_FLOWS_V6").unwrap()).unwrap();
        flows.insert(key, value, 0).unwrap();
    }

    fn flow6(&self, key: FrontendFlowKeyV6) -> FrontendFlowV6 {
        let flows: HashMap<_, FrontendFlowKeyV6, FrontendFlowV6> =
            HashMap::try_from(self.ebpf.map("FRONTEND_FLOWS_V6").unwrap()).unwrap();
        flows.get(&key, 0).expect("the flow is in the table")
    }

    /// The IPv6 notices written since the last call.
    fn notices6(&mut self) -> Vec<FlowNoticeV6> {
        let mut ring =
            RingBuf::try_from(self.ebpf.map_mut("FRONTEND_NOTICES_V6").unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<FlowNoticeV6>());
            // SAFETY: the length is checked; `FlowNoticeV6` is plain integers and bytes.
            out.push(unsafe { item.as_ptr().cast::<FlowNoticeV6>().read_unaligned() });
        }
        out
    }
}

fn key6(client_port: u16) -> FrontendFlowKeyV6 {
    FrontendFlowKeyV6 {
        client_addr: CLIENT6,
        vip_addr: VIP6,
        client_port_be: u16::from_ne_bytes(client_port.to_be_bytes()),
        vip_port_be: u16::from_ne_bytes(SERVICE_PORT.to_be_bytes()),
    }
}

fn entry6(close_state: u32) -> FrontendFlowV6 {
    FrontendFlowV6 {
        backend_addr: BACKEND6,
        backend_port_be: u16::from_ne_bytes(BACKEND_PORT.to_be_bytes()),
        backend_mac: BE_MAC,
        client_isn: CLIENT_ISN,
        close_state,
        isn_f: ISN_F,
        client_next: CLIENT_NEXT,
        last_seen_ns: 0,
    }
}

/// An IPv6 frame: Ethernet, the fixed header, `extensions` (raw, the first's Next Header
/// value `first`), then `upper` (protocol `protocol`) whose checksum field at
/// `check_at` is made right over the pseudo-header, summed whole.
#[derive(Clone)]
struct Frame6 {
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    first: u8,
    extensions: Vec<u8>,
    protocol: u8,
    upper: Vec<u8>,
    check_at: Option<usize>,
}

impl Frame6 {
    fn bytes(&self) -> Vec<u8> {
        let mut upper = self.upper.clone();
        if let Some(at) = self.check_at {
            upper[at..at + 2].copy_from_slice(&[0, 0]);
            let pseudo =
                ipv6_pseudo_header_sum(&self.src, &self.dst, upper.len() as u32, self.protocol);
            let check = !ones_complement_add(pseudo, ones_complement_sum(&upper));
            upper[at..at + 2].copy_from_slice(&check.to_be_bytes());
        }
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&ROUTER_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        let payload_len = (self.extensions.len() + upper.len()) as u16;
        f.extend_from_slice(&payload_len.to_be_bytes());
        f.push(if self.extensions.is_empty() {
            self.protocol
        } else {
            self.first
        });
        f.push(64);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.extensions);
        f.extend_from_slice(&upper);
        f
    }
}

/// A client's TCP segment to VIP6:80 (timestamps, as Linux sends them).
fn client6(seq: u32, flags: u8, payload: &[u8]) -> Frame6 {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    tcp.extend_from_slice(&SERVICE_PORT.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ISN_F.wrapping_add(5_001).to_be_bytes());
    tcp.push(8 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&502u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(&timestamps(77, 5_555));
    tcp.extend_from_slice(payload);
    Frame6 {
        dst_mac: FE_MAC,
        src: CLIENT6,
        dst: VIP6,
        first: next_header::TCP,
        extensions: Vec::new(),
        protocol: next_header::TCP,
        upper: tcp,
        check_at: Some(16),
    }
}

/// `frame` as the program must have rewritten it: MACs, destination address and port,
/// the TCP checksum summed whole here over the new pseudo-header.
fn rewritten6(frame: &Frame6) -> Vec<u8> {
    let mut want = frame.clone();
    want.dst_mac = BE_MAC;
    want.dst = BACKEND6;
    want.upper[2..4].copy_from_slice(&BACKEND_PORT.to_be_bytes());
    let mut bytes = want.bytes();
    bytes[6..12].copy_from_slice(&FE_MAC);
    bytes
}

/// Whether the TCP (or ICMPv6, `protocol`) checksum of an IPv6 frame without extension
/// headers verifies, summed whole.
fn checksum6_holds(frame: &[u8], protocol: u8) -> bool {
    let src: [u8; 16] = frame[IP + 8..IP + 24].try_into().unwrap();
    let dst: [u8; 16] = frame[IP + 24..IP + 40].try_into().unwrap();
    let upper = &frame[TCP6..];
    let pseudo = ipv6_pseudo_header_sum(&src, &dst, upper.len() as u32, protocol);
    ones_complement_add(pseudo, ones_complement_sum(upper)) == 0xffff
}

#[test]
fn an_ipv6_flows_segments_are_rewritten_to_its_backend() {
    privileged("IPv6 forwarding", || {
        let mut p = Program::load();
        p.set_flow6(key6(CLIENT_PORT), entry6(0));
        let before = clock(libc::CLOCK_MONOTONIC_COARSE);
        // Data (complete checksum, updated incrementally), crossing 2^32.
        let request = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        let data = client6(CLIENT_NEXT, ACK | PSH, request);
        let out = p.expect(&data.bytes(), XDP_TX, &[("forwarded", 1)]);
        let after = clock(libc::CLOCK_MONOTONIC_COARSE);
        assert_eq!(out, rewritten6(&data));
        assert!(checksum6_holds(&out, next_header::TCP));
        let flow = p.flow6(key6(CLIENT_PORT));
        let advanced = CLIENT_NEXT.wrapping_add(request.len() as u32);
        assert_eq!(flow.client_next, advanced);
        assert!((before..=after).contains(&flow.last_seen_ns));
        assert_eq!(
            FrontendFlowV6 {
                client_next: CLIENT_NEXT,
                last_seen_ns: 0,
                ..flow
            },
            entry6(0),
            "only client_next and last_seen_ns are the program's to write"
        );
        // A header-only ACK (summed whole), and the same with the partial sum an
        // offloading sender leaves: both leave complete and right.
        let ack = client6(advanced, ACK, b"");
        let out = p.expect(&ack.bytes(), XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten6(&ack));
        let mut partial = ack.bytes();
        let pseudo = ipv6_pseudo_header_sum(&CLIENT6, &VIP6, 32, next_header::TCP);
        partial[TCP6 + 16..TCP6 + 18].copy_from_slice(&pseudo.to_be_bytes());
        let out = p.expect(&partial, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten6(&ack));
        // A payload with the partial sum goes up (counted towards client_next); a
        // header-only segment with a wrong checksum goes up, client_next untouched.
        let mut partial = client6(advanced, ACK | PSH, b"0123456789").bytes();
        let pseudo = ipv6_pseudo_header_sum(&CLIENT6, &VIP6, 42, next_header::TCP);
        partial[TCP6 + 16..TCP6 + 18].copy_from_slice(&pseudo.to_be_bytes());
        p.expect_passed(&partial, &[("pass_partial_checksum", 1)]);
        let next = advanced.wrapping_add(10);
        assert_eq!(p.flow6(key6(CLIENT_PORT)).client_next, next);
        let mut bad = client6(next, FIN | ACK, b"").bytes();
        bad[TCP6 + 16] ^= 0x01;
        p.expect_passed(&bad, &[("pass_bad_checksum", 1)]);
        assert_eq!(p.flow6(key6(CLIENT_PORT)).client_next, next);
        // A corrupted payload stays exactly as wrong.
        let good = client6(next, ACK, b"abcdefghij");
        let mut corrupt = good.bytes();
        corrupt[TCP6 + 32 + 3] ^= 0x40;
        let out = p.expect(&corrupt, XDP_TX, &[("forwarded", 1)]);
        assert!(!checksum6_holds(&out, next_header::TCP), "laundered");
        let mut repaired = out.clone();
        repaired[TCP6 + 32 + 3] ^= 0x40;
        assert_eq!(repaired, rewritten6(&good));
        // Ethernet padding after the packet is not the segment's.
        let mut padded = client6(next.wrapping_add(10), ACK, b"").bytes();
        padded.extend_from_slice(&[0; 6]);
        let out = p.expect(&padded, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(
            &out[..out.len() - 6],
            rewritten6(&client6(next.wrapping_add(10), ACK, b""))
        );
        // While the flow awaits its back-end's answer, a segment acknowledging none goes
        // up, held, as for IPv4 (the same decision).
        p.set_flow6(key6(CLIENT_PORT), entry6(FrontendFlow::AWAITING_ANSWER));
        let mut early = client6(CLIENT_NEXT, ACK, b"");
        early.upper[8..12].copy_from_slice(&ISN_F.wrapping_add(1).to_be_bytes());
        p.expect_passed(&early.bytes(), &[("pass_awaiting_answer", 1)]);
        assert_eq!(p.notices6(), [], "plain segments are told to nobody");
        assert_eq!(p.notices(), [], "nothing in the IPv4 ring");
    });
}

#[test]
fn ipv6_fins_and_rsts_are_told_through_the_ipv6_ring() {
    privileged("IPv6 FIN and RST", || {
        let mut p = Program::load();
        p.set_flow6(key6(CLIENT_PORT), entry6(0));
        // A FIN beyond the expected number: forwarded, not acted on.
        let far = client6(CLIENT_NEXT.wrapping_add(100), FIN | ACK, b"");
        p.expect(&far.bytes(), XDP_TX, &[("forwarded_fin_ignored", 1)]);
        assert_eq!(p.notices6(), []);
        // At the expected number, after data: forwarded and told.
        let fin = client6(CLIENT_NEXT, FIN | ACK, b"bye");
        let out = p.expect(&fin.bytes(), XDP_TX, &[("forwarded_fin", 1)]);
        assert_eq!(out, rewritten6(&fin));
        let told = FlowNoticeV6 {
            key: key6(CLIENT_PORT),
            what: FlowNotice::CLIENT_FIN,
            client_isn: CLIENT_ISN,
        };
        assert_eq!(p.notices6(), [told]);
        assert_eq!(p.notices(), [], "nothing in the IPv4 ring");
        let flow = p.flow6(key6(CLIENT_PORT));
        assert_eq!(flow.client_next, CLIENT_NEXT.wrapping_add(4));
        assert_eq!(flow.close_state, FrontendFlow::CLIENT_FIN);
        // A RST at exactly the expected number: told; one beside it: not.
        let next = flow.client_next;
        let beside = client6(next.wrapping_add(1), RST | ACK, b"");
        p.expect(&beside.bytes(), XDP_TX, &[("forwarded_rst_ignored", 1)]);
        let rst = client6(next, RST | ACK, b"");
        p.expect(&rst.bytes(), XDP_TX, &[("forwarded_rst", 1)]);
        assert_eq!(
            p.notices6(),
            [FlowNoticeV6 {
                what: FlowNotice::CLIENT_RST,
                ..told
            }]
        );
    });
}

/// An extension header of `kind` (8 bytes, generic layout) followed by `next`.
fn extension(kind_next: u8, routing_segments_left: u8) -> Vec<u8> {
    vec![kind_next, 0, 0, routing_segments_left, 0, 0, 0, 0]
}

#[test]
fn ipv6_extension_headers_to_the_vip_are_dropped_or_passed_and_counted() {
    privileged("IPv6 extension headers", || {
        let mut p = Program::load();
        p.set_flow6(key6(CLIENT_PORT), entry6(0));
        let data = client6(CLIENT_NEXT, ACK, b"0123456789");
        let with = |first: u8, extensions: Vec<u8>| Frame6 {
            first,
            extensions,
            ..data.clone()
        };
        let tcp = next_header::TCP;
        let cases = [
            // A fragment header (here a first fragment, whole).
            (
                with(next_header::FRAGMENT, vec![tcp, 0, 0, 1, 0, 0, 0, 7]),
                "drop_ipv6_fragment",
            ),
            // Behind hop-by-hop options: still a fragment.
            (
                with(next_header::HOP_BY_HOP, {
                    let mut e = extension(next_header::FRAGMENT, 0);
                    e.extend_from_slice(&[tcp, 0, 0, 0, 0, 0, 0, 7]);
                    e
                }),
                "drop_ipv6_fragment",
            ),
            (with(next_header::AH, extension(tcp, 0)), "drop_ipv6_ipsec"),
            (with(next_header::ESP, extension(tcp, 0)), "drop_ipv6_ipsec"),
            (
                with(next_header::ROUTING, extension(tcp, 1)),
                "drop_ipv6_routing",
            ),
            (with(135, extension(tcp, 0)), "drop_ipv6_extension"),
            (
                with(next_header::NO_NEXT_HEADER, Vec::new()),
                "drop_ipv6_extension",
            ),
            // Hop-by-hop after destination options.
            (
                with(next_header::DESTINATION_OPTIONS, {
                    let mut e = extension(next_header::HOP_BY_HOP, 0);
                    e.extend_from_slice(&extension(tcp, 0));
                    e
                }),
                "drop_ipv6_extension",
            ),
            // Five destination options headers.
            (
                with(next_header::DESTINATION_OPTIONS, {
                    let mut e = Vec::new();
                    for i in 0..5 {
                        e.extend_from_slice(&extension(
                            if i < 4 {
                                next_header::DESTINATION_OPTIONS
                            } else {
                                tcp
                            },
                            0,
                        ));
                    }
                    e
                }),
                "drop_ipv6_too_many_extensions",
            ),
        ];
        for (frame, counter) in &cases {
            let mut frame = frame.clone();
            if frame.first == next_header::NO_NEXT_HEADER {
                // Nothing follows: the whole payload is no upper layer.
                frame.extensions = vec![0; 8];
            }
            p.expect(&frame.bytes(), XDP_DROP, &[(counter, 1)]);
            // To another address: not ours, uncounted.
            let mut elsewhere = frame.clone();
            elsewhere.dst[15] ^= 0x40;
            p.expect_passed(&elsewhere.bytes(), &[]);
        }
        // Crossed extension headers before TCP (hop-by-hop, a routing header with no
        // segments left): up, as IPv4 options.
        for first in [next_header::HOP_BY_HOP, next_header::ROUTING] {
            p.expect_passed(
                &with(first, extension(tcp, 0)).bytes(),
                &[("pass_unusual_ip", 1)],
            );
        }
        // A payload length past the frame, and a frame cut inside the TCP header.
        let mut long = data.bytes();
        long[IP + 4..IP + 6].copy_from_slice(&200u16.to_be_bytes());
        p.expect_passed(&long, &[("pass_malformed", 1)]);
        let bytes = data.bytes();
        let mut short = bytes[..TCP6 + 10].to_vec();
        short[IP + 4..IP + 6].copy_from_slice(&10u16.to_be_bytes());
        p.expect_passed(&short, &[("pass_malformed", 1)]);
        // A data offset past the payload length.
        let mut offset = bytes.clone();
        offset[TCP6 + 12] = 0xf0;
        p.expect_passed(&offset, &[("pass_malformed", 1)]);
        assert_eq!(p.flow6(key6(CLIENT_PORT)).client_next, CLIENT_NEXT);
        assert_eq!(p.flow6(key6(CLIENT_PORT)).last_seen_ns, 0);
    });
}

/// An ICMPv6 message of `kind` to VIP6 (from the client), with `body` after the type,
/// code and checksum.
fn icmpv6(kind: u8, code: u8, body: &[u8]) -> Frame6 {
    let mut upper = vec![kind, code, 0, 0];
    upper.extend_from_slice(body);
    Frame6 {
        dst_mac: FE_MAC,
        src: CLIENT6,
        dst: VIP6,
        first: next_header::ICMPV6,
        extensions: Vec::new(),
        protocol: next_header::ICMPV6,
        upper,
        check_at: Some(2),
    }
}

#[test]
fn ipv6_unknown_flows_syns_neighbour_discovery_and_echo_go_up() {
    privileged("IPv6 up", || {
        let mut p = Program::load();
        p.expect_passed(&client6(5, ACK, b"").bytes(), &[("pass_no_flow", 1)]);
        p.expect_passed(
            &client6(5, ACK | PSH, b"GET /").bytes(),
            &[("pass_no_flow", 1)],
        );
        p.expect_passed(&client6(5, FIN | ACK, b"").bytes(), &[("pass_control", 1)]);
        p.expect_passed(&client6(5, RST, b"").bytes(), &[("pass_control", 1)]);
        p.expect_passed(
            &client6(CLIENT_ISN, SYN, b"").bytes(),
            &[("pass_control", 1)],
        );
        // A SYN on a handed-off flow's ports too, changing nothing.
        p.set_flow6(key6(CLIENT_PORT), entry6(0));
        p.expect_passed(
            &client6(CLIENT_ISN, SYN, b"").bytes(),
            &[("pass_control", 1)],
        );
        assert_eq!(p.flow6(key6(CLIENT_PORT)), entry6(0));
        // Even with SYN cookies engaged: no IPv6 cookies in XDP.
        p.set_syn_cookies(cookie_config(SynCookieConfig::ENGAGED));
        p.expect_passed(
            &client6(CLIENT_ISN, SYN, b"").bytes(),
            &[("pass_control", 1)],
        );
        // Neighbour discovery (router and neighbour solicitation and advertisement,
        // redirect) and echo: up, untouched, uncounted.
        for kind in [133, 134, 135, 136, 137, 128, 129] {
            p.expect_passed(&icmpv6(kind, 0, &[0; 20]).bytes(), &[]);
        }
        // To another port of the VIP6, another address, another MAC; disabled.
        let mut other_port = client6(CLIENT_NEXT, ACK, b"x");
        other_port.upper[2..4].copy_from_slice(&443u16.to_be_bytes());
        p.expect_passed(&other_port.bytes(), &[]);
        let mut elsewhere = client6(CLIENT_NEXT, ACK, b"x");
        elsewhere.dst[15] ^= 0x40;
        p.expect_passed(&elsewhere.bytes(), &[]);
        let mut flooded = client6(CLIENT_NEXT, ACK, b"x");
        flooded.dst_mac = [0x02, 0xba, 0x70, 0x12, 0x01, 0x03];
        p.expect_passed(&flooded.bytes(), &[]);
        p.configure(0);
        p.expect_passed(&client6(CLIENT_NEXT, ACK, b"x").bytes(), &[]);
        p.configure(FrontendConfig::ENABLED);
        p.expect(
            &client6(CLIENT_NEXT, ACK, b"x").bytes(),
            XDP_TX,
            &[("forwarded", 1)],
        );
        assert_eq!(p.notices6(), []);
    });
}

/// A router's "packet too big" to VIP6 about the segment a back-end sent the client as
/// the VIP6's, quoting `quoted` bytes of its TCP header and payload.
fn packet_too_big(quoted_dst_port: u16, quoted: usize) -> Frame6 {
    let mut segment = Vec::new();
    segment.extend_from_slice(&SERVICE_PORT.to_be_bytes());
    segment.extend_from_slice(&quoted_dst_port.to_be_bytes());
    segment.extend_from_slice(&ISN_F.wrapping_add(9_001).to_be_bytes());
    segment.extend_from_slice(&CLIENT_NEXT.to_be_bytes());
    segment.extend_from_slice(&[0x50, ACK, 0, 1, 0x12, 0x34, 0, 0]);
    segment.resize(1_440, 0x5a);
    let mut quote = vec![0x60, 0, 0, 0];
    quote.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    quote.extend_from_slice(&[next_header::TCP, 63]);
    quote.extend_from_slice(&VIP6);
    quote.extend_from_slice(&CLIENT6);
    quote.extend_from_slice(&segment[..quoted]);
    let mut body = 1_280u32.to_be_bytes().to_vec();
    body.extend_from_slice(&quote);
    Frame6 {
        src: [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ..icmpv6(2, 0, &body)
    }
}

#[test]
fn a_packet_too_big_to_the_vip6_goes_to_the_flows_backend() {
    privileged("ICMPv6", || {
        let mut p = Program::load();
        p.set_flow6(key6(CLIENT_PORT), entry6(0));
        for quoted in [8, 20, 1_280 - 88] {
            let error = packet_too_big(CLIENT_PORT, quoted);
            let frame = error.bytes();
            let out = p.expect(&frame, XDP_TX, &[("forwarded_icmp", 1)]);
            // The outer destination the back-end's, the MACs, and the ICMPv6 checksum
            // summed whole over the new pseudo-header; the quote untouched.
            let mut want = error.clone();
            want.dst = BACKEND6;
            want.dst_mac = BE_MAC;
            let mut want = want.bytes();
            want[6..12].copy_from_slice(&FE_MAC);
            assert_eq!(out, want, "{quoted} quoted bytes");
            assert!(checksum6_holds(&out, next_header::ICMPV6));
        }
        assert_eq!(p.flow6(key6(CLIENT_PORT)).last_seen_ns, 0);
        // Quoting no flow: dropped. Cut short of the sequence number, or quoting a
        // segment from another address: malformed, dropped.
        p.expect(
            &packet_too_big(CLIENT_PORT + 1, 8).bytes(),
            XDP_DROP,
            &[("drop_icmp_no_flow", 1)],
        );
        let mut short = packet_too_big(CLIENT_PORT, 8);
        short.upper.truncate(short.upper.len() - 2);
        p.expect(&short.bytes(), XDP_DROP, &[("drop_icmp_malformed", 1)]);
        let mut other = packet_too_big(CLIENT_PORT, 8);
        other.upper[8 + 8 + 15] ^= 0x40;
        p.expect(&other.bytes(), XDP_DROP, &[("drop_icmp_malformed", 1)]);
        // To another address: up, uncounted.
        let mut elsewhere = packet_too_big(CLIENT_PORT, 8);
        elsewhere.dst[15] ^= 0x40;
        p.expect_passed(&elsewhere.bytes(), &[]);
    });
}
