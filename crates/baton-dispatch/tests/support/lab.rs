//! The lab's example front-end configuration's `[dispatch]` table, as a dispatch file of
//! its own: the configuration both engines of the kernel-dispatch tests are given (this
//! crate's host test, and `crates/baton/tests/kernel_dispatch.rs`, which includes this
//! file).

/// The lab's front-end configuration.
pub const LAB: &str = include_str!("../../../../examples/frontend-lab.toml");

/// The lab's `[dispatch]` table as a file of its own.
pub fn lab_dispatch() -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in LAB.lines() {
        if line.starts_with('[') {
            inside = line.starts_with("[dispatch") || line.starts_with("[[dispatch");
            if inside {
                out.push_str(
                    &line
                        .replacen("dispatch.", "", 1)
                        .replacen("[dispatch]", "", 1),
                );
                out.push('\n');
            }
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
