//! The PROXY protocol header (v1 text, v2 binary) that tells an agent's upstream who the
//! visitor is, prefixed to a proxied stream when the agent's bind asked for it.

use std::net::SocketAddr;

/// The header for a connection from `visitor` to `local`, in `version` 1 or 2; empty for 0.
pub(crate) fn header(version: u8, visitor: SocketAddr, local: SocketAddr) -> Vec<u8> {
    match version {
        1 => v1(visitor, local).into_bytes(),
        2 => v2(visitor, local),
        _ => Vec::new(),
    }
}

fn v1(visitor: SocketAddr, local: SocketAddr) -> String {
    match (visitor, local) {
        (SocketAddr::V4(v), SocketAddr::V4(l)) => {
            format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                v.ip(),
                l.ip(),
                v.port(),
                l.port()
            )
        }
        (SocketAddr::V6(v), SocketAddr::V6(l)) => {
            format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                v.ip(),
                l.ip(),
                v.port(),
                l.port()
            )
        }
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

/// The v2 signature that opens every binary header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn v2(visitor: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY command
    match (visitor, local) {
        (SocketAddr::V4(v), SocketAddr::V4(l)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&v.ip().octets());
            out.extend_from_slice(&l.ip().octets());
            out.extend_from_slice(&v.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
        }
        (SocketAddr::V6(v), SocketAddr::V6(l)) => {
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v.ip().octets());
            out.extend_from_slice(&l.ip().octets());
            out.extend_from_slice(&v.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
        }
        _ => {
            out.push(0x00); // unspecified
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions() {
        let v: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let l: SocketAddr = "127.0.1.3:443".parse().unwrap();
        assert_eq!(
            header(1, v, l),
            b"PROXY TCP4 203.0.113.7 127.0.1.3 51000 443\r\n"
        );
        let h = header(2, v, l);
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!((h[12], h[13], h.len()), (0x21, 0x11, 16 + 12));
        assert!(header(0, v, l).is_empty());
    }
}
