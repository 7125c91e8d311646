//! `/metrics` collectors for the sampled metrics, the light detector, the
//! store writer and the daemon process.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use selfheal_config::Rule;
use selfheal_detect::{Heartbeat, LightStats};
use selfheal_metrics::{Collector, Encoder, MetricType};
use selfheal_sampler::{CpuMetric, DiskMetric, Sample, SampleBoard, SystemMetric};
use selfheal_store::WriterCounters;

use MetricType::{Counter, Gauge};

/// The sampled metrics, read from the board at scrape time.
pub struct SampleCollector {
    board: Arc<SampleBoard>,
    scratch: Mutex<Sample>,
}

impl SampleCollector {
    /// Reads `board`, which holds `cpus` CPU slots.
    pub fn new(board: Arc<SampleBoard>, cpus: usize) -> SampleCollector {
        SampleCollector {
            board,
            scratch: Mutex::new(Sample::with_cpus(cpus)),
        }
    }
}

/// How a machine-wide metric is exposed: name, help, scale (percent → ratio).
fn system_exposition(m: SystemMetric) -> Option<(&'static str, f64)> {
    use SystemMetric::*;
    Some(match m {
        // CPU shares go into one labelled family, written separately.
        UserPercent | SystemPercent | IowaitPercent | StealPercent | IdlePercent => return None,
        // PSI is one labelled family too.
        PsiCpuSomeAvg10 | PsiCpuFullAvg10 | PsiMemorySomeAvg10 | PsiMemoryFullAvg10
        | PsiIoSomeAvg10 | PsiIoFullAvg10 => return None,
        ContextSwitchesPerSecond => ("selfheal_context_switches_per_second", 1.0),
        InterruptsPerSecond => ("selfheal_interrupts_per_second", 1.0),
        ForksPerSecond => ("selfheal_forks_per_second", 1.0),
        RunnableTasks => ("selfheal_runnable_tasks", 1.0),
        RunnableTasksPerCpu => ("selfheal_runnable_tasks_per_cpu", 1.0),
        BlockedTasks => ("selfheal_blocked_tasks", 1.0),
        BlockedTasksPerCpu => ("selfheal_blocked_tasks_per_cpu", 1.0),
        MemTotalBytes => ("selfheal_memory_total_bytes", 1.0),
        MemFreeBytes => ("selfheal_memory_free_bytes", 1.0),
        MemAvailableBytes => ("selfheal_memory_available_bytes", 1.0),
        MemAvailablePercent => ("selfheal_memory_available_ratio", 0.01),
        SwapOutPagesPerSecond => ("selfheal_swap_out_pages_per_second", 1.0),
        SwapInPagesPerSecond => ("selfheal_swap_in_pages_per_second", 1.0),
        MajorFaultsPerSecond => ("selfheal_major_faults_per_second", 1.0),
        OomKillsPerSecond => ("selfheal_oom_kills_per_second", 1.0),
        OnlineCpus => ("selfheal_online_cpus", 1.0),
        // Written only while MemAvailable falls (NaN otherwise, skipped).
        MemExhaustionSeconds => ("selfheal_memory_exhaustion_seconds", 1.0),
    })
}

const CPU_MODES: [(CpuMetric, SystemMetric, &str); 5] = [
    (CpuMetric::UserPercent, SystemMetric::UserPercent, "user"),
    (
        CpuMetric::SystemPercent,
        SystemMetric::SystemPercent,
        "system",
    ),
    (
        CpuMetric::IowaitPercent,
        SystemMetric::IowaitPercent,
        "iowait",
    ),
    (CpuMetric::StealPercent, SystemMetric::StealPercent, "steal"),
    (CpuMetric::IdlePercent, SystemMetric::IdlePercent, "idle"),
];

const PSI: [(SystemMetric, &str, &str); 6] = [
    (SystemMetric::PsiCpuSomeAvg10, "cpu", "some"),
    (SystemMetric::PsiCpuFullAvg10, "cpu", "full"),
    (SystemMetric::PsiMemorySomeAvg10, "memory", "some"),
    (SystemMetric::PsiMemoryFullAvg10, "memory", "full"),
    (SystemMetric::PsiIoSomeAvg10, "io", "some"),
    (SystemMetric::PsiIoFullAvg10, "io", "full"),
];

impl Collector for SampleCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if !self.board.read_into(&mut s) {
            return;
        }
        enc.family(
            "selfheal_cpu_ratio",
            "Share of each CPU's time by mode over the last sample interval (SHFH usr, sys, iowait; steal).",
            Gauge,
        );
        for cpu in 0..s.cpus.len() {
            let label = cpu.to_string();
            for (m, _, mode) in CPU_MODES {
                let v = s.cpu(cpu, m);
                if v.is_finite() {
                    enc.sample(&[("cpu", &label), ("mode", mode)], v / 100.0);
                }
            }
        }
        enc.family(
            "selfheal_cpu_accounted_ratio",
            "CPU time accounted for each CPU as a share of wall-clock time; near 0 means its accounting stopped.",
            Gauge,
        );
        for cpu in 0..s.cpus.len() {
            let v = s.cpu(cpu, CpuMetric::AccountedPercent);
            if v.is_finite() {
                enc.sample(&[("cpu", &cpu.to_string())], v / 100.0);
            }
        }
        enc.family(
            "selfheal_system_cpu_ratio",
            "Share of all CPUs' time by mode over the last sample interval.",
            Gauge,
        );
        for (_, m, mode) in CPU_MODES {
            let v = s.system(m);
            if v.is_finite() {
                enc.sample(&[("mode", mode)], v / 100.0);
            }
        }
        for m in SystemMetric::ALL {
            let Some((name, scale)) = system_exposition(*m) else {
                continue;
            };
            let v = s.system(*m);
            if v.is_finite() {
                enc.single(name, m.help(), Gauge, v * scale);
            }
        }
        if PSI.iter().any(|(m, _, _)| s.system(*m).is_finite()) {
            enc.family(
                "selfheal_pressure_avg10_ratio",
                "Pressure stall information: share of the last 10 s some/all tasks stalled on a resource.",
                Gauge,
            );
            for (m, resource, kind) in PSI {
                let v = s.system(m);
                if v.is_finite() {
                    enc.sample(&[("resource", resource), ("kind", kind)], v / 100.0);
                }
            }
        }
        if !s.disks.is_empty() {
            enc.family(
                "selfheal_disk_busy_ratio",
                "Share of the last sample interval each block device was busy (SHFH util).",
                Gauge,
            );
            for (i, name) in s.disk_names.iter().enumerate() {
                let v = s.disk(i, DiskMetric::BusyPercent);
                if v.is_finite() {
                    enc.sample(&[("device", name.as_str())], v / 100.0);
                }
            }
            enc.family(
                "selfheal_disk_in_flight",
                "I/O requests in flight per block device.",
                Gauge,
            );
            for (i, name) in s.disk_names.iter().enumerate() {
                let v = s.disk(i, DiskMetric::InFlight);
                if v.is_finite() {
                    enc.sample(&[("device", name.as_str())], v);
                }
            }
        }
        enc.single(
            "selfheal_sample_interval_seconds",
            "Length of the interval the latest sample covers.",
            Gauge,
            s.interval.as_secs_f64(),
        );
    }
}

/// Light-detector counters and the per-rule alert counters.
pub struct LightCollector {
    /// Counters.
    pub stats: Arc<LightStats>,
    /// Rules in alert-index order.
    pub rules: Vec<Rule>,
    /// The heartbeat.
    pub heartbeat: Arc<Heartbeat>,
}

impl Collector for LightCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let st = &self.stats;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        enc.single(
            "selfheal_samples_total",
            "Samples taken by the light detector.",
            Counter,
            ld(&st.samples),
        );
        enc.single(
            "selfheal_sample_errors_total",
            "Samples that failed to read /proc.",
            Counter,
            ld(&st.sample_errors),
        );
        enc.family(
            "selfheal_alerts_total",
            "Alerts raised by each light-detector rule.",
            Counter,
        );
        for (rule, count) in self.rules.iter().zip(st.alerts.iter()) {
            enc.sample(
                &[("rule", &rule.name), ("level", rule.level.as_str())],
                ld(count),
            );
        }
        enc.single(
            "selfheal_alerts_dropped_total",
            "Alerts dropped because the queue to the heavy detector was full.",
            Counter,
            ld(&st.alerts_dropped),
        );
        enc.single(
            "selfheal_light_cycle_seconds",
            "Duration of the light detector's latest sample and evaluation.",
            Gauge,
            ld(&st.last_cycle_ns) / 1e9,
        );
        enc.single(
            "selfheal_light_cycle_max_seconds",
            "Longest light-detector cycle since start.",
            Gauge,
            ld(&st.max_cycle_ns) / 1e9,
        );
        enc.family(
            "selfheal_light_sample_duration_seconds",
            "Time of each light-detector cycle: sampling /proc and evaluating the rules.",
            MetricType::Histogram,
        );
        enc.histogram(&[], &st.cycle_seconds.snapshot());
        enc.single(
            "selfheal_light_overruns_total",
            "Periods the light detector woke more than a full period late (it was starved).",
            Counter,
            ld(&st.overruns),
        );
        enc.single(
            "selfheal_light_realtime",
            "1 when the light detector runs under SCHED_FIFO.",
            Gauge,
            if st.realtime.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        if let Some(age) = self.heartbeat.age() {
            enc.single(
                "selfheal_light_heartbeat_age_seconds",
                "Time since the light detector's last completed cycle.",
                Gauge,
                age.as_secs_f64(),
            );
        }
    }
}

/// Store writer counters.
pub struct StoreCollector(pub Arc<WriterCounters>);

impl Collector for StoreCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let c = &self.0;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        enc.single(
            "selfheal_events_written_total",
            "Events written to the store.",
            Counter,
            ld(&c.written),
        );
        enc.single(
            "selfheal_events_dropped_total",
            "Events dropped because the store writer's queue was full or it had stopped.",
            Counter,
            ld(&c.dropped),
        );
        enc.single(
            "selfheal_event_write_errors_total",
            "Failed store transactions.",
            Counter,
            ld(&c.write_errors),
        );
    }
}

/// The link to the host, inside a VM (`[host_link]`).
pub struct HostLinkCollector(pub Arc<crate::LinkCounters>);

impl Collector for HostLinkCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        enc.single(
            "selfheal_host_link_sent_total",
            "Lines (heartbeats, events, hellos) sent whole to the host over the VM's guest link.",
            Counter,
            ld(&self.0.sent),
        );
        enc.single(
            "selfheal_host_link_dropped_total",
            "Heartbeats and events not sent to the host (queue full, host end not connected).",
            Counter,
            ld(&self.0.dropped),
        );
    }
}

/// The daemon process itself: version, start time, CPU and memory.
pub struct ProcessCollector {
    /// When the daemon started.
    pub started: SystemTime,
}

impl Collector for ProcessCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        enc.family(
            "selfheal_build_info",
            "Version of the running selfheal.",
            Gauge,
        );
        enc.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        let start = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        enc.single(
            "selfheal_start_time_seconds",
            "When the daemon started, seconds since the Unix epoch.",
            Gauge,
            start,
        );
        if let Ok(t) = selfheal_sys::process::process_cpu_time() {
            enc.single(
                "selfheal_process_cpu_seconds_total",
                "CPU time used by the daemon (all threads, user + system).",
                Counter,
                t.total().as_secs_f64(),
            );
        }
        if let Some(rss) = resident_bytes() {
            enc.single(
                "selfheal_process_resident_memory_bytes",
                "Resident memory of the daemon.",
                Gauge,
                rss as f64,
            );
        }
    }
}

/// Resident set size of this process from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * selfheal_sys::sched::page_size() as u64)
}

/// The HTTP server's own counters.
pub struct HttpCollector(pub Arc<crate::http::HttpStats>);

impl Collector for HttpCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let s = &self.0;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        enc.single(
            "selfheal_http_connections_open",
            "HTTP connections open now.",
            Gauge,
            ld(&s.open),
        );
        enc.single(
            "selfheal_http_connections_awaiting_first_byte",
            "HTTP connections open that have not sent a byte yet (they hold no buffers).",
            Gauge,
            ld(&s.awaiting_first_byte),
        );
        enc.single(
            "selfheal_http_connections_total",
            "HTTP connections accepted and served.",
            Counter,
            ld(&s.accepted),
        );
        enc.single(
            "selfheal_http_connections_rejected_total",
            "HTTP connections closed at once because the connection limit was reached.",
            Counter,
            ld(&s.rejected),
        );
        enc.single(
            "selfheal_http_connections_timed_out_total",
            "HTTP connections cut by the header-read or connection timeout.",
            Counter,
            ld(&s.timed_out),
        );
        enc.single(
            "selfheal_http_bad_requests_total",
            "HTTP connections that ended in a protocol error (garbage, oversized head).",
            Counter,
            ld(&s.bad_requests),
        );
        enc.single(
            "selfheal_http_busy_total",
            "HTTP requests answered 503 because every handler slot stayed busy.",
            Counter,
            ld(&s.busy),
        );
        enc.single(
            "selfheal_http_handler_panics_total",
            "HTTP handlers that panicked (answered 500).",
            Counter,
            ld(&s.handler_panics),
        );
        enc.single(
            "selfheal_http_restarts_total",
            "Times the HTTP server loop panicked and was restarted.",
            Counter,
            ld(&s.restarts),
        );
    }
}
