//! The config file: TOML text through selfheal's schema and every value
//! check (rules, apps, probes, recovery ladders, durations).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = selfheal_config::Config::parse(text, std::path::Path::new("fuzz.toml")) {
        let _ = c.effective_rules();
    }
});
