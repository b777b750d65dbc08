//! Network namespace plumbing for the lab: running `ip`, entering a namespace from a
//! thread, listing a namespace's processes.

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context as _, bail};

/// Where `ip netns add` mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

pub fn path(ns: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(ns)
}

pub fn exists(ns: &str) -> bool {
    path(ns).exists()
}

/// Runs `ip ARGS`, failing with the command line and `ip`'s own message.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> anyhow::Result<()> {
    run("ip", args)
}

/// Runs a program to completion, failing with its command line and standard error.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{program}`; is it installed (scripts/setup)?"))?;
    if !out.status.success() {
        let line: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!(
            "`{program} {}` failed ({}): {}",
            line.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread that has entered namespace `ns`. Only that thread moves, so the
/// caller keeps its own namespace; sockets `f` opens belong to `ns` for their lifetime.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = File::open(path(ns)).with_context(|| format!("network namespace {ns} not found"))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `file` is an open namespace file; setns only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("cannot enter network namespace {ns}"));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
    })
}

/// Processes whose network namespace is `ns`, as `ip netns pids` finds them.
pub fn pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether process `pid` still runs: it exists and is not a zombie waiting for its parent
/// (daemons such as nginx are reaped by the system's init, which may take a moment).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X"))
    })
}
