//! The HTTP/1.x relay. A visitor connection's requests go to the agent over one proxy stream
//! as the visitor sent them, except for the request target (origin-form) and the
//! `X-Forwarded-*` headers; responses come back byte for byte. The relay parses only what it
//! must: each request head, to check it as every request is checked
//! ([`admit_request`]), and the framing of bodies both ways, to know where one message ends
//! and the next begins. One task polls both directions, so a request body and its response
//! never wait on each other.
//!
//! Requests may be pipelined. A request for another tunnel than the stream's waits until
//! every response owed on the stream has arrived, then gets a stream of its own. When the
//! edge answers a request itself (a refusal, an offline endpoint, a malformed request), it
//! answers in turn, after what the agent owes, and closes the connection. After a `101`
//! (or a `2xx` to `CONNECT`) the connection is a plain byte pipe both ways.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::StatusCode;
use meridian_tunnel::MuxStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use crate::Pop;
use crate::hello::Prefixed;
use crate::http::{MAX_HEADER_BYTES, Visitor, admit_request, open_proxy_stream};
use crate::pages::{self, Page};
use crate::registry::Tunnel;

/// How long a visitor may take to send a request head, counted from when nothing is owed to
/// it (so the idle time between keep-alive requests counts, a slow response does not).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a finished visitor connection may take (a TLS close_notify).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers one message may carry.
const MAX_HEADERS: usize = 128;
/// Free room a read is given at least.
const READ_ROOM: usize = 16 * 1024;
/// What a buffer grows by when it runs out of room.
const READ_CHUNK: usize = 64 * 1024;
/// Request body bytes that may be copied behind their head, to leave in one frame.
const COALESCE_BODY: usize = 16 * 1024;
/// How an HTTP/2 visitor without TLS (prior knowledge) starts; it is served by hyper.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Serves one visitor connection speaking HTTP/1.x until it closes (or hands it to the HTTP/2
/// server when it opens with the HTTP/2 preface).
pub(crate) async fn serve<IO>(pop: Arc<Pop>, mut io: IO, visitor: Visitor)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut relay = Relay::new(&pop, &visitor, &mut io);
    std::future::poll_fn(|cx| relay.poll(cx)).await;
    if relay.h2 {
        let prefix = std::mem::take(&mut relay.req.buf).to_vec();
        drop(relay);
        return crate::http::serve_h2(pop.clone(), Prefixed::new(prefix, io), visitor).await;
    }
    drop(relay);
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, io.shutdown()).await;
}

/// What one side of the relay did in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Something changed: step both sides again.
    Progress,
    /// Waiting, on a registered waker or on the other side.
    Blocked,
    /// The connection is over.
    Finished,
}

/// An answer the visitor is owed, in request order.
#[derive(Debug)]
enum Owed {
    /// The agent's response to a forwarded request.
    Agent(OwedAgent),
    /// A response the edge makes itself; the connection closes after it.
    Local(Vec<u8>),
}

/// What the relay must know of a forwarded request to follow its response.
#[derive(Debug, Clone, Copy)]
struct OwedAgent {
    /// The request was `HEAD`: the response has no body whatever it says.
    head: bool,
    /// The request asked to switch protocols (or was `CONNECT`).
    upgrade: bool,
    /// The request was `CONNECT`: a `2xx` makes the connection a tunnel.
    connect: bool,
    /// The visitor asked to close after this response.
    close: bool,
}

/// Where a message body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    /// This many more bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// At the end of the connection (responses only).
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BadFraming;

impl Framing {
    /// How many bytes at the start of `data` belong to the body, and whether they end it.
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), BadFraming> {
        match self {
            Self::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Self::Chunked(chunked) => chunked.take(data),
            Self::UntilClose => Ok((data.len(), false)),
        }
    }
}

/// Follows a chunked body's framing (RFC 9112 §7.1) without decoding it: the bytes pass on
/// unchanged. Line endings must be CRLF; sizes, extensions and trailers are bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chunked {
    state: ChunkState,
    /// The chunk size being read, then the chunk bytes still to come.
    size: u64,
    /// Bytes of the current size line, or of the trailer section.
    line: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), BadFraming> {
        use ChunkState::*;
        let mut at = 0;
        while at < data.len() && self.state != Done {
            if self.state == Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - at);
                self.size -= n as u64;
                at += n;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[at];
            at += 1;
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                    if self.size > u64::MAX >> 4 {
                        return Err(BadFraming);
                    }
                    self.size = self.size << 4 | digit;
                    self.line += 1;
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.line > 0 => Extension,
                (Size, b'\r') if self.line > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(BadFraming),
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => {
                    self.line = 0;
                    TrailerStart
                }
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.line = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | TrailerLine, b'\n') => return Err(BadFraming),
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                _ => return Err(BadFraming),
            };
            if matches!(self.state, Extension | TrailerLine | TrailerLf) {
                self.line += 1;
            }
            let limit = match self.state {
                TrailerStart | TrailerLine | TrailerLf | EndLf => MAX_HEADER_BYTES,
                _ => MAX_CHUNK_LINE,
            };
            if self.line > limit {
                return Err(BadFraming);
            }
        }
        Ok((at, self.state == Done))
    }
}

/// A parsed request head, as the relay forwards it.
#[derive(Debug)]
struct RequestHead {
    /// Bytes of the head in the visitor's buffer.
    len: usize,
    /// The host as the request named it (authority of an absolute-form target, else Host).
    host: Option<String>,
    framing: Framing,
    head: bool,
    upgrade: bool,
    connect: bool,
    close: bool,
    /// The head as the agent gets it, short of the `X-Forwarded-*` headers and the blank line.
    rewritten: Vec<u8>,
}

fn bad_request(message: &str) -> Page {
    Page::new(StatusCode::BAD_REQUEST, "ERR_NGROK_3004", message)
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The body framing a message's `Transfer-Encoding` and `Content-Length` headers give, or
/// `None` for neither. Conflicting lengths are an error.
fn body_framing(
    headers: &[httparse::Header<'_>],
    chunked_only: bool,
) -> Result<Option<Framing>, &'static str> {
    let mut length: Option<u64> = None;
    let mut coding: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let n = std::str::from_utf8(part)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("The Content-Length is not a number.")?;
                if length.is_some_and(|l| l != n) {
                    return Err("The request has conflicting Content-Lengths.");
                }
                length = Some(n);
            }
        }
    }
    if let Some(coding) = coding {
        if chunked_only && length.is_some() {
            return Err("The request has both Transfer-Encoding and Content-Length.");
        }
        let last = coding.rsplit(|&b| b == b',').next().unwrap_or_default();
        return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Ok(Some(Framing::Chunked(Chunked::default())))
        } else if chunked_only {
            Err("A request's Transfer-Encoding must end with chunked.")
        } else {
            Ok(Some(Framing::UntilClose))
        };
    }
    Ok(length.map(Framing::Length))
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, Page> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Page::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "ERR_NGROK_3004",
                format!("The request has more than {MAX_HEADERS} headers."),
            ));
        }
        Err(e) => return Err(bad_request(&format!("The request is malformed: {e}."))),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad_request("The request is malformed."));
    };
    let framing = body_framing(req.headers, true)
        .map_err(bad_request)?
        .unwrap_or(Framing::Length(0));

    // An absolute-form target names the host itself and wins over Host (RFC 9112 §3.2.2).
    let mut authority = None;
    let mut path = target;
    if method != "CONNECT"
        && let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
    {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        authority = Some(&rest[..end]);
        path = &rest[end..];
    }
    let mut host_headers = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(bad_request("The request has more than one Host."));
    }
    let host = match (authority, host_header) {
        (Some(a), _) => Some(a.to_owned()),
        (None, Some(h)) => Some(
            std::str::from_utf8(h.value)
                .map_err(|_| bad_request("The Host is not text."))?
                .to_owned(),
        ),
        (None, None) => None,
    };

    let mut connection_close = false;
    let mut keep_alive = false;
    let mut connection_upgrade = false;
    let mut has_upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            connection_close |= lists(h.value, "close");
            keep_alive |= lists(h.value, "keep-alive");
            connection_upgrade |= lists(h.value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
        }
    }

    let mut rewritten = Vec::with_capacity(len + 128);
    rewritten.extend_from_slice(method.as_bytes());
    rewritten.push(b' ');
    rewritten.extend_from_slice(if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    });
    rewritten.extend_from_slice(if minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    if let Some(a) = authority {
        rewritten.extend_from_slice(b"host: ");
        rewritten.extend_from_slice(a.as_bytes());
        rewritten.extend_from_slice(b"\r\n");
    }
    for h in req.headers.iter() {
        let skip = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
            || (authority.is_some() && h.name.eq_ignore_ascii_case("host"));
        if !skip {
            rewritten.extend_from_slice(h.name.as_bytes());
            rewritten.extend_from_slice(b": ");
            rewritten.extend_from_slice(h.value);
            rewritten.extend_from_slice(b"\r\n");
        }
    }
    // Prior X-Forwarded-For values, in order, to extend with the visitor's address.
    let mut prior_for: Vec<u8> = Vec::new();
    for h in req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
    {
        if !prior_for.is_empty() {
            prior_for.extend_from_slice(b", ");
        }
        prior_for.extend_from_slice(h.value);
    }
    rewritten.extend_from_slice(b"x-forwarded-for: ");
    if !prior_for.is_empty() {
        rewritten.extend_from_slice(&prior_for);
        rewritten.extend_from_slice(b", ");
    }

    Ok(Some(RequestHead {
        len,
        host,
        framing,
        head: method == "HEAD",
        upgrade: method == "CONNECT" || (connection_upgrade && has_upgrade),
        connect: method == "CONNECT",
        close: connection_close || (minor == 0 && !keep_alive),
        rewritten,
    }))
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    len: usize,
    status: u16,
    /// `None` when the headers give no framing: the body runs to the end of the connection.
    framing: Option<Framing>,
    close: bool,
}

fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.code.unwrap_or_default();
    let framing = body_framing(resp.headers, false).map_err(str::to_owned)?;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if lists(h.value, "close") {
                close = true;
            } else if lists(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        close,
    }))
}

#[derive(Debug)]
enum ReqState {
    /// Waiting for (or parsing) the next request head.
    Head,
    /// Forwarding a request body; `then_upgrade` when the request asked to switch protocols.
    Body(Framing, bool),
    /// A request to switch protocols was sent: nothing more is read until its answer.
    Upgrading,
    /// Bytes pass as they are.
    Raw,
    /// Nothing more is read from the visitor.
    Closed,
}

#[derive(Debug)]
enum RespState {
    Head,
    /// Forwarding a response body; `close` when the connection ends after it.
    Body(Framing, bool),
    Raw,
    /// Nothing more goes to the visitor once what is pending is written.
    Done,
}

/// Visitor-to-agent.
#[derive(Debug)]
struct RequestSide {
    buf: BytesMut,
    /// Bytes at the front of `buf` that go to the agent unchanged, after `head`.
    ready: usize,
    /// A rewritten request head on its way to the agent.
    head: Vec<u8>,
    head_at: usize,
    state: ReqState,
}

/// Agent-to-visitor.
#[derive(Debug)]
struct ResponseSide {
    buf: BytesMut,
    /// Bytes at the front of `buf` that go to the visitor.
    ready: usize,
    /// Whether any byte of the response now owed has arrived.
    started: bool,
    /// Body bytes taken from the agent's stream as they arrived, on their way to the visitor
    /// without a copy into `buf`. Only taken while `buf` is empty, so nothing in `buf` is
    /// ever behind them.
    direct: Bytes,
    /// A page of the edge's own on its way to the visitor; the connection ends after it.
    local: Vec<u8>,
    local_at: usize,
    state: RespState,
}

/// Where the bytes the relay writes to the visitor next come from.
enum Source {
    Buf,
    Direct,
    Local,
}

struct Relay<'a, IO> {
    pop: &'a Pop,
    visitor: &'a Visitor,
    io: &'a mut IO,
    upstream: Option<(Arc<Tunnel>, MuxStream)>,
    owed: VecDeque<Owed>,
    req: RequestSide,
    resp: ResponseSide,
    /// When the visitor must have sent the next request head, while nothing is owed to it.
    head_deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Requests forwarded so far.
    forwarded: u64,
    /// The visitor opened with the HTTP/2 preface.
    h2: bool,
}

fn write_some<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    match Pin::new(w).poll_write(cx, data) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        other => other,
    }
}

fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_CHUNK);
    }
    poll_read_buf(Pin::new(r), cx, buf)
}

impl<'a, IO: AsyncRead + AsyncWrite + Unpin> Relay<'a, IO> {
    fn new(pop: &'a Pop, visitor: &'a Visitor, io: &'a mut IO) -> Self {
        let deadline = Instant::now() + HEADER_TIMEOUT;
        Self {
            pop,
            visitor,
            io,
            upstream: None,
            owed: VecDeque::new(),
            req: RequestSide {
                buf: BytesMut::new(),
                ready: 0,
                head: Vec::new(),
                head_at: 0,
                state: ReqState::Head,
            },
            resp: ResponseSide {
                buf: BytesMut::new(),
                ready: 0,
                started: false,
                direct: Bytes::new(),
                local: Vec::new(),
                local_at: 0,
                state: RespState::Head,
            },
            head_deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            forwarded: 0,
            h2: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let request = self.step_request(cx);
            if request == Step::Finished {
                return Poll::Ready(());
            }
            let response = self.step_response(cx);
            if response == Step::Finished {
                return Poll::Ready(());
            }
            if request == Step::Blocked && response == Step::Blocked {
                return match self.poll_head_timer(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!("visitor sent no request head in time");
                        Poll::Ready(())
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
        }
    }

    /// Ready when the visitor has kept the relay waiting for a request head too long. The
    /// timer is moved only when it would fire late, so keep-alive requests rarely touch it.
    fn poll_head_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.head_deadline else {
            return Poll::Pending;
        };
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    /// Refuses the request being read with `page`, once everything before it is answered.
    fn answer_locally(&mut self, page: &Page) -> Step {
        tracing::debug!(
            status = page.status.as_u16(),
            code = page.code,
            "edge answers"
        );
        self.owed.push_back(Owed::Local(page.to_http1()));
        self.req.state = ReqState::Closed;
        self.head_deadline = None;
        Step::Progress
    }

    fn step_request(&mut self, cx: &mut Context<'_>) -> Step {
        // First make sense of what is buffered, so that a head and the body bytes behind it
        // leave in one frame; then write; then read.
        let req = &mut self.req;
        let unclassified = req.buf.len() > req.ready;
        let flushed = req.ready == 0 && req.head_at == req.head.len();
        match &mut req.state {
            ReqState::Body(framing, then_upgrade) if unclassified => {
                let (n, end) = match framing.take(&req.buf[req.ready..]) {
                    Ok(taken) => taken,
                    Err(BadFraming) => {
                        tracing::debug!("malformed chunked request body");
                        return Step::Finished;
                    }
                };
                if req.ready == 0 && req.head_at < req.head.len() && n <= COALESCE_BODY {
                    // A small body rides in the head's frame.
                    req.head.extend_from_slice(&req.buf[..n]);
                    req.buf.advance(n);
                } else {
                    req.ready += n;
                }
                if end {
                    req.state = if *then_upgrade {
                        ReqState::Upgrading
                    } else {
                        ReqState::Head
                    };
                }
                return Step::Progress;
            }
            ReqState::Raw if unclassified => {
                req.ready = req.buf.len();
                return Step::Progress;
            }
            ReqState::Upgrading if self.owed.is_empty() => {
                // The server declined to switch: back to requests.
                req.state = ReqState::Head;
                return Step::Progress;
            }
            ReqState::Head if unclassified && flushed => {
                if let Some(step) = self.next_request() {
                    return step;
                }
            }
            _ => {}
        }

        let req = &mut self.req;
        let pending: &[u8] = if req.head_at < req.head.len() {
            &req.head[req.head_at..]
        } else {
            &req.buf[..req.ready]
        };
        if !pending.is_empty() {
            let Some((_, stream)) = &mut self.upstream else {
                return Step::Finished;
            };
            return match write_some(stream, cx, pending) {
                Poll::Ready(Ok(n)) => {
                    if req.head_at < req.head.len() {
                        req.head_at += n;
                        if req.head_at == req.head.len() {
                            req.head.clear();
                            req.head_at = 0;
                        }
                    } else {
                        req.buf.advance(n);
                        req.ready -= n;
                    }
                    Step::Progress
                }
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "writing to the agent failed");
                    Step::Finished
                }
                Poll::Pending => Step::Blocked,
            };
        }
        match req.state {
            ReqState::Head | ReqState::Body(..) | ReqState::Raw => self.read_visitor(cx),
            ReqState::Upgrading | ReqState::Closed => Step::Blocked,
        }
    }

    fn read_visitor(&mut self, cx: &mut Context<'_>) -> Step {
        if matches!(self.req.state, ReqState::Head)
            && self.owed.is_empty()
            && self.head_deadline.is_none()
        {
            self.head_deadline = Some(Instant::now() + HEADER_TIMEOUT);
        }
        match read_some(self.io, cx, &mut self.req.buf) {
            Poll::Ready(Ok(0)) => self.visitor_closed(cx),
            Poll::Ready(Ok(_)) => Step::Progress,
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "reading from the visitor failed");
                Step::Finished
            }
            Poll::Pending => Step::Blocked,
        }
    }

    fn visitor_closed(&mut self, cx: &mut Context<'_>) -> Step {
        match self.req.state {
            // Cut off inside a request: the agent cannot be told where it would have ended.
            ReqState::Body(..) => return Step::Finished,
            ReqState::Head | ReqState::Raw => {
                if let Some((_, stream)) = &mut self.upstream {
                    let _ = Pin::new(stream).poll_shutdown(cx);
                }
            }
            ReqState::Upgrading | ReqState::Closed => {}
        }
        self.req.state = ReqState::Closed;
        self.head_deadline = None;
        Step::Progress
    }

    /// Parses and forwards the next request head; `None` while it is incomplete.
    fn next_request(&mut self) -> Option<Step> {
        let parsed = match parse_request(&self.req.buf) {
            Ok(parsed) => parsed,
            Err(_) if self.forwarded == 0 && self.req.buf.starts_with(H2_PREFACE) => {
                self.h2 = true;
                return Some(Step::Finished);
            }
            Err(page) => return Some(self.answer_locally(&page)),
        };
        let Some(head) = parsed else {
            if self.req.buf.len() >= MAX_HEADER_BYTES {
                return Some(self.answer_locally(&Page::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "ERR_NGROK_3004",
                    format!("The request head is over {MAX_HEADER_BYTES} bytes."),
                )));
            }
            return None;
        };
        let current = self.upstream.as_ref().map(|(t, _)| t);
        let (host, tunnel) =
            match admit_request(self.pop, self.visitor, head.host.as_deref(), current) {
                Ok(admitted) => admitted,
                Err(page) => return Some(self.answer_locally(&page)),
            };
        if !current.is_some_and(|t| Arc::ptr_eq(t, &tunnel)) {
            if !self.owed.is_empty() {
                // Another tunnel: wait until the current stream owes nothing.
                return Some(Step::Blocked);
            }
            // Whatever the old stream sent past its last response is dropped with it.
            self.upstream = None;
            self.resp.buf.truncate(self.resp.ready);
            match open_proxy_stream(&tunnel, self.visitor.addr, self.visitor.local) {
                Ok(stream) => self.upstream = Some((tunnel, stream)),
                Err(error) => return Some(self.answer_locally(&pages::unreachable(&error))),
            }
        }
        let RequestHead {
            len,
            framing,
            head: is_head,
            upgrade,
            connect,
            close,
            mut rewritten,
            ..
        } = head;
        let ip = self.visitor.addr.ip().to_string();
        for part in [
            ip.as_str(),
            "\r\nx-forwarded-proto: ",
            self.visitor.scheme(),
            "\r\nx-forwarded-host: ",
            host.as_str(),
            "\r\n\r\n",
        ] {
            rewritten.extend_from_slice(part.as_bytes());
        }
        self.req.buf.advance(len);
        self.req.head = rewritten;
        self.req.head_at = 0;
        self.req.state = match framing {
            Framing::Length(0) if upgrade => ReqState::Upgrading,
            Framing::Length(0) => ReqState::Head,
            framing => ReqState::Body(framing, upgrade),
        };
        if close {
            // Nothing after this request is read; the connection ends after its response.
            if matches!(self.req.state, ReqState::Head) {
                self.req.state = ReqState::Closed;
            }
        }
        self.owed.push_back(Owed::Agent(OwedAgent {
            head: is_head,
            upgrade,
            connect,
            close,
        }));
        self.forwarded += 1;
        self.head_deadline = None;
        Some(Step::Progress)
    }

    fn step_response(&mut self, cx: &mut Context<'_>) -> Step {
        // As for requests: classify what is buffered, so that a response's head and body go
        // to the visitor in one write; then write; then read.
        let resp = &mut self.resp;
        let unclassified = resp.buf.len() > resp.ready;
        match &mut resp.state {
            RespState::Raw if unclassified => {
                resp.ready = resp.buf.len();
                return Step::Progress;
            }
            RespState::Body(framing, close) if unclassified => {
                let (n, end) = match framing.take(&resp.buf[resp.ready..]) {
                    Ok(taken) => taken,
                    Err(BadFraming) => {
                        tracing::debug!("malformed chunked response body");
                        return Step::Finished;
                    }
                };
                resp.ready += n;
                if end {
                    let close = *close;
                    self.body_ended(close);
                }
                return Step::Progress;
            }
            RespState::Head => match self.owed.front() {
                Some(&Owed::Agent(owed)) if unclassified => {
                    if let Some(step) = self.next_response(owed) {
                        return step;
                    }
                }
                Some(Owed::Local(_)) if resp.ready == 0 => {
                    if let Some(Owed::Local(bytes)) = self.owed.pop_front() {
                        resp.local = bytes;
                        resp.local_at = 0;
                    }
                    resp.state = RespState::Done;
                    return Step::Progress;
                }
                _ => {}
            },
            _ => {}
        }

        let resp = &mut self.resp;
        let (pending, source) = if resp.ready > 0 {
            (&resp.buf[..resp.ready], Source::Buf)
        } else if !resp.direct.is_empty() {
            (&resp.direct[..], Source::Direct)
        } else {
            (&resp.local[resp.local_at..], Source::Local)
        };
        if !pending.is_empty() {
            return match write_some(self.io, cx, pending) {
                Poll::Ready(Ok(n)) => {
                    match source {
                        Source::Buf => {
                            resp.buf.advance(n);
                            resp.ready -= n;
                        }
                        Source::Direct => resp.direct.advance(n),
                        Source::Local => resp.local_at += n,
                    }
                    Step::Progress
                }
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "writing to the visitor failed");
                    Step::Finished
                }
                Poll::Pending => Step::Blocked,
            };
        }
        match resp.state {
            RespState::Done => Step::Finished,
            RespState::Raw | RespState::Body(..) => self.read_agent(cx),
            RespState::Head => match self.owed.front() {
                Some(Owed::Agent(_)) => {
                    if self.resp.buf.len() >= MAX_HEADER_BYTES {
                        tracing::debug!("response head from the agent too large");
                        return self.agent_failed();
                    }
                    self.read_agent(cx)
                }
                Some(Owed::Local(_)) => Step::Progress,
                None if matches!(self.req.state, ReqState::Closed) => Step::Finished,
                None => self.watch_idle_stream(cx),
            },
        }
    }

    /// With nothing owed, the stream should stay quiet; if the agent's side closes it (an
    /// upstream dropping an idle keep-alive connection), the next request gets a new one.
    fn watch_idle_stream(&mut self, cx: &mut Context<'_>) -> Step {
        let Some((_, stream)) = &mut self.upstream else {
            return Step::Blocked;
        };
        match read_some(stream, cx, &mut self.resp.buf) {
            Poll::Pending => Step::Blocked,
            Poll::Ready(result) => {
                if let Ok(n @ 1..) = result {
                    tracing::debug!(bytes = n, "agent sent bytes nobody asked for");
                }
                self.upstream = None;
                self.resp.buf.truncate(self.resp.ready);
                Step::Progress
            }
        }
    }

    /// Parses the head of the response owed next, behind what is ready to go; `None` while
    /// it is incomplete.
    fn next_response(&mut self, owed: OwedAgent) -> Option<Step> {
        let OwedAgent {
            head,
            upgrade,
            connect,
            close,
        } = owed;
        let response = match parse_response(&self.resp.buf[self.resp.ready..]) {
            Ok(Some(response)) => response,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "malformed response from the agent");
                return Some(self.agent_failed());
            }
        };
        self.resp.ready += response.len;
        self.resp.started = true;
        let status = response.status;
        if status == 101 && !upgrade {
            tracing::debug!("agent switched protocols unasked");
            return Some(Step::Finished);
        }
        if status == 101 || (connect && (200..300).contains(&status)) {
            self.owed.pop_front();
            self.resp.state = RespState::Raw;
            self.req.state = ReqState::Raw;
            return Some(Step::Progress);
        }
        if (100..200).contains(&status) {
            // An interim response; the final one follows.
            self.resp.started = false;
            return Some(Step::Progress);
        }
        let close = close || response.close;
        let framing = if head || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            response.framing.unwrap_or(Framing::UntilClose)
        };
        if framing == Framing::Length(0) {
            self.owed.pop_front();
            self.resp.started = false;
            self.resp.state = if close {
                RespState::Done
            } else {
                RespState::Head
            };
        } else {
            let close = close || framing == Framing::UntilClose;
            self.resp.state = RespState::Body(framing, close);
        }
        if close {
            self.req.state = ReqState::Closed;
        }
        Some(Step::Progress)
    }

    /// The agent's side failed: a 502 after what is already on its way when nothing of the
    /// owed response was, else the connection ends.
    fn agent_failed(&mut self) -> Step {
        if self.resp.started {
            return Step::Finished;
        }
        self.owed.clear();
        self.resp.buf.truncate(self.resp.ready);
        self.resp.local = pages::agent_failed().to_http1();
        self.resp.local_at = 0;
        self.resp.state = RespState::Done;
        self.req.state = ReqState::Closed;
        self.upstream = None;
        Step::Progress
    }

    /// The response being forwarded is done; the next one, if any, starts with its head.
    fn body_ended(&mut self, close: bool) {
        self.resp.state = if close {
            RespState::Done
        } else {
            RespState::Head
        };
        self.resp.started = false;
        self.owed.pop_front();
    }

    /// How many body bytes may be taken from the agent's stream as they are: those the body
    /// still has to come when nothing is buffered ahead of them, else none.
    fn direct_room(&self) -> usize {
        if !self.resp.buf.is_empty() {
            return 0;
        }
        match &self.resp.state {
            RespState::Body(Framing::Length(left), _) => {
                usize::try_from(*left).unwrap_or(usize::MAX)
            }
            RespState::Body(Framing::UntilClose, _) | RespState::Raw => usize::MAX,
            // A chunked body's framing is followed in `buf`.
            _ => 0,
        }
    }

    /// Takes body bytes that go to the visitor as they are; returns how many.
    fn take_direct(&mut self, chunk: Bytes) -> usize {
        if let RespState::Body(framing, close) = &mut self.resp.state {
            // Never more than the body's length, so never a framing error.
            if let Ok((_, true)) = framing.take(&chunk) {
                let close = *close;
                self.body_ended(close);
            }
        }
        let n = chunk.len();
        self.resp.direct = chunk;
        n
    }

    fn read_agent(&mut self, cx: &mut Context<'_>) -> Step {
        let room = self.direct_room();
        let Some((_, stream)) = &mut self.upstream else {
            return self.agent_failed();
        };
        let polled = if room > 0 {
            stream
                .poll_chunk(cx, room)
                .map_ok(|chunk| self.take_direct(chunk))
        } else {
            read_some(stream, cx, &mut self.resp.buf)
        };
        match polled {
            Poll::Ready(Ok(1..)) => Step::Progress,
            Poll::Ready(Ok(_)) => match self.resp.state {
                RespState::Body(Framing::UntilClose, _) | RespState::Raw => {
                    self.owed.pop_front();
                    self.resp.state = RespState::Done;
                    Step::Progress
                }
                RespState::Body(..) => Step::Finished,
                _ => self.agent_failed(),
            },
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "reading from the agent failed");
                match self.resp.state {
                    RespState::Head => self.agent_failed(),
                    _ => Step::Finished,
                }
            }
            Poll::Pending => Step::Blocked,
        }
    }
}

/// Runs the relay's parsers over `data`, as a visitor's request stream and as an agent's
/// response stream, the way the relay walks them: head, body, next head. They must never
/// panic nor claim bytes they were not given. For the fuzz target and the tests.
pub(crate) fn walk_messages(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some(head)) = parse_request(rest) {
        assert!(head.len <= rest.len() && head.len > 0);
        rest = &rest[head.len..];
        let mut framing = head.framing;
        match framing.take(rest) {
            Ok((n, _)) => rest = &rest[n..],
            Err(BadFraming) => break,
        }
    }
    let mut rest = data;
    while let Ok(Some(head)) = parse_response(rest) {
        assert!(head.len <= rest.len() && head.len > 0);
        rest = &rest[head.len..];
        let Some(mut framing) = head.framing else {
            break;
        };
        match framing.take(rest) {
            Ok((n, _)) => rest = &rest[n..],
            Err(BadFraming) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked_end(input: &[u8]) -> Result<(usize, bool), BadFraming> {
        Chunked::default().take(input)
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        assert_eq!(chunked_end(body), Ok((end, true)));
        assert_eq!(chunked_end(b"0\r\n\r\n"), Ok((5, true)));
        // Byte by byte, the same place.
        let mut c = Chunked::default();
        let mut seen = 0;
        for (i, b) in body.iter().enumerate() {
            let (n, done) = c.take(std::slice::from_ref(b)).unwrap();
            seen += n;
            if done {
                assert_eq!(i + 1, end);
                break;
            }
        }
        assert_eq!(seen, end);
    }

    #[test]
    fn chunked_framing_refuses_what_could_smuggle() {
        for bad in [
            &b"4\nWiki\r\n0\r\n\r\n"[..],
            b"4\r\nWikiX\r\n",
            b"\r\n",
            b"g\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert_eq!(
                chunked_end(bad),
                Err(BadFraming),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE + 1]].concat();
        assert_eq!(chunked_end(&long_ext), Err(BadFraming));
    }

    #[test]
    fn requests_are_rewritten_for_the_agent() {
        let raw = b"GET http://App.Example.test:80/a?b HTTP/1.1\r\nHost: other\r\n\
                    X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: gopher\r\n\
                    Accept: */*\r\n\r\nrest";
        let head = parse_request(raw).unwrap().unwrap();
        assert_eq!(head.len, raw.len() - 4);
        assert_eq!(head.host.as_deref(), Some("App.Example.test:80"));
        let text = String::from_utf8(head.rewritten).unwrap();
        assert_eq!(
            text,
            "GET /a?b HTTP/1.1\r\nhost: App.Example.test:80\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, "
        );
        assert_eq!(head.framing, Framing::Length(0));
        assert!(!head.close && !head.upgrade && !head.head);
    }

    #[test]
    fn request_framing_and_connection_handling() {
        let head = |raw: &str| parse_request(raw.as_bytes());
        let ok = |raw: &str| head(raw).unwrap().unwrap();
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert!(matches!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked(_)
        ));
        assert!(ok("GET / HTTP/1.0\r\nHost: a\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").close);
        assert!(
            ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                .upgrade
        );
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").upgrade);
        assert!(ok("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").head);
        assert!(head("GET / HTTP/1.1\r\nHost: a").unwrap().is_none());
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let page = head(bad).unwrap_err();
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let page = head(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).unwrap_err();
        assert_eq!(page.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn response_framing() {
        let resp = |raw: &str| parse_response(raw.as_bytes()).unwrap().unwrap();
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            (r.status, r.framing, r.close),
            (200, Some(Framing::Length(2)), false)
        );
        let r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(r.framing, Some(Framing::Chunked(_))));
        let r = resp("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((r.framing, r.close), (None, true));
        let r = resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close);
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn mangled_messages_never_panic() {
        let real: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                            4\r\nWiki\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut seed = 0x9e37_79b9_u64;
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = real.to_vec();
            for k in 0..1 + (seed % 4) as usize {
                let i = (seed as usize).wrapping_add(k * 7919) % bytes.len();
                bytes[i] = (seed >> (8 * k)) as u8;
            }
            bytes.truncate(round % (real.len() + 1));
            walk_messages(&bytes);
            walk_messages(&bytes[bytes.len() / 2..]);
        }
    }
}
