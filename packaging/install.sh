#!/usr/bin/env bash
# Install or uninstall prefork-interp: the client, its manual page, the
# Python package, the Perl modules and their manual page, and the docs.
#
#   packaging/install.sh install|uninstall [VAR=VALUE ...]
#
# `make install` and `make uninstall` call this with the Makefile's
# variables; each may also be given here or in the environment:
#
#   PREFIX     /usr/local
#   DESTDIR    staging root prepended to every path (packages); empty
#   BINDIR     $PREFIX/bin                     prefork-interp
#   MANDIR     $PREFIX/share/man               man1/prefork-interp.1,
#                                              man3/Prefork::Interp.3pm
#   PYTHON     python3: its version names the default PYTHONDIR
#   PYTHONDIR  $PREFIX/lib/pythonX.Y/site-packages   prefork_interp/
#   PERLDIR    $PREFIX/share/perl5             Prefork/Interp.pm, Prefork/Interp/
#   DOCDIR     $PREFIX/share/doc/prefork-interp
#   BIN        target/release/prefork-interp   the client to install
#
# Files are copied: neither pip nor the system Python or Perl is touched,
# so this works on Debian with PEP 668 (externally-managed-environment).
# Without DESTDIR the Python files are byte-compiled with $PYTHON, and
# install prints the environment a shell needs to find what it installed
# (only the lines it lacks), then the #! line to use.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

action=${1:-}
[ $# -gt 0 ] && shift
for assignment in "$@"; do
    case $assignment in
        [A-Z]*=*) export "${assignment?}" ;;
        *) echo "install.sh: not VAR=VALUE: $assignment" >&2; exit 2 ;;
    esac
done
case $action in
    install|uninstall) ;;
    *) echo "usage: packaging/install.sh install|uninstall [VAR=VALUE ...]" >&2; exit 2 ;;
esac

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
BINDIR=${BINDIR:-$PREFIX/bin}
MANDIR=${MANDIR:-$PREFIX/share/man}
PERLDIR=${PERLDIR:-$PREFIX/share/perl5}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/prefork-interp}
BIN=${BIN:-$top/target/release/prefork-interp}
if [ -z "${PYTHONDIR:-}" ]; then
    pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    PYTHONDIR=$PREFIX/lib/python$pyver/site-packages
fi
for dir in "$PREFIX" "$BINDIR" "$MANDIR" "$PERLDIR" "$DOCDIR" "$PYTHONDIR"; do
    case $dir in
        /*) ;;
        *) echo "install.sh: $dir: not an absolute path" >&2; exit 2 ;;
    esac
done

# What is installed, as "SOURCE DESTINATION" pairs below $top and the
# staged root, and the directories that belong to us alone.
perl_version=$(sed -n "s/^our \$VERSION = '\(.*\)';/\1/p" "$top/perl/lib/Prefork/Interp.pm")
files=()
add() { files+=("$1" "$2"); }
add "$BIN" "$BINDIR/prefork-interp"
add docs/prefork-interp.1 "$MANDIR/man1/prefork-interp.1"
add - "$MANDIR/man3/Prefork::Interp.3pm"          # pod2man, below
for f in "$top"/python/prefork_interp/*.py "$top"/python/prefork_interp/py.typed; do
    add "python/prefork_interp/${f##*/}" "$PYTHONDIR/prefork_interp/${f##*/}"
done
add perl/lib/Prefork/Interp.pm "$PERLDIR/Prefork/Interp.pm"
for f in "$top"/perl/lib/Prefork/Interp/*.pm; do
    add "perl/lib/Prefork/Interp/${f##*/}" "$PERLDIR/Prefork/Interp/${f##*/}"
done
for f in README.md LICENSE-MIT LICENSE-APACHE docs/design.md docs/protocol.md \
         docs/rust-server.md; do
    add "$f" "$DOCDIR/${f##*/}"
done
add python/README.md "$DOCDIR/python/README.md"
add perl/README.md "$DOCDIR/perl/README.md"
# Removed whole on uninstall (byte-compiled files, modules a later
# version dropped): the package directories, ours by their names.
own_dirs=("$PYTHONDIR/prefork_interp" "$PERLDIR/Prefork/Interp")

if [ "$action" = uninstall ]; then
    for ((i = 1; i < ${#files[@]}; i += 2)); do
        rm -f "$DESTDIR${files[i]}"
    done
    for dir in "${own_dirs[@]}"; do
        rm -rf "$DESTDIR$dir"
    done
    # Then the directories below the prefix that we may have made, as
    # long as they are empty.
    for ((i = 1; i < ${#files[@]}; i += 2)); do
        dir=$(dirname "${files[i]}")
        while [[ $dir == "$PREFIX"/* ]]; do
            if [ -e "$DESTDIR$dir" ]; then
                rmdir "$DESTDIR$dir" 2>/dev/null || break
            fi
            dir=$(dirname "$dir")
        done
    done
    echo "prefork-interp uninstalled from $DESTDIR$PREFIX"
    exit 0
fi

if [ ! -x "$BIN" ]; then
    echo "install.sh: $BIN: no client built (cargo build --release)" >&2
    exit 1
fi
for ((i = 0; i < ${#files[@]}; i += 2)); do
    src=${files[i]} dst=$DESTDIR${files[i + 1]}
    case $src in
        -) continue ;;
        /*) ;;
        *) src=$top/$src ;;
    esac
    mode=644
    [ "$dst" = "$DESTDIR$BINDIR/prefork-interp" ] && mode=755
    install -D -m "$mode" "$src" "$dst"
done
# The Perl POD as a section 3 manual page, as MakeMaker would make it
# (perldoc itself is in perl-doc, which Debian does not install).
mkdir -p "$DESTDIR$MANDIR/man3"
pod2man --section=3pm --name=Prefork::Interp \
    --center='User Contributed Perl Documentation' \
    --release="Prefork::Interp $perl_version" \
    "$top/perl/lib/Prefork/Interp.pm" >"$DESTDIR$MANDIR/man3/Prefork::Interp.3pm"
chmod 644 "$DESTDIR$MANDIR/man3/Prefork::Interp.3pm"

if [ -n "$DESTDIR" ]; then
    echo "prefork-interp staged in $DESTDIR (prefix $PREFIX)"
    exit 0
fi
# Byte-compile now, as pip would: otherwise a user who cannot write here
# compiles the modules on every cold start.
"$PYTHON" -m compileall -q "$PYTHONDIR/prefork_interp" >/dev/null

# What a shell lacks to find each part: only the lines it needs.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
lines=()
case ":$PATH:" in
    *":$BINDIR:"*) ;;
    *) lines+=("export PATH=$(q "$BINDIR"):\"\$PATH\"") ;;
esac
if ! "$PYTHON" -c 'import os, sys; sys.exit(os.path.realpath(sys.argv[1]) not in
        [os.path.realpath(p) for p in sys.path])' "$PYTHONDIR"; then
    lines+=("export PYTHONPATH=$(q "$PYTHONDIR")\${PYTHONPATH:+:\"\$PYTHONPATH\"}")
fi
if ! perl -e 'exit !grep { $_ eq $ARGV[0] } @INC' "$PERLDIR"; then
    lines+=("export PERL5LIB=$(q "$PERLDIR")\${PERL5LIB:+:\"\$PERL5LIB\"}")
fi
if ! { manpath 2>/dev/null || true; } | tr : '\n' | grep -qxF "$MANDIR"; then
    # A trailing colon keeps man's default path.
    lines+=("export MANPATH=$(q "$MANDIR"):\"\${MANPATH-}\"")
fi
echo "$("$BIN" --version) installed under $PREFIX:"
echo "  client       $BINDIR/prefork-interp"
echo "  Python       $PYTHONDIR/prefork_interp/"
echo "  Perl         $PERLDIR/Prefork/Interp.pm, Interp/"
echo "  man pages    $MANDIR/man1/prefork-interp.1, man3/Prefork::Interp.3pm"
echo "  docs         $DOCDIR/"
if [ ${#lines[@]} -gt 0 ]; then
    echo "Add to your shell's environment (e.g. ~/.profile):"
    printf '%s\n' "${lines[@]}"
fi
echo "Scripts name the client on their #! line, e.g.:"
echo "  #!$BINDIR/prefork-interp -U,python3"
