//! The XDP fast path, from the daemon's side: loads the embedded `baton-frontend` object
//! (see `crates/baton-ebpf/src/frontend.rs` for the program and why it is XDP), attaches
//! it to the LAN interface in native (driver) mode, writes its configuration, and keeps
//! its flow table in step with the protocol core's events: a flow goes in when it is
//! handed off and out when it is closed or reset.
//!
//! **Failure is not fatal.** The slow path forwards handed-off flows correctly on its
//! own, so if the object cannot be loaded or attached (an old kernel, a driver without
//! native XDP, a verifier refusal) the daemon logs `fastpath_unavailable` with the
//! reason, counts it, and runs without. Generic (skb-mode) XDP is never used as a
//! fallback: it keeps `CHECKSUM_PARTIAL` through `XDP_TX`, which would corrupt the
//! complete checksums the program writes.
//!
//! **Lifetime.** Not pinned yet: the XDP link lives as long as the daemon (its
//! descriptor is closed at exit, or by the kernel if the daemon dies), so a restart
//! loses the table and the handed-off connections with it, as it already loses the
//! core's state. Pinning the maps and the link under a bpffs folder, so that a restarted
//! daemon reattaches and its connections keep flowing, is the next step (issue 5, item 3).
//!
//! **Activity.** The program stamps each flow with the time of its last forwarded
//! packet (`CLOCK_MONOTONIC`, the daemon's clock too); [`FastPath::scan_activity`] reads
//! the stamps of the flows the daemon installed and tells the core, which would
//! otherwise time the quiet-to-it flows out as idle.

use std::{
    collections::HashMap as StdHashMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use baton_common::frontend::{FrontendConfig, FrontendFlow, FrontendFlowKey, stat};
use baton_proto::frontend::{FlowKey, FrontEnd, Instant};

use super::log;

/// The daemon's fast-path bookkeeping, printed with the other counters at exit.
#[derive(Debug, Default)]
pub struct FastPathStats {
    /// 1 when the program could not be loaded or attached (see `fastpath_unavailable`).
    pub load_failed: u64,
    /// Flows inserted into the XDP table.
    pub flows_installed: u64,
    /// Handed-off flows left to the slow path: the table refused the insert.
    pub install_failed: u64,
    /// Handed-off flows left to the slow path: the back-end's MAC was not in the
    /// neighbour table (not on the interface's link).
    pub no_neighbour: u64,
    /// Flows removed after a close or reset.
    pub flows_removed: u64,
    /// Times the core was told a flow is alive because the fast path forwarded for it.
    pub activity_noted: u64,
}

/// The attached program and its maps.
pub struct FastPath {
    /// Owns the program and its XDP link: dropping it detaches.
    _ebpf: Ebpf,
    interface: String,
    flows: HashMap<MapData, FrontendFlowKey, FrontendFlow>,
    stats: PerCpuArray<MapData, u64>,
    /// Flows installed, with the last-seen stamp already reported to the core.
    installed: StdHashMap<FlowKey, u64>,
}

impl FastPath {
    /// Loads the program, writes its configuration and attaches it to `interface`.
    pub fn attach(interface: &str, service: SocketAddrV4) -> anyhow::Result<Self> {
        let mac = interface_mac(interface)?;
        let mut ebpf = EbpfLoader::new()
            .load(crate::ebpf::FRONTEND)
            .context("loading the fast path's eBPF object")?;
        // The configuration goes in before the program can see a packet.
        let mut config: Array<_, FrontendConfig> = Array::try_from(
            ebpf.map_mut("FRONTEND_CONFIG")
                .context("map FRONTEND_CONFIG missing")?,
        )?;
        config.set(
            0,
            FrontendConfig {
                vip_addr_be: u32::from_ne_bytes(service.ip().octets()),
                vip_port_be: u16::from_ne_bytes(service.port().to_be_bytes()),
                interface_mac: mac,
                flags: FrontendConfig::ENABLED,
            },
            0,
        )?;
        let flows = HashMap::try_from(
            ebpf.take_map("FRONTEND_FLOWS")
                .context("map FRONTEND_FLOWS missing")?,
        )?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map("FRONTEND_STATS")
                .context("map FRONTEND_STATS missing")?,
        )?;
        let prog: &mut Xdp = ebpf
            .program_mut("frontend_forward")
            .context("program frontend_forward missing")?
            .try_into()?;
        prog.load()
            .context("loading frontend_forward (the verifier's log follows)")?;
        prog.attach(interface, XdpMode::Driver)
            .with_context(|| format!("attaching frontend_forward to {interface} (native XDP)"))?;
        Ok(Self {
            _ebpf: ebpf,
            interface: interface.to_string(),
            flows,
            stats,
            installed: StdHashMap::new(),
        })
    }

    /// Sends `flow`'s client packets to `backend` from now on. Failures leave the flow
    /// to the slow path, counted.
    pub fn install(&mut self, flow: FlowKey, backend: SocketAddrV4, stats: &mut FastPathStats) {
        let Some(mac) = neighbour_mac(*backend.ip(), &self.interface) else {
            stats.no_neighbour += 1;
            log::line(
                "fastpath_no_neighbour",
                &[("client", &flow.client), ("backend", &backend)],
            );
            return;
        };
        let value = FrontendFlow {
            backend_addr_be: u32::from_ne_bytes(backend.ip().octets()),
            backend_port_be: u16::from_ne_bytes(backend.port().to_be_bytes()),
            backend_mac: mac,
            _pad: [0; 4],
            last_seen_ns: 0,
        };
        match self.flows.insert(key_of(&flow), value, 0) {
            Ok(()) => {
                stats.flows_installed += 1;
                self.installed.insert(flow, 0);
            }
            Err(e) => {
                stats.install_failed += 1;
                log::line(
                    "fastpath_install_failed",
                    &[("client", &flow.client), ("error", &e)],
                );
            }
        }
    }

    /// Stops forwarding `flow` (it is closed or reset); a flow never installed is a
    /// no-op.
    pub fn remove(&mut self, flow: &FlowKey, stats: &mut FastPathStats) {
        if self.installed.remove(flow).is_some() && self.flows.remove(&key_of(flow)).is_ok() {
            stats.flows_removed += 1;
        }
    }

    /// Tells the core about every installed flow the program forwarded for since the
    /// last scan.
    pub fn scan_activity<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) {
        for (flow, noted) in &mut self.installed {
            let Ok(value) = self.flows.get(&key_of(flow), 0) else {
                continue;
            };
            if value.last_seen_ns > *noted {
                *noted = value.last_seen_ns;
                fe.note_activity(now, flow);
                stats.activity_noted += 1;
            }
        }
    }

    /// The program's counters summed over CPUs, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        stat::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let total = self
                    .stats
                    .get(&(i as u32), 0)
                    .map_or(0, |per_cpu| per_cpu.iter().sum());
                (*name, total)
            })
            .collect()
    }
}

fn key_of(flow: &FlowKey) -> FrontendFlowKey {
    FrontendFlowKey {
        client_addr_be: u32::from_ne_bytes(flow.client.ip().octets()),
        vip_addr_be: u32::from_ne_bytes(flow.service.ip().octets()),
        client_port_be: u16::from_ne_bytes(flow.client.port().to_be_bytes()),
        vip_port_be: u16::from_ne_bytes(flow.service.port().to_be_bytes()),
    }
}

/// The interface's MAC (`SIOCGIFHWADDR`: asks the kernel of this network namespace,
/// unlike `/sys`, which shows the namespace it was mounted in).
fn interface_mac(interface: &str) -> anyhow::Result<[u8; 6]> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFHWADDR");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        bail!("interface name `{interface}` too long");
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFHWADDR,
            &mut req,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the MAC of {interface}"));
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// The MAC of `addr` on `interface` from the kernel's neighbour table
/// (`/proc/net/arp`, which follows the reader's network namespace). The handoff itself
/// made the kernel resolve it: the SYN' and the ACK' went to the back-end through it.
fn neighbour_mac(addr: Ipv4Addr, interface: &str) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp_table(&table, addr, interface)
}

/// `ATF_COM` (`linux/if_arp.h`): the entry is resolved.
const ATF_COM: u32 = 0x02;

fn parse_arp_table(table: &str, addr: Ipv4Addr, interface: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw_type, flags, mac, _mask, device] = fields.as_slice() else {
            return None;
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        if ip.parse::<Ipv4Addr>().ok()? != addr || *device != interface || flags & ATF_COM == 0 {
            return None;
        }
        let mut out = [0u8; 6];
        let mut parts = mac.split(':');
        for byte in &mut out {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
198.18.1.11      0x1         0x2         02:ba:70:12:01:0b     *        eth0
198.18.1.12      0x1         0x0         00:00:00:00:00:00     *        eth0
198.18.1.13      0x1         0x2         02:ba:70:12:01:0d     *        eth1
";

    #[test]
    fn neighbours_are_found_only_when_resolved_on_the_interface() {
        let be1: Ipv4Addr = "198.18.1.11".parse().unwrap();
        assert_eq!(
            parse_arp_table(TABLE, be1, "eth0"),
            Some([0x02, 0xba, 0x70, 0x12, 0x01, 0x0b])
        );
        assert_eq!(
            parse_arp_table(TABLE, "198.18.1.12".parse().unwrap(), "eth0"),
            None
        );
        assert_eq!(
            parse_arp_table(TABLE, "198.18.1.13".parse().unwrap(), "eth0"),
            None
        );
        assert_eq!(
            parse_arp_table(TABLE, "198.18.1.14".parse().unwrap(), "eth0"),
            None
        );
    }

    #[test]
    fn flow_keys_are_in_network_order() {
        let flow = FlowKey {
            client: "198.18.0.2:50000".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        };
        let key = key_of(&flow);
        assert_eq!(key.client_addr_be.to_ne_bytes(), [198, 18, 0, 2]);
        assert_eq!(key.vip_port_be.to_ne_bytes(), [0, 80]);
        assert_eq!(key.client_port_be.to_ne_bytes(), 50000u16.to_be_bytes());
    }
}
