//! `pow`, the one function of the C maths library the programs call
//! (indicatif's progress estimate raises 0.1 to a power), from the `libm`
//! crate, rust-lang's port of musl's: defined here, the symbol no longer
//! needs `libm.so.6`, which the linker then leaves out (`--as-needed`).
//! One library fewer to load and map at every start: about 340 KiB of
//! resident memory and a few hundred microseconds of `ld.so`'s work.
//!
//! A library `dlopen`ed later (libvirt) that needs `pow` brings its own
//! `libm.so.6`: the executable does not export this symbol.

/// The C library's `double pow(double, double)`.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
