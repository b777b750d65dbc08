//! `baton bench --quick` end to end: the lab comes up, the three systems run their
//! workloads, the outputs are written and the lab is gone afterwards.
//!
//! A benchmark is not a test, so this one runs only when asked (`BATON_BENCH=1`; it
//! takes about a minute and loads the whole machine) and as root; otherwise it prints
//! why it skipped. It checks that the command works and that every workload ran clean
//! (no socket errors, no non-2xx answers), never how fast anything was.

use std::{path::PathBuf, process::Command};

#[test]
fn quick_bench_runs_clean_and_writes_its_outputs() {
    if std::env::var("BATON_BENCH").as_deref() != Ok("1") {
        eprintln!("SKIPPED quick_bench: a benchmark, not a test; set BATON_BENCH=1 to run it");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED quick_bench: needs root for network namespaces and eBPF");
        return;
    }
    let lab = format!("bbench{}", std::process::id());
    let out = PathBuf::from(format!("/tmp/{lab}-out"));
    let run = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["bench", "--quick", "--out", out.to_str().unwrap()])
        .env("BATON_LAB", &lab)
        .output()
        .expect("spawn baton bench");
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
    // The lab is gone: no namespace of it is left.
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
    let _ = std::fs::remove_dir_all(&out);
}
