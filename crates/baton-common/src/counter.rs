//! Per-interface traffic counter: the key and value of the `TRAFFIC` map that the
//! `traffic_in`/`traffic_out` tc programs fill and `baton counter` reads.

/// Which way a packet crossed the interface, as seen from the interface's own namespace.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the interface (tc ingress).
    Ingress = 0,
    /// Sent by the interface (tc egress).
    Egress = 1,
}

/// Key of the traffic map: one entry per interface and direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficKey {
    /// The interface's index in its network namespace.
    pub ifindex: u32,
    /// A [`Direction`] as `u32`, so the struct has no enum niche the kernel could violate.
    pub direction: u32,
}

impl TrafficKey {
    pub const fn new(ifindex: u32, direction: Direction) -> Self {
        Self {
            ifindex,
            direction: direction as u32,
        }
    }
}

/// Value of the traffic map. It is a per-CPU map, so each CPU adds without atomics and
/// userspace sums the CPUs' values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCount {
    pub packets: u64,
    /// Bytes as the kernel counts `skb->len` at tc: the whole frame from the Ethernet
    /// header on, the same measure as the interface's own `rx_bytes`/`tx_bytes`.
    pub bytes: u64,
}

impl TrafficCount {
    /// Adds another CPU's share; wraps rather than panics, as counters do.
    pub const fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Most interfaces one loaded counter object tracks, in both directions.
pub const TRAFFIC_MAP_ENTRIES: u32 = 512;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are `#[repr(C)]`, made only of integers, with no padding (checked by the
    // size tests below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::TrafficKey {}
    unsafe impl aya::Pod for super::TrafficCount {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn kernel_shared_layouts_have_no_padding() {
        assert_eq!(size_of::<TrafficKey>(), 8);
        assert_eq!(size_of::<TrafficCount>(), 16);
    }

    #[test]
    fn per_cpu_values_sum_and_wrap() {
        let a = TrafficCount {
            packets: u64::MAX,
            bytes: 10,
        };
        let b = TrafficCount {
            packets: 2,
            bytes: 5,
        };
        assert_eq!(
            a.add(b),
            TrafficCount {
                packets: 1,
                bytes: 15
            }
        );
    }
}
