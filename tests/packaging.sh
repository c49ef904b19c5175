#!/usr/bin/env bash
# Packaging tests (make test-packaging; needs target/release/prefork-interp):
#
# 1. `make install PREFIX=<temp>`: every part lands under the prefix, and
#    a Python and a Perl script are served from there: the installed
#    client on their #! lines, the libraries found through the
#    environment that install printed, a private run directory; then
#    `make uninstall` leaves the prefix empty. The same with Debian's
#    own python3 (PEP 668, externally managed) where there is one.
# 2. `packaging/dist.sh`: the Python sdist and wheel (installed with pip
#    --target and imported), the Perl dist (built and tested from its
#    tarball, installed with INSTALL_BASE), the crate, the .deb (its
#    fields, and no file that another installed package owns); as root,
#    where the package is not installed already, `dpkg -i`, the same two
#    scripts through /usr/bin/prefork-interp-rs with the system's
#    interpreters, then `dpkg --purge`.
#
# Temp files and servers are cleaned up on exit. Ends with one line
# "packaging: N passed, N failed"; exit status 1 if any failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
client=${PREFORK_INTERP_CLIENT:-$top/target/release/prefork-interp}
[ -x "$client" ] || { echo "packaging.sh: build $client first" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/prefork-interp-packaging.XXXXXX")
pkg=prefork-interp-rs
installed_deb=

cleanup() {
    local line
    # Servers a failed test left: --kill through the repository's client
    # (the identity does not depend on which client asks).
    if [ -f "$tmp/kills" ]; then
        while read -r line; do
            # shellcheck disable=SC2086
            PREFORK_INTERP_RUN_DIR=$tmp/run timeout 20 "$client" --kill $line \
                >/dev/null 2>&1 || true
        done <"$tmp/kills"
    fi
    if [ -n "$installed_deb" ]; then
        dpkg --purge "$pkg" >/dev/null 2>&1 || true
    fi
    # --kill returns once a server has closed its socket; it may still be
    # finishing, and write its last lines to the run directory's log
    # while we remove it (seen once in CI: "Directory not empty").
    for _ in 1 2 3 4 5; do
        rm -rf "$tmp" 2>/dev/null && return
        sleep 0.2
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() {
    echo "not ok - $1"
    shift
    [ $# -eq 0 ] || printf '    %s\n' "$@"
    failed=$((failed + 1))
}
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else not_ok "$what" "$ ${*}" "$out"; fi
}
# same DESCRIPTION WANT GOT
same() {
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "want: $2" "got:  $3"; fi
}
die() { echo "packaging.sh: $*" >&2; exit 1; }

mkdir -m 700 "$tmp/run"
export PREFORK_INTERP_RUN_DIR=$tmp/run

# Scripts that say where their library came from. $1: directory, $2: the
# client for the #! line, $3: the Python interpreter.
write_scripts() {
    mkdir -p "$1"
    cat >"$1/hello.py" <<EOF
#!$2 -U,$3
import os, sys
import prefork_interp
prefork_interp.initialisation_complete()
print("python", prefork_interp.__file__, *sys.argv[1:])
sys.exit(int(os.environ.get("STATUS", "0")))
EOF
    cat >"$1/hello.pl" <<EOF
#!$2 -U,perl
use strict;
use warnings;
use Prefork::Interp;
prefork_initialisation_complete();
print "perl \$INC{'Prefork/Interp.pm'} @ARGV\\n";
exit(\$ENV{STATUS} // 0);
EOF
    chmod +x "$1/hello.py" "$1/hello.pl"
    printf '%s\n' "-U,$3 $1/hello.py" "-U,perl $1/hello.pl" >>"$tmp/kills"
}

# serve NAME SCRIPTDIR PYTHONDIR PERLDIR: each script through its #! line
# twice (the first call starts its server, the second is served by it),
# with the library from the directory given; then --kill.
serve() {
    local name=$1 dir=$2 lang script lib client interp out status
    for lang in python perl; do
        if [ $lang = python ]; then
            script=$dir/hello.py lib=$3/prefork_interp/__init__.py
        else
            script=$dir/hello.pl lib=$4/Prefork/Interp.pm
        fi
        client=$(sed -n '1s/^#!\([^ ]*\) -U,\(.*\)$/\1/p' "$script")
        interp=$(sed -n '1s/^#!\([^ ]*\) -U,\(.*\)$/\2/p' "$script")
        status=0
        out=$(cd "$dir" && timeout 60 "$script" cold) || status=$?
        same "$name: $lang, first call, library from $lib" "$lang $lib cold 0" "$out $status"
        status=0
        out=$(cd "$dir" && STATUS=3 timeout 60 "$script" warm) || status=$?
        same "$name: $lang, warm call and its exit status" "$lang $lib warm 3" "$out $status"
        check "$name: $lang, --kill" timeout 60 "$client" --kill -U,"$interp" "$script"
    done
}

echo "# the manual page"
man1=$top/docs/prefork-interp.1
check "prefork-interp.1 renders without warnings (groff -ww)" sh -c \
    "out=\$(groff -man -ww -z '$man1' 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
MANWIDTH=80 man -l "$man1" >"$tmp/man.txt" 2>&1
for section in SYNOPSIS OPTIONS "EXIT STATUS" ENVIRONMENT FILES COMPATIBILITY CAVEATS \
               EXAMPLES "SEE ALSO"; do
    check "man -l prefork-interp.1: section $section" grep -qx "$section" "$tmp/man.txt"
done
for example in '#!/usr/local/bin/prefork-interp -U,python3' \
               '#!/usr/local/bin/prefork-interp -U,perl,-w' 'prefork-interp -U /path/to/program' \
               '#!/usr/bin/env -S prefork-interp -U,python3' '-V, --version'; do
    check "man -l prefork-interp.1 shows $example" grep -qF -- "$example" "$tmp/man.txt"
done

echo "# make install PREFIX=<temp>"
prefix=$tmp/prefix
make --no-print-directory -C "$top" install PREFIX="$prefix" >"$tmp/install.out" 2>&1 ||
    { cat "$tmp/install.out"; die "make install failed"; }
sed 's/^/    /' "$tmp/install.out"
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for f in bin/prefork-interp share/man/man1/prefork-interp.1 \
         "share/man/man3/Prefork::Interp.3pm" \
         "lib/python$pyver/site-packages/prefork_interp/__init__.py" \
         lib/python$pyver/site-packages/prefork_interp/py.typed \
         share/perl5/Prefork/Interp.pm share/perl5/Prefork/Interp/Server.pm \
         share/doc/prefork-interp/LICENSE-MIT; do
    check "installed $f" test -e "$prefix/$f"
done
(
    eval "$(grep '^export ' "$tmp/install.out")"
    same "PATH finds the installed client" "$prefix/bin/prefork-interp" \
        "$(command -v prefork-interp)"
    same "the installed client's version" "prefork-interp $(sed -n \
        's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)" "$(prefork-interp --version)"
    check "man finds prefork-interp(1)" test "$(man -w prefork-interp)" = \
        "$prefix/share/man/man1/prefork-interp.1"
    check "man finds Prefork::Interp(3pm)" test "$(man -w Prefork::Interp)" = \
        "$prefix/share/man/man3/Prefork::Interp.3pm"
    check "the Perl manual page renders" sh -c \
        "man -l '$prefix/share/man/man3/Prefork::Interp.3pm' 2>&1 | grep -q 'SWITCHING FROM'"
    write_scripts "$tmp/scripts" "$prefix/bin/prefork-interp" python3
    cd "$tmp"
    serve "installed" "$tmp/scripts" "$prefix/lib/python$pyver/site-packages" \
        "$prefix/share/perl5"
    echo "passed=$passed failed=$failed" >"$tmp/counts"
)
eval "$(cat "$tmp/counts")"
make --no-print-directory -C "$top" uninstall PREFIX="$prefix" >/dev/null
same "make uninstall leaves the prefix empty" "" "$(cd "$prefix" && find . -mindepth 1)"

# Debian's python3 refuses pip installs (PEP 668); make install uses no pip.
debian_python=/usr/bin/python3
if [ -x $debian_python ] && compgen -G "/usr/lib/python3*/EXTERNALLY-MANAGED" >/dev/null; then
    echo "# make install with Debian's externally managed $debian_python"
    prefix=$tmp/prefix-debian
    debian_pyver=$($debian_python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    make --no-print-directory -C "$top" install PREFIX="$prefix" PYTHON=$debian_python \
        >"$tmp/install.out" 2>&1 || { cat "$tmp/install.out"; die "make install failed"; }
    (
        eval "$(grep '^export ' "$tmp/install.out")"
        write_scripts "$tmp/scripts-debian" "$prefix/bin/prefork-interp" $debian_python
        cd "$tmp"
        serve "Debian's python3" "$tmp/scripts-debian" \
            "$prefix/lib/python$debian_pyver/site-packages" "$prefix/share/perl5"
        echo "passed=$passed failed=$failed" >"$tmp/counts"
    )
    eval "$(cat "$tmp/counts")"
    make --no-print-directory -C "$top" uninstall PREFIX="$prefix" PYTHON=$debian_python >/dev/null
    same "make uninstall (Debian's python3) leaves the prefix empty" "" \
        "$(cd "$prefix" && find . -mindepth 1)"
else
    echo "# no externally managed $debian_python here: skipped"
fi

echo "# packages"
out=$tmp/packages
"$top/packaging/dist.sh" "$out" >"$tmp/dist.out" 2>&1 || { cat "$tmp/dist.out"; die "dist.sh failed"; }
sed 's/^/    /' "$tmp/dist.out"
for f in LICENSE-MIT LICENSE-APACHE; do
    check "python/$f and perl/$f are copies of $f" sh -c \
        "cmp '$top/$f' '$top/python/$f' && cmp '$top/$f' '$top/perl/$f'"
done

wheel=$(echo "$out"/prefork_interp-*.whl)
sdist=$(echo "$out"/prefork_interp-*.tar.gz)
check "wheel: the package, its licences and metadata" python3 - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for want in ("prefork_interp/__init__.py", "prefork_interp/py.typed"):
    assert want in names, want
assert not any("tests/" in n for n in names), names
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
for want in ("License-Expression: MIT OR Apache-2.0", "License-File: LICENSE-MIT",
             "License-File: LICENSE-APACHE", "Requires-Python: >=3.9",
             "Project-URL: Repository, https://github.com/prefork-interp/prefork-interp"):
    assert want in text.splitlines(), want
assert any(n.endswith("licenses/LICENSE-APACHE") for n in names), names
EOF
check "sdist: PKG-INFO, licences, package, no tests" sh -c "tar tzf '$sdist' >'$tmp/sdist.list' &&
    grep -q '/PKG-INFO\$' '$tmp/sdist.list' && grep -q '/LICENSE-APACHE\$' '$tmp/sdist.list' &&
    grep -q '/prefork_interp/_server.py\$' '$tmp/sdist.list' && ! grep -q '/tests/' '$tmp/sdist.list'"
check "the wheel installs (pip --target) and imports" sh -c "
    python3 -m pip install --quiet --no-deps --no-index --target '$tmp/wheel' '$wheel' &&
    PYTHONPATH='$tmp/wheel' python3 -c 'import importlib.metadata as m, prefork_interp as p
assert p.__file__.startswith(\"$tmp/wheel/\"), p.__file__
assert m.version(\"prefork-interp\") == \"$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/python/pyproject.toml")\"'"

perldist=$(echo "$out"/Prefork-Interp-*.tar.gz)
mkdir "$tmp/perldist"
tar xzf "$perldist" -C "$tmp/perldist"
perldir=$(echo "$tmp"/perldist/Prefork-Interp-*)
# shellcheck disable=SC2016
check "Perl dist: META.json licences and abstract" perl -MJSON::PP -e '
    local $/; open my $f, "<", $ARGV[0] or die $!; my $m = decode_json(<$f>);
    "@{$m->{license}}" eq "mit apache_2_0" or die "license: @{$m->{license}}\n";
    $m->{abstract} =~ /prefork-interp/ or die "abstract: $m->{abstract}\n";
    $m->{resources}{repository}{url} or die "no repository\n";' "$perldir/META.json"
# The full suite runs as `prove -r perl/t` (make test-perl); here, that the
# tarball's own harness works, with its own lib.
check "Perl dist: perl Makefile.PL INSTALL_BASE=<temp> && make && make test (2 tests) && make install" \
    sh -c "cd '$perldir' && perl Makefile.PL INSTALL_BASE='$tmp/perlbase' && make &&
        PREFORK_INTERP_CLIENT='$client' make test TEST_FILES='t/00-standalone.t t/01-pod.t' &&
        make install &&
        test -s '$tmp/perlbase/lib/perl5/Prefork/Interp.pm' &&
        test -s '$tmp/perlbase/man/man3/Prefork::Interp.3pm'"

crate=$(echo "$out"/prefork-interp-*.crate)
check "crate: manifest with licence and rust-version, sources, licences" sh -c "
    tar xzf '$crate' -C '$tmp' && cd '$tmp'/prefork-interp-*/ &&
    grep -qx 'license = \"MIT OR Apache-2.0\"' Cargo.toml &&
    grep -q '^rust-version = ' Cargo.toml && grep -q '^repository = ' Cargo.toml &&
    test -s src/lib.rs && test -s LICENSE-MIT && test -s LICENSE-APACHE && test ! -e python"

deb=$(echo "$out"/${pkg}_*.deb)
dpkg-deb --info "$deb" >"$tmp/deb.info"
dpkg-deb --contents "$deb" >"$tmp/deb.contents"
sed 's/^/    /' "$tmp/deb.info"
check "deb: Package, Version, Depends" sh -c "grep -qx ' Package: $pkg' '$tmp/deb.info' &&
    grep -q '^ Version: [0-9]' '$tmp/deb.info' && grep -q '^ Depends: libc6' '$tmp/deb.info'"
for f in ./usr/lib/prefork-interp/prefork-interp ./usr/bin/prefork-interp-rs \
         ./usr/share/man/man1/prefork-interp-rs.1.gz "./usr/share/man/man3/Prefork::Interp.3pm.gz" \
         ./usr/lib/python3/dist-packages/prefork_interp/__init__.py \
         ./usr/share/perl5/Prefork/Interp.pm ./usr/share/doc/$pkg/copyright; do
    check "deb contains $f" grep -qE " ${f//./\\.}( ->|\$)" "$tmp/deb.contents"
done
# Nothing another installed package owns (chiark-utils-bin's
# /usr/bin/prefork-interp above all).
awk '$1 !~ /^d/ { p = $6; sub(/^\./, "", p); print p }' "$tmp/deb.contents" >"$tmp/deb.files"
check "deb: no /usr/bin/prefork-interp" sh -c "! grep -qx /usr/bin/prefork-interp '$tmp/deb.files'"
owners=$(xargs -d '\n' dpkg -S <"$tmp/deb.files" 2>/dev/null | grep -v "^$pkg:" || true)
same "deb: no file another installed package owns" "" "$owners"

if [ "$(id -u)" -ne 0 ]; then
    echo "# not root: dpkg -i skipped"
elif dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qx 'install ok installed'; then
    echo "# $pkg is installed already: dpkg -i skipped, leaving it as it is"
else
    echo "# dpkg -i, then dpkg --purge"
    # Another dpkg may hold the lock for a while.
    for _ in $(seq 30); do
        installed_deb=$deb
        if dpkg -i "$deb" >"$tmp/dpkg.out" 2>&1; then
            break
        fi
        grep -q 'lock' "$tmp/dpkg.out" || break
        sleep 2
    done
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qx 'install ok installed'; then
        ok "dpkg -i $pkg"
    else
        not_ok "dpkg -i $pkg" "$(cat "$tmp/dpkg.out")"
    fi
    if dpkg-query -W -f='${Status}' chiark-utils-bin 2>/dev/null |
        grep -qx 'install ok installed'; then
        same "/usr/bin/prefork-interp is still chiark-utils-bin's" \
            "chiark-utils-bin: /usr/bin/prefork-interp" "$(dpkg -S /usr/bin/prefork-interp)"
    fi
    same "prefork-interp-rs --version" "$("$client" --version)" \
        "$(/usr/bin/prefork-interp-rs --version)"
    (
        # The system's interpreters find the libraries on their own paths.
        unset PYTHONPATH PERL5LIB
        write_scripts "$tmp/scripts-deb" /usr/bin/prefork-interp-rs /usr/bin/python3
        cd "$tmp"
        serve "installed .deb" "$tmp/scripts-deb" /usr/lib/python3/dist-packages \
            /usr/share/perl5
        echo "passed=$passed failed=$failed" >"$tmp/counts"
    )
    eval "$(cat "$tmp/counts")"
    check "dpkg --purge $pkg" dpkg --purge "$pkg"
    installed_deb=
    same "purged: no file left" "" "$(while read -r f; do
        [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done <"$tmp/deb.files")"
    check "purged: /usr/lib/python3/dist-packages/prefork_interp is gone" \
        test ! -e /usr/lib/python3/dist-packages/prefork_interp
fi

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
