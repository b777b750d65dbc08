//! The back-end agent's metrics (`metrics = "ADDRESS"` in its configuration): the
//! module's per-CPU counters, summed, and the flow table's occupancy, read from the
//! pinned maps at each scrape by the metrics thread itself. The agent's loop is not
//! involved: the maps are the truth and the kernel updates them, so there is nothing to
//! snapshot, and a scrape keeps working through an upgrade that replaces the programs
//! (the pins stay). Names are documented in `docs/metrics.md`.

use baton_common::backend::stat;

use super::{AgentConfig, BackendModule};
use crate::metrics::{Exposition, Kind};

/// Starts the metrics server if the configuration asks for one.
pub fn start(config: &AgentConfig) -> anyhow::Result<()> {
    let Some(addr) = config.metrics else {
        return Ok(());
    };
    let cfg = config.clone();
    let bound = crate::metrics::serve(addr, "baton-metrics", move || {
        let module = BackendModule::open(&cfg).map_err(|e| format!("{e:#}"))?;
        let counters = module.stats().map_err(|e| format!("{e:#}"))?;
        Ok(render(&cfg, &counters, module.flow_count()))
    })?;
    crate::log::line("metrics", &[("url", &format!("http://{bound}/metrics"))]);
    Ok(())
}

/// The page.
pub fn render(config: &AgentConfig, counters: &[u64], flows: usize) -> String {
    let mut e = Exposition::new();
    let vip = config.vip.to_string();
    e.family(
        "baton_backend_info",
        Kind::Gauge,
        "The agent's interface and the service it answers as (always 1).",
    )
    .sample(
        "baton_backend_info",
        &[
            ("interface", &config.interface),
            ("vip", &vip),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1u64,
    );
    e.family(
        "baton_backend_packets_total",
        Kind::Counter,
        "Packets the back-end module handled, by outcome (pinned: they outlive agents and upgrades).",
    );
    for (name, n) in stat::NAMES.iter().zip(counters) {
        e.sample("baton_backend_packets_total", &[("outcome", name)], *n);
    }
    e.single(
        "baton_backend_flow_table_entries",
        Kind::Gauge,
        "Handed-off flows in the module's table.",
        flows,
    );
    e.single(
        "baton_backend_flow_table_capacity",
        Kind::Gauge,
        "Entries the flow table can hold (flow_table_size).",
        config.flow_table_size,
    );
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_counter() {
        let config = AgentConfig::parse(
            r#"
            interface = "eth0"
            vip = "198.18.2.1:80"
            frontend_mac = "02:ba:70:12:01:02"
            handoff_key = "0123456789abcdef0123456789abcdef"
            metrics = "127.0.0.1:9181"
        "#,
        )
        .unwrap();
        assert_eq!(config.metrics, Some("127.0.0.1:9181".parse().unwrap()));
        let counters: Vec<u64> = (0..stat::COUNT as u64).collect();
        let page = render(&config, &counters, 3);
        let samples = crate::metrics::parse(&page);
        let out = samples
            .iter()
            .find(|s| s.label("outcome") == "out_translated")
            .unwrap();
        assert_eq!(out.value, stat::OUT_TRANSLATED as f64);
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.name == "baton_backend_packets_total")
                .count(),
            stat::COUNT as usize
        );
        assert!(
            page.contains("baton_backend_flow_table_entries 3\n"),
            "{page}"
        );
        assert!(
            page.contains("baton_backend_flow_table_capacity 1048576\n"),
            "{page}"
        );
    }
}
