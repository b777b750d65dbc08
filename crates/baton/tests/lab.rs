//! Privileged lab tests: real namespaces, veth, a bridge, nginx, curl and eBPF.
//!
//! They need root; without it each test prints why it skipped and passes. They share
//! fixed namespace names, so they run one at a time (a lock here, and `--test-threads=1`
//! in `scripts/test`). They use the lab name `batontest`, never touching a user's lab.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

use baton::lab::{VIP, VIP6, backend_addr, v6_for};
use serde_json::Value;
use support::{LabGuard, ok, stdout};

mod support;

static LAB: support::LabName = support::LabName::new(|| support::unique("batontest"));
static SERIAL: Mutex<()> = Mutex::new(());

fn lab_guard(test: &str) -> Option<LabGuard> {
    support::lab_guard(&LAB, &SERIAL, test)
}

fn baton(args: &[&str]) -> Command {
    support::baton(&LAB, args)
}

fn fails_with(cmd: &mut Command, needle: &str) {
    let out = cmd.output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded, expected failure");
    assert!(
        err.contains(needle),
        "{cmd:?}: expected `{needle}` in: {err}"
    );
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("{LAB}-")))
        .map(String::from)
        .collect()
}

fn curl(args: &[&str]) -> String {
    support::curl(&LAB, args)
}

fn assert_fully_down() {
    assert_eq!(
        lab_namespaces(),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(
        !std::path::Path::new(&format!("/run/{LAB}-lab")).exists(),
        "state dir left behind"
    );
}

#[test]
fn lab_comes_up_serves_each_backend_through_the_router_and_goes_down_clean() {
    let Some(_guard) = lab_guard("lab lifecycle") else {
        return;
    };

    // Bad input changes nothing.
    fails_with(
        &mut baton(&["lab", "up", "--backends", "0"]),
        "between 1 and 32",
    );
    fails_with(
        &mut baton(&["lab", "up", "--backends", "33"]),
        "between 1 and 32",
    );
    fails_with(&mut baton(&["lab", "status"]), "not up");
    assert_fully_down();

    ok(&mut baton(&[
        "lab",
        "up",
        "--backends",
        "2",
        "--server",
        "nginx",
    ]));
    let namespaces = lab_namespaces();
    assert_eq!(namespaces.len(), 6, "{namespaces:?}");

    // `up` while up is refused and leaves the running lab alone.
    fails_with(&mut baton(&["lab", "up"]), "already up");
    fails_with(
        &mut baton(&["lab", "exec", "be3", "--", "true"]),
        "unknown lab node `be3`",
    );
    let status: Value =
        serde_json::from_str(&stdout(&mut baton(&["lab", "status", "--json"]))).unwrap();
    assert_eq!(status["backends"], 2);
    assert_eq!(status["server"], "nginx");
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["up"] == true)
    );

    for (k, addr) in [1, 2].map(|k| (k, backend_addr(k))) {
        let page = curl(&["-i", &format!("http://{addr}/")]);
        assert!(page.contains(&format!("backend=be{k}")), "{page}");
        assert!(page.contains(&format!("X-Baton-Backend: be{k}")), "{page}");
        let api = curl(&[&format!("http://{addr}/api/")]);
        assert!(api.contains(&format!("\"backend\":\"be{k}\"")), "{api}");
    }
    // The data files arrive byte-exact and match the published checksums.
    support::assert_download_byte_exact(&LAB, backend_addr(2), "1M.bin");
    // The router sends the VIP to the front-end.
    ok(&mut baton(&[
        "lab",
        "exec",
        "client",
        "--",
        "ping",
        "-c1",
        "-W2",
        &VIP.to_string(),
    ]));

    let nginx_pids: Vec<i32> = ["be1", "be2"]
        .iter()
        .map(|be| std::fs::read_to_string(format!("/run/{LAB}-lab/{be}/nginx.pid")).unwrap())
        .map(|p| p.trim().parse().unwrap())
        .collect();
    ok(&mut baton(&["lab", "down"]));
    assert_fully_down();
    for pid in nginx_pids {
        assert!(!baton::netns::running(pid), "nginx {pid} still runs");
    }
    // A second `down` has nothing to do and says so.
    let out = ok(&mut baton(&["lab", "down"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to remove"));
}

#[test]
fn lab_with_ipv6_serves_each_backend_over_both_families() {
    let Some(_guard) = lab_guard("lab with IPv6") else {
        return;
    };
    fails_with(
        &mut baton(&["lab", "up", "--ipv6", "--frontends", "2"]),
        "one front-end",
    );
    fails_with(
        &mut baton(&["lab", "up", "--ipv6", "--server", "builtin"]),
        "needs nginx",
    );
    assert_fully_down();

    // Without `--ipv6`, IPv6 is off in the lab: no packet counts of its own.
    ok(&mut baton(&["lab", "up", "--backends", "1"]));
    let off = stdout(&mut baton(&[
        "lab",
        "exec",
        "client",
        "--",
        "sysctl",
        "-n",
        "net.ipv6.conf.all.disable_ipv6",
    ]));
    assert_eq!(off.trim(), "1");
    ok(&mut baton(&["lab", "down"]));

    ok(&mut baton(&["lab", "up", "--backends", "2", "--ipv6"]));
    for k in [1, 2] {
        // The same site over both families, from the same nginx.
        let v6 = v6_for(backend_addr(k));
        let page = curl(&["-i", "-6", &format!("http://[{v6}]/")]);
        assert!(page.contains(&format!("X-Baton-Backend: be{k}")), "{page}");
        let page = curl(&["-i", &format!("http://{}/", backend_addr(k))]);
        assert!(page.contains(&format!("X-Baton-Backend: be{k}")), "{page}");
    }
    // The router sends the VIP's IPv6 address to the front-end too.
    ok(&mut baton(&[
        "lab",
        "exec",
        "client",
        "--",
        "ping",
        "-6",
        "-c1",
        "-W2",
        &VIP6.to_string(),
    ]));
    ok(&mut baton(&["lab", "down"]));
    assert_fully_down();
}

#[test]
fn lab_down_cleans_up_the_remains_of_a_crash() {
    let Some(_guard) = lab_guard("crash clean-up") else {
        return;
    };
    // What a crashed `up` can leave: some namespaces, a process inside one, the state dir.
    for node in ["client", "be7"] {
        ok(Command::new("ip").args(["netns", "add", &format!("{LAB}-{node}")]));
    }
    std::fs::create_dir_all(format!("/run/{LAB}-lab/be7")).unwrap();
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &format!("{LAB}-be7"), "sleep", "300"])
        .spawn()
        .unwrap();
    fails_with(&mut baton(&["lab", "up"]), "already up");
    ok(&mut baton(&["lab", "down"]));
    assert_fully_down();
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the process in the lab was not killed");
}

#[test]
fn builtin_server_serves_the_same_content() {
    let Some(_guard) = lab_guard("built-in server") else {
        return;
    };
    ok(&mut baton(&[
        "lab",
        "up",
        "--backends",
        "1",
        "--server",
        "builtin",
    ]));
    let be1 = backend_addr(1);
    let page = curl(&["-i", &format!("http://{be1}/static/")]);
    assert!(page.contains("backend=be1"), "{page}");
    assert!(page.contains("X-Baton-Backend: be1"), "{page}");
    let missing = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{be1}/nope"),
    ]);
    assert_eq!(missing, "404");
    support::assert_download_byte_exact(&LAB, be1, "1M.bin");
    let status: Value =
        serde_json::from_str(&stdout(&mut baton(&["lab", "status", "--json"]))).unwrap();
    assert_eq!(status["server"], "builtin");
}

/// `ip -s -j link show` of one interface in a lab namespace: (rx packets, rx bytes, tx
/// packets, tx bytes), the kernel's own interface counters.
fn iface_stats(node: &str, iface: &str) -> [u64; 4] {
    let out = stdout(Command::new("ip").args([
        "-n",
        &format!("{LAB}-{node}"),
        "-s",
        "-j",
        "link",
        "show",
        iface,
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    let n = |dir: &str, what: &str| s[dir][what].as_u64().unwrap();
    [
        n("rx", "packets"),
        n("rx", "bytes"),
        n("tx", "packets"),
        n("tx", "bytes"),
    ]
}

struct CounterProcess(Child);

impl Drop for CounterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ebpf_counter_matches_the_kernels_interface_counters() {
    let Some(_guard) = support::lab_up(&LAB, &SERIAL, "eBPF counter", 1) else {
        return;
    };

    let mut counter = CounterProcess(
        baton(&[
            "lab",
            "exec",
            "be1",
            "--",
            env!("CARGO_BIN_EXE_baton"),
            "counter",
            "eth0",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut lines = BufReader::new(counter.0.stdout.take().unwrap()).lines();
    let attached: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(attached["event"], "attached");

    let before = iface_stats("be1", "eth0");
    let be1 = backend_addr(1);
    curl(&["-o", "/dev/null", &format!("http://{be1}/files/1M.bin")]);
    ok(&mut baton(&[
        "lab",
        "exec",
        "client",
        "--",
        "ping",
        "-c5",
        "-i0.05",
        &be1.to_string(),
    ]));
    let after = iface_stats("be1", "eth0");

    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(counter.0.id() as i32, libc::SIGTERM) };
    let totals: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(counter.0.wait().unwrap().success());
    assert_eq!(totals["event"], "totals");

    let kernel = |i: usize| after[i] - before[i];
    let ebpf = |dir: &str, what: &str| totals[dir][what].as_u64().unwrap();
    // The counter was attached before `before` and read after `after`, so it saw at least
    // what the kernel counted in between, and the lab is quiet (IPv6 off), so at most a
    // few packets more (ARP).
    for (dir, packets, bytes) in [
        ("ingress", kernel(0), kernel(1)),
        ("egress", kernel(2), kernel(3)),
    ] {
        let (p, b) = (ebpf(dir, "packets"), ebpf(dir, "bytes"));
        assert!(
            p >= packets && p <= packets + 4,
            "{dir}: eBPF {p} packets, kernel {packets}"
        );
        assert!(
            b >= bytes && b <= bytes + 4 * 64,
            "{dir}: eBPF {b} bytes, kernel {bytes}"
        );
    }
    assert!(
        ebpf("egress", "bytes") > 1 << 20,
        "the 1 MiB response left through eth0"
    );
    assert!(ebpf("ingress", "packets") >= 5, "the pings arrived");
}
