//! The front-end's XDP program (`frontend_forward`) run by the kernel on crafted frames
//! (`BPF_PROG_TEST_RUN`), for every verdict it can return and every counter it keeps:
//! its maps (services, configuration, flows, SYN-cookie configuration) are filled from
//! the test, its output is checked against the host's functions in `baton_common` (the
//! checksums, the sequence-number judgement, the SYN cookies) and parsed with checksum
//! verification by `baton_proto::wire`, and its notices are read back from its ring.
//!
//! Needs root (loading programs); without it each test prints why it skipped. A test run
//! of an XDP program transmits nothing (`XDP_TX` is only the verdict returned), so no
//! network namespace is needed.
//!
//! The handoff in the kernel (a request turned into its SYN' here) has tests of its own,
//! in `xdp_program/handoff.rs`, on the same loaded program, and so has forwarding by the
//! back-end's stamp in the TSecr, in `xdp_program/stamp.rs`.
//!
//! Not covered here: the verdicts the program returns only when the packet shrinks under
//! it between two bounds checks it made itself (`PASS_MALFORMED` from the rewrite's own
//! checks, after `forward` checked the same lengths), which no input can reach; and a
//! frame `bpf_xdp_adjust_tail` cannot resize for the cookie SYN/ACK (a test run always
//! gives the frame a page, so it always can).

use std::sync::Mutex;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
};
use baton_common::{
    frontend::{
        FlowNotice, FrontendConfig, FrontendFlow, FrontendFlowKey, FrontendService,
        judge_client_segment, stat,
    },
    kernel_dispatch::reason,
    siphash::SipKey,
    syncookie::{
        self, Cookie, CookieKeys, HalfOpenSyn, SYN_ACK_FRAME_LEN, SynAddresses, SynCookieConfig,
        SynOptions, decode_ts_options,
    },
    translate::{ones_complement_add, ones_complement_sum, tcp_ipv4_pseudo_header_sum},
};
use baton_proto::wire::{Checksums, TcpFrameRepr};
use support::Frame;

mod support;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
static SERIAL: Mutex<()> = Mutex::new(());

const CLIENT: [u8; 4] = [198, 18, 0, 2];
const VIP: [u8; 4] = baton::lab::VIP.octets();
const BACKEND: [u8; 4] = [198, 18, 1, 11];
const FE_MAC: [u8; 6] = [0x02, 0xba, 0x70, 0x12, 0x01, 0x02];
const BE_MAC: [u8; 6] = [0x02, 0xba, 0x70, 0x12, 0x01, 0x0b];
const ROUTER_MAC: [u8; 6] = [0x02, 0xba, 0x70, 0x12, 0x01, 0x01];
const CLIENT_PORT: u16 = 40_000;
const SERVICE_PORT: u16 = 80;
/// The back-end's port differs from the service's, so the rewrite changes the port too.
const BACKEND_PORT: u16 = 8080;
const CLIENT_ISN: u32 = 1_000;
/// Near the top of the sequence space, so the flow's numbers cross 2^32.
const CLIENT_NEXT: u32 = 0xffff_fff0;
const ISN_F: u32 = 0x7000_0000;
/// The ring's size in the tests: one page, 127 notices of 32 bytes (20 of notice and
/// the ring's 8-byte header, rounded up to 8; the kernel keeps a ring from filling to
/// its last byte, so not 128).
const RING_BYTES: u32 = 4096;
const RING_NOTICES: usize = 127;
/// The handoff ring's size in the tests: one page, two records of a 1,400-byte request
/// (so that a test can fill it).
const HANDOFF_RING_BYTES: u32 = 4096;

/// The frame's IPv4 header starts here, its TCP header there.
const IP: usize = 14;
const TCP: usize = 34;

/// The loaded program and its maps.
struct Program {
    ebpf: Ebpf,
    notices: RingBuf<MapData>,
    /// `FRONTEND_HANDOFFS`: the handoffs made in the kernel, for the daemon.
    handoffs: RingBuf<MapData>,
    /// The counters as [`Program::counted`] last read them.
    seen: [u64; stat::COUNT as usize],
    /// The slow path's reasons as [`Program::reasons_counted`] last read them.
    seen_reasons: [u64; reason::COUNT as usize],
}

impl Program {
    /// Loads the program with one service (VIP:80), enabled, cookies not engaged.
    fn load() -> Self {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FRONTEND_FLOWS", 1024)
            .map_max_entries("FRONTEND_FLOWS_V6", 1024)
            .map_max_entries("FRONTEND_NOTICES_V6", RING_BYTES)
            .map_max_entries("FRONTEND_NOTICES", RING_BYTES)
            .map_max_entries("FRONTEND_HANDOFFS", HANDOFF_RING_BYTES)
            .load(baton::ebpf::FRONTEND)
            .expect("load object");
        let prog: &mut Xdp = ebpf
            .program_mut("frontend_forward")
            .unwrap()
            .try_into()
            .unwrap();
        prog.load()
            .unwrap_or_else(|e| panic!("verifier refused frontend_forward: {e:?}"));
        ipv6::load_ipv6_program(&mut ebpf);
        let notices = RingBuf::try_from(ebpf.take_map("FRONTEND_NOTICES").unwrap()).unwrap();
        let handoffs = RingBuf::try_from(ebpf.take_map("FRONTEND_HANDOFFS").unwrap()).unwrap();
        let mut program = Self {
            ebpf,
            notices,
            handoffs,
            seen: [0; stat::COUNT as usize],
            seen_reasons: [0; reason::COUNT as usize],
        };
        program.configure(FrontendConfig::ENABLED);
        let mut services: HashMap<_, FrontendService, u32> =
            HashMap::try_from(program.ebpf.map_mut("FRONTEND_SERVICES").unwrap()).unwrap();
        for port in [SERVICE_PORT, 0] {
            services.insert(service(VIP, port), 1, 0).unwrap();
        }
        ipv6::add_services(&mut program);
        program
    }

    fn configure(&mut self, flags: u32) {
        let mut config: Array<_, FrontendConfig> =
            Array::try_from(self.ebpf.map_mut("FRONTEND_CONFIG").unwrap()).unwrap();
        let value = FrontendConfig {
            interface_mac: FE_MAC,
            _pad: [0; 2],
            flags,
        };
        config.set(0, value, 0).unwrap();
    }

    fn set_syn_cookies(&mut self, config: SynCookieConfig) {
        let mut map: Array<_, SynCookieConfig> =
            Array::try_from(self.ebpf.map_mut("FRONTEND_SYN_COOKIES").unwrap()).unwrap();
        map.set(0, config, 0).unwrap();
    }

    fn set_flow(&mut self, key: FrontendFlowKey, value: FrontendFlow) {
        let mut flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
            HashMap::try_from(self.ebpf.map_mut("FRONTEND_FLOWS").unwrap()).unwrap();
        flows.insert(key, value, 0).unwrap();
    }

    /// The half-open map's entry for `key`, if any.
    fn half_open(&self, key: FrontendFlowKey) -> Option<HalfOpenSyn> {
        let map: HashMap<_, FrontendFlowKey, HalfOpenSyn> =
            HashMap::try_from(self.ebpf.map("FRONTEND_HALF_OPEN").unwrap()).unwrap();
        map.get(&key, 0).ok()
    }

    fn forget_half_open(&mut self, key: FrontendFlowKey) {
        let mut map: HashMap<_, FrontendFlowKey, HalfOpenSyn> =
            HashMap::try_from(self.ebpf.map_mut("FRONTEND_HALF_OPEN").unwrap()).unwrap();
        let _ = map.remove(&key);
    }

    fn has_flow(&self, key: FrontendFlowKey) -> bool {
        let flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
            HashMap::try_from(self.ebpf.map("FRONTEND_FLOWS").unwrap()).unwrap();
        flows.get(&key, 0).is_ok()
    }

    fn flow(&self, key: FrontendFlowKey) -> FrontendFlow {
        let flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
            HashMap::try_from(self.ebpf.map("FRONTEND_FLOWS").unwrap()).unwrap();
        flows.get(&key, 0).expect("the flow is in the table")
    }

    /// Runs the program on `frame`; returns its verdict and the frame as it left.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let (verdict, out, _) = self.run_timed(frame);
        (verdict, out)
    }

    /// [`Program::run`], with the run's time as the kernel measured it (one run, so the
    /// test-run duration is that run's alone).
    fn run_timed(&self, frame: &[u8]) -> (u32, Vec<u8>, std::time::Duration) {
        let prog: &Xdp = self
            .ebpf
            .program("frontend_forward")
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len().max(SYN_ACK_FRAME_LEN) + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out, result.duration)
    }

    /// The counters that moved since the last call, by name.
    fn counted(&mut self) -> Vec<(&'static str, u64)> {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("FRONTEND_STATS").unwrap()).unwrap();
        let mut moved = Vec::new();
        for (i, name) in stat::NAMES.iter().enumerate() {
            let now: u64 = stats.get(&(i as u32), 0).unwrap().iter().sum();
            if now != self.seen[i] {
                moved.push((*name, now - self.seen[i]));
                self.seen[i] = now;
            }
        }
        moved
    }

    /// The reasons (`FRONTEND_SLOW_PATH_REASONS`) that moved since the last call, by
    /// name; index 0 (no reason) too, should the program ever count it.
    fn reasons_counted(&mut self) -> Vec<(&'static str, u64)> {
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("FRONTEND_SLOW_PATH_REASONS").unwrap()).unwrap();
        let mut moved = Vec::new();
        for (i, name) in reason::NAMES.iter().enumerate() {
            let now: u64 = counts.get(&(i as u32), 0).unwrap().iter().sum();
            if now != self.seen_reasons[i] {
                moved.push((*name, now - self.seen_reasons[i]));
                self.seen_reasons[i] = now;
            }
        }
        moved
    }

    /// Runs `frame`, asserting the verdict and exactly the counters it moved (`counted`,
    /// by name and amount); returns the frame as it left.
    #[track_caller]
    fn expect(&mut self, frame: &[u8], verdict: u32, counted: &[(&str, u64)]) -> Vec<u8> {
        let (got, out) = self.run(frame);
        assert_eq!(got, verdict, "verdict");
        assert_eq!(self.counted(), counted, "counters moved");
        out
    }

    /// Runs `frame`, asserting it was passed up untouched with exactly `counted` moved.
    #[track_caller]
    fn expect_passed(&mut self, frame: &[u8], counted: &[(&str, u64)]) {
        let out = self.expect(frame, XDP_PASS, counted);
        assert_eq!(out, frame, "a frame passed up must be the one that arrived");
    }

    /// The notices written since the last call.
    fn notices(&mut self) -> Vec<FlowNotice> {
        let mut out = Vec::new();
        while let Some(item) = self.notices.next() {
            assert_eq!(item.len(), size_of::<FlowNotice>());
            // SAFETY: the length is checked; `FlowNotice` is plain integers.
            out.push(unsafe { item.as_ptr().cast::<FlowNotice>().read_unaligned() });
        }
        out
    }
}

fn service(addr: [u8; 4], port: u16) -> FrontendService {
    FrontendService {
        vip_addr_be: u32::from_ne_bytes(addr),
        vip_port_be: u16::from_ne_bytes(port.to_be_bytes()),
        _pad: 0,
    }
}

fn key(client_port: u16) -> FrontendFlowKey {
    FrontendFlowKey {
        client_addr_be: u32::from_ne_bytes(CLIENT),
        vip_addr_be: u32::from_ne_bytes(VIP),
        client_port_be: u16::from_ne_bytes(client_port.to_be_bytes()),
        vip_port_be: u16::from_ne_bytes(SERVICE_PORT.to_be_bytes()),
    }
}

/// A handed-off flow's entry as the daemon writes it, to `BACKEND:backend_port`.
fn entry(backend_port: u16, close_state: u32) -> FrontendFlow {
    FrontendFlow {
        backend_addr_be: u32::from_ne_bytes(BACKEND),
        backend_port_be: u16::from_ne_bytes(backend_port.to_be_bytes()),
        backend_mac: BE_MAC,
        client_isn: CLIENT_ISN,
        close_state,
        isn_f: ISN_F,
        client_next: CLIENT_NEXT,
        reserved: 0,
        last_seen_ns: 0,
    }
}

/// The notice the program writes for the flow of [`entry`]: the connection's client ISN
/// in it, for the daemon to apply it to that connection only.
fn notice(what: u32) -> FlowNotice {
    FlowNotice {
        key: key(CLIENT_PORT),
        what,
        client_isn: CLIENT_ISN,
    }
}

/// A client segment to the service, as it reaches the front-end from the router.
fn client(seq: u32, flags: u8, payload: &[u8]) -> Frame {
    Frame {
        src_mac: ROUTER_MAC,
        dst_mac: FE_MAC,
        src: (CLIENT, CLIENT_PORT),
        dst: (VIP, SERVICE_PORT),
        seq,
        ack: ISN_F.wrapping_add(5_001),
        flags,
        window: 502,
        options: timestamps(77, 5_555),
        payload: payload.to_vec(),
    }
}

/// A back-end's copy of a segment it sends the client, as it reaches the front-end.
fn backend_copy(flags: u8, payload: &[u8]) -> Frame {
    Frame {
        src_mac: BE_MAC,
        dst_mac: FE_MAC,
        src: (VIP, SERVICE_PORT),
        dst: (CLIENT, CLIENT_PORT),
        seq: ISN_F.wrapping_add(9_001),
        ack: CLIENT_NEXT,
        flags,
        window: 1_000,
        options: timestamps(99, 77),
        payload: payload.to_vec(),
    }
}

/// Timestamps behind two NOPs, as Linux aligns them: 12 bytes.
fn timestamps(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// `frame` with its TCP checksum field replaced by the pseudo-header sum a
/// `CHECKSUM_PARTIAL` sender leaves for its device to complete.
fn with_partial_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let tcp_len = frame.len() - TCP;
    let src: [u8; 4] = frame[IP + 12..IP + 16].try_into().unwrap();
    let dst: [u8; 4] = frame[IP + 16..IP + 20].try_into().unwrap();
    let pseudo = tcp_ipv4_pseudo_header_sum(src, dst, tcp_len as u16);
    frame[TCP + 16..TCP + 18].copy_from_slice(&pseudo.to_be_bytes());
    frame
}

/// `frame` with its IPv4 header's fragment field set and its checksum made right again.
fn with_fragment_field(mut frame: Vec<u8>, field: u16) -> Vec<u8> {
    frame[IP + 6..IP + 8].copy_from_slice(&field.to_be_bytes());
    fix_ip_checksum(&mut frame, 20);
    frame
}

fn fix_ip_checksum(frame: &mut [u8], header_len: usize) {
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let check = !ones_complement_sum(&frame[IP..IP + header_len]);
    frame[IP + 10..IP + 12].copy_from_slice(&check.to_be_bytes());
}

/// Whether the TCP checksum of `frame` verifies (the whole segment summed).
fn tcp_checksum_holds(frame: &[u8]) -> bool {
    let src: [u8; 4] = frame[IP + 12..IP + 16].try_into().unwrap();
    let dst: [u8; 4] = frame[IP + 16..IP + 20].try_into().unwrap();
    let segment = &frame[TCP..];
    let pseudo = tcp_ipv4_pseudo_header_sum(src, dst, segment.len() as u16);
    ones_complement_add(pseudo, ones_complement_sum(segment)) == 0xffff
}

fn parse(frame: &[u8]) -> TcpFrameRepr<'_> {
    TcpFrameRepr::parse(frame, Checksums::Verify).expect("valid frame with valid checksums")
}

/// `frame` as the program must have rewritten it for the back-end: MACs, destination
/// address and port, and both checksums made whole by the host's sums.
fn rewritten(frame: &[u8], backend_port: u16) -> Vec<u8> {
    let mut want = frame.to_vec();
    want[..6].copy_from_slice(&BE_MAC);
    want[6..12].copy_from_slice(&FE_MAC);
    want[IP + 16..IP + 20].copy_from_slice(&BACKEND);
    fix_ip_checksum(&mut want, 20);
    want[TCP + 2..TCP + 4].copy_from_slice(&backend_port.to_be_bytes());
    want[TCP + 16..TCP + 18].copy_from_slice(&[0, 0]);
    let pseudo = tcp_ipv4_pseudo_header_sum(CLIENT, BACKEND, (want.len() - TCP) as u16);
    let check = !ones_complement_add(pseudo, ones_complement_sum(&want[TCP..]));
    want[TCP + 16..TCP + 18].copy_from_slice(&check.to_be_bytes());
    want
}

/// `CLOCK_MONOTONIC_COARSE` (`bpf_ktime_get_coarse_ns`) or `CLOCK_MONOTONIC`
/// (`bpf_ktime_get_ns`), in nanoseconds.
fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write.
    assert_eq!(unsafe { libc::clock_gettime(id, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` as root, serially, or prints why it skipped.
fn privileged(test: &str, f: impl FnOnce()) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root to load eBPF programs");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    f();
}

#[test]
fn packets_not_to_a_service_pass_uncounted() {
    privileged("not ours", || {
        let mut p = Program::load();
        // Not IPv4: an ARP request.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&ROUTER_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[0; 20]);
        p.expect_passed(&arp, &[]);
        // Not TCP: UDP to the VIP.
        let mut udp = client(CLIENT_NEXT, ACK, b"").bytes();
        udp[IP + 9] = 17;
        fix_ip_checksum(&mut udp, 20);
        p.expect_passed(&udp, &[]);
        // TCP to another address, and to the VIP on a port that is no service.
        let mut elsewhere = client(CLIENT_NEXT, ACK, b"x");
        elsewhere.dst = ([198, 18, 2, 2], SERVICE_PORT);
        p.expect_passed(&elsewhere.bytes(), &[]);
        let mut other_port = client(CLIENT_NEXT, SYN, b"");
        other_port.dst.1 = 443;
        p.expect_passed(&other_port.bytes(), &[]);
        // A fragment to another address.
        p.expect_passed(&with_fragment_field(elsewhere.bytes(), 0x2000), &[]);
        // From a VIP's other port: no service's copy.
        let mut copy = backend_copy(FIN | ACK, b"");
        copy.src.1 = 443;
        p.expect_passed(&copy.bytes(), &[]);

        // Disabled: even a handed-off flow's segment passes, uncounted.
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let data = client(CLIENT_NEXT, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n").bytes();
        p.configure(0);
        p.expect_passed(&data, &[]);
        p.configure(FrontendConfig::ENABLED);
        p.expect(&data, XDP_TX, &[("forwarded", 1)]);

        // To another host's MAC (another front-end's, flooded by the switch once its
        // port went down): passes uncounted, for the stack to drop, even a handed-off
        // flow's segment or a SYN; to a group MAC it is this front-end's.
        let next = p.flow(key(CLIENT_PORT)).client_next;
        let mut flooded = client(next, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n");
        flooded.dst_mac = [0x02, 0xba, 0x70, 0x12, 0x01, 0x03];
        p.expect_passed(&flooded.bytes(), &[]);
        let mut syn = client(CLIENT_ISN, SYN, b"");
        syn.dst_mac = flooded.dst_mac;
        p.expect_passed(&syn.bytes(), &[]);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).client_next,
            next,
            "nothing acted on"
        );
        flooded.dst_mac = [0xff; 6];
        p.expect(&flooded.bytes(), XDP_TX, &[("forwarded", 1)]);
    });
}

#[test]
fn fragments_ip_options_and_truncated_headers_to_a_vip() {
    privileged("unusual IP", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let data = client(CLIENT_NEXT, ACK, b"0123456789").bytes();
        // More fragments, and a later fragment: dropped, whatever the port.
        for field in [0x2000, 0x0004, 0x2004] {
            p.expect(
                &with_fragment_field(data.clone(), field),
                XDP_DROP,
                &[("drop_fragment", 1)],
            );
        }
        let mut other_port = client(CLIENT_NEXT, ACK, b"x");
        other_port.dst.1 = 443;
        p.expect(
            &with_fragment_field(other_port.bytes(), 0x2000),
            XDP_DROP,
            &[("drop_fragment", 1)],
        );
        // IPv4 options (a 4-byte NOP NOP NOP EOL): up, untouched.
        let mut options = data[..TCP].to_vec();
        options[IP] = 0x46;
        let total = (data.len() - IP + 4) as u16;
        options[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        options.extend_from_slice(&[1, 1, 1, 0]);
        fix_ip_checksum(&mut options, 24);
        options.extend_from_slice(&data[TCP..]);
        p.expect_passed(&options, &[("pass_unusual_ip", 1)]);
        // The frame ends inside the TCP header.
        p.expect_passed(&data[..TCP + 19], &[("pass_malformed", 1)]);
        // A known flow's segment whose data offset is below 5 words, or whose IPv4
        // total length runs past the frame: up, `client_next` untouched.
        let mut short_offset = data.clone();
        short_offset[TCP + 12] = 0x40;
        p.expect_passed(&short_offset, &[("pass_malformed", 1)]);
        let mut long_total = data.clone();
        let total = (data.len() - IP + 1) as u16;
        long_total[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut long_total, 20);
        p.expect_passed(&long_total, &[("pass_malformed", 1)]);
        // A total length shorter than the TCP header it claims.
        let mut short_total = data.clone();
        let total = (20 + 20) as u16;
        short_total[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut short_total, 20);
        p.expect_passed(&short_total, &[("pass_malformed", 1)]);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, CLIENT_NEXT);
        assert_eq!(p.flow(key(CLIENT_PORT)).last_seen_ns, 0);
        // Ethernet padding after the IPv4 packet is allowed.
        let mut padded = client(CLIENT_NEXT, ACK, b"").bytes();
        padded.extend_from_slice(&[0; 6]);
        let out = p.expect(&padded, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(
            &out[..out.len() - 6],
            rewritten(&padded[..padded.len() - 6], BACKEND_PORT)
        );
    });
}

#[test]
fn segments_of_no_handed_off_flow_go_up() {
    privileged("no flow", || {
        let mut p = Program::load();
        p.expect_passed(&client(5, ACK, b"").bytes(), &[("pass_no_flow", 1)]);
        p.expect_passed(
            &client(5, ACK | PSH, b"GET /").bytes(),
            &[("pass_no_flow", 1)],
        );
        p.expect_passed(&client(5, FIN | ACK, b"").bytes(), &[("pass_control", 1)]);
        p.expect_passed(&client(5, RST, b"").bytes(), &[("pass_control", 1)]);
        // SYNs, with cookies not engaged: the slow path's.
        let syn = client(CLIENT_ISN, SYN, b"").bytes();
        p.expect_passed(&syn, &[("pass_control", 1)]);
        p.expect_passed(
            &client(CLIENT_ISN, SYN | ACK, b"").bytes(),
            &[("pass_control", 1)],
        );
        // A SYN on a handed-off flow's port (a reuse) too, and it changes nothing.
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        p.expect_passed(&syn, &[("pass_control", 1)]);
        p.expect_passed(
            &client(CLIENT_NEXT, SYN | FIN, b"").bytes(),
            &[("pass_control", 1)],
        );
        assert_eq!(p.flow(key(CLIENT_PORT)), entry(BACKEND_PORT, 0));
        assert_eq!(p.notices(), []);
    });
}

#[test]
fn a_handed_off_flows_segments_are_rewritten_to_its_backend() {
    privileged("forwarding", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let before = clock(libc::CLOCK_MONOTONIC_COARSE);
        // Data in order, complete checksum (updated incrementally), crossing 2^32.
        let request = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        let data = client(CLIENT_NEXT, ACK | PSH, request).bytes();
        let out = p.expect(&data, XDP_TX, &[("forwarded", 1)]);
        let after = clock(libc::CLOCK_MONOTONIC_COARSE);
        assert_eq!(out, rewritten(&data, BACKEND_PORT));
        let parsed = parse(&out);
        assert_eq!(parsed.ipv4.dst_addr, std::net::Ipv4Addr::from(BACKEND));
        assert_eq!(parsed.tcp.dst_port, BACKEND_PORT);
        assert_eq!(parsed.tcp.payload, request);
        let flow = p.flow(key(CLIENT_PORT));
        let advanced = CLIENT_NEXT.wrapping_add(request.len() as u32);
        assert_eq!(advanced, 15, "the test crosses 2^32");
        assert_eq!(flow.client_next, advanced);
        assert!(
            (before..=after).contains(&flow.last_seen_ns),
            "{before} <= {} <= {after}",
            flow.last_seen_ns
        );
        assert_eq!(
            FrontendFlow {
                client_next: CLIENT_NEXT,
                last_seen_ns: 0,
                ..flow
            },
            entry(BACKEND_PORT, 0),
            "only client_next and last_seen_ns are the program's to write"
        );

        // A header-only ACK (summed whole), then the same with the partial sum a
        // checksum-offloading sender leaves: both leave complete and right.
        let ack = client(advanced, ACK, b"").bytes();
        let out = p.expect(&ack, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten(&ack, BACKEND_PORT));
        let out = p.expect(
            &with_partial_checksum(ack.clone()),
            XDP_TX,
            &[("forwarded", 1)],
        );
        assert_eq!(out, rewritten(&ack, BACKEND_PORT));
        // Old data (a retransmission) and data beyond a gap are forwarded but move
        // nothing; data overlapping the expected number moves it to its end.
        for seq in [advanced.wrapping_sub(100), advanced.wrapping_add(1)] {
            let seg = client(seq, ACK, &[b'x'; 50]).bytes();
            let out = p.expect(&seg, XDP_TX, &[("forwarded", 1)]);
            assert_eq!(out, rewritten(&seg, BACKEND_PORT));
            assert_eq!(p.flow(key(CLIENT_PORT)).client_next, advanced);
        }
        let overlap = client(advanced.wrapping_sub(10), ACK, &[b'y'; 30]).bytes();
        p.expect(&overlap, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).client_next,
            judge_client_segment(advanced, advanced.wrapping_sub(10), 30, false, false).client_next
        );
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, advanced + 20);

        // A back-end on the service's own port: the port and its checksum words stay.
        let other = 40_001;
        p.set_flow(key(other), entry(SERVICE_PORT, 0));
        let mut seg = client(CLIENT_NEXT, ACK, b"abc");
        seg.src.1 = other;
        let seg = seg.bytes();
        let out = p.expect(&seg, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(out, rewritten(&seg, SERVICE_PORT));
        assert_eq!(&out[TCP..TCP + 4], &seg[TCP..TCP + 4]);
        assert_eq!(p.notices(), [], "plain segments are told to nobody");
    });
}

#[test]
fn checksums_the_program_cannot_complete_go_up_and_wrong_ones_stay_wrong() {
    privileged("checksums", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        // Payload with the partial sum: up, for the slow path to complete and forward,
        // so counted towards client_next.
        let data = client(CLIENT_NEXT, ACK | PSH, b"0123456789").bytes();
        p.expect_passed(
            &with_partial_checksum(data),
            &[("pass_partial_checksum", 1)],
        );
        let next = CLIENT_NEXT.wrapping_add(10);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(p.flow(key(CLIENT_PORT)).last_seen_ns, 0);

        // A header-only segment with a wrong checksum: up for the slow path to drop, and
        // client_next stays (a FIN, so that it would move were it counted).
        let mut bad = client(next, FIN | ACK, b"").bytes();
        bad[TCP + 16] ^= 0x01;
        p.expect_passed(&bad, &[("pass_bad_checksum", 1)]);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(p.notices(), [], "a segment passed up is told to nobody");

        // Payload corrupted after its (complete) checksum was made: forwarded, and the
        // checksum stays exactly as wrong, so the back-end still drops it.
        let good = client(next, ACK, b"abcdefghij").bytes();
        let mut corrupt = good.clone();
        corrupt[TCP + 32 + 3] ^= 0x40;
        assert!(!tcp_checksum_holds(&corrupt));
        let out = p.expect(&corrupt, XDP_TX, &[("forwarded", 1)]);
        assert!(!tcp_checksum_holds(&out), "a wrong checksum was laundered");
        let mut repaired = out.clone();
        repaired[TCP + 32 + 3] ^= 0x40;
        assert_eq!(repaired, rewritten(&good, BACKEND_PORT));
    });
}

#[test]
fn client_fins_and_rsts_are_acted_on_only_at_client_next() {
    privileged("FIN and RST", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        // A RST beside the expected number, in the window and far off: forwarded for the
        // back-end to judge, nothing noticed, nothing moved.
        for seq in [
            CLIENT_NEXT.wrapping_add(1),
            CLIENT_NEXT.wrapping_sub(1),
            3_000_000,
        ] {
            let rst = client(seq, RST | ACK, b"").bytes();
            let out = p.expect(&rst, XDP_TX, &[("forwarded_rst_ignored", 1)]);
            assert_eq!(out, rewritten(&rst, BACKEND_PORT));
        }
        // A FIN past the expected number (it overtook data, or is blind), and a FIN
        // with data that ends before it: forwarded, not acted on.
        let blind = client(CLIENT_NEXT.wrapping_add(10), FIN | ACK, b"").bytes();
        let out = p.expect(&blind, XDP_TX, &[("forwarded_fin_ignored", 1)]);
        assert_eq!(out, rewritten(&blind, BACKEND_PORT));
        let early = client(CLIENT_NEXT.wrapping_sub(30), FIN | ACK, &[b'x'; 10]).bytes();
        p.expect(&early, XDP_TX, &[("forwarded_fin_ignored", 1)]);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, CLIENT_NEXT);
        assert_eq!(p.notices(), []);
        assert_eq!(p.flow(key(CLIENT_PORT)).close_state, 0, "no blind close");

        // The FIN behind the client's last data, at exactly client_next once the data
        // is counted: forwarded and noticed, client_next past the FIN.
        let last = client(CLIENT_NEXT.wrapping_sub(4), FIN | ACK | PSH, b"tail-end").bytes();
        let out = p.expect(&last, XDP_TX, &[("forwarded_fin", 1)]);
        assert_eq!(out, rewritten(&last, BACKEND_PORT));
        assert_eq!(p.notices(), [notice(FlowNotice::CLIENT_FIN)]);
        let next = CLIENT_NEXT.wrapping_add(5);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        // Recorded in the entry as the notice went: the daemon need not write it.
        assert_eq!(
            p.flow(key(CLIENT_PORT)).close_state,
            FrontendFlow::CLIENT_FIN
        );
        // The same FIN again (a retransmission): already counted, not acted on.
        p.expect(&last, XDP_TX, &[("forwarded_fin_ignored", 1)]);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(p.notices(), []);

        // The RST at exactly client_next: forwarded and noticed; client_next stays.
        let rst = client(next, RST, b"").bytes();
        let out = p.expect(&rst, XDP_TX, &[("forwarded_rst", 1)]);
        assert_eq!(out, rewritten(&rst, BACKEND_PORT));
        assert_eq!(p.notices(), [notice(FlowNotice::CLIENT_RST)]);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).close_state,
            FrontendFlow::CLIENT_FIN | FrontendFlow::CLIENT_RESET
        );
        // Its header-only checksum must hold like any other's.
        let mut bad = rst.clone();
        bad[TCP + 17] ^= 0x80;
        p.expect_passed(&bad, &[("pass_bad_checksum", 1)]);
        assert_eq!(p.notices(), []);
    });
}

#[test]
fn a_flow_awaiting_the_answer_forwards_only_the_proof() {
    privileged("awaiting answer", || {
        let mut p = Program::load();
        let awaiting = entry(BACKEND_PORT, FrontendFlow::AWAITING_ANSWER);
        p.set_flow(key(CLIENT_PORT), awaiting);
        // Acknowledging only the front-end's SYN/ACK (more request data): up, for the
        // core to hold, and counted towards client_next.
        let mut more = client(CLIENT_NEXT, ACK | PSH, b"0123456789");
        more.ack = ISN_F.wrapping_add(1);
        p.expect_passed(&more.bytes(), &[("pass_awaiting_answer", 1)]);
        let next = CLIENT_NEXT.wrapping_add(10);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        // An old acknowledgement, and no ACK flag at all: up too; the FIN here sits at
        // client_next, yet only the core acts on a held segment, so nothing is noticed.
        let mut old = client(next, ACK, b"");
        old.ack = ISN_F.wrapping_sub(100);
        p.expect_passed(&old.bytes(), &[("pass_awaiting_answer", 1)]);
        let mut bare_fin = client(next, FIN, b"");
        bare_fin.ack = 0;
        p.expect_passed(&bare_fin.bytes(), &[("pass_awaiting_answer", 1)]);
        let next = next.wrapping_add(1);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).close_state,
            FrontendFlow::AWAITING_ANSWER
        );
        assert_eq!(p.notices(), []);

        // The proof, but with payload under the partial sum: up without a notice, the
        // mark kept (the core completes the handoff from it instead).
        let mut proof = client(next, ACK, b"abc");
        proof.ack = ISN_F.wrapping_add(2);
        p.expect_passed(
            &with_partial_checksum(proof.bytes()),
            &[("pass_partial_checksum", 1)],
        );
        let next = next.wrapping_add(3);
        assert_eq!(p.flow(key(CLIENT_PORT)).client_next, next);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).close_state,
            FrontendFlow::AWAITING_ANSWER
        );
        assert_eq!(p.notices(), []);

        // A segment acknowledging the back-end's first byte: forwarded, noticed, the
        // mark cleared.
        let mut answer = client(next, ACK, b"");
        answer.ack = ISN_F.wrapping_add(2);
        let answer = answer.bytes();
        let out = p.expect(&answer, XDP_TX, &[("forwarded_answer", 1)]);
        assert_eq!(out, rewritten(&answer, BACKEND_PORT));
        assert_eq!(p.notices(), [notice(FlowNotice::BACKEND_ANSWERED)]);
        let flow = p.flow(key(CLIENT_PORT));
        assert_eq!((flow.close_state, flow.client_next), (0, next));
        assert_ne!(flow.last_seen_ns, 0);
        // From then on, a plain forward.
        p.expect(&answer, XDP_TX, &[("forwarded", 1)]);
        assert_eq!(p.notices(), []);

        // The proof names its back-end by the stamp its TSecr echoes: another back-end's
        // answer (one given up, answering late) goes up for the core to judge, the
        // entry's is the proof. Only the id is read here; the core checks the MAC.
        use baton_common::stamp as echo;
        p.set_flow(key(CLIENT_PORT), awaiting);
        let stamped = |id: u8| {
            let mut seg = client(CLIENT_NEXT, ACK, b"");
            seg.ack = ISN_F.wrapping_add(2);
            let stamp = u32::from(echo::MARK) | u32::from(id) << echo::ID_SHIFT | 0x5a;
            seg.options = timestamps(77, 0x0123_0000 | stamp);
            seg.bytes()
        };
        let ours = echo::backend_id(BACKEND);
        p.expect_passed(&stamped(ours ^ 1), &[("pass_awaiting_answer", 1)]);
        assert_eq!(p.notices(), []);
        let flow = p.flow(key(CLIENT_PORT));
        assert_eq!(flow.close_state, FrontendFlow::AWAITING_ANSWER);
        p.expect(&stamped(ours), XDP_TX, &[("forwarded_answer", 1)]);
        assert_eq!(p.notices(), [notice(FlowNotice::BACKEND_ANSWERED)]);

        // The proof carried by the client's FIN (a quick client's last segment): both
        // told at once, counted as the FIN, and recorded; other close-state bits are
        // left alone.
        let state = FrontendFlow::AWAITING_ANSWER | FrontendFlow::CLIENT_RESET;
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, state));
        let mut fin = client(CLIENT_NEXT, FIN | ACK, b"");
        fin.ack = ISN_F.wrapping_add(700);
        let fin = fin.bytes();
        let out = p.expect(&fin, XDP_TX, &[("forwarded_fin", 1)]);
        assert_eq!(out, rewritten(&fin, BACKEND_PORT));
        assert_eq!(
            p.notices(),
            [notice(
                FlowNotice::CLIENT_FIN | FlowNotice::BACKEND_ANSWERED
            )]
        );
        let flow = p.flow(key(CLIENT_PORT));
        assert_eq!(
            flow.close_state,
            FrontendFlow::CLIENT_RESET | FrontendFlow::CLIENT_FIN
        );
        assert_eq!(flow.client_next, CLIENT_NEXT.wrapping_add(1));

        // A proof with a wrong header-only checksum: up, nothing told, mark kept.
        p.set_flow(key(CLIENT_PORT), awaiting);
        let mut bad = answer.clone();
        bad[TCP + 4..TCP + 8].copy_from_slice(&CLIENT_NEXT.to_be_bytes());
        p.expect_passed(&bad, &[("pass_bad_checksum", 1)]);
        assert_eq!(p.flow(key(CLIENT_PORT)), awaiting);
        assert_eq!(p.notices(), []);
    });
}

/// Nothing from a back-end is taken in: its copies (a RST, a handoff's confirmation, and
/// the FINs a back-end module of an older build still copies) all go up to the slow
/// path, uncounted and untold, whatever the state of their flow, and change nothing in
/// its entry. The front-end tracks the close from the client's side.
#[test]
fn a_backends_copies_all_go_up_untold() {
    privileged("back-end copies", || {
        let mut p = Program::load();
        let fin = backend_copy(FIN | ACK, b"").bytes();
        let copies = [
            fin.clone(),
            with_partial_checksum(fin.clone()),
            backend_copy(FIN | ACK, b"bye").bytes(),
            backend_copy(RST | ACK, b"").bytes(),
            backend_copy(ACK, b"").bytes(),
            backend_copy(ACK | PSH, b"HTTP/1.1 200 OK\r\n").bytes(),
        ];
        for state in [None, Some(FrontendFlow::AWAITING_ANSWER), Some(0)] {
            if let Some(state) = state {
                p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, state));
            }
            for copy in &copies {
                p.expect_passed(copy, &[]);
            }
            assert_eq!(p.notices(), [], "{state:?}");
            if let Some(state) = state {
                assert_eq!(p.flow(key(CLIENT_PORT)), entry(BACKEND_PORT, state));
            }
        }
    });
}

#[test]
fn a_full_ring_sends_noticed_segments_up() {
    privileged("ring full", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        // RSTs at the expected number each leave a notice and move nothing: fill the
        // ring with them.
        let rst = client(CLIENT_NEXT, RST, b"").bytes();
        for _ in 0..RING_NOTICES {
            assert_eq!(p.run(&rst).0, XDP_TX);
        }
        assert_eq!(p.counted(), [("forwarded_rst", RING_NOTICES as u64)]);
        // Full: the RST, and the client's last data with its FIN, go up as they came,
        // for the slow path to forward; the FIN still counts towards client_next.
        p.expect_passed(&rst, &[("pass_ring_full", 1)]);
        let last = client(CLIENT_NEXT, FIN | ACK, b"bye").bytes();
        p.expect_passed(&last, &[("pass_ring_full", 1)]);
        assert_eq!(
            p.flow(key(CLIENT_PORT)).client_next,
            CLIENT_NEXT.wrapping_add(4)
        );
        // The answer of a flow awaiting it, too, with its mark kept.
        let awaiting = 40_002;
        p.set_flow(
            key(awaiting),
            entry(BACKEND_PORT, FrontendFlow::AWAITING_ANSWER),
        );
        let mut answer = client(CLIENT_NEXT, ACK, b"");
        answer.src.1 = awaiting;
        answer.ack = ISN_F.wrapping_add(2);
        p.expect_passed(&answer.bytes(), &[("pass_ring_full", 1)]);
        assert_eq!(
            p.flow(key(awaiting)).close_state,
            FrontendFlow::AWAITING_ANSWER
        );
        // A back-end's FIN copy goes up uncounted; segments needing no notice still go.
        p.expect_passed(&backend_copy(FIN | ACK, b"").bytes(), &[]);
        let ack = client(CLIENT_NEXT.wrapping_add(4), ACK, b"").bytes();
        p.expect(&ack, XDP_TX, &[("forwarded", 1)]);

        // Read, the ring takes notices again.
        let notices = p.notices();
        assert_eq!(notices.len(), RING_NOTICES);
        assert!(notices.iter().all(|n| *n == notice(FlowNotice::CLIENT_RST)));
        let rst = client(CLIENT_NEXT.wrapping_add(4), RST, b"").bytes();
        p.expect(&rst, XDP_TX, &[("forwarded_rst", 1)]);
        assert_eq!(p.notices(), [notice(FlowNotice::CLIENT_RST)]);
    });
}

fn cookie_config(flags: u32) -> SynCookieConfig {
    SynCookieConfig {
        keys: CookieKeys {
            cookie1: SipKey::from_bytes(*b"cookie-key-one-1"),
            cookie2: SipKey::from_bytes(*b"cookie-key-two-2"),
            tsval: SipKey::from_bytes(*b"cookie-tsval-key"),
        },
        flags,
        max_mss: 1460,
        window: 64_240,
        window_shift: 7,
        _pad: [0; 7],
    }
}

/// A client's SYN with `options`.
fn syn(flags: u8, options: Vec<u8>) -> Frame {
    Frame {
        options,
        ack: 0,
        window: 64_240,
        ..client(CLIENT_ISN, flags, b"")
    }
}

/// Linux's SYN options: MSS, SACK-permitted, timestamps, NOP, window scale 7 (20 bytes).
fn linux_syn_options(mss: u16) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&mss.to_be_bytes());
    o.extend_from_slice(&[4, 2, 8, 10]);
    o.extend_from_slice(&4_242u32.to_be_bytes());
    o.extend_from_slice(&0u32.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 7]);
    o
}

/// Runs a SYN with cookies engaged, asserting it was answered with exactly the frame the
/// host's `syncookie` functions build for it (the ISN checked by `check_cookie`, the
/// TSval within the run's clock readings), with plain cookie counters.
fn expect_cookie_answer(
    p: &mut Program,
    config: &SynCookieConfig,
    syn: &[u8],
    options: SynOptions,
) {
    expect_answer(p, config, syn, options, false, &[("syn_cookies_sent", 1)]);
}

/// [`expect_cookie_answer`] for an answer whose SYN's options are in the half-open map
/// (`syn_in_map`, the cookie marked) or not, moving exactly `counted`.
fn expect_answer(
    p: &mut Program,
    config: &SynCookieConfig,
    syn: &[u8],
    options: SynOptions,
    syn_in_map: bool,
    counted: &[(&str, u64)],
) {
    let before = clock(libc::CLOCK_MONOTONIC);
    let (verdict, out) = p.run(syn);
    let after = clock(libc::CLOCK_MONOTONIC);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(p.counted(), counted);
    assert_eq!(out.len(), SYN_ACK_FRAME_LEN);
    let flow = syncookie::flow_bytes(CLIENT, VIP, CLIENT_PORT, SERVICE_PORT);
    let answer = parse(&out);
    let isn = answer.tcp.seq_number;
    let client_mss = options.mss.unwrap_or(syncookie::DEFAULT_MSS);
    let mss_in_cookie = syncookie::MSS_TABLE[syncookie::mss_index(client_mss) as usize];
    assert_eq!(
        syncookie::check_cookie(&config.keys, after, &flow, CLIENT_ISN, isn),
        Some(Cookie {
            mss: mss_in_cookie,
            syn_in_map
        }),
        "the cookie checks"
    );
    // The frame the host builds at either clock reading, with the run's TSval: equal
    // byte for byte (checksums included).
    let mut want =
        syncookie::cookie_syn_ack(config, before, &flow, CLIENT_ISN, &options, syn_in_map);
    let later = syncookie::cookie_syn_ack(config, after, &flow, CLIENT_ISN, &options, syn_in_map);
    // The two readings may straddle a cookie minute.
    assert!(isn == want.isn || isn == later.isn, "ISN {isn:#x}");
    want.isn = isn;
    if let (Some((lo, _)), Some((hi, _)), Some(got)) =
        (want.timestamps, later.timestamps, answer.tcp.timestamps)
    {
        assert!(
            got.tsval.wrapping_sub(lo) <= hi.wrapping_sub(lo),
            "TSval {} outside [{lo}, {hi}]",
            got.tsval
        );
        let encoded = decode_ts_options(got.tsval);
        assert_eq!(encoded, decode_ts_options(lo), "the options in the TSval");
        want.timestamps = Some((got.tsval, got.tsecr));
    }
    let to = SynAddresses {
        client_mac: ROUTER_MAC,
        our_mac: FE_MAC,
        client_addr: CLIENT,
        service_addr: VIP,
        client_port: CLIENT_PORT,
        service_port: SERVICE_PORT,
    };
    assert_eq!(
        out,
        syncookie::syn_ack_frame(&to, CLIENT_ISN, config.window, &want),
        "the SYN/ACK as the host builds it"
    );
}

/// A SYN with another ISN on the ports of a flow whose client closed it (its FIN or RST
/// acted on, as the daemon records in the table) opens a new connection: with kernel
/// dispatch on and SYNs answered here, the old entry goes and the SYN is answered with a cookie, so that the
/// new connection's request can be handed off in the kernel (`FrontendFlow::
/// replaced_by_syn`). Anything less (kernel dispatch off, an open flow, the old
/// connection's own SYN, SYNs not answered here) goes up with the entry kept, as before.
#[test]
fn a_syn_on_a_flow_its_client_closed_replaces_it_while_syns_are_answered() {
    privileged("a closed flow replaced", || {
        let mut p = Program::load();
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let config = cookie_config(all | SynCookieConfig::ENGAGED);
        let linux = syn(SYN, linux_syn_options(1460)).bytes();
        let old_isn = CLIENT_ISN.wrapping_sub(5_000);
        let old = |close_state| FrontendFlow {
            client_isn: old_isn,
            ..entry(8080, close_state)
        };
        let k = key(CLIENT_PORT);
        // Without kernel dispatch: up, the entry kept (the slow path takes the connection).
        p.set_syn_cookies(config);
        p.set_flow(k, old(FrontendFlow::CLIENT_FIN));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        assert_eq!(p.flow(k).client_isn, old_isn);
        p.set_kernel_handoff(baton_common::kernel_dispatch::KernelHandoffConfig::ENABLED);
        // SYNs not answered here: up, the entry kept.
        p.set_syn_cookies(cookie_config(all));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        assert_eq!(p.flow(k).client_isn, old_isn);
        p.set_syn_cookies(config);
        // A client that has not closed (a blind SYN gets the core's challenge): kept.
        p.set_flow(k, old(0));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        assert_eq!(p.flow(k).client_isn, old_isn);
        // Closed by the back-end's RST only: kept.
        p.set_flow(k, old(FrontendFlow::BACKEND_RESET));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        // The old connection's own SYN again (its ISN): kept.
        p.set_flow(k, entry(8080, FrontendFlow::CLIENT_FIN));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        assert!(p.has_flow(k));
        // Closed by its client's FIN, or its RST: answered, the entry gone.
        let options = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            tsval: Some(4_242),
            ecn_setup: false,
        };
        for close in [FrontendFlow::CLIENT_FIN, FrontendFlow::CLIENT_RESET] {
            p.set_flow(k, old(close));
            expect_answer(
                &mut p,
                &config,
                &linux,
                options,
                false,
                &[("syn_cookies_sent", 1), ("closed_flow_replaced", 1)],
            );
            assert!(!p.has_flow(k), "the closed flow's entry is gone");
        }
    });
}

#[test]
fn syns_are_answered_with_cookies_while_engaged() {
    privileged("SYN cookies", || {
        let mut p = Program::load();
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let config = cookie_config(all | SynCookieConfig::ENGAGED);
        let linux = syn(SYN, linux_syn_options(1460)).bytes();
        // Not engaged (the keys written, the flag clear): up.
        p.set_syn_cookies(cookie_config(all));
        p.expect_passed(&linux, &[("pass_control", 1)]);

        p.set_syn_cookies(config);
        let linux_options = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            tsval: Some(4_242),
            ecn_setup: false,
        };
        expect_cookie_answer(&mut p, &config, &linux, linux_options);
        let answer = parse(&p.run(&linux).1).tcp.timestamps.unwrap();
        let options = decode_ts_options(answer.tsval);
        assert_eq!(
            (options.window_scale, options.sack, options.ecn),
            (Some(7), true, false)
        );
        p.counted();
        // An ECN-setup SYN, and the partial sum an offloading sender leaves.
        let ecn = syn(SYN | ECE | CWR, linux_syn_options(1400)).bytes();
        let ecn_options = SynOptions {
            mss: Some(1400),
            ecn_setup: true,
            ..linux_options
        };
        expect_cookie_answer(&mut p, &config, &with_partial_checksum(ecn), ecn_options);
        // No options at all (the frame grows to the answer's length): MSS 536, nothing
        // else, since nothing can be kept without timestamps.
        let bare = syn(SYN, vec![]).bytes();
        assert!(bare.len() < SYN_ACK_FRAME_LEN);
        expect_cookie_answer(&mut p, &config, &bare, SynOptions::default());
        // 40 bytes of options (padded with NOPs): the frame shrinks to the answer's length.
        let mut padded = linux_syn_options(1460);
        padded.extend_from_slice(&[1; 20]);
        let long = syn(SYN, padded).bytes();
        assert!(long.len() > SYN_ACK_FRAME_LEN);
        expect_cookie_answer(&mut p, &config, &long, linux_options);
        // Timestamps off in the configuration and the half-open map off: none offered,
        // so no window scale or SACK.
        let no_ts = cookie_config(SynCookieConfig::SACK | SynCookieConfig::ENGAGED);
        p.set_syn_cookies(no_ts);
        expect_answer(
            &mut p,
            &no_ts,
            &linux,
            linux_options,
            false,
            &[("syn_cookies_sent", 1), ("syn_ack_without_options", 1)],
        );
        let out = p.run(&linux).1;
        let parsed = parse(&out);
        assert_eq!(
            (
                parsed.tcp.timestamps,
                parsed.tcp.window_scale,
                parsed.tcp.sack_permitted
            ),
            (None, None, false)
        );
        p.counted();
        p.set_syn_cookies(config);

        // Up, for the slow path to answer or refuse: a wrong checksum, data (Fast Open),
        // options the walk refuses, a SYN on a handed-off flow's port, a SYN with ACK.
        let mut bad = linux.clone();
        bad[TCP + 16] ^= 0x01;
        p.expect_passed(&bad, &[("pass_control", 1)]);
        let mut data = syn(SYN, linux_syn_options(1460));
        data.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        p.expect_passed(&data.bytes(), &[("pass_control", 1)]);
        let mut malformed = linux_syn_options(1460);
        malformed[1] = 3; // MSS of length 3
        p.expect_passed(&syn(SYN, malformed).bytes(), &[("pass_control", 1)]);
        let overrun = vec![1, 1, 8, 12]; // timestamps running past the area
        p.expect_passed(&syn(SYN, overrun).bytes(), &[("pass_control", 1)]);
        p.expect_passed(
            &syn(SYN | ACK, linux_syn_options(1460)).bytes(),
            &[("pass_control", 1)],
        );
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        p.expect_passed(&linux, &[("pass_control", 1)]);
        assert_eq!(p.notices(), []);
    });
}

/// While cookies are engaged, the handshake's bare ACK answering a cookie SYN/ACK is
/// taken in here (the client's first data segment brings the cookie back to the core);
/// an ACK whose cookie does not check, one with data, and any ACK while cookies are not
/// engaged go up as before.
#[test]
fn the_handshakes_ack_to_a_cookie_is_taken_in_while_engaged() {
    privileged("handshake ACK", || {
        let mut p = Program::load();
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let config = cookie_config(all | SynCookieConfig::ENGAGED);
        p.set_syn_cookies(config);
        let flow = syncookie::flow_bytes(CLIENT, VIP, CLIENT_PORT, SERVICE_PORT);
        let cookie = syncookie::make_cookie(
            &config.keys,
            clock(libc::CLOCK_MONOTONIC),
            &flow,
            CLIENT_ISN,
            1460,
            false,
        );
        let ack = |ack: u32, payload: &[u8]| {
            Frame {
                ack,
                ..client(CLIENT_ISN.wrapping_add(1), ACK, payload)
            }
            .bytes()
        };
        let handshake = ack(cookie.wrapping_add(1), b"");
        p.expect(&handshake, XDP_DROP, &[("handshake_ack_absorbed", 1)]);
        // A wrong cookie (MSS index 3 moved to 8, past the eight valid indexes), or the
        // client's ISN not the one hashed: up, for the core to answer as a stray segment.
        p.expect_passed(
            &ack(cookie.wrapping_add(1 + 5), b""),
            &[("pass_no_flow", 1)],
        );
        let shifted = Frame {
            ack: cookie.wrapping_add(1),
            ..client(CLIENT_ISN.wrapping_add(2), ACK, b"")
        }
        .bytes();
        p.expect_passed(&shifted, &[("pass_no_flow", 1)]);
        // The request itself, with the same cookie: up, the core rebuilds the
        // connection from it.
        p.expect_passed(
            &ack(cookie.wrapping_add(1), b"GET / HTTP/1.1\r\n\r\n"),
            &[("pass_no_flow", 1)],
        );
        // FIN or RST with it: control, up.
        let fin = Frame {
            ack: cookie.wrapping_add(1),
            ..client(CLIENT_ISN.wrapping_add(1), FIN | ACK, b"")
        }
        .bytes();
        p.expect_passed(&fin, &[("pass_control", 1)]);
        // Not engaged: every ACK of no flow goes up.
        p.set_syn_cookies(cookie_config(all));
        p.expect_passed(&handshake, &[("pass_no_flow", 1)]);
        // A handed-off flow's bare ACK is forwarded, never taken for a handshake's.
        p.set_syn_cookies(config);
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let (verdict, _) = p.run(&handshake);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(p.counted(), [("forwarded", 1)]);
    });
}

/// Windows' SYN options: MSS, NOP, window scale 8, NOP, NOP, SACK-permitted; no
/// timestamps (12 bytes).
fn windows_syn_options() -> Vec<u8> {
    vec![2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2]
}

/// A SYN without timestamps answered in XDP: its options go into the half-open map and
/// the SYN/ACK offers window scaling and SACK (and ECN, asked for) as the core's own
/// would, its cookie marked; the handshake's ACK to it is taken in like any. With the map
/// off, the cookie's own encoding: none of them, counted. A SYN with timestamps, or with
/// nothing to keep, or one that goes up, leaves no entry.
#[test]
fn a_syn_without_timestamps_keeps_its_options_in_the_half_open_map() {
    privileged("half-open map", || {
        let mut p = Program::load();
        let all = SynCookieConfig::TIMESTAMPS | SynCookieConfig::SACK | SynCookieConfig::ECN;
        let config = cookie_config(all | SynCookieConfig::HALF_OPEN | SynCookieConfig::ENGAGED);
        p.set_syn_cookies(config);
        let windows = syn(SYN | ECE | CWR, windows_syn_options()).bytes();
        let options = SynOptions {
            mss: Some(1460),
            window_scale: Some(8),
            sack_permitted: true,
            tsval: None,
            ecn_setup: true,
        };
        assert_eq!(p.half_open(key(CLIENT_PORT)), None);
        expect_answer(
            &mut p,
            &config,
            &windows,
            options,
            true,
            &[("syn_cookies_sent", 1), ("half_open_kept", 1)],
        );
        let out = p.run(&windows).1;
        p.counted();
        let answer = parse(&out).tcp;
        assert_eq!(answer.window_scale, Some(7), "ours, as the core's SYN/ACK");
        assert!(answer.sack_permitted);
        assert_eq!(answer.timestamps, None);
        assert!(answer.flags.contains(baton_proto::wire::TcpFlags::ECE));
        let agreed = syncookie::agreed_options(config.flags, config.window_shift, &options);
        let entry = HalfOpenSyn::new(CLIENT_ISN, 64_240, &options, &agreed);
        assert_eq!(p.half_open(key(CLIENT_PORT)), Some(entry), "the entry");
        assert_eq!(
            (
                entry.kept().window_scale,
                entry.kept().sack,
                entry.kept().ecn
            ),
            (Some(8), true, true)
        );

        // The handshake's ACK to the marked cookie is taken in; the entry waits for the
        // request.
        let handshake = Frame {
            ack: answer.seq_number.wrapping_add(1),
            options: vec![],
            ..client(CLIENT_ISN.wrapping_add(1), ACK, b"")
        }
        .bytes();
        p.expect(&handshake, XDP_DROP, &[("handshake_ack_absorbed", 1)]);
        assert_eq!(p.half_open(key(CLIENT_PORT)), Some(entry));

        // The map off: the cookie's own encoding, counted, and no entry written.
        p.forget_half_open(key(CLIENT_PORT));
        let off = cookie_config(all | SynCookieConfig::ENGAGED);
        p.set_syn_cookies(off);
        expect_answer(
            &mut p,
            &off,
            &windows,
            options,
            false,
            &[("syn_cookies_sent", 1), ("syn_ack_without_options", 1)],
        );
        let out = p.run(&windows).1;
        p.counted();
        let answer = parse(&out).tcp;
        assert_eq!((answer.window_scale, answer.sack_permitted), (None, false));
        assert_eq!(p.half_open(key(CLIENT_PORT)), None);

        // Nothing to keep (no window scaling, SACK or ECN), timestamps (the TSval keeps
        // them), a SYN that goes up (a wrong checksum): no entry.
        p.set_syn_cookies(config);
        let mss_only = syn(SYN, vec![2, 4, 0x05, 0xb4]).bytes();
        expect_cookie_answer(
            &mut p,
            &config,
            &mss_only,
            SynOptions {
                mss: Some(1460),
                ..SynOptions::default()
            },
        );
        let linux = syn(SYN, linux_syn_options(1460)).bytes();
        expect_cookie_answer(
            &mut p,
            &config,
            &linux,
            SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                tsval: Some(4_242),
                ecn_setup: false,
            },
        );
        let mut bad = windows.clone();
        bad[TCP + 16] ^= 0x01;
        p.expect_passed(&bad, &[("pass_control", 1)]);
        assert_eq!(p.half_open(key(CLIENT_PORT)), None);
    });
}

#[path = "xdp_program/handoff.rs"]
mod handoff;
#[path = "xdp_program/ipv6.rs"]
mod ipv6;
#[path = "../../baton-dispatch/tests/support/lab.rs"]
mod lab;
#[path = "xdp_program/stamp.rs"]
mod stamp;

/// A router's "fragmentation needed" to the VIP about a segment a back-end sent as the
/// VIP's goes to that flow's back-end, found by the quote's 4-tuple (the client the
/// quoted destination), rewritten as a client segment is (MACs, destination, the IPv4
/// header's checksum) and the ICMP message untouched; an error quoting no flow, or
/// malformed, is dropped and counted; other ICMP to the VIP passes up uncounted, as
/// before, and nothing is answered.
#[test]
fn a_frag_needed_to_the_vip_goes_to_the_flows_backend() {
    privileged("ICMP", || {
        let mut p = Program::load();
        p.set_flow(key(CLIENT_PORT), entry(BACKEND_PORT, 0));
        let router = [198, 18, 1, 1];
        let sent = Frame {
            payload: vec![0x5a; 1448],
            ..backend_copy(ACK, b"")
        };
        let error = |quoted, segment: &Frame| {
            support::frag_needed(ROUTER_MAC, FE_MAC, router, VIP, 1000, segment, quoted)
        };
        for quoted in [8, 20, 576 - 28] {
            let frame = error(quoted, &sent);
            let out = p.expect(&frame, XDP_TX, &[("forwarded_icmp", 1)]);
            let mut want = frame.clone();
            want[..6].copy_from_slice(&BE_MAC);
            want[6..12].copy_from_slice(&FE_MAC);
            want[IP + 16..IP + 20].copy_from_slice(&BACKEND);
            fix_ip_checksum(&mut want, 20);
            assert_eq!(out, want, "{quoted} quoted bytes");
        }
        assert_eq!(
            p.flow(key(CLIENT_PORT)).last_seen_ns,
            0,
            "no client activity"
        );

        // About no flow in the table: dropped, counted.
        let other = Frame {
            dst: (CLIENT, CLIENT_PORT + 1),
            ..sent.clone()
        };
        p.expect(&error(8, &other), XDP_DROP, &[("drop_icmp_no_flow", 1)]);
        // Malformed: the quote cut short of the sequence number, a quote from another
        // address than the VIP, a fragment.
        let mut short = error(8, &sent);
        short.truncate(short.len() - 2);
        let total = (short.len() - IP) as u16;
        short[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut short, 20);
        p.expect(&short, XDP_DROP, &[("drop_icmp_malformed", 1)]);
        let elsewhere = Frame {
            src: ([198, 18, 2, 2], SERVICE_PORT),
            ..sent.clone()
        };
        p.expect(
            &error(8, &elsewhere),
            XDP_DROP,
            &[("drop_icmp_malformed", 1)],
        );
        let fragment = with_fragment_field(error(8, &sent), 0x2000);
        p.expect(&fragment, XDP_DROP, &[("drop_icmp_malformed", 1)]);

        // Other ICMP to the VIP (an echo request; a port unreachable), and an error to
        // another address: up, uncounted, untouched.
        let mut echo = error(8, &sent);
        echo[TCP] = 8;
        echo[TCP + 1] = 0;
        p.expect_passed(&echo, &[]);
        let mut unreachable = error(8, &sent);
        unreachable[TCP + 1] = 3;
        p.expect_passed(&unreachable, &[]);
        let elsewhere =
            support::frag_needed(ROUTER_MAC, FE_MAC, router, [198, 18, 1, 2], 1000, &sent, 8);
        p.expect_passed(&elsewhere, &[]);
        // Disabled: up, uncounted.
        p.configure(0);
        p.expect_passed(&error(8, &sent), &[]);
    });
}

/// The verifier's figure for the program (`verified_insns` from the kernel: the
/// instructions it walked, of its million), printed for docs/design.md's "Limits".
#[test]
fn verifier_figures() {
    privileged("verifier figures", || {
        let p = Program::load();
        let prog: &Xdp = p
            .ebpf
            .program("frontend_forward")
            .unwrap()
            .try_into()
            .unwrap();
        let walked = prog.info().unwrap().verified_instruction_count();
        eprintln!("verifier: frontend_forward walked {walked:?} instructions");
        let prog: &Xdp = p
            .ebpf
            .program("frontend_forward_v6")
            .unwrap()
            .try_into()
            .unwrap();
        let walked = prog.info().unwrap().verified_instruction_count();
        eprintln!("verifier: frontend_forward_v6 walked {walked:?} instructions");
    });
}
