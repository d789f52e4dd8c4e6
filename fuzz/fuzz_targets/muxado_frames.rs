//! Fuzzes the muxado frame decoders: whatever the bytes, they must not panic, must never hold
//! a body larger than the limit, and every frame accepted must re-encode to an equal frame.
//! The piecewise [`frame::Decoder`] gets the same bytes in reads of the sizes the first byte
//! picks, and must hand on exactly the payload bytes the whole-frame decoder does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_tunnel::frame::{self, Frame, MAX_FRAME_BODY};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut whole = Vec::new();
    while let Ok(Some(frame)) = frame::decode(&mut buf) {
        assert!(frame.wire_len() <= frame::HEADER_LEN + MAX_FRAME_BODY);
        if let Frame::Data { payload, .. } = &frame {
            whole.extend_from_slice(payload);
        }
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(frame::decode(&mut again), Ok(Some(frame)));
    }

    let read = 1 + usize::from(data.first().copied().unwrap_or(0)) * 64;
    let mut decoder = frame::Decoder::default();
    let mut rest = data;
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    'feed: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Data { payload, .. })) => pieces.extend_from_slice(&payload),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        if rest.is_empty() {
            break;
        }
        let (next, tail) = rest.split_at(read.min(rest.len()));
        buf.extend_from_slice(next);
        rest = tail;
    }
    // Pieces may run ahead of the whole frame they belong to, never behind or astray.
    assert!(pieces.starts_with(&whole) || whole.starts_with(&pieces));
});
