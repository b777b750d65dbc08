//! [`Dispatcher`]: rules, pools and health state, and the decision itself.

use std::{collections::HashMap, time::Duration};

use baton_common::kernel_dispatch::KernelLardSet;
use baton_proto::{
    frontend::{Backend, Dispatch, Feedback, FlowKey, Instant},
    request::ClientRequest,
};

use crate::{
    ConfigError,
    matcher::{Condition, Facts, SharedNames},
    pool::{Candidates, Member, Policy, Server, rendezvous},
    view::RequestView,
};

/// One ordered rule: when `condition` holds, `pool` serves.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: Box<str>,
    pub(crate) condition: Condition,
    pub(crate) pool: usize,
}

/// A named set of back-ends and the policy that picks among them.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) name: Box<str>,
    pub(crate) members: Box<[Member]>,
    pub(crate) policy: Policy,
    pub(crate) sticky: Option<Sticky>,
}

/// Session affinity read from a cookie the application sets.
#[derive(Debug, Clone)]
pub(crate) struct Sticky {
    pub(crate) cookie: Box<str>,
    pub(crate) by: StickyBy,
}

#[derive(Debug, Clone)]
pub(crate) enum StickyBy {
    /// The cookie names the back-end's `id`: the whole value (`be2`), or what follows
    /// the last `separator` (`ABC123.be2`, Tomcat's jvmRoute), or the whole value when
    /// there is no separator in it.
    Id { separator: Option<Box<str>> },
    /// The cookie's value is hashed onto the pool (rendezvous, weights respected).
    Hash,
}

impl Sticky {
    fn choose(&self, c: &Candidates<'_>, view: &RequestView<'_>) -> Option<usize> {
        let value = view.cookie(&self.cookie)?;
        match &self.by {
            StickyBy::Id { separator } => {
                let id = match separator {
                    Some(sep) => value.rsplit_once(&**sep).map_or(value, |(_, id)| id),
                    None => value,
                };
                let i = c.members.iter().position(|m| m.id.as_deref() == Some(id))?;
                c.accept(i).then_some(i)
            }
            StickyBy::Hash => rendezvous(c, crate::hash::hash_bytes(value.as_bytes())),
        }
    }
}

/// Passive health: after `failures` handoff failures in a row a back-end is down for
/// `backoff`, doubling at each further failure up to `max_backoff`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthPolicy {
    pub(crate) failures: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'d> {
    /// Hand the connection off to this back-end.
    Backend(Backend),
    /// No back-end of the chosen pool is up (or every one that is has been tried):
    /// answer `503 Service Unavailable` with this body (an HTTP client), or reset (TLS).
    Unavailable {
        /// The configured `unavailable_body`.
        body: &'d str,
    },
}

/// Which rule chose the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The rule at this index (in the file's order).
    Rule(usize),
    /// No rule matched: the default pool.
    Default,
}

/// An active HTTP health check the caller runs for a back-end (the dispatcher does no
/// I/O): every `interval`, `GET path` on the back-end's address (on `port` instead of
/// its own when set), answered with a 2xx or 3xx status within `timeout`; `fall` failures
/// in a row take it down, `rise` successes in a row bring it back. The caller reports
/// the outcome with [`Dispatcher::set_health`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// The request target, such as `/healthz`: printable ASCII, no spaces.
    pub path: Box<str>,
    /// The port to check instead of the back-end's own (a TLS back-end's plain HTTP one).
    pub port: Option<u16>,
    /// Time from one check's start to the next.
    pub interval: Duration,
    /// Longest a check may take, connection included.
    pub timeout: Duration,
    /// Successes in a row that bring a down back-end up.
    pub rise: u32,
    /// Failures in a row that take an up back-end down.
    pub fall: u32,
}

/// A back-end's state as the dispatcher sees it, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStatus {
    /// Set by the caller ([`Dispatcher::set_health`]).
    pub admin_up: bool,
    /// May it take a new connection now (up, and not passively marked down)?
    pub available: bool,
    /// Handoff failures since the last success.
    pub consecutive_failures: u32,
    /// Passively marked down until this instant, if it is.
    pub retry_at: Option<Instant>,
    /// Connections handed off and not yet closed.
    pub active: u32,
}

/// The content-aware dispatcher: ordered rules (first match wins) choose a pool, the
/// pool's stickiness or policy chooses a healthy back-end. See the crate documentation.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    rules: Box<[Rule]>,
    shared_names: SharedNames,
    default_pool: usize,
    pools: Box<[Pool]>,
    servers: Box<[Server]>,
    server_index: HashMap<Backend, usize>,
    health: HealthPolicy,
    checks: Box<[(Backend, HealthCheck)]>,
    unavailable_body: Box<str>,
    rule_hits: Box<[u64]>,
    default_hits: u64,
    unavailable: u64,
    /// The route and pool (index into `pools`) of the last decision.
    last: (Route, usize),
    now: Instant,
}

impl Dispatcher {
    /// Parses and checks a TOML configuration (see the crate documentation).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        crate::config::parse(text)
    }

    /// Checks a configuration that was deserialized as a table of a larger TOML file
    /// whose text is `text`: errors give that file's lines, and fields relative to the
    /// table (see [`ConfigError::in_table`]).
    pub fn from_table(table: crate::DispatchTable, text: &str) -> Result<Self, ConfigError> {
        crate::config::from_table(table, text)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, the configuration's compiler"
    )]
    pub(crate) fn from_parts(
        rules: Vec<Rule>,
        shared_names: SharedNames,
        default_pool: usize,
        pools: Vec<Pool>,
        servers: Vec<Server>,
        server_index: HashMap<Backend, usize>,
        health: HealthPolicy,
        checks: Vec<(Backend, HealthCheck)>,
        unavailable_body: Box<str>,
    ) -> Self {
        let rule_hits = vec![0; rules.len()].into();
        Self {
            rules: rules.into(),
            shared_names,
            default_pool,
            pools: pools.into(),
            servers: servers.into(),
            server_index,
            health,
            checks: checks.into(),
            unavailable_body,
            rule_hits,
            default_hits: 0,
            unavailable: 0,
            last: (Route::Default, default_pool),
            now: Instant::ZERO,
        }
    }

    /// Notes the time of an input. Time never goes backwards: an earlier instant is
    /// ignored. [`Self::backend_status`] reports as of the latest.
    fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Which rule's pool serves `view` (no state changes, nothing counted).
    pub fn route(&self, view: &RequestView<'_>) -> Route {
        let mut facts = Facts::new(&self.shared_names);
        self.rules
            .iter()
            .position(|r| r.condition.matches(view, &mut facts))
            .map_or(Route::Default, Route::Rule)
    }

    /// Chooses a back-end for `view` at `now`, other than those in `exclude` (the ones
    /// already tried for this connection). A first decision (empty `exclude`) counts
    /// toward its rule's hits; retries do not.
    pub fn decide(
        &mut self,
        now: Instant,
        view: &RequestView<'_>,
        exclude: &[Backend],
    ) -> Decision<'_> {
        self.set_now(now);
        let route = self.route(view);
        let pool_index = match route {
            Route::Rule(i) => self.rules[i].pool,
            Route::Default => self.default_pool,
        };
        if exclude.is_empty() {
            match route {
                Route::Rule(i) => self.rule_hits[i] += 1,
                Route::Default => self.default_hits += 1,
            }
        }
        self.last = (route, pool_index);
        let pool = &mut self.pools[pool_index];
        let c = Candidates {
            members: &pool.members,
            servers: &self.servers,
            now: self.now,
            exclude,
            // A client's family picks the back-ends of that family: a pool with none
            // up is, for this client, a pool with no healthy back-end (503, counted in
            // `unavailable`).
            client_ipv6: view.client.map(|ip| ip.is_ipv6()),
        };
        let chosen = pool
            .sticky
            .as_ref()
            .and_then(|s| s.choose(&c, view))
            .or_else(|| pool.policy.select(&c, view));
        match chosen {
            Some(i) => Decision::Backend(pool.members[i].addr),
            None => {
                self.unavailable += 1;
                Decision::Unavailable {
                    body: &self.unavailable_body,
                }
            }
        }
    }

    /// Books a decision the kernel made for `view` (kernel dispatch): its route counts
    /// toward its rule's hits and becomes [`Dispatcher::last_route`], as with
    /// [`Dispatcher::decide`]; the back-end is the kernel's, not chosen here.
    pub fn assign(&mut self, now: Instant, view: &RequestView<'_>) {
        self.set_now(now);
        let route = self.route(view);
        let pool_index = match route {
            Route::Rule(i) => {
                self.rule_hits[i] += 1;
                self.rules[i].pool
            }
            Route::Default => {
                self.default_hits += 1;
                self.default_pool
            }
        };
        self.last = (route, pool_index);
    }

    /// Sets a back-end's health as the caller sees it (active checks, an operator).
    /// Down, it gets no new connection; its established ones are not the dispatcher's
    /// business. Returns `false` for an address no pool lists.
    pub fn set_health(&mut self, backend: Backend, up: bool) -> bool {
        self.server_mut(backend).map(|s| s.admin_up = up).is_some()
    }

    /// A connection was handed off to `backend` (the handoff was confirmed): one more
    /// active connection, and the back-end has proven itself, so passive marking resets.
    pub fn on_handed_off(&mut self, backend: Backend) {
        let initial = self.health.backoff;
        if let Some(s) = self.server_mut(backend) {
            s.booked += 1;
            s.consecutive_failures = 0;
            s.retry_at = None;
            s.next_backoff = initial;
        }
    }

    /// A handed-off connection to `backend` closed.
    pub fn on_closed(&mut self, backend: Backend) {
        if let Some(s) = self.server_mut(backend) {
            s.booked -= 1;
        }
    }

    /// The daemon read the record of a handoff the XDP program made to `backend`, which
    /// the program counted in its own count (`kernel_opened`): the connection leaves
    /// that count for these books, where the core's feedback counts it from its
    /// confirmation to its end like any other (`on_handed_off`, `on_closed`), whether
    /// the core adopts it or not. (docs/design.md, "Least connections in the kernel".)
    pub fn on_kernel_handoff(&mut self, backend: Backend) {
        if let Some(s) = self.server_mut(backend) {
            s.booked -= 1;
        }
    }

    /// The XDP program's count of its handoffs to `backend`, as just read.
    pub fn set_kernel_opened(&mut self, backend: Backend, opened: u64) {
        if let Some(s) = self.server_mut(backend) {
            s.kernel_opened = opened;
        }
    }

    /// Every back-end with its books ([`Dispatcher::on_kernel_handoff`]), as the daemon
    /// writes them for the XDP program (`u64`, wrapping, added to the kernel's count).
    pub fn booked_connections(&self) -> impl Iterator<Item = (Backend, u64)> + '_ {
        self.servers.iter().map(|s| (s.addr, s.booked as u64))
    }

    /// Whether a pool picks by the connection counts (least connections or LARD): only
    /// then need the daemon keep the kernel's figures fresh for each decision.
    pub fn uses_connection_counts(&self) -> bool {
        self.pools
            .iter()
            .any(|p| matches!(p.policy, Policy::LeastConnections(_) | Policy::Lard(_)))
    }

    /// A handoff to `backend` failed at `now` (it stayed silent or reset). After
    /// `health.failures` failures in a row it is down for a back-off that starts at
    /// `health.backoff_ms` and doubles, up to `health.max_backoff_ms`, at each failure
    /// after that, including the first try once a back-off has run out; a confirmed
    /// handoff resets all of it.
    pub fn on_handoff_failed(&mut self, backend: Backend, now: Instant) {
        self.set_now(now);
        let health = self.health;
        if let Some(s) = self.server_mut(backend) {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if s.consecutive_failures >= health.failures {
                s.retry_at = Some(now + s.next_backoff);
                s.next_backoff = (s.next_backoff * 2).min(health.max_backoff);
            }
        }
    }

    /// Takes over what `old` (the configuration this one replaces) knows of the
    /// back-ends both list: active connections (so that connections handed off before a
    /// reload are counted, and their closes too), passive marking and its back-off, and
    /// the active checks' verdict for back-ends this configuration still checks (one it
    /// no longer checks is up). Rules, pools and policy state start afresh.
    pub fn take_state_from(&mut self, old: &Dispatcher) {
        self.now = self.now.max(old.now);
        let (min, max) = (self.health.backoff, self.health.max_backoff);
        for s in self.servers.iter_mut() {
            let Some(&i) = old.server_index.get(&s.addr) else {
                continue;
            };
            let o = &old.servers[i];
            s.booked = o.booked;
            s.kernel_opened = o.kernel_opened;
            s.consecutive_failures = o.consecutive_failures;
            s.retry_at = o.retry_at;
            s.next_backoff = o.next_backoff.clamp(min, max);
            s.admin_up = o.admin_up || !self.checks.iter().any(|(b, _)| *b == s.addr);
        }
    }

    /// The route and the pool (an index into [`Self::pools`]) of the last decision made,
    /// first or retry: what to log beside a handoff.
    pub fn last_route(&self) -> (Route, usize) {
        self.last
    }

    /// The active health checks to run, one per back-end and distinct check (a back-end
    /// in pools with different checks has each; it is up while every one passes).
    pub fn health_checks(&self) -> &[(Backend, HealthCheck)] {
        &self.checks
    }

    /// The state of `backend`, `None` if no pool lists it.
    pub fn backend_status(&self, backend: Backend) -> Option<BackendStatus> {
        let s = &self.servers[*self.server_index.get(&backend)?];
        Some(BackendStatus {
            admin_up: s.admin_up,
            available: s.is_available(self.now),
            consecutive_failures: s.consecutive_failures,
            retry_at: s.retry_at.filter(|&t| t > self.now),
            active: s.active(),
        })
    }

    /// Every back-end any pool lists, each once, in the file's order.
    pub fn backends(&self) -> impl Iterator<Item = Backend> + '_ {
        self.servers.iter().map(|s| s.addr)
    }

    /// First decisions per rule, indexed like [`Self::rule_names`].
    pub fn rule_hits(&self) -> &[u64] {
        &self.rule_hits
    }

    /// First decisions that no rule matched.
    pub fn default_hits(&self) -> u64 {
        self.default_hits
    }

    /// Decisions (first or retries) that found no back-end available.
    pub fn unavailable_count(&self) -> u64 {
        self.unavailable
    }

    /// The rules' names (`name`, or `rules[i]`), in order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules.iter().map(|r| &*r.name)
    }

    /// The pools' names and policies, in name order (the order [`Self::last_route`]
    /// indexes).
    pub fn pools(&self) -> impl Iterator<Item = (&str, &'static str)> + '_ {
        self.pools.iter().map(|p| (&*p.name, p.policy.name()))
    }

    /// Every pool's members with their weights, as (pool, back-end, weight), pools in
    /// name order and members in the file's order: for status and metrics.
    pub fn pool_members(&self) -> impl Iterator<Item = (&str, Backend, u32)> + '_ {
        self.pools
            .iter()
            .flat_map(|p| p.members.iter().map(|m| (&*p.name, m.addr, m.weight)))
    }

    /// The rules and pools compiled for the front-end's XDP program, with the back-ends'
    /// health as of the latest input: call again after every health change (active
    /// checks, passive marking and its back-off running out) and write the result as a
    /// new generation. `max_head_len` and `max_headers` are the daemon's request limits,
    /// past which the kernel leaves a request to the slow path (which answers 431).
    pub fn compile_kernel(&self, max_head_len: usize, max_headers: usize) -> crate::KernelProgram {
        crate::kernel::compile(
            &self.rules,
            &self.pools,
            &self.servers,
            self.default_pool,
            self.now,
            max_head_len,
            max_headers,
        )
    }

    /// Gives `write` each LARD server set that changed since the last call: the pool's
    /// index (as [`Dispatcher::compile_kernel`] numbers the pools), the slot, and the
    /// set as the XDP program reads it (`FRONTEND_LARD_SETS`). The daemon calls it after
    /// each packet and each batch of the core's outputs, so that the kernel's copy
    /// follows every change before the next request the daemon reads.
    pub fn take_lard_changes(&mut self, mut write: impl FnMut(u32, u32, KernelLardSet)) {
        for (p, pool) in self.pools.iter_mut().enumerate() {
            if let Policy::Lard(lard) = &mut pool.policy {
                lard.take_changes(|slot, set| write(p as u32, slot, set));
            }
        }
    }

    /// Every LARD server set, by pool and slot, for a new generation of the kernel's
    /// tables (a reload starts with empty sets; a health change keeps them).
    pub fn lard_sets(&self) -> impl Iterator<Item = (u32, u32, KernelLardSet)> + '_ {
        self.pools
            .iter()
            .enumerate()
            .filter_map(|(p, pool)| match &pool.policy {
                Policy::Lard(lard) => Some((p as u32, lard)),
                _ => None,
            })
            .flat_map(|(p, lard)| lard.sets().map(move |(slot, set)| (p, slot, set)))
    }

    /// The body of the 503 response when a pool has no back-end available.
    pub fn unavailable_body(&self) -> &str {
        &self.unavailable_body
    }

    fn server_mut(&mut self, backend: Backend) -> Option<&mut Server> {
        let i = *self.server_index.get(&backend)?;
        Some(&mut self.servers[i])
    }

    #[cfg(test)]
    pub(crate) fn lard_set(&self, pool: &str, target: &[u8]) -> u64 {
        match &self
            .pools
            .iter()
            .find(|p| &*p.name == pool)
            .map(|p| &p.policy)
        {
            Some(Policy::Lard(l)) => l.server_set(crate::hash::hash_bytes(target)),
            _ => 0,
        }
    }
}

impl Dispatch for Dispatcher {
    /// [`Dispatcher::decide`]; `Unavailable` becomes `None`, which the front-end answers
    /// with 503 (first call) or a reset (a retry).
    fn dispatch(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let view = RequestView::new(request, Some(flow));
        match self.decide(now, &view, exclude) {
            Decision::Backend(b) => Some(b),
            Decision::Unavailable { .. } => None,
        }
    }

    /// [`Dispatcher::assign`].
    fn assign(&mut self, now: Instant, flow: &FlowKey, request: &ClientRequest<'_>, _: Backend) {
        self.assign(now, &RequestView::new(request, Some(flow)));
    }

    /// Keeps the books from the core's word: a handoff counts an active connection
    /// ([`Dispatcher::on_handed_off`]) until the connection ends
    /// ([`Dispatcher::on_closed`]), and a failed one counts toward passive marking
    /// ([`Dispatcher::on_handoff_failed`]).
    fn feedback(&mut self, now: Instant, _flow: &FlowKey, feedback: Feedback) {
        self.set_now(now);
        match feedback {
            Feedback::Failed { backend, .. } => self.on_handoff_failed(backend, now),
            Feedback::HandedOff { backend } => self.on_handed_off(backend),
            Feedback::Ended {
                handed_off: Some(backend),
                ..
            } => self.on_closed(backend),
            Feedback::Ended {
                handed_off: None, ..
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use baton_proto::request::{RequestLimits, parse_request};

    use super::*;

    fn be(k: u8) -> Backend {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10 + k), 80).into()
    }

    fn flow() -> FlowKey {
        FlowKey {
            client: "198.18.0.2:40000".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        }
    }

    /// A decision at the latest time the dispatcher was given.
    fn pick(d: &mut Dispatcher, raw: &str, exclude: &[Backend]) -> Option<Backend> {
        let now = d.now;
        pick_at(d, now, raw, exclude)
    }

    fn pick_at(
        d: &mut Dispatcher,
        now: Instant,
        raw: &str,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let request = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        d.dispatch(now, &flow(), &request, exclude)
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    }

    const LAB: &str = r#"
        default_pool = "all"
        unavailable_body = "all down"
        [health]
        failures = 2
        backoff_ms = 100
        max_backoff_ms = 350
        [pools.all]
        backends = [
            { address = "198.18.1.11:80", id = "be1" },
            { address = "198.18.1.12:80", id = "be2" },
            { address = "198.18.1.13:80", id = "be3" },
        ]
        sticky = { cookie = "JSESSIONID", separator = "." }
        [pools.img]
        backends = [{ address = "198.18.1.11:80" }]
        [pools.hashed]
        policy = "consistent_hash"
        backends = [
            { address = "198.18.1.11:80" },
            { address = "198.18.1.12:80" },
            { address = "198.18.1.13:80" },
        ]
        sticky = { cookie = "sid", by = "hash" }
        [[rules]]
        name = "images"
        pool = "img"
        match = { path_prefix = "/img/" }
        [[rules]]
        pool = "hashed"
        match = { path_prefix = "/app/" }
    "#;

    /// Pools of both families: rules are family-blind, a client's family picks the
    /// back-ends of that family, and a pool with none of it is a pool with no healthy
    /// back-end for that client (counted in `unavailable`).
    const BOTH_FAMILIES: &str = r#"
        default_pool = "mixed"
        [pools.mixed]
        backends = [
            { address = "198.18.1.11:80" },
            { address = "[2001:2:0:1::11]:80" },
            { address = "198.18.1.12:80" },
            { address = "[2001:2:0:1::12]:80" },
        ]
        [pools.hashed]
        policy = "consistent_hash"
        hash_key = "client_address"
        backends = [
            { address = "[2001:2:0:1::11]:80" },
            { address = "198.18.1.11:80" },
            { address = "[2001:2:0:1::12]:80" },
        ]
        [pools.v4]
        backends = [{ address = "198.18.1.11:80" }]
        [[rules]]
        pool = "v4"
        match = { path_prefix = "/v4/" }
        [[rules]]
        pool = "hashed"
        match = { service = ["[2001:2:0:2::1]:443", "198.18.2.1:443"] }
    "#;

    fn flow_v6(service_port: u16) -> FlowKey {
        FlowKey {
            client: "[2001:2::2]:40000".parse().unwrap(),
            service: SocketAddr::new("2001:2:0:2::1".parse().unwrap(), service_port),
        }
    }

    fn pick_for(d: &mut Dispatcher, flow: &FlowKey, raw: &str) -> Option<Backend> {
        let request = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        let now = d.now;
        d.dispatch(now, flow, &request, &[])
    }

    #[test]
    fn a_clients_family_picks_the_backends_of_that_family() {
        let mut d = Dispatcher::from_toml(BOTH_FAMILIES).unwrap();
        let v6: Vec<_> = (0..4)
            .map(|_| pick_for(&mut d, &flow_v6(80), &get("/")).unwrap())
            .collect();
        assert!(v6.iter().all(SocketAddr::is_ipv6), "{v6:?}");
        assert_ne!(v6[0], v6[1], "round robin over the IPv6 members");
        let v4: Vec<_> = (0..4)
            .map(|_| pick(&mut d, &get("/"), &[]).unwrap())
            .collect();
        assert!(v4.iter().all(SocketAddr::is_ipv4), "{v4:?}");
        // A rule on an IPv6 service, and hashing on an IPv6 client's address.
        let hashed = pick_for(&mut d, &flow_v6(443), &get("/")).unwrap();
        assert!(hashed.is_ipv6());
        assert_eq!(pick_for(&mut d, &flow_v6(443), &get("/")), Some(hashed));
        // A pool with no IPv6 member: none for an IPv6 client, as if all were down.
        assert_eq!(d.unavailable_count(), 0);
        assert_eq!(pick_for(&mut d, &flow_v6(80), &get("/v4/x")), None);
        assert_eq!(d.unavailable_count(), 1);
        assert!(pick(&mut d, &get("/v4/x"), &[]).is_some_and(|b| b.is_ipv4()));
    }

    /// The kernel's dispatch is IPv4's: a pool with an IPv6 member picks in userspace
    /// (`pool_policy`), the others compile as before.
    #[test]
    fn a_pool_with_ipv6_members_picks_in_userspace() {
        let d = Dispatcher::from_toml(BOTH_FAMILIES).unwrap();
        let program = d.compile_kernel(16_384, 64);
        let placement = |name: &str| {
            program
                .pool_placements
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(placement("mixed").userspace, ["IPv6 back-ends"]);
        assert_eq!(placement("hashed").userspace, ["IPv6 back-ends"]);
        assert!(placement("v4").userspace.is_empty());
        assert_eq!(program.backends.len(), 1, "{:?}", program.backends);
    }

    #[test]
    fn first_match_wins_and_hits_are_counted() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        assert_eq!(pick(&mut d, &get("/img/a.png"), &[]), Some(be(1)));
        assert_eq!(pick(&mut d, &get("/img/b.png"), &[]), Some(be(1)));
        assert!(pick(&mut d, &get("/app/x"), &[]).is_some());
        let spread: Vec<_> = (0..3)
            .map(|_| pick(&mut d, &get("/"), &[]).unwrap())
            .collect();
        assert_eq!(spread, [be(1), be(2), be(3)]);
        // Retries are not counted again.
        pick(&mut d, &get("/img/c.png"), &[be(1)]);
        assert_eq!(d.rule_hits(), [2, 1]);
        assert_eq!(d.default_hits(), 3);
        assert_eq!(d.rule_names().collect::<Vec<_>>(), ["images", "rules[1]"]);
    }

    #[test]
    fn exclude_is_honoured() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        for _ in 0..6 {
            let b = pick(&mut d, &get("/"), &[be(1), be(3)]);
            assert_eq!(b, Some(be(2)));
        }
        assert_eq!(pick(&mut d, &get("/"), &[be(1), be(2), be(3)]), None);
        assert_eq!(pick(&mut d, &get("/img/"), &[be(1)]), None);
        // Sticky and hashed choices yield to exclude too.
        let raw = "GET / HTTP/1.1\r\nCookie: JSESSIONID=abc.be2\r\n\r\n";
        assert_eq!(pick(&mut d, raw, &[]), Some(be(2)));
        assert_ne!(pick(&mut d, raw, &[be(2)]), Some(be(2)));
        let hashed = pick(&mut d, &get("/app/k"), &[]).unwrap();
        assert_ne!(pick(&mut d, &get("/app/k"), &[hashed]), Some(hashed));
    }

    #[test]
    fn down_backends_are_skipped_and_all_down_is_unavailable() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        assert!(d.set_health(be(2), false));
        assert!(!d.set_health(be(9), false));
        for _ in 0..6 {
            assert_ne!(pick(&mut d, &get("/"), &[]), Some(be(2)));
        }
        d.set_health(be(1), false);
        assert_eq!(pick(&mut d, &get("/img/x"), &[]), None);
        let raw = get("/img/x");
        let request = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        let view = RequestView::new(&request, None);
        assert_eq!(
            d.decide(Instant::ZERO, &view, &[]),
            Decision::Unavailable { body: "all down" }
        );
        // The default pool still has be3; it is not spilled into from `img`.
        assert_eq!(pick(&mut d, &get("/"), &[]), Some(be(3)));
        d.set_health(be(3), false);
        assert_eq!(pick(&mut d, &get("/"), &[]), None);
        assert_eq!(d.unavailable_count(), 3);
        d.set_health(be(1), true);
        assert_eq!(pick(&mut d, &get("/img/x"), &[]), Some(be(1)));
    }

    #[test]
    fn passive_marking_backs_off_exponentially() {
        let ms = |m: u64| Instant::from_nanos(m * 1_000_000);
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        let img = get("/img/a");
        d.on_handoff_failed(be(1), ms(0));
        // One failure of two: still up.
        assert_eq!(pick(&mut d, &img, &[]), Some(be(1)));
        d.on_handoff_failed(be(1), ms(10));
        assert_eq!(d.backend_status(be(1)).unwrap().retry_at, Some(ms(110)));
        assert_eq!(pick(&mut d, &img, &[]), None);
        assert_eq!(pick_at(&mut d, ms(109), &img, &[]), None);
        assert_eq!(pick_at(&mut d, ms(110), &img, &[]), Some(be(1)));
        // Fails again on its trial: down for twice as long, then capped at 350 ms.
        d.on_handoff_failed(be(1), ms(120));
        assert_eq!(d.backend_status(be(1)).unwrap().retry_at, Some(ms(320)));
        d.on_handoff_failed(be(1), ms(400));
        assert_eq!(d.backend_status(be(1)).unwrap().retry_at, Some(ms(750)));
        d.on_handoff_failed(be(1), ms(800));
        assert_eq!(d.backend_status(be(1)).unwrap().retry_at, Some(ms(1150)));
        // A confirmed handoff resets it all.
        d.on_handed_off(be(1));
        let status = d.backend_status(be(1)).unwrap();
        assert!(status.available);
        assert_eq!((status.consecutive_failures, status.active), (0, 1));
        d.on_handoff_failed(be(1), ms(2000));
        assert_eq!(pick(&mut d, &img, &[]), Some(be(1)));
        d.on_closed(be(1));
        d.on_closed(be(1));
        assert_eq!(d.backend_status(be(1)).unwrap().active, 0);
    }

    #[test]
    fn sticky_by_id_with_a_jvm_route() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        for _ in 0..4 {
            let raw = "GET / HTTP/1.1\r\nCookie: a=1; JSESSIONID=9F2C1A.be3\r\n\r\n";
            assert_eq!(pick(&mut d, raw, &[]), Some(be(3)));
        }
        // A value that is an id by itself, or has no separator.
        let raw = "GET / HTTP/1.1\r\nCookie: JSESSIONID=be2\r\n\r\n";
        assert_eq!(pick(&mut d, raw, &[]), Some(be(2)));
        // An unknown id, or a down back-end: the pool's policy decides.
        let raw = "GET / HTTP/1.1\r\nCookie: JSESSIONID=x.be7\r\n\r\n";
        assert!(pick(&mut d, raw, &[]).is_some());
        d.set_health(be(3), false);
        let raw = "GET / HTTP/1.1\r\nCookie: JSESSIONID=x.be3\r\n\r\n";
        assert_ne!(pick(&mut d, raw, &[]), Some(be(3)));
    }

    #[test]
    fn sticky_by_hash() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        let mut owners = std::collections::HashSet::new();
        for session in 0..64 {
            let raw = format!("GET /app/{session} HTTP/1.1\r\nCookie: sid=s{session}\r\n\r\n");
            let first = pick(&mut d, &raw, &[]).unwrap();
            // The same session on any path goes to the same back-end.
            let other = format!("GET /app/other HTTP/1.1\r\nCookie: sid=s{session}\r\n\r\n");
            assert_eq!(pick(&mut d, &other, &[]), Some(first));
            owners.insert(first);
        }
        assert_eq!(owners.len(), 3, "sessions spread over the pool");
    }

    #[test]
    fn the_last_route_names_rule_and_pool() {
        let mut d = Dispatcher::from_toml(LAB).unwrap();
        let pools: Vec<_> = d.pools().map(|(name, _)| name.to_owned()).collect();
        pick(&mut d, &get("/img/a"), &[]);
        let (route, pool) = d.last_route();
        assert_eq!((route, pools[pool].as_str()), (Route::Rule(0), "img"));
        pick(&mut d, &get("/"), &[]);
        let (route, pool) = d.last_route();
        assert_eq!((route, pools[pool].as_str()), (Route::Default, "all"));
    }

    #[test]
    fn a_reload_takes_over_counts_and_health() {
        let ms = |m: u64| Instant::from_nanos(m * 1_000_000);
        let mut old = Dispatcher::from_toml(LAB).unwrap();
        old.on_handed_off(be(1));
        old.on_handed_off(be(1));
        old.on_handed_off(be(3));
        old.on_handoff_failed(be(2), ms(10));
        old.on_handoff_failed(be(2), ms(20));
        old.set_health(be(3), false);
        // be3 is still checked in the new configuration, be1 and be2 are not; be4 is new.
        let mut new = Dispatcher::from_toml(
            r#"
            default_pool = "p"
            [health]
            failures = 2
            backoff_ms = 100
            max_backoff_ms = 150
            [pools.p]
            backends = [
                { address = "198.18.1.11:80" },
                { address = "198.18.1.12:80" },
                { address = "198.18.1.14:80" },
            ]
            [pools.q]
            backends = [{ address = "198.18.1.13:80" }]
            health = { path = "/" }
            "#,
        )
        .unwrap();
        new.take_state_from(&old);
        assert_eq!(new.backend_status(be(1)).unwrap().active, 2);
        let b2 = new.backend_status(be(2)).unwrap();
        assert_eq!((b2.consecutive_failures, b2.retry_at), (2, Some(ms(120))));
        assert!(!b2.available);
        let b3 = new.backend_status(be(3)).unwrap();
        assert_eq!((b3.active, b3.admin_up), (1, false));
        assert_eq!(new.backend_status(be(4)).unwrap().active, 0);
        // Closes of connections handed off before the reload are counted.
        new.on_closed(be(1));
        assert_eq!(new.backend_status(be(1)).unwrap().active, 1);
        // A back-end no longer checked is not left down by a check that no longer runs.
        old.set_health(be(1), false);
        let mut again = Dispatcher::from_toml(LAB).unwrap();
        again.take_state_from(&old);
        assert!(again.backend_status(be(1)).unwrap().admin_up);
    }

    #[test]
    fn least_connections_follows_handoff_events() {
        let mut d = Dispatcher::from_toml(
            r#"
            default_pool = "p"
            [pools.p]
            policy = "least_connections"
            backends = [
                { address = "198.18.1.11:80", weight = 1 },
                { address = "198.18.1.12:80", weight = 2 },
            ]
            "#,
        )
        .unwrap();
        for _ in 0..3 {
            d.on_handed_off(be(1));
        }
        for _ in 0..5 {
            d.on_handed_off(be(2));
        }
        // 3/1 against 5/2: be2.
        assert_eq!(pick(&mut d, &get("/"), &[]), Some(be(2)));
        d.on_handed_off(be(2));
        d.on_handed_off(be(2));
        // 3/1 against 7/2: be1.
        assert_eq!(pick(&mut d, &get("/"), &[]), Some(be(1)));
        d.on_closed(be(2));
        d.on_closed(be(2));
        d.on_closed(be(2));
        // 3/1 against 4/2.
        assert_eq!(pick(&mut d, &get("/"), &[]), Some(be(2)));
    }

    #[test]
    fn lard_through_the_dispatcher() {
        let mut d = Dispatcher::from_toml(
            r#"
            default_pool = "p"
            [pools.p]
            policy = "lard"
            lard = { low_load = 2, high_load = 4 }
            backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }]
            "#,
        )
        .unwrap();
        let first = pick(&mut d, &get("/doc"), &[]).unwrap();
        // The same target stays while its server is under T_high.
        for _ in 0..4 {
            assert_eq!(pick(&mut d, &get("/doc"), &[]), Some(first));
            d.on_handed_off(first);
        }
        assert_eq!(pick(&mut d, &get("/doc"), &[]), Some(first));
        d.on_handed_off(first);
        // Load 5 > T_high = 4 and the other node is idle: the set grows.
        let other = d.backends().find(|&b| b != first).unwrap();
        assert_eq!(pick(&mut d, &get("/doc"), &[]), Some(other));
        assert_eq!(d.lard_set("p", b"/doc").count_ones(), 2);
    }
}
