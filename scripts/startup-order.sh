#!/usr/bin/env bash
# Regenerate crates/qmp-shell/startup.ld: the functions a short run of
# qmp-shell executes, laid out together at the start of the program's code.
#
# Why: the kernel maps a program's code 64 KiB around every page it touches,
# so a short run that touches a few hundred functions scattered over 1.4 MB
# of code ends up with all of it resident. Gathered in one place, they are
# about a third of that: ~0.8 MiB less peak RSS for `qmp-shell -c CMD`.
#
# How: build the release binary, run typical short sessions against a
# private QEMU under valgrind's callgrind, keep the functions of the binary
# that ran, and write them as input-section patterns of a linker script
# (build.rs hands it to the linker for release builds). The patterns leave
# out the hashes in the symbols' names, so the file stays valid as
# dependencies and the toolchain change; a function renamed or new simply
# lands outside the group until the next run of this script. Nothing breaks
# when the file is stale: the layout is only less good.
#
# Needs valgrind, python3, qemu-system-x86_64. Run it after changes to what
# a short run does, and commit the result.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
out=crates/qmp-shell/startup.ld

for tool in valgrind python3 qemu-system-x86_64; do
    command -v "$tool" >/dev/null || { echo "startup-order.sh: needs $tool" >&2; exit 1; }
done

cargo build --release -p qmp-shell --bin qmp-shell
bin=$root/target/release/qmp-shell

dir=$(mktemp -d)
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

sock=$dir/qmp.sock
qemu-system-x86_64 -M none -display none -nodefaults \
    -qmp "unix:$sock,server=on,wait=off" >/dev/null 2>&1 &
qemu_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "startup-order.sh: QEMU did not start" >&2; exit 1; }
printf 'query-status\nquery-name\nqom-list path=/\nno-such-command\n' >"$dir/lines"

# Each short session, in the order of importance: what runs first in the
# list is laid out first. Empty XDG_CACHE_HOME: the cache is written once,
# then read (both paths run).
export XDG_CACHE_HOME=$dir/cache
n=0
profile() {
    local stdin=$1
    shift
    n=$((n + 1))
    local rc=0
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/cg.$n" \
        "$bin" "$@" <"$stdin" >"$dir/out.$n" 2>"$dir/err.$n" || rc=$?
    echo "startup-order.sh: run $n (exit $rc): $*" >&2
    grep -h '^ERROR' "$dir/out.$n" "$dir/err.$n" | head -3 >&2 || true
}
profile /dev/null --version
profile /dev/null -c query-version "$sock"
profile /dev/null -c query-version "$sock"
profile "$dir/lines" "$sock"
profile /dev/null -c no-such-command "$sock"
profile /dev/null --json -c query-status "$sock"
profile /dev/null -v -p -c query-status "$sock"
profile /dev/null -H -c "info version" "$sock"
profile /dev/null --read-only -c "qom-list path=/" -c stop "$sock"
profile /dev/null -c query-qmp-schema "$sock"
profile <(cat "$dir/lines") "$sock"
profile /dev/null --help

python3 - "$bin" "$out" "$dir"/cg.* <<'PY'
import re, subprocess, sys

binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
profiles.sort(key=lambda p: int(p.rsplit(".", 1)[1]))
symbols = set()
for line in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW":
        symbols.add(fields[2])

def pattern(name):
    # Legacy mangling ends with a hash; v0 names each crate with one.
    if name.startswith("_ZN"):
        return re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
    if name.startswith("_R"):
        return re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)
    return name

# How many functions of the binary each pattern stands for: more than one
# is a generic function's instances, of which a run executes a few. Those
# are named exactly (hash and all) in the group, and the pattern comes
# again at its end, after everything else: an instance goes where it first
# matches, so the instances that did not run gather at the end, out of the
# way. When the hashes change (another toolchain, dependency, or target
# directory: the packages are built with --target), the exact names match
# nothing and the instances are all at the end of the group, which grows
# by a sixth, instead of scattered over the whole program.
count = {}
for name in symbols:
    count[pattern(name)] = count.get(pattern(name), 0) + 1

patterns, seen, generics = [], set(), []
for path in profiles:
    names = {}
    ran = []
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        if m.group(2):
            names[m.group(1)] = m.group(2)
        ran.append(names.get(m.group(1)))
    for name in ran:
        if name in symbols:
            p = pattern(name)
            if count[p] > 1:
                if p not in generics and re.fullmatch(r"[A-Za-z0-9_$.*]+", p):
                    generics.append(p)
                p = name
            if p not in seen and re.fullmatch(r"[A-Za-z0-9_$.*]+", p):
                seen.add(p)
                patterns.append(p)

with open(out, "w") as f:
    f.write("/* Generated by scripts/startup-order.sh: do not edit.\n")
    f.write("   The functions a short qmp-shell run executes, together before the\n")
    f.write("   rest of the code (see the script for why). */\n")
    # What runs at every start and exit beside the program's own code (the
    # C run-time's entry and init/fini code, and the PLT), next to it: the
    # page around each is mapped too.
    f.write("SECTIONS\n{\n")
    f.write("  .init : { KEEP (*(SORT_NONE(.init))) }\n")
    f.write("  .fini : { KEEP (*(SORT_NONE(.fini))) }\n")
    f.write("  .plt : { *(.plt) *(.iplt) }\n")
    f.write("  .text.startup_hot :\n  {\n")
    f.write("    *crt1.o(.text) *crti.o(.text) *crtbegin*.o(.text)\n")
    for p in patterns + generics:
        f.write(f"    *(.text.{p} .text.unlikely.{p})\n")
    f.write("  }\n}\nINSERT BEFORE .text;\n")
print(f"startup-order.sh: {len(patterns)} patterns written to {out}", file=sys.stderr)
PY
