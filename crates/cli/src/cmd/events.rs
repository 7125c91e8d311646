//! `selfheal events`: read the store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use selfheal_event::{Event, EventKind};
use selfheal_store::{Order, Query, Store};

/// Options of `selfheal events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events after this: a duration back from now ("10m", "2h"), a
    /// Unix time in ms, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only events before this (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only events of this kind (repeat or comma-separate for several):
    /// start, stop, alert, diagnosis, dismissed, recovery, kernel, watchdog,
    /// app_start, app_ready, app_crash, app_hang, app_action, app_restart,
    /// app_gave_up, app_exit, checkpoint, rollback, panic, vm_start, vm_crash,
    /// vm_hang, vm_rollback, vm_restart, vm_gave_up, vm_exit.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only events of this supervised application.
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Only events about, or forwarded from inside, this VM (`selfheal vm`, `[[vm]]`).
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// Show at most the newest N events.
    #[arg(long, short = 'n', default_value_t = 50, value_name = "N")]
    pub limit: u64,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as they are recorded.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Event store to read (default: the config's, else the default path).
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Configuration file, to find its store.
    #[arg(long, short = 'c', value_name = "FILE", env = "SELFHEAL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Prints events.
pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let path = super::store_path(args.store.as_deref(), &config)?;
    let now = SystemTime::now();
    let mut q = Query::new().order(Order::Tail).limit(args.limit.max(1));
    if let Some(s) = &args.since {
        q = q.since(
            selfheal_daemon::parse_since(s, now)
                .map_err(|e| super::usage(format!("--since: {e}")))?,
        );
    }
    if let Some(s) = &args.until {
        q = q.until(
            selfheal_daemon::parse_since(s, now)
                .map_err(|e| super::usage(format!("--until: {e}")))?,
        );
    }
    for k in &args.kind {
        q = q
            .kind(EventKind::from_str(k.trim()).map_err(|e| super::usage(format!("--kind: {e}")))?);
    }
    if let Some(app) = &args.app {
        q = q.app(app.clone());
    }
    if let Some(vm) = &args.vm {
        q = q.vm(vm.clone());
    }
    let store = Store::open_read_only(&path).map_err(|e| anyhow::anyhow!(e))?;
    let events = store
        .query(&q)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut last_id = events.iter().filter_map(|e| e.id).max().unwrap_or(0);
    for e in &events {
        print_event(e, args.json);
    }
    if !args.follow {
        if events.is_empty() && !args.json {
            eprintln!("no events match (store {})", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let follow = q.clone().order(Order::OldestFirst).limit(1000);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        // A snapshot-mode reader (read-only directory) cannot see new rows:
        // reopen to pick them up.
        let store = Store::open_read_only(&path).map_err(|e| anyhow::anyhow!(e))?;
        for e in store.query(&follow.clone().after_id(last_id))? {
            last_id = last_id.max(e.id.unwrap_or(0));
            print_event(&e, args.json);
        }
    }
}

fn print_event(e: &Event, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(e) {
            println!("{line}");
        }
        return;
    }
    let when = humantime::format_rfc3339_millis(e.time());
    let culprit = e
        .culprit
        .as_ref()
        .map(|c| c.to_string())
        .filter(|s| !s.is_empty())
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    println!(
        "{when} {:<8} {:<10} {}{culprit}",
        e.severity.as_str(),
        e.kind.as_str(),
        e.message
    );
}
