//! `baton backend --config FILE`: the TOML file, checked. Unknown keys are rejected and
//! every error names its field.

use std::{
    net::{Ipv6Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use baton_common::{
    backend::{BackendConfig, BackendConfigV6, DEFAULT_FLOW_TABLE_SIZE},
    siphash::SipKey,
};
use serde::Deserialize;

/// Where the agent pins its maps and links by default: one folder per interface below.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/baton/backend";

/// The file as written; see `examples/backend-lab.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interface: String,
    vip: SocketAddrV4,
    vip6: Option<Ipv6Addr>,
    service_port: Option<u16>,
    frontend_mac: String,
    handoff_key: Option<String>,
    handoff_key_file: Option<PathBuf>,
    previous_handoff_key: Option<String>,
    previous_handoff_key_file: Option<PathBuf>,
    flow_table_size: Option<u32>,
    pin_dir: Option<PathBuf>,
    gc_interval_ms: Option<u64>,
    metrics: Option<std::net::SocketAddr>,
    stamp_timestamps: Option<bool>,
    complete_handshake: Option<bool>,
}

/// A checked back-end agent configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The LAN interface handed-off connections arrive on and answers leave by.
    pub interface: String,
    /// The virtual service the back-end answers as.
    pub vip: SocketAddrV4,
    /// The VIP's IPv6 address, if the service is offered over IPv6 too (the same port):
    /// the IPv6 path of the programs is off without it.
    pub vip6: Option<Ipv6Addr>,
    /// The local port the server listens on; the VIP's port unless set.
    pub service_port: u16,
    /// The front-end's MAC on the LAN, where SYN/ACK's and control copies go.
    pub frontend_mac: [u8; 6],
    pub handoff_key: [u8; 16],
    /// During a key rotation, the key being retired, still accepted (see
    /// `docs/operations.md`, "Rotating the handoff key").
    pub previous_handoff_key: Option<[u8; 16]>,
    pub flow_table_size: u32,
    pub pin_dir: PathBuf,
    /// How often entries whose socket is gone are looked for; an entry goes at the second
    /// sweep that finds no socket, so a connection being set up is never taken for dead.
    pub gc_interval: Duration,
    /// Where to serve metrics (`http://ADDRESS/metrics`), if anywhere. Off by default.
    pub metrics: Option<std::net::SocketAddr>,
    /// Stamp this back-end's identity in the TSvals sent to clients
    /// (`baton_common::stamp`), so that any front-end forwards its flows without an
    /// entry for them; on by default.
    pub stamp_timestamps: bool,
    /// Complete the server's handshake of a one-turn handoff here rather than wait for
    /// the front-end's ACK' (`baton_common::backend::BackendFlow::completes_handshake`);
    /// on by default.
    pub complete_handshake: bool,
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: FileConfig = toml::from_str(text)?;
        if file.interface.is_empty() || file.interface.len() > 15 {
            bail!("`interface`: an interface name of 1 to 15 characters");
        }
        let flow_table_size = file.flow_table_size.unwrap_or(DEFAULT_FLOW_TABLE_SIZE);
        if !(1024..=1 << 26).contains(&flow_table_size) {
            bail!("`flow_table_size`: between 1024 and 67108864 entries, not {flow_table_size}");
        }
        let gc_interval = Duration::from_millis(file.gc_interval_ms.unwrap_or(10_000));
        if gc_interval < Duration::from_millis(100) {
            bail!("`gc_interval_ms`: at least 100");
        }
        Ok(Self {
            interface: file.interface,
            vip: file.vip,
            vip6: file.vip6,
            service_port: file.service_port.unwrap_or(file.vip.port()),
            frontend_mac: parse_mac(&file.frontend_mac).context("`frontend_mac`")?,
            handoff_key: crate::handoff_key::load(
                file.handoff_key.as_deref(),
                file.handoff_key_file.as_deref(),
                "handoff_key",
            )?,
            previous_handoff_key: match (
                file.previous_handoff_key.as_deref(),
                file.previous_handoff_key_file.as_deref(),
            ) {
                (None, None) => None,
                (hex, path) => Some(crate::handoff_key::load(hex, path, "previous_handoff_key")?),
            },
            flow_table_size,
            pin_dir: file.pin_dir.unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
            gc_interval,
            metrics: file.metrics,
            stamp_timestamps: file.stamp_timestamps.unwrap_or(true),
            complete_handshake: file.complete_handshake.unwrap_or(true),
        })
    }

    /// The value of the programs' configuration map.
    pub fn map_value(&self) -> BackendConfig {
        let mut flags = BackendConfig::ENABLED;
        if self.previous_handoff_key.is_some() {
            flags |= BackendConfig::PREVIOUS_KEY;
        }
        if self.stamp_timestamps {
            flags |= BackendConfig::STAMPS;
        }
        if self.complete_handshake {
            flags |= BackendConfig::COMPLETE_HANDSHAKE;
        }
        BackendConfig {
            handoff_key: SipKey::from_bytes(self.handoff_key),
            previous_handoff_key: SipKey::from_bytes(self.previous_handoff_key.unwrap_or([0; 16])),
            vip_addr_be: u32::from_ne_bytes(self.vip.ip().octets()),
            vip_port_be: u16::from_ne_bytes(self.vip.port().to_be_bytes()),
            service_port_be: u16::from_ne_bytes(self.service_port.to_be_bytes()),
            frontend_mac: self.frontend_mac,
            _pad: [0; 2],
            flags,
            _pad2: 0,
        }
    }
}

impl AgentConfig {
    /// The value of the programs' IPv6 configuration map: the VIP's IPv6 address, or the
    /// IPv6 path off.
    pub fn map_value_v6(&self) -> BackendConfigV6 {
        BackendConfigV6 {
            vip_addr: self.vip6.map_or([0; 16], |a| a.octets()),
            flags: if self.vip6.is_some() {
                BackendConfigV6::ENABLED
            } else {
                0
            },
            _pad: 0,
        }
    }
}

pub fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().unwrap_or("");
        if part.len() != 2 {
            bail!("expected a MAC such as 02:ba:70:12:01:02, got `{text}`");
        }
        *byte = u8::from_str_radix(part, 16)
            .with_context(|| format!("expected a MAC such as 02:ba:70:12:01:02, got `{text}`"))?;
    }
    if parts.next().is_some() {
        bail!("expected a MAC such as 02:ba:70:12:01:02, got `{text}`");
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        interface = "eth0"
        vip = "198.18.2.1:80"
        frontend_mac = "02:ba:70:12:01:02"
        handoff_key = "000102030405060708090a0b0c0d0e0f"
    "#;

    #[test]
    fn a_previous_key_is_optional_and_sets_its_flag() {
        let c = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(c.previous_handoff_key, None);
        assert_eq!(
            c.map_value().flags,
            BackendConfig::ENABLED | BackendConfig::STAMPS | BackendConfig::COMPLETE_HANDSHAKE,
            "stamps and the handshake completed here by default"
        );
        let off = AgentConfig::parse(&format!(
            "{GOOD}\nstamp_timestamps = false\ncomplete_handshake = false\n"
        ))
        .unwrap();
        assert_eq!(off.map_value().flags, BackendConfig::ENABLED);
        let text = format!("{GOOD}\nprevious_handoff_key = \"ffeeddccbbaa99887766554433221100\"\n");
        let c = AgentConfig::parse(&text).unwrap();
        let v = c.map_value();
        assert_eq!(
            v.flags,
            BackendConfig::ENABLED
                | BackendConfig::PREVIOUS_KEY
                | BackendConfig::STAMPS
                | BackendConfig::COMPLETE_HANDSHAKE
        );
        assert_eq!(
            v.previous_handoff_key,
            SipKey::from_bytes(c.previous_handoff_key.unwrap())
        );
        let bad = format!("{GOOD}\nprevious_handoff_key = \"ffee\"\n");
        let e = format!("{:#}", AgentConfig::parse(&bad).unwrap_err());
        assert!(e.contains("previous_handoff_key"), "{e}");
    }

    #[test]
    fn parses_with_defaults() {
        let c = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(c.service_port, 80);
        assert_eq!(c.flow_table_size, DEFAULT_FLOW_TABLE_SIZE);
        assert_eq!(c.frontend_mac, [2, 0xba, 0x70, 0x12, 1, 2]);
        let v = c.map_value();
        assert_eq!(v.vip_addr_be.to_ne_bytes(), [198, 18, 2, 1]);
        assert_eq!(v.service_port_be.to_ne_bytes(), [0, 80]);
        assert_eq!(c.vip6, None);
        assert_eq!(c.map_value_v6(), BackendConfigV6::default(), "IPv6 off");
        let c = AgentConfig::parse(&format!("{GOOD}\nvip6 = \"2001:2:0:2::1\"\n")).unwrap();
        let v6 = c.map_value_v6();
        assert_eq!(v6.flags, BackendConfigV6::ENABLED);
        assert_eq!(
            v6.vip_addr,
            "2001:2:0:2::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        let bad = format!("{GOOD}\nvip6 = \"198.18.2.1\"\n");
        let e = format!("{:#}", AgentConfig::parse(&bad).unwrap_err());
        assert!(e.contains("vip6"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("02:ba:70:12:01:02", "02:ba:70"),
                "frontend_mac",
            ),
            (GOOD.replace("0e0f", "0e"), "handoff_key"),
            (format!("{GOOD}\nflow_table_size = 5"), "flow_table_size"),
            (format!("{GOOD}\nbogus = 1"), "bogus"),
            (GOOD.replace("198.18.2.1:80", "198.18.2.1"), "vip"),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", AgentConfig::parse(&text).unwrap_err());
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
