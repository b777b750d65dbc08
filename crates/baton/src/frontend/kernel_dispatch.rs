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
//! let mut kernel = KernelDispatch::load(&mut ebpf, &program, |ip| neighbours.mac(ip))?;
//! // on reload or a health transition:
//! kernel.update(&mut ebpf, &dispatcher.compile_kernel(..), |ip| neighbours.mac(ip))?;
//! ```

use std::net::Ipv4Addr;

use anyhow::Context as _;
use aya::{
    Ebpf, Pod,
    maps::{Array, MapData},
};
use baton_common::kernel_dispatch::{
    BACKENDS_PER_GENERATION, KernelBackend, KernelPool, KernelRuleSet, KernelSlot, KernelTerm,
    KernelText, MAX_KERNEL_POOLS, MAX_POOL_SLOTS, MAX_TERMS, MAX_TEXTS,
};
use baton_dispatch::KernelProgram;

/// The dispatch maps of a loaded `baton-frontend` object, and which generation is in
/// force.
#[derive(Debug)]
pub struct KernelDispatch {
    generation: u32,
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
        let active: Array<_, u32> = array(ebpf, "FRONTEND_DISPATCH_ACTIVE")?;
        let generation = active.get(&0, 0).context("read FRONTEND_DISPATCH_ACTIVE")? & 1;
        let mut this = Self { generation };
        this.update(ebpf, program, resolve_mac)?;
        Ok(this)
    }

    /// The generation the program reads.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Writes `program` into the generation not in force, then flips to it.
    pub fn update(
        &mut self,
        ebpf: &mut Ebpf,
        program: &KernelProgram,
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
        let backends = (0..BACKENDS_PER_GENERATION as usize).map(|i| {
            let Some(addr) = program.backends.get(i) else {
                return KernelBackend::default();
            };
            let mac = resolve_mac(*addr.ip());
            KernelBackend {
                addr_be: u32::from(*addr.ip()).to_be(),
                port_be: addr.port().to_be(),
                mac: mac.unwrap_or_default(),
                flags: if mac.is_some() {
                    KernelBackend::USABLE
                } else {
                    0
                },
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
