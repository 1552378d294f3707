//! The qmp-shell library: everything behind the `qmp-shell` and
//! `qmp-shell-wrap` binaries.
//!
//! The ground floor is pure: [`shorthand`] turns a command line into a QMP
//! command and [`render`] prints JSON exactly as Python's `json.dumps` does.
//! Above it sit the interactive pieces (line editing, HMP, the wrap launcher).

pub mod render;
pub mod shorthand;
