//! Notes of fork holds in place (`/run/selfheal/fork-hold.PID.STARTTIME`),
//! so that limits a daemon lowered for a fork bomb and did not live to lift
//! are put back by the next one.

use std::path::{Path, PathBuf};

use selfheal_procfs::task::parse_task_stat;

use super::ForkHold;

/// Where a fork hold in place is noted, so that a daemon restarted while
/// one was held (killed, crashed) puts the limit back: on tmpfs, gone with
/// the boot whose limits it describes. One file per daemon
/// (`fork-hold.PID.STARTTIME`), so daemons running side by side (tests)
/// never lift each other's holds.
pub const FORK_HOLD_DIR: &str = "/run/selfheal";

/// What a machine-wide fork hold lowers `kernel.threads-max` to: the
/// lowest every kernel accepts (`MIN_THREADS`; kernels since 2020 take
/// down to 1), and below the tasks any running machine has, so no
/// task can start.
pub const MIN_THREADS_MAX: u64 = 20;

/// This process's fork-hold note.
pub fn fork_hold_note() -> PathBuf {
    let me = std::process::id();
    let st = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_task_stat(&t))
        .map_or(0, |s| s.starttime_ticks);
    Path::new(FORK_HOLD_DIR).join(format!("fork-hold.{me}.{st}"))
}

/// Puts back the limits that daemons no longer running lowered for a fork
/// bomb and did not live to restore (their notes in `dir`, normally
/// [`FORK_HOLD_DIR`]). Returns what it did, for the log.
pub fn restore_stale_fork_holds(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_prefix("fork-hold.")) else {
            continue;
        };
        if note_owner_lives(owner) {
            continue;
        }
        let note = e.path();
        let text = std::fs::read_to_string(&note).unwrap_or_default();
        let restored = match parse_hold_note(&text) {
            Some(ForkHold::Machine { previous, .. }) => {
                std::fs::write("/proc/sys/kernel/threads-max", format!("{previous}\n"))
                    .map(|()| format!("kernel.threads-max restored to {previous}"))
            }
            Some(ForkHold::Cgroup { dir, previous, .. }) if dir.is_dir() => {
                std::fs::write(dir.join("pids.max"), format!("{previous}\n"))
                    .map(|()| format!("{}/pids.max restored to {previous}", dir.display()))
            }
            Some(ForkHold::Cgroup { dir, .. }) => {
                Ok(format!("{} is gone; nothing to restore", dir.display()))
            }
            None => Ok(format!(
                "{} is malformed ({text:?}); removed",
                note.display()
            )),
        };
        let _ = std::fs::remove_file(&note);
        done.push(match restored {
            Ok(what) => format!("a fork hold a previous run left: {what}"),
            Err(err) => format!(
                "a fork hold a previous run left ({}: {text:?}) could not be restored: {err}",
                note.display()
            ),
        });
    }
    done
}

/// Whether the daemon that wrote note `fork-hold.PID.STARTTIME` still runs.
fn note_owner_lives(owner: &str) -> bool {
    let Some((pid, st)) = owner.split_once('.') else {
        return false;
    };
    let (Ok(pid), Ok(st)) = (pid.parse::<u32>(), st.parse::<u64>()) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_task_stat(&t))
        .is_some_and(|s| s.starttime_ticks == st)
}

/// The note's text: `threads-max PREVIOUS HELD` or
/// `pids.max PREVIOUS HELD DIR`.
fn hold_note(hold: &ForkHold) -> String {
    match hold {
        ForkHold::Machine { previous, held_at } => format!("threads-max {previous} {held_at}\n"),
        ForkHold::Cgroup {
            dir,
            previous,
            held_at,
        } => format!("pids.max {previous} {held_at} {}\n", dir.display()),
    }
}

fn parse_hold_note(text: &str) -> Option<ForkHold> {
    let line = text.strip_suffix('\n')?;
    let mut it = line.splitn(4, ' ');
    let kind = it.next()?;
    let previous = it.next()?;
    let held_at = it.next()?.parse().ok()?;
    match (kind, it.next()) {
        ("threads-max", None) => Some(ForkHold::Machine {
            previous: previous.parse().ok()?,
            held_at,
        }),
        ("pids.max", Some(dir)) if dir.starts_with('/') && !dir.contains("..") => {
            (previous == "max" || previous.parse::<u64>().is_ok()).then(|| ForkHold::Cgroup {
                dir: PathBuf::from(dir),
                previous: previous.to_string(),
                held_at,
            })
        }
        _ => None,
    }
}

pub(super) fn note_hold(hold: &ForkHold) {
    let note = fork_hold_note();
    let written = std::fs::create_dir_all(FORK_HOLD_DIR)
        .and_then(|()| std::fs::write(&note, hold_note(hold)));
    if let Err(e) = written {
        tracing::warn!(
            "cannot note the fork hold ({hold}) in {}: {e}; \
             should selfheal die before lifting it, put the value back by hand",
            note.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_malformed_ones_are_refused() {
        let holds = [
            ForkHold::Machine {
                previous: 191_378,
                held_at: 612,
            },
            ForkHold::Cgroup {
                dir: PathBuf::from("/sys/fs/cgroup/user.slice/session-3.scope"),
                previous: "max".into(),
                held_at: 3012,
            },
            ForkHold::Cgroup {
                dir: PathBuf::from("/sys/fs/cgroup/pids/bomb"),
                previous: "3000".into(),
                held_at: 2999,
            },
        ];
        for h in holds {
            assert_eq!(parse_hold_note(&hold_note(&h)), Some(h.clone()), "{h}");
        }
        for bad in [
            "",
            "threads-max 10 5",
            "threads-max x 5\n",
            "threads-max 10 5 /x\n",
            "pids.max max 5\n",
            "pids.max max 5 relative/dir\n",
            "pids.max max 5 /sys/fs/cgroup/../../etc\n",
            "pids.max lots 5 /sys/fs/cgroup/x\n",
            "nproc 10 5\n",
        ] {
            assert_eq!(parse_hold_note(bad), None, "{bad:?}");
        }
    }

    /// A stale note (its daemon gone) is restored and removed; a live
    /// daemon's note is left alone; a malformed one is removed.
    #[test]
    fn stale_holds_are_restored_and_live_ones_left() {
        let run = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        std::fs::write(cg.path().join("pids.max"), "3\n").unwrap();
        let stale = ForkHold::Cgroup {
            dir: cg.path().to_path_buf(),
            previous: "max".into(),
            held_at: 3,
        };
        // pid 0 never names a process in /proc.
        std::fs::write(run.path().join("fork-hold.0.1"), hold_note(&stale)).unwrap();
        let mine = fork_hold_note();
        let mine = run.path().join(mine.file_name().unwrap());
        std::fs::write(&mine, hold_note(&stale)).unwrap();
        std::fs::write(run.path().join("fork-hold.0.2"), "garbage").unwrap();
        std::fs::write(run.path().join("other-file"), "x").unwrap();

        let done = restore_stale_fork_holds(run.path());
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(
            done.iter().any(|d| d.contains("pids.max restored to max")),
            "{done:?}"
        );
        assert!(done.iter().any(|d| d.contains("malformed")), "{done:?}");
        assert_eq!(
            std::fs::read_to_string(cg.path().join("pids.max")).unwrap(),
            "max\n"
        );
        assert!(!run.path().join("fork-hold.0.1").exists());
        assert!(!run.path().join("fork-hold.0.2").exists());
        assert!(mine.exists(), "a live daemon's note is its own");
        assert!(run.path().join("other-file").exists());
        assert!(restore_stale_fork_holds(&run.path().join("absent")).is_empty());
    }
}
