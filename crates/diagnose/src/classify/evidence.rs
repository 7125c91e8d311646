//! Typed parts of a diagnosis's `evidence` shared by the classifiers: a
//! thread, a kernel report, the legitimate-load verdict and the CPU
//! stalls a fork bomb absorbs. Each serialises to the JSON stored in the
//! event's `details.evidence`.

use serde::Serialize;

/// A thread as evidence (`culprit` of most evidence documents).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TaskEvidence<'a> {
    pub pid: i32,
    pub tid: i32,
    pub comm: &'a str,
    /// Its scheduler state letter (`R`, `D`, …), as a string.
    pub state: String,
    /// The CPU it last ran on.
    pub cpu: Option<u32>,
    /// `SCHED_OTHER`, `SCHED_FIFO`, …
    pub policy: &'static str,
    pub rt_priority: u32,
    pub nice: i64,
    pub ppid: i32,
    pub rss_bytes: u64,
    pub kernel_thread: bool,
    pub wchan: Option<&'a str>,
    pub uid: Option<u32>,
    /// What it did over the interval, when measured (its keys are absent
    /// otherwise).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cpu_use: Option<CpuUse>,
}

/// A thread's use of the CPU over the interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CpuUse {
    /// Share of the interval it ran, percent (one decimal).
    pub cpu_percent: f64,
    pub user_ms: u64,
    pub system_ms: u64,
    pub timeslices: u64,
    /// Time it waited runnable, ms.
    pub wait_ms: f64,
}

/// A kernel report as evidence (`kernel_reports[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct KernelReportEvidence<'a> {
    pub verdict: &'static str,
    pub headline: &'a str,
    pub cpu: Option<u32>,
    pub pid: Option<i32>,
    pub comm: Option<&'a str>,
    pub kernel_ts_us: u64,
}

/// `evidence` of the legitimate-load verdict (a `dismissed` event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DismissEvidence<'a> {
    /// Why nothing hangs, in words.
    pub reason: &'a str,
    pub runnable_threads: usize,
    pub d_state_threads: usize,
    /// MemAvailable, percent of MemTotal; `null` when unknown.
    pub mem_available_percent: Option<f64>,
    /// The busiest threads, at most 5.
    pub busiest: Vec<BusyTask<'a>>,
    pub interval_ms: f64,
}

/// One of the busiest threads of a dismissed diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BusyTask<'a> {
    pub pid: i32,
    pub tid: i32,
    pub comm: &'a str,
    pub cpu_percent: f64,
    pub policy: &'static str,
}

/// A `kernel_stall` diagnosis a fork bomb absorbed (`cpu_stalls[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AbsorbedStall<'a> {
    pub summary: &'a str,
    pub cpu: Option<u32>,
    /// The command on the stalled CPU.
    pub on_cpu: Option<&'a str>,
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
            comm: "spin",
            state: "R".into(),
            cpu: Some(1),
            policy: "SCHED_FIFO",
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
            verdict: "soft_lockup",
            headline: "BUG: soft lockup",
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
            reason: "no hang",
            runnable_threads: 3,
            d_state_threads: 0,
            mem_available_percent: None,
            busiest: vec![BusyTask {
                pid: 1,
                tid: 1,
                comm: "a",
                cpu_percent: 12.5,
                policy: "SCHED_OTHER",
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
            summary: "kernel_stall: cpu 0",
            cpu: Some(0),
            on_cpu: None,
        };
        assert_eq!(
            details_value(&s),
            json!({"summary": "kernel_stall: cpu 0", "cpu": 0, "on_cpu": null})
        );
    }
}
