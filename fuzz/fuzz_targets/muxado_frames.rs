//! Fuzzes the muxado frame decoder: whatever the bytes, it must not panic, must never hold a
//! body larger than its limit, and every frame it accepts must re-encode to an equal frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_tunnel::frame::{self, MAX_FRAME_BODY};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = frame::decode(&mut buf) {
        assert!(frame.wire_len() <= frame::HEADER_LEN + MAX_FRAME_BODY);
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(frame::decode(&mut again), Ok(Some(frame)));
    }
});
