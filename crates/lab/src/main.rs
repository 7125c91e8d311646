//! `selfheal-lab`: prepares the hang lab on a Debian host and runs it.
#![forbid(unsafe_code)]

mod runner;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use selfheal_lab::availability as av;
use selfheal_lab::profile::{self, KernelProfile};
use selfheal_lab::scenario::FaultClass;

/// Inject real kernel and system hangs into a QEMU guest and measure selfheal
/// against the kernel's own detectors. Cache: $SELFHEAL_LAB_CACHE or
/// ~/.cache/selfheal-lab.
#[derive(Debug, Parser)]
#[command(name = "selfheal-lab", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install host packages, fetch the kernel, build the module and guest helper.
    Prepare(CommonArgs),
    /// Run injections and fault-free runs, then write report.md, results.json, latency.svg.
    Run(RunArgs),
    /// Re-score an existing output directory from its raw serial logs
    /// (plain, xz or gzipped).
    Report {
        /// The directory a `run` wrote.
        #[arg(long)]
        out: PathBuf,
        /// Pool the runs of another output directory of the same guest into
        /// this report (repeatable): scored by this judge, listed as
        /// `<dir>/<id>`, their log links pointing into it. The report's
        /// header names each directory pooled and how many runs it gave.
        #[arg(long, value_name = "DIR")]
        pool: Vec<PathBuf>,
        /// Only the pooled runs of these profiles (comma-separated; default
        /// every profile): e.g. the kernel's own `kernel-panic` runs of
        /// earlier sessions, which no change to selfheal affects.
        #[arg(long, value_delimiter = ',', value_name = "PROFILES")]
        pool_profiles: Vec<String>,
    },
    /// Steady-state availability and downtime per year from a run's
    /// measurements, per profile, for a fault rate and class mix
    /// (docs/availability.md): prints the table, writes availability.svg.
    Availability(AvailabilityArgs),
    /// List the fault classes.
    Classes,
}

/// Options shared by `prepare` and `run`.
#[derive(Debug, Clone, clap::Args)]
struct CommonArgs {
    /// Use this selfheal binary (static, or its shared libraries are copied in).
    #[arg(long, conflicts_with = "placeholder")]
    selfheal: Option<PathBuf>,
    /// Use the plumbing placeholder instead of selfheal (no detection numbers).
    #[arg(long)]
    placeholder: bool,
    /// Debian kernel ABI to boot (package linux-image-<ABI>-cloud-amd64).
    #[arg(long, default_value = "6.1.0-50")]
    kernel_abi: String,
    /// Debian package version of that kernel.
    #[arg(long, default_value = "6.1.176-1")]
    kernel_version: String,
    /// Kernel flavour: `cloud-amd64` or `amd64` (default: `amd64` when a
    /// profile needs the guest's i6300esb watchdog driver, which the cloud
    /// kernel lacks; `cloud-amd64` otherwise).
    #[arg(long)]
    kernel_flavour: Option<String>,
}

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// One injection per class, tight kernel thresholds, one fault-free pair per workload.
    #[arg(long)]
    quick: bool,
    /// Injections per class (default 1 with --quick, else 20).
    #[arg(long)]
    runs: Option<u32>,
    /// Comma-separated classes (default: all; see `selfheal-lab classes`).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<FaultClass>,
    /// Comma-separated profiles, alternating across a class's runs
    /// (default: tight with --quick, else tight,default). Detection:
    /// `tight` (the kernel's tightest thresholds), `default` (Debian's;
    /// slow: hung task needs up to 240 s), `both` (= tight,default).
    /// Healing, the guest followed through restarts: `restart` (selfheal
    /// with controlled restart), `kernel-panic` (the kernel's panic
    /// settings), `none` (nothing acts).
    #[arg(long, value_delimiter = ',')]
    profiles: Vec<String>,
    /// Fault-free runs per workload, each with and without selfheal (default 1 quick, 3 full).
    #[arg(long)]
    fault_free_runs: Option<u32>,
    /// selfheal config under test (default: `selfheal config default`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// First run `selfheal calibrate` for this many seconds in a guest under the
    /// mix workload and test the calibrated config (0 = test the config as is).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    calibrate: u64,
    /// Run selfheal with --dry-run (it detects but takes no action).
    #[arg(long)]
    dry_run: bool,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Guest vCPUs (spin_abba stalls two; with more it leaves CPUs for selfheal).
    #[arg(long, default_value_t = 2)]
    guest_cpus: u32,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 512)]
    guest_mem_mb: u32,
    /// Seed for injection times (default: from the clock; recorded in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// Output directory (report.md, results.json, latency.svg, runs/<id>/ raw logs).
    #[arg(long)]
    out: PathBuf,
}

/// QEMU accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AccelArg {
    /// KVM only if a timed boot shows it is clearly faster, else TCG.
    Auto,
    /// Always TCG.
    Tcg,
    /// Always KVM.
    Kvm,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Prepare(c) => runner::prepare(&c.into_prep(&[])).map(|_| ()),
        Cmd::Run(r) => {
            let quick = r.quick;
            let mut profiles = match profile::parse_profiles(&r.profiles) {
                Ok(p) => p,
                Err(e) => bad_input(&e.to_string()),
            };
            if profiles.is_empty() {
                profiles = if quick {
                    vec![KernelProfile::Tight]
                } else {
                    vec![KernelProfile::Tight, KernelProfile::Default]
                };
            }
            let opts = runner::RunOptions {
                prep: r.common.clone().into_prep(&profiles),
                runs: r.runs.unwrap_or(if quick { 1 } else { 20 }),
                classes: if r.classes.is_empty() {
                    FaultClass::ALL.to_vec()
                } else {
                    r.classes
                },
                profiles,
                fault_free_runs: r.fault_free_runs.unwrap_or(if quick { 1 } else { 3 }),
                config: r.config,
                dry_run: r.dry_run,
                accel: match r.accel {
                    AccelArg::Auto => None,
                    AccelArg::Tcg => Some(selfheal_lab::qemu::Accel::Tcg),
                    AccelArg::Kvm => Some(selfheal_lab::qemu::Accel::Kvm),
                },
                guest_cpus: r.guest_cpus,
                guest_mem_mb: r.guest_mem_mb,
                seed: r.seed,
                out: r.out,
                calibrate_s: r.calibrate,
                quick,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            runner::run(&opts)
        }
        Cmd::Report {
            out,
            pool,
            pool_profiles,
        } => {
            let profiles = match profile::parse_profiles(&pool_profiles) {
                Ok(p) => p,
                Err(e) => bad_input(&e.to_string()),
            };
            runner::rescore(&out, &pool, &profiles)
        }
        Cmd::Availability(a) => availability(a),
        Cmd::Classes => {
            for c in FaultClass::ALL {
                println!(
                    "{:<14} {:<20} {}",
                    c.name(),
                    c.expected_diagnosis(),
                    c.describe()
                );
            }
            Ok(())
        }
    }
}

/// Bad input on the command line: the message and exit code 2.
fn bad_input(msg: &str) -> ! {
    eprintln!("selfheal-lab: {msg}");
    std::process::exit(2);
}

impl CommonArgs {
    /// Preparation for `profiles`: the kernel flavour follows what they need.
    fn into_prep(self, profiles: &[KernelProfile]) -> runner::PrepOptions {
        let flavour = self.kernel_flavour.clone().unwrap_or_else(|| {
            if profiles.iter().any(|p| p.watchdog_device()) {
                selfheal_lab::setup::FLAVOUR_GENERIC.to_string()
            } else {
                selfheal_lab::setup::FLAVOUR_CLOUD.to_string()
            }
        });
        let c = self;
        runner::PrepOptions {
            selfheal: match (c.selfheal, c.placeholder) {
                (Some(p), _) => selfheal_lab::build::SelfhealSource::Path(p),
                (None, true) => selfheal_lab::build::SelfhealSource::Placeholder,
                (None, false) => selfheal_lab::build::SelfhealSource::Workspace,
            },
            pin: selfheal_lab::setup::KernelPin {
                abi: c.kernel_abi,
                version: c.kernel_version,
                flavour,
            },
            kernel_modules: runner::guest_modules(profiles),
        }
    }
}

/// Options of `availability`.
#[derive(Debug, Clone, clap::Args)]
struct AvailabilityArgs {
    /// A run's output directory (its results.json).
    #[arg(long)]
    results: PathBuf,
    /// Faults per machine per year of uptime, all classes together (λ).
    #[arg(long, default_value_t = av::DEFAULT_FAULTS_PER_YEAR.to_string(), allow_hyphen_values = true)]
    faults_per_year: String,
    /// Class mix as class=weight pairs, comma-separated (weights are
    /// normalised; default: the fleet mix of docs/availability.md).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mix: Vec<String>,
    /// Time until someone notices a machine nothing restored (hung, or
    /// alive with the fault persisting) and restarts it (M): seconds, or
    /// a duration such as 30m.
    #[arg(long, default_value_t = av::DEFAULT_MANUAL_REPAIR_S.to_string(), allow_hyphen_values = true)]
    manual_repair: String,
    /// Time from a restart to serving again where the lab did not measure
    /// one (R: after M, and after a panic the lab did not follow): seconds,
    /// or a duration such as 2m.
    #[arg(long, default_value_t = av::DEFAULT_RESTART_S.to_string(), allow_hyphen_values = true)]
    restart_time: String,
    /// Where to write the plot (default: <results>/availability.svg).
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn availability(a: AvailabilityArgs) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| -> ! { bad_input(&e.to_string()) };
    let params = av::Params {
        faults_per_year: av::positive_rate(&a.faults_per_year).unwrap_or_else(|e| bad(&e)),
        mix: if a.mix.is_empty() {
            av::default_mix()
        } else {
            av::parse_mix(&a.mix).unwrap_or_else(|e| bad(&e))
        },
        manual_repair_s: av::parse_seconds("--manual-repair", &a.manual_repair)
            .unwrap_or_else(|e| bad(&e)),
        restart_s: av::parse_seconds("--restart-time", &a.restart_time).unwrap_or_else(|e| bad(&e)),
    };
    let report = av::load_report(&a.results).unwrap_or_else(|e| bad(&e));
    let table = av::from_report(&report, &params);
    print!("{}", av::markdown(&table, &params));
    let svg = a.svg.unwrap_or_else(|| a.results.join("availability.svg"));
    std::fs::write(&svg, av::svg(&table, &params)).map_err(|e| {
        anyhow::anyhow!(
            "writing {}: {e}; pass --svg with a writable path",
            svg.display()
        )
    })?;
    eprintln!("plot: {}", svg.display());
    Ok(())
}
