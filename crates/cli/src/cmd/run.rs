//! `selfheal run -- CMD`: supervise one program.

use std::process::ExitCode;

/// Supervises the program and exits with its shell-style status. Flags
/// that describe no valid app are bad input (exit 2), checked before
/// anything starts.
pub fn run(args: selfheal_supervise::RunArgs) -> anyhow::Result<ExitCode> {
    args.to_app_config()
        .map_err(|e| super::usage(format!("{e:#}")))?;
    crate::logging::init(selfheal_config::LogFormat::Auto);
    let status = selfheal_supervise::run_main(args)?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
