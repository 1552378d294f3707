#!/usr/bin/env bash
# Check what scripts/package.sh left in dist/, as a user would meet it:
#
#   the .deb: its fields (Depends from the shared libraries, libvirt only
#   suggested), its files (programs, man pages, the three shells'
#   completions, README and licence), `dpkg --dry-run -i` on this system;
#   unpacked (dpkg-deb -x): the programs' --version and --help, a real
#   `qmp-shell -c query-status` against a throwaway QEMU, also with
#   libvirt's library hidden; `man -l` of every page; bash completion as
#   bash-completion loads it (qmp-shell --read<Tab> offers --read-only);
#   fish completion from its vendor directory; zsh's files parse.
#
#   the wheel: a manylinux tag of 2_28 or lower that its binaries honour
#   (no glibc symbol newer, no library outside the manylinux set);
#   `pip install --no-index` into a fresh venv; the three programs run from
#   the venv, with only the venv and /usr/bin on PATH and no cargo or rustc
#   there, `qmp-shell -c query-status` against the same QEMU.
#
# Usage: bash scripts/check-package.sh   (after bash scripts/package.sh)
# Needs: dpkg-deb, man (man-db), bash-completion, zsh, fish, python3 with
# venv, qemu-system-x86_64, unshare (scripts/install-deps.sh installs them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
PYTHON=${PYTHON:-python3}
PROGRAMS=(qmp-shell qmp-shell-wrap qmp-proxy qmp-mcp)

failures=0
ok() { echo "check-package: ok: $*"; }
fail() {
    echo "check-package: FAIL: $*" >&2
    failures=$((failures + 1))
}
die() {
    echo "check-package: ERROR: $*" >&2
    exit 1
}
# Run with a bound: nothing here may hang the suite.
run() { timeout 60 "$@"; }

shopt -s nullglob
debs=("$root"/dist/*.deb)
wheels=("$root"/dist/*.whl)
[ "${#debs[@]}" -eq 1 ] || die "expected one .deb in dist/, found ${#debs[@]} (run scripts/package.sh)"
[ "${#wheels[@]}" -eq 1 ] || die "expected one .whl in dist/, found ${#wheels[@]} (run scripts/package.sh)"
deb=${debs[0]}
wheel=${wheels[0]}
version=$(cargo metadata --format-version 1 --no-deps |
    "$PYTHON" -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "qmp-shell"))')

tmp=$(mktemp -d /tmp/check-package.XXXXXX)
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ]; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- a throwaway QEMU ----------------------------------------------------------
sock=$tmp/qmp.sock
qemu-system-x86_64 -M none -display none -nodefaults \
    -qmp "unix:$sock,server=on,wait=off" >"$tmp/qemu.log" 2>&1 &
qemu_pid=$!
for _ in $(seq 1 100); do
    [ -S "$sock" ] && break
    kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited before creating $sock: $(cat "$tmp/qemu.log")"
    sleep 0.1
done
[ -S "$sock" ] || die "QEMU did not create $sock within 10 s"

# `qmp-shell -c query-status SOCK` as BIN runs it (in an environment set by
# the caller's prefix), and what a running QEMU answers.
# qmp-mcp ($@) answers a real MCP client (the Inspector CLI that
# install-deps.sh installs) with the result of query-status.
INSPECTOR=/opt/qmp-shell-tests/mcp-inspector-0.17.5/node_modules/.bin/mcp-inspector
check_mcp() {
    local what=$1
    shift
    local out
    if out=$(run "$INSPECTOR" --cli "$@" "$sock" --method tools/call --tool-name execute \
        --tool-arg command=query-status 2>&1) && [[ $out == *'\"status\":\"running\"'* ]]; then
        ok "$what: qmp-mcp answers an MCP client: execute query-status"
    else
        fail "$what: qmp-mcp under the MCP Inspector gave: $out"
    fi
}

check_query_status() {
    local what=$1
    shift
    local out
    if out=$(run "$@" -c query-status "$sock" 2>&1) &&
        [[ $out == '{"return": {"status": "running"'* ]]; then
        ok "$what: qmp-shell -c query-status: $out"
    else
        fail "$what: qmp-shell -c query-status gave: $out"
    fi
}

# --- the .deb: fields -----------------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
echo "check-package: $deb"
dpkg-deb -I "$deb"
[ "$(field Package)" = qmp-shell ] && ok "Package: qmp-shell" || fail "Package: $(field Package)"
[ "$(field Version)" = "$version-1" ] && ok "Version: $version-1" || fail "Version: $(field Version), want $version-1"
[ "$(field Architecture)" = amd64 ] && ok "Architecture: amd64" || fail "Architecture: $(field Architecture)"
[[ $(field Maintainer) == *?' <'*@*'>' ]] && ok "Maintainer: $(field Maintainer)" || fail "Maintainer: '$(field Maintainer)'"
[[ $(field Depends) == *libc6* ]] && ok "Depends: $(field Depends)" || fail "Depends has no libc6: '$(field Depends)'"
[[ $(field Depends) != *libvirt* ]] && ok "Depends: no libvirt" || fail "Depends names libvirt: $(field Depends)"
[[ $(field Suggests) == *libvirt0* ]] && ok "Suggests: $(field Suggests)" || fail "Suggests lacks libvirt0: '$(field Suggests)'"
[[ $(field Description) == *QMP* ]] && ok "Description present" || fail "Description: '$(field Description)'"

# --- the .deb: files --------------------------------------------------------------
listing=$(dpkg-deb -c "$deb" | awk '{ print $1 " " $NF }')
want_file() {
    local mode=$1 path=$2
    if grep -qx -- "$mode ./$path" <<<"$listing"; then
        ok "file $path ($mode)"
    else
        fail "the .deb has no $path with mode $mode"
    fi
}
for p in "${PROGRAMS[@]}"; do
    want_file -rwxr-xr-x "usr/bin/$p"
    want_file -rw-r--r-- "usr/share/man/man1/$p.1.gz"
    want_file -rw-r--r-- "usr/share/bash-completion/completions/$p"
    want_file -rw-r--r-- "usr/share/zsh/vendor-completions/_$p"
    want_file -rw-r--r-- "usr/share/fish/vendor_completions.d/$p.fish"
done
want_file -rw-r--r-- usr/share/doc/qmp-shell/README.md
want_file -rw-r--r-- usr/share/doc/qmp-shell/copyright

if out=$(dpkg --dry-run -i "$deb" 2>&1); then
    ok "dpkg --dry-run -i: installable here"
else
    fail "dpkg --dry-run -i: $out"
fi

# --- the .deb, unpacked -----------------------------------------------------------
dr=$tmp/deb-root
dpkg-deb -x "$deb" "$dr"
copyright=$dr/usr/share/doc/qmp-shell/copyright
if grep -q "^License: GPL-2.0-or-later" "$copyright" &&
    grep -q "/usr/share/common-licenses/GPL-2" "$copyright" && [ -f /usr/share/common-licenses/GPL-2 ]; then
    ok "copyright: GPL-2.0-or-later, text in /usr/share/common-licenses/GPL-2"
else
    fail "copyright does not give the licence: $(cat "$copyright")"
fi

first_version=""
for p in "${PROGRAMS[@]}"; do
    bin=$dr/usr/bin/$p
    if readelf -d "$bin" | grep -q 'NEEDED.*libvirt'; then
        fail "$p links libvirt (it must load it at run time)"
    fi
    v=$(run "$bin" --version) || fail "$p --version: exit $?"
    [[ $v == "$p $version"* ]] && ok "$v" || fail "$p --version: '$v', want '$p $version...'"
    # The same version text for every program.
    rest=${v#"$p "}
    first_version=${first_version:-$rest}
    [ "$rest" = "$first_version" ] || fail "$p --version says '$rest', ${PROGRAMS[0]} '$first_version'"
    if help=$(run "$bin" --help) && [[ $help == *Usage:* ]]; then
        ok "$p --help"
    else
        fail "$p --help"
    fi
done
check_query_status "deb" "$dr/usr/bin/qmp-shell"
check_mcp "deb" "$dr/usr/bin/qmp-mcp"

# Without libvirt: its client library hidden (an empty file bound over it,
# in a mount namespace of this command's own), the program still runs, and
# --domain says what to install.
libvirt=$(/sbin/ldconfig -p | awk '$1 == "libvirt.so.0" && !found { print $NF; found = 1 }')
if [ -n "$libvirt" ]; then
    hide="mount --bind /dev/null $(readlink -f "$libvirt")"
    if out=$(run unshare -m sh -c "$hide && exec \"\$@\"" sh \
        "$dr/usr/bin/qmp-shell" -c query-status "$sock" 2>&1) &&
        [[ $out == '{"return": {"status": "running"'* ]]; then
        ok "without libvirt's library: qmp-shell -c query-status: $out"
    else
        fail "without libvirt's library: qmp-shell -c query-status gave: $out"
    fi
    out=$(run unshare -m sh -c "$hide && exec \"\$@\"" sh \
        "$dr/usr/bin/qmp-shell" --domain nosuch -c query-status 2>&1) && rc=0 || rc=$?
    if [ "$rc" = 1 ] && [[ $out == *"apt-get install libvirt0"* ]] && [ "$(wc -l <<<"$out")" = 1 ]; then
        ok "without libvirt's library: --domain: $out"
    else
        fail "without libvirt's library: --domain (exit $rc): $out"
    fi
else
    ok "libvirt is not installed here: the query above ran without it"
fi

# man -l: every page, with NAME and the options people look for.
for p in "${PROGRAMS[@]}"; do
    page=$dr/usr/share/man/man1/$p.1.gz
    shown=$(MANPAGER=cat MANWIDTH=100 LANG=C.UTF-8 run man -l "$page" 2>"$tmp/man.err") ||
        fail "man -l $page: $(cat "$tmp/man.err")"
    [ -s "$tmp/man.err" ] && fail "man -l $page warns: $(cat "$tmp/man.err")"
    want=(NAME SYNOPSIS OPTIONS "EXIT STATUS" EXAMPLES "$p - ")
    case $p in
        qmp-shell) want+=(--domain --read-only QMP_SOCKET LIBVIRT_DEFAULT_URI QMP_SSH_COMMAND NO_COLOR) ;;
        qmp-shell-wrap) want+=(--read-only --serve) ;;
        qmp-proxy) want+=(--listen) ;;
        qmp-mcp) want+=(--allow-writes --domain SAFETY TOOLS) ;;
    esac
    missing=()
    for w in "${want[@]}"; do
        grep -qF -- "$w" <<<"$shown" || missing+=("$w")
    done
    [ "${#missing[@]}" -eq 0 ] && ok "man -l $p.1.gz: ${want[*]}" || fail "man -l $p.1.gz lacks: ${missing[*]}"
done

# bash: bash-completion's loader finds the script where the .deb puts it
# (the unpacked usr/share standing for /usr/share), then qmp-shell --read<Tab>.
bash_complete() {
    XDG_DATA_DIRS="$dr/usr/share" BASH_COMPLETION_USER_DIR="$tmp/none" run bash --norc --noprofile -c '
        source /usr/share/bash-completion/bash_completion || exit 9
        __load_completion "$1" || { echo "no completion loaded for $1"; exit 8; }
        spec=$(complete -p "$1") || exit 7
        fn=${spec#*-F }; fn=${fn%% *}
        COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
        "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}"' bash "$@"
}
got=$(bash_complete qmp-shell --read 2>&1) || true
[ "$got" = --read-only ] && ok "bash: qmp-shell --read<Tab> -> $got" || fail "bash: qmp-shell --read<Tab> -> '$got'"
got=$(bash_complete qmp-proxy --lis 2>&1) || true
[ "$got" = --listen ] && ok "bash: qmp-proxy --lis<Tab> -> $got" || fail "bash: qmp-proxy --lis<Tab> -> '$got'"

# fish: from its vendor directory, as fish looks there.
got=$(run fish --no-config -c "set fish_complete_path $dr/usr/share/fish/vendor_completions.d \$fish_complete_path; complete --do-complete 'qmp-shell --read'" 2>&1 | cut -f1) || true
[ "$got" = --read-only ] && ok "fish: qmp-shell --read<Tab> -> $got" || fail "fish: qmp-shell --read<Tab> -> '$got'"
# zsh: every file parses.
for p in "${PROGRAMS[@]}"; do
    out=$(run zsh -n "$dr/usr/share/zsh/vendor-completions/_$p" 2>&1) &&
        ok "zsh -n _$p" || fail "zsh -n _$p: $out"
done

# --- the wheel ----------------------------------------------------------------------
echo "check-package: $wheel"
name=$(basename "$wheel")
tag=$(sed -nE 's/.*-manylinux_([0-9]+)_([0-9]+)_x86_64\.whl$/\1 \2/p' <<<"$name")
if [ -n "$tag" ] && [ "${tag% *}" -eq 2 ] && [ "${tag#* }" -le 28 ]; then
    ok "wheel tag: manylinux_${tag/ /_}_x86_64"
else
    fail "wheel $name: no manylinux tag of 2_28 or lower"
fi
wx=$tmp/wheel-files
mkdir -p "$wx"
"$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$wx"
manylinux_libs=" libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2 "
for p in "${PROGRAMS[@]}"; do
    bin=$(echo "$wx"/*.data/scripts/"$p")
    [ -f "$bin" ] || { fail "the wheel has no $p"; continue; }
    newest=$(objdump -T "$bin" | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    if [ -n "$newest" ] && [ "$(printf '%s\n' "$newest" 2.28 | sort -V | tail -n1)" = 2.28 ]; then
        ok "$p: newest glibc symbol $newest"
    else
        fail "$p: uses glibc $newest symbols, newer than manylinux_2_28 allows"
    fi
    for lib in $(readelf -d "$bin" | sed -nE 's/.*NEEDED.*\[(.*)\]/\1/p'); do
        [[ $manylinux_libs == *" $lib "* ]] || fail "$p needs $lib, outside manylinux"
    done
done

venv=$tmp/venv
"$PYTHON" -m venv "$venv"
if out=$("$venv/bin/python" -m pip install --no-index --disable-pip-version-check "$wheel" 2>&1); then
    ok "pip install --no-index $name"
else
    fail "pip install --no-index $name: $out"
fi
# Only the venv and /usr/bin on PATH: no cargo, no rustc.
clean_env=(env -i "HOME=$tmp" "PATH=$venv/bin:/usr/bin" LANG=C.UTF-8)
if "${clean_env[@]}" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
    fail "cargo or rustc is on the stripped PATH $venv/bin:/usr/bin"
else
    ok "no cargo or rustc on PATH=$venv/bin:/usr/bin"
fi
for p in "${PROGRAMS[@]}"; do
    where=$("${clean_env[@]}" sh -c "command -v $p") || true
    [ "$where" = "$venv/bin/$p" ] && ok "$p on PATH: $where" || fail "$p on PATH: '$where', want $venv/bin/$p"
    v=$("${clean_env[@]}" "$p" --version 2>&1) || true
    [[ $v == "$p $version"* ]] && ok "wheel: $v" || fail "wheel: $p --version: '$v'"
done
check_query_status "wheel" "${clean_env[@]}" qmp-shell
check_mcp "wheel" "$venv/bin/qmp-mcp"

echo
if [ "$failures" -ne 0 ]; then
    echo "check-package: $failures check(s) failed" >&2
    exit 1
fi
echo "check-package: all checks passed"
