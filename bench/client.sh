#!/usr/bin/env bash
# Client benchmark: our client against the reference C client, side by side
# in one hyperfine run, on the same warm server (the reference Perl
# library serving a trivial script), and `--help` start-up.
# Usage: bench/client.sh [path/to/prefork-interp] [runs]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
ours=$(realpath "${1:-${PREFORK_INTERP_CLIENT:-$top/target/release/prefork-interp}}")
runs=${2:-200}
c_client=/usr/bin/prefork-interp
command -v hyperfine >/dev/null || { echo "bench: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -x "$c_client" ] || { echo "bench: needs $c_client (apt-get install chiark-utils-bin)" >&2; exit 1; }

work=$(mktemp -d)
script="$work/trivial.pl"
cp "$top/bench/trivial.pl" "$script"   # a private copy: servers of its own
cleanup() {
    (cd "$work" && "$ours" --kill -U perl "$script") || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# Both clients must find the same server: use the default run directory.
unset PREFORK_INTERP_RUN_DIR
"$c_client" -U perl "$script"   # start the server

hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/warm.json" \
    -n "C client, warm call" "$c_client -U perl $script" \
    -n "Rust client, warm call" "$ours -U perl $script"
hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/help.json" \
    -n "C client --help" "$c_client --help" \
    -n "Rust client --help" "$ours --help"

python3 - "$work/warm.json" "$work/help.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    res = json.load(open(path))["results"]
    c, r = res[0]["median"], res[1]["median"]
    print(f"median: {res[0]['command']}: {c*1e3:.3f} ms; {res[1]['command']}: {r*1e3:.3f} ms; "
          f"ratio Rust/C = {r/c:.2f}")
PY
