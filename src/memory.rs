//! Process-wide memory settings, applied once at start before any thread is spawned: what keeps an instance's
//! resident set close to what it actually holds (docs/PERFORMANCE.md, "The restarted instance's resident set").
//!
//! Three things inflated it, none of which buys throughput here (measured by alternating runs of the pipeline
//! benchmark):
//! - **Transparent huge pages.** mimalloc asks for them on its arenas, and a 2 MiB page is resident as a whole as
//!   soon as one byte of it is touched, and is returned only as a whole.
//! - **glibc arenas.** Only the C libraries (librdkafka above all) use glibc's malloc; each of their threads got an
//!   arena of its own, and what one frees stays in it.
//! - **glibc's sliding thresholds.** After a large block is freed glibc raises its mmap threshold (up to 32 MiB) and
//!   its trim threshold with it, so librdkafka's fetch and produce buffers end up in the heap, which is then
//!   never trimmed.
//!
//! `LEAN_MEMORY=false` leaves all three as the allocators choose. An operator's own `MALLOC_ARENA_MAX`,
//! `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `MIMALLOC_ALLOW_THP` wins over the setting it names, and
//! `GLIBC_TUNABLES` over both glibc ones.

/// glibc's default mmap threshold before it starts sliding: blocks above it are mapped and unmapped on their own.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// What [`keep_lean`] did, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub huge_pages_off: bool,
    pub one_arena: bool,
    pub fixed_thresholds: bool,
}

/// Applies the settings unless `LEAN_MEMORY=false`. Call first thing in `main`: glibc's arena limit only governs
/// arenas not created yet.
pub fn keep_lean() -> Applied {
    if std::env::var("LEAN_MEMORY").is_ok_and(|v| v.trim() == "false") {
        return Applied::default();
    }
    let unset = |name: &str| std::env::var_os(name).is_none();
    // glibc's own tunables are the operator's too; mallopt would override them.
    let glibc_free = unset("GLIBC_TUNABLES");
    Applied {
        huge_pages_off: unset("MIMALLOC_ALLOW_THP") && huge_pages_off(),
        one_arena: glibc_free && unset("MALLOC_ARENA_MAX") && glibc::set(glibc::ARENA_MAX, 1),
        fixed_thresholds: glibc_free
            && unset("MALLOC_MMAP_THRESHOLD_")
            && unset("MALLOC_TRIM_THRESHOLD_")
            && glibc::set(glibc::MMAP_THRESHOLD, MMAP_THRESHOLD)
            && glibc::set(glibc::TRIM_THRESHOLD, MMAP_THRESHOLD),
    }
}

#[cfg(target_os = "linux")]
fn huge_pages_off() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory of this process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn huge_pages_off() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub(super) const ARENA_MAX: i32 = libc::M_ARENA_MAX;
    pub(super) const MMAP_THRESHOLD: i32 = libc::M_MMAP_THRESHOLD;
    pub(super) const TRIM_THRESHOLD: i32 = libc::M_TRIM_THRESHOLD;

    pub(super) fn set(param: i32, value: i32) -> bool {
        // SAFETY: mallopt only adjusts glibc's allocator parameters; it returns 1 on success.
        unsafe { libc::mallopt(param, value) == 1 }
    }
}

/// Other C libraries have other allocators, with nothing of this to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub(super) const ARENA_MAX: i32 = 0;
    pub(super) const MMAP_THRESHOLD: i32 = 0;
    pub(super) const TRIM_THRESHOLD: i32 = 0;

    pub(super) fn set(_: i32, _: i32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_settings() {
        // mallopt answers 1 when it took a parameter, 0 when not: `set` must read that the right way round.
        for (param, value) in [
            (super::glibc::ARENA_MAX, 1),
            (super::glibc::MMAP_THRESHOLD, super::MMAP_THRESHOLD),
            (super::glibc::TRIM_THRESHOLD, super::MMAP_THRESHOLD),
        ] {
            assert!(super::glibc::set(param, value), "mallopt({param}, {value})");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_for_the_process_afterwards() {
        assert!(super::huge_pages_off());
        // SAFETY: PR_GET_THP_DISABLE reads a flag and takes no pointers.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
