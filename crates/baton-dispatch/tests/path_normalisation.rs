//! Property tests: rules and hash keys see the path nginx resolves. Generated paths of
//! dot segments, empty segments and escapes (`%2e`, `%2F`, `%61`, `%25`, bad ones) go
//! through the parser and the dispatcher's view, and must agree with a separate,
//! deliberately naive model: decode everything, split on `/`, keep a stack of segments.

use std::fmt::Write as _;

use baton_dispatch::{Decision, Dispatcher, RequestView, Route};
use baton_proto::{
    frontend::Instant,
    request::{ClientRequest, RequestLimits, parse_request},
};
use proptest::prelude::*;

/// The reference: `None` when no server would resolve `raw` (a bad escape, a NUL, a
/// `..` above the root), else the path as text with bytes that are not UTF-8 as `%XX`.
fn reference(raw: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        bytes.extend_from_slice(&rest.as_bytes()[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        // from_str_radix takes a sign, so check the digits first.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        bytes.push(u8::from_str_radix(hex, 16).ok()?);
        rest = &rest[at + 3..];
    }
    bytes.extend_from_slice(rest.as_bytes());
    if bytes.contains(&0) {
        return None;
    }
    let segments: Vec<&[u8]> = bytes[1..].split(|&b| b == b'/').collect();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    for segment in &segments {
        match *segment {
            b"" | b"." => {}
            b".." => {
                stack.pop()?;
            }
            name => stack.push(name.to_vec()),
        }
    }
    let trailing_slash = matches!(*segments.last()?, b"" | b"." | b"..");
    let mut path = b"/".to_vec();
    path.extend_from_slice(&stack.join(&b'/'));
    if trailing_slash && !stack.is_empty() {
        path.push(b'/');
    }
    // Text: valid runs as they are, every other byte as %XX.
    let mut text = String::new();
    let mut rest = &path[..];
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return Some(text);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap());
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    write!(text, "%{b:02X}").unwrap();
                }
                rest = &after[bad..];
            }
        }
    }
}

/// `path` written so that decoding it once gives it back: what a client would send to
/// ask for that very path.
fn encoded(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/.-_~".contains(&b) {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

fn request(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\n\r\n").into_bytes()
}

/// Segments that exercise every branch: dot segments plain and encoded, empty ones
/// (merged slashes), encoded slashes, escapes decoded once, bad escapes, a NUL, bytes
/// that are not UTF-8, and random short runs of the characters that matter.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "a", "b", "img", "api", "logo.svg", "..a", "a..", "...", "é", "+",
        ])
        .prop_map(str::to_owned),
        6 => prop::sample::select(vec![
            "", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "%2F", "%2f", "a%2F..",
            "%61", "%61pi", "%25", "%2561", "%3F", "%23", "%20", "%C3%A9", "%C3", "%ff",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["%zz", "%4", "%", "%00", "%g0"]).prop_map(str::to_owned),
        2 => "[a./%2eEfF0-9]{0,5}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..8).prop_map(|segments| format!("/{}", segments.join("/")))
}

/// Rules on the path and the extension, and a pool hashing the path.
const RULES: &str = r#"
default_pool = "web"
[pools.web]
backends = [{ address = "198.18.1.11:80" }]
[pools.api]
backends = [{ address = "198.18.1.12:80" }]
[pools.images]
backends = [{ address = "198.18.1.13:80" }]
[pools.cache]
policy = "consistent_hash"
hash_key = "path"
backends = [
  { address = "198.18.1.14:80" }, { address = "198.18.1.15:80" },
  { address = "198.18.1.16:80" }, { address = "198.18.1.17:80" },
]
[[rules]]
pool = "api"
match = { path_prefix = "/api/" }
[[rules]]
pool = "images"
match = { extension = ["svg"] }
[[rules]]
pool = "cache"
match = { path_regex = "^/a" }
"#;

fn parsed(raw: &[u8]) -> Option<ClientRequest<'_>> {
    match parse_request(raw, &RequestLimits::default()) {
        Ok(request) => request,
        Err(error) => {
            assert_eq!(error.http_status(), Some(400), "{error}");
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The view's path is the model's, with or without a query after it; what the model
    /// cannot resolve the parser refuses, with 400.
    #[test]
    fn the_views_path_is_the_reference_models(path in path(), query in prop::option::of("[a-z=/.%]{0,6}")) {
        let want = reference(&path);
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let raw = request(&target);
        let request = parsed(&raw);
        match (&want, &request) {
            (Some(want), Some(request)) => {
                let view = RequestView::new(request, None);
                prop_assert_eq!(view.path, Some(want.as_str()));
                prop_assert_eq!(view.query, query.as_deref());
                let last = want.rsplit('/').next().unwrap();
                let extension = last.rsplit_once('.').filter(|(s, e)| !s.is_empty() && !e.is_empty());
                prop_assert_eq!(view.extension, extension.map(|(_, e)| e));
            }
            (None, None) => {}
            _ => prop_assert!(false, "{path:?}: model {want:?}, parser {:?}", request.is_some()),
        }
    }

    /// Whatever the spelling, a path reaches the same rule and, in a hashed pool, the
    /// same back-end as the plain spelling of the path it resolves to.
    #[test]
    fn every_spelling_of_a_path_is_dispatched_alike(path in path()) {
        let Some(resolved) = reference(&path) else { return Ok(()) };
        let mut dispatcher = Dispatcher::from_toml(RULES).unwrap();
        let (raw, plain) = (request(&path), request(&encoded(&resolved)));
        let (Some(request), Some(plain)) = (parsed(&raw), parsed(&plain)) else {
            return Err(TestCaseError::fail(format!("{path:?} or {resolved:?} refused")));
        };
        let (view, plain_view) = (RequestView::new(&request, None), RequestView::new(&plain, None));
        prop_assert_eq!(view.path, plain_view.path);
        let route = dispatcher.route(&view);
        prop_assert_eq!(route, dispatcher.route(&plain_view));
        let want_rule = if resolved.starts_with("/api/") {
            Some(0)
        } else if view.extension.is_some_and(|e| e == "svg") {
            Some(1)
        } else if resolved.starts_with("/a") {
            Some(2)
        } else {
            None
        };
        prop_assert_eq!(route, want_rule.map_or(Route::Default, Route::Rule));
        let chosen = |d: &mut Dispatcher, v: &RequestView<'_>| match d.decide(Instant::ZERO, v, &[]) {
            Decision::Backend(b) => b,
            Decision::Unavailable { .. } => unreachable!("every back-end is up"),
        };
        prop_assert_eq!(chosen(&mut dispatcher, &view), chosen(&mut dispatcher, &plain_view));
    }
}

#[test]
fn the_model_agrees_with_the_issue() {
    assert_eq!(
        reference("/img/../api/status.json").as_deref(),
        Some("/api/status.json")
    );
    assert_eq!(
        reference("/%61pi/status.json").as_deref(),
        Some("/api/status.json")
    );
    assert_eq!(
        reference("//api/status.json").as_deref(),
        Some("/api/status.json")
    );
    assert_eq!(reference("/../etc/passwd"), None);
    assert_eq!(reference("/a/%ff/..").as_deref(), Some("/a/"));
    assert_eq!(reference("/%C3%A9%C3").as_deref(), Some("/é%C3"));
}

#[test]
fn hash_keys_use_the_normalised_path() {
    // `/a//b` and `/a/b` are one file to nginx, so one back-end in a hashed pool.
    let mut dispatcher = Dispatcher::from_toml(RULES).unwrap();
    let mut chosen = Vec::new();
    for target in ["/a/b", "/a//b", "/a/./b", "/x/../a/b", "/%61/b", "/a%2Fb"] {
        let raw = request(target);
        let request = parsed(&raw).unwrap();
        let view = RequestView::new(&request, None);
        assert_eq!(view.path, Some("/a/b"), "{target}");
        match dispatcher.decide(Instant::ZERO, &view, &[]) {
            Decision::Backend(b) => chosen.push(b),
            Decision::Unavailable { .. } => unreachable!(),
        }
    }
    assert!(chosen.windows(2).all(|w| w[0] == w[1]), "{chosen:?}");
}
