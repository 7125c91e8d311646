//! Bystanders of the D-state logic on a frozen filesystem: a writer
//! (python3, `write`) and a shell (`>>`, `openat`) on an ext4 filesystem on
//! a loop device frozen with `fsfreeze -f` (as backup tools and LVM
//! snapshots do), under the real `selfheal watch` with the default
//! recovery ladders, for `HOLD` (12 s). Both must end unharmed with their
//! output byte for byte, the daemon must record them as held (reason
//! `frozen_filesystem`, the mount named) and take no action. The harness
//! and its guarantees are in `common/held.rs`.

mod common;

use std::process::Command;

use common::held::{missing, sh, Check, HeldRun, Output};

#[test]
fn writers_on_a_frozen_filesystem_are_recorded_held_and_never_acted_on() {
    const TEST: &str = "writers_on_a_frozen_filesystem_are_recorded_held_and_never_acted_on";
    let Some(mut run) = HeldRun::start(TEST, "held-fs") else {
        return;
    };
    if let Some(why) = missing("fsfreeze", &["losetup", "mkfs.ext4", "fsfreeze", "python3"]) {
        run.skip(why);
        run.finish();
        return;
    }
    let img = run.scope.path("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]).unwrap();
    let lo = sh("losetup", &["-f", "--show", img.to_str().unwrap()]).unwrap();
    let l2 = lo.clone();
    run.scope.undo.push("losetup", move || {
        let _ = sh("losetup", &["-d", &l2]);
    });
    let mnt = run.scope.path("fs");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &["-t", "ext4", &lo, mnt.to_str().unwrap()]).unwrap();
    let m2 = mnt.clone();
    run.scope.undo.push("mount", move || {
        let _ = sh("fsfreeze", &["-u", m2.to_str().unwrap()]);
        let _ = sh("umount", &[m2.to_str().unwrap()]);
    });
    let sb = run.scope.sandbox("fsfreeze", false, false);
    let data = mnt.join("data");
    // Both start writing only when told, just before the freeze: started
    // at once, they could finish (3.6 s, 2.4 s) before the rest of the
    // setup does on a busy machine, and nothing would be frozen under them.
    let go = run.before_hold();
    // python3 writes 4 KiB chunks (write(2) on an open file) …
    let writer = sb
        .spawn(
            Command::new("python3")
                .args([
                    "-c",
                    "import os,sys,time\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.01)\nwith open(sys.argv[1],'wb') as f:\n for i in range(120):\n  f.write(bytes((i+j)%251 for j in range(4096))); f.flush(); time.sleep(0.03)\n",
                ])
                .arg(&data)
                .arg(&go),
        )
        .unwrap();
    // … and a shell appends lines (open(2) for each).
    let lines = mnt.join("lines");
    let appender = sb
        .spawn(
            Command::new("sh")
                .args([
                    "-c",
                    "while [ ! -e \"$2\" ]; do sleep 0.01; done; i=0; while [ $i -lt 80 ]; do echo line$i >> \"$1\"; i=$((i+1)); sleep 0.03; done",
                    "sh",
                ])
                .arg(&lines)
                .arg(&go),
        )
        .unwrap();
    let expect_data: Vec<u8> = (0..120usize)
        .flat_map(|i| (0..4096usize).map(move |j| ((i + j) % 251) as u8))
        .collect();
    let expect_lines: Vec<u8> = (0..80)
        .map(|i| format!("line{i}\n"))
        .collect::<String>()
        .into_bytes();
    run.check(Check {
        name: "fsfreeze writer (python3)",
        held: Some((writer.id(), "frozen_filesystem")),
        child: writer,
        output: Some(Output::Exact(data, expect_data)),
    });
    run.check(Check {
        name: "fsfreeze appender (sh >>)",
        held: Some((appender.id(), "frozen_filesystem")),
        child: appender,
        output: Some(Output::Exact(lines, expect_lines)),
    });
    run.keep(sb);
    run.fsfreeze(mnt);
    run.finish();
}
