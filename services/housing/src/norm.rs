//! The entitled floor area ("положенная квадратура"): a configurable norm per family member,
//! and whether a dwelling matches it.

/// The norm: between `min_m2_per_member` and `max_m2_per_member` of total area per family member;
/// a one-room flat is always within the upper bound (the law's "at least a one-room flat").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AreaNorm {
    /// Lower bound per family member, m² (default 15).
    pub min_m2_per_member: f64,
    /// Upper bound per family member, m² (default 18).
    pub max_m2_per_member: f64,
}

impl Default for AreaNorm {
    fn default() -> Self {
        Self {
            min_m2_per_member: 15.0,
            max_m2_per_member: 18.0,
        }
    }
}

impl AreaNorm {
    /// The entitled range of total area, m², for a family of `family_size` (the person included).
    pub fn entitled_range(&self, family_size: i64) -> (f64, f64) {
        let members = family_size.max(1) as f64;
        (
            members * self.min_m2_per_member,
            members * self.max_m2_per_member,
        )
    }

    /// Whether the dwelling is within the norm: not larger than entitled (a one-room flat always
    /// is) and not smaller than the lower bound.
    pub fn within_norm(&self, family_size: i64, rooms: i64, total_area_m2: f64) -> bool {
        self.not_above_entitlement(family_size, rooms, total_area_m2)
            && total_area_m2 >= self.entitled_range(family_size).0
    }

    /// Whether the dwelling may be offered at all: never above the entitlement (a one-room flat is
    /// the minimum anyone is entitled to). A smaller dwelling may be offered — the recipient can
    /// refuse it with 6522 — unless they asked with 6527 for norm-matching areas only.
    pub fn may_offer(
        &self,
        family_size: i64,
        norm_matching_only: bool,
        rooms: i64,
        total_area_m2: f64,
    ) -> bool {
        if norm_matching_only {
            self.within_norm(family_size, rooms, total_area_m2)
        } else {
            self.not_above_entitlement(family_size, rooms, total_area_m2)
        }
    }

    fn not_above_entitlement(&self, family_size: i64, rooms: i64, total_area_m2: f64) -> bool {
        rooms <= 1 || total_area_m2 <= self.entitled_range(family_size).1
    }

    /// Checks that the bounds make sense (configuration).
    pub fn validate(&self) -> Result<(), String> {
        let valid = self.min_m2_per_member.is_finite()
            && self.max_m2_per_member.is_finite()
            && self.min_m2_per_member > 0.0
            && self.min_m2_per_member <= self.max_m2_per_member;
        if valid {
            Ok(())
        } else {
            Err(format!(
                "area norm must satisfy 0 < min ≤ max, got {}–{} m² per member",
                self.min_m2_per_member, self.max_m2_per_member
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_three_is_entitled_to_45_to_54_square_metres() {
        let norm = AreaNorm::default();
        assert_eq!(norm.entitled_range(3), (45.0, 54.0));
        assert!(norm.within_norm(3, 2, 50.0));
        assert!(!norm.within_norm(3, 3, 60.0));
        assert!(!norm.within_norm(3, 2, 40.0));
    }

    #[test]
    fn a_one_room_flat_is_never_too_large() {
        let norm = AreaNorm::default();
        assert!(norm.may_offer(1, false, 1, 34.0));
        assert!(norm.may_offer(1, true, 1, 34.0));
        assert!(!norm.may_offer(1, false, 2, 34.0));
    }

    #[test]
    fn smaller_dwellings_are_offered_unless_6527_was_given() {
        let norm = AreaNorm::default();
        assert!(norm.may_offer(4, false, 2, 48.0));
        assert!(!norm.may_offer(4, true, 2, 48.0));
        assert!(norm.may_offer(4, true, 3, 65.0));
    }

    #[test]
    fn configured_norm_is_used_and_checked() {
        let norm = AreaNorm {
            min_m2_per_member: 12.0,
            max_m2_per_member: 20.0,
        };
        assert_eq!(norm.entitled_range(2), (24.0, 40.0));
        assert!(norm.validate().is_ok());
        let inverted = AreaNorm {
            min_m2_per_member: 20.0,
            max_m2_per_member: 12.0,
        };
        assert!(inverted.validate().is_err());
    }
}
