//! Log set-up: systemd's journal when systemd started us, human-readable
//! lines on stderr otherwise, JSON lines on request.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use selfheal_config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where journald listens for its native protocol (fixed by systemd, and
/// by tracing-journald).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// (`info`). Returns the format in effect (`auto` resolved; `journal`
/// falls back to `human`, saying why, when the journal cannot be reached).
pub fn init(format: LogFormat) -> LogFormat {
    let format = match format {
        LogFormat::Auto if started_by_systemd() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Human,
        f => f,
    };
    let mut fallback = None;
    if format == LogFormat::Journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                // User fields (`app`, `pid`, …) become F_APP, F_PID: the
                // prefix keeps them from overriding journald's own fields.
                let layer = layer.with_syslog_identifier("selfheal".to_string());
                let res = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                if let Err(e) = res {
                    eprintln!("selfheal: logging already initialised: {e}");
                }
                return LogFormat::Journal;
            }
            Err(e) => fallback = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let (res, used) = match format {
        LogFormat::Json => (
            builder.json().flatten_event(true).try_init(),
            LogFormat::Json,
        ),
        _ => (builder.try_init(), LogFormat::Human),
    };
    if let Err(e) = res {
        eprintln!("selfheal: logging already initialised: {e}");
    }
    if let Some(e) = fallback {
        tracing::warn!(
            "cannot log to the journal ({JOURNAL_SOCKET}: {e}); logging to stderr instead. \
             Set log_format = \"human\" or \"json\" to choose explicitly"
        );
    }
    used
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// True when systemd started this process and journald listens: stderr is
/// the journal stream systemd gave us (JOURNAL_STREAM names its device and
/// inode, the check systemd.exec(5) recommends), or we run in a unit
/// (INVOCATION_ID). A journal socket alone is not enough: an operator
/// running `selfheal watch` in a terminal on a systemd machine wants lines
/// on that terminal.
fn started_by_systemd() -> bool {
    Path::new(JOURNAL_SOCKET).exists()
        && (stderr_is_journal_stream() || std::env::var_os("INVOCATION_ID").is_some())
}

fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}
