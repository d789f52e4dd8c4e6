//! Reading a TLS ClientHello before deciding anything: its SNI says which domain the visitor
//! wants, so a PoP outside the domain's pinning refuses before any handshake work, and a
//! passthrough endpoint gets the untouched bytes. The bytes read are kept and replayed
//! ([`Prefixed`]) to whichever handler takes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Most bytes read while looking for a complete ClientHello. Real ones, post-quantum key
/// shares included, are under 2 KiB; a handshake message may span records, so allow a few.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// A fatal `unrecognized_name` alert, sent to refuse a handshake for a name not served here.
pub const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// What the first bytes of a connection said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello, with its server name if it sent one.
    Tls(Option<String>),
    /// Not a TLS handshake.
    NotTls,
}

/// Reads until a ClientHello is complete (or clearly absent) and returns what was read.
pub async fn read_client_hello<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<(Vec<u8>, Hello)> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        match parse(&buf) {
            Parse::Done(hello) => return Ok((buf, hello)),
            Parse::NeedMore if buf.len() >= MAX_CLIENT_HELLO => return Ok((buf, Hello::NotTls)),
            Parse::NeedMore => {}
        }
        let mut chunk = [0u8; 2048];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Parse {
    Done(Hello),
    NeedMore,
}

/// Parses the bytes read so far: `Some` once they hold a whole ClientHello or are clearly not
/// one, `None` while more are needed. The synchronous core of [`read_client_hello`], for the
/// fuzz target.
pub fn parse_client_hello(buf: &[u8]) -> Option<Hello> {
    match parse(buf) {
        Parse::Done(hello) => Some(hello),
        Parse::NeedMore => None,
    }
}

/// Gathers the handshake bytes out of as many records as are complete, then parses them.
fn parse(buf: &[u8]) -> Parse {
    let mut handshake = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 5 {
        if buf[at] != 0x16 || buf[at + 1] != 0x03 {
            return Parse::Done(Hello::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([buf[at + 3], buf[at + 4]]));
        if buf.len() < at + 5 + len {
            break;
        }
        handshake.extend_from_slice(&buf[at + 5..at + 5 + len]);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Parse::Done(Hello::NotTls);
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + body_len {
                return Parse::Done(Hello::Tls(server_name(&handshake[4..4 + body_len])));
            }
        }
    }
    if !buf.is_empty() && buf[0] != 0x16 {
        return Parse::Done(Hello::NotTls);
    }
    Parse::NeedMore
}

/// A cursor that returns `None` instead of panicking when the input runs short.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// The `server_name` extension of a ClientHello body.
fn server_name(body: &[u8]) -> Option<String> {
    let mut c = Cursor(body);
    c.take(2 + 32)?; // legacy version, random
    let session_id = c.u8()?;
    c.take(session_id)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let compression = c.u8()?;
    c.take(compression)?;
    let ext_len = c.u16()?;
    let mut ext = Cursor(c.take(ext_len)?);
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let len = ext.u16()?;
        let data = ext.take(len)?;
        if ty == 0 {
            let mut names = Cursor(data);
            let list = names.u16()?;
            let mut list = Cursor(names.take(list)?);
            while !list.0.is_empty() {
                let name_type = list.u8()?;
                let name_len = list.u16()?;
                let name = list.take(name_len)?;
                if name_type == 0 {
                    return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                }
            }
        }
    }
    None
}

/// A connection whose first bytes were already read: they are returned again first.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, captured by driving a real client config.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn finds_the_server_name_in_a_real_client_hello() {
        let bytes = client_hello("App.Example.com");
        let (read, hello) = read_client_hello(&mut &bytes[..]).await.unwrap();
        assert_eq!(hello, Hello::Tls(Some("app.example.com".into())));
        assert_eq!(read, bytes, "everything read is kept for replay");
        // Split across reads one byte at a time, it still parses.
        for cut in [1, 5, 6, 40, bytes.len() - 1] {
            assert!(matches!(parse(&bytes[..cut]), Parse::NeedMore), "cut {cut}");
        }
    }

    #[tokio::test]
    async fn plain_http_and_ip_hellos() {
        let (_, hello) = read_client_hello(&mut &b"GET / HTTP/1.1\r\n\r\n"[..])
            .await
            .unwrap();
        assert_eq!(hello, Hello::NotTls);
        let bytes = client_hello("127.0.0.1");
        let (_, hello) = read_client_hello(&mut &bytes[..]).await.unwrap();
        assert_eq!(hello, Hello::Tls(None), "IP literals carry no SNI");
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let real = client_hello("a.example.com");
        let mut seed = 0x2545_f491_u64;
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = real.clone();
            let flips = 1 + (seed % 4) as usize;
            for k in 0..flips {
                let i = (seed as usize).wrapping_add(k * 7919) % bytes.len();
                bytes[i] = (seed >> (8 * k)) as u8;
            }
            bytes.truncate(round % (real.len() + 1));
            let _ = parse(&bytes);
        }
    }
}
