//! Looks at the store path with plain file-system calls before SQLite touches
//! it, so that a file which is not ours is reported and left byte-identical,
//! and so that path problems get a message naming the path and the fix.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::OpenError;

/// Size of the SQLite database header.
const HEADER_LEN: usize = 100;
/// The first 16 bytes of every SQLite 3 database.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Mode for a directory we create: the events may name commands and cgroups.
const DIR_MODE: u32 = 0o700;
/// Mode for a store file we create; SQLite gives its -wal/-shm files the same.
const FILE_MODE: u32 = 0o600;

/// What is at the store path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileState {
    /// Nothing.
    Missing,
    /// A zero-length file: initialised like a missing one.
    Empty,
    /// A file with a plausible SQLite header.
    Sqlite,
}

/// Checks what is at `path`. With `want_write`, also checks that the file can
/// be opened for writing (opening it does not modify it).
pub(crate) fn inspect(path: &Path, want_write: bool) -> Result<FileState, OpenError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(path_error(path, e, "cannot reach the file")),
    };
    if !meta.is_file() {
        return Err(OpenError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let opened = if want_write {
        OpenOptions::new().read(true).write(true).open(path)
    } else {
        File::open(path)
    };
    let need = if want_write {
        "the daemon needs read and write access to the file"
    } else {
        "reading the store needs read access to the file"
    };
    let file = opened.map_err(|e| path_error(path, e, need))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| io_error(path, e))?;
    if header.is_empty() {
        return Ok(FileState::Empty);
    }
    check_header(&header, meta.len(), wal_len(path)).map_err(|e| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(FileState::Sqlite)
}

/// What is wrong with a store file's SQLite header (the reason of
/// [`OpenError::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    /// Fewer bytes than a header.
    #[error("the file is {file_len} bytes, shorter than an SQLite header (truncated?)")]
    Short {
        /// The file's length.
        file_len: u64,
    },
    /// Not the SQLite magic string.
    #[error("it does not start with the SQLite header (random bytes or another kind of file)")]
    NotSqlite,
    /// A page size SQLite never writes.
    #[error("its header has an invalid page size {raw}")]
    PageSize {
        /// The two bytes as stored.
        raw: u16,
    },
    /// Shorter than the pages its header counts.
    #[error("it is truncated: its header says {pages} pages of {page_size} bytes ({} bytes) but the file has {file_len} bytes", .pages * .page_size)]
    Truncated {
        /// Pages in the header.
        pages: u64,
        /// Bytes per page.
        page_size: u64,
        /// The file's length.
        file_len: u64,
    },
}

/// Validates an SQLite header against the file length. `wal_len` is the size
/// of the `-wal` file: while it holds frames, the main file may legitimately
/// lag behind its header (an interrupted checkpoint writes page 1 first).
pub(crate) fn check_header(header: &[u8], file_len: u64, wal_len: u64) -> Result<(), HeaderError> {
    if header.len() < HEADER_LEN {
        return Err(HeaderError::Short { file_len });
    }
    if &header[..16] != MAGIC {
        return Err(HeaderError::NotSqlite);
    }
    let raw_page_size = u16::from_be_bytes([header[16], header[17]]);
    // The format stores 65536 as 1.
    let page_size: u64 = if raw_page_size == 1 {
        65536
    } else {
        u64::from(raw_page_size)
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(HeaderError::PageSize { raw: raw_page_size });
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let change_counter = be32(24);
    let page_count = u64::from(be32(28));
    let valid_for = be32(92);
    // The in-header size is only meaningful when it was written by a
    // version of SQLite that maintains it (change counter == valid-for).
    let size_known = page_count != 0 && change_counter == valid_for;
    if size_known && wal_len == 0 && file_len < page_count * page_size {
        return Err(HeaderError::Truncated {
            pages: page_count,
            page_size,
            file_len,
        });
    }
    Ok(())
}

/// Size of the store's `-wal` file, 0 when there is none.
pub(crate) fn wal_len(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Creates the store's directory (mode 0750) when missing, then the empty
/// store file (mode 0640) if it still does not exist.
pub(crate) fn create_store_file(path: &Path) -> Result<(), OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(OpenError::ParentNotDirectory {
                    path: path.to_path_buf(),
                    parent: dir.to_path_buf(),
                })
            }
            Err(_) => {
                if let Err(e) = DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir) {
                    if let Some(parent) = non_directory_ancestor(path) {
                        return Err(OpenError::ParentNotDirectory {
                            path: path.to_path_buf(),
                            parent,
                        });
                    }
                    return Err(OpenError::CreateDir {
                        path: path.to_path_buf(),
                        dir: dir.to_path_buf(),
                        source: e,
                    });
                }
            }
        }
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        // Someone else (another daemon start) created it first: inspect again.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(path_error(
            path,
            e,
            "creating the store needs write access to its directory",
        )),
    }
}

/// The first ancestor of `path` that exists but is not a directory.
fn non_directory_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|a| fs::metadata(a).map(|m| !m.is_dir()).unwrap_or(false))
        .map(Path::to_path_buf)
}

/// Maps an I/O error on the store path to the variant that says what to do.
pub(crate) fn path_error(path: &Path, e: io::Error, need: &str) -> OpenError {
    match e.kind() {
        ErrorKind::PermissionDenied => OpenError::PermissionDenied {
            path: path.to_path_buf(),
            detail: need.to_string(),
        },
        ErrorKind::ReadOnlyFilesystem => OpenError::PermissionDenied {
            path: path.to_path_buf(),
            detail: format!("{need}, but the file system is read-only"),
        },
        ErrorKind::NotADirectory => OpenError::ParentNotDirectory {
            path: path.to_path_buf(),
            parent: non_directory_ancestor(path).unwrap_or_else(|| path.to_path_buf()),
        },
        _ => io_error(path, e),
    }
}

fn io_error(path: &Path, source: io::Error) -> OpenError {
    OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[92..96].copy_from_slice(&7u32.to_be_bytes());
        h
    }

    #[test]
    fn accepts_a_complete_file() {
        assert_eq!(check_header(&header(4096, 3), 3 * 4096, 0), Ok(()));
        // 65536 is stored as 1.
        assert_eq!(check_header(&header(1, 1), 65536, 0), Ok(()));
    }

    #[test]
    fn rejects_random_bytes_and_short_files() {
        let err = check_header(&[0x42; 100], 100, 0).unwrap_err();
        assert_eq!(err, HeaderError::NotSqlite);
        assert!(
            err.to_string()
                .contains("does not start with the SQLite header"),
            "{err}"
        );
        let err = check_header(&MAGIC[..], 16, 0).unwrap_err().to_string();
        assert!(err.contains("shorter than an SQLite header"), "{err}");
        let err = check_header(&header(1000, 1), 4096, 0).unwrap_err();
        assert_eq!(err, HeaderError::PageSize { raw: 1000 });
    }

    #[test]
    fn truncation_is_detected_unless_a_wal_may_complete_it() {
        let err = check_header(&header(4096, 10), 4096, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "it is truncated: its header says 10 pages of 4096 bytes (40960 bytes) but the file has 4096 bytes"
        );
        assert_eq!(check_header(&header(4096, 10), 4096, 8192), Ok(()));
        // A stale in-header size (counters differ) is not trusted.
        let mut h = header(4096, 10);
        h[92] = 1;
        assert_eq!(check_header(&h, 4096, 0), Ok(()));
    }
}
