//! The checkpoint stops the guest lived through, on the host's timeline,
//! to tell a guest's stall report that is only QEMU stopped for
//! checkpoints from a real stall.
//!
//! Under TCG the guest's clocks run on the host's: while the engine holds
//! QEMU stopped for a checkpoint (p99 30–470 ms on a busy host), no vCPU
//! runs but guest time goes on, so the guest's own selfheal sees its CPUs
//! make no scheduling progress for that long and may report a
//! `kernel_stall`. The host knows when it stopped QEMU; a stall the stops
//! inside it account for is not acted on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Stops kept (at 20 checkpoints a second: about 25 s).
const KEEP: usize = 512;
/// A stall report is QEMU's stops when no more than this of it is left
/// unexplained (the guest's clock is mapped onto the host's to within
/// tens of ms, and a stop's end is when its report was read).
const SLACK: Duration = Duration::from_millis(150);
/// Stops this long before a stall's measured start count too (the guest
/// measures a stall from its last sign of progress, which may lie a
/// little before the stop that caused it).
const LEAD: Duration = Duration::from_millis(200);

/// When QEMU stood stopped for checkpoints.
#[derive(Debug, Default)]
pub struct Pauses {
    /// (end, length), oldest first.
    stops: VecDeque<(Instant, Duration)>,
}

/// A guest stall that the host's stops account for.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The stall the guest reported.
    pub stall: Duration,
    /// QEMU stopped for checkpoints within it.
    pub stopped: Duration,
}

impl Pauses {
    /// QEMU stood stopped for `length`, until `end`.
    pub fn stopped(&mut self, end: Instant, length: Duration) {
        if length.is_zero() {
            return;
        }
        self.stops.push_back((end, length));
        while self.stops.len() > KEEP {
            self.stops.pop_front();
        }
    }

    /// How long QEMU stood stopped between `from` and `to`.
    pub fn within(&self, from: Instant, to: Instant) -> Duration {
        self.stops
            .iter()
            .map(|&(end, len)| {
                let start = end.checked_sub(len).unwrap_or(end);
                let (a, b) = (start.max(from), end.min(to));
                b.saturating_duration_since(a)
            })
            .sum()
    }

    /// Whether a stall of `stall` that the guest reported at `made` (host
    /// time) is QEMU's checkpoint stops: they cover at least half of it
    /// and leave no more than [`SLACK`] unexplained.
    pub fn explain(&self, made: Instant, stall: Duration) -> Option<Explained> {
        let from = made.checked_sub(stall + LEAD).unwrap_or(made);
        let stopped = self.within(from, made).min(stall);
        (stopped * 2 >= stall && stall.saturating_sub(stopped) <= SLACK)
            .then_some(Explained { stall, stopped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Pause shapes from the guest test's run beside two CPU-bound loops
    /// (`checkpoint pauses: p50 44 ms, p99 217–469 ms`): one long stop in
    /// a run of short ones.
    fn busy_host(t0: Instant) -> Pauses {
        let mut p = Pauses::default();
        for i in (0..40u64).filter(|i| *i != 21) {
            let len = if i == 20 { ms(290) } else { ms(40) };
            p.stopped(t0 + ms(250 * i) + len, len);
        }
        p
    }

    #[test]
    fn a_stall_the_size_of_a_checkpoint_stop_is_explained() {
        let t0 = Instant::now();
        let p = busy_host(t0);
        // The 290 ms stop ended at 5290 ms; the guest reported 316 ms of no
        // progress 60 ms later.
        let e = p.explain(t0 + ms(5350), ms(316)).expect("explained");
        assert_eq!(e.stopped, ms(290));
        assert_eq!(p.within(t0 + ms(5000), t0 + ms(5290)), ms(290));
    }

    #[test]
    fn a_longer_stall_or_one_without_stops_is_not() {
        let t0 = Instant::now();
        let p = busy_host(t0);
        // A real stall: 2 s with the usual 40 ms stops in it.
        assert_eq!(p.explain(t0 + ms(7000), ms(2000)), None);
        // 500 ms around the long stop: 290 + 40 ms of it are stops, 170 ms
        // are not.
        assert_eq!(p.explain(t0 + ms(5350), ms(500)), None);
        // After the stops end.
        assert_eq!(p.explain(t0 + ms(20_000), ms(250)), None);
        assert_eq!(Pauses::default().explain(t0, ms(100)), None);
    }
}
