//! Telling the guest when QEMU stood stopped for checkpoints
//! ([`HostMessage::Stopped`]), so the guest's own stall detector excuses
//! the part of a stall those stops fill (the guest's clocks run on while
//! its vCPUs are held), and how long each vCPU thread waited for a host
//! CPU ([`HostMessage::Waited`], read by [`crate::vcpu_wait`]).
//!
//! The spans go out on the host's CLOCK_MONOTONIC with a lower bound on
//! (guest clock − host clock), from the guest's heartbeats: each is
//! stamped by the guest before it is written and read here after, so
//! `guest stamp − host read` never exceeds the true offset. The guest adds
//! the upper bound from these lines' arrival (see
//! `selfheal_detect::host_stops`). Pure: the run loop reads the clocks.

use std::collections::VecDeque;

use selfheal_guestlink::{HostMessage, Stops, VcpuWait, Waits, MAX_STOP_SPANS, MAX_WAITS};

use crate::vcpu_wait::WaitSample;

/// Heartbeats this recent (host µs) bound the offset.
const LOWER_WINDOW_US: u64 = 2_000_000;
/// Heartbeat samples kept at most.
const LOWER_KEEP: usize = 64;

/// Stops not yet told, and what the guest's heartbeats say of its clock.
#[derive(Debug, Default)]
pub struct StopTeller {
    /// (host read µs, guest stamp − host read) of recent heartbeats.
    lower: VecDeque<(u64, i64)>,
    /// Spans not yet sent, oldest first.
    untold: VecDeque<[u64; 2]>,
    /// Spans dropped untold (the link was down for a long while).
    pub dropped: u64,
    /// vCPU waits not yet sent, oldest first.
    untold_waits: VecDeque<VcpuWait>,
    /// The last read of the waits not yet sent (host µs).
    waits_read_us: Option<u64>,
    /// vCPU waits dropped untold.
    pub waits_dropped: u64,
}

impl StopTeller {
    /// A guest heartbeat stamped `guest_mono_ms`, read at host `read_us`.
    pub fn heartbeat(&mut self, guest_mono_ms: u64, read_us: u64) {
        let guest_us = i128::from(guest_mono_ms) * 1000;
        let bound = (guest_us - i128::from(read_us)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        self.lower.push_back((read_us, bound));
        while self.lower.len() > LOWER_KEEP
            || self
                .lower
                .front()
                .is_some_and(|&(at, _)| read_us.saturating_sub(at) > LOWER_WINDOW_US)
        {
            self.lower.pop_front();
        }
    }

    /// The guest's clock may have moved against the host's (a rollback,
    /// QEMU paused over QMP): bounds learnt before do not hold.
    pub fn clock_changed(&mut self) {
        self.lower.clear();
    }

    /// QEMU stood stopped over `span` (host µs, `[from, until)`); empty
    /// spans are ignored.
    pub fn stopped(&mut self, span: [u64; 2]) {
        if span[0] >= span[1] || self.untold.back().is_some_and(|b| span[0] < b[1]) {
            return;
        }
        self.untold.push_back(span);
        while self.untold.len() > MAX_STOP_SPANS {
            self.untold.pop_front();
            self.dropped += 1;
        }
    }

    /// The line to send now (`now_us`, host), when there is news.
    pub fn message(&self, now_us: u64) -> Option<HostMessage> {
        if self.untold.is_empty() {
            return None;
        }
        Some(HostMessage::Stopped(Stops {
            host_us: now_us,
            offset_min_us: self.lower.iter().map(|&(_, b)| b).max(),
            spans: self
                .untold
                .iter()
                .copied()
                .filter(|s| s[1] <= now_us)
                .collect(),
        }))
    }

    /// The [`StopTeller::message`] made at `host_us` reached the guest.
    pub fn told(&mut self, host_us: u64) {
        self.untold.retain(|s| s[1] > host_us);
    }

    /// The vCPU threads' waits were read.
    pub fn waited(&mut self, sample: WaitSample) {
        self.untold_waits.extend(sample.waits);
        while self.untold_waits.len() > MAX_WAITS {
            self.untold_waits.pop_front();
            self.waits_dropped += 1;
        }
        self.waits_read_us = Some(sample.host_us);
    }

    /// The line of waits to send after a read (sent even with none: it
    /// tells the guest that none ended before the read).
    pub fn waits_message(&self) -> Option<HostMessage> {
        Some(HostMessage::Waited(Waits {
            host_us: self.waits_read_us?,
            offset_min_us: self.lower.iter().map(|&(_, b)| b).max(),
            waits: self.untold_waits.iter().copied().collect(),
        }))
    }

    /// The [`StopTeller::waits_message`] reached the guest.
    pub fn waits_told(&mut self) {
        self.untold_waits.clear();
        self.waits_read_us = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_bound_is_the_best_recent_heartbeat() {
        let mut t = StopTeller::default();
        assert_eq!(t.message(10), None, "nothing to tell");
        // Guest clock = host + 5 s. Heartbeats arrive 3, 1 and 40 ms late.
        t.heartbeat(6_000, 1_003_000);
        t.heartbeat(6_100, 1_101_000);
        t.heartbeat(6_200, 1_240_000);
        t.stopped([1_300_000, 1_330_000]);
        t.stopped([1_320_000, 1_340_000]); // overlaps: not a new stop
        t.stopped([1_350_000, 1_350_000]); // empty
        let Some(HostMessage::Stopped(s)) = t.message(1_331_000) else {
            panic!()
        };
        assert_eq!(s.offset_min_us, Some(4_999_000));
        assert_eq!(s.spans, vec![[1_300_000, 1_330_000]]);
        assert_eq!(s.validate(), Ok(()));
        t.told(1_331_000);
        assert_eq!(t.message(1_400_000), None);
        // Old heartbeats fall out of the window; a rollback forgets them.
        t.heartbeat(9_000, 5_000_000);
        t.stopped([5_100_000, 5_120_000]);
        let Some(HostMessage::Stopped(s)) = t.message(5_200_000) else {
            panic!()
        };
        assert_eq!(s.offset_min_us, Some(4_000_000));
        t.clock_changed();
        let Some(HostMessage::Stopped(s)) = t.message(5_200_000) else {
            panic!()
        };
        assert_eq!(s.offset_min_us, None);
    }

    #[test]
    fn untold_spans_are_kept_for_the_next_line_within_a_bound() {
        let mut t = StopTeller::default();
        for i in 0..(MAX_STOP_SPANS as u64 + 5) {
            t.stopped([i * 100, i * 100 + 10]);
        }
        assert_eq!(t.dropped, 5);
        let Some(HostMessage::Stopped(s)) = t.message(1_000_000) else {
            panic!()
        };
        assert_eq!(s.spans.len(), MAX_STOP_SPANS);
        assert_eq!(s.spans[0], [500, 510]);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn waits_go_out_after_each_read_with_the_offset_bound_until_told() {
        let mut t = StopTeller::default();
        assert_eq!(t.waits_message(), None, "nothing read yet");
        t.heartbeat(6_000, 1_003_000);
        let w = |cpu, from_us, until_us, wait_us| VcpuWait {
            cpu,
            from_us,
            until_us,
            wait_us,
        };
        t.waited(WaitSample {
            host_us: 1_050_000,
            waits: vec![w(1, 980_000, 1_050_000, 20_000)],
        });
        // Not sent (the guest did not read): kept for the next line.
        t.waited(WaitSample {
            host_us: 1_100_000,
            waits: vec![w(0, 1_040_000, 1_100_000, 3_000)],
        });
        let Some(HostMessage::Waited(m)) = t.waits_message() else {
            panic!()
        };
        assert_eq!(m.host_us, 1_100_000);
        assert_eq!(m.offset_min_us, Some(4_997_000));
        assert_eq!(m.waits.len(), 2);
        assert_eq!(m.validate(), Ok(()));
        t.waits_told();
        assert_eq!(t.waits_message(), None);
        // A read with no wait over the threshold still says so.
        t.waited(WaitSample {
            host_us: 1_150_000,
            waits: vec![],
        });
        let Some(HostMessage::Waited(m)) = t.waits_message() else {
            panic!()
        };
        assert!(m.waits.is_empty() && m.host_us == 1_150_000);
        // Bounded while the guest does not read.
        for i in 0..(MAX_WAITS as u64 + 3) {
            t.waited(WaitSample {
                host_us: 2_000_000 + i,
                waits: vec![w(0, 1_000_000, 2_000_000 + i, 1_000)],
            });
        }
        assert_eq!(t.waits_dropped, 3);
        let Some(HostMessage::Waited(m)) = t.waits_message() else {
            panic!()
        };
        assert_eq!(m.validate(), Ok(()));
    }
}
