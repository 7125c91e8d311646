//! Publishing the latest sample to readers (the HTTP server) without locks.
//!
//! The light-detector thread writes; any number of threads read. A sequence
//! counter makes it a seqlock built from atomics only: a reader retries when
//! the writer was mid-update, and the writer never waits for a reader.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use selfheal_procfs::diskstats::DevName;

use crate::metric::{CpuMetric, DiskMetric, SystemMetric};
use crate::sample::Sample;
use crate::MAX_DISKS;

/// The most recent sample, readable from any thread.
#[derive(Debug)]
pub struct SampleBoard {
    seq: AtomicU64,
    sample_seq: AtomicU64,
    wall_unix_ms: AtomicI64,
    interval_ns: AtomicU64,
    system: Vec<AtomicU64>,
    cpus: Vec<AtomicU64>,
    ncpus: usize,
    disks: Vec<AtomicU64>,
    disk_names: Vec<[AtomicU64; 4]>,
    disk_count: AtomicUsize,
}

impl SampleBoard {
    /// A board for `cpus` CPUs.
    pub fn new(cpus: usize) -> SampleBoard {
        let atoms = |n: usize| (0..n).map(|_| AtomicU64::new(f64::NAN.to_bits())).collect();
        SampleBoard {
            seq: AtomicU64::new(0),
            sample_seq: AtomicU64::new(0),
            wall_unix_ms: AtomicI64::new(0),
            interval_ns: AtomicU64::new(0),
            system: atoms(SystemMetric::COUNT),
            cpus: atoms(cpus * CpuMetric::COUNT),
            ncpus: cpus,
            disks: atoms(MAX_DISKS * DiskMetric::COUNT),
            disk_names: (0..MAX_DISKS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            disk_count: AtomicUsize::new(0),
        }
    }

    /// Publishes `s`. Called by the single writer; never blocks.
    pub fn publish(&self, s: &Sample) {
        let start = self.seq.load(Ordering::Relaxed);
        self.seq.store(start.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.sample_seq.store(s.seq, Ordering::Relaxed);
        self.wall_unix_ms.store(s.wall_unix_ms, Ordering::Relaxed);
        self.interval_ns
            .store(s.interval.as_nanos() as u64, Ordering::Relaxed);
        for (a, v) in self.system.iter().zip(s.system.iter()) {
            a.store(v.to_bits(), Ordering::Relaxed);
        }
        for (cpu, vals) in s.cpus.iter().enumerate().take(self.ncpus) {
            for (j, v) in vals.iter().enumerate() {
                self.cpus[cpu * CpuMetric::COUNT + j].store(v.to_bits(), Ordering::Relaxed);
            }
        }
        let n = s.disks.len().min(MAX_DISKS);
        for d in 0..n {
            for (j, v) in s.disks[d].iter().enumerate() {
                self.disks[d * DiskMetric::COUNT + j].store(v.to_bits(), Ordering::Relaxed);
            }
            let bytes = s.disk_names[d].as_bytes();
            for (w, a) in self.disk_names[d].iter().enumerate() {
                let mut word = [0u8; 8];
                let lo = (w * 8).min(bytes.len());
                let hi = (w * 8 + 8).min(bytes.len());
                word[..hi - lo].copy_from_slice(&bytes[lo..hi]);
                a.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        self.disk_count.store(n, Ordering::Relaxed);
        self.seq.store(start.wrapping_add(2), Ordering::Release);
    }

    /// Copies the latest published sample into `out` (sized for the same CPU
    /// count). Returns false when nothing has been published yet.
    pub fn read_into(&self, out: &mut Sample) -> bool {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before == 0 {
                return false;
            }
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            out.seq = self.sample_seq.load(Ordering::Relaxed);
            out.wall_unix_ms = self.wall_unix_ms.load(Ordering::Relaxed);
            out.interval =
                std::time::Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed));
            for (v, a) in out.system.iter_mut().zip(self.system.iter()) {
                *v = f64::from_bits(a.load(Ordering::Relaxed));
            }
            for (cpu, vals) in out.cpus.iter_mut().enumerate().take(self.ncpus) {
                for (j, v) in vals.iter_mut().enumerate() {
                    *v = f64::from_bits(
                        self.cpus[cpu * CpuMetric::COUNT + j].load(Ordering::Relaxed),
                    );
                }
            }
            let n = self.disk_count.load(Ordering::Relaxed).min(MAX_DISKS);
            out.disks.clear();
            out.disk_names.clear();
            for d in 0..n {
                let mut vals = [f64::NAN; DiskMetric::COUNT];
                for (j, v) in vals.iter_mut().enumerate() {
                    *v = f64::from_bits(
                        self.disks[d * DiskMetric::COUNT + j].load(Ordering::Relaxed),
                    );
                }
                out.disks.push(vals);
                let mut name = [0u8; 32];
                for (w, a) in self.disk_names[d].iter().enumerate() {
                    name[w * 8..w * 8 + 8]
                        .copy_from_slice(&a.load(Ordering::Relaxed).to_le_bytes());
                }
                let len = name.iter().position(|b| *b == 0).unwrap_or(32);
                out.disk_names.push(DevName::new(&name[..len]));
            }
            std::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn publish_and_read() {
        let board = SampleBoard::new(2);
        let mut out = Sample::with_cpus(2);
        assert!(!board.read_into(&mut out));
        let mut s = Sample::with_cpus(2);
        s.seq = 7;
        s.system[SystemMetric::RunnableTasks.index()] = 3.0;
        s.cpus[1][CpuMetric::SystemPercent.index()] = 96.5;
        s.disks.push([12.0, 1.0]);
        s.disk_names.push(DevName::new(b"nvme0n1"));
        board.publish(&s);
        assert!(board.read_into(&mut out));
        assert_eq!(out.seq, 7);
        assert_eq!(out.system(SystemMetric::RunnableTasks), 3.0);
        assert_eq!(out.cpu(1, CpuMetric::SystemPercent), 96.5);
        assert_eq!(out.disk_names[0].as_str(), "nvme0n1");
        assert_eq!(out.disk(0, DiskMetric::BusyPercent), 12.0);
    }

    #[test]
    fn readers_never_see_torn_samples() {
        let board = Arc::new(SampleBoard::new(1));
        let writer = {
            let board = board.clone();
            std::thread::spawn(move || {
                let mut s = Sample::with_cpus(1);
                for i in 1..20_000u64 {
                    s.seq = i;
                    s.system.iter_mut().for_each(|v| *v = i as f64);
                    board.publish(&s);
                }
            })
        };
        let mut out = Sample::with_cpus(1);
        while !writer.is_finished() {
            if board.read_into(&mut out) {
                let first = out.system[0];
                assert!(out.system.iter().all(|v| *v == first), "torn read");
                assert_eq!(out.seq as f64, first);
            }
        }
        writer.join().unwrap();
    }
}
