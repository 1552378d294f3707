//! Sets `QMP_SHELL_VERSION`, the text every program prints for `--version`:
//! the crate's version, then `(rev COMMIT)` when the commit is known.
//!
//! The commit comes from git when the crate is built inside a git checkout,
//! or from the `.cargo_vcs_info.json` that `cargo package` writes when the
//! crate was packaged from one. Without git, outside a checkout, or from a
//! crate packaged without that file, the version is the crate's alone: the
//! build never fails for want of a commit.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let rev = packaged_rev(Path::new(&dir)).or_else(|| git_rev(Path::new(&dir)));
    let text = match rev {
        Some(rev) => format!("{version} (rev {rev})"),
        None => version,
    };
    println!("cargo:rustc-env=QMP_SHELL_VERSION={text}");
    startup_layout(Path::new(&dir));
    static_unwinder();
}

/// Release builds with the GNU toolchain: link GCC's unwinder statically
/// (`libgcc_eh.a`, what `gcc -static-libgcc` links), so that the programs
/// do not load `libgcc_s.so.1` at start-up for code that only runs to
/// print a backtrace (the release profile aborts on panic). Loading it
/// costs a start a tenth of a millisecond (its CPU-feature probe, its
/// relocations) and 100 KiB of RSS. Skipped with a linker of one's own
/// (`RUSTC_LINKER`: the packages are linked by zig against an older glibc,
/// with its own unwinder, static already), when the C compiler has no
/// `libgcc_eh.a`, or with `QMP_SHELL_SHARED_LIBGCC=1`. (GCC 12's unwinder
/// uses glibc 2.35's `_dl_find_object`: such a build needs that glibc.)
fn static_unwinder() {
    println!("cargo:rerun-if-env-changed=QMP_SHELL_SHARED_LIBGCC");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || !var("RUSTC_LINKER").is_empty()
        || var("TARGET") != var("HOST")
        || !var("QMP_SHELL_SHARED_LIBGCC").is_empty()
    {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = Path::new(&path);
    let Some(dir) = path
        .parent()
        .filter(|_| out.status.success() && path.is_absolute() && path.is_file())
    else {
        return;
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    // Not bundled into the library: handed to the final link, where it
    // comes before std's `-lgcc_s`, which --as-needed then drops.
    println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
}

/// Release builds on Linux: lay out together the functions a short run
/// executes (`startup.ld`, a linker script that only adds one output
/// section before `.text`, written by `scripts/startup-order.sh`). The
/// kernel maps code 64 KiB around each page touched; grouped, a one-command
/// run maps about a third of the code instead of all of it. GNU ld and lld
/// both take it; `QMP_SHELL_NO_STARTUP_LAYOUT=1` leaves it out (a linker
/// without linker scripts, such as mold).
fn startup_layout(dir: &Path) {
    println!("cargo:rerun-if-changed=startup.ld");
    println!("cargo:rerun-if-env-changed=QMP_SHELL_NO_STARTUP_LAYOUT");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let script = dir.join("startup.ld");
    if var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || !var("QMP_SHELL_NO_STARTUP_LAYOUT").is_empty()
        || !script.is_file()
    {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// Digits of a commit shown: enough to be unique, as ripgrep shows it.
const SHORT: usize = 10;

/// The commit a packaged crate came from, from `.cargo_vcs_info.json`
/// (`{"git": {"sha1": "..."}, ...}`).
fn packaged_rev(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let after = &info[info.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = after.find('"')? + 1;
    let sha1 = &after[start..];
    let sha1 = &sha1[..sha1.find('"')?];
    is_hex_commit(sha1).then(|| sha1[..SHORT].to_string())
}

/// The checkout's commit, or None when git is missing or `dir` is not in a
/// checkout. Tells cargo to run this again when HEAD moves.
fn git_rev(dir: &Path) -> Option<String> {
    let rev = git(dir, &["rev-parse", "HEAD"])?;
    if !is_hex_commit(&rev) {
        return None;
    }
    // HEAD names the branch; the branch's ref (loose or packed) names the
    // commit. Only existing files: cargo reruns on every build for a
    // missing one.
    let mut watched = vec![git(dir, &["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(dir, &["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(dir, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(rev[..SHORT].to_string())
}

/// `git ARGS` run in `dir`: its first line of output, if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// A full commit id (SHA-1 or SHA-256), in hex.
fn is_hex_commit(text: &str) -> bool {
    text.len() >= 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
