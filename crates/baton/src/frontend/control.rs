//! `baton check` and `baton reload`: operating on a front-end configuration from outside
//! the daemon.
//!
//! `baton reload --config FILE` checks FILE first (a file the daemon would refuse is
//! reported here, and nothing is signalled), then sends SIGHUP to every running `baton
//! frontend` whose `--config` is that same file: it finds them in `/proc` by their
//! command line, resolving a relative `--config` against the daemon's working directory
//! and comparing canonical paths. No pidfile to keep right, and a daemon started in a
//! network namespace (`ip netns exec`, `baton lab exec`) is found all the same: they
//! share the process table. `--pid` signals one given process instead (after checking
//! that it is a `baton frontend`).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::config::{self, Summary};

/// Checks the front-end configuration at `path` as the daemon would (key files
/// included) and describes it. A bare dispatcher configuration, the body of a
/// `[dispatch]` table (as `examples/dispatch.toml`), is checked as the daemon would
/// check that table, and said to be one.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if config::is_dispatch_body(&text) == Some(true) {
        let d = config::parse_dispatch_body(&text)
            .with_context(|| format!("in {} (a [dispatch] body)", path.display()))?;
        let head = format!(
            "OK {}: a [dispatch] body (no interface or vip: the dispatcher's part of a front-end file); {}\n",
            path.display(),
            Summary(&d)
        );
        return Ok(describe(head, &d));
    }
    let s = config::load(path)?;
    let head = format!(
        "OK {}: service {} on {}; {}\n",
        path.display(),
        super::services_label(&s.services),
        s.interface,
        Summary(&s.dispatcher)
    );
    Ok(describe(head, &s.dispatcher))
}

/// `head` and the dispatcher's rules, pools, back-ends and health checks, one line each.
fn describe(mut out: String, d: &baton_dispatch::Dispatcher) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let _ = writeln!(
        out,
        "  rules:     {} (then the default pool)",
        list(d.rule_names().map(str::to_owned).collect())
    );
    let _ = writeln!(
        out,
        "  pools:     {}",
        list(d.pools().map(|(n, p)| format!("{n} ({p})")).collect())
    );
    let _ = writeln!(
        out,
        "  back-ends: {}",
        list(d.backends().map(|b| b.to_string()).collect())
    );
    if !d.health_checks().is_empty() {
        let checks = d
            .health_checks()
            .iter()
            .map(|(b, c)| {
                format!(
                    "{}:{}{} every {} ms",
                    b.ip(),
                    c.port.unwrap_or(b.port()),
                    c.path,
                    c.interval.as_millis()
                )
            })
            .collect();
        let _ = writeln!(out, "  checks:    {}", list(checks));
    }
    // Where each rule and pool is decided (docs/design.md, "Dispatch in the kernel");
    // the request limits change nothing here.
    let limits = baton_proto::request::RequestLimits::default();
    let kernel = d.compile_kernel(limits.max_head_len, limits.max_headers);
    let _ = writeln!(out, "  kernel dispatch, in [dispatch] order:");
    for (i, rule) in kernel.rules.iter().enumerate() {
        let _ = writeln!(out, "    rule {i} {}: {rule}", rule.name);
    }
    for pool in &kernel.pool_placements {
        let _ = writeln!(out, "    pool {}: {pool}", pool.name);
    }
    out
}

/// Checks `path`, then asks the daemons running with it (or process `pid`) to reload
/// it. Returns the processes signalled.
pub fn reload(path: &Path, pid: Option<u32>) -> anyhow::Result<Vec<u32>> {
    config::load(path).context("not reloading: the daemon would refuse this file")?;
    let pids = match pid {
        Some(pid) => {
            if frontend_config(pid).is_none() {
                bail!("process {pid} is not a running `baton frontend --config FILE`");
            }
            vec![pid]
        }
        None => {
            let want =
                fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
            let pids = daemons_with(&want)?;
            if pids.is_empty() {
                bail!(
                    "no running `baton frontend` uses {} (use --pid for one started otherwise)",
                    want.display()
                );
            }
            pids
        }
    };
    for &pid in &pids {
        // SAFETY: kill(2) with a plain signal number has no memory-safety preconditions.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending SIGHUP to {pid}"));
        }
    }
    Ok(pids)
}

/// Every `baton frontend` process whose configuration file is `want` (canonical).
fn daemons_with(want: &Path) -> anyhow::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if frontend_config(pid).is_some_and(|p| p == want) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The canonical configuration path of process `pid` if it is `baton frontend`.
fn frontend_config(pid: u32) -> Option<PathBuf> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&str> = cmdline
        .split(|&b| b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .collect();
    let config = frontend_config_arg(&args)?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    fs::canonicalize(cwd.join(config)).ok()
}

/// `--config`'s value in a `baton frontend` command line (`argv[0]` named `baton*`).
fn frontend_config_arg<'a>(args: &[&'a str]) -> Option<&'a str> {
    let exe = Path::new(args.first()?).file_name()?.to_str()?;
    if !exe.starts_with("baton") || args.get(1) != Some(&"frontend") {
        return None;
    }
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        if *a == "--config" {
            return rest.next().copied();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_config_of_a_frontend_command_line() {
        let cases: [(&[&str], Option<&str>); 5] = [
            (
                &["/usr/bin/baton", "frontend", "--config", "fe.toml"],
                Some("fe.toml"),
            ),
            (
                &["baton", "frontend", "--config=/etc/fe.toml"],
                Some("/etc/fe.toml"),
            ),
            (&["baton", "backend", "--config", "be.toml"], None),
            (&["curl", "frontend", "--config", "x"], None),
            (&["baton", "frontend"], None),
        ];
        for (args, want) in cases {
            assert_eq!(frontend_config_arg(args), want, "{args:?}");
        }
    }

    #[test]
    fn the_lab_example_checks() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/frontend-lab.toml"
        ));
        let out = check(path).unwrap();
        assert!(out.starts_with("OK "), "{out}");
        assert!(out.contains("service 198.18.2.1:80 on eth0"), "{out}");
        // Where each rule and pool runs: the cookie rule and both sticky pools in the
        // kernel, the least-connections pool too (from the counts both engines share).
        for line in [
            "    rule 4 sessions: in the kernel\n",
            "    pool all: in the kernel (round robin; sticky by id on the cookie JSESSIONID)\n",
            "    pool api: in the kernel (least connections)\n",
            "    pool sessions: in the kernel (round robin; sticky by hash on the cookie session)\n",
        ] {
            assert!(out.contains(line), "{line:?} in {out}");
        }
    }

    #[test]
    fn a_bare_dispatch_body_checks_too() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/dispatch.toml"
        ));
        let out = check(path).unwrap();
        assert!(out.starts_with("OK "), "{out}");
        assert!(out.contains("a [dispatch] body"), "{out}");
        assert!(out.contains("  pools:"), "{out}");
        // LARD in the kernel, but for the requests that change a server set.
        let lard = "    pool docs: in the kernel (lard on the path; a request that changes a server set in userspace)\n";
        assert!(out.contains(lard), "{out}");

        let dir = std::env::temp_dir().join(format!("baton-check-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            p
        };
        // A body's errors name its own lines and fields (no `dispatch.` prefix).
        let bad = file(
            "bad.toml",
            "default_pool = \"web\"\n[pools.web]\nbackends = [{ address = \"198.18.1.11:80\", weight = 0 }]\n",
        );
        let e = format!("{:#}", check(&bad).unwrap_err());
        assert!(e.contains("a [dispatch] body"), "{e}");
        assert!(
            e.contains("line 3: pools.web.backends[0].weight: a weight must be at least 1"),
            "{e}"
        );
        let long = file(
            "long.toml",
            &format!(
                "default_pool = \"web\"\nunavailable_body = \"{}\"\n[pools.web]\nbackends = [{{ address = \"198.18.1.11:80\" }}]\n",
                "x".repeat(2000)
            ),
        );
        let e = format!("{:#}", check(&long).unwrap_err());
        assert!(e.contains("line 2: unavailable_body: 2000 bytes"), "{e}");
        // A front-end file that lacks a key is still read as one, and says what is missing.
        let front = file(
            "front.toml",
            "vip = \"198.18.2.1\"\n[dispatch]\ndefault_pool = \"web\"\n[dispatch.pools.web]\nbackends = [{ address = \"198.18.1.11:80\" }]\n",
        );
        let e = format!("{:#}", check(&front).unwrap_err());
        assert!(e.contains("interface"), "{e}");
        assert!(!e.contains("[dispatch] body"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
