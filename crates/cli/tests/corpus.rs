//! The real-program corpus (see `corpus_harness/mod.rs`): xz, pigz, zstd, sort,
//! sqlite3, python3 and a shell forking gzip, each under `selfheal run
//! --checkpoint-interval 50ms --keep 8` with SIGSEGV sent from outside at
//! random moments, each output compared with a fault-free run. One run per
//! program here; `bench/checkpoint/corpus-soak.sh N` runs the ignored
//! `soak` test for N injections per program and records the results.
//!
//! Needs root (ptrace, userfaultfd, the cgroup sandbox); a program that is
//! not installed is skipped with the reason (scripts/install-deps
//! installs them).

mod checkpoint_harness;
mod common;
mod corpus_harness;

use std::io::Write;
use std::time::Duration;

use checkpoint_harness::*;
use corpus_harness::*;

/// Input size of the default suite's runs: each program runs well under a
/// second unsupervised, so the eleven cases take about a minute and a half.
const CI_SCALE: f64 = 0.4;

/// One supervised run of `name` with `signals` SIGSEGVs on inputs of
/// `scale` (see [`prepare`]); None if skipped.
fn one(name: &str, signals: usize, scale: f64, rng: &mut Rng) -> Option<Outcome> {
    let case = CASES
        .iter()
        .find(|c| c.name == name)
        .expect("a corpus case");
    if let Some(why) = missing(case) {
        eprintln!("SKIP {name}: {why}");
        return None;
    }
    let top = tempfile::tempdir().unwrap();
    let inputs = top.path().join("inputs");
    prepare(&inputs, scale);
    let (expected, took) = reference(&inputs, &top.path().join("ref"), case);
    let out = supervised(
        &inputs,
        &top.path().join("run"),
        case,
        &expected,
        signals,
        took,
        rng,
    );
    eprintln!("{}", out.to_json());
    // SELFHEAL_CORPUS_EVENTS: every run's events too (for a closer look).
    if std::env::var_os("SELFHEAL_CORPUS_EVENTS").is_some() {
        eprintln!("{}", out.events);
    }
    Some(out)
}

fn check(out: &Outcome) {
    assert!(
        !out.hung,
        "selfheal run did not end: {}\n{}",
        out.to_json(),
        out.events
    );
    assert!(
        !out.silently_wrong(),
        "SILENTLY WRONG: exit 0 but {:?} differ: {}\n{}",
        out.differs,
        out.to_json(),
        out.events
    );
    assert!(
        out.identical || !out.impossible.is_empty(),
        "a different result with no reason recorded: {}\n{}",
        out.to_json(),
        out.events
    );
    assert!(
        out.unaccounted.is_empty(),
        "every process crashed is rolled back or refused with a reason: {}\n{}",
        out.to_json(),
        out.events
    );
}

macro_rules! corpus_test {
    ($fn:ident, $name:literal) => {
        #[test]
        fn $fn() {
            if skip() {
                return;
            }
            let _one = serial();
            let mut rng = Rng::new();
            // A run that ended before the first signal proves nothing:
            // up to three runs until one was crashed.
            for _ in 0..3 {
                let Some(out) = one($name, 3, CI_SCALE, &mut rng) else {
                    return;
                };
                check(&out);
                if out.injected > 0 {
                    return;
                }
            }
            panic!("{}: no run lasted until a signal", $name);
        }
    };
}

corpus_test!(xz_writing_to_redirected_stdout, "xz-stdout");
corpus_test!(xz_writing_its_own_file, "xz-own-file");
corpus_test!(xz_with_two_threads, "xz-2-threads");
corpus_test!(pigz_two_threads_to_redirected_stdout, "pigz-stdout");
corpus_test!(zstd_whose_crash_handler_reraises, "zstd-stdout");
corpus_test!(zstd_writing_its_own_file, "zstd-own-file");
corpus_test!(sort_with_temporary_files, "sort-tempfiles");
corpus_test!(sqlite3_script_on_stdin, "sqlite-stdin");
corpus_test!(sqlite3_dot_read, "sqlite-read");
corpus_test!(python_computation, "python");
corpus_test!(shell_that_forks_gzip, "shell-forks-gzip");

/// `SELFHEAL_CORPUS_SOAK=N`: N injections per program (4 per run);
/// results as JSON lines to `SELFHEAL_CORPUS_RESULTS` (default: stderr
/// only). `SELFHEAL_CORPUS_ONLY=a,b` limits the programs;
/// `SELFHEAL_CORPUS_SCALE` sizes the inputs (default 1.0: one to three
/// seconds of CPU time per program); `SELFHEAL_CORPUS_EVENTS=1` prints
/// every run's events.
#[test]
#[ignore = "long: run through bench/checkpoint/corpus-soak.sh"]
fn soak() {
    if skip() {
        return;
    }
    let _one = serial();
    let n: usize = std::env::var("SELFHEAL_CORPUS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let scale: f64 = std::env::var("SELFHEAL_CORPUS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let only = std::env::var("SELFHEAL_CORPUS_ONLY").unwrap_or_default();
    let mut results = std::env::var_os("SELFHEAL_CORPUS_RESULTS").map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    });
    let mut rng = Rng::new();
    let mut wrong = Vec::new();
    for case in CASES {
        if !only.is_empty() && !only.split(',').any(|o| o == case.name) {
            continue;
        }
        let mut injected = 0;
        let mut runs = 0;
        while injected < n && runs < n {
            runs += 1;
            let Some(out) = one(case.name, 4.min(n - injected), scale, &mut rng) else {
                break;
            };
            injected += out.injected.max(1);
            if let Some(f) = results.as_mut() {
                writeln!(f, "{}", out.to_json()).unwrap();
            }
            if out.silently_wrong() {
                wrong.push(out.to_json());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(wrong.is_empty(), "silently wrong runs: {wrong:?}");
}
