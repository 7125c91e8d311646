//! selfheal's configuration file (TOML).
//!
//! Every key is optional; [`Config::default`] is what `selfheal config
//! default` prints (the commented text in `default.toml`, kept equal to the
//! code by a test). Unknown keys and bad values are errors that name the file,
//! line and column. All value checks run inside deserialization, so every
//! error points at the offending text.
#![forbid(unsafe_code)]

mod app;
mod duration;
mod heavy;
mod host_link;
mod http_client;
mod invalid;
mod kmsg;
mod recovery;
mod restart;
mod rules;
mod sections;
mod stall;
mod trust;
mod vm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use app::{
    check_http_url, check_tcp_address, AppConfig, BackoffConfig, BlockedWaits, CheckpointConfig,
    CrashLoopConfig, HookConfig, KillMode, NotifyAccess, NotifyConfig, Output, ProbeCheck,
    ProbeConfig, ProgressConfig, RestartOutput, RestartPolicy, SignalName, StatusRange,
};
pub use duration::{parse_duration, HumanDuration, MAX_DURATION};
pub use heavy::HeavyConfig;
pub use host_link::HostLinkConfig;
pub use http_client::http_agent;
pub use invalid::{
    DurationError, ListenError, NameError, OutputError, ProbeTargetError, RestartOutputError,
    RestartPolicyError, SettingError, SignalError, StatusRangeError,
};
pub use kmsg::KmsgConfig;
pub use recovery::{Action, HoldForks, LadderConfig, RecoveryConfig};
pub use restart::{RestartConfig, RestartGrace, RestartMethod};
pub use rules::{default_rules, merge_rules, Comparison, Condition, Level, Rule};
pub use sections::{
    parse_listen, DaemonConfig, LightConfig, LogFormat, SamplerConfig, StoreConfig,
};
pub use stall::{StallConfig, WatchdogConfig};
pub use trust::{check_root_only, resolve_program, TrustError};

/// Root runs the trust tests (they need root-owned files).
#[cfg(test)]
fn trust_tests_can_run() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}
pub use vm::{VmCheckpointConfig, VmConfig};

/// The commented default configuration, as `selfheal config default` prints it.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Rule fragments to merge (for example the output of `selfheal
    /// calibrate`), relative to this file. Rules here override them.
    pub include: Vec<PathBuf>,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[sampler]`.
    pub sampler: SamplerConfig,
    /// `[light]`.
    pub light: LightConfig,
    /// `[heavy]`.
    pub heavy: HeavyConfig,
    /// `[stall]`.
    pub stall: StallConfig,
    /// `[watchdog]`.
    pub watchdog: WatchdogConfig,
    /// `[kmsg]`.
    pub kmsg: KmsgConfig,
    /// `[recovery]`.
    pub recovery: RecoveryConfig,
    /// `[host_link]`: inside a VM, the link to the host's `selfheal vm`.
    pub host_link: HostLinkConfig,
    /// `[[rule]]` tables, merged over the defaults by name.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
    /// `[[app]]` tables: programs the daemon supervises.
    #[serde(rename = "app", deserialize_with = "app::de_apps")]
    pub apps: Vec<AppConfig>,
    /// `[[vm]]` tables: QEMU guests the daemon runs and watches.
    #[serde(rename = "vm", deserialize_with = "vm::de_vms")]
    pub vms: Vec<VmConfig>,
    /// Rules read from `include` files (filled by [`Config::load`]).
    #[serde(skip)]
    pub included_rules: Vec<Rule>,
}

/// A rule fragment file: only `[[rule]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFragment {
    #[serde(rename = "rule", default)]
    rules: Vec<Rule>,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML or not a valid selfheal config.
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
        /// The offending line with a caret.
        snippet: String,
    },
    /// Running as root, a file the config names (or the config itself)
    /// could be changed by another user.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    /// Two rules in one file share a name.
    #[error("{path}: rule `{name}` is defined twice; rule names must be unique within a file")]
    DuplicateRule {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
}

impl ConfigError {
    fn invalid(path: &Path, text: &str, err: toml::de::Error) -> ConfigError {
        let (line, column, snippet) = match err.span() {
            Some(span) => locate(text, span.start),
            None => (1, 1, String::new()),
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: err.message().trim().to_string(),
            snippet,
        }
    }
}

/// 1-based line and column of byte `offset`, and that line with a caret.
fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let snippet = format!("  | {line_text}\n  | {}^", " ".repeat(column - 1));
    (line, column, snippet)
}

fn check_unique(path: &Path, rules: &[Rule]) -> Result<(), ConfigError> {
    for (i, r) in rules.iter().enumerate() {
        if rules[..i].iter().any(|o| o.name == r.name) {
            return Err(ConfigError::DuplicateRule {
                path: path.to_path_buf(),
                name: r.name.clone(),
            });
        }
    }
    Ok(())
}

impl Config {
    /// Parses config text. `path` is used in error messages and to resolve
    /// `include`; includes are not read here (see [`Config::load`]).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::invalid(path, text, e))?;
        check_unique(path, &config.rules)?;
        Ok(config)
    }

    /// [`Config::load`] for a process running as root (StrictModes): the
    /// file, every included file and every hook and exec-probe command must
    /// be changeable by root only (see [`check_root_only`]).
    pub fn load_trusted(path: &Path) -> Result<Config, ConfigError> {
        check_root_only(path, "config file")?;
        let config = Config::load(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for inc in &config.include {
            check_root_only(&dir.join(inc), "included rule file")?;
        }
        config.check_commands_root_only()?;
        Ok(config)
    }

    /// Reads and validates a config file and the rule fragments it includes.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for inc in &config.include {
            let inc_path = if inc.is_absolute() {
                inc.clone()
            } else {
                dir.join(inc)
            };
            let inc_text =
                std::fs::read_to_string(&inc_path).map_err(|source| ConfigError::Read {
                    path: inc_path.clone(),
                    source,
                })?;
            let frag: RuleFragment = toml::from_str(&inc_text).map_err(|e| {
                let mut err = ConfigError::invalid(&inc_path, &inc_text, e);
                if let ConfigError::Invalid { message, .. } = &mut err {
                    if message.contains("unknown field") {
                        message.push_str(" (an included file may only contain [[rule]] tables)");
                    }
                }
                err
            })?;
            check_unique(&inc_path, &frag.rules)?;
            merge_rules(&mut config.included_rules, &frag.rules);
        }
        Ok(config)
    }

    /// The rules the light detector runs: the defaults (unless
    /// `light.default_rules = false`), then included fragments, then this
    /// file's `[[rule]]` tables, merged by name; disabled rules removed.
    pub fn effective_rules(&self) -> Vec<Rule> {
        let mut rules = if self.light.default_rules {
            default_rules()
        } else {
            Vec::new()
        };
        merge_rules(&mut rules, &self.included_rules);
        merge_rules(&mut rules, &self.rules);
        rules.retain(|r| r.enabled);
        rules
    }
}

#[cfg(test)]
mod tests;
