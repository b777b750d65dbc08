//! Dispatch in the kernel (issue 19): what the front-end's XDP program needs to hand off
//! a request whose head arrives whole in one segment without the slow path. The request
//! matcher and the compiled rules live here as pure functions over plain bytes, called
//! by the XDP program and by the host tests, which compare them with `baton-dispatch`.
//!
//! This file starts with the types the handoff half of the program shares with the
//! matcher half: the back-ends table and the matcher's decision.

/// Entries of the back-ends table (`FRONTEND_BACKENDS`, an array): every back-end of
/// every pool the kernel may pick, indexed as the compiled pools name them.
pub const MAX_KERNEL_BACKENDS: u32 = 256;

/// A back-end as the XDP program hands off to it: where the SYN'+request goes.
/// Network byte order for the address and port, as in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelBackend {
    pub addr_be: u32,
    pub port_be: u16,
    /// The back-end's MAC on the LAN, as the daemon resolved it.
    pub mac: [u8; 6],
    /// [`KernelBackend::USABLE`] when the daemon has written a resolved MAC and the
    /// back-end may take new connections; otherwise a decision naming it goes up to the
    /// slow path.
    pub flags: u32,
}

impl KernelBackend {
    pub const USABLE: u32 = 1 << 0;
}

/// The matcher's answer for one request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDecision {
    /// What to do: [`KernelDecision::HAND_OFF`] (to `backend`) or
    /// [`KernelDecision::SLOW_PATH`] (the daemon decides, as without the kernel path).
    pub verdict: u32,
    /// The index of the chosen back-end in the back-ends table.
    pub backend: u32,
    /// The rule that matched (its position in `[dispatch]`), for the counters and the
    /// access log; `u32::MAX` for the default pool.
    pub rule: u32,
    /// Why the slow path: one of the matcher's reasons, counted.
    pub reason: u32,
}

impl KernelDecision {
    pub const SLOW_PATH: u32 = 0;
    pub const HAND_OFF: u32 = 1;
}

/// What the XDP program needs to hand a request off itself, written by `baton frontend`
/// at start (the map `FRONTEND_KERNEL_HANDOFF`, not pinned: every daemon writes its
/// own).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KernelHandoffConfig {
    /// The key the handoff option's tag is made with, shared with the back-ends.
    pub handoff_key: crate::siphash::SipKey,
    /// [`KernelHandoffConfig::ENABLED`]: without it every request goes up, as before.
    pub flags: u32,
    /// The longest request the SYN' carries: the front-end's `[tcp] mss` less the 20
    /// bytes the SYN''s 40 bytes of options take beyond the 20 a data segment's
    /// timestamps take, as the core's one-turn handoff has it (`mss + 40` bytes in all).
    pub max_payload: u32,
}

impl KernelHandoffConfig {
    pub const ENABLED: u32 = 1 << 0;
}

/// Bytes of the ring `FRONTEND_HANDOFFS` in which the program tells the daemon of each
/// handoff it made: a [`KernelHandoffRecord`] and the request segment's IPv4 packet, as
/// it arrived, about 600 bytes for a typical request; 4 MiB hold some 7,000, a second
/// of handoffs at a rate the daemon keeps up with by far (it reads the ring every round
/// and wakes for it). A handoff that finds the ring full is not made: the request goes
/// up to the slow path, which hands it off itself. A power of two, as the kernel
/// requires.
pub const HANDOFF_RING_SIZE: u32 = 1 << 22;

/// The longest IPv4 packet a [`KernelHandoffRecord`] carries: a whole frame of the
/// front-end's MTU (1500) fits; a longer one is not handed off in the kernel.
pub const MAX_RECORDED_PACKET: usize = 1536;

/// The head of a record in `FRONTEND_HANDOFFS`, followed by `packet_len` bytes: the
/// client's request segment as it arrived (its IPv4 packet), from which the daemon's
/// protocol core builds the connection the program handed off, exactly as it would have
/// for a request it had handed off itself, but without sending the SYN' again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelHandoffRecord {
    /// The back-end's address and port, network byte order, as in the SYN'.
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
    /// [`KernelDecision::rule`].
    pub rule: u32,
    pub packet_len: u32,
}

/// The per-CPU scratch the program builds a record in before it copies it to the ring
/// (`bpf_ringbuf_output` takes a length the verifier can bound; a reservation would
/// need a constant one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KernelHandoffScratch {
    pub record: KernelHandoffRecord,
    /// A power of two, so that a masked length bounds every copy.
    pub packet: [u8; 2048],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain data without padding or pointers.
unsafe impl aya::Pod for KernelBackend {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelHandoffConfig {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelDecision {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_structs_have_their_documented_sizes() {
        assert_eq!(core::mem::size_of::<KernelBackend>(), 16);
        assert_eq!(core::mem::size_of::<KernelDecision>(), 16);
        assert_eq!(core::mem::size_of::<KernelHandoffConfig>(), 24);
        assert_eq!(core::mem::size_of::<KernelHandoffRecord>(), 16);
        assert_eq!(core::mem::size_of::<KernelHandoffScratch>(), 16 + 2048);
    }
}
