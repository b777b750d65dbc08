//! Property tests of consistent hashing through the public API: keys spread evenly (in
//! proportion to weight), and a back-end that leaves or joins moves only its own keys.

use std::{collections::HashMap, fmt::Write as _, net::SocketAddrV4};

use baton_dispatch::{Decision, Dispatcher, RequestView};
use baton_proto::frontend::{Backend, Instant};
use proptest::prelude::*;

fn be(k: usize) -> Backend {
    SocketAddrV4::new([198, 18, 1, 10 + k as u8].into(), 80).into()
}

/// A dispatcher whose default pool hashes the path over `weights.len()` back-ends.
fn hashed_pool(weights: &[u32], skip: Option<usize>) -> Dispatcher {
    let mut text = String::from(
        "default_pool = \"p\"\n[pools.p]\npolicy = \"consistent_hash\"\nhash_key = \"path\"\nbackends = [\n",
    );
    for (i, w) in weights.iter().enumerate() {
        if Some(i) != skip {
            writeln!(text, "  {{ address = \"{}\", weight = {w} }},", be(i + 1)).unwrap();
        }
    }
    text.push_str("]\n");
    Dispatcher::from_toml(&text).unwrap()
}

fn owner(d: &mut Dispatcher, key: &str) -> Backend {
    let view = RequestView {
        path: Some(key),
        ..RequestView::default()
    };
    match d.decide(Instant::ZERO, &view, &[]) {
        Decision::Backend(b) => b,
        Decision::Unavailable { .. } => panic!("no back-end for {key}"),
    }
}

fn keys(seed: u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("/objects/{seed:x}/{i}.bin"))
        .collect()
}

fn shares(d: &mut Dispatcher, keys: &[String]) -> HashMap<Backend, usize> {
    let mut counts = HashMap::new();
    for k in keys {
        *counts.entry(owner(d, k)).or_insert(0) += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Each of N equal back-ends gets within ±10% of 1/N of the keys (4,000 keys per
    /// back-end: the binomial spread is about 1.6%, so 10% is six standard deviations).
    #[test]
    fn equal_weights_spread_evenly(n in 2usize..=12, seed in any::<u64>()) {
        let mut d = hashed_pool(&vec![1; n], None);
        let keys = keys(seed, 4_000 * n);
        let counts = shares(&mut d, &keys);
        let fair = keys.len() as f64 / n as f64;
        prop_assert_eq!(counts.len(), n);
        for (b, c) in counts {
            let off = (c as f64 - fair).abs() / fair;
            prop_assert!(off < 0.10, "{b}: {c} keys, fair share {fair:.0} ({:.1}% off)", off * 100.0);
        }
    }

    /// With weights, each back-end's share is within ±10% of weight / total.
    #[test]
    fn weighted_shares_follow_weights(weights in prop::collection::vec(1u32..=4, 2..=6), seed in any::<u64>()) {
        let mut d = hashed_pool(&weights, None);
        let total: u32 = weights.iter().sum();
        let keys = keys(seed, 4_000 * total as usize);
        let counts = shares(&mut d, &keys);
        for (i, &w) in weights.iter().enumerate() {
            let fair = keys.len() as f64 * f64::from(w) / f64::from(total);
            let c = counts.get(&be(i + 1)).copied().unwrap_or(0);
            let off = (c as f64 - fair).abs() / fair;
            prop_assert!(off < 0.10, "weight {w}: {c} keys, fair share {fair:.0} ({:.1}% off)", off * 100.0);
        }
    }

    /// Removing one of N back-ends (marking it down, or leaving it out of the
    /// configuration) remaps only the keys it had, about 1/N of all, and they come back
    /// when it returns.
    #[test]
    fn removal_moves_only_the_removed_back_ends_keys(
        weights in prop::collection::vec(1u32..=3, 2..=10),
        removed in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let n = weights.len();
        let removed = removed.index(n);
        let keys = keys(seed, 20_000);
        let mut d = hashed_pool(&weights, None);
        let before: Vec<_> = keys.iter().map(|k| owner(&mut d, k)).collect();

        d.set_health(be(removed + 1), false);
        let down: Vec<_> = keys.iter().map(|k| owner(&mut d, k)).collect();
        let mut reconfigured = hashed_pool(&weights, Some(removed));
        let mut moved = 0;
        for (i, k) in keys.iter().enumerate() {
            if before[i] == be(removed + 1) {
                moved += 1;
                prop_assert_ne!(down[i], be(removed + 1));
            } else {
                prop_assert_eq!(down[i], before[i], "{} moved though its back-end stayed", k);
            }
            prop_assert_eq!(owner(&mut reconfigured, k), down[i]);
        }
        let total: u32 = weights.iter().sum();
        let expected = keys.len() as f64 * f64::from(weights[removed]) / f64::from(total);
        let off = (f64::from(moved) - expected).abs() / expected;
        prop_assert!(off < 0.15, "moved {moved}, expected about {expected:.0}");

        d.set_health(be(removed + 1), true);
        let after: Vec<_> = keys.iter().map(|k| owner(&mut d, k)).collect();
        prop_assert_eq!(after, before);
    }
}
