//! `selfheal vm [OPTIONS] -- qemu-system-x86_64 ARGS…`: run and watch one
//! guest from the host (the logic is in `selfheal-vm`; this is its flags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use selfheal_config::{HumanDuration, Output, RestartPolicy, VmConfig};
use selfheal_event::{Class, EventSink};
use selfheal_store::{Store, StoreWriter, WriterOptions};
use selfheal_vm::{Stop, VmMetrics};

fn duration(s: &str) -> Result<Duration, selfheal_config::DurationError> {
    selfheal_config::parse_duration(s)
}

/// Options of `selfheal vm`. Durations take units: `50ms`, `1s`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Example:\n  \
selfheal vm --name web -- qemu-system-x86_64 -accel tcg -m 512 -kernel vmlinuz -initrd initrd \\\n      \
-append console=ttyS0 -serial file:console.log\n\n\
selfheal adds a QMP socket, a pvpanic device (-action panic=none) and a virtio-serial port\n\
for the guest's `selfheal watch` ([host_link]). Needs root for checkpoints. See docs/vm.md.\n\
Exits with QEMU's status (128 + N when signal N killed it), 1 when it gave up.")]
pub struct VmArgs {
    /// Name in events and metrics (letters, digits, _ - .).
    #[arg(long, default_value = "vm")]
    pub name: String,
    /// Checkpoint the whole VM this often (10ms to 60s; "0": no checkpoints,
    /// a panic or hang restarts the guest).
    #[arg(long, default_value = "50ms", value_parser = duration, value_name = "DURATION")]
    pub checkpoint_interval: Duration,
    /// Recent checkpoints kept (1 to 256).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub keep: usize,
    /// Older checkpoints: one per this much time ("0": none beyond --keep).
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub older_every: Duration,
    /// … back to this age.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub older_span: Duration,
    /// A new fault this soon after a rollback goes further back.
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub recurrence_window: Duration,
    /// Restart instead after this many rollbacks within --restart-window (0: no limit).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_rollbacks: u32,
    /// The guest link silent this long while QEMU runs means hung ("0": off).
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub heartbeat_timeout: Duration,
    /// Guest diagnoses acted on when the guest does not recover them itself
    /// (comma-separated classes).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "CLASS",
        default_value = "kernel_stall,d_state,fork_bomb,memory_exhaustion"
    )]
    pub rollback_on: Vec<String>,
    /// Time the guest's own recovery gets before the host acts.
    #[arg(long, default_value = "500ms", value_parser = duration, value_name = "DURATION")]
    pub guest_grace: Duration,
    /// Settle window: a guest diagnosis arriving this soon after a rollback
    /// whose evidence reaches back over it is recorded, not acted on ("0": off).
    #[arg(long, default_value = "3s", value_parser = duration, value_name = "DURATION")]
    pub settle: Duration,
    /// The guest link's virtio-serial port name.
    #[arg(long, default_value = "org.selfheal.0", value_name = "NAME")]
    pub port: String,
    /// When to start QEMU again: never, on-failure or always.
    #[arg(long, default_value = "on-failure", value_parser = str::parse::<RestartPolicy>)]
    pub restart: RestartPolicy,
    /// Give up after this many restarts within --restart-window (0: never).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_restarts: u32,
    /// Window for --max-restarts and --max-rollbacks.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub restart_window: Duration,
    /// Another unix socket QEMU listens on (server=on) whose reader
    /// tolerates lines lost or repeated across a rollback (repeat for more).
    #[arg(long = "replay-tolerant-socket", value_name = "PATH")]
    pub replay_tolerant_sockets: Vec<PathBuf>,
    /// Append QEMU's stdout to FILE ("null" discards it).
    #[arg(long, value_name = "FILE")]
    pub stdout: Option<String>,
    /// Append QEMU's stderr to FILE ("null" discards it).
    #[arg(long, value_name = "FILE")]
    pub stderr: Option<String>,
    /// Event store [default: /var/lib/selfheal/selfheal.db as root].
    #[arg(long, value_name = "PATH", conflicts_with = "no_store")]
    pub store: Option<PathBuf>,
    /// Do not record events in a store.
    #[arg(long)]
    pub no_store: bool,
    /// Also write every event (the guest's forwarded ones too) as a JSON line to PATH ("-" = stdout).
    #[arg(long, value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// QEMU and its arguments.
    #[arg(required = true, last = true, value_name = "QEMU")]
    pub command: Vec<String>,
}

impl VmArgs {
    /// The VM these flags describe.
    pub fn to_config(&self) -> anyhow::Result<VmConfig> {
        let mut v = VmConfig::new(&self.name, self.command.clone());
        let c = &mut v.checkpoint;
        c.interval = HumanDuration(self.checkpoint_interval);
        c.keep = self.keep;
        c.older_every = HumanDuration(self.older_every);
        c.older_span = HumanDuration(self.older_span);
        c.recurrence_window = HumanDuration(self.recurrence_window);
        c.max_rollbacks = self.max_rollbacks;
        v.heartbeat_timeout = HumanDuration(self.heartbeat_timeout);
        v.rollback_on = self
            .rollback_on
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<Class>())
            .collect::<Result<_, _>>()
            .map_err(|e| super::usage(format!("--rollback-on: {e}")))?;
        v.guest_grace = HumanDuration(self.guest_grace);
        v.settle = HumanDuration(self.settle);
        v.port = self.port.clone();
        v.restart = self.restart;
        v.max_restarts = self.max_restarts;
        v.restart_window = HumanDuration(self.restart_window);
        v.replay_tolerant_sockets = self.replay_tolerant_sockets.clone();
        let out = |o: &Option<String>| match o.as_deref() {
            None => Ok(Output::Inherit),
            Some(s) => s.parse::<Output>(),
        };
        v.stdout = out(&self.stdout).map_err(|e| super::usage(format!("--stdout: {e}")))?;
        v.stderr = out(&self.stderr).map_err(|e| super::usage(format!("--stderr: {e}")))?;
        v.validate().map_err(|e| super::usage(e.to_string()))?;
        Ok(v)
    }
}

/// Runs the VM until it ends for good; exits with QEMU's status.
pub fn run(args: VmArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(selfheal_config::LogFormat::Human);
    let cfg = args.to_config()?;
    let writer = if args.no_store {
        None
    } else {
        let path = match &args.store {
            Some(p) => p.clone(),
            None => selfheal_store::default_path_for_this_process()
                .context("no default event store location; give --store PATH or --no-store")?,
        };
        let store = Store::open(&path)
            .with_context(|| format!("opening the event store {}", path.display()))?;
        Some(Arc::new(StoreWriter::start(
            store,
            WriterOptions::default(),
        )?))
    };
    let base: Arc<dyn EventSink> = match &writer {
        Some(w) => w.clone(),
        None => Arc::new(super::Discard),
    };
    let sink: Arc<dyn EventSink> = Arc::new(
        selfheal_daemon::FanoutSink::new(base, args.event_log.as_deref())
            .map_err(|e| super::usage(e.to_string()))?,
    );
    let stop = Stop::default();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let handle = signals.handle();
    let s = stop.clone();
    let waiter = std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            s.stop();
        }
    });
    let finish = selfheal_vm::run_vm(&cfg, sink, Arc::new(VmMetrics::default()), stop);
    handle.close();
    let _ = waiter.join();
    if let Some(w) = writer {
        let _ = w.flush_timeout(Some(Duration::from_secs(5)));
        w.shutdown().context("closing the event store")?;
    }
    if let Some(e) = &finish.error {
        anyhow::bail!("{e}");
    }
    Ok(ExitCode::from(finish.shell_status().clamp(0, 255) as u8))
}
