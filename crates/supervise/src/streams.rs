//! Restarts do not mix runs: a program's standard streams that are regular
//! files, as they were when a run started, and putting them back before the
//! next run after a failure (`restart_output`).
//!
//! "Back" is where the killed run started: the output file's size then
//! (the shell truncated it for `> out`, or it held earlier runs' complete
//! output), the stdin file's offset then. Only descriptors handed to the
//! program are touched — the shell's redirections that `selfheal run`
//! passes on, and `stdout = "/path"` logs. Files the program opens itself
//! are its own business, as after any crash: many programs truncate them
//! when they start (`sort -o`, `xz -f`), some refuse to overwrite them
//! (`xz` without `-f`). stderr that passes through the supervisor (for the
//! crash event's last lines) is not touched: the supervisor's own log lines
//! may be mixed into the same file.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use selfheal_config::RestartOutput;

/// Which standard stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

impl Stream {
    /// `stdin`, `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What a restart did to one stream the killed run wrote or read: an
/// entry of the `app_restart` event's `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReset {
    pub stream: Stream,
    pub path: String,
    #[serde(flatten)]
    pub action: StreamAction,
    /// Why the action failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What was done to one stream, with its numbers (bytes or offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StreamAction {
    /// stdin's offset moved back to where the run started.
    Rewound { from: u64, to: u64 },
    /// The file was cut back to its size at the run's start.
    Truncated { from: u64, to: u64 },
    /// The bytes the run added were moved to the file `to`.
    Rotated { bytes: u64, to: String },
    /// The bytes the run added were kept (`restart_output = "keep"`).
    Kept { bytes: u64 },
    /// Not touched: the file is shorter than when the run started.
    Left {
        /// Always [`LEFT_SHORTER`].
        reason: String,
        bytes: u64,
        at_start: u64,
    },
}

/// Why a file is [`StreamAction::Left`] alone.
pub const LEFT_SHORTER: &str = "shorter than when the run started";

/// One stream of a run that is a regular file, as the run started.
#[derive(Debug)]
struct AtStart {
    stream: Stream,
    /// Our own descriptor on the same open file description as the
    /// program's (so moving its offset moves the program's).
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    pos: u64,
    append: bool,
}

/// The regular-file streams of one run.
#[derive(Debug, Default)]
pub(crate) struct RunStreams {
    files: Vec<AtStart>,
}

impl RunStreams {
    /// Notes `fd` (the descriptor the program gets as `stream`) if it is a
    /// regular file.
    pub fn note(&mut self, stream: Stream, fd: BorrowedFd<'_>) {
        let Ok(own) = fd.try_clone_to_owned() else {
            return;
        };
        let mut file = File::from(own);
        let Ok(meta) = file.metadata() else { return };
        if !meta.is_file() {
            return;
        }
        let pos = file.stream_position().unwrap_or(0);
        let append =
            selfheal_sys::fileops::fd_flags(file.as_fd()).is_ok_and(|f| f & libc::O_APPEND != 0);
        let path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .unwrap_or_default();
        self.files.push(AtStart {
            stream,
            file,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            pos,
            append,
        });
    }

    /// Notes our own standard stream when the program inherits it.
    pub fn note_inherited(&mut self, stream: Stream) {
        let fd: Option<OwnedFd> = match stream {
            Stream::Stdin => std::io::stdin().as_fd().try_clone_to_owned().ok(),
            Stream::Stdout => std::io::stdout().as_fd().try_clone_to_owned().ok(),
            Stream::Stderr => std::io::stderr().as_fd().try_clone_to_owned().ok(),
        };
        if let Some(fd) = fd {
            self.note(stream, fd.as_fd());
        }
    }

    /// Puts the streams back as the run started, per `mode`; `run` numbers
    /// rotated files. Returns what was done, for the restart event.
    pub fn reset(&mut self, mode: RestartOutput, run: u64) -> Vec<StreamReset> {
        let mut done = Vec::new();
        for s in &mut self.files {
            let Ok(meta) = s.file.metadata() else {
                continue;
            };
            if (meta.dev(), meta.ino()) != (s.dev, s.ino) {
                continue;
            }
            let path = s.path.display().to_string();
            if s.stream == Stream::Stdin {
                let now = s.file.stream_position().unwrap_or(s.pos);
                if mode == RestartOutput::Keep || now == s.pos {
                    continue;
                }
                let r = s.file.seek(SeekFrom::Start(s.pos)).map(drop);
                done.push(outcome(
                    s.stream,
                    path,
                    StreamAction::Rewound {
                        from: now,
                        to: s.pos,
                    },
                    r,
                ));
                continue;
            }
            let now = meta.len();
            if now == s.size {
                continue;
            }
            if now < s.size {
                // Cut by someone else: nothing of ours to take back.
                let left = StreamAction::Left {
                    reason: LEFT_SHORTER.into(),
                    bytes: now,
                    at_start: s.size,
                };
                done.push(outcome(s.stream, path, left, Ok(())));
                continue;
            }
            let added = now - s.size;
            let entry = match mode {
                RestartOutput::Keep => {
                    outcome(s.stream, path, StreamAction::Kept { bytes: added }, Ok(()))
                }
                RestartOutput::Truncate => {
                    let cut = StreamAction::Truncated {
                        from: now,
                        to: s.size,
                    };
                    outcome(s.stream, path, cut, cut_back(s))
                }
                RestartOutput::Rotate => {
                    let side = PathBuf::from(format!("{}.failed-{run}", s.path.display()));
                    let r = rotate(s, &side).and_then(|()| cut_back(s));
                    let moved = StreamAction::Rotated {
                        bytes: added,
                        to: side.display().to_string(),
                    };
                    outcome(s.stream, path, moved, r)
                }
            };
            done.push(entry);
        }
        done
    }
}

/// The actions of [`RunStreams::reset`] as the end of a sentence
/// (`"; stdout /x cut back from 1234 to 0 bytes"`), or nothing.
pub(crate) fn summary(done: &[StreamReset]) -> String {
    let parts: Vec<String> = done
        .iter()
        .map(|d| {
            let what = match &d.action {
                StreamAction::Truncated { from, to } => {
                    format!("cut back from {from} to {to} bytes")
                }
                StreamAction::Rewound { from, to } => format!("rewound from offset {from} to {to}"),
                StreamAction::Rotated { bytes, to } => format!("{bytes} bytes moved to {to}"),
                StreamAction::Kept { bytes } => format!("kept {bytes} bytes of the failed run"),
                StreamAction::Left { .. } => "left".to_string(),
            };
            let err = d
                .error
                .as_ref()
                .map(|e| format!(" (failed: {e})"))
                .unwrap_or_default();
            format!("{} {} {what}{err}", d.stream.name(), d.path)
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

fn outcome(
    stream: Stream,
    path: String,
    action: StreamAction,
    r: std::io::Result<()>,
) -> StreamReset {
    StreamReset {
        stream,
        path,
        action,
        error: r.err().map(|e| e.to_string()),
    }
}

/// Cuts the file to its size at the run's start and, unless it appends,
/// moves the shared offset back there (else the next run would leave a
/// hole of zeros where the killed run's bytes were).
fn cut_back(s: &mut AtStart) -> std::io::Result<()> {
    s.file.set_len(s.size)?;
    if !s.append {
        s.file.seek(SeekFrom::Start(s.pos.min(s.size)))?;
    }
    Ok(())
}

/// Copies what the killed run added to `side`.
fn rotate(s: &AtStart, side: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(side)?;
    // Our descriptor may be write-only: read through a new one.
    let src = File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&s.file)
    ))?;
    let mut at = s.size;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut out, &buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(dir: &std::path::Path, name: &str, text: &[u8], append: bool) -> File {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .append(append)
            .open(&p)
            .unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f
    }

    #[test]
    fn truncate_cuts_output_back_and_rewinds_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = file(dir.path(), "out", b"earlier\n", false);
        let mut input = File::open({
            std::fs::write(dir.path().join("in"), b"0123456789").unwrap();
            dir.path().join("in")
        })
        .unwrap();
        input.seek(SeekFrom::Start(2)).unwrap();
        let mut s = RunStreams::default();
        s.note(Stream::Stdout, out.as_fd());
        s.note(Stream::Stdin, input.as_fd());
        // The killed run's partial output and reads.
        out.write_all(b"partial").unwrap();
        input.seek(SeekFrom::Start(7)).unwrap();
        let done = s.reset(RestartOutput::Truncate, 2);
        assert_eq!(done.len(), 2, "{done:?}");
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"earlier\n");
        // The shared offset is back too: the next write follows "earlier".
        out.write_all(b"next\n").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out")).unwrap(),
            b"earlier\nnext\n"
        );
        assert_eq!(input.stream_position().unwrap(), 2);
        assert_eq!(done[0].action, StreamAction::Truncated { from: 15, to: 8 });
        assert_eq!(done[1].action, StreamAction::Rewound { from: 7, to: 2 });
    }

    #[test]
    fn rotate_moves_the_killed_runs_output_aside_and_keep_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = file(dir.path(), "log", b"a\n", true);
        let mut s = RunStreams::default();
        s.note(Stream::Stdout, out.as_fd());
        out.write_all(b"half").unwrap();
        let done = s.reset(RestartOutput::Rotate, 3);
        assert!(
            matches!(done[0].action, StreamAction::Rotated { bytes: 4, .. }),
            "{done:?}"
        );
        assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"a\n");
        assert_eq!(
            std::fs::read(dir.path().join("log.failed-3")).unwrap(),
            b"half"
        );
        let mut s = RunStreams::default();
        s.note(Stream::Stdout, out.as_fd());
        out.write_all(b"more").unwrap();
        let done = s.reset(RestartOutput::Keep, 4);
        assert_eq!(done[0].action, StreamAction::Kept { bytes: 4 });
        assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"a\nmore");
    }

    /// Each entry is the JSON the old `json!` literals built (an `error`
    /// only when the action failed), and such a document reads back.
    #[test]
    fn entries_match_the_old_json_and_read_back() {
        let entry = |action, error: Option<&str>| StreamReset {
            stream: Stream::Stdout,
            path: "/o".into(),
            action,
            error: error.map(String::from),
        };
        let cases = [
            (
                entry(StreamAction::Rewound { from: 7, to: 2 }, None),
                r#"{"stream": "stdout", "path": "/o", "action": "rewound", "from": 7, "to": 2}"#,
            ),
            (
                entry(StreamAction::Truncated { from: 9, to: 0 }, Some("EROFS")),
                r#"{"stream": "stdout", "path": "/o", "action": "truncated", "from": 9, "to": 0, "error": "EROFS"}"#,
            ),
            (
                entry(
                    StreamAction::Rotated {
                        bytes: 4,
                        to: "/o.failed-3".into(),
                    },
                    None,
                ),
                r#"{"stream": "stdout", "path": "/o", "action": "rotated", "bytes": 4, "to": "/o.failed-3"}"#,
            ),
            (
                entry(StreamAction::Kept { bytes: 4 }, None),
                r#"{"stream": "stdout", "path": "/o", "action": "kept", "bytes": 4}"#,
            ),
            (
                entry(
                    StreamAction::Left {
                        reason: LEFT_SHORTER.into(),
                        bytes: 1,
                        at_start: 5,
                    },
                    None,
                ),
                r#"{"stream": "stdout", "path": "/o", "action": "left", "reason": "shorter than when the run started", "bytes": 1, "at_start": 5}"#,
            ),
        ];
        for (typed, old) in cases {
            let old_value: serde_json::Value = serde_json::from_str(old).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), old_value);
            assert_eq!(serde_json::from_str::<StreamReset>(old).unwrap(), typed);
        }
        assert_eq!(
            summary(&[entry(
                StreamAction::Truncated { from: 9, to: 0 },
                Some("EROFS")
            )]),
            "; stdout /o cut back from 9 to 0 bytes (failed: EROFS)"
        );
    }

    #[test]
    fn pipes_and_untouched_files_are_left_alone() {
        let (r, w) = std::io::pipe().unwrap();
        let mut s = RunStreams::default();
        s.note(Stream::Stdout, w.as_fd());
        s.note(Stream::Stdin, r.as_fd());
        assert!(s.files.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let out = file(dir.path(), "same", b"x", false);
        s.note(Stream::Stdout, out.as_fd());
        assert!(s.reset(RestartOutput::Truncate, 1).is_empty());
    }
}
