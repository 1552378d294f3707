//! `qmp-shell`: a low-level shell on top of QMP. See the README and `--help`.
//!
//! The entry point is C's `main`, not Rust's (`#![no_main]`): std's
//! start-up work for a Rust `main` includes reading `/proc/self/maps` (to
//! find the main thread's stack guard, for the stack overflow message),
//! which costs a one-command session a tenth of its time. What of that
//! start-up matters is done by [`qmp_shell::app::prepare_process`].

// The unit-test harness of this target keeps its own `main`.
#![cfg_attr(not(test), no_main)]

/// The process's entry point.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    qmp_shell::app::prepare_process();
    std::process::exit(qmp_shell::app::main());
}
