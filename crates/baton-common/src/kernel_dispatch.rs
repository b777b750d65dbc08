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

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain data without padding or pointers.
unsafe impl aya::Pod for KernelBackend {}
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
    }
}
