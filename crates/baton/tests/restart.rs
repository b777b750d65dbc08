//! A restart of `baton frontend` in the middle of a download, in the lab: the fast
//! path's program, link and flow table are pinned and the nftables table stays, so the
//! handed-off connection keeps flowing while no daemon runs; the next daemon reattaches
//! to the pins, adopts the flow, forwards what XDP passes up of it (the client's FIN),
//! tracks its close and removes it from the table. Beside it, a short request that closed
//! just before the restart is still in its grace period: its close state, carried in the
//! table, lets the next daemon free it after a grace period too (without it, it would be
//! adopted as open and stay for the idle timeout). Once stopped by SIGTERM (after a short
//! drain: the close state is written at exit), once killed with SIGKILL (a crash: it was
//! written within the second); each time `--detach` then leaves no pin and no nftables
//! table. Each over IPv4 and over IPv6 (`support::Family`): an IPv6 connection's flow is
//! in the IPv6 table (`flows_v6`), pinned, adopted and closed the same way.
//!
//! Beside the restarts, the lock that keeps a second daemon off a running one's
//! interface, pins and nftables table: a second `baton frontend` (or `baton backend`)
//! with the same configuration refuses to start, naming the first, which goes on
//! serving; a successor of one killed with SIGKILL starts.
//!
//! Root only (each test prints why it skipped otherwise); lab name `btrs<pid>`; one test
//! at a time.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use baton::frontend::fastpath;
use baton::lab::VIP;
use support::{Cluster, Daemon, Family, baton, nstat, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btrs"));
static SERIAL: Mutex<()> = Mutex::new(());
const INTERFACE: &str = "eth0";
/// 100 MiB at 10 MiB/s: ten seconds, room for a restart in the middle whatever the
/// next daemon's start costs (its program's verification takes seconds on a busy host;
/// at 20 MiB/s the download once ended in the gap, so its FIN reached no daemon).
const RATE: &str = "10M";

/// How the first daemon goes.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM: the drain (300 ms here), the counters, an orderly exit.
    Term,
    /// SIGKILL: nothing at all.
    Kill,
}

/// The lab with three back-ends and their agents, serving `family`; the front-end's
/// configuration written, the front-end not started.
fn cluster(test: &str, family: Family) -> Option<Cluster> {
    // A short drain, so that SIGTERM ends the daemon in the middle of the download, and
    // a short grace period, so that closed flows leave the table soon after they end (but
    // longer than the drain, so that the short request's is still there at the stop).
    let example = support::frontend_config(&LAB);
    let text = example
        .replace(
            "drain_ms = 5000",
            "drain_ms = 300\nmetrics = \"127.0.0.1:9180\"",
        )
        .replace("[limits]\n", "[limits]\ntime_wait_ms = 3000\n");
    assert!(
        text.contains("drain_ms = 300") && text.contains("time_wait_ms = 3000"),
        "the example changed: {text}"
    );
    assert!(
        text.contains(&format!("pin_dir = \"{}\"", pin_dir().display())),
        "the example sets pin_dir"
    );
    Cluster::builder(&LAB, &SERIAL, test)
        .family(family)
        .frontend_named("fe-restart", &text)
        .frontend_not_started()
        .up()
}

/// The front-end's pin folder in this lab.
fn pin_dir() -> PathBuf {
    PathBuf::from(support::frontend_pin_dir(&LAB))
}

impl Cluster {
    /// Flows in the pinned table of `family`'s connections (`flows` or `flows_v6`).
    fn flows(&self, family: Family) -> usize {
        match family {
            Family::V4 => fastpath::pinned_flow_count(&pin_dir(), INTERFACE),
            Family::V6 => fastpath::pinned_flow_count_v6(&pin_dir(), INTERFACE),
        }
        .expect("the pinned flow table")
    }

    fn pins(&self) -> PathBuf {
        baton::pins::Pins::frontend(&pin_dir(), INTERFACE)
            .dir()
            .to_path_buf()
    }

    /// Waits up to `limit` for `family`'s pinned flow table to hold `n` flows; how long
    /// it took.
    fn wait_for_flows(&self, family: Family, n: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let flows = self.flows(family);
            if flows == n {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "the pinned flow table holds {flows} flows, not {n}, after {limit:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `baton_frontend_backend_active_connections` summed over back-ends, from the daemon's
/// metrics endpoint in `fe`.
fn active_connections() -> u64 {
    let text = support::stdout(&mut support::in_node(
        &LAB,
        "fe",
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:9180/metrics"],
    ));
    text.lines()
        .filter(|l| l.starts_with("baton_frontend_backend_active_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn nft_table_in_fe() -> bool {
    stdout(&mut baton(
        &LAB,
        &["lab", "exec", "fe", "--", "nft", "list", "tables"],
    ))
    .contains("table inet baton_fe")
}

/// The whole scenario over `family`: download, stop or kill the daemon in the middle,
/// start another, check what it adopted, that the download arrived whole, that the close
/// was tracked, and that `--detach` leaves nothing behind.
fn restart_mid_download(test: &str, stop: Stop, family: Family) {
    let Some(cluster) = cluster(test, family) else {
        return;
    };
    // The table the other family's connections would be in: empty throughout.
    let other = match family {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    };
    let first = cluster.start_frontend();
    let log = first.log_text();
    assert_eq!(
        support::logged(&log, "fastpath", "state"),
        "attached",
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath", "flows"),
        0,
        "{log}"
    );
    let host_resets = nstat(&LAB, "fe", "TcpOutRsts");

    let fetch = format!(
        "curl {} -sS --limit-rate {RATE} '{}' | sha256sum",
        family.curl_flag(),
        family.url("/files/100M.bin")
    );
    let started = Instant::now();
    let mut download = support::Download(Some(
        baton(&LAB, &["lab", "exec", "client", "--", "sh", "-c", &fetch])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    cluster.wait_for_flows(family, 1, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    // A short request, closed at once: its flow waits out its 3 s grace in the table.
    support::curl(
        &LAB,
        &[
            family.curl_flag(),
            "-o",
            "/dev/null",
            &family.url("/files/1K.bin"),
        ],
    );
    cluster.wait_for_flows(family, 2, Duration::from_secs(2));
    thread::sleep(Duration::from_millis(200));
    if let Stop::Kill = stop {
        // No exit path: the close state must already be in the table, which the daemon
        // updates every second.
        thread::sleep(Duration::from_millis(1200));
    }
    let child = download.0.as_mut().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the download is still running when the daemon stops"
    );

    let stopping = Instant::now();
    let log = match stop {
        Stop::Term => first.stop(),
        Stop::Kill => first.kill(),
    };
    let stopped_after = stopping.elapsed();
    if let Stop::Term = stop {
        let exit = log
            .lines()
            .find(|l| l.contains(" event=exit "))
            .unwrap_or_else(|| panic!("no exit line:\n{log}"));
        assert!(
            exit.contains("left_in_place=") && exit.contains("nftables table inet baton_fe"),
            "{exit}"
        );
    }
    // The gap: no daemon. The pins and the host filter hold the connection.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster.flows(family), 2, "the flows outlive the daemon");
    assert_eq!(cluster.flows(other), 0, "each in its family's table");
    assert!(nft_table_in_fe(), "the nftables table outlives the daemon");
    let second = cluster.start_frontend();
    let gap = stopping.elapsed();
    assert!(
        download.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the download outlasts the restart (the next daemon was ready {gap:?} after the stop)"
    );
    let log = second.log_text();
    eprintln!(
        "{stop:?} over {family}: daemon gone after {stopped_after:?}, the next one ready {gap:?} after the stop; {}",
        log.lines()
            .find(|l| l.contains(" event=fastpath "))
            .unwrap_or("")
    );
    assert_eq!(
        support::logged(&log, "fastpath", "state"),
        "reattached",
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath", "flows"),
        2,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath", "flows_ipv6"),
        if family == Family::V6 { 2 } else { 0 },
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath", "adopted"),
        2,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath", "refused"),
        0,
        "{log}"
    );
    // The dispatcher counts the adopted flows as its back-ends' connections.
    assert_eq!(active_connections(), 2, "adopted flows counted");

    let out = download.0.take().unwrap().wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "the download failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or(""),
        support::expected_sha256(&LAB, "100M.bin"),
        "the 100 MiB that spanned the restart arrived byte-exact"
    );
    // The client's FIN went through the new daemon's XDP program, which told the daemon
    // through its ring (the back-end's FIN is never needed); the daemon tracked the
    // close and freed the flow once the client had been quiet for its 3 s grace period;
    // the short request's flow went after the grace period it was adopted into: the
    // table is empty again.
    let emptied = cluster.wait_for_flows(family, 0, Duration::from_secs(10));
    assert_eq!(active_connections(), 0, "and uncounted as they end");
    eprintln!(
        "{stop:?} over {family}: download took {took:?}; table empty {emptied:?} after it ended"
    );
    assert_eq!(
        nstat(&LAB, "fe", "TcpOutRsts"),
        host_resets,
        "the host's TCP never answered the VIP, not even while no daemon ran"
    );

    let log = second.stop();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "adopted"),
        2,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "closes"),
        2,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath_stats", "flows_removed"),
        2,
        "{log}"
    );
    // The download's FIN came through the ring, and the core knew the flow.
    assert!(
        support::logged_number(&log, "fastpath_stats", "client_fins_noted") >= 1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "client_fins_unknown"),
        0,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "stray_segments"),
        0,
        "{log}"
    );

    // `--detach` takes everything away, and says so.
    assert!(cluster.pins().exists());
    let out = support::ok(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "frontend",
            "--config",
            cluster.frontend_config.to_str().unwrap(),
            "--detach",
        ],
    ));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(" event=detached ") && said.contains(" event=nftables_removed "),
        "{said}"
    );
    assert!(!cluster.pins().exists(), "pins left: {said}");
    // Only what the kernel puts in every BPF filesystem (`maps.debug`, `progs.debug`).
    let left: Vec<String> = std::fs::read_dir(pin_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".debug"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", pin_dir().display());
    assert!(!nft_table_in_fe(), "the nftables table is gone: {said}");
}

#[test]
fn a_frontend_stopped_mid_download_hands_its_flow_to_the_next() {
    restart_mid_download("restart after SIGTERM", Stop::Term, Family::V4);
}

#[test]
fn a_frontend_stopped_mid_download_hands_its_flow_to_the_next_over_ipv6() {
    restart_mid_download("restart after SIGTERM", Stop::Term, Family::V6);
}

#[test]
fn a_frontend_killed_mid_download_hands_its_flow_to_the_next() {
    restart_mid_download("restart after SIGKILL", Stop::Kill, Family::V4);
}

#[test]
fn a_frontend_killed_mid_download_hands_its_flow_to_the_next_over_ipv6() {
    restart_mid_download("restart after SIGKILL", Stop::Kill, Family::V6);
}

/// Ten requests from `client`, each on a new connection, spread over the four pools'
/// paths (so every back-end answers some); how many got a 200.
fn served_of_ten() -> usize {
    let script = format!(
        "for p in img/logo.svg api/status.json static/app.css files/1K.bin \
                  img/logo.svg api/status.json static/app.css files/1K.bin \
                  img/logo.svg files/1K.bin; do \
           curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/$p || echo failed; \
         done"
    );
    let out = stdout(&mut support::in_node(
        &LAB,
        "client",
        &["sh", "-c", &script],
    ));
    out.lines().filter(|l| *l == "200").count()
}

/// Runs `baton ARGS` in `node` as a second daemon beside a running one: it must exit
/// non-zero on its own within 20 s (it is killed and the test fails otherwise); its
/// standard error.
fn second_daemon_refused(node: &str, args: &[&str]) -> String {
    let bin = env!("CARGO_BIN_EXE_baton");
    let mut all = vec!["lab", "exec", node, "--", bin];
    all.extend_from_slice(args);
    let log = PathBuf::from(format!("/run/{}-lab/{node}-second.log", &*LAB));
    let mut child = baton(&LAB, &all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            // What the first daemon's clients meet while both run, for the failure.
            let served = served_of_ten();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a second {args:?} in {node} started beside the first ({served} of 10 requests served meanwhile):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "the second {args:?} exited 0:\n{err}");
    err
}

#[test]
fn a_second_daemon_is_refused_and_a_killed_ones_successor_starts() {
    let Some(mut cluster) = cluster(
        "a_second_daemon_is_refused_and_a_killed_ones_successor_starts",
        Family::V4,
    ) else {
        return;
    };
    // The example as it is: no `metrics` address, whose bind would refuse a second
    // daemon by accident (and without naming the first).
    let text = support::frontend_config(&LAB);
    assert!(
        !text.contains("\nmetrics"),
        "the example has no metrics address"
    );
    let config = support::config_file(&LAB, "fe-lock", &text);
    let config = config.to_str().unwrap().to_string();
    let start_frontend = || {
        Daemon::start(
            &LAB,
            "fe",
            &["frontend", "--config", &config],
            "event=ready",
        )
    };
    let first = start_frontend();
    assert_eq!(served_of_ten(), 10, "the cluster serves");

    // The same file again: refused, naming the first; nothing of the first touched.
    let err = second_daemon_refused("fe", &["frontend", "--config", &config]);
    eprintln!("second front-end: {err}");
    assert!(
        err.contains(&format!(
            "another baton frontend is running: pid {}",
            first.pid()
        )),
        "the refusal names the running front-end's pid {}:\n{err}",
        first.pid()
    );
    assert!(err.contains(&config), "and its configuration:\n{err}");
    assert!(err.contains("interface eth0"), "and its interface:\n{err}");
    // `--detach` would pull the pins and the table from under it: refused as well.
    let err = second_daemon_refused("fe", &["frontend", "--config", &config, "--detach"]);
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert_eq!(served_of_ten(), 10, "the first front-end still serves");

    // The same for a back-end agent: a second one on be1 with be1's file.
    let be1 = format!("/run/{}-lab/be1.toml", &*LAB);
    let agent_pid = cluster.backends[0].0.pid();
    let err = second_daemon_refused("be1", &["backend", "--config", &be1]);
    eprintln!("second agent: {err}");
    assert!(
        err.contains(&format!(
            "another baton backend is running: pid {agent_pid}"
        )),
        "the refusal names be1's agent (pid {agent_pid}):\n{err}"
    );
    assert!(err.contains(&be1), "{err}");
    assert_eq!(served_of_ten(), 10, "be1's module untouched");

    // A crash leaves the locks free: the successors start and adopt what is pinned.
    first.kill();
    let next = start_frontend();
    assert!(
        next.log_text().contains("state=reattached"),
        "{}",
        next.log_text()
    );
    cluster.backends.remove(0).0.kill();
    let agent = Daemon::start(
        &LAB,
        "be1",
        &["backend", "--config", &be1],
        "event=reattached ",
    );
    assert_eq!(served_of_ten(), 10, "served after both successors started");
    // And their clean exits free the locks as well.
    next.stop();
    agent.stop();
    let again = start_frontend();
    assert_eq!(served_of_ten(), 10);
    again.stop();
}
