//! The front-end's XDP fast path in the lab: the whole cluster (`baton frontend` in `fe`,
//! `baton backend` and stock nginx on three back-ends, curl on `client`), with handed-off
//! flows' client segments forwarded by XDP on `fe`'s interface rather than by the slow
//! path in userspace.
//!
//! Root only (each test prints why it skipped otherwise); lab name `batontestfp`; one
//! test at a time.

use std::{process::Command, sync::Mutex};

use baton::lab::{HTTP_PORT, VIP};
use serde_json::Value;
use support::{Cluster, FRONTEND_CONFIG, Family, backend_at, baton, nstat, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btfp"));
static SERIAL: Mutex<()> = Mutex::new(());
const MIB_100: u64 = 100 << 20;

fn curl(args: &[&str]) -> String {
    support::curl(&LAB, args)
}

fn assert_download_byte_exact(name: &str) {
    support::assert_download_byte_exact(&LAB, VIP, name);
}

fn cluster(test: &str) -> Option<Cluster> {
    cluster_with(test, FRONTEND_CONFIG)
}

/// The lab with three back-ends, each with its agent, and the front-end configured by
/// `config` (the example's, edited), its fast path attached.
fn cluster_with(test: &str, config: &str) -> Option<Cluster> {
    let cluster = Cluster::builder(&LAB, &SERIAL, test)
        .frontend(config)
        .up()?;
    cluster.assert_fast_path_attached();
    Some(cluster)
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

/// The sum of a kernel SNMP counter over the back-ends.
fn backends_nstat(counter: &str) -> u64 {
    (1..=3)
        .map(|k| nstat(&LAB, &format!("be{k}"), counter))
        .sum()
}

#[test]
fn the_fast_path_carries_a_download_and_the_cluster_stays_byte_exact() {
    let Some(mut cluster) = cluster("fast path, routing and 100 MiB") else {
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

    let log = cluster.stop_frontend();
    let handoffs = support::logged_number(&log, "frontend_stats", "handoffs_completed");
    let slow = support::logged_number(&log, "frontend_stats", "packets_forwarded");
    let fast = support::logged_number(&log, "fastpath_counters", "forwarded");
    eprintln!(
        "{handoffs} handoffs; slow path forwarded {slow} packets, fast path {fast}; \
         fast-path counters: {}",
        log.lines()
            .find(|l| l.contains("event=fastpath_counters"))
            .unwrap_or("")
    );
    assert!(handoffs >= 7, "{log}");
    assert_eq!(
        support::logged_number(&log, "fastpath_stats", "flows_installed"),
        handoffs,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "fastpath_stats", "load_failed"),
        0
    );
    assert_eq!(
        support::logged_number(&log, "fastpath_counters", "pass_bad_checksum"),
        0
    );
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
    assert!(
        FRONTEND_CONFIG.contains("fast_path = true"),
        "the example turns it on"
    );
    // One back-end: the default pool keeps be1 alone.
    let others: String = [2, 3]
        .map(|k| {
            let at = backend_at(k, HTTP_PORT);
            format!("    {{ address = \"{at}\", id = \"be{k}\" }},\n")
        })
        .concat();
    assert!(
        FRONTEND_CONFIG.contains(&others),
        "the example's default pool"
    );
    let fe_text = FRONTEND_CONFIG
        .replace("fast_path = true", "fast_path = false")
        .replace(&others, "");
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, "fast path off")
        .backends(1)
        .frontend_named("fe-off", &fe_text)
        .up()
    else {
        return;
    };
    assert!(cluster.frontend().log_text().contains("fast_path=off"));
    assert_download_byte_exact("1M.bin");
    let log = cluster.stop_frontend();
    assert!(
        support::logged_number(&log, "frontend_stats", "packets_forwarded") > 10,
        "{log}"
    );
    assert!(!log.contains("event=fastpath_counters"), "{log}");
    drop(cluster);
}

/// wrk on `client` with `args`, its standard output.
fn wrk(args: &[&str]) -> String {
    let all = [&["lab", "exec", "client", "--", "wrk"][..], args].concat();
    stdout(&mut baton(&LAB, &all))
}

/// The fast path's counters now, by name (`support::fastpath_counters`).
fn fastpath_counters() -> std::collections::HashMap<&'static str, u64> {
    support::fastpath_counters(&LAB)
}

/// How much each counter grew from `before` to `after`.
fn grown(
    before: &std::collections::HashMap<&'static str, u64>,
    after: &std::collections::HashMap<&'static str, u64>,
) -> std::collections::HashMap<&'static str, u64> {
    after.iter().map(|(k, v)| (*k, v - before[k])).collect()
}

/// Transmit checksum offload on the client's interface: off (as `lab up` leaves it, so
/// the client sends complete checksums like a host behind a real wire) or on (a veth then
/// carries the bare pseudo-header sum, `CHECKSUM_PARTIAL`).
fn client_tx_offload(on: bool) {
    let state = if on { "on" } else { "off" };
    support::ok(&mut baton(
        &LAB,
        &[
            "lab", "exec", "client", "--", "ethtool", "-K", "eth0", "tx", state,
        ],
    ));
}

/// Deterministic incompressible bytes (xorshift64).
fn body(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// curl on `client` with `ARGS`, its standard output; failing the test with curl's
/// output and what the back-ends' kernels thought of the checksums if curl fails (a
/// segment a back-end drops for its checksum is retransmitted in vain until curl's
/// `-m`, which ARGS should set short).
fn curl_checked(args: &[&str]) -> String {
    let csum_backends = backends_nstat("TcpInCsumErrors");
    let mut all = vec!["lab", "exec", "client", "--", "curl", "-sS"];
    all.extend_from_slice(args);
    let out = baton(&LAB, &all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?}: {stdout}{}\nback-ends' TcpInCsumErrors grew by {}",
        String::from_utf8_lossy(&out.stderr),
        backends_nstat("TcpInCsumErrors") - csum_backends
    );
    stdout
}

/// PUTs `len` bytes from `client` to `/upload/NAME` (nginx's WebDAV PUT stores it on the
/// chosen back-end) and checks that the back-end stored exactly those bytes.
fn assert_upload_byte_exact(name: &str, len: usize) {
    let sent = body(len);
    let file = format!("/run/{LAB}-lab/{name}");
    std::fs::write(&file, &sent).unwrap();
    let url = format!("http://{VIP}/upload/{name}");
    let head = curl_checked(&["-m", "20", "-T", &file, "-D", "-", "-o", "/dev/null", &url]);
    assert!(head.contains("HTTP/1.1 201 Created"), "PUT {url}: {head}");
    let backend = support::served_by(&head).unwrap_or_else(|| panic!("{head}"));
    let stored = std::fs::read(format!("/run/{LAB}-lab/{backend}/www/upload/{name}")).unwrap();
    assert!(
        stored == sent,
        "{backend} stored {} bytes that differ from the {len} sent",
        stored.len()
    );
}

#[test]
fn keep_alive_requests_are_forwarded_by_xdp() {
    let Some(mut cluster) = cluster("keep-alive requests in XDP") else {
        return;
    };
    let csum_backends = backends_nstat("TcpInCsumErrors");
    let before = fastpath_counters();
    let started = std::time::Instant::now();
    // One connection, one request after another, for 3 s.
    let out = wrk(&["-t1", "-c1", "-d3s", &format!("http://{VIP}/")]);
    let grew = grown(&before, &fastpath_counters());
    let requests = baton::bench::measure::wrk_request_count(&out)
        .unwrap_or_else(|| panic!("no request count from wrk:\n{out}"));
    eprintln!(
        "wrk -c1: {requests} requests in {:.1?}; fast-path counters grew by {grew:?}",
        started.elapsed()
    );
    assert_eq!(
        backends_nstat("TcpInCsumErrors"),
        csum_backends,
        "back-ends' checksum errors: the fast path's incremental update is wrong"
    );
    assert!(
        !out.contains("Non-2xx") && !out.contains("Socket errors"),
        "{out}"
    );
    assert!(
        requests >= 1000,
        "a keep-alive run of 3 s made {requests} requests"
    );
    // Every request but the first (it travels with the handoff) is one client segment
    // with payload, forwarded by XDP; the few that race the flow's installation go up as
    // `pass_no_flow`, and one in 2^16 as `pass_partial_checksum` (below): each request
    // is accounted for, and nearly all went through XDP.
    let passed = grew["pass_no_flow"] + grew["pass_partial_checksum"];
    assert!(
        grew["forwarded"] + passed + 1 >= requests && grew["forwarded"] * 100 >= requests * 99,
        "{requests} requests, {} forwarded by XDP: {grew:?}",
        grew["forwarded"]
    );
    // A complete checksum equals the pseudo-header sum one time in 2^16: allow that.
    assert!(
        grew["pass_partial_checksum"] <= 1 + requests / 4096,
        "complete checksums taken for partial ones: {grew:?}"
    );
    assert_eq!(grew["pass_bad_checksum"], 0, "{grew:?}");
    let log = cluster.stop_frontend();
    let handoffs = support::logged_number(&log, "frontend_stats", "handoffs_completed");
    let slow = support::logged_number(&log, "frontend_stats", "packets_forwarded");
    assert!(handoffs >= 1, "{log}");
    // The handoff's few packets and the close, plus any segment taken for partial.
    assert!(
        slow <= 4 * handoffs + grew["pass_partial_checksum"],
        "slow path forwarded {slow} packets for {handoffs} connections:\n{log}"
    );
    // The once-a-second scan read the table in batches and saw the connection forwarding
    // (else the core would time it out as idle while XDP carries it).
    let book = |key| support::logged_number(&log, "fastpath_stats", key);
    assert!(book("batch_reads") >= 1, "{log}");
    assert_eq!(book("batch_read_errors"), 0, "{log}");
    assert!(book("activity_noted") >= 1, "{log}");
}

/// An IPv6 connection whose client segments the XDP program forwards stays alive to the
/// core: the once-a-second activity scan reads the IPv6 flow table as it reads the IPv4
/// one. With an idle timeout of 1.5 s, one keep-alive connection runs 5 s; were the scan
/// blind to the IPv6 table, the core would time the connection out as idle while XDP
/// carries it, remove its entry and leave the client's next segments to a core that no
/// longer knows it.
#[test]
fn an_ipv6_connection_forwarded_by_xdp_is_alive_to_the_core() {
    let config = FRONTEND_CONFIG.replace("[limits]\n", "[limits]\nidle_timeout_ms = 1500\n");
    assert_ne!(config, FRONTEND_CONFIG, "the example has no [limits]");
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, "IPv6 activity scan")
        .frontend(&config)
        .family(Family::V6)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    let before = fastpath_counters();
    let out = wrk(&["-t1", "-c1", "-d5s", &Family::V6.url("/")]);
    let grew = grown(&before, &fastpath_counters());
    let requests = baton::bench::measure::wrk_request_count(&out)
        .unwrap_or_else(|| panic!("no request count from wrk:\n{out}"));
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    let book = |key| support::logged_number(&log, "fastpath_stats", key);
    eprintln!(
        "wrk -c1 over IPv6: {requests} requests; XDP forwarded {}; activity noted {}; idle \
         timeouts {}",
        grew["forwarded"],
        book("activity_noted"),
        core("idle_timeouts"),
    );
    assert!(
        !out.contains("Non-2xx") && !out.contains("Socket errors"),
        "{out}"
    );
    assert!(
        requests >= 1000,
        "a keep-alive run of 5 s made {requests} requests"
    );
    // Nearly every request after the first went through XDP's IPv6 path.
    assert!(
        grew["forwarded"] * 100 >= requests * 99,
        "{requests}: {grew:?}"
    );
    assert_eq!(core("idle_timeouts"), 0, "{log}");
    // A scan a second for 5 s, each seeing the connection forwarding.
    assert!(book("activity_noted") >= 3, "{log}");
}

/// The fast path takes each flow in as its request goes to the back-end, and forwards the
/// client's acknowledgement of the back-end's answer and the client's FIN itself,
/// telling the daemon through its ring: almost nothing of a `Connection: close` request
/// after the request itself reaches the slow path, and the core still sees every
/// handoff and close through, so with a short grace period every flow is gone soon
/// after the load stops. The back-ends copy no FIN, whether theirs comes first (on
/// nginx's response) or after the client's (curl's connections): the close is the
/// client's alone. Were the ring's notices lost, each flow whose FIN went through XDP
/// would wait for the idle timeout (an hour).
#[test]
fn client_replies_and_fins_are_forwarded_by_xdp_and_their_flows_still_close() {
    let config = FRONTEND_CONFIG.replace("[limits]\n", "[limits]\ntime_wait_ms = 500\n");
    assert_ne!(config, FRONTEND_CONFIG, "the example has no [limits]");
    let Some(mut cluster) = cluster_with("client FINs in XDP", &config) else {
        return;
    };
    let before = fastpath_counters();
    let out = wrk(&[
        "-t1",
        "-c4",
        "-d3s",
        "-H",
        "Connection: close",
        &format!("http://{VIP}/"),
    ]);
    assert!(
        !out.contains("Non-2xx") && !out.contains("Socket errors"),
        "{out}"
    );
    // With `Connection: close` nginx's FIN rides on the response; a client that closes
    // first (curl, as browsers do) gets nginx's FIN on its own, after its own: its
    // grace period lasts until its ACK of that FIN has gone by.
    for _ in 0..20 {
        curl(&["-sS", "-o", "/dev/null", &format!("http://{VIP}/")]);
    }
    // Past every grace period (0.5 s) and an activity scan (1 s).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let grew = grown(&before, &fastpath_counters());
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    let book = |key| support::logged_number(&log, "fastpath_stats", key);
    let handoffs = core("handoffs_completed");
    let slow = core("packets_forwarded");
    eprintln!(
        "{handoffs} connections; FINs forwarded by XDP {}; answers XDP saw {}, handoffs \
         it confirmed {}; client packets forwarded by the slow path {slow}; {grew:?}",
        grew["forwarded_fin"],
        book("answers_noted"),
        core("handoffs_confirmed_by_fast_path"),
    );
    assert!(handoffs >= 100, "{out}\n{log}");
    assert!(book("flows_awaiting_answer") >= handoffs, "{log}");
    // The entry is in before the request leaves, so before the client can reply: its
    // FIN goes through XDP, and the slow path forwards next to nothing (a segment
    // retransmitted, say). Generous bounds, for a loaded machine.
    assert!(grew["forwarded_fin"] * 10 >= handoffs * 9, "{grew:?}");
    assert!(slow * 10 <= handoffs, "slow path forwarded {slow}: {log}");
    assert_eq!(grew["pass_ring_full"], 0, "{grew:?}");
    // Every record read, each for a flow the core tracked.
    assert_eq!(book("client_fins_noted"), grew["forwarded_fin"], "{log}");
    assert!(book("answers_noted") >= grew["forwarded_answer"], "{log}");
    // XDP took in no back-end FIN, and no notice of one was read. (Under `Connection:
    // close` the server's first answer carries its FIN, and its copy, which would
    // confirm the handoff, reaches the core after XDP has confirmed it: counted in
    // `backend_fins_ignored`, it changes nothing. No FIN is copied after that.)
    assert_eq!(grew["backend_fin_noted"], 0, "{grew:?}");
    assert_eq!(book("backend_fin_notices_ignored"), 0, "{log}");
    assert_eq!(book("notices_short"), 0, "{log}");
    assert_eq!(
        core("client_fins_from_fast_path"),
        grew["forwarded_fin"],
        "{log}"
    );
    assert_eq!(core("client_fins_unknown"), 0, "{log}");
    // And every flow closed: none left tracked, each entry removed from the table.
    assert_eq!(core("connections"), 0, "{log}");
    assert_eq!(core("idle_timeouts"), 0, "{log}");
    // (Removed by the daemon at the close, or by the program when the client's next
    // connection on the ports came first: `closed_flow_replaced`.)
    assert_eq!(
        book("flows_removed") + book("flows_replaced_by_fast_path"),
        book("flows_installed"),
        "{log}"
    );
}

#[test]
fn an_upload_is_forwarded_by_xdp_and_arrives_byte_exact() {
    let Some(mut cluster) = cluster("upload in XDP") else {
        return;
    };
    const LEN: usize = 4 << 20;
    let csum_backends = backends_nstat("TcpInCsumErrors");
    let before = fastpath_counters();
    let started = std::time::Instant::now();
    assert_upload_byte_exact("upload.bin", LEN);
    let took = started.elapsed();
    let grew = grown(&before, &fastpath_counters());
    eprintln!("{LEN}-byte PUT in {took:.1?}; fast-path counters grew by {grew:?}");
    assert_eq!(
        backends_nstat("TcpInCsumErrors"),
        csum_backends,
        "back-ends' checksum errors: the fast path's incremental update is wrong"
    );
    // curl waits for `100 Continue`, which comes from the back-end, so the whole body
    // follows the handoff: at least one segment per 1500 bytes through XDP.
    assert!(
        grew["forwarded"] as usize >= LEN / 1500,
        "{} segments forwarded by XDP for {LEN} bytes: {grew:?}",
        grew["forwarded"]
    );
    // A complete checksum equal to the pseudo-header sum (one in 2^16) goes up as
    // partial; so, on a loaded machine, does the odd segment the router's GRO merged and
    // split again, which leaves with a partial checksum. Treating complete ones as
    // partial would send them all.
    assert!(
        grew["pass_partial_checksum"] <= 1 + grew["forwarded"] / 100,
        "complete checksums taken for partial ones: {grew:?}"
    );
    let log = cluster.stop_frontend();
    let slow = support::logged_number(&log, "frontend_stats", "packets_forwarded");
    // Segments that arrive between the back-end's answer and the fast path's entry
    // (installed when the handoff is confirmed) go up as `pass_no_flow`; how many depends
    // on timing, so the bound is what the program passed up, and a small share of the
    // body.
    let passed = grew["pass_no_flow"] + grew["pass_control"] + grew["pass_partial_checksum"];
    assert!(
        slow <= passed && slow * 20 <= grew["forwarded"],
        "slow path forwarded {slow} packets, XDP passed up {passed} and forwarded {}:\n{log}",
        grew["forwarded"]
    );
}

#[test]
fn a_client_sending_partial_checksums_is_served_by_the_slow_path() {
    let Some(mut cluster) = cluster("partial checksums") else {
        return;
    };
    const REQUESTS: usize = 10;
    const LEN: usize = 1 << 20;
    let csum_backends = backends_nstat("TcpInCsumErrors");
    client_tx_offload(true);
    let before = fastpath_counters();
    // REQUESTS requests on one connection, then an upload.
    let url = format!("http://{VIP}/files/1K.bin");
    let mut args = vec!["-m", "5", "-w", "%{http_code}\\n"];
    for _ in 0..REQUESTS {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let codes = curl_checked(&args);
    assert_eq!(
        backends_nstat("TcpInCsumErrors"),
        csum_backends,
        "back-ends' checksum errors: a partial checksum left the front-end"
    );
    assert_eq!(
        codes.lines().filter(|c| *c == "200").count(),
        REQUESTS,
        "{codes}"
    );
    assert_upload_byte_exact("partial.bin", LEN);
    let grew = grown(&before, &fastpath_counters());
    client_tx_offload(false);
    eprintln!("with tx offload on: fast-path counters grew by {grew:?}");
    // Requests 2..REQUESTS and the upload's segments all went up: as partial, or as
    // `pass_no_flow` for those that raced the flow's installation (how many depends on
    // timing).
    assert!(
        (grew["pass_partial_checksum"] + grew["pass_no_flow"]) as usize
            >= REQUESTS - 2 + LEN / 1500,
        "{grew:?}"
    );
    let log = cluster.stop_frontend();
    let slow = support::logged_number(&log, "frontend_stats", "packets_forwarded");
    assert!(
        slow as usize >= REQUESTS - 2 + LEN / 1500,
        "slow path forwarded {slow}:\n{log}"
    );
}

/// While the core's half-open table is full it has XDP answer SYNs with cookies: here
/// the table holds one entry (`max_half_open = 1`), filled by a single spoofed SYN from
/// the router whose SYN/ACKs nobody answers, and kept for 14 s of SYN/ACK retries. Every
/// client connection meanwhile is answered by the program (never reaching the core
/// as a SYN), taken by the core from its cookie ACK, handed off and served byte-exact;
/// once the spoofed entry times out, cookies are released.
#[test]
fn syns_are_answered_by_xdp_with_cookies_while_the_half_open_table_is_full() {
    // The flood's cookies, engaged by the core: with every SYN answered in XDP they
    // would be engaged from the start and never released, so the test says it is off.
    let config = FRONTEND_CONFIG
        .replacen("[tcp]\n", "[tcp]\nsyns_in_xdp = false\n", 1)
        .replace("max_half_open = 4096", "max_half_open = 1")
        .replace(
            "request_timeout_ms = 10000",
            "request_timeout_ms = 10000\nsyn_ack_rto_ms = 2000\nsyn_ack_retries = 2",
        );
    assert!(
        config.contains("max_half_open = 1\n")
            && config.contains("syn_ack_retries = 2")
            && config.contains("syns_in_xdp = false\n")
    );
    let Some(mut cluster) = cluster_with("SYN cookies from XDP", &config) else {
        return;
    };
    let fe = cluster.frontend();
    let before = fastpath_counters();
    support::ok(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "router",
            "--",
            env!("CARGO_BIN_EXE_synflood"),
            "--target",
            &format!("{VIP}:{HTTP_PORT}"),
            "--sources",
            // Spoofed sources: in the lab's range, owned by no node.
            "198.18.64.0/30",
            "--count",
            "1",
        ],
    ));
    support::wait_for_log(
        fe,
        std::time::Duration::from_secs(5),
        "syn_cookies state=engaged",
        |log| log.contains("event=syn_cookies state=engaged"),
    );
    let connections = 5;
    for _ in 0..connections - 1 {
        let head = curl(&["-D", "-", "-o", "/dev/null", &format!("http://{VIP}/img/")]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Window scaling, SACK and timestamps kept in the cookie's TSval: a download that
    // needs a scaled window arrives whole.
    assert_download_byte_exact("1M.bin");
    let grown = grown(&before, &fastpath_counters());
    eprintln!("fast path counters grown: {grown:?}");
    assert!(
        grown["syn_cookies_sent"] >= connections,
        "every client SYN answered in XDP: {grown:?}"
    );
    let released = support::wait_for_log(
        fe,
        std::time::Duration::from_secs(30),
        "syn_cookies state=released",
        |log| log.contains("event=syn_cookies state=released"),
    );
    eprintln!("released {released:?} after the last request");
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    eprintln!(
        "frontend_stats: syns_received={} syn_cookies_sent={} syn_cookies_accepted={} handoffs_completed={}",
        core("syns_received"),
        core("syn_cookies_sent"),
        core("syn_cookies_accepted"),
        core("handoffs_completed"),
    );
    assert_eq!(
        core("syns_received"),
        1,
        "only the spoofed SYN reached the core"
    );
    assert_eq!(
        core("syn_cookies_sent"),
        0,
        "the core made no cookie itself"
    );
    assert!(core("syn_cookies_accepted") >= connections, "{log}");
    assert!(core("handoffs_completed") >= connections);
}
