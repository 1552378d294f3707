//! `qmp-proxy`: one QMP monitor, many clients.
//!
//! Connects to TARGET (any address `qmp-shell` accepts), then serves any
//! number of QMP clients on `--listen PATH` through [`qmp_client::router`], which
//! does all the work: this is arguments, signals and exit statuses.
//!
//! PATH appears (mode 0600) once TARGET is connected, so a client that
//! finds it is served at once. The proxy runs until a signal (SIGINT,
//! SIGTERM, SIGHUP: the socket is removed and the exit status is 128 + the
//! signal) or until TARGET goes away (clients get what was already queued
//! for them, then are disconnected; one line on standard error; exit 1).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use qmp_client::router::{Router, RouterOptions, DEFAULT_MAX_CLIENTS};
use qmp_client::{Address, Client, Incoming};

use crate::app::die;
use crate::cli::{self, parse_positive_seconds, parse_seconds};
use crate::connect::{client_options, connect_socket, Retry, SharedLog};
use crate::doorbell::Doorbell;
use crate::signals;

const USAGE: &str = "qmp-proxy [-h] [-l LOGFILE] [OPTIONS] --listen PATH TARGET";

/// How long clients get to receive what was queued for them once TARGET
/// went away.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

const EXIT_HELP: &str = "\
Exit status:
  1  could not connect to TARGET, could not listen on PATH, or TARGET went away
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
        qmp-shell /run/vm1/shared.sock",
    override_usage = USAGE,
    after_help = EXIT_HELP
)]
pub struct ProxyArgs {
    /// Serve clients on this UNIX socket (created mode 0600, never over an
    /// existing file but a dead socket; removed on exit)
    #[arg(long, value_name = "PATH")]
    pub listen: PathBuf,

    /// Log every message exchanged with TARGET to LOGFILE (JSON lines, mode 0600)
    #[arg(short = 'l', long = "logfile", value_name = "LOGFILE")]
    pub logfile: Option<PathBuf>,

    /// Wait for TARGET: retry connecting N times
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,

    /// Seconds between connection attempts with --retry
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "1")]
    pub retry_delay: Duration,

    /// How long to wait for TARGET's greeting and negotiation (default 10)
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    pub timeout: Option<Duration>,

    /// Clients served at once; more are turned away
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,

    /// The QMP server to share: a UNIX socket path, a TCP address or an
    /// `ssh://` address, as `qmp-shell` takes.
    #[arg(
        value_name = "TARGET",
        help = "< UNIX socket path | HOST:PORT | [IPv6]:PORT | ssh://[USER@]HOST[:PORT]/PATH >"
    )]
    pub target: String,
}

/// The `qmp-proxy` program; returns the exit status.
pub fn main() -> i32 {
    if let Some(code) = crate::generate::run_if_asked(ProxyArgs::command, &crate::manual::PROXY) {
        return code;
    }
    let args = ProxyArgs::parse();
    let address: Address = match args.target.parse() {
        Ok(address) => address,
        Err(err) => cli::usage_error("qmp-proxy", USAGE, &err.to_string()),
    };
    if args.max_clients == 0 {
        cli::usage_error("qmp-proxy", USAGE, "--max-clients must be at least 1");
    }
    signals::install(true);
    let log = match SharedLog::open_option(args.logfile.as_deref()) {
        Ok(log) => log,
        Err(msg) => return die(&msg),
    };
    let retry = Retry {
        count: args.retry,
        delay: args.retry_delay,
    };
    let (target, timeout) = (args.target.clone(), args.timeout);
    // A signal ends the proxy at once, also while TARGET has not greeted.
    let attempt = signals::unless_terminated(move || {
        connect_socket(&target, &address, retry, || {
            client_options(timeout, true, log.as_ref())
        })
    });
    let client = match attempt {
        Some(Ok(client)) => Arc::new(client),
        Some(Err(msg)) if signals::terminating().is_none() => return die(&msg),
        _ => return 128 + signals::terminating().unwrap_or(libc::SIGINT),
    };
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
    serve(&args.target, &client, router)
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

/// Wait for a signal or for TARGET to go away.
fn serve(target: &str, client: &Arc<Client>, router: Router) -> i32 {
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
                .unwrap_or_else(|| "the connection was closed".to_owned());
            return die(&format!("lost the connection to {target}: {reason}"));
        }
        bell.wait(seen, None);
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
        assert_eq!(a.target, "ssh://h/run/q.sock");
        assert!(ProxyArgs::try_parse_from(["qmp-proxy", "t"]).is_err());
        assert!(ProxyArgs::try_parse_from(["qmp-proxy", "--listen", "p"]).is_err());
        assert!(parse_positive_seconds("0").is_err());
        assert_eq!(crate::cli::exit::FATAL, 1);
    }
}
