//! Raw bytes from a TCP client through the daemon's HTTP stack (hyper's
//! request line and header parsing, our request conversion, query
//! decoding and the `/api/events` parameter checks), in memory. Whatever
//! arrives, the server answers or closes; it never panics.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use selfheal_daemon::http::{answer_raw, Request, Response, Router};

fuzz_target!(|data: &[u8]| {
    let router: Router = Arc::new(|req: &Request| {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        match selfheal_daemon::events_query(req, now) {
            Ok(q) => Response::text(200, format!("{q:?}")),
            Err(e) => Response::error(400, e.to_string()),
        }
    });
    let _ = answer_raw(data, router);
});
