#!/usr/bin/env bash
# Proof that the differential suite cannot compare our build with itself:
# run it with a "reference" interpreter that passes every check the suite
# makes of the reference (it hands them to the real python3) but runs OUR
# binaries for the shell itself. The suite must fail; this script exits 0
# only if it does, and prints which tests caught the swap.
#
#   bash scripts/swap-reference.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --quiet -p qmp-shell
ROOT=$(pwd)
FAKE=$(mktemp -d "${TMPDIR:-/tmp}/swap-reference.XXXXXX")
trap 'rm -rf "$FAKE"' EXIT
REAL=$(command -v python3)
cat >"$FAKE/python3" <<SH
#!/usr/bin/env bash
case "\${3:-}" in
  *"qmp_shell import main_wrap;"*) shift 3; exec "$ROOT/target/debug/qmp-shell-wrap" "\$@" ;;
  *"qmp_shell import main;"*) shift 3; exec "$ROOT/target/debug/qmp-shell" "\$@" ;;
  *) "$REAL" "\$@" | sed 's|^executable=.*|executable=$FAKE/python3|' ;;
esac
SH
chmod +x "$FAKE/python3"

if QMP_REFERENCE_PYTHON="$FAKE/python3" cargo test --quiet -p qmp-shell --test differential \
    >"$FAKE/log" 2>&1; then
    echo "swap-reference: the differential suite PASSED with our binary as the reference" >&2
    exit 1
fi
echo "swap-reference: the differential suite fails with our binary as the reference:"
# The names under the last "failures:" heading, then the count.
awk '/^failures:$/ { n++; next } n == 2 && /^    [a-z0-9_]+$/ { print "  " $1 } ' "$FAKE/log"
grep -E '^test result' "$FAKE/log"
