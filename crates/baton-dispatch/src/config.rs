//! The TOML configuration: the file's shape (serde, unknown keys refused) and its
//! compilation into a [`Dispatcher`], checking everything that serde cannot.
//!
//! Every value whose check can fail after parsing is read as a [`Spanned`] one, so the
//! error says its line as well as its field.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::SocketAddr,
    ops::Range,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::{
    ConfigError, Dispatcher, HealthCheck,
    dispatcher::{HealthPolicy, Pool, Rule, Sticky, StickyBy},
    matcher::{Condition, HostPattern, PathRegex, SharedNames, ValueTest},
    pool::{HashKey, Lard, LeastConnections, Member, Policy, Server, SmoothWeighted},
};

/// The 503 body when a request's pool has no back-end up and no body is configured.
pub const DEFAULT_UNAVAILABLE_BODY: &str = "<html><body><h1>503 Service Unavailable</h1>\n\
    No server is available to handle this request.\n</body></html>\n";

/// The dispatcher's configuration as deserialized, not yet checked: for a program whose
/// own TOML file holds it as a table (the front-end daemon's `[dispatch]`). Deserialize
/// it as part of the whole file, so that every value keeps its place in that file, then
/// give it to [`Dispatcher::from_table`] with the file's text.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct DispatchTable(FileConfig);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default_pool: Spanned<String>,
    unavailable_body: Option<String>,
    #[serde(default)]
    health: HealthFile,
    pools: BTreeMap<String, Spanned<PoolFile>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleFile>>,
}

/// `[health]`: passive marking (`failures`, `backoff_ms`, `max_backoff_ms`) and the
/// active checks every pool inherits (the keys of [`CheckFile`]; on when `path` is set).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    #[serde(default = "default_failures")]
    failures: Spanned<u32>,
    #[serde(default = "default_backoff_ms")]
    backoff_ms: Spanned<u64>,
    #[serde(default = "default_max_backoff_ms")]
    max_backoff_ms: Spanned<u64>,
    path: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
}

impl Default for HealthFile {
    fn default() -> Self {
        Self {
            failures: default_failures(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            path: None,
            port: None,
            interval_ms: None,
            timeout_ms: None,
            rise: None,
            fall: None,
        }
    }
}

impl HealthFile {
    /// The active-check keys, as a pool's `health` table would give them.
    fn check(&self) -> CheckFile {
        CheckFile {
            path: self.path.clone(),
            port: self.port.clone(),
            interval_ms: self.interval_ms.clone(),
            timeout_ms: self.timeout_ms.clone(),
            rise: self.rise.clone(),
            fall: self.fall.clone(),
        }
    }
}

/// Active HTTP check settings: `[health]`'s, or a pool's `health` table, whose keys
/// override `[health]`'s one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    path: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
}

/// HAProxy's defaults: `inter 2s`, `rise 2`, `fall 3`; a check that takes longer than a
/// second on a LAN is as good as failed.
const DEFAULT_CHECK_INTERVAL_MS: u64 = 2_000;
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 1_000;
const DEFAULT_CHECK_RISE: u32 = 2;
const DEFAULT_CHECK_FALL: u32 = 3;

fn default_failures() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn default_backoff_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1_000)
}
fn default_max_backoff_ms() -> Spanned<u64> {
    Spanned::new(0..0, 60_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    #[serde(default)]
    policy: PolicyName,
    backends: Vec<Spanned<BackendFile>>,
    hash_key: Option<Spanned<HashKeyFile>>,
    lard: Option<Spanned<LardFile>>,
    sticky: Option<Spanned<StickyFile>>,
    health: Option<Spanned<CheckFile>>,
}

/// A pool's policy with the keys that only it takes, as one value: compiling matches on
/// this, so no key can reach a policy it does not belong to. The file keeps them as
/// sibling fields (`policy = "consistent_hash"`, `hash_key = ...`), which
/// [`PoolFile::policy`] turns into this, refusing a key set beside another policy.
enum PolicyFile<'p> {
    RoundRobin,
    LeastConnections,
    /// The key, if set (the request path otherwise).
    ConsistentHash(Option<&'p Spanned<HashKeyFile>>),
    /// The LARD settings, if set (the paper's otherwise).
    Lard(Option<&'p Spanned<LardFile>>),
}

impl PoolFile {
    /// The policy with its keys; a key beside a policy that does not take it is an error
    /// at the key's line, naming the policy it is for.
    fn policy(&self, field: &str, lines: &Lines<'_>) -> Result<PolicyFile<'_>, ConfigError> {
        let misplaced = |what: &str, policy: &str, span: Range<usize>| {
            Err(invalid(
                lines.of(span),
                format!("{field}.{what}"),
                format!("only for `policy = \"{policy}\"`"),
            ))
        };
        if let Some(k) = &self.hash_key
            && self.policy != PolicyName::ConsistentHash
        {
            return misplaced("hash_key", "consistent_hash", k.span());
        }
        if let Some(l) = &self.lard
            && self.policy != PolicyName::Lard
        {
            return misplaced("lard", "lard", l.span());
        }
        Ok(match self.policy {
            PolicyName::RoundRobin => PolicyFile::RoundRobin,
            PolicyName::LeastConnections => PolicyFile::LeastConnections,
            PolicyName::ConsistentHash => PolicyFile::ConsistentHash(self.hash_key.as_ref()),
            PolicyName::Lard => PolicyFile::Lard(self.lard.as_ref()),
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PolicyName {
    #[default]
    RoundRobin,
    LeastConnections,
    ConsistentHash,
    Lard,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    address: SocketAddr,
    #[serde(default = "one")]
    weight: u32,
    id: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
enum HashKeyFile {
    Path,
    Url,
    Host,
    ClientAddress,
    Header(String),
    Cookie(String),
    Query(String),
}

impl HashKeyFile {
    fn compile(&self) -> Result<HashKey, &'static str> {
        let name = |n: &str| {
            if n.is_empty() {
                Err("the name must not be empty")
            } else {
                Ok(Box::from(n))
            }
        };
        Ok(match self {
            Self::Path => HashKey::Path,
            Self::Url => HashKey::Url,
            Self::Host => HashKey::Host,
            Self::ClientAddress => HashKey::ClientAddress,
            Self::Header(n) => HashKey::Header(name(n)?),
            Self::Cookie(n) => HashKey::Cookie(name(n)?),
            Self::Query(n) => HashKey::Query(name(n)?),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LardFile {
    #[serde(default = "path_key")]
    target: HashKeyFile,
    #[serde(default = "default_low")]
    low_load: u32,
    #[serde(default = "default_high")]
    high_load: u32,
    #[serde(default = "default_shrink_ms")]
    shrink_after_ms: u64,
    #[serde(default = "default_targets")]
    targets: usize,
}

fn path_key() -> HashKeyFile {
    HashKeyFile::Path
}
// The paper's values (Pai et al. 1998, §2.2): T_low 25, T_high 65 connections, K 20 s.
fn default_low() -> u32 {
    25
}
fn default_high() -> u32 {
    65
}
fn default_shrink_ms() -> u64 {
    20_000
}
fn default_targets() -> usize {
    16_384
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyFile {
    cookie: String,
    #[serde(default)]
    by: StickyByFile,
    separator: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StickyByFile {
    #[default]
    Id,
    Hash,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    pool: Spanned<String>,
    #[serde(rename = "match")]
    condition: Spanned<MatchFile>,
}

/// A `match` table: every key given must hold (they are ANDed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    host: Option<Names>,
    sni: Option<Names>,
    service: Option<Names>,
    path: Option<Names>,
    path_prefix: Option<Names>,
    path_regex: Option<String>,
    extension: Option<Names>,
    method: Option<Names>,
    header: Option<HeaderFile>,
    cookie: Option<NamedValueFile>,
    query: Option<NamedValueFile>,
    all: Option<Vec<MatchFile>>,
    any: Option<Vec<MatchFile>>,
    not: Option<Box<MatchFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFile {
    name: String,
    equals: Option<String>,
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedValueFile {
    name: String,
    equals: Option<String>,
}

/// A string or a list of strings (`host = "a"` or `host = ["a", "b"]`).
#[derive(Debug)]
struct Names(Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Names, E> {
                Ok(Names(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element()? {
                    names.push(n);
                }
                Ok(Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// Turns byte offsets into lines for errors.
struct Lines<'t>(&'t str);

impl Lines<'_> {
    fn of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// Parses and checks `text`; see the crate documentation for the format.
pub(crate) fn parse(text: &str) -> Result<Dispatcher, ConfigError> {
    let lines = Lines(text);
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        line: e.span().map_or(1, |s| lines.of(s)),
        message: e.message().trim_end().to_owned(),
    })?;
    compile(file, &lines)
}

/// Checks a table deserialized from `text` (its lines are that text's).
pub(crate) fn from_table(table: DispatchTable, text: &str) -> Result<Dispatcher, ConfigError> {
    compile(table.0, &Lines(text))
}

fn invalid(line: usize, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        line,
        field: field.into(),
        reason: reason.into(),
    }
}

fn compile(file: FileConfig, lines: &Lines<'_>) -> Result<Dispatcher, ConfigError> {
    let health = compile_health(&file.health, lines)?;
    let global_check = file.health.check();

    let mut servers: Vec<Server> = Vec::new();
    let mut server_index: HashMap<SocketAddr, usize> = HashMap::new();
    let mut pools = Vec::with_capacity(file.pools.len());
    let mut pool_index = HashMap::new();
    let mut checks: Vec<(SocketAddr, HealthCheck)> = Vec::new();
    for (name, spanned) in &file.pools {
        let line = lines.of(spanned.span());
        let field = format!("pools.{name}");
        let pool_check = spanned.get_ref().health.as_ref();
        let check = compile_check(&global_check, pool_check, &field, lines)?;
        if let Some(check) = check {
            for b in &spanned.get_ref().backends {
                let entry = (b.get_ref().address, check.clone());
                if !checks.contains(&entry) {
                    checks.push(entry);
                }
            }
        }
        let pool = compile_pool(
            name,
            spanned.get_ref(),
            line,
            &field,
            lines,
            health.backoff,
            &mut servers,
            &mut server_index,
        )?;
        pool_index.insert(name.as_str(), pools.len());
        pools.push(pool);
    }

    let resolve = |name: &Spanned<String>, field: &str| {
        pool_index
            .get(name.get_ref().as_str())
            .copied()
            .ok_or_else(|| ConfigError::UnknownPool {
                line: lines.of(name.span()),
                field: field.to_owned(),
                pool: name.get_ref().clone(),
            })
    };
    let default_pool = resolve(&file.default_pool, "default_pool")?;

    let mut rules = Vec::with_capacity(file.rules.len());
    let mut names = HashSet::new();
    let mut shared_names = SharedNames::default();
    for (i, spanned) in file.rules.iter().enumerate() {
        let rule = spanned.get_ref();
        let field = format!("rules[{i}]");
        let line = lines.of(spanned.span());
        let name = match &rule.name {
            Some(n) if n.is_empty() => {
                return Err(invalid(line, format!("{field}.name"), "must not be empty"));
            }
            Some(n) => n.clone(),
            None => field.clone(),
        };
        if !names.insert(name.clone()) {
            return Err(ConfigError::Duplicate {
                line,
                field: format!("{field}.name"),
                what: format!("rule name `{name}`"),
            });
        }
        let pool = resolve(&rule.pool, &format!("{field}.pool"))?;
        let match_line = lines.of(rule.condition.span());
        let condition = compile_match(
            rule.condition.get_ref(),
            match_line,
            &format!("{field}.match"),
            &mut shared_names,
        )?;
        rules.push(Rule {
            name: name.into(),
            condition,
            pool,
        });
    }

    Ok(Dispatcher::from_parts(
        rules,
        shared_names,
        default_pool,
        pools,
        servers,
        server_index,
        health,
        checks,
        file.unavailable_body
            .unwrap_or_else(|| DEFAULT_UNAVAILABLE_BODY.to_owned())
            .into(),
    ))
}

/// A pool's active check: its own `health` keys over `[health]`'s, or `None` when
/// neither gives a `path`. Each error names the table the offending key came from.
fn compile_check(
    global: &CheckFile,
    pool: Option<&Spanned<CheckFile>>,
    pool_field: &str,
    lines: &Lines<'_>,
) -> Result<Option<HealthCheck>, ConfigError> {
    let own = pool.map(Spanned::get_ref);
    // The value in force for one key, and the field it came from.
    fn pick<'a, T>(
        own: Option<&'a Option<Spanned<T>>>,
        global: &'a Option<Spanned<T>>,
        pool_field: &str,
        key: &str,
    ) -> Option<(&'a Spanned<T>, String)> {
        match own.and_then(Option::as_ref) {
            Some(v) => Some((v, format!("{pool_field}.health.{key}"))),
            None => global.as_ref().map(|v| (v, format!("health.{key}"))),
        }
    }
    let Some((path, path_field)) = pick(own.map(|c| &c.path), &global.path, pool_field, "path")
    else {
        if let Some(p) = pool {
            return Err(invalid(
                lines.of(p.span()),
                format!("{pool_field}.health.path"),
                "an active check needs a path (here or in [health])",
            ));
        }
        return Ok(None);
    };
    let p = path.get_ref();
    if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            lines.of(path.span()),
            path_field,
            "a path such as `/healthz`: starts with `/`, printable ASCII, no spaces",
        ));
    }
    let number =
        |v: Option<(&Spanned<u64>, String)>, default: u64, min: u64| -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some((v, field)) if *v.get_ref() < min || *v.get_ref() > 3_600_000 => Err(invalid(
                    lines.of(v.span()),
                    field,
                    format!("must be {min}..=3600000"),
                )),
                Some((v, _)) => Ok(*v.get_ref()),
            }
        };
    let count = |v: Option<(&Spanned<u32>, String)>, default: u32| -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some((v, field)) if *v.get_ref() == 0 || *v.get_ref() > 100 => {
                Err(invalid(lines.of(v.span()), field, "must be 1..=100"))
            }
            Some((v, _)) => Ok(*v.get_ref()),
        }
    };
    let interval = number(
        pick(
            own.map(|c| &c.interval_ms),
            &global.interval_ms,
            pool_field,
            "interval_ms",
        ),
        DEFAULT_CHECK_INTERVAL_MS,
        10,
    )?;
    let timeout = number(
        pick(
            own.map(|c| &c.timeout_ms),
            &global.timeout_ms,
            pool_field,
            "timeout_ms",
        ),
        DEFAULT_CHECK_TIMEOUT_MS,
        1,
    )?;
    let rise = count(
        pick(own.map(|c| &c.rise), &global.rise, pool_field, "rise"),
        DEFAULT_CHECK_RISE,
    )?;
    let fall = count(
        pick(own.map(|c| &c.fall), &global.fall, pool_field, "fall"),
        DEFAULT_CHECK_FALL,
    )?;
    let port = match pick(own.map(|c| &c.port), &global.port, pool_field, "port") {
        Some((p, field)) if *p.get_ref() == 0 => {
            return Err(invalid(lines.of(p.span()), field, "must be 1..=65535"));
        }
        Some((p, _)) => Some(*p.get_ref()),
        None => None,
    };
    Ok(Some(HealthCheck {
        path: p.as_str().into(),
        port,
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
        rise,
        fall,
    }))
}

fn compile_health(h: &HealthFile, lines: &Lines<'_>) -> Result<HealthPolicy, ConfigError> {
    if *h.failures.get_ref() == 0 {
        return Err(invalid(
            lines.of(h.failures.span()),
            "health.failures",
            "must be at least 1",
        ));
    }
    if *h.backoff_ms.get_ref() == 0 {
        return Err(invalid(
            lines.of(h.backoff_ms.span()),
            "health.backoff_ms",
            "must be at least 1",
        ));
    }
    if h.max_backoff_ms.get_ref() < h.backoff_ms.get_ref() {
        // A default has no place in the file: point at the value that is there.
        let span = if h.max_backoff_ms.span().is_empty() {
            h.backoff_ms.span()
        } else {
            h.max_backoff_ms.span()
        };
        return Err(invalid(
            lines.of(span),
            "health.max_backoff_ms",
            "must be at least health.backoff_ms",
        ));
    }
    Ok(HealthPolicy {
        failures: *h.failures.get_ref(),
        backoff: Duration::from_millis(*h.backoff_ms.get_ref()),
        max_backoff: Duration::from_millis(*h.max_backoff_ms.get_ref()),
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the build's state"
)]
fn compile_pool(
    name: &str,
    p: &PoolFile,
    line: usize,
    field: &str,
    lines: &Lines<'_>,
    backoff: Duration,
    servers: &mut Vec<Server>,
    server_index: &mut HashMap<SocketAddr, usize>,
) -> Result<Pool, ConfigError> {
    if p.backends.is_empty() {
        return Err(ConfigError::EmptyPool {
            line,
            field: format!("{field}.backends"),
        });
    }
    let mut members: Vec<Member> = Vec::with_capacity(p.backends.len());
    for (i, spanned) in p.backends.iter().enumerate() {
        let b = spanned.get_ref();
        let line = lines.of(spanned.span());
        let field = format!("{field}.backends[{i}]");
        if b.weight == 0 {
            return Err(ConfigError::ZeroWeight {
                line,
                field: format!("{field}.weight"),
            });
        }
        if members.iter().any(|m| m.addr == b.address) {
            return Err(ConfigError::Duplicate {
                line,
                field: format!("{field}.address"),
                what: format!("back-end {}", b.address),
            });
        }
        if let Some(id) = &b.id {
            if id.is_empty() {
                return Err(invalid(line, format!("{field}.id"), "must not be empty"));
            }
            if members.iter().any(|m| m.id.as_deref() == Some(id.as_str())) {
                return Err(ConfigError::Duplicate {
                    line,
                    field: format!("{field}.id"),
                    what: format!("back-end id `{id}`"),
                });
            }
        }
        let server = *server_index.entry(b.address).or_insert_with(|| {
            servers.push(Server::new(b.address, backoff));
            servers.len() - 1
        });
        members.push(Member::new(
            server,
            b.address,
            b.weight,
            b.id.as_deref().map(Box::from),
        ));
    }

    let policy = match p.policy(field, lines)? {
        PolicyFile::RoundRobin => Policy::SmoothWeighted(SmoothWeighted::new(members.len())),
        PolicyFile::LeastConnections => Policy::LeastConnections(LeastConnections::default()),
        PolicyFile::ConsistentHash(key) => {
            let key = match key {
                Some(k) => k
                    .get_ref()
                    .compile()
                    .map_err(|r| invalid(lines.of(k.span()), format!("{field}.hash_key"), r))?,
                None => HashKey::Path,
            };
            Policy::ConsistentHash(key)
        }
        PolicyFile::Lard(lard) => {
            let (l, lard_line) = match lard {
                Some(l) => (l.get_ref(), lines.of(l.span())),
                None => (&DEFAULT_LARD, line),
            };
            let lf = |f: &str| format!("{field}.lard.{f}");
            if members.len() > Lard::MAX_MEMBERS {
                return Err(invalid(
                    line,
                    format!("{field}.backends"),
                    format!("a LARD pool has at most {} back-ends", Lard::MAX_MEMBERS),
                ));
            }
            if l.high_load == 0 || l.low_load >= l.high_load {
                return Err(invalid(
                    lard_line,
                    lf("low_load"),
                    "needs 0 <= low_load < high_load",
                ));
            }
            if l.targets == 0 || l.targets > 1 << 24 {
                return Err(invalid(lard_line, lf("targets"), "must be 1..=16777216"));
            }
            let target = l
                .target
                .compile()
                .map_err(|r| invalid(lard_line, lf("target"), r))?;
            Policy::Lard(Box::new(Lard::new(
                target,
                l.low_load,
                l.high_load,
                Duration::from_millis(l.shrink_after_ms),
                l.targets,
            )))
        }
    };

    let sticky = match &p.sticky {
        None => None,
        Some(s) => {
            let sline = lines.of(s.span());
            let s = s.get_ref();
            if s.cookie.is_empty() {
                return Err(invalid(
                    sline,
                    format!("{field}.sticky.cookie"),
                    "must not be empty",
                ));
            }
            let by = match (s.by, &s.separator) {
                (StickyByFile::Id, separator) => {
                    if !members.iter().any(|m| m.id.is_some()) {
                        return Err(invalid(
                            sline,
                            format!("{field}.sticky"),
                            "sticky by id needs an `id` on the pool's back-ends",
                        ));
                    }
                    match separator.as_deref() {
                        Some("") => {
                            return Err(invalid(
                                sline,
                                format!("{field}.sticky.separator"),
                                "must not be empty",
                            ));
                        }
                        sep => StickyBy::Id {
                            separator: sep.map(Box::from),
                        },
                    }
                }
                (StickyByFile::Hash, None) => StickyBy::Hash,
                (StickyByFile::Hash, Some(_)) => {
                    return Err(invalid(
                        sline,
                        format!("{field}.sticky.separator"),
                        "only for `by = \"id\"`",
                    ));
                }
            };
            Some(Sticky {
                cookie: s.cookie.as_str().into(),
                by,
            })
        }
    };

    Ok(Pool {
        name: name.into(),
        members: members.into(),
        policy,
        sticky,
    })
}

const DEFAULT_LARD: LardFile = LardFile {
    target: HashKeyFile::Path,
    low_load: 25,
    high_load: 65,
    shrink_after_ms: 20_000,
    targets: 16_384,
};

/// Lowers a `match` table to one condition: its keys ANDed.
fn compile_match(
    m: &MatchFile,
    line: usize,
    field: &str,
    names: &mut SharedNames,
) -> Result<Condition, ConfigError> {
    let mut all = Vec::new();
    let sub = |key: &str| format!("{field}.{key}");
    let nonempty = |names: &Names, key: &str| -> Result<Vec<String>, ConfigError> {
        if names.0.is_empty() || names.0.iter().any(String::is_empty) {
            return Err(invalid(line, sub(key), "needs non-empty values"));
        }
        Ok(names.0.clone())
    };
    let hosts = |names: &Names, key: &str| -> Result<Box<[HostPattern]>, ConfigError> {
        nonempty(names, key)?
            .iter()
            .map(|n| {
                HostPattern::parse(n).ok_or_else(|| {
                    invalid(
                        line,
                        sub(key),
                        format!("`{n}` is neither a host name nor `*.` and a host name"),
                    )
                })
            })
            .collect()
    };
    let boxed = |v: Vec<String>| v.into_iter().map(Box::from).collect::<Box<[Box<str>]>>();
    let regex_error = |key: &str, e: regex::Error| ConfigError::BadRegex {
        line,
        field: sub(key),
        message: e.to_string(),
    };

    if let Some(h) = &m.host {
        all.push(Condition::Host(hosts(h, "host")?));
    }
    if let Some(h) = &m.sni {
        all.push(Condition::Sni(hosts(h, "sni")?));
    }
    if let Some(p) = &m.path {
        let paths = nonempty(p, "path")?;
        if paths.iter().any(|p| !p.starts_with('/')) {
            return Err(invalid(line, sub("path"), "a path starts with `/`"));
        }
        all.push(Condition::PathExact(boxed(paths)));
    }
    if let Some(p) = &m.path_prefix {
        let prefixes = nonempty(p, "path_prefix")?;
        if prefixes.iter().any(|p| !p.starts_with('/')) {
            return Err(invalid(line, sub("path_prefix"), "a path starts with `/`"));
        }
        all.push(Condition::PathPrefix(boxed(prefixes)));
    }
    if let Some(r) = &m.path_regex {
        let re = PathRegex::new(r).map_err(|e| regex_error("path_regex", e))?;
        all.push(Condition::PathRegex(re));
    }
    if let Some(s) = &m.service {
        let services = nonempty(s, "service")?
            .iter()
            .map(|s| {
                let (vip, port) = s.rsplit_once(':').unwrap_or(("", ""));
                let port = port.parse::<u16>().ok().filter(|&p| p != 0);
                let vip = match vip {
                    "*" => Some(None),
                    // An IPv6 VIP in brackets, as in a socket address (RFC 3986 §3.2.2).
                    v => v
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .unwrap_or(v)
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(Some),
                };
                match (vip, port) {
                    (Some(vip), Some(port)) => Ok((vip, port)),
                    _ => Err(invalid(
                        line,
                        sub("service"),
                        format!("`{s}` is neither `VIP:PORT` nor `*:PORT`"),
                    )),
                }
            })
            .collect::<Result<Box<[_]>, _>>()?;
        all.push(Condition::Service(services));
    }
    if let Some(e) = &m.extension {
        let exts: Vec<String> = nonempty(e, "extension")?
            .iter()
            .map(|e| e.strip_prefix('.').unwrap_or(e).to_ascii_lowercase())
            .collect();
        if exts.iter().any(|e| e.is_empty() || e.contains(['.', '/'])) {
            return Err(invalid(
                line,
                sub("extension"),
                "an extension such as `png`, without dots",
            ));
        }
        all.push(Condition::Extension(boxed(exts)));
    }
    if let Some(methods) = &m.method {
        all.push(Condition::Method(boxed(nonempty(methods, "method")?)));
    }
    if let Some(h) = &m.header {
        if h.name.is_empty() {
            return Err(invalid(line, sub("header.name"), "must not be empty"));
        }
        let test = match (&h.equals, &h.regex) {
            (None, None) => ValueTest::Present,
            (Some(v), None) => ValueTest::Equals(v.as_bytes().into()),
            (None, Some(r)) => ValueTest::Regex(
                regex::bytes::Regex::new(r).map_err(|e| regex_error("header.regex", e))?,
            ),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    line,
                    sub("header"),
                    "`equals` or `regex`, not both",
                ));
            }
        };
        let name = h.name.to_ascii_lowercase();
        all.push(Condition::Header {
            slot: names.header_slot(&name),
            name: name.into(),
            test,
        });
    }
    if let Some(c) = &m.cookie {
        if c.name.is_empty() {
            return Err(invalid(line, sub("cookie.name"), "must not be empty"));
        }
        all.push(Condition::Cookie {
            name: c.name.as_str().into(),
            slot: names.cookie_slot(&c.name),
            equals: c.equals.as_deref().map(Box::from),
        });
    }
    if let Some(q) = &m.query {
        if q.name.is_empty() {
            return Err(invalid(line, sub("query.name"), "must not be empty"));
        }
        all.push(Condition::Query {
            name: q.name.as_str().into(),
            equals: q.equals.as_deref().map(Box::from),
        });
    }
    if let Some(list) = &m.all {
        let inner = list
            .iter()
            .enumerate()
            .map(|(i, m)| compile_match(m, line, &format!("{field}.all[{i}]"), names))
            .collect::<Result<_, _>>()?;
        all.push(Condition::All(inner));
    }
    if let Some(list) = &m.any {
        let inner = list
            .iter()
            .enumerate()
            .map(|(i, m)| compile_match(m, line, &format!("{field}.any[{i}]"), names))
            .collect::<Result<_, _>>()?;
        all.push(Condition::Any(inner));
    }
    if let Some(inner) = &m.not {
        all.push(Condition::Not(Box::new(compile_match(
            inner,
            line,
            &sub("not"),
            names,
        )?)));
    }
    match all.len() {
        0 => Err(invalid(
            line,
            field,
            "no condition (a request that matches no rule goes to default_pool)",
        )),
        // One condition needs no wrapper: one less indirection per decision.
        1 => Ok(all.swap_remove(0)),
        _ => Ok(Condition::All(all.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOLS: &str = r#"default_pool = "web"
[pools.web]
backends = [{ address = "198.18.1.11:80" }]
"#;

    fn error(text: &str) -> ConfigError {
        Dispatcher::from_toml(text).unwrap_err()
    }

    /// The error's line and field, as a user would read them.
    fn at(text: &str) -> (usize, Option<String>) {
        let e = error(text);
        (e.line(), e.field().map(str::to_owned))
    }

    #[test]
    fn service_rules_take_vip_and_port_or_any_vip() {
        let rules = |service: &str| {
            format!(
                "default_pool = \"web\"\n[pools.web]\nbackends = [{{ address = \"198.18.1.11:80\" }}]\n\
                 [pools.tls]\nbackends = [{{ address = \"198.18.1.13:443\" }}]\n\
                 [[rules]]\nname = \"tls\"\npool = \"tls\"\nmatch = {{ service = {service} }}\n"
            )
        };
        assert!(Dispatcher::from_toml(&rules("\"198.18.2.1:443\"")).is_ok());
        assert!(Dispatcher::from_toml(&rules("[\"*:443\", \"198.18.2.2:8443\"]")).is_ok());
        for bad in ["\"443\"", "\"198.18.2.1\"", "\"vip:443\"", "\"*:0\"", "[]"] {
            let e = Dispatcher::from_toml(&rules(bad)).unwrap_err().to_string();
            assert!(e.contains("service"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_repository_example_loads() {
        let text = include_str!("../../../examples/dispatch.toml");
        let d = Dispatcher::from_toml(text).unwrap();
        let policies: HashSet<_> = d.pools().map(|(_, p)| p).collect();
        assert_eq!(policies.len(), 4, "every policy is shown: {policies:?}");
    }

    #[test]
    fn the_crate_documentation_example_loads() {
        let doc: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "```toml")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n");
        assert!(doc.contains("[pools.web]"));
        Dispatcher::from_toml(&doc).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let e = error(&format!(
            "{POOLS}[[rules]]\npool = \"web\"\nmatch = {{ pth = \"/\" }}\n"
        ));
        assert!(matches!(e, ConfigError::Syntax { line: 6, .. }), "{e}");
        assert!(e.to_string().contains("pth"), "{e}");
        let e = error(&format!("{POOLS}colour = 1\n"));
        assert!(e.to_string().contains("colour"), "{e}");
        let e = error(
            "default_pool = \"web\"\n[pools.web]\nbackends = [{ address = \"198.18.1.11\" }]\n",
        );
        assert_eq!(e.line(), 3, "{e}");
    }

    #[test]
    fn unknown_pools() {
        assert_eq!(
            at(&format!(
                "{POOLS}[[rules]]\npool = \"web\"\nmatch = {{ path = \"/\" }}\n[[rules]]\npool = \"wbe\"\nmatch = {{ path = \"/a\" }}\n"
            )),
            (8, Some("rules[1].pool".into()))
        );
        let e = error(&POOLS.replace("default_pool = \"web\"", "default_pool = \"x\""));
        assert_eq!(
            e,
            ConfigError::UnknownPool {
                line: 1,
                field: "default_pool".into(),
                pool: "x".into()
            }
        );
    }

    #[test]
    fn empty_pools_zero_weights_duplicates() {
        assert_eq!(
            at("default_pool = \"web\"\n[pools.web]\nbackends = []\n"),
            (2, Some("pools.web.backends".into()))
        );
        assert_eq!(
            at(
                "default_pool = \"web\"\n[pools.web]\nbackends = [\n { address = \"198.18.1.11:80\" },\n { address = \"198.18.1.12:80\", weight = 0 },\n]\n"
            ),
            (5, Some("pools.web.backends[1].weight".into()))
        );
        let e = error(
            "default_pool = \"web\"\n[pools.web]\nbackends = [\n { address = \"198.18.1.11:80\" },\n { address = \"198.18.1.11:80\" },\n]\n",
        );
        assert!(
            matches!(&e, ConfigError::Duplicate { line: 5, field, .. } if field == "pools.web.backends[1].address"),
            "{e}"
        );
        let e = error(
            "default_pool = \"web\"\n[pools.web]\nbackends = [\n { address = \"198.18.1.11:80\", id = \"a\" },\n { address = \"198.18.1.12:80\", id = \"a\" },\n]\n",
        );
        assert!(
            matches!(&e, ConfigError::Duplicate { field, .. } if field == "pools.web.backends[1].id"),
            "{e}"
        );
        let e = error(&format!(
            "{POOLS}[[rules]]\nname = \"r\"\npool = \"web\"\nmatch = {{ path = \"/\" }}\n[[rules]]\nname = \"r\"\npool = \"web\"\nmatch = {{ path = \"/a\" }}\n"
        ));
        assert!(
            matches!(&e, ConfigError::Duplicate { line: 8, field, .. } if field == "rules[1].name"),
            "{e}"
        );
        // Two pools of one name: the TOML parser's own duplicate-key error.
        let e = error(&format!(
            "{POOLS}[pools.web]\nbackends = [{{ address = \"198.18.1.12:80\" }}]\n"
        ));
        assert!(matches!(e, ConfigError::Syntax { line: 4, .. }), "{e}");
    }

    #[test]
    fn bad_regexes() {
        let e = error(&format!(
            "{POOLS}[[rules]]\npool = \"web\"\nmatch = {{ any = [{{ path = \"/\" }}, {{ path_regex = \"^/(a\" }}] }}\n"
        ));
        assert!(
            matches!(&e, ConfigError::BadRegex { line: 6, field, .. } if field == "rules[0].match.any[1].path_regex"),
            "{e}"
        );
        let e = error(&format!(
            "{POOLS}[[rules]]\npool = \"web\"\nmatch = {{ header = {{ name = \"a\", regex = \"[\" }} }}\n"
        ));
        assert_eq!(e.field(), Some("rules[0].match.header.regex"));
    }

    #[test]
    fn inconsistent_values() {
        let rule = |m: &str| format!("{POOLS}[[rules]]\npool = \"web\"\nmatch = {m}\n");
        for (m, field) in [
            ("{}", "rules[0].match"),
            ("{ host = \"*\" }", "rules[0].match.host"),
            ("{ host = [] }", "rules[0].match.host"),
            ("{ path_prefix = \"img/\" }", "rules[0].match.path_prefix"),
            ("{ extension = \"a.b\" }", "rules[0].match.extension"),
            (
                "{ header = { name = \"a\", equals = \"b\", regex = \"c\" } }",
                "rules[0].match.header",
            ),
            ("{ not = { all = [{}] } }", "rules[0].match.not.all[0]"),
        ] {
            assert_eq!(at(&rule(m)), (6, Some(field.into())), "{m}");
        }
        let pool = |extra: &str| {
            format!(
                "default_pool = \"web\"\n[pools.web]\nbackends = [{{ address = \"198.18.1.11:80\" }}]\n{extra}\n"
            )
        };
        for (extra, field) in [
            ("hash_key = \"path\"", "pools.web.hash_key"),
            (
                "policy = \"consistent_hash\"\nlard = { low_load = 1 }",
                "pools.web.lard",
            ),
            (
                "policy = \"lard\"\nhash_key = \"host\"",
                "pools.web.hash_key",
            ),
            (
                "policy = \"lard\"\nlard = { low_load = 9, high_load = 9 }",
                "pools.web.lard.low_load",
            ),
            ("sticky = { cookie = \"s\" }", "pools.web.sticky"),
            (
                "sticky = { cookie = \"s\", by = \"hash\", separator = \".\" }",
                "pools.web.sticky.separator",
            ),
            (
                "policy = \"consistent_hash\"\nhash_key = { header = \"\" }",
                "pools.web.hash_key",
            ),
        ] {
            assert_eq!(at(&pool(extra)).1, Some(field.into()), "{extra}");
        }
        assert_eq!(
            at(&format!("{POOLS}[health]\nfailures = 0\n")),
            (5, Some("health.failures".into()))
        );
        assert_eq!(
            at(&format!("{POOLS}[health]\nbackoff_ms = 100000\n")),
            (5, Some("health.max_backoff_ms".into()))
        );
    }

    #[test]
    fn active_checks_inherit_and_override() {
        let text = r#"default_pool = "web"
[health]
path = "/"
interval_ms = 500
fall = 2
[pools.web]
backends = [{ address = "198.18.1.11:80" }, { address = "198.18.1.12:80" }]
[pools.api]
backends = [{ address = "198.18.1.12:80" }]
health = { path = "/api/status.json", rise = 1 }
[pools.tls]
backends = [{ address = "198.18.1.13:443" }]
health = { port = 80 }
"#;
        let d = Dispatcher::from_toml(text).unwrap();
        let checks: Vec<_> = d
            .health_checks()
            .iter()
            .map(|(b, c)| (b.to_string(), &*c.path, c.port, c.interval, c.rise, c.fall))
            .collect();
        let ms = Duration::from_millis;
        // Pools in name order: api, tls, web; be2 is checked twice, once per path.
        assert_eq!(
            checks,
            [
                (
                    "198.18.1.12:80".into(),
                    "/api/status.json",
                    None,
                    ms(500),
                    1,
                    2
                ),
                ("198.18.1.13:443".into(), "/", Some(80), ms(500), 2, 2),
                ("198.18.1.11:80".into(), "/", None, ms(500), 2, 2),
                ("198.18.1.12:80".into(), "/", None, ms(500), 2, 2),
            ]
        );
        assert_eq!(d.health_checks()[0].1.timeout, ms(1000), "default timeout");
        // No path anywhere: no checks.
        assert!(
            Dispatcher::from_toml(POOLS)
                .unwrap()
                .health_checks()
                .is_empty()
        );
    }

    #[test]
    fn active_check_errors_name_their_table() {
        assert_eq!(
            at(&format!("{POOLS}health = {{ interval_ms = 100 }}\n")),
            (4, Some("pools.web.health.path".into()))
        );
        assert_eq!(
            at(&format!("{POOLS}[health]\npath = \"/a b\"\n")),
            (5, Some("health.path".into()))
        );
        assert_eq!(
            at(&format!("{POOLS}[health]\npath = \"/\"\ninterval_ms = 0\n")),
            (6, Some("health.interval_ms".into()))
        );
        assert_eq!(
            at(&format!("{POOLS}health = {{ path = \"/\", fall = 0 }}\n")),
            (4, Some("pools.web.health.fall".into()))
        );
        let e = error(&format!("{POOLS}health = {{ path = \"/\", colour = 1 }}\n"));
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn a_table_of_a_larger_file_keeps_that_files_lines() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "read by serde only")]
        struct Outer {
            name: String,
            dispatch: DispatchTable,
        }
        let text = "name = \"fe\"\n[dispatch]\ndefault_pool = \"web\"\n[dispatch.pools.web]\nbackends = [{ address = \"198.18.1.11:80\", weight = 0 }]\n";
        let outer: Outer = toml::from_str(text).unwrap();
        let e = Dispatcher::from_table(outer.dispatch, text)
            .unwrap_err()
            .in_table("dispatch");
        assert_eq!(
            e.to_string(),
            "line 5: dispatch.pools.web.backends[0].weight: a weight must be at least 1"
        );
        let ok: Outer = toml::from_str(&text.replace("weight = 0", "weight = 2")).unwrap();
        assert!(Dispatcher::from_table(ok.dispatch, text).is_ok());
    }

    #[test]
    fn display_names_line_and_field() {
        let e = error(
            "default_pool = \"web\"\n[pools.web]\nbackends = [{ address = \"198.18.1.11:80\", weight = 0 }]\n",
        );
        assert_eq!(
            e.to_string(),
            "line 3: pools.web.backends[0].weight: a weight must be at least 1"
        );
    }
}
