//! The qmp-shell library: everything behind the `qmp-shell`,
//! `qmp-shell-wrap` and `qmp-proxy` binaries.
//!
//! Layers, data flowing downward only (a module imports only from the
//! layers below it, or beside it on the ground floor):
//!
//! * ground floor, pure: [`shorthand`] turns a command line into a QMP
//!   command and [`meta`] parses the shell's own `/` commands; `rawjson`
//!   finds where a raw JSON message typed over several lines ends;
//!   [`render`] prints JSON exactly as Python's `json.dumps` does;
//!   [`wording`] words errors as the reference does; `hmp` builds and
//!   prints human-monitor commands; [`schema`] answers questions about the
//!   QMP schema, and [`facts`] keeps what the safety net needs from it;
//!   [`readonly`] says what `--read-only` lets through; [`jobs`] follows
//!   jobs for `/jobs`; [`cli`] defines the arguments; [`manual`] holds
//!   the manual pages' own sections, and [`generate`] prints the pages and
//!   completion scripts (`--generate`).
//! * `output` (how things are printed), `files` (files that may hold
//!   secrets), [`store`] (the schema, fetched once, and its facts cached on
//!   disk), `doorbell` and `signals` (waking the engine), `live` (what
//!   arrives, events and the engine's replies, numbered in the order of the
//!   wire; at a terminal, what is printed as it arrives).
//! * `session`: the engine. Lines in, commands out, replies printed in
//!   input order; it alone decides when a session ends and its exit status.
//! * the drivers, which only feed the engine lines: `script` (pipes and
//!   `-c`) and `interactive` (a terminal, with `complete`).
//! * [`connect`]: how a target (a socket, an ssh address, a libvirt
//!   domain) becomes a client.
//! * `fanout`: the same lines on many targets at once, each with its own
//!   engine and tagged output.
//! * [`app`], [`wrap`] and [`proxy`]: the programs.
//!
//! What is public is what other crates use: the programs' entry points
//! (`main` of [`app`], [`wrap`] and [`proxy`]); for `qmp-mcp`, the target
//! arguments ([`cli`]), connecting ([`connect`]), the schema and its facts
//! ([`store`], [`schema`], [`facts`]), the `--read-only` allow-list
//! ([`readonly`]), event matching ([`meta::matches`]), job progress
//! ([`jobs::Progress`]), error wording ([`wording`]) and the manual pages
//! ([`manual`], [`generate`]); for the benchmarks, fuzz targets and
//! property tests, [`shorthand`] and [`render`]. The modules written
//! without a link are internal.

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub(crate) mod complete;
pub mod connect;
pub(crate) mod doorbell;
pub mod facts;
pub(crate) mod fanout;
pub(crate) mod files;
pub mod generate;
pub(crate) mod hmp;
pub(crate) mod interactive;
pub mod jobs;
pub(crate) mod live;
pub mod manual;
pub mod meta;
pub(crate) mod output;
mod pow;
pub mod proxy;
pub(crate) mod rawjson;
pub mod readonly;
pub mod render;
pub mod schema;
pub(crate) mod script;
pub(crate) mod session;
pub mod shorthand;
pub(crate) mod signals;
pub mod store;
pub mod wording;
pub mod wrap;
