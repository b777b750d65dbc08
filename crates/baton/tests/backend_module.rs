//! The back-end module's eBPF programs run by the kernel on crafted packets
//! (`BPF_PROG_TEST_RUN`), their output checked against the host's translation functions
//! in `baton_common` and parsed with checksum verification by `baton_proto::wire`.
//!
//! Needs root (loading programs); without it each test prints why it skipped. The runs
//! happen inside a network namespace of the test's own, because a copy the egress
//! program sends to the front-end (`bpf_clone_redirect`) leaves through the test run's
//! device there (its loopback, the device test runs use), where nothing routes it
//! anywhere.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::{Command, Stdio},
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use baton::{backend::AgentConfig, lab, netns};
use baton_common::{
    backend::{
        BackendConfig, BackendConfigV6, BackendFlow, BackendFlowKey, BackendFlowKeyV6,
        ingress_program, ipv6_program, stat,
    },
    claim,
    handoff_option::{HandoffBinding, HandoffBindingV6, HandoffOption},
    siphash::SipKey,
    stamp::{self, StampedBackend, StampedFlow},
    translate::{SynAckTerms, Translation},
};
use baton_proto::wire::{
    Checksums, EtherType, EthernetFrame, EthernetRepr, Ipv6Packet, Ipv6Repr, TcpFlags,
    TcpFrameRepr, TcpRepr, TcpSegment,
};
use support::Frame;

mod support;

/// The namespace the programs run in, this process's own: two runs of the suite at once
/// never share it.
static NS: support::LabName = support::LabName::new(|| support::unique("btbpf"));
const TC_ACT_PIPE: u32 = 3;
const TC_ACT_SHOT: u32 = 2;
static SERIAL: Mutex<()> = Mutex::new(());

// The lab's plan (the module reads only what its configuration and the frames say).
const CLIENT: [u8; 4] = lab::CLIENT_ADDR.octets();
const BACKEND: [u8; 4] = lab::backend_addr(1).octets();
const VIP: [u8; 4] = lab::VIP.octets();
const FE_MAC: [u8; 6] = lab::mac_octets(lab::FE_ADDR);
const BE_MAC: [u8; 6] = lab::mac_octets(lab::backend_addr(1));
const ROUTER_MAC: [u8; 6] = lab::mac_octets(lab::ROUTER_LAN_ADDR);
const CLIENT_PORT: u16 = 40_000;
const KEY: [u8; 16] = *b"baton-test-key-0";
// Near the top of the sequence space, so the test crosses 2^32.
const ISN_F: u32 = 0xffff_ff00;
const TSV_F: u32 = 0x7000_0000;
const WS_F: u8 = 7;
const CLIENT_ISN: u32 = 1000;
const ISN_B: u32 = 0x0000_1000;
const TSV_B: u32 = 0x100;
const WS_B: u8 = 9;

fn agent_config() -> AgentConfig {
    AgentConfig::parse(&format!(
        "interface = \"eth0\"\nvip = \"{}:{}\"\nvip6 = \"{}\"\nfrontend_mac = \"{}\"\n\
         handoff_key = \"{}\"\ncomplete_handshake = true\n",
        lab::VIP,
        lab::HTTP_PORT,
        lab::VIP6,
        lab::mac_for(lab::FE_ADDR),
        KEY.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
    .unwrap()
}

/// Timestamps behind two NOPs, as Linux aligns them: 12 bytes.
fn ts_option(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

fn binding(backend: [u8; 4]) -> HandoffBinding {
    HandoffBinding {
        client_ip: CLIENT,
        client_port: CLIENT_PORT,
        backend_ip: backend,
        backend_port: 80,
        client_isn: CLIENT_ISN,
    }
}

fn handoff_option() -> HandoffOption {
    HandoffOption::new(
        ISN_F,
        TSV_F,
        WS_F,
        HandoffOption::TIMESTAMPS | HandoffOption::SACK,
    )
}

/// The client's SYN as the front-end replays it: Linux's 20 bytes of options, then the
/// handoff option (40 in all). The timestamps sit at an odd offset here (after MSS and
/// SACK-permitted, no NOPs), which exercises the odd-offset checksum path.
fn syn_prime(option: [u8; 20]) -> Frame {
    let mut options = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    options.extend_from_slice(&5555u32.to_be_bytes());
    options.extend_from_slice(&0u32.to_be_bytes());
    options.extend_from_slice(&[1, 3, 3, 7]);
    options.extend_from_slice(&option);
    Frame {
        src_mac: FE_MAC,
        dst_mac: BE_MAC,
        src: (CLIENT, CLIENT_PORT),
        dst: (BACKEND, 80),
        seq: CLIENT_ISN,
        ack: 0,
        flags: 0x02,
        window: 64240,
        options,
        payload: vec![],
    }
}

/// A segment the server sends the client, as the back-end's egress sees it.
fn server_segment(
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
) -> Frame {
    Frame {
        src_mac: BE_MAC,
        dst_mac: ROUTER_MAC,
        src: (BACKEND, 80),
        dst: (CLIENT, CLIENT_PORT),
        seq,
        ack,
        flags,
        window,
        options,
        payload,
    }
}

struct Module {
    ebpf: Ebpf,
}

/// Every program of the object, each checked by the verifier on load.
const PROGRAMS: [&str; 10] = [
    "backend_ingress",
    "backend_syn",
    "backend_icmp",
    "backend_repeated_syn",
    "backend_local_ack",
    "backend_egress",
    "backend_ingress_v6",
    "backend_syn_v6",
    "backend_icmp_v6",
    "backend_egress_v6",
];

/// The address family a test's frames are of: the handoff, translation, copy and close
/// tests run over both, the same frames built as IPv4 or IPv6 ([`Family::frame`]) with
/// the lab's IPv6 plan (`lab::v6_for`), and both kinds of output read back the same way
/// ([`Family::parse`]). The programs must treat them alike but for the headers, the flow
/// table and the tag's binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// The lab's IPv6 address beside an IPv4 one.
fn v6(addr: [u8; 4]) -> [u8; 16] {
    lab::v6_for(Ipv4Addr::from(addr)).octets()
}

/// An output frame's source address and TCP segment, checksums verified.
struct Parsed<'a> {
    src: IpAddr,
    tcp: TcpRepr<'a>,
}

impl Family {
    /// The IP header's length in the test's frames (no options, no extension headers).
    fn ip_len(self) -> usize {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }

    /// The frame as this family: IPv4 as built, or the same Ethernet and TCP over an
    /// IPv6 header (addresses `lab::v6_for` the IPv4 ones), with `extension` (whole
    /// extension headers, the first's Next Header given) between them.
    fn frame_with(self, frame: &Frame, extension: Option<(u8, &[u8])>) -> Vec<u8> {
        let v4 = frame.bytes();
        if self == Family::V4 {
            return v4;
        }
        let mut tcp = v4[34..].to_vec();
        tcp[16..18].copy_from_slice(&[0, 0]);
        let (src, dst) = (v6(frame.src.0), v6(frame.dst.0));
        let sum = baton_common::translate::ones_complement_sum(&tcp);
        let pseudo = baton_common::ipv6::tcp_ipv6_pseudo_header_sum(&src, &dst, tcp.len() as u32);
        let check = !baton_common::translate::ones_complement_add(sum, pseudo);
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        let (next, ext) = extension.unwrap_or((6, &[]));
        let mut f = v4[..12].to_vec();
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(ext);
        f.extend_from_slice(&tcp);
        f
    }

    fn frame(self, frame: &Frame) -> Vec<u8> {
        self.frame_with(frame, None)
    }

    /// The VIP in this family.
    fn vip(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::from(VIP),
            Family::V6 => IpAddr::from(v6(VIP)),
        }
    }

    /// A frame the programs sent, parsed with its checksums verified.
    fn parse(self, frame: &[u8]) -> Parsed<'_> {
        match self {
            Family::V4 => {
                let p = parse(frame);
                Parsed {
                    src: IpAddr::V4(p.ipv4.src_addr),
                    tcp: p.tcp,
                }
            }
            Family::V6 => {
                let eth = EthernetFrame::new_checked(frame).unwrap();
                assert_eq!(EthernetRepr::parse(&eth).ethertype, EtherType::Ipv6);
                let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
                let (repr, at) = Ipv6Repr::parse(&ip).unwrap();
                let end = 14 + 40 + ip.payload_len();
                let seg = TcpSegment::new_checked(&frame[14 + at..end]).unwrap();
                let tcp = TcpRepr::parse(&seg, repr.src_addr, repr.dst_addr, Checksums::Verify)
                    .expect("a valid segment with a valid checksum");
                Parsed {
                    src: IpAddr::V6(repr.src_addr),
                    tcp,
                }
            }
        }
    }

    /// The handoff option the front-end signs for the test flow to `backend`, bound to
    /// this family's addresses (the IPv6 tag's own layout, "BTN2").
    fn option(self, key: &SipKey, backend: [u8; 4]) -> [u8; 20] {
        self.option_as(self, key, backend)
    }

    /// The option signed as `signed_as` binds: for a frame of this family, a tag over
    /// the other family's binding must not verify.
    fn option_as(self, signed_as: Family, key: &SipKey, backend: [u8; 4]) -> [u8; 20] {
        let _ = self;
        match signed_as {
            Family::V4 => handoff_option().encode(key, &binding(backend)),
            Family::V6 => handoff_option().encode(
                key,
                &HandoffBindingV6 {
                    client_ip: v6(CLIENT),
                    client_port: CLIENT_PORT,
                    backend_ip: v6(backend),
                    backend_port: 80,
                    client_isn: CLIENT_ISN,
                },
            ),
        }
    }

    /// The translation the test flow gets: no stamp over IPv6 (the stamp binds IPv4
    /// addresses; `backend_egress_v6` gives none).
    fn translation(self) -> Translation {
        match self {
            Family::V4 => lab_translation(),
            Family::V6 => lab_translation_unstamped(),
        }
    }
}

impl Module {
    fn load() -> Self {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("BACKEND_FLOWS", 1024)
            .load(baton::ebpf::BACKEND)
            .expect("load object");
        let mut config: Array<_, BackendConfig> =
            Array::try_from(ebpf.map_mut("BACKEND_CONFIG").unwrap()).unwrap();
        config.set(0, agent_config().map_value(), 0).unwrap();
        let mut config_v6: Array<_, BackendConfigV6> =
            Array::try_from(ebpf.map_mut("BACKEND_CONFIG_V6").unwrap()).unwrap();
        config_v6.set(0, agent_config().map_value_v6(), 0).unwrap();
        for name in PROGRAMS {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("verifier refused {name}: {e:?}"));
        }
        // As the agent does before it attaches the ingress: a SYN reaches the SYN'
        // program only through this array.
        baton::backend::fill_ingress_programs(&mut ebpf).expect("fill the program array");
        Self { ebpf }
    }

    /// Runs a program on `frame`; returns its verdict and the frame as it left.
    fn run(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self.ebpf.program(program).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 64];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn stat(&self, index: u32) -> u64 {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("BACKEND_STATS").unwrap()).unwrap();
        stats.get(&index, 0).unwrap().iter().sum()
    }

    /// The test flow's entry in `family`'s table.
    fn flow_of(&self, family: Family) -> Option<BackendFlow> {
        match family {
            Family::V4 => self.flow(),
            Family::V6 => {
                let flows: HashMap<_, BackendFlowKeyV6, BackendFlow> =
                    HashMap::try_from(self.ebpf.map("BACKEND_FLOWS_V6").unwrap()).unwrap();
                let key = BackendFlowKeyV6 {
                    client_addr: v6(CLIENT),
                    backend_addr: v6(BACKEND),
                    client_port_be: u16::from_ne_bytes(CLIENT_PORT.to_be_bytes()),
                    backend_port_be: u16::from_ne_bytes(80u16.to_be_bytes()),
                };
                flows.get(&key, 0).ok()
            }
        }
    }

    fn flow(&self) -> Option<BackendFlow> {
        let flows: HashMap<_, BackendFlowKey, BackendFlow> =
            HashMap::try_from(self.ebpf.map("BACKEND_FLOWS").unwrap()).unwrap();
        let key = BackendFlowKey {
            client_addr_be: u32::from_ne_bytes(CLIENT),
            backend_addr_be: u32::from_ne_bytes(BACKEND),
            client_port_be: u16::from_ne_bytes(CLIENT_PORT.to_be_bytes()),
            backend_port_be: u16::from_ne_bytes(80u16.to_be_bytes()),
        };
        flows.get(&key, 0).ok()
    }
}

/// Runs `f` as root in a fresh namespace, or prints why it skipped.
fn privileged(test: &str, f: impl FnOnce() + Send) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root to load eBPF programs");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = Command::new("ip")
        .args(["netns", "del", &*NS])
        .stderr(Stdio::null())
        .status();
    for args in [
        &["netns", "add", &*NS][..],
        &["-n", &*NS, "link", "set", "lo", "up"],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    let result = netns::run_in(&NS, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    });
    let _ = Command::new("ip").args(["netns", "del", &*NS]).status();
    if let Err(panic) = result.expect("enter namespace") {
        std::panic::resume_unwind(panic);
    }
}

fn parse(frame: &[u8]) -> TcpFrameRepr<'_> {
    TcpFrameRepr::parse(frame, Checksums::Verify).expect("valid frame with valid checksums")
}

/// The stamp the module gives the test flow (`baton_common::stamp`): the agent stamps by
/// default.
fn lab_stamp() -> u16 {
    stamp::stamp(
        &SipKey::from_bytes(KEY),
        &StampedFlow {
            client_addr: CLIENT,
            client_port: CLIENT_PORT,
            vip_addr: VIP,
            vip_port: lab::HTTP_PORT,
            backend_addr: BACKEND,
            backend_port: 80,
        },
    )
}

/// The window field the client's ACK announces if the egress completes the server's
/// handshake: the test SYN''s 64,240 bytes at the client's shift 7.
const CLIENT_WINDOW: u16 = 64240 >> 7;

/// The translation the test SYN' and SYN/ACK' make: the front-end's and the back-end's
/// terms above, timestamps and SACK on, and the flow's stamp.
fn lab_translation() -> Translation {
    lab_translation_unstamped().with_stamp(lab_stamp())
}

fn lab_translation_unstamped() -> Translation {
    Translation::new(
        SynAckTerms {
            isn: ISN_F,
            tsval: TSV_F,
            window_shift: WS_F,
        },
        SynAckTerms {
            isn: ISN_B,
            tsval: TSV_B,
            window_shift: WS_B,
        },
        Translation::TIMESTAMPS | Translation::SACK,
    )
    .with_client_window(CLIENT_WINDOW)
}

#[test]
fn handoff_syn_is_verified_recorded_and_blanked() {
    for family in FAMILIES {
        privileged("handoff SYN", || handoff_syn(family));
    }
}

fn handoff_syn(family: Family) {
    {
        let module = Module::load();
        let option = family.option(&SipKey::from_bytes(KEY), BACKEND);
        let input = family.frame(&syn_prime(option));
        let (verdict, out) = module.run("backend_ingress", &input);
        assert_eq!(verdict, TC_ACT_PIPE, "{family:?}");
        assert_eq!(module.stat(stat::IN_SYN_ACCEPTED), 1, "{family:?}");
        // Only the option changed (to NOPs), and the checksum still verifies.
        let tcp_options = 14 + family.ip_len() + 20;
        assert_eq!(&out[tcp_options + 20..tcp_options + 40], &[1u8; 20]);
        assert_eq!(&out[..tcp_options - 4], &input[..tcp_options - 4]);
        let parsed = family.parse(&out);
        assert_eq!(parsed.tcp.timestamps.unwrap().tsval, 5555);
        assert_eq!(parsed.tcp.window_scale, Some(7));
        let other = match family {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        assert_eq!(
            module.flow_of(other),
            None,
            "the other family's table untouched"
        );
        let flow = module.flow_of(family).expect("flow recorded");
        assert_eq!(
            flow.translation,
            handoff_option()
                .translation()
                .with_client_window(CLIENT_WINDOW)
        );
        assert!(flow.translation.is_awaiting_syn_ack());
    }
}

#[test]
fn forged_or_replayed_handoff_syns_are_dropped_and_counted() {
    for family in FAMILIES {
        privileged("forged SYN", || forged_syns(family));
    }
}

fn forged_syns(family: Family) {
    {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let mut forged = family.option(&key, BACKEND);
        forged[19] ^= 1;
        let (verdict, _) = module.run("backend_ingress", &family.frame(&syn_prime(forged)));
        assert_eq!(verdict, TC_ACT_SHOT, "{family:?}");
        // Signed for another back-end: the tag binds the destination.
        let elsewhere = family.option(&key, lab::backend_addr(2).octets());
        let (verdict, _) = module.run("backend_ingress", &family.frame(&syn_prime(elsewhere)));
        assert_eq!(verdict, TC_ACT_SHOT);
        // Signed with another key.
        let other_key = family.option(&SipKey::from_bytes([7; 16]), BACKEND);
        let (verdict, _) = module.run("backend_ingress", &family.frame(&syn_prime(other_key)));
        assert_eq!(verdict, TC_ACT_SHOT);
        // Signed over the other family's binding (the IPv4 tag on an IPv6 SYN', and the
        // reverse): each family's tag has its own message.
        let other = match family {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        let crossed = family.option_as(other, &key, BACKEND);
        let (verdict, _) = module.run("backend_ingress", &family.frame(&syn_prime(crossed)));
        assert_eq!(
            verdict, TC_ACT_SHOT,
            "a tag over the other family's binding"
        );
        assert_eq!(module.stat(stat::IN_SYN_BAD_TAG), 4);
        assert_eq!(
            module.flow_of(family),
            None,
            "nothing recorded for a forged SYN"
        );
        // A truncated option (length byte says 20, area ends early) is malformed.
        let mut truncated = syn_prime(family.option(&key, BACKEND));
        truncated.options.truncate(36);
        let (verdict, _) = module.run("backend_ingress", &family.frame(&truncated));
        assert_eq!(
            verdict, TC_ACT_PIPE,
            "an options area the kernel will judge itself"
        );
        assert_eq!(module.stat(stat::IN_MALFORMED), 1);
        // A plain SYN (a direct client) passes untouched.
        let mut plain = syn_prime([1; 20]);
        plain.options.truncate(20);
        let input = family.frame(&plain);
        let (verdict, out) = module.run("backend_ingress", &input);
        assert_eq!((verdict, out), (TC_ACT_PIPE, input));
        assert_eq!(module.stat(stat::IN_SYN_PLAIN), 1);
    }
}

#[test]
fn a_whole_connection_is_translated_as_the_host_functions_say() {
    for family in FAMILIES {
        privileged("translation", || whole_connection(family));
    }
}

fn whole_connection(family: Family) {
    {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let (verdict, _) = module.run(
            "backend_ingress",
            &family.frame(&syn_prime(family.option(&key, BACKEND))),
        );
        assert_eq!(verdict, TC_ACT_PIPE);

        // B's SYN/ACK': to the front-end, in the front-end's terms.
        let syn_ack = syn_ack_acking(CLIENT_ISN + 1);
        let (verdict, out) = module.run("backend_egress", &family.frame(&syn_ack));
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(&out[..6], &FE_MAC, "the SYN/ACK' goes to the front-end");
        let p = family.parse(&out);
        assert_eq!(p.src, family.vip());
        assert_eq!(p.tcp.seq_number, ISN_F);
        assert_eq!(p.tcp.timestamps.unwrap().tsval, TSV_F);
        assert_eq!(p.tcp.window_len, 65160, "a SYN's window is never scaled");
        let expected = family.translation();
        assert_eq!(module.flow_of(family).unwrap().translation, expected);
        assert_eq!(module.stat(stat::OUT_SYN_ACK_TO_FRONTEND), 1);

        // A client segment: ack, TSecr and SACK edges into B's terms (crossing 2^32).
        let mut options = ts_option(77, TSV_F.wrapping_add(3));
        options.extend_from_slice(&[1, 1, 5, 10]);
        options.extend_from_slice(&ISN_F.wrapping_add(301).to_be_bytes());
        options.extend_from_slice(&ISN_F.wrapping_add(401).to_be_bytes());
        let client_ack = Frame {
            src_mac: FE_MAC,
            dst_mac: BE_MAC,
            src: (CLIENT, CLIENT_PORT),
            dst: (BACKEND, 80),
            seq: CLIENT_ISN + 1,
            ack: ISN_F.wrapping_add(201),
            flags: 0x10,
            window: 502,
            options,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        };
        let (verdict, out) = module.run("backend_ingress", &family.frame(&client_ack));
        assert_eq!(verdict, TC_ACT_PIPE);
        let p = family.parse(&out);
        assert_eq!(
            p.tcp.ack_number,
            expected.ack_to_backend(ISN_F.wrapping_add(201))
        );
        assert_eq!(p.tcp.ack_number, ISN_B + 201);
        assert_eq!(p.tcp.timestamps.unwrap().tsecr, TSV_B + 3);
        let sack = p.tcp.sack_blocks[0].unwrap();
        assert_eq!((sack.left, sack.right), (ISN_B + 301, ISN_B + 401));
        assert_eq!(p.tcp.payload, b"GET / HTTP/1.1\r\n\r\n");

        // B's response: source VIP, seq, TSval and window into the client's terms, and
        // (the first data) a copy to the front-end.
        let response = server_segment(
            ISN_B + 1,
            CLIENT_ISN + 19,
            0x18,
            1000,
            ts_option(TSV_B + 10, 77),
            vec![b'x'; 100],
        );
        let (verdict, out) = module.run("backend_egress", &family.frame(&response));
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(
            &out[..6],
            &ROUTER_MAC,
            "the original goes to the client's next hop"
        );
        let p = family.parse(&out);
        assert_eq!(p.src, family.vip());
        assert_eq!(p.tcp.src_port, 80);
        assert_eq!(p.tcp.seq_number, expected.seq_to_client(ISN_B + 1));
        assert_eq!(p.tcp.seq_number, ISN_F.wrapping_add(1));
        assert_eq!(p.tcp.window_len, expected.window_to_client(1000));
        assert_eq!(p.tcp.window_len, 4000);
        // The TSval in the client's clock, stamped: what a front-end that has no entry
        // for the flow forwards by, once the client echoes it.
        let tsval = p.tcp.timestamps.unwrap().tsval;
        assert_eq!(tsval, expected.tsval_to_client(TSV_B + 10));
        if family == Family::V6 {
            assert_eq!(tsval, TSV_F + 10, "no stamp over IPv6");
        }
        assert!(tsval.wrapping_sub(TSV_F + 10) < stamp::RESOLUTION);
        if family == Family::V4 {
            assert_eq!(stamp::stamp_of(tsval), Some(lab_stamp()));
        }
        let named = StampedBackend {
            addr_be: u32::from_ne_bytes(BACKEND),
            port_be: 80u16.to_be(),
            mac: BE_MAC,
            _pad: [0; 4],
            flags: StampedBackend::USABLE,
        };
        assert!(
            family == Family::V6
                || stamp::judge_stamp(
                    &SipKey::from_bytes(KEY),
                    tsval,
                    (CLIENT, CLIENT_PORT),
                    (VIP, lab::HTTP_PORT),
                    Some(&named),
                ) == stamp::StampVerdict::Forward
        );
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 1);
        assert!(
            module.flow_of(family).unwrap().is_confirmed(),
            "the first answer confirms the handoff"
        );

        // Once confirmed, only a RST still goes to the front-end: not more data, and
        // not the FIN (the front-end tracks the close from the client's side).
        let (_, _) = module.run("backend_egress", &family.frame(&response));
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 1);
        let fin = Frame {
            flags: 0x11,
            payload: vec![],
            ..response.clone()
        };
        let (verdict, out) = module.run("backend_egress", &family.frame(&fin));
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(&out[..6], &ROUTER_MAC, "the FIN goes to the client");
        assert_eq!(family.parse(&out).tcp.seq_number, ISN_F.wrapping_add(1));
        assert_eq!(module.stat(stat::OUT_CONTROL_TO_FRONTEND), 0, "no FIN copy");
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 1);
        let rst = Frame {
            flags: 0x14,
            payload: vec![],
            ..response
        };
        let (verdict, out) = module.run("backend_egress", &family.frame(&rst));
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(&out[..6], &ROUTER_MAC, "the original goes to the client");
        assert_eq!(module.stat(stat::OUT_CONTROL_TO_FRONTEND), 1, "a RST copy");
        assert_eq!(module.stat(stat::OUT_TRANSLATED), 4);
        assert_eq!(module.stat(stat::REWRITE_FAILED), 0);
    }
}

/// The SYN' path runs in `backend_syn`, which the ingress reaches by tail call through
/// its program array: there an option this version refuses is dropped and counted as
/// before. With the slot empty (which the agent never lets the attached ingress see) a
/// SYN passes untouched, unverified and unrecorded (`in_syn_unchecked`), and the
/// per-packet translation, which never takes the tail call, goes on as ever.
#[test]
fn the_syn_prime_path_is_tail_called_and_an_empty_slot_passes_syns_unchecked() {
    privileged("tail call", || {
        let mut module = Module::load();
        let key = SipKey::from_bytes(KEY);
        // The handoff option's kind with a length of 16: a malformed option, dropped.
        let mut short = [1u8; 20];
        short[..16].copy_from_slice(&handoff_option().encode(&key, &binding(BACKEND))[..16]);
        short[1] = 16;
        let (verdict, _) = module.run("backend_ingress", &syn_prime(short).bytes());
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::IN_SYN_BAD_OPTION), 1);
        assert_eq!(module.flow(), None);
        // Run on its own, the SYN' program judges only SYNs to the service port.
        let not_syn = Frame {
            flags: 0x10,
            ..syn_prime([1; 20])
        }
        .bytes();
        assert_eq!(module.run("backend_syn", &not_syn), (TC_ACT_PIPE, not_syn));

        let mut slots: ProgramArray<_> =
            ProgramArray::try_from(module.ebpf.map_mut("BACKEND_INGRESS_PROGRAMS").unwrap())
                .unwrap();
        slots.clear_index(&ingress_program::SYN).unwrap();
        let syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        assert_eq!(
            module.run("backend_ingress", &syn),
            (TC_ACT_PIPE, syn.clone())
        );
        assert_eq!(module.stat(stat::IN_SYN_UNCHECKED), 1);
        assert_eq!(module.stat(stat::IN_SYN_ACCEPTED), 0);
        assert_eq!(
            module.flow(),
            None,
            "nothing recorded for an unverified SYN'"
        );

        // The SYN' program records the flow; the client's segments are then translated
        // by the ingress alone.
        assert_eq!(module.run("backend_syn", &syn).0, TC_ACT_PIPE);
        assert_eq!(module.stat(stat::IN_SYN_ACCEPTED), 1);
        let syn_ack = plain_syn_ack();
        assert_eq!(
            module.run("backend_egress", &syn_ack.bytes()).0,
            TC_ACT_PIPE
        );
        let ack = Frame {
            src_mac: FE_MAC,
            dst_mac: BE_MAC,
            src: (CLIENT, CLIENT_PORT),
            dst: (BACKEND, 80),
            seq: CLIENT_ISN + 1,
            ack: ISN_F.wrapping_add(1),
            flags: 0x10,
            window: 502,
            options: vec![],
            payload: vec![],
        };
        let (verdict, out) = module.run("backend_ingress", &ack.bytes());
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(parse(&out).tcp.ack_number, ISN_B + 1);
        assert_eq!(module.stat(stat::IN_TRANSLATED), 1);
        assert_eq!(module.stat(stat::IN_SYN_UNCHECKED), 1);
    });
}

/// The front-end resends its SYN' when the SYN/ACK' is slow, and the first may arrive
/// after the connection is established: the entry must stay complete, or every later
/// segment of the server's would be dropped as if the SYN/ACK' were still to come (a
/// connection in the 10% loss test once hung that way). A SYN' of a new connection on
/// the same ports still replaces it.
#[test]
fn a_repeated_syn_prime_keeps_the_connection_and_a_new_one_replaces_it() {
    privileged("repeated SYN'", || {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let syn_ack = plain_syn_ack();
        assert_eq!(
            module.run("backend_egress", &syn_ack.bytes()).0,
            TC_ACT_PIPE
        );
        let complete = module.flow().unwrap();
        assert!(!complete.translation.is_awaiting_syn_ack());

        // The same SYN' again: passed up (the kernel answers it), the entry untouched.
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        assert_eq!(module.flow().unwrap(), complete, "the entry was reset");
        // The server's answer to it (an ACK from an established socket) and its data
        // are translated and sent, not dropped as before the SYN/ACK'.
        let data = server_segment(
            ISN_B + 1,
            CLIENT_ISN + 19,
            0x18,
            1000,
            vec![],
            vec![b'x'; 100],
        );
        let (verdict, out) = module.run("backend_egress", &data.bytes());
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(parse(&out).tcp.seq_number, ISN_F.wrapping_add(1));
        assert_eq!(module.stat(stat::OUT_BEFORE_SYN_ACK), 0);

        // A new connection on the same ports (another client ISN): a fresh entry.
        let other_isn = CLIENT_ISN.wrapping_add(1_000_000);
        let other = HandoffBinding {
            client_isn: other_isn,
            ..binding(BACKEND)
        };
        let mut new_syn = syn_prime(handoff_option().encode(&key, &other));
        new_syn.seq = other_isn;
        assert_eq!(
            module.run("backend_ingress", &new_syn.bytes()).0,
            TC_ACT_PIPE
        );
        let fresh = module.flow().unwrap();
        assert!(fresh.translation.is_awaiting_syn_ack(), "{fresh:?}");
        assert_eq!(fresh.client_isn, other_isn);
    });
}

/// A client that reaches the back-end's own address from the ports of an earlier
/// handed-off connection (whose entry outlives it, with the server's TIME-WAIT) gets the
/// server's SYN/ACK itself, untouched: taken for the old connection's, it went to the
/// front-end and the client never connected.
#[test]
fn a_syn_ack_for_another_connection_on_the_ports_removes_the_stale_entry() {
    privileged("stale entry", || {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let syn_ack_options = vec![2, 4, 0x05, 0xb4, 1, 3, 3, WS_B];
        let syn_ack = server_segment(
            ISN_B,
            CLIENT_ISN + 1,
            0x12,
            65160,
            syn_ack_options.clone(),
            vec![],
        );
        assert_eq!(
            module.run("backend_egress", &syn_ack.bytes()).0,
            TC_ACT_PIPE
        );
        assert!(module.flow().is_some());
        // The SYN/ACK' again (the server retransmits it): still the handed-off one.
        let (_, out) = module.run("backend_egress", &syn_ack.bytes());
        assert_eq!(parse(&out).ipv4.src_addr, Ipv4Addr::from(VIP), "translated");
        assert_eq!(module.stat(stat::OUT_STALE_FLOW_REMOVED), 0);

        // The client's own SYN to the back-end's address: passed as it is.
        let direct_isn = CLIENT_ISN.wrapping_add(7_777_777);
        let direct_syn = Frame {
            src_mac: ROUTER_MAC,
            seq: direct_isn,
            options: vec![2, 4, 0x05, 0xb4],
            ..syn_prime([1; 20])
        };
        assert_eq!(
            module.run("backend_ingress", &direct_syn.bytes()).0,
            TC_ACT_PIPE
        );
        assert_eq!(module.stat(stat::IN_SYN_PLAIN), 1);
        // The server's answer to it leaves untouched, for the client, and the old entry
        // is gone.
        let answer = server_segment(
            ISN_B.wrapping_add(99),
            direct_isn.wrapping_add(1),
            0x12,
            65160,
            syn_ack_options,
            vec![],
        )
        .bytes();
        let (verdict, out) = module.run("backend_egress", &answer);
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(out, answer, "the direct connection's SYN/ACK was rewritten");
        assert_eq!(module.stat(stat::OUT_STALE_FLOW_REMOVED), 1);
        assert!(module.flow().is_none(), "the stale entry stayed");
        assert_eq!(module.stat(stat::OUT_SYN_ACK_TO_FRONTEND), 2);
        // The rest of the direct connection is not the module's.
        let data = server_segment(
            ISN_B.wrapping_add(100),
            direct_isn.wrapping_add(1),
            0x18,
            512,
            vec![],
            vec![b'y'; 10],
        )
        .bytes();
        assert_eq!(module.run("backend_egress", &data), (TC_ACT_PIPE, data));
        assert_eq!(module.stat(stat::OUT_NOT_HANDED_OFF), 1);
    });
}

/// Before the server's SYN/ACK' has left, a client segment has nothing to be translated
/// with and is dropped (the front-end sends it again), but a RST without ACK has
/// nothing to translate: the front-end's reset of a SYN' it gave up, or whose handoff in
/// the kernel its core did not adopt, sent as soon as it knows and often before the
/// server has answered. It passes untouched (`in_reset_before_syn_ack`), for the
/// server's TCP to judge by its sequence number; a RST with ACK is dropped as before.
#[test]
fn before_the_syn_ack_only_a_bare_reset_passes() {
    for family in FAMILIES {
        privileged("reset before the SYN/ACK'", || reset_before_syn_ack(family));
    }
}

fn reset_before_syn_ack(family: Family) {
    {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let syn = family.frame(&syn_prime(family.option(&key, BACKEND)));
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        assert!(
            module
                .flow_of(family)
                .unwrap()
                .translation
                .is_awaiting_syn_ack()
        );
        let segment = |flags, ack| Frame {
            src_mac: FE_MAC,
            dst_mac: BE_MAC,
            src: (CLIENT, CLIENT_PORT),
            dst: (BACKEND, 80),
            seq: CLIENT_ISN + 1,
            ack,
            flags,
            window: 0,
            options: vec![],
            payload: vec![],
        };
        for (flags, ack, verdict) in [
            (0x10, ISN_F.wrapping_add(1), TC_ACT_SHOT),
            (0x14, ISN_F.wrapping_add(1), TC_ACT_SHOT),
            (0x04, 0, TC_ACT_PIPE),
        ] {
            let frame = family.frame(&segment(flags, ack));
            let (got, out) = module.run("backend_ingress", &frame);
            assert_eq!(got, verdict, "flags {flags:#x}");
            if verdict == TC_ACT_PIPE {
                assert_eq!(out, frame, "untouched");
            }
        }
        assert_eq!(
            (
                module.stat(stat::IN_BEFORE_SYN_ACK),
                module.stat(stat::IN_RESET_BEFORE_SYN_ACK)
            ),
            (2, 1)
        );
    }
}

/// IPv6 extension headers the walk crosses (destination options) do not hide a
/// handed-off flow's segment, which is translated; the first fragment of one is dropped
/// and counted (`ipv6_fragment_fate`) on either side, since nothing translates a
/// fragment; a fragment of no handed-off flow, and a header the walk refuses (AH), pass
/// untouched and uncounted.
#[test]
fn ipv6_extension_headers_are_crossed_and_fragments_of_handed_off_flows_dropped() {
    privileged("IPv6 extension headers", || {
        let module = Module::load();
        let family = Family::V6;
        let key = SipKey::from_bytes(KEY);
        let syn = family.frame(&syn_prime(family.option(&key, BACKEND)));
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let syn_ack = family.frame(&syn_ack_acking(CLIENT_ISN + 1));
        assert_eq!(module.run("backend_egress", &syn_ack).0, TC_ACT_PIPE);
        let client_ack = Frame {
            src_mac: FE_MAC,
            dst_mac: BE_MAC,
            src: (CLIENT, CLIENT_PORT),
            dst: (BACKEND, 80),
            seq: CLIENT_ISN + 1,
            ack: ISN_F.wrapping_add(1),
            flags: 0x10,
            window: 502,
            options: vec![],
            payload: vec![],
        };
        // Destination options (8 bytes: Next Header TCP, length 0, a PadN of 4).
        let dest_opts: &[u8] = &[6, 0, 1, 4, 0, 0, 0, 0];
        let frame = family.frame_with(&client_ack, Some((60, dest_opts)));
        let (verdict, out) = module.run("backend_ingress", &frame);
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(module.stat(stat::IN_TRANSLATED), 1);
        assert_eq!(family.parse(&out).tcp.ack_number, ISN_B + 1);
        // A first fragment (offset 0, M set) of the flow, both ways: dropped, counted.
        let fragment: &[u8] = &[6, 0, 0, 1, 0, 0, 0, 7];
        let frame = family.frame_with(&client_ack, Some((44, fragment)));
        assert_eq!(module.run("backend_ingress", &frame).0, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::IN_IPV6_FRAGMENT), 1);
        let answer = server_segment(ISN_B + 1, CLIENT_ISN + 1, 0x10, 100, vec![], vec![]);
        let frame = family.frame_with(&answer, Some((44, fragment)));
        assert_eq!(module.run("backend_egress", &frame).0, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::OUT_IPV6_FRAGMENT), 1);
        // Of another client port: not a handed-off flow, untouched and uncounted; so is
        // a later fragment of the flow and an AH (neither names its ports).
        let stranger = Frame {
            src: (CLIENT, CLIENT_PORT + 1),
            ..client_ack.clone()
        };
        let later: &[u8] = &[6, 0, 0, 8, 0, 0, 0, 7];
        let ah: &[u8] = &[6, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        for frame in [
            family.frame_with(&stranger, Some((44, fragment))),
            family.frame_with(&client_ack, Some((44, later))),
            family.frame_with(&client_ack, Some((51, ah))),
        ] {
            assert_eq!(
                module.run("backend_ingress", &frame),
                (TC_ACT_PIPE, frame.clone())
            );
        }
        assert_eq!(module.stat(stat::IN_IPV6_FRAGMENT), 1);
        assert_eq!(module.stat(stat::IN_NOT_HANDED_OFF), 0);
    });
}

/// `frame` with its IPv4 TOS byte set to `tos` and the header checksum made right again.
fn with_tos(mut frame: Vec<u8>, tos: u8) -> Vec<u8> {
    frame[15] = tos;
    frame[24..26].copy_from_slice(&[0, 0]);
    let check = !baton_common::translate::ones_complement_sum(&frame[14..34]);
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    frame
}

/// ECN through the module: the SYN''s ECE and CWR reach the server, the SYN/ACK''s ECE
/// the front-end, and no segment's ECN field is rewritten either way (the checksums
/// still verify). Where the server refused the ECN the front-end granted the client
/// (a SYN/ACK' without ECE), a client segment marked CE is dropped and counted, so that
/// the client sees a loss instead of a mark nobody answers; ECT segments pass.
#[test]
fn ecn_flags_and_fields_pass_and_ce_is_dropped_where_the_server_refused_ecn() {
    privileged("ECN", || {
        let key = SipKey::from_bytes(KEY);
        let syn_ack_options = || {
            let mut o = vec![2, 4, 0x05, 0xb4, 4, 2];
            o.extend(ts_option(TSV_B, 5555).into_iter().skip(2));
            o.extend_from_slice(&[1, 3, 3, WS_B]);
            o
        };
        let client_data = |tos: u8| {
            let frame = Frame {
                src_mac: FE_MAC,
                dst_mac: BE_MAC,
                src: (CLIENT, CLIENT_PORT),
                dst: (BACKEND, 80),
                seq: CLIENT_ISN + 1,
                ack: ISN_F.wrapping_add(1),
                flags: 0x18,
                window: 502,
                options: ts_option(77, TSV_F),
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            };
            with_tos(frame.bytes(), tos)
        };
        for server_agrees in [true, false] {
            let module = Module::load();
            let mut syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND)));
            syn.flags = 0x02 | 0x40 | 0x80;
            let (verdict, out) = module.run("backend_ingress", &syn.bytes());
            assert_eq!(verdict, TC_ACT_PIPE);
            assert_eq!(out[14 + 20 + 13], 0xc2, "SYN, ECE and CWR reach the server");
            assert_eq!(module.flow().unwrap().state, BackendFlow::ECN_GRANTED);

            let flags = if server_agrees { 0x52 } else { 0x12 };
            let syn_ack = server_segment(
                ISN_B,
                CLIENT_ISN + 1,
                flags,
                65160,
                syn_ack_options(),
                vec![],
            );
            let (verdict, out) = module.run("backend_egress", &syn_ack.bytes());
            assert_eq!(verdict, TC_ACT_PIPE);
            assert_eq!(out[14 + 20 + 13], flags, "the server's answer, untouched");
            let refused = module.flow().unwrap().state & BackendFlow::ECN_REFUSED != 0;
            assert_eq!(refused, !server_agrees);

            // ECT(0), ECT(1) and (where the server answers marks) CE pass unchanged.
            for tos in [0b10, 0b01, 0xb9] {
                let (verdict, out) = module.run("backend_ingress", &client_data(tos));
                assert_eq!(verdict, TC_ACT_PIPE, "{tos:#x}");
                assert_eq!(out[15], tos, "the ECN field is never rewritten");
                parse(&out);
            }
            let (verdict, out) = module.run("backend_ingress", &client_data(0b11));
            if server_agrees {
                assert_eq!(verdict, TC_ACT_PIPE);
                assert_eq!(out[15], 0b11);
                assert_eq!(module.stat(stat::IN_CE_DROPPED), 0);
            } else {
                assert_eq!(verdict, TC_ACT_SHOT, "a mark the server would ignore");
                assert_eq!(module.stat(stat::IN_CE_DROPPED), 1);
            }

            // The server's own ECT(0) data leaves with its field as it was.
            let response = server_segment(
                ISN_B + 1,
                CLIENT_ISN + 19,
                0x18,
                1000,
                ts_option(TSV_B + 10, 77),
                vec![b'x'; 100],
            );
            let (verdict, out) = module.run("backend_egress", &with_tos(response.bytes(), 0b10));
            assert_eq!(verdict, TC_ACT_PIPE);
            assert_eq!(out[15], 0b10);
            assert_eq!(parse(&out).ipv4.src_addr, Ipv4Addr::from(VIP));
            assert_eq!(module.stat(stat::REWRITE_FAILED), 0);
        }
    });
}

/// The request a one-turn SYN' carries.
const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: be\r\nConnection: close\r\n\r\n";

/// The SYN/ACK' of the server with timestamps, acknowledging `ack`.
/// The server's SYN/ACK' to the test SYN' with MSS and window scale only (no
/// timestamps, no SACK), acknowledging the SYN alone.
fn plain_syn_ack() -> Frame {
    server_segment(
        ISN_B,
        CLIENT_ISN + 1,
        0x12,
        65160,
        vec![2, 4, 0x05, 0xb4, 1, 3, 3, WS_B],
        vec![],
    )
}

/// The server's SYN/ACK' with MSS, SACK-permitted, timestamps and window scale,
/// acknowledging `ack` (`CLIENT_ISN + 1` for the SYN alone).
fn syn_ack_acking(ack: u32) -> Frame {
    let mut options = vec![2, 4, 0x05, 0xb4, 4, 2];
    options.extend(ts_option(TSV_B, 5555).into_iter().skip(2));
    options.extend_from_slice(&[1, 3, 3, WS_B]);
    server_segment(ISN_B, ack, 0x12, 65160, options, vec![])
}

/// A one-turn handoff's SYN' (the request as payload, docs/design.md, "The one-turn
/// handoff") passes with its data, the option blanked; a SYN with data and no option
/// that verifies is dropped whatever else would have passed it (no option, a bad tag,
/// an options area left to the kernel, the SYN' program missing), so that fast open's
/// no-cookie mode never answers a spoofed source.
#[test]
fn syn_data_passes_only_with_a_verified_handoff_option() {
    privileged("SYN data", || {
        let mut module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let with_data = |option: [u8; 20]| Frame {
            payload: REQUEST.to_vec(),
            ..syn_prime(option)
        };
        let input = with_data(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        let (verdict, out) = module.run("backend_ingress", &input);
        assert_eq!(verdict, TC_ACT_PIPE);
        let tcp_options = 14 + 20 + 20;
        assert_eq!(&out[tcp_options + 20..tcp_options + 40], &[1u8; 20]);
        let parsed = parse(&out);
        assert_eq!(
            parsed.tcp.payload, REQUEST,
            "the request reaches the server"
        );
        assert_eq!(module.stat(stat::IN_SYN_ACCEPTED), 1);
        assert_eq!(module.stat(stat::IN_SYN_DATA_ACCEPTED), 1);
        let flow = module.flow().expect("flow recorded");
        assert_eq!(flow.syn_data_len(), REQUEST.len() as u32);
        assert_eq!(flow.state & 0xffff, 0);

        // A plain SYN with data (a TFO client, or a spoofed source): dropped.
        let mut plain = with_data([1; 20]);
        plain.options.truncate(20);
        assert_eq!(module.run("backend_ingress", &plain.bytes()).0, TC_ACT_SHOT);
        // A forged tag with data: dropped as a bad tag.
        let mut forged = handoff_option().encode(&key, &binding(BACKEND));
        forged[19] ^= 1;
        assert_eq!(
            module.run("backend_ingress", &with_data(forged).bytes()).0,
            TC_ACT_SHOT
        );
        assert_eq!(module.stat(stat::IN_SYN_BAD_TAG), 1);
        // A truncated option, which alone would be the kernel's to judge.
        let mut truncated = with_data(handoff_option().encode(&key, &binding(BACKEND)));
        truncated.options.truncate(36);
        assert_eq!(
            module.run("backend_ingress", &truncated.bytes()).0,
            TC_ACT_SHOT
        );
        assert_eq!(module.stat(stat::IN_SYN_DATA_DROPPED), 2);
        assert_eq!(module.stat(stat::IN_SYN_PLAIN), 0);
        assert_eq!(module.stat(stat::IN_MALFORMED), 0);
        // The same SYN without data still passes untouched (a direct client).
        let mut plain = syn_prime([1; 20]);
        plain.options.truncate(20);
        let input = plain.bytes();
        assert_eq!(module.run("backend_ingress", &input), (TC_ACT_PIPE, input));

        // With the SYN' program missing, data on a SYN is dropped all the same.
        let mut slots: ProgramArray<_> =
            ProgramArray::try_from(module.ebpf.map_mut("BACKEND_INGRESS_PROGRAMS").unwrap())
                .unwrap();
        slots.clear_index(&ingress_program::SYN).unwrap();
        let input = with_data(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        assert_eq!(module.run("backend_ingress", &input).0, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::IN_SYN_DATA_DROPPED), 3);
        assert_eq!(module.stat(stat::IN_SYN_UNCHECKED), 0);
    });
}

/// The server took the request with the SYN' (fast open): its SYN/ACK' acknowledges
/// `client_isn + 1 + len`, has its translation recorded and is dropped; every
/// retransmission goes to the front-end, which answers with the client's ACK'; the
/// answer and the FIN are translated for the client and not copied to the front-end
/// (which learns of the handoff from the client's ACK), a RST still is.
/// A SYN/ACK' acknowledging the SYN alone (fast open refused) goes to the front-end, which
/// then sends the request (the fallback).
#[test]
fn a_syn_ack_acknowledging_the_request_stays_on_the_backend_and_one_acking_the_syn_goes_on() {
    privileged("one-turn SYN/ACK'", || {
        let key = SipKey::from_bytes(KEY);
        let syn = Frame {
            payload: REQUEST.to_vec(),
            ..syn_prime(handoff_option().encode(&key, &binding(BACKEND)))
        }
        .bytes();
        let after_request = CLIENT_ISN + 1 + REQUEST.len() as u32;
        let expected = lab_translation();

        let module = Module::load();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let (verdict, ack) = module.run("backend_egress", &syn_ack_acking(after_request).bytes());
        assert_eq!(verdict, TC_ACT_SHOT, "absorbed");
        assert_eq!(module.stat(stat::OUT_SYN_ACK_ABSORBED), 1);
        assert_eq!(module.stat(stat::OUT_SYN_ACK_TO_FRONTEND), 0);
        let flow = module.flow().unwrap();
        assert_eq!(flow.translation, expected);
        assert_eq!(
            flow.state & 0xffff,
            BackendFlow::SYN_ACK_ABSORBED
                | BackendFlow::CONFIRMED
                | BackendFlow::HANDSHAKE_COMPLETED
        );
        // Of the absorbed SYN/ACK' the egress made the client's ACK, in the client's
        // terms, and fed a clone to the ingress (what the run returns is what was cloned):
        // the ingress takes it to the server's, which completes its handshake.
        assert_eq!(module.stat(stat::OUT_HANDSHAKE_COMPLETED), 1);
        assert_eq!(&ack[..12], &[BE_MAC, ROUTER_MAC].concat(), "to this host");
        let p = parse(&ack);
        assert_eq!(
            (
                p.ipv4.src_addr,
                p.tcp.src_port,
                p.ipv4.dst_addr,
                p.tcp.dst_port
            ),
            (
                Ipv4Addr::from(CLIENT),
                CLIENT_PORT,
                Ipv4Addr::from(BACKEND),
                80
            )
        );
        assert_eq!(
            (p.tcp.seq_number, p.tcp.ack_number, p.tcp.window_len),
            (after_request, ISN_F.wrapping_add(1), CLIENT_WINDOW)
        );
        assert_eq!(p.tcp.flags, TcpFlags::ACK);
        let ts = p.tcp.timestamps.unwrap();
        assert_eq!(
            (ts.tsval, ts.tsecr),
            (5555, TSV_F),
            "the SYN''s, the SYN/ACK''s"
        );
        let (verdict, ack) = module.run("backend_ingress", &ack);
        assert_eq!(verdict, TC_ACT_PIPE);
        let p = parse(&ack);
        assert_eq!(p.tcp.ack_number, ISN_B + 1, "the server's SYN acknowledged");
        assert_eq!(p.tcp.timestamps.unwrap().tsecr, TSV_B);
        // The front-end sends the SYN' again (the client resent its request): answered
        // here with the SYN/ACK' the server in SYN-RECV would have repeated, the proof
        // that this back-end has the request; the server, established, never sees it.
        let (verdict, proof) = module.run("backend_ingress", &syn);
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::IN_SYN_REPEAT_ANSWERED), 1);
        assert_eq!(&proof[..12], &[FE_MAC, BE_MAC].concat(), "to the front-end");
        let p = parse(&proof);
        assert_eq!(
            (
                p.ipv4.src_addr,
                p.tcp.src_port,
                p.ipv4.dst_addr,
                p.tcp.dst_port
            ),
            (Ipv4Addr::from(VIP), 80, Ipv4Addr::from(CLIENT), CLIENT_PORT)
        );
        assert_eq!(
            (p.tcp.seq_number, p.tcp.ack_number, p.tcp.flags),
            (ISN_F, after_request, TcpFlags::SYN | TcpFlags::ACK)
        );
        let ts = p.tcp.timestamps.unwrap();
        assert_eq!(
            (ts.tsval, ts.tsecr),
            (TSV_F, 5555),
            "the echo names this back-end"
        );
        assert!(p.tcp.payload.is_empty(), "the request stays here");
        assert!(
            p.tcp.unknown_options.find(254).is_none(),
            "the handoff option blanked"
        );
        assert_eq!(module.flow().unwrap(), flow, "the entry as it was");
        // Retransmitted (the client resent its request, the front-end its SYN', or the
        // server's timer): every repeat goes to the front-end, translated, the proof the
        // server has the request and its call for the client's ACK, which only the
        // front-end can send; the translation stays as it was.
        for repeat in 1..=3 {
            let (verdict, out) =
                module.run("backend_egress", &syn_ack_acking(after_request).bytes());
            assert_eq!(verdict, TC_ACT_PIPE, "repeat {repeat}");
            assert_eq!(&out[..6], &FE_MAC, "to the front-end");
            let p = parse(&out);
            assert_eq!(p.ipv4.src_addr, Ipv4Addr::from(VIP));
            assert_eq!(
                (p.tcp.seq_number, p.tcp.ack_number),
                (ISN_F, after_request),
                "in the front-end's terms"
            );
            assert_eq!(p.tcp.timestamps.unwrap().tsval, TSV_F, "never stamped");
            assert_eq!(module.stat(stat::OUT_SYN_ACK_REPEAT_TO_FRONTEND), repeat);
            assert_eq!(module.stat(stat::OUT_SYN_ACK_TO_FRONTEND), repeat);
        }
        assert_eq!(module.stat(stat::OUT_SYN_ACK_REPEAT_DROPPED), 0);
        assert_eq!(module.stat(stat::OUT_SYN_ACK_ABSORBED), 1);
        let repeated = module.flow().unwrap();
        assert_eq!(repeated.translation, flow.translation);
        assert_eq!(repeated.state, flow.state | BackendFlow::SYN_ACK_REPEATED);
        // The answer, sent in SYN-RECV: translated for the client, no copy.
        let response = server_segment(
            ISN_B + 1,
            after_request,
            0x18,
            1000,
            ts_option(TSV_B + 10, 5555),
            vec![b'x'; 100],
        );
        let (verdict, out) = module.run("backend_egress", &response.bytes());
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(&out[..6], &ROUTER_MAC);
        let p = parse(&out);
        assert_eq!(p.ipv4.src_addr, Ipv4Addr::from(VIP));
        assert_eq!(p.tcp.seq_number, ISN_F.wrapping_add(1));
        assert_eq!(
            p.tcp.timestamps.unwrap().tsval,
            expected.tsval_to_client(TSV_B + 10),
            "stamped"
        );
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 0);
        // The client's ACK of it (forwarded by the front-end's XDP) is translated.
        let client_ack = Frame {
            src_mac: FE_MAC,
            dst_mac: BE_MAC,
            src: (CLIENT, CLIENT_PORT),
            dst: (BACKEND, 80),
            seq: after_request,
            ack: ISN_F.wrapping_add(101),
            flags: 0x10,
            window: 502,
            options: ts_option(5556, TSV_F + 10),
            payload: vec![],
        };
        let (verdict, out) = module.run("backend_ingress", &client_ack.bytes());
        assert_eq!(verdict, TC_ACT_PIPE);
        let p = parse(&out);
        assert_eq!(p.tcp.ack_number, ISN_B + 101);
        assert_eq!(p.tcp.timestamps.unwrap().tsecr, TSV_B + 10);
        // The server's FIN goes to the client alone; a RST is copied to the front-end.
        let fin = Frame {
            seq: ISN_B + 101,
            flags: 0x11,
            payload: vec![],
            options: vec![],
            ..server_segment(0, after_request, 0, 1000, vec![], vec![])
        };
        assert_eq!(module.run("backend_egress", &fin.bytes()).0, TC_ACT_PIPE);
        assert_eq!(module.stat(stat::OUT_CONTROL_TO_FRONTEND), 0);
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 0);
        let rst = Frame {
            seq: ISN_B + 102,
            flags: 0x14,
            ..fin
        };
        assert_eq!(module.run("backend_egress", &rst.bytes()).0, TC_ACT_PIPE);
        assert_eq!(module.stat(stat::OUT_CONTROL_TO_FRONTEND), 1);
        assert_eq!(module.stat(stat::REWRITE_FAILED), 0);

        // Fast open refused: the SYN/ACK' acknowledges the SYN alone and goes to the
        // front-end as before, which sends the request after it; its answer is copied.
        let module = Module::load();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let (verdict, out) = module.run("backend_egress", &syn_ack_acking(CLIENT_ISN + 1).bytes());
        assert_eq!(verdict, TC_ACT_PIPE);
        assert_eq!(&out[..6], &FE_MAC, "the SYN/ACK' goes to the front-end");
        assert_eq!(parse(&out).tcp.seq_number, ISN_F);
        assert_eq!(module.stat(stat::OUT_SYN_ACK_TO_FRONTEND), 1);
        assert_eq!(module.stat(stat::OUT_SYN_ACK_ABSORBED), 0);
        let flow = module.flow().unwrap();
        assert_eq!(flow.state & 0xffff, 0);
        assert_eq!(
            module.run("backend_egress", &response.bytes()).0,
            TC_ACT_PIPE
        );
        assert_eq!(module.stat(stat::OUT_COPY_TO_FRONTEND), 1);

        // Past the request: another connection's SYN/ACK, the stale entry removed.
        let module = Module::load();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let answer = syn_ack_acking(after_request + 1).bytes();
        assert_eq!(module.run("backend_egress", &answer), (TC_ACT_PIPE, answer));
        assert_eq!(module.stat(stat::OUT_STALE_FLOW_REMOVED), 1);
        assert!(module.flow().is_none());
    });
}

/// The verifier's figures for each program (`verified_insns` from the kernel: the
/// instructions it walked, of its million), printed for docs/design.md's "Limits".
#[test]
fn verifier_figures() {
    privileged("verifier figures", || {
        let module = Module::load();
        for name in PROGRAMS {
            let prog: &SchedClassifier = module.ebpf.program(name).unwrap().try_into().unwrap();
            let walked = prog.info().unwrap().verified_instruction_count();
            eprintln!("verifier: {name} walked {walked:?} instructions");
        }
    });
}

/// An ICMP "fragmentation needed" the front-end forwarded (its destination this
/// back-end, its quote as the router saw the segment: from the VIP, in the front-end's
/// sequence space) reaches the ICMP program by tail call, which puts the quote back in
/// the server's terms (source address and port, sequence number: what `tcp_v4_err`
/// looks the socket up by and checks against `snd_una..snd_nxt`), with both checksums
/// whole. An error about no flow, or with the program's slot empty, passes untouched and
/// counted; other ICMP passes uncounted.
#[test]
fn a_forwarded_frag_needed_quotes_the_servers_segment() {
    privileged("ICMP", || {
        let mut module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        assert_eq!(
            module.run("backend_egress", &plain_syn_ack().bytes()).0,
            TC_ACT_PIPE
        );
        let t = module.flow().expect("the flow").translation;
        // A full-sized segment of the response, 300 kB in, as the client's path saw it.
        let server_seq = ISN_B.wrapping_add(1 + 300_000);
        let seen = Frame {
            src_mac: BE_MAC,
            dst_mac: ROUTER_MAC,
            src: (VIP, lab::HTTP_PORT),
            dst: (CLIENT, CLIENT_PORT),
            seq: t.seq_to_client(server_seq),
            ack: CLIENT_ISN + 100,
            flags: 0x10,
            window: 500,
            options: ts_option(77, 5555),
            payload: vec![0x5a; 1448],
        };
        let router = lab::ROUTER_LAN_ADDR.octets();
        let forwarded = |quoted, seen: &Frame| {
            support::frag_needed(FE_MAC, BE_MAC, router, BACKEND, 1000, seen, quoted)
        };
        for quoted in [8, 32] {
            let before = module.stat(stat::IN_ICMP_TRANSLATED);
            let (verdict, out) = module.run("backend_ingress", &forwarded(quoted, &seen));
            assert_eq!(verdict, TC_ACT_PIPE);
            assert_eq!(module.stat(stat::IN_ICMP_TRANSLATED), before + 1);
            // What the server sent, quoted as the router would have had it come from
            // this host.
            let sent = Frame {
                src: (BACKEND, 80),
                seq: server_seq,
                ..seen.clone()
            };
            let mut want = forwarded(quoted, &sent);
            // The quoted TCP checksum stays as the client's path saw it.
            if quoted >= 18 {
                want[14 + 28 + 20 + 16..14 + 28 + 20 + 18]
                    .copy_from_slice(&forwarded(quoted, &seen)[14 + 28 + 20 + 16..][..2]);
                let icmp = &mut want[14 + 20..];
                icmp[2..4].copy_from_slice(&[0, 0]);
                let check = !baton_common::translate::ones_complement_sum(icmp);
                icmp[2..4].copy_from_slice(&check.to_be_bytes());
            }
            assert_eq!(out, want, "{quoted} quoted bytes");
        }
        // About a flow the table does not have: untouched, counted.
        let other = Frame {
            dst: (CLIENT, CLIENT_PORT + 1),
            ..seen.clone()
        };
        let unknown = forwarded(8, &other);
        assert_eq!(
            module.run("backend_ingress", &unknown),
            (TC_ACT_PIPE, unknown)
        );
        assert_eq!(module.stat(stat::IN_ICMP_NOT_HANDED_OFF), 1);
        // About the server's own direct traffic (from its own address): not ours.
        let direct = forwarded(
            8,
            &Frame {
                src: (BACKEND, 80),
                ..seen.clone()
            },
        );
        assert_eq!(
            module.run("backend_ingress", &direct),
            (TC_ACT_PIPE, direct)
        );
        // A quote cut short: untouched, counted.
        let mut short = forwarded(8, &seen);
        short.truncate(short.len() - 4);
        let total = (short.len() - 14) as u16;
        short[16..18].copy_from_slice(&total.to_be_bytes());
        short[24..26].copy_from_slice(&[0, 0]);
        let check = !baton_common::translate::ones_complement_sum(&short[14..34]);
        short[24..26].copy_from_slice(&check.to_be_bytes());
        assert_eq!(module.run("backend_ingress", &short), (TC_ACT_PIPE, short));
        assert_eq!(module.stat(stat::IN_ICMP_MALFORMED), 1);
        // An echo request: not ours, uncounted.
        let mut echo = forwarded(8, &seen);
        echo[14 + 20] = 8;
        echo[14 + 21] = 0;
        assert_eq!(module.run("backend_ingress", &echo), (TC_ACT_PIPE, echo));
        assert_eq!(module.stat(stat::IN_ICMP_UNCHECKED), 0);

        // The ICMP program's slot empty: the error passes as it came, counted.
        let mut slots: ProgramArray<_> =
            ProgramArray::try_from(module.ebpf.map_mut("BACKEND_INGRESS_PROGRAMS").unwrap())
                .unwrap();
        slots.clear_index(&ingress_program::ICMP).unwrap();
        let error = forwarded(8, &seen);
        assert_eq!(module.run("backend_ingress", &error), (TC_ACT_PIPE, error));
        assert_eq!(module.stat(stat::IN_ICMP_UNCHECKED), 1);
        assert_eq!(module.stat(stat::IN_ICMP_TRANSLATED), 2);
    });
}

/// An ICMPv6 "packet too big" from `router` to `to` (RFC 4443 §3.2) quoting the IPv6
/// packet of `offending` (a whole frame, as [`Family::frame`] builds it) up to its TCP
/// header's first `quoted_tcp` bytes, with its checksum over the pseudo-header; in a
/// frame from the front-end to this back-end, as the front-end forwards it.
fn packet_too_big(
    router: [u8; 16],
    to: [u8; 16],
    mtu: u32,
    offending: &[u8],
    quoted_tcp: usize,
) -> Vec<u8> {
    let quote = &offending[14..];
    let quote = &quote[..(40 + quoted_tcp).min(quote.len())];
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let check = icmpv6_checksum(&router, &to, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let mut f = BE_MAC.to_vec();
    f.extend_from_slice(&FE_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&router);
    f.extend_from_slice(&to);
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum of `message` (its checksum field taken as zero) from `src` to
/// `dst`, computed whole (RFC 4443 §2.3).
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], message: &[u8]) -> u16 {
    use baton_common::translate::{ones_complement_add, ones_complement_sum};
    let mut zeroed = message.to_vec();
    zeroed[2..4].copy_from_slice(&[0, 0]);
    let pseudo = baton_common::ipv6::ipv6_pseudo_header_sum(src, dst, zeroed.len() as u32, 58);
    !ones_complement_add(pseudo, ones_complement_sum(&zeroed))
}

/// An ICMPv6 "packet too big" the front-end forwarded for an IPv6 flow (its destination
/// this back-end's IPv6 address, its quote from VIP6 in the front-end's sequence space)
/// reaches `backend_icmp_v6` by tail call from the IPv6 ingress, which puts the quote
/// back in the server's terms (source address and port, sequence number: what
/// `tcp_v6_err` looks the socket up by and checks against `snd_una..snd_nxt`) with the
/// ICMPv6 checksum whole; the output is compared byte for byte with the error the router
/// would have sent about the server's own segment. An error about no flow, a short one,
/// or with the program's slot empty passes untouched and counted, as IPv4's; one about
/// the server's own traffic and other ICMPv6 pass uncounted.
#[test]
fn a_forwarded_packet_too_big_quotes_the_servers_segment() {
    privileged("ICMPv6", || {
        let mut module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let v6f = Family::V6;
        let syn = v6f.frame(&syn_prime(v6f.option(&key, BACKEND)));
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let syn_ack = v6f.frame(&plain_syn_ack());
        assert_eq!(module.run("backend_egress", &syn_ack).0, TC_ACT_PIPE);
        let t = module.flow_of(v6f).expect("the IPv6 flow").translation;
        assert!(module.flow().is_none(), "never in the IPv4 table");
        // A full-sized segment of the response, 300 kB in, as the client's path saw it.
        let server_seq = ISN_B.wrapping_add(1 + 300_000);
        let seen = Frame {
            src_mac: BE_MAC,
            dst_mac: ROUTER_MAC,
            src: (VIP, lab::HTTP_PORT),
            dst: (CLIENT, CLIENT_PORT),
            seq: t.seq_to_client(server_seq),
            ack: CLIENT_ISN + 100,
            flags: 0x10,
            window: 500,
            options: ts_option(77, 5555),
            payload: vec![0x5a; 1428],
        };
        let router = v6(lab::ROUTER_LAN_ADDR.octets());
        let forwarded = |quoted, seen: &Frame| {
            packet_too_big(router, v6(BACKEND), 1280, &v6f.frame(seen), quoted)
        };
        for quoted in [8, 32] {
            let before = module.stat(stat::IN_ICMP_TRANSLATED);
            let (verdict, out) = module.run("backend_ingress", &forwarded(quoted, &seen));
            assert_eq!(verdict, TC_ACT_PIPE);
            assert_eq!(module.stat(stat::IN_ICMP_TRANSLATED), before + 1);
            // What the server sent, quoted as the router would have had it come from
            // this host.
            let sent = Frame {
                src: (BACKEND, 80),
                seq: server_seq,
                ..seen.clone()
            };
            let mut want = forwarded(quoted, &sent);
            // The quoted TCP checksum stays as the client's path saw it.
            if quoted >= 18 {
                let at = 14 + 40 + 8 + 40 + 16;
                want[at..at + 2].copy_from_slice(&forwarded(quoted, &seen)[at..at + 2]);
                let check = icmpv6_checksum(&router, &v6(BACKEND), &want[54..]);
                want[56..58].copy_from_slice(&check.to_be_bytes());
            }
            assert_eq!(out, want, "{quoted} quoted bytes");
            // And the checksum the program wrote verifies on its own.
            assert_eq!(
                icmpv6_checksum(&router, &v6(BACKEND), &out[54..]).to_be_bytes(),
                [out[56], out[57]],
                "{quoted} quoted bytes: the ICMPv6 checksum"
            );
        }
        // About a flow the table does not have: untouched, counted.
        let other = Frame {
            dst: (CLIENT, CLIENT_PORT + 1),
            ..seen.clone()
        };
        let unknown = forwarded(8, &other);
        assert_eq!(
            module.run("backend_ingress", &unknown),
            (TC_ACT_PIPE, unknown)
        );
        assert_eq!(module.stat(stat::IN_ICMP_NOT_HANDED_OFF), 1);
        // About the server's own direct traffic (from its own address): not ours.
        let direct = forwarded(
            8,
            &Frame {
                src: (BACKEND, 80),
                ..seen.clone()
            },
        );
        assert_eq!(
            module.run("backend_ingress", &direct),
            (TC_ACT_PIPE, direct)
        );
        // A quote cut short of the sequence number: untouched, counted.
        let mut short = forwarded(8, &seen);
        short.truncate(short.len() - 4);
        let payload = (short.len() - 54) as u16;
        short[18..20].copy_from_slice(&payload.to_be_bytes());
        let check = icmpv6_checksum(&router, &v6(BACKEND), &short[54..]);
        short[56..58].copy_from_slice(&check.to_be_bytes());
        assert_eq!(module.run("backend_ingress", &short), (TC_ACT_PIPE, short));
        assert_eq!(module.stat(stat::IN_ICMP_MALFORMED), 1);
        // An echo request: not ours, uncounted.
        let mut echo = forwarded(8, &seen);
        echo[54] = 128;
        assert_eq!(module.run("backend_ingress", &echo), (TC_ACT_PIPE, echo));
        assert_eq!(module.stat(stat::IN_ICMP_UNCHECKED), 0);
        assert_eq!(module.stat(stat::IN_ICMP_TRANSLATED), 2);

        // The ICMPv6 program's slot empty: the error passes as it came, counted.
        let mut slots: ProgramArray<_> =
            ProgramArray::try_from(module.ebpf.map_mut("BACKEND_V6_PROGRAMS").unwrap()).unwrap();
        slots.clear_index(&ipv6_program::ICMP).unwrap();
        let error = forwarded(8, &seen);
        assert_eq!(module.run("backend_ingress", &error), (TC_ACT_PIPE, error));
        assert_eq!(module.stat(stat::IN_ICMP_UNCHECKED), 1);
        assert_eq!(module.stat(stat::IN_ICMP_TRANSLATED), 2);
    });
}

/// A front-end's probe (`baton_common::claim`) of a client segment without timestamps:
/// the packet as the client sent it, to this back-end's MAC, the trailer naming
/// (`backend`, 80).
fn probe(client_port: u16, backend: [u8; 4]) -> Vec<u8> {
    let segment = Frame {
        src_mac: FE_MAC,
        dst_mac: BE_MAC,
        src: (CLIENT, client_port),
        dst: (VIP, lab::HTTP_PORT),
        seq: CLIENT_ISN + 100,
        ack: ISN_F.wrapping_add(5_001),
        flags: 0x10,
        window: 500,
        options: Vec::new(),
        payload: Vec::new(),
    }
    .bytes();
    let mut out = vec![0u8; segment.len() + claim::TRAILER_LEN];
    let len = claim::write_probe(&mut out, FE_MAC, BE_MAC, (backend, 80), &segment[14..]).unwrap();
    out.truncate(len);
    out
}

/// Issue 20, item 4 (docs/design.md, "Clients without timestamps: probe and claim"): a
/// probe of a flow the module holds comes back as a claim to the prober, carrying the
/// stamp the front-end's judgement accepts; a probe of any other flow, or a malformed
/// one, is dropped and counted, never passed to the stack.
#[test]
fn a_probe_of_a_held_flow_is_claimed_and_others_are_dropped() {
    privileged("claim", || {
        let module = Module::load();
        let key = SipKey::from_bytes(KEY);
        let syn = syn_prime(handoff_option().encode(&key, &binding(BACKEND))).bytes();
        // A probe before the server's SYN/ACK': nothing to claim yet.
        assert_eq!(module.run("backend_ingress", &syn).0, TC_ACT_PIPE);
        let early = probe(CLIENT_PORT, BACKEND);
        assert_eq!(module.run("backend_ingress", &early).0, TC_ACT_SHOT);
        assert_eq!(module.stat(stat::PROBE_NOT_HELD), 1);
        assert_eq!(
            module.run("backend_egress", &plain_syn_ack().bytes()).0,
            TC_ACT_PIPE
        );

        let asked = probe(CLIENT_PORT, BACKEND);
        let (verdict, claimed) = module.run("backend_ingress", &asked);
        assert_eq!(
            verdict, TC_ACT_SHOT,
            "the probe ends here; its clone went out"
        );
        assert_eq!(module.stat(stat::PROBE_CLAIMED), 1);
        // Back to the prober, from this back-end, the packet unchanged, the stamp in.
        assert_eq!(claimed.len(), asked.len());
        assert_eq!(claimed[..6], FE_MAC);
        assert_eq!(claimed[6..12], BE_MAC);
        assert_eq!(claimed[12..14], claim::ETH_P_CLAIM);
        let trailer_at = claimed.len() - claim::TRAILER_LEN;
        assert_eq!(claimed[14..trailer_at], asked[14..trailer_at]);
        let trailer = claim::Trailer::from_bytes(claimed[trailer_at..].try_into().unwrap());
        assert_eq!(
            trailer.stamp,
            lab_stamp(),
            "the stamp the egress writes in TSvals"
        );
        let entry = StampedBackend {
            addr_be: u32::from_ne_bytes(BACKEND),
            port_be: u16::from_ne_bytes(80u16.to_be_bytes()),
            mac: BE_MAC,
            _pad: [0; 4],
            flags: StampedBackend::USABLE,
        };
        assert_eq!(
            claim::judge_claim(
                &key,
                &trailer,
                (CLIENT, CLIENT_PORT),
                (VIP, lab::HTTP_PORT),
                Some(&entry)
            ),
            stamp::StampVerdict::Forward
        );

        // Another connection of the client, or the flow under another back-end's
        // address: not held here.
        for other in [
            probe(CLIENT_PORT + 1, BACKEND),
            probe(CLIENT_PORT, [198, 18, 1, 12]),
        ] {
            assert_eq!(module.run("backend_ingress", &other).0, TC_ACT_SHOT);
        }
        assert_eq!(module.stat(stat::PROBE_NOT_HELD), 3);
        // Cut short of its trailer.
        assert_eq!(
            module.run("backend_ingress", &asked[..asked.len() - 1]).0,
            TC_ACT_SHOT
        );
        assert_eq!(module.stat(stat::PROBE_MALFORMED), 1);
        assert_eq!(module.stat(stat::PROBE_CLAIMED), 1);
    });
}
