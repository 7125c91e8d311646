//! A counting global allocator, for tests that prove a code path allocates
//! nothing (the sampler's hot loop).
//!
//! Install it in a test binary with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`
//! then bracket the code under test with [`CountingAllocator::start`] and
//! [`CountingAllocator::stop`], or with
//! [`CountingAllocator::start_this_thread`] when the code under test runs on
//! the calling thread alone: the test harness's own threads allocate at
//! moments of their own (libtest records a test as running while the test
//! has already started), which a process-wide count would blame on it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Count only on threads that set [`COUNTED_HERE`].
static THIS_THREAD_ONLY: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the thread that called `start_this_thread`. A const
    /// initialiser and no destructor: reading it never allocates.
    static COUNTED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether an allocation now, on this thread, is counted.
fn counts() -> bool {
    COUNTING.load(Ordering::Relaxed)
        && (!THIS_THREAD_ONLY.load(Ordering::Relaxed)
            || COUNTED_HERE.try_with(Cell::get).unwrap_or(false))
}

/// Forwards to the system allocator and counts allocations while enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    /// Resets the count and starts counting (process-wide).
    pub fn start() {
        THIS_THREAD_ONLY.store(false, Ordering::SeqCst);
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
    }

    /// Resets the count and starts counting allocations made on the
    /// calling thread only.
    pub fn start_this_thread() {
        COUNTED_HERE.with(|c| c.set(true));
        THIS_THREAD_ONLY.store(true, Ordering::SeqCst);
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
    }

    /// Stops counting and returns the allocations seen since `start`.
    pub fn stop() -> usize {
        COUNTING.store(false, Ordering::SeqCst);
        COUNTED_HERE.with(|c| c.set(false));
        ALLOCATIONS.load(Ordering::SeqCst)
    }
}

// SAFETY: every method forwards unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter is a lock-free atomic and the
// thread flag a const-initialised thread-local without destructor, so the
// allocator neither allocates nor blocks.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counts() {
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
        if counts() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for dealloc, and `new_size` is our caller's obligation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
