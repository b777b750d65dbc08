//! `baton status --config FILE [--json]`: what the running front-end is doing, read
//! from its metrics endpoint (the `metrics` key of FILE, or `--metrics ADDRESS`).
//!
//! Why the metrics endpoint rather than the pinned maps or an admin socket of its own:
//! the endpoint already holds everything (back-ends with health, weights and active
//! connections, rule hits, handoffs, the XDP counters and the flow table's occupancy),
//! as one consistent snapshot the event loop made; the pins hold only the fast path's
//! part and outlive the daemon, so they cannot tell a running daemon from a stopped
//! one. One interface to keep stable, and `status` sees exactly what a Prometheus
//! scrape sees. Run it where the address is reachable (in the lab: `baton lab exec fe
//! -- baton status --config FILE`).

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, path::Path};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::metrics::{Sample, parse, scrape};

/// The front-end's state, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub metrics: String,
    pub service: String,
    pub interface: String,
    pub fast_path: String,
    pub version: String,
    pub connections: Connections,
    pub handoffs: Handoffs,
    pub flow_table: Option<FlowTable>,
    pub backends: Vec<BackendStatus>,
    pub rules: Vec<RuleHits>,
    pub xdp: BTreeMap<String, u64>,
    /// `[announce]`: whether the routers are told of the VIPs now.
    pub announce: Option<Announce>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Announce {
    pub interface: String,
    pub announced: bool,
    /// `serving`, or why the VIPs are withdrawn.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Connections {
    pub handshake: u64,
    pub in_progress: u64,
    pub handed_off: u64,
    /// Answered by the front-end itself (400, 431, 503) or reset before a handoff, in
    /// their close or grace period: never handed off, and no longer in progress.
    pub answered: u64,
    pub max: u64,
    pub accepted_total: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Handoffs {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub retries: u64,
    /// First decisions made in the kernel (the XDP program's handoffs) and in userspace.
    pub decided_in_kernel: u64,
    pub decided_in_userspace: u64,
    /// Mean handoff latency in microseconds, if any handoff was timed.
    pub mean_latency_us: Option<u64>,
    /// Why the XDP program left requests to userspace: the reasons that counted any,
    /// most first (`baton_frontend_kernel_dispatch_slow_path_total`).
    pub kernel_slow_path: Vec<SlowPathReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlowPathReason {
    /// A `baton_common::kernel_dispatch::reason` name (`rule`, `path_bytes`, ...).
    pub reason: String,
    pub requests: u64,
}

/// Reasons the table shows: the JSON has them all.
const TOP_REASONS: usize = 5;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowTable {
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackendStatus {
    pub address: String,
    /// May take new connections.
    pub healthy: bool,
    /// Its active checks pass (or it has none).
    pub checks_up: bool,
    pub active_connections: u64,
    pub handoffs: u64,
    /// (pool, weight) for every pool that lists it.
    pub pools: Vec<PoolWeight>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolWeight {
    pub pool: String,
    pub weight: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleHits {
    pub rule: String,
    pub decisions: u64,
}

/// The metrics address of front-end configuration `config`: its `metrics` key, read
/// alone (so that a file being edited, or whose key file is unreadable, still tells
/// where to look).
pub fn metrics_address(config: &Path) -> anyhow::Result<SocketAddr> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("in {}", config.display()))?;
    let value = table.get("metrics").ok_or_else(|| {
        anyhow!(
            "{} has no `metrics` key: `baton status` reads the front-end's metrics endpoint; \
             add e.g. metrics = \"127.0.0.1:9180\" and restart the daemon, or pass --metrics ADDRESS",
            config.display()
        )
    })?;
    value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
        anyhow!(
            "{}: `metrics` is not an address such as \"127.0.0.1:9180\"",
            config.display()
        )
    })
}

/// Scrapes `addr` and reads the page.
pub fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
    let page = scrape(addr).map_err(|e| {
        anyhow!(
            "cannot read the front-end's metrics at http://{addr}/metrics ({e:#}): is `baton frontend` running \
             with this configuration (in this network namespace)?"
        )
    })?;
    from_page(addr, &page)
}

/// Reads a metrics page.
pub fn from_page(addr: SocketAddr, page: &str) -> anyhow::Result<Status> {
    let samples = parse(page);
    let info = samples
        .iter()
        .find(|s| s.name == "baton_frontend_info")
        .ok_or_else(|| {
            anyhow!("http://{addr}/metrics is not a Baton front-end's (no baton_frontend_info)")
        })?;
    let value = |name: &str, label: Option<(&str, &str)>| -> u64 {
        samples
            .iter()
            .find(|s| s.name == name && label.is_none_or(|(k, v)| s.label(k) == v))
            .map_or(0, |s| s.value as u64)
    };
    let by = |name: &str, key: &str| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.name == name && !s.label(key).is_empty())
            .collect()
    };
    let sum = samples
        .iter()
        .find(|s| s.name == "baton_frontend_handoff_latency_seconds_sum")
        .map_or(0.0, |s| s.value);
    let count = value("baton_frontend_handoff_latency_seconds_count", None);
    let mut backends: Vec<BackendStatus> = by("baton_frontend_backend_up", "backend")
        .into_iter()
        .map(|s| {
            let b = s.label("backend");
            let of = |name: &str| value(name, Some(("backend", b)));
            BackendStatus {
                address: b.to_string(),
                healthy: s.value >= 1.0,
                checks_up: of("baton_frontend_backend_checks_up") >= 1,
                active_connections: of("baton_frontend_backend_active_connections"),
                handoffs: of("baton_frontend_backend_handoffs_total"),
                pools: Vec::new(),
            }
        })
        .collect();
    for s in by("baton_frontend_backend_weight", "backend") {
        if let Some(b) = backends
            .iter_mut()
            .find(|b| b.address == s.label("backend"))
        {
            b.pools.push(PoolWeight {
                pool: s.label("pool").to_string(),
                weight: s.value as u64,
            });
        }
    }
    let mut kernel_slow_path: Vec<SlowPathReason> =
        by("baton_frontend_kernel_dispatch_slow_path_total", "reason")
            .into_iter()
            .filter(|s| s.value >= 1.0)
            .map(|s| SlowPathReason {
                reason: s.label("reason").to_string(),
                requests: s.value as u64,
            })
            .collect();
    // Most first; a stable sort keeps the page's (the reasons') order among equals.
    kernel_slow_path.sort_by_key(|r| std::cmp::Reverse(r.requests));
    let flow_table = samples
        .iter()
        .any(|s| s.name == "baton_frontend_flow_table_capacity")
        .then(|| FlowTable {
            entries: value("baton_frontend_flow_table_entries", None),
            capacity: value("baton_frontend_flow_table_capacity", None),
        });
    if backends.is_empty() {
        bail!("http://{addr}/metrics lists no back-ends");
    }
    Ok(Status {
        metrics: addr.to_string(),
        service: info.label("service").to_string(),
        interface: info.label("interface").to_string(),
        fast_path: info.label("fast_path").to_string(),
        version: info.label("version").to_string(),
        connections: Connections {
            handshake: value("baton_frontend_connections", Some(("state", "handshake"))),
            in_progress: value("baton_frontend_connections", Some(("state", "in_progress"))),
            handed_off: value("baton_frontend_connections", Some(("state", "handed_off"))),
            answered: value("baton_frontend_connections", Some(("state", "answered"))),
            max: value("baton_frontend_connections_max", None),
            accepted_total: value("baton_frontend_connections_accepted_total", None),
        },
        handoffs: Handoffs {
            started: value("baton_frontend_handoffs_total", Some(("result", "started"))),
            completed: value(
                "baton_frontend_handoffs_total",
                Some(("result", "completed")),
            ),
            failed: value("baton_frontend_handoffs_total", Some(("result", "failed"))),
            retries: value("baton_frontend_handoff_retries_total", None),
            decided_in_kernel: value(
                "baton_frontend_dispatch_decisions_total",
                Some(("path", "kernel")),
            ),
            decided_in_userspace: value(
                "baton_frontend_dispatch_decisions_total",
                Some(("path", "userspace")),
            ),
            mean_latency_us: (count > 0).then(|| (sum / count as f64 * 1e6).round() as u64),
            kernel_slow_path,
        },
        flow_table,
        backends,
        rules: by("baton_frontend_rule_decisions_total", "rule")
            .into_iter()
            .map(|s| RuleHits {
                rule: s.label("rule").to_string(),
                decisions: s.value as u64,
            })
            .collect(),
        xdp: by("baton_frontend_xdp_packets_total", "outcome")
            .into_iter()
            .map(|s| (s.label("outcome").to_string(), s.value as u64))
            .collect(),
        announce: samples
            .iter()
            .find(|s| s.name == "baton_frontend_vip_announced")
            .map(|s| Announce {
                interface: s.label("interface").to_string(),
                announced: s.value >= 1.0,
                reason: s.label("reason").to_string(),
            }),
    })
}

impl Status {
    /// The readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "front-end {} on {} (fast path {}, baton {}), metrics http://{}/metrics",
            self.service, self.interface, self.fast_path, self.version, self.metrics
        );
        let c = &self.connections;
        let _ = write!(
            o,
            "connections: {} handed off, {} in progress, {} answered here (closing), {} in handshake (max {}); {} accepted",
            c.handed_off, c.in_progress, c.answered, c.handshake, c.max, c.accepted_total
        );
        match &self.flow_table {
            Some(f) => {
                let _ = writeln!(o, "; flow table {} / {}", f.entries, f.capacity);
            }
            None => o.push_str("; no XDP flow table\n"),
        }
        let h = &self.handoffs;
        let _ = writeln!(
            o,
            "handoffs: {} completed, {} failed, {} retries; decided {} in the kernel, {} in userspace; mean latency {}",
            h.completed,
            h.failed,
            h.retries,
            h.decided_in_kernel,
            h.decided_in_userspace,
            h.mean_latency_us
                .map_or("-".into(), |us| format!("{us} us"))
        );
        if !h.kernel_slow_path.is_empty() {
            let top: Vec<String> = h
                .kernel_slow_path
                .iter()
                .take(TOP_REASONS)
                .map(|r| format!("{}={}", r.reason, r.requests))
                .collect();
            let rest = &h.kernel_slow_path[top.len()..];
            let more = if rest.is_empty() {
                String::new()
            } else {
                let requests: u64 = rest.iter().map(|r| r.requests).sum();
                format!(" (+{} more reasons, {requests} requests)", rest.len())
            };
            let _ = writeln!(
                o,
                "left to userspace by the kernel: {}{more}",
                top.join(" ")
            );
        }
        if let Some(a) = &self.announce {
            let _ = writeln!(
                o,
                "announce: {} on {}{}",
                if a.announced {
                    "VIP announced"
                } else {
                    "VIP WITHDRAWN"
                },
                a.interface,
                if a.announced {
                    String::new()
                } else {
                    format!(" ({})", a.reason)
                }
            );
        }
        let _ = writeln!(
            o,
            "\n{:<22} {:<8} {:>7} {:>9}  POOLS (weight)",
            "BACKEND", "HEALTH", "ACTIVE", "HANDOFFS"
        );
        for b in &self.backends {
            let health = match (b.healthy, b.checks_up) {
                (true, _) => "up",
                (false, true) => "backoff",
                (false, false) => "DOWN",
            };
            let pools: Vec<String> = b
                .pools
                .iter()
                .map(|p| format!("{}({})", p.pool, p.weight))
                .collect();
            let _ = writeln!(
                o,
                "{:<22} {:<8} {:>7} {:>9}  {}",
                b.address,
                health,
                b.active_connections,
                b.handoffs,
                pools.join(" ")
            );
        }
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| format!("{}={}", r.rule, r.decisions))
            .collect();
        let _ = writeln!(o, "\nrules: {}", rules.join(" "));
        if !self.xdp.is_empty() {
            let xdp: Vec<String> = self.xdp.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(o, "xdp: {}", xdp.join(" "));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP baton_frontend_info x
# TYPE baton_frontend_info gauge
baton_frontend_info{service="198.18.2.1:80",interface="eth0",fast_path="xdp",version="0.1.0"} 1
baton_frontend_connections{state="handed_off"} 2
baton_frontend_connections{state="in_progress"} 1
baton_frontend_connections{state="answered"} 3
baton_frontend_handoffs_total{result="completed"} 4
baton_frontend_handoff_latency_seconds_sum 0.002
baton_frontend_handoff_latency_seconds_count 4
baton_frontend_backend_weight{pool="all",backend="198.18.1.11:80"} 1
baton_frontend_backend_weight{pool="images",backend="198.18.1.11:80"} 3
baton_frontend_backend_up{backend="198.18.1.11:80"} 1
baton_frontend_backend_up{backend="198.18.1.12:80"} 0
baton_frontend_backend_checks_up{backend="198.18.1.12:80"} 0
baton_frontend_backend_active_connections{backend="198.18.1.11:80"} 2
baton_frontend_backend_handoffs_total{backend="198.18.1.11:80"} 4
baton_frontend_rule_decisions_total{rule="images"} 3
baton_frontend_rule_decisions_total{rule="default"} 1
baton_frontend_flow_table_entries 2
baton_frontend_flow_table_capacity 262144
"#;

    #[test]
    fn a_page_reads_as_a_status_table() {
        let s = from_page("127.0.0.1:9180".parse().unwrap(), PAGE).unwrap();
        assert_eq!(s.service, "198.18.2.1:80");
        assert_eq!(s.handoffs.mean_latency_us, Some(500));
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backends[0].pools.len(), 2);
        assert_eq!(s.backends[0].pools[1].weight, 3);
        assert!(s.backends[0].healthy && !s.backends[1].healthy);
        assert_eq!(s.flow_table.as_ref().unwrap().entries, 2);
        let t = s.table();
        assert!(
            t.contains("198.18.1.11:80         up             2         4  all(1) images(3)"),
            "{t}"
        );
        assert!(t.contains("198.18.1.12:80         DOWN"), "{t}");
        assert!(t.contains("rules: images=3 default=1"), "{t}");
        assert_eq!((s.connections.in_progress, s.connections.answered), (1, 3));
        assert!(
            t.contains("connections: 2 handed off, 1 in progress, 3 answered here (closing), 0 in handshake"),
            "{t}"
        );
        assert!(from_page("127.0.0.1:1".parse().unwrap(), "x 1\n").is_err());
        assert_eq!(s.announce, None, "no [announce], no line");
        assert!(!t.contains("announce"), "{t}");
    }

    /// Why the kernel left requests to userspace: the non-zero reasons, most first, the
    /// table's line the top five with what the rest add up to; none counted, no line.
    #[test]
    fn the_kernels_reasons_for_the_slow_path_are_shown_most_first() {
        let t = from_page("127.0.0.1:9180".parse().unwrap(), PAGE)
            .unwrap()
            .table();
        assert!(!t.contains("left to userspace"), "{t}");
        let mut page = String::from(PAGE);
        page.push_str("baton_frontend_dispatch_decisions_total{path=\"kernel\"} 90\n");
        page.push_str("baton_frontend_dispatch_decisions_total{path=\"userspace\"} 48\n");
        for (reason, n) in [
            ("off", 0),
            ("method", 1),
            ("path_bytes", 5),
            ("incomplete", 2),
            ("rule", 30),
            ("tcp_options", 0),
            ("sticky", 3),
            ("over_mss", 1),
            ("tls_fragmented", 6),
        ] {
            page.push_str(&format!(
                "baton_frontend_kernel_dispatch_slow_path_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        let s = from_page("127.0.0.1:9180".parse().unwrap(), &page).unwrap();
        let got: Vec<(&str, u64)> = s
            .handoffs
            .kernel_slow_path
            .iter()
            .map(|r| (r.reason.as_str(), r.requests))
            .collect();
        assert_eq!(
            got,
            [
                ("rule", 30),
                ("tls_fragmented", 6),
                ("path_bytes", 5),
                ("sticky", 3),
                ("incomplete", 2),
                ("method", 1),
                ("over_mss", 1)
            ]
        );
        let t = s.table();
        assert!(
            t.contains("decided 90 in the kernel, 48 in userspace"),
            "{t}"
        );
        assert!(
            t.contains(
                "left to userspace by the kernel: rule=30 tls_fragmented=6 path_bytes=5 sticky=3 \
                 incomplete=2 (+2 more reasons, 2 requests)\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_announcement_is_shown_with_why_it_is_withdrawn() {
        let page = format!(
            "{PAGE}baton_frontend_vip_announced{{interface=\"baton-vip\",reason=\"no_backend_up\"}} 0\n"
        );
        let s = from_page("127.0.0.1:9180".parse().unwrap(), &page).unwrap();
        let a = s.announce.as_ref().unwrap();
        assert!(!a.announced);
        assert_eq!(a.reason, "no_backend_up");
        let t = s.table();
        assert!(
            t.contains("announce: VIP WITHDRAWN on baton-vip (no_backend_up)"),
            "{t}"
        );
    }

    #[test]
    fn a_missing_daemon_is_said_clearly() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = format!("{:#}", fetch(port).unwrap_err());
        assert!(e.contains("is `baton frontend` running"), "{e}");
        let dir = std::env::temp_dir().join(format!("baton-status-{}.toml", std::process::id()));
        std::fs::write(&dir, "interface = \"eth0\"\n").unwrap();
        let e = format!("{:#}", metrics_address(&dir).unwrap_err());
        assert!(e.contains("no `metrics` key"), "{e}");
        let _ = std::fs::remove_file(&dir);
    }
}
