//! The daemon's structured log: one `logfmt` line per event on standard error,
//! `ts=<unix seconds> event=<name> key=value ...`, values quoted when they hold spaces,
//! quotes or `=`. Readable by people and by `grep`/log shippers alike, and free of
//! dependencies.
//!
//! Lines never interleave: each `write` holds whole lines and at most [`PIPE_BUF`] bytes,
//! which a pipe writes atomically. The event loop [`Buffered`] its thread's lines and
//! flushes them once per round, so a round of 64 handoffs costs a few `write`s rather
//! than 64 (under `Connection: close` load a `write` per handoff was 2% of the daemon's
//! time); other threads (health checks) and lines outside the loop write at once.

use std::{
    cell::RefCell,
    fmt::{self, Display, Write as _},
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

/// Bytes a pipe writes atomically (`PIPE_BUF` on Linux).
pub const PIPE_BUF: usize = 4096;

thread_local! {
    /// This thread's pending lines while a [`Buffered`] guard lives.
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// While it lives, this thread's lines wait for [`flush`] (or its drop) instead of
/// going out one `write` each.
pub struct Buffered(());

impl Buffered {
    pub fn start() -> Self {
        PENDING.with(|p| *p.borrow_mut() = Some(String::with_capacity(16 * 1024)));
        Self(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        flush();
        PENDING.with(|p| *p.borrow_mut() = None);
    }
}

/// Writes this thread's pending lines, if any.
pub fn flush() {
    PENDING.with(|p| {
        if let Some(pending) = p.borrow_mut().as_mut()
            && !pending.is_empty()
        {
            write_lines(pending);
            pending.clear();
        }
    });
}

/// Writes whole lines in chunks of at most [`PIPE_BUF`] bytes (a line longer than that
/// goes alone).
fn write_lines(text: &str) {
    let mut err = std::io::stderr().lock();
    for chunk in line_chunks(text, PIPE_BUF) {
        let _ = err.write_all(chunk.as_bytes());
    }
}

fn line_chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The longest prefix of whole lines within `max`, or the first line alone.
        let mut end = 0;
        for (i, _) in rest.match_indices('\n') {
            if i + 1 > max && end > 0 {
                break;
            }
            end = i + 1;
            if end >= max {
                break;
            }
        }
        if end == 0 {
            end = rest.len();
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

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
    let buffered = PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) => {
            pending.push_str(&out);
            true
        }
        None => false,
    });
    if !buffered {
        write_lines(&out);
    }
}

pub(super) fn push_value(out: &mut String, value: &dyn Display) {
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
    fn chunks_hold_whole_lines_within_the_bound() {
        let text = "aaaa\nbb\ncccccc\nd\n";
        let chunks: Vec<&str> = line_chunks(text, 8).collect();
        assert_eq!(chunks, ["aaaa\nbb\n", "cccccc\n", "d\n"]);
        assert_eq!(chunks.concat(), text);
        // A line over the bound goes alone, whole.
        let long: Vec<&str> = line_chunks("0123456789\nx\n", 4).collect();
        assert_eq!(long, ["0123456789\n", "x\n"]);
        // Text without a final newline still comes out.
        assert_eq!(line_chunks("ab\ncd", 8).collect::<Vec<_>>(), ["ab\n", "cd"]);
    }

    #[test]
    fn buffered_lines_wait_for_the_flush() {
        let guard = Buffered::start();
        line("test_event", &[("k", &1)]);
        let pending = PENDING.with(|p| p.borrow().clone()).unwrap();
        assert!(pending.contains("event=test_event k=1\n"), "{pending}");
        flush();
        assert_eq!(PENDING.with(|p| p.borrow().clone()).unwrap(), "");
        drop(guard);
        assert!(PENDING.with(|p| p.borrow().is_none()));
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
