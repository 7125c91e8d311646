//! `recovery.hold_forks`: no new task may start where a fork bomb lives
//! while the steps that stop it run, so it cannot outgrow them.
//!
//! The hold is placed when the ladder starts, if a `kill_tree` or
//! `quarantine` step is ahead and the target passes the checks every step
//! makes (not protected, alive, still blamed): the diagnosis is the evidence, and every
//! second between it and the step's act (the symptom measured again, the
//! blamed set listed: seconds each on a slow machine) is a second in which
//! a bomb more than doubles. The first such step adopts it and lifts it
//! when it ends; a later one places its own. A ladder that ends before
//! either (the symptom gone, a refusal) lifts it on the way out.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use selfheal_config::{Action, HoldForks};
use selfheal_event::Class;

use super::{Incident, Ladder};
use crate::ops::{ForkHold, Pinned, SystemOps};

/// Where a hold stands, shared by the step it serves and its cap.
enum State {
    /// The cap's thread is up; the limit is being lowered.
    Placing,
    /// In place since the instant.
    Held(ForkHold, Instant),
    /// Lifted, or never placed.
    Done,
}

/// A fork hold and its cap (`recovery.hold_forks_max`): a thread started
/// before the limit is lowered (after, it could not start: the machine's
/// forks are held) lifts the hold when the cap runs out, should the step
/// still be running — stuck on a /proc read behind a hung task, say.
pub(super) struct Placed {
    state: Mutex<State>,
    changed: Condvar,
    /// Set when the cap lifted it: what the step's note says.
    capped: Mutex<Option<String>>,
}

impl Placed {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, s: State) {
        *self.state() = s;
        self.changed.notify_all();
    }

    /// Takes the hold out if still in place (the step's lift or the cap's,
    /// whichever comes first; the other finds nothing).
    fn take(&self) -> Option<(ForkHold, Instant)> {
        let mut g = self.state();
        let taken = match std::mem::replace(&mut *g, State::Done) {
            State::Held(h, since) => Some((h, since)),
            _ => None,
        };
        drop(g);
        self.changed.notify_all();
        taken
    }

    /// The cap's thread: waits for the hold to be placed, then until it is
    /// lifted or `cap` has passed since, and then lifts it itself.
    fn watch(&self, ops: &dyn SystemOps, cap: Duration) {
        let g = self.state();
        let g = self
            .changed
            .wait_while(g, |s| matches!(s, State::Placing))
            .unwrap_or_else(PoisonError::into_inner);
        let State::Held(_, since) = &*g else {
            return;
        };
        let deadline = *since + cap;
        let left = deadline.saturating_duration_since(Instant::now());
        let (g, _) = self
            .changed
            .wait_timeout_while(g, left, |s| {
                matches!(s, State::Held(..)) && Instant::now() < deadline
            })
            .unwrap_or_else(PoisonError::into_inner);
        drop(g);
        let Some((h, since)) = self.take() else {
            return;
        };
        let ms = since.elapsed().as_millis();
        let note = match ops.release_forks(&h) {
            Ok(()) => {
                format!("forks held {ms} ms ({h}), then restored by the cap of {cap:?} while the step still ran")
            }
            Err(e) => format!(
                "forks held ({h}); the cap of {cap:?} could not lift it after {ms} ms: {e}; put it back by hand"
            ),
        };
        tracing::error!("fork bomb: {note}");
        *self.capped.lock().unwrap_or_else(PoisonError::into_inner) = Some(note);
    }
}

/// Lowers the limit for `inc`'s bomb through its pinned target, noting a
/// failure for the step's record. `None` when nothing was held.
fn place(l: &Ladder, inc: &Incident, p: &Pinned) -> Option<Arc<Placed>> {
    let mode = l.options.config.hold_forks;
    if inc.class != Class::ForkBomb || mode == HoldForks::Off {
        return None;
    }
    let placed = Arc::new(Placed {
        state: Mutex::new(State::Placing),
        changed: Condvar::new(),
        capped: Mutex::new(None),
    });
    let cap = l.options.config.hold_forks_max.get();
    let (ops, watched) = (Arc::clone(&l.ops), Arc::clone(&placed));
    let capper = std::thread::Builder::new()
        .name("selfheal-holdcap".into())
        .stack_size(64 * 1024)
        .spawn(move || watched.watch(ops.as_ref(), cap));
    if let Err(e) = capper {
        l.note_step(format!(
            "forks not held (no thread for its cap: {e}): the step races the bomb"
        ));
        tracing::warn!("fork bomb: no thread to cap a fork hold ({e}); the step races the bomb");
        return None;
    }
    let path = inc.culprit.cgroup.as_deref().unwrap_or("/");
    match l.ops.hold_forks(p, path, mode == HoldForks::Auto) {
        Ok(Some(h)) => {
            tracing::info!("fork bomb: no new task may start while its step runs ({h})");
            placed.set(State::Held(h, Instant::now()));
            Some(placed)
        }
        Ok(None) => {
            placed.set(State::Done);
            None
        }
        Err(e) => {
            placed.set(State::Done);
            l.note_step(format!("forks not held ({e}): the step races the bomb"));
            tracing::warn!("fork bomb: cannot hold its forks: {e}; the step races the bomb");
            None
        }
    }
}

/// Puts back what `placed` lowered, unless its cap did already; the note
/// says for how long.
fn lift(l: &Ladder, placed: &Placed) -> Option<String> {
    let Some((h, since)) = placed.take() else {
        return placed
            .capped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
    };
    let ms = since.elapsed().as_millis();
    Some(match l.ops.release_forks(&h) {
        Ok(()) => format!("forks held {ms} ms ({h}), then restored"),
        Err(e) => {
            tracing::error!("fork bomb: cannot lift the hold ({h}): {e}; put it back by hand");
            format!("forks held ({h}); lifting it after {ms} ms failed: {e}")
        }
    })
}

/// At the start of a fork bomb's ladder with a `kill_tree` or
/// `quarantine` step ahead (and not a dry run): the hold, kept for that
/// step to adopt.
/// The target must pass what every step checks before it acts, short of
/// measuring the symptom again: not protected, alive, still blamed.
pub(super) fn hold_at_start(l: &Ladder, inc: &Incident, steps: &[Action], lineage: &HashSet<i32>) {
    if l.options.dry_run
        || !l.options.config.enabled
        || inc.class != Class::ForkBomb
        || !steps
            .iter()
            .any(|a| matches!(a, Action::KillTree | Action::Quarantine))
    {
        return;
    }
    let Some(t) = &inc.target else {
        return;
    };
    if !matches!(l.policy.check_pid(l.ops.as_ref(), t.pid, lineage), Ok(None)) {
        return;
    }
    let Ok(p) = l.ops.pin(t.pid, t.starttime) else {
        return;
    };
    if super::guard::still_blamed(l, inc, t, &p).is_err() {
        return;
    }
    // Tried: the step adopting it does not try again.
    let held = place(l, inc, &p);
    *l.early_hold.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
}

/// At the end of a ladder: lifts a hold no step adopted. Returns the note.
pub(super) fn lift_unadopted(l: &Ladder) -> Option<String> {
    let taken = l
        .early_hold
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let placed = taken.flatten()?;
    let note = lift(l, &placed)?;
    tracing::info!("fork bomb: {note}");
    Some(note)
}

/// A fork bomb's hold for the length of one step: adopted from the
/// ladder's start or placed first thing, lifted when dropped, whatever way
/// the step ends (a step that refuses lifts it at once), or by its cap.
/// What it did goes into the step's event.
pub(super) struct HeldForks<'a> {
    l: &'a Ladder,
    hold: Option<Arc<Placed>>,
    /// The bomb's cgroup, where a cgroup hold applies.
    path: String,
}

/// Where a hold in place lets no new task start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeldScope {
    /// Nowhere on the machine (`kernel.threads-max` at its floor).
    Machine,
    /// Nowhere in this cgroup and below (its `pids.max` at 0).
    Cgroup(String),
}

impl HeldScope {
    /// True when process `m` cannot fork under this hold: every cgroup it
    /// is in lies within the held one. (Its path in the pids hierarchy is
    /// among them unless it sits at that hierarchy's root, where the hold
    /// is not: then another of its paths lies elsewhere or none is
    /// listed, and it does not count as held.)
    pub(super) fn covers(&self, m: &crate::ops::ProcInfo) -> bool {
        match self {
            HeldScope::Machine => true,
            HeldScope::Cgroup(path) => {
                !m.cgroups.is_empty() && m.cgroups.iter().all(|c| crate::policy::is_within(c, path))
            }
        }
    }
}

impl std::fmt::Display for HeldScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeldScope::Machine => f.write_str("the machine"),
            HeldScope::Cgroup(p) => write!(f, "cgroup {p}"),
        }
    }
}

impl<'a> HeldForks<'a> {
    /// The ladder's hold, or a new one for `inc` through `p`.
    pub(super) fn place(l: &'a Ladder, inc: &Incident, p: &Pinned) -> HeldForks<'a> {
        let early = l
            .early_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Tried as the ladder started (held or not), or placed now.
        let hold = match early {
            Some(tried) => tried,
            None => place(l, inc, p),
        };
        HeldForks {
            l,
            hold,
            path: inc.culprit.cgroup.clone().unwrap_or_else(|| "/".into()),
        }
    }

    /// Where no new task can start now: a hold in place (not lifted by
    /// its cap) that blocks every fork where it applies. `None` when forks
    /// are not held, or only down to a count.
    pub(super) fn scope(&self) -> Option<HeldScope> {
        let placed = self.hold.as_ref()?;
        let state = placed.state();
        match &*state {
            State::Held(h @ ForkHold::Machine { .. }, _) if h.blocks_every_fork() => {
                Some(HeldScope::Machine)
            }
            State::Held(h @ ForkHold::Cgroup { .. }, _) if h.blocks_every_fork() => {
                Some(HeldScope::Cgroup(self.path.clone()))
            }
            _ => None,
        }
    }

    /// What is held, for the log (`None` when nothing is).
    pub(super) fn describe(&self) -> Option<String> {
        let placed = self.hold.as_ref()?;
        let state = placed.state();
        match &*state {
            State::Held(h, _) => Some(h.to_string()),
            _ => None,
        }
    }
}

impl Drop for HeldForks<'_> {
    fn drop(&mut self) {
        if let Some(placed) = self.hold.take() {
            if let Some(note) = lift(self.l, &placed) {
                self.l.note_step(note);
            }
        }
    }
}
