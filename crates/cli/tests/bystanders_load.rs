//! Bystanders of user-space faults and of heavy legitimate load: the real
//! `selfheal watch` binary with the default recovery ladders, next to
//! processes that must never be touched.
//!
//! - A fork bomb under a pids limit, three times over, beside processes of
//!   the same name and uid outside it (older than the bomb, so "the oldest
//!   same-named process on the machine" is one of them): the bomb is
//!   stopped, the others stay alive and running, and no cgroup but the
//!   bomb's is acted on, also in the seconds after the kill (a follow-up
//!   diagnosis once blamed a namesake and killed its cgroup).
//! - A fork bomb without a pids limit that matters (its sandbox allows
//!   3000 tasks, far above where it is caught, so the cgroup-at-its-limit
//!   path never fires): diagnosed as one program's related processes,
//!   stopped whole, the namesakes beside it untouched.
//! - The same bomb with `quarantine` as its only step (as where the bomb
//!   shares its cgroup with others): its processes moved into a cgroup
//!   with pids.max = 0 beneath the bomb's and killed there, the quarantine
//!   removed, the namesakes untouched.
//! - A memory cgroup in a fill-and-kill loop (`tail /dev/zero` OOM-killed
//!   by the kernel and restarted by its shell): diagnosed, naming both, and
//!   nothing touched, inside the cgroup or out.
//! - Heavy legitimate load (every CPU busy, fork/exec churn, random I/O at
//!   queue depth 64, a parallel build): zero actions.
//!
//! Everything runs in sandboxes (pids, memory and CPU limits) under
//! `/selfheal-bystanders`, killed and removed on drop, also when a test
//! fails. Recovery is confined to that subtree (`recovery.allowed_cgroups`)
//! so that on a shared machine the daemon can never touch a process this
//! test did not start; the bystanders are inside it, so that limit is not
//! what protects them. Root only; each test says why it skips.

mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_event::{Event, EventKind};

use common::{ChildGuard, DaemonProc};

/// Every test starts a daemon and loads the machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The cgroup parent of every sandbox here, and recovery's scope.
const PARENT: &str = "selfheal-bystanders";

/// A daemon with the default recovery ladders, confined to [`PARENT`].
struct Watch {
    daemon: DaemonProc,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    fn start() -> Watch {
        Watch::start_with("")
    }

    /// [`Watch::start`] with `extra` appended to the config.
    fn start_with(extra: &str) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("selfheal.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nlisten = \"\"\n\n[recovery]\nallowed_cgroups = [\"/{PARENT}\"]\n{extra}"
            ),
        )
        .unwrap();
        let log = dir.path().join("events.jsonl");
        let store = dir.path().join("s.db");
        let daemon = DaemonProc::start(
            &[
                "--config",
                config.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--event-log",
                log.to_str().unwrap(),
            ],
            &[],
            None,
        );
        let w = Watch {
            daemon,
            log,
            _dir: dir,
        };
        assert!(
            w.wait_event(Duration::from_secs(30), |e| e.kind == EventKind::Start)
                .is_some(),
            "selfheal watch did not start:\n{}",
            w.daemon.log_text()
        );
        // Let the canaries and the first samples settle.
        std::thread::sleep(Duration::from_millis(500));
        w
    }

    fn events(&self) -> Vec<Event> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Recovery events that signalled or changed a process.
    fn actions(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Recovery)
            .filter(|e| {
                e.details["touched"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty())
            })
            .collect()
    }
}

/// Root, a writable cgroup hierarchy and `programs` on the PATH, or the
/// reason to skip.
fn can_run(test: &str, programs: &[&str]) -> bool {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {test}: needs root (cgroup sandboxes, the kernel log)");
        return false;
    }
    for p in programs {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()));
        if !found {
            eprintln!("SKIP {test}: `{p}` is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    true
}

/// A sandbox under [`PARENT`], or `None` (with the reason printed).
fn sandbox(test: &str, config: SandboxConfig) -> Option<Sandbox> {
    match Sandbox::new(config.parent(PARENT)) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: cannot create a sandbox: {e}"),
    }
}

/// `program ARGS` inside `sb`, in a process group of its own (a job of its
/// own, as a shell or a service manager would start it).
fn spawn(sb: &Sandbox, program: &str, args: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    ChildGuard(sb.spawn(&mut cmd).expect("spawn inside the sandbox"))
}

/// (state, start time) of `pid`.
fn stat_of(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Live (not zombie) processes in `sb`.
fn live_members(sb: &Sandbox) -> Vec<i32> {
    sb.cgroup()
        .procs_recursive()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| stat_of(*p).is_some_and(|(s, _)| s != 'Z' && s != 'X'))
        .collect()
}

fn touched(e: &Event) -> Vec<i32> {
    e.details["touched"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|p| p.as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fork_bombs_are_stopped_and_their_namesakes_untouched() {
    const TEST: &str = "fork_bombs_are_stopped_and_their_namesakes_untouched";
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run(TEST, &["bash", "sleep"]) {
        return;
    }
    // Namesakes first, so they are older than every bomb: same command
    // (bash), same uid, each a job of its own, in a sibling cgroup.
    let Some(others) = sandbox(
        TEST,
        SandboxConfig::new("namesakes")
            .pids_max(32)
            .memory_max_bytes(64 << 20)
            .cpus(Some(0.2)),
    ) else {
        return;
    };
    // Each also starts short-lived bash children, so the number of bash
    // processes on the machine moves up and down as a bomb's would.
    let namesakes: Vec<ChildGuard> = (0..3)
        .map(|_| {
            spawn(
                &others,
                "bash",
                &["-c", "while :; do bash -c 'sleep 0.2; :'; done"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<(i32, u64)> = namesakes
        .iter()
        .map(|c| {
            let pid = c.0.id() as i32;
            (pid, stat_of(pid).expect("namesake runs").1)
        })
        .collect();
    let w = Watch::start();
    let mut bomb_paths = HashSet::new();
    // More rounds: SELFHEAL_BYSTANDER_ROUNDS (bench/hang/bystanders-soak.sh).
    let rounds: usize = std::env::var("SELFHEAL_BYSTANDER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        // A limit above `heavy.fork_bomb_tasks` (200): after the kill, the
        // bomb's zombies plus the namesakes are enough processes for the
        // program-wide test, as when the bug blamed a namesake.
        let Some(bomb) = sandbox(
            TEST,
            SandboxConfig::new("bomb")
                .pids_max(300)
                .memory_max_bytes(768 << 20)
                .cpus(Some(0.5)),
        ) else {
            return;
        };
        let path = bomb.rel_path().to_string();
        bomb_paths.insert(path.clone());
        let started = Instant::now();
        let _bomb = spawn(&bomb, "bash", &["-c", ":(){ :|:& };:"]);
        let stopped = w.wait_event(Duration::from_secs(40), |e| {
            e.kind == EventKind::Recovery
                && e.details["class"] == "fork_bomb"
                && e.details["outcome"] == "recovered"
                && e.culprit.as_ref().and_then(|c| c.cgroup.as_deref()) == Some(path.as_str())
        });
        assert!(
            stopped.is_some(),
            "round {round}: the bomb in {path} was not stopped within 40 s; events:\n{:#?}",
            w.events()
        );
        let t0 = Instant::now();
        while !live_members(&bomb).is_empty() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            live_members(&bomb),
            Vec::<i32>::new(),
            "round {round}: bomb left"
        );
        let stopped_after = started.elapsed();
        // The follow-up diagnoses (the kernel's fork refusal report, the
        // zombies) come within the next second or two.
        std::thread::sleep(Duration::from_secs(3));
        let stop = stopped.unwrap();
        let after: Vec<Event> = w
            .events()
            .into_iter()
            .skip_while(|e| *e != stop)
            .skip(1)
            .collect();
        if std::env::var_os("SELFHEAL_BYSTANDER_DEBUG").is_some() {
            for e in &after {
                eprintln!(
                    "  {} {} {}",
                    e.kind,
                    e.rule.as_deref().unwrap_or(""),
                    e.message
                );
            }
        }
        let count = |k: EventKind| after.iter().filter(|e| e.kind == k).count();
        eprintln!(
            "{TEST}: round {round}: bomb stopped {} ms after it started; then {} diagnoses, {} dismissals, {} recovery steps",
            stopped_after.as_millis(),
            count(EventKind::Diagnosis),
            count(EventKind::Dismissed),
            count(EventKind::Recovery),
        );
        drop(bomb);
    }
    // The namesakes: alive, the same processes, never stopped, never touched.
    for &(pid, start) in &before {
        let (state, now) = stat_of(pid).unwrap_or_else(|| panic!("namesake {pid} is gone"));
        assert_eq!(now, start, "namesake {pid} was replaced");
        assert!(
            !matches!(state, 'T' | 't' | 'Z'),
            "namesake {pid} is {state}"
        );
    }
    assert!(live_members(&others).len() >= 3, "a namesake is missing");
    let namesake_pids: HashSet<i32> = before.iter().map(|b| b.0).collect();
    // No fork-bomb diagnosis or recovery step names anything but a bomb:
    // not a namesake, not the oldest bash on the machine (which the bug
    // blamed; here it is outside recovery's scope, so blaming it shows as
    // a refusal, still a wrong diagnosis). Faults of other tests running
    // at the same time (in `/selfheal-sandbox`) are not ours to judge.
    for e in w.events() {
        let about_bomb = matches!(e.kind, EventKind::Diagnosis | EventKind::Recovery)
            && e.details["class"] == "fork_bomb";
        let cg = e.culprit.as_ref().and_then(|c| c.cgroup.clone());
        let others_test = cg
            .as_deref()
            .is_some_and(|c| c.starts_with("/selfheal-sandbox/"));
        assert!(
            !about_bomb || others_test || cg.as_ref().is_some_and(|c| bomb_paths.contains(c)),
            "a fork-bomb verdict about something else than the bombs: {e:#?}"
        );
    }
    for e in w.actions() {
        let cg = e.culprit.as_ref().and_then(|c| c.cgroup.clone());
        assert!(
            cg.as_ref().is_some_and(|c| bomb_paths.contains(c)),
            "an action outside the bombs' cgroups: {e:#?}"
        );
        assert!(
            touched(&e).iter().all(|p| !namesake_pids.contains(p)),
            "a namesake was touched: {e:#?}"
        );
    }
    assert!(
        !others.cgroup().is_frozen().unwrap_or(false),
        "the namesakes' cgroup was frozen"
    );
    drop(namesakes);
    drop(w);
}

#[test]
fn a_fork_bomb_without_a_pids_limit_is_stopped_and_its_namesakes_untouched() {
    const TEST: &str = "a_fork_bomb_without_a_pids_limit_is_stopped_and_its_namesakes_untouched";
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run(TEST, &["bash", "sleep"]) {
        return;
    }
    let Some(others) = sandbox(
        TEST,
        SandboxConfig::new("namesakes")
            .pids_max(32)
            .memory_max_bytes(64 << 20)
            .cpus(Some(0.2)),
    ) else {
        return;
    };
    let namesakes: Vec<ChildGuard> = (0..3)
        .map(|_| {
            spawn(
                &others,
                "bash",
                &["-c", "while :; do bash -c 'sleep 0.2; :'; done"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<(i32, u64)> = namesakes
        .iter()
        .map(|c| {
            let pid = c.0.id() as i32;
            (pid, stat_of(pid).expect("namesake runs").1)
        })
        .collect();
    // The limit is the machine's safety net, not the detector: the
    // cgroup path is moved to the limit itself (100 %), so on a fast
    // machine, where the bomb reaches 2700 tasks between two sweeps, the
    // no-limit path still has its turn first.
    let w = Watch::start_with("\n[heavy]\ncgroup_pids_percent = 100.0\n");
    let Some(bomb) = sandbox(
        TEST,
        SandboxConfig::new("bomb")
            .pids_max(3000)
            .memory_max_bytes(2 << 30)
            .cpus(Some(0.5)),
    ) else {
        return;
    };
    let path = bomb.rel_path().to_string();
    let started = Instant::now();
    // Each generation waits 0.2 s before it forks: still a bomb (the
    // tasks double every ~0.25 s), but on an idle machine it no longer
    // reaches the 3000-task safety net inside one sweep, which would
    // leave only the cgroup path to see it.
    let _bomb = spawn(&bomb, "bash", &["-c", ":(){ sleep 0.2; :|:& };:"]);
    let stopped = w.wait_event(Duration::from_secs(60), |e| {
        e.kind == EventKind::Recovery
            && e.details["class"] == "fork_bomb"
            && e.details["outcome"] == "recovered"
            && e.culprit.as_ref().and_then(|c| c.cgroup.as_deref()) == Some(path.as_str())
    });
    let pids_max_hit = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{path}/pids.events"))
        .unwrap_or_default();
    assert!(
        stopped.is_some(),
        "the bomb in {path} was not stopped within 60 s; events:\n{:#?}",
        w.events()
    );
    let t0 = Instant::now();
    while !live_members(&bomb).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = live_members(&bomb)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .collect();
    assert!(
        left.is_empty(),
        "bomb left ({} processes), e.g.:\n{}\nevents:\n{:#?}",
        left.len(),
        left.iter().take(10).cloned().collect::<String>(),
        w.events()
    );
    eprintln!(
        "{TEST}: stopped {} ms after it started (pids.events: {})",
        started.elapsed().as_millis(),
        pids_max_hit.trim()
    );
    for e in w.events().iter().filter(|e| e.kind == EventKind::Recovery) {
        eprintln!(
            "{TEST}: step {} {} {}: {}",
            e.details["step"], e.details["action"], e.details["outcome"], e.details["reason"]
        );
    }
    // The diagnosis that led to it was the no-limit one: one program's
    // related processes, not a cgroup at its limit.
    let diag = w
        .events()
        .into_iter()
        .find(|e| {
            e.kind == EventKind::Diagnosis
                && e.details["class"] == "fork_bomb"
                && e.culprit.as_ref().and_then(|c| c.cgroup.as_deref()) == Some(path.as_str())
        })
        .expect("a fork_bomb diagnosis of the bomb");
    // On a loaded machine the bomb can reach its 3000-task safety net
    // before two sweeps see it grow; then the limit path is the right
    // one and the no-limit premise did not hold (said, not hidden).
    let hit_net = pids_max_hit
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    if hit_net && diag.details["evidence"]["scope"] == "cgroup" {
        eprintln!("{TEST}: the bomb reached its safety net first; the cgroup path stopped it");
    } else {
        assert_eq!(
            diag.details["evidence"]["scope"], "program",
            "not the no-limit path: {diag:#?}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    for &(pid, start) in &before {
        let (state, now) = stat_of(pid).unwrap_or_else(|| panic!("namesake {pid} is gone"));
        assert_eq!(now, start, "namesake {pid} was replaced");
        assert!(
            !matches!(state, 'T' | 't' | 'Z'),
            "namesake {pid} is {state}"
        );
    }
    let namesake_pids: HashSet<i32> = before.iter().map(|b| b.0).collect();
    for e in w.actions() {
        let cg = e.culprit.as_ref().and_then(|c| c.cgroup.clone());
        let others_test = cg
            .as_deref()
            .is_some_and(|c| c.starts_with("/selfheal-sandbox/"));
        assert!(
            others_test || cg.as_deref() == Some(path.as_str()),
            "an action outside the bomb's cgroup: {e:#?}"
        );
        assert!(
            touched(&e).iter().all(|p| !namesake_pids.contains(p)),
            "a namesake was touched: {e:#?}"
        );
    }
    drop(bomb);
    drop(namesakes);
    drop(w);
}

#[test]
fn a_quarantined_fork_bomb_is_killed_and_its_namesakes_untouched() {
    const TEST: &str = "a_quarantined_fork_bomb_is_killed_and_its_namesakes_untouched";
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run(TEST, &["bash", "sleep"]) {
        return;
    }
    let Some(others) = sandbox(
        TEST,
        SandboxConfig::new("namesakes")
            .pids_max(32)
            .memory_max_bytes(64 << 20)
            .cpus(Some(0.2)),
    ) else {
        return;
    };
    let namesakes: Vec<ChildGuard> = (0..3)
        .map(|_| {
            spawn(
                &others,
                "bash",
                &["-c", "while :; do bash -c 'sleep 0.2; :'; done"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<(i32, u64)> = namesakes
        .iter()
        .map(|c| {
            let pid = c.0.id() as i32;
            (pid, stat_of(pid).expect("namesake runs").1)
        })
        .collect();
    // The quarantine alone, as where kill_tree and kill_cgroup cannot act
    // (a bomb in the root cgroup or a login session).
    let w = Watch::start_with("\n[recovery.ladder]\nfork_bomb = [\"record\", \"quarantine\"]\n");
    // 1000 tasks: the program-wide path fires at 200 and growing, before
    // the limit; fewer than the no-limit test's 3000 keeps the moves and
    // the kill within the wait on a machine other sessions load too.
    let Some(bomb) = sandbox(
        TEST,
        SandboxConfig::new("bomb")
            .pids_max(1000)
            .memory_max_bytes(2 << 30)
            .cpus(Some(0.5)),
    ) else {
        return;
    };
    let path = bomb.rel_path().to_string();
    let started = Instant::now();
    let _bomb = spawn(&bomb, "bash", &["-c", ":(){ :|:& };:"]);
    let done = w.wait_event(Duration::from_secs(120), |e| {
        e.kind == EventKind::Recovery
            && e.details["class"] == "fork_bomb"
            && e.details["action"] == "quarantine"
            && e.details["outcome"] == "recovered"
            && e.culprit.as_ref().and_then(|c| c.cgroup.as_deref()) == Some(path.as_str())
    });
    assert!(
        done.is_some(),
        "the bomb in {path} was not quarantined and killed within 120 s; events:\n{:#?}",
        w.events()
    );
    let done = done.unwrap();
    let t0 = Instant::now();
    while !live_members(&bomb).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = live_members(&bomb);
    let steps: Vec<String> = w
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Recovery)
        .map(|e| e.message.clone())
        .collect();
    assert!(
        left.is_empty(),
        "{} bomb processes left; recovery:\n{steps:#?}",
        left.len()
    );
    eprintln!(
        "{TEST}: {} processes quarantined and killed, {} ms after the bomb started",
        done.details["touched"].as_array().map_or(0, Vec::len),
        started.elapsed().as_millis()
    );
    // The quarantine cgroup goes with its processes (once thousands of
    // killed processes have exited on a loaded machine).
    let quarantines = || -> Vec<String> {
        bomb.cgroup()
            .dirs()
            .iter()
            .flat_map(|dir| {
                std::fs::read_dir(dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.path().display().to_string())
                            .filter(|n| n.contains("/selfheal-quarantine-"))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    let t0 = Instant::now();
    while !quarantines().is_empty() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        quarantines().is_empty(),
        "left: {:?}; recovery:\n{steps:#?}",
        quarantines()
    );
    std::thread::sleep(Duration::from_secs(3));
    for &(pid, start) in &before {
        let (state, now) = stat_of(pid).unwrap_or_else(|| panic!("namesake {pid} is gone"));
        assert_eq!(now, start, "namesake {pid} was replaced");
        assert!(
            !matches!(state, 'T' | 't' | 'Z'),
            "namesake {pid} is {state}"
        );
    }
    let namesake_pids: HashSet<i32> = before.iter().map(|b| b.0).collect();
    for e in w.actions() {
        let cg = e.culprit.as_ref().and_then(|c| c.cgroup.clone());
        assert_eq!(
            cg.as_deref(),
            Some(path.as_str()),
            "an action outside the bomb's cgroup: {e:#?}"
        );
        assert!(
            touched(&e).iter().all(|p| !namesake_pids.contains(p)),
            "a namesake was touched: {e:#?}"
        );
    }
    drop(bomb);
    drop(namesakes);
    drop(w);
}

#[test]
fn a_memory_cgroup_fill_and_kill_loop_is_diagnosed_and_nothing_touched() {
    const TEST: &str = "a_memory_cgroup_fill_and_kill_loop_is_diagnosed_and_nothing_touched";
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run(TEST, &["sh", "tail", "sleep"]) {
        return;
    }
    let Some(others) = sandbox(
        TEST,
        SandboxConfig::new("tail-namesake")
            .pids_max(8)
            .memory_max_bytes(32 << 20)
            .cpus(Some(0.2)),
    ) else {
        return;
    };
    let namesake = spawn(&others, "tail", &["-f", "/dev/null"]);
    let namesake_pid = namesake.0.id() as i32;
    let w = Watch::start();
    let Some(looping) = sandbox(
        TEST,
        SandboxConfig::new("oomloop")
            .pids_max(16)
            .memory_max_bytes(32 << 20)
            .cpus(Some(0.5)),
    ) else {
        return;
    };
    let path = looping.rel_path().to_string();
    // `tail /dev/zero` looks for a line end that never comes and holds
    // everything it read: it fills the cgroup in a moment, the kernel kills
    // it, its shell starts it again (twice a second at most, to keep the
    // kernel log readable for everyone else).
    let shell = spawn(
        &looping,
        "sh",
        &["-c", "while :; do tail /dev/zero; sleep 0.5; done"],
    );
    let shell_pid = shell.0.id() as i32;
    let diagnosis = w.wait_event(Duration::from_secs(45), |e| {
        e.kind == EventKind::Diagnosis
            && e.details["class"] == "memory_exhaustion"
            && e.details["evidence"]["scope"] == "cgroup_oom_loop"
            && e.details["evidence"]["cgroup"] == path.as_str()
    });
    let Some(d) = diagnosis else {
        panic!(
            "no fill-and-kill diagnosis for {path} within 45 s; events:\n{:#?}",
            w.events()
        );
    };
    let ev = &d.details["evidence"];
    assert_eq!(ev["program"], "tail", "{d:#?}");
    assert!(ev["oom_kills"].as_u64().unwrap() >= 3, "{d:#?}");
    // The respawning shell is named when an instance ran at the snapshot.
    if !ev["respawner"].is_null() {
        assert_eq!(ev["respawner"]["pid"], shell_pid, "{d:#?}");
        assert_eq!(ev["respawner"]["inside_cgroup"], true, "{d:#?}");
    }
    assert!(d.details["record_only"].is_string(), "{d:#?}");
    // Let the ladder run and a few more kills come.
    std::thread::sleep(Duration::from_secs(3));
    let actions = w.actions();
    assert!(actions.is_empty(), "recovery acted: {actions:#?}");
    assert!(
        stat_of(shell_pid).is_some_and(|(s, _)| s != 'T' && s != 'Z'),
        "the looping shell was stopped or killed"
    );
    assert!(
        stat_of(namesake_pid).is_some_and(|(s, _)| s != 'T' && s != 'Z'),
        "the tail outside the cgroup was stopped or killed"
    );
    drop(shell);
    drop(looping);
    drop(namesake);
    drop(others);
    drop(w);
}

/// 40 C files and a Makefile: a parallel build with the real compiler.
fn build_tree(dir: &Path) {
    let mut objs = Vec::new();
    for i in 0..40 {
        std::fs::write(
            dir.join(format!("f{i}.c")),
            format!(
                "#include <stdio.h>\n#include <string.h>\n\
                 int f{i}(const char *s) {{ char b[64]; snprintf(b, sizeof b, \"%s-{i}\", s); return (int)strlen(b); }}\n"
            ),
        )
        .unwrap();
        objs.push(format!("f{i}.o"));
    }
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "all: libf.a\nlibf.a: {o}\n\tar rcs $@ $^\n%.o: %.c\n\tgcc -O2 -c $< -o $@\nclean:\n\trm -f *.o libf.a\n",
            o = objs.join(" ")
        ),
    )
    .unwrap();
}

#[test]
fn heavy_legitimate_load_gets_no_action() {
    const TEST: &str = "heavy_legitimate_load_gets_no_action";
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run(TEST, &["stress-ng", "fio", "make", "gcc", "sh", "true"]) {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let Some(load) = sandbox(
        TEST,
        SandboxConfig::new("load")
            .pids_max(512)
            .memory_max_bytes(1 << 30)
            .cpus(Some(cpus as f64)),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let w = Watch::start();
    let since = w.events().len();
    let secs = 15;
    let mut loads: Vec<ChildGuard> = Vec::new();
    // Every CPU busy.
    loads.push(spawn(
        &load,
        "stress-ng",
        &[
            "--cpu",
            &cpus.to_string(),
            "--timeout",
            &format!("{secs}s"),
            "--quiet",
        ],
    ));
    // fork/exec churn.
    loads.push(spawn(&load, "sh", &["-c", "while :; do /bin/true; done"]));
    // Random I/O at queue depth 64, direct (no page cache).
    let fio_file = dir.path().join("fio.dat");
    loads.push(spawn(
        &load,
        "fio",
        &[
            "--name=bystander",
            &format!("--filename={}", fio_file.display()),
            "--size=64M",
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=64",
            "--ioengine=libaio",
            "--direct=1",
            "--time_based",
            &format!("--runtime={secs}"),
        ],
    ));
    // A parallel build, again and again.
    let mut make = Command::new("sh");
    make.args([
        "-c",
        &format!(
            "cd '{}' && while :; do make -s -j{} clean all >/dev/null 2>&1; done",
            dir.path().display(),
            2 * cpus
        ),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    loads.push(ChildGuard(load.spawn(&mut make).expect("spawn the build")));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        for l in &mut loads {
            if let Ok(Some(status)) = l.0.try_wait() {
                // stress-ng and fio stop at the end of their time only.
                assert!(
                    t0.elapsed() >= Duration::from_secs(secs - 2),
                    "a load generator stopped early ({status}): was it acted on?"
                );
            }
        }
    }
    // What happened meanwhile: no action, and no fault found in the load.
    let events: Vec<Event> = w.events().into_iter().skip(since).collect();
    let actions = w.actions();
    assert!(
        actions.is_empty(),
        "recovery acted on legitimate load: {actions:#?}"
    );
    let ours = |e: &Event| {
        e.culprit
            .as_ref()
            .and_then(|c| c.cgroup.as_deref())
            .is_some_and(|c| c.starts_with(&format!("/{PARENT}/")))
    };
    let faults: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Diagnosis && ours(e))
        .collect();
    assert!(
        faults.is_empty(),
        "legitimate load diagnosed as a fault: {faults:#?}"
    );
    // The load keeps kernel threads busy (I/O completion workers, softirq
    // processing, reclaim): busy, sleeping between work, never runaways.
    let runaways: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Diagnosis && e.details["class"] == "runaway_kthread")
        .collect();
    assert!(
        runaways.is_empty(),
        "a kernel thread busy with legitimate load called a runaway: {runaways:#?}"
    );
    let dismissed = events
        .iter()
        .filter(|e| e.kind == EventKind::Dismissed)
        .count();
    eprintln!(
        "{TEST}: {} events during {secs} s of load, {dismissed} alerts dismissed as legitimate load, 0 actions",
        events.len()
    );
    drop(loads);
    drop(load);
    drop(w);
}
