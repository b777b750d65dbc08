//! SIGINT and SIGTERM as a flag the daemons' loops check, so they can drain, print their
//! totals or say what they leave behind before they exit; SIGHUP as another, asking the
//! front-end to reload its configuration.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the handlers (once is enough; again is harmless) and returns the flag.
pub fn stop_flag() -> anyhow::Result<&'static AtomicBool> {
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: all-zero is a valid sigaction; the handler only stores to an atomic,
        // which is async-signal-safe. No SA_RESTART: a blocking poll returns EINTR at once.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("sigaction");
        }
    }
    Ok(&STOP)
}

static RELOAD: AtomicBool = AtomicBool::new(false);

/// Installs the SIGHUP handler and returns its flag: set by each SIGHUP, for the loop to
/// take (`swap(false)`) and act on. Like the stop flag's, the handler interrupts a
/// blocking `poll` (no SA_RESTART), so a reload starts at once.
pub fn reload_flag() -> anyhow::Result<&'static AtomicBool> {
    extern "C" fn on_signal(_: libc::c_int) {
        RELOAD.store(true, Ordering::Relaxed);
    }
    // SAFETY: as in `stop_flag`: a zeroed sigaction and a handler that only stores to an
    // atomic.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sigaction(SIGHUP)");
    }
    Ok(&RELOAD)
}
