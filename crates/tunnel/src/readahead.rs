//! Large reads under a TLS layer. rustls asks the socket for at most 4 KiB per read, so a
//! megabyte through an agent connection cost 256 system calls (and, on the edge, as many
//! quick-ACK requests). [`ReadAhead`] notices bulk data, a read that fills the caller's whole
//! buffer, and from then on reads up to [`READ_AHEAD`] bytes at once and serves the small
//! reads from memory. It drops back to direct reads, and frees the buffer, once a read comes
//! back short, so an idle connection (there may be thousands) holds no buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read from the socket takes while data is arriving in bulk: four TLS records.
pub const READ_AHEAD: usize = 64 * 1024;
/// A read ahead that returns less than this means the burst is over.
const SHORT_READ: usize = 16 * 1024;

/// A byte stream whose reads are batched while data arrives in bulk. Writes pass through.
#[derive(Debug)]
pub struct ReadAhead<T> {
    io: T,
    /// [`READ_AHEAD`] bytes while reading ahead, of which `ahead[pos..end]` are read from
    /// `io` and not yet handed out; empty, without capacity, while reads go straight through.
    ahead: Vec<u8>,
    pos: usize,
    end: usize,
    /// Whether the last read suggests more is waiting.
    bulk: bool,
}

impl<T> ReadAhead<T> {
    /// Wraps `io`; the first reads go straight through.
    pub fn new(io: T) -> Self {
        Self {
            io,
            ahead: Vec::new(),
            pos: 0,
            end: 0,
            bulk: false,
        }
    }

    /// Copies buffered bytes into `buf`; true when there were any.
    fn serve(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.pos == self.end {
            return false;
        }
        let n = (self.end - self.pos).min(buf.remaining());
        buf.put_slice(&self.ahead[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            if !self.bulk {
                self.ahead = Vec::new();
            }
        }
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 || this.serve(buf) {
            return Poll::Ready(Ok(()));
        }
        if !this.bulk || buf.remaining() >= READ_AHEAD {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            // A read that filled the whole buffer probably left more behind.
            this.bulk = buf.remaining() == 0 && buf.filled().len() > before;
            return Poll::Ready(Ok(()));
        }
        if this.ahead.is_empty() {
            this.ahead = vec![0; READ_AHEAD];
        }
        let mut ahead = ReadBuf::new(&mut this.ahead);
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut ahead))?;
        let got = ahead.filled().len();
        this.end = got;
        this.bulk = got >= SHORT_READ;
        if got == 0 {
            // End of stream: nothing is served, which is how the caller sees it.
            this.ahead = Vec::new();
        } else {
            this.serve(buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads `total` bytes in `chunk`-byte reads, as rustls does.
    async fn read_in_chunks<R: AsyncRead + Unpin>(
        rd: &mut R,
        total: usize,
        chunk: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        while out.len() < total {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end of stream after {} bytes", out.len());
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test]
    async fn bulk_data_arrives_whole_and_in_order_through_small_reads() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).await.unwrap();
        let mut rd = ReadAhead::new(rx);
        let got = read_in_chunks(&mut rd, data.len(), 4096).await;
        assert_eq!(got, data);
        // Everything was written before the first read, so reads went ahead after the first.
        assert!(rd.bulk);
    }

    #[tokio::test]
    async fn small_messages_go_straight_through_and_hold_no_buffer() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut rd = ReadAhead::new(rx);
        for round in 0..10u8 {
            tx.write_all(&[round; 100]).await.unwrap();
            let got = read_in_chunks(&mut rd, 100, 4096).await;
            assert_eq!(got, vec![round; 100]);
            assert!(!rd.bulk);
            assert_eq!(rd.ahead.capacity(), 0, "round {round} kept a buffer");
        }
    }

    #[tokio::test]
    async fn a_burst_followed_by_quiet_frees_the_buffer() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut rd = ReadAhead::new(rx);
        tx.write_all(&vec![7u8; 200_000]).await.unwrap();
        assert_eq!(
            read_in_chunks(&mut rd, 200_000, 4096).await,
            vec![7u8; 200_000]
        );
        tx.write_all(b"ping").await.unwrap();
        assert_eq!(read_in_chunks(&mut rd, 4, 4096).await, b"ping");
        assert!(!rd.bulk);
        assert_eq!(rd.ahead.capacity(), 0);
    }

    #[tokio::test]
    async fn end_of_stream_is_reported_after_the_buffered_bytes() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tx.write_all(&vec![1u8; 100_000]).await.unwrap();
        drop(tx);
        let mut rd = ReadAhead::new(rx);
        let mut all = Vec::new();
        rd.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 100_000);
        let mut buf = [0u8; 16];
        assert_eq!(rd.read(&mut buf).await.unwrap(), 0);
    }
}
