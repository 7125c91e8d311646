//! Orchestration for the CLI: prepare the host, build the initramfs, run
//! every scenario with a progress bar, and write the report.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use selfheal_lab::analyze::{self, QemuExit, RawRun, RunRecord};
use selfheal_lab::build::{self, Assets, InitramfsInputs, SelfhealSource};
use selfheal_lab::progress::Progress;
use selfheal_lab::qemu::{self, Accel, Guest, VmHost, LOG_FILES};
use selfheal_lab::report::{self, Meta};
use selfheal_lab::scenario::{
    self, FaultClass, KernelProfile, PlanOptions, Rng, Scenario, Workload,
};
use selfheal_lab::setup::{self, KernelPin, KernelTree};
use selfheal_lab::{labconfig, logs};

/// What `prepare` needs.
#[derive(Debug, Clone)]
pub struct PrepOptions {
    /// Where selfheal comes from.
    pub selfheal: SelfhealSource,
    /// The guest kernel.
    pub pin: KernelPin,
    /// The kernel's own modules the guest loads (see [`guest_modules`]).
    pub kernel_modules: Vec<&'static str>,
}

/// The guest kernel's modules `profiles` need: the i6300esb watchdog
/// driver, and virtio-blk with ext4 for the state disk of the profiles
/// that follow reboots.
pub fn guest_modules(profiles: &[KernelProfile]) -> Vec<&'static str> {
    let mut m = Vec::new();
    if profiles.iter().any(|p| p.watchdog_device()) {
        m.push("i6300esb");
    }
    if profiles.iter().any(|p| p.follows_reboot()) {
        // ext4 needs the crc32c hash even for an ext2 volume, and loads it
        // through the crypto API (modprobe), which this initramfs lacks.
        m.extend(["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]);
    }
    if profiles.iter().any(|p| p.vm_rollback()) {
        // The host's `selfheal vm`: the guest link and the trigger port
        // (virtio-serial), and the pvpanic device it sees panics through.
        for x in ["virtio_pci", "virtio_console", "pvpanic_mmio"] {
            if !m.contains(&x) {
                m.push(x);
            }
        }
    }
    m
}

/// Everything built and verified, ready to assemble an initramfs.
#[derive(Debug, Clone)]
pub struct Prepared {
    cache: PathBuf,
    kernel: KernelTree,
    module: PathBuf,
    labtool: PathBuf,
    busybox: PathBuf,
    selfheal: PathBuf,
    assets: Assets,
    features: Vec<(String, String)>,
    notes: Vec<String>,
    kernel_modules: Vec<PathBuf>,
}

fn step<T, E: std::error::Error + Send + Sync + 'static>(name: &str, r: Result<T, E>) -> Result<T> {
    r.with_context(|| format!("lab setup step `{name}` failed"))
}

/// Installs host packages, fetches the kernel, builds module, helper and selfheal.
pub fn prepare(p: &PrepOptions) -> Result<Prepared> {
    let cache = setup::cache_dir();
    let mut notes = Vec::new();
    let mut log = |m: &str| {
        eprintln!("lab: {m}");
        notes.push(m.to_string());
    };
    step("host packages", setup::ensure_host_packages(&mut log))?;
    let kernel = step(
        "kernel download",
        setup::ensure_kernel(&cache, &p.pin, &mut log),
    )?;
    let config_text = fs::read_to_string(&kernel.config)
        .with_context(|| format!("reading {}", kernel.config.display()))?;
    let features = setup::kernel_features(&config_text);
    let kernel_modules = selfheal_lab::modules::resolve(&kernel.modules, &p.kernel_modules)
        .context("lab setup step `guest kernel modules` failed")?;
    let assets = Assets::locate();
    if !assets.module_src.join("lab_fault.c").is_file() {
        bail!(
            "lab assets not found under {} (expected lab/module and lab/guest); set SELFHEAL_LAB_ASSETS to the selfheal checkout",
            assets.workspace.display()
        );
    }
    let module = step(
        "kernel module build",
        build::build_module(&cache, &assets, &kernel),
    )?;
    let labtool = step("guest helper build", build::build_labtool(&cache, &assets))?;
    let busybox = PathBuf::from("/bin/busybox");
    if step("busybox check", build::is_dynamic_elf(&busybox))? {
        bail!(
            "{} is dynamically linked; install busybox-static",
            busybox.display()
        );
    }
    let selfheal = step(
        "selfheal binary",
        build::selfheal_binary(&assets, &p.selfheal, &mut log),
    )?;
    let selfheal = step("strip selfheal", build::stripped_copy(&cache, &selfheal))?;
    eprintln!(
        "lab: ready: kernel {} ({}), module {}, selfheal {}",
        kernel.release,
        p.pin.version,
        module.display(),
        selfheal.display()
    );
    Ok(Prepared {
        cache,
        kernel,
        module,
        labtool,
        busybox,
        selfheal,
        assets,
        features,
        notes,
        kernel_modules,
    })
}

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Preparation.
    pub prep: PrepOptions,
    /// Injections per class.
    pub runs: u32,
    /// Classes.
    pub classes: Vec<FaultClass>,
    /// Kernel threshold profiles.
    pub profiles: Vec<KernelProfile>,
    /// Fault-free pairs per workload.
    pub fault_free_runs: u32,
    /// Config under test.
    pub config: Option<PathBuf>,
    /// selfheal --dry-run.
    pub dry_run: bool,
    /// Forced accelerator, or None for auto.
    pub accel: Option<Accel>,
    /// Guest vCPUs.
    pub guest_cpus: u32,
    /// Guest memory.
    pub guest_mem_mb: u32,
    /// Plan seed.
    pub seed: Option<u64>,
    /// Output directory.
    pub out: PathBuf,
    /// Seconds of in-guest `selfheal calibrate` before the runs (0 = none).
    pub calibrate_s: u64,
    /// --quick.
    pub quick: bool,
    /// The command line, for the report.
    pub command: String,
}

/// What each run directory records about how QEMU ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunFile {
    scenario: Scenario,
    exit: QemuExit,
    host_ms: u64,
}

/// Runs the lab end to end.
pub fn run(o: &RunOptions) -> Result<()> {
    let t0 = Instant::now();
    let started_utc = utc_now();
    fs::create_dir_all(o.out.join("runs"))
        .with_context(|| format!("creating {}", o.out.display()))?;
    let prep = prepare(&o.prep)?;
    let placeholder = matches!(o.prep.selfheal, SelfhealSource::Placeholder);
    if placeholder && o.profiles.iter().any(|p| p.vm_rollback()) {
        bail!("the vm-rollback profile runs the host's `selfheal vm`: it needs selfheal, not --placeholder");
    }

    let config = o.out.join("config.toml");
    write_config(&prep, o.config.as_deref(), placeholder, &config)?;
    let config_text = fs::read_to_string(&config)?;
    let restart_config = if o.profiles.contains(&KernelProfile::Restart) && !placeholder {
        let path = o.out.join("config-restart.toml");
        fs::write(&path, labconfig::restart_config(&config_text)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    let initrd = o.out.join("initramfs.cpio");
    let inputs = InitramfsInputs {
        init: prep.assets.guest_dir.join("init"),
        busybox: prep.busybox.clone(),
        labtool: prep.labtool.clone(),
        module: prep.module.clone(),
        selfheal: prep.selfheal.clone(),
        config: config.clone(),
        restart_config,
        kernel_modules: prep.kernel_modules.clone(),
    };
    let mut initrd_sha = step("initramfs", build::build_initramfs(&inputs, &initrd))?;
    let qemu_bin = PathBuf::from("qemu-system-x86_64");
    let mut guest = Guest {
        qemu: qemu_bin,
        kernel: prep.kernel.vmlinuz.clone(),
        initrd: initrd.clone(),
        cpus: o.guest_cpus,
        mem_mb: o.guest_mem_mb,
        accel: Accel::Tcg,
    };
    let accel_note = match o.accel {
        Some(a) => format!("{} (forced)", a.name()),
        None => {
            let (a, why) = pick_accel(&prep.cache, &guest, &o.out)?;
            guest.accel = a;
            why
        }
    };
    if let Some(a) = o.accel {
        guest.accel = a;
    }
    eprintln!("lab: accelerator: {accel_note}");
    let mut config_note = match (&o.config, placeholder) {
        (Some(p), _) => p.display().to_string(),
        (None, true) => "none (placeholder)".into(),
        (None, false) => "`selfheal config default`".into(),
    };
    if o.calibrate_s > 0 && !placeholder {
        calibrate(&guest, o, &config)?;
        initrd_sha = step(
            "initramfs (calibrated config)",
            build::build_initramfs(&inputs, &initrd),
        )?;
        config_note = format!(
            "`selfheal calibrate --duration {}s` in the guest under the mix workload, on top of {config_note}",
            o.calibrate_s
        );
    }

    let seed = o.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let plan = scenario::plan(
        &PlanOptions {
            classes: o.classes.clone(),
            runs: o.runs,
            profiles: o.profiles.clone(),
            fault_free_runs: o.fault_free_runs,
            selfheal_window_s: if o.quick { 8 } else { 15 },
            fault_free_s: if o.quick { 12 } else { 30 },
            inject_range_ms: (3000, 6000),
            dry_run: o.dry_run,
            restart_grace_s: labconfig::restart_graces(&config_text),
        },
        &mut Rng::new(seed),
    );
    let plan_path = o.out.join("plan.json");
    fs::write(&plan_path, serde_json::to_string_pretty(&plan)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;

    let selfheal_sha = setup::sha256_file(&prep.selfheal)?;
    let mut meta = Meta {
        started_utc,
        command: o.command.clone(),
        duration_s: 0.0,
        seed,
        kernel: format!("{} (Debian {})", prep.kernel.release, o.prep.pin.version),
        accel: format!("QEMU accel {accel_note}"),
        guest: format!("{} vCPUs, {} MiB", o.guest_cpus, o.guest_mem_mb),
        selfheal: format!(
            "{} (sha256 {})",
            prep.selfheal.display(),
            &selfheal_sha[..16]
        ),
        config: format!(
            "{config_note} (sha256 {})",
            &setup::sha256_file(&config)?[..16]
        ),
        placeholder,
        kernel_features: prep.features.clone(),
        notes: prep.notes.clone(),
    };
    meta.notes
        .push(format!("initramfs sha256 {}", &initrd_sha[..16]));
    if o.classes.iter().any(|c| c.stalls_every_cpu(o.guest_cpus)) {
        meta.notes.push(format!(
            "spin_abba stalls CPUs 0 and 1; with {} guest CPUs none is left for a user-space detector",
            o.guest_cpus
        ));
    }
    write_json(&o.out.join("meta.json"), &meta)?;

    let mut progress = Progress::new(plan.len());
    let mut records = Vec::new();
    for s in &plan {
        progress.start(&describe(s));
        let dir = o.out.join("runs").join(&s.id);
        let end = if s.profile.vm_rollback() {
            guest.run_vm(
                s,
                &dir,
                &VmHost {
                    selfheal: prep.selfheal.clone(),
                },
            )
        } else {
            guest.run(s, &dir)
        }
        .with_context(|| format!("running scenario {}", s.id))?;
        write_json(
            &dir.join("run.json"),
            &RunFile {
                scenario: s.clone(),
                exit: end.exit,
                host_ms: end.host_ms,
            },
        )?;
        let rec = score(&o.out, s, end.exit, end.host_ms)?;
        progress.finish(&one_line(&rec));
        // Scored: the raw logs are kept compressed, the disk is not kept.
        let _ = fs::remove_file(dir.join(qemu::STATE_DISK));
        for f in LOG_FILES.iter().chain([&qemu::HOST_MARKS]) {
            logs::compress(&dir, f)?;
        }
        if s.profile.vm_rollback() {
            for f in qemu::VM_FILES {
                logs::compress(&dir, f)?;
            }
        }
        records.push(rec);
    }
    meta.duration_s = t0.elapsed().as_secs_f64();
    // Rewritten with the duration so `selfheal-lab report` keeps it.
    write_json(&o.out.join("meta.json"), &meta)?;
    write_report(&o.out, meta, records)?;
    eprintln!(
        "lab: done in {}; report: {}",
        indicatif::HumanDuration(t0.elapsed()),
        o.out.join("report.md").display()
    );
    Ok(())
}

/// Boots the calibration guest and replaces `config` with its result,
/// keeping the original beside it as config-base.toml.
fn calibrate(guest: &Guest, o: &RunOptions, config: &Path) -> Result<()> {
    let s = Scenario::calibration(Workload::Mix, o.calibrate_s);
    let dir = o.out.join("calibration");
    eprintln!(
        "lab: calibrating selfheal in the guest for {} s under the mix workload",
        o.calibrate_s
    );
    let end = guest
        .run(&s, &dir)
        .context("running the calibration guest")?;
    let text = logs::read_log(&dir, LOG_FILES[2]).replace('\r', "");
    if end.exit != QemuExit::Exited || !text.contains("[[rule]]") {
        bail!(
            "calibration produced no rules (QEMU {:?}); see {}/selfheal-stderr.log",
            end.exit,
            dir.display()
        );
    }
    fs::copy(config, o.out.join("config-base.toml"))?;
    fs::write(config, text)?;
    Ok(())
}

/// Re-scores every run directory under `out` and rewrites the report,
/// with the runs of each `pool` directory (of `pool_profiles` only, when
/// given) scored by the same judge and listed as `<dir name>/<id>`.
pub fn rescore(out: &Path, pool: &[PathBuf], pool_profiles: &[KernelProfile]) -> Result<()> {
    let mut meta: Meta = serde_json::from_str(
        &fs::read_to_string(out.join("meta.json"))
            .with_context(|| format!("reading {}/meta.json", out.display()))?,
    )?;
    let mut records = scored_runs(out)?;
    for dir in pool {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a directory name", dir.display()))?;
        // Links from out's report: a sibling directory by its name, else
        // as given.
        let link = match (dir.parent(), out.parent()) {
            (Some(a), Some(b)) if fs::canonicalize(a).ok() == fs::canonicalize(b).ok() => {
                format!("../{name}")
            }
            _ => dir.display().to_string(),
        };
        let mut n = 0;
        for mut rec in scored_runs(dir)? {
            if !pool_profiles.is_empty() && !pool_profiles.contains(&rec.scenario.profile) {
                continue;
            }
            rec.scenario.id = format!("{name}/{}", rec.scenario.id);
            rec.log_dir = format!("{link}/{}", rec.log_dir);
            records.push(rec);
            n += 1;
        }
        let their: Option<Meta> = fs::read_to_string(dir.join("meta.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        meta.notes.push(format!(
            "pooled: {n} run(s) of {} (profiles: {}; started {}, selfheal {})",
            dir.display(),
            if pool_profiles.is_empty() {
                "all".to_string()
            } else {
                pool_profiles
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            their.as_ref().map_or("?", |m| m.started_utc.as_str()),
            their.as_ref().map_or("?", |m| m.selfheal.as_str()),
        ));
    }
    write_report(out, meta, records)
}

/// Every run of an output directory that has its run.json, scored.
fn scored_runs(dir: &Path) -> Result<Vec<RunRecord>> {
    let plan: Vec<Scenario> = serde_json::from_str(
        &fs::read_to_string(dir.join("plan.json"))
            .with_context(|| format!("reading {}/plan.json", dir.display()))?,
    )?;
    let mut records = Vec::new();
    for s in &plan {
        let Ok(text) = fs::read_to_string(dir.join("runs").join(&s.id).join("run.json")) else {
            continue;
        };
        let rf: RunFile = serde_json::from_str(&text)?;
        records.push(score(dir, &rf.scenario, rf.exit, rf.host_ms)?);
    }
    Ok(records)
}

fn score(out: &Path, s: &Scenario, exit: QemuExit, host_ms: u64) -> Result<RunRecord> {
    let dir = out.join("runs").join(&s.id);
    let read = |f: &str| logs::read_log(&dir, f);
    let (console, lab, events) = (read(LOG_FILES[0]), read(LOG_FILES[1]), read(LOG_FILES[2]));
    let host_marks = read(qemu::HOST_MARKS);
    let mut rec = analyze::analyze(
        s,
        &format!("runs/{}", s.id),
        RawRun {
            console: &console,
            lab: &lab,
            events: &events,
            host_marks: &host_marks,
            qemu_exit: exit,
            host_ms,
        },
    );
    if s.profile.vm_rollback() {
        let (vm_host, vm_events) = (read(qemu::VM_HOST), read(qemu::VM_EVENTS));
        rec.vm = Some(analyze::vm::analyze_vm(&rec, &vm_host, &vm_events));
    }
    Ok(rec)
}

fn write_report(out: &Path, meta: Meta, records: Vec<RunRecord>) -> Result<()> {
    let report = report::summarize(meta, records);
    write_json(&out.join("results.json"), &report)?;
    fs::write(out.join("report.md"), report::markdown(&report))?;
    fs::write(out.join("latency.svg"), selfheal_lab::plot::svg(&report))?;
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn write_config(
    prep: &Prepared,
    given: Option<&Path>,
    placeholder: bool,
    dst: &Path,
) -> Result<()> {
    if let Some(src) = given {
        fs::copy(src, dst).with_context(|| format!("copying config {}", src.display()))?;
        return Ok(());
    }
    if placeholder {
        fs::write(dst, "# placeholder run: no selfheal config\n")?;
        return Ok(());
    }
    let out = Command::new(&prep.selfheal)
        .args(["config", "default"])
        .output()
        .with_context(|| format!("running `{} config default`", prep.selfheal.display()))?;
    if !out.status.success() {
        bail!(
            "`{} config default` failed ({}): {}",
            prep.selfheal.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::write(dst, &out.stdout)?;
    Ok(())
}

/// Picks the accelerator, reusing a verdict cached for this QEMU binary.
fn pick_accel(cache: &Path, guest: &Guest, out: &Path) -> Result<(Accel, String)> {
    let verdict = cache.join("accel-verdict.txt");
    if let Ok(text) = fs::read_to_string(&verdict) {
        if let Some((name, why)) = text.trim().split_once(' ') {
            let a = if name == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
            if a == Accel::Tcg || qemu::kvm_usable() {
                return Ok((a, format!("{why} (cached in {})", verdict.display())));
            }
        }
    }
    let probe_scenario = Scenario {
        id: "accel-probe".into(),
        class: None,
        workload: Workload::Idle,
        profile: KernelProfile::Default,
        selfheal: false,
        dry_run: true,
        inject_ms: 0,
        observe_s: 0,
        workload_s: 0,
        fault_cpu: 1,
        calibrate_s: 0,
        second_observe_s: 0,
        vm_checkpoints_off: false,
    };
    let (a, why) = qemu::choose_accel(|accel| {
        let g = Guest {
            accel,
            ..guest.clone()
        };
        let dir = out.join("accel-probe").join(accel.name());
        let started = Instant::now();
        let end = g.run(&probe_scenario, &dir).ok()?;
        let ok = end.exit == QemuExit::Exited
            && fs::read_to_string(dir.join(LOG_FILES[1])).is_ok_and(|t| t.contains("LAB END"));
        ok.then(|| started.elapsed())
            .filter(|d| *d < Duration::from_secs(120))
    });
    let _ = fs::write(&verdict, format!("{} {why}\n", a.name()));
    Ok((a, why))
}

fn describe(s: &Scenario) -> String {
    match s.class {
        Some(c) => format!(
            "{} ({}, {} thresholds) — {}",
            s.id,
            s.workload.name(),
            s.profile.name(),
            c.describe()
        ),
        None if s.selfheal => format!("{} (fault-free, with selfheal)", s.id),
        None => format!("{} (fault-free baseline)", s.id),
    }
}

fn one_line(r: &RunRecord) -> String {
    let sh = match (r.scenario.class, r.selfheal.detect_ms) {
        (None, _) => format!("selfheal false alarms {}", r.selfheal.false_alarms),
        (Some(_), Some(ms)) => format!(
            "selfheal {ms} ms ({})",
            r.selfheal.diagnosis.as_deref().unwrap_or("no diagnosis")
        ),
        (Some(_), None) => "selfheal: not detected".into(),
    };
    let k: Vec<String> = r
        .kernel
        .iter()
        .map(|(k, h)| format!("{k} {:.1} s", h.latency_ms as f64 / 1000.0))
        .collect();
    let ops = r
        .ops_per_s()
        .map_or(String::new(), |v| format!(", {v:.1} ops/s"));
    let errs = if r.errors.is_empty() {
        String::new()
    } else {
        format!(" [{}]", r.errors.join("; "))
    };
    format!(
        "{}: {sh}; kernel: {}; {:?}{ops}{errs}",
        r.scenario.id,
        if k.is_empty() {
            "none".into()
        } else {
            k.join(", ")
        },
        r.outcome
    )
}

/// ISO-8601 UTC timestamp without a date library.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant), valid for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
