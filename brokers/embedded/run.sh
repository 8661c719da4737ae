#!/usr/bin/env bash
# Run the network's embedded (amqtt) broker on 127.0.0.1, configured from the signed directory.
# Usage: brokers/embedded/run.sh [--home DIR] [--port N] [--log-level LEVEL]
set -euo pipefail
. "$(dirname "$0")/../i24net.sh"
exec "${i24net[@]}" broker --engine embedded "$@"
