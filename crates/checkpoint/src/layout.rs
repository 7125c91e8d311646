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

/// Operations that make `current` look like `target` over the mappings
/// `considered` accepts. A grown `[stack]` is left alone: the checkpoint's
/// stack pointer lies in the part that existed then.
pub(crate) fn plan(current: &[Vma], target: &[Vma], considered: impl Fn(&Vma) -> bool) -> Vec<LayoutOp> {
    let cur: Vec<Vma> = current.iter().filter(|v| considered(v)).cloned().collect();
    let tgt: Vec<Vma> = target.iter().filter(|v| considered(v)).cloned().collect();
    let mut bounds: Vec<u64> = cur.iter().chain(tgt.iter()).flat_map(|v| [v.start, v.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut ops: Vec<LayoutOp> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let op = match (covering(&cur, a), covering(&tgt, a)) {
            (None, None) => None,
            (Some(c), None) if c.path == "[stack]" => None,
            (Some(_), None) => Some(LayoutOp::Unmap { start: a, end: b }),
            (c, Some(t)) if c.is_none_or(|c| !same_object(c, t, a)) => Some(LayoutOp::Map {
                start: a,
                end: b,
                like: t.clone(),
                offset: if t.is_file() { t.offset + (a - t.start) } else { 0 },
            }),
            (Some(c), Some(t)) if c.prot() != t.prot() => Some(LayoutOp::Protect {
                start: a,
                end: b,
                prot: t.prot(),
            }),
            _ => None,
        };
        let Some(op) = op else { continue };
        // Merge with the previous op when contiguous and alike.
        let merged = match (ops.last_mut(), &op) {
            (Some(LayoutOp::Unmap { end, .. }), LayoutOp::Unmap { start, end: e }) if *end == *start => {
                *end = *e;
                true
            }
            (Some(LayoutOp::Protect { end, prot, .. }), LayoutOp::Protect { start, end: e, prot: p })
                if *end == *start && prot == p =>
            {
                *end = *e;
                true
            }
            (Some(LayoutOp::Map { end, like, .. }), LayoutOp::Map { start, end: e, like: l, .. })
                if *end == *start && like == l =>
            {
                *end = *e;
                true
            }
            _ => false,
        };
        if !merged {
            ops.push(op);
        }
    }
    ops
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
                LayoutOp::Protect {
                    start: 0x2000,
                    end: 0x3000,
                    prot: libc::PROT_READ | libc::PROT_WRITE
                },
                LayoutOp::Unmap {
                    start: 0x3000,
                    end: 0x4000
                },
                LayoutOp::Map {
                    start: 0x5000,
                    end: 0x6000,
                    like: target[1].clone(),
                    offset: 0
                },
                LayoutOp::Map {
                    start: 0x8000,
                    end: 0x9000,
                    like: target[2].clone(),
                    offset: 0x2000
                },
            ]
        );
    }

    #[test]
    fn replaced_file_mapping_is_mapped_again() {
        let target = parse_maps("8000-9000 rw-p 00000000 fd:01 77     /a\n");
        let current = parse_maps("8000-9000 rw-p 00000000 fd:01 78     /b\n");
        let ops = plan(&current, &target, |_| true);
        assert!(matches!(ops.as_slice(), [LayoutOp::Map { start: 0x8000, .. }]));
        assert!(plan(&target, &target, |_| true).is_empty());
    }
}
