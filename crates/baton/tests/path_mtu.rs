//! Path MTU through the VIP, in the lab (docs/design.md, "ICMP errors and path MTU"),
//! over both families: a back-end answers its clients as the VIP, so the ICMP
//! "fragmentation needed" (IPv4) or ICMPv6 "packet too big" (IPv6) a router sends about
//! a response segment too big for its next hop goes to the VIP, where the front-end gets
//! it. The front-end's XDP program forwards it to the flow's back-end, whose module puts
//! the quote back in the server's terms; the back-end's kernel lowers its path MTU
//! towards the client and the server retransmits smaller.
//!
//! A 100 MiB download through the VIP, and once it is under way the MTU of the router's
//! link towards the client lowered from 1,500 bytes to 1,000 (IPv4) or to IPv6's minimum
//! of 1,280 (the back-ends send 1,500-byte packets, with DF set over IPv4 as Linux does
//! with path-MTU discovery on; IPv6 routers never fragment):
//!
//! - with the back-ends' ICMP program of the family detached (its slot in their program
//!   array emptied: `backend_icmp` in `ingress_programs`, `backend_icmp_v6` in
//!   `ipv6_programs`), the errors reach the back-end untranslated, its kernel finds no
//!   socket for a quote from the VIP, and the download stalls: curl gives up after 10 s
//!   without a byte (the black hole every direct-return balancer is known for);
//! - with it (the agents restarted, which fills the slot again), the download arrives
//!   byte-exact, with no stall, and the back-end's route to the client carries the
//!   lowered MTU.
//!
//! Root only (each test prints why it skipped otherwise); lab name `btpm<pid>`.

use std::{process::Stdio, sync::Mutex, thread, time::Duration, time::Instant};

use aya::maps::{Map, MapData, PerCpuArray, ProgramArray};
use baton::lab::CLIENT_ADDR;
use baton_common::backend::{ingress_program, ipv6_program, stat};
use support::{Cluster, Daemon, Family, baton};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btpm"));
static SERIAL: Mutex<()> = Mutex::new(());
const BACKENDS: usize = 3;
/// 100 MiB at 25 MiB/s: four seconds, time to lower the MTU in the middle.
const RATE: &str = "25M";
/// The MTU the router's client side is lowered to: the figure for IPv4, and
/// IPv6's minimum link MTU (RFC 8200 §5), below which a link carries no IPv6 at all.
fn lowered_mtu(family: Family) -> u32 {
    match family {
        Family::V4 => 1000,
        Family::V6 => 1280,
    }
}

/// The back-ends' program array holding the family's ICMP program, and its slot.
fn icmp_slot(family: Family) -> (&'static str, u32) {
    match family {
        Family::V4 => ("ingress_programs", ingress_program::ICMP),
        Family::V6 => ("ipv6_programs", ipv6_program::ICMP),
    }
}

/// Back-end `k`'s pinned map `name` (`stats`, `ingress_programs`, `ipv6_programs`).
fn backend_pin(k: usize, name: &str) -> MapData {
    let path = format!("/run/{}-lab/be{k}/bpf/eth0/{name}", &*LAB);
    MapData::from_pin(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A back-end module counter summed over the back-ends.
fn backend_counter(index: u32) -> u64 {
    (1..=BACKENDS)
        .map(|k| {
            let stats: PerCpuArray<_, u64> =
                PerCpuArray::try_from(Map::PerCpuArray(backend_pin(k, "stats"))).unwrap();
            stats.get(&index, 0).unwrap().iter().sum::<u64>()
        })
        .sum()
}

fn router_mtu(mtu: u32) {
    support::ok(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "router",
            "--",
            "ip",
            "link",
            "set",
            "eth0",
            "mtu",
            &mtu.to_string(),
        ],
    ));
}

/// In every back-end: path-MTU discovery on (DF set on what the server sends over IPv4;
/// IPv6 has no other way), and no MTU probing (for both families' TCP), which would find
/// a smaller size by itself after a black hole and hide what the test looks for. Both
/// are Linux's defaults; the test says it relies on them.
fn backend_path_mtu_settings() {
    for k in 1..=BACKENDS {
        let node = format!("be{k}");
        for (setting, value) in [
            ("net.ipv4.ip_no_pmtu_disc", "0"),
            ("net.ipv4.tcp_mtu_probing", "0"),
        ] {
            support::ok(&mut baton(
                &LAB,
                &[
                    "lab",
                    "exec",
                    &node,
                    "--",
                    "sysctl",
                    "-qw",
                    &format!("{setting}={value}"),
                ],
            ));
        }
    }
}

/// Downloads 100M.bin through the family's VIP at [`RATE`], lowering the router's MTU
/// towards the client once the response flows; `Some(seconds)` if it arrived
/// byte-exact, `None` if curl gave up (10 s without a byte: a stall). The MTU is set
/// back to 1,500 after.
fn download_across_the_mtu_drop(family: Family) -> Option<f64> {
    let fetch = format!(
        "curl {} -sS --limit-rate {RATE} --speed-limit 1 --speed-time 10 \
         '{}' | sha256sum",
        family.curl_flag(),
        family.url("/files/100M.bin")
    );
    let started = Instant::now();
    let mut download = support::Download(Some(
        baton(&LAB, &["lab", "exec", "client", "--", "sh", "-c", &fetch])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // Well past the handshake and the handoff: the response is flowing at full size.
    thread::sleep(Duration::from_millis(1000));
    router_mtu(lowered_mtu(family));
    let out = download.0.take().unwrap().wait_with_output().unwrap();
    let took = started.elapsed().as_secs_f64();
    router_mtu(1500);
    let got = String::from_utf8_lossy(&out.stdout);
    let got = got.split_whitespace().next().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation too slow") || stderr.contains("timed out") {
        return None;
    }
    assert_eq!(
        got,
        support::expected_sha256(&LAB, "100M.bin"),
        "the download arrived whole: {stderr}"
    );
    Some(took)
}

#[test]
fn a_download_survives_a_smaller_mtu_towards_the_client() {
    download_survives_a_smaller_mtu(Family::V4);
}

#[test]
fn a_download_survives_a_smaller_mtu_towards_the_client_over_ipv6() {
    download_survives_a_smaller_mtu(Family::V6);
}

fn download_survives_a_smaller_mtu(family: Family) {
    let test = format!("path MTU over {family}");
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, &test).family(family).up() else {
        return;
    };
    cluster.assert_fast_path_attached();
    backend_path_mtu_settings();
    let lowered = lowered_mtu(family);

    // Without the back-ends' ICMP program of the family: the errors arrive, are passed
    // untranslated, and the download stalls.
    let (array, slot) = icmp_slot(family);
    for k in 1..=BACKENDS {
        let mut slots: ProgramArray<_> =
            ProgramArray::try_from(Map::ProgramArray(backend_pin(k, array))).unwrap();
        slots.clear_index(&slot).unwrap();
    }
    let unchecked = backend_counter(stat::IN_ICMP_UNCHECKED);
    let forwarded = support::fastpath_counters(&LAB)["forwarded_icmp"];
    assert_eq!(
        download_across_the_mtu_drop(family),
        None,
        "without the ICMP program the download over {family} must stall"
    );
    assert!(
        support::fastpath_counters(&LAB)["forwarded_icmp"] > forwarded,
        "the front-end forwarded the router's errors"
    );
    assert!(
        backend_counter(stat::IN_ICMP_UNCHECKED) > unchecked,
        "they reached a back-end and passed untranslated"
    );

    // The agents restarted: each fills its program arrays again.
    let configs: Vec<_> = cluster
        .backends
        .drain(..)
        .map(|(daemon, config)| {
            drop(daemon);
            config
        })
        .collect();
    for (k, config) in (1..=BACKENDS).zip(configs) {
        let path = format!("/run/{}-lab/be{k}.toml", &*LAB);
        let daemon = Daemon::start(
            &LAB,
            &format!("be{k}"),
            &["backend", "--config", &path],
            "event=reattached",
        );
        cluster.backends.push((daemon, config));
    }
    let translated = backend_counter(stat::IN_ICMP_TRANSLATED);
    let took = download_across_the_mtu_drop(family).expect("with the ICMP program, no stall");
    let translated = backend_counter(stat::IN_ICMP_TRANSLATED) - translated;
    assert!(translated > 0, "the errors were translated");
    let client = match family {
        Family::V4 => CLIENT_ADDR.to_string(),
        Family::V6 => baton::lab::v6_for(CLIENT_ADDR).to_string(),
    };
    let routes: String = (1..=BACKENDS)
        .map(|k| {
            support::stdout(&mut baton(
                &LAB,
                &[
                    "lab",
                    "exec",
                    &format!("be{k}"),
                    "--",
                    "ip",
                    "route",
                    "get",
                    &client,
                ],
            ))
        })
        .collect();
    assert!(
        routes.contains(&format!("mtu {lowered}")),
        "a back-end's route to the client carries the lowered MTU: {routes}"
    );
    eprintln!(
        "path MTU over {family}: 100 MiB byte-exact in {took:.1} s at {RATE}B/s with the MTU \
         lowered to {lowered} after 1 s; {translated} errors translated"
    );
}
