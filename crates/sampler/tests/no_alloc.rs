//! After start-up, taking a sample allocates nothing: the light detector's
//! hot loop must not touch the allocator (it may be starved of memory when
//! it is needed most). Proven with a counting global allocator.

use selfheal_sampler::{SampleBoard, Sampler};
use selfheal_sys::alloc::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn sampling_after_start_up_allocates_nothing() {
    let mut sampler = Sampler::new("/proc").expect("open /proc");
    let mut sample = sampler.new_sample();
    let board = SampleBoard::new(sampler.cpus());
    let mut copy = sampler.new_sample();
    // Warm-up: lets buffers reach the files' size.
    for _ in 0..3 {
        sampler.sample(&mut sample).unwrap();
    }
    CountingAllocator::start_this_thread();
    for _ in 0..200 {
        sampler.sample(&mut sample).unwrap();
        board.publish(&sample);
        assert!(board.read_into(&mut copy));
    }
    let n = CountingAllocator::stop();
    assert_eq!(n, 0, "{n} allocations in 200 samples");
    assert!(sample.seq >= 203);
    assert_eq!(copy.seq, sample.seq);
}
