//! The eBPF object built from `crates/baton-ebpf` by `build.rs`, embedded in the binary.

/// The ELF object holding every Baton eBPF program and map, 8-byte aligned as aya needs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-ebpf"));
