//! What the privileged lab tests share: running `baton` against a named lab, taking the
//! lab down however a test ends, and daemons run inside lab nodes with their logs kept.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    fmt,
    fs::{self, File},
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{LazyLock, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use baton::lab::{HTTP_PORT, VIP, backend_addr};

/// A test binary's lab name: a prefix and the process id, so that test runs going on at
/// the same time (a developer's and CI's, say) never share namespaces or files.
pub struct LabName(pub LazyLock<String>);

impl LabName {
    pub const fn new(make: fn() -> String) -> Self {
        Self(LazyLock::new(make))
    }
}

/// `prefix` followed by this process's id, within the lab's 24-character limit.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

impl std::ops::Deref for LabName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// `baton ARGS` against lab `lab`.
pub fn baton(lab: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args).env("BATON_LAB", lab);
    cmd
}

/// `ARGS` run inside lab node `node` (`baton lab exec NODE -- ARGS`).
pub fn in_node(lab: &str, node: &str, args: &[&str]) -> Command {
    let mut all = vec!["lab", "exec", node, "--"];
    all.extend_from_slice(args);
    baton(lab, &all)
}

/// Runs `cmd`, failing the test with its output if it fails.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(ok(cmd).stdout).unwrap()
}

/// Holds the test binary's lock and takes the lab down however the test ends.
pub struct LabGuard {
    lab: &'static str,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = baton(self.lab, &["lab", "down"]).output();
    }
}

/// Takes the lock and clears any remains of an earlier run, or `None` (with the reason
/// printed) when not root.
pub fn lab_guard(lab: &'static str, serial: &'static Mutex<()>, test: &str) -> Option<LabGuard> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root for network namespaces and eBPF");
        return None;
    }
    let guard = LabGuard {
        lab,
        _serial: serial.lock().unwrap_or_else(|e| e.into_inner()),
    };
    let _ = baton(lab, &["lab", "down"]).output();
    Some(guard)
}

/// [`lab_guard`], then `lab up` with `backends` back-ends: a fresh lab for a test that
/// starts its daemons itself ([`Cluster`] starts them too).
pub fn lab_up(
    lab: &'static str,
    serial: &'static Mutex<()>,
    test: &str,
    backends: u8,
) -> Option<LabGuard> {
    let guard = lab_guard(lab, serial, test)?;
    ok(&mut baton(
        lab,
        &["lab", "up", "--backends", &backends.to_string()],
    ));
    Some(guard)
}

/// [`lab_up`] over `family`: with [`Family::V6`], `lab up --ipv6`.
pub fn lab_up_over(
    lab: &'static str,
    serial: &'static Mutex<()>,
    test: &str,
    backends: u8,
    family: Family,
) -> Option<LabGuard> {
    let guard = lab_guard(lab, serial, &format!("{test} over {family}"))?;
    let n = backends.to_string();
    let mut up = vec!["lab", "up", "--backends", &n];
    if family == Family::V6 {
        up.push("--ipv6");
    }
    ok(&mut baton(lab, &up));
    Some(guard)
}

/// The front-end configuration `text` as it serves `family`: as it is for IPv4, with
/// `vip6` and the back-ends' IPv6 twins for IPv6 (`baton::lab::cluster::frontend_ipv6`).
pub fn frontend_config_over(text: &str, family: Family) -> String {
    match family {
        Family::V4 => text.to_owned(),
        Family::V6 => baton::lab::cluster::frontend_ipv6(text),
    }
}

/// A `baton` daemon running inside a lab node, its standard error kept in a file; killed
/// on drop if not stopped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

/// How long a daemon may take to be ready. Both load eBPF programs, and the verifier
/// alone takes about 3 s for the back-end's on an idle 2-core machine, more when three
/// agents start at once beside a test's other work (a CI run once took over 10 s).
pub const DAEMON_START: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts `baton ARGS` in `node` and waits until its log shows `ready`, failing the
    /// test with the log if it exits first or takes over [`DAEMON_START`].
    pub fn start(lab: &str, node: &str, args: &[&str], ready: &str) -> Self {
        Self::start_within(lab, node, args, ready, DAEMON_START)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The file its log goes to, for a test that follows it as it grows rather than
    /// reading it whole each time (a loaded daemon logs a line per connection).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// SIGTERM, wait for a successful exit (at most 15 s), and return the whole log.
    pub fn stop(self) -> String {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        self.exited()
    }

    /// Waits for a successful exit that something else asked for (a take-over's
    /// SIGTERM; at most 15 s), and returns the whole log.
    pub fn exited(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon did not exit within 15 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "daemon failed ({status}):\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `BATON_TEST_LOGS=DIR` keeps each daemon's log there (the file's own name, then
        // `.1`, `.2`, ... for the daemons that follow on the same node: an upgrade's or a
        // restart's predecessor), for a failure that needs more than the lines a test
        // prints.
        if let Some(dir) = std::env::var_os("BATON_TEST_LOGS")
            && let Some(name) = self.log.file_name()
        {
            let dir = std::path::Path::new(&dir);
            let mut kept = dir.join(name);
            let mut next = 1;
            while kept.exists() {
                kept = dir.join(format!("{}.{next}", name.to_string_lossy()));
                next += 1;
            }
            let _ = fs::copy(&self.log, kept);
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// The example configurations the cluster tests start from.
pub const FRONTEND_CONFIG: &str = include_str!("../../../../examples/frontend-lab.toml");
pub const BACKEND_CONFIG: &str = include_str!("../../../../examples/backend-lab.toml");

/// Writes a configuration into the lab's folder, which `lab down` removes.
pub fn config_file(lab: &str, name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(format!("/run/{lab}-lab/{name}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// The example back-end configuration with back-end `k`'s pin folder in `lab`.
pub fn backend_config(lab: &str, k: usize) -> String {
    BACKEND_CONFIG.replace(
        "/run/baton-lab/be1/bpf",
        &format!("/run/{lab}-lab/be{k}/bpf"),
    )
}

/// A back-end agent and the configuration it runs with.
pub type Agent = (Daemon, baton::backend::AgentConfig);

/// Starts `baton backend` on `beK` with configuration `text` (written as `NAME.toml`)
/// and waits for it to attach.
fn start_agent(lab: &str, k: usize, name: &str, text: &str) -> Agent {
    let path = config_file(lab, name, text);
    let daemon = Daemon::start(
        lab,
        &format!("be{k}"),
        &["backend", "--config", path.to_str().unwrap()],
        "event=attached ",
    );
    (daemon, baton::backend::AgentConfig::parse(text).unwrap())
}

/// Starts `baton backend` on be1..beN of a lab that is up, each with the example
/// configuration plus `extra`; returns the daemons and their parsed configurations.
pub fn start_backends(lab: &str, n: usize, extra: &str) -> Vec<Agent> {
    (1..=n)
        .map(|k| start_agent(lab, k, &format!("be{k}"), &(backend_config(lab, k) + extra)))
        .collect()
}

/// A back-end agent on each `beK` of `agents`, answering as its service (`VIP:PORT`)
/// instead of the example's.
pub fn start_agents_answering_as(lab: &str, agents: &[(usize, &str)]) -> Vec<Agent> {
    let example = format!("vip = \"{VIP}:{HTTP_PORT}\"");
    agents
        .iter()
        .map(|&(k, service)| {
            let text = backend_config(lab, k).replace(&example, &format!("vip = \"{service}\""));
            assert!(text.contains(service), "the example has `{example}`");
            let name = format!("be{k}-{}", service.replace([':', '.'], "-"));
            start_agent(lab, k, &name, &text)
        })
        .collect()
}

/// Starts `baton frontend` on `fe` with configuration `text` (the example's pin folder,
/// if it names it, moved to this lab's, as [`frontend_config`] does).
pub fn start_frontend(lab: &str, name: &str, text: &str) -> Daemon {
    let path = config_file(lab, name, &frontend_pins_in(lab, text));
    Daemon::start(
        lab,
        "fe",
        &["frontend", "--config", path.to_str().unwrap()],
        "event=ready",
    )
}

/// [`start_frontend`] with `--take-over`: started while the daemon it replaces runs,
/// ready once that one has drained and exited.
pub fn take_over_frontend(lab: &str, name: &str, text: &str) -> Daemon {
    let path = config_file(lab, name, &frontend_pins_in(lab, text));
    Daemon::start(
        lab,
        "fe",
        &[
            "frontend",
            "--config",
            path.to_str().unwrap(),
            "--take-over",
        ],
        "event=ready",
    )
}

/// curl on the lab's `client` with `ARGS` (and a 60 s limit); its standard output.
pub fn curl(lab: &str, args: &[&str]) -> String {
    let mut all = vec!["curl", "-sS", "-m", "60"];
    all.extend_from_slice(args);
    stdout(&mut in_node(lab, "client", &all))
}

/// One request by curl on `client` from local port `port`, with `Connection: close`: the
/// server closes first and holds the TIME-WAIT, so the client may reuse the port at once
/// while the back-end still knows the old connection. Returns curl's status code ("000"
/// when it got no response within `max_s` seconds) and its error output.
pub fn status_from_port(lab: &str, port: u16, url: &str, max_s: u32) -> (String, String) {
    let out = in_node(
        lab,
        "client",
        &[
            "curl",
            "-sS",
            "-m",
            &max_s.to_string(),
            "--local-port",
            &port.to_string(),
            "-H",
            "Connection: close",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ],
    )
    .output()
    .expect("run curl in the client namespace");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// Downloads `http://ADDR/files/NAME` on `client` and checks it against the back-ends'
/// published SHA256SUMS: the bytes arrived exactly.
pub fn assert_download_byte_exact(lab: &str, addr: Ipv4Addr, name: &str) {
    let sums = curl(lab, &[&format!("http://{addr}/files/SHA256SUMS")]);
    let fetch = format!("curl -sS -m 60 http://{addr}/files/{name} | sha256sum");
    let got = stdout(&mut baton(
        lab,
        &["lab", "exec", "client", "--", "sh", "-c", &fetch],
    ));
    let want = sums
        .lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .unwrap_or_else(|| panic!("{name} missing from SHA256SUMS: {sums}"));
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next(),
        "{name} from {addr}"
    );
}

/// A kernel SNMP counter's absolute value in a lab node (`nstat -asz`: without touching
/// nstat's history file, which is per user and not per namespace).
pub fn nstat(lab: &str, node: &str, counter: &str) -> u64 {
    let out = stdout(&mut baton(
        lab,
        &["lab", "exec", node, "--", "nstat", "-asz", counter],
    ));
    out.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(counter)).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {counter} in nstat output: {out}"))
}

/// Builds an Ethernet/IPv4/TCP frame with correct checksums.
#[derive(Clone)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn bytes(&self) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let tcp_len = 20 + self.options.len() + self.payload.len();
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + tcp_len) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&self.src.0);
        ip.extend_from_slice(&self.dst.0);
        let check = !baton_common::translate::ones_complement_sum(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.src.1.to_be_bytes());
        tcp.extend_from_slice(&self.dst.1.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + self.options.len()) / 4) << 4) as u8);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&self.options);
        tcp.extend_from_slice(&self.payload);
        let sum = baton_common::translate::ones_complement_sum(&tcp);
        let pseudo = baton_common::translate::tcp_ipv4_pseudo_header_sum(
            self.src.0,
            self.dst.0,
            tcp_len as u16,
        );
        let check = !baton_common::translate::ones_complement_add(sum, pseudo);
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&tcp);
        f
    }

    /// The IPv4 packet without its Ethernet header, for a raw IP socket.
    pub fn ip_packet(&self) -> Vec<u8> {
        self.bytes().split_off(14)
    }
}

/// An ICMPv4 "fragmentation needed" (type 3, code 4) from `router` to `to` in an
/// Ethernet frame from `src_mac` to `dst_mac`, announcing `mtu` and quoting
/// `quoted_tcp` bytes (8 at least, as RFC 792 asks; Linux quotes all it can) of
/// `offending`'s IPv4 packet, as a router sends it about a segment too big for its
/// next hop. Checksums right.
pub fn frag_needed(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    router: [u8; 4],
    to: [u8; 4],
    mtu: u16,
    offending: &Frame,
    quoted_tcp: usize,
) -> Vec<u8> {
    use baton_common::translate::ones_complement_sum;
    let quote = offending.ip_packet();
    let quote = &quote[..(20 + quoted_tcp).min(quote.len())];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let check = !ones_complement_sum(&icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&router);
    ip.extend_from_slice(&to);
    let check = !ones_complement_sum(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Sends a hand-made IPv4 packet from inside lab namespace `ns` through a raw socket
/// (the kernel routes it and resolves the next hop, nothing else).
pub fn send_raw(ns: &str, packet: &[u8]) {
    let dst = [packet[16], packet[17], packet[18], packet[19]];
    baton::netns::run_in(ns, || {
        // SAFETY: plain socket calls; every result is checked.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as libc::sa_family_t;
            to.sin_addr.s_addr = u32::from_ne_bytes(dst);
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            libc::close(fd);
            assert_eq!(
                sent,
                packet.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    })
    .unwrap();
}

/// The example front-end configuration with `lab`'s pin folder (its `fe` node's BPF
/// filesystem), so that a test's front-end never pins into another lab's.
pub fn frontend_config(lab: &str) -> String {
    frontend_pins_in(lab, FRONTEND_CONFIG)
}

/// `text` with the example's pin folder (the default lab's) replaced by `lab`'s.
pub fn frontend_pins_in(lab: &str, text: &str) -> String {
    text.replace("/run/baton-lab/fe/bpf", &frontend_pin_dir(lab))
}

/// `lab`'s front-end pin folder: the BPF filesystem `lab up` mounts for `fe`.
pub fn frontend_pin_dir(lab: &str) -> String {
    format!("/run/{lab}-lab/fe/bpf")
}

impl Daemon {
    /// SIGKILL: no drain, no exit path, as in a crash. Waits for it and returns the log.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "killed by SIGKILL, not exited before: {status}"
        );
        self.log_text()
    }
}

impl Daemon {
    /// The daemon's process id (`lab exec` execs it in place), e.g. to signal it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

/// Waits up to `within` for `daemon`'s log to satisfy `done`; returns how long it took,
/// or fails the test with the log and `what`.
pub fn wait_for_log(
    daemon: &Daemon,
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let log = daemon.log_text();
        if done(&log) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "no {what} within {within:?}:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `X-Baton-Backend` of a response head (`curl -D -`), or `None`.
pub fn served_by(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("X-Baton-Backend: "))
        .map(|b| b.trim().to_owned())
}

impl Daemon {
    /// As [`Daemon::start`], waiting up to `within` for `ready`: for a start that loads
    /// eBPF programs on a loaded machine (the verifier alone takes seconds there).
    pub fn start_within(
        lab: &str,
        node: &str,
        args: &[&str],
        ready: &str,
        within: Duration,
    ) -> Self {
        // A second daemon on the node while the first still runs (a take-over) writes a
        // log of its own.
        let mut log = PathBuf::from(format!("/run/{lab}-lab/{node}-{}.log", args[0]));
        let mut next = 1;
        while log.exists() {
            log = PathBuf::from(format!("/run/{lab}-lab/{node}-{}.{next}.log", args[0]));
            next += 1;
        }
        let mut all = vec!["lab", "exec", node, "--", env!("CARGO_BIN_EXE_baton")];
        all.extend_from_slice(args);
        let child = baton(lab, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child: Some(child),
            log,
        };
        let started = Instant::now();
        while !daemon.log_text().contains(ready) {
            let exited = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "{args:?} exited ({exited:?}) before `{ready}`:\n{}",
                daemon.log_text()
            );
            assert!(
                started.elapsed() < within,
                "no `{ready}` from {args:?} within {within:?}:\n{}",
                daemon.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

/// The value of `key` on the first `event=EVENT` line of a daemon log (logfmt), failing
/// the test with the log if either is missing.
pub fn logged(log: &str, event: &str, key: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(&format!(" event={event} ")))
        .unwrap_or_else(|| panic!("no {event} line:\n{log}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_string()
}

/// [`logged`] as a number (a counter).
pub fn logged_number(log: &str, event: &str, key: &str) -> u64 {
    let value = logged(log, event, key);
    value
        .parse()
        .unwrap_or_else(|_| panic!("{event} {key}={value} is not a number"))
}

/// The front-end fast path's counters in `lab` (its pinned per-CPU array, summed over
/// CPUs), by name; the daemon's `fastpath_counters` line gives the same at its exit.
pub fn fastpath_counters(lab: &str) -> std::collections::HashMap<&'static str, u64> {
    fastpath_counters_in(&frontend_pin_dir(lab))
}

/// [`fastpath_counters`] of the front-end whose pin folder is `pin_dir` (one of a tier's).
pub fn fastpath_counters_in(pin_dir: &str) -> std::collections::HashMap<&'static str, u64> {
    use aya::maps::{Map, MapData, PerCpuArray};
    let path = format!("{pin_dir}/frontend-eth0/stats");
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(map)).unwrap();
    baton_common::frontend::stat::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, stats.get(&(i as u32), 0).unwrap().iter().sum()))
        .collect()
}

/// The address family a lab test runs over: the same test, parameterised, for IPv4 and
/// for IPv6 (`baton lab up --ipv6`, the front-end serving `vip6` and every agent
/// answering as it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The VIP of this family.
    pub fn vip(self) -> std::net::IpAddr {
        match self {
            Self::V4 => VIP.into(),
            Self::V6 => baton::lab::VIP6.into(),
        }
    }

    /// The VIP as a URL's host: `198.18.2.1`, `[2001:2:0:2::1]`.
    pub fn vip_host(self) -> String {
        match self {
            Self::V4 => VIP.to_string(),
            Self::V6 => format!("[{}]", baton::lab::VIP6),
        }
    }

    /// `http://VIP{path}`.
    pub fn url(self, path: &str) -> String {
        format!("http://{}{path}", self.vip_host())
    }

    /// curl's flag for the family: `-4` or `-6`.
    pub fn curl_flag(self) -> &'static str {
        match self {
            Self::V4 => "-4",
            Self::V6 => "-6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// Downloads `URL_BASE/files/NAME` (`URL_BASE` as [`Family::url`] makes it) on `client`
/// and checks it against the back-ends' published SHA256SUMS, over `family`.
pub fn assert_download_byte_exact_over(lab: &str, family: Family, name: &str) {
    let flag = family.curl_flag();
    let sums = curl(lab, &[flag, &family.url("/files/SHA256SUMS")]);
    let fetch = format!(
        "curl {flag} -sS -m 60 '{}' | sha256sum",
        family.url(&format!("/files/{name}"))
    );
    let got = stdout(&mut baton(
        lab,
        &["lab", "exec", "client", "--", "sh", "-c", &fetch],
    ));
    let want = sums
        .lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .unwrap_or_else(|| panic!("{name} missing from SHA256SUMS: {sums}"));
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next(),
        "{name} over {family}"
    );
}

/// Back-end `k`'s address and `port`, as configurations name it (`198.18.1.11:80`).
pub fn backend_at(k: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(backend_addr(k), port)
}

/// What a cluster test brings up before its own steps: a fresh lab, back-end agents and
/// a front-end, each waited for. [`Cluster::builder`] gives the common case (three back-ends
/// with the example agent configuration, the example front-end); the builder's methods
/// change what differs. Everything it started ends with it: the daemons (killed unless a
/// test stopped them), then the lab ([`LabGuard`]).
pub struct ClusterBuilder<'a> {
    lab: &'static str,
    serial: &'static Mutex<()>,
    test: &'a str,
    backends: u8,
    agents: Agents<'a>,
    tls: Option<baton::lab::TlsCerts>,
    before_frontend: Option<Box<dyn FnOnce() + 'a>>,
    frontend_name: &'a str,
    frontend: Option<String>,
    start_frontend: bool,
    family: Family,
}

/// Which agents a [`ClusterBuilder`] starts.
enum Agents<'a> {
    /// On every back-end, the example configuration plus these lines.
    Example(String),
    /// On each `beK` listed, answering as the service beside it.
    AnsweringAs(&'a [(usize, &'a str)]),
}

/// A lab with back-end agents and (unless the builder said otherwise) a front-end, all
/// running. Dropped in field order: the front-end, the agents, then the lab.
pub struct Cluster {
    /// The front-end, while it runs; see [`Cluster::frontend`].
    pub frontend: Option<Daemon>,
    /// The agents, be1's first (or in the order the builder listed them).
    pub backends: Vec<Agent>,
    /// The front-end's configuration file, to start it again with [`Cluster::start_frontend`].
    pub frontend_config: PathBuf,
    /// The CA that signs the back-ends' certificates, when the builder enabled TLS.
    pub tls_ca: Option<PathBuf>,
    lab: &'static str,
    _guard: LabGuard,
}

impl Cluster {
    /// The common cluster of test `test` in lab `lab`, holding `serial` while it lives.
    pub fn builder<'a>(
        lab: &'static str,
        serial: &'static Mutex<()>,
        test: &'a str,
    ) -> ClusterBuilder<'a> {
        ClusterBuilder {
            lab,
            serial,
            test,
            backends: 3,
            agents: Agents::Example(String::new()),
            tls: None,
            before_frontend: None,
            frontend_name: "fe",
            frontend: None,
            start_frontend: true,
            family: Family::V4,
        }
    }

    /// The running front-end.
    pub fn frontend(&self) -> &Daemon {
        self.frontend.as_ref().expect("the front-end runs")
    }

    /// Stops the front-end (SIGTERM, drain) and returns its whole log.
    pub fn stop_frontend(&mut self) -> String {
        self.frontend.take().expect("the front-end runs").stop()
    }

    /// Starts a front-end with the cluster's configuration file and waits until it is
    /// ready; the caller keeps it.
    pub fn start_frontend(&self) -> Daemon {
        Daemon::start(
            self.lab,
            "fe",
            &[
                "frontend",
                "--config",
                self.frontend_config.to_str().unwrap(),
            ],
            "event=ready",
        )
    }

    /// Fails the test unless the front-end's XDP fast path attached.
    pub fn assert_fast_path_attached(&self) {
        let log = self.frontend().log_text();
        assert!(
            log.contains("fast_path=xdp"),
            "the fast path did not attach:\n{log}"
        );
    }
}

impl<'a> ClusterBuilder<'a> {
    /// How many back-ends the lab has (3 unless told).
    pub fn backends(mut self, n: u8) -> Self {
        self.backends = n;
        self
    }

    /// The family the test runs over: with [`Family::V6`] the lab is up with `--ipv6`,
    /// every agent answers as the VIP's IPv6 address too and the front-end serves it
    /// (`baton::lab::cluster::{backend_ipv6, frontend_ipv6}`, as `lab up --cluster`
    /// writes them).
    pub fn family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }

    /// Lines appended to every agent's configuration.
    pub fn agent_extra(mut self, extra: &str) -> Self {
        self.agents = Agents::Example(extra.to_owned());
        self
    }

    /// Agents only on the `beK` listed, each answering as its service (`VIP:PORT`).
    pub fn agents_answering_as(mut self, agents: &'a [(usize, &'a str)]) -> Self {
        self.agents = Agents::AnsweringAs(agents);
        self
    }

    /// `lab tls` with `certs` once the agents run, before the front-end starts.
    pub fn tls(mut self, certs: baton::lab::TlsCerts) -> Self {
        self.tls = Some(certs);
        self
    }

    /// Runs `step` once the agents run (and TLS is on), before the front-end starts.
    pub fn before_frontend(mut self, step: impl FnOnce() + 'a) -> Self {
        self.before_frontend = Some(Box::new(step));
        self
    }

    /// The front-end's configuration (the example's pin folder moved to this lab's).
    pub fn frontend(self, config: &str) -> Self {
        self.frontend_named("fe", config)
    }

    /// [`Self::frontend`], written as `NAME.toml` in the lab's folder.
    pub fn frontend_named(mut self, name: &'a str, config: &str) -> Self {
        self.frontend_name = name;
        self.frontend = Some(config.to_owned());
        self
    }

    /// Writes the front-end's configuration but leaves starting it to the test.
    pub fn frontend_not_started(mut self) -> Self {
        self.start_frontend = false;
        self
    }

    /// Brings it all up, or `None` (with the reason printed) when not root.
    pub fn up(self) -> Option<Cluster> {
        let guard = lab_guard(self.lab, self.serial, self.test)?;
        let mut up = vec!["lab", "up", "--backends"];
        let n = self.backends.to_string();
        up.push(&n);
        if self.family == Family::V6 {
            up.push("--ipv6");
        }
        ok(&mut baton(self.lab, &up));
        let family = self.family;
        let backends = match self.agents {
            Agents::Example(extra) => (1..=self.backends.into())
                .map(|k| {
                    let mut text = backend_config(self.lab, k) + &extra;
                    if family == Family::V6 {
                        text = baton::lab::cluster::backend_ipv6(&text);
                    }
                    start_agent(self.lab, k, &format!("be{k}"), &text)
                })
                .collect(),
            Agents::AnsweringAs(agents) => start_agents_answering_as(self.lab, agents),
        };
        let tls_ca = self.tls.map(|certs| {
            baton::lab::Lab::named(self.lab)
                .unwrap()
                .enable_tls(&certs)
                .unwrap()
        });
        if let Some(step) = self.before_frontend {
            step();
        }
        let mut text = self.frontend.unwrap_or_else(|| FRONTEND_CONFIG.to_owned());
        if family == Family::V6 {
            text = baton::lab::cluster::frontend_ipv6(&text);
        }
        let frontend_config = config_file(
            self.lab,
            self.frontend_name,
            &frontend_pins_in(self.lab, &text),
        );
        let mut cluster = Cluster {
            frontend: None,
            backends,
            frontend_config,
            tls_ca,
            lab: self.lab,
            _guard: guard,
        };
        if self.start_frontend {
            cluster.frontend = Some(cluster.start_frontend());
        }
        Some(cluster)
    }
}

/// A client that downloads `http://ADDR/PATH` with `Host: HOST` and `Connection: close`,
/// reads its own socket's `TCP_INFO` once the response starts, and prints
/// `tcpi_options`, `tcpi_snd_wscale`, the body's SHA-256 and the status line. `ss -ti`
/// would name the same bits, but the iproute2 6.1 `ss` of these machines prints none of
/// the option words (not even `ts` or `sack`) for the kernel's sockets, so the test asks
/// the socket itself.
const TCP_INFO_CLIENT: &str = r#"
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], 80))
s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.1\r\nHost: " + sys.argv[3].encode() + b"\r\nConnection: close\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(65536)
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
head, body = data.split(b"\r\n\r\n", 1)
digest = hashlib.sha256(body)
while True:
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    digest.update(chunk)
print(info[5], info[6] & 0x0f, digest.hexdigest(), head.split(b"\r\n")[0].decode())
"#;

/// What the client's own socket saw of a download ([`socket_download`]).
pub struct SocketView {
    /// `tcpi_options`: `TCPI_OPT_TIMESTAMPS` 1, `TCPI_OPT_SACK` 2, `TCPI_OPT_WSCALE` 4,
    /// `TCPI_OPT_ECN` 8 (negotiated), `TCPI_OPT_ECN_SEEN` 16 (an ECT segment arrived).
    pub options: u8,
    /// `tcpi_snd_wscale`: the shift the server announced.
    pub snd_wscale: u8,
    /// The body's SHA-256, hex.
    pub digest: String,
    pub status: String,
}

/// Downloads `path` from `addr` with `Host: host` on lab node `client`, asking the
/// client's socket what it agreed to (`TCP_INFO`).
pub fn socket_download(lab: &str, addr: Ipv4Addr, path: &str, host: &str) -> SocketView {
    let out = stdout(&mut in_node(
        lab,
        "client",
        &[
            "python3",
            "-c",
            TCP_INFO_CLIENT,
            &addr.to_string(),
            path,
            host,
        ],
    ));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(words.len() >= 4, "the client printed {out:?}");
    SocketView {
        options: words[0].parse().unwrap(),
        snd_wscale: words[1].parse().unwrap(),
        digest: words[2].to_owned(),
        status: words[3..].join(" "),
    }
}

/// A child process (a long download) killed if the test fails half-way.
pub struct Download(pub Option<std::process::Child>);

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The SHA-256 of the lab's file `files/NAME`, as its `SHA256SUMS` lists it.
pub fn expected_sha256(lab: &str, name: &str) -> String {
    let sums = fs::read_to_string(format!("/run/{lab}-lab/be1/www/files/SHA256SUMS")).unwrap();
    sums.lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} missing from SHA256SUMS: {sums}"))
        .to_string()
}
