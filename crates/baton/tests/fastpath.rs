//! The front-end's XDP fast path in the lab: the whole cluster (`baton frontend` in `fe`,
//! `baton backend` and stock nginx on three back-ends, curl on `client`), with handed-off
//! flows' client segments forwarded by XDP on `fe`'s interface rather than by the slow
//! path in userspace.
//!
//! Root only (each test prints why it skipped otherwise); lab name `batontestfp`; one
//! test at a time.

use std::{process::Command, sync::Mutex};

use serde_json::Value;
use support::{Daemon, LabGuard, baton, lab_guard, nstat, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btfp"));
static SERIAL: Mutex<()> = Mutex::new(());
use support::FRONTEND_CONFIG;
const VIP: &str = "198.18.2.1";
const MIB_100: u64 = 100 << 20;

/// The lab with three back-ends, each with its agent, and the front-end.
struct Cluster {
    _backends: Vec<Daemon>,
    frontend: Daemon,
    _guard: LabGuard,
}

fn curl(args: &[&str]) -> String {
    support::curl(&LAB, args)
}

fn assert_download_byte_exact(name: &str) {
    support::assert_download_byte_exact(&LAB, VIP, name);
}

fn cluster(test: &str) -> Option<Cluster> {
    let guard = lab_guard(&LAB, &SERIAL, test)?;
    support::ok(&mut baton(&LAB, &["lab", "up", "--backends", "3"]));
    let backends = support::start_backends(&LAB, 3, "")
        .into_iter()
        .map(|(daemon, _)| daemon)
        .collect();
    let frontend = support::start_frontend(&LAB, "fe", FRONTEND_CONFIG);
    assert!(
        frontend.log_text().contains("fast_path=xdp"),
        "the fast path did not attach:\n{}",
        frontend.log_text()
    );
    Some(Cluster {
        _backends: backends,
        frontend,
        _guard: guard,
    })
}

/// `fe`'s `eth0` counters (`ip -s -j link show`): rx bytes + tx bytes.
fn fe_interface_bytes() -> u64 {
    let out = stdout(Command::new("ip").args([
        "-n",
        &format!("{LAB}-fe"),
        "-s",
        "-j",
        "link",
        "show",
        "eth0",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    s["rx"]["bytes"].as_u64().unwrap() + s["tx"]["bytes"].as_u64().unwrap()
}

/// `key=value` of the first `event=EVENT` line of a daemon log.
fn logged(log: &str, event: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(&format!(" event={event} ")))
        .unwrap_or_else(|| panic!("no {event} line:\n{log}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

/// The sum of a kernel SNMP counter over the back-ends.
fn backends_nstat(counter: &str) -> u64 {
    (1..=3)
        .map(|k| nstat(&LAB, &format!("be{k}"), counter))
        .sum()
}

#[test]
fn the_fast_path_carries_a_download_and_the_cluster_stays_byte_exact() {
    let Some(cluster) = cluster("fast path, routing and 100 MiB") else {
        return;
    };
    let csum_client = nstat(&LAB, "client", "TcpInCsumErrors");
    let csum_backends = backends_nstat("TcpInCsumErrors");
    for (path, backend) in [("/img/", "be1"), ("/api/", "be2"), ("/static/", "be3")] {
        let head = curl(&["-D", "-", "-o", "/dev/null", &format!("http://{VIP}{path}")]);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(
            head.contains(&format!("X-Baton-Backend: {backend}")),
            "{path}: {head}"
        );
    }
    assert_download_byte_exact("1M.bin");

    let before = fe_interface_bytes();
    let retransmits = nstat(&LAB, "client", "TcpRetransSegs");
    assert_download_byte_exact("100M.bin");
    let grown = fe_interface_bytes() - before;
    // Two curl connections in this window: SHA256SUMS and the file.
    eprintln!(
        "fe eth0 grew by {grown} bytes during a {MIB_100}-byte download ({:.3}%)",
        grown as f64 * 100.0 / MIB_100 as f64
    );
    assert!(
        grown * 100 < MIB_100,
        "fe's interface counters grew by {grown} bytes, not under 1% of {MIB_100}"
    );
    assert_eq!(
        nstat(&LAB, "client", "TcpRetransSegs"),
        retransmits,
        "retransmissions on a clean link"
    );
    assert_eq!(
        nstat(&LAB, "client", "TcpInCsumErrors"),
        csum_client,
        "client checksum errors"
    );
    assert_eq!(
        backends_nstat("TcpInCsumErrors"),
        csum_backends,
        "back-ends' checksum errors: the fast path's checksums are wrong"
    );

    let log = cluster.frontend.stop();
    let handoffs = logged(&log, "frontend_stats", "handoffs_completed");
    let slow = logged(&log, "frontend_stats", "packets_forwarded");
    let fast = logged(&log, "fastpath_counters", "forwarded");
    eprintln!(
        "{handoffs} handoffs; slow path forwarded {slow} packets, fast path {fast}; \
         fast-path counters: {}",
        log.lines()
            .find(|l| l.contains("event=fastpath_counters"))
            .unwrap_or("")
    );
    assert!(handoffs >= 7, "{log}");
    assert_eq!(
        logged(&log, "fastpath_stats", "flows_installed"),
        handoffs,
        "{log}"
    );
    assert_eq!(logged(&log, "fastpath_stats", "load_failed"), 0);
    assert_eq!(logged(&log, "fastpath_counters", "pass_bad_checksum"), 0);
    // Every ACK of the 100 MiB went through XDP, leaving the slow path a handful of
    // packets per connection (held during the handoff, and the client's FIN). How many
    // ACKs a download takes depends on the client's GRO and timing (846 to over 1,000
    // seen here), so the bound is loose: several hundred, and far more than the slow path.
    assert!(
        fast >= 400 && fast >= 5 * slow,
        "fast path forwarded {fast}, slow path {slow}:\n{log}"
    );
    assert!(
        slow <= 4 * handoffs,
        "slow path forwarded {slow} packets for {handoffs} connections:\n{log}"
    );
}

#[test]
fn with_the_fast_path_off_the_slow_path_still_forwards() {
    let Some(guard) = lab_guard(&LAB, &SERIAL, "fast path off") else {
        return;
    };
    support::ok(&mut baton(&LAB, &["lab", "up", "--backends", "1"]));
    let _backend = support::start_backends(&LAB, 1, "");
    assert!(
        FRONTEND_CONFIG.contains("fast_path = true"),
        "the example turns it on"
    );
    let fe_text = FRONTEND_CONFIG
        .replace("fast_path = true", "fast_path = false")
        .replace(
            r#"["198.18.1.11:80", "198.18.1.12:80", "198.18.1.13:80"]"#,
            r#"["198.18.1.11:80"]"#,
        );
    let frontend = support::start_frontend(&LAB, "fe-off", &fe_text);
    assert!(frontend.log_text().contains("fast_path=off"));
    assert_download_byte_exact("1M.bin");
    let log = frontend.stop();
    assert!(
        logged(&log, "frontend_stats", "packets_forwarded") > 10,
        "{log}"
    );
    assert!(!log.contains("event=fastpath_counters"), "{log}");
    drop(guard);
}
