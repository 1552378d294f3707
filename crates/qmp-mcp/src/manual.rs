//! The parts of `qmp-mcp(1)` that the command-line definitions do not hold:
//! the tools, the safety model, exit statuses, the environment and
//! examples. Rendered by qmp-shell's generator (`qmp-mcp --generate man`)
//! after the options that `clap` describes.

use qmp_shell::manual::{Block, Page, Section};

use Block::{Example, Item, Para};

const TOOLS: Section = Section {
    title: "TOOLS",
    blocks: &[
        Para(
            "An MCP client (an AI agent's host) starts qmp-mcp and talks to it on standard \
             input and output. The tools it offers:",
        ),
        Item(
            "targets",
            "the configured targets, each with its state and QEMU version.",
        ),
        Item(
            "describe {name}",
            "the schema help of a command or event (what `help NAME` prints in qmp-shell), \
             or the command names starting with a prefix.",
        ),
        Item(
            "execute {command, arguments?, target?}",
            "one QMP command; the reply as JSON text; a QMP error is an error result with \
             QEMU's class and desc; deprecation and unstable warnings come with the result.",
        ),
        Item("hmp {command_line, target?}", "a human-monitor command."),
        Item(
            "wait_event {event, match?, timeout, target?}",
            "the next such event (the wait is bounded).",
        ),
        Item(
            "jobs {target?}",
            "the block and migration jobs, with their progress.",
        ),
        Para("target may be left out when there is one target."),
    ],
};

const SAFETY: Section = Section {
    title: "SAFETY",
    blocks: &[
        Para(
            "Read-only by default: only what cannot change a VM is sent, with the allow-list \
             of qmp-shell --read-only (query-*, x-query-*, QOM reads, human-monitor-command \
             and hmp lines starting with info; guest-info, guest-ping and guest-get-* for a \
             guest agent). Anything else is an error result and is never sent. The list \
             gates command names (and HMP lines by their first word), not arguments.",
        ),
        Para(
            "--allow-writes lets every command through: the agent can then stop, reset or \
             destroy VMs, read their memory and add devices, as anyone on the VM's QMP \
             socket can. Out-of-band commands and file descriptors are not offered.",
        ),
    ],
};

const EXIT: Section = Section {
    title: "EXIT STATUS",
    blocks: &[
        Item("0", "the client closed standard input."),
        Item(
            "1",
            "the server could not start (standard output closed, say).",
        ),
        Item("2", "command-line usage error."),
        Item(
            "128+N",
            "ended by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129).",
        ),
        Para(
            "A target that cannot be reached does not stop the server: the tools say so, \
             and the next use tries again.",
        ),
    ],
};

const ENV: Section = Section {
    title: "ENVIRONMENT",
    blocks: &[
        Item("QMP_SOCKET", "the address used when none is given."),
        Item(
            "LIBVIRT_DEFAULT_URI",
            "the libvirt URI for --domain and --all-domains when --connect is not given \
             (else qemu:///system).",
        ),
        Item(
            "QMP_SSH_COMMAND",
            "replaces the ssh program and its leading options for ssh:// addresses.",
        ),
    ],
};

const EXAMPLES: Section = Section {
    title: "EXAMPLES",
    blocks: &[
        Para("In an MCP client's configuration (the command/args form most clients use):"),
        Example(
            "{\"mcpServers\": {\"qemu\": {\"command\": \"qmp-mcp\",\n\
             \x20                           \"args\": [\"--domain\", \"vm1\"]}}}",
        ),
        Para("Try it with the MCP Inspector's command-line client:"),
        Example(
            "npx @modelcontextprotocol/inspector --cli qmp-mcp /tmp/qmp.sock \\\n\
             \x20   --method tools/call --tool-name execute --tool-arg command=query-status",
        ),
    ],
};

const SEE_ALSO: Section = Section {
    title: "SEE ALSO",
    blocks: &[Para(
        "qmp-shell(1), qmp-proxy(1), qemu-system-x86_64(1), virsh(1); the Model Context \
         Protocol specification.",
    )],
};

/// `qmp-mcp(1)`.
pub const PAGE: Page = Page {
    name: "qmp-mcp",
    sections: &[TOOLS, SAFETY, EXIT, ENV, EXAMPLES, SEE_ALSO],
};
