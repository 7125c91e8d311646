//! /proc/interrupts: how many maskable interrupts each CPU has taken.
//!
//! A CPU looping in the kernel with interrupts off takes none: its local
//! timer stops counting while its neighbours' go on. Non-maskable rows
//! (`NMI`, `PMI`) count even then and are left out; so are the rows with a
//! single machine-wide count (`ERR`, `MIS`).

use crate::num::{fields, lines};

/// Rows whose interrupts arrive with interrupts disabled.
const NON_MASKABLE: [&[u8]; 2] = [b"NMI:", b"PMI:"];

/// The maskable interrupts CPU `cpu` has taken, summed over every row of
/// /proc/interrupts; `None` when the header has no such CPU or the text is
/// malformed.
pub fn parse_cpu_interrupts(text: &[u8], cpu: u32) -> Option<u64> {
    let mut rows = lines(text);
    let header = rows.next()?;
    let wanted = format!("CPU{cpu}");
    // Columns are the online CPUs in order; offline ones are missing.
    let col = fields(header).position(|f| f == wanted.as_bytes())?;
    let ncpus = fields(header).count();
    let mut total = 0u64;
    let mut counted = false;
    for row in rows {
        let mut f = fields(row);
        let Some(label) = f.next() else {
            continue;
        };
        if !label.ends_with(b":") || NON_MASKABLE.contains(&label) {
            continue;
        }
        let counts: Vec<&[u8]> = f.take(ncpus).collect();
        // ERR/MIS, and rows cut short: not one count per CPU.
        if counts.len() < ncpus || !counts.iter().all(|c| c.iter().all(u8::is_ascii_digit)) {
            continue;
        }
        let n: u64 = std::str::from_utf8(counts[col]).ok()?.parse().ok()?;
        total = total.saturating_add(n);
        counted = true;
    }
    counted.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2-CPU 6.18 VM, 2026-12-07 (shortened).
    const CAPTURED: &[u8] = b"           CPU0       CPU1       \n\
 24:          1          0  IO-APIC   5-edge      ACPI:Ged\n\
 26:          0          1  IO-APIC   4-edge      ttyS0\n\
NMI:          7          9   Non-maskable interrupts\n\
LOC:    2208483    2278552   Local timer interrupts\n\
PMI:          7          9   Performance monitoring interrupts\n\
RES:       1000       2000   Rescheduling interrupts\n\
ERR:          0\n\
MIS:          0\n";

    #[test]
    fn sums_the_maskable_rows_of_one_cpu() {
        assert_eq!(
            parse_cpu_interrupts(CAPTURED, 0),
            Some(1 + 2_208_483 + 1000)
        );
        assert_eq!(
            parse_cpu_interrupts(CAPTURED, 1),
            Some(1 + 2_278_552 + 2000)
        );
        assert_eq!(parse_cpu_interrupts(CAPTURED, 2), None, "no such CPU");
    }

    /// CPU 1 offline: the columns are CPU0 and CPU2.
    #[test]
    fn columns_follow_the_header() {
        let text = b"   CPU0   CPU2\nLOC:  10  30  Local timer interrupts\n";
        assert_eq!(parse_cpu_interrupts(text, 2), Some(30));
        assert_eq!(parse_cpu_interrupts(text, 1), None);
    }

    #[test]
    fn malformed_text_is_none() {
        assert_eq!(parse_cpu_interrupts(b"", 0), None);
        assert_eq!(parse_cpu_interrupts(b"   CPU0\n", 0), None);
        assert_eq!(parse_cpu_interrupts(b"   CPU0\nLOC: x Local\n", 0), None);
    }

    #[test]
    fn the_live_file_parses() {
        let text = std::fs::read("/proc/interrupts").unwrap();
        assert!(parse_cpu_interrupts(&text, 0).is_some_and(|n| n > 0));
    }
}
