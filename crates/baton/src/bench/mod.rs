//! `baton bench`: Baton against direct and HAProxy, on one lab, in one run
//! (docs/design.md, "Measuring"; docs/benchmarks.md says how to read the results).
//!
//! The command brings up a lab of its own (`baton-bench`, or `BATON_LAB`), then runs
//! rounds; each round measures the three systems one after the other (direct, HAProxy,
//! Baton), each started before and stopped completely after its turn, so that slow
//! drifts of the machine spread over all three. Every system gets the same workloads
//! from the same client tools on `client`, against the same nginx back-ends:
//!
//! - (a) a new connection per request, 1 KiB (`wrk -H 'Connection: close'`);
//! - (b) keep-alive, 1 KiB (`wrk`);
//! - (c) 100 MiB objects (`curl`, sequential transfers);
//! - (d) the front-end's CPU time during (a), (b) and (c): the process's user and
//!   system time from `/proc/PID/stat`, plus the run time of the eBPF programs attached
//!   in `fe` (kernel statistics, enabled for the run through `BPF_ENABLE_STATS`);
//! - (e) time to first byte, from sequential `curl` requests on new connections.
//!
//! Results are medians over the rounds: markdown tables on standard output and in
//! `results.md`, `results.json`, and `bench.png` (gnuplot) in the output folder. The lab
//! is taken down at the end, after an error, and after Ctrl-C or SIGTERM.
//!
//! With `--frontends N` (2 to 4) each round also measures "Baton xN": the same Baton
//! through a tier of N front-ends, each announcing the VIP over BGP to the router, which
//! spreads flows over them by ECMP. The tier needs a lab of its own (`fe1` .. `feN`,
//! BIRD on the router and on each front-end), so the run brings up a second lab beside
//! the first, `<lab>-tier`, for that system alone; the workloads, tools and back-ends
//! are the same, and direct's figures from the first lab are the ratios' base
//! (docs/benchmarks.md, "Method"). The report adds the tier against one front-end, its
//! CPU per front-end, and how its handoffs spread over the front-ends.
//!
//! With `--family v4,v6` every system but the tier also runs over IPv6, in the same
//! round, right after its IPv4 turn: the lab comes up with `--ipv6` (2001:2::/48 beside
//! 198.18.0.0/15), the client sends to the VIP's or `be2`'s IPv6 address, HAProxy binds
//! the VIP's IPv6 address and opens IPv6 connections to the back-ends' IPv6 addresses,
//! and Baton serves `vip6` with each pool's IPv6 twins (the configuration `baton lab up
//! --ipv6 --cluster` writes). Ratios are to direct over the same family, and the report
//! holds each system's IPv6 figures against its IPv4 ones. The tier's BGP carries IPv4
//! only, so "Baton xN" runs over IPv4 alone.
//!
//! Direct goes to `be2` while the balancers send the measured path to `be1`: a client
//! that reaches one back-end both directly and through the VIP reuses ports on the same
//! back-end 4-tuples with timestamps from two different clocks (Linux offsets TSval per
//! address pair), and the back-end's TIME-WAIT sockets refuse such SYNs at random.
//! `be1` and `be2` run the same nginx on the same files.

pub mod measure;
pub mod report;
pub mod systems;

use std::{
    io::Read as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::lab::{self, Lab, Node, ServerKind};
use measure::{CURL_WRITE_OUT, ProcessTicks, ProgRunTime};
use report::{Cpu, HostCpu, Large, Meta, Report, Sample};
use systems::{Files, Running, System};

/// The bench's lab name when `BATON_LAB` is unset.
pub const DEFAULT_LAB: &str = "baton-bench";
/// The 1 KiB object of workloads (a), (b) and (e), and the 100 MiB one of (c).
const SMALL: &str = "/files/1K.bin";
const LARGE: &str = "/files/100M.bin";
const LARGE_BYTES: u64 = 100 << 20;
/// curl's flags on every call: silent but for errors, and no URL globbing (`-g`), so
/// that an IPv6 host's brackets are an address, not a character range.
const CURL_FLAGS: &str = "-sSg";

/// What a run does.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub rounds: u32,
    /// Length of each wrk workload.
    pub duration_s: u64,
    /// wrk's threads (one per core) and connections.
    pub threads: usize,
    pub connections: u32,
    /// Unmeasured keep-alive load before each system's workloads.
    pub warm_up_s: u64,
    pub large_transfers: u32,
    pub ttfb_requests: u32,
    /// HAProxy's `http-reuse` settings, each measured as a system of its own in every
    /// round: `always` (its fastest here) keeps back-end connections open across client
    /// connections, which a handoff cannot; `never` opens one per client connection, as
    /// Baton does (`--haproxy-http-reuse`; both by default, so that one run compares
    /// Baton's cost per connection with the like-for-like proxy and its latency with
    /// the fastest).
    pub haproxy_http_reuse: Vec<HttpReuse>,
    /// Baton's `[tcp]` settings beyond the defaults, as `key = value` lines
    /// (`--baton-tcp`), e.g. `syns_in_xdp = true`: how a setting's cost is measured
    /// against the same run's peers.
    pub baton_tcp: Vec<String>,
    /// Front-ends of the tier measured beside the single one (`--frontends`): 1 runs no
    /// tier; 2 to 4 add the system "Baton xN" on a lab of its own.
    #[serde(skip_serializing_if = "one_frontend")]
    pub frontends: u8,
    /// The address families every system is measured over (`--family`), in the order
    /// each system's turns run them: IPv4 alone by default.
    pub families: Vec<Family>,
}

fn one_frontend(n: &u8) -> bool {
    *n == 1
}

/// `--frontends`: 1 (no tier, the default) up to the lab's largest tier.
pub fn check_frontends(n: u8) -> anyhow::Result<u8> {
    if !(1..=lab::MAX_FRONTENDS).contains(&n) {
        bail!(
            "--frontends must be between 1 and {} (1: the single front-end alone; 2 to {}: also Baton through a tier of that many), not {n}",
            lab::MAX_FRONTENDS,
            lab::MAX_FRONTENDS
        );
    }
    Ok(n)
}

/// The tier's lab beside the bench's lab `name`.
pub fn tier_lab_name(name: &str) -> String {
    format!("{name}-tier")
}

/// HAProxy's `http-reuse` setting for the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HttpReuse {
    Always,
    Never,
}

impl HttpReuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// An address family the bench measures every system over (`--family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// `addr` as the host of a URL: an IPv6 address in brackets (RFC 3986 §3.2.2).
    pub fn url_host(addr: IpAddr) -> String {
        match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }
}

impl Plan {
    /// The full run: about 20 s of wrk per system and round.
    pub fn full() -> Self {
        Self {
            rounds: 3,
            duration_s: 10,
            threads: cores(),
            connections: 32,
            warm_up_s: 2,
            large_transfers: 5,
            ttfb_requests: 200,
            haproxy_http_reuse: vec![HttpReuse::Always, HttpReuse::Never],
            baton_tcp: Vec::new(),
            frontends: 1,
            families: vec![Family::V4],
        }
    }

    /// A smoke run for development and CI: one short round, under two minutes in all.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            duration_s: 3,
            warm_up_s: 1,
            large_transfers: 2,
            ttfb_requests: 50,
            ..Self::full()
        }
    }
}

fn cores() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs the benchmark and writes its outputs into `out`.
pub fn run(plan: &Plan, quick: bool, out: &Path) -> anyhow::Result<()> {
    lab::require_root()?;
    for (tool, package) in [
        ("wrk", "wrk"),
        ("curl", "curl"),
        ("haproxy", "haproxy"),
        ("bpftool", "bpftool"),
        ("nft", "nftables"),
    ] {
        if !have(tool) {
            bail!("`{tool}` not found; run scripts/setup (Debian package {package})");
        }
    }
    if plan.rounds == 0 || plan.duration_s == 0 {
        bail!("--rounds and --duration must be at least 1");
    }
    check_frontends(plan.frontends)?;
    if plan.frontends > 1 && !have("bird") {
        bail!(
            "--frontends {} needs BIRD 2 (`bird`) for the tier's BGP; run scripts/setup (Debian package bird2)",
            plan.frontends
        );
    }
    let stop = crate::signals::stop_flag()?;
    let name = std::env::var("BATON_LAB").unwrap_or_else(|_| DEFAULT_LAB.into());
    let lab = Lab::named(&name)?;
    let tier_lab = if plan.frontends > 1 {
        Some(Lab::named(&tier_lab_name(&name)).context("the tier's lab")?)
    } else {
        None
    };
    let mut log = |line: &str| eprintln!("bench: lab: {line}");
    for l in std::iter::once(&lab).chain(&tier_lab) {
        if !l.existing_namespaces().is_empty() || l.state_dir().exists() {
            if name != DEFAULT_LAB {
                bail!(
                    "lab `{0}` is up; the bench brings up its own: unset BATON_LAB or take it down (`BATON_LAB={0} baton lab down`)",
                    l.name
                );
            }
            // Remains of an interrupted bench.
            l.down(&mut log)?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let baton = std::env::current_exe().context("finding the baton binary")?;

    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut meta = machine(&name, quick, started)?;
    meta.tier_lab = tier_lab.as_ref().map(|l| l.name.clone());
    eprintln!(
        "bench: {} on {} CPUs ({:.0}% busy before start, load {}): {} round(s), {} s per wrk workload",
        meta.mode,
        meta.cpus,
        meta.busy_before_pct,
        meta.loadavg_before,
        plan.rounds,
        plan.duration_s
    );
    // Program statistics on for the whole run, for every system alike (they cost every
    // eBPF program a clock read per run); off again when the descriptor closes, even
    // if this process dies.
    let _stats = BpfStats::enable()?;

    let guard = LabDown(&lab);
    // IPv6 only when measured: off, the lab disables it in every namespace, so that
    // neighbour discovery and the like add nothing to IPv4's frame counts.
    lab.up_with(
        &lab::Setup {
            backends: systems::BACKENDS,
            frontends: 1,
            server: ServerKind::Nginx,
            cluster: false,
            ipv6: plan.families.contains(&Family::V6),
        },
        &mut log,
    )?;
    let files = Files::write(
        &lab,
        &plan.haproxy_http_reuse,
        &plan.baton_tcp,
        &plan.families,
    )?;
    systems::bridge_pass(&lab, false)?;
    for &family in &plan.families {
        crate::frontend::control::check(&files.frontend_config_over(family))
            .with_context(|| format!("the bench's front-end configuration, {}", family.name()))?;
        for &reuse in &plan.haproxy_http_reuse {
            let cfg = files.haproxy_config(reuse, family);
            crate::netns::run("haproxy", &["-c", "-q", "-f", &cfg.to_string_lossy()])
                .with_context(|| format!("the bench's HAProxy configuration, {}", family.name()))?;
        }
    }

    // The tier's lab, up beside the first for the whole run: bringing it up takes
    // seconds, and idle it costs the first lab's systems nothing but BFD's packets.
    let tier_guard = tier_lab.as_ref().map(LabDown);
    let tier_files = match &tier_lab {
        Some(tier) => {
            tier.up_with(
                &lab::Setup {
                    backends: systems::BACKENDS,
                    frontends: plan.frontends,
                    server: ServerKind::Nginx,
                    cluster: false,
                    ipv6: false,
                },
                &mut log,
            )?;
            let files = Files::write_tier(tier, plan.frontends, &plan.baton_tcp)?;
            for &node in &files.frontends {
                crate::frontend::control::check(&files.frontend_config_of(node))
                    .with_context(|| format!("the bench's configuration of {node}"))?;
            }
            Some(files)
        }
        None => None,
    };

    let bench = Bench {
        lab: &lab,
        files: &files,
        tier: tier_lab.as_ref().zip(tier_files.as_ref()),
        baton: &baton,
        plan,
        stop,
    };
    let mut samples = Vec::new();
    for round in 1..=plan.rounds {
        // Each system over each family in turn: a system's IPv6 figures are taken
        // right after its IPv4 ones, so that slow drifts of the machine touch both
        // alike.
        let turns = System::all(&plan.haproxy_http_reuse, plan.frontends)
            .into_iter()
            .flat_map(|system| {
                plan.families
                    .iter()
                    .filter(move |&&f| system.runs_over(f))
                    .map(move |&f| (system, f))
            });
        for (system, family) in turns {
            bench.check_stop()?;
            let label = report::label(system, family);
            eprintln!("bench: round {round}/{}: {label}", plan.rounds);
            let sample = bench
                .measure(system, family, round)
                .with_context(|| format!("round {round}, {label}"))?;
            eprintln!(
                "bench:   (a) {:.0} req/s p99 {:.2} ms, (b) {:.0} req/s, (c) {:.2} Gbit/s, (e) TTFB {:.3} ms",
                sample.close.per_second,
                sample.close.p99_ms,
                sample.keep_alive.per_second,
                sample.large.gbit_s(),
                sample.ttfb_ms
            );
            samples.push(sample);
        }
    }
    drop(tier_guard);
    drop(guard);
    meta.loadavg_after = loadavg();

    let summary = report::summarize(&samples);
    let md = report::markdown(&meta, plan, &summary);
    print!("{md}");
    std::fs::write(out.join("results.md"), &md)?;
    let json = serde_json::to_string_pretty(&Report {
        meta: &meta,
        plan,
        summary: &summary,
        samples: &samples,
    })?;
    std::fs::write(out.join("results.json"), json + "\n")?;
    let drawn = report::chart(out, &meta, &summary)?;
    eprintln!(
        "bench: wrote {0}/results.md, {0}/results.json{1}",
        out.display(),
        if drawn {
            format!(", {}/bench.png", out.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Takes the lab down when dropped: at the end, on an error, on a stop signal.
struct LabDown<'a>(&'a Lab);

impl Drop for LabDown<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.down(&mut |l| eprintln!("bench: lab: {l}")) {
            eprintln!(
                "bench: taking the lab down failed: {e:#}; run `BATON_LAB={} baton lab down`",
                self.0.name
            );
        }
    }
}

#[derive(Clone, Copy)]
struct Bench<'a> {
    /// The lab the system being measured runs on, and its files.
    lab: &'a Lab,
    files: &'a Files,
    /// The tier's lab and files, with `--frontends` 2 and more.
    tier: Option<(&'a Lab, &'a Files)>,
    baton: &'a Path,
    plan: &'a Plan,
    stop: &'static AtomicBool,
}

impl Bench<'_> {
    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// One system's turn in a round: start it, check it routes as configured, warm up,
    /// measure, stop it completely (also after a failure).
    fn measure(&self, system: System, family: Family, round: u32) -> anyhow::Result<Sample> {
        let on = match (system.on_tier(), self.tier) {
            (false, _) => *self,
            (true, Some((lab, files))) => Bench {
                lab,
                files,
                ..*self
            },
            (true, None) => bail!("{} without the tier's lab", system.name()),
        };
        on.run_turn(system, family, round)
    }

    fn run_turn(&self, system: System, family: Family, round: u32) -> anyhow::Result<Sample> {
        let running = Running::start(system, family, self.lab, self.files, self.baton)?;
        let result = self.workloads(&running, round);
        let stopped = running.stop(self.lab, self.files, self.baton);
        let mut sample = result?;
        let decisions = stopped?;
        sample.decisions = decisions.iter().copied().reduce(|a, b| a + b);
        if decisions.len() > 1 {
            sample.decisions_per_frontend = decisions;
        }
        Ok(sample)
    }

    fn workloads(&self, running: &Running, round: u32) -> anyhow::Result<Sample> {
        let (addr, backend) = running.system.target(running.family);
        let url_host = Family::url_host(addr);
        let small = format!("http://{url_host}{SMALL}");
        let large = format!("http://{url_host}{LARGE}");
        self.check_route(&small, backend)?;
        let p = self.plan;
        self.wrk(&small, false, p.warm_up_s)?;
        let fes: Vec<(Node, u32)> = running
            .frontends
            .iter()
            .map(|d| (d.node, d.pid()))
            .collect();

        let (before, host_before, frames_before) = (self.cpu(&fes)?, host()?, self.frames()?);
        let close = self.wrk(&small, true, p.duration_s)?;
        let close_host = host_cpu(host()?.since(host_before));
        let (close_cpu, close_cpu_per_frontend) = spent(&self.cpu(&fes)?, &before);
        let close_frames = self.frames()?.since(frames_before);
        self.check_stop()?;

        let (before, host_before) = (self.cpu(&fes)?, host()?);
        let keep_alive = self.wrk(&small, false, p.duration_s)?;
        let keep_alive_host = host_cpu(host()?.since(host_before));
        let (keep_alive_cpu, keep_alive_cpu_per_frontend) = spent(&self.cpu(&fes)?, &before);
        self.check_stop()?;

        let before = self.cpu(&fes)?;
        let large = self.large(&large)?;
        let (large_cpu, large_cpu_per_frontend) = spent(&self.cpu(&fes)?, &before);
        self.check_stop()?;

        let ttfb_ms = self.ttfb(&small)?;
        Ok(Sample {
            system: running.system,
            family: running.family,
            round,
            close,
            close_cpu,
            close_host,
            close_frames,
            keep_alive,
            keep_alive_cpu,
            keep_alive_host,
            large,
            large_cpu,
            ttfb_ms,
            decisions: None,
            close_cpu_per_frontend,
            keep_alive_cpu_per_frontend,
            large_cpu_per_frontend,
            decisions_per_frontend: Vec::new(),
        })
    }

    /// The system answers, from the back-end it should (HAProxy lower-cases header
    /// names). Retried for a few seconds: HAProxy binds a moment after it starts.
    fn check_route(&self, url: &str, backend: u8) -> anyhow::Result<()> {
        let want = format!("x-baton-backend: be{backend}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let head = self.client(
                "curl",
                &[CURL_FLAGS, "-m", "5", "-D", "-", "-o", "/dev/null", url],
                Duration::from_secs(10),
            );
            match head {
                Ok(h) if h.to_ascii_lowercase().contains(&want) => return Ok(()),
                Ok(h) if Instant::now() > deadline => {
                    bail!("{url} is not served by be{backend}:\n{h}")
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => thread::sleep(Duration::from_millis(250)),
            }
            self.check_stop()?;
        }
    }

    fn wrk(&self, url: &str, close: bool, seconds: u64) -> anyhow::Result<measure::WrkReport> {
        let (threads, connections, duration) = (
            format!("-t{}", self.plan.threads),
            format!("-c{}", self.plan.connections),
            format!("-d{seconds}s"),
        );
        let mut args = vec![
            threads.as_str(),
            connections.as_str(),
            duration.as_str(),
            "--latency",
        ];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(url);
        let output = self.client("wrk", &args, Duration::from_secs(seconds + 30))?;
        measure::parse_wrk(&output)
    }

    /// Workload (c): sequential transfers of the 100 MiB object, on one connection.
    fn large(&self, url: &str) -> anyhow::Result<Large> {
        let mut args = vec![CURL_FLAGS, "-m", "120", "-w", CURL_WRITE_OUT];
        for _ in 0..self.plan.large_transfers {
            args.extend(["-o", "/dev/null", url]);
        }
        let timeout = Duration::from_secs(120 * u64::from(self.plan.large_transfers) + 10);
        let transfers = measure::parse_curl(&self.client("curl", &args, timeout)?)?;
        let mut large = Large::default();
        for t in &transfers {
            if t.status != 200 || t.bytes != LARGE_BYTES {
                bail!(
                    "{url}: status {} with {} bytes, not 200 with {LARGE_BYTES}",
                    t.status,
                    t.bytes
                );
            }
            large.transfers += 1;
            large.bytes += t.bytes;
            large.seconds += t.total_s;
        }
        Ok(large)
    }

    /// Workload (e): the median time to first byte over sequential requests, each on a
    /// new connection (`Connection: close`), so that each pays the handshake and, through
    /// a balancer, its connection set-up and choice of back-end.
    fn ttfb(&self, url: &str) -> anyhow::Result<f64> {
        let mut args = vec![
            CURL_FLAGS,
            "-m",
            "10",
            "-H",
            "Connection: close",
            "-w",
            CURL_WRITE_OUT,
        ];
        for _ in 0..self.plan.ttfb_requests {
            args.extend(["-o", "/dev/null", url]);
        }
        let timeout = Duration::from_secs(u64::from(self.plan.ttfb_requests) + 30);
        let transfers = measure::parse_curl(&self.client("curl", &args, timeout)?)?;
        if let Some(bad) = transfers.iter().find(|t| t.status != 200) {
            bail!("{url}: a request got status {}", bad.status);
        }
        let times: Vec<f64> = transfers.iter().map(|t| t.first_byte_s * 1000.0).collect();
        measure::median(&times).context("curl reported no transfer")
    }

    /// Runs a client tool on `client` and returns its standard output; stops it (and
    /// fails) on a stop signal or after `timeout`.
    fn client(&self, program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.lab.namespace(Node::Client), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program} on client"))?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            let interrupted = self.stop.load(Ordering::Relaxed);
            if interrupted || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{program} {}",
                    if interrupted {
                        "interrupted"
                    } else {
                        "timed out"
                    }
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        if !status.success() {
            bail!("{program} {} failed ({status}): {out}{err}", args.join(" "));
        }
        Ok(out)
    }

    /// Frames sent so far on the lab's LAN (out of the bridge's ports) and on the
    /// client's link (by the client and by the router towards it).
    fn frames(&self) -> anyhow::Result<report::Frames> {
        let tx = |node: Node| -> anyhow::Result<u64> {
            measure::parse_tx_packets(&systems::output_in(
                self.lab,
                node,
                Path::new("ip"),
                &["-j", "-s", "-d", "link", "show"],
            )?)
        };
        let client = tx(Node::Client)?;
        // The router's side of the client's link: the only interface of the router's
        // that faces the client (its other one is a port on the LAN).
        let router = measure::parse_tx_packets(&systems::output_in(
            self.lab,
            Node::Router,
            Path::new("ip"),
            &[
                "-j",
                "-s",
                "-d",
                "link",
                "show",
                "dev",
                lab::ROUTER_CLIENT_LINK,
            ],
        )?)?;
        Ok(report::Frames {
            lan: tx(Node::Lan)?,
            client_link: client + router,
        })
    }

    /// Each front-end's CPU so far (none for direct).
    fn cpu(&self, frontends: &[(Node, u32)]) -> anyhow::Result<Vec<CpuNow>> {
        frontends
            .iter()
            .map(|&(node, pid)| self.cpu_of(node, pid))
            .collect()
    }

    /// A front-end's CPU so far: its process's ticks and its programs' run time in its
    /// node.
    fn cpu_of(&self, node: Node, pid: u32) -> anyhow::Result<CpuNow> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("front-end process {pid} is gone"))?;
        let ticks = measure::parse_proc_stat(&stat)?;
        let mut run_ns = 0;
        let tasks = format!("/proc/{pid}/task");
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            // A thread may end between the listing and the read: it no longer counts.
            if let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) {
                run_ns += measure::parse_schedstat(&text)?;
            }
        }
        let net = systems::output_in(self.lab, node, Path::new("bpftool"), &["-j", "net", "show"])?;
        let mut bpf = ProgRunTime::default();
        for id in measure::parse_net_show(&net)? {
            let out = Command::new("bpftool")
                .args(["-j", "prog", "show", "id", &id.to_string()])
                .output()
                .context("running bpftool")?;
            let prog = measure::parse_prog_show(&String::from_utf8_lossy(&out.stdout))?;
            bpf.run_time_ns += prog.run_time_ns;
            bpf.run_cnt += prog.run_cnt;
        }
        Ok(CpuNow {
            present: true,
            ticks,
            run_ns,
            bpf,
        })
    }
}

/// The host's CPU counters now.
fn host() -> anyhow::Result<measure::HostTicks> {
    measure::parse_host_stat(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

/// Ticks spent over a run, in seconds and as a share; `None` if no time passed.
fn host_cpu(spent: measure::HostTicks) -> Option<HostCpu> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if spent.total == 0 || hz <= 0 {
        return None;
    }
    Some(HostCpu {
        busy_s: spent.busy as f64 / hz as f64,
        busy_share: spent.busy as f64 / spent.total as f64,
    })
}

/// What the front-ends spent between two readings: in all, and each when there are
/// several (a tier).
fn spent(after: &[CpuNow], before: &[CpuNow]) -> (Option<Cpu>, Vec<Cpu>) {
    let each: Vec<Cpu> = after
        .iter()
        .zip(before)
        .filter_map(|(a, b)| a.since(*b))
        .collect();
    let all = each.iter().copied().reduce(|a, b| a + b);
    (all, if each.len() > 1 { each } else { Vec::new() })
}

/// A reading of a front-end's CPU counters.
#[derive(Clone, Copy, Default)]
struct CpuNow {
    present: bool,
    ticks: ProcessTicks,
    /// The sum of the threads' run times, in nanoseconds.
    run_ns: u64,
    bpf: ProgRunTime,
}

impl CpuNow {
    /// What was spent since `before`; `None` without a front-end.
    fn since(self, before: CpuNow) -> Option<Cpu> {
        if !self.present || !before.present {
            return None;
        }
        let process_s = self.run_ns.saturating_sub(before.run_ns) as f64 / 1e9;
        let user = self.ticks.user.saturating_sub(before.ticks.user) as f64;
        let system = self.ticks.system.saturating_sub(before.ticks.system) as f64;
        let user_share = if user + system > 0.0 {
            user / (user + system)
        } else {
            0.5
        };
        Some(Cpu {
            process_s,
            user_s: process_s * user_share,
            system_s: process_s * (1.0 - user_share),
            bpf_s: self.bpf.run_time_ns.saturating_sub(before.bpf.run_time_ns) as f64 / 1e9,
            bpf_runs: self.bpf.run_cnt.saturating_sub(before.bpf.run_cnt),
        })
    }
}

/// eBPF run-time statistics, on while this holds the descriptor `BPF_ENABLE_STATS`
/// returned (bpf(2); the kernel counts holders, and `kernel.bpf_stats_enabled` is one).
struct BpfStats {
    _fd: std::os::fd::OwnedFd,
}

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr's `enable_stats`: { __u32 type; }, BPF_STATS_RUN_TIME = 0.
        let attr = [0u32; 2];
        // SAFETY: a valid bpf_attr of the given size, which the kernel only reads.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("bpf(BPF_ENABLE_STATS): eBPF run-time statistics");
        }
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        Ok(Self {
            _fd: unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
            },
        })
    }
}

/// What the report says about the machine, read before the lab comes up.
fn machine(lab: &str, quick: bool, started: u64) -> anyhow::Result<Meta> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let busy = |stat: &str| -> (u64, u64) {
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        (total, idle)
    };
    let loadavg_before = loadavg();
    let (t0, i0) = busy(&read("/proc/stat"));
    thread::sleep(Duration::from_secs(1));
    let (t1, i1) = busy(&read("/proc/stat"));
    let busy_before_pct = if t1 > t0 {
        100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64)
    } else {
        0.0
    };
    let version = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| format!("{program}: not found"))
    };
    Ok(Meta {
        date: report::utc(started),
        cpu,
        cpus: cores(),
        memory_gib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        busy_before_pct,
        loadavg_before,
        loadavg_after: String::new(),
        versions: vec![
            version("haproxy", &["-v"]),
            version("nginx", &["-v"]),
            version("wrk", &["-v"]),
            version("curl", &["--version"]),
            format!("baton {}", env!("CARGO_PKG_VERSION")),
        ],
        lab: lab.into(),
        tier_lab: None,
        mode: if quick { "quick".into() } else { "full".into() },
    })
}

/// The 1, 5 and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|dir| dir.join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontends_are_one_to_the_labs_largest_tier() {
        for n in 1..=lab::MAX_FRONTENDS {
            assert_eq!(check_frontends(n).unwrap(), n);
        }
        for n in [0, lab::MAX_FRONTENDS + 1] {
            let e = check_frontends(n).unwrap_err().to_string();
            assert!(
                e.contains("--frontends must be between 1 and 4")
                    && e.contains(&format!("not {n}")),
                "{e}"
            );
        }
        assert_eq!(Plan::full().frontends, 1, "no tier unless asked");
        // The tier's lab name stays within a lab name's 24 characters.
        Lab::named(&tier_lab_name(DEFAULT_LAB)).unwrap();
    }
}
