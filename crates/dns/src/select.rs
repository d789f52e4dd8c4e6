//! Choosing the PoP a DNS answer names: pure, and the only place that choice is made.
//!
//! The rule, in order: start from the PoPs the domain resolves to (nothing else is ever a
//! candidate); keep the healthy ones, unless none is, in which case keep them all rather than
//! look outside the set; pick the one nearest the client by great-circle distance, or, when
//! the client cannot be located, the first in catalog order
//! (`us, us-cal-1, eu, au, ap, jp, sa, in`).

use std::sync::LazyLock;

use meridian_core::{PopCode, PopSet};

use crate::geo::{Place, Point};

/// Every PoP as a [`Place`], by catalog position.
static POP_PLACES: LazyLock<[Place; 8]> =
    LazyLock::new(|| PopCode::ALL.map(|pop| Place::from(location(pop))));

/// The PoPs a choice is made among: the healthy members of the set, or, when none is
/// healthy, the whole set. Never a PoP outside it: this is where failing open would happen.
pub fn candidates(allowed: PopSet, up: PopSet) -> PopSet {
    let healthy = allowed.intersection(up);
    if healthy.is_empty() { allowed } else { healthy }
}

/// The PoP to answer with, or `None` when the set holds no PoP (a domain pinned to dedicated
/// IPs only). The result is always a member of `allowed`.
pub fn choose(allowed: PopSet, up: PopSet, client: Option<Place>) -> Option<PopCode> {
    let pool = candidates(allowed, up);
    let Some(client) = client else {
        return pool.iter().next();
    };
    // The first of the nearest, so ties go to catalog order.
    pool.iter().min_by(|a, b| {
        let ca = client.closeness(POP_PLACES[a.index()]);
        let cb = client.closeness(POP_PLACES[b.index()]);
        cb.total_cmp(&ca)
    })
}

/// Whether the answer could differ between clients: only then does a Client Subnet reply
/// need a non-zero scope.
pub fn depends_on_client(allowed: PopSet, up: PopSet) -> bool {
    candidates(allowed, up).len() > 1
}

/// Where a PoP is, as a [`Point`].
pub fn location(pop: PopCode) -> Point {
    let site = pop.location();
    Point {
        latitude: site.latitude,
        longitude: site.longitude,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(codes: &[PopCode]) -> PopSet {
        codes.iter().copied().collect()
    }

    fn at(latitude: f64, longitude: f64) -> Option<Place> {
        Some(Place::from(Point {
            latitude,
            longitude,
        }))
    }

    #[test]
    fn the_issue_examples() {
        use PopCode::*;
        let (germany, japan) = (at(51.2, 10.5), at(36.2, 138.3));
        let pinned = set(&[UsCal1, Eu]);
        assert_eq!(choose(pinned, PopSet::ALL, germany), Some(Eu));
        assert_eq!(choose(pinned, PopSet::ALL, japan), Some(UsCal1));
        assert_eq!(choose(PopSet::ALL, PopSet::ALL, japan), Some(Jp));
        let eu_drained = set(&[Us, UsCal1, Au, Ap, Jp, Sa, In]);
        assert_eq!(choose(pinned, eu_drained, germany), Some(UsCal1));
        let both_down = set(&[Us, Au, Ap, Jp, Sa, In]);
        assert_eq!(choose(pinned, both_down, germany), Some(Eu));
        assert_eq!(choose(pinned, both_down, japan), Some(UsCal1));
        assert_eq!(
            choose(pinned, PopSet::ALL, None),
            Some(UsCal1),
            "catalog order"
        );
        assert_eq!(choose(PopSet::EMPTY, PopSet::ALL, japan), None);
    }

    fn any_set() -> impl Strategy<Value = PopSet> {
        any::<u8>().prop_map(|bits| {
            PopCode::ALL
                .into_iter()
                .filter(|p| bits & (1 << p.index()) != 0)
                .collect()
        })
    }

    fn any_client() -> impl Strategy<Value = Option<Point>> {
        proptest::option::of((-90.0..=90.0f64, -180.0..=180.0f64).prop_map(
            |(latitude, longitude)| Point {
                latitude,
                longitude,
            },
        ))
    }

    proptest! {
        /// For any set, any health and any client, the answer lies inside the set; it is
        /// healthy whenever some member is; and no healthy member is nearer.
        #[test]
        fn answers_never_leave_the_set(allowed in any_set(), up in any_set(), client in any_client()) {
            let chosen = choose(allowed, up, client.map(Place::from));
            prop_assert_eq!(chosen.is_none(), allowed.is_empty());
            let Some(pop) = chosen else { return Ok(()) };
            prop_assert!(allowed.contains(pop));
            let any_healthy = allowed.iter().any(|p| up.contains(p));
            prop_assert!(!any_healthy || up.contains(pop));
            if let Some(client) = client {
                let d = client.distance_km(location(pop));
                // Checked with the haversine formula, independently of the dot products;
                // a micrometre of slack absorbs rounding between the two.
                for other in allowed.iter().filter(|p| up.contains(*p) || !any_healthy) {
                    prop_assert!(client.distance_km(location(other)) >= d - 1e-9);
                }
            }
        }
    }
}
