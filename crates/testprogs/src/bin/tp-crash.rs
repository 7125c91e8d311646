//! Crashes on purpose: `tp-crash exit CODE` or `tp-crash signal NAME`
//! (SEGV, ABRT, BUS, FPE, KILL, …), after `--after MS`, having written
//! `--lines N` numbered lines to stderr.

#![forbid(unsafe_code)]

use selfheal_testprogs::{stamp, Args};
use std::io::Write;

fn main() {
    let args = Args::from_env();
    let stamps = args.stamp_file();
    stamp(stamps.as_deref(), "start");
    let pid = std::process::id();
    println!("tp-crash: pid {pid} started");
    std::thread::sleep(args.millis("after", 0));
    let mode = args.words.first().map(String::as_str).unwrap_or("exit");
    let what = args.words.get(1).cloned().unwrap_or_else(|| "1".into());
    let mut err = std::io::stderr().lock();
    for i in 1..=args.num("lines", 3) {
        let _ = writeln!(err, "tp-crash: line {i} before the crash");
    }
    let _ = writeln!(err, "tp-crash: about to {mode} {what}");
    drop(err);
    stamp(stamps.as_deref(), "exit");
    match mode {
        "signal" => {
            let sig = selfheal_sys::signal::signal_from_name(&what)
                .unwrap_or_else(|| panic!("unknown signal {what}"));
            // Resets the handler std installs for SIGSEGV/SIGBUS, unblocks
            // and raises: the process dies exactly as from a real fault.
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            // Only reached for signals whose default is to ignore.
            std::process::exit(2);
        }
        _ => std::process::exit(what.parse().unwrap_or(1)),
    }
}
