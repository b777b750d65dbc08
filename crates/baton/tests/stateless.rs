//! Forwarding by the back-end's stamp, in the lab (docs/design.md, "Stateless forwarding
//! by the stamp"): a front-end that has no entry for a handed-off flow forwards its
//! client's segments to the back-end the TSecr names, and learns the flow; a forged
//! stamp is dropped and counted.
//!
//! - A 100 MiB download through the VIP while its front-end is killed, the flow's entry
//!   taken out of the pinned table and a new daemon started, the client's segments held
//!   back meanwhile: what is left is a front-end that never saw the flow, as a front-end
//!   behind ECMP is when the routers move a flow to it. The program learns the flow
//!   from the client's next segment, the daemon's core takes it over from the notice,
//!   and the download arrives byte-exact. Without the stamp the client's segments would go up to a daemon whose
//!   core knows nothing of the connection, and the download would fail.
//! - The same move with the client's timestamps off (`net.ipv4.tcp_timestamps=0`): no
//!   stamp to forward by, so the core probes the back-ends and the one that holds the
//!   flow claims it (docs/design.md, "Clients without timestamps: probe and claim");
//!   the download arrives byte-exact. With `[tcp] probe_rate = 0` it stalls.
//! - Client segments naming another back-end than the one that made their stamp (a
//!   valid mark and id, a MAC that is not the flow's) are dropped and counted, and no
//!   flow is learned.
//!
//! Root only (each test prints why it skipped otherwise); lab name `btsl<pid>`; one test
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
use baton_common::{
    siphash::SipKey,
    stamp::{self, StampedFlow},
};
use support::{Cluster, Frame, baton};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btsl"));
static SERIAL: Mutex<()> = Mutex::new(());
const INTERFACE: &str = "eth0";
/// 100 MiB at 20 MiB/s: five seconds, room for a front-end to go in the middle.
const RATE: &str = "20M";

fn cluster(test: &str) -> Option<Cluster> {
    cluster_with(test, &support::frontend_config(&LAB))
}

fn cluster_with(test: &str, text: &str) -> Option<Cluster> {
    Cluster::builder(&LAB, &SERIAL, test)
        .frontend_named("fe-stateless", text)
        .frontend_not_started()
        .up()
}

fn pin_dir() -> PathBuf {
    PathBuf::from(support::frontend_pin_dir(&LAB))
}

fn flows() -> usize {
    fastpath::pinned_flow_count(&pin_dir(), INTERFACE).expect("the pinned flow table")
}

/// Waits up to `limit` for the pinned flow table to hold `n` flows.
fn wait_for_flows(n: usize, limit: Duration) {
    let started = Instant::now();
    while flows() != n {
        assert!(
            started.elapsed() < limit,
            "the pinned flow table holds {} flows, not {n}, after {limit:?}",
            flows()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Drops (or stops dropping) everything the client sends to the VIP, in the client's
/// own output path.
fn hold_client_segments(hold: bool) {
    let drop_to_vip = format!("add rule ip hold out ip daddr {VIP} drop");
    let rules = if hold {
        vec![
            "add table ip hold",
            "add chain ip hold out { type filter hook output priority 0 ; }",
            drop_to_vip.as_str(),
        ]
    } else {
        vec!["delete table ip hold"]
    };
    for rule in rules {
        let mut args = vec!["lab", "exec", "client", "--", "nft"];
        args.extend(rule.split(' '));
        support::ok(&mut baton(&LAB, &args));
    }
}

#[test]
fn a_frontend_that_never_saw_a_flow_forwards_it_by_the_backends_stamp() {
    let Some(moved) = move_a_download(
        "a front-end without the flow's entry",
        &support::frontend_config(&LAB),
        Timestamps::On,
    ) else {
        return;
    };
    let log = &moved.log;
    eprintln!(
        "download took {:?}; move to learning {:?}; learned_by_stamp {}, drop_stamp_forged {}",
        moved.took,
        moved.to_learn,
        moved.after["learned_by_stamp"],
        moved.after["drop_stamp_forged"]
    );
    // The client's next segment echoes the back-end's stamp: the program forwards it,
    // writes the entry again and tells the daemon.
    assert!(moved.to_learn.is_some(), "the flow was learned: {log}");
    assert_eq!(
        moved.learned("learned_by_stamp"),
        1,
        "learned once, then forwarded as any flow"
    );
    assert!(moved.out.status.success(), "the download failed");
    assert_eq!(
        digest(&moved.out),
        moved.expected,
        "the 100 MiB arrived byte-exact through a front-end that had to learn the flow"
    );
    assert_eq!(moved.learned("drop_stamp_forged"), 0);
    assert_eq!(moved.learned("drop_stamp_unknown_backend"), 0);
    // The next daemon took the learned flow over (from the table at its start, or from
    // the notice), tracked its close and removed it.
    assert_eq!(
        support::logged_number(log, "fastpath_stats", "flows_learned"),
        1,
        "the core took the flow over from the program's notice: {log}"
    );
    assert_eq!(
        support::logged_number(log, "fastpath_stats", "learned_flows_refused"),
        0,
        "{log}"
    );
    assert_eq!(
        support::logged_number(log, "frontend_stats", "adopted"),
        1,
        "{log}"
    );
    assert_eq!(
        support::logged_number(log, "frontend_stats", "stray_segments"),
        0,
        "{log}"
    );
}

/// The lab's handoff key (`examples/frontend-lab.toml`, `examples/backend-lab.toml`).
fn lab_key() -> SipKey {
    let hex = "0123456789abcdef0123456789abcdef";
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    SipKey::from_bytes(key)
}

#[test]
fn a_forged_tsecr_naming_another_backend_is_dropped_and_counted() {
    let Some(cluster) = cluster("a forged stamp") else {
        return;
    };
    assert!(
        support::FRONTEND_CONFIG.contains("handoff_key = \"0123456789abcdef0123456789abcdef\""),
        "the example's key changed"
    );
    let fe = cluster.start_frontend();
    let before = support::fastpath_counters(&LAB);
    // A client on a port with no flow claims its connection is on be2: the mark and
    // be2's id are right, the MAC is be1's stamp's for this flow, or be2's flipped.
    let port = 45_123;
    let flow = |backend: std::net::Ipv4Addr| StampedFlow {
        client_addr: baton::lab::CLIENT_ADDR.octets(),
        client_port: port,
        vip_addr: VIP.octets(),
        vip_port: baton::lab::HTTP_PORT,
        backend_addr: backend.octets(),
        backend_port: baton::lab::HTTP_PORT,
    };
    let be1 = stamp::stamp(&lab_key(), &flow(baton::lab::backend_addr(1)));
    let be2 = stamp::stamp(&lab_key(), &flow(baton::lab::backend_addr(2)));
    let be2_id = u16::from(stamp::backend_id(baton::lab::backend_addr(2).octets()));
    let forged = [
        (be1 & 0x80ff) | (be2_id << stamp::ID_SHIFT),
        be2 ^ 0x01,
        be2 ^ 0x80 ^ 0x04,
    ];
    for (i, stamp) in forged.iter().enumerate() {
        assert_ne!(*stamp, be2, "forged, not be2's own");
        let mut options = vec![1, 1, 8, 10];
        options.extend_from_slice(&77u32.to_be_bytes());
        options.extend_from_slice(&stamp::stamped_tsval(0x5000_0000, *stamp).to_be_bytes());
        let segment = Frame {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src: (baton::lab::CLIENT_ADDR.octets(), port),
            dst: (VIP.octets(), baton::lab::HTTP_PORT),
            seq: 1_000 + i as u32,
            ack: 2_000,
            flags: 0x18,
            window: 502,
            options,
            payload: b"GET /forged HTTP/1.1\r\n\r\n".to_vec(),
        };
        support::send_raw(&format!("{}-client", &*LAB), &segment.ip_packet());
    }
    let started = Instant::now();
    let dropped = loop {
        let now = support::fastpath_counters(&LAB);
        let dropped = now["drop_stamp_forged"] - before["drop_stamp_forged"];
        if dropped >= 3 || started.elapsed() > Duration::from_secs(5) {
            break dropped;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dropped, 3, "every forged stamp dropped and counted");
    let after = support::fastpath_counters(&LAB);
    assert_eq!(
        after["learned_by_stamp"], before["learned_by_stamp"],
        "none learned"
    );
    assert_eq!(flows(), 0, "no flow learned");
    let log = fe.stop();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "stray_segments"),
        0,
        "nothing went up to the slow path either: {log}"
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timestamps {
    On,
    /// The client's `net.ipv4.tcp_timestamps=0`: no stamp to echo.
    Off,
}

/// What became of a download moved to a front-end that never saw it.
struct Moved {
    /// The download's exit and its digest, and how long it took.
    out: std::process::Output,
    took: Duration,
    /// The digest the file has.
    expected: String,
    /// From the client's segments let through to the new daemon to the flow learned
    /// (`None`: not learned within 15 s).
    to_learn: Option<Duration>,
    /// The new daemon's log, stopped.
    log: String,
    /// The fast path's counters before the move and at the end.
    before: std::collections::HashMap<&'static str, u64>,
    after: std::collections::HashMap<&'static str, u64>,
}

impl Moved {
    /// How much a fast-path counter moved from the move on.
    fn learned(&self, counter: &str) -> u64 {
        self.after[counter] - self.before[counter]
    }
}

/// A 100 MiB download through the VIP moved to a front-end that never saw it: the
/// front-end's daemon killed, the flow's entry removed, a new daemon started (with
/// `text`), the client's segments held back meanwhile (the back-end's, then its
/// retransmissions, go on), so that the first one the program sees reaches it with the
/// new daemon running. With timestamps, the client's next segment echoes the back-end's
/// stamp; without, the core probes, the back-end claims, the program learns the flow.
/// Returns `None` when the test is skipped.
fn move_a_download(test: &str, text: &str, timestamps: Timestamps) -> Option<Moved> {
    let cluster = cluster_with(test, text)?;
    if timestamps == Timestamps::Off {
        support::ok(&mut baton(
            &LAB,
            &[
                "lab",
                "exec",
                "client",
                "--",
                "sysctl",
                "-qw",
                "net.ipv4.tcp_timestamps=0",
            ],
        ));
    }
    let first = cluster.start_frontend();
    // A stalled transfer fails within 20 s rather than hanging the test.
    let fetch = format!(
        "curl -sS --limit-rate {RATE} --speed-limit 1 --speed-time 20 \
         http://{VIP}/files/100M.bin | sha256sum"
    );
    let started = Instant::now();
    let mut download = support::Download(Some(
        baton(&LAB, &["lab", "exec", "client", "--", "sh", "-c", &fetch])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    wait_for_flows(1, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let before = support::fastpath_counters(&LAB);
    hold_client_segments(true);
    first.kill();
    assert_eq!(
        fastpath::forget_pinned_flows(&pin_dir(), INTERFACE).unwrap(),
        1,
        "the download's flow was in the table"
    );
    let second = cluster.start_frontend();
    assert_eq!(flows(), 0, "the new daemon found no flow");
    let moved = Instant::now();
    hold_client_segments(false);
    let to_learn = loop {
        if flows() == 1 {
            break Some(moved.elapsed());
        }
        if moved.elapsed() > Duration::from_secs(15) {
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = download.0.take().unwrap().wait_with_output().unwrap();
    let took = started.elapsed();
    if to_learn.is_some() {
        // The daemon took the learned flow over, tracked its close and removed it.
        wait_for_flows(0, Duration::from_secs(45));
    }
    let log = second.stop();
    Some(Moved {
        out,
        took,
        expected: support::expected_sha256(&LAB, "100M.bin"),
        to_learn,
        log,
        before,
        after: support::fastpath_counters(&LAB),
    })
}

fn digest(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Issue 20, item 4: a client without timestamps echoes no stamp; its moved flow is
/// found by the probe and the back-end's claim, and the download arrives byte-exact.
#[test]
fn a_moved_flow_of_a_client_without_timestamps_is_claimed_by_its_backend() {
    let Some(moved) = move_a_download(
        "a client without timestamps",
        &support::frontend_config(&LAB),
        Timestamps::Off,
    ) else {
        return;
    };
    let log = &moved.log;
    let probes = support::logged_number(log, "frontend_stats", "probes_sent");
    eprintln!(
        "move to claim {:?}; probes_sent {probes}, probe_frames_sent {}, learned_by_claim {}",
        moved.to_learn,
        support::logged_number(log, "io_stats", "probe_frames_sent"),
        moved.learned("learned_by_claim"),
    );
    assert!(moved.to_learn.is_some(), "the flow was learned: {log}");
    assert!(moved.out.status.success(), "the download failed");
    assert_eq!(
        digest(&moved.out),
        moved.expected,
        "the 100 MiB arrived byte-exact through a front-end that probed for the flow"
    );
    assert_eq!(
        moved.learned("learned_by_claim"),
        1,
        "learned once, by the claim"
    );
    assert_eq!(
        moved.learned("learned_by_stamp"),
        0,
        "no stamp without timestamps"
    );
    assert!(probes >= 1, "the core probed: {log}");
    // A frame to each back-end of the stamp table for each probe (the lab's pools
    // have several).
    assert!(
        support::logged_number(log, "io_stats", "probe_frames_sent") > probes,
        "{log}"
    );
    assert_eq!(
        support::logged_number(log, "io_stats", "probe_send_errors"),
        0
    );
    assert_eq!(
        support::logged_number(log, "fastpath_stats", "flows_learned"),
        1,
        "the core took the flow over from the program's notice: {log}"
    );
    assert_eq!(
        support::logged_number(log, "frontend_stats", "probes_over_limit"),
        0,
        "{log}"
    );
}

/// The same move with the probe off (`[tcp] probe_rate = 0`): the mechanism's absence
/// shown to matter. The new front-end's core knows nothing of the flow and no back-end
/// is asked: the client's segments are dropped (the XDP program's cookies engaged) or
/// reset, and the download fails.
#[test]
fn without_the_probe_a_moved_flow_of_a_client_without_timestamps_fails() {
    let text = support::frontend_config(&LAB).replacen("[tcp]\n", "[tcp]\nprobe_rate = 0\n", 1);
    assert!(
        text.contains("probe_rate = 0"),
        "the example has a [tcp] table"
    );
    let Some(moved) = move_a_download("no probe", &text, Timestamps::Off) else {
        return;
    };
    eprintln!("without the probe: learned {:?}", moved.to_learn);
    assert_eq!(moved.to_learn, None, "nothing learned the flow");
    assert_eq!(moved.learned("learned_by_claim"), 0);
    assert_ne!(
        digest(&moved.out),
        moved.expected,
        "the download did not complete"
    );
    assert_eq!(
        support::logged_number(&moved.log, "frontend_stats", "probes_sent"),
        0
    );
}
