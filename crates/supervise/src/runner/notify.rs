//! Handling notify-protocol messages from the program.

use std::time::Instant;

use selfheal_config::NotifyAccess;
use selfheal_event::{details_value, EventKind, Severity};
use selfheal_procfs::task::TaskDir;
use selfheal_sys::unixcred::UnixCredentials;

use super::Runner;
use crate::app_hang::{AppHangEvidence, WatchdogTriggerEvidence, WATCHDOG_TRIGGER};
use crate::app_lifecycle::Ready;
use crate::notify::{usec, NotifyMessage};
use crate::state::Phase;
use crate::HangDetector;

/// Datagrams handled per wake-up, so a flood cannot starve the loop.
const MAX_PER_TURN: usize = 256;

impl Runner {
    pub(super) fn read_notify(&mut self) {
        for _ in 0..MAX_PER_TURN {
            let Some((msgs, cred)) = self.s.notify.as_ref().and_then(|n| n.recv()) else {
                return;
            };
            if !self.believe(cred) {
                continue;
            }
            for m in msgs {
                self.notify_message(m);
            }
        }
    }

    /// Whether a datagram comes from the program (or, with `access =
    /// "all"`, from its process group).
    fn believe(&mut self, cred: Option<UnixCredentials>) -> bool {
        let Some(l) = &self.live else { return false };
        let Some(c) = cred else { return false };
        if c.pid == l.pid {
            return true;
        }
        let allowed = self.s.app.notify.access == NotifyAccess::All
            && TaskDir::process(&self.s.proc_root, c.pid)
                .stat()
                .is_ok_and(|st| st.pgrp == l.pid);
        if !allowed && !self.warned_notify {
            self.warned_notify = true;
            tracing::warn!(
                app = %self.name(),
                sender = c.pid,
                main = l.pid,
                "ignoring a notify message from a process other than the main one; set notify.access = \"all\" to accept its process group"
            );
        }
        allowed
    }

    fn notify_message(&mut self, m: NotifyMessage) {
        let now = Instant::now();
        let Some(l) = self.live.as_mut() else { return };
        match m {
            NotifyMessage::Ready => {
                let was_ready = l.ready_deadline.is_none() && self.s.state.status().ready;
                l.ready_deadline = None;
                if l.watchdog_base.is_none() {
                    l.watchdog_base = Some(now);
                }
                if l.stopping.is_none() {
                    self.s.state.set_phase(Phase::Running);
                }
                self.s.state.set_ready(true);
                if !was_ready {
                    let pid = l.pid;
                    let took = now.saturating_duration_since(l.started);
                    self.emit(
                        EventKind::AppReady,
                        Severity::Info,
                        format!("{} (pid {pid}) is ready after {took:?}", self.name()),
                        details_value(&Ready {
                            pid,
                            startup_ms: took.as_millis() as u64,
                        }),
                    );
                }
            }
            NotifyMessage::Reloading => {
                self.s.state.set_ready(false);
            }
            NotifyMessage::Stopping => self.app_stopping(),
            NotifyMessage::Watchdog => {
                l.last_ping = Some(now);
                l.watchdog_base = Some(now);
                self.s.state.heartbeat(now);
            }
            NotifyMessage::WatchdogTrigger => {
                let ev = AppHangEvidence::WatchdogTrigger(WatchdogTriggerEvidence {
                    trigger: WATCHDOG_TRIGGER.into(),
                });
                // It was alive to say so: its state as of now is suspect,
                // the checkpoints before are not.
                self.hang(
                    HangDetector::Watchdog,
                    ev,
                    None,
                    "the program asked to be treated as hung (WATCHDOG=trigger)".into(),
                    Some(now),
                );
            }
            NotifyMessage::WatchdogUsec(n) => {
                // 0 switches the watchdog off, as with systemd.
                l.watchdog = (n > 0).then(|| usec(n));
                l.watchdog_base = Some(now);
            }
            NotifyMessage::ExtendTimeoutUsec(n) => {
                let until = now + usec(n);
                if let Some(st) = l.stopping.as_mut() {
                    if !st.killed {
                        st.deadline = st.deadline.max(until);
                    }
                } else if let Some(d) = l.ready_deadline.as_mut() {
                    *d = (*d).max(until);
                }
            }
            NotifyMessage::Status(s) => self.s.state.set_status(&s),
            NotifyMessage::Errno(e) => {
                self.s.state.set_status(&format!(
                    "errno {e}: {}",
                    std::io::Error::from_raw_os_error(e)
                ));
            }
            NotifyMessage::MainPid(p) => {
                tracing::debug!(app = %self.name(), mainpid = p, "MAINPID= ignored: the supervisor watches the process it started");
            }
            NotifyMessage::Other(s) => {
                tracing::debug!(app = %self.name(), message = %s, "notify message ignored");
            }
        }
    }
}
