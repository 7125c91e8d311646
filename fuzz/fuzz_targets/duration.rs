//! `parse_duration` / `HumanDuration`: every duration on the command line
//! and in the config. A parsed duration must be usable: added to `now`
//! and multiplied the way the daemon does, without overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = selfheal_config::parse_duration(s) {
        let _ = std::time::Instant::now() + d;
        let _ = d * 3;
        let _ = s.parse::<selfheal_config::HumanDuration>().unwrap().to_string();
    }
});
