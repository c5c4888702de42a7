#!/usr/bin/env bash
# A local Redis Cluster for the tests: 3 masters + 3 replicas of Debian's redis-server on free ports, no Docker.
#   .ci/redis-cluster.sh start [DIR]   starts (or finds running) the cluster kept in DIR; prints its 6 ports
#   .ci/redis-cluster.sh stop  [DIR]   stops it and removes DIR
#   .ci/redis-cluster.sh ports [DIR]   prints the ports of a running cluster
# DIR defaults to /tmp/idemfetch-redis-cluster. Idempotent, and serialised by a lock on DIR, so tests may call it.
set -euo pipefail

cmd="${1:-start}"
dir="${2:-/tmp/idemfetch-redis-cluster}"
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9

ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

running() {
  [ -f "$dir/ports" ] || return 1
  for p in $(cat "$dir/ports"); do ping "$p" || return 1; done
  redis-cli -h 127.0.0.1 -p "$(head -c 5 "$dir/ports" | tr -d ' ')" cluster info 2>/dev/null | grep -q "cluster_state:ok"
}

stop() {
  if [ -f "$dir/ports" ]; then
    for p in $(cat "$dir/ports"); do redis-cli -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  fi
  for pidfile in "$dir"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir" "$dir.lock"
}

# A port is free when nothing answers on it or on its cluster bus port (+10000); bash's /dev/tcp, no ss needed.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free() { ! listening "$1" && ! listening "$(($1 + 10000))"; }

# Ports 12000-22767, so that bus ports stay below Linux's ephemeral range (32768+).
launch() {
  stop
  mkdir -p "$dir"
  local p
  ports=()
  while [ "${#ports[@]}" -lt 6 ]; do
    p=$((12000 + RANDOM % 10768))
    free "$p" && [[ " ${ports[*]} " != *" $p "* ]] && ports+=("$p")
  done
  for p in "${ports[@]}"; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/$p" --cluster-enabled yes \
      --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --daemonize yes --pidfile "$dir/$p.pid" --logfile "$dir/$p/redis.log" 9>&-
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 1 100); do ping "$p" && break; sleep 0.05; done
    ping "$p" || return 1 # lost a race for the port: the caller tries other ports
  done
}

start() {
  if running; then cat "$dir/ports"; return; fi
  local ports=() attempt
  for attempt in 1 2 3; do launch && break; [ "$attempt" = 3 ] && { echo "redis-cluster: no free ports" >&2; exit 1; }; done
  local nodes=()
  for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 9>&- || {
    cat "$dir/create.log" >&2
    exit 1
  }
  echo "${ports[*]}" >"$dir/ports"
  for _ in $(seq 1 200); do
    ok=1
    for p in "${ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" cluster info | grep -q "cluster_state:ok" || ok=0
    done
    # Every replica known as one: the failover test needs them attached.
    [ "$(redis-cli -h 127.0.0.1 -p "${ports[0]}" cluster nodes | grep -c slave)" = 3 ] || ok=0
    for p in "${ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" info replication | grep -q "master_link_status:down" && ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "redis-cluster: cluster_state never became ok" >&2; exit 1; }
  cat "$dir/ports"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  ports) running && cat "$dir/ports" ;;
  *) echo "usage: $0 start|stop|ports [DIR]" >&2; exit 2 ;;
esac
