//! Page storage: the shadow copy of tracked memory as of the newest
//! checkpoint, and per-checkpoint undo records.
//!
//! A page absent from the shadow is *pristine*: zero for anonymous memory,
//! the file's content for a private file mapping. K checkpoints therefore
//! cost one copy of the written (non-pristine) memory plus, per checkpoint,
//! the old versions of the pages written during its interval.

use std::collections::BTreeMap;

/// Page size (x86-64 base pages).
pub const PAGE: usize = 4096;

/// One page of content.
pub(crate) type Page = Box<[u8; PAGE]>;

/// Recycles page buffers so steady-state checkpoints allocate nothing.
#[derive(Default)]
pub(crate) struct PagePool {
    free: Vec<Page>,
    /// Pages handed out and not returned.
    live: usize,
}

/// Free pages kept for reuse beyond which returned pages are released.
const POOL_SPARE_MAX: usize = 16 * 1024;

impl PagePool {
    /// A page buffer (contents unspecified).
    pub fn get(&mut self) -> Page {
        self.live += 1;
        self.free.pop().unwrap_or_else(|| Box::new([0u8; PAGE]))
    }

    /// Returns a page buffer.
    pub fn put(&mut self, p: Page) {
        self.live -= 1;
        if self.free.len() < POOL_SPARE_MAX {
            self.free.push(p);
        }
    }

    /// Bytes in pages handed out.
    pub fn live_bytes(&self) -> u64 {
        (self.live * PAGE) as u64
    }
}

/// What a page held before a transition (None: pristine).
pub(crate) type Prior = Option<Page>;

/// The pages changed between a checkpoint and the next one, with their
/// content as of the earlier checkpoint, applied newest entry first.
#[derive(Default)]
pub(crate) struct Undo {
    /// (page address, content at the earlier checkpoint).
    pub entries: Vec<(u64, Prior)>,
}

impl Undo {
    /// Gives every page back to the pool.
    pub fn release(self, pool: &mut PagePool) {
        for (_, p) in self.entries {
            if let Some(p) = p {
                pool.put(p);
            }
        }
    }
}

/// Memory as of the newest checkpoint.
#[derive(Default)]
pub(crate) struct Shadow {
    pages: BTreeMap<u64, Page>,
}

impl Shadow {
    /// Content of `addr` (None: pristine).
    pub fn get(&self, addr: u64) -> Option<&Page> {
        self.pages.get(&addr)
    }

    /// Sets `addr` to `new`, recording what it held in `undo` unless both
    /// are pristine.
    pub fn set(&mut self, addr: u64, new: Prior, undo: &mut Undo) {
        let old = match new {
            Some(p) => self.pages.insert(addr, p),
            None => self.pages.remove(&addr),
        };
        if old.is_some() || self.pages.contains_key(&addr) {
            undo.entries.push((addr, old));
        }
    }

    /// Makes `[start, end)` pristine (the memory went away), recording the
    /// old content in `undo`.
    pub fn clear_range(&mut self, start: u64, end: u64, undo: &mut Undo) {
        let keys: Vec<u64> = self.pages.range(start..end).map(|(k, _)| *k).collect();
        for k in keys {
            let old = self.pages.remove(&k);
            undo.entries.push((k, old));
        }
    }

    /// Applies an undo record (newest first), turning this shadow into the
    /// earlier checkpoint's memory. Returns the addresses touched.
    pub fn apply_undo(&mut self, undo: Undo, pool: &mut PagePool, touched: &mut Vec<u64>) {
        for (addr, old) in undo.entries.into_iter().rev() {
            touched.push(addr);
            let replaced = match old {
                Some(p) => self.pages.insert(addr, p),
                None => self.pages.remove(&addr),
            };
            if let Some(p) = replaced {
                pool.put(p);
            }
        }
    }

    /// Addresses of non-pristine pages in `[start, end)`.
    pub fn addrs_in(&self, start: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        self.pages.range(start..end).map(|(k, _)| *k)
    }

    /// Drops everything (after exec the old memory means nothing).
    pub fn clear(&mut self, pool: &mut PagePool) {
        for (_, p) in std::mem::take(&mut self.pages) {
            pool.put(p);
        }
    }
}

/// True if the page is all zeros (stored as pristine to save memory).
pub(crate) fn is_zero(p: &[u8; PAGE]) -> bool {
    p.chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(pool: &mut PagePool, v: u8) -> Page {
        let mut p = pool.get();
        p.fill(v);
        p
    }

    #[test]
    fn undo_turns_shadow_back_into_earlier_checkpoints() {
        let mut pool = PagePool::default();
        let mut s = Shadow::default();
        // Checkpoint 0: A=1, B pristine.
        let mut u0 = Undo::default();
        s.set(0x1000, Some(page(&mut pool, 1)), &mut u0);
        // Checkpoint 1: A=2, B=7 (u1 saves the checkpoint-0 values).
        let mut u1 = Undo::default();
        s.set(0x1000, Some(page(&mut pool, 2)), &mut u1);
        s.set(0x2000, Some(page(&mut pool, 7)), &mut u1);
        // Checkpoint 2: A unmapped, B=8.
        let mut u2 = Undo::default();
        s.clear_range(0x1000, 0x2000, &mut u2);
        s.set(0x2000, Some(page(&mut pool, 8)), &mut u2);
        assert!(s.get(0x1000).is_none());
        assert_eq!(s.get(0x2000).unwrap()[0], 8);

        let mut touched = Vec::new();
        s.apply_undo(u2, &mut pool, &mut touched);
        assert_eq!(s.get(0x1000).unwrap()[0], 2);
        assert_eq!(s.get(0x2000).unwrap()[0], 7);
        s.apply_undo(u1, &mut pool, &mut touched);
        assert_eq!(s.get(0x1000).unwrap()[0], 1);
        assert!(s.get(0x2000).is_none());
        touched.sort_unstable();
        touched.dedup();
        assert_eq!(touched, vec![0x1000, 0x2000]);
        // Only the live shadow page remains handed out.
        u0.release(&mut pool);
        assert_eq!(pool.live_bytes(), PAGE as u64);
    }

    #[test]
    fn pristine_to_pristine_records_nothing() {
        let mut s = Shadow::default();
        let mut u = Undo::default();
        s.set(0x5000, None, &mut u);
        assert!(u.entries.is_empty());
        let z = [0u8; PAGE];
        assert!(is_zero(&z));
        let mut nz = [0u8; PAGE];
        nz[4095] = 1;
        assert!(!is_zero(&nz));
    }
}
