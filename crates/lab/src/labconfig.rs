//! The selfheal configs a run puts in the guest: the config under test,
//! and for the `restart` profile the same config with the controlled
//! restart switched on and the guest's watchdog device armed. Edited as
//! TOML (comments are not kept in the derived file; the config under test
//! is kept beside it unchanged).

use std::collections::BTreeMap;
use std::time::Duration;

/// The guest's watchdog device (i6300esb, `-device i6300esb`).
pub const GUEST_WATCHDOG: &str = "/dev/watchdog0";

/// The hardware watchdog timeout the `restart` profile sets: the longest a
/// guest whose user space is dead (every CPU stalled) waits for its reset.
pub const GUEST_WATCHDOG_TIMEOUT: &str = "10s";

/// A config that is not valid TOML.
#[derive(Debug, thiserror::Error)]
#[error("the selfheal config under test is not valid TOML: {0}; check it with `selfheal config check FILE`")]
pub struct ConfigTomlError(String);

/// The `restart` profile's config: `text` with `recovery.allow_reboot =
/// true` and `[watchdog] device` set to the guest's device. Everything else
/// (ladders, restart graces, rate limits) is the config under test's.
pub fn restart_config(text: &str) -> Result<String, ConfigTomlError> {
    let mut v: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigTomlError(e.to_string()))?;
    let table = |v: &mut toml::Table, key: &str| -> toml::Table {
        v.remove(key)
            .and_then(|t| t.as_table().cloned())
            .unwrap_or_default()
    };
    let mut recovery = table(&mut v, "recovery");
    recovery.insert("allow_reboot".into(), toml::Value::Boolean(true));
    v.insert("recovery".into(), toml::Value::Table(recovery));
    let mut watchdog = table(&mut v, "watchdog");
    watchdog.insert("device".into(), GUEST_WATCHDOG.into());
    watchdog.insert("device_timeout".into(), GUEST_WATCHDOG_TIMEOUT.into());
    v.insert("watchdog".into(), toml::Value::Table(watchdog));
    let body = toml::to_string(&v).map_err(|e| ConfigTomlError(e.to_string()))?;
    Ok(format!(
        "# The hang lab's `restart` profile: the config under test with\n\
         # recovery.allow_reboot = true and the guest's watchdog device armed.\n{body}"
    ))
}

/// The restart grace per diagnosis class (`recovery.restart.grace`), in
/// whole seconds (rounded up), for classes whose ladder ends in `reboot`.
pub fn restart_graces(text: &str) -> BTreeMap<String, u64> {
    let Ok(v) = text.parse::<toml::Table>() else {
        return BTreeMap::new();
    };
    let recovery = v.get("recovery");
    let ladder = recovery.and_then(|r| r.get("ladder"));
    let grace = recovery
        .and_then(|r| r.get("restart"))
        .and_then(|r| r.get("grace"))
        .and_then(|g| g.as_table());
    let mut out = BTreeMap::new();
    let Some(ladder) = ladder.and_then(|l| l.as_table()) else {
        return out;
    };
    for (class, steps) in ladder {
        let restarts = steps
            .as_array()
            .is_some_and(|s| s.iter().any(|a| a.as_str() == Some("reboot")));
        if !restarts {
            continue;
        }
        let secs = grace
            .and_then(|g| g.get(class))
            .and_then(|d| d.as_str())
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(Duration::ZERO);
        out.insert(
            class.clone(),
            secs.as_secs() + u64::from(secs.subsec_nanos() > 0),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[recovery]
enabled = true
allow_reboot = false

[recovery.restart]
grace = { kernel_stall = "10s", d_state = "1m", memory_exhaustion = "0s" }

[recovery.ladder]
kernel_stall = ["record", "reboot"]
d_state = ["record", "abort_fuse", "reboot"]
rt_hog = ["record", "demote"]

[watchdog]
period = "500ms"
"#;

    #[test]
    fn restart_profile_switches_restart_on_and_arms_the_device() {
        let out = restart_config(CONFIG).unwrap();
        let v: toml::Table = out.parse().unwrap();
        assert_eq!(v["recovery"]["allow_reboot"].as_bool(), Some(true));
        assert_eq!(v["recovery"]["enabled"].as_bool(), Some(true));
        assert_eq!(v["watchdog"]["device"].as_str(), Some(GUEST_WATCHDOG));
        assert_eq!(v["watchdog"]["period"].as_str(), Some("500ms"));
        assert_eq!(
            v["recovery"]["ladder"]["kernel_stall"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(restart_config("[recovery\n").is_err());
    }

    #[test]
    fn graces_of_classes_that_restart() {
        let g = restart_graces(CONFIG);
        assert_eq!(g.get("kernel_stall"), Some(&10));
        assert_eq!(g.get("d_state"), Some(&60));
        assert_eq!(g.get("rt_hog"), None, "no reboot in its ladder");
        assert_eq!(g.get("memory_exhaustion"), None, "no reboot in its ladder");
    }
}
