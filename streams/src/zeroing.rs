//! A global allocator that wipes memory when it is freed, so personal data that passed through the process
//! (webhook bodies, parsed names and emails, plaintext before sealing) does not linger in freed heap blocks after
//! the request that carried it, and after a GDPR erasure (docs/SECURITY.md).
//!
//! It wraps mimalloc: every `dealloc` writes zeros over the block first, and `realloc` moves through a fresh block
//! so the old one is wiped too (the in-place growth mimalloc would do is given up for that). The binary turns it
//! off with `ZERO_FREED_MEMORY=false`, read at start (switching at any time is safe: each call is consistent on
//! its own); the cost is measured in docs/PERFORMANCE.md.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct ZeroingAllocator {
    inner: mimalloc::MiMalloc,
    enabled: AtomicBool,
}

impl ZeroingAllocator {
    pub const fn new() -> Self {
        ZeroingAllocator {
            inner: mimalloc::MiMalloc,
            enabled: AtomicBool::new(true),
        }
    }

    /// Turns wiping on or off.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    fn wipes(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

/// Returns to the OS, now rather than after mimalloc's purge delay, the memory freed in every arena and in the
/// calling thread's heap. For after a burst that freed megabytes at once (a partition's snapshot decoded and
/// dropped): mimalloc purges lazily, on later allocation in the thread that freed, so an instance that goes quiet
/// after a restore would otherwise keep that memory resident.
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

impl Default for ZeroingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards to mimalloc with the caller's pointer and layout; the only additions write within
// the block the caller owns (`layout.size()` bytes from `ptr`) before it is freed, or copy `min(old, new)` bytes
// between two live blocks.
unsafe impl GlobalAlloc for ZeroingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.wipes() {
            // SAFETY: the caller owns `layout.size()` bytes at `ptr` until this call returns.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
            // The block is freed next: keep the compiler from treating the wipe as a dead store.
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        }
        // SAFETY: forwarded as is.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.wipes() {
            // SAFETY: forwarded as is.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` with the old alignment is a valid layout per `GlobalAlloc::realloc`'s contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block; on success both blocks are live and distinct, so the copy is in bounds.
        let fresh = unsafe { self.inner.alloc(new_layout) };
        if !fresh.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_moved_blocks_are_wiped_and_contents_kept() {
        let allocator = ZeroingAllocator::new();
        let layout = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let block = allocator.alloc(layout);
            std::ptr::write_bytes(block, 0xAB, 64);
            let grown = allocator.realloc(block, layout, 256);
            assert!((0..64).all(|i| *grown.add(i) == 0xAB), "contents moved");
            allocator.dealloc(grown, Layout::from_size_align(256, 8).unwrap());
        }
        allocator.set_enabled(false);
        unsafe {
            let block = allocator.alloc(layout);
            let grown = allocator.realloc(block, layout, 128);
            allocator.dealloc(grown, Layout::from_size_align(128, 8).unwrap());
        }
    }
}
