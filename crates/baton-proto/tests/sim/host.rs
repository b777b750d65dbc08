//! smoltcp hosts: the client and the back-ends, a TCP implementation independent of
//! Baton's, on a `Medium::Ip` device whose queues the simulation fills and drains.
//!
//! smoltcp's timestamp generator is a plain `fn() -> u32`, so it reads a thread-local
//! that [`TcpHost::poll`] sets from the virtual clock and the host's own clock offset
//! before every poll; each test runs on its own thread, so this stays deterministic.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::fast_open::FastOpen;
use super::packet;
use super::rng::SimRng;

thread_local! {
    static TS_NOW: Cell<u32> = const { Cell::new(0) };
}

/// The TSval smoltcp puts in segments: the polled host's millisecond clock.
fn sim_tsval() -> u32 {
    TS_NOW.with(Cell::get)
}

pub fn smol_now(now: Duration) -> Instant {
    Instant::from_micros(now.as_micros() as i64)
}

/// A `Medium::Ip` device over two queues of raw IPv4 packets.
#[derive(Default)]
pub struct SimDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
}

pub struct SimRxToken(Vec<u8>);
pub struct SimTxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for SimRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for SimTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        packet::fill_checksums(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for SimDevice {
    type RxToken<'a> = SimRxToken;
    type TxToken<'a> = SimTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(SimRxToken, SimTxToken<'_>)> {
        let pkt = self.rx.pop_front()?;
        Some((SimRxToken(pkt), SimTxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<SimTxToken<'_>> {
        Some(SimTxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        // smoltcp neither fills nor checks checksums: the device fills them in (faster
        // in an unoptimized test build) and the network verifies every packet at every
        // hop (failing the scenario loudly where smoltcp would drop silently).
        caps.checksum.ipv4 = Checksum::None;
        caps.checksum.tcp = Checksum::None;
        caps
    }
}

/// One smoltcp interface with its sockets, and the stand-in for the kernel's TCP Fast
/// Open server path in front of it ([`FastOpen`], off unless
/// [`TcpHost::set_fast_open`]): packets in go through [`TcpHost::receive`], packets out
/// come from [`TcpHost::take_sent`].
pub struct TcpHost {
    pub iface: Interface,
    pub device: SimDevice,
    pub sockets: SocketSet<'static>,
    /// Added to the virtual milliseconds to make this host's TSval clock.
    pub ts_offset: u32,
    pub fast_open: FastOpen,
}

impl TcpHost {
    pub fn new(addr: IpAddr, gateway: IpAddr, rng: &mut SimRng, ts_offset: u32) -> Self {
        let mut device = SimDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = rng.next_u64();
        let mut iface = Interface::new(config, &mut device, smol_now(Duration::ZERO));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(
                    addr.into(),
                    if addr.is_ipv6() { 64 } else { 24 },
                ))
                .expect("one address fits");
        });
        match gateway {
            IpAddr::V4(gateway) => {
                iface
                    .routes_mut()
                    .add_default_ipv4_route(gateway)
                    .expect("one route fits");
            }
            IpAddr::V6(gateway) => {
                iface
                    .routes_mut()
                    .add_default_ipv6_route(gateway)
                    .expect("one route fits");
            }
        }
        Self {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ts_offset,
            fast_open: FastOpen::new(false),
        }
    }

    /// A server whose listener takes data on a SYN (`tcp_fastopen = 0x202` and
    /// `listen ... fastopen=N`), or not.
    pub fn set_fast_open(&mut self, enabled: bool) {
        self.fast_open = FastOpen::new(enabled);
    }

    /// This host's TSval at `now`.
    fn tsval(&self, now: Duration) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// A packet arrives for this host's TCP.
    pub fn receive(&mut self, now: Duration, pkt: Vec<u8>) {
        let tsval = self.tsval(now);
        if let Some(pkt) = self.fast_open.receive(now, tsval, pkt) {
            self.device.rx.push_back(pkt);
        }
    }

    /// The packets the host sent since the last call. What the fast-open path hands
    /// smoltcp in return waits in its receive queue for the next [`TcpHost::poll`]
    /// ([`TcpHost::has_input`]).
    pub fn take_sent(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let mut sent: Vec<_> = std::mem::take(&mut self.device.tx)
            .into_iter()
            .filter_map(|pkt| self.fast_open.sent(now, pkt))
            .collect();
        sent.append(&mut self.fast_open.to_wire);
        self.device.rx.extend(self.fast_open.to_smoltcp.drain(..));
        sent
    }

    /// Packets wait for smoltcp.
    pub fn has_input(&self) -> bool {
        !self.device.rx.is_empty()
    }

    pub fn add_socket(&mut self, rx: usize, tx: usize, timestamps: bool) -> SocketHandle {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        socket.set_nagle_enabled(false);
        if timestamps {
            socket.set_tsval_generator(Some(sim_tsval));
        }
        self.sockets.add(socket)
    }

    pub fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    fn set_clock(&self, now: Duration) {
        TS_NOW.with(|c| c.set(self.tsval(now)));
    }

    /// Lets the fast-open path's timer and smoltcp process received packets and timers;
    /// what they send lands in `device.tx`.
    pub fn poll(&mut self, now: Duration) {
        let tsval = self.tsval(now);
        self.fast_open.poll(now, tsval);
        self.set_clock(now);
        self.iface
            .poll(smol_now(now), &mut self.device, &mut self.sockets);
    }

    /// When the host next wants to be polled.
    pub fn poll_at(&mut self, now: Duration) -> Option<Duration> {
        let smoltcp = self
            .iface
            .poll_at(smol_now(now), &self.sockets)
            .map(|at| Duration::from_micros(at.total_micros().max(0) as u64));
        [smoltcp, self.fast_open.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Where a request ends, if `buf` holds all of it: an HTTP/1.x head plus a
/// `Content-Length` body, or one TLS record (a ClientHello).
pub fn request_len(buf: &[u8]) -> Option<usize> {
    if buf.first() == Some(&0x16) {
        let len = usize::from(u16::from_be_bytes([*buf.get(3)?, *buf.get(4)?]));
        return (buf.len() >= 5 + len).then_some(5 + len);
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body).then_some(head_end + body)
}

/// What the back-end answers to `request`: an HTTP response carrying `body`, or for a
/// TLS ClientHello the raw `body` (standing in for the handshake).
pub fn response_for(request: &[u8], body: &[u8]) -> Vec<u8> {
    if request.first() == Some(&0x16) {
        return body.to_vec();
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// What the client checks its response against.
#[derive(Clone, Debug)]
pub enum Expect {
    /// Byte for byte.
    Exact(Vec<u8>),
    /// Starts with these bytes (an error response the front-end writes).
    StartsWith(Vec<u8>),
}

pub struct ClientSpec {
    pub port: u16,
    pub request: Vec<u8>,
    /// Sizes of the first parts the request is written in, each written only once the
    /// previous one is acknowledged so that each travels in its own segment; the rest
    /// follows in one last part.
    pub parts: Vec<usize>,
    pub expect: Expect,
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    pub timestamps: bool,
    /// Close the sending side as soon as the whole request is written
    /// (`shutdown(SHUT_WR)`), before any answer, and read the response after.
    pub half_close: bool,
}

/// The client application: connect, write the request, read the response to the end,
/// check it, close (or, half-closing, close first and then read).
pub struct ClientApp {
    pub handle: SocketHandle,
    pub spec: ClientSpec,
    boundaries: Vec<usize>,
    written: usize,
    pub received: Vec<u8>,
    pub mismatch: Option<String>,
    pub established: bool,
    pub fin_received: bool,
    pub close_called: bool,
    pub aborted: bool,
}

impl ClientApp {
    pub fn connect(host: &mut TcpHost, spec: ClientSpec, vip: IpAddr, port: u16) -> Self {
        let handle = host.add_socket(spec.rx_buffer, spec.tx_buffer, spec.timestamps);
        let cx = host.iface.context();
        host.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, (vip, port), spec.port)
            .expect("connect");
        let mut boundaries = Vec::new();
        let mut at = 0;
        for part in &spec.parts {
            at += part;
            if at < spec.request.len() {
                boundaries.push(at);
            }
        }
        boundaries.push(spec.request.len());
        Self {
            handle,
            spec,
            boundaries,
            written: 0,
            received: Vec::new(),
            mismatch: None,
            established: false,
            fin_received: false,
            close_called: false,
            aborted: false,
        }
    }

    pub fn state(&self, host: &mut TcpHost) -> tcp::State {
        host.socket(self.handle).state()
    }

    /// Resets the connection (smoltcp sends RST).
    pub fn abort(&mut self, host: &mut TcpHost) {
        host.socket(self.handle).abort();
        self.aborted = true;
    }

    pub fn step(&mut self, host: &mut TcpHost) {
        if self.aborted {
            return;
        }
        let socket = host.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.state() == tcp::State::Established {
            self.established = true;
        }
        // Write the next part once everything before it is acknowledged.
        if socket.may_send()
            && socket.send_queue() == 0
            && let Some(&end) = self.boundaries.iter().find(|&&b| b > self.written)
        {
            let n = socket
                .send_slice(&self.spec.request[self.written..end])
                .expect("send");
            self.written += n;
        }
        if self.spec.half_close && !self.close_called && self.written == self.spec.request.len() {
            socket.close();
            self.close_called = true;
        }
        while socket.can_recv() {
            let mut buf = [0u8; 16 * 1024];
            let n = socket.recv_slice(&mut buf).expect("recv");
            self.take(&buf[..n]);
        }
        if self.established && !socket.may_recv() && !self.fin_received {
            self.fin_received = matches!(
                socket.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
        }
        if self.fin_received && !self.close_called && self.response_complete() {
            socket.close();
            self.close_called = true;
        }
    }

    fn take(&mut self, data: &[u8]) {
        let at = self.received.len();
        self.received.extend_from_slice(data);
        if self.mismatch.is_some() {
            return;
        }
        if let Expect::Exact(expected) = &self.spec.expect {
            for (i, &b) in data.iter().enumerate() {
                match expected.get(at + i) {
                    Some(&e) if e == b => {}
                    Some(&e) => {
                        self.mismatch = Some(format!(
                            "response byte {} is {b:#04x}, expected {e:#04x}",
                            at + i
                        ));
                        return;
                    }
                    None => {
                        self.mismatch = Some(format!(
                            "response longer than the expected {} bytes",
                            expected.len()
                        ));
                        return;
                    }
                }
            }
        }
    }

    /// The response received so far satisfies the expectation in full.
    pub fn response_complete(&self) -> bool {
        self.mismatch.is_none()
            && match &self.spec.expect {
                Expect::Exact(e) => self.received.len() == e.len(),
                Expect::StartsWith(p) => self.received.starts_with(p),
            }
    }

    /// Response checked, FIN received, closed, and the socket is done.
    pub fn finished(&self, host: &mut TcpHost) -> bool {
        self.close_called && matches!(self.state(host), tcp::State::Closed | tcp::State::TimeWait)
    }

    pub fn describe(&self, host: &mut TcpHost) -> String {
        let expected = match &self.spec.expect {
            Expect::Exact(e) => format!("{} bytes exactly", e.len()),
            Expect::StartsWith(p) => {
                format!("a response starting {:?}", String::from_utf8_lossy(p))
            }
        };
        format!(
            "client: state {}, established {}, received {} bytes (expected {expected}), \
             mismatch {:?}, fin received {}, closed {}, first bytes {:?}",
            self.state(host),
            self.established,
            self.received.len(),
            self.mismatch,
            self.fin_received,
            self.close_called,
            String::from_utf8_lossy(&self.received[..self.received.len().min(40)])
        )
    }
}

pub struct ServerSpec {
    pub port: u16,
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    pub timestamps: bool,
    pub body: Vec<u8>,
    /// How long the application takes to answer once it has the whole request.
    pub response_delay: Duration,
}

/// The back-end's server: read a request, answer it, close.
pub struct ServerApp {
    pub handle: SocketHandle,
    pub spec: ServerSpec,
    pub request: Vec<u8>,
    /// Every complete request it read.
    pub requests: Vec<Vec<u8>>,
    response: Option<Vec<u8>>,
    /// When the response may be written ([`ServerSpec::response_delay`]).
    answer_at: Option<Duration>,
    written: usize,
    pub close_called: bool,
    /// Connections that ended without our close (reset or timed out).
    pub aborted: u32,
    pub established: bool,
}

impl ServerApp {
    pub fn listen(host: &mut TcpHost, spec: ServerSpec) -> Self {
        let handle = host.add_socket(spec.rx_buffer, spec.tx_buffer, spec.timestamps);
        host.socket(handle).listen(spec.port).expect("listen");
        Self {
            handle,
            spec,
            request: Vec::new(),
            requests: Vec::new(),
            response: None,
            answer_at: None,
            written: 0,
            close_called: false,
            aborted: 0,
            established: false,
        }
    }

    /// When the application next has something to do: the response's time.
    pub fn wake_at(&self, now: Duration) -> Option<Duration> {
        self.answer_at.filter(|&at| at > now)
    }

    pub fn state(&self, host: &mut TcpHost) -> tcp::State {
        host.socket(self.handle).state()
    }

    pub fn step(&mut self, now: Duration, host: &mut TcpHost) {
        let socket = host.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.state() == tcp::State::Established {
            self.established = true;
        }
        if socket.state() == tcp::State::Closed && !self.close_called && self.established {
            // Reset or timed out: listen again for the next connection.
            self.aborted += 1;
            self.established = false;
            self.request.clear();
            self.response = None;
            self.answer_at = None;
            self.written = 0;
            socket.listen(self.spec.port).expect("listen");
            return;
        }
        while socket.can_recv() {
            let mut buf = [0u8; 16 * 1024];
            let n = socket.recv_slice(&mut buf).expect("recv");
            self.request.extend_from_slice(&buf[..n]);
        }
        if self.response.is_none()
            && let Some(len) = request_len(&self.request)
        {
            let request = self.request[..len].to_vec();
            self.response = Some(response_for(&request, &self.spec.body));
            self.answer_at = Some(now + self.spec.response_delay);
            self.requests.push(request);
        }
        if let Some(response) = &self.response
            && self.answer_at.is_some_and(|at| at <= now)
        {
            while self.written < response.len() && socket.can_send() {
                let n = socket.send_slice(&response[self.written..]).expect("send");
                if n == 0 {
                    break;
                }
                self.written += n;
            }
            if self.written == response.len() && !self.close_called {
                socket.close();
                self.close_called = true;
            }
        }
    }

    /// Response written, closed, and the socket done with it.
    pub fn finished(&self, host: &mut TcpHost) -> bool {
        self.close_called && matches!(self.state(host), tcp::State::Closed | tcp::State::TimeWait)
    }

    pub fn describe(&self, host: &mut TcpHost) -> String {
        format!(
            "state {}, requests {}, request bytes buffered {}, response written {}/{}, \
             closed {}, aborted connections {}",
            self.state(host),
            self.requests.len(),
            self.request.len(),
            self.written,
            self.response.as_ref().map_or(0, Vec::len),
            self.close_called,
            self.aborted
        )
    }
}
