//! Privileged lab tests of `baton frontend`, the slow path on real packets: real
//! namespaces, nginx back-ends, curl and kernel TCP on the client.
//!
//! The back-ends do not run the back-end module yet, so a handoff cannot complete: the
//! SYN' reaches nginx, which answers the client's address directly, untranslated, and the
//! client's TCP resets it. These tests therefore cover what the front-end does on its
//! own: the client's handshake, request limits, garbage, a back-end that never answers,
//! and the host's TCP staying out of the way. The end-to-end handoff test (the request
//! lands on the back-end its path names, byte-exact downloads) lands with the back-end
//! module.
//!
//! They need root; without it each test prints why it skipped and passes. They use the
//! lab name `batontestfe`, so they never collide with `tests/lab.rs` (`batontest`) or a
//! user's lab, and run one at a time (a lock here, `--test-threads=1` in `scripts/test`).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use baton::lab::{HTTP_PORT, VIP};
use support::{Family, LabGuard, ok};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btfe"));
static SERIAL: Mutex<()> = Mutex::new(());

/// The lab's example configuration (three back-ends, path routes, default pool).
const LAB_CONFIG: &str = support::FRONTEND_CONFIG;

fn baton(args: &[&str]) -> Command {
    support::baton(&LAB, args)
}

/// Takes the lock and brings up a fresh lab (no daemons), or `None` when not root.
fn lab_up(test: &str) -> Option<LabGuard> {
    support::lab_up(&LAB, &SERIAL, test, 3)
}

/// A running `baton frontend` in `fe` with `config` (written under the lab's folder as
/// `NAME.toml`, the example's pin folder moved to this lab's).
fn start_frontend(name: &str, config: &str) -> support::Daemon {
    support::start_frontend(&LAB, name, config)
}

/// The host TCP's count of RSTs sent in `fe`.
fn fe_host_tcp_resets() -> u64 {
    support::nstat(&LAB, "fe", "TcpOutRsts")
}

fn nft_tables_in_fe() -> String {
    String::from_utf8(
        ok(&mut baton(&[
            "lab", "exec", "fe", "--", "nft", "list", "tables",
        ]))
        .stdout,
    )
    .unwrap()
}

/// Runs curl on the client; returns (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["lab", "exec", "client", "--", "curl", "-sS"];
    all.extend_from_slice(args);
    let out = baton(&all).output().expect("spawn curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Connects from the client's namespace with the kernel's TCP, sends `request`, and
/// reads until EOF, a reset or `timeout`. Returns what was read and how it ended.
fn exchange(request: &[u8], timeout: Duration) -> (Vec<u8>, std::io::Result<()>, Duration) {
    exchange_over(Family::V4, request, timeout)
}

/// [`exchange`] with the VIP of `family`.
fn exchange_over(
    family: Family,
    request: &[u8],
    timeout: Duration,
) -> (Vec<u8>, std::io::Result<()>, Duration) {
    let ns = format!("{LAB}-client");
    let request = request.to_vec();
    baton::netns::run_in(&ns, move || {
        let started = Instant::now();
        let target = SocketAddr::from((family.vip(), HTTP_PORT));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .expect("the front-end completes the handshake");
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.write_all(&request).expect("send the request");
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got).map(|_| ());
        (got, end, started.elapsed())
    })
    .expect("enter the client namespace")
}

#[test]
fn frontend_completes_the_client_handshake_itself_and_keeps_the_host_tcp_out() {
    let Some(_lab) = lab_up("frontend handshake") else {
        return;
    };
    let rsts_before = fe_host_tcp_resets();
    // The lab's client sends complete checksums; with transmit offload on, its veth
    // carries partial ones, which the slow path must complete (`checksums_completed`).
    ok(&mut baton(&[
        "lab", "exec", "client", "--", "ethtool", "-K", "eth0", "tx", "on",
    ]));
    let daemon = start_frontend("handshake", LAB_CONFIG);
    assert!(
        nft_tables_in_fe().contains("table inet baton_fe"),
        "the nftables table is installed while the daemon runs"
    );
    // The handoff cannot complete without the back-end module, so curl times out; what
    // matters is that its connection was established, by the front-end alone.
    let (code, out, err) = curl(&[
        "-o",
        "/dev/null",
        "--max-time",
        "2",
        "-w",
        "%{time_connect}",
        &format!("http://{VIP}/img/logo.svg"),
    ]);
    let connect: f64 = out.trim().parse().unwrap_or(0.0);
    assert!(
        connect > 0.0 && connect < 1.0,
        "curl's connection to the VIP was established (time_connect {out:?}, exit {code:?}, {err})"
    );
    let log = daemon.stop();
    eprintln!("{log}");
    assert!(support::logged_number(&log, "frontend_stats", "handshakes_completed") >= 1);
    assert!(
        support::logged_number(&log, "frontend_stats", "handoffs_started") >= 1,
        "the request was dispatched"
    );
    assert!(
        support::logged_number(&log, "frontend_stats", "syn_primes_sent") >= 1,
        "a SYN' went to be1"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "malformed"),
        0,
        "veth partial checksums completed"
    );
    assert!(support::logged_number(&log, "io_stats", "checksums_completed") >= 1);
    assert_eq!(
        fe_host_tcp_resets() - rsts_before,
        0,
        "the host's TCP never answered VIP:80"
    );
    // The table outlives the daemon (so that a restart never lets the host reset a
    // handed-off client); `--detach` removes it.
    assert!(
        nft_tables_in_fe().contains("table inet baton_fe"),
        "the nftables table stays at exit"
    );
    let config = format!("/run/{LAB}-lab/handshake.toml");
    let bin = env!("CARGO_BIN_EXE_baton");
    ok(&mut baton(&[
        "lab", "exec", "fe", "--", bin, "frontend", "--config", &config, "--detach",
    ]));
    assert!(
        !nft_tables_in_fe().contains("baton_fe"),
        "`--detach` removes the nftables table"
    );
    // Other ports of the VIP stay the host's: nothing listens on 81, so the host's TCP
    // refuses the connection (curl exit 7) at once.
    let (code, _, err) = curl(&["--max-time", "2", &format!("http://{VIP}:81/")]);
    assert_eq!(code, Some(7), "VIP:81 refused by the host: {err}");
}

/// `vip6` beside `vip`, in a lab up with `--ipv6`: the daemon guards the IPv6 VIP:80 (the
/// host's TCP never resets an IPv6 client), its capture takes the client's IPv6 SYNs up
/// to the protocol core, which completes the handshake over IPv6 (its SYN/ACK out the
/// raw IPv6 socket), and IPv4 is served as without it.
#[test]
fn an_ipv6_vip_is_guarded_and_captured_beside_the_ipv4_one() {
    let Some(_lab) = support::lab_guard(&LAB, &SERIAL, "frontend vip6") else {
        return;
    };
    ok(&mut baton(&["lab", "up", "--ipv6", "--backends", "3"]));
    let vip6 = baton::lab::VIP6;
    let config = LAB_CONFIG.replacen("\nport = 80", &format!("\nvip6 = \"{vip6}\"\nport = 80"), 1);
    assert!(
        config.contains("vip6"),
        "the example's `port = 80` line moved"
    );
    let rsts_before = fe_host_tcp_resets();
    let daemon = start_frontend("vip6", &config);
    let table = String::from_utf8(
        ok(&mut baton(&[
            "lab", "exec", "fe", "--", "nft", "list", "table", "inet", "baton_fe",
        ]))
        .stdout,
    )
    .unwrap();
    assert!(
        table.contains(&format!("ip6 daddr {vip6} tcp dport 80")) && table.contains("ip daddr"),
        "a rule for each family: {table}"
    );
    let ns = format!("{LAB}-client");
    let (v6, v4) = baton::netns::run_in(&ns, move || {
        let connect = |to: SocketAddr| {
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.kind())
        };
        let v6 = connect(SocketAddr::from((vip6, HTTP_PORT))).map(drop);
        let v4 = connect(SocketAddr::from((VIP, HTTP_PORT))).map(drop);
        (v6, v4)
    })
    .expect("enter the client namespace");
    assert_eq!(v6, Ok(()), "the front-end completes IPv6 handshakes");
    assert_eq!(
        v4,
        Ok(()),
        "the front-end completes IPv4 handshakes as before"
    );
    let log = daemon.stop();
    eprintln!("{log}");
    assert!(log.contains("event=ipv6_services"), "said at start");
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "malformed"),
        0
    );
    assert!(
        support::logged_number(&log, "frontend_stats", "handshakes_completed") >= 2,
        "one handshake of each family"
    );
    assert_eq!(
        fe_host_tcp_resets() - rsts_before,
        0,
        "the host's TCP answered neither family's VIP:80"
    );
}

#[test]
fn frontend_answers_400_to_garbage() {
    answers_400_to_garbage(Family::V4);
}

#[test]
fn frontend_answers_400_to_garbage_over_ipv6() {
    answers_400_to_garbage(Family::V6);
}

fn answers_400_to_garbage(family: Family) {
    let Some(_lab) = support::lab_up_over(&LAB, &SERIAL, "frontend 400", 3, family) else {
        return;
    };
    let rsts_before = fe_host_tcp_resets();
    let daemon = start_frontend(
        "garbage",
        &support::frontend_config_over(LAB_CONFIG, family),
    );
    let (got, end, _) = exchange_over(
        family,
        b"\x01\x02\x03 not http\r\n\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&got);
    assert!(end.is_ok(), "a clean close after the response: {end:?}");
    assert!(text.starts_with("HTTP/1.1 400 "), "got: {text:?}");
    // And from an unmodified client: a method that is not a token.
    let (_, code, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
        "-X",
        "@@",
        family.curl_flag(),
        &family.url("/"),
    ]);
    assert_eq!(code, "400", "curl -X @@: {err}");
    let log = daemon.stop();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "responses_400"),
        2,
        "{log}"
    );
    assert_eq!(fe_host_tcp_resets() - rsts_before, 0, "no host RST");
}

/// The 431 check without window scaling, and with it (below): the announced window's last
/// partial scale unit must still be offered, or the client stops short of the limit and
/// gets a request timeout instead of 431 (`receive_window` in the protocol core).
#[test]
fn frontend_answers_431_to_an_oversized_request_head() {
    let Some(_lab) = lab_up("frontend 431") else {
        return;
    };
    let rsts_before = fe_host_tcp_resets();
    let config = LAB_CONFIG.replace("window_shift = 7", "window_shift = 0");
    assert_ne!(config, LAB_CONFIG, "the example sets window_shift");
    let daemon = start_frontend("oversized", &config);
    assert_431();
    let log = daemon.stop();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "responses_431"),
        1,
        "{log}"
    );
    assert_eq!(fe_host_tcp_resets() - rsts_before, 0, "no host RST");
}

#[test]
fn frontend_answers_431_with_window_scaling() {
    answers_431_with_window_scaling(Family::V4);
}

#[test]
fn frontend_answers_431_with_window_scaling_over_ipv6() {
    answers_431_with_window_scaling(Family::V6);
}

fn answers_431_with_window_scaling(family: Family) {
    let Some(_lab) = support::lab_up_over(&LAB, &SERIAL, "frontend 431, window scaling", 3, family)
    else {
        return;
    };
    let daemon = start_frontend(
        "oversized-ws",
        &support::frontend_config_over(LAB_CONFIG, family),
    );
    assert_431_over(family);
    let log = daemon.stop();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "responses_431"),
        1,
        "{log}"
    );
}

/// 17,000 bytes of one header field, from curl: over the 16 KiB limit.
fn assert_431() {
    assert_431_over(Family::V4);
}

/// [`assert_431`] to the VIP of `family`.
fn assert_431_over(family: Family) {
    let big = format!("X-Big: {}", "a".repeat(17_000));
    let started = Instant::now();
    let (exit, code, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "-H",
        &big,
        family.curl_flag(),
        &family.url("/"),
    ]);
    assert_eq!(code, "431", "exit {exit:?}: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "431 came at once, not after a timeout ({:?})",
        started.elapsed()
    );
}

#[test]
fn frontend_resets_the_client_when_no_backend_answers() {
    let Some(_lab) = lab_up("frontend dead back-end") else {
        return;
    };
    let rsts_before = fe_host_tcp_resets();
    // 198.18.1.99 is on the LAN but nobody has it: the SYN's go unanswered. Budget:
    // 100 + 200 + 400 ms of retransmissions, then no other candidate: reset.
    let config = &format!(
        r#"
        interface = "eth0"
        vip = "{VIP}"
        handoff_key = "0123456789abcdef0123456789abcdef"
        drain_ms = 1000
        [limits]
        handoff_rto_ms = 100
        handoff_retries = 2
        [dispatch]
        default_pool = "dead"
        [dispatch.pools.dead]
        backends = [{{ address = "198.18.1.99:{HTTP_PORT}" }}]
    "#
    );
    let daemon = start_frontend("dead-backend", config);
    let (got, end, elapsed) = exchange(
        b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n",
        Duration::from_secs(10),
    );
    let err = end.expect_err("the client is reset, not answered");
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionReset,
        "{err}; read {got:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "reset within the retry budget, not a hang: {elapsed:?}"
    );
    eprintln!("reset after {elapsed:?}");
    let log = daemon.stop();
    assert!(
        log.contains("event=reset") && log.contains("reason=BackendsExhausted"),
        "the reset is logged with its reason:\n{log}"
    );
    assert!(log.contains("event=handoff_retry"), "{log}");
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "backend_timeouts"),
        1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "syn_prime_retransmits"),
        2,
        "{log}"
    );
    assert_eq!(fe_host_tcp_resets() - rsts_before, 0, "no host RST");
}

/// The client's MSS towards the VIP, as its kernel settled it from the SYN/ACK
/// (`TCP_MAXSEG` once connected: the front-end's announced MSS less the timestamps
/// option's 12 bytes, which the lab's clients use).
fn client_mss() -> u32 {
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('{VIP}', {HTTP_PORT}), timeout=5)\n\
         print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))"
    );
    let out = ok(&mut support::in_node(
        &LAB,
        "client",
        &["python3", "-c", &script],
    ));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("TCP_MAXSEG: {e}: {out:?}"))
}

/// The MSS follows the front-end's interface MTU (issue 21, item 4): with `eth0` at
/// 1400 bytes, the SYN/ACK announces 1360, whether `[tcp] mss` is unset or asks for
/// more (then lowered, and logged); a client taking 1460 at its word would send
/// 1500-byte frames the interface drops.
#[test]
fn the_mss_follows_the_interfaces_mtu() {
    let Some(_lab) = lab_up("mss from the MTU") else {
        return;
    };
    ok(&mut support::in_node(
        &LAB,
        "fe",
        &["ip", "link", "set", "eth0", "mtu", "1400"],
    ));
    let unset = LAB_CONFIG.to_string();
    assert!(
        !unset.contains("\nmss ="),
        "the example leaves tcp.mss unset"
    );
    let asked = LAB_CONFIG.replace("[tcp]\n", "[tcp]\nmss = 1460\n");
    for (name, config, lowered) in [("mss-unset", unset, false), ("mss-1460", asked, true)] {
        let fe = start_frontend(name, &config);
        let log = fe.log_text();
        assert_eq!(
            support::logged(&log, "ready", "mss"),
            "1360",
            "{name}: {log}"
        );
        assert_eq!(
            log.contains(" event=mss_lowered "),
            lowered,
            "{name}: {log}"
        );
        assert_eq!(client_mss(), 1360 - 12, "{name}");
        drop(fe);
    }
}
