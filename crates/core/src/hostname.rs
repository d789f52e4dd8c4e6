//! Hostnames that can be reserved: RFC 1123 names, lower-cased, optionally with a leading
//! wildcard label (`*.example.com`). Internationalised input is turned into its punycode
//! (`bücher.example` becomes `xn--bcher-kva.example`) or refused with the reason.

use std::fmt;

/// The longest name DNS can carry, in presentation form without the trailing dot.
pub const MAX_HOSTNAME_LEN: usize = 253;
/// The longest label DNS can carry.
pub const MAX_LABEL_LEN: usize = 63;

/// A valid, canonical (ASCII, lower-case, no trailing dot) hostname.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

/// Why a string is not a hostname. Messages quote the offending input so API users can see
/// what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostnameError {
    /// Nothing was given.
    #[error("the domain name is empty")]
    Empty,
    /// Over [`MAX_HOSTNAME_LEN`] bytes.
    #[error("'{0}' is longer than {MAX_HOSTNAME_LEN} characters")]
    TooLong(String),
    /// A single label such as `localhost`: not a name that can be delegated.
    #[error("'{0}' needs at least two labels, like 'app.example.com'")]
    SingleLabel(String),
    /// Two dots in a row, or a leading dot.
    #[error("'{0}' has an empty label")]
    EmptyLabel(String),
    /// A label over [`MAX_LABEL_LEN`] bytes.
    #[error("'{0}' has a label longer than {MAX_LABEL_LEN} characters")]
    LabelTooLong(String),
    /// Underscores are legal in DNS but not in hostnames, and certificates refuse them.
    #[error("'{0}' contains an underscore, which hostnames may not contain")]
    Underscore(String),
    /// A character outside letters, digits and hyphens.
    #[error("'{name}' contains the character '{found}', which hostnames may not contain")]
    BadCharacter {
        /// The name as given.
        name: String,
        /// The first offending character.
        found: char,
    },
    /// A label that starts or ends with a hyphen.
    #[error("'{0}' has a label that starts or ends with a hyphen")]
    HyphenAtEdge(String),
    /// A `*` anywhere but as the whole first label.
    #[error("'{0}' may only use '*' as its whole first label, as in '*.example.com'")]
    MisplacedWildcard(String),
    /// The last label is all digits, which makes it look like an IP address.
    #[error("'{0}' ends in a numeric label; an IP address is not a domain name")]
    NumericTopLabel(String),
    /// Non-ASCII input that IDNA (UTS #46) refuses.
    #[error("'{0}' is not a valid internationalized domain name")]
    Idna(String),
}

impl Hostname {
    /// Validates and canonicalises `input`. One trailing dot is accepted and removed.
    pub fn parse(input: &str) -> Result<Self, HostnameError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(HostnameError::Empty);
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            to_punycode(trimmed).ok_or_else(|| HostnameError::Idna(input.to_owned()))?
        };
        validate(&ascii, input)?;
        Ok(Self(ascii))
    }

    /// The name, e.g. `app.example.com` or `*.example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the first label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether this name lies strictly below `zone` (`a.b.example.com` is below `example.com`;
    /// `example.com` is not below itself).
    pub fn is_below(&self, zone: &Self) -> bool {
        self.0
            .strip_suffix(zone.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
    }

    /// The name with its first label removed, if at least two labels remain.
    pub fn parent(&self) -> Option<Self> {
        let (_, rest) = self.0.split_once('.')?;
        rest.contains('.').then(|| Self(rest.to_owned()))
    }
}

/// Lets maps keyed by hostname be searched with a plain `&str` (the DNS server's lower-cased
/// query name) without building a `Hostname`; both hash the same bytes.
impl std::borrow::Borrow<str> for Hostname {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// IDNA's punycode for a name with non-ASCII labels; a leading `*.` is kept aside because
/// UTS #46 does not allow `*`.
fn to_punycode(name: &str) -> Option<String> {
    let (prefix, rest) = match name.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", name),
    };
    let ascii = idna::domain_to_ascii_strict(rest).ok()?;
    Some(format!("{prefix}{ascii}"))
}

fn validate(name: &str, input: &str) -> Result<(), HostnameError> {
    let err_input = || input.to_owned();
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(HostnameError::TooLong(err_input()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(HostnameError::EmptyLabel(err_input()));
    }
    if labels.len() < 2 {
        return Err(HostnameError::SingleLabel(err_input()));
    }
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if i == 0 && labels.len() > 2 {
                continue;
            }
            return Err(HostnameError::MisplacedWildcard(err_input()));
        }
        validate_label(label, input)?;
    }
    let top = labels[labels.len() - 1];
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostnameError::NumericTopLabel(err_input()));
    }
    Ok(())
}

fn validate_label(label: &str, input: &str) -> Result<(), HostnameError> {
    if label.len() > MAX_LABEL_LEN {
        return Err(HostnameError::LabelTooLong(input.to_owned()));
    }
    if let Some(found) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(match found {
            '_' => HostnameError::Underscore(input.to_owned()),
            '*' => HostnameError::MisplacedWildcard(input.to_owned()),
            _ => HostnameError::BadCharacter {
                name: input.to_owned(),
                found,
            },
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(HostnameError::HyphenAtEdge(input.to_owned()));
    }
    Ok(())
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hostname({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ok(input: &str) -> String {
        Hostname::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .to_string()
    }

    #[test]
    fn canonicalises_valid_names() {
        assert_eq!(ok("API.Example.COM"), "api.example.com");
        assert_eq!(ok("api.example.com."), "api.example.com");
        assert_eq!(ok("*.example.com"), "*.example.com");
        assert_eq!(ok("a-b.c0.example"), "a-b.c0.example");
        assert_eq!(ok("xn--bcher-kva.example"), "xn--bcher-kva.example");
    }

    #[test]
    fn idna_input_becomes_punycode() {
        assert_eq!(ok("Bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("*.bücher.example"), "*.xn--bcher-kva.example");
        assert!(matches!(
            Hostname::parse("\u{0301}a.example"),
            Err(HostnameError::Idna(_))
        ));
    }

    #[test]
    fn refuses_bad_names_with_the_reason() {
        use HostnameError as E;
        type IsExpected = fn(&HostnameError) -> bool;
        let cases: [(&str, IsExpected); 11] = [
            ("", |e| matches!(e, E::Empty)),
            ("localhost", |e| matches!(e, E::SingleLabel(_))),
            ("a..example.com", |e| matches!(e, E::EmptyLabel(_))),
            ("my_app.example.com", |e| matches!(e, E::Underscore(_))),
            ("my app.example.com", |e| {
                matches!(e, E::BadCharacter { found: ' ', .. })
            }),
            ("-app.example.com", |e| matches!(e, E::HyphenAtEdge(_))),
            ("app-.example.com", |e| matches!(e, E::HyphenAtEdge(_))),
            ("a.*.example.com", |e| matches!(e, E::MisplacedWildcard(_))),
            ("*.com", |e| matches!(e, E::MisplacedWildcard(_))),
            ("1.2.3.4", |e| matches!(e, E::NumericTopLabel(_))),
            ("a*.example.com", |e| matches!(e, E::MisplacedWildcard(_))),
        ];
        for (input, check) in cases {
            let err = Hostname::parse(input).expect_err(input);
            assert!(check(&err), "{input}: {err:?}");
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(
            Hostname::parse(&long_label),
            Err(E::LabelTooLong(_))
        ));
        let long_name = format!("{}.com", "abcdefghi.".repeat(25));
        assert!(matches!(Hostname::parse(&long_name), Err(E::TooLong(_))));
    }

    #[test]
    fn zone_relations() {
        let zone = Hostname::parse("meridian.test").unwrap();
        let name = Hostname::parse("a.b.meridian.test").unwrap();
        assert!(name.is_below(&zone));
        assert!(!zone.is_below(&zone));
        assert!(!Hostname::parse("xmeridian.test").unwrap().is_below(&zone));
        assert_eq!(name.parent().unwrap().as_str(), "b.meridian.test");
        assert_eq!(zone.parent(), None);
    }

    proptest! {
        /// Whatever is accepted is canonical: parsing it again gives the same name.
        #[test]
        fn accepted_names_are_fixed_points(input in "[a-zA-Z0-9_.*-]{1,40}|\\PC{1,20}") {
            if let Ok(name) = Hostname::parse(&input) {
                prop_assert_eq!(Hostname::parse(name.as_str()), Ok(name.clone()));
                prop_assert!(name.as_str().is_ascii());
                prop_assert!(name.as_str().len() <= MAX_HOSTNAME_LEN);
            }
        }
    }
}
