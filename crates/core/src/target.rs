//! `resolves_to` values: parsing one `{"value": ...}` string into a PoP code, a regional
//! alias or a dedicated-IP target, and writing it back in canonical form.
//!
//! What a list of targets *means* is decided in [`crate::resolution`]; this file only owns the
//! syntax.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::pop::{PopCode, PopSet};

/// A regional alias: a name that stands for several PoPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alias {
    /// Every PoP.
    Global,
    /// Every PoP inside the European Union.
    EuropeanUnion,
    /// Every PoP inside the United States.
    UnitedStates,
}

impl Alias {
    /// Every alias.
    pub const ALL: [Self; 3] = [Self::Global, Self::EuropeanUnion, Self::UnitedStates];

    /// The alias as written in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::EuropeanUnion => "european-union",
            Self::UnitedStates => "united-states",
        }
    }

    /// The PoPs the alias stands for, derived from the catalog's locations so that a PoP added
    /// to the catalog joins its aliases without another edit here.
    pub fn pops(self) -> PopSet {
        PopCode::ALL
            .into_iter()
            .filter(|code| match self {
                Self::Global => true,
                Self::EuropeanUnion => code.location().in_eu,
                Self::UnitedStates => code.location().in_us,
            })
            .collect()
    }
}

/// A dedicated IP address, optionally with the one port it serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpTarget {
    /// The address.
    pub ip: IpAddr,
    /// The port, when the value named one (`1.2.3.4:1234`, `[2001:db8::1]:443`).
    pub port: Option<u16>,
}

impl fmt::Display for IpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (IpAddr::V6(ip), Some(port)) => write!(f, "[{ip}]:{port}"),
        }
    }
}

/// One parsed `resolves_to` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A single PoP.
    Pop(PopCode),
    /// A regional alias.
    Alias(Alias),
    /// A dedicated IP.
    Ip(IpTarget),
}

/// A `resolves_to` value that is neither a PoP, an alias nor an IP.
///
/// Its `Display` is, to the letter, the `msg` of the feature page's `invalid_region_target`
/// error, lower-case "use" included, because API clients compare it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "The region you specified, '{0}' is invalid. use one of the following acceptable values: {list}",
    list = PopCode::catalog_list()
)]
pub struct InvalidTarget(pub String);

impl FromStr for Target {
    type Err = InvalidTarget;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(code) = value.parse::<PopCode>() {
            return Ok(Self::Pop(code));
        }
        if let Some(alias) = Alias::ALL.into_iter().find(|a| a.as_str() == value) {
            return Ok(Self::Alias(alias));
        }
        parse_ip_target(value)
            .map(Self::Ip)
            .ok_or_else(|| InvalidTarget(value.to_owned()))
    }
}

/// `1.2.3.4`, `1.2.3.4:1234`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
/// Port 0 names no port a visitor could reach, so it is refused.
fn parse_ip_target(value: &str) -> Option<IpTarget> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(IpTarget { ip, port: None });
    }
    if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        let ip = inner.parse::<std::net::Ipv6Addr>().ok()?;
        return Some(IpTarget {
            ip: IpAddr::V6(ip),
            port: None,
        });
    }
    let addr = value.parse::<SocketAddr>().ok()?;
    (addr.port() != 0).then_some(IpTarget {
        ip: addr.ip(),
        port: Some(addr.port()),
    })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pop(code) => f.write_str(code.as_str()),
            Self::Alias(alias) => f.write_str(alias.as_str()),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Parses a whole `resolves_to` list, stopping at the first bad value, and drops repeated
/// targets (keeping the first) so the stored list is canonical.
pub fn parse_targets<'a, I>(values: I) -> Result<Vec<Target>, InvalidTarget>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut targets: Vec<Target> = Vec::new();
    for value in values {
        let target = value.parse::<Target>()?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("us", "us"),
            ("us-cal-1", "us-cal-1"),
            ("european-union", "european-union"),
            ("global", "global"),
            ("1.2.3.4", "1.2.3.4"),
            ("8.8.8.8:1234", "8.8.8.8:1234"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
        ];
        for (input, canonical) in cases {
            let target: Target = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(target.to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn refuses_everything_else_with_the_feature_page_message() {
        for bad in [
            "banana",
            "",
            "EU",
            " eu",
            "eu,jp",
            "1.2.3.4:0",
            "1.2.3.4:99999",
            "2001:db8::1::443",
            "[1.2.3.4]",
            "1.2.3",
            "[2001:db8::1]:0",
        ] {
            assert_eq!(
                bad.parse::<Target>(),
                Err(InvalidTarget(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            InvalidTarget("banana".into()).to_string(),
            "The region you specified, 'banana' is invalid. use one of the following \
             acceptable values: us,us-cal-1,eu,au,ap,jp,sa,in"
        );
    }

    #[test]
    fn aliases_expand_from_the_catalog() {
        assert_eq!(Alias::Global.pops(), PopSet::ALL);
        assert_eq!(Alias::EuropeanUnion.pops(), PopSet::only(PopCode::Eu));
        assert_eq!(
            Alias::UnitedStates.pops().iter().collect::<Vec<_>>(),
            [PopCode::Us, PopCode::UsCal1]
        );
    }

    #[test]
    fn lists_keep_order_and_drop_repeats() {
        let targets = parse_targets(["eu", "us-cal-1", "eu"]).unwrap();
        assert_eq!(
            targets,
            [Target::Pop(PopCode::Eu), Target::Pop(PopCode::UsCal1)]
        );
        assert_eq!(
            parse_targets(["eu", "banana", "nope"]),
            Err(InvalidTarget("banana".into()))
        );
    }
}
