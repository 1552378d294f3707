//! The parts of the manual pages that the command-line definitions do not
//! hold: the shorthand language, what Ctrl-C does, exit statuses, the
//! environment, files and examples. Written once here; each program's page
//! ([`Page`]) picks the sections that apply to it, and
//! [`generate`](crate::generate) renders them after the options that
//! `clap` describes.

/// One piece of a section.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    /// A paragraph of running text.
    Para(&'static str),
    /// A tagged paragraph: the tag (in bold) on its own line, then its text
    /// indented (`.TP`), as a definition list.
    Item(&'static str, &'static str),
    /// Literal lines (commands, sessions), shown as typed.
    Example(&'static str),
}

/// A section of a manual page: `.SH TITLE` and its blocks.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The heading, in capitals by convention (`EXIT STATUS`).
    pub title: &'static str,
    /// What the section says, in order.
    pub blocks: &'static [Block],
}

/// The manual page of one program: its name and the sections that follow
/// the options.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// The program (and page) name.
    pub name: &'static str,
    /// Sections after OPTIONS, in order.
    pub sections: &'static [Section],
}

use Block::{Example, Item, Para};

const SHORTHAND: Section = Section {
    title: "COMMANDS",
    blocks: &[
        Para("Each line is a command in a shorthand for QMP's JSON:"),
        Example("COMMAND [KEY=VALUE]..."),
        Para(
            "sends {\"execute\": COMMAND, \"arguments\": {KEY: VALUE, ...}}. A VALUE is \
             sent as:",
        ),
        Item(
            "a number",
            "when it is an integer (42, -7, 0_10; any size).",
        ),
        Item("a boolean", "for true or false, in any case."),
        Item(
            "JSON, or else a Python literal",
            "when it starts with { or [, e.g. {'a':True,'b':None}. A space ends the \
             value unless the whole value is in quotes.",
        ),
        Item(
            "a string without its quotes",
            "when it is in double quotes: command-line=\"info version\". Inside the \
             quotes a backslash makes the next character literal.",
        ),
        Item("a string as typed", "otherwise."),
        Para(
            "Dotted keys build nested objects: file.driver=file file.filename=a.img sends \
             {\"file\": {\"driver\": \"file\", \"filename\": \"a.img\"}}.",
        ),
        Para(
            "transaction( opens a transaction: each following line is an action, and ) \
             sends them all at once; transaction( ACTION ARGS... ) on one line is a \
             transaction of one action. A line that does not parse, or the end of input \
             before the ), abandons the whole transaction: nothing of it is sent. At the \
             TRANS> prompt, help lists the actions and help NAME describes one; a shell \
             command (/record runs, the others are refused) and a line starting with { \
             (refused) are not actions either, and the transaction stays open.",
        ),
        Para(
            "A line starting with { is raw JSON, read until its braces balance. help \
             lists the commands and help NAME describes a command or an event, from the \
             live QMP schema. Lines starting with # are comments. An empty line waits \
             for the replies before it and prints the events received since the last \
             one. With -H (HMP mode) each line is a human-monitor command, such as info \
             version.",
        ),
        Para(
            "Lines starting with / are the shell's own commands, in HMP mode too (where \
             /oob and /fd send their command as QMP); help / lists them:",
        ),
        Item(
            "/wait [--timeout=SECONDS] EVENT [KEY=VALUE...]",
            "Wait for an event named EVENT whose data has every KEY=VALUE, and print it. \
             An event counts when it came after the previous command was sent and no \
             earlier /wait returned it, so two /wait in a row return two events. On \
             timeout, a failed command.",
        ),
        Item(
            "/jobs [--timeout=SECONDS]",
            "Follow the jobs (query-jobs) and the migration (query-migrate) until none runs \
             on its own: progress bars at a terminal, a JSON line per change elsewhere. It \
             shows the jobs that exist when it starts or appear while it runs, with their \
             last real figures; Ctrl-C stops following (the jobs go on).",
        ),
        Item(
            "/record [--append] FILE, /record off",
            "Write what is sent from now on, each line as typed, to a new FILE (mode 0600), \
             a script that /play or a pipe runs again; what was not sent is kept only as \
             # not sent: comments. An existing FILE is never overwritten: /record FILE \
             refuses it and --append adds to it. A header of comments says when, which \
             QEMU, and whether the lines are HMP (-H) or guest agent (-N) commands. \
             Refused with several targets.",
        ),
        Item(
            "/play FILE",
            "Run the lines of FILE as if typed. A transaction or raw JSON message the file \
             leaves open ends with it, a failed command; a recording made in another mode \
             (HMP, guest agent) is refused.",
        ),
        Item(
            "/oob COMMAND [KEY=VALUE...]",
            "Send COMMAND out of band (exec-oob).",
        ),
        Item(
            "/fd [--read-only] PATH COMMAND [KEY=VALUE...]",
            "Open PATH (read-only, or read-write and created with mode 0600 if missing) and \
             send COMMAND with the descriptor attached (getfd, add-fd); UNIX sockets only.",
        ),
        Para(
            "On a pipe, commands are sent as soon as they are read, and replies are \
             printed in input order. At a terminal, Tab completes command names, \
             arguments and values from the live schema, and events appear as they \
             arrive, among the replies in the order QEMU sent them.",
        ),
    ],
};

const CTRL_C: Section = Section {
    title: "INTERRUPTING",
    blocks: &[
        Para(
            "At a terminal, Ctrl-C stops what is going on and never ends the session by accident:",
        ),
        Item(
            "at the prompt",
            "clears the line; twice within a second on an empty line, exits.",
        ),
        Item(
            "at a TRANS> prompt",
            "abandons the transaction; none of its actions is sent.",
        ),
        Item(
            "while a reply is awaited",
            "stops waiting and returns to the prompt; a late reply is printed as such. \
             Nothing typed or pasted before Ctrl-C is sent: the lines not run yet are \
             dropped (and counted).",
        ),
        Item("during /jobs", "stops following; the jobs go on."),
        Para(
            "Ctrl-C never reaches QEMU. Ctrl-D exits; inside a transaction it is an \
             error and the transaction is not sent. On a pipe or with -c, SIGINT ends \
             the session (exit status 130), as SIGTERM and SIGHUP do everywhere.",
        ),
    ],
};

const SHELL_EXIT: Section = Section {
    title: "EXIT STATUS",
    blocks: &[
        Item("0", "End of input; every command was sent and answered."),
        Item(
            "1",
            "Could not connect, the server went away, no reply within --timeout, the \
             server broke the protocol, or standard output could not be written.",
        ),
        Item("2", "Command-line usage error."),
        Item(
            "3",
            "With -c or --exit-status: at least one command got an error reply or could \
             not be parsed.",
        ),
        Item(
            "128+N",
            "Ended by signal N: SIGHUP 129, SIGTERM 143, SIGINT 130 (on a pipe).",
        ),
        Para(
            "With several targets: 1 if any could not be reached or went away, else 3 \
             if any command failed anywhere, else 0.",
        ),
    ],
};

const PROXY_EXIT: Section = Section {
    title: "EXIT STATUS",
    blocks: &[
        Item(
            "1",
            "Could not connect to TARGET, could not listen on PATH, or TARGET went away.",
        ),
        Item("2", "Command-line usage error."),
        Item(
            "128+N",
            "Ended by signal N: SIGINT 130, SIGHUP 129, SIGTERM 143.",
        ),
        Para("The socket PATH is removed in every case."),
    ],
};

const ENV_QMP_SOCKET: Block = Item(
    "QMP_SOCKET",
    "The server's address when none is given on the command line; empty counts as unset.",
);
const ENV_LIBVIRT: Block = Item(
    "LIBVIRT_DEFAULT_URI",
    "The libvirt URI for --domain, --all-domains and --list when --connect is not \
     given (else qemu:///system).",
);
const ENV_SSH: Block = Item(
    "QMP_SSH_COMMAND",
    "Replaces the ssh program and its leading options for ssh:// addresses, split like \
     a shell command line, e.g. QMP_SSH_COMMAND='ssh -F ~/vm-hosts.conf'.",
);
const ENV_NO_COLOR: Block = Item(
    "NO_COLOR",
    "When set and not empty, --color=auto does not colour.",
);
const ENV_CACHE: Block = Item(
    "XDG_CACHE_HOME, HOME",
    "Where the schema cache and the history file live (see FILES).",
);

const FILE_HISTORY: Block = Item(
    "~/.qmp-shell_history",
    "Command history at a terminal, shared with the Python qmp-shell; mode 0600. A \
     line starting with a space is not saved.",
);
const FILE_CACHE: Block = Item(
    "$XDG_CACHE_HOME/qmp-shell/ (else ~/.cache/qmp-shell/)",
    "What the deprecation warnings need from each QEMU's schema (directory 0700, files \
     0600).",
);
const FILE_LOG: Block = Item(
    "LOGFILE (-l)",
    "Every QMP message sent and received, as JSON lines, written as they happen; \
     appended to, never truncated (an audit trail), created with mode 0600. It may \
     hold secrets passed to commands.",
);

const SHELL_ENV: Section = Section {
    title: "ENVIRONMENT",
    blocks: &[
        ENV_QMP_SOCKET,
        ENV_LIBVIRT,
        ENV_SSH,
        ENV_NO_COLOR,
        ENV_CACHE,
    ],
};

const WRAP_ENV: Section = Section {
    title: "ENVIRONMENT",
    blocks: &[ENV_NO_COLOR, ENV_CACHE],
};

const PROXY_ENV: Section = Section {
    title: "ENVIRONMENT",
    blocks: &[ENV_SSH],
};

const SHELL_FILES: Section = Section {
    title: "FILES",
    blocks: &[FILE_HISTORY, FILE_CACHE, FILE_LOG],
};

const PROXY_FILES: Section = Section {
    title: "FILES",
    blocks: &[
        FILE_LOG,
        Item(
            "PATH (--listen)",
            "The clients' socket, created with mode 0600, never over an existing file \
             but a dead socket, and removed on exit. Whoever can open it controls the VM.",
        ),
    ],
};

const SHELL_EXAMPLES: Section = Section {
    title: "EXAMPLES",
    blocks: &[
        Para("Start QEMU with a QMP socket and attach:"),
        Example(
            "qemu-system-x86_64 -M none -display none \\\n    \
             -qmp unix:/tmp/qmp.sock,server=on,wait=off &\nqmp-shell /tmp/qmp.sock",
        ),
        Para("Run commands from a script and exit; exit status 3 if one failed:"),
        Example(
            "qmp-shell /tmp/qmp.sock -c query-status \\\n    \
             -c 'qom-get path=/machine property=type'\n\
             qmp-shell --json /tmp/qmp.sock < commands.txt > replies.jsonl",
        ),
        Para("Look at a VM that libvirt runs, without being able to change it:"),
        Example("qmp-shell --list\nqmp-shell --read-only --domain vm1"),
        Para("The same commands on many VMs at once, and on a remote socket:"),
        Example(
            "qmp-shell -c query-status /run/qemu/*.sock\n\
             qmp-shell ssh://root@vmhost/run/vm1/qmp.sock",
        ),
        Para("Talk to a guest agent:"),
        Example("qmp-shell -N /tmp/qga.sock"),
    ],
};

const WRAP_EXAMPLES: Section = Section {
    title: "EXAMPLES",
    blocks: &[
        Para("A throwaway QEMU, stopped and cleaned up when the shell ends:"),
        Example("qmp-shell-wrap qemu-system-x86_64 -M none -display none"),
        Para("One command, then exit; and a QEMU other clients can attach to meanwhile:"),
        Example(
            "qmp-shell-wrap -c query-version -- qemu-system-x86_64 -M none\n\
             qmp-shell-wrap --serve /tmp/shared.sock qemu-system-x86_64 -M none",
        ),
    ],
};

const PROXY_EXAMPLES: Section = Section {
    title: "EXAMPLES",
    blocks: &[
        Para("Share a VM's monitor between a person and a script:"),
        Example(
            "qmp-proxy --listen /tmp/shared.sock /tmp/qmp.sock &\n\
             qmp-shell /tmp/shared.sock\n\
             qmp-shell --json /tmp/shared.sock < checks.txt",
        ),
        Para("Share a remote socket locally:"),
        Example("qmp-proxy --listen /tmp/vm1.sock ssh://vmhost/run/vm1/qmp.sock"),
    ],
};

const SEE_ALSO: Section = Section {
    title: "SEE ALSO",
    blocks: &[Para(
        "qmp-shell(1), qmp-shell-wrap(1), qmp-proxy(1), qmp-mcp(1), \
         qemu-system-x86_64(1), virsh(1); the QEMU QMP reference manual.",
    )],
};

/// `qmp-shell(1)`.
pub(crate) const SHELL: Page = Page {
    name: "qmp-shell",
    sections: &[
        SHORTHAND,
        CTRL_C,
        SHELL_EXIT,
        SHELL_ENV,
        SHELL_FILES,
        SHELL_EXAMPLES,
        SEE_ALSO,
    ],
};

/// `qmp-shell-wrap(1)`.
pub(crate) const WRAP: Page = Page {
    name: "qmp-shell-wrap",
    sections: &[
        SHORTHAND,
        CTRL_C,
        SHELL_EXIT,
        WRAP_ENV,
        SHELL_FILES,
        WRAP_EXAMPLES,
        SEE_ALSO,
    ],
};

/// `qmp-proxy(1)`.
pub(crate) const PROXY: Page = Page {
    name: "qmp-proxy",
    sections: &[PROXY_EXIT, PROXY_ENV, PROXY_FILES, PROXY_EXAMPLES, SEE_ALSO],
};
