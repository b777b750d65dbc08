//! Routing decided in the kernel, end to end (issue 19, "Done when"): with `[tcp]
//! kernel_dispatch` on, requests routed by Host (exact and wildcard), path, file type,
//! sticky cookie (by id and by hash) and, for a TLS service, by SNI are handed off by
//! the front-end's XDP program itself (its `handed_off_in_kernel` counter goes up by one
//! per request); then a reload puts a regex rule first, which the kernel cannot judge,
//! so that the slow path decides every request, and the same requests reach the same
//! back-ends (the counter stays). And under load (wrk, a new connection per request)
//! hundreds of reloads alternate rule sets that send the same paths to different
//! back-ends: every request is served, by a back-end one whole rule set names for its
//! path (the kernel's rules are swapped atomically, never seen half written). Real curl
//! and wrk, real nginx back-ends (TLS with their lab certificates), the real daemons.
//!
//! Root only (each test prints why it skipped otherwise); one test at a time.

use std::{sync::Mutex, time::Duration};

use baton::lab::{HTTP_PORT, HTTPS_PORT, VIP};
use support::{Cluster, FRONTEND_CONFIG, backend_at, baton, served_by, stdout, wait_for_log};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btkr"));
static SERIAL: Mutex<()> = Mutex::new(());

/// `config` with XDP answering every SYN, the one-turn handoff and kernel dispatch.
fn with_kernel_dispatch(config: &str) -> String {
    let out = config.replacen(
        "[tcp]\n",
        "[tcp]\nsyns_in_xdp = true\none_turn = true\nkernel_dispatch = true\n",
        1,
    );
    assert_ne!(out, config, "no [tcp] table to extend");
    out
}

/// `config` with a rule first that the kernel cannot judge (a regex) and that matches
/// none of the test's requests: every request goes to the slow path, which decides as
/// before.
fn with_slow_path_forced(config: &str) -> String {
    let at = config
        .find("\n[[dispatch.rules]]\n")
        .expect("a configuration with rules");
    format!(
        "{}\n[[dispatch.rules]]\nname = \"force-slow-path\"\npool = \"{}\"\nmatch = {{ path_regex = \"^/no-such-path$\" }}\n{}",
        &config[..at],
        if config.contains("[dispatch.pools.all]") {
            "all"
        } else {
            "be1"
        },
        &config[at..]
    )
}

/// Rewrites the cluster's configuration file with `text` and reloads the front-end.
fn reload(cluster: &Cluster, text: &str) {
    let running = std::fs::read_to_string(&cluster.frontend_config).unwrap();
    let at = running.find("\n[dispatch]\n").unwrap();
    let new_at = text.find("\n[dispatch]\n").unwrap();
    std::fs::write(
        &cluster.frontend_config,
        format!("{}{}", &running[..at], &text[new_at..]),
    )
    .unwrap();
    let daemon = cluster.frontend();
    let out = stdout(&mut baton(
        &LAB,
        &[
            "reload",
            "--config",
            cluster.frontend_config.to_str().unwrap(),
        ],
    ));
    // This reload's line, not an earlier one's: the daemon logs it once the new rules
    // are in force in the kernel too.
    let before = daemon.log_text().matches(" event=reloaded ").count();
    assert!(out.contains(&daemon.pid().to_string()), "{out}");
    wait_for_log(daemon, Duration::from_secs(5), "reloaded", |log| {
        log.matches(" event=reloaded ").count() > before
    });
}

/// Requests the program left to the slow path for `reason` so far (its pinned per-CPU
/// array of reasons, summed over CPUs).
fn slow_path_for(reason: u32) -> u64 {
    use aya::maps::{Map, MapData, PerCpuArray};
    let path = format!(
        "{}/frontend-eth0/slow_path_reasons",
        support::frontend_pin_dir(&LAB)
    );
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let reasons: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(map)).unwrap();
    reasons.get(&reason, 0).unwrap().iter().sum()
}

/// Requests handed off in the kernel so far.
fn in_kernel() -> u64 {
    support::fastpath_counters(&LAB)["handed_off_in_kernel"]
}

/// Runs each request (`curl` arguments) and returns the back-end that answered it,
/// checking that the kernel decided it (`kernel`) or that it did not.
fn route_all(requests: &[(&str, Vec<String>)], kernel: bool) -> Vec<String> {
    requests
        .iter()
        .map(|(what, args)| {
            let before = in_kernel();
            let mut all = vec!["-D", "-", "-o", "/dev/null"];
            all.extend(args.iter().map(String::as_str));
            let head = support::curl(&LAB, &all);
            let after = in_kernel();
            assert!(head.starts_with("HTTP/"), "{what}: {head}");
            let backend = served_by(&head).unwrap_or_else(|| panic!("{what}: {head}"));
            if kernel {
                assert_eq!(after, before + 1, "{what}: decided in the kernel");
            } else {
                assert_eq!(after, before, "{what}: decided by the slow path");
            }
            eprintln!("{what}: {backend}");
            backend
        })
        .collect()
}

#[test]
fn http_routing_by_host_path_type_and_cookie_is_the_same_in_the_kernel_and_the_slow_path() {
    let config = with_kernel_dispatch(FRONTEND_CONFIG);
    let Some(cluster) = Cluster::builder(&LAB, &SERIAL, "kernel routing, HTTP")
        .frontend(&config)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    let get = |what: &'static str, path: &str, headers: &[&str]| {
        let mut args = vec![format!("http://{VIP}{path}")];
        for h in headers {
            args.push("-H".to_owned());
            args.push((*h).to_owned());
        }
        (what, args)
    };
    // The lab's [dispatch] (examples/frontend-lab.toml): images on be1, static on be3,
    // sessions hashed by their cookie, and JSESSIONID naming its back-end by id.
    let requests = [
        get("host", "/", &["Host: img.baton.test"]),
        get("wildcard host", "/", &["Host: A.img.baton.test"]),
        get("path prefix", "/static/", &[]),
        get("file type", "/files/site.css", &[]),
        get("image type", "/files/logo.PNG", &[]),
        get(
            "sticky by id",
            "/",
            &["Cookie: lang=en; JSESSIONID=9F2C1A.be2"],
        ),
        get(
            "sticky by id",
            "/files/1K.bin",
            &["Cookie: JSESSIONID=77.be3"],
        ),
        get("cookie rule, by hash", "/", &["Cookie: session=s1"]),
        get(
            "cookie rule, by hash",
            "/files/1K.bin",
            &["Cookie: a=b; session=s2"],
        ),
        get("cookie rule, by hash", "/", &["Cookie: session=s3; x=y"]),
        get("cookie rule, by hash", "/", &["Cookie: session=s1"]),
    ];
    let kernel = route_all(&requests, true);
    for (got, want) in kernel.iter().zip([
        "be1", "be1", "be3", "be3", "be1", "be2", "be3", "", "", "", "",
    ]) {
        if !want.is_empty() {
            assert_eq!(got, want, "{kernel:?}");
        }
    }
    assert_eq!(kernel[7], kernel[10], "one session, one back-end");

    reload(&cluster, &with_slow_path_forced(&config));
    let slow = route_all(&requests, false);
    assert_eq!(kernel, slow, "the kernel and the slow path route alike");

    // Least connections runs in the kernel too: the api pool over the three back-ends,
    // each request handed off by the program, by the counts both engines share (a
    // closed connection stays counted through its grace period, so sequential requests
    // meet unequal counts and go round the three).
    let api = "[dispatch.pools.api]\npolicy = \"least_connections\"\nbackends = [\n    { address = \"198.18.1.11:80\" },\n    { address = \"198.18.1.12:80\" },\n    { address = \"198.18.1.13:80\" },\n]\n";
    let at = config.find("[dispatch.pools.api]").unwrap();
    let end = at + config[at..].find("\n\n").unwrap() + 1;
    reload(
        &cluster,
        &format!("{}{api}{}", &config[..at], &config[end..]),
    );
    let api_requests: Vec<_> = (0..6)
        .map(|_| get("least connections", "/api/", &[]))
        .collect();
    let spread = route_all(&api_requests, true);
    for be in ["be1", "be2", "be3"] {
        assert!(
            spread.iter().any(|b| b == be),
            "{be} takes its share: {spread:?}"
        );
    }

    // LARD runs in the kernel too, but for the requests that change a server set: the
    // api pool as LARD over the three back-ends (the paper's thresholds, far above the
    // lab's load). A target's first request goes up and the daemon's `Lard` makes its
    // set (one back-end, the least loaded) and writes it into the kernel's copy; the
    // target's next requests are decided in the kernel from that set, to the same
    // back-end.
    let lard = api.replace("least_connections", "lard");
    reload(
        &cluster,
        &format!("{}{lard}{}", &config[..at], &config[end..]),
    );
    let (mut up, mut kernel) = (0u64, 0u64);
    let lard_set_before = slow_path_for(baton_common::kernel_dispatch::reason::LARD_SET);
    for target in ["/api/a", "/api/b", "/api/c", "/api/d"] {
        let first = route_all(&[get("lard, a new target", target, &[])], false);
        up += 1;
        let next: Vec<_> = (0..3)
            .map(|_| get("lard, its set made", target, &[]))
            .collect();
        let then = route_all(&next, true);
        kernel += then.len() as u64;
        assert!(
            then.iter().all(|b| *b == first[0]),
            "{target}: {first:?} then {then:?}"
        );
    }
    eprintln!(
        "lard: {kernel} of {} requests decided in the kernel",
        kernel + up
    );
    assert_eq!(
        slow_path_for(baton_common::kernel_dispatch::reason::LARD_SET) - lard_set_before,
        up,
        "each target's first request went up as a set change"
    );
}

#[test]
fn tls_routing_by_sni_is_the_same_in_the_kernel_and_the_slow_path() {
    let at = FRONTEND_CONFIG.find("\n[dispatch]\n").unwrap();
    let daemon =
        FRONTEND_CONFIG[..at].replace("\nport = 80\n", &format!("\nport = {HTTPS_PORT}\n"));
    let dispatch = format!(
        r#"[dispatch]
default_pool = "by_host"
# Checked over plain HTTP: the pools' addresses are TLS ports.
[dispatch.health]
path = "/"
port = {HTTP_PORT}
interval_ms = 500
[dispatch.pools.be1]
backends = [{{ address = "{be1}" }}]
[dispatch.pools.be2]
backends = [{{ address = "{be2}" }}]
[dispatch.pools.be3]
backends = [{{ address = "{be3}" }}]
[dispatch.pools.by_host]
policy = "consistent_hash"
hash_key = "host"
backends = [{{ address = "{be1}" }}, {{ address = "{be2}" }}, {{ address = "{be3}" }}]
[[dispatch.rules]]
name = "shop"
pool = "be1"
match = {{ sni = "shop.baton.test" }}
[[dispatch.rules]]
name = "api"
pool = "be2"
match = {{ sni = ["api.baton.test", "*.api.baton.test"] }}
[[dispatch.rules]]
name = "www"
pool = "be3"
match = {{ host = "www.baton.test" }}
"#,
        be1 = backend_at(1, HTTPS_PORT),
        be2 = backend_at(2, HTTPS_PORT),
        be3 = backend_at(3, HTTPS_PORT),
    );
    let config = with_kernel_dispatch(&format!("{daemon}\n{dispatch}"));
    let vip_tls = format!("{VIP}:{HTTPS_PORT}");
    let agents = [(1, &*vip_tls), (2, &vip_tls), (3, &vip_tls)];
    let Some(cluster) = Cluster::builder(&LAB, &SERIAL, "kernel routing, TLS")
        .agents_answering_as(&agents)
        .tls(baton::lab::TlsCerts::PerBackend {
            names: vec!["v2.api.baton.test".to_owned()],
        })
        .frontend(&config)
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    let cacert = cluster.tls_ca.clone().unwrap();
    let cacert = cacert.to_str().unwrap();
    let hello = |name: &'static str| {
        let args = [
            "--http1.1",
            "--resolve",
            &format!("{name}:443:{VIP}"),
            "--cacert",
            cacert,
            &format!("https://{name}/"),
        ]
        .map(str::to_owned)
        .to_vec();
        (name, args)
    };
    let requests = [
        hello("shop.baton.test"),
        hello("api.baton.test"),
        hello("v2.api.baton.test"),
        hello("www.baton.test"),
        hello("baton.test"),
        hello("other.baton.test"),
        hello("more.baton.test"),
    ];
    let kernel = route_all(&requests, true);
    assert_eq!(&kernel[..4], ["be1", "be2", "be2", "be3"], "{kernel:?}");

    reload(&cluster, &with_slow_path_forced(&config));
    let slow = route_all(&requests, false);
    assert_eq!(kernel, slow, "the kernel and the slow path route alike");
}

/// The rule sets the reload test cycles through, A, B, C, A, ...: three single-back-end
/// pools `p0`..`p2` (pools are numbered in name order, and the back-end table follows
/// them, so `pK`'s back-end is the table's entry K) and two path rules.
///
/// | set | p0, p1, p2 | /img/ | /static/ |
/// |---|---|---|---|
/// | A | be1 be2 be3 | p0: be1 | p1: be2 |
/// | B | be1 be2 be3 | p0: be1 | p2: be3 |
/// | C | be2 be3 be1 | p1: be3 | p0: be2 |
///
/// So /img/ is served by be1 or be3 and /static/ by be2 or be3, whichever set is in
/// force; half of one set and half of another is not. One set's rules over another
/// one's back-end table (the table the writer fills first) sends /img/ to be2 or
/// /static/ to be1 in four of the six pairs, and B lists its rules in the other order,
/// so that A's or C's terms over B's texts test one path's prefix for the other's.
/// Three sets, not two: a generation is rewritten every other flip, and with two sets
/// it would always be rewritten with what it already held, so a writer that flipped
/// before writing would change nothing a request could see.
///
/// Checked by breaking the writer (`KernelDispatch::update`): writing into the live
/// generation, or flipping before writing, each sent hundreds of requests to a back-end
/// no set names for their path in one run of this test.
fn rule_set(k: usize) -> String {
    let be = |n: u8| backend_at(n, HTTP_PORT);
    let (pools, rules) = match k % 3 {
        0 => ([1, 2, 3], [("img", "/img/", 0), ("static", "/static/", 1)]),
        1 => ([1, 2, 3], [("static", "/static/", 2), ("img", "/img/", 0)]),
        _ => ([2, 3, 1], [("img", "/img/", 1), ("static", "/static/", 0)]),
    };
    let mut out = "[dispatch]\ndefault_pool = \"p2\"\n".to_owned();
    for (i, n) in pools.into_iter().enumerate() {
        out += &format!(
            "[dispatch.pools.p{i}]\nbackends = [{{ address = \"{}\" }}]\n",
            be(n)
        );
    }
    for (name, prefix, pool) in rules {
        out += &format!(
            "[[dispatch.rules]]\nname = \"{name}\"\npool = \"p{pool}\"\n\
             match = {{ path_prefix = \"{prefix}\" }}\n"
        );
    }
    out
}

/// The back-ends each rule set of [`rule_set`] may send `path` to.
const ALLOWED: [(&str, [&str; 2]); 2] = [
    ("/img/index.html", ["be1", "be3"]),
    ("/static/index.html", ["be2", "be3"]),
];

/// A wrk script whose thread N requests `ALLOWED[N]`'s path over and over and counts the
/// responses by status and `X-Baton-Backend`; at the end it prints
/// `served PATH STATUS BACKEND COUNT` lines. A thread per path, so that each response is
/// known to answer its thread's path (the response hook does not see the request).
const SERVED_BY_SCRIPT: &str = r#"
local paths = { "/img/index.html", "/static/index.html" }
local threads = {}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  wrk.path = paths[id]
  counts = {}
end
function response(status, headers, body)
  local key = status .. " " .. (headers["X-Baton-Backend"] or "none")
  counts[key] = (counts[key] or 0) + 1
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local path = paths[thread:get("id")]
    for key, n in pairs(thread:get("counts")) do
      io.write(string.format("served %s %s %d\n", path, key, n))
    end
  end
end
"#;

/// Follows a daemon's log as it grows, counting `event=reloaded` lines.
struct ReloadsLogged {
    log: std::fs::File,
    partial: Vec<u8>,
    seen: usize,
}

impl ReloadsLogged {
    fn new(daemon: &support::Daemon) -> Self {
        Self {
            log: std::fs::File::open(daemon.log_path()).unwrap(),
            partial: Vec::new(),
            seen: 0,
        }
    }

    /// Waits (at most 10 s) until `count` reloads were logged. The daemon logs a reload
    /// at the end of the round that wrote its generation of the kernel's rules.
    fn wait_for(&mut self, count: usize, daemon: &support::Daemon) {
        use std::io::Read as _;
        let started = std::time::Instant::now();
        while self.seen < count {
            let mut chunk = Vec::new();
            self.log.read_to_end(&mut chunk).unwrap();
            self.partial.extend_from_slice(&chunk);
            // Whole lines only: a line may be read as it is written.
            let end = self
                .partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let lines = String::from_utf8_lossy(&self.partial[..end]).into_owned();
            self.partial.drain(..end);
            for line in lines.lines() {
                assert!(
                    !line.contains("event=reload_failed")
                        && !line.contains("event=kernel_dispatch_unavailable"),
                    "{line}"
                );
                if line.contains(" event=reloaded ") {
                    self.seen += 1;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reload {count} not logged within 10 s:\n{}",
                daemon.log_text()
            );
            if self.seen < count {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Reloads in the test below.
const RELOADS: usize = 500;

/// wrk in the client's node, interrupted (SIGINT) if the test ends before it does.
struct Load(Option<std::process::Child>);

impl Load {
    /// Stops the run (SIGINT: wrk reports what it did so far) and returns its output.
    fn stop(&mut self) -> String {
        let child = self.0.take().unwrap();
        // SAFETY: kill(2) with a plain signal number, to the child this test spawned
        // (`lab exec` execs wrk in place) and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "wrk: {}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn reloads_under_load_swap_whole_rule_sets() {
    let config = with_kernel_dispatch(FRONTEND_CONFIG);
    let daemon_part = &config[..config.find("\n[dispatch]\n").unwrap() + 1];
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, "kernel routing, reloads")
        .frontend(&format!("{daemon_part}{}", rule_set(0)))
        .up()
    else {
        return;
    };
    cluster.assert_fast_path_attached();
    // The running file, pins and all, up to its [dispatch].
    let running = std::fs::read_to_string(&cluster.frontend_config).unwrap();
    let daemon_part = running[..running.find("\n[dispatch]\n").unwrap() + 1].to_owned();
    let script = std::path::PathBuf::from(format!("/run/{}-lab/served-by.lua", &*LAB));
    std::fs::write(&script, SERVED_BY_SCRIPT).unwrap();
    let kernel_before = in_kernel();

    // The load runs until the reloads are done: wrk ends its run at SIGINT and reports
    // as at the end of its duration (the duration only bounds a run gone wrong).
    let mut load = Load(Some(
        support::in_node(
            &LAB,
            "client",
            &[
                "wrk",
                "-t2",
                "-c16",
                "-d120s",
                "-s",
                script.to_str().unwrap(),
                "-H",
                "Connection: close",
                &format!("http://{VIP}/"),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    let started = std::time::Instant::now();
    while in_kernel() == kernel_before {
        assert!(started.elapsed() < Duration::from_secs(10), "no load");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reloads back to back under the load, each written whole (a rename) and waited
    // for before the next, so that every reload writes a new generation.
    let daemon = cluster.frontend();
    let mut reloads = ReloadsLogged::new(daemon);
    for count in 1..=RELOADS {
        let next = cluster.frontend_config.with_extension("next");
        std::fs::write(&next, format!("{daemon_part}{}", rule_set(count))).unwrap();
        std::fs::rename(&next, &cluster.frontend_config).unwrap();
        // SAFETY: kill(2) with a plain signal number, to the daemon this test started.
        assert_eq!(
            unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) },
            0
        );
        reloads.wait_for(count, daemon);
    }
    let wrk = load.stop();
    let took = started.elapsed();
    let kernel = in_kernel() - kernel_before;
    let log = cluster.stop_frontend();
    let generations = support::logged_number(&log, "fastpath_stats", "kernel_rule_generations");

    let requests = baton::bench::measure::wrk_request_count(&wrk)
        .unwrap_or_else(|| panic!("no request count in {wrk}"));
    eprintln!(
        "{wrk}\n{requests} requests in {took:?}, {kernel} handed off in the kernel, \
         {RELOADS} reloads, {generations} generations of the kernel's rules"
    );
    assert!(!wrk.contains("Socket errors"), "{wrk}");
    assert!(!wrk.contains("Non-2xx"), "{wrk}");
    let mut served = std::collections::HashMap::<(&str, &str), u64>::new();
    let mut counted = 0;
    // Responses from a back-end no rule set names for their path: half of one set and
    // half of another.
    let mut strays = 0;
    for line in wrk.lines().filter_map(|l| l.strip_prefix("served ")) {
        let [path, status, backend, n] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{line}");
        };
        let n: u64 = n.parse().unwrap();
        counted += n;
        assert_eq!(status, "200", "{line}");
        let allowed = ALLOWED.iter().find(|(p, _)| *p == path).unwrap().1;
        if !allowed.contains(&backend) {
            strays += n;
        }
        *served.entry((path, backend)).or_default() += n;
    }
    assert_eq!(
        strays, 0,
        "requests served by a back-end no rule set sends their path to:\n{wrk}"
    );
    assert_eq!(counted, requests, "every response counted:\n{wrk}");
    // Every set was in force while requests came: each path met both its back-ends.
    for (path, backends) in ALLOWED {
        for backend in backends {
            assert!(
                served.contains_key(&(path, backend)),
                "{path} never served by {backend}:\n{wrk}"
            );
        }
    }
    // Each reload changed the rules, so each wrote a generation: one at the start
    // (and another once the back-ends' MACs were known, if they were not then).
    assert!(
        generations > RELOADS as u64,
        "{generations} generations for {RELOADS} reloads"
    );
    assert!(
        kernel * 2 >= requests,
        "{kernel} of {requests} requests handed off in the kernel"
    );
}
