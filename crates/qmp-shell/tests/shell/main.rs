//! The integration tests of `qmp-shell` (`qmp-shell`, `qmp-shell-wrap`,
//! `qmp-proxy`), one binary: each module was a test binary of its own.
//! `common` holds what they share here (the programs under test, the
//! reference, peers, running a program with a hard timeout, a terminal);
//! the peers shared with the other crates' tests (sshd, libvirt domains,
//! stray replies, process helpers) come from the workspace's
//! `qmp-test-support` crate.
//!
//! Run one module with a filter: `cargo test -p qmp-shell --test shell
//! differential::`.

mod common;
mod hostile_server;

mod cli;
mod differential;
mod fanout;
mod hardening;
mod hostile;
mod libvirt_shell;
mod logging;
mod meta;
mod packaging;
mod properties;
mod proxy;
mod render_python;
mod scripting;
mod shorthand_props;
mod terminal;
mod wrap;
