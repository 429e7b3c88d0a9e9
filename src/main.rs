//! The `gtm-loop` binary: a thin front end; parsing and every command live in `cli`.
//! Exit codes: 0 done, 2 something the user must fix (contract, config, refused), 1 other failures.

// See Cargo.toml: glibc's malloc hands large freed buffers back to the kernel and faults them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gtm_loop::cli::main()
}
