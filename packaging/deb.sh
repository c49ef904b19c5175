#!/usr/bin/env bash
# Build a Debian package of the whole project with dpkg-deb, from a staged
# `packaging/install.sh install` (no debhelper, no fakeroot needed).
#
#   packaging/deb.sh [OUTDIR]       default: target/packages
#
# Prints the path of the .deb. The package, prefork-interp-rs, coexists
# with chiark-utils-bin, which owns /usr/bin/prefork-interp: it installs
#
#   /usr/lib/prefork-interp/prefork-interp   the client, under its own name
#   /usr/bin/prefork-interp-rs               a symbolic link to it
#   /usr/share/man/man1/prefork-interp-rs.1.gz
#   /usr/lib/python3/dist-packages/prefork_interp/   (byte-compiled by postinst)
#   /usr/share/perl5/Prefork/Interp.pm, Interp/
#   /usr/share/man/man3/Prefork::Interp.3pm.gz
#   /usr/share/doc/prefork-interp-rs/
#
# DEB_MAINTAINER sets the Maintainer field; BIN the client to package
# (default $PREFORK_INTERP_CLIENT, which the Makefile sets to the client it
# builds, else target/release/prefork-interp; it must exist).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/target/packages}
pkg=prefork-interp-rs
repo=https://github.com/prefork-interp/prefork-interp
maintainer=${DEB_MAINTAINER:-the prefork-interp contributors <maintainers@prefork-interp.invalid>}
bin=${BIN:-${PREFORK_INTERP_CLIENT:-$top/target/release/prefork-interp}}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)-1
arch=$(dpkg --print-architecture)
libc=$(dpkg-query -W -f='${Version}' libc6 2>/dev/null | sed 's/-.*//') || libc=
mkdir -p "$out"
out=$(cd "$out" && pwd)

stage=$(mktemp -d "${TMPDIR:-/tmp}/prefork-interp-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/$pkg
mkdir -m 755 "$root"
"$top/packaging/install.sh" install DESTDIR="$root" PREFIX=/usr BIN="$bin" \
    BINDIR=/usr/lib/prefork-interp PYTHONDIR=/usr/lib/python3/dist-packages \
    PERLDIR=/usr/share/perl5 DOCDIR=/usr/share/doc/$pkg >/dev/null

strip --strip-unneeded "$root/usr/lib/prefork-interp/prefork-interp" 2>/dev/null || true
mkdir -p "$root/usr/bin"
ln -s ../lib/prefork-interp/prefork-interp "$root/usr/bin/prefork-interp-rs"
# The manual page under the command's name here (prefork-interp(1) would
# be the C client's), with the paths of this package in its examples.
man1=$root/usr/share/man/man1
sed -e 's,/usr/local/bin/prefork-interp,/usr/bin/prefork-interp-rs,g' \
    "$man1/prefork-interp.1" >"$man1/prefork-interp-rs.1"
rm "$man1/prefork-interp.1"
find "$root/usr/share/man" -type f -exec gzip -9n {} +

# Debian's documentation: the licences go into copyright.
doc=$root/usr/share/doc/$pkg
rm "$doc/LICENSE-MIT" "$doc/LICENSE-APACHE"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: prefork-interp"
    echo "Source: $repo"
    echo
    echo "Files: *"
    echo "Copyright: the prefork-interp contributors"
    echo "License: MIT or Apache-2.0"
    echo
    echo "License: MIT"
    sed -e 's/^$/./' -e 's/^/ /' "$top/LICENSE-MIT"
    echo
    echo "License: Apache-2.0"
    echo " On Debian systems the full text of the Apache License, Version 2.0,"
    echo " is in /usr/share/common-licenses/Apache-2.0."
} >"$doc/copyright"
date=$(git -C "$top" log -1 --format=%cD 2>/dev/null) || date=$(date -R)
{
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the prefork-interp source tree by packaging/deb.sh."
    echo
    echo " -- $maintainer  $date"
} | gzip -9n >"$doc/changelog.Debian.gz"
find "$root" -type d -exec chmod 755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 644 {} +

mkdir -m 755 "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --apparent-size "$root" | cut -f1)
Depends: libc6${libc:+ (>= $libc)}
Recommends: perl
Suggests: python3, libio-fdpass-perl, chiark-utils-bin
Section: utils
Priority: optional
Homepage: $repo
Description: #! interpreter wrapper that makes slow-starting scripts start fast
 prefork-interp runs a script once, up to the point where it calls its
 library's initialisation_complete(); every call is then served by a fresh
 fork of that initialised process, with the caller's standard input,
 output and error, arguments, environment and exit status.
 .
 This is a Rust implementation, compatible both ways with chiark-utils'
 prefork-interp (package chiark-utils-bin), which it leaves in place: its
 client is /usr/lib/prefork-interp/prefork-interp, also reached as
 /usr/bin/prefork-interp-rs. Includes the script-side libraries for Python
 (prefork_interp) and Perl (Prefork::Interp).
EOF
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v py3compile >/dev/null 2>&1; then
    py3compile -p prefork-interp-rs
fi
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if command -v py3clean >/dev/null 2>&1; then
    py3clean -p prefork-interp-rs
else
    rm -rf /usr/lib/python3/dist-packages/prefork_interp/__pycache__
fi
EOF
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/md5sums"

deb=$out/${pkg}_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
