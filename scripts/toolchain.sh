#!/usr/bin/env bash
# Build (or verify) the Debian trixie toolchain chroot in $MIRAGE_CACHE/chroot.
# A stamp holds the hash of packages.txt and this script, so a warm cache
# costs a second.
. "$(dirname "$0")/lib.sh"
mirage_enter "$@"

PKGS_FILE=$MIRAGE_ROOT/scripts/packages.txt
STAMP=$CHROOT/.mirage-toolchain-stamp
want=$(cat "$PKGS_FILE" "$0" | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
	log "toolchain chroot up to date ($CHROOT)"
	exit 0
fi

check_network() {
	local url=$DEBIAN_MIRROR/dists/trixie/Release
	if command -v curl >/dev/null; then
		curl -fsS -o /dev/null --max-time 30 "$url"
	elif command -v wget >/dev/null; then
		wget -q -O /dev/null --timeout=30 "$url"
	else
		python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=30)" "$url"
	fi || die "cannot reach the Debian archive at $DEBIAN_MIRROR (set DEBIAN_MIRROR to a reachable mirror)"
}

host_install() { # package...
	log "installing $* on the host"
	apt-get update -qq >/dev/null || die "apt-get update failed: no network to the host's archive?"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
		|| die "could not install $* on the host"
}

command -v debootstrap >/dev/null || host_install debootstrap
# Ubuntu lacks Debian's archive keys; without them debootstrap would fetch
# trixie unverified (or fail), so the keyring is installed and named.
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || host_install debian-archive-keyring
# An older debootstrap (Ubuntu LTS) may have no script for trixie; every
# Debian suite's script is the same as sid's.
SUITE_SCRIPT=()
[ -e /usr/share/debootstrap/scripts/trixie ] || SUITE_SCRIPT=(/usr/share/debootstrap/scripts/sid)

check_network
mkdir -p "$MIRAGE_CACHE"

if [ ! -x "$CHROOT/usr/bin/apt-get" ] || [ ! -f "$CHROOT/.mirage-debootstrap-done" ]; then
	log "debootstrap trixie into $CHROOT (one-off, a minute or two)"
	if [ -e "$CHROOT" ]; then
		# A mount under it (left by an old run or by hand) would make rm
		# delete the host's files. This run's namespace has none of its own
		# yet, so any listed here came from outside.
		busy=$(mounts_under "$CHROOT")
		[ -z "$busy" ] || die "refusing to delete $CHROOT: mounts under it: ${busy//$'\n'/ }; unmount them (umount -R) first"
		rm -rf --one-file-system "$CHROOT"
	fi
	debootstrap --variant=minbase --keyring="$KEYRING" trixie "$CHROOT" "$DEBIAN_MIRROR" "${SUITE_SCRIPT[@]}" \
		>"$MIRAGE_CACHE/debootstrap.log" 2>&1 \
		|| die "debootstrap failed; see $MIRAGE_CACHE/debootstrap.log"
	touch "$CHROOT/.mirage-debootstrap-done"
fi

cat >"$CHROOT/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR trixie main
deb $DEBIAN_MIRROR trixie-updates main
deb $DEBIAN_MIRROR trixie-backports main
SRC
cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true

chroot_mount
main=() bpo=()
while read -r pkg tag; do
	case "$pkg" in ''|'#'*) continue ;; esac
	if [ "${tag:-}" = "@backports" ]; then bpo+=("$pkg"); else main+=("$pkg"); fi
done <"$PKGS_FILE"

log "installing ${#main[@]} packages + ${#bpo[@]} from backports into the chroot"
in_chroot env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	|| die "apt-get update inside the chroot failed"
in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${main[@]}" \
	>"$MIRAGE_CACHE/apt.log" 2>&1 || die "package install failed; see $MIRAGE_CACHE/apt.log"
in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	-t trixie-backports "${bpo[@]}" >>"$MIRAGE_CACHE/apt.log" 2>&1 \
	|| die "backports install failed; see $MIRAGE_CACHE/apt.log"
in_chroot apt-get clean

echo "$want" >"$STAMP"
log "toolchain ready"
