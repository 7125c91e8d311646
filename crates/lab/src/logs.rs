//! A run's raw logs on disk: written plain by QEMU, gzipped once scored
//! (a full run's serial logs are ~100 MB plain, a tenth of that gzipped),
//! and read back either way by `report` and `availability`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// A log could not be compressed.
#[derive(Debug, thiserror::Error)]
#[error("compressing {path}: {source}")]
pub struct CompressError {
    /// The log.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The text of log `name` in `dir`: `name`, else `name.gz` decompressed;
/// empty when neither exists or it cannot be read (a run cut short has
/// missing logs; the scorer reports what is missing from what it finds).
/// Invalid UTF-8 (a guest killed mid-line) is replaced, not an error.
pub fn read_log(dir: &Path, name: &str) -> String {
    if let Ok(b) = fs::read(dir.join(name)) {
        return String::from_utf8_lossy(&b).into_owned();
    }
    let gz = dir.join(format!("{name}.gz"));
    let Ok(f) = fs::File::open(&gz) else {
        return String::new();
    };
    let mut out = Vec::new();
    // A truncated archive yields what it holds.
    let _ = GzDecoder::new(f).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces `dir/name` with `dir/name.gz` (best compression: written once,
/// read rarely). A missing log is not an error.
pub fn compress(dir: &Path, name: &str) -> Result<(), CompressError> {
    let src = dir.join(name);
    let Ok(data) = fs::read(&src) else {
        return Ok(());
    };
    let dst = dir.join(format!("{name}.gz"));
    let err = |source| CompressError {
        path: src.clone(),
        source,
    };
    let mut enc = GzEncoder::new(fs::File::create(&dst).map_err(err)?, Compression::best());
    enc.write_all(&data).map_err(err)?;
    enc.finish().map_err(err)?.sync_all().map_err(err)?;
    fs::remove_file(&src).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_logs_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let text = "LAB BOOT real_ms=1 mono_ms=1\nHB cpu=0 seq=0 real_ms=2\n".repeat(50);
        fs::write(dir.path().join("lab.log"), &text).unwrap();
        assert_eq!(read_log(dir.path(), "lab.log"), text);
        compress(dir.path(), "lab.log").unwrap();
        assert!(!dir.path().join("lab.log").exists());
        let gz = fs::metadata(dir.path().join("lab.log.gz")).unwrap().len();
        assert!(gz < text.len() as u64 / 5, "{gz} bytes");
        assert_eq!(read_log(dir.path(), "lab.log"), text);
        // Missing logs are empty, and compressing one is a no-op.
        assert_eq!(read_log(dir.path(), "events.log"), "");
        compress(dir.path(), "events.log").unwrap();
    }
}
