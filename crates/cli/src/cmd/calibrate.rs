//! `selfheal calibrate`: learn this machine's normal ranges.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use selfheal_detect::calibrate::{render_fragment, Calibrator, DEFAULT_MARGIN};
use selfheal_sampler::{ReaderOptions, Sampler};

/// Options of `selfheal calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// How long to sample. Run it while the machine does its normal, busiest
    /// legitimate work.
    #[arg(long, short = 'd', default_value = "60s", value_name = "DURATION")]
    pub duration: String,
    /// Write the rule fragment here (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Calibrate the rules of this config (default: the built-in rules).
    #[arg(long, short = 'c', value_name = "FILE", env = "SELFHEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Headroom beyond the observed extremes, in percent.
    #[arg(long, default_value_t = DEFAULT_MARGIN * 100.0, value_name = "PERCENT")]
    pub margin: f64,
}

/// Samples for the duration and writes calibrated rules.
pub fn run(args: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let duration = selfheal_config::parse_duration(&args.duration)
        .map_err(|e| super::usage(format!("--duration: {e}")))?;
    if duration < Duration::from_secs(1) {
        return Err(super::usage("--duration: calibrate for at least 1s (60s or more under representative load is better)"));
    }
    if !(0.0..=1000.0).contains(&args.margin) {
        return Err(super::usage(
            "--margin: use a percentage between 0 and 1000",
        ));
    }
    let config = super::load_config(args.config.as_deref())?;
    let rules = config.effective_rules();
    let period = config.sampler.period.get();
    let mut sampler = Sampler::with_options(
        &config.sampler.proc_root,
        ReaderOptions {
            sys_root: Some(config.sampler.sys_root.clone()),
            slow_every: config.sampler.slow_every,
        },
    )?;
    // Calibration wants every sample's CPU shares, not the bounds an idle
    // read gives.
    sampler.disable_idle_reads();
    for n in sampler.notes() {
        eprintln!("note: {n}");
    }
    let mut sample = sampler.new_sample();
    let mut cal = Calibrator::new();
    let start = Instant::now();
    let mut next = start + period;
    let mut last_report = start;
    eprintln!(
        "calibrating for {} (sampling every {}); keep the machine under its normal load…",
        humantime::format_duration(duration),
        config.sampler.period
    );
    while start.elapsed() < duration {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += period;
        sampler.sample(&mut sample)?;
        cal.add(&sample);
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprint!(
                "\r  {:>3.0}% ({} samples)",
                100.0 * start.elapsed().as_secs_f64() / duration.as_secs_f64(),
                cal.samples()
            );
            let _ = std::io::stderr().flush();
            last_report = Instant::now();
        }
    }
    eprintln!("\r  100% ({} samples)        ", cal.samples());
    let calibrated = cal.calibrate(&rules, args.margin / 100.0);
    let header = format!(
        "selfheal calibration: {} samples over {} every {} on this machine ({} CPU slots), taken {}.\n\
         Thresholds were widened to cover what this machine did under the load it had while sampling,\n\
         plus {:.0}% headroom; they are never made more sensitive than the defaults.\n\
         Use it from your config with: include = [\"{}\"]  (or run `selfheal watch --config` on this file).",
        cal.samples(),
        humantime::format_duration(Duration::from_secs(duration.as_secs())),
        config.sampler.period,
        sampler.cpus(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        args.margin,
        args.out
            .as_ref()
            .map_or("calibrated.toml".to_string(), |p| p.display().to_string()),
    );
    let text = render_fragment(&calibrated, &cal.summary(), &header);
    let changed: Vec<String> = calibrated
        .iter()
        .flat_map(|c| {
            c.changes
                .iter()
                .filter(|ch| ch.old != ch.new)
                .map(move |ch| format!("{}: {} {} → {}", c.rule.name, ch.metric, ch.old, ch.new))
        })
        .collect();
    match &args.out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    if changed.is_empty() {
        eprintln!("no threshold needed widening: the defaults cover this load");
    } else {
        eprintln!("widened {} threshold(s):", changed.len());
        for c in changed {
            eprintln!("  {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
