//! The host's checkpoint stops on the guest's clock, to excuse the part of
//! a stall they explain.
//!
//! In a guest under `selfheal vm`, the host stops QEMU for every
//! checkpoint (tens of ms, 20 times a second). Under TCG the guest's clocks
//! follow the host's, so they run on while no vCPU does: to the guest's
//! canaries, every stop is that long without scheduling progress on every
//! CPU. After each checkpoint the host says when QEMU certainly stood
//! stopped, on its own CLOCK_MONOTONIC; [`HostStops`] places those spans on
//! the guest's CLOCK_MONOTONIC and tells how much of a stall window they
//! fill. Only time the host vouches for is excused: a stall is still one
//! when what the stops leave of it reaches the bound.
//!
//! **Placing the spans.** Guest time = host time + `off`, `off` constant
//! (TCG derives the guest's TSC and timers from the host's clock) but
//! unknown. Each of the host's lines, written at host time `h` and read by
//! the guest at guest time `g`, proves `off <= g - h`; each guest
//! heartbeat, stamped `g` and read by the host at `h`, proves
//! `off >= g - h` (the host sends the largest of those it saw lately). A
//! host span `[a, b)` is certainly at guest `[a + hi, b + lo)`: the spans
//! shrink by the uncertainty `hi - lo`, never grow.
//!
//! **vCPU waits.** Under TCG each vCPU is a host thread, and while it
//! waits on the host's run queue the guest's clocks run on as in a stop,
//! but for that vCPU only. The host reads each vCPU thread's total wait
//! (`/proc/PID/task/TID/schedstat`) every 50 ms or so and says "vCPU `n`
//! waited `w` in all within host `[a, b)`". Where in the interval is not
//! known, so of a stall window only `w` less the part of the interval
//! outside the window is certainly wait (all of `w` when the interval lies
//! inside the window, none when they do not meet); the interval's place
//! on the guest's clock is known within `[lo, hi]`, and the worst place is
//! taken. A vCPU thread stopped for a checkpoint is not runnable, so the
//! stops and the waits never count the same time twice.
//!
//! Pure: the caller reads the clocks (µs of CLOCK_MONOTONIC on each side).

use std::collections::VecDeque;
use std::time::Duration;

/// Upper bounds on the offset are taken from lines read this recently
/// (guest µs): long enough for one to have come without delay, short
/// enough that a slow drift between the clocks does not widen the bound.
const UPPER_WINDOW_US: u64 = 2_000_000;
/// Upper-bound samples kept at most.
const UPPER_KEEP: usize = 128;
/// Spans kept at most (about 25 s at one checkpoint every 50 ms).
const SPANS_KEEP: usize = 512;
/// vCPU waits kept at most (25 s of 4 vCPUs at one line every 50 ms).
const WAITS_KEEP: usize = 2048;
/// The host's word counts while its last line is at most this old: a
/// guest whose host stopped sending is judged as one on bare metal.
const ACTIVE_US: u64 = 3_000_000;

/// The ledger shared by the guest link's reader and the hang pipeline.
pub type SharedHostStops = std::sync::Arc<std::sync::Mutex<HostStops>>;

/// What the guest knows of the host's stops. Times are µs of the guest's
/// CLOCK_MONOTONIC unless named `host_`.
#[derive(Debug, Default, Clone)]
pub struct HostStops {
    /// (guest arrival, arrival − host write time) of recent host lines:
    /// each an upper bound on the offset.
    upper: VecDeque<(u64, i64)>,
    /// The host's latest lower bound on the offset.
    lower: Option<i64>,
    /// Guest spans in which the VM certainly stood stopped, oldest first.
    spans: VecDeque<(u64, u64)>,
    /// Every stop that ended before this guest time has been told.
    covered_until: u64,
    /// Guest arrival of the last line of stops.
    last_news: Option<u64>,
    /// vCPU waits placed, oldest first.
    waits: VecDeque<PlacedWait>,
    /// Every vCPU wait that ended before this guest time has been told.
    waits_covered_until: u64,
    /// Guest arrival of the last line of waits.
    last_waits_news: Option<u64>,
    /// Per vCPU, the end of the last wait interval taken (host µs): a
    /// replayed line adds nothing.
    waits_seen_until: Vec<(u32, u64)>,
    /// vCPU waits placed.
    pub waits_placed: u64,
    /// vCPU waits dropped (clock bounds not known).
    pub waits_unplaced: u64,
    /// Spans dropped because the clock bounds were not known or did not
    /// leave the span any certain part.
    pub spans_unplaced: u64,
    /// Spans placed.
    pub spans_placed: u64,
    /// Width of the offset's uncertainty at the last line, µs (`hi − lo`).
    pub last_uncertainty_us: Option<u64>,
}

/// A vCPU wait the host measured (host µs), as [`HostStops::waits_news`]
/// takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostWait {
    /// The vCPU (the guest's CPU number).
    pub cpu: u32,
    /// `[from, until)`: the interval the wait lies in.
    pub span: [u64; 2],
    /// The wait, µs (at most the interval's length; the caller validated).
    pub wait_us: u64,
}

/// A vCPU wait on the guest's clock: its interval is `[from, until)`
/// moved later by some amount in `[0, slack]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlacedWait {
    cpu: u32,
    from: u64,
    until: u64,
    slack: u64,
    wait_us: u64,
}

impl PlacedWait {
    /// Wait certainly inside `[a, b)`: the wait less the part of its
    /// interval outside the window, at the worst place within the slack
    /// (overlap of a sliding interval is least at an end of the slide).
    fn certain_within(&self, a: u64, b: u64) -> u64 {
        let len = self.until - self.from;
        let overlap = |shift: u64| {
            let (f, u) = (
                self.from.saturating_add(shift),
                self.until.saturating_add(shift),
            );
            u.min(b).saturating_sub(f.max(a))
        };
        let least = overlap(0).min(overlap(self.slack));
        self.wait_us.saturating_sub(len - least)
    }
}

impl HostStops {
    /// An empty ledger: nothing excused.
    pub fn new() -> HostStops {
        HostStops::default()
    }

    /// A line from the host, read at guest time `received`: written at
    /// host time `host_us`, the host's bound `offset_min_us`, and spans
    /// `[from, until)` of host time (validated by the caller: ordered,
    /// each over before `host_us`). Returns how many spans it placed.
    pub fn news(
        &mut self,
        received: u64,
        host_us: u64,
        offset_min_us: Option<i64>,
        spans: &[[u64; 2]],
    ) -> usize {
        self.last_news = Some(received);
        let Some((lo, hi)) = self.bounds(received, host_us, offset_min_us) else {
            self.spans_unplaced += spans.len() as u64;
            return 0;
        };
        self.covered_until = self.covered_until.max(add(host_us, lo));
        let mut placed = 0;
        for &[from, until] in spans {
            let (a, b) = (add(from, hi), add(until, lo));
            if a >= b {
                self.spans_unplaced += 1;
                continue;
            }
            // Lines may repeat a span (a rollback of the guest replays the
            // link); keep the list ordered and without overlaps.
            let a = self.spans.back().map_or(a, |&(_, last)| a.max(last));
            if a < b {
                self.spans.push_back((a, b));
                placed += 1;
            }
        }
        self.spans_placed += placed as u64;
        while self.spans.len() > SPANS_KEEP {
            self.spans.pop_front();
        }
        placed
    }

    /// Takes a line's bounds on the offset (written at host `host_us`,
    /// read at guest `received`): `(lo, hi)`, or `None` while they are
    /// not known or contradict each other.
    fn bounds(
        &mut self,
        received: u64,
        host_us: u64,
        offset_min_us: Option<i64>,
    ) -> Option<(i64, i64)> {
        let upper = sub(received, host_us);
        self.upper.push_back((received, upper));
        while self.upper.len() > UPPER_KEEP
            || self
                .upper
                .front()
                .is_some_and(|&(at, _)| received.saturating_sub(at) > UPPER_WINDOW_US)
        {
            self.upper.pop_front();
        }
        if offset_min_us.is_some() {
            self.lower = offset_min_us;
        }
        let hi = self.upper.iter().map(|&(_, u)| u).min().unwrap_or(upper);
        let Some(lo) = self.lower.filter(|lo| *lo <= hi) else {
            self.last_uncertainty_us = None;
            return None;
        };
        self.last_uncertainty_us = Some(hi.abs_diff(lo));
        Some((lo, hi))
    }

    /// A line of vCPU waits from the host, read at guest time `received`
    /// (as [`HostStops::news`]; the waits validated by the caller: each
    /// inside its interval, which ended before `host_us`). Returns how
    /// many it placed.
    pub fn waits_news(
        &mut self,
        received: u64,
        host_us: u64,
        offset_min_us: Option<i64>,
        waits: &[HostWait],
    ) -> usize {
        self.last_waits_news = Some(received);
        let Some((lo, hi)) = self.bounds(received, host_us, offset_min_us) else {
            self.waits_unplaced += waits.len() as u64;
            return 0;
        };
        self.waits_covered_until = self.waits_covered_until.max(add(host_us, lo));
        let mut placed = 0;
        for w in waits {
            let [from, until] = w.span;
            let i = match self.waits_seen_until.iter().position(|(c, _)| *c == w.cpu) {
                Some(i) => i,
                // Bounded: one entry per vCPU index the host names.
                None if self.waits_seen_until.len() > 4096 => continue,
                None => {
                    self.waits_seen_until.push((w.cpu, 0));
                    self.waits_seen_until.len() - 1
                }
            };
            let seen = &mut self.waits_seen_until[i].1;
            if until <= *seen || from >= until || w.wait_us == 0 {
                continue;
            }
            *seen = until;
            self.waits.push_back(PlacedWait {
                cpu: w.cpu,
                from: add(from, lo),
                until: add(until, lo),
                slack: hi.abs_diff(lo),
                wait_us: w.wait_us.min(until - from),
            });
            placed += 1;
        }
        self.waits_placed += placed as u64;
        while self.waits.len() > WAITS_KEEP {
            self.waits.pop_front();
        }
        placed
    }

    /// The guest's clock may have moved against the host's (the host
    /// rolled the VM back): the offset's bounds are learnt again. Spans
    /// already placed stay.
    pub fn clock_changed(&mut self) {
        self.upper.clear();
        self.lower = None;
    }

    /// The host has been telling its stops lately (at guest time `now`):
    /// a stall is worth holding until the host's word on it comes.
    pub fn active(&self, now: u64) -> bool {
        [self.last_news, self.last_waits_news]
            .into_iter()
            .flatten()
            .any(|t| now.saturating_sub(t) <= ACTIVE_US)
    }

    /// Every host stop and vCPU wait that ended before this guest time is
    /// known: the least of what each kind of line the host is sending
    /// covers (a kind it sent nothing of for [`ACTIVE_US`] while sending
    /// the other is not waited for).
    pub fn covered_until(&self) -> u64 {
        let latest = self.last_news.max(self.last_waits_news);
        let live = |heard: Option<u64>| {
            heard.is_some_and(|h| latest.is_some_and(|l| l.saturating_sub(h) <= ACTIVE_US))
        };
        [
            (self.last_news, self.covered_until),
            (self.last_waits_news, self.waits_covered_until),
        ]
        .into_iter()
        .filter(|(heard, _)| live(*heard))
        .map(|(_, covered)| covered)
        .min()
        .unwrap_or(0)
    }

    /// Every host stop and vCPU wait that ended before guest time `t` is
    /// known.
    pub fn covers(&self, t: u64) -> bool {
        self.covered_until() >= t
    }

    /// How long the VM certainly stood stopped within `[from, to)`.
    pub fn stopped_within(&self, from: u64, to: u64) -> Duration {
        let us: u64 = self
            .spans
            .iter()
            .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
            .sum();
        Duration::from_micros(us)
    }

    /// How long vCPU `cpu` certainly waited for a host CPU within
    /// `[from, to)`.
    pub fn waited_within(&self, cpu: u32, from: u64, to: u64) -> Duration {
        if from >= to {
            return Duration::ZERO;
        }
        let us: u64 = self
            .waits
            .iter()
            .filter(|w| w.cpu == cpu && w.until.saturating_add(w.slack) > from && w.from < to)
            .map(|w| w.certain_within(from, to))
            .sum();
        Duration::from_micros(us)
    }

    /// The part of `[from, to)` on CPU `cpu` that neither the host's stops
    /// nor that vCPU's waits explain.
    pub fn unexplained(&self, cpu: u32, from: u64, to: u64) -> Duration {
        let explained = self.stopped_within(from, to) + self.waited_within(cpu, from, to);
        Duration::from_micros(to.saturating_sub(from)).saturating_sub(explained)
    }
}

/// `a − b` as a signed offset (saturating).
fn sub(a: u64, b: u64) -> i64 {
    (i128::from(a) - i128::from(b)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// `t + off`, clamped to the clock's range.
fn add(t: u64, off: i64) -> u64 {
    (i128::from(t) + i128::from(off)).clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// A guest whose clock is the host's + 7 s; host lines take 3 ms to
    /// arrive and heartbeats 2 ms, so the offset is known to within 5 ms.
    fn ledger_with_stop(from_ms: u64, until_ms: u64) -> HostStops {
        let off = 7_000 * MS;
        let mut l = HostStops::new();
        let lo = (off - 2 * MS) as i64;
        // An earlier line sets the clocks' bounds.
        l.news(
            from_ms * MS - 40 * MS + off + 3 * MS,
            from_ms * MS - 40 * MS,
            Some(lo),
            &[],
        );
        let sent = until_ms * MS + MS;
        let placed = l.news(
            sent + off + 3 * MS,
            sent,
            Some(lo),
            &[[from_ms * MS, until_ms * MS]],
        );
        assert_eq!(placed, 1);
        l
    }

    /// Guest µs of host ms `t`.
    fn g(t_ms: u64) -> u64 {
        t_ms * MS + 7_000 * MS
    }

    #[test]
    fn a_window_inside_a_stop_is_explained_but_for_the_clock_uncertainty() {
        // The host held QEMU stopped 1000–1130 ms (host time).
        let l = ledger_with_stop(1000, 1130);
        assert_eq!(l.last_uncertainty_us, Some(5 * MS));
        // The whole stop: 130 ms, less the 5 ms the clocks leave uncertain.
        assert_eq!(
            l.stopped_within(g(1000), g(1130)),
            Duration::from_millis(125)
        );
        assert_eq!(l.unexplained(0, g(1000), g(1130)), Duration::from_millis(5));
        // A stall window the stop covers fully (inside it).
        assert_eq!(l.unexplained(0, g(1010), g(1100)), Duration::ZERO);
        // Told up to the line's writing (1131 ms), less the uncertainty.
        assert!(l.covers(g(1128)));
        assert!(!l.covers(g(1200)));
    }

    #[test]
    fn a_window_that_only_overlaps_a_stop_keeps_the_rest() {
        let l = ledger_with_stop(1000, 1130);
        // 250 ms of no progress, 130 ms of it the stop: 120 + 5 ms left.
        assert_eq!(
            l.unexplained(0, g(900), g(1150)),
            Duration::from_millis(125)
        );
        // A real stall that began during the stop and went on 400 ms
        // after it: only the 28 ms the stop certainly covers are excused.
        assert_eq!(
            l.unexplained(0, g(1100), g(1530)),
            Duration::from_millis(402)
        );
    }

    #[test]
    fn a_window_without_stops_is_all_unexplained() {
        let l = ledger_with_stop(1000, 1130);
        assert_eq!(
            l.unexplained(0, g(2000), g(2300)),
            Duration::from_millis(300)
        );
        assert_eq!(l.unexplained(0, g(500), g(990)), Duration::from_millis(490));
        assert_eq!(
            HostStops::new().unexplained(0, 0, 300 * MS),
            Duration::from_millis(300)
        );
        assert_eq!(
            l.unexplained(0, g(20), g(10)),
            Duration::ZERO,
            "reversed window"
        );
    }

    #[test]
    fn without_the_hosts_lower_bound_nothing_is_placed() {
        let mut l = HostStops::new();
        assert_eq!(
            l.news(10_000 * MS, 2_000 * MS, None, &[[1_000 * MS, 1_100 * MS]]),
            0
        );
        assert_eq!(l.spans_unplaced, 1);
        assert_eq!(l.stopped_within(0, u64::MAX), Duration::ZERO);
        assert!(l.active(10_000 * MS));
        assert!(!l.active(20_000 * MS));
    }

    #[test]
    fn bounds_that_contradict_each_other_place_nothing() {
        // The host claims the guest is ahead by more than a line's arrival
        // allows (a lying host, or the clocks stepped): nothing excused.
        let mut l = HostStops::new();
        let n = l.news(
            5_000 * MS,
            2_000 * MS,
            Some(4_000 * MS as i64),
            &[[1_000 * MS, 1_100 * MS]],
        );
        assert_eq!(n, 0);
        assert_eq!(l.unexplained(0, 0, 10_000 * MS), Duration::from_secs(10));
    }

    #[test]
    fn a_late_line_only_narrows_nothing_it_widens_the_uncertainty() {
        // A line delayed 80 ms (the guest was busy) gives a worse bound,
        // the earlier quick one still holds: spans stay 5 ms short.
        let mut l = ledger_with_stop(1000, 1130);
        let off = 7_000 * MS;
        l.news(
            1_500 * MS + off + 80 * MS,
            1_500 * MS,
            Some((off - 2 * MS) as i64),
            &[[1_400 * MS, 1_450 * MS]],
        );
        assert_eq!(l.last_uncertainty_us, Some(5 * MS));
        assert_eq!(
            l.stopped_within(g(1400), g(1450)),
            Duration::from_millis(45)
        );
    }

    #[test]
    fn replayed_spans_are_not_counted_twice() {
        let mut l = ledger_with_stop(1000, 1130);
        let off = 7_000 * MS;
        let sent = 1_200 * MS;
        l.news(
            sent + off + 3 * MS,
            sent,
            Some((off - 2 * MS) as i64),
            &[[1000 * MS, 1130 * MS]],
        );
        assert_eq!(l.stopped_within(g(0), g(5000)), Duration::from_millis(125));
    }

    /// As [`ledger_with_stop`], with vCPU `cpu` having waited `wait_ms`
    /// within host `[from_ms, until_ms)` (told in a line at `until_ms` + 1).
    fn ledger_with_wait(cpu: u32, from_ms: u64, until_ms: u64, wait_ms: u64) -> HostStops {
        let off = 7_000 * MS;
        let lo = (off - 2 * MS) as i64;
        let mut l = HostStops::new();
        l.waits_news(
            from_ms * MS - 40 * MS + off + 3 * MS,
            from_ms * MS - 40 * MS,
            Some(lo),
            &[],
        );
        let sent = until_ms * MS + MS;
        let w = HostWait {
            cpu,
            span: [from_ms * MS, until_ms * MS],
            wait_us: wait_ms * MS,
        };
        assert_eq!(l.waits_news(sent + off + 3 * MS, sent, Some(lo), &[w]), 1);
        l
    }

    #[test]
    fn a_wait_whose_interval_lies_in_the_window_is_explained_in_full() {
        // vCPU 1 waited 30 ms somewhere in host 1000–1050 ms; on the
        // guest's clock that interval lies within g(998)..g(1053).
        let l = ledger_with_wait(1, 1000, 1050, 30);
        assert_eq!(
            l.waited_within(1, g(900), g(1200)),
            Duration::from_millis(30)
        );
        assert_eq!(
            l.unexplained(1, g(900), g(1200)),
            Duration::from_millis(270)
        );
        assert_eq!(
            l.waited_within(1, g(998), g(1053)),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn a_wait_whose_interval_only_overlaps_the_window_counts_what_cannot_lie_outside() {
        let l = ledger_with_wait(1, 1000, 1050, 30);
        // From g(1025): at worst 27 ms of the 50 ms interval lie before
        // the window, so at least 3 ms of the 30 ms wait lie inside.
        assert_eq!(
            l.waited_within(1, g(1025), g(1200)),
            Duration::from_millis(3)
        );
        // Up to g(1025): at worst 28 ms lie after it; 2 ms inside.
        assert_eq!(
            l.waited_within(1, g(900), g(1025)),
            Duration::from_millis(2)
        );
        // Half the interval or less inside a 30 ms-in-50 wait: nothing sure.
        assert_eq!(l.waited_within(1, g(1030), g(1200)), Duration::ZERO);
    }

    #[test]
    fn a_wait_outside_the_window_or_on_another_vcpu_explains_nothing() {
        let l = ledger_with_wait(1, 1000, 1050, 30);
        assert_eq!(l.waited_within(1, g(1053), g(1400)), Duration::ZERO);
        assert_eq!(l.waited_within(1, g(500), g(998)), Duration::ZERO);
        assert_eq!(l.waited_within(0, g(900), g(1200)), Duration::ZERO);
        assert_eq!(
            l.unexplained(0, g(900), g(1200)),
            Duration::from_millis(300)
        );
        assert_eq!(
            l.waited_within(1, g(1200), g(900)),
            Duration::ZERO,
            "reversed window"
        );
    }

    #[test]
    fn stops_and_waits_add_up_and_a_replayed_wait_counts_once() {
        let mut l = ledger_with_stop(1000, 1130);
        let off = 7_000 * MS;
        let lo = (off - 2 * MS) as i64;
        let w = |from_ms: u64, until_ms: u64, wait_ms: u64| HostWait {
            cpu: 0,
            span: [from_ms * MS, until_ms * MS],
            wait_us: wait_ms * MS,
        };
        let line = [w(1130, 1180, 40), w(1180, 1230, 45)];
        let sent = 1_231 * MS;
        assert_eq!(l.waits_news(sent + off + 3 * MS, sent, Some(lo), &line), 2);
        // The same line again (a rolled-back guest reads it twice).
        assert_eq!(l.waits_news(sent + off + 4 * MS, sent, Some(lo), &line), 0);
        // g(990)..g(1300): 310 ms; stopped 125, waited 85: 100 left.
        assert_eq!(
            l.unexplained(0, g(990), g(1300)),
            Duration::from_millis(100)
        );
        assert_eq!(l.waits_placed, 2);
    }

    #[test]
    fn the_stalls_are_judged_up_to_what_every_kind_of_line_covers() {
        let off = 7_000 * MS;
        let lo = (off - 2 * MS) as i64;
        let mut l = ledger_with_stop(1000, 1130);
        // Stops told up to host 1131, less 2 ms.
        assert_eq!(l.covered_until(), g(1129));
        // A waits line read at host 1100: now both are waited for.
        l.waits_news(1_100 * MS + off + 3 * MS, 1_100 * MS, Some(lo), &[]);
        assert_eq!(l.covered_until(), g(1098));
        assert!(l.active(g(1100)));
        // Waits keep coming, stops do not (checkpoints off): after 3 s the
        // stops are no longer waited for.
        for t in (1_150..=4_300).step_by(50) {
            l.waits_news(t * MS + off + 3 * MS, t * MS, Some(lo), &[]);
        }
        assert_eq!(l.covered_until(), g(4_298));
    }

    #[test]
    fn without_the_hosts_lower_bound_no_wait_is_placed() {
        let mut l = HostStops::new();
        let w = HostWait {
            cpu: 0,
            span: [1_000 * MS, 1_050 * MS],
            wait_us: 50 * MS,
        };
        assert_eq!(l.waits_news(10_000 * MS, 2_000 * MS, None, &[w]), 0);
        assert_eq!(l.waits_unplaced, 1);
        assert_eq!(l.waited_within(0, 0, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut l = HostStops::new();
        l.news(u64::MAX, 0, Some(i64::MAX), &[[0, u64::MAX]]);
        l.news(0, u64::MAX, Some(i64::MIN), &[[0, u64::MAX]]);
        let w = HostWait {
            cpu: u32::MAX,
            span: [0, u64::MAX],
            wait_us: u64::MAX,
        };
        l.waits_news(u64::MAX, 0, Some(i64::MAX), &[w]);
        l.waits_news(0, u64::MAX, Some(i64::MIN), &[w]);
        let _ = l.unexplained(u32::MAX, 0, u64::MAX);
        let _ = l.waited_within(u32::MAX, 0, u64::MAX);
        let _ = l.unexplained(0, 0, u64::MAX);
        let _ = l.covers(u64::MAX);
    }
}
