//! `qmp-proxy`: one QMP monitor, many clients.
//!
//! Connects to TARGET (any address `qmp-shell` accepts) or, with
//! `--domain`, to a libvirt domain's monitor through libvirt (the same
//! [`connect`] code, and so the same domain lookup, as
//! `qmp-shell --domain`), then serves any number of QMP clients on
//! `--listen PATH` through [`qmp_client::router`], which does all the work:
//! this is arguments, signals and exit statuses.
//!
//! PATH appears (mode 0600) once TARGET is connected, so a client that
//! finds it is served at once. The proxy runs until a signal (SIGINT,
//! SIGTERM, SIGHUP: the socket is removed and the exit status is 128 + the
//! signal) or until TARGET goes away, or the domain stops (clients get what
//! was already queued for them, then are disconnected; one line on
//! standard error; exit 1).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use qmp_client::router::{Router, RouterOptions, DEFAULT_MAX_CLIENTS};
use qmp_client::transport::libvirt;
use qmp_client::{Address, Client, Incoming};

use crate::app::die;
use crate::cli::{self, parse_positive_seconds, parse_seconds, Common};
use crate::connect::{self, Retry, Target};
use crate::doorbell::Doorbell;
use crate::signals;

const USAGE: &str = "qmp-proxy [-h] [-l LOGFILE] [OPTIONS] --listen PATH TARGET\n       \
                     qmp-proxy [-h] [-l LOGFILE] [OPTIONS] --listen PATH --domain DOMAIN [--connect URI]";

/// How long clients get to receive what was queued for them once TARGET
/// went away.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

const EXIT_HELP: &str = "\
Exit status:
  1  could not connect to TARGET, could not listen on PATH, or TARGET went
     away (with --domain: the domain stopped, or libvirt went away)
  2  command-line usage error
  128+N  ended by signal N (SIGINT 130, SIGHUP 129, SIGTERM 143)
The socket PATH is removed in every case.

Security: whoever can open PATH controls the VM, exactly as with QEMU's
own socket. PATH is created with mode 0600 (owner only).";

/// `qmp-proxy`: share one QMP monitor between many clients.
#[derive(Parser, Debug)]
#[command(
    name = "qmp-proxy",
    version = cli::VERSION,
    about = "Share one QEMU QMP monitor between many clients.",
    long_about = "Share one QEMU QMP monitor between many clients.\n\n\
        QEMU serves one client per QMP monitor. qmp-proxy holds that one connection to \
        TARGET and serves any number of clients on PATH: each gets QEMU's greeting, \
        negotiates for itself, and gets the replies to its own commands (with its own \
        ids) and every event. qmp-shell, the Python qmp-shell, libvirt-less scripts \
        and monitoring tools can attach at once.\n\n\
        Example:  qmp-proxy --listen /run/vm1/shared.sock /run/vm1/qmp.sock &\n          \
        qmp-shell /run/vm1/shared.sock\n\n\
        A VM that libvirt manages (libvirt holds its only monitor):\n          \
        qmp-proxy --listen /run/vm1/shared.sock --domain vm1 [--connect URI]\n\
        Commands and events go through libvirt's QEMU monitor passthrough, file \
        descriptors too (libvirt 7.2 or later; not over a remote URI); libvirt then \
        marks the domain as tainted (a note says so once on standard error). The \
        proxy ends when the domain stops.",
    override_usage = USAGE,
    after_help = EXIT_HELP
)]
pub(crate) struct ProxyArgs {
    /// Serve clients on this UNIX socket (created mode 0600, never over an
    /// existing file but a dead socket; removed on exit)
    #[arg(long, value_name = "PATH")]
    pub(crate) listen: PathBuf,

    /// Log every message exchanged with TARGET to LOGFILE (JSON lines, appended; mode 0600)
    #[arg(short = 'l', long = "logfile", value_name = "LOGFILE")]
    pub(crate) logfile: Option<PathBuf>,

    /// Wait for TARGET: retry connecting N times
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) retry: u32,

    /// Seconds between connection attempts with --retry
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = parse_seconds,
        default_value = "1",
        requires = "retry"
    )]
    pub(crate) retry_delay: Duration,

    /// How long to wait for TARGET's greeting and negotiation (default 10;
    /// over ssh://, ssh's set-up included)
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    pub(crate) timeout: Option<Duration>,

    /// Clients served at once; more are turned away (each gets a QMP error
    /// naming the limit instead of the greeting, and a warning goes to
    /// standard error)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub(crate) max_clients: usize,

    /// The QMP server to share: a UNIX socket path, a TCP address or an
    /// `ssh://` address, as `qmp-shell` takes.
    #[arg(
        value_name = "TARGET",
        required_unless_present = "domain",
        conflicts_with = "domain",
        help = "< UNIX socket path | HOST:PORT | [IPv6]:PORT | ssh://[USER@]HOST[:PORT]/PATH >"
    )]
    pub(crate) target: Option<String>,

    /// Share the QEMU monitor of libvirt domain DOMAIN (name, UUID or id)
    /// instead of a socket
    #[arg(
        long,
        value_name = "DOMAIN",
        value_parser = cli::parse_domain,
        help_heading = "libvirt"
    )]
    pub(crate) domain: Option<String>,

    /// libvirt URI for --domain (default: $LIBVIRT_DEFAULT_URI, else
    /// qemu:///system); remote ones too: qemu+ssh://USER@HOST/system
    #[arg(
        long = "connect",
        value_name = "URI",
        value_parser = cli::parse_uri,
        requires = "domain",
        conflicts_with = "target",
        help_heading = "libvirt"
    )]
    pub(crate) connect: Option<String>,
}

/// The `qmp-proxy` program; returns the exit status.
pub fn main() -> i32 {
    if let Some(code) = crate::generate::run_if_asked(ProxyArgs::command, &crate::manual::PROXY) {
        return code;
    }
    let args =
        ProxyArgs::try_parse().unwrap_or_else(|e| cli::exit_on_clap_error("qmp-proxy", USAGE, &e));
    let target = match (&args.domain, &args.target) {
        (Some(domain), _) => Target::Domain {
            domain: domain.clone(),
            uri: args.connect.clone(),
        },
        (None, Some(text)) => match text.parse::<Address>() {
            Ok(address) => Target::Address {
                text: text.clone(),
                address,
            },
            Err(err) => cli::usage_error("qmp-proxy", USAGE, &err.to_string()),
        },
        // clap requires one of them.
        (None, None) => cli::usage_error("qmp-proxy", USAGE, "TARGET or --domain is required"),
    };
    if args.max_clients == 0 {
        cli::usage_error("qmp-proxy", USAGE, "--max-clients must be at least 1");
    }
    signals::install(true);
    let retry = Retry {
        count: args.retry,
        delay: args.retry_delay,
    };
    let common = Common {
        logfile: args.logfile.clone(),
        timeout: args.timeout,
        ..Common::default()
    };
    // A signal ends the proxy at once, also while TARGET has not greeted.
    let attempt = {
        let target = target.clone();
        signals::unless_terminated(move || connect::connect(&target, &common, false, true, retry))
    };
    let connected = match attempt {
        Some(Ok(connected)) => connected,
        Some(Err(msg)) if signals::terminating().is_none() => return die(&msg),
        _ => return 128 + signals::terminating().unwrap_or(libc::SIGINT),
    };
    // libvirt's taint of the domain, once.
    if let Some(notice) = &connected.notice {
        let _ = writeln!(std::io::stderr(), "{notice}");
    }
    let client = Arc::new(connected.client);
    let opts = RouterOptions {
        max_clients: args.max_clients,
        ..RouterOptions::default()
    };
    let router = match share(&client, &args.listen, opts) {
        Ok(router) => router,
        Err(msg) => {
            client.close();
            return die(&msg);
        }
    };
    // A domain is named by its name from here on, however it was given.
    let (label, domain) = match (target, connected.domain) {
        (Target::Domain { uri, .. }, Some(name)) => (format!("domain {name}"), Some((uri, name))),
        (Target::Domain { domain, .. }, None) => (format!("domain {domain}"), None),
        (Target::Address { text, .. }, _) => (text, None),
    };
    // The client is told too, instead of the greeting.
    router.on_turned_away(|why| {
        let _ = writeln!(std::io::stderr(), "warning: {why} (--max-clients)");
    });
    serve(&label, domain, &client, router)
}

/// Serve `client` to other QMP clients on `path` (`qmp-proxy`,
/// `qmp-shell-wrap --serve`); the socket is removed on every way out, the
/// emergency exit of a second signal included. The error is the message
/// to print after `ERROR: `.
pub(crate) fn share(
    client: &Arc<Client>,
    path: &Path,
    opts: RouterOptions,
) -> Result<Router, String> {
    let router = Router::serve(Arc::clone(client), path, opts)
        .map_err(|err| format!("cannot listen on {}: {err}", path.display()))?;
    if let Some(remove) = router.socket_remover() {
        signals::on_emergency(remove);
    }
    Ok(router)
}

/// Wait for a signal or for TARGET (written `label` in messages) to go
/// away; `domain`: the URI and name of a libvirt domain.
fn serve(
    label: &str,
    domain: Option<(Option<String>, String)>,
    client: &Arc<Client>,
    router: Router,
) -> i32 {
    let bell = Arc::new(Doorbell::new());
    signals::watch(&bell);
    // Events (queued by the client, which nobody else reads here) and the
    // end of the connection ring the bell.
    let tap_bell = Arc::clone(&bell);
    let _tap = client.tap_events(move |_| tap_bell.ring());
    loop {
        let seen = bell.seen();
        for item in client.drain_incoming() {
            if let Incoming::Warning(w) = item {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
        }
        if let Some(sig) = signals::terminating() {
            router.stop();
            client.close();
            return 128 + sig;
        }
        if !client.is_connected() {
            router.wait_idle(FLUSH_GRACE);
            router.stop();
            let reason = client
                .end_reason()
                .unwrap_or_else(|| why_it_ended(domain.as_ref()));
            return die(&format!("lost the connection to {label}: {reason}"));
        }
        bell.wait(seen, None);
    }
}

/// Why the connection ended, when its transport did not say: for a
/// libvirt domain (its URI and name), libvirt tells whether it still runs.
fn why_it_ended(domain: Option<&(Option<String>, String)>) -> String {
    let Some((uri, name)) = domain else {
        return "the connection was closed".to_owned();
    };
    match libvirt::list_domains(uri.as_deref()) {
        Ok(running) if running.iter().any(|d| &d.name == name) => {
            "libvirt ended the session (the domain still runs)".to_owned()
        }
        Ok(_) => "the domain stopped".to_owned(),
        Err(err) => format!("the connection to libvirt was lost: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments() {
        ProxyArgs::command().debug_assert();
        let a = ProxyArgs::try_parse_from([
            "qmp-proxy",
            "--listen",
            "/tmp/p.sock",
            "--retry",
            "3",
            "--retry-delay",
            "0.5",
            "ssh://h/run/q.sock",
        ])
        .unwrap();
        assert_eq!(a.listen, PathBuf::from("/tmp/p.sock"));
        assert_eq!((a.retry, a.retry_delay), (3, Duration::from_millis(500)));
        assert_eq!(a.target.as_deref(), Some("ssh://h/run/q.sock"));
        assert!(ProxyArgs::try_parse_from(["qmp-proxy", "t"]).is_err());
        assert!(ProxyArgs::try_parse_from(["qmp-proxy", "--listen", "p"]).is_err());
        let a = ProxyArgs::try_parse_from([
            "qmp-proxy",
            "--listen",
            "p",
            "--domain",
            "vm1",
            "--connect",
            "qemu:///session",
        ])
        .unwrap();
        assert_eq!(a.domain.as_deref(), Some("vm1"));
        assert_eq!(a.connect.as_deref(), Some("qemu:///session"));
        for bad in [
            &["qmp-proxy", "--listen", "p", "--domain", "vm1", "/tmp/s"][..],
            &[
                "qmp-proxy",
                "--listen",
                "p",
                "--connect",
                "qemu:///system",
                "/tmp/s",
            ],
            &["qmp-proxy", "--listen", "p", "--domain", ""],
        ] {
            let e = ProxyArgs::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), cli::exit::USAGE, "{bad:?}: {e}");
        }
        assert!(parse_positive_seconds("0").is_err());
        assert_eq!(crate::cli::exit::FATAL, 1);
    }
}
