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

#[cfg(test)]
mod tests {
    #[test]
    fn pow_is_the_c_librarys() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(0.1, 0.0), 1.0);
        assert!((super::pow(0.1, 1.0 / 3.0) - 0.464_158_883_361_277_9).abs() < 1e-15);
        assert!(super::pow(-1.0, 0.5).is_nan());
        // What `f64::powf` calls: this very function.
        assert_eq!(0.1_f64.powf(2.5), super::pow(0.1, 2.5));
    }
}
