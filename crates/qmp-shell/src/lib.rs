//! The qmp-shell library: everything behind the `qmp-shell` and
//! `qmp-shell-wrap` binaries.
//!
//! Layers, data flowing downward only:
//!
//! * ground floor, pure: [`shorthand`] turns a command line into a QMP
//!   command; [`render`] prints JSON exactly as Python's `json.dumps` does;
//!   [`hmp`] builds and prints human-monitor commands; [`cli`] defines the
//!   arguments.
//! * [`session`]: lines in, commands out, replies printed in input order.
//! * [`schema`], [`complete`] and [`interactive`]: the terminal (line
//!   editing, schema-aware completion, `help`, history, live events).
//! * [`repl`]: the pipelined script mode.
//! * [`app`] and [`wrap`]: the two programs.

pub mod app;
pub mod cli;
pub mod complete;
pub mod hmp;
pub mod interactive;
pub mod render;
pub mod repl;
pub mod schema;
pub mod session;
pub mod shorthand;
pub mod wrap;
