//! Giving freed memory back to the operating system.
//!
//! The caches hold what clients send (a 4 MB image, 4 MB of tool
//! arguments); when entries leave, their memory must leave the process too,
//! or a service that runs for months keeps its worst day's RSS forever.
//! glibc's malloc does not do that on its own: after a large block is freed
//! it raises its mmap threshold to that size (up to 32 MiB), so later large
//! blocks come from the heap arenas, where freed space is kept and
//! fragmented. [`tune`] pins the threshold so large blocks are always
//! mapped and unmapped on their own, and [`trim`], run on a timer, hands
//! back the free pages the arenas still hold. (Measured in BENCHMARKS.md,
//! "Large inputs"; a different allocator was not needed.)

use std::time::Duration;

/// Blocks at least this large get their own mapping, returned on free.
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// Free memory at the top of a heap beyond this is returned at once.
const TRIM_THRESHOLD: i32 = 1024 * 1024;
/// How often the arenas' free pages are handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Sets the allocator's thresholds; call once, before threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists, as glibc recommends.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the free pages of every malloc arena to the operating system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
