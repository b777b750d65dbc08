//! The front-end fast path object (`baton frontend`): the patent's BIP_FE.
#![no_std]
#![no_main]

#[path = "../dispatch.rs"]
mod dispatch;
#[path = "../frontend.rs"]
mod frontend;
include!("../runtime.rs");
