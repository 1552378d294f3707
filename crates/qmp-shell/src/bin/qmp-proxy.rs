//! `qmp-proxy`: share one QEMU QMP monitor between many clients. See `--help`.

fn main() {
    std::process::exit(qmp_shell::proxy::main());
}
