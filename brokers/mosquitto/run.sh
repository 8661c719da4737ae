#!/usr/bin/env bash
# Run the network's Mosquitto broker on 127.0.0.1, configured from the signed directory.
# Usage: brokers/mosquitto/run.sh [--home DIR] [--port N] [--log-level LEVEL]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if command -v i24net >/dev/null 2>&1; then
  i24net=(i24net)
elif [ -x "$root/.venv/bin/i24net" ]; then
  i24net=("$root/.venv/bin/i24net")
else
  echo "ERROR: i24net is not installed; run 'make install' in $root" >&2
  exit 1
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "ERROR: mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)" >&2
  exit 1
fi
exec "${i24net[@]}" broker --engine mosquitto "$@"
