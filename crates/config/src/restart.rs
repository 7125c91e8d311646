//! `[recovery.restart]`: the controlled restart, the last rung of a ladder
//! (`reboot`): how long a class's symptom must persist first, how often the
//! machine may restart itself, where the evidence is written, and how.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use selfheal_event::Class;

use crate::duration::HumanDuration;

/// How the machine is restarted, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMethod {
    /// `reboot(2)` with `LINUX_REBOOT_CMD_KEXEC`, when a kernel is loaded
    /// (by an operator with `kexec -s -l`, or by selfheal from
    /// `kexec_kernel`): no firmware, the fastest.
    Kexec,
    /// `reboot(2)` with `LINUX_REBOOT_CMD_RESTART`: firmware reset.
    Reboot,
    /// Stop petting the hardware watchdog (`[watchdog] device`) and wait
    /// for it to reset the machine: when the kernel refuses `reboot(2)`.
    Watchdog,
}

impl RestartMethod {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMethod::Kexec => "kexec",
            RestartMethod::Reboot => "reboot",
            RestartMethod::Watchdog => "watchdog",
        }
    }
}

/// `[recovery.restart.grace]`: how long each class's symptom must persist,
/// re-checked, before the `reboot` step restarts the machine. One key per
/// fault class; [`RestartGrace::for_class`] matches classes exhaustively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartGrace {
    /// A real-time task monopolising a CPU.
    pub rt_hog: HumanDuration,
    /// A CPU stalled in the kernel.
    pub kernel_stall: HumanDuration,
    /// Tasks stuck in uninterruptible sleep.
    pub d_state: HumanDuration,
    /// A fork bomb.
    pub fork_bomb: HumanDuration,
    /// Memory exhaustion.
    pub memory_exhaustion: HumanDuration,
    /// I/O stalled on a device.
    pub io_stall: HumanDuration,
    /// A kernel thread spinning without sleeping.
    pub runaway_kthread: HumanDuration,
}

impl Default for RestartGrace {
    fn default() -> Self {
        RestartGrace {
            rt_hog: HumanDuration::from_secs(30),
            // Half the kernel's own soft-lockup threshold (20 s): long
            // enough for legitimate long kernel work (printk storms to a
            // slow console, compaction), before RCU stalls (21 s) pile up.
            kernel_stall: HumanDuration::from_secs(10),
            // No blocker to act on for a minute: a kernel that lost a
            // wake-up. Half the kernel's own hung-task report (120 s).
            d_state: HumanDuration::from_secs(60),
            fork_bomb: HumanDuration::from_secs(30),
            // Kernel memory heading for the OOM killer or its panic: it
            // comes within seconds, waiting would lose the record.
            memory_exhaustion: HumanDuration::from_secs(0),
            io_stall: HumanDuration::from_secs(60),
            runaway_kthread: HumanDuration::from_secs(60),
        }
    }
}

impl RestartGrace {
    /// The grace of `class` (dismissals never restart: zero).
    pub fn for_class(&self, class: Class) -> Duration {
        match class {
            Class::RtHog => self.rt_hog.get(),
            Class::KernelStall => self.kernel_stall.get(),
            Class::DState => self.d_state.get(),
            Class::ForkBomb => self.fork_bomb.get(),
            Class::MemoryExhaustion => self.memory_exhaustion.get(),
            Class::IoStall => self.io_stall.get(),
            Class::RunawayKthread => self.runaway_kthread.get(),
            Class::LegitimateLoad | Class::Held => Duration::ZERO,
        }
    }
}

/// `[recovery.restart]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// Per class, how long the symptom must persist before restarting.
    pub grace: RestartGrace,
    /// A `kernel_stall` whose CPU has taken no interrupt since the grace
    /// began is restarted after this much of it, however long the class's
    /// grace: a CPU with interrupts off takes the others with it at their
    /// next cross-CPU call (a TLB shootdown), after which no user space is
    /// left to restart anything. Longer than `kernel_stall`'s grace: off.
    pub irqs_off_grace: HumanDuration,
    /// At most this many restarts within `window`, across boots; then the
    /// step is refused (a restart loop stops itself). 0 = never.
    pub max_restarts: u32,
    /// The window `max_restarts` counts in.
    #[serde(deserialize_with = "crate::heavy::de_nonzero")]
    pub window: HumanDuration,
    /// Where the restart record and history are written (fsynced).
    pub state_dir: PathBuf,
    /// How long `sync(2)` may take before the restart goes ahead anyway.
    pub sync_timeout: HumanDuration,
    /// How long the event store may take to commit the last events.
    pub flush_timeout: HumanDuration,
    /// Restart methods, tried in order.
    #[serde(deserialize_with = "de_methods")]
    pub methods: Vec<RestartMethod>,
    /// A kernel selfheal loads with `kexec_file_load(2)` at start, so the
    /// `kexec` method skips the firmware. Unset: only a kernel an operator
    /// loaded is used.
    pub kexec_kernel: Option<PathBuf>,
    /// Its initramfs.
    pub kexec_initrd: Option<PathBuf>,
    /// Its command line (unset: this boot's /proc/cmdline).
    pub kexec_cmdline: Option<String>,
    /// Also write the record to pstore (`/dev/pmsg0`) where the kernel has
    /// one: it survives a restart in RAM even when the disk does not.
    pub pstore: bool,
    /// Also write the record to an EFI variable (efivarfs): survives any
    /// restart, but firmware NVRAM is small and wears, so off by default.
    pub efi: bool,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            grace: RestartGrace::default(),
            // Legitimate interrupts-off sections last microseconds; the
            // kernel's hard-lockup report comes at 10 s. Three seconds of
            // a deaf CPU is a dead CPU.
            irqs_off_grace: HumanDuration::from_secs(3),
            max_restarts: 3,
            window: HumanDuration::from_secs(24 * 3600),
            state_dir: PathBuf::from("/var/lib/selfheal"),
            sync_timeout: HumanDuration::from_secs(5),
            flush_timeout: HumanDuration::from_secs(2),
            methods: vec![
                RestartMethod::Kexec,
                RestartMethod::Reboot,
                RestartMethod::Watchdog,
            ],
            kexec_kernel: None,
            kexec_initrd: None,
            kexec_cmdline: None,
            pstore: true,
            efi: false,
        }
    }
}

fn de_methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RestartMethod>, D::Error> {
    let v = Vec::<RestartMethod>::deserialize(d)?;
    if v.is_empty() {
        return Err(de::Error::custom(
            "methods is empty; list at least one of \"kexec\", \"reboot\", \"watchdog\" (or set recovery.allow_reboot = false)",
        ));
    }
    for (i, m) in v.iter().enumerate() {
        if v[..i].contains(m) {
            return Err(de::Error::custom(format!(
                "`{}` appears twice in methods",
                m.as_str()
            )));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use selfheal_event::Class;

    use crate::{Config, ConfigError};

    #[test]
    fn every_fault_class_has_a_grace_key_named_as_the_class() {
        let table = toml::Value::try_from(super::RestartGrace::default()).unwrap();
        let mut keys: Vec<&str> = table
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut faults: Vec<&str> = Class::ALL
            .iter()
            .filter(|c| c.is_fault())
            .map(|c| c.as_str())
            .collect();
        faults.sort_unstable();
        assert_eq!(keys, faults);
    }

    #[test]
    fn restart_settings_are_read_and_checked() {
        let c = Config::parse(
            "[recovery.restart]\nmax_restarts = 1\nmethods = [\"reboot\"]\n[recovery.restart.grace]\nkernel_stall = \"2s\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let r = &c.recovery.restart;
        assert_eq!(r.max_restarts, 1);
        assert_eq!(r.methods, [super::RestartMethod::Reboot]);
        assert_eq!(
            r.grace.for_class(Class::KernelStall),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            r.grace.for_class(Class::DState),
            std::time::Duration::from_secs(60)
        );
        assert_eq!(r.irqs_off_grace.get(), std::time::Duration::from_secs(3));
        for (text, says) in [
            ("[recovery.restart]\nmethods = []\n", "methods is empty"),
            (
                "[recovery.restart]\nmethods = [\"reboot\", \"reboot\"]\n",
                "twice",
            ),
            ("[recovery.restart]\nmethods = [\"halt\"]\n", "kexec"),
            ("[recovery.restart]\nwindow = \"0\"\n", "greater than zero"),
            ("[recovery.restart.grace]\nhang = \"1s\"\n", "unknown field"),
        ] {
            match Config::parse(text, Path::new("t.toml")).unwrap_err() {
                ConfigError::Invalid { message, .. } => {
                    assert!(message.contains(says), "{text}: {message}")
                }
                other => panic!("{other}"),
            }
        }
    }
}
