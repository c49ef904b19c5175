#!/usr/bin/env bash
# Rust server benchmark: the warm-call latency of the trivial Rust server
# (examples/exit_with) through our client, side by side in one hyperfine
# run with /bin/true, the same Rust server through the reference C client,
# and the reference C client + Perl library (Proc::Prefork::Interp) on a
# trivial script.
# Usage: bench/rust-server.sh [runs]     (from anywhere; builds first)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-200}
c_client=/usr/bin/prefork-interp
command -v hyperfine >/dev/null || { echo "bench: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -x "$c_client" ] || { echo "bench: needs $c_client (apt-get install chiark-utils-bin)" >&2; exit 1; }
[ -f /usr/share/perl5/Proc/Prefork/Interp.pm ] || { echo "bench: needs chiark-scripts" >&2; exit 1; }

(cd "$top" && cargo build --release --quiet && cargo build --release --quiet --example exit_with)
ours=${PREFORK_INTERP_CLIENT:-$top/target/release/prefork-interp}

work=$(mktemp -d)
# A private copy, so this run has servers of its own.
rust="$work/exit_with"
cp "$top/target/release/examples/exit_with" "$rust"
perl_script="$work/trivial.pl"
cp "$top/bench/trivial.pl" "$perl_script"   # a private copy: servers of its own
cleanup() {
    (cd "$work" && "$ours" --kill -U "$rust" 0 && "$ours" --kill -U perl "$perl_script") || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# Both clients must find the same servers: use the default run directory.
unset PREFORK_INTERP_RUN_DIR
"$ours" -U "$rust" 0 >/dev/null         # start the servers
"$c_client" -U perl "$perl_script"

hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/warm.json" \
    -n "/bin/true" "/bin/true" \
    -n "Rust client + Rust server (exit_with), warm" "$ours -U $rust 0" \
    -n "C client + Rust server (exit_with), warm" "$c_client -U $rust 0" \
    -n "C client + Perl library (trivial script), warm" "$c_client -U perl $perl_script"

python3 - "$work/warm.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
for r in res:
    print(f"median {r['median']*1e3:8.3f} ms  (mean {r['mean']*1e3:.3f} ± {r['stddev']*1e3:.3f})  {r['command']}")
PY
