#!/usr/bin/env bash
# Run the network's Mosquitto broker on 127.0.0.1, configured from the signed directory.
# Usage: brokers/mosquitto/run.sh [--home DIR] [--port N] [--log-level LEVEL]
set -euo pipefail
. "$(dirname "$0")/../i24net.sh"
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "ERROR: mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)" >&2
  exit 1
fi
exec "${i24net[@]}" broker --engine mosquitto "$@"
