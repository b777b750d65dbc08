//! `baton`: the command-line entry point. Parses arguments and hands off to the library.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use baton::{
    counter::TrafficCounter,
    lab::{self, Lab, ServerKind},
    static_server,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Content-aware TCP-handoff load balancer for Linux web clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The front-end daemon (slow path): answers clients on the VIP, reads each request,
    /// hands the connection to a back-end. Runs in the foreground until SIGTERM/SIGINT.
    Frontend {
        /// TOML configuration (see examples/frontend-lab.toml).
        #[arg(long)]
        config: PathBuf,
        /// Remove what a stopped daemon leaves in place for its successor (the fast
        /// path's pinned program, link and flow table, and the nftables table) and exit.
        #[arg(long)]
        detach: bool,
        /// Upgrade in place: load and verify this build's eBPF program while the
        /// running daemon serves, then send it SIGTERM, wait for its drain and exit
        /// (the configuration's drain plus 10 s at most), and take over its flows. If the
        /// program does not load, or the running daemon does not exit in time, it exits
        /// with 1 and the running daemon keeps serving. Without it, a start beside a
        /// running daemon is refused.
        #[arg(long, conflicts_with = "detach")]
        take_over: bool,
    },
    /// Check a front-end configuration file as `baton frontend` would read it: prints OK
    /// and what it holds (rules, pools, back-ends, health checks), or the error with its
    /// line and field (exit code 1).
    Check {
        /// The front-end's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Make the running front-end reload its configuration (SIGHUP): checks FILE, then
    /// signals every `baton frontend --config FILE` (same file, found in /proc). New
    /// rules, pools, health checks and 503 body apply to new connections; established
    /// ones are untouched. Exit code 1 if FILE is invalid or no daemon uses it.
    Reload {
        /// The configuration file the daemon was started with, edited.
        #[arg(long)]
        config: PathBuf,
        /// Signal this process instead of looking for daemons by their --config.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// What the running front-end is doing: service, back-ends with health, weight and
    /// active connections, flow table, key counters. Read from its metrics endpoint (the
    /// configuration's `metrics` key); exit code 1 if it cannot be reached.
    Status {
        /// The front-end's configuration file (for its `metrics` address).
        #[arg(long, required_unless_present = "metrics")]
        config: Option<PathBuf>,
        /// The metrics address instead, such as 127.0.0.1:9180.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The back-end agent: attaches the back-end module to the LAN interface (pinned, so
    /// it outlives the agent), then garbage-collects its flow table until SIGTERM/SIGINT.
    Backend {
        /// TOML configuration (see examples/backend-lab.toml).
        #[arg(long)]
        config: PathBuf,
        /// Remove the module (programs, links and maps) from the interface and exit.
        #[arg(long)]
        detach: bool,
    },
    /// The network-namespace lab: client, router, LAN bridge, front-end and back-ends.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Benchmark Baton against direct and HAProxy on a lab of its own, in one run:
    /// markdown tables on standard output, results.md, results.json and bench.png in
    /// --out. Root only; takes the lab down at the end (docs/benchmarks.md).
    Bench {
        /// A smoke run (one short round, under two minutes), for development and CI.
        #[arg(long)]
        quick: bool,
        /// Rounds of direct, HAProxy, Baton (default 3; 1 with --quick).
        #[arg(long)]
        rounds: Option<u32>,
        /// Seconds of each wrk workload (default 10; 3 with --quick).
        #[arg(long)]
        duration: Option<u64>,
        /// Where the results go.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// HAProxy's `http-reuse`, one or both (comma-separated), each measured as a
        /// system of its own: `always` keeps its back-end connections open across client
        /// connections (its fastest); `never` opens one per client connection, as a
        /// handoff does.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "always,never"
        )]
        haproxy_http_reuse: Vec<baton::bench::HttpReuse>,
        /// A `[tcp]` setting for Baton's front-end, `key=value` (repeatable), e.g.
        /// `--baton-tcp syns_in_xdp=true`; checked like any configuration.
        #[arg(long = "baton-tcp", value_name = "KEY=VALUE")]
        baton_tcp: Vec<String>,
        /// Also measure Baton through a tier of this many front-ends (2 to 4) behind BGP
        /// and ECMP, on a second lab, as the system "Baton xN"; 1 (the default) runs the
        /// single front-end alone.
        #[arg(long, default_value_t = 1)]
        frontends: u8,
        /// The address families every system is measured over, one or both
        /// (comma-separated): `v4,v6` brings the lab up with IPv6 too and runs each
        /// system over IPv6 right after IPv4 (the tier over IPv4 alone).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "v4")]
        family: Vec<baton::bench::Family>,
    },
    /// Count packets and bytes on an interface with an eBPF tc program until Ctrl-C,
    /// SIGTERM or --seconds, then print the totals.
    Counter {
        /// Interface in this network namespace (use `baton lab exec NODE -- baton counter IFACE`).
        iface: String,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// Also print running totals every this many seconds.
        #[arg(long)]
        interval: Option<u64>,
        /// One JSON object per line: an `attached` event, then the totals.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Create the namespaces, links and addresses, and start a web server on each back-end.
    Up {
        /// Number of back-ends, 1 to 32.
        #[arg(long, default_value_t = lab::DEFAULT_BACKENDS)]
        backends: u8,
        /// Web server on the back-ends.
        #[arg(long, value_enum, default_value_t = ServerKind::Auto)]
        server: ServerKind,
        /// Number of front-ends, 1 to 4: one is `fe`; more are `fe1`..`feN`, each
        /// announcing the VIP to the router over BGP (BIRD), which spreads connections
        /// over them by ECMP.
        #[arg(long, default_value_t = lab::DEFAULT_FRONTENDS)]
        frontends: u8,
        /// Also start the cluster: the back-end agent on every back-end and the front-end
        /// daemon on every front-end, with configurations made for the lab.
        #[arg(long)]
        cluster: bool,
        /// Give every node its IPv6 address (2001:2::/48) beside its IPv4 one; without
        /// it IPv6 is off in the lab, so that packet counts are IPv4's alone. One
        /// front-end only, and nginx back-ends.
        #[arg(long)]
        ipv6: bool,
    },
    /// Remove every namespace, process and file of the lab (also after a crash).
    Down,
    /// Show the lab's nodes, addresses and processes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the addressing plan.
    Plan {
        #[arg(long, default_value_t = lab::DEFAULT_BACKENDS)]
        backends: u8,
        #[arg(long, default_value_t = lab::DEFAULT_FRONTENDS)]
        frontends: u8,
    },
    /// Make every back-end's nginx also serve TLS on port 443, HTTP/2 and HTTP/1.1: by
    /// default each with its own certificate (CN=beK; names beK, its address,
    /// baton.test, *.baton.test and every --name) signed by the lab's CA
    /// (/run/<lab>-lab/tls/ca.pem, for `curl --cacert`); with --cert and --key, that
    /// one certificate on every back-end.
    Tls {
        /// A further name for every back-end's certificate (repeatable), such as an SNI
        /// name outside baton.test that the rules route on.
        #[arg(long = "name", value_name = "NAME", conflicts_with = "cert")]
        names: Vec<String>,
        /// One certificate chain (PEM) for every back-end instead.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Its key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Run a command inside a node's network namespace.
    Exec {
        /// client, router, lan, fe or be1..beN.
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The built-in static server that `lab up --server builtin` runs on each back-end.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "0.0.0.0:80")]
        listen: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Lab(cmd) => run_lab(cmd),
        Command::Backend { config, detach } => baton::backend::run(&config, detach),
        Command::Frontend {
            config,
            detach,
            take_over,
        } => baton::frontend::run(&config, detach, take_over),
        Command::Check { config } => {
            print!("{}", baton::frontend::control::check(&config)?);
            Ok(())
        }
        Command::Reload { config, pid } => {
            let pids = baton::frontend::control::reload(&config, pid)?;
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            println!(
                "reload: {} checked; SIGHUP sent to {} (the daemon logs `reloaded`, or `reload_failed` and why)",
                config.display(),
                list.join(", ")
            );
            Ok(())
        }
        Command::Status {
            config,
            metrics,
            json,
        } => {
            let addr = match (metrics, config) {
                (Some(addr), _) => addr,
                (None, Some(config)) => baton::status::metrics_address(&config)?,
                (None, None) => anyhow::bail!("--config FILE or --metrics ADDRESS"),
            };
            let status = baton::status::fetch(addr)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.table());
            }
            Ok(())
        }
        Command::Bench {
            quick,
            rounds,
            duration,
            out,
            haproxy_http_reuse,
            baton_tcp,
            frontends,
            family,
        } => {
            let mut plan = if quick {
                baton::bench::Plan::quick()
            } else {
                baton::bench::Plan::full()
            };
            plan.rounds = rounds.unwrap_or(plan.rounds);
            plan.duration_s = duration.unwrap_or(plan.duration_s);
            plan.haproxy_http_reuse = haproxy_http_reuse;
            plan.haproxy_http_reuse.sort_unstable();
            plan.haproxy_http_reuse.dedup();
            plan.baton_tcp = baton_tcp
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => Ok(format!("{} = {}", k.trim(), v.trim())),
                    None => Err(anyhow::anyhow!("--baton-tcp {kv:?}: expected KEY=VALUE")),
                })
                .collect::<anyhow::Result<_>>()?;
            plan.frontends = baton::bench::check_frontends(frontends)?;
            plan.families = family;
            plan.families.sort_unstable();
            plan.families.dedup();
            baton::bench::run(&plan, quick, &out)
        }
        Command::Counter {
            iface,
            seconds,
            interval,
            json,
        } => run_counter(&iface, seconds, interval, json),
    }
}

fn run_lab(cmd: LabCommand) -> anyhow::Result<()> {
    let lab = Lab::from_env()?;
    let mut log = |line: &str| eprintln!("lab: {line}");
    match cmd {
        LabCommand::Up {
            backends,
            server,
            frontends,
            cluster,
            ipv6,
        } => {
            let state = lab.up_with(
                &lab::Setup {
                    backends,
                    frontends,
                    server,
                    cluster,
                    ipv6,
                },
                &mut log,
            )?;
            eprintln!(
                "lab: `{}` is up with {} back-ends ({:?} web servers) and {} front-end{}{}; VIP {}{}; try `baton lab status`",
                state.name,
                state.backends,
                state.server,
                state.frontends,
                if state.frontends == 1 { "" } else { "s" },
                if state.cluster {
                    ", daemons running"
                } else {
                    ""
                },
                lab::VIP,
                if state.ipv6 {
                    format!(" and {}", lab::VIP6)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        LabCommand::Down => lab.down(&mut log),
        LabCommand::Status { json } => {
            let status = lab.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "lab `{}`: {} back-ends, web server {:?}, {} front-end(s){}, VIP {} via {}",
                status.state.name,
                status.state.backends,
                status.state.server,
                status.state.frontends,
                if status.state.cluster {
                    ", cluster started"
                } else {
                    ""
                },
                status.vip,
                if status.vip_next_hops.is_empty() {
                    "nothing (no front-end announces it)".to_string()
                } else {
                    status
                        .vip_next_hops
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            println!(
                "{:<8} {:<16} {:<4} {:<14} {:>9}",
                "NODE", "NAMESPACE", "UP", "ADDRESS", "PROCESSES"
            );
            for n in &status.nodes {
                println!(
                    "{:<8} {:<16} {:<4} {:<14} {:>9}",
                    n.node,
                    n.namespace,
                    if n.up { "yes" } else { "NO" },
                    n.addr.as_deref().unwrap_or("-"),
                    n.processes
                );
            }
            Ok(())
        }
        LabCommand::Plan {
            backends,
            frontends,
        } => {
            println!(
                "| node | interface | address | IPv6 (`--ipv6`) | MAC | role |\n|---|---|---|---|---|---|"
            );
            for i in lab::plan(backends, frontends) {
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    i.node, i.iface, i.addr, i.addr6, i.mac, i.role
                );
            }
            Ok(())
        }
        LabCommand::Exec { node, command } => match lab.exec(&node, &command)? {},
        LabCommand::Tls { names, cert, key } => {
            let certs = match (cert, key) {
                (Some(cert), Some(key)) => lab::TlsCerts::Shared { cert, key },
                _ => lab::TlsCerts::PerBackend { names },
            };
            let trust = lab.enable_tls(&certs)?;
            eprintln!(
                "lab: back-ends serve TLS (HTTP/2 and HTTP/1.1) on port {} with {}; clients trust {} \
                 (curl --cacert {} --resolve NAME:{}:{} https://NAME/)",
                lab::HTTPS_PORT,
                match certs {
                    lab::TlsCerts::Shared { .. } => "one certificate for all",
                    lab::TlsCerts::PerBackend { .. } =>
                        "a certificate each (CN=beK), signed by the lab's CA",
                },
                trust.display(),
                trust.display(),
                lab::HTTPS_PORT,
                lab::VIP,
            );
            Ok(())
        }
        LabCommand::Serve {
            backend,
            root,
            listen,
        } => {
            let listener =
                TcpListener::bind(&listen).with_context(|| format!("binding {listen}"))?;
            eprintln!(
                "baton-lab built-in server for {backend}: serving {} on {listen}",
                root.display()
            );
            static_server::serve(listener, root, backend)?;
            Ok(())
        }
    }
}

fn run_counter(
    iface: &str,
    seconds: Option<u64>,
    interval: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let counter = TrafficCounter::attach(iface)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "attached", "iface": iface, "ifindex": counter.ifindex()})
        );
    } else {
        eprintln!(
            "counter: attached to {iface} (ifindex {}) at tc ingress and egress; Ctrl-C to stop",
            counter.ifindex()
        );
    }
    let stop = baton::signals::stop_flag()?;
    let started = Instant::now();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut next_report = interval.map(|i| started + Duration::from_secs(i.max(1)));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        thread::sleep(Duration::from_millis(50));
        if let Some(at) = next_report.filter(|&at| Instant::now() >= at) {
            print_counts(&counter, json)?;
            next_report = Some(at + Duration::from_secs(interval.unwrap_or(1).max(1)));
        }
    }
    print_counts(&counter, json)
}

fn print_counts(counter: &TrafficCounter, json: bool) -> anyhow::Result<()> {
    let c = counter.read()?;
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "totals", "iface": counter.iface(), "ingress": c.ingress, "egress": c.egress})
        );
    } else {
        println!(
            "{}: ingress {} packets {} bytes, egress {} packets {} bytes",
            counter.iface(),
            c.ingress.packets,
            c.ingress.bytes,
            c.egress.packets,
            c.egress.bytes
        );
    }
    Ok(())
}
