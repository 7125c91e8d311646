//! The events `selfheal vm` records, and how the guest's own are forwarded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use selfheal_event::{Class, Culprit, Event, EventKind, Severity, Source};

/// An event about VM `vm`.
pub fn vm_event(
    vm: &str,
    kind: EventKind,
    severity: Severity,
    message: String,
    details: serde_json::Value,
) -> Event {
    Event::now(kind, severity, Source::Vm, format!("vm {vm}: {message}"))
        .with_culprit(Culprit {
            vm: Some(vm.to_string()),
            ..Culprit::default()
        })
        .with_details(details)
}

/// A guest's event as the host stores it: its kind, time and content kept,
/// tagged with the VM (`culprit.vm`) and `source` prefixed `guest:`, so it
/// is never mistaken for something that happened on the host.
pub fn forwarded(vm: &str, mut e: Event) -> Event {
    e.id = None;
    e.source = e.source.forwarded_from_guest();
    let mut c = e.culprit.take().unwrap_or_default();
    c.vm = Some(vm.to_string());
    e.culprit = Some(c);
    e
}

/// The keys of a forwarded guest event's `details` the host acts on. The
/// guest's selfheal writes them: `class`, `detection_latency_ms` and
/// `evidence` are a diagnosis's (selfheal-diagnose's `DiagnosisDetails`,
/// from `Diagnosis::to_event`), `class` and `outcome` a recovery step's
/// (selfheal-recover's ladder). The guest may run an older or newer
/// selfheal and is not trusted, so every key is optional, unknown keys are
/// ignored, and a key of an unexpected type (or a class this host does not
/// know) reads as absent: never a refused event.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GuestDetails {
    /// The diagnosis (or recovered) class, when this host knows it.
    #[serde(deserialize_with = "lenient")]
    pub class: Option<Class>,
    /// A recovery step's outcome (`recovered`, …).
    #[serde(deserialize_with = "lenient")]
    pub outcome: Option<String>,
    /// From the first sign to the diagnosis, ms.
    #[serde(deserialize_with = "lenient")]
    pub detection_latency_ms: Option<f64>,
    /// The parts of the diagnosis's evidence the host reads.
    #[serde(deserialize_with = "lenient_object")]
    pub evidence: Option<GuestEvidence>,
}

/// `details.evidence` of a guest diagnosis, as far as the host reads it.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GuestEvidence {
    /// How long the CPU had not scheduled (`kernel_stall`), ms.
    #[serde(deserialize_with = "lenient")]
    pub cpu_stalled_ms: Option<f64>,
    /// The stuck tasks (`d_state`, `io_stall`); entries that are not
    /// objects are skipped.
    #[serde(deserialize_with = "lenient_objects")]
    pub stuck: Vec<GuestStuck>,
}

/// One of `evidence.stuck`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GuestStuck {
    /// How long the task has been blocked, ms.
    #[serde(deserialize_with = "lenient")]
    pub stuck_ms: Option<f64>,
}

impl GuestDetails {
    /// Reads a guest event's `details`; absent or not an object: no keys.
    pub fn read(details: &serde_json::Value) -> GuestDetails {
        object(details.clone()).unwrap_or_default()
    }
}

/// A value of the expected type, else `None`.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(T::deserialize(serde_json::Value::deserialize(d)?).ok())
}

/// An object of the expected shape, else `None` (an array is not read
/// field by field).
fn lenient_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(object(serde_json::Value::deserialize(d)?))
}

/// The objects of an array that have the expected shape; not an array: none.
fn lenient_objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items.into_iter().filter_map(object).collect(),
        _ => Vec::new(),
    })
}

fn object<T: DeserializeOwned>(v: serde_json::Value) -> Option<T> {
    if v.is_object() {
        T::deserialize(v).ok()
    } else {
        None
    }
}

/// How far before its report a guest-diagnosed fault began, from the
/// diagnosis's own evidence: the longest of `detection_latency_ms`,
/// `evidence.cpu_stalled_ms` and `evidence.stuck[].stuck_ms`.
pub fn onset_back(details: &GuestDetails) -> Duration {
    let ev = details.evidence.as_ref();
    let ms = details
        .detection_latency_ms
        .into_iter()
        .chain(ev.and_then(|e| e.cpu_stalled_ms))
        .chain(
            ev.into_iter()
                .flat_map(|e| e.stuck.iter().filter_map(|s| s.stuck_ms)),
        )
        .filter(|x| x.is_finite() && *x >= 0.0)
        .fold(0f64, f64::max);
    // A guest may not make the host reach back further than a day.
    Duration::from_millis(ms.min(86_400_000.0) as u64)
}

/// How long a guest alert's condition held before it was raised, from its
/// details (`held_ms` of a light rule, `stalled_ms` of a stall canary),
/// at most a minute.
pub fn alert_held(details: &serde_json::Value) -> Duration {
    let ms = ["held_ms", "stalled_ms"]
        .iter()
        .filter_map(|k| details.get(*k).and_then(|v| v.as_f64()))
        .filter(|x| x.is_finite() && *x >= 0.0)
        .fold(0f64, f64::max);
    Duration::from_millis(ms.min(60_000.0) as u64)
}

/// The guest's wall clock against the host's, from heartbeats: the
/// smallest (host receive − guest send) over the last few is the offset
/// plus the least delivery delay. A rollback leaves the guest's wall clock
/// in step with the host's (under TCG its clocks run on the host's), so
/// the guest's own time of an event places it on the host's timeline even
/// when the event reaches the host seconds later.
#[derive(Debug, Default)]
pub struct GuestClock {
    offsets: VecDeque<i64>,
}

impl GuestClock {
    /// A heartbeat sent at guest time `guest_ms` arrived at host time `host_ms`.
    pub fn heartbeat(&mut self, guest_ms: i64, host_ms: i64) {
        self.offsets.push_back(host_ms.saturating_sub(guest_ms));
        if self.offsets.len() > 20 {
            self.offsets.pop_front();
        }
    }

    /// The host instant of guest time `guest_ms`, given the host's wall
    /// clock `host_ms` at `now`; `now` without heartbeats, never later than
    /// `now` nor more than a minute before it.
    pub fn to_host(&self, guest_ms: i64, host_ms: i64, now: Instant) -> Instant {
        let Some(off) = self.offsets.iter().min() else {
            return now;
        };
        let back = host_ms.saturating_sub(guest_ms.saturating_add(*off));
        let back = Duration::from_millis(back.clamp(0, 60_000) as u64);
        now.checked_sub(back).unwrap_or(now)
    }
}

/// Rate limit and duplicate filter for forwarded guest events: a rollback
/// can make the guest send a line twice, and a guest must not flood the
/// host's store (at most `burst` at once, `per_second` sustained).
#[derive(Debug)]
pub struct GuestFilter {
    recent: VecDeque<u64>,
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

impl GuestFilter {
    /// A filter allowing `per_second` events (bursts of `burst`).
    pub fn new(per_second: f64, burst: f64) -> GuestFilter {
        GuestFilter {
            recent: VecDeque::new(),
            tokens: burst,
            last: Instant::now(),
            per_second,
            burst,
        }
    }

    /// True when `e` should be stored.
    pub fn admit(&mut self, e: &Event, now: Instant) -> bool {
        let key = fingerprint(e);
        if self.recent.contains(&key) {
            return false;
        }
        self.recent.push_back(key);
        if self.recent.len() > 256 {
            self.recent.pop_front();
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

fn fingerprint(e: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.time_unix_ms.hash(&mut h);
    e.kind.as_str().hash(&mut h);
    e.message.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_guestlink::GuestMessage;
    use serde_json::json;

    #[test]
    fn guest_times_map_onto_the_host_clock() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut c = GuestClock::default();
        assert_eq!(c.to_host(1_000, 5_000, now), now, "no heartbeat yet");
        // Guest clock 3 s behind; delivery 10–80 ms.
        c.heartbeat(10_000, 13_080);
        c.heartbeat(10_100, 13_110);
        // An event made at guest 12_000 (host 15_010) read at host 17_010.
        assert_eq!(
            c.to_host(12_000, 17_010, now),
            now - Duration::from_millis(2000)
        );
        // A guest claiming a time far back or in the future is clamped.
        assert_eq!(
            c.to_host(-1_000_000, 17_010, now),
            now - Duration::from_secs(60)
        );
        assert_eq!(c.to_host(99_000, 17_010, now), now);
        assert_eq!(
            alert_held(&json!({"held_ms": 5868, "x": 1})),
            Duration::from_millis(5868)
        );
        assert_eq!(
            alert_held(&json!({"stalled_ms": 202.5})),
            Duration::from_millis(202)
        );
        assert_eq!(alert_held(&json!({"held_ms": "x"})), Duration::ZERO);
    }

    #[test]
    fn forwarded_events_are_tagged_and_kept() {
        let mut e = Event::now(
            EventKind::Diagnosis,
            Severity::Critical,
            Source::Heavy,
            "kernel_stall",
        );
        e.id = Some(7);
        e.culprit = Some(Culprit {
            pid: Some(138),
            comm: Some("lab_irq_loop/1".into()),
            ..Culprit::default()
        });
        let f = forwarded("web", e.clone());
        assert_eq!(f.id, None);
        assert_eq!(f.source, Source::Heavy.forwarded_from_guest());
        assert_eq!(serde_json::to_value(&f).unwrap()["source"], "guest:heavy");
        assert_eq!(f.kind, EventKind::Diagnosis);
        let c = f.culprit.unwrap();
        assert_eq!((c.vm.as_deref(), c.pid), (Some("web"), Some(138)));
        let bare = forwarded(
            "web",
            Event::now(EventKind::Start, Severity::Info, Source::Daemon, "x"),
        );
        assert_eq!(bare.culprit.unwrap().vm.as_deref(), Some("web"));
    }

    #[test]
    fn onset_from_real_diagnoses() {
        // From the hang lab's irq_loop and d_state runs.
        let stall = json!({"class": "kernel_stall", "detection_latency_ms": 465.07912,
            "evidence": {"cpu": 1, "cpu_stalled_ms": 444}});
        assert_eq!(
            onset_back(&GuestDetails::read(&stall)),
            Duration::from_millis(465)
        );
        let d = json!({"class": "d_state", "detection_latency_ms": 2161.67,
            "evidence": {"bound_ms": 2000, "stuck": [{"pid": 137, "stuck_ms": 2150}, {"stuck_ms": 2300}]}});
        assert_eq!(
            onset_back(&GuestDetails::read(&d)),
            Duration::from_millis(2300)
        );
        assert_eq!(
            onset_back(&GuestDetails::read(&json!({"detection_latency_ms": -5}))),
            Duration::ZERO
        );
        assert_eq!(
            onset_back(&GuestDetails::read(&json!({"detection_latency_ms": 1e300}))),
            Duration::from_secs(86_400)
        );
        assert_eq!(onset_back(&GuestDetails::read(&json!("x"))), Duration::ZERO);
    }

    /// A diagnosis line exactly as the guest's selfheal sends it: the event
    /// `Diagnosis::to_event` builds from `DiagnosisDetails`, in a
    /// `GuestMessage::Event` line.
    fn sent_stall_diagnosis() -> Vec<u8> {
        use selfheal_diagnose::class::DiagnosisDetails;
        use selfheal_diagnose::classify::evidence::StallEvidence;
        use selfheal_diagnose::{DiagnosisEvidence, Trigger};
        let evidence = DiagnosisEvidence::KernelStall(StallEvidence {
            cpu: 1,
            cpu_stalled_ms: Some(444),
            top_share_percent: 0.0,
            culprit: None,
            kernel_stack: None,
            kernel_reports: vec![],
            interval_ms: 100.0,
        });
        let trigger = Trigger::Stall {
            cpu: 1,
            stalled_for: Duration::from_millis(444),
        };
        let details = DiagnosisDetails {
            class: Class::KernelStall.as_str(),
            trigger: trigger.details(),
            evidence: &evidence,
            detection_latency_ms: Some(465.07912),
            record_only: None,
        };
        let event = Event::now(EventKind::Diagnosis, Severity::Critical, Source::Heavy, "m")
            .with_rule("kernel_stall")
            .with_details_of(&details);
        GuestMessage::Event {
            event: Box::new(event),
        }
        .to_line()
    }

    fn host_reads(line: &[u8]) -> GuestDetails {
        match serde_json::from_slice::<GuestMessage>(line).unwrap() {
            GuestMessage::Event { event } => GuestDetails::read(&event.details),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn the_host_reads_a_diagnosis_as_the_guest_sends_it() {
        let d = host_reads(&sent_stall_diagnosis());
        assert_eq!(d.class, Some(Class::KernelStall));
        assert_eq!(d.detection_latency_ms, Some(465.07912));
        assert_eq!(d.evidence.as_ref().unwrap().cpu_stalled_ms, Some(444.0));
        assert_eq!(onset_back(&d), Duration::from_millis(465));
    }

    /// A newer guest adds keys (in details, evidence and a stuck task) and
    /// may send a class this host does not know; an older one may lack
    /// keys: the host still reads what it knows.
    #[test]
    fn unknown_and_missing_keys_are_tolerated() {
        let mut v: serde_json::Value = serde_json::from_slice(&sent_stall_diagnosis()).unwrap();
        v["event"]["details"]["from_a_newer_guest"] = json!({"x": [1, 2]});
        v["event"]["details"]["evidence"]["new_evidence"] = json!(7);
        let d = host_reads(serde_json::to_string(&v).unwrap().as_bytes());
        assert_eq!(d.class, Some(Class::KernelStall));
        assert_eq!(onset_back(&d), Duration::from_millis(465));

        let older = GuestDetails::read(&json!({"class": "d_state",
            "evidence": {"stuck": [{"stuck_ms": 2150, "new": 1}, 5, [9e9], {"stuck_ms": "x"}]}}));
        assert_eq!(older.class, Some(Class::DState));
        assert_eq!(older.detection_latency_ms, None);
        assert_eq!(onset_back(&older), Duration::from_millis(2150));

        let newer = GuestDetails::read(&json!({"class": "a_class_from_the_future",
            "detection_latency_ms": "soon", "outcome": "recovered", "evidence": [1]}));
        assert_eq!(newer.class, None);
        assert_eq!(newer.outcome.as_deref(), Some("recovered"));
        assert_eq!((newer.detection_latency_ms, newer.evidence), (None, None));
    }

    #[test]
    fn repeats_are_dropped_and_floods_limited() {
        let t0 = Instant::now();
        let mut f = GuestFilter::new(10.0, 5.0);
        let e = Event::now(EventKind::Alert, Severity::Warning, Source::Light, "a");
        assert!(f.admit(&e, t0));
        assert!(!f.admit(&e, t0), "the same line again (a rollback replay)");
        let admitted = (0..100)
            .filter(|i| {
                let mut x = e.clone();
                x.message = format!("m{i}");
                f.admit(&x, t0)
            })
            .count();
        assert_eq!(admitted, 4, "the burst, then nothing without time");
        let mut later = e.clone();
        later.message = "later".into();
        assert!(f.admit(&later, t0 + Duration::from_secs(1)));
    }
}
