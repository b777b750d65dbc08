//! The slow path's packet I/O: raw frames in through AF_PACKET, IPv4 packets out through
//! a raw IPv4 socket (IPv6 ones through a raw IPv6 socket), and an nftables rule that
//! keeps the host's own TCP away from the service.
//!
//! **Receive.** An `AF_PACKET` socket bound to the configured interface for `ETH_P_IP`,
//! with a classic BPF filter (`SO_ATTACH_FILTER`) so that the kernel queues only IPv4
//! TCP packets to VIP:port (from clients) or from VIP:port (back-ends' egress copies,
//! addressed to the client but sent to this host's MAC). Outgoing frames are ignored
//! (`PACKET_IGNORE_OUTGOING`, and the filter checks the packet type too): the daemon's own
//! transmissions to clients come *from* VIP:port and would otherwise come back as if a
//! back-end had sent them. Frames to another host's MAC (`PACKET_OTHERHOST`: flooded by a
//! switch, or on a veth, which takes every frame) are ignored too, as the host's stack
//! ignores them. One buffer is reused for every frame.
//!
//! **IPv6.** With IPv6 service addresses configured (`vip6`, or `[v6]:port` entries in
//! `services`), the socket is bound to every protocol (`ETH_P_ALL`) rather than
//! `ETH_P_IP`, and the filter takes IPv6 TCP frames to those services (the TCP header
//! right after the fixed header, or after a hop-by-hop, routing, fragment or destination
//! options header, which the core walks and, for a fragment, drops and counts) and from
//! them (back-ends' copies, TCP right after the fixed header: a back-end's kernel adds no
//! extension header). They go up to the core through the same `handle_packet` as IPv4
//! ones, and the core serves them (its IPv6 transmits go out the raw IPv6 socket). Without
//! IPv6 services, the socket and its filter are what they were, instruction for
//! instruction.
//!
//! **Why `AF_PACKET` and not `AF_XDP`.** Measured, not assumed: under `Connection:
//! close` load (one handoff per request, the slow path's worst case) `perf record` of
//! the daemon showed receiving (`recvmsg`, the copy included) at 6% of its time, about
//! 1.4 µs per packet for the ~7 packets a connection brings to the slow path, against
//! 65% in `sendto`, most of which is the lab's receiving namespaces' work done inside
//! the call (veth delivery is synchronous). `AF_XDP` would shave at most that 6%, and
//! on a veth it runs in copy mode anyway, while it costs a UMEM, fill and completion
//! rings, one socket per receive queue and an `XDP_REDIRECT` in the fast-path program
//! for every slow-path packet. Established flows never reach this socket (XDP forwards
//! them), so the slow path carries handshakes and closes only, a few packets per
//! connection. A mapped `TPACKET_V3` ring would save the system call per packet; it is
//! the next step if receive ever shows up in a profile, batching sends (`sendmmsg`) the
//! one after.
//!
//! **Checksums.** A frame that crossed only veths and bridges still carries the partial
//! checksum its sender's stack left for offload (`CHECKSUM_PARTIAL`); the kernel says so
//! in the packet's auxiliary data (`TP_STATUS_CSUMNOTREADY`), and the TCP checksum is
//! completed here, exactly as a NIC would have done, before the protocol core verifies
//! it. (GRO-merged packets are in the same state and are completed the same way.)
//!
//! **Transmit.** `AF_INET`/`SOCK_RAW`/`IPPROTO_RAW` (`IP_HDRINCL`): the state machine
//! builds whole IPv4 packets, some with a source that is not this host's (a client's
//! address, in the SYN' and forwarded segments to back-ends); the kernel routes and ARPs
//! for them. IPv6 packets (with IPv6 services) go through `AF_INET6`/`SOCK_RAW`/
//! `IPPROTO_RAW`, which implies the header is included (`inet6_create`) and sends the
//! source address as built (`rawv6_send_hdrinc`); the kernel routes them and resolves
//! the neighbour. It is opened only with IPv6 services, so a host with IPv6 disabled
//! runs an IPv4 front-end as before. The socket is non-blocking: a full send buffer drops the packet (counted),
//! and TCP's retransmission recovers, rather than stalling every connection.
//!
//! **The host's TCP.** The VIP is an address of this host, so without help the kernel's
//! TCP would answer every client SYN to VIP:port with a RST (no listener), racing the
//! daemon's SYN/ACK. [`HostTcpFilter`] installs `table inet baton_fe`, which drops TCP to
//! VIP:port in prerouting (an `inet` table holds both families' rules: `ip daddr` for
//! IPv4 services, `ip6 daddr` for IPv6 ones, in one chain, replaced and removed as one). AF_PACKET taps frames in the device layer, before netfilter,
//! so the daemon still sees them. Prerouting at `raw` priority rather than input: the
//! packets are dropped before routing and before connection tracking would spend an
//! entry on each client. Other ports of the VIP, and the host's own traffic, are left
//! alone. The table stays when the daemon exits, with the fast path's pins (see
//! `fastpath`): handed-off connections outlive the daemon, and while none runs (a
//! restart) their FIN and payload segments reach the host's stack, which must drop them
//! (the client retransmits them to the next daemon) rather than reset the client. The
//! next start replaces the table atomically; `baton frontend --detach` removes it.

use std::{
    io::{self, Write as _},
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use baton_proto::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpSegment, ethernet};

/// `linux/if_packet.h` values, spelt out here so as not to depend on which libc release
/// exports them.
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u32 = 4;
const PACKET_OTHERHOST: u32 = 3;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

/// `struct tpacket_auxdata` (`linux/if_packet.h`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// `struct tpacket_stats` (`linux/if_packet.h`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// An IPv4 packet is at most 65,535 bytes, an IPv6 one 40 more (the payload length leaves
/// out the fixed header); with the Ethernet header that is the largest frame the receive
/// path ever needs to hold (larger ones, BIG TCP GRO and jumbograms, are truncated and
/// counted).
const RECV_BUFFER_LEN: usize = ethernet::HEADER_LEN + 40 + 65_535;

/// Socket buffers: a few milliseconds of a busy link, so a burst of SYNs does not
/// overflow while the daemon works through the previous batch.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// What the I/O layer saw and dropped. Together with the protocol core's [`Stats`] this
/// accounts for every packet.
///
/// [`Stats`]: baton_proto::frontend::Stats
#[derive(Debug, Clone, Default)]
pub struct IoStats {
    /// Frames read from the AF_PACKET socket.
    pub frames_received: u64,
    /// Frames dropped by the kernel because the socket's queue was full
    /// (`PACKET_STATISTICS`).
    pub kernel_drops: u64,
    /// Frames longer than the receive buffer, dropped.
    pub truncated: u64,
    /// Frames shorter than an Ethernet header, dropped.
    pub runts: u64,
    /// TCP checksums completed for `CHECKSUM_PARTIAL` frames.
    pub checksums_completed: u64,
    /// Receive errors other than "nothing more to read".
    pub recv_errors: u64,
    /// Packets handed to the kernel.
    pub packets_sent: u64,
    /// Packets dropped because the send buffer was full (`EAGAIN`, `ENOBUFS`).
    pub send_busy: u64,
    /// Packets the kernel refused (no route, too big, ...).
    pub send_errors: u64,
    /// Probe frames sent to back-ends (`baton_common::claim`): one per back-end for
    /// each of the core's probes.
    pub probe_frames_sent: u64,
    /// Probe frames the kernel refused or had no room for.
    pub probe_send_errors: u64,
    /// Times the interface went down under the receive socket (`ENETDOWN`): its frames
    /// stop until the interface is up again, when the socket takes them again by itself.
    pub interface_down: u64,
}

/// The sockets and the receive buffer.
pub struct PacketIo {
    rx: OwnedFd,
    tx: OwnedFd,
    /// The raw IPv6 socket, with IPv6 services only.
    tx6: Option<OwnedFd>,
    buf: Box<[u8]>,
    /// The length of the last frame [`PacketIo::recv`] returned as a packet, which stays
    /// in `buf` until the next call ([`PacketIo::last_packet`]).
    last_len: usize,
    stats: IoStats,
    /// The last send error, for the log (logged once per distinct errno).
    last_send_errno: Option<i32>,
    /// The interface's index, for frames sent through the packet socket.
    ifindex: u32,
}

/// What [`PacketIo::recv`] found.
pub enum Received<'a> {
    /// An IPv4 packet, or with IPv6 services an IPv6 one (Ethernet header stripped; may
    /// carry link-layer padding after the IP length, which the parser ignores).
    Packet(&'a [u8]),
    /// A frame was read but dropped (counted in [`IoStats`]).
    Dropped,
    /// Nothing more to read now.
    Empty,
}

impl PacketIo {
    /// Opens the sockets on `interface` for `services` and `services6` (IPv6 ones: none
    /// leaves the capture IPv4 only and opens no IPv6 socket).
    pub fn open(
        interface: &str,
        services: &[SocketAddrV4],
        services6: &[SocketAddrV6],
    ) -> anyhow::Result<Self> {
        let ifname = std::ffi::CString::new(interface).context("interface name")?;
        // SAFETY: `ifname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("interface `{interface}` not found"));
        }
        let rx = open_capture(ifindex, services, services6)
            .with_context(|| format!("opening the AF_PACKET socket on {interface}"))?;
        let tx = open_raw_ipv4().context("opening the raw IPv4 socket")?;
        let tx6 = (!services6.is_empty())
            .then(open_raw_ipv6)
            .transpose()
            .context("opening the raw IPv6 socket (IPv6 services are configured)")?;
        Ok(Self {
            rx,
            tx,
            tx6,
            buf: vec![0; RECV_BUFFER_LEN].into_boxed_slice(),
            last_len: 0,
            stats: IoStats::default(),
            last_send_errno: None,
            ifindex,
        })
    }

    /// The descriptor to poll for readability.
    pub fn rx_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Reads one frame without blocking.
    pub fn recv(&mut self) -> Received<'_> {
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        // Room for one cmsghdr carrying a tpacket_auxdata, u64-aligned.
        let mut control = [0u64; 8];
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        // MSG_TRUNC: the return value is the frame's real length, so truncation shows.
        // SAFETY: `msg` points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(self.rx.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Received::Empty,
                _ => {
                    self.stats.recv_errors += 1;
                    Received::Dropped
                }
            };
        }
        self.stats.frames_received += 1;
        let len = n as usize;
        if len > self.buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0 {
            self.stats.truncated += 1;
            return Received::Dropped;
        }
        if len < ethernet::HEADER_LEN {
            self.stats.runts += 1;
            return Received::Dropped;
        }
        let status = auxdata_status(&msg);
        let packet = &mut self.buf[ethernet::HEADER_LEN..len];
        if status & TP_STATUS_CSUMNOTREADY != 0 && complete_tcp_checksum(packet) {
            self.stats.checksums_completed += 1;
        }
        self.last_len = len;
        Received::Packet(&self.buf[ethernet::HEADER_LEN..len])
    }

    /// Takes the error the kernel left on the receive socket, after `poll` said
    /// `POLLERR` (`SO_ERROR` reads and clears it). The interface going down is one
    /// (`ENETDOWN`, from the kernel's `packet_notifier`): counted and answered
    /// `Ok(true)`, since the socket, bound to the interface, takes frames again once it
    /// is up (a link that flaps, or a front-end cut off and back, must not lose its
    /// daemon). `Ok(false)`: no error was pending. Any other is returned.
    pub fn take_rx_error(&mut self) -> io::Result<bool> {
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are valid for the option's size.
        let rc = unsafe {
            libc::getsockopt(
                self.rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        match err {
            0 => Ok(false),
            libc::ENETDOWN => {
                self.stats.interface_down += 1;
                Ok(true)
            }
            other => Err(io::Error::from_raw_os_error(other)),
        }
    }

    /// The packet the last [`PacketIo::recv`] returned, again: sending in between does
    /// not touch it. Empty before the first.
    pub fn last_packet(&self) -> &[u8] {
        self.buf
            .get(ethernet::HEADER_LEN..self.last_len)
            .unwrap_or_default()
    }

    /// Sends one IP packet to `destination`: an IPv4 packet to an IPv4 address, an IPv6
    /// one to an IPv6 address (counted as a send error without IPv6 services, which
    /// open no IPv6 socket). Failures are counted, never fatal: TCP (the client's, the
    /// back-end's, or the core's timers) retransmits.
    pub fn send(&mut self, destination: impl Into<IpAddr>, packet: &[u8]) {
        let destination = destination.into();
        let n = match destination {
            IpAddr::V4(v4) => send_v4(&self.tx, v4, packet),
            IpAddr::V6(v6) => match &self.tx6 {
                Some(tx6) => send_v6(tx6, v6, packet),
                None => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
        };
        let Err(err) = n else {
            self.stats.packets_sent += 1;
            return;
        };
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS) => self.stats.send_busy += 1,
            errno => {
                self.stats.send_errors += 1;
                if errno != self.last_send_errno {
                    self.last_send_errno = errno;
                    super::log::warn(
                        "send_error",
                        &[
                            ("destination", &destination),
                            ("len", &packet.len()),
                            ("error", &err),
                        ],
                    );
                }
            }
        }
    }

    /// Sends one whole Ethernet frame (a probe: `baton_common::claim`) out of the
    /// interface through the packet socket, which sends what it is given, link header
    /// included. Whether the kernel took it; failures are counted, never fatal (the
    /// client retransmits, and the core probes again).
    pub fn send_frame(&mut self, frame: &[u8]) -> bool {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        if let Some(dest) = frame.get(..6) {
            sll.sll_addr[..6].copy_from_slice(dest);
        }
        if send_raw(&self.rx, &sll, frame).is_ok() {
            self.stats.probe_frames_sent += 1;
            true
        } else {
            self.stats.probe_send_errors += 1;
            false
        }
    }

    /// The counters, with the kernel's drop count brought up to date.
    pub fn stats(&mut self) -> &IoStats {
        let mut s = TpacketStats::default();
        let mut len = mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `s` is a writable tpacket_stats and `len` its size. Reading resets the
        // kernel's counters, so they are accumulated here.
        let rc = unsafe {
            libc::getsockopt(
                self.rx.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&raw mut s).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            self.stats.kernel_drops += u64::from(s.tp_drops);
        }
        &self.stats
    }
}

/// `sendto` of one IPv4 packet on the raw IPv4 socket.
fn send_v4(tx: &OwnedFd, destination: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes(destination.octets());
    send_raw(tx, &addr, packet)
}

/// `sendto` of one IPv6 packet on the raw IPv6 socket. The port stays 0: on a raw socket
/// it would name the protocol, and `IPPROTO_RAW`'s socket takes the packet's own.
fn send_v6(tx: &OwnedFd, destination: Ipv6Addr, packet: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut addr: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    addr.sin6_addr.s6_addr = destination.octets();
    send_raw(tx, &addr, packet)
}

/// `sendto` of one packet (or frame) on a raw socket, to `addr`: the `sockaddr_in`,
/// `sockaddr_in6` or `sockaddr_ll` of the socket's family, which the kernel reads by
/// its `sa_family`.
fn send_raw<A>(tx: &OwnedFd, addr: &A, packet: &[u8]) -> io::Result<()> {
    // SAFETY: `packet` and `addr` are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            tx.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (addr as *const A).cast(),
            mem::size_of::<A>() as libc::socklen_t,
        )
    };
    if n >= 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `tp_status` of the frame's auxiliary data, 0 if absent.
fn auxdata_status(msg: &libc::msghdr) -> u32 {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros stay within msg_control.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET
                && (*cmsg).cmsg_type == PACKET_AUXDATA
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<TpacketAuxdata>() as u32) as usize
            {
                let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return aux.tp_status;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    0
}

/// Fills in the TCP checksum of an IPv4/TCP or IPv6/TCP packet whose sender left it to
/// offload. Returns whether it did (a packet that does not parse is left for the core to
/// count).
fn complete_tcp_checksum(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => complete_tcp_checksum_v4(packet),
        Some(6) => complete_tcp_checksum_v6(packet),
        _ => false,
    }
}

/// [`complete_tcp_checksum`] of an IPv6 packet, over its extension headers if any.
fn complete_tcp_checksum_v6(packet: &mut [u8]) -> bool {
    let Ok(ip) = Ipv6Packet::new_checked(&*packet) else {
        return false;
    };
    let Ok((IpProtocol::Tcp, start)) = ip.upper_layer() else {
        return false;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let end = 40 + ip.payload_len();
    let Some(segment) = packet.get_mut(start..end) else {
        return false;
    };
    let Ok(mut tcp) = TcpSegment::new_checked(segment) else {
        return false;
    };
    tcp.fill_checksum(src, dst);
    true
}

/// [`complete_tcp_checksum`] of an IPv4 packet.
fn complete_tcp_checksum_v4(packet: &mut [u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
        return false;
    };
    if ip.is_fragment() || ip.protocol() != baton_proto::wire::IpProtocol::Tcp {
        return false;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (start, end) = (ip.header_len(), ip.total_len());
    let Some(segment) = packet.get_mut(start..end) else {
        return false;
    };
    let Ok(mut tcp) = TcpSegment::new_checked(segment) else {
        return false;
    };
    tcp.fill_checksum(src, dst);
    true
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A larger socket buffer: the `FORCE` variant (root) passes `net.core.*mem_max`.
fn grow_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, force, &SOCKET_BUFFER_BYTES)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, plain, &SOCKET_BUFFER_BYTES))
}

fn open_capture(
    ifindex: u32,
    services: &[SocketAddrV4],
    services6: &[SocketAddrV6],
) -> anyhow::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until `bind` names ETH_P_IP (or ETH_P_ALL),
    // so no frame slips in before the filter is attached.
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: `fd` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();

    let mut program = service_filter(services, services6);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
        .context("SO_ATTACH_FILTER")?;
    // Since Linux 4.20; the filter's packet-type test covers older kernels.
    let _ = setsockopt(
        raw,
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    );
    setsockopt(raw, libc::SOL_PACKET, PACKET_AUXDATA, &1 as &libc::c_int)
        .context("PACKET_AUXDATA")?;
    grow_buffer(raw, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).context("SO_RCVBUF")?;

    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    // One socket for both families (one descriptor for the loop to poll) when IPv6 is
    // served: ETH_P_ALL, whose every frame the filter then judges, outgoing ones included
    // (PACKET_IGNORE_OUTGOING and the filter's packet-type test drop those).
    let protocol = if services6.is_empty() {
        libc::ETH_P_IP
    } else {
        libc::ETH_P_ALL
    };
    sll.sll_protocol = (protocol as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            raw,
            (&raw const sll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("bind(AF_PACKET)");
    }
    Ok(fd)
}

fn open_raw_ipv4() -> anyhow::Result<OwnedFd> {
    let fd = open_raw(libc::AF_INET).context("socket(AF_INET, SOCK_RAW)")?;
    // IPPROTO_RAW implies it (raw(7)); said explicitly, since the packets' source
    // addresses must go out as built.
    setsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_HDRINCL,
        &1 as &libc::c_int,
    )
    .context("IP_HDRINCL")?;
    grow_buffer(fd.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF).context("SO_SNDBUF")?;
    Ok(fd)
}

fn open_raw_ipv6() -> anyhow::Result<OwnedFd> {
    let fd = open_raw(libc::AF_INET6).context("socket(AF_INET6, SOCK_RAW)")?;
    // IPPROTO_RAW implies the header is included (`inet6_create`); there is no
    // IPV6_HDRINCL to say so on the kernels older than 4.5 this would otherwise refuse.
    grow_buffer(fd.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF).context("SO_SNDBUF")?;
    Ok(fd)
}

/// A non-blocking `IPPROTO_RAW` socket of `family`, for sending packets built whole.
fn open_raw(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// Classic BPF (linux/filter.h): opcode classes and modes used below.
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The socket filter: with IPv6 services, a test of the EtherType that sends IPv6 frames
/// to [`ipv6_filter`]'s section, placed after the IPv4 one (classic BPF jumps only
/// forward; `ja` takes a 32-bit offset, so the IPv4 section's length does not matter);
/// without, the IPv4 section alone, as it always was.
fn service_filter(services: &[SocketAddrV4], services6: &[SocketAddrV6]) -> Vec<libc::sock_filter> {
    let ipv4 = ipv4_filter(services);
    if services6.is_empty() {
        return ipv4;
    }
    let mut prog = vec![
        stmt(BPF_LD | BPF_H | BPF_ABS, 12),
        jump(BPF_JMP | BPF_JEQ | BPF_K, ETHERTYPE_IPV6, 0, 1),
        stmt(BPF_JMP | BPF_JA, ipv4.len() as u32),
    ];
    prog.extend(ipv4);
    prog.extend(ipv6_filter(services6));
    prog
}

/// EtherType IPv6.
const ETHERTYPE_IPV6: u32 = 0x86dd;

/// IPv6 Next Header values of the extension headers the core walks
/// (`baton_common::ipv6::walk_extension_headers`): hop-by-hop, routing, fragment,
/// destination options. A frame to an IPv6 service whose fixed header names one of them
/// goes up whatever its port (the filter does not walk them), for the core to walk, use
/// or drop and count.
const IPV6_EXTENSION_HEADERS: [u32; 4] = [0, 43, 44, 60];

/// A block that returns "accept" when every load equals its value and otherwise falls
/// through past its end: `(load, value)` pairs, each a load into A and a `jeq` whose
/// "false" jumps past the block's closing return.
fn accept_if_all(checks: &[(libc::sock_filter, u32)]) -> Vec<libc::sock_filter> {
    let n = checks.len();
    let mut block = Vec::with_capacity(2 * n + 1);
    for (i, (load, value)) in checks.iter().enumerate() {
        // From this jeq, the instructions left in the block: the other pairs and the
        // return.
        let past_end = 2 * (n - i) - 1;
        block.push(*load);
        block.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *value, 0, past_end as u8));
    }
    block.push(stmt(BPF_RET | BPF_K, u32::MAX));
    block
}

/// Loads of an IPv6 address's four words at `offset` from the frame's start, paired
/// with `addr`'s words.
fn address_words(offset: u32, addr: &Ipv6Addr) -> [(libc::sock_filter, u32); 4] {
    let octets = addr.octets();
    std::array::from_fn(|i| {
        let word = u32::from_be_bytes([
            octets[4 * i],
            octets[4 * i + 1],
            octets[4 * i + 2],
            octets[4 * i + 3],
        ]);
        (stmt(BPF_LD | BPF_W | BPF_ABS, offset + 4 * i as u32), word)
    })
}

/// The IPv6 section: frames not outgoing, not to another host's MAC, and TCP right
/// after the fixed header to or from one of `services6` (ports at fixed offsets: 40
/// bytes of header, then the TCP ports); or a walkable extension header
/// ([`IPV6_EXTENSION_HEADERS`]) first and the destination one of their addresses. Each
/// service is two blocks of eleven instructions (four address words and a port, each a
/// load and a compare, then the return), each jump local.
fn ipv6_filter(services6: &[SocketAddrV6]) -> Vec<libc::sock_filter> {
    const ETH: u32 = ethernet::HEADER_LEN as u32;
    const NEXT_HEADER: u32 = ETH + 6;
    const SRC: u32 = ETH + 8;
    const DST: u32 = ETH + 24;
    const SPORT: u32 = ETH + 40;
    const DPORT: u32 = ETH + 42;
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    let mut tcp = Vec::new();
    for service in services6 {
        let port = (
            stmt(BPF_LD | BPF_H | BPF_ABS, DPORT),
            u32::from(service.port()),
        );
        let mut to: Vec<_> = address_words(DST, service.ip()).into();
        to.push(port);
        tcp.extend(accept_if_all(&to));
        let port = (
            stmt(BPF_LD | BPF_H | BPF_ABS, SPORT),
            u32::from(service.port()),
        );
        let mut from: Vec<_> = address_words(SRC, service.ip()).into();
        from.push(port);
        tcp.extend(accept_if_all(&from));
    }
    tcp.push(stmt(BPF_RET | BPF_K, 0));
    let mut prog = vec![
        // 0: packet type, as for IPv4.
        stmt(BPF_LD | BPF_W | BPF_ABS, pkttype),
        jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, 2, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OTHERHOST, 1, 0),
        stmt(BPF_JMP | BPF_JA, 1),
        // 4: drop.
        stmt(BPF_RET | BPF_K, 0),
        // 5: TCP next? Into the TCP blocks; otherwise over them.
        stmt(BPF_LD | BPF_B | BPF_ABS, NEXT_HEADER),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::IPPROTO_TCP as u32, 1, 0),
        stmt(BPF_JMP | BPF_JA, tcp.len() as u32),
    ];
    prog.extend(tcp);
    // The extension headers: A still holds the Next Header.
    let [hop_by_hop, routing, fragment, destination] = IPV6_EXTENSION_HEADERS;
    prog.extend([
        jump(BPF_JMP | BPF_JEQ | BPF_K, hop_by_hop, 4, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, routing, 3, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, fragment, 2, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, destination, 1, 0),
        stmt(BPF_RET | BPF_K, 0),
    ]);
    let mut vips: Vec<Ipv6Addr> = services6.iter().map(|s| *s.ip()).collect();
    vips.sort_unstable();
    vips.dedup();
    for vip in &vips {
        prog.extend(accept_if_all(&address_words(DST, vip)));
    }
    prog.push(stmt(BPF_RET | BPF_K, 0));
    prog
}

/// The IPv4 section: accept IPv4 TCP frames that are not outgoing, not non-first
/// fragments, and either to one of `services` or from one. Offsets are from the Ethernet
/// header (an untagged frame: 14 bytes, then IPv4); `ldxb 4*([14]&0xf)` loads the IPv4
/// header length so the ports are found after any IP options. One block of ten
/// instructions per service, each jump local (classic BPF jumps reach 255 ahead), so
/// the program grows linearly and stays far below the kernel's 4,096 instructions at
/// `MAX_SERVICES`.
fn ipv4_filter(services: &[SocketAddrV4]) -> Vec<libc::sock_filter> {
    const ETH: u32 = ethernet::HEADER_LEN as u32;
    const ACCEPT: u32 = u32::MAX;
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    let mut prog = vec![
        // 0: packet type (ancillary): drop our own outgoing frames, and frames to
        // another host's MAC (`baton_common::layout::addressed_to` says why).
        stmt(BPF_LD | BPF_W | BPF_ABS, pkttype),
        jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, 9, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OTHERHOST, 8, 0),
        // 3: EtherType IPv4.
        stmt(BPF_LD | BPF_H | BPF_ABS, 12),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 0, 6),
        // 5: protocol TCP.
        stmt(BPF_LD | BPF_B | BPF_ABS, ETH + 9),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 4),
        // 7: no fragment offset (ports are only in the first fragment).
        stmt(BPF_LD | BPF_H | BPF_ABS, ETH + 6),
        jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 2, 0),
        // 9: X = IPv4 header length; over the drop below to the services.
        stmt(BPF_LDX | BPF_B | BPF_MSH, ETH),
        stmt(BPF_JMP | BPF_JA, 1),
        // 11: drop.
        stmt(BPF_RET | BPF_K, 0),
    ];
    for service in services {
        let vip = u32::from(*service.ip());
        let port = u32::from(service.port());
        prog.extend([
            // To the service?
            stmt(BPF_LD | BPF_W | BPF_ABS, ETH + 16),
            jump(BPF_JMP | BPF_JEQ | BPF_K, vip, 0, 3),
            stmt(BPF_LD | BPF_H | BPF_IND, ETH + 2),
            jump(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 1),
            stmt(BPF_RET | BPF_K, ACCEPT),
            // From it (a back-end's copy)?
            stmt(BPF_LD | BPF_W | BPF_ABS, ETH + 12),
            jump(BPF_JMP | BPF_JEQ | BPF_K, vip, 0, 3),
            stmt(BPF_LD | BPF_H | BPF_IND, ETH),
            jump(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 1),
            stmt(BPF_RET | BPF_K, ACCEPT),
        ]);
    }
    prog.push(stmt(BPF_RET | BPF_K, 0));
    prog
}

/// The nftables table that hides VIP:port from the host's TCP. It outlives the daemon
/// on purpose (module docs); [`HostTcpFilter::remove`] takes it away.
pub struct HostTcpFilter;

/// The table's name (`inet` family: one table for both families' rules). One front-end
/// per host owns it.
pub const NFT_TABLE: &str = "baton_fe";

impl HostTcpFilter {
    /// Installs the table, or atomically replaces one already there (a previous
    /// daemon's, stopped or crashed): never a moment without it. `services6`, the IPv6
    /// services, get `ip6` rules beside the IPv4 ones; none, and the table is what it
    /// always was.
    pub fn install(services: &[SocketAddrV4], services6: &[SocketAddrV6]) -> anyhow::Result<()> {
        nft_script(&guard_script(services, services6))
            .context("installing the nftables table that hides VIP:port from the host's TCP")
    }

    /// Removes the table, if there is one; says whether there was.
    pub fn remove() -> anyhow::Result<bool> {
        // Deleting a table that is not there fails; tell that apart from a real failure
        // by asking first.
        if nft_script(&format!("list table inet {NFT_TABLE}\n")).is_err() {
            return Ok(false);
        }
        nft_script(&format!("delete table inet {NFT_TABLE}\n"))
            .context("removing the nftables table")?;
        Ok(true)
    }
}

/// The nftables script [`HostTcpFilter::install`] runs: one rule per service, `ip daddr`
/// for IPv4 ones and `ip6 daddr` for IPv6 ones (nftables finds the TCP header after any
/// IPv6 extension headers, so `tcp dport` matches those too); `table` then `delete
/// table` in one transaction replaces a table a previous daemon left behind, and works
/// when there is none.
fn guard_script(services: &[SocketAddrV4], services6: &[SocketAddrV6]) -> String {
    const COMMENT: &str =
        "baton frontend: VIP traffic is read from AF_PACKET; the host's TCP must not answer it";
    let rules_v4 = services.iter().map(|service| {
        format!(
            "\t\tip daddr {ip} tcp dport {port} counter drop comment \"{COMMENT}\"\n",
            ip = service.ip(),
            port = service.port(),
        )
    });
    let rules_v6 = services6.iter().map(|service| {
        format!(
            "\t\tip6 daddr {ip} tcp dport {port} counter drop comment \"{COMMENT}\"\n",
            ip = service.ip(),
            port = service.port(),
        )
    });
    let rules: String = rules_v4.chain(rules_v6).collect();
    format!(
        "table inet {NFT_TABLE}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         {rules}\
         \t}}\n\
         }}\n",
    )
}

fn nft_script(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft`; is nftables installed (scripts/setup)?")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program on `frame` the way the kernel does for the parts
    /// used here (no ancillary loads: packet type given separately).
    fn run(prog: &[libc::sock_filter], frame: &[u8], pkttype: u32) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        // Classic BPF only jumps forward: the program's length bounds the run.
        for _ in 0..prog.len() {
            let ins = prog[pc];
            let k = ins.k;
            let load = |off: usize, size: usize| -> Option<u32> {
                let b = frame.get(off..off + size)?;
                Some(b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)))
            };
            match ins.code {
                c if c == BPF_LD | BPF_W | BPF_ABS
                    && k == (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32 =>
                {
                    a = pkttype
                }
                c if c == BPF_LD | BPF_W | BPF_ABS => match load(k as usize, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == BPF_LD | BPF_H | BPF_ABS => match load(k as usize, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == BPF_LD | BPF_B | BPF_ABS => match load(k as usize, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == BPF_LD | BPF_H | BPF_IND => match load((x + k) as usize, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == BPF_LDX | BPF_B | BPF_MSH => match load(k as usize, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                c if c == BPF_JMP | BPF_JA => pc += k as usize,
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == k { ins.jt } else { ins.jf });
                }
                c if c == BPF_JMP | BPF_JSET | BPF_K => {
                    pc += usize::from(if a & k != 0 { ins.jt } else { ins.jf });
                }
                c if c == BPF_RET | BPF_K => return k,
                other => panic!("opcode {other:#x} not modelled"),
            }
            pc += 1;
        }
        panic!("program did not return");
    }

    fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn filter_takes_service_traffic_both_ways_and_nothing_else() {
        let prog = service_filter(&["198.18.2.1:80".parse().unwrap()], &[]);
        let vip = [198, 18, 2, 1];
        let client = [198, 18, 0, 2];
        let fe = [198, 18, 1, 2];
        assert_ne!(
            run(&prog, &frame(client, 4000, vip, 80, 6), 0),
            0,
            "client to VIP:80"
        );
        assert_ne!(
            run(&prog, &frame(vip, 80, client, 4000, 6), 0),
            0,
            "copy from a back-end"
        );
        assert_eq!(
            run(&prog, &frame(vip, 80, client, 4000, 6), PACKET_OUTGOING),
            0,
            "our own"
        );
        assert_eq!(
            run(&prog, &frame(client, 4000, vip, 80, 6), PACKET_OTHERHOST),
            0,
            "to another host's MAC"
        );
        assert_eq!(
            run(&prog, &frame(client, 4000, vip, 22, 6), 0),
            0,
            "other VIP port"
        );
        assert_eq!(run(&prog, &frame(client, 4000, vip, 80, 17), 0), 0, "UDP");
        assert_eq!(
            run(&prog, &frame(client, 4000, fe, 80, 6), 0),
            0,
            "host address"
        );
        let mut fragment = frame(client, 4000, vip, 80, 6);
        fragment[14 + 7] = 1;
        assert_eq!(run(&prog, &fragment, 0), 0, "non-first fragment");
        // IP options move the ports.
        let mut opts = frame(client, 4000, vip, 80, 6);
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 0]);
        assert_ne!(run(&prog, &opts, 0), 0, "with IP options");
        let mut arp = frame(client, 4000, vip, 80, 6);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&prog, &arp, 0), 0, "not IPv4");
    }

    #[test]
    fn filter_takes_every_service_and_only_them() {
        let services: Vec<SocketAddrV4> = (0..MAX_TEST_SERVICES)
            .map(|i| {
                SocketAddrV4::new(
                    Ipv4Addr::new(198, 18, 2, 1 + (i / 2) as u8),
                    [80, 443][i % 2],
                )
            })
            .collect();
        let prog = service_filter(&services, &[]);
        assert!(prog.len() <= 4096, "{} instructions", prog.len());
        let client = [198, 18, 0, 2];
        for s in &services {
            let vip = s.ip().octets();
            assert_ne!(
                run(&prog, &frame(client, 4000, vip, s.port(), 6), 0),
                0,
                "to {s}"
            );
            assert_ne!(
                run(&prog, &frame(vip, s.port(), client, 4000, 6), 0),
                0,
                "from {s}"
            );
            assert_eq!(
                run(&prog, &frame(client, 4000, vip, 8080, 6), 0),
                0,
                "{s} other port"
            );
        }
        // A VIP's port that belongs to another VIP only.
        let last = services.last().unwrap();
        let other = Ipv4Addr::new(198, 18, 2, 200).octets();
        assert_eq!(
            run(&prog, &frame(client, 4000, other, last.port(), 6), 0),
            0
        );
    }

    const MAX_TEST_SERVICES: usize = baton_common::frontend::MAX_SERVICES as usize;

    /// An IPv6 frame: Ethernet, the fixed header naming `next_header`, then (for TCP) the
    /// ports, or (for an extension header) 8 bytes of it naming TCP and then the ports.
    fn frame6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, next_header: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[14 + 6] = next_header;
        f[14 + 7] = 64;
        f[14 + 8..14 + 24].copy_from_slice(&src.octets());
        f[14 + 24..14 + 40].copy_from_slice(&dst.octets());
        if next_header != 6 && next_header != 17 {
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        }
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&tcp);
        let payload_len = (f.len() - 54) as u16;
        f[14 + 4..14 + 6].copy_from_slice(&payload_len.to_be_bytes());
        f
    }

    #[test]
    fn without_ipv6_services_the_filter_is_the_ipv4_one_and_takes_no_ipv6() {
        let services: [SocketAddrV4; 2] = [
            "198.18.2.1:80".parse().unwrap(),
            "198.18.2.1:443".parse().unwrap(),
        ];
        let prog = service_filter(&services, &[]);
        let same = |a: &[libc::sock_filter], b: &[libc::sock_filter]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k))
        };
        assert!(same(&prog, &ipv4_filter(&services)));
        let vip6: Ipv6Addr = "2001:2:0:1::a".parse().unwrap();
        let client6: Ipv6Addr = "2001:2:0:0::2".parse().unwrap();
        assert_eq!(run(&prog, &frame6(client6, 4000, vip6, 80, 6), 0), 0);
    }

    #[test]
    fn filter_takes_ipv6_service_traffic_both_ways_and_nothing_else() {
        let services: [SocketAddrV4; 1] = ["198.18.2.1:80".parse().unwrap()];
        let services6: [SocketAddrV6; 2] = [
            "[2001:2:0:1::a]:80".parse().unwrap(),
            "[2001:2:0:1::a]:443".parse().unwrap(),
        ];
        let prog = service_filter(&services, &services6);
        let vip6: Ipv6Addr = "2001:2:0:1::a".parse().unwrap();
        let client6: Ipv6Addr = "2001:2:0:0::2".parse().unwrap();
        let host6: Ipv6Addr = "2001:2:0:1::2".parse().unwrap();
        let accepted = |frame: &[u8], pkttype: u32| run(&prog, frame, pkttype) != 0;
        for port in [80, 443] {
            assert!(
                accepted(&frame6(client6, 4000, vip6, port, 6), 0),
                "to VIP6:{port}"
            );
            assert!(
                accepted(&frame6(vip6, port, client6, 4000, 6), 0),
                "copy from :{port}"
            );
        }
        assert!(
            !accepted(&frame6(vip6, 80, client6, 4000, 6), PACKET_OUTGOING),
            "our own"
        );
        assert!(
            !accepted(&frame6(client6, 4000, vip6, 80, 6), PACKET_OTHERHOST),
            "to another host's MAC"
        );
        assert!(
            !accepted(&frame6(client6, 4000, vip6, 22, 6), 0),
            "other port"
        );
        assert!(
            !accepted(&frame6(client6, 4000, host6, 80, 6), 0),
            "host address"
        );
        assert!(
            !accepted(&frame6(client6, 80, host6, 4000, 6), 0),
            "from another's :80"
        );
        assert!(!accepted(&frame6(client6, 4000, vip6, 80, 17), 0), "UDP");
        assert!(
            !accepted(&frame6(client6, 4000, vip6, 80, 58), 0),
            "ICMPv6 (NDP, echo)"
        );
        // Every word of the address counts.
        for word in 0..4 {
            let mut octets = vip6.octets();
            octets[4 * word + 3] ^= 1;
            let near = Ipv6Addr::from(octets);
            assert!(
                !accepted(&frame6(client6, 4000, near, 80, 6), 0),
                "word {word}"
            );
            assert!(
                !accepted(&frame6(near, 80, client6, 4000, 6), 0),
                "word {word}"
            );
        }
        // Extension headers go up to the core for the VIP, whatever they hide.
        for next_header in IPV6_EXTENSION_HEADERS {
            let next_header = next_header as u8;
            assert!(accepted(&frame6(client6, 4000, vip6, 80, next_header), 0));
            assert!(!accepted(&frame6(client6, 4000, host6, 80, next_header), 0));
            assert!(
                !accepted(
                    &frame6(client6, 4000, vip6, 80, next_header),
                    PACKET_OUTGOING
                ),
                "our own"
            );
        }
        assert!(!accepted(&frame6(client6, 4000, vip6, 80, 51), 0), "AH");
        // IPv4 as before.
        let vip = [198, 18, 2, 1];
        let client = [198, 18, 0, 2];
        assert!(accepted(&frame(client, 4000, vip, 80, 6), 0));
        assert!(accepted(&frame(vip, 80, client, 4000, 6), 0));
        assert!(!accepted(&frame(client, 4000, vip, 22, 6), 0));
        assert!(!accepted(&frame(vip, 80, client, 4000, 6), PACKET_OUTGOING));
        // An IPv6 frame to the IPv4 service's bytes is not IPv4, nor the reverse.
        let mut arp = frame(client, 4000, vip, 80, 6);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!accepted(&arp, 0), "neither family");
    }

    #[test]
    fn filter_takes_every_service_of_both_families_within_the_kernels_limit() {
        let services: Vec<SocketAddrV4> = (0..MAX_TEST_SERVICES)
            .map(|i| {
                SocketAddrV4::new(
                    Ipv4Addr::new(198, 18, 2, 1 + (i / 2) as u8),
                    [80, 443][i % 2],
                )
            })
            .collect();
        let services6: Vec<SocketAddrV6> = (0..MAX_TEST_SERVICES)
            .map(|i| {
                let ip = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1 + (i / 2) as u16);
                SocketAddrV6::new(ip, [80, 443][i % 2], 0, 0)
            })
            .collect();
        let prog = service_filter(&services, &services6);
        // BPF_MAXINSNS (include/uapi/linux/bpf_common.h).
        assert!(prog.len() <= 4096, "{} instructions", prog.len());
        let client6: Ipv6Addr = "2001:2:0:0::2".parse().unwrap();
        for s in &services6 {
            assert_ne!(
                run(&prog, &frame6(client6, 4000, *s.ip(), s.port(), 6), 0),
                0,
                "to {s}"
            );
            assert_ne!(
                run(&prog, &frame6(*s.ip(), s.port(), client6, 4000, 6), 0),
                0,
                "from {s}"
            );
            assert_eq!(
                run(&prog, &frame6(client6, 4000, *s.ip(), 8080, 6), 0),
                0,
                "{s} other port"
            );
            assert_ne!(
                run(&prog, &frame6(client6, 4000, *s.ip(), 8080, 0), 0),
                0,
                "{s} hop-by-hop"
            );
        }
        let client = [198, 18, 0, 2];
        for s in &services {
            assert_ne!(
                run(&prog, &frame(client, 4000, s.ip().octets(), s.port(), 6), 0),
                0,
                "to {s}"
            );
        }
    }

    #[test]
    fn the_guard_has_a_rule_per_service_of_each_family() {
        let services: [SocketAddrV4; 1] = ["198.18.2.1:80".parse().unwrap()];
        let v4_only = guard_script(&services, &[]);
        assert!(v4_only.contains("\t\tip daddr 198.18.2.1 tcp dport 80 counter drop"));
        assert!(!v4_only.contains("ip6"), "{v4_only}");
        let services6: [SocketAddrV6; 2] = [
            "[2001:2:0:1::a]:80".parse().unwrap(),
            "[2001:2:0:1::a]:443".parse().unwrap(),
        ];
        let both = guard_script(&services, &services6);
        for line in [
            "\t\tip daddr 198.18.2.1 tcp dport 80 counter drop",
            "\t\tip6 daddr 2001:2:0:1::a tcp dport 80 counter drop",
            "\t\tip6 daddr 2001:2:0:1::a tcp dport 443 counter drop",
        ] {
            assert!(both.contains(line), "{line:?} in {both}");
        }
        // One table of family inet, replaced in one transaction, as for IPv4 alone.
        assert!(both.starts_with("table inet baton_fe\ndelete table inet baton_fe\n"));
        assert_eq!(both.matches("table inet").count(), 3);
    }

    #[test]
    fn checksum_completion_makes_a_partial_ipv6_checksum_verify() {
        use baton_proto::wire::{Checksums, TcpFlags, TcpRepr};
        let src: Ipv6Addr = "2001:2:0:0::2".parse().unwrap();
        let dst: Ipv6Addr = "2001:2:0:1::a".parse().unwrap();
        let tcp = TcpRepr {
            src_port: 4000,
            dst_port: 80,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::ACK,
            window_len: 1000,
            urgent_pointer: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; 4],
            timestamps: None,
            unknown_options: baton_proto::wire::UnknownTcpOptions::new(),
            payload: b"hello",
        };
        let ok = |p: &[u8]| {
            let ipp = Ipv6Packet::new_checked(p).unwrap();
            let (_, at) = ipp.upper_layer().unwrap();
            let seg = TcpSegment::new_checked(&p[at..]).unwrap();
            TcpRepr::parse(&seg, src, dst, Checksums::Verify).is_ok()
        };
        // Without and with a destination options header before the segment.
        for options in [&[][..], &[6, 0, 1, 4, 0, 0, 0, 0][..]] {
            let ip = baton_proto::wire::Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: if options.is_empty() {
                    IpProtocol::Tcp
                } else {
                    IpProtocol::from(60)
                },
                payload_len: options.len() + tcp.buffer_len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            let mut pkt = vec![0; 40 + options.len() + tcp.buffer_len()];
            ip.emit(&mut pkt[..40]).unwrap();
            pkt[40..40 + options.len()].copy_from_slice(options);
            let at = 40 + options.len();
            tcp.emit(src, dst, &mut pkt[at..]).unwrap();
            assert!(ok(&pkt));
            pkt[at + 16] ^= 0x5a; // a partial (pseudo-header only) checksum
            assert!(!ok(&pkt));
            assert!(complete_tcp_checksum(&mut pkt));
            assert!(ok(&pkt));
        }
        // Not TCP: left alone.
        assert!(!complete_tcp_checksum(&mut [0x60; 40]));
    }

    /// A network namespace of the test's own, removed however the test ends; `None`
    /// (the reason printed) when not root. Tests that make one run under the lab lock.
    struct TestNamespace(String);

    impl TestNamespace {
        fn new(prefix: &str, test: &str) -> Option<Self> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("SKIPPED {test}: needs root for a network namespace");
                return None;
            }
            let ns = Self(format!("{prefix}{}", std::process::id()));
            crate::netns::ip(&["netns", "add", ns.0.as_str()]).unwrap();
            Some(ns)
        }

        fn ip(&self, args: &str) {
            let mut all = vec!["-n", self.0.as_str()];
            all.extend(args.split_whitespace());
            crate::netns::ip(&all).unwrap();
        }
    }

    impl Drop for TestNamespace {
        fn drop(&mut self) {
            let _ = crate::netns::ip(&["netns", "del", self.0.as_str()]);
        }
    }

    /// How a connection attempt from the namespace itself ended: the host's TCP refuses
    /// a port nobody listens on with a RST at once, and a SYN the guard drops goes
    /// unanswered. Loopback traffic crosses prerouting as a neighbour's would.
    fn connect_outcome(to: std::net::SocketAddr) -> io::ErrorKind {
        match std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(300)) {
            Ok(_) => panic!("nothing listens on {to}"),
            Err(e) => e.kind(),
        }
    }

    /// The guard as the daemon installs it, on both families in a namespace: before it,
    /// the host's TCP refuses VIP:80 (a RST, which would race the daemon's SYN/ACK); with
    /// it, VIP:80 goes unanswered on IPv4 and IPv6 alike while other ports stay the
    /// host's; removed, the host answers again. Root, under the lab lock.
    #[test]
    fn the_guard_keeps_the_hosts_tcp_off_both_families_vips() {
        let test = "the_guard_keeps_the_hosts_tcp_off_both_families_vips";
        let Some(ns) = TestNamespace::new("btguard", test) else {
            return;
        };
        ns.ip("link set lo up");
        ns.ip("addr add 198.18.2.1/32 dev lo");
        ns.ip("addr add 2001:2:0:1::a/128 dev lo nodad");
        let services: [SocketAddrV4; 1] = ["198.18.2.1:80".parse().unwrap()];
        let services6: [SocketAddrV6; 1] = ["[2001:2:0:1::a]:80".parse().unwrap()];
        let (v4, v6) = (
            std::net::SocketAddr::V4(services[0]),
            std::net::SocketAddr::V6(services6[0]),
        );
        let other6: std::net::SocketAddr = "[2001:2:0:1::a]:81".parse().unwrap();
        crate::netns::run_in(&ns.0, || {
            // Once the namespace's addresses are in place (a first IPv6 SYN has been
            // seen to go unanswered right after `ip addr add`), the host refuses.
            for to in [v4, v6] {
                let refused =
                    (0..10).any(|_| connect_outcome(to) == io::ErrorKind::ConnectionRefused);
                assert!(refused, "the host's TCP refuses {to} without the guard");
            }
            HostTcpFilter::install(&services, &services6).unwrap();
            assert_eq!(
                connect_outcome(v4),
                io::ErrorKind::TimedOut,
                "IPv4 VIP:80 guarded"
            );
            assert_eq!(
                connect_outcome(v6),
                io::ErrorKind::TimedOut,
                "IPv6 VIP:80 guarded"
            );
            assert_eq!(
                connect_outcome(other6),
                io::ErrorKind::ConnectionRefused,
                "other ports stay the host's"
            );
            // Installed again (a restart): replaced, still guarding.
            HostTcpFilter::install(&services, &services6).unwrap();
            assert_eq!(connect_outcome(v6), io::ErrorKind::TimedOut);
            assert!(HostTcpFilter::remove().unwrap());
            assert_eq!(connect_outcome(v6), io::ErrorKind::ConnectionRefused);
            assert!(!HostTcpFilter::remove().unwrap(), "nothing left to remove");
        })
        .unwrap();
    }

    /// An IPv4 or IPv6 TCP SYN from `src` to `dst`, port 4000 to `dport`, as the core
    /// would build it (a client's source: not an address of the sending host).
    fn syn(src: IpAddr, dst: IpAddr, dport: u16) -> Vec<u8> {
        use baton_proto::wire::{TcpFlags, TcpRepr};
        let tcp = TcpRepr {
            src_port: 4000,
            dst_port: dport,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window_len: 1000,
            urgent_pointer: 0,
            max_seg_size: Some(1440),
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; 4],
            timestamps: None,
            unknown_options: baton_proto::wire::UnknownTcpOptions::new(),
            payload: b"",
        };
        match (src, dst) {
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let ip = baton_proto::wire::Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                };
                let mut pkt = vec![0; 40 + tcp.buffer_len()];
                ip.emit(&mut pkt[..40]).unwrap();
                tcp.emit(src, dst, &mut pkt[40..]).unwrap();
                pkt
            }
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let ip = baton_proto::wire::Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    protocol: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    ttl: 64,
                    ident: 0,
                    dont_frag: true,
                    dscp_ecn: 0,
                };
                let mut pkt = vec![0; 20 + tcp.buffer_len()];
                ip.emit(&mut pkt[..20]).unwrap();
                tcp.emit(src, dst, &mut pkt[20..]).unwrap();
                pkt
            }
            _ => unreachable!("one family per packet"),
        }
    }

    /// Transmit and capture over a veth pair in a namespace: a `PacketIo` with IPv6
    /// services sends IPv6 packets whose source is a client's (as the SYN' is) through
    /// its raw IPv6 socket, and another's capture on the far end takes the one to its
    /// IPv6 service, byte for byte, beside an IPv4 one, and not the one to another port.
    /// Root, under the lab lock.
    #[test]
    fn an_ipv6_packet_sent_raw_is_captured_for_its_service_only() {
        let test = "an_ipv6_packet_sent_raw_is_captured_for_its_service_only";
        let Some(ns) = TestNamespace::new("btcap", test) else {
            return;
        };
        ns.ip("link add pio0 address 02:ba:70:09:00:01 type veth peer name pio1 address 02:ba:70:09:00:02");
        ns.ip("link set pio0 up");
        ns.ip("link set pio1 up");
        ns.ip("addr add 198.18.9.1/24 dev pio0");
        ns.ip("addr add 2001:2:0:9::1/64 dev pio0 nodad");
        // Resolved without asking: nothing on pio1 answers ARP or NDP for these.
        ns.ip("neigh add 198.18.9.2 lladdr 02:ba:70:09:00:02 dev pio0 nud permanent");
        ns.ip("neigh add 2001:2:0:9::2 lladdr 02:ba:70:09:00:02 dev pio0 nud permanent");
        let client: IpAddr = "198.18.0.2".parse().unwrap();
        let client6: IpAddr = "2001:2:0:0::2".parse().unwrap();
        let vip: IpAddr = "198.18.9.2".parse().unwrap();
        let vip6: IpAddr = "2001:2:0:9::2".parse().unwrap();
        let (got, sender_stats) = crate::netns::run_in(&ns.0, || {
            let mut sender = PacketIo::open(
                "pio0",
                &["198.18.9.1:1".parse().unwrap()],
                &["[2001:2:0:9::1]:1".parse().unwrap()],
            )
            .unwrap();
            let mut receiver = PacketIo::open(
                "pio1",
                &["198.18.9.2:80".parse().unwrap()],
                &["[2001:2:0:9::2]:80".parse().unwrap()],
            )
            .unwrap();
            sender.send(vip6, &syn(client6, vip6, 81));
            sender.send(vip6, &syn(client6, vip6, 80));
            sender.send(vip, &syn(client, vip, 80));
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while got.len() < 2 && std::time::Instant::now() < deadline {
                match receiver.recv() {
                    Received::Packet(p) => got.push(p.to_vec()),
                    Received::Dropped => {}
                    Received::Empty => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            // Anything else that was coming has come by now.
            std::thread::sleep(std::time::Duration::from_millis(100));
            loop {
                match receiver.recv() {
                    Received::Packet(p) => got.push(p.to_vec()),
                    Received::Dropped => {}
                    Received::Empty => break,
                }
            }
            (got, sender.stats().clone())
        })
        .unwrap();
        assert_eq!(sender_stats.packets_sent, 3, "{sender_stats:?}");
        assert_eq!(sender_stats.send_errors, 0, "{sender_stats:?}");
        assert_eq!(
            got,
            [syn(client6, vip6, 80), syn(client, vip, 80)],
            "the IPv6 SYN to the service and the IPv4 one, nothing else"
        );
    }

    /// What the capture hands up for an IPv6 service reaches a protocol core that serves
    /// it (the configuration gives the core `vip6`): the SYN is answered with a SYN/ACK
    /// over IPv6, to the client, for `PacketIo::send` to take to the raw IPv6 socket.
    #[test]
    fn the_core_answers_what_ipv6_capture_hands_it() {
        let text = r#"
            interface = "eth0"
            vip = "198.18.2.1"
            vip6 = "2001:2:0:1::a"
            handoff_key = "000102030405060708090a0b0c0d0e0f"
            [dispatch]
            default_pool = "web"
            [dispatch.pools.web]
            backends = [{ address = "198.18.1.11:80" }]
        "#;
        let settings = super::super::config::parse(text, std::path::Path::new(".")).unwrap();
        let mut fe = baton_proto::frontend::FrontEnd::new(
            settings.proto,
            super::super::dispatch::ContentDispatch::new(settings.dispatcher),
        )
        .unwrap();
        let now = baton_proto::frontend::Instant::from_nanos(1_000_000_000);
        let vip6 = IpAddr::V6(*settings.services6[0].ip());
        let client6: IpAddr = "2001:2:0:0::2".parse().unwrap();
        let packet = syn(client6, vip6, 80);
        fe.handle_packet(now, &packet);
        let stats = fe.stats();
        assert_eq!(stats.packets_received, 1);
        assert_eq!(stats.malformed + stats.not_for_service, 0);
        let Some(baton_proto::frontend::Output::Transmit(t)) = fe.poll_output() else {
            panic!("a SYN/ACK");
        };
        assert_eq!(t.destination, client6);
        let answer = Ipv6Packet::new_checked(&t.packet[..]).unwrap();
        assert_eq!(IpAddr::V6(answer.src_addr()), vip6);
        assert_eq!(IpAddr::V6(answer.dst_addr()), client6);
        assert_eq!(fe.connection_count(), 1);
    }

    #[test]
    fn checksum_completion_makes_a_partial_checksum_verify() {
        use baton_proto::wire::{Checksums, TcpFlags, TcpRepr};
        let src = Ipv4Addr::new(198, 18, 0, 2);
        let dst = Ipv4Addr::new(198, 18, 2, 1);
        let tcp = TcpRepr {
            src_port: 4000,
            dst_port: 80,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::ACK,
            window_len: 1000,
            urgent_pointer: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; 4],
            timestamps: None,
            unknown_options: baton_proto::wire::UnknownTcpOptions::new(),
            payload: b"hello",
        };
        let ip = baton_proto::wire::Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: baton_proto::wire::IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            ttl: 64,
            ident: 0,
            dont_frag: true,
            dscp_ecn: 0,
        };
        let mut pkt = vec![0; 20 + tcp.buffer_len()];
        ip.emit(&mut pkt[..20]).unwrap();
        tcp.emit(src, dst, &mut pkt[20..]).unwrap();
        pkt[20 + 16] ^= 0x5a; // a partial (pseudo-header only) checksum
        let ok = |p: &[u8]| {
            let ipp = Ipv4Packet::new_checked(p).unwrap();
            let seg = TcpSegment::new_checked(ipp.payload()).unwrap();
            TcpRepr::parse(&seg, src, dst, Checksums::Verify).is_ok()
        };
        assert!(!ok(&pkt));
        assert!(complete_tcp_checksum(&mut pkt));
        assert!(ok(&pkt));
    }
}
