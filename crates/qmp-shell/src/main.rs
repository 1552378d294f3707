//! `qmp-shell`: a low-level shell on top of QMP. See the README and `--help`.

fn main() {
    std::process::exit(qmp_shell::app::main());
}
