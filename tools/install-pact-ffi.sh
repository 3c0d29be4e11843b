#!/usr/bin/env bash
# Installs the Pact FFI library (libpact_ffi.so, pact_ffi 0.5.8) that pact-go v2.7.0 links
# against into .pact/lib (git-ignored), from the npm package
# @pact-foundation/pact-core-linux-x64-glibc@20.2.0. Nothing is fetched from GitHub: pact-go's own
# installer (`pact-go install`, version.CheckVersion) must not be used.
#
# The tarball is checked against the registry's pinned sha512 integrity before anything is
# extracted, and the library against its sha256. Idempotent: an installed library with the right
# digest is kept. Prints the library directory.
#
# Use the library with:
#   export CGO_LDFLAGS="-L$PWD/.pact/lib -Wl,-rpath,$PWD/.pact/lib" PACT_DO_NOT_TRACK=true
set -euo pipefail

pkg=@pact-foundation/pact-core-linux-x64-glibc
version=20.2.0
tarball=pact-foundation-pact-core-linux-x64-glibc-$version.tgz
integrity='sha512-sj2gGwCkq1QPIXrXW7jaGKAmn5eJIAgNURKAVqE9z2+uEZWqIni/Bp2Jh6xt4L+nyHOZ5F/pZ/J1FxKf//ilEw=='
so_sha256=f7ffaa50e2a1cba232e65ab8d089a06e9a95f7780582201c723553d52145a5e9

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${PACT_LIB_DIR:-$root/.pact/lib}
lib=$dest/libpact_ffi.so

sha256() { sha256sum "$1" | cut -d' ' -f1; }

case "$(uname -s)-$(uname -m)" in
Linux-x86_64) ;;
*)
	echo "install-pact-ffi: only linux x86_64 (glibc) is supported, not $(uname -s)-$(uname -m)" >&2
	exit 1
	;;
esac

if [[ -f $lib && $(sha256 "$lib") == "$so_sha256" ]]; then
	echo "$dest"
	exit 0
fi

for tool in npm openssl; do
	command -v "$tool" >/dev/null || {
		echo "install-pact-ffi: $tool is required" >&2
		exit 1
	}
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null)
[[ -f $tmp/$tarball ]] || {
	echo "install-pact-ffi: npm pack did not produce $tarball" >&2
	exit 1
}
got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tarball" | base64 -w0)"
if [[ $got != "$integrity" ]]; then
	echo "install-pact-ffi: $tarball integrity $got, want $integrity" >&2
	exit 1
fi
tar -xzf "$tmp/$tarball" -C "$tmp" package/prebuilds/linux-x64/libpact_ffi.so
got=$(sha256 "$tmp/package/prebuilds/linux-x64/libpact_ffi.so")
if [[ $got != "$so_sha256" ]]; then
	echo "install-pact-ffi: libpact_ffi.so sha256 $got, want $so_sha256" >&2
	exit 1
fi
mkdir -p "$dest"
install -m 0644 "$tmp/package/prebuilds/linux-x64/libpact_ffi.so" "$lib.tmp"
mv "$lib.tmp" "$lib"
echo "$dest"
