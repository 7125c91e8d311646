//! Bulk page copies between the tracee and our page buffers.
//!
//! `process_vm_readv/writev` move up to 1024 pages per call; a range they
//! cannot access (protection changed, or a file hole past EOF) falls back to
//! `/proc/PID/mem`, which accesses pages the way a debugger does.

use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;

use selfheal_sys::memory::{process_vm_readv, process_vm_writev, RemoteRange, IOV_MAX};

use crate::error::TraceError;
use crate::pages::{Page, PagePool, PAGE};
use crate::tracee::Tracee;

/// Coalesces sorted page addresses into remote ranges.
fn runs(addrs: &[u64]) -> Vec<RemoteRange> {
    let mut out: Vec<RemoteRange> = Vec::new();
    for &a in addrs {
        match out.last_mut() {
            Some(r) if r.addr + r.len as u64 == a => r.len += PAGE,
            _ => out.push(RemoteRange { addr: a, len: PAGE }),
        }
    }
    out
}

/// Reads the pages at `addrs` (sorted, page-aligned). Pages that cannot be
/// read at all come back as `None` (nothing there to restore).
pub(crate) fn read_pages(
    t: &Tracee,
    pool: &mut PagePool,
    addrs: &[u64],
    out: &mut Vec<(u64, Option<Page>)>,
) -> Result<(), TraceError> {
    for chunk in addrs.chunks(IOV_MAX) {
        let mut pages: Vec<Page> = (0..chunk.len()).map(|_| pool.get()).collect();
        let remote = runs(chunk);
        let got = {
            let mut local: Vec<IoSliceMut<'_>> = pages
                .iter_mut()
                .map(|p| IoSliceMut::new(&mut p[..]))
                .collect();
            match process_vm_readv(t.pid, &mut local, &remote) {
                Ok(n) => n,
                Err(e) if e.is_gone() => return Err(TraceError::sys(t.pid, e)),
                Err(_) => 0,
            }
        };
        let full = got / PAGE;
        for (i, (addr, mut page)) in chunk.iter().copied().zip(pages).enumerate() {
            if i < full || t.mem.read_exact_at(&mut page[..], addr).is_ok() {
                out.push((addr, Some(page)));
            } else {
                pool.put(page);
                out.push((addr, None));
            }
        }
    }
    Ok(())
}

/// Writes `items` (sorted by address) into the tracee. Returns bytes written.
pub(crate) fn write_pages(t: &Tracee, items: &[(u64, &[u8; PAGE])]) -> Result<u64, TraceError> {
    let mut total = 0u64;
    for chunk in items.chunks(IOV_MAX) {
        let addrs: Vec<u64> = chunk.iter().map(|(a, _)| *a).collect();
        let remote = runs(&addrs);
        let local: Vec<IoSlice<'_>> = chunk.iter().map(|(_, p)| IoSlice::new(&p[..])).collect();
        let got = match process_vm_writev(t.pid, &local, &remote) {
            Ok(n) => n,
            Err(e) if e.is_gone() => return Err(TraceError::sys(t.pid, e)),
            Err(_) => 0,
        };
        let full = got / PAGE;
        for (addr, page) in &chunk[full..] {
            t.mem
                .write_all_at(&page[..], *addr)
                .map_err(|e| TraceError::Io {
                    pid: t.pid,
                    what: "write a page through /proc/PID/mem",
                    source: e,
                })?;
        }
        total += (chunk.len() * PAGE) as u64;
    }
    Ok(total)
}
