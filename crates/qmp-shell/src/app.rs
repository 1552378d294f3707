//! `qmp-shell`'s main: arguments, connection, and choosing the driver.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use qmp::{Address, Client};

use crate::cli::{self, exit, ColorChoice, Common, ShellArgs};
use crate::connect::{Retry, Target};
use crate::doorbell::Doorbell;
use crate::output::StdOutput;
use crate::render::Style;
use crate::session::{Config, Engine};
use crate::{interactive, script, signals};

pub use crate::connect::{client_options, SharedLog, GREETING_TIMEOUT};

const USAGE: &str = "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server";

/// Print `ERROR: MSG` on standard error and return the fatal exit status.
pub fn die(msg: &str) -> i32 {
    // A closed standard error must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "ERROR: {msg}");
    exit::FATAL
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

/// What to attach to, from the arguments; a usage error (exit 2) when
/// there is nothing, or an address that does not parse.
fn target(args: &ShellArgs) -> Target {
    if let Some(domain) = &args.domain {
        return Target::Domain {
            domain: domain.clone(),
            uri: args.connect.clone(),
        };
    }
    // An empty QMP_SOCKET (or argument) is no address at all.
    let Some(text) = args.qmp_server.clone().filter(|s| !s.is_empty()) else {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "the following arguments are required: qmp_server \
             (or set QMP_SOCKET, or give --domain)",
        );
    };
    match text.parse::<Address>() {
        Ok(address) => Target::Address { text, address },
        Err(err) => cli::usage_error("qmp-shell", USAGE, &err.to_string()),
    }
}

/// `--list`: print the running domains; the exit status.
fn list(args: &ShellArgs) -> i32 {
    match crate::connect::list_domains(args.connect.as_deref(), args.common.verbose) {
        Ok(text) => {
            if text.is_empty() && std::io::stdout().is_terminal() {
                let _ = writeln!(std::io::stderr(), "(no running domains)");
            }
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => exit::OK,
                Err(err) => die(&format!("cannot write the list: {err}")),
            }
        }
        Err(msg) => die(&msg),
    }
}

/// The `qmp-shell` program; returns the exit status.
pub fn main() -> i32 {
    let args = ShellArgs::parse_args();
    if args.list {
        return list(&args);
    }
    let target = target(&args);
    signals::install(!is_interactive(&args.common, &args.commands));
    let retry = Retry {
        count: args.retry,
        delay: args.retry_delay,
    };
    // A banner, with QEMU's version, starts a session on a pipe or a
    // terminal; -c and --json print none.
    let banner = args.commands.is_empty() && !args.common.json;
    let connected = match crate::connect::connect(
        &target,
        &args.common,
        args.skip_negotiation,
        banner,
        retry,
    ) {
        Ok(connected) => connected,
        Err(msg) => {
            return match signals::terminating() {
                Some(sig) => 128 + sig,
                None => die(&msg),
            }
        }
    };
    if let Some(notice) = &connected.notice {
        let _ = writeln!(std::io::stderr(), "{notice}");
    }
    let client = Arc::new(connected.client);
    let code = run_session(
        Arc::clone(&client),
        &args.common,
        args.commands,
        args.skip_negotiation,
    );
    if matches!(target, Target::Address { .. }) {
        client.close();
    }
    // The process ends now: the client's threads need no joining, and one
    // may be inside a libvirt call that QEMU never answers (what --timeout
    // gave up on), which a join would wait for. Nor does a libvirt session
    // need closing: libvirtd drops a client's event registrations when its
    // connection goes, which spares four round trips to libvirtd.
    std::mem::forget(client);
    code
}
