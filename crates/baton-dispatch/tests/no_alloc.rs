//! The crate's contract: no allocation per decision. A counting global allocator watches
//! decisions under every policy, stickiness, shared header and cookie lookups, regexes,
//! retries with `exclude`, health events, and paths the parser normalised.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use baton_dispatch::Dispatcher;
use baton_proto::{
    frontend::{Backend, Dispatch, FlowKey, Instant},
    request::{RequestLimits, parse_request},
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decisions_do_not_allocate() {
    let mut d = Dispatcher::from_toml(include_str!("../../../examples/dispatch.toml")).unwrap();
    let requests: Vec<Vec<u8>> = [
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nCookie: JSESSIONID=A1.be2\r\n\r\n",
        "GET /img/a.png HTTP/1.1\r\nHost: x.cdn.example.com\r\n\r\n",
        "GET /static/app.css HTTP/1.1\r\n\r\n",
        "GET /users/42/edit HTTP/1.1\r\n\r\n",
        "GET /obj HTTP/1.1\r\nX-Cache-Key: k1\r\n\r\n",
        "GET /api/x?v=2 HTTP/1.1\r\nCookie: session=abc\r\n\r\n",
        "GET /api/y HTTP/1.1\r\nUser-Agent: Android 14\r\nX-Api-Version: 2\r\nx-api-version: 3\r\n\r\n",
        "GET /b HTTP/1.1\r\nCookie: beta=1; debug=1\r\n\r\n",
        "GET /docs/intro.html HTTP/1.1\r\n\r\n",
        "PUT /healthz?debug HTTP/1.1\r\n\r\n",
        // Paths the parser had to normalise: the view borrows the parser's copy.
        "GET /img/..//%61pi/./x%2Fy.png?v=1 HTTP/1.1\r\n\r\n",
        "GET //docs/%2e%2e/users/42/edit HTTP/1.1\r\nCookie: session=abc\r\n\r\n",
    ]
    .iter()
    .map(|r| r.as_bytes().to_vec())
    .collect();
    let parsed: Vec<_> = requests
        .iter()
        .map(|r| {
            parse_request(r, &RequestLimits::default())
                .unwrap()
                .unwrap()
        })
        .collect();
    let flow = FlowKey {
        client: "198.18.0.2:40000".parse().unwrap(),
        service: "198.18.2.1:80".parse().unwrap(),
    };
    let be: Backend = "198.18.1.12:80".parse().unwrap();
    let exclude = [be];

    // The regex crate builds each regex's search cache on its first use in a thread;
    // that is once per regex, not per decision.
    for request in &parsed {
        d.dispatch(Instant::ZERO, &flow, request, &[]);
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut chosen = 0;
    for round in 0..200u64 {
        let now = Instant::from_nanos(round * 1_000_000);
        for request in &parsed {
            chosen += usize::from(d.dispatch(now, &flow, request, &[]).is_some());
            chosen += usize::from(d.dispatch(now, &flow, request, &exclude).is_some());
        }
        d.on_handed_off(be);
        d.on_handoff_failed(be, Instant::from_nanos(round * 1_000_000));
        d.on_closed(be);
        d.set_health(be, round % 3 != 0);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 4,800 decisions"
    );
    assert!(chosen > 3_000);
}
