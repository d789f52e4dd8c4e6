//! The PoP catalog: the eight points of presence Meridian knows, where each one is, the
//! addresses a deployment reaches each on ([`PopSite`], from configuration), and a compact set
//! type for "which PoPs may handle this".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One point of presence, by its API code.
///
/// The declaration order is the catalog order (`us,us-cal-1,eu,au,ap,jp,sa,in`), the order the
/// `invalid_region_target` message lists and the order of [`PopCode::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PopCode {
    /// Ohio, United States.
    Us,
    /// California, United States.
    UsCal1,
    /// Frankfurt, Europe.
    Eu,
    /// Sydney, Asia/Pacific.
    Au,
    /// Singapore, Asia/Pacific.
    Ap,
    /// Tokyo, Asia/Pacific.
    Jp,
    /// São Paulo, South America.
    Sa,
    /// Mumbai, Asia/Pacific.
    In,
}

/// Where a PoP is: what the DNS server measures distances from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Human name of the site, e.g. "Frankfurt".
    pub city: &'static str,
    /// Geographical region as the feature page groups them.
    pub region: &'static str,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Whether the site is inside the European Union (for the `european-union` alias).
    pub in_eu: bool,
    /// Whether the site is inside the United States (for the `united-states` alias).
    pub in_us: bool,
}

impl PopCode {
    /// Every PoP, in catalog order.
    pub const ALL: [Self; 8] = [
        Self::Us,
        Self::UsCal1,
        Self::Eu,
        Self::Au,
        Self::Ap,
        Self::Jp,
        Self::Sa,
        Self::In,
    ];

    /// The code used in the API and in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Us => "us",
            Self::UsCal1 => "us-cal-1",
            Self::Eu => "eu",
            Self::Au => "au",
            Self::Ap => "ap",
            Self::Jp => "jp",
            Self::Sa => "sa",
            Self::In => "in",
        }
    }

    /// Position in the catalog, 0..8.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Where the PoP is.
    pub const fn location(self) -> Location {
        // Coordinates are those of the metro area the site is named after; the DNS server only
        // needs them to rank PoPs by great-circle distance, so city precision is plenty.
        let (city, region, latitude, longitude, in_eu, in_us) = match self {
            Self::Us => ("Ohio", "United States", 39.96, -83.00, false, true),
            Self::UsCal1 => ("California", "United States", 37.34, -121.89, false, true),
            Self::Eu => ("Frankfurt", "Europe", 50.11, 8.68, true, false),
            Self::Au => ("Sydney", "Asia/Pacific", -33.87, 151.21, false, false),
            Self::Ap => ("Singapore", "Asia/Pacific", 1.35, 103.82, false, false),
            Self::Jp => ("Tokyo", "Asia/Pacific", 35.68, 139.69, false, false),
            Self::Sa => ("São Paulo", "South America", -23.55, -46.63, false, false),
            Self::In => ("Mumbai", "Asia/Pacific", 19.08, 72.88, false, false),
        };
        Location {
            city,
            region,
            latitude,
            longitude,
            in_eu,
            in_us,
        }
    }

    /// The catalog's codes joined with commas: `us,us-cal-1,eu,au,ap,jp,sa,in`.
    pub fn catalog_list() -> String {
        Self::ALL.map(Self::as_str).join(",")
    }
}

impl fmt::Display for PopCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string was not one of the eight PoP codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PoP code '{0}'; expected one of {list}", list = PopCode::catalog_list())]
pub struct UnknownPop(pub String);

impl FromStr for PopCode {
    type Err = UnknownPop;

    /// Exact, lower-case codes only: this is what configuration files and agents send.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownPop(s.to_owned()))
    }
}

/// One PoP as a deployment runs it: the catalog entry plus the addresses visitors and agents
/// reach it on. The addresses come from configuration; the catalog never guesses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopSite {
    /// Which PoP.
    pub code: PopCode,
    /// Where it is reached; never empty.
    pub addresses: Vec<IpAddr>,
}

/// A set of PoPs, one bit per catalog position. Iterates in catalog order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PopSet(u8);

impl PopSet {
    /// No PoP.
    pub const EMPTY: Self = Self(0);
    /// Every PoP in the catalog.
    pub const ALL: Self = Self(u8::MAX);

    /// The set holding exactly `code`.
    pub const fn only(code: PopCode) -> Self {
        Self(1 << code.index())
    }

    /// Adds `code`.
    pub fn insert(&mut self, code: PopCode) {
        self.0 |= 1 << code.index();
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: PopCode) -> bool {
        self.0 & (1 << code.index()) != 0
    }

    /// The union of two sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The PoPs in both sets.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The PoPs in `self` but not in `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The set whose bit `i` stands for catalog position `i`.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// One bit per catalog position.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether no PoP is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many PoPs are in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The members, in catalog order.
    pub fn iter(self) -> impl Iterator<Item = PopCode> {
        PopCode::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<PopCode> for PopSet {
    fn from_iter<I: IntoIterator<Item = PopCode>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for code in iter {
            set.insert(code);
        }
        set
    }
}

impl fmt::Debug for PopSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_order_matches_the_feature_page() {
        assert_eq!(PopCode::catalog_list(), "us,us-cal-1,eu,au,ap,jp,sa,in");
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_fail() {
        for code in PopCode::ALL {
            assert_eq!(code.as_str().parse::<PopCode>(), Ok(code));
        }
        assert!("EU".parse::<PopCode>().is_err());
        assert!("banana".parse::<PopCode>().is_err());
    }

    #[test]
    fn set_operations() {
        let mut set = PopSet::only(PopCode::Eu);
        set.insert(PopCode::UsCal1);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [PopCode::UsCal1, PopCode::Eu]
        );
        assert_eq!(set.len(), 2);
        assert!(!set.contains(PopCode::Jp));
        assert_eq!(PopSet::ALL.len(), 8);
        assert!(PopSet::EMPTY.is_empty());
    }
}
