//! The lab's own program: `XDP_PASS` on the LAN bridge's port facing `fe` (`p-fe`).
//!
//! A veth delivers frames that its peer sends with `XDP_TX` or `XDP_REDIRECT` only when
//! it has an XDP program of its own (which enables its receive queue's NAPI), or GRO
//! explicitly requested; otherwise they are dropped without a counter (docs/design.md,
//! "Pitfalls", "veth and XDP"). A real switch port has no such rule; this program stands
//! in for it and does nothing else.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lab_xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}
