//! Subcommands.

pub mod calibrate;
pub mod config;
pub mod events;
pub mod generate;
pub mod run;
pub mod status;
pub mod vm;
pub mod watch;

use std::path::Path;

use anyhow::Context;
use selfheal_config::Config;

/// Keeps events nowhere (`--no-store`; they are still logged).
pub struct Discard;

impl selfheal_event::EventSink for Discard {
    fn emit(&self, _: selfheal_event::Event) -> bool {
        true
    }
}

/// Bad input from the user (exit code 2), as opposed to a runtime failure.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Loads `--config FILE` or returns the defaults. A bad file is a usage
/// error. As root, the file and the commands it names must be changeable
/// by root only (StrictModes, [`Config::load_trusted`]).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let load = if selfheal_sys::process::is_root() {
        Config::load_trusted
    } else {
        Config::load
    };
    match path {
        Some(p) => load(p).map_err(|e| UsageError(e.to_string()).into()),
        None => Ok(Config::default()),
    }
}

/// Wraps a message as a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The store path for read commands: `--store`, the config's, or the default.
pub fn store_path(cli: Option<&Path>, config: &Config) -> anyhow::Result<std::path::PathBuf> {
    selfheal_daemon::resolve_store_path(cli, config).context("no store path")
}
