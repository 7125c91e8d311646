//! /proc parsers: stat, meminfo, vmstat, pressure, diskstats, and a
//! task's stat and status. The first byte picks the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_procfs::{diskstats, meminfo, pressure, stat, task, vmstat};

fuzz_target!(|data: &[u8]| {
    let Some((&which, buf)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(buf);
    match which % 8 {
        0 => {
            let mut out = stat::StatCounters::with_cpus(4);
            let _ = stat::parse_stat(buf, &mut out);
        }
        1 => {
            let mut out = meminfo::MemInfo::default();
            let _ = meminfo::parse_meminfo(buf, &mut out);
        }
        2 => {
            let mut out = vmstat::VmStat::default();
            let _ = vmstat::parse_vmstat(buf, &mut out);
        }
        3 => {
            let mut out = pressure::Pressure::default();
            let _ = pressure::parse_pressure(buf, &mut out);
        }
        4 => diskstats::parse_diskstats(buf, |_| {}),
        5 => {
            let _ = task::parse_task_stat(&text);
        }
        6 => {
            let _ = task::parse_task_status(&text);
        }
        _ => {
            let _ = task::parse_task_stat(&text);
            let _ = task::parse_task_status(&text);
        }
    }
});
