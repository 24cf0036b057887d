#!/usr/bin/env bash
# A 2-rank training across two "hosts" on one machine: two network namespaces joined by
# a veth pair, Open MPI between them over TCP, each rank in its own namespace, so that
# every gradient crosses a network interface as it would between two machines.
#
#   distributed/scripts/two-hosts.sh [TESSERA] [TRAIN ARGS...]
#
# TESSERA defaults to target/release/tessera (built with --features mpi). Needs root
# (ip netns); where namespaces cannot be made it says so and exits 0. Leaves nothing
# behind: the namespaces are removed on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tessera="${1:-$root/target/release/tessera}"
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(vit train --dim 32 --depth 2 --heads 2 --patch 8 --batch 64
                               --epochs 1 --max-steps 40 --threads 1 --quiet)
a=tsr-host-a b=tsr-host-b net=10.77.0 # addresses of the two test hosts only
if ! command -v ip >/dev/null 2>&1; then
  echo "two-hosts: the ip command (iproute2) is missing; skipped"
  exit 0
fi
if ! ip netns add "$a" 2>/dev/null; then
  echo "two-hosts: network namespaces are not permitted here (ip netns add failed); skipped"
  exit 0
fi
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$b"
ip link add veth-a netns "$a" type veth peer name veth-b netns "$b"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" addr add "$net.1/24" dev veth-a && ip -n "$a" link set veth-a up
ip -n "$b" addr add "$net.2/24" dev veth-b && ip -n "$b" link set veth-b up

# Open MPI starts its daemon on the other host with this in place of ssh.
agent="$(mktemp)"
out="$(mktemp -d)"
trap 'cleanup; rm -rf "$agent" "$out"' EXIT
cat > "$agent" <<AGENT
#!/bin/sh
# $0 HOST COMMAND...: COMMAND in the namespace of HOST.
host="\$1"; shift
case "\$host" in
  $net.1) ns=$a ;;
  *) ns=$b ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$agent"

echo "two-hosts: rank 0 on $net.1 ($a), rank 1 on $net.2 ($b), TCP over veth"
start=$(date +%s.%N)
ip netns exec "$a" mpirun --allow-run-as-root -n 2 --host "$net.1:1,$net.2:1" \
  --mca plm_rsh_agent "$agent" --mca btl tcp,self \
  --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
  "$tessera" "${args[@]}" --out "$out/run"
end=$(date +%s.%N)
stat() { ip netns exec "$a" cat "/sys/class/net/veth-a/statistics/$1"; }
secs=$(awk "BEGIN { printf \"%.2f\", $end - $start }")
echo "two-hosts: done in $secs s; veth-a sent $(stat tx_bytes) and received $(stat rx_bytes) bytes; metrics:"
cat "$out/run/metrics.jsonl"
# The run must have trained to the end and crossed the link (the gradients alone are
# tens of kilobytes a step).
if ! grep -q '"step":' "$out/run/metrics.jsonl" || [ "$(stat tx_bytes)" -lt 100000 ]; then
  echo "two-hosts: the run did not train across the link" >&2
  exit 1
fi
