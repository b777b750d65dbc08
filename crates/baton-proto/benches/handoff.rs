//! CPU time per connection in the front-end's state machine, from the client's SYN to a
//! completed handoff (issue 3, item 7; goal: under 5 µs).
//!
//! One iteration is one connection, each with its own client port: the SYN, the
//! handshake's ACK carrying the request, the back-end's SYN/ACK' and its confirmation go
//! in; the SYN/ACK, the ACK, the SYN' and the request segment (which is the ACK') come out, and the
//! `HandedOff` event. The packets the front-end receives are built before the clock
//! starts, except the two from the back-end, which depend on the front-end's ISN and
//! TSval: building them is inside the measurement, so the figure is a slight
//! over-estimate. A fresh front-end is made every `BATCH` connections, outside the
//! measurement, so the flow table stays at a realistic size.

use std::{
    hint::black_box,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant as WallClock},
};

use baton_proto::frontend::{Backend, Config, Dispatch, Event, FlowKey, FrontEnd, Instant, Output};
use baton_proto::request::ClientRequest;
use baton_proto::wire::{IpProtocol, Ipv4Repr, TcpFlags, TcpRepr, TcpTimestamps, ipv4};
use criterion::{Criterion, criterion_group, criterion_main};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 1), 8080);
const REQUEST: &[u8] = b"GET /static/app.js HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
const BATCH: u64 = 10_000;
const CISN: u32 = 0x1234_5678;

struct One;

impl Dispatch for One {
    fn dispatch(
        &mut self,
        _: Instant,
        _: &FlowKey,
        _: &ClientRequest<'_>,
        _: &[Backend],
    ) -> Option<Backend> {
        Some(BACKEND.into())
    }
}

fn segment(src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: TcpFlags) -> TcpRepr<'static> {
    TcpRepr::bare(src_port, dst_port, seq, ack, flags, 502)
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr, tcp: &TcpRepr<'_>) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        ttl: 64,
        ident: 0,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut buf = vec![0; ipv4::HEADER_LEN + tcp.buffer_len()];
    ip.emit(&mut buf).unwrap();
    tcp.emit(src, dst, &mut buf[ipv4::HEADER_LEN..]).unwrap();
    buf
}

fn client(n: u64) -> (Ipv4Addr, u16) {
    let host = (n / 50_000) as u8;
    (
        Ipv4Addr::new(198, 19, host, 2),
        10_000 + (n % 50_000) as u16,
    )
}

/// The client's SYN, for connection `n`.
fn syn(n: u64) -> Vec<u8> {
    let (addr, port) = client(n);
    let mut tcp = segment(port, 80, CISN, 0, TcpFlags::SYN);
    tcp.window_len = 64_240;
    tcp.max_seg_size = Some(1460);
    tcp.window_scale = Some(7);
    tcp.sack_permitted = true;
    tcp.timestamps = Some(TcpTimestamps {
        tsval: 1000,
        tsecr: 0,
    });
    packet(addr, VIP, &tcp)
}

fn read_u32(packet: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
}

/// Runs connection `n` from SYN to handoff; returns how many packets came out.
fn connection(fe: &mut FrontEnd<One>, now: Instant, n: u64, syn: &[u8]) -> usize {
    let (addr, port) = client(n);
    let mut sent = 0;
    fe.handle_packet(now, syn);
    let Some(Output::Transmit(syn_ack)) = fe.poll_output() else {
        panic!("no SYN/ACK");
    };
    let syn_ack = syn_ack.packet;
    sent += 1;
    // seq at TCP offset 4; TSval at option offset 8 (Linux layout: MSS 4 bytes, SACK-permitted
    // 2, then the timestamps option's kind and length).
    let isn_f = read_u32(&syn_ack, 20 + 4);
    let tsv_f = read_u32(&syn_ack, 20 + 20 + 8);
    let mut ack = segment(
        port,
        80,
        CISN + 1,
        isn_f.wrapping_add(1),
        TcpFlags::ACK | TcpFlags::PSH,
    );
    ack.timestamps = Some(TcpTimestamps {
        tsval: 1001,
        tsecr: tsv_f,
    });
    ack.payload = REQUEST;
    fe.handle_packet(now, &packet(addr, VIP, &ack));
    sent += transmits(fe);
    let mut syn_ack_prime = segment(80, port, isn_f, CISN + 1, TcpFlags::SYN | TcpFlags::ACK);
    syn_ack_prime.max_seg_size = Some(1460);
    syn_ack_prime.window_scale = Some(9);
    syn_ack_prime.sack_permitted = true;
    syn_ack_prime.timestamps = Some(TcpTimestamps {
        tsval: tsv_f,
        tsecr: 1001,
    });
    fe.handle_packet(now, &packet(VIP, addr, &syn_ack_prime));
    sent += transmits(fe);
    let end = CISN + 1 + REQUEST.len() as u32;
    let confirmation = segment(80, port, isn_f.wrapping_add(1), end, TcpFlags::ACK);
    fe.handle_packet(now, &packet(VIP, addr, &confirmation));
    match fe.poll_output() {
        Some(Output::Event(Event::HandedOff(_))) => {}
        other => panic!("no handoff: {other:?}"),
    }
    sent
}

/// Drains the outputs, counting the packets among them (the events go nowhere here).
fn transmits(fe: &mut FrontEnd<One>) -> usize {
    std::iter::from_fn(|| fe.poll_output())
        .filter(|o| matches!(o, Output::Transmit(_)))
        .count()
}

fn config() -> Config {
    Config {
        services: vec![SocketAddrV4::new(VIP, 80).into()],
        secret: [1; 16],
        handoff_key: [2; 16],
        max_connections: BATCH as usize,
        max_half_open: BATCH as usize,
        ..Config::default()
    }
}

fn handoff(c: &mut Criterion) {
    let syns: Vec<Vec<u8>> = (0..BATCH).map(syn).collect();
    c.bench_function("frontend: SYN to completed handoff, per connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut fe = FrontEnd::new(config(), One).unwrap();
                let now = Instant::from_nanos(1_000_000_000);
                let batch = (iters - done).min(BATCH);
                let start = WallClock::now();
                for n in 0..batch {
                    black_box(connection(&mut fe, now, n, &syns[n as usize]));
                }
                total += start.elapsed();
                done += batch;
            }
            total
        })
    });
}

criterion_group!(benches, handoff);
criterion_main!(benches);
