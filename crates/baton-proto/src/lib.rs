//! Baton's protocol layer: everything the front-end decides per connection, sans-IO.
//!
//! Inputs are `handle_*(now, ..)` calls (a parsed packet, a timer firing), outputs are
//! `poll_*()` calls (packets to transmit, the next timer, events such as "handed off"),
//! in the style of quinn-proto. The same code therefore runs in the `baton frontend`
//! daemon and in a deterministic simulation with a virtual clock.
//!
//! This crate must never open a socket, read a clock, spawn a thread or block: time and
//! packets come in as arguments, and effects go out as values.
//!
//! - [`wire`]: checked zero-copy views and parse/emit representations of Ethernet II,
//!   IPv4 and TCP (with options), the only way bytes from the network enter this crate;
//! - [`request`]: has a client sent a complete HTTP/1.x request head or TLS ClientHello
//!   yet, and what does the dispatcher need from it.

pub mod frontend;
pub mod request;
pub mod wire;
