//! `qmp-mcp`: an MCP server for QEMU's QMP. See the README and `--help`.

fn main() {
    std::process::exit(qmp_mcp::server::main());
}
