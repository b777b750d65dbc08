//! The netlink plumbing Baton's kernel-table readers share: a socket that sends one dump
//! request and reads its multipart reply, and the walk over a reply datagram's messages
//! and a message's attributes. What a dump asks for and what its messages mean stay with
//! each reader: [`crate::neighbours`] (rtnetlink's neighbour table) and
//! `backend::sockdiag` (`NETLINK_SOCK_DIAG`'s socket table).
//!
//! It only reads kernel tables and depends on nothing but `std` and `libc`, because the
//! fuzz crate includes this file by path beside each reader it fuzzes, without building
//! `baton`. Every byte of a reply is read through bounds-checked slices.
//!
//! The wire layouts mirrored here, as byte offsets rather than Rust structs:
//! - [`struct nlmsghdr`, `struct nlmsgerr`, `struct nlattr`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/netlink.h)
//!
//! Netlink header and attribute header fields are in host byte order.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// --- include/uapi/linux/netlink.h -------------------------------------------------------

/// `sizeof(struct nlmsghdr)`: `u32 len, u16 type, u16 flags, u32 seq, u32 pid`.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_LEN: usize = 0;
pub const NLMSG_TYPE: usize = 4;
pub const NLMSG_FLAGS: usize = 6;
pub const NLMSG_SEQ: usize = 8;
/// Every netlink message and attribute starts on a 4-byte boundary (`NLMSG_ALIGNTO`,
/// `NLA_ALIGNTO`, `RTA_ALIGNTO`).
pub const ALIGNTO: usize = 4;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x01;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;

/// `struct nlattr` (rtnetlink's `struct rtattr` is the same): `u16 len, u16 type`, then
/// the value.
pub const ATTR_HDRLEN: usize = 4;
/// The attribute type's low 14 bits; the top two are `NLA_F_NESTED` and
/// `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Receive buffer size. The kernel sizes each dump datagram from the reader's recent
/// buffer sizes, capped at 32 KiB (`netlink_recvmsg`, net/netlink/af_netlink.c), so this
/// holds any datagram it sends.
const RECV_BUF_LEN: usize = 32 * 1024;

/// What one received datagram of a dump said about the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpStatus {
    /// The dump continues in a later datagram.
    More,
    /// The kernel sent `NLMSG_DONE` (or a bare acknowledgement): the dump is complete.
    Done,
}

/// What is wrong with a reply at the netlink level, whatever the dump; each reader turns
/// it into its own error, which names its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
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
    /// A message type the dump never produces (including `NLMSG_OVERRUN`).
    UnexpectedType(u16),
    /// A datagram larger than the receive buffer: the kernel cut it short.
    DatagramTooLarge {
        /// The datagram's real length.
        len: usize,
    },
}

/// One message of a reply datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Byte offset of the message in the datagram, for errors.
    pub offset: usize,
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`: the request's, in a reply to it.
    pub seq: u32,
    /// What follows the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The error of a message cut short.
    pub fn truncated(&self) -> Fault {
        Fault::Truncated {
            offset: self.offset,
        }
    }
}

/// Gives `each` the messages of one received datagram in order, until it returns a
/// status (the dump's end) or an error; [`DumpStatus::More`] if the datagram ends first.
/// Each loop is bounded by the datagram's length: malformed input yields an error, never
/// a panic.
pub fn walk<E: From<Fault>>(
    buf: &[u8],
    mut each: impl FnMut(&Message<'_>) -> Result<Option<DumpStatus>, E>,
) -> Result<DumpStatus, E> {
    let mut offset = 0;
    let mut rest = buf;
    while !rest.is_empty() {
        let truncated = Fault::Truncated { offset };
        let header = rest.get(..NLMSG_HDRLEN).ok_or(truncated)?;
        let len = read_u32_ne(header, NLMSG_LEN).ok_or(truncated)?;
        let ty = read_u16_ne(header, NLMSG_TYPE).ok_or(truncated)?;
        let flags = read_u16_ne(header, NLMSG_FLAGS).ok_or(truncated)?;
        let seq = read_u32_ne(header, NLMSG_SEQ).ok_or(truncated)?;
        let msg_len = usize::try_from(len).map_err(|_| truncated)?;
        if msg_len < NLMSG_HDRLEN {
            return Err(Fault::BadLength { offset, len }.into());
        }
        let payload = rest.get(NLMSG_HDRLEN..msg_len).ok_or(truncated)?;
        let message = Message {
            offset,
            ty,
            flags,
            seq,
            payload,
        };
        if let Some(status) = each(&message)? {
            return Ok(status);
        }
        // The last message of a datagram may lack its alignment padding.
        let step = msg_len
            .checked_next_multiple_of(ALIGNTO)
            .unwrap_or(msg_len)
            .min(rest.len());
        rest = rest.get(step..).unwrap_or_default();
        offset += step;
    }
    Ok(DumpStatus::More)
}

/// What a message of none of the dump's own types means: `NLMSG_DONE` and
/// `NLMSG_ERROR` end the dump (well or not), `NLMSG_NOOP` is skipped (`None`), anything
/// else is [`Fault::UnexpectedType`].
pub fn control(message: &Message<'_>) -> Result<Option<DumpStatus>, Fault> {
    match message.ty {
        NLMSG_DONE => {
            // A dump's DONE carries the dump's own status as an int
            // (`netlink_dump_done`); older kernels may leave it out.
            match read_i32_ne(message.payload, 0) {
                Some(status) if status < 0 => Err(Fault::Kernel {
                    errno: status.saturating_neg(),
                }),
                _ => Ok(Some(DumpStatus::Done)),
            }
        }
        NLMSG_ERROR => {
            // `struct nlmsgerr`: int error, then the offending request's header.
            let status = read_i32_ne(message.payload, 0).ok_or(message.truncated())?;
            // Zero is an acknowledgement: nothing else follows it, so waiting for more
            // would hang.
            match status {
                0 => Ok(Some(DumpStatus::Done)),
                _ => Err(Fault::Kernel {
                    errno: status.saturating_neg(),
                }),
            }
        }
        NLMSG_NOOP => Ok(None),
        other => Err(Fault::UnexpectedType(other)),
    }
}

/// Gives `each` the type (less its flag bits) and value of every attribute in `attrs`,
/// the part of a message after its family header; an attribute running past the end,
/// or shorter than its own header, is an error of the message at `offset`.
pub fn for_each_attribute<'a>(
    attrs: &'a [u8],
    offset: usize,
    mut each: impl FnMut(u16, &'a [u8]),
) -> Result<(), Fault> {
    let truncated = Fault::Truncated { offset };
    let mut rest = attrs;
    while !rest.is_empty() {
        let len = usize::from(read_u16_ne(rest, 0).ok_or(truncated)?);
        let ty = read_u16_ne(rest, 2).ok_or(truncated)? & NLA_TYPE_MASK;
        if len < ATTR_HDRLEN {
            return Err(truncated);
        }
        each(ty, rest.get(ATTR_HDRLEN..len).ok_or(truncated)?);
        let step = len.next_multiple_of(ALIGNTO).min(rest.len());
        rest = rest.get(step..).unwrap_or_default();
    }
    Ok(())
}

/// Writes the `struct nlmsghdr` of a dump request of type `ty` at the start of
/// `request`, whose whole length is the message's.
pub fn write_dump_header(request: &mut [u8], ty: u16, seq: u32) {
    let len = request.len() as u32;
    request[NLMSG_LEN..NLMSG_LEN + 4].copy_from_slice(&len.to_ne_bytes());
    request[NLMSG_TYPE..NLMSG_TYPE + 2].copy_from_slice(&ty.to_ne_bytes());
    request[NLMSG_FLAGS..NLMSG_FLAGS + 2]
        .copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request[NLMSG_SEQ..NLMSG_SEQ + 4].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid stays 0: the kernel fills in our port id.
}

/// A netlink socket with its receive buffer, opened once and asked at each refresh.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
    /// The dump's name in errors ("neighbour dump", "sock_diag dump").
    what: &'static str,
}

impl Socket {
    /// Opens a netlink socket of `protocol` in the caller's network namespace, each
    /// `recv` waiting at most `recv_timeout`: the kernel answers at once, so this only
    /// keeps a broken exchange from hanging the caller. `what` names the dump in errors.
    pub fn open(
        protocol: libc::c_int,
        recv_timeout: libc::timeval,
        what: &'static str,
    ) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `recv_timeout` is a valid timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const recv_timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            buf: vec![0; RECV_BUF_LEN],
            seq: 0,
            what,
        })
    }

    /// Sends the request `request` builds for the next sequence number, then gives
    /// `parse` each datagram of the reply, with that number, until it says
    /// [`DumpStatus::Done`] or an error; at most `max_datagrams` datagrams (`None`: as
    /// many as the kernel sends).
    pub fn dump<R: AsRef<[u8]>, E: From<Fault> + Into<io::Error>>(
        &mut self,
        request: impl FnOnce(u32) -> R,
        max_datagrams: Option<usize>,
        mut parse: impl FnMut(&[u8], u32) -> Result<DumpStatus, E>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.send(request(self.seq).as_ref())?;
        let mut received = 0;
        while max_datagrams.is_none_or(|max| received < max) {
            received += 1;
            let len = self.recv()?;
            let datagram = self
                .buf
                .get(..len)
                .ok_or_else(|| E::from(Fault::DatagramTooLarge { len }).into())?;
            if parse(datagram, self.seq).map_err(Into::into)? == DumpStatus::Done {
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} longer than {} datagrams; abandoned",
                self.what, received
            ),
        ))
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_nl; nl_pid 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `request` and `kernel` are valid for the lengths passed.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    request.as_ptr().cast(),
                    request.len(),
                    0,
                    (&raw const kernel).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            match usize::try_from(sent) {
                Ok(n) if n == request.len() => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short send of the {} request", self.what),
                    ));
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// Receives one datagram into `self.buf`, returning its full length, which exceeds
    /// the buffer if the kernel had to cut it.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: `self.buf` is valid for writes of its length. MSG_TRUNC makes
            // netlink return the datagram's real length, so truncation is detectable.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            match usize::try_from(n) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("empty {} datagram", self.what),
                    ));
                }
                Ok(n) => return Ok(n),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("kernel did not finish the {}", self.what),
                            ));
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }
}

pub fn read_u16_ne(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

pub fn read_u32_ne(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

pub fn read_i32_ne(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_match_uapi() {
        assert_eq!(NLMSG_HDRLEN, size_of::<libc::nlmsghdr>());
        assert_eq!(ATTR_HDRLEN, size_of::<libc::nlattr>());
    }

    #[test]
    fn a_dump_header_says_its_whole_length() {
        let mut request = [0xaa; NLMSG_HDRLEN + 12];
        write_dump_header(&mut request, 30, 0x0102_0304);
        assert_eq!(read_u32_ne(&request, NLMSG_LEN), Some(28));
        assert_eq!(read_u16_ne(&request, NLMSG_TYPE), Some(30));
        assert_eq!(read_u16_ne(&request, NLMSG_FLAGS), Some(0x301));
        assert_eq!(read_u32_ne(&request, NLMSG_SEQ), Some(0x0102_0304));
        assert_eq!(
            request[NLMSG_HDRLEN], 0xaa,
            "the body is left to the caller"
        );
    }

    #[test]
    fn attributes_are_walked_to_the_end_and_checked() {
        // NDA_DST of 4 bytes, then a nested-flagged attribute of 1 byte (padded).
        let attrs = [8, 0, 1, 0, 198, 18, 1, 11, 5, 0, 2, 0x80, 7, 0, 0, 0];
        let mut seen = Vec::new();
        for_each_attribute(&attrs, 3, |ty, value| seen.push((ty, value.to_vec()))).unwrap();
        assert_eq!(seen, [(1, vec![198, 18, 1, 11]), (2, vec![7])]);
        // The last one's padding may be missing.
        seen.clear();
        for_each_attribute(&attrs[..13], 3, |ty, value| seen.push((ty, value.to_vec()))).unwrap();
        assert_eq!(seen.len(), 2);
        let mut long = attrs;
        long[8] = 9;
        assert_eq!(
            for_each_attribute(&long, 3, |_, _| {}),
            Err(Fault::Truncated { offset: 3 })
        );
        let mut short = attrs;
        short[0] = 3;
        assert_eq!(
            for_each_attribute(&short, 3, |_, _| {}),
            Err(Fault::Truncated { offset: 3 })
        );
    }
}
