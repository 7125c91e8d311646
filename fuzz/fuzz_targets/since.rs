//! `--since` / `--until` / `?since=`: durations back from now, Unix
//! milliseconds, RFC 3339 times.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = selfheal_daemon::parse_since(s, now);
    // Also a query string, as the API decodes it.
    let req = selfheal_daemon::http::Request::new("GET", &format!("/api/events?{s}"));
    let _ = selfheal_daemon::events_query(&req, now);
});
