//! The system calls and kernel tables the fast path reads besides its maps: the
//! interface's MAC (`SIOCGIFHWADDR`) and the neighbour table (rtnetlink, both families).

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, bail};
use baton_proto::frontend::Instant;

use crate::neighbours::NeighbourTable;

/// The back-ends' MACs, read from the kernel's neighbour table (ARP's and neighbour
/// discovery's entries, one rtnetlink dump for both: `crate::neighbours`). Read once per
/// scan ([`FastPath::scan_activity`], every second) and again when a handoff names a
/// back-end not in it (at most every [`Neighbours::MISS_REREAD`]), rather than at every
/// handoff: reading the table costs system calls (with `/proc/net/arp`, the reader
/// before this one, an open, a read and a close, 7% of the daemon's time under
/// `Connection: close` load when done at every handoff). A back-end whose MAC changes (a
/// replaced host keeping its address) is forwarded to the old MAC for at most a scan.
///
/// [`FastPath::scan_activity`]: super::FastPath
#[derive(Debug, Default)]
pub(super) struct Neighbours {
    pub(super) macs: StdHashMap<Ipv4Addr, [u8; 6]>,
    /// IPv6 neighbours, kept apart so that IPv4 lookups hash the 4-byte key as before.
    pub(super) macs6: StdHashMap<Ipv6Addr, [u8; 6]>,
    /// When a miss last made the table be read again.
    pub(super) last_miss_read: Option<Instant>,
    /// The rtnetlink socket, opened at the first read and kept: one socket for the
    /// daemon's life rather than one per read.
    table: Option<NeighbourTable>,
    /// The interface's index, which the dump's entries name it by; looked up once (the
    /// capture socket is bound to the same index for the daemon's life).
    ifindex: Option<u32>,
}

impl Neighbours {
    /// Shortest time between two reads caused by misses, so that a back-end with no
    /// resolved neighbour entry (off-link, misconfigured) costs a read per 100 ms, not
    /// one per handoff.
    pub(super) const MISS_REREAD: std::time::Duration = std::time::Duration::from_millis(100);

    /// Reads the table again: every resolved entry of `interface`, both families. A
    /// failed read leaves the tables with what it got (empty at worst: lookups then miss,
    /// and the handoff waits for the next read), and opens a fresh socket next time.
    pub(super) fn refresh(&mut self, interface: &str) {
        self.macs.clear();
        self.macs6.clear();
        let Some(ifindex) = self.ifindex.or_else(|| interface_index(interface)) else {
            return;
        };
        self.ifindex = Some(ifindex);
        if self.table.is_none() {
            self.table = NeighbourTable::open().ok();
        }
        let Some(table) = &mut self.table else {
            return;
        };
        let (macs, macs6) = (&mut self.macs, &mut self.macs6);
        let read = table.dump(ifindex, |neighbour| match neighbour.addr {
            IpAddr::V4(addr) => {
                macs.insert(addr, neighbour.mac);
            }
            IpAddr::V6(addr) => {
                macs6.insert(addr, neighbour.mac);
            }
        });
        if read.is_err() {
            self.table = None;
        }
    }

    /// The MAC of `addr` (either family) on `interface`, from the last read, or from a
    /// new one if it is missing and none was made for a miss within
    /// [`Neighbours::MISS_REREAD`].
    pub(super) fn lookup(
        &mut self,
        now: Instant,
        addr: impl Into<IpAddr>,
        interface: &str,
    ) -> Option<[u8; 6]> {
        let addr = addr.into();
        if let Some(mac) = self.cached(addr) {
            return Some(mac);
        }
        let due = self
            .last_miss_read
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::MISS_REREAD);
        if !due {
            return None;
        }
        self.last_miss_read = Some(now);
        self.refresh(interface);
        self.cached(addr)
    }

    fn cached(&self, addr: IpAddr) -> Option<[u8; 6]> {
        match addr {
            IpAddr::V4(addr) => self.macs.get(&addr).copied(),
            IpAddr::V6(addr) => self.macs6.get(&addr).copied(),
        }
    }
}

/// The index of `interface` in this network namespace, `None` if it has none.
fn interface_index(interface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_neighbour_rereads_the_table_at_most_every_interval() {
        let mut n = Neighbours::default();
        let t0 = Instant::from_nanos(1_000_000_000);
        let nowhere: Ipv4Addr = "198.18.1.99".parse().unwrap();
        // `lo` has no resolved entries: every read finds nothing.
        assert_eq!(n.lookup(t0, nowhere, "lo"), None);
        assert_eq!(n.last_miss_read, Some(t0));
        let soon = t0 + Neighbours::MISS_REREAD / 2;
        assert_eq!(n.lookup(soon, nowhere, "lo"), None);
        assert_eq!(n.last_miss_read, Some(t0), "re-read within the interval");
        let later = t0 + Neighbours::MISS_REREAD;
        assert_eq!(n.lookup(later, nowhere, "lo"), None);
        assert_eq!(n.last_miss_read, Some(later));
        // A cached MAC is answered without a read.
        n.macs.insert(nowhere, [2, 0, 0, 0, 0, 1]);
        assert_eq!(n.lookup(later, nowhere, "lo"), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn each_family_is_looked_up_in_its_own_table() {
        let mut n = Neighbours::default();
        let t0 = Instant::from_nanos(1_000_000_000);
        let v4: Ipv4Addr = "198.18.1.11".parse().unwrap();
        let v6: Ipv6Addr = "2001:2:0:1::b".parse().unwrap();
        n.macs.insert(v4, [2, 0, 0, 0, 0, 4]);
        n.macs6.insert(v6, [2, 0, 0, 0, 0, 6]);
        assert_eq!(n.lookup(t0, v4, "lo"), Some([2, 0, 0, 0, 0, 4]));
        assert_eq!(n.lookup(t0, v6, "lo"), Some([2, 0, 0, 0, 0, 6]));
        assert_eq!(n.lookup(t0, IpAddr::V6(v6), "lo"), Some([2, 0, 0, 0, 0, 6]));
        assert_eq!(n.last_miss_read, None, "hits read nothing");
        // The IPv4-mapped form of a cached IPv4 address is another family's address.
        assert_eq!(n.lookup(t0, v4.to_ipv6_mapped(), "lo"), None);
        assert_eq!(n.last_miss_read, Some(t0));
    }

    /// The reader over the kernel's own table: `lo` exists in every namespace and has
    /// no neighbours, so a read succeeds and finds none (the socket is kept).
    #[test]
    fn reading_a_table_without_neighbours_leaves_both_empty_and_keeps_the_socket() {
        let mut n = Neighbours::default();
        n.macs
            .insert("198.18.1.11".parse().unwrap(), [2, 0, 0, 0, 0, 4]);
        n.refresh("lo");
        assert!(n.macs.is_empty() && n.macs6.is_empty());
        assert_eq!(n.ifindex, Some(1));
        assert!(n.table.is_some(), "the read succeeded");
        n.refresh("no-such-interface0");
        assert_eq!(n.ifindex, Some(1), "looked up once");
    }
}
