//! `[recovery]`: the graded recovery ladder, per diagnosis class, and the
//! limits around it (protected processes, scope, rate limits, reboot).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use selfheal_event::Class;

use crate::duration::HumanDuration;
use crate::restart::RestartConfig;

/// One rung of the recovery ladder, least destructive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record the evidence and do nothing else.
    Record,
    /// Move a real-time culprit back to SCHED_OTHER.
    Demote,
    /// SIGSTOP the culprit process (SHFH: suspend the task on the stalled CPU).
    Stop,
    /// Abort the FUSE connection the stuck tasks wait on
    /// (`/sys/fs/fuse/connections/N/abort`): its pending requests fail and
    /// the waiters wake; no process is signalled. The mount answers every
    /// request with ENOTCONN until it is remounted.
    AbortFuse,
    /// SIGKILL the culprit process.
    Kill,
    /// SIGKILL the culprit and every descendant (stopping them first so
    /// none can fork away).
    KillTree,
    /// Kill every process in the culprit's cgroup (only when the cgroup
    /// holds nothing but the culprit's tree).
    KillCgroup,
    /// Freeze the culprit's cgroup (v1 freezer or v2 cgroup.freeze).
    FreezeCgroup,
    /// `systemctl restart` the culprit's systemd unit.
    RestartUnit,
    /// Fork bombs only: move every process the diagnosis blames (each
    /// re-checked) into a new cgroup with `pids.max = 0` beneath the bomb's
    /// own, where none of them can fork again, then kill them there. For a
    /// bomb that shares its cgroup with others (the root, a login session),
    /// where `kill_cgroup` and `freeze_cgroup` refuse.
    Quarantine,
    /// Lower a runaway kernel thread to SCHED_IDLE (nice 19 where that is
    /// refused) and, when the kernel lets it move, keep it on the CPU it
    /// runs on: it still spins, but everything else on that CPU comes
    /// first. The only step that acts on a kernel thread.
    Deprioritize,
    /// Restart the machine under control (refused unless
    /// `recovery.allow_reboot = true`): after the symptom persisted for the
    /// class's grace, the evidence is written durably, disks are synced
    /// with a deadline, then kexec, reboot(2) or the hardware watchdog
    /// (`[recovery.restart]`).
    Reboot,
}

impl Action {
    /// Every action, least destructive first.
    pub const ALL: &'static [Action] = &[
        Action::Record,
        Action::Demote,
        Action::Stop,
        Action::AbortFuse,
        Action::Kill,
        Action::KillTree,
        Action::KillCgroup,
        Action::FreezeCgroup,
        Action::RestartUnit,
        Action::Quarantine,
        Action::Deprioritize,
        Action::Reboot,
    ];

    /// The stable name used in config, events (`details.action`) and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Record => "record",
            Action::Demote => "demote",
            Action::Stop => "stop",
            Action::AbortFuse => "abort_fuse",
            Action::Kill => "kill",
            Action::KillTree => "kill_tree",
            Action::KillCgroup => "kill_cgroup",
            Action::FreezeCgroup => "freeze_cgroup",
            Action::RestartUnit => "restart_unit",
            Action::Quarantine => "quarantine",
            Action::Deprioritize => "deprioritize",
            Action::Reboot => "reboot",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[recovery.ladder]`: the steps tried for each diagnosis class, in order.
/// One key per fault [`Class`], named as the class; [`LadderConfig::for_class`]
/// matches the class exhaustively, so a new class cannot be left without a
/// ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderConfig {
    /// A CPU monopolised by a real-time task.
    #[serde(deserialize_with = "de_ladder")]
    pub rt_hog: Vec<Action>,
    /// A CPU stalled in the kernel.
    #[serde(deserialize_with = "de_ladder")]
    pub kernel_stall: Vec<Action>,
    /// Tasks stuck in uninterruptible sleep.
    #[serde(deserialize_with = "de_ladder")]
    pub d_state: Vec<Action>,
    /// A fork bomb.
    #[serde(deserialize_with = "de_ladder")]
    pub fork_bomb: Vec<Action>,
    /// Memory exhaustion or thrashing (machine or cgroup).
    #[serde(deserialize_with = "de_ladder")]
    pub memory_exhaustion: Vec<Action>,
    /// I/O stalled on a device.
    #[serde(deserialize_with = "de_ladder")]
    pub io_stall: Vec<Action>,
    /// A kernel thread spinning without sleeping.
    #[serde(deserialize_with = "de_ladder")]
    pub runaway_kthread: Vec<Action>,
}

impl Default for LadderConfig {
    fn default() -> Self {
        use Action::*;
        LadderConfig {
            rt_hog: vec![Record, Demote, Stop, Kill],
            // Record, then restart if it persists: the task on a stalled
            // CPU is in the kernel, where SIGSTOP cannot reach it (a stop
            // lands on the return to user space), so a stall that clears
            // after one is a coincidence; and the task is often a bystander
            // (in the hang lab, a workload process caught in a fork storm
            // or in reclaim). Nothing in user space repairs a kernel loop.
            // `["record", "stop", "kill"]` is SHFH's suspend-the-task policy.
            kernel_stall: vec![Record, Reboot],
            // Never the waiters: a task in D cannot die until it wakes,
            // and then the kill destroys its work. The blocker: a dead
            // FUSE connection is aborted (the waiters get an error and
            // carry on), then its server's unit restarted. `kill` acts on
            // the blocking process (a FUSE server), never on a waiter. A
            // restart only when no blocker is known (a lost wake-up in the
            // kernel): never for a network filesystem or FUSE server.
            d_state: vec![Record, AbortFuse, RestartUnit, Reboot],
            fork_bomb: vec![Record, KillTree, KillCgroup, Quarantine, FreezeCgroup],
            // A restart only when no process accounts for the shortage
            // (kernel memory heading for the OOM killer or its panic).
            memory_exhaustion: vec![Record, Kill, KillCgroup, RestartUnit, Reboot],
            io_stall: vec![Record],
            // Nothing in user space stops a kernel thread: it is moved out
            // of everyone's way, and the machine keeps serving.
            runaway_kthread: vec![Record, Deprioritize],
        }
    }
}

impl LadderConfig {
    /// The steps for a class. A dismissal (`legitimate_load`, `held`) has none.
    pub fn for_class(&self, class: Class) -> &[Action] {
        match class {
            Class::RtHog => &self.rt_hog,
            Class::KernelStall => &self.kernel_stall,
            Class::DState => &self.d_state,
            Class::ForkBomb => &self.fork_bomb,
            Class::MemoryExhaustion => &self.memory_exhaustion,
            Class::IoStall => &self.io_stall,
            Class::RunawayKthread => &self.runaway_kthread,
            Class::LegitimateLoad | Class::Held => &[],
        }
    }
}

fn de_ladder<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Action>, D::Error> {
    let steps = Vec::<Action>::deserialize(d)?;
    for (i, a) in steps.iter().enumerate() {
        if steps[..i].contains(a) {
            return Err(de::Error::custom(format!(
                "`{a}` appears twice in this ladder; list each action once, least destructive first"
            )));
        }
        if *a == Action::Reboot && i + 1 != steps.len() {
            return Err(de::Error::custom(
                "`reboot` must be the last step of a ladder",
            ));
        }
    }
    Ok(steps)
}

/// `recovery.hold_forks`: while `kill_tree` or `quarantine` acts on a fork
/// bomb, no new task may start where it lives, so the step kills each
/// member once instead of racing it. The limit placed is the floor
/// (`pids.max` 0, `kernel.threads-max` 20), not the tasks running then: a
/// slot freed by a kill is never a member's to fork into. What was there
/// before is put back when the step ends (and by the next daemon start,
/// should selfheal die meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldForks {
    /// Never.
    Off,
    /// Lower `pids.max` of the bomb's own cgroup (v1 or v2 pids
    /// controller) to 0. Others in that cgroup cannot fork meanwhile either.
    Cgroup,
    /// As `cgroup`; and for a bomb in a cgroup without `pids.max` (the
    /// root cgroup, or no pids controller), lower `kernel.threads-max` to
    /// 20, below the tasks of any running machine: nothing on the machine can fork while the
    /// step runs (a bomb there was taking every free slot anyway).
    Auto,
}

/// `recovery.hold_forks_max`, range-checked: a cap of 0 would lift every
/// hold before its step starts, and hours of no forks are never right.
fn de_hold_forks_max<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    if !(1_000..=600_000).contains(&v.get().as_millis()) {
        return Err(de::Error::custom(
            crate::invalid::SettingError::out_of_range(
                "hold_forks_max",
                v,
                "1s to 10m (default 30s)",
            ),
        ));
    }
    Ok(v)
}

/// `[recovery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Act on diagnoses; `false` only records them.
    pub enabled: bool,
    /// After each step, wait up to this long for the symptom to clear before escalating.
    pub verify_timeout: HumanDuration,
    /// At most this many actions (all targets) per minute; further ones are refused and recorded.
    pub max_actions_per_minute: u32,
    /// Do not act on the same process or cgroup again within this time.
    pub target_cooldown: HumanDuration,
    /// After an action, diagnoses within this time do not count the
    /// processes it touched, dead or zombie.
    pub settle: HumanDuration,
    /// Processes never touched, by command name (`comm`); a trailing `*`
    /// matches a prefix. pid 1, kernel threads, selfheal and its ancestors
    /// are always protected.
    pub protected: Vec<String>,
    /// systemd units never touched (their processes and their cgroup).
    pub protected_units: Vec<String>,
    /// When not empty, act only on processes inside these cgroup subtrees
    /// (paths as in /proc/PID/cgroup, e.g. "/user.slice").
    pub allowed_cgroups: Vec<String>,
    /// Allow the `reboot` step (the controlled restart): opt-in.
    pub allow_reboot: bool,
    /// Whether `kill_tree` and `quarantine` let a fork bomb fork no more
    /// while they act on it ([`HoldForks`]).
    pub hold_forks: HoldForks,
    /// The longest a fork hold stays in place, whatever the step it serves
    /// is doing: a step stuck (a /proc read blocked behind a hung task)
    /// must not leave the machine unable to fork. 1s to 10m.
    #[serde(deserialize_with = "de_hold_forks_max")]
    pub hold_forks_max: HumanDuration,
    /// The steps per class.
    pub ladder: LadderConfig,
    /// The controlled restart (`reboot` step).
    pub restart: RestartConfig,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            enabled: true,
            verify_timeout: HumanDuration::from_secs(1),
            max_actions_per_minute: 20,
            target_cooldown: HumanDuration::from_secs(10),
            settle: HumanDuration::from_secs(5),
            protected: vec!["sshd*".to_string()],
            protected_units: Vec::new(),
            allowed_cgroups: Vec::new(),
            allow_reboot: false,
            hold_forks: HoldForks::Auto,
            hold_forks_max: HumanDuration::from_secs(30),
            ladder: LadderConfig::default(),
            restart: RestartConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};
    use selfheal_event::Class;
    use std::path::Path;

    #[test]
    fn every_fault_class_has_a_ladder_key_named_as_the_class() {
        // The keys operators write are the class names events carry.
        let table = toml::Value::try_from(super::LadderConfig::default()).unwrap();
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
        for c in Class::ALL.iter().filter(|c| c.is_fault()) {
            let text = format!(
                "[recovery.ladder]\n{} = [\"record\", \"kill\"]\n",
                c.as_str()
            );
            let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
            assert_eq!(
                cfg.recovery.ladder.for_class(*c),
                &[super::Action::Record, super::Action::Kill],
                "{c}"
            );
        }
    }

    fn err(text: &str) -> (usize, String) {
        match Config::parse(text, Path::new("t.toml")).unwrap_err() {
            ConfigError::Invalid { line, message, .. } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_fork_hold_cap_is_range_checked() {
        for bad in ["0", "500ms", "11m"] {
            let (line, msg) = err(&format!("[recovery]\nhold_forks_max = \"{bad}\"\n"));
            assert_eq!(line, 2, "{bad}");
            assert!(
                msg.contains("hold_forks_max") && msg.contains("1s to 10m"),
                "{msg}"
            );
        }
        let c =
            Config::parse("[recovery]\nhold_forks_max = \"2m\"\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.recovery.hold_forks_max.get().as_secs(), 120);
        let d = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(d.recovery.hold_forks_max.get().as_secs(), 30);
    }

    #[test]
    fn ladders_are_validated_where_written() {
        let (line, msg) = err("[recovery.ladder]\nrt_hog = [\"record\", \"kill\", \"kill\"]\n");
        assert_eq!(line, 2);
        assert!(msg.contains("`kill` appears twice"), "{msg}");
        let (_, msg) = err("[recovery.ladder]\nfork_bomb = [\"reboot\", \"kill\"]\n");
        assert!(msg.contains("last step"), "{msg}");
        let (_, msg) = err("[recovery.ladder]\nd_state = [\"nuke\"]\n");
        assert!(msg.contains("kill_tree") && msg.contains("nuke"), "{msg}");
        let c = Config::parse(
            "[recovery]\nallowed_cgroups = [\"/selfheal-sandbox\"]\n[recovery.ladder]\nrt_hog = [\"stop\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            c.recovery.ladder.for_class(Class::RtHog),
            &[super::Action::Stop]
        );
        assert_eq!(c.recovery.ladder.for_class(Class::LegitimateLoad), &[]);
        assert_eq!(c.recovery.allowed_cgroups, vec!["/selfheal-sandbox"]);
    }

    #[test]
    fn detector_sections_check_ranges() {
        let (line, msg) = err("[stall]\nbound = \"5ms\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("20ms to 60s"), "{msg}");
        let (_, msg) = err("[heavy]\ninterval = \"10s\"\n");
        assert!(msg.contains("10ms to 5s"), "{msg}");
        let (_, msg) = err("[heavy]\ndstate_bound = \"0\"\n");
        assert!(msg.contains("greater than zero"), "{msg}");
        let (_, msg) = err("[kmsg]\nwatchdog_thresh = 99\n");
        assert!(msg.contains("1 to 60"), "{msg}");
        let (_, msg) = err("[stall]\ncanary_priority = 100\n");
        assert!(msg.contains("1 to 99"), "{msg}");
        let (_, msg) = err("[watchdog]\ndevise = \"/dev/watchdog\"\n");
        assert!(msg.contains("unknown field `devise`"), "{msg}");
    }
}
