//! The XDP fast path, from the daemon's side: loads the embedded `baton-frontend` object
//! (see `crates/baton-ebpf/src/frontend.rs` for the program and why it is XDP), attaches
//! it to the LAN interface in native (driver) mode, writes its configuration and its
//! services, and keeps its flow table in step with the protocol core's events: a flow
//! goes in when its request goes to the back-end (`Event::RequestSent`, marked as
//! awaiting the back-end's answer), is updated when it is handed off
//! (`Event::HandedOff`) and goes out when it is closed or reset, after its grace period.
//! What the program forwards or takes in that the core must know of (a client's FIN or
//! RST at the expected sequence number, the client's acknowledgement of the back-end's
//! answer) comes back through its notices ring
//! ([`FastPath::note_flow_notices`]). docs/design.md, "Packet walk", steps 7 to 9, and
//! "The notices ring", tell the whole story.
//!
//! **Failure is not fatal.** The slow path forwards handed-off flows correctly on its
//! own, so if the object cannot be loaded or attached (an old kernel, a driver without
//! native XDP, a verifier refusal, a `pin_dir` that is not on a BPF filesystem) the
//! daemon logs `fastpath_unavailable` with the reason, counts it, and runs without.
//! Generic (skb-mode) XDP is never used as a fallback: it keeps `CHECKSUM_PARTIAL`
//! through `XDP_TX`, which would corrupt the complete checksums the program writes.
//!
//! **Lifetime: pinned.** The maps and the XDP link are pinned in
//! `<pin_dir>/frontend-<interface>/` (`flows`, `config`, `stats`, `slow_path_reasons`,
//! `notices`, `secret`, `link_xdp`),
//! so they outlive the daemon: while the link's pin exists the program stays attached
//! and handed-off flows go on forwarding, whether a daemon runs or not. The services and
//! SYN-cookie maps are not pinned: each daemon writes its own; nor is the half-open map
//! (handshakes under way are not carried over; see [`FastPath::half_open_syns`]). At start,
//! [`FastPath::prepare`] finds the pins (or makes them) and loads this build's program
//! against the pinned maps; [`FastPath::start`] rewrites the configuration and replaces the program in the
//! existing link atomically (`BPF_LINK_UPDATE`), so not a packet is lost;
//! [`FastPath::adopt_pinned`] then hands every flow found in the table to the protocol
//! core ([`FrontEnd::adopt`]), which goes on tracking it (FINs, RSTs, the notices left
//! in the ring while no daemon ran) and raises its `Closed` or `Reset` event in time,
//! which removes it. [`FastPath::detach`] (`baton frontend --detach`) removes the pins,
//! which detaches the program and frees the maps. docs/design.md, "Restarts, upgrades
//! and locks".
//!
//! **What a flow's value carries for that** (`baton_common::frontend::FrontendFlow`):
//! the back-end (address, port, MAC: the program's), the client's next sequence number
//! (`client_next`, which the program advances and the core reads back on adoption), and
//! for the core the client's ISN and the state of the close (the client's FIN seen,
//! reset). The
//! daemon writes the close state when the core's changes (at each
//! [`FastPath::scan_activity`], every second, and at exit), so a successor — even one
//! started after a crash — resumes close tracking where the previous daemon left it: a
//! connection in its grace period leaves the table after one, not at the idle timeout
//! an hour later, and a client reusing its port gets a handshake of its own rather than
//! the old back-end.
//!
//! **Activity.** The program stamps each flow with the time of its last forwarded
//! packet (`CLOCK_MONOTONIC`, the daemon's clock too); [`FastPath::scan_activity`] reads
//! the stamps of the flows the daemon installed or adopted and tells the core, which
//! would otherwise time the quiet-to-it flows out as idle, and end the grace period of
//! a client still acknowledging a server that sends after its half-close.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs,
    net::{Ipv4Addr, SocketAddrV4, SocketAddrV6},
    path::Path,
};

use anyhow::Context as _;
use aya::{
    EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use baton_common::{
    frontend::{
        FlowNotice, FrontendConfig, FrontendFlow, FrontendFlowKey, FrontendService,
        NOTICE_RING_SIZE, stat,
    },
    kernel_dispatch::{HANDOFF_RING_SIZE, KernelHandoffConfig, KernelHandoffRecord, reason},
    siphash::SipKey,
    stamp::{self, StampConfig, StampedBackend},
    syncookie::SynCookieConfig,
};
use baton_proto::frontend::{
    Backend, FlowKey, FrontEnd, Handover, Instant, ResetReason, StateName,
};

use super::log;
use crate::pins::Pins;

mod half_open;
mod pins;
mod sys;
pub use sys::interface_mtu;
mod handoff_v6;
mod table;
mod v6;

pub use half_open::HalfOpenLookup;
use half_open::HalfOpenMap;
use pins::check_pinned_maps;
pub use pins::{DEFAULT_PIN_DIR, forget_pinned_flows, pinned_flow_count, pinned_flow_count_v6};
use sys::{Neighbours, interface_mac};
use table::{FlowBatch, delete_all, write_close_state};
pub use v6::FastPathV6;

/// Most notices or handoff records read in one call ([`FastPath::note_flow_notices`],
/// [`FastPath::note_kernel_handoffs`]) before the caller applies the core's outputs.
/// Each may emit a few events (a record: the old connection's end and the new one's
/// `RequestSent`; a notice: a completed handoff), and the core's output queue holds
/// `max_pending_outputs` (8192 by default). Under load a ring holds thousands of
/// records (it wakes the daemon only every 32 KiB, `HANDOFF_WAKE_BYTES`), and read in
/// one go they would overflow the queue. Small, so that the notices (read before each
/// batch of records) give back the table's slots as fast as the records take them.
pub const NEWS_BATCH: usize = 32;

/// Most notices one ring can hold (`NOTICE_RING_SIZE`; the smallest, an IPv4
/// [`FlowNotice`], takes 32 bytes with the ring's header and alignment). Reading this many
/// from a ring reads every notice that was in it when the reading began.
pub const NOTICES_IN_A_FULL_RING: usize = NOTICE_RING_SIZE as usize / 32;

/// Most handoff records the ring can hold (`HANDOFF_RING_SIZE`; the smallest is 64 bytes:
/// the ring's 8-byte header, a [`KernelHandoffRecord`] and a 40-byte IPv4 and TCP header).
pub const RECORDS_IN_A_FULL_RING: usize = HANDOFF_RING_SIZE as usize / 64;

/// How long a notice held for a connection whose record is still to be read waits at
/// least (`FastPath::note_flow_notices`). Held by the connection's client ISN, a notice
/// can never be applied to another connection, so this only bounds how long one whose
/// record never comes (its connection freed already) is kept.
///
/// Time alone cannot tell a record that never comes from one the daemon has not reached:
/// a daemon behind the rings (a debug build under `wrk`, seen in CI) read notices seconds
/// before their records, dropped them after 2 s, and lost the client FINs they carried.
/// So a held notice is dropped only once the records ring has also been read to its end
/// at least [`RECORD_COMMIT_GRACE`] after the notice was read: its record, written before
/// it, would have been read by then.
const PENDING_NOTICE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2);

/// How long after a notice is read the records ring must still be read to its end before
/// the notice counts as of no record. A record another CPU is still writing hides the
/// ring past it for the few microseconds the program takes to commit it; this is ample.
const RECORD_COMMIT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// How often the held notices are swept for expired ones. A sweep walks every held
/// notice; made at each batch of notices, as it once was, a daemon lagging behind the
/// rings (thousands held) spent its time sweeping rather than reading the records that
/// would release them, and fell further behind: quadratic. A notice then lives at most
/// this much past its lifetime.
const PENDING_NOTICE_SWEEP: std::time::Duration = std::time::Duration::from_millis(100);

/// Most notices held at once; past it one is dropped (counted as of an unknown flow).
const MAX_PENDING_NOTICES: usize = 65_536;

/// Whether a notice held since `held_at` names a connection whose record will never come:
/// it has waited [`PENDING_NOTICE_LIFETIME`], and the records ring was read to its end
/// (at `drained_at`) long enough after the notice ([`RECORD_COMMIT_GRACE`]) that its
/// record, written before it, would have been read.
fn notice_has_no_record(held_at: Instant, now: Instant, drained_at: Instant) -> bool {
    now.saturating_duration_since(held_at) >= PENDING_NOTICE_LIFETIME
        && drained_at.saturating_duration_since(held_at) >= RECORD_COMMIT_GRACE
}

/// The daemon's fast-path bookkeeping, printed with the other counters at exit.
#[derive(Debug, Default)]
pub struct FastPathStats {
    /// 1 when the program could not be loaded or attached (see `fastpath_unavailable`).
    pub load_failed: u64,
    /// Flows found in the pinned table at start (left by a previous daemon).
    pub flows_found: u64,
    /// Of those, flows the protocol core adopted.
    pub flows_adopted: u64,
    /// Of those, flows the core refused (table full, another service), removed.
    pub adoptions_refused: u64,
    /// Flows inserted into the XDP table.
    pub flows_installed: u64,
    /// Handed-off flows left to the slow path: the table refused the insert.
    pub install_failed: u64,
    /// Handed-off flows left to the slow path: the back-end's MAC was not in the
    /// neighbour table (not on the interface's link).
    pub no_neighbour: u64,
    /// Flows removed after a close or reset.
    pub flows_removed: u64,
    /// Flows whose entry the program had removed before their close reached the daemon:
    /// their client opened a new connection on the ports (`closed_flow_replaced`).
    pub flows_replaced_by_fast_path: u64,
    /// Times the core was told a flow is alive because the fast path forwarded for it.
    pub activity_noted: u64,
    /// Close states written to the table for a successor to resume from.
    pub close_states_recorded: u64,
    /// System calls that deleted closed flows' entries (`BPF_MAP_DELETE_BATCH`), each
    /// for all the flows a batch of the core's outputs closed.
    pub removal_batches: u64,
    /// Entries a failed batch delete left in the table.
    pub removals_failed: u64,
    /// Whole-table reads of the activity scan (one per second).
    pub batch_reads: u64,
    /// Scans whose batch read the kernel refused (activity not noted for that scan).
    pub batch_read_errors: u64,
    /// Of the flows inserted, those taken in when the request went to the back-end,
    /// awaiting its answer (`FrontendFlow::AWAITING_ANSWER`).
    pub flows_awaiting_answer: u64,
    /// Client FINs the program forwarded, read from its ring and told to the core.
    pub client_fins_noted: u64,
    /// Back-end answers the program saw a client acknowledge, read from its ring and
    /// told to the core.
    pub answers_noted: u64,
    /// Notices of back-end FIN copies, which a program of an older build took in and
    /// left in the pinned ring: read and ignored (the core tracks the close from the
    /// client's side, and back-ends no longer copy their FINs).
    pub backend_fin_notices_ignored: u64,
    /// Client RSTs at the expected sequence number the program forwarded, read from its
    /// ring and told to the core.
    pub client_resets_noted: u64,
    /// Notices for flows the core did not track yet, held for their handoff's record.
    pub notices_held: u64,
    /// Of those, flows whose record came and to which they were applied.
    pub held_notices_applied: u64,
    /// Held notices dropped unapplied: no record came for their flow.
    pub notices_of_unknown_flows: u64,
    /// Handoffs the program made itself (kernel dispatch) that the core adopted.
    pub kernel_handoffs_adopted: u64,
    /// Such handoffs the core did not adopt: their flows taken out of the table.
    pub kernel_handoffs_refused: u64,
    /// Handoffs the program confirmed itself, whose entry (taken in with the request)
    /// was left as it was rather than rewritten.
    pub confirmed_in_place: u64,
    /// Records in the ring too short to hold a notice; never expected (the program
    /// writes whole notices), counted rather than trusted.
    pub notices_short: u64,
    /// Times the program was asked to answer SYNs with cookies (the half-open table
    /// filled: a flood began, or went on after a lull).
    pub syn_cookies_engaged: u64,
    /// Lookups of the half-open map that failed otherwise than by finding no entry;
    /// never expected (the core resets such a connection, as for an entry gone).
    pub half_open_take_failed: u64,
    /// Flows the program learned by their stamp (`FlowNotice::LEARNED`) that the core
    /// adopted: handed off by another front-end, or before this daemon started.
    pub flows_learned: u64,
    /// Learned flows the core already tracked as handed off (their entry had gone):
    /// kept.
    pub learned_flows_known: u64,
    /// Learned flows the core refused (it tracks the ports' connection before its
    /// handoff, its table is full, or the entry had gone again): taken out of the table.
    pub learned_flows_refused: u64,
    /// Generations of the kernel dispatch's rules written and put in force (the index
    /// flipped): at start, then at each reload, health change or newly resolved MAC that
    /// changed the compiled rules. A reload that does not move it did not reach the
    /// kernel (`kernel_dispatch_unavailable` says why).
    pub kernel_rule_generations: u64,
}

/// How [`FastPath::start`] found things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No pinned link: the program was attached now, and pinned.
    Attached,
    /// A pinned link (a previous daemon's): the program in it was replaced, the pinned
    /// maps kept, with their flows.
    Reattached,
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Attached => "attached",
            Self::Reattached => "reattached",
        })
    }
}

/// What [`FastPath::adopt_pinned`] did with the flows it found, in both tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adoption {
    /// Flows in the pinned tables, IPv4's and IPv6's.
    pub found: usize,
    /// Of those, the IPv6 table's (`flows_v6`).
    pub found_ipv6: usize,
    /// Adopted by the core.
    pub adopted: usize,
    /// Refused by the core, and removed from the table.
    pub refused: usize,
}

/// A flow the daemon keeps in the table (installed or adopted).
#[derive(Debug, Clone, Copy)]
struct Installed {
    /// The client's ISN of the connection the entry was installed for: with kernel
    /// dispatch the program may put a newer connection's entry under the same key
    /// (`FrontendFlow::replaced_by_syn`), which the older one's end must leave alone.
    client_isn: u32,
    /// The last-seen stamp already reported to the core.
    noted: u64,
}

/// The fast path loaded and verified, not yet attached ([`FastPath::prepare`]).
pub struct Prepared {
    ebpf: aya::Ebpf,
    pins: Pins,
    mac: [u8; 6],
    half_open_entries: u32,
}

impl Prepared {
    /// Writes the IPv6 services (VIP6 and port) the program forwards for, before
    /// [`FastPath::start`] attaches it; IPv6 to any other address passes up untouched.
    pub fn write_services_v6(&mut self, services: &[SocketAddrV6]) -> anyhow::Result<()> {
        v6::write_services(&mut self.ebpf, services)
    }
}

/// The attached program's maps, through their pins.
pub struct FastPath {
    /// The loaded object, for the kernel dispatch's tables (`write_kernel_rules`).
    ebpf: aya::Ebpf,
    /// The kernel dispatch's generations, once its rules are written.
    kernel_dispatch: Option<super::kernel_dispatch::KernelDispatch>,
    /// What was last written there: the rules and the back-ends' MACs.
    kernel_rules_written: Option<(baton_dispatch::KernelProgram, Vec<Option<[u8; 6]>>)>,
    interface: String,
    flows: HashMap<MapData, FrontendFlowKey, FrontendFlow>,
    /// The flow table again, for the batch reads aya does not offer.
    flows_data: MapData,
    batch: FlowBatch,
    stats: PerCpuArray<MapData, u64>,
    /// `FRONTEND_SLOW_PATH_REASONS`: why the program left requests to the slow path.
    slow_path_reasons: PerCpuArray<MapData, u64>,
    /// What the program forwarded that the core must know of (`FRONTEND_NOTICES`), read
    /// through its shared pages: checking it costs two loads, no system call.
    notices: RingBuf<MapData>,
    /// The handoffs the program made itself (`FRONTEND_HANDOFFS`, kernel dispatch), read
    /// like the notices, before them.
    handoffs: RingBuf<MapData>,
    /// Connections (flow and client ISN) the program took in with a handoff it made,
    /// whose entry the core's `RequestSent` must not rewrite. By ISN: two connections on
    /// the same ports can be adopted before the first one's `RequestSent` is applied.
    kernel_adopted: HashSet<(FlowKey, u32)>,
    /// The back-ends of the handoffs the program made whose records were read since the
    /// last [`FastPath::sync_backend_loads`]: each leaves the program's count for the
    /// dispatcher's books there.
    kernel_records: Vec<Backend>,
    /// Whether the program hands requests off itself (`[tcp] kernel_dispatch`).
    kernel_handoffs: bool,
    /// Notices for flows the core does not track yet, by flow: what they said, and when
    /// the first came (`note_flow_notices`).
    pending_notices: StdHashMap<(FlowKey, u32), (u32, Instant)>,
    /// When the held notices were last swept ([`PENDING_NOTICE_SWEEP`]).
    pending_swept_at: Option<Instant>,
    /// When `handoffs` was last read to its end (`note_kernel_handoffs`): a held notice
    /// read well before it has no record coming ([`PENDING_NOTICE_LIFETIME`]).
    handoffs_drained_at: Option<Instant>,
    syn_cookies: Array<MapData, SynCookieConfig>,
    /// What `syn_cookies` holds (`ENGAGED` included).
    syn_cookie_config: SynCookieConfig,
    /// The SYN options of clients without timestamps (`FRONTEND_HALF_OPEN`), which the
    /// core takes through [`FastPath::half_open_syns`].
    half_open: HalfOpenMap,
    installed: StdHashMap<FlowKey, Installed>,
    /// Entries of closed flows to delete, all in one system call at the end of the
    /// round's outputs ([`FastPath::flush_removals`]).
    removals: Vec<FrontendFlowKey>,
    neighbours: Neighbours,
    /// What was last written to the stamp tables (`write_stamps`): the key and each
    /// id's back-end.
    stamps_written: Option<([u8; 16], Vec<StampedBackend>)>,
    /// The interface's MAC: where the back-ends' claims come back to.
    mac: [u8; 6],
    /// The IPv6 flow table and notices ring.
    v6: FastPathV6,
}

impl FastPath {
    /// Loads the embedded object against the maps pinned under `pin_dir` (made and
    /// pinned if missing) and has the kernel verify the program, writing nothing a
    /// running daemon reads and attaching nothing: the slow part of a start (seconds in
    /// the verifier), which `baton frontend --take-over` does while the daemon it
    /// replaces still serves. [`FastPath::start`] does the rest.
    /// `half_open_entries` sizes the half-open map (`[tcp] half_open_entries`); 0 turns it
    /// off (`HALF_OPEN` clear: a client without timestamps gets the cookie's terms).
    pub fn prepare(
        interface: &str,
        pin_dir: &Path,
        half_open_entries: u32,
    ) -> anyhow::Result<Prepared> {
        let mac = interface_mac(interface)?;
        crate::pins::require_bpffs(pin_dir)?;
        let pins = Pins::frontend(pin_dir, interface);
        fs::create_dir_all(pins.dir())
            .with_context(|| format!("creating {}", pins.dir().display()))?;
        check_pinned_maps(&pins)?;
        // Maps already pinned are reused as they are (flows and all); missing ones are
        // made and pinned.
        let mut ebpf = EbpfLoader::new()
            .map_pin_path("FRONTEND_FLOWS", pins.flows().as_path())
            .map_pin_path("FRONTEND_CONFIG", pins.config().as_path())
            .map_pin_path("FRONTEND_STATS", pins.stats().as_path())
            .map_pin_path(
                "FRONTEND_SLOW_PATH_REASONS",
                pins.slow_path_reasons().as_path(),
            )
            .map_pin_path("FRONTEND_NOTICES", pins.notices().as_path())
            .map_pin_path("FRONTEND_SECRET", pins.secret().as_path())
            // IPv6's, pinned beside IPv4's: made and pinned when an older build's pin set
            // lacks them, the IPv4 maps adopted as ever.
            .map_pin_path("FRONTEND_FLOWS_V6", v6::flows_pin(&pins).as_path())
            .map_pin_path("FRONTEND_NOTICES_V6", v6::notices_pin(&pins).as_path())
            // A map has at least one entry; off, the program never writes it.
            .map_max_entries("FRONTEND_HALF_OPEN", half_open_entries.max(1))
            .load(crate::ebpf::FRONTEND)
            .context("loading the fast path's eBPF object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("frontend_forward")
            .context("program frontend_forward missing")?
            .try_into()?;
        prog.load()
            .context("loading frontend_forward (the verifier's log follows)")?;
        v6::load_program(&mut ebpf)?;
        Ok(Prepared {
            ebpf,
            pins,
            mac,
            half_open_entries,
        })
    }

    /// Attaches the [prepared](FastPath::prepare) program to `interface` with its maps
    /// and link pinned under `pin_dir`, or, when a previous daemon's pins are there,
    /// replaces the program in the pinned link. Either way the configuration is
    /// (re)written before the new program sees a packet.
    /// `syn_cookies` is the core's ([`FrontEnd::syn_cookie_config`]), with `ENGAGED` set
    /// by the caller when XDP is to answer every SYN from the attach on;
    /// [`FastPath::steer_syn_cookies`] sets and clears it from then on.
    pub fn start(
        prepared: Prepared,
        interface: &str,
        services: &[SocketAddrV4],
        syn_cookies: SynCookieConfig,
        secret: [u8; 16],
        kernel: KernelHandoffConfig,
    ) -> anyhow::Result<(Self, Start)> {
        let Prepared {
            mut ebpf,
            pins,
            mac,
            half_open_entries,
        } = prepared;
        let flows_pin = pins.flows();
        // The configuration goes in before the (new) program can see a packet.
        let mut config: Array<_, FrontendConfig> = Array::try_from(
            ebpf.map_mut("FRONTEND_CONFIG")
                .context("map FRONTEND_CONFIG missing")?,
        )?;
        config.set(
            0,
            FrontendConfig {
                interface_mac: mac,
                _pad: [0; 2],
                flags: FrontendConfig::ENABLED,
            },
            0,
        )?;
        // The secret, for the next daemon (`pinned_secret`).
        Array::<_, [u8; 16]>::try_from(
            ebpf.map_mut("FRONTEND_SECRET")
                .context("map FRONTEND_SECRET missing")?,
        )?
        .set(0, secret, 0)
        .context("writing the pinned secret")?;
        // The services: this program's own map (not pinned), filled before it is
        // attached or swapped into the link.
        let mut service_map: HashMap<_, FrontendService, u32> = HashMap::try_from(
            ebpf.map_mut("FRONTEND_SERVICES")
                .context("map FRONTEND_SERVICES missing")?,
        )?;
        for key in service_keys(services) {
            service_map
                .insert(key, 1, 0)
                .context("writing the services map")?;
        }
        let half_open = if half_open_entries > 0 {
            SynCookieConfig::HALF_OPEN
        } else {
            0
        };
        // `ENGAGED` as the caller asks: set from the start when XDP answers every SYN.
        let syn_cookie_config = SynCookieConfig {
            flags: syn_cookies.flags | half_open,
            ..syn_cookies
        };
        let half_open = match ebpf
            .take_map("FRONTEND_HALF_OPEN")
            .context("map FRONTEND_HALF_OPEN missing")?
        {
            Map::LruHashMap(data) => HalfOpenMap::new(data),
            _ => anyhow::bail!("map FRONTEND_HALF_OPEN is not an LRU hash"),
        };
        let mut syn_cookies = Array::try_from(
            ebpf.take_map("FRONTEND_SYN_COOKIES")
                .context("map FRONTEND_SYN_COOKIES missing")?,
        )?;
        syn_cookies.set(0, syn_cookie_config, 0)?;
        let flows_data = MapData::from_pin(&flows_pin)
            .with_context(|| format!("opening {}", flows_pin.display()))?;
        let flows = HashMap::try_from(
            ebpf.take_map("FRONTEND_FLOWS")
                .context("map FRONTEND_FLOWS missing")?,
        )?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map("FRONTEND_STATS")
                .context("map FRONTEND_STATS missing")?,
        )?;
        let slow_path_reasons = PerCpuArray::try_from(
            ebpf.take_map("FRONTEND_SLOW_PATH_REASONS")
                .context("map FRONTEND_SLOW_PATH_REASONS missing")?,
        )?;
        let notices = RingBuf::try_from(
            ebpf.take_map("FRONTEND_NOTICES")
                .context("map FRONTEND_NOTICES missing")?,
        )?;
        // Kernel dispatch: the handoffs ring and the switch (nothing is handed off in the
        // kernel until the rules are written, `write_kernel_rules`).
        let handoffs = RingBuf::try_from(
            ebpf.take_map("FRONTEND_HANDOFFS")
                .context("map FRONTEND_HANDOFFS missing")?,
        )?;
        let mut kernel_config: Array<_, KernelHandoffConfig> = Array::try_from(
            ebpf.take_map("FRONTEND_KERNEL_HANDOFF")
                .context("map FRONTEND_KERNEL_HANDOFF missing")?,
        )?;
        kernel_config.set(0, kernel, 0)?;
        // The IPv6 path in its slot before the program can see a frame.
        v6::fill_programs(&mut ebpf)?;
        let v6 = FastPathV6::take(&mut ebpf)?;
        let prog: &mut Xdp = ebpf
            .program_mut("frontend_forward")
            .context("program frontend_forward missing")?
            .try_into()?;
        let link_pin = pins.xdp_link();
        let start = match PinnedLink::from_pin(&link_pin) {
            Ok(pinned) => {
                // The pin stays: it names the same kernel link, now running the new
                // program. Should the update fail, the old program goes on forwarding.
                let link = XdpLink::try_from(FdLink::from(pinned))
                    .with_context(|| format!("{} is not an XDP link", link_pin.display()))?;
                let id = prog.attach_to_link(link).with_context(|| {
                    format!(
                        "replacing the program in {} (`baton frontend --detach` clears stale pins)",
                        link_pin.display()
                    )
                })?;
                // Dropping our descriptor leaves the pinned link attached.
                drop(prog.take_link(id)?);
                Start::Reattached
            }
            Err(_) => {
                let id = prog.attach(interface, XdpMode::Driver).with_context(|| {
                    format!("attaching frontend_forward to {interface} (native XDP)")
                })?;
                let link = FdLink::try_from(prog.take_link(id)?).context(
                    "the kernel attached XDP without a BPF link, which cannot be pinned",
                )?;
                link.pin(&link_pin)
                    .with_context(|| format!("pinning the link at {}", link_pin.display()))?;
                Start::Attached
            }
        };
        // `ebpf` stays for the kernel dispatch's tables, which its writer reaches
        // through it; the link holds the program, the pins hold the maps, and the maps
        // taken above hold their own descriptors.
        Ok((
            Self {
                ebpf,
                kernel_dispatch: None,
                kernel_rules_written: None,
                interface: interface.to_string(),
                flows,
                flows_data,
                batch: FlowBatch::default(),
                stats,
                slow_path_reasons,
                notices,
                handoffs,
                kernel_adopted: HashSet::new(),
                kernel_records: Vec::new(),
                kernel_handoffs: kernel.flags & KernelHandoffConfig::ENABLED != 0,
                pending_notices: StdHashMap::new(),
                pending_swept_at: None,
                handoffs_drained_at: None,
                syn_cookies,
                syn_cookie_config,
                half_open,
                installed: StdHashMap::new(),
                removals: Vec::new(),
                neighbours: Neighbours::default(),
                stamps_written: None,
                mac,
                v6,
            },
            start,
        ))
    }

    /// Hands every flow in the (pinned) tables, IPv4's and IPv6's, to the core, as a
    /// connection handed off by a previous daemon; flows the core refuses are removed
    /// from their table, so nothing is forwarded that no one tracks. Call once, right
    /// after [`FastPath::start`] and before the first packet. The core tells its
    /// dispatcher of each flow it takes, so that least-connections and LARD count it as
    /// its back-end's.
    pub fn adopt_pinned<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) -> Adoption {
        // Collected first: deleting while iterating a BPF hash map restarts the walk.
        let found: Vec<(FrontendFlowKey, FrontendFlow)> =
            self.flows.iter().filter_map(Result::ok).collect();
        let mut adoption = Adoption {
            found: found.len(),
            ..Adoption::default()
        };
        for (key, value) in found {
            let flow = flow_of(&key);
            let handover = handover_of(&value);
            match fe.adopt(now, flow, handover) {
                Ok(()) => {
                    adoption.adopted += 1;
                    self.installed.insert(
                        flow,
                        Installed {
                            client_isn: value.client_isn,
                            noted: value.last_seen_ns,
                        },
                    );
                }
                Err(e) => {
                    adoption.refused += 1;
                    let _ = self.flows.remove(&key);
                    log::warn(
                        "fastpath_adopt_refused",
                        &[("client", &flow.client), ("reason", &e)],
                    );
                }
            }
        }
        // IPv6's: the activity scan and the removals find an IPv6 flow by its key in its
        // table, so nothing is kept beside the core's connection (`installed` is IPv4's).
        let found_ipv6 = self.v6.pinned();
        adoption.found += found_ipv6.len();
        adoption.found_ipv6 = found_ipv6.len();
        for (key, value) in found_ipv6 {
            let flow = v6::flow_of(&key);
            match fe.adopt(now, flow, v6::handover_of(&value)) {
                Ok(()) => adoption.adopted += 1,
                Err(e) => {
                    adoption.refused += 1;
                    self.v6.forget(&key);
                    log::warn(
                        "fastpath_adopt_refused",
                        &[("client", &flow.client), ("reason", &e)],
                    );
                }
            }
        }
        stats.flows_found += adoption.found as u64;
        stats.flows_adopted += adoption.adopted as u64;
        stats.adoptions_refused += adoption.refused as u64;
        adoption
    }

    /// Sends `flow`'s client packets to `backend` from now on; with `awaiting_answer`
    /// (the front-end's ISN, `isn_f`), only those proving the back-end has answered
    /// (`FrontendFlow::AWAITING_ANSWER`), until one does. `client_next` is the client's
    /// next sequence number as the core has seen it; an entry already there (a flow taken
    /// in awaiting its answer) keeps its own if the program has seen further. Failures
    /// leave the flow to the slow path, counted.
    #[expect(
        clippy::too_many_arguments,
        reason = "the flow's handoff terms, each needed; one caller per kind of install"
    )]
    pub fn install(
        &mut self,
        now: Instant,
        flow: FlowKey,
        backend: Backend,
        client_isn: u32,
        client_next: u32,
        awaiting_answer: Option<u32>,
        stats: &mut FastPathStats,
    ) {
        // The fast path's table is IPv4's (see `ipv4_octets`).
        let std::net::SocketAddr::V4(backend) = backend else {
            return;
        };
        if self.kernel_adopted.remove(&(flow, client_isn)) {
            // The program inserted the entry with its handoff, awaiting the answer, and may
            // have moved it on since (`client_next`, the answer's proof): left as it is.
            self.installed.insert(
                flow,
                Installed {
                    client_isn,
                    noted: 0,
                },
            );
            stats.flows_installed += 1;
            stats.flows_awaiting_answer += 1;
            return;
        }
        let Some(mac) = self.backend_mac(now, &flow, backend.into(), stats) else {
            return;
        };
        let value = FrontendFlow {
            backend_addr_be: u32::from_ne_bytes(backend.ip().octets()),
            backend_port_be: u16::from_ne_bytes(backend.port().to_be_bytes()),
            backend_mac: mac,
            client_isn,
            close_state: if awaiting_answer.is_some() {
                FrontendFlow::AWAITING_ANSWER
            } else {
                0
            },
            isn_f: awaiting_answer.unwrap_or(0),
            client_next: self.later_client_next(&flow, client_next),
            reserved: 0,
            last_seen_ns: 0,
        };
        self.keep(&key_of(&flow), stats);
        let written = self.flows.insert(key_of(&flow), value, 0);
        let fresh = || {
            // A flow taken in awaiting its answer is updated, not inserted, when the
            // handoff completes.
            self.installed
                .insert(
                    flow,
                    Installed {
                        client_isn,
                        noted: 0,
                    },
                )
                .is_none()
        };
        count_install(written, fresh, awaiting_answer, &flow, stats);
    }

    /// The MAC of `flow`'s `backend` (either family) from the neighbour table, or `None`,
    /// counted and told, if the kernel has none: the flow stays on the slow path, whose
    /// packets the kernel routes (and resolves) itself.
    fn backend_mac(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        backend: std::net::SocketAddr,
        stats: &mut FastPathStats,
    ) -> Option<[u8; 6]> {
        let mac = self.neighbours.lookup(now, backend.ip(), &self.interface);
        if mac.is_none() {
            stats.no_neighbour += 1;
            log::warn(
                "fastpath_no_neighbour",
                &[("client", &flow.client), ("backend", &backend)],
            );
        }
        mac
    }

    /// The IPv6 flow table and its notices, for the core's IPv6 handoffs.
    pub fn v6(&mut self) -> &mut FastPathV6 {
        &mut self.v6
    }

    /// Whether `flow` has an entry the daemon put in the table (or adopted).
    pub fn is_installed(&self, flow: &FlowKey) -> bool {
        self.installed.contains_key(flow)
    }

    /// The later of `ours` and the `client_next` of `flow`'s entry, if the daemon put
    /// one there: the program moves it on as segments pass, and a rewrite of the whole
    /// value must not take it back (a client segment beyond the number would then never
    /// be counted, and its FIN never acted on). The entry is read only if there is one.
    fn later_client_next(&self, flow: &FlowKey, ours: u32) -> u32 {
        if !self.installed.contains_key(flow) {
            return ours;
        }
        match self.flows.get(&key_of(flow), 0) {
            Ok(value) if (value.client_next.wrapping_sub(ours) as i32) > 0 => value.client_next,
            _ => ours,
        }
    }

    /// Tells the core of everything the program forwarded that it must know of since
    /// the last call (the ring's notices, oldest first; module docs of
    /// `baton-ebpf/src/frontend.rs`): a back-end's answer completes its handoff, a
    /// client's FIN or RST starts the grace period. The event loop calls it before each
    /// packet it hands the core: a notice is in the ring before its segment leaves for the
    /// back-end, so
    /// before anything that segment causes (the client's next SYN on the port, once its
    /// close is acknowledged) can reach the daemon. With nothing new it reads two
    /// positions from memory shared with the kernel.
    ///
    /// Reads at most [`NEWS_BATCH`] notices and returns how many it read: the caller
    /// applies the core's outputs after each batch (each notice may emit events, and the
    /// core's output queue is bounded), and calls again until it reads none.
    pub fn note_flow_notices<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) -> usize {
        if !self.pending_notices.is_empty()
            && self
                .pending_swept_at
                .is_none_or(|at| now.saturating_duration_since(at) >= PENDING_NOTICE_SWEEP)
        {
            self.pending_swept_at = Some(now);
            self.expire_pending_notices(now, stats);
        }
        let mut read = 0;
        while read < NEWS_BATCH
            && let Some(record) = self.notices.next()
        {
            read += 1;
            let Some((flow, what, client_isn)) = parse_notice(&record) else {
                stats.notices_short += 1;
                continue;
            };
            let what = if what & FlowNotice::LEARNED != 0 {
                Self::learn(&mut self.flows, &mut self.installed, fe, now, flow, stats);
                what & !FlowNotice::LEARNED
            } else {
                what
            };
            if what == 0 {
                continue;
            }
            // Without kernel dispatch every notice is of the core's connection: only the
            // program's own handoffs can come before the core knows of them.
            let held_isn = if self.kernel_handoffs {
                let open_isn = fe.tracks_open_isn(&flow);
                match client_isn {
                    // Of another connection than the core's open one on these ports, or
                    // of none: a connection the program handed off whose record is
                    // still to be read (below).
                    Some(isn) if open_isn != Some(isn) => Some(isn),
                    // An older program's notice: of the open connection, if any.
                    None if open_isn.is_none() => Some(0),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(isn) = held_isn {
                // A handoff the program made whose record the daemon has not read yet (on
                // the ports of no connection, or of a closed one the program replaced):
                // the two rings are read one after the other, and a record the consumer
                // cannot see yet (the ring shows nothing past a record still being
                // written on another CPU) lets the notices of later segments of its flow
                // arrive first. Held until the record is adopted (`note_kernel_handoffs`),
                // or dropped after `PENDING_NOTICE_LIFETIME` if it names no such flow.
                // Keyed by the connection's ISN, so that a notice can only ever be
                // applied to the connection it is of, however late its record is read.
                if self.pending_notices.len() >= MAX_PENDING_NOTICES {
                    stats.notices_of_unknown_flows += 1;
                    continue;
                }
                stats.notices_held += 1;
                self.pending_notices
                    .entry((flow, isn))
                    .and_modify(|(w, _)| *w |= what)
                    .or_insert((what, now));
                continue;
            }
            Self::apply_notice(fe, now, &flow, what, stats);
        }
        read
    }

    /// A flow the program learned by its stamp (docs/design.md, "Stateless forwarding by
    /// the stamp"): handed to the core as a flow handed off elsewhere (`FrontEnd::adopt`,
    /// as a restarted daemon's pinned flows are), so that its close and idle time are
    /// tracked and its entry removed in the end. A flow the core already tracks as
    /// handed off keeps its entry; one it tracks before its handoff (a client echoing an
    /// old connection's stamp on a new one's ports) or refuses is taken out again.
    fn learn<D: baton_proto::frontend::Dispatch>(
        flows: &mut HashMap<MapData, FrontendFlowKey, FrontendFlow>,
        installed_flows: &mut StdHashMap<FlowKey, Installed>,
        fe: &mut FrontEnd<D>,
        now: Instant,
        flow: FlowKey,
        stats: &mut FastPathStats,
    ) {
        let key = key_of(&flow);
        let Ok(value) = flows.get(&key, 0) else {
            // Gone already (a SYN replaced it): nothing to track.
            stats.learned_flows_refused += 1;
            return;
        };
        let installed = Installed {
            client_isn: value.client_isn,
            noted: value.last_seen_ns,
        };
        match fe.adopt(now, flow, handover_of(&value)) {
            Ok(()) => {
                stats.flows_learned += 1;
                installed_flows.insert(flow, installed);
            }
            Err(_)
                if matches!(
                    fe.connection_state(&flow),
                    Some(StateName::Forwarding | StateName::TimeWait)
                ) =>
            {
                // The entry becomes the core's connection's again (its ISN, which the
                // program could not know), so that its end removes it.
                stats.learned_flows_known += 1;
                let isn = installed_flows
                    .get(&flow)
                    .map_or(value.client_isn, |i| i.client_isn);
                let _ = flows.insert(
                    key,
                    FrontendFlow {
                        client_isn: isn,
                        ..value
                    },
                    0,
                );
                installed_flows.insert(
                    flow,
                    Installed {
                        client_isn: isn,
                        ..installed
                    },
                );
            }
            Err(e) => {
                stats.learned_flows_refused += 1;
                let _ = flows.remove(&key);
                log::warn(
                    "learned_flow_refused",
                    &[("client", &flow.client), ("reason", &e)],
                );
            }
        }
    }

    /// Writes the stamp tables (docs/design.md, "Stateless forwarding by the stamp"):
    /// the handoff key, and each back-end under its id (`baton_common::stamp::backend_id`)
    /// with its MAC, so that the program forwards a flow it has no entry for to the
    /// back-end its client's TSecr names. A back-end whose MAC is not known yet, or
    /// whose id another back-end shares, is left out (such flows go to the slow path, as
    /// without stamps). Written again only when something changed; the daemon calls it
    /// at start and at every activity scan.
    /// Sends `packet` (a client's IPv4 packet, as the core's `Output::Probe` gives it)
    /// to every back-end of the stamp table as a probe frame (`baton_common::claim`;
    /// docs/design.md, "Clients without timestamps: probe and claim"): the one that
    /// holds the flow claims it to this interface's program, which learns the flow and
    /// forwards the segment. The stamp table's back-ends, because a claim is judged
    /// against it: one not in it (its MAC unresolved, its id shared) could not be
    /// learned anyway. Answers the frames sent.
    pub fn send_probes(&self, io: &mut super::io::PacketIo, packet: &[u8]) -> usize {
        let Some((_, table)) = &self.stamps_written else {
            return 0;
        };
        let mut frame = [0u8; 1514 + baton_common::claim::TRAILER_LEN];
        let mut sent = 0;
        for backend in table
            .iter()
            .filter(|b| b.flags & StampedBackend::USABLE != 0)
        {
            let target = (
                backend.addr_be.to_ne_bytes(),
                u16::from_be_bytes(backend.port_be.to_ne_bytes()),
            );
            let Some(len) =
                baton_common::claim::write_probe(&mut frame, self.mac, backend.mac, target, packet)
            else {
                continue;
            };
            if io.send_frame(&frame[..len]) {
                sent += 1;
            }
        }
        sent
    }

    pub fn write_stamps(
        &mut self,
        now: Instant,
        key: [u8; 16],
        backends: &[SocketAddrV4],
    ) -> anyhow::Result<()> {
        let mut table = vec![StampedBackend::default(); stamp::IDS];
        let mut shared = [false; stamp::IDS];
        let mut seen: Vec<SocketAddrV4> = Vec::new();
        for &b in backends {
            if seen.contains(&b) {
                continue;
            }
            seen.push(b);
            let id = usize::from(stamp::backend_id(b.ip().octets()));
            if table[id].flags != 0 || shared[id] {
                shared[id] = true;
                table[id] = StampedBackend::default();
                continue;
            }
            let Some(mac) = self.neighbours.lookup(now, *b.ip(), &self.interface) else {
                continue;
            };
            table[id] = StampedBackend {
                addr_be: u32::from_ne_bytes(b.ip().octets()),
                port_be: u16::from_ne_bytes(b.port().to_be_bytes()),
                mac,
                _pad: [0; 4],
                flags: StampedBackend::USABLE,
            };
        }
        if self
            .stamps_written
            .as_ref()
            .is_some_and(|(k, t)| *k == key && *t == table)
        {
            return Ok(());
        }
        for (id, _) in shared.iter().enumerate().filter(|(_, s)| **s) {
            log::warn("stamp_id_shared", &[("id", &id)]);
        }
        let mut entries: Array<_, StampedBackend> = Array::try_from(
            self.ebpf
                .map_mut("FRONTEND_STAMP_BACKENDS")
                .context("map FRONTEND_STAMP_BACKENDS missing")?,
        )?;
        for (id, entry) in table.iter().enumerate() {
            entries.set(id as u32, *entry, 0)?;
        }
        let mut config: Array<_, StampConfig> = Array::try_from(
            self.ebpf
                .map_mut("FRONTEND_STAMP_CONFIG")
                .context("map FRONTEND_STAMP_CONFIG missing")?,
        )?;
        config.set(
            0,
            StampConfig {
                key: SipKey::from_bytes(key),
                flags: StampConfig::ENABLED,
                _pad: 0,
            },
            0,
        )?;
        self.stamps_written = Some((key, table));
        Ok(())
    }

    /// Tells the core what one notice says of `flow`.
    fn apply_notice<D: baton_proto::frontend::Dispatch>(
        fe: &mut FrontEnd<D>,
        now: Instant,
        flow: &FlowKey,
        what: u32,
        stats: &mut FastPathStats,
    ) {
        // The answer first: a FIN that also acknowledges the response finds the
        // handoff complete.
        if what & FlowNotice::BACKEND_ANSWERED != 0 {
            fe.note_backend_answered(now, flow);
            stats.answers_noted += 1;
        }
        if what & FlowNotice::CLIENT_FIN != 0 {
            fe.note_client_fin(now, flow);
            stats.client_fins_noted += 1;
        }
        if what & FlowNotice::BACKEND_FIN != 0 {
            // Written only by a program of an older build, before this daemon
            // replaced it: nothing in the close waits for the back-end's FIN.
            stats.backend_fin_notices_ignored += 1;
        }
        if what & FlowNotice::CLIENT_RST != 0 {
            fe.note_client_reset(now, flow);
            stats.client_resets_noted += 1;
        }
    }

    /// Drops the notices held for flows no record came for (`note_flow_notices`): past
    /// `PENDING_NOTICE_LIFETIME`, and with the records ring read to its end since (by
    /// `RECORD_COMMIT_GRACE`), they named a connection the core had already freed.
    fn expire_pending_notices(&mut self, now: Instant, stats: &mut FastPathStats) {
        let Some(drained_at) = self.handoffs_drained_at else {
            return;
        };
        let before = self.pending_notices.len();
        self.pending_notices
            .retain(|_, (_, at)| !notice_has_no_record(*at, now, drained_at));
        stats.notices_of_unknown_flows += (before - self.pending_notices.len()) as u64;
    }

    /// Hands the core every handoff the program made itself since the last call (kernel
    /// dispatch; docs/design.md, "Dispatch in the kernel"), in the order it made them:
    /// before the notices (a FIN the program forwarded for such a flow comes after its
    /// handoff) and before any packet, as the notices are. A record the core does not
    /// adopt has its flow taken out of the table, so that nothing is forwarded that no
    /// one tracks.
    ///
    /// Reads at most [`NEWS_BATCH`] records and returns how many it read, as
    /// [`FastPath::note_flow_notices`] does.
    pub fn note_kernel_handoffs<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) -> usize {
        let mut read = 0;
        while read < NEWS_BATCH
            && let Some(record) = self.handoffs.next()
        {
            read += 1;
            let Some((backend, packet)) = parse_handoff(&record) else {
                stats.notices_short += 1;
                continue;
            };
            // Counted by the program whatever becomes of it (`count_handoff`).
            self.kernel_records.push(backend.into());
            let Some((flow, client_isn)) = packet_flow(packet) else {
                stats.notices_short += 1;
                continue;
            };
            // Taken by the core's `RequestSent` (`install`), which the adoption emits.
            self.kernel_adopted.insert((flow, client_isn));
            if fe.adopt_kernel_handoff(now, packet, backend.into()) {
                stats.kernel_handoffs_adopted += 1;
                // Notices that came before the record, in the order they would have had.
                if let Some((what, _)) = self.pending_notices.remove(&(flow, client_isn)) {
                    stats.held_notices_applied += 1;
                    Self::apply_notice(fe, now, &flow, what, stats);
                }
            } else {
                stats.kernel_handoffs_refused += 1;
                self.kernel_adopted.remove(&(flow, client_isn));
                let _ = self.flows.remove(&key_of(&flow));
            }
        }
        if read < NEWS_BATCH {
            // The ring had nothing more: every record written before now is read.
            self.handoffs_drained_at = Some(now);
        }
        read
    }

    /// Writes the rules the kernel can evaluate (`Dispatcher::compile_kernel`) with the
    /// back-ends' MACs as a new generation of the kernel dispatch's tables and puts it
    /// in force: at start, at every reload and at every health change. A back-end whose
    /// MAC is not known yet is written unusable (its requests go to the slow path).
    ///
    /// With the rules go the LARD pools' server sets (`Dispatcher::lard_sets`). `fresh`
    /// (a reload: a new dispatcher, whose sets start empty) writes a new generation even
    /// when the rules compiled alike, so that no set of the old dispatcher's stays in
    /// force.
    pub fn write_kernel_rules(
        &mut self,
        now: Instant,
        dispatcher: &baton_dispatch::Dispatcher,
        program: &baton_dispatch::KernelProgram,
        fresh: bool,
        stats: &mut FastPathStats,
    ) -> anyhow::Result<()> {
        let macs: Vec<Option<[u8; 6]>> = program
            .backends
            .iter()
            .map(|b| self.neighbours.lookup(now, *b.ip(), &self.interface))
            .collect();
        // Written again only when something changed (a reload, a health verdict, a MAC
        // resolved): the check runs every second.
        let written = (program, &macs);
        if !fresh
            && self
                .kernel_rules_written
                .as_ref()
                .is_some_and(|(p, m)| (p, m) == written)
        {
            return Ok(());
        }
        let resolve = |ip| {
            program
                .backends
                .iter()
                .position(|b| *b.ip() == ip)
                .and_then(|i| macs[i])
        };
        let lard_sets = dispatcher.lard_sets();
        let result = match &mut self.kernel_dispatch {
            Some(kernel) => kernel.update_with_sets(&mut self.ebpf, program, lard_sets, resolve),
            None => super::kernel_dispatch::KernelDispatch::load_with_sets(
                &mut self.ebpf,
                program,
                lard_sets,
                resolve,
            )
            .map(|kernel| self.kernel_dispatch = Some(kernel)),
        };
        if result.is_ok() {
            stats.kernel_rule_generations += 1;
            self.kernel_rules_written = Some((program.clone(), macs));
        }
        result
    }

    /// The LARD sets the dispatcher changed, into the kernel's copy
    /// (`KernelDispatch::write_lard_changes`); without dispatch in the kernel they are
    /// only taken, so that the dispatcher keeps no list of them.
    pub fn write_lard_changes(&mut self, dispatcher: &mut baton_dispatch::Dispatcher) {
        let Some(kernel) = &mut self.kernel_dispatch else {
            dispatcher.take_lard_changes(|_, _, _| {});
            return;
        };
        if let Err(e) = kernel.write_lard_changes(&mut self.ebpf, dispatcher) {
            log::warn("lard_sets_unwritten", &[("error", &format!("{e:#}"))]);
        }
    }

    /// Brings the connection counts both engines pick by up to date (docs/design.md,
    /// "Least connections in the kernel"): the handoffs whose records were read move
    /// from the program's count to the dispatcher's books
    /// (`Dispatcher::on_kernel_handoff`), then the two are exchanged through the shared
    /// arrays (`BackendLoads::sync`). No system call.
    pub fn sync_backend_loads(&mut self, dispatcher: &mut baton_dispatch::Dispatcher) {
        for backend in self.kernel_records.drain(..) {
            dispatcher.on_kernel_handoff(backend);
        }
        if let Some(kernel) = &mut self.kernel_dispatch {
            kernel.sync_loads(dispatcher);
        }
    }

    /// The descriptor the daemon polls beside its packet socket: readable when the
    /// program made a handoff while the daemon had caught up with the ring.
    pub fn handoffs_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd as _;
        self.handoffs.as_raw_fd()
    }

    /// Stops forwarding `flow` (it is closed or reset); a flow never installed is a
    /// no-op. The entry goes at [`FastPath::flush_removals`], with the others of the
    /// round: a delete per connection was a system call per connection, and a lookup
    /// before it (below) another.
    pub fn remove(&mut self, flow: &FlowKey, stats: &mut FastPathStats) {
        let Some(installed) = self.installed.remove(flow) else {
            return;
        };
        // With kernel dispatch the program may have replaced a closed flow with a new
        // connection on its ports and handed that one off itself
        // (`FrontendFlow::replaced_by_syn`): the entry under the key is then the new
        // connection's, which stays. The core ends the old connection when the new one's
        // record reaches it, before the new one's `RequestSent`, so the record is among
        // those adopted and not yet installed (`kernel_adopted`, a round's worth). Should
        // the program replace the entry after that (a new connection's SYN on the ports
        // before the removal is flushed), that connection loses its entry: its segments
        // then reach the core, which installs it again when the client acknowledges the
        // back-end's answer, and its stamp finds it meanwhile.
        if self.kernel_handoffs
            && self
                .kernel_adopted
                .iter()
                .any(|&(f, isn)| f == *flow && isn != installed.client_isn)
        {
            stats.flows_replaced_by_fast_path += 1;
            return;
        }
        self.removals.push(key_of(flow));
    }

    /// Deletes the entries [`FastPath::remove`] queued, in one system call. Called after
    /// each batch of the core's outputs, so that an entry outlives its connection's end
    /// by that batch at most; an entry installed again meanwhile is not deleted
    /// ([`FastPath::keep`]).
    pub fn flush_removals(&mut self, stats: &mut FastPathStats) {
        if self.removals.is_empty() {
            return;
        }
        match delete_all(&self.flows_data, &self.removals) {
            Ok(deleted) => {
                stats.flows_removed += deleted.removed as u64;
                stats.flows_replaced_by_fast_path += deleted.missing as u64;
                stats.removal_batches += 1;
            }
            Err(e) => {
                // Not expected (batch deletes exist since Linux 5.6); the entries stay
                // until the idle scan's next look, and the program forwards them to
                // their back-end meanwhile, which resets what it no longer knows.
                stats.removals_failed += self.removals.len() as u64;
                log::warn("fastpath_delete_failed", &[("error", &e)]);
            }
        }
        self.removals.clear();
    }

    /// An entry about to be written for `key`: a removal of the key still queued (a
    /// connection that ended on these ports in the same batch) must not delete it. The
    /// ended connection's entry goes all the same, overwritten by this write: counted as
    /// removed, so that every entry installed is counted once as removed or replaced.
    fn keep(&mut self, key: &FrontendFlowKey, stats: &mut FastPathStats) {
        if !self.removals.is_empty() {
            let queued = self.removals.len();
            self.removals.retain(|k| k != key);
            stats.flows_removed += (queued - self.removals.len()) as u64;
        }
    }

    /// Tells the core about every flow the program forwarded for since the last scan,
    /// and records in the table every close state the program did not record itself
    /// (it records the client's FIN and RST as it tells of them; a back-end's reset, or
    /// a close the core judged from a segment it forwarded itself, is the daemon's to
    /// write), in the IPv6 table too ([`FastPathV6::record_close_states`]; its activity
    /// is `scan_activity_v6`'s).
    ///
    /// The table is read whole in batches (`BPF_MAP_LOOKUP_BATCH`, a system call per
    /// [`FlowBatch::CHUNK`] flows) rather than with a lookup per flow: at 8,000 new
    /// connections a second, each alive a few seconds, one lookup per flow per scan was
    /// as many system calls as all the installs and removals together, and at the
    /// table's 262,144 flows it would be 262,144 a second. A close state to write is
    /// written after a fresh lookup of its entry (`write_close_state` says why); with the
    /// program recording the client's close itself, that is rare, where it was a lookup
    /// and an update per connection.
    pub fn scan_activity<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &mut FrontEnd<D>,
        now: Instant,
        stats: &mut FastPathStats,
    ) {
        // IPv6's table first, entry by entry (its flows are few, and its own read).
        self.v6.record_close_states(fe, stats);
        if let Err(e) = self.batch.read_all(&self.flows_data) {
            // Batch reads of hash maps exist since Linux 5.6 (this build needs 6.1), so
            // this is not expected; the next scan tries again.
            stats.batch_read_errors += 1;
            log::warn("fastpath_batch_read_failed", &[("error", &e)]);
            self.neighbours.refresh(&self.interface);
            return;
        }
        stats.batch_reads += 1;
        for (key, value) in self.batch.keys.iter().zip(&self.batch.values) {
            let flow = flow_of(key);
            let Some(installed) = self.installed.get_mut(&flow) else {
                continue;
            };
            if value.last_seen_ns > installed.noted {
                installed.noted = value.last_seen_ns;
                // The stamp's own time (the same CLOCK_MONOTONIC, at tick resolution):
                // the client's FIN, told through the ring, is often the last segment
                // stamped, and read here a moment later it must not count as a sign of
                // life after it (`FrontEnd::note_activity`).
                fe.note_activity(now, &flow, Instant::from_nanos(value.last_seen_ns));
                stats.activity_noted += 1;
            }
            // Against the entry as read: the program records the client's FIN and RST
            // itself, so that only what the core judges otherwise is written.
            if let Some(handover) = fe.handover(&flow)
                && needs_close_state(value, &handover)
            {
                write_close_state(&mut self.flows, key, &handover, stats);
            }
        }
        self.neighbours.refresh(&self.interface);
    }

    /// Writes into the tables (IPv4's and IPv6's) the close state of every flow whose
    /// entry says otherwise than the core, for a successor daemon to resume from.
    /// Called at exit.
    ///
    /// Checked against the table itself (batch reads), as the scan does.
    ///
    /// A read-modify-write of the whole value: a `last_seen_ns` the program stores in
    /// between is overwritten with the one read, which only delays the core's next
    /// activity note by a scan.
    pub fn record_close_states<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &FrontEnd<D>,
        stats: &mut FastPathStats,
    ) {
        self.v6.record_close_states(fe, stats);
        if self.batch.read_all(&self.flows_data).is_ok() {
            for (key, value) in self.batch.keys.iter().zip(&self.batch.values) {
                let flow = flow_of(key);
                if !self.installed.contains_key(&flow) {
                    continue;
                }
                if let Some(handover) = fe.handover(&flow)
                    && needs_close_state(value, &handover)
                {
                    write_close_state(&mut self.flows, key, &handover, stats);
                }
            }
            return;
        }
        stats.batch_read_errors += 1;
        // A lookup per closing flow instead (`write_close_state` reads its entry).
        for flow in self.installed.keys() {
            if let Some(handover) = fe.handover(flow)
                && handover.close_state() != 0
            {
                write_close_state(&mut self.flows, &key_of(flow), &handover, stats);
            }
        }
    }

    /// Has the program answer SYNs with cookies while the core wants it
    /// ([`FrontEnd::wants_syn_cookies`]: its half-open table is full), and stop once the
    /// table is down to half. Called every round; writes the map only on a change.
    pub fn steer_syn_cookies<D: baton_proto::frontend::Dispatch>(
        &mut self,
        fe: &FrontEnd<D>,
        stats: &mut FastPathStats,
    ) {
        let engaged = self.syn_cookie_config.flags & SynCookieConfig::ENGAGED != 0;
        let want = fe.wants_syn_cookies(engaged);
        if want != engaged {
            self.set_syn_cookies(want);
            if want {
                stats.syn_cookies_engaged += 1;
            }
            log::line(
                "syn_cookies",
                &[
                    ("state", &if want { "engaged" } else { "released" }),
                    ("half_open", &fe.stats().half_open),
                    ("connections", &fe.connection_count()),
                ],
            );
        }
    }

    /// The half-open map, lent to the core for one packet
    /// ([`FrontEnd::handle_packet_with`]); its failures counted in `stats`.
    pub fn half_open_syns<'a>(&'a self, stats: &'a mut FastPathStats) -> HalfOpenLookup<'a> {
        HalfOpenLookup {
            map: &self.half_open,
            stats,
        }
    }

    /// Whether XDP answers SYNs with cookies now (`ENGAGED`).
    pub fn syn_cookies_engaged(&self) -> bool {
        self.syn_cookie_config.flags & SynCookieConfig::ENGAGED != 0
    }

    /// Sets or clears `ENGAGED`. At exit the daemon clears it unless XDP answers every
    /// SYN (`[tcp] syns_in_xdp`): cookies engaged for a flood are the next daemon's to
    /// judge, but SYNs answered in XDP stay so across a swap.
    pub fn set_syn_cookies(&mut self, engaged: bool) {
        let mut config = self.syn_cookie_config;
        if engaged {
            config.flags |= SynCookieConfig::ENGAGED;
        } else {
            config.flags &= !SynCookieConfig::ENGAGED;
        }
        match self.syn_cookies.set(0, config, 0) {
            Ok(()) => self.syn_cookie_config = config,
            Err(e) => log::warn("syn_cookies_unset", &[("error", &e)]),
        }
    }

    /// Flows in the table that this daemon installed or adopted, and the table's
    /// capacity (for metrics).
    pub fn flow_table(&self) -> (usize, u32) {
        (
            self.installed.len(),
            baton_common::frontend::DEFAULT_FLOW_TABLE_SIZE,
        )
    }

    /// The program's counters summed over CPUs, by name (since the maps were made: the
    /// pinned counters outlive daemons).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        summed(&self.stats, &stat::NAMES, 0)
    }

    /// The requests the program left to the slow path, summed over CPUs, by reason
    /// (`baton_common::kernel_dispatch::reason::NAMES`, every reason but 0, which is
    /// none); pinned like [`FastPath::counters`].
    pub fn slow_path_reasons(&self) -> Vec<(&'static str, u64)> {
        summed(&self.slow_path_reasons, &reason::NAMES, 1)
    }

    /// Removes the pins of `interface` under `pin_dir`: the program detaches (its link
    /// goes with its last reference) and the maps are freed once nothing holds them.
    /// Returns the number of flows the table still held, or `None` if nothing was
    /// pinned there.
    pub fn detach(pin_dir: &Path, interface: &str) -> anyhow::Result<Option<usize>> {
        let pins = Pins::frontend(pin_dir, interface);
        if !pins.dir().exists() {
            return Ok(None);
        }
        // Both tables' (an older build's pins have no IPv6 one).
        let flows = pinned_flow_count(pin_dir, interface).unwrap_or(0)
            + pinned_flow_count_v6(pin_dir, interface).unwrap_or(0);
        if let Ok(link) = PinnedLink::from_pin(pins.xdp_link()) {
            // Unpinning and dropping the last descriptor detaches the program.
            drop(link.unpin().context("unpinning the XDP link")?);
        }
        pins.remove(&[
            pins.xdp_link(),
            pins.flows(),
            pins.config(),
            pins.stats(),
            pins.slow_path_reasons(),
            pins.notices(),
            pins.secret(),
            v6::flows_pin(&pins),
            v6::notices_pin(&pins),
        ])?;
        Ok(Some(flows))
    }
}

/// The counters of `map` from index `first` on, summed over CPUs and named by `names`
/// (a counter that cannot be read counts 0).
fn summed(
    map: &PerCpuArray<MapData, u64>,
    names: &[&'static str],
    first: usize,
) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .enumerate()
        .skip(first)
        .map(|(i, name)| {
            let total = map
                .get(&(i as u32), 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum());
            (*name, total)
        })
        .collect()
}

/// The services map's keys for `services`: each (VIP, port), and (VIP, 0) for each VIP,
/// which tells the program a fragment or an options-bearing packet is for a VIP.
fn service_keys(services: &[SocketAddrV4]) -> Vec<FrontendService> {
    let key = |addr: &Ipv4Addr, port: u16| FrontendService {
        vip_addr_be: u32::from_ne_bytes(addr.octets()),
        vip_port_be: u16::from_ne_bytes(port.to_be_bytes()),
        _pad: 0,
    };
    let mut keys: Vec<FrontendService> = Vec::new();
    for service in services {
        for k in [key(service.ip(), service.port()), key(service.ip(), 0)] {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// The core's view of a pinned flow.
fn handover_of(value: &FrontendFlow) -> Handover {
    handover_from(
        SocketAddrV4::new(
            Ipv4Addr::from(value.backend_addr_be.to_ne_bytes()),
            u16::from_be_bytes(value.backend_port_be.to_ne_bytes()),
        )
        .into(),
        value.client_isn,
        value.client_next,
        value.close_state,
    )
}

/// The core's view of a pinned flow of either family, from its entry's fields (the IPv4
/// and IPv6 entries share them but for the back-end's address).
pub(super) fn handover_from(
    backend: std::net::SocketAddr,
    client_isn: u32,
    client_next: u32,
    close: u32,
) -> Handover {
    Handover {
        backend,
        client_isn,
        client_next,
        // `BACKEND_FIN`, which daemons of older builds wrote, means nothing now: the
        // close waits for the client alone.
        client_fin: close & FrontendFlow::CLIENT_FIN != 0,
        reset: if close & FrontendFlow::CLIENT_RESET != 0 {
            Some(ResetReason::ClientReset)
        } else if close & FrontendFlow::BACKEND_RESET != 0 {
            Some(ResetReason::BackendReset)
        } else {
            None
        },
    }
}

/// Whether `value`, a flow's entry as read from the table, says less or other of the
/// connection's close than the core (`handover`), so that the daemon must write it: the
/// program records the client's FIN and RST itself as it tells of them
/// (`FrontendFlow::close_state_noticed`); a back-end's reset, or a close the core judged
/// from a segment that reached it another way, is the daemon's to record. An entry of
/// another connection on the same ports (another client ISN) is not this one's.
pub(super) fn needs_close_state(value: &FrontendFlow, handover: &Handover) -> bool {
    close_state_differs(value.client_isn, value.close_state, handover)
}

/// [`needs_close_state`] from an entry's client ISN and close state, of either family.
pub(super) fn close_state_differs(client_isn: u32, close_state: u32, handover: &Handover) -> bool {
    client_isn == handover.client_isn
        && close_state & !FrontendFlow::AWAITING_ANSWER != handover.close_state()
}

fn flow_of(key: &FrontendFlowKey) -> FlowKey {
    let addr = |be: u32, port_be: u16| {
        SocketAddrV4::new(
            Ipv4Addr::from(be.to_ne_bytes()),
            u16::from_be_bytes(port_be.to_ne_bytes()),
        )
    };
    FlowKey::v4(
        addr(key.client_addr_be, key.client_port_be),
        addr(key.vip_addr_be, key.vip_port_be),
    )
}

/// The local secret a previous daemon on `interface` left pinned under `pin_dir`, if
/// any: a daemon whose configuration sets no `secret` takes it over rather than drawing
/// one, so that the cookies XDP gave out across a restart or an upgrade (every SYN, with
/// `[tcp] syns_in_xdp`) verify and those clients' requests are served. The pins live as
/// long as the flows (until `baton frontend --detach` or a reboot).
pub fn pinned_secret(pin_dir: &Path, interface: &str) -> Option<[u8; 16]> {
    let map = MapData::from_pin(Pins::frontend(pin_dir, interface).secret()).ok()?;
    let secret: Array<_, [u8; 16]> = Array::try_from(Map::Array(map)).ok()?;
    secret.get(&0, 0).ok().filter(|s| s.iter().any(|&b| b != 0))
}

/// A record of `FRONTEND_HANDOFFS`: the back-end and the request's IPv4 packet.
fn parse_handoff(record: &[u8]) -> Option<(SocketAddrV4, &[u8])> {
    let head = size_of::<KernelHandoffRecord>();
    if record.len() < head {
        return None;
    }
    // SAFETY: the length is checked; `KernelHandoffRecord` is `repr(C)` integers, any
    // bytes are a value of it; read unaligned (the ring aligns records to 8 only).
    let r = unsafe {
        record
            .as_ptr()
            .cast::<KernelHandoffRecord>()
            .read_unaligned()
    };
    let packet = record.get(head..head + r.packet_len as usize)?;
    let backend = SocketAddrV4::new(
        Ipv4Addr::from(r.backend_addr_be.to_ne_bytes()),
        u16::from_be(r.backend_port_be),
    );
    Some((backend, packet))
}

/// The client-to-service flow of a client's IPv4/TCP request segment, the first after
/// the handshake, and the client's ISN (its sequence number less one), read from its
/// headers (checked again by the core, which parses it whole).
fn packet_flow(packet: &[u8]) -> Option<(FlowKey, u32)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(packet.get(at..at + 2)?.try_into().ok()?))
    };
    let seq: [u8; 4] = packet.get(ihl + 4..ihl + 8)?.try_into().ok()?;
    let flow = FlowKey::v4(
        SocketAddrV4::new(addr(12)?, port(ihl)?),
        SocketAddrV4::new(addr(16)?, port(ihl + 2)?),
    );
    Some((flow, u32::from_be_bytes(seq).wrapping_sub(1)))
}

/// The flow, what happened and the connection's client ISN in a ring record: a
/// [`FlowNotice`] as the program wrote it, or as an older build wrote it, without the
/// ISN ([`FlowNotice::LEN_WITHOUT_ISN`]). `None` if too short.
fn parse_notice(record: &[u8]) -> Option<(FlowKey, u32, Option<u32>)> {
    let mut bytes = [0u8; size_of::<FlowNotice>()];
    let len = if record.len() >= bytes.len() {
        bytes.len()
    } else if record.len() >= FlowNotice::LEN_WITHOUT_ISN {
        FlowNotice::LEN_WITHOUT_ISN
    } else {
        return None;
    };
    bytes[..len].copy_from_slice(&record[..len]);
    // SAFETY: `FlowNotice` is `repr(C)` integers (aya `Pod`), any bytes are a value of
    // it; read unaligned from the copy.
    let notice = unsafe { bytes.as_ptr().cast::<FlowNotice>().read_unaligned() };
    let client_isn = (len == bytes.len()).then_some(notice.client_isn);
    Some((flow_of(&notice.key), notice.what, client_isn))
}

/// An address as the fast path's IPv4 tables hold it. The daemon captures IPv4 alone
/// (`ETH_P_IP`) and configures IPv4 services, so every flow and back-end reaching its
/// tables is IPv4; an IPv6 one (none today) maps to 0.0.0.0, which no table entry
/// names. The IPv6 tables are the fast path's own step (docs/design.md, "IPv6: the
/// plan").
pub(crate) fn ipv4_octets(ip: std::net::IpAddr) -> [u8; 4] {
    match ip {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    }
}

/// Counts an install's write to either family's flow table (`written`): on success a
/// flow installed if `fresh` says the daemon had no entry for it before, and one awaiting
/// its answer with `awaiting_answer`; on failure, counted and told, the flow stays on the
/// slow path.
fn count_install<E: std::fmt::Display>(
    written: Result<(), E>,
    fresh: impl FnOnce() -> bool,
    awaiting_answer: Option<u32>,
    flow: &FlowKey,
    stats: &mut FastPathStats,
) {
    match written {
        Ok(()) => {
            if fresh() {
                stats.flows_installed += 1;
            }
            if awaiting_answer.is_some() {
                stats.flows_awaiting_answer += 1;
            }
        }
        Err(e) => {
            stats.install_failed += 1;
            log::warn(
                "fastpath_install_failed",
                &[("client", &flow.client), ("error", &format!("{e:#}"))],
            );
        }
    }
}

fn key_of(flow: &FlowKey) -> FrontendFlowKey {
    FrontendFlowKey {
        client_addr_be: u32::from_ne_bytes(ipv4_octets(flow.client.ip())),
        vip_addr_be: u32::from_ne_bytes(ipv4_octets(flow.service.ip())),
        client_port_be: u16::from_ne_bytes(flow.client.port().to_be_bytes()),
        vip_port_be: u16::from_ne_bytes(flow.service.port().to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_back_as_the_flow_and_news_the_program_wrote() {
        let flow = FlowKey {
            client: "198.18.0.2:40001".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        };
        let what = FlowNotice::CLIENT_FIN | FlowNotice::BACKEND_ANSWERED;
        // The record is the notice's memory, as `notice.write(..)` leaves it in the ring.
        let notice = FlowNotice {
            key: key_of(&flow),
            what,
            client_isn: 0x1234_5678,
        };
        // SAFETY: `FlowNotice` is `repr(C)`, 20 bytes of integers, no padding.
        let bytes: [u8; 20] = unsafe { core::mem::transmute(notice) };
        assert_eq!(parse_notice(&bytes), Some((flow, what, Some(0x1234_5678))));
        // A longer record: the tail is ignored.
        let padded = [&bytes[..], &[0xee; 4]].concat();
        assert_eq!(parse_notice(&padded), Some((flow, what, Some(0x1234_5678))));
        // An older build's notice, without the ISN.
        assert_eq!(parse_notice(&bytes[..16]), Some((flow, what, None)));
        assert_eq!(parse_notice(&bytes[..15]), None);
    }

    #[test]
    fn a_held_notice_is_dropped_only_once_the_records_ring_was_read_past_it() {
        let held = Instant::from_nanos(1_000_000_000);
        let later = |ms| held + std::time::Duration::from_millis(ms);
        // A daemon seconds behind: the ring not read to its end since the notice came.
        assert!(!notice_has_no_record(held, later(10_000), held));
        assert!(!notice_has_no_record(held, later(10_000), later(50)));
        // Read to its end well after the notice: no record is coming, once its lifetime is
        // over and not before.
        assert!(notice_has_no_record(held, later(2_000), later(100)));
        assert!(!notice_has_no_record(held, later(1_999), later(100)));
        // A drain before the notice says nothing of its record.
        assert!(!notice_has_no_record(later(500), later(10_000), held));
    }

    #[test]
    fn flow_keys_are_in_network_order() {
        let flow = FlowKey {
            client: "198.18.0.2:50000".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        };
        let key = key_of(&flow);
        assert_eq!(key.client_addr_be.to_ne_bytes(), [198, 18, 0, 2]);
        assert_eq!(key.vip_port_be.to_ne_bytes(), [0, 80]);
        assert_eq!(key.client_port_be.to_ne_bytes(), 50000u16.to_be_bytes());
        assert_eq!(flow_of(&key), flow);
    }

    #[test]
    fn close_states_round_trip_through_the_table_value() {
        let backend: std::net::SocketAddr = "198.18.1.12:8080".parse().unwrap();
        let cases = [
            (false, None),
            (true, None),
            (false, Some(ResetReason::ClientReset)),
            (true, Some(ResetReason::BackendReset)),
        ];
        for (client_fin, reset) in cases {
            let handover = Handover {
                backend,
                client_isn: 0xdead_beef,
                client_next: 0x1234_5678,
                client_fin,
                reset,
            };
            let value = FrontendFlow {
                backend_addr_be: u32::from_ne_bytes(ipv4_octets(backend.ip())),
                backend_port_be: u16::from_ne_bytes(backend.port().to_be_bytes()),
                client_isn: handover.client_isn,
                close_state: handover.close_state(),
                client_next: handover.client_next,
                ..FrontendFlow::default()
            };
            assert_eq!(handover_of(&value), handover);
            // The back-end's FIN, which older daemons recorded, changes nothing.
            let older = FrontendFlow {
                close_state: value.close_state | FrontendFlow::BACKEND_FIN,
                ..value
            };
            assert_eq!(handover_of(&older), handover);
        }
    }

    #[test]
    fn the_daemon_writes_only_the_close_the_program_did_not_record() {
        let handover = |client_fin, reset| Handover {
            backend: "198.18.1.12:80".parse().unwrap(),
            client_isn: 77,
            client_next: 1000,
            client_fin,
            reset,
        };
        let entry = |close_state, client_isn| FrontendFlow {
            client_isn,
            close_state,
            ..FrontendFlow::default()
        };
        let fin = FrontendFlow::close_state_noticed(FlowNotice::CLIENT_FIN);
        let rst = FrontendFlow::close_state_noticed(FlowNotice::CLIENT_RST);
        // The client's FIN and RST, recorded by the program as it told of them.
        assert!(!needs_close_state(&entry(fin, 77), &handover(true, None)));
        assert!(!needs_close_state(
            &entry(rst, 77),
            &handover(false, Some(ResetReason::ClientReset))
        ));
        // An open connection, awaiting its answer or not.
        assert!(!needs_close_state(&entry(0, 77), &handover(false, None)));
        assert!(!needs_close_state(
            &entry(FrontendFlow::AWAITING_ANSWER, 77),
            &handover(false, None)
        ));
        // What only the core knows: a back-end's reset; a FIN the program never told of.
        assert!(needs_close_state(
            &entry(0, 77),
            &handover(false, Some(ResetReason::BackendReset))
        ));
        assert!(needs_close_state(&entry(0, 77), &handover(true, None)));
        // Another connection's entry on the same ports is left alone.
        assert!(!needs_close_state(&entry(0, 78), &handover(true, None)));
    }
}
