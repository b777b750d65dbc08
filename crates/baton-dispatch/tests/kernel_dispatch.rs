//! One decision, two engines: the kernel's matcher (`baton_common::kernel_dispatch`,
//! run over the tables `Dispatcher::compile_kernel` makes, by the same steps as the XDP
//! program) against the dispatcher itself, on generated requests, the fuzz corpora and
//! hand-picked ones, over several configurations. Wherever the kernel hands a request
//! off, the slow path must parse the same request and choose the same rule, the same
//! pool and, where the pool's policy is deterministic (hashing), the same back-end;
//! elsewhere the kernel must say "slow path". The plain common requests must be decided
//! in the kernel, so that a kernel that always says "slow path" fails. Requests with
//! cookies meet rules on cookies and sticky pools (by id and by hash), where the
//! back-end is exact too; generated TLS ClientHellos meet SNI and Host rules.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use baton_common::kernel_dispatch::{
    KernelDecision, KernelPool, KernelText, RuleTables, SCRATCH_LEN, decide, reason,
};
use baton_dispatch::{Decision, Dispatcher, KernelProgram, RequestView, Route};
use baton_proto::{
    frontend::Instant,
    request::{RequestLimits, parse_request},
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
[pools.sessions]
policy = "least_connections"
backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }, { address = "198.18.1.13:80" }]
sticky = { cookie = "session", by = "hash" }
[pools.jvm]
policy = "consistent_hash"
backends = [{ address = "198.18.1.11:80", id = "be1" }, { address = "198.18.1.12:80", id = "be2" }]
sticky = { cookie = "JSESSIONID", by = "id", separator = "." }
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
match = { extension = ["png", "svg", "jpeg", "javascript"], method = "GET" }
[[rules]]
name = "api"
pool = "by_url"
match = { any = [{ path_prefix = "/api/" }, { all = [{ path = "/v" }, { query = { name = "v" } }] }] }
[[rules]]
name = "beta"
pool = "sticky"
match = { cookie = { name = "beta" }, path_prefix = "/beta" }
[[rules]]
name = "beta-2"
pool = "sticky"
match = { cookie = { name = "beta", equals = "2" } }
[[rules]]
name = "sessions"
pool = "sessions"
match = { cookie = { name = "session" } }
[[rules]]
name = "jvm"
pool = "jvm"
match = { path_prefix = "/app" }
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

/// TLS services: SNI rules, a Host rule (the SNI is the host), hashing on the host and
/// on the path (which a ClientHello lacks).
const TLS: &str = r#"
default_pool = "by_host"
[pools.shop]
backends = [{ address = "198.18.1.11:443" }]
[pools.api]
backends = [{ address = "198.18.1.12:443" }, { address = "198.18.1.13:443" }]
[pools.by_host]
policy = "consistent_hash"
hash_key = "host"
backends = [{ address = "198.18.1.11:443" }, { address = "198.18.1.12:443" }, { address = "198.18.1.13:443" }]
[pools.by_path]
policy = "consistent_hash"
backends = [{ address = "198.18.1.13:443" }, { address = "198.18.1.14:443" }]
[[rules]]
name = "shop"
pool = "shop"
match = { sni = "shop.example.com" }
[[rules]]
name = "api"
pool = "api"
match = { sni = ["api.example.com", "*.api.example.com"] }
[[rules]]
name = "www"
pool = "shop"
match = { host = "www.example.com", not = { path_prefix = "/x" } }
[[rules]]
name = "paths"
pool = "by_path"
match = { host = "paths.example.com" }
"#;

/// Lists of hosts, SNIs and paths, exact and partial, as list terms: more entries than
/// one list holds, an entry too long for a list (a leaf of its own), entries that are
/// suffixes or prefixes of each other, and a list's bytes past an entry.
const LISTS: &str = r#"
default_pool = "web"
[pools.web]
backends = [{ address = "198.18.1.11:80" }]
[pools.a]
backends = [{ address = "198.18.1.12:80" }]
[pools.b]
backends = [{ address = "198.18.1.13:80" }]
[[rules]]
name = "sni"
pool = "b"
match = { sni = ["api.example.com", "*.example.com", "www.example.com", "other.example", "x.y"] }
[[rules]]
name = "hosts-and-prefixes"
pool = "a"
match = { host = ["www.example.com", "*.cdn.example.com", "*.a-name-of-more-than-thirty-one-bytes.example.com", "img.baton.test", "shop.example.com", "*.baton.test"], path_prefix = ["/img", "/static/", "/docs/", "/api/", "/beta"] }
[[rules]]
name = "paths"
pool = "b"
match = { path = ["/healthz", "/v", "/", "/a.png", "/static/app.js/"] }
[[rules]]
name = "hosts-but-not"
pool = "a"
match = { host = ["static.example.com", "cdn.example.com", "*.example.com"], not = { path = ["/img", "/img/"] } }
"#;

fn configurations() -> Vec<(&'static str, String)> {
    vec![
        ("examples/dispatch.toml", EXAMPLE.to_owned()),
        ("examples/frontend-lab.toml", lab_dispatch()),
        ("mixed", MIXED.to_owned()),
        ("header-first", HEADER_FIRST.to_owned()),
        ("tls", TLS.to_owned()),
        ("lists", LISTS.to_owned()),
    ]
}

/// One configuration's two engines.
struct Engines {
    dispatcher: Dispatcher,
    program: KernelProgram,
    cursors: Vec<u32>,
    buf: Box<[u8; SCRATCH_LEN]>,
    /// Each pool's members, by the dispatcher's pool index.
    members: Vec<Vec<SocketAddr>>,
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
        let mut by_name: BTreeMap<&str, Vec<SocketAddr>> = BTreeMap::new();
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
        let loads = self.loads();
        let kernel = decide(
            &RuleTables {
                loads: &loads,
                ..self.program.tables()
            },
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
        assert_eq!(
            request.head_len(),
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
        let kernels = SocketAddr::V4(self.program.backends[kernel.backend as usize]);
        assert!(
            self.members[pool].contains(&kernels) && self.members[pool].contains(&chosen),
            "{show:?}: {kernels} and {chosen} in pool {pool}"
        );
        let policy = self.program.pools[pool].policy;
        if policy != KernelPool::ROUND_ROBIN || self.sticky_decides(pool, &view) {
            assert_eq!(
                kernels, chosen,
                "{show:?}: hashing or a cookie picks one back-end"
            );
        }
        true
    }

    /// The compiled back-ends' active connections as the dispatcher counts them: what
    /// the kernel reads from the counts both engines share.
    fn loads(&self) -> Vec<u32> {
        self.program
            .backends
            .iter()
            .map(|b| {
                self.dispatcher
                    .backend_status(SocketAddr::V4(*b))
                    .map_or(0, |s| s.active)
            })
            .collect()
    }

    /// Whether pool `pool`'s stickiness picks for `view` in the kernel (rather than its
    /// policy): its cookie is present and, by id, names an up member's id.
    fn sticky_decides(&self, pool: usize, view: &RequestView<'_>) -> bool {
        let p = &self.program.pools[pool];
        if p.flags & (KernelPool::STICKY_BY_ID | KernelPool::STICKY_BY_HASH) == 0 {
            return false;
        }
        let name = &self.program.cookies[p.cookie as usize];
        let name = std::str::from_utf8(&name.bytes[..name.len as usize]).unwrap();
        let Some(value) = view.cookie(name) else {
            return false;
        };
        if p.flags & KernelPool::STICKY_BY_HASH != 0 {
            return true;
        }
        let separator = self.program.cookies[p.cookie as usize].separator;
        let id = match char::from_u32(separator) {
            Some(sep) if separator < 0x100 => value.rsplit_once(sep).map_or(value, |(_, id)| id),
            _ => value,
        };
        let ids = &self.program.slots[p.sticky_first as usize..][..p.sticky_slots as usize];
        ids.iter().any(|s| {
            self.program.texts[s.id_text as usize] == KernelText::new(id.as_bytes()).unwrap()
        })
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
        "photo.JPeg",
        "x.JavaScript",
        "x.javascripts",
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
        // A wildcard's suffix alone, which the wildcard does not take.
        "Host: .cdn.example.com\r\n",
        "Host: .baton.test\r\n",
        "Host: a\r\nhost: b\r\n",
        "Host: shop.example.com\r\n",
        "Host: www.example.com\r\n",
    ]);
    let headers = prop::collection::vec(
        prop::sample::select(vec![
            "User-Agent: curl/8.5.0\r\n",
            "Accept: */*\r\n",
            "Cookie: session=1\r\n",
            "Cookie: beta=1; sid=x.b\r\n",
            "cookie: JSESSIONID=abc.be2\r\n",
            "Cookie: sid=a\r\n",
            "Cookie: sid=b; sid=a\r\n",
            "Cookie:  sid = b ;beta= 2\r\n",
            "Cookie: beta=2\r\n",
            "Cookie: beta=22;session\r\n",
            "Cookie: session=\r\n",
            "Cookie: se ssion=1; JSESSIONID=x.y.be1\r\n",
            "Cookie: JSESSIONID=abc.be3\r\n",
            "Cookie: JSESSIONID=be1.\r\n",
            "Cookie: =x; session=s42\r\n",
            "Cookie: a=1\r\nCookie: b=2\r\nCookie: c=3\r\nCookie: d=4\r\nCookie: sid=a\r\n",
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

/// A ClientHello, one record (or `records` of them), built field by field with the
/// knobs a client or an attacker turns: the session id's length, the cipher suites'
/// length, the SNI (absent, one name, two names, another name type first), ALPN (well
/// formed, an empty name, twice), extensions before and after, bytes after the record.
fn client_hello() -> impl Strategy<Value = Vec<u8>> {
    let sni = prop::sample::select(vec![
        "shop.example.com",
        "Shop.Example.COM",
        "shop.example.com.",
        "api.example.com",
        "v2.API.example.com",
        "api.example.com.evil",
        "www.example.com",
        "paths.example.com",
        "other.example",
        ".",
        "a b",
        "",
        "caf\u{e9}.example",
    ]);
    let names = prop::sample::select(vec![
        "one",
        "none",
        "two",
        "other-type-first",
        "other-type-after",
    ]);
    let alpn = prop::sample::select(vec![
        "h2+http/1.1",
        "none",
        "empty-name",
        "twice",
        "short-list",
    ]);
    let session = prop::sample::select(vec![0usize, 32, 33]);
    let ciphers = prop::sample::select(vec![6usize, 2, 3, 0]);
    let records = prop::sample::select(vec![1usize, 1, 1, 2]);
    let after = prop::sample::select(vec![false, false, false, true]);
    (sni, names, alpn, session, ciphers, records, after).prop_map(
        |(sni, names, alpn, session, ciphers, records, after)| {
            let vec16 = |d: &[u8]| {
                let mut v = (d.len() as u16).to_be_bytes().to_vec();
                v.extend_from_slice(d);
                v
            };
            let ext = |kind: u16, d: &[u8]| {
                let mut v = kind.to_be_bytes().to_vec();
                v.extend(vec16(d));
                v
            };
            let name = |t: u8, n: &[u8]| {
                let mut v = vec![t];
                v.extend(vec16(n));
                v
            };
            let mut extensions = ext(43, &[2, 3, 4]);
            let list = match names {
                "one" => Some(name(0, sni.as_bytes())),
                "two" => Some([name(0, sni.as_bytes()), name(0, b"x.example")].concat()),
                "other-type-first" => Some([name(1, b"zz"), name(0, sni.as_bytes())].concat()),
                "other-type-after" => Some([name(0, sni.as_bytes()), name(1, b"zz")].concat()),
                _ => None,
            };
            if let Some(list) = list {
                extensions.extend(ext(0, &vec16(&list)));
            }
            let protocols: &[u8] = b"\x02h2\x08http/1.1";
            match alpn {
                "h2+http/1.1" => extensions.extend(ext(16, &vec16(protocols))),
                "empty-name" => extensions.extend(ext(16, &vec16(b"\x02h2\x00"))),
                "twice" => {
                    extensions.extend(ext(16, &vec16(protocols)));
                    extensions.extend(ext(16, &vec16(protocols)));
                }
                "short-list" => extensions.extend(ext(16, &vec16(&protocols[..5]))),
                _ => {}
            }
            extensions.extend(ext(10, &[0, 2, 0, 29]));
            let mut body = vec![3, 3];
            body.extend([0x5a; 32]);
            body.push(session as u8);
            body.extend(vec![0x11; session]);
            body.extend(vec16(&[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f][..ciphers]));
            body.extend([1, 0]);
            body.extend(vec16(&extensions));
            let mut message = vec![1];
            message.extend(&(body.len() as u32).to_be_bytes()[1..]);
            message.extend(body);
            let mut out = Vec::new();
            for fragment in message.chunks(message.len().div_ceil(records)) {
                out.extend([22, 3, 1]);
                out.extend(vec16(fragment));
            }
            if after {
                out.extend([23, 3, 3, 0, 1, 0xaa]);
            }
            out
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_kernel_reads_client_hellos_as_the_dispatcher_or_leaves_them_to_it(
        raw in client_hello(),
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

/// A ClientHello captured from `openssl s_client -servername shop.example.com -alpn
/// h2,http/1.1` (OpenSSL 3.0), one record of 340 bytes.
const OPENSSL_HELLO: &[u8] =
    include_bytes!("../../baton-proto/src/request/testdata/openssl_client_hello.bin");

/// The captured hello with another SNI, its lengths fixed up.
fn hello_for(sni: &str) -> Vec<u8> {
    let old = b"shop.example.com";
    let at = OPENSSL_HELLO
        .windows(old.len())
        .position(|w| w == old)
        .unwrap();
    let delta = sni.len() as isize - old.len() as isize;
    let mut out = OPENSSL_HELLO[..at].to_vec();
    out.extend(sni.as_bytes());
    out.extend(&OPENSSL_HELLO[at + old.len()..]);
    let add = |out: &mut Vec<u8>, i: usize, width: usize| {
        let mut v = 0isize;
        for k in 0..width {
            v = v << 8 | out[i + k] as isize;
        }
        let v = (v + delta) as usize;
        for k in 0..width {
            out[i + k] = (v >> (8 * (width - 1 - k))) as u8;
        }
    };
    // The record's and the handshake's lengths, the extensions', the server_name
    // extension's, its list's and its name's.
    add(&mut out, 3, 2);
    add(&mut out, 6, 3);
    let session = out[43] as usize;
    let ciphers_at = 44 + session;
    let ciphers = (out[ciphers_at] as usize) << 8 | out[ciphers_at + 1] as usize;
    let compression_at = ciphers_at + 2 + ciphers;
    let extensions_at = compression_at + 1 + out[compression_at] as usize;
    add(&mut out, extensions_at, 2);
    for i in [at - 9 + 2, at - 5, at - 2] {
        add(&mut out, i, 2);
    }
    out
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
    for dir in [
        "corpus/http_head",
        "seeds/http_head",
        "corpus/tls_client_hello",
        "seeds/tls_client_hello",
        "corpus/kernel_request_scan",
        "corpus/kernel_client_hello",
    ] {
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
fn host_sni_and_path_lists_are_list_terms() {
    use baton_common::kernel_dispatch::KernelTerm;
    let count = |text: &str, op: u32| {
        let e = Engines::new(text);
        e.program
            .terms
            .iter()
            .filter(|t| t.op & !KernelTerm::ENDS_RULE == op)
            .count()
    };
    // The example's `sni`, `host` and `path_prefix` lists of two: a term each.
    assert_eq!(count(EXAMPLE, KernelTerm::SNI_IN), 1);
    assert_eq!(count(EXAMPLE, KernelTerm::HOST_IN), 1);
    assert_eq!(count(EXAMPLE, KernelTerm::PATH_IN), 1);
    assert_eq!(Engines::new(EXAMPLE).program.terms.len(), 25);
    // Five SNIs: a list of four and a leaf. Six hosts, one too long for a list: a list
    // of the other first four and two leaves; three hosts, a list. Five path prefixes,
    // five paths: a list of four and a leaf each; two paths, a list.
    assert_eq!(count(LISTS, KernelTerm::SNI_IN), 1);
    assert_eq!(count(LISTS, KernelTerm::SNI_EXACT), 1);
    assert_eq!(count(LISTS, KernelTerm::HOST_IN), 2);
    assert_eq!(count(LISTS, KernelTerm::HOST_SUFFIX), 2);
    assert_eq!(count(LISTS, KernelTerm::PATH_IN), 3);
    assert_eq!(count(LISTS, KernelTerm::PATH_PREFIX), 1);
    assert_eq!(count(LISTS, KernelTerm::PATH_EXACT), 1);
}

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
    // Cookies: a rule on one, sticky pools by id (with a separator) and by hash.
    let sessions: Vec<String> = (0..16)
        .map(|k| format!("GET /app/{k} HTTP/1.1\r\nHost: www.example.com\r\nCookie: a=1; session=s{k}\r\n\r\n"))
        .collect();
    for raw in &sessions {
        assert!(lab.check(raw.as_bytes()), "{raw:?} went to the slow path");
        assert!(mixed.check(raw.as_bytes()), "{raw:?} went to the slow path");
    }
    for raw in [
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nCookie: JSESSIONID=9F2C1A.be3\r\n\r\n",
        "GET / HTTP/1.1\r\nCookie: JSESSIONID=x.be7\r\n\r\n",
        "GET /img/a.png HTTP/1.1\r\nCookie: JSESSIONID=x.be2\r\n\r\n",
    ] {
        assert!(lab.check(raw.as_bytes()), "{raw:?} went to the slow path");
    }
    for raw in [
        "GET /beta HTTP/1.1\r\nCookie: beta=1; sid=b\r\n\r\n",
        "GET / HTTP/1.1\r\nCookie: beta=2\r\n\r\n",
        "GET /app/1 HTTP/1.1\r\nCookie: JSESSIONID=1.2.be2\r\n\r\n",
    ] {
        assert!(mixed.check(raw.as_bytes()), "{raw:?} went to the slow path");
    }
    // ClientHellos: SNI rules, a Host rule, hashing on the host.
    let mut tls = Engines::new(TLS);
    for hello in [
        OPENSSL_HELLO.to_vec(),
        hello_for("api.example.com"),
        hello_for("V2.api.example.com."),
    ] {
        assert!(tls.check(&hello), "a ClientHello went to the slow path");
    }
    // Lists of hosts, SNIs and paths: each rule's requests, and a request past them.
    let mut lists = Engines::new(LISTS);
    for hello in [
        hello_for("api.example.com"),
        hello_for("a.b.example.com"),
        hello_for("x.y"),
        hello_for("example.com"),
    ] {
        assert!(lists.check(&hello), "a ClientHello went to the slow path");
    }
    for raw in [
        "GET /img/a.png HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET /api/ HTTP/1.1\r\nHost: x.cdn.example.com\r\n\r\n",
        "GET /betas HTTP/1.1\r\nHost: q.baton.test\r\n\r\n",
        "GET /docs/a HTTP/1.1\r\nHost: x.a-name-of-more-than-thirty-one-bytes.example.com\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET /static/app.js/ HTTP/1.1\r\n\r\n",
        "GET /v HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n",
        "GET /img HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n",
        "GET /im HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ] {
        assert!(lists.check(raw.as_bytes()), "{raw:?} went to the slow path");
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
    // A cookie rule with cookies the kernel cannot read all of: maybe.
    assert_eq!(
        why(
            "GET /beta HTTP/1.1\r\nCookie: a=1\r\nCookie: b=1\r\nCookie: c=1\r\nCookie: d=1\r\nCookie: beta=1\r\n\r\n"
        ),
        (slow, reason::RULE)
    );
    assert_eq!(
        why("GET /beta HTTP/1.1\r\nCookie: beta=1\r\n\r\n").0,
        KernelDecision::HAND_OFF
    );
    // A ClientHello over two records, or with a name of bytes the slow path refuses.
    let mut tls = Engines::new(TLS);
    let mut tls_why = |raw: &[u8]| {
        let d = decide(&tls.program.tables(), raw, &mut tls.buf, &mut tls.cursors);
        (d.verdict, d.reason)
    };
    let mut two_records = OPENSSL_HELLO[..105].to_vec();
    two_records[3..5].copy_from_slice(&100u16.to_be_bytes());
    two_records.extend([22, 3, 1]);
    two_records.extend(((OPENSSL_HELLO.len() - 105) as u16).to_be_bytes());
    two_records.extend(&OPENSSL_HELLO[105..]);
    assert_eq!(tls_why(&two_records), (slow, reason::TLS_FRAGMENTED));
    assert_eq!(
        tls_why(&OPENSSL_HELLO[..200]),
        (slow, reason::TLS_FRAGMENTED)
    );
    assert_eq!(tls_why(&hello_for("a b")), (slow, reason::TLS_MALFORMED));
    assert_eq!(
        tls_why(&hello_for("paths.example.com")),
        (slow, reason::HASH_KEY)
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
    // Least connections runs in the kernel, from the shared counts.
    assert_eq!(
        why("DELETE /x HTTP/1.1\r\n\r\n"),
        (KernelDecision::HAND_OFF, 0)
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
        (KernelDecision::HAND_OFF, 0),
        "the sessions rule does not match; JSESSIONID names be2"
    );
    assert_eq!(
        sticky.program.backends[d.backend as usize],
        "198.18.1.12:80".parse().unwrap()
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
        assert_eq!(
            SocketAddr::V4(e.program.backends[kernel.backend as usize]),
            chosen
        );
    }
}

/// Least connections: from the same counts both engines pick the same back-end, the
/// kernel's from the loads it reads (`RuleTables::loads`, from the shared counts), the
/// dispatcher's from its books and the kernel's count it last read. Both rotate their
/// starting point one member per pick, so ties too go the same way while every member
/// is up. The counts move between picks as connections open (in either engine) and
/// close.
#[test]
fn least_connections_picks_alike_from_the_same_counts() {
    const LEAST: &str = r#"
default_pool = "least"
[pools.least]
policy = "least_connections"
backends = [
    { address = "198.18.1.11:80" },
    { address = "198.18.1.12:80", weight = 3 },
    { address = "198.18.1.13:80" },
    { address = "198.18.1.14:80", weight = 2 },
]
"#;
    let mut e = Engines::new(LEAST);
    assert_eq!(e.program.pools[0].policy, KernelPool::LEAST_CONNECTIONS);
    let backends = e.program.backends.clone();
    let raw = b"GET /x HTTP/1.1\r\n\r\n";
    let request = parse_request(raw, &RequestLimits::default())
        .unwrap()
        .unwrap();
    let view = RequestView::new(&request, None);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kernel_opened = vec![0u64; backends.len()];
    let mut picks = BTreeMap::new();
    for _ in 0..400 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let b = (rng % backends.len() as u64) as usize;
        match (rng >> 8) % 4 {
            // The kernel handed one off: its count, then the record read.
            0 => {
                kernel_opened[b] += 1;
                e.dispatcher
                    .set_kernel_opened(backends[b].into(), kernel_opened[b]);
                if rng & 0x1000 != 0 {
                    e.dispatcher.on_kernel_handoff(backends[b].into());
                    e.dispatcher.on_handed_off(backends[b].into());
                }
            }
            1 => e.dispatcher.on_handed_off(backends[b].into()),
            2 if e
                .dispatcher
                .backend_status(backends[b].into())
                .unwrap()
                .active
                > 0 =>
            {
                e.dispatcher.on_closed(backends[b].into())
            }
            _ => {}
        }
        let loads = e.loads();
        let kernel = decide(
            &RuleTables {
                loads: &loads,
                ..e.program.tables()
            },
            raw,
            &mut e.buf,
            &mut e.cursors,
        );
        assert_eq!(kernel.verdict, KernelDecision::HAND_OFF);
        let Decision::Backend(chosen) = e.dispatcher.decide(Instant::ZERO, &view, &[]) else {
            panic!("no back-end");
        };
        let kernels = backends[kernel.backend as usize];
        assert_eq!(SocketAddr::V4(kernels), chosen, "loads {loads:?}");
        *picks.entry(chosen).or_insert(0) += 1;
    }
    assert_eq!(
        picks.len(),
        backends.len(),
        "every back-end picked: {picks:?}"
    );
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
            "beta: in the kernel",
            "beta-2: in the kernel",
            "sessions: in the kernel",
            "jvm: in the kernel",
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
        pools.contains(&"least: in the kernel (least connections)".to_owned()),
        "{pools:?}"
    );
    for pool in [
        "sticky: in the kernel (round robin; sticky by id on the cookie sid)",
        "sessions: in the kernel (least connections; sticky by hash on the cookie session)",
        "weighted_hash: in userspace: consistent_hash with unequal weights (floating point)",
        "jvm: in the kernel (consistent_hash on the path; sticky by id on the cookie JSESSIONID)",
    ] {
        assert!(pools.contains(&pool.to_owned()), "{pools:?}");
    }
    assert!(
        pools.contains(&"by_url: in the kernel (consistent_hash on the url)".to_owned()),
        "{pools:?}"
    );
}
