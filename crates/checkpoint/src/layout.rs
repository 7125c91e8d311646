//! Planning how to turn the current mapping layout back into a checkpoint's.

use crate::procfs::Vma;

/// One step of a layout restore, run as a system call inside the tracee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayoutOp {
    /// munmap a range that did not exist at the checkpoint.
    Unmap {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// mprotect a range whose protection changed.
    Protect {
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// PROT_* bits.
        prot: i32,
    },
    /// mmap (MAP_FIXED) a range that was removed or replaced since.
    Map {
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// The checkpoint's mapping, for prot, flags, file and offset.
        like: Vma,
        /// File offset of `start`.
        offset: u64,
    },
}

fn covering(v: &[Vma], addr: u64) -> Option<&Vma> {
    let i = v.partition_point(|m| m.start <= addr);
    (i > 0 && addr < v[i - 1].end).then(|| &v[i - 1])
}

fn same_object(c: &Vma, t: &Vma, at: u64) -> bool {
    if c.shared != t.shared || c.is_file() != t.is_file() {
        return false;
    }
    if !c.is_file() {
        return true;
    }
    c.inode == t.inode && c.dev == t.dev && c.offset + (at - c.start) == t.offset + (at - t.start)
}

/// Private anonymous memory with no name (`[heap]` and `[stack]` have one).
fn plain_anon(v: &Vma) -> bool {
    !v.shared && !v.is_file() && v.path.is_empty()
}

/// Operations that make `current` look like `target` over the mappings
/// `considered` accepts.
///
/// Each checkpoint mapping must come back as *one* VMA: a program may
/// `mremap` or `munmap` it whole, and a mapping split in two (a re-created
/// part never merges with the old part: different anon_vma and uffd
/// context) makes `mremap` fail. So a checkpoint mapping is kept only when a
/// single current VMA of the same object covers it (then at most its
/// protection is fixed); otherwise it is mapped again whole and its content
/// rewritten, and so are its anonymous neighbours (see below). Current
/// memory outside every checkpoint mapping is unmapped,
/// except a grown `[stack]`: the checkpoint's stack pointer lies in the part
/// that existed then.
pub(crate) fn plan(
    current: &[Vma],
    target: &[Vma],
    considered: impl Fn(&Vma) -> bool,
) -> Vec<LayoutOp> {
    let cur: Vec<Vma> = current.iter().filter(|v| considered(v)).cloned().collect();
    let tgt: Vec<Vma> = target.iter().filter(|v| considered(v)).cloned().collect();
    let mut unmaps: Vec<LayoutOp> = Vec::new();
    let covered =
        crate::ranges::Ranges::from_unsorted(tgt.iter().map(|t| (t.start, t.end)).collect());
    for c in cur.iter().filter(|c| c.path != "[stack]") {
        for (start, end) in crate::ranges::Ranges(vec![(c.start, c.end)])
            .minus(&covered)
            .0
        {
            match unmaps.last_mut() {
                Some(LayoutOp::Unmap { end: e, .. }) if *e == start => *e = end,
                _ => unmaps.push(LayoutOp::Unmap { start, end }),
            }
        }
    }
    let kept: Vec<Option<&Vma>> = tgt
        .iter()
        .map(|t| covering(&cur, t.start).filter(|c| c.end >= t.end && same_object(c, t, t.start)))
        .collect();
    // A re-created mapping never merges with an old neighbour (different
    // anon_vma, and the old one's page offset follows it from wherever it
    // was first mapped), so every anonymous mapping touching one that is
    // mapped again is mapped again too. Two such pieces may be one object
    // of the program's caught mid-`mprotect`: kept apart, the program's
    // own `mprotect` back cannot join them and its next `mremap` of the
    // whole fails (mmapchurn did, once in many runs).
    let mut remap: Vec<bool> = kept.iter().map(Option::is_none).collect();
    let joins = |a: &Vma, b: &Vma| a.end == b.start && plain_anon(a) && plain_anon(b);
    for i in 1..tgt.len() {
        if remap[i - 1] && joins(&tgt[i - 1], &tgt[i]) {
            remap[i] = true;
        }
    }
    for i in (1..tgt.len()).rev() {
        if remap[i] && joins(&tgt[i - 1], &tgt[i]) {
            remap[i - 1] = true;
        }
    }
    // A read-only piece of a writable object (its tail between the
    // program's `mprotect`s) was writable once: the kernel accounts it
    // (VM_ACCOUNT) like its writable neighbour, and only then are the two
    // one anon_vma's and mergeable again. Mapped read-only from the start
    // it is neither, and the program's `mprotect` back leaves it a mapping
    // of its own for good. So such a piece is mapped writable and then
    // protected as it was.
    let writable_once = |i: usize| {
        let t = &tgt[i];
        let neighbour_writable = |j: usize| {
            tgt.get(j)
                .is_some_and(|n| n.write && (joins(t, n) || joins(n, t)))
        };
        plain_anon(t)
            && !t.write
            && t.prot() != 0
            && ((i > 0 && neighbour_writable(i - 1)) || neighbour_writable(i + 1))
    };
    let mut maps = Vec::new();
    let mut protects = Vec::new();
    for (i, ((t, single), remap)) in tgt.iter().zip(&kept).zip(remap).enumerate() {
        match single {
            _ if remap && writable_once(i) => {
                let mut like = t.clone();
                like.write = true;
                maps.push(LayoutOp::Map {
                    start: t.start,
                    end: t.end,
                    like,
                    offset: t.offset,
                });
                protects.push(LayoutOp::Protect {
                    start: t.start,
                    end: t.end,
                    prot: t.prot(),
                });
            }
            _ if remap => maps.push(LayoutOp::Map {
                start: t.start,
                end: t.end,
                like: t.clone(),
                offset: t.offset,
            }),
            Some(c) if c.prot() != t.prot() => protects.push(LayoutOp::Protect {
                start: t.start,
                end: t.end,
                prot: t.prot(),
            }),
            _ => {}
        }
    }
    unmaps.extend(maps);
    unmaps.extend(protects);
    unmaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_maps;

    #[test]
    fn plans_unmap_map_and_protect() {
        let target = parse_maps(
            "\
1000-3000 rw-p 00000000 00:00 0 
5000-6000 rw-p 00000000 00:00 0 
8000-a000 r--p 00002000 fd:01 77     /lib/x.so
7ff000-800000 rw-p 00000000 00:00 0        [stack]
",
        );
        let current = parse_maps(
            "\
1000-2000 rw-p 00000000 00:00 0 
2000-3000 r--p 00000000 00:00 0 
3000-4000 rw-p 00000000 00:00 0 
9000-a000 r--p 00003000 fd:01 77     /lib/x.so
7fe000-800000 rw-p 00000000 00:00 0        [stack]
",
        );
        let ops = plan(&current, &target, |_| true);
        assert_eq!(
            ops,
            vec![
                LayoutOp::Unmap {
                    start: 0x3000,
                    end: 0x4000
                },
                // Split in two now (rw + r--): mapped again whole.
                LayoutOp::Map {
                    start: 0x1000,
                    end: 0x3000,
                    like: target[0].clone(),
                    offset: 0
                },
                LayoutOp::Map {
                    start: 0x5000,
                    end: 0x6000,
                    like: target[1].clone(),
                    offset: 0
                },
                // Only the tail survives: the whole library part comes back.
                LayoutOp::Map {
                    start: 0x8000,
                    end: 0xa000,
                    like: target[2].clone(),
                    offset: 0x2000
                },
            ]
        );
        // A mapping grown in place is trimmed; a protection change is undone.
        let current = parse_maps("1000-4000 r--p 00000000 00:00 0 \n");
        let target = parse_maps("1000-3000 rw-p 00000000 00:00 0 \n");
        assert_eq!(
            plan(&current, &target, |_| true),
            vec![
                LayoutOp::Unmap {
                    start: 0x3000,
                    end: 0x4000
                },
                LayoutOp::Protect {
                    start: 0x1000,
                    end: 0x3000,
                    prot: libc::PROT_READ | libc::PROT_WRITE
                },
            ]
        );
    }

    /// mmapchurn's slot caught between `mprotect(tail, PROT_READ)` and
    /// the `mprotect` back: two checkpoint mappings, one object. Moved
    /// since (`mremap`), a new slot now covers the head: were the head kept
    /// and the tail mapped fresh, the two would never merge again.
    #[test]
    fn anonymous_neighbours_of_a_mapping_mapped_again_are_mapped_again() {
        let target = parse_maps(
            "\
1000-3000 rw-p 00000000 00:00 0 
3000-4000 r--p 00000000 00:00 0 
4000-5000 rw-p 00000000 00:00 0 
6000-7000 rw-p 00000000 00:00 0 
7000-8000 rw-p 00000000 fd:01 77     /a
",
        );
        let current = parse_maps(
            "\
1000-3000 rw-p 00000000 00:00 0 
6000-7000 rw-p 00000000 00:00 0 
7000-8000 rw-p 00000000 fd:01 77     /a
",
        );
        let ops = plan(&current, &target, |_| true);
        let (mut mapped, mut protected) = (Vec::new(), Vec::new());
        for op in &ops {
            match op {
                LayoutOp::Map {
                    start, end, like, ..
                } => mapped.push((*start, *end, like.prot())),
                LayoutOp::Protect { start, end, prot } => protected.push((*start, *end, *prot)),
                other => panic!("no unmap expected, got {other:?}"),
            }
        }
        let (rw, r) = (libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ);
        // The head (kept on its own) and the next neighbour come back with
        // the missing tail; the mapping beyond the gap and the file stay.
        // The read-only tail of the writable head is mapped writable and
        // protected after: accounted like its neighbour, it merges with it
        // again when the program makes it writable.
        assert_eq!(
            mapped,
            vec![
                (0x1000, 0x3000, rw),
                (0x3000, 0x4000, rw),
                (0x4000, 0x5000, rw)
            ]
        );
        assert_eq!(protected, vec![(0x3000, 0x4000, r)]);
        // A read-only anonymous mapping on its own is mapped as it was.
        let target = parse_maps("1000-2000 r--p 00000000 00:00 0 \n");
        assert!(matches!(
            plan(&[], &target, |_| true).as_slice(),
            [LayoutOp::Map { like, .. }] if like.prot() == r
        ));
        // Nothing missing: nothing mapped, only the protection undone.
        let current = parse_maps("1000-5000 rw-p 00000000 00:00 0 \n");
        let target =
            parse_maps("1000-3000 rw-p 00000000 00:00 0 \n3000-5000 r--p 00000000 00:00 0 \n");
        assert_eq!(
            plan(&current, &target, |_| true),
            vec![LayoutOp::Protect {
                start: 0x3000,
                end: 0x5000,
                prot: libc::PROT_READ
            }]
        );
    }

    #[test]
    fn replaced_file_mapping_is_mapped_again() {
        let target = parse_maps("8000-9000 rw-p 00000000 fd:01 77     /a\n");
        let current = parse_maps("8000-9000 rw-p 00000000 fd:01 78     /b\n");
        let ops = plan(&current, &target, |_| true);
        assert!(matches!(
            ops.as_slice(),
            [LayoutOp::Map { start: 0x8000, .. }]
        ));
        assert!(plan(&target, &target, |_| true).is_empty());
    }
}
