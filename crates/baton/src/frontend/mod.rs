//! `baton frontend --config FILE`: the front-end daemon.
//!
//! It runs the protocol core ([`baton_proto::frontend::FrontEnd`]) over real packets:
//! [`io`] captures the service's packets from the interface and sends what the core
//! builds through a raw IPv4 socket, [`config`] reads the TOML file, and [`dispatch`] is
//! the first, simple content rule set. [`fastpath`] is the XDP forwarder: once a flow is
//! handed off, its client segments go to the back-end without leaving the driver. The
//! core still forwards what reaches it of a handed-off flow (packets held during the
//! handoff, FIN/RST, segments with payload, or everything when the fast path is off or
//! failed to load): correct, only slower.
//!
//! # The loop
//!
//! One thread, `poll(2)` on the capture socket with the core's next deadline as timeout.
//! Each round: read up to [`RECV_BATCH`] frames and feed them all to the core, run the
//! timers that are due, then send every transmit, then apply every event (log lines
//! now; fast-path table updates later), in the order the core documents (transmits
//! before events). Time is `CLOCK_MONOTONIC`, so ISNs and SYN cookies keep advancing
//! across a restart of the daemon (they are time since boot, not since start).
//!
//! # Stopping
//!
//! SIGTERM or SIGINT starts the drain: new connections are refused (their SYNs dropped
//! and counted, so that a client's retransmitted SYN finds a restarted front-end rather
//! than a reset), existing ones go on, and the daemon exits after the drain period or as
//! soon as no connection is tracked, prints its counters, and removes its nftables table.

pub mod config;
pub mod dispatch;
pub mod fastpath;
pub mod io;
mod log;

use std::{
    net::SocketAddrV4,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use baton_proto::{
    frontend::{Event, FrontEnd, HandedOff, Instant},
    wire::{IpProtocol, Ipv4Packet, TcpFlags, TcpSegment},
};

use dispatch::RouteDispatcher;
use fastpath::{FastPath, FastPathStats};
use io::{HostTcpFilter, PacketIo, Received};

/// Frames read per round before the transmits are sent. Bounded so that the core's
/// output queue (`max_pending_transmits`, 4096 by default) cannot overflow in one
/// round: one client packet causes at most one transmit, plus at a completed handoff
/// the held packets (`max_queued_packets`, 32 by default): 64 × 33 < 4096.
pub const RECV_BATCH: usize = 64;

/// The longest `poll` sleeps: a signal that lands between the stop check and `poll`
/// waits at most this long to be noticed.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// How often the fast path's last-seen stamps are read and fed to the core's idle
/// timers: far below any sensible idle timeout, and a map lookup per installed flow.
const ACTIVITY_SCAN: Duration = Duration::from_secs(1);

/// The daemon's own counters (the core's and the I/O layer's are separate).
#[derive(Debug, Default)]
struct DaemonStats {
    /// Client SYNs dropped because the daemon was draining.
    syns_refused_draining: u64,
    /// Handoffs logged with a latency.
    handoffs_logged: u64,
    /// Sum of logged handoff latencies, in microseconds (mean = sum / count).
    handoff_latency_us_sum: u64,
    /// Largest logged handoff latency, in microseconds.
    handoff_latency_us_max: u64,
    /// Resets logged.
    resets_logged: u64,
    /// Rounds of the loop.
    rounds: u64,
}

/// Runs the daemon until a stop signal and the drain that follows.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let settings = config::load(config_path)?;
    let config::Settings {
        interface,
        service,
        drain,
        secret_generated,
        proto,
        mut dispatcher,
        fast_path,
    } = settings;
    dispatcher.set_max_pending(proto.max_connections);
    let routes = config::describe_routes(&dispatcher);
    let max_connections = proto.max_connections;
    let mut fe = FrontEnd::new(proto, dispatcher).context("protocol core configuration")?;

    // Filter first: from here on the host's TCP never answers VIP:port; a SYN that
    // arrives before the capture socket is open is dropped and retransmitted by the
    // client, rather than reset by the host.
    let filter = HostTcpFilter::install(service)?;
    let mut io = PacketIo::open(&interface, service)?;
    let mut fp_stats = FastPathStats::default();
    let mut fast = if fast_path {
        match FastPath::attach(&interface, service) {
            Ok(fast) => Some(fast),
            Err(e) => {
                // Loud, counted, not fatal: the slow path forwards correctly on its own.
                fp_stats.load_failed = 1;
                log::line(
                    "fastpath_unavailable",
                    &[
                        ("interface", &interface),
                        ("error", &format!("{e:#}")),
                        ("effect", &"the slow path forwards every handed-off packet"),
                    ],
                );
                None
            }
        }
    } else {
        None
    };
    let stop = crate::signals::stop_flag()?;
    log::line(
        "ready",
        &[
            ("interface", &interface),
            ("service", &service),
            ("routes", &routes),
            ("max_connections", &max_connections),
            ("drain_ms", &drain.as_millis()),
            (
                "secret",
                &if secret_generated {
                    "generated"
                } else {
                    "configured"
                },
            ),
            ("nft_table", &format!("inet {}", io::NFT_TABLE)),
            (
                "fast_path",
                &match (&fast, fast_path) {
                    (Some(_), _) => "xdp",
                    (None, true) => "unavailable",
                    (None, false) => "off",
                },
            ),
        ],
    );

    let mut stats = DaemonStats::default();
    let mut fast_path = Fast {
        path: fast.as_mut(),
        stats: &mut fp_stats,
    };
    let result = event_loop(
        &mut fe,
        &mut io,
        &mut fast_path,
        service,
        drain,
        stop,
        &mut stats,
    );

    log::counters("frontend_stats", fe.stats());
    log::counters("io_stats", io.stats());
    log::counters("daemon_stats", &stats);
    log::counters("fastpath_stats", &fp_stats);
    if let Some(fast) = &fast {
        let counters = fast.counters();
        let fields: Vec<(&str, &dyn std::fmt::Display)> = counters
            .iter()
            .map(|(name, n)| (*name, n as &dyn std::fmt::Display))
            .collect();
        log::line("fastpath_counters", &fields);
    }
    // Detaches the program before the host filter goes: from then on the host's TCP
    // would see VIP:port again, and no flow is forwarded behind its back.
    drop(fast);
    if let Err(e) = filter.remove() {
        log::line("nft_remove_failed", &[("error", &format!("{e:#}"))]);
    }
    log::line("exit", &[("connections_left", &fe.connection_count())]);
    result
}

/// The fast path if attached, and its bookkeeping either way.
struct Fast<'a> {
    path: Option<&'a mut FastPath>,
    stats: &'a mut FastPathStats,
}

fn event_loop(
    fe: &mut FrontEnd<RouteDispatcher>,
    io: &mut PacketIo,
    fast: &mut Fast<'_>,
    service: SocketAddrV4,
    drain: Duration,
    stop: &AtomicBool,
    stats: &mut DaemonStats,
) -> anyhow::Result<()> {
    let mut drain_until: Option<Instant> = None;
    let mut more_to_read = false;
    let mut next_scan = clock() + ACTIVITY_SCAN;
    // Reused every round, so a round allocates nothing once they have grown.
    let mut transmits = Vec::new();
    let mut handed_off = Vec::new();
    loop {
        stats.rounds += 1;
        let now = clock();
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(now + drain);
            log::line(
                "draining",
                &[
                    ("connections", &fe.connection_count()),
                    ("drain_ms", &drain.as_millis()),
                ],
            );
        }
        if let Some(until) = drain_until
            && (fe.connection_count() == 0 || now >= until)
        {
            return Ok(());
        }

        let wake = [fe.poll_timeout(), drain_until].into_iter().flatten().min();
        let sleep = if more_to_read {
            Duration::ZERO
        } else {
            wake.map_or(MAX_SLEEP, |at| {
                at.saturating_duration_since(now).min(MAX_SLEEP)
            })
        };
        let readable = wait_readable(io.rx_fd(), sleep)?;

        let now = clock();
        more_to_read = false;
        if readable {
            more_to_read = true;
            for _ in 0..RECV_BATCH {
                match io.recv() {
                    Received::Packet(packet) => {
                        if drain_until.is_some() && is_client_syn(packet, service) {
                            stats.syns_refused_draining += 1;
                            continue;
                        }
                        fe.dispatcher_mut().set_now(now);
                        fe.handle_packet(now, packet);
                    }
                    Received::Dropped => {}
                    Received::Empty => {
                        more_to_read = false;
                        break;
                    }
                }
            }
        }
        if fe.poll_timeout().is_some_and(|at| at <= now) {
            fe.dispatcher_mut().set_now(now);
            fe.handle_timeout(now);
        }
        // A flow that ends leaves the fast path before this round's packets go out: a
        // client reusing its port gets its SYN/ACK in the same round as the old flow's
        // Closed event, and its answer must not meet the old entry in XDP (which would
        // send it to the old back-end). A flow that starts enters the fast path after
        // them, once the back-end has everything the core held for it.
        transmits.extend(std::iter::from_fn(|| fe.poll_transmit()));
        // Retries first: a retry that found no back-end is followed by the reset event.
        for retry in fe.dispatcher_mut().drain_retries() {
            let failed = retry.failed.map_or("-".into(), |b| b.to_string());
            let next = retry.next.map_or("none".into(), |b| b.to_string());
            log::line(
                "handoff_retry",
                &[
                    ("client", &retry.flow.client),
                    ("failed_backend", &failed),
                    ("next_backend", &next),
                ],
            );
        }
        while let Some(event) = fe.poll_event() {
            match event {
                Event::HandedOff(_) => handed_off.push(event),
                other => on_event(fe, fast, now, other, stats),
            }
        }
        for t in transmits.drain(..) {
            io.send(t.destination, &t.packet);
        }
        for event in handed_off.drain(..) {
            on_event(fe, fast, now, event, stats);
        }
        if now >= next_scan {
            next_scan = now + ACTIVITY_SCAN;
            if let Some(path) = fast.path.as_deref_mut() {
                path.scan_activity(fe, now, fast.stats);
            }
        }
    }
}

/// Applies one event: the log, and the fast path's flow table.
fn on_event(
    fe: &mut FrontEnd<RouteDispatcher>,
    fast: &mut Fast<'_>,
    now: Instant,
    event: Event,
    stats: &mut DaemonStats,
) {
    match event {
        Event::HandedOff(HandedOff {
            flow,
            backend,
            candidate,
            ..
        }) => {
            if let Some(path) = fast.path.as_deref_mut() {
                path.install(flow, backend, fast.stats);
            }
            let pending = fe.dispatcher_mut().take_pending(&flow);
            let (request, latency_us) = match &pending {
                Some(p) => {
                    let us = now.saturating_duration_since(p.dispatched_at).as_micros() as u64;
                    stats.handoffs_logged += 1;
                    stats.handoff_latency_us_sum += us;
                    stats.handoff_latency_us_max = stats.handoff_latency_us_max.max(us);
                    (p.request.as_str(), us.to_string())
                }
                None => ("-", "-".into()),
            };
            log::line(
                "handoff",
                &[
                    ("client", &flow.client),
                    ("service", &flow.service),
                    ("request", &request),
                    ("backend", &backend),
                    ("candidate", &candidate),
                    ("latency_us", &latency_us),
                ],
            );
        }
        Event::Reset {
            flow,
            backend,
            reason,
        } => {
            if let Some(path) = fast.path.as_deref_mut() {
                path.remove(&flow, fast.stats);
            }
            stats.resets_logged += 1;
            let pending = fe.dispatcher_mut().take_pending(&flow);
            let backend = backend.map_or("-".into(), |b| b.to_string());
            let request = pending.as_ref().map_or("-", |p| p.request.as_str());
            log::line(
                "reset",
                &[
                    ("client", &flow.client),
                    ("service", &flow.service),
                    ("reason", &format!("{reason:?}")),
                    ("backend", &backend),
                    ("request", &request),
                ],
            );
        }
        Event::Closed { flow, .. } => {
            if let Some(path) = fast.path.as_deref_mut() {
                path.remove(&flow, fast.stats);
            }
            // A clean close is the normal end: counted by the core, not logged per flow.
            fe.dispatcher_mut().take_pending(&flow);
        }
    }
}

/// Whether `packet` opens a new connection to the service: a client SYN without ACK.
fn is_client_syn(packet: &[u8], service: SocketAddrV4) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return false;
    };
    if ip.protocol() != IpProtocol::Tcp || ip.dst_addr() != *service.ip() || ip.is_fragment() {
        return false;
    }
    let Ok(tcp) = TcpSegment::new_checked(ip.payload()) else {
        return false;
    };
    let flags = tcp.flags();
    tcp.dst_port() == service.port()
        && flags.contains(TcpFlags::SYN)
        && !flags.contains(TcpFlags::ACK)
}

/// `CLOCK_MONOTONIC` as the core's [`Instant`].
fn clock() -> Instant {
    // SAFETY: all-zero is a valid timespec, and clock_gettime writes one.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is writable. CLOCK_MONOTONIC cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Instant::from_nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Waits up to `timeout` for `fd` to be readable. A signal ends the wait early (and
/// reads as "not readable"), so the loop sees a stop request at once.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> anyhow::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up: waking a little before a deadline would only spin until it passes.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err).context("poll");
    }
    if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        anyhow::bail!("capture socket failed (poll revents {:#x})", pfd.revents);
    }
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_syns_are_told_apart() {
        let service: SocketAddrV4 = "198.18.2.1:80".parse().unwrap();
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 2, 1]);
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x02; // SYN
        assert!(is_client_syn(&p, service));
        p[33] = 0x12; // SYN+ACK
        assert!(!is_client_syn(&p, service));
        p[33] = 0x02;
        p[22..24].copy_from_slice(&81u16.to_be_bytes());
        assert!(!is_client_syn(&p, service));
        assert!(!is_client_syn(&p[..30], service));
    }

    #[test]
    fn clock_is_monotonic() {
        let a = clock();
        let b = clock();
        assert!(b >= a);
        assert!(a > Instant::ZERO);
    }
}
