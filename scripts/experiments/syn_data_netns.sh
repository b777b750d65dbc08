#!/bin/sh
# Two namespaces on a veth pair, addresses in 198.18.0.0/15 only.
set -e
case "$1" in
up)
  ip netns add t2srv; ip netns add t2cli
  ip link add t2s type veth peer name t2c
  ip link set t2s netns t2srv; ip link set t2c netns t2cli
  ip -n t2srv addr add 198.18.200.1/24 dev t2s; ip -n t2cli addr add 198.18.200.2/24 dev t2c
  for n in t2srv t2cli; do ip -n $n link set lo up; done
  ip -n t2srv link set t2s up; ip -n t2cli link set t2c up
  # The client's kernel has no socket for the raw client's connection: keep it from resetting.
  ip netns exec t2cli nft add table ip t2; ip netns exec t2cli nft "add chain ip t2 out { type filter hook output priority 0 ; }"; ip netns exec t2cli nft add rule ip t2 out tcp flags rst drop
  ;;
down)
  [ -f /tmp/t2/nginx.pid ] && kill "$(cat /tmp/t2/nginx.pid)" 2>/dev/null || true
  ip netns del t2srv 2>/dev/null || true; ip netns del t2cli 2>/dev/null || true ;;
esac
