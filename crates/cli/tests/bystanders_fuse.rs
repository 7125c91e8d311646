//! Bystanders and culprits of the D-state logic behind FUSE servers
//! (`tp-fuse-stall`), under the real `selfheal watch` with the default
//! recovery ladders.
//!
//! - Held, for `HOLD` (12 s): a reader of a FUSE file whose server is in a
//!   frozen cgroup v2 (`cgroup.freeze` = 1), another whose server is
//!   SIGSTOPped, another whose server is stopped by a tracer (ptrace); and
//!   `cat` of a FUSE file whose server answers every read after 1.2 s.
//!   Each must end unharmed with the file's content, the daemon must record
//!   the held ones (class `held`, the reason) and take no action (the
//!   harness and its guarantees are in `common/held.rs`).
//! - Dead: a FUSE server that never answers. The daemon names the
//!   connection and the server, aborts the connection, and its waiters wake
//!   with an error — none is signalled.
//!
//! Root and `/dev/fuse` only; each test says why it skips.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use selfheal_cgroup::Sandbox;

use common::held::{actions, have_cgroup_v2, Check, HeldRun, Output, Scope, Undo};
use common::wait_exit;

/// Whether `/dev/fuse` is missing (then `test` says it skips).
fn fuse_missing(test: &str) -> bool {
    let missing = !Path::new("/dev/fuse").exists();
    if missing {
        eprintln!("SKIP {test}: /dev/fuse is missing");
    }
    missing
}

/// The file of `/dev/fuse`-served test data: byte i is i % 251.
fn fuse_content() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

/// A FUSE server (`tp-fuse-stall`) in `sb`, mounted at `dir`: the server
/// and its connection number.
fn fuse_server(sb: &Sandbox, dir: &Path, extra: &[&str], undo: &mut Undo) -> (Child, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(selfheal_testprogs::bin("tp-fuse-stall"));
    cmd.arg(dir)
        .args(["--seconds", "120"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    selfheal_sys::child::parent_death_signal_before_exec(&mut cmd, 15);
    let mut server = sb.spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("mounted"), "tp-fuse-stall: {line}");
    let conn: u64 = line
        .trim()
        .rsplit('=')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap();
    let d = dir.to_path_buf();
    undo.push("fuse", move || {
        let _ = selfheal_sys::fuse::umount_lazy(&d);
        let _ = std::fs::remove_dir(&d);
    });
    (server, conn)
}

/// Opens the FUSE file now (lookup and open answered), and once `go`
/// exists reads it into `out` (the read then waits in D if the server does
/// not answer). One process that never forks: a child closing its copy of
/// the descriptor would wait for the server's FLUSH answer instead.
/// Returns once the file is open.
fn late_reader(sb: &Sandbox, file: &Path, out: &Path, go: &Path) -> Child {
    let mut child = sb
        .spawn(
            Command::new("python3")
                .args([
                    "-c",
                    "import os,sys,time\nf=open(sys.argv[1],'rb')\nprint('open',flush=True)\nwhile not os.path.exists(sys.argv[3]): time.sleep(0.05)\nd=f.read()\nopen(sys.argv[2],'wb').write(d)\n",
                ])
                .arg(file)
                .arg(out)
                .arg(go)
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "open",
        "the reader could not open {}",
        file.display()
    );
    child
}

#[test]
fn readers_of_held_fuse_servers_are_recorded_held_and_never_acted_on() {
    const TEST: &str = "readers_of_held_fuse_servers_are_recorded_held_and_never_acted_on";
    if fuse_missing(TEST) {
        return;
    }
    let Some(mut run) = HeldRun::start(TEST, "held-fuse") else {
        return;
    };
    let readers = run.scope.sandbox("readers", false, false);
    let v2_ok = have_cgroup_v2();
    for how in ["v2frozen", "stopped", "traced", "slow"] {
        if how == "v2frozen" && !v2_ok {
            run.skip("FUSE server in a frozen cgroup v2: no cgroup2 mount");
            continue;
        }
        let sb = run
            .scope
            .sandbox(&format!("fuse-{how}"), how == "v2frozen", false);
        let dir = run.scope.path(&format!("fuse-{how}"));
        let extra: &[&str] = if how == "slow" {
            &["--answer-after", "1200"]
        } else {
            &["--answer-after", "0"]
        };
        let (server, _conn) = fuse_server(&sb, &dir, extra, &mut run.scope.undo);
        let out = run.scope.path(&format!("out-{how}"));
        let reader = if how == "slow" {
            readers
                .spawn(
                    Command::new("cat")
                        .arg(dir.join("stall"))
                        .stdout(std::fs::File::create(&out).unwrap()),
                )
                .unwrap()
        } else {
            late_reader(&readers, &dir.join("stall"), &out, &run.once_held())
        };
        let reason = match how {
            "v2frozen" => Some("frozen_cgroup"),
            "stopped" => Some("stopped"),
            "traced" => Some("traced"),
            _ => None,
        };
        run.check(Check {
            name: match how {
                "v2frozen" => "reader of a FUSE server frozen in cgroup v2",
                "stopped" => "reader of a SIGSTOPped FUSE server",
                "traced" => "reader of a ptrace-stopped FUSE server",
                _ => "reader of a slow FUSE server",
            },
            held: reason.map(|r| (reader.id(), r)),
            child: reader,
            output: Some(Output::Exact(out, fuse_content())),
        });
        match how {
            "v2frozen" => run.freeze(sb),
            "stopped" => {
                run.sigstop(server.id() as i32);
                run.keep(sb);
            }
            "traced" => {
                run.ptrace(server.id() as i32);
                run.keep(sb);
            }
            _ => run.keep(sb),
        }
        run.server(server);
    }
    run.keep(readers);
    run.finish();
}

#[test]
fn a_dead_fuse_server_is_aborted_and_its_waiters_live() {
    const TEST: &str = "a_dead_fuse_server_is_aborted_and_its_waiters_live";
    if fuse_missing(TEST) {
        return;
    }
    let Some(mut scope) = Scope::start(TEST, "dead-fuse") else {
        return;
    };
    let sb = scope.sandbox("dead", false, false);
    let dir = scope.path("mnt");
    let (mut server, conn) = fuse_server(&sb, &dir, &[], &mut scope.undo);
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    // Two lookups of a name the server never answers: the first waits for
    // the reply (interruptibly), the second in D behind it — a wait that
    // is not block I/O, invisible to procs_blocked …
    let mut c1 = Command::new("stat");
    c1.arg(dir.join("lookup-stall"));
    quiet(&mut c1);
    let mut stat1 = sb.spawn(&mut c1).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t_stat2 = Instant::now();
    let mut c2 = Command::new("stat");
    c2.arg(dir.join("lookup-stall"));
    quiet(&mut c2);
    let mut stat2 = sb.spawn(&mut c2).unwrap();
    // … and, a second later, a reader waiting for a page.
    std::thread::sleep(Duration::from_secs(1));
    let mut c3 = Command::new("cat");
    c3.arg(dir.join("stall"));
    quiet(&mut c3);
    let mut cat = sb.spawn(&mut c3).unwrap();
    let diagnosed = scope.watch.wait_event(Duration::from_secs(20), |e| {
        e["kind"] == "diagnosis" && e["details"]["evidence"]["blocker"]["kind"] == "fuse"
    });
    let diagnosed_after = t_stat2.elapsed();
    let abort = scope.watch.wait_event(Duration::from_secs(20), |e| {
        e["kind"] == "recovery"
            && e["details"]["action"] == "abort_fuse"
            && e["details"]["outcome"] == "recovered"
    });
    let statuses: Vec<Option<ExitStatus>> = [&mut cat, &mut stat1, &mut stat2]
        .into_iter()
        .map(|c| wait_exit(c, Duration::from_secs(10)))
        .collect();
    drop(server.stdin.take());
    let _ = wait_exit(&mut server, Duration::from_secs(10));
    let (events, log) = scope.watch.stop();
    drop(sb);
    drop(scope.undo);
    let _ = std::io::stderr().flush();

    let abort = abort.unwrap_or_else(|| panic!("no abort_fuse recovery; daemon log:\n{log}"));
    let diag = events
        .iter()
        .find(|e| e["kind"] == "diagnosis" && e["details"]["evidence"]["blocker"]["kind"] == "fuse")
        .expect("a d_state diagnosis naming the FUSE connection");
    eprintln!("{TEST}: {}\n{TEST}: {}", diag["message"], abort["message"]);
    let b = &diag["details"]["evidence"]["blocker"];
    assert_eq!(diag["details"]["class"], "d_state");
    assert_eq!(b["connection"], conn);
    assert_eq!(b["server"]["pid"], server.id());
    assert_eq!(
        diag["culprit"]["pid"],
        server.id(),
        "the culprit is the server"
    );
    // Every waiter woke by itself with an error: none was signalled.
    for (name, st) in ["cat", "stat", "stat (in D behind it)"]
        .iter()
        .zip(&statuses)
    {
        let st = st.unwrap_or_else(|| panic!("{name} still stuck after the abort"));
        assert_eq!(st.signal(), None, "{name} was killed: {st:?}");
    }
    // The D wait that is not block I/O was found, with its true age.
    assert!(diagnosed.is_some());
    let stuck = diag["details"]["evidence"]["stuck"].as_array().unwrap();
    let s2 = stuck
        .iter()
        .find(|s| s["pid"] == stat2.id())
        .unwrap_or_else(|| panic!("the lookup stuck in D is not listed: {diag}"));
    let age = Duration::from_millis(s2["stuck_ms"].as_u64().unwrap());
    let bound = Duration::from_secs(2);
    eprintln!(
        "{TEST}: the lookup in D was diagnosed {diagnosed_after:?} after it began, stuck {age:?}"
    );
    assert!(
        age >= bound && age <= diagnosed_after,
        "age {age:?}, diagnosed after {diagnosed_after:?}"
    );
    // Generous: the point is "found without a full scan" (which runs every
    // 10 s without the tracer); latency is measured by bench/hang/dstate-latency.sh.
    assert!(
        diagnosed_after < bound + Duration::from_secs(3),
        "{diagnosed_after:?}"
    );
    // Nothing but the abort acted.
    for a in actions(&events) {
        assert_eq!(a["details"]["action"], "abort_fuse", "{a}");
        assert!(
            a["details"]["touched"]
                .as_array()
                .is_none_or(|t| t.is_empty()),
            "{a}"
        );
    }
}
