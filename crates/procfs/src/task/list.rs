//! Enumerating processes and threads.

use std::path::Path;

use super::TaskDir;
use crate::error::{is_gone_io, ProcError};

pub(crate) fn numeric_entries(dir: &Path) -> Result<Vec<i32>, std::io::Error> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Every process id under `root` (normally `/proc`), sorted.
pub fn list_pids(root: &Path) -> Result<Vec<i32>, ProcError> {
    numeric_entries(root).map_err(|e| ProcError::io(root, e))
}

/// Every thread id of process `pid`, sorted. `Gone` if the process exited.
pub fn list_tids(root: &Path, pid: i32) -> Result<Vec<i32>, ProcError> {
    let dir = root.join(pid.to_string()).join("task");
    numeric_entries(&dir).map_err(|e| {
        if is_gone_io(&e) {
            ProcError::Gone { pid }
        } else {
            ProcError::io(dir, e)
        }
    })
}

/// Parses `task/TID/children`: the pids of the thread's children.
pub fn parse_children(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|s| s.parse::<i32>().ok())
        .collect()
}

/// Child pids of every thread `tids` of `pid`, sorted, from
/// `task/TID/children` (which needs CONFIG_PROC_CHILDREN). `None` when the
/// kernel lacks the file (the main thread has none); a thread that exits
/// meanwhile is skipped.
pub fn read_children(root: &Path, pid: i32, tids: &[i32]) -> Option<Vec<i32>> {
    let mut all = Vec::new();
    for tid in tids {
        let path = TaskDir::thread(root, pid, *tid).path().join("children");
        match std::fs::read_to_string(path) {
            Ok(text) => all.extend(parse_children(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *tid == pid => return None,
            Err(_) => {}
        }
    }
    all.sort_unstable();
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_self() {
        let me = std::process::id() as i32;
        let pids = list_pids(Path::new("/proc")).unwrap();
        assert!(pids.contains(&me) && pids.contains(&1));
        let tids = list_tids(Path::new("/proc"), me).unwrap();
        assert!(tids.contains(&me));
        let gone = list_tids(Path::new("/proc"), 0x3fff_fff0).unwrap_err();
        assert!(gone.is_gone(), "{gone}");
    }
}
