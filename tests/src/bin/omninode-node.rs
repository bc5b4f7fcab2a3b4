//! The `omninode` command line, built inside the test crate so tests can run
//! it as a separate process (and kill it) through `CARGO_BIN_EXE_omninode-node`.

fn main() -> std::process::ExitCode {
    omninode::cli::main()
}
