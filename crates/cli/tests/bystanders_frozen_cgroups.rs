//! Bystanders of the D-state logic in frozen cgroups: `xz` compressing in
//! a cgroup-v1 freezer cgroup set FROZEN (`docker pause` on v1), and a
//! python3 computation in a frozen cgroup v2 (`cgroup.freeze` = 1), under
//! the real `selfheal watch` with the default recovery ladders, for `HOLD`
//! (12 s). Each must end unharmed (xz's output decompresses to its input
//! byte for byte), the daemon must record xz as held (reason
//! `frozen_cgroup`), diagnose neither and take no action. The harness and
//! its guarantees are in `common/held.rs`.

mod common;

use std::process::Command;

use common::held::{have_cgroup_v2, Check, HeldRun, Output};
use common::on_path;

#[test]
fn tasks_in_frozen_cgroups_are_recorded_held_and_never_acted_on() {
    const TEST: &str = "tasks_in_frozen_cgroups_are_recorded_held_and_never_acted_on";
    let Some(mut run) = HeldRun::start(TEST, "held-cgroups") else {
        return;
    };

    // --- xz in a cgroup-v1 freezer cgroup ----------------------------------
    let v1_freezer = selfheal_cgroup::Hierarchy::detect()
        .ok()
        .is_some_and(|h| h.v1_mount(selfheal_cgroup::Controller::Freezer).is_some());
    if !v1_freezer || !on_path("xz") {
        run.skip("xz in a v1 freezer cgroup: no v1 freezer hierarchy or no xz");
    } else {
        let input = run.scope.path("xz-in");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let text: Vec<u8> = (0..(6 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghij klmnop\n"[(x % 18) as usize]
            })
            .collect();
        std::fs::write(&input, &text).unwrap();
        let sb = run.scope.sandbox("v1frozen", false, true);
        let out = run.scope.path("xz-out");
        let xz = sb
            .spawn(
                Command::new("xz")
                    .args(["-6", "-T1", "-c"])
                    .arg(&input)
                    .stdout(std::fs::File::create(&out).unwrap()),
            )
            .unwrap();
        run.check(Check {
            name: "xz in a v1 freezer cgroup",
            held: Some((xz.id(), "frozen_cgroup")),
            child: xz,
            // Its output decompresses to its input, byte for byte.
            output: Some(Output::Decompressed {
                tool: "xz",
                path: out,
                want: text,
            }),
        });
        run.freeze(sb);
    }

    // --- a computation frozen in cgroup v2 ---------------------------------
    if have_cgroup_v2() {
        let sb = run.scope.sandbox("v2plain", true, false);
        let out = run.scope.path("sha.out");
        let child = sb
            .spawn(
                Command::new("python3")
                    .args([
                        "-c",
                        "import hashlib,sys\nh=b''\nfor i in range(300000): h=hashlib.sha256(h).digest()\nopen(sys.argv[1],'w').write(h.hex())\n",
                    ])
                    .arg(&out),
            )
            .unwrap();
        run.check(Check {
            name: "python3 in a frozen cgroup v2",
            held: None,
            child,
            output: None,
        });
        run.freeze(sb);
    } else {
        run.skip("python3 in a frozen cgroup v2: no cgroup2 mount");
    }
    run.finish();
}
