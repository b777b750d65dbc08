//! The front-end tier in the lab: `baton lab up --frontends 2 --cluster` (two front-ends,
//! each with its BIRD peering with the router's over BGP with BFD; three nginx back-ends
//! with their agents), everything real: kernel TCP, nginx, curl, BIRD 2.
//!
//! - Both front-ends announce the VIP and the router spreads new connections over them
//!   by the 4-tuple: of 200 connections from one client, each front-end hands some off,
//!   and every one is served.
//! - A front-end whose daemon is stopped (SIGTERM) withdraws the VIP at its drain: the
//!   router's route loses it, and every new connection goes to the other, served.
//! - A front-end whose daemon is killed (SIGKILL: no drain, no exit path) is withdrawn
//!   all the same: the device its VIP was on goes with the daemon's descriptors.
//! - A front-end none of whose back-ends is up (its health checks fail) withdraws, and
//!   announces again when one is back.
//! - A handshake made with one front-end and finished with the other (its request sent
//!   there) is handed off by the other: every SYN is answered by a cookie under the
//!   secret the tier shares.
//! - A front-end whose link dies (as a machine would) is withdrawn by the router's BFD
//!   session (not BGP's 3-second hold timer): the router's BIRD says so, and new
//!   connections are served again through the other. The times are printed; the only
//!   bounds on them are generous.
//!
//! Root and BIRD 2 only (each test prints why it skipped otherwise); lab name
//! `bttier<pid>`; one test at a time.

use std::{
    path::Path,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use baton::lab::{Lab, VIP, frontend_addr};
use support::{LabGuard, baton, in_node, ok, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("bttier"));
static SERIAL: Mutex<()> = Mutex::new(());

/// The lab with two front-ends and the whole cluster running, or `None` (said why).
fn tier(test: &str) -> Option<LabGuard> {
    if !Path::new("/usr/sbin/bird").exists() {
        eprintln!("SKIPPED {test}: needs BIRD 2 (scripts/setup installs bird2)");
        return None;
    }
    let guard = support::lab_guard(&LAB, &SERIAL, test)?;
    ok(&mut baton(
        &LAB,
        &["lab", "up", "--frontends", "2", "--cluster"],
    ));
    Some(guard)
}

/// Where the router sends the VIP now.
fn next_hops() -> Vec<std::net::Ipv4Addr> {
    baton::lab::tier::vip_next_hops(&Lab::named(&LAB).unwrap()).unwrap()
}

/// Handoffs front-end `k` has logged so far.
fn handoffs(k: u8) -> usize {
    frontend_log(k).matches(" event=handoff ").count()
}

/// The handoffs each front-end logged since `before`, once `n` in all are logged (at
/// most 10 s): a handoff is logged when the daemon hears of its confirmation, which may
/// come a little after the client has its answer.
fn handoffs_since(before: [usize; 2], n: usize) -> [usize; 2] {
    let started = Instant::now();
    loop {
        let since = [handoffs(1) - before[0], handoffs(2) - before[1]];
        if since.iter().sum::<usize>() >= n || started.elapsed() > Duration::from_secs(10) {
            return since;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 10 s for front-end `k`'s log to satisfy `done`, or fails with it.
fn wait_for_frontend_log(k: u8, what: &str, done: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let log = frontend_log(k);
        if done(&log) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn frontend_log(k: u8) -> String {
    std::fs::read_to_string(format!("/run/{}-lab/fe{k}/frontend.log", &*LAB)).unwrap_or_default()
}

/// `n` new connections from the client to the VIP, one request each; the HTTP status
/// of each (000 for a connection that failed).
fn connections(n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/; done"
    );
    stdout(&mut in_node(&LAB, "client", &["sh", "-c", &script]))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_all_served(codes: &[String]) {
    let failed = codes.iter().filter(|c| *c != "200").count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} connections failed: {codes:?}",
        codes.len()
    );
}

/// Waits up to `within` for the router's route to the VIP to be `want`; how long it took.
fn wait_for_next_hops(want: &[std::net::Ipv4Addr], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let hops = next_hops();
        if hops == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the router still routes {VIP} via {hops:?} after {within:?}, not {want:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The process id of `baton frontend` in front-end `k`'s namespace.
fn frontend_pid(k: u8) -> i32 {
    let ns = format!("{}-fe{k}", &*LAB);
    stdout(std::process::Command::new("ip").args(["netns", "pids", &ns]))
        .lines()
        .filter_map(|p| p.trim().parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("frontend"))
        })
        .unwrap_or_else(|| panic!("no baton frontend in {ns}"))
}

#[test]
fn both_frontends_announce_the_vip_and_take_connections() {
    let Some(_lab) = tier("both_frontends_announce_the_vip_and_take_connections") else {
        return;
    };
    let both = [frontend_addr(1), frontend_addr(2)];
    assert_eq!(next_hops(), both, "one ECMP route over both front-ends");
    let head = support::curl(
        &LAB,
        &["-D", "-", "-o", "/dev/null", &format!("http://{VIP}/")],
    );
    assert!(
        support::served_by(&head).is_some(),
        "a back-end answered through the VIP: {head}"
    );
    // That request's handoff logged first, so that it is not counted below.
    assert_eq!(handoffs_since([0, 0], 1).iter().sum::<usize>(), 1);
    let before = [handoffs(1), handoffs(2)];
    let codes = connections(200);
    assert_all_served(&codes);
    let per_frontend = handoffs_since(before, 200);
    eprintln!(
        "handoffs of 200 connections: fe1 {}, fe2 {}",
        per_frontend[0], per_frontend[1]
    );
    assert_eq!(
        per_frontend.iter().sum::<usize>(),
        200,
        "each connection handed off once"
    );
    // With the 4-tuple hashed, the chance that 200 connections from random ports all
    // land on one of two front-ends is 2^-199: zero here means no multipath, or a hash
    // of the addresses alone (one client, one front-end).
    assert!(
        per_frontend.iter().all(|&n| n > 0),
        "both front-ends take connections: {per_frontend:?}"
    );
    // `baton status` on a front-end shows the announcement.
    let status = stdout(&mut in_node(
        &LAB,
        "fe1",
        &[
            env!("CARGO_BIN_EXE_baton"),
            "status",
            "--config",
            &format!("/run/{}-lab/fe1/frontend.toml", &*LAB),
        ],
    ));
    assert!(
        status.contains("announce: VIP announced on baton-vip"),
        "{status}"
    );
}

#[test]
fn a_stopped_frontend_withdraws_the_vip_and_the_other_serves() {
    let Some(_lab) = tier("a_stopped_frontend_withdraws_the_vip_and_the_other_serves") else {
        return;
    };
    assert_eq!(next_hops(), [frontend_addr(1), frontend_addr(2)]);
    let pid = frontend_pid(2);
    let stopped = Instant::now();
    // SAFETY: kill(2) on the daemon's process id, read from its namespace just now.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let took = wait_for_next_hops(&[frontend_addr(1)], Duration::from_secs(10));
    eprintln!(
        "fe2 stopped: the router's route lost it {} ms after SIGTERM",
        took.as_millis()
    );
    while baton::netns::running(pid) {
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "fe2's daemon still runs"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let log = frontend_log(2);
    let withdrawn = log
        .lines()
        .position(|l| l.contains(" event=announce ") && l.contains("state=withdrawn"))
        .unwrap_or_else(|| panic!("fe2 logged no withdrawal:\n{log}"));
    let draining = log
        .lines()
        .position(|l| l.contains(" event=draining "))
        .unwrap();
    assert!(
        withdrawn < draining
            && log
                .lines()
                .nth(withdrawn)
                .unwrap()
                .contains("reason=draining"),
        "withdrawn at the drain, before it:\n{log}"
    );
    let before = [handoffs(1), handoffs(2)];
    assert_all_served(&connections(50));
    assert_eq!(
        handoffs_since(before, 50),
        [50, 0],
        "every new connection went to fe1, none to the stopped fe2"
    );
}

#[test]
fn a_dead_frontend_link_is_withdrawn_by_bfd_and_connections_move() {
    let Some(_lab) = tier("a_dead_frontend_link_is_withdrawn_by_bfd_and_connections_move") else {
        return;
    };
    assert_eq!(next_hops(), [frontend_addr(1), frontend_addr(2)]);
    // fe2's machine dies as far as the network can tell: its link goes down, its daemons
    // keep running with nobody to hear them.
    ok(&mut in_node(
        &LAB,
        "fe2",
        &["ip", "link", "set", "eth0", "down"],
    ));
    // A bound five times BGP's hold time's worth of BFD detections; the check that BFD
    // did it is the router's own word below, not the time.
    let withdrawn = wait_for_next_hops(&[frontend_addr(1)], Duration::from_secs(10));
    eprintln!(
        "fe2's link down: the router's route lost it after {} ms; new connections all served from then on",
        withdrawn.as_millis()
    );
    let birdc = stdout(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &format!("{}-router", &*LAB),
        "birdc",
        "-s",
        &format!("/run/{}-lab/router/bird.ctl", &*LAB),
        "show",
        "protocols",
        "fe2",
    ]));
    assert!(
        birdc.contains("BFD session down"),
        "the router's BGP session to fe2 ended by BFD, not by the hold timer:\n{birdc}"
    );
    // At once, no wait: from the withdrawal on, every new connection is fe1's.
    let before = [handoffs(1), handoffs(2)];
    assert_all_served(&connections(50));
    assert_eq!(
        handoffs_since(before, 50),
        [50, 0],
        "every new connection went to fe1"
    );
}

#[test]
fn a_killed_frontend_daemon_takes_its_announcement_with_it() {
    let Some(_lab) = tier("a_killed_frontend_daemon_takes_its_announcement_with_it") else {
        return;
    };
    assert_eq!(next_hops(), [frontend_addr(1), frontend_addr(2)]);
    // SIGKILL: no drain, no exit path. The device the VIP was on goes with the daemon's
    // descriptors, and BIRD withdraws what was on it.
    // SAFETY: kill(2) on the daemon's process id, read from its namespace just now.
    unsafe { libc::kill(frontend_pid(2), libc::SIGKILL) };
    let took = wait_for_next_hops(&[frontend_addr(1)], Duration::from_secs(10));
    eprintln!(
        "fe2's daemon killed: the router's route lost it {} ms after SIGKILL",
        took.as_millis()
    );
    let log = frontend_log(2);
    assert!(
        !log.contains("state=withdrawn"),
        "a killed daemon withdraws nothing itself:\n{log}"
    );
    let before = [handoffs(1), handoffs(2)];
    assert_all_served(&connections(50));
    assert_eq!(
        handoffs_since(before, 50),
        [50, 0],
        "every new connection went to fe1"
    );
}

#[test]
fn a_frontend_without_a_backend_up_withdraws_until_one_is_back() {
    let Some(_lab) = tier("a_frontend_without_a_backend_up_withdraws_until_one_is_back") else {
        return;
    };
    let both = [frontend_addr(1), frontend_addr(2)];
    assert_eq!(next_hops(), both);
    // fe2 loses its way to every back-end (its health checks and handoffs go nowhere);
    // fe1 does not. fe2's checks take every back-end down, and it withdraws.
    let block = "table inet bttier { chain out { type filter hook output priority 0; ip daddr 198.18.1.0/24 tcp dport 80 drop; }; }";
    ok(&mut in_node(&LAB, "fe2", &["nft", block]));
    wait_for_next_hops(&[frontend_addr(1)], Duration::from_secs(15));
    // The daemon's log lines go out at the end of its loop's round: soon, not at once.
    wait_for_frontend_log(2, "fe2 withdrew for want of a back-end", |log| {
        log.lines()
            .any(|l| l.contains("state=withdrawn") && l.contains("reason=no_backend_up"))
    });
    let before = [handoffs(1), handoffs(2)];
    assert_all_served(&connections(20));
    assert_eq!(handoffs_since(before, 20), [20, 0], "fe1 took them all");
    // The back-ends are back for fe2: its checks pass again and it announces again.
    ok(&mut in_node(
        &LAB,
        "fe2",
        &["nft", "delete", "table", "inet", "bttier"],
    ));
    wait_for_next_hops(&both, Duration::from_secs(15));
    wait_for_frontend_log(2, "fe2 announced at the start and again now", |log| {
        log.matches("state=announced").count() == 2
    });
}

/// Sends the VIP through one front-end only, `fe<k>`, by a policy-routing rule on the
/// router ahead of the main table, where BIRD keeps the ECMP route: the routers' view
/// moving every flow at once, as a change of the tier does to some of them, without the
/// time BGP and BFD take. `None` takes the rule away.
fn route_vip_only_through(k: Option<u8>) {
    let router = |args: &[&str]| ok(&mut in_node(&LAB, "router", args));
    let vip = format!("{VIP}/32");
    match k {
        Some(k) => {
            router(&[
                "ip",
                "route",
                "replace",
                &vip,
                "via",
                &frontend_addr(k).to_string(),
                "table",
                "101",
            ]);
            // `ip rule add` twice would add two rules: only once.
            let rules = stdout(&mut in_node(&LAB, "router", &["ip", "rule", "show"]));
            if !rules.contains("lookup 101") {
                router(&[
                    "ip", "rule", "add", "to", &vip, "lookup", "101", "priority", "100",
                ]);
            }
        }
        None => {
            router(&["ip", "rule", "del", "to", &vip, "lookup", "101"]);
            router(&["ip", "route", "flush", "table", "101"]);
        }
    }
}

#[test]
fn a_handshake_moved_half_way_completes_on_the_other_frontend() {
    let Some(_lab) = tier("a_handshake_moved_half_way_completes_on_the_other_frontend") else {
        return;
    };
    use std::io::{Read as _, Write as _};
    const CONNECTIONS: usize = 20;
    // Every handshake with fe1 (every SYN answered in XDP, by a SYN cookie under the
    // secret the tier shares) ...
    route_vip_only_through(Some(1));
    let client = format!("{}-client", &*LAB);
    let streams = baton::netns::run_in(&client, || {
        (0..CONNECTIONS)
            .map(|_| {
                std::net::TcpStream::connect_timeout(&(VIP, 80).into(), Duration::from_secs(2))
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    let mut streams: Vec<std::net::TcpStream> = streams
        .into_iter()
        .map(|s| s.expect("handshake through fe1"))
        .collect();
    // ... and every request, the handshake's third segment riding with it, to fe2,
    // which never saw those SYNs: it checks the cookie as fe1 would have, and hands
    // the connection off.
    route_vip_only_through(Some(2));
    let before = [handoffs(1), handoffs(2)];
    let mut failed = Vec::new();
    for (i, s) in streams.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        let outcome = s
            .write_all(b"GET / HTTP/1.1\r\nHost: baton.test\r\nConnection: close\r\n\r\n")
            .and_then(|()| s.read_to_end(&mut answer));
        let head = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        if outcome.is_err() || !head.starts_with("HTTP/1.1 200") {
            failed.push(format!("connection {i}: {outcome:?} {head:?}"));
        }
    }
    route_vip_only_through(None);
    let per_frontend = handoffs_since(before, CONNECTIONS);
    eprintln!(
        "{CONNECTIONS} handshakes with fe1, their requests to fe2: {} failed; handoffs fe1 {}, fe2 {}",
        failed.len(),
        per_frontend[0],
        per_frontend[1]
    );
    assert!(failed.is_empty(), "requests not served: {failed:#?}");
    assert_eq!(
        per_frontend,
        [0, CONNECTIONS],
        "fe2 handed off every connection whose handshake was fe1's"
    );
}
