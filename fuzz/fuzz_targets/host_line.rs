//! What a host sends a guest over the guest link: lines of
//! `HostMessage`s, split anywhere, and the checkpoint stops they carry
//! placed on the guest's clock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_detect::host_stops::HostStops;
use selfheal_guestlink::{HostMessage, LineReader};

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut r = LineReader::<HostMessage>::of();
    let mut ledger = HostStops::new();
    let mut got = r.push(&data[..cut]);
    got.extend(r.push(&data[cut..]));
    got.extend(r.push(b"\n"));
    for (i, m) in got.into_iter().enumerate() {
        if let Ok(HostMessage::Stopped(s)) = m {
            if s.validate().is_ok() {
                ledger.news(i as u64 * 50_000, s.host_us, s.offset_min_us, &s.spans);
                let _ = ledger.unexplained(0, u64::MAX);
            }
        }
    }
});
