//! `baton frontend --config FILE`: the front-end daemon.
//!
//! It runs the protocol core ([`baton_proto::frontend::FrontEnd`]) over real packets:
//! [`io`] captures the service's packets from the interface and sends what the core
//! builds through a raw IPv4 socket, [`config`] reads the TOML file, [`dispatch`] puts
//! the content-aware dispatcher (crate `baton-dispatch`) in the core's hands and keeps
//! its books from the core's events, and [`health`] runs its active health checks on
//! threads of their own. [`fastpath`] is the XDP forwarder: once a flow is
//! handed off, its client segments go to the back-end without leaving the driver. The
//! core still forwards what reaches it of a handed-off flow (packets held during the
//! handoff, RSTs, segments with partial checksums, or everything when the fast path is
//! off or failed to load): correct, only slower. The fast path takes a flow in as soon as
//! the request has gone to the back-end, and forwards client FINs and the client's
//! acknowledgement of the back-end's answer itself, telling the core of them through a
//! ring read before each packet.
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
//! Before each round the loop takes what arrived between rounds: a reload request
//! (SIGHUP, see `Control::reload`) and the health checks' verdicts ([`health`]), so
//! that either applies to every request of the round. The dispatcher hears of handoffs
//! in the events' order (before the transmits), so a flow handed off and reset in one
//! round is counted in and out.
//!
//! Operators see the loop through two outlets that never make it wait: metrics scrapes,
//! answered between rounds with a copy of its numbers ([`metrics`]), and the access log,
//! whose lines for a round go out in one `write` with the round's log lines
//! ([`access_log`]).
//!
//! # Stopping
//!
//! SIGTERM or SIGINT starts the drain: new connections are refused (their SYNs dropped
//! and counted, so that a client's retransmitted SYN finds a restarted front-end rather
//! than a reset), existing ones go on, and the daemon exits after the drain period or as
//! soon as no connection needs it, and prints its counters. With the fast path, that is
//! as soon as every connection is handed off (the next daemon adopts those); without,
//! as soon as none is tracked. It leaves two things in
//! place: the fast path's pins (program, link and flow table, see [`fastpath`]), with
//! each flow's close state written into its entry, and the nftables table `inet
//! baton_fe` ([`io::HostTcpFilter`]). Handed-off connections therefore go on while no
//! daemon runs: XDP forwards their ACKs, payload and FINs (the notices of FINs wait in
//! the pinned ring for the next daemon's core), and what XDP passes up (RSTs, say) is
//! dropped by the table rather than reset by the host's TCP; the client retransmits it,
//! and the next daemon forwards it.
//!
//! # Restarting
//!
//! A daemon that finds the pins (of a stopped, or killed, predecessor) reattaches:
//! loads its program against the pinned maps, replaces the program in the pinned link
//! atomically, rewrites the configuration, replaces the nftables table atomically, and
//! has the protocol core adopt every flow in the table ([`FrontEnd::adopt`]): their
//! slow-path packets are forwarded, their closes tracked and their entries removed when
//! they end, IPv4's and IPv6's alike. It logs `fastpath` with `state=attached` or
//! `state=reattached` and the flows found (`flows`, of them `flows_ipv6` in the IPv6
//! table) and adopted. Connections that were not handed off yet (handshake,
//! request, handoff under way) are lost in a restart; the drain is there to let them
//! finish first. `baton frontend --config FILE --detach` removes the pins (detaching the
//! program) and the nftables table, for good: run it with no daemon running.
//!
//! # One at a time
//!
//! Before it touches anything the daemon (and `--detach`) takes the locks of
//! [`crate::daemon_lock`] for its network namespace and its pins, held to its exit: a
//! second daemon that would rewrite the same link, maps or nftables table under it
//! refuses to start, naming it. A killed daemon's locks go with it, so its successor
//! starts and reattaches as above.

pub mod access_log;
pub mod announce;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod fastpath;
pub mod health;
pub mod io;
pub mod kernel_dispatch;
pub mod metrics;

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use baton_common::kernel_dispatch::{HANDOFF_READ_INTERVAL_MS, KernelHandoffConfig};
use baton_common::syncookie::SynCookieConfig;
use baton_proto::{
    frontend::{Event, FrontEnd, HandedOff, Instant, Output},
    wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpFlags, TcpSegment},
};

use crate::log;
use dispatch::{ContentDispatch, Note};
use fastpath::{FastPath, FastPathStats};
use io::{HostTcpFilter, PacketIo, Received};

/// Frames read per round before the outputs are applied. Bounded so that the core's
/// output queue (`max_pending_outputs`, 8192 by default) cannot overflow in one round:
/// one client packet causes at most a few outputs (a transmit or two and an event), plus
/// at a completed handoff the held packets (`max_queued_packets`, 32 by default):
/// 64 × 40 < 8192.
pub const RECV_BATCH: usize = 64;

/// The longest `poll` sleeps: a signal that lands between the stop check and `poll`
/// waits at most this long to be noticed.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// How often the fast path's last-seen stamps are read and fed to the core's idle
/// timers: far below any sensible idle timeout, and a map lookup per installed flow.
const ACTIVITY_SCAN: Duration = Duration::from_secs(1);

/// How long `--take-over` waits for the running daemon beyond this configuration's
/// drain: the running daemon may drain longer (its own configuration), and its exit
/// writes the close state of every flow for this one to resume.
const TAKE_OVER_MARGIN: Duration = Duration::from_secs(10);

/// How long a daemon taking over waits for its metrics address, which its predecessor
/// closes only as its process exits, just after it has released the locks.
const TAKE_OVER_PORT_WAIT: Duration = Duration::from_secs(2);

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

/// What the fast path needs to hand requests off itself (docs/design.md, "Dispatch in
/// the kernel"): on when the core hands off in one turn and XDP answers every SYN (the
/// kernel's handoff starts from its cookie and sends the request in the SYN'); the rules
/// the kernel can evaluate decide which requests it takes.
fn kernel_handoff_config(
    core: &baton_proto::frontend::Config,
    kernel_dispatch: bool,
) -> KernelHandoffConfig {
    KernelHandoffConfig::new(
        core.handoff_key,
        core.mss,
        kernel_dispatch && core.one_turn && core.every_syn_in_fast_path,
    )
}

/// The kernel dispatch's rules from the dispatcher in force (start, reload, health),
/// with its LARD sets; `reloaded`: a new dispatcher, written even if its rules compile
/// alike (`FastPath::write_kernel_rules`).
fn write_kernel_rules(
    fast: &mut FastPath,
    fe: &mut FrontEnd<ContentDispatch>,
    reloaded: bool,
    stats: &mut FastPathStats,
) {
    let limits = fe.config().request_limits();
    let dispatcher = fe.dispatcher_mut().dispatcher();
    let program = dispatcher.compile_kernel(limits.max_head_len, limits.max_headers);
    if let Err(e) = fast.write_kernel_rules(clock(), dispatcher, &program, reloaded, stats) {
        log::warn(
            "kernel_dispatch_unavailable",
            &[("error", &format!("{e:#}"))],
        );
    }
}

/// The stamp tables (docs/design.md, "Stateless forwarding by the stamp") from the
/// dispatcher's back-ends in force: at start and at every activity scan, so that a
/// reload or a newly resolved MAC reaches them within a second.
fn write_stamps(fast: &mut FastPath, fe: &mut FrontEnd<ContentDispatch>) {
    let key = fe.config().handoff_key;
    // The stamp tables are IPv4's (`baton_common::stamp`).
    let backends: Vec<SocketAddrV4> = fe
        .dispatcher_mut()
        .dispatcher()
        .backends()
        .filter_map(|b| match b {
            SocketAddr::V4(b) => Some(b),
            SocketAddr::V6(_) => None,
        })
        .collect();
    if let Err(e) = fast.write_stamps(clock(), key, &backends) {
        log::warn("stamps_unavailable", &[("error", &format!("{e:#}"))]);
    }
}

/// Runs the daemon until a stop signal and the drain that follows.
pub fn run(config_path: &Path, detach: bool, take_over: bool) -> anyhow::Result<()> {
    let settings = config::load(config_path)?;
    if detach {
        // Held to the end of `--detach`, which must not pull the pins from under a
        // running daemon.
        let _lock = lock(config_path, &settings.interface, &settings.pin_dir, None)?;
        return detach_all(&settings.interface, &settings.pin_dir);
    }
    // The fast path's program loaded and verified before anything shared is touched:
    // seconds in the verifier, during which a daemon being taken over still serves, and
    // no packet waits in a socket opened too early. A plain start takes the locks first,
    // so that a refusal is immediate.
    let prepare = |settings: &config::Settings| {
        settings.fast_path.then(|| {
            FastPath::prepare(
                &settings.interface,
                &settings.pin_dir,
                settings.half_open_entries,
            )
        })
    };
    let (_lock, prepared) = if take_over {
        let prepared = prepare(&settings);
        // A running daemon is not replaced by one that could not load its program: a
        // plain start runs on without the fast path (slower, correct), but an upgrade
        // that would make things worse stops here, the running daemon untouched.
        if let Some(Err(e)) = &prepared {
            anyhow::bail!(
                "not taking over: the fast path's program did not load, and the running daemon keeps serving: {e:#}"
            );
        }
        let within = settings.drain + TAKE_OVER_MARGIN;
        let lock = lock(
            config_path,
            &settings.interface,
            &settings.pin_dir,
            Some(within),
        )?;
        (lock, prepared)
    } else {
        let lock = lock(config_path, &settings.interface, &settings.pin_dir, None)?;
        (lock, prepare(&settings))
    };
    let config::Settings {
        interface,
        services,
        services6,
        drain,
        secret_generated,
        mut proto,
        dispatcher,
        restart_only,
        fast_path,
        pin_dir,
        metrics: metrics_addr,
        access_log,
        half_open_entries: _,
        kernel_dispatch,
        configured_mss,
        ignored_keys,
        announce,
    } = settings;
    // Every service the core serves, IPv4 ones first: the drain's test of new
    // connections, the logs' and the metrics' label.
    let all_services = proto.services.clone();
    // The MSS from the interface's MTU, read in this network namespace: what clients may
    // send in one frame, here and on to the back-ends on the same LAN.
    let mtu = fastpath::interface_mtu(&interface)?;
    let mss = config::mss_within_mtu(mtu, configured_mss).context("tcp.mss")?;
    if let Some(configured) = mss.lowered_from {
        log::warn(
            "mss_lowered",
            &[
                ("configured", &configured),
                ("interface", &interface),
                ("mtu", &mtu),
                ("mss", &mss.mss),
                (
                    "reason",
                    &"a client sending segments of the configured size would send frames the interface drops",
                ),
            ],
        );
    }
    proto.mss = mss.mss;
    for key in ignored_keys {
        log::warn(
            "config_key_ignored",
            &[
                ("key", &key),
                (
                    "reason",
                    &"the close is tracked from the client's side and back-ends copy no FIN: a handed-off flow whose client went away without a FIN or RST is freed by limits.idle_timeout_ms",
                ),
            ],
        );
    }
    // A secret left by the previous daemon on this interface beats a new random one: the
    // handshakes XDP answered across the swap carry cookies made with it.
    let secret_source = if !secret_generated {
        "configured"
    } else if let Some(pinned) = fast_path
        .then(|| fastpath::pinned_secret(&pin_dir, &interface))
        .flatten()
    {
        proto.secret = pinned;
        "pinned"
    } else {
        "generated"
    };
    let secret = proto.secret;
    let routes = config::Summary(&dispatcher).to_string();
    let max_connections = proto.max_connections;
    let body = dispatcher.unavailable_body().as_bytes().to_vec();
    let mut dispatcher = ContentDispatch::new(dispatcher);
    dispatcher.set_max_pending(proto.max_connections);
    let mut fe = FrontEnd::new(proto, dispatcher).context("protocol core configuration")?;
    fe.set_unavailable_body(&body)
        .context("dispatch.unavailable_body")?;
    let mut control = Control {
        config_path: config_path.to_path_buf(),
        reload: crate::signals::reload_flag()?,
        health: health::HealthChecks::start(fe.dispatcher_mut().dispatcher())?,
        restart_only,
    };

    // Before anything is installed, so that a taken port or an unwritable file fails
    // the start with nothing to undo.
    let access_log_file = access_log
        .as_deref()
        .map(access_log::AccessLog::open)
        .transpose()?;
    // Taking over, the predecessor's listener may hold the address for the moment it
    // takes to exit after releasing its locks.
    let patience = if take_over {
        TAKE_OVER_PORT_WAIT
    } else {
        Duration::ZERO
    };
    let metrics_server = metrics_addr
        .map(|addr| metrics::start(addr, patience))
        .transpose()?;

    // Filter first: from here on the host's TCP never answers VIP:port; a SYN that
    // arrives before the capture socket is open is dropped and retransmitted by the
    // client, rather than reset by the host.
    HostTcpFilter::install(&services, &services6)?;
    let mut io = PacketIo::open(&interface, &services, &services6)?;
    if !services6.is_empty() {
        // The capture, the nftables table, the core and the XDP program's IPv6 path
        // take them.
        let list: Vec<String> = services6.iter().map(ToString::to_string).collect();
        log::line("ipv6_services", &[("services", &list.join(","))]);
    }
    let mut fp_stats = FastPathStats::default();
    let mut fast = if fast_path {
        // Engaged from the attach on when XDP answers every SYN: adopting a previous
        // daemon's flows takes seconds with many, and SYNs left to the slow path
        // meanwhile would wait for the loop (`programs_replaced_under_load_...`).
        let mut syn_cookies = fe.syn_cookie_config();
        if fe.wants_syn_cookies(false) {
            syn_cookies.flags |= SynCookieConfig::ENGAGED;
        }
        match prepared
            .expect("prepared when fast_path is on")
            .and_then(|mut prepared| {
                // The IPv6 services the program's IPv6 path forwards for: written
                // before the attach, so that it serves them from the first frame.
                prepared.write_services_v6(&services6)?;
                FastPath::start(
                    prepared,
                    &interface,
                    &services,
                    syn_cookies,
                    secret,
                    kernel_handoff_config(fe.config(), kernel_dispatch),
                )
            }) {
            Ok((mut fast, start)) => {
                // Before the first packet: the flows a previous daemon handed off are
                // this one's to track from now on.
                let adoption = fast.adopt_pinned(&mut fe, clock(), &mut fp_stats);
                write_stamps(&mut fast, &mut fe);
                if kernel_dispatch {
                    write_kernel_rules(&mut fast, &mut fe, false, &mut fp_stats);
                }
                // Before the first packet too: with every SYN in the fast path the
                // program answers from the first one on, not from the loop's first round
                // (engaged at the attach already: told as an engagement is).
                if fast.syn_cookies_engaged() {
                    fp_stats.syn_cookies_engaged += 1;
                    log::line(
                        "syn_cookies",
                        &[
                            ("state", &"engaged"),
                            ("half_open", &fe.stats().half_open),
                            ("connections", &fe.connection_count()),
                        ],
                    );
                }
                fast.steer_syn_cookies(&fe, &mut fp_stats);
                log::line(
                    "fastpath",
                    &[
                        ("state", &start),
                        ("interface", &interface),
                        (
                            "pins",
                            &crate::pins::Pins::frontend(&pin_dir, &interface)
                                .dir()
                                .display(),
                        ),
                        ("flows", &adoption.found),
                        ("flows_ipv6", &adoption.found_ipv6),
                        ("adopted", &adoption.adopted),
                        ("refused", &adoption.refused),
                    ],
                );
                Some(fast)
            }
            Err(e) => {
                // Loud, counted, not fatal: the slow path forwards correctly on its own.
                fp_stats.load_failed = 1;
                log::warn(
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
        let pins = crate::pins::Pins::frontend(&pin_dir, &interface);
        if pins.dir().exists() {
            log::warn(
                "fastpath_pins_ignored",
                &[
                    ("pins", &pins.dir().display()),
                    (
                        "effect",
                        &"fast_path = false: a previous daemon's program stays attached and its flows are not adopted; `--detach` removes them",
                    ),
                ],
            );
        }
        None
    };
    let stop = crate::signals::stop_flag()?;
    let metrics_bound = metrics_server
        .as_ref()
        .map_or("off".into(), |(_, bound)| bound.to_string());
    let mut ops = Ops {
        book: metrics::Book::default(),
        requests: metrics_server.map(|(requests, _)| requests),
        access_log: access_log_file,
        interface: interface.clone(),
        fast_path: match (&fast, fast_path) {
            (Some(_), _) => "xdp",
            (None, true) => "unavailable",
            (None, false) => "off",
        },
        max_connections,
        announce: announce.map(|a| announce::Announcer::new(a, services.iter().map(|s| *s.ip()))),
    };
    log::line(
        "ready",
        &[
            ("interface", &interface),
            ("service", &services_label(&all_services)),
            ("dispatch", &routes),
            ("max_connections", &max_connections),
            ("mss", &mss.mss),
            ("drain_ms", &drain.as_millis()),
            ("secret", &secret_source),
            ("nft_table", &format!("inet {}", io::NFT_TABLE)),
            ("fast_path", &ops.fast_path),
            ("metrics", &metrics_bound),
            (
                "access_log",
                &access_log
                    .as_deref()
                    .map_or("off".into(), |p| p.display().to_string()),
            ),
            (
                "announce",
                &ops.announce
                    .as_ref()
                    .map_or("off", announce::Announcer::interface),
            ),
        ],
    );

    let mut stats = DaemonStats::default();
    let mut fast_path = Fast {
        path: fast.as_mut(),
        stats: &mut fp_stats,
        kernel_dispatch,
    };
    let result = event_loop(
        &mut fe,
        &mut io,
        &mut fast_path,
        &all_services,
        drain,
        stop,
        &mut stats,
        &mut control,
        &mut ops,
    );
    // Withdrawn at the drain already; this is for a loop that ended in an error.
    if let Some(a) = &mut ops.announce {
        a.withdraw("exit");
    }
    // Whatever the last round left.
    drop(ops);

    // The close states as they stand, for the next daemon to resume from. SYNs answered
    // in XDP stay so across a swap (the next daemon takes over the pinned secret, and
    // a client's request that finds no daemon is resent to it): left to the slow path,
    // they would wait for the next daemon's programs to load and verify, seconds of it,
    // and a client's SYN would go unanswered past its first retransmission
    // (`programs_replaced_under_load_without_errors`). Cookies engaged only for a flood
    // are released: the next daemon judges its own table.
    if let Some(fast) = &mut fast {
        fast.flush_removals(&mut fp_stats);
        fast.record_close_states(&fe, &mut fp_stats);
        if !(fe.config().syn_cookies && fe.config().every_syn_in_fast_path) {
            fast.set_syn_cookies(false);
        }
    }
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
    // The pins and the nftables table stay (module docs, "Stopping").
    let pins = crate::pins::Pins::frontend(&pin_dir, &interface);
    log::line(
        "exit",
        &[
            ("connections_left", &fe.connection_count()),
            (
                "left_in_place",
                &format!(
                    "{}nftables table inet {}",
                    if fast.is_some() {
                        format!("pins {}, ", pins.dir().display())
                    } else {
                        String::new()
                    },
                    io::NFT_TABLE
                ),
            ),
            (
                "remove_with",
                &format!("baton frontend --config {} --detach", config_path.display()),
            ),
        ],
    );
    result
}

/// Takes the front-end's locks ([`crate::daemon_lock`]): this network namespace's (its
/// nftables table `inet baton_fe` has one fixed name, and the interface's XDP program is
/// one), and the fast path's pins'. A second daemon that would touch either refuses to
/// start, naming the running one.
/// With `take_over` (`--take-over`), a running daemon that holds them is sent SIGTERM
/// and waited for, at most that long.
fn lock(
    config_path: &Path,
    interface: &str,
    pin_dir: &Path,
    take_over: Option<Duration>,
) -> anyhow::Result<crate::daemon_lock::DaemonLock> {
    use crate::daemon_lock::{Claim, DaemonLock, Holder};
    let claims = [
        Claim::network_namespace(
            "frontend",
            format!(
                "the nftables table inet {} and the front-end's XDP program",
                io::NFT_TABLE
            ),
        )?,
        Claim::pins(crate::pins::Pins::frontend(pin_dir, interface).dir())?,
    ];
    let holder = Holder {
        role: "frontend",
        config: config_path.to_path_buf(),
        interface: interface.to_string(),
    };
    let Some(within) = take_over else {
        return DaemonLock::acquire(&claims, &holder);
    };
    let (lock, taken) = DaemonLock::take_over(&claims, &holder, within)?;
    match taken {
        Some(taken) => log::line(
            "took_over",
            &[
                ("pid", &taken.pid),
                ("waited_ms", &taken.waited.as_millis()),
            ],
        ),
        None => log::line("took_over", &[("pid", &"none"), ("waited_ms", &0)]),
    }
    Ok(lock)
}

/// `--detach`: removes the fast path's pins (detaching the program first, so that no
/// flow is forwarded behind the host's back) and then the nftables table, and says what
/// it removed.
fn detach_all(interface: &str, pin_dir: &Path) -> anyhow::Result<()> {
    let pins = crate::pins::Pins::frontend(pin_dir, interface);
    match FastPath::detach(pin_dir, interface)? {
        Some(flows) => log::line(
            "detached",
            &[
                ("interface", &interface),
                ("removed", &pins.dir().display()),
                ("what", &"XDP program, link and maps"),
                ("flows", &flows),
            ],
        ),
        None => log::line(
            "nothing_attached",
            &[("interface", &interface), ("pins", &pins.dir().display())],
        ),
    }
    let table = format!("inet {}", io::NFT_TABLE);
    if HostTcpFilter::remove()? {
        log::line("nftables_removed", &[("table", &table)]);
    } else {
        log::line("nftables_absent", &[("table", &table)]);
    }
    Ok(())
}

/// What the loop keeps and writes for operators: the metrics' own counts, the scrapes
/// waiting for an answer, the access log.
struct Ops {
    book: metrics::Book,
    requests: Option<metrics::Requests>,
    access_log: Option<access_log::AccessLog>,
    interface: String,
    fast_path: &'static str,
    max_connections: usize,
    /// `[announce]`: the VIPs announced while this daemon can serve.
    announce: Option<announce::Announcer>,
}

impl Ops {
    /// Announces or withdraws the VIPs as the daemon's state says ([`announce`]).
    fn update_announcement(&mut self, fe: &mut FrontEnd<ContentDispatch>, draining: bool) {
        let Some(announcer) = &mut self.announce else {
            return;
        };
        let d = fe.dispatcher_mut().dispatcher();
        let backends_up = d
            .backends()
            .filter(|&b| d.backend_status(b).is_some_and(|s| s.available))
            .count();
        announcer.update(announce::Ability {
            draining,
            fast_path_ok: self.fast_path != "unavailable",
            backends_up,
        });
    }

    /// Answers the scrapes waiting, if any (between rounds; see [`metrics`]).
    fn answer(
        &self,
        fe: &mut FrontEnd<ContentDispatch>,
        io: &mut PacketIo,
        fast: &Fast<'_>,
        services: &[SocketAddr],
        stats: &DaemonStats,
    ) {
        let Some(requests) = &self.requests else {
            return;
        };
        requests.answer(|| {
            let core = fe.stats().clone();
            let answered = fe.answered_count() as u64;
            let d = fe.dispatcher_mut().dispatcher();
            let (rules, backends, members) = metrics::Snapshot::dispatch_parts(d, &self.book);
            metrics::Snapshot {
                service: services_label(services),
                interface: self.interface.clone(),
                fast_path: self.fast_path,
                core,
                answered,
                max_connections: self.max_connections,
                io: io.stats().clone(),
                daemon: metrics::pairs(stats),
                fast_path_book: metrics::pairs(&*fast.stats),
                xdp: fast
                    .path
                    .as_deref()
                    .map(FastPath::counters)
                    .unwrap_or_default(),
                kernel_slow_path: fast
                    .path
                    .as_deref()
                    .map(FastPath::slow_path_reasons)
                    .unwrap_or_default(),
                flow_table: fast.path.as_deref().map(FastPath::flow_table),
                rules,
                default_hits: d.default_hits(),
                unavailable: d.unavailable_count(),
                backends,
                members,
                latency: self.book.latency.clone(),
                retries: self.book.retries,
                access_log: self.access_log.as_ref().map(|a| (a.lines, a.errors)),
                announce: self.announce.as_ref().map(|a| metrics::Announcement {
                    interface: a.interface().to_string(),
                    announced: a.announced(),
                    reason: a.reason(),
                }),
            }
        });
    }
}

/// The fast path if attached, and its bookkeeping either way.
struct Fast<'a> {
    path: Option<&'a mut FastPath>,
    stats: &'a mut FastPathStats,
    /// `[tcp] kernel_dispatch`: the kernel's rules are kept up to date.
    kernel_dispatch: bool,
}

/// What the loop needs to reload its configuration and to hear from the health checks.
struct Control {
    config_path: PathBuf,
    /// Set by SIGHUP.
    reload: &'static AtomicBool,
    health: health::HealthChecks,
    /// The running settings a reload cannot change.
    restart_only: config::RestartOnly,
}

impl Control {
    /// A reload (SIGHUP): the file is read and checked again; if it is valid, its
    /// `[dispatch]` replaces the dispatcher for new connections (connections already
    /// handed off are untouched, and the back-ends' connection counts and health carry
    /// over), its 503 body applies to responses from now on, and its health checks
    /// replace the running ones. Anything else that changed is reported as needing a
    /// restart and keeps its running value. An invalid file changes nothing and the log
    /// says why.
    ///
    /// Returns what the `reloaded` line says, for the caller to log once the reload is
    /// in force everywhere (the kernel's rules written): a client that sends a request
    /// on seeing the line must meet the new rules whichever path decides it.
    fn reload(&mut self, fe: &mut FrontEnd<ContentDispatch>) -> Option<Reloaded> {
        let path = self.config_path.display();
        let settings = match config::load(&self.config_path) {
            Ok(s) => s,
            Err(e) => {
                log::warn(
                    "reload_failed",
                    &[
                        ("config", &path),
                        ("error", &format!("{e:#}")),
                        ("effect", &"the configuration in force stays"),
                    ],
                );
                return None;
            }
        };
        let restart = self.restart_only.changes(&settings.restart_only);
        let summary = config::Summary(&settings.dispatcher).to_string();
        // Checked by `config::load` against the same bound.
        if let Err(e) = fe.set_unavailable_body(settings.dispatcher.unavailable_body().as_bytes()) {
            log::warn(
                "reload_failed",
                &[("config", &path), ("error", &format!("{e}"))],
            );
            return None;
        }
        fe.dispatcher_mut().replace(settings.dispatcher);
        match health::HealthChecks::start(fe.dispatcher_mut().dispatcher()) {
            Ok(checks) => std::mem::replace(&mut self.health, checks).retire(),
            // The old checks go on; they report by back-end address.
            Err(e) => log::error("health_checks_failed", &[("error", &format!("{e:#}"))]),
        }
        Some(Reloaded {
            config: path.to_string(),
            summary,
            health_checks: self.health.len(),
            restart,
        })
    }
}

/// A reload in force, to be logged ([`Control::reload`]).
struct Reloaded {
    config: String,
    summary: String,
    health_checks: usize,
    restart: Vec<String>,
}

impl Reloaded {
    fn log(&self) {
        log::line(
            "reloaded",
            &[
                ("config", &self.config),
                ("dispatch", &self.summary),
                ("health_checks", &self.health_checks),
            ],
        );
        if !self.restart.is_empty() {
            log::warn(
                "reload_needs_restart",
                &[
                    ("fields", &self.restart.join(",")),
                    ("effect", &"these keep their running values until a restart"),
                ],
            );
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the loop's whole state, passed rather than bundled"
)]
fn event_loop(
    fe: &mut FrontEnd<ContentDispatch>,
    io: &mut PacketIo,
    fast: &mut Fast<'_>,
    services: &[SocketAddr],
    drain: Duration,
    stop: &AtomicBool,
    stats: &mut DaemonStats,
    control: &mut Control,
    ops: &mut Ops,
) -> anyhow::Result<()> {
    let mut drain_until: Option<Instant> = None;
    // The announcement is decided in the first round, then again on each health
    // verdict, reload and activity scan (a failed announcement is retried there).
    let mut check_announcement = true;
    let mut more_to_read = false;
    let mut next_scan = clock() + ACTIVITY_SCAN;
    // The round's log lines go out together at its end (see `log`); dropped on return,
    // which flushes what is left.
    let _log = log::Buffered::start();
    loop {
        log::flush();
        if let Some(a) = &mut ops.access_log {
            a.flush();
        }
        stats.rounds += 1;
        let now = clock();
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(now + drain);
            // First: the routers send new connections elsewhere while this daemon
            // finishes its own.
            ops.update_announcement(fe, true);
            log::line(
                "draining",
                &[
                    ("connections", &fe.connection_count()),
                    ("drain_ms", &drain.as_millis()),
                ],
            );
        }
        // With the fast path pinned, a handed-off connection outlives the daemon and the
        // next one adopts it: only the unfinished ones (handshake, request, handoff under
        // way) need this daemon, and waiting for the rest would hold back a restart, and
        // every client's retransmitted SYN with it, for the whole drain period.
        let left = if fast.path.is_some() {
            fe.unfinished_count()
        } else {
            fe.connection_count()
        };
        if let Some(until) = drain_until
            && (left == 0 || now >= until)
        {
            return Ok(());
        }
        // Between rounds, so that a reload or a health verdict applies to every request
        // of the next round. Both are cheap when there is nothing to do: an atomic swap
        // and a `try_recv`.
        let mut reload_in_force = None;
        if control.reload.swap(false, Ordering::Relaxed) {
            reload_in_force = control.reload(fe);
            // For log rotation: the file may have been moved away.
            if let Some(a) = &mut ops.access_log {
                a.reopen();
            }
        }
        let reloaded = reload_in_force.is_some();
        let health_changed = control.health.apply(fe.dispatcher_mut().dispatcher_mut());
        // The stamps' back-ends before the announcement: once the routers send this
        // front-end flows it never saw, it must know every back-end their stamps name,
        // and the checks that just found a back-end up have resolved its MAC. (A link
        // back up after a flap had its neighbours flushed: waiting for the next scan
        // would drop the moved flows' segments as of an unknown back-end for up to a
        // second, and their senders' backoff makes that a stall of seconds.)
        if (reloaded || health_changed)
            && let Some(path) = fast.path.as_deref_mut()
        {
            write_stamps(path, fe);
        }
        if check_announcement || reloaded || health_changed {
            check_announcement = false;
            ops.update_announcement(fe, drain_until.is_some());
        }
        // The kernel's rules follow at once, before the next request: a reload or a
        // health verdict must route new connections the same whichever path decides.
        if (reloaded || health_changed)
            && fast.kernel_dispatch
            && let Some(path) = fast.path.as_deref_mut()
        {
            write_kernel_rules(path, fe, reloaded, fast.stats);
        }
        // Only now: every path decides by the new configuration.
        if let Some(reload) = reload_in_force {
            reload.log();
        }
        ops.answer(fe, io, fast, services, stats);

        let wake = [fe.poll_timeout(), drain_until].into_iter().flatten().min();
        // With kernel dispatch, the handoffs the program made wake the loop only in
        // batches (`HANDOFF_WAKE_BYTES`): the rest wait at most this long.
        let max_sleep = if fast.kernel_dispatch && fast.path.is_some() {
            Duration::from_millis(HANDOFF_READ_INTERVAL_MS)
        } else {
            MAX_SLEEP
        };
        let sleep = if more_to_read {
            Duration::ZERO
        } else {
            wake.map_or(max_sleep, |at| {
                at.saturating_duration_since(now).min(max_sleep)
            })
        };
        let handoffs_fd = fast.path.as_deref().map(FastPath::handoffs_fd);
        let readable = match wait_readable(io.rx_fd(), handoffs_fd, sleep)? {
            Readiness::Readable => true,
            Readiness::Quiet => false,
            Readiness::Failed => {
                if io.take_rx_error().context("the capture socket failed")? {
                    // Frames come again when it is up; the health checks judge the
                    // back-ends meanwhile, and the announcement follows them.
                    log::warn(
                        "interface_down",
                        &[("resumes", &"when the interface is up")],
                    );
                }
                false
            }
        };

        let now = clock();
        // What the fast path did while the loop slept (handoffs it made, client FINs,
        // back-ends' answers), before the timers judge their flows.
        note_fast_path_news(fe, io, fast, now, stats, ops);
        more_to_read = false;
        if readable {
            more_to_read = true;
            for _ in 0..RECV_BATCH {
                match io.recv() {
                    Received::Packet(packet) => {
                        if drain_until.is_some() && is_client_syn(packet, services) {
                            stats.syns_refused_draining += 1;
                            continue;
                        }
                        // And again for each packet, after it was read: a SYN reusing
                        // the port of a flow whose FIN XDP forwarded must meet a core
                        // that knows of the FIN (`FastPath::note_flow_notices`). The
                        // packet stays in `io`'s buffer meanwhile (the news may send).
                        // The program's half-open map is lent to the core for the
                        // packet: a client without timestamps has its SYN's options
                        // there.
                        note_fast_path_news(fe, io, fast, now, stats, ops);
                        let packet = io.last_packet();
                        match fast.path.as_deref_mut() {
                            Some(path) => {
                                let mut syns = path.half_open_syns(fast.stats);
                                fe.handle_packet_with(now, packet, &mut syns);
                                // A LARD set this packet's request changed reaches the
                                // kernel before the next packet is read.
                                path.write_lard_changes(fe.dispatcher_mut().dispatcher_mut());
                            }
                            None => fe.handle_packet(now, packet),
                        }
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
            fe.handle_timeout(now);
        }
        if let Some(path) = fast.path.as_deref_mut() {
            path.steer_syn_cookies(fe, fast.stats);
        }
        apply_outputs(fe, io, fast, now, stats, ops);
        if now >= next_scan {
            next_scan = now + ACTIVITY_SCAN;
            check_announcement = true;
            if let Some(path) = fast.path.as_deref_mut() {
                path.scan_activity(fe, now, fast.stats);
                path.scan_activity_v6(fe, now, fast.stats);
                write_stamps(path, fe);
                // Reloads, health verdicts and newly resolved MACs reach the kernel's
                // rules within a scan (a new generation only when something changed).
                if fast.kernel_dispatch {
                    write_kernel_rules(path, fe, false, fast.stats);
                }
            }
        }
    }
}

/// Tells the core what the fast path did since the last call: the notices of what it
/// forwarded, every one there is, then a batch of the handoffs the program made itself
/// (kernel dispatch), and so on until both rings are read, in batches of
/// [`fastpath::NEWS_BATCH`] with the core's outputs applied after each.
///
/// Bounded: at most a full ring's worth from each ring per call
/// ([`fastpath::NOTICES_IN_A_FULL_RING`], [`fastpath::RECORDS_IN_A_FULL_RING`]). That is
/// every notice and record that was in the rings when the call began, all the ordering
/// needs (what the program wrote before a packet reached the daemon is read before the
/// packet); read "until empty", a program writing faster than the daemon reads (a flood
/// of new connections handed off in the kernel) kept the daemon here for as long as the
/// flood lasted, and the packets of the slow path, its timers and its control socket
/// waited (seen in CI as requests unanswered for 30 s).
///
/// In batches, so that the core's bounded output queue never overflows however much the
/// rings hold. The notices first, because a record takes a slot of the connection table
/// which its flow's notices (the answer, the FIN), already in the other ring, give back
/// at once: the notices of a connection whose record is not read yet are held by its
/// client ISN and applied right after the record (`FastPath::note_flow_notices`). Read
/// the other way round, a daemon lagging behind the rings filled a small table with
/// connections whose clients had long closed, and refused the rest.
fn note_fast_path_news(
    fe: &mut FrontEnd<ContentDispatch>,
    io: &mut PacketIo,
    fast: &mut Fast<'_>,
    now: Instant,
    stats: &mut DaemonStats,
    ops: &mut Ops,
) {
    // The program's latest counts before the daemon decides on the next packet's
    // request, where a pool picks by them (least connections).
    if let Some(path) = fast.path.as_deref_mut()
        && fe.dispatcher_mut().dispatcher().uses_connection_counts()
    {
        path.sync_backend_loads(fe.dispatcher_mut().dispatcher_mut());
    }
    // Per ring; the IPv6 notices are read with the IPv4 ones, so theirs is doubled.
    let mut notices_left = 2 * fastpath::NOTICES_IN_A_FULL_RING;
    let mut records_left = fastpath::RECORDS_IN_A_FULL_RING;
    loop {
        while notices_left > 0 {
            let Some(path) = fast.path.as_deref_mut() else {
                return;
            };
            // Both rings: IPv4's, then IPv6's (each of its own flows; no order
            // between the families matters, a connection being of one).
            let read = path.note_flow_notices(fe, now, fast.stats)
                + path.note_flow_notices_v6(fe, now, fast.stats);
            if read == 0 {
                break;
            }
            notices_left = notices_left.saturating_sub(read);
            apply_outputs(fe, io, fast, now, stats, ops);
        }
        let Some(path) = fast.path.as_deref_mut() else {
            return;
        };
        if records_left == 0 {
            return;
        }
        let read = path.note_kernel_handoffs(fe, now, fast.stats);
        if read == 0 {
            return;
        }
        records_left = records_left.saturating_sub(read);
        apply_outputs(fe, io, fast, now, stats, ops);
    }
}

/// Applies the core's outputs so far, and logs the dispatcher's notes first.
fn apply_outputs(
    fe: &mut FrontEnd<ContentDispatch>,
    io: &mut PacketIo,
    fast: &mut Fast<'_>,
    now: Instant,
    stats: &mut DaemonStats,
    ops: &mut Ops,
) {
    // Retries and 503s the dispatcher noted, logged before the outputs: a retry that
    // found no back-end is followed by the connection's reset.
    for note in fe.dispatcher_mut().drain_notes() {
        if matches!(note, Note::Retry { .. }) {
            ops.book.retries += 1;
        }
        log_note(note);
    }
    // Each output applied in full before the next, in the order the core gives them:
    // that order is the contract between the core and the world (`baton_proto::frontend`,
    // "The order of outputs is the contract"), and nothing here reorders or defers any
    // of them but the deletion of closed flows' entries, gathered into one system call
    // until the next packet leaves or the batch ends (`FastPath::flush_removals`). Never
    // past a packet: the SYN/ACK that answers a SYN on the ports of a connection just
    // ended draws the client's ACK and request within microseconds, and sent before the
    // old entry went, they met it and were forwarded to the old back-end (the client
    // resent its request 200 ms later: a p99 of 200 ms under wrk `Connection: close`).
    while let Some(output) = fe.poll_output() {
        match output {
            Output::Transmit(t) => {
                if let Some(path) = fast.path.as_deref_mut() {
                    path.flush_removals(fast.stats);
                }
                // Of the connection's family: IPv4 through the raw IPv4 socket, IPv6
                // (only with IPv6 services, whose capture alone brings IPv6 to the
                // core) through the raw IPv6 socket; the kernel routes either and
                // resolves the neighbour.
                io.send(t.destination, &t.packet);
            }
            Output::Event(event) => on_event(fe, fast, now, event, stats, ops),
            // Without the fast path no program takes the claims: the core probes only
            // with it (`[tcp] probe_rate`), so nothing is sent here otherwise.
            Output::Probe(packet) => {
                if let Some(path) = fast.path.as_deref_mut() {
                    path.flush_removals(fast.stats);
                    path.send_probes(io, &packet);
                }
            }
        }
    }
    if let Some(path) = fast.path.as_deref_mut() {
        path.flush_removals(fast.stats);
        // The closes and handoffs just booked reach the program's counts, and the LARD
        // sets retries and timeouts changed its copy of them.
        path.sync_backend_loads(fe.dispatcher_mut().dispatcher_mut());
        path.write_lard_changes(fe.dispatcher_mut().dispatcher_mut());
    }
}

/// Applies one of the core's events: the fast path's flow table, and the log with what
/// the dispatcher remembered of the flow (its books were kept from the core's feedback).
fn on_event(
    fe: &mut FrontEnd<ContentDispatch>,
    fast: &mut Fast<'_>,
    now: Instant,
    event: Event,
    stats: &mut DaemonStats,
    ops: &mut Ops,
) {
    match event {
        Event::RequestSent(h) => {
            // Taken in awaiting the answer: XDP forwards nothing of the flow until a
            // client segment acknowledges data only the back-end can have sent. An IPv6
            // flow goes to the program's IPv6 table.
            if let Some(path) = fast.path.as_deref_mut() {
                install_flow(
                    path,
                    now,
                    h.flow,
                    h.backend,
                    h.client_isn,
                    h.client_next,
                    Some(h.isn_f),
                    fast.stats,
                );
            }
        }
        Event::HandedOff(h) => {
            let remembered = fe.dispatcher_mut().take_for_log(&h.flow);
            on_handed_off(fast, now, h, remembered, stats, ops);
        }
        Event::Reset {
            flow,
            backend,
            reason,
        } => {
            if let Some(path) = fast.path.as_deref_mut() {
                remove_flow(path, &flow, fast.stats);
            }
            stats.resets_logged += 1;
            let remembered = fe.dispatcher_mut().forget(&flow);
            let backend = backend.map_or("-".into(), |b| b.to_string());
            let (request, rule, pool) = match &remembered {
                Some(f) if !f.request.is_empty() => (f.request.as_str(), &*f.rule, &*f.pool),
                Some(f) => ("-", &*f.rule, &*f.pool),
                None => ("-", "-", "-"),
            };
            log::line(
                "reset",
                &[
                    ("client", &flow.client),
                    ("service", &flow.service),
                    ("reason", &format!("{reason:?}")),
                    ("backend", &backend),
                    ("request", &request),
                    ("rule", &rule),
                    ("pool", &pool),
                ],
            );
        }
        Event::Closed { flow, .. } => {
            if let Some(path) = fast.path.as_deref_mut() {
                remove_flow(path, &flow, fast.stats);
            }
            // A clean close is the normal end: counted by the core, not logged per flow.
            fe.dispatcher_mut().forget(&flow);
        }
    }
}

/// Takes `flow`'s entry out of the fast path's table of its family.
/// [`FastPath::install`] or [`FastPath::install_v6`], by `flow`'s family.
#[expect(
    clippy::too_many_arguments,
    reason = "the flow's handoff terms, each needed, as FastPath::install's"
)]
fn install_flow(
    path: &mut FastPath,
    now: Instant,
    flow: baton_proto::frontend::FlowKey,
    backend: baton_proto::frontend::Backend,
    client_isn: u32,
    client_next: u32,
    awaiting_answer: Option<u32>,
    stats: &mut FastPathStats,
) {
    if flow.client.is_ipv6() {
        path.install_v6(
            now,
            flow,
            backend,
            client_isn,
            client_next,
            awaiting_answer,
            stats,
        );
    } else {
        path.install(
            now,
            flow,
            backend,
            client_isn,
            client_next,
            awaiting_answer,
            stats,
        );
    }
}

fn remove_flow(
    path: &mut FastPath,
    flow: &baton_proto::frontend::FlowKey,
    stats: &mut FastPathStats,
) {
    if flow.client.is_ipv6() {
        path.remove_v6(flow, stats);
    } else {
        path.remove(flow, stats);
    }
}

/// A confirmed handoff: the fast path's entry, and the log line, with what the
/// dispatcher remembered of the flow.
fn on_handed_off(
    fast: &mut Fast<'_>,
    now: Instant,
    handoff: HandedOff,
    remembered: Option<dispatch::Flow>,
    stats: &mut DaemonStats,
    ops: &mut Ops,
) {
    let HandedOff {
        flow,
        backend,
        candidate,
        client_isn,
        client_next,
        confirmed_by_fast_path,
        ..
    } = handoff;
    *ops.book.handoffs.entry(backend).or_default() += 1;
    if let Some(path) = fast.path.as_deref_mut() {
        if confirmed_by_fast_path && !flow.client.is_ipv6() && path.is_installed(&flow) {
            // The program saw the answer and cleared its entry's wait itself: the entry
            // taken in with the request already forwards, and rewriting it would cost
            // a read and a write (the read to keep the program's `client_next`).
            fast.stats.confirmed_in_place += 1;
        } else {
            // An IPv6 entry, taken in awaiting the answer or not, is always written
            // again without the wait (`FastPathV6::install` keeps the program's later
            // `client_next`).
            install_flow(
                path,
                now,
                flow,
                backend,
                client_isn,
                client_next,
                None,
                fast.stats,
            );
        }
    }
    let (request, rule, pool, latency_us) = match &remembered {
        Some(f) => {
            let us = now.saturating_duration_since(f.dispatched_at).as_micros() as u64;
            stats.handoffs_logged += 1;
            stats.handoff_latency_us_sum += us;
            stats.handoff_latency_us_max = stats.handoff_latency_us_max.max(us);
            ops.book.latency.observe(us as f64 / 1e6);
            (f.request.as_str(), &*f.rule, &*f.pool, us.to_string())
        }
        None => ("-", "-", "-", "-".into()),
    };
    if let Some(a) = &mut ops.access_log {
        a.record(&access_log::Entry {
            time: std::time::SystemTime::now(),
            client: flow.client,
            service: flow.service,
            request,
            host: remembered.as_ref().map_or("", |f| f.host.as_str()),
            rule,
            pool,
            backend,
            candidate,
            latency_us: remembered
                .as_ref()
                .map(|f| now.saturating_duration_since(f.dispatched_at).as_micros() as u64),
        });
    }
    log::line(
        "handoff",
        &[
            ("client", &flow.client),
            ("service", &flow.service),
            ("request", &request),
            ("rule", &rule),
            ("pool", &pool),
            ("backend", &backend),
            ("candidate", &candidate),
            ("latency_us", &latency_us),
        ],
    );
}

/// Logs a retry or a 503 the dispatcher noted.
fn log_note(note: Note) {
    match note {
        Note::Retry {
            flow,
            failed,
            next,
            rule,
            pool,
        } => {
            let failed = failed.map_or("-".into(), |b| b.to_string());
            let next = next.map_or("none".into(), |b| b.to_string());
            log::warn(
                "handoff_retry",
                &[
                    ("client", &flow.client),
                    ("failed_backend", &failed),
                    ("next_backend", &next),
                    ("rule", &rule),
                    ("pool", &pool),
                ],
            );
        }
        Note::Unavailable {
            flow,
            request,
            rule,
            pool,
        } => log::warn(
            "unavailable",
            &[
                ("client", &flow.client),
                ("request", &request),
                ("rule", &rule),
                ("pool", &pool),
                (
                    "effect",
                    &"503 (HTTP) or reset (TLS): no back-end of the pool is up",
                ),
            ],
        ),
    }
}

/// Whether `packet` opens a new connection to one of the services: a client SYN
/// without ACK, over either family (an IPv6 one's TCP header found past any extension
/// headers, as the core finds it).
fn is_client_syn(packet: &[u8], services: &[SocketAddr]) -> bool {
    let (dst, segment): (IpAddr, &[u8]) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else {
                return false;
            };
            if ip.protocol() != IpProtocol::Tcp || ip.is_fragment() {
                return false;
            }
            let Some(segment) = packet.get(ip.header_len()..ip.total_len()) else {
                return false;
            };
            (ip.dst_addr().into(), segment)
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(packet) else {
                return false;
            };
            let Ok((IpProtocol::Tcp, start)) = ip.upper_layer() else {
                return false;
            };
            let end = 40 + ip.payload_len();
            let Some(segment) = packet.get(start..end) else {
                return false;
            };
            (ip.dst_addr().into(), segment)
        }
        _ => return false,
    };
    let Ok(tcp) = TcpSegment::new_checked(segment) else {
        return false;
    };
    let flags = tcp.flags();
    services.contains(&SocketAddr::new(dst, tcp.dst_port()))
        && flags.contains(TcpFlags::SYN)
        && !flags.contains(TcpFlags::ACK)
}

/// The services as one label for logs and metrics: `VIP:PORT` (`[VIP6]:PORT` for IPv6
/// ones), comma-separated.
pub fn services_label<S: std::fmt::Display>(services: &[S]) -> String {
    let mut label = String::new();
    for (i, service) in services.iter().enumerate() {
        if i > 0 {
            label.push(',');
        }
        label.push_str(&service.to_string());
    }
    label
}

/// `CLOCK_MONOTONIC` as the core's [`Instant`].
fn clock() -> Instant {
    // SAFETY: all-zero is a valid timespec, and clock_gettime writes one.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is writable. CLOCK_MONOTONIC cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Instant::from_nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// What [`wait_readable`] found on the packet socket.
enum Readiness {
    Readable,
    /// Nothing to read: the time ran out, a signal came, or only the handoffs' ring woke.
    Quiet,
    /// An error is pending on it (`POLLERR`): [`PacketIo::take_rx_error`] says which.
    Failed,
}

/// Waits up to `timeout` for `fd` to be readable. A signal ends the wait early (and
/// reads as "not readable"), so the loop sees a stop request at once.
fn wait_readable(
    fd: std::os::fd::RawFd,
    handoffs: Option<std::os::fd::RawFd>,
    timeout: Duration,
) -> anyhow::Result<Readiness> {
    let mut pfds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        // The fast path's ring of the handoffs it made: it wakes the loop, which reads
        // it every round anyway; only the packet socket's readiness is returned. A
        // negative descriptor is ignored by poll.
        libc::pollfd {
            fd: handoffs.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Round up: waking a little before a deadline would only spin until it passes.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfds` are two valid pollfds.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
    let pfd = pfds[0];
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(Readiness::Quiet);
        }
        return Err(err).context("poll");
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        anyhow::bail!("capture socket failed (poll revents {:#x})", pfd.revents);
    }
    Ok(if pfd.revents & libc::POLLERR != 0 {
        Readiness::Failed
    } else if n > 0 && pfd.revents & libc::POLLIN != 0 {
        Readiness::Readable
    } else {
        Readiness::Quiet
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_syns_are_told_apart() {
        let service: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 2, 1]);
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x02; // SYN
        assert!(is_client_syn(&p, &[service]));
        p[33] = 0x12; // SYN+ACK
        assert!(!is_client_syn(&p, &[service]));
        p[33] = 0x02;
        p[22..24].copy_from_slice(&81u16.to_be_bytes());
        assert!(!is_client_syn(&p, &[service]));
        assert!(!is_client_syn(&p[..30], &[service]));
    }

    #[test]
    fn client_syns_over_ipv6_are_told_apart() {
        let service: SocketAddr = "[2001:2:0:2::1]:80".parse().unwrap();
        let services = [service, "198.18.2.1:80".parse().unwrap()];
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&"2001:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(
            &"2001:2:0:2::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p[42..44].copy_from_slice(&80u16.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = 0x02; // SYN
        assert!(is_client_syn(&p, &services));
        assert!(!is_client_syn(&p, &services[1..]), "an IPv4 service only");
        p[53] = 0x12; // SYN+ACK
        assert!(!is_client_syn(&p, &services));
        p[53] = 0x02;
        p[42..44].copy_from_slice(&81u16.to_be_bytes());
        assert!(!is_client_syn(&p, &services));
        assert!(!is_client_syn(&p[..50], &services));
    }

    #[test]
    fn clock_is_monotonic() {
        let a = clock();
        let b = clock();
        assert!(b >= a);
        assert!(a > Instant::ZERO);
    }
}
