//! Cost of evaluating the default rules on one live sample.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use selfheal_config::default_rules;
use selfheal_detect::LightDetector;
use selfheal_sampler::Sampler;

fn bench(c: &mut Criterion) {
    let mut sampler = Sampler::new("/proc").expect("open /proc");
    let mut sample = sampler.new_sample();
    sampler.sample(&mut sample).unwrap();
    let mut det = LightDetector::new(
        default_rules(),
        sampler.cpus(),
        50.0,
        Duration::from_secs(30),
    )
    .unwrap();
    let mut n = 0u64;
    c.bench_function("evaluate_default_rules", |b| {
        b.iter(|| det.evaluate(&sample, &mut |_| n += 1))
    });
    c.bench_function("sample_and_evaluate", |b| {
        b.iter(|| {
            sampler.sample(&mut sample).unwrap();
            det.evaluate(&sample, &mut |_| n += 1)
        })
    });
    std::hint::black_box(n);
}

criterion_group!(benches, bench);
criterion_main!(benches);
