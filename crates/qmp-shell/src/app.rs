//! `qmp-shell`'s main: arguments, connection, and choosing the mode.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use qmp::{Address, Client, ClientOptions, Error as QmpError};

use crate::cli::{self, exit, ColorChoice, Common, ShellArgs};
use crate::render::Style;
use crate::repl;
use crate::session::{Config, Engine};

const USAGE: &str = "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server";

/// How long to wait for the greeting when `--timeout` is not given.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// Print `ERROR: MSG` on standard error and return the fatal exit status.
pub fn die(msg: &str) -> i32 {
    eprintln!("ERROR: {msg}");
    exit::FATAL
}

/// Client options for the shell's common flags; `-l` opens the log here.
pub fn client_options(common: &Common, negotiate: bool) -> Result<ClientOptions, String> {
    let log: Option<Box<dyn std::io::Write + Send>> = match &common.logfile {
        Some(path) => match repl::open_private(path) {
            Ok(file) => Some(Box::new(file)),
            Err(err) => {
                return Err(format!(
                    "cannot open log file {}: {}",
                    path.display(),
                    qmp::client::python_io_error(&err)
                ))
            }
        },
        None => None,
    };
    Ok(ClientOptions {
        read_greeting: negotiate,
        negotiate,
        greeting_timeout: Some(common.timeout.unwrap_or(GREETING_TIMEOUT)),
        log,
        // -N talks to a guest agent: drop stale bytes left in its channel.
        guest_sync: !negotiate,
        ..ClientOptions::default()
    })
}

/// Run a session on a connected client and return the exit status.
///
/// `guest_agent` (`-N`): the peer is a guest agent, not a QMP monitor.
pub fn run_session(
    client: Client,
    common: &Common,
    commands: Vec<String>,
    guest_agent: bool,
) -> i32 {
    let client = Arc::new(client);
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal();
    let color = match common.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let scripted = !commands.is_empty();
    let cfg = Config {
        hmp: common.hmp,
        verbose: common.verbose,
        style: Style {
            pretty: common.pretty,
            color: color && !common.json,
        },
        json: common.json,
        quiet: scripted || common.json,
        timeout: common.timeout,
    };
    let engine = Engine::new(client.clone(), cfg);
    let code = if scripted {
        let lines: repl::Lines = Box::new(commands.into_iter().map(Ok));
        repl::run_script(engine, lines, true)
    } else if stdin_tty && !common.json {
        crate::interactive::run(engine, common.exit_status, guest_agent)
    } else {
        let lines = repl::reader_lines(std::io::BufReader::new(std::io::stdin()));
        repl::run_script(engine, lines, common.exit_status)
    };
    client.close();
    code
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
    let mut attempt = 0;
    loop {
        let opts = client_options(common, negotiate)?;
        match Client::connect(address, opts) {
            Ok(client) => return Ok(client),
            Err(QmpError::Io(_)) if attempt < retry => {
                attempt += 1;
                std::thread::sleep(delay);
            }
            Err(QmpError::Io(err)) => {
                return Err(format!(
                    "Couldn't connect to {server}: Failed to establish connection: {}",
                    qmp::client::python_io_error(&err)
                ))
            }
            Err(err) => return Err(format!("Couldn't connect to {server}: {err}")),
        }
    }
}

/// The `qmp-shell` program; returns the exit status.
pub fn main() -> i32 {
    let args = ShellArgs::parse();
    let Some(server) = args.qmp_server.clone() else {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "the following arguments are required: qmp_server (or set QMP_SOCKET)",
        );
    };
    let address: Address = match server.parse() {
        Ok(address) => address,
        Err(_) => cli::usage_error("qmp-shell", USAGE, &format!("Bad port number: {server}")),
    };
    let negotiate = !args.skip_negotiation;
    let client = match connect(
        &server,
        &address,
        &args.common,
        negotiate,
        args.retry,
        args.retry_delay,
    ) {
        Ok(client) => client,
        Err(msg) => return die(&msg),
    };
    run_session(client, &args.common, args.commands, args.skip_negotiation)
}
