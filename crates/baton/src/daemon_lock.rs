//! One daemon at a time on what a daemon owns: a second `baton frontend` or `baton
//! backend` that would touch the same interface, pins or nftables table refuses to
//! start, naming the one that runs.
//!
//! Why it matters: a daemon's start rewrites shared state in place (the pinned link's
//! program, the configuration map, the nftables table `inet baton_fe`, which has one
//! fixed name per network namespace). A second daemon beside a running one would do all
//! of that under it, and the first would go on unaware while its clients are reset.
//!
//! How: `flock(LOCK_EX | LOCK_NB)` on lock files in [`RUN_DIR`], one per thing owned
//! (see [`Claim`]), each holding the holder's pid, configuration and interface for the
//! refusal's message. The kernel releases a `flock` when its holder dies however it
//! dies (`flock(2)`), so a daemon killed with SIGKILL leaves the lock free for its
//! successor, which adopts the pinned flows as after any restart; a lock file left
//! behind by a crash is simply taken over. A daemon that exits cleanly removes its files
//! while it still holds them; a contender that opened such a file just before it went
//! checks, once it holds the lock, that the path still names the file it locked, and
//! otherwise starts over ([`DaemonLock::acquire_in`]).
//!
//! Taking over ([`DaemonLock::take_over`], `baton frontend --take-over`): an upgrade
//! that starts the next daemon while the running one serves. The contender sends the
//! holder named in the lock file SIGTERM (it drains and exits, as when an operator stops
//! it) and waits for the lock, a bounded time; the caller does its slow preparation
//! (loading and verifying eBPF programs) before, so that the time no daemon runs is the
//! holder's drain and the rest of the start, not seconds in the verifier.
//!
//! Keys: the lab's namespaces share the host's `/run` (and `lab exec` enters only the
//! network namespace), so a key made of the interface alone would make `fe` in one lab
//! refuse `fe` in another. A lock is therefore keyed by what actually conflicts: the
//! network namespace (its `nsfs` inode) and the interface, and the pins' folder by its
//! path, which also catches two namespaces pointed at the same pins.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Where the lock files live: shared by every network namespace of the host (as the lab's
/// namespaces share it), and emptied at boot, when no daemon runs.
pub const RUN_DIR: &str = "/run/baton";

/// How long a refused start waits for the holder to have written who it is (it writes
/// right after taking the lock), so that the message names it.
const HOLDER_WRITE_WAIT: Duration = Duration::from_millis(200);

/// One thing a daemon owns, as a lock file's name and the words for it in a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The lock file's name in the lock folder.
    pub file: String,
    /// What the holder owns, for the refusal (`the nftables table inet baton_fe ...`).
    pub what: String,
}

impl Claim {
    /// Everything per network namespace, this one's: `scope` names what is owned there
    /// (`frontend`, or `backend-eth0`).
    pub fn network_namespace(scope: &str, what: String) -> anyhow::Result<Self> {
        let ns = fs::metadata("/proc/self/ns/net")
            .context("reading this process's network namespace (/proc/self/ns/net)")?;
        Ok(Self {
            file: format!("{scope}-netns{}.lock", ns.ino()),
            what: format!("{what} in network namespace net:[{}]", ns.ino()),
        })
    }

    /// A pins folder, by its absolute path: whatever namespace a daemon runs in, two
    /// using the same pins conflict.
    pub fn pins(dir: &Path) -> anyhow::Result<Self> {
        let absolute = std::path::absolute(dir)
            .with_context(|| format!("making {} absolute", dir.display()))?;
        Ok(Self {
            file: pins_file_name(&absolute),
            what: format!("the pins in {}", absolute.display()),
        })
    }
}

/// `pins-` and the path with `/` as `_` (readable in `ls /run/baton`), or a digest of it
/// when that would be too long a file name.
fn pins_file_name(absolute: &Path) -> String {
    let text = absolute.to_string_lossy();
    let readable: String = text
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    if readable.len() <= 200 {
        format!("pins-{readable}.lock")
    } else {
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("pins-{hex}.lock")
    }
}

/// Who holds a lock: written into its files, read back by a refused contender.
#[derive(Debug, Clone)]
pub struct Holder {
    /// `frontend` or `backend`.
    pub role: &'static str,
    pub config: PathBuf,
    pub interface: String,
}

impl Holder {
    fn record(&self) -> String {
        format!(
            "pid={}\nrole={}\nconfig={}\ninterface={}\n",
            std::process::id(),
            self.role,
            std::path::absolute(&self.config)
                .unwrap_or_else(|_| self.config.clone())
                .display(),
            self.interface
        )
    }
}

/// Whom a take-over stopped, and how long it waited for the locks.
#[derive(Debug, Clone, Copy)]
pub struct TakenOver {
    /// The previous holder, sent SIGTERM.
    pub pid: u32,
    /// From the first attempt to the last lock taken: the holder's drain and exit.
    pub waited: Duration,
}

/// A take-over under way: its bound, and the holder signalled so far.
struct TakingOver {
    deadline: Instant,
    within: Duration,
    started: Instant,
    signalled: Option<u32>,
}

/// How often a take-over looks whether the holder has let go: short, since every
/// millisecond of it no daemon serves.
const TAKE_OVER_POLL: Duration = Duration::from_millis(2);

/// The locks a daemon holds for its whole life: released when dropped (or when the
/// process dies), their files removed first.
#[derive(Debug)]
pub struct DaemonLock {
    held: Vec<(PathBuf, File)>,
}

impl DaemonLock {
    /// Takes every claim in [`RUN_DIR`], or fails naming the daemon that holds one.
    pub fn acquire(claims: &[Claim], holder: &Holder) -> anyhow::Result<Self> {
        Self::acquire_in(Path::new(RUN_DIR), claims, holder)
    }

    /// [`DaemonLock::acquire`] with the lock files in `dir`.
    pub fn acquire_in(dir: &Path, claims: &[Claim], holder: &Holder) -> anyhow::Result<Self> {
        Ok(Self::acquire_with(dir, claims, holder, None)?.0)
    }

    /// Takes every claim in [`RUN_DIR`]; a daemon that holds one is sent SIGTERM and
    /// waited for, at most `within` in all (then the start fails, naming it). Says whom
    /// it waited for and how long, if anyone.
    pub fn take_over(
        claims: &[Claim],
        holder: &Holder,
        within: Duration,
    ) -> anyhow::Result<(Self, Option<TakenOver>)> {
        Self::acquire_with(Path::new(RUN_DIR), claims, holder, Some(within))
    }

    /// [`DaemonLock::take_over`] with the lock files in `dir`.
    pub fn take_over_in(
        dir: &Path,
        claims: &[Claim],
        holder: &Holder,
        within: Duration,
    ) -> anyhow::Result<(Self, Option<TakenOver>)> {
        Self::acquire_with(dir, claims, holder, Some(within))
    }

    fn acquire_with(
        dir: &Path,
        claims: &[Claim],
        holder: &Holder,
        take_over: Option<Duration>,
    ) -> anyhow::Result<(Self, Option<TakenOver>)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lock = Self { held: Vec::new() };
        let mut taking_over = take_over.map(|within| TakingOver {
            deadline: Instant::now() + within,
            within,
            started: Instant::now(),
            signalled: None,
        });
        for claim in claims {
            let path = dir.join(&claim.file);
            let mut file = take(&path, claim, holder, taking_over.as_mut())?;
            file.set_len(0)
                .and_then(|()| file.write_all(holder.record().as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
            lock.held.push((path, file));
        }
        let taken = taking_over.and_then(|t| {
            Some(TakenOver {
                pid: t.signalled?,
                waited: t.started.elapsed(),
            })
        });
        Ok((lock, taken))
    }

    /// The lock files held.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(|(path, _)| path.as_path())
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        // Removed while still locked, then closed (which unlocks): a contender that
        // opened the file in between finds, once it holds it, that the path is gone or
        // names a newer file, and starts over.
        for (path, file) in self.held.drain(..) {
            let _ = fs::remove_file(&path);
            drop(file);
        }
    }
}

/// Removes the lock files in `dir` whose names `matches` accepts and that no process
/// holds (left by daemons that were killed): for `baton lab down`. A file held is left
/// alone; one taken is removed while held, as at a clean exit.
pub fn remove_unheld(dir: &Path, matches: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".lock") || !matches(name) {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Opens and locks `path`, retrying while a departing holder swaps the file under it;
/// when `taking_over`, stopping the holder and waiting for it rather than refusing.
fn take(
    path: &Path,
    claim: &Claim,
    holder: &Holder,
    mut taking_over: Option<&mut TakingOver>,
) -> anyhow::Result<File> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => match taking_over.as_deref_mut() {
                    None => return Err(refusal(file, path, claim, holder)),
                    Some(t) => {
                        stop_holder(file, path, claim, holder, t)?;
                        thread::sleep(TAKE_OVER_POLL);
                        continue;
                    }
                },
                _ => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
        let mine = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == mine.dev() && now.ino() == mine.ino() => return Ok(file),
            // The holder removed it after we opened it: ours is an orphan.
            _ => continue,
        }
    }
}

/// A held lock file's record (waiting a moment for a holder that has just taken it to
/// write it), as a lookup of its fields (`?` for a missing one).
fn holder_record(mut file: File) -> impl Fn(&str) -> String {
    let deadline = Instant::now() + HOLDER_WRITE_WAIT;
    let mut record = String::new();
    loop {
        record.clear();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut record));
        if record.contains("pid=") || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    move |key: &str| {
        record
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("?")
            .to_string()
    }
}

/// One round of a take-over on a held lock: the holder is sent SIGTERM (once), and the
/// start fails if it still holds the lock past the bound, or cannot be signalled.
fn stop_holder(
    file: File,
    path: &Path,
    claim: &Claim,
    holder: &Holder,
    t: &mut TakingOver,
) -> anyhow::Result<()> {
    let field = holder_record(file);
    let pid = field("pid");
    let context = || {
        format!(
            "taking over from the baton {} with pid {pid} ({}, lock {})",
            field("role"),
            claim.what,
            path.display()
        )
    };
    let Ok(pid_n) = pid.parse::<u32>() else {
        return Err(anyhow::anyhow!("the lock file names no pid")).with_context(context);
    };
    if pid_n == std::process::id() {
        return Err(anyhow::anyhow!("this process holds it already")).with_context(context);
    }
    if t.signalled != Some(pid_n) {
        // SAFETY: kill(2) with a pid read from the lock its holder still holds (the lock
        // is released only when the holder's descriptors close, so it is alive); no
        // memory is passed.
        if unsafe { libc::kill(pid_n as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error()).with_context(context);
        }
        t.signalled = Some(pid_n);
    }
    if Instant::now() > t.deadline {
        return Err(anyhow::anyhow!(
            "it was sent SIGTERM and still holds the lock {:?} later (a drain longer than that, or a daemon that does not stop); the running daemon is left as it is",
            t.within
        ))
        .with_context(context)
        .with_context(|| {
            format!(
                "refusing to start baton {} for {} ({})",
                holder.role,
                holder.interface,
                holder.config.display()
            )
        });
    }
    Ok(())
}

/// The error for a lock held by another daemon, naming it from the file's record.
fn refusal(file: File, path: &Path, claim: &Claim, holder: &Holder) -> anyhow::Error {
    let field = holder_record(file);
    let harm = match holder.role {
        "frontend" => {
            "Starting beside it would replace its XDP program, configuration map and \
             nftables table under it, and the host would reset its clients. Stop it first \
             (SIGTERM: it drains and exits; its handed-off connections pass to the next \
             daemon)"
        }
        _ => {
            "Starting beside it would replace its tc programs and configuration map under \
             it. Stop it first (SIGTERM: the module stays attached and the next agent takes \
             it over)"
        }
    };
    anyhow::anyhow!(
        "another baton {} is running: pid {}, config {}, interface {}; it owns {} (lock {}). \
         {harm}",
        field("role"),
        field("pid"),
        field("config"),
        field("interface"),
        claim.what,
        path.display(),
    )
    .context(format!(
        "refusing to start baton {} for {} ({})",
        holder.role,
        holder.interface,
        holder.config.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("baton-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn holder(config: &str) -> Holder {
        Holder {
            role: "frontend",
            config: PathBuf::from(config),
            interface: "eth0".into(),
        }
    }

    fn claim(file: &str) -> Claim {
        Claim {
            file: file.into(),
            what: format!("thing {file}"),
        }
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let d = dir("second");
        let first = DaemonLock::acquire_in(&d, &[claim("a.lock")], &holder("/etc/a.toml")).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts exactly as another process would.
        let e = DaemonLock::acquire_in(&d, &[claim("a.lock")], &holder("/etc/b.toml")).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("another baton frontend is running"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "names the holder's pid: {text}"
        );
        assert!(text.contains("config /etc/a.toml"), "{text}");
        assert!(text.contains("interface eth0"), "{text}");
        assert!(text.contains("thing a.lock"), "{text}");
        assert!(text.contains("refusing to start baton frontend"), "{text}");
        drop(first);
        assert!(!d.join("a.lock").exists(), "removed at a clean exit");
        let again = DaemonLock::acquire_in(&d, &[claim("a.lock")], &holder("/etc/b.toml"));
        assert!(again.is_ok(), "free once the first is gone");
        drop(again);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn any_claim_held_refuses_and_takes_none() {
        let d = dir("any");
        let first = DaemonLock::acquire_in(&d, &[claim("pins.lock")], &holder("/a")).unwrap();
        let e = DaemonLock::acquire_in(&d, &[claim("ns.lock"), claim("pins.lock")], &holder("/b"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("thing pins.lock"), "{e:#}");
        // The claim it had taken before the refusal was given back.
        assert!(DaemonLock::acquire_in(&d, &[claim("ns.lock")], &holder("/c")).is_ok());
        drop(first);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_left_by_a_crash_is_taken_over() {
        let d = dir("crash");
        fs::create_dir_all(&d).unwrap();
        // What SIGKILL leaves: the file with its record, and no lock (the kernel dropped it).
        fs::write(d.join("a.lock"), "pid=999999\nrole=frontend\n").unwrap();
        let lock = DaemonLock::acquire_in(&d, &[claim("a.lock")], &holder("/x")).unwrap();
        let record = fs::read_to_string(d.join("a.lock")).unwrap();
        assert_eq!(
            record.lines().next().unwrap(),
            format!("pid={}", std::process::id())
        );
        assert_eq!(lock.paths().count(), 1);
        drop(lock);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn only_unheld_files_are_cleared() {
        let d = dir("clear");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("left.lock"), "pid=999999\n").unwrap();
        fs::write(d.join("other.lock"), "pid=999999\n").unwrap();
        let held = DaemonLock::acquire_in(&d, &[claim("held.lock")], &holder("/x")).unwrap();
        let removed = remove_unheld(&d, |name| name != "other.lock");
        assert_eq!(removed, 1);
        assert!(!d.join("left.lock").exists());
        assert!(d.join("other.lock").exists(), "not matched");
        assert!(d.join("held.lock").exists(), "held");
        drop(held);
        let _ = fs::remove_dir_all(&d);
    }

    /// A real holder in another process: flock(1) on `file` (`-o`: the lock is its
    /// alone, not `sleep`'s), with SIGTERM ignored if `deaf`; returned once it holds the
    /// lock, its pid written as a daemon's record.
    fn holder_process(file: &Path, deaf: bool) -> std::process::Child {
        let trap = if deaf { "trap '' TERM; " } else { "" };
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{trap}exec flock -o {} sleep 30", file.display()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = File::open(file);
            // SAFETY: flock(2) on a descriptor we own; no memory is passed.
            let free = probe.as_ref().is_ok_and(|f| unsafe {
                libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0
            });
            drop(probe);
            if !free && fs::metadata(file).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "flock(1) never took {file:?}");
            thread::sleep(Duration::from_millis(10));
        }
        fs::write(file, format!("pid={}\nrole=frontend\n", child.id())).unwrap();
        child
    }

    #[test]
    fn a_take_over_stops_the_holder_and_waits_for_its_lock() {
        let d = dir("takeover");
        fs::create_dir_all(&d).unwrap();
        let mut running = holder_process(&d.join("a.lock"), false);
        let (lock, taken) = DaemonLock::take_over_in(
            &d,
            &[claim("a.lock")],
            &holder("/new"),
            Duration::from_secs(10),
        )
        .unwrap();
        let taken = taken.expect("a holder was stopped");
        assert_eq!(taken.pid, running.id());
        let status = running.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM),
            "the holder was sent SIGTERM"
        );
        let record = fs::read_to_string(d.join("a.lock")).unwrap();
        assert!(
            record.starts_with(&format!("pid={}\n", std::process::id())),
            "{record}"
        );
        drop(lock);
        // Nobody holds it now: a take-over takes it at once and stops no one.
        let (_lock, taken) =
            DaemonLock::take_over_in(&d, &[claim("a.lock")], &holder("/x"), Duration::ZERO)
                .unwrap();
        assert!(taken.is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_holder_that_does_not_stop_fails_the_take_over_and_is_left_running() {
        let d = dir("deaf");
        fs::create_dir_all(&d).unwrap();
        let mut running = holder_process(&d.join("a.lock"), true);
        let e = DaemonLock::take_over_in(
            &d,
            &[claim("a.lock")],
            &holder("/new"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("still holds the lock"), "{text}");
        assert!(text.contains(&format!("pid {}", running.id())), "{text}");
        assert!(running.try_wait().unwrap().is_none(), "left running");
        running.kill().unwrap();
        running.wait().unwrap();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_take_over_of_its_own_lock_is_refused() {
        let d = dir("self");
        let _held = DaemonLock::acquire_in(&d, &[claim("a.lock")], &holder("/a")).unwrap();
        let e = DaemonLock::take_over_in(&d, &[claim("a.lock")], &holder("/b"), Duration::ZERO)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("this process holds it already"),
            "{e:#}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn pins_are_keyed_by_their_path() {
        assert_eq!(
            pins_file_name(Path::new("/run/btops1-lab/fe/bpf/frontend-eth0")),
            "pins-run_btops1-lab_fe_bpf_frontend-eth0.lock"
        );
        let long = PathBuf::from(format!("/{}", "x".repeat(300)));
        let name = pins_file_name(&long);
        assert!(name.len() < 60 && name.starts_with("pins-"), "{name}");
    }
}
