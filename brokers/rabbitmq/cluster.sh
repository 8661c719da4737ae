#!/usr/bin/env bash
# A 3-member RabbitMQ 3.10 cluster with the MQTT plugin, on 127.0.0.1 only, for trials.
#
#   cluster.sh start DIR BASEPORT [classic|quorum]   start 3 members, cluster them, add a user
#   cluster.sh stop DIR                              stop every member and the private epmd
#   cluster.sh kill DIR K                            SIGKILL member K (1..3)
#   cluster.sh restart DIR K                         start member K again (it rejoins by itself)
#   cluster.sh status DIR                            rabbitmqctl cluster_status via member 1
#
# Ports, for member K with B = BASEPORT + 10*(K-1): MQTT B, AMQP B+1, Erlang distribution B+2.
# One private epmd listens on 127.0.0.1:BASEPORT+9; the CLI tools use BASEPORT+30..+39.
# Everything lives under DIR: DIR/home/.erlang.cookie (the shared cookie, 0400), DIR/credentials
# (the MQTT user and password, 0600), DIR/node-K/{rabbitmq.conf,mnesia,log,pid,console.log}.
# The third argument picks mqtt.durable_queue_type for clean_session=False QoS 1 sessions:
# classic (RabbitMQ's default: one copy, on the node the client was connected to when it first
# subscribed) or quorum (Raft-replicated over all members). Nothing runs as a system service.
set -euo pipefail

RMQ_SBIN=/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/sbin
[ -x "$RMQ_SBIN/rabbitmq-server" ] || RMQ_SBIN=$(dirname "$(readlink -f /usr/lib/rabbitmq/bin/rabbitmq-server)")
MEMBERS=3
MQTT_USER=i24-trial

die() { echo "cluster.sh: $*" >&2; exit 1; }

# Environment shared by the server and the CLI of member $1 (reads DIR and BASE).
member_env() {
  local k=$1 b=$((BASE + 10 * ($1 - 1)))
  export HOME="$DIR/home"                               # the Erlang cookie is read from here
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$((BASE + 9))
  export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"  # not /etc/rabbitmq/rabbitmq-env.conf
  export RABBITMQ_NODENAME="rabbit-$k@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$((b + 1))
  export RABBITMQ_DIST_PORT=$((b + 2))
  export RABBITMQ_CONFIG_FILE="$DIR/node-$k/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/node-$k/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$DIR/node-$k/mnesia" RABBITMQ_LOG_BASE="$DIR/node-$k/log"
  export RABBITMQ_PID_FILE="$DIR/node-$k/pid"
  export RABBITMQ_PLUGINS_EXPAND_DIR="$DIR/node-$k/plugins-expand"
  export RABBITMQ_SCHEDULER_BIND_TYPE=u                 # 3 VMs share 2 cores: do not pin
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_DIST_PORT_MIN=$((BASE + 30)) RABBITMQ_CTL_DIST_PORT_MAX=$((BASE + 39))
}

ctl() { local k=$1; shift; (member_env "$k"; "$RMQ_SBIN/rabbitmqctl" -q -n "rabbit-$k@localhost" "$@"); }

start_member() {
  local k=$1
  ( member_env "$k"
    setsid "$RMQ_SBIN/rabbitmq-server" >>"$DIR/node-$k/console.log" 2>&1 </dev/null & )
}

beam_pid() { cat "$DIR/node-$1/pid" 2>/dev/null || true; }

wait_member() {  # until member $1 answers and its MQTT port accepts connections
  local k=$1 b=$((BASE + 10 * ($1 - 1)))
  ctl "$k" wait "$DIR/node-$k/pid" --timeout 120 >/dev/null
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$b") 2>/dev/null && return 0
    sleep 0.1
  done
  die "member $k: MQTT port $b never opened"
}

load_dir() {
  DIR=$(readlink -f "${1:?DIR}")
  [ -f "$DIR/baseport" ] || die "$DIR holds no cluster (no baseport file)"
  BASE=$(cat "$DIR/baseport")
}

cmd_start() {
  DIR=${1:?usage: cluster.sh start DIR BASEPORT [classic|quorum]}
  BASE=${2:?usage: cluster.sh start DIR BASEPORT [classic|quorum]}
  local qtype=${3:-classic}
  case $qtype in classic|quorum) ;; *) die "queue type must be classic or quorum";; esac
  mkdir -p "$DIR"; DIR=$(readlink -f "$DIR")
  [ -e "$DIR/baseport" ] && die "$DIR already holds a cluster: stop it and remove the folder"
  echo "$BASE" >"$DIR/baseport"
  echo "$qtype" >"$DIR/queue_type"
  # A start that fails half-way stops whatever it had started (members, epmd).
  STARTED=0
  trap 'if [ "$STARTED" = 0 ]; then echo "cluster.sh: start failed, stopping" >&2; cmd_stop "$DIR" >/dev/null 2>&1 || true; fi' EXIT
  mkdir -p "$DIR/home"; chmod 700 "$DIR/home"
  head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DIR/home/.erlang.cookie"
  chmod 400 "$DIR/home/.erlang.cookie"
  : >"$DIR/rabbitmq-env.conf"
  local password; password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  (umask 077; printf '%s\n%s\n' "$MQTT_USER" "$password" >"$DIR/credentials")
  local k b
  for k in $(seq 1 $MEMBERS); do
    b=$((BASE + 10 * (k - 1)))
    mkdir -p "$DIR/node-$k/mnesia" "$DIR/node-$k/log"
    echo '[rabbitmq_mqtt].' >"$DIR/node-$k/enabled_plugins"
    cat >"$DIR/node-$k/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((b + 1))
mqtt.listeners.tcp.default = 127.0.0.1:$b
mqtt.allow_anonymous = false
mqtt.durable_queue_type = $qtype
distribution.listener.interface = 127.0.0.1
log.file.level = info
EOF
  done
  # A private epmd on loopback, so nothing is exposed and the system's epmd is left alone.
  epmd -address 127.0.0.1 -port $((BASE + 9)) -daemon
  for k in $(seq 1 $MEMBERS); do start_member "$k"; done
  for k in $(seq 1 $MEMBERS); do wait_member "$k"; done
  for k in $(seq 2 $MEMBERS); do
    ctl "$k" stop_app
    ctl "$k" join_cluster rabbit-1@localhost
    ctl "$k" start_app
  done
  for k in $(seq 2 $MEMBERS); do wait_member "$k"; done
  ctl 1 add_user "$MQTT_USER" "$password" >/dev/null
  ctl 1 set_permissions -p / "$MQTT_USER" '.*' '.*' '.*'
  ctl 1 delete_user guest
  STARTED=1
  echo "rabbitmq cluster up: MQTT on 127.0.0.1:$BASE,$((BASE + 10)),$((BASE + 20)) (queue type $qtype)"
}

cmd_kill() {
  load_dir "$1"; local k=${2:?member number}
  local pid; pid=$(beam_pid "$k")
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$DIR/node-$k/pid"
}

cmd_restart() {
  load_dir "$1"; local k=${2:?member number}
  local pid; pid=$(beam_pid "$k")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then die "member $k is still running"; fi
  start_member "$k"
  wait_member "$k"
}

cmd_stop() {
  load_dir "$1"
  local k pid pids=""
  for k in $(seq 1 $MEMBERS); do
    pid=$(beam_pid "$k")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      pids="$pids $pid"
      (ctl "$k" stop >/dev/null 2>&1 || true) &
    fi
  done
  wait
  # rabbitmqctl stop returns while the VM is still halting (and removes the pid file first):
  # wait for the pids noted above, then SIGKILL whatever is left, by its own pid.
  for _ in $(seq 1 300); do
    local alive=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for k in $(seq 1 $MEMBERS); do rm -f "$DIR/node-$k/pid"; done
  # Our epmd: the process listening on 127.0.0.1:BASEPORT+9, found by its port, killed by pid.
  local epmd_pids
  epmd_pids=$(ss -Hltnp "sport = :$((BASE + 9))" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
  for pid in $epmd_pids; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ] && kill "$pid" 2>/dev/null || true
  done
}

cmd_status() { load_dir "$1"; ctl 1 cluster_status; }

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  kill) shift; cmd_kill "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
