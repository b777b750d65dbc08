//! The back-end module object (`baton backend`): the patent's BTCP_BE.
#![no_std]
#![no_main]

#[path = "../backend.rs"]
mod backend;
include!("../runtime.rs");
