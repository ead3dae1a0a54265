#!/bin/sh
# Builds the Debian package from an already built release binary:
# `make install` layout for /usr (config in /etc, unit in /lib/systemd),
# the man page gzipped, the control files from packaging/debian, then
# `dpkg-deb --build`. Usage: packaging/build-deb.sh OUTDIR (run by `make deb`).
set -eu

out=$1
here=$(dirname "$0")
stage=$out/root
rm -rf "$stage"
mkdir -p "$stage"

${MAKE:-make} --no-print-directory install-files DESTDIR="$stage" PREFIX=/usr \
    SYSCONFDIR=/etc UNITDIR=/lib/systemd/system >/dev/null
gzip -9n "$stage/usr/share/man/man1/memcached.1"
doc=$stage/usr/share/doc/memcached-rs
install -d "$doc"
install -m 644 "$here/debian/copyright" "$doc/copyright"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)-1
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs is its libc6 dependency.
glibc=$(LC_ALL=C grep -ao 'GLIBC_2\.[0-9.]*[0-9]' "$stage/usr/bin/memcached" |
    sed 's/^GLIBC_//' | sort -u -V | tail -n 1)
size=$(du -sk "$stage" | cut -f 1)
# Built with TLS (the default `tls` feature), it links the system's
# OpenSSL 3, as Debian's memcached does.
ssl=
if LC_ALL=C grep -aq 'libssl\.so\.3' "$stage/usr/bin/memcached"; then
    ssl='libssl3 (>= 3.0.0), '
fi

install -d "$stage/DEBIAN"
install -m 644 "$here/debian/conffiles" "$stage/DEBIAN/conffiles"
for script in preinst postinst prerm postrm; do
    install -m 755 "$here/debian/$script" "$stage/DEBIAN/$script"
done
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@GLIBC@/${glibc:-2.34}/" -e "s/@SSL@/$ssl/" "$here/debian/control.in" >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

deb=$out/memcached-rs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
