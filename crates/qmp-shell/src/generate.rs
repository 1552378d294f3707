//! Man pages and shell completion scripts, generated from the programs' own
//! command-line definitions, so they cannot drift from `--help`.
//!
//! Every program answers `PROGRAM --generate KIND` (as ripgrep's
//! `rg --generate`), given as its only arguments: `man` prints its manual
//! page (roff, for `man -l -`), `complete-bash`, `complete-zsh` and
//! `complete-fish` its completion script. `scripts/package.sh` runs them to
//! fill the `.deb`; users of the wheel or of `cargo install` can run them
//! too. It is handled before the program's own arguments are parsed (so
//! that a required argument or `$QMP_SOCKET` does not get in the way) and
//! is not among them, which keeps it out of `--help`, the page and the
//! completions.
//!
//! The page is clap's NAME, SYNOPSIS, DESCRIPTION and OPTIONS (see
//! [`clap_mangen`]), then the sections of [`manual`](crate::manual), then
//! the version.

use std::io::{self, Write};

use clap::{value_parser, Arg, Command, ValueEnum, ValueHint};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::cli::{exit, VERSION};
use crate::manual::{Block, Page};

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// The manual page, in roff.
    Man,
    /// The bash completion script.
    CompleteBash,
    /// The zsh completion script.
    CompleteZsh,
    /// The fish completion script.
    CompleteFish,
}

/// The option that asks for a page or a script.
pub(crate) const OPTION: &str = "--generate";

/// When the process's arguments are `--generate KIND`: print KIND for the
/// program whose definitions `cmd` builds and whose page is `page`, and
/// return the exit status (2 for a bad KIND or anything more on the
/// command line). None for any other arguments: the program runs.
pub fn run_if_asked(cmd: impl FnOnce() -> Command, page: &Page) -> Option<i32> {
    match asked(std::env::args_os(), page.name)? {
        Ok(kind) => Some(print(kind, cmd(), page)),
        Err(err) => {
            let _ = err.print();
            Some(exit::USAGE)
        }
    }
}

/// What `args` (program name first) ask for: None when they do not start
/// with `--generate`, else the KIND or a usage error.
pub(crate) fn asked<I, T>(args: I, program: &'static str) -> Option<Result<Kind, clap::Error>>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let first = args.get(1)?.to_str()?;
    if first != OPTION && !first.starts_with("--generate=") {
        return None;
    }
    let parser = Command::new(program)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("kind")
                .long(&OPTION[2..])
                .value_name("KIND")
                .required(true)
                .value_parser(value_parser!(Kind)),
        );
    Some(
        parser
            .try_get_matches_from(args)
            .map(|m| *m.get_one::<Kind>("kind").expect("required")),
    )
}

/// Print `kind` for the program whose definitions are `cmd` and whose page
/// is `page` to standard output; the exit status.
pub(crate) fn print(kind: Kind, cmd: Command, page: &Page) -> i32 {
    let mut out = io::stdout().lock();
    match write(kind, cmd, page, &mut out).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(err) => {
            let _ = writeln!(io::stderr(), "ERROR: cannot write standard output: {err}");
            exit::FATAL
        }
    }
}

/// Write `kind` for the program whose definitions are `cmd` and whose page
/// is `page` to `out`.
pub(crate) fn write(kind: Kind, cmd: Command, page: &Page, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = with_value_hints(cmd);
    let shell = match kind {
        Kind::Man => return man(cmd, page, out),
        Kind::CompleteBash => Shell::Bash,
        Kind::CompleteZsh => Shell::Zsh,
        Kind::CompleteFish => Shell::Fish,
    };
    // clap_complete writes with no error to report: collect, then write.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, page.name, &mut buf);
    out.write_all(&buf)
}

/// What the values of the arguments are, for the completion scripts: files
/// for logs and sockets to create, files or sockets for addresses (an
/// address that is not a path just gets no help), a command line for the
/// wrap's QEMU.
fn with_value_hints(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let hint = match arg.get_id().as_str() {
            "logfile" | "listen" | "serve" => ValueHint::FilePath,
            "qmp_servers" | "target" => ValueHint::AnyPath,
            "command" if arg.is_positional() => ValueHint::CommandWithArguments,
            _ => return arg,
        };
        arg.value_hint(hint)
    })
}

/// The manual page: clap's sections, then the page's own, then VERSION.
fn man(cmd: Command, page: &Page, out: &mut dyn Write) -> io::Result<()> {
    let man_cmd = cmd.clone();
    let man = Man::new(cmd)
        .title(page.name.to_uppercase())
        .section("1")
        .source(format!("qmp-shell {VERSION}"))
        .manual("User Commands");
    man.render_title(out)?;
    // No hyphenation: option and variable names stay whole.
    let mut nh = Roff::new();
    nh.control("nh", []);
    nh.to_writer(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    description(&man_cmd, out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    for section in page.sections {
        roff.control("SH", [section.title]);
        for block in section.blocks {
            render_block(&mut roff, block);
        }
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// DESCRIPTION: the long `--help` text, one paragraph per blank-line
/// separated block; a block whose lines are laid out with runs of spaces
/// (commands beside their labels) keeps its lines, as at the terminal.
fn description(cmd: &Command, out: &mut dyn Write) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    let text = cmd
        .get_long_about()
        .or_else(|| cmd.get_about())
        .map(|t| t.to_string())
        .unwrap_or_default();
    for block in text.split("\n\n") {
        roff.control("PP", []);
        let laid_out = block.lines().any(|l| l.trim().contains("  "));
        if laid_out {
            roff.control("nf", []);
        }
        for line in block.lines() {
            roff.text([roman(if laid_out { line } else { line.trim() })]);
        }
        if laid_out {
            roff.control("fi", []);
        }
    }
    roff.to_writer(out)
}

fn render_block(roff: &mut Roff, block: &Block) {
    match *block {
        Block::Para(text) => {
            roff.control("PP", []);
            roff.text([roman(text)]);
        }
        Block::Item(tag, text) => {
            roff.control("TP", []);
            roff.text([bold(tag)]);
            roff.text([roman(text)]);
        }
        Block::Example(lines) => {
            // Indented, no filling or adjusting: lines stay as written.
            roff.control("PP", []);
            roff.control("RS", ["4"]);
            roff.control("nf", []);
            for line in lines.lines() {
                roff.text([roman(line)]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{ShellArgs, WrapArgs};
    use crate::manual;
    use crate::proxy::ProxyArgs;
    use clap::CommandFactory;

    fn programs() -> [(Command, &'static Page); 3] {
        [
            (ShellArgs::command(), &manual::SHELL),
            (WrapArgs::command(), &manual::WRAP),
            (ProxyArgs::command(), &manual::PROXY),
        ]
    }

    fn generated(kind: Kind, cmd: Command, page: &Page) -> String {
        let mut out = Vec::new();
        write(kind, cmd, page, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn generate_is_asked_only_first() {
        let kind = |args: &[&str]| asked(args.iter().copied(), "qmp-proxy");
        assert_eq!(
            kind(&["p", "--generate", "man"]).unwrap().unwrap(),
            Kind::Man
        );
        assert_eq!(
            kind(&["p", "--generate=complete-zsh"]).unwrap().unwrap(),
            Kind::CompleteZsh
        );
        assert!(kind(&["p"]).is_none());
        assert!(kind(&["p", "--listen", "x", "--generate", "man"]).is_none());
        for bad in [
            &["p", "--generate"][..],
            &["p", "--generate", "html"],
            &["p", "--generate", "man", "--listen", "x"],
            &["p", "--generate", "man", "extra"],
        ] {
            let err = kind(bad).unwrap().unwrap_err();
            assert_eq!(err.exit_code(), exit::USAGE, "{bad:?}: {err}");
        }
    }

    #[test]
    fn hinted_arguments_exist() {
        // A renamed argument would silently lose its completion hint.
        let ids: Vec<String> = programs()
            .into_iter()
            .flat_map(|(cmd, _)| {
                cmd.get_arguments()
                    .map(|a| a.get_id().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        for id in [
            "logfile",
            "listen",
            "serve",
            "qmp_servers",
            "target",
            "command",
        ] {
            assert!(ids.iter().any(|i| i == id), "no argument {id}");
        }
    }

    #[test]
    fn every_kind_for_every_program() {
        for (cmd, page) in programs() {
            for kind in Kind::value_variants() {
                let text = generated(*kind, cmd.clone(), page);
                let name = match kind {
                    Kind::Man => format!(".TH {} 1", page.name.to_uppercase()),
                    _ => page.name.to_string(),
                };
                assert!(text.contains(&name), "{kind:?} of {}", page.name);
                assert!(!text.contains(OPTION), "{kind:?} of {}", page.name);
            }
        }
    }

    #[test]
    fn man_page_has_the_sections() {
        let text = generated(Kind::Man, ShellArgs::command(), &manual::SHELL);
        for want in [
            ".TH QMP-SHELL 1",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH LIBVIRT",
            "\\-\\-read\\-only",
            "\\-\\-domain",
            ".SH COMMANDS",
            ".SH INTERRUPTING",
            ".SH \"EXIT STATUS\"",
            "QMP_SOCKET",
            "LIBVIRT_DEFAULT_URI",
            "QMP_SSH_COMMAND",
            "NO_COLOR",
            ".qmp\\-shell_history",
            ".SH EXAMPLES",
            VERSION,
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }

    #[test]
    fn exit_statuses_match_help() {
        // The statuses --help lists are those the page explains.
        for (cmd, page) in programs() {
            let help = cmd.clone().render_long_help().to_string();
            let section = page
                .sections
                .iter()
                .find(|s| s.title == "EXIT STATUS")
                .unwrap();
            let page_codes: Vec<&str> = section
                .blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Item(tag, _) => Some(*tag),
                    _ => None,
                })
                .collect();
            let status = &help[help.find("Exit status:").unwrap()..];
            let help_codes: Vec<&str> = status
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            assert_eq!(page_codes, help_codes, "{}", page.name);
        }
    }

    #[test]
    fn value_hints_reach_the_scripts() {
        let zsh = generated(Kind::CompleteZsh, ShellArgs::command(), &manual::SHELL);
        assert!(zsh.contains("_files"), "{zsh}");
        let fish = generated(Kind::CompleteFish, ShellArgs::command(), &manual::SHELL);
        for value in ["auto", "always", "never"] {
            assert!(fish.contains(value), "{fish}");
        }
    }
}
