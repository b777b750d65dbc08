//! The lab's built-in static file server, used only when nginx is missing and cannot be
//! installed. It serves the same web root with the same `X-Baton-Backend` header, so
//! tests and the demo behave the same with either server; `baton lab status` says which
//! one runs. It is a lab tool, not a production web server: GET and HEAD, keep-alive,
//! one thread per connection up to a cap.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Component, Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use baton_proto::request::{RequestError, RequestLimits, parse_http_head};

use crate::webroot::BACKEND_HEADER;

/// Connections served at once; more are closed at accept, which a client sees as a reset.
pub const MAX_CONNECTIONS: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A parsed request head: what the server needs of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without query string, percent-decoding not applied (the lab's names need none).
    pub path: String,
    pub keep_alive: bool,
}

/// Why a request head was refused, with the status code it earns.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not valid HTTP/1.x, or not origin-form (400).
    Malformed,
    /// A method other than GET or HEAD (405).
    MethodNotAllowed,
    /// Head larger than the front-end's default limit (431).
    TooLarge,
}

impl HeadError {
    fn status(&self) -> (u16, &'static str) {
        match self {
            Self::Malformed => (400, "Bad Request"),
            Self::MethodNotAllowed => (405, "Method Not Allowed"),
            Self::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// Parses a request head from the start of `buf` with the project's one HTTP head parser
/// (the one the front-end uses, and fuzzed). `Ok(None)` means "incomplete, read more";
/// `Ok(Some((request, len)))` gives the head's length so pipelined bytes stay buffered.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let head = match parse_http_head(buf, &RequestLimits::default()) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(RequestError::TooLarge { .. }) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let method = match head.method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(HeadError::MethodNotAllowed),
    };
    // A static server only takes origin-form targets (RFC 9112 section 3.2.1).
    if !head.target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let connection = head
        .header("connection")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless asked.
    let keep_alive = match (head.minor_version, connection.as_deref()) {
        (_, Some(c)) if c.contains("close") => false,
        (0, Some(c)) => c.contains("keep-alive"),
        (0, None) => false,
        _ => true,
    };
    Ok(Some((
        Request {
            method,
            path: head.path().to_string(),
            keep_alive,
        },
        head.head_len,
    )))
}

/// Maps a request path onto the web root, refusing anything that would leave it.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html",
        Some("json") => "application/json",
        Some("css") => "text/css",
        Some("js") => "application/javascript",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Serves `root` on `listener` until the process is killed (`baton lab down` does that).
pub fn serve(listener: TcpListener, root: PathBuf, backend: String) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    let root = Arc::new(root);
    let backend = Arc::new(backend);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: the client sees the connection close
        }
        let (active, root, backend) = (active.clone(), root.clone(), backend.clone());
        thread::spawn(move || {
            let _ = handle(stream, &root, &backend);
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, root: &Path, backend: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let parsed = loop {
            match parse_head(&buf) {
                Ok(None) => {}
                other => break other,
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let (request, len) = match parsed {
            Ok(Some(done)) => done,
            Ok(None) => unreachable!("the loop above only breaks on a complete head or an error"),
            Err(e) => {
                let (code, reason) = e.status();
                return respond_text(&mut stream, backend, code, reason, false);
            }
        };
        buf.drain(..len);
        respond(&mut stream, root, backend, &request)?;
        if !request.keep_alive {
            return Ok(());
        }
    }
}

fn respond(stream: &mut TcpStream, root: &Path, backend: &str, req: &Request) -> io::Result<()> {
    let file = resolve(root, &req.path).and_then(|p| fs::File::open(&p).ok().map(|f| (p, f)));
    let Some((path, mut file)) = file else {
        return respond_text(stream, backend, 404, "Not Found", req.keep_alive);
    };
    let len = file.metadata()?.len();
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: baton-lab\r\n{BACKEND_HEADER}: {backend}\r\n\
         Content-Type: {}\r\nContent-Length: {len}\r\nConnection: {}\r\n\r\n",
        content_type(&path),
        if req.keep_alive {
            "keep-alive"
        } else {
            "close"
        }
    );
    stream.write_all(head.as_bytes())?;
    if req.method == Method::Get {
        // std specialises this copy to sendfile(2) for a file into a socket.
        io::copy(&mut file, stream)?;
    }
    Ok(())
}

fn respond_text(
    stream: &mut TcpStream,
    backend: &str,
    code: u16,
    reason: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let body = format!("{code} {reason}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: baton-lab\r\n{BACKEND_HEADER}: {backend}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_query_and_keep_alive_rules() {
        let (req, len) = parse_head(b"GET /img/a.svg?x=1 HTTP/1.1\r\nHost: v\r\n\r\nNEXT")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/img/a.svg");
        assert!(req.keep_alive);
        assert_eq!(len, 40);
        let (req, _) = parse_head(b"HEAD / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive);
        let (req, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!req.keep_alive);
    }

    #[test]
    fn incomplete_oversize_and_garbage_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(baton_proto::request::DEFAULT_MAX_HEAD_LEN + 1, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        assert_eq!(
            parse_head(b"\x16\x03\x01\x00\xff"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\n\r\n"),
            Err(HeadError::MethodNotAllowed)
        );
        assert_eq!(
            parse_head(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn resolve_stays_inside_the_root() {
        let root = Path::new("/srv/www");
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/img/../../x"), None);
        assert_eq!(
            resolve(root, "/files/1K.bin"),
            Some(PathBuf::from("/srv/www/files/1K.bin"))
        );
    }
}
