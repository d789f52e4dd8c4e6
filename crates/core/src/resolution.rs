//! What a domain resolves to: the one place where a `resolves_to` list gets its meaning.
//!
//! The API validates with it, the DNS server answers from it and the edge refuses traffic with
//! it, so all three agree by construction. Its rule is short: an empty list is global (every
//! PoP); otherwise the domain resolves to exactly the PoPs its codes and aliases name, plus its
//! dedicated IPs, and nothing else. There is no fallback that widens the set.

use crate::pop::{PopCode, PopSet};
use crate::target::{IpTarget, Target};

/// The PoPs and dedicated IPs allowed to handle a domain's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    pops: PopSet,
    dedicated_ips: Vec<IpTarget>,
}

impl Resolution {
    /// The resolution of a domain that is not pinned: every PoP, no dedicated IP.
    pub const fn global() -> Self {
        Self {
            pops: PopSet::ALL,
            dedicated_ips: Vec::new(),
        }
    }

    /// The PoPs allowed to handle the domain.
    pub const fn pops(&self) -> PopSet {
        self.pops
    }

    /// The dedicated IPs the domain resolves to, in the order the list named them.
    pub fn dedicated_ips(&self) -> &[IpTarget] {
        &self.dedicated_ips
    }

    /// Whether the PoP may handle the domain's traffic. A PoP for which this is false must
    /// refuse the traffic; it never hands it on to another PoP.
    pub const fn allows(&self, pop: PopCode) -> bool {
        self.pops.contains(pop)
    }

    /// Whether the domain is unrestricted: every PoP and no dedicated IP.
    pub fn is_global(&self) -> bool {
        self.pops == PopSet::ALL && self.dedicated_ips.is_empty()
    }
}

/// Says what a domain with this `resolves_to` list resolves to.
///
/// Never empty: a list names at least one PoP or IP, and the empty list means every PoP.
pub fn resolve(targets: &[Target]) -> Resolution {
    if targets.is_empty() {
        return Resolution::global();
    }
    let mut resolution = Resolution {
        pops: PopSet::EMPTY,
        dedicated_ips: Vec::new(),
    };
    for target in targets {
        match *target {
            Target::Pop(code) => resolution.pops.insert(code),
            Target::Alias(alias) => resolution.pops = resolution.pops.union(alias.pops()),
            Target::Ip(ip) => {
                if !resolution.dedicated_ips.contains(&ip) {
                    resolution.dedicated_ips.push(ip);
                }
            }
        }
    }
    resolution
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::target::Alias;

    fn any_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (0..8usize).prop_map(|i| Target::Pop(PopCode::ALL[i])),
            (0..3usize).prop_map(|i| Target::Alias(Alias::ALL[i])),
            (any::<u32>(), proptest::option::of(1..=u16::MAX)).prop_map(|(ip, port)| {
                Target::Ip(IpTarget {
                    ip: IpAddr::V4(Ipv4Addr::from(ip)),
                    port,
                })
            }),
            (any::<u128>(), proptest::option::of(1..=u16::MAX)).prop_map(|(ip, port)| {
                Target::Ip(IpTarget {
                    ip: IpAddr::V6(Ipv6Addr::from(ip)),
                    port,
                })
            }),
        ]
    }

    /// The PoPs a single target names, written out independently of `resolve`.
    fn named_pops(target: &Target) -> Vec<PopCode> {
        match target {
            Target::Pop(code) => vec![*code],
            Target::Alias(Alias::Global) => PopCode::ALL.to_vec(),
            Target::Alias(Alias::EuropeanUnion) => vec![PopCode::Eu],
            Target::Alias(Alias::UnitedStates) => vec![PopCode::Us, PopCode::UsCal1],
            Target::Ip(_) => vec![],
        }
    }

    #[test]
    fn empty_list_is_global() {
        assert!(resolve(&[]).is_global());
        assert_eq!(resolve(&[]).pops(), PopSet::ALL);
    }

    #[test]
    fn feature_page_example() {
        let r = resolve(&[Target::Pop(PopCode::UsCal1), Target::Pop(PopCode::Eu)]);
        assert!(r.allows(PopCode::UsCal1) && r.allows(PopCode::Eu));
        assert!(!r.allows(PopCode::Jp) && !r.allows(PopCode::Us));
        assert!(!r.is_global());
    }

    proptest! {
        /// A pinned domain resolves to exactly the union of what its targets name: no PoP is
        /// ever added that the list did not name, and none it named is lost.
        #[test]
        fn pinned_set_is_exactly_what_the_list_names(
            targets in proptest::collection::vec(any_target(), 1..12)
        ) {
            let r = resolve(&targets);
            for pop in PopCode::ALL {
                let named = targets.iter().any(|t| named_pops(t).contains(&pop));
                prop_assert_eq!(r.allows(pop), named, "pop {}", pop);
            }
            for t in &targets {
                if let Target::Ip(ip) = t {
                    prop_assert!(r.dedicated_ips().contains(ip));
                }
            }
            prop_assert!(r.dedicated_ips().iter().all(|ip| targets.contains(&Target::Ip(*ip))));
        }

        /// Never empty: something always handles the traffic.
        #[test]
        fn never_empty(targets in proptest::collection::vec(any_target(), 0..12)) {
            let r = resolve(&targets);
            prop_assert!(!r.pops().is_empty() || !r.dedicated_ips().is_empty());
        }

        /// Order and repetition do not matter for the PoP set.
        #[test]
        fn order_and_repeats_do_not_matter(
            targets in proptest::collection::vec(any_target(), 1..12)
        ) {
            let mut shuffled = targets.clone();
            shuffled.reverse();
            shuffled.extend(targets.iter().copied());
            prop_assert_eq!(resolve(&targets).pops(), resolve(&shuffled).pops());
        }

        /// Adding a target to a pinned list never removes a PoP or an IP.
        #[test]
        fn adding_a_target_only_widens(
            targets in proptest::collection::vec(any_target(), 1..12),
            extra in any_target(),
        ) {
            let before = resolve(&targets);
            let mut more = targets.clone();
            more.push(extra);
            let after = resolve(&more);
            prop_assert!(before.pops().iter().all(|p| after.allows(p)));
            prop_assert!(before.dedicated_ips().iter().all(|ip| after.dedicated_ips().contains(ip)));
        }

        /// Every target's canonical form parses back to the same target.
        #[test]
        fn canonical_form_round_trips(target in any_target()) {
            prop_assert_eq!(target.to_string().parse::<Target>(), Ok(target));
        }
    }
}
