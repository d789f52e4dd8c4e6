//! Fuzzes the HTTP/1 relay's parsers (request heads, response heads, chunked framing) with
//! the bytes a visitor or an agent could send.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meridian_edge::fuzz_http1(data);
});
