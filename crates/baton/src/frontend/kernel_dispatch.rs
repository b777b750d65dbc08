//! Dispatch in the kernel, from the daemon's side (issue 19): writes a compiled
//! [`KernelProgram`] (`Dispatcher::compile_kernel`) and the back-ends' MACs into the
//! `baton-frontend` object's dispatch maps, and swaps rule sets atomically.
//!
//! Every table holds two generations; `FRONTEND_DISPATCH_ACTIVE` names the one the
//! program reads. [`KernelDispatch::update`] writes the whole of the other generation
//! (back-ends, texts, terms, pools, slots, then its header), and only then flips the
//! index, one 4-byte write: a request reads the index once, so it sees the old rule set
//! or the new one, never half of each. Call it on every reload and every health change
//! (a new compile drops the down back-ends from the pools); a pool with none up makes
//! the kernel leave its requests to the slow path, which answers 503 as before.
//!
//! One window is left: a request that read the old index just before a flip could
//! still be reading the old generation when the *next* update rewrites it. An XDP run
//! takes a microsecond; updates come from reloads and health checks, seconds apart.
//!
//! Use, from the fast path's loader (after the object is loaded):
//!
//! ```ignore
//! let limits = config.request_limits();
//! let program = dispatcher.compile_kernel(limits.max_head_len, limits.max_headers);
//! let sets = dispatcher.lard_sets();
//! let mut kernel = KernelDispatch::load_with_sets(&mut ebpf, &program, sets, |ip| neighbours.mac(ip))?;
//! // on reload or a health transition:
//! let program = dispatcher.compile_kernel(..);
//! kernel.update_with_sets(&mut ebpf, &program, dispatcher.lard_sets(), |ip| neighbours.mac(ip))?;
//! // after each packet and batch of outputs, the LARD sets the slow path changed:
//! kernel.write_lard_changes(&mut ebpf, &mut dispatcher)?;
//! ```

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;
use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap as BpfHashMap, MapData},
};
use baton_common::kernel_dispatch::{
    BACKENDS_PER_GENERATION, KernelBackend, KernelLardKey, KernelLardSet, KernelPool,
    KernelRuleSet, KernelSlot, KernelTerm, KernelText, MAX_KERNEL_POOLS, MAX_LOAD_SLOTS,
    MAX_POOL_SLOTS, MAX_TERMS, MAX_TEXTS,
};
use baton_dispatch::{Dispatcher, KernelProgram};

/// The dispatch maps of a loaded `baton-frontend` object, and which generation is in
/// force.
#[derive(Debug)]
pub struct KernelDispatch {
    generation: u32,
    /// The back-ends' connection counts, shared with the program.
    loads: BackendLoads,
    /// The LARD sets written into each generation (`FRONTEND_LARD_SETS`' keys), deleted
    /// when that generation is written again.
    lard_keys: [HashSet<KernelLardKey>; 2],
    /// Reused by [`KernelDispatch::write_lard_changes`], so that it allocates nothing
    /// once grown.
    lard_changes: Vec<(KernelLardKey, KernelLardSet)>,
}

impl KernelDispatch {
    /// Writes `program` as a new generation and puts it in force. `resolve_mac` gives
    /// each back-end's MAC on the LAN; a back-end without one is written unusable, and
    /// the kernel leaves requests it would pick to the slow path.
    pub fn load(
        ebpf: &mut Ebpf,
        program: &KernelProgram,
        resolve_mac: impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
    ) -> anyhow::Result<Self> {
        Self::load_with_sets(ebpf, program, [], resolve_mac)
    }

    /// [`KernelDispatch::load`] with the LARD pools' server sets
    /// (`Dispatcher::lard_sets`).
    pub fn load_with_sets(
        ebpf: &mut Ebpf,
        program: &KernelProgram,
        lard_sets: impl IntoIterator<Item = (u32, u32, KernelLardSet)>,
        resolve_mac: impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
    ) -> anyhow::Result<Self> {
        let active: Array<_, u32> = array(ebpf, "FRONTEND_DISPATCH_ACTIVE")?;
        let generation = active.get(&0, 0).context("read FRONTEND_DISPATCH_ACTIVE")? & 1;
        let loads = BackendLoads::map(ebpf)?;
        let mut this = Self {
            generation,
            loads,
            lard_keys: Default::default(),
            lard_changes: Vec::new(),
        };
        this.update_with_sets(ebpf, program, lard_sets, resolve_mac)?;
        Ok(this)
    }

    /// The generation the program reads.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Writes `program` into the generation not in force, then flips to it; its LARD
    /// pools start with no server sets.
    pub fn update(
        &mut self,
        ebpf: &mut Ebpf,
        program: &KernelProgram,
        resolve_mac: impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
    ) -> anyhow::Result<()> {
        self.update_with_sets(ebpf, program, [], resolve_mac)
    }

    /// Writes `program` into the generation not in force, with the LARD pools' server
    /// sets (`Dispatcher::lard_sets`: pool, slot, set), then flips to it.
    pub fn update_with_sets(
        &mut self,
        ebpf: &mut Ebpf,
        program: &KernelProgram,
        lard_sets: impl IntoIterator<Item = (u32, u32, KernelLardSet)>,
        mut resolve_mac: impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
    ) -> anyhow::Result<()> {
        let next = self.generation ^ 1;
        let enabled = program.set.flags & KernelRuleSet::ENABLED != 0;
        anyhow::ensure!(
            program.backends.len() <= BACKENDS_PER_GENERATION as usize
                && program.terms.len() <= MAX_TERMS as usize
                && program.texts.len() <= MAX_TEXTS as usize
                && program.pools.len() <= MAX_KERNEL_POOLS as usize
                && program.slots.len() <= MAX_POOL_SLOTS as usize,
            "the compiled rules exceed the kernel's tables"
        );
        let loads = &mut self.loads;
        let backends = (0..BACKENDS_PER_GENERATION as usize).map(|i| {
            let Some(addr) = program.backends.get(i) else {
                return KernelBackend::default();
            };
            let mac = resolve_mac(*addr.ip());
            // A back-end with no count (past every slot a daemon has) is not counted
            // right by the kernel: its requests go up.
            let load_slot = loads.slot((*addr).into());
            KernelBackend {
                addr_be: u32::from(*addr.ip()).to_be(),
                port_be: addr.port().to_be(),
                mac: mac.unwrap_or_default(),
                flags: if mac.is_some() && load_slot.is_some() {
                    KernelBackend::USABLE
                } else {
                    0
                },
                load_slot: load_slot.unwrap_or(0),
            }
        });
        write(
            ebpf,
            "FRONTEND_BACKENDS",
            next * BACKENDS_PER_GENERATION,
            backends,
        )?;
        write::<KernelText>(
            ebpf,
            "FRONTEND_RULE_TEXTS",
            next * MAX_TEXTS,
            program.texts.iter().copied(),
        )?;
        write::<KernelTerm>(
            ebpf,
            "FRONTEND_RULE_TERMS",
            next * MAX_TERMS,
            program.terms.iter().copied(),
        )?;
        write::<KernelPool>(
            ebpf,
            "FRONTEND_POOLS",
            next * MAX_KERNEL_POOLS,
            program.pools.iter().copied(),
        )?;
        write::<KernelSlot>(
            ebpf,
            "FRONTEND_POOL_SLOTS",
            next * MAX_POOL_SLOTS,
            program.slots.iter().copied(),
        )?;
        // The generation's LARD sets: those of two updates ago go, the dispatcher's
        // current ones come (a reload's dispatcher starts with none).
        let mut sets = lard_map(ebpf)?;
        for key in self.lard_keys[next as usize].drain() {
            // Gone already is as good.
            let _ = sets.remove(&key);
        }
        for (pool, slot, set) in lard_sets {
            if pool < MAX_KERNEL_POOLS {
                let key = KernelLardKey {
                    pool: next * MAX_KERNEL_POOLS + pool,
                    slot,
                };
                write_lard(&mut sets, &mut self.lard_keys[next as usize], key, set);
            }
        }
        let set = KernelRuleSet {
            flags: if enabled { KernelRuleSet::ENABLED } else { 0 },
            ..program.set
        };
        write(ebpf, "FRONTEND_RULE_SETS", next, [set])?;
        // The one write that puts the new rule set in force, after every table of its
        // generation (the lab test `kernel_routing::reloads_under_load_swap_whole_rule_sets`
        // catches a flip before them, or tables written into the live generation).
        write(ebpf, "FRONTEND_DISPATCH_ACTIVE", 0, [next])?;
        self.generation = next;
        Ok(())
    }

    /// Writes the LARD sets the dispatcher changed since the last call
    /// (`Dispatcher::take_lard_changes`) into the generation in force: one system call
    /// per changed set, and none when nothing changed. Called after each packet the
    /// daemon handles and each batch of the core's outputs, so that a set the slow path
    /// made is in the kernel before the daemon reads the next packet; meanwhile the
    /// kernel sends that target's requests up (its copy holds no set for it, or one
    /// whose pick would change it), and the slow path decides them as the kernel will.
    pub fn write_lard_changes(
        &mut self,
        ebpf: &mut Ebpf,
        dispatcher: &mut Dispatcher,
    ) -> anyhow::Result<()> {
        let generation = self.generation;
        let changes = &mut self.lard_changes;
        changes.clear();
        dispatcher.take_lard_changes(|pool, slot, set| {
            if pool < MAX_KERNEL_POOLS {
                let key = KernelLardKey {
                    pool: generation * MAX_KERNEL_POOLS + pool,
                    slot,
                };
                changes.push((key, set));
            }
        });
        // Most packets change no set: then not even the map is looked up.
        if self.lard_changes.is_empty() {
            return Ok(());
        }
        let mut sets = lard_map(ebpf)?;
        let keys = &mut self.lard_keys[generation as usize];
        for &(key, set) in &self.lard_changes {
            write_lard(&mut sets, keys, key, set);
        }
        Ok(())
    }

    /// Brings the connection counts both engines pick by up to date: the dispatcher
    /// takes in the program's count of its handoffs to each back-end, and the program
    /// the dispatcher's books ([`BackendLoads::sync`]).
    pub fn sync_loads(&mut self, dispatcher: &mut Dispatcher) {
        self.loads.sync(dispatcher);
    }

    /// Turns dispatch in the kernel off: every request goes to the slow path.
    pub fn disable(&mut self, ebpf: &mut Ebpf) -> anyhow::Result<()> {
        let next = self.generation ^ 1;
        write(ebpf, "FRONTEND_RULE_SETS", next, [KernelRuleSet::default()])?;
        write(ebpf, "FRONTEND_DISPATCH_ACTIVE", 0, [next])?;
        self.generation = next;
        Ok(())
    }
}

fn array<'a, T: Pod>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<Array<&'a mut MapData, T>> {
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("the object has no map {name}"))?;
    Array::try_from(map).with_context(|| format!("{name} is not an array of that value"))
}

fn lard_map(
    ebpf: &mut Ebpf,
) -> anyhow::Result<BpfHashMap<&mut MapData, KernelLardKey, KernelLardSet>> {
    let map = ebpf
        .map_mut("FRONTEND_LARD_SETS")
        .context("the object has no map FRONTEND_LARD_SETS")?;
    BpfHashMap::try_from(map).context("FRONTEND_LARD_SETS is not a hash map of LARD sets")
}

/// Writes one LARD set. A set that cannot be written (the map full) is removed
/// instead: without an entry the kernel sends its target's requests up, which is
/// slower but never a pick the dispatcher would not make, as a stale set could be.
fn write_lard(
    sets: &mut BpfHashMap<&mut MapData, KernelLardKey, KernelLardSet>,
    keys: &mut HashSet<KernelLardKey>,
    key: KernelLardKey,
    set: KernelLardSet,
) {
    if sets.insert(key, set, 0).is_ok() {
        keys.insert(key);
    } else {
        let _ = sets.remove(&key);
        keys.remove(&key);
    }
}

/// Writes `values` from index `first` on.
fn write<T: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    first: u32,
    values: impl IntoIterator<Item = T>,
) -> anyhow::Result<()> {
    let mut map = array::<T>(ebpf, name)?;
    for (i, value) in values.into_iter().enumerate() {
        let index = first + i as u32;
        map.set(index, value, 0)
            .with_context(|| format!("write {name}[{index}]"))?;
    }
    Ok(())
}

/// The back-ends' connection counts, shared with the XDP program through the memory of
/// two arrays the daemon maps (`BPF_F_MMAPABLE`), so that reading and writing them
/// costs no system call: `FRONTEND_BACKEND_OPENED`, the program's count of its
/// handoffs to each back-end (it adds to it atomically; read here), and
/// `FRONTEND_BACKEND_BOOKED`, the dispatcher's books (`Dispatcher::booked_connections`,
/// written here only). Each engine writes its own array only, so no increment of one is
/// lost to the other's read-modify-write; the count is their sum
/// (`baton_common::kernel_dispatch::backend_load`).
///
/// Indexed by a slot each back-end's address gets the first time it is seen, kept for
/// the daemon's life (the maps are not pinned: a new daemon starts from zero, and counts
/// the connections it adopts by the core's feedback).
#[derive(Debug)]
pub struct BackendLoads {
    opened: Shared,
    booked: Shared,
    slots: HashMap<SocketAddrV4, u16>,
    /// Reused by [`BackendLoads::sync`], so that it allocates nothing.
    books: Vec<(SocketAddr, u64)>,
}

/// One mapped array of [`MAX_LOAD_SLOTS`] `u64`s.
#[derive(Debug)]
struct Shared {
    base: NonNull<AtomicU64>,
    len: usize,
}

impl Shared {
    fn map(ebpf: &Ebpf, name: &str, writable: bool) -> anyhow::Result<Self> {
        let Some(aya::maps::Map::Array(data)) = ebpf.map(name) else {
            anyhow::bail!("the object has no array {name}");
        };
        let len = MAX_LOAD_SLOTS as usize * size_of::<u64>();
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a new shared mapping of the map's own pages (the kernel checks that
        // the map is mmapable and `len` within it); nothing else is mapped over.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mmap {name}"));
        }
        let base = NonNull::new(base.cast()).context("mmap gave a null address")?;
        Ok(Self { base, len })
    }

    fn at(&self, slot: u16) -> &AtomicU64 {
        let slot = usize::from(slot).min(MAX_LOAD_SLOTS as usize - 1);
        // SAFETY: within the mapping (`slot` bounded above), aligned (page-aligned base,
        // 8-byte values), alive while `self` is; the program touches it atomically.
        unsafe { self.base.add(slot).as_ref() }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `Shared::map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain shared memory, touched only through atomics.
unsafe impl Send for Shared {}

impl BackendLoads {
    fn map(ebpf: &Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            opened: Shared::map(ebpf, "FRONTEND_BACKEND_OPENED", false)?,
            booked: Shared::map(ebpf, "FRONTEND_BACKEND_BOOKED", true)?,
            slots: HashMap::new(),
            books: Vec::new(),
        })
    }

    /// The slot of `addr`'s counts, a new one the first time; `None` once every slot
    /// is taken.
    fn slot(&mut self, addr: SocketAddr) -> Option<u16> {
        // The program's counts are of IPv4 back-ends: its dispatch is IPv4's.
        let SocketAddr::V4(addr) = addr else {
            return None;
        };
        if let Some(&slot) = self.slots.get(&addr) {
            return Some(slot);
        }
        let slot = u16::try_from(self.slots.len())
            .ok()
            .filter(|&s| u32::from(s) < MAX_LOAD_SLOTS)?;
        // A fresh slot's count is zero (the maps are this daemon's own), and the
        // program hands nothing off to it before a generation naming it is written.
        self.slots.insert(addr, slot);
        Some(slot)
    }

    /// The program's count of its handoffs into the dispatcher
    /// (`Dispatcher::set_kernel_opened`), and the dispatcher's books into the program's
    /// array, for every back-end the dispatcher lists. A few loads and stores per
    /// back-end: called before each decision the daemon makes where a pool picks by
    /// the counts, and after each batch of the core's outputs.
    pub fn sync(&mut self, dispatcher: &mut Dispatcher) {
        self.books.clear();
        self.books.extend(dispatcher.booked_connections());
        for k in 0..self.books.len() {
            let (addr, booked) = self.books[k];
            let Some(slot) = self.slot(addr) else {
                continue;
            };
            self.booked.at(slot).store(booked, Ordering::Relaxed);
            let opened = self.opened.at(slot).load(Ordering::Relaxed);
            dispatcher.set_kernel_opened(addr, opened);
        }
    }
}
