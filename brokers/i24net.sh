# Sourced by the brokers' run.sh scripts: sets the array "i24net" to the i24net command (on
# PATH, else the checkout's .venv), or exits with a clear error.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v i24net >/dev/null 2>&1; then
  i24net=(i24net)
elif [ -x "$root/.venv/bin/i24net" ]; then
  i24net=("$root/.venv/bin/i24net")
else
  echo "ERROR: i24net is not installed; run 'make install' in $root" >&2
  exit 1
fi
