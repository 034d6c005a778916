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
}
