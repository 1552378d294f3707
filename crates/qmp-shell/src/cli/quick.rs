//! The usual command lines of `qmp-shell`, read without building clap's
//! parser.
//!
//! Building and running clap's parser for ~40 options is about a fifth of
//! the instructions of a whole one-command session (~180K of ~790K), for
//! command lines that are nearly always addresses, `-c CMD` and a few flags.
//! [`parse`] reads exactly those and gives up on anything else (an option
//! with a value other than `-c`, `=`, bundled short flags, a repeated flag,
//! `--`, conflicts, no address, text that is not UTF-8), which clap then
//! reads, checks and explains as before. The property test below holds it
//! to clap: whatever it reads, clap reads the same way.

use std::ffi::OsString;
use std::time::Duration;

use super::{Common, ShellArgs, TargetArgs};

/// `args` (program name first) as clap reads them, when they are only
/// addresses, `-c CMD`/`--command CMD` and flags that take no value, each
/// flag at most once; None for anything else.
pub(super) fn parse(args: &[OsString]) -> Option<ShellArgs> {
    let mut common = Common::default();
    let mut targets = TargetArgs::default();
    let mut commands = Vec::new();
    let mut rest = args.get(1..)?.iter();
    while let Some(arg) = rest.next() {
        let arg = arg.to_str()?;
        let flag = match arg {
            "-c" | "--command" => {
                let command = rest.next()?.to_str()?;
                if command.is_empty() || command.starts_with('-') {
                    return None;
                }
                commands.push(command.to_owned());
                continue;
            }
            "-H" | "--hmp" => &mut common.hmp,
            "-v" | "--verbose" => &mut common.verbose,
            "-p" | "--pretty" => &mut common.pretty,
            "--json" => &mut common.json,
            "--exit-status" => &mut common.exit_status,
            "-e" | "--exit-on-error" => &mut common.exit_on_error,
            "--read-only" => &mut common.read_only,
            "-N" | "--skip-negotiation" => &mut targets.skip_negotiation,
            _ if arg.is_empty() || arg.starts_with('-') => return None,
            _ => {
                targets.qmp_servers.push(arg.to_owned());
                continue;
            }
        };
        if std::mem::replace(flag, true) {
            return None;
        }
    }
    let conflict =
        common.json && (common.pretty || common.verbose) || targets.skip_negotiation && common.hmp;
    if targets.qmp_servers.is_empty() || conflict {
        return None;
    }
    Some(ShellArgs {
        common,
        targets,
        commands,
        retry: 0,
        retry_delay: Duration::from_secs(1),
        jobs: 16,
        list: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// What clap makes of `args`, settled as `qmp-shell` settles them.
    fn clap(args: &[OsString]) -> Result<ShellArgs, String> {
        ShellArgs::try_parse_args_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_usual_command_lines_are_read_without_clap_and_as_clap_reads_them() {
        for args in [
            &["qmp-shell", "/tmp/qmp.sock"][..],
            &["qmp-shell", "/tmp/qmp.sock", "-c", "query-status"],
            &["qmp-shell", "-p", "/tmp/qmp.sock", "-c", "query-qmp-schema"],
            &["qmp-shell", "-c", "x", "--command", "y", "localhost:4444"],
            &["qmp-shell", "-N", "-v", "/tmp/qga.sock"],
            &["qmp-shell", "-H", "--json", "--read-only", "/a", "/b"],
            &[
                "qmp-shell",
                "-e",
                "--exit-status",
                "ssh://h/s",
                "-c",
                "stop",
            ],
        ] {
            let args = os(args);
            let quick = parse(&args).unwrap_or_else(|| panic!("{args:?} left to clap"));
            assert_eq!(Ok(quick), clap(&args), "{args:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        for args in [
            &["qmp-shell"][..],
            &["qmp-shell", "-pv", "/s"],
            &["qmp-shell", "-p", "-p", "/s"],
            &["qmp-shell", "--json", "-p", "/s"],
            &["qmp-shell", "-N", "-H", "/s"],
            &["qmp-shell", "-c", "-p", "/s"],
            &["qmp-shell", "/s", "-c"],
            &["qmp-shell", "--command=x", "/s"],
            &["qmp-shell", "-cx", "/s"],
            &["qmp-shell", "--", "/s"],
            &["qmp-shell", "", "/s"],
            &["qmp-shell", "--retry", "3", "/s"],
            &["qmp-shell", "--domain", "vm"],
            &["qmp-shell", "--list"],
            &["qmp-shell", "-h"],
            &["qmp-shell", "--version"],
        ] {
            assert_eq!(parse(&os(args)), None, "{args:?}");
        }
        // Nor is anything that is not UTF-8.
        use std::os::unix::ffi::OsStringExt;
        let args = vec!["q".into(), OsString::from_vec(b"/s\xff".to_vec())];
        assert_eq!(parse(&args), None);
    }

    /// The words [`parse`] reads.
    const READ: &[&str] = &[
        "/tmp/s",
        "h:4444",
        "x",
        "query-status",
        "-c",
        "--command",
        "-H",
        "--hmp",
        "-v",
        "--verbose",
        "-p",
        "--pretty",
        "--json",
        "--exit-status",
        "-e",
        "--exit-on-error",
        "--read-only",
        "-N",
        "--skip-negotiation",
    ];

    /// Their near misses, and options it leaves to clap.
    const NEAR_MISSES: &[&str] = &[
        "",
        "-",
        "--",
        "-pv",
        "-cx",
        "--command=x",
        "--pretty=true",
        "-l",
        "--retry",
        "1",
        "-j",
        "--color",
        "always",
        "--domain",
        "--list",
        "--all-domains",
        "-h",
        "--version",
        "--hmpp",
        "-x",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever [`parse`] reads, clap reads the same way.
        #[test]
        fn what_is_read_without_clap_is_what_clap_reads(
            words in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(READ),
                    1 => proptest::sample::select(NEAR_MISSES),
                ],
                0..7,
            )
        ) {
            let mut args = os(&["qmp-shell"]);
            args.extend(words.iter().map(OsString::from));
            if let Some(quick) = parse(&args) {
                prop_assert_eq!(Ok(quick), clap(&args), "{:?}", args);
            }
        }
    }
}
