//! `baton backend`: loads the back-end module (tc ingress and egress on the LAN
//! interface), pins its maps and links so that they outlive the agent, and garbage-collects
//! the flow table against the kernel's socket table.
//!
//! Pins live in `<pin_dir>/<interface>/`: `flows`, `config`, `stats`, `ingress_programs`
//! (maps: the last is the program array the ingress tail-calls its SYN' program through),
//! their IPv6 twins `flows_v6`, `config_v6` and `ipv6_programs` (the programs the IPv4
//! entry programs hand IPv6 frames to), and `link_ingress`, `link_egress` (tcx links). While the link pins exist the programs stay
//! attached whether or not the agent runs, so an agent restart disturbs no connection:
//! it finds the pins, loads its own build of the programs against the pinned maps and
//! swaps them into the pinned links atomically (`BPF_LINK_UPDATE`): starting a new build
//! of the agent upgrades the module under traffic, flows kept. `--detach` removes the
//! pins, which detaches the programs and frees the maps. One agent at a time per
//! interface and per pins: [`crate::daemon_lock`] makes a second refuse, naming the first.

pub mod config;
pub mod metrics;
pub mod sockdiag;

use std::{
    collections::HashSet,
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray},
    programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
    },
};
use baton_common::backend::{
    BackendConfig, BackendConfigV6, BackendFlow, BackendFlowKey, BackendFlowKeyV6, ingress_program,
    ipv6_program, stat,
};

pub use config::AgentConfig;

use crate::{log, pins::Pins};

/// The kernel's ids of the programs in the two links (as `bpftool prog` shows them), and
/// of the SYN' program in the ingress's program array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramIds {
    pub ingress: u32,
    pub egress: u32,
    /// `backend_syn`; 0 in the ids of programs replaced (the array's slot is
    /// overwritten, not read).
    pub ingress_syn: u32,
}

/// How [`BackendModule::start`] found things.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Programs loaded and attached now.
    Attached { programs: ProgramIds },
    /// Links were pinned: this build's programs replaced the running ones in them
    /// atomically (`BPF_LINK_UPDATE`), with the pinned maps (flows, counters) kept and
    /// the configuration rewritten; connections untouched.
    Reattached { old: ProgramIds, new: ProgramIds },
}

/// The IPv6 maps' pins, beside the IPv4 ones ([`Pins::backend`]).
struct V6Pins {
    flows: PathBuf,
    config: PathBuf,
    programs: PathBuf,
}

impl V6Pins {
    fn of(pins: &Pins) -> Self {
        Self {
            flows: pins.dir().join("flows_v6"),
            config: pins.dir().join("config_v6"),
            programs: pins.dir().join("ipv6_programs"),
        }
    }
}

/// The attached back-end module's maps, through their pins.
pub struct BackendModule {
    flows: HashMap<MapData, BackendFlowKey, BackendFlow>,
    /// The IPv6 flow table; `None` when opened beside a module of a build without one.
    flows_v6: Option<HashMap<MapData, BackendFlowKeyV6, BackendFlow>>,
    stats: PerCpuArray<MapData, u64>,
    /// Flows found without a socket at the last sweep: removed if still so at the next.
    suspects: HashSet<BackendFlowKey>,
    suspects_v6: HashSet<BackendFlowKeyV6>,
}

impl BackendModule {
    /// Attaches the module to `config.interface`, or reattaches to the one already there.
    pub fn start(config: &AgentConfig) -> anyhow::Result<(Self, Start)> {
        let pins = Pins::backend(&config.pin_dir, &config.interface);
        crate::pins::require_bpffs(&config.pin_dir)?;
        fs::create_dir_all(pins.dir())
            .with_context(|| format!("creating {}", pins.dir().display()))?;
        check_pinned_maps(&pins)?;
        let start = attach(config, &pins)?;
        let mut config_map: Array<MapData, BackendConfig> =
            Array::try_from(Map::Array(MapData::from_pin(pins.config())?))?;
        config_map
            .set(0, config.map_value(), 0)
            .context("writing the configuration map")?;
        let v6 = V6Pins::of(&pins);
        let module = Self {
            flows: HashMap::try_from(Map::LruHashMap(MapData::from_pin(pins.flows())?))?,
            flows_v6: Some(HashMap::try_from(Map::LruHashMap(MapData::from_pin(
                &v6.flows,
            )?))?),
            stats: PerCpuArray::try_from(Map::PerCpuArray(MapData::from_pin(pins.stats())?))?,
            suspects: HashSet::new(),
            suspects_v6: HashSet::new(),
        };
        Ok((module, start))
    }

    /// Opens the maps of the module attached to `config.interface`, changing nothing:
    /// for reading counters and the flow table from outside the agent.
    pub fn open(config: &AgentConfig) -> anyhow::Result<Self> {
        let pins = Pins::backend(&config.pin_dir, &config.interface);
        let open = |path: PathBuf| {
            MapData::from_pin(&path).with_context(|| {
                format!(
                    "{} not found: is `baton backend` attached to {}?",
                    path.display(),
                    config.interface
                )
            })
        };
        let flows_v6 = match MapData::from_pin(V6Pins::of(&pins).flows) {
            Ok(map) => Some(HashMap::try_from(Map::LruHashMap(map))?),
            // A module of a build before IPv6.
            Err(_) => None,
        };
        Ok(Self {
            flows: HashMap::try_from(Map::LruHashMap(open(pins.flows())?))?,
            flows_v6,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(pins.stats())?))?,
            suspects: HashSet::new(),
            suspects_v6: HashSet::new(),
        })
    }

    /// Removes the pins: the programs detach and the maps are freed once nothing holds
    /// them. Says whether there was anything to remove.
    pub fn detach(config: &AgentConfig) -> anyhow::Result<bool> {
        let pins = Pins::backend(&config.pin_dir, &config.interface);
        if !pins.dir().exists() {
            return Ok(false);
        }
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Ok(link) = PinnedLink::from_pin(pins.tc_link(hook)) {
                // Unpinning and dropping the last descriptor detaches the program.
                drop(link.unpin().context("unpinning a link")?);
            }
        }
        let v6 = V6Pins::of(&pins);
        pins.remove(&[
            pins.flows(),
            pins.config(),
            pins.stats(),
            pins.ingress_programs(),
            v6.flows,
            v6.config,
            v6.programs,
        ])?;
        Ok(true)
    }

    /// The counters, summed over CPUs, by [`stat`] index.
    pub fn stats(&self) -> anyhow::Result<[u64; stat::COUNT as usize]> {
        let mut out = [0u64; stat::COUNT as usize];
        for (i, total) in out.iter_mut().enumerate() {
            *total = self.stats.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Entries in the flow tables now, both families.
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
            + self
                .flows_v6
                .as_ref()
                .map_or(0, |flows| flows.keys().filter(Result::is_ok).count())
    }

    /// One garbage-collection sweep of both flow tables against the live connections of
    /// the service port (both families, [`sockdiag::SockDiag::tcp_connections`]): an
    /// entry without a socket is removed if it had none at the previous sweep either.
    /// Returns (entries kept, entries removed).
    pub fn collect_garbage(&mut self, live: &HashSet<sockdiag::TcpConnection>) -> (usize, usize) {
        let (kept, removed) = sweep(&mut self.flows, &mut self.suspects, live);
        let Some(flows_v6) = self.flows_v6.as_mut() else {
            return (kept, removed);
        };
        let (kept_v6, removed_v6) = sweep(flows_v6, &mut self.suspects_v6, live);
        (kept + kept_v6, removed + removed_v6)
    }
}

/// A flow-table key of either family: the socket-table view of its flow.
trait FlowKey: aya::Pod + Eq + std::hash::Hash {
    /// Local is the back-end's end.
    fn connection(&self) -> sockdiag::TcpConnection;
}

impl FlowKey for BackendFlowKey {
    fn connection(&self) -> sockdiag::TcpConnection {
        let addr = |be: u32, port_be: u16| {
            SocketAddr::new(
                Ipv4Addr::from(be.to_ne_bytes()).into(),
                u16::from_be_bytes(port_be.to_ne_bytes()),
            )
        };
        sockdiag::TcpConnection {
            local: addr(self.backend_addr_be, self.backend_port_be),
            remote: addr(self.client_addr_be, self.client_port_be),
        }
    }
}

impl FlowKey for BackendFlowKeyV6 {
    fn connection(&self) -> sockdiag::TcpConnection {
        let addr = |a: [u8; 16], port_be: u16| {
            SocketAddr::new(
                Ipv6Addr::from(a).into(),
                u16::from_be_bytes(port_be.to_ne_bytes()),
            )
        };
        sockdiag::TcpConnection {
            local: addr(self.backend_addr, self.backend_port_be),
            remote: addr(self.client_addr, self.client_port_be),
        }
    }
}

/// [`BackendModule::collect_garbage`] over one table: its entries without a socket in
/// `live` are removed if in `suspects` (the last sweep's), the others become the new
/// suspects. Returns (entries kept, entries removed).
fn sweep<K: FlowKey>(
    flows: &mut HashMap<MapData, K, BackendFlow>,
    suspects: &mut HashSet<K>,
    live: &HashSet<sockdiag::TcpConnection>,
) -> (usize, usize) {
    let keys: Vec<K> = flows.keys().filter_map(Result::ok).collect();
    let mut next = HashSet::new();
    let mut removed = 0;
    for key in &keys {
        if live.contains(&key.connection()) {
            continue;
        }
        if suspects.contains(key) {
            if flows.remove(key).is_ok() {
                removed += 1;
            }
        } else {
            next.insert(*key);
        }
    }
    *suspects = next;
    (keys.len() - removed, removed)
}

/// Loads the object with its maps pinned (reusing pinned maps a previous agent left),
/// and puts the programs in place: a link already pinned (a previous agent's, possibly
/// an older build) gets the new program atomically through `BPF_LINK_UPDATE`, so every
/// packet meets either the old program or the new one, never none; a missing link is
/// attached and pinned. The maps, and with them the flows, are the pinned ones
/// throughout. Every program goes through the verifier before anything is swapped, so a
/// refusal leaves the running module as it was.
fn attach(config: &AgentConfig, pins: &Pins) -> anyhow::Result<Start> {
    let (flows, cfg, stats) = (pins.flows(), pins.config(), pins.stats());
    let programs = pins.ingress_programs();
    let v6 = V6Pins::of(pins);
    let mut ebpf = EbpfLoader::new()
        .map_pin_path("BACKEND_FLOWS", flows.as_path())
        .map_pin_path("BACKEND_CONFIG", cfg.as_path())
        .map_pin_path("BACKEND_STATS", stats.as_path())
        .map_pin_path("BACKEND_INGRESS_PROGRAMS", programs.as_path())
        .map_pin_path("BACKEND_FLOWS_V6", v6.flows.as_path())
        .map_pin_path("BACKEND_CONFIG_V6", v6.config.as_path())
        .map_pin_path("BACKEND_V6_PROGRAMS", v6.programs.as_path())
        .map_max_entries("BACKEND_FLOWS", config.flow_table_size)
        .map_max_entries("BACKEND_FLOWS_V6", config.flow_table_size)
        .load(crate::ebpf::BACKEND)
        .context("loading the back-end module's eBPF object")?;
    // The configuration goes in before the programs can see a packet.
    let mut config_map: Array<_, BackendConfig> = Array::try_from(
        ebpf.map_mut("BACKEND_CONFIG")
            .context("map BACKEND_CONFIG missing")?,
    )?;
    config_map.set(0, config.map_value(), 0)?;
    let mut config_v6: Array<_, BackendConfigV6> = Array::try_from(
        ebpf.map_mut("BACKEND_CONFIG_V6")
            .context("map BACKEND_CONFIG_V6 missing")?,
    )?;
    config_v6.set(0, config.map_value_v6(), 0)?;
    const HOOKS: [(&str, TcAttachType); 2] = [
        ("backend_egress", TcAttachType::Egress),
        ("backend_ingress", TcAttachType::Ingress),
    ];
    for name in [
        "backend_syn",
        "backend_icmp",
        "backend_repeated_syn",
        "backend_local_ack",
        "backend_ingress_v6",
        "backend_syn_v6",
        "backend_icmp_v6",
        "backend_egress_v6",
        HOOKS[0].0,
        HOOKS[1].0,
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {name} (the verifier's log follows)"))?;
    }
    // Egress first: once ingress accepts a SYN', the server's SYN/ACK must meet a
    // translating egress, or it would leave untranslated for the client, which resets it.
    // Then the program array, then ingress: the new ingress must never find its SYN'
    // program missing. Until the ingress is replaced, a previous build's ingress calls
    // the new SYN' program through the pinned array, which is sound because an entry
    // program passes it nothing but the packet (`baton_common::backend::ingress_program`).
    let (mut old, mut new) = (ProgramIds::default(), ProgramIds::default());
    let mut replaced = 0;
    for (name, hook) in HOOKS {
        if matches!(hook, TcAttachType::Ingress) {
            new.ingress_syn = fill_ingress_programs(&mut ebpf)?;
        }
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        let pin = pins.tc_link(hook);
        let (was, now) = match PinnedLink::from_pin(&pin) {
            Ok(pinned) => {
                // The pin stays: it names the same kernel link, now running the new
                // program. Should the update fail, the old program goes on running.
                let link = FdLink::from(pinned);
                let was = link.info()?.program_id();
                let id = prog
                    .attach_to_link(link.try_into()?)
                    .with_context(|| format!("replacing the program in {}", pin.display()))?;
                let link: FdLink = prog.take_link(id)?.try_into()?;
                replaced += 1;
                // Dropping our descriptor leaves the pinned link attached.
                (was, link.info()?.program_id())
            }
            Err(_) => {
                let id = prog.attach(&config.interface, hook).with_context(|| {
                    format!("attaching {name} to {} {hook:?}", config.interface)
                })?;
                let link: FdLink = prog.take_link(id)?.try_into()?;
                let now = link.info()?.program_id();
                link.pin(&pin)
                    .with_context(|| format!("pinning the link at {}", pin.display()))?;
                (0, now)
            }
        };
        let (o, n) = match hook {
            TcAttachType::Ingress => (&mut old.ingress, &mut new.ingress),
            _ => (&mut old.egress, &mut new.egress),
        };
        (*o, *n) = (was, now);
    }
    // A single link left pinned (an agent that died half-way) counts as a first attach.
    Ok(if replaced == 2 {
        Start::Reattached { old, new }
    } else {
        Start::Attached { programs: new }
    })
}

/// Puts the loaded `backend_local_ack`, `backend_repeated_syn`, `backend_icmp` and
/// `backend_syn` of `ebpf` in their slots of the module's program array
/// ([`ingress_program::LOCAL_ACK`], [`ingress_program::REPEATED_SYN`],
/// [`ingress_program::ICMP`], [`ingress_program::SYN`]), in that order, so that the SYN'
/// program never calls an empty slot it could fill, after the IPv6 programs in theirs
/// of `BACKEND_V6_PROGRAMS` ([`ipv6_program`]), and returns `backend_syn`'s id. Each
/// update is one atomic store: a tail call meets the program that was there or this one.
/// `ebpf` must have loaded the programs; the array is the one the object's ingress uses
/// (the pinned one, for the agent).
pub fn fill_ingress_programs(ebpf: &mut Ebpf) -> anyhow::Result<u32> {
    // The IPv6 programs first: the IPv4 entry programs hand IPv6 frames to them, the
    // IPv6 ingress its SYNs and "packet too big" errors to its SYN' and ICMPv6
    // programs, which must be in place before it.
    for (name, slot) in [
        ("backend_egress_v6", ipv6_program::EGRESS),
        ("backend_syn_v6", ipv6_program::SYN),
        ("backend_icmp_v6", ipv6_program::ICMP),
        ("backend_ingress_v6", ipv6_program::INGRESS),
    ] {
        put_program(ebpf, name, "BACKEND_V6_PROGRAMS", slot)?;
    }
    let mut id = 0;
    for (name, slot) in [
        ("backend_local_ack", ingress_program::LOCAL_ACK),
        ("backend_repeated_syn", ingress_program::REPEATED_SYN),
        ("backend_icmp", ingress_program::ICMP),
        ("backend_syn", ingress_program::SYN),
    ] {
        id = put_program(ebpf, name, "BACKEND_INGRESS_PROGRAMS", slot)?;
    }
    Ok(id)
}

/// Puts the loaded program `name` in `slot` of the program array `map`; returns its id.
fn put_program(ebpf: &mut Ebpf, name: &str, map: &str, slot: u32) -> anyhow::Result<u32> {
    let prog: &SchedClassifier = ebpf
        .program(name)
        .with_context(|| format!("program {name} missing"))?
        .try_into()?;
    let fd = prog.fd()?.try_clone()?;
    let id = prog.info()?.id();
    let mut slots: ProgramArray<_> = ProgramArray::try_from(
        ebpf.map_mut(map)
            .with_context(|| format!("map {map} missing"))?,
    )?;
    slots
        .set(slot, &fd, 0)
        .with_context(|| format!("putting {name} in the program array {map}"))?;
    Ok(id)
}

/// Refuses a pinned flow table whose shape this build's programs do not expect (made by
/// another version): reusing it would have the programs read past its entries, and its
/// flows cannot be carried over. A configuration or counter map of another shape holds
/// nothing worth keeping (the agent rewrites the one, the other only counts): it is
/// unpinned, so that the loader makes one this build's programs fit, and an upgrade that
/// changes them stays live (a program still running keeps its own).
fn check_pinned_maps(pins: &Pins) -> anyhow::Result<()> {
    let v6 = V6Pins::of(pins);
    crate::pins::replace_reshaped(&pins.config(), size_of::<BackendConfig>(), 1)?;
    crate::pins::replace_reshaped(&v6.config, size_of::<BackendConfigV6>(), 1)?;
    crate::pins::replace_reshaped(&v6.programs, size_of::<u32>(), ipv6_program::SLOTS)?;
    crate::pins::require_shape(
        &v6.flows,
        size_of::<BackendFlowKeyV6>(),
        size_of::<BackendFlow>(),
        "baton backend --config FILE --detach",
    )?;
    crate::pins::replace_reshaped(&pins.stats(), size_of::<u64>(), stat::COUNT)?;
    // Unpinned, a program array is emptied at once (the kernel clears one no pin or
    // descriptor holds), so a running ingress passes SYNs unchecked until it is replaced
    // moments later (`in_syn_unchecked`); the slots leave room so that this need not
    // happen (`ingress_program::SLOTS`).
    crate::pins::replace_reshaped(
        &pins.ingress_programs(),
        size_of::<u32>(),
        ingress_program::SLOTS,
    )?;
    crate::pins::require_shape(
        &pins.flows(),
        size_of::<BackendFlowKey>(),
        size_of::<BackendFlow>(),
        "baton backend --config FILE --detach",
    )
}

/// Takes the agent's locks ([`crate::daemon_lock`]): the interface in this network
/// namespace (its tc programs) and the pins. A second agent that would touch either
/// refuses to start, naming the running one.
fn lock(
    path: &Path,
    config: &AgentConfig,
    pins: &Pins,
) -> anyhow::Result<crate::daemon_lock::DaemonLock> {
    use crate::daemon_lock::{Claim, DaemonLock, Holder};
    let claims = [
        Claim::network_namespace(
            &format!("backend-{}", config.interface),
            format!("the back-end module on {}", config.interface),
        )?,
        Claim::pins(pins.dir())?,
    ];
    DaemonLock::acquire(
        &claims,
        &Holder {
            role: "backend",
            config: path.to_path_buf(),
            interface: config.interface.clone(),
        },
    )
}

/// This network namespace's `net.ipv4.tcp_fastopen` (the agent runs in the server's).
const TCP_FASTOPEN_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fastopen";

/// The `tcp_fastopen` flags a one-turn handoff needs on the back-end
/// (`Documentation/networking/ip-sysctl.rst`): `0x2` the server side enabled, `0x200`
/// data accepted on a SYN without a cookie (the SYN' carries none; the module admits
/// data only on a SYN whose handoff option verifies).
const FAST_OPEN_NEEDED: u32 = 0x202;

/// What `tcp_fastopen` (the sysctl file's text, `None` if unreadable) lacks for one-turn
/// handoffs, or `None` if nothing. The sysctl prints decimal; hexadecimal is read too.
pub fn fast_open_missing(sysctl: Option<&str>) -> Option<u32> {
    let text = sysctl.map(str::trim).unwrap_or("");
    let value = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
    .unwrap_or(0);
    let missing = FAST_OPEN_NEEDED & !value;
    (missing != 0).then_some(missing)
}

/// One warning at start when this namespace's TCP cannot take a one-turn handoff's
/// request from the SYN': every such handoff then falls back to three turns (the
/// SYN/ACK' acknowledges only the SYN and goes to the front-end, which sends the request
/// after it). The agent leaves the sysctl alone: it is the host's, and must be set
/// before the server listens (docs/one-turn-handoff-notes.md).
fn warn_without_fast_open(sysctl: Option<&str>) {
    let Some(missing) = fast_open_missing(sysctl) else {
        return;
    };
    log::warn(
        "fast_open_off",
        &[
            ("tcp_fastopen", &sysctl.map_or("unreadable", str::trim)),
            ("missing", &format_args!("{missing:#x}")),
            (
                "effect",
                &"one-turn handoffs to this back-end fall back to three turns",
            ),
            (
                "fix",
                &"sysctl -w net.ipv4.tcp_fastopen=0x202 (or add 0x202 to the flags) in this namespace, then restart the server with fastopen on its listener (nginx: listen ... fastopen=256)",
            ),
        ],
    );
}

/// `baton backend --config FILE [--detach]`.
pub fn run(path: &Path, detach: bool) -> anyhow::Result<()> {
    let config = AgentConfig::load(path)?;
    let pins = Pins::backend(&config.pin_dir, &config.interface);
    // Before anything is touched, held until the agent exits (and through `--detach`,
    // which must not pull the module from under a running agent).
    let _lock = lock(path, &config, &pins)?;
    if detach {
        if BackendModule::detach(&config)? {
            log::line(
                "detached",
                &[
                    ("interface", &config.interface),
                    ("removed", &pins.dir().display()),
                ],
            );
        } else {
            log::line(
                "nothing_attached",
                &[
                    ("interface", &config.interface),
                    ("pins", &pins.dir().display()),
                ],
            );
        }
        return Ok(());
    }
    let stop = crate::signals::stop_flag()?;
    let (mut module, start) = BackendModule::start(&config)?;
    let (event, ingress, egress, ingress_syn) = match start {
        Start::Attached { programs } => (
            "attached",
            programs.ingress.to_string(),
            programs.egress.to_string(),
            programs.ingress_syn,
        ),
        // The program ids before and after the replacement in the pinned links.
        Start::Reattached { old, new } => (
            "reattached",
            format!("{}->{}", old.ingress, new.ingress),
            format!("{}->{}", old.egress, new.egress),
            new.ingress_syn,
        ),
    };
    log::line(
        event,
        &[
            ("interface", &config.interface),
            ("hooks", &"tc ingress and egress"),
            ("ingress", &ingress),
            ("egress", &egress),
            ("ingress_syn", &ingress_syn),
            ("service_port", &config.service_port),
            ("vip", &config.vip),
            (
                "vip6",
                &config
                    .vip6
                    .map_or_else(|| "none".to_string(), |a| a.to_string()),
            ),
            ("pins", &pins.dir().display()),
            ("flows", &module.flow_count()),
        ],
    );
    warn_without_fast_open(fs::read_to_string(TCP_FASTOPEN_SYSCTL).ok().as_deref());
    metrics::start(&config)?;
    let mut diag = sockdiag::SockDiag::open().context("opening a sock_diag socket")?;
    let mut live = HashSet::new();
    let mut last_stats = module.stats()?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // Sleep in short steps so a signal is answered within 100 ms.
        let deadline = std::time::Instant::now() + config.gc_interval;
        while std::time::Instant::now() < deadline
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        match diag.tcp_connections(config.service_port, &mut live) {
            Ok(()) => {
                let (kept, removed) = module.collect_garbage(&live);
                if removed > 0 {
                    // Entries whose connection has no socket any more.
                    log::line("gc", &[("removed", &removed), ("kept", &kept)]);
                }
            }
            // An interrupted dump may miss sockets: skip the sweep rather than act on it.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => log::warn(
                "sweep_skipped",
                &[("reason", &"socket table unreadable"), ("error", &e)],
            ),
        }
        let stats = module.stats()?;
        if stats != last_stats {
            let changed: Vec<(&str, &dyn std::fmt::Display)> = stat::NAMES
                .iter()
                .zip(stats.iter().zip(last_stats.iter()))
                .filter(|(_, (now, before))| now != before)
                .map(|(name, (now, _))| (*name, now as &dyn std::fmt::Display))
                .collect();
            log::line("counters", &changed);
            last_stats = stats;
        }
    }
    log::line(
        "exit",
        &[
            (
                "left_in_place",
                &format!("the module, pinned in {}", pins.dir().display()),
            ),
            (
                "remove_with",
                &format!("baton backend --config {} --detach", path.display()),
            ),
        ],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fast_open_missing;

    #[test]
    fn fast_open_needs_the_server_and_no_cookie_flags() {
        assert_eq!(fast_open_missing(Some("514\n")), None, "0x202");
        assert_eq!(fast_open_missing(Some("1539\n")), None, "0x603");
        assert_eq!(fast_open_missing(Some("0x202")), None);
        assert_eq!(fast_open_missing(Some("1\n")), Some(0x202), "the default");
        assert_eq!(
            fast_open_missing(Some("3\n")),
            Some(0x200),
            "cookies needed"
        );
        assert_eq!(fast_open_missing(Some("512\n")), Some(0x2), "server off");
        assert_eq!(fast_open_missing(None), Some(0x202), "unreadable");
        assert_eq!(fast_open_missing(Some("garbage")), Some(0x202));
    }
}
