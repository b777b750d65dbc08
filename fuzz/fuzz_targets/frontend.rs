//! The front-end state machine fed arbitrary packet sequences and timer firings: no
//! panics, tables stay within their configured bounds, and once every timer has run out
//! no connection is left behind.
//!
//! Random bytes would almost never form a valid IPv4 or IPv6 TCP packet, so each step is
//! built from the input's fields (who sends, over which family, flags, seq/ack, options,
//! payload) and checksums are trusted; one op in eight feeds raw bytes instead, for the
//! parser paths.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use baton_proto::frontend::{Config, Dispatch, FlowKey, FrontEnd, Instant};
use baton_proto::request::ClientRequest;
use baton_proto::wire::{
    Checksums, IpProtocol, Ipv4Repr, Ipv6Repr, TcpFlags, TcpRepr, TcpTimestamps,
    UnknownTcpOptions, ipv4, ipv6,
};
use libfuzzer_sys::fuzz_target;

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1));
/// Two back-ends of each family.
const BACKENDS: [SocketAddr; 4] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 11)), 80),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 11)), 80),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 12)), 80),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 12)), 80),
];
const MAX_CONNECTIONS: usize = 8;

/// A cursor over the fuzz input that yields zeros once it runs dry.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte also picks the handoff's settings, so that both handshakes (the
    // core's, and every SYN in the fast path) and both handoffs (three turns, one) are
    // explored.
    let settings = data.first().copied().unwrap_or(0);
    let config = Config {
        services: vec![SocketAddr::new(VIP, 80), SocketAddr::new(VIP6, 80)],
        max_connections: MAX_CONNECTIONS,
        max_half_open: 4,
        max_request_len: 512,
        checksums: Checksums::Trust,
        one_turn: settings & 0x40 != 0,
        every_syn_in_fast_path: settings & 0x80 != 0,
        ..Config::default()
    };
    let Ok(mut front_end) = FrontEnd::new(config, FirstFree) else {
        return;
    };
    let mut input = Input(data);
    let mut now = Instant::from_nanos(1_000_000_000);
    let mut steps = 0;
    while !input.0.is_empty() && steps < 256 {
        steps += 1;
        let op = input.u8();
        if op % 8 == 0 {
            now = now + Duration::from_millis(u64::from(input.u16()));
            front_end.handle_timeout(now);
        } else if op % 8 == 1 {
            let len = usize::from(input.u8());
            let raw = input.bytes(len).to_vec();
            front_end.handle_packet(now, &raw);
        } else {
            let packet = build_packet(&mut input, op);
            front_end.handle_packet(now, &packet);
        }
        drain(&mut front_end);
        assert!(front_end.connection_count() <= MAX_CONNECTIONS);
    }
    // Every connection has a timer that ends it: after long enough, nothing is left.
    for _ in 0..64 {
        match front_end.poll_timeout() {
            Some(deadline) => {
                now = deadline.max(now);
                front_end.handle_timeout(now);
                drain(&mut front_end);
            }
            None => break,
        }
        if front_end.connection_count() == 0 {
            break;
        }
        now = now + Duration::from_secs(3600);
    }
    assert_eq!(
        front_end.connection_count(),
        0,
        "connections outlived every timer"
    );
});

/// Picks the first back-end not yet tried, so retries walk the candidates: of the
/// client's family, except for clients on odd ports, which are offered the other
/// family's first (the core refuses it as no back-end).
struct FirstFree;

impl Dispatch for FirstFree {
    fn dispatch(
        &mut self,
        _now: Instant,
        flow: &FlowKey,
        _request: &ClientRequest<'_>,
        exclude: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let wrong_family = flow.client.port() % 2 == 1;
        BACKENDS
            .iter()
            .copied()
            .find(|b| !exclude.contains(b) && (flow.same_family(b) != wrong_family))
    }
}

fn drain<D: Dispatch>(front_end: &mut FrontEnd<D>) {
    while front_end.poll_output().is_some() {}
}

/// One TCP segment from a client (one of four, over IPv4 or IPv6) to the VIP of its
/// family, or from a back-end's egress (source VIP, as the back-end module sends its
/// copies).
fn build_packet(input: &mut Input<'_>, op: u8) -> Vec<u8> {
    let who = input.u8();
    let (client_ip, vip) = if who & 0x40 != 0 {
        let ip = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2 + u16::from(who & 3));
        (IpAddr::V6(ip), VIP6)
    } else {
        (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2 + (who & 3))), VIP)
    };
    let client = SocketAddr::new(client_ip, 40_000 + u16::from(who & 3));
    let from_backend = who & 0x80 != 0;
    let (src, dst) = if from_backend {
        (SocketAddr::new(vip, 80), client)
    } else {
        (client, SocketAddr::new(vip, 80))
    };
    let flags = TcpFlags::from_bits(u16::from(input.u8()));
    let seq = input.u32();
    let ack = input.u32();
    let window = input.u16();
    let opts = input.u8();
    let ts = (opts & 4 != 0).then(|| TcpTimestamps {
        tsval: input.u32(),
        tsecr: input.u32(),
    });
    let payload_len = usize::from(input.u8()) * usize::from(op >> 6 & 1);
    let payload = input.bytes(payload_len).to_vec();
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: window,
        urgent_pointer: 0,
        max_seg_size: (opts & 1 != 0).then_some(1460),
        window_scale: (opts & 2 != 0).then_some(opts >> 4),
        sack_permitted: opts & 8 != 0,
        sack_blocks: [None; 4],
        timestamps: ts,
        unknown_options: UnknownTcpOptions::new(),
        payload: &payload,
    };
    let built = match (src.ip(), dst.ip()) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            let ip = Ipv4Repr {
                src_addr,
                dst_addr,
                protocol: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                ttl: 64,
                ident: 0,
                dont_frag: true,
                dscp_ecn: 0,
            };
            let mut buf = vec![0; ipv4::HEADER_LEN + tcp.buffer_len()];
            ip.emit(&mut buf)
                .and_then(|_| tcp.emit(src_addr, dst_addr, &mut buf[ipv4::HEADER_LEN..]))
                .map(|_| buf)
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
            let ip = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            let mut buf = vec![0; ipv6::HEADER_LEN + tcp.buffer_len()];
            ip.emit(&mut buf)
                .and_then(|_| tcp.emit(src_addr, dst_addr, &mut buf[ipv6::HEADER_LEN..]))
                .map(|_| buf)
        }
        _ => unreachable!("one family per packet"),
    };
    built.unwrap_or_default()
}
