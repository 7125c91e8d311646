//! Where the store lives when `--store` is not given.

use std::ffi::OsString;
use std::path::PathBuf;

/// The system-wide store, used when running as root.
pub const SYSTEM_STORE_PATH: &str = "/var/lib/selfheal/selfheal.db";

/// Neither variable that locates a user's state directory is usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no default store path: neither XDG_STATE_HOME nor HOME is set to an absolute path; \
     set one of them or pass --store PATH"
)]
pub struct NoDefaultPath;

/// The default store path for effective uid `euid`, reading variables through
/// `env` (pass `|k| std::env::var_os(k)` outside tests).
///
/// Root gets [`SYSTEM_STORE_PATH`]; anyone else
/// `$XDG_STATE_HOME/selfheal/selfheal.db`, else
/// `$HOME/.local/state/selfheal/selfheal.db`. Following the XDG base
/// directory spec, empty or relative values count as unset.
pub fn default_path<F>(euid: u32, env: F) -> Result<PathBuf, NoDefaultPath>
where
    F: Fn(&str) -> Option<OsString>,
{
    if euid == 0 {
        return Ok(PathBuf::from(SYSTEM_STORE_PATH));
    }
    let absolute = |key: &str| env(key).map(PathBuf::from).filter(|p| p.is_absolute());
    let state_home = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state")))
        .ok_or(NoDefaultPath)?;
    Ok(state_home.join("selfheal/selfheal.db"))
}

/// [`default_path`] for this process: its effective uid and environment.
pub fn default_path_for_this_process() -> Result<PathBuf, NoDefaultPath> {
    default_path(selfheal_sys::process::geteuid(), |k| std::env::var_os(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn root_uses_the_system_path_whatever_the_environment() {
        let p = default_path(0, env(&[("HOME", "/root"), ("XDG_STATE_HOME", "/x")])).unwrap();
        assert_eq!(p, PathBuf::from("/var/lib/selfheal/selfheal.db"));
    }

    #[test]
    fn users_prefer_xdg_state_home_then_home() {
        let p = default_path(1000, env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "/st")])).unwrap();
        assert_eq!(p, PathBuf::from("/st/selfheal/selfheal.db"));
        let p = default_path(1000, env(&[("HOME", "/home/a")])).unwrap();
        assert_eq!(
            p,
            PathBuf::from("/home/a/.local/state/selfheal/selfheal.db")
        );
    }

    #[test]
    fn empty_or_relative_values_count_as_unset() {
        let p = default_path(1000, env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "")])).unwrap();
        assert_eq!(
            p,
            PathBuf::from("/home/a/.local/state/selfheal/selfheal.db")
        );
        let p = default_path(1000, env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "rel")])).unwrap();
        assert_eq!(
            p,
            PathBuf::from("/home/a/.local/state/selfheal/selfheal.db")
        );
    }

    #[test]
    fn neither_variable_is_an_error_that_says_what_to_do() {
        let err = default_path(1000, env(&[])).unwrap_err();
        assert!(err.to_string().contains("--store"), "{err}");
        assert_eq!(default_path(1000, env(&[("HOME", "")])), Err(NoDefaultPath));
    }
}
