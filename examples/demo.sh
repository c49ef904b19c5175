#!/usr/bin/env bash
# Run examples/demo.py directly, then through prefork-interp cold and warm,
# and show the times. Usage: examples/demo.sh [path/to/prefork-interp]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$top" && realpath "${1:-target/release/prefork-interp}")
export PYTHONPATH="$top/python${PYTHONPATH:+:$PYTHONPATH}"
export PREFORK_INTERP_RUN_DIR
PREFORK_INTERP_RUN_DIR=$(mktemp -d)
trap '"$bin" --kill -U python3 "$top/examples/demo.py"; rm -rf "$PREFORK_INTERP_RUN_DIR"' EXIT
TIMEFORMAT='    %3R s'
echo "direct run (python3 examples/demo.py 1000):"
time python3 "$top/examples/demo.py" 1000
echo "through prefork-interp, first call (starts the server):"
time "$bin" -U python3 "$top/examples/demo.py" 1000
for n in 2000 3000 4000; do
    echo "through prefork-interp, warm call:"
    time "$bin" -U python3 "$top/examples/demo.py" "$n"
done
