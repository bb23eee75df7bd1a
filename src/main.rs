//! The `vipd` binary: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    vipd::cli::main()
}
