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
# path that must exist) and the Debian package that provides it.
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
)

# A shared library in the loader's cache (lib:NAME), or one of libvirt's
# connection drivers (driver:NAME).
find_lib() {
    /sbin/ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib { print $NF; exit }'
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
        /*) [ -x "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
    esac
}

where() {
    case "$1" in
        lib:*) find_lib "${1#lib:}" ;;
        driver:*) find_driver "${1#driver:}" ;;
        /*) echo "$1" ;;
        *) command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || echo "/sbin/$1" ;;
    esac
}

missing=()
for pair in "${CHECKS[@]}"; do
    cmd=${pair%% *}
    pkg=${pair##* }
    if have "$cmd"; then
        echo "install-deps: $cmd: ok ($(where "$cmd"))"
    else
        echo "install-deps: $cmd: missing, will install package $pkg"
        case " ${missing[*]-} " in
            *" $pkg "*) ;;
            *) missing+=("$pkg") ;;
        esac
    fi
done

# The reference implementation (Python qemu.qmp 0.0.6) needs python3 and,
# when it is not installed yet, pip.
PYTHON=${PYTHON:-python3}
need_reference=0
if "$PYTHON" -c 'import qemu.qmp' >/dev/null 2>&1 && command -v qmp-shell >/dev/null 2>&1; then
    :
else
    need_reference=1
fi
add_pkg() {
    case " ${missing[*]-} " in
        *" $1 "*) ;;
        *) missing+=("$1") ;;
    esac
}
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

ref_version() {
    "$PYTHON" -c 'import importlib.metadata as m; print(m.version("qemu.qmp"))' 2>/dev/null || true
}

if "$PYTHON" -c 'import qemu.qmp' >/dev/null 2>&1 && command -v qmp-shell >/dev/null 2>&1; then
    v=$(ref_version)
    echo "install-deps: reference qemu.qmp: ok (version $v)"
    if [ "$v" != "0.0.6" ]; then
        echo "install-deps: WARNING: expected qemu.qmp 0.0.6; to fix: $PYTHON -m pip install qemu.qmp==0.0.6" >&2
    fi
else
    echo "install-deps: reference qemu.qmp: missing, running pip install qemu.qmp==0.0.6"
    pip_log=$(mktemp)
    if ! "$PYTHON" -m pip install "qemu.qmp==0.0.6" 2>&1 | tee "$pip_log"; then
        if grep -q externally-managed-environment "$pip_log"; then
            # Debian 12+ system Python (PEP 668): this machine is a test
            # machine, install next to the system packages anyway.
            echo "install-deps: system Python is externally managed; retrying with --break-system-packages"
            "$PYTHON" -m pip install --break-system-packages "qemu.qmp==0.0.6"
        else
            rm -f "$pip_log"
            echo "install-deps: ERROR: pip install qemu.qmp==0.0.6 failed" >&2
            exit 1
        fi
    fi
    rm -f "$pip_log"
    # pyenv needs its shims regenerated to expose new console scripts.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
fi

# Make sure the Python qmp-shell is findable; if pip put it in a directory
# that is not on PATH, tell the user where it is.
if command -v qmp-shell >/dev/null 2>&1; then
    echo "install-deps: reference qmp-shell: $(command -v qmp-shell)"
    echo "install-deps: reference qmp-shell-wrap: $(command -v qmp-shell-wrap || echo MISSING)"
else
    scripts_dir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    user_dir=$("$PYTHON" -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))')
    for d in "$scripts_dir" "$user_dir"; do
        if [ -x "$d/qmp-shell" ]; then
            echo "install-deps: ERROR: reference qmp-shell is at $d/qmp-shell, but $d is not on PATH;" >&2
            echo "install-deps:        run: export PATH=\"$d:\$PATH\"" >&2
            exit 1
        fi
    done
    echo "install-deps: ERROR: reference qmp-shell not found after pip install" >&2
    exit 1
fi

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
