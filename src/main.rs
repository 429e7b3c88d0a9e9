//! The `gtm-loop` binary: a thin front end; parsing and every command live in `cli`.
//! Exit codes: 0 done, 2 something the user must fix (contract, config, refused), 1 other failures.

fn main() -> std::process::ExitCode {
    gtm_loop::cli::main()
}
