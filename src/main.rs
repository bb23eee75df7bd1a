//! The `vipd` binary: everything lives in the library; see `cli::main`.

/// mimalloc, not glibc's malloc: sled frees on its IO threads what the
/// runtime's workers allocated, and glibc's per-arena locks made those
/// frees wait on each other (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the Rust
/// binding does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before it gives them back, in ms.
/// Its own default is 1 s, and ten times that for whole arenas: a burst of
/// renewals then leaves tens of MB resident that nothing uses. 10 ms (mimalloc
/// 2's default) gave back a few MB more, but pages given back that soon are
/// faulted in again by the next renewals (BENCHMARKS.md, "The purge delay").
const PURGE_DELAY_MS: std::ffi::c_long = 100;

fn main() -> std::process::ExitCode {
    // An operator's `MIMALLOC_PURGE_DELAY` still wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's tunables; any thread may call it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    vipd::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is mimalloc's purge delay: the variable mimalloc reads
    /// for that option is what `mi_option_get` of it answers.
    #[test]
    fn the_purge_delay_index_is_mimallocs() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::purge_delay_as_read", "--nocapture"])
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("purge delay 4321"), "{text}");
    }

    /// Run by the test above in a process of its own.
    #[test]
    fn purge_delay_as_read() {
        // SAFETY: reads one of mimalloc's tunables.
        let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        println!("purge delay {v}");
    }
}
