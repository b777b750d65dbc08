//! The per-interface traffic counter object (`baton counter`).
#![no_std]
#![no_main]

#[path = "../counter.rs"]
mod counter;
include!("../runtime.rs");
