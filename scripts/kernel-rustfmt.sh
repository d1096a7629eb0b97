#!/usr/bin/env bash
# Formats the kernel Rust of the overlay with the toolchain's rustfmt and
# the kernel's .rustfmt.toml: `--check` only reports (the lint in make
# check), without it the repo's files are rewritten.
. "$(dirname "$0")/lib.sh"
mirage_enter "$@"
mode=${1:-}
[ -f "$KSRC/.rustfmt.toml" ] || die "no kernel tree yet; run scripts/kernel.sh"
chroot_mount
work_in=/tmp/mirage-rustfmt-$$
work=$CHROOT$work_in
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
(cd "$MIRAGE_ROOT" && for d in drivers rust; do [ ! -d "$d" ] || find "$d" -name '*.rs'; done) >"$work/files"
[ -s "$work/files" ] || die "no Rust files under drivers/ or rust/: nothing to format"
while read -r f; do install -D -m 644 "$MIRAGE_ROOT/$f" "$work/$f"; done <"$work/files"
# rustfmt follows `mod` items from the crate roots. Finding none means the
# lint would check nothing, which must not pass as "formatted".
# shellcheck disable=SC2046 # one file name per word
roots=$(cd "$work" && grep -l '^kernel::module_\|^module!' $(cat files) || true)
[ -n "$roots" ] || die "no module root (a file with module! or kernel::module_*!) under drivers/ or rust/: nothing to format"
# The kernel crate's root (rust/kernel/lib.rs) is upstream's, not ours: an
# overlay file under rust/ whose parent module is upstream's (not in the
# overlay) is a root of its own; the others come along with their parent.
overlay_roots() {
	local f dir parent
	while read -r f; do
		case "$f" in rust/*) ;; *) continue ;; esac
		dir=${f%/*}
		[ "${f##*/}" = mod.rs ] && dir=${dir%/*}
		parent=$dir.rs
		grep -qxF "$parent" files || grep -qxF "$dir/mod.rs" files || echo "$f"
	done <files
}
roots="$roots $(cd "$work" && overlay_roots | tr '\n' ' ')"
args=(--edition 2021 --config-path "$KSRC_IN/.rustfmt.toml")
if [ "$mode" = --check ]; then
	(cd "$work" && in_chroot sh -c "cd $work_in && rustfmt --check ${args[*]} $roots")
else
	in_chroot sh -c "cd $work_in && rustfmt ${args[*]} $roots"
	while read -r f; do cmp -s "$work/$f" "$MIRAGE_ROOT/$f" || cp "$work/$f" "$MIRAGE_ROOT/$f"; done <"$work/files"
fi
