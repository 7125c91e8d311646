//! StrictModes for root: a config file, or a hook or probe command, that a
//! non-root user could modify would let that user run code as root. Like
//! sshd's StrictModes, the file and every directory up to `/` must be
//! owned by root and not writable by group or others. A directory with the
//! sticky bit (`/tmp`) may be world-writable: others cannot rename or
//! replace a root-owned entry in it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Config;

/// A file root would read or run that another user could change.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file or a directory above it could not be examined.
    #[error("cannot check {what} {file}: {path}: {source}")]
    Stat {
        /// What the file is for (`config file`, `hook command of app web`).
        what: String,
        /// The file.
        file: PathBuf,
        /// The path that could not be examined.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Owned by another user.
    #[error(
        "refusing {what} {file} as root: {path} is owned by uid {uid}, so that user could \
         change what root runs; fix: chown root: {path} (or run selfheal as that user)"
    )]
    Owner {
        /// What the file is for.
        what: String,
        /// The file.
        file: PathBuf,
        /// The file or directory with the wrong owner.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by group or others.
    #[error(
        "refusing {what} {file} as root: {path} is writable by {who} (mode {mode:04o}), so \
         they could change what root runs; fix: chmod go-w {path}"
    )]
    Writable {
        /// What the file is for.
        what: String,
        /// The file.
        file: PathBuf,
        /// The file or directory that is too open.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// `group`, `others` or `group and others`.
        who: &'static str,
    },
}

/// Checks that only root can change `file` (`what` says what it is for, in
/// the message): the file and each directory up to `/`, for the path as
/// given and for the path with symbolic links resolved.
pub fn check_root_only(file: &Path, what: &str) -> Result<(), TrustError> {
    let stat_err = |path: &Path, source| TrustError::Stat {
        what: what.to_string(),
        file: file.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let absolute = std::path::absolute(file).map_err(|e| stat_err(file, e))?;
    let real = std::fs::canonicalize(file).map_err(|e| stat_err(file, e))?;
    for chain in [&absolute, &real] {
        for path in chain.ancestors() {
            // The link itself for the given path; the real path has none.
            let meta = std::fs::symlink_metadata(path).map_err(|e| stat_err(path, e))?;
            check_one(file, what, path, &meta)?;
        }
    }
    Ok(())
}

fn check_one(
    file: &Path,
    what: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<(), TrustError> {
    if meta.uid() != 0 {
        return Err(TrustError::Owner {
            what: what.to_string(),
            file: file.to_path_buf(),
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    // A symbolic link's own mode is always 0777 and means nothing.
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.mode() & 0o7777;
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        _ if sticky_dir => return Ok(()),
        (false, false) => return Ok(()),
        (true, false) => "group",
        (false, true) => "others",
        (true, true) => "group and others",
    };
    Err(TrustError::Writable {
        what: what.to_string(),
        file: file.to_path_buf(),
        path: path.to_path_buf(),
        mode,
        who,
    })
}

/// Where `program` runs from: itself when it contains a `/`, else the first
/// executable file of that name in `$PATH`; `None` when not found (starting
/// it will fail and say so).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

impl Config {
    /// For a daemon running as root: checks every hook and exec-probe
    /// command of every `[[app]]` with [`check_root_only`]. The config
    /// file itself is checked by [`Config::load_trusted`].
    pub fn check_commands_root_only(&self) -> Result<(), TrustError> {
        for app in &self.apps {
            let mut commands = Vec::new();
            if let Some(p) = app.hook.command.first() {
                commands.push((p, format!("hook command of app `{}`", app.name)));
            }
            for probe in &app.probes {
                if let crate::ProbeCheck::Exec { command } = &probe.check {
                    if let Some(p) = command.first() {
                        commands.push((
                            p,
                            format!("probe `{}` command of app `{}`", probe.name, app.name),
                        ));
                    }
                }
            }
            for (program, what) in commands {
                if let Some(file) = resolve_program(program) {
                    check_root_only(&file, &what)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn modes_and_owners() {
        if !crate::trust_tests_can_run() {
            eprintln!("SKIP trust::modes_and_owners: needs root (files must be root-owned)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("selfheal.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        check_root_only(&file, "config file").unwrap();
        chmod(&file, 0o664);
        let e = check_root_only(&file, "config file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("writable by group") && e.contains("chmod go-w"),
            "{e}"
        );
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let e = check_root_only(&file, "config file")
            .unwrap_err()
            .to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains("group and others"), "{e}");
        // Sticky, like /tmp: fine.
        chmod(dir.path(), 0o1777);
        check_root_only(&file, "config file").unwrap();
        chmod(dir.path(), 0o700);
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let e = check_root_only(&file, "config file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("uid 65534") && e.contains("chown root"), "{e}");
        // A link in a safe place to a file in an unsafe one.
        let open = tempfile::tempdir().unwrap();
        chmod(open.path(), 0o777);
        let target = open.path().join("hook.sh");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = check_root_only(&link, "hook").unwrap_err().to_string();
        assert!(e.contains(&open.path().display().to_string()), "{e}");
        assert!(resolve_program("sh").is_some());
        assert_eq!(resolve_program("./x"), Some(PathBuf::from("./x")));
    }
}
