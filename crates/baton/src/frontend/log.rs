//! The daemon's structured log: one `logfmt` line per event on standard error,
//! `ts=<unix seconds> event=<name> key=value ...`, values quoted when they hold spaces,
//! quotes or `=`. Readable by people and by `grep`/log shippers alike, and free of
//! dependencies. Each line goes out in one `write` so lines from a burst never interleave.

use std::{
    fmt::{self, Display, Write as _},
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

/// Writes one line: `event` and the `fields` in order.
pub fn line(event: &str, fields: &[(&str, &dyn Display)]) {
    let mut out = String::with_capacity(128);
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let _ = write!(
        out,
        "ts={}.{:03} event={event}",
        ts.as_secs(),
        ts.subsec_millis()
    );
    for (key, value) in fields {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        push_value(&mut out, *value);
    }
    out.push('\n');
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

fn push_value(out: &mut String, value: &dyn Display) {
    let start = out.len();
    let _ = write!(out, "{value}");
    let needs_quotes = out[start..].is_empty()
        || out[start..]
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if needs_quotes {
        let raw = out.split_off(start);
        out.push('"');
        for c in raw.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A `Debug`-formatted flat struct of counters (`Name { a: 1, b: 2 }`) as `a=1 b=2`, so
/// that the exit statistics need no hand-kept list of fields.
pub struct Counters<'a, T: fmt::Debug>(pub &'a T);

impl<T: fmt::Debug> Counters<'_, T> {
    /// The `key=value` pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let text = format!("{:?}", self.0);
        let inner = text
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map_or("", |(inner, _)| inner);
        inner
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }
}

/// Writes one line with every counter of `stats` (a flat struct of numbers).
pub fn counters<T: fmt::Debug>(event: &str, stats: &T) {
    let pairs = Counters(stats).pairs();
    let fields: Vec<(&str, &dyn Display)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v as &dyn Display))
        .collect();
    line(event, &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_when_needed() {
        let mut s = String::new();
        push_value(&mut s, &"GET / HTTP/1.1");
        assert_eq!(s, "\"GET / HTTP/1.1\"");
        let mut s = String::new();
        push_value(&mut s, &"a\"b\n");
        assert_eq!(s, "\"a\\\"b\\u{a}\"");
        let mut s = String::new();
        push_value(&mut s, &"198.18.0.2:4000");
        assert_eq!(s, "198.18.0.2:4000");
    }

    #[test]
    fn debug_structs_become_pairs() {
        #[derive(Debug)]
        #[expect(dead_code, reason = "read through Debug, which is the point")]
        struct S {
            a: u64,
            bee: u64,
        }
        let pairs = Counters(&S { a: 1, bee: 22 }).pairs();
        assert_eq!(
            pairs,
            [("a".into(), "1".into()), ("bee".into(), "22".into())]
        );
    }
}
