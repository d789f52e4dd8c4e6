//! Write coalescing for the agent's side of a muxado connection, used by `meridian agent`.
//! The `ngrok` crate's muxado writer sends every frame with a write and a flush of its own,
//! and a window update after every read, so under load each request cost two TLS records and
//! two system calls, and with Nagle's algorithm on, the second waited for the edge's ACK.
//!
//! [`Coalesced`] takes the frames into a buffer and leaves the writing to a flusher task, so
//! the frames of one pass of the scheduler go out as one TLS write. Window updates alone are
//! held back until other frames go out or [`GRANT_RELEASE`] bytes of grants have gathered:
//! the peer's 256 KiB window can only run dry once a full window is consumed and ungranted,
//! and a held grant never covers more than a quarter of one, so holding never stalls a
//! stream. A response then carries the grant for its request in the same write.
//!
//! A flush that returns `Ready` only means that the flusher has the bytes; they go out as soon
//! as it runs. Writers wait once [`BUFFER_LIMIT`] bytes are pending, so memory stays bounded
//! when the peer reads slowly.

use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frame::{HEADER_LEN, TYPE_WNDINC};
use crate::session::{lock, wake};

/// Bytes that may wait for the flusher before writers are made to wait too. A quarter of a
/// megabyte covers one full window of a stream, so a bulk transfer never waits on it for
/// long.
pub const BUFFER_LIMIT: usize = 256 * 1024;
/// Writes at least this large skip the buffer when nothing is pending: they gain nothing from
/// company and would only be copied once more.
const DIRECT_WRITE: usize = 16 * 1024;
/// Grants held back at most, summed over every stream: a quarter of a stream's window.
pub const GRANT_RELEASE: u64 = crate::WINDOW_SIZE as u64 / 4;

/// A byte stream whose writes are gathered and written by a flusher task.
#[derive(Debug)]
pub struct Coalesced<T> {
    shared: Arc<Mutex<State<T>>>,
}

#[derive(Debug)]
struct State<T> {
    io: T,
    /// Written by the application, not yet handed to `io`.
    pending: Vec<u8>,
    /// Where the frames written so far begin and end.
    scan: Scanner,
    /// Whether `pending` holds only whole window updates, and how much they grant.
    only_grants: bool,
    granted: u64,
    /// Why writing failed; every later write reports it.
    failed: Option<io::ErrorKind>,
    /// The flusher, parked until there is something to write.
    flusher: Option<Waker>,
    /// An application writer waiting for room in `pending`.
    writer: Option<Waker>,
    /// The application side is gone; the flusher writes what is left and stops.
    dropped: bool,
    /// A write went straight to `io`, which may have kept part of it buffered.
    unflushed: bool,
    /// The application is shutting down: everything pending goes out, held grants too.
    closing: bool,
}

impl<T> Coalesced<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps `io` and starts its flusher on the current Tokio runtime.
    pub fn new(io: T) -> Self {
        let shared = Arc::new(Mutex::new(State {
            io,
            pending: Vec::with_capacity(16 * 1024),
            scan: Scanner::default(),
            only_grants: true,
            granted: 0,
            failed: None,
            flusher: None,
            writer: None,
            dropped: false,
            unflushed: false,
            closing: false,
        }));
        tokio::spawn(flusher(shared.clone()));
        Self { shared }
    }
}

/// The flusher task: parks until there is something worth writing, lets the other ready
/// tasks run, then writes everything pending. Ends when the application side is dropped and
/// nothing is left, or when writing fails.
async fn flusher<T: AsyncWrite + Unpin>(shared: Arc<Mutex<State<T>>>) {
    loop {
        if std::future::poll_fn(|cx| wait_for_work(&shared, cx))
            .await
            .is_break()
        {
            return;
        }
        // Tokio runs a task woken by the running one next, so without this the flusher would
        // write each frame the moment the SDK's writer hands it over: a TLS record and a
        // system call per response. Yielding lets every task that is ready (the other
        // proxied connections whose upstream answered) add its frames to this write first.
        tokio::task::yield_now().await;
        if std::future::poll_fn(|cx| flush(&shared, cx))
            .await
            .is_break()
        {
            return;
        }
    }
}

/// Ready when there is work worth a turn: `pending` holds a frame that is not a window
/// update, or grants that add up to [`GRANT_RELEASE`], or anything at all once the application
/// is shutting down or gone; or a direct write left `io` to flush. `Break` once nothing more
/// will ever be written.
fn wait_for_work<T>(shared: &Mutex<State<T>>, cx: &mut Context<'_>) -> Poll<ControlFlow<()>> {
    let mut st = lock(shared);
    if st.failed.is_some() || (st.dropped && st.pending.is_empty()) {
        return Poll::Ready(ControlFlow::Break(()));
    }
    let worth = !st.only_grants || st.granted >= GRANT_RELEASE || st.dropped || st.closing;
    if (!st.pending.is_empty() && worth) || st.unflushed {
        return Poll::Ready(ControlFlow::Continue(()));
    }
    // Nothing yet, or only small grants: they leave with the next frame that is not one.
    st.flusher = Some(cx.waker().clone());
    Poll::Pending
}

/// Writes everything pending and flushes `io`; `Break` when writing failed.
fn flush<T: AsyncWrite + Unpin>(
    shared: &Mutex<State<T>>,
    cx: &mut Context<'_>,
) -> Poll<ControlFlow<()>> {
    let mut st = lock(shared);
    let st = &mut *st;
    let mut written = 0;
    let mut result = Ok(());
    while written < st.pending.len() {
        match Pin::new(&mut st.io).poll_write(cx, &st.pending[written..]) {
            Poll::Ready(Ok(0)) => {
                result = Err(io::ErrorKind::WriteZero);
                break;
            }
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => {
                result = Err(e.kind());
                break;
            }
            Poll::Pending => break,
        }
    }
    st.pending.drain(..written);
    if st.pending.is_empty() {
        st.only_grants = true;
        st.granted = 0;
    }
    if written > 0 || result.is_err() {
        wake(&mut st.writer);
    }
    if result.is_ok() && st.pending.is_empty() {
        st.unflushed = false;
        match Pin::new(&mut st.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // A shutdown waits for this.
                wake(&mut st.writer);
                return Poll::Ready(ControlFlow::Continue(()));
            }
            Poll::Ready(Err(e)) => result = Err(e.kind()),
            Poll::Pending => {
                st.flusher = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    }
    if let Err(kind) = result {
        st.failed = Some(kind);
        return Poll::Ready(ControlFlow::Break(()));
    }
    // `io` returned Pending above and holds this task's waker, until a direct write polls it
    // with another; that write then wakes this task through `flusher`.
    st.flusher = Some(cx.waker().clone());
    Poll::Pending
}

/// Follows frame boundaries through the bytes written, to tell window updates from the rest.
/// It only reads lengths and types; the bytes pass through unchanged.
#[derive(Debug, Default)]
struct Scanner {
    /// The start of a frame, gathered until its header (and, for a window update, its
    /// increment) is whole.
    head: [u8; WNDINC_LEN],
    head_len: usize,
    /// Body bytes of the current frame still to come.
    body_left: usize,
}

/// A window update: the header and a 4-byte increment.
const WNDINC_LEN: usize = HEADER_LEN + 4;

impl Scanner {
    /// Takes the next bytes of the stream. Returns the sum of the increments when they were
    /// whole window updates only, `None` when anything else was among them.
    fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        let mut granted = Some(0u64);
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                granted = None;
                continue;
            }
            let want = if self.head_len < HEADER_LEN {
                HEADER_LEN
            } else {
                WNDINC_LEN
            };
            let n = (want - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len < HEADER_LEN {
                // A header split across writes: not a whole update in this write.
                granted = None;
                continue;
            }
            let word = u32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
            let length = (word >> 8) as usize;
            let is_grant = (word >> 4) & 0xF == u32::from(TYPE_WNDINC) && length == 4;
            if !is_grant {
                self.body_left = length;
                self.head_len = 0;
                granted = None;
            } else if self.head_len < WNDINC_LEN {
                if data.is_empty() {
                    // The increment comes in a later write.
                    granted = None;
                }
            } else {
                let tail = &self.head[HEADER_LEN..];
                let increment = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
                granted = granted.map(|g| g + u64::from(increment));
                self.head_len = 0;
            }
        }
        granted
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.shared).io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.shared);
        if let Some(kind) = st.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if st.pending.is_empty() && data.len() >= DIRECT_WRITE {
            // Bulk data with nothing ahead of it: straight to `io`, saving a copy. The
            // flusher is woken to flush whatever `io` buffered.
            let st = &mut *st;
            match Pin::new(&mut st.io).poll_write(cx, data) {
                Poll::Ready(Ok(n)) => {
                    // Nothing is pending, so only the frame boundaries need following.
                    let _ = st.scan.feed(&data[..n]);
                    st.unflushed = true;
                    wake(&mut st.flusher);
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Err(e)) => {
                    st.failed = Some(e.kind());
                    return Poll::Ready(Err(e));
                }
                // The socket is full: buffer it like the rest. `io` now holds this
                // writer's waker instead of the flusher's, so the flusher is woken to poll
                // `io` again.
                Poll::Pending => wake(&mut st.flusher),
            }
        }
        let room = BUFFER_LIMIT.saturating_sub(st.pending.len());
        if room == 0 {
            st.writer = Some(cx.waker().clone());
            wake(&mut st.flusher);
            return Poll::Pending;
        }
        let n = data.len().min(room);
        st.pending.extend_from_slice(&data[..n]);
        match st.scan.feed(&data[..n]) {
            Some(granted) => st.granted += granted,
            None => st.only_grants = false,
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        if let Some(kind) = st.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if !st.only_grants || st.granted >= GRANT_RELEASE {
            wake(&mut st.flusher);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        let st = &mut *st;
        if let Some(kind) = st.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if !st.pending.is_empty() || st.unflushed {
            // The flusher writes what is left, held grants included, and wakes this task as
            // it goes. Writing from here as well would leave `io` with only one of the two
            // tasks' wakers.
            st.closing = true;
            st.writer = Some(cx.waker().clone());
            wake(&mut st.flusher);
            return Poll::Pending;
        }
        Pin::new(&mut st.io).poll_shutdown(cx)
    }
}

impl<T> Drop for Coalesced<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.dropped = true;
        wake(&mut st.flusher);
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::frame::{self, Frame};

    fn wire(frame: Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out.to_vec()
    }

    fn data(stream: u32, payload: &'static [u8]) -> Vec<u8> {
        wire(Frame::Data {
            stream,
            flags: 0,
            payload: Bytes::from_static(payload),
        })
    }

    fn grant(stream: u32, increment: u32) -> Vec<u8> {
        wire(Frame::WndInc { stream, increment })
    }

    /// Each write that reached the peer, in order.
    type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A peer that records each write that reaches it.
    struct Recording {
        writes: Writes,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            lock(&self.writes).push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn recording() -> (Coalesced<Recording>, Writes) {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let io = Coalesced::new(Recording {
            writes: writes.clone(),
        });
        (io, writes)
    }

    /// Lets the flusher take its turn: woken by a flush, it yields once so that other ready
    /// tasks can add to its write, then writes.
    async fn flusher_turn() {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }

    /// Writes and flushes each frame, as the SDK's muxado writer does.
    async fn send(io: &mut Coalesced<Recording>, frames: &[Vec<u8>]) {
        for f in frames {
            io.write_all(f).await.unwrap();
            io.flush().await.unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_of_one_turn_leave_in_one_write() {
        let (mut io, writes) = recording();
        let frames = [data(3, b"one"), data(5, b"two"), data(7, b"three")];
        send(&mut io, &frames).await;
        assert!(
            lock(&writes).is_empty(),
            "nothing is written before the flusher runs"
        );
        flusher_turn().await;
        assert_eq!(*lock(&writes), vec![frames.concat()]);

        send(&mut io, &[data(3, b"four")]).await;
        flusher_turn().await;
        assert_eq!(lock(&writes).len(), 2);
        assert_eq!(lock(&writes)[1], data(3, b"four"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn small_grants_wait_for_the_next_frame_and_keep_their_place() {
        let (mut io, writes) = recording();
        send(&mut io, &[grant(2, 120), grant(4, 300)]).await;
        flusher_turn().await;
        assert!(lock(&writes).is_empty(), "small grants alone were written");

        send(&mut io, &[data(3, b"response")]).await;
        flusher_turn().await;
        let expected = [grant(2, 120), grant(4, 300), data(3, b"response")].concat();
        assert_eq!(*lock(&writes), vec![expected]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn grants_go_out_alone_once_they_add_up_to_a_quarter_window() {
        let (mut io, writes) = recording();
        let step = 16 * 1024;
        let frames: Vec<Vec<u8>> = (0..GRANT_RELEASE / u64::from(step))
            .map(|_| grant(2, step))
            .collect();
        send(&mut io, &frames[..frames.len() - 1]).await;
        flusher_turn().await;
        assert!(lock(&writes).is_empty(), "released below the threshold");
        send(&mut io, &frames[frames.len() - 1..]).await;
        flusher_turn().await;
        assert_eq!(*lock(&writes), vec![frames.concat()]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn held_grants_are_written_on_shutdown() {
        let (mut io, writes) = recording();
        send(&mut io, &[grant(2, 10)]).await;
        io.shutdown().await.unwrap();
        assert_eq!(lock(&writes).concat(), grant(2, 10));
    }

    #[test]
    fn the_scanner_follows_frames_split_anywhere() {
        let stream = [grant(2, 7), data(3, b"hello"), grant(4, 9), grant(6, 1)].concat();
        // Whole frames, one write each.
        let mut scan = Scanner::default();
        assert_eq!(scan.feed(&grant(2, 7)), Some(7));
        assert_eq!(scan.feed(&data(3, b"hello")), None);
        assert_eq!(scan.feed(&[grant(4, 9), grant(6, 1)].concat()), Some(10));
        // The same bytes cut at every point: a cut grant is never counted as whole, and the
        // scanner is back on frame boundaries afterwards.
        for cut in 0..stream.len() {
            let mut scan = Scanner::default();
            let _ = scan.feed(&stream[..cut]);
            let _ = scan.feed(&stream[cut..]);
            assert_eq!(scan.head_len, 0, "cut at {cut}");
            assert_eq!(scan.body_left, 0, "cut at {cut}");
            assert_eq!(scan.feed(&grant(8, 5)), Some(5), "cut at {cut}");
        }
        // An RST has the same length as a grant but is not one.
        let rst = wire(Frame::Rst {
            stream: 2,
            code: frame::ErrorCode::StreamCancelled,
        });
        assert_eq!(Scanner::default().feed(&rst), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bulk_writes_skip_the_buffer_only_when_nothing_is_ahead() {
        let (mut io, writes) = recording();
        let big = wire(Frame::Data {
            stream: 3,
            flags: 0,
            payload: Bytes::from(vec![7u8; DIRECT_WRITE]),
        });
        send(&mut io, std::slice::from_ref(&big)).await;
        assert_eq!(*lock(&writes), vec![big.clone()], "written at once");

        // Behind a held grant, the same write waits its turn and both leave together.
        send(&mut io, &[grant(2, 10), big.clone()]).await;
        assert_eq!(lock(&writes).len(), 1);
        flusher_turn().await;
        assert_eq!(lock(&writes)[1], [grant(2, 10), big].concat());
    }

    #[tokio::test]
    async fn bulk_data_arrives_whole_and_in_order() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = Coalesced::new(near);
        let bytes: Vec<u8> = (0..3 * BUFFER_LIMIT).map(|i| (i * 7 % 251) as u8).collect();
        let expected = bytes.clone();
        let writer = tokio::spawn(async move {
            // Small writes that are buffered and large ones that may go straight through.
            let mut rest = &bytes[..];
            for size in [1000, 40_000].into_iter().cycle() {
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                io.write_all(chunk).await.unwrap();
                io.flush().await.unwrap();
                rest = tail;
                if rest.is_empty() {
                    break;
                }
            }
            io.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes changed or reordered");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_vanished_peer_fails_later_writes() {
        let (near, far) = tokio::io::duplex(64);
        drop(far);
        let mut io = Coalesced::new(near);
        io.write_all(&data(3, b"hello")).await.unwrap();
        io.flush().await.unwrap();
        // The flusher's turn finds the peer gone.
        flusher_turn().await;
        let err = io.write_all(&data(3, b"again")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
