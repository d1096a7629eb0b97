"""Tests of the runner's judgement: KTAP parsing, splat patterns, verdicts.

`make check` runs them on the host (`python3 -m unittest -v test_runner` in
scripts/), one result per test. A runner that misparses the log would turn a
broken guest green, so the patterns are checked against real report lines.
"""

import io
import tempfile
import types
import unittest
from pathlib import Path

import runner


def ktap(*lines):
    return [l for block in lines for l in block.strip("\n").split("\n")]


SUITE_OK = """
KTAP version 1
1..1
    KTAP version 1
    # Subtest: mirage_guest
    1..2
    ok 1 first
    ok 2 second
ok 1 mirage_guest
"""


class KtapTest(unittest.TestCase):
    def results(self, *lines):
        return {r.name: r for r in runner.parse_ktap(ktap(*lines))}

    def test_every_case_is_a_result(self):
        r = self.results(SUITE_OK)
        self.assertEqual(sorted(r), ["mirage_guest.first", "mirage_guest.second"])
        self.assertTrue(all(x.status == "pass" for x in r.values()))

    def test_a_failed_case_fails(self):
        r = self.results(SUITE_OK.replace("ok 2 second", "not ok 2 second"))
        self.assertEqual(r["mirage_guest.second"].status, "fail")

    def test_a_truncated_suite_fails_its_plan(self):
        r = self.results(SUITE_OK.replace("    ok 2 second\n", ""))
        self.assertEqual(r["mirage_guest: plan"].status, "fail")

    def test_a_suite_without_a_plan_fails(self):
        r = self.results(SUITE_OK.replace("    1..2\n", ""))
        self.assertEqual(r["mirage_guest: plan"].status, "fail")

    def test_skip_fails_in_a_required_suite_only(self):
        r = self.results(SUITE_OK.replace("ok 2 second", "ok 2 second # SKIP no device"))
        self.assertEqual(r["mirage_guest.second"].status, "fail")
        other = SUITE_OK.replace("mirage_guest", "upstream_suite")
        r = self.results(other.replace("ok 2 second", "ok 2 second # SKIP no device"))
        self.assertEqual(r["upstream_suite.second"].status, "skip")

    def test_parameterised_cases_belong_to_their_suite(self):
        r = self.results("""
    KTAP version 1
    # Subtest: mirage_vm
    1..1
        KTAP version 1
        # Subtest: split
        ok 1 4K
        not ok 2 2M
    # split: pass:1 fail:1 skip:0 total:2
    not ok 1 split
""")
        self.assertEqual(r["mirage_vm.split.4K"].status, "pass")
        self.assertEqual(r["mirage_vm.split.2M"].status, "fail")
        self.assertEqual(r["mirage_vm.split"].status, "fail")
        self.assertNotIn("mirage_vm: plan", r)

    def test_a_suite_run_twice_is_numbered(self):
        r = self.results(SUITE_OK, SUITE_OK)
        self.assertIn("mirage_guest#2.first", r)


class SplatTest(unittest.TestCase):
    # Lines as the kernel prints them (timestamps stripped).
    SPLATS = [
        "WARNING: CPU: 1 PID: 97 at drivers/gpu/drm/drm_gem.c:1234 drm_gem_object_release+0x2/0x3",
        "BUG: KASAN: slab-use-after-free in mirage_job_done+0x12/0x40 [mirage]",
        "UBSAN: array-index-out-of-bounds in drivers/gpu/drm/mirage/x.c:3:4",
        "INFO: trying to register non-static key.",
        "WARNING: possible circular locking dependency detected",
        "------------[ cut here ]------------",
        "DMA-API: mirage 0000:00:01.0: device driver failed to check map error",
        "list_add corruption. prev->next should be next (ffff888), but was 0000.",
        "unreferenced object 0xffff888003a1c000 (size 64):",
        "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "rust_kernel: panicked at drivers/gpu/drm/mirage/vm.rs:10:5:",
    ]
    BENIGN = [
        "DMA-API: preallocated 65536 debug entries",
        "DMA-API: debugging enabled by kernel config",
        "kmemleak: Kernel memory leak detector initialized (mempool available: 16384)",
        "mirage 0000:00:01.0: interrupt self-test failed: no MSI-X interrupt 2000 ms after a ping",
        "MIRAGE: kmemleak end",
    ]

    def test_reports_are_splats(self):
        for l in self.SPLATS:
            self.assertTrue(runner.SPLAT.search(l), l)

    def test_ordinary_lines_are_not(self):
        for l in self.BENIGN:
            self.assertFalse(runner.SPLAT.search(l), l)

    def test_a_device_model_panic_is_seen(self):
        self.assertTrue(runner.GPU_SPLAT.search(
            "thread 'engine-0' panicked at tools/mirage-gpu/src/device/engine.rs:40:17:"))
        self.assertFalse(runner.GPU_SPLAT.search("[1.0 mirage-gpu INFO] Connection closed"))


class MarkerTest(unittest.TestCase):
    def test_a_kernel_message_inside_a_marker_line_is_ignored(self):
        m = runner.markers([
            "MIRAGE: recovered bind rc=0[   21.914749] [drm] Initialized mirage 0.1.0",
            "[   22.000001] mirage 0000:00:01.0: probe failedMIRAGE: dma-error bound=0",
            "MIRAGE: control 4 (inject-dma-error) reply=ok",
        ])
        self.assertEqual(m["recovered bind rc"], "0")
        self.assertEqual(m["dma-error bound"], "0")
        self.assertEqual(m["control 4 (inject-dma-error) reply"], "ok")

    def test_a_marker_split_by_a_kernel_message_is_joined(self):
        m = runner.markers([
            "MIRAGE: control 5 (clear-dma-errors) reply=ok",
            "MIRAGE: recovere[  140.269251] [drm] Initialized mirage 0.1.0 for 0000:00:01.0",
            "d bind rc=0[  140.269445] mirage 0000:00:01.0: self-tests passed",
            "MIRAGE: recovered bound=1",
            "[  141.000000] random: crng init done",
            "MIRAGE: final rmmod rc=0",
        ])
        self.assertEqual(m["recovered bind rc"], "0")
        self.assertEqual(m["recovered bound"], "1")
        self.assertEqual(m["final rmmod rc"], "0")
        self.assertNotIn("recovere", m)


class ControlTest(unittest.TestCase):
    def test_each_request_is_answered_once_even_when_read_in_pieces(self):
        stdin = io.BytesIO()
        qemu = types.SimpleNamespace(p=types.SimpleNamespace(stdin=stdin))
        with tempfile.TemporaryDirectory() as d:
            serial = Path(d) / "serial.log"
            c = runner.Control(Path(d) / "control.sock", qemu, Path(d) / "control.log")
            asked = []
            c.ask = lambda cmd: asked.append(cmd) or "ok"
            serial.write_bytes(b"[    1.0] boot\nMIRAGE: control-request 1 drop-")
            c.serve(serial)
            self.assertEqual(asked, [])
            with open(serial, "ab") as f:
                f.write(b"irqs 1\n[    2.0] x\nMIRAGE: control-request 2 delay 0 0\n")
            c.serve(serial)
            c.serve(serial)
            self.assertEqual(asked, ["drop-irqs 1", "delay 0 0"])
            self.assertEqual(stdin.getvalue(), b"1 ok\n2 ok\n")


class JudgeTest(unittest.TestCase):
    SC = runner.Scenario("bad-id", "probe-fail", expect_log=["not a mirage GPU"])
    LOG = """
[    0.000000] kmemleak: Kernel memory leak detector initialized (mempool available: 16384)
[    5.100000] mirage 0000:00:01.0: ID register reads 0xb8beadb2: not a mirage GPU
MIRAGE: modprobe rc=0
MIRAGE: bound=0
MIRAGE: render-node=0
MIRAGE: rmmod rc=0
MIRAGE: kmemleak begin
MIRAGE: kmemleak end
MIRAGE: done
"""

    def verdicts(self, text):
        return {r.name: r.status for r in runner.judge(self.SC, text)}

    def test_a_refused_device_passes(self):
        v = self.verdicts(self.LOG)
        self.assertEqual([n for n, s in v.items() if s != "pass"], [])

    def test_binding_a_broken_device_fails(self):
        v = self.verdicts(self.LOG.replace("bound=0", "bound=1"))
        self.assertEqual(v["bad-id: driver refused the device"], "fail")

    def test_a_splat_fails_the_boot(self):
        v = self.verdicts(self.LOG + "[    9.0] BUG: KASAN: wild-memory-access in x\n")
        self.assertEqual(v["bad-id: no kernel splat (WARNING/BUG/lockdep/KASAN/kmemleak)"], "fail")

    def test_a_missing_end_fails(self):
        v = self.verdicts(self.LOG.replace("MIRAGE: done", ""))
        self.assertEqual(v["bad-id: guest reached the end of init"], "fail")


class BenchTest(unittest.TestCase):
    LOG = """
[    4.000000] mirage 0000:00:01.0: self-tests passed (irq, dma, mmu job)
MIRAGE: modprobe rc=0
MIRAGE: bound=1
MIRAGE: info rc=0
MIRAGE: bench begin
mirage-bench: costs measured side by side
[    6.500000] random: crng init done
no-op ioctl (GET_PARAM)      12000 ns
MIRAGE: bench rc=0
MIRAGE: rmmod rc=0
MIRAGE: done
"""

    def test_the_section_is_the_program_output_without_kernel_messages(self):
        self.assertEqual(runner.section(self.LOG, "bench"),
                         ["mirage-bench: costs measured side by side",
                          "no-op ioctl (GET_PARAM)      12000 ns"])
        self.assertEqual(runner.section(self.LOG, "info"), [])
        # Without its end (the program hung or died), all that follows shows.
        self.assertEqual(runner.section(self.LOG.replace("MIRAGE: bench rc=0\n", ""), "bench")[-1],
                         "MIRAGE: done")

    def test_a_bench_boot_is_judged_by_its_markers_not_its_numbers(self):
        def verdicts(text):
            return {r.name: r.status for r in runner.judge(runner.BENCH, text)}
        v = verdicts(self.LOG)
        self.assertEqual([n for n, s in v.items() if s != "pass"], [])
        v = verdicts(self.LOG.replace("bench rc=0", "bench rc=1"))
        self.assertEqual(v["bench: mirage-bench exit status"], "fail")
        self.assertNotIn("bench", runner.SCENARIOS)


if __name__ == "__main__":
    unittest.main()
