//! Object ids: a type prefix (`rd_`, `ra_`, `cr_`, `ak_`, `ac_`) and a 27-character base62
//! KSUID, as ngrok's API uses. A KSUID is 4 bytes of seconds since its epoch followed by 16
//! payload bytes, so ids sort by creation time, which is what list pagination relies on.
//!
//! This file is pure: the caller supplies the clock and the random payload.

use std::fmt;

/// Seconds between the Unix epoch and the KSUID epoch (2014-05-13T16:53:20Z).
pub const KSUID_EPOCH: i64 = 1_400_000_000;
/// Length of a KSUID in base62.
pub const KSUID_LEN: usize = 27;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The kinds of objects that carry ids, with their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A reserved domain.
    ReservedDomain,
    /// A reserved TCP address.
    ReservedAddr,
    /// An agent credential (authtoken).
    Credential,
    /// An API key.
    ApiKey,
    /// An account.
    Account,
}

impl IdKind {
    /// The prefix, including the underscore.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::ReservedDomain => "rd_",
            Self::ReservedAddr => "ra_",
            Self::Credential => "cr_",
            Self::ApiKey => "ak_",
            Self::Account => "ac_",
        }
    }
}

/// A 20-byte KSUID. Byte order is big-endian, so byte order equals time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ksuid([u8; 20]);

impl Ksuid {
    /// Builds a KSUID from a Unix time in seconds and a random payload. Times before the KSUID
    /// epoch are clamped to it, times past its range to the end of it.
    pub fn new(unix_secs: i64, payload: [u8; 16]) -> Self {
        let secs = (unix_secs - KSUID_EPOCH).clamp(0, i64::from(u32::MAX)) as u32;
        let mut bytes = [0; 20];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..].copy_from_slice(&payload);
        Self(bytes)
    }

    /// The next KSUID after this one in sort order (the 160-bit value plus one), used to keep
    /// ids strictly increasing when several are made within one second.
    pub fn successor(self) -> Self {
        let mut bytes = self.0;
        for b in bytes.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
        Self(bytes)
    }

    /// The base62 text form, always [`KSUID_LEN`] characters.
    pub fn encode(self) -> String {
        // Repeated division of the big-endian number by 62; 27 digits cover 2^160.
        let mut num = self.0;
        let mut digits = [b'0'; KSUID_LEN];
        for slot in digits.iter_mut().rev() {
            let mut rem: u32 = 0;
            for byte in num.iter_mut() {
                let acc = (rem << 8) | u32::from(*byte);
                *byte = (acc / 62) as u8;
                rem = acc % 62;
            }
            *slot = BASE62[rem as usize];
        }
        digits.iter().map(|&d| d as char).collect()
    }

    /// Parses the base62 text form.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != KSUID_LEN {
            return None;
        }
        let mut num = [0u8; 20];
        for c in text.bytes() {
            let digit = BASE62.iter().position(|&d| d == c)? as u32;
            let mut carry = digit;
            for byte in num.iter_mut().rev() {
                let acc = u32::from(*byte) * 62 + carry;
                *byte = acc as u8;
                carry = acc >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(Self(num))
    }

    /// Seconds since the Unix epoch at which the id was made.
    pub fn unix_secs(self) -> i64 {
        i64::from(u32::from_be_bytes([
            self.0[0], self.0[1], self.0[2], self.0[3],
        ])) + KSUID_EPOCH
    }
}

impl fmt::Debug for Ksuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ksuid({})", self.encode())
    }
}

/// Formats an id of `kind`.
pub fn format_id(kind: IdKind, ksuid: Ksuid) -> String {
    format!("{}{}", kind.prefix(), ksuid.encode())
}

/// Whether `id` is well formed for `kind`. The API answers a malformed id as not found, like a
/// missing one, but checking first keeps junk out of queries.
pub fn is_valid_id(kind: IdKind, id: &str) -> bool {
    id.strip_prefix(kind.prefix())
        .and_then(Ksuid::decode)
        .is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_extremes() {
        assert_eq!(Ksuid([0; 20]).encode(), "0".repeat(27));
        assert_eq!(Ksuid([0xff; 20]).encode(), "aWgEPTl1tmebfsQzFP4bxwgy80V");
        assert_eq!(
            Ksuid::decode("aWgEPTl1tmebfsQzFP4bxwgy80W"),
            None,
            "overflow"
        );
        assert_eq!(Ksuid::decode("short"), None);
        assert_eq!(Ksuid::decode("!!!!!!!!!!!!!!!!!!!!!!!!!!!"), None);
    }

    #[test]
    fn ids_carry_their_prefix() {
        let id = format_id(IdKind::ReservedDomain, Ksuid::new(1_700_000_000, [7; 16]));
        assert!(id.starts_with("rd_"));
        assert_eq!(id.len(), 3 + KSUID_LEN);
        assert!(is_valid_id(IdKind::ReservedDomain, &id));
        assert!(!is_valid_id(IdKind::ReservedAddr, &id));
        assert!(!is_valid_id(IdKind::ReservedDomain, "rd_x"));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(secs in 1_400_000_000i64..5_000_000_000, payload: [u8; 16]) {
            let k = Ksuid::new(secs, payload);
            prop_assert_eq!(Ksuid::decode(&k.encode()), Some(k));
            prop_assert_eq!(k.unix_secs(), secs.min(KSUID_EPOCH + i64::from(u32::MAX)));
        }

        /// Text order equals byte order equals time order, which pagination depends on.
        #[test]
        fn text_order_is_time_order(a: [u8; 20], b: [u8; 20]) {
            let (a, b) = (Ksuid(a), Ksuid(b));
            prop_assert_eq!(a.cmp(&b), a.encode().cmp(&b.encode()));
            if a.0 != [0xff; 20] {
                prop_assert!(a.successor() > a);
            }
        }
    }
}
