//! The controlled restart at daemon start: record the `restart` event of
//! a restart selfheal asked for in an earlier boot (or of a kernel panic
//! pstore kept), say what this machine lacks for the next one, and load a
//! kexec kernel when configured.

use std::path::Path;
use std::time::SystemTime;

use selfheal_config::{Config, RestartMethod};
use selfheal_event::Event;
use selfheal_recover::restart::{boot_id, RestartStore};

/// Runs at start; returns the `restart` event to record after the
/// `start` event; what this machine cannot do goes to `notes`.
pub(crate) fn at_start(config: &Config, notes: &mut Vec<String>) -> Option<Event> {
    let rc = &config.recovery.restart;
    let store = RestartStore::new(&rc.state_dir);
    let boot = boot_id(&config.sampler.proc_root);
    let event = store.on_start(&boot, SystemTime::now());
    if config.recovery.allow_reboot && !config.daemon.dry_run {
        prepare(config, &store, notes);
    }
    event
}

fn prepare(config: &Config, store: &RestartStore, notes: &mut Vec<String>) {
    let rc = &config.recovery.restart;
    notes.extend(store.capabilities(rc.pstore, rc.efi));
    if !selfheal_sys::process::is_root() {
        notes.push(
            "recovery.allow_reboot is set but selfheal is not root: reboot(2) needs CAP_SYS_BOOT; \
             a restart will fall back to the hardware watchdog, if any"
                .into(),
        );
    }
    if rc.methods.contains(&RestartMethod::Watchdog) && config.watchdog.device.is_none() {
        notes.push(
            "recovery.restart.methods lists \"watchdog\" but [watchdog] device is unset: that method will fail"
                .into(),
        );
    }
    let sys = Path::new("/sys");
    if let (Some(kernel), true) = (&rc.kexec_kernel, rc.methods.contains(&RestartMethod::Kexec)) {
        if selfheal_sys::power::kexec_loaded(sys) {
            tracing::info!(
                "a kexec kernel is already loaded; recovery.restart.kexec_kernel not loaded again"
            );
            return;
        }
        let cmdline = rc.kexec_cmdline.clone().unwrap_or_else(|| {
            std::fs::read_to_string(config.sampler.proc_root.join("cmdline"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        });
        match selfheal_sys::power::kexec_file_load(kernel, rc.kexec_initrd.as_deref(), &cmdline) {
            Ok(()) => tracing::info!(
                "kexec kernel {} loaded: a controlled restart skips the firmware",
                kernel.display()
            ),
            Err(e) => notes.push(format!(
                "recovery.restart.kexec_kernel: {e}; a controlled restart uses reboot(2)"
            )),
        }
    }
}
