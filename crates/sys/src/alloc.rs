//! A counting global allocator, for tests that prove a code path allocates
//! nothing (the sampler's hot loop).
//!
//! Install it in a test binary with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`
//! then bracket the code under test with [`CountingAllocator::start`] and
//! [`CountingAllocator::stop`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// Forwards to the system allocator and counts allocations while enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    /// Resets the count and starts counting (process-wide).
    pub fn start() {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
    }

    /// Stops counting and returns the allocations seen since `start`.
    pub fn stop() -> usize {
        COUNTING.store(false, Ordering::SeqCst);
        ALLOCATIONS.load(Ordering::SeqCst)
    }
}

// SAFETY: every method forwards unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter is a lock-free atomic, so the
// allocator neither allocates nor blocks.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: our caller upholds alloc's contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by System with `layout` (we forward all).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for dealloc, and `new_size` is our caller's obligation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
