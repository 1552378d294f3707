//! How each kind of target becomes a [`Client`]: a QMP socket (a UNIX
//! path, `HOST:PORT`, or `ssh://HOST/PATH`) or a libvirt domain, reached
//! through libvirt's QEMU monitor passthrough. After this, a session is the
//! same whatever the target: the engine only sees the [`Client`].

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qmp_client::transport::libvirt::{self, LibvirtError, LibvirtTransport, OpenOptions};
use qmp_client::{Address, Client, ClientOptions, Error as QmpError, Interrupt};

use crate::cli::Common;
use crate::files::{open_private, Existing};
use crate::signals;
use crate::wording::{client_error, python_io_error};

/// How long to wait for the greeting when `--timeout` is not given.
pub(crate) const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// What the shell attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A QMP server at an address.
    Address {
        /// The address as the user gave it (for messages).
        text: String,
        /// The parsed address.
        address: Address,
    },
    /// A domain managed by libvirt.
    Domain {
        /// Its name, UUID or numeric id.
        domain: String,
        /// The libvirt URI (`None`: `$LIBVIRT_DEFAULT_URI`, else
        /// [`libvirt::DEFAULT_URI`]).
        uri: Option<String>,
    },
}

/// How many more times to try connecting, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub count: u32,
    /// The pause between attempts.
    pub delay: Duration,
}

/// A connected target.
#[derive(Debug)]
pub struct Connected {
    /// The session's client.
    pub client: Client,
    /// A one-line notice for standard error before the session starts
    /// (libvirt's taint of the domain).
    pub notice: Option<String>,
    /// For a libvirt domain, its name (whichever way it was given).
    pub(crate) domain: Option<String>,
}

/// The `-l` log, opened once (mode 0600) and shared by every connection
/// attempt. It is an audit trail: an existing log is appended to, never
/// started afresh (nor by `--retry`).
#[derive(Clone)]
pub(crate) struct SharedLog(Arc<Mutex<std::fs::File>>);

impl SharedLog {
    /// Open the `-l` log if one was asked for.
    pub(crate) fn open_option(path: Option<&Path>) -> Result<Option<SharedLog>, String> {
        path.map(SharedLog::open).transpose()
    }

    /// Open the log at `path`: created, or appended to.
    pub(crate) fn open(path: &Path) -> Result<SharedLog, String> {
        open_private(path, Existing::Append)
            .map(|f| SharedLog(Arc::new(Mutex::new(f))))
            .map_err(|err| {
                format!(
                    "cannot open log file {}: {}",
                    path.display(),
                    python_io_error(&err)
                )
            })
    }
}

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Client options: `timeout` is `--timeout` (it bounds the greeting too);
/// `negotiate` is false for a guest agent (`-N`); `log` is `-l`.
pub(crate) fn client_options(
    timeout: Option<Duration>,
    negotiate: bool,
    log: Option<&SharedLog>,
) -> ClientOptions {
    ClientOptions {
        read_greeting: negotiate,
        negotiate,
        greeting_timeout: Some(timeout.unwrap_or(GREETING_TIMEOUT)),
        log: log.map(|l| Box::new(l.clone()) as Box<dyn Write + Send>),
        // -N talks to a guest agent: drop stale bytes left in its channel.
        guest_sync: !negotiate,
        ..ClientOptions::default()
    }
}

/// One failed attempt: try again (while retries are left), or give up.
enum Failure {
    /// The target may not be up yet; the message if no retry is left.
    Retryable(String),
    /// Retrying cannot help.
    Fatal(String),
}

/// Connect to `target`. `guest_agent` (`-N`): the peer is a guest agent,
/// not a QMP monitor. `banner`: the session prints a banner with QEMU's
/// version (a socket's greeting has it; libvirt is asked for it). While the target is not there yet (a socket missing
/// or refusing, a domain not running or not defined yet, libvirtd not
/// answering), try again as `retry` says. The error is the message to print
/// after `ERROR: `.
pub fn connect(
    target: &Target,
    common: &Common,
    guest_agent: bool,
    banner: bool,
    retry: Retry,
) -> Result<Connected, String> {
    connect_with(target, common, guest_agent, banner, retry, None)
}

/// How [`connect_inline`] starts a session.
pub struct InlineStart {
    /// A signal's self-pipe: it ends the client's waits, the start
    /// included.
    pub interrupt: Interrupt,
    /// Enable out-of-band execution when the server offers it.
    pub oob: bool,
    /// A connection made already ([`connect_early`]), for the first
    /// attempt.
    pub early: Option<UnixStream>,
}

/// [`connect`] to a QMP monitor, the client inline
/// ([`ClientOptions::inline`]): it starts no thread, and does its I/O on
/// the thread that waits for it.
pub fn connect_inline(
    target: &Target,
    common: &Common,
    banner: bool,
    retry: Retry,
    start: InlineStart,
) -> Result<Connected, String> {
    connect_with(target, common, false, banner, retry, Some(start))
}

/// Connect to a UNIX socket target at once, without waiting: the server
/// accepts and greets while the caller sets up the rest of the session
/// (signal handlers, input). `None` when that cannot be done without
/// waiting (the server not taking connections yet, or not at all) or the
/// target is of another kind: the attempts of [`connect_inline`] then
/// connect, wait and retry as ever, and say what went wrong.
pub fn connect_early(target: &Target) -> Option<UnixStream> {
    match target {
        Target::Address {
            address: Address::Unix(path),
            ..
        } => qmp_client::transport::stream::connect_unix(path, Some(Duration::from_micros(1)))
            .ok()
            .flatten(),
        _ => None,
    }
}

fn connect_with(
    target: &Target,
    common: &Common,
    guest_agent: bool,
    banner: bool,
    retry: Retry,
    inline: Option<InlineStart>,
) -> Result<Connected, String> {
    let log = match &common.logfile {
        Some(path) => Some(SharedLog::open(path)?),
        None => None,
    };
    let negotiate = !guest_agent;
    let (interrupt, oob, mut early) = match inline {
        Some(start) => (Some(start.interrupt), start.oob, start.early),
        None => (None, true, None),
    };
    with_retry(retry, || {
        let opts = ClientOptions {
            oob,
            inline: interrupt.is_some(),
            interrupt: interrupt.clone(),
            // The one session of this process: its facts are read while
            // the negotiation's round trip is under way.
            on_greeting: interrupt
                .is_some()
                .then(|| Box::new(crate::store::prefetch) as qmp_client::GreetingHook),
            // Without out-of-band execution, commands go without ids.
            in_order: true,
            ..client_options(common.timeout, negotiate, log.as_ref())
        };
        match target {
            Target::Address { text, address } => match early.take() {
                Some(stream) => connected(text, Client::from_unix_stream(stream, opts)),
                None => connected(text, Client::connect(address, opts)),
            },
            Target::Domain { domain, uri } => {
                connect_domain(domain, uri.as_deref(), guest_agent, banner, opts)
            }
        }
    })
}

/// Call `attempt` until it succeeds, fails for good, or `retry` is spent.
fn with_retry<T>(
    retry: Retry,
    mut attempt: impl FnMut() -> Result<T, Failure>,
) -> Result<T, String> {
    let mut done = 0;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(Failure::Retryable(_)) if done < retry.count => {
                done += 1;
                let until = Instant::now() + retry.delay;
                while Instant::now() < until {
                    if let Some(sig) = signals::terminating() {
                        return Err(format!("interrupted by signal {sig}"));
                    }
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
                }
            }
            Err(Failure::Retryable(msg) | Failure::Fatal(msg)) => return Err(msg),
        }
    }
}

/// The outcome of an attempt to reach the QMP socket `text` (UNIX, TCP,
/// or through ssh).
fn connected(text: &str, attempt: Result<Client, QmpError>) -> Result<Connected, Failure> {
    match attempt {
        Ok(client) => Ok(Connected {
            client,
            notice: None,
            domain: None,
        }),
        Err(QmpError::Io(err)) => Err(Failure::Retryable(format!(
            "Couldn't connect to {text}: Failed to establish connection: {}",
            python_io_error(&err)
        ))),
        Err(err) => Err(Failure::Fatal(format!(
            "Couldn't connect to {text}: {}",
            client_error(&err)
        ))),
    }
}

/// A libvirt domain: its monitor, or with `guest_agent` its guest agent.
/// `banner`: the version is wanted (one more call to QEMU).
fn connect_domain(
    domain: &str,
    uri: Option<&str>,
    guest_agent: bool,
    banner: bool,
    opts: ClientOptions,
) -> Result<Connected, Failure> {
    let open = OpenOptions {
        agent: guest_agent,
        skip_greeting: !banner,
        greeting_timeout: opts.greeting_timeout,
    };
    let transport = LibvirtTransport::open_with(uri, domain, &open).map_err(|e| match e {
        // Not there yet: a domain being defined or started, an agent that
        // has not connected, a libvirtd starting.
        LibvirtError::NoSuchDomain { .. }
        | LibvirtError::NotRunning { .. }
        | LibvirtError::NoAgent { .. }
        | LibvirtError::CannotConnect { .. } => Failure::Retryable(e.to_string()),
        _ => Failure::Fatal(e.to_string()),
    })?;
    let notice = transport.taint_notice();
    let name = transport.domain_name().to_owned();
    match Client::open(Box::new(transport), opts) {
        Ok(client) => Ok(Connected {
            client,
            notice: Some(notice),
            domain: Some(name),
        }),
        Err(err) => Err(Failure::Fatal(format!(
            "domain {name}: {}",
            client_error(&err)
        ))),
    }
}

/// The target for the address `text` as the user wrote it; the error is
/// the parser's message.
pub fn address_target(text: &str) -> Result<Target, String> {
    match text.parse::<Address>() {
        Ok(address) => Ok(Target::Address {
            text: text.to_owned(),
            address,
        }),
        Err(err) => Err(err.to_string()),
    }
}

/// The libvirt URIs of the `--connect` options: `[None]` (the default URI)
/// when there are none.
pub fn uris(connect: &[String]) -> Vec<Option<String>> {
    if connect.is_empty() {
        vec![None]
    } else {
        connect.iter().cloned().map(Some).collect()
    }
}

/// How domain `name` at `uri` is labelled among the targets of `uris`
/// URIs: its name, or `URI/NAME` when there are several URIs.
pub fn domain_label(uri: Option<&str>, name: &str, uris: usize) -> String {
    match uri {
        Some(uri) if uris > 1 => format!("{uri}/{name}"),
        _ => name.to_owned(),
    }
}

/// The running domains of `uri` (for `--all-domains`): each one's name
/// (to tag its output) and UUID (to open it by: a name can be ambiguous,
/// as a domain may be called like another's id).
pub fn running_domains(uri: Option<&str>) -> Result<Vec<(String, String)>, String> {
    Ok(libvirt::list_domains(uri)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| (d.name, d.uuid))
        .collect())
}

/// The running domains at `uri`, for `--list`: names one per line, or with
/// `details` `ID UUID NAME` (the name last, as it may contain spaces).
pub(crate) fn list_domains(uri: Option<&str>, details: bool) -> Result<String, String> {
    let domains = libvirt::list_domains(uri).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for d in domains {
        if details {
            text.push_str(&format!("{} {} {}\n", d.id, d.uuid, d.name));
        } else {
            text.push_str(&d.name);
            text.push('\n');
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_stops_at_a_fatal_error_and_after_the_count() {
        let retry = Retry {
            count: 2,
            delay: Duration::ZERO,
        };
        let mut calls = 0;
        let r: Result<(), String> = with_retry(retry, || {
            calls += 1;
            Err(Failure::Retryable(format!("try {calls}")))
        });
        assert_eq!(r, Err("try 3".to_owned()));
        let mut calls = 0;
        let r: Result<(), String> = with_retry(retry, || {
            calls += 1;
            Err(Failure::Fatal("no".to_owned()))
        });
        assert_eq!((r, calls), (Err("no".to_owned()), 1));
        let mut calls = 0;
        let r = with_retry(retry, || {
            calls += 1;
            if calls < 2 {
                Err(Failure::Retryable(String::new()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(2));
    }
}
