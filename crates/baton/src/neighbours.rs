//! The kernel's neighbour table (ARP for IPv4, neighbour discovery for IPv6) over
//! rtnetlink: one `RTM_GETNEIGH` dump of family `AF_UNSPEC` answers both families, which
//! `/proc/net/arp` (IPv4 only) cannot. The front-end reads back-ends' MACs from it.
//!
//! This module only reads the table; it must never change it (no `RTM_NEWNEIGH`), and it
//! depends on nothing but `std`, `libc` and [`crate::netlink`] (the socket, the message
//! and attribute walks it shares with `backend::sockdiag`), because the fuzz crate
//! includes these files by path to fuzz [`parse_dump`] without building `baton`.
//!
//! The wire layouts mirrored here, as byte offsets rather than Rust structs so that a
//! reply is only ever read through bounds-checked slices:
//! - [`struct ndmsg`, `NDA_*`, `NUD_*`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/neighbour.h)
//! - [`struct rtattr`, `RTM_*`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/rtnetlink.h)
//!
//! `ndmsg` fields are in host byte order; `NDA_DST` holds the address
//! in network byte order.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::netlink::DumpStatus;
use crate::netlink::{self, Fault, NLMSG_HDRLEN, read_u16_ne, read_u32_ne};

/// One resolved entry of the neighbour table: an address on the link and its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    /// The neighbour's IP address, of either family.
    pub addr: IpAddr,
    /// Its Ethernet address.
    pub mac: [u8; 6],
}

/// Why a neighbour dump's reply could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourError {
    /// A message header, payload or attribute runs past the end of its container.
    Truncated {
        /// Byte offset of the message in the datagram.
        offset: usize,
    },
    /// A message's `nlmsg_len` is shorter than the netlink header itself.
    BadLength {
        /// Byte offset of the message in the datagram.
        offset: usize,
        /// The length it claimed.
        len: u32,
    },
    /// The kernel answered with an error (`NLMSG_ERROR`, or a negative `NLMSG_DONE`).
    Kernel {
        /// The positive errno.
        errno: i32,
    },
    /// A message type this dump never produces (including `NLMSG_OVERRUN`).
    UnexpectedType(u16),
    /// A datagram larger than the receive buffer: the kernel cut it short.
    DatagramTooLarge {
        /// The datagram's real length.
        len: usize,
    },
}

impl fmt::Display for NeighbourError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { offset } => {
                write!(f, "neighbour message at byte {offset} is truncated")
            }
            Self::BadLength { offset, len } => {
                write!(f, "neighbour message at byte {offset} has bad length {len}")
            }
            Self::Kernel { errno } => write!(
                f,
                "neighbour dump failed: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            Self::UnexpectedType(ty) => write!(f, "unexpected netlink message type {ty}"),
            Self::DatagramTooLarge { len } => write!(
                f,
                "neighbour datagram of {len} bytes exceeds the receive buffer"
            ),
        }
    }
}

impl std::error::Error for NeighbourError {}

impl From<Fault> for NeighbourError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Truncated { offset } => Self::Truncated { offset },
            Fault::BadLength { offset, len } => Self::BadLength { offset, len },
            Fault::Kernel { errno } => Self::Kernel { errno },
            Fault::UnexpectedType(ty) => Self::UnexpectedType(ty),
            Fault::DatagramTooLarge { len } => Self::DatagramTooLarge { len },
        }
    }
}

impl From<NeighbourError> for io::Error {
    fn from(err: NeighbourError) -> Self {
        match err {
            NeighbourError::Kernel { errno } => io::Error::from_raw_os_error(errno),
            _ => io::Error::new(io::ErrorKind::InvalidData, err),
        }
    }
}

// --- include/uapi/linux/rtnetlink.h, neighbour.h ----------------------------------------

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

/// `struct ndmsg`: `u8 family, u8 pad1, u16 pad2, s32 ifindex, u16 state, u8 flags,
/// u8 type`; attributes (`struct rtattr`) follow.
const NDM_FAMILY: usize = 0;
const NDM_IFINDEX: usize = 4;
const NDM_STATE: usize = 8;
const NDMSG_LEN: usize = 12;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// The states taken: `NUD_VALID` (`NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE |
/// NUD_PROBE | NUD_STALE | NUD_DELAY`, those with a usable link-layer address) less
/// `NUD_NOARP`. `/proc/net/arp`, the reader this one replaced, showed exactly these: it
/// marks `NUD_VALID` entries `ATF_COM` (`arp_state_to_flags`, net/ipv4/arp.c) and skips
/// `NUD_NOARP` ones (`NEIGH_SEQ_SKIP_NOARP` in `arp_seq_start`), which are the kernel's
/// own (a loopback's 0.0.0.0, IPv6 multicast groups' 33:33:.. addresses), never a
/// back-end. `NUD_INCOMPLETE` and `NUD_FAILED` entries carry no address (or a stale one).
pub const NUD_RESOLVED: u16 = 0x80 | 0x02 | 0x10 | 0x04 | 0x08;

/// At most this many datagrams in one dump (about 250,000 entries at ~130 bytes each,
/// far more than `gc_thresh3`'s default of 1,024 per family): a bound on the read, so a
/// kernel that never says `NLMSG_DONE` cannot keep the daemon's loop here.
pub const MAX_DATAGRAMS: usize = 1024;

/// How long one `recv` may wait. The kernel answers at once; this only keeps a broken
/// exchange from hanging the daemon.
const RECV_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 0,
    tv_usec: 500_000,
};

/// An rtnetlink socket with its receive buffer, opened once and asked at each refresh.
#[derive(Debug)]
pub struct NeighbourTable {
    socket: netlink::Socket,
}

impl NeighbourTable {
    /// Opens the rtnetlink socket in the caller's network namespace. Reading the
    /// neighbour table needs no privilege.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            socket: netlink::Socket::open(libc::NETLINK_ROUTE, RECV_TIMEOUT, "neighbour dump")?,
        })
    }

    /// Dumps the table (both families) and gives `found` every resolved entry on the
    /// interface `ifindex` with an Ethernet address. On an error, entries already given
    /// stay given; the caller decides what a partial read is worth.
    pub fn dump(&mut self, ifindex: u32, mut found: impl FnMut(Neighbour)) -> io::Result<()> {
        self.socket
            .dump(dump_request, Some(MAX_DATAGRAMS), |datagram, seq| {
                parse_dump(datagram, seq, ifindex, &mut found)
            })
    }
}

/// An `RTM_GETNEIGH` dump request of family `AF_UNSPEC` (every neighbour table). The
/// interface is filtered in [`parse_dump`]: kernels filter a dump by `ndm_ifindex` only
/// under `NETLINK_GET_STRICT_CHK`, and the reply carries it either way.
fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + NDMSG_LEN] {
    let mut msg = [0; NLMSG_HDRLEN + NDMSG_LEN];
    netlink::write_dump_header(&mut msg, RTM_GETNEIGH, seq);
    // ndm_family 0: AF_UNSPEC.
    msg
}

/// Parses one received datagram of an `RTM_GETNEIGH` dump, giving `found` every entry
/// of the interface `ifindex` in a [`NUD_RESOLVED`] state with a 6-byte link-layer address
/// and an IPv4 or IPv6 destination. Messages of another sequence number (a late reply to
/// an abandoned dump) and entries of other families are skipped.
///
/// The bytes are read only through bounds-checked slices, and each loop is bounded by
/// the datagram's length: any malformed input yields an error, never a panic.
pub fn parse_dump(
    buf: &[u8],
    seq: u32,
    ifindex: u32,
    found: &mut impl FnMut(Neighbour),
) -> Result<DumpStatus, NeighbourError> {
    netlink::walk(buf, |message| {
        if message.seq != seq {
            return Ok(None);
        }
        if message.ty == RTM_NEWNEIGH {
            if let Some(neighbour) = parse_ndmsg(message.payload, ifindex, message.offset)? {
                found(neighbour);
            }
            return Ok(None);
        }
        Ok(netlink::control(message)?)
    })
}

/// Reads one `RTM_NEWNEIGH` payload (`struct ndmsg` and its attributes): the entry, if
/// it is one the caller wants.
fn parse_ndmsg(
    payload: &[u8],
    ifindex: u32,
    offset: usize,
) -> Result<Option<Neighbour>, NeighbourError> {
    let truncated = NeighbourError::Truncated { offset };
    let ndmsg = payload.get(..NDMSG_LEN).ok_or(truncated)?;
    let family = *ndmsg.get(NDM_FAMILY).ok_or(truncated)?;
    let index = read_u32_ne(ndmsg, NDM_IFINDEX).ok_or(truncated)?;
    let state = read_u16_ne(ndmsg, NDM_STATE).ok_or(truncated)?;
    let mut dst = None;
    let mut lladdr = None;
    let attrs = payload.get(NDMSG_LEN..).unwrap_or_default();
    netlink::for_each_attribute(attrs, offset, |ty, value| match ty {
        NDA_DST => dst = Some(value),
        NDA_LLADDR => lladdr = Some(value),
        _ => {}
    })?;
    if index != ifindex || state & NUD_RESOLVED == 0 {
        return Ok(None);
    }
    // Not Ethernet (an IP tunnel's 4-byte or 16-byte "addresses", an InfiniBand one):
    // not a neighbour a frame can be sent to from here.
    let Some(Ok(mac)) = lladdr.map(<[u8; 6]>::try_from) else {
        return Ok(None);
    };
    let addr = match (i32::from(family), dst) {
        (libc::AF_INET, Some(d)) => match <[u8; 4]>::try_from(d) {
            Ok(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Err(_) => return Err(truncated),
        },
        (libc::AF_INET6, Some(d)) => match <[u8; 16]>::try_from(d) {
            Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
            Err(_) => return Err(truncated),
        },
        // Another family's table (a bridge's, an MPLS one), or no address at all.
        _ => return Ok(None),
    };
    Ok(Some(Neighbour { addr, mac }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_ERROR, NLMSG_FLAGS, NLMSG_LEN, NLMSG_SEQ, NLMSG_TYPE};

    /// The dump's sequence number and the interface, as captured below.
    const SEQ: u32 = 0x6b17_2fe5;
    const NBR0: u32 = 3;

    /// One datagram of a Linux 6.18 kernel's reply to `ip neigh show dev nbr0` (strace
    /// `-e read=4`), in a namespace where `nbr0` (ifindex 3) had 198.18.1.11 REACHABLE,
    /// 198.18.1.12 INCOMPLETE (no `NDA_LLADDR`), 2001:2:0:1::b STALE and the kernel's own
    /// ff02::16 NOARP (MLD's multicast group); then `NLMSG_DONE`. Each entry carries
    /// `NDA_DST`, `NDA_LLADDR` (if any), `NDA_PROBES` and `NDA_CACHEINFO`.
    #[rustfmt::skip] // 16 bytes a line, as the capture printed them
    const CAPTURED: [u8; 336] = [
        0x4c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x22, 0x00, 0xe5, 0x2f, 0x17, 0x6b, 0x57, 0x4d, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x03, 0x08, 0x00, 0x01, 0x00,
        0xc6, 0x12, 0x01, 0x0b, 0x0a, 0x00, 0x02, 0x00, 0x02, 0xba, 0x70, 0x12, 0x01, 0x0b, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x1b, 0x00, 0x00, 0x00,
        0x1b, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00,
        0x1c, 0x00, 0x22, 0x00, 0xe5, 0x2f, 0x17, 0x6b, 0x57, 0x4d, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x03, 0x08, 0x00, 0x01, 0x00, 0xc6, 0x12, 0x01, 0x0c,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x86, 0x17, 0x00, 0x00,
        0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x58, 0x00, 0x00, 0x00,
        0x1c, 0x00, 0x22, 0x00, 0xe5, 0x2f, 0x17, 0x6b, 0x57, 0x4d, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x01, 0x14, 0x00, 0x01, 0x00, 0x20, 0x01, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x0a, 0x00, 0x02, 0x00,
        0x02, 0xba, 0x70, 0x12, 0x01, 0x0b, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x03, 0x00, 0x89, 0x17, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x58, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x22, 0x00, 0xe5, 0x2f, 0x17, 0x6b,
        0x57, 0x4d, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x05,
        0x14, 0x00, 0x01, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x16, 0x0a, 0x00, 0x02, 0x00, 0x33, 0x33, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x8e, 0x17, 0x00, 0x00,
        0x1e, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x02, 0x00, 0xe5, 0x2f, 0x17, 0x6b, 0x57, 0x4d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// Where each message of [`CAPTURED`] starts.
    const REACHABLE_V4: std::ops::Range<usize> = 0..0x4c;
    const INCOMPLETE_V4: std::ops::Range<usize> = 0x4c..0x8c;
    const STALE_V6: std::ops::Range<usize> = 0x8c..0xe4;
    const DONE: std::ops::Range<usize> = 0x13c..0x150;

    fn collect(buf: &[u8], ifindex: u32) -> (Result<DumpStatus, NeighbourError>, Vec<Neighbour>) {
        let mut out = Vec::new();
        let status = parse_dump(buf, SEQ, ifindex, &mut |n| out.push(n));
        (status, out)
    }

    fn mac() -> [u8; 6] {
        [0x02, 0xba, 0x70, 0x12, 0x01, 0x0b]
    }

    #[test]
    fn layout_sizes_match_uapi() {
        assert_eq!(NLMSG_HDRLEN, size_of::<libc::nlmsghdr>());
        assert_eq!(NDMSG_LEN, 12, "sizeof(struct ndmsg)");
    }

    #[test]
    fn both_families_resolved_on_the_interface_are_found() {
        let (status, found) = collect(&CAPTURED, NBR0);
        assert_eq!(status, Ok(DumpStatus::Done));
        let want = |addr: &str, mac: [u8; 6]| Neighbour {
            addr: addr.parse().unwrap(),
            mac,
        };
        assert_eq!(
            found,
            [want("198.18.1.11", mac()), want("2001:2:0:1::b", mac())],
            "the INCOMPLETE entry and the kernel's NOARP one are left out"
        );
        let (status, found) = collect(&CAPTURED, 2);
        assert_eq!(status, Ok(DumpStatus::Done));
        assert!(found.is_empty(), "another interface's entries: {found:?}");
    }

    #[test]
    fn only_valid_states_with_an_ethernet_address_count() {
        for (state, wanted) in [
            (0x01u16, false), // INCOMPLETE
            (0x02, true),     // REACHABLE
            (0x04, true),     // STALE
            (0x08, true),     // DELAY
            (0x10, true),     // PROBE
            (0x20, false),    // FAILED
            (0x40, false),    // NOARP
            (0x80, true),     // PERMANENT
        ] {
            for entry in [REACHABLE_V4, STALE_V6] {
                let mut m = CAPTURED[entry].to_vec();
                m[NLMSG_HDRLEN + NDM_STATE..][..2].copy_from_slice(&state.to_ne_bytes());
                let (status, found) = collect(&m, NBR0);
                assert_eq!(status, Ok(DumpStatus::More), "no DONE yet");
                assert_eq!(found.len(), usize::from(wanted), "state {state:#x}");
            }
        }
        // Valid but without an address: nothing to send to.
        let mut m = CAPTURED[INCOMPLETE_V4].to_vec();
        m[NLMSG_HDRLEN + NDM_STATE] = 0x02;
        assert!(collect(&m, NBR0).1.is_empty());
        // A tunnel's 4-byte link-layer address is no MAC.
        let mut m = CAPTURED[REACHABLE_V4].to_vec();
        m[NLMSG_HDRLEN + NDMSG_LEN + 8] = 0x08;
        assert!(collect(&m, NBR0).1.is_empty());
    }

    #[test]
    fn late_replies_of_another_dump_are_skipped() {
        let mut out = Vec::new();
        let status = parse_dump(&CAPTURED, SEQ + 1, NBR0, &mut |n| out.push(n));
        assert_eq!(status, Ok(DumpStatus::More), "not this dump's DONE either");
        assert!(out.is_empty());
    }

    #[test]
    fn errors_and_acknowledgements_end_the_dump() {
        let error = |status: i32| {
            let mut m = CAPTURED[DONE].to_vec();
            m[NLMSG_LEN] = (2 * NLMSG_HDRLEN + 4) as u8;
            m[NLMSG_TYPE] = NLMSG_ERROR as u8;
            m[NLMSG_HDRLEN..].copy_from_slice(&status.to_ne_bytes());
            m.extend_from_slice(&dump_request(SEQ)[..NLMSG_HDRLEN]);
            m
        };
        assert_eq!(collect(&error(0), NBR0).0, Ok(DumpStatus::Done));
        assert_eq!(
            collect(&error(-libc::EPERM), NBR0).0,
            Err(NeighbourError::Kernel { errno: libc::EPERM })
        );
        let mut done = CAPTURED[DONE].to_vec();
        done[NLMSG_HDRLEN..].copy_from_slice(&(-libc::EINTR).to_ne_bytes());
        assert_eq!(
            collect(&done, NBR0).0,
            Err(NeighbourError::Kernel { errno: libc::EINTR })
        );
        // An old kernel's DONE without a status.
        let mut bare = CAPTURED[DONE][..NLMSG_HDRLEN].to_vec();
        bare[NLMSG_LEN] = NLMSG_HDRLEN as u8;
        assert_eq!(collect(&bare, NBR0).0, Ok(DumpStatus::Done));
        let mut other = CAPTURED[DONE].to_vec();
        other[NLMSG_TYPE] = 24; // RTM_NEWROUTE
        assert_eq!(
            collect(&other, NBR0).0,
            Err(NeighbourError::UnexpectedType(24))
        );
    }

    #[test]
    fn every_truncation_is_an_error_and_never_a_panic() {
        // Cut anywhere inside the first message: its claimed length runs past the end.
        for cut in 1..REACHABLE_V4.end {
            let (status, found) = collect(&CAPTURED[..cut], NBR0);
            assert!(
                matches!(status, Err(NeighbourError::Truncated { offset: 0 })),
                "cut at {cut}: {status:?}"
            );
            assert!(found.is_empty());
        }
        // A message's length cut short of its ndmsg (the bytes after it then read as
        // the next message's header).
        let mut m = CAPTURED[REACHABLE_V4].to_vec();
        m[NLMSG_LEN] = (NLMSG_HDRLEN + 8) as u8;
        assert!(matches!(
            collect(&m, NBR0).0,
            Err(NeighbourError::Truncated { offset: 0 })
        ));
        // An attribute longer than its message.
        let mut m = CAPTURED[REACHABLE_V4].to_vec();
        m[NLMSG_HDRLEN + NDMSG_LEN] = 0x40;
        assert!(matches!(
            collect(&m, NBR0).0,
            Err(NeighbourError::Truncated { .. })
        ));
        // An attribute shorter than its own header.
        m[NLMSG_HDRLEN + NDMSG_LEN] = 2;
        assert!(matches!(
            collect(&m, NBR0).0,
            Err(NeighbourError::Truncated { .. })
        ));
        // An IPv4 entry with a 16-byte destination.
        let mut v6_in_v4 = CAPTURED[STALE_V6].to_vec();
        v6_in_v4[NLMSG_HDRLEN + NDM_FAMILY] = libc::AF_INET as u8;
        assert!(matches!(
            collect(&v6_in_v4, NBR0).0,
            Err(NeighbourError::Truncated { .. })
        ));
        // A header claiming less than itself.
        let mut short = CAPTURED.to_vec();
        short[0] = 8;
        assert_eq!(
            collect(&short, NBR0).0,
            Err(NeighbourError::BadLength { offset: 0, len: 8 })
        );
    }

    #[test]
    fn request_bytes() {
        let r = dump_request(0x0102_0304);
        assert_eq!(r.len(), 28);
        assert_eq!(read_u32_ne(&r, NLMSG_LEN), Some(28));
        assert_eq!(read_u16_ne(&r, NLMSG_TYPE), Some(RTM_GETNEIGH));
        assert_eq!(read_u16_ne(&r, NLMSG_FLAGS), Some(0x301));
        assert_eq!(read_u32_ne(&r, NLMSG_SEQ), Some(0x0102_0304));
        assert_eq!(r[NLMSG_HDRLEN + NDM_FAMILY], libc::AF_UNSPEC as u8);
    }

    /// Removes the test's namespace however the test ends.
    struct Namespace(String);

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = crate::netns::ip(&["netns", "del", self.0.as_str()]);
        }
    }

    /// The kernel's own table, both families: permanent entries added with `ip neigh` on
    /// a veth in a namespace of the test's own are read back, and nothing of the other
    /// end's. Needs root (run it under the lab lock: it makes a namespace).
    #[test]
    fn the_kernels_table_gives_a_neighbour_of_each_family() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED the_kernels_table_gives_a_neighbour_of_each_family: needs root");
            return;
        }
        let ns = Namespace(format!("btneigh{}", std::process::id()));
        let name = ns.0.as_str();
        crate::netns::ip(&["netns", "add", name]).unwrap();
        let ip = |args: &str| {
            let mut all = vec!["-n", name];
            all.extend(args.split_whitespace());
            crate::netns::ip(&all).unwrap();
        };
        ip("link add nbr0 type veth peer name nbr1");
        ip("link set nbr0 up");
        ip("link set nbr1 up");
        ip("neigh add 198.18.9.2 lladdr 02:ba:70:09:00:02 dev nbr0 nud permanent");
        ip("neigh add 2001:2:0:9::2 lladdr 02:ba:70:09:00:03 dev nbr0 nud permanent");
        ip("neigh add 198.18.9.3 lladdr 02:ba:70:09:00:04 dev nbr1 nud permanent");
        let found = crate::netns::run_in(name, || {
            let index = |dev: &str| {
                let dev = std::ffi::CString::new(dev).unwrap();
                // SAFETY: `dev` is a valid NUL-terminated string.
                unsafe { libc::if_nametoindex(dev.as_ptr()) }
            };
            let mut table = NeighbourTable::open().unwrap();
            let mut found = Vec::new();
            table.dump(index("nbr0"), |n| found.push(n)).unwrap();
            // Asked again on the same socket: the next dump's sequence number.
            let mut again = Vec::new();
            table.dump(index("nbr0"), |n| again.push(n)).unwrap();
            assert_eq!(found, again);
            found
        })
        .unwrap();
        let want = |addr: &str, last: u8| Neighbour {
            addr: addr.parse().unwrap(),
            mac: [0x02, 0xba, 0x70, 0x09, 0x00, last],
        };
        assert!(found.contains(&want("198.18.9.2", 2)), "{found:?}");
        assert!(found.contains(&want("2001:2:0:9::2", 3)), "{found:?}");
        assert!(
            !found
                .iter()
                .any(|n| n.addr == "198.18.9.3".parse::<IpAddr>().unwrap()),
            "nbr1's entry: {found:?}"
        );
    }
}
