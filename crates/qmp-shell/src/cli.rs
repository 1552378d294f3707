//! Command-line arguments of `qmp-shell` and `qmp-shell-wrap`.
//!
//! The options are those of the reference (`-H -v -p -l -N`, same letters,
//! same long names) plus the scripting and robustness options this
//! implementation adds. Address parsing lives in [`qmp_client::Address`].

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

mod quick;

/// What `--version` prints after the program's name, the same for every
/// program: the crate's version and, when built from a git checkout (or a
/// crate packaged from one), the commit: `0.1.0 (rev 0123456789)`.
pub const VERSION: &str = env!("QMP_SHELL_VERSION");

/// Exit statuses, shared by both binaries and documented in `--help`.
pub(crate) mod exit {
    /// End of input reached, every command was sent and answered.
    pub(crate) const OK: i32 = 0;
    /// Could not connect, lost the connection, the server broke the
    /// protocol, or standard output could not be written.
    pub(crate) const FATAL: i32 = 1;
    /// Bad command-line usage (unknown option, bad port, missing address).
    pub(crate) const USAGE: i32 = 2;
    /// With `-c` or `--exit-status`: at least one command failed (an error
    /// reply, or a line that could not be parsed).
    pub(crate) const COMMAND_FAILED: i32 = 3;
}

const EXIT_HELP: &str = "\
Exit status:
  0  end of input; every command was sent and answered
  1  could not connect, the server went away, no reply within --timeout,
     the server broke the protocol, or standard output could not be written
  2  command-line usage error
  3  with -c or --exit-status: at least one command got an error reply
     or could not be parsed
  128+N  ended by signal N (SIGINT 130 on a pipe, SIGHUP 129, SIGTERM 143)
With several targets: 1 if any could not be reached or went away, else 3 if
any command failed anywhere, else 0; a summary line goes to standard error.

Commands:  <command-name> [arg-name1=arg1] ... [arg-nameN=argN]
  device_add driver=e1000 id=net1
  blockdev-add driver=null-co node-name=n0 size=1048576
  transaction( block-dirty-bitmap-add node=n0 name=b0 )
Values: integers, true/false, JSON or Python literals ({...} or [...]),
\"quoted strings\" (sent without the quotes), anything else as a string.
Dotted keys build nested objects: file.driver=file file.filename=a.img
Shell commands: /wait EVENT [KEY=VALUE...], /jobs, /record FILE, /play FILE,
/oob COMMAND ..., /fd PATH COMMAND ... (`help` at the prompt describes them)";

/// When to colour JSON output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Options shared by `qmp-shell` and `qmp-shell-wrap`.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct Common {
    /// Use HMP interface (commands go through human-monitor-command)
    #[arg(short = 'H', long = "hmp")]
    pub hmp: bool,

    /// Verbose (echo commands sent and received)
    #[arg(short, long)]
    pub verbose: bool,

    /// Pretty-print JSON
    #[arg(short, long)]
    pub pretty: bool,

    /// Save log of all QMP messages to LOGFILE (JSON lines, appended; mode 0600)
    #[arg(short = 'l', long = "logfile", value_name = "LOGFILE")]
    pub logfile: Option<PathBuf>,

    /// Print every reply as exactly one JSON line; no banner, no prompt;
    /// standard error is JSON lines too (events, warnings, errors, notes)
    #[arg(long, conflicts_with_all = ["pretty", "verbose"])]
    pub json: bool,

    /// Exit with status 3 when any command got an error reply or could not be parsed
    #[arg(long)]
    pub exit_status: bool,

    /// Stop at the first error reply or line that cannot be parsed (exit 3);
    /// commands are then sent one at a time, so nothing after it is sent
    #[arg(short = 'e', long)]
    pub exit_on_error: bool,

    /// Send only commands that cannot change the VM (queries, QOM reads,
    /// HMP `info`); refuse the rest without sending them
    #[arg(long)]
    pub read_only: bool,

    /// Give up waiting for a reply after SECONDS, more than 0 (default: wait
    /// forever; the greeting is always bounded, by this or 10 s, and over
    /// ssh:// so is ssh's set-up with it)
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    pub timeout: Option<Duration>,

    /// Colour JSON output
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// What to attach to: the target options `qmp-shell` and `qmp-mcp` share
/// (sockets, `ssh://`, libvirt domains, `-N`). Flattened into a program's
/// arguments, which must define the `libvirt` group (`--connect` requires
/// one of its members).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct TargetArgs {
    /// Skip negotiate (for qemu-ga)
    #[arg(short = 'N', long = "skip-negotiation")]
    pub skip_negotiation: bool,

    /// The servers' addresses (default: `$QMP_SOCKET`); more than one runs
    /// the same commands on each.
    #[arg(
        value_name = "qmp_server",
        env = "QMP_SOCKET",
        hide_env_values = true,
        help = "< UNIX socket path | TCP address:port | [IPv6]:port | ssh://[USER@]HOST[:PORT]/PATH > \
                (default: $QMP_SOCKET); several: the same commands on each"
    )]
    pub qmp_servers: Vec<String>,

    /// Attach to the QEMU of libvirt domain DOMAIN (name, UUID or id)
    /// through libvirt instead of a socket; with -N, to its guest agent;
    /// repeat it to run the same commands on several domains
    #[arg(
        long,
        value_name = "DOMAIN",
        value_parser = parse_domain,
        help_heading = "libvirt"
    )]
    pub domain: Vec<String>,

    /// Run the commands on every running domain of the --connect URIs
    #[arg(long, help_heading = "libvirt")]
    pub all_domains: bool,

    /// libvirt URI for --domain, --all-domains and --list (default:
    /// $LIBVIRT_DEFAULT_URI, else qemu:///system); remote ones too:
    /// qemu+ssh://USER@HOST/system; repeat it to cover several hosts
    #[arg(
        long = "connect",
        value_name = "URI",
        value_parser = parse_uri,
        requires = "libvirt",
        help_heading = "libvirt"
    )]
    pub connect: Vec<String>,
}

impl TargetArgs {
    /// Settle what clap alone cannot: `--domain` and `--all-domains` (and
    /// `other`, another option of the program that names no address, given
    /// when set) do not go with an address on the command line, but win
    /// over one from `$QMP_SOCKET` (which is then ignored). An empty
    /// address is none.
    pub fn settle(
        &mut self,
        cmd: &mut clap::Command,
        matches: &clap::ArgMatches,
        other: Option<&str>,
    ) -> Result<(), clap::Error> {
        if !self.domain.is_empty() || self.all_domains || other.is_some() {
            if matches.value_source("qmp_servers") == Some(ValueSource::CommandLine) {
                let option = if let Some(other) = other {
                    other
                } else if self.all_domains {
                    "--all-domains"
                } else {
                    "--domain <DOMAIN>"
                };
                return Err(cmd.error(
                    ErrorKind::ArgumentConflict,
                    format!("the argument '{option}' cannot be used with '[qmp_server]'"),
                ));
            }
            self.qmp_servers.clear();
        }
        // An empty QMP_SOCKET (or argument) is no address at all.
        self.qmp_servers.retain(|s| !s.is_empty());
        Ok(())
    }
}

/// `qmp-shell`: a low-level shell on top of QMP.
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "qmp-shell",
    version = VERSION,
    about = "Low-level QEMU shell on top of QMP.",
    long_about = "Low-level QEMU shell on top of QMP.\n\n\
        Start QEMU with:  qemu-system-x86_64 [...] -qmp unix:./qmp-sock,server=on,wait=off\n\
        Run the shell:    qmp-shell ./qmp-sock\n\n\
        A VM that libvirt manages:  qmp-shell --domain NAME [--connect URI]\n\
        (commands, events, -N and -H go through libvirt's QEMU monitor passthrough;\n\
        libvirt then marks the domain as tainted). Running domains:  qmp-shell --list",
    override_usage = "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] [qmp_server...]\n       \
        qmp-shell [OPTIONS] --domain DOMAIN... [--connect URI...]\n       \
        qmp-shell [OPTIONS] --all-domains [--connect URI...]\n       \
        qmp-shell --list [-v] [--connect URI...]",
    after_help = EXIT_HELP,
    group(ArgGroup::new("libvirt").args(["domain", "list", "all_domains"]).multiple(false))
)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    #[command(flatten)]
    pub(crate) targets: TargetArgs,

    /// Run this command and exit (repeatable); no banner or prompt
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub(crate) commands: Vec<String>,

    /// Wait for the server: retry connecting N times
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

    /// With several targets: serve at most N at once
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub(crate) jobs: u32,

    /// List the running libvirt domains and exit: names, one per line
    /// (with -v: ID UUID NAME); of the other options, only --connect
    #[arg(long, help_heading = "libvirt", conflicts_with_all = SESSION_OPTIONS)]
    pub(crate) list: bool,
}

/// The options of `qmp-shell` that shape a session, which `--list` (no
/// session) does not take; `-v` and `--connect` it does.
const SESSION_OPTIONS: [&str; 13] = [
    "hmp",
    "pretty",
    "logfile",
    "json",
    "exit_status",
    "exit_on_error",
    "read_only",
    "timeout",
    "color",
    "skip_negotiation",
    "commands",
    "retry",
    "jobs",
];

/// The usage line of `qmp-shell` in usage errors (the reference's, with
/// `[OPTIONS]` for the options it does not have).
pub(crate) const SHELL_USAGE: &str =
    "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server";

impl ShellArgs {
    /// Parse the process's arguments; on a usage error, print it as
    /// [`usage_error`] does and exit 2. The usual command lines are read
    /// without clap (see [`quick`]), the rest as
    /// [`ShellArgs::parse_with_parser`] does.
    pub(crate) fn parse_args() -> ShellArgs {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(parsed) = quick::parse(&args) {
            return parsed;
        }
        json_stderr_if_asked(&args);
        match ShellArgs::parse_with_parser(args) {
            Ok((args, parser)) => {
                // Kept for the life of the process, which ends soon after a
                // one-command session: freeing it would only take time.
                std::mem::forget(parser);
                args
            }
            Err(e) => exit_on_clap_error("qmp-shell", SHELL_USAGE, &e),
        }
    }

    /// [`ShellArgs::parse_with_parser`] without the parser.
    #[cfg(test)]
    pub(crate) fn try_parse_args_from<I, T>(args: I) -> Result<ShellArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        ShellArgs::parse_with_parser(args).map(|(parsed, _)| parsed)
    }

    /// Parse `args`, then settle what clap alone cannot: `--domain` and
    /// `--list` do not go with an address on the command line, but win over
    /// one from `$QMP_SOCKET` (which is then ignored). With the parser and
    /// its matches, for the caller to drop or keep.
    fn parse_with_parser<I, T>(
        args: I,
    ) -> Result<(ShellArgs, (clap::Command, clap::ArgMatches)), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = ShellArgs::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let mut parsed = ShellArgs::from_arg_matches(&matches)?;
        let list = parsed.list.then_some("--list");
        parsed.targets.settle(&mut cmd, &matches, list)?;
        if parsed.targets.skip_negotiation && parsed.common.hmp {
            // A guest agent has no human monitor (the flag lives in
            // `TargetArgs`, which programs without `-H` share too).
            return Err(cmd.error(
                ErrorKind::ArgumentConflict,
                "the argument '--skip-negotiation' cannot be used with '--hmp'",
            ));
        }
        parsed
            .common
            .check()
            .map_err(|msg| cmd.error(ErrorKind::ArgumentConflict, msg))?;
        Ok((parsed, (cmd, matches)))
    }
}

impl Common {
    /// What clap cannot check: a value of one option that goes against
    /// another. The error is the message of a usage error.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.json && self.color == ColorChoice::Always {
            return Err(
                "the argument '--color always' cannot be used with '--json' \
                        (JSON lines are never coloured)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// `qmp-shell-wrap`: launch QEMU and attach the shell to it.
#[derive(Parser, Debug)]
#[command(
    name = "qmp-shell-wrap",
    version = VERSION,
    about = "Launch QEMU and connect to it with qmp-shell in a single command.",
    long_about = "Launch QEMU and connect to it with qmp-shell in a single command.\n\n\
        The QEMU command line (default: qemu-system-x86_64) gets `-qmp unix:SOCKET` \
        appended, where SOCKET lives in a private temporary directory. When the shell \
        ends, QEMU is stopped (with `quit`, then signals) and the directory removed.\n\n\
        The options are qmp-shell's, except -N/--skip-negotiation and --retry/--retry-delay, \
        which only qmp-shell has (the wrap always talks QMP to the QEMU it started). The \
        first argument that is not one of these options starts the QEMU command line.",
    override_usage = "qmp-shell-wrap [-h] [-H] [-v] [-p] [-l LOGFILE] [OPTIONS] [--] [QEMU ARGV...]",
    after_help = EXIT_HELP
)]
pub(crate) struct WrapArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Run this command and exit (repeatable); no banner or prompt
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub(crate) commands: Vec<String>,

    /// Also serve other QMP clients on this UNIX socket while the shell runs (as qmp-proxy does)
    #[arg(long, value_name = "PATH")]
    pub(crate) serve: Option<PathBuf>,

    /// QEMU command line to invoke
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "QEMU ARGV"
    )]
    pub(crate) command: Vec<String>,
}

/// Options of `qmp-shell` that `qmp-shell-wrap` does not take.
pub(crate) const SHELL_ONLY_OPTIONS: [&str; 4] =
    ["-N", "--skip-negotiation", "--retry", "--retry-delay"];

/// `--domain`: a name, UUID or id, which cannot be empty.
pub(crate) fn parse_domain(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an empty name: give a domain's name, UUID or id".to_owned());
    }
    Ok(text.to_owned())
}

/// `--connect`: a libvirt URI, which cannot be empty (leave `--connect` out
/// for the default).
pub(crate) fn parse_uri(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an empty URI: leave --connect out for the default".to_owned());
    }
    Ok(text.to_owned())
}

/// A number of seconds, more than 0 (for `--timeout`).
pub fn parse_positive_seconds(text: &str) -> Result<Duration, String> {
    let d = parse_seconds(text)?;
    if d.is_zero() {
        return Err(format!(
            "must be more than 0 (leave --timeout out to wait forever): {text}"
        ));
    }
    Ok(d)
}

/// A number of seconds, 0 or more (a fraction is fine).
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("not a sensible number of seconds: {text}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Report a failed parse of the arguments of `program` and exit: `--help`
/// and `--version` print as clap prints them (exit 0); a usage error is
/// reported as [`usage_error`] reports one, so that every usage error of
/// every program looks the same, and as the reference's argparse prints
/// them.
pub fn exit_on_clap_error(program: &str, usage: &str, err: &clap::Error) -> ! {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => usage_error(program, usage, &clap_message(err)),
    }
}

/// For a program with `--json`: when `args` (program name first) give it
/// as an option (before any `--`, after which words are not options),
/// standard error is JSON lines from now on, so that a usage error in the
/// same command line is one too.
pub(crate) fn json_stderr_if_asked<T: AsRef<std::ffi::OsStr>>(args: &[T]) {
    let asked = args
        .iter()
        .skip(1)
        .map_while(|a| (a.as_ref() != "--").then_some(a))
        .any(|a| a.as_ref() == "--json");
    if asked {
        crate::output::set_json_stderr(true);
    }
}

/// The message of a clap error on one line, without clap's `error: `, its
/// usage and its pointer to `--help`, with its tips.
pub(crate) fn clap_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut message = String::new();
    for paragraph in rendered.split("\n\n") {
        let text = paragraph
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(first) = text.strip_prefix("error: ") {
            message.push_str(first);
        } else if let Some(tip) = text.strip_prefix("tip: ") {
            message.push_str(&format!(" ({tip})"));
        }
    }
    message
}

/// Print a usage error the way the reference's argparse does, on
/// standard error (`usage: USAGE`, then `PROGRAM: error: MESSAGE`), and
/// exit 2: every usage error of the three programs, those found by clap
/// included ([`exit_on_clap_error`]).
///
/// Under `--json` (once standard error is JSON lines), the one line is
/// `{"error": {"class": "UsageError", "desc": MESSAGE}}` instead.
pub fn usage_error(program: &str, usage: &str, message: &str) -> ! {
    use std::io::Write;
    if crate::output::json_stderr() {
        crate::output::eprint_error("UsageError", message);
    } else {
        // Never panic on a closed standard error.
        let _ = write!(
            std::io::stderr(),
            "usage: {usage}\n{program}: error: {message}\n"
        );
    }
    std::process::exit(exit::USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        ShellArgs::command().debug_assert();
        WrapArgs::command().debug_assert();
    }

    #[test]
    fn reference_flags_parse() {
        let a =
            ShellArgs::try_parse_from(["qmp-shell", "-H", "-v", "-p", "-l", "log", "s"]).unwrap();
        assert!(a.common.hmp && a.common.verbose && a.common.pretty);
        assert_eq!(a.common.logfile, Some(PathBuf::from("log")));
        assert_eq!(a.targets.qmp_servers, ["s"]);
        // -N (a guest agent) with anything but -H (HMP goes to QEMU's monitor).
        let a =
            ShellArgs::try_parse_from(["qmp-shell", "-v", "-p", "-l", "log", "-N", "s"]).unwrap();
        assert!(a.common.verbose && a.common.pretty && a.targets.skip_negotiation);
    }

    #[test]
    fn wrap_takes_qemu_argv_after_double_dash_or_not() {
        let a = WrapArgs::try_parse_from(["w", "-p", "--", "qemu", "-M", "none"]).unwrap();
        assert!(a.common.pretty);
        assert_eq!(a.command, ["qemu", "-M", "none"]);
        let a = WrapArgs::try_parse_from(["w", "-v", "qemu-system-x86_64", "-S"]).unwrap();
        assert!(a.common.verbose);
        assert_eq!(a.command, ["qemu-system-x86_64", "-S"]);
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("x").is_err());
        assert!(parse_positive_seconds("0").is_err());
        assert!(parse_positive_seconds("0.0").is_err());
        assert_eq!(
            parse_positive_seconds("0.5"),
            Ok(Duration::from_millis(500))
        );
    }

    #[test]
    fn domain_and_list() {
        let a =
            ShellArgs::try_parse_args_from(["q", "--domain", "vm1", "-c", "query-status"]).unwrap();
        assert_eq!(a.targets.domain, ["vm1"]);
        assert!(a.targets.connect.is_empty());
        let a = ShellArgs::try_parse_args_from(["q", "--connect", "test:///default", "--list"])
            .unwrap();
        assert!(a.list);
        assert_eq!(a.targets.connect, ["test:///default"]);
        let a = ShellArgs::try_parse_args_from([
            "q",
            "--domain",
            "a",
            "--domain",
            "b",
            "--connect",
            "u1",
            "--connect",
            "u2",
            "-j",
            "4",
        ])
        .unwrap();
        assert_eq!(
            (a.targets.domain.len(), a.targets.connect.len(), a.jobs),
            (2, 2, 4)
        );
        let a = ShellArgs::try_parse_args_from(["q", "/a.sock", "/b.sock"]).unwrap();
        assert_eq!(a.targets.qmp_servers, ["/a.sock", "/b.sock"]);
        assert!(ShellArgs::try_parse_args_from(["q", "--all-domains", "-c", "x"]).is_ok());
        for bad in [
            &["q", "--domain", "vm1", "/tmp/s"][..],
            &["q", "--list", "/tmp/s"],
            &["q", "--domain", "vm1", "--list"],
            &["q", "--connect", "qemu:///system", "/tmp/s"],
            &["q", "--connect", "qemu:///system"],
            &["q", "--domain", ""],
            &["q", "--all-domains", "/tmp/s"],
            &["q", "--all-domains", "--domain", "x"],
            &["q", "-j", "0", "/tmp/s"],
        ] {
            let e = ShellArgs::try_parse_args_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{bad:?}: {e}");
        }
    }

    #[test]
    fn conflicts_and_clap_messages_on_one_line() {
        for bad in [
            &["q", "-N", "-H", "/tmp/s"][..],
            &["q", "--list", "-c", "x"],
            &["q", "--list", "-l", "log"],
            &["q", "--list", "--json"],
            &["q", "--json", "-p", "/tmp/s"],
            &["q", "--json", "-v", "/tmp/s"],
            &["q", "--json", "--color", "always", "/tmp/s"],
            &["q", "--retry-delay", "1", "/tmp/s"],
            &["q", "--connect", "", "--list"],
        ] {
            let e = ShellArgs::try_parse_args_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{bad:?}: {e}");
            let message = clap_message(&e);
            assert!(
                !message.contains('\n') && !message.starts_with("error") && !message.is_empty(),
                "{bad:?}: {message:?}"
            );
        }
        // What goes together, defaults included.
        for good in [
            &["q", "--list", "-v"][..],
            &["q", "--json", "--color", "never", "/tmp/s"],
            &["q", "-N", "/tmp/s"],
            &["q", "--retry", "2", "--retry-delay", "0.5", "/tmp/s"],
        ] {
            assert!(ShellArgs::try_parse_args_from(good).is_ok(), "{good:?}");
        }
        let e = ShellArgs::try_parse_args_from(["q", "--hmpp"]).unwrap_err();
        assert_eq!(
            clap_message(&e),
            "unexpected argument '--hmpp' found (a similar argument exists: '--hmp')"
        );
    }

    #[test]
    fn wrap_takes_dash_c() {
        let a =
            WrapArgs::try_parse_from(["w", "-c", "query-status", "qemu", "-M", "none"]).unwrap();
        assert_eq!(a.commands, ["query-status"]);
        assert_eq!(a.command, ["qemu", "-M", "none"]);
    }
}
