//! Request path normalisation (`baton_proto::request::normalize_path`) on arbitrary
//! text: no panics, and every path it accepts comes out in normal form, starting with
//! `/`, with no empty, `.` or `..` segment left, which normalising again keeps as it is.
//!
//! "Again" has to write a decoded `%` back as `%25` first: the normaliser decodes once,
//! as nginx does (`/%2561` is `/%61`, never `/a`), so its output is a decoded path and
//! normalising it raw would decode a second time. A path without `%` is its own
//! encoding.
#![no_main]

use baton_proto::request::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} gave {path:?}");
    for leftover in ["//", "/./", "/../"] {
        assert!(!path.contains(leftover), "{raw:?} gave {path:?}");
    }
    assert!(
        !path.ends_with("/.") && !path.ends_with("/.."),
        "{raw:?} gave {path:?}"
    );
    assert!(!path.contains('\0'), "{raw:?} gave {path:?}");
    let encoded = path.replace('%', "%25");
    assert_eq!(
        normalize_path(&encoded).as_deref(),
        Ok(&*path),
        "{raw:?} gave {path:?}, which is not in normal form"
    );
    if !path.contains('%') {
        assert_eq!(normalize_path(&path).as_deref(), Ok(&*path), "{raw:?}");
    }
});
