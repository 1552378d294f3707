//! The integration tests of `qmp-client`, one binary: each module was a
//! test binary of its own. The real peers they talk to come from the
//! workspace's `qmp-test-support` crate.
//!
//! Run one module with a filter: `cargo test -p qmp-client --test qmp ssh::`.

mod libvirt;
mod peers;
mod properties;
mod router;
mod ssh;
