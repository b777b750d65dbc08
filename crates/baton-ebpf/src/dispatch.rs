//! Dispatch in the kernel (issue 19): the XDP program's request matcher. It reads the
//! request head of a client's first data segment, evaluates the rules `baton frontend`
//! compiled into maps, and picks a back-end of the matched pool, or sends the request
//! to the slow path, which decides as without the kernel path
//! (`baton_common::kernel_dispatch`, whose steps this file only runs).
//!
//! The compiled tables hold two generations each; `FRONTEND_DISPATCH_ACTIVE` names the
//! one in force. The daemon writes a whole new generation into the other half, then
//! flips that one index, so a request (which reads the index once) sees one rule set
//! whole. The work runs in `bpf_loop` callbacks on a per-CPU scratch value, so the
//! verifier checks each step once and the stack holds only a pointer to it.

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::{
    bindings::xdp_action::XDP_DROP,
    helpers::generated::{bpf_ktime_get_ns, bpf_loop, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use baton_common::kernel_dispatch::{
    BACKENDS_PER_GENERATION, CookieWalk, HASH_STEPS_INLINE, HashWalk, HelloScan, KernelBackend,
    KernelDecision, KernelLardKey, KernelLardSet, KernelPool, KernelRuleSet, KernelSlot,
    KernelTerm, KernelText, LardScan, LeastLoaded, MAX_COOKIE_STEPS, MAX_HASH_MEMBERS,
    MAX_HASH_STEPS, MAX_HELLO_STEPS, MAX_KERNEL_BACKENDS, MAX_KERNEL_POOLS, MAX_LARD_SETS,
    MAX_LOAD_SLOTS, MAX_POOL_SLOTS, MAX_SCAN_STEPS, MAX_TERMS, MAX_TEXTS, PoolPick, Rendezvous,
    RequestScan, RuleEval, SCRATCH_LEN, StickyId, TERMS_PER_STEP, TLS_HANDSHAKE, backend_load,
    eval_steps, lard_set_key, lard_start, policy_pick, pool_pick, reason, url_hash,
};

/// The back-ends the compiled pools name, by index; written by the daemon. Two
/// generations of [`BACKENDS_PER_GENERATION`].
#[map]
pub static FRONTEND_BACKENDS: Array<KernelBackend> =
    Array::with_max_entries(MAX_KERNEL_BACKENDS, 0);

/// The generation in force (0 or 1): the daemon's one write that swaps rule sets.
#[map]
static FRONTEND_DISPATCH_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Each generation's header: enabled, its number of terms, default pool and limits.
#[map]
static FRONTEND_RULE_SETS: Array<KernelRuleSet> = Array::with_max_entries(2, 0);

#[map]
static FRONTEND_RULE_TERMS: Array<KernelTerm> = Array::with_max_entries(2 * MAX_TERMS, 0);

#[map]
static FRONTEND_RULE_TEXTS: Array<KernelText> = Array::with_max_entries(2 * MAX_TEXTS, 0);

#[map]
static FRONTEND_POOLS: Array<KernelPool> = Array::with_max_entries(2 * MAX_KERNEL_POOLS, 0);

#[map]
static FRONTEND_POOL_SLOTS: Array<KernelSlot> = Array::with_max_entries(2 * MAX_POOL_SLOTS, 0);

/// Each pool's round-robin counter, per CPU: no atomics, no contention; each CPU walks
/// the pool's period on its own.
#[map]
static FRONTEND_ROUND_ROBIN: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_KERNEL_POOLS, 0);

/// `BPF_F_MMAPABLE`: the daemon maps the connection counts into its memory and reads
/// and writes them without a system call.
const MMAPABLE: u32 = 1 << 10;

/// The handoffs this program made to each back-end (by its `load_slot`), added to
/// atomically at each (`count_handoff`): the kernel's half of the connection counts
/// least connections picks by (`kernel_dispatch::backend_load`). Written by this
/// program only.
#[map]
pub static FRONTEND_BACKEND_OPENED: Array<u64> = Array::with_max_entries(MAX_LOAD_SLOTS, MMAPABLE);

/// The daemon's half: its books of each back-end's connections
/// (`Dispatcher::booked_connections`), written by the daemon only, read here.
#[map]
static FRONTEND_BACKEND_BOOKED: Array<u64> = Array::with_max_entries(MAX_LOAD_SLOTS, MMAPABLE);

/// `BPF_F_NO_PREALLOC`: an update links a new element and frees the old one after an
/// RCU grace period, so a reader sees a LARD set whole, old or new, never a half-written
/// one (a preallocated element can be reused by a concurrent update while read).
const NO_PREALLOC: u32 = 1;

/// The LARD pools' server sets, by generation, pool and target slot
/// (`kernel_dispatch::lard_set_key`): written by the daemon after each change its
/// `Lard` makes, read here. A target whose slot has no entry, or another target's,
/// goes to the slow path, which makes its set.
#[map]
static FRONTEND_LARD_SETS: HashMap<KernelLardKey, KernelLardSet> =
    HashMap::with_max_entries(MAX_LARD_SETS, NO_PREALLOC);

/// One more handoff to the back-end whose count is `load_slot`, made in this run.
#[inline(always)]
pub fn count_handoff(load_slot: u16) {
    if let Some(opened) = FRONTEND_BACKEND_OPENED.get_ptr_mut(u32::from(load_slot)) {
        // SAFETY: a value of the map, aligned, alive for the program's run; other CPUs
        // add to it at once, hence the atomic add (BPF's `lock xadd`: the target offers
        // no `fetch_add` on `AtomicU64`, the intrinsic compiles to the instruction).
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(opened, 1)
        };
    }
}

/// The active connections of the back-end `backend` (by [`backend_load`]).
#[inline(always)]
fn load_of(backend: &KernelBackend) -> u32 {
    let slot = u32::from(backend.load_slot);
    let opened = FRONTEND_BACKEND_OPENED.get_ptr(slot);
    let booked = FRONTEND_BACKEND_BOOKED.get(slot);
    match (opened, booked) {
        // SAFETY: as in `count_handoff`. A volatile read, one aligned 8-byte load, which
        // no other CPU's add tears (the target cannot select an atomic load for
        // `--cpu generic`).
        (Some(opened), Some(&booked)) => {
            backend_load(unsafe { core::ptr::read_volatile(opened) }, booked)
        }
        _ => 0,
    }
}

/// What one decision works on: too big for the 512-byte stack, and in map memory the
/// verifier does not track its bytes, so the steps' paths converge.
#[repr(C)]
struct Scratch {
    bytes: [u8; SCRATCH_LEN],
    scan: RequestScan,
    hello: HelloScan,
    cookies: CookieWalk,
    eval: RuleEval,
    hash: HashWalk,
    lard: LardWalk,
}

/// A LARD pool's pass over its members ([`LardScan`]), one member a `bpf_loop` step.
#[repr(C)]
struct LardWalk {
    pass: LardScan,
    /// The target's set (0 without one).
    servers: u64,
    first_slot: u32,
    members: u32,
    /// The first member offered (`lard_start`).
    start: u32,
    low: u32,
    /// A table was missing an entry: the slow path decides.
    broken: u32,
}

#[map]
static FRONTEND_DISPATCH_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The last decision of `frontend_dispatch_probe`, for the tests (which run it on one
/// thread at a time, so one entry for every CPU).
#[map]
static FRONTEND_DISPATCH_PROBE: Array<KernelDecision> = Array::with_max_entries(1, 0);

/// A `bpf_loop` callback's context, on the caller's stack (the helper wants a stack
/// pointer): the scratch value and the generation in force.
#[repr(C)]
struct Loop {
    scratch: *mut Scratch,
    generation: u32,
    /// The rule program's length.
    terms: u32,
}

const fn slow(reason: u32, rule: u32) -> KernelDecision {
    KernelDecision {
        verdict: KernelDecision::SLOW_PATH,
        backend: 0,
        rule,
        reason,
    }
}

/// The decision for the request whose head is the `payload_len` bytes at
/// `payload_offset` of the frame (the segment's whole payload).
#[inline(never)]
pub fn decide_request(
    ctx: &XdpContext,
    payload_offset: usize,
    payload_len: usize,
) -> KernelDecision {
    let Some(&active) = FRONTEND_DISPATCH_ACTIVE.get(0) else {
        return slow(reason::OFF, u32::MAX);
    };
    let generation = active & 1;
    let Some(set) = FRONTEND_RULE_SETS.get(generation) else {
        return slow(reason::OFF, u32::MAX);
    };
    if set.flags & KernelRuleSet::ENABLED == 0 {
        return slow(reason::OFF, u32::MAX);
    }
    let (terms, default_pool) = (set.terms, set.default_pool);
    let (max_head_len, max_headers) = (set.max_head_len, set.max_headers);
    let cookie_names = set.cookies;
    if payload_len == 0 || payload_len > SCRATCH_LEN {
        return slow(reason::SEGMENT_SIZE, u32::MAX);
    }
    let Some(scratch) = FRONTEND_DISPATCH_SCRATCH.get_ptr_mut(0) else {
        return slow(reason::LOAD, u32::MAX);
    };
    // 1..=SCRATCH_LEN, as the verifier can see.
    let len = ((payload_len - 1) & (SCRATCH_LEN - 1)) + 1;
    // SAFETY: `scratch` is this CPU's value, `len` bytes fit its buffer; the kernel
    // checks the frame's side.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            payload_offset as u32,
            (*scratch).bytes.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if rc != 0 {
        return slow(reason::LOAD, u32::MAX);
    }
    let mut state = Loop {
        scratch,
        generation,
        terms,
    };
    let state_ptr: *mut c_void = (&mut state as *mut Loop).cast();
    // The scratch value is reached through `scratch` each time, never through a
    // reference held across a `bpf_loop` call: the callbacks write it behind the
    // compiler's back, and a live `&mut` would let it keep stale copies.
    // SAFETY: this CPU's value, alive for the whole run; the callbacks take the `Loop`
    // passed with them.
    unsafe {
        if (*scratch).bytes[0] == TLS_HANDSHAKE {
            (*scratch).hello.start(len);
            bpf_loop(MAX_HELLO_STEPS, hello_step as *mut c_void, state_ptr, 0);
            let s = &mut *scratch;
            if let Err(why) = s.hello.request_into(&s.bytes, max_head_len, &mut s.scan) {
                return slow(why, u32::MAX);
            }
        } else {
            (*scratch).scan.start(len);
            bpf_loop(MAX_SCAN_STEPS, scan_step as *mut c_void, state_ptr, 0);
            if let Err(why) = (*scratch).scan.finish(max_head_len, max_headers) {
                return slow(why, u32::MAX);
            }
        }
        if (*scratch).scan.cookie_fields != 0 && cookie_names != 0 {
            let s = &mut *scratch;
            s.cookies.start(&s.scan, set);
            bpf_loop(MAX_COOKIE_STEPS, cookie_step as *mut c_void, state_ptr, 0);
            (*scratch).cookies.finish(&mut (*scratch).scan);
        }
        if terms > MAX_TERMS {
            return slow(reason::TABLES, u32::MAX);
        }
        (*scratch).eval.start();
        bpf_loop(eval_steps(terms), eval_step as *mut c_void, state_ptr, 0);
        (*scratch).eval.finish(terms, default_pool);
    }
    // SAFETY: as above.
    let eval = unsafe { (*scratch).eval };
    if eval.outcome != RuleEval::CHOSEN {
        return slow(eval.reason, eval.rule);
    }
    match pick_backend(scratch, state_ptr, generation, eval.pool) {
        Ok(backend) => KernelDecision {
            verdict: KernelDecision::HAND_OFF,
            backend,
            rule: eval.rule,
            reason: 0,
        },
        Err(why) => slow(why, eval.rule),
    }
}

/// The chosen pool's back-end, as an index into [`FRONTEND_BACKENDS`].
#[inline(never)]
fn pick_backend(
    scratch: *mut Scratch,
    state_ptr: *mut c_void,
    generation: u32,
    pool_index: u32,
) -> Result<u32, u32> {
    if pool_index >= MAX_KERNEL_POOLS {
        return Err(reason::TABLES);
    }
    // References into the maps and the scratch value, not copies: this frame counts
    // toward the 512 bytes of stack along `frontend_forward`'s chain of calls.
    let pool = FRONTEND_POOLS
        .get(generation * MAX_KERNEL_POOLS + pool_index)
        .ok_or(reason::TABLES)?;
    let cursor = FRONTEND_ROUND_ROBIN
        .get_ptr_mut(pool_index)
        .ok_or(reason::TABLES)?;
    // SAFETY: this CPU's counter; XDP does not preempt itself on one CPU.
    let count = unsafe { *cursor };
    let slots = generation * MAX_POOL_SLOTS;
    // SAFETY: `decide_request`'s scratch value, as there; the reference ends before
    // any `bpf_loop` call.
    let mut picked = pool_pick(pool, unsafe { &(*scratch).scan }, count)?;
    if let PoolPick::StickyId { start, end } = picked {
        match sticky_by_id(scratch, generation, pool, start, end)? {
            Some(local) => return usable_backend(generation, local),
            // No up member has that id: the policy picks.
            // SAFETY: as above.
            None => picked = policy_pick(pool, unsafe { &(*scratch).scan }, count)?,
        }
    }
    let local = match picked {
        PoolPick::Slot(slot) => {
            // SAFETY: as above.
            unsafe { *cursor = count.wrapping_add(1) };
            let slot = FRONTEND_POOL_SLOTS
                .get(slots + (slot & (MAX_POOL_SLOTS - 1)))
                .ok_or(reason::TABLES)?;
            slot.backend
        }
        PoolPick::Hash { start, end, url } => {
            let mut key = hash_range(scratch, state_ptr, start, end);
            if url {
                // SAFETY: as above.
                let (from, to) =
                    unsafe { ((*scratch).scan.query_start, (*scratch).scan.query_end) };
                let query = hash_range(scratch, state_ptr, from, to);
                key = url_hash(key, query);
            }
            let mut pick = Rendezvous::default();
            for k in 0..MAX_HASH_MEMBERS {
                if k >= pool.slots {
                    break;
                }
                let at = (pool.first_slot + k) & (MAX_POOL_SLOTS - 1);
                let slot = FRONTEND_POOL_SLOTS.get(slots + at).ok_or(reason::TABLES)?;
                pick.offer(key, slot);
            }
            pick.chosen().ok_or(reason::POOL_DOWN)?
        }
        PoolPick::StickyHash { start, end } => {
            let key = hash_range(scratch, state_ptr, start, end);
            let mut pick = Rendezvous::default();
            for k in 0..MAX_HASH_MEMBERS {
                if k >= pool.sticky_slots {
                    break;
                }
                let at = (pool.sticky_first + k) & (MAX_POOL_SLOTS - 1);
                let slot = FRONTEND_POOL_SLOTS.get(slots + at).ok_or(reason::TABLES)?;
                pick.offer(key, slot);
            }
            pick.chosen().ok_or(reason::POOL_DOWN)?
        }
        PoolPick::Least { start } => {
            // SAFETY: as above.
            unsafe { *cursor = count.wrapping_add(1) };
            let backends = generation * BACKENDS_PER_GENERATION;
            let mut pick = LeastLoaded::default();
            for k in 0..MAX_HASH_MEMBERS {
                if k >= pool.slots {
                    break;
                }
                let at = (pool.first_slot + (start + k) % pool.slots) & (MAX_POOL_SLOTS - 1);
                let slot = FRONTEND_POOL_SLOTS.get(slots + at).ok_or(reason::TABLES)?;
                let backend = FRONTEND_BACKENDS
                    .get(backends + slot.backend % BACKENDS_PER_GENERATION)
                    .ok_or(reason::TABLES)?;
                pick.offer(slot.backend, load_of(backend), slot.seed as u32);
            }
            pick.chosen().ok_or(reason::POOL_DOWN)?
        }
        PoolPick::Lard { start, end, url } => {
            let mut target = hash_range(scratch, state_ptr, start, end);
            if url {
                // SAFETY: as above.
                let (from, to) =
                    unsafe { ((*scratch).scan.query_start, (*scratch).scan.query_end) };
                let query = hash_range(scratch, state_ptr, from, to);
                target = url_hash(target, query);
            }
            let key = lard_set_key(generation, pool_index, target, pool.lard_targets);
            // SAFETY: a value of the map, read under the program's RCU read lock; the
            // daemon replaces entries whole (`NO_PREALLOC`).
            let set = unsafe { FRONTEND_LARD_SETS.get(key) };
            // One member a `bpf_loop` step, the pass in the scratch value: unrolled,
            // the verifier would walk every combination of the pass's branches over
            // 32 members, past its million instructions.
            // SAFETY: `decide_request`'s scratch value, as there; written before the
            // loop, read after it, through the pointer.
            let pass = unsafe {
                (*scratch).lard = LardWalk {
                    pass: LardScan::default(),
                    servers: set.map_or(0, |s| s.servers),
                    first_slot: pool.first_slot,
                    members: pool.slots,
                    start: lard_start(target, pool.slots),
                    low: pool.lard_low,
                    broken: 0,
                };
                bpf_loop(MAX_HASH_MEMBERS, lard_step as *mut c_void, state_ptr, 0);
                if (*scratch).lard.broken != 0 {
                    return Err(reason::TABLES);
                }
                (*scratch).lard.pass
            };
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            let member = pass.read_only(set, target, pool.lard_high, now)?;
            let at = (pool.first_slot + member) & (MAX_POOL_SLOTS - 1);
            FRONTEND_POOL_SLOTS
                .get(slots + at)
                .ok_or(reason::TABLES)?
                .backend
        }
        PoolPick::StickyId { .. } => return Err(reason::TABLES),
    };
    usable_backend(generation, local)
}

/// The back-end `local` of `generation`, if it may take the connection.
#[inline(always)]
fn usable_backend(generation: u32, local: u32) -> Result<u32, u32> {
    if local >= BACKENDS_PER_GENERATION {
        return Err(reason::TABLES);
    }
    let index = generation * BACKENDS_PER_GENERATION + local;
    let backend = FRONTEND_BACKENDS.get(index).ok_or(reason::TABLES)?;
    if backend.flags & KernelBackend::USABLE == 0 {
        return Err(reason::BACKEND_UNUSABLE);
    }
    Ok(index)
}

/// The sticky-by-id slot of `pool` whose id is the buffer's `start..end`
/// ([`StickyId`]: one word compared a slot, the text read only for an id of eight bytes
/// or more). `Ok(None)` when no up member has that id; the slow path's reason when the
/// first slot whose word is the id's has a longer text that is not the id (the loop
/// goes on after no comparison of bytes, or the verifier walks each of its 32 turns
/// with and without one). Inlined: a call would take six arguments, and BPF calls take
/// five.
#[inline(always)]
fn sticky_by_id(
    scratch: *mut Scratch,
    generation: u32,
    pool: &KernelPool,
    start: u32,
    end: u32,
) -> Result<Option<u32>, u32> {
    // SAFETY: `decide_request`'s scratch value, as there; no `bpf_loop` call while
    // the reference lives.
    let buf = unsafe { &(*scratch).bytes };
    let id = StickyId::new(buf, start, end);
    let slots = generation * MAX_POOL_SLOTS;
    for k in 0..MAX_HASH_MEMBERS {
        if k >= pool.sticky_slots {
            break;
        }
        let at = (pool.sticky_first + k) & (MAX_POOL_SLOTS - 1);
        let slot = FRONTEND_POOL_SLOTS.get(slots + at).ok_or(reason::TABLES)?;
        if !id.may_be(slot) {
            continue;
        }
        if !id.is_whole_word() {
            let text = FRONTEND_RULE_TEXTS
                .get(generation * MAX_TEXTS + slot.id_text % MAX_TEXTS)
                .ok_or(reason::TABLES)?;
            if !id.is(buf, text) {
                return Err(reason::STICKY);
            }
        }
        return Ok(Some(slot.backend));
    }
    Ok(None)
}

/// `hash_bytes` of the scratch buffer's bytes `start..end`, eight a step: the first
/// [`HASH_STEPS_INLINE`] in line, the rest (a key over 32 bytes) a `bpf_loop` step each.
#[inline(always)]
fn hash_range(scratch: *mut Scratch, state_ptr: *mut c_void, start: u32, end: u32) -> u64 {
    // SAFETY: as in `decide_request`: through the pointer, before and after the loop.
    unsafe {
        (*scratch).hash = HashWalk::new(start, end);
        let mut more = true;
        for _ in 0..HASH_STEPS_INLINE {
            let s = &mut *scratch;
            if !s.hash.step(&s.bytes) {
                more = false;
                break;
            }
        }
        if more {
            bpf_loop(MAX_HASH_STEPS, hash_step as *mut c_void, state_ptr, 0);
        }
        (*scratch).hash.finish()
    }
}

/// One step of the request scan; `bpf_loop` stops at a non-zero return.
unsafe extern "C" fn scan_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `decide_request` passes its own `Loop`, alive for the whole loop, whose
    // scratch pointer is this CPU's value.
    let s = unsafe { &mut *(*ctx.cast::<Loop>()).scratch };
    if s.scan.step(&mut s.bytes) { 0 } else { 1 }
}

/// One field of a ClientHello.
unsafe extern "C" fn hello_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `scan_step`.
    let s = unsafe { &mut *(*ctx.cast::<Loop>()).scratch };
    if s.hello.step(&mut s.bytes) { 0 } else { 1 }
}

/// Bytes of the Cookie fields.
unsafe extern "C" fn cookie_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `scan_step`.
    let state = unsafe { &*ctx.cast::<Loop>() };
    let s = unsafe { &mut *state.scratch };
    let Some(set) = FRONTEND_RULE_SETS.get(state.generation) else {
        return 1;
    };
    if s.cookies.step(&mut s.scan, &s.bytes, set) {
        0
    } else {
        1
    }
}

/// [`TERMS_PER_STEP`] terms of the rule program, fewer at its end.
unsafe extern "C" fn eval_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `scan_step`.
    let state = unsafe { &*ctx.cast::<Loop>() };
    let s = unsafe { &mut *state.scratch };
    for _ in 0..TERMS_PER_STEP {
        let at = s.eval.at;
        if at >= state.terms || at >= MAX_TERMS {
            return 1;
        }
        let Some(term) = FRONTEND_RULE_TERMS.get(state.generation * MAX_TERMS + at) else {
            return 1;
        };
        let text_index = if KernelTerm::uses_text(term.op) {
            term.arg
        } else {
            0
        };
        let Some(text) =
            FRONTEND_RULE_TEXTS.get(state.generation * MAX_TEXTS + text_index % MAX_TEXTS)
        else {
            return 1;
        };
        if !s.eval.step(&s.scan, &s.bytes, term, text) {
            return 1;
        }
    }
    0
}

/// Eight bytes of a hash key.
unsafe extern "C" fn hash_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `scan_step`.
    let s = unsafe { &mut *(*ctx.cast::<Loop>()).scratch };
    if s.hash.step(&s.bytes) { 0 } else { 1 }
}

/// One member of a LARD pool, offered to the pass.
unsafe extern "C" fn lard_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `scan_step`.
    let state = unsafe { &*ctx.cast::<Loop>() };
    let s = unsafe { &mut *state.scratch };
    let walk = &mut s.lard;
    let k = index as u32;
    if k >= walk.members || walk.members > MAX_HASH_MEMBERS {
        return 1;
    }
    let i = (walk.start + k) % walk.members;
    let at = (walk.first_slot + i) & (MAX_POOL_SLOTS - 1);
    let Some(slot) = FRONTEND_POOL_SLOTS.get(state.generation * MAX_POOL_SLOTS + at) else {
        walk.broken = 1;
        return 1;
    };
    let backends = state.generation * BACKENDS_PER_GENERATION;
    let Some(backend) = FRONTEND_BACKENDS.get(backends + slot.backend % BACKENDS_PER_GENERATION)
    else {
        walk.broken = 1;
        return 1;
    };
    let in_set = walk.servers & (1 << (i & 63)) != 0;
    walk.pass
        .offer(i, slot.seed != 0, in_set, load_of(backend), walk.low);
    0
}

/// A test entry point, never attached: runs [`decide_request`] on the frame's TCP
/// payload (Ethernet, IPv4 with any options, TCP) and leaves the decision in
/// `FRONTEND_DISPATCH_PROBE`, so that tests run the matcher in the kernel
/// (`BPF_PROG_TEST_RUN`) without the handoff around it.
#[xdp]
pub fn frontend_dispatch_probe(ctx: XdpContext) -> u32 {
    let decision = probe(&ctx);
    if let Some(out) = FRONTEND_DISPATCH_PROBE.get_ptr_mut(0) {
        // SAFETY: the map's one value; the tests run one probe at a time.
        unsafe { *out = decision };
    }
    XDP_DROP
}

#[inline(never)]
fn probe(ctx: &XdpContext) -> KernelDecision {
    let byte = |offset: usize| -> Option<usize> {
        let mut b = 0u8;
        // SAFETY: one byte into a local; the kernel checks the frame's side.
        let rc =
            unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, (&mut b as *mut u8).cast(), 1) };
        (rc == 0).then_some(usize::from(b))
    };
    const IP: usize = 14;
    let Some(ihl) = byte(IP) else {
        return slow(reason::LOAD, u32::MAX);
    };
    let tcp = IP + (ihl & 0xf) * 4;
    let Some(data_offset) = byte(tcp + 12) else {
        return slow(reason::LOAD, u32::MAX);
    };
    let payload = tcp + (data_offset >> 4) * 4;
    let frame = ctx.data_end() - ctx.data();
    if frame < payload {
        return slow(reason::LOAD, u32::MAX);
    }
    decide_request(ctx, payload, frame - payload)
}
