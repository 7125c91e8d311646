//! `selfheal run [OPTIONS] -- CMD [ARGS…]`: supervise one program from the
//! command line and exit with its status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use selfheal_config::{
    AppConfig, BlockedWaits, HumanDuration, Output, ProbeCheck, ProbeConfig, RestartOutput,
    RestartPolicy, SignalName, StatusRange,
};
use selfheal_event::EventSink;
use selfheal_store::{Store, StoreWriter, WriterOptions};
use selfheal_supervise::Options;

fn duration(s: &str) -> Result<Duration, selfheal_config::DurationError> {
    selfheal_config::parse_duration(s)
}

/// Options of `selfheal run`. Durations take units: `100ms`, `2s`, `5m`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
selfheal run --notify --watchdog 5s -- ./server --port 8080\n  \
selfheal run --probe-http http://127.0.0.1:8080/healthz --probe-period 2s -- ./server\n  \
selfheal run --restart always --max-restarts 10 --restart-window 1m -- ./worker\n  \
selfheal run --checkpoint-interval 50ms --keep 8 -- ./long-computation\n\n\
Exits with the program's status (128 + N when signal N killed it), 127/126 when it cannot be started.")]
pub struct RunArgs {
    /// Name in events and metrics [default: the program's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// When to restart: never, on-failure (non-zero exit, signal, hang) or always.
    #[arg(long, default_value = "on-failure", value_parser = str::parse::<RestartPolicy>)]
    pub restart: RestartPolicy,
    /// Event store [default: /var/lib/selfheal/selfheal.db as root, else under $XDG_STATE_HOME].
    #[arg(long, value_name = "PATH", conflicts_with = "no_store")]
    pub store: Option<PathBuf>,
    /// Do not record events in a store (they are still logged).
    #[arg(long)]
    pub no_store: bool,
    /// Append the program's stdout to FILE instead of passing it through.
    #[arg(long, value_name = "FILE")]
    pub stdout: Option<PathBuf>,
    /// Append the program's stderr to FILE instead of passing it through.
    #[arg(long, value_name = "FILE")]
    pub stderr: Option<PathBuf>,
    /// After a failure, what the restart does to output files the killed
    /// run wrote (stdout, or stderr when it is a file given to the program
    /// directly, as with `> out`): truncate (cut back to their size when it
    /// started; stdin is rewound too), keep (append) or rotate (move its
    /// output to FILE.failed-N, then cut back).
    #[arg(long, default_value = "truncate", value_parser = str::parse::<RestartOutput>, value_name = "MODE")]
    pub restart_output: RestartOutput,
    /// Last stderr lines kept for crash events (0 to 1000).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub stderr_tail_lines: usize,
    /// Signal that asks the program to stop (before SIGKILL).
    #[arg(long, default_value = "SIGTERM", value_name = "SIGNAL")]
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub stop_grace: Duration,
    /// Delay before the first restart; it doubles with each consecutive failure.
    #[arg(long, default_value = "100ms", value_parser = duration, value_name = "DURATION")]
    pub backoff: Duration,
    /// The restart delay never exceeds this.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub backoff_max: Duration,
    /// Give up after this many restarts within --restart-window (0: never give up).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_restarts: u32,
    /// Window for --max-restarts.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub restart_window: Duration,
    /// A run this long clears the restart count and backoff.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub healthy_after: Duration,
    /// Set NOTIFY_SOCKET and honour READY=1, WATCHDOG=1, STATUS=, … (systemd Type=notify).
    #[arg(long)]
    pub notify: bool,
    /// With --notify: hung if READY=1 does not come within this ("0": do not wait).
    #[arg(long, default_value = "90s", value_parser = duration, value_name = "DURATION")]
    pub ready_timeout: Duration,
    /// Hung after this long without WATCHDOG=1 (implies --notify; systemd WatchdogSec=).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub watchdog: Option<Duration>,
    /// HTTP liveness probe (plain HTTP, no TLS), e.g. http://127.0.0.1:8080/healthz.
    #[arg(long = "probe-http", value_name = "URL")]
    pub probe_http: Vec<String>,
    /// Status codes the HTTP probe accepts.
    #[arg(long, default_value = "200-399", value_parser = str::parse::<StatusRange>, value_name = "RANGE")]
    pub probe_expect: StatusRange,
    /// TCP liveness probe: HOST:PORT must accept a connection.
    #[arg(long = "probe-tcp", value_name = "HOST:PORT")]
    pub probe_tcp: Vec<String>,
    /// Exec liveness probe: a shell command that must exit 0.
    #[arg(long = "probe-exec", value_name = "SHELL_COMMAND")]
    pub probe_exec: Vec<String>,
    /// Time from one probe to the next.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub probe_period: Duration,
    /// A probe fails if it has not succeeded after this long.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub probe_timeout: Duration,
    /// Consecutive probe failures that mean "hung".
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub probe_failures: u32,
    /// Wait this long after each start before the first probe.
    #[arg(long, default_value = "0s", value_parser = duration, value_name = "DURATION")]
    pub probe_initial_delay: Duration,
    /// Suspect an infinite loop when a thread spins without system calls this long.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub spin: Option<Duration>,
    /// Suspect a deadlock when every thread is blocked on a lock this long.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub deadlock: Option<Duration>,
    /// Count any sleeping thread (not only lock waits) towards --deadlock.
    #[arg(long)]
    pub deadlock_any_wait: bool,
    /// Act on --spin/--deadlock suspicions without a failed probe or missed watchdog.
    #[arg(long)]
    pub act_on_suspicion: bool,
    /// Shell command run before acting on a hang (evidence capture); gets
    /// SELFHEAL_APP, SELFHEAL_PID, SELFHEAL_REASON.
    #[arg(long, value_name = "SHELL_COMMAND")]
    pub hook: Option<String>,
    /// Take an in-memory checkpoint this often (10ms to 60s) and roll the
    /// program back instead of restarting it on a crash (SIGSEGV, SIGBUS,
    /// SIGFPE, SIGILL, SIGABRT) or a hang. Needs ptrace (root or CAP_SYS_PTRACE).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub checkpoint_interval: Option<Duration>,
    /// With --checkpoint-interval: checkpoints kept (1 to 256).
    #[arg(
        long,
        default_value_t = 8,
        value_name = "N",
        requires = "checkpoint_interval"
    )]
    pub keep: usize,
    /// With --checkpoint-interval: the same crash again within this time
    /// after a rollback goes one checkpoint further back.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION", requires = "checkpoint_interval")]
    pub recurrence_window: Duration,
    /// With --checkpoint-interval: restart instead after this many rollbacks
    /// within --restart-window (0: no limit).
    #[arg(
        long,
        default_value_t = 10,
        value_name = "N",
        requires = "checkpoint_interval"
    )]
    pub max_rollbacks: u32,
    /// With --checkpoint-interval: compare full copies instead of tracking
    /// written pages (slow; what kernels before 6.7 get anyway).
    #[arg(long, requires = "checkpoint_interval")]
    pub checkpoint_full_copy: bool,
    /// With --checkpoint-interval: copy every written page during the
    /// checkpoint's stop instead of pre-copying while the program runs.
    #[arg(long, requires = "checkpoint_interval")]
    pub checkpoint_no_precopy: bool,
    /// With --checkpoint-interval: do not track changes to files (no
    /// seccomp filter); a rollback is then refused once the program wrote
    /// anything since the checkpoint.
    #[arg(long, requires = "checkpoint_interval")]
    pub checkpoint_no_files: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The app these flags describe.
    pub fn to_app_config(&self) -> anyhow::Result<AppConfig> {
        let program = self.command.first().context("no command given after --")?;
        let name = match &self.name {
            Some(n) => n.clone(),
            None => default_name(program),
        };
        let mut app = AppConfig::new(&name, self.command.clone());
        app.restart = self.restart;
        app.stdout = self.stdout.clone().map_or(Output::Inherit, Output::File);
        app.stderr = self.stderr.clone().map_or(Output::Inherit, Output::File);
        app.stderr_tail_lines = self.stderr_tail_lines;
        app.restart_output = self.restart_output;
        app.stop_signal = self.stop_signal.parse::<SignalName>()?;
        app.stop_grace = HumanDuration(self.stop_grace);
        app.backoff.initial = HumanDuration(self.backoff);
        app.backoff.max = HumanDuration(self.backoff_max.max(self.backoff));
        app.crash_loop.max_restarts = self.max_restarts;
        app.crash_loop.window = HumanDuration(self.restart_window);
        app.crash_loop.healthy_after = HumanDuration(self.healthy_after);
        app.notify.enabled = self.notify || self.watchdog.is_some();
        app.notify.ready_timeout = HumanDuration(if self.notify {
            self.ready_timeout
        } else {
            Duration::ZERO
        });
        app.notify.watchdog = HumanDuration(self.watchdog.unwrap_or_default());
        let mut checks: Vec<ProbeCheck> = Vec::new();
        checks.extend(self.probe_http.iter().map(|u| ProbeCheck::Http {
            url: u.clone(),
            expect_status: self.probe_expect,
        }));
        checks.extend(
            self.probe_tcp
                .iter()
                .map(|a| ProbeCheck::Tcp { address: a.clone() }),
        );
        checks.extend(self.probe_exec.iter().map(|c| ProbeCheck::Exec {
            command: vec!["sh".into(), "-c".into(), c.clone()],
        }));
        let many = checks.len() > 1;
        for (i, check) in checks.into_iter().enumerate() {
            let mut p = ProbeConfig::new(check);
            if many {
                p.name = format!("{}{}", p.name, i + 1);
            }
            p.period = HumanDuration(self.probe_period);
            p.timeout = HumanDuration(self.probe_timeout);
            p.failure_threshold = self.probe_failures;
            p.initial_delay = HumanDuration(self.probe_initial_delay);
            app.probes.push(p);
        }
        app.progress.spin = HumanDuration(self.spin.unwrap_or_default());
        app.progress.deadlock = HumanDuration(self.deadlock.unwrap_or_default());
        if self.deadlock_any_wait {
            app.progress.blocked_waits = BlockedWaits::Any;
        }
        app.progress.act_alone = self.act_on_suspicion;
        if let Some(h) = &self.hook {
            app.hook.command = vec!["sh".into(), "-c".into(), h.clone()];
        }
        if let Some(interval) = self.checkpoint_interval {
            if interval.is_zero() {
                anyhow::bail!("--checkpoint-interval must be at least 10ms");
            }
            app.checkpoint.interval = HumanDuration(interval);
            app.checkpoint.keep = self.keep;
            app.checkpoint.recurrence_window = HumanDuration(self.recurrence_window);
            app.checkpoint.max_rollbacks = self.max_rollbacks;
            app.checkpoint.full_copy = self.checkpoint_full_copy;
            app.checkpoint.precopy = !self.checkpoint_no_precopy;
            app.checkpoint.files = !self.checkpoint_no_files;
        }
        app.validate().map_err(anyhow::Error::msg)?;
        Ok(app)
    }
}

/// The program's file name, reduced to what an app name allows.
fn default_name(program: &str) -> String {
    let base = program.rsplit('/').next().unwrap_or(program);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "app".to_string()
    } else {
        clean
    }
}

/// Supervises the program and exits with its shell-style status. Flags
/// that describe no valid app are bad input (exit 2), checked before
/// anything starts.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let app = args
        .to_app_config()
        .map_err(|e| super::usage(format!("{e:#}")))?;
    crate::logging::init(selfheal_config::LogFormat::Auto);
    let writer = open_store(&args)?;
    let sink: Arc<dyn EventSink> = match &writer {
        Some(w) => Arc::clone(w) as Arc<dyn EventSink>,
        None => Arc::new(super::Discard),
    };
    let options = Options {
        // A program in its own process group that reads the terminal would
        // be stopped by SIGTTIN; give it /dev/null instead.
        inherit_stdin: !std::io::stdin().is_terminal(),
        ..Options::default()
    };
    let status = selfheal_supervise::run_foreground(app, sink, options)?;
    if let Some(w) = writer {
        if let Err(e) = w.flush_timeout(Some(Duration::from_secs(5))) {
            tracing::warn!(error = %e, "not every event reached the store");
        }
        w.shutdown().context("closing the event store")?;
    }
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

fn open_store(args: &RunArgs) -> anyhow::Result<Option<Arc<StoreWriter>>> {
    if args.no_store {
        return Ok(None);
    }
    let (path, explicit) = match &args.store {
        Some(p) => (p.clone(), true),
        None => match selfheal_store::default_path_for_this_process() {
            Ok(p) => (p, false),
            Err(e) => {
                tracing::warn!(error = %e, "no default event store location; events are only logged");
                return Ok(None);
            }
        },
    };
    let opened = Store::open(&path)
        .map_err(anyhow::Error::from)
        .and_then(|s| StoreWriter::start(s, WriterOptions::default()).map_err(anyhow::Error::from));
    match opened {
        Ok(w) => Ok(Some(Arc::new(w))),
        Err(e) if explicit => {
            Err(e.context(format!("cannot open the event store {}", path.display())))
        }
        Err(e) => {
            // Supervision matters more than its record.
            tracing::warn!(store = %path.display(), error = %e, "cannot open the event store; events are only logged");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    #[test]
    fn flags_become_an_app() {
        let a = parse(&[
            "--watchdog",
            "2s",
            "--probe-http",
            "http://127.0.0.1:1/h",
            "--probe-tcp",
            "127.0.0.1:1",
            "--probe-failures",
            "2",
            "--spin",
            "5s",
            "--restart",
            "always",
            "--hook",
            "echo hi",
            "--",
            "/usr/bin/my server",
            "-x",
        ])
        .to_app_config()
        .unwrap();
        assert_eq!(a.name, "my_server");
        assert_eq!(a.command, vec!["/usr/bin/my server", "-x"]);
        assert!(a.notify.enabled && a.notify.ready_timeout.get().is_zero());
        assert_eq!(a.notify.watchdog.get(), Duration::from_secs(2));
        assert_eq!(a.probes.len(), 2);
        assert_eq!(
            (a.probes[0].name.as_str(), a.probes[1].name.as_str()),
            ("http1", "tcp2")
        );
        assert_eq!(a.probes[1].failure_threshold, 2);
        assert_eq!(a.restart, RestartPolicy::Always);
        assert_eq!(a.progress.spin.get(), Duration::from_secs(5));
        assert_eq!(a.hook.command, vec!["sh", "-c", "echo hi"]);
    }

    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        /// Supervise one program.
        Run(RunArgs),
    }

    #[test]
    fn works_as_the_cli_subcommand() {
        let top = Top::try_parse_from([
            "selfheal", "run", "--notify", "--", "./server", "--port", "8080",
        ])
        .unwrap();
        let Sub::Run(args) = top.cmd;
        assert_eq!(args.command, vec!["./server", "--port", "8080"]);
        let app = args.to_app_config().unwrap();
        assert!(app.notify.enabled && !app.notify.ready_timeout.get().is_zero());
        let help = Top::try_parse_from(["selfheal", "run", "--help"])
            .unwrap_err()
            .to_string();
        assert!(
            help.contains("--probe-http") && help.contains("Exits with the program's status"),
            "{help}"
        );
    }

    #[test]
    fn bad_flags_are_reported() {
        let err = parse(&["--probe-http", "https://x/", "--", "true"])
            .to_app_config()
            .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        let err = parse(&["--stop-signal", "NOPE", "--", "true"])
            .to_app_config()
            .unwrap_err();
        assert!(err.to_string().contains("unknown signal"), "{err}");
        assert!(Cli::try_parse_from(["run", "--restart", "sometimes", "--", "x"]).is_err());
        assert!(Cli::try_parse_from(["run"]).is_err());
    }

    #[test]
    fn run_flags_turn_checkpoints_on() {
        let a = Cli::try_parse_from([
            "run",
            "--checkpoint-interval",
            "50ms",
            "--keep",
            "12",
            "--",
            "prog",
        ])
        .unwrap()
        .run
        .to_app_config()
        .unwrap();
        assert!(a.checkpoint.enabled());
        assert_eq!(a.checkpoint.keep, 12);
        let off = Cli::try_parse_from(["run", "--", "prog"])
            .unwrap()
            .run
            .to_app_config()
            .unwrap();
        assert!(!off.checkpoint.enabled());
        // --keep alone means nothing: refused, not silently ignored.
        assert!(Cli::try_parse_from(["run", "--keep", "3", "--", "prog"]).is_err());
        let err = Cli::try_parse_from(["run", "--checkpoint-interval", "1ms", "--", "prog"])
            .unwrap()
            .run
            .to_app_config()
            .unwrap_err();
        assert!(err.to_string().contains("10ms to 60s"), "{err}");
    }
}
