//! `selfheal status`: ask the running daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

/// Options of `selfheal status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's HTTP address (default: the config's, else 127.0.0.1:9469).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Configuration file, to find the daemon's address.
    #[arg(long, short = 'c', value_name = "FILE", env = "SELFHEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the daemon's JSON status as is.
    #[arg(long)]
    pub json: bool,
}

/// Prints the daemon's status; exits 1 when no daemon answers.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let addr: SocketAddr = match &args.listen {
        Some(a) => selfheal_config::parse_listen(a)
            .map_err(|e| super::usage(format!("--listen: {e}")))?
            .ok_or_else(|| super::usage("--listen: an address is needed"))?,
        None => config.daemon.listen.ok_or_else(|| {
            super::usage("the config disables HTTP ([daemon] listen = \"\"), so there is no daemon to ask; use `selfheal events`")
        })?,
    };
    let resp = selfheal_daemon::http::client::get(addr, "/api/status", Duration::from_secs(3))
        .map_err(|e| {
            anyhow::anyhow!(
                "no selfheal daemon answering at {addr} ({e}). Is `selfheal watch` running? \
                 Pass --listen ADDR if it listens elsewhere; `selfheal events` reads the store without it"
            )
        })?;
    if resp.status != 200 {
        anyhow::bail!("daemon at {addr} answered {}: {}", resp.status, resp.body);
    }
    let v: Value = serde_json::from_str(&resp.body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&v));
    Ok(ExitCode::SUCCESS)
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn render(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    let _ = writeln!(
        s,
        "selfheal {} (pid {}) — {}, up {:.0}s{}",
        v["version"].as_str().unwrap_or("?"),
        v["pid"],
        if healthy {
            "healthy"
        } else {
            "UNHEALTHY: light detector heartbeat stale"
        },
        num(v, &["uptime_seconds"]).unwrap_or(0.0),
        if v["dry_run"].as_bool() == Some(true) {
            ", dry run"
        } else {
            ""
        }
    );
    let l = &v["light"];
    let _ = writeln!(
        s,
        "light detector: {}, {} samples, last cycle {:.0} µs (max {:.0} µs), {} alerts ({} dropped), {} overruns",
        if l["realtime"].as_bool() == Some(true) { "SCHED_FIFO" } else { "normal priority" },
        l["samples"],
        num(l, &["last_cycle_us"]).unwrap_or(0.0),
        num(l, &["max_cycle_us"]).unwrap_or(0.0),
        l["alerts"],
        l["alerts_dropped"],
        l["overruns"]
    );
    let _ = writeln!(
        s,
        "store: {} ({} events written)",
        v["store"].as_str().unwrap_or("?"),
        v["events"]["written"]
    );
    if let Some(notes) = v["notes"].as_array() {
        for n in notes {
            let _ = writeln!(s, "note: {}", n.as_str().unwrap_or(""));
        }
    }
    let sys = &v["sample"]["system"];
    if sys.is_object() {
        let g = |k: &str| num(sys, &[k]).unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "cpu: usr {:.1}% sys {:.1}% iowait {:.1}% steal {:.1}% | run {:.0} blk {:.0} | cs {:.0}/s intr {:.0}/s",
            g("user_percent"),
            g("system_percent"),
            g("iowait_percent"),
            g("steal_percent"),
            g("runnable_tasks"),
            g("blocked_tasks"),
            g("context_switches_per_second"),
            g("interrupts_per_second"),
        );
        let _ = writeln!(
            s,
            "memory: {:.0} MiB available of {:.0} MiB ({:.1}%), free {:.0} MiB | swap-out {:.0} pages/s, major faults {:.0}/s",
            g("mem_available_bytes") / 1048576.0,
            g("mem_total_bytes") / 1048576.0,
            g("mem_available_percent"),
            g("mem_free_bytes") / 1048576.0,
            g("swap_out_pages_per_second"),
            g("major_faults_per_second"),
        );
        if sys.get("psi_cpu_some_avg10").is_some() {
            let _ = writeln!(
                s,
                "pressure (avg10): cpu {:.1}% | memory some {:.1}% full {:.1}% | io some {:.1}% full {:.1}%",
                g("psi_cpu_some_avg10"),
                g("psi_memory_some_avg10"),
                g("psi_memory_full_avg10"),
                g("psi_io_some_avg10"),
                g("psi_io_full_avg10"),
            );
        }
        if let Some(cpus) = v["sample"]["cpus"].as_array() {
            for c in cpus {
                let _ = writeln!(
                    s,
                    "  cpu{}: usr {:.0}% sys {:.0}% iowait {:.0}% steal {:.0}%",
                    c["cpu"],
                    num(c, &["cpu_user_percent"]).unwrap_or(f64::NAN),
                    num(c, &["cpu_system_percent"]).unwrap_or(f64::NAN),
                    num(c, &["cpu_iowait_percent"]).unwrap_or(f64::NAN),
                    num(c, &["cpu_steal_percent"]).unwrap_or(f64::NAN),
                );
            }
        }
        if let Some(disks) = v["sample"]["disks"].as_array() {
            for d in disks {
                let _ = writeln!(
                    s,
                    "  {}: busy {:.0}%",
                    d["device"].as_str().unwrap_or("?"),
                    num(d, &["disk_busy_percent"]).unwrap_or(f64::NAN)
                );
            }
        }
    }
    if let Some(table) = v["apps_table"].as_str() {
        let _ = writeln!(s, "supervised apps:");
        for line in table.lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    if let Some(evs) = v["recent_events"].as_array() {
        let _ = writeln!(s, "recent events:");
        for e in evs.iter().rev() {
            let t = e["time_unix_ms"].as_i64().unwrap_or(0);
            let when = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(t.max(0) as u64),
            );
            let _ = writeln!(
                s,
                "  {when} {:<8} {:<10} {}",
                e["severity"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }
    }
    s
}
