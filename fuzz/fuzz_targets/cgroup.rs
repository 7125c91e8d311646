//! cgroup parsers: /proc/PID/cgroup, mountinfo, controller lists and the
//! controllers' files. The first byte picks the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_cgroup::controller::{self, cpu, cpuset, freezer};
use selfheal_cgroup::{hierarchy, mountinfo, proc_cgroup};

fuzz_target!(|data: &[u8]| {
    let Some((&which, buf)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(buf);
    match which % 8 {
        0 => {
            if let Ok(entries) = proc_cgroup::parse_proc_pid_cgroup(&text) {
                let _ = proc_cgroup::most_specific(&entries);
                for e in &entries {
                    let _ = proc_cgroup::systemd_unit_of(&e.path);
                }
            }
        }
        1 => {
            let _ = mountinfo::parse_mountinfo(&text);
        }
        2 => {
            let _ = hierarchy::parse_controller_list(&text);
        }
        3 => {
            let _ = freezer::parse_v1_state(&text);
        }
        4 => {
            let _ = controller::parse_flat_keyed(&text);
        }
        5 => {
            let _ = controller::parse_max(&text);
        }
        6 => {
            if let Some(m) = cpu::parse_v2(&text) {
                let _ = m.cpus();
                let _ = m.to_v2();
            }
        }
        _ => {
            if let Some(cpus) = cpuset::parse_cpu_list(&text) {
                let _ = cpuset::format_cpu_list(&cpus);
            }
        }
    }
});
