//! Baton's dispatch layer: given a parsed request (Host, path, headers, cookies, TLS SNI),
//! pick a back-end from the configured rules, pools and policies, aware of health.
//!
//! Pure and fast: a decision is a function of the request and the dispatcher's state,
//! measured in nanoseconds. This crate must never do I/O, read a clock (time comes in as
//! an argument), block, or allocate per decision on the hot path.
//!
//! # Using it
//!
//! ```
//! use baton_dispatch::{Decision, Dispatcher, RequestView};
//! use baton_proto::{frontend::Instant, request::{RequestLimits, parse_request}};
//!
//! let mut dispatcher = Dispatcher::from_toml(r#"
//!     default_pool = "web"
//!     [pools.web]
//!     backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }]
//!     [pools.images]
//!     backends = [{ address = "198.18.1.13:80" }]
//!     [[rules]]
//!     pool = "images"
//!     match = { extension = ["png", "svg"] }
//! "#)?;
//! let raw = b"GET /img/logo.svg HTTP/1.1\r\nHost: shop.example\r\n\r\n";
//! let request = parse_request(raw, &RequestLimits::default()).unwrap().unwrap();
//! let view = RequestView::new(&request, None);
//! assert_eq!(
//!     dispatcher.decide(Instant::ZERO, &view, &[]),
//!     Decision::Backend("198.18.1.13:80".parse().unwrap()),
//! );
//! assert_eq!(dispatcher.rule_hits(), [1]);
//! # Ok::<(), baton_dispatch::ConfigError>(())
//! ```
//!
//! The daemon can hand a [`Dispatcher`] to the protocol core as its
//! [`baton_proto::frontend::Dispatch`]: the core gives it the time with each decision and
//! tells it what became of each back-end it chose (`Dispatch::feedback`), which keeps
//! its books ([`Dispatcher::on_handed_off`], [`Dispatcher::on_closed`],
//! [`Dispatcher::on_handoff_failed`]). Retries come with the back-ends already tried in
//! `exclude`, and never get one of them again. A program
//! whose own file holds this configuration as a table deserializes a [`DispatchTable`]
//! with the rest of its file and checks it with [`Dispatcher::from_table`]; on a reload,
//! [`Dispatcher::take_state_from`] carries the back-ends' connection counts and health
//! over to the new dispatcher.
//!
//! # Configuration
//!
//! TOML; every table refuses unknown keys, and every error ([`ConfigError`]) names its
//! line and field. `examples/dispatch.toml` at the repository root shows every matcher
//! and policy.
//!
//! ```toml
//! default_pool = "web"                # where requests no rule matches go (required)
//! unavailable_body = "<h1>Sorry</h1>" # the 503 body when a pool has no back-end up
//!
//! [health]                            # passive marking from failed handoffs
//! failures = 3                        # consecutive failures before a back-end is down
//! backoff_ms = 1000                   # first back-off, doubled at each further failure
//! max_backoff_ms = 60000
//! path = "/healthz"                   # active HTTP checks, the caller's to run (off
//! interval_ms = 2000                  #   without a path); these are the defaults
//! timeout_ms = 1000
//! rise = 2                            # successes in a row to come back up
//! fall = 3                            # failures in a row to go down
//!
//! [pools.web]
//! policy = "round_robin"              # round_robin | least_connections | consistent_hash | lard
//! backends = [
//!   { address = "198.18.1.11:80", weight = 5, id = "be1" },   # weight default 1
//!   { address = "198.18.1.12:80", id = "be2" },
//! ]
//! sticky = { cookie = "JSESSIONID", by = "id", separator = "." }   # ABC123.be2 -> be2
//!
//! [pools.cache]
//! policy = "consistent_hash"
//! health = { path = "/cache/ping", interval_ms = 500 }   # over [health]'s, key by key
//! hash_key = { header = "X-Cache-Key" }  # "path" (default) | "url" | "host" | "client_address"
//!                                        # | { header = N } | { cookie = N } | { query = N }
//! backends = [{ address = "198.18.1.13:80" }, { address = "198.18.1.14:80" }]
//!
//! [pools.docs]
//! policy = "lard"
//! lard = { target = "path", low_load = 25, high_load = 65, shrink_after_ms = 20000 }
//! backends = [{ address = "198.18.1.13:80" }, { address = "198.18.1.14:80" }]
//!
//! [[rules]]                           # tried in order; the first that matches wins
//! name = "images"
//! pool = "cache"
//! match = { extension = ["png", "jpg"], method = ["GET", "HEAD"] }   # keys are ANDed
//!
//! [[rules]]
//! name = "api-v2"
//! pool = "web"
//! match = { any = [
//!   { header = { name = "X-Api-Version", equals = "2" } },
//!   { all = [{ path_prefix = "/api/" }, { query = { name = "v", equals = "2" } }] },
//! ], not = { cookie = { name = "legacy" } } }
//! ```
//!
//! Matchers (a `match` table's keys; several keys must all hold):
//!
//! | key | holds when |
//! |---|---|
//! | `host = "example.com"` or a list, `"*.example.com"` | the HTTP Host (or TLS SNI) is one of them, ASCII case-insensitively; `*.example.com` wants at least one label in front, not `example.com` itself |
//! | `sni = "..."` or a list | a TLS ClientHello's server name is one of them (never for plaintext HTTP) |
//! | `service = "198.18.2.1:443"` or a list, `"*:443"` | the connection's virtual service (VIP and port) is one of them; `*:PORT` is that port on any VIP. For a front-end serving several services (HTTP and HTTPS on one VIP): `match = { service = "*:443" }` sends every TLS connection to a TLS pool, whatever its SNI |
//! | `path = "/exact"`, `path_prefix = "/img/"` (or lists), `path_regex = "^/u/[0-9]+$"` | the normalised path (below), without query, is / starts with / is matched by it (unanchored unless anchored) |
//! | `extension = ["png", "JPG"]` | the normalised path's last segment's extension, case-insensitively |
//! | `method = ["GET", "HEAD"]` | the method (case-sensitive, RFC 9110 §9.1) |
//! | `header = { name = "X-A" }`, `... equals = "v" }`, `... regex = "(?i)mobile" }` | some field of that name is present / equals the value byte for byte / is matched |
//! | `cookie = { name = "beta" }`, `... equals = "1" }` | the cookie is present / has that value |
//! | `query = { name = "v" }`, `... equals = "2" }` | the query parameter is present / has that value as sent (no percent-decoding) |
//! | `all = [ {..}, .. ]`, `any = [ {..}, .. ]`, `not = {..}` | every one / some / not the condition |
//!
//! # What a path rule matches
//!
//! The path the back-end's server will serve, not the bytes the client sent: the parser
//! normalises it as nginx does before choosing a location
//! ([`baton_proto::request::normalize_path`], after `ngx_http_parse_complex_uri` with
//! `merge_slashes` on): each `%XX` decoded once, slashes merged, `.` and `..` segments
//! removed (RFC 3986 §5.2.4). `/img/../api/x`, `/%61pi/x` and `//api/x` are all `/api/x`
//! to `path`, `path_prefix`, `path_regex` and `extension`, and to the `path` and `url`
//! hash keys of `consistent_hash` and `lard`, so `/a//b` and `/a/b` land on one back-end.
//! Query parameters are matched as sent. A path no server would resolve (a `..` above
//! the root, an invalid escape, `%00`) never reaches the dispatcher: the front-end
//! answers 400.
//!
//! # Policies
//!
//! - `round_robin`: nginx's smooth weighted round robin: weights 5, 1, 1 give
//!   `a a b a c a a`.
//! - `least_connections`: the fewest active connections per unit of weight, counted from
//!   [`Dispatcher::on_handed_off`] and [`Dispatcher::on_closed`].
//! - `consistent_hash`: weighted rendezvous hashing of `hash_key`, for cache affinity; a
//!   back-end that leaves (down, removed) moves only the keys it had, and gets them back
//!   when it returns. Chosen over Maglev: exact minimal disruption, nothing to rebuild on
//!   health changes, no per-pool lookup table, and O(back-ends) per decision is tens of
//!   nanoseconds at a handoff cluster's size. A request without the key (no such
//!   header) hashes its client address instead.
//! - `lard`: locality-aware request distribution with replication (Pai et al., ASPLOS
//!   1998): each target (by default the path) has a set of servers; it grows by the
//!   least loaded node when its least loaded member is past `high_load` while some node
//!   is under `low_load` (or past twice `high_load`), and loses its most loaded member
//!   when it has not changed for `shrink_after_ms`. Load is active connections. The
//!   reading of the paper is spelt out on the implementation (`pool::Lard`).
//!
//! A back-end is down when the caller says so ([`Dispatcher::set_health`], from active
//! checks) or after `health.failures` handoff failures in a row (passive marking, with
//! exponential back-off before it is tried again). Down, it gets no new connections.
//!
//! Active checks are configured here and run by the caller, which does the I/O
//! ([`Dispatcher::health_checks`]): `[health]`'s `path`, `port`, `interval_ms`,
//! `timeout_ms`, `rise` and `fall` apply to every pool once `path` is set, and a pool's
//! `health` table overrides them key by key (its own `path` turns checks on for that
//! pool alone). `port` checks another port than the back-end's, such as a TLS
//! back-end's plain HTTP one. A back-end listed by pools with different checks gets each
//! of them, and is up while all pass.
//! When every back-end of the chosen pool is down, the decision is
//! [`Decision::Unavailable`] with the configured 503 body; requests do not spill into
//! another pool, which might not serve that content.
//!
//! # Sticky sessions
//!
//! A pool's `sticky` table sends a client back to the back-end its session lives on:
//!
//! - `by = "id"`: the cookie names a back-end by its `id`, either the whole value (`be2`)
//!   or, with `separator`, what follows the last separator (`ABC123.be2` with
//!   `separator = "."`, as Tomcat's jvmRoute writes it).
//! - `by = "hash"`: the cookie's value (a session id) is hashed onto the pool with the
//!   same rendezvous hashing as `consistent_hash`.
//!
//! Trade-offs. Responses go from the back-end straight to the client, so the front-end
//! never sees a `Set-Cookie` and cannot insert one of its own (HAProxy's `cookie SERVERID
//! insert` is impossible): the application must set the cookie, and for `by = "id"` each
//! back-end must know its id (jvmRoute, or a header the back-end's server adds). `by =
//! "id"` survives pool changes (the id is explicit) but needs that cooperation;
//! `by = "hash"` needs only a session cookie, but a back-end joining or leaving moves the
//! sessions rendezvous hashing moves (about 1/N of them). Either way, a request without
//! the cookie, or whose back-end is down or already tried, falls back to the pool's
//! policy, and its session is then wherever the application's session store lets it be.
//! Stickiness applies to the connection's first request only: a keep-alive connection's
//! later requests go to the same back-end by construction.

mod config;
mod dispatcher;
mod error;
mod hash;
mod kernel;
mod matcher;
mod pool;
mod view;

pub use config::{DEFAULT_UNAVAILABLE_BODY, DispatchTable};
pub use dispatcher::{BackendStatus, Decision, Dispatcher, HealthCheck, Route};
pub use error::ConfigError;
pub use kernel::{KernelProgram, Placement};
pub use view::RequestView;
