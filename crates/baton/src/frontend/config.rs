//! `baton frontend --config FILE`: the TOML file, checked, and turned into the protocol
//! core's [`baton_proto::frontend::Config`] plus the daemon's own settings.
//!
//! Every table rejects unknown keys (a misspelt limit must not silently fall back to its
//! default), and every error names the line and the field it is about. Limits left out
//! take the protocol core's defaults, so this file never restates them.
//!
//! The content rules are the dispatcher's own configuration (crate `baton-dispatch`,
//! `examples/dispatch.toml`) held whole in the `[dispatch]` table: `[dispatch.pools.NAME]`,
//! `[[dispatch.rules]]`, `[dispatch.health]`. Keeping them in a table of their own keeps
//! the two key spaces apart (the daemon's `[limits]` beside the dispatcher's `[health]`),
//! lets errors name fields unambiguously (`dispatch.pools.web.backends[1].weight`), and
//! draws the line a reload follows: `[dispatch]` changes live, everything else needs a
//! restart ([`RestartOnly`]).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use baton_dispatch::{DispatchTable, Dispatcher};
use baton_proto::frontend::{Config as ProtoConfig, ConfigError, MAX_UNAVAILABLE_BODY};
use serde::Deserialize;

/// The file as written. See `examples/frontend-lab.toml` for a commented example.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The interface clients' packets (and back-ends' control copies) arrive on.
    pub interface: String,
    /// The virtual IP (IPv4) of a front-end with one service; it must be an address of
    /// this host (e.g. on `lo`) so that the kernel routes and ARPs for it. `services`
    /// instead for several. Read as either family so that an IPv6 address here gets an
    /// error that points at `vip6`.
    pub vip: Option<IpAddr>,
    /// The service's IPv6 address beside `vip`, on the same port: an address of this
    /// host too, served as `vip` is (guarded, captured, handed off to the pools'
    /// back-ends of IPv6, forwarded by the XDP program's IPv6 path).
    pub vip6: Option<IpAddr>,
    /// The one service's TCP port on `vip` (default 80). Only the services' ports are
    /// taken from the host's TCP.
    pub port: Option<u16>,
    /// Several virtual services, `"VIP:PORT"` each (HTTP and HTTPS on one VIP, more than
    /// one VIP), IPv6 ones written `"[VIP6]:PORT"`: one daemon and one XDP program serve
    /// them all. Instead of `vip`/`vip6`/`port`.
    pub services: Option<Vec<SocketAddr>>,
    /// The key shared with the back-ends for the handoff option's tag: 32 hex digits.
    pub handoff_key: Option<String>,
    /// A file holding the handoff key as 32 hex digits (surrounding whitespace ignored);
    /// the alternative to `handoff_key`, so the key need not sit in the config file.
    pub handoff_key_file: Option<PathBuf>,
    /// The secret for ISNs, timestamps and SYN cookies, 32 hex digits. Front-ends that
    /// share a VIP behind ECMP set the same one (or `secret_file`), so that each answers
    /// the handshakes another started (a cookie made by one checks on all). When
    /// absent, the previous daemon's on the interface (pinned with the fast path's maps),
    /// else random: what a single front-end wants, and a restart or an upgrade keeps the
    /// cookies XDP gave out across it valid.
    pub secret: Option<String>,
    /// A file holding the secret as 32 hex digits (surrounding whitespace ignored), as
    /// `handoff_key_file` holds the handoff key; the alternative to `secret`.
    pub secret_file: Option<PathBuf>,
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
    /// A folder on a BPF filesystem for the fast path's pins (maps and XDP link, in
    /// `frontend-<interface>/`), which keep handed-off connections forwarding across a
    /// restart of the daemon. Default `/sys/fs/bpf/baton`.
    pub pin_dir: Option<PathBuf>,
    /// Serve metrics (Prometheus text format) on `http://ADDRESS/metrics`, such as
    /// `"127.0.0.1:9180"`. Off when absent. `baton status` reads them.
    pub metrics: Option<std::net::SocketAddr>,
    /// Write one line per handoff to this file (created if missing, appended to; a
    /// relative path is taken from the configuration file's folder). Off when absent.
    pub access_log: Option<PathBuf>,
    /// TCP terms offered to clients.
    #[serde(default)]
    pub tcp: TcpTerms,
    /// Table sizes, request limits and timers.
    #[serde(default)]
    pub limits: Limits,
    /// `[dispatch]`: rules, pools, policies, health checks and the 503 body, in the
    /// dispatcher's format (crate `baton-dispatch`).
    pub dispatch: DispatchTable,
    /// `[announce]`: announce the VIPs to the routers (through the host's routing
    /// daemon) only while this daemon can serve them. Absent: nothing is announced, as
    /// for a front-end the routers reach by a static route.
    pub announce: Option<Announce>,
}

/// `[announce]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// The TUN device the daemon holds, with the VIPs on it, while it can serve; the
    /// routing daemon exports its addresses (`baton-vip` by default).
    #[serde(default = "default_announce_interface")]
    pub interface: String,
}

fn default_announce_interface() -> String {
    super::announce::DEFAULT_INTERFACE.into()
}

/// `[tcp]`: what the front-end agrees to in its SYN/ACK, and how it hands off. Absent
/// keys keep the protocol core's defaults, but for `one_turn` and `syns_in_xdp`, on by
/// default here (`FileConfig::check`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTerms {
    pub mss: Option<u16>,
    pub window_shift: Option<u8>,
    pub sack: Option<bool>,
    pub timestamps: Option<bool>,
    /// Grant ECN to clients that ask (RFC 3168 §6.1.1); see the core's `Config::ecn`.
    pub ecn: Option<bool>,
    pub syn_cookies: Option<bool>,
    pub ttl: Option<u8>,
    /// The one-turn handoff: a request that fits in one segment rides in the SYN'; see
    /// the core's `Config::one_turn`.
    pub one_turn: Option<bool>,
    /// XDP answers every SYN with a cookie, not only under a flood; see the core's
    /// `Config::every_syn_in_fast_path`.
    pub syns_in_xdp: Option<bool>,
    /// Entries of the fast path's half-open map, where the SYN options of clients without
    /// timestamps wait for their first data segment when XDP answers their SYN (default
    /// `baton_common::frontend::DEFAULT_HALF_OPEN_ENTRIES`; 0: off, such clients get the
    /// cookie's terms, without window scaling or SACK). At most
    /// [`MAX_HALF_OPEN_ENTRIES`].
    pub half_open_entries: Option<u32>,
    /// XDP hands off the requests it can route itself (docs/design.md, "Dispatch in the
    /// kernel"); in effect with `one_turn` and `syns_in_xdp`. On by default.
    pub kernel_dispatch: Option<bool>,
    /// Probes a second at most for client segments without timestamps of flows this
    /// front-end does not know (docs/design.md, "Clients without timestamps: probe and
    /// claim"); see the core's `Config::probe_rate`. 1,000 by default with the fast
    /// path (whose XDP program takes the back-ends' claims), 0 (off: such segments are
    /// reset, as before) without it.
    pub probe_rate: Option<u32>,
}

/// `[tcp] probe_rate` with the fast path, when not set: a thousand probe rounds a second
/// moves a tier's worth of clients without timestamps within seconds, and bounds what
/// random ACKs to a VIP can make the LAN carry to a thousand frames a second per
/// back-end.
pub const DEFAULT_PROBE_RATE: u32 = 1000;

/// Bytes of an IPv4 header and a TCP header, both without options: what an MSS leaves
/// out of the MTU (RFC 9293 §3.7.1, RFC 879). IPv6's 40-byte header will make it 60.
pub const IPV4_TCP_HEADERS: u32 = 40;

/// The MSS the front-end announces in its SYN/ACKs (the core's and the XDP program's
/// cookies alike) and sizes its SYN''s by, for an interface whose MTU is `mtu`: the
/// largest segment a client's frame can carry to it, `mtu - 40`, unless `[tcp] mss`
/// (`configured`) asks for less. A configured MSS the MTU cannot carry is lowered to it
/// (`lowered_from`), since a client taking it at its word would send frames the
/// interface drops: a black hole for every large request. The back-ends share the
/// front-end's LAN, and so its MTU: client segments reach them through it.
pub fn mss_within_mtu(mtu: u32, configured: Option<u16>) -> anyhow::Result<MssWithinMtu> {
    let fits = mtu.saturating_sub(IPV4_TCP_HEADERS);
    let fits = u16::try_from(fits).unwrap_or(u16::MAX);
    if fits < baton_proto::frontend::config::MIN_MSS {
        bail!(
            "the interface's MTU of {mtu} bytes leaves an MSS of {fits}, under the {} \
             every IPv4 host must accept (RFC 9293 §3.7.1)",
            baton_proto::frontend::config::MIN_MSS
        );
    }
    Ok(match configured {
        Some(mss) if mss > fits => MssWithinMtu {
            mss: fits,
            lowered_from: Some(mss),
        },
        Some(mss) => MssWithinMtu {
            mss,
            lowered_from: None,
        },
        None => MssWithinMtu {
            mss: fits,
            lowered_from: None,
        },
    })
}

/// [`mss_within_mtu`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MssWithinMtu {
    pub mss: u16,
    /// The configured MSS, when the MTU could not carry it.
    pub lowered_from: Option<u16>,
}

/// The most `[tcp] half_open_entries` takes: about 1.5 GiB of kernel memory (96 bytes an
/// entry), which the map preallocates; past it a start would fail in the kernel rather
/// than here.
pub const MAX_HALF_OPEN_ENTRIES: u32 = 1 << 24;

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
    /// Read and ignored: it shortened the idle timeout once either side's FIN was seen,
    /// for a flow whose back-end's FIN copy was lost. Back-ends copy no FIN any more and
    /// the close ends with the client's (docs/design.md, "Packet walk", step 9); kept
    /// so that a file written for an earlier build still loads, and logged at start
    /// ([`Settings::ignored_keys`]).
    pub half_closed_idle_timeout_ms: Option<u64>,
}

const DEFAULT_PORT: u16 = 80;

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
    /// The virtual services (VIP and port), at least one.
    pub services: Vec<SocketAddrV4>,
    /// The IPv6 services (`vip6`, or `[VIP6]:PORT` in `services`), possibly none. Only the
    /// nftables table and the capture take them, and the protocol core beside the IPv4 ones.
    pub services6: Vec<SocketAddrV6>,
    /// How long to keep serving after a stop signal.
    pub drain: Duration,
    /// Whether the secret was generated (logged, never printed).
    pub secret_generated: bool,
    /// The protocol core's configuration.
    pub proto: ProtoConfig,
    /// The content rules, pools and health checks.
    pub dispatcher: Dispatcher,
    /// What a reload cannot change.
    pub restart_only: RestartOnly,
    /// Whether to try the XDP fast path.
    pub fast_path: bool,
    /// Where the fast path's pins live (a BPF filesystem folder).
    pub pin_dir: PathBuf,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The access log's path, if any.
    pub access_log: Option<PathBuf>,
    /// Entries of the fast path's half-open map (0: off).
    pub half_open_entries: u32,
    /// `[tcp] kernel_dispatch`.
    pub kernel_dispatch: bool,
    /// `[tcp] mss` as the file sets it: `None` takes the interface's MTU's
    /// ([`mss_within_mtu`]), and a value the MTU cannot carry is lowered to it.
    pub configured_mss: Option<u16>,
    /// Keys the file sets that this build reads and ignores (a warning at start says
    /// so): `limits.half_closed_idle_timeout_ms`.
    pub ignored_keys: Vec<&'static str>,
    /// `[announce]`, if present.
    pub announce: Option<super::announce::AnnounceSettings>,
}

impl fmt::Debug for Settings {
    /// What the settings are about, never their keys or secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("interface", &self.interface)
            .field("services", &self.services)
            .field("services6", &self.services6)
            .field("drain", &self.drain)
            .field("dispatch", &Summary(&self.dispatcher).to_string())
            .field("fast_path", &self.fast_path)
            .finish_non_exhaustive()
    }
}

/// The IPv6 services' own checks: unicast addresses (`vip6` or a `services` entry names
/// an address of this host, not `::`, a multicast group or an IPv4-mapped address,
/// whose traffic arrives as IPv4), ports 1..=65535, no repeats, at most `MAX_SERVICES`.
fn check_ipv6_services(services6: &[SocketAddrV6]) -> anyhow::Result<()> {
    let max = baton_common::frontend::MAX_SERVICES as usize;
    if services6.len() > max {
        bail!(
            "services: {} IPv6 services given, at most {max}",
            services6.len()
        );
    }
    for (i, service) in services6.iter().enumerate() {
        let ip: &Ipv6Addr = service.ip();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            bail!("vip6: {ip} is not a unicast address another host can reach");
        }
        if let Some(v4) = ip.to_ipv4_mapped() {
            bail!("vip6: {ip} is an IPv4-mapped address; give {v4} as `vip`");
        }
        if service.scope_id() != 0 || service.flowinfo() != 0 {
            bail!("services: {service}: no scope or flow label on a service address");
        }
        if service.port() == 0 {
            bail!("services: {service}: the port must be 1..=65535");
        }
        if services6[..i].contains(service) {
            bail!("services: {service} given twice");
        }
    }
    Ok(())
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("in {}", path.display()))
}

/// Parses and checks a configuration; relative key-file paths are taken from `base`.
/// Errors read `line N: FIELD: what is wrong` (a syntax error: `line N: message`, the
/// message naming the key).
pub fn parse(text: &str, base: &Path) -> anyhow::Result<Settings> {
    let syntax = |e: toml::de::Error| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        anyhow!("line {line}: {}", e.message().trim_end())
    };
    let table: toml::Table = toml::from_str(text).map_err(syntax)?;
    let file: FileConfig = toml::from_str(text).map_err(syntax)?;
    let mut settings = file.check(text, base).map_err(|e| with_line(text, e))?;
    settings.restart_only = RestartOnly::new(table, settings.proto.handoff_key);
    Ok(settings)
}

/// What the daemon adds to the dispatcher's own checks: the 503 body fits one segment.
fn check_unavailable_body(dispatcher: &Dispatcher, field: &str) -> anyhow::Result<()> {
    let body = dispatcher.unavailable_body().len();
    if body > MAX_UNAVAILABLE_BODY {
        bail!(
            "{field}: {body} bytes; at most {MAX_UNAVAILABLE_BODY} (the front-end sends the \
             503 in one segment)"
        );
    }
    Ok(())
}

/// Whether `text` is a bare dispatcher configuration, the body of a front-end's
/// `[dispatch]` table (as `examples/dispatch.toml`), rather than a whole front-end file:
/// none of the daemon's own `interface` and `vip` keys nor a `dispatch` table, and
/// the dispatcher's keys (`default_pool`, `pools`, `rules`) at the top. `None` if it is
/// not TOML at all (the caller's parse then says where).
pub fn is_dispatch_body(text: &str) -> Option<bool> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let daemon = ["interface", "vip", "vip6", "dispatch"]
        .iter()
        .any(|k| table.contains_key(*k));
    let dispatcher = ["default_pool", "pools", "rules"]
        .iter()
        .any(|k| table.contains_key(*k));
    Some(!daemon && dispatcher)
}

/// Parses and checks a bare dispatcher configuration (see [`is_dispatch_body`]) as the
/// daemon would its `[dispatch]` table; errors name the line and the field as written
/// in this file (`line 12: pools.web.backends[0].weight: ...`).
pub fn parse_dispatch_body(text: &str) -> anyhow::Result<Dispatcher> {
    let dispatcher = Dispatcher::from_toml(text).map_err(|e| anyhow!("{e}"))?;
    check_unavailable_body(&dispatcher, "unavailable_body").map_err(|e| with_line(text, e))?;
    Ok(dispatcher)
}

/// The 1-based line of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Puts the line of the field an error begins with (`limits.handoff_rto_ms: ...`) in
/// front of it; errors that already say their line, or name no field of the file, are
/// left as they are.
fn with_line(text: &str, e: anyhow::Error) -> anyhow::Error {
    let message = format!("{e:#}");
    if message.starts_with("line ") {
        return e;
    }
    let field = message.split(": ").next().unwrap_or("").trim_matches('`');
    match field_line(text, field) {
        Some(line) => anyhow!("line {line}: {message}"),
        None => e,
    }
}

/// The line where `field` (dotted, such as `limits.handoff_rto_ms`) is written.
fn field_line(text: &str, field: &str) -> Option<usize> {
    if field.is_empty()
        || !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b))
    {
        return None;
    }
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut span = None;
    for key in field.split('.') {
        let (k, next) = item.as_table_like()?.get_key_value(key)?;
        span = k.span().or_else(|| next.span()).or(span);
        item = next;
    }
    span.map(|s| line_at(text, s.start))
}

/// The settings a reload cannot change: the whole file but `[dispatch]` (interface,
/// VIP, port, keys, TCP terms, limits, fast path...), compared as written, plus the
/// handoff key itself (its file's contents may change under the same name).
#[derive(Clone, PartialEq, Default)]
pub struct RestartOnly {
    table: toml::Table,
    handoff_key: [u8; 16],
}

impl fmt::Debug for RestartOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("RestartOnly").finish_non_exhaustive()
    }
}

impl RestartOnly {
    fn new(mut table: toml::Table, handoff_key: [u8; 16]) -> Self {
        table.remove("dispatch");
        Self { table, handoff_key }
    }

    /// The fields whose values differ in `new`: top-level keys, and a table's keys one
    /// level down (`limits.handoff_rto_ms`), in order.
    pub fn changes(&self, new: &RestartOnly) -> Vec<String> {
        let mut out = Vec::new();
        let keys: std::collections::BTreeSet<&String> =
            self.table.keys().chain(new.table.keys()).collect();
        for key in keys {
            match (self.table.get(key), new.table.get(key)) {
                (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                    let inner: std::collections::BTreeSet<&String> =
                        a.keys().chain(b.keys()).collect();
                    for k in inner {
                        if a.get(k) != b.get(k) {
                            out.push(format!("{key}.{k}"));
                        }
                    }
                }
                (a, b) if a != b => out.push(key.clone()),
                _ => {}
            }
        }
        if self.handoff_key != new.handoff_key && !out.iter().any(|f| f.starts_with("handoff_key"))
        {
            out.push("handoff_key (file contents)".into());
        }
        out
    }
}

impl FileConfig {
    /// The services as written: `vip` (and `vip6`, and `port`), or `services`; never
    /// both, at least one IPv4 service, no repeats, ports 1..=65535, at most
    /// `MAX_SERVICES` of each family, each family apart (the core takes both; the IPv4
    /// fast path's tables, the stamps and the kernel's dispatch the IPv4 ones).
    fn services(&self) -> anyhow::Result<(Vec<SocketAddrV4>, Vec<SocketAddrV6>)> {
        if let Some(vip) = self.vip
            && !vip.is_ipv4()
        {
            bail!("vip: {vip} is an IPv6 address; give it as `vip6`, beside an IPv4 `vip`");
        }
        let vip6 = match self.vip6 {
            Some(IpAddr::V4(v4)) => {
                bail!("vip6: {v4} is an IPv4 address; it belongs in `vip`")
            }
            Some(IpAddr::V6(v6)) => Some(v6),
            None => None,
        };
        let written = match (&self.services, self.vip) {
            (Some(_), Some(_)) => {
                bail!("services: give either `vip` (and `port`) or `services`, not both")
            }
            (Some(_), None) if vip6.is_some() => {
                bail!("vip6: with `services`, list the IPv6 services there (\"[VIP6]:PORT\")")
            }
            (Some(_), None) if self.port.is_some() => {
                bail!("port: with `services`, each service names its port (\"VIP:PORT\")")
            }
            (Some(list), None) => list.clone(),
            (None, Some(_)) if self.port == Some(0) => bail!("port: must be 1..=65535"),
            (None, Some(vip)) => {
                let port = self.port.unwrap_or(DEFAULT_PORT);
                let mut both = vec![SocketAddr::new(vip, port)];
                both.extend(vip6.map(|v6| SocketAddr::new(v6.into(), port)));
                both
            }
            (None, None) if vip6.is_some() => {
                bail!("vip: missing; an IPv6 `vip6` is served beside an IPv4 `vip` for now")
            }
            (None, None) => bail!("vip: missing (or `services = [\"VIP:PORT\", ...]`)"),
        };
        let mut services = Vec::new();
        let mut services6 = Vec::new();
        for service in written {
            match service {
                SocketAddr::V4(v4) => services.push(v4),
                SocketAddr::V6(v6) => services6.push(v6),
            }
        }
        check_ipv6_services(&services6)?;
        if services.is_empty() && !services6.is_empty() {
            bail!(
                "services: at least one IPv4 \"VIP:PORT\"; IPv6 services are served beside \
                 IPv4 ones for now"
            );
        }
        if services.is_empty() {
            bail!("services: at least one \"VIP:PORT\"");
        }
        let max = baton_common::frontend::MAX_SERVICES as usize;
        if services.len() > max {
            bail!("services: {} given, at most {max}", services.len());
        }
        for (i, service) in services.iter().enumerate() {
            if service.port() == 0 {
                bail!("services: {service}: the port must be 1..=65535");
            }
            if services[..i].contains(service) {
                bail!("services: {service} given twice");
            }
        }
        Ok((services, services6))
    }

    fn check(self, text: &str, base: &Path) -> anyhow::Result<Settings> {
        if self.interface.is_empty() || self.interface.len() >= libc::IFNAMSIZ {
            bail!(
                "interface: `{}` is not a valid interface name",
                self.interface
            );
        }
        let announce = match &self.announce {
            Some(a) if a.interface.is_empty() || a.interface.len() >= libc::IFNAMSIZ => bail!(
                "announce.interface: `{}` is not a valid interface name (1 to 15 bytes)",
                a.interface
            ),
            Some(a) if a.interface == self.interface => bail!(
                "announce.interface: `{}` is the interface clients arrive on; name a device of its own, which the daemon creates (such as `baton-vip`)",
                a.interface
            ),
            Some(a) => Some(super::announce::AnnounceSettings {
                interface: a.interface.clone(),
            }),
            None => None,
        };
        let (services, services6) = self.services()?;
        // One parser for the key on both sides (`crate::handoff_key`), so a key file
        // written for the back-ends works here unchanged. A relative key file is taken
        // from the configuration file's directory.
        let key_file = self.handoff_key_file.as_ref().map(|f| base.join(f));
        let handoff_key = crate::handoff_key::load(
            self.handoff_key.as_deref(),
            key_file.as_deref(),
            "handoff_key",
        )?;
        let (secret, secret_generated) = match (&self.secret, &self.secret_file) {
            (None, None) => (random_secret().context("secret: generating one")?, true),
            (hex, file) => {
                let file = file.as_ref().map(|f| base.join(f));
                (
                    crate::handoff_key::load(hex.as_deref(), file.as_deref(), "secret")?,
                    false,
                )
            }
        };

        let defaults = ProtoConfig::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let l = &self.limits;
        let t = &self.tcp;
        let ignored_keys = if l.half_closed_idle_timeout_ms.is_some() {
            vec!["limits.half_closed_idle_timeout_ms"]
        } else {
            Vec::new()
        };
        let proto = ProtoConfig {
            // The core serves both families: a connection is of its service's family.
            services: services
                .iter()
                .copied()
                .map(SocketAddr::V4)
                .chain(services6.iter().copied().map(SocketAddr::V6))
                .collect(),
            secret,
            handoff_key,
            mss: t.mss.unwrap_or(defaults.mss),
            window_shift: t.window_shift.unwrap_or(defaults.window_shift),
            sack: t.sack.unwrap_or(defaults.sack),
            timestamps: t.timestamps.unwrap_or(defaults.timestamps),
            ecn: t.ecn.unwrap_or(defaults.ecn),
            syn_cookies: t.syn_cookies.unwrap_or(defaults.syn_cookies),
            ttl: t.ttl.unwrap_or(defaults.ttl),
            // The daemon's defaults are the fast forms: the one-turn handoff, and every
            // SYN answered in XDP when there is an XDP program to answer it and cookies
            // to answer with. (The core's `Config::default()` keeps the protocol's plain
            // three-turn form, which its own tests are written against.) A back-end whose
            // server takes no data on a SYN still works: it gets the request after its
            // SYN/ACK', as with `one_turn = false`.
            one_turn: t.one_turn.unwrap_or(true),
            every_syn_in_fast_path: t
                .syns_in_xdp
                .unwrap_or(self.fast_path && t.syn_cookies.unwrap_or(defaults.syn_cookies)),
            probe_rate: t.probe_rate.unwrap_or(if self.fast_path {
                DEFAULT_PROBE_RATE
            } else {
                0
            }),
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
        let half_open_entries = t
            .half_open_entries
            .unwrap_or(baton_common::frontend::DEFAULT_HALF_OPEN_ENTRIES);
        if half_open_entries > MAX_HALF_OPEN_ENTRIES {
            bail!(
                "tcp.half_open_entries: {half_open_entries} is more than {MAX_HALF_OPEN_ENTRIES} \
                 (the map is preallocated, 96 bytes an entry)"
            );
        }
        // Every tracked connection may hold an entry in the fast path's table; past its
        // size, handoffs would stay in the slow path (`install_failed`) without a word.
        let flow_table = baton_common::frontend::DEFAULT_FLOW_TABLE_SIZE as usize;
        if proto.max_connections > flow_table {
            bail!(
                "limits.max_connections: {} is more than the fast path's flow table holds \
                 ({flow_table} entries)",
                proto.max_connections
            );
        }
        proto.validate().map_err(|e| {
            let field = match e {
                ConfigError::NoServices => "vip",
                ConfigError::WindowShift(_) => "tcp.window_shift",
                ConfigError::Mss(_) => "tcp.mss",
                ConfigError::Candidates(_) => "limits.max_candidates",
                ConfigError::RequestLimits => "limits.max_request_len or limits.max_headers",
                ConfigError::Connections(_) => "limits.max_connections",
                ConfigError::UnavailableBody(_) => "dispatch.unavailable_body",
            };
            anyhow::anyhow!("{field}: {e}")
        })?;

        let dispatcher = Dispatcher::from_table(self.dispatch, text)
            .map_err(|e| anyhow!("{}", e.in_table("dispatch")))?;
        check_unavailable_body(&dispatcher, "dispatch.unavailable_body")?;
        Ok(Settings {
            interface: self.interface,
            services,
            services6,
            drain: Duration::from_millis(self.drain_ms),
            secret_generated,
            proto,
            dispatcher,
            restart_only: RestartOnly::default(),
            fast_path: self.fast_path,
            pin_dir: self
                .pin_dir
                .unwrap_or_else(|| PathBuf::from(super::fastpath::DEFAULT_PIN_DIR)),
            metrics: self.metrics,
            access_log: self.access_log.map(|p| base.join(p)),
            half_open_entries,
            kernel_dispatch: t.kernel_dispatch.unwrap_or(true),
            configured_mss: t.mss,
            ignored_keys,
            announce,
        })
    }
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

/// What a configuration's dispatcher holds, for the start-up log, `baton check` and
/// reloads: `5 rules, 4 pools, 3 back-ends, 4 health checks`.
pub struct Summary<'d>(pub &'d Dispatcher);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let (rules, pools) = (d.rule_names().count(), d.pools().count());
        let (backends, checks) = (d.backends().count(), d.health_checks().len());
        write!(
            f,
            "{rules} rule{}, {pools} pool{}, {backends} back-end{}, {checks} health check{}",
            plural(rules),
            plural(pools),
            plural(backends),
            plural(checks)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        interface = "eth0"
        vip = "198.18.2.1"
        handoff_key = "000102030405060708090a0b0c0d0e0f"
        [dispatch]
        default_pool = "web"
        [dispatch.pools.web]
        backends = [{ address = "198.18.1.11:80" }]
    "#;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(text, Path::new(".")).expect_err("should fail")
        )
    }

    #[test]
    fn minimal_config_takes_the_cores_defaults() {
        let s = parse(MINIMAL, Path::new(".")).unwrap();
        let d = ProtoConfig::default();
        assert_eq!(s.services, ["198.18.2.1:80".parse().unwrap()]);
        assert_eq!(s.proto.max_connections, d.max_connections);
        assert_eq!(s.proto.handoff_rto, d.handoff_rto);
        assert_eq!(s.proto.handoff_key[15], 0x0f);
        assert!(s.secret_generated);
        assert_ne!(s.proto.secret, [0; 16], "a random secret");
        assert_eq!(s.drain, Duration::from_secs(5));
        assert_eq!(s.pin_dir, Path::new("/sys/fs/bpf/baton"));
        assert_eq!(
            (s.metrics, s.access_log),
            (None, None),
            "both off by default"
        );
    }

    #[test]
    fn announce_is_opt_in_and_its_device_is_checked() {
        assert_eq!(parse(MINIMAL, Path::new(".")).unwrap().announce, None);
        let on = format!("{MINIMAL}\n[announce]\n");
        assert_eq!(
            parse(&on, Path::new(".")).unwrap().announce,
            Some(crate::frontend::announce::AnnounceSettings {
                interface: "baton-vip".into()
            })
        );
        let named = format!("{MINIMAL}\n[announce]\ninterface = \"vip0\"\n");
        assert_eq!(
            parse(&named, Path::new("."))
                .unwrap()
                .announce
                .unwrap()
                .interface,
            "vip0"
        );
        for (bad, says) in [
            ("interface = \"eth0\"", "the interface clients arrive on"),
            ("interface = \"\"", "not a valid interface name"),
            (
                "interface = \"a-name-too-long-for-linux\"",
                "not a valid interface name",
            ),
            ("device = \"vip0\"", "unknown field"),
        ] {
            let text = format!("{MINIMAL}\n[announce]\n{bad}\n");
            let e = err(&text);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn an_ipv6_vip_is_served_beside_the_ipv4_one_and_mistakes_are_named() {
        let vip = |lines: &str| MINIMAL.replace("vip = \"198.18.2.1\"", lines);
        let s = parse(
            &vip("vip = \"198.18.2.1\"\nvip6 = \"2001:2:0:1::a\"\nport = 8080"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(s.services, ["198.18.2.1:8080".parse().unwrap()]);
        assert_eq!(s.services6, ["[2001:2:0:1::a]:8080".parse().unwrap()]);
        assert_eq!(
            s.proto.services,
            [
                "198.18.2.1:8080".parse::<SocketAddr>().unwrap(),
                "[2001:2:0:1::a]:8080".parse().unwrap()
            ],
            "the core serves both families"
        );
        assert!(parse(MINIMAL, Path::new(".")).unwrap().services6.is_empty());
        let listed = parse(
            &vip("services = [\"198.18.2.1:80\", \"[2001:2:0:1::a]:80\", \"[2001:2:0:1::a]:443\"]"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(listed.services, ["198.18.2.1:80".parse().unwrap()]);
        assert_eq!(
            listed.services6,
            [
                "[2001:2:0:1::a]:80".parse::<SocketAddrV6>().unwrap(),
                "[2001:2:0:1::a]:443".parse().unwrap()
            ]
        );
        // A reload cannot change it.
        let old = parse(MINIMAL, Path::new(".")).unwrap().restart_only;
        let new = parse(
            &vip("vip = \"198.18.2.1\"\nvip6 = \"2001:2:0:1::a\""),
            Path::new("."),
        )
        .unwrap()
        .restart_only;
        assert_eq!(old.changes(&new), ["vip6"]);
        for (lines, says) in [
            (
                "vip = \"2001:2:0:1::a\"",
                "vip: 2001:2:0:1::a is an IPv6 address; give it as `vip6`",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"198.18.2.2\"",
                "vip6: 198.18.2.2 is an IPv4 address; it belongs in `vip`",
            ),
            (
                "vip6 = \"2001:2:0:1::a\"",
                "vip: missing; an IPv6 `vip6` is served beside an IPv4 `vip`",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"::\"",
                "vip6: :: is not a unicast address",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"ff02::1\"",
                "not a unicast address",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"::1\"",
                "not a unicast address",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"::ffff:198.18.2.2\"",
                "IPv4-mapped address; give 198.18.2.2 as `vip`",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"2001:2:0:1::a\"\nport = 0",
                "1..=65535",
            ),
            (
                "vip = \"198.18.2.1\"\nvip6 = \"2001:2:0:1::zz\"",
                "line 4: invalid IP address syntax",
            ),
            (
                "services = [\"198.18.2.1:80\"]\nvip6 = \"2001:2:0:1::a\"",
                "vip6: with `services`, list the IPv6 services there",
            ),
            ("services = [\"[2001:2:0:1::a]:80\"]", "at least one IPv4"),
            (
                "services = [\"198.18.2.1:80\", \"[2001:2:0:1::a]:80\", \"[2001:2:0:1::a]:80\"]",
                "[2001:2:0:1::a]:80 given twice",
            ),
            (
                "services = [\"198.18.2.1:80\", \"[2001:2:0:1::a]:0\"]",
                "1..=65535",
            ),
            (
                "services = [\"198.18.2.1:80\", \"[fe80::1%2]:80\"]",
                "no scope",
            ),
        ] {
            let e = err(&vip(lines));
            assert!(e.contains(says), "{lines}: {e}");
        }
    }

    #[test]
    fn several_services_are_one_list_and_mistakes_are_named() {
        let text = MINIMAL.replace(
            "vip = \"198.18.2.1\"",
            "services = [\"198.18.2.1:80\", \"198.18.2.1:443\", \"198.18.2.2:80\"]",
        );
        let s = parse(&text, Path::new(".")).unwrap();
        let want: Vec<SocketAddrV4> = ["198.18.2.1:80", "198.18.2.1:443", "198.18.2.2:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(s.services, want);
        let want_core: Vec<SocketAddr> = want.iter().copied().map(SocketAddr::V4).collect();
        assert_eq!(s.proto.services, want_core, "the core serves them all");
        let with_port =
            MINIMAL.replace("vip = \"198.18.2.1\"", "vip = \"198.18.2.1\"\nport = 8080");
        assert_eq!(
            parse(&with_port, Path::new(".")).unwrap().services,
            ["198.18.2.1:8080".parse().unwrap()]
        );
        let cases = [
            (
                MINIMAL.replace(
                    "vip = \"198.18.2.1\"",
                    "vip = \"198.18.2.1\"\nservices = [\"198.18.2.1:443\"]",
                ),
                "not both",
            ),
            (
                MINIMAL.replace("vip = \"198.18.2.1\"", "services = []"),
                "at least one",
            ),
            (
                MINIMAL.replace(
                    "vip = \"198.18.2.1\"",
                    "services = [\"198.18.2.1:80\", \"198.18.2.1:80\"]",
                ),
                "twice",
            ),
            (
                MINIMAL.replace(
                    "vip = \"198.18.2.1\"",
                    "services = [\"198.18.2.1:80\"]\nport = 80",
                ),
                "each service names its port",
            ),
            (
                MINIMAL.replace("vip = \"198.18.2.1\"", "port = 80"),
                "vip: missing",
            ),
            (
                MINIMAL.replace("vip = \"198.18.2.1\"", "services = [\"198.18.2.1:0\"]"),
                "1..=65535",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn ecn_is_granted_by_default_and_can_be_turned_off() {
        assert!(parse(MINIMAL, Path::new(".")).unwrap().proto.ecn);
        let off = format!("{MINIMAL}\n[tcp]\necn = false\n");
        assert!(!parse(&off, Path::new(".")).unwrap().proto.ecn);
    }

    #[test]
    fn the_half_open_map_is_sized_by_tcp_half_open_entries() {
        let entries = |tcp: &str| {
            parse(&format!("{MINIMAL}\n[tcp]\n{tcp}\n"), Path::new("."))
                .map(|s| s.half_open_entries)
        };
        assert_eq!(
            entries("").unwrap(),
            baton_common::frontend::DEFAULT_HALF_OPEN_ENTRIES
        );
        assert_eq!(entries("half_open_entries = 0").unwrap(), 0, "off");
        assert_eq!(entries("half_open_entries = 1024").unwrap(), 1024);
        let e = format!(
            "{:#}",
            entries(&format!(
                "half_open_entries = {}",
                MAX_HALF_OPEN_ENTRIES + 1
            ))
            .unwrap_err()
        );
        assert!(
            e.starts_with("line ") && e.contains("tcp.half_open_entries"),
            "{e}"
        );
    }

    #[test]
    fn metrics_and_access_log_are_read() {
        let text = MINIMAL.replace(
            "vip =",
            "metrics = \"127.0.0.1:9180\"\naccess_log = \"access.log\"\nvip =",
        );
        let s = parse(&text, Path::new("/etc/baton")).unwrap();
        assert_eq!(s.metrics, Some("127.0.0.1:9180".parse().unwrap()));
        assert_eq!(
            s.access_log.as_deref(),
            Some(Path::new("/etc/baton/access.log"))
        );
        let e = err(&MINIMAL.replace("vip =", "metrics = \"localhost\"\nvip ="));
        assert!(
            e.starts_with("line 3: ") && e.contains("socket address"),
            "{e}"
        );
    }

    #[test]
    fn the_lab_example_parses() {
        let text = include_str!("../../../../examples/frontend-lab.toml");
        let s = parse(text, Path::new(".")).unwrap();
        assert_eq!(
            Summary(&s.dispatcher).to_string(),
            "5 rules, 5 pools, 3 back-ends, 4 health checks"
        );
        assert!(s.dispatcher.unavailable_body().contains("503"));
        assert_eq!(s.pin_dir, Path::new("/run/baton-lab/fe/bpf"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = err(&format!("{MINIMAL}\n[limits]\nmax_conections = 5\n"));
        assert!(e.contains("max_conections"), "{e}");
        let e = err(&MINIMAL.replace("interface", "interfase"));
        assert!(e.contains("interfase"), "{e}");
    }

    #[test]
    fn a_retired_key_still_loads_and_is_named_as_ignored() {
        let s = parse(MINIMAL, Path::new(".")).unwrap();
        assert!(s.ignored_keys.is_empty());
        let text = format!("{MINIMAL}\n[limits]\nhalf_closed_idle_timeout_ms = 60000\n");
        let s = parse(&text, Path::new(".")).unwrap();
        assert_eq!(s.ignored_keys, ["limits.half_closed_idle_timeout_ms"]);
    }

    #[test]
    fn the_secret_is_shared_from_the_file_or_the_text() {
        let hex = "0f0e0d0c0b0a09080706050403020100";
        let from_text = parse(
            &MINIMAL.replace("vip =", &format!("secret = \"{hex}\"\nvip =")),
            Path::new("."),
        )
        .unwrap();
        assert!(!from_text.secret_generated);
        assert_eq!(from_text.proto.secret[0], 0x0f);
        let dir = std::env::temp_dir().join(format!("baton-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cookie.key"), format!("{hex}\n")).unwrap();
        let from_file = parse(
            &MINIMAL.replace("vip =", "secret_file = \"cookie.key\"\nvip ="),
            &dir,
        )
        .unwrap();
        assert_eq!(from_file.proto.secret, from_text.proto.secret);
        let both = MINIMAL.replace(
            "vip =",
            &format!("secret = \"{hex}\"\nsecret_file = \"cookie.key\"\nvip ="),
        );
        assert!(format!("{:#}", parse(&both, &dir).unwrap_err()).contains("set one of"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = err(&MINIMAL.replace("0f\"", "0g\""));
        assert!(e.starts_with("line 4: `handoff_key`"), "{e}");
        // MINIMAL ends with line 9, indentation only.
        let e = err(&format!("{MINIMAL}\n[tcp]\nmss = 100\n"));
        assert!(e.starts_with("line 11: tcp.mss: "), "{e}");
        let e = err(&format!("{MINIMAL}\n[limits]\nhandoff_rto_ms = 0\n"));
        assert_eq!(e, "line 11: limits.handoff_rto_ms: must be above 0");
        let e = err(&format!("{MINIMAL}\n[limits]\nmax_connections = 300000\n"));
        assert_eq!(
            e,
            "line 11: limits.max_connections: 300000 is more than the fast path's flow table \
             holds (262144 entries)"
        );
        let e = err(&MINIMAL.replace("vip =", "port = 0\nvip ="));
        assert!(e.starts_with("line 3: port: "), "{e}");
        let e = err(&MINIMAL.replace("handoff_key =", "secret ="));
        assert!(e.contains("handoff_key"), "{e}");
        // The dispatcher's own errors, with the file's lines and the table's prefix.
        let e = err(&MINIMAL.replace("198.18.1.11:80\" }", "198.18.1.11:80\", weight = 0 }"));
        assert_eq!(
            e,
            "line 8: dispatch.pools.web.backends[0].weight: a weight must be at least 1"
        );
        let e = err(&MINIMAL.replace("default_pool = \"web\"", "default_pool = \"wbe\""));
        assert!(e.starts_with("line 6: dispatch.default_pool: "), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[dispatch.rules]]\npool = \"web\"\nmatch = {{ pth = \"/\" }}\n"
        ));
        assert!(e.starts_with("line 12: unknown field `pth`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[dispatch.health]\npath = \"/\"\ninterval_ms = 0\n"
        ));
        assert!(
            e.starts_with("line 12: dispatch.health.interval_ms: "),
            "{e}"
        );
        let long = "x".repeat(MAX_UNAVAILABLE_BODY + 1);
        let e = err(&MINIMAL.replace(
            "default_pool = \"web\"",
            &format!("default_pool = \"web\"\nunavailable_body = \"{long}\""),
        ));
        assert!(
            e.starts_with("line 7: dispatch.unavailable_body: 1025 bytes"),
            "{e}"
        );
        // The old `[[route]]` format is refused, by name.
        let e = err(&format!("{MINIMAL}\n[[route]]\nprefix = \"/\"\n"));
        assert!(e.contains("unknown field `route`"), "{e}");
    }

    #[test]
    fn a_reload_knows_what_needs_a_restart() {
        let old = parse(MINIMAL, Path::new(".")).unwrap().restart_only;
        let same = parse(
            &MINIMAL.replace("198.18.1.11:80", "198.18.1.12:80"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(old.changes(&same.restart_only), Vec::<String>::new());
        let text = MINIMAL.replace("vip = \"198.18.2.1\"", "vip = \"198.18.2.2\"\nport = 81")
            + "\n[limits]\nhandoff_rto_ms = 100\n";
        let new = parse(&text, Path::new(".")).unwrap().restart_only;
        assert_eq!(old.changes(&new), ["limits", "port", "vip"]);
        let text = format!("{MINIMAL}\n[limits]\nhandoff_rto_ms = 200\n");
        let newer = parse(&text, Path::new(".")).unwrap().restart_only;
        assert_eq!(
            new.changes(&newer),
            ["limits.handoff_rto_ms", "port", "vip"]
        );
        let text = MINIMAL.replace("0f\"", "0e\"");
        let key = parse(&text, Path::new(".")).unwrap().restart_only;
        assert_eq!(old.changes(&key), ["handoff_key"]);
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

    #[test]
    fn the_mss_follows_the_interfaces_mtu() {
        let m = |mtu, configured| mss_within_mtu(mtu, configured).unwrap();
        // Unset: what the MTU carries (Ethernet, a tunnel's 1400, jumbo frames).
        assert_eq!(m(1500, None).mss, 1460);
        assert_eq!(m(1400, None).mss, 1360);
        assert_eq!(m(9000, None).mss, 8960);
        // Set: kept when it fits, lowered (and said) when it does not.
        assert_eq!(
            m(1500, Some(1200)),
            MssWithinMtu {
                mss: 1200,
                lowered_from: None
            }
        );
        assert_eq!(
            m(1400, Some(1460)),
            MssWithinMtu {
                mss: 1360,
                lowered_from: Some(1460)
            }
        );
        // A loopback's 65,536, and an MTU past what 16 bits of MSS hold.
        assert_eq!(m(65_536, None).mss, 65_496);
        assert_eq!(m(u32::MAX, None).mss, u16::MAX);
        // Under IPv4's minimum: refused with the reason.
        let e = format!("{:#}", mss_within_mtu(500, None).unwrap_err());
        assert!(e.contains("MTU of 500") && e.contains("536"), "{e}");
        assert_eq!(m(576, None).mss, 536);
    }
}
