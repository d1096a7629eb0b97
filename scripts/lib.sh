# shellcheck shell=bash
# shellcheck disable=SC2034 # its variables are for the scripts that source it
# Common helpers for mirage's scripts. Source it; do not run it.

set -eEuo pipefail
# A failing command names itself instead of ending the script silently.
trap 'printf "[mirage] error: %s:%s: \"%s\" failed\n" "${BASH_SOURCE[0]:-$0}" "$LINENO" "$BASH_COMMAND" >&2' ERR

MIRAGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, as the runner and cargo's build scripts run elsewhere.
MIRAGE_CACHE=$(realpath -m "${MIRAGE_CACHE:-/var/cache/mirage}")
CHROOT=$MIRAGE_CACHE/chroot
# Paths as seen from inside the chroot; the host sees them under $CHROOT.
KSRC_IN=/build/linux
KBUILD_IN=/build/kbuild
KSRC=$CHROOT$KSRC_IN
KBUILD=$CHROOT$KBUILD_IN
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[mirage] %s\n' "$*" >&2; }
die() { printf '[mirage] error: %s\n' "$*" >&2; exit 1; }

# The hint repeats the whole command line: `sudo scripts/mirage.sh` alone
# would only print a usage error. The Makefile sets MIRAGE_HOW to its own
# command (`make check ONLY=...`), which is what the user typed.
need_root() {
	[ "$(id -u)" != 0 ] || return 0
	local how=${MIRAGE_HOW:-$0${*:+ $(printf '%q ' "$@")}}
	[ -n "${MIRAGE_HOW:-}" ] || [ -x "$0" ] || how="bash $how"
	die "must run as root (debootstrap, chroot and bind mounts need it); try: sudo ${how% }"
}

# Every root script starts with `mirage_enter "$@"`.
#
# It re-executes the script in a private mount namespace, so its bind
# mounts are invisible to every other process and vanish with it, even
# after SIGKILL: two runs can never unmount each other's /proc, and nothing
# leaks into the host. Scripts started by such a script share its
# namespace, and so see its mounts: MIRAGE_NS holds the namespace's id, so
# a stale value in some other process's environment does not count.
#
# Then it takes $MIRAGE_CACHE/lock: the chroot, the kernel tree, the kernel
# build and cargo's target directory are shared by every run, so a second
# run waits for the first. The lock is an inherited file descriptor, so a
# nested script checks that it already holds it instead of waiting on
# itself.
mirage_enter() {
	need_root "$@"
	local ns
	ns=$(readlink /proc/$$/ns/mnt)
	# Never the init process's namespace: that would be the host's.
	if [ "${MIRAGE_NS:-}" != "$ns" ] || [ "$ns" = "$(readlink /proc/1/ns/mnt)" ]; then
		case "${MIRAGE_NS_FROM:-}" in
		"")
			command -v unshare >/dev/null || die "unshare not found (Debian package util-linux)"
			export MIRAGE_NS_FROM=$ns
			exec unshare --mount --propagation private -- bash "$0" "$@"
			;;
		"$ns") die "unshare --mount gave no new mount namespace" ;;
		*) export MIRAGE_NS=$ns; unset MIRAGE_NS_FROM ;; # just re-executed
		esac
	fi
	mkdir -p "$MIRAGE_CACHE"
	local lock
	lock=$(realpath "$MIRAGE_CACHE")/lock
	if [ -n "${MIRAGE_LOCK_FD:-}" ] && [ "$(readlink "/proc/$$/fd/$MIRAGE_LOCK_FD" 2>/dev/null)" = "$lock" ]; then
		return 0
	fi
	exec {MIRAGE_LOCK_FD}>>"$lock"
	if ! flock -n "$MIRAGE_LOCK_FD"; then
		log "waiting for another mirage run to finish (it holds $lock: $(cat "$lock" 2>/dev/null || true))"
		flock "$MIRAGE_LOCK_FD"
		log "the other run finished; going on"
	fi
	export MIRAGE_LOCK_FD
	# For the message above, in the next run that has to wait.
	printf 'pid %s, %s%s, since %s\n' "$$" "$0" "${*:+ $*}" "$(date '+%F %T')" >"$lock"
}

# The bind mounts the chroot needs. They live in mirage_enter's namespace,
# so they need no unmounting: they go when the run ends.
chroot_mount() {
	[ -d "$CHROOT" ] || die "no chroot at $CHROOT; run scripts/toolchain.sh"
	[ "${MIRAGE_NS:-}" = "$(readlink /proc/$$/ns/mnt)" ] || die "chroot_mount needs mirage_enter's private mount namespace"
	local spec src dst
	for spec in proc:proc sys:sys dev:dev dev/pts:dev/pts; do
		src=/${spec%%:*}
		dst=$CHROOT/${spec##*:}
		mkdir -p "$dst"
		mountpoint -q "$dst" || mount --bind "$src" "$dst"
	done
}

# Mounts under a directory, as seen by this run: `rm -rf` through one of
# them would delete the host's /dev or /proc contents.
mounts_under() {
	local dir
	dir=$(realpath "$1")
	findmnt -rn -o TARGET | while IFS= read -r m; do
		m=$(printf '%b' "$m") # findmnt escapes spaces as \x20
		case "$m" in "$dir" | "$dir"/*) printf '%s\n' "$m" ;; esac
	done
}

# Run a command inside the toolchain chroot with a clean environment.
in_chroot() {
	chroot "$CHROOT" /usr/bin/env -i \
		HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 TERM=dumb "$@"
}

# The overlay's files under rust/ (abstractions, helpers) as an extended
# regex of their paths, from the manifest kernel.sh keeps in the tree; empty
# when there are none. Their warnings are mirage's, not upstream's.
overlay_rust_regex() {
	grep -E '^rust/' "$KSRC/.mirage-overlay" 2>/dev/null | sed 's/[.]/[.]/g' | paste -sd'|' || true
}

# CLIPPY=1 always: the kernel crate is built one way only, so linting the
# driver never rebuilds it (switching costs about 2 min each way).
kmake() {
	in_chroot make -C "$KSRC_IN" O="$KBUILD_IN" LLVM=1 CLIPPY=1 -j"$(nproc)" "$@"
}
