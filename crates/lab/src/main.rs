//! `selfheal-lab`: prepares the hang lab on a Debian host and runs it.
#![forbid(unsafe_code)]

mod runner;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use selfheal_lab::scenario::{FaultClass, KernelProfile};

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
    /// Re-score an existing output directory from its raw serial logs.
    Report {
        /// The directory a `run` wrote.
        #[arg(long)]
        out: PathBuf,
    },
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
}

/// Which kernel detector thresholds to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profiles {
    /// Tightest thresholds only (fast).
    Tight,
    /// Debian defaults only (slow: hung task needs up to 240 s).
    Default,
    /// Alternate between both across a class's runs.
    Both,
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
    /// Kernel detector thresholds (default: tight with --quick, else both).
    #[arg(long, value_enum)]
    profiles: Option<Profiles>,
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
        Cmd::Prepare(c) => runner::prepare(&c.into()).map(|_| ()),
        Cmd::Run(r) => {
            let quick = r.quick;
            let profiles = match r.profiles.unwrap_or(if quick {
                Profiles::Tight
            } else {
                Profiles::Both
            }) {
                Profiles::Tight => vec![KernelProfile::Tight],
                Profiles::Default => vec![KernelProfile::Default],
                Profiles::Both => vec![KernelProfile::Tight, KernelProfile::Default],
            };
            let opts = runner::RunOptions {
                prep: r.common.clone().into(),
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
        Cmd::Report { out } => runner::rescore(&out),
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

impl From<CommonArgs> for runner::PrepOptions {
    fn from(c: CommonArgs) -> runner::PrepOptions {
        runner::PrepOptions {
            selfheal: match (c.selfheal, c.placeholder) {
                (Some(p), _) => selfheal_lab::build::SelfhealSource::Path(p),
                (None, true) => selfheal_lab::build::SelfhealSource::Placeholder,
                (None, false) => selfheal_lab::build::SelfhealSource::Workspace,
            },
            pin: selfheal_lab::setup::KernelPin {
                abi: c.kernel_abi,
                version: c.kernel_version,
            },
        }
    }
}
