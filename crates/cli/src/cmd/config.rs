//! `selfheal config default` and `selfheal config check FILE`.

use std::path::Path;
use std::process::ExitCode;

use selfheal_config::DEFAULT_CONFIG_TOML;

/// Prints the commented default configuration.
pub fn print_default() -> anyhow::Result<ExitCode> {
    print!("{DEFAULT_CONFIG_TOML}");
    Ok(ExitCode::SUCCESS)
}

/// Validates a file and summarises what it configures.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(Some(path))?;
    let rules = config.effective_rules();
    println!(
        "{}: OK — {} rules ({} light, {} heavy), sampling every {}, store {}, HTTP {}",
        path.display(),
        rules.len(),
        rules
            .iter()
            .filter(|r| r.level == selfheal_config::Level::Light)
            .count(),
        rules
            .iter()
            .filter(|r| r.level == selfheal_config::Level::Heavy)
            .count(),
        config.sampler.period,
        config
            .daemon
            .store
            .as_ref()
            .map_or("default".to_string(), |p| p.display().to_string()),
        config
            .daemon
            .listen
            .map_or("off".to_string(), |a| a.to_string()),
    );
    Ok(ExitCode::SUCCESS)
}
