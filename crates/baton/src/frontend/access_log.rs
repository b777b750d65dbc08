//! The access log: one line per handoff, in `access_log = "PATH"` (off when absent).
//!
//! The line is logfmt with fixed fields, always all present and in this order (`-` when
//! unknown), so that `grep`, `cut`-like tools and log shippers read it alike:
//!
//! ```text
//! time=2026-11-27T20:30:00.123Z client=198.18.0.2:40312 service=198.18.2.1:80 request="GET /api/x HTTP/1.1" host=shop.example rule=api pool=api backend=198.18.1.12:80 candidate=1 latency_us=312
//! ```
//!
//! `candidate` is 1 when the first back-end tried took the connection, 2 when one
//! failed before it, and so on; `latency_us` is the time from the dispatch decision to the back-end's confirmation.
//! There is no status and no byte count: the response goes from the back-end to the
//! client and never crosses the front-end, so those belong to the back-end's own log.
//!
//! Like the daemon's log, lines wait in memory for the end of the loop's round and go
//! out in one `write` ([`AccessLog::flush`]); the file is opened with `O_APPEND`. A
//! failed write loses that round's lines, is counted, and is reported once until a
//! write succeeds again. A reload (SIGHUP) reopens the file, for log rotation.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::log;

/// One handoff, as the access log records it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub request: &'a str,
    pub host: &'a str,
    pub rule: &'a str,
    pub pool: &'a str,
    pub backend: SocketAddr,
    pub candidate: u8,
    pub latency_us: Option<u64>,
}

/// The open access log.
pub struct AccessLog {
    path: PathBuf,
    file: File,
    pending: String,
    /// Lines written.
    pub lines: u64,
    /// Writes that failed.
    pub errors: u64,
    failing: bool,
}

impl AccessLog {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open(path)?,
            pending: String::with_capacity(16 * 1024),
            lines: 0,
            errors: 0,
            failing: false,
        })
    }

    /// Queues `entry`'s line for the next [`Self::flush`].
    pub fn record(&mut self, entry: &Entry<'_>) {
        format_line(&mut self.pending, entry);
    }

    /// Writes the queued lines, in one `write` when the kernel takes them whole.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.matches('\n').count() as u64;
        match self.file.write_all(self.pending.as_bytes()) {
            Ok(()) => {
                self.lines += n;
                self.failing = false;
            }
            Err(e) => {
                self.errors += 1;
                if !self.failing {
                    self.failing = true;
                    log::error(
                        "access_log_failed",
                        &[
                            ("path", &self.path.display()),
                            ("error", &e),
                            ("lost_lines", &n),
                            ("effect", &"lines are dropped until a write succeeds"),
                        ],
                    );
                }
            }
        }
        self.pending.clear();
    }

    /// Opens the file again (after a rotation moved it); the old one stays if that fails.
    pub fn reopen(&mut self) {
        self.flush();
        match open(&self.path) {
            Ok(f) => self.file = f,
            Err(e) => log::error("access_log_reopen_failed", &[("error", &format!("{e:#}"))]),
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("access_log: opening {}", path.display()))
}

/// Appends `entry`'s line (with its newline) to `out`.
pub fn format_line(out: &mut String, e: &Entry<'_>) {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    out.push_str("time=");
    rfc3339(out, e.time);
    let latency = e.latency_us.map_or("-".to_string(), |us| us.to_string());
    let fields: [(&str, &dyn std::fmt::Display); 9] = [
        ("client", &e.client),
        ("service", &e.service),
        ("request", &or_dash(e.request)),
        ("host", &or_dash(e.host)),
        ("rule", &or_dash(e.rule)),
        ("pool", &or_dash(e.pool)),
        ("backend", &e.backend),
        ("candidate", &e.candidate),
        ("latency_us", &latency),
    ];
    for (k, v) in fields {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        log::push_value(out, v);
    }
    out.push('\n');
}

/// `time` as an RFC 3339 UTC timestamp with milliseconds: `2026-11-27T20:30:00.123Z`.
fn rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(time: SystemTime) -> Entry<'static> {
        Entry {
            time,
            client: "198.18.0.2:40312".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
            request: "GET /api/x?a=\"b\" HTTP/1.1",
            host: "shop.example",
            rule: "api",
            pool: "api",
            backend: "198.18.1.12:80".parse().unwrap(),
            candidate: 1,
            latency_us: Some(312),
        }
    }

    #[test]
    fn a_line_has_every_field_in_order() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_811_400_123);
        let mut out = String::new();
        format_line(&mut out, &entry(t));
        assert_eq!(
            out,
            "time=2026-11-27T20:30:00.123Z client=198.18.0.2:40312 service=198.18.2.1:80 \
             request=\"GET /api/x?a=\\\"b\\\" HTTP/1.1\" host=shop.example rule=api pool=api \
             backend=198.18.1.12:80 candidate=1 latency_us=312\n"
        );
        let mut out = String::new();
        let mut e = entry(UNIX_EPOCH);
        e.host = "";
        e.latency_us = None;
        format_line(&mut out, &e);
        assert!(out.starts_with("time=1970-01-01T00:00:00.000Z "), "{out}");
        assert!(
            out.contains(" host=- ") && out.ends_with(" latency_us=-\n"),
            "{out}"
        );
    }

    #[test]
    fn an_ipv6_clients_address_is_in_brackets_before_its_port() {
        let mut e = entry(UNIX_EPOCH);
        e.client = "[2001:2::2]:40312".parse().unwrap();
        e.service = "[2001:2:0:2::1]:80".parse().unwrap();
        e.backend = "[2001:2:0:1::c]:80".parse().unwrap();
        let mut out = String::new();
        format_line(&mut out, &e);
        assert!(
            out.contains(" client=[2001:2::2]:40312 service=[2001:2:0:2::1]:80 "),
            "{out}"
        );
        assert!(out.contains(" backend=[2001:2:0:1::c]:80 "), "{out}");
    }

    #[test]
    fn dates_are_right_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(20_453), (2025, 12, 31));
    }

    #[test]
    fn lines_go_out_at_the_flush() {
        let path = std::env::temp_dir().join(format!("baton-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut log = AccessLog::open(&path).unwrap();
        log.record(&entry(UNIX_EPOCH));
        log.record(&entry(UNIX_EPOCH));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        log.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert_eq!((log.lines, log.errors), (2, 0));
        // Rotation: the file moved away, a reload reopens the path.
        let moved = path.with_extension("1");
        std::fs::rename(&path, &moved).unwrap();
        log.reopen();
        log.record(&entry(UNIX_EPOCH));
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&moved);
    }
}
