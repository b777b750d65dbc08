//! Baton's dispatch layer: given a parsed request (Host, path, headers, cookies, TLS SNI),
//! pick a back-end from the configured rules, pools and policies, aware of health.
//!
//! Pure and fast: a decision is a function of the request and the dispatcher's state,
//! measured in nanoseconds. This crate must never do I/O, read a clock (time comes in as
//! an argument), block, or allocate per decision on the hot path.
