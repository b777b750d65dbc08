//! `baton bench --quick` end to end: the lab comes up, the three systems run their
//! workloads, the outputs are written and the lab is gone afterwards.
//!
//! A benchmark is not a test, so this one runs only when asked (`BATON_BENCH=1`; it
//! takes about a minute and loads the whole machine) and as root; otherwise it prints
//! why it skipped. It checks that the command works and that every workload ran clean
//! (no socket errors, no non-2xx answers), never how fast anything was. The second
//! test runs it over IPv4 and IPv6 (`--family v4,v6`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

/// One bench at a time: each loads the whole machine, and two at once would measure
/// each other.
static ONE_BENCH: Mutex<()> = Mutex::new(());

/// Runs `baton bench --quick ARGS` on a lab of its own, writing into `out`; `None`
/// (having said why) when not asked for or not root.
fn quick_bench(name: &str, args: &[&str], out: &Path) -> Option<(String, Output)> {
    if std::env::var("BATON_BENCH").as_deref() != Ok("1") {
        eprintln!("SKIPPED {name}: a benchmark, not a test; set BATON_BENCH=1 to run it");
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {name}: needs root for network namespaces and eBPF");
        return None;
    }
    let _one = ONE_BENCH.lock().unwrap_or_else(|e| e.into_inner());
    let lab = format!("bbench{}{name}", std::process::id())
        .chars()
        .take(24)
        .collect::<String>();
    let run = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["bench", "--quick", "--out", out.to_str().unwrap()])
        .args(args)
        .env("BATON_LAB", &lab)
        .output()
        .expect("spawn baton bench");
    Some((lab, run))
}

/// No namespace of lab `lab` is left.
fn assert_lab_gone(lab: &str) {
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        !netns.iter().any(|n| n.starts_with(&format!("{lab}-"))),
        "lab left: {netns:?}"
    );
}

#[test]
fn quick_bench_runs_clean_and_writes_its_outputs() {
    let out = PathBuf::from(format!("/tmp/bbench{}-out", std::process::id()));
    let Some((lab, run)) = quick_bench("quick_bench", &[], &out) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "baton bench failed:\n{stdout}\n{stderr}"
    );
    for table in [
        "(a) New connection",
        "(b) Keep-alive",
        "(c) 100 MiB",
        "(d) Front-end CPU",
        "(e) Time to first byte",
    ] {
        assert!(stdout.contains(table), "no {table} table:\n{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let summary = json["summary"].as_array().unwrap();
    assert_eq!(
        summary.len(),
        4,
        "direct, HAProxy (always and never) and Baton"
    );
    for s in summary {
        assert_eq!(s["close_errors"], 0, "{s}");
        assert_eq!(s["keep_alive_errors"], 0, "{s}");
        assert!(s["close_rps"]["median"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(out.join("results.md").is_file());
    assert!(!stdout.contains("IPv6"), "IPv4 alone by default:\n{stdout}");
    assert_lab_gone(&lab);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn quick_bench_over_both_families_runs_clean() {
    let out = PathBuf::from(format!("/tmp/bbench{}-v6-out", std::process::id()));
    // One HAProxy setting: the families double the turns.
    let args = ["--family", "v4,v6", "--haproxy-http-reuse", "never"];
    let Some((lab, run)) = quick_bench("v6", &args, &out) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "baton bench --family v4,v6 failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("### IPv6 beside IPv4"), "{stdout}");
    assert!(stdout.contains("| Baton, IPv6 |"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let summary = json["summary"].as_array().unwrap();
    let systems: Vec<(String, String)> = summary
        .iter()
        .map(|s| (s["system"].to_string(), s["family"].to_string()))
        .collect();
    assert_eq!(
        summary.len(),
        6,
        "direct, HAProxy (never), Baton over each: {systems:?}"
    );
    for s in summary {
        assert_eq!(s["close_errors"], 0, "{s}");
        assert_eq!(s["keep_alive_errors"], 0, "{s}");
        assert!(s["close_rps"]["median"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert_eq!(
        summary.iter().filter(|s| s["family"] == "v6").count(),
        3,
        "{systems:?}"
    );
    assert_lab_gone(&lab);
    let _ = std::fs::remove_dir_all(&out);
}
