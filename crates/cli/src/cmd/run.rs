//! `selfheal run -- CMD`: supervise one program.

use std::process::ExitCode;

/// Supervises the program and exits with its shell-style status.
pub fn run(args: selfheal_supervise::RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(selfheal_config::LogFormat::Auto);
    let status = selfheal_supervise::run_main(args)?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
