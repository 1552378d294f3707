#!/usr/bin/env bash
# Build the release packages into dist/ (wiped first):
#
#   dist/qmp_shell-VERSION-py3-none-manylinux_2_28_x86_64.whl
#       `pip install` it: qmp-shell, qmp-shell-wrap and qmp-proxy on PATH,
#       native executables for any x86_64 Linux with glibc 2.28 or newer;
#       no Python code, no Rust needed.
#   dist/qmp-shell_VERSION-1_amd64.deb
#       the same programs in /usr/bin, their man pages and bash, zsh and
#       fish completions, the README and the licence.
#
# The programs are compiled once (release profile: fat LTO), by maturin
# with zig as the linker against glibc 2.28's symbols (what makes the wheel
# manylinux_2_28); the .deb packs those same binaries (cargo-deb
# --no-build), with the man pages and completions they print
# (`PROGRAM --generate KIND`).
#
# Installs its tools where missing, from the registries, by name:
# cargo-deb (cargo install, into ~/.cargo/bin), and maturin and ziglang
# (PyPI) into a private venv under the build directory
# (target/package-tools/venv), so the system Python is left alone.
#
# Environment:
#   DEB_MAINTAINER  the .deb's Maintainer ("Name <email>"); default: the
#                   author of the commit being packaged.
#   PYTHON          the Python that creates the tools' venv (default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# The programs shipped. The wheel holds the binaries of crates/qmp-shell
# (maturin's `bindings = "bin"`, see pyproject.toml) and, through the
# wheel's data directory (`data = "target/wheel-data"`), those of the other
# crates (OTHER_CRATES: qmp-mcp, whose tokio stays out of the others),
# compiled the same way just before. The .deb takes them all and what they
# generate (see [package.metadata.deb] in crates/qmp-shell/Cargo.toml).
# Each program's --generate (crates/qmp-shell/src/generate.rs) gives its
# man page and completions.
PROGRAMS=(qmp-shell qmp-shell-wrap qmp-proxy qmp-mcp)
OTHER_CRATES=(qmp-mcp)

TRIPLE=x86_64-unknown-linux-gnu
MATURIN_VERSION=1.16.0
ZIGLANG_VERSION=0.15.2
CARGO_DEB_MAJOR=3
PYTHON=${PYTHON:-python3}

say() { echo "package: $*"; }

target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
tools=$target_dir/package-tools
release=$target_dir/$TRIPLE/release
generated=$release/generated
dist=$root/dist

# --- tools -------------------------------------------------------------------
venv=$tools/venv
if [ "$("$venv/bin/maturin" --version 2>/dev/null)" != "maturin $MATURIN_VERSION" ] ||
    [ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
    say "installing maturin $MATURIN_VERSION and ziglang $ZIGLANG_VERSION from PyPI into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "maturin==$MATURIN_VERSION" "ziglang==$ZIGLANG_VERSION"
fi
say "$("$venv/bin/maturin" --version), zig $("$venv/bin/python" -m ziglang version)"

if ! cargo deb --version 2>/dev/null | grep -q "^cargo-deb $CARGO_DEB_MAJOR\."; then
    say "installing cargo-deb $CARGO_DEB_MAJOR.x (cargo install)"
    cargo install cargo-deb --locked --version "^$CARGO_DEB_MAJOR"
fi
say "$(cargo deb --version)"

maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
if [ -z "$maintainer" ]; then
    echo "package: ERROR: not a git checkout: set DEB_MAINTAINER='Name <email>' for the .deb" >&2
    exit 1
fi

rm -rf "$dist"
mkdir -p "$dist"

# --- the programs, and the wheel ---------------------------------------------
say "building the programs and the wheel (maturin --zig, $TRIPLE, glibc 2.28)"
wheel_data=$root/target/wheel-data
rm -rf "$wheel_data" "$tools/other-wheels"
mkdir -p "$wheel_data/scripts"
for crate in "${OTHER_CRATES[@]}"; do
    # Its own wheel is thrown away: only the binary, built as the others are,
    # goes into the one wheel.
    PATH=$venv/bin:$PATH maturin build --release --zig --target "$TRIPLE" \
        -m "crates/$crate/Cargo.toml" --out "$tools/other-wheels"
    cp "$release/$crate" "$wheel_data/scripts/"
done
PATH=$venv/bin:$PATH maturin build --release --zig --target "$TRIPLE" --out "$dist"

# --- what the programs generate ----------------------------------------------
rm -rf "$generated"
mkdir -p "$generated"/{man,bash,zsh,fish}
for program in "${PROGRAMS[@]}"; do
    bin=$release/$program
    # Compressed as Debian's policy wants (cargo-deb compresses only the
    # pages it did not find in the build directory).
    "$bin" --generate man | gzip -9n >"$generated/man/$program.1.gz"
    "$bin" --generate complete-bash >"$generated/bash/$program"
    "$bin" --generate complete-zsh >"$generated/zsh/_$program"
    "$bin" --generate complete-fish >"$generated/fish/$program.fish"
done
say "man pages and completions of ${PROGRAMS[*]} in $generated"

# --- the .deb, from the same binaries ----------------------------------------
say "packing the .deb (cargo deb --no-build)"
cargo deb -p qmp-shell --target "$TRIPLE" --no-build \
    --maintainer "$maintainer" --output "$dist"

# --- exactly one of each -------------------------------------------------------
shopt -s nullglob
debs=("$dist"/*.deb)
wheels=("$dist"/*.whl)
others=$(find "$dist" -mindepth 1 -not -name '*.deb' -not -name '*.whl')
if [ "${#debs[@]}" -ne 1 ] || [ "${#wheels[@]}" -ne 1 ] || [ -n "$others" ]; then
    echo "package: ERROR: dist/ should hold one .deb and one .whl, but holds:" >&2
    ls -l "$dist" >&2
    exit 1
fi
say "done:"
ls -l "$dist"
