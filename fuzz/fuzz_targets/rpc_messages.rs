//! Fuzzes the RPC request shapes agents send: any bytes must parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_tunnel::proto::{Auth, Bind, Unbind};

fuzz_target!(|data: &[u8]| {
    if data.len() > meridian_tunnel::rpc::MAX_RPC_BYTES {
        return;
    }
    let _ = serde_json::from_slice::<Auth>(data);
    let _ = serde_json::from_slice::<Bind>(data);
    let _ = serde_json::from_slice::<Unbind>(data);
});
