//! Bystanders of the D-state logic that are stopped or throttled, under
//! the real `selfheal watch` with the default recovery ladders, for `HOLD`
//! (12 s): a job (`seq | gzip`) stopped with SIGSTOP like Ctrl-Z, and `dd`
//! reading a loop device with O_DIRECT, throttled by
//! `blkio.throttle.read_bps_device` to 128 bytes per second (slow progress
//! is progress). Each must end unharmed with the right output (gzip's
//! equals seq's, dd's the device's first 1536 bytes), the daemon must
//! record dd as held (reason `throttled`), diagnose neither and take no
//! action. The harness and its guarantees are in `common/held.rs`.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::held::{sh, Check, HeldRun, Output};
use common::on_path;

#[test]
fn a_stopped_job_and_throttled_io_are_recorded_held_and_never_acted_on() {
    const TEST: &str = "a_stopped_job_and_throttled_io_are_recorded_held_and_never_acted_on";
    let Some(mut run) = HeldRun::start(TEST, "held-stopped") else {
        return;
    };

    // --- a stopped job -----------------------------------------------------
    {
        let sb = run.scope.sandbox("job", false, false);
        let out = run.scope.path("job.gz");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "seq 1 400000 | gzip -1 > \"$1\"", "sh"])
            .arg(&out)
            .process_group(0);
        let job = sb.spawn(&mut cmd).unwrap();
        let pgid = job.id() as i32;
        std::thread::sleep(Duration::from_millis(100));
        selfheal_sys::signal::kill_process_group(pgid, 19).unwrap();
        run.continue_at_release(pgid);
        let seq: String = (1..=400_000).map(|i| format!("{i}\n")).collect();
        run.check(Check {
            name: "a job stopped with SIGSTOP",
            held: None,
            child: job,
            // gunzip gives seq's output.
            output: Some(Output::Decompressed {
                tool: "gzip",
                path: out,
                want: seq.into_bytes(),
            }),
        });
        run.keep(sb);
    }

    // --- dd throttled by blkio to 128 bytes per second ---------------------
    let blkio = selfheal_cgroup::Hierarchy::detect().ok().and_then(|h| {
        h.v1_mount(selfheal_cgroup::Controller::Blkio)
            .map(|m| m.mount_point.clone())
    });
    match (&blkio, on_path("losetup") && on_path("dd")) {
        (Some(root), true) => {
            let img = run.scope.path("throttle.img");
            let pattern: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 253) as u8).collect();
            std::fs::write(&img, &pattern).unwrap();
            let lo = sh("losetup", &["-f", "--show", "-r", img.to_str().unwrap()]).unwrap();
            let l2 = lo.clone();
            run.scope.undo.push("losetup", move || {
                let _ = sh("losetup", &["-d", &l2]);
            });
            let meta = std::fs::metadata(&lo).unwrap();
            let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
            let (major, minor) = (
                (rdev >> 8) & 0xfff,
                (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
            );
            let cg = root
                .join("selfheal-sandbox")
                .join(&run.scope.parent)
                .join("throttle");
            std::fs::create_dir_all(&cg).unwrap();
            let c2 = cg.clone();
            run.scope.undo.push("blkio cgroup", move || {
                for _ in 0..50 {
                    if std::fs::remove_dir(&c2).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = std::fs::remove_dir(c2.parent().unwrap());
            });
            std::fs::write(
                cg.join("blkio.throttle.read_bps_device"),
                format!("{major}:{minor} 128"),
            )
            .unwrap();
            let sb = run.scope.sandbox("throttled", false, false);
            let out = run.scope.path("dd.out");
            let dd = sb
                .spawn(
                    Command::new("sh")
                        .args([
                            "-c",
                            "echo $$ > \"$1/cgroup.procs\" && exec dd if=\"$2\" of=\"$3\" bs=512 count=3 iflag=direct status=none",
                            "sh",
                        ])
                        .arg(&cg)
                        .arg(&lo)
                        .arg(&out),
                )
                .unwrap();
            run.check(Check {
                name: "dd throttled to 128 B/s",
                held: Some((dd.id(), "throttled")),
                child: dd,
                output: Some(Output::Exact(out, pattern[..1536].to_vec())),
            });
            run.keep(sb);
        }
        _ => run.skip("throttled reader: no v1 blkio hierarchy or no losetup/dd"),
    }
    run.finish();
}
