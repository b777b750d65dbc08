//! Baton's kernel layer: the eBPF programs that play the patent's STREAMS modules.
//!
//! Built with the nightly toolchain for `bpfel-unknown-none` by `crates/baton/build.rs`
//! and embedded in the `baton` binary, one object per program set (`src/bin/*.rs`):
//! `baton-counter` (the per-interface traffic counter) and `baton-backend` (the back-end
//! module). Entry points stay thin and map every outcome to a deliberate return code and
//! a counter.
//!
//! This crate must never hold logic that host tests cannot reach: arithmetic and layouts
//! live in `baton-common`, where they are unit- and property-tested on the host.
#![no_std]
