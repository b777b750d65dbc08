//! The daemon's side of dispatching: [`baton_dispatch::Dispatcher`] (rules, pools,
//! policies, health) as the protocol core's [`Dispatch`], and what the daemon's log needs.
//!
//! The dispatcher decides and keeps its books from the core's feedback
//! ([`Dispatch::feedback`]): a confirmed handoff counts an active connection for the
//! back-end and clears its passive marking, the end of a handed-off connection uncounts
//! it, and a failed candidate counts toward passive marking. [`ContentDispatch`] adds
//! what the log needs: each flow's request line, rule, pool and dispatch time, from the
//! decision until the daemon logs the connection's handoff ([`ContentDispatch::take_for_log`])
//! and end ([`ContentDispatch::forget`]) as it applies the core's outputs (bounded by
//! [`ContentDispatch::set_max_pending`]), and retries and 503s as [`Note`]s. Rule and pool
//! names are shared (`Arc<str>`), so a decision copies no string but the request line.

use std::{collections::HashMap, sync::Arc};

use baton_dispatch::{Dispatcher, Route};
use baton_proto::{
    frontend::{Backend, Dispatch, Feedback, FlowKey, Instant},
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
    /// What was remembered of connections that ended ([`Feedback::Ended`]) and whose
    /// end event the daemon has not applied yet ([`ContentDispatch::forget`]). Moved
    /// out of `flows` at once: within one call of the core, a new connection on the same
    /// ports can be dispatched after the old one ended (a port reused at once, its
    /// request handed off in the kernel), and the old one's end must neither take nor
    /// erase what is remembered of the new one.
    ended: HashMap<FlowKey, Flow>,
    /// Most flows remembered (set to the connection limit by the daemon); past it a
    /// handoff is logged without request line or latency.
    max_pending: usize,
    notes: Vec<Note>,
    /// The back-end that just failed the flow's handoff ([`Feedback::Failed`]), for the
    /// retry's note when the core asks for the next candidate.
    failed: Option<(FlowKey, Backend)>,
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
            ended: HashMap::new(),
            max_pending: 65_536,
            notes: Vec::new(),
            failed: None,
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

    /// What was remembered of `flow` for the log of its handoff: the request line and
    /// Host are taken (released), the rule, pool and dispatch time stay for its end.
    pub fn take_for_log(&mut self, flow: &FlowKey) -> Option<Flow> {
        let f = self.flows.get_mut(flow)?;
        Some(Flow {
            request: std::mem::take(&mut f.request),
            host: std::mem::take(&mut f.host),
            rule: f.rule.clone(),
            pool: f.pool.clone(),
            dispatched_at: f.dispatched_at,
        })
    }

    /// `flow` ended (its end event): what was remembered of it, for the log, now
    /// forgotten. The connection that ended, not a newer one on the same ports.
    pub fn forget(&mut self, flow: &FlowKey) -> Option<Flow> {
        self.ended.remove(flow).or_else(|| self.flows.remove(flow))
    }

    /// Retries and 503s since the last call, for the log.
    pub fn drain_notes(&mut self) -> std::vec::Drain<'_, Note> {
        self.notes.drain(..)
    }

    /// Flows remembered now.
    pub fn remembered(&self) -> usize {
        self.flows.len() + self.ended.len()
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

impl ContentDispatch {
    /// Keeps what the log of `flow`'s handoff will say of its request and route, within
    /// `max_pending` flows.
    fn remember(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        rule: Arc<str>,
        pool: Arc<str>,
    ) {
        if self.flows.len() < self.max_pending {
            self.flows.insert(
                *flow,
                Flow {
                    request: summarize(request),
                    host: request.host().map(cut).unwrap_or_default(),
                    rule,
                    pool,
                    dispatched_at: now,
                },
            );
        }
    }
}

impl Dispatch for ContentDispatch {
    fn dispatch(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let choice = self.inner.dispatch(now, flow, request, exclude);
        let (rule, pool) = self.route_names();
        if !exclude.is_empty() {
            // A retry: the core told of the failure just before asking.
            let failed = self
                .failed
                .take()
                .filter(|(f, _)| f == flow)
                .map(|(_, b)| b);
            if self.notes.len() < self.max_pending {
                self.notes.push(Note::Retry {
                    flow: *flow,
                    failed,
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
        } else {
            self.remember(now, flow, request, rule, pool);
        }
        choice
    }

    fn assign(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        backend: Backend,
    ) {
        Dispatch::assign(&mut self.inner, now, flow, request, backend);
        let (rule, pool) = self.route_names();
        self.remember(now, flow, request, rule, pool);
    }

    fn feedback(&mut self, now: Instant, flow: &FlowKey, feedback: Feedback) {
        self.inner.feedback(now, flow, feedback);
        match feedback {
            Feedback::Failed { backend, .. } => self.failed = Some((*flow, backend)),
            Feedback::Ended { .. } => {
                self.failed = None;
                if let Some(f) = self.flows.remove(flow) {
                    self.ended.insert(*flow, f);
                }
            }
            Feedback::HandedOff { .. } => {}
        }
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

    use baton_proto::frontend::{HandoffFailure, ResetReason};
    use baton_proto::request::{RequestLimits, parse_request};

    use super::*;

    fn be(k: u8) -> std::net::SocketAddr {
        SocketAddrV4::new(std::net::Ipv4Addr::new(198, 18, 1, 10 + k), 80).into()
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
            client: SocketAddrV4::new([198, 18, 0, 2].into(), port).into(),
            service: "198.18.2.1:80".parse().unwrap(),
        }
    }

    fn pick(d: &mut ContentDispatch, f: FlowKey, raw: &str, ex: &[Backend]) -> Option<Backend> {
        pick_at(d, Instant::ZERO, f, raw, ex)
    }

    fn pick_at(
        d: &mut ContentDispatch,
        now: Instant,
        f: FlowKey,
        raw: &str,
        ex: &[Backend],
    ) -> Option<Backend> {
        let req = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        d.dispatch(now, &f, &req, ex)
    }

    fn handed_off(d: &mut ContentDispatch, f: FlowKey, backend: Backend) {
        d.feedback(Instant::ZERO, &f, Feedback::HandedOff { backend });
    }

    fn ended(
        d: &mut ContentDispatch,
        f: FlowKey,
        handed_off: Option<Backend>,
        reason: Option<ResetReason>,
    ) {
        d.feedback(Instant::ZERO, &f, Feedback::Ended { handed_off, reason });
        d.forget(&f);
    }

    #[test]
    fn remembers_request_rule_and_pool_for_the_log() {
        let mut d = lab();
        let at = Instant::from_nanos(7);
        let b = pick_at(
            &mut d,
            at,
            flow(1),
            "GET /img/logo.svg HTTP/1.1\r\n\r\n",
            &[],
        )
        .unwrap();
        handed_off(&mut d, flow(1), b);
        let f = d.take_for_log(&flow(1)).unwrap();
        assert_eq!(f.request, "GET /img/logo.svg HTTP/1.1");
        assert_eq!(f.host, "");
        assert_eq!((&*f.rule, &*f.pool), ("images", "img"));
        assert_eq!(f.dispatched_at, at);
        pick(&mut d, flow(2), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        let f = d.forget(&flow(2)).unwrap();
        assert_eq!((&*f.rule, &*f.pool), ("default", "all"));
        assert_eq!(d.remembered(), 1, "the handed-off flow stays until it ends");
        let f = d.forget(&flow(1)).unwrap();
        assert_eq!(f.request, "", "released at the handoff's log");
        assert_eq!(d.remembered(), 0);
    }

    /// A port reused at once: within one call of the core the old connection ends and
    /// the new one on the same ports is dispatched, before the daemon applies the old
    /// one's end. The end's log takes the old connection's memory and leaves the new
    /// one's for its handoff line.
    #[test]
    fn the_end_of_a_connection_leaves_what_is_remembered_of_the_next_on_its_ports() {
        let mut d = lab();
        let b = pick(&mut d, flow(1), "GET /img/a.png HTTP/1.1\r\n\r\n", &[]).unwrap();
        handed_off(&mut d, flow(1), b);
        d.feedback(
            Instant::ZERO,
            &flow(1),
            Feedback::Ended {
                handed_off: Some(b),
                reason: None,
            },
        );
        pick(&mut d, flow(1), "GET /index.html HTTP/1.1\r\n\r\n", &[]).unwrap();
        let old = d.forget(&flow(1)).unwrap();
        assert_eq!((&*old.rule, &*old.pool), ("images", "img"));
        let new = d.take_for_log(&flow(1)).unwrap();
        assert_eq!(new.request, "GET /index.html HTTP/1.1");
        assert_eq!(d.remembered(), 1);
    }

    #[test]
    fn handoffs_and_ends_drive_least_connections() {
        let mut d = lab();
        let first = pick(&mut d, flow(1), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        handed_off(&mut d, flow(1), first);
        // The busy back-end is avoided while its connection lasts...
        for port in 2..5 {
            let b = pick(&mut d, flow(port), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
            assert_ne!(b, first);
            ended(&mut d, flow(port), None, Some(ResetReason::ClientReset));
        }
        let status = d.dispatcher().backend_status(first).unwrap();
        assert_eq!(status.active, 1, "resets before a handoff do not uncount");
        // ... and counted out when it ends.
        ended(
            &mut d,
            flow(1),
            Some(first),
            Some(ResetReason::BackendReset),
        );
        assert_eq!(d.dispatcher().backend_status(first).unwrap().active, 0);
    }

    #[test]
    fn failures_told_by_the_core_count_and_name_the_retrys_failed_backend() {
        let mut d = ContentDispatch::new(
            Dispatcher::from_toml(&format!("{LAB}\n[health]\nfailures = 2\n")).unwrap(),
        );
        let raw = "GET /img/a HTTP/1.1\r\n\r\n";
        assert_eq!(pick(&mut d, flow(1), raw, &[]), Some(be(3)));
        // be3 refused: the retry has nowhere to go.
        d.feedback(
            Instant::ZERO,
            &flow(1),
            Feedback::Failed {
                backend: be(3),
                cause: HandoffFailure::Refused,
            },
        );
        assert_eq!(pick(&mut d, flow(1), raw, &[be(3)]), None);
        let notes: Vec<_> = d.drain_notes().collect();
        assert!(matches!(
            &notes[..],
            [Note::Retry { failed: Some(f), next: None, rule, .. }] if *f == be(3) && &**rule == "images"
        ));
        // Silent on the next connection's try too: two failures in a row, passively
        // down, so the next request gets a 503.
        assert_eq!(pick(&mut d, flow(2), raw, &[]), Some(be(3)));
        d.feedback(
            Instant::ZERO,
            &flow(2),
            Feedback::Failed {
                backend: be(3),
                cause: HandoffFailure::Silent,
            },
        );
        d.drain_notes();
        assert_eq!(pick(&mut d, flow(3), raw, &[]), None);
        assert!(matches!(
            &d.drain_notes().collect::<Vec<_>>()[..],
            [Note::Unavailable { request, pool, .. }] if request == "GET /img/a HTTP/1.1" && &**pool == "img"
        ));
    }

    #[test]
    fn a_reload_keeps_counting_connections_it_did_not_hand_off() {
        let mut d = lab();
        let b = pick(&mut d, flow(1), "GET / HTTP/1.1\r\n\r\n", &[]).unwrap();
        handed_off(&mut d, flow(1), b);
        d.replace(Dispatcher::from_toml(&LAB.replace("\"images\"", "\"pictures\"")).unwrap());
        assert_eq!(d.dispatcher().backend_status(b).unwrap().active, 1);
        pick(&mut d, flow(2), "GET /img/ HTTP/1.1\r\n\r\n", &[]).unwrap();
        handed_off(&mut d, flow(2), be(3));
        let f = d.take_for_log(&flow(2)).unwrap();
        assert_eq!(&*f.rule, "pictures");
        ended(&mut d, flow(1), Some(b), None);
        assert_eq!(d.dispatcher().backend_status(b).unwrap().active, 0);
    }
}
