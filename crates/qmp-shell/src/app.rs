//! `qmp-shell`'s main: arguments, connection, and choosing the driver.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use qmp::{Address, Client, ClientOptions, Error as QmpError};

use crate::cli::{self, exit, ColorChoice, Common, ShellArgs};
use crate::doorbell::Doorbell;
use crate::files::{open_private, Existing};
use crate::output::StdOutput;
use crate::render::Style;
use crate::session::{Config, Engine};
use crate::wording::{client_error, python_io_error};
use crate::{interactive, script, signals};

const USAGE: &str = "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server";

/// How long to wait for the greeting when `--timeout` is not given.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// Print `ERROR: MSG` on standard error and return the fatal exit status.
pub fn die(msg: &str) -> i32 {
    // A closed standard error must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "ERROR: {msg}");
    exit::FATAL
}

/// The `-l` log, opened once (mode 0600) and shared by every connection
/// attempt, so that `--retry` does not start it afresh each time.
#[derive(Clone)]
pub struct SharedLog(Arc<Mutex<std::fs::File>>);

impl SharedLog {
    /// Open (create or truncate) the log at `path`.
    pub fn open(path: &Path) -> Result<SharedLog, String> {
        open_private(path, Existing::Truncate)
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

/// Client options for the shell's common flags.
pub fn client_options(common: &Common, negotiate: bool, log: Option<&SharedLog>) -> ClientOptions {
    ClientOptions {
        read_greeting: negotiate,
        negotiate,
        greeting_timeout: Some(common.timeout.unwrap_or(GREETING_TIMEOUT)),
        log: log.map(|l| Box::new(l.clone()) as Box<dyn Write + Send>),
        // -N talks to a guest agent: drop stale bytes left in its channel.
        guest_sync: !negotiate,
        ..ClientOptions::default()
    }
}

/// Whether the session will run on the terminal (line editing, live
/// events) rather than read a pipe or run `-c` commands.
pub fn is_interactive(common: &Common, commands: &[String]) -> bool {
    commands.is_empty() && !common.json && std::io::stdin().is_terminal()
}

/// Run a session on a connected client and return the exit status.
///
/// `guest_agent` (`-N`): the peer is a guest agent, not a QMP monitor.
pub fn run_session(
    client: Arc<Client>,
    common: &Common,
    commands: Vec<String>,
    guest_agent: bool,
) -> i32 {
    let interactive = is_interactive(common, &commands);
    let stdout_tty = std::io::stdout().is_terminal();
    let color = match common.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let style = Style {
        pretty: common.pretty,
        color: color && !common.json,
    };
    let scripted = !commands.is_empty();
    let cfg = Config {
        hmp: common.hmp,
        verbose: common.verbose,
        json: common.json,
        prompts: !interactive && !scripted && !common.json,
        timeout: common.timeout,
        exit_status: common.exit_status || scripted,
        guest_agent,
        live_events: interactive,
        read_only: common.read_only,
        exit_on_error: common.exit_on_error,
        progress_bars: interactive && !common.json && std::io::stderr().is_terminal(),
    };
    let out = Box::new(StdOutput::stdio(style, common.json));
    let engine = Engine::new(client, cfg, out, Arc::new(Doorbell::new()));
    if interactive {
        interactive::run(engine, style)
    } else if scripted {
        script::run(engine, Box::new(commands.into_iter().map(Ok)))
    } else {
        let stdin = std::io::BufReader::new(std::io::stdin());
        script::run(engine, script::reader_lines(stdin))
    }
}

/// Connect to `server`, retrying `retry` more times `delay` apart while the
/// socket is missing or refuses (the server may not be up yet). The error is
/// the message to print after `ERROR: `.
fn connect(
    server: &str,
    address: &Address,
    common: &Common,
    negotiate: bool,
    retry: u32,
    delay: Duration,
) -> Result<Client, String> {
    let log = match &common.logfile {
        Some(path) => Some(SharedLog::open(path)?),
        None => None,
    };
    let mut attempt = 0;
    loop {
        let opts = client_options(common, negotiate, log.as_ref());
        match Client::connect(address, opts) {
            Ok(client) => return Ok(client),
            Err(QmpError::Io(_)) if attempt < retry => {
                attempt += 1;
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if let Some(sig) = signals::terminating() {
                        return Err(format!("interrupted by signal {sig}"));
                    }
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
                }
            }
            Err(QmpError::Io(err)) => {
                return Err(format!(
                    "Couldn't connect to {server}: Failed to establish connection: {}",
                    python_io_error(&err)
                ))
            }
            Err(err) => {
                return Err(format!(
                    "Couldn't connect to {server}: {}",
                    client_error(&err)
                ))
            }
        }
    }
}

/// The `qmp-shell` program; returns the exit status.
pub fn main() -> i32 {
    let args = ShellArgs::parse();
    // An empty QMP_SOCKET (or argument) is no address at all.
    let Some(server) = args.qmp_server.clone().filter(|s| !s.is_empty()) else {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "the following arguments are required: qmp_server (or set QMP_SOCKET)",
        );
    };
    let address: Address = match server.parse() {
        Ok(address) => address,
        Err(err) => cli::usage_error("qmp-shell", USAGE, &err.to_string()),
    };
    signals::install(!is_interactive(&args.common, &args.commands));
    let negotiate = !args.skip_negotiation;
    let client = match connect(
        &server,
        &address,
        &args.common,
        negotiate,
        args.retry,
        args.retry_delay,
    ) {
        Ok(client) => Arc::new(client),
        Err(msg) => {
            return match signals::terminating() {
                Some(sig) => 128 + sig,
                None => die(&msg),
            }
        }
    };
    let code = run_session(
        Arc::clone(&client),
        &args.common,
        args.commands,
        args.skip_negotiation,
    );
    client.close();
    code
}
