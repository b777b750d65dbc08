//! The lab's helper object (`baton lab up`): an XDP pass program for a veth peer.
#![no_std]
#![no_main]

#[path = "../lab.rs"]
mod lab;
include!("../runtime.rs");
