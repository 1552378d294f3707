//! `--read-only`: which commands cannot change the VM, and may be sent.
//!
//! An allow list, so that a command nobody thought about is refused:
//! queries (`query-*`, `x-query-*`), QOM reads (`qom-get`, `qom-list`,
//! `qom-list-types`, `qom-list-properties`, `device-list-properties`),
//! `human-monitor-command` with an `info` command line; for the guest
//! agent `guest-info`, `guest-ping` and `guest-get-*`; in HMP mode `info`
//! (and `cpu N`, which only picks the CPU later `info` commands look at).

use qmp_client::Object;
use serde_json::Value;

/// QMP commands that only read, besides `query-*` and `x-query-*`.
const READERS: [&str; 5] = [
    "qom-get",
    "qom-list",
    "qom-list-types",
    "qom-list-properties",
    "device-list-properties",
];

/// Whether the HMP command line `line` only reads (`info ...`).
pub(crate) fn hmp_allowed(line: &str) -> bool {
    matches!(line.split_whitespace().next(), Some("info") | Some("cpu"))
}

/// Whether command `name` with `args` may be sent under `--read-only`;
/// `guest_agent`: the peer is a guest agent (`-N`).
pub fn allowed(name: &str, args: Option<&Object>, guest_agent: bool) -> bool {
    if guest_agent {
        return matches!(name, "guest-info" | "guest-ping") || name.starts_with("guest-get-");
    }
    if name.starts_with("query-") || name.starts_with("x-query-") || READERS.contains(&name) {
        return true;
    }
    if name == "human-monitor-command" {
        let line = args
            .and_then(|a| a.get("command-line"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        return matches!(line.split_whitespace().next(), Some("info"));
    }
    false
}

/// What a message `msg` would make the peer do under `--read-only`: `None`
/// when it may be sent, else the name of the command to refuse it for.
/// Every command it names counts, `execute` and `exec-oob` alike: QEMU
/// rejects a message with both, but an allowed name in one key must not
/// carry a refused one in the other. A message that names no command (or
/// not as a string) is refused too, with an empty name.
pub(crate) fn refused(msg: &Object, guest_agent: bool) -> Option<String> {
    let args = msg.get("arguments").and_then(Value::as_object);
    let mut names = ["execute", "exec-oob"]
        .iter()
        .filter_map(|key| msg.get(*key))
        .peekable();
    if names.peek().is_none() {
        return Some(String::new());
    }
    names
        .map(|v| v.as_str().unwrap_or_default())
        .find(|name| !allowed(name, args, guest_agent))
        .map(str::to_owned)
}

/// The one-line reason a command is refused.
pub(crate) fn refusal(name: &str) -> String {
    format!("refused by --read-only: {name} may change the VM; it was not sent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Object {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn queries_and_reads_only() {
        for name in [
            "query-status",
            "x-query-roms",
            "qom-get",
            "qom-list",
            "qom-list-types",
            "qom-list-properties",
            "device-list-properties",
        ] {
            assert!(allowed(name, None, false), "{name}");
        }
        for name in [
            "stop",
            "cont",
            "quit",
            "system_reset",
            "blockdev-add",
            "transaction",
            "qom-set",
            "add-fd",
            "getfd",
            "migrate-pause",
            "human-monitor-command",
            "queryx",
            "guest-ping",
        ] {
            assert!(!allowed(name, None, false), "{name}");
        }
        let hmp = |line: &str| args(json!({"command-line": line}));
        assert!(allowed(
            "human-monitor-command",
            Some(&hmp("info status")),
            false
        ));
        assert!(allowed(
            "human-monitor-command",
            Some(&hmp("  info")),
            false
        ));
        assert!(!allowed("human-monitor-command", Some(&hmp("stop")), false));
        assert!(!allowed(
            "human-monitor-command",
            Some(&hmp("information")),
            false
        ));
        assert!(!allowed(
            "human-monitor-command",
            Some(&args(json!({"command-line": 1}))),
            false
        ));
    }

    #[test]
    fn every_command_a_message_names_counts() {
        let msg = |v: Value| args(v);
        assert_eq!(
            refused(&msg(json!({"execute": "query-status"})), false),
            None
        );
        assert_eq!(
            refused(&msg(json!({"exec-oob": "query-yank"})), false),
            None
        );
        for (m, name) in [
            (
                json!({"execute": "query-status", "exec-oob": "stop"}),
                "stop",
            ),
            (
                json!({"exec-oob": "stop", "execute": "query-status"}),
                "stop",
            ),
            (json!({"execute": "stop", "exec-oob": "query-yank"}), "stop"),
            (json!({"exec-oob": "yank"}), "yank"),
            (json!({"execute": 1}), ""),
            (json!({"arguments": {}}), ""),
        ] {
            assert_eq!(
                refused(&msg(m.clone()), false).as_deref(),
                Some(name),
                "{m}"
            );
        }
        assert_eq!(
            refused(
                &msg(json!({"execute": "guest-ping", "exec-oob": "guest-exec"})),
                true
            )
            .as_deref(),
            Some("guest-exec")
        );
    }

    #[test]
    fn guest_agent_and_hmp() {
        for name in [
            "guest-info",
            "guest-ping",
            "guest-get-osinfo",
            "guest-get-time",
        ] {
            assert!(allowed(name, None, true), "{name}");
        }
        for name in [
            "guest-shutdown",
            "guest-exec",
            "guest-set-time",
            "query-status",
        ] {
            assert!(!allowed(name, None, true), "{name}");
        }
        assert!(hmp_allowed("info registers"));
        assert!(hmp_allowed("cpu 1"));
        assert!(!hmp_allowed("stop"));
        assert!(!hmp_allowed("infox"));
        assert!(!hmp_allowed(""));
    }
}
