//! One session's shared state, and its halves: the source that hands out
//! what the queue holds, and the sink that makes one libvirt call per
//! message.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::connection::{Handles, NO_FD_PASSING};
use super::events::{on_close, Callbacks};
use super::ffi::{self, code, Lib, VirErr};
use super::messages::{libvirt_command, reply_item};
use super::queue::{Item, Queue};
use crate::message::{empty_return, generic_error, Object};
use crate::plumbing::lock;
use crate::transport::{Received, Sink, Source};

/// What the halves of one session share.
pub(super) struct Session {
    pub(super) lib: &'static Lib,
    /// `None` once closed. Calls in progress hold their own reference, so
    /// closing never waits for one; the connection closes when the last
    /// reference goes.
    pub(super) handles: Mutex<Option<Arc<Handles>>>,
    pub(super) callbacks: Mutex<Callbacks>,
    pub(super) queue: Arc<Queue>,
    pub(super) agent: bool,
}

impl Session {
    pub(super) fn handles(&self) -> Option<Arc<Handles>> {
        lock(&self.handles).clone()
    }

    /// Whether file descriptors can go with a command: to the monitor,
    /// through a libvirt that has `virDomainQemuMonitorCommandWithFiles`.
    pub(super) fn passes_fds(&self) -> bool {
        !self.agent && self.lib.virDomainQemuMonitorCommandWithFiles.is_some()
    }

    /// End the session: the source returns end of stream, callbacks are
    /// deregistered, and the connection is closed (once no call is in
    /// progress on it), which stops the event thread if no other connection
    /// needs it. Idempotent.
    pub(super) fn shutdown(&self) {
        self.queue.close();
        let Some(h) = lock(&self.handles).take() else {
            return;
        };
        let cbs = std::mem::take(&mut *lock(&self.callbacks));
        let lib = self.lib;
        let conn = h.conn.ptr;
        // SAFETY: a live connection and ids (or the callback) registered on
        // it; libvirt releases each opaque reference through `free_queue`.
        unsafe {
            if let Some(id) = cbs.monitor {
                (lib.virConnectDomainQemuMonitorEventDeregister)(conn, id);
            }
            if let Some(id) = cbs.lifecycle {
                (lib.virConnectDomainEventDeregisterAny)(conn, id);
            }
            if cbs.close {
                (lib.virConnectUnregisterCloseCallback)(conn, on_close);
            }
        }
        let _ = lib.take_error();
        drop(h);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(super) struct LibvirtSource {
    pub(super) session: Arc<Session>,
    /// A frame whose delimiter was just received.
    pub(super) pending: Option<Item>,
    /// Whether `receive`'s `raw` is used ([`Source::want_raw`]): if not,
    /// the frames made here are not serialised for it.
    pub(super) raw_wanted: bool,
}

impl Source for LibvirtSource {
    fn want_raw(&mut self, wanted: bool) {
        self.raw_wanted = wanted;
    }

    fn receive(&mut self, raw: &mut dyn FnMut(&[u8])) -> io::Result<Option<Received>> {
        let queue = &self.session.queue;
        Ok(if self.raw_wanted {
            next_received(queue, &mut self.pending, raw)
        } else {
            next_frame(queue, &mut self.pending, None)
        })
    }
}

/// The source's next message from `queue`, a delimiter first for a
/// delimited frame (which then waits in `pending`), its text given to `raw`.
pub(super) fn next_received(
    queue: &Queue,
    pending: &mut Option<Item>,
    raw: &mut dyn FnMut(&[u8]),
) -> Option<Received> {
    next_frame(queue, pending, Some(raw))
}

/// Where [`Source::receive`] gives the text of a frame.
pub(super) type RawText<'a> = &'a mut dyn FnMut(&[u8]);

/// [`next_received`], with the text made and given to `raw` only if there
/// is one.
pub(super) fn next_frame(
    queue: &Queue,
    pending: &mut Option<Item>,
    raw: Option<RawText<'_>>,
) -> Option<Received> {
    let item = match pending.take() {
        Some(item) if !queue.is_closed() => item,
        _ => queue.pop()?,
    };
    if item.delimited {
        *pending = Some(Item {
            delimited: false,
            ..item
        });
        return Some(Received::Delimiter);
    }
    if let Some(raw) = raw {
        match (&item.raw, &item.frame) {
            (Some(text), _) => raw(text),
            (None, Ok(obj)) => raw(&serde_json::to_vec(obj).unwrap_or_default()),
            (None, Err(_)) => {}
        }
    }
    Some(Received::Frame(item.frame))
}

pub(super) struct LibvirtSink {
    pub(super) session: Arc<Session>,
}

impl Sink for LibvirtSink {
    fn send(&mut self, msg: &Object, encoded: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let session = &self.session;
        let Some(handles) = session.handles() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the libvirt session is closed",
            ));
        };
        if !fds.is_empty() && !session.passes_fds() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                if session.agent {
                    "libvirt cannot pass file descriptors to a guest agent"
                } else {
                    NO_FD_PASSING
                },
            ));
        }
        if session.queue.ended() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the domain stopped or the connection to libvirt was lost",
            ));
        }
        let id = msg.get("id");
        let (cmd, delimited) = libvirt_command(msg, encoded, session.agent);
        let Some(cmd) = cmd else {
            session.queue.push(Item::object(generic_error(
                id,
                "the message contains a NUL character",
            )));
            return Ok(());
        };
        session.queue.begin_call();
        let result = if session.agent {
            handles.agent_command(&cmd, ffi::VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT)
        } else {
            handles.monitor_command(&cmd, fds)
        };
        match result {
            Ok(text) => {
                let mut reply = reply_item(&text, id);
                reply.delimited = delimited;
                session.queue.end_call(Some(reply));
                Ok(())
            }
            Err(e) if !session.agent && is_quit(msg) && quit_went_through(&e, &handles) => {
                // QEMU answers `quit` with {"return": {}} and exits at once;
                // libvirt often loses that answer as the monitor closes
                // under it, and reports the closing instead.
                session.queue.end_call(Some(Item::object(empty_return(id))));
                Ok(())
            }
            Err(e) if !handles.alive() => {
                session.queue.end();
                session.queue.end_call(None);
                Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("libvirt: {}", e.message),
                ))
            }
            Err(e) => {
                session
                    .queue
                    .end_call(Some(Item::object(generic_error(id, &e.message))));
                Ok(())
            }
        }
    }

    fn send_raw(&mut self, _bytes: &[u8]) -> io::Result<()> {
        // libvirt carries messages, not bytes (and resynchronises with the
        // guest agent itself before every command).
        Ok(())
    }
}

/// The command's name.
pub(super) fn execute_name(msg: &Object) -> Option<&str> {
    msg.get("execute").and_then(Value::as_str)
}

/// Whether `msg` is QEMU's `quit`.
pub(super) fn is_quit(msg: &Object) -> bool {
    execute_name(msg) == Some("quit")
}

/// After `quit` failed: whether it failed because QEMU quit (the monitor
/// closed, or the domain is gone), not for a reason of libvirt's own (say,
/// a job lock that timed out, where the domain is still up).
pub(super) fn quit_went_through(e: &VirErr, handles: &Handles) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_OPERATION_FAILED
            | code::VIR_ERR_SYSTEM_ERROR
            | code::VIR_ERR_OPERATION_INVALID
    ) || !handles.alive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn guest_sync_delimited_goes_as_guest_sync_and_gets_a_delimiter() {
        let m = obj(r#"{"execute":"guest-sync-delimited","arguments":{"id":123},"id":"s"}"#);
        let (cmd, delimited) = libvirt_command(&m, &crate::encode(&m), true);
        assert!(delimited);
        assert_eq!(
            cmd.unwrap().to_str().unwrap(),
            r#"{"execute":"guest-sync","arguments":{"id":123}}"#
        );
        // On the monitor it is just an unknown command, sent as it is.
        let (cmd, delimited) = libvirt_command(&m, &crate::encode(&m), false);
        assert!(!delimited);
        assert_eq!(
            cmd.unwrap().to_str().unwrap(),
            r#"{"execute":"guest-sync-delimited","arguments":{"id":123}}"#
        );

        let q = Queue::default();
        let mut reply = reply_item(br#"{"return":123}"#, Some(&Value::from("s")));
        reply.delimited = true;
        q.push(reply);
        q.end();
        let mut pending = None;
        let mut raws = Vec::new();
        let mut raw = |b: &[u8]| raws.push(String::from_utf8_lossy(b).into_owned());
        assert_eq!(
            next_received(&q, &mut pending, &mut raw),
            Some(Received::Delimiter)
        );
        assert_eq!(
            next_received(&q, &mut pending, &mut raw),
            Some(Received::Frame(Ok(obj(r#"{"return":123,"id":"s"}"#))))
        );
        assert_eq!(next_received(&q, &mut pending, &mut raw), None);
        assert_eq!(raws, [r#"{"return":123,"id":"s"}"#]);
    }
}
