//! A diagnosis's `evidence`, typed: [`DiagnosisEvidence`] has one shape
//! per class (and, for fork bombs and memory, per scope), declared next to
//! the classifier that fills it; the parts shared by the classifiers (a
//! thread, a kernel report, the legitimate-load verdict, the CPU stalls a
//! fork bomb absorbs) are here. Each serialises to exactly the JSON stored
//! in the diagnosis event's `details.evidence`, and
//! [`DiagnosisEvidence::from_stored`] reads it back.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_event::Class;
use selfheal_kmsg::VerdictKind;

pub use super::blocked::{DiskEvidence, HeldEvidence, StuckEvidence, StuckGroupEvidence};
pub use super::cpu::{KthreadEvidence, RtHogEvidence, StallEvidence, Waiting};
pub use super::forkbomb::{CgroupBombEvidence, ProgramBombEvidence, UserBombEvidence};
pub use super::memory::{CgroupEvidence, Holder, MachineEvidence, UnaccountedEvidence};
pub use super::oom::{AbsorbedLimit, Instance, LoopEvidence, Respawner, Victim};

/// A name the code writes from a fixed set (`SCHED_FIFO`, `v2`, …):
/// borrowed when a diagnosis is made, owned when read back from the store.
pub type Name = Cow<'static, str>;

/// The `evidence` of a diagnosis, one variant per shape. Serialised
/// untagged: the event's `class` (and the `scope` inside memory evidence)
/// says which shape a stored document has, so it is read back with
/// [`DiagnosisEvidence::from_stored`], not a derived `Deserialize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DiagnosisEvidence {
    /// `rt_hog`.
    RtHog(RtHogEvidence),
    /// `kernel_stall`.
    KernelStall(StallEvidence),
    /// `runaway_kthread`.
    RunawayKthread(KthreadEvidence),
    /// `d_state` or `io_stall` (boxed: the largest by far).
    Stuck(Box<StuckGroupEvidence>),
    /// `held` (dismissed).
    Held(HeldEvidence),
    /// `fork_bomb`, any scope.
    ForkBomb(ForkBombEvidence),
    /// `memory_exhaustion` of a cgroup at its limit.
    CgroupMemory(CgroupEvidence),
    /// `memory_exhaustion` of the machine, a process accounting for it.
    MachineMemory(MachineEvidence),
    /// `memory_exhaustion` of the machine no process accounts for.
    UnaccountedMemory(UnaccountedEvidence),
    /// `memory_exhaustion` of a cgroup in a fill-and-kill loop.
    OomLoop(LoopEvidence),
    /// `legitimate_load` (dismissed).
    Dismissed(DismissEvidence),
}

impl DiagnosisEvidence {
    /// The document as stored in `details.evidence`.
    pub fn to_value(&self) -> Value {
        selfheal_event::details_value(self)
    }

    /// Reads back the `details.evidence` a diagnosis of `class` stored:
    /// the class picks the shape (for `memory_exhaustion`, its `scope`
    /// and whether a `culprit` says nobody is to blame).
    pub fn from_stored(class: Class, evidence: &Value) -> Result<Self, EvidenceError> {
        let shape = |e: serde_json::Error| EvidenceError::Shape { class, source: e };
        Ok(match class {
            Class::RtHog => DiagnosisEvidence::RtHog(de(evidence).map_err(shape)?),
            Class::KernelStall => DiagnosisEvidence::KernelStall(de(evidence).map_err(shape)?),
            Class::RunawayKthread => {
                DiagnosisEvidence::RunawayKthread(de(evidence).map_err(shape)?)
            }
            Class::DState | Class::IoStall => {
                DiagnosisEvidence::Stuck(Box::new(de(evidence).map_err(shape)?))
            }
            Class::Held => DiagnosisEvidence::Held(de(evidence).map_err(shape)?),
            Class::ForkBomb => DiagnosisEvidence::ForkBomb(de(evidence).map_err(shape)?),
            Class::LegitimateLoad => DiagnosisEvidence::Dismissed(de(evidence).map_err(shape)?),
            Class::MemoryExhaustion => {
                let scope = evidence.get("scope").cloned().unwrap_or(Value::Null);
                match de::<MemoryScope>(&scope).map_err(shape)? {
                    MemoryScope::Cgroup => {
                        DiagnosisEvidence::CgroupMemory(de(evidence).map_err(shape)?)
                    }
                    MemoryScope::CgroupOomLoop => {
                        DiagnosisEvidence::OomLoop(de(evidence).map_err(shape)?)
                    }
                    MemoryScope::Machine if evidence.get("culprit").is_some() => {
                        DiagnosisEvidence::UnaccountedMemory(de(evidence).map_err(shape)?)
                    }
                    MemoryScope::Machine => {
                        DiagnosisEvidence::MachineMemory(de(evidence).map_err(shape)?)
                    }
                }
            }
        })
    }
}

/// `v` as a `T` (without copying it).
fn de<'a, T: Deserialize<'a>>(v: &'a Value) -> Result<T, serde_json::Error> {
    T::deserialize(v)
}

/// A stored `details.evidence` that is not the shape its class writes.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The document does not have the fields the class's evidence has.
    #[error("the evidence of a {class} diagnosis does not have its shape: {source}")]
    Shape {
        /// The diagnosis's class.
        class: Class,
        /// What did not match.
        source: serde_json::Error,
    },
}

/// `scope` of memory evidence: which of its shapes a document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryScope {
    /// A cgroup at its limit ([`CgroupEvidence`]).
    Cgroup,
    /// A cgroup in a fill-and-kill loop ([`LoopEvidence`]).
    CgroupOomLoop,
    /// The machine ([`MachineEvidence`], [`UnaccountedEvidence`]).
    Machine,
}

/// `evidence` of a `fork_bomb`: the scope's own fields, with what was
/// added to them after the fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkBombEvidence {
    #[serde(flatten)]
    pub scope: BombScope,
    /// The blamed process groups (at most 20), when one program is
    /// blamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_groups: Option<Vec<i32>>,
    /// CPU stalls seen at the same time, absorbed as symptoms of the bomb.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_stalls: Option<Vec<AbsorbedStall>>,
}

impl From<BombScope> for ForkBombEvidence {
    fn from(scope: BombScope) -> Self {
        ForkBombEvidence {
            scope,
            process_groups: None,
            cpu_stalls: None,
        }
    }
}

/// Who grows, tagged by `scope` (`cgroup`, `program`, `user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum BombScope {
    /// A cgroup whose pids limit refuses forks.
    Cgroup(CgroupBombEvidence),
    /// One program's related processes.
    Program(ProgramBombEvidence),
    /// One user's processes, of different programs.
    User(UserBombEvidence),
}

/// A thread as evidence (`culprit` of most evidence documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvidence {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    /// Its scheduler state letter (`R`, `D`, …), as a string.
    pub state: String,
    /// The CPU it last ran on.
    pub cpu: Option<u32>,
    /// `SCHED_OTHER`, `SCHED_FIFO`, …
    pub policy: Name,
    pub rt_priority: u32,
    pub nice: i64,
    pub ppid: i32,
    pub rss_bytes: u64,
    pub kernel_thread: bool,
    pub wchan: Option<String>,
    pub uid: Option<u32>,
    /// What it did over the interval, when measured (its keys are absent
    /// otherwise).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cpu_use: Option<CpuUse>,
}

/// A thread's use of the CPU over the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Share of the interval it ran, percent (one decimal).
    pub cpu_percent: f64,
    pub user_ms: u64,
    pub system_ms: u64,
    pub timeslices: u64,
    /// Time it waited runnable, ms.
    pub wait_ms: f64,
}

/// A kernel report as evidence (`kernel_reports[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelReportEvidence {
    pub verdict: VerdictKind,
    pub headline: String,
    pub cpu: Option<u32>,
    pub pid: Option<i32>,
    pub comm: Option<String>,
    pub kernel_ts_us: u64,
}

/// `evidence` of the legitimate-load verdict (a `dismissed` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DismissEvidence {
    /// Why nothing hangs, in words.
    pub reason: String,
    pub runnable_threads: usize,
    pub d_state_threads: usize,
    /// MemAvailable, percent of MemTotal; `null` when unknown.
    pub mem_available_percent: Option<f64>,
    /// The busiest threads, at most 5.
    pub busiest: Vec<BusyTask>,
    pub interval_ms: f64,
}

/// One of the busiest threads of a dismissed diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusyTask {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub cpu_percent: f64,
    pub policy: Name,
}

/// A `kernel_stall` diagnosis a fork bomb absorbed (`cpu_stalls[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorbedStall {
    pub summary: String,
    pub cpu: Option<u32>,
    /// The command on the stalled CPU.
    pub on_cpu: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each part is exactly the JSON the old `json!` literals built: a
    /// thread's CPU use keys only when measured, unknown values `null`.
    #[test]
    fn evidence_parts_match_the_documented_json() {
        let mut t = TaskEvidence {
            pid: 10,
            tid: 11,
            comm: "spin".into(),
            state: "R".into(),
            cpu: Some(1),
            policy: "SCHED_FIFO".into(),
            rt_priority: 50,
            nice: 0,
            ppid: 1,
            rss_bytes: 4096,
            kernel_thread: false,
            wchan: None,
            uid: Some(1000),
            cpu_use: None,
        };
        let bare = json!({
            "pid": 10, "tid": 11, "comm": "spin", "state": "R", "cpu": 1,
            "policy": "SCHED_FIFO", "rt_priority": 50, "nice": 0, "ppid": 1,
            "rss_bytes": 4096, "kernel_thread": false, "wchan": null, "uid": 1000,
        });
        assert_eq!(details_value(&t), bare);
        t.cpu_use = Some(CpuUse {
            cpu_percent: 99.5,
            user_ms: 990,
            system_ms: 5,
            timeslices: 3,
            wait_ms: 0.25,
        });
        let mut measured = bare;
        for (k, v) in [
            ("cpu_percent", json!(99.5)),
            ("user_ms", json!(990)),
            ("system_ms", json!(5)),
            ("timeslices", json!(3)),
            ("wait_ms", json!(0.25)),
        ] {
            measured[k] = v;
        }
        assert_eq!(details_value(&t), measured);

        let k = KernelReportEvidence {
            verdict: VerdictKind::SoftLockup,
            headline: "BUG: soft lockup".into(),
            cpu: Some(1),
            pid: None,
            comm: None,
            kernel_ts_us: 5,
        };
        assert_eq!(
            details_value(&k),
            json!({"verdict": "soft_lockup", "headline": "BUG: soft lockup", "cpu": 1,
                   "pid": null, "comm": null, "kernel_ts_us": 5})
        );

        let d = DismissEvidence {
            reason: "no hang".into(),
            runnable_threads: 3,
            d_state_threads: 0,
            mem_available_percent: None,
            busiest: vec![BusyTask {
                pid: 1,
                tid: 1,
                comm: "a".into(),
                cpu_percent: 12.5,
                policy: "SCHED_OTHER".into(),
            }],
            interval_ms: 100.0,
        };
        assert_eq!(
            details_value(&d),
            json!({
                "reason": "no hang", "runnable_threads": 3, "d_state_threads": 0,
                "mem_available_percent": null,
                "busiest": [{"pid": 1, "tid": 1, "comm": "a", "cpu_percent": 12.5,
                             "policy": "SCHED_OTHER"}],
                "interval_ms": 100.0,
            })
        );

        let s = AbsorbedStall {
            summary: "kernel_stall: cpu 0".into(),
            cpu: Some(0),
            on_cpu: None,
        };
        assert_eq!(
            details_value(&s),
            json!({"summary": "kernel_stall: cpu 0", "cpu": 0, "on_cpu": null})
        );
    }
}
