//! Where the fast path's maps and link are pinned, and the checks made on pins a
//! previous daemon (possibly another version) left.

use std::{fs, path::Path};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData, MapInfo};
use baton_common::frontend::{FrontendConfig, FrontendFlow, FrontendFlowKey, stat};

use crate::pins::Pins;

use super::log;

/// Where the pins go when the configuration names no `pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/baton";

/// Entries in the pinned flow table of `interface` under `pin_dir` (for tests and
/// operators: the table outlives the daemon).
pub fn pinned_flow_count(pin_dir: &Path, interface: &str) -> anyhow::Result<usize> {
    let path = Pins::frontend(pin_dir, interface).flows();
    let map = MapData::from_pin(&path)
        .with_context(|| format!("{} not found: no front-end pinned there", path.display()))?;
    let flows: HashMap<_, FrontendFlowKey, FrontendFlow> = HashMap::try_from(Map::HashMap(map))?;
    Ok(flows.keys().filter(Result::is_ok).count())
}

/// Refuses a pinned flow table this build cannot use (one a different version made
/// with another key or value layout), rather than loading a program that would read it
/// wrong or fail the verifier.
pub(super) fn check_pinned_flows(pins: &Pins) -> anyhow::Result<()> {
    let path = pins.flows();
    if !path.exists() {
        return Ok(());
    }
    let info = MapInfo::from_pin(&path)
        .with_context(|| format!("reading the pinned flow table {}", path.display()))?;
    let want = (
        size_of::<FrontendFlowKey>() as u32,
        size_of::<FrontendFlow>() as u32,
    );
    if (info.key_size(), info.value_size()) != want {
        bail!(
            "the pinned flow table {} has {}-byte keys and {}-byte values, this build needs {} and {}: \
             it was made by another version; `baton frontend --config FILE --detach` removes it (and its flows)",
            path.display(),
            info.key_size(),
            info.value_size(),
            want.0,
            want.1
        );
    }
    Ok(())
}

/// Unpins a configuration map of another shape (an older version's, which held one
/// service): every daemon rewrites its one entry at start, so nothing is lost, and the
/// running program keeps its own map until it is replaced.
pub(super) fn replace_reshaped_config(pins: &Pins) -> anyhow::Result<()> {
    let path = pins.config();
    if !path.exists() {
        return Ok(());
    }
    let info = MapInfo::from_pin(&path)
        .with_context(|| format!("reading the pinned configuration {}", path.display()))?;
    if info.value_size() != size_of::<FrontendConfig>() as u32 {
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Unpins a counter array made by an older version with fewer counters, so that the
/// loader makes one with room for all of this build's (a program still running keeps its
/// own array; only its counts since the last start are lost).
pub(super) fn replace_outgrown_stats(pins: &Pins) -> anyhow::Result<()> {
    let path = pins.stats();
    if !path.exists() {
        return Ok(());
    }
    let info = MapInfo::from_pin(&path)
        .with_context(|| format!("reading the pinned counters {}", path.display()))?;
    if info.max_entries() != stat::COUNT {
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        log::line(
            "fastpath_counters_replaced",
            &[
                ("pin", &path.display()),
                ("counters", &info.max_entries()),
                ("now", &stat::COUNT),
            ],
        );
    }
    Ok(())
}
