//! The real-program corpus: programs nobody here wrote, under `selfheal run
//! --checkpoint-interval 50ms --keep 8`, SIGSEGV sent from outside at random
//! moments, every output compared with a fault-free run of the same command.
//!
//! A run is *silently wrong* when `selfheal run` exits 0 and an output
//! differs: that must never happen. Otherwise each injection ends in a
//! rollback, or in a restart whose `rollback` event says why (`reason`).
//! Used by `corpus.rs` (one run per program, in the default test suite) and
//! by its ignored soak test (`bench/checkpoint/corpus-soak.sh N`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::checkpoint_harness::*;
use super::common::*;

/// How a case's result is compared with the fault-free run.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// These files, byte for byte.
    Bytes(&'static [&'static str]),
    /// An SQLite database: `PRAGMA integrity_check` and its full `.dump`
    /// (every row, so the content itself is compared, not only a checksum).
    Sqlite(&'static str),
}

/// One program of the corpus.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Short name (results, filters).
    pub name: &'static str,
    /// Programs that must be installed.
    pub needs: &'static [&'static str],
    /// The command, run in the case's directory.
    pub argv: &'static [&'static str],
    /// stdin from this file of the directory.
    pub stdin: Option<&'static str>,
    /// stdout to this file of the directory.
    pub stdout: Option<&'static str>,
    /// What to compare.
    pub check: Check,
}

/// The corpus. Inputs (`in.txt`, `script.sql`, `compute.py`) are made by
/// [`prepare`].
pub const CASES: &[Case] = &[
    Case {
        name: "xz-stdout",
        needs: &["xz"],
        argv: &["xz", "-c", "-6", "-T1", "in.txt"],
        stdin: None,
        stdout: Some("out.xz"),
        check: Check::Bytes(&["out.xz"]),
    },
    Case {
        name: "xz-own-file",
        needs: &["xz"],
        argv: &["xz", "-6", "-T1", "-k", "-f", "in.txt"],
        stdin: None,
        stdout: None,
        check: Check::Bytes(&["in.txt.xz"]),
    },
    Case {
        name: "xz-2-threads",
        needs: &["xz"],
        argv: &["xz", "-c", "-6", "-T2", "--block-size=1MiB", "in.txt"],
        stdin: None,
        stdout: Some("out.xz"),
        check: Check::Bytes(&["out.xz"]),
    },
    Case {
        name: "pigz-stdout",
        needs: &["pigz"],
        // -n: no name or time stamp in the header (the copies' times differ).
        argv: &["pigz", "-p", "2", "-9", "-n", "-c", "in.txt"],
        stdin: None,
        stdout: Some("out.gz"),
        check: Check::Bytes(&["out.gz"]),
    },
    Case {
        name: "zstd-stdout",
        needs: &["zstd"],
        argv: &["zstd", "-q", "-c", "-15", "-T1", "in.txt"],
        stdin: None,
        stdout: Some("out.zst"),
        check: Check::Bytes(&["out.zst"]),
    },
    Case {
        name: "zstd-own-file",
        needs: &["zstd"],
        argv: &["zstd", "-q", "-f", "-15", "-T1", "in.txt", "-o", "own.zst"],
        stdin: None,
        stdout: None,
        check: Check::Bytes(&["own.zst"]),
    },
    Case {
        name: "sort-tempfiles",
        needs: &["sort"],
        argv: &[
            "sort",
            "-S",
            "64K",
            "-T",
            "tmp",
            "--parallel=1",
            "-k2",
            "big.txt",
            "-o",
            "sorted.txt",
        ],
        stdin: None,
        stdout: None,
        check: Check::Bytes(&["sorted.txt"]),
    },
    Case {
        name: "sqlite-stdin",
        needs: &["sqlite3"],
        argv: &["sqlite3", "db.sqlite"],
        stdin: Some("script.sql"),
        stdout: Some("sqlite.out"),
        check: Check::Sqlite("db.sqlite"),
    },
    Case {
        name: "sqlite-read",
        needs: &["sqlite3"],
        argv: &["sqlite3", "db.sqlite", ".read script.sql"],
        stdin: None,
        stdout: Some("sqlite.out"),
        check: Check::Sqlite("db.sqlite"),
    },
    Case {
        name: "python",
        needs: &["python3"],
        argv: &["python3", "compute.py"],
        stdin: None,
        stdout: Some("py.out"),
        check: Check::Bytes(&["py.out"]),
    },
    Case {
        name: "shell-forks-gzip",
        needs: &["gzip", "sh"],
        argv: &[
            "sh",
            "-c",
            "for i in 1 2 3 4; do gzip -9 -n -c in.txt > part$i.gz; done",
        ],
        stdin: None,
        stdout: None,
        check: Check::Bytes(&["part1.gz", "part2.gz", "part3.gz", "part4.gz"]),
    },
];

/// The programs are the distribution's: a version manager's shim first
/// in the caller's PATH (pyenv's bash script for python3) would be tested
/// instead of the program.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why `case` cannot run here.
pub fn missing(case: &Case) -> Option<String> {
    let absent: Vec<&str> = case
        .needs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .env("PATH", PATH)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "not installed: {} (scripts/install-deps)",
            absent.join(", ")
        )
    })
}

/// Writes the inputs into `dir`: `scale` 1.0 makes each program run one to
/// three seconds of CPU time.
pub fn prepare(dir: &Path, scale: f64) {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let mut s = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
    ];
    let mut text = String::new();
    let target = (2_500_000.0 * scale) as usize;
    while text.len() < target {
        let n = next();
        text.push_str(&format!(
            "{:06} {}",
            n % 1_000_000,
            words[(n >> 20) as usize % words.len()]
        ));
        for k in 0..(n >> 40) % 9 {
            text.push(' ');
            text.push_str(words[((n >> (k * 4)) % words.len() as u64) as usize]);
        }
        text.push('\n');
    }
    std::fs::write(dir.join("in.txt"), &text).unwrap();
    // sort is fast: four times as much, so that it runs as long.
    std::fs::write(dir.join("big.txt"), text.repeat(4)).unwrap();
    let mut sql = String::from(
        "PRAGMA journal_mode=DELETE;\nCREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INTEGER);\nCREATE INDEX tb ON t(b);\n",
    );
    let txs = (250.0 * scale) as usize;
    for tx in 0..txs {
        sql.push_str("BEGIN;\n");
        for _ in 0..40 {
            let n = next();
            sql.push_str(&format!(
                "INSERT INTO t(a, b) VALUES('{:016x}{:08x}', {});\n",
                n,
                n >> 33,
                n % 1_000_000
            ));
        }
        sql.push_str(&format!(
            "UPDATE t SET b = b + 1 WHERE id % 7 = {};\n",
            tx % 7
        ));
        if tx % 50 == 49 {
            sql.push_str("DELETE FROM t WHERE b % 97 = 0;\n");
        }
        sql.push_str("COMMIT;\n");
    }
    sql.push_str("SELECT count(*), sum(b), sum(length(a)) FROM t;\n");
    std::fs::write(dir.join("script.sql"), sql).unwrap();
    let rounds = (3000.0 * scale) as usize;
    std::fs::write(
        dir.join("compute.py"),
        format!(
            "import array, hashlib\n\
             n = 8 * 1024 * 1024\n\
             a = array.array('Q', range(n))  # 64 MB\n\
             m = (1 << 64) - 1\n\
             for r in range({rounds}):\n\
             \x20   for i in range(r % 4099, n, 4099):\n\
             \x20       a[i] = (a[i] * 6364136223846793005 + r) & m\n\
             print(hashlib.sha256(a.tobytes()).hexdigest())\n"
        ),
    )
    .unwrap();
}

/// Copies the inputs of `from` into a fresh `to`.
fn copy_inputs(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tmp")).unwrap();
    for f in ["in.txt", "big.txt", "script.sql", "compute.py"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn stdio(dir: &Path, case: &Case) -> (Stdio, Stdio) {
    let stdin = match case.stdin {
        Some(f) => Stdio::from(File::open(dir.join(f)).unwrap()),
        None => Stdio::null(),
    };
    let stdout = match case.stdout {
        Some(f) => Stdio::from(File::create(dir.join(f)).unwrap()),
        None => Stdio::null(),
    };
    (stdin, stdout)
}

/// What a case produced, for comparison.
fn result(dir: &Path, case: &Case) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    match case.check {
        Check::Bytes(files) => {
            for f in files {
                out.insert(
                    f.to_string(),
                    std::fs::read(dir.join(f)).unwrap_or_default(),
                );
            }
        }
        Check::Sqlite(db) => {
            let q = |arg: &str| {
                Command::new("sqlite3")
                    .arg(dir.join(db))
                    .arg(arg)
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            };
            out.insert("integrity_check".into(), q("PRAGMA integrity_check;"));
            out.insert("dump".into(), q(".dump"));
        }
    }
    // What the program printed counts too (sqlite3's final SELECT: the
    // content checksum of the table as the run saw it).
    if let Some(f) = case.stdout {
        out.entry(f.to_string())
            .or_insert_with(|| std::fs::read(dir.join(f)).unwrap_or_default());
    }
    out
}

/// The fault-free run of `case` in `dir` (inputs from `inputs`): its
/// result and how long it took.
pub fn reference(inputs: &Path, dir: &Path, case: &Case) -> (BTreeMap<String, Vec<u8>>, Duration) {
    copy_inputs(inputs, dir);
    let (stdin, stdout) = stdio(dir, case);
    let t = Instant::now();
    let st = Command::new(case.argv[0])
        .args(&case.argv[1..])
        .env("PATH", PATH)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{} failed unsupervised: {st:?}", case.name);
    (result(dir, case), t.elapsed())
}

/// One supervised run with faults.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub case: &'static str,
    /// SIGSEGVs delivered.
    pub injected: usize,
    /// SIGSEGVs not sent: no program was running at that moment.
    pub missed: usize,
    /// Program processes signalled that no `rollback` event names.
    pub unaccounted: Vec<i32>,
    /// Rollbacks done.
    pub rolled_back: usize,
    /// Impossible rollbacks, by reason.
    pub impossible: Vec<String>,
    /// Restarts.
    pub restarts: usize,
    /// `selfheal run`'s exit code.
    pub exit: Option<i32>,
    /// Killed by us: it had not ended within the deadline.
    pub hung: bool,
    /// Every output equals the fault-free run's.
    pub identical: bool,
    /// Which outputs differ.
    pub differs: Vec<String>,
    pub wall_ms: u64,
    /// The run's events, one line each (for failure messages).
    pub events: String,
}

impl Outcome {
    /// Exit 0 with a different result: the one thing that must not happen.
    pub fn silently_wrong(&self) -> bool {
        self.exit == Some(0) && !self.identical
    }

    pub fn to_json(&self) -> Value {
        json!({
            "case": self.case,
            "injected": self.injected,
            "missed": self.missed,
            "unaccounted": self.unaccounted,
            "rolled_back": self.rolled_back,
            "impossible": self.impossible,
            "restarts": self.restarts,
            "exit": self.exit,
            "hung": self.hung,
            "identical": self.identical,
            "differs": self.differs,
            "silently_wrong": self.silently_wrong(),
            "wall_ms": self.wall_ms,
        })
    }
}

/// The program selfheal (`parent`) runs now, if any: not its child that
/// is still on the way to exec the program (that is selfheal's code; a
/// signal there tests the launch, see `a_signal_before_exec_does_not_block_the_tracer`).
fn program_of(sandbox_pids: &[i32], parent: i32) -> Option<i32> {
    let ours = std::fs::canonicalize(bin()).ok();
    sandbox_pids.iter().copied().find(|p| {
        let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok();
        if exe.is_none() || exe == ours {
            return false;
        }
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            s.rsplit(") ")
                .next()
                .and_then(|rest| rest.split(' ').nth(1))
                .and_then(|pp| pp.parse::<i32>().ok())
                == Some(parent)
        })
    })
}

/// SIGSEGV is pending for process `pid` (shared or for its leader).
fn segv_pending(pid: i32) -> bool {
    let bit = 1u64 << 10;
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
            .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
            .any(|m| m & bit != 0)
    })
}

/// Runs `case` under `selfheal run` in `dir` and sends `signals` SIGSEGVs
/// at random moments within `span` (the fault-free run's duration).
pub fn supervised(
    inputs: &Path,
    dir: &Path,
    case: &Case,
    expected: &BTreeMap<String, Vec<u8>>,
    signals: usize,
    span: Duration,
    rng: &mut Rng,
) -> Outcome {
    copy_inputs(inputs, dir);
    let store = dir.join("events.db");
    let (stdin, stdout) = stdio(dir, case);
    let mut args: Vec<String> = [
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "8",
        "--restart",
        "on-failure",
        // A restarted run that fails on what the killed one left (sqlite3
        // replaying a script on a half-filled database) fails again: ten
        // tries, not fifty, before `selfheal run` gives up.
        "--max-restarts",
        "10",
        "--backoff",
        "20ms",
        "--backoff-max",
        "200ms",
        "--stderr-tail-lines",
        "5",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(case.argv.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut cmd, sandbox) = sandboxed(&argv);
    let t = Instant::now();
    let mut child = cmd
        .env("PATH", PATH)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn selfheal run");
    // The command holds our copies of the output files: a process of ours
    // holding them would (rightly) make every rollback impossible.
    drop(cmd);
    let me = child.id() as i32;
    // The clock starts when the program runs (selfheal's own start-up
    // takes seconds on a loaded machine). Moments within 10-70 % of the
    // fault-free duration, in order: a signal sent as the program exits
    // reaches no one who could roll it back, and would count as lost.
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until
        && program_of(&sandbox_pids(&sandbox, me), me).is_none()
        && child.try_wait().is_ok_and(|s| s.is_none())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let span_ms = span.as_millis().max(200) as u64;
    let mut at: Vec<u64> = (0..signals)
        .map(|i| match i {
            // The first one early, so that a run that is much faster than
            // the fault-free one was (a loaded machine) still gets it.
            0 => rng.millis(50, (span_ms * 3 / 10).clamp(51, 300)),
            _ => rng.millis(span_ms / 10, span_ms * 7 / 10),
        })
        .map(|d| d.as_millis() as u64)
        .collect();
    at.sort_unstable();
    let mut injected = 0;
    let mut missed = 0;
    let mut signaled = Vec::new();
    for ms in at {
        let when = started + Duration::from_millis(ms);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let pids = sandbox_pids(&sandbox, me);
        match program_of(&pids, me) {
            Some(p) if send(p, sig("SIGSEGV")) => {
                injected += 1;
                if !signaled.contains(&p) {
                    signaled.push(p);
                }
                // Signals do not queue: one sent while the last is still
                // pending (the program stopped for a checkpoint on a
                // loaded machine) would merge with it.
                let until = Instant::now() + Duration::from_secs(10);
                while segv_pending(p) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            _ => missed += 1,
        }
    }
    // Generous for a loaded machine, but a supervisor that never ends is
    // a failure of its own, not a slow run.
    let deadline = t + Duration::from_secs(120) + span * 20;
    let mut hung = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall_ms = t.elapsed().as_millis() as u64;
    drop(sandbox);
    let events = events_json(&store, &[]);
    let rb = kinds(&events, "rollback");
    let done = rb
        .iter()
        .filter(|e| e["details"]["outcome"] == "done")
        .count();
    let impossible: Vec<String> = rb
        .iter()
        .filter(|e| e["details"]["outcome"] != "done")
        .map(|e| {
            let d = &e["details"];
            let reason = d["reason"]
                .as_str()
                .unwrap_or(d["outcome"].as_str().unwrap_or("?"));
            // The kind of file refusal or of descriptor written, if any:
            // `file_changed:changed_by_other_process`, `output_sent:pipe`.
            match d["why"]["why"]["kind"]
                .as_str()
                .or(d["why"]["kind"].as_str())
            {
                Some(k) => format!("{reason}:{k}"),
                None => reason.to_string(),
            }
        })
        .collect();
    // Every program process that got a SIGSEGV was rolled back or its
    // rollback refused with a reason. (Several signals to one process may
    // end in one event: a program whose own handler is printing a stack
    // trace takes the next one as it dies.)
    let unaccounted: Vec<i32> = signaled
        .iter()
        .copied()
        .filter(|p| !rb.iter().any(|e| e["details"]["pid"] == *p))
        .collect();
    let got = result(dir, case);
    let differs: Vec<String> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    Outcome {
        case: case.name,
        injected,
        missed,
        unaccounted,
        rolled_back: done,
        impossible,
        restarts: kinds(&events, "app_restart").len(),
        exit: status.code(),
        hung,
        identical: differs.is_empty(),
        differs,
        wall_ms,
        events: dump(&events),
    }
}
