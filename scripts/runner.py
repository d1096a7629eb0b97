#!/usr/bin/env python3
"""Boot the mirage test guest against the virtual GPU and judge the result.

The runner starts `mirage-gpu` on the host, boots QEMU from the toolchain
chroot with the device attached over vfio-user, collects the serial log,
parses KTAP (KUnit and in-guest tests), the guest init's "MIRAGE: " markers
and kernel splats, and keeps every log in the results folder. It kills only
the processes it started.

    runner.py run                  # the demo: boot, modprobe, `mirage info`
    runner.py bench                # boot, run `mirage-bench`, print its numbers
    runner.py check [--only NAME]  # every guest scenario (or one); prints results

`check` prints one line per result and ends with "N passed, N failed".
"""

import argparse
import gzip
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MIRAGE_CACHE", "/var/cache/mirage"))
CHROOT = CACHE / "chroot"
KBUILD_IN = "/build/kbuild"
MODROOT = CHROOT / "build/modroot"
RESULTS = Path(os.environ.get("MIRAGE_RESULTS", ROOT / "results"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
GUEST_BIN = TARGET / "x86_64-unknown-linux-gnu/release"
HOST_BIN = TARGET / "release"
VRAM = os.environ.get("MIRAGE_VRAM", "64M")

# Splats that fail a run wherever they appear in the serial log.
SPLAT = re.compile(
    r"(WARNING:|BUG:|INFO:|Oops|Kernel panic|general protection fault|UBSAN:|"
    r"------------\[ cut here \]------------|DMA-API: \S+ \S+: |list_add corruption|list_del corruption|"
    r"possible circular locking|possible recursive locking|inconsistent lock state|"
    r"suspicious RCU usage|detected stalls|unreferenced object 0x|"
    r"kmemleak: \d+ new suspected memory leaks|rust_kernel: panicked)"
)
# The lockdep report the canary scenario provokes on purpose.
CANARY_REPORT = re.compile(r"WARNING: possible circular locking dependency detected")
# What in the device model's log means it broke, whatever the guest saw.
GPU_SPLAT = re.compile(r"panicked")
TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
KTAP_CASE = re.compile(r"^(\s*)(not ok|ok) (\d+) ([^#]*?)\s*(#\s*(SKIP|TODO).*)?$")
KTAP_PLAN = re.compile(r"^(\s*)1\.\.(\d+)\s*$")
SUBTEST = re.compile(r"^\s*# Subtest: (\S+)")
# Suites whose every case must run: a SKIP there is a failure.
REQUIRED_SUITES = ("mirage_uapi_get_param", "mirage_guest", "rust_dma_fence", "rust_dma_resv",
                   "rust_dma_fence_callback", "rust_drm_exec", "rust_drm_gpusvm", "rust_drm_gpuvm",
                   "rust_drm_gpuvm_exec", "rust_drm_syncobj", "rust_drm_job_queue", "mirage_pgtable",
                   "mirage_vm", "rust_rwsem", "rust_mmu_interval_notifier", "rust_hmm")
# The guest asks the runner for one control-socket command with this line and
# reads "<n> <reply>" back on its console.
CONTROL_REQUEST = re.compile(r"^control-request (\d+) (.+)$")


def log(msg):
    print(f"[runner] {msg}", file=sys.stderr, flush=True)


@dataclass
class Result:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""


@dataclass
class Scenario:
    name: str
    mode: str
    inject: str = ""
    timeout: int = 600
    expect_log: list = field(default_factory=list)
    # Serve the guest's control-socket requests while it runs.
    control: bool = False


# What `make check` boots. The probe-fail scenarios prove that the driver
# notices a broken device: were its ID check or its interrupt self-test
# removed, they would bind and fail here.
SCENARIOS = {
    # A hang guard, not a speed limit: the test boot runs every KUnit suite twice, the
    # in-guest tests (the fail-nth one alone is about a minute) and reloads; under TCG on a
    # loaded machine it has taken up to ten minutes.
    "guest": Scenario("guest", "test", control=True, timeout=1200, expect_log=[
        "self-tests passed (irq, dma, mmu job)",
        # Each fault injected through the control socket fails the next probe
        # with its own message (guest-init.sh).
        "interrupt self-test failed: no MSI-X interrupt",
        "MMU self-test: the job did not complete",
        "DMA self-test: device reports status 2",
    ]),
    "bad-id": Scenario(
        "bad-id", "probe-fail", inject="bad-id",
        expect_log=["ID register reads 0xb8beadb2, expected 0x4741524d: not a mirage GPU"],
    ),
    "no-irq": Scenario(
        "no-irq", "probe-fail", inject="drop-irqs",
        expect_log=["interrupt self-test failed: no MSI-X interrupt"],
    ),
    # Lockdep sees the signalling annotations: an allocation the driver makes
    # inside a bind's signalling section on purpose must be reported.
    "canary": Scenario("canary", "canary", expect_log=[
        "WARNING: possible circular locking dependency detected",
    ]),
}

# What `make bench` boots; not part of `make check`: it judges the boot
# (driver loaded, no splat), never the numbers.
BENCH = Scenario("bench", "bench", timeout=900)


# --- initramfs -------------------------------------------------------------

def cpio_newc(entries):
    """Serialise (path, mode, data-or-None, link-target-or-None) as newc."""
    out = bytearray()
    ino = 1
    for path, mode, data, target in entries + [("TRAILER!!!", 0, b"", None)]:
        body = target.encode() if target is not None else (data or b"")
        name = path.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name), 0))
        out += hdr.encode() + name
        out += b"\0" * (-len(out) % 4)
        out += body
        out += b"\0" * (-len(out) % 4)
        ino += 1
    return bytes(out)


def build_initramfs(dest):
    entries = []
    for d in ["bin", "usr", "usr/bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"]:
        entries.append((d, 0o040755, None, None))
    entries.append(("init", 0o100755, (ROOT / "scripts/guest-init.sh").read_bytes(), None))
    entries.append(("bin/busybox", 0o100755, (CHROOT / "bin/busybox").read_bytes(), None))
    entries.append(("bin/sh", 0o120777, None, "busybox"))
    for exe in ["mirage", "mirage-tests", "mirage-bench"]:
        p = GUEST_BIN / exe
        if not p.exists():
            raise SystemExit(f"missing guest binary {p}; run scripts/mirage.sh")
        entries.append((f"usr/bin/{exe}", 0o100755, p.read_bytes(), None))
    mods = MODROOT / "lib/modules"
    if not mods.is_dir():
        raise SystemExit(f"no modules in {mods}; run scripts/kernel.sh")
    for p in sorted(mods.rglob("*")):
        rel = "lib/modules/" + str(p.relative_to(mods))
        if p.is_symlink():
            continue  # build/ and source/ point into the build tree
        if p.is_dir():
            entries.append((rel, 0o040755, None, None))
        else:
            entries.append((rel, 0o100644, p.read_bytes(), None))
    dest.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=1))


# --- processes -------------------------------------------------------------

class Proc:
    """A child in its own session, so that killing it kills only what it spawned."""

    def __init__(self, argv, logfile, stdin=False):
        self.log = open(logfile, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  start_new_session=True)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.p.stdin is not None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
        if self.p.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.p.pid, sig)
                except ProcessLookupError:
                    break
                if self.wait(3) is not None:
                    break
        self.log.close()


def qemu_argv(accel, kernel_args, sock_in, initrd_in):
    return [
        "chroot", str(CHROOT), "qemu-system-x86_64",
        "-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-no-reboot", "-accel", accel,
        # No 5-level paging: with LA57, KASAN mis-reports early-boot
        # direct-map accesses (ff11...) as wild (seen in an IRQ at 0.004 s).
        "-cpu", "max,la57=off" if accel == "tcg" else "host,la57=off",
        "-smp", "2", "-m", "1G",
        "-object", "memory-backend-memfd,id=mem,size=1G,share=on",
        "-machine", "q35,memory-backend=mem",
        "-kernel", f"{KBUILD_IN}/arch/x86/boot/bzImage",
        "-initrd", initrd_in,
        "-append", f"console=ttyS0 panic=-1 oops=panic {kernel_args}",
    ] + ([] if sock_in is None else [
        "-device", '{"driver":"vfio-user-pci","socket":{"path":"%s","type":"unix"}}' % sock_in,
    ])


class Run:
    """A scratch directory inside the chroot, seen by QEMU at `self.inside`."""

    def __init__(self, tag):
        self.inside = f"/var/tmp/mirage-run-{os.getpid()}-{tag}"
        self.host = CHROOT / self.inside.lstrip("/")
        shutil.rmtree(self.host, ignore_errors=True)
        self.host.mkdir(parents=True)

    def cleanup(self):
        shutil.rmtree(self.host, ignore_errors=True)


def pick_accel(initrd_run):
    """KVM when a quick probe boots, else TCG. The verdict is cached per host."""
    forced = os.environ.get("MIRAGE_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = hashlib.sha256((os.uname().release + os.uname().version).encode()).hexdigest()[:16]
    cache = CACHE / f"accel-{key}"
    if cache.exists():
        return cache.read_text().strip()
    run = Run("kvmprobe")
    try:
        shutil.copy(initrd_run, run.host / "initramfs.gz")
        logf = run.host / "serial.log"
        q = Proc(qemu_argv("kvm", "mirage_mode=alive", None, f"{run.inside}/initramfs.gz"), logf)
        q.wait(30)
        q.kill()
        ok = "MIRAGE: done" in logf.read_text(errors="replace")
    finally:
        run.cleanup()
    accel = "kvm" if ok else "tcg"
    log(f"KVM probe {'booted' if ok else 'failed'}: using {accel}")
    cache.write_text(accel + "\n")
    return accel


# --- one boot --------------------------------------------------------------

def boot(sc, accel, initrd, outdir):
    """Boots one scenario; returns (serial text, results)."""
    run = Run(sc.name)
    results = []
    gpu = qemu = None
    try:
        shutil.copy(initrd, run.host / "initramfs.gz")
        sock = run.host / "gpu.sock"
        # A large TLB: a driver that forgets to invalidate it must be caught.
        gpu_argv = [str(HOST_BIN / "mirage-gpu"), "--socket", str(sock), "--vram-size", VRAM,
                    "--tlb-entries", "4096",
                    "--control", str(run.host / "control.sock")]
        if sc.inject:
            gpu_argv += ["--inject", sc.inject]
        gpu = Proc(gpu_argv, outdir / f"{sc.name}-gpu.log")
        deadline = time.time() + 10
        while not sock.exists():
            if gpu.p.poll() is not None or time.time() > deadline:
                return "", [Result(f"{sc.name}: device", "fail", "mirage-gpu did not start listening")]
            time.sleep(0.05)
        serial = outdir / f"{sc.name}-serial.log"
        t0 = time.time()
        qemu = Proc(qemu_argv(accel, f"mirage_mode={sc.mode}", f"{run.inside}/gpu.sock",
                              f"{run.inside}/initramfs.gz"), serial, stdin=sc.control)
        control = Control(run.host / "control.sock", qemu, outdir / f"{sc.name}-control.log") \
            if sc.control else None
        rc = None
        while time.time() - t0 < sc.timeout:
            rc = qemu.wait(0.2)
            if rc is not None:
                break
            if control is not None:
                control.serve(serial)
        took = time.time() - t0
        if rc is None:
            results.append(Result(f"{sc.name}: boot", "fail", f"timed out after {sc.timeout} s"))
        qemu.kill()
        gpu_rc = gpu.wait(10)
        gpu.kill()
        text = serial.read_text(errors="replace")
        log(f"{sc.name}: guest ran {took:.1f} s (accel {accel}, qemu rc {rc}, device rc {gpu_rc})")
        # The device model is part of what is tested: a panic in it or an
        # unclean exit fails the boot that used it, whatever the guest saw.
        results.append(Result(f"{sc.name}: device model exited cleanly",
                              "pass" if gpu_rc == 0 else "fail",
                              f"mirage-gpu exit status {gpu_rc}"))
        gpu_log = (outdir / f"{sc.name}-gpu.log").read_text(errors="replace").splitlines()
        bad = [l for l in gpu_log if GPU_SPLAT.search(l)]
        results.append(Result(f"{sc.name}: no panic in the device model log",
                              "fail" if bad else "pass", "\n".join(bad[:10])))
        return text, results
    finally:
        for p in (qemu, gpu):
            if p is not None:
                p.kill()
        run.cleanup()


class Control:
    """Answers the guest's control-socket requests (see guest-init.sh)."""

    def __init__(self, sock, qemu, logfile):
        self.sock = sock
        self.qemu = qemu
        self.logfile = logfile
        self.served = 0
        # How much of the serial log was read: each poll reads only what is new.
        self.pos = 0

    def ask(self, cmd):
        import socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(str(self.sock))
            c.sendall(cmd.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.decode(errors="replace").strip() or "error no reply"

    def serve(self, serial):
        with open(serial, "rb") as f:
            f.seek(self.pos)
            new = f.read()
        # A line still being written is read again, whole, at the next poll.
        end = new.rfind(b"\n") + 1
        self.pos += end
        for l in strip(new[:end].decode(errors="replace")):
            m = CONTROL_REQUEST.match(marker_text(l) or "")
            if not m or int(m.group(1)) <= self.served:
                continue
            n, cmd = int(m.group(1)), m.group(2).strip()
            try:
                reply = self.ask(cmd)
            except OSError as e:
                reply = f"error {e}"
            with open(self.logfile, "a") as f:
                f.write(f"{n} {cmd} -> {reply}\n")
            self.served = n
            self.qemu.p.stdin.write(f"{n} {reply}\n".encode())
            self.qemu.p.stdin.flush()


def strip(text):
    return [TIMESTAMP.sub("", l.rstrip("\r")) for l in text.splitlines()]


class Suite:
    """One KTAP (sub)test with its plan, as it is being read."""

    def __init__(self, indent, name, nested):
        self.indent = indent
        self.name = name
        # KUnit prints no plan for the cases of a parameterised test.
        self.nested = nested
        self.plan = None
        self.count = 0


def parse_ktap(lines):
    """Every KTAP case in the log, as results named suite.case (suite.case.param
    for the cases of a parameterised test), plus a failure for every suite
    whose number of cases differs from its plan (a truncated run) and for a
    SKIP in a required suite. A suite that runs again (the module is loaded
    twice) is named suite#2."""
    out = []
    stack = []
    runs = {}

    def close(suite):
        if suite.plan is None and suite.nested:
            return
        if suite.plan != suite.count:
            out.append(Result(f"{suite.name}: plan", "fail",
                              f"plan 1..{suite.plan}, {suite.count} cases reported"))

    def pop_deeper(indent, inclusive):
        while stack and (stack[-1].indent > indent or (inclusive and stack[-1].indent == indent)):
            close(stack.pop())

    for l in lines:
        m = SUBTEST.match(l)
        if m:
            indent = len(l) - len(l.lstrip())
            pop_deeper(indent, inclusive=True)
            name = m.group(1)
            if stack:
                name = f"{stack[-1].name}.{name}"
            else:
                runs[name] = runs.get(name, 0) + 1
                if runs[name] > 1:
                    name = f"{name}#{runs[name]}"
            stack.append(Suite(indent, name, nested=len(stack) > 0))
            continue
        m = KTAP_PLAN.match(l)
        if m:
            if stack and stack[-1].indent == len(m.group(1)) and stack[-1].plan is None:
                stack[-1].plan = int(m.group(2))
            continue
        m = KTAP_CASE.match(l)
        if not m:
            continue
        indent = len(m.group(1))
        pop_deeper(indent, inclusive=False)
        if not stack or stack[-1].indent != indent:
            continue  # a suite's own result line; its cases were counted
        suite = stack[-1]
        suite.count += 1
        name = f"{suite.name}.{m.group(4).strip()}"
        base = suite.name.split(".")[0].split("#")[0]
        if m.group(6) == "SKIP":
            status = "fail" if base in REQUIRED_SUITES else "skip"
            out.append(Result(name, status, m.group(5) or ""))
        else:
            out.append(Result(name, "pass" if m.group(2) == "ok" else "fail"))
    while stack:
        close(stack.pop())
    return out


# The guest's init and the kernel share the serial console, so a kernel
# message can land in the middle of a marker line, before or after it.
KMSG_TAIL = re.compile(r"\[\s*\d+\.\d+\].*$")


def marker_text(line):
    """What follows "MIRAGE: " on a console line, without a kernel message
    that landed in it; None if the line has no marker."""
    at = line.find("MIRAGE: ")
    if at < 0:
        return None
    return KMSG_TAIL.sub("", line[at + len("MIRAGE: "):])


def markers(lines):
    """The `key=value` markers of raw console lines (with their kernel
    timestamps). A kernel message may land in the middle of a marker and end
    its line: the rest of the marker then starts the next line, which has no
    timestamp of its own."""
    m = {}
    texts = []
    cut = False
    for l in lines:
        t = marker_text(l)
        if t is not None:
            texts.append(t)
            cut = KMSG_TAIL.search(l[l.find("MIRAGE: "):]) is not None
        elif cut and texts and not TIMESTAMP.match(l):
            texts[-1] += KMSG_TAIL.sub("", l.rstrip("\r"))
            cut = KMSG_TAIL.search(l) is not None
        else:
            cut = False
    for t in texts:
        if "=" in t:
            k, v = t.split("=", 1)
            m[k.strip()] = v.strip()
    return m


def judge(sc, text):
    lines = strip(text)
    res = []
    mk = markers(text.splitlines())

    def expect(name, ok, detail=""):
        res.append(Result(f"{sc.name}: {name}", "pass" if ok else "fail", "" if ok else detail))

    done = any(l.startswith("MIRAGE: done") for l in lines)
    expect("guest reached the end of init", done, "no 'MIRAGE: done' (crash, panic or hang)")
    if sc.mode in ("test", "run", "bench"):
        expect("modprobe mirage", mk.get("modprobe rc") == "0", f"rc {mk.get('modprobe rc')}")
        expect("driver bound", mk.get("bound") == "1", "the device is not bound to mirage")
        expect("mirage info", mk.get("info rc") == "0", f"rc {mk.get('info rc')}")
        expect("rmmod mirage", mk.get("rmmod rc") == "0", f"rc {mk.get('rmmod rc')}")
        if sc.mode == "bench":
            expect("mirage-bench exit status", mk.get("bench rc") == "0", f"rc {mk.get('bench rc')}")
        if sc.mode == "test":
            cases = parse_ktap(lines)
            suites = {c.name.split(".")[0] for c in cases if c.status == "pass"}
            for want in REQUIRED_SUITES:
                expect(f"KTAP suite {want} ran", want in suites, "no passing case in the log")
            res += [Result(f"{sc.name}: {c.name}", c.status, c.detail) for c in cases]
            expect("mirage-tests exit status", mk.get("tests rc") == "0", f"rc {mk.get('tests rc')}")
            # guest-init.sh: reload, sysfs unbind/bind, and faults injected
            # through the control socket that the next probe must refuse.
            for key, want in [
                ("inflight rc", "0"),
                ("fence-holder rc", "0"),
                ("reload modprobe rc", "0"), ("reload bound", "1"), ("reload info rc", "0"),
                ("reload bus-master", "1"),
                ("unbind rc", "0"), ("unbind bound", "0"), ("unbind bus-master", "0"),
                ("rebind rc", "0"), ("rebind bound", "1"), ("rebind info rc", "0"),
                ("dropped-irq bound", "0"), ("delayed-job bound", "0"), ("dma-error bound", "0"),
                ("recovered bind rc", "0"), ("recovered bound", "1"), ("recovered info rc", "0"),
                ("final rmmod rc", "0"),
            ]:
                expect(f"{key} = {want}", mk.get(key) == want, f"got {mk.get(key)}")
            for n, what in [(1, "drop-irqs"), (2, "delay"), (3, "delay"), (4, "inject-dma-error"),
                            (5, "clear-dma-errors")]:
                key = f"control {n} ({what}) reply"
                expect(f"control socket: {what} answered ok", mk.get(key) == "ok",
                       f"got {mk.get(key)}")
    elif sc.mode == "canary":
        for key in ("modprobe rc", "canary armed rc", "canary bind rc", "rmmod rc"):
            expect(f"{key} = 0", mk.get(key) == "0", f"got {mk.get(key)}")
        # The report: reclaim (the allocation) taken while mirage's bind
        # holds the fence-signalling map.
        acquiring = [lines[i + 1] for i, l in enumerate(lines[:-1])
                     if "is trying to acquire lock:" in l]
        expect("lockdep reports the allocation (fs_reclaim)",
               any("(fs_reclaim)" in l for l in acquiring), f"acquiring: {acquiring}")
        # The run step of a bind job holds it: the section of mirage's bind queue's worker
        # (`job_queue::Inner<mirage::vm::queue::BindOps<..>>::process`).
        expect("inside mirage's signalling section (dma_fence_map, held by a bind job)",
               any("(dma_fence_map)" in l and "[mirage]" in l and "BindOps" in l for l in lines),
               "no dma_fence_map held by mirage's bind queue in the log")
    elif sc.mode == "probe-fail":
        expect("driver refused the device", mk.get("bound") == "0", "bound to a broken device")
        expect("no render node", mk.get("render-node") == "0", "a render node appeared")
        expect("rmmod mirage", mk.get("rmmod rc") == "0", f"rc {mk.get('rmmod rc')}")
    for want in sc.expect_log:
        expect(f"log says '{want[:40]}...'", any(want in l for l in lines), f"missing: {want}")
    if "kmemleak begin" in text or sc.mode in ("test", "probe-fail"):
        expect("kmemleak ran", any("kmemleak: Kernel memory leak detector initialized" in l for l in lines)
               and any("MIRAGE: kmemleak end" in l for l in lines), "kmemleak off, or no scan")
    splats = [l for l in lines if SPLAT.search(l)]
    if sc.mode == "canary":
        # The one report the scenario provokes; lockdep is off after it.
        splats = [l for l in splats if not CANARY_REPORT.search(l)]
    expect("no kernel splat (WARNING/BUG/lockdep/KASAN/kmemleak)", not splats,
           "\n".join(splats[:10]))
    return res


# --- commands --------------------------------------------------------------

def prepare():
    RESULTS.mkdir(parents=True, exist_ok=True)
    initrd = RESULTS / "initramfs.gz"
    build_initramfs(initrd)
    return initrd


def section(text, name):
    """What a guest program printed between "MIRAGE: <name> begin" and
    "MIRAGE: <name> rc=...", without the kernel messages (timestamped) that
    share the console."""
    out = None
    for l in text.splitlines():
        l = l.rstrip("\r")
        m = marker_text(l)
        if out is None:
            if m is not None and m.strip() == f"{name} begin":
                out = []
        elif m is not None and m.startswith(f"{name} rc="):
            break
        elif not TIMESTAMP.match(l):
            out.append(l)
    return out or []


def demo(sc, header=None):
    """Boots `sc`, prints its section of the console, judges the boot."""
    initrd = prepare()
    accel = pick_accel(initrd)
    text, res = boot(sc, accel, initrd, RESULTS)
    if header:
        print(header.format(accel=accel))
    for l in section(text, "info" if sc.mode == "run" else sc.mode):
        print(l)
    res += judge(sc, text)
    bad = [r for r in res if r.status == "fail"]
    for r in bad:
        print(f"FAIL {r.name}: {r.detail}")
    print(f"logs: {RESULTS}/{sc.name}-serial.log, {RESULTS}/{sc.name}-gpu.log")
    return 1 if bad else 0


def cmd_run(_args):
    return demo(Scenario("demo", "run", timeout=600))


def cmd_bench(_args):
    return demo(BENCH, header="mirage-bench in the test guest (QEMU accel {accel}, debug kernel)\n")


def cmd_check(args):
    initrd = prepare()
    accel = pick_accel(initrd)
    names = [args.only] if args.only else list(SCENARIOS)
    results = []
    for n in names:
        sc = SCENARIOS[n]
        text, res = boot(sc, accel, initrd, RESULTS)
        results += res + judge(sc, text)
    for r in results:
        print(f"{r.status.upper():4} {r.name}")
        if r.status == "fail" and r.detail:
            for l in r.detail.splitlines():
                print(f"     {l}")
    # The caller (scripts/mirage.sh) adds these to the host results.
    p = sum(r.status == "pass" for r in results)
    f = sum(r.status == "fail" for r in results)
    s = sum(r.status == "skip" for r in results)
    print(f"guest: {p} passed, {f} failed, {s} skipped")
    return 1 if f else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run")
    sub.add_parser("bench")
    c = sub.add_parser("check")
    c.add_argument("--only", choices=list(SCENARIOS))
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runner.py must run as root (it chroots into the toolchain)")
    return {"run": cmd_run, "bench": cmd_bench, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
