//! `selfheal-ckpt`: run a command under μCheckpoint (demo, tests, benchmarks).
//!
//! ```text
//! selfheal-ckpt [--interval 50ms] [--keep 8] [--window 1s] [--full-copy]
//!               [--no-precopy] [--no-file-tracking] [--restart N] [--sandbox MiB] [--events FILE] [--summary FILE]
//!               [--no-checkpoint] -- CMD [ARGS...]
//! ```
//! Events are written as JSON lines to `--events` (default: none), a JSON
//! summary (pause and page percentiles, rollbacks, restarts) to `--summary`
//! (default: stderr). The exit code is the command's (128+signal if killed).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_checkpoint::{
    Config, Engine, Event, ExitInfo, Failure, FileTracking, LaunchSpec, Program, RollbackReport,
    Target, TrackingMode, Unrecoverable,
};

struct Args {
    config: Config,
    restarts: u32,
    sandbox_mib: Option<u64>,
    events: Option<PathBuf>,
    summary: Option<PathBuf>,
    baseline: bool,
    argv: Vec<String>,
}

/// Bad command-line input (exit code 2).
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    /// A duration that is not a number.
    #[error("bad duration {0:?}")]
    Duration(String),
    /// A duration with a unit other than us, ms or s.
    #[error("bad duration unit in {0:?} (use us, ms or s)")]
    DurationUnit(String),
    /// An option given without its value.
    #[error("{0} needs a value")]
    NoValue(String),
    /// An option whose value is not a number.
    #[error("{option}: {source}")]
    Number {
        /// `--keep`, `--restart`, `--sandbox`.
        option: &'static str,
        /// Why it did not parse.
        source: std::num::ParseIntError,
    },
    /// An option this program does not know.
    #[error("unknown option {0}")]
    Unknown(String),
    /// No command after `--`.
    #[error("usage: selfheal-ckpt [options] -- CMD [ARGS...]")]
    NoCommand,
}

fn parse_duration(s: &str) -> Result<Duration, ArgsError> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| ArgsError::Duration(s.into()))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        _ => return Err(ArgsError::DurationUnit(s.into())),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `option`'s value as a number.
fn number<T: std::str::FromStr<Err = std::num::ParseIntError>>(
    option: &'static str,
    v: &str,
) -> Result<T, ArgsError> {
    v.parse()
        .map_err(|source| ArgsError::Number { option, source })
}

fn parse_args() -> Result<Args, ArgsError> {
    let mut a = Args {
        config: Config {
            report_checkpoints: true,
            ..Config::default()
        },
        restarts: 0,
        sandbox_mib: None,
        events: None,
        summary: None,
        baseline: false,
        argv: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| ArgsError::NoValue(arg.clone()));
        match arg.as_str() {
            "--interval" => a.config.interval = parse_duration(&val()?)?,
            "--keep" => a.config.keep = number("--keep", &val()?)?,
            "--window" => a.config.recurrence_window = parse_duration(&val()?)?,
            "--full-copy" => a.config.force_full_copy = true,
            "--no-precopy" => a.config.precopy = false,
            "--no-file-tracking" => a.config.files.track = false,
            "--restart" => a.restarts = number("--restart", &val()?)?,
            "--sandbox" => a.sandbox_mib = Some(number("--sandbox", &val()?)?),
            "--events" => a.events = Some(val()?.into()),
            "--summary" => a.summary = Some(val()?.into()),
            "--no-checkpoint" => a.baseline = true,
            "--" => {
                a.argv = it.by_ref().collect();
                break;
            }
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    if a.argv.is_empty() {
        return Err(ArgsError::NoCommand);
    }
    Ok(a)
}

/// The `--summary` document. Written through a `serde_json::Value`, so its
/// keys come sorted, as they did when it was built with `json!`
/// (bench/checkpoint/report.py and the stored results read it).
#[derive(Debug, Serialize)]
struct Summary {
    /// What a traced run adds (absent with `--no-checkpoint`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    traced: Option<Traced>,
    wall_ms: f64,
    exit_code: i32,
    /// `memory.peak` of the `--sandbox` cgroup, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox_memory_peak_bytes: Option<u64>,
}

/// The summary of the runs under the engine.
#[derive(Debug, Serialize)]
struct Traced {
    /// How written pages were found; `null` if tracing never started.
    tracking: Option<TrackingMode>,
    /// How files were followed; `null` if tracing never started.
    files: Option<FileTracking>,
    /// Runs: 1 + restarts.
    runs: u32,
    /// File-changing calls the filter saw.
    file_calls: u64,
    checkpoints: usize,
    /// All pauses (registration pauses counted apart).
    pause_us: Stats,
    /// Pauses of checkpoints that copied at most 16 MB.
    steady_pause_us: SteadyStats,
    /// The tracer's CPU time for those checkpoints.
    steady_cpu_us: CpuStats,
    pages_copied: PageStats,
    precopy: PrecopyStats,
    memory_held_max_bytes: u64,
    rollbacks: Vec<RollbackReport>,
    impossible: Vec<Impossible>,
    restarts: Vec<Restart>,
}

/// Mean, p50, p99 and max.
#[derive(Debug, Serialize)]
struct Stats {
    mean: f64,
    p50: u64,
    p99: u64,
    max: u64,
}

/// Count, p50, p99 and max.
#[derive(Debug, Serialize)]
struct SteadyStats {
    count: usize,
    p50: u64,
    p99: u64,
    max: u64,
}

/// Mean, p50 and p99.
#[derive(Debug, Serialize)]
struct CpuStats {
    mean: f64,
    p50: u64,
    p99: u64,
}

/// Pages copied per checkpoint, and pages found written.
#[derive(Debug, Serialize)]
struct PageStats {
    #[serde(flatten)]
    copied: Stats,
    dirty_mean: f64,
}

/// The pre-copy: pages taken while the program ran, and its time.
#[derive(Debug, Serialize)]
struct PrecopyStats {
    enabled: bool,
    pages_mean: f64,
    us_p50: u64,
    us_p99: u64,
}

/// A rollback the engine refused.
#[derive(Debug, Clone, Serialize)]
struct Impossible {
    failure: Failure,
    why: Unrecoverable,
}

/// A restart after a refused rollback (`--restart`), also a line of
/// `--events`.
#[derive(Debug, Serialize)]
struct Restart {
    /// Always `restart`.
    event: &'static str,
    /// How the run ended.
    after: ExitInfo,
    /// The refusal that made it end.
    reason: Impossible,
}

/// `v` as JSON with its keys sorted (serialising these types cannot fail).
fn sorted_json<T: Serialize>(v: &T) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_value(v)?.to_string())
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("selfheal-ckpt: {e}");
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("selfheal-ckpt: {e}");
            std::process::exit(125);
        }
    }
}

fn run(args: Args) -> Result<i32, Box<dyn std::error::Error>> {
    let sandbox = match args.sandbox_mib {
        Some(mib) => Some(Sandbox::new(
            SandboxConfig::new("selfheal-ckpt")
                .memory_max_bytes(mib << 20)
                .pids_max(64)
                .cpus(Some(1.0)),
        )?),
        None => None,
    };
    let procs = sandbox
        .as_ref()
        .map(|s| s.cgroup().procs_files())
        .unwrap_or_default();
    let mut events_out = match &args.events {
        Some(p) => Some(File::create(p)?),
        None => None,
    };
    let start = Instant::now();
    let (code, traced) = if args.baseline {
        (baseline(&args.argv, &procs)?, None)
    } else {
        let (code, traced) = supervised(&args, &procs, &mut events_out)?;
        (code, Some(traced))
    };
    let summary = Summary {
        traced,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
        exit_code: code,
        sandbox_memory_peak_bytes: sandbox
            .as_ref()
            .and_then(|s| s.cgroup().memory().ok().flatten()?.peak_bytes),
    };
    let text = sorted_json(&summary)?;
    match &args.summary {
        Some(p) => std::fs::write(p, text + "\n")?,
        None => eprintln!("{text}"),
    }
    Ok(code)
}

fn baseline(argv: &[String], procs: &[PathBuf]) -> Result<i32, Box<dyn std::error::Error>> {
    // Same launcher, never traced: only exec and wait differ from a plain shell.
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let mut child = cmd.spawn()?;
    for p in procs {
        std::fs::write(p, child.id().to_string())?;
    }
    let st = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
}

fn supervised(
    args: &Args,
    procs: &[PathBuf],
    out: &mut Option<File>,
) -> Result<(i32, Traced), Box<dyn std::error::Error>> {
    let (mut pauses, mut pages, mut dirty) = (Vec::new(), Vec::new(), Vec::new());
    // Pauses of checkpoints that copied at most 16 MB: leaves out the base
    // copies made while a program fills its memory the first time.
    let mut steady = Vec::new();
    let mut steady_cpu = Vec::new();
    let (mut precopied, mut precopy_us) = (Vec::new(), Vec::new());
    let args_precopy = args.config.precopy;
    let (mut rollbacks, mut impossible, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    let mut mem_max = 0u64;
    let mut tracking = None;
    let mut files_mode = None;
    let mut runs = 0u32;
    let mut file_calls = 0u64;
    let code = loop {
        runs += 1;
        let spec = LaunchSpec {
            program: Program {
                argv: args.argv.clone(),
                cgroup_procs: procs.to_vec(),
                ..Program::default()
            },
            ..LaunchSpec::default()
        };
        let engine = Engine::start(Target::Launch(spec), args.config.clone())?;
        let mut last_impossible = None;
        let exit = loop {
            let ev = engine.events().recv()?;
            if let Some(f) = out.as_mut() {
                writeln!(f, "{}", serde_json::to_string(&ev)?)?;
            }
            match ev {
                Event::Started {
                    tracking: t, files, ..
                } => {
                    tracking = Some(t);
                    files_mode = Some(files);
                }
                Event::Checkpoint(s) => {
                    pauses.push(s.pause_us);
                    if s.registration_pause_us > 0 {
                        pauses.push(s.registration_pause_us);
                    }
                    if s.pages_copied <= 4096 {
                        steady.push(s.pause_us);
                        steady_cpu.push(s.cpu_us);
                    }
                    pages.push(s.pages_copied);
                    precopied.push(s.precopy_pages);
                    precopy_us.push(s.precopy_us);
                    dirty.push(s.pages_dirty);
                    mem_max = mem_max.max(s.memory_bytes);
                }
                Event::RolledBack(r) => rollbacks.push(r),
                Event::RollbackImpossible { failure, why } => {
                    let v = Impossible { failure, why };
                    last_impossible = Some(v.clone());
                    impossible.push(v);
                }
                Event::Exited(e) => break e,
                Event::Detached => {
                    break selfheal_checkpoint::ExitInfo {
                        code: None,
                        signal: None,
                        core_dumped: false,
                    }
                }
                _ => {}
            }
        };
        file_calls += engine
            .metrics()
            .file_calls
            .load(std::sync::atomic::Ordering::Relaxed);
        engine.join();
        let code = exit.code.unwrap_or_else(|| 128 + exit.signal.unwrap_or(0));
        match last_impossible {
            Some(reason) if (restarts.len() as u32) < args.restarts => {
                let r = Restart {
                    event: "restart",
                    after: exit,
                    reason,
                };
                if let Some(f) = out.as_mut() {
                    writeln!(f, "{}", sorted_json(&r)?)?;
                }
                restarts.push(r);
            }
            _ => break code,
        }
    };
    let n = pauses.len();
    let mean = |v: &[u64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }
    };
    let traced = Traced {
        tracking,
        files: files_mode,
        runs,
        file_calls,
        checkpoints: n,
        pause_us: Stats {
            mean: mean(&pauses),
            p50: percentile(&mut pauses, 0.5),
            p99: percentile(&mut pauses, 0.99),
            max: percentile(&mut pauses, 1.0),
        },
        steady_pause_us: SteadyStats {
            count: steady.len(),
            p50: percentile(&mut steady, 0.5),
            p99: percentile(&mut steady, 0.99),
            max: percentile(&mut steady, 1.0),
        },
        steady_cpu_us: CpuStats {
            mean: mean(&steady_cpu),
            p50: percentile(&mut steady_cpu, 0.5),
            p99: percentile(&mut steady_cpu, 0.99),
        },
        pages_copied: PageStats {
            copied: Stats {
                mean: mean(&pages),
                p50: percentile(&mut pages, 0.5),
                p99: percentile(&mut pages, 0.99),
                max: percentile(&mut pages, 1.0),
            },
            dirty_mean: mean(&dirty),
        },
        precopy: PrecopyStats {
            enabled: args_precopy,
            pages_mean: mean(&precopied),
            us_p50: percentile(&mut precopy_us, 0.5),
            us_p99: percentile(&mut precopy_us, 0.99),
        },
        memory_held_max_bytes: mem_max,
        rollbacks,
        impossible,
        restarts,
    };
    Ok((code, traced))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The summary has the keys and nesting the `json!` maps wrote (and
    /// bench/checkpoint/report.py reads), sorted; the baseline's only
    /// the run's own.
    #[test]
    fn summary_is_the_documented_json() {
        let stats = |v: u64| Stats {
            mean: v as f64,
            p50: v,
            p99: v,
            max: v,
        };
        let traced = Traced {
            tracking: None,
            files: Some(FileTracking::Seccomp),
            runs: 1,
            file_calls: 2,
            checkpoints: 3,
            pause_us: stats(4),
            steady_pause_us: SteadyStats {
                count: 1,
                p50: 5,
                p99: 5,
                max: 5,
            },
            steady_cpu_us: CpuStats {
                mean: 6.0,
                p50: 6,
                p99: 6,
            },
            pages_copied: PageStats {
                copied: stats(7),
                dirty_mean: 8.5,
            },
            precopy: PrecopyStats {
                enabled: true,
                pages_mean: 9.0,
                us_p50: 10,
                us_p99: 11,
            },
            memory_held_max_bytes: 12,
            rollbacks: vec![],
            impossible: vec![],
            restarts: vec![Restart {
                event: "restart",
                after: ExitInfo {
                    code: None,
                    signal: Some(11),
                    core_dumped: false,
                },
                reason: Impossible {
                    failure: Failure::Hang,
                    why: Unrecoverable::NoCheckpoint,
                },
            }],
        };
        let summary = Summary {
            traced: Some(traced),
            wall_ms: 13.5,
            exit_code: 139,
            sandbox_memory_peak_bytes: None,
        };
        let want = json!({
            "tracking": null, "files": {"mode": "seccomp"}, "runs": 1, "file_calls": 2,
            "checkpoints": 3,
            "pause_us": {"mean": 4.0, "p50": 4, "p99": 4, "max": 4},
            "steady_pause_us": {"count": 1, "p50": 5, "p99": 5, "max": 5},
            "steady_cpu_us": {"mean": 6.0, "p50": 6, "p99": 6},
            "pages_copied": {"mean": 7.0, "p50": 7, "p99": 7, "max": 7, "dirty_mean": 8.5},
            "precopy": {"enabled": true, "pages_mean": 9.0, "us_p50": 10, "us_p99": 11},
            "memory_held_max_bytes": 12, "rollbacks": [], "impossible": [],
            "restarts": [{"event": "restart",
                          "after": {"code": null, "signal": 11, "core_dumped": false},
                          "reason": {"failure": {"kind": "hang"},
                                     "why": {"reason": "no_checkpoint"}}}],
            "wall_ms": 13.5, "exit_code": 139,
        });
        assert_eq!(sorted_json(&summary).unwrap(), want.to_string());
        let baseline = Summary {
            traced: None,
            wall_ms: 1.0,
            exit_code: 0,
            sandbox_memory_peak_bytes: Some(4096),
        };
        assert_eq!(
            sorted_json(&baseline).unwrap(),
            r#"{"exit_code":0,"sandbox_memory_peak_bytes":4096,"wall_ms":1.0}"#
        );
    }
}
