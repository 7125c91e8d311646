//! Cost of one sample on the live machine (target: ≤ 30 µs on a 2-core VM).

use criterion::{criterion_group, criterion_main, Criterion};
use selfheal_sampler::{SampleBoard, Sampler};

fn bench(c: &mut Criterion) {
    let mut sampler = Sampler::new("/proc").expect("open /proc");
    let mut sample = sampler.new_sample();
    let board = SampleBoard::new(sampler.cpus());
    c.bench_function("sample_live_proc", |b| {
        b.iter(|| sampler.sample(&mut sample).unwrap())
    });
    c.bench_function("sample_and_publish", |b| {
        b.iter(|| {
            sampler.sample(&mut sample).unwrap();
            board.publish(&sample);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
