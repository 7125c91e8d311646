//! The per-task readers on text captured from a real process, found under
//! an injected procfs root (see `tests/fixtures/task-6.18/README`).

use std::path::{Path, PathBuf};

use selfheal_procfs::task::{read_children, IoCounters, TaskDir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/task-6.18")
}

#[test]
fn maps_of_a_real_bash() {
    let maps = TaskDir::process(&root(), 4242).maps().unwrap();
    assert!(maps.len() > 20, "{maps:?}");
    assert_eq!(maps[0].path, "/usr/bin/bash");
    assert!(maps[0].is_file() && maps[0].read && !maps[0].write);
    let heap = maps.iter().find(|v| v.path == "[heap]").unwrap();
    assert!(heap.write && !heap.is_file() && !heap.is_empty());
    assert!(maps.iter().any(|v| v.is_special()));
    assert!(maps.windows(2).all(|w| w[0].end <= w[1].start));
}

#[test]
fn io_signals_and_pending_of_a_real_bash() {
    let p = TaskDir::process(&root(), 4242);
    assert_eq!(
        p.io().unwrap(),
        IoCounters {
            rchar: 8075,
            wchar: 0
        }
    );
    let d = p.signal_dispositions().unwrap();
    // bash catches SIGCHLD and ignores SIGINT and SIGQUIT while it waits.
    assert!(d.catches(libc::SIGCHLD) && !d.catches(libc::SIGSEGV));
    assert_eq!(
        d.ignored,
        (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGQUIT - 1))
    );
    let t = TaskDir::thread(&root(), 4242, 4242);
    assert_eq!(t.pending_signals().unwrap(), 0);
}

#[test]
fn fdinfo_and_children_of_a_real_bash() {
    let fi = TaskDir::process(&root(), 4242).fdinfo(3).unwrap();
    assert_eq!((fi.pos, fi.ino), (7, Some(318713)));
    assert_eq!(fi.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
    assert_eq!(read_children(&root(), 4242, &[4242]), Some(vec![6250]));
}

#[test]
fn net_unix_lists_bound_sockets_only() {
    let unix = TaskDir::process(&root(), 4242).net_unix().unwrap();
    assert_eq!(unix.len(), 3, "{unix:?}");
    assert!(unix[0].1.ends_with("/x sock.s") && unix[1].1 == unix[0].1);
    assert_eq!(unix[2], (9972638, "@abstract-name".to_string()));
}

#[test]
fn a_task_that_is_gone_says_so() {
    let p = TaskDir::process(&root(), 4243);
    for e in [
        p.maps().unwrap_err(),
        p.io().unwrap_err(),
        p.fds().unwrap_err(),
        p.fd_target(3).unwrap_err(),
        p.cwd().unwrap_err(),
    ] {
        assert!(e.is_gone(), "{e}");
    }
    assert!(!p.exists() && TaskDir::process(&root(), 4242).exists());
}

#[test]
fn a_kernel_without_children_files_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("7/task/7")).unwrap();
    std::fs::create_dir_all(dir.path().join("7/task/8")).unwrap();
    std::fs::write(dir.path().join("7/task/8/children"), "9 ").unwrap();
    assert_eq!(read_children(dir.path(), 7, &[7, 8]), None);
    // Only a missing file of the main thread means "not built in".
    assert_eq!(read_children(dir.path(), 7, &[8, 10]), Some(vec![9]));
}

#[test]
fn descriptors_and_working_directory_follow_the_links() {
    let dir = tempfile::tempdir().unwrap();
    let fd = dir.path().join("7/fd");
    std::fs::create_dir_all(&fd).unwrap();
    std::os::unix::fs::symlink("/etc/os-release", fd.join("3")).unwrap();
    std::os::unix::fs::symlink("pipe:[123]", fd.join("0")).unwrap();
    std::os::unix::fs::symlink("/tmp", dir.path().join("7/cwd")).unwrap();
    let p = TaskDir::process(dir.path(), 7);
    assert_eq!(p.fds().unwrap(), vec![0, 3]);
    assert_eq!(p.fd_target(0).unwrap(), Path::new("pipe:[123]"));
    assert_eq!(p.fd_path(3), fd.join("3"));
    assert_eq!(p.cwd().unwrap(), Path::new("/tmp"));
}

#[test]
fn malformed_text_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("7/fdinfo")).unwrap();
    std::fs::write(dir.path().join("7/io"), "rchar: 1\n").unwrap();
    std::fs::write(dir.path().join("7/fdinfo/3"), "flags:\t0\n").unwrap();
    std::fs::write(dir.path().join("7/maps"), b"0-1000 r--p 0 00:00 1 /\xff\n").unwrap();
    let p = TaskDir::process(dir.path(), 7);
    let e = p.io().unwrap_err().to_string();
    assert!(e.contains("7/io") && e.contains("rchar"), "{e}");
    let e = p.fdinfo(3).unwrap_err().to_string();
    assert!(e.contains("7/fdinfo/3"), "{e}");
    // A mapped file's name that is not UTF-8 is refused, not guessed.
    let e = p.maps().unwrap_err();
    assert!(!e.is_gone() && e.to_string().contains("7/maps"), "{e}");
}
