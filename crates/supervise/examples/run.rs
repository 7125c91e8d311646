//! The library on its own: supervise one program in the foreground with
//! the default settings (restart on failure, backoff, crash-loop breaker),
//! events only logged, and exit with its status. `selfheal run` adds the
//! flags and the event store.
//!
//! `SELFHEAL_LOG=debug cargo run -p selfheal-supervise --example run -- CMD [ARGS…]`

use std::sync::Arc;

use selfheal_config::AppConfig;
use selfheal_event::{Event, EventSink};
use selfheal_supervise::{run_foreground, Options};

/// Keeps events nowhere; the supervisor logs each one anyway.
struct Discard;

impl EventSink for Discard {
    fn emit(&self, _: Event) -> bool {
        true
    }
}

fn main() {
    let command: Vec<String> = std::env::args().skip(1).collect();
    if command.is_empty() {
        eprintln!("usage: run CMD [ARGS…]");
        std::process::exit(2);
    }
    let filter = std::env::var("SELFHEAL_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let app = AppConfig::new("example", command);
    match run_foreground(app, Arc::new(Discard), Options::default()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("run: {e}");
            std::process::exit(125);
        }
    }
}
