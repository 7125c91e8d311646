//! Parsers for the guest's serial channels. Pure functions over text, so
//! they are tested on logs captured from real guest runs.
//!
//! - ttyS0 (`console.log`): printk lines `[ secs.micros] text`.
//! - ttyS1 (`lab.log`): `LAB TAG real_ms=… mono_ms=… k=v…` and `HB cpu=… seq=… real_ms=… mono_ms=…`.
//! - ttyS2 (`events.log`): selfheal's `--event-log`, one JSON object per line.
//! - `host-marks.log`: the host's clock for each `LAB` line (see `qemu.rs`).
//!
//! A guest that restarts (profiles that follow reboots) writes every boot
//! into the same files: each record carries the boot it belongs to, counted
//! from 1 (the console by the kernel's banner, the lab channel by its BOOT
//! marker, the events by selfheal's `start` event).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::KernelDetector;

/// One printk record with its timestamp in microseconds since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLine {
    /// printk time (local_clock), µs.
    pub ts_us: u64,
    /// The text after the timestamp.
    pub text: String,
    /// The boot it belongs to, from 1.
    pub boot: u32,
}

/// Parses printk lines; lines without a timestamp (continuations, garbage
/// from a guest killed mid-write) are skipped. A new boot begins at the
/// kernel's banner, or where the clock goes back to under half of what it
/// read (a clock started again).
pub fn parse_console(text: &str) -> Vec<KernelLine> {
    let mut out: Vec<KernelLine> = Vec::new();
    let mut boot = 1;
    for mut l in text.lines().filter_map(parse_console_line) {
        if let Some(prev) = out.last() {
            // Back to under half: a clock that starts again. A smaller step
            // back is two vCPUs' clocks apart (TCG on a loaded host), not
            // a boot: splitting there once dropped the rest of the run.
            let restarted = l.ts_us + 1_000_000 < prev.ts_us && l.ts_us < prev.ts_us / 2;
            if l.text.starts_with("Linux version ") || restarted {
                boot += 1;
            }
        }
        l.boot = boot;
        out.push(l);
    }
    out
}

/// The records of the first boot (a prefix of the console).
pub fn first_boot(lines: &[KernelLine]) -> &[KernelLine] {
    let n = lines.iter().position(|l| l.boot > 1).unwrap_or(lines.len());
    &lines[..n]
}

fn parse_console_line(line: &str) -> Option<KernelLine> {
    let line = line.trim_end_matches(['\r', '\0']);
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    let (secs, micros) = rest[..close].trim().split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    let text = rest[close + 1..]
        .strip_prefix(' ')
        .unwrap_or(&rest[close + 1..]);
    Some(KernelLine {
        ts_us: secs * 1_000_000 + micros,
        text: text.to_string(),
        boot: 1,
    })
}

/// A kernel detector's report found on the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelReport {
    /// Which detector.
    pub detector: KernelDetector,
    /// printk time, µs since boot.
    pub ts_us: u64,
    /// CPU named by the report, when it names one.
    pub cpu: Option<u32>,
    /// Task named by the report (`comm`), when it names one.
    pub comm: Option<String>,
    /// How long the report says the CPU has been stuck, seconds (soft
    /// lockups), to date the stall's start.
    #[serde(default)]
    pub stuck_for_s: Option<u64>,
    /// The report's first line.
    pub line: String,
}

/// Recognises the first line of a kernel detector's report, with the
/// daemon's own parser (`selfheal_kmsg::verdict::classify`): the lab and
/// selfheal read a kernel report the same way. The lab counts only the
/// five detectors it compares selfheal with; of the OOM killer, only the
/// global one's kill line (`Out of memory: Killed process …`): its opening
/// line comes before the verdict, and a memory cgroup's kill is a limit
/// doing its work, not the kernel detecting a hang.
pub fn classify_kernel_line(line: &KernelLine) -> Option<KernelReport> {
    use selfheal_kmsg::VerdictKind as K;
    let t = line.text.as_str();
    let v = selfheal_kmsg::classify(t)?;
    let detector = match v.kind? {
        K::SoftLockup => KernelDetector::SoftLockup,
        K::HardLockup => KernelDetector::HardLockup,
        K::HungTask => KernelDetector::HungTask,
        K::RcuStall => KernelDetector::RcuStall,
        K::OomKill if !v.opens_oom && t.starts_with("Out of memory") => KernelDetector::OomKiller,
        _ => return None,
    };
    Some(KernelReport {
        detector,
        ts_us: line.ts_us,
        cpu: v.cpu,
        comm: v.comm,
        stuck_for_s: v.stuck_for_s,
        line: t.to_string(),
    })
}

/// All detector reports on a console.
pub fn kernel_reports(lines: &[KernelLine]) -> Vec<KernelReport> {
    lines.iter().filter_map(classify_kernel_line).collect()
}

/// printk time of the first line containing `needle`.
pub fn find_kernel_line(lines: &[KernelLine], needle: &str) -> Option<u64> {
    lines
        .iter()
        .find(|l| l.text.contains(needle))
        .map(|l| l.ts_us)
}

/// True when the console shows the kernel panicking or rebooting by itself.
pub fn kernel_panicked(lines: &[KernelLine]) -> Option<String> {
    lines
        .iter()
        .find(|l| l.text.starts_with("Kernel panic") || l.text.starts_with("reboot: Restarting"))
        .map(|l| l.text.clone())
}

/// The kernel's panic line, if it panicked.
pub fn panic_line(lines: &[KernelLine]) -> Option<&KernelLine> {
    lines.iter().find(|l| l.text.starts_with("Kernel panic"))
}

/// The kernel's own line for a restart asked of it: `reboot(2)` or kexec.
pub fn restart_line(lines: &[KernelLine]) -> Option<&KernelLine> {
    lines.iter().find(|l| {
        l.text.starts_with("reboot: Restarting")
            || l.text.contains("kexec_core: Starting new kernel")
    })
}

/// A `LAB …` marker from the lab channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// BOOT, INJECT, STATUS, END, …
    pub tag: String,
    /// The boot it belongs to, from 1.
    #[serde(default)]
    pub boot: u32,
    /// Guest CLOCK_REALTIME, ms.
    pub real_ms: i64,
    /// Guest CLOCK_MONOTONIC, ms.
    pub mono_ms: i64,
    /// Every other `key=value` on the line.
    pub fields: BTreeMap<String, String>,
}

impl Mark {
    /// A field parsed as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.fields.get(key)?.parse().ok()
    }
}

/// One heartbeat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// CPU the heartbeat is pinned to.
    pub cpu: u32,
    /// Sequence number (gaps in time, not in seq, show a stall).
    pub seq: u64,
    /// Guest CLOCK_REALTIME, ms.
    pub real_ms: i64,
    /// The boot it belongs to, from 1.
    #[serde(default)]
    pub boot: u32,
}

/// The parsed lab channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabLog {
    /// Markers in order.
    pub marks: Vec<Mark>,
    /// Heartbeats in order.
    pub heartbeats: Vec<Heartbeat>,
}

impl LabLog {
    /// The first marker with `tag`.
    pub fn mark(&self, tag: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.tag == tag)
    }

    /// Every marker with `tag`.
    pub fn marks_tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a Mark> + 'a {
        self.marks.iter().filter(move |m| m.tag == tag)
    }

    /// The first marker with `tag` in boot `boot`.
    pub fn mark_in(&self, boot: u32, tag: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.boot == boot && m.tag == tag)
    }

    /// How many boots the channel shows (at least 1).
    pub fn boots(&self) -> u32 {
        self.marks_tagged("BOOT").count().max(1) as u32
    }

    /// The last boot (the one whose health decides a restarted run).
    pub fn last_boot(&self) -> u32 {
        self.boots()
    }

    /// Longest time without a heartbeat from `cpu` within `[from_ms, to_ms]`
    /// of the first boot, counting the edges of the window. `None` if the
    /// CPU never beat at all.
    pub fn max_heartbeat_gap_ms(&self, cpu: u32, from_ms: i64, to_ms: i64) -> Option<i64> {
        self.max_heartbeat_gap_in(1, cpu, from_ms, to_ms)
    }

    /// [`LabLog::max_heartbeat_gap_ms`] within boot `boot`.
    pub fn max_heartbeat_gap_in(
        &self,
        boot: u32,
        cpu: u32,
        from_ms: i64,
        to_ms: i64,
    ) -> Option<i64> {
        let beats: Vec<i64> = self
            .heartbeats
            .iter()
            .filter(|h| h.cpu == cpu && h.boot == boot)
            .map(|h| h.real_ms)
            .collect();
        if beats.is_empty() {
            return None;
        }
        let mut prev = from_ms;
        let mut max = 0;
        for &t in beats.iter().filter(|&&t| t >= from_ms && t <= to_ms) {
            max = max.max(t - prev);
            prev = t;
        }
        Some(max.max(to_ms - prev))
    }

    /// In boot `boot`, the end of the last heartbeat gap longer than
    /// `gap_ms` on any of `cpus` within `[from_ms, to_ms]` (the time the
    /// beat after it arrived); `None` when no CPU had one.
    pub fn last_gap_end(
        &self,
        boot: u32,
        cpus: u32,
        from_ms: i64,
        to_ms: i64,
        gap_ms: i64,
    ) -> Option<i64> {
        let mut last = None;
        for cpu in 0..cpus {
            let mut prev = from_ms;
            for h in self.heartbeats.iter().filter(|h| {
                h.cpu == cpu && h.boot == boot && h.real_ms >= from_ms && h.real_ms <= to_ms
            }) {
                if h.real_ms - prev > gap_ms {
                    last = last.max(Some(h.real_ms));
                }
                prev = h.real_ms;
            }
        }
        last
    }
}

/// Parses the lab channel; unknown or damaged lines are skipped.
pub fn parse_lab(text: &str) -> LabLog {
    let mut log = LabLog::default();
    // A marker without its own clocks (older helpers' PROCCPU) takes the
    // clocks of the line before it: the channel is written in time order.
    let mut last_clock = (0i64, 0i64);
    let mut boot = 0u32;
    for raw in text.lines() {
        let line = raw.trim_matches(['\r', '\0', ' ']);
        let mut words = line.split_whitespace();
        match words.next() {
            Some("LAB") => {
                let Some(tag) = words.next() else { continue };
                let fields: BTreeMap<String, String> = words
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let num = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
                let (real_ms, mono_ms) = match (num("real_ms"), num("mono_ms")) {
                    (Some(r), Some(m)) => (r, m),
                    _ if log.marks.is_empty() && log.heartbeats.is_empty() => continue,
                    _ => last_clock,
                };
                last_clock = (real_ms, mono_ms);
                let mut fields = fields.clone();
                fields.remove("real_ms");
                fields.remove("mono_ms");
                if tag == "BOOT" {
                    boot += 1;
                }
                log.marks.push(Mark {
                    boot: boot.max(1),
                    tag: tag.to_string(),
                    real_ms,
                    mono_ms,
                    fields,
                });
            }
            Some("HB") => {
                let kv: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
                let get = |k: &str| kv.get(k).and_then(|v| v.parse::<i64>().ok());
                if let (Some(cpu), Some(seq), Some(real_ms)) =
                    (get("cpu"), get("seq"), get("real_ms"))
                {
                    last_clock = (real_ms, get("mono_ms").unwrap_or(last_clock.1));
                    log.heartbeats.push(Heartbeat {
                        cpu: cpu as u32,
                        seq: seq as u64,
                        real_ms,
                        boot: boot.max(1),
                    });
                }
            }
            _ => {}
        }
    }
    log
}

/// The parts of a selfheal event the lab scores. Read leniently from JSON so
/// newer event kinds or fields never break a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabEvent {
    /// Guest CLOCK_REALTIME, ms.
    pub time_unix_ms: i64,
    /// alert, diagnosis, dismissed, recovery, kernel, watchdog, start, …
    pub kind: String,
    /// light, stall, heavy, recovery, kmsg, …
    pub source: String,
    /// Rule that fired.
    pub rule: Option<String>,
    /// `details.class` of a diagnosis.
    pub class: Option<String>,
    /// Culprit comm.
    pub culprit_comm: Option<String>,
    /// Culprit pid.
    pub culprit_pid: Option<i64>,
    /// Culprit CPU.
    pub culprit_cpu: Option<i64>,
    /// `details.action` of a recovery.
    pub action: Option<String>,
    /// `details.outcome` of a recovery.
    pub outcome: Option<String>,
    /// The event's message.
    pub message: String,
    /// The boot it belongs to, from 1 (counted by selfheal's `start` events).
    #[serde(default)]
    pub boot: u32,
    /// `details.incident` of a `restart` event or a `reboot` recovery step.
    #[serde(default)]
    pub incident: Option<String>,
}

impl LabEvent {
    /// True for events that mean "selfheal itself noticed a problem":
    /// alerts, hang diagnoses, recoveries and watchdog trips. `kernel` events
    /// only relay the kernel's detectors and are not selfheal's detection.
    pub fn is_detection(&self) -> bool {
        match self.kind.as_str() {
            "alert" | "recovery" | "watchdog" => true,
            "diagnosis" => self.class.as_deref() != Some("legitimate_load"),
            _ => false,
        }
    }
}

/// Parses the event channel: returns the events and how many lines were not
/// valid events (damaged by a guest killed mid-line, for example).
pub fn parse_events(text: &str) -> (Vec<LabEvent>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    let mut starts = 0u32;
    for raw in text.lines() {
        let line = raw.trim_matches(['\r', '\0', ' ']);
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| event_from_json(&v))
        {
            Some(mut e) => {
                if e.kind == "start" {
                    starts += 1;
                }
                e.boot = starts.max(1);
                events.push(e)
            }
            None => bad += 1,
        }
    }
    (events, bad)
}

fn event_from_json(v: &serde_json::Value) -> Option<LabEvent> {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let culprit = &v["culprit"];
    let details = EventDetails::read(&v["details"]);
    Some(LabEvent {
        time_unix_ms: v["time_unix_ms"].as_i64()?,
        kind: s(&v["kind"])?,
        source: s(&v["source"]).unwrap_or_default(),
        rule: s(&v["rule"]),
        class: details.class,
        culprit_comm: s(&culprit["comm"]),
        culprit_pid: culprit["pid"].as_i64(),
        culprit_cpu: culprit["cpu"].as_i64(),
        action: details.action,
        outcome: details.outcome,
        message: s(&v["message"]).unwrap_or_default(),
        boot: 1,
        incident: details.incident.and_then(|i| i.id).or(details.incident_id),
    })
}

/// The keys of an event's `details` the lab reads. Their producers:
/// `class` — selfheal-diagnose's `DiagnosisDetails`; `action`, `outcome`
/// and `incident.id` — selfheal-recover's ladder `StepDetails` (and
/// `incident.id` its `restart` event's `RestartDetails`); a flat
/// `incident_id` is read too, as the lab always has. The lab does not
/// depend on those crates (it scores whatever selfheal the guest runs), so
/// it reads leniently: every key optional, unknown keys ignored, and a key
/// of an unexpected type read as absent rather than losing the event.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct EventDetails {
    #[serde(deserialize_with = "lenient")]
    class: Option<String>,
    #[serde(deserialize_with = "lenient")]
    action: Option<String>,
    #[serde(deserialize_with = "lenient")]
    outcome: Option<String>,
    #[serde(deserialize_with = "lenient")]
    incident: Option<IncidentRef>,
    #[serde(deserialize_with = "lenient")]
    incident_id: Option<String>,
}

/// `details.incident`: the incident a restart record names.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct IncidentRef {
    #[serde(deserialize_with = "lenient")]
    id: Option<String>,
}

impl EventDetails {
    /// An event's `details`; absent, or not an object: no keys.
    fn read(details: &serde_json::Value) -> EventDetails {
        if !details.is_object() {
            return EventDetails::default();
        }
        EventDetails::deserialize(details).unwrap_or_default()
    }
}

/// A value of the expected type, else `None` (a `null`, a number where a
/// string was expected).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(v).ok())
}

/// A `LAB` marker as the host saw it arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMark {
    /// ms since QEMU started, on the host's clock.
    pub host_ms: u64,
    /// The marker's tag.
    pub tag: String,
    /// The boot it belongs to, from 1.
    pub boot: u32,
}

/// Parses `host-marks.log` (`<ms>\t<LAB line>` per line).
pub fn parse_host_marks(text: &str) -> Vec<HostMark> {
    let mut out = Vec::new();
    let mut boot = 0u32;
    for line in text.lines() {
        let Some((ms, rest)) = line.split_once('\t') else {
            continue;
        };
        let (Ok(host_ms), Some(tag)) = (ms.trim().parse(), rest.split_whitespace().nth(1)) else {
            continue;
        };
        if tag == "BOOT" {
            boot += 1;
        }
        out.push(HostMark {
            host_ms,
            tag: tag.to_string(),
            boot: boot.max(1),
        });
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn two_cpus_clocks_apart_are_one_boot_a_restarted_clock_is_two() {
        let text = "[   15.800000] a\n[   14.500000] lab_fault: preempt_loop started on cpu 1\n\
                    [   16.000000] b\n[    0.900000] c\n";
        let lines = parse_console(text);
        let boots: Vec<u32> = lines.iter().map(|l| l.boot).collect();
        assert_eq!(boots, vec![1, 1, 1, 2]);
        assert_eq!(first_boot(&lines).len(), 3);
    }

    use super::*;

    #[test]
    fn console_lines_keep_timestamps_and_skip_garbage() {
        let text = "[    6.685198] watchdog: BUG: soft lockup - CPU#1 stuck for 3s! [lab_preempt_loo:114]\r\n\
                    continuation without stamp\n\
                    [   12.000001] x\n[bad] y\n";
        let lines = parse_console(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].ts_us, 6_685_198);
        let r = classify_kernel_line(&lines[0]).unwrap();
        assert_eq!(r.detector, KernelDetector::SoftLockup);
        assert_eq!(r.cpu, Some(1));
        assert_eq!(r.comm.as_deref(), Some("lab_preempt_loo"));
    }

    #[test]
    fn each_kernel_detector_is_recognised() {
        let cases = [
            (
                "INFO: task lab_dholder:118 blocked for more than 1 seconds.",
                KernelDetector::HungTask,
                Some("lab_dholder"),
            ),
            (
                "rcu: INFO: rcu_preempt self-detected stall on CPU",
                KernelDetector::RcuStall,
                None,
            ),
            (
                "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                KernelDetector::RcuStall,
                None,
            ),
            (
                "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
                KernelDetector::HardLockup,
                None,
            ),
            (
                "Out of memory: Killed process 131 (lab_memhog) total-vm:412kB, anon-rss:0kB",
                KernelDetector::OomKiller,
                Some("lab_memhog"),
            ),
        ];
        for (text, det, comm) in cases {
            let r = classify_kernel_line(&KernelLine {
                ts_us: 1,
                text: text.into(),
                boot: 1,
            })
            .unwrap();
            assert_eq!(r.detector, det, "{text}");
            assert_eq!(r.comm.as_deref(), comm, "{text}");
        }
        // The RCU stall *setting* line at boot is not a report.
        let boot = KernelLine {
            ts_us: 1,
            text: "\tRCU CPU stall warnings timeout set to 3 (rcu_cpu_stall_timeout).".into(),
            boot: 1,
        };
        assert!(classify_kernel_line(&boot).is_none());
        // Read as the daemon reads them (kmsg's parser): an expedited RCU
        // stall is a stall report; the OOM killer's opening line and a
        // memory cgroup's kill are not the lab's OOM verdict.
        let line = |text: &str| KernelLine {
            ts_us: 1,
            text: text.into(),
            boot: 1,
        };
        let expedited =
            line("rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }");
        assert_eq!(
            classify_kernel_line(&expedited).map(|r| r.detector),
            Some(KernelDetector::RcuStall)
        );
        for text in [
            "lab_memhog invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0",
            "Memory cgroup out of memory: Killed process 131 (lab_memhog) total-vm:412kB, anon-rss:0kB",
            "sched: RT throttling activated",
            "WARNING: CPU: 1 PID: 123 at kernel/foo.c:12 func+0x1/0x2",
        ] {
            assert!(classify_kernel_line(&line(text)).is_none(), "{text}");
        }
    }

    #[test]
    fn lab_channel_marks_and_heartbeat_gaps() {
        let text = "LAB BOOT real_ms=1000 mono_ms=10 class=x ncpu=2\r\n\
                    HB cpu=0 seq=0 real_ms=1000 mono_ms=10\n\
                    HB cpu=0 seq=1 real_ms=1100 mono_ms=110\n\
                    HB cpu=0 seq=2 real_ms=1900 mono_ms=910\n\
                    HB cpu=1 seq=0 real_ms=1000 mono_ms=10\n\
                    HB cpu=1 seq=1 real_ms=1\0\0\n\
                    LAB INJECT real_ms=1050 mono_ms=60 class=irq_loop\n";
        let log = parse_lab(text);
        assert_eq!(log.marks.len(), 2);
        assert_eq!(log.mark("BOOT").unwrap().int("ncpu"), Some(2));
        assert_eq!(log.mark("INJECT").unwrap().fields["class"], "irq_loop");
        assert_eq!(log.max_heartbeat_gap_ms(0, 1000, 2000), Some(800));
        // CPU 1 beat once and then went silent: the gap runs to the window's end.
        assert_eq!(log.max_heartbeat_gap_ms(1, 1000, 2000), Some(1000));
        assert_eq!(log.max_heartbeat_gap_ms(5, 1000, 2000), None);
    }

    #[test]
    fn events_are_read_leniently() {
        let text = r#"{"time_unix_ms":5,"kind":"diagnosis","severity":"critical","source":"heavy","culprit":{"pid":9,"comm":"lab_fifo_hog","cpu":1},"message":"m","details":{"class":"rt_hog"}}
{"time_unix_ms":6,"kind":"brand_new_kind","source":"x","message":"m","extra":1}
{"time_unix_ms":7,"kind":"diagnosis","source":"heavy","message":"ok","details":{"class":"legitimate_load"}}
{"time_unix_ms":
not json"#;
        let (events, bad) = parse_events(text);
        assert_eq!(events.len(), 3);
        assert_eq!(bad, 2);
        assert_eq!(events[0].class.as_deref(), Some("rt_hog"));
        assert_eq!(events[0].culprit_cpu, Some(1));
        assert!(events[0].is_detection());
        assert!(!events[1].is_detection());
        assert!(
            !events[2].is_detection(),
            "legitimate load is not a detection"
        );
    }

    /// A details document that lacks a key (or has one of another type)
    /// gives `None` for it and keeps the rest; no details at all, none.
    #[test]
    fn event_details_with_missing_or_mistyped_keys_read_as_absent() {
        let text = r#"{"time_unix_ms":1,"kind":"recovery","source":"recover","message":"m","details":{"action":"kill","new_key":[1]}}
{"time_unix_ms":2,"kind":"recovery","source":"recover","message":"m","details":{"action":7,"outcome":"cleared","incident":{"id":"inc-7"}}}
{"time_unix_ms":3,"kind":"restart","source":"recover","message":"m","details":{"incident":"not-an-object","incident_id":"inc-8"}}
{"time_unix_ms":4,"kind":"diagnosis","source":"heavy","message":"m"}
{"time_unix_ms":5,"kind":"diagnosis","source":"heavy","message":"m","details":["rt_hog"]}"#;
        let (events, bad) = parse_events(text);
        assert_eq!(bad, 0);
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.class.as_deref(),
                    e.action.as_deref(),
                    e.outcome.as_deref(),
                    e.incident.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (None, Some("kill"), None, None),
                (None, None, Some("cleared"), Some("inc-7")),
                (None, None, None, Some("inc-8")),
                (None, None, None, None),
                (None, None, None, None),
            ]
        );
    }
}
