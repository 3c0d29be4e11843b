#!/usr/bin/env bash
# install-llama-server.sh DEST — install a CPU llama.cpp llama-server privately under DEST.
#
# Debian 12 has no llama.cpp package; Debian sid's llama.cpp-tools does, but needs a newer
# glibc. So this script downloads sid's llama-server and the libraries it needs (glibc and
# libstdc++ included), extracts them under DEST/root without installing anything, and writes
# DEST/llama-server, a wrapper that runs the binary through sid's own dynamic loader with the
# CPU backend that suits this machine. Nothing outside DEST changes; no root needed.
#
# The Debian mirror is taken from this machine's apt sources. sid moves: the script fails
# loudly when something is missing and prints the package versions it installed (also kept
# in DEST/packages.txt). Re-running replaces the previous install.
#
# Needs: apt-get, dpkg-deb (any Debian-based host), x86_64.
set -euo pipefail

die() { echo "install-llama-server: $*" >&2; exit 1; }
log() { echo "install-llama-server: $*" >&2; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: install-llama-server.sh DEST"
command -v apt-get >/dev/null || die "apt-get not found (a Debian-based host is needed)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (this is $(uname -m))"
DEST=$(realpath -m "$1")

# The Debian archive mirror this machine already uses: the first deb822 "URIs:" or
# one-line "deb" source whose suite is not a security suite.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '
			/^[[:space:]]*$/ { if (uri != "" && suites !~ /security/ && types ~ /(^|[[:space:]])deb([[:space:]]|$)/) { print uri; exit } uri = ""; suites = ""; types = ""; next }
			/^URIs:/ { uri = $2 }
			/^Suites:/ { suites = $0 }
			/^Types:/ { types = $0 }
			END { if (uri != "" && suites !~ /security/ && types ~ /(^|[[:space:]])deb([[:space:]]|$)/) print uri }
		' "$f" | head -n1
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		# deb [options] URI suite components...
		awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i+1) !~ /security/) { print $i; exit } }' "$f"
	done
}
MIRROR=$(mirror | head -n1)
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}"
log "mirror: $MIRROR"

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/lists/partial" "$W/cache/archives/partial" "$W/debs" "$DEST"
signed=""
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
echo "deb ${signed}$MIRROR sid main" >"$W/sources.list"
APTO=(-o Dir::Etc::SourceList="$W/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$W/lists" -o Dir::Cache="$W/cache" -o Debug::NoLocking=1
	-o APT::Architecture=amd64)
# As root, apt would try to drop to the _apt user, who cannot read our private directories.
[ "$(id -u)" -ne 0 ] || APTO+=(-o APT::Sandbox::User=root)
log "fetching the sid package index"
apt-get "${APTO[@]}" update -qq >&2 || die "apt-get update against $MIRROR sid failed"

PKGS=(llama.cpp-tools libllama0 libggml0 libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64 zlib1g libzstd1)
log "downloading ${PKGS[*]}"
(cd "$W/debs" && apt-get "${APTO[@]}" download "${PKGS[@]}" >&2) || die "download failed (did sid rename a package?)"

ROOT_NEW="$DEST/.root.new"
rm -rf "$ROOT_NEW"
mkdir -p "$ROOT_NEW"
: >"$W/packages.txt"
for d in "$W"/debs/*.deb; do
	dpkg-deb -x "$d" "$ROOT_NEW" || die "cannot extract $d"
	printf '%s %s\n' "$(dpkg-deb -f "$d" Package)" "$(dpkg-deb -f "$d" Version)" >>"$W/packages.txt"
done

L="$ROOT_NEW/usr/lib/x86_64-linux-gnu"
[ -x "$ROOT_NEW/usr/bin/llama-server" ] || die "llama.cpp-tools has no usr/bin/llama-server"
[ -e "$L/ld-linux-x86-64.so.2" ] || die "libc6 has no ld-linux-x86-64.so.2"
BACKENDS="$L/ggml/backends0"
[ -d "$BACKENDS" ] || die "libggml0 has no CPU backends directory (ggml/backends0)"

# The best CPU backend this machine can run (haswell is ~4x faster than x64 with AVX2).
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { local f; for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
variant=x64
if has avx2 fma f16c bmi2 && [ -e "$BACKENDS/libggml-cpu-haswell.so" ]; then
	variant=haswell
elif has avx && [ -e "$BACKENDS/libggml-cpu-sandybridge.so" ]; then
	variant=sandybridge
elif has sse4_2 && [ -e "$BACKENDS/libggml-cpu-sse42.so" ]; then
	variant=sse42
fi
[ -e "$BACKENDS/libggml-cpu-$variant.so" ] || die "no CPU backend libggml-cpu-$variant.so in libggml0"

# Swap the new tree in, then write the wrapper with the final paths.
rm -rf "$DEST/root"
mv "$ROOT_NEW" "$DEST/root"
L="$DEST/root/usr/lib/x86_64-linux-gnu"
q() { printf '%q' "$1"; }
cat >"$DEST/.llama-server.new" <<EOS
#!/bin/sh
# llama-server from Debian sid, installed privately by tools/install-llama-server.sh.
# Run it with one thread on small machines: -t 1 -tb 1.
export GGML_BACKEND_PATH=\${GGML_BACKEND_PATH:-$(q "$L/ggml/backends0/libggml-cpu-$variant.so")}
exec $(q "$L/ld-linux-x86-64.so.2") --library-path $(q "$L:$L/llama") $(q "$DEST/root/usr/bin/llama-server") "\$@"
EOS
chmod +x "$DEST/.llama-server.new"
mv "$DEST/.llama-server.new" "$DEST/llama-server"
mv "$W/packages.txt" "$DEST/packages.txt"

log "installed packages:"
sed 's/^/  /' "$DEST/packages.txt" >&2
log "CPU backend: $variant"
version=$("$DEST/llama-server" --version 2>&1) || die "the installed llama-server does not run:
$version"
echo "$version" | sed 's/^/  /' >&2
log "done: $DEST/llama-server"
