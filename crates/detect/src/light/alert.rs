//! The alert a light-detector rule raises: a small `Copy` value, so handing
//! it to the heavy detector never allocates.

use std::time::{Duration, Instant};

use selfheal_config::{Level, Rule};
use selfheal_event::{Culprit, Event, EventKind, Severity, Source};
use selfheal_sampler::{Sample, SystemMetric};

/// The most conditions a rule may have.
pub const MAX_CONDITIONS: usize = 4;

/// Which instance a rule fired for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertInstance {
    /// The machine as a whole.
    System,
    /// One CPU.
    Cpu(u32),
    /// One block device, by index into the sample's disk table.
    Disk(u32),
}

/// A rule held out of range for its sustain time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    /// Index of the rule in the detector's rule list.
    pub rule_index: u16,
    /// Light or heavy.
    pub level: Level,
    /// The CPU, disk or machine.
    pub instance: AlertInstance,
    /// When the alert was raised (monotonic).
    pub raised_at: Instant,
    /// Wall-clock time of the sample that raised it, ms since the epoch.
    pub wall_unix_ms: i64,
    /// How long the condition had held.
    pub held_for: Duration,
    /// The sample sequence number that raised it.
    pub sample_seq: u64,
    /// Each condition's metric value, in rule order (unused slots are NaN).
    pub values: [f64; MAX_CONDITIONS],
    /// True for a repeat of an alert whose condition still holds.
    pub repeat: bool,
}

impl Alert {
    /// The CPU, when the rule is per CPU.
    pub fn cpu(&self) -> Option<u32> {
        match self.instance {
            AlertInstance::Cpu(c) => Some(c),
            _ => None,
        }
    }

    /// Builds the store event for this alert. `snapshot` is the sample to
    /// attach as evidence (normally the one that raised it).
    pub fn to_event(&self, rule: &Rule, snapshot: Option<&Sample>) -> Event {
        let mut parts = Vec::new();
        let mut conditions = Vec::new();
        for (c, v) in rule.when.iter().zip(self.values.iter()) {
            parts.push(format!(
                "{}={:.1} {} {}",
                c.metric.name(),
                v,
                c.cmp.symbol(),
                c.threshold
            ));
            conditions.push(serde_json::json!({
                "metric": c.metric.name(),
                "cmp": c.cmp.key(),
                "threshold": c.threshold,
                "value": finite(*v),
            }));
        }
        let (where_, cpu, disk) = match self.instance {
            AlertInstance::System => (String::new(), None, None),
            AlertInstance::Cpu(c) => (format!(" on cpu {c}"), Some(c), None),
            AlertInstance::Disk(d) => {
                let name = snapshot
                    .and_then(|s| s.disk_names.get(d as usize))
                    .map_or_else(|| format!("disk #{d}"), |n| n.as_str().to_string());
                (format!(" on {name}"), None, Some(name))
            }
        };
        let message = format!(
            "{}{}: {} for {}ms{}",
            rule.name,
            where_,
            parts.join(", "),
            self.held_for.as_millis(),
            if self.repeat { " (still holding)" } else { "" }
        );
        let severity = match self.level {
            Level::Light => Severity::Warning,
            Level::Heavy => Severity::Critical,
        };
        let mut event =
            Event::now(EventKind::Alert, severity, Source::Light, message).with_rule(&rule.name);
        event.time_unix_ms = self.wall_unix_ms;
        if let Some(cpu) = cpu {
            event = event.with_culprit(Culprit {
                cpu: Some(cpu),
                ..Culprit::default()
            });
        }
        let mut details = serde_json::json!({
            "level": self.level.as_str(),
            "scope": rule.scope().name(),
            "held_ms": self.held_for.as_millis() as u64,
            "sustain_ms": rule.sustain.get().as_millis() as u64,
            "sample_seq": self.sample_seq,
            "repeat": self.repeat,
            "conditions": conditions,
        });
        if let Some(cpu) = cpu {
            details["cpu"] = cpu.into();
        }
        if let Some(disk) = disk {
            details["disk"] = disk.into();
        }
        if let Some(s) = snapshot {
            details["snapshot"] = snapshot_json(s);
        }
        event.with_details(details)
    }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!((v * 1000.0).round() / 1000.0)
    } else {
        serde_json::Value::Null
    }
}

/// A sample as a JSON object: machine-wide metrics by name, per-CPU and
/// per-disk metrics as arrays of objects. Unavailable metrics are omitted.
pub fn snapshot_json(s: &Sample) -> serde_json::Value {
    let mut system = serde_json::Map::new();
    for m in SystemMetric::ALL {
        let v = s.system(*m);
        if v.is_finite() {
            system.insert(m.name().to_string(), finite(v));
        }
    }
    let cpus: Vec<serde_json::Value> = s
        .cpus
        .iter()
        .enumerate()
        .map(|(i, vals)| {
            let mut o = serde_json::Map::new();
            o.insert("cpu".into(), i.into());
            for m in selfheal_sampler::CpuMetric::ALL {
                let v = vals[m.index()];
                if v.is_finite() {
                    o.insert(m.name().to_string(), finite(v));
                }
            }
            serde_json::Value::Object(o)
        })
        .collect();
    let disks: Vec<serde_json::Value> = s
        .disks
        .iter()
        .zip(s.disk_names.iter())
        .map(|(vals, name)| {
            let mut o = serde_json::Map::new();
            o.insert("device".into(), name.as_str().into());
            for m in selfheal_sampler::DiskMetric::ALL {
                let v = vals[m.index()];
                if v.is_finite() {
                    o.insert(m.name().to_string(), finite(v));
                }
            }
            serde_json::Value::Object(o)
        })
        .collect();
    serde_json::json!({
        "sample_seq": s.seq,
        "interval_ms": s.interval.as_secs_f64() * 1000.0,
        "system": system,
        "cpus": cpus,
        "disks": disks,
    })
}
