//! `baton frontend --config FILE`: the TOML file, checked, and turned into the protocol
//! core's [`baton_proto::frontend::Config`] plus the daemon's own settings.
//!
//! Every table rejects unknown keys (a misspelt limit must not silently fall back to its
//! default), and every error names the field it is about. Limits left out take the
//! protocol core's defaults, so this file never restates them.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use baton_proto::frontend::{Config as ProtoConfig, ConfigError};
use serde::Deserialize;

use super::dispatch::{Route, RouteDispatcher};

/// The file as written. See `examples/frontend-lab.toml` for a commented example.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The interface clients' packets (and back-ends' control copies) arrive on.
    pub interface: String,
    /// The virtual IP; it must be an address of this host (e.g. on `lo`) so that the
    /// kernel routes and ARPs for it.
    pub vip: Ipv4Addr,
    /// The service's TCP port on the VIP. Only this port is taken from the host's TCP.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The key shared with the back-ends for the handoff option's tag: 32 hex digits.
    pub handoff_key: Option<String>,
    /// A file holding the handoff key as 32 hex digits (surrounding whitespace ignored);
    /// the alternative to `handoff_key`, so the key need not sit in the config file.
    pub handoff_key_file: Option<PathBuf>,
    /// The local secret for ISNs, timestamps and SYN cookies, 32 hex digits. Random at
    /// every start when absent, which is what a single front-end wants: a restart then
    /// only invalidates SYN cookies that were in flight.
    pub secret: Option<String>,
    /// Milliseconds the daemon keeps serving existing connections after SIGTERM/SIGINT
    /// before it exits (it exits earlier when none is left).
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Verify incoming IPv4 and TCP checksums (default). Packets whose checksum the
    /// kernel marks not-yet-computed (`CHECKSUM_PARTIAL` across a veth) are completed
    /// first either way.
    #[serde(default = "default_true")]
    pub verify_checksums: bool,
    /// Forward handed-off flows' client packets in the XDP fast path (default). Off, or
    /// when the program cannot be loaded or attached (logged as `fastpath_unavailable`),
    /// the slow path forwards them: correct, only slower.
    #[serde(default = "default_true")]
    pub fast_path: bool,
    /// TCP terms offered to clients.
    #[serde(default)]
    pub tcp: TcpTerms,
    /// Table sizes, request limits and timers.
    #[serde(default)]
    pub limits: Limits,
    /// Content rules, tried in order; the first that matches picks the pool.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The pool for requests no route matches; without it they get 503.
    pub default_route: Option<DefaultRoute>,
}

/// `[tcp]`: what the front-end agrees to in its SYN/ACK. Absent keys keep the protocol
/// core's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTerms {
    pub mss: Option<u16>,
    pub window_shift: Option<u8>,
    pub sack: Option<bool>,
    pub timestamps: Option<bool>,
    pub syn_cookies: Option<bool>,
    pub ttl: Option<u8>,
}

/// `[limits]`: sizes and timers (durations in milliseconds). Absent keys keep the
/// protocol core's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_connections: Option<usize>,
    pub max_half_open: Option<usize>,
    pub max_request_len: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_candidates: Option<u8>,
    pub max_queued_packets: Option<usize>,
    pub max_queued_bytes: Option<usize>,
    pub syn_ack_rto_ms: Option<u64>,
    pub syn_ack_retries: Option<u8>,
    pub request_timeout_ms: Option<u64>,
    pub handoff_rto_ms: Option<u64>,
    pub handoff_retries: Option<u8>,
    pub response_rto_ms: Option<u64>,
    pub response_retries: Option<u8>,
    pub time_wait_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
}

/// `[[route]]`: requests whose path starts with `prefix` (and, if given, whose Host or
/// TLS SNI is `host`) go to `backends`, round robin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, starting with `/`. Absent: any path (and TLS, which has none).
    pub prefix: Option<String>,
    /// Host name (HTTP Host or TLS SNI), compared case-insensitively. Absent: any host.
    pub host: Option<String>,
    /// Back-ends as `ip:port`.
    pub backends: Vec<String>,
}

/// `[default_route]`: the pool for everything no `[[route]]` matched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    /// Back-ends as `ip:port`.
    pub backends: Vec<String>,
}

fn default_port() -> u16 {
    80
}

fn default_drain_ms() -> u64 {
    5_000
}

fn default_true() -> bool {
    true
}

/// Everything the daemon needs, checked.
pub struct Settings {
    /// The interface to capture on.
    pub interface: String,
    /// VIP and port.
    pub service: SocketAddrV4,
    /// How long to keep serving after a stop signal.
    pub drain: Duration,
    /// Whether the secret was generated (logged, never printed).
    pub secret_generated: bool,
    /// The protocol core's configuration.
    pub proto: ProtoConfig,
    /// The content rules.
    pub dispatcher: RouteDispatcher,
    /// Whether to try the XDP fast path.
    pub fast_path: bool,
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("in {}", path.display()))
}

/// Parses and checks a configuration; relative key-file paths are taken from `base`.
pub fn parse(text: &str, base: &Path) -> anyhow::Result<Settings> {
    // toml's errors already say the line, the column and the key (unknown field, wrong
    // type), so they are passed on as they are.
    let file: FileConfig = toml::from_str(text)?;
    file.check(base)
}

impl FileConfig {
    fn check(self, base: &Path) -> anyhow::Result<Settings> {
        if self.interface.is_empty() || self.interface.len() >= libc::IFNAMSIZ {
            bail!(
                "interface: `{}` is not a valid interface name",
                self.interface
            );
        }
        if self.port == 0 {
            bail!("port: must be 1..=65535");
        }
        // One parser for the key on both sides (`crate::handoff_key`), so a key file
        // written for the back-ends works here unchanged. A relative key file is taken
        // from the configuration file's directory.
        let key_file = self.handoff_key_file.as_ref().map(|f| base.join(f));
        let handoff_key = crate::handoff_key::load(
            self.handoff_key.as_deref(),
            key_file.as_deref(),
            "handoff_key",
        )?;
        let (secret, secret_generated) = match &self.secret {
            Some(hex) => (crate::handoff_key::parse(hex).context("`secret`")?, false),
            None => (random_secret().context("secret: generating one")?, true),
        };

        let defaults = ProtoConfig::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let l = &self.limits;
        let t = &self.tcp;
        let proto = ProtoConfig {
            services: vec![SocketAddrV4::new(self.vip, self.port)],
            secret,
            handoff_key,
            mss: t.mss.unwrap_or(defaults.mss),
            window_shift: t.window_shift.unwrap_or(defaults.window_shift),
            sack: t.sack.unwrap_or(defaults.sack),
            timestamps: t.timestamps.unwrap_or(defaults.timestamps),
            syn_cookies: t.syn_cookies.unwrap_or(defaults.syn_cookies),
            ttl: t.ttl.unwrap_or(defaults.ttl),
            max_request_len: l.max_request_len.unwrap_or(defaults.max_request_len),
            max_headers: l.max_headers.unwrap_or(defaults.max_headers),
            max_connections: l.max_connections.unwrap_or(defaults.max_connections),
            max_half_open: l.max_half_open.unwrap_or(defaults.max_half_open),
            max_candidates: l.max_candidates.unwrap_or(defaults.max_candidates),
            max_queued_packets: l.max_queued_packets.unwrap_or(defaults.max_queued_packets),
            max_queued_bytes: l.max_queued_bytes.unwrap_or(defaults.max_queued_bytes),
            syn_ack_rto: ms(l.syn_ack_rto_ms, defaults.syn_ack_rto),
            syn_ack_retries: l.syn_ack_retries.unwrap_or(defaults.syn_ack_retries),
            request_timeout: ms(l.request_timeout_ms, defaults.request_timeout),
            handoff_rto: ms(l.handoff_rto_ms, defaults.handoff_rto),
            handoff_retries: l.handoff_retries.unwrap_or(defaults.handoff_retries),
            response_rto: ms(l.response_rto_ms, defaults.response_rto),
            response_retries: l.response_retries.unwrap_or(defaults.response_retries),
            time_wait: ms(l.time_wait_ms, defaults.time_wait),
            idle_timeout: ms(l.idle_timeout_ms, defaults.idle_timeout),
            checksums: if self.verify_checksums {
                baton_proto::wire::Checksums::Verify
            } else {
                baton_proto::wire::Checksums::Trust
            },
            ..defaults
        };
        // Zero timers would make the core spin on its own retransmissions.
        for (field, value) in [
            ("limits.syn_ack_rto_ms", proto.syn_ack_rto),
            ("limits.request_timeout_ms", proto.request_timeout),
            ("limits.handoff_rto_ms", proto.handoff_rto),
            ("limits.response_rto_ms", proto.response_rto),
            ("limits.idle_timeout_ms", proto.idle_timeout),
        ] {
            if value.is_zero() {
                bail!("{field}: must be above 0");
            }
        }
        if proto.max_half_open == 0 {
            bail!("limits.max_half_open: must be above 0");
        }
        proto.validate().map_err(|e| {
            let field = match e {
                ConfigError::NoServices => "vip",
                ConfigError::WindowShift(_) => "tcp.window_shift",
                ConfigError::Mss(_) => "tcp.mss",
                ConfigError::Candidates(_) => "limits.max_candidates",
                ConfigError::RequestLimits => "limits.max_request_len or limits.max_headers",
                ConfigError::Connections(_) => "limits.max_connections",
            };
            anyhow::anyhow!("{field}: {e}")
        })?;

        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
            if let Some(prefix) = &r.prefix
                && !prefix.starts_with('/')
            {
                bail!("route[{i}].prefix: `{prefix}` must start with `/`");
            }
            if r.host.as_deref().is_some_and(str::is_empty) {
                bail!("route[{i}].host: empty (leave it out to match any host)");
            }
            let backends = parse_backends(&r.backends, &format!("route[{i}].backends"))?;
            routes.push(Route::new(r.prefix, r.host, backends));
        }
        let default = match self.default_route {
            Some(d) => Some(Route::new(
                None,
                None,
                parse_backends(&d.backends, "default_route.backends")?,
            )),
            None => None,
        };
        if routes.is_empty() && default.is_none() {
            bail!("route: no [[route]] and no [default_route]; every request would get 503");
        }
        Ok(Settings {
            interface: self.interface,
            service: SocketAddrV4::new(self.vip, self.port),
            drain: Duration::from_millis(self.drain_ms),
            secret_generated,
            proto,
            dispatcher: RouteDispatcher::new(routes, default),
            fast_path: self.fast_path,
        })
    }
}

fn parse_backends(list: &[String], field: &str) -> anyhow::Result<Vec<SocketAddrV4>> {
    if list.is_empty() {
        bail!("{field}: empty; give at least one `ip:port`");
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let addr: SocketAddrV4 = s
            .parse()
            .map_err(|_| anyhow::anyhow!("{field}[{i}]: `{s}` is not an IPv4 `ip:port`"))?;
        if addr.port() == 0 || addr.ip().is_unspecified() {
            bail!("{field}[{i}]: `{s}` needs a real address and a port");
        }
        if out.contains(&addr) {
            bail!("{field}[{i}]: `{s}` listed twice");
        }
        out.push(addr);
    }
    Ok(out)
}

/// 16 bytes from the kernel's CSPRNG (getrandom(2), blocking only before the pool is
/// initialised at boot).
fn random_secret() -> std::io::Result<[u8; 16]> {
    let mut secret = [0u8; 16];
    let mut filled = 0;
    // getrandom returns at most what was asked and may be interrupted; a handful of
    // rounds always suffices for 16 bytes.
    for _ in 0..8 {
        if filled == secret.len() {
            break;
        }
        let rest = &mut secret[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    if filled != secret.len() {
        return Err(std::io::Error::other("getrandom returned too few bytes"));
    }
    Ok(secret)
}

/// A one-line summary of what the configuration does, for the start-up log.
pub fn describe_routes(dispatcher: &RouteDispatcher) -> String {
    let mut out = String::new();
    for (i, r) in dispatcher.routes().iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{r}");
    }
    if let Some(d) = dispatcher.default_route() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "default -> {}", d.backends_display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        interface = "eth0"
        vip = "198.18.2.1"
        handoff_key = "000102030405060708090a0b0c0d0e0f"
        [default_route]
        backends = ["198.18.1.11:80"]
    "#;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(text, Path::new(".")).err().expect("should fail")
        )
    }

    #[test]
    fn minimal_config_takes_the_cores_defaults() {
        let s = parse(MINIMAL, Path::new(".")).unwrap();
        let d = ProtoConfig::default();
        assert_eq!(s.service, "198.18.2.1:80".parse().unwrap());
        assert_eq!(s.proto.max_connections, d.max_connections);
        assert_eq!(s.proto.handoff_rto, d.handoff_rto);
        assert_eq!(s.proto.handoff_key[15], 0x0f);
        assert!(s.secret_generated);
        assert_ne!(s.proto.secret, [0; 16], "a random secret");
        assert_eq!(s.drain, Duration::from_secs(5));
    }

    #[test]
    fn the_lab_example_parses() {
        let text = include_str!("../../../../examples/frontend-lab.toml");
        let s = parse(text, Path::new(".")).unwrap();
        assert_eq!(s.dispatcher.routes().len(), 3);
        assert!(s.dispatcher.default_route().is_some());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = err(&format!("{MINIMAL}\n[limits]\nmax_conections = 5\n"));
        assert!(e.contains("max_conections"), "{e}");
        let e = err(&MINIMAL.replace("interface", "interfase"));
        assert!(e.contains("interfase"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(&MINIMAL.replace("0f\"", "0g\""));
        assert!(e.contains("handoff_key"), "{e}");
        let e = err(&MINIMAL.replace("198.18.1.11:80", "198.18.1.11"));
        assert!(e.contains("default_route.backends[0]"), "{e}");
        let e = err(&format!("{MINIMAL}\n[tcp]\nmss = 100\n"));
        assert!(e.contains("tcp.mss"), "{e}");
        let e = err(&format!("{MINIMAL}\n[limits]\nhandoff_rto_ms = 0\n"));
        assert!(e.contains("limits.handoff_rto_ms"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[route]]\nprefix = \"img\"\nbackends = [\"1.2.3.4:80\"]\n"
        ));
        assert!(e.contains("route[0].prefix"), "{e}");
        let e = err(&MINIMAL.replace("handoff_key =", "secret ="));
        assert!(e.contains("handoff_key"), "{e}");
    }

    #[test]
    fn key_from_a_file() {
        let dir = std::env::temp_dir().join(format!("baton-fe-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "ffeeddccbbaa99887766554433221100\n").unwrap();
        let text = MINIMAL.replace(
            "handoff_key = \"000102030405060708090a0b0c0d0e0f\"",
            "handoff_key_file = \"k\"",
        );
        let s = parse(&text, &dir).unwrap();
        assert_eq!(s.proto.handoff_key[0], 0xff);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
