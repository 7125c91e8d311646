//! Sets of address ranges `[start, end)`, kept sorted and merged.

/// A sorted list of disjoint, non-adjacent half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ranges(pub Vec<(u64, u64)>);

impl Ranges {
    /// Builds a normalised set from any ranges.
    pub fn from_unsorted(mut v: Vec<(u64, u64)>) -> Ranges {
        v.retain(|(s, e)| s < e);
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ranges(out)
    }

    /// True if `addr` lies in a range.
    pub fn contains(&self, addr: u64) -> bool {
        let i = self.0.partition_point(|(s, _)| *s <= addr);
        i > 0 && addr < self.0[i - 1].1
    }

    /// The parts of `self` not in `other`.
    pub fn minus(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            let mut cur = s;
            for &(os, oe) in &other.0 {
                if oe <= cur || os >= e {
                    continue;
                }
                if os > cur {
                    out.push((cur, os));
                }
                cur = cur.max(oe);
                if cur >= e {
                    break;
                }
            }
            if cur < e {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    /// The parts of `self` also in `other`.
    pub fn intersect(&self, other: &Ranges) -> Ranges {
        self.minus(&self.minus(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = Ranges::from_unsorted(vec![(30, 40), (0, 10), (5, 20), (20, 25)]);
        assert_eq!(a.0, vec![(0, 25), (30, 40)]);
        let b = Ranges::from_unsorted(vec![(3, 4), (22, 35)]);
        assert_eq!(a.minus(&b).0, vec![(0, 3), (4, 22), (35, 40)]);
        assert_eq!(a.intersect(&b).0, vec![(3, 4), (22, 25), (30, 35)]);
        assert!(a.contains(0) && a.contains(24) && !a.contains(25) && !a.contains(41));
        assert_eq!(Ranges::default().minus(&a), Ranges::default());
    }
}
