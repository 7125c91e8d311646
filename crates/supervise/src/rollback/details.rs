//! The `details` of the `checkpoint` and `rollback` events, as types:
//! written by `report.rs`, stored as JSON and read back by `/api/events`,
//! `selfheal events` and the lab. Each enum is tagged by `outcome`, so a
//! reader matches on the outcomes there are.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_sys::signal::signal_name;

use super::engine::{Failure, RollbackReport, Unrecoverable};

/// `details` of a `checkpoint` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CheckpointDetails {
    /// The engine runs.
    Started(Started),
    /// The engine could not start: the program runs without checkpoints.
    Unavailable {
        pid: i32,
        error: String,
        /// What to do about it, when known.
        fix: Option<String>,
    },
    /// One checkpoint failed.
    Failed {
        pid: i32,
        error: String,
        /// Failures since the last one reported.
        suppressed: u64,
    },
    /// The checkpoint history starts over.
    Reset { pid: i32, reason: ResetReason },
}

/// How the engine runs (`"outcome": "started"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    pub interval_ms: u64,
    pub keep: usize,
    /// `interval_ms × keep`: how far back a rollback can go.
    pub history_ms: u64,
    pub recurrence_window_ms: u64,
    /// How written pages are found.
    pub tracking: Tracking,
    /// Why memory is copied in full, if it is.
    pub tracking_note: Option<String>,
    /// Whether file changes are tracked.
    pub files: Files,
    /// Why file changes are not tracked, if they are not.
    pub files_note: Option<String>,
    /// The history is shorter than the configuration asks for.
    pub warning: Option<String>,
}

/// How the engine finds the pages written since a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    /// userfaultfd write protection and PAGEMAP_SCAN.
    UffdWp,
    /// A full copy of memory at every checkpoint.
    FullCopy,
}

/// Whether the engine tracks file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Files {
    /// With a seccomp filter.
    Seccomp,
    /// Not at all: a rollback is refused once the program wrote anything.
    Off,
}

/// Why the checkpoint history starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The program executed a new image.
    Exec,
}

/// `details` of a `rollback` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RollbackDetails {
    /// Rolled back: the program runs on.
    Done(Done),
    /// Not possible: the program is restarted (or its handler runs).
    Impossible(Impossible),
    /// Rolled back too often: the program is restarted.
    GaveUp {
        pid: i32,
        rollbacks: usize,
        window_ms: u64,
        max_rollbacks: u32,
        /// Always [`Then::Restart`].
        then: Then,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A rollback done (`"outcome": "done"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub pid: i32,
    pub checkpoint_id: u64,
    pub checkpoint_age_ms: u64,
    /// Checkpoints back from the newest one.
    pub depth: usize,
    pub pages_restored: u64,
    pub layout_ops: usize,
    pub fd_ops: usize,
    pub thread_ops: usize,
    pub files_restored: usize,
    pub file_bytes_restored: u64,
    pub names_restored: usize,
    /// Signals on their way at the checkpoint and taken since, put back
    /// with their own siginfo (left out when none, as before there were any).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signals_requeued: usize,
    pub duration_us: u64,
    /// Rollbacks of this run so far, this one included.
    pub rollbacks_this_run: usize,
    #[serde(flatten)]
    pub trigger: Trigger,
}

impl Done {
    /// The event for `r`, `depth` checkpoints back, the `count`th of the run.
    pub fn new(pid: i32, r: &RollbackReport, depth: usize, count: usize) -> Done {
        Done {
            pid,
            checkpoint_id: r.checkpoint_id,
            checkpoint_age_ms: r.checkpoint_age_ms,
            depth,
            pages_restored: r.pages_restored,
            layout_ops: r.layout_ops,
            fd_ops: r.fd_ops,
            thread_ops: r.thread_ops,
            files_restored: r.files_restored,
            file_bytes_restored: r.file_bytes_restored,
            names_restored: r.names_restored,
            signals_requeued: r.signals_requeued,
            duration_us: r.duration_us,
            rollbacks_this_run: count,
            trigger: Trigger::of(&r.failure),
        }
    }
}

/// A rollback that cannot be done (`"outcome": "impossible"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impossible {
    pub pid: i32,
    /// The short reason (`socket`, `threads_changed`, …): `why.reason`.
    pub reason: String,
    /// The engine's reason, tagged by `reason`.
    pub why: Why,
    /// One sentence on why.
    pub message: String,
    /// What happens instead.
    pub then: Then,
    #[serde(flatten)]
    pub trigger: Trigger,
}

/// `why` of an impossible rollback: the engine's [`Unrecoverable`] when
/// this version knows the reason, else the document as stored (written
/// by another version), so reading an event never fails on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Why {
    /// A reason this version's engine gives.
    Known(Unrecoverable),
    /// Any other document, kept as it was.
    Other(Value),
}

/// What happens to the program when it is not rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// It is stopped (if still running) and restarted.
    Restart,
    /// The signal goes to the program's own handler.
    Deliver,
}

/// What triggered a rollback, as fields of the event (`trigger` and, for
/// a crash, the signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    /// A crash signal, intercepted before it killed the program.
    Crash {
        signal: i32,
        signal_name: String,
        tid: i32,
        si_code: i32,
        /// Who sent it (`si_code <= 0`: kill, tgkill, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_by_pid: Option<i32>,
        /// The faulting address, in hex (`si_code > 0`: a real fault).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fault_addr: Option<String>,
    },
    /// The supervisor saw a hang and asked for the rollback.
    Hang,
}

impl Trigger {
    /// The fields for `f`.
    pub fn of(f: &Failure) -> Trigger {
        match *f {
            Failure::Crash {
                signal,
                tid,
                code,
                addr_or_pid,
            } => {
                // si_code <= 0: sent by a process (kill); > 0: a real fault.
                let sent = code <= 0;
                Trigger::Crash {
                    signal,
                    signal_name: signal_name(signal),
                    tid,
                    si_code: code,
                    sent_by_pid: sent.then_some(addr_or_pid as u32 as i32),
                    fault_addr: (!sent).then(|| format!("{addr_or_pid:#x}")),
                }
            }
            Failure::Hang => Trigger::Hang,
        }
    }
}

/// `detail` of a hang recovered by [`super::RollbackStep`] (inside the
/// `app_recovery_action` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangRolledBack {
    pub checkpoint_id: u64,
    pub checkpoint_age_ms: u64,
    /// How long before the rollback the program last made progress.
    pub last_progress_ms_ago: u64,
    pub depth: usize,
    pub pages_restored: u64,
    pub duration_us: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_checkpoint::{FdKind, FileRefusal};
    use selfheal_event::details_value;

    /// Reads `old` (a document an older selfheal stored) as `T` and writes
    /// it back: the same JSON.
    fn round_trips<T>(old: &str) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let stored: Value = serde_json::from_str(old).unwrap();
        let typed: T = serde_json::from_str(old).expect(old);
        assert_eq!(details_value(&typed), stored, "{old}");
        typed
    }

    /// Documents captured from a corpus soak (bench/checkpoint/
    /// results-corpus-2026-12-06) read back and write out unchanged.
    #[test]
    fn captured_documents_round_trip() {
        let started = round_trips::<CheckpointDetails>(
            r#"{"files":"seccomp","files_note":null,"history_ms":400,"interval_ms":50,"keep":8,"outcome":"started","pid":25240,"recurrence_window_ms":1000,"tracking":"uffd_wp","tracking_note":null,"warning":null}"#,
        );
        assert!(matches!(
            started,
            CheckpointDetails::Started(Started {
                keep: 8,
                tracking: Tracking::UffdWp,
                ..
            })
        ));
        let done = round_trips::<RollbackDetails>(
            r#"{"checkpoint_age_ms":10,"checkpoint_id":3,"depth":0,"duration_us":4535,"fd_ops":2,"file_bytes_restored":0,"files_restored":4,"layout_ops":0,"names_restored":4,"outcome":"done","pages_restored":31,"pid":25240,"rollbacks_this_run":1,"sent_by_pid":24836,"si_code":0,"signal":11,"signal_name":"SIGSEGV","thread_ops":0,"tid":25240,"trigger":"crash"}"#,
        );
        let RollbackDetails::Done(d) = done else {
            panic!("{done:?}")
        };
        assert_eq!(d.pages_restored, 31);
        assert!(matches!(
            d.trigger,
            Trigger::Crash {
                sent_by_pid: Some(24836),
                fault_addr: None,
                ..
            }
        ));
    }

    /// An impossible rollback's `why` reads back as the engine's reason,
    /// nested refusals included; a reason this version does not know
    /// stays the document it was.
    #[test]
    fn refusal_reasons_read_back_typed() {
        let file = round_trips::<RollbackDetails>(
            r#"{"message":"m","outcome":"impossible","pid":7,"reason":"file_changed","then":"restart","trigger":"hang","why":{"path":"/tmp/out","reason":"file_changed","why":{"comm":"sh","kind":"shared_with_process","pid":9}}}"#,
        );
        let RollbackDetails::Impossible(i) = file else {
            panic!("{file:?}")
        };
        assert_eq!(
            i.why,
            Why::Known(Unrecoverable::FileChanged {
                path: "/tmp/out".into(),
                why: FileRefusal::SharedWithProcess {
                    pid: 9,
                    comm: "sh".into()
                },
            })
        );
        let output = round_trips::<RollbackDetails>(
            r#"{"message":"m","outcome":"impossible","pid":7,"reason":"output_sent","then":"restart","trigger":"hang","why":{"fd":1,"kind":"pipe","pid":7,"reason":"output_sent"}}"#,
        );
        assert!(matches!(
            output,
            RollbackDetails::Impossible(Impossible {
                why: Why::Known(Unrecoverable::OutputSent {
                    kind: FdKind::Pipe,
                    ..
                }),
                ..
            })
        ));
        // A signal that cannot be put back exactly (the exact-signals
        // engine) reads back with its reason.
        let signal = round_trips::<RollbackDetails>(
            r#"{"message":"m","outcome":"impossible","pid":7,"reason":"pending_signal","then":"restart","trigger":"hang","why":{"reason":"pending_signal","signal":34,"why":{"kind":"in_flight","tid":8}}}"#,
        );
        assert!(matches!(
            signal,
            RollbackDetails::Impossible(Impossible {
                why: Why::Known(Unrecoverable::PendingSignal {
                    signal: 34,
                    why: selfheal_checkpoint::SignalRefusal::InFlight { tid: 8 },
                }),
                ..
            })
        ));
        let newer = round_trips::<RollbackDetails>(
            r#"{"message":"m","outcome":"impossible","pid":7,"reason":"from_a_newer_engine","then":"restart","trigger":"hang","why":{"reason":"from_a_newer_engine","n":1}}"#,
        );
        assert!(matches!(
            newer,
            RollbackDetails::Impossible(Impossible {
                why: Why::Other(_),
                ..
            })
        ));
    }

    /// Every outcome is exactly the JSON the old `json!` literals built,
    /// and reads back.
    #[test]
    fn outcomes_match_the_documented_json() {
        let report = RollbackReport {
            failure: Failure::Crash {
                signal: 11,
                tid: 7,
                code: 1,
                addr_or_pid: 0x10,
            },
            checkpoint_id: 4,
            checkpoint_age_ms: 20,
            depth: 1,
            pages_restored: 9,
            layout_ops: 1,
            fd_ops: 2,
            thread_ops: 3,
            files_restored: 4,
            file_bytes_restored: 5,
            names_restored: 6,
            signals_requeued: 0,
            duration_us: 700,
        };
        let requeued = details_value(&RollbackDetails::Done(Done::new(
            7,
            &RollbackReport {
                signals_requeued: 2,
                ..report.clone()
            },
            2,
            3,
        )));
        assert_eq!(requeued["signals_requeued"], 2, "{requeued}");
        let cases = [
            (
                details_value(&RollbackDetails::Done(Done::new(7, &report, 2, 3))),
                json!({"outcome": "done", "pid": 7, "checkpoint_id": 4, "checkpoint_age_ms": 20,
                       "depth": 2, "pages_restored": 9, "layout_ops": 1, "fd_ops": 2,
                       "thread_ops": 3, "files_restored": 4, "file_bytes_restored": 5,
                       "names_restored": 6, "duration_us": 700, "rollbacks_this_run": 3,
                       "trigger": "crash", "signal": 11, "signal_name": "SIGSEGV", "tid": 7,
                       "si_code": 1, "fault_addr": "0x10"}),
            ),
            (
                details_value(&RollbackDetails::Impossible(Impossible {
                    pid: 7,
                    reason: "socket".into(),
                    why: Why::Known(Unrecoverable::Socket { fd: 3 }),
                    message: "a socket is open".into(),
                    then: Then::Restart,
                    trigger: Trigger::of(&Failure::Hang),
                })),
                json!({"outcome": "impossible", "pid": 7, "reason": "socket",
                       "why": {"reason": "socket", "fd": 3}, "message": "a socket is open",
                       "then": "restart", "trigger": "hang"}),
            ),
            (
                details_value(&RollbackDetails::GaveUp {
                    pid: 7,
                    rollbacks: 5,
                    window_ms: 60_000,
                    max_rollbacks: 4,
                    then: Then::Restart,
                }),
                json!({"outcome": "gave_up", "pid": 7, "rollbacks": 5, "window_ms": 60_000,
                       "max_rollbacks": 4, "then": "restart"}),
            ),
        ];
        for (typed, old) in cases {
            assert_eq!(typed, old);
            round_trips::<RollbackDetails>(&old.to_string());
        }
        let cases = [
            (
                details_value(&CheckpointDetails::Started(Started {
                    pid: 7,
                    interval_ms: 50,
                    keep: 8,
                    history_ms: 400,
                    recurrence_window_ms: 1000,
                    tracking: Tracking::FullCopy,
                    tracking_note: Some("no uffd".into()),
                    files: Files::Off,
                    files_note: Some("no seccomp".into()),
                    warning: None,
                })),
                json!({"outcome": "started", "pid": 7, "interval_ms": 50, "keep": 8,
                       "history_ms": 400, "recurrence_window_ms": 1000, "tracking": "full_copy",
                       "tracking_note": "no uffd", "files": "off", "files_note": "no seccomp",
                       "warning": null}),
            ),
            (
                details_value(&CheckpointDetails::Unavailable {
                    pid: 7,
                    error: "EPERM".into(),
                    fix: None,
                }),
                json!({"outcome": "unavailable", "pid": 7, "error": "EPERM", "fix": null}),
            ),
            (
                details_value(&CheckpointDetails::Failed {
                    pid: 7,
                    error: "ENOMEM".into(),
                    suppressed: 2,
                }),
                json!({"outcome": "failed", "pid": 7, "error": "ENOMEM", "suppressed": 2}),
            ),
            (
                details_value(&CheckpointDetails::Reset {
                    pid: 7,
                    reason: ResetReason::Exec,
                }),
                json!({"outcome": "reset", "pid": 7, "reason": "exec"}),
            ),
        ];
        for (typed, old) in cases {
            assert_eq!(typed, old);
            round_trips::<CheckpointDetails>(&old.to_string());
        }
        assert_eq!(
            details_value(&HangRolledBack {
                checkpoint_id: 4,
                checkpoint_age_ms: 20,
                last_progress_ms_ago: 30,
                depth: 1,
                pages_restored: 9,
                duration_us: 700,
            }),
            json!({"checkpoint_id": 4, "checkpoint_age_ms": 20, "last_progress_ms_ago": 30,
                   "depth": 1, "pages_restored": 9, "duration_us": 700})
        );
    }
}
