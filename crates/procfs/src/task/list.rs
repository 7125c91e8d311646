//! Enumerating processes and threads.

use std::path::Path;

use crate::error::{is_gone_io, ProcError};

fn numeric_entries(dir: &Path) -> Result<Vec<i32>, std::io::Error> {
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
