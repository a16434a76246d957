//! Peak memory of a model load.
//!
//! glibc serves a large allocation with its own mapping only while the allocation is above
//! its mmap threshold, and it raises that threshold each time such a mapping is freed. A
//! load copies the weights several times (file bytes, protobuf, tract tensors, packed
//! kernels); after the first copy is freed the next ones land on the heap, which does not
//! shrink below its highest live block, so the process keeps ~20 MiB it no longer uses
//! (measured on x86_64: `predict` peak RSS 61-66 MiB, 42-43 MiB with the threshold held).
//! Holding the threshold at 128 KiB while loading returns every freed copy to the kernel.
//! Afterwards it is raised, so inference reuses its activation buffers from the heap
//! instead of mapping and faulting them in on every pass (that cost ~30% latency).

/// Runs `load` with large allocations mapped individually (glibc on Linux; elsewhere the
/// allocator is left alone).
pub(super) fn during_load<T>(load: impl FnOnce() -> T) -> T {
    set_mmap_threshold(128 * 1024);
    let out = load();
    set_mmap_threshold(32 * 1024 * 1024);
    out
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: i32) {
    // SAFETY: mallopt only adjusts allocator parameters, under glibc's own lock; a refused
    // value (return 0) leaves the default, which is merely less frugal.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    if ok == 0 {
        log::debug!("mallopt(M_MMAP_THRESHOLD, {bytes}) refused");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: i32) {}
