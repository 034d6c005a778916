//! The proportional policy: one γ for every domain.
//!
//! A pure function of the host's free memory, the active domains and the host's free-memory
//! target; it neither reads nor changes anything else.

use crate::units::{DomainMemory, Kib};

/// Free memory if every domain in `domains` reached its dynamic-min.
pub fn maximum_free(free: Kib, domains: &[DomainMemory], compensate_inaccuracy: bool) -> Kib {
    free + domains
        .iter()
        .map(|d| d.min_freeable(compensate_inaccuracy))
        .sum()
}

/// γ for sharing `surplus` among `domains` in proportion to their ranges, in `[0, 1]`.
pub fn gamma(surplus: Kib, domains: &[DomainMemory]) -> f64 {
    let total_range: Kib = domains.iter().map(DomainMemory::range).sum();
    let g = surplus.0 as f64 / total_range.0 as f64;
    // 0/0 is NaN (no range, no surplus): any γ gives dynamic-min then.
    if g.is_nan() {
        0.0
    } else {
        g.clamp(0.0, 1.0)
    }
}

/// The target of each domain (same order as `domains`) that leaves `host_target` free once
/// every domain has reached it: `dynamic_min + γ·range` with one γ (the share rounded
/// down to whole 4 KiB pages).
///
/// `domains` are the active ones; `compensate_inaccuracy` counts twice each domain's
/// inaccuracy as memory it may fail to free (squeezed's default).
pub fn compute_targets(
    free: Kib,
    domains: &[DomainMemory],
    host_target: Kib,
    compensate_inaccuracy: bool,
    out: &mut Vec<Kib>,
) {
    let surplus = maximum_free(free, domains, compensate_inaccuracy).saturating_sub(host_target);
    let g = gamma(surplus, domains);
    out.clear();
    // Whole pages above dynamic-min: a balloon driver moves whole pages (Linux rounds its
    // target down to pages), so a target between two pages could never be reached exactly.
    out.extend(domains.iter().map(|d| {
        let share = (g * d.range().0 as f64) as u64;
        d.dynamic_min + Kib(share - share % 4)
    }));
}

#[cfg(test)]
mod tests {
    use xen_types::DomId;

    use super::*;

    fn dom(min: u64, max: u64, actual: u64) -> DomainMemory {
        DomainMemory {
            domid: DomId(1),
            can_balloon: true,
            dynamic_min: Kib(min),
            target: Kib(actual),
            dynamic_max: Kib(max),
            actual: Kib(actual),
            maxmem: Kib(actual),
            inaccuracy: Kib(0),
        }
    }

    #[test]
    fn surplus_is_shared_with_one_gamma() {
        // Surplus: 0 free + 500 + 500 freeable − 400 target = 600 of a 2000 range: γ = 0.3.
        let ds = [dom(1000, 2000, 1500), dom(2000, 3000, 2500)];
        let mut out = Vec::new();
        compute_targets(Kib(0), &ds, Kib(400), true, &mut out);
        assert_eq!(out, vec![Kib(1300), Kib(2300)]);
    }

    #[test]
    fn gamma_is_clamped() {
        let ds = [dom(1000, 2000, 1500)];
        let mut out = Vec::new();
        compute_targets(Kib(1_000_000), &ds, Kib(0), true, &mut out);
        assert_eq!(out, vec![Kib(2000)]);
        compute_targets(Kib(0), &ds, Kib(1_000_000), true, &mut out);
        assert_eq!(out, vec![Kib(1000)]);
        // No range at all: the target is dynamic-min.
        compute_targets(Kib(0), &[dom(1000, 1000, 1000)], Kib(0), true, &mut out);
        assert_eq!(out, vec![Kib(1000)]);
    }
}
