//! Wording and shapes the reference shell (Python) gives its output, where
//! the QMP library has its own: OS errors as Python's `OSError` prints them,
//! replies without the id the client added; counts with their nouns.

use std::io;

use qmp_client::{Object, Reply};

/// Format an I/O error like Python's `OSError.__str__`: `[Errno N] strerror`
/// for OS errors, Rust's text otherwise.
pub(crate) fn python_io_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            let suffix = format!(" (os error {code})");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("[Errno {code}] {text}")
        }
        None => err.to_string(),
    }
}

/// A client error in the reference's words: OS errors Python-style; any
/// other error with its causes, `error: cause: cause...` (each error of the
/// client says its own part only).
pub fn client_error(err: &qmp_client::Error) -> String {
    match err {
        qmp_client::Error::Io(e) => python_io_error(e),
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(e) = cause {
                text.push_str(": ");
                text.push_str(&e.to_string());
                cause = e.source();
            }
            text
        }
    }
}

/// `n` and the noun that goes with it: `counted(1, "line", "lines")` is
/// `1 line`, `counted(2, ...)` is `2 lines`.
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The reply as the user sees it: without the `"id"` when the client
/// assigned it (the user did not write one), the key order kept.
pub fn shown(reply: Reply) -> Object {
    let assigned = reply.assigned_id;
    let mut body = reply.into_body();
    if assigned {
        body.shift_remove("id");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn io_errors_display_python_style() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(python_io_error(&e), "[Errno 2] No such file or directory");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(python_io_error(&e), "[Errno 111] Connection refused");
        assert_eq!(python_io_error(&io::Error::other("custom")), "custom");
        assert_eq!(
            client_error(&qmp_client::Error::Disconnected),
            "Disconnected"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(counted(0, "target", "targets"), "0 targets");
        assert_eq!(counted(1, "target", "targets"), "1 target");
        assert_eq!(counted(2, "line was", "lines were"), "2 lines were");
    }

    #[test]
    fn shown_removes_assigned_id_only() {
        let body: Object =
            serde_json::from_str(r#"{"return": {}, "id": "__qmp#1", "z": 1}"#).unwrap();
        let r = Reply::new(body.clone(), true);
        assert_eq!(
            serde_json::to_string(&shown(r)).unwrap(),
            r#"{"return":{},"z":1}"#
        );
        let r = Reply::new(body, false);
        let kept = shown(r);
        assert_eq!(kept.get("id"), Some(&Value::from("__qmp#1")));
    }
}
