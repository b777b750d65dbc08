//! A stable 64-bit hash for consistent hashing and LARD targets.
//!
//! Stable means: the same key hashes to the same value across runs, builds and Rust
//! releases, so a restarted front-end sends each cache key to the same back-end as before
//! (std's `DefaultHasher` promises none of that). It is not keyed: the keys are chosen by
//! clients, but a client that crafts keys only chooses its own back-end, which it could
//! do anyway with the matching rules' help; flooding one back-end takes many clients, and
//! the front-end's connection limits bound them.
//!
//! The definition lives in `baton_common::kernel_dispatch`, the one the XDP program
//! hashes with too, so that a request hashed in the kernel lands where it would here.

pub(crate) use baton_common::kernel_dispatch::{hash_bytes, mix64};
