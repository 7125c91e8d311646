//! The controlled restart's durable side: the record written before the
//! machine goes down, the history that limits restarts across boots, the
//! copies kept in pstore and an EFI variable, and what the next start makes
//! of them (a `restart` event naming the incident).
//!
//! Files in `recovery.restart.state_dir`, each written to a temporary name,
//! fsynced, renamed and the directory fsynced:
//! - `restart-pending.json`: the last restart asked for, read (and renamed
//!   `restart-last.json`) by the next start;
//! - `restart-history.jsonl`: one line per restart asked for, the count
//!   `max_restarts` limits within `window`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use selfheal_event::{unix_ms, Class, Culprit, Event, EventKind, Severity, Source};

/// The pending record's file name.
pub const PENDING: &str = "restart-pending.json";
/// The record the next start read.
pub const LAST: &str = "restart-last.json";
/// The history's file name.
pub const HISTORY: &str = "restart-history.jsonl";
/// The EFI variable's name (`<name>-<vendor GUID>` in efivarfs).
pub const EFI_VARIABLE: &str = "SelfhealRestart-5e1f4ea1-5e1f-4ea1-a5e1-f4ea15e1f4ea";
/// pstore and EFI copies are cut to this many bytes (both stores are small).
const SMALL_COPY: usize = 1024;

/// What selfheal wrote before restarting the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// Names the incident in this record, the `reboot` step's event and the
    /// next start's `restart` event.
    pub incident_id: String,
    /// The diagnosis class.
    pub class: Class,
    /// Who was blamed.
    pub culprit: Culprit,
    /// The symptom's stable name.
    pub symptom: String,
    /// What the diagnosis measured.
    pub measurement: String,
    /// The symptom as measured just before the restart.
    pub recheck: String,
    /// When the diagnosis measured it (ms since the epoch).
    pub diagnosed_unix_ms: i64,
    /// When the restart was asked for.
    pub requested_unix_ms: i64,
    /// `/proc/sys/kernel/random/boot_id` of the boot that asked.
    pub boot_id: String,
    /// The restart methods, in the order they were to be tried.
    pub methods: Vec<String>,
    /// The selfheal that asked.
    pub selfheal_version: String,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the restart was asked for.
    pub requested_unix_ms: i64,
    /// The incident.
    pub incident_id: String,
    /// Its class.
    pub class: Class,
    /// The boot that asked.
    pub boot_id: String,
}

/// The record or history could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the restart record {path}: {source}; check recovery.restart.state_dir (a restart that cannot be counted could loop, so none is taken)")]
pub struct RecordError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Where each copy of a record went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The files written and fsynced.
    pub files: Vec<PathBuf>,
    /// Copies that could not be made, and why (pstore, EFI).
    pub notes: Vec<String>,
}

/// The restart records of one state directory, with where pstore and the
/// EFI variables are (parameters, so tests use temporary directories).
#[derive(Debug, Clone)]
pub struct RestartStore {
    dir: PathBuf,
    pmsg: PathBuf,
    efivars: PathBuf,
    pstore: PathBuf,
}

impl RestartStore {
    /// Records in `dir`; pstore at /dev/pmsg0 and /sys/fs/pstore, EFI
    /// variables at /sys/firmware/efi/efivars.
    pub fn new(dir: &Path) -> RestartStore {
        RestartStore::with_roots(
            dir,
            Path::new("/dev/pmsg0"),
            Path::new("/sys/firmware/efi/efivars"),
            Path::new("/sys/fs/pstore"),
        )
    }

    /// Records in `dir`, with every other location given.
    pub fn with_roots(dir: &Path, pmsg: &Path, efivars: &Path, pstore: &Path) -> RestartStore {
        RestartStore {
            dir: dir.to_path_buf(),
            pmsg: pmsg.to_path_buf(),
            efivars: efivars.to_path_buf(),
            pstore: pstore.to_path_buf(),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What this machine offers, for the daemon's start notes: where a
    /// record would go and what is missing.
    pub fn capabilities(&self, pstore: bool, efi: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if let Err(e) = fs::create_dir_all(&self.dir) {
            notes.push(format!(
                "restart records: cannot create {} ({e}); the reboot step will be refused",
                self.dir.display()
            ));
        }
        if pstore && !self.pmsg.exists() {
            notes.push(format!(
                "restart records: no pstore message device ({}; the kernel needs CONFIG_PSTORE_PMSG and a pstore backend such as ramoops): records go to {} and the event store only",
                self.pmsg.display(),
                self.dir.display()
            ));
        }
        if efi && !self.efivars.is_dir() {
            notes.push(format!(
                "restart records: recovery.restart.efi is set but {} is not mounted (not an EFI boot, or efivarfs missing)",
                self.efivars.display()
            ));
        }
        notes
    }

    /// The history, oldest first (unreadable lines skipped).
    pub fn history(&self) -> Vec<HistoryEntry> {
        fs::read_to_string(self.dir.join(HISTORY))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Restarts asked for within `window` before `now`.
    pub fn restarts_within(&self, window: Duration, now: SystemTime) -> Vec<HistoryEntry> {
        let from = unix_ms(now) - window.as_millis().min(i64::MAX as u128) as i64;
        self.history()
            .into_iter()
            .filter(|h| h.requested_unix_ms >= from)
            .collect()
    }

    /// Writes the record durably (the pending file and a history line,
    /// both required), then the optional copies (pstore, EFI).
    pub fn write(
        &self,
        rec: &RestartRecord,
        pstore: bool,
        efi: bool,
    ) -> Result<Written, RecordError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let pending = self.dir.join(PENDING);
        let body = serde_json::to_vec_pretty(rec).unwrap_or_default();
        write_durably(&pending, &body).map_err(err(&pending))?;
        let history = self.dir.join(HISTORY);
        let entry = HistoryEntry {
            requested_unix_ms: rec.requested_unix_ms,
            incident_id: rec.incident_id.clone(),
            class: rec.class,
            boot_id: rec.boot_id.clone(),
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        append_durably(&history, &line).map_err(err(&history))?;
        let mut written = Written {
            files: vec![pending, history],
            notes: Vec::new(),
        };
        let small = small_copy(rec);
        if pstore {
            match OpenOptions::new().write(true).open(&self.pmsg) {
                Ok(mut f) => match f.write_all(&small) {
                    Ok(()) => written.files.push(self.pmsg.clone()),
                    Err(e) => written
                        .notes
                        .push(format!("pstore {}: {e}", self.pmsg.display())),
                },
                Err(e) => written
                    .notes
                    .push(format!("pstore {}: {e}", self.pmsg.display())),
            }
        }
        if efi {
            let var = self.efivars.join(EFI_VARIABLE);
            match write_efi_variable(&var, &small) {
                Ok(()) => written.files.push(var),
                Err(e) => written
                    .notes
                    .push(format!("EFI variable {}: {e}", var.display())),
            }
        }
        Ok(written)
    }

    /// At start: the event about the last restart selfheal asked for (or
    /// about a kernel panic pstore kept), if there is one to report. The
    /// pending record is renamed `restart-last.json` so it is reported once.
    pub fn on_start(&self, boot_id: &str, now: SystemTime) -> Option<Event> {
        let pending = self.dir.join(PENDING);
        let pstore_files = self.pstore_files();
        let Some(rec) = fs::read(&pending)
            .ok()
            .and_then(|b| serde_json::from_slice::<RestartRecord>(&b).ok())
        else {
            return self.panic_from_pstore(&pstore_files);
        };
        let _ = fs::rename(&pending, self.dir.join(LAST));
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        let mut details = RestartDetails {
            incident: RestartIncident {
                id: &rec.incident_id,
                class: rec.class.as_str(),
                symptom: &rec.symptom,
                measurement: &rec.measurement,
                recheck: &rec.recheck,
                diagnosed_unix_ms: rec.diagnosed_unix_ms,
            },
            requested_unix_ms: rec.requested_unix_ms,
            previous_boot_id: &rec.boot_id,
            boot_id,
            methods: &rec.methods,
            pstore: &pstore_files,
            record: self.dir.join(LAST),
            seconds_since_request: None,
        };
        let event = if rec.boot_id == boot_id {
            Event::now(
                EventKind::Restart,
                Severity::Warning,
                Source::Recovery,
                format!(
                    "a restart asked for {} ({}: {}) did not happen: this is the same boot",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH
                            + Duration::from_millis(rec.requested_unix_ms.max(0) as u64)
                    ),
                    rec.class,
                    rec.measurement
                ),
            )
        } else {
            let down_s = (unix_ms(now) - rec.requested_unix_ms) as f64 / 1000.0;
            details.seconds_since_request = Some(down_s);
            Event::now(
                EventKind::Restart,
                Severity::Critical,
                Source::Recovery,
                format!(
                    "restarted by selfheal {down_s:.1} s ago for {} ({}): {}",
                    rec.class, rec.incident_id, rec.measurement
                ),
            )
        };
        let mut event = event
            .with_rule(rec.class.as_str())
            .with_details_of(&details);
        if !rec.culprit.is_empty() {
            event = event.with_culprit(rec.culprit.clone());
        }
        Some(event)
    }

    fn pstore_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.pstore)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A kernel log pstore kept from the last boot (`dmesg-*`) that holds
    /// a panic: the machine restarted without selfheal asking.
    fn panic_from_pstore(&self, files: &[String]) -> Option<Event> {
        let dmesg: Vec<&String> = files.iter().filter(|f| f.starts_with("dmesg-")).collect();
        let panic = dmesg.iter().find_map(|f| {
            let text = fs::read_to_string(self.pstore.join(f)).ok()?;
            text.lines()
                .find(|l| l.contains("Kernel panic") || l.contains("Oops"))
                .map(|l| (f.to_string(), l.trim().to_string()))
        })?;
        Some(
            Event::now(
                EventKind::Restart,
                Severity::Critical,
                Source::Kmsg,
                format!(
                    "the last boot ended in a kernel panic (pstore {}): {}",
                    panic.0, panic.1
                ),
            )
            .with_details_of(&PanicDetails {
                cause: "kernel_panic",
                pstore: files,
                line: &panic.1,
            }),
        )
    }
}

/// One line for pstore and EFI: the record, cut to [`SMALL_COPY`] bytes.
fn small_copy(rec: &RestartRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec(&SmallCopy {
        class: rec.class.as_str(),
        measurement: &rec.measurement,
        requested_unix_ms: rec.requested_unix_ms,
        selfheal_restart: &rec.incident_id,
    })
    .unwrap_or_default();
    v.truncate(SMALL_COPY - 1);
    v.push(b'\n');
    v
}

/// `details` of the `restart` event the next start writes about a restart
/// selfheal asked for.
#[derive(Debug, Serialize)]
struct RestartDetails<'a> {
    /// The incident the restart was for.
    incident: RestartIncident<'a>,
    /// When the restart was asked for, ms since the epoch.
    requested_unix_ms: i64,
    /// The boot that asked.
    previous_boot_id: &'a str,
    /// This boot.
    boot_id: &'a str,
    /// The restart methods, in the order they were to be tried.
    methods: &'a [String],
    /// The files pstore kept from the last boot.
    pstore: &'a [String],
    /// Where the record now is (`restart-last.json`).
    record: PathBuf,
    /// Seconds from the request to this start; absent when this is the
    /// boot that asked (the restart did not happen).
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds_since_request: Option<f64>,
}

/// `details.incident` of a `restart` event.
#[derive(Debug, Serialize)]
struct RestartIncident<'a> {
    /// The incident id.
    id: &'a str,
    /// The diagnosis class.
    class: &'static str,
    /// The symptom's stable name.
    symptom: &'a str,
    /// What the diagnosis measured.
    measurement: &'a str,
    /// The symptom as measured just before the restart.
    recheck: &'a str,
    /// When the diagnosis measured it, ms since the epoch.
    diagnosed_unix_ms: i64,
}

/// `details` of the `restart` event about a kernel panic pstore kept.
#[derive(Debug, Serialize)]
struct PanicDetails<'a> {
    /// Always `kernel_panic`.
    cause: &'static str,
    /// The files pstore kept.
    pstore: &'a [String],
    /// The panic line.
    line: &'a str,
}

/// The pstore and EFI copy of a restart record. Written straight to bytes,
/// so the fields stay in the sorted order the copies always had (the cut
/// at [`SMALL_COPY`] bytes falls in the same place).
#[derive(Debug, Serialize)]
struct SmallCopy<'a> {
    class: &'static str,
    measurement: &'a str,
    requested_unix_ms: i64,
    selfheal_restart: &'a str,
}

/// Writes `data` to `path` through a temporary file, fsyncing the file and
/// then the directory, so the file is either the old or the new one.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

fn append_durably(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line)?;
    f.sync_all()?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// An efivarfs file: 4 bytes of attributes (non-volatile, boot and runtime
/// access), then the data. Replaced, never accumulated (NVRAM is small).
fn write_efi_variable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    const ATTRIBUTES: u32 = 0x1 | 0x2 | 0x4;
    let _ = fs::remove_file(path);
    let mut body = ATTRIBUTES.to_le_bytes().to_vec();
    body.extend_from_slice(data);
    let mut f = OpenOptions::new().create_new(true).write(true).open(path)?;
    f.write_all(&body)
}

/// `/proc/sys/kernel/random/boot_id` under `proc_root`: names this boot.
pub fn boot_id(proc_root: &Path) -> String {
    fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(boot: &str, at: i64) -> RestartRecord {
        RestartRecord {
            incident_id: format!("{boot}-{at}"),
            class: Class::KernelStall,
            culprit: Culprit {
                cpu: Some(1),
                ..Culprit::default()
            },
            symptom: "cpu_stalled".into(),
            measurement: "kernel_stall: cpu 1 makes no scheduling progress".into(),
            recheck: "cpu 1 stalled for 10200 ms".into(),
            diagnosed_unix_ms: at - 10_000,
            requested_unix_ms: at,
            boot_id: boot.into(),
            methods: vec!["kexec".into(), "reboot".into()],
            selfheal_version: "test".into(),
        }
    }

    fn store(dir: &Path) -> RestartStore {
        fs::create_dir_all(dir.join("dev")).unwrap();
        File::create(dir.join("dev/pmsg0")).unwrap();
        fs::create_dir_all(dir.join("efivars")).unwrap();
        fs::create_dir_all(dir.join("pstore")).unwrap();
        RestartStore::with_roots(
            &dir.join("state"),
            &dir.join("dev/pmsg0"),
            &dir.join("efivars"),
            &dir.join("pstore"),
        )
    }

    #[test]
    fn a_record_is_written_everywhere_and_reported_once_by_the_next_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let rec = record("boot-a", 1_000_000);
        let w = s.write(&rec, true, true).unwrap();
        assert_eq!(w.files.len(), 4, "{w:?}");
        assert!(w.notes.is_empty(), "{w:?}");
        let pmsg = fs::read_to_string(tmp.path().join("dev/pmsg0")).unwrap();
        assert!(
            pmsg.contains("boot-a-1000000") && pmsg.ends_with('\n'),
            "{pmsg}"
        );
        let efi = fs::read(tmp.path().join("efivars").join(EFI_VARIABLE)).unwrap();
        assert_eq!(&efi[..4], &7u32.to_le_bytes());
        // A second record replaces the EFI variable, never adds one.
        s.write(&record("boot-a", 1_000_500), false, true).unwrap();
        assert_eq!(fs::read_dir(tmp.path().join("efivars")).unwrap().count(), 1);
        assert_eq!(s.history().len(), 2);

        // The next boot: a `restart` event naming the incident, once.
        let now = std::time::UNIX_EPOCH + Duration::from_millis(1_030_500);
        let e = s.on_start("boot-b", now).unwrap();
        assert_eq!(e.kind, EventKind::Restart);
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.details["incident"]["id"], "boot-a-1000500");
        assert_eq!(e.details["incident"]["class"], "kernel_stall");
        assert_eq!(e.details["previous_boot_id"], "boot-a");
        assert_eq!(e.details["seconds_since_request"], 30.0);
        assert_eq!(e.culprit.unwrap().cpu, Some(1));
        assert!(s.on_start("boot-b", now).is_none(), "reported once");
        assert!(s.dir().join(LAST).is_file());
    }

    #[test]
    fn a_restart_that_did_not_happen_is_said_so() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.write(&record("boot-a", 5_000), false, false).unwrap();
        let e = s.on_start("boot-a", SystemTime::now()).unwrap();
        assert_eq!(e.severity, Severity::Warning);
        assert!(e.message.contains("did not happen"), "{}", e.message);
    }

    #[test]
    fn the_history_counts_restarts_within_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let hour = 3_600_000;
        for at in [hour, 20 * hour, 24 * hour] {
            s.write(&record("b", at), false, false).unwrap();
        }
        fs::write(
            s.dir().join(HISTORY),
            fs::read_to_string(s.dir().join(HISTORY)).unwrap() + "garbage\n",
        )
        .unwrap();
        let now = std::time::UNIX_EPOCH + Duration::from_millis((25 * hour + 1) as u64);
        assert_eq!(
            s.restarts_within(Duration::from_secs(24 * 3600), now).len(),
            2
        );
        assert_eq!(
            s.restarts_within(Duration::from_secs(7 * 24 * 3600), now)
                .len(),
            3
        );
    }

    #[test]
    fn missing_stores_are_notes_and_an_unwritable_dir_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = RestartStore::with_roots(
            &tmp.path().join("state"),
            &tmp.path().join("no-pmsg"),
            &tmp.path().join("no-efivars"),
            &tmp.path().join("no-pstore"),
        );
        let notes = s.capabilities(true, true);
        assert!(
            notes.iter().any(|n| n.contains("CONFIG_PSTORE_PMSG")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("efivarfs")), "{notes:?}");
        let w = s.write(&record("b", 1), true, true).unwrap();
        assert_eq!(w.files.len(), 2);
        assert_eq!(w.notes.len(), 2, "{w:?}");
        fs::write(tmp.path().join("file"), "").unwrap();
        let bad = RestartStore::new(&tmp.path().join("file/state"));
        let err = bad
            .write(&record("b", 1), false, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state_dir") && err.contains("file/state"),
            "{err}"
        );
    }

    #[test]
    fn a_kernel_panic_kept_by_pstore_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        assert!(s.on_start("b", SystemTime::now()).is_none());
        fs::write(
            tmp.path().join("pstore/dmesg-ramoops-0"),
            "Panic#1 Part1\n<0>[  12.3] Kernel panic - not syncing: softlockup: hung tasks\n",
        )
        .unwrap();
        let e = s.on_start("b", SystemTime::now()).unwrap();
        assert_eq!(e.details["cause"], "kernel_panic");
        assert!(e.message.contains("softlockup"), "{}", e.message);
    }

    /// The `restart` events and the small copy carry exactly the documents
    /// the old `json!` literals built.
    #[test]
    fn restart_details_match_the_documented_json() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let rec = record("boot-a", 1_000_000);
        assert_eq!(
            String::from_utf8(small_copy(&rec)).unwrap(),
            "{\"class\":\"kernel_stall\",\"measurement\":\"kernel_stall: cpu 1 makes no \
             scheduling progress\",\"requested_unix_ms\":1000000,\"selfheal_restart\":\
             \"boot-a-1000000\"}\n"
        );
        s.write(&rec, false, false).unwrap();
        let now = std::time::UNIX_EPOCH + Duration::from_millis(1_002_500);
        let e = s.on_start("boot-b", now).unwrap();
        let expected = |extra: Option<(&str, serde_json::Value)>, boot: &str| {
            let mut v = serde_json::json!({
                "incident": {
                    "id": "boot-a-1000000",
                    "class": "kernel_stall",
                    "symptom": "cpu_stalled",
                    "measurement": "kernel_stall: cpu 1 makes no scheduling progress",
                    "recheck": "cpu 1 stalled for 10200 ms",
                    "diagnosed_unix_ms": 990_000,
                },
                "requested_unix_ms": 1_000_000,
                "previous_boot_id": "boot-a",
                "boot_id": boot,
                "methods": ["kexec", "reboot"],
                "pstore": [],
                "record": s.dir().join(LAST).to_str().unwrap(),
            });
            if let Some((k, x)) = extra {
                v[k] = x;
            }
            v
        };
        assert_eq!(
            e.details,
            expected(
                Some(("seconds_since_request", serde_json::json!(2.5))),
                "boot-b"
            )
        );
        // The same boot: no `seconds_since_request` key at all.
        s.write(&rec, false, false).unwrap();
        let e = s.on_start("boot-a", now).unwrap();
        assert_eq!(e.details, expected(None, "boot-a"));

        fs::write(
            tmp.path().join("pstore/dmesg-ramoops-0"),
            "<0>[  12.3] Kernel panic - not syncing: x\n",
        )
        .unwrap();
        let e = s.on_start("b", SystemTime::now()).unwrap();
        assert_eq!(
            e.details,
            serde_json::json!({
                "cause": "kernel_panic",
                "pstore": ["dmesg-ramoops-0"],
                "line": "<0>[  12.3] Kernel panic - not syncing: x",
            })
        );
    }
}
