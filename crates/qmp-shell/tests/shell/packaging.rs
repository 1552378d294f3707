//! What packagers take from the programs: `--version` (the crate's version
//! and the commit, the same for every program), and `--generate KIND`: the
//! manual pages, rendered by the real `man`, and the completion scripts,
//! run by the real bash and fish (and parsed by zsh); and that the shell's
//! commands and options are described alike in `help`, the manual page and
//! the README.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = SHELL_TIMEOUT;

/// The three programs: name and binary.
fn programs() -> [(&'static str, PathBuf); 3] {
    [
        ("qmp-shell", ours()),
        ("qmp-shell-wrap", ours_wrap()),
        ("qmp-proxy", PathBuf::from(env!("CARGO_BIN_EXE_qmp-proxy"))),
    ]
}

fn ok_stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
    text(&out.stdout)
}

/// `bin --generate kind`, written to `dir/file`; its path.
fn generated(bin: &Path, kind: &str, dir: &Path, file: &str) -> PathBuf {
    let out = run_shell(bin, &["--generate", kind], "", T);
    let path = dir.join(file);
    std::fs::write(&path, ok_stdout(&out)).unwrap();
    path
}

/// Run `cmd` with `args`, nothing on standard input, killed after T.
fn run(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(cmd);
    command.stdin(Stdio::null());
    run_program_env(command, args, "", T, env)
}

#[test]
fn version_is_the_crates_and_the_commit_for_every_program() {
    // This test runs inside the git checkout the binaries were built from.
    let git = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    assert!(git.status.success(), "{}", show(&git));
    let rev = text(&git.stdout).trim().to_string();
    let want = format!("{} (rev {rev})", env!("CARGO_PKG_VERSION"));
    for (name, bin) in programs() {
        let out = run_shell(&bin, &["--version"], "", T);
        assert_eq!(ok_stdout(&out), format!("{name} {want}\n"), "{name}");
        let out = run_shell(&bin, &["-V"], "", T);
        assert_eq!(ok_stdout(&out), format!("{name} {want}\n"), "{name} -V");
    }
}

#[test]
fn programs_load_no_maths_library() {
    // Every start would map libm.so.6 (340 KiB resident) for the one
    // function the programs call from it (`pow`, which they define).
    for (name, bin) in programs() {
        let out = run("readelf", &["-d", bin.to_str().unwrap()], &[]);
        let dynamic = ok_stdout(&out);
        let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert!(!needed.is_empty(), "{name}: {dynamic}");
        assert!(
            !needed.iter().any(|l| l.contains("libm.so")),
            "{name}: {needed:?}"
        );
    }
}

#[test]
fn man_renders_every_page_with_name_and_options() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bin) in programs() {
        let page = generated(&bin, "man", dir.path(), &format!("{name}.1"));
        let page = page.to_str().unwrap();
        let out = run(
            "man",
            &["-l", page],
            &[
                ("MANPAGER", "cat"),
                ("MANWIDTH", "100"),
                ("LANG", "C.UTF-8"),
            ],
        );
        let shown = ok_stdout(&out);
        assert!(
            shown
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} - "))),
            "{name}: no NAME line:\n{shown}"
        );
        let mut want = vec!["NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "EXAMPLES"];
        match name {
            "qmp-shell" => want.extend([
                "--domain",
                "--read-only",
                "--connect",
                "COMMANDS",
                "INTERRUPTING",
                "QMP_SOCKET",
                "LIBVIRT_DEFAULT_URI",
                "QMP_SSH_COMMAND",
                "NO_COLOR",
                "~/.qmp-shell_history",
            ]),
            "qmp-shell-wrap" => want.extend(["--read-only", "--serve", "COMMANDS"]),
            _ => want.extend(["--listen", "--max-clients", "QMP_SSH_COMMAND"]),
        }
        for word in want {
            assert!(shown.contains(word), "{name}: no {word:?} in\n{shown}");
        }
        // groff warns about what it cannot lay out.
        assert_eq!(text(&out.stderr), "", "{name}: {}", show(&out));
    }
}

/// What bash's completion offers for `words` (the last one being
/// completed), with the program's generated script loaded as bash does.
fn bash_completes(script: &Path, program: &str, words: &[&str]) -> Vec<String> {
    // bash -c SCRIPT bash FILE WORDS...
    let program_script = format!(
        r#"
source "$1" || exit 9
spec=$(complete -p {program}) || exit 8
fn=${{spec#*-F }}; fn=${{fn%% *}}
COMP_WORDS=("${{@:2}}"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
"$fn" {program} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#
    );
    let mut args = vec!["--norc", "--noprofile", "-c", &program_script, "bash"];
    args.push(script.to_str().unwrap());
    args.extend(words);
    let out = run("bash", &args, &[]);
    ok_stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_options_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let [(_, shell), (_, wrap), (_, proxy)] = programs();
    let script = generated(&shell, "complete-bash", dir.path(), "qmp-shell");
    let got = bash_completes(&script, "qmp-shell", &["qmp-shell", "--read"]);
    assert_eq!(got, ["--read-only"]);
    let got = bash_completes(&script, "qmp-shell", &["qmp-shell", "--color", ""]);
    assert_eq!(got, ["auto", "always", "never"]);
    // -l completes file names.
    std::fs::write(dir.path().join("session.log"), "").unwrap();
    let partial = format!("{}/sess", dir.path().display());
    let got = bash_completes(&script, "qmp-shell", &["qmp-shell", "-l", &partial]);
    assert_eq!(got, [format!("{}/session.log", dir.path().display())]);

    let script = generated(&wrap, "complete-bash", dir.path(), "qmp-shell-wrap");
    let got = bash_completes(&script, "qmp-shell-wrap", &["qmp-shell-wrap", "--ser"]);
    assert_eq!(got, ["--serve"]);
    let script = generated(&proxy, "complete-bash", dir.path(), "qmp-proxy");
    let got = bash_completes(&script, "qmp-proxy", &["qmp-proxy", "--lis"]);
    assert_eq!(got, ["--listen"]);
}

#[test]
fn fish_completes_and_zsh_parses() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bin) in programs() {
        let fish = generated(&bin, "complete-fish", dir.path(), &format!("{name}.fish"));
        let zsh = generated(&bin, "complete-zsh", dir.path(), &format!("_{name}"));
        let out = run("zsh", &["-n", zsh.to_str().unwrap()], &[]);
        ok_stdout(&out);
        assert_eq!(text(&out.stderr), "", "{name}: {}", show(&out));
        let out = run("fish", &["--no-execute", fish.to_str().unwrap()], &[]);
        ok_stdout(&out);
        let script = format!(
            "source {}; complete --do-complete '{name} --ti'",
            fish.display()
        );
        let out = run("fish", &["--no-config", "-c", &script], &[]);
        let got = ok_stdout(&out);
        assert!(got.starts_with("--timeout\t"), "{name}: {got:?}");
    }
    let fish = dir.path().join("qmp-shell.fish");
    let script = format!(
        "source {}; complete --do-complete 'qmp-shell --color '",
        fish.display()
    );
    let got = ok_stdout(&run("fish", &["--no-config", "-c", &script], &[]));
    let mut values: Vec<&str> = got.lines().map(|l| l.split('\t').next().unwrap()).collect();
    values.sort();
    assert_eq!(values, ["always", "auto", "never"], "{got:?}");
}

#[test]
fn generate_takes_nothing_else() {
    for (name, bin) in programs() {
        for args in [
            &["--generate", "html"][..],
            &["--generate"],
            &["--generate", "man", "--help"],
        ] {
            let out = run_shell(&bin, args, "", T);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name} {args:?}: {}",
                show(&out)
            );
            assert_eq!(text(&out.stdout), "", "{name} {args:?}");
            assert!(
                text(&out.stderr).starts_with("error: "),
                "{name} {args:?}: {}",
                show(&out)
            );
        }
    }
    // $QMP_SOCKET, which gives qmp-shell an address, does not get in the way.
    let out = run_shell_env(
        &ours(),
        &["--generate", "complete-bash"],
        "",
        T,
        &[("QMP_SOCKET", "/nonexistent/qmp.sock")],
    );
    assert!(ok_stdout(&out).contains("complete -F"));
}

/// The shell's own commands are described alike wherever they are: every
/// command the parser knows (`meta::NAMES`) has a usage line in what
/// `help /` prints (asked of a real QEMU), and that usage, the command with
/// its options and arguments word for word, is in the manual page and in
/// the README's table of shell commands, which lists no command the
/// parser does not know. Every long option of `qmp-shell --help` is in the
/// README too (the manual page's options come from the same definitions
/// as `--help`). Cheap, and it fails on the drift that let the manual's
/// `/record` lose `--append`.
#[test]
fn shell_commands_and_options_are_described_alike_everywhere() {
    use qmp_shell::meta::{NAMES, USAGE};
    let peer = Peer::qemu_none();
    let out = run_shell(&ours(), &["-c", "help /", peer.socket_str()], "", T);
    let help = ok_stdout(&out);
    assert_eq!(help, USAGE);
    // "  /play FILE        run ..." -> "/play FILE"
    let usages: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  /").map(|_| l.trim_start()))
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    let named: Vec<&str> = usages
        .iter()
        .map(|u| u.split(' ').next().unwrap())
        .collect();
    let mut sorted = named.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, NAMES, "help / and the parser's commands differ");
    let man = ok_stdout(&run_shell(&ours(), &["--generate", "man"], "", T)).replace("\\-", "-");
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    for usage in &usages {
        assert!(
            man.contains(&format!("\\fB{usage}")),
            "the manual page has no {usage:?}"
        );
        assert!(
            readme.contains(&format!("| `{usage}` |")),
            "the README's table has no {usage:?}"
        );
    }
    for row in readme.lines().filter(|l| l.starts_with("| `/")) {
        let name = row[3..].split([' ', '`']).next().unwrap();
        assert!(
            NAMES.contains(&name),
            "the README lists {name}, which the parser does not know"
        );
    }
    let help = ok_stdout(&run_shell(&ours(), &["--help"], "", T));
    for line in help.lines() {
        let line = line.trim_start();
        let line = line.split_once(", ").map_or(line, |(short, long)| {
            if short.len() == 2 && short.starts_with('-') {
                long
            } else {
                line
            }
        });
        let Some(option) = line.strip_prefix("--") else {
            continue;
        };
        let name = option.split([' ', '<']).next().unwrap();
        if name == "help" {
            continue;
        }
        assert!(
            readme.contains(&format!("`--{name}")),
            "--{name} of qmp-shell --help is not in the README"
        );
    }
}
