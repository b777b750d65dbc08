//! The flow table beyond what aya offers: whole-table reads in batches
//! (`BPF_MAP_LOOKUP_BATCH`), deletes in batches (`BPF_MAP_DELETE_BATCH`), and the
//! close-state writes that keep the program's own fields.

use aya::maps::{HashMap, MapData};
use baton_common::frontend::{FrontendFlow, FrontendFlowKey};
use baton_proto::frontend::Handover;

use super::{
    FastPathStats, needs_close_state,
    sys::{bpf, map_fd},
};

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
        self.keys.clear();
        self.values.clear();
        let fd = map_fd(map);
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
            let error = unsafe { bpf(Self::LOOKUP_BATCH, &mut attr) }.err();
            let got = (attr.count as usize).min(chunk);
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

/// `BPF_MAP_DELETE_BATCH` (`enum bpf_cmd`).
const DELETE_BATCH: libc::c_long = 27;

/// What [`delete_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deleted {
    /// Entries removed.
    pub(super) removed: usize,
    /// Keys with no entry (replaced or removed by the program meanwhile).
    pub(super) missing: usize,
}

/// Deletes every key of `keys` from `map` in one system call, more only past a key
/// already gone: the kernel's walk stops at the first key it cannot delete
/// (`generic_map_delete_batch`, `count` saying how many went before it), which is then
/// skipped and the rest sent again.
pub(super) fn delete_all(map: &MapData, keys: &[FrontendFlowKey]) -> std::io::Result<Deleted> {
    let fd = map_fd(map);
    let mut done = Deleted::default();
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `count` keys, alive for the call; the kernel only
        // reads them.
        let result = unsafe { bpf(DELETE_BATCH, &mut attr) };
        let deleted = (attr.count as usize).min(rest.len());
        done.removed += deleted;
        match result {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        done.missing += 1;
        rest = &rest[(deleted + 1).min(rest.len())..];
    }
    Ok(done)
}

/// Writes `handover`'s close state (and client ISN) into the table's entry for `key`,
/// for a successor daemon to resume from, if the entry says otherwise
/// ([`needs_close_state`]).
///
/// The entry is read afresh first, and left alone unless it is still the connection's
/// (its client ISN): the program replaces a closed flow's entry when its client opens a
/// new connection on the ports (`FrontendFlow::replaced_by_syn`), and a value read
/// earlier (the scan's batch) written back would send the new connection to the old
/// one's back-end. A lookup per close state to write: rare, the program recording the
/// client's FIN and RST itself.
pub(super) fn write_close_state(
    flows: &mut HashMap<MapData, FrontendFlowKey, FrontendFlow>,
    key: &FrontendFlowKey,
    handover: &Handover,
    stats: &mut FastPathStats,
) {
    let Ok(value) = flows.get(key, 0) else {
        return;
    };
    if !needs_close_state(&value, handover) {
        return;
    }
    let value = FrontendFlow {
        close_state: handover.close_state(),
        client_isn: handover.client_isn,
        ..value
    };
    // BPF_EXIST: never re-create an entry removed meanwhile.
    if flows.insert(key, value, BPF_EXIST).is_ok() {
        stats.close_states_recorded += 1;
    }
}

/// `BPF_EXIST` (`linux/bpf.h`): update an element only if it exists.
pub(super) const BPF_EXIST: u64 = 2;

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::super::sys::ElemAttr;
    use super::*;

    /// `BPF_MAP_CREATE` and `BPF_MAP_UPDATE_ELEM` (`enum bpf_cmd`).
    const MAP_CREATE: libc::c_long = 0;
    const UPDATE_ELEM: libc::c_long = 2;

    /// A hash map shaped as the flow table, made with the bare system call (this test
    /// needs no object file), or `None` when not root.
    fn flow_table() -> Option<MapData> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED delete_all: needs root to make a BPF map");
            return None;
        }
        #[repr(C)]
        #[derive(Default)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let mut attr = CreateAttr {
            map_type: 1, // BPF_MAP_TYPE_HASH
            key_size: size_of::<FrontendFlowKey>() as u32,
            value_size: size_of::<FrontendFlow>() as u32,
            max_entries: 64,
            map_flags: 0,
        };
        // SAFETY: `attr` is a valid prefix of `union bpf_attr` for BPF_MAP_CREATE, and
        // holds no pointer. (Not through `bpf`: this command answers a descriptor.)
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                MAP_CREATE,
                &raw mut attr,
                size_of::<CreateAttr>(),
            )
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Some(MapData::from_fd(fd).unwrap())
    }

    fn put(map: &MapData, key: &FrontendFlowKey) {
        let value = FrontendFlow::default();
        let mut attr = ElemAttr {
            map_fd: map_fd(map),
            key: std::ptr::from_ref(key) as u64,
            value: std::ptr::from_ref(&value) as u64,
            ..ElemAttr::default()
        };
        // SAFETY: `attr` points at a key and a value of the map's sizes, alive for the
        // call.
        unsafe { bpf(UPDATE_ELEM, &mut attr) }.unwrap();
    }

    fn key(port: u16) -> FrontendFlowKey {
        FrontendFlowKey {
            client_addr_be: u32::from_ne_bytes([198, 18, 0, 2]),
            vip_addr_be: u32::from_ne_bytes([198, 18, 2, 1]),
            client_port_be: port.to_be(),
            vip_port_be: 80u16.to_be(),
        }
    }

    #[test]
    fn a_batch_delete_goes_on_past_a_key_already_gone() {
        let Some(map) = flow_table() else { return };
        for port in [1, 2, 3, 4] {
            put(&map, &key(port));
        }
        // 9 and 10 were never there (replaced by the program, say): the kernel's walk
        // stops at each, and the rest is sent again.
        let keys = [key(1), key(9), key(2), key(10), key(3)];
        let done = delete_all(&map, &keys).unwrap();
        assert_eq!(
            done,
            Deleted {
                removed: 3,
                missing: 2
            }
        );
        let mut left = FlowBatch::default();
        left.read_all(&map).unwrap();
        assert_eq!(left.keys, [key(4)], "only the key not asked for is left");
        assert_eq!(delete_all(&map, &[]).unwrap(), Deleted::default());
        let last = delete_all(&map, &[key(9), key(4)]).unwrap();
        assert_eq!(
            last,
            Deleted {
                removed: 1,
                missing: 1
            }
        );
    }
}
