//! `[[vm]]` tables: QEMU guests the daemon runs and watches from the host
//! (`selfheal vm` builds the same structure from its flags).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use selfheal_event::Class;

use crate::app::{check_name, de_command, Output, RestartPolicy};
use crate::duration::HumanDuration;
use crate::invalid::SettingError;

/// One guest: `[[vm]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Unique name: letters, digits, `_`, `-`, `.` (tags every event and
    /// metric of this guest, forwarded ones included).
    #[serde(deserialize_with = "de_vm_name")]
    pub name: String,
    /// `qemu-system-x86_64` and its arguments. selfheal adds a QMP socket,
    /// a pvpanic device (with `-action panic=none`) and the guest link's
    /// virtio-serial port; it refuses arguments that conflict with them.
    #[serde(deserialize_with = "de_command")]
    pub command: Vec<String>,
    /// Name of the guest link's virtio-serial port (the guest's
    /// `[host_link] port`).
    #[serde(default = "default_port")]
    pub port: String,
    /// The guest link silent this long while the guest runs means hung
    /// (`"0"`: no heartbeat detection). Counted from the first heartbeat.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: HumanDuration,
    /// Diagnoses forwarded by the guest's own selfheal that the host acts
    /// on when the guest does not report them recovered within
    /// `guest_grace`: the faults a guest cannot undo itself.
    #[serde(default = "default_rollback_on", deserialize_with = "de_classes")]
    pub rollback_on: Vec<Class>,
    /// Time the guest's own recovery gets before the host acts.
    #[serde(default = "default_grace")]
    pub guest_grace: HumanDuration,
    /// Settle window after a rollback: a guest diagnosis arriving this soon
    /// after one, whose evidence reaches back over it, is the guest seeing
    /// the rolled-back time as a stall; it is recorded, not acted on
    /// (`"0"`: off, every diagnosis acted on).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// When QEMU is started again: after it exits (`never`, `on-failure`,
    /// `always`), and, unless `never`, when a rollback cannot clear a
    /// fault.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// At most this many restarts within `restart_window`, then give up.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Window for `max_restarts` and `checkpoint.max_rollbacks`.
    #[serde(default = "default_window")]
    pub restart_window: HumanDuration,
    /// Other unix sockets QEMU listens on (`server=on`) whose peer tolerates
    /// bytes lost or sent twice across a rollback (a serial console read by
    /// a line logger, a trigger channel). Any other socket makes a rollback
    /// impossible (then the guest restarts).
    #[serde(default)]
    pub replay_tolerant_sockets: Vec<std::path::PathBuf>,
    /// QEMU's own stdout: `"inherit"`, `"null"` or a file (appended).
    #[serde(default)]
    pub stdout: Output,
    /// QEMU's own stderr, same choices.
    #[serde(default)]
    pub stderr: Output,
    /// `[vm.checkpoint]`.
    #[serde(default)]
    pub checkpoint: VmCheckpointConfig,
}

fn default_port() -> String {
    "org.selfheal.0".into()
}

fn default_heartbeat_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}

fn default_rollback_on() -> Vec<Class> {
    vec![
        Class::KernelStall,
        Class::DState,
        Class::ForkBomb,
        Class::MemoryExhaustion,
    ]
}

fn default_grace() -> HumanDuration {
    HumanDuration::from_millis(500)
}

fn default_settle() -> HumanDuration {
    HumanDuration::from_secs(3)
}

fn default_max_restarts() -> u32 {
    5
}

fn default_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// VM-μCheckpoint: the QEMU process (all guest RAM and vCPU state under
/// TCG) checkpointed incrementally in memory; a guest panic or hang is
/// rolled back in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmCheckpointConfig {
    /// Time between checkpoints (10ms to 60s); `"0"` turns them off (then
    /// a panic or hang restarts the guest).
    pub interval: HumanDuration,
    /// Recent checkpoints kept at `interval` (1 to 256).
    pub keep: usize,
    /// Older checkpoints: one per this much time (`"0"`: none beyond `keep`).
    pub older_every: HumanDuration,
    /// … back to this age. Must reach past the slowest detection that
    /// should be rolled back (a task blocked 2 s, a leak found when memory
    /// runs out).
    pub older_span: HumanDuration,
    /// The same fault again this soon after a rollback goes one checkpoint
    /// further back (progressive rollback).
    pub recurrence_window: HumanDuration,
    /// More rollbacks than this within `restart_window` and the guest is
    /// restarted instead (0: no limit).
    pub max_rollbacks: u32,
}

impl Default for VmCheckpointConfig {
    fn default() -> Self {
        VmCheckpointConfig {
            interval: HumanDuration::from_millis(50),
            keep: 8,
            older_every: HumanDuration::from_secs(1),
            older_span: HumanDuration::from_secs(10),
            recurrence_window: HumanDuration::from_secs(5),
            max_rollbacks: 10,
        }
    }
}

impl VmCheckpointConfig {
    /// True when checkpoints are on.
    pub fn enabled(&self) -> bool {
        !self.interval.get().is_zero()
    }
}

impl VmConfig {
    /// A guest with every optional setting at its default.
    pub fn new(name: &str, command: Vec<String>) -> VmConfig {
        VmConfig {
            name: name.into(),
            command,
            port: default_port(),
            heartbeat_timeout: default_heartbeat_timeout(),
            rollback_on: default_rollback_on(),
            guest_grace: default_grace(),
            settle: default_settle(),
            restart: RestartPolicy::OnFailure,
            max_restarts: default_max_restarts(),
            restart_window: default_window(),
            replay_tolerant_sockets: Vec::new(),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            checkpoint: VmCheckpointConfig::default(),
        }
    }

    /// Checks every value; the message names the VM and the fix.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.validate_inner().map_err(|e| match e {
            // A bad name is said without the name it would be said of.
            SettingError::Name(_) => e,
            e => e.in_vm(&self.name),
        })
    }

    fn validate_inner(&self) -> Result<(), SettingError> {
        check_name(&self.name, "vm")?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SettingError::EmptyCommand);
        }
        if self.port.is_empty() || self.port.contains(['/', ',', ' ']) {
            return Err(SettingError::VmPort {
                port: self.port.clone(),
            });
        }
        let c = &self.checkpoint;
        let ms = |d: HumanDuration| d.get().as_millis();
        if c.enabled() && !(10..=60_000).contains(&ms(c.interval)) {
            return Err(SettingError::out_of_range(
                "checkpoint interval",
                c.interval,
                "10ms to 60s, or \"0\" for none",
            ));
        }
        if !(1..=256).contains(&c.keep) {
            return Err(SettingError::out_of_range(
                "checkpoint keep =",
                c.keep,
                "1 to 256 (default 8)",
            ));
        }
        if !c.older_every.get().is_zero() && c.older_span.get() < c.older_every.get() {
            return Err(SettingError::OlderSpan {
                span: c.older_span,
                every: c.older_every,
            });
        }
        if !(10..=600_000).contains(&ms(c.recurrence_window)) {
            return Err(SettingError::out_of_range(
                "checkpoint recurrence_window",
                c.recurrence_window,
                "10ms to 10m",
            ));
        }
        let hb = ms(self.heartbeat_timeout);
        if hb != 0 && !(200..=600_000).contains(&hb) {
            return Err(SettingError::out_of_range(
                "heartbeat_timeout",
                self.heartbeat_timeout,
                "200ms to 10m, or \"0\" for none",
            ));
        }
        if ms(self.guest_grace) > 60_000 {
            return Err(SettingError::out_of_range(
                "guest_grace",
                self.guest_grace,
                "0 to 60s",
            ));
        }
        if ms(self.settle) > 60_000 {
            return Err(SettingError::out_of_range(
                "settle",
                self.settle,
                "0 to 60s (default 3s)",
            ));
        }
        if let Some(p) = self
            .replay_tolerant_sockets
            .iter()
            .find(|p| !p.is_absolute())
        {
            return Err(SettingError::RelativeSocket { path: p.clone() });
        }
        if let Some(c) = self.rollback_on.iter().find(|c| !c.is_fault()) {
            return Err(SettingError::NotAFault {
                class: c.to_string(),
            });
        }
        Ok(())
    }
}

fn de_vm_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_name(&s, "vm").map_err(de::Error::custom)?;
    Ok(s)
}

fn de_classes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Class>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| n.parse::<Class>().map_err(de::Error::custom))
        .collect()
}

/// Deserializes the `[[vm]]` list: every VM valid, names unique.
pub(crate) fn de_vms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<VmConfig>, D::Error> {
    let vms = Vec::<VmConfig>::deserialize(d)?;
    for (i, v) in vms.iter().enumerate() {
        v.validate().map_err(de::Error::custom)?;
        if vms[..i].iter().any(|o| o.name == v.name) {
            return Err(de::Error::custom(format!(
                "vm `{}` is defined twice; vm names must be unique",
                v.name
            )));
        }
    }
    Ok(vms)
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(t, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_vm_table_with_defaults() {
        let c =
            parse("[[vm]]\nname = \"web\"\ncommand = [\"qemu-system-x86_64\", \"-m\", \"512\"]\n")
                .unwrap();
        let v = &c.vms[0];
        assert_eq!(v.name, "web");
        assert_eq!(v.checkpoint.interval.get().as_millis(), 50);
        assert_eq!(v.rollback_on.len(), 4);
        assert_eq!(v.heartbeat_timeout.get().as_secs(), 1);
        assert_eq!(*v, super::VmConfig::new("web", v.command.clone()));
    }

    #[test]
    fn bad_vm_values_are_named() {
        let base = "[[vm]]\nname = \"web\"\ncommand = [\"qemu\"]\n";
        let err = parse(&format!("{base}rollback_on = [\"kernel_stal\"]\n")).unwrap_err();
        assert!(
            err.contains("kernel_stal") && err.contains("kernel_stall"),
            "{err}"
        );
        let err = parse(&format!("{base}rollback_on = [\"legitimate_load\"]\n")).unwrap_err();
        assert!(err.contains("not a fault"), "{err}");
        let err = parse(&format!("{base}heartbeat_timeout = \"50ms\"\n")).unwrap_err();
        assert!(err.contains("200ms"), "{err}");
        let err = parse(&format!("{base}[vm.checkpoint]\nkeep = 0\n")).unwrap_err();
        assert!(err.contains("keep = 0"), "{err}");
        let err = parse(&format!("{base}port = \"a/b\"\n")).unwrap_err();
        assert!(err.contains("port"), "{err}");
        let err = parse(&format!("{base}{base}")).unwrap_err();
        assert!(err.contains("defined twice"), "{err}");
        let err = parse("[[vm]]\nname = \"bad name\"\ncommand = [\"q\"]\n").unwrap_err();
        assert!(err.contains("invalid vm name"), "{err}");
        let err = parse("[[vm]]\nname = \"x\"\ncommand = []\n").unwrap_err();
        assert!(err.contains("command is empty"), "{err}");
    }

    #[test]
    fn commented_example_in_default_toml_parses() {
        let text = crate::DEFAULT_CONFIG_TOML;
        let start = text.find("# [[vm]]").expect("a [[vm]] example");
        let example: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&example).unwrap();
        assert_eq!(c.vms.len(), 1);
        assert_eq!(
            c.vms[0],
            super::VmConfig::new("web", c.vms[0].command.clone())
        );
    }

    #[test]
    fn host_link_section() {
        let c = parse("[host_link]\nport = \"\"\n").unwrap();
        assert!(c.host_link.port.is_empty());
        let err = parse("[host_link]\nheartbeat = \"5ms\"\n").unwrap_err();
        assert!(err.contains("10ms to 10s"), "{err}");
    }
}
