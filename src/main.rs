fn main() -> std::process::ExitCode {
    gtm_loop::cli::main()
}
