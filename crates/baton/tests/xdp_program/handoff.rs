//! The handoff in the kernel (docs/design.md, "Dispatch in the kernel", "The handoff in
//! the kernel"), run by the kernel on crafted frames: a cookie handshake's request
//! segment that the compiled rules route is turned, in place, into the SYN' carrying it
//! (`XDP_TX`, `handed_off_in_kernel`), the flow taken into the table awaiting the
//! answer, and a record of the request as it arrived written for the daemon. Every
//! request the kernel does not take goes up exactly as it arrived, with nothing taken in
//! and nothing recorded (`pass_request_to_slow_path`); a segment that is no request of
//! a cookie of ours goes up as any segment of no flow (`pass_no_flow`).
//!
//! The expected SYN' is built on the host by `baton_common::syn_prime`, the function the
//! core's own SYN''s are built with, from terms written out here as the core's cookie
//! path (`on_cookie_ack`) takes them; the payload's sum by the core's `payload_sum`, not
//! recovered from the checksum as the program recovers it.

use baton::frontend::kernel_dispatch::KernelDispatch;
use baton_common::{
    handoff_option::{HandoffBinding, HandoffOption, find_handoff_option},
    kernel_dispatch::{KernelDecision, KernelHandoffConfig, KernelHandoffRecord},
    syn_prime::{self, SYN_PRIME_FRAME_HEADERS_LEN, SynPrime, write_syn_prime_frame_headers},
};
use baton_dispatch::Dispatcher;
use baton_proto::request::RequestLimits;

use super::*;

/// The key the handoff option's tag is made with (the back-ends share it).
const HANDOFF_KEY: SipKey = SipKey::from_bytes(*b"handoff-key-0001");
/// `[tcp] mss` 1460 less 20, as the daemon writes it.
const MAX_PAYLOAD: u32 = 1440;
/// Rule 0 sends `/api/` to a pool hashing on the client's address, which the kernel
/// leaves to the slow path (it picks from least-connections and LARD pools itself); rule
/// 1 sends `/pages/` to a round-robin pool of one back-end (`BACKEND`, on a port other
/// than the service's), which the kernel routes; the default is that pool.
const DISPATCH: &str = r#"
default_pool = "web"

[pools.web]
policy = "round_robin"
backends = [{ address = "198.18.1.11:8080" }]

[pools.api]
policy = "consistent_hash"
hash_key = "client_address"
backends = [{ address = "198.18.1.12:80" }]

[[rules]]
name = "api"
pool = "api"
match = { path_prefix = "/api/" }

[[rules]]
name = "pages"
pool = "web"
match = { path_prefix = "/pages/" }
"#;
/// The rule that routes [`PAGE`].
const PAGES_RULE: u32 = 1;
const PAGE: &[u8] =
    b"GET /pages/index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n";
const API: &[u8] = b"GET /api/users HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
/// The client's TSval on its request.
const CLIENT_TSVAL: u32 = 0x0102_0304;
/// The client's window shift (kept in the cookie's TSval); the front-end's own is the
/// cookie configuration's, 7.
const CLIENT_SHIFT: u8 = 9;
const OUR_SHIFT: u8 = 7;
/// Every option the cookies may keep, the half-open map on, engaged: as a daemon with
/// `syns_in_xdp` writes it.
const COOKIE_FLAGS: u32 = SynCookieConfig::TIMESTAMPS
    | SynCookieConfig::SACK
    | SynCookieConfig::ECN
    | SynCookieConfig::HALF_OPEN
    | SynCookieConfig::ENGAGED;
const URG: u8 = 0x20;

/// The program with the kernel's handoff on: cookie keys, the handoff key and switch,
/// and [`DISPATCH`] compiled and written by the daemon's writer, every back-end's MAC
/// `BE_MAC`.
struct Handoffs {
    p: Program,
    cookies: SynCookieConfig,
    rules: KernelDispatch,
    dispatcher: Dispatcher,
}

impl Handoffs {
    fn load() -> Self {
        let mut p = Program::load();
        let cookies = cookie_config(COOKIE_FLAGS);
        p.set_syn_cookies(cookies);
        p.set_kernel_handoff(KernelHandoffConfig::ENABLED);
        let dispatcher = Dispatcher::from_toml(DISPATCH).expect("the dispatch configuration");
        let rules = KernelDispatch::load(&mut p.ebpf, &compiled(&dispatcher), |_| Some(BE_MAC))
            .expect("write the rules");
        Self {
            p,
            cookies,
            rules,
            dispatcher,
        }
    }

    /// The cookie the program's SYN answer gave a client of `port` whose SYN said `mss`
    /// (`syn_in_map`: its options were kept in the half-open map).
    fn cookie(&self, port: u16, mss: u16, syn_in_map: bool) -> u32 {
        syncookie::make_cookie(
            &self.cookies.keys,
            clock(libc::CLOCK_MONOTONIC),
            &flow_bytes(port),
            CLIENT_ISN,
            mss,
            syn_in_map,
        )
    }

    /// The TSval of that answer, as it comes back in the client's TSecr: the options the
    /// cookie keeps in its low bits.
    fn cookie_tsval(&self, port: u16, shift: Option<u8>, sack: bool, ecn: bool) -> u32 {
        let tsv = syncookie::tsval(
            &self.cookies.keys,
            clock(libc::CLOCK_MONOTONIC),
            &flow_bytes(port),
        );
        syncookie::encode_ts_options(tsv, shift, sack, ecn)
    }

    /// A Linux client's request answering its cookie: NOP NOP timestamps, the client
    /// having offered window scaling (shift 9), SACK and ECN.
    fn linux_request(&self, port: u16, payload: &[u8]) -> Frame {
        let cookie = self.cookie(port, 1460, false);
        let tsecr = self.cookie_tsval(port, Some(CLIENT_SHIFT), true, true);
        request(port, cookie, timestamps(CLIENT_TSVAL, tsecr), payload)
    }

    /// A request without options answering a cookie that kept none (the client offered
    /// an MSS of 1300 and nothing else).
    fn bare_request(&self, port: u16, payload: &[u8]) -> Frame {
        request(port, self.cookie(port, 1300, false), vec![], payload)
    }

    /// Runs `frame`, asserting that it went up as it arrived, counted as a request left
    /// to the slow path and once under `why` (a `kernel_dispatch::reason`), with no flow
    /// taken in and no record written.
    #[track_caller]
    fn expect_to_slow_path(&mut self, frame: &Frame, why: u32) {
        self.p
            .expect_passed(&frame.bytes(), &[("pass_request_to_slow_path", 1)]);
        self.expect_reason(why);
        assert_eq!(self.p.try_flow(key(frame.src.1)), None, "no flow taken in");
        assert_eq!(self.p.handoffs(), [], "no record");
    }

    /// That the last run counted `why` once and no other reason.
    #[track_caller]
    fn expect_reason(&mut self, why: u32) {
        assert_eq!(
            self.p.reasons_counted(),
            [(reason::NAMES[why as usize], 1)],
            "the reason counted"
        );
    }

    /// [`Handoffs::expect_to_slow_path`] for a segment that is no request of ours: no
    /// reason counted either.
    #[track_caller]
    fn expect_no_request(&mut self, frame: &Frame) {
        self.p.expect_passed(&frame.bytes(), &[("pass_no_flow", 1)]);
        assert_eq!(self.p.reasons_counted(), [], "no reason counted");
        assert_eq!(self.p.try_flow(key(frame.src.1)), None, "no flow taken in");
        assert_eq!(self.p.handoffs(), [], "no record");
    }

    /// Runs `frame`, asserting that it was handed off to `BACKEND:BACKEND_PORT`: the
    /// SYN' left, and nothing else is checked here. Returns the SYN'.
    #[track_caller]
    fn expect_handed_off(&mut self, frame: &Frame) -> Vec<u8> {
        let out = self
            .p
            .expect(&frame.bytes(), XDP_TX, &[("handed_off_in_kernel", 1)]);
        assert_eq!(self.p.reasons_counted(), [], "no reason counted");
        assert_eq!(&out[IP + 16..IP + 20], BACKEND, "to the back-end");
        out
    }
}

impl Program {
    pub(super) fn set_kernel_handoff(&mut self, flags: u32) {
        let mut map: Array<_, KernelHandoffConfig> =
            Array::try_from(self.ebpf.map_mut("FRONTEND_KERNEL_HANDOFF").unwrap()).unwrap();
        let config = KernelHandoffConfig {
            handoff_key: HANDOFF_KEY,
            flags,
            max_payload: MAX_PAYLOAD,
        };
        map.set(0, config, 0).unwrap();
    }

    fn try_flow(&self, key: FrontendFlowKey) -> Option<FrontendFlow> {
        let flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
            HashMap::try_from(self.ebpf.map("FRONTEND_FLOWS").unwrap()).unwrap();
        flows.get(&key, 0).ok()
    }

    fn forget_flow(&mut self, key: FrontendFlowKey) {
        let mut flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
            HashMap::try_from(self.ebpf.map_mut("FRONTEND_FLOWS").unwrap()).unwrap();
        flows.remove(&key).unwrap();
    }

    /// The records written to `FRONTEND_HANDOFFS` since the last call: each head and the
    /// packet after it.
    fn handoffs(&mut self) -> Vec<(KernelHandoffRecord, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(item) = self.handoffs.next() {
            let head = size_of::<KernelHandoffRecord>();
            assert!(item.len() >= head, "a record's head");
            // SAFETY: the length is checked; `KernelHandoffRecord` is plain integers.
            let record = unsafe { item.as_ptr().cast::<KernelHandoffRecord>().read_unaligned() };
            assert_eq!(item.len(), head + record.packet_len as usize, "{record:?}");
            out.push((record, item[head..].to_vec()));
        }
        out
    }
}

fn compiled(dispatcher: &Dispatcher) -> baton_dispatch::KernelProgram {
    let limits = RequestLimits::default();
    dispatcher.compile_kernel(limits.max_head_len, limits.max_headers)
}

fn flow_bytes(port: u16) -> [u8; 12] {
    syncookie::flow_bytes(CLIENT, VIP, port, SERVICE_PORT)
}

/// The client's first data segment after a cookie handshake: `seq` its ISN + 1, `ack`
/// the cookie + 1.
fn request(port: u16, cookie: u32, options: Vec<u8>, payload: &[u8]) -> Frame {
    Frame {
        src: (CLIENT, port),
        ack: cookie.wrapping_add(1),
        window: 100,
        options,
        ..client(CLIENT_ISN.wrapping_add(1), ACK | PSH, payload)
    }
}

/// `prime` over `payload`, as the core would send it to `BACKEND`: the frame's headers
/// by `write_syn_prime_frame_headers`, the payload's sum summed.
fn syn_prime_frame(prime: &SynPrime, payload: &[u8]) -> Vec<u8> {
    let mut headers = [0u8; SYN_PRIME_FRAME_HEADERS_LEN];
    write_syn_prime_frame_headers(
        &mut headers,
        &BE_MAC,
        &FE_MAC,
        prime,
        payload.len() as u16,
        syn_prime::payload_sum(payload),
    );
    let mut frame = headers.to_vec();
    frame.extend_from_slice(payload);
    frame
}

fn binding(port: u16) -> HandoffBinding {
    HandoffBinding {
        client_ip: CLIENT,
        client_port: port,
        backend_ip: BACKEND,
        backend_port: BACKEND_PORT,
        client_isn: CLIENT_ISN,
    }
}

/// The flow entry a handoff to `BACKEND:BACKEND_PORT` writes: awaiting the answer, the
/// client's next number past `request`'s payload.
fn awaiting_entry(request: &Frame) -> FrontendFlow {
    FrontendFlow {
        backend_addr_be: u32::from_ne_bytes(BACKEND),
        backend_port_be: BACKEND_PORT.to_be(),
        backend_mac: BE_MAC,
        client_isn: CLIENT_ISN,
        close_state: FrontendFlow::AWAITING_ANSWER,
        isn_f: request.ack.wrapping_sub(1),
        client_next: request.seq.wrapping_add(request.payload.len() as u32),
        reserved: 0,
        last_seen_ns: 0,
    }
}

/// What the ring must hold for a handoff of `request` by rule `rule`: the head, and the
/// request's IPv4 packet as it arrived.
fn record_of(request: &Frame, rule: u32) -> (KernelHandoffRecord, Vec<u8>) {
    let packet = request.ip_packet();
    let record = KernelHandoffRecord {
        backend_addr_be: u32::from_ne_bytes(BACKEND),
        backend_port_be: BACKEND_PORT.to_be(),
        _pad: 0,
        rule,
        packet_len: packet.len() as u32,
    };
    (record, packet)
}

/// The handoff option in the SYN' `frame`, verified against `binding`.
fn handoff_option(
    frame: &[u8],
    binding: &HandoffBinding,
) -> Result<HandoffOption, baton_common::handoff_option::HandoffOptionError> {
    let options = &frame[TCP + 20..TCP + 60];
    let span = find_handoff_option(options)
        .expect("an options area that walks")
        .expect("a handoff option");
    HandoffOption::parse_and_verify(&options[span.start..], &HANDOFF_KEY, binding)
}

/// A Linux client's request (NOP NOP timestamps) routed by a rule: the SYN' is the
/// core's, byte for byte (its options as the cookie kept them, the request's window
/// scaled by the client's shift, the TSval the client's, `isn_f` the cookie), its
/// checksum holds over the whole segment and its handoff option verifies for this
/// client, back-end and ISN only; the flow awaits the answer; the ring holds the
/// request as it arrived. The client's resent request then finds the flow and is held.
#[test]
fn a_routed_request_is_handed_off_in_the_kernel() {
    privileged("handed off", || {
        let mut h = Handoffs::load();
        let request = h.linux_request(CLIENT_PORT, PAGE);
        let cookie = request.ack.wrapping_sub(1);
        // The TSecr the request carries: the cookie SYN/ACK's TSval.
        let tsecr = u32::from_be_bytes(request.options[8..12].try_into().unwrap());
        assert_eq!(
            decode_ts_options(tsecr),
            syncookie::KeptOptions {
                window_scale: Some(CLIENT_SHIFT),
                sack: true,
                ecn: true
            }
        );
        let out = h.expect_handed_off(&request);

        let option = HandoffOption::new(
            cookie,
            tsecr,
            OUR_SHIFT,
            HandoffOption::TIMESTAMPS | HandoffOption::SACK,
        );
        let prime = SynPrime {
            client_addr: CLIENT,
            backend_addr: BACKEND,
            client_port: CLIENT_PORT,
            backend_port: BACKEND_PORT,
            client_isn: CLIENT_ISN,
            // 100 << 9: the window the client announced with its request, in bytes.
            window: 51_200,
            ttl: 64,
            ecn: true,
            mss: Some(1460),
            window_shift: Some(CLIENT_SHIFT),
            sack_permitted: true,
            tsval: Some(CLIENT_TSVAL),
            handoff: option.encode(&HANDOFF_KEY, &binding(CLIENT_PORT)),
        };
        assert_eq!(out, syn_prime_frame(&prime, PAGE), "the core's SYN'");
        assert!(tcp_checksum_holds(&out), "the SYN''s checksum");
        let syn = parse(&out);
        assert_eq!(syn.tcp.payload, PAGE, "the request, unchanged");
        assert_eq!(
            (syn.tcp.seq_number, syn.tcp.dst_port),
            (CLIENT_ISN, BACKEND_PORT)
        );
        assert_eq!(handoff_option(&out, &binding(CLIENT_PORT)), Ok(option));
        // Bound to the connection: another client port or ISN does not verify.
        for other in [
            HandoffBinding {
                client_port: CLIENT_PORT + 1,
                ..binding(CLIENT_PORT)
            },
            HandoffBinding {
                client_isn: CLIENT_ISN + 1,
                ..binding(CLIENT_PORT)
            },
        ] {
            assert!(handoff_option(&out, &other).is_err(), "{other:?}");
        }

        assert_eq!(
            h.p.try_flow(key(CLIENT_PORT)),
            Some(awaiting_entry(&request))
        );
        assert_eq!(
            h.p.try_flow(key(CLIENT_PORT)).unwrap().client_next,
            CLIENT_ISN + 1 + PAGE.len() as u32
        );
        assert_eq!(h.p.handoffs(), [record_of(&request, PAGES_RULE)]);
        assert_eq!(
            h.p.notices(),
            [],
            "the handoff is told through its own ring"
        );

        // The client resends its request (the back-end's answer has not reached it):
        // the flow awaits the answer, the core holds the resend.
        h.p.expect_passed(&request.bytes(), &[("pass_awaiting_answer", 1)]);
        assert_eq!(h.p.handoffs(), []);
    });
}

/// A client without options, whose cookie kept nothing (not in the half-open map): the
/// SYN' carries the cookie's MSS and nothing else of the client's, the window as sent,
/// a handoff option without timestamps or SACK; the request routed by the default pool
/// (no rule) goes the same way.
#[test]
fn a_request_without_options_is_handed_off_with_the_cookies_terms() {
    privileged("handed off, no options", || {
        let mut h = Handoffs::load();
        let request = h.bare_request(CLIENT_PORT, PAGE);
        let cookie = request.ack.wrapping_sub(1);
        let out = h.expect_handed_off(&request);
        let option = HandoffOption::new(cookie, 0, 0, 0);
        let prime = SynPrime {
            client_addr: CLIENT,
            backend_addr: BACKEND,
            client_port: CLIENT_PORT,
            backend_port: BACKEND_PORT,
            client_isn: CLIENT_ISN,
            window: 100,
            ttl: 64,
            ecn: false,
            mss: Some(1300),
            window_shift: None,
            sack_permitted: false,
            tsval: None,
            handoff: option.encode(&HANDOFF_KEY, &binding(CLIENT_PORT)),
        };
        assert_eq!(out, syn_prime_frame(&prime, PAGE), "the core's SYN'");
        assert!(tcp_checksum_holds(&out));
        assert_eq!(parse(&out).tcp.payload, PAGE);
        assert_eq!(handoff_option(&out, &binding(CLIENT_PORT)), Ok(option));
        assert_eq!(
            h.p.try_flow(key(CLIENT_PORT)),
            Some(awaiting_entry(&request))
        );
        assert_eq!(h.p.handoffs(), [record_of(&request, PAGES_RULE)]);

        // No rule matches: the default pool, recorded as rule `u32::MAX`.
        let other = CLIENT_PORT + 1;
        let index = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
        let request = h.bare_request(other, index);
        h.expect_handed_off(&request);
        assert_eq!(h.p.try_flow(key(other)), Some(awaiting_entry(&request)));
        assert_eq!(h.p.handoffs(), [record_of(&request, u32::MAX)]);
    });
}

/// Every request the kernel does not take goes up as it arrived, counted, with nothing
/// taken in or recorded: each case beside a request that differs only in it and is
/// handed off, so that each shows its own check.
#[test]
fn requests_the_kernel_leaves_to_the_slow_path_go_up_as_they_arrived() {
    privileged("to the slow path", || {
        let mut h = Handoffs::load();
        let mut port = CLIENT_PORT;
        let mut next_port = || {
            port += 1;
            port
        };

        // A rule the kernel leaves to userspace: a pool hashing on the client's address.
        h.expect_to_slow_path(&h.linux_request(next_port(), API), reason::POOL_POLICY);
        h.expect_handed_off(&h.linux_request(next_port(), PAGE));

        // Over `max_payload`, by one byte; at it, handed off.
        let at_most = padded_page(MAX_PAYLOAD as usize);
        h.expect_handed_off(&h.linux_request(next_port(), &at_most));
        h.p.handoffs();
        let over = padded_page(MAX_PAYLOAD as usize + 1);
        h.expect_to_slow_path(&h.linux_request(next_port(), &over), reason::OVER_MSS);

        // A cookie marked for the half-open map: the core takes the entry.
        let port = next_port();
        let marked = request(port, h.cookie(port, 1460, true), vec![], PAGE);
        h.expect_to_slow_path(&marked, reason::HALF_OPEN_OPTIONS);

        // Options in another layout: a SACK block where the timestamps would be, and the
        // timestamps before their NOPs (both 12 bytes, as Linux's own layout).
        let port = next_port();
        let mut sack = h.linux_request(port, PAGE);
        sack.options = vec![1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        h.expect_to_slow_path(&sack, reason::TCP_OPTIONS);
        let mut moved = h.linux_request(next_port(), PAGE);
        moved.options.rotate_left(2);
        assert_eq!(&moved.options[..2], [8, 10]);
        h.expect_to_slow_path(&moved, reason::TCP_OPTIONS);
        // Timestamps alone, with a MSS option before them.
        let mut more = h.linux_request(next_port(), PAGE);
        more.options.splice(0..0, [2, 4, 5, 0xb4]);
        h.expect_to_slow_path(&more, reason::TCP_OPTIONS);

        // A zero window (a window of 1 is handed off).
        let mut closed = h.bare_request(next_port(), PAGE);
        closed.window = 0;
        h.expect_to_slow_path(&closed, reason::ZERO_WINDOW);
        let mut one = h.bare_request(next_port(), PAGE);
        one.window = 1;
        h.expect_handed_off(&one);
        h.p.handoffs();

        // Urgent data.
        let mut urgent = h.linux_request(next_port(), PAGE);
        urgent.flags |= URG;
        h.expect_to_slow_path(&urgent, reason::URGENT);

        // The partial sum a checksum-offloading sender leaves: the payload's sum cannot
        // be recovered from it.
        let partial = with_partial_checksum(h.linux_request(next_port(), PAGE).bytes());
        h.p.expect_passed(&partial, &[("pass_request_to_slow_path", 1)]);
        h.expect_reason(reason::PARTIAL_CHECKSUM);
        assert_eq!(h.p.handoffs(), []);

        // A back-end whose MAC is unresolved is written unusable.
        let compiled = compiled(&h.dispatcher);
        h.rules.update(&mut h.p.ebpf, &compiled, |_| None).unwrap();
        h.expect_to_slow_path(
            &h.linux_request(next_port(), PAGE),
            reason::BACKEND_UNUSABLE,
        );
        h.rules
            .update(&mut h.p.ebpf, &compiled, |_| Some(BE_MAC))
            .unwrap();
        h.expect_handed_off(&h.linux_request(next_port(), PAGE));
        h.p.handoffs();
        // Kernel dispatch off in the rules (the daemon's `disable`).
        h.rules.disable(&mut h.p.ebpf).unwrap();
        h.expect_to_slow_path(&h.linux_request(next_port(), PAGE), reason::OFF);
    });
}

/// Why a request went up is counted once, under its reason alone
/// (`FRONTEND_SLOW_PATH_REASONS`, which the daemon exports as
/// `baton_frontend_kernel_dispatch_slow_path_total`): requests that differ from a routed
/// one in one thing each, the matcher's reasons (a percent-encoded path, a lower-case
/// method, a head without its empty line, a rule's pool whose policy stays in
/// userspace) and the handoff's own (options in another layout), each twice, so that
/// each count is seen to move by one per request and no other with it.
#[test]
fn each_request_to_the_slow_path_counts_its_reason_once() {
    privileged("slow-path reasons", || {
        let mut h = Handoffs::load();
        let mut port = CLIENT_PORT;
        let mut next_port = || {
            port += 1;
            port
        };
        let encoded = b"GET /%70ages/index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
        let lower = b"get /pages/index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
        let incomplete = b"GET /pages/index.html HTTP/1.1\r\nHost: www.example.com\r\n";
        for round in 0..2 {
            for (payload, why) in [
                (&encoded[..], reason::PATH_BYTES),
                (&lower[..], reason::METHOD),
                (&incomplete[..], reason::INCOMPLETE),
                (API, reason::POOL_POLICY),
            ] {
                h.expect_to_slow_path(&h.linux_request(next_port(), payload), why);
            }
            let mut sack = h.linux_request(next_port(), PAGE);
            sack.options = vec![1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2];
            h.expect_to_slow_path(&sack, reason::TCP_OPTIONS);
            // The same request whole and plain is handed off, counting no reason.
            h.expect_handed_off(&h.linux_request(next_port(), PAGE));
            assert_eq!(h.p.handoffs().len(), 1, "round {round}");
        }
        // The totals, as the daemon sums them: two of each, nothing else.
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(h.p.ebpf.map("FRONTEND_SLOW_PATH_REASONS").unwrap()).unwrap();
        let totals: Vec<(&str, u64)> = reason::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, counts.get(&(i as u32), 0).unwrap().iter().sum()))
            .filter(|&(_, n)| n > 0)
            .collect();
        assert_eq!(
            totals,
            [
                ("method", 2),
                ("path_bytes", 2),
                ("incomplete", 2),
                ("pool_policy", 2),
                ("tcp_options", 2)
            ]
        );
    });
}

/// `PAGE` with a header padded so that the request is `len` bytes.
fn padded_page(len: usize) -> Vec<u8> {
    let head = b"GET /pages/index.html HTTP/1.1\r\nHost: www.example.com\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let mut out = head.to_vec();
    out.resize(len - end.len(), b'p');
    out.extend_from_slice(end);
    out
}

/// The steps after the SYN' is written fail with the frame grown and must give it back
/// as it arrived: the flow table full (the insert fails, as `BPF_NOEXIST` does for a
/// copy of the request handed off on another CPU a moment before), and the handoff ring
/// full (the flow inserted is taken out again). Each goes through once there is room.
#[test]
fn a_full_table_or_ring_undoes_the_handoff() {
    privileged("table or ring full", || {
        let mut h = Handoffs::load();
        // The table's 1,024 entries, none this client's.
        let others: Vec<u16> = (1..=1024).collect();
        for &port in &others {
            h.p.set_flow(key(port), entry(BACKEND_PORT, 0));
        }
        let request = h.linux_request(CLIENT_PORT, PAGE);
        h.expect_to_slow_path(&request, reason::FLOW_TABLE);
        h.p.forget_flow(key(others[0]));
        h.expect_handed_off(&request);
        assert_eq!(h.p.handoffs(), [record_of(&request, PAGES_RULE)]);
        for &port in &others[1..] {
            h.p.forget_flow(key(port));
        }

        // Two records of a 1,400-byte request fill the page the ring has here.
        let long = padded_page(1_400);
        let first = h.linux_request(CLIENT_PORT + 1, &long);
        let second = h.linux_request(CLIENT_PORT + 2, &long);
        h.expect_handed_off(&first);
        h.expect_handed_off(&second);
        let third = h.linux_request(CLIENT_PORT + 3, &long);
        h.p.expect_passed(&third.bytes(), &[("pass_request_to_slow_path", 1)]);
        h.expect_reason(reason::HANDOFF_RING_FULL);
        assert_eq!(
            h.p.try_flow(key(CLIENT_PORT + 3)),
            None,
            "the flow taken out again"
        );
        assert_eq!(
            h.p.handoffs(),
            [
                record_of(&first, PAGES_RULE),
                record_of(&second, PAGES_RULE)
            ]
        );
        h.expect_handed_off(&third);
        assert_eq!(h.p.handoffs(), [record_of(&third, PAGES_RULE)]);
    });
}

/// A segment that is no request answering a cookie of ours goes up as any segment of
/// no flow: a wrong cookie, another client ISN, and any request while the kernel's
/// handoff is off (flags 0, as a daemon without `kernel_dispatch` writes it).
#[test]
fn segments_that_are_no_request_of_ours_go_up_as_before() {
    privileged("no request", || {
        let mut h = Handoffs::load();
        let good = h.linux_request(CLIENT_PORT, PAGE);
        // The MSS index moved past the eight valid ones.
        let wrong_cookie = Frame {
            ack: good.ack.wrapping_add(5),
            ..good.clone()
        };
        h.expect_no_request(&wrong_cookie);
        let other_isn = Frame {
            seq: good.seq.wrapping_add(1),
            ..good.clone()
        };
        h.expect_no_request(&other_isn);
        h.p.set_kernel_handoff(0);
        h.expect_no_request(&good);
        h.p.set_kernel_handoff(KernelHandoffConfig::ENABLED);
        h.expect_handed_off(&good);
    });
}

/// Not a test of speed (nothing timed is asserted): the program's time for one run of
/// each path, from the kernel's test-run duration of single runs (a repeated run would
/// run on the frame the previous run rewrote), the flow a handoff leaves removed between
/// runs. A handoff's record wakes the ring's reader when the reader had caught up (an
/// empty ring: a self-interrupt for the wakeup, within the run) and not while records
/// wait, as under load: both are shown. Then the lab's rules, each request's whole run
/// beside its dispatch alone. For docs/design.md's figures and the issue's.
#[test]
fn time_per_run() {
    privileged("time", || {
        let mut h = Handoffs::load();
        // The test run's own cost, with the program's least: a frame to no service.
        let mut elsewhere = client(CLIENT_NEXT, ACK, b"");
        elsewhere.dst = ([198, 18, 2, 2], SERVICE_PORT);
        let what = "a segment to no service (the least a run costs)";
        time_runs(&mut h, what, &elsewhere.bytes(), XDP_PASS, None);
        let linux = h.linux_request(CLIENT_PORT, PAGE).bytes();
        let size = PAGE.len();
        for (what, ring) in [
            ("records waiting", Ring::Waiting),
            ("ring read", Ring::Read),
        ] {
            let what = format!("handed off, NOP NOP TS, {size}-byte request, {what}");
            time_runs(&mut h, &what, &linux, XDP_TX, Some(ring));
        }
        let bare = h.bare_request(CLIENT_PORT, PAGE).bytes();
        let what = format!("handed off, no options, {size}-byte request, records waiting");
        time_runs(&mut h, &what, &bare, XDP_TX, Some(Ring::Waiting));
        let api = h.linux_request(CLIENT_PORT, API).bytes();
        let what = "a request to the slow path (a rule whose pool hashes on the client's address)";
        time_runs(&mut h, what, &api, XDP_PASS, None);
        let syn = syn(SYN, linux_syn_options(1460)).bytes();
        time_runs(&mut h, "a SYN answered with a cookie", &syn, XDP_TX, None);
        h.p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let data = client(CLIENT_NEXT, ACK | PSH, PAGE).bytes();
        let what = "a handed-off flow's segment forwarded";
        time_runs(&mut h, what, &data, XDP_TX, None);
        h.p.forget_flow(key(CLIENT_PORT));
        // The lab's rules (examples/frontend-lab.toml): each request's whole run, handed
        // off, beside its decision alone (`frontend_dispatch_probe` on the same frame,
        // in the same object, so on the same maps), timed the same way.
        let lab = Dispatcher::from_toml(&super::lab::lab_dispatch()).unwrap();
        h.rules
            .update(&mut h.p.ebpf, &compiled(&lab), |_| Some(BE_MAC))
            .unwrap();
        let prog: &mut Xdp =
            h.p.ebpf
                .program_mut("frontend_dispatch_probe")
                .unwrap()
                .try_into()
                .unwrap();
        prog.load()
            .expect("the verifier's verdict on frontend_dispatch_probe");
        for payload in LAB_REQUESTS {
            let frame = h.linux_request(CLIENT_PORT, payload).bytes();
            let size = payload.len();
            h.p.reasons_counted();
            let (verdict, _, _) = h.p.run_timed(&frame);
            assert_eq!(verdict, XDP_TX, "{size} bytes: {:?}", h.p.reasons_counted());
            h.p.forget_flow(key(CLIENT_PORT));
            h.p.handoffs();
            let what = format!("the lab's rules, {size}-byte request handed off");
            // The ring read after each run: the test's ring holds fewer than a batch of
            // the browser request's records.
            let whole = time_runs(&mut h, &what, &frame, XDP_TX, Some(Ring::Read));
            let alone = time_probe(&h, &frame);
            eprintln!(
                "  its dispatch alone (the probe): median {alone} ns; the rest of the run \
                 about {} ns",
                whole.saturating_sub(alone)
            );
        }
    });
}

/// Requests of the lab's kinds: routed by a rule on the path, by Host, to the default
/// pool by round robin, by a sticky cookie; a browser's.
const LAB_REQUESTS: [&[u8]; 4] = [
    b"GET /img/logo.png HTTP/1.1\r\nHost: img.baton.test\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: www.example.com\r\nCookie: lang=en; JSESSIONID=9F2C1A.be2\r\n\r\n",
    b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n",
];

/// The median of [`RUNS`] single runs of the dispatch probe on `frame`, which must hand
/// off.
fn time_probe(h: &Handoffs, frame: &[u8]) -> u64 {
    let prog: &Xdp =
        h.p.ebpf
            .program("frontend_dispatch_probe")
            .unwrap()
            .try_into()
            .unwrap();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        times.push(result.duration.as_nanos() as u64);
    }
    let decisions: Array<_, KernelDecision> =
        Array::try_from(h.p.ebpf.map("FRONTEND_DISPATCH_PROBE").unwrap()).unwrap();
    let d = decisions.get(&0, 0).unwrap();
    assert_eq!(d.verdict, KernelDecision::HAND_OFF, "the probe hands off");
    times.sort_unstable();
    times[RUNS / 2]
}

/// How a timed handoff finds the ring of records.
#[derive(Clone, Copy, PartialEq)]
enum Ring {
    /// Read after every run: each record wakes the reader.
    Read,
    /// Read every [`BATCH`] runs, and only the runs that find records waiting timed.
    Waiting,
}

/// Records read at once while timing: fewer than the test ring holds.
const BATCH: usize = 16;

/// Single runs timed at once.
const RUNS: usize = 2_000;

/// Runs `frame` [`RUNS`] times, one run per test run, each expected to end in
/// `verdict`, and prints the times; `handoff`: each run hands the request off (its flow
/// removed before the next) and finds the ring so. Returns the median.
fn time_runs(
    h: &mut Handoffs,
    what: &str,
    frame: &[u8],
    verdict: u32,
    handoff: Option<Ring>,
) -> u64 {
    let mut times = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let (got, _, time) = h.p.run_timed(frame);
        assert_eq!(got, verdict, "{what}");
        let Some(ring) = handoff else {
            times.push(time.as_nanos() as u64);
            continue;
        };
        h.p.forget_flow(key(CLIENT_PORT));
        if ring == Ring::Read || run % BATCH != 0 {
            times.push(time.as_nanos() as u64);
        }
        if ring == Ring::Read || run % BATCH == BATCH - 1 {
            let read = h.p.handoffs().len();
            assert_eq!(read, if ring == Ring::Read { 1 } else { BATCH });
        }
    }
    h.p.handoffs();
    h.p.counted();
    times.sort_unstable();
    let n = times.len();
    let mean = times.iter().sum::<u64>() / n as u64;
    eprintln!(
        "{what}: median {} ns, mean {mean} ns, 10th to 90th percentile {} to {} ns \
         ({n} single runs)",
        times[n / 2],
        times[n / 10],
        times[n * 9 / 10],
    );
    times[n / 2]
}
