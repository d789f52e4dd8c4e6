//! The certificate management policy a reserved domain may carry: which authority should issue
//! its certificate and with which kind of key.

use std::fmt;
use std::str::FromStr;

/// Who issues managed certificates. ngrok knows one authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Let's Encrypt (ACME).
    LetsEncrypt,
}

/// The private key type of a managed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyType {
    /// RSA.
    Rsa,
    /// ECDSA, the default.
    Ecdsa,
}

/// A validated `certificate_management_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// Who issues.
    pub authority: Authority,
    /// What key.
    pub private_key_type: PrivateKeyType,
}

/// A policy field held a value outside its set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate_management_policy.{field} '{value}'; expected {expected}")]
pub struct InvalidPolicy {
    /// `authority` or `private_key_type`.
    pub field: &'static str,
    /// What was sent.
    pub value: String,
    /// The accepted values.
    pub expected: &'static str,
}

impl CertificatePolicy {
    /// Builds a policy from the API's two strings; an empty or absent field takes its default
    /// (`letsencrypt`, `ecdsa`).
    pub fn parse(authority: &str, private_key_type: &str) -> Result<Self, InvalidPolicy> {
        Ok(Self {
            authority: authority.parse()?,
            private_key_type: private_key_type.parse()?,
        })
    }
}

impl Authority {
    /// The API spelling.
    pub const fn as_str(self) -> &'static str {
        "letsencrypt"
    }
}

impl PrivateKeyType {
    /// The API spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ecdsa => "ecdsa",
        }
    }
}

impl FromStr for Authority {
    type Err = InvalidPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "letsencrypt" => Ok(Self::LetsEncrypt),
            _ => Err(InvalidPolicy {
                field: "authority",
                value: s.to_owned(),
                expected: "'letsencrypt'",
            }),
        }
    }
}

impl FromStr for PrivateKeyType {
    type Err = InvalidPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "ecdsa" => Ok(Self::Ecdsa),
            "rsa" => Ok(Self::Rsa),
            _ => Err(InvalidPolicy {
                field: "private_key_type",
                value: s.to_owned(),
                expected: "'rsa' or 'ecdsa'",
            }),
        }
    }
}

impl fmt::Display for PrivateKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let p = CertificatePolicy::parse("", "").unwrap();
        assert_eq!(p.private_key_type, PrivateKeyType::Ecdsa);
        assert_eq!(
            CertificatePolicy::parse("letsencrypt", "rsa")
                .unwrap()
                .private_key_type,
            PrivateKeyType::Rsa
        );
        let err = CertificatePolicy::parse("zerossl", "rsa").unwrap_err();
        assert_eq!(err.field, "authority");
        assert!(CertificatePolicy::parse("letsencrypt", "dsa").is_err());
    }
}
