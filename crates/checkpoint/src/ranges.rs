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

    /// The parts of `self` not in `other`. Linear in the sizes of both
    /// (both are sorted): checkpoints subtract sets of thousands of runs.
    pub fn minus(&self, other: &Ranges) -> Ranges {
        let o = &other.0;
        let mut out = Vec::new();
        let mut j = 0;
        for &(s, e) in &self.0 {
            // Ranges of `other` ending before `s` cannot touch this range
            // nor any later one.
            while j < o.len() && o[j].1 <= s {
                j += 1;
            }
            let mut cur = s;
            let mut k = j;
            while k < o.len() && o[k].0 < e {
                let (os, oe) = o[k];
                if os > cur {
                    out.push((cur, os));
                }
                cur = cur.max(oe);
                if cur >= e {
                    break;
                }
                k += 1;
            }
            if cur < e {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    /// The parts in either.
    pub fn union(&self, other: &Ranges) -> Ranges {
        let mut v = Vec::with_capacity(self.0.len() + other.0.len());
        v.extend_from_slice(&self.0);
        v.extend_from_slice(&other.0);
        Ranges::from_unsorted(v)
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
        assert_eq!(a.union(&b).0, vec![(0, 40)]);
    }

    #[test]
    fn minus_matches_a_page_by_page_reference() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut gen = move || {
            let n = 1 + next(20);
            Ranges::from_unsorted(
                (0..n)
                    .map(|_| {
                        let s = next(200);
                        (s, s + 1 + next(12))
                    })
                    .collect(),
            )
        };
        for _ in 0..200 {
            let (a, b) = (gen(), gen());
            let want: Vec<u64> = (0..220)
                .filter(|&p| a.contains(p) && !b.contains(p))
                .collect();
            let got = a.minus(&b);
            let got_pages: Vec<u64> = (0..220).filter(|&p| got.contains(p)).collect();
            assert_eq!(got_pages, want, "{a:?} minus {b:?} = {got:?}");
            assert_eq!(Ranges::from_unsorted(got.0.clone()), got, "normalised");
        }
    }
}
