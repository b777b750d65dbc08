//! The lab: a Baton cluster in network namespaces on one host.
//!
//! ```text
//!  client ── router ══ LAN bridge (in `lan`) ══ fe, be1 .. beN
//! ```
//!
//! With `--frontends N` (2 to 4) the front-end is a tier, `fe1` .. `feN`, each announcing
//! the VIP to the router over BGP (module [`tier`]); with `--cluster` the lab also starts
//! every daemon (module [`cluster`]).
//!
//! The addressing plan below is a contract that the tests, the demo and the benchmarks
//! rely on; the README documents it. All addresses are in the benchmarking ranges
//! 198.18.0.0/15 and, with `--ipv6`, 2001:2::/48 (RFC 5180), and live only inside
//! namespaces the lab creates. Several labs can run at once under different names
//! (`BATON_LAB`): same addresses, separate namespaces.

use std::{
    fmt, fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{netns, webroot};

pub mod cluster;
pub mod tier;

pub const DEFAULT_BACKENDS: u8 = 3;
pub const MAX_BACKENDS: u8 = 32;
/// One front-end, `fe`, unless `--frontends` asks for a tier.
pub const DEFAULT_FRONTENDS: u8 = 1;
/// A tier of at most four front-ends, `fe1` .. `fe4` (198.18.1.2 .. 198.18.1.5), below
/// the back-ends' addresses.
pub const MAX_FRONTENDS: u8 = 4;
/// The lab's name when `BATON_LAB` is unset: namespaces are `baton-client`, `baton-fe`, ...
pub const DEFAULT_NAME: &str = "baton";

/// The virtual IP: the router sends it to `fe` (or spreads it over the tier's front-ends
/// that announce it).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// A second virtual IP beside [`VIP`], for a front-end serving several services. `lab up`
/// leaves it unassigned: whoever uses it adds it on `fe`'s `lo` and routes it to
/// [`FE_ADDR`] on the router, as `lab up` does for the first.
pub const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// The client's network, between `client` and `router`.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const ROUTER_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The router's interface on the client's link (`eth0`; `eth1` faces the LAN).
pub const ROUTER_CLIENT_LINK: &str = "eth0";
/// The cluster LAN, on the bridge.
pub const ROUTER_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const FE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Port the back-ends' web servers listen on.
pub const HTTP_PORT: u16 = 80;
/// The port back-ends serve TLS on once [`Lab::enable_tls`] has run.
pub const HTTPS_PORT: u16 = 443;

/// One node of the lab; each is a network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Client,
    Router,
    /// Holds only the LAN bridge; a switch, not a host.
    Lan,
    /// The one front-end of a lab without a tier.
    Fe,
    /// Front-end `fe<k>` of a tier, k in 1..=[`MAX_FRONTENDS`].
    Frontend(u8),
    /// Back-end `be<k>`, k in 1..=32.
    Backend(u8),
}

impl Node {
    /// Parses a node name as users type it: `client`, `router`, `lan`, `fe` (or `fe1`..
    /// in a tier), `be1`...
    pub fn parse(name: &str, backends: u8, frontends: u8) -> anyhow::Result<Self> {
        let numbered = |prefix: &str, max: u8| {
            name.strip_prefix(prefix)
                .and_then(|k| k.parse::<u8>().ok())
                .filter(|k| (1..=max).contains(k) && name == format!("{prefix}{k}"))
        };
        let node = match name {
            "client" => Self::Client,
            "router" => Self::Router,
            "lan" => Self::Lan,
            "fe" if frontends == 1 => Self::Fe,
            _ => match (numbered("fe", frontends), numbered("be", backends)) {
                (Some(k), _) if frontends > 1 => Self::Frontend(k),
                (_, Some(k)) => Self::Backend(k),
                _ => bail!(
                    "unknown lab node `{name}`; nodes are client, router, lan, {} and be1..be{backends}",
                    Self::frontends(frontends)
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        };
        Ok(node)
    }

    /// The front-end nodes of a lab with `frontends` front-ends: `fe` alone, or the tier.
    pub fn frontends(frontends: u8) -> Vec<Node> {
        if frontends <= 1 {
            vec![Self::Fe]
        } else {
            (1..=frontends).map(Self::Frontend).collect()
        }
    }

    /// The node's address on the cluster LAN (or the client network, for `client`).
    pub fn addr(self) -> Option<Ipv4Addr> {
        match self {
            Self::Client => Some(CLIENT_ADDR),
            Self::Router => Some(ROUTER_LAN_ADDR),
            Self::Lan => None,
            Self::Fe => Some(FE_ADDR),
            Self::Frontend(k) => Some(frontend_addr(k)),
            Self::Backend(k) => Some(backend_addr(k)),
        }
    }

    /// Every node of a lab with `backends` back-ends and `frontends` front-ends, in
    /// bring-up order.
    pub fn all(backends: u8, frontends: u8) -> Vec<Node> {
        let mut nodes = vec![Self::Client, Self::Router, Self::Lan];
        nodes.extend(Self::frontends(frontends));
        nodes.extend((1..=backends).map(Self::Backend));
        nodes
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client => f.write_str("client"),
            Self::Router => f.write_str("router"),
            Self::Lan => f.write_str("lan"),
            Self::Fe => f.write_str("fe"),
            Self::Frontend(k) => write!(f, "fe{k}"),
            Self::Backend(k) => write!(f, "be{k}"),
        }
    }
}

/// Front-end k's LAN address in a tier: 198.18.1.(1 + k), so `fe1` has `fe`'s.
pub const fn frontend_addr(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 1 + k)
}

/// Back-end k's LAN address: 198.18.1.(10 + k).
pub const fn backend_addr(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + k)
}

/// The IPv6 address beside an IPv4 address of the plan, for a lab up with `--ipv6`:
/// 198.18.N.H becomes 2001:2:0:N::H (hex), in the IPv6 benchmarking range 2001:2::/48
/// (RFC 5180), each IPv4 /24 of the plan a /64 of its own. One rule for every node, so
/// that whoever knows a node's IPv4 address knows its IPv6 one.
pub const fn v6_for(addr: Ipv4Addr) -> Ipv6Addr {
    let [_, _, net, host] = addr.octets();
    Ipv6Addr::new(0x2001, 0x2, 0, net as u16, 0, 0, 0, host as u16)
}

/// The prefix length of every IPv6 link of the plan.
pub const V6_PREFIX: u8 = 64;

/// The VIP's IPv6 address, with `--ipv6` (routed to `fe` like [`VIP`]; the cluster's
/// front-end serves it as `vip6` and each agent answers as it: [`cluster::frontend_ipv6`]).
pub const VIP6: Ipv6Addr = v6_for(VIP);

/// A MAC address derived from an IPv4 address (locally administered, `02:ba:70:` then
/// the address's last three bytes), so a capture shows who is who without a lookup.
pub fn mac_for(addr: Ipv4Addr) -> String {
    let [a, b, c, d, e, f] = mac_octets(addr);
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// [`mac_for`] as bytes, for a hand-made frame.
pub const fn mac_octets(addr: Ipv4Addr) -> [u8; 6] {
    let [_, b, c, d] = addr.octets();
    [0x02, 0xba, 0x70, b, c, d]
}

/// One interface of the addressing plan.
#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub node: String,
    pub iface: String,
    /// `addr/prefix`, or empty for a bridge port.
    pub addr: String,
    /// The IPv6 address beside it with `lab up --ipv6` ([`v6_for`]), or empty.
    pub addr6: String,
    pub mac: String,
    pub role: String,
}

/// The whole addressing plan of a lab with `backends` back-ends and `frontends`
/// front-ends.
pub fn plan(backends: u8, frontends: u8) -> Vec<Interface> {
    let i = |node: &str, iface: &str, addr: Option<(Ipv4Addr, u8)>, role: &str| Interface {
        node: node.into(),
        iface: iface.into(),
        addr: addr.map(|(a, p)| format!("{a}/{p}")).unwrap_or_default(),
        addr6: addr
            // The tier's BGP carries IPv4 only: `--ipv6` takes one front-end.
            .filter(|_| frontends <= 1)
            .map(|(a, p)| {
                let p6 = if p == 32 { 128 } else { V6_PREFIX };
                format!("{}/{p6}", v6_for(a))
            })
            .unwrap_or_default(),
        // Loopback and bridge have no MAC of the plan's own.
        mac: addr
            .filter(|_| iface != "lo" && iface != tier::ANNOUNCE_INTERFACE)
            .map(|(a, _)| mac_for(a))
            .unwrap_or_default(),
        role: role.into(),
    };
    let mut plan = vec![
        i(
            "client",
            "eth0",
            Some((CLIENT_ADDR, 24)),
            "HTTP clients (curl, wrk); default via 198.18.0.1",
        ),
        i(
            "router",
            "eth0",
            Some((ROUTER_CLIENT_ADDR, 24)),
            "router, client side",
        ),
    ];
    if frontends <= 1 {
        plan.extend([
            i(
                "router",
                "eth1",
                Some((ROUTER_LAN_ADDR, 24)),
                "router, LAN side; routes the VIP 198.18.2.1/32 via 198.18.1.2",
            ),
            i(
                "lan",
                "br0",
                None,
                "LAN bridge; ports p-router, p-fe, p-be1..p-beN",
            ),
            i(
                "fe",
                "eth0",
                Some((FE_ADDR, 24)),
                "front-end; default via 198.18.1.1",
            ),
            i(
                "fe",
                "lo",
                Some((VIP, 32)),
                "the VIP, owned by the front-end",
            ),
        ]);
    } else {
        plan.extend([
            i(
                "router",
                "eth1",
                Some((ROUTER_LAN_ADDR, 24)),
                "router, LAN side; BGP (AS 65000) with each front-end, BFD; the VIP 198.18.2.1/32 by ECMP over those that announce it",
            ),
            i(
                "lan",
                "br0",
                None,
                "LAN bridge; ports p-router, p-fe1..p-feN, p-be1..p-beN",
            ),
        ]);
        for k in 1..=frontends {
            let name = format!("fe{k}");
            plan.push(i(
                &name,
                "eth0",
                Some((frontend_addr(k), 24)),
                "front-end of the tier, BGP (AS 65001) with 198.18.1.1; default via 198.18.1.1",
            ));
            plan.push(i(
                &name,
                "lo",
                Some((VIP, 32)),
                "the VIP, served by every front-end of the tier",
            ));
            plan.push(i(
                &name,
                tier::ANNOUNCE_INTERFACE,
                Some((VIP, 32)),
                "the VIP again, while the daemon can serve: what BIRD announces",
            ));
        }
    }
    for k in 1..=backends {
        let name = format!("be{k}");
        plan.push(i(
            &name,
            "eth0",
            Some((backend_addr(k), 24)),
            "back-end, web server on :80; default via 198.18.1.1",
        ));
    }
    plan
}

/// Which web server the back-ends run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// nginx if installed, else the built-in server.
    Auto,
    Nginx,
    /// Baton's built-in static server (a stand-in for when nginx cannot be installed).
    Builtin,
}

/// What `lab up` records, for `status`, `exec` and `down`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub backends: u8,
    /// 1: the front-end `fe`; more: the tier `fe1` .. `feN` behind BGP and ECMP.
    #[serde(default = "one_frontend")]
    pub frontends: u8,
    pub server: ServerKind,
    /// `lab up --cluster` started the daemons too.
    #[serde(default)]
    pub cluster: bool,
    /// `lab up --ipv6`: every node has its IPv6 address beside its IPv4 one ([`v6_for`]).
    #[serde(default)]
    pub ipv6: bool,
}

fn one_frontend() -> u8 {
    DEFAULT_FRONTENDS
}

impl LabState {
    /// The front-end nodes: `fe`, or `fe1` .. `feN`.
    pub fn frontend_nodes(&self) -> Vec<Node> {
        Node::frontends(self.frontends)
    }
}

/// What `lab up` makes.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub backends: u8,
    pub frontends: u8,
    pub server: ServerKind,
    /// Start the cluster's daemons as well (module [`cluster`]).
    pub cluster: bool,
    /// IPv6 beside IPv4 ([`v6_for`]); off, IPv6 is disabled in every namespace.
    pub ipv6: bool,
}

/// A lab, by name. All its namespaces are `<name>-<node>`, its files under `state_dir`.
#[derive(Clone, Debug)]
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// The lab named by `BATON_LAB`, or `baton`.
    pub fn from_env() -> anyhow::Result<Self> {
        let name = std::env::var("BATON_LAB").unwrap_or_else(|_| DEFAULT_NAME.into());
        Self::named(&name)
    }

    pub fn named(name: &str) -> anyhow::Result<Self> {
        // Namespace names become file names under /run/netns; keep them plain.
        if name.is_empty()
            || name.len() > 24
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("lab name `{name}` must be 1 to 24 characters of [A-Za-z0-9_-]");
        }
        Ok(Self { name: name.into() })
    }

    pub fn namespace(&self, node: Node) -> String {
        format!("{}-{node}", self.name)
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}-lab", self.name))
    }

    /// The BPF filesystem mounted for `node` (`lan`, front-end and back-ends), where its
    /// agent pins maps and links: `pin_dir` in the node's configuration.
    pub fn bpffs(&self, node: Node) -> PathBuf {
        self.state_dir().join(node.to_string()).join("bpf")
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir().join("lab.json")
    }

    /// The recorded state of a lab that is up.
    pub fn state(&self) -> anyhow::Result<LabState> {
        let path = self.state_file();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "lab `{}` is not up (no {}); start it with `baton lab up`",
                self.name,
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("corrupt {}; run `baton lab down`", path.display()))
    }

    /// Namespaces of this lab that exist now, whatever state the lab is in.
    pub fn existing_namespaces(&self) -> Vec<String> {
        // `fe` and the tier's `fe1`..: whichever kind the lab was.
        Node::all(MAX_BACKENDS, MAX_FRONTENDS)
            .into_iter()
            .chain([Node::Fe])
            .map(|n| self.namespace(n))
            .filter(|ns| netns::exists(ns))
            .collect()
    }

    /// Brings up a lab with one front-end and no daemons (what the benchmarks use).
    pub fn up(
        &self,
        backends: u8,
        server: ServerKind,
        log: &mut dyn FnMut(&str),
    ) -> anyhow::Result<LabState> {
        self.up_with(
            &Setup {
                backends,
                frontends: DEFAULT_FRONTENDS,
                server,
                cluster: false,
                ipv6: false,
            },
            log,
        )
    }

    /// Brings the lab up. On any failure it removes what it made and reports the cause.
    pub fn up_with(&self, setup: &Setup, log: &mut dyn FnMut(&str)) -> anyhow::Result<LabState> {
        let Setup {
            backends,
            frontends,
            server,
            cluster,
            ipv6,
        } = *setup;
        if !(1..=MAX_BACKENDS).contains(&backends) {
            bail!("--backends must be between 1 and {MAX_BACKENDS}, not {backends}");
        }
        if !(1..=MAX_FRONTENDS).contains(&frontends) {
            bail!("--frontends must be between 1 and {MAX_FRONTENDS}, not {frontends}");
        }
        if ipv6 && frontends > 1 {
            bail!(
                "--ipv6 takes one front-end for now: the tier's BGP sessions and ECMP route carry IPv4 only"
            );
        }
        if frontends > 1 && !have("bird") {
            bail!(
                "--frontends {frontends} needs BIRD 2 (`bird`, `birdc`) for BGP between the router and the front-ends; run scripts/setup or `apt-get install bird2`"
            );
        }
        let left = self.existing_namespaces();
        if !left.is_empty() || self.state_dir().exists() {
            bail!(
                "lab `{}` is already up (or left over: {}); run `baton lab down` first",
                self.name,
                if left.is_empty() {
                    self.state_dir().display().to_string()
                } else {
                    left.join(", ")
                }
            );
        }
        require_root()?;
        let server = match server {
            ServerKind::Auto if have("nginx") => ServerKind::Nginx,
            ServerKind::Auto => {
                log(
                    "nginx is not installed (scripts/setup installs it); back-ends use Baton's built-in static server",
                );
                ServerKind::Builtin
            }
            ServerKind::Nginx if !have("nginx") => {
                bail!(
                    "--server nginx, but nginx is not installed; run scripts/setup or use --server builtin"
                )
            }
            other => other,
        };
        if ipv6 && server == ServerKind::Builtin {
            bail!(
                "--ipv6 needs nginx on the back-ends (the built-in server listens on IPv4 only); run scripts/setup"
            );
        }
        let state = LabState {
            name: self.name.clone(),
            backends,
            frontends,
            server,
            cluster,
            ipv6,
        };
        match self.try_up(&state, log).and_then(|()| {
            if cluster {
                cluster::start(self, &state, log)
            } else {
                Ok(())
            }
        }) {
            Ok(()) => Ok(state),
            Err(e) => {
                log("bring-up failed; removing what was made");
                let _ = self.down(&mut |_| {});
                Err(e)
            }
        }
    }

    fn try_up(&self, state: &LabState, log: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let started = Instant::now();
        let dir = self.state_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(self.state_file(), serde_json::to_string_pretty(state)?)?;

        let nodes = Node::all(state.backends, state.frontends);
        for &node in &nodes {
            let ns = self.namespace(node);
            netns::ip(&["netns", "add", &ns])?;
            netns::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // IPv6 off unless asked for: router solicitations, neighbour discovery and
            // MLD reports would muddy packet counts. On, the addresses are static
            // (no autoconfiguration, no router advertisements taken).
            let mut sysctls = if state.ipv6 {
                vec![
                    "net.ipv6.conf.all.accept_ra=0",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.all.autoconf=0",
                    "net.ipv6.conf.default.autoconf=0",
                ]
            } else {
                vec![
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]
            };
            if node == Node::Router {
                // The router forwards, and sees the VIP as a source address on the LAN side
                // when back-ends answer clients directly: loose reverse-path checks.
                sysctls.extend([
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    // ECMP over the tier by the 4-tuple (layer 4), not the addresses
                    // alone: one client's connections spread over the front-ends, and
                    // each stays on one while the set does not change.
                    "net.ipv4.fib_multipath_hash_policy=1",
                ]);
                if state.ipv6 {
                    sysctls.push("net.ipv6.conf.all.forwarding=1");
                }
            }
            if matches!(node, Node::Backend(_)) {
                // One-turn handoffs: the server takes the SYN''s request with TCP Fast
                // Open, without a cookie (0x202: server enabled, no cookie needed), on
                // listeners that ask for it (nginx's `fastopen=`). Set before the server
                // listens, which sizes its fast-open queue then
                // (docs/one-turn-handoff-notes.md).
                sysctls.push("net.ipv4.tcp_fastopen=0x202");
            }
            let mut args = vec!["netns", "exec", &ns, "sysctl", "-q", "-w"];
            args.extend(sysctls);
            netns::ip(&args)?;
        }
        log(&format!("namespaces: {} created", nodes.len()));
        // A BPF filesystem per front-end and back-end node, for the agents' pins, and one
        // for the lab's own (`lan`). `ip netns exec` gives each command a private /sys, so
        // /sys/fs/bpf would not outlive it; these mounts live in the host's mount
        // namespace, visible to every exec.
        for node in [Node::Lan]
            .into_iter()
            .chain(state.frontend_nodes())
            .chain((1..=state.backends).map(Node::Backend))
        {
            mount_bpffs(&self.bpffs(node))?;
        }

        let client = self.namespace(Node::Client);
        let router = self.namespace(Node::Router);
        let lan = self.namespace(Node::Lan);

        // client <-> router, a point-to-point link.
        veth(&client, "eth0", &router, "eth0")?;
        addr_up(&client, "eth0", CLIENT_ADDR, 24)?;
        // The client sends complete TCP checksums, as any host behind a real wire does:
        // with offload on, a veth passes on the bare pseudo-header sum, which the
        // front-end's fast path must send the slow way (baton-ebpf/src/frontend.rs).
        netns::run(
            "ip",
            &[
                "netns", "exec", &client, "ethtool", "-K", "eth0", "tx", "off",
            ],
        )
        .context("turning the client's checksum offload off")?;
        addr_up(&router, ROUTER_CLIENT_LINK, ROUTER_CLIENT_ADDR, 24)?;
        netns::ip(&[
            "-n",
            &client,
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_ADDR.to_string(),
        ])?;

        // The LAN: a bridge with no STP delay, so ports forward at once.
        netns::ip(&[
            "-n",
            &lan,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        netns::ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        let lan_port = |ns: &str, port: &str, addr: Ipv4Addr, iface: &str| -> anyhow::Result<()> {
            veth(ns, iface, &lan, port)?;
            netns::ip(&["-n", &lan, "link", "set", port, "master", "br0", "up"])?;
            addr_up(ns, iface, addr, 24)
        };
        lan_port(&router, "p-router", ROUTER_LAN_ADDR, "eth1")?;
        for node in state.frontend_nodes() {
            let fe = self.namespace(node);
            let port = format!("p-{node}");
            lan_port(
                &fe,
                &port,
                node.addr().expect("a front-end has one"),
                "eth0",
            )?;
            self.pass_xdp_tx_to_bridge_port(&lan, &port)?;
            netns::ip(&["-n", &fe, "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            netns::ip(&[
                "-n",
                &fe,
                "route",
                "add",
                "default",
                "via",
                &ROUTER_LAN_ADDR.to_string(),
            ])?;
        }
        if state.frontends == 1 {
            netns::ip(&[
                "-n",
                &router,
                "route",
                "add",
                &format!("{VIP}/32"),
                "via",
                &FE_ADDR.to_string(),
            ])?;
        } else {
            // The tier: the VIP is routed only where a front-end announces it.
            tier::start_bird(self, state)?;
        }
        for k in 1..=state.backends {
            let be = self.namespace(Node::Backend(k));
            lan_port(&be, &format!("p-be{k}"), backend_addr(k), "eth0")?;
            netns::ip(&[
                "-n",
                &be,
                "route",
                "add",
                "default",
                "via",
                &ROUTER_LAN_ADDR.to_string(),
            ])?;
        }
        if state.ipv6 {
            self.add_ipv6(state)?;
        }
        log(&format!(
            "network: client - router - LAN bridge - {}, be1..be{}{}{}",
            state
                .frontend_nodes()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            state.backends,
            if state.frontends > 1 {
                "; BIRD on the router and each front-end (BGP, BFD, ECMP)"
            } else {
                ""
            },
            if state.ipv6 {
                "; IPv6 beside IPv4 (2001:2::/48)"
            } else {
                ""
            }
        ));

        // A BPF filesystem per front-end and back-end node, for the agents' pins. `ip netns
        // exec` gives each command a private /sys, so /sys/fs/bpf would not outlive it;
        // these mounts live in the host's mount namespace, visible to every exec.

        let data = dir.join("data");
        let sums = webroot::write_data_files(&data)?;
        for k in 1..=state.backends {
            let node = Node::Backend(k);
            let root = dir.join(node.to_string()).join("www");
            webroot::write_site(&root, &node.to_string(), backend_addr(k), &data, &sums)?;
            match state.server {
                ServerKind::Builtin => self.start_builtin(node, &root)?,
                _ => self.start_nginx(node, &root, state.ipv6)?,
            }
        }
        let kind = if state.server == ServerKind::Builtin {
            "built-in server"
        } else {
            "nginx"
        };
        log(&format!(
            "web servers: {kind} on be1..be{} port {HTTP_PORT}",
            state.backends
        ));

        // Ready when the client can open a connection to every back-end through the router
        // (over both families with `--ipv6`).
        let deadline = Instant::now() + Duration::from_secs(10);
        let targets = (1..=state.backends).flat_map(|k| {
            let v4 = IpAddr::from(backend_addr(k));
            let v6 = state.ipv6.then(|| IpAddr::from(v6_for(backend_addr(k))));
            [Some((k, v4)), v6.map(|a| (k, a))].into_iter().flatten()
        });
        for (k, addr) in targets {
            let target = SocketAddr::from((addr, HTTP_PORT));
            let ok = netns::run_in(&client, || {
                loop {
                    if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                        return true;
                    }
                    if Instant::now() > deadline {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })?;
            if !ok {
                bail!(
                    "be{k} ({target}) did not accept connections from client within 10 s; see {}",
                    dir.join(format!("be{k}")).display()
                );
            }
        }
        log(&format!(
            "ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// `--ipv6`: every interface's IPv6 address beside its IPv4 one ([`v6_for`]), and
    /// the same routes: the client's and the LAN's default via the router, the VIP's via
    /// `fe`. Addresses skip duplicate address detection (the plan makes them unique), so
    /// they are usable at once.
    fn add_ipv6(&self, state: &LabState) -> anyhow::Result<()> {
        let add = |node: Node, iface: &str, v4: Ipv4Addr, prefix: u8| {
            netns::ip(&[
                "-n",
                &self.namespace(node),
                "-6",
                "addr",
                "add",
                &format!("{}/{prefix}", v6_for(v4)),
                "dev",
                iface,
                "nodad",
            ])
        };
        let route = |node: Node, to: &str, via: Ipv4Addr| {
            netns::ip(&[
                "-n",
                &self.namespace(node),
                "-6",
                "route",
                "add",
                to,
                "via",
                &v6_for(via).to_string(),
            ])
        };
        add(Node::Client, "eth0", CLIENT_ADDR, V6_PREFIX)?;
        route(Node::Client, "default", ROUTER_CLIENT_ADDR)?;
        add(
            Node::Router,
            ROUTER_CLIENT_LINK,
            ROUTER_CLIENT_ADDR,
            V6_PREFIX,
        )?;
        add(Node::Router, "eth1", ROUTER_LAN_ADDR, V6_PREFIX)?;
        add(Node::Fe, "eth0", FE_ADDR, V6_PREFIX)?;
        add(Node::Fe, "lo", VIP, 128)?;
        route(Node::Fe, "default", ROUTER_LAN_ADDR)?;
        route(Node::Router, &format!("{VIP6}/128"), FE_ADDR)?;
        for k in 1..=state.backends {
            add(Node::Backend(k), "eth0", backend_addr(k), V6_PREFIX)?;
            route(Node::Backend(k), "default", ROUTER_LAN_ADDR)?;
        }
        Ok(())
    }

    /// Attaches the lab's XDP pass program to `p-fe`, so frames the front-end's fast path
    /// sends back out with `XDP_TX` are received by the bridge (see `baton-ebpf/src/lab.rs`).
    /// The link is pinned in the `lan` node's BPF filesystem, so it outlives this process
    /// and goes with `lab down`. (`baton bench` removes it for the turns of systems
    /// without a fast path and puts it back for Baton's: a veth whose peer runs XDP
    /// loses TSO, which would slow down a front-end that sends, like HAProxy.)
    pub fn pass_xdp_tx_to_bridge(&self, lan: &str) -> anyhow::Result<()> {
        self.pass_xdp_tx_to_bridge_port(lan, "p-fe")
    }

    /// [`Lab::pass_xdp_tx_to_bridge`] for the bridge port `port` of any front-end.
    pub fn pass_xdp_tx_to_bridge_port(&self, lan: &str, port: &str) -> anyhow::Result<()> {
        let pin = self.bpffs(Node::Lan).join(format!("{port}-xdp"));
        netns::run_in(lan, || -> anyhow::Result<()> {
            let mut ebpf =
                aya::Ebpf::load(crate::ebpf::LAB).context("loading the lab's eBPF object")?;
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut("lab_xdp_pass")
                .context("program lab_xdp_pass missing")?
                .try_into()?;
            prog.load()?;
            let id = prog
                .attach(port, aya::programs::xdp::XdpMode::Driver)
                .with_context(|| format!("attaching XDP to {port}"))?;
            let link: aya::programs::links::FdLink = prog.take_link(id)?.try_into()?;
            link.pin(&pin)
                .with_context(|| format!("pinning {port}'s XDP link"))?;
            Ok(())
        })?
    }

    /// Makes every back-end's nginx serve its tree over TLS as well, on [`HTTPS_PORT`],
    /// HTTP/2 and HTTP/1.1 by ALPN, with the certificates `certs` says, and waits until
    /// each accepts connections from `client`. Needs nginx, not the built-in server. The
    /// server blocks go in each back-end's `conf.d/`, which `lab down` removes with the
    /// rest. Returns the CA file clients should trust (`curl --cacert`): the lab CA's,
    /// or the shared certificate itself.
    pub fn enable_tls(&self, certs: &TlsCerts) -> anyhow::Result<PathBuf> {
        let state = self.state()?;
        if state.server == ServerKind::Builtin {
            bail!("TLS back-ends need nginx; this lab runs the built-in server");
        }
        let (pairs, trust): (Vec<(PathBuf, PathBuf)>, PathBuf) = match certs {
            TlsCerts::Shared { cert, key } => {
                let pair = (
                    fs::canonicalize(cert).with_context(|| format!("{}", cert.display()))?,
                    fs::canonicalize(key).with_context(|| format!("{}", key.display()))?,
                );
                let trust = pair.0.clone();
                (vec![pair; usize::from(state.backends)], trust)
            }
            TlsCerts::PerBackend { names } => {
                let dir = self.state_dir().join("tls");
                fs::create_dir_all(&dir)?;
                let ca = LabCa::open_or_make(&dir, &self.name)?;
                let pairs = (1..=state.backends)
                    .map(|k| ca.issue(&dir, k, names))
                    .collect::<anyhow::Result<_>>()?;
                (pairs, ca.cert)
            }
        };
        for (k, (cert, key)) in (1..=state.backends).zip(&pairs) {
            let node = Node::Backend(k);
            let dir = self.state_dir().join(node.to_string());
            let root = dir.join("www");
            fs::create_dir_all(dir.join("conf.d"))?;
            fs::write(
                dir.join("conf.d/tls.conf"),
                format!(
                    "# Written by `baton lab tls` for {node}.\n\
                     server {{\n    listen {HTTPS_PORT} ssl http2 reuseport backlog=4096;\n    \
                     {listen6}server_name _;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                     root {};\n    index index.html index.json;\n    \
                     add_header X-Baton-Backend {node} always;\n}}\n",
                    cert.display(),
                    key.display(),
                    root.display(),
                    listen6 = if state.ipv6 {
                        format!("listen [::]:{HTTPS_PORT} ssl http2 reuseport backlog=4096;\n    ")
                    } else {
                        String::new()
                    },
                ),
            )?;
            netns::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.namespace(node),
                    "nginx",
                    "-e",
                    &dir.join("logs/error.log").to_string_lossy(),
                    "-c",
                    &dir.join("nginx.conf").to_string_lossy(),
                    "-s",
                    "reload",
                ],
            )
            .with_context(|| format!("reloading nginx on {node} with TLS"))?;
        }
        // A reload starts new workers asynchronously: wait for the port.
        let client = self.namespace(Node::Client);
        let deadline = Instant::now() + Duration::from_secs(10);
        for k in 1..=state.backends {
            let target = SocketAddr::from((backend_addr(k), HTTPS_PORT));
            let ok = netns::run_in(&client, || {
                loop {
                    if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                        return true;
                    }
                    if Instant::now() > deadline {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })?;
            if !ok {
                bail!("be{k} did not accept TLS connections on {target} within 10 s");
            }
        }
        Ok(trust)
    }

    fn start_nginx(&self, node: Node, root: &Path, ipv6: bool) -> anyhow::Result<()> {
        let dir = root.parent().expect("www has a parent");
        for sub in ["tmp", "logs", "conf.d"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        // Where `PUT /upload/NAME` stores bodies (nginx.conf), as nginx's unprivileged
        // workers.
        let upload = root.join("upload");
        fs::create_dir_all(&upload)?;
        fs::set_permissions(
            &upload,
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
        )?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, nginx_conf(&node.to_string(), dir, root, ipv6))?;
        // nginx forks into the background: nothing of this process must go with it.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(node), "nginx", "-e"])
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        detach(&mut cmd);
        let out = cmd
            .output()
            .with_context(|| format!("starting nginx on {node}: is it installed?"))?;
        if !out.status.success() {
            bail!(
                "starting nginx on {node} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn start_builtin(&self, node: Node, root: &Path) -> anyhow::Result<()> {
        let dir = root.parent().expect("www has a parent");
        let log = fs::File::create(dir.join("server.log"))?;
        let exe = std::env::current_exe().context("finding the baton binary")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(node)])
            .arg(exe)
            .args(["lab", "serve", "--backend", &node.to_string(), "--root"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // `lab down` finds it by namespace.
        detach(&mut cmd);
        cmd.spawn()
            .with_context(|| format!("starting the built-in server on {node}"))?;
        Ok(())
    }

    /// Removes every namespace, process and file of the lab. Works on a healthy lab, a
    /// half-made one and the remains of a crash; does nothing if there is nothing.
    pub fn down(&self, log: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let namespaces = self.existing_namespaces();
        // Processes first: a namespace file can go while processes keep the namespace alive.
        let pids: Vec<i32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for &pid in pids.iter().filter(|&&p| netns::running(p)) {
                // SAFETY: plain syscall on a pid the kernel listed in the lab's namespace.
                unsafe { libc::kill(pid, sig) };
            }
            // A process leaves its namespace before it has finished exiting; wait for the
            // exit itself so that nothing of the lab still runs when `down` returns.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && pids.iter().any(|&p| netns::running(p)) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let killed = pids.len();
        // The lock files its daemons left if they were killed ([`crate::daemon_lock`]):
        // keyed by these namespaces (gone in a moment) and by pins in the lab's folder.
        let inodes: Vec<u64> = namespaces
            .iter()
            .filter_map(|ns| fs::metadata(format!("/run/netns/{ns}")).ok())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .collect();
        let pins = format!("pins-run_{}-lab_", self.name);
        crate::daemon_lock::remove_unheld(Path::new(crate::daemon_lock::RUN_DIR), |name| {
            name.starts_with(&pins)
                || inodes
                    .iter()
                    .any(|ino| name.ends_with(&format!("-netns{ino}.lock")))
        });
        for ns in &namespaces {
            netns::ip(&["netns", "del", ns])?;
        }
        let dir = self.state_dir();
        let mounts = unmount_below(&dir)?;
        let had_files = dir.exists();
        if had_files {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        if namespaces.is_empty() && !had_files {
            log(&format!("lab `{}` is not up; nothing to remove", self.name));
        } else {
            log(&format!(
                "lab `{}` removed: {} namespaces, {killed} processes, {mounts} mounts, {}",
                self.name,
                namespaces.len(),
                if had_files {
                    dir.display().to_string()
                } else {
                    "no files".into()
                }
            ));
        }
        Ok(())
    }

    /// Replaces this process with `cmd` run inside `node`'s namespace.
    pub fn exec(&self, node: &str, cmd: &[String]) -> anyhow::Result<std::convert::Infallible> {
        let state = self.state()?;
        let node = Node::parse(node, state.backends, state.frontends)?;
        if cmd.is_empty() {
            bail!("nothing to run: baton lab exec {node} -- COMMAND [ARGS...]");
        }
        // `ip netns exec` also gives the command a /sys of the namespace's own interfaces.
        let err = Command::new("ip")
            .args(["netns", "exec", &self.namespace(node)])
            .args(cmd)
            .exec();
        Err(err).context("running `ip netns exec`")
    }

    /// What is up: nodes, their addresses and processes.
    pub fn status(&self) -> anyhow::Result<Status> {
        let state = self.state()?;
        let nodes = Node::all(state.backends, state.frontends)
            .into_iter()
            .map(|node| {
                let ns = self.namespace(node);
                NodeStatus {
                    node: node.to_string(),
                    namespace: ns.clone(),
                    up: netns::exists(&ns),
                    addr: node.addr().map(|a| a.to_string()),
                    processes: netns::pids(&ns).len(),
                }
            })
            .collect();
        let vip_next_hops = tier::vip_next_hops(self).unwrap_or_default();
        Ok(Status {
            state,
            vip: VIP.to_string(),
            vip_next_hops,
            nodes,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub namespace: String,
    pub up: bool,
    pub addr: Option<String>,
    pub processes: usize,
}

#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub state: LabState,
    pub vip: String,
    /// Where the router sends the VIP now: one address per front-end that announces it
    /// (the static route's one in a lab without a tier).
    pub vip_next_hops: Vec<Ipv4Addr>,
    pub nodes: Vec<NodeStatus>,
}

fn mount_bpffs(at: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(at)?;
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid C strings; a fresh bpf filesystem instance on a directory we made.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting a BPF filesystem on {}", at.display()));
    }
    Ok(())
}

/// Unmounts every mount at or below `dir` (deepest first), also those a crashed run left.
fn unmount_below(dir: &Path) -> anyhow::Result<usize> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in &points {
        let target = std::ffi::CString::new(point.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid C string; MNT_DETACH so a busy mount still goes.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("unmounting {}", point.display()));
        }
    }
    Ok(points.len())
}

fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> anyhow::Result<()> {
    // Created straight into both namespaces, so no name ever appears in the host's.
    netns::ip(&[
        "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ])?;
    netns::ip(&["-n", ns_b, "link", "set", b, "up"])
}

fn addr_up(ns: &str, iface: &str, addr: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    netns::ip(&["-n", ns, "link", "set", iface, "address", &mac_for(addr)])?;
    netns::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/{prefix}"),
        "dev",
        iface,
    ])?;
    netns::ip(&["-n", ns, "link", "set", iface, "up"])
}

/// For a process the lab leaves running: its own session, so it outlives `baton lab up`
/// and ignores the terminal's signals, and none of this process's descriptors but the
/// three standard ones. An inherited descriptor would live as long as the daemon: a
/// caller's `flock` on a lock file, say, held until `lab down`.
pub(crate) fn detach(cmd: &mut Command) {
    // SAFETY: setsid and close_range are async-signal-safe system calls that touch no
    // memory of ours. Marked close-on-exec rather than closed, so that the standard
    // library's own pipe, which reports a failed exec, still works.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
}

/// `linux/close_range.h`.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || Path::new("/usr/sbin").join(program).is_file()
}

pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, veth, eBPF); run as root");
    }
    Ok(())
}

fn nginx_conf(node: &str, dir: &Path, root: &Path, ipv6: bool) -> String {
    let d = dir.display();
    let r = root.display();
    // The same listener on IPv6 with `--ipv6` (nginx makes `[::]` IPv6-only).
    let listen6 = if ipv6 {
        format!("\n        listen [::]:{HTTP_PORT} reuseport backlog=4096 fastopen=256;")
    } else {
        String::new()
    };
    format!(
        r#"# Generated by `baton lab up` for {node}; removed by `baton lab down`.
daemon on;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{
        text/html html; application/json json; text/css css; application/javascript js;
        image/svg+xml svg; image/jpeg jpg jpeg; image/png png; text/plain txt;
        application/octet-stream bin;
    }}
    default_type application/octet-stream;
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        # fastopen: the one-turn handoff's request, carried by the SYN', taken at once.
        listen {HTTP_PORT} reuseport backlog=4096 fastopen=256;{listen6}
        server_name _;
        root {r};
        index index.html index.json;
        add_header X-Baton-Backend {node} always;
        # Uploads: `PUT /upload/NAME` stores the body as www/upload/NAME (201), so a test
        # can send a large request body and check what arrived.
        location /upload/ {{
            dav_methods PUT;
            client_max_body_size 256m;
        }}
    }}
    # More servers, such as the TLS one `baton lab tls` adds.
    include {d}/conf.d/*.conf;
}}
"#
    )
}

/// Which certificates [`Lab::enable_tls`] gives the back-ends.
#[derive(Debug, Clone)]
pub enum TlsCerts {
    /// Each back-end its own, made now: subject `CN=beK`, names `beK`, its address,
    /// `baton.test`, `*.baton.test` and `names`, signed by the lab's CA
    /// (`/run/<lab>-lab/tls/ca.pem`, made on first use and kept until `lab down`). A
    /// client that trusts the CA sees at the TLS layer which back-end answered.
    PerBackend { names: Vec<String> },
    /// One certificate chain and key (PEM) for every back-end.
    Shared { cert: PathBuf, key: PathBuf },
}

/// The lab's certificate authority: a self-signed P-256 certificate and its key, in the
/// lab's `tls/` folder.
struct LabCa {
    cert: PathBuf,
    key: PathBuf,
}

/// How long the lab's certificates are valid: the lab lives hours, not months.
const LAB_CERT_DAYS: &str = "30";

impl LabCa {
    /// The CA in `dir`, made if missing.
    fn open_or_make(dir: &Path, lab: &str) -> anyhow::Result<Self> {
        let ca = Self {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        };
        if ca.cert.exists() && ca.key.exists() {
            return Ok(ca);
        }
        let subject = format!("/CN=Baton lab {lab} CA");
        let cert = ca.cert.to_string_lossy().into_owned();
        let key = ca.key.to_string_lossy().into_owned();
        netns::run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                LAB_CERT_DAYS,
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &key,
                "-out",
                &cert,
            ],
        )
        .context("making the lab's CA")?;
        Ok(ca)
    }

    /// Makes back-end `k`'s key and certificate in `dir` (`beK.key`, `beK.pem`), signed
    /// by this CA; returns (certificate, key).
    fn issue(&self, dir: &Path, k: u8, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let node = Node::Backend(k).to_string();
        let (cert, key, csr, ext) = (
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
            dir.join(format!("{node}.csr")),
            dir.join(format!("{node}.ext")),
        );
        let mut san = vec![
            format!("DNS:{node}"),
            format!("IP:{}", backend_addr(k)),
            "DNS:baton.test".to_string(),
            "DNS:*.baton.test".to_string(),
        ];
        san.extend(names.iter().map(|n| format!("DNS:{n}")));
        fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n\
                 subjectAltName={}\n",
                san.join(",")
            ),
        )?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        netns::run(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={node}"),
                "-keyout",
                &path(&key),
                "-out",
                &path(&csr),
            ],
        )
        .with_context(|| format!("making {node}'s key"))?;
        netns::run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &path(&csr),
                "-CA",
                &path(&self.cert),
                "-CAkey",
                &path(&self.key),
                "-set_serial",
                &format!("{}", u64::from(k) << 32 | u64::from(std::process::id())),
                "-days",
                LAB_CERT_DAYS,
                "-extfile",
                &path(&ext),
                "-out",
                &path(&cert),
            ],
        )
        .with_context(|| format!("signing {node}'s certificate with the lab's CA"))?;
        let _ = fs::remove_file(&csr);
        let _ = fs::remove_file(&ext);
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_reject_unknowns() {
        for frontends in [1, MAX_FRONTENDS] {
            for node in Node::all(32, frontends) {
                assert_eq!(Node::parse(&node.to_string(), 32, frontends).unwrap(), node);
            }
        }
        for bad in [
            "be0", "be4", "be01", "be", "host", "BE1", "be+1", "fe1", "fe0",
        ] {
            assert!(Node::parse(bad, 3, 1).is_err(), "{bad} accepted");
        }
        for bad in ["fe", "fe0", "fe3", "fe01"] {
            assert!(
                Node::parse(bad, 3, 2).is_err(),
                "{bad} accepted in a tier of 2"
            );
        }
    }

    #[test]
    fn plan_stays_in_the_benchmarking_range_and_is_unique() {
        for frontends in [1, MAX_FRONTENDS] {
            plan_is_unique(frontends);
        }
        assert_eq!(backend_addr(32), Ipv4Addr::new(198, 18, 1, 42));
        assert_eq!(mac_for(backend_addr(1)), "02:ba:70:12:01:0b");
        assert_eq!(frontend_addr(1), FE_ADDR);
        assert!(frontend_addr(MAX_FRONTENDS) < backend_addr(1));
    }

    /// Every address once, but the VIP, which every front-end of a tier holds.
    fn plan_is_unique(frontends: u8) {
        let plan = plan(MAX_BACKENDS, frontends);
        let mut seen = std::collections::HashSet::new();
        for i in plan
            .iter()
            .filter(|i| !i.addr.is_empty() && !i.addr.starts_with(&VIP.to_string()))
        {
            let addr: Ipv4Addr = i.addr.split('/').next().unwrap().parse().unwrap();
            let [a, b, ..] = addr.octets();
            assert!(
                a == 198 && (b == 18 || b == 19),
                "{addr} outside 198.18.0.0/15"
            );
            assert!(seen.insert(addr), "{addr} used twice");
        }
        // The IPv6 plan: beside each IPv4 address of a lab with one front-end (the
        // tier's BGP carries IPv4 only), in 2001:2::/48, unique.
        let mut seen6 = std::collections::HashSet::new();
        for i in plan.iter().filter(|i| !i.addr.is_empty()) {
            if frontends > 1 {
                assert_eq!(i.addr6, "", "{i:?}");
                continue;
            }
            let addr: Ipv4Addr = i.addr.split('/').next().unwrap().parse().unwrap();
            let addr6: Ipv6Addr = i.addr6.split('/').next().unwrap().parse().unwrap();
            assert_eq!(addr6, v6_for(addr));
            let [a, b, c, ..] = addr6.segments();
            assert_eq!((a, b, c), (0x2001, 2, 0), "{addr6} outside 2001:2::/48");
            if !i.addr.starts_with(&VIP.to_string()) {
                assert!(seen6.insert(addr6), "{addr6} used twice");
            }
        }
    }

    #[test]
    fn ipv6_addresses_follow_the_ipv4_plan() {
        assert_eq!(
            v6_for(CLIENT_ADDR),
            "2001:2::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            v6_for(backend_addr(32)),
            "2001:2:0:1::2a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(VIP6, "2001:2:0:2::1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn lab_names_are_checked() {
        assert!(Lab::named("baton").is_ok());
        assert!(Lab::named("").is_err());
        assert!(Lab::named("../etc").is_err());
        assert_eq!(
            Lab::named("t1").unwrap().namespace(Node::Backend(2)),
            "t1-be2"
        );
    }
}
