//! The one-turn handoff in the lab (docs/design.md, "The one-turn handoff"): with the
//! front-end's `[tcp] one_turn = true`, the request rides in the SYN', the back-ends'
//! nginx takes it with TCP Fast Open (the lab sets `tcp_fastopen` 0x202 and `fastopen=`
//! on the listener), and the server's SYN/ACK' stays on the back-end; a back-end whose
//! TCP does not take SYN data still serves, by the fallback (the SYN/ACK' to the
//! front-end, the request after it).
//!
//! Root only (each test prints why it skipped otherwise); one test at a time.

use std::sync::Mutex;

use baton::backend::BackendModule;
use baton::lab::VIP;
use baton_common::backend::stat;
use support::{baton, in_node, lab_guard, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("bt1t"));
static SERIAL: Mutex<()> = Mutex::new(());

/// `GET path` through the VIP: status line and the back-end that answered.
fn get(path: &str) -> (String, String) {
    let head = support::curl(
        &LAB,
        &["-D", "-", "-o", "/dev/null", &format!("http://{VIP}{path}")],
    );
    let backend = support::served_by(&head).unwrap_or_default();
    (
        head.lines().next().unwrap_or("").trim().to_string(),
        backend,
    )
}

#[test]
fn one_turn_handoffs_take_the_request_in_the_syn_and_fall_back_where_fast_open_is_off() {
    let Some(_guard) = lab_guard(&LAB, &SERIAL, "one-turn handoff") else {
        return;
    };
    support::ok(&mut baton(&LAB, &["lab", "up", "--backends", "3"]));
    for k in 1..=3 {
        let value = stdout(&mut in_node(
            &LAB,
            &format!("be{k}"),
            &["sysctl", "-n", "net.ipv4.tcp_fastopen"],
        ));
        assert_eq!(value.trim(), "514", "be{k}: the lab sets 0x202");
    }
    // be3's TCP takes no SYN data (its listener asks for it, the sysctl refuses it).
    support::ok(&mut in_node(
        &LAB,
        "be3",
        &["sysctl", "-qw", "net.ipv4.tcp_fastopen=1"],
    ));
    let backends = support::start_backends(&LAB, 3, "");
    let config = support::FRONTEND_CONFIG.replacen("[tcp]\n", "[tcp]\none_turn = true\n", 1);
    assert_ne!(config, support::FRONTEND_CONFIG, "no [tcp] table to extend");
    let frontend = support::start_frontend(&LAB, "fe", &config);

    // /img/ goes to be1, /api/ to be2, /static/ to be3 (examples/frontend-lab.toml).
    let rounds = 5;
    for _ in 0..rounds {
        for (path, backend) in [("/img/", "be1"), ("/api/", "be2"), ("/static/", "be3")] {
            let (status, by) = get(path);
            assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
            assert_eq!(by, backend, "{path}");
        }
    }
    // Byte-exact, over the default pool (all three, round robin).
    for name in ["1K.bin", "1M.bin", "1K.bin", "1M.bin"] {
        support::assert_download_byte_exact(&LAB, VIP, name);
    }

    let counters: Vec<[u64; stat::COUNT as usize]> = backends
        .iter()
        .map(|(_, config)| BackendModule::open(config).unwrap().stats().unwrap())
        .collect();
    for (k, c) in counters.iter().enumerate() {
        let named: Vec<_> = stat::NAMES
            .iter()
            .zip(c)
            .filter(|(_, v)| **v != 0)
            .collect();
        eprintln!("be{}: {named:?}", k + 1);
        assert_eq!(c[stat::IN_SYN_DATA_DROPPED as usize], 0, "be{}", k + 1);
        assert_eq!(c[stat::REWRITE_FAILED as usize], 0, "be{}", k + 1);
        assert_eq!(c[stat::IN_SYN_BAD_TAG as usize], 0, "be{}", k + 1);
        assert!(
            c[stat::IN_SYN_DATA_ACCEPTED as usize] >= rounds,
            "be{}: every SYN' carried its request",
            k + 1
        );
    }
    // be1 and be2 took every request in one turn: no SYN/ACK' left them.
    for c in &counters[..2] {
        assert!(c[stat::OUT_SYN_ACK_ABSORBED as usize] >= rounds, "{c:?}");
        assert_eq!(c[stat::OUT_SYN_ACK_TO_FRONTEND as usize], 0, "{c:?}");
        assert_eq!(c[stat::OUT_COPY_TO_FRONTEND as usize], 0, "{c:?}");
    }
    // be3 fell back: its SYN/ACK's went to the front-end, which sent the requests.
    let be3 = &counters[2];
    assert_eq!(be3[stat::OUT_SYN_ACK_ABSORBED as usize], 0, "{be3:?}");
    assert!(
        be3[stat::OUT_SYN_ACK_TO_FRONTEND as usize] >= rounds,
        "{be3:?}"
    );

    // The agents said which back-end cannot take one-turn handoffs.
    let logs: Vec<String> = backends.into_iter().map(|(d, _)| d.stop()).collect();
    assert!(!logs[0].contains("event=fast_open_off"), "{}", logs[0]);
    assert!(
        logs[2].contains("level=warn event=fast_open_off") && logs[2].contains("missing=0x202"),
        "{}",
        logs[2]
    );

    let log = frontend.stop();
    let number = |key| support::logged_number(&log, "frontend_stats", key);
    let (in_syn, after, fast) = (
        number("requests_in_syn"),
        number("requests_after_syn_ack"),
        number("handoffs_confirmed_by_fast_path"),
    );
    eprintln!(
        "front-end: requests_in_syn={in_syn} requests_after_syn_ack={after} \
         handoffs_confirmed_by_fast_path={fast}"
    );
    let handoffs = number("handoffs_completed");
    assert_eq!(in_syn, handoffs, "every request rode in the SYN'");
    assert!(after >= rounds, "be3's fallbacks");
    assert!(
        after <= be3[stat::OUT_SYN_ACK_TO_FRONTEND as usize],
        "only be3 fell back"
    );
    let one_turn: u64 = counters[..2]
        .iter()
        .map(|c| c[stat::OUT_SYN_ACK_ABSORBED as usize])
        .sum();
    assert!(
        fast >= one_turn,
        "one-turn handoffs are confirmed by the client's ACK of the answer, noticed in XDP"
    );
}

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// `tcpi_options` and `tcpi_snd_wscale` of a client downloading `/files/1M.bin` through
/// the VIP, after checking the status and that the body is byte-exact.
fn options_download() -> (u8, u8) {
    let sums = support::curl(&LAB, &[&format!("http://{VIP}/files/SHA256SUMS")]);
    let want = sums.lines().find(|l| l.ends_with(" 1M.bin")).unwrap();
    let view = support::socket_download(&LAB, VIP, "/files/1M.bin", "www.baton.test");
    assert_eq!(view.status, "HTTP/1.1 200 OK");
    assert_eq!(
        Some(view.digest.as_str()),
        want.split_whitespace().next(),
        "byte-exact"
    );
    (view.options, view.snd_wscale)
}

/// The lab's front-end configuration with `syns_in_xdp` and `one_turn` on.
fn with_syns_in_xdp_and_one_turn() -> String {
    let config = support::FRONTEND_CONFIG.replacen(
        "[tcp]\n",
        "[tcp]\nsyns_in_xdp = true\none_turn = true\n",
        1,
    );
    assert_ne!(config, support::FRONTEND_CONFIG, "no [tcp] table to extend");
    config
}

/// [`with_syns_in_xdp_and_one_turn`], with `[tcp] kernel_dispatch` set to `on`.
fn with_kernel_dispatch(on: bool) -> String {
    with_syns_in_xdp_and_one_turn().replacen(
        "[tcp]\n",
        &format!("[tcp]\nkernel_dispatch = {on}\n"),
        1,
    )
}

/// Every SYN answered in XDP (`[tcp] syns_in_xdp`) and the request in the SYN'
/// (`one_turn`), with back-ends that take it (fast open): the front-end's slow path sees
/// one packet per connection, the request, and the handshake never reaches it. Each
/// download is byte-exact, also from a client that sends no timestamps, which keeps
/// window scaling and SACK: its SYN's options wait in XDP's half-open map for its
/// request, as its socket shows. With the map off (`half_open_entries = 0`), such a
/// client gets the cookie's own terms, neither of them.
#[test]
fn with_syns_in_xdp_and_one_turn_the_slow_path_sees_one_packet_per_connection() {
    // The slow path's one turn: dispatch in the kernel, which would take its one packet
    // too, is the next test's.
    let config = with_kernel_dispatch(false);
    let Some(mut cluster) = support::Cluster::builder(&LAB, &SERIAL, "one packet per connection")
        .frontend(&config)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    let connections = 40;
    for i in 0..connections {
        let path = ["/img/", "/api/", "/static/", "/"][i % 4];
        let (status, _) = get(path);
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
    }
    let xdp = support::fastpath_counters(&LAB);
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    eprintln!(
        "{connections} connections: packets_received={} syns_received={} syn_cookies_accepted={} \
         requests_in_syn={} requests_after_syn_ack={} xdp syn_cookies_sent={} handshake_ack_absorbed={}",
        core("packets_received"),
        core("syns_received"),
        core("syn_cookies_accepted"),
        core("requests_in_syn"),
        core("requests_after_syn_ack"),
        xdp["syn_cookies_sent"],
        xdp["handshake_ack_absorbed"],
    );
    let n = connections as u64;
    assert_eq!(xdp["syn_cookies_sent"], n, "every SYN answered in XDP");
    assert_eq!(
        xdp["handshake_ack_absorbed"], n,
        "every handshake ACK taken in"
    );
    assert_eq!(core("syns_received"), 0);
    assert_eq!(core("syn_cookies_accepted"), n);
    assert_eq!(core("requests_in_syn"), n);
    assert_eq!(
        core("requests_after_syn_ack"),
        0,
        "fast open took every one"
    );
    // One packet per connection (the request); a client's retransmission may come up
    // too, but no back-end copy: a one-turn flow is confirmed at its absorbed SYN/ACK',
    // and its FIN is not copied.
    let packets = core("packets_received");
    assert!(
        (n..=n + n / 4).contains(&packets),
        "{packets} packets reached the slow path for {n} connections"
    );

    // Byte-exact, with and without client timestamps.
    cluster.frontend = Some(cluster.start_frontend());
    for name in ["1K.bin", "1M.bin"] {
        support::assert_download_byte_exact(&LAB, VIP, name);
    }
    let (options, shift) = options_download();
    assert_eq!(
        (
            options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE),
            shift
        ),
        (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE, 7),
        "with timestamps, the cookie's TSval keeps them: {options:#x}"
    );
    support::ok(&mut in_node(
        &LAB,
        "client",
        &["sysctl", "-qw", "net.ipv4.tcp_timestamps=0"],
    ));
    for name in ["1K.bin", "1M.bin"] {
        support::assert_download_byte_exact(&LAB, VIP, name);
    }
    let kept_before = support::fastpath_counters(&LAB)["half_open_kept"];
    let (options, shift) = options_download();
    assert_eq!(
        (
            options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE),
            shift
        ),
        (TCPI_OPT_SACK | TCPI_OPT_WSCALE, 7),
        "without timestamps, window scaling and SACK all the same: {options:#x}"
    );
    let xdp = support::fastpath_counters(&LAB);
    assert!(xdp["half_open_kept"] > kept_before, "{xdp:?}");
    assert_eq!(xdp["syn_ack_without_options"], 0, "{xdp:?}");
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    eprintln!(
        "without timestamps: half_open_kept={} half_open_entries_used={} half_open_entries_lost={}",
        xdp["half_open_kept"],
        core("half_open_entries_used"),
        core("half_open_entries_lost"),
    );
    // Every connection of this daemon without timestamps took its entry: SHA256SUMS and
    // the file for each of the two downloads, SHA256SUMS and the socket's download.
    assert_eq!(core("half_open_entries_used"), 6);
    assert_eq!(core("half_open_entries_lost"), 0);

    // The map off: the cookie's own terms, counted.
    let off = config.replacen("[tcp]\n", "[tcp]\nhalf_open_entries = 0\n", 1);
    let frontend = support::start_frontend(&LAB, "fe-off", &off);
    let (options, _) = options_download();
    assert_eq!(
        options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE),
        0,
        "{options:#x}"
    );
    let xdp = support::fastpath_counters(&LAB);
    assert!(xdp["syn_ack_without_options"] >= 2, "{xdp:?}");
    drop(frontend.stop());
}

/// What stays on the slow path with the one-turn handoff and every SYN in XDP: a
/// client's SYN carrying data (TCP Fast Open, here without a cookie, `tcp_fastopen = 0x5`
/// on the client) goes up, is answered by the core, which takes none of the data, and
/// the request the client sends again after the handshake is served; a request head that
/// spans several segments (a 6 KB cookie) takes the three-turn handoff, the SYN' first and
/// the request after the back-end's SYN/ACK'. Each download is byte-exact.
#[test]
fn with_one_turn_fast_open_clients_and_long_heads_take_the_slow_path_and_are_served() {
    let config = with_syns_in_xdp_and_one_turn();
    let Some(mut cluster) = support::Cluster::builder(&LAB, &SERIAL, "slow path with one turn")
        .frontend(&config)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();

    // Fast Open: 0x1 client on, 0x4 data in the SYN without a cookie.
    support::ok(&mut in_node(
        &LAB,
        "client",
        &["sysctl", "-qw", "net.ipv4.tcp_fastopen=5"],
    ));
    let sums = support::curl(&LAB, &[&format!("http://{VIP}/files/SHA256SUMS")]);
    let want = sums.lines().find(|l| l.ends_with(" 1M.bin")).unwrap();
    let want = want.split_whitespace().next().unwrap();
    let fetch = format!("curl -sS -m 60 --tcp-fastopen http://{VIP}/files/1M.bin | sha256sum");
    for _ in 0..3 {
        let got = stdout(&mut in_node(&LAB, "client", &["sh", "-c", &fetch]));
        assert_eq!(
            got.split_whitespace().next(),
            Some(want),
            "fast open: byte-exact"
        );
    }
    support::ok(&mut in_node(
        &LAB,
        "client",
        &["sysctl", "-qw", "net.ipv4.tcp_fastopen=1"],
    ));

    // A head of three segments.
    let cookie = format!("Cookie: c={}", "x".repeat(6000));
    let head = support::curl(
        &LAB,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &cookie,
            &format!("http://{VIP}/files/1K.bin"),
        ],
    );
    assert!(head.starts_with("HTTP/1.1 200"), "long head: {head}");

    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    eprintln!(
        "core syns_received={} requests_in_syn={} requests_after_syn_ack={} handoffs={}",
        core("syns_received"),
        core("requests_in_syn"),
        core("requests_after_syn_ack"),
        core("handoffs_completed"),
    );
    assert!(
        core("syns_received") >= 3,
        "each SYN with data went up to the core, which answered it"
    );
    // The SHA256SUMS fetch rode in its SYN' (one segment), and so did the three
    // fast-open clients' requests, sent again after the handshake; the long head could
    // not.
    assert_eq!(core("requests_in_syn"), 4);
    assert_eq!(
        core("handoffs_completed") - core("requests_in_syn"),
        1,
        "the long head took the three turns"
    );
}

/// Dispatch in the kernel (`[tcp] kernel_dispatch`): the requests the example's rules
/// route in the kernel are handed off by XDP itself (the request segment turned into the
/// SYN' in place) and never reach the slow path, which adopts each from the ring; the
/// rest go up and are handed off there. Every request is served, byte-exact.
#[test]
fn with_kernel_dispatch_routed_requests_never_reach_the_slow_path() {
    let config = with_kernel_dispatch(true);
    let Some(mut cluster) = support::Cluster::builder(&LAB, &SERIAL, "kernel dispatch")
        .frontend(&config)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    let connections = 40;
    for i in 0..connections {
        let path = ["/img/", "/api/", "/static/", "/files/1K.bin"][i % 4];
        let (status, _) = get(path);
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
    }
    let xdp = support::fastpath_counters(&LAB);
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    let in_kernel = xdp["handed_off_in_kernel"];
    let to_slow_path = xdp["pass_request_to_slow_path"];
    eprintln!(
        "{connections} connections: handed off in the kernel {in_kernel}, requests to the slow \
         path {to_slow_path}; core: kernel_handoffs_adopted={} kernel_handoffs_refused={} \
         packets_received={} syn_cookies_accepted={}",
        core("kernel_handoffs_adopted"),
        core("kernel_handoffs_refused"),
        core("packets_received"),
        core("syn_cookies_accepted"),
    );
    let n = connections as u64;
    assert!(in_kernel > 0, "no request was handed off in the kernel");
    assert_eq!(in_kernel + to_slow_path, n, "every request judged once");
    assert_eq!(core("kernel_handoffs_adopted"), in_kernel);
    assert_eq!(core("kernel_handoffs_refused"), 0);
    // The slow path received the requests the kernel left to it, and no packet of the
    // others (a client's retransmission aside).
    let packets = core("packets_received");
    assert!(
        (to_slow_path..=to_slow_path + n / 4).contains(&packets),
        "{packets} packets reached the slow path; {to_slow_path} requests were left to it"
    );
    // The access log and the rule counters still see every request: the core adopted
    // each kernel handoff and booked it with the dispatcher.
    let handoffs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=handoff "))
        .collect();
    assert_eq!(
        handoffs.len() as u64,
        n,
        "one handoff line per connection:\n{log}"
    );
    assert!(
        handoffs
            .iter()
            .all(|l| !l.contains("rule=-") && l.contains("GET /")),
        "every handoff line names its request and rule:\n{log}"
    );

    cluster.frontend = Some(cluster.start_frontend());
    for name in ["1K.bin", "1M.bin"] {
        support::assert_download_byte_exact(&LAB, VIP, name);
    }
}

/// Dispatch in the kernel under load: `wrk` with a new connection per request, then
/// sequential requests on new connections, every one served. The program's records of
/// its handoffs and its notices travel on two rings; a record another CPU is still
/// writing hides the records behind it, so the notices of a flow (its client's
/// acknowledgement of the answer, its FIN) can reach the daemon before the flow's record.
/// Before the daemon held such notices for the record, one connection in ten waited
/// for an answer it had already had, resent its SYN' after the quiet period, and the
/// client's next connection on the ports was refused: wrk fell from thousands of
/// requests a second to hundreds, and sequential requests failed.
#[test]
fn with_kernel_dispatch_under_load_every_request_is_served() {
    let config = with_kernel_dispatch(true);
    let Some(mut cluster) = support::Cluster::builder(&LAB, &SERIAL, "kernel dispatch, load")
        .frontend(&config)
        .up()
    else {
        return;
    };
    let url = format!("http://{VIP}/files/1K.bin");
    let wrk = stdout(&mut in_node(
        &LAB,
        "client",
        &[
            "wrk",
            "-t2",
            "-c32",
            "-d5s",
            "-H",
            "Connection: close",
            &url,
        ],
    ));
    let sequential = stdout(&mut in_node(
        &LAB,
        "client",
        &[
            "sh",
            "-c",
            &format!(
                "for i in $(seq 1 300); do curl -sS -m 5 -H 'Connection: close' -o /dev/null \
                 -w '%{{http_code}}\\n' {url} || echo failed; done"
            ),
        ],
    ));
    let xdp = support::fastpath_counters(&LAB);
    let log = cluster.stop_frontend();
    let core = |key| support::logged_number(&log, "frontend_stats", key);
    let fast = |key| support::logged_number(&log, "fastpath_stats", key);
    let failed = sequential.lines().filter(|l| *l != "200").count();
    eprintln!(
        "{wrk}\nsequential: {failed} of 300 failed; handed off in the kernel {}, closed flows \
         replaced {}, notices held {} (applied {}), quiet SYN's {}, unacceptable segments {}",
        xdp["handed_off_in_kernel"],
        xdp["closed_flow_replaced"],
        fast("notices_held"),
        fast("held_notices_applied"),
        core("syn_primes_after_silence"),
        core("unacceptable_segments"),
    );
    assert_eq!(failed, 0, "sequential requests failed:\n{sequential}");
    assert!(xdp["handed_off_in_kernel"] > 1000, "{xdp:?}");
    assert_eq!(
        core("backend_answers_unknown"),
        0,
        "every answer found its connection"
    );
    // The regression this guards against primed one connection in ten. A CI run on the
    // shared host once counted 2 primes in 66,485 handoffs, every request served: a held
    // notice outliving its two seconds while the daemon was behind on the records is the
    // suspect (docs/design.md, "The handoff in the kernel"), and it is open. One in
    // 10,000 still fails that regression by three orders of magnitude.
    let primes = core("syn_primes_after_silence");
    assert!(
        primes * 10_000 <= xdp["handed_off_in_kernel"].max(10_000),
        "{primes} handoffs waited for an answer they had had (of {})",
        xdp["handed_off_in_kernel"]
    );
    let socket_errors = wrk.lines().find(|l| l.contains("Socket errors"));
    assert!(socket_errors.is_none(), "{wrk}");
    // wrk's one client cycles through its ports in seconds, each coming back while its
    // previous connection's flow is in its grace period: the program answers such a SYN
    // itself once the client's FIN closed that flow (`closed_flow_replaced`), so most
    // connections are still handed off in the kernel. (Left to the slow path, only about
    // a quarter were.)
    let requests = baton::bench::measure::wrk_request_count(&wrk)
        .unwrap_or_else(|| panic!("no request count in {wrk}"));
    assert!(xdp["closed_flow_replaced"] > 0, "{xdp:?}");
    assert!(
        xdp["handed_off_in_kernel"] * 2 >= requests,
        "{} of {requests} connections handed off in the kernel",
        xdp["handed_off_in_kernel"]
    );
}
