#!/usr/bin/env bash
# Time query-status through libvirt: the library's libvirt transport (one
# connection, commands one after another) against `virsh qemu-monitor-command`
# (one process per command), on a throwaway transient TCG domain.
#
#   bash scripts/bench-libvirt.sh [COUNT]      (default 500)
#
# Needs libvirtd answering on qemu:///system (bash scripts/install-deps.sh
# starts it). The domain is destroyed on every exit path.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

COUNT=${1:-500}
URI=qemu:///system

if ! virsh -c "$URI" list >/dev/null 2>&1; then
    echo "bench-libvirt: ERROR: libvirtd does not answer on $URI; run: bash scripts/install-deps.sh" >&2
    exit 1
fi

cargo build --release -p qmp-client --example libvirt_bench

dir=$(mktemp -d)
chmod 0755 "$dir"
name="qmp-bench-$$"
cleanup() {
    virsh -c "$URI" destroy "$name" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/dom.xml" <<XML
<domain type='qemu'>
  <name>$name</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
XML
virsh -c "$URI" create "$dir/dom.xml" >/dev/null
echo "bench-libvirt: $(virsh -c "$URI" version | grep -E 'library|hypervisor' | tr -s ' ' | paste -sd';')"
echo "bench-libvirt: load average: $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/examples/libvirt_bench "$name" "$COUNT" "$URI"
