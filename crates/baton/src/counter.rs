//! `baton counter`: the per-interface packet and byte counter, loaded from the embedded
//! eBPF object and attached to an interface's tc ingress and egress hooks.

use aya::{
    Ebpf,
    maps::{MapError, PerCpuHashMap},
    programs::{SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use baton_common::counter::{Direction, TrafficCount, TrafficKey};
use serde::Serialize;

use anyhow::Context as _;

/// A loaded and attached counter. Dropping it detaches the programs (their tcx links
/// belong to this process) and frees the map.
pub struct TrafficCounter {
    ebpf: Ebpf,
    iface: String,
    ifindex: u32,
}

/// Totals for one interface since the counter was attached.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub ingress: Totals,
    pub egress: Totals,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl From<TrafficCount> for Totals {
    fn from(c: TrafficCount) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl TrafficCounter {
    /// Loads the counter programs and attaches them to `iface` in this process's network
    /// namespace (tcx links on Linux >= 6.6, so other tc programs there are untouched).
    pub fn attach(iface: &str) -> anyhow::Result<Self> {
        let ifindex = ifindex(iface)?;
        if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
            // Before tcx (Linux 6.6) tc programs hang off a clsact qdisc. It may exist
            // already (EEXIST is fine); any real problem shows up when attaching below.
            let _ = tc::qdisc_add_clsact(iface);
        }
        let mut ebpf = Ebpf::load(crate::ebpf::COUNTER).context("loading the eBPF object")?;
        for (name, hook) in [
            ("traffic_in", TcAttachType::Ingress),
            ("traffic_out", TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("loading {name} (the verifier's log follows)"))?;
            prog.attach(iface, hook)
                .with_context(|| format!("attaching {name} to {iface} {hook:?}"))?;
        }
        Ok(Self {
            ebpf,
            iface: iface.into(),
            ifindex,
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reads the totals, summing the per-CPU values.
    pub fn read(&self) -> anyhow::Result<Counts> {
        let map: PerCpuHashMap<_, TrafficKey, TrafficCount> = PerCpuHashMap::try_from(
            self.ebpf
                .map("TRAFFIC")
                .context("map TRAFFIC missing from the eBPF object")?,
        )?;
        let total = |direction| -> anyhow::Result<Totals> {
            match map.get(&TrafficKey::new(self.ifindex, direction), 0) {
                Ok(per_cpu) => Ok(per_cpu
                    .iter()
                    .fold(TrafficCount::default(), |sum, c| sum.add(*c))
                    .into()),
                // No packet that way yet.
                Err(MapError::KeyNotFound) => Ok(Totals::default()),
                Err(e) => Err(e).context("reading map TRAFFIC"),
            }
        };
        Ok(Counts {
            ingress: total(Direction::Ingress)?,
            egress: total(Direction::Egress)?,
        })
    }
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name contains a NUL byte")?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        anyhow::bail!("no interface `{iface}` in this network namespace");
    }
    Ok(index)
}
