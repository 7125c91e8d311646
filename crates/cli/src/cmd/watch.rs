//! `selfheal watch`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use selfheal_config::LogFormat;
use selfheal_daemon::{Daemon, DaemonOptions};

/// Options of `selfheal watch`; each overrides the config file.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Configuration file (TOML); defaults apply without one.
    #[arg(long, short = 'c', value_name = "FILE", env = "SELFHEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Event store (SQLite). Default: /var/lib/selfheal/selfheal.db as root,
    /// $XDG_STATE_HOME/selfheal/selfheal.db otherwise.
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz and /api/events ("" disables).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Record what recovery would do, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write every event as a JSON line to PATH ("-" = stdout).
    #[arg(long, value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// Inside a VM run by `selfheal vm`: the virtio-serial port (name or
    /// path) for heartbeats and events to the host ("" disables; default
    /// from [host_link], used only when the port exists).
    #[arg(long, value_name = "PORT")]
    pub host_port: Option<String>,
    /// Log format: human (lines on stderr), json (one object per line on
    /// stderr), journal (systemd's journal, structured fields), auto (the
    /// journal when started by systemd, human otherwise; the default).
    #[arg(long, value_name = "FORMAT", value_parser = ["auto", "human", "json", "journal"])]
    pub log_format: Option<String>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_deref())?;
    if let Some(listen) = &args.listen {
        config.daemon.listen = selfheal_config::parse_listen(listen)
            .map_err(|e| super::usage(format!("--listen: {e}")))?;
    }
    if args.dry_run {
        config.daemon.dry_run = true;
    }
    if let Some(p) = &args.host_port {
        config.host_link.port = p.clone();
    }
    if let Some(p) = &args.event_log {
        config.daemon.event_log = Some(p.clone());
    }
    match args.log_format.as_deref() {
        Some("json") => config.daemon.log_format = LogFormat::Json,
        Some("journal") => config.daemon.log_format = LogFormat::Journal,
        Some("human") => config.daemon.log_format = LogFormat::Human,
        Some(_) => config.daemon.log_format = LogFormat::Auto,
        None => {}
    }
    let log_format = crate::logging::init(config.daemon.log_format);
    tracing::debug!(?log_format, "logging set up");
    let store_path = super::store_path(args.store.as_deref(), &config)?;
    if !selfheal_sys::process::is_root() {
        tracing::info!(
            "running as uid {} (not root): the light detector may lack real-time priority and memory locking; \
             recovery actions can only touch this user's processes",
            selfheal_sys::process::geteuid()
        );
    }
    let daemon = Daemon::start(DaemonOptions { config, store_path }).context("cannot start")?;
    if let Some(addr) = daemon.http_addr() {
        tracing::info!(
            listen = %addr,
            "serving http://{addr}/metrics, /healthz, /api/events, /api/status"
        );
    }
    daemon.run_until_signalled().context("daemon loop")?;
    Ok(ExitCode::SUCCESS)
}
