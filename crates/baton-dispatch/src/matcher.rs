//! Compiled match conditions: what a rule tests, ready to run without allocating.
//!
//! Everything is lowered at load: host names to lower case, wildcards to suffixes, regular
//! expressions compiled, so a test is a few comparisons on the borrowed
//! [`RequestView`].

use regex::{Regex, bytes::Regex as BytesRegex};

use crate::view::RequestView;

/// Byte equality for the short strings rules compare (paths, cookie values, methods),
/// inline: for 8 to 16 bytes two overlapping word compares, under 8 a byte loop, instead
/// of a call into libc's `memcmp`, which a profile of the 100-rule benchmark showed
/// taking a third of the time.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    match n {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

#[inline]
fn str_eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

#[inline]
fn starts_with(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && bytes_eq(&s.as_bytes()[..prefix.len()], prefix.as_bytes())
}

/// Most distinct header names, and cookie names, whose lookups one decision shares; the
/// names past it are looked up afresh by each condition that tests them.
pub(crate) const MAX_SHARED_NAMES: usize = 16;

/// The header and cookie names the rules test, each given a slot at load, so that one
/// decision reads the request's headers and cookies once however many rules test them
/// (100 rules testing a cookie would otherwise split the Cookie field 100 times).
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedNames {
    /// Lower case.
    headers: Vec<Box<str>>,
    cookies: Vec<Box<str>>,
}

impl SharedNames {
    /// The slot for header `name` (lower case), if there is room.
    pub(crate) fn header_slot(&mut self, name: &str) -> Option<u8> {
        slot(&mut self.headers, name)
    }

    /// The slot for cookie `name`, if there is room.
    pub(crate) fn cookie_slot(&mut self, name: &str) -> Option<u8> {
        slot(&mut self.cookies, name)
    }
}

fn slot(names: &mut Vec<Box<str>>, name: &str) -> Option<u8> {
    let i = match names.iter().position(|n| &**n == name) {
        Some(i) => i,
        None if names.len() < MAX_SHARED_NAMES => {
            names.push(name.into());
            names.len() - 1
        }
        None => return None,
    };
    u8::try_from(i).ok()
}

/// A shared header lookup's result.
#[derive(Debug, Clone, Copy)]
enum HeaderFact<'a> {
    Absent,
    One(&'a [u8]),
    /// Several fields of that name: the condition scans them all.
    Repeated,
}

/// The header and cookie values of one request for the shared names, gathered on first
/// use, on the stack: one pass over the headers, one over the cookies, per decision.
pub(crate) struct Facts<'n, 'a> {
    names: &'n SharedNames,
    headers: Option<[HeaderFact<'a>; MAX_SHARED_NAMES]>,
    cookies: Option<[Option<&'a str>; MAX_SHARED_NAMES]>,
}

impl<'n, 'a> Facts<'n, 'a> {
    pub(crate) fn new(names: &'n SharedNames) -> Self {
        Self {
            names,
            headers: None,
            cookies: None,
        }
    }

    #[inline]
    fn header(&mut self, view: &RequestView<'a>, slot: u8) -> HeaderFact<'a> {
        let facts = match &self.headers {
            Some(facts) => facts,
            None => self.headers.insert(gather_headers(self.names, view)),
        };
        facts[usize::from(slot)]
    }

    #[inline]
    fn cookie(&mut self, view: &RequestView<'a>, slot: u8) -> Option<&'a str> {
        let facts = match &self.cookies {
            Some(facts) => facts,
            None => self.cookies.insert(gather_cookies(self.names, view)),
        };
        facts[usize::from(slot)]
    }
}

// Out of line: inlined into `Condition::matches`, the gathering's arrays made its stack
// frame a kilobyte, paid by every condition of every rule.
#[inline(never)]
fn gather_headers<'a>(
    names: &SharedNames,
    view: &RequestView<'a>,
) -> [HeaderFact<'a>; MAX_SHARED_NAMES] {
    let mut facts = [HeaderFact::Absent; MAX_SHARED_NAMES];
    for h in view.headers {
        for (k, name) in names.headers.iter().enumerate() {
            if h.name.eq_ignore_ascii_case(name) {
                facts[k] = match facts[k] {
                    HeaderFact::Absent => HeaderFact::One(h.value),
                    _ => HeaderFact::Repeated,
                };
            }
        }
    }
    facts
}

#[inline(never)]
fn gather_cookies<'a>(
    names: &SharedNames,
    view: &RequestView<'a>,
) -> [Option<&'a str>; MAX_SHARED_NAMES] {
    let mut facts = [None; MAX_SHARED_NAMES];
    for (n, v) in view.cookies() {
        for (k, name) in names.cookies.iter().enumerate() {
            // The first cookie of a name counts, as in `RequestView::cookie`.
            if facts[k].is_none() && n == &**name {
                facts[k] = Some(v);
            }
        }
    }
    facts
}

/// A host name pattern, matched ASCII case-insensitively (RFC 4343).
#[derive(Debug, Clone)]
pub(crate) enum HostPattern {
    /// `example.com`: that name only.
    Exact(Box<str>),
    /// `*.example.com`, kept as `.example.com`: any name with one or more labels in
    /// front of it (as nginx's `server_name *.example.com`), not `example.com` itself.
    Subdomain(Box<str>),
}

impl HostPattern {
    /// Parses `pattern`; `None` if it is not a host name or a `*.` wildcard.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        let lower = pattern
            .strip_suffix('.')
            .unwrap_or(pattern)
            .to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return None;
        }
        Some(if wildcard {
            Self::Subdomain(format!(".{name}").into())
        } else {
            Self::Exact(name.into())
        })
    }

    #[inline]
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Subdomain(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// What a header value must be.
#[derive(Debug, Clone)]
pub(crate) enum ValueTest {
    /// The field is present, whatever its value.
    Present,
    /// Exactly these bytes (values are compared as sent, case-sensitively).
    Equals(Box<[u8]>),
    /// The regular expression finds a match in the value.
    Regex(BytesRegex),
}

impl ValueTest {
    #[inline]
    fn test(&self, value: &[u8]) -> bool {
        match self {
            Self::Present => true,
            Self::Equals(expected) => bytes_eq(value, expected),
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// A path regex with the literal text any match must start with, when it is anchored:
/// most path regexes are (`^/api/v2/...`), and a `starts_with` turns most paths away for
/// a few nanoseconds where a regex search, even a failing one, costs tens.
#[derive(Debug, Clone)]
pub(crate) struct PathRegex {
    prefix: Box<str>,
    regex: Regex,
}

impl PathRegex {
    pub(crate) fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            regex: Regex::new(pattern)?,
            prefix: required_prefix(pattern).into(),
        })
    }

    #[inline]
    fn is_match(&self, path: &str) -> bool {
        starts_with(path, &self.prefix) && self.regex.is_match(path)
    }
}

/// The literal text every match of `pattern` starts with, or `""` when that is not
/// plain to see. Only a pattern that starts with `^` (so no flags group in front; `^` is
/// the start of the text unless `(?m)` came first) and has no `|` anywhere (an
/// alternation would make the anchor apply to one branch) has one: the characters after
/// `^` up to the first that is not a literal, less the last if a quantifier that allows
/// zero repetitions (`*`, `?`, `{`) follows it.
fn required_prefix(pattern: &str) -> &str {
    let Some(rest) = pattern.strip_prefix('^') else {
        return "";
    };
    if pattern.contains('|') {
        return "";
    }
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
    ];
    let end = rest.find(META).unwrap_or(rest.len());
    let prefix = &rest[..end];
    match rest[end..].chars().next() {
        Some('*' | '?' | '{') => prefix
            .char_indices()
            .last()
            .map_or("", |(i, _)| &prefix[..i]),
        _ => prefix,
    }
}

/// One compiled condition; a rule's condition is a tree of these.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// The request's host (HTTP Host or TLS SNI) matches one of the patterns.
    Host(Box<[HostPattern]>),
    /// A TLS ClientHello whose SNI matches one of the patterns.
    Sni(Box<[HostPattern]>),
    /// The path is one of these exactly.
    PathExact(Box<[Box<str>]>),
    /// The path starts with one of these.
    PathPrefix(Box<[Box<str>]>),
    /// The regular expression finds a match in the path (anchor it with `^`/`$`).
    PathRegex(PathRegex),
    /// The connection's virtual service is one of these: a VIP (`None`: any) and port.
    Service(Box<[(Option<std::net::IpAddr>, u16)]>),
    /// The file extension is one of these, ASCII case-insensitively (stored lower case).
    Extension(Box<[Box<str>]>),
    /// The method is one of these (methods are case-sensitive, RFC 9110 §9.1).
    Method(Box<[Box<str>]>),
    /// Some field with this name (stored lower case) passes the test. `slot`: its
    /// shared lookup, if it has one.
    Header {
        name: Box<str>,
        slot: Option<u8>,
        test: ValueTest,
    },
    /// The cookie is present, and equal to the value if one is given.
    Cookie {
        name: Box<str>,
        slot: Option<u8>,
        equals: Option<Box<str>>,
    },
    /// The query parameter is present, and equal to the value if one is given.
    Query {
        name: Box<str>,
        equals: Option<Box<str>>,
    },
    /// Every condition holds (true when empty).
    All(Box<[Condition]>),
    /// Some condition holds (false when empty).
    Any(Box<[Condition]>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// Does `view` satisfy this condition? Never allocates.
    pub(crate) fn matches<'a>(&self, view: &RequestView<'a>, facts: &mut Facts<'_, 'a>) -> bool {
        match self {
            Self::Host(patterns) => view
                .host
                .is_some_and(|h| patterns.iter().any(|p| p.matches(h))),
            Self::Sni(patterns) => view
                .sni
                .is_some_and(|h| patterns.iter().any(|p| p.matches(h))),
            Self::PathExact(paths) => view
                .path
                .is_some_and(|path| paths.iter().any(|p| str_eq(path, p))),
            Self::PathPrefix(prefixes) => view
                .path
                .is_some_and(|path| prefixes.iter().any(|p| starts_with(path, p))),
            Self::PathRegex(re) => view.path.is_some_and(|path| re.is_match(path)),
            Self::Service(services) => view.service.is_some_and(|s| {
                services
                    .iter()
                    .any(|&(vip, port)| s.port() == port && vip.is_none_or(|v| v == s.ip()))
            }),
            Self::Extension(exts) => view
                .extension
                .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x))),
            Self::Method(methods) => view
                .method
                .is_some_and(|m| methods.iter().any(|x| str_eq(m, x))),
            Self::Header { name, slot, test } => match slot.map(|s| facts.header(view, s)) {
                Some(HeaderFact::Absent) => false,
                Some(HeaderFact::One(v)) => test.test(v),
                Some(HeaderFact::Repeated) | None => view.header_values(name).any(|v| test.test(v)),
            },
            Self::Cookie { name, slot, equals } => {
                let value = match slot {
                    Some(s) => facts.cookie(view, *s),
                    None => view.cookie(name),
                };
                value.is_some_and(|v| equals.as_deref().is_none_or(|e| str_eq(v, e)))
            }
            Self::Query { name, equals } => view
                .query_param(name)
                .is_some_and(|v| equals.as_deref().is_none_or(|e| str_eq(v, e))),
            Self::All(all) => all.iter().all(|c| c.matches(view, facts)),
            Self::Any(any) => any.iter().any(|c| c.matches(view, facts)),
            Self::Not(inner) => !inner.matches(view, facts),
        }
    }
}

#[cfg(test)]
mod tests {
    use baton_proto::request::{ClientRequest, RequestLimits, parse_request};

    use super::*;

    fn request(raw: &[u8]) -> ClientRequest<'_> {
        parse_request(raw, &RequestLimits::default())
            .unwrap()
            .unwrap()
    }

    /// Checks `condition` both with and without shared lookups.
    fn check(condition: &Condition, raw: &[u8]) -> bool {
        let r = request(raw);
        let view = RequestView::new(&r, None);
        let none = SharedNames::default();
        let plain = condition.matches(&view, &mut Facts::new(&none));
        let (shared, names) = with_slots(condition);
        let fast = shared.matches(&view, &mut Facts::new(&names));
        assert_eq!(plain, fast, "shared lookups change the answer");
        plain
    }

    /// `condition` with slots for its header and cookie names.
    fn with_slots(condition: &Condition) -> (Condition, SharedNames) {
        fn walk(c: &Condition, names: &mut SharedNames) -> Condition {
            match c {
                Condition::Header { name, test, .. } => Condition::Header {
                    name: name.clone(),
                    slot: names.header_slot(name),
                    test: test.clone(),
                },
                Condition::Cookie { name, equals, .. } => Condition::Cookie {
                    name: name.clone(),
                    slot: names.cookie_slot(name),
                    equals: equals.clone(),
                },
                Condition::All(v) => Condition::All(v.iter().map(|c| walk(c, names)).collect()),
                Condition::Any(v) => Condition::Any(v.iter().map(|c| walk(c, names)).collect()),
                Condition::Not(c) => Condition::Not(Box::new(walk(c, names))),
                other => other.clone(),
            }
        }
        let mut names = SharedNames::default();
        (walk(condition, &mut names), names)
    }

    fn hosts(patterns: &[&str]) -> Box<[HostPattern]> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect()
    }

    fn strs(v: &[&str]) -> Box<[Box<str>]> {
        v.iter().map(|s| Box::from(*s)).collect()
    }

    const TLS_HELLO: &[u8] =
        include_bytes!("../../baton-proto/src/request/testdata/openssl_client_hello.bin");

    #[test]
    fn short_equality() {
        let all = b"abcdefghijklmnopqrstuvwxyz";
        for n in 0..all.len() {
            let a = &all[..n];
            assert!(bytes_eq(a, a));
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!bytes_eq(a, &b), "{n} {i}");
            }
            assert!(!bytes_eq(a, &all[..n + 1]));
        }
    }

    #[test]
    fn host_exact_is_case_insensitive() {
        let c = Condition::Host(hosts(&["Shop.Example.com"]));
        assert!(check(
            &c,
            b"GET / HTTP/1.1\r\nHost: shop.EXAMPLE.com\r\n\r\n"
        ));
        assert!(check(
            &c,
            b"GET / HTTP/1.1\r\nHost: shop.example.com.:8080\r\n\r\n"
        ));
        assert!(!check(&c, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
        assert!(!check(&c, b"GET / HTTP/1.1\r\n\r\n"));
        // The host matcher also reads a TLS client's SNI.
        assert!(check(&c, TLS_HELLO));
    }

    #[test]
    fn host_wildcard_needs_a_label_in_front() {
        let c = Condition::Host(hosts(&["*.Example.com"]));
        assert!(check(&c, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"));
        assert!(check(
            &c,
            b"GET / HTTP/1.1\r\nHost: a.b.EXAMPLE.COM\r\n\r\n"
        ));
        assert!(!check(&c, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
        assert!(!check(
            &c,
            b"GET / HTTP/1.1\r\nHost: badexample.com\r\n\r\n"
        ));
        assert!(HostPattern::parse("*").is_none());
        assert!(HostPattern::parse("a..b").is_none());
        assert!(HostPattern::parse("a.*.b").is_none());
    }

    #[test]
    fn a_rule_on_the_service_reads_the_connections_vip_and_port() {
        use baton_proto::frontend::FlowKey;
        let c = Condition::Service(Box::new([
            (Some("198.18.2.1".parse().unwrap()), 443),
            (None, 8443),
        ]));
        let r = request(TLS_HELLO);
        let on = |service: &str| {
            let flow = FlowKey {
                client: "198.18.0.2:40000".parse().unwrap(),
                service: service.parse().unwrap(),
            };
            let view = RequestView::new(&r, Some(&flow));
            c.matches(&view, &mut Facts::new(&SharedNames::default()))
        };
        assert!(on("198.18.2.1:443"));
        assert!(!on("198.18.2.1:80"), "another port");
        assert!(!on("198.18.2.2:443"), "another VIP");
        assert!(on("198.18.2.2:8443"), "`*:8443`: any VIP");
        assert!(!check(&c, TLS_HELLO), "no connection, no service");
    }

    #[test]
    fn sni_only_for_tls() {
        let c = Condition::Sni(hosts(&["*.example.com"]));
        assert!(check(&c, TLS_HELLO));
        assert!(!check(
            &c,
            b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
        ));
    }

    #[test]
    fn paths() {
        let exact = Condition::PathExact(strs(&["/a", "/b"]));
        assert!(check(&exact, b"GET /b?x=1 HTTP/1.1\r\n\r\n"));
        assert!(!check(&exact, b"GET /a/ HTTP/1.1\r\n\r\n"));
        let prefix = Condition::PathPrefix(strs(&["/img/"]));
        assert!(check(&prefix, b"GET /img/logo.svg HTTP/1.1\r\n\r\n"));
        assert!(!check(&prefix, b"GET /im HTTP/1.1\r\n\r\n"));
        assert!(!check(&prefix, TLS_HELLO));
        let regex = Condition::PathRegex(PathRegex::new(r"^/user/[0-9]+$").unwrap());
        assert!(check(&regex, b"GET /user/42?tab=1 HTTP/1.1\r\n\r\n"));
        assert!(!check(&regex, b"GET /user/42/x HTTP/1.1\r\n\r\n"));
        assert!(!check(&regex, b"GET /users/42 HTTP/1.1\r\n\r\n"));
        let unanchored = Condition::PathRegex(PathRegex::new(r"\.php$").unwrap());
        assert!(check(&unanchored, b"GET /a/b.php HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn regex_prefixes_are_only_what_every_match_starts_with() {
        for (pattern, prefix) in [
            (r"^/user/[0-9]+$", "/user/"),
            (r"^/api/v2/", "/api/v2/"),
            (r"^/ab*c", "/a"),
            (r"^/ab?c", "/a"),
            (r"^/ab{0,2}", "/a"),
            (r"^/ab+c", "/ab"),
            (r"^/a\.b", "/a"),
            (r"^/é?", "/"),
            (r"^/a|^/b", ""),
            (r"(?i)^/api", ""),
            (r"/api", ""),
            (r"^(/a)", ""),
        ] {
            assert_eq!(required_prefix(pattern), prefix, "{pattern}");
            // Whatever the prefix, the regex still decides.
            let re = PathRegex::new(pattern).unwrap();
            for path in [
                "/user/1",
                "/api/v2/x",
                "/ac",
                "/abbc",
                "/a.b",
                "/",
                "/b",
                "/API",
            ] {
                assert_eq!(
                    re.is_match(path),
                    re.regex.is_match(path),
                    "{pattern} on {path}"
                );
            }
        }
    }

    #[test]
    fn extension_and_method() {
        let ext = Condition::Extension(strs(&["png", "jpg"]));
        assert!(check(&ext, b"GET /a/b.PNG HTTP/1.1\r\n\r\n"));
        assert!(!check(&ext, b"GET /a.png/b HTTP/1.1\r\n\r\n"));
        assert!(!check(&ext, b"GET /a/png HTTP/1.1\r\n\r\n"));
        let method = Condition::Method(strs(&["POST", "PUT"]));
        assert!(check(&method, b"PUT / HTTP/1.1\r\n\r\n"));
        assert!(!check(&method, b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!check(&method, TLS_HELLO));
    }

    #[test]
    fn headers() {
        let raw = b"GET / HTTP/1.1\r\nX-Api: v1\r\nx-api: v2\r\n\r\n";
        let present = Condition::Header {
            name: "x-api".into(),
            slot: None,
            test: ValueTest::Present,
        };
        assert!(check(&present, raw));
        assert!(!check(&present, b"GET / HTTP/1.1\r\n\r\n"));
        let equals = Condition::Header {
            name: "x-api".into(),
            slot: None,
            test: ValueTest::Equals(b"v2"[..].into()),
        };
        // Any field of that name may pass.
        assert!(check(&equals, raw));
        assert!(!check(&equals, b"GET / HTTP/1.1\r\nX-Api: V2\r\n\r\n"));
        let regex = Condition::Header {
            name: "user-agent".into(),
            slot: None,
            test: ValueTest::Regex(BytesRegex::new("(?i)mobile").unwrap()),
        };
        assert!(check(
            &regex,
            b"GET / HTTP/1.1\r\nUser-Agent: x Mobile y\r\n\r\n"
        ));
        assert!(!check(
            &regex,
            b"GET / HTTP/1.1\r\nUser-Agent: desktop\r\n\r\n"
        ));
    }

    #[test]
    fn cookies_and_query() {
        let raw = b"GET /?v=2&debug HTTP/1.1\r\nCookie: beta=1; sid=x\r\n\r\n";
        let present = Condition::Cookie {
            name: "sid".into(),
            slot: None,
            equals: None,
        };
        let equals = Condition::Cookie {
            name: "beta".into(),
            slot: None,
            equals: Some("1".into()),
        };
        let other = Condition::Cookie {
            name: "beta".into(),
            slot: None,
            equals: Some("0".into()),
        };
        assert!(check(&present, raw));
        assert!(check(&equals, raw));
        assert!(!check(&other, raw));
        assert!(!check(&present, b"GET / HTTP/1.1\r\n\r\n"));
        let q = |name: &str, equals: Option<&str>| Condition::Query {
            name: name.into(),
            equals: equals.map(Into::into),
        };
        assert!(check(&q("v", Some("2")), raw));
        assert!(check(&q("debug", None), raw));
        assert!(!check(&q("v", Some("3")), raw));
        assert!(!check(&q("w", None), raw));
    }

    #[test]
    fn combinations() {
        let img = Condition::PathPrefix(strs(&["/img/"]));
        let post = Condition::Method(strs(&["POST"]));
        let all = Condition::All([img.clone(), Condition::Not(Box::new(post.clone()))].into());
        let any = Condition::Any([img, post].into());
        assert!(check(&all, b"GET /img/a HTTP/1.1\r\n\r\n"));
        assert!(!check(&all, b"POST /img/a HTTP/1.1\r\n\r\n"));
        assert!(check(&any, b"POST /x HTTP/1.1\r\n\r\n"));
        assert!(!check(&any, b"GET /x HTTP/1.1\r\n\r\n"));
        assert!(check(&Condition::All([].into()), b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!check(
            &Condition::Any([].into()),
            b"GET / HTTP/1.1\r\n\r\n"
        ));
    }
}
