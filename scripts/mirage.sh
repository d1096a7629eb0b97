#!/usr/bin/env bash
# The README's two commands: `make run` (the demo) and `make check` (every
# test; `make check ONLY=<scenario>`: the builds and one guest boot). Both
# install what they need: the toolchain chroot, the kernel, the host and
# guest binaries.
. "$(dirname "$0")/lib.sh"

usage() { die "usage: $0 run | bench | check [--only SCENARIO]"; }
cmd=${1:-}
only=
case "$cmd" in
run | bench) [ $# = 1 ] || usage ;;
check)
	case "${2:-}" in
	"") [ $# = 1 ] || usage ;;
	--only) if [ $# != 3 ] || [ -z "$3" ]; then usage; fi; only=$3 ;;
	*) usage ;;
	esac
	;;
*) usage ;;
esac
mirage_enter "$@"

# mirage-gpu's sockets are made on the host side of the chroot, as
# $CHROOT/var/tmp/mirage-run-<pid>-<scenario>/control.sock (scripts/runner.py),
# and a unix socket's path must fit in 107 bytes. Too long a cache path
# would only show as "mirage-gpu did not start listening". The example
# allows a 7-digit pid and a 16-byte scenario name.
sock_tail=/chroot/var/tmp/mirage-run-4194304-0123456789abcdef/control.sock
cache_abs=$(realpath -m "$MIRAGE_CACHE")
cache_max=$((107 - ${#sock_tail}))
[ "$(printf %s "$cache_abs" | wc -c)" -le $cache_max ] \
	|| die "MIRAGE_CACHE=$cache_abs is too long: the device's unix sockets live under it, so it may be at most $cache_max bytes"

# Host prerequisites: python3 runs the runner; static glibc (libc6-dev)
# links the guest binaries. Both are Debian packages the README lists.
host_install() { # package...
	log "installing $* on the host"
	apt-get update -qq || die "apt-get update failed on the host"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
		|| die "could not install $* on the host"
}
command -v python3 >/dev/null || host_install python3
[ -n "$(find /usr/lib -name libc.a -print -quit 2>/dev/null)" ] || host_install libc6-dev

# Cargo's output lives in the cache, so a fresh clone (CI) starts warm.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}
export MIRAGE_CACHE

# cargo is the machine's own. Under sudo it runs as the user who ran sudo,
# with that user's toolchain: rustup's ~/.cargo/bin is not on sudo's
# secure_path, root has no rustup default, and a root cargo would leave
# root-owned files in the user's ~/.cargo.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ -n "${SUDO_UID:-}" ]; then
	rust_user=$SUDO_USER
	rust_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
	rust_path=$rust_home/.cargo/bin:$PATH
	# runuser (util-linux) keeps the rest of the environment, RUSTFLAGS and
	# CARGO_TARGET_DIR included; root's own cargo and rustup homes must go.
	as_rust_user() {
		runuser -u "$SUDO_USER" -- env -u CARGO_HOME -u RUSTUP_HOME \
			HOME="$rust_home" USER="$SUDO_USER" LOGNAME="$SUDO_USER" PATH="$rust_path" "$@"
	}
	mkdir -p "$CARGO_TARGET_DIR"
	if [ -n "$(find "$CARGO_TARGET_DIR" ! -user "$SUDO_UID" -print -quit)" ]; then
		log "handing $CARGO_TARGET_DIR to $SUDO_USER, who runs cargo"
		chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$CARGO_TARGET_DIR"
	fi
else
	rust_user=$(id -un)
	rust_home=$HOME
	[ ! -d "$HOME/.cargo/bin" ] || PATH=$HOME/.cargo/bin:$PATH
	as_rust_user() { "$@"; }
fi
mcargo() { as_rust_user cargo "$@"; }

have_rust=$(as_rust_user rustc --version 2>/dev/null | awk '{print $2}') || true
if [ -z "$have_rust" ] || ! as_rust_user cargo --version >/dev/null 2>&1; then
	die "no cargo/rustc for $rust_user (looked in $rust_home/.cargo/bin and PATH): install Rust with rustup (https://rustup.rs), or pick a default toolchain (rustup default stable)"
fi
need_rust=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$MIRAGE_ROOT/Cargo.toml" | head -n 1)
if [ -n "$need_rust" ] && [ "$(printf '%s\n' "$need_rust" "${have_rust%%-*}" | sort -V | head -n 1)" != "$need_rust" ]; then
	die "rustc $have_rust (of $rust_user) is older than $need_rust, which the workspace needs (rust-version in Cargo.toml); Debian's cargo is too old: install Rust with rustup (https://rustup.rs), or run 'rustup update'"
fi

# results/ is deleted at the start of a run, as root: only a directory this
# script made (it carries the marker) or the default one in the clone, never
# whatever MIRAGE_RESULTS happens to name.
# Absolute (the runner runs from elsewhere), symlinks kept as they are.
RESULTS=$(realpath -m -s "${MIRAGE_RESULTS:-$MIRAGE_ROOT/results}")
export MIRAGE_RESULTS=$RESULTS
MARKER=.mirage-results
if [ -e "$RESULTS" ] || [ -L "$RESULTS" ]; then
	if [ -f "$RESULTS/$MARKER" ] || [ "$RESULTS" = "$MIRAGE_ROOT/results" ]; then
		rm -rf --one-file-system "$RESULTS"
	elif [ -d "$RESULTS" ] && [ -z "$(ls -A "$RESULTS")" ]; then
		rmdir "$RESULTS"
	else
		die "refusing to delete $RESULTS: mirage did not make it (no $MARKER in it); remove it yourself or set MIRAGE_RESULTS to a new path"
	fi
fi
mkdir -p "$RESULTS"
touch "$RESULTS/$MARKER"
# The logs belong to whoever ran sudo, not to root, when the run ends.
give_results() { [ -z "${SUDO_UID:-}" ] || chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$RESULTS" 2>/dev/null || true; }
give_results
trap give_results EXIT
cd "$MIRAGE_ROOT"

if [ -n "$only" ]; then
	# Before the builds, so that a typo costs a second, not minutes.
	scenarios=$(cd "$MIRAGE_ROOT/scripts" && python3 -B -c 'import runner; print(" ".join(runner.SCENARIOS))' 2>/dev/null) || scenarios=
	case " $scenarios " in
	"  " | *" $only "*) ;;
	*) die "no guest scenario '$only'; scenarios: $scenarios" ;;
	esac
fi

"$MIRAGE_ROOT/scripts/toolchain.sh"

build_bins() {
	mcargo build --release -q -p mirage-gpu &&
		RUSTFLAGS="-C target-feature=+crt-static" mcargo build --release -q \
			--target x86_64-unknown-linux-gnu -p mirage -p mirage-tests -p mirage-bench
}

if [ "$cmd" = run ] || [ "$cmd" = bench ]; then
	build_bins || die "cargo build failed"
	"$MIRAGE_ROOT/scripts/kernel.sh"
	chroot_mount
	rc=0
	python3 "$MIRAGE_ROOT/scripts/runner.py" "$cmd" || rc=$?
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
# As step, but the command's own "[mirage] ..." lines also reach the
# terminal: a cold kernel build takes 12-20 min and says how it is going.
step_shown() { # name log command...
	local name=$1 logf=$2 t=$SECONDS rc
	shift 2
	rc=$({ { "$@" 2>&1 && echo 0 >&3 || echo $? >&3; } | tee "$logf" |
		{ grep --line-buffered '^\[mirage\] ' >&2 || true; }; } 3>&1)
	rc=${rc:-1}
	if [ "$rc" = 0 ]; then result pass "$name"; else result fail "$name" "$logf"; fi
	log "$name: $((SECONDS - t)) s"
	return "$rc"
}

t0=$SECONDS
if [ -z "$only" ]; then
	# Host unit tests, one result per test. The status is taken from the
	# end of the line: a doctest's name has spaces ("src/x.rs - f (line 3)").
	# A hung test must not hang the run (and hold the lock) for ever;
	# timeout stops cargo and the test binaries with it (one process group).
	rc=0
	host_timeout=${MIRAGE_HOST_TEST_TIMEOUT:-1800}
	as_rust_user timeout --kill-after=30 "$host_timeout" cargo test --workspace \
		>"$RESULTS/cargo-test.log" 2>&1 || rc=$?
	host_failed=0
	while read -r status name; do
		case "$status" in
		ok) result pass "host: $name" ;;
		ignored) result skip "host: $name" ;;
		*) result fail "host: $name"; host_failed=1 ;;
		esac
	done < <(sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\|ignored\)\(, .*\)\{0,1\}$/\2 \1/p' "$RESULTS/cargo-test.log")
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		result fail "host: cargo test (timed out after $host_timeout s)" "$RESULTS/cargo-test.log"
	elif [ $rc != 0 ] && [ $host_failed = 0 ]; then
		result fail "host: cargo test (did not build or run)" "$RESULTS/cargo-test.log"
	fi
	# The runner's own judgement (KTAP, splat patterns), one result per test.
	rc=0
	(cd "$MIRAGE_ROOT/scripts" && PYTHONDONTWRITEBYTECODE=1 python3 -m unittest -v test_runner) \
		>"$RESULTS/runner-test.log" 2>&1 || rc=$?
	runner_failed=0
	while read -r name status; do
		case "$status" in
		ok) result pass "host: runner: $name" ;;
		skipped*) result skip "host: runner: $name" ;;
		*) result fail "host: runner: $name"; runner_failed=1 ;;
		esac
	done < <(sed -n 's/^\(test_[a-z0-9_]*\) (.*) \.\.\. \(.*\)$/\1 \2/p' "$RESULTS/runner-test.log")
	if [ $rc != 0 ] && [ $runner_failed = 0 ]; then
		result fail "host: runner tests (did not run)" "$RESULTS/runner-test.log"
	fi
	step "lint: cargo fmt --check" "$RESULTS/fmt.log" mcargo fmt --all --check || true
	step "lint: cargo clippy -D warnings" "$RESULTS/clippy.log" \
		mcargo clippy --workspace --all-targets -q -- -D warnings || true
fi
# The guest boots only with binaries built from this tree: after a failed
# build, the target directory still holds the last good ones.
bins_ok=0
step "build: host and guest binaries" "$RESULTS/cargo-build.log" build_bins && bins_ok=1
kernel_ok=0
step_shown "build: kernel and mirage.ko" "$RESULTS/kernel.log" "$MIRAGE_ROOT/scripts/kernel.sh" && kernel_ok=1
if [ $kernel_ok = 1 ] && [ -z "$only" ]; then
	step "lint: rustfmt (kernel Rust, kernel's .rustfmt.toml)" "$RESULTS/kernel-rustfmt.log" \
		"$MIRAGE_ROOT/scripts/kernel-rustfmt.sh" --check || true
	step "lint: rustdoc (the kernel crate with the overlay's abstractions)" "$RESULTS/rustdoc.log" \
		"$MIRAGE_ROOT/scripts/kernel-rustdoc.sh" || true
fi

if [ $kernel_ok = 1 ] && [ $bins_ok = 1 ]; then
	chroot_mount
	runner_args=(check)
	[ -z "$only" ] || runner_args+=(--only "$only")
	python3 "$MIRAGE_ROOT/scripts/runner.py" "${runner_args[@]}" >"$RESULTS/guest.log" 2>"$RESULTS/guest-runner.log" || true
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
	result fail "guest: not run (the kernel or the host/guest binaries did not build)"
fi

log "make check took $((SECONDS - t0)) s; logs in $RESULTS"
if [ $skip -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ $fail = 0 ] || exit 1
