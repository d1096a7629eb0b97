# shellcheck shell=bash
# Common helpers for mirage's scripts. Source it; do not run it.

set -eEuo pipefail
# A failing command names itself instead of ending the script silently.
trap 'printf "[mirage] error: %s:%s: \"%s\" failed\n" "${BASH_SOURCE[0]:-$0}" "$LINENO" "$BASH_COMMAND" >&2' ERR

MIRAGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIRAGE_CACHE=${MIRAGE_CACHE:-/var/cache/mirage}
CHROOT=$MIRAGE_CACHE/chroot
# Paths as seen from inside the chroot; the host sees them under $CHROOT.
KSRC_IN=/build/linux
KBUILD_IN=/build/kbuild
KSRC=$CHROOT$KSRC_IN
KBUILD=$CHROOT$KBUILD_IN
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[mirage] %s\n' "$*" >&2; }
die() { printf '[mirage] error: %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and bind mounts need it); try: sudo $0"
}

# Bind mounts are made once per top-level script and torn down on exit, even
# after a failure. Only the mounts this process made are removed, so two
# scripts sharing the chroot never pull mounts from under each other.
_MIRAGE_MOUNTED=()
_mirage_umount_all() {
	local i m
	for ((i = ${#_MIRAGE_MOUNTED[@]} - 1; i >= 0; i--)); do
		m=${_MIRAGE_MOUNTED[i]}
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	_MIRAGE_MOUNTED=()
}
chroot_mount() {
	[ -d "$CHROOT" ] || die "no chroot at $CHROOT; run scripts/toolchain.sh"
	if [ ${#_MIRAGE_MOUNTED[@]} -eq 0 ]; then
		trap '_mirage_umount_all' EXIT
		trap '_mirage_umount_all; exit 130' INT TERM
	fi
	local spec src dst
	for spec in proc:proc sys:sys dev:dev dev/pts:dev/pts; do
		src=/${spec%%:*}
		dst=$CHROOT/${spec##*:}
		mkdir -p "$dst"
		if ! mountpoint -q "$dst"; then
			mount --bind "$src" "$dst"
			_MIRAGE_MOUNTED+=("$dst")
		fi
	done
}

# Run a command inside the toolchain chroot with a clean environment.
in_chroot() {
	chroot "$CHROOT" /usr/bin/env -i \
		HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 TERM=dumb "$@"
}

# CLIPPY=1 always: the kernel crate is built one way only, so linting the
# driver never rebuilds it (switching costs about 2 min each way).
kmake() {
	in_chroot make -C "$KSRC_IN" O="$KBUILD_IN" LLVM=1 CLIPPY=1 -j"$(nproc)" "$@"
}
