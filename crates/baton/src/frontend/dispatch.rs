//! A first, simple dispatcher: ordered path-prefix (and optional host) routes, each a
//! pool served round robin, and a default pool.
//!
//! It stands in until the dispatch crate (`baton-dispatch`: rules on Host, path, file
//! type, headers, cookies, SNI; health-aware pools) lands, and will move there then; it
//! is kept free of I/O and clocks in the meantime (time comes in through
//! [`RouteDispatcher::set_now`]). Besides deciding, it remembers each flow's request line
//! and when it was dispatched, so the daemon can log one line per handoff with its
//! latency; that memory is bounded and released on the flow's last event.

use std::{collections::HashMap, fmt, net::SocketAddrV4};

use baton_proto::{
    frontend::{Backend, Dispatch, FlowKey, Instant},
    request::ClientRequest,
};

/// Longest request line kept for the log; longer ones are cut (a target can be 16 KiB).
const MAX_LOGGED_REQUEST: usize = 200;

/// One pool with the request it serves.
#[derive(Debug)]
pub struct Route {
    prefix: Option<String>,
    host: Option<String>,
    backends: Vec<SocketAddrV4>,
    /// Round-robin position: the next first choice.
    next: usize,
}

impl Route {
    /// A route; `backends` is not empty (the configuration checks it).
    pub fn new(prefix: Option<String>, host: Option<String>, backends: Vec<SocketAddrV4>) -> Self {
        Self {
            prefix,
            host,
            backends,
            next: 0,
        }
    }

    fn matches(&self, request: &ClientRequest<'_>) -> bool {
        if let Some(host) = &self.host
            && !request.host().is_some_and(|h| h.eq_ignore_ascii_case(host))
        {
            return false;
        }
        match (&self.prefix, request) {
            (None, _) => true,
            (Some(prefix), ClientRequest::Http(head)) => head.path().starts_with(prefix.as_str()),
            // A TLS ClientHello has no path.
            (Some(_), ClientRequest::Tls(_)) => false,
        }
    }

    /// The next back-end round robin that is not in `exclude`. Only a first choice
    /// (empty `exclude`) advances the rotation, so retries do not skew the spread.
    fn pick(&mut self, exclude: &[Backend]) -> Option<Backend> {
        let n = self.backends.len();
        let start = self.next;
        if exclude.is_empty() {
            self.next = (self.next + 1) % n.max(1);
        }
        (0..n)
            .map(|i| self.backends[(start + i) % n])
            .find(|b| !exclude.contains(b))
    }

    /// The pool as `a, b, c`.
    pub fn backends_display(&self) -> String {
        self.backends
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.host {
            write!(f, "host {host} ")?;
        }
        write!(
            f,
            "{} -> {}",
            self.prefix.as_deref().unwrap_or("*"),
            self.backends_display()
        )
    }
}

/// What the daemon remembers of a dispatched flow until its handoff completes or fails.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The request line, or `TLS sni=NAME`.
    pub request: String,
    /// When the dispatcher first chose a back-end for it.
    pub dispatched_at: Instant,
}

/// A retry the daemon should log: `failed` did not take the connection.
#[derive(Debug, Clone)]
pub struct Retry {
    pub flow: FlowKey,
    pub failed: Option<Backend>,
    pub next: Option<Backend>,
}

/// Ordered routes and a default pool, as [`Dispatch`].
#[derive(Debug)]
pub struct RouteDispatcher {
    routes: Vec<Route>,
    default: Option<Route>,
    now: Instant,
    pending: HashMap<FlowKey, Pending>,
    /// Most flows remembered for logging; past it the handoff is logged without a
    /// request line or latency (set to the connection limit by the daemon).
    max_pending: usize,
    retries: Vec<Retry>,
}

impl RouteDispatcher {
    /// A dispatcher over `routes` (tried in order) and `default`.
    pub fn new(routes: Vec<Route>, default: Option<Route>) -> Self {
        Self {
            routes,
            default,
            now: Instant::ZERO,
            pending: HashMap::new(),
            max_pending: 65_536,
            retries: Vec::new(),
        }
    }

    /// Bounds the per-flow memory kept for logging.
    pub fn set_max_pending(&mut self, max: usize) {
        self.max_pending = max;
    }

    /// The time of the input the front-end is about to handle.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn default_route(&self) -> Option<&Route> {
        self.default.as_ref()
    }

    /// Forgets `flow`, returning what was remembered of it.
    pub fn take_pending(&mut self, flow: &FlowKey) -> Option<Pending> {
        self.pending.remove(flow)
    }

    /// Retries since the last call, for the log.
    pub fn drain_retries(&mut self) -> std::vec::Drain<'_, Retry> {
        self.retries.drain(..)
    }

    /// Flows remembered now (a gauge for the exit statistics).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Dispatch for RouteDispatcher {
    fn dispatch(
        &mut self,
        flow: &FlowKey,
        request: &ClientRequest<'_>,
        exclude: &[Backend],
    ) -> Option<Backend> {
        let route = match self.routes.iter_mut().find(|r| r.matches(request)) {
            Some(route) => route,
            None => self.default.as_mut()?,
        };
        let choice = route.pick(exclude);
        if exclude.is_empty() {
            if choice.is_some() && self.pending.len() < self.max_pending {
                self.pending.insert(
                    *flow,
                    Pending {
                        request: summarize(request),
                        dispatched_at: self.now,
                    },
                );
            }
        } else if self.retries.len() < self.max_pending {
            self.retries.push(Retry {
                flow: *flow,
                failed: exclude.last().copied(),
                next: choice,
            });
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

#[cfg(test)]
mod tests {
    use baton_proto::request::{RequestLimits, parse_request};

    use super::*;

    fn be(k: u8) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::new(198, 18, 1, 10 + k), 80)
    }

    fn lab() -> RouteDispatcher {
        RouteDispatcher::new(
            vec![
                Route::new(Some("/img/".into()), None, vec![be(1)]),
                Route::new(Some("/api/".into()), None, vec![be(2)]),
                Route::new(Some("/x/".into()), Some("Shop.Example".into()), vec![be(3)]),
            ],
            Some(Route::new(None, None, vec![be(1), be(2), be(3)])),
        )
    }

    fn flow() -> FlowKey {
        FlowKey {
            client: "198.18.0.2:40000".parse().unwrap(),
            service: "198.18.2.1:80".parse().unwrap(),
        }
    }

    fn pick(d: &mut RouteDispatcher, raw: &str, exclude: &[Backend]) -> Option<Backend> {
        let req = parse_request(raw.as_bytes(), &RequestLimits::default())
            .unwrap()
            .unwrap();
        d.dispatch(&flow(), &req, exclude)
    }

    #[test]
    fn routes_by_prefix_then_default_round_robin() {
        let mut d = lab();
        assert_eq!(
            pick(&mut d, "GET /img/a HTTP/1.1\r\n\r\n", &[]),
            Some(be(1))
        );
        assert_eq!(pick(&mut d, "GET /api/ HTTP/1.1\r\n\r\n", &[]), Some(be(2)));
        let spread: Vec<_> = (0..6)
            .map(|_| pick(&mut d, "GET / HTTP/1.1\r\n\r\n", &[]).unwrap())
            .collect();
        assert_eq!(spread, [be(1), be(2), be(3), be(1), be(2), be(3)]);
        // Host-qualified route: only for that host.
        assert_eq!(
            pick(
                &mut d,
                "GET /x/ HTTP/1.1\r\nHost: shop.example\r\n\r\n",
                &[]
            ),
            Some(be(3))
        );
        assert_eq!(
            pick(&mut d, "GET /x/ HTTP/1.1\r\nHost: other\r\n\r\n", &[]),
            Some(be(1))
        );
    }

    #[test]
    fn retries_honour_exclude_and_run_out() {
        let mut d = lab();
        assert_eq!(pick(&mut d, "GET / HTTP/1.1\r\n\r\n", &[]), Some(be(1)));
        assert_eq!(
            pick(&mut d, "GET / HTTP/1.1\r\n\r\n", &[be(2)]),
            Some(be(3))
        );
        assert_eq!(
            pick(&mut d, "GET / HTTP/1.1\r\n\r\n", &[be(2), be(3), be(1)]),
            None
        );
        assert_eq!(pick(&mut d, "GET /img/ HTTP/1.1\r\n\r\n", &[be(1)]), None);
        let retries: Vec<_> = d.drain_retries().collect();
        assert_eq!(retries.len(), 3);
        assert_eq!(retries[0].failed, Some(be(2)));
        assert_eq!(retries[0].next, Some(be(3)));
        assert_eq!(retries[2].next, None);
    }

    #[test]
    fn remembers_the_request_line_for_the_log() {
        let mut d = lab();
        d.set_now(Instant::from_nanos(7));
        pick(&mut d, "GET /img/logo.svg HTTP/1.1\r\n\r\n", &[]);
        let p = d.take_pending(&flow()).unwrap();
        assert_eq!(p.request, "GET /img/logo.svg HTTP/1.1");
        assert_eq!(p.dispatched_at, Instant::from_nanos(7));
        assert!(d.take_pending(&flow()).is_none());
    }

    #[test]
    fn no_default_means_no_backend() {
        let mut d =
            RouteDispatcher::new(vec![Route::new(Some("/a".into()), None, vec![be(1)])], None);
        assert_eq!(pick(&mut d, "GET /b HTTP/1.1\r\n\r\n", &[]), None);
    }
}
