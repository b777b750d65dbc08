//! The simulated network: the lab's router and LAN as one queue of IPv4 packets in
//! flight, each hop with its own delay, jitter (hence reordering), loss and duplication,
//! all drawn from a seeded generator, plus targeted drop rules ("drop the 1st SYN' on the
//! front-end to back-end hop").
//!
//! Every packet is parsed, checksums verified, when it is sent: a packet that does not
//! parse fails the scenario at once, naming the hop.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::Duration;

use super::packet::PacketInfo;
use super::rng::SimRng;

/// A node of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeId {
    Client,
    FrontEnd,
    Backend(usize),
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::Client => write!(f, "client"),
            NodeId::FrontEnd => write!(f, "front-end"),
            NodeId::Backend(i) => write!(f, "backend{i}"),
        }
    }
}

/// The faults and delays of one directed hop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per packet; packets sent closer
    /// together than the jitter may overtake each other.
    pub jitter: Duration,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is delivered twice (the copy with its own jitter).
    pub duplicate: f64,
}

impl LinkFaults {
    pub const fn clean(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Drop the `nth` (1-based) to `nth + count - 1`th packets on hop `from -> to` that
/// `matches` accepts: loss aimed at one step of the handoff.
pub struct DropRule {
    pub label: &'static str,
    pub from: NodeId,
    /// `None`: any destination.
    pub to: Option<NodeId>,
    pub matches: Box<dyn Fn(&PacketInfo) -> bool>,
    pub nth: u32,
    pub count: u32,
    seen: u32,
    /// How many packets the rule dropped.
    pub dropped: u32,
}

impl DropRule {
    pub fn new(
        label: &'static str,
        from: NodeId,
        to: Option<NodeId>,
        nth: u32,
        count: u32,
        matches: impl Fn(&PacketInfo) -> bool + 'static,
    ) -> Self {
        Self {
            label,
            from,
            to,
            matches: Box::new(matches),
            nth,
            count,
            seen: 0,
            dropped: 0,
        }
    }
}

/// What happened to a packet, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Sent,
    Lost,
    Dropped(&'static str),
    Duplicated,
}

/// One line of the trace.
#[derive(Clone, Copy, Debug)]
pub struct TraceEntry {
    pub at: Duration,
    pub from: NodeId,
    pub to: NodeId,
    pub info: PacketInfo,
    pub fate: Fate,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>12.6}s {:>9} -> {:<9} {:?}: {}",
            self.at.as_secs_f64(),
            self.from.to_string(),
            self.to.to_string(),
            self.fate,
            self.info
        )
    }
}

/// Counters per hop, for assertions (e.g. "the front-end carried no response byte").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopStats {
    pub packets: u64,
    pub payload_bytes: u64,
    pub syn: u64,
    pub fin: u64,
    pub rst: u64,
    pub lost: u64,
}

struct InFlight {
    at: Duration,
    id: u64,
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed, so the `BinaryHeap` pops the earliest delivery; ties go in send order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.id).cmp(&(self.at, self.id))
    }
}

/// How many trace lines are kept for the failure report (`BATON_SIM_TRACE=n` for more).
fn trace_len() -> usize {
    std::env::var("BATON_SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

pub struct Network {
    queue: BinaryHeap<InFlight>,
    next_id: u64,
    rng: SimRng,
    /// Faults of each hop; a hop not listed gets `default`.
    pub hops: Vec<((NodeId, NodeId), LinkFaults)>,
    pub default: LinkFaults,
    pub rules: Vec<DropRule>,
    trace: VecDeque<TraceEntry>,
    trace_len: usize,
    stats: Vec<((NodeId, NodeId), HopStats)>,
    /// Observers called on every packet sent (before faults), e.g. to trigger a client
    /// reset when the SYN' appears.
    pub observed: Vec<(Duration, NodeId, NodeId, PacketInfo)>,
    pub keep_observed: bool,
    /// Packets kept whole, as sent (before faults), for a scenario to send again: those
    /// of hop `(from, to)` that the closure accepts.
    pub capture: Option<Capture>,
    pub captured: Vec<Vec<u8>>,
}

/// Which packets [`Network::captured`] keeps.
pub type Capture = (NodeId, NodeId, Box<dyn Fn(&PacketInfo) -> bool>);

impl Network {
    pub fn new(rng: SimRng, default: LinkFaults) -> Self {
        Self {
            queue: BinaryHeap::new(),
            next_id: 0,
            rng,
            hops: Vec::new(),
            default,
            rules: Vec::new(),
            trace: VecDeque::new(),
            trace_len: trace_len(),
            stats: Vec::new(),
            observed: Vec::new(),
            keep_observed: false,
            capture: None,
            captured: Vec::new(),
        }
    }

    pub fn set_hop(&mut self, from: NodeId, to: NodeId, faults: LinkFaults) {
        self.hops.retain(|(hop, _)| *hop != (from, to));
        self.hops.push(((from, to), faults));
    }

    /// Sets `faults` on every hop, keeping each hop's delay.
    pub fn set_loss_everywhere(&mut self, loss: f64, duplicate: f64, jitter: Duration) {
        self.default.loss = loss;
        self.default.duplicate = duplicate;
        self.default.jitter = jitter;
        for (_, faults) in &mut self.hops {
            faults.loss = loss;
            faults.duplicate = duplicate;
            faults.jitter = jitter;
        }
    }

    fn faults(&self, from: NodeId, to: NodeId) -> LinkFaults {
        self.hops
            .iter()
            .find(|(hop, _)| *hop == (from, to))
            .map_or(self.default, |(_, f)| *f)
    }

    pub fn stats(&self, from: NodeId, to: NodeId) -> HopStats {
        self.stats
            .iter()
            .find(|(hop, _)| *hop == (from, to))
            .map_or_else(HopStats::default, |(_, s)| *s)
    }

    fn stats_mut(&mut self, from: NodeId, to: NodeId) -> &mut HopStats {
        let at = match self.stats.iter().position(|(hop, _)| *hop == (from, to)) {
            Some(at) => at,
            None => {
                self.stats.push(((from, to), HopStats::default()));
                self.stats.len() - 1
            }
        };
        &mut self.stats[at].1
    }

    fn record(&mut self, entry: TraceEntry) {
        if self.trace.len() >= self.trace_len {
            self.trace.pop_front();
        }
        self.trace.push_back(entry);
    }

    /// The last packets sent, one per line, for failure messages.
    pub fn trace(&self) -> String {
        self.trace.iter().map(|e| format!("  {e}\n")).collect()
    }

    /// Sends `bytes` from `from` to `to` at `now`. Panics if the packet does not parse or
    /// a checksum does not verify: a bug in whatever built or rewrote it.
    pub fn send(&mut self, now: Duration, from: NodeId, to: NodeId, mut bytes: Vec<u8>) {
        let info = match PacketInfo::parse_verified(&bytes) {
            Ok(info) => info,
            Err(e) => panic!(
                "{from} -> {to} at {now:?}: invalid packet ({e}): {:02x?}\nlast packets:\n{}",
                &bytes[..bytes.len().min(80)],
                self.trace()
            ),
        };
        {
            let stats = self.stats_mut(from, to);
            stats.packets += 1;
            stats.payload_bytes += info.payload_len as u64;
            stats.syn += u64::from(info.has(baton_proto::wire::TcpFlags::SYN));
            stats.fin += u64::from(info.is_fin());
            stats.rst += u64::from(info.is_rst());
        }
        if self.keep_observed {
            self.observed.push((now, from, to, info));
        }
        if let Some((hop_from, hop_to, matches)) = &self.capture
            && (*hop_from, *hop_to) == (from, to)
            && matches(&info)
        {
            self.captured.push(bytes.clone());
        }
        let mut entry = TraceEntry {
            at: now,
            from,
            to,
            info,
            fate: Fate::Sent,
        };
        for rule in &mut self.rules {
            if rule.from != from || rule.to.is_some_and(|t| t != to) || !(rule.matches)(&info) {
                continue;
            }
            rule.seen += 1;
            if rule.seen >= rule.nth && rule.seen - rule.nth < rule.count {
                rule.dropped += 1;
                entry.fate = Fate::Dropped(rule.label);
                self.stats_mut(from, to).lost += 1;
                self.record(entry);
                return;
            }
        }
        let faults = self.faults(from, to);
        if self.rng.chance(faults.loss) {
            entry.fate = Fate::Lost;
            self.stats_mut(from, to).lost += 1;
            self.record(entry);
            return;
        }
        let copies = if self.rng.chance(faults.duplicate) {
            entry.fate = Fate::Duplicated;
            2
        } else {
            1
        };
        self.record(entry);
        for copy in 0..copies {
            let jitter = if faults.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.below(faults.jitter.as_nanos() as u64))
            };
            let bytes = if copy + 1 == copies {
                std::mem::take(&mut bytes)
            } else {
                bytes.clone()
            };
            self.queue.push(InFlight {
                at: now + faults.delay + jitter,
                id: self.next_id,
                from,
                to,
                bytes,
            });
            self.next_id += 1;
        }
    }

    /// When the next packet arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Duration> {
        self.queue.peek().map(|p| p.at)
    }

    /// The next packet due at or before `now`: (sender, receiver, bytes).
    pub fn pop_due(&mut self, now: Duration) -> Option<(NodeId, NodeId, Vec<u8>)> {
        if self.queue.peek()?.at > now {
            return None;
        }
        self.queue.pop().map(|p| (p.from, p.to, p.bytes))
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
