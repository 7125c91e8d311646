//! `selfheal`: keeps a Linux machine and its applications alive.
#![forbid(unsafe_code)]

mod cmd;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Detects system hangs and application crashes and hangs within a fraction
/// of a second, names the culprit, and recovers.
#[derive(Debug, Parser)]
#[command(
    name = "selfheal",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: sample the machine with the light detector, record
    /// events, serve /metrics, /healthz and /api/events.
    Watch(cmd::watch::WatchArgs),
    /// Show recorded events (works whether or not the daemon runs).
    Events(cmd::events::EventsArgs),
    /// Show current metrics and recent events from the running daemon.
    Status(cmd::status::StatusArgs),
    /// Print the default configuration, or validate a file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Sample this machine under its normal load and write rule thresholds
    /// learned from it.
    Calibrate(cmd::calibrate::CalibrateArgs),
    /// Run a program under supervision: detect its crashes and hangs,
    /// recover and restart it; exits with the program's status.
    Run(Box<cmd::run::RunArgs>),
    /// Run a QEMU guest and watch it from the host: a guest panic or hang is
    /// rolled back in place to an in-memory checkpoint of the whole VM.
    Vm(Box<cmd::vm::VmArgs>),
    /// Write man pages or shell completions generated from this command
    /// line (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        action: cmd::generate::GenerateAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the full, commented default configuration (TOML).
    Default,
    /// Validate a configuration file; errors name the line and column.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Exit code for bad input (usage, config), as opposed to runtime failure (1).
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watch(a) => cmd::watch::run(a),
        Command::Events(a) => cmd::events::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Config { action } => match action {
            ConfigAction::Default => cmd::config::print_default(),
            ConfigAction::Check { file } => cmd::config::check(&file),
        },
        Command::Calibrate(a) => cmd::calibrate::run(a),
        Command::Run(a) => cmd::run::run(*a),
        Command::Vm(a) => cmd::vm::run(*a),
        Command::Generate { action } => cmd::generate::run(action, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("selfheal: {e:#}");
            match e.downcast_ref::<cmd::UsageError>() {
                Some(_) => ExitCode::from(EXIT_USAGE),
                None => ExitCode::FAILURE,
            }
        }
    }
}
