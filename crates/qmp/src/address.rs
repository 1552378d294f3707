//! Server addresses as given on the command line: a UNIX socket path,
//! `HOST:PORT`, or `ssh://[USER@]HOST[:PORT]/PATH` for a UNIX socket on
//! another machine reached through the system `ssh`
//! ([`crate::transport::ssh`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a QMP server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A UNIX domain socket path.
    Unix(PathBuf),
    /// A TCP host and port. The host is kept as given (an empty host is
    /// connected to as `localhost`).
    Tcp {
        /// Host name or IP address, without brackets for IPv6.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A UNIX domain socket on another machine, reached through `ssh`
    /// (`ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH`); see
    /// [`crate::transport::ssh::SshTransport`].
    Ssh {
        /// The remote user name (`ssh -l`); `None` leaves it to ssh's
        /// configuration.
        user: Option<String>,
        /// Host name or IP address, without brackets for IPv6. Passed to
        /// `ssh` as the destination, so `Host` aliases of `ssh_config` work.
        host: String,
        /// The ssh port (`ssh -p`); `None` leaves it to ssh's configuration.
        port: Option<u16>,
        /// The absolute path of the socket on the remote machine.
        path: PathBuf,
    },
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The part after the colon is not an integer in `0..=65535`.
    /// Holds the whole address text.
    #[error("Bad port number: {0}")]
    BadPort(String),
    /// `unix:` with nothing after it. Holds the whole address text.
    #[error("Empty UNIX socket path: {0}")]
    EmptyPath(String),
    /// An `ssh://` address that cannot be right: no host, no absolute
    /// socket path, a bad port, an unbracketed IPv6 address, a host or user
    /// that would be taken for an ssh option...
    #[error("Bad ssh address {address}: {reason}")]
    BadSsh {
        /// The whole address text.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parse like the reference `qmp-shell`, plus three prefixes:
    ///
    /// * `ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH` (scheme in any case) is a
    ///   UNIX socket on HOST, reached through ssh; an IPv6 HOST goes in
    ///   brackets. Nothing is percent-decoded: every character is taken
    ///   literally.
    /// * `unix:PATH` (QEMU's spelling) is the UNIX socket PATH, whatever it
    ///   contains;
    /// * `tcp:HOST:PORT` and `tcp:[V6ADDR]:PORT` (QEMU's spelling) are TCP;
    ///   `tcp:` followed by anything else falls through to the rules below.
    ///
    /// Then, as the reference does:
    ///
    /// * `[V6ADDR]:PORT` is TCP to `V6ADDR`;
    /// * text with exactly one `:` is `HOST:PORT`, the port parsed like Python's
    ///   `int()` (surrounding whitespace, a sign and `_` between digits allowed);
    /// * anything else (no colon, or two or more) is a UNIX socket path.
    fn from_str(s: &str) -> Result<Address, AddressError> {
        if let Some(rest) = strip_prefix_ignore_case(s, "ssh://") {
            return parse_ssh(s, rest);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::EmptyPath(s.to_owned()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            if let Some(addr) = parse_host_port(s, rest) {
                return addr;
            }
        }
        if let Some(addr) = parse_host_port(s, s) {
            return addr;
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

/// `[V6ADDR]:PORT`, or `HOST:PORT` with exactly one colon: `Some` TCP
/// address or bad port (reported with the whole text `whole`); `None` when
/// `text` has neither shape.
fn parse_host_port(whole: &str, text: &str) -> Option<Result<Address, AddressError>> {
    let tcp = |host: &str, port: &str| {
        Some(match parse_port(port) {
            Some(port) => Ok(Address::Tcp {
                host: host.to_owned(),
                port,
            }),
            None => Err(AddressError::BadPort(whole.to_owned())),
        })
    };
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return tcp(host, port);
        }
    }
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(host), Some(port), None) => tcp(host, port),
        _ => None,
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        // The prefix is ASCII, so this is a character boundary.
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Parse what follows `ssh://` in `whole`.
fn parse_ssh(whole: &str, rest: &str) -> Result<Address, AddressError> {
    let bad = |reason: &str| AddressError::BadSsh {
        address: whole.to_owned(),
        reason: reason.to_owned(),
    };
    // What ssh would misread in a user name or a host (`noun`).
    let check_name = |noun: &str, text: &str| {
        if text.starts_with('-') {
            return Err(bad(&format!("{noun} must not start with '-'")));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(&format!(
                "{noun} contains a space or a control character"
            )));
        }
        Ok(())
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    // The user may itself contain '@' (as ssh allows): the host follows the last one.
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, authority),
    };
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        let (host, tail) = inner
            .split_once(']')
            .ok_or_else(|| bad("'[' without a closing ']' in the host"))?;
        match tail {
            "" => (host, None),
            _ => match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => {
                    return Err(bad(
                        "unexpected text after ']' (expected ':PORT' or '/PATH')",
                    ))
                }
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(bad(
                    "an IPv6 address must be in brackets: ssh://[ADDRESS]/PATH",
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if let Some(user) = user {
        if user.is_empty() {
            return Err(bad("empty user name before '@'"));
        }
        check_name("the user name", user)?;
    }
    if host.is_empty() {
        return Err(bad("no host"));
    }
    check_name("the host", host)?;
    let port = match port {
        None => None,
        Some(text) => Some(parse_ssh_port(text).ok_or_else(|| {
            bad(&format!(
                "bad port number '{text}' (expected an integer from 1 to 65535)"
            ))
        })?),
    };
    if path.is_empty() || path == "/" {
        return Err(bad(
            "no socket path (expected ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH)",
        ));
    }
    if path.starts_with("/~") {
        return Err(bad(
            "the socket path must be absolute ('~' is not expanded)",
        ));
    }
    if path.contains('\0') {
        return Err(bad("the socket path contains a NUL character"));
    }
    Ok(Address::Ssh {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        path: PathBuf::from(path),
    })
}

/// A port in a URL: decimal digits only, 1 to 65535.
fn parse_ssh_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|port| *port != 0)
}

impl Address {
    /// The address as most people write it, which may parse back as
    /// something else (a path with one colon reads as `HOST:PORT`).
    fn plain(&self) -> String {
        match self {
            Address::Unix(path) => path.display().to_string(),
            Address::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Address::Tcp { host, port } => format!("{host}:{port}"),
            Address::Ssh {
                user,
                host,
                port,
                path,
            } => {
                let mut out = String::from("ssh://");
                if let Some(user) = user {
                    out.push_str(user);
                    out.push('@');
                }
                if host.contains(':') {
                    out.push('[');
                    out.push_str(host);
                    out.push(']');
                } else {
                    out.push_str(host);
                }
                if let Some(port) = port {
                    out.push(':');
                    out.push_str(&port.to_string());
                }
                out.push_str(&path.display().to_string());
                out
            }
        }
    }
}

impl fmt::Display for Address {
    /// The plain spelling (`/path`, `host:port`, `[v6]:port`, `ssh://...`),
    /// or, when that would parse back as something else, QEMU's prefixed
    /// one: `unix:h:1` for the path `h:1`, `tcp:unix:1` for the host `unix`.
    /// So every address that parsing produces displays as text that parses
    /// back to it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.plain();
        let reparsed = plain.parse::<Address>();
        if reparsed.as_ref() == Ok(self) {
            return f.write_str(&plain);
        }
        match self {
            Address::Unix(_) => write!(f, "unix:{plain}"),
            Address::Tcp { .. } => write!(f, "tcp:{plain}"),
            Address::Ssh { .. } => f.write_str(&plain),
        }
    }
}

/// Parse a port number like Python's `int()`, then check it fits a port.
fn parse_port(text: &str) -> Option<u16> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // Digits, with single underscores allowed between digits.
    let bytes = digits.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_digit() || !bytes[bytes.len() - 1].is_ascii_digit() {
        return None;
    }
    let mut value: u32 = 0;
    let mut prev_underscore = false;
    for &b in bytes {
        match b {
            b'_' if !prev_underscore => prev_underscore = true,
            b'0'..=b'9' => {
                prev_underscore = false;
                value = value.saturating_mul(10).saturating_add(u32::from(b - b'0'));
            }
            _ => return None,
        }
    }
    if negative && value != 0 {
        return None;
    }
    u16::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn unix_paths() {
        for s in ["/tmp/qmp.sock", "qmp.sock", "a:b:c", "::1", "", "[::1]"] {
            assert_eq!(s.parse::<Address>(), Ok(Address::Unix(s.into())), "{s}");
        }
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!("localhost:4444".parse(), Ok(tcp("localhost", 4444)));
        assert_eq!("127.0.0.1:0".parse(), Ok(tcp("127.0.0.1", 0)));
        assert_eq!(":4444".parse(), Ok(tcp("", 4444)));
        assert_eq!("h: 44 ".parse(), Ok(tcp("h", 44)));
        assert_eq!("h:+44".parse(), Ok(tcp("h", 44)));
        assert_eq!("h:-0".parse(), Ok(tcp("h", 0)));
        assert_eq!("h:4_444".parse(), Ok(tcp("h", 4444)));
        assert_eq!("h:00065535".parse(), Ok(tcp("h", 65535)));
        assert_eq!("[::1]:4444".parse(), Ok(tcp("::1", 4444)));
        assert_eq!("[fe80::1%eth0]:1".parse(), Ok(tcp("fe80::1%eth0", 1)));
    }

    #[test]
    fn bad_ports() {
        for s in [
            "h:",
            "h:x",
            "h:65536",
            "h:-1",
            "h:4__4",
            "h:_44",
            "h:44_",
            "h:- 4",
            "h:4 4",
            "h:0x10",
            "h:99999999999999999999999",
            "[::1]:x",
            "[::1]:",
        ] {
            assert_eq!(
                s.parse::<Address>(),
                Err(AddressError::BadPort(s.to_owned())),
                "{s}"
            );
        }
        assert_eq!(
            AddressError::BadPort("h:x".into()).to_string(),
            "Bad port number: h:x"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["/tmp/x.sock", "localhost:4444", "[::1]:4444"] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Address {
        Address::Ssh {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn ssh_addresses() {
        let cases = [
            (
                "ssh://h/run/qmp.sock",
                ssh(None, "h", None, "/run/qmp.sock"),
            ),
            (
                "ssh://root@vm.example:2222/var/lib/q.sock",
                ssh(Some("root"), "vm.example", Some(2222), "/var/lib/q.sock"),
            ),
            ("SSH://H/x", ssh(None, "H", None, "/x")),
            ("ssh://[::1]/q.sock", ssh(None, "::1", None, "/q.sock")),
            (
                "ssh://u@[::1]:22/q.sock",
                ssh(Some("u"), "::1", Some(22), "/q.sock"),
            ),
            (
                "ssh://[fe80::1%eth0]:65535/a b:c%20d",
                ssh(None, "fe80::1%eth0", Some(65535), "/a b:c%20d"),
            ),
            // ssh splits user and host at the last '@' too.
            ("ssh://a@b@h/p", ssh(Some("a@b"), "h", None, "/p")),
            ("ssh://[h]/p", ssh(None, "h", None, "/p")),
            ("ssh://h//p", ssh(None, "h", None, "//p")),
            ("ssh://h/p/", ssh(None, "h", None, "/p/")),
            ("ssh://h:022/p", ssh(None, "h", Some(22), "/p")),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Address>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_ssh_addresses() {
        let cases = [
            ("ssh://", "no host"),
            ("ssh:///p", "no host"),
            ("ssh://u@/p", "no host"),
            ("ssh://:22/p", "no host"),
            ("ssh://[]/p", "no host"),
            ("ssh://h", "no socket path"),
            ("ssh://h/", "no socket path"),
            ("ssh://u@h:22", "no socket path"),
            ("ssh://h/~/q.sock", "must be absolute"),
            ("ssh://h:/p", "bad port number ''"),
            ("ssh://h:x/p", "bad port number 'x'"),
            ("ssh://h:0/p", "bad port number '0'"),
            ("ssh://h:65536/p", "bad port number '65536'"),
            ("ssh://h:+22/p", "bad port number '+22'"),
            ("ssh://h: 22/p", "bad port number ' 22'"),
            ("ssh://h:2_2/p", "bad port number '2_2'"),
            ("ssh://h:0000022/p", "bad port number '0000022'"),
            ("ssh://[::1]:x/p", "bad port number 'x'"),
            ("ssh://::1/p", "IPv6 address must be in brackets"),
            ("ssh://h:1:2/p", "IPv6 address must be in brackets"),
            ("ssh://[::1/p", "without a closing ']'"),
            ("ssh://[::1]x/p", "unexpected text after ']'"),
            ("ssh://@h/p", "empty user name"),
            ("ssh://-oProxyCommand=x/p", "host must not start with '-'"),
            ("ssh://-l@h/p", "user name must not start with '-'"),
            ("ssh://h\tx/p", "host contains a space"),
            ("ssh://a b@h/p", "user name contains a space"),
            ("ssh://h/p\0q", "NUL"),
        ];
        for (text, reason) in cases {
            match text.parse::<Address>() {
                Err(AddressError::BadSsh {
                    address,
                    reason: got,
                }) => {
                    assert_eq!(address, text);
                    assert!(got.contains(reason), "{text}: {got}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            "ssh://h".parse::<Address>().unwrap_err().to_string(),
            "Bad ssh address ssh://h: no socket path \
             (expected ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH)"
        );
    }

    #[test]
    fn qemu_prefixes() {
        assert_eq!(
            "unix:/tmp/q.sock".parse(),
            Ok(Address::Unix("/tmp/q.sock".into()))
        );
        // Whatever follows `unix:` is the path, colons included.
        assert_eq!("unix:h:1".parse(), Ok(Address::Unix("h:1".into())));
        assert_eq!("unix:a:b:c".parse(), Ok(Address::Unix("a:b:c".into())));
        assert_eq!(
            "unix:rel.sock".parse(),
            Ok(Address::Unix("rel.sock".into()))
        );
        assert_eq!(
            "unix:".parse::<Address>(),
            Err(AddressError::EmptyPath("unix:".into()))
        );
        assert_eq!(
            AddressError::EmptyPath("unix:".into()).to_string(),
            "Empty UNIX socket path: unix:"
        );
        assert_eq!("tcp:localhost:4444".parse(), Ok(tcp("localhost", 4444)));
        assert_eq!("tcp::4444".parse(), Ok(tcp("", 4444)));
        assert_eq!("tcp:[::1]:4444".parse(), Ok(tcp("::1", 4444)));
        assert_eq!("tcp:unix:1".parse(), Ok(tcp("unix", 1)));
        assert_eq!(
            "tcp:h:x".parse::<Address>(),
            Err(AddressError::BadPort("tcp:h:x".into()))
        );
        // `tcp:` with anything but HOST:PORT after it keeps the old rules:
        // one colon in all is HOST:PORT, more is a path.
        assert_eq!("tcp:4444".parse(), Ok(tcp("tcp", 4444)));
        assert_eq!("tcp:a:b:c".parse(), Ok(Address::Unix("tcp:a:b:c".into())));
        // Other schemes are not special.
        assert_eq!(
            "ssh:/x".parse::<Address>(),
            Err(AddressError::BadPort("ssh:/x".into()))
        );
        assert_eq!("ssh:a:b".parse(), Ok(Address::Unix("ssh:a:b".into())));
    }

    #[test]
    fn every_address_displays_as_text_that_parses_back() {
        let values = [
            Address::Unix("h:1".into()),
            Address::Unix("unix:x".into()),
            Address::Unix("tcp:h:1".into()),
            Address::Unix("ssh://h/p".into()),
            Address::Unix("[::1]:1".into()),
            Address::Unix("".into()),
            tcp("unix", 1),
            tcp("tcp", 2),
            tcp("", 3),
            tcp("fe80::1%eth0", 4),
            ssh(None, "::1", None, "/q"),
            ssh(Some("a@b"), "h", Some(1), "/x y"),
        ];
        for value in values {
            let text = value.to_string();
            assert_eq!(text.parse::<Address>(), Ok(value), "{text}");
        }
        assert_eq!(Address::Unix("h:1".into()).to_string(), "unix:h:1");
        assert_eq!(tcp("unix", 1).to_string(), "tcp:unix:1");
        for text in [
            "ssh://h/p",
            "ssh://u@h:22/run/q.sock",
            "ssh://[::1]:2222/q",
            "ssh://a@b@h/p",
        ] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_display_round_trips(
            text in "(ssh://|SSH://|unix:|tcp:|\\[)?[a-z0-9:@/\\[\\]%~ _+-]{0,24}"
        ) {
            if let Ok(addr) = text.parse::<Address>() {
                let shown = addr.to_string();
                proptest::prop_assert_eq!(shown.parse::<Address>(), Ok(addr), "{}", shown);
            }
        }

        #[test]
        fn any_text_parses_without_panic(text in "\\PC{0,40}") {
            if let Ok(addr) = text.parse::<Address>() {
                let shown = addr.to_string();
                proptest::prop_assert_eq!(shown.parse::<Address>(), Ok(addr), "{}", shown);
            }
        }
    }
}
