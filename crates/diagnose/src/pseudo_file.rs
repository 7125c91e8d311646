//! Reading the small pseudo-files of procfs and cgroupfs cheaply.
//!
//! `std::fs::read_to_string` asks for the file's size first (a `statx` the
//! kernel answers with 0 for these files) and reads until it gets 0 back:
//! five system calls per file. The sweep reads a few hundred such files a
//! second's worth of work at a time, so it uses three: open, one read,
//! close. A file whose content fills half the buffer or more is read on
//! until the end (a generated file may come in several pieces).

use std::fs::File;
use std::io::Read;
use std::path::Path;

const CHUNK: usize = 4096;

/// The whole content of a small pseudo-file, or `None` if it cannot be
/// opened or read (gone, permission) or is not UTF-8.
pub fn read_small(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut buf = [0u8; CHUNK];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        out.extend_from_slice(&buf[..n]);
        // A short read of a small generated file is all of it.
        if n < CHUNK / 2 {
            break;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_and_large_files_whole() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("small");
        std::fs::write(&small, "4096\n").unwrap();
        assert_eq!(read_small(&small).as_deref(), Some("4096\n"));
        let big = d.path().join("big");
        let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&big, &text).unwrap();
        assert_eq!(read_small(&big).as_deref(), Some(text.as_str()));
        assert_eq!(read_small(&d.path().join("missing")), None);
        // A real generated file.
        let stat = read_small(Path::new("/proc/self/stat")).unwrap();
        assert!(stat.starts_with(&std::process::id().to_string()));
    }
}
