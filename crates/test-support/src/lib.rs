//! Real peers and process helpers for the integration tests of every crate
//! of the workspace (`qmp-client`, `qmp-shell`, `qmp-mcp`), each of which
//! builds one integration-test binary (`tests/<name>/main.rs`) and takes
//! this crate as a dev-dependency. Not published.
//!
//! - [`peer`]: QEMU, the storage daemon and the guest agent on a socket in
//!   a private directory;
//! - [`sshd`]: a private sshd on 127.0.0.1, with throwaway keys;
//! - [`libvirt`]: the real libvirtd and transient TCG domains made for one
//!   test;
//! - [`silent`]: a TCP peer that accepts and never speaks;
//! - [`stray`]: a stray reply from real QEMU on demand;
//! - [`proc`]: waiting for what only the kernel can tell, freezing a
//!   process, a socket that is there but does not listen.
//!
//! Every peer is killed, and its directory removed, when dropped, also
//! when a test panics.

pub mod libvirt;
pub mod peer;
pub mod proc;
pub mod silent;
pub mod sshd;
pub mod stray;

/// The name by which libtest knows the test function `name` of the module
/// at `module_path` (pass `module_path!()`): the module path without the
/// test binary's crate name, then `name` (`libvirt::sessions_can_overlap`
/// for `qmp::libvirt` and `sessions_can_overlap`). What a test that runs
/// itself again in a process of its own passes to `--exact`.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}
