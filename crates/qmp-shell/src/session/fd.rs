//! `/fd [--read-only] PATH COMMAND ...`: a command sent with a file
//! descriptor (SCM_RIGHTS), for commands such as `getfd` and `add-fd`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use qmp_client::{Object, Request};

use super::Engine;
use crate::wording::python_io_error;

impl Engine {
    /// `/fd [--read-only] PATH COMMAND ...`: the file opened with the
    /// user's rights and handed to QEMU with the command.
    pub(super) fn fd(&mut self, read_only: bool, path: &str, command: Object) {
        // Before the file is opened (and maybe created).
        if self.read_only_refuses(&command) {
            return;
        }
        if !self.client.passes_fds() {
            return self.meta_failure(
                "/fd",
                "this connection cannot pass file descriptors (only a UNIX socket can)".to_owned(),
            );
        }
        let mut opts = std::fs::OpenOptions::new();
        if read_only {
            opts.read(true);
        } else {
            opts.read(true).write(true).create(true).mode(0o600);
        }
        let file = match opts.custom_flags(libc::O_CLOEXEC).open(path) {
            Ok(file) => file,
            Err(err) => {
                return self.meta_failure(
                    "/fd",
                    format!("cannot open {path}: {}", python_io_error(&err)),
                )
            }
        };
        self.send(
            Request::new(command).with_fds(vec![OwnedFd::from(file)]),
            false,
        );
    }
}
