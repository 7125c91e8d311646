//! Blocked tasks: threads in uninterruptible sleep (D) without progress for
//! the bound. When a block device has I/O in flight but completes none and
//! the stuck threads wait for I/O, it is an `io_stall` on that device;
//! otherwise a `d_state` hang (a lock, a FUSE or NFS server, a driver).
//!
//! The culprit is the thread that got stuck first: the others usually wait
//! behind it (a lock holder blocks, its waiters pile up).

use serde_json::json;

use selfheal_event::Culprit;

use super::{Deltas, Diagnoser, Observation};
use crate::class::{Class, Diagnosis, Symptom};
use crate::sweep::StuckTask;

/// Kernel functions that mean "waiting for block I/O".
const IO_WAITS: &[&str] = &[
    "io_schedule",
    "folio_wait",
    "wait_on_page",
    "bit_wait_io",
    "blk_mq_get_tag",
    "rq_qos_wait",
    "jbd2",
    "submit_bio_wait",
    "wait_on_buffer",
];

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let bound = dx.thresholds.dstate_bound;
    let stuck: Vec<&StuckTask> = obs
        .stuck
        .iter()
        .filter(|s| s.stuck_for >= bound && !dx.is_own(s.pid))
        .collect();
    if stuck.is_empty() {
        return Vec::new();
    }
    let main = stuck
        .iter()
        .find(|s| !s.kernel_thread)
        .or(stuck.first())
        .copied()
        .expect("non-empty");
    let sample = obs
        .after
        .tasks
        .iter()
        .find(|t| t.tid == main.tid && t.stat.starttime_ticks == main.starttime);

    // Devices with I/O in flight that completed nothing while busy.
    let interval_ms = d.interval.as_millis() as u64;
    let stalled_disks: Vec<serde_json::Value> = obs
        .after
        .system
        .disks
        .iter()
        .filter_map(|a| {
            let b = obs.before.system.disks.iter().find(|b| b.name == a.name)?;
            let busy = a.io_ticks_ms.saturating_sub(b.io_ticks_ms);
            let done = a.completed.saturating_sub(b.completed);
            (a.in_flight > 0 && done == 0 && busy * 10 >= interval_ms * 9).then(|| {
                json!({"device": a.name, "in_flight": a.in_flight, "completed": done, "busy_ms": busy})
            })
        })
        .collect();
    let waits_for_io = stuck.iter().any(|s| {
        s.wchan
            .as_deref()
            .is_some_and(|w| IO_WAITS.iter().any(|p| w.contains(p)))
    });
    let class = if !stalled_disks.is_empty() && waits_for_io {
        Class::IoStall
    } else {
        Class::DState
    };

    let list: Vec<serde_json::Value> = stuck
        .iter()
        .take(20)
        .map(|s| {
            json!({
                "pid": s.pid, "tid": s.tid, "comm": s.comm,
                "stuck_ms": s.stuck_for.as_millis() as u64,
                "wchan": s.wchan, "kernel_thread": s.kernel_thread,
            })
        })
        .collect();
    let (culprit, target) = match sample {
        Some(t) => {
            let (c, t) = dx.culprit_of(t);
            (c, Some(t))
        }
        None => (
            Culprit {
                pid: Some(main.pid),
                tid: Some(main.tid),
                comm: Some(main.comm.clone()),
                ..Culprit::default()
            },
            None,
        ),
    };
    let kernel = Diagnoser::kernel_json(obs, |r| {
        r.kind.as_str() == "hung_task" && stuck.iter().any(|s| Some(s.tid) == r.pid)
    });
    let what = match class {
        Class::IoStall => format!(
            "io_stall: I/O stalled on {}; ",
            stalled_disks
                .iter()
                .filter_map(|d| d["device"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "d_state: ".to_string(),
    };
    let summary = format!(
        "{what}{} pid {} stuck in D state for {} ms without being scheduled{}{}",
        main.comm,
        main.pid,
        main.stuck_for.as_millis(),
        main.wchan
            .as_deref()
            .map_or(String::new(), |w| format!(" (in {w})")),
        if stuck.len() > 1 {
            format!("; {} more threads stuck", stuck.len() - 1)
        } else {
            String::new()
        }
    );
    vec![Diagnosis {
        class,
        summary,
        culprit,
        target,
        evidence: json!({
            "bound_ms": bound.as_millis() as u64,
            "stuck": list,
            "culprit": sample.map(|t| dx.task_json(t, None)),
            "kernel_stack": dx.stack_of(main.pid, main.tid),
            "stalled_devices": stalled_disks,
            "kernel_reports": kernel,
        }),
        symptom: Symptom::Stuck {
            tasks: vec![(main.pid, main.tid, main.starttime)],
        },
        no_target: None,
    }]
}
