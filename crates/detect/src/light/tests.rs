use std::time::{Duration, Instant};

use selfheal_config::{default_rules, Config, Level};
use selfheal_sampler::{CpuMetric, Sample, Scope, SystemMetric};

use super::*;

/// A 2-CPU sample stream with 100 ms intervals.
struct Stream {
    t: Instant,
    seq: u64,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            t: Instant::now(),
            seq: 0,
        }
    }

    fn next(&mut self, f: impl FnOnce(&mut Sample)) -> Sample {
        self.t += Duration::from_millis(100);
        self.seq += 1;
        let mut s = Sample::with_cpus(2);
        s.seq = self.seq;
        s.taken_at = self.t;
        s.interval = Duration::from_millis(100);
        for cpu in s.cpus.iter_mut() {
            cpu[CpuMetric::UserPercent.index()] = 30.0;
            cpu[CpuMetric::SystemPercent.index()] = 10.0;
            cpu[CpuMetric::IowaitPercent.index()] = 0.0;
            cpu[CpuMetric::StealPercent.index()] = 0.0;
            cpu[CpuMetric::IdlePercent.index()] = 60.0;
            cpu[CpuMetric::AccountedPercent.index()] = 100.0;
        }
        s.system[SystemMetric::RunnableTasksPerCpu.index()] = 1.0;
        s.system[SystemMetric::MemAvailablePercent.index()] = 80.0;
        f(&mut s);
        s
    }
}

fn spin_cpu1(s: &mut Sample) {
    s.cpus[1][CpuMetric::SystemPercent.index()] = 100.0;
    s.cpus[1][CpuMetric::UserPercent.index()] = 0.0;
    s.cpus[1][CpuMetric::IdlePercent.index()] = 0.0;
}

fn detector(repeat_ms: u64) -> LightDetector {
    LightDetector::new(default_rules(), 2, 50.0, Duration::from_millis(repeat_ms)).unwrap()
}

fn run(det: &mut LightDetector, s: &Sample) -> Vec<Alert> {
    let mut out = Vec::new();
    det.evaluate(s, &mut |a| out.push(a));
    out
}

fn names(det: &LightDetector, alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| det.rules()[a.rule_index as usize].name.clone())
        .collect()
}

#[test]
fn normal_load_raises_nothing() {
    let mut det = detector(0);
    let mut st = Stream::new();
    for _ in 0..100 {
        assert!(run(&mut det, &st.next(|_| {})).is_empty());
    }
}

#[test]
fn kernel_spin_escalates_light_then_heavy() {
    let mut det = detector(0);
    let mut st = Stream::new();
    let mut seen = Vec::new();
    for i in 0..15 {
        for a in run(&mut det, &st.next(spin_cpu1)) {
            seen.push((i, det.rules()[a.rule_index as usize].name.clone(), a));
        }
    }
    // Light (sustain 200 ms) on the 2nd sample, heavy (sustain 1 s) on the 10th.
    let light = seen.iter().find(|(_, n, _)| n == "kernel_spin").unwrap();
    assert_eq!(light.0, 1);
    assert_eq!(light.2.instance, AlertInstance::Cpu(1));
    assert_eq!(light.2.values[0], 100.0);
    let heavy = seen
        .iter()
        .find(|(_, n, _)| n == "kernel_spin_hang")
        .unwrap();
    assert_eq!(heavy.0, 9);
    assert_eq!(heavy.2.level, Level::Heavy);
    assert_eq!(heavy.2.held_for, Duration::from_secs(1));
    // Once per episode with repeat = 0.
    assert_eq!(
        seen.len(),
        2,
        "{:?}",
        seen.iter().map(|s| &s.1).collect::<Vec<_>>()
    );
}

#[test]
fn interruption_resets_sustain() {
    // Spinning on every other sample never reaches the 200 ms sustain.
    let mut det = detector(0);
    let mut st = Stream::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            st.next(spin_cpu1)
        } else {
            st.next(|_| {})
        };
        assert!(run(&mut det, &s).is_empty(), "sample {i}");
    }
    // Two in a row do.
    run(&mut det, &st.next(spin_cpu1));
    let alerts = run(&mut det, &st.next(spin_cpu1));
    assert_eq!(names(&det, &alerts), vec!["kernel_spin"]);
}

#[test]
fn repeat_reraises_while_holding() {
    let mut det = detector(500);
    let mut st = Stream::new();
    let mut light = 0;
    let mut repeats = 0;
    for _ in 0..21 {
        for a in run(&mut det, &st.next(spin_cpu1)) {
            if det.rules()[a.rule_index as usize].name == "kernel_spin" {
                light += 1;
                repeats += a.repeat as u32;
            }
        }
    }
    // First at sample 2 (t=200ms), then every 500 ms: 0.7, 1.2, 1.7 s.
    assert_eq!((light, repeats), (4, 3));
}

#[test]
fn steal_suppresses_per_cpu_rules() {
    let mut det = detector(0);
    let mut st = Stream::new();
    for _ in 0..20 {
        let s = st.next(|s| {
            spin_cpu1(s);
            s.cpus[1][CpuMetric::StealPercent.index()] = 80.0;
        });
        assert!(run(&mut det, &s).is_empty());
    }
}

#[test]
fn missing_metric_never_fires() {
    // PSI absent: NaN.
    let mut det = detector(0);
    let mut st = Stream::new();
    for _ in 0..20 {
        let s = st.next(|s| s.system[SystemMetric::PsiMemoryFullAvg10.index()] = f64::NAN);
        assert!(run(&mut det, &s).is_empty());
    }
}

#[test]
fn system_rule_and_event_text() {
    let mut det = detector(0);
    let mut st = Stream::new();
    let s = st.next(|s| s.system[SystemMetric::MemAvailablePercent.index()] = 5.0);
    let alerts = run(&mut det, &s);
    assert_eq!(names(&det, &alerts), vec!["memory_low"]);
    let rule = &det.rules()[alerts[0].rule_index as usize];
    let ev = alerts[0].to_event(rule, Some(&s));
    assert_eq!(ev.kind, selfheal_event::EventKind::Alert);
    assert_eq!(ev.rule.as_deref(), Some("memory_low"));
    assert!(
        ev.message.contains("mem_available_percent=5.0 < 10"),
        "{}",
        ev.message
    );
    assert_eq!(ev.details["conditions"][0]["value"], 5.0);
    assert_eq!(
        ev.details["snapshot"]["system"]["mem_available_percent"],
        5.0
    );
    assert_eq!(ev.details["snapshot"]["cpus"][1]["cpu"], 1);
}

#[test]
fn per_cpu_event_names_the_cpu() {
    let mut det = detector(0);
    let mut st = Stream::new();
    run(&mut det, &st.next(spin_cpu1));
    let s = st.next(spin_cpu1);
    let alerts = run(&mut det, &s);
    let rule = &det.rules()[alerts[0].rule_index as usize];
    let ev = alerts[0].to_event(rule, Some(&s));
    assert_eq!(ev.culprit.unwrap().cpu, Some(1));
    assert!(
        ev.message.starts_with("kernel_spin on cpu 1:"),
        "{}",
        ev.message
    );
    assert_eq!(ev.severity, selfheal_event::Severity::Warning);
}

#[test]
fn config_rules_compile() {
    let c = Config::parse(
        "[[rule]]\nname = \"busy_disk\"\nwhen = [{ metric = \"disk_busy_percent\", above = 90 }]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let det = LightDetector::new(c.effective_rules(), 2, 50.0, Duration::ZERO).unwrap();
    assert_eq!(det.rules().len(), default_rules().len() + 1);
}

#[test]
fn idle_read_samples_are_no_evidence() {
    // memory_low holds from the first sample (sustain 0); an idle read's
    // sample neither raises it nor resets a rule in progress.
    let mut det = detector(0);
    let mut st = Stream::new();
    let low = |s: &mut Sample| s.system[SystemMetric::MemAvailablePercent.index()] = 5.0;
    let idle = st.next(|s| {
        low(s);
        s.stat_read = false;
    });
    assert!(run(&mut det, &idle).is_empty());
    let a = run(&mut det, &st.next(low));
    assert_eq!(names(&det, &a), vec!["memory_low"]);
    // kernel_spin (200 ms) started on CPU 1; idle reads in between do
    // not reset it: the next /proc/stat sample finishes the 200 ms.
    let mut det = detector(0);
    assert!(run(&mut det, &st.next(spin_cpu1)).is_empty());
    assert!(run(&mut det, &st.next(|s| s.stat_read = false)).is_empty());
    let a = run(&mut det, &st.next(spin_cpu1));
    assert_eq!(names(&det, &a), vec!["kernel_spin"]);
}

/// The alert event carries exactly the document the old `json!` literal
/// built: `cpu`, `disk` and `snapshot` only when there is one, a
/// condition's unknown value as `null`.
#[test]
fn alert_details_match_the_documented_json() {
    let det = detector(0);
    let rule = det
        .rules()
        .iter()
        .find(|r| r.name == "kernel_spin")
        .unwrap();
    let alert = Alert {
        rule_index: 0,
        level: Level::Light,
        instance: AlertInstance::Cpu(1),
        raised_at: Instant::now(),
        wall_unix_ms: 1_700_000_000_000,
        held_for: Duration::from_millis(300),
        sample_seq: 42,
        values: [97.123456, f64::NAN, f64::NAN, f64::NAN],
        repeat: true,
    };
    let mut s = Sample::with_cpus(1);
    s.seq = 42;
    s.interval = Duration::from_millis(100);
    s.system[SystemMetric::MemAvailablePercent.index()] = 55.55555;
    let ev = alert.to_event(rule, Some(&s));
    assert_eq!(
        ev.details,
        serde_json::json!({
            "level": "light",
            "scope": "per_cpu",
            "held_ms": 300,
            "sustain_ms": 200,
            "sample_seq": 42,
            "repeat": true,
            "conditions": [
                {"metric": "cpu_system_percent", "cmp": "above", "threshold": 50.0,
                 "value": 97.123},
                {"metric": "cpu_user_percent", "cmp": "below", "threshold": 4.0,
                 "value": null},
            ],
            "cpu": 1,
            "snapshot": {
                "sample_seq": 42,
                "interval_ms": 100.0,
                "system": {"mem_available_percent": 55.556},
                "cpus": [{"cpu": 0}],
                "disks": [],
            },
        })
    );
    let bare = Alert {
        instance: AlertInstance::System,
        ..alert
    };
    let d = bare.to_event(rule, None).details;
    for key in ["cpu", "disk", "snapshot"] {
        assert!(d.get(key).is_none(), "{key}: {d}");
    }
}

/// An alert event written by the detector, stored in SQLite, queried back
/// and printed as the API prints it, and forwarded from a guest, reads
/// back typed and equal to what was written.
#[test]
fn alert_details_read_back_through_the_store_and_the_api() {
    use selfheal_config::Comparison;
    use selfheal_event::Event;
    use selfheal_store::{Query, Store};

    let det = detector(0);
    let rule = det
        .rules()
        .iter()
        .find(|r| r.name == "kernel_spin")
        .unwrap();
    let mut st = Stream::new();
    let s = st.next(spin_cpu1);
    let alert = Alert {
        rule_index: 0,
        level: Level::Heavy,
        instance: AlertInstance::Cpu(1),
        raised_at: Instant::now(),
        wall_unix_ms: 1_700_000_000_000,
        held_for: Duration::from_millis(300),
        sample_seq: s.seq,
        values: [100.0, 0.0, f64::NAN, f64::NAN],
        repeat: false,
    };
    let written = alert.to_event(rule, Some(&s));
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    store.append(&written).unwrap();
    let e = store.query(&Query::new()).unwrap().remove(0);
    let api: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    let mut guest = api.clone();
    guest.source = guest.source.forwarded_from_guest();
    for e in [&e, &api, &guest] {
        let d = AlertDetails::from_event(e).unwrap();
        assert_eq!(selfheal_event::details_value(&d), written.details);
        assert_eq!(
            (d.level, d.scope, d.cpu),
            (Level::Heavy, Scope::PerCpu, Some(1))
        );
        assert_eq!(d.conditions[0].cmp, Comparison::Above);
        assert_eq!(d.conditions[0].value, Some(100.0));
        let snap = d.snapshot.as_ref().unwrap();
        assert_eq!(snap.cpus[1]["cpu_system_percent"], 100.0);
    }
}

/// A document as the `json!` literal wrote it reads back; what is not a
/// light-detector alert is refused.
#[test]
fn an_alert_of_the_json_era_reads_back_and_others_are_refused() {
    use selfheal_config::Comparison;
    use selfheal_event::{Event, EventKind, Severity, Source};

    let old = serde_json::json!({
        "level": "light", "scope": "system", "held_ms": 5868, "sustain_ms": 5000,
        "sample_seq": 9, "repeat": false,
        "conditions": [{"metric": "mem_available_percent", "cmp": "at_most",
                        "threshold": 5.0, "value": null}],
    });
    let e = Event::now(EventKind::Alert, Severity::Warning, Source::Light, "m")
        .with_details(old.clone());
    let d = AlertDetails::from_event(&e).unwrap();
    assert_eq!((d.held_ms, d.scope), (5868, Scope::System));
    assert_eq!(d.conditions[0].cmp, Comparison::AtMost);
    assert_eq!(
        (d.cpu, d.disk.as_deref(), d.snapshot.is_none()),
        (None, None, true)
    );
    assert_eq!(selfheal_event::details_value(&d), old);

    let heavy = Event::now(EventKind::Alert, Severity::Warning, Source::Heavy, "m");
    let err = AlertDetails::from_event(&heavy).unwrap_err();
    assert!(err.to_string().contains("heavy"), "{err}");
    let mut bad = old;
    bad["scope"] = "per_galaxy".into();
    let e = Event::now(EventKind::Alert, Severity::Warning, Source::Light, "m").with_details(bad);
    let err = AlertDetails::from_event(&e).unwrap_err();
    assert!(err.to_string().contains("per_galaxy"), "{err}");
}
