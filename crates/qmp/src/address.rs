//! Server addresses as given on the command line: a UNIX socket path or `HOST:PORT`.

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
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The part after the colon is not an integer in `0..=65535`.
    /// Holds the whole address text.
    #[error("Bad port number: {0}")]
    BadPort(String),
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parse like the reference `qmp-shell`:
    ///
    /// * `[V6ADDR]:PORT` is TCP to `V6ADDR`;
    /// * text with exactly one `:` is `HOST:PORT`, the port parsed like Python's
    ///   `int()` (surrounding whitespace, a sign and `_` between digits allowed);
    /// * anything else (no colon, or two or more) is a UNIX socket path.
    fn from_str(s: &str) -> Result<Address, AddressError> {
        let bad = || AddressError::BadPort(s.to_owned());
        if let Some(rest) = s.strip_prefix('[') {
            if let Some((host, port)) = rest.split_once("]:") {
                let port = parse_port(port).ok_or_else(bad)?;
                return Ok(Address::Tcp {
                    host: host.to_owned(),
                    port,
                });
            }
        }
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(host), Some(port), None) => {
                let port = parse_port(port).ok_or_else(bad)?;
                Ok(Address::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            _ => Ok(Address::Unix(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
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
}
