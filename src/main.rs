//! The `vipd` binary: everything lives in the library; see `cli::main`.

/// mimalloc, not glibc's malloc: sled frees on its IO threads what the
/// runtime's workers allocated, and glibc's per-arena locks made those
/// frees wait on each other (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vipd::cli::main()
}
