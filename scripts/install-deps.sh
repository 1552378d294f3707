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

# The same checks the tests make (crates/qmp-shell/tests/common/mod.rs):
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
