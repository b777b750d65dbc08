//! Per-interface packet and byte counter (tc ingress and egress). It observes only: both
//! programs return `TC_ACT_PIPE`, which tcx and cls_bpf both read as "carry on with the
//! next program", so attaching it never changes what the interface does.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_PIPE},
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use baton_common::counter::{Direction, TRAFFIC_MAP_ENTRIES, TrafficCount, TrafficKey};

#[map]
static TRAFFIC: PerCpuHashMap<TrafficKey, TrafficCount> =
    PerCpuHashMap::with_max_entries(TRAFFIC_MAP_ENTRIES, 0);

#[classifier]
pub fn traffic_in(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Ingress);
    TC_ACT_PIPE
}

#[classifier]
pub fn traffic_out(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Egress);
    TC_ACT_PIPE
}

#[inline(always)]
fn count(ctx: &TcContext, direction: Direction) {
    // SAFETY: `skb` is the context pointer the kernel passed in, valid for this run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = TrafficKey::new(ifindex, direction);
    let bytes = u64::from(ctx.len());
    if add(&key, bytes) {
        return;
    }
    // First packet on this interface and direction. NOEXIST so that a CPU racing us to
    // create the entry keeps its count; if we lose the race, the entry now exists.
    let first = TrafficCount { packets: 1, bytes };
    if TRAFFIC.insert(key, first, u64::from(BPF_NOEXIST)).is_err() {
        add(&key, bytes);
    }
}

#[inline(always)]
fn add(key: &TrafficKey, bytes: u64) -> bool {
    match TRAFFIC.get_ptr_mut(key) {
        Some(count) => {
            // SAFETY: a per-CPU value belongs to this CPU while the program runs, and
            // programs do not preempt each other on one CPU, so nothing else writes it.
            unsafe {
                (*count).packets += 1;
                (*count).bytes += bytes;
            }
            true
        }
        None => false,
    }
}
