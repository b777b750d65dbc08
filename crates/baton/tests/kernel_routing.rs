//! Routing decided in the kernel, end to end (issue 19, "Done when"): with `[tcp]
//! kernel_dispatch` on, requests routed by Host (exact and wildcard), path, file type,
//! sticky cookie (by id and by hash) and, for a TLS service, by SNI are handed off by
//! the front-end's XDP program itself (its `handed_off_in_kernel` counter goes up by one
//! per request); then a reload puts a regex rule first, which the kernel cannot judge,
//! so that the slow path decides every request, and the same requests reach the same
//! back-ends (the counter stays). Real curl, real nginx back-ends (TLS with their lab
//! certificates), the real daemons.
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
    assert!(out.contains(&daemon.pid().to_string()), "{out}");
    wait_for_log(daemon, Duration::from_secs(5), "reloaded", |log| {
        log.contains(" event=reloaded ")
    });
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
