//! The program's half-open map from the daemon's side: the SYN options of clients
//! without timestamps that the program answered with a marked cookie
//! (`baton_common::syncookie`, "Clients without timestamps"), which the protocol core
//! takes at the client's first data segment through [`HalfOpenSyns`].

use aya::maps::MapData;
use baton_common::{frontend::FrontendFlowKey, syncookie::HalfOpenSyn};
use baton_proto::frontend::{FlowKey, HalfOpenSyns};

use super::{
    FastPathStats, key_of,
    sys::{ElemAttr, bpf, map_fd},
};

/// The map (`FRONTEND_HALF_OPEN`), through its descriptor.
pub(super) struct HalfOpenMap {
    map: MapData,
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (`enum bpf_cmd`; hash maps since Linux 5.14).
const LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

impl HalfOpenMap {
    pub(super) fn new(map: MapData) -> Self {
        Self { map }
    }

    /// Removes `key`'s entry and returns it, in one system call (aya offers it for
    /// queues and stacks only). `Ok(None)` if there is none.
    fn take(&self, key: &FrontendFlowKey) -> std::io::Result<Option<HalfOpenSyn>> {
        let mut value = HalfOpenSyn::default();
        let mut attr = ElemAttr {
            map_fd: map_fd(&self.map),
            key: std::ptr::from_ref(key) as u64,
            value: (&raw mut value) as u64,
            ..ElemAttr::default()
        };
        // SAFETY: `attr` points at the key and at room for one value of the map's value
        // size (`HalfOpenSyn`, the program's own type), alive for the call.
        match unsafe { bpf(LOOKUP_AND_DELETE_ELEM, &mut attr) } {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The map lent to the core for one packet ([`FrontEnd::handle_packet_with`]), with the
/// fast path's counters for the failures it cannot report itself.
///
/// [`FrontEnd::handle_packet_with`]: baton_proto::frontend::FrontEnd::handle_packet_with
pub struct HalfOpenLookup<'a> {
    pub(super) map: &'a HalfOpenMap,
    pub(super) stats: &'a mut FastPathStats,
}

impl HalfOpenSyns for HalfOpenLookup<'_> {
    fn take(&mut self, flow: &FlowKey) -> Option<HalfOpenSyn> {
        match self.map.take(&key_of(flow)) {
            Ok(found) => found,
            Err(e) => {
                // Not expected of a live map; the core then resets the connection as
                // for an entry gone, and the count says why.
                self.stats.half_open_take_failed += 1;
                crate::log::warn("half_open_take_failed", &[("error", &e)]);
                None
            }
        }
    }
}
