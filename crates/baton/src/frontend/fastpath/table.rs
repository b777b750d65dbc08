//! The flow table beyond what aya offers: whole-table reads in batches
//! (`BPF_MAP_LOOKUP_BATCH`), and the close-state writes that keep the program's own
//! fields.

use aya::maps::{HashMap, MapData};
use baton_common::frontend::{FrontendFlow, FrontendFlowKey};
use baton_proto::frontend::Handover;

use super::{FastPathStats, Installed};

/// The whole flow table, read in batches; the buffers are kept between scans, so a scan
/// allocates nothing once they have grown to the table's size.
#[derive(Default)]
pub(super) struct FlowBatch {
    pub(super) keys: Vec<FrontendFlowKey>,
    pub(super) values: Vec<FrontendFlow>,
}

/// `struct bpf_attr` for the `BPF_MAP_*_BATCH` commands (`linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
pub(super) struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

impl FlowBatch {
    /// Entries asked for per system call.
    const CHUNK: usize = 4096;
    /// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd`).
    const LOOKUP_BATCH: libc::c_long = 24;

    /// Replaces the buffers' contents with every entry of `map`. A hash table's batch
    /// token is a bucket index (`u32`); `ENOENT` ends the walk, with the last entries
    /// still returned; `ENOSPC` (a bucket with more entries than asked for) doubles the
    /// chunk.
    pub(super) fn read_all(&mut self, map: &MapData) -> std::io::Result<()> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self.keys.clear();
        self.values.clear();
        let fd = map.fd().as_fd().as_raw_fd() as u32;
        let mut chunk = Self::CHUNK;
        let (mut token_in, mut token_out) = (0u32, 0u32);
        let mut first = true;
        loop {
            let start = self.keys.len();
            self.keys.resize(start + chunk, FrontendFlowKey::default());
            self.values.resize(start + chunk, FrontendFlow::default());
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw const token_in as u64 },
                out_batch: &raw mut token_out as u64,
                keys: self.keys[start..].as_mut_ptr() as u64,
                values: self.values[start..].as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: fd,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` points at buffers with room for `count` keys and values,
            // and at the two tokens, all alive for the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    Self::LOOKUP_BATCH,
                    &raw mut attr,
                    size_of::<BatchAttr>(),
                )
            };
            let got = (attr.count as usize).min(chunk);
            let error = (rc < 0).then(std::io::Error::last_os_error);
            match error.as_ref().and_then(std::io::Error::raw_os_error) {
                Some(libc::ENOSPC) if got == 0 => {
                    self.keys.truncate(start);
                    self.values.truncate(start);
                    chunk *= 2;
                    continue;
                }
                _ => {}
            }
            self.keys.truncate(start + got);
            self.values.truncate(start + got);
            match error {
                None => {}
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Some(e) => return Err(e),
            }
            token_in = token_out;
            first = false;
        }
    }
}

/// Writes `handover`'s close state (and client ISN) into the table's entry for `key`,
/// for a successor daemon to resume from; `installed` remembers what was written.
///
/// The entry is read afresh first, and left alone unless it is still the connection's
/// (its client ISN): the program replaces a closed flow's entry when its client opens a
/// new connection on the ports (`FrontendFlow::replaced_by_syn`), and a value read
/// earlier (the scan's batch) written back would send the new connection to the old
/// one's back-end. A lookup per change of close state, about one per connection, at
/// the scan.
pub(super) fn write_close_state(
    flows: &mut HashMap<MapData, FrontendFlowKey, FrontendFlow>,
    key: &FrontendFlowKey,
    handover: &Handover,
    installed: &mut Installed,
    stats: &mut FastPathStats,
) {
    let Ok(value) = flows.get(key, 0) else {
        return;
    };
    if value.client_isn != handover.client_isn {
        return;
    }
    let value = FrontendFlow {
        close_state: handover.close_state(),
        client_isn: handover.client_isn,
        ..value
    };
    // BPF_EXIST: never re-create an entry removed meanwhile.
    if flows.insert(key, value, BPF_EXIST).is_ok() {
        installed.close_state = value.close_state;
        stats.close_states_recorded += 1;
    }
}

/// `BPF_EXIST` (`linux/bpf.h`): update an element only if it exists.
pub(super) const BPF_EXIST: u64 = 2;
