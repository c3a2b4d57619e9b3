//! A global allocator that counts, to show that warm code paths allocate nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting allocations and reallocations. Install it in a test binary
/// of its own (the count is per process):
///
/// ```
/// use llada_test_support::CountingAllocator;
///
/// #[global_allocator]
/// static GLOBAL: CountingAllocator = CountingAllocator;
///
/// let (sum, allocations) = CountingAllocator::during(|| (1..=4).sum::<u32>());
/// assert_eq!((sum, allocations), (10, 0));
/// ```
pub struct CountingAllocator;

impl CountingAllocator {
    /// Allocations and reallocations so far in this process.
    pub fn allocations() -> usize {
        ALLOCATIONS.load(Ordering::SeqCst)
    }

    /// Runs `f` and returns its result with the allocations made meanwhile (by any thread).
    pub fn during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = Self::allocations();
        let result = f();
        (result, Self::allocations() - before)
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
