//! The IPv6 fast path's maps and program (docs/design.md, "IPv6: the plan"): the IPv6
//! flow table (`FRONTEND_FLOWS_V6`) and its notices ring (`FRONTEND_NOTICES_V6`), pinned
//! beside the IPv4 ones (`flows_v6`, `notices_v6`), the VIP6 services map, and
//! `frontend_forward_v6`, which `frontend_forward` tail-calls for IPv6 frames
//! (`FRONTEND_PROGRAMS`).
//!
//! The pins are new: a daemon that finds an older build's pin set (no `flows_v6`) has the
//! loader make and pin them, and adopts the IPv4 flows as before; the IPv4 maps keep
//! their layouts. A restarted daemon adopts the IPv6 flows it finds as it does the IPv4
//! ones ([`FastPathV6::pinned`], `FastPath::adopt_pinned`), and keeps their close
//! states in their entries for the next ([`FastPathV6::record_close_states`]). The protocol core does not hand IPv6 connections off yet: this is what
//! it will call when it does ([`FastPathV6::install`], [`FastPathV6::remove`],
//! [`FastPathV6::read_notices`], [`FastPathV6::for_each_forwarded_since_last_scan`]). Until then the IPv6 table holds only what a caller
//! writes, and the program forwards only those flows.

use std::{net::SocketAddrV6, path::PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, ProgramArray, RingBuf},
    programs::Xdp,
};
use baton_common::frontend::{
    FlowNoticeV6, FrontendFlow, FrontendFlowKeyV6, FrontendFlowV6, FrontendServiceV6,
    frontend_program,
};
use baton_proto::frontend::{Dispatch, FlowKey, FrontEnd, Handover};

use crate::pins::Pins;

/// Where the IPv6 flow table is pinned, beside the IPv4 one.
pub(super) fn flows_pin(pins: &Pins) -> PathBuf {
    pins.dir().join("flows_v6")
}

/// Where the IPv6 notices ring is pinned, beside the IPv4 one.
pub(super) fn notices_pin(pins: &Pins) -> PathBuf {
    pins.dir().join("notices_v6")
}

/// Has the kernel verify `frontend_forward_v6` (the object loaded by the caller).
pub(super) fn load_program(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &mut Xdp = ebpf
        .program_mut("frontend_forward_v6")
        .context("program frontend_forward_v6 missing")?
        .try_into()?;
    prog.load()
        .context("loading frontend_forward_v6 (the verifier's log follows)")
}

/// Puts the loaded `frontend_forward_v6` in its slot of `frontend_forward`'s program
/// array, so that IPv6 frames reach it; before the program is attached, so that it
/// serves IPv6 from the first packet. One atomic store.
pub fn fill_programs(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &Xdp = ebpf
        .program("frontend_forward_v6")
        .context("program frontend_forward_v6 missing")?
        .try_into()?;
    let fd = prog.fd()?.try_clone()?;
    let mut slots: ProgramArray<_> = ProgramArray::try_from(
        ebpf.map_mut("FRONTEND_PROGRAMS")
            .context("map FRONTEND_PROGRAMS missing")?,
    )?;
    slots
        .set(frontend_program::IPV6, &fd, 0)
        .context("putting frontend_forward_v6 in the program array")
}

/// The IPv6 services map's keys: (VIP6, port) for each service and (VIP6, 0) for each
/// address, as [`super::service_keys`] for IPv4.
pub fn service_keys(services: &[SocketAddrV6]) -> Vec<FrontendServiceV6> {
    let mut keys: Vec<FrontendServiceV6> = Vec::new();
    for service in services {
        for port in [service.port(), 0] {
            let key = FrontendServiceV6 {
                vip_addr: service.ip().octets(),
                vip_port_be: u16::from_ne_bytes(port.to_be_bytes()),
                _pad: 0,
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Writes the IPv6 services (`FRONTEND_SERVICES_V6`, the program's own map, not pinned).
pub fn write_services(ebpf: &mut Ebpf, services: &[SocketAddrV6]) -> anyhow::Result<()> {
    let mut map: HashMap<_, FrontendServiceV6, u32> = HashMap::try_from(
        ebpf.map_mut("FRONTEND_SERVICES_V6")
            .context("map FRONTEND_SERVICES_V6 missing")?,
    )?;
    for key in service_keys(services) {
        map.insert(key, 1, 0)
            .context("writing the IPv6 services map")?;
    }
    Ok(())
}

/// The IPv6 flow table's key of the connection from `client` to `service`.
pub fn key_of(client: SocketAddrV6, service: SocketAddrV6) -> FrontendFlowKeyV6 {
    FrontendFlowKeyV6 {
        client_addr: client.ip().octets(),
        vip_addr: service.ip().octets(),
        client_port_be: u16::from_ne_bytes(client.port().to_be_bytes()),
        vip_port_be: u16::from_ne_bytes(service.port().to_be_bytes()),
    }
}

/// The core's flow of an IPv6 table key: [`key_of`] read back.
pub(super) fn flow_of(key: &FrontendFlowKeyV6) -> FlowKey {
    let end = |addr: [u8; 16], port_be: u16| {
        SocketAddrV6::new(addr.into(), u16::from_be_bytes(port_be.to_ne_bytes()), 0, 0).into()
    };
    FlowKey {
        client: end(key.client_addr, key.client_port_be),
        service: end(key.vip_addr, key.vip_port_be),
    }
}

/// The core's view of a pinned IPv6 flow, as `super::handover_of` gives an IPv4 one's.
pub(super) fn handover_of(value: &FrontendFlowV6) -> Handover {
    super::handover_from(
        SocketAddrV6::new(
            value.backend_addr.into(),
            u16::from_be_bytes(value.backend_port_be.to_ne_bytes()),
            0,
            0,
        )
        .into(),
        value.client_isn,
        value.client_next,
        value.close_state,
    )
}

/// A handed-off IPv6 connection's entry, as [`super::FastPath::install`] writes an IPv4
/// one: to `backend` (whose MAC the caller resolved), the client's ISN, its next
/// sequence number, and the front-end's ISN while the flow awaits the back-end's answer.
pub fn flow_value(
    backend: SocketAddrV6,
    backend_mac: [u8; 6],
    client_isn: u32,
    client_next: u32,
    awaiting_answer: Option<u32>,
) -> FrontendFlowV6 {
    FrontendFlowV6 {
        backend_addr: backend.ip().octets(),
        backend_port_be: u16::from_ne_bytes(backend.port().to_be_bytes()),
        backend_mac,
        client_isn,
        close_state: if awaiting_answer.is_some() {
            FrontendFlow::AWAITING_ANSWER
        } else {
            0
        },
        isn_f: awaiting_answer.unwrap_or(0),
        client_next,
        last_seen_ns: 0,
    }
}

/// The IPv6 flow table and notices ring, through their pins.
pub struct FastPathV6 {
    flows: HashMap<MapData, FrontendFlowKeyV6, FrontendFlowV6>,
    notices: RingBuf<MapData>,
    /// The `CLOCK_MONOTONIC` time of the last activity scan, in nanoseconds: stamps
    /// before it were told then ([`FastPathV6::for_each_forwarded_since_last_scan`]).
    scanned_ns: u64,
}

/// How far before the last scan a stamp is told again: the program stamps with the
/// coarse clock (`bpf_ktime_get_coarse_ns`, a scheduler tick behind at most, 4 ms at
/// 250 Hz), so a segment forwarded just after a scan may carry a stamp just before it.
/// Telling a stamp twice changes nothing (`FrontEnd::note_activity` keeps the latest).
const COARSE_CLOCK_SLACK_NS: u64 = 20_000_000;

impl FastPathV6 {
    /// Takes the IPv6 maps out of the loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            flows: HashMap::try_from(
                ebpf.take_map("FRONTEND_FLOWS_V6")
                    .context("map FRONTEND_FLOWS_V6 missing")?,
            )?,
            notices: RingBuf::try_from(
                ebpf.take_map("FRONTEND_NOTICES_V6")
                    .context("map FRONTEND_NOTICES_V6 missing")?,
            )?,
            scanned_ns: 0,
        })
    }

    /// Has the program forward the connection from `client` to `service` to `backend`
    /// ([`flow_value`]). An entry already there keeps the later `client_next` of its own
    /// and `client_next` (the program may have seen further), as for IPv4.
    #[expect(
        clippy::too_many_arguments,
        reason = "the flow's handoff terms, each needed, as FastPath::install's"
    )]
    pub fn install(
        &mut self,
        client: SocketAddrV6,
        service: SocketAddrV6,
        backend: SocketAddrV6,
        backend_mac: [u8; 6],
        client_isn: u32,
        client_next: u32,
        awaiting_answer: Option<u32>,
    ) -> anyhow::Result<()> {
        let key = key_of(client, service);
        let seen = self
            .flows
            .get(&key, 0)
            .ok()
            .filter(|seen| seen.client_isn == client_isn);
        let client_next = match seen {
            Some(seen) if (seen.client_next.wrapping_sub(client_next) as i32) > 0 => {
                seen.client_next
            }
            _ => client_next,
        };
        let mut value = flow_value(
            backend,
            backend_mac,
            client_isn,
            client_next,
            awaiting_answer,
        );
        // The close the program recorded in the connection's entry (its client's FIN or
        // RST, told in the same round as the answer, say) stays: a successor adopting the
        // entry must see it, whether or not this daemon lives to write it back.
        if let Some(seen) = seen {
            value.close_state |= seen.close_state & !FrontendFlow::AWAITING_ANSWER;
        }
        self.flows
            .insert(key, value, 0)
            .with_context(|| format!("writing the IPv6 flow of {client}"))
    }

    /// Every flow in the (pinned) table, for a starting daemon to adopt: collected
    /// first, since deleting while walking a BPF hash map restarts the walk.
    pub fn pinned(&self) -> Vec<(FrontendFlowKeyV6, FrontendFlowV6)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Takes `key`'s entry out of the table (a flow the core refused to adopt).
    pub(super) fn forget(&mut self, key: &FrontendFlowKeyV6) {
        let _ = self.flows.remove(key);
    }

    /// Writes into the table the close state of every flow whose entry says otherwise
    /// than the core (`super::close_state_differs`: a back-end's reset, or a close the
    /// core judged from a segment that reached it in the slow path; the program records
    /// the client's FIN and RST itself), for a successor daemon to resume from: called
    /// by the activity scan each second, so that even a killed daemon's successor frees
    /// a closed flow after its grace period and not at the idle timeout, and at exit.
    /// Each write follows a fresh lookup and is made only while the entry is still the
    /// connection's (its client ISN) and exists (`BPF_EXIST`), as IPv4's
    /// (`super::table::write_close_state` says why).
    pub fn record_close_states<D: Dispatch>(
        &mut self,
        fe: &FrontEnd<D>,
        stats: &mut super::FastPathStats,
    ) {
        let differs = |key: &FrontendFlowKeyV6, value: &FrontendFlowV6| {
            let handover = fe.handover(&flow_of(key))?;
            super::close_state_differs(value.client_isn, value.close_state, &handover)
                .then_some(handover)
        };
        // Collected first: few IPv6 flows (the slow path's handoffs), and the walk is
        // left undisturbed by the writes.
        let to_write: Vec<(FrontendFlowKeyV6, Handover)> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, value)| Some((key, differs(&key, &value)?)))
            .collect();
        for (key, handover) in to_write {
            let Ok(value) = self.flows.get(&key, 0) else {
                continue;
            };
            if !super::close_state_differs(value.client_isn, value.close_state, &handover) {
                continue;
            }
            let value = FrontendFlowV6 {
                close_state: handover.close_state(),
                ..value
            };
            if self
                .flows
                .insert(key, value, super::table::BPF_EXIST)
                .is_ok()
            {
                stats.close_states_recorded += 1;
            }
        }
    }

    /// The entry of the connection from `client` to `service`, if any.
    pub fn flow(&self, client: SocketAddrV6, service: SocketAddrV6) -> Option<FrontendFlowV6> {
        self.flows.get(&key_of(client, service), 0).ok()
    }

    /// Stops forwarding the connection from `client` to `service`; whether it had an
    /// entry.
    pub fn remove(&mut self, client: SocketAddrV6, service: SocketAddrV6) -> bool {
        self.flows.remove(&key_of(client, service)).is_ok()
    }

    /// Hands `seen` the key and stamp (`last_seen_ns`) of each IPv6 flow the program
    /// forwarded a segment of since the last scan, for the activity scan; `now_ns` is
    /// this scan's time. Entry by entry (a key walk and a lookup each): IPv6 flows are
    /// the slow path's handoffs only, few beside IPv4's batch-read table, until the
    /// program's IPv6 path makes handoffs of its own. A walk the kernel cuts short (an
    /// entry removed under it) ends the scan early; the next scan reads the rest, since
    /// it starts from this one's time.
    pub fn for_each_forwarded_since_last_scan(
        &mut self,
        now_ns: u64,
        mut seen: impl FnMut(&FrontendFlowKeyV6, u64),
    ) {
        let since = self.scanned_ns.saturating_sub(COARSE_CLOCK_SLACK_NS);
        for entry in self.flows.iter() {
            let Ok((key, value)) = entry else {
                return;
            };
            // Zero: installed and never forwarded since (the program stamps each
            // segment it forwards).
            if value.last_seen_ns != 0 && value.last_seen_ns > since {
                seen(&key, value.last_seen_ns);
            }
        }
        self.scanned_ns = now_ns;
    }

    /// Hands `apply` each notice the program wrote of an IPv6 flow, at most `max`;
    /// returns how many it read. Records shorter than a notice are skipped.
    pub fn read_notices(&mut self, max: usize, mut apply: impl FnMut(FlowNoticeV6)) -> usize {
        let mut read = 0;
        while read < max
            && let Some(record) = self.notices.next()
        {
            read += 1;
            if record.len() < size_of::<FlowNoticeV6>() {
                continue;
            }
            // SAFETY: `FlowNoticeV6` is `repr(C)` integers and bytes (aya `Pod`); the
            // length is checked; read unaligned.
            apply(unsafe { record.as_ptr().cast::<FlowNoticeV6>().read_unaligned() });
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_keys_and_services_are_in_network_order() {
        let client: SocketAddrV6 = "[2001:2::2]:40000".parse().unwrap();
        let service: SocketAddrV6 = "[2001:2:0:2::1]:80".parse().unwrap();
        let key = key_of(client, service);
        assert_eq!(key.client_addr, client.ip().octets());
        assert_eq!(key.vip_addr, service.ip().octets());
        assert_eq!(key.client_port_be.to_ne_bytes(), 40_000u16.to_be_bytes());
        assert_eq!(key.vip_port_be.to_ne_bytes(), 80u16.to_be_bytes());
        let other: SocketAddrV6 = "[2001:2:0:2::1]:443".parse().unwrap();
        let keys = service_keys(&[service, other]);
        assert_eq!(keys.len(), 3, "(VIP6, 80), (VIP6, 0), (VIP6, 443)");
        assert_eq!(keys[1].vip_port_be, 0);
        let backend: SocketAddrV6 = "[2001:2:0:1::b]:8080".parse().unwrap();
        let value = flow_value(backend, [2, 0, 0, 0, 0, 0xb], 7, 8, Some(9));
        assert_eq!(value.backend_addr, backend.ip().octets());
        assert_eq!(value.backend_port_be.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(value.close_state, FrontendFlow::AWAITING_ANSWER);
        assert_eq!(
            (value.client_isn, value.client_next, value.isn_f),
            (7, 8, 9)
        );
        assert_eq!(value.backend_id(), 0xb);
        assert_eq!(flow_value(backend, [0; 6], 7, 8, None).close_state, 0);
    }

    #[test]
    fn a_pinned_ipv6_entry_reads_back_as_the_flow_and_handover_written() {
        let client: SocketAddrV6 = "[2001:2::2]:40000".parse().unwrap();
        let service: SocketAddrV6 = "[2001:2:0:2::1]:80".parse().unwrap();
        let flow = flow_of(&key_of(client, service));
        assert_eq!(flow.client, std::net::SocketAddr::V6(client));
        assert_eq!(flow.service, std::net::SocketAddr::V6(service));
        let backend: SocketAddrV6 = "[2001:2:0:1::b]:8080".parse().unwrap();
        // Taken in awaiting the answer, then the client's FIN recorded by the program:
        // adopted with the FIN, the wait being the program's alone.
        let mut value = flow_value(backend, [2, 0, 0, 0, 0, 0xb], 7, 8, Some(9));
        value.close_state |=
            FrontendFlow::close_state_noticed(baton_common::frontend::FlowNotice::CLIENT_FIN);
        let handover = handover_of(&value);
        assert_eq!(handover.backend, std::net::SocketAddr::V6(backend));
        assert_eq!((handover.client_isn, handover.client_next), (7, 8));
        assert!(handover.client_fin);
        assert_eq!(handover.reset, None);
        assert_eq!(handover.close_state(), FrontendFlow::CLIENT_FIN);
        // The entry says what the core says: nothing to write back.
        assert!(!super::super::close_state_differs(
            value.client_isn,
            value.close_state,
            &handover
        ));
        // A back-end's reset the core saw is not in the entry: written back, unless the
        // entry is another connection's (another client ISN).
        let reset = Handover {
            reset: Some(baton_proto::frontend::ResetReason::BackendReset),
            ..handover
        };
        assert!(super::super::close_state_differs(
            7,
            value.close_state,
            &reset
        ));
        assert!(!super::super::close_state_differs(
            70,
            value.close_state,
            &reset
        ));
        let value = FrontendFlowV6 {
            close_state: reset.close_state(),
            ..value
        };
        assert_eq!(handover_of(&value).reset, reset.reset);
    }
}
