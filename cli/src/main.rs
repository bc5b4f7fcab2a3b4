//! `omninode`: run the OmniNode Bridge mesh, serve one service, migrate the
//! schema, or stamp and verify files.

fn main() -> std::process::ExitCode {
    omninode::cli::main()
}
