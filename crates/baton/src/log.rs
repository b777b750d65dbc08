//! The daemons' structured log (the front-end's and the back-end agent's): one line per
//! event on standard error, `ts=<unix seconds> level=<info|warn|error> event=<name>
//! key=value ...`, logfmt with values quoted when they hold spaces, quotes or `=`.
//! Readable by people and by `grep` alike. `BATON_LOG_FORMAT=json` in the environment
//! writes the same keys as one JSON object per line instead (`{"ts":...,"level":"info",
//! "event":"ready",...}`), which log shippers read without a parser of their own; values
//! that are plain decimal numbers are JSON numbers, the rest strings. An environment
//! variable rather than a flag or a configuration key: it is the same for both daemons,
//! a systemd unit sets it with one `Environment=` line (or a drop-in), it reaches the
//! daemons of the lab and the tests without changing their command lines, and it holds
//! from the first line, before a configuration is read.
//!
//! `level=warn` marks something that failed or was refused while the daemon goes on
//! (a retried handoff, a back-end down, a reload refused, a sweep skipped);
//! `level=error` a failure that loses something (an access-log write, a reload's health
//! checks). Everything else is `info`.
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
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
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

/// A line's severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `ts=... level=info event=NAME key=value ...` (the default).
    Logfmt,
    /// `{"ts":...,"level":"info","event":"NAME","key":"value",...}`.
    Json,
}

/// The environment variable that chooses the [`Format`]: `json`, or `logfmt` (the
/// default; any other value too).
pub const FORMAT_VARIABLE: &str = "BATON_LOG_FORMAT";

impl Format {
    /// The format `BATON_LOG_FORMAT` asks for, read once per process.
    pub fn current() -> Self {
        static FORMAT: OnceLock<Format> = OnceLock::new();
        *FORMAT.get_or_init(|| Self::parse(std::env::var(FORMAT_VARIABLE).ok().as_deref()))
    }

    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Logfmt,
        }
    }
}

/// Writes one `info` line: `event` and the `fields` in order.
pub fn line(event: &str, fields: &[(&str, &dyn Display)]) {
    emit(Level::Info, event, fields);
}

/// Writes one `warn` line: something failed or was refused, and the daemon goes on.
pub fn warn(event: &str, fields: &[(&str, &dyn Display)]) {
    emit(Level::Warn, event, fields);
}

/// Writes one `error` line: a failure that loses something.
pub fn error(event: &str, fields: &[(&str, &dyn Display)]) {
    emit(Level::Error, event, fields);
}

/// Writes one line at `level`.
pub fn emit(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let out = render(Format::current(), ts, level, event, fields);
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

/// One line, newline included.
pub fn render(
    format: Format,
    ts: Duration,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> String {
    let mut out = String::with_capacity(128);
    let ts = format!("{}.{:03}", ts.as_secs(), ts.subsec_millis());
    match format {
        Format::Logfmt => {
            let _ = write!(out, "ts={ts} level={} event={event}", level.as_str());
            for (key, value) in fields {
                out.push(' ');
                out.push_str(key);
                out.push('=');
                push_value(&mut out, *value);
            }
        }
        Format::Json => {
            let _ = write!(
                out,
                "{{\"ts\":{ts},\"level\":\"{}\",\"event\":",
                level.as_str()
            );
            push_json_string(&mut out, event);
            let mut text = String::new();
            for (key, value) in fields {
                out.push(',');
                push_json_string(&mut out, key);
                out.push(':');
                text.clear();
                let _ = write!(text, "{value}");
                if is_json_number(&text) {
                    out.push_str(&text);
                } else {
                    push_json_string(&mut out, &text);
                }
            }
            out.push('}');
        }
    }
    out.push('\n');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// A plain decimal number (`12`, `-3`, `0.25`) that JSON reads as the same number; not
/// `007`, `1e3`, `inf`, nor digits too many for a 64-bit integer.
fn is_json_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    all_digits(int)
        && (int == "0" || !int.starts_with('0'))
        && int.len() <= 19
        && frac.is_none_or(all_digits)
}

pub(crate) fn push_value(out: &mut String, value: &dyn Display) {
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

    fn at(format: Format, level: Level, event: &str, fields: &[(&str, &dyn Display)]) -> String {
        render(
            format,
            Duration::from_millis(1_700_000_000_123),
            level,
            event,
            fields,
        )
    }

    #[test]
    fn logfmt_lines_have_ts_level_event_then_fields() {
        let line = at(
            Format::Logfmt,
            Level::Warn,
            "handoff_retry",
            &[
                ("client", &"198.18.0.2:40312"),
                ("request", &"GET /a b HTTP/1.1"),
                ("reason", &"said \"no\" = refused"),
                ("empty", &""),
                ("n", &3),
            ],
        );
        assert_eq!(
            line,
            "ts=1700000000.123 level=warn event=handoff_retry client=198.18.0.2:40312 \
             request=\"GET /a b HTTP/1.1\" reason=\"said \\\"no\\\" = refused\" empty=\"\" n=3\n"
        );
        assert!(
            at(Format::Logfmt, Level::Info, "ready", &[])
                .starts_with("ts=1700000000.123 level=info event=ready")
        );
        assert!(at(Format::Logfmt, Level::Error, "x", &[]).contains(" level=error event=x\n"));
    }

    #[test]
    fn json_lines_are_one_object_with_the_same_keys() {
        let line = at(
            Format::Json,
            Level::Info,
            "reattached",
            &[
                ("ingress", &"8830->8879"),
                ("flows", &12),
                ("ratio", &"0.25"),
                ("request", &"GET /\"q\" HTTP/1.1\n\\"),
                ("zip", &"007"),
                ("big", &"123456789012345678901234"),
            ],
        );
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 9);
        assert_eq!(v["ts"].as_f64(), Some(1_700_000_000.123));
        assert_eq!(v["level"], "info");
        assert_eq!(v["event"], "reattached");
        assert_eq!(v["ingress"], "8830->8879");
        assert_eq!(v["flows"], 12);
        assert_eq!(v["ratio"], 0.25);
        assert_eq!(v["request"], "GET /\"q\" HTTP/1.1\n\\");
        assert_eq!(v["zip"], "007");
        assert_eq!(v["big"], "123456789012345678901234");
        // The keys come in the logfmt line's order.
        assert!(line.starts_with(
            "{\"ts\":1700000000.123,\"level\":\"info\",\"event\":\"reattached\",\"ingress\""
        ));
    }

    #[test]
    fn the_format_comes_from_the_variable() {
        assert_eq!(Format::parse(None), Format::Logfmt);
        assert_eq!(Format::parse(Some("json")), Format::Json);
        assert_eq!(Format::parse(Some(" JSON ")), Format::Json);
        assert_eq!(Format::parse(Some("logfmt")), Format::Logfmt);
        assert_eq!(Format::parse(Some("yaml")), Format::Logfmt);
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
        assert!(
            pending.contains(" level=info event=test_event k=1\n")
                || pending.contains("\"event\":\"test_event\",\"k\":1}\n"),
            "{pending}"
        );
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
