#!/usr/bin/env bash
# Installs what the kernel datapath and the lab need (Debian). Idempotent; skips apt when all is present.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang llvm)
[ -e /usr/include/bpf/libbpf.h ] || need+=(libbpf-dev)
ls /usr/lib/*/libbpf.so.1 >/dev/null 2>&1 || need+=(libbpf1)
command -v bpftool >/dev/null || need+=(bpftool)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v curl >/dev/null || need+=(curl)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v sockperf >/dev/null || need+=(sockperf)
command -v iptables >/dev/null || need+=(iptables)
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)  # make bench-l7: the HTTP load generator
command -v nft >/dev/null || need+=(nftables)
command -v dig >/dev/null || need+=(dnsutils)
command -v openssl >/dev/null || need+=(openssl)
command -v chromium >/dev/null || need+=(chromium)  # tests/test_graphpage.py: the html page in a browser
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# bpffs is not mounted on a fresh machine of this kind; the agent needs it for pins.
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi
