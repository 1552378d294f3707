//! `qmp-shell-wrap`: launch QEMU and attach `qmp-shell` to it. See `--help`.

fn main() {
    std::process::exit(qmp_shell::wrap::main());
}
