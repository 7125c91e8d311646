//! An infinite loop: after `--after MS`, one thread spins in user space
//! forever without system calls while the main thread waits for it.

#![forbid(unsafe_code)]

use selfheal_testprogs::{stamp, Args};

fn main() {
    let args = Args::from_env();
    let stamps = args.stamp_file();
    stamp(stamps.as_deref(), "start");
    println!("tp-spin: pid {} started", std::process::id());
    std::thread::sleep(args.millis("after", 0));
    stamp(stamps.as_deref(), "spin");
    let spinner = std::thread::Builder::new()
        .name("spinner".into())
        .spawn(|| {
            let mut x = 1u64;
            loop {
                // Pure arithmetic: no system call, no page fault, no yield.
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
        .expect("spawn spinner");
    let _ = spinner.join();
}
