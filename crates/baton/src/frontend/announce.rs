//! `[announce]`: the front-end's VIPs are announced to the routers only while this
//! daemon can serve them: it is running, its XDP fast path is attached (unless the
//! configuration turned it off) and at least one back-end may take new connections. At
//! the drain and at exit they are withdrawn first, so that the routers send new
//! connections to the other front-ends while this one finishes its own.
//!
//! **The mechanism.** The daemon holds a TUN device ([`AnnounceSettings::interface`],
//! `baton-vip` by default) with the VIPs on it, and the host's routing daemon announces
//! whatever addresses that device carries (BIRD: `protocol direct { interface
//! "baton-vip"; }` exported to the BGP session; docs/operations.md). Announcing is
//! creating the device; withdrawing is closing its descriptor. A TUN device that is not
//! persistent lives exactly as long as the last descriptor open on it, and the kernel
//! closes a process's descriptors however it ends: a daemon killed with SIGKILL, or one
//! that crashes, takes its device with it, and the routing daemon sees the interface go
//! at once (netlink) and withdraws the route. Measured in the lab (`tests/tier.rs`):
//! the router's route had lost the killed front-end 3 to 25 ms after the SIGKILL. Nothing needs the daemon to
//! clean up, and no timer decides it. (A route or an address on a dummy interface would
//! outlive a killed daemon until someone removed it; a health check polled by the
//! routing daemon would take its period to notice.) The descriptor is close-on-exec, so
//! no child of the daemon keeps the device alive; it is made non-persistent on open, so
//! a device someone left persistent under the same name does not outlive the daemon
//! either. The daemon never reads the device: nothing is routed into it but what the
//! kernel would send the VIPs' addresses, which it delivers locally.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::log;

/// `[announce]` as the daemon uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSettings {
    /// The TUN device the VIPs are put on while the daemon can serve.
    pub interface: String,
}

/// The device's default name.
pub const DEFAULT_INTERFACE: &str = "baton-vip";

/// What decides whether the daemon can serve, gathered by the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ability {
    pub draining: bool,
    /// The fast path is attached, or turned off by the configuration (a fast path that
    /// failed to load does not serve as configured).
    pub fast_path_ok: bool,
    /// Back-ends that may take new connections.
    pub backends_up: usize,
}

impl Ability {
    /// Why the VIPs must not be announced, or `None` when they may.
    pub const fn withdraw_reason(self) -> Option<&'static str> {
        if self.draining {
            Some("draining")
        } else if !self.fast_path_ok {
            Some("fast_path_unavailable")
        } else if self.backends_up == 0 {
            Some("no_backend_up")
        } else {
            None
        }
    }
}

/// The announcement: the device while it is held.
pub struct Announcer {
    settings: AnnounceSettings,
    vips: Vec<Ipv4Addr>,
    device: Option<OwnedFd>,
    /// Why the VIPs are not announced now (`serving` when they are).
    reason: &'static str,
}

impl Announcer {
    /// Nothing is announced until the first [`Announcer::update`].
    pub fn new(settings: AnnounceSettings, vips: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        let mut vips: Vec<Ipv4Addr> = vips.into_iter().collect();
        vips.sort_unstable();
        vips.dedup();
        Self {
            settings,
            vips,
            device: None,
            reason: "starting",
        }
    }

    pub fn interface(&self) -> &str {
        &self.settings.interface
    }

    pub fn announced(&self) -> bool {
        self.device.is_some()
    }

    /// `serving` while announced, else why not.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Announces or withdraws as `ability` says, logging a change. A failed announcement
    /// is logged and left withdrawn; the next call tries again.
    pub fn update(&mut self, ability: Ability) {
        match ability.withdraw_reason() {
            Some(reason) => self.withdraw(reason),
            None if self.device.is_none() => match self.open() {
                Ok(device) => {
                    self.device = Some(device);
                    self.reason = "serving";
                    log::line(
                        "announce",
                        &[
                            ("state", &"announced"),
                            ("interface", &self.settings.interface),
                            ("vips", &self.vips_label()),
                            ("backends_up", &ability.backends_up),
                        ],
                    );
                }
                Err(e) => {
                    if self.reason != "announce_failed" {
                        log::warn(
                            "announce_failed",
                            &[
                                ("interface", &self.settings.interface),
                                ("error", &format!("{e:#}")),
                                (
                                    "effect",
                                    &"the VIPs stay withdrawn; tried again every second",
                                ),
                            ],
                        );
                    }
                    self.reason = "announce_failed";
                }
            },
            None => {}
        }
    }

    /// Withdraws the VIPs if announced: closing the descriptor removes the device.
    pub fn withdraw(&mut self, reason: &'static str) {
        let was = self.device.take().is_some();
        self.reason = reason;
        if was {
            log::line(
                "announce",
                &[
                    ("state", &"withdrawn"),
                    ("reason", &reason),
                    ("interface", &self.settings.interface),
                    ("vips", &self.vips_label()),
                ],
            );
        }
    }

    fn vips_label(&self) -> String {
        self.vips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Makes the device, brings it up and puts the VIPs on it. On an error the
    /// descriptor is dropped, which removes whatever was made.
    fn open(&self) -> anyhow::Result<OwnedFd> {
        let name = &self.settings.interface;
        let device = open_tun(name).with_context(|| format!("creating TUN device {name}"))?;
        ip(&["link", "set", "dev", name, "up"])?;
        for vip in &self.vips {
            ip(&["addr", "add", &format!("{vip}/32"), "dev", name])?;
        }
        Ok(device)
    }
}

/// `_IOW('T', 202, int)` and `_IOW('T', 203, int)` (`linux/if_tun.h`).
const TUNSETIFF: u64 = 0x4004_54ca;
const TUNSETPERSIST: u64 = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the flags member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TUN device named `name`, not persistent, held by the returned descriptor.
fn open_tun(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an interface name is 1 to 15 bytes",
        ));
    }
    // SAFETY: a constant C string; the flags ask for a close-on-exec descriptor.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    let device = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as.
    if unsafe { libc::ioctl(device.as_raw_fd(), TUNSETIFF as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // A device left persistent under this name would outlive the daemon: not any more.
    // SAFETY: TUNSETPERSIST takes its argument by value.
    if unsafe { libc::ioctl(device.as_raw_fd(), TUNSETPERSIST as _, 0 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(device)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vips_are_withdrawn_for_each_reason_and_draining_comes_first() {
        let able = Ability {
            draining: false,
            fast_path_ok: true,
            backends_up: 2,
        };
        assert_eq!(able.withdraw_reason(), None);
        let none_up = Ability {
            backends_up: 0,
            ..able
        };
        assert_eq!(none_up.withdraw_reason(), Some("no_backend_up"));
        let no_xdp = Ability {
            fast_path_ok: false,
            ..able
        };
        assert_eq!(no_xdp.withdraw_reason(), Some("fast_path_unavailable"));
        let draining = Ability {
            draining: true,
            ..none_up
        };
        assert_eq!(draining.withdraw_reason(), Some("draining"));
    }

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        assert!(open_tun("").is_err());
        assert!(open_tun("a-name-too-long-for-linux").is_err());
    }
}
