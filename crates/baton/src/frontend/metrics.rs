//! The front-end's metrics: what the event loop keeps for them ([`Book`]), the copy it
//! hands over ([`Snapshot`]) and the page made of it ([`Snapshot::render`]).
//!
//! # Who does what, and why at scrape time
//!
//! The loop owns every number (core, I/O, dispatcher, fast path) and must never lock
//! or block for a reader. The metrics thread ([`crate::metrics::serve`]) therefore asks
//! for a snapshot when scraped: it sends a one-shot reply channel over an mpsc channel,
//! and the loop, between two rounds, answers every request waiting with a copy of its
//! numbers (a `try_recv` per round when nobody asks, a few hundred bytes of copying
//! when someone does). The thread renders the text, off the loop. Compared with
//! publishing a snapshot every second, nothing is copied when nobody scrapes, and a
//! scrape sees the numbers as they are (within the loop's longest sleep, 250 ms) rather
//! than up to a second old, which `baton status` and tests rely on. A loop that has
//! stopped answers nothing: the scrape gets a 503 after [`ANSWER_TIMEOUT`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::mpsc::{self, Receiver, Sender, SyncSender},
    time::Duration,
};

use baton_dispatch::Dispatcher;
use baton_proto::frontend::{Backend, Stats};

use super::{io::IoStats, log::Counters};
use crate::metrics::{Exposition, Histogram, Kind};

/// Upper bounds of the handoff-latency buckets, in seconds: from the request's decision
/// to the back-end's confirmation, 100 µs (same host) to 2.5 s (retransmissions).
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Longest a scrape waits for the loop's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the loop counts for metrics alone (the rest it has anyway).
#[derive(Debug)]
pub struct Book {
    /// Handoff latencies.
    pub latency: Histogram,
    /// Handoffs completed per back-end since start.
    pub handoffs: HashMap<Backend, u64>,
    /// Retries: a candidate failed and the next was tried (or none was left).
    pub retries: u64,
    /// Access-log lines written and write failures.
    pub access_log_lines: u64,
    pub access_log_errors: u64,
}

impl Default for Book {
    fn default() -> Self {
        Self {
            latency: Histogram::new(&LATENCY_BOUNDS),
            handoffs: HashMap::new(),
            retries: 0,
            access_log_lines: 0,
            access_log_errors: 0,
        }
    }
}

/// One back-end as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct BackendRow {
    pub backend: Backend,
    /// Up by the active checks (or unchecked).
    pub checks_up: bool,
    /// May take a new connection now (checks up and not passively marked down).
    pub available: bool,
    pub active: u32,
    pub handoffs: u64,
}

/// A copy of the loop's numbers, made between rounds.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The services, `VIP:PORT` comma-separated.
    pub service: String,
    pub interface: String,
    pub fast_path: &'static str,
    pub core: Stats,
    /// Connections that ended here, never handed off ([`FrontEnd::answered_count`]).
    ///
    /// [`FrontEnd::answered_count`]: baton_proto::frontend::FrontEnd::answered_count
    pub answered: u64,
    pub max_connections: usize,
    pub io: IoStats,
    /// `DaemonStats` and `FastPathStats` as name/value pairs.
    pub daemon: Vec<(String, String)>,
    pub fast_path_book: Vec<(String, String)>,
    /// XDP outcome counters, by name (empty without the fast path).
    pub xdp: Vec<(&'static str, u64)>,
    /// Requests the XDP program left to the slow path, by reason (empty without the
    /// fast path).
    pub kernel_slow_path: Vec<(&'static str, u64)>,
    /// Flows in the XDP table that this daemon installed or adopted, and its capacity.
    pub flow_table: Option<(usize, u32)>,
    pub rules: Vec<(String, u64)>,
    pub default_hits: u64,
    pub unavailable: u64,
    pub backends: Vec<BackendRow>,
    /// (pool, back-end, weight).
    pub members: Vec<(String, Backend, u32)>,
    pub latency: Histogram,
    pub retries: u64,
    pub access_log: Option<(u64, u64)>,
    /// `[announce]`'s state, when configured.
    pub announce: Option<Announcement>,
}

/// Whether the VIPs are announced now, on which device, and why (not).
#[derive(Debug, Clone)]
pub struct Announcement {
    pub interface: String,
    pub announced: bool,
    /// `serving` while announced, else why not (`draining`, `no_backend_up`, ...).
    pub reason: &'static str,
}

/// The loop's end of the scrape channel.
pub struct Requests(Receiver<SyncSender<Snapshot>>);

impl Requests {
    /// Answers every waiting scrape with `make()`'s snapshot (made once, if asked).
    pub fn answer(&self, make: impl FnOnce() -> Snapshot) {
        let Ok(first) = self.0.try_recv() else {
            return;
        };
        let snapshot = make();
        for reply in std::iter::once(first).chain(self.0.try_iter()) {
            let _ = reply.try_send(snapshot.clone());
        }
    }
}

/// Starts the metrics server on `addr`; the loop answers through the returned
/// [`Requests`].
/// `patience`: how long to wait for the address while a predecessor's listener still
/// holds it ([`crate::metrics::serve_after`]).
pub fn start(addr: SocketAddr, patience: Duration) -> anyhow::Result<(Requests, SocketAddr)> {
    let (tx, rx) = mpsc::channel::<SyncSender<Snapshot>>();
    let tx: Sender<_> = tx;
    let bound = crate::metrics::serve_after(addr, "baton-metrics", patience, move || {
        let (reply, answer) = mpsc::sync_channel(1);
        tx.send(reply)
            .map_err(|_| "the front-end's loop has stopped".to_string())?;
        answer
            .recv_timeout(ANSWER_TIMEOUT)
            .map(|s| s.render())
            .map_err(|_| "the front-end's loop did not answer in time".to_string())
    })?;
    Ok((Requests(rx), bound))
}

impl Snapshot {
    /// The dispatcher's part of a snapshot: rules, back-ends, pool members.
    #[expect(clippy::type_complexity, reason = "one caller, which names the parts")]
    pub fn dispatch_parts(
        d: &Dispatcher,
        book: &Book,
    ) -> (
        Vec<(String, u64)>,
        Vec<BackendRow>,
        Vec<(String, Backend, u32)>,
    ) {
        let rules = d
            .rule_names()
            .zip(d.rule_hits())
            .map(|(n, &h)| (n.to_string(), h))
            .collect();
        let backends = d
            .backends()
            .filter_map(|b| {
                let s = d.backend_status(b)?;
                Some(BackendRow {
                    backend: b,
                    checks_up: s.admin_up,
                    available: s.available,
                    active: s.active,
                    handoffs: book.handoffs.get(&b).copied().unwrap_or(0),
                })
            })
            .collect();
        let members = d
            .pool_members()
            .map(|(p, b, w)| (p.to_string(), b, w))
            .collect();
        (rules, backends, members)
    }

    /// The page (names documented in `docs/metrics.md`).
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        let c = &self.core;
        let service = &self.service;
        e.family(
            "baton_frontend_info",
            Kind::Gauge,
            "The front-end's services (VIP:PORT, comma-separated), interface and fast path (always 1).",
        )
        .sample(
            "baton_frontend_info",
            &[
                ("service", service),
                ("interface", &self.interface),
                ("fast_path", self.fast_path),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1u64,
        );
        let handed_off: u64 = self.backends.iter().map(|b| u64::from(b.active)).sum();
        let half_open = c.half_open;
        let answered = self.answered;
        let other = c
            .connections
            .saturating_sub(half_open + handed_off + answered);
        e.family(
            "baton_frontend_connections",
            Kind::Gauge,
            "Connections tracked now, by state: handshake (SYN-RECEIVED), in_progress (reading the request or being handed off), handed_off (handed off, until freed), answered (answered by the front-end itself, 400, 431 or 503, or reset before a handoff; closing or in their grace period, never handed off).",
        )
        .sample("baton_frontend_connections", &[("state", "handshake")], half_open)
        .sample("baton_frontend_connections", &[("state", "in_progress")], other)
        .sample("baton_frontend_connections", &[("state", "handed_off")], handed_off)
        .sample("baton_frontend_connections", &[("state", "answered")], answered);
        e.single(
            "baton_frontend_connections_max",
            Kind::Gauge,
            "Most connections tracked at once (limits.max_connections).",
            self.max_connections,
        );
        e.single(
            "baton_frontend_connections_accepted_total",
            Kind::Counter,
            "Handshakes completed with clients.",
            c.handshakes_completed,
        );
        e.family(
            "baton_frontend_handoffs_total",
            Kind::Counter,
            "Handoffs by result: started (first candidate chosen), completed (a back-end confirmed), failed (every candidate failed; the client was reset).",
        )
        .sample("baton_frontend_handoffs_total", &[("result", "started")], c.handoffs_started)
        .sample("baton_frontend_handoffs_total", &[("result", "completed")], c.handoffs_completed)
        .sample("baton_frontend_handoffs_total", &[("result", "failed")], c.backends_exhausted);
        e.family(
            "baton_frontend_dispatch_decisions_total",
            Kind::Counter,
            "First decisions by where they were made: in the kernel (the XDP program handed the request off itself; docs/design.md, \"Dispatch in the kernel\") or in userspace (the slow path's dispatcher).",
        )
        .sample(
            "baton_frontend_dispatch_decisions_total",
            &[("path", "kernel")],
            c.kernel_handoffs_adopted,
        )
        .sample(
            "baton_frontend_dispatch_decisions_total",
            &[("path", "userspace")],
            c.handoffs_started.saturating_sub(c.kernel_handoffs_adopted),
        );
        e.single(
            "baton_frontend_handoff_retries_total",
            Kind::Counter,
            "Candidates that failed (silent or refused), after which the next was tried.",
            self.retries,
        );
        e.family(
            "baton_frontend_handoff_candidate_failures_total",
            Kind::Counter,
            "Back-ends that did not take a handoff, by reason.",
        )
        .sample(
            "baton_frontend_handoff_candidate_failures_total",
            &[("reason", "refused")],
            c.backend_refusals,
        )
        .sample(
            "baton_frontend_handoff_candidate_failures_total",
            &[("reason", "timeout")],
            c.backend_timeouts,
        );
        e.histogram(
            "baton_frontend_handoff_latency_seconds",
            "Time from the dispatch decision to the back-end's confirmed handoff.",
            &[],
            &self.latency,
        );
        e.family(
            "baton_frontend_rule_decisions_total",
            Kind::Counter,
            "First decisions by the rule that chose the pool (rule=\"default\": no rule matched).",
        );
        for (rule, hits) in &self.rules {
            e.sample(
                "baton_frontend_rule_decisions_total",
                &[("rule", rule)],
                *hits,
            );
        }
        e.sample(
            "baton_frontend_rule_decisions_total",
            &[("rule", "default")],
            self.default_hits,
        );
        e.single(
            "baton_frontend_unavailable_total",
            Kind::Counter,
            "Decisions that found no back-end of the pool up (503, or a reset for TLS).",
            self.unavailable,
        );
        e.family(
            "baton_frontend_backend_weight",
            Kind::Gauge,
            "Pool membership: a back-end's weight in a pool.",
        );
        for (pool, b, w) in &self.members {
            let b = b.to_string();
            e.sample(
                "baton_frontend_backend_weight",
                &[("pool", pool), ("backend", &b)],
                *w,
            );
        }
        let rows: Vec<(String, &BackendRow)> = self
            .backends
            .iter()
            .map(|r| (r.backend.to_string(), r))
            .collect();
        for (name, help, get) in [
            (
                "baton_frontend_backend_up",
                "1 if the back-end may take new connections (active checks pass and not passively marked down).",
                (|r: &BackendRow| u64::from(r.available)) as fn(&BackendRow) -> u64,
            ),
            (
                "baton_frontend_backend_checks_up",
                "1 if the back-end's active health checks pass (or it has none).",
                |r| u64::from(r.checks_up),
            ),
            (
                "baton_frontend_backend_active_connections",
                "Connections handed off to the back-end and not yet closed.",
                |r| u64::from(r.active),
            ),
        ] {
            e.family(name, Kind::Gauge, help);
            for (b, r) in &rows {
                e.sample(name, &[("backend", b)], get(r));
            }
        }
        e.family(
            "baton_frontend_backend_handoffs_total",
            Kind::Counter,
            "Handoffs completed to the back-end.",
        );
        for (b, r) in &rows {
            e.sample(
                "baton_frontend_backend_handoffs_total",
                &[("backend", b)],
                r.handoffs,
            );
        }
        if !self.xdp.is_empty() {
            e.family(
                "baton_frontend_xdp_packets_total",
                Kind::Counter,
                "Packets to the service seen by the XDP fast path, by outcome (pinned: they outlive daemons).",
            );
            for (outcome, n) in &self.xdp {
                e.sample(
                    "baton_frontend_xdp_packets_total",
                    &[("outcome", outcome)],
                    *n,
                );
            }
        }
        if !self.kernel_slow_path.is_empty() {
            e.family(
                "baton_frontend_kernel_dispatch_slow_path_total",
                Kind::Counter,
                "Requests the XDP program left to the slow path instead of handing them off itself, by reason (each once; they add up to baton_frontend_xdp_packets_total{outcome=\"pass_request_to_slow_path\"}; pinned: they outlive daemons).",
            );
            for (reason, n) in &self.kernel_slow_path {
                e.sample(
                    "baton_frontend_kernel_dispatch_slow_path_total",
                    &[("reason", reason)],
                    *n,
                );
            }
        }
        if let Some((entries, capacity)) = self.flow_table {
            e.single(
                "baton_frontend_flow_table_entries",
                Kind::Gauge,
                "Flows in the XDP flow table (installed or adopted by this daemon).",
                entries,
            );
            e.single(
                "baton_frontend_flow_table_capacity",
                Kind::Gauge,
                "Entries the XDP flow table can hold.",
                capacity,
            );
        }
        let counter_family = |e: &mut Exposition,
                              name: &str,
                              help: &str,
                              pairs: &[(String, String)],
                              skip: &[&str]| {
            e.family(name, Kind::Counter, help);
            for (k, v) in pairs {
                if skip.contains(&k.as_str()) {
                    continue;
                }
                if let Ok(v) = v.parse::<u64>() {
                    e.sample(name, &[("counter", k)], v);
                }
            }
        };
        counter_family(
            &mut e,
            "baton_frontend_core_events_total",
            "The protocol core's counters (baton_proto::frontend::Stats), by field name.",
            &Counters(c).pairs(),
            &["connections", "half_open"],
        );
        counter_family(
            &mut e,
            "baton_frontend_io_total",
            "The slow path's packet I/O counters (capture socket and raw socket), by field name.",
            &Counters(&self.io).pairs(),
            &[],
        );
        counter_family(
            &mut e,
            "baton_frontend_daemon_events_total",
            "The daemon's own counters (loop rounds, SYNs refused while draining, ...), by field name.",
            &self.daemon,
            &[],
        );
        counter_family(
            &mut e,
            "baton_frontend_fastpath_events_total",
            "The fast path's bookkeeping (flows installed, removed, adopted, ...), by field name.",
            &self.fast_path_book,
            &[],
        );
        if let Some((lines, errors)) = self.access_log {
            e.single(
                "baton_frontend_access_log_lines_total",
                Kind::Counter,
                "Access-log lines written.",
                lines,
            );
            e.single(
                "baton_frontend_access_log_errors_total",
                Kind::Counter,
                "Access-log writes that failed (their lines are lost).",
                errors,
            );
        }
        if let Some(a) = &self.announce {
            e.family(
                "baton_frontend_vip_announced",
                Kind::Gauge,
                "1 while the VIPs are announced to the routers ([announce]: the daemon holds them on its device), else 0; reason says why not (draining, no_backend_up, fast_path_unavailable, announce_failed, starting) or serving.",
            )
            .sample(
                "baton_frontend_vip_announced",
                &[("interface", &a.interface), ("reason", a.reason)],
                u64::from(a.announced),
            );
        }
        e.finish()
    }
}

/// Pairs of a `Debug` counters struct, for a snapshot.
pub fn pairs<T: std::fmt::Debug>(stats: &T) -> Vec<(String, String)> {
    Counters(stats).pairs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::parse;

    fn snapshot() -> Snapshot {
        let mut book = Book::default();
        let be: Backend = "198.18.1.11:80".parse().unwrap();
        book.handoffs.insert(be, 3);
        book.latency.observe(0.0003);
        let d = Dispatcher::from_toml(
            r#"
            default_pool = "web"
            [pools.web]
            backends = [{ address = "198.18.1.11:80", weight = 2 }, { address = "198.18.1.12:80" }]
            [[rules]]
            name = "a \"quoted\" rule"
            pool = "web"
            match = { path_prefix = "/x/" }
        "#,
        )
        .unwrap();
        let (rules, backends, members) = Snapshot::dispatch_parts(&d, &book);
        Snapshot {
            service: "198.18.2.1:80".into(),
            interface: "eth0".into(),
            fast_path: "xdp",
            core: Stats {
                handoffs_completed: 3,
                connections: 5,
                half_open: 1,
                ..Stats::default()
            },
            answered: 1,
            max_connections: 100,
            io: IoStats::default(),
            daemon: vec![("rounds".into(), "9".into())],
            fast_path_book: vec![],
            xdp: vec![("forwarded", 12)],
            kernel_slow_path: vec![("path_bytes", 2), ("rule", 0)],
            flow_table: Some((2, 262_144)),
            rules,
            default_hits: 4,
            unavailable: 0,
            backends,
            members,
            latency: book.latency.clone(),
            retries: 0,
            access_log: None,
            announce: Some(Announcement {
                interface: "baton-vip".into(),
                announced: true,
                reason: "serving",
            }),
        }
    }

    #[test]
    fn the_page_has_the_documented_families() {
        let page = snapshot().render();
        let samples = parse(&page);
        let get = |name: &str, label: (&str, &str)| {
            samples
                .iter()
                .find(|s| s.name == name && s.label(label.0) == label.1)
                .unwrap_or_else(|| panic!("{name} {label:?} missing:\n{page}"))
                .value
        };
        assert_eq!(
            get("baton_frontend_handoffs_total", ("result", "completed")),
            3.0
        );
        assert_eq!(
            get("baton_frontend_vip_announced", ("interface", "baton-vip")),
            1.0
        );
        assert_eq!(
            get("baton_frontend_connections", ("state", "handshake")),
            1.0
        );
        assert_eq!(
            get("baton_frontend_connections", ("state", "in_progress")),
            3.0,
            "five tracked: one in its handshake, one answered here"
        );
        assert_eq!(
            get("baton_frontend_connections", ("state", "answered")),
            1.0
        );
        assert_eq!(
            get(
                "baton_frontend_rule_decisions_total",
                ("rule", "a \"quoted\" rule")
            ),
            0.0
        );
        assert_eq!(
            get("baton_frontend_rule_decisions_total", ("rule", "default")),
            4.0
        );
        assert_eq!(
            get(
                "baton_frontend_backend_handoffs_total",
                ("backend", "198.18.1.11:80")
            ),
            3.0
        );
        assert_eq!(
            get(
                "baton_frontend_backend_weight",
                ("backend", "198.18.1.11:80")
            ),
            2.0
        );
        assert_eq!(
            get("baton_frontend_backend_up", ("backend", "198.18.1.12:80")),
            1.0
        );
        assert_eq!(
            get("baton_frontend_xdp_packets_total", ("outcome", "forwarded")),
            12.0
        );
        assert_eq!(
            get(
                "baton_frontend_kernel_dispatch_slow_path_total",
                ("reason", "path_bytes")
            ),
            2.0
        );
        assert_eq!(
            get(
                "baton_frontend_kernel_dispatch_slow_path_total",
                ("reason", "rule")
            ),
            0.0,
            "every reason, zeros too, so that rates start from a sample"
        );
        assert_eq!(
            get(
                "baton_frontend_handoff_latency_seconds_bucket",
                ("le", "0.0005")
            ),
            1.0
        );
        assert_eq!(
            get(
                "baton_frontend_handoff_latency_seconds_bucket",
                ("le", "+Inf")
            ),
            1.0
        );
        assert_eq!(
            get("baton_frontend_daemon_events_total", ("counter", "rounds")),
            9.0
        );
        assert!(page.contains("rule=\"a \\\"quoted\\\" rule\""), "{page}");
        // Every family has HELP and TYPE, once.
        for name in [
            "baton_frontend_flow_table_capacity",
            "baton_frontend_core_events_total",
            "baton_frontend_kernel_dispatch_slow_path_total",
        ] {
            assert_eq!(
                page.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                page.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
