//! Builds the eBPF crate with the nightly toolchain for `bpfel-unknown-none` and leaves the
//! object in `OUT_DIR`, where `src/ebpf.rs` embeds it: one self-contained `baton` binary.

use std::process::Command;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    // Fail with the fix, not with a linker error three screens down.
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !linker_ok {
        bail!(
            "bpf-linker is missing or broken; it must be built against the nightly toolchain's \
             LLVM. Run `scripts/setup` from the repository root (docs/design.md, \"Toolchain\")."
        );
    }
    // aya-build watches the eBPF crate's folder; the shared layouts and arithmetic it
    // compiles in live in baton-common.
    println!("cargo:rerun-if-changed=../baton-common/src");
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../baton-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "baton-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (crates/baton-ebpf) with the nightly toolchain")
}
