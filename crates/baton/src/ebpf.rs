//! The eBPF objects built from `crates/baton-ebpf` by `build.rs`, embedded in the binary,
//! 8-byte aligned as aya needs.

/// The per-interface traffic counter (`traffic_in`, `traffic_out`, map `TRAFFIC`).
pub static COUNTER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-counter"));

/// The back-end module (`backend_ingress`, `backend_egress`, and `backend_syn` and
/// `backend_repeated_syn`, which the ingress tail-calls, and `backend_local_ack`, which
/// the egress does; maps `BACKEND_FLOWS`, `BACKEND_CONFIG`, `BACKEND_STATS`,
/// `BACKEND_INGRESS_PROGRAMS`).
pub static BACKEND: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-backend"));

/// The front-end fast path (`frontend_forward`, XDP; maps `FRONTEND_FLOWS`,
/// `FRONTEND_CONFIG`, `FRONTEND_STATS`).
pub static FRONTEND: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-frontend"));

/// The lab's XDP pass program for the LAN bridge's port facing `fe` (`lab_xdp_pass`).
pub static LAB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-lab"));
