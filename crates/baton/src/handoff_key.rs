//! The handoff key shared by the front-end and the back-ends: 16 bytes written as 32 hex
//! digits, in a config file or in a file of its own.

use std::path::Path;

use anyhow::{Context as _, bail};

/// The key from `hex` or from the file at `file` (exactly one of them), naming `field`
/// in every error so a user knows which line to fix.
pub fn load(hex: Option<&str>, file: Option<&Path>, field: &str) -> anyhow::Result<[u8; 16]> {
    let text = match (hex, file) {
        (Some(hex), None) => hex.to_string(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("`{field}_file`: reading {}", file.display()))?,
        (Some(_), Some(_)) => bail!("set one of `{field}` and `{field}_file`, not both"),
        (None, None) => bail!("`{field}` (32 hex digits) or `{field}_file` is required"),
    };
    parse(text.trim()).with_context(|| format!("`{field}`"))
}

/// Parses 32 hex digits into 16 bytes.
pub fn parse(hex: &str) -> anyhow::Result<[u8; 16]> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "expected 32 hex digits (16 bytes), got {} characters",
            hex.len()
        );
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_names_the_field() {
        let key = parse("000102030405060708090a0b0c0d0e0F").unwrap();
        assert_eq!(key[15], 0x0f);
        assert!(parse("00").is_err());
        assert!(parse("zz0102030405060708090a0b0c0d0e0f").is_err());
        let err = load(None, None, "handoff_key").unwrap_err();
        assert!(format!("{err:#}").contains("handoff_key"));
        let err = load(Some("xyz"), None, "handoff_key").unwrap_err();
        assert!(format!("{err:#}").contains("`handoff_key`"), "{err:#}");
    }
}
