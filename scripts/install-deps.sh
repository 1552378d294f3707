#!/usr/bin/env bash
# Install the real peers and the reference implementation used by the test
# suite and the benchmarks.  Idempotent: installs only what is missing.
# Meant for Debian/Ubuntu, run as root (CI runs it on a fresh machine).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    fi
fi

# "command-to-check package" pairs: a command found on PATH (or an absolute
# path that must be executable, or file:PATH, a file that must exist) and
# the Debian package that provides it.
CHECKS=(
    "qemu-system-x86_64 qemu-system-x86"
    "qemu-storage-daemon qemu-system-x86"
    "qemu-ga qemu-guest-agent"
    "socat socat"
    "hyperfine hyperfine"
    "/usr/bin/time time"
    "tmux tmux"
    "ssh openssh-client"
    "ssh-keygen openssh-client"
    "/usr/sbin/sshd openssh-server"
    "virsh libvirt-clients"
    "libvirtd libvirt-daemon"
    "virtlogd libvirt-daemon"
    # qemu+ssh:// URIs run it on the remote side (else they fall back to nc)
    "virt-ssh-helper libvirt-daemon"
    "driver:qemu libvirt-daemon-driver-qemu"
    "lib:libvirt.so.0 libvirt0"
    "lib:libvirt-qemu.so.0 libvirt0"
    # Node and npm, for the MCP Inspector that tests qmp-mcp (below)
    "node nodejs"
    "npm npm"
    # scripts/package.sh and scripts/check-package.sh: packing the .deb
    # (dpkg-shlibdeps finds its Depends), unpacking and reading it, and
    # using what it installs as a user would
    "dpkg-deb dpkg"
    "dpkg-shlibdeps dpkg-dev"
    "objdump binutils"
    "readelf binutils"
    "strip binutils"
    "gzip gzip"
    "man man-db"
    "file:/usr/share/bash-completion/bash_completion bash-completion"
    "zsh zsh"
    "fish fish"
    "unshare util-linux"
    "git git"
)

# A shared library in the loader's cache (lib:NAME), or one of libvirt's
# connection drivers (driver:NAME).
find_lib() {
    /sbin/ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'
}
find_driver() {
    local f
    for f in /usr/lib/*/libvirt/connection-driver/libvirt_driver_"$1".so \
             /usr/lib*/libvirt/connection-driver/libvirt_driver_"$1".so; do
        if [ -e "$f" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

have() {
    case "$1" in
        lib:*) [ -n "$(find_lib "${1#lib:}")" ] ;;
        driver:*) find_driver "${1#driver:}" >/dev/null ;;
        file:*) [ -f "${1#file:}" ] ;;
        /*) [ -x "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
    esac
}

where() {
    case "$1" in
        lib:*) find_lib "${1#lib:}" ;;
        driver:*) find_driver "${1#driver:}" ;;
        file:*) echo "${1#file:}" ;;
        /*) echo "$1" ;;
        *) command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || echo "/sbin/$1" ;;
    esac
}

# Packages to install, each once.
missing=()
add_pkg() {
    case " ${missing[*]-} " in
        *" $1 "*) ;;
        *) missing+=("$1") ;;
    esac
}

for pair in "${CHECKS[@]}"; do
    cmd=${pair%% *}
    pkg=${pair##* }
    if have "$cmd"; then
        echo "install-deps: $cmd: ok ($(where "$cmd"))"
    else
        echo "install-deps: $cmd: missing, will install package $pkg"
        add_pkg "$pkg"
    fi
done

# The reference implementation (Python qemu.qmp 0.0.6) needs python3 and,
# when it is not installed yet, pip. It is the module qemu.qmp.qmp_shell run
# by this interpreter (docs/compatibility.md), never a `qmp-shell` on PATH,
# which may be ours (`cargo install`).
PYTHON=${PYTHON:-python3}
REF_VERSION=0.0.6
# The version of the qemu.qmp distribution whose qmp_shell module $PYTHON
# imports in isolated mode (-I, as the tests run it); empty if none.
ref_version() {
    "$PYTHON" -I -c 'import importlib.metadata as m, qemu.qmp.qmp_shell; print(m.version("qemu.qmp"))' 2>/dev/null || true
}
need_reference=0
if [ -z "$(ref_version)" ]; then
    need_reference=1
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install-deps: $PYTHON: missing, will install package python3"
    add_pkg python3
    add_pkg python3-pip
elif [ "$need_reference" = 1 ] && ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "install-deps: $PYTHON -m pip: missing, will install package python3-pip"
    add_pkg python3-pip
else
    echo "install-deps: $PYTHON: ok ($(command -v "$PYTHON"))"
fi

# scripts/package.sh and check-package.sh make venvs with this Python (the
# wheel's tools; a fresh venv for the wheel): Debian's python3 needs
# python3-venv for that.
if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "install-deps: $PYTHON -m venv: missing, will install package python3-venv"
    add_pkg python3-venv
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: ERROR: apt-get not found; install these packages by hand: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: apt-get update"
    $SUDO apt-get update
    echo "install-deps: apt-get install ${missing[*]}"
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    for pair in "${CHECKS[@]}"; do
        cmd=${pair%% *}
        if ! have "$cmd"; then
            echo "install-deps: ERROR: $cmd still missing after installing ${pair##* }" >&2
            exit 1
        fi
    done
fi

# sshd refuses to start without its privilege-separation directory, which
# the package's init script would create (there is no init here);
# the sshd test harness also creates it.
if [ -x /usr/sbin/sshd ] && [ ! -d /run/sshd ]; then
    $SUDO mkdir -p /run/sshd
fi

# The reference implementation: Python qemu.qmp 0.0.6.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install-deps: ERROR: $PYTHON not found (needed for the reference qmp-shell)" >&2
    exit 1
fi

v=$(ref_version)
if [ -n "$v" ]; then
    echo "install-deps: reference qemu.qmp: found version $v"
else
    echo "install-deps: reference qemu.qmp: missing, running pip install qemu.qmp==$REF_VERSION"
    pip_log=$(mktemp)
    if ! "$PYTHON" -m pip install "qemu.qmp==$REF_VERSION" 2>&1 | tee "$pip_log"; then
        if grep -q externally-managed-environment "$pip_log"; then
            # Debian 12+ system Python (PEP 668): this machine is a test
            # machine, install next to the system packages anyway.
            echo "install-deps: system Python is externally managed; retrying with --break-system-packages"
            "$PYTHON" -m pip install --break-system-packages "qemu.qmp==$REF_VERSION"
        else
            rm -f "$pip_log"
            echo "install-deps: ERROR: pip install qemu.qmp==$REF_VERSION failed" >&2
            exit 1
        fi
    fi
    rm -f "$pip_log"
    v=$(ref_version)
fi

if [ "$v" != "$REF_VERSION" ]; then
    if [ -z "$v" ]; then
        echo "install-deps: ERROR: $PYTHON -I cannot import qemu.qmp.qmp_shell after pip install" >&2
        echo "install-deps:        (a --user install is invisible to it: install system-wide or in a venv," >&2
        echo "install-deps:        and point PYTHON, and QMP_REFERENCE_PYTHON for the tests, at that Python)" >&2
    else
        echo "install-deps: ERROR: $PYTHON has qemu.qmp $v; the tests and benchmarks need exactly $REF_VERSION" >&2
        echo "install-deps:        to fix: $PYTHON -m pip install qemu.qmp==$REF_VERSION" >&2
    fi
    exit 1
fi

# The same checks the tests make (crates/qmp-shell/tests/shell/common/mod.rs):
# the module is the file the distribution installed, unchanged from the
# release (its SHA-256 as listed in the 0.0.6 wheel's RECORD), and the entry
# points are the expected ones. Prints the interpreter to use.
if ! REF_PYTHON=$("$PYTHON" -I - <<'PY'
import base64, hashlib, importlib.metadata as m, os, sys
import qemu.qmp.qmp_shell as s
d = m.distribution("qemu.qmp")
f = os.path.realpath(s.__file__)
problems = []
if not any(os.path.realpath(d.locate_file(p)) == f for p in (d.files or [])):
    problems.append(f"{f} was not installed by the qemu.qmp distribution")
with open(f, "rb") as fh:
    digest = base64.urlsafe_b64encode(hashlib.sha256(fh.read()).digest()).rstrip(b"=").decode()
if digest != "D8J4WA4F-dVcrLBIRbs5TBonj_Ha45Ryg5lZUOmYcZo":
    problems.append(f"{f} is not the file released in qemu.qmp 0.0.6 (sha256 {digest})")
eps = {e.name: e.value for e in d.entry_points if e.group == "console_scripts"}
for name, value in [("qmp-shell", "qemu.qmp.qmp_shell:main"),
                    ("qmp-shell-wrap", "qemu.qmp.qmp_shell:main_wrap")]:
    if eps.get(name) != value:
        problems.append(f"entry point {name} is {eps.get(name)!r}, not {value!r}")
for p in problems:
    print("install-deps: ERROR: reference: " + p, file=sys.stderr)
if problems:
    sys.exit(1)
print(sys.executable)
PY
); then
    echo "install-deps: ERROR: the reference is not an intact qemu.qmp $REF_VERSION; reinstall it:" >&2
    echo "install-deps:        $PYTHON -m pip install --force-reinstall qemu.qmp==$REF_VERSION" >&2
    exit 1
fi
echo "install-deps: reference qemu.qmp $REF_VERSION: ok ($REF_PYTHON -I, module qemu.qmp.qmp_shell, entry points main and main_wrap)"

# libvirt, for `--domain`: libvirtd and virtlogd run as background daemons
# (no systemd needed). QEMU runs as root with no namespaces, cgroups or
# ownership changes, which is what works in containers; these settings must
# be in qemu.conf before libvirtd reads it.
QEMU_CONF=/etc/libvirt/qemu.conf
QEMU_CONF_SETTINGS=(
    'user = "root"'
    'group = "root"'
    'dynamic_ownership = 0'
    'remember_owner = 0'
    'namespaces = []'
    'cgroup_controllers = []'
)
LIBVIRT_URI=qemu:///system

# The pid of a running daemon (pgrep -x matches the process name exactly).
daemon_pid() {
    pgrep -x "$1" 2>/dev/null | head -n 1 || true
}

# Seconds since the epoch at which process $1 started.
started_at() {
    local elapsed
    elapsed=$(ps -o etimes= -p "$1" 2>/dev/null | tr -d ' ')
    [ -n "$elapsed" ] && echo $(( $(date +%s) - elapsed ))
}

qemu_conf_ok() {
    local line
    $SUDO test -f "$QEMU_CONF" || return 1
    for line in "${QEMU_CONF_SETTINGS[@]}"; do
        $SUDO grep -qxF "$line" "$QEMU_CONF" || return 1
    done
}

if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "install-deps: ERROR: configuring and starting libvirtd needs root or sudo" >&2
    exit 1
fi

if qemu_conf_ok; then
    echo "install-deps: $QEMU_CONF: ok"
else
    echo "install-deps: $QEMU_CONF: adding the settings QEMU needs here (user root, no namespaces or cgroups)"
    {
        echo ""
        echo "# Added by qmp-shell's scripts/install-deps.sh (see shared PEERS.md)."
        printf '%s\n' "${QEMU_CONF_SETTINGS[@]}"
    } | $SUDO tee -a "$QEMU_CONF" >/dev/null
fi

if ! id libvirt-qemu >/dev/null 2>&1; then
    echo "install-deps: adding system user libvirt-qemu"
    $SUDO useradd -r -M libvirt-qemu
fi
$SUDO mkdir -p /var/log/libvirt

# libvirtd reads qemu.conf only when it starts: restart one that started
# before the file last changed.
pid=$(daemon_pid libvirtd)
if [ -n "$pid" ]; then
    since=$(started_at "$pid" || true)
    changed=$(stat -c %Y "$QEMU_CONF")
    if [ -z "$since" ] || [ "$changed" -gt "$since" ]; then
        echo "install-deps: libvirtd (pid $pid) started before $QEMU_CONF changed: restarting it"
        $SUDO kill "$pid"
        for _ in $(seq 1 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then
            echo "install-deps: ERROR: libvirtd (pid $pid) did not stop within 10 s" >&2
            exit 1
        fi
    else
        echo "install-deps: libvirtd: running (pid $pid)"
    fi
fi

if [ -z "$(daemon_pid virtlogd)" ]; then
    echo "install-deps: starting virtlogd"
    $SUDO "$(where virtlogd)" -d
fi
if [ -z "$(daemon_pid libvirtd)" ]; then
    echo "install-deps: starting libvirtd"
    $SUDO "$(where libvirtd)" -d
fi

# libvirtd takes a moment to open its sockets.
deadline=$(( $(date +%s) + 30 ))
until virsh_out=$($SUDO virsh -c "$LIBVIRT_URI" list 2>&1); do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "install-deps: ERROR: libvirtd does not answer on $LIBVIRT_URI after 30 s: $virsh_out" >&2
        echo "install-deps:        see /var/log/libvirt/ and try: libvirtd --verbose (in the foreground)" >&2
        exit 1
    fi
    sleep 0.2
done
echo "install-deps: libvirtd: answering on $LIBVIRT_URI (pid $(daemon_pid libvirtd))"

# The MCP Inspector's CLI, a real MCP client that the qmp-mcp tests drive
# (crates/qmp-mcp/tests), pinned, in a private prefix at the fixed place the
# tests look (they fail, never skip, when it is missing). Its SDK client
# also runs the tests' multi-call sessions.
INSPECTOR_VERSION=0.17.5
INSPECTOR_PREFIX=/opt/qmp-shell-tests/mcp-inspector-$INSPECTOR_VERSION
INSPECTOR_BIN=$INSPECTOR_PREFIX/node_modules/.bin/mcp-inspector
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
    echo "install-deps: ERROR: node $(node --version 2>/dev/null) is too old for the MCP Inspector (18 or later)" >&2
    exit 1
fi
if [ -x "$INSPECTOR_BIN" ]; then
    echo "install-deps: MCP Inspector $INSPECTOR_VERSION: ok ($INSPECTOR_BIN)"
else
    echo "install-deps: MCP Inspector $INSPECTOR_VERSION: missing, running npm install into $INSPECTOR_PREFIX"
    $SUDO mkdir -p "$INSPECTOR_PREFIX"
    $SUDO npm install --prefix "$INSPECTOR_PREFIX" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/inspector@$INSPECTOR_VERSION"
    if [ ! -x "$INSPECTOR_BIN" ]; then
        echo "install-deps: ERROR: $INSPECTOR_BIN missing after npm install" >&2
        exit 1
    fi
fi
