#!/usr/bin/env bash
# Builds the kernel crate's documentation (`make rustdoc`), which now holds
# the overlay's abstractions (rust/kernel/...): broken intra-doc links and
# malformed docs in them fail, as they would in upstream review.
. "$(dirname "$0")/lib.sh"
mirage_enter "$@"
[ -f "$KBUILD/.config" ] || die "no kernel build yet; run scripts/kernel.sh"
chroot_mount
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
kmake rustdoc >"$out" 2>&1 || rc=$?
cat "$out"
[ $rc = 0 ] || die "make rustdoc failed"
# Upstream's own docs may warn; the overlay's must not.
overlay_rust=$(overlay_rust_regex)
if [ -n "$overlay_rust" ] && grep -A6 -E '^(warning|error)' "$out" | grep -qE "$overlay_rust"; then
	die "rustdoc warns about the overlay's Rust; see above"
fi
