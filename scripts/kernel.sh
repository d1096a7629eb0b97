#!/usr/bin/env bash
# Unpack Linux 7.3 into the cache, lay mirage's overlay and patch series on
# it, configure (tinyconfig + scripts/config/mirage.config) and build
# bzImage and modules out of tree. Every step is incremental: unchanged
# files keep their mtimes, so touching one driver file rebuilds one module.
. "$(dirname "$0")/lib.sh"
need_root
"$MIRAGE_ROOT/scripts/toolchain.sh"
chroot_mount

t0=$SECONDS
TARBALL=/usr/src/linux-source-7.3.tar.xz
[ -f "$CHROOT$TARBALL" ] || die "linux-source-7.3 is not installed in the chroot"

# 1. Pristine source, unpacked once per package version.
src_ver=$(in_chroot dpkg-query -W -f='${Version}' linux-source-7.3)
if [ "$(cat "$KSRC/.mirage-src" 2>/dev/null)" != "$src_ver" ]; then
	log "unpacking linux-source-7.3 $src_ver"
	rm -rf "$KSRC" "$KBUILD" "$CHROOT/build/linux-source-7.3"
	mkdir -p "$CHROOT/build"
	in_chroot tar -C /build -xaf "$TARBALL"
	mv "$CHROOT/build/linux-source-7.3" "$KSRC"
	echo "$src_ver" >"$KSRC/.mirage-src"
fi

# 2. The patch series. What was applied last time is kept in the tree, so a
# changed series is rolled back patch by patch instead of re-unpacking
# (which would touch every file and force a full rebuild).
APPLIED=$KSRC/.mirage-patches
want_series=$(cd "$MIRAGE_ROOT/patches" && cat series $(cat series) | sha256sum)
have_series=$(cd "$APPLIED" 2>/dev/null && cat series $(cat series) | sha256sum || true)
if [ "$want_series" != "$have_series" ]; then
	if [ -f "$APPLIED/series" ]; then
		for p in $(tac "$APPLIED/series"); do
			log "reverting $p"
			patch -d "$KSRC" -p1 -R --batch --quiet <"$APPLIED/$p" || die "could not revert $p"
		done
	fi
	rm -rf "$APPLIED"
	mkdir -p "$APPLIED"
	: >"$APPLIED/series"
	while read -r p; do
		[ -n "$p" ] || continue
		log "applying $p"
		patch -d "$KSRC" -p1 --forward --batch --quiet <"$MIRAGE_ROOT/patches/$p" \
			|| die "patch $p does not apply to Linux $src_ver"
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

# 4. Configuration, regenerated only when its inputs change.
FRAG=$MIRAGE_ROOT/scripts/config/mirage.config
cfg_want=$( (echo "$src_ver"; cat "$FRAG" "$APPLIED/series"; find "$MIRAGE_ROOT/drivers" -name Kconfig -exec cat {} +) | sha256sum)
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

# 5. Build.
log "building bzImage and modules (make LLVM=1 -j$(nproc); logs in $KBUILD/build.log)"
if ! kmake bzImage modules >"$KBUILD/build.log" 2>&1; then
	grep -E 'error|Error' "$KBUILD/build.log" | head -40 >&2
	die "kernel build failed; see $KBUILD/build.log"
fi
# mirage's own code must build without a warning (upstream's may not).
if grep -A4 -E '^(warning|error)' "$KBUILD/build.log" | grep -q 'drivers/gpu/drm/mirage\|rust/kernel/.*mirage'; then
	grep -B2 -A12 -E '^warning' "$KBUILD/build.log" | head -60 >&2
	touch "$KSRC/drivers/gpu/drm/mirage/mirage.rs" # rebuild it next time, so the warning shows again
	die "the mirage driver built with warnings; see above"
fi
rm -rf "$CHROOT/build/modroot"
kmake -s modules_install INSTALL_MOD_PATH=/build/modroot >/dev/null 2>"$KBUILD/modinst.log" \
	|| die "modules_install failed; see $KBUILD/modinst.log"
log "kernel ready in $((SECONDS - t0)) s"
