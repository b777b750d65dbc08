//! The rules and pools compiled for the front-end's XDP program (issue 19, "Dispatch in
//! the kernel"): [`KernelProgram`], plain tables of `baton_common::kernel_dispatch`'s
//! structs that the daemon writes into the program's maps, and a report of which rules
//! and pools the kernel decides.
//!
//! What compiles to what (anything the kernel cannot judge exactly as
//! [`Dispatcher::decide`] would is "unknown", and a rule unknown for a request sends it
//! to the slow path; see `baton_common::kernel_dispatch`):
//!
//! | condition | in the kernel |
//! |---|---|
//! | `host` exact and `*.` wildcard, `path`, `path_prefix`, `extension`, `method` | compared with the request's bytes (`host` with a ClientHello's SNI); a list one term (up to four hosts or paths of up to 31 bytes, sixteen extensions or methods of up to eight) |
//! | `sni` exact and `*.` wildcard | compared with a ClientHello's SNI (a list one term); false for HTTP |
//! | `cookie` present or `equals` | read from the Cookie fields, for up to four cookie names (with the sticky pools'); other names: false without a Cookie field, else unknown |
//! | `query` | false without a query, else unknown |
//! | `path_regex`, `header`, `service` | unknown |
//! | `all`, `any`, `not` | Kleene's AND, OR, NOT |
//!
//! Pools: `round_robin` (a slot array that is one period of the smooth weighted round
//! robin over the up members) and `consistent_hash` with equal weights on `path`, `url`
//! or `host` (rendezvous over the up members, the same hash and order as
//! [`crate::pool::rendezvous`]), and `least_connections` over the up members (their
//! weights in the slots; the counts from the maps both engines read,
//! `baton_common::kernel_dispatch::backend_load`), and `lard` on `path`, `url` or
//! `host` over at most 32 members (every member a slot, the server sets in a map the
//! daemon writes from `Lard`; a request that would change a set goes to
//! the slow path). Weighted `consistent_hash` (its scores are floating point) and other
//! hash keys stay in userspace. A sticky pool's cookie is read in the kernel, whatever the policy: `by =
//! "id"` with no separator or a one-byte one (the id's hash finds the up member's slot,
//! then the bytes are compared), `by = "hash"` with equal weights (rendezvous over the
//! up members); a cookie the kernel cannot follow leaves requests with a Cookie field
//! to the slow path.

use std::{
    collections::HashMap,
    fmt,
    net::{SocketAddr, SocketAddrV4},
};

use baton_common::kernel_dispatch::{
    BACKENDS_PER_GENERATION, KernelCookieName, KernelPool, KernelRuleSet, KernelSlot, KernelTerm,
    KernelText, MAX_EVAL_DEPTH, MAX_HASH_MEMBERS, MAX_KERNEL_COOKIES, MAX_KERNEL_POOLS,
    MAX_POOL_SLOTS, MAX_ROUND_ROBIN_SLOTS, MAX_SET_VALUES, MAX_TERMS, MAX_TEXTS, RuleTables,
    reason, set_value,
};
use baton_proto::frontend::Instant;

use crate::{
    dispatcher::StickyBy,
    dispatcher::{Pool, Rule},
    hash::hash_bytes,
    matcher::{Condition, HostPattern},
    pool::{Candidates, HashKey, Policy, Server, SmoothWeighted},
};

/// The dispatcher's rules and pools as the XDP program reads them. Back-end indexes in
/// `slots` are into `backends`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelProgram {
    pub set: KernelRuleSet,
    pub terms: Vec<KernelTerm>,
    pub texts: Vec<KernelText>,
    pub pools: Vec<KernelPool>,
    pub slots: Vec<KernelSlot>,
    /// The back-ends the slots name.
    pub backends: Vec<SocketAddrV4>,
    /// The cookies the kernel reads ([`KernelRuleSet::cookie_names`]).
    pub cookies: Vec<KernelCookieName>,
    /// Where each rule is decided, in `[dispatch]` order.
    pub rules: Vec<Placement>,
    /// Where each pool picks its back-end, in the dispatcher's pool order.
    pub pool_placements: Vec<Placement>,
}

impl KernelProgram {
    /// The tables as slices, for `baton_common::kernel_dispatch::decide`.
    pub fn tables(&self) -> RuleTables<'_> {
        RuleTables {
            set: self.set,
            terms: &self.terms,
            texts: &self.texts,
            pools: &self.pools,
            slots: &self.slots,
            loads: &[],
            lard_sets: &[],
            now: 0,
        }
    }
}

/// Where a rule (or a pool) is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    /// What the kernel never judges here: requests that reach this rule go to the slow
    /// path unless the rest of its condition rules it out.
    pub userspace: Vec<String>,
    /// What the kernel judges for some requests only (a cookie rule, for requests
    /// without a Cookie field).
    pub unless: Vec<&'static str>,
    /// For a pool: how the kernel picks.
    pub how: Option<String>,
}

impl Placement {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            userspace: Vec::new(),
            unless: Vec::new(),
            how: None,
        }
    }

    /// Whether the kernel decides every request that reaches it.
    pub fn in_kernel(&self) -> bool {
        self.userspace.is_empty() && self.unless.is_empty()
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.userspace.is_empty() {
            write!(f, "in userspace: {}", self.userspace.join(", "))?;
            if let Some(how) = &self.how {
                // A pool whose policy is userspace's but whose stickiness is not.
                write!(f, "; in the kernel: {how}")?;
            }
            return Ok(());
        }
        write!(f, "in the kernel")?;
        if let Some(how) = &self.how {
            write!(f, " ({how})")?;
        }
        if !self.unless.is_empty() {
            write!(f, ", unless the request has {}", self.unless.join(" or "))?;
        }
        Ok(())
    }
}

const NO_COOKIE: &str = "a Cookie field";
const NO_QUERY: &str = "a query";

/// The slot of the cookie `name` the kernel reads (a new one if there is room), for a
/// sticky pool that cuts it at `separator` (`Some`) or a rule (`None`, any slot of that
/// name serves); `None` for a cookie the kernel does not read.
fn cookie_slot(
    cookies: &mut Vec<KernelCookieName>,
    name: &str,
    separator: Option<Option<&str>>,
) -> Option<u32> {
    let wanted = KernelCookieName::new(name.as_bytes(), separator.flatten().map(str::as_bytes))?;
    let same_name = |c: &KernelCookieName| c.len == wanted.len && c.bytes == wanted.bytes;
    if let Some(k) = cookies.iter().position(|c| {
        same_name(c)
            && (separator.is_none()
                || c.separator == wanted.separator
                || c.separator == KernelCookieName::NO_SEPARATOR)
    }) {
        if separator.is_some() {
            // A rule's slot (no separator) takes the pool's: rules read the value only.
            cookies[k].separator = wanted.separator;
        }
        return Some(k as u32);
    }
    if cookies.len() >= MAX_KERNEL_COOKIES {
        return None;
    }
    cookies.push(wanted);
    Some(cookies.len() as u32 - 1)
}

/// Builds the program; see the module documentation.
pub(crate) fn compile(
    rules: &[Rule],
    pools: &[Pool],
    servers: &[Server],
    default_pool: usize,
    now: Instant,
    max_head_len: usize,
    max_headers: usize,
) -> KernelProgram {
    let mut out = KernelProgram {
        texts: vec![KernelText::default()],
        ..KernelProgram::default()
    };
    let mut texts: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut full = false;
    for (i, rule) in rules.iter().enumerate() {
        let mut placement = Placement::new(&rule.name);
        let mut terms = Vec::new();
        let texts_before = out.texts.len();
        let cookies_before = out.cookies.clone();
        emit(
            &rule.condition,
            &mut terms,
            &mut Tables {
                texts: &mut out.texts,
                index: &mut texts,
                cookies: &mut out.cookies,
            },
            &mut placement,
        );
        // The condition's last term ends the rule: a `RULE_END` of its own would be a
        // term more to run.
        if let Some(last) = terms.last_mut() {
            last.op |= KernelTerm::ENDS_RULE;
            last.rule = i as u32;
            last.pool = rule.pool as u32;
        }
        let too_deep = max_depth(&terms) > MAX_EVAL_DEPTH;
        // Room for this rule, and for a one-term stop after it should the next not fit.
        let too_long = out.terms.len() + terms.len() + 1 > MAX_TERMS as usize;
        if full || too_deep || too_long || rule.pool >= MAX_KERNEL_POOLS as usize {
            placement.userspace = vec![if full {
                "after the kernel's last rule".to_owned()
            } else if too_deep {
                format!("nested deeper than {MAX_EVAL_DEPTH}")
            } else if too_long {
                format!("past the kernel's {MAX_TERMS} terms")
            } else {
                format!("its pool is past the kernel's {MAX_KERNEL_POOLS}")
            }];
            placement.unless.clear();
            if !full {
                // Every request that reaches this rule goes to the slow path.
                out.terms.push(KernelTerm {
                    op: KernelTerm::UNKNOWN | KernelTerm::ENDS_RULE,
                    rule: i as u32,
                    ..KernelTerm::default()
                });
                full = true;
            }
            // The texts and cookies it added are unused, but harmless; keep the tables
            // small anyway.
            if texts_before < out.texts.len() {
                out.texts.truncate(texts_before);
                texts.retain(|_, &mut t| (t as usize) < texts_before);
            }
            out.cookies = cookies_before;
        } else {
            out.terms.extend(terms);
        }
        out.rules.push(placement);
    }

    for pool in pools {
        let (kernel_pool, placement) = compile_pool(pool, servers, now, &mut out, &mut texts);
        if out.pools.len() < MAX_KERNEL_POOLS as usize {
            out.pools.push(kernel_pool);
        }
        out.pool_placements.push(placement);
    }
    let enabled = default_pool < out.pools.len();
    let mut cookie_names = [KernelCookieName::default(); MAX_KERNEL_COOKIES];
    for (slot, name) in cookie_names.iter_mut().zip(&out.cookies) {
        *slot = *name;
    }
    out.set = KernelRuleSet {
        flags: if enabled { KernelRuleSet::ENABLED } else { 0 },
        terms: out.terms.len() as u32,
        default_pool: default_pool as u32,
        max_head_len: u32::try_from(max_head_len).unwrap_or(u32::MAX),
        max_headers: u32::try_from(max_headers).unwrap_or(u32::MAX),
        cookies: out.cookies.len() as u32,
        cookie_names,
    };
    out
}

/// The tables a rule's leaves add to.
struct Tables<'a> {
    texts: &'a mut Vec<KernelText>,
    index: &'a mut HashMap<Vec<u8>, u32>,
    cookies: &'a mut Vec<KernelCookieName>,
}

impl Tables<'_> {
    /// The index of `text` in the texts, added if there is room.
    /// The index of a set term's text of `values` ([`KernelText::set`]), added if there
    /// is room.
    fn set(&mut self, values: &[&[u8]]) -> Option<u32> {
        if self.texts.len() >= MAX_TEXTS as usize {
            return None;
        }
        self.texts.push(KernelText::set(values.iter().copied())?);
        Some(self.texts.len() as u32 - 1)
    }

    /// The index of a list term's text of `entries` ([`KernelText::list`]), added if
    /// there is room.
    fn list(&mut self, entries: &[(&[u8], bool)]) -> Option<u32> {
        if self.texts.len() >= MAX_TEXTS as usize {
            return None;
        }
        self.texts.push(KernelText::list(entries.iter().copied())?);
        Some(self.texts.len() as u32 - 1)
    }

    fn text(&mut self, text: &[u8]) -> Option<u32> {
        match self.index.get(text) {
            Some(&t) => Some(t),
            None if self.texts.len() < MAX_TEXTS as usize => KernelText::new(text).map(|t| {
                self.texts.push(t);
                let i = (self.texts.len() - 1) as u32;
                self.index.insert(text.to_vec(), i);
                i
            }),
            None => None,
        }
    }
}

fn text_over_bounds() -> String {
    format!(
        "a text over the kernel's bounds ({} bytes, {MAX_TEXTS} texts)",
        baton_common::kernel_dispatch::MAX_TEXT_LEN
    )
}

/// The postfix form of `c`, appended to `terms`.
fn emit(
    c: &Condition,
    terms: &mut Vec<KernelTerm>,
    tables: &mut Tables<'_>,
    placement: &mut Placement,
) {
    let op = |op, arg| KernelTerm {
        op,
        arg,
        ..KernelTerm::default()
    };
    match c {
        Condition::Host(patterns) | Condition::Sni(patterns) => {
            let entries: Vec<(&[u8], bool)> = patterns
                .iter()
                .map(|p| match p {
                    HostPattern::Exact(name) => (name.as_bytes(), false),
                    HostPattern::Subdomain(suffix) => (suffix.as_bytes(), true),
                })
                .collect();
            let ops = if matches!(c, Condition::Host(_)) {
                [
                    KernelTerm::HOST_EXACT,
                    KernelTerm::HOST_SUFFIX,
                    KernelTerm::HOST_IN,
                ]
            } else {
                [
                    KernelTerm::SNI_EXACT,
                    KernelTerm::SNI_SUFFIX,
                    KernelTerm::SNI_IN,
                ]
            };
            any_entry(terms, tables, placement, &entries, ops);
        }
        Condition::PathExact(paths) | Condition::PathPrefix(paths) => {
            let prefix = matches!(c, Condition::PathPrefix(_));
            let entries: Vec<(&[u8], bool)> =
                paths.iter().map(|p| (p.as_bytes(), prefix)).collect();
            let ops = [
                KernelTerm::PATH_EXACT,
                KernelTerm::PATH_PREFIX,
                KernelTerm::PATH_IN,
            ];
            any_entry(terms, tables, placement, &entries, ops);
        }
        Condition::Extension(exts) => any_value(
            terms,
            tables,
            placement,
            exts,
            (KernelTerm::EXTENSION, KernelTerm::EXTENSION_IN),
        ),
        Condition::Method(methods) => any_value(
            terms,
            tables,
            placement,
            methods,
            (KernelTerm::METHOD, KernelTerm::METHOD_IN),
        ),
        Condition::PathRegex(_) | Condition::Header { .. } | Condition::Service(_) => {
            let what = match c {
                Condition::PathRegex(_) => "path_regex",
                Condition::Header { .. } => "header",
                _ => "service",
            };
            if !placement.userspace.iter().any(|u| u == what) {
                placement.userspace.push(what.to_owned());
            }
            terms.push(op(KernelTerm::UNKNOWN, 0));
        }
        Condition::Cookie { name, equals, .. } => {
            let slot = cookie_slot(tables.cookies, name, None);
            let value = match equals {
                Some(v) => tables.text(v.as_bytes()).ok_or(()),
                None => Ok(0),
            };
            match (slot, value) {
                (Some(cookie), Ok(arg)) => terms.push(KernelTerm {
                    op: if equals.is_some() {
                        KernelTerm::COOKIE_EQUALS
                    } else {
                        KernelTerm::COOKIE_PRESENT
                    },
                    arg,
                    cookie,
                    ..KernelTerm::default()
                }),
                (_, Err(())) => {
                    placement.userspace.push(text_over_bounds());
                    terms.push(op(KernelTerm::UNKNOWN, 0));
                }
                (None, Ok(_)) => {
                    if !placement.unless.contains(&NO_COOKIE) {
                        placement.unless.push(NO_COOKIE);
                    }
                    terms.push(op(KernelTerm::COOKIE, 0));
                }
            }
        }
        Condition::Query { .. } => {
            if !placement.unless.contains(&NO_QUERY) {
                placement.unless.push(NO_QUERY);
            }
            terms.push(op(KernelTerm::QUERY, 0));
        }
        Condition::All(list) | Condition::Any(list) => {
            let (empty, join) = match c {
                Condition::All(_) => (KernelTerm::TRUE, KernelTerm::AND),
                _ => (KernelTerm::FALSE, KernelTerm::OR),
            };
            if list.is_empty() {
                terms.push(op(empty, 0));
            }
            for (k, inner) in list.iter().enumerate() {
                emit(inner, terms, tables, placement);
                if k > 0 {
                    terms.push(op(join, 0));
                }
            }
        }
        Condition::Not(inner) => {
            emit(inner, terms, tables, placement);
            terms.push(op(KernelTerm::NOT, 0));
        }
    }
}

/// `entries` ORed, each a text and whether it is partial (a host suffix, a path
/// prefix), as a condition on the host, the SNI or the path: list terms
/// ([`KernelText::list`], `ops[2]`) of up to eight entries that fit one text, a leaf
/// (`ops[0]` whole, `ops[1]` partial) for an entry too long for a list. A single entry
/// stays a leaf: a list of one costs more.
fn any_entry(
    terms: &mut Vec<KernelTerm>,
    tables: &mut Tables<'_>,
    placement: &mut Placement,
    entries: &[(&[u8], bool)],
    [whole, partial, list]: [u32; 3],
) {
    let mut items: Vec<(u32, Option<u32>)> = Vec::new();
    let mut leaves: Vec<(&[u8], bool)> = Vec::new();
    if entries.len() >= 2 {
        // Greedily, in order: each list takes entries while they fit.
        let mut chunks: Vec<Vec<(&[u8], bool)>> = vec![Vec::new()];
        for &entry in entries {
            let chunk = chunks.last_mut().expect("one chunk at least");
            chunk.push(entry);
            if KernelText::list(chunk.iter().copied()).is_none() {
                chunk.pop();
                if KernelText::list([entry]).is_some() {
                    chunks.push(vec![entry]);
                } else {
                    leaves.push(entry);
                }
            }
        }
        for chunk in chunks {
            match chunk.len() {
                0 => {}
                1 => leaves.push(chunk[0]),
                _ => match tables.list(&chunk) {
                    Some(arg) => items.push((list, Some(arg))),
                    None => leaves.extend(chunk),
                },
            }
        }
    } else {
        leaves.extend(entries.iter().copied());
    }
    for (text, is_partial) in leaves {
        let arg = tables.text(text);
        if arg.is_none() {
            placement.userspace.push(text_over_bounds());
        }
        items.push((if is_partial { partial } else { whole }, arg));
    }
    push_ored(terms, &items);
}

/// Terms `(op, text)` ORed; an item without a text is unknown; none is false.
fn push_ored(terms: &mut Vec<KernelTerm>, items: &[(u32, Option<u32>)]) {
    for (k, &(op, arg)) in items.iter().enumerate() {
        terms.push(KernelTerm {
            op: if arg.is_some() {
                op
            } else {
                KernelTerm::UNKNOWN
            },
            arg: arg.unwrap_or(0),
            ..KernelTerm::default()
        });
        if k > 0 {
            terms.push(KernelTerm {
                op: KernelTerm::OR,
                ..KernelTerm::default()
            });
        }
    }
    if items.is_empty() {
        terms.push(KernelTerm::default());
    }
}

/// `values` ORed, as a condition on one part of the request (`leaf` compares one value,
/// `set` several): the values that fit a set term ([`set_value`]) in set terms of at
/// most [`MAX_SET_VALUES`], the others leaves of their own. A single short value stays a
/// leaf: a set of one costs as much. A set is one term where a leaf per value and an
/// `OR` between each two cost a term each.
fn any_value(
    terms: &mut Vec<KernelTerm>,
    tables: &mut Tables<'_>,
    placement: &mut Placement,
    values: &[Box<str>],
    (leaf, set): (u32, u32),
) {
    let short: Vec<&[u8]> = values
        .iter()
        .map(|v| v.as_bytes())
        .filter(|v| set_value(v))
        .collect();
    let mut items: Vec<(u32, Option<u32>)> = Vec::new();
    let mut leaves: Vec<&[u8]> = Vec::new();
    if short.len() >= 2 {
        for chunk in short.chunks(MAX_SET_VALUES) {
            match tables.set(chunk) {
                Some(arg) => items.push((set, Some(arg))),
                None => leaves.extend(chunk),
            }
        }
        leaves.extend(
            values
                .iter()
                .map(|v| v.as_bytes())
                .filter(|v| !set_value(v)),
        );
    } else {
        leaves.extend(values.iter().map(|v| v.as_bytes()));
    }
    for value in leaves {
        let arg = tables.text(value);
        if arg.is_none() {
            placement.userspace.push(text_over_bounds());
        }
        items.push((leaf, arg));
    }
    push_ored(terms, &items);
}

/// The deepest the evaluation stack grows running `terms`.
fn max_depth(terms: &[KernelTerm]) -> u32 {
    let (mut depth, mut max) = (0i64, 0i64);
    for t in terms {
        depth += match t.op & !KernelTerm::ENDS_RULE {
            KernelTerm::AND | KernelTerm::OR | KernelTerm::RULE_END => -1,
            KernelTerm::NOT => 0,
            _ => 1,
        };
        max = max.max(depth);
        if t.op & KernelTerm::ENDS_RULE != 0 {
            depth -= 1;
        }
    }
    max as u32
}

/// A pool: its policy, then its stickiness, whose slots follow the policy's.
fn compile_pool(
    pool: &Pool,
    servers: &[Server],
    now: Instant,
    out: &mut KernelProgram,
    texts: &mut HashMap<Vec<u8>, u32>,
) -> (KernelPool, Placement) {
    let (mut kernel_pool, mut placement) = compile_policy(pool, servers, now, out);
    let Some(sticky) = &pool.sticky else {
        return (kernel_pool, placement);
    };
    match compile_sticky(pool, sticky, servers, now, out, texts) {
        Ok((flags, cookie, first, slots)) => {
            let by = if flags == KernelPool::STICKY_BY_ID {
                "id"
            } else {
                "hash"
            };
            let how = format!("sticky by {by} on the cookie {}", sticky.cookie);
            placement.how = Some(match placement.how.take() {
                Some(policy) => format!("{policy}; {how}"),
                None => how,
            });
            kernel_pool.flags |= flags;
            kernel_pool.cookie = cookie;
            kernel_pool.sticky_first = first;
            kernel_pool.sticky_slots = slots;
        }
        Err(()) => {
            kernel_pool.flags |= KernelPool::STICKY;
            placement.unless.push(NO_COOKIE);
        }
    }
    (kernel_pool, placement)
}

/// A sticky pool's slots (see [`KernelPool::sticky_first`]), its flag and its cookie;
/// `Err` for stickiness the kernel does not follow.
fn compile_sticky(
    pool: &Pool,
    sticky: &crate::dispatcher::Sticky,
    servers: &[Server],
    now: Instant,
    out: &mut KernelProgram,
    texts: &mut HashMap<Vec<u8>, u32>,
) -> Result<(u32, u32, u32, u32), ()> {
    let candidates = Candidates {
        members: &pool.members,
        servers,
        now,
        exclude: &[],
        client_ipv6: None,
    };
    let up = (0..pool.members.len()).filter(|&i| candidates.accept(i));
    let (flags, separator, members): (u32, Option<&str>, Vec<usize>) = match &sticky.by {
        // An id of a member that is down is no member's here: the policy picks, as in
        // `Sticky::choose`.
        StickyBy::Id { separator } => (
            KernelPool::STICKY_BY_ID,
            separator.as_deref(),
            up.filter(|&i| pool.members[i].id.is_some()).collect(),
        ),
        // `rendezvous` with unequal weights scores in floating point.
        StickyBy::Hash if pool.members.windows(2).all(|w| w[0].weight == w[1].weight) => {
            (KernelPool::STICKY_BY_HASH, None, up.collect())
        }
        StickyBy::Hash => return Err(()),
    };
    if members.len() > MAX_HASH_MEMBERS as usize
        || out.slots.len() + members.len() > MAX_POOL_SLOTS as usize
    {
        return Err(());
    }
    let by_id = flags == KernelPool::STICKY_BY_ID;
    let cookie =
        cookie_slot(&mut out.cookies, &sticky.cookie, by_id.then_some(separator)).ok_or(())?;
    let mut slots = Vec::with_capacity(members.len());
    for &i in &members {
        let m = &pool.members[i];
        let backend = backend_index(m.addr, &mut out.backends).ok_or(())?;
        let (id_text, seed) = match (&m.id, by_id) {
            (Some(id), true) => {
                let mut tables = Tables {
                    texts: &mut out.texts,
                    index: texts,
                    cookies: &mut out.cookies,
                };
                (
                    tables.text(id.as_bytes()).ok_or(())?,
                    hash_bytes(id.as_bytes()),
                )
            }
            _ => (0, m.seed),
        };
        slots.push(KernelSlot {
            backend,
            id_text,
            seed,
        });
    }
    let first = out.slots.len() as u32;
    let n = slots.len() as u32;
    out.slots.extend(slots);
    Ok((flags, cookie, first, n))
}

/// The index of back-end `addr` in `backends`, added if there is room.
/// `None` for an IPv6 back-end too: the XDP program's tables are IPv4's.
fn backend_index(addr: SocketAddr, backends: &mut Vec<SocketAddrV4>) -> Option<u32> {
    let SocketAddr::V4(addr) = addr else {
        return None;
    };
    match backends.iter().position(|b| *b == addr) {
        Some(i) => Some(i as u32),
        None if backends.len() < BACKENDS_PER_GENERATION as usize => {
            backends.push(addr);
            Some(backends.len() as u32 - 1)
        }
        None => None,
    }
}

/// A pool's policy, stickiness aside.
fn compile_policy(
    pool: &Pool,
    servers: &[Server],
    now: Instant,
    out: &mut KernelProgram,
) -> (KernelPool, Placement) {
    let mut placement = Placement::new(&pool.name);
    let slow = |placement: &mut Placement, why: String| {
        placement.userspace.push(why);
        KernelPool {
            policy: KernelPool::SLOW_PATH,
            reason: reason::POOL_POLICY,
            ..KernelPool::default()
        }
    };
    // The XDP program's dispatch is IPv4's (its back-end table holds IPv4 addresses,
    // and an IPv6 client never reaches it): a pool with an IPv6 member picks in
    // userspace, for both families, so that one pool is never split between engines.
    if pool.members.iter().any(|m| m.addr.is_ipv6()) {
        return (slow(&mut placement, "IPv6 back-ends".into()), placement);
    }
    let candidates = Candidates {
        members: &pool.members,
        servers,
        now,
        exclude: &[],
        client_ipv6: None,
    };
    let up: Vec<usize> = (0..pool.members.len())
        .filter(|&i| candidates.accept(i))
        .collect();
    // The back-ends' slots, in pick order (round robin) or pool order (hashing).
    let (policy, picks): (u32, Vec<usize>) = match &pool.policy {
        Policy::SmoothWeighted(_) => {
            let gcd = up.iter().map(|&i| pool.members[i].weight).fold(0, gcd);
            let period: u64 = up
                .iter()
                .map(|&i| u64::from(pool.members[i].weight / gcd.max(1)))
                .sum();
            if period > u64::from(MAX_ROUND_ROBIN_SLOTS) {
                let why = format!(
                    "round robin whose period (weights over their gcd) is over {MAX_ROUND_ROBIN_SLOTS}"
                );
                return (slow(&mut placement, why), placement);
            }
            // One period of the dispatcher's own smooth weighted round robin: with
            // weights scaled by their gcd it picks the same sequence, so the first
            // `period` picks are a whole period.
            let mut swrr = SmoothWeighted::new(pool.members.len());
            let picks = (0..period)
                .filter_map(|_| swrr.select(&candidates))
                .collect();
            placement.how = Some("round robin".to_owned());
            (KernelPool::ROUND_ROBIN, picks)
        }
        Policy::ConsistentHash(key) => {
            let uniform = pool.members.windows(2).all(|w| w[0].weight == w[1].weight);
            let policy = match key {
                HashKey::Path => Some((KernelPool::HASH_PATH, "path")),
                HashKey::Url => Some((KernelPool::HASH_URL, "url")),
                HashKey::Host => Some((KernelPool::HASH_HOST, "host")),
                _ => None,
            };
            match policy {
                _ if !uniform => {
                    let why = "consistent_hash with unequal weights (floating point)";
                    return (slow(&mut placement, why.to_owned()), placement);
                }
                None => {
                    let why = "consistent_hash on this hash_key".to_owned();
                    return (slow(&mut placement, why), placement);
                }
                Some(_) if up.len() > MAX_HASH_MEMBERS as usize => {
                    let why =
                        format!("consistent_hash over more than {MAX_HASH_MEMBERS} back-ends");
                    return (slow(&mut placement, why), placement);
                }
                Some((policy, key)) => {
                    placement.how = Some(format!("consistent_hash on the {key}"));
                    (policy, up)
                }
            }
        }
        Policy::LeastConnections(_) => {
            if up.len() > MAX_HASH_MEMBERS as usize {
                let why = format!("least_connections over more than {MAX_HASH_MEMBERS} back-ends");
                return (slow(&mut placement, why), placement);
            }
            placement.how = Some("least connections".to_owned());
            (KernelPool::LEAST_CONNECTIONS, up)
        }
        Policy::Lard(lard) => {
            let policy = match lard.target {
                HashKey::Path => Some((KernelPool::LARD_PATH, "path")),
                HashKey::Url => Some((KernelPool::LARD_URL, "url")),
                HashKey::Host => Some((KernelPool::LARD_HOST, "host")),
                _ => None,
            };
            match policy {
                None => {
                    let why = "lard on this target".to_owned();
                    return (slow(&mut placement, why), placement);
                }
                Some(_) if pool.members.len() > MAX_HASH_MEMBERS as usize => {
                    let why = format!("lard over more than {MAX_HASH_MEMBERS} back-ends");
                    return (slow(&mut placement, why), placement);
                }
                Some((policy, key)) => {
                    placement.how = Some(format!(
                        "lard on the {key}; a request that changes a server set in userspace"
                    ));
                    // Every member, up or not: a set names members by their index.
                    (policy, (0..pool.members.len()).collect())
                }
            }
        }
    };
    let room = MAX_POOL_SLOTS as usize - out.slots.len().min(MAX_POOL_SLOTS as usize);
    let mut slots = Vec::with_capacity(picks.len());
    for &i in &picks {
        let m = &pool.members[i];
        let Some(backend) = backend_index(m.addr, &mut out.backends) else {
            let why = format!("past the kernel's {BACKENDS_PER_GENERATION} back-ends");
            return (slow(&mut placement, why), placement);
        };
        slots.push(KernelSlot {
            backend,
            id_text: 0,
            seed: match policy {
                KernelPool::LEAST_CONNECTIONS => u64::from(m.weight),
                KernelPool::LARD_PATH | KernelPool::LARD_URL | KernelPool::LARD_HOST => {
                    u64::from(candidates.accept(i))
                }
                _ => m.seed,
            },
        });
    }
    if slots.len() > room {
        let why = format!("past the kernel's {MAX_POOL_SLOTS} slots");
        return (slow(&mut placement, why), placement);
    }
    let (lard_low, lard_high, lard_targets) = match &pool.policy {
        Policy::Lard(lard) => (lard.low, lard.high, lard.targets()),
        _ => (0, 0, 0),
    };
    let kernel_pool = KernelPool {
        policy,
        reason: 0,
        first_slot: out.slots.len() as u32,
        slots: slots.len() as u32,
        lard_low,
        lard_high,
        lard_targets,
        ..KernelPool::default()
    };
    out.slots.extend(slots);
    (kernel_pool, placement)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
