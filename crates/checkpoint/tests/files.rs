//! Files are part of the checkpoint: a program that reads stdin from a
//! file, writes stdout to a file and changes its own files in every way
//! ends with exactly the files of a run that never crashed; what cannot be
//! undone (output to a pipe or terminal, procfs, a file another process
//! holds or a child changed, a shared writable mapping, io_uring, old
//! contents beyond the budget) makes the rollback impossible, with the
//! reason. Also here: the refusals for input read from a pipe, a changed
//! signal handler and a new child, which use the same test program.

mod common;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, ExitInfo, FdKind, FileRefusal, FileTracking, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(180);

/// Every file under `dir` (relative name → contents), directories as
/// empty entries ending in '/'.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(base, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn input(dir: &Path) -> PathBuf {
    let p = dir.join("input.txt");
    let mut text = String::new();
    let mut s = 0x9E3779B97F4A7C15u64;
    while text.len() < 200_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        text.push_str(&format!("{} {:x}\n", s % 1000, s >> 20));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn fd(f: File) -> Option<OwnedFd> {
    Some(OwnedFd::from(f))
}

/// Runs `files ROUNDS WORK` plainly in `dir` with stdin/stdout files.
fn plain_files(dir: &Path, stdin: &Path, args: &[String]) -> std::process::ExitStatus {
    std::process::Command::new(prog("files"))
        .args(args)
        .current_dir(dir)
        .stdin(File::open(stdin).unwrap())
        .stdout(File::create(dir.join("stdout.txt")).unwrap())
        .status()
        .unwrap()
}

#[test]
fn a_program_changing_files_in_every_way_ends_byte_identical_after_crashes() {
    if skip() {
        return;
    }
    let _one = serial();
    let top = tempfile::tempdir().unwrap();
    let stdin = input(top.path());
    let a = top.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    // Size the run to ~6 s on this machine, so that every signal (6 × at
    // most 700 ms) lands while it runs: one sent while it exits is never
    // delivered.
    let t = Instant::now();
    let probe = top.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    assert!(plain_files(&probe, &stdin, &["10".into(), "1000000".into()]).success());
    let per_round = t.elapsed().as_secs_f64() / 10.0;
    let rounds = ((6.0 / per_round.max(1e-6)) as u64)
        .clamp(60, 600)
        .to_string();
    let args = vec![rounds, "1000000".to_string()];
    assert!(plain_files(&a, &stdin, &args).success());
    // On a loaded machine every crash may land right after a checkpoint,
    // with nothing written since: then the run proves nothing about
    // files, and another one is made (each is checked in full).
    for attempt in 0..3 {
        let b = top.path().join(format!("b{attempt}"));
        std::fs::create_dir_all(&b).unwrap();
        if supervised_files_run(&a, &b, &stdin, &args) {
            return;
        }
    }
    panic!("no rollback had file changes to undo in 3 runs");
}

/// One run of `files ARGS` in `b` with six crashes, checked against the
/// fault-free run in `a`; true if a rollback undid file changes.
fn supervised_files_run(a: &Path, b: &Path, stdin: &Path, args: &[String]) -> bool {
    let mut argv = vec![prog("files").display().to_string()];
    argv.extend(args.iter().cloned());
    let stdout = File::create(b.join("stdout.txt")).unwrap();
    let mut run = start_stdio(
        argv,
        Some(b.to_path_buf()),
        [fd(File::open(stdin).unwrap()), fd(stdout), None],
        config(),
    );
    let signals = signals_at_random(&run, libc::SIGSEGV, 6, 200, 700);
    let sent = signals.count;
    run.wait(LIMIT);
    assert!(
        matches!(
            run.events.first(),
            Some(Event::Started {
                files: FileTracking::Seccomp,
                ..
            })
        ),
        "{:?}",
        run.events.first()
    );
    assert!(run.impossible().is_empty(), "{:?}", run.impossible());
    assert!(
        run.rolled_back_all(&signals),
        "{sent} signals: {:?}",
        run.events
    );
    assert!(
        sent >= 3,
        "the program ended before three signals were sent"
    );
    assert!(matches!(
        run.events.last(),
        Some(Event::Exited(ExitInfo { code: Some(0), .. }))
    ));
    let (ta, tb) = (tree(a), tree(b));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ta), names(&tb), "same files, no stash left behind");
    for ((n, x), (_, y)) in ta.iter().zip(&tb) {
        assert!(
            x == y,
            "{n} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(x),
            String::from_utf8_lossy(y)
        );
    }
    run.rollbacks()
        .iter()
        .any(|r| r.files_restored > 0 || r.names_restored > 0)
}

/// One checkpoint, taken before the program runs: whatever it writes
/// afterwards was written since the checkpoint. (With frequent checkpoints
/// a crash may land right after one, with nothing written since, and the
/// rollback would rightly go ahead.)
fn one_checkpoint() -> selfheal_checkpoint::Config {
    selfheal_checkpoint::Config {
        interval: Duration::from_secs(600),
        ..config()
    }
}

/// Starts `writer ARGS`, crashes it once after `after`, and returns the
/// reason the rollback was refused.
fn refused(args: &[&str], cwd: &Path, after: Duration) -> (Unrecoverable, Run) {
    refused_with(args, cwd, after, one_checkpoint(), [None, None, None])
}

/// [`refused`] with another configuration and standard streams.
fn refused_with(
    args: &[&str],
    cwd: &Path,
    after: Duration,
    config: selfheal_checkpoint::Config,
    stdio: [Option<OwnedFd>; 3],
) -> (Unrecoverable, Run) {
    let mut argv = vec![prog("writer").display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let run = start_stdio(argv, Some(cwd.to_path_buf()), stdio, config);
    std::thread::sleep(after);
    crash_and_refusal(run)
}

/// [`refused`] once `ready` holds for the program's pid (polled after
/// `after`): a fixed wait alone can end before a loaded machine ran it
/// that far.
fn refused_once(
    args: &[&str],
    cwd: &Path,
    after: Duration,
    ready: impl Fn(i32) -> bool,
) -> (Unrecoverable, Run) {
    let mut argv = vec![prog("writer").display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let run = start_stdio(
        argv,
        Some(cwd.to_path_buf()),
        [None, None, None],
        one_checkpoint(),
    );
    std::thread::sleep(after);
    let t0 = std::time::Instant::now();
    while !ready(run.engine.pid()) {
        assert!(t0.elapsed() < LIMIT, "the program never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    crash_and_refusal(run)
}

/// Crashes the program and returns the one refusal of its rollback.
fn crash_and_refusal(mut run: Run) -> (Unrecoverable, Run) {
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    run.wait(LIMIT);
    assert!(run.rollbacks().is_empty(), "{:?}", run.events);
    assert!(
        matches!(
            run.events.last(),
            Some(Event::Exited(ExitInfo {
                signal: Some(libc::SIGSEGV),
                ..
            }))
        ),
        "the crash went through: {:?}",
        run.events.last()
    );
    let why = match run.impossible().as_slice() {
        [Event::RollbackImpossible { why, .. }] => why.clone(),
        other => panic!("one refusal expected: {other:?}"),
    };
    (why, run)
}

#[test]
fn output_written_to_a_pipe_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // Rounds of ~10 ms: every checkpoint interval holds a write.
    let (why, _) = refused(&["pipe", "100000"], dir.path(), Duration::from_millis(600));
    assert!(
        matches!(
            why,
            Unrecoverable::OutputSent {
                fd: 1,
                kind: FdKind::Pipe,
                ..
            }
        ),
        "{why:?}"
    );
}

#[test]
fn a_write_to_procfs_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (why, _) = refused(
        &["procfs", "100000"],
        dir.path(),
        Duration::from_millis(600),
    );
    match why {
        Unrecoverable::FileChanged {
            why: FileRefusal::Filesystem { fs },
            ..
        } => assert_eq!(fs, "proc"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_another_process_holds_open_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.log");
    std::fs::write(&shared, b"").unwrap();
    // A bystander (ours) that keeps the file open.
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .stdout(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&shared)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let path = shared.display().to_string();
    let (why, _) = refused(
        &["append", &path, "100000"],
        dir.path(),
        Duration::from_millis(600),
    );
    let _ = holder.kill();
    let _ = holder.wait();
    match why {
        Unrecoverable::FileChanged {
            path: p,
            why: FileRefusal::SharedWithProcess { pid, comm },
        } => {
            assert_eq!(p, path);
            assert_eq!((pid, comm.as_str()), (holder.id() as i32, "sleep"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_a_child_changed_makes_the_rollback_impossible_even_after_it_ended() {
    if skip() {
        return;
    }
    let _one = serial();
    // The child's work is not rolled back with the program: undoing its
    // write would lose it for good.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by-child").display().to_string();
    let (why, _) = refused(
        &["child", &path, "100000"],
        dir.path(),
        Duration::from_millis(600),
    );
    match why {
        Unrecoverable::FileChanged {
            why: FileRefusal::ChangedByOtherProcess { comm, .. },
            ..
        } => assert_eq!(comm, "writer"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_shared_writable_file_mapping_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapped").display().to_string();
    let (why, _) = refused_once(
        &["mmap", &path, "100000"],
        dir.path(),
        Duration::from_millis(600),
        |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .is_ok_and(|m| m.contains(path.as_str()))
        },
    );
    assert!(
        matches!(
            why,
            Unrecoverable::SharedMemory { .. }
                | Unrecoverable::FileChanged {
                    why: FileRefusal::SharedMapping,
                    ..
                }
        ),
        "{why:?}"
    );
}

#[test]
fn without_file_tracking_a_rollback_after_writes_is_refused() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let stdin = input(dir.path());
    let mut config = one_checkpoint();
    config.files.track = false;
    let out = File::create(dir.path().join("stdout.txt")).unwrap();
    let mut run = start_stdio(
        vec![
            prog("files").display().to_string(),
            "100000".into(),
            "1000000".into(),
        ],
        Some(dir.path().to_path_buf()),
        [fd(File::open(&stdin).unwrap()), fd(out), None],
        config,
    );
    std::thread::sleep(Duration::from_millis(600));
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    run.wait(LIMIT);
    assert!(matches!(
        run.events.first(),
        Some(Event::Started {
            files: FileTracking::Off { .. },
            ..
        })
    ));
    assert!(
        matches!(
            run.impossible().as_slice(),
            [Event::RollbackImpossible {
                why: Unrecoverable::UntrackedWrites { .. },
                ..
            }]
        ),
        "{:?}",
        run.events
    );
}

#[test]
fn children_that_outlive_the_program_can_still_write() {
    if skip() {
        return;
    }
    let _one = serial();
    // The filter is inherited and cannot be removed; without anyone to
    // answer it the child's write would fail with ENOSYS.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.txt");
    let p = path.display().to_string();
    let mut run = start_stdio(
        vec![prog("writer").display().to_string(), "fork".into(), p],
        None,
        [None, None, None],
        config(),
    );
    run.wait(LIMIT);
    assert!(matches!(
        run.events.last(),
        Some(Event::Exited(ExitInfo { code: Some(0), .. }))
    ));
    // The engine is gone; the child (still in the sandbox) writes later.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&path).unwrap_or_default() != "child\n" {
        assert!(Instant::now() < deadline, "the orphaned child never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(run);
}

#[test]
fn output_written_to_a_terminal_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // stdout is a pseudo-terminal whose master we hold and never read.
    let (master, slave) = selfheal_sys::fileops::open_pty().unwrap();
    let (why, _) = refused_with(
        &["tty", "100000"],
        dir.path(),
        Duration::from_millis(600),
        one_checkpoint(),
        [None, Some(slave), None],
    );
    drop(master);
    assert!(
        matches!(
            why,
            Unrecoverable::OutputSent {
                kind: FdKind::CharDevice,
                ..
            }
        ),
        "{why:?}"
    );
}

#[test]
fn asynchronous_io_set_up_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|v| v.trim() != "0");
    if disabled {
        eprintln!("SKIP: io_uring is disabled here (kernel.io_uring_disabled)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (why, _) = refused(&["uring", "100000"], dir.path(), Duration::from_millis(600));
    match why {
        Unrecoverable::FileChanged {
            why: FileRefusal::AsyncIo,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn old_contents_beyond_the_budget_make_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // There at the checkpoint: its old contents are what a rollback needs.
    std::fs::write(&data, vec![b'-'; 65536]).unwrap();
    let path = data.display().to_string();
    let mut config = one_checkpoint();
    // The first rewrite of 64 KiB already needs more.
    config.files.preimage_budget = 16 << 10;
    let (why, _) = refused_with(
        &["overwrite", &path, "100000"],
        dir.path(),
        Duration::from_millis(600),
        config,
        [None, None, None],
    );
    match why {
        Unrecoverable::FileChanged {
            path: p,
            why: FileRefusal::PreimageBudget { budget },
        } => assert_eq!((p, budget), (path, 16 << 10)),
        other => panic!("{other:?}"),
    }
}

// Refusals that are not about files, beside them because they use the same
// program and helper; the table in docs/supervise.md cites each.

#[test]
fn input_read_from_a_pipe_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // An endless pipe of ours: `yes`, killed below.
    let mut yes = std::process::Command::new("yes")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = OwnedFd::from(yes.stdout.take().unwrap());
    let (why, _) = refused_with(
        &["read", "100000"],
        dir.path(),
        Duration::from_millis(600),
        one_checkpoint(),
        [Some(pipe), None, None],
    );
    let _ = yes.kill();
    let _ = yes.wait();
    assert!(
        matches!(why, Unrecoverable::ConsumedInput { bytes } if bytes > 0),
        "{why:?}"
    );
}

#[test]
fn a_signal_handler_installed_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (why, _) = refused(
        &["handler", "100000"],
        dir.path(),
        Duration::from_millis(600),
    );
    assert!(
        matches!(why, Unrecoverable::SignalHandlersChanged),
        "{why:?}"
    );
}

#[test]
fn a_child_started_since_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // The child sleeps 1 s and exits by itself; the crash comes before.
    let (why, _) = refused(&["spawn", "100000"], dir.path(), Duration::from_millis(400));
    assert!(
        matches!(why, Unrecoverable::ChildrenForked { ref pids } if pids.len() == 1),
        "{why:?}"
    );
}
