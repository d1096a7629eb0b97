#!/usr/bin/env bash
# The README's two commands: `make run` (the demo) and `make check` (every
# test). Both install what they need: the toolchain chroot, the kernel, the
# host and guest binaries.
. "$(dirname "$0")/lib.sh"
need_root

cmd=${1:-}
case "$cmd" in run|check) ;; *) die "usage: $0 run|check" ;; esac

# Host prerequisites: cargo is the machine's own; python3 runs the runner.
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup or Debian's cargo) on the host"
if ! command -v python3 >/dev/null; then
	log "installing python3 on the host"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null \
		|| die "could not install python3"
fi
# Static guest binaries link glibc statically.
[ -n "$(find /usr/lib -name libc.a -print -quit 2>/dev/null)" ] || {
	log "installing libc6-dev on the host (static glibc for the guest binaries)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-dev >/dev/null \
		|| die "could not install libc6-dev"
}

# Cargo's output lives in the cache, so a fresh clone (CI) starts warm.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}
export MIRAGE_CACHE
RESULTS=${MIRAGE_RESULTS:-$MIRAGE_ROOT/results}
export MIRAGE_RESULTS=$RESULTS
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
cd "$MIRAGE_ROOT"

"$MIRAGE_ROOT/scripts/toolchain.sh"

build_bins() {
	cargo build --release -q -p mirage-gpu &&
		RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q \
			--target x86_64-unknown-linux-gnu -p mirage -p mirage-tests
}

if [ "$cmd" = run ]; then
	build_bins || die "cargo build failed"
	"$MIRAGE_ROOT/scripts/kernel.sh"
	chroot_mount
	# Not exec: the EXIT trap must still remove the bind mounts.
	rc=0
	python3 "$MIRAGE_ROOT/scripts/runner.py" run || rc=$?
	exit $rc
fi

# --- make check -----------------------------------------------------------
pass=0 fail=0 skip=0
result() { # status name [detail-file]
	case "$1" in
	pass) pass=$((pass + 1)); echo "PASS $2" ;;
	skip) skip=$((skip + 1)); echo "SKIP $2" ;;
	*) fail=$((fail + 1)); echo "FAIL $2"; [ -z "${3:-}" ] || tail -n 30 "$3" | sed 's/^/     /' ;;
	esac
}
step() { # name log command...; returns the command's status
	local name=$1 logf=$2 t=$SECONDS rc=0
	shift 2
	"$@" >"$logf" 2>&1 || rc=$?
	if [ $rc = 0 ]; then result pass "$name"; else result fail "$name" "$logf"; fi
	log "$name: $((SECONDS - t)) s"
	return $rc
}

t0=$SECONDS
# Host unit tests, one result per test.
rc=0
cargo test --workspace >"$RESULTS/cargo-test.log" 2>&1 || rc=$?
host_failed=0
while read -r name status; do
	case "$status" in
	ok) result pass "host: $name" ;;
	ignored) result skip "host: $name" ;;
	*) result fail "host: $name"; host_failed=1 ;;
	esac
done < <(sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\|ignored\)$/\1 \2/p' "$RESULTS/cargo-test.log")
if [ $rc != 0 ] && [ $host_failed = 0 ]; then
	result fail "host: cargo test (did not build or run)" "$RESULTS/cargo-test.log"
fi
step "lint: cargo fmt --check" "$RESULTS/fmt.log" cargo fmt --all --check || true
step "lint: cargo clippy -D warnings" "$RESULTS/clippy.log" \
	cargo clippy --workspace --all-targets -q -- -D warnings || true
step "build: host and guest binaries" "$RESULTS/cargo-build.log" build_bins || true
kernel_ok=0
step "build: kernel and mirage.ko" "$RESULTS/kernel.log" "$MIRAGE_ROOT/scripts/kernel.sh" && kernel_ok=1
if [ $kernel_ok = 1 ]; then
	step "lint: rustfmt (kernel Rust, kernel's .rustfmt.toml)" "$RESULTS/kernel-rustfmt.log" \
		"$MIRAGE_ROOT/scripts/kernel-rustfmt.sh" --check || true
fi

if [ $kernel_ok = 1 ] && [ -x "$CARGO_TARGET_DIR/release/mirage-gpu" ]; then
	chroot_mount
	python3 "$MIRAGE_ROOT/scripts/runner.py" check >"$RESULTS/guest.log" 2>"$RESULTS/guest-runner.log" || true
	cat "$RESULTS/guest-runner.log" >&2
	grep -v '^guest: ' "$RESULTS/guest.log" || true
	g=$(sed -n 's/^guest: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$RESULTS/guest.log")
	if [ -n "$g" ]; then
		read -r gp gf gs <<<"$g"
		pass=$((pass + gp)) fail=$((fail + gf)) skip=$((skip + gs))
	else
		result fail "guest: runner did not report" "$RESULTS/guest-runner.log"
	fi
else
	result fail "guest: not run (no kernel or device binary)"
fi

log "make check took $((SECONDS - t0)) s; logs in $RESULTS"
if [ $skip -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ $fail = 0 ] || exit 1
