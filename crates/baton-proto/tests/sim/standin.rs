//! HARNESS SELF-TEST ONLY, NOT THE HANDOFF: a stand-in for the front-end that lets the
//! back-end module's translation path run end to end before (and independently of) the
//! real front-end state machine.
//!
//! The test installs a flow entry in the back-end module by hand, with fixed
//! `seq_delta`/`ts_delta`; the client then connects to the VIP and this stand-in:
//! - forwards every client packet to the back-end with the destination rewritten, as
//!   the front-end's XDP program does after a handoff;
//! - on the SYN/ACK' the back-end's egress sends it (already in the client's terms,
//!   source VIP), sets the window-scale option to the front-end's `ws_f` and passes it
//!   to the client, as the front-end's own SYN/ACK would have looked;
//! - ignores the other copies the back-end's egress sends it.
//!
//! Checksums here are recomputed in full: this code is scaffolding, not under test.

use std::net::IpAddr;
use std::time::Duration;

use baton_common::handoff_option::find_option;
use baton_proto::wire::TcpSegment;

use super::net::NodeId;
use super::packet::{PacketInfo, fill_checksums, ip_bounds, kind, write_addr};
use super::world::FrontNode;

pub struct StandInFront {
    pub vip: IpAddr,
    pub backend: IpAddr,
    pub ws_f: u8,
    out: Vec<Vec<u8>>,
    pub forwarded: u64,
    pub syn_acks: u64,
    pub copies_ignored: u64,
}

impl StandInFront {
    pub fn new(vip: IpAddr, backend: IpAddr, ws_f: u8) -> Self {
        Self {
            vip,
            backend,
            ws_f,
            out: Vec::new(),
            forwarded: 0,
            syn_acks: 0,
            copies_ignored: 0,
        }
    }
}

/// Rewrites the addresses of an IPv4 or IPv6 TCP packet and recomputes the checksums.
fn readdress(mut pkt: Vec<u8>, src: IpAddr, dst: IpAddr, ws: Option<u8>) -> Vec<u8> {
    write_addr(&mut pkt, false, src);
    write_addr(&mut pkt, true, dst);
    let (tcp, total) = ip_bounds(&pkt).expect("valid packet");
    let mut seg = TcpSegment::new_checked(&mut pkt[tcp..total]).expect("valid segment");
    if let Some(ws) = ws
        && let Ok(Some(span)) = find_option(seg.options_mut(), kind::WINDOW_SCALE)
    {
        seg.options_mut()[span.start + 2] = ws;
    }
    fill_checksums(&mut pkt);
    pkt
}

impl FrontNode for StandInFront {
    fn receive(&mut self, _now: Duration, from: NodeId, pkt: Vec<u8>) {
        let info = PacketInfo::parse(&pkt).expect("valid packet");
        match from {
            NodeId::Client => {
                self.forwarded += 1;
                self.out.push(readdress(pkt, info.src, self.backend, None));
            }
            NodeId::Backend(_) if info.is_syn_ack() => {
                self.syn_acks += 1;
                self.out
                    .push(readdress(pkt, self.vip, info.dst, Some(self.ws_f)));
            }
            _ => self.copies_ignored += 1,
        }
    }

    fn poll(&mut self, _now: Duration) {}

    fn next_wakeup(&mut self) -> Option<Duration> {
        None
    }

    fn take_transmits(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!(
            "stand-in: forwarded {}, SYN/ACK' passed {}, copies ignored {}",
            self.forwarded, self.syn_acks, self.copies_ignored
        )
    }
}
