//! From samples to results: medians over rounds, ratios to direct, and the three
//! outputs (markdown tables, JSON, a PNG chart drawn by gnuplot).

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    Family, HttpReuse, Plan,
    measure::{WrkReport, median},
    systems::System,
};

/// CPU time spent on the front-end's side during one workload.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cpu {
    /// The front-end process's time on CPUs: the sum of its threads' scheduler run
    /// time (`/proc/PID/task/*/schedstat`, nanosecond resolution).
    pub process_s: f64,
    /// `process_s` split into user and system time in the proportion of the process's
    /// tick-sampled `utime` and `stime` (`/proc/PID/stat`, 10 ms resolution).
    pub user_s: f64,
    pub system_s: f64,
    /// Run time of the eBPF programs attached in `fe` (bpftool's `run_time_ns`).
    pub bpf_s: f64,
    pub bpf_runs: u64,
}

impl Cpu {
    pub fn total_s(&self) -> f64 {
        self.process_s + self.bpf_s
    }
}

/// Several front-ends' time together: a tier's.
impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            process_s: self.process_s + o.process_s,
            user_s: self.user_s + o.user_s,
            system_s: self.system_s + o.system_s,
            bpf_s: self.bpf_s + o.bpf_s,
            bpf_runs: self.bpf_runs + o.bpf_runs,
        }
    }
}

/// What the whole host spent during a run (every namespace shares its CPUs).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct HostCpu {
    /// Busy time summed over all CPUs (`/proc/stat`, 10 ms resolution).
    pub busy_s: f64,
    /// The busy share of all CPUs' time, 0 to 1.
    pub busy_share: f64,
}

/// The 100 MiB workload: sequential transfers on one connection.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Large {
    pub transfers: u32,
    pub bytes: u64,
    /// Sum of the transfers' own times (curl's `time_total`).
    pub seconds: f64,
}

impl Large {
    pub fn gbit_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 * 8.0 / self.seconds / 1e9
        } else {
            0.0
        }
    }
}

/// One system's figures in one round. CPU is `None` for direct: no front-end.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub system: System,
    /// The family of every connection in the turn: the client's and, through HAProxy,
    /// the back-end's.
    pub family: Family,
    pub round: u32,
    pub close: WrkReport,
    pub close_cpu: Option<Cpu>,
    pub close_host: Option<HostCpu>,
    /// Frames during (a), on the LAN and on the client's link.
    pub close_frames: Frames,
    pub keep_alive: WrkReport,
    pub keep_alive_cpu: Option<Cpu>,
    pub keep_alive_host: Option<HostCpu>,
    pub large: Large,
    pub large_cpu: Option<Cpu>,
    /// Median time to first byte over the round's sequential requests.
    pub ttfb_ms: f64,
    /// Baton's front-end: its handoffs over the whole turn, and how many of them the
    /// kernel decided (from its exit log); a tier's, all its front-ends' together.
    pub decisions: Option<Decisions>,
    /// A tier's front-ends each, in the tier's order (`fe1` first): their shares of
    /// `close_cpu`, `keep_alive_cpu`, `large_cpu` and `decisions`. Empty for one
    /// front-end or none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub close_cpu_per_frontend: Vec<Cpu>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_alive_cpu_per_frontend: Vec<Cpu>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub large_cpu_per_frontend: Vec<Cpu>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions_per_frontend: Vec<Decisions>,
}

/// Handoffs a Baton front-end made, and how many of them XDP decided and made itself
/// (kernel dispatch); the rest went up to the daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decisions {
    pub handoffs: u64,
    pub in_kernel: u64,
}

/// Several turns' or front-ends' handoffs together.
impl std::ops::Add for Decisions {
    type Output = Decisions;
    fn add(self, o: Decisions) -> Decisions {
        Decisions {
            handoffs: self.handoffs + o.handoffs,
            in_kernel: self.in_kernel + o.in_kernel,
        }
    }
}

/// Frames sent on the lab's LAN (out of the bridge's ports) and on the client's link
/// (both ways), counted from the interfaces' packet counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Frames {
    pub lan: u64,
    pub client_link: u64,
}

impl Frames {
    /// What was sent since `before`.
    pub fn since(self, before: Frames) -> Frames {
        Frames {
            lan: self.lan.saturating_sub(before.lan),
            client_link: self.client_link.saturating_sub(before.client_link),
        }
    }
}

/// A figure over the rounds: the median and the range.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            median: median(values)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// One system's medians over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub system: System,
    pub family: Family,
    pub rounds: usize,
    pub close_rps: Spread,
    pub close_p50_ms: Spread,
    pub close_p99_ms: Spread,
    /// Socket errors and non-2xx responses, all rounds together.
    pub close_errors: u64,
    pub keep_alive_rps: Spread,
    pub keep_alive_p50_ms: Spread,
    pub keep_alive_p99_ms: Spread,
    pub keep_alive_errors: u64,
    /// The whole host's busy CPU time per request (µs) and busy share (%), for (a) and
    /// (b); `None` in reports of runs that did not measure it.
    pub host_us_per_request_close: Option<Spread>,
    /// The host CPU per request of (a) minus direct's in the same round (µs): all the
    /// work the balancer adds, wherever it runs (its process, its eBPF programs, the
    /// softirq work of its packets on every hop, the back-end module); `None` for direct.
    pub host_us_added_close: Option<Spread>,
    pub host_busy_pct_close: Option<Spread>,
    pub host_us_per_request_keep_alive: Option<Spread>,
    pub host_busy_pct_keep_alive: Option<Spread>,
    pub large_gbit_s: Spread,
    /// Front-end CPU per request (close and keep-alive), in microseconds, and per GB
    /// served (100 MiB objects), in milliseconds; `None` without a front-end.
    pub cpu_us_per_request_close: Option<CpuPer>,
    pub cpu_us_per_request_keep_alive: Option<CpuPer>,
    pub cpu_ms_per_gb: Option<CpuPer>,
    pub ttfb_ms: Spread,
    /// Frames per request during (a): on the LAN, and on the client's link.
    pub lan_frames_per_request_close: Option<Spread>,
    pub client_frames_per_request_close: Option<Spread>,
    /// Baton's handoffs over every round and workload, and those the kernel decided.
    pub decisions: Option<Decisions>,
    /// A tier's front-ends each (`fe1` first); empty for one front-end or none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_frontend: Vec<FrontendSummary>,
}

/// One front-end of a tier over the rounds: its CPU per unit of the whole tier's work
/// (so that the front-ends' figures add up to the tier's), and its handoffs.
#[derive(Clone, Debug, Serialize)]
pub struct FrontendSummary {
    /// The node: `fe1` .. `feN`.
    pub node: String,
    pub cpu_us_per_request_close: Option<CpuPer>,
    pub cpu_us_per_request_keep_alive: Option<CpuPer>,
    pub cpu_ms_per_gb: Option<CpuPer>,
    /// Its handoffs over every round and workload, and those the kernel decided.
    pub decisions: Option<Decisions>,
}

/// Each front-end of a tier over the rounds `s`; empty unless the samples have
/// per-front-end figures.
fn per_frontend(s: &[&Sample]) -> Vec<FrontendSummary> {
    let n = s
        .iter()
        .map(|x| x.close_cpu_per_frontend.len())
        .max()
        .unwrap_or(0);
    (0..n)
        .map(|i| {
            let per = |cpu: fn(&Sample) -> &[Cpu], work: fn(&Sample) -> f64, scale: f64| {
                CpuPer::of(
                    &s.iter()
                        .map(|x| (cpu(x).get(i).copied(), work(x)))
                        .collect::<Vec<_>>(),
                    scale,
                )
            };
            FrontendSummary {
                node: format!("fe{}", i + 1),
                cpu_us_per_request_close: per(
                    |x| &x.close_cpu_per_frontend,
                    |x| x.close.requests as f64,
                    1e6,
                ),
                cpu_us_per_request_keep_alive: per(
                    |x| &x.keep_alive_cpu_per_frontend,
                    |x| x.keep_alive.requests as f64,
                    1e6,
                ),
                cpu_ms_per_gb: per(
                    |x| &x.large_cpu_per_frontend,
                    |x| x.large.bytes as f64 / 1e9,
                    1e3,
                ),
                decisions: s
                    .iter()
                    .filter_map(|x| x.decisions_per_frontend.get(i).copied())
                    .reduce(|a, b| a + b),
            }
        })
        .collect()
}

/// A CPU figure per unit of work, with its parts (medians of each, over the rounds, so
/// the parts need not add up to the total exactly).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuPer {
    pub total: Spread,
    pub user: f64,
    pub system: f64,
    pub bpf: f64,
}

impl CpuPer {
    /// `cpu` of each round divided by the round's `work`, times `scale`.
    fn of(rounds: &[(Option<Cpu>, f64)], scale: f64) -> Option<Self> {
        let per: Vec<(Cpu, f64)> = rounds
            .iter()
            .filter_map(|&(cpu, work)| Some((cpu?, work)))
            .filter(|&(_, work)| work > 0.0)
            .collect();
        let part = |f: fn(&Cpu) -> f64| {
            median(
                &per.iter()
                    .map(|(c, w)| f(c) / w * scale)
                    .collect::<Vec<_>>(),
            )
        };
        Some(Self {
            total: Spread::of(
                &per.iter()
                    .map(|(c, w)| c.total_s() / w * scale)
                    .collect::<Vec<_>>(),
            )?,
            user: part(|c| c.user_s)?,
            system: part(|c| c.system_s)?,
            bpf: part(|c| c.bpf_s)?,
        })
    }
}

/// A system's name in the report over `family`: as it always was for IPv4, with
/// ", IPv6" for IPv6.
pub fn label(system: System, family: Family) -> String {
    match family {
        Family::V4 => system.name().to_owned(),
        Family::V6 => format!("{}, IPv6", system.name()),
    }
}

impl Summary {
    pub fn label(&self) -> String {
        label(self.system, self.family)
    }
}

/// The host's busy CPU per request of (a) in one round, in µs.
fn host_us_close(x: &Sample) -> Option<f64> {
    x.close_host
        .map(|h| h.busy_s / x.close.requests as f64 * 1e6)
}

pub fn summarize(samples: &[Sample]) -> Vec<Summary> {
    // Systems in the order the rounds ran them, IPv4's before IPv6's, so that each
    // family's rows read as one table.
    let mut systems: Vec<(System, Family)> = Vec::new();
    for x in samples {
        if !systems.contains(&(x.system, x.family)) {
            systems.push((x.system, x.family));
        }
    }
    systems.sort_by_key(|&(_, family)| family);
    // Direct's host CPU per request in each round, over each family: what a system adds
    // is measured against the same round's direct over the same family, minutes apart
    // rather than the whole run.
    let direct_host = |round: u32, family: Family| {
        samples
            .iter()
            .find(|d| d.system == System::Direct && d.round == round && d.family == family)
            .and_then(host_us_close)
    };
    systems
        .into_iter()
        .filter_map(|(system, family)| {
            let s: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.system == system && s.family == family)
                .collect();
            let spread =
                |f: fn(&Sample) -> f64| Spread::of(&s.iter().map(|x| f(x)).collect::<Vec<_>>());
            Some(Summary {
                system,
                family,
                rounds: s.len(),
                close_rps: spread(|x| x.close.per_second)?,
                close_p50_ms: spread(|x| x.close.p50_ms)?,
                close_p99_ms: spread(|x| x.close.p99_ms)?,
                close_errors: s.iter().map(|x| x.close.errors()).sum(),
                keep_alive_rps: spread(|x| x.keep_alive.per_second)?,
                keep_alive_p50_ms: spread(|x| x.keep_alive.p50_ms)?,
                keep_alive_p99_ms: spread(|x| x.keep_alive.p99_ms)?,
                keep_alive_errors: s.iter().map(|x| x.keep_alive.errors()).sum(),
                host_us_per_request_close: host_spread(&s, host_us_close),
                host_us_added_close: (system != System::Direct)
                    .then(|| {
                        Spread::of(
                            &s.iter()
                                .filter_map(|x| {
                                    Some(host_us_close(x)? - direct_host(x.round, family)?)
                                })
                                .filter(|v| v.is_finite())
                                .collect::<Vec<_>>(),
                        )
                    })
                    .flatten(),
                host_busy_pct_close: host_spread(&s, |x| {
                    x.close_host.map(|h| h.busy_share * 100.0)
                }),
                host_us_per_request_keep_alive: host_spread(&s, |x| {
                    x.keep_alive_host
                        .map(|h| h.busy_s / x.keep_alive.requests as f64 * 1e6)
                }),
                host_busy_pct_keep_alive: host_spread(&s, |x| {
                    x.keep_alive_host.map(|h| h.busy_share * 100.0)
                }),
                large_gbit_s: spread(|x| x.large.gbit_s())?,
                cpu_us_per_request_close: CpuPer::of(
                    &s.iter()
                        .map(|x| (x.close_cpu, x.close.requests as f64))
                        .collect::<Vec<_>>(),
                    1e6,
                ),
                cpu_us_per_request_keep_alive: CpuPer::of(
                    &s.iter()
                        .map(|x| (x.keep_alive_cpu, x.keep_alive.requests as f64))
                        .collect::<Vec<_>>(),
                    1e6,
                ),
                cpu_ms_per_gb: CpuPer::of(
                    &s.iter()
                        .map(|x| (x.large_cpu, x.large.bytes as f64 / 1e9))
                        .collect::<Vec<_>>(),
                    1e3,
                ),
                ttfb_ms: spread(|x| x.ttfb_ms)?,
                lan_frames_per_request_close: host_spread(&s, |x| {
                    Some(x.close_frames.lan as f64 / x.close.requests as f64)
                }),
                client_frames_per_request_close: host_spread(&s, |x| {
                    Some(x.close_frames.client_link as f64 / x.close.requests as f64)
                }),
                decisions: s.iter().filter_map(|x| x.decisions).reduce(|a, b| a + b),
                per_frontend: per_frontend(&s),
            })
        })
        .collect()
}

/// The spread of a host figure over the rounds that have it (and made requests).
fn host_spread(samples: &[&Sample], figure: fn(&Sample) -> Option<f64>) -> Option<Spread> {
    Spread::of(
        &samples
            .iter()
            .filter_map(|x| figure(x))
            .filter(|v| v.is_finite())
            .collect::<Vec<_>>(),
    )
}

/// The machine and the run, for the report's header.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Meta {
    /// UTC, ISO 8601, when the run started.
    pub date: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The share of all CPUs busy during one second before the lab came up: other
    /// work on the machine, which the figures cannot tell from their own.
    pub busy_before_pct: f64,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub versions: Vec<String>,
    pub lab: String,
    /// The second lab, of the tier's front-ends, with `--frontends` 2 and more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_lab: Option<String>,
    pub mode: String,
}

/// Everything the JSON file holds.
#[derive(Serialize)]
pub struct Report<'a> {
    pub meta: &'a Meta,
    pub plan: &'a Plan,
    pub summary: &'a [Summary],
    pub samples: &'a [Sample],
}

fn ratio(value: f64, direct: Option<f64>) -> String {
    match direct {
        Some(d) if d > 0.0 => format!("{:.2}", value / d),
        _ => "-".into(),
    }
}

/// `median (min–max)` when there was more than one round.
fn spread(s: Spread, decimals: usize) -> String {
    if s.min < s.max {
        format!(
            "{:.decimals$} ({:.decimals$}–{:.decimals$})",
            s.median, s.min, s.max
        )
    } else {
        format!("{:.decimals$}", s.median)
    }
}

/// The markdown tables, one per workload, under a header naming machine and run.
pub fn markdown(meta: &Meta, plan: &Plan, summary: &[Summary]) -> String {
    // Each row's ratios are to direct over the row's family.
    let direct_of = |family: Family| {
        summary
            .iter()
            .find(|s| s.system == System::Direct && s.family == family)
    };
    // The proxy Baton's cost per connection is held against: HAProxy opening a back-end
    // connection per client connection, as a handoff does, when the run measured it
    // (over the row's family).
    let haproxy_of = |family: Family| {
        [HttpReuse::Never, HttpReuse::Always]
            .into_iter()
            .find_map(|r| {
                summary
                    .iter()
                    .find(|s| s.system == System::Haproxy(r) && s.family == family)
            })
    };
    let haproxy_name = haproxy_of(Family::V4)
        .or_else(|| haproxy_of(Family::V6))
        .map_or("HAProxy", |h| h.system.name());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Baton bench, {}: {} ({} round{} of {} s per wrk workload, HAProxy `http-reuse {}`, Baton `[tcp]` {}), lab `{}`.\n\
         Machine: {}, {} CPUs, {:.0} GiB, Linux {}; {:.0}% busy before the run, load {} before, {} after.\n\
         Medians over rounds (range in brackets); ratios are to direct, the client straight to a back-end \
         (be{}; HAProxy and Baton send the measured path to be{}){}.\n",
        meta.date,
        meta.mode,
        plan.rounds,
        if plan.rounds == 1 { "" } else { "s" },
        plan.duration_s,
        plan.haproxy_http_reuse
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join("` and `"),
        if plan.baton_tcp.is_empty() {
            "defaults".to_owned()
        } else {
            plan.baton_tcp.join(", ")
        },
        meta.lab,
        meta.cpu,
        meta.cpus,
        meta.memory_gib,
        meta.kernel,
        meta.busy_before_pct,
        meta.loadavg_before,
        meta.loadavg_after,
        super::systems::DIRECT_BACKEND,
        super::systems::BALANCED_BACKEND,
        families_note(plan),
    );
    if let (Some(tier_lab), Some(tier)) =
        (&meta.tier_lab, summary.iter().find(|s| s.system.on_tier()))
    {
        let _ = writeln!(
            md,
            "{}: Baton through a tier of {} front-ends, each announcing the VIP over BGP to the \
             router, which spreads flows over them by ECMP; on a second lab, `{tier_lab}`, alike \
             but for the tier (docs/benchmarks.md, \"Method\").\n",
            tier.system.name(),
            plan.frontends,
        );
    }
    for (title, close) in [
        (
            format!(
                "(a) New connection per request, 1 KiB (`wrk -t{} -c{} -H 'Connection: close'`)",
                plan.threads, plan.connections
            ),
            true,
        ),
        (
            format!(
                "(b) Keep-alive, 1 KiB (`wrk -t{} -c{}`)",
                plan.threads, plan.connections
            ),
            false,
        ),
    ] {
        let _ = writeln!(
            md,
            "### {title}\n\n| system | req/s | vs direct | p50 ms | p99 ms | errors | host CPU µs/request | host busy |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in summary {
            let direct = direct_of(s.family);
            let (rps, p50, p99, errors, d, host_us, host_pct) = if close {
                (
                    s.close_rps,
                    s.close_p50_ms,
                    s.close_p99_ms,
                    s.close_errors,
                    direct.map(|d| d.close_rps.median),
                    s.host_us_per_request_close,
                    s.host_busy_pct_close,
                )
            } else {
                (
                    s.keep_alive_rps,
                    s.keep_alive_p50_ms,
                    s.keep_alive_p99_ms,
                    s.keep_alive_errors,
                    direct.map(|d| d.keep_alive_rps.median),
                    s.host_us_per_request_keep_alive,
                    s.host_busy_pct_keep_alive,
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} | {:.2} | {errors} | {} | {} |",
                s.label(),
                spread(rps, 0),
                ratio(rps.median, d),
                p50.median,
                p99.median,
                host_us.map_or_else(|| "-".into(), |h| spread(h, 1)),
                host_pct.map_or_else(|| "-".into(), |h| format!("{:.0}%", h.median)),
            );
        }
        md.push_str(
            "\nHost CPU: every CPU's busy time during the run (client, back-ends, front-end and \
             the lab's bridge and router share them), per request. Where the host is near fully \
             busy, req/s vs direct is about direct's host CPU per request over the system's.\n\n",
        );
        if close {
            md.push_str(
                "Frames per request during (a), from the interfaces' packet counters: sent out \
                 of the LAN bridge's ports, and on the client's link (both ways).\n\n\
                 | system | LAN frames/request | client-link frames/request |\n|---|---:|---:|\n",
            );
            for s in summary {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    s.label(),
                    s.lan_frames_per_request_close
                        .map_or_else(|| "-".into(), |f| spread(f, 1)),
                    s.client_frames_per_request_close
                        .map_or_else(|| "-".into(), |f| spread(f, 1)),
                );
            }
            md.push('\n');
        }
    }
    let _ = writeln!(
        md,
        "### (c) 100 MiB objects (`curl`, {} sequential transfers on one connection)\n\n\
         | system | Gbit/s | vs direct |\n|---|---:|---:|",
        plan.large_transfers
    );
    for s in summary {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            s.label(),
            spread(s.large_gbit_s, 2),
            ratio(
                s.large_gbit_s.median,
                direct_of(s.family).map(|d| d.large_gbit_s.median)
            )
        );
    }
    let _ = writeln!(
        md,
        "\n### (d) Front-end CPU (process user + system time, plus eBPF run time in `fe`), and the host CPU each balancer adds\n\n\
         | system | µs per request, (a) | user / sys / eBPF | (a) vs {haproxy_name} | host CPU added over direct, µs per request, (a) | added vs {haproxy_name} | µs per request, (b) | ms per GB, (c) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let cpu = |c: Option<CpuPer>, decimals: usize| {
        c.map_or_else(|| "-".into(), |c| spread(c.total, decimals))
    };
    for s in summary {
        if s.system == System::Direct {
            let _ = writeln!(md, "| {} | no front-end | | | | | | |", s.label());
            continue;
        }
        let haproxy = haproxy_of(s.family);
        let parts = s.cpu_us_per_request_close.map_or_else(
            || "-".into(),
            |c| format!("{:.1} / {:.1} / {:.1}", c.user, c.system, c.bpf),
        );
        let vs = match (
            s.cpu_us_per_request_close,
            haproxy.and_then(|h| h.cpu_us_per_request_close),
        ) {
            (Some(c), Some(h)) => ratio(c.total.median, Some(h.total.median)),
            _ => "-".into(),
        };
        let added_vs = match (
            s.host_us_added_close,
            haproxy.and_then(|h| h.host_us_added_close),
        ) {
            (Some(a), Some(h)) => ratio(a.median, Some(h.median)),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {parts} | {vs} | {} | {added_vs} | {} | {} |",
            s.label(),
            cpu(s.cpu_us_per_request_close, 1),
            s.host_us_added_close
                .map_or_else(|| "-".into(), |a| spread(a, 1)),
            cpu(s.cpu_us_per_request_keep_alive, 1),
            cpu(s.cpu_ms_per_gb, 1),
        );
    }
    md.push_str(
        "\nThe process figure charges a front-end for the receivers' work its sends run (veth \
         delivery is synchronous) and misses its own receive path run in other processes' \
         calls; the host CPU added over direct (the host's busy time per request minus \
         direct's in the same round) counts everything a balancer adds, wherever it runs: \
         its process, its eBPF programs, the softirq work of its packets on every hop, and \
         for Baton the back-end module. See docs/benchmarks.md, (d).\n",
    );
    for s in summary {
        if let Some(d) = s.decisions {
            let _ = writeln!(
                md,
                "\n{}'s handoffs{} decided in the kernel, over every round and workload: {} of {} ({:.1}%); the rest the daemon decided.",
                s.system.name(),
                match s.family {
                    Family::V4 => "",
                    Family::V6 => " over IPv6",
                },
                d.in_kernel,
                d.handoffs,
                if d.handoffs == 0 {
                    0.0
                } else {
                    100.0 * d.in_kernel as f64 / d.handoffs as f64
                }
            );
        }
    }
    let _ = writeln!(
        md,
        "\n### (e) Time to first byte (`curl`, {} sequential requests, each on a new connection)\n\n\
         | system | median ms | added over direct, µs |\n|---|---:|---:|",
        plan.ttfb_requests
    );
    for s in summary {
        let added = direct_of(s.family).map_or_else(
            || "-".into(),
            |d| format!("{:+.0}", (s.ttfb_ms.median - d.ttfb_ms.median) * 1000.0),
        );
        let _ = writeln!(md, "| {} | {} | {added} |", s.label(), spread(s.ttfb_ms, 3));
    }
    families_section(&mut md, summary);
    tier_section(&mut md, plan, summary);
    md
}

/// What the header says of the families measured: nothing for IPv4 alone, as before.
fn families_note(plan: &Plan) -> String {
    if plan.families == [Family::V4] {
        return String::new();
    }
    let names: Vec<&str> = plan.families.iter().map(|f| f.name()).collect();
    format!(
        "; over {}, each system's turns one after the other in every round, ratios to \
         direct over the same family, rows marked IPv6 over IPv6 and the others over IPv4 \
         (the tier's over IPv4 alone: its BGP carries IPv4 only)",
        names.join(" and ")
    )
}

/// Each system's IPv6 figures beside its IPv4 ones, with both families' ratios to
/// direct and IPv6's over IPv4's. Nothing unless the run measured both.
fn families_section(md: &mut String, summary: &[Summary]) {
    let over = |system: System, family: Family| {
        summary
            .iter()
            .find(|s| s.system == system && s.family == family)
    };
    let pairs: Vec<(&Summary, &Summary)> = summary
        .iter()
        .filter(|s| s.family == Family::V4)
        .filter_map(|v4| Some((v4, over(v4.system, Family::V6)?)))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let direct = |family: Family| over(System::Direct, family);
    let _ = writeln!(
        md,
        "\n### IPv6 beside IPv4\n\n\
         | workload | system | IPv4 | vs direct | IPv6 | vs direct | IPv6 / IPv4 |\n\
         |---|---|---:|---:|---:|---:|---:|"
    );
    type Of = fn(&Summary) -> Option<f64>;
    // (workload, figure, decimals, whether direct has it and ratios to it mean
    // something).
    let rows: [(&str, Of, usize, bool); 8] = [
        ("(a) req/s", |s| Some(s.close_rps.median), 0, true),
        ("(a) p99 ms", |s| Some(s.close_p99_ms.median), 2, false),
        ("(b) req/s", |s| Some(s.keep_alive_rps.median), 0, true),
        ("(c) Gbit/s", |s| Some(s.large_gbit_s.median), 2, true),
        (
            "(d) front-end CPU, µs per request, (a)",
            |s| s.cpu_us_per_request_close.map(|c| c.total.median),
            1,
            false,
        ),
        (
            "(d) host CPU added over direct, µs per request, (a)",
            |s| s.host_us_added_close.map(|a| a.median),
            1,
            false,
        ),
        (
            "(d) ms per GB, (c)",
            |s| s.cpu_ms_per_gb.map(|c| c.total.median),
            1,
            false,
        ),
        ("(e) ms to first byte", |s| Some(s.ttfb_ms.median), 3, false),
    ];
    for (workload, figure, decimals, to_direct) in rows {
        for &(v4, v6) in &pairs {
            let (Some(a), Some(b)) = (figure(v4), figure(v6)) else {
                continue;
            };
            let vs = |family: Family, value: f64| {
                if to_direct {
                    ratio(value, direct(family).and_then(figure))
                } else {
                    "-".to_owned()
                }
            };
            let _ = writeln!(
                md,
                "| {workload} | {} | {a:.decimals$} | {} | {b:.decimals$} | {} | {} |",
                v4.system.name(),
                vs(Family::V4, a),
                vs(Family::V6, b),
                ratio(b, Some(a)),
            );
        }
    }
    let errors: u64 = pairs
        .iter()
        .map(|(_, v6)| v6.close_errors + v6.keep_alive_errors)
        .sum();
    let _ = writeln!(
        md,
        "\nOver IPv6: {errors} socket errors and non-2xx answers in (a) and (b), all systems \
         together; every 100 MiB transfer arrived whole and every first-byte request was \
         answered 200 (the bench stops at the first that is not)."
    );
}

/// The tier against one front-end: each workload's figure and ratios, the CPU of each
/// front-end, how the handoffs spread over them, and what was lost. Nothing without a
/// tier in the run.
fn tier_section(md: &mut String, plan: &Plan, summary: &[Summary]) {
    // The tier runs over IPv4 alone: it is held against IPv4's one front-end and direct.
    let over_ipv4 = |system: System| {
        summary
            .iter()
            .find(|s| s.system == system && s.family == Family::V4)
    };
    let (Some(tier), Some(one)) = (
        summary.iter().find(|s| s.system.on_tier()),
        over_ipv4(System::Baton),
    ) else {
        return;
    };
    let direct = over_ipv4(System::Direct);
    let name = tier.system.name();
    let _ = writeln!(
        md,
        "\n### {name} against one front-end\n\n\
         | workload | Baton | {name} | vs Baton | vs direct | errors, {name} |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    let whole = "0 (a failure stops the run)";
    let rows: [(&str, Figure, usize, String); 4] = [
        (
            "(a) req/s",
            |s| s.close_rps.median,
            0,
            tier.close_errors.to_string(),
        ),
        (
            "(b) req/s",
            |s| s.keep_alive_rps.median,
            0,
            tier.keep_alive_errors.to_string(),
        ),
        ("(c) Gbit/s", |s| s.large_gbit_s.median, 2, whole.into()),
        (
            "(e) ms to first byte",
            |s| s.ttfb_ms.median,
            3,
            whole.into(),
        ),
    ];
    for (workload, figure, decimals, errors) in rows {
        let _ = writeln!(
            md,
            "| {workload} | {:.decimals$} | {:.decimals$} | {} | {} | {errors} |",
            figure(one),
            figure(tier),
            ratio(figure(tier), Some(figure(one))),
            ratio(figure(tier), direct.map(figure)),
        );
    }
    let cpu_row = |workload: &str, one: Option<f64>, tier: Option<f64>| {
        let show = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        format!(
            "| {workload} | {} | {} | {} | | |\n",
            show(one),
            show(tier),
            tier.map_or_else(|| "-".into(), |t| ratio(t, one))
        )
    };
    md.push_str(&cpu_row(
        "(d) front-end CPU, µs per request, (a)",
        one.cpu_us_per_request_close.map(|c| c.total.median),
        tier.cpu_us_per_request_close.map(|c| c.total.median),
    ));
    md.push_str(&cpu_row(
        "(d) host CPU added over direct, µs per request, (a)",
        one.host_us_added_close.map(|a| a.median),
        tier.host_us_added_close.map(|a| a.median),
    ));
    let _ = writeln!(
        md,
        "\nNothing lost through {name}: {} socket errors and non-2xx answers in (a) and (b) \
         over {} round{}; each of the {} 100 MiB transfers arrived whole and each of the {} \
         first-byte requests was answered 200 (the bench stops at the first that is not).",
        tier.close_errors + tier.keep_alive_errors,
        tier.rounds,
        if tier.rounds == 1 { "" } else { "s" },
        tier.rounds as u64 * u64::from(plan.large_transfers),
        tier.rounds as u64 * u64::from(plan.ttfb_requests),
    );
    let _ = writeln!(
        md,
        "\n#### (d) {name}: CPU per front-end, and how the flows spread over them\n\n\
         | front-end | µs per request, (a) | user / sys / eBPF | µs per request, (b) | ms per GB, (c) | handoffs | share | in the kernel |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let handoffs = tier.decisions.map_or(0, |d| d.handoffs);
    let row = |label: &str,
               close: Option<CpuPer>,
               keep_alive: Option<CpuPer>,
               large: Option<CpuPer>,
               decisions: Option<Decisions>,
               of: u64| {
        let cpu = |c: Option<CpuPer>| c.map_or_else(|| "-".into(), |c| spread(c.total, 1));
        let share = |n: u64, of: u64| {
            if of == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / of as f64)
            }
        };
        format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
            cpu(close),
            close.map_or_else(
                || "-".into(),
                |c| format!("{:.1} / {:.1} / {:.1}", c.user, c.system, c.bpf)
            ),
            cpu(keep_alive),
            cpu(large),
            decisions.map_or_else(|| "-".into(), |d| d.handoffs.to_string()),
            decisions.map_or_else(|| "-".into(), |d| share(d.handoffs, of)),
            decisions.map_or_else(|| "-".into(), |d| share(d.in_kernel, d.handoffs)),
        )
    };
    for f in &tier.per_frontend {
        md.push_str(&row(
            &f.node,
            f.cpu_us_per_request_close,
            f.cpu_us_per_request_keep_alive,
            f.cpu_ms_per_gb,
            f.decisions,
            handoffs,
        ));
    }
    md.push_str(&row(
        &format!("{name}, all"),
        tier.cpu_us_per_request_close,
        tier.cpu_us_per_request_keep_alive,
        tier.cpu_ms_per_gb,
        tier.decisions,
        handoffs,
    ));
    md.push_str(&row(
        "Baton, one front-end",
        one.cpu_us_per_request_close,
        one.cpu_us_per_request_keep_alive,
        one.cpu_ms_per_gb,
        one.decisions,
        one.decisions.map_or(0, |d| d.handoffs),
    ));
    md.push_str(
        "\nEach front-end's CPU (its daemon's process time and its eBPF programs' run time in \
         its node) is divided by all the requests or bytes the tier served, so the front-ends' \
         figures add up to the tier's (medians per row, so nearly). Handoffs: each front-end's \
         `handoffs_completed` from its exit log, over every round and workload (warm-up and \
         (e) included); the share is of the tier's, as the router's ECMP hash spread the \
         flows.\n",
    );
}

/// A throughput figure of a system's summary.
type Figure = fn(&Summary) -> f64;

/// The chart's groups: its label and figure for each workload measured as a rate.
const CHARTED: [(&str, Figure); 3] = [
    ("\"(a) close, 1 KiB\"", |s| s.close_rps.median),
    ("\"(b) keep-alive, 1 KiB\"", |s| s.keep_alive_rps.median),
    ("\"(c) 100 MiB\"", |s| s.large_gbit_s.median),
];

/// `figure` of `s` over direct's over the same family, or 0 without it.
fn ratio_to_direct(summary: &[Summary], s: &Summary, figure: Figure) -> f64 {
    summary
        .iter()
        .find(|d| d.system == System::Direct && d.family == s.family)
        .map_or(0.0, |d| {
            let d = figure(d);
            if d > 0.0 { figure(s) / d } else { 0.0 }
        })
}

/// gnuplot's data: one row per workload, one column per system (and family), ratios
/// to direct. The column heads are quoted: names hold spaces, and gnuplot splits an
/// unquoted head at each.
pub fn chart_data(summary: &[Summary]) -> String {
    let mut data = String::from("workload");
    for s in summary {
        let _ = write!(data, " \"{}\"", s.label());
    }
    data.push('\n');
    for (label, figure) in CHARTED {
        data.push_str(label);
        for s in summary {
            let _ = write!(data, " {:.3}", ratio_to_direct(summary, s, figure));
        }
        data.push('\n');
    }
    data
}

/// The chart's y range: a little above the tallest bar, and never below 1.15 so that
/// direct's bars (1.0) have room above them.
fn top_of(summary: &[Summary]) -> f64 {
    let tallest = summary
        .iter()
        .flat_map(|s| CHARTED.map(|(_, figure)| ratio_to_direct(summary, s, figure)))
        .filter(|r| r.is_finite())
        .fold(1.0, f64::max);
    (tallest * 1.1).max(1.15)
}

/// Writes `bench.dat` and `bench.gp` into `dir` and runs gnuplot to draw `bench.png`.
/// Returns false (and says why) when gnuplot is missing: the tables and JSON stand
/// without the chart.
pub fn chart(dir: &Path, meta: &Meta, summary: &[Summary]) -> anyhow::Result<bool> {
    fs::write(dir.join("bench.dat"), chart_data(summary))?;
    let columns = summary.len();
    let mut plot = String::from("plot 'bench.dat' using 2:xtic(1) title columnheader(2)");
    for c in 3..=columns + 1 {
        let _ = write!(plot, ", '' using {c} title columnheader({c})");
    }
    let script = format!(
        "# Written by `baton bench`; run `gnuplot bench.gp` in this folder to redraw.\n\
         set terminal pngcairo size 900,520 font 'DejaVu Sans,11'\n\
         set output 'bench.png'\n\
         set title \"Baton bench {date}: throughput as a ratio to direct (medians)\\n{cpus} CPUs, Linux {kernel}\"\n\
         set style data histograms\n\
         set style histogram clustered gap 1\n\
         set style fill solid 0.85 border -1\n\
         set boxwidth 0.9\n\
         set yrange [0:{top:.2}]\n\
         set bmargin 4\n\
         set ylabel 'ratio to direct'\n\
         set grid ytics\n\
         set key outside right top\n\
         set datafile separator whitespace\n\
         {plot}\n",
        date = meta.date,
        cpus = meta.cpus,
        kernel = meta.kernel,
        top = top_of(summary),
    );
    fs::write(dir.join("bench.gp"), script)?;
    match Command::new("gnuplot")
        .arg("bench.gp")
        .current_dir(dir)
        .output()
    {
        Err(_) => {
            eprintln!("bench: no gnuplot (scripts/setup installs gnuplot-nox): no bench.png");
            Ok(false)
        }
        Ok(out) if !out.status.success() => Err(anyhow::anyhow!(
            "gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
        .context("drawing bench.png"),
        Ok(_) => Ok(true),
    }
}

/// The UTC date and time of `unix` seconds, ISO 8601 to the minute.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(system: System, round: u32, rps: f64, cpu_s: Option<f64>) -> Sample {
        let wrk = WrkReport {
            requests: (rps * 10.0) as u64,
            per_second: rps,
            p50_ms: 1.0,
            p99_ms: 5.0,
            ..WrkReport::default()
        };
        let cpu = cpu_s.map(|s| Cpu {
            process_s: s,
            user_s: s / 2.0,
            system_s: s / 2.0,
            ..Cpu::default()
        });
        Sample {
            system,
            family: Family::V4,
            round,
            close: wrk.clone(),
            close_cpu: cpu,
            close_host: None,
            close_frames: Frames {
                lan: 16 * wrk.requests,
                client_link: 9 * wrk.requests,
            },
            keep_alive: wrk,
            keep_alive_cpu: cpu,
            keep_alive_host: None,
            large: Large {
                transfers: 2,
                bytes: 2 * 104_857_600,
                seconds: rps / 1000.0,
            },
            large_cpu: cpu,
            ttfb_ms: 1000.0 / rps,
            decisions: None,
            close_cpu_per_frontend: Vec::new(),
            keep_alive_cpu_per_frontend: Vec::new(),
            large_cpu_per_frontend: Vec::new(),
            decisions_per_frontend: Vec::new(),
        }
    }

    /// A tier's sample: `cpu_s` per front-end, `handoffs` each.
    fn tier_sample(round: u32, rps: f64, cpu_s: [f64; 2], handoffs: [u64; 2]) -> Sample {
        let mut x = sample(System::BatonTier(2), round, rps, None);
        let each: Vec<Cpu> = cpu_s
            .iter()
            .map(|&s| Cpu {
                process_s: s * 0.75,
                user_s: s / 2.0,
                system_s: s / 4.0,
                bpf_s: s / 4.0,
                bpf_runs: 1,
            })
            .collect();
        let all = each.iter().copied().reduce(|a, b| a + b);
        x.close_cpu = all;
        x.keep_alive_cpu = all;
        x.large_cpu = all;
        x.close_cpu_per_frontend = each.clone();
        x.keep_alive_cpu_per_frontend = each.clone();
        x.large_cpu_per_frontend = each;
        x.decisions_per_frontend = handoffs
            .iter()
            .map(|&h| Decisions {
                handoffs: h,
                in_kernel: h,
            })
            .collect();
        x.decisions = x
            .decisions_per_frontend
            .iter()
            .copied()
            .reduce(|a, b| a + b);
        x
    }

    #[test]
    fn a_tier_is_held_against_one_front_end_and_split_per_front_end() {
        let mut one = sample(System::Baton, 1, 1800.0, Some(0.36));
        one.decisions = Some(Decisions {
            handoffs: 1000,
            in_kernel: 1000,
        });
        let mut tier = tier_sample(1, 1620.0, [0.1, 0.3], [300, 700]);
        tier.close.socket_errors = 2;
        let samples = vec![sample(System::Direct, 1, 2000.0, None), one, tier];
        let summary = summarize(&samples);
        let t = &summary[2];
        assert_eq!(t.per_frontend.len(), 2);
        // fe2's 0.3 s over the tier's 16,200 requests, not over its own share.
        let fe2 = t.per_frontend[1].cpu_us_per_request_close.unwrap();
        assert!((fe2.total.median - 0.3 / 16_200.0 * 1e6).abs() < 1e-9);
        let meta = Meta {
            tier_lab: Some("baton-bench-tier".into()),
            ..Meta::default()
        };
        let plan = Plan {
            frontends: 2,
            ..Plan::quick()
        };
        let md = markdown(&meta, &plan, &summary);
        assert!(
            md.contains("Baton x2: Baton through a tier of 2 front-ends"),
            "{md}"
        );
        assert!(md.contains("on a second lab, `baton-bench-tier`"), "{md}");
        // The usual tables carry the tier as a system of its own.
        assert!(md.contains("| Baton x2 | 1620 | 0.81 |"), "{md}");
        assert!(md.contains("### Baton x2 against one front-end"), "{md}");
        assert!(
            md.contains("| (a) req/s | 1800 | 1620 | 0.90 | 0.81 | 2 |"),
            "ratios to one front-end and to direct, the tier's errors: {md}"
        );
        assert!(
            md.contains("Nothing lost through Baton x2: 2 socket errors"),
            "{md}"
        );
        assert!(
            md.contains("| fe1 | 6.2 | 3.1 / 1.5 / 1.5 |"),
            "fe1's 0.1 s over 16,200 requests: {md}"
        );
        assert!(md.contains("| 300 | 30.0% | 100.0% |"), "fe1's share: {md}");
        assert!(md.contains("| 700 | 70.0% | 100.0% |"), "fe2's share: {md}");
        assert!(
            md.contains("| Baton x2, all | 24.7 |"),
            "the front-ends together: {md}"
        );
        assert!(
            md.contains("| Baton, one front-end | 20.0 |"),
            "one front-end beside them: {md}"
        );
        let data = chart_data(&summary);
        assert!(
            data.starts_with("workload \"direct\" \"Baton\" \"Baton x2\"\n"),
            "{data}"
        );
    }

    #[test]
    fn without_a_tier_the_report_has_no_tier_section() {
        let samples = vec![
            sample(System::Direct, 1, 2000.0, None),
            sample(System::Baton, 1, 1800.0, Some(0.36)),
        ];
        let summary = summarize(&samples);
        assert!(summary.iter().all(|s| s.per_frontend.is_empty()));
        let md = markdown(&Meta::default(), &Plan::quick(), &summary);
        assert!(!md.contains("against one front-end"), "{md}");
        assert!(!md.contains("a tier of"), "{md}");
        // Nor, over IPv4 alone, anything of IPv6.
        assert!(!md.contains("IPv6"), "{md}");
        let json = serde_json::to_string(&Report {
            meta: &Meta::default(),
            plan: &Plan::quick(),
            summary: &summary,
            samples: &samples,
        })
        .unwrap();
        for absent in ["per_frontend", "tier_lab", "\"frontends\""] {
            assert!(!json.contains(absent), "{absent} in {json}");
        }
    }

    /// `sample` over `family`, with the host busy `host_us` per request of (a).
    fn sample_over(system: System, family: Family, rps: f64, host_us: f64) -> Sample {
        let mut x = sample(system, 1, rps, (system != System::Direct).then_some(0.36));
        x.family = family;
        x.close_host = Some(HostCpu {
            busy_s: host_us * x.close.requests as f64 / 1e6,
            busy_share: 0.95,
        });
        x
    }

    #[test]
    fn over_both_families_each_is_held_against_its_own_direct_and_ipv6_beside_ipv4() {
        // In the order a round runs them: each system over IPv4, then over IPv6.
        let samples = vec![
            sample_over(System::Direct, Family::V4, 2000.0, 190.0),
            sample_over(System::Direct, Family::V6, 1000.0, 250.0),
            sample_over(System::Baton, Family::V4, 1800.0, 200.0),
            sample_over(System::Baton, Family::V6, 900.0, 300.0),
        ];
        let summary = summarize(&samples);
        let order: Vec<String> = summary.iter().map(Summary::label).collect();
        assert_eq!(
            order,
            ["direct", "Baton", "direct, IPv6", "Baton, IPv6"],
            "IPv4's rows, then IPv6's"
        );
        // What IPv6's Baton adds is over IPv6's direct in the same round: 300 - 250.
        let added = summary[3].host_us_added_close.unwrap().median;
        assert!((added - 50.0).abs() < 1e-6, "{added}");
        let plan = Plan {
            families: vec![Family::V4, Family::V6],
            ..Plan::quick()
        };
        let md = markdown(&Meta::default(), &plan, &summary);
        assert!(md.contains("over IPv4 and IPv6"), "{md}");
        assert!(md.contains("| Baton | 1800 | 0.90 |"), "{md}");
        assert!(
            md.contains("| Baton, IPv6 | 900 | 0.90 |"),
            "ratio to IPv6's direct: {md}"
        );
        assert!(md.contains("| direct, IPv6 | no front-end |"), "{md}");
        assert!(md.contains("### IPv6 beside IPv4"), "{md}");
        assert!(
            md.contains("| (a) req/s | direct | 2000 | 1.00 | 1000 | 1.00 | 0.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| (a) req/s | Baton | 1800 | 0.90 | 900 | 0.90 | 0.50 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| (d) host CPU added over direct, µs per request, (a) | Baton | 10.0 | - | 50.0 | - | 5.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("Over IPv6: 0 socket errors"), "{md}");
        let data = chart_data(&summary);
        assert!(
            data.starts_with("workload \"direct\" \"Baton\" \"direct, IPv6\" \"Baton, IPv6\"\n"),
            "{data}"
        );
        assert!(
            data.contains("\"(a) close, 1 KiB\" 1.000 0.900 1.000 0.900\n"),
            "{data}"
        );
        let json = serde_json::to_string(&summary[3]).unwrap();
        assert!(json.contains("\"family\":\"v6\""), "{json}");
    }

    #[test]
    fn medians_and_ratios() {
        let samples = vec![
            sample(System::Direct, 1, 1000.0, None),
            sample(System::Direct, 2, 3000.0, None),
            sample(System::Direct, 3, 2000.0, None),
            sample(System::Baton, 1, 1800.0, Some(0.5)),
            sample(System::Baton, 2, 1700.0, Some(0.5)),
            sample(System::Baton, 3, 1900.0, Some(0.5)),
        ];
        let summary = summarize(&samples);
        assert_eq!(summary.len(), 2, "no HAProxy samples, no HAProxy row");
        let baton = &summary[1];
        assert_eq!(baton.close_rps.median, 1800.0);
        assert_eq!((baton.close_rps.min, baton.close_rps.max), (1700.0, 1900.0));
        // 0.5 s over 18000 requests.
        let cpu = baton.cpu_us_per_request_close.unwrap();
        assert!((cpu.total.median - 0.5 / 18_000.0 * 1e6).abs() < 1e-9);
        assert!(summary[0].cpu_us_per_request_close.is_none());
        let md = markdown(&Meta::default(), &Plan::quick(), &summary);
        assert!(md.contains("| Baton | 1800 (1700–1900) | 0.90 |"), "{md}");
        assert!(md.contains("| direct | no front-end |"));
        assert!(
            md.contains("| Baton | 16.0 | 9.0 |"),
            "frames per request: {md}"
        );
        let data = chart_data(&summary);
        assert!(
            data.starts_with("workload \"direct\" \"Baton\"\n"),
            "{data}"
        );
        assert!(
            data.contains("\"(b) keep-alive, 1 KiB\" 1.000 0.900\n"),
            "{data}"
        );
    }

    #[test]
    fn host_cpu_per_request_is_busy_time_over_requests() {
        let mut samples = vec![
            sample(System::Direct, 1, 1000.0, None),
            sample(System::Baton, 1, 500.0, Some(0.5)),
        ];
        // 10,000 and 5,000 requests; the host busy 1.9 s and 1.8 s of 2 s.
        samples[0].close_host = Some(HostCpu {
            busy_s: 1.9,
            busy_share: 0.95,
        });
        samples[1].close_host = Some(HostCpu {
            busy_s: 1.8,
            busy_share: 0.9,
        });
        let summary = summarize(&samples);
        let direct = summary[0].host_us_per_request_close.unwrap();
        let baton = summary[1].host_us_per_request_close.unwrap();
        assert!((direct.median - 190.0).abs() < 1e-9);
        assert!((baton.median - 360.0).abs() < 1e-9);
        // What Baton adds: its 360 µs less direct's 190 in the same round.
        let added = summary[1].host_us_added_close.unwrap();
        assert!((added.median - 170.0).abs() < 1e-9);
        assert!(
            summary[0].host_us_added_close.is_none(),
            "direct adds nothing"
        );
        assert!(
            summary[1].host_us_per_request_keep_alive.is_none(),
            "not measured"
        );
        let md = markdown(&Meta::default(), &Plan::quick(), &summary);
        assert!(md.contains("| 0 | 190.0 | 95% |"), "{md}");
        assert!(md.contains("| 0 | 360.0 | 90% |"), "{md}");
        assert!(
            md.contains("| - | 170.0 | - |"),
            "(d) added over direct: {md}"
        );
        assert!(
            md.contains("| 0 | - | - |"),
            "(b) without host figures: {md}"
        );
    }

    #[test]
    fn large_transfer_rate() {
        let l = Large {
            transfers: 1,
            bytes: 125_000_000,
            seconds: 1.0,
        };
        assert!((l.gbit_s() - 1.0).abs() < 1e-12);
        assert_eq!(Large::default().gbit_s(), 0.0);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_807_501), "2026-11-27 19:25 UTC");
    }
}
