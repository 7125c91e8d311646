//! CPU stalls held until the host's word on them (a guest under `selfheal
//! vm`): the host stops QEMU for every checkpoint and the guest's clocks
//! run on meanwhile, so a canary silent for the bound may only have lived
//! through a stop. Such a stall is held, not reported, until the host has
//! told every stop up to it ([`HostStops::covers`]); it is reported once
//! the part of it the stops leave unexplained reaches the bound, and
//! dropped (counted as excused) when it ended short of that. The host may
//! also tell how long each vCPU thread waited for a host CPU: that wait is
//! excused on its own CPU the same way.
//!
//! Only time the host vouches for is ever excused: a stall held for
//! [`MAX_SILENCE`] while the host's word lags that far behind is reported
//! as it was seen, and a stall that goes on is measured against the bound
//! again each time the host's word advances.

use std::time::{Duration, Instant};

use selfheal_detect::host_stops::{HostStops, SharedHostStops};

/// A held stall waits at most this long for the host's word on it.
pub(crate) const MAX_SILENCE: Duration = Duration::from_secs(1);
/// Held stalls are looked at again this often.
pub(crate) const RECHECK: Duration = Duration::from_millis(25);

/// A stall seen by the canaries and not yet reported.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    cpu: u32,
    since: Instant,
    seen: Instant,
    ended: Option<Instant>,
}

/// The part of a stall the host explains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HostTime {
    /// QEMU stood stopped for checkpoints.
    pub stopped: Duration,
    /// The stalled CPU's vCPU thread waited for a host CPU.
    pub waited: Duration,
}

/// What became of a held stall.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// A stall: report it as the canaries saw it.
    Report {
        cpu: u32,
        since: Instant,
        /// From its start to its end, or to now while it goes on.
        stalled_for: Duration,
        /// The part of it the host's stops explain.
        stopped: Duration,
        /// The part of it this CPU's vCPU waited for a host CPU.
        waited: Duration,
    },
    /// The host's stops and this vCPU's waits explain it: no stall.
    Excused {
        cpu: u32,
        stalled_for: Duration,
        stopped: Duration,
        waited: Duration,
    },
}

/// The held stalls and the host's stops they are judged by.
#[derive(Debug)]
pub(crate) struct HeldStalls {
    ledger: SharedHostStops,
    held: Vec<Held>,
}

/// `t` on CLOCK_MONOTONIC in µs, given that `now` is `now_us`.
fn us(t: Instant, now: Instant, now_us: u64) -> u64 {
    now_us.saturating_sub(now.saturating_duration_since(t).as_micros() as u64)
}

impl HeldStalls {
    pub(crate) fn new(ledger: SharedHostStops) -> HeldStalls {
        HeldStalls {
            ledger,
            held: Vec::new(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, HostStops> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stall of `cpu` is held.
    pub(crate) fn holds(&self, cpu: u32) -> bool {
        self.held.iter().any(|h| h.cpu == cpu)
    }

    /// No stall is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds a stall of `cpu` that began at `since`, seen at `now`, when
    /// the host is telling its stops; false: report it now.
    pub(crate) fn hold(&mut self, cpu: u32, since: Instant, now: Instant, now_us: u64) -> bool {
        if !self.ledger().active(now_us) {
            return false;
        }
        self.held.retain(|h| h.cpu != cpu);
        self.held.push(Held {
            cpu,
            since,
            seen: now,
            ended: None,
        });
        true
    }

    /// A held stall of `cpu` ended after `lasted`; false when none was held.
    pub(crate) fn cleared(&mut self, cpu: u32, lasted: Duration) -> bool {
        match self
            .held
            .iter_mut()
            .find(|h| h.cpu == cpu && h.ended.is_none())
        {
            Some(h) => {
                h.ended = Some(h.since + lasted);
                true
            }
            None => false,
        }
    }

    /// When to look at the held stalls again.
    pub(crate) fn next_check(&self, now: Instant) -> Option<Instant> {
        (!self.held.is_empty()).then(|| now + RECHECK)
    }

    /// Judges every held stall at `now` against `bound`; returns those
    /// decided (the others stay held).
    pub(crate) fn release(&mut self, now: Instant, now_us: u64, bound: Duration) -> Vec<Verdict> {
        if self.held.is_empty() {
            return Vec::new();
        }
        // The field, not `self.ledger()`: `held` is borrowed below.
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        self.held
            .retain(|h| match judge(&ledger, h, now, now_us, bound) {
                Some(v) => {
                    out.push(v);
                    false
                }
                None => true,
            });
        out
    }
}

/// The verdict on `h` at `now`, or `None` to keep holding it.
fn judge(
    ledger: &HostStops,
    h: &Held,
    now: Instant,
    now_us: u64,
    bound: Duration,
) -> Option<Verdict> {
    let at = |t: Instant| us(t, now, now_us);
    let end = h.ended.unwrap_or(now).min(now);
    let stalled_for = end.saturating_duration_since(h.since);
    let (since_us, end_us) = (at(h.since), at(end));
    // Only the part the host has told about is judged: a stop after it
    // may still be told.
    let known_until = end_us.min(ledger.covered_until());
    let unexplained_known = ledger.unexplained(h.cpu, since_us, known_until);
    let stopped = ledger.stopped_within(since_us, end_us);
    let waited = ledger.waited_within(h.cpu, since_us, end_us);
    let report = Verdict::Report {
        cpu: h.cpu,
        since: h.since,
        stalled_for,
        stopped,
        waited,
    };
    if unexplained_known >= bound {
        return Some(report);
    }
    if h.ended.is_some() && ledger.covers(end_us) {
        return Some(Verdict::Excused {
            cpu: h.cpu,
            stalled_for,
            stopped,
            waited,
        });
    }
    // The host's word stopped coming (its stops, or the guest's reader
    // trapped on the stalled CPU): nothing vouches for the rest being a
    // stop. Held a while first, so that a stop longer than that, told
    // just after it, still counts.
    let untold = Duration::from_micros(at(now).saturating_sub(ledger.covered_until()));
    if now.saturating_duration_since(h.seen) >= MAX_SILENCE && untold >= MAX_SILENCE {
        return Some(report);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use selfheal_detect::host_stops::HostWait;

    use super::*;

    const MS: u64 = 1000;
    const BOUND: Duration = Duration::from_millis(200);

    /// A clock pair: guest Instant `t0` is `T0` µs of CLOCK_MONOTONIC; the
    /// host's clock equals the guest's (offset known within 2 ms).
    const T0: u64 = 100_000 * MS;

    struct World {
        t0: Instant,
        held: HeldStalls,
        ledger: SharedHostStops,
    }

    impl World {
        fn new() -> World {
            let ledger: SharedHostStops = Arc::new(Mutex::new(HostStops::new()));
            World {
                t0: Instant::now(),
                held: HeldStalls::new(ledger.clone()),
                ledger,
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        /// The host's line written at `sent_ms` with stops `spans` (ms
        /// after t0), read 1 ms later; heartbeats bound the offset 1 ms
        /// the other way.
        fn news(&self, sent_ms: u64, spans: &[(u64, u64)]) {
            let spans: Vec<[u64; 2]> = spans
                .iter()
                .map(|&(a, b)| [T0 + a * MS, T0 + b * MS])
                .collect();
            self.ledger.lock().unwrap().news(
                T0 + sent_ms * MS + MS,
                T0 + sent_ms * MS,
                Some(-(MS as i64)),
                &spans,
            );
        }
        /// The host's line of vCPU waits read at `sent_ms`: `(cpu, from,
        /// until, wait)` ms after t0.
        fn waits(&self, sent_ms: u64, waits: &[(u32, u64, u64, u64)]) {
            let waits: Vec<HostWait> = waits
                .iter()
                .map(|&(cpu, a, b, w)| HostWait {
                    cpu,
                    span: [T0 + a * MS, T0 + b * MS],
                    wait_us: w * MS,
                })
                .collect();
            self.ledger.lock().unwrap().waits_news(
                T0 + sent_ms * MS + MS,
                T0 + sent_ms * MS,
                Some(-(MS as i64)),
                &waits,
            );
        }
        fn release(&mut self, now_ms: u64) -> Vec<Verdict> {
            let now = self.at(now_ms);
            self.held.release(now, T0 + now_ms * MS, BOUND)
        }
        fn hold(&mut self, cpu: u32, since_ms: u64, now_ms: u64) -> bool {
            let (since, now) = (self.at(since_ms), self.at(now_ms));
            self.held.hold(cpu, since, now, T0 + now_ms * MS)
        }
    }

    #[test]
    fn without_the_hosts_word_nothing_is_held() {
        let mut w = World::new();
        assert!(!w.hold(0, 0, 250));
    }

    #[test]
    fn a_stall_the_stop_fills_is_excused_once_the_host_told_it() {
        let mut w = World::new();
        w.news(900, &[]);
        // Stopped 1000–1180 ms; the canary last ran at 990 and ran again
        // at 1215: 225 ms of silence, seen at 1200.
        assert!(w.hold(1, 990, 1200));
        assert!(w.held.cleared(1, Duration::from_millis(225)));
        assert_eq!(w.release(1210), vec![], "the host has not told it yet");
        w.news(1220, &[(1000, 1180)]);
        // 180 ms stopped less 2 ms of clock uncertainty: 47 ms unexplained.
        assert_eq!(
            w.release(1230),
            vec![Verdict::Excused {
                cpu: 1,
                stalled_for: Duration::from_millis(225),
                stopped: Duration::from_millis(178),
                waited: Duration::ZERO,
            }]
        );
        assert_eq!(w.release(1300), vec![]);
    }

    #[test]
    fn a_stall_that_only_overlaps_a_stop_is_reported_when_the_rest_reaches_the_bound() {
        let mut w = World::new();
        w.news(900, &[]);
        // Stopped 1000–1100; the CPU really stalls from 990 on (a loop with
        // preemption off), seen at 1200.
        assert!(w.hold(1, 990, 1200));
        w.news(1210, &[(1000, 1100)]);
        // Known to 1209: 219 ms of window, 98 of it stopped.
        assert_eq!(w.release(1215), vec![]);
        w.news(1300, &[]);
        w.news(1330, &[]);
        // Known to 1329: 339 − 98 = 241 ms unexplained ≥ 200 ms.
        let v = w.release(1335);
        assert_eq!(
            v,
            vec![Verdict::Report {
                cpu: 1,
                since: w.at(990),
                stalled_for: Duration::from_millis(345),
                stopped: Duration::from_millis(98),
                waited: Duration::ZERO,
            }]
        );
    }

    #[test]
    fn a_stall_with_no_stop_in_it_is_reported_as_soon_as_the_host_speaks() {
        let mut w = World::new();
        w.news(900, &[(850, 880)]);
        assert!(w.hold(0, 1000, 1200));
        // Ended at 1260: 260 ms, none of it a stop.
        w.held.cleared(0, Duration::from_millis(260));
        w.news(1270, &[]);
        assert!(matches!(
            w.release(1275)[..],
            [Verdict::Report { cpu: 0, stopped, .. }] if stopped.is_zero()
        ));
    }

    #[test]
    fn a_host_that_falls_silent_excuses_nothing() {
        let mut w = World::new();
        w.news(900, &[]);
        assert!(w.hold(0, 990, 1200));
        assert_eq!(w.release(1900), vec![]);
        // A second passed with no word covering 1200: reported as seen.
        assert!(matches!(
            w.release(2200)[..],
            [Verdict::Report { cpu: 0, .. }]
        ));
    }

    #[test]
    fn a_host_whose_word_stops_after_the_stall_began_excuses_nothing_more() {
        // Lab run preempt_loop, 2026-12-07 17:09: the host's lines covered
        // the moment the stall was seen, then stopped for 4 s; the stall
        // must not wait for them.
        let mut w = World::new();
        w.news(900, &[]);
        assert!(w.hold(1, 1000, 1190));
        w.news(1195, &[]);
        assert_eq!(w.release(1200), vec![], "194 ms known, under the bound");
        assert_eq!(w.release(2000), vec![]);
        assert!(matches!(
            w.release(2200)[..],
            [Verdict::Report { cpu: 1, stalled_for, .. }] if stalled_for == Duration::from_millis(1200)
        ));
    }

    #[test]
    fn a_full_overlap_ongoing_is_held_not_dropped() {
        // A stop longer than the bound, the stall still on (the canary has
        // not run since): held while the host's word explains it all.
        let mut w = World::new();
        w.news(900, &[]);
        assert!(w.hold(1, 995, 1250));
        w.news(1260, &[(1000, 1250)]);
        assert_eq!(w.release(1262), vec![]);
        assert_eq!(w.held.held.len(), 1);
        w.held.cleared(1, Duration::from_millis(262));
        w.news(1280, &[]);
        assert!(matches!(
            w.release(1285)[..],
            [Verdict::Excused { cpu: 1, .. }]
        ));
    }

    #[test]
    fn a_stall_its_vcpus_wait_explains_is_excused_on_that_cpu_only() {
        // The host starved the vCPU threads: vCPU 1 waited 190 of 250 ms,
        // vCPU 0 nothing. Both canaries were silent 990–1240 ms.
        let mut w = World::new();
        w.waits(900, &[]);
        w.news(900, &[]);
        assert!(w.hold(1, 990, 1200));
        assert!(w.hold(0, 990, 1200));
        w.held.cleared(1, Duration::from_millis(250));
        w.held.cleared(0, Duration::from_millis(250));
        w.news(1245, &[]);
        assert_eq!(w.release(1246), vec![], "the waits are not told yet");
        w.waits(
            1241,
            &[
                (1, 990, 1040, 48),
                (1, 1040, 1090, 45),
                (1, 1090, 1140, 47),
                (1, 1140, 1190, 40),
                (1, 1190, 1240, 10),
            ],
        );
        let v = w.release(1250);
        assert_eq!(v.len(), 2, "{v:?}");
        // vCPU 1: 190 ms waited (less the clocks' 2 ms slack at the
        // window's edge): 62 ms unexplained, no stall.
        assert!(
            v.contains(&Verdict::Excused {
                cpu: 1,
                stalled_for: Duration::from_millis(250),
                stopped: Duration::ZERO,
                waited: Duration::from_millis(188),
            }),
            "{v:?}"
        );
        // vCPU 0 did not wait: its 250 ms stall stands.
        assert!(
            v.iter()
                .any(|v| matches!(v, Verdict::Report { cpu: 0, waited, .. } if waited.is_zero())),
            "{v:?}"
        );
    }

    #[test]
    fn a_real_stall_through_vcpu_waits_is_reported_once_what_they_leave_reaches_the_bound() {
        // preempt_loop on a starved host: CPU 1 spins with preemption off
        // from 1000 ms on, its vCPU thread waiting half of every 50 ms.
        let mut w = World::new();
        w.news(950, &[]);
        w.waits(950, &[]);
        let mut reported = None;
        for k in 0..40u64 {
            let until = 1000 + 50 * (k + 1);
            w.waits(until, &[(1, until - 50, until, 25)]);
            w.news(until, &[]);
            if until == 1200 {
                // The canary, silent since 1000, is seen stalled.
                assert!(w.hold(1, 1000, 1200));
            }
            if until < 1200 {
                continue;
            }
            if let [Verdict::Report {
                cpu: 1,
                stalled_for,
                waited,
                ..
            }] = w.release(until + 2)[..]
            {
                reported = Some((stalled_for, waited));
                break;
            }
        }
        let (stalled_for, waited) = reported.expect("the stall is reported");
        // 200 ms of it unexplained: about 400 ms in, half of it waits.
        assert!(
            stalled_for >= Duration::from_millis(400) && stalled_for <= Duration::from_millis(460),
            "{stalled_for:?}"
        );
        assert!(stalled_for - waited >= BOUND, "{stalled_for:?} {waited:?}");
    }
}
