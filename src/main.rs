//! The `gtm-loop` binary: a thin front end; parsing and every command live in `cli`.
//! Exit codes: 0 done, 2 something the user must fix (contract, config, refused), 1 other failures.

// See Cargo.toml: glibc's malloc hands large freed buffers back to the kernel and faults them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    gtm_loop::cli::main()
}

/// Turns transparent huge pages off for this process (Linux), unless MIMALLOC_ALLOW_THP says
/// otherwise. Where the kernel's setting is `always`, memory the allocator frees in 64 KiB runs
/// stayed resident in 2 MiB pages: a weekly cadence on a million deals peaked at 6.5 GiB resident
/// holding 3.3 GiB of live allocations, and 0.7 GiB lower with THP off, in half the system time
/// (BENCHMARKS.md, "a ninth time"). The same as `MIMALLOC_ALLOW_THP=0`, which the allocator reads
/// before `main` runs.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches only this process's flags;
        // a kernel without it returns an error, which leaves things as they were.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
