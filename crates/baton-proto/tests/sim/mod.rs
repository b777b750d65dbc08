//! Deterministic simulation harness for the handoff (issue 3, item 5).
//!
//! - [`rng`]: a seeded PRNG; every random choice derives from the scenario's `u64` seed.
//! - [`net`]: the network: per-hop delay, jitter (reordering), loss and duplication, and
//!   targeted drop rules; it verifies every packet's checksums at every hop.
//! - [`host`]: smoltcp client and back-end servers over `Medium::Ip` devices.
//! - [`fast_open`]: a stand-in for Linux's TCP Fast Open server path in front of the
//!   back-ends' smoltcp, which has none, for the one-turn handoff's SYN'+data.
//! - [`backend_module`]: the back-end's tc programs, in Rust, on `baton_common`'s code.
//! - [`standin`]: the harness self-test's stand-in front-end (not the handoff).
//! - [`front`]: the real front-end state machine as a node, with the XDP fast path.
//! - [`world`]: nodes, routing, the virtual clock and the event loop; monitors for PAWS,
//!   ACK/SACK/TSecr translation and windows; the failure report.
//!
//! No wall clock, no thread, no unseeded randomness: a failing seed replays exactly.

pub mod backend_module;
pub mod fast_open;
pub mod front;
pub mod host;
pub mod net;
pub mod packet;
pub mod rng;
pub mod standin;
pub mod world;

use std::time::Duration;

use host::{ClientApp, ClientSpec, Expect, ServerApp, ServerSpec, TcpHost, response_for};
use net::{LinkFaults, Network, NodeId};
use packet::Family;
use rng::SimRng;
use world::{Addrs, BackendMonitor, BackendNode, ClientMonitor, ClientNode, FrontNode, World};

std::thread_local! {
    /// The family of the scenario running on this thread ([`over_both_families`]): what
    /// [`SimConfig::new`] builds its world in. Each test runs on a thread of its own.
    static FAMILY: std::cell::Cell<Family> = const { std::cell::Cell::new(Family::V4) };
}

/// Runs `scenario` over IPv4, then over IPv6: every world it builds (through
/// [`SimConfig::new`]) is of the family of the run. A failure names the family.
/// `BATON_SIM_FAMILIES=v4` (or `v6`) runs one of them, to time or debug it alone.
pub fn over_both_families(scenario: impl Fn()) {
    let chosen = std::env::var("BATON_SIM_FAMILIES").unwrap_or_default();
    let families = match chosen.as_str() {
        "v4" => &[Family::V4][..],
        "v6" => &[Family::V6][..],
        _ => &[Family::V4, Family::V6][..],
    };
    for &family in families {
        FAMILY.set(family);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&scenario));
        FAMILY.set(Family::V4);
        if let Err(panic) = run {
            eprintln!("the scenario failed over {family:?}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// The family of the scenario running on this thread.
pub fn current_family() -> Family {
    FAMILY.get()
}

/// Runs `scenario` over IPv4 only, for `why` (a part that has no IPv6 path yet); not at
/// all with `BATON_SIM_FAMILIES=v6`.
pub fn over_ipv4_only(why: &str, scenario: impl Fn()) {
    if std::env::var("BATON_SIM_FAMILIES").is_ok_and(|f| f == "v6") {
        println!("IPv4 only: {why}");
        return;
    }
    FAMILY.set(Family::V4);
    scenario();
}

/// The key the front-end and back-ends share for the handoff option's tag.
pub const HANDOFF_KEY: [u8; 16] = *b"baton-sim-key-01";

/// The service port.
pub const HTTP_PORT: u16 = 80;

/// A plain HTTP/1.1 GET.
pub fn http_get(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: baton-sim\r\n\
         Accept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// Everything a scenario chooses.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub scenario: String,
    pub seed: u64,
    pub backends: usize,
    /// Back-ends that never answer (their index).
    pub silent_backends: Vec<usize>,
    /// Back-ends with nothing listening: they reset every SYN (their index).
    pub refusing_backends: Vec<usize>,
    pub request: Vec<u8>,
    /// See [`ClientSpec::parts`].
    pub request_parts: Vec<usize>,
    pub body_len: usize,
    /// `None`: the back-end's exact response.
    pub expect: Option<Expect>,
    pub client_timestamps: bool,
    pub server_timestamps: bool,
    pub strip_sack_permitted: bool,
    /// See [`ClientNode::linux_timestamps`].
    pub client_linux_timestamps: bool,
    /// Receive buffers; a buffer of 2^(16+n) bytes makes smoltcp announce shift n.
    pub client_rx: usize,
    pub server_rx: usize,
    pub server_tx: usize,
    /// The client half-closes as soon as its request is written (see
    /// [`ClientSpec::half_close`]).
    pub client_half_close: bool,
    /// One-way delay between the client and the lab (router), and on the LAN.
    pub wan_delay: Duration,
    pub lan_delay: Duration,
    /// The back-ends take data on a SYN (`tcp_fastopen = 0x202` and a `fastopen`
    /// listener, as the lab sets them up), through [`fast_open`]; off, they acknowledge
    /// only the SYN.
    pub backend_fast_open: bool,
    /// The back-end modules complete their servers' handshakes themselves
    /// (`complete_handshake` in the agent's configuration, on by default).
    pub backend_complete_handshake: bool,
    /// How long the back-ends' application takes to answer a request.
    pub response_delay: Duration,
    /// The world's address family: every host, the VIP and every back-end of it.
    pub family: Family,
}

impl SimConfig {
    pub fn new(scenario: &str, seed: u64) -> Self {
        Self {
            scenario: scenario.to_string(),
            seed,
            backends: 1,
            silent_backends: Vec::new(),
            refusing_backends: Vec::new(),
            request: http_get("/download/1m.bin"),
            request_parts: Vec::new(),
            body_len: 1 << 20,
            expect: None,
            client_timestamps: true,
            server_timestamps: true,
            strip_sack_permitted: false,
            client_linux_timestamps: false,
            client_rx: 256 * 1024,
            server_rx: 64 * 1024,
            server_tx: 256 * 1024,
            client_half_close: false,
            wan_delay: Duration::from_millis(5),
            lan_delay: Duration::from_micros(100),
            backend_fast_open: true,
            backend_complete_handshake: true,
            response_delay: Duration::ZERO,
            family: FAMILY.get(),
        }
    }

    /// The response body the back-ends serve: pseudo-random, so a misplaced segment
    /// cannot go unnoticed.
    pub fn body(&self) -> Vec<u8> {
        SimRng::new(self.seed ^ 0x0b0d_7b0d_7b0d_7b0d).bytes(self.body_len)
    }

    /// The window shift smoltcp announces for a receive buffer of `rx` bytes.
    pub fn smoltcp_shift(rx: usize) -> u8 {
        (usize::BITS - 1 - rx.leading_zeros()).saturating_sub(16) as u8
    }
}

/// Builds the lab for `cfg`; `front` makes the front-end node from the addresses.
pub fn build_world(cfg: &SimConfig, front: impl FnOnce(&Addrs) -> Box<dyn FrontNode>) -> World {
    let mut rng = SimRng::new(cfg.seed);
    let addrs = Addrs::lab_in(cfg.family, cfg.backends);
    let mut net = Network::new(rng.fork(), LinkFaults::clean(cfg.lan_delay));
    for hop in [
        (NodeId::Client, NodeId::FrontEnd),
        (NodeId::FrontEnd, NodeId::Client),
    ] {
        net.set_hop(hop.0, hop.1, LinkFaults::clean(cfg.wan_delay));
    }
    for i in 0..cfg.backends {
        net.set_hop(
            NodeId::Backend(i),
            NodeId::Client,
            LinkFaults::clean(cfg.wan_delay),
        );
    }
    let body = cfg.body();
    let expect = cfg
        .expect
        .clone()
        .unwrap_or_else(|| Expect::Exact(response_for(&cfg.request, &body)));

    // Clocks: each host's TSval starts at a random point, so ts_delta is arbitrary and
    // wraps at 2^32 in some seeds.
    let client_ts = rng.next_u32();
    let mut client_host = TcpHost::new(addrs.client, addrs.client_gw, &mut rng, client_ts);
    let spec = ClientSpec {
        port: 49_152 + rng.below(16_000) as u16,
        request: cfg.request.clone(),
        parts: cfg.request_parts.clone(),
        expect,
        rx_buffer: cfg.client_rx,
        tx_buffer: 64 * 1024,
        timestamps: cfg.client_timestamps,
        half_close: cfg.client_half_close,
    };
    let app = ClientApp::connect(&mut client_host, spec, addrs.vip, HTTP_PORT);
    let client = ClientNode {
        host: client_host,
        app,
        monitor: ClientMonitor::default(),
        strip_sack_permitted: cfg.strip_sack_permitted,
        linux_timestamps: cfg.client_linux_timestamps,
    };

    let backends = (0..cfg.backends)
        .map(|i| {
            let ts_offset = rng.next_u32();
            let mut host = TcpHost::new(addrs.backends[i], addrs.lan_gw, &mut rng, ts_offset);
            host.set_fast_open(cfg.backend_fast_open);
            let server = ServerApp::listen(
                &mut host,
                ServerSpec {
                    port: HTTP_PORT,
                    rx_buffer: cfg.server_rx,
                    tx_buffer: cfg.server_tx,
                    timestamps: cfg.server_timestamps,
                    body: body.clone(),
                    response_delay: cfg.response_delay,
                },
            );
            BackendNode {
                host,
                server,
                module: {
                    let mut module = backend_module::BackendModule::new(
                        HANDOFF_KEY,
                        addrs.backends[i],
                        addrs.vip,
                        HTTP_PORT,
                    );
                    if cfg.backend_complete_handshake {
                        module.config_flags |=
                            baton_common::backend::BackendConfig::COMPLETE_HANDSHAKE;
                    }
                    module
                },
                monitor: BackendMonitor::default(),
                silent: cfg.silent_backends.contains(&i),
                refusing: cfg.refusing_backends.contains(&i),
                ingress_drops: Vec::new(),
            }
        })
        .collect();
    let front = front(&addrs);
    World {
        seed: cfg.seed,
        scenario: cfg.scenario.clone(),
        now: Duration::ZERO,
        addrs,
        net,
        client,
        front,
        backends,
        steps: 0,
    }
}
