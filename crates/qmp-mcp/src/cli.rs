//! Command-line arguments of `qmp-mcp`: the target options of `qmp-shell`
//! (the same definitions, [`TargetArgs`]), and the server's own.

use std::time::Duration;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser};
use qmp_shell::cli::{parse_positive_seconds, TargetArgs};

/// The usage line of `qmp-mcp` in usage errors.
pub const USAGE: &str = "qmp-mcp [OPTIONS] [qmp_server...]";

/// How long a command's reply is waited for by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const LONG_ABOUT: &str = "\
An MCP (Model Context Protocol) server on standard input and output that lets an AI agent \
query and drive QEMU VMs through QMP: the VMs of qmp-shell's target options (UNIX sockets, \
TCP, ssh:// sockets, libvirt domains, local or remote, guest agents with -N).

Read-only by default: only commands that cannot change a VM are sent (queries, QOM reads, \
HMP `info`), the rest are refused without being sent. --allow-writes lets every command \
through.

Tools: targets, describe, execute, hmp, wait_event, jobs. An MCP client starts it, e.g.:
  {\"command\": \"qmp-mcp\", \"args\": [\"--domain\", \"vm1\"]}";

const AFTER_HELP: &str = "\
Exit status:
  0  the client closed standard input
  1  the server could not start (standard output closed, say)
  2  command-line usage error
  128+N  ended by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129)
A target that cannot be reached does not stop the server: the tools say so,
and the next use tries again.";

/// `qmp-mcp`: an MCP server for QEMU's QMP.
#[derive(Parser, Debug)]
#[command(
    name = "qmp-mcp",
    version = qmp_shell::cli::VERSION,
    about = "An MCP server that lets AI agents query and drive QEMU VMs through QMP.",
    long_about = LONG_ABOUT,
    override_usage = "qmp-mcp [OPTIONS] [qmp_server...]\n       \
        qmp-mcp [OPTIONS] --domain DOMAIN... [--connect URI...]\n       \
        qmp-mcp [OPTIONS] --all-domains [--connect URI...]",
    after_help = AFTER_HELP,
    group(ArgGroup::new("libvirt").args(["domain", "all_domains"]).multiple(false)),
    mut_arg("skip_negotiation", |a| a.help(
        "The targets are guest agents (qemu-ga): no greeting, no negotiation")),
    mut_arg("qmp_servers", |a| a.help(
        "< UNIX socket path | TCP address:port | [IPv6]:port | ssh://[USER@]HOST[:PORT]/PATH > \
         (default: $QMP_SOCKET); several: the tools take a `target`")),
    mut_arg("domain", |a| a.help(
        "Serve the QEMU of libvirt domain DOMAIN (name, UUID or id) through libvirt; \
         with -N, its guest agent; repeat it for several domains")),
    mut_arg("all_domains", |a| a.help(
        "Serve every running domain of the --connect URIs (listed again when the \
         `targets` tool runs or an unknown target is named)")),
    mut_arg("connect", |a| a.help(
        "libvirt URI for --domain and --all-domains (default: $LIBVIRT_DEFAULT_URI, \
         else qemu:///system); remote ones too: qemu+ssh://USER@HOST/system; \
         repeat it to cover several hosts")),
)]
pub struct McpArgs {
    /// What to serve: qmp-shell's target options.
    #[command(flatten)]
    pub targets: TargetArgs,

    /// The server's own options.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The server's own options.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Let every command through (stop, quit, device_del, blockdev-add,
    /// any HMP command...): without it only commands that cannot change a
    /// VM are sent
    #[arg(long)]
    pub allow_writes: bool,

    /// Give up waiting for a reply after SECONDS (the connection's greeting
    /// too); the command may still run in QEMU
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = parse_positive_seconds,
        default_value = "30"
    )]
    pub timeout: Duration,
}

/// `qmp-mcp`'s `clap::Command` (for `--help`, manual pages, completions).
pub fn command() -> clap::Command {
    McpArgs::command()
}

impl McpArgs {
    /// Parse the process's arguments; a usage error is printed as every
    /// program of the project prints one ([`qmp_shell::cli::usage_error`])
    /// and exits 2.
    pub fn parse_args() -> McpArgs {
        McpArgs::try_parse_args_from(std::env::args_os())
            .unwrap_or_else(|e| qmp_shell::cli::exit_on_clap_error("qmp-mcp", USAGE, &e))
    }

    /// Parse `args`; an address on the command line does not go with
    /// `--domain` or `--all-domains`, which win over `$QMP_SOCKET`.
    pub fn try_parse_args_from<I, T>(args: I) -> Result<McpArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let mut parsed = McpArgs::from_arg_matches(&matches)?;
        parsed.targets.settle(&mut cmd, &matches, None)?;
        let t = &parsed.targets;
        if t.qmp_servers.is_empty() && t.domain.is_empty() && !t.all_domains {
            return Err(cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "no target: give an address, --domain or --all-domains (or set QMP_SOCKET)",
            ));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<McpArgs, clap::Error> {
        let mut all = vec!["qmp-mcp"];
        all.extend_from_slice(args);
        McpArgs::try_parse_args_from(all)
    }

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn targets_and_options() {
        let a = parse(&["/a.sock", "ssh://h/q.sock"]).unwrap();
        assert_eq!(a.targets.qmp_servers, ["/a.sock", "ssh://h/q.sock"]);
        assert!(!a.server.allow_writes);
        assert_eq!(a.server.timeout, DEFAULT_TIMEOUT);
        let a = parse(&[
            "--domain",
            "vm1",
            "--domain",
            "vm2",
            "--connect",
            "qemu:///system",
            "-N",
            "--allow-writes",
            "--timeout",
            "2.5",
        ])
        .unwrap();
        assert_eq!(a.targets.domain, ["vm1", "vm2"]);
        assert!(a.targets.skip_negotiation && a.server.allow_writes);
        assert_eq!(a.server.timeout, Duration::from_millis(2500));
        assert!(parse(&["--all-domains"]).unwrap().targets.all_domains);
        for bad in [
            &[][..],
            &["--domain", "vm1", "/tmp/s"],
            &["--all-domains", "--domain", "x"],
            &["--connect", "qemu:///system", "/tmp/s"],
            &["--timeout", "0", "/tmp/s"],
            &["--domain", ""],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
