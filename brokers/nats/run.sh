#!/usr/bin/env bash
# Run the network's NATS cluster (3 members by default) on 127.0.0.1, configured from the
# signed directory: MQTT on the base port + 10*(k-1) for member k.
# Usage: brokers/nats/run.sh [--home DIR] [--port N] [--log-level LEVEL]
set -euo pipefail
. "$(dirname "$0")/../i24net.sh"
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  echo "ERROR: nats-server is not installed (Debian: apt-get install nats-server)" >&2
  exit 1
fi
exec "${i24net[@]}" broker --engine nats "$@"
