//! Observing a running cluster, in the lab: the front-end and the back-end agents with
//! `metrics` and `access_log` on, a few requests from `client` routed by content, and
//! then the numbers checked against what the requests did:
//!
//! - the front-end's `/metrics` (scraped from inside `fe`): handoffs started and
//!   completed equal the requests, none failed; each rule's decisions and each
//!   back-end's handoffs equal what the responses' `X-Baton-Backend` says; the latency
//!   histogram counted every handoff; the XDP fast path forwarded;
//! - each back-end agent's `/metrics`: its module accepted one SYN' per request it
//!   served;
//! - `baton status --json` shows the three back-ends healthy with those handoffs, and
//!   says clearly when the daemon is gone;
//! - the access log has one line per request, with its request line, rule and back-end.
//!
//! Root only (prints why it skipped otherwise); lab name `btop<pid>`.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use baton::lab::{HTTP_PORT, VIP, backend_addr};
use baton::metrics::{Sample, parse};
use support::{Cluster, backend_at, baton, served_by, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btop"));
static SERIAL: Mutex<()> = Mutex::new(());
const FE_METRICS: &str = "127.0.0.1:9180";
const BE_METRICS: &str = "127.0.0.1:9181";

/// `curl -s http://ADDR/metrics` inside `node`, parsed.
fn scrape(node: &str, addr: &str) -> Vec<Sample> {
    parse(&stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            node,
            "--",
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{addr}/metrics"),
        ],
    )))
}

/// The value of `name` with `label` (if given) in `samples`; fails the test if absent.
fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> u64 {
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|(k, v)| s.label(k) == v))
        .unwrap_or_else(|| panic!("no {name} {label:?} in the metrics"))
        .value as u64
}

/// `be2` -> `198.18.1.12:80`.
fn address_of(node: &str) -> String {
    let k: u8 = node.trim_start_matches("be").parse().unwrap();
    backend_at(k, HTTP_PORT).to_string()
}

/// A logfmt field's value (quotes and escapes removed), or `None`.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    } else {
        Some(rest.split(' ').next()?.to_string())
    }
}

#[test]
fn metrics_status_and_access_log_follow_the_requests() {
    let access_log = format!("/run/{LAB}-lab/access.log");
    let config = support::frontend_config(&LAB).replacen(
        "\nport = 80\n",
        &format!("\nport = 80\nmetrics = \"{FE_METRICS}\"\naccess_log = \"{access_log}\"\n"),
        1,
    );
    assert!(config.contains("access_log"), "the example has `port = 80`");
    let Some(mut cluster) = Cluster::builder(
        &LAB,
        &SERIAL,
        "metrics_status_and_access_log_follow_the_requests",
    )
    .agent_extra(&format!("metrics = \"{BE_METRICS}\"\n"))
    .frontend(&config)
    .up() else {
        return;
    };
    let config_path = format!("/run/{LAB}-lab/fe.toml");

    // Nothing handed off yet: the counters start at zero.
    let before = scrape("fe", FE_METRICS);
    assert_eq!(
        value(
            &before,
            "baton_frontend_handoffs_total",
            Some(("result", "completed"))
        ),
        0
    );

    // (path, the rule that takes it): 3 images, 2 api, 1 static, 3 by the default pool.
    let requests = [
        ("/img/a.png", "images"),
        ("/api/status.json", "api"),
        ("/img/b.png", "images"),
        ("/static/site.css", "static"),
        ("/", "default"),
        ("/api/x", "api"),
        ("/index.html", "default"),
        ("/logo.svg", "images"),
        ("/", "default"),
    ];
    let mut served = Vec::new();
    for (path, _) in requests {
        let head = support::curl(
            &LAB,
            &["-D", "-", "-o", "/dev/null", &format!("http://{VIP}{path}")],
        );
        let node =
            served_by(&head).unwrap_or_else(|| panic!("{path}: no X-Baton-Backend in {head}"));
        served.push(address_of(&node));
    }
    let n = requests.len() as u64;
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    for b in &served {
        *per_backend.entry(b.clone()).or_default() += 1;
    }
    let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, rule) in requests {
        *per_rule.entry(rule).or_default() += 1;
    }

    // The front-end's metrics. Each curl has finished, so each handoff is confirmed;
    // the loop answers a scrape between rounds.
    let m = scrape("fe", FE_METRICS);
    let handoffs = |result| {
        value(
            &m,
            "baton_frontend_handoffs_total",
            Some(("result", result)),
        )
    };
    assert_eq!(handoffs("started"), n);
    assert_eq!(handoffs("completed"), n);
    assert_eq!(handoffs("failed"), 0);
    assert_eq!(value(&m, "baton_frontend_handoff_retries_total", None), 0);
    assert_eq!(
        value(&m, "baton_frontend_connections_accepted_total", None),
        n
    );
    for rule in [
        "images-host",
        "images",
        "api",
        "static",
        "sessions",
        "default",
    ] {
        assert_eq!(
            value(
                &m,
                "baton_frontend_rule_decisions_total",
                Some(("rule", rule))
            ),
            per_rule.get(rule).copied().unwrap_or(0),
            "decisions of rule {rule}"
        );
    }
    for k in 1..=3 {
        let b = address_of(&format!("be{k}"));
        assert_eq!(
            value(
                &m,
                "baton_frontend_backend_handoffs_total",
                Some(("backend", &b))
            ),
            per_backend.get(&b).copied().unwrap_or(0),
            "handoffs to {b}"
        );
        assert_eq!(
            value(&m, "baton_frontend_backend_up", Some(("backend", &b))),
            1,
            "{b} up"
        );
    }
    assert_eq!(
        value(&m, "baton_frontend_handoff_latency_seconds_count", None),
        n
    );
    assert_eq!(
        value(
            &m,
            "baton_frontend_handoff_latency_seconds_bucket",
            Some(("le", "+Inf"))
        ),
        n
    );
    let buckets: Vec<f64> = m
        .iter()
        .filter(|s| s.name == "baton_frontend_handoff_latency_seconds_bucket")
        .map(|s| s.value)
        .collect();
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {buckets:?}"
    );
    assert!(
        value(
            &m,
            "baton_frontend_xdp_packets_total",
            Some(("outcome", "forwarded"))
        ) > 0,
        "the fast path forwarded the clients' ACKs"
    );
    assert_eq!(
        value(&m, "baton_frontend_flow_table_capacity", None),
        262_144
    );
    // Every request the XDP program left to the slow path is counted once by why, read
    // from the pinned map: every reason has its sample, and they add up.
    let reasons: Vec<&Sample> = m
        .iter()
        .filter(|s| s.name == "baton_frontend_kernel_dispatch_slow_path_total")
        .collect();
    assert_eq!(
        reasons.len(),
        baton_common::kernel_dispatch::reason::COUNT as usize - 1,
        "one sample per reason"
    );
    let left_to_userspace: u64 = reasons.iter().map(|s| s.value as u64).sum();
    assert_eq!(
        left_to_userspace,
        value(
            &m,
            "baton_frontend_xdp_packets_total",
            Some(("outcome", "pass_request_to_slow_path"))
        ),
        "the reasons add up to the requests passed up"
    );
    // The slow path's I/O is exported; it sent a packet for each request the kernel
    // left to it (a SYN' each) and none for the kernel's own handoffs (with every pool
    // policy in the kernel, these requests may all be the kernel's).
    assert!(
        value(
            &m,
            "baton_frontend_io_total",
            Some(("counter", "packets_sent"))
        ) >= value(
            &m,
            "baton_frontend_dispatch_decisions_total",
            Some(("path", "userspace"))
        )
    );

    // Each back-end's module accepted one SYN' per request it served.
    for k in 1..=3 {
        let b = address_of(&format!("be{k}"));
        let bm = scrape(&format!("be{k}"), BE_METRICS);
        assert_eq!(
            value(
                &bm,
                "baton_backend_packets_total",
                Some(("outcome", "in_syn_accepted"))
            ),
            per_backend.get(&b).copied().unwrap_or(0),
            "SYN's accepted by be{k}"
        );
        assert_eq!(
            value(
                &bm,
                "baton_backend_packets_total",
                Some(("outcome", "in_syn_bad_tag"))
            ),
            0
        );
        assert_eq!(
            value(&bm, "baton_backend_flow_table_capacity", None),
            1_048_576
        );
    }

    // `baton status`, as JSON and as a table.
    let json = stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "status",
            "--config",
            &config_path,
            "--json",
        ],
    ));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["service"], format!("{VIP}:{HTTP_PORT}"), "{json}");
    assert_eq!(status["handoffs"]["completed"], n, "{json}");
    let rows = status["backends"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{json}");
    for row in rows {
        let b = row["address"].as_str().unwrap();
        assert_eq!(row["healthy"], true, "{json}");
        assert_eq!(
            row["handoffs"].as_u64().unwrap(),
            per_backend.get(b).copied().unwrap_or(0),
            "{json}"
        );
        assert!(!row["pools"].as_array().unwrap().is_empty(), "{json}");
    }
    let table = stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "status",
            "--config",
            &config_path,
        ],
    ));
    eprintln!("baton status:\n{table}");
    assert_eq!(
        table.contains("left to userspace by the kernel: "),
        left_to_userspace > 0,
        "the reasons' line when the kernel left any request to userspace: {table}"
    );
    assert!(
        table.contains(&format!("handoffs: {n} completed, 0 failed")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .filter(|l| {
                (1..=3).any(|k| l.starts_with(&backend_addr(k).to_string())) && l.contains(" up ")
            })
            .count()
            == 3,
        "{table}"
    );

    // The access log: one line per request, in order, each with its request, rule and
    // back-end. Lines go out at the start of the loop's next round (within 250 ms).
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = std::fs::read_to_string(&access_log).unwrap_or_default();
        if text.lines().count() as u64 >= n || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, n, "{text}");
    for ((line, (path, rule)), backend) in lines.iter().zip(requests).zip(&served) {
        assert!(line.starts_with("time=20"), "{line}");
        assert_eq!(
            field(line, "request").as_deref(),
            Some(&*format!("GET {path} HTTP/1.1")),
            "{line}"
        );
        assert_eq!(
            field(line, "host").as_deref(),
            Some(&*VIP.to_string()),
            "{line}"
        );
        assert_eq!(field(line, "rule").as_deref(), Some(rule), "{line}");
        assert_eq!(
            field(line, "backend").as_deref(),
            Some(backend.as_str()),
            "{line}"
        );
        assert_eq!(field(line, "candidate").as_deref(), Some("1"), "{line}");
        let us: u64 = field(line, "latency_us").unwrap().parse().unwrap();
        assert!(us < 2_000_000, "{line}");
    }

    // A request the front-end answers itself (400: not HTTP) is told apart from those
    // in progress while it waits out its grace period (`limits.time_wait_ms`, 30 s).
    let reply = stdout(&mut support::in_node(
        &LAB,
        "client",
        &[
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{VIP}/{HTTP_PORT}; printf 'garbage\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
            ),
        ],
    ));
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let m = scrape("fe", FE_METRICS);
    let connections = |state| value(&m, "baton_frontend_connections", Some(("state", state)));
    assert_eq!(connections("answered"), 1, "the 400 in its grace period");
    assert_eq!(connections("in_progress"), 0, "nothing is in progress");
    let json = stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "status",
            "--config",
            &config_path,
            "--json",
        ],
    ));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["connections"]["answered"], 1, "{json}");
    assert_eq!(status["connections"]["in_progress"], 0, "{json}");

    // Not a metrics path: 404.
    let code = stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{FE_METRICS}/"),
        ],
    ));
    assert_eq!(code, "404");

    // The daemon gone, `status` says so.
    cluster.stop_frontend();
    let out = baton(
        &LAB,
        &[
            "lab",
            "exec",
            "fe",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "status",
            "--config",
            &config_path,
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `baton frontend` running"), "{err}");
    drop(cluster);
}
