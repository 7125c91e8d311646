//! Small file helpers that attach the path to every error.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// Reads a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Reads a cgroup file if it exists; `None` when the kernel does not offer it.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

/// Writes `value` to a cgroup file in one write(2), as the kernel expects.
/// (O_TRUNC is accepted by cgroupfs, as `echo x > file` shows, and keeps
/// fakes in temp dirs honest.)
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| CgroupError::io("open for writing", path, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| CgroupError::io(format!("write {value:?} to"), path, e))
}

/// Parses a trimmed decimal `u64`, naming the file on failure.
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    let t = text.trim();
    t.parse()
        .map_err(|_| parse_error(path, t, "an unsigned integer"))
}

/// Reads a file holding one unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    parse_u64(path, &read(path)?)
}

/// Reads a file holding one unsigned integer, `None` when the file is absent.
pub(crate) fn read_u64_optional(path: &Path) -> Result<Option<u64>> {
    read_optional(path)?
        .map(|text| parse_u64(path, &text))
        .transpose()
}

/// Builds a [`CgroupError::Parse`].
pub(crate) fn parse_error(path: &Path, content: &str, expected: &'static str) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        content: content.trim().to_string(),
        expected,
    }
}

/// Parses `cgroup.procs` / `cgroup.threads` / `tasks` text: one id a line.
pub(crate) fn parse_id_list(path: &Path, text: &str) -> Result<Vec<i32>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i32>()
                .map_err(|_| parse_error(path, l, "a process id"))
        })
        .collect()
}

/// Reads an id list; a cgroup removed meanwhile reads as empty.
pub(crate) fn read_id_list(path: &Path) -> Result<Vec<i32>> {
    match read(path) {
        Ok(text) => parse_id_list(path, &text),
        Err(e) if e.is_gone() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Child cgroup directories of `dir` (not recursive). A vanished `dir` has none.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list", dir, e))?;
        // cgroupfs has only regular files and directories; file_type needs no stat.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// `dir` and every cgroup below it, parents before children.
pub(crate) fn subtree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let children = child_dirs(&out[i])?;
        out.extend(children);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_parse_and_reject_garbage() {
        let p = Path::new("/x/cgroup.procs");
        assert_eq!(parse_id_list(p, "12\n7\n\n").unwrap(), vec![12, 7]);
        assert!(parse_id_list(p, "12\nabc\n").is_err());
        assert!(parse_id_list(p, "").unwrap().is_empty());
    }

    #[test]
    fn subtree_lists_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::create_dir_all(dir.path().join("c")).unwrap();
        fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        let all = subtree(dir.path()).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["", "a", "c", "a/b"]);
        assert!(subtree(&dir.path().join("missing")).unwrap().len() == 1);
    }
}
