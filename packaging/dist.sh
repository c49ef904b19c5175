#!/usr/bin/env bash
# Build the project's packages into OUTDIR (default target/packages):
#
#   packaging/dist.sh [OUTDIR] [python] [perl] [crate] [deb]   (default: all)
#
#   python  prefork_interp-VERSION.tar.gz and -py3-none-any.whl
#           (python3 -m build; isolated, so it fetches setuptools>=77, unless
#           the installed setuptools is that recent: then offline)
#   perl    Prefork-Interp-VERSION.tar.gz (perl Makefile.PL; make manifest dist)
#   crate   prefork-interp-VERSION.crate (cargo package, which builds it)
#   deb     prefork-interp-rs_VERSION-1_ARCH.deb (packaging/deb.sh)
#
# The Python and Perl packages are built from copies, so the tree is left
# as it was. Prints each package's path.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/target/packages}
[ $# -gt 0 ] && shift
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(python perl crate deb)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/prefork-interp-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Copies src (a directory of the tree) to $work/name, without build output.
copy() {
    mkdir "$work/$2"
    (
        cd "$top/$1"
        { git ls-files -z --cached --others --exclude-standard . 2>/dev/null ||
            find . -type f -print0; } | xargs -0 cp --parents -t "$work/$2"
    )
}

for kind in "${what[@]}"; do
    case $kind in
        python)
            copy python python
            isolation=()
            if python3 -c 'import setuptools, sys
sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
                isolation=(--no-isolation)
            fi
            python3 -m build --sdist --wheel "${isolation[@]}" --outdir "$work/python-out" \
                "$work/python" >"$work/python.log" 2>&1 || {
                cat "$work/python.log" >&2
                exit 1
            }
            for f in "$work"/python-out/*; do
                cp "$f" "$out/" && echo "$out/${f##*/}"
            done
            ;;
        perl)
            copy perl perl
            (cd "$work/perl" && perl Makefile.PL && make manifest && make dist) \
                >"$work/perl.log" 2>&1 || {
                cat "$work/perl.log" >&2
                exit 1
            }
            for f in "$work"/perl/Prefork-Interp-*.tar.gz; do
                cp "$f" "$out/" && echo "$out/${f##*/}"
            done
            ;;
        crate)
            (cd "$top" && cargo package --quiet --allow-dirty) >"$work/crate.log" 2>&1 || {
                cat "$work/crate.log" >&2
                exit 1
            }
            version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
            crate=$top/target/package/prefork-interp-$version.crate
            cp "$crate" "$out/" && echo "$out/${crate##*/}"
            ;;
        deb)
            "$top/packaging/deb.sh" "$out"
            ;;
        *)
            echo "dist.sh: unknown package kind $kind (python, perl, crate, deb)" >&2
            exit 2
            ;;
    esac
done
