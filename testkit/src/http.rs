//! A tiny HTTP/1.1 server on `127.0.0.1:0`, shared by the Hydra-compatible server and the binary
//! cache.
//!
//! One thread per connection, keep-alive, any method handed to the handler (HEAD answers get the
//! headers only). `TCP_NODELAY` is set and every response goes out in a single `write`: otherwise
//! Nagle's algorithm plus the client's delayed ACK add about 40 ms per request, which would hide the
//! agent's own cost in benchmarks.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// Request heads larger than this are refused (the connection is closed).
const MAX_HEAD: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query, e.g. `/jobset/p/j/evals?page=2`.
    pub target: String,
    /// Header names as sent; look them up with [`Request::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string without its `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The first header of that name (case-insensitive) in `headers`.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response; `Content-Length` is added when it is written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A body with its `Content-Type`.
    pub fn with_body(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status)
            .header("Content-Type", content_type)
            .body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Status line, headers and (unless `head_only`) body as one buffer, so one `write` sends it.
    fn to_bytes(&self, head_only: bool, close: bool) -> Vec<u8> {
        let mut out = self.head(Some(self.body.len() as u64), close);
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// Status line and headers, with `Content-Length: length` or, without a length,
    /// `Transfer-Encoding: chunked`.
    fn head(&self, length: Option<u64>, close: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        match length {
            Some(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
            None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Bytes this response puts on the wire (head and body; without `Connection: close`).
    pub fn wire_len(&self) -> u64 {
        (self.head(Some(self.body.len() as u64), false).len() + self.body.len()) as u64
    }
}

/// A large body made on the fly and written in pieces, never held whole: `head`, then `item`
/// `count` times with `sep` between, then `tail`.
#[derive(Debug, Clone, Default)]
pub struct Repeated {
    pub head: Vec<u8>,
    pub item: Vec<u8>,
    pub sep: Vec<u8>,
    pub count: u64,
    pub tail: Vec<u8>,
}

impl Repeated {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        let seps = self.count.saturating_sub(1) * self.sep.len() as u64;
        self.head.len() as u64 + self.count * self.item.len() as u64 + seps + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `write` with pieces of about 64 KiB that make up the body, in order.
    fn for_each_piece(&self, mut write: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        const PIECE: usize = 64 << 10;
        let mut buf = Vec::with_capacity(PIECE + self.item.len() + self.sep.len());
        buf.extend_from_slice(&self.head);
        for i in 0..self.count {
            if i > 0 {
                buf.extend_from_slice(&self.sep);
            }
            buf.extend_from_slice(&self.item);
            if buf.len() >= PIECE {
                write(&buf)?;
                buf.clear();
            }
        }
        buf.extend_from_slice(&self.tail);
        if !buf.is_empty() {
            write(&buf)?;
        }
        Ok(())
    }

    /// The whole body (for tests of the test kit itself; defeats the purpose otherwise).
    pub fn collect(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.for_each_piece(|p| {
            out.extend_from_slice(p);
            Ok(())
        });
        out
    }
}

/// What the handler wants done with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Send(Response),
    /// `response`'s status and headers with `body` written in pieces instead of its own body:
    /// with `Content-Length` unless `chunked` (then `Transfer-Encoding: chunked`, so a client
    /// learns the size only by reading).
    Stream {
        response: Response,
        body: Repeated,
        chunked: bool,
    },
    /// Close the connection without answering (a crashed or reset server).
    Close,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Send(r)
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running server; stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `127.0.0.1:0` and answers every request with `handler`, which runs on the
    /// connection's own thread (so it may sleep to simulate a slow server).
    pub fn start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (stop, connections) = (stop.clone(), connections.clone());
            thread::Builder::new()
                .name(format!("http-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(clone) = stream.try_clone() {
                            connections.lock().unwrap().push(clone);
                        }
                        let handler = handler.clone();
                        thread::spawn(move || serve_connection(stream, &*handler));
                    }
                })?
        };
        Ok(Server {
            addr,
            stop,
            connections,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let (request, keep_alive) = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        match handler(&request) {
            Reply::Close => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Reply::Send(response) => {
                let bytes = response.to_bytes(request.method == "HEAD", !keep_alive);
                if writer.write_all(&bytes).is_err() || !keep_alive {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
            Reply::Stream {
                response,
                body,
                chunked,
            } => {
                let head = response.head((!chunked).then(|| body.len()), !keep_alive);
                let written = writer.write_all(&head).and_then(|()| {
                    if request.method == "HEAD" {
                        return Ok(());
                    }
                    body.for_each_piece(|piece| match chunked {
                        true => {
                            writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                            writer.write_all(piece)?;
                            writer.write_all(b"\r\n")
                        }
                        false => writer.write_all(piece),
                    })?;
                    match chunked {
                        true => writer.write_all(b"0\r\n\r\n"),
                        false => Ok(()),
                    }
                });
                // A client that stops reading a huge body closes the connection: done.
                if written.is_err() || !keep_alive {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<(Request, bool)>> {
    let mut head = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.push(n);
        if head.iter().sum::<usize>() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut first = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(io::Error::other("bad request line"));
    };
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if let Some(len) = request
        .header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    let connection = request
        .header("Connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Ok(Some((request, keep_alive)))
}

/// A response read by [`get`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal client for checks in tests: one `GET http://HOST:PORT/PATH` with extra headers,
/// `Connection: close`, redirects not followed.
pub fn get(url: &str, headers: &[(&str, &str)]) -> io::Result<Fetched> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::other(format!("not an http:// URL: {url}")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Fetched {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(server: &Server, raw: &str) -> String {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn keep_alive_then_close_and_head() {
        let server = Server::start(|r| {
            Response::with_body(200, "text/plain", format!("{} {}", r.method, r.target)).into()
        })
        .unwrap();
        let out = roundtrip(
            &server,
            "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("Content-Length: 10\r\n\r\nGET /a?x=1"),
            "{out}"
        );
        // The HEAD answer has the length of the body it would have sent, and no body.
        assert!(
            out.ends_with("Content-Length: 7\r\nConnection: close\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn streamed_bodies_chunked_or_with_length() {
        let body = Repeated {
            head: b"[".to_vec(),
            item: b"12345".to_vec(),
            sep: b",".to_vec(),
            count: 20_000,
            tail: b"]".to_vec(),
        };
        assert_eq!(body.len(), body.collect().len() as u64);
        assert_eq!(body.len(), 2 + 20_000 * 5 + 19_999);
        for chunked in [false, true] {
            let b = body.clone();
            let server = Server::start(move |_| Reply::Stream {
                response: Response::with_body(200, "application/json", ""),
                body: b.clone(),
                chunked,
            })
            .unwrap();
            let raw = roundtrip(&server, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
            let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
            let sent = if chunked {
                assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
                // De-chunk: size line, data, CRLF, until the zero-size chunk.
                let mut out = String::new();
                let mut rest = rest;
                loop {
                    let (size, after) = rest.split_once("\r\n").unwrap();
                    let size = usize::from_str_radix(size, 16).unwrap();
                    if size == 0 {
                        break;
                    }
                    out.push_str(&after[..size]);
                    rest = &after[size + 2..];
                }
                out
            } else {
                assert!(
                    head.contains(&format!("Content-Length: {}", body.len())),
                    "{head}"
                );
                rest.to_string()
            };
            assert_eq!(sent.into_bytes(), body.collect());
        }
    }

    #[test]
    fn close_without_answer() {
        let server = Server::start(|_| Reply::Close).unwrap();
        assert_eq!(roundtrip(&server, "GET / HTTP/1.1\r\n\r\n"), "");
    }
}
