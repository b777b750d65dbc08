//! The systems the benchmark compares, how each is started and stopped on the lab, and
//! their configurations: the same content switching for HAProxy and Baton. With
//! `--frontends N` one more, Baton through a tier of N front-ends, runs on a second lab
//! of its own (docs/benchmarks.md, "Method").
//!
//! Only one runs at a time. Baton's front-end takes VIP:80 with an nftables table and an
//! XDP program, HAProxy binds a socket on it: they would fight over the same packets. So
//! a system is stopped completely (Baton: daemons stopped, then `--detach` for the
//! front-end's pins and nftables table and for each back-end's module) before the next
//! one starts, and the benchmark checks that nothing of Baton is left on `fe`.
//!
//! Over IPv6 (`--family v6`) each system has configurations of its own: HAProxy binds
//! the VIP's IPv6 address and its servers are the back-ends' IPv6 addresses (the whole
//! path IPv6, as through Baton), and Baton's front-end and agents have what `baton lab
//! up --ipv6 --cluster` gives them (`vip6`, each pool's IPv6 twins). The IPv4 turns keep
//! the IPv4 configurations unchanged: a pool with an IPv6 member is picked in userspace
//! rather than by the kernel's dispatch (docs/design.md, "IPv6: the plan"), which would
//! change what the IPv4 figures measure.

use std::{
    fs::{self, File},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::Family;
use crate::lab::{self, Lab, Node};

/// Back-ends in the bench lab: one per content rule, as in the example configuration.
pub const BACKENDS: u8 = 3;
/// Where the measured path goes through HAProxy and Baton (`/files/` → `files` pool).
pub const BALANCED_BACKEND: u8 = 1;
/// The back-end "direct" runs against: not the one the balancers use (module docs of
/// `bench`, on TIME-WAIT), serving the same bytes.
pub const DIRECT_BACKEND: u8 = 2;

/// How long a daemon may take to say it is ready: the back-end agent loads its eBPF
/// object first, which takes seconds on a busy two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM (Baton's front-end drains first).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// The client straight to a back-end: no balancer, the limit.
    Direct,
    /// HAProxy in `fe`, bound to the VIP, with the same content switching and the
    /// `http-reuse` setting given.
    Haproxy(super::HttpReuse),
    /// `baton frontend` in `fe` and `baton backend` on every back-end.
    Baton,
    /// `baton frontend` on each of the tier lab's `fe1` .. `feN` (N = 2 to 4), each
    /// announcing the VIP to the router over BGP, which spreads flows over them by ECMP;
    /// `baton backend` on every back-end, sending to the tier's group MAC.
    #[serde(rename = "baton_tier")]
    BatonTier(u8),
}

impl System {
    /// The systems a run compares, in the order each round runs them: direct, HAProxy
    /// with each `http-reuse` setting asked for, Baton, and with `frontends` above one
    /// Baton through that many front-ends.
    pub fn all(reuse: &[super::HttpReuse], frontends: u8) -> Vec<System> {
        let mut all = vec![System::Direct];
        all.extend(reuse.iter().map(|&r| System::Haproxy(r)));
        all.push(System::Baton);
        if frontends > 1 {
            all.push(System::BatonTier(frontends));
        }
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Haproxy(super::HttpReuse::Always) => "HAProxy (always)",
            System::Haproxy(super::HttpReuse::Never) => "HAProxy (never)",
            System::Baton => "Baton",
            System::BatonTier(2) => "Baton x2",
            System::BatonTier(3) => "Baton x3",
            System::BatonTier(_) => "Baton x4",
        }
    }

    /// The lab it runs on: the tier's own, or the one every other system shares.
    pub fn on_tier(self) -> bool {
        matches!(self, System::BatonTier(_))
    }

    /// Baton's daemons run for it (one front-end or a tier).
    pub fn is_baton(self) -> bool {
        matches!(self, System::Baton | System::BatonTier(_))
    }

    /// Whether it can be measured over `family`: all but the tier, whose BGP sessions
    /// and ECMP route carry IPv4 only (`baton lab up --ipv6` takes one front-end).
    pub fn runs_over(self, family: Family) -> bool {
        family == Family::V4 || !self.on_tier()
    }

    /// The address the client sends to over `family`, and the back-end that must
    /// answer.
    pub fn target(self, family: Family) -> (IpAddr, u8) {
        let (v4, backend) = match self {
            System::Direct => (lab::backend_addr(DIRECT_BACKEND), DIRECT_BACKEND),
            System::Haproxy(_) | System::Baton | System::BatonTier(_) => {
                (lab::VIP, BALANCED_BACKEND)
            }
        };
        (address(v4, family), backend)
    }
}

/// The lab's address `v4` over `family`: itself, or its IPv6 twin ([`lab::v6_for`]).
fn address(v4: Ipv4Addr, family: Family) -> IpAddr {
    match family {
        Family::V4 => v4.into(),
        Family::V6 => lab::v6_for(v4).into(),
    }
}

/// The bench's files in the lab's folder (removed with the lab).
pub struct Files {
    pub dir: PathBuf,
    /// The nodes Baton's front-end runs on in this lab: `fe`, or the tier's.
    pub frontends: Vec<Node>,
}

impl Files {
    /// The single front-end lab's files, for each of `families`.
    pub fn write(
        lab: &Lab,
        reuse: &[super::HttpReuse],
        baton_tcp: &[String],
        families: &[Family],
    ) -> anyhow::Result<Self> {
        let files = Self::create(lab, vec![Node::Fe])?;
        let frontend = frontend_config(lab, baton_tcp);
        for &family in families {
            fs::write(
                files.frontend_config_over(family),
                over_family(&frontend, family, lab::cluster::frontend_ipv6),
            )?;
            for &r in reuse {
                fs::write(files.haproxy_config(r, family), haproxy_config(r, family))?;
            }
            for k in 1..=BACKENDS {
                let backend = backend_config(lab, k, &lab::mac_for(lab::FE_ADDR));
                fs::write(
                    files.backend_config_over(k, family),
                    over_family(&backend, family, lab::cluster::backend_ipv6),
                )?;
            }
        }
        Ok(files)
    }

    /// The files of the tier lab's Baton: each front-end's configuration (the same as
    /// the single front-end's, with the secret the tier shares and `[announce]`), the
    /// secret itself, and the back-ends' (sending to the front-ends' group MAC).
    pub fn write_tier(lab: &Lab, frontends: u8, baton_tcp: &[String]) -> anyhow::Result<Self> {
        let files = Self::create(lab, Node::frontends(frontends))?;
        let secret = lab::cluster::shared_secret_file(lab);
        lab::cluster::write_shared_secret(&secret)?;
        for &node in &files.frontends {
            fs::write(
                files.frontend_config_of(node),
                tier_frontend_config(lab, node, baton_tcp, &secret),
            )?;
        }
        for k in 1..=BACKENDS {
            fs::write(
                files.backend_config(k),
                backend_config(lab, k, lab::tier::FRONTEND_GROUP_MAC),
            )?;
        }
        Ok(files)
    }

    fn create(lab: &Lab, frontends: Vec<Node>) -> anyhow::Result<Self> {
        let dir = lab.state_dir().join("bench");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, frontends })
    }

    pub fn frontend_config(&self) -> PathBuf {
        self.frontend_config_of(Node::Fe)
    }
    /// `fe`'s configuration for the turns over `family`: `frontend.toml` for IPv4,
    /// `frontend-v6.toml` (with `vip6` and the pools' IPv6 twins) for IPv6.
    pub fn frontend_config_over(&self, family: Family) -> PathBuf {
        match family {
            Family::V4 => self.frontend_config(),
            Family::V6 => self.dir.join("frontend-v6.toml"),
        }
    }
    /// Front-end `node`'s configuration over `family` (a tier's: IPv4 only).
    fn frontend_config_of_over(&self, node: Node, family: Family) -> PathBuf {
        match node {
            Node::Fe => self.frontend_config_over(family),
            other => self.frontend_config_of(other),
        }
    }
    /// Front-end `node`'s configuration: `frontend.toml` for `fe`, `frontend-feK.toml`
    /// for the tier's.
    pub fn frontend_config_of(&self, node: Node) -> PathBuf {
        match node {
            Node::Fe => self.dir.join("frontend.toml"),
            other => self.dir.join(format!("frontend-{other}.toml")),
        }
    }
    pub fn haproxy_config(&self, reuse: super::HttpReuse, family: Family) -> PathBuf {
        self.dir.join(format!(
            "haproxy-{}{}.cfg",
            reuse.as_str(),
            file_suffix(family)
        ))
    }
    pub fn backend_config(&self, k: u8) -> PathBuf {
        self.dir.join(format!("be{k}.toml"))
    }
    /// Back-end `k`'s agent configuration over `family` (IPv6: with `vip6`).
    pub fn backend_config_over(&self, k: u8, family: Family) -> PathBuf {
        self.dir.join(format!("be{k}{}.toml", file_suffix(family)))
    }
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
}

/// What a file written for `family` has at the end of its name: nothing for IPv4 (the
/// names of runs before IPv6), `-v6` for IPv6.
fn file_suffix(family: Family) -> &'static str {
    match family {
        Family::V4 => "",
        Family::V6 => "-v6",
    }
}

/// A Baton configuration `text` (for IPv4) made for `family`: as it is, or through
/// `to_ipv6`, the lab's own transform (`lab::cluster::frontend_ipv6` or
/// `backend_ipv6`), so that the bench's IPv6 Baton is the one `baton lab up --ipv6
/// --cluster` runs.
fn over_family(text: &str, family: Family, to_ipv6: fn(&str) -> String) -> String {
    match family {
        Family::V4 => text.to_owned(),
        Family::V6 => to_ipv6(text),
    }
}

/// The content rules both balancers apply, in order: (name, path prefix, back-end).
/// Everything else goes round robin to all back-ends. The measured requests
/// (`/files/...`) match the last rule, so each of them is checked against all four.
pub const RULES: [(&str, &str, u8); 4] = [
    ("images", "/img/", 1),
    ("api", "/api/", 2),
    ("static", "/static/", 3),
    ("files", "/files/", BALANCED_BACKEND),
];

/// Baton's front-end: the lab's interface and key, the fast path on, no active health
/// checks (HAProxy gets none either), a short drain so that stopping takes half a
/// second, [`RULES`], and `tcp` (`key = value` lines) as its `[tcp]` table.
pub fn frontend_config(lab: &Lab, tcp: &[String]) -> String {
    frontend_config_on(lab, Node::Fe, tcp, "")
}

/// A tier front-end's configuration: [`frontend_config`] on `node`, with the secret the
/// tier shares (a handshake the router moves to another front-end completes there by
/// its cookie) and `[announce]`, so that the router sends it flows only while it can
/// serve them, as `baton lab up --cluster` configures a tier (lab/cluster.rs).
pub fn tier_frontend_config(lab: &Lab, node: Node, tcp: &[String], secret: &Path) -> String {
    let mut text = frontend_config_on(
        lab,
        node,
        tcp,
        &format!("secret_file = \"{}\"\n", secret.display()),
    );
    text += &format!(
        "\n[announce]\ninterface = \"{}\"\n",
        lab::tier::ANNOUNCE_INTERFACE
    );
    text
}

/// [`frontend_config`] for front-end `node`, with `top` (top-level keys) after its own.
fn frontend_config_on(lab: &Lab, node: Node, tcp: &[String], top: &str) -> String {
    let mut text = format!(
        r#"# Written by `baton bench`; HAProxy's configuration beside it switches the same way.
interface = "eth0"
vip = "{vip}"
port = {port}
handoff_key = "{key}"
drain_ms = 500
fast_path = true
pin_dir = "{pins}"
{top}
[dispatch]
default_pool = "all"

[dispatch.pools.all]
policy = "round_robin"
backends = [{all}]
"#,
        vip = lab::VIP,
        port = lab::HTTP_PORT,
        key = HANDOFF_KEY,
        pins = lab.bpffs(node).display(),
        all = (1..=BACKENDS)
            .map(|k| format!(
                r#"{{ address = "{}:{}" }}"#,
                lab::backend_addr(k),
                lab::HTTP_PORT
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !tcp.is_empty() {
        text += &format!("\n[tcp]\n{}\n", tcp.join("\n"));
    }
    for (name, _, k) in RULES {
        text += &format!(
            "\n[dispatch.pools.{name}]\nbackends = [{{ address = \"{}:{}\" }}]\n",
            lab::backend_addr(k),
            lab::HTTP_PORT
        );
    }
    for (name, prefix, _) in RULES {
        text += &format!(
            "\n[[dispatch.rules]]\nname = \"{name}\"\npool = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\n"
        );
    }
    text
}

/// The lab's handoff key (the example configurations').
const HANDOFF_KEY: &str = "0123456789abcdef0123456789abcdef";

/// The example back-end configuration with back-end `k`'s pin folder in `lab`, sending
/// what its module sends the front-end to `frontend_mac` (`fe`'s, or a tier's group MAC).
pub fn backend_config(lab: &Lab, k: u8, frontend_mac: &str) -> String {
    format!(
        "# Written by `baton bench`.\ninterface = \"eth0\"\nvip = \"{}:{}\"\nfrontend_mac = \"{frontend_mac}\"\nhandoff_key = \"{HANDOFF_KEY}\"\npin_dir = \"{}\"\n",
        lab::VIP,
        lab::HTTP_PORT,
        lab.bpffs(Node::Backend(k)).display()
    )
}

/// HAProxy with the same switching as Baton and the settings that make it fastest here:
/// over `family`, bound to the VIP's address of that family and connecting to the
/// back-ends' addresses of that family;
/// splicing both ways, one thread per core, server-side keep-alive reused across client
/// connections (`http-reuse always`: every request here is an idempotent GET; `reuse`
/// can say `never`, one back-end connection per client connection as with a handoff),
/// no logging, no health checks. `maxconn` stays within the lab's file-descriptor limit
/// (HAProxy needs two descriptors per connection), far above the 32 connections used.
pub fn haproxy_config(reuse: super::HttpReuse, family: Family) -> String {
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    // `SocketAddr`'s form, `[v6]:port` for IPv6, is HAProxy's too.
    let at = |v4: Ipv4Addr| SocketAddr::new(address(v4, family), lab::HTTP_PORT);
    let server = |k: u8| format!("    server be{k} {}\n", at(lab::backend_addr(k)));
    let mut text = format!(
        "# Written by `baton bench`: the content switching of Baton's frontend.toml beside it.
global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    option splice-request
    option splice-response
    option http-keep-alive
    http-reuse {reuse}
    maxconn 4096
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
frontend vip
    bind {vip}
",
        vip = at(lab::VIP),
        reuse = reuse.as_str()
    );
    for (name, prefix, _) in RULES {
        text += &format!("    acl {name} path_beg {prefix}\n");
    }
    for (name, _, _) in RULES {
        text += &format!("    use_backend {name} if {name}\n");
    }
    text += "    default_backend all\nbackend all\n    balance roundrobin\n";
    for k in 1..=BACKENDS {
        text += &server(k);
    }
    for (name, _, k) in RULES {
        text += &format!("backend {name}\n{}", server(k));
    }
    text
}

/// A process running in a lab node, its standard error in a log file; killed on drop
/// if not stopped.
pub struct Daemon {
    /// Where it runs.
    pub node: Node,
    name: String,
    /// What asks it to finish: SIGTERM for Baton's daemons; SIGUSR1 for HAProxy, whose
    /// soft stop exits 0 once its connections are done (SIGTERM kills it outright).
    stop_signal: libc::c_int,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program ARGS` in `node` (through `ip netns exec`, which execs it in place:
    /// the child's pid is the program's) and, if `ready` is given, waits until the log
    /// shows it.
    pub fn start(
        lab: &Lab,
        files: &Files,
        node: Node,
        name: &str,
        program: &Path,
        args: &[&str],
        ready: Option<&str>,
    ) -> anyhow::Result<Self> {
        let log = files.log(name);
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.namespace(node)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .with_context(|| format!("starting {name} in {node}"))?;
        let mut daemon = Self {
            node,
            name: name.into(),
            stop_signal: if name == "haproxy" {
                libc::SIGUSR1
            } else {
                libc::SIGTERM
            },
            child: Some(child),
            log,
        };
        let Some(ready) = ready else {
            return Ok(daemon);
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !daemon.log_text().contains(ready) {
            if let Some(status) = daemon.exited()? {
                bail!(
                    "{name} exited ({status}) before `{ready}`:\n{}",
                    daemon.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no `{ready}` from {name} within {READY_TIMEOUT:?}:\n{}",
                    daemon.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// Sends its stop signal, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]);
    /// fails if it did not exit cleanly.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let mut child = self.child.take().context("stopped twice")?;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, self.stop_signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {STOP_TIMEOUT:?} of its stop signal:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        if !status.success() {
            bail!("{} failed ({status}):\n{log}", self.name);
        }
        Ok(log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A system while it runs: its processes, the front-ends' first.
pub struct Running {
    pub system: System,
    /// The family its clients and back-end connections use.
    pub family: Family,
    /// HAProxy, or `baton frontend` on `fe` or on each of the tier's front-ends: whose
    /// CPU time is the front-end's. Empty for direct.
    pub frontends: Vec<Daemon>,
    backends: Vec<Daemon>,
}

/// How long the router may take to route the VIP to every front-end of the tier once
/// each is ready: BIRD retries a BGP connection every second (as lab/cluster.rs waits).
const ROUTED_WITHIN: Duration = Duration::from_secs(30);

impl Running {
    pub fn start(
        system: System,
        family: Family,
        lab: &Lab,
        files: &Files,
        baton: &Path,
    ) -> anyhow::Result<Self> {
        let mut running = Self {
            system,
            family,
            frontends: Vec::new(),
            backends: Vec::new(),
        };
        match system {
            System::Direct => {}
            System::Haproxy(reuse) => {
                let cfg = files.haproxy_config(reuse, family);
                running.frontends.push(Daemon::start(
                    lab,
                    files,
                    Node::Fe,
                    "haproxy",
                    Path::new("haproxy"),
                    &["-db", "-f", path_str(&cfg)?],
                    None,
                )?);
            }
            System::Baton | System::BatonTier(_) => {
                if system == System::Baton {
                    bridge_pass(lab, true)?;
                }
                for k in 1..=BACKENDS {
                    let cfg = files.backend_config_over(k, family);
                    running.backends.push(Daemon::start(
                        lab,
                        files,
                        Node::Backend(k),
                        &format!("be{k}-backend"),
                        baton,
                        &["backend", "--config", path_str(&cfg)?],
                        Some("event=attached "),
                    )?);
                }
                for &node in &files.frontends {
                    let cfg = files.frontend_config_of_over(node, family);
                    let name = if node == Node::Fe {
                        "frontend".to_owned()
                    } else {
                        format!("{node}-frontend")
                    };
                    let fe = Daemon::start(
                        lab,
                        files,
                        node,
                        &name,
                        baton,
                        &["frontend", "--config", path_str(&cfg)?],
                        Some("event=ready"),
                    )?;
                    if !fe.log_text().contains("fast_path=xdp") {
                        bail!(
                            "Baton's fast path did not attach on {node}; the figures would be the slow path's:\n{}",
                            fe.log_text()
                        );
                    }
                    running.frontends.push(fe);
                }
                if let System::BatonTier(n) = system {
                    wait_for_every_frontend_routed(lab, n)?;
                }
            }
        }
        Ok(running)
    }

    /// Stops every process, the front-ends first, and removes what Baton leaves in place
    /// for a successor (pins, links, nftables table), then checks each front-end's node
    /// is bare. Returns the handoffs each of Baton's front-ends counted at its exit, in
    /// the order of `frontends` (none for other systems).
    pub fn stop(
        mut self,
        lab: &Lab,
        files: &Files,
        baton: &Path,
    ) -> anyhow::Result<Vec<super::report::Decisions>> {
        let mut decisions = Vec::new();
        let baton_ran = self.system.is_baton();
        let nodes: Vec<Node> = self.frontends.iter().map(|d| d.node).collect();
        for fe in std::mem::take(&mut self.frontends) {
            let node = fe.node;
            let log = fe.stop()?;
            if baton_ran {
                decisions.push(super::measure::decisions_from_exit_log(&log).with_context(
                    || format!("no handoff counts in the exit log of {node}'s front-end"),
                )?);
            }
        }
        if baton_ran {
            for &node in &nodes {
                let cfg = files.frontend_config_of_over(node, self.family);
                run_in(
                    lab,
                    node,
                    baton,
                    &["frontend", "--config", path_str(&cfg)?, "--detach"],
                )?;
            }
        }
        for (k, be) in (1..=BACKENDS).zip(std::mem::take(&mut self.backends)) {
            be.stop()?;
            let cfg = files.backend_config_over(k, self.family);
            run_in(
                lab,
                Node::Backend(k),
                baton,
                &["backend", "--config", path_str(&cfg)?, "--detach"],
            )?;
        }
        if self.system == System::Baton {
            bridge_pass(lab, false)?;
        }
        for &node in &files.frontends {
            let tables = output_in(lab, node, Path::new("nft"), &["list", "tables"])?;
            let programs = output_in(lab, node, Path::new("bpftool"), &["-j", "net", "show"])?;
            if tables.contains("baton") || !super::measure::parse_net_show(&programs)?.is_empty() {
                bail!(
                    "{} left state on {node}: nft tables `{tables}`, programs {programs}",
                    self.system.name()
                );
            }
        }
        Ok(decisions)
    }
}

/// Waits until the router routes the VIP to all `n` front-ends: each announces it once
/// ready, and BGP takes a moment to carry it.
fn wait_for_every_frontend_routed(lab: &Lab, n: u8) -> anyhow::Result<()> {
    let deadline = Instant::now() + ROUTED_WITHIN;
    loop {
        let hops = lab::tier::vip_next_hops(lab)?;
        if hops.len() == usize::from(n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the router routes {} to {hops:?}, not to all {n} front-ends, {ROUTED_WITHIN:?} after they were ready; see {}/*/bird.log",
                lab::VIP,
                lab.state_dir().display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Puts the lab's XDP pass program on the bridge port facing `fe` (`p-fe`), or takes it
/// off. Baton's fast path needs it: a veth delivers `XDP_TX`'d frames only to a peer
/// that runs XDP. But a veth whose peer runs XDP loses TSO (the kernel's
/// `veth_fix_features`), so with it `fe` segments everything it sends in software,
/// which costs HAProxy, whose responses leave through `fe`, a factor of four in 100 MiB
/// throughput here. So the program is on only for Baton's turns.
pub fn bridge_pass(lab: &Lab, on: bool) -> anyhow::Result<()> {
    // The pin `Lab::pass_xdp_tx_to_bridge` makes; the link goes when it is unlinked.
    let pin = lab.bpffs(Node::Lan).join("p-fe-xdp");
    if on {
        if !pin.exists() {
            lab.pass_xdp_tx_to_bridge(&lab.namespace(Node::Lan))?;
        }
    } else if pin.exists() {
        fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    let programs = output_in(lab, Node::Lan, Path::new("bpftool"), &["-j", "net", "show"])?;
    let attached = !super::measure::parse_net_show(&programs)?.is_empty();
    if attached != on {
        bail!(
            "the XDP pass program on p-fe is {} attached: {programs}",
            if attached { "still" } else { "not" }
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs `program ARGS` in `node` to completion; fails with its output if it fails.
pub fn run_in(lab: &Lab, node: Node, program: &Path, args: &[&str]) -> anyhow::Result<()> {
    output_in(lab, node, program, args).map(drop)
}

/// Runs `program ARGS` in `node` to completion and returns its standard output.
pub fn output_in(lab: &Lab, node: Node, program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.namespace(node)])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} in {node}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` in {node} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_balancers_switch_the_same_way() {
        let lab = Lab::named("t").unwrap();
        let baton = crate::frontend::config::parse(&frontend_config(&lab, &[]), Path::new("/"));
        assert!(baton.is_ok(), "{baton:?}");
        for k in 1..=BACKENDS {
            let agent = crate::backend::AgentConfig::parse(&backend_config(
                &lab,
                k,
                &lab::mac_for(lab::FE_ADDR),
            ));
            assert!(agent.is_ok(), "{agent:?}");
        }
        let haproxy = haproxy_config(crate::bench::HttpReuse::Always, Family::V4);
        assert!(haproxy.contains("    http-reuse always\n"));
        assert!(haproxy.contains("    bind 198.18.2.1:80\n"), "{haproxy}");
        assert!(
            haproxy_config(crate::bench::HttpReuse::Never, Family::V4)
                .contains("    http-reuse never\n")
        );
        for (name, prefix, k) in RULES {
            assert!(haproxy.contains(&format!("acl {name} path_beg {prefix}\n")));
            assert!(haproxy.contains(&format!(
                "backend {name}\n    server be{k} 198.18.1.1{k}:80\n"
            )));
        }
        assert!(
            haproxy.contains("option splice-request") && haproxy.contains("option splice-response")
        );
    }

    #[test]
    fn a_tier_runs_the_same_baton_on_every_front_end_and_announces() {
        let lab = Lab::named("t").unwrap();
        assert_eq!(
            System::all(&[crate::bench::HttpReuse::Never], 1),
            [
                System::Direct,
                System::Haproxy(crate::bench::HttpReuse::Never),
                System::Baton
            ]
        );
        assert_eq!(
            System::all(&[], 3),
            [System::Direct, System::Baton, System::BatonTier(3)]
        );
        assert_eq!(System::BatonTier(2).name(), "Baton x2");
        assert_eq!(
            System::BatonTier(2).target(Family::V4),
            System::Baton.target(Family::V4)
        );
        assert!(
            !System::BatonTier(2).runs_over(Family::V6),
            "IPv4's BGP alone"
        );
        let one = frontend_config(&lab, &["kernel_dispatch = true".into()]);
        let fe2 = tier_frontend_config(
            &lab,
            Node::Frontend(2),
            &["kernel_dispatch = true".into()],
            Path::new("/run/t-lab/frontend-secret.key"),
        );
        assert!(fe2.contains("pin_dir = \"/run/t-lab/fe2/bpf\"\nsecret_file = "));
        assert!(
            fe2.ends_with("\n[announce]\ninterface = \"baton-vip\"\n"),
            "{fe2}"
        );
        // The rest is the single front-end's, rules and `[tcp]` alike.
        let rest = |c: &str| {
            c[c.find("[dispatch]").unwrap()..]
                .replace("\n[announce]\ninterface = \"baton-vip\"\n", "")
        };
        assert_eq!(rest(&fe2), rest(&one));
        // It parses as the daemon reads it (the secret inline: the file is written at
        // run time).
        let inline = fe2.replace(
            "secret_file = \"/run/t-lab/frontend-secret.key\"",
            "secret = \"000102030405060708090a0b0c0d0e0f\"",
        );
        let parsed = crate::frontend::config::parse(&inline, Path::new("/")).unwrap();
        assert_eq!(parsed.announce.unwrap().interface, "baton-vip");
        let be = backend_config(&lab, 1, lab::tier::FRONTEND_GROUP_MAC);
        assert!(be.contains("frontend_mac = \"03:ba:70:12:01:00\""));
        crate::backend::AgentConfig::parse(&be).unwrap();
    }

    #[test]
    fn over_ipv6_every_system_uses_the_labs_ipv6_addresses() {
        let lab = Lab::named("t").unwrap();
        let v6 = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            System::Direct.target(Family::V6),
            (v6("2001:2:0:1::c"), DIRECT_BACKEND)
        );
        assert_eq!(
            System::Baton.target(Family::V6),
            (lab::VIP6.into(), BALANCED_BACKEND)
        );
        assert_eq!(
            System::Baton.target(Family::V4),
            (lab::VIP.into(), BALANCED_BACKEND)
        );
        // HAProxy over IPv6 end to end: bound to VIP6, IPv6 connections to the
        // back-ends, nothing of IPv4.
        let haproxy = haproxy_config(crate::bench::HttpReuse::Never, Family::V6);
        assert!(
            haproxy.contains("    bind [2001:2:0:2::1]:80\n"),
            "{haproxy}"
        );
        assert!(
            haproxy.contains("backend files\n    server be1 [2001:2:0:1::b]:80\n"),
            "{haproxy}"
        );
        assert!(!haproxy.contains("198.18."), "{haproxy}");
        // Baton's front-end over IPv6 serves vip6 and has each member's twin; over IPv4
        // it is the IPv4 configuration unchanged, no pool with an IPv6 member, so the
        // kernel's dispatch still decides.
        let v4 = frontend_config(&lab, &[]);
        assert_eq!(
            over_family(&v4, Family::V4, lab::cluster::frontend_ipv6),
            v4
        );
        assert!(!v4.contains("2001:2:"), "{v4}");
        let text = over_family(&v4, Family::V6, lab::cluster::frontend_ipv6);
        let parsed = crate::frontend::config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(
            parsed.services6,
            [std::net::SocketAddrV6::new(lab::VIP6, lab::HTTP_PORT, 0, 0)],
            "{text}"
        );
        assert!(
            text.contains(
                "backends = [{ address = \"198.18.1.11:80\" }, { address = \"[2001:2:0:1::b]:80\" }]"
            ),
            "{text}"
        );
        let be = over_family(
            &backend_config(&lab, 1, &lab::mac_for(lab::FE_ADDR)),
            Family::V6,
            lab::cluster::backend_ipv6,
        );
        let agent = crate::backend::AgentConfig::parse(&be).unwrap();
        assert_eq!(agent.vip6, Some(lab::VIP6), "{be}");
        // Each family's files by name; IPv4's as before IPv6.
        let files = Files {
            dir: PathBuf::from("/b"),
            frontends: vec![Node::Fe],
        };
        assert_eq!(
            files.frontend_config_over(Family::V4),
            Path::new("/b/frontend.toml")
        );
        assert_eq!(
            files.frontend_config_over(Family::V6),
            Path::new("/b/frontend-v6.toml")
        );
        assert_eq!(
            files.haproxy_config(crate::bench::HttpReuse::Always, Family::V6),
            Path::new("/b/haproxy-always-v6.cfg")
        );
        assert_eq!(
            files.backend_config_over(2, Family::V4),
            files.backend_config(2)
        );
        assert_eq!(
            files.backend_config_over(2, Family::V6),
            Path::new("/b/be2-v6.toml")
        );
    }

    #[test]
    fn direct_avoids_the_balanced_backend() {
        for family in [Family::V4, Family::V6] {
            assert_ne!(
                System::Direct.target(family).1,
                System::Baton.target(family).1
            );
            assert_eq!(
                System::Haproxy(crate::bench::HttpReuse::Never).target(family),
                System::Baton.target(family)
            );
        }
        assert_eq!(
            RULES.iter().find(|r| r.0 == "files").unwrap().2,
            BALANCED_BACKEND
        );
    }
}
