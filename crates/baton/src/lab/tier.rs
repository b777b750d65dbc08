//! The lab's front-end tier: BIRD 2 on the router and on each front-end, BGP between
//! them with BFD, and the VIP installed on the router as one multipath (ECMP) route over
//! the front-ends that announce it.
//!
//! Each front-end's BIRD exports only what its `direct` protocol finds on
//! [`ANNOUNCE_INTERFACE`]: the VIP appears there while `baton frontend` (with
//! `[announce]`) can serve, on a TUN device that lives exactly as long as the daemon's
//! descriptor (crates/baton/src/frontend/announce.rs). The router's BIRD merges the
//! equal routes into one kernel route (`merge paths`), which the kernel spreads by the
//! 4-tuple (`fib_multipath_hash_policy=1`, set with the router's other sysctls).
//!
//! Why BIRD: one small daemon, one configuration language for both ends, BFD built in,
//! ECMP into the kernel with one switch, a control socket per instance (so several run
//! side by side in namespaces with no shared state), and packaged by Debian (`bird2`).
//! FRR would do too but brings a suite of daemons (zebra, bgpd, bfdd, staticd) per
//! namespace; ExaBGP and GoBGP do not write the kernel's routes themselves, so the router
//! would need a second program. BIRD 2 writes multipath routes as `RTA_MULTIPATH`, not
//! as kernel next-hop objects, so resilient next-hop groups are out of reach with it
//! (docs/design.md, "The front-end tier", says what that costs).

use std::{
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{Lab, LabState, Node, ROUTER_LAN_ADDR, VIP};

/// The addresses a front-end may announce: host routes in the VIPs' /24 (the lab's
/// [`VIP`] and `VIP2`), nothing else, whatever a front-end's BIRD sends.
const VIP_RANGE: &str = "198.18.2.0/24";

/// The TUN device a front-end daemon with `[announce]` holds while it can serve, with
/// the VIP on it; the front-end's BIRD announces what is on it.
pub const ANNOUNCE_INTERFACE: &str = "baton-vip";
/// The router's autonomous system (private range, RFC 6996).
pub const ROUTER_AS: u32 = 65000;
/// The front-ends' autonomous system, one for the whole tier.
pub const FRONTEND_AS: u32 = 65001;
/// Where the back-ends of a tier send what their module sends the front-end (SYN/ACK's
/// and control copies): a multicast MAC, so every front-end receives it and the one
/// whose connection it is takes it; the others count it as a stray back-end segment and
/// answer nothing. The router and the back-ends drop it too: a frame to a multicast MAC
/// is never forwarded by IP (`ip_forward` takes only `PACKET_HOST`).
pub const FRONTEND_GROUP_MAC: &str = "03:ba:70:12:01:00";
/// BFD's interval (both ways) and detection multiplier: a front-end that stops answering
/// is declared down after 5 x 200 ms, about a second. Shorter would be possible (BIRD
/// takes 10 ms), but the lab shares two cores with load generators and other labs, and a
/// BFD packet late by a scheduler's hiccup must not take a live front-end out.
const BFD_INTERVAL_MS: u32 = 200;
const BFD_MULTIPLIER: u32 = 5;

/// The files of a node's BIRD instance, in the node's folder of the lab.
pub struct Bird {
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pid: PathBuf,
}

impl Bird {
    pub fn of(lab: &Lab, node: Node) -> Self {
        let dir = lab.state_dir().join(node.to_string());
        Self {
            config: dir.join("bird.conf"),
            socket: dir.join("bird.ctl"),
            log: dir.join("bird.log"),
            pid: dir.join("bird.pid"),
        }
    }
}

/// Writes the router's and every front-end's BIRD configuration and starts them; the
/// sessions come up on their own within seconds. `lab down` stops them with every
/// other process of the lab's namespaces.
pub fn start_bird(lab: &Lab, state: &LabState) -> anyhow::Result<()> {
    let frontends: Vec<(Node, Ipv4Addr)> = state
        .frontend_nodes()
        .into_iter()
        .map(|n| (n, n.addr().expect("a front-end has an address")))
        .collect();
    let mut instances = vec![(
        Node::Router,
        router_config(&Bird::of(lab, Node::Router).log, &frontends),
    )];
    for &(node, addr) in &frontends {
        instances.push((node, frontend_config(&Bird::of(lab, node).log, addr)));
    }
    for (node, config) in instances {
        let bird = Bird::of(lab, node);
        fs::create_dir_all(bird.config.parent().expect("in the node's folder"))?;
        fs::write(&bird.config, config)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.namespace(node), "bird", "-c"])
            .arg(&bird.config)
            .arg("-s")
            .arg(&bird.socket)
            .arg("-P")
            .arg(&bird.pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // BIRD forks into the background: nothing of this process must go with it.
        super::detach(&mut cmd);
        let status = cmd
            .output()
            .context("running bird (scripts/setup installs bird2)")?;
        if !status.status.success() {
            bail!(
                "bird on {node} did not start ({}): {}",
                status.status,
                String::from_utf8_lossy(&status.stderr).trim()
            );
        }
    }
    Ok(())
}

/// The router: a BGP session to each front-end with BFD, routes learnt from them into
/// the kernel, equal ones merged into one multipath route.
fn router_config(log: &std::path::Path, frontends: &[(Node, Ipv4Addr)]) -> String {
    let mut c = format!(
        "# Written by `baton lab up --frontends {n}`; removed by `baton lab down`.\n\
         router id {ROUTER_LAN_ADDR};\n\
         log \"{log}\" all;\n\
         protocol device {{ scan time 10; }}\n\
         # What the front-ends announce goes into the kernel; equal routes from several\n\
         # front-ends become one ECMP route.\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
         {bfd}\
         # The shortest hold time BGP allows (3 s) as a fallback; BFD notices a dead peer\n\
         # first. Retries every second, so a front-end that comes back is peered at once.\n\
         template bgp frontend {{\n  local {ROUTER_LAN_ADDR} as {ROUTER_AS};\n  bfd on;\n  \
         hold time 3;\n  keepalive time 1;\n  connect retry time 1;\n  error wait time 1, 2;\n  \
         ipv4 {{ import where net ~ [ {VIP_RANGE}{{32,32}} ]; export none; }};\n}}\n",
        n = frontends.len(),
        log = log.display(),
        bfd = bfd_block("eth1"),
    );
    for (node, addr) in frontends {
        c.push_str(&format!(
            "protocol bgp {node} from frontend {{ neighbor {addr} as {FRONTEND_AS}; }}\n"
        ));
    }
    c
}

/// A front-end: one session to the router, exporting only the `vip` protocol's routes,
/// that is the addresses on [`ANNOUNCE_INTERFACE`] while it exists.
fn frontend_config(log: &std::path::Path, addr: Ipv4Addr) -> String {
    format!(
        "# Written by `baton lab up`; removed by `baton lab down`.\n\
         router id {addr};\n\
         log \"{log}\" all;\n\
         protocol device {{ scan time 10; }}\n\
         # The VIP while `baton frontend` can serve: it puts it on this device, which goes\n\
         # when the daemon withdraws it or dies (crates/baton/src/frontend/announce.rs).\n\
         protocol direct vip {{ ipv4; interface \"{ANNOUNCE_INTERFACE}\"; }}\n\
         {bfd}\
         protocol bgp uplink {{\n  local {addr} as {FRONTEND_AS};\n  \
         neighbor {ROUTER_LAN_ADDR} as {ROUTER_AS};\n  bfd on;\n  hold time 3;\n  \
         keepalive time 1;\n  connect retry time 1;\n  error wait time 1, 2;\n  \
         ipv4 {{ import none; export where proto = \"vip\"; }};\n}}\n",
        log = log.display(),
        bfd = bfd_block("eth0"),
    )
}

fn bfd_block(interface: &str) -> String {
    format!(
        "protocol bfd {{\n  interface \"{interface}\" {{\n    min rx interval {BFD_INTERVAL_MS} ms;\n    \
         min tx interval {BFD_INTERVAL_MS} ms;\n    multiplier {BFD_MULTIPLIER};\n  }};\n}}\n"
    )
}

/// The next hops the router's kernel has for the VIP now: the front-ends it spreads new
/// connections over.
pub fn vip_next_hops(lab: &Lab) -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = Command::new("ip")
        .args(["-j", "-n", &lab.namespace(Node::Router), "route", "show"])
        .arg(format!("{VIP}/32"))
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip route show on the router: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(next_hops(&String::from_utf8_lossy(&out.stdout)))
}

/// The gateways of `ip -j route show`'s output: each route's own, or its `nexthops`'.
fn next_hops(json: &str) -> Vec<Ipv4Addr> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    let gateway = |v: &serde_json::Value| v.get("gateway")?.as_str()?.parse().ok();
    routes
        .iter()
        .flat_map(
            |route| match route.get("nexthops").and_then(|n| n.as_array()) {
                Some(hops) => hops.iter().filter_map(gateway).collect(),
                None => gateway(route).into_iter().collect::<Vec<_>>(),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_read_single_and_multipath_routes() {
        let multipath = r#"[{"dst":"198.18.2.1","protocol":"bird","metric":32,"flags":[],
            "nexthops":[{"gateway":"198.18.1.2","dev":"eth1","weight":1,"flags":[]},
                        {"gateway":"198.18.1.3","dev":"eth1","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            next_hops(multipath),
            [Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 1, 3)]
        );
        let single = r#"[{"dst":"198.18.2.1","gateway":"198.18.1.3","dev":"eth1","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(next_hops(single), [Ipv4Addr::new(198, 18, 1, 3)]);
        assert!(next_hops("[]").is_empty());
    }

    #[test]
    fn the_router_peers_with_every_frontend_and_merges_their_routes() {
        let fes = [
            (Node::Frontend(1), Ipv4Addr::new(198, 18, 1, 2)),
            (Node::Frontend(2), Ipv4Addr::new(198, 18, 1, 3)),
        ];
        let c = router_config(std::path::Path::new("/x/bird.log"), &fes);
        assert!(c.contains("merge paths on;"));
        assert!(c.contains("protocol bgp fe1 from frontend { neighbor 198.18.1.2 as 65001; }"));
        assert!(c.contains("protocol bgp fe2 from frontend { neighbor 198.18.1.3 as 65001; }"));
        let f = frontend_config(std::path::Path::new("/x/bird.log"), fes[1].1);
        assert!(f.contains("interface \"baton-vip\""));
        assert!(f.contains("export where proto = \"vip\""));
    }
}
