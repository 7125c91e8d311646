//! A VM over its whole life: runs of QEMU, and restarts within limits.
//! [`run_vm`] is `selfheal vm`; [`VmSupervisor`] runs the daemon's `[[vm]]`s,
//! one thread each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_checkpoint::ExitInfo;
use selfheal_config::{RestartPolicy, VmConfig};
use selfheal_event::{details_value, EventKind, EventSink, Severity};
use selfheal_metrics::Collector;

use crate::details::{
    GaveUpDetails, RestartedBy, RestartingDetails, StartFailedDetails, StoppedDetails,
};
use crate::events::vm_event;
use crate::incident::{ExitedDetails, QemuExit};
use crate::metrics::{VmCollector, VmMetrics};
use crate::run::{run_once, RunEnd, Stop};

/// Pause before QEMU is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// How supervision of a VM ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmFinish {
    /// QEMU's last exit, if it exited.
    pub exit: Option<ExitInfo>,
    /// The restart limit was reached.
    pub gave_up: bool,
    /// Stopped on request.
    pub stopped: bool,
    /// QEMU could not be started at all.
    pub error: Option<String>,
}

impl VmFinish {
    /// A shell-style status: QEMU's exit code, 128 + signal, 1 when it gave
    /// up or could not start, 0 when stopped.
    pub fn shell_status(&self) -> i32 {
        if self.error.is_some() || self.gave_up {
            return 1;
        }
        match self.exit {
            Some(ExitInfo { code: Some(c), .. }) => c,
            Some(ExitInfo {
                signal: Some(s), ..
            }) => 128 + s,
            _ => 0,
        }
    }
}

fn describe_exit(i: &ExitInfo) -> String {
    match (i.code, i.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!(
            "signal {}{}",
            selfheal_sys::signal::signal_name(s),
            if i.core_dumped { " (core dumped)" } else { "" }
        ),
        _ => "an unknown status".into(),
    }
}

/// Runs the VM `cfg` until it exits for good, gives up, or `stop` is set.
pub fn run_vm(
    cfg: &VmConfig,
    sink: Arc<dyn EventSink>,
    metrics: Arc<VmMetrics>,
    stop: Stop,
) -> VmFinish {
    let vm = cfg.name.as_str();
    let emit = |kind, sev, msg: String, d| sink.emit(vm_event(vm, kind, sev, msg, d));
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let why = match run_once(cfg, &sink, &metrics, &stop) {
            Err(e) => {
                emit(
                    EventKind::VmExit,
                    Severity::Critical,
                    format!("cannot start: {e}"),
                    details_value(&StartFailedDetails {
                        exit: None,
                        error: e.to_string(),
                    }),
                );
                return VmFinish {
                    error: Some(e.to_string()),
                    ..VmFinish::default()
                };
            }
            Ok(RunEnd::Stopped) => {
                emit(
                    EventKind::VmExit,
                    Severity::Info,
                    "stopped (QEMU told to quit)".into(),
                    details_value(&StoppedDetails { stopped: true }),
                );
                return VmFinish {
                    stopped: true,
                    ..VmFinish::default()
                };
            }
            Ok(RunEnd::Exited {
                info,
                started: false,
                ..
            }) => {
                let e = format!(
                    "QEMU exited with {} while starting, before answering QMP; see its stderr",
                    describe_exit(&info)
                );
                emit(
                    EventKind::VmExit,
                    Severity::Critical,
                    format!("cannot start: {e}"),
                    details_value(&StartFailedDetails {
                        exit: Some(QemuExit::from(&info)),
                        error: e.clone(),
                    }),
                );
                return VmFinish {
                    exit: Some(info),
                    error: Some(e),
                    ..VmFinish::default()
                };
            }
            Ok(RunEnd::Exited { info, reason, .. }) => {
                let failed = info.code != Some(0);
                let again = match cfg.restart {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => failed,
                    RestartPolicy::Always => true,
                };
                let what = format!(
                    "QEMU exited with {}{}",
                    describe_exit(&info),
                    reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(" ({r})"))
                );
                emit(
                    if failed {
                        EventKind::VmCrash
                    } else {
                        EventKind::VmExit
                    },
                    if failed {
                        Severity::Critical
                    } else {
                        Severity::Info
                    },
                    format!("{what}{}", if again { "" } else { "; not restarted" }),
                    details_value(&ExitedDetails {
                        exit: QemuExit::from(&info),
                        shutdown_reason: reason.clone(),
                        restart: again,
                    }),
                );
                if !again || stop.is_set() {
                    return VmFinish {
                        exit: Some(info),
                        ..VmFinish::default()
                    };
                }
                what
            }
            Ok(RunEnd::Restart { why }) => why,
        };
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > cfg.restart_window.get())
        {
            restarts.pop_front();
        }
        if cfg.max_restarts > 0 && restarts.len() as u32 >= cfg.max_restarts {
            emit(
                EventKind::VmGaveUp,
                Severity::Critical,
                format!(
                    "{} restarts within {}; giving up ({why})",
                    restarts.len(),
                    cfg.restart_window
                ),
                details_value(&GaveUpDetails {
                    restarts: restarts.len(),
                    why: why.clone(),
                }),
            );
            return VmFinish {
                gave_up: true,
                ..VmFinish::default()
            };
        }
        restarts.push_back(now);
        VmMetrics::inc(&metrics.restarts);
        emit(
            EventKind::VmRestart,
            Severity::Critical,
            format!("starting QEMU again: {why}"),
            details_value(&RestartingDetails {
                why: why.clone(),
                by: RestartedBy::Selfheal,
            }),
        );
        let until = Instant::now() + RESTART_DELAY;
        while Instant::now() < until && !stop.is_set() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.is_set() {
            return VmFinish {
                stopped: true,
                ..VmFinish::default()
            };
        }
    }
}

/// The daemon's `[[vm]]`s, each on its own thread.
pub struct VmSupervisor {
    vms: Vec<(Stop, JoinHandle<VmFinish>)>,
    collector: Arc<VmCollector>,
}

impl std::fmt::Debug for VmSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSupervisor")
            .field("vms", &self.vms.len())
            .finish()
    }
}

impl VmSupervisor {
    /// Starts every VM.
    pub fn start(vms: Vec<VmConfig>, sink: Arc<dyn EventSink>) -> std::io::Result<VmSupervisor> {
        let mut handles = Vec::new();
        let mut metrics = Vec::new();
        for cfg in vms {
            let m = Arc::new(VmMetrics::default());
            metrics.push((cfg.name.clone(), m.clone()));
            let stop = Stop::default();
            let (s, sink) = (stop.clone(), sink.clone());
            let h = std::thread::Builder::new()
                .name(format!(
                    "selfheal-vm-{}",
                    cfg.name.chars().take(4).collect::<String>()
                ))
                .spawn(move || run_vm(&cfg, sink, m, s))?;
            handles.push((stop, h));
        }
        Ok(VmSupervisor {
            vms: handles,
            collector: Arc::new(VmCollector::new(metrics)),
        })
    }

    /// The `selfheal_vm_*` metrics of every VM.
    pub fn collector(&self) -> Arc<dyn Collector> {
        self.collector.clone()
    }

    /// Stops every VM (QEMU told to quit) and waits for them.
    pub fn shutdown(self) -> Vec<VmFinish> {
        for (s, _) in &self.vms {
            s.stop();
        }
        self.vms
            .into_iter()
            .map(|(_, h)| h.join().unwrap_or_default())
            .collect()
    }
}

#[cfg(test)]
mod details_tests {
    use serde_json::json;

    use super::*;

    /// Each document is exactly the JSON the old `json!` literals built:
    /// `exit` only when QEMU ran, an unknown shutdown reason `null`.
    #[test]
    fn vm_lifecycle_details_match_the_documented_json() {
        let info = ExitInfo {
            code: Some(1),
            signal: None,
            core_dumped: false,
        };
        let info_json = json!({"code": 1, "signal": null, "core_dumped": false});
        assert_eq!(
            details_value(&StartFailedDetails {
                exit: None,
                error: "no kvm".into()
            }),
            json!({"error": "no kvm"})
        );
        assert_eq!(
            details_value(&StartFailedDetails {
                exit: Some(QemuExit::from(&info)),
                error: "bad -m".into()
            }),
            json!({"exit": info_json, "error": "bad -m"})
        );
        assert_eq!(
            details_value(&StoppedDetails { stopped: true }),
            json!({"stopped": true})
        );
        assert_eq!(
            details_value(&ExitedDetails {
                exit: QemuExit::from(&info),
                shutdown_reason: None,
                restart: true
            }),
            json!({"exit": info_json, "shutdown_reason": null, "restart": true})
        );
        assert_eq!(
            details_value(&GaveUpDetails {
                restarts: 3,
                why: "crash".into()
            }),
            json!({"restarts": 3, "why": "crash"})
        );
        assert_eq!(
            details_value(&RestartingDetails {
                why: "crash".into(),
                by: RestartedBy::Selfheal
            }),
            json!({"why": "crash", "by": "selfheal"})
        );
    }
}
