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
use std::time::Instant;

use selfheal_config::{Action, HoldForks};
use selfheal_event::Class;

use super::{Incident, Ladder};
use crate::ops::{ForkHold, Pinned};

/// Lowers the limit for `inc`'s bomb through its pinned target, noting a
/// failure for the step's record. `None` when nothing was held.
fn place(l: &Ladder, inc: &Incident, p: &Pinned) -> Option<ForkHold> {
    let mode = l.options.config.hold_forks;
    if inc.class != Class::ForkBomb || mode == HoldForks::Off {
        return None;
    }
    let path = inc.culprit.cgroup.as_deref().unwrap_or("/");
    match l.ops.hold_forks(p, path, mode == HoldForks::Auto) {
        Ok(Some(h)) => {
            tracing::info!("fork bomb: no new task may start while it is stopped ({h})");
            Some(h)
        }
        Ok(None) => None,
        Err(e) => {
            l.note_step(format!("forks not held ({e}): the step races the bomb"));
            tracing::warn!("fork bomb: cannot hold its forks: {e}; the step races the bomb");
            None
        }
    }
}

/// Puts back what `h` lowered; the note says for how long.
fn lift(l: &Ladder, h: &ForkHold, since: Instant) -> String {
    let ms = since.elapsed().as_millis();
    match l.ops.release_forks(h) {
        Ok(()) => format!("forks held {ms} ms ({h}), then restored"),
        Err(e) => {
            tracing::error!("fork bomb: cannot lift the hold ({h}): {e}; put it back by hand");
            format!("forks held ({h}); lifting it after {ms} ms failed: {e}")
        }
    }
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
    let held = place(l, inc, &p).map(|h| (h, Instant::now()));
    *l.early_hold.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
}

/// At the end of a ladder: lifts a hold no step adopted. Returns the note.
pub(super) fn lift_unadopted(l: &Ladder) -> Option<String> {
    let taken = l
        .early_hold
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let (h, since) = taken.flatten()?;
    let note = lift(l, &h, since);
    tracing::info!("fork bomb: {note}");
    Some(note)
}

/// A fork bomb's hold for the length of one step: adopted from the
/// ladder's start or placed first thing, lifted when dropped, whatever way
/// the step ends (a step that refuses lifts it at once). What it did goes
/// into the step's event.
pub(super) struct HeldForks<'a> {
    l: &'a Ladder,
    hold: Option<(ForkHold, Instant)>,
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
            None => place(l, inc, p).map(|h| (h, Instant::now())),
        };
        HeldForks { l, hold }
    }
}

impl Drop for HeldForks<'_> {
    fn drop(&mut self) {
        if let Some((h, since)) = self.hold.take() {
            let note = lift(self.l, &h, since);
            self.l.note_step(note);
        }
    }
}
