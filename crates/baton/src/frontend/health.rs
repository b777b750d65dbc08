//! Active HTTP health checks, run from the front-end's host beside the event loop.
//!
//! The dispatcher says what to check ([`Dispatcher::health_checks`]: a back-end, a path,
//! an interval, a timeout, rise and fall); this module does the I/O. Each check has a
//! thread of its own, which every `interval` opens a plain TCP connection (the kernel's,
//! from the front-end's own address: these are not VIP connections, so neither the
//! capture filter nor the nftables table sees them), sends `GET path HTTP/1.0` with
//! `Connection: close`, and reads the response to its end within `timeout`: a 2xx or
//! 3xx status passes, anything else (refused, reset, silent, another status) fails.
//! The thread counts passes and failures in a row and reports only transitions (`fall`
//! failures take an up back-end down, `rise` passes bring it back) over a channel.
//!
//! The event loop never waits for a check: [`HealthChecks::apply`] takes whatever
//! reports have arrived (a `try_recv`, nothing allocated when there are none), tells the
//! dispatcher ([`Dispatcher::set_health`]) and logs the transition. The loop runs at
//! least every 250 ms, so a transition reaches the dispatcher within that of the check
//! that caused it. A back-end with several checks (pools with different ones) is up
//! while all of them pass.
//!
//! A thread per check rather than one thread for all: a check that hangs until its
//! timeout (a back-end whose host is gone) then delays no other. A cluster has tens of
//! back-ends, not thousands. A reload starts a new set and retires the old one without
//! waiting for it (its threads end after their current check); the daemon's exit waits,
//! so no check connection is cut in the middle (which would make the host's TCP send a
//! reset).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Condvar, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use baton_dispatch::{Dispatcher, HealthCheck};
use baton_proto::frontend::Backend;

use super::log;

/// Most response bytes a check reads before it closes; a check's page should be small.
const MAX_RESPONSE: usize = 64 * 1024;

/// One check as the event loop sees it.
struct Probe {
    backend: Backend,
    check: HealthCheck,
    up: bool,
}

/// A transition a check's thread reports.
struct Report {
    probe: usize,
    up: bool,
    reason: String,
}

/// The stop signal the threads wait on between checks.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// The running checks of one configuration.
pub struct HealthChecks {
    probes: Vec<Probe>,
    reports: Receiver<Report>,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl HealthChecks {
    /// Starts a thread per check of `dispatcher`. Each back-end starts in the state the
    /// dispatcher has for it (up, unless a reload carried a down verdict over).
    pub fn start(dispatcher: &Dispatcher) -> anyhow::Result<Self> {
        let (tx, reports) = mpsc::channel();
        let stop = Arc::new(Stop::default());
        let mut probes = Vec::new();
        let mut threads = Vec::new();
        for (i, (backend, check)) in dispatcher.health_checks().iter().enumerate() {
            let up = dispatcher
                .backend_status(*backend)
                .is_none_or(|s| s.admin_up);
            probes.push(Probe {
                backend: *backend,
                check: check.clone(),
                up,
            });
            let (backend, check) = (*backend, check.clone());
            let (their_tx, their_stop) = (tx.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("check {backend}"))
                .spawn(move || run_check(i, backend, &check, up, &their_tx, &their_stop));
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let checks = Self {
                        probes,
                        reports,
                        stop,
                        threads,
                    };
                    drop(checks);
                    return Err(anyhow::Error::new(e).context("starting a health-check thread"));
                }
            }
        }
        Ok(Self {
            probes,
            reports,
            stop,
            threads,
        })
    }

    /// Applies the transitions reported since the last call to `dispatcher`, and logs
    /// each; whether there was any. Never blocks.
    pub fn apply(&mut self, dispatcher: &mut Dispatcher) -> bool {
        let mut applied = false;
        while let Ok(report) = self.reports.try_recv() {
            applied = true;
            let Some(probe) = self.probes.get_mut(report.probe) else {
                continue;
            };
            probe.up = report.up;
            let backend = probe.backend;
            let backend_up = self
                .probes
                .iter()
                .filter(|p| p.backend == backend)
                .all(|p| p.up);
            dispatcher.set_health(backend, backend_up);
            let probe = &self.probes[report.probe];
            let port = probe.check.port.unwrap_or(backend.port());
            let state = |up: bool| if up { "up" } else { "down" };
            // A failed check is a warning; a back-end coming (back) up is news.
            let level = if report.up {
                log::Level::Info
            } else {
                log::Level::Warn
            };
            log::emit(
                level,
                "health",
                &[
                    ("backend", &backend),
                    (
                        "check",
                        &format!("http://{}:{port}{}", backend.ip(), probe.check.path),
                    ),
                    ("state", &state(report.up)),
                    ("backend_state", &state(backend_up)),
                    ("reason", &report.reason),
                ],
            );
        }
        applied
    }

    /// How many checks run.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    /// Whether no check runs.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Stops the threads without waiting for them (a reload): each ends after its
    /// current check, and what it would report goes nowhere.
    pub fn retire(mut self) {
        self.signal_stop();
        self.threads.clear();
    }

    fn signal_stop(&self) {
        *self.stop.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.wake.notify_all();
    }
}

impl Drop for HealthChecks {
    /// Stops the threads and waits for them: at most one check's timeout.
    fn drop(&mut self) {
        self.signal_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A check's thread: check, count, report transitions, wait for the next interval.
fn run_check(
    probe: usize,
    backend: Backend,
    check: &HealthCheck,
    mut up: bool,
    reports: &Sender<Report>,
    stop: &Stop,
) {
    let target = SocketAddr::from((backend.ip(), check.port.unwrap_or(backend.port())));
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: baton-health-check\r\nConnection: close\r\n\r\n",
        check.path,
        backend.ip()
    );
    let mut streak = 0u32;
    loop {
        let started = Instant::now();
        let result = http_check(target, request.as_bytes(), check.timeout);
        if result.is_ok() == up {
            streak = 0;
        } else {
            streak += 1;
            if streak >= if up { check.fall } else { check.rise } {
                up = !up;
                streak = 0;
                let reason = match result {
                    Ok(status) => format!("status {status}"),
                    Err(why) => why,
                };
                let report = Report { probe, up, reason };
                if reports.send(report).is_err() {
                    return;
                }
            }
        }
        let next = started + check.interval;
        let mut stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return;
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            stopped = stop
                .wake
                .wait_timeout(stopped, next - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One check: the response's status if it is 2xx or 3xx, else why not.
fn http_check(target: SocketAddr, request: &[u8], timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} ms", timeout.as_millis()))
    };
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(request))
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("read: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = 64usize.saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
                total += n;
                if total >= MAX_RESPONSE {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer within {} ms", timeout.as_millis()));
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    match status(&head) {
        Some(code) if (200..400).contains(&code) => Ok(code),
        Some(code) => Err(format!("status {code}")),
        None if head.is_empty() => Err("closed without a response".into()),
        None => Err("not an HTTP response".into()),
    }
}

/// The status code of an HTTP/1.x status line (RFC 9112 §4).
fn status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(status(b"HTTP/1.1 20"), None);
        assert_eq!(status(b"SSH-2.0-OpenSSH"), None);
    }

    /// A one-shot server on loopback answering `response` (or closing at once).
    fn serve(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
        });
        addr
    }

    #[test]
    fn checks_pass_on_2xx_3xx_and_fail_otherwise() {
        let t = Duration::from_secs(2);
        let req = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(
            http_check(serve(b"HTTP/1.1 200 OK\r\n\r\nok"), req, t),
            Ok(200)
        );
        assert_eq!(
            http_check(serve(b"HTTP/1.1 302 Found\r\n\r\n"), req, t),
            Ok(302)
        );
        assert_eq!(
            http_check(serve(b"HTTP/1.1 500 Oops\r\n\r\n"), req, t),
            Err("status 500".into())
        );
        assert_eq!(
            http_check(serve(b""), req, t),
            Err("closed without a response".into())
        );
        // Nobody listening.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = http_check(closed, req, t).unwrap_err();
        assert!(e.starts_with("connect: "), "{e}");
    }

    #[test]
    fn a_silent_server_fails_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let e = http_check(addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_millis(200));
        assert_eq!(e, Err("no answer within 200 ms".into()));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(listener);
    }

    #[test]
    fn transitions_reach_the_dispatcher() {
        // A server that fails twice, then passes: fall 2 takes it down, rise 1 brings it
        // back.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for i in 0.. {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let r: &[u8] = if (2..4).contains(&i) {
                    b"HTTP/1.1 503 x\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                };
                let _ = s.write_all(r);
            }
        });
        let mut d = Dispatcher::from_toml(&format!(
            "default_pool = \"p\"\n[health]\npath = \"/\"\ninterval_ms = 20\nfall = 2\nrise = 1\n\
             [pools.p]\nbackends = [{{ address = \"{addr}\" }}]\n"
        ))
        .unwrap();
        let backend = addr;
        let mut checks = HealthChecks::start(&d).unwrap();
        assert_eq!(checks.len(), 1);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 2 && Instant::now() < deadline {
            checks.apply(&mut d);
            let up = d.backend_status(backend).unwrap().admin_up;
            if seen.last() != Some(&up) && (!seen.is_empty() || !up) {
                seen.push(up);
            }
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(seen, [false, true]);
        drop(checks);
    }
}
