//! What went wrong with ssh, as far as its messages tell: [`SshError`].

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::COMMAND_ENV;

/// What went wrong, as far as ssh's messages tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SshErrorKind {
    /// The ssh program could not be started (not installed, not found).
    NotInstalled,
    /// The server refused every key or password (`Permission denied`).
    Authentication,
    /// The server's host key is not the known one, or is unknown and
    /// strict checking is on.
    HostKey,
    /// The remote socket could not be opened: missing, nothing listens on
    /// it, or the server forbids forwarding to sockets (OpenSSH's sshd
    /// gives the same reason for all three).
    RemoteSocket,
    /// The server said forwarding is "administratively prohibited" (OpenSSH's
    /// sshd does not: it reports a forbidden socket forwarding as
    /// [`SshErrorKind::RemoteSocket`]).
    ForwardingProhibited,
    /// The host could not be reached: name not resolved, connection
    /// refused, timed out, closed during the handshake...
    Unreachable,
    /// ssh did not set up the forwarding within
    /// [`SshOptions::timeout`](super::SshOptions::timeout).
    Timeout,
    /// Anything else: ssh's last message, or its exit status.
    Other,
}

/// An ssh failure, with a one-line message that quotes ssh where it helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshError {
    kind: SshErrorKind,
    message: String,
}

impl SshError {
    pub(super) fn new(kind: SshErrorKind, message: String) -> SshError {
        // One line, whatever ssh wrote.
        let message = message
            .split(['\n', '\r'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        SshError { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> SshErrorKind {
        self.kind
    }

    /// The message, one line.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The [`SshError`] inside an [`io::Error`] made by this module.
    pub fn from_io(err: &io::Error) -> Option<&SshError> {
        err.get_ref()?.downcast_ref::<SshError>()
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SshError {}

impl From<SshError> for io::Error {
    fn from(err: SshError) -> io::Error {
        let kind = match err.kind {
            SshErrorKind::NotInstalled => io::ErrorKind::NotFound,
            SshErrorKind::Authentication
            | SshErrorKind::HostKey
            | SshErrorKind::ForwardingProhibited => io::ErrorKind::PermissionDenied,
            SshErrorKind::RemoteSocket => io::ErrorKind::ConnectionRefused,
            SshErrorKind::Unreachable => io::ErrorKind::HostUnreachable,
            SshErrorKind::Timeout => io::ErrorKind::TimedOut,
            SshErrorKind::Other => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// Lines of ssh's that say nothing about a failure.
pub(super) fn meaningful(line: &str) -> bool {
    !(line.starts_with("Warning: Permanently added")
        || line.starts_with("debug")
        || line.starts_with("Pseudo-terminal")
        || line.starts_with("Authenticated to")
        || line.chars().all(|c| c == '@'))
}

/// Why ssh failed, from its standard-error `lines` and exit `status`;
/// `None` if nothing says it did.
pub(super) fn classify(
    lines: &[String],
    status: Option<ExitStatus>,
    destination: &str,
    path: &Path,
) -> Option<SshError> {
    let find = |needle: &str| lines.iter().find(|l| l.contains(needle));
    let with_ssh = |line: &str| {
        if line.starts_with("ssh: ") {
            line.to_owned()
        } else {
            format!("ssh: {line}")
        }
    };

    if let Some(line) = find("host key is known for")
        .or_else(|| find("has changed and you have requested strict checking"))
        .or_else(|| find("Host key verification failed"))
        .or_else(|| find("REMOTE HOST IDENTIFICATION HAS CHANGED"))
    {
        let mut message = format!("ssh: host key verification failed for {destination}");
        if !line.starts_with("Host key verification failed") {
            message.push_str(": ");
            message.push_str(
                line.trim_start_matches("WARNING: ")
                    .trim_matches([' ', '@']),
            );
        }
        if let Some(offending) = find("Offending ") {
            message.push_str(&format!(" ({offending})"));
        }
        return Some(SshError::new(SshErrorKind::HostKey, message));
    }
    if let Some(line) =
        find("Permission denied (").or_else(|| find("Too many authentication failures"))
    {
        return Some(SshError::new(
            SshErrorKind::Authentication,
            format!("ssh: authentication failed: {line}"),
        ));
    }
    if let Some(line) = find("open failed: administratively prohibited") {
        return Some(SshError::new(
            SshErrorKind::ForwardingProhibited,
            format!(
                "ssh: {destination} does not allow forwarding to its socket {} \
                 (AllowStreamLocalForwarding, or a restricted key): {line}",
                path.display()
            ),
        ));
    }
    if let Some(line) = find("open failed: connect failed") {
        return Some(SshError::new(
            SshErrorKind::RemoteSocket,
            format!(
                "ssh: cannot open the socket {} on {destination} (it does not exist, \
                 nothing listens on it, or the server forbids socket forwarding): {line}",
                path.display()
            ),
        ));
    }
    if let Some(line) = find("Could not resolve hostname")
        .or_else(|| find("ssh: connect to host"))
        .or_else(|| find("kex_exchange_identification"))
        .or_else(|| find("Connection closed by"))
        .or_else(|| find("Connection reset by"))
        .or_else(|| find("Connection timed out during banner exchange"))
    {
        return Some(SshError::new(SshErrorKind::Unreachable, with_ssh(line)));
    }
    // Nothing recognised: a failure only if ssh is gone.
    let status = status?;
    if let Some(line) = lines.iter().rev().find(|l| meaningful(l)) {
        return Some(SshError::new(SshErrorKind::Other, with_ssh(line)));
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_owned(),
    };
    Some(SshError::new(
        SshErrorKind::Other,
        format!("ssh to {destination} {how}"),
    ))
}

pub(super) fn spawn_error(program: &str, err: io::Error) -> io::Error {
    let from_env = std::env::var_os(COMMAND_ENV).is_some_and(|v| !v.is_empty());
    let source = if from_env {
        format!(" (from {COMMAND_ENV})")
    } else {
        String::new()
    };
    if err.kind() == io::ErrorKind::NotFound {
        return SshError::new(
            SshErrorKind::NotInstalled,
            format!(
                "cannot run {program}{source}: not found \
                 (install openssh-client, or set {COMMAND_ENV})"
            ),
        )
        .into();
    }
    SshError::new(
        SshErrorKind::Other,
        format!("cannot run {program}{source}: {err}"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn kind_and_message(text: &str, status: Option<i32>) -> Option<(SshErrorKind, String)> {
        let status = status.map(|code| ExitStatus::from_raw(code << 8));
        classify(&lines(text), status, "root@h", Path::new("/run/q.sock"))
            .map(|e| (e.kind(), e.message().to_owned()))
    }

    #[test]
    fn authentication() {
        let got = kind_and_message(
            "Warning: Permanently added '[127.0.0.1]:5' (ED25519) to the list of known hosts.\n\
             root@127.0.0.1: Permission denied (publickey,password).",
            Some(255),
        );
        assert_eq!(
            got,
            Some((
                SshErrorKind::Authentication,
                "ssh: authentication failed: root@127.0.0.1: Permission denied (publickey,password)."
                    .to_owned()
            ))
        );
    }

    #[test]
    fn host_key_changed() {
        let text = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Offending ED25519 key in /tmp/kh:1\n\
            Host key for [127.0.0.1]:5 has changed and you have requested strict checking.\n\
            Host key verification failed.";
        let (kind, message) = kind_and_message(text, Some(255)).unwrap();
        assert_eq!(kind, SshErrorKind::HostKey);
        assert_eq!(
            message,
            "ssh: host key verification failed for root@h: Host key for [127.0.0.1]:5 has \
             changed and you have requested strict checking. (Offending ED25519 key in /tmp/kh:1)"
        );
        let (kind, message) = kind_and_message(
            "No ED25519 host key is known for h and you have requested strict checking.\n\
             Host key verification failed.",
            Some(255),
        )
        .unwrap();
        assert_eq!(kind, SshErrorKind::HostKey);
        assert!(
            message.ends_with(
                "No ED25519 host key is known for h and you have requested strict checking."
            ),
            "{message}"
        );
        let (_, message) = kind_and_message("Host key verification failed.", Some(255)).unwrap();
        assert_eq!(message, "ssh: host key verification failed for root@h");
    }

    #[test]
    fn remote_socket() {
        // ssh is still running: the line alone says it.
        let (kind, message) =
            kind_and_message("channel 1: open failed: connect failed: open failed", None).unwrap();
        assert_eq!(kind, SshErrorKind::RemoteSocket);
        assert_eq!(
            message,
            "ssh: cannot open the socket /run/q.sock on root@h (it does not exist, nothing \
             listens on it, or the server forbids socket forwarding): channel 1: open failed: \
             connect failed: open failed"
        );
        let (kind, _) = kind_and_message(
            "channel 2: open failed: administratively prohibited: open failed",
            None,
        )
        .unwrap();
        assert_eq!(kind, SshErrorKind::ForwardingProhibited);
    }

    #[test]
    fn unreachable() {
        for line in [
            "ssh: connect to host 127.0.0.1 port 1: Connection refused",
            "ssh: Could not resolve hostname nope.invalid: Name or service not known",
            "kex_exchange_identification: Connection closed by remote host",
            "Connection closed by 127.0.0.1 port 22",
        ] {
            let (kind, message) = kind_and_message(line, Some(255)).unwrap();
            assert_eq!(kind, SshErrorKind::Unreachable, "{line}");
            assert!(
                message.starts_with("ssh: ") && message.ends_with(line),
                "{message}"
            );
        }
    }

    #[test]
    fn other_failures_need_ssh_gone() {
        assert_eq!(kind_and_message("", None), None);
        assert_eq!(
            kind_and_message("Warning: Permanently added 'h' (ED25519) to the list", None),
            None
        );
        assert_eq!(kind_and_message("Welcome to our banner", None), None);
        assert_eq!(
            kind_and_message(
                "Welcome\nBad configuration option: permitlocalcommand",
                Some(255)
            ),
            Some((
                SshErrorKind::Other,
                "ssh: Bad configuration option: permitlocalcommand".to_owned()
            ))
        );
        assert_eq!(
            kind_and_message("", Some(3)),
            Some((
                SshErrorKind::Other,
                "ssh to root@h exited with status 3".to_owned()
            ))
        );
        let killed = classify(&[], Some(ExitStatus::from_raw(9)), "h", Path::new("/q"));
        assert_eq!(
            killed.map(|e| e.message().to_owned()),
            Some("ssh to h was killed by signal 9".to_owned())
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = SshError::new(SshErrorKind::Other, "a\r\nb\nc".to_owned());
        assert_eq!(e.to_string(), "a b c");
        let io: io::Error = e.into();
        assert_eq!(io.to_string(), "a b c");
        assert_eq!(
            SshError::from_io(&io).map(SshError::kind),
            Some(SshErrorKind::Other)
        );
        assert_eq!(SshError::from_io(&io::Error::other("x")), None);
    }
}
