//! Changes to names: recorded before they run (`created`, `removed`,
//! `renamed`), undone at rollback (`undo`), newest first.
//!
//! A file about to lose its name (unlink, or a rename over it) gets a hard
//! link under a hidden name in the same directory first — the same
//! filesystem and mount, so the link always works and costs no copy. Undo
//! renames it back, so the program's open descriptors and the file's
//! identity survive. A name that did not exist when the epoch began needs
//! no stash: the `Created` undo removes it.
//!
//! The calls themselves may still fail after we recorded them (EACCES,
//! EEXIST); every undo checks what is there before acting, so a failed
//! call is undone as nothing.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::journal::{Journal, NameOp, Replaced};
use crate::events::FileRefusal;

/// `renameat2` flags.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;
const RENAME_WHITEOUT: u32 = 4;

fn record(j: &mut Journal, op: NameOp) {
    if let Some(e) = j.open() {
        crate::debug(|| format!("files: {op:?}"));
        e.names.push(op);
    }
}

/// `path` does not exist and is about to be created.
pub(crate) fn created(j: &mut Journal, path: &Path) {
    let Some(e) = j.open() else { return };
    if e.created.insert(path.to_path_buf()) {
        record(
            j,
            NameOp::Created {
                path: path.to_path_buf(),
            },
        );
    }
}

/// Hard-links `path` under a stash name; the stash id, or the epoch is
/// tainted.
fn stash(j: &mut Journal, path: &Path) -> Option<u64> {
    let (id, sp) = j.new_stash(path);
    match std::fs::hard_link(path, &sp) {
        Ok(()) => {
            j.stashes.insert(id, sp);
            Some(id)
        }
        Err(e) => {
            j.taint(
                &path.display().to_string(),
                FileRefusal::StashFailed {
                    error: e.to_string(),
                },
            );
            None
        }
    }
}

/// `path` is about to be unlinked (`dir`: removed as a directory).
pub(crate) fn removed(j: &mut Journal, path: &Path, dir: bool) {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return;
    };
    let Some(e) = j.open() else { return };
    let fresh = e.created.remove(path);
    if dir {
        if !m.is_dir() || fresh {
            return;
        }
        // Our stashes in it would keep it from being removed: move them
        // up to its parent first.
        let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let inside: Vec<(u64, PathBuf)> = j
            .stashes
            .iter()
            .filter(|(_, p)| p.parent() == Some(path))
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        for (id, from) in inside {
            let to = parent.join(from.file_name().expect("stash names have a file name"));
            if std::fs::rename(&from, &to).is_ok() {
                j.stashes.insert(id, to.clone());
                record(j, NameOp::StashMoved { id, from, to });
            }
        }
        let mode = m.permissions().mode() & 0o7777;
        record(
            j,
            NameOp::DirRemoved {
                path: path.to_path_buf(),
                mode,
            },
        );
        return;
    }
    if m.is_dir() {
        return;
    }
    let stash = if fresh { None } else { stash(j, path) };
    if !fresh && stash.is_none() {
        return;
    }
    record(
        j,
        NameOp::Removed {
            path: path.to_path_buf(),
            stash,
        },
    );
}

/// `from` is about to be renamed to `to`.
pub(crate) fn renamed(j: &mut Journal, from: &Path, to: &Path, flags: u32) {
    let shown = || from.display().to_string();
    if flags & RENAME_WHITEOUT != 0 {
        j.taint(
            &shown(),
            FileRefusal::Unsupported {
                what: "rename with RENAME_WHITEOUT".into(),
            },
        );
        return;
    }
    let Ok(fm) = std::fs::symlink_metadata(from) else {
        return;
    };
    let Some(e) = j.open() else { return };
    if flags & RENAME_EXCHANGE != 0 {
        let (fa, fb) = (e.created.remove(from), e.created.remove(to));
        if fa {
            e.created.insert(to.to_path_buf());
        }
        if fb {
            e.created.insert(from.to_path_buf());
        }
        record(
            j,
            NameOp::Exchanged {
                a: from.to_path_buf(),
                b: to.to_path_buf(),
            },
        );
        return;
    }
    let fresh_from = e.created.contains(from);
    let fresh_to = e.created.contains(to);
    let replaced = match std::fs::symlink_metadata(to) {
        Err(_) => None,
        Ok(_) if flags & RENAME_NOREPLACE != 0 => return,
        // Same file under both names: rename does nothing.
        Ok(tm) if tm.dev() == fm.dev() && tm.ino() == fm.ino() => return,
        Ok(tm) if tm.is_dir() => Some(Replaced::Dir(tm.permissions().mode() & 0o7777)),
        Ok(_) if fresh_to => None,
        Ok(_) => match stash(j, to) {
            Some(id) => Some(Replaced::File(id)),
            None => return,
        },
    };
    let e = j.open().expect("open above");
    e.created.remove(to);
    if fresh_from {
        e.created.remove(from);
        e.created.insert(to.to_path_buf());
    }
    if fm.is_dir() {
        // Stashes and fresh names inside move with it.
        for p in j.stashes.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        }
    }
    record(
        j,
        NameOp::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
        },
    );
}

/// What undoing names did.
#[derive(Debug, Default)]
pub(crate) struct Undone {
    /// Operations undone.
    pub ops: usize,
}

/// Undoes `op` (the process is stopped). An error leaves names half
/// restored: the caller must not let the process run.
pub(crate) fn undo(j: &mut Journal, op: &NameOp, out: &mut Undone) -> std::io::Result<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    out.ops += 1;
    match op {
        NameOp::Created { path } => match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(path),
            Ok(_) => gone(std::fs::remove_file(path)),
            Err(_) => Ok(()),
        },
        NameOp::Removed { path, stash } => {
            let Some(id) = stash else { return Ok(()) };
            put_back(j, *id, path)
        }
        NameOp::DirRemoved { path, mode } => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Ok(());
            }
            std::fs::DirBuilder::new().mode(*mode).create(path)?;
            // The mode was filtered by our umask.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
        }
        NameOp::Renamed { from, to, replaced } => {
            // Only if the rename happened (the name exists where it went
            // and not where it came from).
            if std::fs::symlink_metadata(to).is_ok() && std::fs::symlink_metadata(from).is_err() {
                std::fs::rename(to, from)?;
                for p in j.stashes.values_mut() {
                    if let Ok(rest) = p.strip_prefix(to) {
                        *p = from.join(rest);
                    }
                }
            }
            match replaced {
                Some(Replaced::File(id)) => put_back(j, *id, to),
                Some(Replaced::Dir(mode)) => undo(
                    j,
                    &NameOp::DirRemoved {
                        path: to.clone(),
                        mode: *mode,
                    },
                    &mut Undone::default(),
                ),
                None => Ok(()),
            }
        }
        NameOp::Exchanged { a, b } => {
            if std::fs::symlink_metadata(a).is_ok() && std::fs::symlink_metadata(b).is_ok() {
                selfheal_sys::fileops::rename_exchange(a, b)?;
            }
            Ok(())
        }
        NameOp::StashMoved { id, from, to } => {
            if std::fs::symlink_metadata(to).is_ok() {
                std::fs::rename(to, from)?;
                j.stashes.insert(*id, from.clone());
            }
            Ok(())
        }
    }
}

/// Renames stash `id` back to `path` (replacing whatever is there: at the
/// epoch's start `path` was the stashed file). If the removal never
/// happened, `path` and the stash are the same file and the stash goes.
fn put_back(j: &mut Journal, id: u64, path: &Path) -> std::io::Result<()> {
    let Some(sp) = j.stashes.remove(&id) else {
        return Ok(());
    };
    std::fs::rename(&sp, path)?;
    // rename() between two links of one file does nothing.
    let _ = std::fs::remove_file(&sp);
    Ok(())
}
