//! `baton lab up --cluster`: the whole cluster in the lab, so that one command gives a
//! working VIP. The back-end agent on every back-end and the front-end daemon on every
//! front-end, each with a configuration made from the examples for this lab and node
//! (in the node's folder, `backend.toml` or `frontend.toml`, its log beside it), and in
//! a tier the routing daemons ([`super::tier`]), which `lab up` has started already.
//! Ready when every daemon says so and, in a tier, the router routes the VIP to every
//! front-end. `lab down` stops them all with the lab's other processes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Lab, LabState, Node, tier};

/// The examples the configurations are made from: one binary carries them, so the
/// cluster starts from anywhere, not only from a checkout.
pub const FRONTEND_EXAMPLE: &str = include_str!("../../../../examples/frontend-lab.toml");
pub const BACKEND_EXAMPLE: &str = include_str!("../../../../examples/backend-lab.toml");
/// Where each front-end serves its metrics, for `baton status` run in its node.
pub const FRONTEND_METRICS: &str = "127.0.0.1:9180";
/// How long the daemons may take to be ready: each loads eBPF programs, and the
/// verifier takes seconds per program on a busy 2-core machine, for every daemon at once.
const READY_WITHIN: Duration = Duration::from_secs(90);
/// How long the BGP sessions may take once every front-end announces: BIRD retries a
/// connection every second.
const ROUTED_WITHIN: Duration = Duration::from_secs(30);

/// Back-end `k`'s agent configuration: the example with this lab's pin folder, and in a
/// tier the front-ends' group MAC for what the module sends the front-end.
pub fn backend_config(lab: &Lab, state: &LabState, k: u8) -> String {
    let mut text = BACKEND_EXAMPLE.replace(
        "/run/baton-lab/be1/bpf",
        &lab.bpffs(Node::Backend(k)).display().to_string(),
    );
    if state.ipv6 {
        text = backend_ipv6(&text);
    }
    if state.frontends > 1 {
        text.replace(
            &format!("frontend_mac = \"{}\"", super::mac_for(super::FE_ADDR)),
            &format!(
                "# The tier's front-ends all receive this multicast MAC (lab/tier.rs).\n\
                 frontend_mac = \"{}\"",
                tier::FRONTEND_GROUP_MAC
            ),
        )
    } else {
        text
    }
}

/// Where a tier's front-ends read the secret they share (ISNs, `tsv_f`, SYN cookies):
/// written by [`start`], random for each lab.
pub fn shared_secret_file(lab: &Lab) -> PathBuf {
    lab.state_dir().join("frontend-secret.key")
}

/// A front-end's configuration: the example with this node's pin folder and metrics,
/// and in a tier the secret the front-ends share and an `[announce]` section, so that
/// its BIRD announces the VIP only while it can serve.
pub fn frontend_config(lab: &Lab, state: &LabState, node: Node) -> String {
    let pins = lab.bpffs(node).display().to_string();
    let mut text = FRONTEND_EXAMPLE.replace(
        "pin_dir = \"/run/baton-lab/fe/bpf\"",
        &format!("pin_dir = \"{pins}\"\nmetrics = \"{FRONTEND_METRICS}\""),
    );
    if state.ipv6 {
        text = frontend_ipv6(&text);
    }
    if state.frontends > 1 {
        // One secret for the tier: a handshake the routers move to another front-end
        // half-way (a front-end gone or added) completes there by its cookie, where a
        // secret of its own would have the other reset it (docs/design.md, "The
        // front-end tier").
        text = text.replace(
            "# secret = \"...\"",
            &format!(
                "secret_file = \"{}\"\n# secret = \"...\"",
                shared_secret_file(lab).display()
            ),
        );
        text.push_str(&format!(
            "\n# Written by `baton lab up --cluster`: this front-end's BIRD announces the VIP\n\
             # to the router while the daemon holds it on this device.\n\
             [announce]\ninterface = \"{}\"\n",
            tier::ANNOUNCE_INTERFACE
        ));
    }
    text
}

/// A back-end agent's configuration (the example's, or one made from it) for a lab up
/// with `--ipv6`: the VIP's IPv6 address ([`super::VIP6`]) beside its IPv4 one, so that
/// the module hands off IPv6 flows too. `text` must name the lab's VIP on a `vip = `
/// line of its own, as the example does; otherwise it is returned as it is.
pub fn backend_ipv6(text: &str) -> String {
    let vip = format!("vip = \"{}:", super::VIP);
    let Some(start) = text.find(&vip) else {
        return text.to_owned();
    };
    let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
    format!(
        "{}\nvip6 = \"{}\"{}",
        &text[..end],
        super::VIP6,
        &text[end..]
    )
}

/// A front-end's configuration (the example's, or one made from it) for a lab up with
/// `--ipv6`: `vip6` ([`super::VIP6`]) beside the `vip = ` line naming the lab's VIP,
/// and in every pool each lab back-end's IPv6 twin ([`super::v6_for`], same port)
/// listed after it: the dispatcher picks only back-ends of the client's family, so an
/// IPv6 client needs IPv6 members. A twin has the member's other keys but its `id`
/// (ids are unique): `id = "be1"` becomes `id = "be1-v6"`, so a sticky `by = "id"`
/// cookie names the IPv4 member alone and an IPv6 client with it goes by the pool's
/// policy. A pool with an IPv6 member is picked in userspace, not by the kernel's
/// dispatch (docs/design.md, "IPv6: the plan").
pub fn frontend_ipv6(text: &str) -> String {
    const ADDRESS: &str = "{ address = \"";
    let line = format!("vip = \"{}\"", super::VIP);
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    if let Some(at) = rest.find(&line) {
        let end = at + line.len();
        out.push_str(&rest[..end]);
        out.push_str(&format!("\nvip6 = \"{}\"", super::VIP6));
        rest = &rest[end..];
    }
    while let Some(at) = rest.find(ADDRESS) {
        let Some(close) = rest[at..].find('}').map(|n| at + n + 1) else {
            break;
        };
        let member = &rest[at..close];
        out.push_str(&rest[..close]);
        rest = &rest[close..];
        let quoted = &member[ADDRESS.len()..];
        let Some(addr) = quoted
            .split('"')
            .next()
            .and_then(|a| a.parse::<std::net::SocketAddrV4>().ok())
        else {
            continue;
        };
        let twin_addr = std::net::SocketAddrV6::new(super::v6_for(*addr.ip()), addr.port(), 0, 0);
        let mut twin = member.replacen(&addr.to_string(), &twin_addr.to_string(), 1);
        if let Some(id_at) = twin.find("id = \"") {
            let value = id_at + "id = \"".len();
            if let Some(n) = twin[value..].find('"') {
                twin.insert_str(value + n, "-v6");
            }
        }
        out.push_str(", ");
        out.push_str(&twin);
    }
    out.push_str(rest);
    out
}

/// A daemon started here, with the log line that says it is ready.
struct Started {
    node: Node,
    child: Child,
    log: PathBuf,
    ready: &'static str,
}

/// Starts every daemon of the cluster and waits until the VIP works.
pub fn start(lab: &Lab, state: &LabState, log: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let started_at = Instant::now();
    if state.frontends > 1 {
        write_shared_secret(&shared_secret_file(lab))?;
    }
    let mut started = Vec::new();
    for k in 1..=state.backends {
        let node = Node::Backend(k);
        started.push(spawn(
            lab,
            node,
            "backend",
            &backend_config(lab, state, k),
            "event=attached ",
        )?);
    }
    for node in state.frontend_nodes() {
        started.push(spawn(
            lab,
            node,
            "frontend",
            &frontend_config(lab, state, node),
            "event=ready",
        )?);
    }
    let deadline = Instant::now() + READY_WITHIN;
    for daemon in &mut started {
        wait_ready(daemon, deadline)?;
    }
    log(&format!(
        "cluster: {} back-end agents and {} front-end daemons ready in {:.1} s; logs in {}/NODE/",
        state.backends,
        state.frontends,
        started_at.elapsed().as_secs_f64(),
        lab.state_dir().display()
    ));
    if state.frontends > 1 {
        let deadline = Instant::now() + ROUTED_WITHIN;
        let want = state.frontends as usize;
        loop {
            let hops = tier::vip_next_hops(lab)?;
            if hops.len() == want {
                log(&format!(
                    "routing: the router sends {} to {} front-ends by ECMP ({})",
                    super::VIP,
                    hops.len(),
                    hops.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the router routes {} to {} of {want} front-ends after {} s: see {}/*/bird.log and {}/*/frontend.log",
                    super::VIP,
                    hops.len(),
                    ROUTED_WITHIN.as_secs(),
                    lab.state_dir().display(),
                    lab.state_dir().display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Writes 16 random bytes as 32 hex digits, readable by root only, as a real host keeps
/// it (docs/operations.md, "Several front-ends").
pub(crate) fn write_shared_secret(path: &Path) -> anyhow::Result<()> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let mut secret = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading /dev/urandom for the front-ends' secret")?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    fs::create_dir_all(path.parent().expect("in the lab's folder"))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes())?;
    Ok(())
}

/// Starts `baton KIND --config NODE/KIND.toml` in `node`, in a session of its own (so it
/// outlives `lab up` and ignores the terminal's signals), its standard error in
/// `NODE/KIND.log`.
fn spawn(
    lab: &Lab,
    node: Node,
    kind: &str,
    config: &str,
    ready: &'static str,
) -> anyhow::Result<Started> {
    let dir = lab.state_dir().join(node.to_string());
    fs::create_dir_all(&dir)?;
    let config_path = dir.join(format!("{kind}.toml"));
    fs::write(&config_path, config)?;
    let log = dir.join(format!("{kind}.log"));
    let err = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the baton binary")?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.namespace(node)])
        .arg(exe)
        .args([kind, "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    super::detach(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting baton {kind} on {node}"))?;
    Ok(Started {
        node,
        child,
        log,
        ready,
    })
}

fn wait_ready(daemon: &mut Started, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let text = fs::read_to_string(&daemon.log).unwrap_or_default();
        if text.contains(daemon.ready) {
            return Ok(());
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!(
                "the daemon on {} exited ({status}) before it was ready: {}",
                daemon.node,
                tail(&daemon.log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon on {} was not ready within {} s: {}",
                daemon.node,
                READY_WITHIN.as_secs(),
                tail(&daemon.log)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log, for an error.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{} (last lines: {})",
        path.display(),
        lines[lines.len().saturating_sub(5)..].join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::ServerKind;

    fn state(frontends: u8) -> LabState {
        LabState {
            name: "t1".into(),
            backends: 3,
            frontends,
            server: ServerKind::Nginx,
            cluster: true,
            ipv6: false,
        }
    }

    #[test]
    fn the_configurations_are_the_examples_made_for_the_node() {
        let lab = Lab::named("t1").unwrap();
        let one = state(1);
        let fe = frontend_config(&lab, &one, Node::Fe);
        assert!(fe.contains("pin_dir = \"/run/t1-lab/fe/bpf\""));
        assert!(fe.contains("metrics = \"127.0.0.1:9180\""));
        let parsed = crate::frontend::config::parse(&fe, Path::new(".")).unwrap();
        assert_eq!(parsed.announce, None, "one front-end announces nothing");
        let be = backend_config(&lab, &one, 2);
        assert!(be.contains("pin_dir = \"/run/t1-lab/be2/bpf\""));
        assert!(be.contains("frontend_mac = \"02:ba:70:12:01:02\""));

        let tier = state(2);
        let fe2 = frontend_config(&lab, &tier, Node::Frontend(2));
        assert!(fe2.contains("pin_dir = \"/run/t1-lab/fe2/bpf\""));
        assert!(fe2.contains("[announce]\ninterface = \"baton-vip\""));
        assert!(fe2.contains("secret_file = \"/run/t1-lab/frontend-secret.key\""));
        assert!(
            !fe.contains("\nsecret_file = "),
            "one front-end keeps a secret of its own"
        );
        let be = backend_config(&lab, &tier, 1);
        assert!(be.contains("frontend_mac = \"03:ba:70:12:01:00\""));
        // Both parse as their daemons would read them (the secret inline: `start`
        // writes its file, which a unit test does not).
        let inline = fe2.replace(
            "secret_file = \"/run/t1-lab/frontend-secret.key\"",
            "secret = \"000102030405060708090a0b0c0d0e0f\"",
        );
        let parsed = crate::frontend::config::parse(&inline, Path::new(".")).unwrap();
        assert_eq!(parsed.announce.unwrap().interface, "baton-vip");
        crate::backend::AgentConfig::parse(&be).unwrap();
    }

    #[test]
    fn with_ipv6_the_front_end_serves_vip6_and_every_pool_has_the_twins() {
        let lab = Lab::named("t1").unwrap();
        let mut v6 = state(1);
        v6.ipv6 = true;
        let fe = frontend_config(&lab, &v6, Node::Fe);
        assert!(fe.contains("\nvip6 = \"2001:2:0:2::1\""), "{fe}");
        assert!(fe.contains(
            "{ address = \"198.18.1.11:80\", id = \"be1\" }, \
             { address = \"[2001:2:0:1::b]:80\", id = \"be1-v6\" },"
        ));
        assert!(
            fe.contains("[{ address = \"198.18.1.12:80\" }, { address = \"[2001:2:0:1::c]:80\" }]")
        );
        let parsed = crate::frontend::config::parse(&fe, Path::new(".")).unwrap();
        assert_eq!(
            parsed.services6,
            ["[2001:2:0:2::1]:80"
                .parse::<std::net::SocketAddrV6>()
                .unwrap()]
        );
        let backends: Vec<_> = parsed.dispatcher.backends().collect();
        assert_eq!(backends.len(), 6, "{backends:?}");
        for k in 11..=13u8 {
            let v6 = std::net::SocketAddr::from((super::super::v6_for([198, 18, 1, k].into()), 80));
            assert!(backends.contains(&v6), "{v6} in {backends:?}");
        }
        let be = backend_config(&lab, &v6, 2);
        assert!(
            be.contains("vip = \"198.18.2.1:80\"\nvip6 = \"2001:2:0:2::1\"\n"),
            "{be}"
        );
        let agent = crate::backend::AgentConfig::parse(&be).unwrap();
        assert_eq!(agent.vip6, Some("2001:2:0:2::1".parse().unwrap()));
        // Without `--ipv6`, the examples as they are.
        let fe4 = frontend_config(&lab, &state(1), Node::Fe);
        assert!(!fe4.contains("\nvip6") && !fe4.contains("{ address = \"["));
        assert!(!backend_config(&lab, &state(1), 2).contains("\nvip6"));
    }
}
