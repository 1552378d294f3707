#!/usr/bin/env bash
# The one command that runs the whole test suite (README quick start, .ci/run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    echo
    echo "==> $*"
    "$@"
}

# ---------------------------------------------------------------------------
# STEPS: the suite, in order.  Add new steps to this list.
# ---------------------------------------------------------------------------
step bash scripts/install-deps.sh
step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets -- -D warnings
# The API documentation builds without a broken link or a warning.
step env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step cargo test --workspace
# The differential tests cannot pass by comparing our build with itself:
# with our binaries posing as the reference, exactly the known tests fail
# (reuses the build above).
step bash scripts/swap-reference.sh
# Bounded fuzzing of the shorthand parser, the decoder and the renderer
# (installs cargo-fuzz when missing); fails on any crash.
step bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
# The crates as crates.io would get them: packed, then built from the
# packed sources alone.
package_crates() {
    # Cargo unpacks each packed crate into its registry cache, and builds
    # it as a registry crate, whose sources it takes as unchanging: with
    # the version unchanged, a copy or a build left by an earlier run
    # would be verified instead of today's sources.
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/qmp-{client,shell,mcp}-[0-9]*
    cargo clean --quiet --profile dev -p qmp-client -p qmp-shell -p qmp-mcp
    cargo package --workspace
}
step package_crates
# The release packages (dist/: a .deb and a manylinux wheel; installs
# cargo-deb, and maturin and ziglang in a private venv, where missing), then
# a check of what they hold and that they work once installed.
step bash scripts/package.sh
step bash scripts/check-package.sh
# --- add further steps above this line -------------------------------------

echo
echo "==> all steps passed"
