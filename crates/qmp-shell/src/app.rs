//! `qmp-shell`'s main: arguments, connection, and choosing the driver.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use clap::CommandFactory;

use qmp_client::{Address, Client};

use crate::cli::{self, exit, ColorChoice, Common, ShellArgs};
use crate::connect::{self, Retry, Target};
use crate::doorbell::Doorbell;
use crate::output::{self, StdOutput};
use crate::render::Style;
use crate::session::{Config, Engine};
use crate::{fanout, interactive, script, signals};

const USAGE: &str = cli::SHELL_USAGE;

/// Print `ERROR: MSG` on standard error (with `--json`, an error object)
/// and return the fatal exit status.
pub(crate) fn die(msg: &str) -> i32 {
    die_as("GenericError", msg)
}

/// [`die`], the error object's class being `class` (`ConnectError`: the
/// server could not be reached).
pub(crate) fn die_as(class: &str, msg: &str) -> i32 {
    output::eprint_error(class, msg);
    exit::FATAL
}

/// Where a session takes its lines from, looked at once, before
/// connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `-c` commands.
    Commands,
    /// The terminal: line editing, live events.
    Terminal,
    /// Standard input, a regular file (`< FILE`): its reads never wait.
    File,
    /// Standard input, anything else (a pipe, say).
    Pipe,
}

impl Source {
    /// The source of a session given `commands` (`-c`) and `common`.
    pub(crate) fn of(common: &Common, commands: &[String]) -> Source {
        if !commands.is_empty() {
            Source::Commands
        } else if !common.json && std::io::stdin().is_terminal() {
            Source::Terminal
        } else if script::stdin_is_regular_file() {
            Source::File
        } else {
            Source::Pipe
        }
    }

    /// Whether the session will run on the terminal (line editing, live
    /// events) rather than read a pipe or run `-c` commands.
    pub(crate) fn interactive(self) -> bool {
        self == Source::Terminal
    }
}

/// Run a session on a connected client and return the exit status.
///
/// `guest_agent` (`-N`): the peer is a guest agent, not a QMP monitor.
/// `qemu_command`: the command line of the QEMU the wrap started (for the
/// header of `/record` files).
pub(crate) fn run_session(
    client: Arc<Client>,
    common: &Common,
    commands: Vec<String>,
    guest_agent: bool,
    qemu_command: Option<Vec<String>>,
    ahead: Option<script::Prefetched>,
    io: SessionIo,
) -> i32 {
    let SessionIo {
        style,
        out,
        doorbell,
        source,
    } = io;
    let interactive = source.interactive();
    let scripted = !commands.is_empty();
    // The one session of qmp-shell (qmp-shell-wrap goes on to stop its
    // QEMU).
    let ends_process = qemu_command.is_none();
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
        qemu_command,
        fan_out: false,
        ends_process,
    };
    if client.is_inline() {
        // The engine's waits do the client's I/O.
        let client = Arc::downgrade(&client);
        let pump = move |deadline, watch: &[std::os::fd::RawFd]| {
            client.upgrade().is_some_and(|c| c.drive(deadline, watch))
        };
        if let Err(err) = doorbell.drive_with(Box::new(pump)) {
            return cannot_start(&err);
        }
    }
    let engine = Engine::new(client, cfg, out, doorbell);
    if interactive {
        interactive::run(engine, style)
    } else if scripted {
        script::run_inline(engine, Box::new(commands.into_iter().map(Ok)))
    } else {
        let file = source == Source::File;
        if file && ahead.is_none() {
            let stdin = script::reader_lines(std::io::BufReader::new(std::io::stdin()));
            return script::run_inline(engine, stdin);
        }
        // A pipe whose writer is done is read whole here, with no thread.
        let first = ahead.unwrap_or_else(script::prefetch_stdin);
        let read = std::io::Cursor::new(first.bytes);
        if first.whole {
            return script::run_inline(engine, script::reader_lines(read));
        }
        let rest = std::io::Read::chain(read, std::io::stdin());
        let lines = script::reader_lines(std::io::BufReader::new(rest));
        if file {
            script::run_inline(engine, lines)
        } else {
            script::run(engine, lines)
        }
    }
}

/// One target or many: what to attach to, from the arguments, each with
/// the label its output gets when there are several. A usage error (exit
/// 2) when there is nothing, or an address that does not parse.
fn targets(args: &ShellArgs) -> Vec<(String, Target)> {
    let t = &args.targets;
    if !t.domain.is_empty() || t.all_domains {
        let uris = connect::uris(&t.connect);
        let mut targets = Vec::new();
        for uri in &uris {
            // Each domain's name, and how to open it: every running one by
            // its UUID, or as the user named it.
            let domains: Vec<(String, String)> = if t.all_domains {
                match connect::running_domains(uri.as_deref()) {
                    Ok(domains) => domains,
                    Err(msg) => std::process::exit(die(&msg)),
                }
            } else {
                t.domain.iter().map(|d| (d.clone(), d.clone())).collect()
            };
            for (name, domain) in domains {
                targets.push((
                    connect::domain_label(uri.as_deref(), &name, uris.len()),
                    Target::Domain {
                        domain,
                        uri: uri.clone(),
                    },
                ));
            }
        }
        return targets;
    }
    if t.qmp_servers.is_empty() {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "the following arguments are required: qmp_server \
             (or set QMP_SOCKET, or give --domain)",
        );
    }
    t.qmp_servers
        .iter()
        .map(|text| match connect::address_target(text) {
            Ok(target) => (text.clone(), target),
            Err(err) => cli::usage_error("qmp-shell", USAGE, &err),
        })
        .collect()
}

/// `--list`: print the running domains; the exit status.
fn list(args: &ShellArgs) -> i32 {
    let uris = connect::uris(&args.targets.connect);
    let mut text = String::new();
    for uri in &uris {
        match connect::list_domains(uri.as_deref(), args.common.verbose) {
            // With several hosts, each line says which.
            Ok(list) if uris.len() > 1 => {
                for line in list.lines() {
                    text.push_str(&format!("{} {line}\n", uri.as_deref().unwrap_or_default()));
                }
            }
            Ok(list) => text.push_str(&list),
            Err(msg) => return die(&msg),
        }
    }
    if text.is_empty() && std::io::stdout().is_terminal() {
        output::eprint("(no running domains)\n");
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(err) => die(&format!("cannot write the list: {err}")),
    }
}

/// What a session needs besides its client (its output and its doorbell),
/// made before connecting where it can be: QEMU accepts and greets
/// meanwhile.
pub(crate) struct SessionIo {
    style: Style,
    out: Box<StdOutput>,
    doorbell: Arc<Doorbell>,
    source: Source,
}

/// The session could not be set up (`err`, from the OS): say so, exit 1.
pub(crate) fn cannot_start(err: &std::io::Error) -> i32 {
    die_as("OSError", &format!("cannot start the session: {err}"))
}

impl SessionIo {
    /// The output `common` asks for, and a doorbell; `inline`: one that an
    /// inline client will drive ([`Doorbell::drivable`]). The session
    /// reads `source`.
    pub(crate) fn new(common: &Common, source: Source, inline: bool) -> std::io::Result<SessionIo> {
        let style = style(common);
        let doorbell = if inline {
            Doorbell::drivable()?
        } else {
            Doorbell::new()
        };
        Ok(SessionIo {
            style,
            out: Box::new(StdOutput::stdio(style, common.json)),
            doorbell: Arc::new(doorbell),
            source,
        })
    }
}

/// The style of JSON output for the common flags.
fn style(common: &Common) -> Style {
    let color = match common.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    Style {
        pretty: common.pretty,
        color: color && !common.json,
    }
}

/// Several targets: the same commands on each, concurrently.
fn fan_out(args: ShellArgs, targets: Vec<(String, Target)>) -> i32 {
    if args.common.logfile.is_some() {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "-l logs one connection; with several targets, run one shell per target",
        );
    }
    let lines: Vec<Result<String, String>> = if !args.commands.is_empty() {
        args.commands.iter().cloned().map(Ok).collect()
    } else if std::io::stdin().is_terminal() {
        cli::usage_error(
            "qmp-shell",
            USAGE,
            "with several targets, give the commands with -c or on standard input \
             (there is no interactive session on several targets)",
        );
    } else {
        script::reader_lines(std::io::BufReader::new(std::io::stdin())).collect()
    };
    let cfg = Config {
        hmp: args.common.hmp,
        verbose: args.common.verbose,
        json: args.common.json,
        prompts: false,
        timeout: args.common.timeout,
        exit_status: true,
        guest_agent: args.targets.skip_negotiation,
        live_events: false,
        read_only: args.common.read_only,
        exit_on_error: args.common.exit_on_error,
        progress_bars: false,
        qemu_command: None,
        fan_out: true,
        ends_process: false,
    };
    let retry = Retry {
        count: args.retry,
        delay: args.retry_delay,
    };
    let guest_agent = args.targets.skip_negotiation;
    let targets = targets
        .into_iter()
        .map(|(label, target)| {
            let common = args.common.clone();
            fanout::Target {
                label,
                connect: Box::new(move || {
                    crate::connect::connect(&target, &common, guest_agent, false, retry)
                        .map(|c| (c.client, c.notice))
                }),
            }
        })
        .collect();
    fanout::run(targets, lines, cfg, style(&args.common), args.jobs as usize)
}

/// Whether to enable out-of-band execution (when QEMU offers it) for a
/// session that will run `commands` (`-c`), or what was read `ahead` of
/// its standard input. It costs QEMU a hand-off between its threads per
/// session (0.3 ms more for one command here) and buys two things: `/oob`
/// (and raw `exec-oob`), and QEMU reading ahead of the command it runs,
/// which from the third command on makes up for it (measured: seven
/// commands take 5.0 ms without, eight 4.2 ms with). So it stays on unless
/// everything the session will run is known, is one or two commands, and
/// never mentions `oob`.
fn wants_oob(commands: &[String], ahead: Option<&script::Prefetched>) -> bool {
    const FEW: usize = 2;
    if !commands.is_empty() {
        return commands.len() > FEW || commands.iter().any(|c| mentions_oob(c.as_bytes()));
    }
    match ahead {
        Some(p) if p.whole => {
            let lines = p
                .bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            lines > FEW || mentions_oob(&p.bytes)
        }
        _ => true,
    }
}

/// Whether `text` may run something out of band: it says `oob` anywhere,
/// in any case (`/oob`, `exec-oob`, a file name...: rather on for nothing
/// than off when needed), or `/play` (a file of commands unread yet).
fn mentions_oob(text: &[u8]) -> bool {
    text.windows(3).any(|w| w.eq_ignore_ascii_case(b"oob"))
        || text.windows(5).any(|w| w == b"/play")
}

/// What std does before a Rust `main` that a program started from C's
/// `main` needs: SIGPIPE ignored (a closed pipe is a write error, handled
/// as such), and standard streams that are closed opened on `/dev/null`,
/// so that no socket or file the program opens takes their place (and
/// gets its output).
pub fn prepare_process() {
    // SAFETY: signal(2) with a valid signal and SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll(2) on three pollfds that live across the call; a zero
    // timeout never waits.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } <= 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // SAFETY: open(2) of a constant path: it takes the lowest free
            // descriptor, the closed standard stream.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The `qmp-shell` program; returns the exit status.
pub fn main() -> i32 {
    if let Some(code) = crate::generate::run_if_asked(ShellArgs::command, &crate::manual::SHELL) {
        return code;
    }
    let args = ShellArgs::parse_args();
    output::set_json_stderr(args.common.json);
    if args.list {
        return list(&args);
    }
    let mut targets = targets(&args);
    if targets.is_empty() {
        // --all-domains found nothing to run on: not a failure.
        output::eprint("qmp-shell: no running domains\n");
        return exit::OK;
    }
    if targets.len() != 1 || args.targets.all_domains || args.targets.connect.len() > 1 {
        signals::install(true);
        return fan_out(args, targets);
    }
    let (_, target) = targets.remove(0);
    // A session that is not at a terminal, on a QMP monitor's socket, runs
    // on this thread alone: the client does its I/O while the engine
    // waits, and signals need no thread either.
    let source = Source::of(&args.common, &args.commands);
    let inline = match &target {
        Target::Address { address, .. } => {
            !matches!(address, Address::Ssh { .. })
                && !args.targets.skip_negotiation
                && !source.interactive()
        }
        Target::Domain { .. } => false,
    };
    // QEMU accepts and greets while the rest is set up.
    let early = inline
        .then(|| crate::connect::connect_early(&target))
        .flatten();
    let interrupt = if inline {
        signals::install_inline()
    } else {
        None
    };
    // What a session off the terminal will run, as far as it is there
    // already (`-c`, a file, a pipe whose writer is done).
    let ahead = (interrupt.is_some() && args.commands.is_empty()).then(script::prefetch_stdin);
    let oob = wants_oob(&args.commands, ahead.as_ref());
    if interrupt.is_none() {
        signals::install(!source.interactive());
    }
    let io = match SessionIo::new(&args.common, source, interrupt.is_some()) {
        Ok(io) => io,
        Err(err) => return cannot_start(&err),
    };
    let retry = Retry {
        count: args.retry,
        delay: args.retry_delay,
    };
    // A banner, with QEMU's version, starts a session on a pipe or a
    // terminal; -c and --json print none.
    let banner = args.commands.is_empty() && !args.common.json;
    // A connection attempt may wait up to --timeout for a greeting; a
    // signal ends the shell at once all the same.
    let attempt = if let Some(interrupt) = interrupt {
        Some(crate::connect::connect_inline(
            &target,
            &args.common,
            banner,
            retry,
            crate::connect::InlineStart {
                interrupt,
                oob,
                early,
            },
        ))
    } else {
        let (target, common, agent) = (
            target.clone(),
            args.common.clone(),
            args.targets.skip_negotiation,
        );
        signals::unless_terminated(move || {
            crate::connect::connect(&target, &common, agent, banner, retry)
        })
    };
    let connected = match attempt {
        Some(Ok(connected)) => connected,
        Some(Err(msg)) if signals::terminating().is_none() => return die_as("ConnectError", &msg),
        _ => return 128 + signals::terminating().unwrap_or(libc::SIGINT),
    };
    if let Some(notice) = &connected.notice {
        output::eprint(&format!("{notice}\n"));
    }
    let client = Arc::new(connected.client);
    let code = run_session(
        Arc::clone(&client),
        &args.common,
        args.commands,
        args.targets.skip_negotiation,
        None,
        ahead,
        io,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ahead(text: &str, whole: bool) -> script::Prefetched {
        script::Prefetched {
            bytes: text.as_bytes().to_vec(),
            whole,
        }
    }

    #[test]
    fn out_of_band_is_left_off_only_for_one_or_two_known_commands() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!wants_oob(&c(&["query-status"]), None));
        assert!(!wants_oob(&c(&["query-status", "query-name"]), None));
        assert!(wants_oob(&c(&["a", "b", "c"]), None));
        assert!(wants_oob(&c(&["/oob migrate-pause"]), None));
        assert!(wants_oob(&c(&[r#"{"exec-oob": "x"}"#]), None));
        assert!(wants_oob(&c(&["/play cmds.txt"]), None));
        assert!(!wants_oob(&[], Some(&ahead("query-status\n\n", true))));
        assert!(wants_oob(&[], Some(&ahead("a\nb\nc\n", true))));
        assert!(wants_oob(&[], Some(&ahead("/OOB x\n", true))));
        // Input still to come, or none read yet: on.
        assert!(wants_oob(&[], Some(&ahead("query-status\n", false))));
        assert!(wants_oob(&[], None));
    }
}
