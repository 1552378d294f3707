#!/usr/bin/env bash
# Proof that the differential suite cannot compare our build with itself:
# run it with a "reference" interpreter that passes every check the suite
# makes of the reference (it hands them to the real python3) but runs OUR
# binaries for the shell itself. Exactly the tests listed in
# EXPECTED_FAILURES must then fail, and every other test must build and
# pass: a build error, a crash of the harness or a test that starts failing
# for another reason is not proof, and neither is a listed test that passes.
#
#   bash scripts/swap-reference.sh
#
# Builds with cargo as configured (CARGO_TARGET_DIR is honoured); after
# `cargo test --workspace` nothing is rebuilt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The differential tests: a module of qmp-shell's test binary, run alone
# with a filter (libtest matches it against `MODULE::TEST` names).
TEST_BINARY=shell
MODULE=differential

# The differential tests that must fail when the reference is our own
# binary, each for what ours does differently on purpose (names within
# MODULE).
EXPECTED_FAILURES=(
    # --help, --version and --json tell the two programs apart.
    infra_reference_is_not_ours
    # Ours adds a hint about QMP_SOCKET after the reference's error line.
    cli_missing_address
    # Ours sorts integer keys of Python literals as strings under -p.
    difference_pretty_sorts_integer_keys_as_strings
    # Our wrap's banner names the QEMU version; the reference's does not.
    wrap_hmp_pc
    wrap_qmp_basic
    wrap_qmp_basic_vp
    wrap_qmp_transactions
)

# A candidate other than ours would make the swap meaningless.
unset QMP_DIFF_CANDIDATE

die() {
    echo "swap-reference: $*" >&2
    exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/swap-reference.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Our binaries, where cargo puts them (whatever CARGO_TARGET_DIR says).
cargo build --quiet -p qmp-shell --bins --message-format=json-render-diagnostics \
    >"$WORK/build.json" || die "cannot build qmp-shell"
REAL=$(command -v python3) || die "python3 is not on PATH"
executable() {
    "$REAL" -c '
import json, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == sys.argv[2] \
            and msg.get("executable"):
        print(msg["executable"])
        break
' "$WORK/build.json" "$1"
}
SHELL_BIN=$(executable qmp-shell)
WRAP_BIN=$(executable qmp-shell-wrap)
[[ -x "$SHELL_BIN" && -x "$WRAP_BIN" ]] ||
    die "cargo named no qmp-shell / qmp-shell-wrap executables (got '$SHELL_BIN', '$WRAP_BIN')"

FAKE="$WORK/bin"
mkdir "$FAKE"
cat >"$FAKE/python3" <<SH
#!/usr/bin/env bash
case "\${3:-}" in
  *"qmp_shell import main_wrap;"*) shift 3; exec "$WRAP_BIN" "\$@" ;;
  *"qmp_shell import main;"*) shift 3; exec "$SHELL_BIN" "\$@" ;;
  *) "$REAL" "\$@" | sed 's|^executable=.*|executable=$FAKE/python3|' ;;
esac
SH
chmod +x "$FAKE/python3"

# Every differential test, then each one's result.
cargo test --quiet -p qmp-shell --test "$TEST_BINARY" -- --list "$MODULE::" \
    >"$WORK/list" 2>"$WORK/list.err" ||
    { cat "$WORK/list.err" >&2; die "the differential tests do not build"; }
sed -n "s/^\\($MODULE::[A-Za-z0-9_:]*\\): test\$/\\1/p" "$WORK/list" | sort >"$WORK/all"
[[ -s "$WORK/all" ]] || die "the test binary '$TEST_BINARY' lists no $MODULE:: tests"

status=0
QMP_REFERENCE_PYTHON="$FAKE/python3" cargo test -p qmp-shell --test "$TEST_BINARY" -- "$MODULE::" \
    >"$WORK/log" 2>&1 || status=$?
sed -n 's/^test \([A-Za-z0-9_:]*\) \.\.\. FAILED$/\1/p' "$WORK/log" | sort >"$WORK/failed"
sed -n 's/^test \([A-Za-z0-9_:]*\) \.\.\. ok$/\1/p' "$WORK/log" | sort >"$WORK/passed"
printf '%s\n' "${EXPECTED_FAILURES[@]/#/$MODULE::}" | sort >"$WORK/expected"
comm -23 "$WORK/all" "$WORK/expected" >"$WORK/must_pass"

problems=()
if [[ $status -eq 0 ]]; then
    problems+=("the differential suite PASSED with our binary as the reference")
fi
grep -q '^test result: ' "$WORK/log" || problems+=("the differential suite did not run to its end")
while read -r t; do
    problems+=("expected to fail, but did not fail: $t")
done < <(comm -23 "$WORK/expected" "$WORK/failed")
while read -r t; do
    problems+=("failed, but is not an expected failure: $t")
done < <(comm -13 "$WORK/expected" "$WORK/failed")
while read -r t; do
    problems+=("did not pass: $t")
done < <(comm -23 "$WORK/must_pass" "$WORK/passed")
while read -r t; do
    problems+=("listed as an expected failure but no such test exists: $t")
done < <(comm -13 "$WORK/all" "$WORK/expected")

if ((${#problems[@]})); then
    cat "$WORK/log" >&2
    echo >&2
    for p in "${problems[@]}"; do
        echo "swap-reference: $p" >&2
    done
    exit 1
fi
echo "swap-reference: with our binary as the reference exactly the expected tests fail:"
sed 's/^/  /' "$WORK/failed"
echo "  ($(wc -l <"$WORK/passed") other tests passed)"
grep -E '^test result' "$WORK/log"
