//! muxado frames: an 8-byte header (24-bit length, 4-bit type, 4-bit flags, 31-bit stream id,
//! all big-endian) and a body. Decoding is incremental, never trusts a length it has not
//! bounded, and refuses anything the protocol does not define.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body this side accepts in one frame. The wire allows 16 MiB; a DATA frame larger
/// than the whole stream window could never be legal, and no other frame needs more.
pub const MAX_FRAME_BODY: usize = crate::WINDOW_SIZE as usize;
/// Largest GOAWAY debug message kept (the rest of a longer one is still bounded by
/// [`MAX_FRAME_BODY`] and dropped).
pub const MAX_GOAWAY_MESSAGE: usize = 1024;
/// The highest stream id; the top bit of the field is reserved.
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

const TYPE_RST: u8 = 0;
const TYPE_DATA: u8 = 1;
pub(crate) const TYPE_WNDINC: u8 = 2;
const TYPE_GOAWAY: u8 = 3;
/// Low-nibble flag: the sender will write no more on this stream.
pub const FLAG_FIN: u8 = 0x1;
/// Low-nibble flag: the frame opens a new stream.
pub const FLAG_SYN: u8 = 0x2;

/// muxado's error codes, carried by RST and GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No error.
    None,
    /// The peer broke the protocol.
    Protocol,
    /// Something failed inside this side.
    Internal,
    /// The peer sent more than its window.
    FlowControl,
    /// Data arrived for a closed stream.
    StreamClosed,
    /// Too many streams.
    StreamRefused,
    /// The stream was abandoned.
    StreamCancelled,
    /// The stream was reset.
    StreamReset,
    /// A frame was too large.
    FrameSize,
    /// New streams arrive faster than they are accepted.
    AcceptQueueFull,
    /// Slow down.
    EnhanceYourCalm,
    /// The remote went away.
    RemoteGoneAway,
    /// No stream ids left.
    StreamsExhausted,
    /// A write timed out.
    WriteTimeout,
    /// The session is closed.
    SessionClosed,
    /// The peer closed the connection.
    PeerEof,
    /// A code this implementation does not know.
    Unknown(u32),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Protocol => 1,
            Self::Internal => 2,
            Self::FlowControl => 3,
            Self::StreamClosed => 4,
            Self::StreamRefused => 5,
            Self::StreamCancelled => 6,
            Self::StreamReset => 7,
            Self::FrameSize => 8,
            Self::AcceptQueueFull => 9,
            Self::EnhanceYourCalm => 10,
            Self::RemoteGoneAway => 11,
            Self::StreamsExhausted => 12,
            Self::WriteTimeout => 13,
            Self::SessionClosed => 14,
            Self::PeerEof => 15,
            Self::Unknown(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        const KNOWN: [ErrorCode; 16] = [
            ErrorCode::None,
            ErrorCode::Protocol,
            ErrorCode::Internal,
            ErrorCode::FlowControl,
            ErrorCode::StreamClosed,
            ErrorCode::StreamRefused,
            ErrorCode::StreamCancelled,
            ErrorCode::StreamReset,
            ErrorCode::FrameSize,
            ErrorCode::AcceptQueueFull,
            ErrorCode::EnhanceYourCalm,
            ErrorCode::RemoteGoneAway,
            ErrorCode::StreamsExhausted,
            ErrorCode::WriteTimeout,
            ErrorCode::SessionClosed,
            ErrorCode::PeerEof,
        ];
        KNOWN.get(v as usize).copied().unwrap_or(Self::Unknown(v))
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Aborts one stream.
    Rst {
        /// The stream.
        stream: u32,
        /// Why.
        code: ErrorCode,
    },
    /// Stream data, possibly opening (SYN) or half-closing (FIN) the stream.
    Data {
        /// The stream.
        stream: u32,
        /// [`FLAG_SYN`] and [`FLAG_FIN`] bits.
        flags: u8,
        /// The bytes.
        payload: Bytes,
    },
    /// Lets the peer send `increment` more bytes on a stream.
    WndInc {
        /// The stream.
        stream: u32,
        /// Bytes granted, at most 2^31 - 1.
        increment: u32,
    },
    /// The session is ending.
    GoAway {
        /// The last stream id the sender processed.
        last_stream: u32,
        /// Why.
        code: ErrorCode,
        /// Free text, truncated to [`MAX_GOAWAY_MESSAGE`].
        message: Bytes,
    },
}

/// Why the byte stream is not valid muxado. Every one of these ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A body longer than [`MAX_FRAME_BODY`].
    #[error("frame body of {0} bytes exceeds the {MAX_FRAME_BODY}-byte limit")]
    TooLarge(usize),
    /// A type nibble muxado does not define.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A body of the wrong length for its type.
    #[error("{kind} frame with a {len}-byte body")]
    BadLength {
        /// The frame type.
        kind: &'static str,
        /// Its body length.
        len: usize,
    },
    /// Stream id 0 where a stream is required, or non-zero on GOAWAY.
    #[error("{kind} frame on stream {stream}")]
    BadStream {
        /// The frame type.
        kind: &'static str,
        /// The id.
        stream: u32,
    },
    /// A window increment of zero or beyond 2^31 - 1.
    #[error("window increment {0} out of range")]
    BadIncrement(u32),
}

/// A frame header, checked as far as it can be without the body.
struct Head {
    len: usize,
    ty: u8,
    flags: u8,
    stream: u32,
}

/// Reads the header at the front of `buf`, if it is all there.
fn head(buf: &[u8]) -> Result<Option<Head>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = (word >> 8) as usize;
    let ty = ((word >> 4) & 0xF) as u8;
    // Checked before waiting for the body, so a hostile length cannot make us buffer 16 MiB.
    if len > MAX_FRAME_BODY {
        return Err(FrameError::TooLarge(len));
    }
    if ty > TYPE_GOAWAY {
        return Err(FrameError::UnknownType(ty));
    }
    Ok(Some(Head {
        len,
        ty,
        flags: (word & 0xF) as u8,
        stream: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) & MAX_STREAM_ID,
    }))
}

/// Takes one whole frame off the front of `buf`, or returns `None` when more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(Head {
        len,
        ty,
        flags,
        stream,
    }) = head(buf)?
    else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let mut body = buf.split_to(len).freeze();
    let need_stream = |kind| {
        if stream == 0 {
            Err(FrameError::BadStream { kind, stream })
        } else {
            Ok(())
        }
    };
    let frame = match ty {
        TYPE_RST => {
            need_stream("RST")?;
            if len != 4 {
                return Err(FrameError::BadLength { kind: "RST", len });
            }
            Frame::Rst {
                stream,
                code: ErrorCode::from_u32(body.get_u32()),
            }
        }
        TYPE_DATA => {
            need_stream("DATA")?;
            Frame::Data {
                stream,
                flags: flags & (FLAG_FIN | FLAG_SYN),
                payload: body,
            }
        }
        TYPE_WNDINC => {
            need_stream("WNDINC")?;
            if len != 4 {
                return Err(FrameError::BadLength {
                    kind: "WNDINC",
                    len,
                });
            }
            let increment = body.get_u32();
            if increment == 0 || increment > MAX_STREAM_ID {
                return Err(FrameError::BadIncrement(increment));
            }
            Frame::WndInc { stream, increment }
        }
        _ => {
            if stream != 0 {
                return Err(FrameError::BadStream {
                    kind: "GOAWAY",
                    stream,
                });
            }
            if len < 8 {
                return Err(FrameError::BadLength {
                    kind: "GOAWAY",
                    len,
                });
            }
            let last_stream = body.get_u32() & MAX_STREAM_ID;
            let code = ErrorCode::from_u32(body.get_u32());
            body.truncate(MAX_GOAWAY_MESSAGE);
            Frame::GoAway {
                last_stream,
                code,
                message: body,
            }
        }
    };
    Ok(Some(frame))
}

/// DATA bodies of which at least this much has arrived are handed on in pieces, without
/// waiting for the rest.
pub const MIN_PIECE: usize = 4 * 1024;

/// Decodes frames across reads like [`decode`], except that a long DATA frame is handed on in
/// pieces as its body arrives: each piece is a DATA frame for the same stream, the first with
/// the frame's SYN flag, the last with its FIN flag. muxado gives a DATA frame no meaning
/// beyond its bytes and flags, so the pieces say what the whole frame said. Gathering a 64 KiB
/// body that spans reads meant copying its first part into a larger buffer; pieces are
/// split off the read buffer as they are.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The DATA frame whose body is still arriving: its stream, its FIN flag, the bytes to
    /// come.
    rest: Option<(u32, u8, usize)>,
}

impl Decoder {
    /// Takes the next frame or piece off the front of `buf`, or returns `None` when more bytes
    /// are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some((stream, fin, left)) = self.rest {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = left.min(buf.len());
            let left = left - n;
            self.rest = (left > 0).then_some((stream, fin, left));
            return Ok(Some(Frame::Data {
                stream,
                flags: if left == 0 { fin } else { 0 },
                payload: buf.split_to(n).freeze(),
            }));
        }
        match head(buf)? {
            Some(h)
                if h.ty == TYPE_DATA
                    && buf.len() < HEADER_LEN + h.len
                    && buf.len() >= HEADER_LEN + MIN_PIECE =>
            {
                if h.stream == 0 {
                    return Err(FrameError::BadStream {
                        kind: "DATA",
                        stream: 0,
                    });
                }
                buf.advance(HEADER_LEN);
                let n = buf.len();
                self.rest = Some((h.stream, h.flags & FLAG_FIN, h.len - n));
                Ok(Some(Frame::Data {
                    stream: h.stream,
                    flags: h.flags & FLAG_SYN,
                    payload: buf.split_to(n).freeze(),
                }))
            }
            _ => decode(buf),
        }
    }

    /// Whether a DATA frame is part-way through: the next piece continues it.
    pub fn mid_frame(&self) -> bool {
        self.rest.is_some()
    }
}

fn put_header(out: &mut BytesMut, len: usize, ty: u8, flags: u8, stream: u32) {
    debug_assert!(len <= 0xFF_FFFF);
    out.put_u32(((len as u32) << 8) | (u32::from(ty) << 4) | u32::from(flags & 0xF));
    out.put_u32(stream & MAX_STREAM_ID);
}

impl Frame {
    /// Appends the frame's wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Rst { stream, code } => {
                put_header(out, 4, TYPE_RST, 0, *stream);
                out.put_u32(code.to_u32());
            }
            Self::Data {
                stream,
                flags,
                payload,
            } => {
                put_header(out, payload.len(), TYPE_DATA, *flags, *stream);
                out.put_slice(payload);
            }
            Self::WndInc { stream, increment } => {
                put_header(out, 4, TYPE_WNDINC, 0, *stream);
                out.put_u32(*increment);
            }
            Self::GoAway {
                last_stream,
                code,
                message,
            } => {
                put_header(out, 8 + message.len(), TYPE_GOAWAY, 0, 0);
                out.put_u32(*last_stream);
                out.put_u32(code.to_u32());
                out.put_slice(message);
            }
        }
    }

    /// The frame's size on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::Rst { .. } | Self::WndInc { .. } => 4,
                Self::Data { payload, .. } => payload.len(),
                Self::GoAway { message, .. } => 8 + message.len(),
            }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out
    }

    #[test]
    fn known_bytes() {
        // DATA+SYN on stream 3 carrying the heartbeat stream type, as the SDK sends it.
        let frame = Frame::Data {
            stream: 3,
            flags: FLAG_SYN,
            payload: Bytes::from_static(&[0xFF; 4]),
        };
        assert_eq!(
            &encoded(&frame)[..],
            [0, 0, 4, 0x12, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        let mut buf = encoded(&frame);
        assert_eq!(decode(&mut buf), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_input_waits() {
        let mut whole = encoded(&Frame::WndInc {
            stream: 5,
            increment: 100,
        });
        let mut part = whole.split_to(10);
        assert_eq!(decode(&mut part), Ok(None));
        part.unsplit(whole);
        assert!(matches!(decode(&mut part), Ok(Some(Frame::WndInc { .. }))));
    }

    #[test]
    fn hostile_headers_are_refused_before_buffering() {
        let mut huge = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0x10, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut huge), Err(FrameError::TooLarge(0xFF_FFFF)));
        let mut unknown = BytesMut::from(&[0, 0, 0, 0x70, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut unknown), Err(FrameError::UnknownType(7)));
        let mut zero_stream = encoded(&Frame::Rst {
            stream: 1,
            code: ErrorCode::None,
        });
        zero_stream[7] = 0;
        assert!(matches!(
            decode(&mut zero_stream),
            Err(FrameError::BadStream { .. })
        ));
        // The SDK's own GOAWAY bug: length counts only the message, so the body is too short.
        let mut buggy = BytesMut::from(&[0, 0, 0, 0x30, 0, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut buggy),
            Err(FrameError::BadLength { .. })
        ));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let stream = 1..=MAX_STREAM_ID;
        prop_oneof![
            (stream.clone(), any::<u32>()).prop_map(|(stream, c)| Frame::Rst {
                stream,
                code: ErrorCode::from_u32(c)
            }),
            (
                stream.clone(),
                0u8..4,
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(stream, flags, p)| Frame::Data {
                    stream,
                    flags,
                    payload: p.into()
                }),
            (stream, 1..=MAX_STREAM_ID)
                .prop_map(|(stream, increment)| Frame::WndInc { stream, increment }),
            (
                0..=MAX_STREAM_ID,
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(last_stream, c, m)| Frame::GoAway {
                    last_stream,
                    code: ErrorCode::from_u32(c),
                    message: m.into(),
                }),
        ]
    }

    proptest! {
        /// encode → decode is the identity, whatever the split of the input.
        #[test]
        fn round_trip(frames in proptest::collection::vec(any_frame(), 1..8), cut in 0usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            let total: usize = frames.iter().map(Frame::wire_len).sum();
            prop_assert_eq!(wire.len(), total);
            let mut buf = wire.split_to(cut.min(wire.len()));
            let mut got = Vec::new();
            loop {
                match decode(&mut buf).unwrap() {
                    Some(f) => got.push(f),
                    None if wire.is_empty() => break,
                    None => buf.unsplit(wire.split()),
                }
            }
            prop_assert_eq!(got, frames);
        }

        /// The pieces a [`Decoder`] hands on put back together are the frames that were sent,
        /// however the bytes arrive.
        #[test]
        fn pieces_make_whole_frames(
            frames in proptest::collection::vec(any_frame(), 1..8),
            bulk in proptest::collection::vec(any::<u8>(), 0..3 * MIN_PIECE),
            cuts in proptest::collection::vec(1usize..2 * MIN_PIECE, 1..16),
        ) {
            let mut frames = frames;
            frames.push(Frame::Data {
                stream: 7,
                flags: FLAG_SYN | FLAG_FIN,
                payload: bulk.into(),
            });
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            let mut decoder = Decoder::default();
            let mut buf = BytesMut::new();
            let mut got: Vec<Frame> = Vec::new();
            let mut joining = false;
            let mut cuts = cuts.into_iter().cycle();
            loop {
                match decoder.decode(&mut buf).unwrap() {
                    Some(piece) => {
                        match (joining, got.last_mut(), piece) {
                            (
                                true,
                                Some(Frame::Data { flags, payload, .. }),
                                Frame::Data { flags: more, payload: next, .. },
                            ) => {
                                *flags |= more;
                                *payload = [&payload[..], &next[..]].concat().into();
                            }
                            (_, _, piece) => got.push(piece),
                        }
                        joining = decoder.mid_frame();
                    }
                    None if wire.is_empty() => break,
                    None => {
                        let cut = cuts.next().unwrap_or(1).min(wire.len());
                        buf.unsplit(wire.split_to(cut));
                    }
                }
            }
            prop_assert!(!decoder.mid_frame());
            prop_assert_eq!(got, frames);
        }

        /// Random bytes never panic the decoder and never make it hold more than one frame.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut buf) {
                // Re-encoding what was accepted decodes to the same frame.
                let mut again = BytesMut::new();
                frame.encode(&mut again);
                prop_assert_eq!(decode(&mut again), Ok(Some(frame)));
            }
        }
    }
}
