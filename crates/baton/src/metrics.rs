//! Metrics in the Prometheus text exposition format (version 0.0.4), served over plain
//! HTTP by a small thread of their own; shared by the front-end daemon and the back-end
//! agent, each of which supplies its own text to serve.
//!
//! This module renders, parses (for `baton status`) and serves; it never reads a
//! daemon's state itself. The server answers `GET /metrics` (and nothing else: 404, or
//! 405 for another method), one connection at a time, with a bounded request read and
//! short timeouts, so a slow or hostile scraper can hold it up for at most
//! [`IO_TIMEOUT`] and never reaches the packet loop. Names and labels are documented in
//! `docs/metrics.md`.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use anyhow::Context as _;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest a connection may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of a request head read; a longer head gets a 431.
const MAX_REQUEST: usize = 4096;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of metrics being written: families (`# HELP`, `# TYPE`) and their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts family `name`: its help text (escaped) and type. Samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.name()
        );
        self
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram family: cumulative `_bucket{le=..}` samples ending with `+Inf`, then
    /// `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        h: &Histogram,
    ) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts[i];
            let le = format!("{bound}");
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count())
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample's value.
pub trait Value {
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for usize {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for u32 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Value for bool {
    fn write(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the format requires.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Help text with `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A histogram with fixed upper bounds (`le`), counts per bucket (not cumulative: the
/// exposition makes them so), an overflow bucket, and the sum of observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]` observations in `(bounds[i-1], bounds[i]]`; the last one past every
    /// bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// One sample read back from an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or "".
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Parses an exposition (this module's output: comments skipped, no timestamps). Lines
/// that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '}' => {
                    let at = chars.next().map_or(r.len(), |(i, _)| i);
                    rest = &r[at..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Binds `addr` (so that a taken port fails the daemon's start with a clear message) and
/// serves `render`'s page on `GET /metrics` from a thread named `name`. `render` returns
/// the page, or why there is none (answered 503).
pub fn serve(
    addr: SocketAddr,
    name: &str,
    render: impl Fn() -> Result<String, String> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    serve_after(addr, name, Duration::ZERO, render)
}

/// [`serve`], waiting up to `patience` for the address while it is in use: a daemon
/// taking over (`baton frontend --take-over`) holds the locks as soon as its predecessor
/// releases them, a moment before that process has exited and closed its own listener.
pub fn serve_after(
    addr: SocketAddr,
    name: &str,
    patience: Duration,
    render: impl Fn() -> Result<String, String> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let deadline = std::time::Instant::now() + patience;
    let listener = loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            other => break other.with_context(|| format!("metrics: binding {addr}"))?,
        }
    };
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    // One at a time: a scraper is one client every few seconds.
                    Ok(stream) => {
                        let _ = answer(stream, &render);
                    }
                    // Out of descriptors, say: do not spin on it.
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        })
        .context("metrics: starting the server thread")?;
    Ok(bound)
}

/// Reads one request head (bounded, timed) and answers it; the connection then closes.
fn answer(
    mut stream: TcpStream,
    render: &impl Fn() -> Result<String, String>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() >= MAX_REQUEST {
            break false;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break head.contains(&b'\n');
        }
        head.extend_from_slice(&buf[..n.min(MAX_REQUEST - head.len())]);
    };
    let (status, body) = if !complete {
        ("431 Request Header Fields Too Large", String::new())
    } else {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        route(line.trim_end(), render)
    };
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status.starts_with("200") {
            CONTENT_TYPE
        } else {
            "text/plain; charset=utf-8"
        },
        body.len()
    );
    stream.write_all(text.as_bytes())
}

/// The answer to request line `line`.
fn route(line: &str, render: &impl Fn() -> Result<String, String>) -> (&'static str, String) {
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match render() {
            Ok(page) => ("200 OK", page),
            Err(why) => ("503 Service Unavailable", format!("{why}\n")),
        },
        (_, "/metrics") => (
            "405 Method Not Allowed",
            "only GET /metrics is served\n".into(),
        ),
        _ => ("404 Not Found", "only GET /metrics is served\n".into()),
    }
}

/// `GET /metrics` from `addr` (for `baton status`): the page, or an error that says
/// what failed.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT * 2))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(64 << 20)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let raw = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("the answer has no HTTP head")?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        anyhow::bail!("{addr} answered `{status}`: {}", body.trim());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_parse_back() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Help with \\ and\nnewline.")
            .sample("x_total", &[("rule", "a\"b\\c\nd"), ("pool", "p")], 7u64);
        let page = e.finish();
        assert_eq!(
            page,
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n\
             x_total{rule=\"a\\\"b\\\\c\\nd\",pool=\"p\"} 7\n"
        );
        let samples = parse(&page);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].label("rule"), "a\"b\\c\nd");
        assert_eq!(samples[0].label("pool"), "p");
        assert_eq!(samples[0].value, 7.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.0005, 0.001, 0.005, 0.05, 0.05, 3.0] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.histogram("lat_seconds", "Latency.", &[("a", "b")], &h);
        let page = e.finish();
        let want = "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
            lat_seconds_bucket{a=\"b\",le=\"0.001\"} 2\n\
            lat_seconds_bucket{a=\"b\",le=\"0.01\"} 3\n\
            lat_seconds_bucket{a=\"b\",le=\"0.1\"} 5\n\
            lat_seconds_bucket{a=\"b\",le=\"+Inf\"} 6\n";
        assert!(page.starts_with(want), "{page}");
        let samples = parse(&page);
        let sum = samples
            .iter()
            .find(|s| s.name == "lat_seconds_sum")
            .unwrap();
        assert!((sum.value - 3.1065).abs() < 1e-9, "{}", sum.value);
        let count = samples
            .iter()
            .find(|s| s.name == "lat_seconds_count")
            .unwrap();
        assert_eq!(count.value, 6.0);
        // Cumulative: never decreasing, and +Inf is the count.
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == "lat_seconds_bucket")
            .map(|s| s.value)
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*buckets.last().unwrap(), 6.0);
    }

    #[test]
    fn values_are_formatted_as_the_format_wants() {
        let mut s = String::new();
        f64::INFINITY.write(&mut s);
        s.push(' ');
        0.25f64.write(&mut s);
        s.push(' ');
        true.write(&mut s);
        s.push(' ');
        f64::NAN.write(&mut s);
        assert_eq!(s, "+Inf 0.25 1 NaN");
    }

    #[test]
    fn the_server_answers_metrics_only() {
        let addr = serve("127.0.0.1:0".parse().unwrap(), "metrics-test", || {
            Ok("a_total 1\n".into())
        })
        .unwrap();
        assert_eq!(scrape(addr).unwrap(), "a_total 1\n");
        let ask = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(ask("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let ok = ask("GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let down = serve("127.0.0.1:0".parse().unwrap(), "metrics-test", || {
            Err("the loop is gone".into())
        })
        .unwrap();
        let e = format!("{:#}", scrape(down).unwrap_err());
        assert!(e.contains("503") && e.contains("the loop is gone"), "{e}");
    }
}
