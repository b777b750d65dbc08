//! Pools, their back-ends' shared state (health, load), and the selection policies.
//!
//! Shaped after pingora's load-balancing selection (`pingora-load-balancing/src/selection/`):
//! a policy is built once from a pool's back-ends and then answers "which one" given a
//! key, with an `accept` filter (healthy, not already tried) applied during selection
//! rather than by retrying, so a decision is a single pass over the pool and never
//! allocates. Unlike pingora's, some policies here are stateful (smooth weighted round
//! robin's current weights, LARD's server sets), so selection takes `&mut self` on a
//! single-threaded dispatcher instead of atomics behind `&self`.

use std::{net::SocketAddr, time::Duration};

use baton_common::kernel_dispatch::{
    KernelLardSet, LardScan, LeastLoaded, backend_load, lard_overloaded, lard_start,
};
use baton_proto::frontend::{Backend, Instant};

use crate::{hash, view::RequestView};

/// One back-end's state, shared by every pool that lists it: its health and its load
/// are properties of the server, not of a pool.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) addr: Backend,
    /// What the caller last said (`Dispatcher::set_health`), e.g. from active checks.
    pub(crate) admin_up: bool,
    /// Handoff failures since the last success.
    pub(crate) consecutive_failures: u32,
    /// Passively marked down until this instant.
    pub(crate) retry_at: Option<Instant>,
    /// The back-off the next passive marking will use.
    pub(crate) next_backoff: Duration,
    /// The daemon's books of this back-end's connections: confirmed handoffs less
    /// closes, less the kernel's handoffs whose records were read (which the kernel
    /// counts in `kernel_opened` until then). Signed: with the kernel's handoffs taken
    /// over it may be below zero while `kernel_opened` is above.
    pub(crate) booked: i64,
    /// The handoffs the XDP program made to it, as last read from its count (zero
    /// without dispatch in the kernel).
    pub(crate) kernel_opened: u64,
}

impl Server {
    pub(crate) fn new(addr: Backend, backoff: Duration) -> Self {
        Self {
            addr,
            admin_up: true,
            consecutive_failures: 0,
            retry_at: None,
            next_backoff: backoff,
            booked: 0,
            kernel_opened: 0,
        }
    }

    /// Connections handed off and not yet closed, by whichever engine: the figure both
    /// engines compare (`baton_common::kernel_dispatch::backend_load`).
    #[inline]
    pub(crate) fn active(&self) -> u32 {
        backend_load(self.kernel_opened, self.booked as u64)
    }

    /// May it take a new connection at `now`?
    #[inline]
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.admin_up && self.retry_at.is_none_or(|t| now >= t)
    }
}

/// A pool's entry for one server.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Index into the dispatcher's servers.
    pub(crate) server: usize,
    pub(crate) addr: Backend,
    pub(crate) weight: u32,
    /// The id a sticky cookie names it by.
    pub(crate) id: Option<Box<str>>,
    /// The server's identity for rendezvous hashing: a hash of its address, so a key's
    /// owner depends on which servers are present, never on their order in the file.
    pub(crate) seed: u64,
}

impl Member {
    pub(crate) fn new(server: usize, addr: Backend, weight: u32, id: Option<Box<str>>) -> Self {
        Self {
            server,
            addr,
            weight,
            id,
            seed: address_seed(addr),
        }
    }
}

/// A member's hash seed from its address and port: IPv4's six bytes as before (the
/// rendezvous scores of IPv4 pools do not move), IPv6's eighteen.
fn address_seed(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(addr) => {
            let mut bytes = [0u8; 6];
            bytes[..4].copy_from_slice(&addr.ip().octets());
            bytes[4..].copy_from_slice(&addr.port().to_be_bytes());
            hash::hash_bytes(&bytes)
        }
        SocketAddr::V6(addr) => {
            let mut bytes = [0u8; 18];
            bytes[..16].copy_from_slice(&addr.ip().octets());
            bytes[16..].copy_from_slice(&addr.port().to_be_bytes());
            hash::hash_bytes(&bytes)
        }
    }
}

/// The back-ends one decision may use: a pool's members, the servers' state, the
/// time, those already tried, and the client's family.
pub(crate) struct Candidates<'s> {
    pub(crate) members: &'s [Member],
    pub(crate) servers: &'s [Server],
    pub(crate) now: Instant,
    pub(crate) exclude: &'s [Backend],
    /// `Some(true)` for an IPv6 client, `Some(false)` for IPv4: only members of that
    /// family are candidates, since a connection never mixes families. `None` (no
    /// client known: the kernel's compilation) takes every member.
    pub(crate) client_ipv6: Option<bool>,
}

impl Candidates<'_> {
    /// Member `i` is up and not yet tried for this connection.
    #[inline]
    pub(crate) fn accept(&self, i: usize) -> bool {
        let m = &self.members[i];
        self.servers[m.server].is_available(self.now)
            && !self.exclude.contains(&m.addr)
            && self.client_ipv6.is_none_or(|v6| m.addr.is_ipv6() == v6)
    }

    /// Member `i`'s server's active connections.
    #[inline]
    pub(crate) fn load(&self, i: usize) -> u32 {
        self.servers[self.members[i].server].active()
    }
}

/// What a key-based policy hashes.
#[derive(Debug, Clone)]
pub(crate) enum HashKey {
    /// The URL path (without query).
    Path,
    /// The path and the query.
    Url,
    /// The Host (or SNI).
    Host,
    /// The client's address.
    ClientAddress,
    /// The first value of this header field (name stored lower case).
    Header(Box<str>),
    /// This cookie's value.
    Cookie(Box<str>),
    /// This query parameter's value.
    Query(Box<str>),
}

impl HashKey {
    /// The key's hash, or, when the request lacks the key (no such header, a TLS
    /// request's path), the client address's: a deterministic fallback that keeps one
    /// client on one back-end rather than spraying it.
    pub(crate) fn hash(&self, view: &RequestView<'_>) -> u64 {
        let key = match self {
            Self::Path => view.path.map(str::as_bytes),
            Self::Url => {
                return match (view.path, view.query) {
                    (Some(p), Some(q)) => hash::mix64(
                        hash::hash_bytes(p.as_bytes())
                            ^ hash::hash_bytes(q.as_bytes()).rotate_left(17),
                    ),
                    (Some(p), None) => hash::hash_bytes(p.as_bytes()),
                    _ => client_hash(view),
                };
            }
            Self::Host => {
                // Case-insensitive without allocating: fold as we go would need a
                // second hash function; hosts are short, so lower into a stack buffer.
                return match view.host {
                    Some(h) if h.len() <= 255 => {
                        let mut buf = [0u8; 255];
                        for (d, s) in buf.iter_mut().zip(h.bytes()) {
                            *d = s.to_ascii_lowercase();
                        }
                        hash::hash_bytes(&buf[..h.len()])
                    }
                    _ => client_hash(view),
                };
            }
            Self::ClientAddress => None,
            Self::Header(name) => view.header_values(name).next(),
            Self::Cookie(name) => view.cookie(name).map(str::as_bytes),
            Self::Query(name) => view.query_param(name).map(str::as_bytes),
        };
        key.map_or_else(|| client_hash(view), hash::hash_bytes)
    }
}

fn client_hash(view: &RequestView<'_>) -> u64 {
    view.client.map_or(0, |ip| match ip {
        std::net::IpAddr::V4(ip) => hash::mix64(u64::from(u32::from(ip)) ^ 0x5bd1_e995),
        std::net::IpAddr::V6(ip) => hash::hash_bytes(&ip.octets()),
    })
}

/// How a pool chooses among its accepted members.
#[derive(Debug, Clone)]
pub(crate) enum Policy {
    SmoothWeighted(SmoothWeighted),
    LeastConnections(LeastConnections),
    ConsistentHash(HashKey),
    Lard(Box<Lard>),
}

impl Policy {
    pub(crate) fn select(&mut self, c: &Candidates<'_>, view: &RequestView<'_>) -> Option<usize> {
        match self {
            Self::SmoothWeighted(p) => p.select(c),
            Self::LeastConnections(p) => p.select(c),
            Self::ConsistentHash(key) => rendezvous(c, key.hash(view)),
            Self::Lard(p) => {
                let target = p.target.hash(view);
                p.select(c, target)
            }
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::SmoothWeighted(_) => "round_robin",
            Self::LeastConnections(_) => "least_connections",
            Self::ConsistentHash(_) => "consistent_hash",
            Self::Lard(_) => "lard",
        }
    }
}

/// nginx's smooth weighted round robin (`ngx_http_upstream_get_peer` in
/// `src/http/ngx_http_upstream_round_robin.c`): each pick adds every peer's weight to its current weight, takes the
/// peer with the largest current weight (the first on ties) and subtracts the total from
/// it. Weights 5, 1, 1 give `a a b a c a a`, interleaved rather than `a a a a a b c`.
/// Down and already-tried peers take no part in a pick, as in nginx.
#[derive(Debug, Clone)]
pub(crate) struct SmoothWeighted {
    current: Box<[i64]>,
}

impl SmoothWeighted {
    pub(crate) fn new(members: usize) -> Self {
        Self {
            current: vec![0; members].into(),
        }
    }

    pub(crate) fn select(&mut self, c: &Candidates<'_>) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..c.members.len() {
            if !c.accept(i) {
                continue;
            }
            let weight = i64::from(c.members[i].weight);
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

/// Weighted least connections (LVS's `wlc`): the member with the fewest active
/// connections per unit of weight, compared as `active_a * weight_b < active_b *
/// weight_a` so there is no division. Ties go round robin (a rotating starting point):
/// the dispatcher hears of a connection only once its handoff is confirmed, so a burst
/// of decisions in between would otherwise all land on the first idle member.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeastConnections {
    next: usize,
}

impl LeastConnections {
    fn select(&mut self, c: &Candidates<'_>) -> Option<usize> {
        let n = c.members.len();
        let start = self.next % n.max(1);
        self.next = self.next.wrapping_add(1);
        // The kernel's pick (`baton_common::kernel_dispatch`), so that both engines
        // pick alike from the same counts.
        let mut best = LeastLoaded::default();
        for k in 0..n {
            let i = (start + k) % n;
            if !c.accept(i) {
                continue;
            }
            best.offer(i as u32, c.load(i), c.members[i].weight);
        }
        best.chosen().map(|i| i as usize)
    }
}

/// Weighted rendezvous (highest random weight) hashing: each accepted member scores
/// `hash(key, member)`, the highest wins. With weights, the score is
/// `weight / -ln(u)` for `u = hash` mapped to (0, 1) (Schindelhauer and Schomaker's
/// logarithmic method), which gives each member a share of keys proportional to its
/// weight.
///
/// Why rendezvous rather than Maglev: removing a member (down, excluded on a retry, or
/// gone from the configuration) moves exactly the keys it owned and no other, and they
/// come back when it returns, with no table to rebuild on every health change and no
/// 65,537-entry table per pool; a lookup costs one hash per member, which for pools of
/// tens of back-ends is tens of nanoseconds. Maglev's O(1) lookup pays off with hundreds
/// of back-ends per pool, which a handoff cluster does not have.
pub(crate) fn rendezvous(c: &Candidates<'_>, key: u64) -> Option<usize> {
    let uniform = c.members.windows(2).all(|w| w[0].weight == w[1].weight);
    let mut best: Option<(usize, f64, u64)> = None;
    for i in 0..c.members.len() {
        if !c.accept(i) {
            continue;
        }
        let m = &c.members[i];
        let h = hash::mix64(key ^ m.seed);
        let score = if uniform {
            0.0
        } else {
            // 53 random bits, centred in their interval so u is never 0 or 1.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            f64::from(m.weight) / -u.ln()
        };
        let better = best.is_none_or(|(_, bs, bh)| {
            if uniform {
                h > bh
            } else {
                score > bs || (score == bs && h > bh)
            }
        });
        if better {
            best = Some((i, score, h));
        }
    }
    best.map(|(i, _, _)| i)
}

/// LARD with replication (Pai et al., "Locality-Aware Request Distribution in
/// Cluster-based Network Servers", ASPLOS 1998, §2.3 and figure 4), as read here:
///
/// ```text
/// set = server_set[target]
/// if set is empty:                       n = least loaded node; set = {n}
/// else:
///     n = least loaded node in set;  m = most loaded node in set
///     if (load(n) > T_high and some node has load < T_low) or load(n) >= 2 T_high:
///         p = least loaded node; set += p; n = p
///     if |set| > 1 and now - set.last_change > K:  set -= m
/// if set changed: set.last_change = now
/// send to n
/// ```
///
/// A node's load is its number of active connections (handed off, not yet closed), the
/// paper's measure. The paper's nodes are identical, so weights play no part here. Down
/// and already-tried nodes are not nodes for this decision: a set whose members are all
/// unavailable is treated as empty. Targets are hashed into a fixed, direct-mapped table
/// (a slot remembers its target's full hash): a target evicted by a collision is simply
/// new again, which LARD handles by design, and the table never grows, so no decision
/// allocates. Sets are bit masks, so a LARD pool has at most 64 members. "Least loaded"
/// ties are broken from a target-dependent starting point, so that new targets spread
/// over idle nodes instead of piling onto the first.
#[derive(Debug, Clone)]
pub(crate) struct Lard {
    pub(crate) target: HashKey,
    pub(crate) low: u32,
    pub(crate) high: u32,
    /// K: a set that has not changed for this long loses its most loaded node.
    pub(crate) shrink_after: Duration,
    slots: Box<[LardSlot]>,
    /// The slots whose sets changed, for the kernel's copy (`FRONTEND_LARD_SETS`).
    changed: Vec<u32>,
    /// More changed than `changed` holds: every slot is written again.
    all_changed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct LardSlot {
    target: u64,
    servers: u64,
    last_change: Instant,
}

impl Lard {
    /// At most this many members: sets are `u64` masks.
    pub(crate) const MAX_MEMBERS: usize = 64;
    /// Changed slots kept for the daemon between two of its takes (it takes them after
    /// each packet): bounded, so that a dispatcher without dispatch in the kernel,
    /// whose changes nobody takes, does not grow.
    pub(crate) const MAX_CHANGES: usize = 256;

    pub(crate) fn new(
        target: HashKey,
        low: u32,
        high: u32,
        shrink_after: Duration,
        targets: usize,
    ) -> Self {
        let size = targets.max(1).next_power_of_two();
        Self {
            target,
            low,
            high,
            shrink_after,
            slots: vec![LardSlot::default(); size].into(),
            changed: Vec::with_capacity(Self::MAX_CHANGES),
            all_changed: false,
        }
    }

    /// The set currently serving `target`, as a mask of member indices.
    #[cfg(test)]
    pub(crate) fn server_set(&self, target: u64) -> u64 {
        let slot = &self.slots[self.slot_index(target)];
        if slot.target == target {
            slot.servers
        } else {
            0
        }
    }

    fn slot_index(&self, target: u64) -> usize {
        // The table size is a power of two; the hash is well mixed, so its low bits do.
        (target as usize) & (self.slots.len() - 1)
    }

    /// Gives `write` each slot whose set changed since the last take, with its set as
    /// the kernel reads it; every slot that holds a set when more than
    /// [`Lard::MAX_CHANGES`] changed in between.
    pub(crate) fn take_changes(&mut self, mut write: impl FnMut(u32, KernelLardSet)) {
        if std::mem::take(&mut self.all_changed) {
            self.changed.clear();
            for i in 0..self.slots.len() {
                if self.slots[i].servers != 0 {
                    write(i as u32, self.kernel_set(i));
                }
            }
            return;
        }
        for k in 0..self.changed.len() {
            let i = self.changed[k] as usize;
            write(i as u32, self.kernel_set(i));
        }
        self.changed.clear();
    }

    /// Every slot that holds a set, for a new generation of the kernel's tables.
    pub(crate) fn sets(&self) -> impl Iterator<Item = (u32, KernelLardSet)> + '_ {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].servers != 0)
            .map(|i| (i as u32, self.kernel_set(i)))
    }

    /// The table's size, a power of two.
    pub(crate) fn targets(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// Slot `i` as the XDP program reads it.
    fn kernel_set(&self, i: usize) -> KernelLardSet {
        let slot = &self.slots[i];
        let shrink_after = u64::try_from(self.shrink_after.as_nanos()).unwrap_or(u64::MAX);
        KernelLardSet {
            target: slot.target,
            servers: slot.servers,
            shrink_at: slot.last_change.as_nanos().saturating_add(shrink_after),
        }
    }

    fn note_change(&mut self, index: usize) {
        if self.changed.len() < Self::MAX_CHANGES {
            self.changed.push(index as u32);
        } else {
            self.all_changed = true;
        }
    }

    pub(crate) fn select(&mut self, c: &Candidates<'_>, target: u64) -> Option<usize> {
        let n_members = c.members.len();
        let index = self.slot_index(target);
        // A slot holding another target holds no set for this one.
        let servers = match self.slots[index] {
            s if s.target == target => s.servers,
            _ => 0,
        };
        // The pass the kernel makes (`baton_common::kernel_dispatch::LardScan`), so that
        // both engines pick alike from the same counts where the set stays as it is.
        let start = lard_start(target, n_members as u32) as usize;
        let mut pass = LardScan::default();
        for k in 0..n_members {
            let i = (start + k) % n_members;
            let in_set = servers & (1 << i) != 0;
            pass.offer(i as u32, c.accept(i), in_set, c.load(i), self.low);
        }
        let (least, _) = pass.least()?;
        let least = least as usize;
        let slot = &mut self.slots[index];
        if slot.target != target {
            *slot = LardSlot {
                target,
                ..LardSlot::default()
            };
        }
        let chosen;
        let mut changed = false;
        match pass.least_live() {
            None => {
                chosen = least;
                slot.servers = 1 << chosen;
                changed = true;
            }
            Some((n, load)) => {
                let mut n = n as usize;
                let live = slot.servers;
                let mut m = n;
                for i in 0..n_members {
                    if live & (1 << i) != 0 && c.accept(i) && c.load(i) > c.load(m) {
                        m = i;
                    }
                }
                if lard_overloaded(load, pass.under_low(), self.high) {
                    if slot.servers & (1 << least) == 0 {
                        slot.servers |= 1 << least;
                        changed = true;
                    }
                    n = least;
                }
                if slot.servers.count_ones() > 1
                    && m != n
                    && c.now.saturating_duration_since(slot.last_change) > self.shrink_after
                {
                    slot.servers &= !(1 << m);
                    changed = true;
                }
                chosen = n;
            }
        }
        if changed {
            slot.last_change = c.now;
            self.note_change(index);
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn be(k: u8) -> Backend {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10 + k), 80).into()
    }

    fn setup(weights: &[u32]) -> (Vec<Member>, Vec<Server>) {
        let servers: Vec<_> = (0..weights.len())
            .map(|i| Server::new(be(i as u8 + 1), Duration::from_secs(1)))
            .collect();
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member::new(i, be(i as u8 + 1), w, None))
            .collect();
        (members, servers)
    }

    fn cands<'a>(m: &'a [Member], s: &'a [Server], exclude: &'a [Backend]) -> Candidates<'a> {
        Candidates {
            members: m,
            servers: s,
            now: Instant::ZERO,
            exclude,
            client_ipv6: None,
        }
    }

    #[test]
    fn smooth_weighted_matches_nginx() {
        let (m, s) = setup(&[5, 1, 1]);
        let mut p = SmoothWeighted::new(3);
        let picks: String = (0..14)
            .map(|_| (b'a' + p.select(&cands(&m, &s, &[])).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaaaabacaa");
    }

    #[test]
    fn smooth_weighted_skips_down_and_excluded() {
        let (m, mut s) = setup(&[5, 1, 1]);
        s[0].admin_up = false;
        let mut p = SmoothWeighted::new(3);
        let picks: Vec<_> = (0..4)
            .map(|_| p.select(&cands(&m, &s, &[])).unwrap())
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        assert_eq!(p.select(&cands(&m, &s, &[be(2)])), Some(2));
        assert_eq!(p.select(&cands(&m, &s, &[be(2), be(3)])), None);
    }

    #[test]
    fn least_connections_by_weight() {
        let (m, mut s) = setup(&[1, 3, 1]);
        // 2/1, 5/3, 1/1: the last is least loaded per unit of weight.
        s[0].booked = 2;
        s[1].booked = 5;
        s[2].booked = 1;
        let mut p = LeastConnections::default();
        for _ in 0..3 {
            assert_eq!(p.select(&cands(&m, &s, &[])), Some(2));
        }
        // 2/1, 5/3, 2/1: now the heavy one (5/3 < 2).
        s[2].booked = 2;
        assert_eq!(p.select(&cands(&m, &s, &[])), Some(1));
        assert_eq!(
            p.select(&cands(&m, &s, &[be(2)])).map(|i| i != 1),
            Some(true)
        );
        // Ties rotate.
        for srv in &mut s {
            srv.booked = 0;
        }
        let mut seen: Vec<_> = (0..3)
            .map(|_| p.select(&cands(&m, &s, &[])).unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn rendezvous_is_stable_and_skips_unavailable() {
        let (m, mut s) = setup(&[1, 1, 1, 1]);
        let key = hash::hash_bytes(b"/some/object");
        let owner = rendezvous(&cands(&m, &s, &[]), key).unwrap();
        assert_eq!(rendezvous(&cands(&m, &s, &[]), key), Some(owner));
        s[owner].admin_up = false;
        let second = rendezvous(&cands(&m, &s, &[]), key).unwrap();
        assert_ne!(second, owner);
        // The retry order is the same ranking: excluding the owner gives the same second.
        s[owner].admin_up = true;
        assert_eq!(
            rendezvous(&cands(&m, &s, &[m[owner].addr]), key),
            Some(second)
        );
    }

    #[test]
    fn lard_moves_a_hot_target_past_t_high() {
        let (m, mut s) = setup(&[1, 1, 1]);
        let mut lard = Lard::new(HashKey::Path, 25, 65, Duration::from_secs(20), 64);
        let target = hash::hash_bytes(b"/hot");
        let first = lard.select(&cands(&m, &s, &[]), target).unwrap();
        assert_eq!(lard.server_set(target), 1 << first);
        // Under T_high it stays, however loaded the others are not.
        s[first].booked = 65;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(first));
        // Past T_high with an idle node (< T_low) elsewhere: a new node joins the set.
        s[first].booked = 66;
        let other = (first + 1) % 3;
        s[other].booked = 10;
        s[(first + 2) % 3].booked = 30;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(other));
        assert_eq!(lard.server_set(target), (1 << first) | (1 << other));
        // Both in the set serve it, the least loaded first.
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(other));
    }

    #[test]
    fn lard_moves_at_twice_t_high_without_an_idle_node() {
        let (m, mut s) = setup(&[1, 1]);
        let mut lard = Lard::new(HashKey::Path, 25, 65, Duration::from_secs(20), 64);
        let target = hash::hash_bytes(b"/x");
        let first = lard.select(&cands(&m, &s, &[]), target).unwrap();
        s[first].booked = 129;
        s[1 - first].booked = 100;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(first));
        s[first].booked = 130;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(1 - first));
    }

    #[test]
    fn lard_shrinks_an_idle_set_after_k() {
        let (m, mut s) = setup(&[1, 1]);
        let mut lard = Lard::new(HashKey::Path, 25, 65, Duration::from_secs(20), 64);
        let target = hash::hash_bytes(b"/y");
        let first = lard.select(&cands(&m, &s, &[]), target).unwrap();
        s[first].booked = 200;
        let second = lard.select(&cands(&m, &s, &[]), target).unwrap();
        assert_eq!(lard.server_set(target).count_ones(), 2);
        let later = Candidates {
            now: Instant::ZERO + Duration::from_secs(21),
            ..cands(&m, &s, &[])
        };
        // The most loaded node leaves the set.
        assert_eq!(lard.select(&later, target), Some(second));
        assert_eq!(lard.server_set(target), 1 << second);
    }

    #[test]
    fn lard_reassigns_when_the_set_is_down() {
        let (m, mut s) = setup(&[1, 1]);
        let mut lard = Lard::new(HashKey::Path, 25, 65, Duration::from_secs(20), 64);
        let target = hash::hash_bytes(b"/z");
        let first = lard.select(&cands(&m, &s, &[]), target).unwrap();
        s[first].admin_up = false;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), Some(1 - first));
        assert_eq!(lard.server_set(target), 1 << (1 - first));
        s[1 - first].admin_up = false;
        assert_eq!(lard.select(&cands(&m, &s, &[]), target), None);
    }

    /// The kernel's read-only LARD pick (`LardScan::read_only`, from the set as the
    /// daemon writes it for the XDP program) against `Lard::select` over generated
    /// states: members up or down, loads around the thresholds, sets with down members,
    /// slots holding another target, shrinks due or not. Wherever `select` leaves the
    /// slot as it was, the kernel picks the same member (or answers "pool down" where
    /// `select` has none); wherever `select` changes the slot, the kernel says
    /// `LARD_SET`. Each kind of change occurs, so none goes unchecked.
    #[test]
    fn lard_read_only_pick_is_select_wherever_select_changes_nothing() {
        use baton_common::kernel_dispatch::{lard_set_key, reason};

        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let (low, high) = (3, 6);
        let (mut same, mut new_target, mut added, mut shrunk, mut reassigned, mut down) =
            (0, 0, 0, 0, 0, 0);
        for _ in 0..20_000 {
            let n = 1 + next(6) as usize;
            let (m, mut s) = setup(&vec![1; n]);
            for server in &mut s {
                server.admin_up = next(5) != 0;
                server.booked = next(2 * high as u64 + 3) as i64;
            }
            let mut lard = Lard::new(HashKey::Path, low, high, Duration::from_secs(20), 8);
            let target = next(64);
            let index = lard.slot_index(target);
            // The slot: empty, this target's set, or another target's.
            let holder = match next(4) {
                0 => 0,
                1 => target ^ 8,
                _ => target,
            };
            lard.slots[index] = LardSlot {
                target: holder,
                servers: next(1 << n),
                last_change: Instant::from_nanos(next(40) * 1_000_000_000),
            };
            let now = Instant::from_nanos(next(80) * 1_000_000_000);
            let before = lard.slots[index];
            // What the XDP program reads: the slot's entry, if the daemon wrote one.
            let set = (before.servers != 0).then(|| lard.kernel_set(index));
            assert_eq!(lard_set_key(0, 0, target, 8).slot as usize, index);
            let c = Candidates {
                members: &m,
                servers: &s,
                now,
                exclude: &[],
                client_ipv6: None,
            };
            let mut pass = LardScan::default();
            let start = lard_start(target, n as u32) as usize;
            for k in 0..n {
                let i = (start + k) % n;
                let in_set = set.is_some_and(|set| set.servers & (1 << i) != 0);
                pass.offer(i as u32, c.accept(i), in_set, c.load(i), low);
            }
            let kernel = pass.read_only(set.as_ref(), target, high, now.as_nanos());
            let chosen = lard.select(&c, target);
            let after = lard.slots[index];
            let unchanged = after.target == before.target
                && after.servers == before.servers
                && after.last_change == before.last_change;
            if unchanged {
                match chosen {
                    Some(i) => assert_eq!(kernel, Ok(i as u32), "{before:?} at {now:?}"),
                    None => assert_eq!(kernel, Err(reason::POOL_DOWN)),
                }
                if chosen.is_some() {
                    same += 1;
                } else {
                    down += 1;
                }
                continue;
            }
            assert_eq!(kernel, Err(reason::LARD_SET), "{before:?} -> {after:?}");
            let live = before.servers & (0..n).filter(|&i| c.accept(i)).fold(0, |a, i| a | 1 << i);
            if before.target != target || before.servers == 0 {
                new_target += 1;
            } else if live == 0 {
                reassigned += 1;
            } else if after.servers & !before.servers != 0 {
                added += 1;
            } else {
                shrunk += 1;
            }
        }
        for (what, count) in [
            ("unchanged", same),
            ("pool down", down),
            ("new target", new_target),
            ("set down", reassigned),
            ("member added", added),
            ("shrunk", shrunk),
        ] {
            assert!(count > 100, "only {count} cases of {what}");
        }
    }
}
