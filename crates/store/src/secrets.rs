//! Making ids and secrets: the clock and the randomness that `meridian-core` leaves to callers.

use std::sync::Mutex;

use meridian_core::id::{IdKind, Ksuid, format_id};
use meridian_core::secret::Secret;

/// Hands out ids that strictly increase within this process, even when several are made in the
/// same second, so that "newest first" is exact for everything one process creates.
#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    last: Mutex<Option<Ksuid>>,
}

impl IdGenerator {
    pub(crate) fn next(&self, kind: IdKind) -> String {
        let mut candidate = Ksuid::new(crate::now(), random_array());
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(prev) = *last
            && candidate <= prev
        {
            candidate = prev.successor();
        }
        *last = Some(candidate);
        format_id(kind, candidate)
    }
}

fn random_array<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is unrecoverable and rare enough that a panic, which tokio
    // turns into a failed request, is the honest outcome.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API key: 160 random bits.
pub fn new_api_key() -> Secret {
    Secret::new(format!("mrd_api_{}", random_hex(20)))
}

/// A new agent authtoken: 160 random bits.
pub fn new_authtoken() -> Secret {
    Secret::new(format!("mrd_tok_{}", random_hex(20)))
}

/// A random DNS label for a custom domain's CNAME target: 80 bits in 20 hex digits, lower
/// case because DNS names are case-insensitive.
pub fn random_label() -> String {
    random_hex(10)
}
