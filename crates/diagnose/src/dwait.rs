//! Every task in uninterruptible sleep (D) and since when, from an eBPF
//! program on the `sched:sched_switch` tracepoint
//! ([`selfheal_sys::bpf::dwait_program`]): whatever a task waits for —
//! block I/O, a FUSE or NFS request, a lock — it is in the program's map
//! from the moment it switches out in D until it switches back in. The
//! sweep reads that map (a few entries, one system call each) instead of
//! every thread's `/proc` files, and dates each block exactly.
//!
//! The tracepoint's field offsets come from its `format` file in tracefs,
//! which is mounted at `/sys/kernel/tracing` when no tracefs is mounted.
//! Where any of this is missing (no BPF, no tracefs, not root), the sweep
//! falls back to scanning `/proc` ([`crate::sweep`]) and says so once.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_sys::bpf::{self, HashMapU32U64, SchedSwitchLayout, Width};

/// Tasks the map holds at most; more at once means the sweep scans `/proc`.
pub const MAP_ENTRIES: u32 = 16384;

/// Where tracefs usually lives.
const TRACEFS_DIRS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracer could not start (the reason is logged once; the sweep
/// scans `/proc` instead).
#[derive(Debug, thiserror::Error)]
pub enum DwaitError {
    /// No tracefs mounted and none could be mounted.
    #[error("no tracefs at {tried} and mounting it at /sys/kernel/tracing failed: {why}")]
    NoTracefs {
        /// Places looked at.
        tried: String,
        /// Why mounting failed.
        why: String,
    },
    /// The sched_switch format file is missing or lacks a field.
    #[error("{path}: {why}")]
    Format {
        /// The format file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A BPF or perf system call failed.
    #[error("{0}")]
    Bpf(String),
}

/// A field of a tracepoint format: `field:long prev_state; offset:32; size:8; signed:1;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatField {
    /// Byte offset in the record.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// Finds `name` in a tracepoint `format` text.
pub fn format_field(text: &str, name: &str) -> Option<FormatField> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        // `char prev_comm[16]` names `prev_comm`.
        let ident = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if ident != name {
            return None;
        }
        let num = |key: &str| -> Option<usize> {
            l.split(';')
                .find_map(|p| p.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(FormatField {
            offset: num("offset:")?,
            size: num("size:")?,
        })
    })
}

/// What the sched_switch format text lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A field is not listed.
    #[error("no field {0}")]
    Missing(&'static str),
    /// A field lies beyond what a BPF load can address.
    #[error("{field} at offset {offset} is out of range")]
    Offset {
        /// The field.
        field: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// Pid fields that are not 32-bit.
    #[error("pid fields of {prev} and {next} bytes (expected 4)")]
    PidSize {
        /// `prev_pid`'s size.
        prev: u64,
        /// `next_pid`'s size.
        next: u64,
    },
    /// A `prev_state` that is neither 32- nor 64-bit.
    #[error("prev_state of {0} bytes (expected 4 or 8)")]
    StateSize(u64),
}

/// The sched_switch layout from its format text.
pub fn parse_layout(text: &str) -> Result<SchedSwitchLayout, LayoutError> {
    let get = |name: &'static str| format_field(text, name).ok_or(LayoutError::Missing(name));
    let (prev_pid, prev_state, next_pid) = (get("prev_pid")?, get("prev_state")?, get("next_pid")?);
    let off = |f: FormatField, field: &'static str| -> Result<i16, LayoutError> {
        i16::try_from(f.offset).map_err(|_| LayoutError::Offset {
            field,
            offset: f.offset as u64,
        })
    };
    if prev_pid.size != 4 || next_pid.size != 4 {
        return Err(LayoutError::PidSize {
            prev: prev_pid.size as u64,
            next: next_pid.size as u64,
        });
    }
    let prev_state_width =
        Width::of_size(prev_state.size).ok_or(LayoutError::StateSize(prev_state.size as u64))?;
    Ok(SchedSwitchLayout {
        prev_pid: off(prev_pid, "prev_pid")?,
        prev_state: off(prev_state, "prev_state")?,
        prev_state_width,
        next_pid: off(next_pid, "next_pid")?,
    })
}

/// Where tracefs is mounted, per `mountinfo`, or a usual place that has it.
fn find_tracefs(mountinfo: &str) -> Option<PathBuf> {
    let mounts = selfheal_cgroup::mountinfo::parse_mountinfo(mountinfo).unwrap_or_default();
    mounts
        .iter()
        .find(|m| m.fs_type == "tracefs")
        .map(|m| m.mount_point.clone())
        .or_else(|| {
            TRACEFS_DIRS
                .iter()
                .map(PathBuf::from)
                .find(|d| d.join("events/sched/sched_switch/id").exists())
        })
}

/// One task in D as the tracer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DWait {
    /// Thread id.
    pub tid: i32,
    /// When it switched out in D.
    pub since: Instant,
}

/// The running tracer: the program stays attached while this lives.
#[derive(Debug)]
pub struct DwaitTracer {
    map: HashMapU32U64,
    prog: OwnedFd,
    _event: OwnedFd,
    raw: Vec<(u32, u64)>,
    /// tracefs mounted by us (said in the start-up note).
    pub mounted_tracefs: Option<PathBuf>,
}

impl DwaitTracer {
    /// Loads and attaches the program (root; mounts tracefs if needed).
    pub fn start() -> Result<DwaitTracer, DwaitError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounted = None;
        let tracefs = match find_tracefs(&mountinfo) {
            Some(t) => t,
            None => {
                let dir = Path::new(TRACEFS_DIRS[0]);
                selfheal_sys::mount::mount_pseudo("tracefs", dir).map_err(|e| {
                    DwaitError::NoTracefs {
                        tried: TRACEFS_DIRS.join(", "),
                        why: e.to_string(),
                    }
                })?;
                mounted = Some(dir.to_path_buf());
                dir.to_path_buf()
            }
        };
        let dir = tracefs.join("events/sched/sched_switch");
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| DwaitError::Format {
                path,
                why: e.to_string(),
            })
        };
        let format = read("format")?;
        let layout = parse_layout(&format).map_err(|why| DwaitError::Format {
            path: dir.join("format"),
            why: why.to_string(),
        })?;
        let id: u64 = read("id")?.trim().parse().map_err(|_| DwaitError::Format {
            path: dir.join("id"),
            why: "not a number".into(),
        })?;
        Self::attach(&layout, id).map(|mut t| {
            t.mounted_tracefs = mounted;
            t
        })
    }

    /// Loads the program for `layout` and attaches it to tracepoint `id`.
    pub fn attach(layout: &SchedSwitchLayout, id: u64) -> Result<DwaitTracer, DwaitError> {
        let map = HashMapU32U64::create(MAP_ENTRIES).map_err(|e| DwaitError::Bpf(e.to_string()))?;
        let insns = bpf::dwait_program(layout, map.fd().as_raw_fd());
        let prog = bpf::load_tracepoint_program(&insns, "Apache-2.0")
            .map_err(|e| DwaitError::Bpf(e.to_string()))?;
        let event = bpf::attach_tracepoint(id, {
            use std::os::fd::AsFd;
            prog.as_fd()
        })
        .map_err(|e| DwaitError::Bpf(e.to_string()))?;
        Ok(DwaitTracer {
            map,
            prog,
            _event: event,
            raw: Vec::with_capacity(64),
            mounted_tracefs: None,
        })
    }

    /// Every task in D now, with when it blocked, into `out`. `Err` when
    /// the map could not be read; `Ok(false)` when it is full (tasks may be
    /// missing: scan `/proc` too).
    pub fn read(&mut self, out: &mut Vec<DWait>) -> Result<bool, DwaitError> {
        self.map
            .entries(&mut self.raw)
            .map_err(|e| DwaitError::Bpf(e.to_string()))?;
        let (now, now_ns) = (Instant::now(), bpf::monotonic_ns());
        out.clear();
        out.extend(self.raw.iter().map(|&(tid, ns)| {
            DWait {
                tid: tid as i32,
                since: now
                    .checked_sub(Duration::from_nanos(now_ns.saturating_sub(ns)))
                    .unwrap_or(now),
            }
        }));
        Ok((self.raw.len() as u32) < self.map.max_entries())
    }

    /// The program's fd, for its run-time statistics in `/proc/self/fdinfo`.
    pub fn prog_fd(&self) -> i32 {
        self.prog.as_raw_fd()
    }

    /// Forgets a task (it exited without the tracer seeing it run again).
    pub fn forget(&self, tid: i32) {
        let _ = self.map.remove(tid as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/sched/sched_switch/format` of the development machine (6.18).
    const FORMAT_6_18: &str = "name: sched_switch
ID: 372
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid
";

    #[test]
    fn layout_comes_from_the_format_file() {
        let l = parse_layout(FORMAT_6_18).unwrap();
        assert_eq!(
            (l.prev_pid, l.prev_state, l.next_pid),
            (24, 32, 56),
            "{l:?}"
        );
        assert_eq!(l.prev_state_width, Width::DW);
        // `prev_comm` is not `prev_pid`, `next_prio` is not `next_pid`.
        assert_eq!(
            format_field(FORMAT_6_18, "prev_comm"),
            Some(FormatField {
                offset: 8,
                size: 16
            })
        );
        // A kernel whose prev_state is an int, at other offsets.
        let other = FORMAT_6_18
            .replace(
                "long prev_state;\toffset:32;\tsize:8",
                "unsigned int prev_state;\toffset:32;\tsize:4",
            )
            .replace("next_pid;\toffset:56", "next_pid;\toffset:52");
        let l = parse_layout(&other).unwrap();
        assert_eq!((l.prev_state_width, l.next_pid), (Width::W, 52));
        assert!(parse_layout("format:\n").unwrap_err() == LayoutError::Missing("prev_pid"));
        let odd = FORMAT_6_18.replace(
            "prev_state;\toffset:32;\tsize:8",
            "prev_state;\toffset:32;\tsize:2",
        );
        assert!(parse_layout(&odd)
            .unwrap_err()
            .to_string()
            .contains("2 bytes"));
    }

    #[test]
    fn tracefs_is_found_in_mountinfo() {
        let mi = "45 27 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime - tracefs tracefs rw\n";
        assert_eq!(find_tracefs(mi), Some(PathBuf::from("/sys/kernel/tracing")));
    }
}
