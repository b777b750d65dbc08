//! The system calls and kernel tables the fast path reads besides its maps: the
//! interface's MAC (`SIOCGIFHWADDR`) and the neighbour table (`/proc/net/arp`).

use std::{collections::HashMap as StdHashMap, net::Ipv4Addr};

use anyhow::{Context as _, bail};
use baton_proto::frontend::Instant;

/// The back-ends' MACs, read from the kernel's neighbour table. Read once per scan
/// ([`FastPath::scan_activity`], every second) and again when a handoff names a back-end
/// not in it (at most every [`Neighbours::MISS_REREAD`]), rather than at every handoff:
/// reading `/proc/net/arp` costs an open, a read and a close, and at every handoff it was
/// 7% of the daemon's time under `Connection: close` load. A back-end whose MAC changes
/// (a replaced host keeping its address) is forwarded to the old MAC for at most a scan.
#[derive(Debug, Default)]
pub(super) struct Neighbours {
    pub(super) macs: StdHashMap<Ipv4Addr, [u8; 6]>,
    /// When a miss last made the table be read again.
    pub(super) last_miss_read: Option<Instant>,
}

impl Neighbours {
    /// Shortest time between two reads caused by misses, so that a back-end with no
    /// resolved neighbour entry (off-link, misconfigured) costs a read per 100 ms, not
    /// one per handoff.
    pub(super) const MISS_REREAD: std::time::Duration = std::time::Duration::from_millis(100);

    pub(super) fn refresh(&mut self, interface: &str) {
        self.macs.clear();
        if let Ok(table) = std::fs::read_to_string("/proc/net/arp") {
            self.macs.extend(parse_arp_table(&table, interface));
        }
    }

    pub(super) fn lookup(
        &mut self,
        now: Instant,
        addr: Ipv4Addr,
        interface: &str,
    ) -> Option<[u8; 6]> {
        if let Some(mac) = self.macs.get(&addr) {
            return Some(*mac);
        }
        let due = self
            .last_miss_read
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::MISS_REREAD);
        if !due {
            return None;
        }
        self.last_miss_read = Some(now);
        self.refresh(interface);
        self.macs.get(&addr).copied()
    }
}

/// The interface's MAC (`SIOCGIFHWADDR`: asks the kernel of this network namespace,
/// unlike `/sys`, which shows the namespace it was mounted in).
pub(super) fn interface_mac(interface: &str) -> anyhow::Result<[u8; 6]> {
    let req = interface_request(interface, libc::SIOCGIFHWADDR, "the MAC")?;
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// The interface's MTU (`SIOCGIFMTU`, in this network namespace as above).
pub fn interface_mtu(interface: &str) -> anyhow::Result<u32> {
    let req = interface_request(interface, libc::SIOCGIFMTU, "the MTU")?;
    // SAFETY: SIOCGIFMTU filled the MTU member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).with_context(|| format!("{interface} reports an MTU of {mtu}"))
}

/// One `ifreq` ioctl (`request`) about `interface`, answered; `what` names it in errors.
fn interface_request(
    interface: &str,
    request: libc::Ioctl,
    what: &str,
) -> anyhow::Result<libc::ifreq> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("socket for reading {what} of {interface}"));
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
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), request, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading {what} of {interface}"));
    }
    Ok(req)
}

/// `ATF_COM` (`linux/if_arp.h`): the entry is resolved.
pub(super) const ATF_COM: u32 = 0x02;

/// The resolved entries of `interface` in `/proc/net/arp`'s text (which follows the
/// reader's network namespace). The handoff itself made the kernel resolve a back-end:
/// the SYN' and the ACK' went to it through the neighbour table.
pub(super) fn parse_arp_table<'a>(
    table: &'a str,
    interface: &'a str,
) -> impl Iterator<Item = (Ipv4Addr, [u8; 6])> + 'a {
    table.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw_type, flags, mac, _mask, device] = fields.as_slice() else {
            return None;
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        if *device != interface || flags & ATF_COM == 0 {
            return None;
        }
        let ip = ip.parse::<Ipv4Addr>().ok()?;
        let mut out = [0u8; 6];
        let mut parts = mac.split(':');
        for byte in &mut out {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some((ip, out))
    })
}

/// `struct bpf_attr` for the `BPF_MAP_*_ELEM` commands (`linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
pub(super) struct ElemAttr {
    pub(super) map_fd: u32,
    pub(super) _pad: u32,
    pub(super) key: u64,
    pub(super) value: u64,
    pub(super) flags: u64,
}

/// A map's descriptor as `bpf(2)`'s attributes take it.
pub(super) fn map_fd(map: &aya::maps::MapData) -> u32 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    map.fd().as_fd().as_raw_fd() as u32
}

/// `bpf(2)` with command `cmd` and `attr`, that command's part of `union bpf_attr`, for
/// what aya does not offer (batch reads and deletes, lookup-and-delete on a hash).
///
/// # Safety
///
/// Every pointer in `attr` must be valid, for the call, for what `cmd` reads or writes
/// through it.
pub(super) unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: `attr` is a live, exclusive `A` of the size passed; its pointers are the
    // caller's promise.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<A>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
