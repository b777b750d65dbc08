//! Baton's kernel layer: the eBPF programs that play the patent's STREAMS modules.
//!
//! Built with the nightly toolchain for `bpfel-unknown-none` by `crates/baton/build.rs`
//! and embedded in the `baton` binary, one object per program set (`src/bin/*.rs`):
//! `baton-frontend` (the front-end's XDP fast path), `baton-backend` (the back-end
//! module's tc ingress and egress), `baton-counter` (the per-interface traffic counter)
//! and `baton-lab` (the lab's `XDP_PASS` stand-in for a switch port). Entry points stay
//! thin and map every outcome to a deliberate return code and a counter. How they fit
//! together: docs/design.md, "The parts" and "Packet walk".
//!
//! This crate must never hold logic that host tests cannot reach: arithmetic and layouts
//! live in `baton-common`, where they are unit- and property-tested on the host.
#![no_std]
