#!/usr/bin/env bash
# Unpack Linux 7.3 into the cache, lay mirage's overlay and patch series on
# it, configure (tinyconfig + scripts/config/mirage.config) and build
# bzImage and modules out of tree. Every step is incremental: unchanged
# files keep their mtimes, so touching one driver file rebuilds one module.
. "$(dirname "$0")/lib.sh"
mirage_enter "$@"
"$MIRAGE_ROOT/scripts/toolchain.sh"
chroot_mount

t0=$SECONDS
TARBALL=/usr/src/linux-source-7.3.tar.xz
[ -f "$CHROOT$TARBALL" ] || die "linux-source-7.3 is not installed in the chroot"

# 1. Pristine source, unpacked once per package version, or again when the
# tree is in a state the patch steps cannot undo.
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
src_ver=$(in_chroot dpkg-query -W -f='${Version}' linux-source-7.3)
unpack() { # why
	log "unpacking linux-source-7.3 $src_ver ($1)"
	rm -rf --one-file-system "$KSRC" "$KBUILD" "$CHROOT/build/linux-source-7.3"
	mkdir -p "$CHROOT/build"
	in_chroot tar -C /build -xaf "$TARBALL"
	mv "$CHROOT/build/linux-source-7.3" "$KSRC"
	echo "$src_ver" >"$KSRC/.mirage-src"
}
if [ "$(cat "$KSRC/.mirage-src" 2>/dev/null)" != "$src_ver" ]; then
	unpack "new source, or the last patch step failed"
fi

# 2. The patch series. What was applied last time is kept in the tree, so a
# changed series is rolled back patch by patch instead of re-unpacking
# (which would touch every file and force a full rebuild).
APPLIED=$KSRC/.mirage-patches
# shellcheck disable=SC2046 # one patch name per word
want_series=$(cd "$MIRAGE_ROOT/patches" && cat series $(cat series) | sha256sum)
# shellcheck disable=SC2046
have_series=$(cd "$APPLIED" 2>/dev/null && cat series $(cat series) | sha256sum || true)
# Every patch is tried with --dry-run first: patch applies the hunks it
# can, and a half-applied patch could be neither reverted nor reapplied.
# Should the real run still fail, .mirage-src goes, so the next run starts
# from a fresh tree.
try_patch() { # patch-file patch-args...
	local f=$1
	shift
	patch -d "$KSRC" -p1 --batch --quiet --no-backup-if-mismatch --dry-run "$@" <"$f" >/dev/null || return 1
	patch -d "$KSRC" -p1 --batch --quiet --no-backup-if-mismatch "$@" <"$f" || { rm -f "$KSRC/.mirage-src"; return 1; }
}
if [ "$want_series" != "$have_series" ]; then
	if [ -f "$APPLIED/series" ]; then
		for p in $(tac "$APPLIED/series"); do
			log "reverting $p"
			if ! try_patch "$APPLIED/$p" -R; then
				unpack "could not revert $p: the tree was changed outside the scripts"
				break
			fi
			# The record stays true if this run dies half-way.
			sed -i '$d' "$APPLIED/series"
		done
	fi
	rm -rf "$APPLIED"
	mkdir -p "$APPLIED"
	: >"$APPLIED/series"
	while read -r p; do
		[ -n "$p" ] || continue
		log "applying $p"
		try_patch "$MIRAGE_ROOT/patches/$p" --forward || die "patch $p does not apply to Linux $src_ver"
		cp "$MIRAGE_ROOT/patches/$p" "$APPLIED/"
		echo "$p" >>"$APPLIED/series"
	done <"$MIRAGE_ROOT/patches/series"
fi

# 3. The overlay: new files only. Copy what differs; drop what the repo no
# longer has. Replacing an upstream file is refused: that is a patch's job.
MANIFEST=$KSRC/.mirage-overlay
new_manifest=$(mktemp)
(cd "$MIRAGE_ROOT" && for d in drivers rust include Documentation; do [ ! -d "$d" ] || find "$d" -type f; done | sort) >"$new_manifest"
touch "$MANIFEST"
while read -r f; do
	dst=$KSRC/$f
	if [ -e "$dst" ] && ! grep -qxF "$f" "$MANIFEST"; then
		die "overlay file $f would replace an upstream file; change it with a patch in patches/"
	fi
	if ! cmp -s "$MIRAGE_ROOT/$f" "$dst"; then
		install -D -m 644 "$MIRAGE_ROOT/$f" "$dst"
	fi
done <"$new_manifest"
comm -23 "$MANIFEST" "$new_manifest" | while read -r f; do rm -f "$KSRC/$f"; done
mv "$new_manifest" "$MANIFEST"

# 4. Configuration, regenerated only when its inputs change. A patch can
# change a Kconfig, so its contents count, not only its name.
FRAG=$MIRAGE_ROOT/scripts/config/mirage.config
cfg_want=$( (echo "$src_ver"; echo "$want_series"; cat "$FRAG"; find "$MIRAGE_ROOT/drivers" -name Kconfig -exec cat {} +) | sha256sum)
mkdir -p "$KBUILD"
if [ ! -f "$KBUILD/.config" ] || [ "$(cat "$KBUILD/.mirage-config" 2>/dev/null)" != "$cfg_want" ]; then
	log "configuring (tinyconfig + $(basename "$FRAG"))"
	kmake -s tinyconfig >/dev/null
	cp "$FRAG" "$KBUILD/mirage.config"
	in_chroot "$KSRC_IN/scripts/kconfig/merge_config.sh" -m -O "$KBUILD_IN" \
		"$KBUILD_IN/.config" "$KBUILD_IN/mirage.config" >"$KBUILD/merge.log" 2>&1 \
		|| die "merge_config failed; see $KBUILD/merge.log"
	kmake -s olddefconfig >/dev/null
	missing=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*) grep -qxF "$line" "$KBUILD/.config" || { log "config: wanted $line, got: $(grep "^${line%%=*}=" "$KBUILD/.config" || echo 'not set')"; missing=1; } ;;
		"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}
			grep -q "^$sym=[ym]" "$KBUILD/.config" && { log "config: wanted $sym off, got it on"; missing=1; } ;;
		esac
	done <"$FRAG"
	[ $missing = 0 ] || die "the config fragment did not stick (a Kconfig dependency is missing); see above"
	echo "$cfg_want" >"$KBUILD/.mirage-config"
fi

# 5. Build. A cold build takes 12-20 min, so a line a minute shows it is
# moving. The loop ends with this script even if it is killed.
BUILD_LOG=$KBUILD/build.log
log "building bzImage and modules (make LLVM=1 CLIPPY=1 -j$(nproc); log in $BUILD_LOG)"
progress() {
	local min=0 steps last
	while sleep 60 && kill -0 $$ 2>/dev/null; do
		min=$((min + 1))
		steps=$(grep -cE '^  [A-Z]' "$BUILD_LOG" || true)
		last=$(grep -E '^  [A-Z]' "$BUILD_LOG" | tail -n 1 | sed 's/^ *//' || true)
		log "kernel build: $min min, $steps steps so far (last: ${last:-none})"
	done
}
# Without the lock's descriptor: its last `sleep` may outlive this script.
progress {MIRAGE_LOCK_FD}>&- &
progress_pid=$!
build_rc=0
kmake bzImage modules >"$BUILD_LOG" 2>&1 || build_rc=$?
kill "$progress_pid" 2>/dev/null || true
wait "$progress_pid" 2>/dev/null || true
if [ $build_rc != 0 ]; then
	grep -E 'error|Error' "$BUILD_LOG" | head -40 >&2
	die "kernel build failed; see $BUILD_LOG"
fi

# mirage's own code must build without a warning, clippy's included
# (upstream's may have some). A rustc or clippy diagnostic names its file
# on a "  --> path" line below the "warning:" line; a C compiler's and
# modpost's name it on the same line. Matching blocks are printed.
# The overlay's files under rust/ (abstractions and helpers) are mirage's
# own code too.
overlay_rust=$(overlay_rust_regex)
mirage_warnings() {
	awk -v re="drivers/gpu/drm/mirage/${overlay_rust:+|$overlay_rust}" '
	function flush() { if (hit) { printf "%s", buf; found = 1 } buf = ""; hit = 0; inblk = 0 }
	/^(warning|error)(\[[^]]*\])?: / { flush(); inblk = 1 }
	/^WARNING: modpost: / || /:[0-9]+:[0-9]+: (warning|error): / { flush(); if ($0 ~ re) { print; found = 1 } next }
	inblk { buf = buf $0 "\n"; if ($0 ~ /^ *--> / && $0 ~ re) hit = 1; if ($0 == "") flush() }
	END { flush(); exit !found }' "$1"
}
warnings=$(mirage_warnings "$BUILD_LOG" || true)
if [ -n "$warnings" ]; then
	head -n 80 <<<"$warnings" >&2
	# Rebuild them next time, so that the warnings show again.
	touch "$KSRC/drivers/gpu/drm/mirage/mirage.rs"
	grep -E '^rust/' "$MANIFEST" | while read -r f; do touch "$KSRC/$f"; done
	die "the mirage driver built with warnings; see above"
fi
rm -rf --one-file-system "$CHROOT/build/modroot"
kmake -s modules_install INSTALL_MOD_PATH=/build/modroot >/dev/null 2>"$KBUILD/modinst.log" \
	|| die "modules_install failed; see $KBUILD/modinst.log"
log "kernel ready in $((SECONDS - t0)) s"
