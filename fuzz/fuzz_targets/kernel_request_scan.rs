//! The XDP program's request scan (`baton_common::kernel_dispatch::RequestScan`) against
//! the protocol core's request parser: whatever the scan accepts, the parser parses to a
//! head that is the whole segment, with the same method, path (already normal), query,
//! extension and Host (lower case, without port or trailing dot), and the cookie walk
//! (`CookieWalk`) finds the cookies `RequestView::cookie` finds, for names taken from
//! the input; and neither reads or panics past its buffer whatever the bytes. The scan's
//! runs of plain bytes (`RequestScan::step`) end where a scan byte by byte ends.
#![no_main]

use baton_common::kernel_dispatch::{
    CookieWalk, KernelCookieName, KernelRuleSet, MAX_KERNEL_COOKIES, MAX_COOKIE_STEPS, MAX_SCAN_STEPS, RequestScan,
    SCRATCH_LEN,
};
use baton_dispatch::RequestView;
use baton_proto::request::{ClientRequest, RequestLimits, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; SCRATCH_LEN];
    let len = data.len().min(SCRATCH_LEN);
    buf[..len].copy_from_slice(&data[..len]);
    let mut by_bytes = buf;
    let mut scan = RequestScan::new(data.len());
    for _ in 0..MAX_SCAN_STEPS {
        if !scan.step(&mut buf) {
            break;
        }
    }
    // The runs the scan steps over change nothing: the same state and buffer as byte by
    // byte.
    let mut one_by_one = RequestScan::new(data.len());
    for _ in 0..=SCRATCH_LEN {
        if !one_by_one.step_one_byte(&mut by_bytes) {
            break;
        }
    }
    assert_eq!(scan, one_by_one, "the runs skipped: {data:02x?}");
    assert!(buf[..] == by_bytes[..]);
    let limits = RequestLimits::default();
    if scan
        .finish(limits.max_head_len as u32, limits.max_headers as u32)
        .is_err()
    {
        return;
    }
    let part = |start: u32, end: u32| &buf[start as usize..end as usize];
    let Ok(Some(ClientRequest::Http(head))) = parse_request(data, &limits) else {
        panic!("the scan accepts what the parser refuses: {data:02x?}");
    };
    assert_eq!(head.head_len, data.len());
    assert_eq!(head.method.as_bytes(), part(0, scan.method_end));
    assert_eq!(head.path().as_bytes(), part(scan.path_start, scan.path_end));
    assert_eq!(head.raw_path(), head.path());
    let query = (scan.query_start != 0).then(|| part(scan.query_start, scan.query_end));
    assert_eq!(head.query().map(str::as_bytes), query);
    let ext = (scan.ext_start != 0).then(|| part(scan.ext_start, scan.path_end));
    assert_eq!(head.file_extension().map(str::as_bytes), ext);
    let host = head
        .host
        .map(|h| h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase());
    let scanned = scan.has_host().then(|| part(scan.host_start, scan.host_end));
    assert_eq!(host.as_deref().map(str::as_bytes), scanned);

    // Cookie names: the cookies' own (every `name=` the input has), and a few fixed.
    let mut set = KernelRuleSet::default();
    let text = String::from_utf8_lossy(data);
    let names: Vec<&str> = text
        .split([';', ' ', ':', '\n'])
        .filter_map(|p| p.split_once('=').map(|(n, _)| n))
        .chain(["session", "JSESSIONID"])
        .filter(|n| KernelCookieName::new(n.as_bytes(), None).is_some())
        .take(MAX_KERNEL_COOKIES)
        .collect();
    for (k, name) in names.iter().enumerate() {
        // `.` (a value's punctuation) and `x` (a letter, which the walk's runs of a
        // value's letters must stop at).
        let separator = match k {
            1 => Some(&b"."[..]),
            3 => Some(&b"x"[..]),
            _ => None,
        };
        set.cookie_names[k] = KernelCookieName::new(name.as_bytes(), separator).unwrap();
    }
    set.cookies = names.len() as u32;
    let mut scan = scan;
    let mut by_byte = scan;
    let mut walk = CookieWalk::new(&scan, &set);
    for _ in 0..MAX_COOKIE_STEPS {
        if !walk.step(&mut scan, &buf, &set) {
            break;
        }
    }
    walk.finish(&mut scan);
    // The walk's runs end where a walk byte by byte ends: the same cookies found.
    let mut walk = CookieWalk::new(&by_byte, &set);
    for _ in 0..MAX_COOKIE_STEPS {
        if !walk.step_byte_by_byte(&mut by_byte, &buf, &set) {
            break;
        }
    }
    walk.finish(&mut by_byte);
    assert_eq!(scan, by_byte, "the cookie walk's runs");
    let request = ClientRequest::Http(head);
    let view = RequestView::new(&request, None);
    for (k, name) in names.iter().enumerate() {
        let Some(found) = scan.cookie(k as u32) else {
            continue;
        };
        let want = view.cookie(name);
        let got = found.map(|(start, end, _)| part(start, end));
        assert_eq!(want.map(str::as_bytes), got, "cookie {name}");
        if let (Some(value), Some((_, end, id))) = (want, found) {
            let cut = match k {
                1 => value.rsplit_once('.').map_or(value, |(_, id)| id),
                3 => value.rsplit_once('x').map_or(value, |(_, id)| id),
                _ => value,
            };
            assert_eq!(cut.as_bytes(), part(id, end), "cookie {name}'s id");
        }
    }
});
