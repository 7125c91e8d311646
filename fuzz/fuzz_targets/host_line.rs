//! What a host sends a guest over the guest link: lines of
//! `HostMessage`s, split anywhere, and the checkpoint stops and vCPU
//! waits they carry placed on the guest's clock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_detect::host_stops::{HostStops, HostWait};
use selfheal_guestlink::{HostMessage, LineReader};

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut r = LineReader::<HostMessage>::of();
    let mut ledger = HostStops::new();
    let mut got = r.push(&data[..cut]);
    got.extend(r.push(&data[cut..]));
    got.extend(r.push(b"\n"));
    for (i, m) in got.into_iter().enumerate() {
        match m {
            Ok(HostMessage::Stopped(s)) if s.validate().is_ok() => {
                ledger.news(i as u64 * 50_000, s.host_us, s.offset_min_us, &s.spans);
            }
            Ok(HostMessage::Waited(w)) if w.validate().is_ok() => {
                let ws: Vec<HostWait> = w
                    .waits
                    .iter()
                    .map(|v| HostWait {
                        cpu: v.cpu,
                        span: [v.from_us, v.until_us],
                        wait_us: v.wait_us,
                    })
                    .collect();
                ledger.waits_news(i as u64 * 50_000, w.host_us, w.offset_min_us, &ws);
            }
            _ => continue,
        }
        let _ = ledger.unexplained(0, 0, u64::MAX);
        let _ = ledger.covered_until();
    }
});
