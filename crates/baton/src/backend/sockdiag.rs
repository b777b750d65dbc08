//! Which TCP connections the kernel still holds on a local port, from its socket table
//! over `NETLINK_SOCK_DIAG`: the back-end agent's ground truth for expiring flow-table
//! entries (issue 4).
//!
//! This module only reads the socket table; it must never change it (no
//! `SOCK_DESTROY`), and it depends on nothing but `std`, `libc` and [`crate::netlink`]
//! (the socket and the message walk it shares with [`crate::neighbours`]), because the
//! fuzz crate includes these files by path to fuzz [`parse_dump`] without building
//! `baton`.
//!
//! The wire layouts mirrored here, as byte offsets rather than Rust structs so that a
//! reply is only ever read through bounds-checked slices:
//! - [`struct sock_diag_req`, `SOCK_DIAG_BY_FAMILY`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/sock_diag.h)
//! - [`struct inet_diag_sockid`, `struct inet_diag_req_v2`, `struct inet_diag_msg`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/inet_diag.h)
//!
//! The `inet_diag_sockid` ports and addresses are in network byte order.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::netlink::DumpStatus;
use crate::netlink::{self, Fault, NLMSG_HDRLEN};

/// One TCP connection as the kernel's socket table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpConnection {
    /// Our end: the address and port the socket is bound to. IPv4 for an IPv4
    /// connection, including one a dual-stack IPv6 socket holds (IPv4-mapped in the
    /// kernel); IPv6 for a native IPv6 one.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

/// Why a sock_diag reply could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagError {
    /// A message header or payload runs past the end of the datagram.
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
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`): sockets may be
    /// missing, so the caller must not expire flows from it.
    Interrupted,
    /// A message type this dump never produces (including `NLMSG_OVERRUN`).
    UnexpectedType(u16),
    /// A socket of an address family other than the ones requested.
    UnexpectedFamily(u8),
    /// A datagram larger than the receive buffer: the kernel cut it short.
    DatagramTooLarge {
        /// The datagram's real length.
        len: usize,
    },
}

impl fmt::Display for DiagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { offset } => {
                write!(f, "sock_diag message at byte {offset} is truncated")
            }
            Self::BadLength { offset, len } => {
                write!(f, "sock_diag message at byte {offset} has bad length {len}")
            }
            Self::Kernel { errno } => write!(
                f,
                "sock_diag dump failed: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            Self::Interrupted => f.write_str("sock_diag dump was interrupted; retry it"),
            Self::UnexpectedType(ty) => write!(f, "unexpected netlink message type {ty}"),
            Self::UnexpectedFamily(family) => {
                write!(f, "sock_diag reply for unexpected address family {family}")
            }
            Self::DatagramTooLarge { len } => {
                write!(
                    f,
                    "sock_diag datagram of {len} bytes exceeds the receive buffer"
                )
            }
        }
    }
}

impl std::error::Error for DiagError {}

impl From<Fault> for DiagError {
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

impl From<DiagError> for io::Error {
    fn from(err: DiagError) -> Self {
        match err {
            DiagError::Kernel { errno } => io::Error::from_raw_os_error(errno),
            DiagError::Interrupted => io::Error::new(io::ErrorKind::Interrupted, err),
            _ => io::Error::new(io::ErrorKind::InvalidData, err),
        }
    }
}

// --- include/uapi/linux/netlink.h -------------------------------------------------------

const NLM_F_DUMP_INTR: u16 = 0x10;

// --- include/uapi/linux/sock_diag.h -----------------------------------------------------

/// The request and reply type for every per-family socket dump.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

// --- include/uapi/linux/inet_diag.h -----------------------------------------------------

/// `struct inet_diag_sockid`, inside both the request and the reply.
const SOCKID_SPORT: usize = 0; // __be16
const SOCKID_DPORT: usize = 2; // __be16
const SOCKID_SRC: usize = 4; // __be32[4]; IPv4 uses the first word
const SOCKID_DST: usize = 20; // __be32[4]
const SOCKID_COOKIE: usize = 40; // __u32[2], after __u32 idiag_if at 36
const SOCKID_LEN: usize = 48;

/// `struct inet_diag_req_v2`: `u8 family, u8 protocol, u8 ext, u8 pad, u32 states`, then
/// the socket id.
const REQ_FAMILY: usize = 0;
const REQ_PROTOCOL: usize = 1;
const REQ_STATES: usize = 4;
const REQ_ID: usize = 8;
const REQ_LEN: usize = REQ_ID + SOCKID_LEN;

/// `struct inet_diag_msg`: `u8 family, u8 state, u8 timer, u8 retrans`, the socket id,
/// then `u32 expires, rqueue, wqueue, uid, inode`. Attributes may follow; we ask for none.
const MSG_FAMILY: usize = 0;
const MSG_STATE: usize = 1;
const MSG_ID: usize = 4;
const MSG_LEN: usize = MSG_ID + SOCKID_LEN + 5 * 4;

/// `TCP_LISTEN` from include/net/tcp_states.h: the one state the flow table never needs,
/// since a listener is not a connection.
const TCP_LISTEN: u8 = 10;
/// Every state bit but `TCPF_LISTEN`. Setting bits beyond `TCP_MAX_STATES` is harmless,
/// and it covers `TCP_NEW_SYN_RECV` (request sockets), which the kernel reports as
/// `SYN_RECV`.
const ALL_BUT_LISTEN: u32 = !(1 << TCP_LISTEN);

/// `INET_DIAG_NOCOOKIE`: the request names no particular socket.
const NOCOOKIE: [u8; 8] = [0xff; 8];

/// How long one `recv` may wait. The kernel answers at once; this only keeps a broken
/// exchange from hanging the agent's collector forever.
const RECV_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 5,
    tv_usec: 0,
};

/// Every IPv4 TCP connection in the current network namespace whose local port is
/// `local_port`, in every state except `LISTEN` (so `SYN_RECV` request sockets and
/// `TIME_WAIT` sockets are included).
///
/// IPv4 connections accepted by a dual-stack IPv6 listener live in the kernel as IPv6
/// sockets with IPv4-mapped addresses; they are included too, so a server listening on
/// `[::]` does not hide its connections.
///
/// The dump is not atomic: a connection that opens or closes meanwhile may or may not
/// appear. Callers expiring state should require a connection to be absent from two
/// successive calls.
pub fn tcp_connections(local_port: u16) -> io::Result<HashSet<TcpConnection>> {
    let mut out = HashSet::new();
    SockDiag::open()?.tcp_connections(local_port, &mut out)?;
    Ok(out)
}

/// A sock_diag netlink socket with its receive buffer, for callers that ask repeatedly.
pub struct SockDiag {
    socket: netlink::Socket,
}

impl SockDiag {
    /// Opens the netlink socket in the caller's network namespace. Needs no privilege.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            socket: netlink::Socket::open(libc::NETLINK_SOCK_DIAG, RECV_TIMEOUT, "sock_diag dump")?,
        })
    }

    /// Replaces `out` with the connections [`tcp_connections`] describes. Reuses `out`'s
    /// allocation, so a periodic collector allocates nothing in the steady state.
    pub fn tcp_connections(
        &mut self,
        local_port: u16,
        out: &mut HashSet<TcpConnection>,
    ) -> io::Result<()> {
        out.clear();
        self.dump(libc::AF_INET as u8, local_port, out)?;
        match self.dump(libc::AF_INET6 as u8, local_port, out) {
            // A kernel without IPv6 has no IPv6 sockets to miss.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EAFNOSUPPORT)) => Ok(()),
            other => other,
        }
    }

    /// Runs one `SOCK_DIAG_BY_FAMILY` dump for `family` and collects its replies, as
    /// many datagrams as the kernel sends (a busy host's socket table has no bound).
    fn dump(
        &mut self,
        family: u8,
        local_port: u16,
        out: &mut HashSet<TcpConnection>,
    ) -> io::Result<()> {
        self.socket.dump(
            |seq| dump_request(family, local_port, seq),
            None,
            |datagram, _seq| parse_dump(datagram, local_port, out),
        )
    }
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets of `family` in every state but
/// `LISTEN`.
///
/// The source port goes in `id.idiag_sport` as well: recent kernels skip other ports in
/// dumps with it, which keeps replies small on a busy host, but that is an optimisation
/// only; [`parse_dump`] filters on the port itself.
fn dump_request(family: u8, local_port: u16, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut msg = [0; NLMSG_HDRLEN + REQ_LEN];
    netlink::write_dump_header(&mut msg, SOCK_DIAG_BY_FAMILY, seq);
    let req = &mut msg[NLMSG_HDRLEN..];
    req[REQ_FAMILY] = family;
    req[REQ_PROTOCOL] = libc::IPPROTO_TCP as u8;
    req[REQ_STATES..REQ_STATES + 4].copy_from_slice(&ALL_BUT_LISTEN.to_ne_bytes());
    let id = &mut req[REQ_ID..];
    id[SOCKID_SPORT..SOCKID_SPORT + 2].copy_from_slice(&local_port.to_be_bytes());
    id[SOCKID_COOKIE..SOCKID_COOKIE + 8].copy_from_slice(&NOCOOKIE);
    msg
}

/// Parses one received datagram of a TCP `SOCK_DIAG_BY_FAMILY` dump, adding to `out`
/// every IPv4 (or IPv4-mapped IPv6) connection whose local port is `local_port` and whose
/// state is not `LISTEN`.
///
/// The bytes are read only through bounds-checked slices: any malformed input yields an
/// error, never a panic. Connections parsed before an error stay in `out`, but the caller
/// must treat the whole dump as failed.
pub fn parse_dump(
    buf: &[u8],
    local_port: u16,
    out: &mut HashSet<TcpConnection>,
) -> Result<DumpStatus, DiagError> {
    netlink::walk(buf, |message| {
        // Checked first, whatever the message: a dump the kernel flags as inconsistent
        // is never taken as complete.
        if message.flags & NLM_F_DUMP_INTR != 0 {
            return Err(DiagError::Interrupted);
        }
        if message.ty == SOCK_DIAG_BY_FAMILY {
            if let Some(conn) = parse_inet_diag_msg(message.payload, message.offset, local_port)? {
                out.insert(conn);
            }
            return Ok(None);
        }
        Ok(netlink::control(message)?)
    })
}

/// Reads one `struct inet_diag_msg`, returning the connection if it is one the caller
/// asked for.
fn parse_inet_diag_msg(
    payload: &[u8],
    offset: usize,
    local_port: u16,
) -> Result<Option<TcpConnection>, DiagError> {
    let truncated = DiagError::Truncated { offset };
    let msg = payload.get(..MSG_LEN).ok_or(truncated)?;
    let family = *msg.get(MSG_FAMILY).ok_or(truncated)?;
    let state = *msg.get(MSG_STATE).ok_or(truncated)?;
    let id = msg.get(MSG_ID..MSG_ID + SOCKID_LEN).ok_or(truncated)?;
    let sport = read_u16_be(id, SOCKID_SPORT).ok_or(truncated)?;
    let dport = read_u16_be(id, SOCKID_DPORT).ok_or(truncated)?;
    let src = read_16(id, SOCKID_SRC).ok_or(truncated)?;
    let dst = read_16(id, SOCKID_DST).ok_or(truncated)?;
    let (local, remote): (IpAddr, IpAddr) = match i32::from(family) {
        libc::AF_INET => (ipv4_prefix(src).into(), ipv4_prefix(dst).into()),
        libc::AF_INET6 => {
            // IPv4 connections on dual-stack sockets are IPv4's (the module's IPv4 flow
            // table holds them); the rest are native IPv6, the IPv6 table's.
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            match (src.to_ipv4_mapped(), dst.to_ipv4_mapped()) {
                (Some(local), Some(remote)) => (local.into(), remote.into()),
                _ => (src.into(), dst.into()),
            }
        }
        _ => return Err(DiagError::UnexpectedFamily(family)),
    };
    // Older kernels ignore the request's port filter, and a listener is never asked for
    // but costs nothing to rule out here.
    if sport != local_port || state == TCP_LISTEN {
        return Ok(None);
    }
    Ok(Some(TcpConnection {
        local: SocketAddr::new(local, sport),
        remote: SocketAddr::new(remote, dport),
    }))
}

/// An IPv4 address is the first of the four address words, in network byte order.
fn ipv4_prefix(addr: [u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
}

fn read_u16_be(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn read_16(buf: &[u8], at: usize) -> Option<[u8; 16]> {
    buf.get(at..at + 16)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{
        NLMSG_DONE, NLMSG_ERROR, NLMSG_FLAGS, NLMSG_LEN, NLMSG_NOOP, NLMSG_TYPE, read_u16_ne,
        read_u32_ne,
    };
    use std::net::{SocketAddrV4, TcpListener, TcpStream};

    const PORT: u16 = 8080;

    /// The layouts mirrored above, against the sizes in the uapi headers.
    #[test]
    fn layout_sizes_match_uapi() {
        assert_eq!(SOCKID_LEN, 48, "sizeof(struct inet_diag_sockid)");
        assert_eq!(REQ_LEN, 56, "sizeof(struct inet_diag_req_v2)");
        assert_eq!(MSG_LEN, 72, "sizeof(struct inet_diag_msg)");
        assert_eq!(
            NLMSG_HDRLEN,
            size_of::<libc::nlmsghdr>(),
            "sizeof(struct nlmsghdr)"
        );
    }

    fn header(len: usize, ty: u16, flags: u16) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&(len as u32).to_ne_bytes());
        h.extend_from_slice(&ty.to_ne_bytes());
        h.extend_from_slice(&flags.to_ne_bytes());
        h.extend_from_slice(&7u32.to_ne_bytes()); // seq
        h.extend_from_slice(&4242u32.to_ne_bytes()); // pid
        h
    }

    /// A `SOCK_DIAG_BY_FAMILY` reply for one IPv4 socket.
    fn socket_msg(state: u8, local: SocketAddrV4, remote: SocketAddrV4) -> Vec<u8> {
        let mut m = header(NLMSG_HDRLEN + MSG_LEN, SOCK_DIAG_BY_FAMILY, 0x2);
        let mut body = vec![0u8; MSG_LEN];
        body[MSG_FAMILY] = libc::AF_INET as u8;
        body[MSG_STATE] = state;
        let id = &mut body[MSG_ID..];
        id[SOCKID_SPORT..SOCKID_SPORT + 2].copy_from_slice(&local.port().to_be_bytes());
        id[SOCKID_DPORT..SOCKID_DPORT + 2].copy_from_slice(&remote.port().to_be_bytes());
        id[SOCKID_SRC..SOCKID_SRC + 4].copy_from_slice(&local.ip().octets());
        id[SOCKID_DST..SOCKID_DST + 4].copy_from_slice(&remote.ip().octets());
        m.extend_from_slice(&body);
        m
    }

    fn done_msg(status: i32) -> Vec<u8> {
        let mut m = header(NLMSG_HDRLEN + 4, NLMSG_DONE, 0x2);
        m.extend_from_slice(&status.to_ne_bytes());
        m
    }

    fn error_msg(status: i32) -> Vec<u8> {
        let mut m = header(NLMSG_HDRLEN + 4 + NLMSG_HDRLEN, NLMSG_ERROR, 0);
        m.extend_from_slice(&status.to_ne_bytes());
        m.extend_from_slice(&header(NLMSG_HDRLEN + REQ_LEN, SOCK_DIAG_BY_FAMILY, 0x301));
        m
    }

    fn addr(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
    }

    /// The connection between two IPv4 ends.
    fn v4(local: SocketAddrV4, remote: SocketAddrV4) -> TcpConnection {
        TcpConnection {
            local: local.into(),
            remote: remote.into(),
        }
    }

    #[test]
    fn done_ends_the_dump() {
        let mut out = HashSet::new();
        assert_eq!(
            parse_dump(&done_msg(0), PORT, &mut out),
            Ok(DumpStatus::Done)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn done_with_negative_status_is_an_error() {
        let mut out = HashSet::new();
        assert_eq!(
            parse_dump(&done_msg(-libc::EINTR), PORT, &mut out),
            Err(DiagError::Kernel { errno: libc::EINTR })
        );
    }

    #[test]
    fn sockets_then_done_in_one_datagram() {
        let established = socket_msg(1, addr(1, PORT), addr(2, 40000));
        let time_wait = socket_msg(6, addr(1, PORT), addr(3, 40001));
        let buf = [established, time_wait, done_msg(0)].concat();
        let mut out = HashSet::new();
        assert_eq!(parse_dump(&buf, PORT, &mut out), Ok(DumpStatus::Done));
        let want: HashSet<_> = [
            v4(addr(1, PORT), addr(2, 40000)),
            v4(addr(1, PORT), addr(3, 40001)),
        ]
        .into();
        assert_eq!(out, want);
    }

    #[test]
    fn sockets_without_done_ask_for_more() {
        let mut out = HashSet::new();
        let buf = socket_msg(3, addr(1, PORT), addr(2, 40000)); // SYN_RECV
        assert_eq!(parse_dump(&buf, PORT, &mut out), Ok(DumpStatus::More));
        assert_eq!(out.len(), 1);
        assert_eq!(parse_dump(&[], PORT, &mut out), Ok(DumpStatus::More));
    }

    #[test]
    fn other_ports_and_listeners_are_skipped() {
        let other_port = socket_msg(1, addr(1, PORT + 1), addr(2, 40000));
        let listener = socket_msg(TCP_LISTEN, addr(1, PORT), addr(0, 0));
        let buf = [other_port, listener].concat();
        let mut out = HashSet::new();
        assert_eq!(parse_dump(&buf, PORT, &mut out), Ok(DumpStatus::More));
        assert!(out.is_empty());
    }

    #[test]
    fn ipv4_mapped_sockets_count_as_ipv4_and_native_ipv6_as_ipv6() {
        let mut mapped = socket_msg(1, addr(1, PORT), addr(2, 40000));
        let mut native = mapped.clone();
        for (msg, local, remote) in [
            (
                &mut mapped,
                Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
                Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped(),
            ),
            (&mut native, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST),
        ] {
            let body = &mut msg[NLMSG_HDRLEN..];
            body[MSG_FAMILY] = libc::AF_INET6 as u8;
            let id = &mut body[MSG_ID..];
            id[SOCKID_SRC..SOCKID_SRC + 16].copy_from_slice(&local.octets());
            id[SOCKID_DST..SOCKID_DST + 16].copy_from_slice(&remote.octets());
        }
        let mut out = HashSet::new();
        assert_eq!(
            parse_dump(&[mapped, native].concat(), PORT, &mut out),
            Ok(DumpStatus::More)
        );
        let want: HashSet<_> = [
            v4(addr(1, PORT), addr(2, 40000)),
            TcpConnection {
                local: SocketAddr::new(Ipv6Addr::LOCALHOST.into(), PORT),
                remote: SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 40000),
            },
        ]
        .into();
        assert_eq!(out, want);
    }

    #[test]
    fn error_message_is_an_error_and_ack_ends() {
        let mut out = HashSet::new();
        assert_eq!(
            parse_dump(&error_msg(-libc::EINVAL), PORT, &mut out),
            Err(DiagError::Kernel {
                errno: libc::EINVAL
            })
        );
        assert_eq!(
            parse_dump(&error_msg(0), PORT, &mut out),
            Ok(DumpStatus::Done)
        );
        // The most negative int must not overflow when negated.
        assert!(parse_dump(&error_msg(i32::MIN), PORT, &mut out).is_err());
    }

    #[test]
    fn truncated_messages_are_errors() {
        let full = socket_msg(1, addr(1, PORT), addr(2, 40000));
        for cut in 1..full.len() {
            let mut out = HashSet::new();
            assert_eq!(
                parse_dump(&full[..cut], PORT, &mut out),
                Err(DiagError::Truncated { offset: 0 }),
                "cut at {cut}"
            );
            assert!(out.is_empty());
        }
        // A second message cut short reports its own offset.
        let buf = [full.clone(), full[..20].to_vec()].concat();
        assert_eq!(
            parse_dump(&buf, PORT, &mut HashSet::new()),
            Err(DiagError::Truncated { offset: full.len() })
        );
        // nlmsg_len claims a full message but the payload is too short for inet_diag_msg.
        let mut short = header(NLMSG_HDRLEN + 8, SOCK_DIAG_BY_FAMILY, 0);
        short.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_dump(&short, PORT, &mut HashSet::new()),
            Err(DiagError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn lengths_shorter_than_a_header_are_errors() {
        for len in [0, 1, NLMSG_HDRLEN - 1] {
            let buf = header(len, NLMSG_NOOP, 0);
            assert_eq!(
                parse_dump(&buf, PORT, &mut HashSet::new()),
                Err(DiagError::BadLength {
                    offset: 0,
                    len: len as u32
                })
            );
        }
        let buf = header(u32::MAX as usize, NLMSG_NOOP, 0);
        assert!(parse_dump(&buf, PORT, &mut HashSet::new()).is_err());
    }

    #[test]
    fn interrupted_dumps_and_unknown_types_are_errors() {
        let mut msg = socket_msg(1, addr(1, PORT), addr(2, 40000));
        msg[NLMSG_FLAGS..NLMSG_FLAGS + 2].copy_from_slice(&(0x2 | NLM_F_DUMP_INTR).to_ne_bytes());
        assert_eq!(
            parse_dump(&msg, PORT, &mut HashSet::new()),
            Err(DiagError::Interrupted)
        );
        let overrun = header(NLMSG_HDRLEN, 4, 0);
        assert_eq!(
            parse_dump(&overrun, PORT, &mut HashSet::new()),
            Err(DiagError::UnexpectedType(4))
        );
        let mut unix = socket_msg(1, addr(1, PORT), addr(2, 40000));
        unix[NLMSG_HDRLEN + MSG_FAMILY] = libc::AF_UNIX as u8;
        assert_eq!(
            parse_dump(&unix, PORT, &mut HashSet::new()),
            Err(DiagError::UnexpectedFamily(libc::AF_UNIX as u8))
        );
    }

    #[test]
    fn request_bytes() {
        let req = dump_request(libc::AF_INET as u8, PORT, 9);
        assert_eq!(read_u32_ne(&req, NLMSG_LEN), Some(72));
        assert_eq!(read_u16_ne(&req, NLMSG_TYPE), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(read_u16_ne(&req, NLMSG_FLAGS), Some(0x301));
        let body = &req[NLMSG_HDRLEN..];
        assert_eq!(body[REQ_FAMILY], libc::AF_INET as u8);
        assert_eq!(body[REQ_PROTOCOL], libc::IPPROTO_TCP as u8);
        assert_eq!(read_u32_ne(body, REQ_STATES), Some(0xffff_fbff));
        assert_eq!(&body[REQ_ID..REQ_ID + 2], &PORT.to_be_bytes());
    }

    /// Real sockets, no privilege needed: two accepted connections are reported, the
    /// listener is not.
    #[test]
    fn finds_accepted_loopback_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let clients = [
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
        ];
        let servers = [listener.accept().unwrap(), listener.accept().unwrap()];

        let found = tcp_connections(port).unwrap();
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        for client in &clients {
            let std::net::SocketAddr::V4(remote) = client.local_addr().unwrap() else {
                panic!("IPv4 client has a non-IPv4 address");
            };
            assert!(
                found.contains(&v4(local, remote)),
                "{remote} missing from {found:?}"
            );
        }
        assert!(found.iter().all(|c| c.local.port() == port), "{found:?}");
        assert!(
            !found.iter().any(|c| c.remote.port() == 0),
            "listener reported: {found:?}"
        );
        drop(servers);
        drop(clients);
        // The pairs may linger in TIME_WAIT now; all that is certain is that the call
        // still succeeds.
        tcp_connections(port).unwrap();
    }

    /// An IPv4 client of a dual-stack IPv6 listener appears as an IPv4-mapped IPv6
    /// socket in the kernel; it must still be reported.
    #[test]
    fn finds_connections_on_dual_stack_listener() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            eprintln!("skipped: no IPv6 on this host");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let Ok(client) = TcpStream::connect(("127.0.0.1", port)) else {
            eprintln!("skipped: IPv6 sockets are IPv6-only here (net.ipv6.bindv6only=1)");
            return;
        };
        let _server = listener.accept().unwrap();
        let std::net::SocketAddr::V4(remote) = client.local_addr().unwrap() else {
            panic!("IPv4 client has a non-IPv4 address");
        };
        let found = tcp_connections(port).unwrap();
        let want = v4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), remote);
        assert!(found.contains(&want), "{want:?} missing from {found:?}");
    }

    /// A native IPv6 connection is reported with its IPv6 ends: the module's IPv6 flow
    /// table is collected against it.
    #[test]
    fn finds_native_ipv6_connections() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("::1", port)).unwrap();
        let _server = listener.accept().unwrap();
        let found = tcp_connections(port).unwrap();
        let want = TcpConnection {
            local: SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            remote: client.local_addr().unwrap(),
        };
        assert!(found.contains(&want), "{want:?} missing from {found:?}");
    }

    /// Reusing one handle: the set is replaced, not accumulated.
    #[test]
    fn handle_is_reusable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = SockDiag::open().unwrap();
        let mut out = HashSet::new();
        let stale = v4(addr(1, 1), addr(2, 2));
        out.insert(stale);
        diag.tcp_connections(port, &mut out).unwrap();
        assert!(!out.contains(&stale), "{out:?}");
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        diag.tcp_connections(port, &mut out).unwrap();
        let std::net::SocketAddr::V4(remote) = client.local_addr().unwrap() else {
            panic!("IPv4 client has a non-IPv4 address");
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert!(out.contains(&v4(local, remote)), "{out:?}");
    }
}
