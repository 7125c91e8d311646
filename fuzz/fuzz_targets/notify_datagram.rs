//! sd_notify datagrams a supervised program sends (any bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = selfheal_supervise::notify::parse_datagram(data);
});
