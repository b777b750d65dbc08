//! The content-aware dispatcher in the daemon, in the lab: `baton frontend` on `fe` with
//! the `[dispatch]` configuration, `baton backend` and stock nginx on three back-ends,
//! unmodified curl on `client`.
//!
//! - routing by Host, path and file type, with the example configuration;
//! - rules matching the path nginx resolves (`/img/../api/`, `/%61pi/`, `//api/`), and
//!   the front-end's 400 for a path no server would resolve;
//! - sticky sessions: a server id in a cookie, and a hashed session cookie;
//! - TLS: SNI rules sending unmodified `curl https://NAME/` to the nginx back-end its name
//!   dictates, each back-end with its own certificate from `lab tls` (the subject names
//!   the back-end that answered), over HTTP/1.1 and HTTP/2;
//! - active health checks: a back-end whose nginx stops gets no new connections within
//!   the check interval, all down gives the configured 503, a back-end that comes back
//!   gets traffic again;
//! - hot reload: `baton reload` (SIGHUP) changes routing for new connections while a
//!   download that started before goes on, and an invalid file leaves the old one in
//!   force.
//!
//! Root only (each test prints why it skipped otherwise); lab name `btdi<pid>`; one test
//! at a time.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use baton::lab::{FE_ADDR, HTTP_PORT, HTTPS_PORT, VIP, VIP2};
use support::{Cluster, FRONTEND_CONFIG, backend_at, baton, ok, served_by, stdout, wait_for_log};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("btdi"));
static SERIAL: Mutex<()> = Mutex::new(());

/// The lab with three back-ends, each with its agent, and a front-end with `frontend`.
fn cluster(test: &str, frontend: &str) -> Option<Cluster> {
    Cluster::builder(&LAB, &SERIAL, test)
        .frontend(frontend)
        .up()
}

/// curl on `client` for `url` with `args`; the response head.
fn head(url: &str, args: &[&str]) -> String {
    let mut all = vec!["-D", "-", "-o", "/dev/null"];
    all.extend_from_slice(args);
    all.push(url);
    support::curl(&LAB, &all)
}

/// Which back-end served `path` on the VIP, with curl `args`.
fn backend_for(path: &str, args: &[&str]) -> String {
    let head = head(&format!("http://{VIP}{path}"), args);
    served_by(&head).unwrap_or_else(|| panic!("{path} {args:?}: no X-Baton-Backend in {head}"))
}

/// How many requests for `path` each back-end served, out of `n`.
fn spread(path: &str, args: &[&str], n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(backend_for(path, args)).or_default() += 1;
    }
    seen
}

/// The example's daemon settings (everything before `[dispatch]`) on `port`, with
/// `dispatch`.
fn with_dispatch(port: u16, dispatch: &str) -> String {
    let at = FRONTEND_CONFIG
        .find("\n[dispatch]\n")
        .expect("the example has a [dispatch] table");
    let daemon = FRONTEND_CONFIG[..at].replace("\nport = 80\n", &format!("\nport = {port}\n"));
    assert!(daemon.contains(&format!("\nport = {port}\n")));
    format!("{daemon}\n{dispatch}")
}

/// The lab's TLS service: the VIP, HTTPS port.
fn vip_tls() -> String {
    format!("{VIP}:{HTTPS_PORT}")
}

/// Runs `nginx` on back-end `k` with the lab's configuration and `args`.
fn nginx(k: usize, args: &[&str]) {
    let dir = format!("/run/{LAB}-lab/be{k}");
    let (log, conf) = (format!("{dir}/logs/error.log"), format!("{dir}/nginx.conf"));
    let node = format!("be{k}");
    let mut all = vec!["lab", "exec", &node, "--", "nginx", "-e", &log, "-c", &conf];
    all.extend_from_slice(args);
    ok(&mut baton(&LAB, &all));
}

/// Stops back-end `k`'s nginx and waits until its master is gone.
fn stop_nginx(k: usize) {
    nginx(k, &["-s", "stop"]);
    let pid_file = PathBuf::from(format!("/run/{LAB}-lab/be{k}/nginx.pid"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_file.exists() {
        assert!(Instant::now() < deadline, "be{k}'s nginx did not stop");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `event=health` lines of `log` that say back-end `k` is `state` (as a whole).
fn health_says(log: &str, k: usize, state: &str) -> bool {
    log.lines().any(|l| {
        l.contains(" event=health ")
            && l.contains(&format!(" backend={}:", baton::lab::backend_addr(k as u8)))
            && l.contains(&format!(" backend_state={state} "))
    })
}

#[test]
fn requests_are_routed_by_host_path_and_file_type() {
    let Some(mut cluster) = cluster("routing by content", FRONTEND_CONFIG) else {
        return;
    };
    for (path, args, want) in [
        // Host, exact and wildcard, case-insensitive; on a path no rule names.
        ("/", &["-H", "Host: img.baton.test"][..], "be1"),
        ("/", &["-H", "Host: Thumbs.IMG.baton.test"], "be1"),
        // Path prefixes.
        ("/img/", &[], "be1"),
        ("/api/status.json", &[], "be2"),
        ("/static/", &[], "be3"),
        // File types, anywhere in the tree (nginx answers 404 with the header).
        ("/files/logo.svg", &[], "be1"),
        ("/files/photo.JPG", &[], "be1"),
        ("/files/site.css", &[], "be3"),
        ("/files/app.js", &[], "be3"),
    ] {
        assert_eq!(backend_for(path, args), want, "{path} {args:?}");
    }
    // Everything else: round robin over the three. Decided in the kernel, each CPU walks
    // the pool's period from its own place (docs/design.md, "Dispatch in the kernel"), so
    // over 30 requests each back-end gets 10, give or take one per CPU.
    let seen = spread("/", &[], 30);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.values().all(|&n| n.abs_diff(10) <= cpus),
        "round robin over the three: {seen:?}"
    );
    // A request the example routes nowhere else is served, byte-exact.
    support::assert_download_byte_exact(&LAB, VIP, "1M.bin");

    let log = cluster.stop_frontend();
    for (rule, pool, request) in [
        ("images-host", "images", "\"GET / HTTP/1.1\""),
        ("api", "api", "\"GET /api/status.json HTTP/1.1\""),
        ("static", "static", "\"GET /files/app.js HTTP/1.1\""),
        ("default", "all", "\"GET /files/1M.bin HTTP/1.1\""),
    ] {
        let want = format!("request={request} rule={rule} pool={pool} ");
        assert!(
            log.lines()
                .any(|l| l.contains("event=handoff ") && l.contains(&want)),
            "no handoff line with `{want}`:\n{log}"
        );
    }
    assert!(log.contains(" dispatch=\"5 rules, 5 pools, 3 back-ends, 4 health checks\""));
}

#[test]
fn rules_match_the_path_nginx_resolves_and_unresolvable_paths_get_400() {
    let Some(mut cluster) = cluster("path normalisation", FRONTEND_CONFIG) else {
        return;
    };
    // curl resolves dot segments itself unless told not to; these must reach the VIP
    // as written. nginx serves each from /api/, so the api rule (be2) must take them,
    // whatever the images rule (be1, `/img/`) or round robin would say about the bytes.
    // Three times each: round robin over the three back-ends would miss be2 at least
    // once, so no example can pass by luck.
    for path in [
        "/img/../api/status.json",
        "/%61pi/status.json",
        "//api/status.json",
        "/img/%2e%2e/api/status.json",
    ] {
        for _ in 0..3 {
            let head = head(&format!("http://{VIP}{path}"), &["--path-as-is"]);
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            assert_eq!(served_by(&head).as_deref(), Some("be2"), "{path}: {head}");
        }
    }
    // A path above the root is the front-end's 400, before any back-end sees it: no
    // `X-Baton-Backend`, and counted by the front-end.
    for path in ["/../etc/passwd", "/api/%zz", "/api/%4"] {
        let head = head(&format!("http://{VIP}{path}"), &["--path-as-is"]);
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
        assert_eq!(served_by(&head), None, "{path}: {head}");
    }
    let log = cluster.stop_frontend();
    assert_eq!(
        support::logged_number(&log, "frontend_stats", "responses_400"),
        3,
        "{log}"
    );
    // The access log line shows the request as sent, the rule as matched.
    let want = "request=\"GET /img/../api/status.json HTTP/1.1\" rule=api pool=api ";
    assert!(
        log.lines()
            .any(|l| l.contains("event=handoff ") && l.contains(want)),
        "no handoff line with `{want}`:\n{log}"
    );
}

#[test]
fn sticky_cookies_keep_a_session_on_its_backend() {
    let Some(_cluster) = cluster("sticky sessions", FRONTEND_CONFIG) else {
        return;
    };
    // A server id after the last `.` (Tomcat's jvmRoute), in the default pool: always
    // that back-end, whatever round robin would have picked.
    for (cookie, want) in [
        ("JSESSIONID=abc.be2", "be2"),
        ("lang=en; JSESSIONID=9F2C.x.be3", "be3"),
        ("JSESSIONID=be1", "be1"),
    ] {
        let seen = spread("/", &["-H", &format!("Cookie: {cookie}")], 6);
        assert_eq!(
            seen,
            BTreeMap::from([(want.to_owned(), 6)]),
            "Cookie: {cookie}"
        );
    }
    // An id no back-end has: the pool's policy decides (all three, round robin).
    assert_eq!(
        spread("/", &["-H", "Cookie: JSESSIONID=abc.be9"], 6).len(),
        3
    );
    // A session cookie hashed onto the pool: the same session, the same back-end, on
    // any path the rules send to that pool; different sessions spread.
    let mut owners = BTreeMap::new();
    for session in 0..12 {
        let cookie = format!("Cookie: session=s{session}-0f3a");
        let first = backend_for("/", &["-H", &cookie]);
        for path in ["/", "/files/1K.bin", "/index.html"] {
            assert_eq!(
                backend_for(path, &["-H", &cookie]),
                first,
                "{cookie} {path}"
            );
        }
        *owners.entry(first).or_insert(0) += 1;
    }
    assert!(
        owners.len() >= 2,
        "sessions spread over the pool: {owners:?}"
    );
}

#[test]
fn sni_rules_send_tls_clients_to_the_backend_their_name_dictates() {
    // Beyond baton.test and *.baton.test, which every lab certificate names.
    let names = ["v2.api.baton.test", "other.example"];
    let tls_dir = || PathBuf::from(format!("/run/{LAB}-lab/tls"));
    let frontend = with_dispatch(
        HTTPS_PORT,
        &format!(
            r#"[dispatch]
default_pool = "be3"
# Checked over plain HTTP on port 80: the pools' addresses are TLS ports.
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
[[dispatch.rules]]
name = "shop"
pool = "be1"
match = {{ sni = "shop.baton.test" }}
[[dispatch.rules]]
name = "api"
pool = "be2"
match = {{ sni = ["api.baton.test", "*.api.baton.test"] }}
"#,
            be1 = backend_at(1, HTTPS_PORT),
            be2 = backend_at(2, HTTPS_PORT),
            be3 = backend_at(3, HTTPS_PORT),
        ),
    );
    // The back-end module answers as VIP:443, where nginx serves TLS.
    let vip_tls = vip_tls();
    let agents = [(1, &*vip_tls), (2, &vip_tls), (3, &vip_tls)];
    // `lab tls`: a certificate per back-end (CN=beK), signed by the lab's CA, with the
    // names outside baton.test the test asks for.
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, "SNI routing")
        .agents_answering_as(&agents)
        .tls(baton::lab::TlsCerts::PerBackend {
            names: names.map(String::from).to_vec(),
        })
        .frontend(&frontend)
        .up()
    else {
        return;
    };
    assert_eq!(cluster.tls_ca.as_ref(), Some(&tls_dir().join("ca.pem")));
    let cacert = tls_dir().join("ca.pem");
    let cacert = cacert.to_str().unwrap();
    for (name, want) in [
        ("shop.baton.test", "be1"),
        ("api.baton.test", "be2"),
        ("v2.api.baton.test", "be2"),
        ("other.baton.test", "be3"),
        ("other.example", "be3"),
        ("shop.baton.test", "be1"),
    ] {
        // Unmodified curl: the name resolves to the VIP, the certificate is verified.
        let resolve = format!("{name}:443:{VIP}");
        let url = format!("https://{name}/");
        let out = support::curl(
            &LAB,
            &[
                "--http1.1",
                "--resolve",
                &resolve,
                "--cacert",
                cacert,
                "-D",
                "-",
                &url,
            ],
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{name}: {out}");
        assert_eq!(served_by(&out).as_deref(), Some(want), "{name}: {out}");
        assert!(out.contains(&format!("backend={want}")), "{name}: {out}");
        // HTTP/2 through the handoff (ALPN is the back-end's), and the certificate that
        // answered names the back-end the rule chose.
        let out = support::in_node(
            &LAB,
            "client",
            &[
                "curl",
                "-sS",
                "-v",
                "-m",
                "60",
                "--http2",
                "--resolve",
                &resolve,
                "--cacert",
                cacert,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &url,
            ],
        )
        .output()
        .unwrap();
        let (code, verbose) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(code, "200 2", "{name} over HTTP/2: {verbose}");
        assert!(
            verbose.contains(&format!("subject: CN={want}")),
            "{name}: the certificate names {want}:\n{verbose}"
        );
    }
    // A download over TLS through the handoff, byte-exact.
    let sums = stdout(&mut baton(
        &LAB,
        &[
            "lab",
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!(
                "curl -sS -m 60 --resolve shop.baton.test:443:{VIP} --cacert {cacert} \
                 https://shop.baton.test/files/1M.bin | sha256sum"
            ),
        ],
    ));
    let want = std::fs::read_to_string(format!("/run/{LAB}-lab/be1/www/files/SHA256SUMS"))
        .unwrap()
        .lines()
        .find(|l| l.ends_with(" 1M.bin"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(sums.split_whitespace().next(), Some(want.as_str()));
    let log = cluster.stop_frontend();
    assert!(
        log.contains("request=\"TLS sni=v2.api.baton.test\" rule=api pool=be2 "),
        "{log}"
    );
    assert!(
        !log.contains("event=health "),
        "port-80 checks pass:\n{log}"
    );
}

#[test]
fn health_checks_take_a_stopped_backend_out_and_all_down_gives_the_503() {
    // The example's checks, faster: every 300 ms, down after 2 failures.
    let config = FRONTEND_CONFIG
        .replace("interval_ms = 1000", "interval_ms = 300")
        .replace("timeout_ms = 500", "timeout_ms = 200");
    assert!(config.contains("interval_ms = 300") && config.contains("fall = 2"));
    let Some(mut cluster) = cluster("health checks", &config) else {
        return;
    };
    let daemon = cluster.frontend();
    assert_eq!(spread("/", &[], 6).len(), 3, "all three serve at first");

    // be2's nginx stops: its host refuses connections, and two checks later (600 ms,
    // plus the loop's 250 ms at most) the dispatcher has it down.
    stop_nginx(2);
    let took = wait_for_log(daemon, Duration::from_secs(3), "be2 down", |log| {
        health_says(log, 2, "down")
    });
    eprintln!("be2 marked down {took:?} after its nginx stopped");
    // Round robin over be1 and be3. The kernel keeps one cursor per CPU (as Katran and
    // Cilium do: no shared counter on the packet path), so six requests split 3/3 only
    // if they all meet one CPU; each CPU alternates, so each of the two gets at least
    // one (one CPU sees three or more of the six).
    let seen = spread("/", &[], 6);
    assert_eq!(seen.get("be2"), None, "new connections avoid be2: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 6, "{seen:?}");
    assert!(
        seen.get("be1").is_some_and(|&n| n > 0) && seen.get("be3").is_some_and(|&n| n > 0),
        "both be1 and be3 take connections: {seen:?}"
    );
    // The active check, not a failed handoff, kept them away: nothing was retried.
    assert!(!daemon.log_text().contains("event=handoff_retry"));
    // /api/ has only be2: 503 with the configured body.
    let body = support::curl(&LAB, &["-i", &format!("http://{VIP}/api/")]);
    assert!(
        body.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{body}"
    );

    // All down: the configured 503 body, never a hang.
    stop_nginx(1);
    stop_nginx(3);
    wait_for_log(daemon, Duration::from_secs(3), "all down", |log| {
        health_says(log, 1, "down") && health_says(log, 3, "down")
    });
    let started = Instant::now();
    let response = support::curl(&LAB, &["-i", &format!("http://{VIP}/")]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{head}"
    );
    assert!(head.contains("Content-Type: text/html"), "{head}");
    let configured = "<html><body><h1>503 Service Unavailable</h1>\nNo back-end of the Baton \
                      lab can take this request; please try again in a moment.\n</body></html>\n";
    assert_eq!(body, configured);
    assert!(head.contains(&format!("Content-Length: {}", configured.len())));

    // be1 comes back: after two passing checks it serves again.
    nginx(1, &[]);
    wait_for_log(daemon, Duration::from_secs(3), "be1 up", |log| {
        health_says(log, 1, "up")
    });
    assert_eq!(spread("/", &[], 3), BTreeMap::from([("be1".into(), 3)]));
    let log = cluster.stop_frontend();
    assert!(log.contains(" event=unavailable "), "{log}");
    assert!(
        log.contains("reason=\"connect: Connection refused (os error 111)\""),
        "{log}"
    );
}

#[test]
fn a_reload_changes_routing_for_new_connections_only_and_an_invalid_file_changes_nothing() {
    let Some(mut cluster) = cluster("reload", FRONTEND_CONFIG) else {
        return;
    };
    let daemon = cluster.frontend();
    let path = PathBuf::from(format!("/run/{LAB}-lab/fe.toml"));
    let running = std::fs::read_to_string(&path).unwrap();
    assert_eq!(backend_for("/api/", &[]), "be2");
    assert_eq!(backend_for("/img/", &[]), "be1");

    // A download from be1 (the /img/ rule) that lasts across the reload: 1 MiB at
    // 256 KiB/s.
    let header = format!("/run/{LAB}-lab/slow.head");
    let slow = baton(
        &LAB,
        &[
            "lab",
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!(
                "curl -sS -m 60 -H 'Host: img.baton.test' --limit-rate 256k -D {header} \
                 http://{VIP}/files/1M.bin | sha256sum"
            ),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_log(daemon, Duration::from_secs(5), "the slow handoff", |log| {
        log.contains("request=\"GET /files/1M.bin HTTP/1.1\"")
    });

    // The new rules: images on be3, the API on be1.
    let on = |k| {
        format!(
            "backends = [{{ address = \"{}\" }}]",
            backend_at(k, HTTP_PORT)
        )
    };
    let images = |k| format!("[dispatch.pools.images]\n{}", on(k));
    let api = |k| format!("policy = \"least_connections\"\n{}", on(k));
    assert!(running.contains(&images(1)) && running.contains(&api(2)));
    let new = running
        .replace(&images(1), &images(3))
        .replace(&api(2), &api(1));
    std::fs::write(&path, &new).unwrap();
    let out = stdout(&mut baton(
        &LAB,
        &["reload", "--config", path.to_str().unwrap()],
    ));
    assert!(out.contains(&daemon.pid().to_string()), "{out}");
    wait_for_log(daemon, Duration::from_secs(5), "reloaded", |log| {
        log.contains(" event=reloaded ")
    });
    assert_eq!(backend_for("/api/", &[]), "be1");
    assert_eq!(backend_for("/img/", &[]), "be3");
    assert_eq!(backend_for("/files/x.png", &[]), "be3");

    // The download that started before goes on, from be1, byte-exact.
    let slow = slow.wait_with_output().unwrap();
    assert!(slow.status.success());
    assert_eq!(
        String::from_utf8_lossy(&slow.stdout)
            .split_whitespace()
            .next(),
        Some(support::expected_sha256(&LAB, "1M.bin").as_str())
    );
    let slow_head = std::fs::read_to_string(&header).unwrap();
    assert_eq!(served_by(&slow_head).as_deref(), Some("be1"), "{slow_head}");

    // An invalid file: `baton reload` refuses it and signals nothing...
    let invalid = new.replace("pool = \"api\"", "pool = \"apii\"");
    std::fs::write(&path, &invalid).unwrap();
    let refused = baton(&LAB, &["reload", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("dispatch.rules[2].pool: no pool named `apii`") && why.contains("line "),
        "{why}"
    );
    // ... and a SIGHUP anyway leaves the old configuration in force, saying why.
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) };
    wait_for_log(daemon, Duration::from_secs(5), "reload_failed", |log| {
        log.contains(" event=reload_failed ") && log.contains("dispatch.rules[2].pool")
    });
    assert_eq!(backend_for("/api/", &[]), "be1");
    assert_eq!(backend_for("/img/", &[]), "be3");

    // Settings a running daemon cannot change are reported; the rules still apply.
    let images_now = images(3);
    let restart = new
        .replace("handoff_rto_ms = 200", "handoff_rto_ms = 300")
        .replace(&images_now, &images(2));
    assert!(!restart.contains(&images_now) && restart.contains("handoff_rto_ms = 300"));
    std::fs::write(&path, &restart).unwrap();
    ok(&mut baton(
        &LAB,
        &["reload", "--config", path.to_str().unwrap()],
    ));
    wait_for_log(daemon, Duration::from_secs(5), "needs restart", |log| {
        log.contains("event=reload_needs_restart fields=limits.handoff_rto_ms ")
    });
    assert_eq!(backend_for("/img/", &[]), "be2");
    let log = cluster.stop_frontend();
    assert_eq!(log.matches(" event=reloaded ").count(), 2, "{log}");
}

/// Issue 16, item 2: one front-end daemon (one XDP program, one capture socket, one
/// nftables table) serves several services, on two VIPs: HTTP on 198.18.2.1:80 and
/// 198.18.2.2:80, HTTPS on 198.18.2.1:443, with rules on the service. Before, a second
/// daemon for 443 took over the first's XDP link, configuration and nftables table, and
/// port 80's clients were reset.
#[test]
fn one_frontend_serves_http_and_https_on_two_vips() {
    let (vip_http, vip_tls, vip2_http) = (
        format!("{VIP}:{HTTP_PORT}"),
        vip_tls(),
        format!("{VIP2}:{HTTP_PORT}"),
    );
    // The example's `vip` and `port` lines become one `services` line.
    let services = format!("services = [\"{vip_http}\", \"{vip_tls}\", \"{vip2_http}\"]");
    let frontend: String = FRONTEND_CONFIG
        .lines()
        .filter(|l| !l.starts_with("port ="))
        .map(|l| {
            if l.starts_with("vip =") {
                services.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(frontend.contains("\nservices = [") && !frontend.contains("\nvip ="));
    let at = frontend.find("\n[dispatch]\n").unwrap();
    let dispatch = format!(
        r#"[dispatch]
default_pool = "http1"
[dispatch.health]
path = "/"
port = {HTTP_PORT}
interval_ms = 500
[dispatch.pools.http1]
backends = [{{ address = "{be1}" }}]
[dispatch.pools.http2]
backends = [{{ address = "{be2}" }}]
[dispatch.pools.tls]
backends = [{{ address = "{be3}" }}]
[[dispatch.rules]]
name = "tls"
pool = "tls"
match = {{ service = "*:{HTTPS_PORT}" }}
[[dispatch.rules]]
name = "second_vip"
pool = "http2"
match = {{ service = "{vip2_http}" }}
"#,
        be1 = backend_at(1, HTTP_PORT),
        be2 = backend_at(2, HTTP_PORT),
        be3 = backend_at(3, HTTPS_PORT),
    );
    let frontend = format!("{}\n{dispatch}", &frontend[..at]);
    // One agent per back-end, each answering as its service: be1 as VIP:80, be2 as
    // VIP2:80, be3 as VIP:443 (nginx serves TLS there).
    let agents = [(1, &*vip_http), (2, &vip2_http), (3, &vip_tls)];
    let second_vip = || {
        // The second VIP: on fe's `lo`, routed to fe by the router.
        let (vip2, fe) = (format!("{VIP2}/32"), FE_ADDR.to_string());
        for (node, args) in [
            ("fe", vec!["ip", "addr", "add", &vip2, "dev", "lo"]),
            ("router", vec!["ip", "route", "add", &vip2, "via", &fe]),
        ] {
            let mut all = vec!["lab", "exec", node, "--"];
            all.extend(args);
            ok(&mut baton(&LAB, &all));
        }
    };
    let Some(mut cluster) = Cluster::builder(&LAB, &SERIAL, "several services")
        .agents_answering_as(&agents)
        .tls(baton::lab::TlsCerts::PerBackend { names: Vec::new() })
        .before_frontend(second_vip)
        .frontend(&frontend)
        .up()
    else {
        return;
    };
    let ready = cluster.frontend().log_text();
    assert!(
        ready.contains(&format!("service={vip_http},{vip_tls},{vip2_http}")),
        "{ready}"
    );
    let cacert = format!("/run/{LAB}-lab/tls/ca.pem");
    for round in 0..3 {
        assert_eq!(backend_for("/", &[]), "be1", "round {round}: VIP:80");
        let out = head(&format!("http://{VIP2}/"), &[]);
        assert_eq!(served_by(&out).as_deref(), Some("be2"), "VIP2:80: {out}");
        let resolve = format!("baton.test:443:{VIP}");
        let out = support::curl(
            &LAB,
            &[
                "--http1.1",
                "--resolve",
                &resolve,
                "--cacert",
                &cacert,
                "-D",
                "-",
                "-o",
                "/dev/null",
                "https://baton.test/",
            ],
        );
        assert!(out.starts_with("HTTP/"), "{out}");
        assert_eq!(served_by(&out).as_deref(), Some("be3"), "VIP:443: {out}");
    }
    // Every one of them took the fast path's one program: handed-off flows of all three
    // services were forwarded in XDP.
    let xdp = support::fastpath_counters(&LAB);
    assert!(xdp["forwarded"] > 0, "{xdp:?}");
    let log = cluster.stop_frontend();
    for (rule, pool) in [
        ("tls", "tls"),
        ("second_vip", "http2"),
        ("default", "http1"),
    ] {
        assert!(
            log.contains(&format!("rule={rule} pool={pool} ")),
            "rule {rule}:\n{log}"
        );
    }
}
