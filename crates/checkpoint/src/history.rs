//! Which checkpoints are kept: the newest `keep`, and (with
//! [`Older`](crate::engine::Older)) older ones thinned out to one per
//! `every`, back to `span`.
//!
//! Dropping a checkpoint from the middle of the history merges its undo
//! record into the older neighbour's: that record then takes the memory
//! from the next kept checkpoint straight back to the neighbour. For a page
//! in both records the older neighbour's content wins (it is applied last),
//! so only its entry is kept and the other page copy is freed. Older
//! history therefore costs the pages written over its span once, not a
//! copy per checkpoint.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::engine::Older;
use crate::pages::{PagePool, Undo};
use crate::session::Session;

impl Undo {
    /// Appends `newer` (the record of the interval after this one), so that
    /// applying the result goes back over both intervals, and frees page
    /// copies that would be overwritten anyway.
    pub(crate) fn absorb_newer(&mut self, newer: Undo, pool: &mut PagePool) {
        // Records are applied last entry first, so the first entry for an
        // address decides its final content.
        let mut seen: HashSet<u64> = self.entries.iter().map(|(a, _)| *a).collect();
        for (addr, prior) in newer.entries {
            if seen.insert(addr) {
                self.entries.push((addr, prior));
            } else if let Some(p) = prior {
                pool.put(p);
            }
        }
    }
}

/// Which checkpoints (indices, oldest first) to drop, given when each was
/// taken: everything beyond the newest `keep`, except one per `every` back
/// to `span` when `older` is set. Pure, for tests.
pub(crate) fn to_drop(
    taken: &[Instant],
    keep: usize,
    older: Option<Older>,
    now: Instant,
) -> Vec<usize> {
    let n = taken.len();
    if n <= keep {
        return Vec::new();
    }
    let recent_start = n - keep;
    let Some(o) = older else {
        return (0..recent_start).collect();
    };
    let every = o.every.max(Duration::from_millis(1));
    let mut drop = Vec::new();
    // Oldest first: keep one, then the next one at least `every` newer.
    // Called at every checkpoint, this keeps the spacing as checkpoints
    // leave the recent window one by one.
    let mut last_kept: Option<Instant> = None;
    for (i, &t) in taken.iter().enumerate().take(recent_start) {
        let too_old = now.saturating_duration_since(t) > o.span;
        let spaced = last_kept.is_none_or(|k| t.saturating_duration_since(k) >= every);
        if !too_old && spaced {
            last_kept = Some(t);
        } else {
            drop.push(i);
        }
    }
    drop
}

impl Session {
    /// Drops the checkpoints [`to_drop`] names, merging undo records.
    pub(crate) fn trim_history(&mut self) {
        let taken: Vec<Instant> = self.history.iter().map(|c| c.taken_at).collect();
        let drop = to_drop(&taken, self.keep, self.older, Instant::now());
        // Highest index first, so the indices still to drop stay valid.
        for &i in drop.iter().rev() {
            let Some(gone) = self.history.remove(i) else {
                continue;
            };
            if i == 0 {
                gone.undo.release(&mut self.pool);
            } else {
                let prev = &mut self.history[i - 1];
                prev.undo.absorb_newer(gone.undo, &mut self.pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::{Shadow, PAGE};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn without_older_history_only_the_newest_keep_stay() {
        let t0 = Instant::now();
        let taken: Vec<Instant> = (0..10).map(|i| t0 + ms(50 * i)).collect();
        assert_eq!(to_drop(&taken, 8, None, t0 + ms(500)), vec![0, 1]);
        assert!(to_drop(&taken, 10, None, t0 + ms(500)).is_empty());
    }

    #[test]
    fn older_history_keeps_one_per_every_back_to_span() {
        let t0 = Instant::now();
        // 50 ms apart for 3 s; keep the newest 4, then one per second.
        let taken: Vec<Instant> = (0..=60).map(|i| t0 + ms(50 * i)).collect();
        let older = Some(Older {
            every: ms(1000),
            span: ms(2600),
        });
        let drop = to_drop(&taken, 4, older, t0 + ms(3000));
        let kept: Vec<u64> = (0..=60u64)
            .filter(|i| !drop.contains(&(*i as usize)))
            .map(|i| i * 50)
            .collect();
        // Past the span: before 400. Then one per second from there.
        assert_eq!(kept, vec![400, 1400, 2400, 2850, 2900, 2950, 3000]);
    }

    #[test]
    fn thinning_at_every_checkpoint_keeps_the_spacing_and_a_bounded_count() {
        let t0 = Instant::now();
        let older = Some(Older {
            every: ms(1000),
            span: ms(10_000),
        });
        let mut held: Vec<Instant> = Vec::new();
        for i in 0..=600u64 {
            let now = t0 + ms(50 * i);
            held.push(now);
            for &d in to_drop(&held, 8, older, now).iter().rev() {
                held.remove(d);
            }
            assert!(held.len() <= 8 + 11, "{} held at {i}", held.len());
        }
        let now = t0 + ms(30_000);
        let old = &held[..held.len() - 8];
        assert!(
            old.len() >= 9,
            "about one per second over 10 s: {}",
            old.len()
        );
        assert!(now.duration_since(old[0]) <= ms(10_000));
        for w in old.windows(2) {
            assert!(w[1].duration_since(w[0]) >= ms(1000));
        }
    }

    #[test]
    fn merged_undo_goes_back_over_both_intervals() {
        let mut pool = PagePool::default();
        let page = |pool: &mut PagePool, v: u8| {
            let mut p = pool.get();
            p.fill(v);
            p
        };
        let mut s = Shadow::default();
        // Checkpoint 0: A=1. Checkpoint 1: A=2, B=5. Checkpoint 2: A=3, B gone.
        let mut u_init = Undo::default();
        s.set(0x1000, Some(page(&mut pool, 1)), &mut u_init);
        u_init.release(&mut pool);
        let mut u0 = Undo::default();
        s.set(0x1000, Some(page(&mut pool, 2)), &mut u0);
        s.set(0x2000, Some(page(&mut pool, 5)), &mut u0);
        let mut u1 = Undo::default();
        s.set(0x1000, Some(page(&mut pool, 3)), &mut u1);
        s.clear_range(0x2000, 0x3000, &mut u1);
        // Drop checkpoint 1: checkpoint 0's record absorbs its record.
        u0.absorb_newer(u1, &mut pool);
        assert_eq!(u0.entries.len(), 2, "one entry per page");
        let mut touched = Vec::new();
        s.apply_undo(u0, &mut pool, &mut touched);
        assert_eq!(s.get(0x1000).unwrap()[0], 1);
        assert!(s.get(0x2000).is_none(), "B was pristine at checkpoint 0");
        // Only the shadow's page of A is still handed out.
        assert_eq!(pool.live_bytes(), PAGE as u64);
    }
}
