#!/usr/bin/env bash
# Formats the kernel Rust of the overlay with the toolchain's rustfmt and
# the kernel's .rustfmt.toml: `--check` only reports (the lint in make
# check), without it the repo's files are rewritten.
. "$(dirname "$0")/lib.sh"
need_root
mode=${1:-}
[ -f "$KSRC/.rustfmt.toml" ] || die "no kernel tree yet; run scripts/kernel.sh"
chroot_mount
work_in=/tmp/mirage-rustfmt-$$
work=$CHROOT$work_in
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"; _mirage_umount_all' EXIT
(cd "$MIRAGE_ROOT" && for d in drivers rust; do [ ! -d "$d" ] || find "$d" -name '*.rs'; done) >"$work/files"
while read -r f; do install -D -m 644 "$MIRAGE_ROOT/$f" "$work/$f"; done <"$work/files"
roots=$(cd "$work" && grep -l '^kernel::module_\|^module!' $(cat files) || true)
[ -n "$roots" ] || exit 0
args=(--edition 2021 --config-path "$KSRC_IN/.rustfmt.toml")
if [ "$mode" = --check ]; then
	(cd "$work" && in_chroot sh -c "cd $work_in && rustfmt --check ${args[*]} $roots")
else
	in_chroot sh -c "cd $work_in && rustfmt ${args[*]} $roots"
	while read -r f; do cmp -s "$work/$f" "$MIRAGE_ROOT/$f" || cp "$work/$f" "$MIRAGE_ROOT/$f"; done <"$work/files"
fi
