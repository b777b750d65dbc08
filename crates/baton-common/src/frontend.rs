//! The front-end fast path's maps (the patent's BIP_FE): the flow table, the
//! configuration and the counters that the XDP program (`frontend_forward`) shares with
//! `baton frontend`.

/// Default number of flow-table entries: one per handed-off connection. An entry costs
/// the key and value (12 + 24 bytes) plus the kernel's per-element overhead.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;

/// A handed-off connection as the front-end sees it: the client's address and port and
/// the virtual service it connected to, in network byte order exactly as they sit in
/// the packet, so the program copies them without swapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendFlowKey {
    pub client_addr_be: u32,
    pub vip_addr_be: u32,
    pub client_port_be: u16,
    pub vip_port_be: u16,
}

/// Where a handed-off connection's client packets go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendFlow {
    /// The back-end's address and port: the packet's new destination.
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    /// The back-end's MAC on the LAN: the frame's new destination.
    pub backend_mac: [u8; 6],
    /// Explicit padding; zero.
    pub _pad: [u8; 4],
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`) of the last packet forwarded; 0 before the
    /// first. The daemon reads it to push back the connection's idle timeout. Written
    /// without atomics: CPUs racing only ever store "now", and any of them will do.
    pub last_seen_ns: u64,
}

/// The one entry of the configuration map, written by `baton frontend` before it
/// attaches the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendConfig {
    /// The virtual service: only packets to it are looked up.
    pub vip_addr_be: u32,
    pub vip_port_be: u16,
    /// The MAC of the interface the program is attached to: forwarded frames' source.
    pub interface_mac: [u8; 6],
    /// [`FrontendConfig::ENABLED`]; without it the program passes everything untouched.
    pub flags: u32,
}

impl FrontendConfig {
    pub const ENABLED: u32 = 1 << 0;
}

/// Indexes of the per-CPU counter array: one per outcome, so that every packet to the
/// service that the program sees is accounted for. Packets not to VIP:port are passed
/// without a count (a parse and no map access).
pub mod stat {
    /// A client segment of a handed-off flow, rewritten towards its back-end and
    /// transmitted (`XDP_TX`).
    pub const FORWARDED: u32 = 0;
    /// A segment of no handed-off flow: passed to the slow path.
    pub const PASS_NO_FLOW: u32 = 1;
    /// SYN, FIN or RST: passed to the slow path, which tracks opens and closes.
    pub const PASS_CONTROL: u32 = 2;
    /// A segment with payload of a handed-off flow: passed to the slow path, which
    /// forwards it (the program only completes checksums of header-only segments; see
    /// the module docs of `baton-ebpf/src/frontend.rs`).
    pub const PASS_PAYLOAD: u32 = 3;
    /// An IPv4 header with options, or a fragment: passed to the slow path.
    pub const PASS_UNUSUAL_IP: u32 = 4;
    /// A truncated or malformed IPv4/TCP header: passed for the kernel to judge.
    pub const PASS_MALFORMED: u32 = 5;
    /// A header-only segment whose TCP checksum is neither complete and right nor the
    /// partial (pseudo-header) sum an offloading sender leaves: passed to the slow path,
    /// which verifies and drops it, rather than forwarded with a laundered checksum.
    pub const PASS_BAD_CHECKSUM: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;

    /// Counter names, by index, for logs and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "forwarded",
        "pass_no_flow",
        "pass_control",
        "pass_payload",
        "pass_unusual_ip",
        "pass_malformed",
        "pass_bad_checksum",
    ];
}

/// The TCP checksum of a header-only IPv4 segment, computed whole: the one's-complement
/// sum of the pseudo-header (`pseudo`, from [`crate::translate::tcp_ipv4_pseudo_header_sum`]
/// or its eBPF equivalent) and of `header_sum`, the TCP header's words with the checksum
/// field taken as zero.
#[inline(always)]
pub const fn tcp_checksum(pseudo: u16, header_sum: u16) -> u16 {
    !crate::translate::ones_complement_add(pseudo, header_sum)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers only, padding explicit (checked by the size tests).
    unsafe impl aya::Pod for super::FrontendFlowKey {}
    unsafe impl aya::Pod for super::FrontendFlow {}
    unsafe impl aya::Pod for super::FrontendConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{ones_complement_sum, tcp_ipv4_pseudo_header_sum};
    use core::mem::size_of;

    #[test]
    fn kernel_shared_layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FrontendFlowKey>(), 12);
        assert_eq!(size_of::<FrontendFlow>(), 24);
        assert_eq!(size_of::<FrontendConfig>(), 16);
    }

    #[test]
    fn counter_names_are_unique() {
        for (i, a) in stat::NAMES.iter().enumerate() {
            assert!(!stat::NAMES[i + 1..].contains(a), "{a} twice");
        }
    }

    #[test]
    fn whole_checksum_verifies() {
        // A bare ACK with a timestamps option.
        let mut tcp = [
            0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x10, 0x01, 0xf5, 0, 0, 0, 0, 1,
            1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7,
        ];
        let (s, d) = ([198, 18, 0, 2], [198, 18, 1, 11]);
        let pseudo = tcp_ipv4_pseudo_header_sum(s, d, tcp.len() as u16);
        let check = tcp_checksum(pseudo, ones_complement_sum(&tcp));
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        let all = crate::translate::ones_complement_add(pseudo, ones_complement_sum(&tcp));
        assert_eq!(all, 0xffff);
    }
}
