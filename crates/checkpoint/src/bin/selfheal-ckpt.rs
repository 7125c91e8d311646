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

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_checkpoint::{Config, Engine, Event, LaunchSpec, Program, Target};

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
    let mut summary = serde_json::Map::new();
    let code = if args.baseline {
        baseline(&args.argv, &procs)?
    } else {
        supervised(&args, &procs, &mut events_out, &mut summary)?
    };
    summary.insert(
        "wall_ms".into(),
        (start.elapsed().as_secs_f64() * 1e3).into(),
    );
    summary.insert("exit_code".into(), code.into());
    let peak = sandbox
        .as_ref()
        .and_then(|s| s.cgroup().memory().ok().flatten()?.peak_bytes);
    if let Some(peak) = peak {
        summary.insert("sandbox_memory_peak_bytes".into(), peak.into());
    }
    let text = serde_json::to_string(&summary)?;
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
    summary: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<i32, Box<dyn std::error::Error>> {
    let (mut pauses, mut pages, mut dirty) = (Vec::new(), Vec::new(), Vec::new());
    // Pauses of checkpoints that copied at most 16 MB: leaves out the base
    // copies made while a program fills its memory the first time.
    let mut steady = Vec::new();
    let mut steady_cpu = Vec::new();
    let (mut precopied, mut precopy_us) = (Vec::new(), Vec::new());
    let args_precopy = args.config.precopy;
    let (mut rollbacks, mut impossible, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    let mut mem_max = 0u64;
    let mut tracking = serde_json::Value::Null;
    let mut files_mode = serde_json::Value::Null;
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
                    tracking = serde_json::to_value(t)?;
                    files_mode = serde_json::to_value(files)?;
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
                Event::RolledBack(r) => rollbacks.push(serde_json::to_value(r)?),
                Event::RollbackImpossible { failure, why } => {
                    let v = serde_json::json!({ "failure": failure, "why": why });
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
                let r = serde_json::json!({ "event": "restart", "after": exit, "reason": reason });
                if let Some(f) = out.as_mut() {
                    writeln!(f, "{r}")?;
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
    summary.insert("tracking".into(), tracking);
    summary.insert("files".into(), files_mode);
    summary.insert("runs".into(), runs.into());
    summary.insert("file_calls".into(), file_calls.into());
    summary.insert("checkpoints".into(), n.into());
    summary.insert(
        "pause_us".into(),
        serde_json::json!({ "mean": mean(&pauses), "p50": percentile(&mut pauses, 0.5),
                            "p99": percentile(&mut pauses, 0.99), "max": percentile(&mut pauses, 1.0) }),
    );
    summary.insert(
        "steady_pause_us".into(),
        serde_json::json!({ "count": steady.len(), "p50": percentile(&mut steady, 0.5),
                            "p99": percentile(&mut steady, 0.99), "max": percentile(&mut steady, 1.0) }),
    );
    summary.insert(
        "steady_cpu_us".into(),
        serde_json::json!({ "mean": mean(&steady_cpu), "p50": percentile(&mut steady_cpu, 0.5),
                            "p99": percentile(&mut steady_cpu, 0.99) }),
    );
    summary.insert(
        "pages_copied".into(),
        serde_json::json!({ "mean": mean(&pages), "p50": percentile(&mut pages, 0.5),
                            "p99": percentile(&mut pages, 0.99), "max": percentile(&mut pages, 1.0),
                            "dirty_mean": mean(&dirty) }),
    );
    summary.insert(
        "precopy".into(),
        serde_json::json!({ "enabled": args_precopy, "pages_mean": mean(&precopied),
                            "us_p50": percentile(&mut precopy_us, 0.5),
                            "us_p99": percentile(&mut precopy_us, 0.99) }),
    );
    summary.insert("memory_held_max_bytes".into(), mem_max.into());
    summary.insert("rollbacks".into(), rollbacks.into());
    summary.insert("impossible".into(), impossible.into());
    summary.insert("restarts".into(), restarts.into());
    Ok(code)
}
