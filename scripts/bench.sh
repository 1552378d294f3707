#!/usr/bin/env bash
# Whole-process benchmark: our qmp-shell vs the reference (Python qemu.qmp
# 0.0.6) vs a raw socket pipe (socat) vs the C limit (scripts/qmp-limit.c),
# against one real QEMU.
#
#   scripts/bench.sh            # full run
#   RUNS=5 scripts/bench.sh     # fewer runs per figure (quicker, noisier)
#   N=5000 scripts/bench.sh     # another script length
#
# What is measured (each with hyperfine, the three programs in one
# hyperfine invocation, run one after the other):
#   (a) a script of N commands fed on standard input (pipelined by us,
#       one at a time by the reference, all at once by socat);
#   (b) one command, `query-status`: `qmp-shell SOCK < one.txt` and
#       `qmp-shell -c query-status SOCK`;
#   (c) `-p` and `query-qmp-schema` (about 200 KB of JSON, pretty-printed);
#   for (b) and (c) also the C limit: scripts/qmp-limit.c, compiled here
#       with `cc -O2`, a minimal C client that connects, reads the greeting,
#       negotiates, sends the one command and copies its raw reply to stdout
#       (large reads, no JSON parsing, no threads): the floor of "one
#       command as a whole process". Every figure is a whole process started
#       by hyperfine, nothing wrapped around it but the shell's redirection
#       (which hyperfine subtracts: on a figure of a few milliseconds that
#       correction is noisy, so `-c` and the C limit are also timed a second
#       time side by side without a shell, `hyperfine -N`);
#   (d) peak RSS (GNU time's %M, the largest of RSS_RUNS runs) for (b) and (c);
#   (e) the script of (a) run by our shell directly, through qmp-proxy, and
#       through ssh:// (a private sshd on 127.0.0.1 with throwaway keys,
#       forwarding to the socket of the direct runs): three commands in one
#       hyperfine invocation, against a second QEMU of their own with two
#       monitors (one for the direct and ssh runs, one for qmp-proxy's
#       connection). The ssh row includes ssh's connection set-up, as a
#       user would see it; so does the one-command row;
#   (f) through libvirt, on a transient TCG domain the script starts (and
#       destroys on every exit path): a script of LV_N commands (default
#       500) through `qmp-shell --domain`, against as many
#       `virsh qemu-monitor-command` processes (the same four commands in
#       turn, as JSON), per command, and against one virsh process running
#       them all (libvirt's own floor); and one whole process each:
#       `qmp-shell --domain D -c query-status` against one
#       `virsh qemu-monitor-command D '{"execute":"query-status"}'`, run in
#       turn (the two are close, and a series of one then a series of the
#       other would measure the machine's load drifting).
#       LIBVIRT=0 leaves (f) out.
#   (g) fan-out: FLEET QEMUs (default 30, `-M none -name vmK`, one socket
#       each), two commands (`query-status`, `query-name`) on every one: one
#       `qmp-shell -c ... SOCKETS...` call, against a shell loop running the
#       reference once per socket, and against a loop of our own shell.
#
# The raw socket baseline: socat gets, on standard input, exactly the bytes
# our shell writes to the socket for the same script: `qmp_capabilities`
# followed by the N commands, encoded as JSON, each with the id the client
# assigns (integers; empty arguments left out, since QEMU's work per
# command grows with the bytes it parses). They are taken from our own `-l` log of a run of the script. At the end of its input socat
# half-closes the socket (shutdown SHUT_WR); QEMU answers the commands it
# has read and then closes its side, and socat exits when that EOF arrives.
# QEMU 7.2 may close before it sent the reply to the very last command, so
# a sentinel `query-status` goes after the script (its reply may be lost).
# So socat's time is the true round trip of all N commands, with no fixed
# sleep: `-t` is only an upper bound on that wait, never spent when QEMU
# closes first. Before timing, the script checks that socat did get greeting
# + N+1 replies (the last command's included), that our output has N
# replies, and that ours and the reference print the same bytes.
#
# One difference: socat negotiates without out-of-band execution. Ours (like
# the reference) enables it when QEMU offers it, and then keeps at most 7
# in-band commands unanswered (QEMU stops reading a monitor with 8 queued,
# and an exec-oob must never wait behind them). But with OOB on, QEMU drops
# the commands still queued when the client half-closes, so socat, which
# cannot wait for its replies otherwise, would lose the last ones. Without
# OOB QEMU reads one command at a time: the plain raw-socket limit.
#
# A QMP monitor serves one client at a time; every run is a whole process
# that exits (closing its connection) before hyperfine starts the next one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

N=${N:-2000}
LV_N=${LV_N:-500}
LV_RUNS=${LV_RUNS:-5}
LIBVIRT=${LIBVIRT:-1}
LIBVIRT_URI=qemu:///system
FLEET=${FLEET:-30}
RUNS=${RUNS:-10}
RSS_RUNS=${RSS_RUNS:-5}
WARMUP=${WARMUP:-2}

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# await NAME PID LOG TRIES CONDITION...: run CONDITION every 0.05 s until it
# succeeds, at most TRIES times. If process PID ("" for none to watch) has
# gone meanwhile, show LOG and stop: NAME exited. If CONDITION never held:
# NAME is not ready.
await() {
    local name=$1 pid=$2 log=$3 tries=$4
    shift 4
    for _ in $(seq 1 "$tries"); do
        "$@" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2 || true
            die "$name exited"
        fi
        sleep 0.05
    done
    "$@" || die "$name is not ready after $tries tries: $*"
}
# Conditions for await: every one of the sockets exists; a socket accepts a
# connection; a log says that sshd listens.
sockets_exist() {
    local s
    for s; do [ -S "$s" ] || return 1; done
}
accepts() { [ -S "$1" ] && "$SOCAT" -u OPEN:/dev/null "UNIX-CONNECT:$1" 2>/dev/null; }
sshd_listening() { grep -q 'Server listening' "$1" 2>/dev/null; }

# --- tools and programs -----------------------------------------------------

PYTHON=${PYTHON:-python3}
need_install=0
for tool in qemu-system-x86_64 socat hyperfine ssh ssh-keygen cc; do
    command -v "$tool" >/dev/null 2>&1 || need_install=1
done
[ -x /usr/bin/time ] || need_install=1
[ -x /usr/sbin/sshd ] || need_install=1
"$PYTHON" -I -c 'import qemu.qmp.qmp_shell' >/dev/null 2>&1 || need_install=1
if [ "$LIBVIRT" = 1 ]; then
    # install-deps.sh installs libvirt and starts libvirtd.
    virsh -c "$LIBVIRT_URI" list >/dev/null 2>&1 || need_install=1
fi
if [ "$need_install" = 1 ]; then
    log "installing missing peers / reference: scripts/install-deps.sh"
    bash scripts/install-deps.sh
fi

log "building the release binaries"
cargo build --release --quiet -p qmp-shell
OURS="$ROOT/target/release/qmp-shell"
PROXY="$ROOT/target/release/qmp-proxy"
[ -x "$OURS" ] || die "no $OURS after the build"
[ -x "$PROXY" ] || die "no $PROXY after the build"

# The reference: the entry point `qmp-shell = qemu.qmp.qmp_shell:main` of
# the qemu.qmp 0.0.6 distribution, run by its interpreter as the console
# script would run it (never a `qmp-shell` on PATH: that may be ours). The
# interpreter is sys.executable, so that no pyenv shim (tens of ms of its
# own, not part of the program) sits in front. install-deps.sh verified the
# installation; the version is checked again here.
REF_PY=$("$PYTHON" -I -c 'import sys; print(sys.executable)') || die "$PYTHON does not run"
REF_VERSION=$("$REF_PY" -I -c 'import importlib.metadata as m, qemu.qmp.qmp_shell; print(m.version("qemu.qmp"))') \
    || die "$REF_PY cannot import qemu.qmp.qmp_shell: run scripts/install-deps.sh"
[ "$REF_VERSION" = "0.0.6" ] || die "the reference must be qemu.qmp 0.0.6, $REF_PY has $REF_VERSION"
REF=("$REF_PY" -I -c 'import sys; from qemu.qmp.qmp_shell import main; sys.argv[0] = "qmp-shell"; sys.exit(main())')
SOCAT=$(command -v socat)
QEMU=$(command -v qemu-system-x86_64)

# --- a private QEMU ---------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qmp-bench.XXXXXX")
QEMU_PID=""
PROXY_PID=""
SSHD_PID=""
QEMU2_PID=""
FLEET_PIDS=""
DOMAIN=""
cleanup() {
    if [ -n "$DOMAIN" ]; then
        virsh -c "$LIBVIRT_URI" destroy "$DOMAIN" >/dev/null 2>&1 || true
    fi
    for pid in $PROXY_PID $SSHD_PID $QEMU2_PID $FLEET_PIDS; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$QEMU_PID" ]; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [ -n "${KEEP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The C limit (see the top of this file).
LIMIT="$TMP/qmp-limit"
cc -O2 -o "$LIMIT" "$ROOT/scripts/qmp-limit.c" || die "cannot compile scripts/qmp-limit.c"

SOCK="$TMP/qmp.sock"
"$QEMU" -M none -display none -nodefaults \
    -qmp "unix:$SOCK,server=on,wait=off" >"$TMP/qemu.log" 2>&1 &
QEMU_PID=$!
await QEMU "$QEMU_PID" "$TMP/qemu.log" 200 accepts "$SOCK"
QEMU_VERSION=$("$QEMU" --version | head -n 1)

# --- inputs -----------------------------------------------------------------

# N commands: four cheap ones in turn, so that replies differ from line to line.
SHORT=(
    "query-status"
    "query-name"
    "query-version"
    "qom-list path=/machine"
)
{
    for ((i = 0; i < N; i++)); do printf '%s\n' "${SHORT[i % 4]}"; done
} >"$TMP/script.txt"
printf 'query-status\n' >"$TMP/one.txt"
printf 'query-qmp-schema\n' >"$TMP/schema.txt"

# Run with a reproducible environment: no history file shared with the user,
# no colour.
export HOME="$TMP/home" NO_COLOR=1 LC_ALL=C.UTF-8
mkdir -p "$HOME"
unset QMP_SOCKET

# --- sanity checks (not timed) ----------------------------------------------

# The pre-encoded input for socat: what we send, from our -l log (lines we
# sent start with {"execute").
wire() {
    "$OURS" -l "$TMP/wire.log" "$SOCK" <"$1" >/dev/null
    grep '^{"execute"' "$TMP/wire.log" |
        sed 's/^{"execute":"qmp_capabilities","arguments":{"enable":\["oob"\]}/{"execute":"qmp_capabilities"/' >"$2"
    rm -f "$TMP/wire.log"
}
wire "$TMP/script.txt" "$TMP/script.json"
wire "$TMP/one.txt" "$TMP/one.json"
wire "$TMP/schema.txt" "$TMP/schema.json"
# QEMU (7.2) may close a half-closed connection without sending the reply
# to the last command it read (seen often under load): a cheap sentinel
# command goes last, so that socat's time includes the script's last reply.
for f in script one schema; do
    printf '{"execute":"query-status","id":"sentinel"}\n' >>"$TMP/$f.json"
done
[ "$(wc -l <"$TMP/script.json")" -eq $((N + 2)) ] || die "unexpected -l log for the script"

log "checking outputs"
"$SOCAT" -t 30 - "UNIX-CONNECT:$SOCK" <"$TMP/script.json" >"$TMP/socat.out"
got=$(wc -l <"$TMP/socat.out")
[ "$got" -ge $((N + 2)) ] || die "socat got $got lines, expected greeting + $((N + 1)) replies"
grep -q "\"id\": $((N + 1))}" "$TMP/socat.out" || die "socat did not get the reply to the last command"
"$OURS" "$SOCK" <"$TMP/script.txt" >"$TMP/ours.out"
"${REF[@]}" "$SOCK" <"$TMP/script.txt" >"$TMP/ref.out"
cmp -s "$TMP/ours.out" "$TMP/ref.out" || die "ours and the reference differ on the script (see $TMP)"
got=$(grep -c '"return"' "$TMP/ours.out")
[ "$got" -eq "$N" ] || die "ours printed $got replies, expected $N"
"$OURS" -p "$SOCK" <"$TMP/schema.txt" >"$TMP/ours.schema"
"${REF[@]}" -p "$SOCK" <"$TMP/schema.txt" >"$TMP/ref.schema"
cmp -s "$TMP/ours.schema" "$TMP/ref.schema" || die "ours and the reference differ on -p query-qmp-schema"
SCHEMA_BYTES=$(wc -c <"$TMP/ours.schema")
"$LIMIT" "$SOCK" query-status | grep -q '"return"' || die "qmp-limit got no reply to query-status"
"$LIMIT" "$SOCK" query-qmp-schema | grep -q '"return"' || die "qmp-limit got no reply to query-qmp-schema"
"$OURS" -c query-status "$SOCK" | grep -q '"return"' || die "ours -c query-status printed no reply"

# --- timings ----------------------------------------------------------------

# One hyperfine run for three commands (and, given as further NAME COMMAND
# pairs, more: the C limit, `-c`); results in $TMP/hf-$1.json.
# Commands run through /bin/sh for the redirection; hyperfine subtracts the
# shell's own start-up time.
hf() {
    local name=$1 ours=$2 ref=$3 raw=$4
    shift 4
    local more=()
    while [ "$#" -ge 2 ]; do
        more+=(-n "$1" "$2")
        shift 2
    done
    log "timing: $name"
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --export-json "$TMP/hf-$name.json" \
        -n ours "$ours" -n reference "$ref" -n socat "$raw" "${more[@]}" >&2
}

q() { printf '%q' "$1"; }
# The reference's command words, quoted for the shell hyperfine runs.
REFQ="$(q "${REF[0]}") ${REF[1]} ${REF[2]} $(q "${REF[3]}")"
hf script \
    "$(q "$OURS") $(q "$SOCK") < $(q "$TMP/script.txt")" \
    "$REFQ $(q "$SOCK") < $(q "$TMP/script.txt")" \
    "$(q "$SOCAT") -t 30 - UNIX-CONNECT:$(q "$SOCK") < $(q "$TMP/script.json")"
hf one \
    "$(q "$OURS") $(q "$SOCK") < $(q "$TMP/one.txt")" \
    "$REFQ $(q "$SOCK") < $(q "$TMP/one.txt")" \
    "$(q "$SOCAT") -t 30 - UNIX-CONNECT:$(q "$SOCK") < $(q "$TMP/one.json")" \
    c-limit "$(q "$LIMIT") $(q "$SOCK") query-status" \
    ours-c "$(q "$OURS") -c query-status $(q "$SOCK")"
log "timing: one command without a shell in between"
hyperfine -N --warmup "$WARMUP" --runs "$((RUNS * 4))" --style basic \
    --export-json "$TMP/hf-one-direct.json" \
    -n ours-c "$OURS -c query-status $SOCK" \
    -n c-limit "$LIMIT $SOCK query-status" >&2
hf schema \
    "$(q "$OURS") -p $(q "$SOCK") < $(q "$TMP/schema.txt")" \
    "$REFQ -p $(q "$SOCK") < $(q "$TMP/schema.txt")" \
    "$(q "$SOCAT") -t 30 - UNIX-CONNECT:$(q "$SOCK") < $(q "$TMP/schema.json")" \
    c-limit "$(q "$LIMIT") $(q "$SOCK") query-qmp-schema"

# (e) Through qmp-proxy and through ssh, against direct, on a QEMU of their
# own: one monitor for the direct and ssh runs, one for the proxy.
ESOCK="$TMP/e.sock"
ESOCK2="$TMP/e2.sock"
"$QEMU" -M none -display none -nodefaults \
    -qmp "unix:$ESOCK,server=on,wait=off" \
    -qmp "unix:$ESOCK2,server=on,wait=off" >"$TMP/qemu2.log" 2>&1 &
QEMU2_PID=$!
await "the second QEMU" "$QEMU2_PID" "$TMP/qemu2.log" 200 sockets_exist "$ESOCK" "$ESOCK2"
PSOCK="$TMP/proxy.sock"
"$PROXY" --listen "$PSOCK" "$ESOCK2" 2>"$TMP/proxy.log" &
PROXY_PID=$!
await qmp-proxy "$PROXY_PID" "$TMP/proxy.log" 200 sockets_exist "$PSOCK"

# A private sshd on 127.0.0.1: throwaway host and client keys, a free
# port, a configuration of its own (nothing from /etc/ssh).
SSHDIR="$TMP/ssh"
mkdir -p "$SSHDIR" /run/sshd
ssh-keygen -q -t ed25519 -N '' -C qmp-bench -f "$SSHDIR/host_key"
ssh-keygen -q -t ed25519 -N '' -C qmp-bench -f "$SSHDIR/client_key"
cp "$SSHDIR/client_key.pub" "$SSHDIR/authorized_keys"
: >"$SSHDIR/sshd_config"
SSH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/sbin/sshd -D -e -f "$SSHDIR/sshd_config" -p "$SSH_PORT" -h "$SSHDIR/host_key" \
    -o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password \
    -o AuthorizedKeysFile="$SSHDIR/authorized_keys" -o StrictModes=no \
    -o PidFile=none -o AllowStreamLocalForwarding=yes 2>"$TMP/sshd.log" &
SSHD_PID=$!
cat >"$SSHDIR/ssh_config" <<CONF
Host qmp-bench
    HostName 127.0.0.1
    Port $SSH_PORT
    User $(id -un)
    IdentityFile $SSHDIR/client_key
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
CONF
await sshd "$SSHD_PID" "$TMP/sshd.log" 200 sshd_listening "$TMP/sshd.log"
export QMP_SSH_COMMAND="ssh -F $SSHDIR/ssh_config"
SSH_ADDR="ssh://qmp-bench$ESOCK"

log "checking outputs through qmp-proxy and ssh"
"$OURS" "$ESOCK" <"$TMP/script.txt" >"$TMP/direct.out"
cmp -s "$TMP/ours.out" "$TMP/direct.out" || die "the script's output differs on the second QEMU (see $TMP)"
"$OURS" "$PSOCK" <"$TMP/script.txt" >"$TMP/proxy.out"
cmp -s "$TMP/ours.out" "$TMP/proxy.out" || die "the script's output differs through qmp-proxy (see $TMP)"
"$OURS" "$SSH_ADDR" <"$TMP/script.txt" >"$TMP/ssh.out"
cmp -s "$TMP/ours.out" "$TMP/ssh.out" || die "the script's output differs through ssh (see $TMP)"

log "timing: script direct / through qmp-proxy / through ssh"
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
    --export-json "$TMP/hf-paths.json" \
    -n direct "$(q "$OURS") $(q "$ESOCK") < $(q "$TMP/script.txt")" \
    -n proxy "$(q "$OURS") $(q "$PSOCK") < $(q "$TMP/script.txt")" \
    -n ssh "$(q "$OURS") $(q "$SSH_ADDR") < $(q "$TMP/script.txt")" >&2
ONE_SSH=$(printf '%s' "$(q "$OURS") $(q "$SSH_ADDR") < $(q "$TMP/one.txt")")
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
    --export-json "$TMP/hf-paths-one.json" \
    -n direct "$(q "$OURS") $(q "$ESOCK") < $(q "$TMP/one.txt")" \
    -n proxy "$(q "$OURS") $(q "$PSOCK") < $(q "$TMP/one.txt")" \
    -n ssh "$ONE_SSH" >&2

# Peak RSS in KiB: the largest of RSS_RUNS runs.
rss() {
    local input=$1
    shift
    local max=0 kb
    for ((i = 0; i < RSS_RUNS; i++)); do
        kb=$(/usr/bin/time -f '%M' "$@" <"$input" 2>&1 >/dev/null | tail -n 1)
        [ "$kb" -gt "$max" ] && max=$kb
    done
    echo "$max"
}
log "measuring peak RSS"
RSS_ONE_OURS=$(rss "$TMP/one.txt" "$OURS" "$SOCK")
RSS_ONE_REF=$(rss "$TMP/one.txt" "${REF[@]}" "$SOCK")
RSS_SCHEMA_OURS=$(rss "$TMP/schema.txt" "$OURS" -p "$SOCK")
RSS_SCHEMA_REF=$(rss "$TMP/schema.txt" "${REF[@]}" -p "$SOCK")
RSS_ONE_LIMIT=$(rss /dev/null "$LIMIT" "$SOCK" query-status)

# --- fan-out ------------------------------------------------------------------

log "starting $FLEET QEMUs for the fan-out"
mkdir -p "$TMP/fleet"
FLEET_SOCKS=()
fleet_pids=()
for ((k = 0; k < FLEET; k++)); do
    sock="$TMP/fleet/vm$k.sock"
    "$QEMU" -M none -display none -nodefaults -name "vm$k" \
        -qmp "unix:$sock,server=on,wait=off" >"$TMP/fleet/vm$k.log" 2>&1 &
    FLEET_PIDS="$FLEET_PIDS $!"
    fleet_pids+=("$!")
    FLEET_SOCKS+=("$sock")
done
for ((k = 0; k < FLEET; k++)); do
    await "QEMU vm$k" "${fleet_pids[k]}" "$TMP/fleet/vm$k.log" 400 sockets_exist "${FLEET_SOCKS[k]}"
done
printf 'query-status\nquery-name\n' >"$TMP/fleet.txt"
# fleet_loop PROGRAM FILE: write to FILE a shell loop running PROGRAM (shell
# words, quoted) on each fleet socket in turn, the two commands on its
# standard input, stopping at the first failure.
fleet_loop() {
    local program=$1 sock
    {
        printf 'for s in'
        for sock in "${FLEET_SOCKS[@]}"; do printf ' %q' "$sock"; done
        printf '; do %s "$s" < %q || exit 1; done\n' "$program" "$TMP/fleet.txt"
    } >"$2"
}
fleet_loop "$REFQ" "$TMP/fleet-ref.sh"
fleet_loop "$(q "$OURS")" "$TMP/fleet-ours-loop.sh"
FANOUT="$(q "$OURS") -c query-status -c query-name"
for sock in "${FLEET_SOCKS[@]}"; do FANOUT="$FANOUT $(q "$sock")"; done

log "checking outputs (fan-out)"
sh -c "$FANOUT" >"$TMP/fanout.out" 2>"$TMP/fanout.err" || die "the fan-out failed: $(cat "$TMP/fanout.err")"
for ((k = 0; k < FLEET; k++)); do
    grep -qxF "${FLEET_SOCKS[k]}: {\"return\": {\"name\": \"vm$k\"}}" "$TMP/fanout.out" ||
        die "no tagged reply of vm$k in the fan-out (see $TMP)"
done
[ "$(wc -l <"$TMP/fanout.out")" -eq $((2 * FLEET)) ] || die "the fan-out printed $(wc -l <"$TMP/fanout.out") lines"
sh "$TMP/fleet-ref.sh" >"$TMP/fleet-ref.out"
sh "$TMP/fleet-ours-loop.sh" >"$TMP/fleet-ours-loop.out"
cmp -s "$TMP/fleet-ref.out" "$TMP/fleet-ours-loop.out" || die "ours and the reference differ on the fleet (see $TMP)"

log "timing: $FLEET VMs, one fan-out call / a loop of the reference / a loop of ours"
hyperfine --warmup 1 --runs "$RUNS" --style basic \
    --export-json "$TMP/hf-fleet.json" \
    -n fan-out "$FANOUT" \
    -n reference-loop "sh $(q "$TMP/fleet-ref.sh")" \
    -n ours-loop "sh $(q "$TMP/fleet-ours-loop.sh")" >&2
for pid in $FLEET_PIDS; do kill "$pid" 2>/dev/null || true; done
for pid in $FLEET_PIDS; do wait "$pid" 2>/dev/null || true; done
FLEET_PIDS=""

# --- through libvirt ----------------------------------------------------------

if [ "$LIBVIRT" = 1 ]; then
    virsh -c "$LIBVIRT_URI" list >/dev/null 2>&1 ||
        die "libvirtd does not answer on $LIBVIRT_URI (bash scripts/install-deps.sh starts it)"
    DOMAIN="qmp-bench-$$"
    cat >"$TMP/dom.xml" <<XML
<domain type='qemu'>
  <name>$DOMAIN</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>$QEMU</emulator></devices>
</domain>
XML
    log "starting transient domain $DOMAIN"
    virsh -c "$LIBVIRT_URI" create "$TMP/dom.xml" >/dev/null
    LIBVIRT_VERSION=$(virsh -c "$LIBVIRT_URI" version | awk '/Using library/ { print $NF }')

    # The same four commands as the socket script, in turn: for us in
    # shorthand, for virsh as JSON, one process each.
    JSON=(
        '{"execute":"query-status"}'
        '{"execute":"query-name"}'
        '{"execute":"query-version"}'
        '{"execute":"qom-list","arguments":{"path":"/machine"}}'
    )
    {
        for ((i = 0; i < LV_N; i++)); do printf '%s\n' "${SHORT[i % 4]}"; done
    } >"$TMP/lv-script.txt"
    {
        echo 'set -e'
        for ((i = 0; i < LV_N; i++)); do
            printf 'virsh -c %q qemu-monitor-command %q %q >/dev/null\n' \
                "$LIBVIRT_URI" "$DOMAIN" "${JSON[i % 4]}"
        done
    } >"$TMP/lv-virsh.sh"
    # The floor of libvirt's passthrough: virsh running the same commands in
    # one process, on one connection.
    {
        for ((i = 0; i < LV_N; i++)); do
            printf 'qemu-monitor-command %q %q\n' "$DOMAIN" "${JSON[i % 4]}"
        done
    } >"$TMP/lv-virsh-session.txt"

    log "checking outputs (libvirt)"
    "$OURS" --domain "$DOMAIN" --connect "$LIBVIRT_URI" <"$TMP/lv-script.txt" \
        >"$TMP/lv-ours.out" 2>"$TMP/lv-ours.err"
    got=$(grep -c '"return"' "$TMP/lv-ours.out")
    [ "$got" -eq "$LV_N" ] || die "ours printed $got replies through libvirt, expected $LV_N"
    grep -q 'tainted (custom-monitor)' "$TMP/lv-ours.err" || die "no taint notice on stderr"
    one_ours=$("$OURS" --domain "$DOMAIN" --connect "$LIBVIRT_URI" -c query-status 2>/dev/null)
    one_virsh=$(virsh -c "$LIBVIRT_URI" qemu-monitor-command "$DOMAIN" '{"execute":"query-status"}')
    case "$one_ours" in *'"running": true'*) ;; *) die "ours -c query-status: $one_ours" ;; esac
    case "$one_virsh" in *'"running":true'*) ;; *) die "virsh query-status: $one_virsh" ;; esac

    log "timing: libvirt script ($LV_N commands)"
    hyperfine --warmup 1 --runs "$LV_RUNS" --style basic \
        --export-json "$TMP/hf-lv-script.json" \
        -n ours "$(q "$OURS") --domain $(q "$DOMAIN") --connect $(q "$LIBVIRT_URI") < $(q "$TMP/lv-script.txt")" \
        -n virsh "bash $(q "$TMP/lv-virsh.sh")" \
        -n virsh-session "virsh -c $(q "$LIBVIRT_URI") < $(q "$TMP/lv-virsh-session.txt") > /dev/null" >&2
    # The two are close and this machine's load drifts: run them in turn
    # (alternating which goes first), not one series after the other as
    # hyperfine does; results in hyperfine's JSON shape.
    log "timing: libvirt, one command ($((RUNS * 6)) rounds, interleaved)"
    python3 - "$TMP/hf-lv-one.json" "$((RUNS * 6))" "$WARMUP" \
        "$OURS" --domain "$DOMAIN" --connect "$LIBVIRT_URI" -c query-status -- \
        virsh -c "$LIBVIRT_URI" qemu-monitor-command "$DOMAIN" '{"execute":"query-status"}' <<'PY'
import json, statistics, subprocess, sys, time

out, rounds, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rest = sys.argv[4:]
cut = rest.index("--")
commands = {"ours": rest[:cut], "virsh": rest[cut + 1:]}
times = {name: [] for name in commands}

def run(argv):
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start

for i in range(warmup + rounds):
    order = ["ours", "virsh"] if i % 2 == 0 else ["virsh", "ours"]
    for name in order:
        t = run(commands[name])
        if i >= warmup:
            times[name].append(t)
results = [{"command": name, "median": statistics.median(ts), "min": min(ts),
            "max": max(ts), "times": ts} for name, ts in times.items()]
json.dump({"results": results}, open(out, "w"))
PY
fi

# --- summary ----------------------------------------------------------------

CPU=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export N FLEET LV_N LV_RUNS LIBVIRT LIBVIRT_VERSION=${LIBVIRT_VERSION:-} \
    RUNS RSS_RUNS TMP CPU QEMU_VERSION SCHEMA_BYTES \
    RSS_ONE_OURS RSS_ONE_REF RSS_SCHEMA_OURS RSS_SCHEMA_REF RSS_ONE_LIMIT
export NPROC=$(nproc) REF_VERSION
export OURS_VERSION=$("$OURS" --version 2>/dev/null || echo "?")
python3 - <<'EOF'
import json, os

tmp = os.environ["TMP"]

def load(name):
    with open(f"{tmp}/hf-{name}.json") as f:
        res = json.load(f)["results"]
    return {r["command"]: r for r in res}

# Medians: robust against a busy machine; the spread is the min-max range.
def ms(r):
    return f'{r["median"] * 1000:.1f} ms ({r["min"] * 1000:.1f}–{r["max"] * 1000:.1f})'

def ratio(a, b):
    return b / a

n = os.environ["N"]
rows = []
goals = []
# (key, label, the run of ours in that file, goal vs the reference, goal
# vs socat, goal vs the C limit)
for key, label, which, goal_ref, goal_raw, goal_limit in [
    ("script", f"{n}-command script on stdin", "ours", 2.0, 1.0, None),
    ("one", "one command (`query-status`), on stdin", "ours", 20.0, None, 1.3),
    ("one", "one command (`-c query-status`)", "ours-c", 20.0, None, 1.3),
    ("schema", f"`-p` + `query-qmp-schema` ({int(os.environ['SCHEMA_BYTES']) // 1024} KiB out)", "ours", 3.0, None, 1.2),
]:
    r = load(key)
    ours, ref, raw, limit = r[which], r["reference"], r["socat"], r.get("c-limit")
    speedup = ratio(ours["median"], ref["median"])
    vs_raw = ours["median"] / raw["median"]
    vs_limit = ours["median"] / limit["median"] if limit else None
    if which == "ours-c":
        # The reference has no -c: its run on stdin is the other row's.
        rows.append((label, ms(ours), "(no `-c`)", ms(raw), ms(limit), "–", f"{vs_raw:.2f}x", f"{vs_limit:.2f}x"))
    else:
        rows.append((label, ms(ours), ms(ref), ms(raw), ms(limit) if limit else "–",
                     f"{speedup:.1f}x faster", f"{vs_raw:.2f}x", f"{vs_limit:.2f}x" if limit else "–"))
        goals.append((f"{label}: ours vs reference >= {goal_ref}x faster", speedup >= goal_ref, f"{speedup:.1f}x"))
    if goal_raw:
        goals.append((f"{label}: ours within {goal_raw}x of socat", vs_raw <= goal_raw, f"{vs_raw:.2f}x"))
    if goal_limit:
        goals.append((f"{label}: ours within {goal_limit}x of the C limit", vs_limit <= goal_limit, f"{vs_limit:.2f}x"))
# The same, both started without a shell (hyperfine -N): no correction.
r = load("one-direct")
o, lim = r["ours-c"], r["c-limit"]
vs_limit = o["median"] / lim["median"]
rows.append(("one command (`-c query-status`), started without a shell", ms(o), "–", "–", ms(lim),
             "–", "–", f"{vs_limit:.2f}x"))
goals.append(("one command (`-c`, no shell): ours within 1.3x of the C limit", vs_limit <= 1.3, f"{vs_limit:.2f}x"))

def mib(kb):
    return f"{int(kb) / 1024:.1f} MiB"

for label, o, rf, lim, goal in [
    ("peak RSS, one command", os.environ["RSS_ONE_OURS"], os.environ["RSS_ONE_REF"], os.environ["RSS_ONE_LIMIT"], 8.0),
    ("peak RSS, `-p query-qmp-schema`", os.environ["RSS_SCHEMA_OURS"], os.environ["RSS_SCHEMA_REF"], None, 4.0),
]:
    smaller = int(rf) / int(o)
    rows.append((label, mib(o), mib(rf), "–", mib(lim) if lim else "–", f"{smaller:.1f}x smaller", "–",
                 f"{int(o) / int(lim):.2f}x" if lim else "–"))
    goals.append((f"{label}: >= {goal:g}x smaller than the reference", smaller >= goal, f"{smaller:.1f}x"))

print()
print("## Performance")
print()
print(f"Machine: {os.environ['NPROC']} CPUs, {os.environ['CPU']}; {os.environ['QEMU_VERSION']} (`-M none`).")
print(f"Reference: qemu.qmp {os.environ['REF_VERSION']}; ours: {os.environ['OURS_VERSION']} (release build).")
print(f"Command: `scripts/bench.sh` (hyperfine, {os.environ['RUNS']} runs each; median (min–max); ratios of medians; RSS: GNU time, largest of {os.environ['RSS_RUNS']} runs).")
print()
print("Every figure is a whole process (start-up, connection, negotiation, the command, exit).")
print()
print("| measure | ours | reference | socat (raw socket) | C limit | ours vs reference | ours / socat | ours / C limit |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
def paths(name):
    with open(f"{tmp}/hf-{name}.json") as f:
        return {r["command"]: r for r in json.load(f)["results"]}

print()
print(f"Our shell directly, through `qmp-proxy` and through `ssh://` (sshd on 127.0.0.1), on a second QEMU (`-M none`) with two monitors:")
print()
print("| measure | direct | through qmp-proxy | proxy / direct | through ssh | ssh / direct |")
print("| --- | --- | --- | --- | --- | --- |")
for key, label in [("paths", f"{n}-command script on stdin"), ("paths-one", "one command (`query-status`)")]:
    r = paths(key)
    d, p, s = r["direct"], r["proxy"], r["ssh"]
    pr, sr = p["median"] / d["median"], s["median"] / d["median"]
    print(f"| {label} | {ms(d)} | {ms(p)} | {pr:.2f}x | {ms(s)} | {sr:.2f}x |")
    if key == "paths":
        goals.append((f"{label}: through qmp-proxy within 1.3x of direct", pr <= 1.3, f"{pr:.2f}x"))
fleet = os.environ["FLEET"]
r = paths("fleet")
f, rl, ol = r["fan-out"], r["reference-loop"], r["ours-loop"]
vs_ref, vs_ours = rl["median"] / f["median"], ol["median"] / f["median"]
print()
print(f"Fan-out: {fleet} QEMUs (`-M none`), `query-status` and `query-name` on each:")
print()
print("| measure | one fan-out call | loop of the reference | loop of ours | fan-out vs reference loop | fan-out vs our loop |")
print("| --- | --- | --- | --- | --- | --- |")
print(f"| {fleet} VMs, 2 commands each | {ms(f)} | {ms(rl)} | {ms(ol)} | {vs_ref:.1f}x faster | {vs_ours:.1f}x faster |")
goals.append((f"{fleet} VMs: one fan-out call >= 20x faster than a loop of the reference", vs_ref >= 20.0, f"{vs_ref:.1f}x"))
if os.environ["LIBVIRT"] == "1":
    lv_n = int(os.environ["LV_N"])
    script, one = load("lv-script"), load("lv-one")
    per = lambda r: r["median"] * 1000 / lv_n
    per_range = lambda r: f'{per(r):.2f} ms ({r["min"] * 1000 / lv_n:.2f}–{r["max"] * 1000 / lv_n:.2f})'
    lv_rows = []
    s_ours, s_virsh = script["ours"], script["virsh"]
    faster = s_virsh["median"] / s_ours["median"]
    lv_rows.append((f"{lv_n}-command script, per command", per_range(s_ours), per_range(s_virsh), f"{faster:.1f}x faster"))
    s_session = script["virsh-session"]
    lv_rows.append((f"(libvirt's floor: virsh running the {lv_n} commands in one process)", "–", per_range(s_session), f"{s_session['median'] / s_ours['median']:.2f}x faster"))
    goals.append((f"through libvirt, per command of a {lv_n}-command script: ours >= 20x faster than virsh", faster >= 20.0, f"{faster:.1f}x"))
    o_ours, o_virsh = one["ours"], one["virsh"]
    ratio1 = o_virsh["median"] / o_ours["median"]
    lv_rows.append(("one command (`-c query-status`), whole process", ms(o_ours), ms(o_virsh), f"{ratio1:.2f}x faster"))
    goals.append(("through libvirt, one whole-process command: ours no slower than virsh", ratio1 >= 1.0, f"{ratio1:.2f}x"))

print()
print("Goals:")
for text, ok, got in goals:
    print(f"- [{'x' if ok else ' '}] {text}: {got}")

if os.environ["LIBVIRT"] == "1":
    print()
    print("### Through libvirt (`--domain`)")
    print()
    print(f"A transient TCG domain (`-M pc`, 1 vCPU) on libvirt {os.environ['LIBVIRT_VERSION']} (`qemu:///system`), the same four commands in turn.")
    print(f"Command: `scripts/bench.sh` (script: hyperfine, {os.environ['LV_RUNS']} runs, figures divided by {lv_n}; one command: {int(os.environ['RUNS']) * 6} rounds running both in turn; median (min–max)).")
    print()
    print("| measure | `qmp-shell --domain` | `virsh qemu-monitor-command` | ours vs virsh |")
    print("| --- | --- | --- | --- |")
    for row in lv_rows:
        print("| " + " | ".join(row) + " |")
EOF
