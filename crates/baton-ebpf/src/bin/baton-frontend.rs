//! The front-end fast path object (`baton frontend`): the patent's BIP_FE.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has no `fetch_add` on `AtomicU64` (dispatch.rs).
#![expect(internal_features, reason = "the atomic add's intrinsic")]
#![feature(core_intrinsics)]

#[path = "../dispatch.rs"]
mod dispatch;
#[path = "../frontend.rs"]
mod frontend;
#[path = "../frontend_v6.rs"]
mod frontend_v6;
include!("../runtime.rs");
