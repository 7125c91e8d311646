//! What one guest boot does: the fault class, the workload, the kernel
//! detector thresholds, when to inject, and how it is told to the guest
//! (`lab.*` words on the kernel command line read by `lab/guest/init`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault the lab can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// Kernel thread spins with local interrupts disabled on one CPU.
    IrqLoop,
    /// Kernel thread spins with preemption disabled on one CPU.
    PreemptLoop,
    /// Kernel thread spins with preemption enabled (guest booted `preempt=full`).
    KthreadLoop,
    /// Kernel thread takes the same spinlock twice on one CPU.
    SpinSelf,
    /// Two kernel threads deadlock on two spinlocks (ABBA), one per CPU.
    SpinAbba,
    /// A task waits forever uninterruptibly holding a mutex; others queue behind it.
    DState,
    /// A kernel thread leaks pages until the machine starves.
    KmemLeak,
    /// A SCHED_FIFO busy loop pinned to one CPU.
    RtHog,
    /// Processes that fork forever.
    ForkBomb,
    /// A process that touches memory it never frees.
    MemHog,
}

impl FaultClass {
    /// Every class, in report order.
    pub const ALL: &'static [FaultClass] = &[
        FaultClass::IrqLoop,
        FaultClass::PreemptLoop,
        FaultClass::KthreadLoop,
        FaultClass::SpinSelf,
        FaultClass::SpinAbba,
        FaultClass::DState,
        FaultClass::KmemLeak,
        FaultClass::RtHog,
        FaultClass::ForkBomb,
        FaultClass::MemHog,
    ];

    /// The name used on the command line, in the guest and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultClass::IrqLoop => "irq_loop",
            FaultClass::PreemptLoop => "preempt_loop",
            FaultClass::KthreadLoop => "kthread_loop",
            FaultClass::SpinSelf => "spin_self",
            FaultClass::SpinAbba => "spin_abba",
            FaultClass::DState => "d_state",
            FaultClass::KmemLeak => "kmem_leak",
            FaultClass::RtHog => "rt_hog",
            FaultClass::ForkBomb => "fork_bomb",
            FaultClass::MemHog => "mem_hog",
        }
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            FaultClass::IrqLoop => "kernel loop, interrupts off, one CPU",
            FaultClass::PreemptLoop => "kernel loop, preemption off, one CPU",
            FaultClass::KthreadLoop => "kernel thread loop, preemption on (preempt=full)",
            FaultClass::SpinSelf => "spinlock re-acquire, one CPU",
            FaultClass::SpinAbba => "spinlock ABBA deadlock, CPUs 0 and 1",
            FaultClass::DState => "uninterruptible wait forever + 4 tasks blocked behind it",
            FaultClass::KmemLeak => "kernel page leak until starvation",
            FaultClass::RtHog => "user SCHED_FIFO busy loop, one CPU",
            FaultClass::ForkBomb => "user fork bomb",
            FaultClass::MemHog => "user memory hog",
        }
    }

    /// The `details.class` a correct selfheal diagnosis carries.
    pub fn expected_diagnosis(self) -> &'static str {
        match self {
            FaultClass::IrqLoop
            | FaultClass::PreemptLoop
            | FaultClass::SpinSelf
            | FaultClass::SpinAbba => "kernel_stall",
            // Preemptible: the CPU is not stalled, the thread never sleeps.
            FaultClass::KthreadLoop => "runaway_kthread",
            FaultClass::DState => "d_state",
            FaultClass::KmemLeak | FaultClass::MemHog => "memory_exhaustion",
            FaultClass::RtHog => "rt_hog",
            FaultClass::ForkBomb => "fork_bomb",
        }
    }

    /// Prefix of the culprit's comm (kernel threads are truncated to 15 bytes).
    pub fn culprit_comm(self) -> &'static str {
        match self {
            FaultClass::IrqLoop => "lab_irq_loop",
            FaultClass::PreemptLoop => "lab_preempt_loo",
            FaultClass::KthreadLoop => "lab_kthread_loo",
            FaultClass::SpinSelf => "lab_spin_self",
            FaultClass::SpinAbba => "lab_abba",
            FaultClass::DState => "lab_dholder",
            FaultClass::KmemLeak => "lab_kmem_leak",
            FaultClass::RtHog => "lab_fifo_hog",
            FaultClass::ForkBomb => "lab_forkbomb",
            FaultClass::MemHog => "lab_memhog",
        }
    }

    /// The CPUs the fault occupies when it is pinned (`fault_cpu` for the
    /// single-CPU classes), or `None` when it is not tied to CPUs.
    pub fn pinned_cpus(self, fault_cpu: u32) -> Option<Vec<u32>> {
        match self {
            FaultClass::IrqLoop
            | FaultClass::PreemptLoop
            | FaultClass::KthreadLoop
            | FaultClass::SpinSelf
            | FaultClass::RtHog => Some(vec![fault_cpu]),
            FaultClass::SpinAbba => Some(vec![0, 1]),
            FaultClass::DState
            | FaultClass::KmemLeak
            | FaultClass::ForkBomb
            | FaultClass::MemHog => None,
        }
    }

    /// True when the fault runs in the kernel (the lab_fault module).
    pub fn is_kernel(self) -> bool {
        !matches!(
            self,
            FaultClass::RtHog | FaultClass::ForkBomb | FaultClass::MemHog
        )
    }

    /// True when no CPU is left to run a user-space detector: undetectable by
    /// design for selfheal, reported as such.
    pub fn stalls_every_cpu(self, guest_cpus: u32) -> bool {
        self == FaultClass::SpinAbba && guest_cpus <= 2
    }

    /// Extra kernel command-line words the class needs.
    pub fn extra_cmdline(self) -> &'static str {
        match self {
            // Debian's default is voluntary preemption, under which a kernel
            // loop without cond_resched() is never preempted at all.
            FaultClass::KthreadLoop => "preempt=full",
            _ => "",
        }
    }

    /// The kernel detectors that could report this class, so the run
    /// observes long enough for them at the chosen thresholds.
    pub fn kernel_detectors(self) -> &'static [KernelDetector] {
        use KernelDetector::*;
        match self {
            FaultClass::IrqLoop => &[HardLockup, SoftLockup, RcuStall],
            FaultClass::PreemptLoop
            | FaultClass::KthreadLoop
            | FaultClass::SpinSelf
            | FaultClass::SpinAbba => &[SoftLockup, RcuStall],
            FaultClass::DState => &[HungTask],
            FaultClass::KmemLeak | FaultClass::MemHog => &[OomKiller],
            FaultClass::RtHog | FaultClass::ForkBomb => &[],
        }
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A class name that the lab does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown fault class `{0}`; known classes: {known}", known = FaultClass::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownClass(pub String);

impl FromStr for FaultClass {
    type Err = UnknownClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultClass::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownClass(s.to_string()))
    }
}

/// The kernel's own hang and starvation detectors the lab reads from the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelDetector {
    /// `watchdog: BUG: soft lockup - CPU#N stuck for Ns!`
    SoftLockup,
    /// `Watchdog detected hard LOCKUP on cpu N` (needs a perf NMI; absent in TCG).
    HardLockup,
    /// `INFO: task X:PID blocked for more than N seconds.`
    HungTask,
    /// `rcu: INFO: rcu_preempt (self-)detected stall(s) on CPU`
    RcuStall,
    /// `Out of memory: Killed process N (comm)`
    OomKiller,
}

impl KernelDetector {
    /// Every detector, in report order.
    pub const ALL: &'static [KernelDetector] = &[
        KernelDetector::SoftLockup,
        KernelDetector::HardLockup,
        KernelDetector::HungTask,
        KernelDetector::RcuStall,
        KernelDetector::OomKiller,
    ];

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelDetector::SoftLockup => "soft_lockup",
            KernelDetector::HardLockup => "hard_lockup",
            KernelDetector::HungTask => "hung_task",
            KernelDetector::RcuStall => "rcu_stall",
            KernelDetector::OomKiller => "oom_killer",
        }
    }
}

/// What the guest runs besides the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Nothing but the heartbeats.
    Idle,
    /// One worker per CPU hashing, writing+fsyncing+reading files, touching memory.
    Mix,
    /// One job per CPU spawning short shell pipelines (read, gzip, sha256), like a build.
    Build,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: &'static [Workload] = &[Workload::Idle, Workload::Mix, Workload::Build];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Mix => "mix",
            Workload::Build => "build",
        }
    }
}

pub use crate::profile::KernelProfile;

/// One guest boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Unique within a run directory; names the log directory.
    pub id: String,
    /// The fault, or `None` for a fault-free run.
    pub class: Option<FaultClass>,
    /// The background workload.
    pub workload: Workload,
    /// Kernel detector thresholds.
    pub profile: KernelProfile,
    /// Whether selfheal runs in the guest (fault-free baselines run without).
    pub selfheal: bool,
    /// Whether selfheal runs with `--dry-run` (no recovery actions).
    pub dry_run: bool,
    /// Delay from selfheal's start to the injection, in ms (drawn at random).
    pub inject_ms: u64,
    /// How long the guest keeps recording after the injection, in seconds.
    pub observe_s: u64,
    /// How long the workload runs, in seconds.
    pub workload_s: u64,
    /// CPU the fault is pinned to.
    pub fault_cpu: u32,
    /// When non-zero, this boot only runs `selfheal calibrate` for this many
    /// seconds under the workload and prints the result on the event channel.
    #[serde(default)]
    pub calibrate_s: u64,
    /// How long the guest records in a boot after a restart (profiles that
    /// follow reboots; 0 otherwise).
    #[serde(default)]
    pub second_observe_s: u64,
    /// `vm-rollback`: the host's `selfheal vm` runs without checkpoints
    /// (the baseline of a fault-free pair measuring their overhead).
    #[serde(default)]
    pub vm_checkpoints_off: bool,
}

impl Scenario {
    /// The calibration boot: the workload plus `selfheal calibrate` for `secs`.
    pub fn calibration(workload: Workload, secs: u64) -> Scenario {
        Scenario {
            id: "calibration".into(),
            class: None,
            workload,
            profile: KernelProfile::Default,
            selfheal: false,
            dry_run: true,
            inject_ms: 0,
            observe_s: 0,
            workload_s: secs + 10,
            fault_cpu: 1,
            calibrate_s: secs,
            second_observe_s: 0,
            vm_checkpoints_off: false,
        }
    }

    /// The kernel command line for this scenario.
    pub fn cmdline(&self) -> String {
        let p = self.profile;
        let mut words = vec![
            "console=ttyS0".to_string(),
            // A guest starved of CPU while the kernel tests its IO-APIC
            // timer at boot panics ("IO-APIC + timer doesn't work!"): seen
            // in selfheal-vm's guest test beside two CPU-bound loops, and
            // the lab's host is as shared.
            "no_timer_check".to_string(),
            // A panic reboots: under -no-reboot QEMU exits; in the profiles
            // that follow reboots the guest comes up again.
            format!("panic={}", crate::profile::PANIC_REBOOT_S),
            format!("watchdog_thresh={}", p.watchdog_thresh_s()),
            format!("rcupdate.rcu_cpu_stall_timeout={}", p.rcu_stall_s()),
            format!("lab.hung_task={}", p.hung_task_s()),
            format!("lab.class={}", self.class.map_or("none", FaultClass::name)),
            format!("lab.workload={}", self.workload.name()),
            format!("lab.inject_ms={}", self.inject_ms),
            format!("lab.observe_s={}", self.observe_s),
            format!("lab.workload_s={}", self.workload_s),
            format!("lab.selfheal={}", u8::from(self.selfheal)),
            format!("lab.dry_run={}", u8::from(self.dry_run)),
            format!("lab.fault_cpu={}", self.fault_cpu),
            format!("lab.calibrate={}", self.calibrate_s),
            format!("lab.profile={}", p.name()),
            format!("lab.observe2_s={}", self.second_observe_s),
        ];
        words.extend(p.cmdline());
        if let Some(extra) = self.class.map(FaultClass::extra_cmdline) {
            words.extend(extra.split_whitespace().map(str::to_string));
        }
        words.join(" ")
    }

    /// How long the host waits before it declares the guest hung and kills it.
    pub fn host_timeout(&self) -> Duration {
        // Boot takes ~5 s on an idle host; TCG on a busy 2-core host can take 4x.
        let boot_s = 40;
        // A restart: the watchdog device's timeout, a second boot, its window.
        let reboot_s = if self.profile.follows_reboot() {
            REBOOT_ALLOWANCE_S + boot_s + self.second_observe_s
        } else {
            0
        };
        // Under the checkpoint engine the boot is slower, and a rollback
        // or two take their time.
        let vm_s = if self.profile.vm_rollback() { 40 } else { 0 };
        Duration::from_secs(
            boot_s
                + self.inject_ms / 1000
                + self.observe_s
                + self.workload_s
                + self.calibrate_s
                + reboot_s
                + vm_s
                + 30,
        )
    }
}

/// Seconds the host allows, beyond a run's observation window, for a guest
/// to reset (a hardware watchdog's timeout) and begin its next boot.
pub const REBOOT_ALLOWANCE_S: u64 = 45;

/// How long the guest records in its boot after a restart.
pub const SECOND_BOOT_OBSERVE_S: u64 = 8;

/// Seconds a `restart` run observes beyond the restart grace selfheal's
/// config gives the class: the ladder's earlier steps, the restart itself.
pub const RESTART_MARGIN_S: u64 = 12;

/// What a `run` command asks for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Classes to inject.
    pub classes: Vec<FaultClass>,
    /// Injections per class.
    pub runs: u32,
    /// Kernel threshold profiles; runs of a class alternate between them.
    pub profiles: Vec<KernelProfile>,
    /// Fault-free runs per workload, each with and without selfheal.
    pub fault_free_runs: u32,
    /// Seconds selfheal gets after the injection even when the kernel's detectors are faster.
    pub selfheal_window_s: u64,
    /// Seconds a fault-free workload runs.
    pub fault_free_s: u64,
    /// Injection delay range after selfheal starts, in ms.
    pub inject_range_ms: (u64, u64),
    /// Run selfheal with --dry-run.
    pub dry_run: bool,
    /// The restart grace, in seconds, that the config under test gives each
    /// diagnosis class (`recovery.restart.grace`): a `restart` run of a class
    /// observes that long and more.
    pub restart_grace_s: std::collections::BTreeMap<String, u64>,
}

/// A small deterministic PRNG (xorshift64*), so a seed reproduces a plan.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

fn second_observe(profile: KernelProfile) -> u64 {
    if profile.follows_reboot() {
        SECOND_BOOT_OBSERVE_S
    } else {
        0
    }
}

/// The scenarios of a run: injections first (workloads and profiles rotate
/// through the runs of each class), then the fault-free pairs.
pub fn plan(opts: &PlanOptions, rng: &mut Rng) -> Vec<Scenario> {
    let mut out = Vec::new();
    let profiles = if opts.profiles.is_empty() {
        vec![KernelProfile::Tight]
    } else {
        opts.profiles.clone()
    };
    for (ci, &class) in opts.classes.iter().enumerate() {
        for run in 0..opts.runs {
            let profile = profiles[run as usize % profiles.len()];
            // Offset by class so a one-run plan still covers every workload.
            let workload = Workload::ALL[(ci + run as usize) % Workload::ALL.len()];
            let kernel_s = class
                .kernel_detectors()
                .iter()
                .map(|&d| profile.worst_case_s(d))
                .max()
                .unwrap_or(0);
            let mut observe_s = opts.selfheal_window_s.max(kernel_s + 2);
            if profile.controlled_restart() {
                if let Some(g) = opts.restart_grace_s.get(class.expected_diagnosis()) {
                    observe_s = observe_s.max(g + RESTART_MARGIN_S);
                }
            }
            let inject_ms = rng.range(opts.inject_range_ms.0, opts.inject_range_ms.1);
            out.push(Scenario {
                id: format!("{}-{:03}", class.name(), run + 1),
                class: Some(class),
                workload,
                profile,
                selfheal: profile.runs_selfheal(),
                dry_run: opts.dry_run,
                inject_ms,
                observe_s,
                workload_s: inject_ms / 1000 + observe_s + 5,
                fault_cpu: 1,
                calibrate_s: 0,
                second_observe_s: second_observe(profile),
                vm_checkpoints_off: false,
            });
        }
    }
    // Fault-free pairs compare a profile that runs selfheal with the same
    // profile without it; profiles without selfheal have no pair.
    let paired: Vec<KernelProfile> = profiles
        .iter()
        .copied()
        .filter(|p| p.runs_selfheal())
        .collect();
    let fault_free_runs = if paired.is_empty() {
        0
    } else {
        opts.fault_free_runs
    };
    for &workload in Workload::ALL {
        for run in 0..fault_free_runs {
            let profile = paired[run as usize % paired.len()];
            // vm-rollback pairs the host's checkpoints off and on (selfheal
            // runs in the guest in both); an idle guest has no throughput
            // to compare.
            let vm = profile.vm_rollback();
            if vm && workload == Workload::Idle {
                continue;
            }
            for with in [false, true] {
                let variant = match (vm, with) {
                    (true, true) => "ckpt",
                    (true, false) => "nockpt",
                    (false, true) => "selfheal",
                    (false, false) => "baseline",
                };
                out.push(Scenario {
                    id: format!("none-{}-{variant}-{:03}", workload.name(), run + 1),
                    class: None,
                    workload,
                    profile,
                    selfheal: with || vm,
                    dry_run: opts.dry_run,
                    inject_ms: opts.inject_range_ms.0,
                    // The guest waits for a workload after this window; idle
                    // has none, so it watches for the whole run here.
                    observe_s: if workload == Workload::Idle {
                        opts.fault_free_s
                    } else {
                        1
                    },
                    workload_s: opts.fault_free_s,
                    fault_cpu: 1,
                    calibrate_s: 0,
                    second_observe_s: second_observe(profile),
                    vm_checkpoints_off: vm && !with,
                });
            }
        }
    }
    // Round by round: every class's first run, then the first fault-free
    // runs, then every class's second run..., so a run cut short still
    // covers every class and has fault-free runs to compare with.
    let round = |id: &str| -> u32 {
        id.rsplit('-')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1)
    };
    out.sort_by_key(|s| (round(&s.id), s.class.is_none()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PlanOptions {
        PlanOptions {
            classes: FaultClass::ALL.to_vec(),
            runs: 1,
            profiles: vec![KernelProfile::Tight],
            fault_free_runs: 1,
            selfheal_window_s: 8,
            fault_free_s: 15,
            inject_range_ms: (3000, 6000),
            dry_run: false,
            restart_grace_s: Default::default(),
        }
    }

    #[test]
    fn class_names_round_trip_and_unknown_is_explained() {
        for c in FaultClass::ALL {
            assert_eq!(c.name().parse::<FaultClass>().unwrap(), *c);
        }
        let err = "oops".parse::<FaultClass>().unwrap_err().to_string();
        assert!(err.contains("oops") && err.contains("irq_loop"), "{err}");
    }

    #[test]
    fn quick_plan_covers_every_class_and_workload() {
        let plan = plan(&opts(), &mut Rng::new(7));
        let injections: Vec<_> = plan.iter().filter(|s| s.class.is_some()).collect();
        assert_eq!(injections.len(), FaultClass::ALL.len());
        for w in Workload::ALL {
            assert!(injections.iter().any(|s| s.workload == *w), "{w:?} unused");
        }
        // Fault-free: each workload with and without selfheal.
        let free: Vec<_> = plan.iter().filter(|s| s.class.is_none()).collect();
        assert_eq!(free.len(), 2 * Workload::ALL.len());
        assert!(plan.iter().all(|s| (3000..=6000).contains(&s.inject_ms)));
    }

    #[test]
    fn runs_go_round_by_round() {
        let mut o = opts();
        o.runs = 3;
        let plan = plan(&o, &mut Rng::new(3));
        let ids: Vec<&str> = plan
            .iter()
            .filter(|s| s.class.is_some())
            .map(|s| s.id.as_str())
            .collect();
        let n = FaultClass::ALL.len();
        assert_eq!(ids.len(), 3 * n);
        // Every class once before any class twice.
        assert!(ids[..n].iter().all(|id| id.ends_with("-001")), "{ids:?}");
        assert!(
            ids[n..2 * n].iter().all(|id| id.ends_with("-002")),
            "{ids:?}"
        );
        assert_eq!(ids[0], format!("{}-001", FaultClass::ALL[0].name()));
        // The first fault-free pairs come right after the first round.
        let w = Workload::ALL.len();
        assert!(plan[..n].iter().all(|s| s.class.is_some()));
        assert!(plan[n..n + 2 * w].iter().all(|s| s.class.is_none()));
        assert!(plan[n + 2 * w].class.is_some());
    }

    #[test]
    fn default_profile_waits_for_the_slow_hung_task_detector() {
        let mut o = opts();
        o.classes = vec![FaultClass::DState];
        o.profiles = vec![KernelProfile::Default];
        let plan = plan(&o, &mut Rng::new(1));
        // Reported between 120 and 240 s after the task blocked.
        assert!(plan[0].observe_s >= 241, "{}", plan[0].observe_s);
        assert!(plan[0].host_timeout().as_secs() > plan[0].observe_s);
    }

    #[test]
    fn cmdline_carries_thresholds_and_class_extras() {
        let mut o = opts();
        o.classes = vec![FaultClass::KthreadLoop];
        let s = &plan(&o, &mut Rng::new(1))[0];
        let c = s.cmdline();
        for w in [
            "watchdog_thresh=1",
            "rcupdate.rcu_cpu_stall_timeout=3",
            "lab.hung_task=1",
            "lab.class=kthread_loop",
            "preempt=full",
            "lab.selfheal=1",
        ] {
            assert!(c.split(' ').any(|x| x == w), "{w} missing from {c}");
        }
    }

    #[test]
    fn vm_rollback_pairs_checkpoints_off_and_on_with_selfheal_in_both() {
        let mut o = opts();
        o.classes = vec![FaultClass::IrqLoop];
        o.profiles = vec![KernelProfile::VmRollback];
        o.fault_free_runs = 2;
        let plan = plan(&o, &mut Rng::new(5));
        let free: Vec<&Scenario> = plan.iter().filter(|s| s.class.is_none()).collect();
        // Mix and build, 2 rounds, off and on; idle has no throughput.
        assert_eq!(free.len(), 8, "{free:?}");
        assert!(free
            .iter()
            .all(|s| s.selfheal && s.workload != Workload::Idle));
        assert_eq!(free.iter().filter(|s| s.vm_checkpoints_off).count(), 4);
        assert!(free
            .iter()
            .any(|s| s.id == "none-mix-nockpt-001" && s.vm_checkpoints_off));
        assert!(free
            .iter()
            .any(|s| s.id == "none-build-ckpt-002" && !s.vm_checkpoints_off));
        let f = plan.iter().find(|s| s.class.is_some()).unwrap();
        assert!(f.selfheal && !f.vm_checkpoints_off);
        assert!(f.cmdline().contains("lab.profile=vm-rollback"));
    }

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..=20).contains(&x));
        }
    }
}
