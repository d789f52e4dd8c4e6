//! Fuzzes the ClientHello reader the HTTPS listener runs on every visitor's first bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_edge::hello::{Hello, MAX_CLIENT_HELLO, parse_client_hello};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_CLIENT_HELLO)];
    if let Some(Hello::Tls(Some(name))) = parse_client_hello(data) {
        assert!(name.len() < MAX_CLIENT_HELLO);
    }
});
