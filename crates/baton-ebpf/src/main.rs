//! Baton's kernel layer: the eBPF programs that play the patent's STREAMS modules.
//!
//! Built with the nightly toolchain for `bpfel-unknown-none` by `crates/baton/build.rs`
//! and embedded in the `baton` binary. Entry points stay thin: each calls a `try_*` or
//! helper function and maps every outcome to a deliberate return code and a counter.
//!
//! This crate must never hold logic that host tests cannot reach: arithmetic and layouts
//! live in `baton-common`, where they are unit- and property-tested on the host.
#![no_std]
#![no_main]

mod counter;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never run.
    loop {}
}

// GPL-compatible licence: the kernel only lets GPL programs call helpers such as
// `bpf_skb_store_bytes` and `bpf_redirect`, which later programs need.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
