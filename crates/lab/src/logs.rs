//! A run's raw logs on disk: written plain by QEMU, compressed with xz once
//! scored (a full run's serial logs are ~100 MB plain, a tenth of that
//! gzipped, a fiftieth with xz), and read back by `report` and
//! `availability` whether plain, xz or gzip (runs scored before xz).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use liblzma::read::XzDecoder;
use liblzma::write::XzEncoder;

/// xz's default preset (6: 8 MiB dictionary, under 100 MiB to compress,
/// 9 MiB to read back) in its extreme mode: slower to write, smaller.
const XZ_PRESET: u32 = 6 | 0x8000_0000;

/// A log could not be compressed.
#[derive(Debug, thiserror::Error)]
#[error("compressing {path}: {source}")]
pub struct CompressError {
    /// The log.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The text of log `name` in `dir`: `name`, else `name.xz` or `name.gz`
/// decompressed; empty when none exists or it cannot be read (a run cut
/// short has missing logs; the scorer reports what is missing from what it
/// finds). Invalid UTF-8 (a guest killed mid-line) is replaced, not an
/// error.
pub fn read_log(dir: &Path, name: &str) -> String {
    if let Ok(b) = fs::read(dir.join(name)) {
        return String::from_utf8_lossy(&b).into_owned();
    }
    let mut out = Vec::new();
    // A truncated archive yields what it holds.
    if let Ok(f) = fs::File::open(dir.join(format!("{name}.xz"))) {
        let _ = XzDecoder::new(f).read_to_end(&mut out);
    } else if let Ok(f) = fs::File::open(dir.join(format!("{name}.gz"))) {
        let _ = GzDecoder::new(f).read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces `dir/name` with `dir/name.xz` (extreme preset: written once,
/// read rarely). A missing log is not an error.
pub fn compress(dir: &Path, name: &str) -> Result<(), CompressError> {
    let src = dir.join(name);
    let Ok(data) = fs::read(&src) else {
        return Ok(());
    };
    let dst = dir.join(format!("{name}.xz"));
    let err = |source| CompressError {
        path: src.clone(),
        source,
    };
    let mut enc = XzEncoder::new(fs::File::create(&dst).map_err(err)?, XZ_PRESET);
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
        let xz = fs::metadata(dir.path().join("lab.log.xz")).unwrap().len();
        assert!(xz < text.len() as u64 / 5, "{xz} bytes");
        assert_eq!(read_log(dir.path(), "lab.log"), text);
        // Missing logs are empty, and compressing one is a no-op.
        assert_eq!(read_log(dir.path(), "events.log"), "");
        compress(dir.path(), "events.log").unwrap();
    }

    #[test]
    fn gzipped_logs_of_older_runs_still_read() {
        use flate2::write::GzEncoder;
        let dir = tempfile::tempdir().unwrap();
        let text = "[    1.000000] rcu: INFO: rcu_sched self-detected stall\n".repeat(20);
        let mut enc = GzEncoder::new(
            fs::File::create(dir.path().join("console.log.gz")).unwrap(),
            flate2::Compression::best(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(read_log(dir.path(), "console.log"), text);
    }
}
