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
)

have() {
    case "$1" in
        /*) [ -x "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
    esac
}

where() {
    case "$1" in
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
