//! A domain's physical-to-machine map (P2M): which guest frames are populated and the
//! simulated machine frames behind them.

use std::collections::BTreeMap;

use xen_types::{Mfn, Pfn};

/// Frames populated in a domain's physical address space: extents of consecutive pfns,
/// each backed by consecutive (simulated) machine frames.
#[derive(Debug, Default, Clone)]
pub struct P2m {
    /// start pfn -> (length, first mfn)
    ext: BTreeMap<u64, (u64, u64)>,
    count: u64,
}

impl P2m {
    /// The machine frame behind `pfn`, if it is populated.
    pub fn lookup(&self, pfn: Pfn) -> Option<Mfn> {
        let (s, (l, m)) = self.ext.range(..=pfn.0).next_back()?;
        (pfn.0 < s + l).then(|| Mfn(m + (pfn.0 - s)))
    }

    /// The guest frame backed by machine frame `mfn`, if any (a walk of the extents).
    pub fn reverse(&self, mfn: Mfn) -> Option<Pfn> {
        self.ext
            .iter()
            .find(|(_, (l, m))| (*m..m + l).contains(&mfn.0))
            .map(|(s, (_, m))| Pfn(s + (mfn.0 - m)))
    }

    /// The populated extents in pfn order: (first pfn, length).
    pub fn extents(&self) -> impl Iterator<Item = (Pfn, u64)> + '_ {
        self.ext.iter().map(|(s, (l, _))| (Pfn(*s), *l))
    }

    /// Number of populated frames.
    pub fn populated(&self) -> u64 {
        self.count
    }

    /// The unpopulated sub-ranges of `[start, start + len)`.
    pub(crate) fn holes(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let end = start + len;
        let mut out = Vec::new();
        let mut cur = start;
        if let Some((s, (l, _))) = self.ext.range(..=start).next_back() {
            cur = cur.max(s + l);
        }
        for (s, (l, _)) in self.ext.range(start..end) {
            if *s > cur {
                out.push((cur, s - cur));
            }
            cur = cur.max(s + l);
        }
        if cur < end {
            out.push((cur, end - cur));
        }
        out
    }

    pub(crate) fn insert(&mut self, start: u64, len: u64, mfn: u64) {
        self.ext.insert(start, (len, mfn));
        self.count += len;
    }

    /// Removes up to `n` of the highest populated frames for which `keep` is false; returns
    /// how many it removed. Works extent by extent, so a large balloon costs little.
    pub(crate) fn remove_top(&mut self, n: u64, keep: impl Fn(u64) -> bool) -> u64 {
        let mut removed = 0;
        // Exclusive upper bound of the frames still to look at.
        let mut cursor = u64::MAX;
        while removed < n {
            let Some((&s, &(l, m))) = self.ext.range(..cursor).next_back() else {
                break;
            };
            let end = (s + l).min(cursor);
            let mut p = end;
            while p > s && removed + (end - p) < n && !keep(p - 1) {
                p -= 1;
            }
            if p < end {
                self.ext.remove(&s);
                if p > s {
                    self.ext.insert(s, (p - s, m));
                }
                if s + l > end {
                    self.ext.insert(end, (s + l - end, m + (end - s)));
                }
                self.count -= end - p;
                removed += end - p;
            }
            // Below a kept frame (p - 1), or below this extent.
            cursor = if p > s { p - 1 } else { s };
        }
        removed
    }

    pub(crate) fn remove(&mut self, pfn: u64) -> bool {
        let Some((&s, &(l, m))) = self.ext.range(..=pfn).next_back() else {
            return false;
        };
        if pfn >= s + l {
            return false;
        }
        self.ext.remove(&s);
        if pfn > s {
            self.ext.insert(s, (pfn - s, m));
        }
        if pfn + 1 < s + l {
            self.ext
                .insert(pfn + 1, (s + l - pfn - 1, m + (pfn + 1 - s)));
        }
        self.count -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2m_extents_split_and_fill() {
        let mut p = P2m::default();
        p.insert(0, 10, 100);
        assert_eq!(p.lookup(Pfn(9)), Some(Mfn(109)));
        assert_eq!(p.reverse(Mfn(109)), Some(Pfn(9)));
        assert_eq!(p.reverse(Mfn(110)), None);
        assert_eq!(p.lookup(Pfn(10)), None);
        assert!(p.remove(5));
        assert!(!p.remove(5));
        assert_eq!(p.lookup(Pfn(4)), Some(Mfn(104)));
        assert_eq!(p.lookup(Pfn(6)), Some(Mfn(106)));
        assert_eq!(p.populated(), 9);
        assert_eq!(p.holes(0, 12), vec![(5, 1), (10, 2)]);
        assert_eq!(p.holes(20, 4), vec![(20, 4)]);
    }

    #[test]
    fn remove_top_takes_the_highest_frames_around_kept_ones() {
        let mut p = P2m::default();
        p.insert(0, 10, 100);
        p.insert(20, 5, 200);
        // Frames 24 and 8 are kept: 23, 22, 21, 20, 9, 7 go.
        assert_eq!(p.remove_top(6, |f| f == 24 || f == 8), 6);
        assert_eq!(p.populated(), 9);
        assert_eq!(p.lookup(Pfn(24)), Some(Mfn(204)));
        assert_eq!(p.lookup(Pfn(8)), Some(Mfn(108)));
        assert_eq!(p.lookup(Pfn(6)), Some(Mfn(106)));
        assert_eq!(p.holes(0, 25), vec![(7, 1), (9, 15)]);
        // Asking for more than there is removes everything not kept.
        assert_eq!(p.remove_top(100, |f| f == 24 || f == 8), 7);
        assert_eq!(p.populated(), 2);
    }
}
