//! The lab's web content: every back-end serves the same tree shape with content that
//! names it, plus data files of known size and checksum shared by all back-ends, so a
//! download can be checked byte for byte whichever back-end served it.
//!
//! Layout of a back-end's root (`<state>/<node>/www`):
//!
//! | path | content |
//! |---|---|
//! | `/index.html` | names the back-end and its address |
//! | `/files/1K.bin`, `/files/1M.bin`, `/files/100M.bin` | deterministic bytes, same on every back-end |
//! | `/files/SHA256SUMS` | their checksums, in `sha256sum -c` format |
//! | `/img/index.html`, `/img/logo.svg` | an image tree |
//! | `/api/index.json`, `/api/status.json` | a JSON tree |
//! | `/static/index.html`, `/static/app.css`, `/static/app.js` | a static-asset tree |
//!
//! Every tree's index names the back-end, and both servers add an
//! `X-Baton-Backend: <node>` header to every response.

use std::{
    fs,
    io::{BufWriter, Write as _},
    net::Ipv4Addr,
    path::Path,
};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// The data files: name and size in bytes.
pub const DATA_FILES: [(&str, u64); 3] = [
    ("1K.bin", 1024),
    ("1M.bin", 1 << 20),
    ("100M.bin", 100 << 20),
];

/// Header both lab servers put on every response, naming the back-end that served it.
pub const BACKEND_HEADER: &str = "X-Baton-Backend";

/// Writes the data files into `dir` and returns `(name, sha256 hex)` for each.
pub fn write_data_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    write_files(dir, &DATA_FILES)
}

fn write_files(dir: &Path, files: &[(&str, u64)]) -> anyhow::Result<Vec<(String, String)>> {
    fs::create_dir_all(dir)?;
    let mut sums = Vec::new();
    for &(name, size) in files {
        let path = dir.join(name);
        let file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut rng = SplitMix64(fnv1a(name.as_bytes()));
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            for word in chunk[..n].chunks_mut(8) {
                let bytes = rng.next().to_le_bytes();
                word.copy_from_slice(&bytes[..word.len()]);
            }
            hasher.update(&chunk[..n]);
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        out.flush()?;
        sums.push((name.to_string(), hex(&hasher.finalize())));
    }
    Ok(sums)
}

/// Writes a back-end's site into `root`, hard-linking the data files from `data_dir`
/// (so 32 back-ends cost the disk one copy of them).
pub fn write_site(
    root: &Path,
    node: &str,
    addr: Ipv4Addr,
    data_dir: &Path,
    sums: &[(String, String)],
) -> anyhow::Result<()> {
    for dir in ["files", "img", "api", "static"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let page = |tree: &str| {
        format!(
            "<!doctype html>\n<html><head><title>Baton lab {node}</title></head>\n\
             <body><h1>Baton lab back-end {node}</h1>\n<p>backend={node} addr={addr} tree={tree}</p>\n\
             </body></html>\n"
        )
    };
    fs::write(root.join("index.html"), page("/"))?;
    fs::write(root.join("img/index.html"), page("/img/"))?;
    fs::write(
        root.join("img/logo.svg"),
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"30\">\
             <text x=\"4\" y=\"20\">{node}</text></svg>\n"
        ),
    )?;
    let json = |tree: &str| {
        format!("{{\"backend\":\"{node}\",\"addr\":\"{addr}\",\"tree\":\"{tree}\"}}\n")
    };
    fs::write(root.join("api/index.json"), json("/api/"))?;
    fs::write(root.join("api/status.json"), json("/api/status"))?;
    fs::write(root.join("static/index.html"), page("/static/"))?;
    fs::write(
        root.join("static/app.css"),
        format!("/* {node} */ body {{ font-family: sans-serif; }}\n"),
    )?;
    fs::write(
        root.join("static/app.js"),
        format!("// {node}\nconsole.log(\"{node}\");\n"),
    )?;
    for (name, _) in DATA_FILES {
        let link = root.join("files").join(name);
        fs::hard_link(data_dir.join(name), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let mut sums_text = String::new();
    for (name, sum) in sums {
        sums_text.push_str(&format!("{sum}  {name}\n"));
    }
    fs::write(root.join("files/SHA256SUMS"), sums_text)?;
    Ok(())
}

/// Hex digits of a digest, lower case as `sha256sum` prints them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a tiny, well-mixed generator, so the data files are incompressible (no
/// transparent compression can flatter a throughput figure) yet the same on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_deterministic_and_sized() {
        let a = tempdir("a");
        let b = tempdir("b");
        // Small sizes keep the unoptimised test build quick; an odd size checks the tail.
        let files = [("1K.bin", 1024), ("odd.bin", 70_001)];
        let sums_a = write_files(&a, &files).unwrap();
        let sums_b = write_files(&b, &files).unwrap();
        assert_eq!(sums_a, sums_b);
        for (name, size) in files {
            assert_eq!(fs::metadata(a.join(name)).unwrap().len(), size);
        }
        // Different files must not share content (each has its own seed).
        assert_ne!(sums_a[0].1, sums_a[1].1);
        let bytes = fs::read(a.join("1K.bin")).unwrap();
        assert_eq!(hex(&Sha256::digest(&bytes)), sums_a[0].1);
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-webroot-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
