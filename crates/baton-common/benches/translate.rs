//! Per-packet cost of the back-end's translation (issue 3, item 7): the arithmetic of
//! `baton_common::translate` applied to a TCP header in memory, with the incremental
//! checksum updates, in each direction; and, once per connection, the handoff option's
//! verification.
//!
//! Run with `cargo bench -p baton-common --bench translate`.

use std::hint::black_box;
use std::time::Duration;

use baton_common::handoff_option::{HandoffBinding, HandoffOption, find_handoff_option};
use baton_common::siphash::SipKey;
use baton_common::translate::{
    SynAckTerms, Translation, csum_replace2, csum_replace4, ones_complement_add,
    ones_complement_sum, tcp_ipv4_pseudo_header_sum,
};
use criterion::{Criterion, criterion_group, criterion_main};

// Offsets in a 32-byte TCP header: 20 fixed bytes, then NOP NOP and the timestamp option
// as Linux lays it out (RFC 7323 appendix A), so TSval and TSecr are 4-byte aligned.
const SEQ: usize = 4;
const ACK: usize = 8;
const WINDOW: usize = 14;
const CHECK: usize = 16;
const TSVAL: usize = 24;
const TSECR: usize = 28;

fn be16(h: &[u8; 32], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

fn be32(h: &[u8; 32], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

fn put16(h: &mut [u8; 32], at: usize, v: u16) {
    h[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(h: &mut [u8; 32], at: usize, v: u32) {
    h[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// What B's egress does to each segment for the client: seq, TSval and window, each with
/// its checksum update.
fn backend_to_client(t: Translation, h: &mut [u8; 32]) {
    let mut check = be16(h, CHECK);
    let seq = be32(h, SEQ);
    let seq_c = t.seq_to_client(seq);
    check = csum_replace4(check, seq, seq_c);
    put32(h, SEQ, seq_c);
    let tsval = be32(h, TSVAL);
    let tsval_c = t.tsval_to_client(tsval);
    check = csum_replace4(check, tsval, tsval_c);
    put32(h, TSVAL, tsval_c);
    let window = be16(h, WINDOW);
    let window_c = t.window_to_client(window);
    check = csum_replace2(check, window, window_c);
    put16(h, WINDOW, window_c);
    put16(h, CHECK, check);
}

/// What B's ingress does to each segment from the client: ack and TSecr, each with its
/// checksum update (SACK blocks, when present, cost one more update per edge).
fn client_to_backend(t: Translation, h: &mut [u8; 32]) {
    let mut check = be16(h, CHECK);
    let ack = be32(h, ACK);
    let ack_b = t.ack_to_backend(ack);
    check = csum_replace4(check, ack, ack_b);
    put32(h, ACK, ack_b);
    let tsecr = be32(h, TSECR);
    let tsecr_b = t.tsecr_to_backend(tsecr);
    check = csum_replace4(check, tsecr, tsecr_b);
    put32(h, TSECR, tsecr_b);
    put16(h, CHECK, check);
}

fn sample_header() -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..2].copy_from_slice(&80u16.to_be_bytes());
    h[2..4].copy_from_slice(&40_000u16.to_be_bytes());
    put32(&mut h, SEQ, 0x1111_2222);
    put32(&mut h, ACK, 0x3333_4444);
    h[12] = 8 << 4;
    h[13] = 0x10; // ACK
    put16(&mut h, WINDOW, 501);
    h[20..24].copy_from_slice(&[1, 1, 8, 10]);
    put32(&mut h, TSVAL, 0x5555_6666);
    put32(&mut h, TSECR, 0x7777_8888);
    let pseudo = tcp_ipv4_pseudo_header_sum([198, 18, 1, 11], [198, 18, 0, 10], 32);
    let check = !ones_complement_add(pseudo, ones_complement_sum(&h));
    put16(&mut h, CHECK, check);
    h
}

fn per_packet(c: &mut Criterion) {
    let t = Translation::new(
        SynAckTerms {
            isn: 0xdead_beef,
            tsval: 1_000,
            window_shift: 7,
        },
        SynAckTerms {
            isn: 0x0bad_cafe,
            tsval: 4_000_000_000,
            window_shift: 9,
        },
        Translation::TIMESTAMPS | Translation::SACK,
    );
    let header = sample_header();
    let mut group = c.benchmark_group("per_packet");
    group.bench_function("backend_to_client", |b| {
        let mut h = header;
        b.iter(|| backend_to_client(black_box(t), black_box(&mut h)));
    });
    group.bench_function("client_to_backend", |b| {
        let mut h = header;
        b.iter(|| client_to_backend(black_box(t), black_box(&mut h)));
    });
    group.finish();
}

fn per_connection(c: &mut Criterion) {
    let key = SipKey::from_bytes(*b"0123456789abcdef");
    let binding = HandoffBinding {
        client_ip: [198, 18, 0, 10],
        client_port: 40_000,
        backend_ip: [198, 18, 1, 11],
        backend_port: 80,
        client_isn: 0x1234_5678,
    };
    let mut area = [1u8; 40];
    area[..20].copy_from_slice(&[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7,
    ]);
    area[20..].copy_from_slice(
        &HandoffOption::new(0xdead_beef, 1_000, 7, HandoffOption::TIMESTAMPS)
            .encode(&key, &binding),
    );
    c.bench_function("per_connection/find_and_verify_handoff_option", |b| {
        b.iter(|| {
            let area = black_box(&area);
            find_handoff_option(area)
                .ok()
                .flatten()
                .and_then(|span| area.get(span.start..))
                .map(|bytes| HandoffOption::parse_and_verify(bytes, &key, black_box(&binding)))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_packet, per_connection
}
criterion_main!(benches);
