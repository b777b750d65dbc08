//! The core's IPv6 handoffs in the XDP program's IPv6 flow table ([`super::FastPathV6`]):
//! what [`FastPath::install`], [`FastPath::remove`] and [`FastPath::note_flow_notices`]
//! do for IPv4 flows, for IPv6 ones. Kept apart from the IPv4 code so that it stays as
//! it was, instruction for instruction: no IPv6 flow ever reaches the IPv4 table, and the
//! daemon calls these for a flow of the IPv6 family alone.
//!
//! Narrower than IPv4's, on purpose and for now: the program's IPv6 path makes no
//! handoff of its own (kernel dispatch is IPv4's) and learns no flow by a stamp (the
//! stamp binds IPv4 addresses), so every IPv6 entry is the core's, and a notice is
//! always of the core's connection on its ports. The activity scan reads the IPv6 table
//! beside the IPv4 one ([`FastPath::scan_activity_v6`]), so a flow the program forwards
//! is alive to the core as long as its client sends.

use std::net::{SocketAddr, SocketAddrV6};

use baton_common::frontend::{FlowNoticeV6, FrontendFlowKeyV6};
use baton_proto::frontend::{Backend, FlowKey, FrontEnd, Instant};

use super::{FastPath, FastPathStats, NEWS_BATCH, count_install};

/// Both ends of an IPv6 flow, or `None` for one of another family.
fn v6_ends(flow: &FlowKey) -> Option<(SocketAddrV6, SocketAddrV6)> {
    match (flow.client, flow.service) {
        (SocketAddr::V6(client), SocketAddr::V6(service)) => Some((client, service)),
        _ => None,
    }
}

/// The core's flow of an IPv6 notice's key.
fn flow_of_notice(notice: &FlowNoticeV6) -> FlowKey {
    flow_of_key(&notice.key)
}

/// The core's flow of an IPv6 table key.
fn flow_of_key(key: &FrontendFlowKeyV6) -> FlowKey {
    FlowKey {
        client: SocketAddrV6::new(
            key.client_addr.into(),
            u16::from_be_bytes(key.client_port_be.to_ne_bytes()),
            0,
            0,
        )
        .into(),
        service: SocketAddrV6::new(
            key.vip_addr.into(),
            u16::from_be_bytes(key.vip_port_be.to_ne_bytes()),
            0,
            0,
        )
        .into(),
    }
}

impl FastPath {
    /// [`FastPath::install`] of an IPv6 flow: the program forwards `flow`'s client
    /// segments to `backend` from now on (with `awaiting_answer`, only those proving the
    /// back-end has answered), its MAC from the neighbour table (neighbour discovery's
    /// entries, read with ARP's). Failures leave the flow to the slow path, counted; a
    /// flow or back-end of another family is left alone.
    #[expect(
        clippy::too_many_arguments,
        reason = "the flow's handoff terms, each needed, as FastPath::install's"
    )]
    pub fn install_v6(
        &mut self,
        now: Instant,
        flow: FlowKey,
        backend: Backend,
        client_isn: u32,
        client_next: u32,
        awaiting_answer: Option<u32>,
        stats: &mut FastPathStats,
    ) {
        let (Some((client, service)), SocketAddr::V6(backend)) = (v6_ends(&flow), backend) else {
            return;
        };
        let Some(mac) = self.backend_mac(now, &flow, backend.into(), stats) else {
            return;
        };
        let fresh = self.v6.flow(client, service).is_none();
        let written = self.v6.install(
            client,
            service,
            backend,
            mac,
            client_isn,
            client_next,
            awaiting_answer,
        );
        count_install(written, || fresh, awaiting_answer, &flow, stats);
    }

    /// [`FastPath::remove`] of an IPv6 flow: its entry goes at once (one system call; the
    /// IPv4 table's removals are batched, IPv6's are few until the program's IPv6 path
    /// carries a load of its own).
    pub fn remove_v6(&mut self, flow: &FlowKey, stats: &mut FastPathStats) {
        let Some((client, service)) = v6_ends(flow) else {
            return;
        };
        if self.v6.remove(client, service) {
            stats.flows_removed += 1;
        }
    }

    /// [`FastPath::scan_activity`] of the IPv6 table: each flow the program forwarded a
    /// segment of is alive to the core at that segment's time (`FrontEnd::note_activity`
    /// keeps the latest, so a stamp told twice changes nothing), which pushes back its
    /// idle timeout and, once its client has closed, the end of its grace period. Without
    /// it an IPv6 connection the program forwards would look idle to the core and be
    /// freed, its entry with it, after `limits.idle_timeout_ms`.
    pub fn scan_activity_v6<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) {
        self.v6
            .for_each_forwarded_since_last_scan(now.as_nanos(), |key, last_seen_ns| {
                fe.note_activity(now, &flow_of_key(key), Instant::from_nanos(last_seen_ns));
                stats.activity_noted += 1;
            });
    }

    /// [`FastPath::note_flow_notices`] of the IPv6 ring: the answers, FINs and RSTs the
    /// program forwarded for IPv6 flows, told to the core. Reads at most [`NEWS_BATCH`]
    /// and returns how many it read.
    pub fn note_flow_notices_v6<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) -> usize {
        self.v6.read_notices(NEWS_BATCH, |notice| {
            let flow = flow_of_notice(&notice);
            // No IPv6 flow is learned by a stamp: a LEARNED bit means nothing here.
            let what = notice.what & !baton_common::frontend::FlowNotice::LEARNED;
            if what != 0 {
                Self::apply_notice(fe, now, &flow, what, stats);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use baton_common::frontend::FrontendFlowKeyV6;

    use super::*;

    #[test]
    fn a_notice_names_the_flow_its_key_holds() {
        let client: SocketAddrV6 = "[2001:2::2]:40000".parse().unwrap();
        let service: SocketAddrV6 = "[2001:2:0:2::1]:80".parse().unwrap();
        let key: FrontendFlowKeyV6 = super::super::v6::key_of(client, service);
        let notice = FlowNoticeV6 {
            key,
            what: 0,
            client_isn: 0,
        };
        let flow = flow_of_notice(&notice);
        assert_eq!(flow.client, SocketAddr::V6(client));
        assert_eq!(flow.service, SocketAddr::V6(service));
        assert_eq!(v6_ends(&flow), Some((client, service)));
        let v4 = FlowKey {
            client: "198.18.0.2:40000".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        };
        assert_eq!(v6_ends(&v4), None, "an IPv4 flow is not the IPv6 table's");
    }
}
