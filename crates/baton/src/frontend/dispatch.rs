//! The daemon's side of dispatching: [`baton_dispatch::Dispatcher`] (rules, pools,
//! policies, health) as the protocol core's [`Dispatch`], fed with the core's events,
//! and what the daemon's log needs.
//!
//! The dispatcher decides; [`ContentDispatch`] keeps its books from the core's events:
//! a confirmed handoff ([`ContentDispatch::on_handed_off`]) counts an active connection
//! for the back-end and clears its passive marking, the end of a handed-off connection
//! ([`ContentDispatch::on_end`]) uncounts it, and a failed candidate (a retry, or the
//! last candidate of a connection reset with `BackendsExhausted`) counts toward passive
//! marking. Which flows were handed off is remembered here, per flow, because a `Reset`
//! event names the back-end of a connection still being handed off as well as of one
//! that was.
//!
//! For the log it remembers each flow's request line, rule, pool and dispatch time until
//! the handoff completes (bounded by [`ContentDispatch::set_max_pending`]), and queues
//! retries and 503s as [`Note`]s. Rule and pool names are shared (`Arc<str>`), so a
//! decision copies no string but the request line.

use std::{collections::HashMap, sync::Arc};

use baton_dispatch::{Dispatcher, Route};
use baton_proto::{
    frontend::{Backend, Dispatch, FlowKey, Instant, ResetReason},
    request::ClientRequest,
};

/// Longest request line kept for the log; longer ones are cut (a target can be 16 KiB).
const MAX_LOGGED_REQUEST: usize = 200;

/// What the daemon remembers of a dispatched flow until it ends.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The request line, or `TLS sni=NAME`; emptied once handed off.
    pub request: String,
    /// The Host (or TLS SNI) as sent, cut like the request line; empty when none (for
    /// the access log); emptied once handed off.
    pub host: String,
    /// The rule that chose the pool (its `name`, `rules[i]`, or `default`).
    pub rule: Arc<str>,
    /// The pool.
    pub pool: Arc<str>,
    /// When the dispatcher first chose a back-end for it.
    pub dispatched_at: Instant,
    /// The back-end it was handed off to, once confirmed.
    pub handed_off: Option<Backend>,
}

/// A decision the daemon should log besides handoffs and resets.
#[derive(Debug, Clone)]
pub enum Note {
    /// `failed` did not take the connection; `next` is tried (none: the client is reset).
    Retry {
        flow: FlowKey,
        failed: Option<Backend>,
        next: Option<Backend>,
        rule: Arc<str>,
        pool: Arc<str>,
    },
    /// No back-end of the pool is up: a 503 (HTTP) or a reset (TLS).
    Unavailable {
        flow: FlowKey,
        request: String,
        rule: Arc<str>,
        pool: Arc<str>,
    },
}

/// [`Dispatcher`] as the core's [`Dispatch`], with the daemon's bookkeeping.
#[derive(Debug)]
pub struct ContentDispatch {
    inner: Dispatcher,
    rule_names: Box<[Arc<str>]>,
    pool_names: Box<[Arc<str>]>,
    default_name: Arc<str>,
    flows: HashMap<FlowKey, Flow>,
    /// Most flows remembered with a request line (set to the connection limit by the
    /// daemon); past it a handoff is logged without request line or latency. Handed-off
    /// flows are always remembered: they are tracked connections, which the core bounds.
    max_pending: usize,
    notes: Vec<Note>,
    now: Instant,
}

impl ContentDispatch {
    /// Wraps a configured dispatcher.
    pub fn new(inner: Dispatcher) -> Self {
        let mut d = Self {
            inner,
            rule_names: Box::default(),
            pool_names: Box::default(),
            default_name: "default".into(),
            flows: HashMap::new(),
            max_pending: 65_536,
            notes: Vec::new(),
            now: Instant::ZERO,
        };
        d.name_routes();
        d
    }

    fn name_routes(&mut self) {
        self.rule_names = self.inner.rule_names().map(Arc::from).collect();
        self.pool_names = self
            .inner
            .pools()
            .map(|(name, _)| Arc::from(name))
            .collect();
    }

    /// Bounds the per-flow memory kept for logging.
    pub fn set_max_pending(&mut self, max: usize) {
        self.max_pending = max;
    }

    /// The time of the input the front-end is about to handle.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.inner.set_now(now);
    }

    /// The dispatcher in force.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner
    }

    /// The dispatcher in force, e.g. to report health.
    pub fn dispatcher_mut(&mut self) -> &mut Dispatcher {
        &mut self.inner
    }

    /// A reload: `new` decides from now on, with the back-ends' connection counts and
    /// health taken over from the old one ([`Dispatcher::take_state_from`]). Connections
    /// already handed off are not touched; their closes are counted by `new` for the
    /// back-ends it still lists. A connection still being handed off takes its next
    /// candidate, if it needs one, from `new`.
    pub fn replace(&mut self, mut new: Dispatcher) {
        new.take_state_from(&self.inner);
        self.inner = new;
        self.name_routes();
    }

    /// The core confirmed the handoff of `flow` to `backend`: counted, and what was
    /// remembered for the log is returned (the request line is released).
    pub fn on_handed_off(&mut self, flow: &FlowKey, backend: Backend) -> Option<Flow> {
        self.inner.on_handed_off(backend);
        match self.flows.get_mut(flow) {
            Some(f) => {
                f.handed_off = Some(backend);
                Some(Flow {
                    request: std::mem::take(&mut f.request),
                    host: std::mem::take(&mut f.host),
                    rule: f.rule.clone(),
                    pool: f.pool.clone(),
                    dispatched_at: f.dispatched_at,
                    handed_off: f.handed_off,
                })
            }
            None => {
                // Not remembered (over the bound): still counted until it ends.
                self.flows.insert(
                    *flow,
                    Flow {
                        request: String::new(),
                        host: String::new(),
                        rule: self.default_name.clone(),
                        pool: self.default_name.clone(),
                        dispatched_at: self.now,
                        handed_off: Some(backend),
                    },
                );
                None
            }
        }
    }

    /// `flow` ended (a `Closed` or `Reset` event naming `backend`, for `reason` if
    /// reset): a handed-off connection is uncounted, and a connection whose every
    /// candidate failed counts its last one's failure. Returns what was remembered.
    pub fn on_end(
        &mut self,
        flow: &FlowKey,
        backend: Option<Backend>,
        reason: Option<ResetReason>,
    ) -> Option<Flow> {
        if let (Some(ResetReason::BackendsExhausted), Some(b)) = (reason, backend) {
            self.inner.on_handoff_failed(b, self.now);
        }
        let flow = self.flows.remove(flow)?;
        if let Some(b) = flow.handed_off {
            self.inner.on_closed(b);
        }
        Some(flow)
    }

    /// Retries and 503s since the last call, for the log.
    pub fn drain_notes(&mut self) -> std::vec::Drain<'_, Note> {
        self.notes.drain(..)
    }

    /// Flows remembered now.
    pub fn remembered(&self) -> usize {
        self.flows.len()
    }

    fn route_names(&self) -> (Arc<str>, Arc<str>) {
        let (route, pool) = self.inner.last_route();
        let rule = match route {
            Route::Rule(i) => self.rule_names[i].clone(),
            Route::Default => self.default_name.clone(),
        };
        (rule, self.pool_names[pool].clone())
    }
}

impl Dispatch for ContentDispatch {
    fn dispatch(
        &mut self,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        // A retry: the last back-end tried stayed silent or refused.
        if let Some(&failed) = exclude.last() {
            self.inner.on_handoff_failed(failed, self.now);
        }
        let choice = self.inner.dispatch(flow, request, exclude);
        let (rule, pool) = self.route_names();
        if !exclude.is_empty() {
            if self.notes.len() < self.max_pending {
                self.notes.push(Note::Retry {
                    flow: *flow,
                    failed: exclude.last().copied(),
                    next: choice,
                    rule,
                    pool,
                });
            }
        } else if choice.is_none() {
            if self.notes.len() < self.max_pending {
                self.notes.push(Note::Unavailable {
                    flow: *flow,
                    request: summarize(request),
                    rule,
                    pool,
                });
            }
        } else if self.flows.len() < self.max_pending {
            let old = self.flows.insert(
                *flow,
                Flow {
                    request: summarize(request),
                    host: request.host().map(cut).unwrap_or_default(),
                    rule,
                    pool,
                    dispatched_at: self.now,
                    handed_off: None,
                },
            );
            // The core reuses a 4-tuple in its grace period only after ending the old
            // connection, so this is defensive: never leave a count behind.
            if let Some(b) = old.and_then(|o| o.handed_off) {
                self.inner.on_closed(b);
            }
        }
        choice
    }
}

/// `GET /path HTTP/1.1` or `TLS sni=name`, cut to [`MAX_LOGGED_REQUEST`] characters.
fn summarize(request: &ClientRequest<'_>) -> String {
    let mut s = match request {
        ClientRequest::Http(head) => format!(
            "{} {} HTTP/1.{}",
            head.method, head.target, head.minor_version
        ),
        ClientRequest::Tls(hello) => {
            format!("TLS sni={}", hello.server_name.as_deref().unwrap_or("-"))
        }
    };
    if s.len() > MAX_LOGGED_REQUEST {
        let mut cut = MAX_LOGGED_REQUEST;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// `text`, cut to [`MAX_LOGGED_REQUEST`] characters like a request line.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_LOGGED_REQUEST);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use baton_proto::request::{RequestLimits, parse_request};

    use super::*;

    fn be(k: u8) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::new(198, 18, 1, 10 + k), 80)
    }

    const LAB: &str = r#"
        default_pool = "all"
        [pools.all]
        policy = "least_connections"
        backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }]
        [pools.img]
        backends = [{ address = "198.18.1.13:80" }]
        [[rules]]
        name = "images"
        pool = "img"
        match = { path_prefix = "/img/" }
    "#;

    fn lab() -> ContentDispatch {
        ContentDispatch::new(Dispatcher::from_toml(LAB).unwrap())
    }

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            client: SocketAddrV4::new([198, 18, 0, 2].into(), port),
            service: "198.18.2.1:80".parse().unwrap(),
        }
    }

    fn pick(d: &mut ContentDispatch, f: FlowKey, raw: &str, ex: &[Backend]) -> Option<Backend> {
        let req = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        d.dispatch(&f, &req, ex)
    }

    #[test]
    fn remembers_request_rule_and_pool_for_the_log() {
        let mut d = lab();
        d.set_now(Instant::from_nanos(7));
        let b = pick(&mut d, flow(1), "GET /img/logo.svg HTTP/1.1\r\n\r\n", &[]).unwrap();
        let f = d.on_handed_off(&flow(1), b).unwrap();
        assert_eq!(f.request, "GET /img/logo.svg HTTP/1.1");
        assert_eq!(f.host, "");
        assert_eq!((&*f.rule, &*f.pool), ("images", "img"));
        assert_eq!(f.dispatched_at, Instant::from_nanos(7));
        pick(&mut d, flow(2), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        let f = d.on_end(&flow(2), None, None).unwrap();
        assert_eq!((&*f.rule, &*f.pool), ("default", "all"));
        assert_eq!(d.remembered(), 1, "the handed-off flow stays until it ends");
    }

    #[test]
    fn handoffs_and_ends_drive_least_connections() {
        let mut d = lab();
        let first = pick(&mut d, flow(1), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        d.on_handed_off(&flow(1), first);
        // The busy back-end is avoided while its connection lasts...
        for port in 2..5 {
            let b = pick(&mut d, flow(port), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
            assert_ne!(b, first);
            d.on_end(&flow(port), Some(b), Some(ResetReason::ClientReset));
        }
        let status = d.dispatcher().backend_status(first).unwrap();
        assert_eq!(status.active, 1, "resets before a handoff do not uncount");
        // ... and counted out when it ends.
        d.on_end(&flow(1), Some(first), Some(ResetReason::BackendReset));
        assert_eq!(d.dispatcher().backend_status(first).unwrap().active, 0);
    }

    #[test]
    fn retries_and_exhaustion_count_as_handoff_failures() {
        let mut d = ContentDispatch::new(
            Dispatcher::from_toml(&format!("{LAB}\n[health]\nfailures = 2\n")).unwrap(),
        );
        let raw = "GET /img/a HTTP/1.1\r\n\r\n";
        assert_eq!(pick(&mut d, flow(1), raw, &[]), Some(be(3)));
        // be3 failed: the retry has nowhere to go.
        assert_eq!(pick(&mut d, flow(1), raw, &[be(3)]), None);
        d.on_end(&flow(1), Some(be(3)), Some(ResetReason::BackendsExhausted));
        let notes: Vec<_> = d.drain_notes().collect();
        assert!(matches!(
            &notes[..],
            [Note::Retry { failed: Some(f), next: None, rule, .. }] if *f == be(3) && &**rule == "images"
        ));
        // Two failures in a row: passively down, so the next request gets a 503.
        assert_eq!(pick(&mut d, flow(2), raw, &[]), None);
        assert!(matches!(
            &d.drain_notes().collect::<Vec<_>>()[..],
            [Note::Unavailable { request, pool, .. }] if request == "GET /img/a HTTP/1.1" && &**pool == "img"
        ));
    }

    #[test]
    fn a_reload_keeps_counting_connections_it_did_not_hand_off() {
        let mut d = lab();
        let b = pick(&mut d, flow(1), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        d.on_handed_off(&flow(1), b);
        d.replace(Dispatcher::from_toml(&LAB.replace("\"images\"", "\"pictures\"")).unwrap());
        assert_eq!(d.dispatcher().backend_status(b).unwrap().active, 1);
        pick(&mut d, flow(2), "GET /img/ HTTP/1.1\r\n\r\n", &[]).unwrap();
        let f = d.on_handed_off(&flow(2), be(3)).unwrap();
        assert_eq!(&*f.rule, "pictures");
        d.on_end(&flow(1), Some(b), None);
        assert_eq!(d.dispatcher().backend_status(b).unwrap().active, 0);
    }
}
