//! `qmp-mcp`: an MCP (Model Context Protocol) server on standard input and
//! output that lets AI agents query and drive QEMU VMs through QMP, a thin
//! layer over the `qmp-shell` library.
//!
//! * [`cli`]: the arguments: `qmp-shell`'s target options (the same clap
//!   definitions), `--allow-writes` and `--timeout`; [`cli::command`] gives
//!   the `clap::Command` (manual pages, completions).
//! * [`tools`]: the six tools as clients see them (names, descriptions,
//!   input schemas, annotations) and the checking of their arguments.
//! * [`targets`]: the targets and their connections (made on first use,
//!   made again after a loss), with the events each connection keeps.
//! * [`calls`]: what each tool does, with `qmp-shell`'s read-only
//!   allow-list, schema help, deprecation facts, event matching and job
//!   progress.
//! * [`server`]: the `rmcp` server on a current-thread tokio runtime, and
//!   the program's main.
//!
//! tokio and rmcp are dependencies of this crate only: `qmp-shell`,
//! `qmp-shell-wrap` and `qmp-proxy` do not link them. Every blocking call
//! to a QMP client runs on tokio's blocking pool, never on the runtime's
//! thread.

#![warn(missing_docs)]

pub mod calls;
pub mod cli;
pub mod manual;
pub mod server;
pub mod targets;
pub mod tools;
