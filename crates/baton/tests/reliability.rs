//! Reliability and security in the lab (issue 9): random loss on the LAN, a back-end
//! that dies under load, restarts of both daemons under load, a SYN flood, and bad
//! input. Each test prints its figures (docs/reliability.md collects them); they assert
//! correctness (no failed request, resets rather than hangs, counters engaged, memory
//! bounded), never speed.
//!
//! Clients are counted one request per connection: a std `TcpStream` from inside the
//! `client` namespace sends `GET ... Connection: close` and reads to the end; a request
//! succeeds when the status is 200 and the body is as long as `Content-Length`. Their
//! timeouts are generous enough for TCP's own recovery: 30 s to connect (SYN
//! retransmissions at 1, 3, 7 and 15 s) and 30 s per read or write (data retransmissions
//! start at 200 ms and double), so a loss the protocol can repair never counts as a
//! failure, and a hang still ends the test.
//!
//! The loss and bad-input tests run over IPv4 and over IPv6 (`support::Family`, the lab
//! up with `--ipv6` and the front-end serving VIP6); the rest over IPv4.
//!
//! Root only (each test prints why it skipped otherwise); lab name `btrl<pid>`; one test
//! at a time. Knobs: `BATON_LOSS_CONNECTIONS` (connections per loss level, default the
//! issue's 10,000 over IPv4, about 100 s, and 2,000 over IPv6), `BATON_FLOOD=1` (runs the
//! 10 s SYN flood, skipped otherwise).

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use baton::{
    bench::measure::WrkReport,
    lab::{CLIENT_ADDR, FE_ADDR, HTTP_PORT, VIP, backend_addr, mac_for, v6_for},
};
use support::{Cluster, Daemon, Family, Frame, backend_at, baton, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btrl"));
static SERIAL: Mutex<()> = Mutex::new(());

/// Three back-ends with their agents and the example front-end, with `edit` applied to
/// its configuration (the health checks' traffic, from [`FE_ADDR`], is what the loss
/// rules spare).
fn cluster(test: &str, edit: impl Fn(String) -> String) -> Option<Cluster> {
    cluster_over(test, Family::V4, edit)
}

/// [`cluster`] serving `family` (with IPv6, the lab up with `--ipv6`, the front-end
/// serving VIP6 and every agent answering as it).
fn cluster_over(test: &str, family: Family, edit: impl Fn(String) -> String) -> Option<Cluster> {
    let text = edit(support::frontend_config(&LAB));
    Cluster::builder(&LAB, &SERIAL, test)
        .family(family)
        .frontend_named("fe-reliability", &text)
        .up()
}

/// The VIP's HTTP service of `family`, where the clients connect.
fn vip_http(family: Family) -> SocketAddr {
    SocketAddr::new(family.vip(), HTTP_PORT)
}

/// The lab client's address in `family`, as the front-end's log names it with `port`.
fn client_addr(family: Family, port: u16) -> SocketAddr {
    match family {
        Family::V4 => SocketAddr::from((CLIENT_ADDR, port)),
        Family::V6 => SocketAddr::from((v6_for(CLIENT_ADDR), port)),
    }
}

fn lab_exec(node: &str, args: &[&str]) -> String {
    stdout(&mut support::in_node(&LAB, node, args))
}

// ---------------------------------------------------------------------------------
// Clients

/// How one request ended.
#[derive(Debug, Clone)]
struct Outcome {
    /// When it ended, from the start of its run.
    at: Duration,
    took: Duration,
    /// The back-end that answered, or what went wrong.
    result: Result<String, String>,
}

/// One request on a connection of its own to the VIP of `family`, from the current
/// (client) namespace.
fn one_request(family: Family, path: &str, timeout: Duration) -> Result<String, String> {
    let target = vip_http(family);
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e} (port {port})"))?;
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .map_err(|e| format!("read: {e} after {} bytes (port {port})", got.len()))?;
    let text = String::from_utf8_lossy(&got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(format!("no complete head in {} bytes", got.len()));
    };
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!(
            "status: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let header = |name: &str| header_value(head, name);
    let length = content_length(head)?;
    // The body is binary: compare byte counts, not characters.
    let body_bytes = got.len() - (head.len() + 4);
    if body_bytes != length {
        return Err(format!(
            "body {body_bytes} of {length} bytes ({})",
            body.len()
        ));
    }
    Ok(header("X-Baton-Backend").unwrap_or_default())
}

/// The value of the response head's field `name` (case-insensitive), trimmed.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The response head's `Content-Length`.
fn content_length(head: &str) -> Result<usize, String> {
    header_value(head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no Content-Length".to_owned())
}

/// `workers` clients in `client`, each making requests to the VIP of `family` one after
/// another until `count` requests in all have been made, `until` has passed or `stop` is
/// set. Each outcome's `at` counts from `epoch`, the caller's clock (the clients start a
/// little later, in the namespace's thread).
#[expect(
    clippy::too_many_arguments,
    reason = "the load's shape, each set by its caller; two callers"
)]
fn load(
    family: Family,
    path: &str,
    workers: usize,
    count: usize,
    until: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> Vec<Outcome> {
    let ns = format!("{LAB}-client");
    let path = path.to_owned();
    baton::netns::run_in(&ns, move || {
        let started = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut outcomes = Vec::new();
                        while next.fetch_add(1, Ordering::Relaxed) < count
                            && started.elapsed() < until
                            && !stop.load(Ordering::Relaxed)
                        {
                            let begun = Instant::now();
                            let result = one_request(family, &path, timeout);
                            outcomes.push(Outcome {
                                at: epoch.elapsed(),
                                took: begun.elapsed(),
                                result,
                            });
                        }
                        outcomes
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    })
    .expect("enter the client namespace")
}

/// The same in a thread of its own, for tests that act while it runs.
fn load_in_background(
    path: &'static str,
    workers: usize,
    until: Duration,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> thread::JoinHandle<Vec<Outcome>> {
    thread::spawn(move || {
        load(
            Family::V4,
            path,
            workers,
            usize::MAX,
            until,
            LONG,
            stop,
            epoch,
        )
    })
}

/// The clients' timeout (module docs).
const LONG: Duration = Duration::from_secs(30);

/// The clients' and the front-end's timeouts in the loss test: at 10% loss a few
/// connections in 10,000 need several backed-off retransmissions (the slowest took
/// 24.6 s in a run), and the test is about loss, not about where to cut them off.
const LOSS_TIMEOUT: Duration = Duration::from_secs(60);

struct Summary {
    requests: usize,
    failed: Vec<Outcome>,
    by_backend: BTreeMap<String, usize>,
    slowest: Duration,
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let mut by_backend = BTreeMap::new();
    for o in outcomes {
        if let Ok(b) = &o.result {
            *by_backend.entry(b.clone()).or_insert(0) += 1;
        }
    }
    Summary {
        requests: outcomes.len(),
        failed: outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .cloned()
            .collect(),
        by_backend,
        slowest: outcomes.iter().map(|o| o.took).max().unwrap_or_default(),
    }
}

/// Kills a child process if the test ends before it does.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn is_running(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn wait(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_in(node: &str, args: &[&str]) -> ChildGuard {
    let mut all = vec!["lab", "exec", node, "--"];
    all.extend_from_slice(args);
    ChildGuard(Some(
        baton(&LAB, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

// ---------------------------------------------------------------------------------
// 1. Loss

/// Random loss on the LAN bridge: every IPv4 frame the bridge forwards between its
/// ports (router, fe, back-ends), both ways, is dropped with probability `percent`%,
/// except the front-end's own traffic (health checks), so that what is measured is the
/// handoff's recovery and not the health checker's 500 ms timeout marking back-ends
/// down. Client-fe, fe-back-end (SYN', SYN/ACK', ACK', request, control copies) and
/// back-end-client (responses) all cross the bridge. Over IPv6, every IPv6 TCP segment
/// but the front-end's own: neighbour discovery (ICMPv6) is spared as ARP is over IPv4
/// (the IPv4 rule matches IPv4 frames alone), so that both families lose their
/// connections' segments and nothing else.
fn set_loss(percent: u32, family: Family) {
    let _ = baton(
        &LAB,
        &[
            "lab",
            "exec",
            "lan",
            "--",
            "nft",
            "delete",
            "table",
            "bridge",
            "baton_loss",
        ],
    )
    .output();
    if percent == 0 {
        return;
    }
    let spared = match family {
        Family::V4 => format!("ip saddr != {FE_ADDR} ip daddr != {FE_ADDR}"),
        Family::V6 => {
            let fe = v6_for(FE_ADDR);
            format!("ip6 saddr != {fe} ip6 daddr != {fe} ip6 nexthdr tcp")
        }
    };
    bridge_rule(
        "baton_loss",
        &format!("{spared} numgen random mod 100 < {percent} counter drop"),
    );
}

/// Adds `rule` to the forward chain of the LAN bridge's nftables table `table`, creating
/// both if needed: the lab's way to lose chosen frames between its hosts.
fn bridge_rule(table: &str, rule: &str) {
    lab_exec("lan", &["nft", "add", "table", "bridge", table]);
    lab_exec(
        "lan",
        &[
            "nft",
            &format!(
                "add chain bridge {table} forward {{ type filter hook forward priority 0; policy accept; }}"
            ),
        ],
    );
    lab_exec(
        "lan",
        &["nft", &format!("add rule bridge {table} forward {rule}")],
    );
}

/// Packets the loss rule has dropped so far.
fn loss_drops() -> u64 {
    let out = lab_exec("lan", &["nft", "list", "table", "bridge", "baton_loss"]);
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

/// The three-turn handoff under loss: the slow path answers the SYN, and the SYN' is bare
/// (the request follows the back-end's SYN/ACK').
#[test]
fn loss_on_the_lan_fails_no_request() {
    loss_on_the_lan(
        "2% and 10% loss, three turns",
        "one_turn = false\nsyns_in_xdp = false\n",
        Family::V4,
    );
}

#[test]
fn loss_on_the_lan_fails_no_request_over_ipv6() {
    loss_on_the_lan(
        "2% and 10% loss, three turns",
        "one_turn = false\nsyns_in_xdp = false\n",
        Family::V6,
    );
}

/// The same with the daemon's defaults: the request in the SYN' and every SYN answered in
/// XDP (pinned here, so the test keeps its meaning if the defaults change). A back-end's
/// fast-open server that lost its whole answer on the way to the client (one segment with
/// the FIN, for `/files/1K.bin`) sends it again only once its handshake completes, which
/// the client, having nothing to acknowledge, never does: 2% and 10% of the clients
/// waited 60 s for nothing until the front-end answered the server's repeated SYN/ACK's
/// with the client's ACK' (docs/design.md, "The one-turn handoff").
#[test]
fn loss_on_the_lan_fails_no_request_with_the_request_in_the_syn() {
    loss_on_the_lan(
        "2% and 10% loss, one turn",
        "one_turn = true\nsyns_in_xdp = true\n",
        Family::V4,
    );
}

/// Over IPv6, `syns_in_xdp` leaves every SYN to the core all the same (the XDP
/// program's IPv6 path answers none), and the back-end completes no IPv6 handshake
/// itself (its server waits for the front-end's ACK'): the request in the SYN' and the
/// front-end's answer to a repeated SYN/ACK' are what this twin adds to the other.
#[test]
fn loss_on_the_lan_fails_no_request_with_the_request_in_the_syn_over_ipv6() {
    loss_on_the_lan(
        "2% and 10% loss, one turn",
        "one_turn = true\nsyns_in_xdp = true\n",
        Family::V6,
    );
}

/// `count` new connections over `family` at 2% then 10% random loss on the LAN bridge,
/// with `tcp` added to the front-end's `[tcp]` section: every request must get its whole
/// response. `BATON_LOSS_CONNECTIONS` sets the count; by default the 10,000 over
/// IPv4, and 2,000 over IPv6: at 10% loss that still loses about 2,000 segments of every
/// kind (SYNs, SYN', SYN/ACK', requests, answers, FINs; a connection crosses the bridge
/// in about ten), each of which the IPv4 run showed to recover, in a fifth of the time.
fn loss_on_the_lan(test: &str, tcp: &str, family: Family) {
    // A client whose SYN or SYN/ACK was lost starts its connection with a 3 s RTO
    // (RFC 6298 section 5.7), so two more losses of its request take it past the
    // example's 10 s request timeout (slowloris protection), and the front-end resets
    // it: 3 of 10,000 connections at 10% loss. A link that loses one packet in ten
    // needs a longer allowance: the front-end and the clients get LOSS_TIMEOUT.
    let Some(mut cluster) = cluster_over(test, family, |t| {
        let edited = t.replace("request_timeout_ms = 10000", "request_timeout_ms = 60000");
        assert_ne!(edited, t, "the example's request timeout changed");
        let set = edited.replacen("[tcp]\n", &format!("[tcp]\n{tcp}"), 1);
        assert!(
            tcp.is_empty() || set != edited,
            "the example has no [tcp] section"
        );
        set
    }) else {
        return;
    };
    let count: usize = std::env::var("BATON_LOSS_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match family {
            Family::V4 => 10_000,
            Family::V6 => 2_000,
        });
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    for percent in [2, 10] {
        set_loss(percent, family);
        let retrans = support::nstat(&LAB, "client", "TcpRetransSegs");
        let started = Instant::now();
        let outcomes = load(
            family,
            "/files/1K.bin",
            48,
            count,
            Duration::from_secs(3600),
            LOSS_TIMEOUT,
            Arc::new(AtomicBool::new(false)),
            Instant::now(),
        );
        let took = started.elapsed();
        let dropped = loss_drops();
        let s = summarize(&outcomes);
        let line = format!(
            "| {percent}% | {} | {} | {:.1} s | {:.0} conn/s | {dropped} | {} | {:.2} s | {:?} |",
            s.requests,
            s.failed.len(),
            took.as_secs_f64(),
            s.requests as f64 / took.as_secs_f64(),
            support::nstat(&LAB, "client", "TcpRetransSegs") - retrans,
            s.slowest.as_secs_f64(),
            s.by_backend,
        );
        eprintln!("{line}");
        figures.push(line);
        assert_eq!(s.requests, count);
        assert!(dropped > 0, "the loss rule dropped nothing");
        failures.push((percent, s.failed));
    }
    set_loss(0, family);
    let log = cluster.stop_frontend();
    // What the front-end said of the failed clients' connections, if they got that far.
    for (percent, failed) in &failures {
        for o in failed {
            eprintln!("{percent}% failure: {o:?}");
            if let Err(e) = &o.result
                && let Some(port) = e.rsplit("port ").next().filter(|p| p.ends_with(')'))
            {
                let port = port.trim_end_matches(')').parse().unwrap_or(0);
                let client = format!("client={}", client_addr(family, port));
                for line in log.lines().filter(|l| l.contains(&client)) {
                    eprintln!("    {line}");
                }
            }
        }
    }
    let mut reasons = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("event=reset ")) {
        let reason = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("reason="))
            .unwrap_or("?");
        *reasons.entry(reason.to_owned()).or_insert(0) += 1;
    }
    eprintln!("front-end resets by reason: {reasons:?}");
    eprintln!(
        "loss over {family}, {count} new connections per level, 48 clients, GET /files/1K.bin:\n\
         | loss | requests | failed | time | rate | frames dropped | client retransmits | slowest | by back-end |\n\
         |---|---|---|---|---|---|---|---|---|\n{}",
        figures.join("\n")
    );
    for key in [
        "handoffs_completed",
        "syn_prime_retransmits",
        "request_retransmits",
        "syn_ack_retransmits",
        "backend_timeouts",
        "backends_exhausted",
        "handshake_timeouts",
        "requests_in_syn",
        "syn_ack_repeats_answered",
        "syn_primes_after_silence",
    ] {
        eprint!(
            "{key}={} ",
            support::logged_number(&log, "frontend_stats", key)
        );
    }
    eprintln!();
    for (percent, failed) in &failures {
        assert!(
            failed.is_empty(),
            "{percent}% loss: {} of {count} requests failed, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "backends_exhausted"),
        0
    );
}

/// What caused failures at 10% loss, isolated: when the back-end's FIN copy to the
/// front-end was lost, the front-end kept the flow as forwarding, and a client that
/// reuses its port (it closed second, so the port is free at once) had its new SYN
/// forwarded, raw and without a handoff option, to the old back-end: `connect` timed
/// out. The back-ends copy no FIN once a flow is confirmed now, and no close waits for
/// one: the client's FIN alone starts the grace period, and a SYN with a new ISN in it is
/// a new connection (`time_wait_reused`, `client_segment` in baton-proto's
/// `connection.rs`). The rule that dropped the FIN copies stays: all it still finds is
/// the server's first answer when it carries the FIN (`Connection: close`), the copy
/// that would confirm the handoff, whose loss XDP's word of the client's ACK makes up.
#[test]
fn a_port_reused_right_after_its_close_connects() {
    let Some(mut cluster) = cluster("port reuse right after a close", |t| t) else {
        return;
    };
    // Drop whatever the back-ends send the front-end with a FIN (to fe's MAC, from the VIP).
    bridge_rule(
        "baton_fin",
        &format!(
            "ether daddr {} ip saddr {VIP} tcp flags & fin == fin counter drop",
            mac_for(FE_ADDR)
        ),
    );
    for attempt in 1..=2 {
        let (code, error) =
            support::status_from_port(&LAB, 45_004, &format!("http://{VIP}/img/"), 8);
        eprintln!("attempt {attempt} from port 45004: {code} {error}");
        assert_eq!(code, "200", "attempt {attempt}");
        thread::sleep(Duration::from_secs(1));
    }
    let rule = lab_exec("lan", &["nft", "list", "table", "bridge", "baton_fin"]);
    eprintln!(
        "{}",
        rule.lines().find(|l| l.contains("counter")).unwrap_or("")
    );
    let log = cluster.stop_frontend();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "time_wait_reused"),
        1,
        "the second connection ended the first one's grace period: {log}"
    );
}

/// What failed one request in 20,000 at 10% loss (a CI run): a connection handed off
/// and ended within one round of the daemon's loop. The loop installs a handoff's
/// fast-path entry after the round's transmits, and the close removed nothing, so the
/// entry outlived the flow. The client's next connection from that port was answered
/// by the front-end, but XDP sent its request to the old back-end: no response, ever.
///
/// Made deterministic here: the back-end's copies to the front-end are dropped, so only
/// the client's FIN can complete the handoff, and the daemon is stopped while that FIN
/// and the next connection's SYN wait in its socket, so that it reads both in one round.
#[test]
fn a_flow_handed_off_and_closed_in_one_round_leaves_no_fast_path_entry() {
    let Some(mut cluster) = cluster("handed off and closed in one round", |t| {
        // Room for the steps below before the front-end resends the request.
        let edited = t.replace("handoff_rto_ms = 200 ", "handoff_rto_ms = 3000 ");
        assert_ne!(edited, t, "the example's handoff timer changed");
        edited
    }) else {
        return;
    };
    // Everything the back-ends send fe's MAC from the VIP but the SYN/ACK'.
    bridge_rule(
        "baton_copies",
        &format!(
            "ether daddr {} ip saddr {VIP} tcp flags & syn == 0 counter drop",
            mac_for(FE_ADDR)
        ),
    );
    let raw = RawPeer::open();
    let port = RAW_PORTS.0 + 50;
    let request = b"GET /files/1K.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n";

    // The first connection: its response comes straight from the back-end, with its FIN.
    let iss = 1_000_000;
    let isn_f = raw.handshake(port, iss, 64_240);
    raw.send(port, iss + 1, isn_f + 1, PSH | ACK, 64_240, vec![], request);
    let (_, seq, _, _, body) = raw
        .expect(port, Duration::from_secs(3), |f, p| {
            !p.is_empty() || f & 0x01 != 0
        })
        .expect("the first response");
    assert!(body.starts_with(b"HTTP/1.1 200 "), "{body:?}");
    let response_end = seq.wrapping_add(body.len() as u32 + 1);
    let client_end = iss + 1 + request.len() as u32;

    // The client's FIN (acknowledging the response: the handoff's confirmation) and a
    // new connection's SYN on the same port, read by the daemon in one round.
    let pid = cluster.frontend().pid() as libc::pid_t;
    // SAFETY: kill(2) on the front-end this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    raw.send(
        port,
        client_end,
        response_end,
        0x01 | ACK,
        64_240,
        vec![],
        b"",
    );
    let iss2 = 9_000_000;
    raw.send(port, iss2, 0, SYN, 64_240, vec![2, 4, 0x05, 0xb4], b"");
    thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };

    let (_, isn_f2, ack, _, _) = raw
        .expect(port, Duration::from_secs(3), |f, _| {
            f & (SYN | ACK) == SYN | ACK
        })
        .expect("a SYN/ACK for the new connection");
    assert_eq!(ack, iss2 + 1);
    thread::sleep(Duration::from_millis(100));
    let flows = {
        use aya::maps::{HashMap, Map, MapData};
        let path = format!("{}/frontend-eth0/flows", support::frontend_pin_dir(&LAB));
        let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let flows: HashMap<
            _,
            baton_common::frontend::FrontendFlowKey,
            baton_common::frontend::FrontendFlow,
        > = HashMap::try_from(Map::HashMap(map)).unwrap();
        flows
            .keys()
            .filter_map(Result::ok)
            .filter(|k| u16::from_be_bytes(k.client_port_be.to_ne_bytes()) == port)
            .count()
    };
    assert_eq!(
        flows, 0,
        "the fast path kept an entry for a flow the front-end freed"
    );

    // And the new connection is served.
    raw.send(port, iss2 + 1, isn_f2 + 1, ACK, 64_240, vec![], b"");
    raw.send(
        port,
        iss2 + 1,
        isn_f2 + 1,
        PSH | ACK,
        64_240,
        vec![],
        request,
    );
    let (_, _, _, _, body) = raw
        .expect(port, Duration::from_secs(3), |_, p| !p.is_empty())
        .expect("the second response");
    assert!(body.starts_with(b"HTTP/1.1 200 "), "{body:?}");
    let log = cluster.stop_frontend();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "time_wait_reused"),
        1,
        "the new SYN ended the first connection in the round that handed it off"
    );
}

// ---------------------------------------------------------------------------------
// 2. A back-end dies

/// The pids of the processes named `name` in lab node `node` (the lab started them).
fn pids_named(node: &str, name: &str) -> Vec<i32> {
    baton::netns::pids(&format!("{LAB}-{node}"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

fn count_in_log(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Clients from many ports fill the connection table with grace periods (30 s each) at
/// any sustained rate above `max_connections / time_wait`. Such a table must still take
/// new clients: each ends the grace period nearest its end (`time_wait_evicted`).
/// Before, the table refused them: SYN cookies engaged, and their ACKs were dropped for
/// want of a slot (`cookie_acks_dropped_table_full`), so every client past the 64th
/// here timed out.
#[test]
fn a_table_full_of_grace_periods_still_takes_new_clients() {
    let Some(mut cluster) = cluster("table full of grace periods", |t| {
        let edited = t.replace("max_connections = 65536", "max_connections = 64");
        assert_ne!(edited, t, "the example's max_connections changed");
        edited
    }) else {
        return;
    };
    let outcomes = load(
        Family::V4,
        "/files/1K.bin",
        4,
        1_000,
        Duration::from_secs(120),
        Duration::from_secs(10),
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
    );
    let s = summarize(&outcomes);
    let log = cluster.stop_frontend();
    let evicted = support::logged_number(&log, "frontend_stats", "time_wait_evicted");
    // A client reusing a port whose grace period is still in the table ends that grace
    // period itself (`time_wait_reused`): room made as an eviction makes it. With SYNs
    // answered in XDP and kernel dispatch, the fast path lets a port be reused at once.
    let reused = support::logged_number(&log, "frontend_stats", "time_wait_reused");
    let removed = support::logged_number(&log, "fastpath_stats", "flows_removed");
    eprintln!(
        "{} requests, {} failed, slowest {:.2} s; time_wait_evicted={evicted} \
         time_wait_reused={reused} flows_removed={removed}",
        s.requests,
        s.failed.len(),
        s.slowest.as_secs_f64()
    );
    assert_eq!(s.requests, 1_000);
    assert!(
        s.failed.is_empty(),
        "{:?}",
        &s.failed[..s.failed.len().min(5)]
    );
    assert!(
        evicted + reused >= 900,
        "time_wait_evicted={evicted} time_wait_reused={reused}\n{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "cookie_acks_dropped_table_full"),
        0
    );
    // Each ended grace period took its fast-path entry with it (or the program had,
    // replacing a closed flow with kernel dispatch on).
    let replaced = support::logged_number(&log, "fastpath_stats", "flows_replaced_by_fast_path");
    assert!(
        removed + replaced >= evicted,
        "flows_removed={removed} replaced={replaced} evicted={evicted}"
    );
}

#[test]
fn a_dead_backend_is_avoided_and_its_clients_are_not_left_hanging() {
    let Some(mut cluster) = cluster("back-end killed under load", |t| t) else {
        return;
    };
    // A connection be1 holds: 100 MiB at 2 MB/s (the /img/ route goes to be1 alone).
    let mut held = spawn_in(
        "client",
        &[
            "curl",
            "-sS",
            "-H",
            "Host: img.baton.test",
            "--limit-rate",
            "2M",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://{VIP}/files/100M.bin"),
        ],
    );
    // New connections round robin over the three, all along. Four clients: eight, with
    // every handoff in the kernel, kept the host's two CPUs saturated (about 8,700
    // connections a second), and the health check's own thread then reported be1 down
    // 4.5 to 10 s after the kill instead of within fall x interval + timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = load_in_background(
        "/files/1K.bin",
        4,
        Duration::from_secs(12),
        stop.clone(),
        started,
    );
    thread::sleep(Duration::from_secs(3));

    let nginx = pids_named("be1", "nginx");
    assert!(!nginx.is_empty(), "no nginx in be1");
    let killed_at = started.elapsed();
    for pid in &nginx {
        // SAFETY: kill(2) on processes of the lab this test brought up.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let killed = Instant::now();
    let from_be1 = &format!("failed_backend={}", backend_at(1, HTTP_PORT));
    let retries_before = count_in_log(&cluster.frontend().log_text(), from_be1);
    // Watch the log: when the health check takes be1 down, and when the last retry away
    // from it happens.
    let mut down_after = None;
    let mut last_retry = Duration::ZERO;
    let mut retries = retries_before;
    let mut held_ended = None;
    while killed.elapsed() < Duration::from_secs(6)
        || (held_ended.is_none() && killed.elapsed() < LONG)
    {
        if held_ended.is_none() && !held.is_running() {
            held_ended = Some(killed.elapsed());
        }
        let log = cluster.frontend().log_text();
        let now = count_in_log(&log, from_be1);
        if now > retries {
            retries = now;
            last_retry = killed.elapsed();
        }
        if down_after.is_none()
            && log.lines().any(|l| {
                l.contains(&format!(
                    "event=health backend={}",
                    backend_at(1, HTTP_PORT)
                )) && l.contains("backend_state=down")
            })
        {
            down_after = Some(killed.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = held.wait();
    let held_ended = held_ended.unwrap_or(killed.elapsed());
    let held_said = String::from_utf8_lossy(&out.stdout).into_owned();
    let held_err = String::from_utf8_lossy(&out.stderr).into_owned();
    let outcomes = clients.join().unwrap();
    let s = summarize(&outcomes);
    let after: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.at > killed_at + Duration::from_millis(50))
        .collect();
    let after_ok = after.iter().filter(|o| o.result.is_ok()).count();
    let log = cluster.stop_frontend();
    for line in log.lines().filter(|l| {
        l.contains("event=handoff_retry") || l.contains("event=reset") || l.contains("event=health")
    }) {
        eprintln!("{line}");
    }
    eprintln!(
        "back-end be1 killed (nginx SIGKILL, agent left) {:.1} s into 12 s of 4 clients:\n\
         requests {} (after the kill {}, served {after_ok}), failed {} {:?}, by back-end {:?}, slowest {:.2} s;\n\
         health check took be1 down {:?} after the kill; handoff retries after the kill {} (the last {:.2} s after);\n\
         the held download ended {:.2} s after the kill: curl exit {:?} {held_said:?} {}",
        killed_at.as_secs_f64(),
        s.requests,
        after.len(),
        s.failed.len(),
        s.failed
            .iter()
            .map(|o| (o.at, o.result.clone()))
            .collect::<Vec<_>>(),
        s.by_backend,
        s.slowest.as_secs_f64(),
        down_after,
        retries - retries_before,
        last_retry.as_secs_f64(),
        held_ended.as_secs_f64(),
        out.status.code(),
        held_err.trim(),
    );
    eprintln!(
        "frontend_stats: backend_refusals={} backend_timeouts={} backends_exhausted={} handoffs_completed={}",
        support::logged_number(&log, "frontend_stats", "backend_refusals"),
        support::logged_number(&log, "frontend_stats", "backend_timeouts"),
        support::logged_number(&log, "frontend_stats", "backends_exhausted"),
        support::logged_number(&log, "frontend_stats", "handoffs_completed"),
    );
    // Connections not yet handed off go to another back-end (the retries above); only
    // those be1's kernel had already taken (handed off, waiting in nginx's accept queue
    // or just accepted) can fail, at the kill, and they get a reset.
    let held_by_be1 = |o: &&Outcome| {
        o.at >= killed_at
            && o.at < killed_at + Duration::from_secs(1)
            && o.result.as_ref().is_err_and(|e| e.contains("reset"))
    };
    assert!(
        s.failed.iter().all(|o| held_by_be1(&o)),
        "only connections be1 held at the kill fail, with a reset: {:?}",
        &s.failed[..s.failed.len().min(5)]
    );
    assert!(
        s.failed.len() <= 4,
        "at most one per client: {:?}",
        s.failed
    );
    assert!(after_ok > 20, "the load went on after the kill: {after_ok}");
    let be1_after = after
        .iter()
        .filter(|o| o.result.as_deref() == Ok("be1"))
        .count();
    assert_eq!(be1_after, 0, "nothing is served by a dead nginx");
    let down = down_after.expect("the health check took be1 down");
    assert!(
        down < Duration::from_millis(3500),
        "down within fall (2) x interval (1 s) + timeout and the loop's 250 ms: {down:?}"
    );
    // A retry is logged when a handoff to be1 gives up: at once for a refusal (RST), or
    // after the SYN' budget (200 + 400 + 800 + 1600 ms) for a silent be1; so the last
    // handoff *started* towards be1 is at most that long before its retry line. None may
    // start once be1 is down.
    let budget = Duration::from_millis(200 + 400 + 800 + 1600);
    assert!(
        last_retry <= down + budget + Duration::from_millis(500),
        "new connections avoid be1 once it is down: last retry {last_retry:?}, down {down:?}"
    );
    assert!(
        !out.status.success(),
        "the held download cannot have completed: {held_said}"
    );
    // The killed nginx's socket is closed with data still queued: the kernel sends that
    // (seconds of it at 2 MB/s), then the FIN, and the client sees the truncation. A
    // hang would be the client waiting forever.
    assert!(
        held_ended < Duration::from_secs(20),
        "the held client got an error quickly, not a hang: {held_ended:?}"
    );
    drop(cluster.backends);
}

// ---------------------------------------------------------------------------------
// 3. Restarts under load

/// wrk's report, read by the bench's reader (`--latency` is given for it).
fn parse_wrk(output: &str) -> WrkReport {
    baton::bench::measure::parse_wrk(output).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn restarts_under_load_keep_established_connections() {
    let Some(mut cluster) = cluster("restarts under load", |t| {
        t.replace("drain_ms = 5000", "drain_ms = 300")
    }) else {
        return;
    };
    let seconds = 25;
    let wrk = |close: bool| {
        let d = format!("{seconds}s");
        let mut args = vec![
            "wrk",
            "-t1",
            "-c8",
            "-d",
            &d,
            "--timeout",
            "10s",
            "--latency",
        ];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        let url = format!("http://{VIP}/files/1K.bin");
        args.push(&url);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_in("client", &refs)
    };
    let started = Instant::now();
    let keep_alive = wrk(false);
    let close = wrk(true);
    // An established download across both restarts: 100 MiB at 10 MB/s from be1.
    let download = spawn_in(
        "client",
        &[
            "sh",
            "-c",
            &format!(
                "curl -sS -m 60 -H 'Host: img.baton.test' --limit-rate 10M http://{VIP}/files/100M.bin | sha256sum"
            ),
        ],
    );
    thread::sleep(Duration::from_secs(3));

    // The back-end agent restarts: the programs and pinned maps stay.
    let (agent, config) = cluster.backends.remove(0);
    let agent_log = agent.stop();
    assert!(agent_log.contains(" event=exit "), "{agent_log}");
    let path = support::config_file(&LAB, "be1-again", &support::backend_config(&LAB, 1));
    let agent_stopped = started.elapsed();
    // The new agent loads its programs (the verifier takes seconds on a busy machine)
    // and swaps them into the pinned links.
    cluster.backends.insert(
        0,
        (
            Daemon::start_within(
                &LAB,
                "be1",
                &["backend", "--config", path.to_str().unwrap()],
                "event=reattached ",
                Duration::from_secs(30),
            ),
            config,
        ),
    );
    let agent_at = started.elapsed();
    thread::sleep(Duration::from_secs(3));

    // The front-end crashes and comes back.
    let killed_at = started.elapsed();
    let killed_log = cluster.frontend.take().unwrap().kill();
    let gap = Instant::now();
    cluster.frontend = Some(cluster.start_frontend());
    let gap = gap.elapsed();
    let reattached = cluster
        .frontend()
        .log_text()
        .lines()
        .find(|l| l.contains("event=fastpath "))
        .unwrap_or_default()
        .to_owned();

    let ka = parse_wrk(&String::from_utf8_lossy(&keep_alive.wait().stdout));
    let cl_out = close.wait();
    let cl = parse_wrk(&String::from_utf8_lossy(&cl_out.stdout));
    let dl = download.wait();
    let log = cluster.stop_frontend();
    let handoffs_before_kill = count_in_log(&killed_log, "event=handoff ");
    eprintln!(
        "restarts under load ({seconds} s of wrk -c8 keep-alive and -c8 Connection: close, /files/1K.bin):\n\
         be1 agent stopped at {:.1} s, the next one reattached at {:.1} s; front-end kill -9 at {:.1} s, the next one ready {:.0} ms later: {reattached}\n\
         keep-alive: {} requests, errors connect/read/write/timeout {:?}, non-2xx {}\n\
         close:      {} requests, errors connect/read/write/timeout {:?}, non-2xx {}\n\
         first daemon: {handoffs_before_kill} handoffs; second: stray_segments={} stray_resets_sent={} adopted={}",
        agent_stopped.as_secs_f64(),
        agent_at.as_secs_f64(),
        killed_at.as_secs_f64(),
        gap.as_secs_f64() * 1000.0,
        ka.requests,
        ka.socket_errors_by_kind,
        ka.non_2xx,
        cl.requests,
        cl.socket_errors_by_kind,
        cl.non_2xx,
        support::logged_number(&log, "frontend_stats", "stray_segments"),
        support::logged_number(&log, "frontend_stats", "stray_resets_sent"),
        support::logged_number(&log, "frontend_stats", "adopted"),
    );
    // The download spanned both restarts and arrived whole.
    let sums = std::fs::read_to_string(format!("/run/{LAB}-lab/be1/www/files/SHA256SUMS")).unwrap();
    let want = sums
        .lines()
        .find(|l| l.ends_with(" 100M.bin"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dl.stdout)
            .split_whitespace()
            .next(),
        Some(want),
        "the download across both restarts"
    );
    // Established keep-alive connections flow through both restarts.
    assert!(ka.requests > 1000, "{ka:?}");
    assert_eq!(
        ka.socket_errors_by_kind, [0; 4],
        "keep-alive connections were disturbed: {ka:?}"
    );
    assert_eq!(ka.non_2xx + cl.non_2xx, 0);
    // New connections: only those caught half-way at the kill can fail (their state
    // was the dead daemon's), each once, with a reset (a read or connect error), never
    // a timeout. wrk -c8 has at most 8 in flight.
    assert!(cl.requests > 500, "{cl:?}");
    assert_eq!(cl.socket_errors_by_kind[3], 0, "no connection hung: {cl:?}");
    let failed =
        cl.socket_errors_by_kind[0] + cl.socket_errors_by_kind[1] + cl.socket_errors_by_kind[2];
    assert!(
        failed <= 16,
        "at most the connections in flight at the kill (8), twice: {cl:?}"
    );
}

// ---------------------------------------------------------------------------------
// 4. SYN flood

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_syn_flood_leaves_clients_served_and_memory_bounded() {
    let Some(mut cluster) = cluster("SYN flood", |t| t) else {
        return;
    };
    // 5 s in `scripts/test`; `BATON_FLOOD=1` for the longer run of docs/reliability.md.
    let seconds: u64 = if std::env::var_os("BATON_FLOOD").is_some_and(|v| v == "1") {
        10
    } else {
        5
    };
    let xdp_before = support::fastpath_counters(&LAB);
    let pid = cluster.frontend().pid();
    let rss_before = vm_rss_kib(pid);
    // From the router, so the measuring clients' own link stays theirs; spoofed
    // sources in 198.18.64.0/18, which nothing in the lab owns (the SYN/ACKs die at
    // the router).
    let flood = spawn_in(
        "router",
        &[
            env!("CARGO_BIN_EXE_synflood"),
            "--target",
            &format!("{VIP}:{HTTP_PORT}"),
            "--sources",
            "198.18.64.0/18",
            "--seconds",
            &seconds.to_string(),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    thread::sleep(Duration::from_millis(300));
    let clients = load_in_background(
        "/files/1K.bin",
        16,
        Duration::from_secs(seconds).saturating_sub(Duration::from_millis(300)),
        stop,
        Instant::now(),
    );
    let mut rss_max = rss_before;
    while !clients.is_finished() {
        rss_max = rss_max.max(vm_rss_kib(pid));
        thread::sleep(Duration::from_millis(200));
    }
    let outcomes = clients.join().unwrap();
    let flood_out = flood.wait();
    let flood_said = String::from_utf8_lossy(&flood_out.stdout).trim().to_owned();
    rss_max = rss_max.max(vm_rss_kib(pid));
    let s = summarize(&outcomes);
    let rate = 100.0 * (s.requests - s.failed.len()) as f64 / s.requests.max(1) as f64;
    // The daemon still serves after it.
    let after = load(
        Family::V4,
        "/files/1K.bin",
        1,
        5,
        LONG,
        LONG,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
    );
    let xdp = support::fastpath_counters(&LAB);
    let xdp_cookies = xdp["syn_cookies_sent"] - xdp_before["syn_cookies_sent"];
    let log = cluster.stop_frontend();
    let marked_down = log
        .lines()
        .filter(|l| l.contains(" event=health ") && l.contains(" backend_state=down"))
        .count();
    eprintln!(
        "XDP answered {xdp_cookies} SYNs with cookies; back-ends marked down during the flood: {marked_down}"
    );
    // What became of the clients that failed, as the front-end saw them.
    for line in log.lines().filter(|l| l.contains("event=reset")).take(20) {
        eprintln!("{line}");
    }
    for o in s.failed.iter().take(20) {
        eprintln!("failed: {o:?}");
    }
    eprintln!(
        "SYN flood for {seconds} s from router: {flood_said}\n\
         clients (16, one request per connection): {} requests, {} failed, success {rate:.2}%, slowest {:.2} s\n\
         front-end VmRSS {} KiB before, {} KiB at most during\n\
         frontend_stats: syns_received={} syn_acks_sent={} syn_cookies_sent={} syn_cookies_accepted={} handshakes_completed={} handoffs_completed={}\n\
         io_stats: {}",
        s.requests,
        s.failed.len(),
        s.slowest.as_secs_f64(),
        rss_before,
        rss_max,
        support::logged_number(&log, "frontend_stats", "syns_received"),
        support::logged_number(&log, "frontend_stats", "syn_acks_sent"),
        support::logged_number(&log, "frontend_stats", "syn_cookies_sent"),
        support::logged_number(&log, "frontend_stats", "syn_cookies_accepted"),
        support::logged_number(&log, "frontend_stats", "handshakes_completed"),
        support::logged_number(&log, "frontend_stats", "handoffs_completed"),
        log.lines()
            .find(|l| l.contains("event=io_stats "))
            .unwrap_or_default(),
    );
    assert!(flood_out.status.success(), "{flood_said}");
    assert!(s.requests >= 16, "the clients ran: {}", s.requests);
    assert!(
        rate >= 99.0,
        "success {rate:.2}%: {:?}",
        &s.failed[..s.failed.len().min(5)]
    );
    assert!(
        xdp_cookies > 0,
        "the fast path answered the flood with cookies once the half-open table (4096) was full"
    );
    assert_eq!(
        marked_down, 0,
        "the health checks kept working through the flood:\n{log}"
    );
    assert!(
        rss_max < rss_before + 64 * 1024,
        "front-end memory bounded: {rss_before} -> {rss_max} KiB"
    );
    assert!(
        summarize(&after).failed.is_empty(),
        "served after the flood"
    );
}

#[test]
fn the_flooder_refuses_addresses_outside_the_benchmarking_range() {
    let vip = vip_http(Family::V4).to_string();
    // Each has an address outside 198.18.0.0/15 (the lab's VIP is inside, its sources not).
    for args in [
        &["--target", "10.0.0.1:80", "--seconds", "1"][..],
        &["--target", &vip, "--sources", "192.168.0.0/16"][..],
        &["--target", "8.8.8.8:53"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_synflood"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{args:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// 5. Bad input

/// The client's address, for hand-made connections whose answers it must see.
const CLIENT: [u8; 4] = CLIENT_ADDR.octets();
/// Ports of hand-made connections: the client's kernel has no socket there and would
/// reset every answer; an nftables rule in `client` drops those resets (the kernel's
/// have TTL 64; ours are sent with 65 and pass).
const RAW_PORTS: (u16, u16) = (41_000, 41_099);

/// A raw TCP endpoint inside `client`: sends hand-made segments and sees every TCP
/// segment the namespace receives.
struct RawPeer {
    fd: i32,
}

impl RawPeer {
    /// Also installs, once per lab, the `client` rule that keeps the kernel from
    /// resetting the answers to hand-made segments.
    fn open() -> Self {
        let rule = format!(
            "add rule ip baton_raw out tcp sport {}-{} tcp flags rst ip ttl 64 drop",
            RAW_PORTS.0, RAW_PORTS.1
        );
        lab_exec("client", &["nft", "add", "table", "ip", "baton_raw"]);
        lab_exec("client", &["nft", "flush", "table", "ip", "baton_raw"]);
        lab_exec(
            "client",
            &[
                "nft",
                "add chain ip baton_raw out { type filter hook output priority 0; policy accept; }",
            ],
        );
        lab_exec("client", &["nft", &rule]);
        // SAFETY: a plain socket call; checked.
        let fd = baton::netns::run_in(&format!("{LAB}-client"), || unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP)
        })
        .unwrap();
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setsockopt with a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Self { fd }
    }

    /// Sends a segment from `CLIENT:port` to the VIP.
    #[expect(
        clippy::too_many_arguments,
        reason = "one per header field the tests vary, read at the call like a segment"
    )]
    fn send(
        &self,
        port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: Vec<u8>,
        payload: &[u8],
    ) {
        let frame = Frame {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src: (CLIENT, port),
            dst: (VIP.octets(), HTTP_PORT),
            seq,
            ack,
            flags,
            window,
            options,
            payload: payload.to_vec(),
        };
        let mut packet = frame.ip_packet();
        // TTL 65: past the rule that drops the kernel's resets (the kernel completes the
        // IP checksum of a raw IP_HDRINCL packet).
        packet[8] = 65;
        support::send_raw(&format!("{LAB}-client"), &packet);
    }

    /// The next segment from the VIP to `port` within `within` that satisfies `want`:
    /// (flags, seq, ack, window, payload).
    fn expect(
        &self,
        port: u16,
        within: Duration,
        want: impl Fn(u8, &[u8]) -> bool,
    ) -> Option<(u8, u32, u32, u16, Vec<u8>)> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            // SAFETY: `buf` outlives the call and its length is passed.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < ihl + 20 || p[12..16] != VIP.octets() {
                continue;
            }
            let t = &p[ihl..];
            if u16::from_be_bytes([t[2], t[3]]) != port {
                continue;
            }
            let off = usize::from(t[12] >> 4) * 4;
            let (flags, payload) = (t[13], t.get(off..).unwrap_or_default());
            if want(flags, payload) {
                let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
                return Some((
                    flags,
                    word(4),
                    word(8),
                    u16::from_be_bytes([t[14], t[15]]),
                    payload.to_vec(),
                ));
            }
        }
        None
    }

    /// A handshake from `port` with initial sequence number `iss`: the front-end's ISN.
    fn handshake(&self, port: u16, iss: u32, window: u16) -> u32 {
        self.send(port, iss, 0, SYN, 64_240, vec![2, 4, 0x05, 0xb4], b"");
        let (_, isn_f, ack, _, _) = self
            .expect(port, Duration::from_secs(3), |f, _| {
                f & (SYN | ACK) == SYN | ACK
            })
            .expect("a SYN/ACK");
        assert_eq!(ack, iss.wrapping_add(1));
        self.send(
            port,
            iss.wrapping_add(1),
            isn_f.wrapping_add(1),
            ACK,
            window,
            vec![],
            b"",
        );
        isn_f
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Connects to the VIP of `family` with the kernel's TCP, sends `chunks` with `gap`
/// between them, and reads until EOF, an error or 15 s: what was read, how it ended, and
/// when.
fn exchange(
    family: Family,
    chunks: &[&[u8]],
    gap: Duration,
) -> (Vec<u8>, Result<(), ErrorKind>, Duration) {
    let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    baton::netns::run_in(&format!("{LAB}-client"), move || {
        let started = Instant::now();
        let target = vip_http(family);
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        for chunk in &chunks {
            if let Err(e) = stream.write_all(chunk) {
                return (Vec::new(), Err(e.kind()), started.elapsed());
            }
            thread::sleep(gap);
        }
        let mut got = Vec::new();
        let end = stream
            .read_to_end(&mut got)
            .map(|_| ())
            .map_err(|e| e.kind());
        (got, end, started.elapsed())
    })
    .unwrap()
}

/// Prints a finding at once and keeps it for the summary.
fn note(report: &mut Vec<String>, line: String) {
    eprintln!("{line}");
    report.push(line);
}

#[test]
fn bad_input_gets_its_documented_outcome_and_leaves_nothing_behind() {
    bad_input(Family::V4);
}

/// What of [`bad_input`] applies to IPv6: slowloris, garbage (400), a TLS record type
/// (reset), an oversized head (431), and the table back to its baseline. The hand-made
/// segments (malformed SYN options, a zero window, out-of-window segments, a forged
/// handoff SYN) are IPv4's alone: `RawPeer` builds IPv4 headers, and the core's and the
/// back-end module's IPv6 parsing of such segments is covered by their unit and module
/// tests (`backend_module.rs` over both families, the forged option among them).
#[test]
fn bad_input_gets_its_documented_outcome_and_leaves_nothing_behind_over_ipv6() {
    bad_input(Family::V6);
}

/// Bad input over `family`, each with its documented outcome, and nothing left behind.
fn bad_input(family: Family) {
    let Some(mut cluster) = cluster_over("bad input", family, |t| {
        let t = t.replace(
            "request_timeout_ms = 10000",
            "request_timeout_ms = 2000\nsyn_ack_rto_ms = 200\nsyn_ack_retries = 2\ntime_wait_ms = 1000",
        );
        assert!(t.contains("time_wait_ms = 1000"), "the example changed");
        t
    }) else {
        return;
    };
    let mut report = Vec::new();

    // Slowloris: a request head trickled a byte every 250 ms is reset at the request
    // timeout (2 s here), however much keeps arriving.
    let head =
        b"GET / HTTP/1.1\r\nHost: lab\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let bytes: Vec<&[u8]> = head.chunks(1).collect();
    let (got, end, took) = exchange(family, &bytes, Duration::from_millis(250));
    note(
        &mut report,
        format!(
            "slowloris (1 byte/250 ms): {end:?} after {took:.2?}, {} bytes back",
            got.len()
        ),
    );
    assert!(
        matches!(end, Err(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)),
        "slowloris is reset: {end:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "at the 2 s request timeout: {took:?}"
    );

    // Garbage after the handshake: 400, then a clean close.
    let (got, end, took) = exchange(
        family,
        &[b"\x16\x03\x01garbage \x00\xff\r\n\r\n"],
        Duration::ZERO,
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    note(
        &mut report,
        format!(
            "garbage: {:?} {end:?} after {took:.2?}",
            text.lines().next().unwrap_or("")
        ),
    );
    // A TLS record type first: the front-end takes it for a ClientHello and resets
    // (a TLS client cannot read an HTTP error); plain garbage gets 400.
    let (got, end, _) = exchange(family, &[b"\x01\x02\x03 not http\r\n\r\n"], Duration::ZERO);
    let text = String::from_utf8_lossy(&got).into_owned();
    note(
        &mut report,
        format!(
            "non-TLS garbage: {:?} {end:?}",
            text.lines().next().unwrap_or("")
        ),
    );
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");

    // An oversized head: 431.
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(17_000));
    let (got, end, _) = exchange(family, &[big.as_bytes()], Duration::ZERO);
    let text = String::from_utf8_lossy(&got).into_owned();
    note(
        &mut report,
        format!(
            "17 kB head: {:?} {end:?}",
            text.lines().next().unwrap_or("")
        ),
    );
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");

    // The hand-made segments: IPv4's (see the IPv6 twin's comment). How many malformed
    // SYNs were sent, for the count checked at the end.
    let malformed_sent = if family == Family::V4 {
        hand_made_segments(&mut report)
    } else {
        0
    };

    // Everything settles: half-open entries time out (200 + 400 + 800 ms), closed flows
    // leave after their 1 s grace; the daemon still serves.
    thread::sleep(Duration::from_secs(4));
    assert!(
        support::curl(&LAB, &[family.curl_flag(), &family.url("/img/")]).contains("backend=be1")
    );
    thread::sleep(Duration::from_secs(2));
    let log = cluster.stop_frontend();
    let draining = log
        .lines()
        .find(|l| l.contains("event=draining "))
        .unwrap_or_default()
        .to_owned();
    eprintln!("{} inputs tried; {draining}", report.len());
    let keys = [
        "request_timeouts",
        "responses_400",
        "responses_431",
        "tls_resets",
        "malformed",
        "syns_received",
        "out_of_order_dropped",
        "unacceptable_segments",
        "stray_dropped_for_cookies",
        "probes_sent",
        "stray_resets_sent",
        "closed_window_handoffs",
        "handshake_timeouts",
        "client_resets_before_handoff",
        "handoffs_completed",
        "connections",
    ];
    let stats: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}={}", support::logged_number(&log, "frontend_stats", k)))
        .collect();
    eprintln!("frontend_stats: {}", stats.join(" "));
    assert!(
        support::logged_number(&log, "frontend_stats", "request_timeouts") >= 1,
        "{log}"
    );
    assert!(
        support::logged_number(&log, "frontend_stats", "responses_400") >= 1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "responses_431"),
        1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "tls_resets"),
        1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "malformed"),
        malformed_sent,
        "each malformed SYN refused and counted, and nothing else"
    );
    if family == Family::V4 {
        let dropped_in_the_connection =
            support::logged_number(&log, "frontend_stats", "out_of_order_dropped") >= 1
                && support::logged_number(&log, "frontend_stats", "unacceptable_segments") >= 1;
        // Met by the core as ACKs of no connection: without timestamps (these carry
        // none) they are first offered to the back-ends to claim (`probes_sent`: a flow
        // moved here from another front-end would be theirs), else dropped unanswered;
        // never reset.
        let dropped_for_cookies = [
            "stray_dropped_for_cookies",
            "probes_sent",
            "probes_over_limit",
        ]
        .iter()
        .map(|key| support::logged_number(&log, "frontend_stats", key))
        .sum::<u64>()
            >= 3;
        assert!(
            dropped_in_the_connection || dropped_for_cookies,
            "the out-of-window segments dropped and counted: {log}"
        );
    }
    assert!(
        draining.contains("connections=0"),
        "the connection table is back to its baseline: {draining}"
    );
}

/// The hand-made segments of [`bad_input`] over IPv4, each with its outcome noted in
/// `report`; how many malformed SYNs were sent.
fn hand_made_segments(report: &mut Vec<String>) -> u64 {
    let raw = RawPeer::open();

    // Malformed TCP options on a SYN: the front-end's parser refuses the segment
    // (counted as malformed), no SYN/ACK.
    let malformed_options: [(&str, Vec<u8>); 4] = [
        ("option length 0", vec![2, 0, 0, 0]),
        ("option length past the header", vec![8, 40, 0, 0]),
        ("MSS of length 3", vec![2, 3, 5, 0]),
        ("window scale truncated", vec![1, 1, 1, 3]),
    ];
    for (i, (what, options)) in malformed_options.iter().enumerate() {
        let port = RAW_PORTS.0 + i as u16;
        raw.send(port, 1000, 0, SYN, 64_240, options.clone(), b"");
        let answer = raw.expect(port, Duration::from_millis(600), |_, _| true);
        note(
            report,
            format!("SYN with {what}: answer {:?}", answer.as_ref().map(|a| a.0)),
        );
        assert!(answer.is_none(), "{what}: no answer");
    }

    // A zero window after the handshake: the request is taken and handed off; the
    // back-end holds its response until the window opens, then it arrives.
    let port = RAW_PORTS.0 + 10;
    let iss = 5_000;
    let isn_f = raw.handshake(port, iss, 0);
    let request = b"GET /img/logo.svg HTTP/1.1\r\nHost: lab\r\n\r\n";
    raw.send(
        port,
        iss + 1,
        isn_f.wrapping_add(1),
        ACK | PSH,
        0,
        vec![],
        request,
    );
    let held = raw.expect(port, Duration::from_millis(1500), |_, p| !p.is_empty());
    let next = iss + 1 + request.len() as u32;
    raw.send(port, next, isn_f.wrapping_add(1), ACK, 64_240, vec![], b"");
    let answer = raw.expect(port, Duration::from_secs(3), |_, p| {
        p.starts_with(b"HTTP/1.1 ")
    });
    note(
        report,
        format!(
            "zero window: data while closed {:?}; after opening {:?}",
            held.as_ref().map(|h| h.4.len()),
            answer.as_ref().map(|a| String::from_utf8_lossy(&a.4)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned())
        ),
    );
    assert!(held.is_none(), "nothing is sent into a zero window");
    let (_, seq_b, _, _, body) = answer.expect("the response once the window opens");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    raw.send(port, next, seq_b, RST, 0, vec![], b"");

    // Out-of-window segments: far ahead and far behind. Dropped (and acknowledged, RFC
    // 9293 section 3.10.7.4); the connection goes on and its real request is served.
    // When XDP answered the SYN with a cookie (`syns_in_xdp`), the core meets the
    // connection only at its request: before it they are ACKs of no connection whose
    // cookie does not check, dropped unanswered (`stray_dropped_for_cookies`), or, these
    // carrying no timestamps, offered to the back-ends to claim first (`probes_sent`).
    // XDP passes up a SYN it cannot answer in place, so either can happen here (counted
    // below).
    let port = RAW_PORTS.0 + 11;
    let iss = 9_000;
    let isn_f = raw.handshake(port, iss, 64_240);
    let ack = isn_f.wrapping_add(1);
    raw.send(
        port,
        iss + 1 + 10_000_000,
        ack,
        ACK | PSH,
        64_240,
        vec![],
        b"ahead of the window",
    );
    raw.send(
        port,
        iss.wrapping_sub(100_000),
        ack,
        ACK | PSH,
        64_240,
        vec![],
        b"behind the window",
    );
    raw.send(
        port,
        iss + 1,
        ack.wrapping_add(1_000_000),
        ACK | PSH,
        64_240,
        vec![],
        b"acks the future",
    );
    let request = b"GET /img/logo.svg HTTP/1.1\r\nHost: lab\r\n\r\n";
    raw.send(port, iss + 1, ack, ACK | PSH, 64_240, vec![], request);
    let answer = raw.expect(port, Duration::from_secs(3), |_, p| {
        p.starts_with(b"HTTP/1.1 ")
    });
    note(
        report,
        format!(
            "out-of-window segments then a request: {:?}",
            answer.as_ref().map(|a| String::from_utf8_lossy(&a.4)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned())
        ),
    );
    let (_, seq_b, _, _, body) =
        answer.expect("the request after out-of-window segments is served");
    assert!(body.starts_with(b"HTTP/1.1 200"));
    raw.send(
        port,
        iss + 1 + request.len() as u32,
        seq_b,
        RST,
        0,
        vec![],
        b"",
    );

    // A forged handoff SYN from the client side: to the VIP it is an ordinary SYN (the
    // option means nothing there: SYN/ACK, nothing handed off); to a back-end it is
    // dropped by the module's tag check (counted).
    let port = RAW_PORTS.0 + 20;
    let mut forged = vec![2, 4, 0x05, 0xb4];
    forged.extend_from_slice(&[254, 20]);
    forged.extend_from_slice(&[0x5a; 18]);
    raw.send(port, 77, 0, SYN, 64_240, forged.clone(), b"");
    let answer = raw.expect(port, Duration::from_secs(1), |f, _| f & SYN != 0);
    note(
        report,
        format!(
            "forged handoff SYN to the VIP: answer flags {:?}",
            answer.map(|a| a.0)
        ),
    );
    raw.send(port, 78, 0, RST, 0, vec![], b"");
    let be1 = baton::backend::AgentConfig::parse(&support::backend_config(&LAB, 1)).unwrap();
    let bad_tag = |c: &baton::backend::AgentConfig| {
        baton::backend::BackendModule::open(c)
            .unwrap()
            .stats()
            .unwrap()[baton_common::backend::stat::IN_SYN_BAD_TAG as usize]
    };
    let before = bad_tag(&be1);
    let mut to_be1 = Frame {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        src: (CLIENT, port + 1),
        dst: (backend_addr(1).octets(), HTTP_PORT),
        seq: 79,
        ack: 0,
        flags: SYN,
        window: 64_240,
        options: forged,
        payload: vec![],
    }
    .ip_packet();
    to_be1[8] = 65;
    support::send_raw(&format!("{LAB}-client"), &to_be1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while bad_tag(&be1) == before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    note(
        report,
        format!(
            "forged handoff SYN to be1: in_syn_bad_tag {before} -> {}",
            bad_tag(&be1)
        ),
    );
    assert_eq!(
        bad_tag(&be1),
        before + 1,
        "the forged SYN' is dropped and counted"
    );

    malformed_options.len() as u64
}

// ---------------------------------------------------------------------------------
// Blind RST, FIN and SYN (RFC 5961): one spoofed segment must not end a connection

/// A keep-alive connection from inside the client namespace, one request answered.
struct KeepAlive {
    stream: TcpStream,
    port: u16,
}

impl KeepAlive {
    fn open() -> Self {
        let target = vip_http(Family::V4);
        let stream = baton::netns::run_in(&format!("{LAB}-client"), || {
            TcpStream::connect_timeout(&target, Duration::from_secs(10))
        })
        .unwrap()
        .expect("connect to the VIP");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = stream.local_addr().unwrap().port();
        let mut conn = Self { stream, port };
        conn.request().expect("the first request");
        conn
    }

    /// One `GET /` on the connection: the back-end that answered, or what went wrong.
    fn request(&mut self) -> Result<String, String> {
        let port = self.port;
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
            .map_err(|e| format!("write: {e} (port {port})"))?;
        read_response(&mut self.stream).map_err(|e| format!("{e} (port {port})"))
    }

    /// The client's next sequence number, read from its kernel (`TCP_REPAIR`, as CRIU
    /// does; leaving repair mode without a window probe changes nothing on the wire).
    fn snd_nxt(&self) -> u32 {
        use std::os::fd::AsRawFd as _;
        const TCP_REPAIR: libc::c_int = 19;
        const TCP_REPAIR_QUEUE: libc::c_int = 20;
        const TCP_QUEUE_SEQ: libc::c_int = 21;
        const TCP_SEND_QUEUE: libc::c_int = 2;
        const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
        let fd = self.stream.as_raw_fd();
        let set = |opt: libc::c_int, value: libc::c_int| {
            // SAFETY: a valid socket and an int option.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    opt,
                    (&raw const value).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(
                rc,
                0,
                "setsockopt {opt}: {}",
                std::io::Error::last_os_error()
            );
        };
        set(TCP_REPAIR, 1);
        set(TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
        let mut seq: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: as above, with room for the u32 the kernel writes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                TCP_QUEUE_SEQ,
                (&raw mut seq).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_QUEUE_SEQ: {}", std::io::Error::last_os_error());
        set(TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
        seq
    }

    /// A segment on this connection's 4-tuple, as an off-path attacker who knows only
    /// the 4-tuple would forge it.
    fn forge(&self, flags: u8, seq: u32) {
        let frame = Frame {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src: (CLIENT, self.port),
            dst: (VIP.octets(), HTTP_PORT),
            seq,
            ack: if flags & 0x10 != 0 { 12_345 } else { 0 },
            flags,
            window: 512,
            options: Vec::new(),
            payload: Vec::new(),
        };
        support::send_raw(&format!("{LAB}-client"), &frame.ip_packet());
    }
}

/// Reads one response with a `Content-Length` body; the back-end's name.
fn read_response(stream: &mut TcpStream) -> Result<String, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", got.len()));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = content_length(head)?;
        if body.len() < length {
            continue;
        }
        if !head.starts_with("HTTP/1.1 200 ") {
            return Err(head.lines().next().unwrap_or_default().to_owned());
        }
        return Ok(header_value(head, "X-Baton-Backend").unwrap_or_default());
    }
}

/// Issue 16, item 1. An off-path attacker who knows only the 4-tuple used to end a
/// handed-off connection with one segment: a RST or FIN at any sequence number (the
/// front-end entered its grace period, or then the half-closed timeout, and then reset
/// the client's next segment), or either followed by a SYN on the same ports (which
/// ended it at once). Now each is forwarded for the back-end's TCP to judge (it ignores
/// them) and changes nothing on the front-end: every connection answers its next
/// request 35 s later, past the grace period (30 s) a FIN or RST acted on would start.
/// Before the handoff, an in-window RST gets a challenge ACK and the request goes on.
/// A FIN and a RST at the exact number still end their connections as before.
#[test]
fn blind_resets_fins_and_syns_end_no_connection() {
    let Some(mut cluster) = cluster("blind_resets_fins_and_syns_end_no_connection", |t| t) else {
        return;
    };
    const RST: u8 = 0x04;
    const FIN_ACK: u8 = 0x11;
    const SYN: u8 = 0x02;
    let far = 3_000_000u32;
    let cases: [(&str, u8, bool); 4] = [
        ("RST far off", RST, false),
        ("FIN far off", FIN_ACK, false),
        ("RST far off, then SYN", RST, true),
        ("FIN far off, then SYN", FIN_ACK, true),
    ];
    let mut attacked = Vec::new();
    for (name, flags, then_syn) in cases {
        let conn = KeepAlive::open();
        let next = conn.snd_nxt();
        conn.forge(flags, next.wrapping_add(far));
        if then_syn {
            thread::sleep(Duration::from_millis(50));
            conn.forge(SYN, next.wrapping_add(0x4000_0000));
        }
        attacked.push((name, conn));
    }

    // Before the handoff: a head in two parts, an in-window RST between them.
    let target = vip_http(Family::V4);
    let mut early = baton::netns::run_in(&format!("{LAB}-client"), || {
        TcpStream::connect_timeout(&target, Duration::from_secs(10))
    })
    .unwrap()
    .unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    early.write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n").unwrap();
    thread::sleep(Duration::from_millis(200));
    let early_conn = KeepAlive {
        port: early.local_addr().unwrap().port(),
        stream: early.try_clone().unwrap(),
    };
    early_conn.forge(RST, early_conn.snd_nxt().wrapping_add(100));
    thread::sleep(Duration::from_millis(200));
    early.write_all(b"\r\n").unwrap();
    let early_answer = read_response(&mut early);
    println!("before the handoff, after an in-window RST: {early_answer:?}");
    assert!(early_answer.is_ok(), "{early_answer:?}");
    attacked.push(("in-window RST before the handoff", early_conn));

    // Past the grace period.
    println!("waiting 35 s");
    thread::sleep(Duration::from_secs(35));
    let mut failed = Vec::new();
    for (name, conn) in &mut attacked {
        let answer = conn.request();
        println!("{name}: next request 35 s later: {answer:?}");
        if answer.is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "connections ended by a blind segment: {failed:?}"
    );

    // The client's own FIN and RST, at the exact number, still end their connections.
    let counters = support::fastpath_counters(&LAB);
    let mut fin_conn = KeepAlive::open();
    fin_conn.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let end = fin_conn.stream.read_to_end(&mut rest);
    println!("after the client's FIN: {end:?}, {} bytes", rest.len());
    let rst_conn = KeepAlive::open();
    {
        use std::os::fd::AsRawFd as _;
        // SO_LINGER with a zero timeout: close() sends a RST at the exact number.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a `linger` value.
        let rc = unsafe {
            libc::setsockopt(
                rst_conn.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    drop(rst_conn);
    thread::sleep(Duration::from_millis(500));
    let after = support::fastpath_counters(&LAB);
    let delta = |name: &str| after[name] - counters[name];
    println!(
        "fast path: forwarded_fin {} forwarded_rst {}; over the test: forwarded_fin_ignored {} forwarded_rst_ignored {}",
        delta("forwarded_fin"),
        delta("forwarded_rst"),
        after["forwarded_fin_ignored"],
        after["forwarded_rst_ignored"]
    );
    assert!(delta("forwarded_fin") >= 1, "the exact FIN is acted on");
    assert_eq!(delta("forwarded_rst"), 1, "the exact RST is acted on");
    assert!(after["forwarded_fin_ignored"] >= 2);
    assert!(after["forwarded_rst_ignored"] >= 2);

    drop(attacked);
    let log = cluster.stop_frontend();
    let core = |key: &str| support::logged_number(&log, "frontend_stats", key);
    println!(
        "core: client_resets_challenged {} client_resets_from_fast_path {} time_wait_reused {}",
        core("client_resets_challenged"),
        core("client_resets_from_fast_path"),
        core("time_wait_reused")
    );
    assert!(core("client_resets_challenged") >= 1, "{log}");
    assert_eq!(core("client_resets_from_fast_path"), 1, "{log}");
    assert_eq!(core("time_wait_reused"), 0, "{log}");
}
