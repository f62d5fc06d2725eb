//! Handing the daemon's freed heap back to the kernel. glibc keeps what a burst of work freed
//! (a file's parsed symbols and DWARF, tens of MiB) mapped for reuse, so a node agent that named
//! one large binary's stacks an hour ago would still hold that much resident.

/// Return the heap's free pages to the kernel. Costs a walk of the heap's free chunks (well
/// under a millisecond for this daemon's), so call it after letting go of something large, not
/// per record.
pub fn trim() {
    // glibc only: musl (the image's static build) has no malloc_trim, and its allocator returns
    // large frees to the kernel by itself.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's heap; it has no preconditions
    // and touches no live allocation.
    unsafe {
        libc::malloc_trim(0)
    };
}
