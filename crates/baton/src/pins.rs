//! Where the daemons pin their eBPF maps and links in a BPF filesystem, one folder per
//! attachment, so that programs and maps outlive the daemon that loaded them: the
//! front-end's fast path in `<pin_dir>/frontend-<interface>/`, a back-end agent's module
//! in `<pin_dir>/<interface>/`. One type for both, so the names of the pins are written
//! once.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aya::programs::TcAttachType;

/// The pins of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// The front-end's fast path on `interface`: `<pin_dir>/frontend-<interface>/`.
    pub fn frontend(pin_dir: &Path, interface: &str) -> Self {
        Self {
            dir: pin_dir.join(format!("frontend-{interface}")),
        }
    }

    /// A back-end agent's module on `interface`: `<pin_dir>/<interface>/`.
    pub fn backend(pin_dir: &Path, interface: &str) -> Self {
        Self {
            dir: pin_dir.join(interface),
        }
    }

    /// Removes the pinned `files` that exist, then the folder (a detach, once the links
    /// are unpinned): the maps go with their last reference.
    pub fn remove(&self, files: &[PathBuf]) -> anyhow::Result<()> {
        for path in files {
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        std::fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    /// The folder holding them.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The flow table.
    pub fn flows(&self) -> PathBuf {
        self.dir.join("flows")
    }

    /// The one-entry configuration map.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// The per-CPU counters.
    pub fn stats(&self) -> PathBuf {
        self.dir.join("stats")
    }

    /// The front-end's per-CPU counts of the requests its XDP program left to the slow
    /// path, by reason (`baton_common::kernel_dispatch::reason`).
    pub fn slow_path_reasons(&self) -> PathBuf {
        self.dir.join("slow_path_reasons")
    }

    /// A back-end's program array: the programs its ingress tail-calls.
    pub fn ingress_programs(&self) -> PathBuf {
        self.dir.join("ingress_programs")
    }

    /// The front-end's notices ring.
    pub fn notices(&self) -> PathBuf {
        self.dir.join("notices")
    }

    /// The front-end's local secret (ISNs, timestamps, SYN cookies) when the
    /// configuration sets none: kept for the next daemon, so that the cookies of
    /// handshakes XDP answered across a restart or an upgrade still verify.
    pub fn secret(&self) -> PathBuf {
        self.dir.join("secret")
    }

    /// The front-end's XDP link.
    pub fn xdp_link(&self) -> PathBuf {
        self.dir.join("link_xdp")
    }

    /// A back-end's tc link on `hook`.
    pub fn tc_link(&self, hook: TcAttachType) -> PathBuf {
        self.dir.join(match hook {
            TcAttachType::Ingress => "link_ingress",
            _ => "link_egress",
        })
    }
}

/// Unpins the map at `path` if a build of another shape made it (value size or entry
/// count, say a counter array with fewer counters), so that the loader makes one this
/// build's programs fit. Only for maps that hold nothing worth keeping (a configuration
/// every daemon rewrites, counters): a program still running keeps its own map until it
/// is replaced.
pub fn replace_reshaped(path: &Path, value_size: usize, entries: u32) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let info = aya::maps::MapInfo::from_pin(path)
        .with_context(|| format!("reading the pinned map {}", path.display()))?;
    if (info.value_size() as usize, info.max_entries()) != (value_size, entries) {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        crate::log::line(
            "map_replaced",
            &[
                ("pin", &path.display()),
                ("reason", &"made by another version"),
                ("value_size", &info.value_size()),
                ("entries", &info.max_entries()),
                ("now_value_size", &value_size),
                ("now_entries", &entries),
            ],
        );
    }
    Ok(())
}

/// Refuses a pinned map at `path` whose key or value size differs from this build's (a
/// flow table made by another version): its entries cannot be carried over, and a
/// program loaded against it would read them wrong. `detach` names the command that
/// removes it.
pub fn require_shape(
    path: &Path,
    key_size: usize,
    value_size: usize,
    detach: &str,
) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let info = aya::maps::MapInfo::from_pin(path)
        .with_context(|| format!("reading the pinned map {}", path.display()))?;
    if (info.key_size() as usize, info.value_size() as usize) != (key_size, value_size) {
        bail!(
            "the pinned map {} has {}-byte keys and {}-byte values, this build needs {key_size} \
             and {value_size}: it was made by another version; `{detach}` removes it (and its flows)",
            path.display(),
            info.key_size(),
            info.value_size(),
        );
    }
    Ok(())
}

/// `BPF_FS_MAGIC` (`linux/magic.h`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails with a clear message unless `dir` is (or would be created) on a BPF
/// filesystem, where pins must live.
pub fn require_bpffs(dir: &Path) -> anyhow::Result<()> {
    // The nearest existing ancestor tells which filesystem the pins would land on.
    let mut at = dir;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: `stat` is plain data filled by the kernel; `path` is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", at.display()));
    }
    if stat.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "`pin_dir` {} is not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or choose another pin_dir",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attachment_has_its_folder() {
        let base = Path::new("/sys/fs/bpf/baton");
        let fe = Pins::frontend(base, "eth0");
        assert_eq!(fe.dir(), Path::new("/sys/fs/bpf/baton/frontend-eth0"));
        assert_eq!(
            fe.xdp_link(),
            Path::new("/sys/fs/bpf/baton/frontend-eth0/link_xdp")
        );
        let be = Pins::backend(base, "eth0");
        assert_eq!(be.flows(), Path::new("/sys/fs/bpf/baton/eth0/flows"));
        assert_eq!(
            be.ingress_programs(),
            Path::new("/sys/fs/bpf/baton/eth0/ingress_programs")
        );
        assert_eq!(
            be.tc_link(TcAttachType::Egress),
            Path::new("/sys/fs/bpf/baton/eth0/link_egress")
        );
    }
}
