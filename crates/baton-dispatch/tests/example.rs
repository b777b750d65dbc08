//! `examples/dispatch.toml` routes as its comments say: each rule is reached by the
//! request it was written for.

use baton_dispatch::{Dispatcher, RequestView, Route};
use baton_proto::request::{RequestLimits, parse_request};

const TLS_HELLO: &[u8] =
    include_bytes!("../../baton-proto/src/request/testdata/openssl_client_hello.bin");

fn rule_for(d: &Dispatcher, raw: &[u8]) -> String {
    let request = parse_request(raw, &RequestLimits::default())
        .unwrap()
        .unwrap();
    match d.route(&RequestView::new(&request, None)) {
        Route::Rule(i) => d.rule_names().nth(i).unwrap().to_owned(),
        Route::Default => "default".to_owned(),
    }
}

#[test]
fn every_rule_is_reached() {
    let d = Dispatcher::from_toml(include_str!("../../../examples/dispatch.toml")).unwrap();
    for (raw, rule) in [
        (TLS_HELLO, "tls-shop"),
        (
            &b"GET / HTTP/1.1\r\nHost: Static.Example.com\r\n\r\n"[..],
            "static-host",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: a.b.cdn.example.com\r\n\r\n",
            "static-host",
        ),
        (b"HEAD /x/logo.SVG HTTP/1.1\r\n\r\n", "images"),
        (b"POST /x/logo.svg HTTP/1.1\r\n\r\n", "default"),
        (b"POST /img/upload HTTP/1.1\r\n\r\n", "img-tree"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", "health-page"),
        (b"GET /users/7/edit HTTP/1.1\r\n\r\n", "user-pages"),
        (b"GET /users/me HTTP/1.1\r\n\r\n", "default"),
        (b"GET /o HTTP/1.1\r\nx-cache-key: 1\r\n\r\n", "cached"),
        (b"GET /o HTTP/1.1\r\nX-Api-Version: 2\r\n\r\n", "api-v2"),
        (b"GET /api/o?a=1&v=2 HTTP/1.1\r\n\r\n", "api-v2"),
        (
            b"GET /api/o HTTP/1.1\r\nUser-Agent: Mozilla (iPhone)\r\n\r\n",
            "mobile-api",
        ),
        (
            b"GET /o HTTP/1.1\r\nCookie: a=b; beta=1\r\n\r\n",
            "beta-testers",
        ),
        (b"POST /o HTTP/1.1\r\nCookie: beta=1\r\n\r\n", "default"),
        (b"GET /o?debug HTTP/1.1\r\n\r\n", "debug"),
        (b"GET /o HTTP/1.1\r\nCookie: debug=yes\r\n\r\n", "debug"),
        (b"GET /docs/a.html HTTP/1.1\r\n\r\n", "docs"),
        (b"GET /other HTTP/1.1\r\n\r\n", "default"),
    ] {
        assert_eq!(
            rule_for(&d, raw),
            rule,
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
    }
}
