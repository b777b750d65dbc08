//! Where the fast path's maps and link are pinned, and the checks made on pins a
//! previous daemon (possibly another version) left.

use std::path::Path;

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use baton_common::{
    frontend::{
        FrontendConfig, FrontendFlow, FrontendFlowKey, FrontendFlowKeyV6, FrontendFlowV6, stat,
    },
    kernel_dispatch::reason,
};

use crate::pins::Pins;

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

/// Entries in the pinned IPv6 flow table (`flows_v6`) of `interface` under `pin_dir`, as
/// [`pinned_flow_count`] for IPv4's.
pub fn pinned_flow_count_v6(pin_dir: &Path, interface: &str) -> anyhow::Result<usize> {
    let path = super::v6::flows_pin(&Pins::frontend(pin_dir, interface));
    let map = MapData::from_pin(&path)
        .with_context(|| format!("{} not found: no front-end pinned there", path.display()))?;
    let flows: HashMap<_, FrontendFlowKeyV6, FrontendFlowV6> =
        HashMap::try_from(Map::HashMap(map))?;
    Ok(flows.keys().filter(Result::is_ok).count())
}

/// Removes every flow from the pinned table, as a front-end that never saw them would
/// be (tests of forwarding by the stamp, docs/design.md, "Stateless forwarding by the
/// stamp"); how many there were.
pub fn forget_pinned_flows(pin_dir: &Path, interface: &str) -> anyhow::Result<usize> {
    let path = Pins::frontend(pin_dir, interface).flows();
    let map = MapData::from_pin(&path)
        .with_context(|| format!("{} not found: no front-end pinned there", path.display()))?;
    let mut flows: HashMap<_, FrontendFlowKey, FrontendFlow> =
        HashMap::try_from(Map::HashMap(map))?;
    let keys: Vec<FrontendFlowKey> = flows.keys().filter_map(Result::ok).collect();
    for key in &keys {
        flows.remove(key)?;
    }
    Ok(keys.len())
}

/// Checks the pins a previous daemon left: a flow table of another layout is refused
/// (its flows cannot be carried over); a configuration or counter map of another shape is
/// replaced (the one is rewritten at every start, the other only counts).
pub(super) fn check_pinned_maps(pins: &Pins) -> anyhow::Result<()> {
    crate::pins::require_shape(
        &pins.flows(),
        size_of::<FrontendFlowKey>(),
        size_of::<FrontendFlow>(),
        "baton frontend --config FILE --detach",
    )?;
    crate::pins::require_shape(
        &super::v6::flows_pin(pins),
        size_of::<FrontendFlowKeyV6>(),
        size_of::<FrontendFlowV6>(),
        "baton frontend --config FILE --detach",
    )?;
    crate::pins::replace_reshaped(&pins.config(), size_of::<FrontendConfig>(), 1)?;
    crate::pins::replace_reshaped(&pins.stats(), size_of::<u64>(), stat::COUNT)?;
    crate::pins::replace_reshaped(&pins.slow_path_reasons(), size_of::<u64>(), reason::COUNT)
}
