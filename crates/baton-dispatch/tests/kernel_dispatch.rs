//! One decision, two engines: the kernel's matcher (`baton_common::kernel_dispatch`,
//! run over the tables `Dispatcher::compile_kernel` makes, by the same steps as the XDP
//! program) against the dispatcher itself, on generated requests, the fuzz corpora and
//! hand-picked ones, over several configurations. Wherever the kernel hands a request
//! off, the slow path must parse the same request and choose the same rule, the same
//! pool and, where the pool's policy is deterministic (hashing), the same back-end;
//! elsewhere the kernel must say "slow path". The plain common requests must be decided
//! in the kernel, so that a kernel that always says "slow path" fails.

use std::{collections::BTreeMap, net::SocketAddrV4, path::Path};

use baton_common::kernel_dispatch::{KernelDecision, KernelPool, SCRATCH_LEN, decide, reason};
use baton_dispatch::{Decision, Dispatcher, KernelProgram, RequestView, Route};
use baton_proto::{
    frontend::Instant,
    request::{ClientRequest, RequestLimits, parse_request},
};
use proptest::prelude::*;

#[path = "support/lab.rs"]
mod lab;
use lab::lab_dispatch;

const EXAMPLE: &str = include_str!("../../../examples/dispatch.toml");

/// Every matcher the kernel judges, every pool it picks from, a rule it cannot judge
/// in the middle, and sticky, weighted and hashing pools.
const MIXED: &str = r#"
default_pool = "web"
[pools.web]
backends = [
    { address = "198.18.1.11:80", weight = 5 },
    { address = "198.18.1.12:80" },
    { address = "198.18.1.13:80" },
]
[pools.by_path]
policy = "consistent_hash"
backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }, { address = "198.18.1.13:80" }]
[pools.by_url]
policy = "consistent_hash"
hash_key = "url"
backends = [{ address = "198.18.1.12:80" }, { address = "198.18.1.13:80" }]
[pools.by_host]
policy = "consistent_hash"
hash_key = "host"
backends = [{ address = "198.18.1.11:8080" }, { address = "198.18.1.13:8080" }]
[pools.sticky]
backends = [{ address = "198.18.1.14:80", id = "a" }, { address = "198.18.1.15:80", id = "b" }]
sticky = { cookie = "sid", by = "id" }
[pools.least]
policy = "least_connections"
backends = [{ address = "198.18.1.16:80" }]
[pools.weighted_hash]
policy = "consistent_hash"
backends = [{ address = "198.18.1.11:80", weight = 2 }, { address = "198.18.1.12:80" }]

[[rules]]
name = "tls"
pool = "least"
match = { sni = "shop.example.com" }
[[rules]]
name = "hosts"
pool = "by_host"
match = { host = ["static.example.com", "*.cdn.example.com"] }
[[rules]]
name = "not-get"
pool = "least"
match = { not = { method = ["GET", "HEAD", "POST"] } }
[[rules]]
name = "images"
pool = "by_path"
match = { extension = ["png", "svg"], method = "GET" }
[[rules]]
name = "api"
pool = "by_url"
match = { any = [{ path_prefix = "/api/" }, { all = [{ path = "/v" }, { query = { name = "v" } }] }] }
[[rules]]
name = "beta"
pool = "sticky"
match = { cookie = { name = "beta" }, path_prefix = "/beta" }
[[rules]]
name = "regex"
pool = "least"
match = { path_prefix = "/users/", path_regex = "^/users/[0-9]+$" }
[[rules]]
name = "after-regex"
pool = "weighted_hash"
match = { path_prefix = "/docs/" }
"#;

/// A configuration whose first rule the kernel can never judge.
const HEADER_FIRST: &str = r#"
default_pool = "web"
[pools.web]
backends = [{ address = "198.18.1.11:80" }]
[[rules]]
pool = "web"
match = { header = { name = "X-A" } }
"#;

fn configurations() -> Vec<(&'static str, String)> {
    vec![
        ("examples/dispatch.toml", EXAMPLE.to_owned()),
        ("examples/frontend-lab.toml", lab_dispatch()),
        ("mixed", MIXED.to_owned()),
        ("header-first", HEADER_FIRST.to_owned()),
    ]
}

/// One configuration's two engines.
struct Engines {
    dispatcher: Dispatcher,
    program: KernelProgram,
    cursors: Vec<u32>,
    buf: Box<[u8; SCRATCH_LEN]>,
    /// Each pool's members, by the dispatcher's pool index.
    members: Vec<Vec<SocketAddrV4>>,
}

impl Engines {
    fn new(text: &str) -> Self {
        let dispatcher = Dispatcher::from_toml(text).unwrap();
        Self::of(dispatcher)
    }

    fn of(dispatcher: Dispatcher) -> Self {
        let limits = RequestLimits::default();
        let program = dispatcher.compile_kernel(limits.max_head_len, limits.max_headers);
        let names: Vec<String> = dispatcher.pools().map(|(n, _)| n.to_owned()).collect();
        let mut by_name: BTreeMap<&str, Vec<SocketAddrV4>> = BTreeMap::new();
        for (pool, backend, _) in dispatcher.pool_members() {
            by_name.entry(pool).or_default().push(backend);
        }
        let members = names.iter().map(|n| by_name[n.as_str()].clone()).collect();
        Self {
            cursors: vec![0; program.pools.len()],
            dispatcher,
            program,
            buf: Box::new([0; SCRATCH_LEN]),
            members,
        }
    }

    /// Both engines' answers for `raw`; panics where they disagree. `true` when the
    /// kernel decided.
    fn check(&mut self, raw: &[u8]) -> bool {
        let kernel = decide(
            &self.program.tables(),
            raw,
            &mut self.buf,
            &mut self.cursors,
        );
        if kernel.verdict != KernelDecision::HAND_OFF {
            assert_eq!(kernel.verdict, KernelDecision::SLOW_PATH);
            assert_ne!(kernel.reason, 0);
            return false;
        }
        let show = String::from_utf8_lossy(raw);
        let limits = RequestLimits::default();
        let request = match parse_request(raw, &limits) {
            Ok(Some(request)) => request,
            other => panic!("the kernel hands off {show:?}, the slow path says {other:?}"),
        };
        let ClientRequest::Http(head) = &request else {
            panic!("the kernel hands off TLS {show:?}");
        };
        assert_eq!(
            head.head_len,
            raw.len(),
            "{show:?}: the head is the segment"
        );
        let view = RequestView::new(&request, None);
        let route = match self.dispatcher.route(&view) {
            Route::Rule(i) => i as u32,
            Route::Default => u32::MAX,
        };
        assert_eq!(kernel.rule, route, "{show:?}: the rule");
        let Decision::Backend(chosen) = self.dispatcher.decide(Instant::ZERO, &view, &[]) else {
            panic!("the kernel hands off {show:?}, the dispatcher has no back-end up");
        };
        let pool = self.dispatcher.last_route().1;
        let kernels = self.program.backends[kernel.backend as usize];
        assert!(
            self.members[pool].contains(&kernels) && self.members[pool].contains(&chosen),
            "{show:?}: {kernels} and {chosen} in pool {pool}"
        );
        let policy = self.program.pools[pool].policy;
        if policy != KernelPool::ROUND_ROBIN {
            assert_eq!(kernels, chosen, "{show:?}: hashing picks one back-end");
        }
        true
    }
}

/// Requests as clients send them, and a few as they should not.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "get", "OPTIONS"]);
    let segment = prop::sample::select(vec![
        "img",
        "api",
        "static",
        "docs",
        "beta",
        "users",
        "123",
        "v",
        "a.png",
        "logo.SVG",
        "x.css",
        "app.js",
        ".hidden",
        "a.",
        "healthz",
        "..",
        ".",
        "",
        "%61pi",
        "a%2Fb",
        "a\\b",
        "caf\u{e9}",
        "x.tar.gz",
        "IMG",
    ]);
    let path = (prop::collection::vec(segment, 0..4), any::<bool>());
    let query = prop::sample::select(vec!["", "?", "?v=2", "?debug", "?a=b&c", "?x#f"]);
    let host = prop::sample::select(vec![
        "",
        "Host: static.example.com\r\n",
        "Host: A.cdn.Example.com\r\n",
        "Host: cdn.example.com\r\n",
        "Host: img.baton.test\r\n",
        "Host: x.IMG.baton.test.\r\n",
        "Host: Static.Example.Com:8080\r\n",
        "Host: www.example.com\r\n",
        "Host: [::1]\r\n",
        "Host: a b\r\n",
        "Host:\r\n",
        "Host: .\r\n",
        "Host: a\r\nhost: b\r\n",
        "Host: shop.example.com\r\n",
    ]);
    let headers = prop::collection::vec(
        prop::sample::select(vec![
            "User-Agent: curl/8.5.0\r\n",
            "Accept: */*\r\n",
            "Cookie: session=1\r\n",
            "Cookie: beta=1; sid=x.b\r\n",
            "cookie: JSESSIONID=abc.be2\r\n",
            "X-Cache-Key: k1\r\n",
            "X-Api-Version: 2\r\n",
            "User-Agent: android\r\n",
            "X-A: 1\r\n",
            " folded\r\n",
            "Bad Name: x\r\n",
        ]),
        0..4,
    );
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]);
    let tail = prop::sample::select(vec!["", "", "", "body"]);
    (method, path, query, version, host, headers, tail).prop_map(
        |(method, (segments, slash), query, version, host, headers, tail)| {
            let mut path = format!("/{}", segments.join("/"));
            if slash && !segments.is_empty() {
                path.push('/');
            }
            let mut raw = format!("{method} {path}{query} {version}\r\n{host}");
            for h in headers {
                raw.push_str(h);
            }
            raw.push_str("\r\n");
            raw.push_str(tail);
            raw.into_bytes()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_kernel_decides_as_the_dispatcher_or_leaves_it_to_it(
        raw in request(),
        flip in any::<Option<(prop::sample::Index, u8)>>(),
    ) {
        let mut raw = raw;
        if let Some((at, byte)) = flip {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        for (_, text) in configurations() {
            Engines::new(&text).check(&raw);
        }
    }
}

/// Whatever the fuzzers found for the request parser, if the corpora are here.
#[test]
fn the_fuzz_corpora_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut engines: Vec<Engines> = configurations()
        .iter()
        .map(|(_, t)| Engines::new(t))
        .collect();
    let mut seen = 0;
    for dir in ["corpus/http_head", "seeds/http_head"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let raw = std::fs::read(entry.path()).unwrap();
            for e in &mut engines {
                e.check(&raw);
            }
            seen += 1;
        }
    }
    println!("{seen} inputs from the fuzz corpora");
}

const COMMON: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    "GET /img/logo.png HTTP/1.1\r\nHost: img.baton.test\r\nAccept: */*\r\n\r\n",
    "GET /files/report.pdf HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    "GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    "HEAD /files/a.txt HTTP/1.0\r\n\r\n",
];

#[test]
fn plain_requests_are_decided_in_the_kernel() {
    let mut lab = Engines::new(&lab_dispatch());
    for raw in COMMON {
        assert!(lab.check(raw.as_bytes()), "{raw:?} went to the slow path");
    }
    let mut mixed = Engines::new(MIXED);
    for raw in [
        "GET /a/b.png HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET /api/x?y=1 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.cdn.example.com\r\n\r\n",
        "POST /form HTTP/1.1\r\nHost: www.example.com\r\nCookie: a=1\r\n\r\n",
    ] {
        assert!(mixed.check(raw.as_bytes()), "{raw:?} went to the slow path");
    }
    // The example's first rules run in the kernel; after its regex rule, nothing does.
    let mut example = Engines::new(EXAMPLE);
    assert!(example.check(b"GET /a.png HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"));
    assert!(!example.check(b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"));
}

#[test]
fn what_the_kernel_leaves_to_the_slow_path_and_why() {
    let mut mixed = Engines::new(MIXED);
    let mut why = |raw: &str| {
        let d = decide(
            &mixed.program.tables(),
            raw.as_bytes(),
            &mut mixed.buf,
            &mut mixed.cursors,
        );
        (d.verdict, d.reason)
    };
    let slow = KernelDecision::SLOW_PATH;
    // A cookie rule with a cookie: maybe.
    assert_eq!(
        why("GET /beta HTTP/1.1\r\nCookie: beta=1\r\n\r\n"),
        (slow, reason::RULE)
    );
    // The regex rule stops the run for every request it might match...
    assert_eq!(why("GET /users/1 HTTP/1.1\r\n\r\n"), (slow, reason::RULE));
    // ... but not for one an earlier rule takes.
    assert_eq!(
        why("GET /users/a.png HTTP/1.1\r\n\r\n").0,
        KernelDecision::HAND_OFF
    );
    assert_eq!(
        why("GET /docs/a HTTP/1.1\r\n\r\n"),
        (slow, reason::POOL_POLICY)
    );
    assert_eq!(
        why("DELETE /x HTTP/1.1\r\n\r\n"),
        (slow, reason::POOL_POLICY)
    );
    assert_eq!(
        why("GET / HTTP/1.1\r\nHost: static.example.com\r\n\r\n").0,
        KernelDecision::HAND_OFF
    );
    let mut sticky = Engines::new(&lab_dispatch());
    let d = decide(
        &sticky.program.tables(),
        b"GET / HTTP/1.1\r\nCookie: JSESSIONID=a.be2\r\n\r\n",
        &mut sticky.buf,
        &mut sticky.cursors,
    );
    assert_eq!(
        (d.verdict, d.reason),
        (slow, reason::RULE),
        "the sessions rule may match"
    );
}

/// One CPU's round robin walks the dispatcher's own smooth weighted sequence.
#[test]
fn round_robin_follows_the_smooth_weighted_sequence() {
    let mut e = Engines::new(MIXED);
    let raw = b"GET /x HTTP/1.1\r\n\r\n";
    let limits = RequestLimits::default();
    let request = parse_request(raw, &limits).unwrap().unwrap();
    let view = RequestView::new(&request, None);
    for _ in 0..3 * 7 {
        let kernel = decide(&e.program.tables(), raw, &mut e.buf, &mut e.cursors);
        assert_eq!(kernel.verdict, KernelDecision::HAND_OFF);
        let Decision::Backend(chosen) = e.dispatcher.decide(Instant::ZERO, &view, &[]) else {
            panic!("no back-end");
        };
        assert_eq!(e.program.backends[kernel.backend as usize], chosen);
    }
}

/// Down back-ends leave the compiled pools, and a pool with none up goes to the slow
/// path (which answers 503).
#[test]
fn health_reshapes_the_pools() {
    let mut dispatcher = Dispatcher::from_toml(MIXED).unwrap();
    for b in ["198.18.1.11:80", "198.18.1.12:80"] {
        dispatcher.set_health(b.parse().unwrap(), false);
    }
    let mut e = Engines::of(dispatcher);
    for _ in 0..4 {
        assert!(e.check(b"GET /x HTTP/1.1\r\n\r\n"));
        assert!(e.check(b"GET /p/a.png HTTP/1.1\r\n\r\n"));
    }
    let mut dispatcher = Dispatcher::from_toml(MIXED).unwrap();
    for b in ["198.18.1.11:8080", "198.18.1.13:8080"] {
        dispatcher.set_health(b.parse().unwrap(), false);
    }
    let mut e = Engines::of(dispatcher);
    let d = decide(
        &e.program.tables(),
        b"GET / HTTP/1.1\r\nHost: static.example.com\r\n\r\n",
        &mut e.buf,
        &mut e.cursors,
    );
    assert_eq!(
        (d.verdict, d.reason),
        (KernelDecision::SLOW_PATH, reason::POOL_DOWN)
    );
}

#[test]
fn the_report_says_where_each_rule_runs() {
    let e = Engines::new(MIXED);
    let report: Vec<String> = e
        .program
        .rules
        .iter()
        .map(|p| format!("{}: {p}", p.name))
        .collect();
    assert_eq!(
        report,
        [
            "tls: in the kernel",
            "hosts: in the kernel",
            "not-get: in the kernel",
            "images: in the kernel",
            "api: in the kernel, unless the request has a query",
            "beta: in the kernel, unless the request has a Cookie field",
            "regex: in userspace: path_regex",
            "after-regex: in the kernel",
        ]
    );
    let pools: Vec<String> = e
        .program
        .pool_placements
        .iter()
        .map(|p| format!("{}: {p}", p.name))
        .collect();
    assert!(
        pools.contains(&"least: in userspace: least_connections".to_owned()),
        "{pools:?}"
    );
    assert!(
        pools.contains(
            &"sticky: in the kernel (round robin), unless the request has a Cookie field"
                .to_owned()
        ),
        "{pools:?}"
    );
    assert!(
        pools.contains(&"by_url: in the kernel (consistent_hash on the url)".to_owned()),
        "{pools:?}"
    );
}
