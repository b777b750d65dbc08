//! Stateless forwarding by the stamp (docs/design.md, "Stateless forwarding by the
//! stamp"): a client segment of a flow the table misses, whose TSecr carries a
//! back-end's stamp, is forwarded to that back-end and the flow learned if the stamp
//! verifies (`baton_common::stamp::judge_stamp`, the function the program calls), and
//! dropped and counted if not. The stamps are made here with the back-end module's own
//! function (`baton_common::stamp::stamp`).

use baton_common::{
    claim,
    stamp::{self, StampConfig, StampedBackend, StampedFlow},
};

use super::*;

const STAMP_KEY: SipKey = SipKey {
    k0: 0x0011_2233_4455_6677,
    k1: 0x8899_aabb_ccdd_eeff,
};

impl Program {
    /// Turns stamps on (or off) with [`STAMP_KEY`], and names `BACKEND` under its id.
    fn set_stamps(&mut self, flags: u32) {
        let mut config: Array<_, StampConfig> =
            Array::try_from(self.ebpf.map_mut("FRONTEND_STAMP_CONFIG").unwrap()).unwrap();
        let value = StampConfig {
            key: STAMP_KEY,
            flags,
            _pad: 0,
        };
        config.set(0, value, 0).unwrap();
        let mut backends: Array<_, StampedBackend> =
            Array::try_from(self.ebpf.map_mut("FRONTEND_STAMP_BACKENDS").unwrap()).unwrap();
        let entry = StampedBackend {
            addr_be: u32::from_ne_bytes(BACKEND),
            port_be: u16::from_ne_bytes(BACKEND_PORT.to_be_bytes()),
            mac: BE_MAC,
            _pad: [0; 4],
            flags: StampedBackend::USABLE,
        };
        backends
            .set(u32::from(stamp::backend_id(BACKEND)), entry, 0)
            .unwrap();
    }
}

/// The stamp `BACKEND`'s module gives the flow from `client_port`.
fn backend_stamp(client_port: u16) -> u16 {
    stamp::stamp(
        &STAMP_KEY,
        &StampedFlow {
            client_addr: CLIENT,
            client_port,
            vip_addr: VIP,
            vip_port: SERVICE_PORT,
            backend_addr: BACKEND,
            backend_port: BACKEND_PORT,
        },
    )
}

/// A client data segment echoing `tsecr`.
fn echoing(seq: u32, payload: &[u8], tsecr: u32) -> Vec<u8> {
    let mut frame = client(seq, ACK | PSH, payload);
    frame.options = timestamps(77, tsecr);
    frame.bytes()
}

#[test]
fn a_valid_stamp_on_a_missed_flow_is_forwarded_and_learned() {
    privileged("stamp learned", || {
        let mut p = Program::load();
        p.set_stamps(StampConfig::ENABLED);
        let tsecr = stamp::stamped_tsval(0x0bad_0000, backend_stamp(CLIENT_PORT));
        let seq = 0x1234_5678;
        let request = b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n";
        let frame = echoing(seq, request, tsecr);
        let out = p.expect(&frame, XDP_TX, &[("learned_by_stamp", 1)]);
        assert_eq!(out, rewritten(&frame, BACKEND_PORT));
        // No client ISN is known of a flow learned by its stamp.
        assert_eq!(
            p.notices(),
            [FlowNotice {
                client_isn: 0,
                ..notice(FlowNotice::LEARNED)
            }]
        );
        let learned = p.flow(key(CLIENT_PORT));
        assert_eq!(
            FrontendFlow {
                last_seen_ns: 0,
                ..learned
            },
            FrontendFlow {
                client_isn: 0,
                close_state: 0,
                isn_f: 0,
                client_next: seq + request.len() as u32,
                ..entry(BACKEND_PORT, 0)
            },
            "a handed-off flow's entry, its client's next number past the segment"
        );
        assert_ne!(learned.last_seen_ns, 0);
        // The next segment takes the usual path, told to nobody.
        let next = echoing(seq + request.len() as u32, b"", tsecr);
        let out = p.expect(&next, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten(&next, BACKEND_PORT));
        assert_eq!(p.notices(), []);
    });
}

#[test]
fn a_forged_or_stale_stamp_is_dropped_and_counted() {
    privileged("stamp forged", || {
        let mut p = Program::load();
        p.set_stamps(StampConfig::ENABLED);
        let good = stamp::stamped_tsval(0x0bad_0000, backend_stamp(CLIENT_PORT));
        // Every bit of the MAC flipped in turn: none passes.
        for bit in 0..8 {
            p.expect(
                &echoing(5, b"x", good ^ (1 << bit)),
                XDP_DROP,
                &[("drop_stamp_forged", 1)],
            );
        }
        // The stamp of another connection of the same client (its other port).
        let other = stamp::stamped_tsval(0x0bad_0000, backend_stamp(CLIENT_PORT + 1));
        assert_ne!(other, good);
        p.expect(
            &echoing(5, b"x", other),
            XDP_DROP,
            &[("drop_stamp_forged", 1)],
        );
        // Naming a back-end id the service has none for (one removed, say).
        p.expect(
            &echoing(5, b"x", good ^ (1 << (stamp::ID_SHIFT + 3))),
            XDP_DROP,
            &[("drop_stamp_unknown_backend", 1)],
        );
        assert!(!p.has_flow(key(CLIENT_PORT)), "never learned");
        assert_eq!(p.notices(), [], "never told");
        // The echo of a front-end's own TSval is no stamp: up, as before.
        p.expect_passed(
            &echoing(5, b"x", stamp::front_tsval(good)),
            &[("pass_no_flow", 1)],
        );
        // Stamps off: a valid one goes up too.
        p.set_stamps(0);
        p.expect_passed(&echoing(5, b"x", good), &[("pass_no_flow", 1)]);
        assert!(!p.has_flow(key(CLIENT_PORT)));
    });
}

/// The claim `BACKEND`'s module answers a probe of `client_frame` with, as it reaches
/// the front-end (`baton_common::claim`): the client's IPv4 packet unchanged, from the
/// back-end's MAC to the prober's, EtherType 0x88B6, the trailer holding `stamp`.
fn claim_frame(client_frame: &[u8], stamp: u16) -> Vec<u8> {
    let mut out = vec![0u8; client_frame.len() + claim::TRAILER_LEN];
    let len = claim::write_probe(
        &mut out,
        FE_MAC,
        BE_MAC,
        (BACKEND, BACKEND_PORT),
        &client_frame[IP..],
    )
    .unwrap();
    out.truncate(len);
    let eth: [u8; 14] = out[..14].try_into().unwrap();
    out[..14].copy_from_slice(&claim::claim_ethernet(&eth));
    let at = out.len() - claim::TRAILER_LEN + claim::TRAILER_STAMP;
    out[at..at + 2].copy_from_slice(&stamp.to_be_bytes());
    out
}

/// A client segment without timestamps: what a probe carries.
fn without_timestamps(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = client(seq, ACK | PSH, payload);
    frame.options = Vec::new();
    frame.bytes()
}

/// Issue 20, item 4: a back-end's claim of a flow whose client sends no timestamps has
/// the flow learned and the segment inside forwarded, as a stamped TSecr would (docs/
/// design.md, "Clients without timestamps: probe and claim").
#[test]
fn a_valid_claim_is_learned_and_its_segment_forwarded() {
    privileged("claim learned", || {
        let mut p = Program::load();
        p.set_stamps(StampConfig::ENABLED);
        let seq = 0x1234_5678;
        let request = b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n";
        let segment = without_timestamps(seq, request);
        let claim = claim_frame(&segment, backend_stamp(CLIENT_PORT));
        // With padding after the trailer, as a short frame may have.
        let mut padded = claim.clone();
        padded.extend_from_slice(&[0; 6]);
        let out = p.expect(&padded, XDP_TX, &[("learned_by_claim", 1)]);
        assert_eq!(
            out,
            rewritten(&segment, BACKEND_PORT),
            "the segment, as forwarded"
        );
        assert_eq!(
            p.notices(),
            [FlowNotice {
                client_isn: 0,
                ..notice(FlowNotice::LEARNED)
            }]
        );
        assert_eq!(
            p.flow(key(CLIENT_PORT)).client_next,
            seq + request.len() as u32
        );
        // The client's next segment takes the usual path.
        let next = without_timestamps(seq + request.len() as u32, b"");
        let out = p.expect(&next, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten(&next, BACKEND_PORT));
        // A second claim of the flow (a slower CPU's, a repeated probe): forwarded,
        // told to nobody.
        p.expect(&claim, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(p.notices(), []);
    });
}

#[test]
fn a_forged_or_malformed_claim_is_dropped_and_counted() {
    privileged("claim forged", || {
        let mut p = Program::load();
        p.set_stamps(StampConfig::ENABLED);
        let segment = without_timestamps(5, b"x");
        let good = backend_stamp(CLIENT_PORT);
        for bit in 0..8 {
            p.expect(
                &claim_frame(&segment, good ^ (1 << bit)),
                XDP_DROP,
                &[("drop_claim_forged", 1)],
            );
        }
        // Another flow's stamp, and none at all.
        p.expect(
            &claim_frame(&segment, backend_stamp(CLIENT_PORT + 1)),
            XDP_DROP,
            &[("drop_claim_forged", 1)],
        );
        p.expect(
            &claim_frame(&segment, 0),
            XDP_DROP,
            &[("drop_claim_forged", 1)],
        );
        p.expect(
            &claim_frame(&segment, good ^ (1 << (stamp::ID_SHIFT + 3))),
            XDP_DROP,
            &[("drop_claim_unknown_backend", 1)],
        );
        // Cut short of its trailer.
        let claim = claim_frame(&segment, good);
        p.expect(
            &claim[..claim.len() - 1],
            XDP_DROP,
            &[("drop_claim_malformed", 1)],
        );
        assert!(!p.has_flow(key(CLIENT_PORT)), "never learned");
        assert_eq!(p.notices(), [], "never told");
        // To another host's MAC (flooded): not ours, up untouched and uncounted.
        let mut elsewhere = claim.clone();
        elsewhere[..6].copy_from_slice(&ROUTER_MAC);
        p.expect_passed(&elsewhere, &[]);
        // Stamps off: no back-end is known by id.
        p.set_stamps(0);
        p.expect(&claim, XDP_DROP, &[("drop_claim_unknown_backend", 1)]);
        assert!(!p.has_flow(key(CLIENT_PORT)));
    });
}
