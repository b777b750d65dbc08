// Included by every eBPF object (`src/bin/*.rs`): what each needs once, and only once.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never run.
    loop {}
}

// GPL-compatible licence: the kernel only lets GPL programs call helpers such as
// `bpf_clone_redirect`, which the back-end module needs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
