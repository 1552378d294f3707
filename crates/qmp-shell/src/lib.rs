//! The qmp-shell library: everything behind the `qmp-shell` and
//! `qmp-shell-wrap` binaries.
//!
//! Layers, data flowing downward only:
//!
//! * ground floor, pure: [`shorthand`] turns a command line into a QMP
//!   command; [`render`] prints JSON exactly as Python's `json.dumps` does;
//!   [`wording`] words errors as the reference does; [`hmp`] builds and
//!   prints human-monitor commands; [`schema`] answers questions about the
//!   QMP schema; [`cli`] defines the arguments.
//! * [`output`] (how things are printed), [`files`] (files that may hold
//!   secrets), [`doorbell`] and [`signals`] (waking the engine).
//! * [`session`]: the engine. Lines in, commands out, replies printed in
//!   input order; it alone decides when a session ends and its exit status.
//! * the drivers, which only feed the engine lines: [`script`] (pipes and
//!   `-c`) and [`interactive`] (a terminal, with [`complete`]).
//! * [`connect`]: how a target (a socket, an ssh address, a libvirt
//!   domain) becomes a client.
//! * [`app`] and [`wrap`]: the two programs.

pub mod app;
pub mod cli;
pub mod complete;
pub mod connect;
pub mod doorbell;
pub mod files;
pub mod hmp;
pub mod interactive;
pub mod output;
pub mod render;
pub mod schema;
pub mod script;
pub mod session;
pub mod shorthand;
pub mod signals;
pub mod wording;
pub mod wrap;
