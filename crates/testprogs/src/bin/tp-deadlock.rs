//! A two-thread deadlock: after `--after MS`, two threads each take one
//! mutex and then wait forever for the other's.

#![forbid(unsafe_code)]

use selfheal_testprogs::{stamp, Args};
use std::sync::{Arc, Barrier, Mutex};

fn main() {
    let args = Args::from_env();
    let stamps = args.stamp_file();
    stamp(stamps.as_deref(), "start");
    println!("tp-deadlock: pid {} started", std::process::id());
    std::thread::sleep(args.millis("after", 0));
    let a = Arc::new(Mutex::new(0u32));
    let b = Arc::new(Mutex::new(0u32));
    // Both threads hold their first lock before either asks for the
    // second: the deadlock is certain, not a race.
    let barrier = Arc::new(Barrier::new(2));
    let worker =
        |first: Arc<Mutex<u32>>, second: Arc<Mutex<u32>>, barrier: Arc<Barrier>, name: &str| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let mut g1 = first.lock().unwrap();
                    barrier.wait();
                    let mut g2 = second.lock().unwrap();
                    *g1 += 1;
                    *g2 += 1;
                })
                .expect("spawn worker")
        };
    stamp(stamps.as_deref(), "deadlock");
    let t1 = worker(
        Arc::clone(&a),
        Arc::clone(&b),
        Arc::clone(&barrier),
        "lock-ab",
    );
    let t2 = worker(b, a, barrier, "lock-ba");
    let _ = t1.join();
    let _ = t2.join();
    unreachable!("the threads cannot finish");
}
