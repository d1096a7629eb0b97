//! Asynchronous VM_BIND (`struct drm_mirage_vm_bind` in `mirage_drm.h`):
//! bind queues, binds ordered by fences, by their queue, by overlap and by
//! the jobs before them, run-time failures and teardown. Every test checks
//! the result through the GPU, bit-exact, and the VA tree and page table
//! through debugfs: the VA tree changes when the ioctl runs, the page table
//! when the bind executes.
//!
//! A fence only the CPU signals comes from a [`Gate`]: a GPU job in a VM of
//! its own that spins on a semaphore. `make check` loads the driver with
//! `job_timeout_ms=2000`, so a test holds a gate closed for well under two
//! seconds, and [`Gate::release`] fails if the job timeout opened it first.

use crate::exec::{fence_status, sync_file_info, CMD_VA};
use crate::vm::{vm_debug, ShmemHugePages, VmDebug};
use crate::{check, deadline_in, e2s, errno, TestResult};
use mirage::cmd::{CmdBuf, SemCond};
use mirage::uapi::*;
use mirage::{BindOp, Bo, Device, Mapping, Sync};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SZ_4K: u64 = 4096;
const SZ_64K: u64 = 64 << 10;
const SZ_2M: u64 = 2 << 20;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;
const COMPUTE: u32 = DRM_MIRAGE_ENGINE_CLASS_COMPUTE;
const BIND: u32 = DRM_MIRAGE_ENGINE_CLASS_VM_BIND;
const NORMAL: u32 = DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL;
/// The VM's default bind queue.
const DEFAULT: u32 = 0;
/// Size of a test VM's command BO: room for every job a test has in flight.
const CMD_BO_SIZE: u64 = 256 << 10;
/// How long a bind or a job that nothing holds back may take, in ms.
const DONE_MS: i64 = 10_000;
/// How long a test gives a bind or job that must not run yet to run
/// anyway: well under the job timeout, which would open the gates.
const SETTLE: Duration = Duration::from_millis(100);
/// The debugfs directory of the driver's injection knobs.
const KNOBS: &str = "/sys/kernel/debug/mirage";

/// A syncobj, destroyed on drop.
struct Syncobj<'d> {
    d: &'d Device,
    handle: u32,
}

impl<'d> Syncobj<'d> {
    fn new(d: &'d Device) -> Result<Self, String> {
        let handle = d.syncobj_create(0).map_err(e2s)?;
        Ok(Syncobj { d, handle })
    }

    /// A wait entry for it.
    fn wait(&self) -> Sync {
        Sync::wait(self.handle)
    }

    /// A signal entry for it.
    fn signal(&self) -> Sync {
        Sync::signal(self.handle)
    }

    /// Whether point `point` (0: a binary syncobj) signals within `ms`.
    fn signals_within(&self, point: u64, ms: i64) -> Result<bool, String> {
        let deadline = if ms == 0 { 0 } else { deadline_in(ms) };
        match self.d.syncobj_wait(self.handle, point, deadline) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(false),
            Err(e) => Err(format!("syncobj wait: {e}")),
        }
    }

    /// Whether it holds a signalled fence now.
    fn signalled(&self) -> Result<bool, String> {
        self.signals_within(0, 0)
    }

    /// Waits up to `ms` for its fence and returns the fence's error (0 for
    /// none); `what` names it in the failure.
    fn status_within(&self, ms: i64, what: &str) -> Result<i32, String> {
        check!(
            self.signals_within(0, ms)?,
            "{what} did not signal within {ms} ms"
        );
        fence_status(self.d, self.handle)
    }

    /// Waits for its fence, which must signal without an error.
    fn expect_ok(&self, what: &str) -> TestResult {
        let status = self.status_within(DONE_MS, what)?;
        check!(status == 0, "{what} signalled error {status}");
        Ok(())
    }

    /// Checks that its fence has not signalled.
    fn expect_pending(&self, what: &str) -> TestResult {
        check!(!self.signalled()?, "{what} has already signalled");
        Ok(())
    }
}

impl Drop for Syncobj<'_> {
    fn drop(&mut self) {
        // Nothing to do about a failure; the file's close frees it anyway.
        let _ = self.d.syncobj_destroy(self.handle);
    }
}

/// Submits `ops` to bind queue `queue` of VM `vm` with wait entries
/// `waits`, and returns the syncobj its fence goes to: an asynchronous bind.
fn bind_out<'d>(
    d: &'d Device,
    vm: u32,
    queue: u32,
    ops: &[BindOp],
    waits: &[Sync],
) -> Result<Syncobj<'d>, String> {
    let out = Syncobj::new(d)?;
    let mut syncs = waits.to_vec();
    syncs.push(out.signal());
    d.vm_bind(vm, queue, ops, &syncs)
        .map_err(|e| format!("async VM_BIND: {e}"))?;
    Ok(out)
}

/// A fence only the CPU signals: the out-fence of a job that spins until
/// the CPU writes its semaphore. The job runs in a VM of its own, so that
/// it is none of the jobs an unmap in the VM under test waits for.
struct Gate<'d> {
    d: &'d Device,
    vm: u32,
    queue: u32,
    /// The CPU's view of the gate's BO: the job's command buffer at 0, the
    /// semaphore at `GATE_SEM`.
    bo: Mapping,
    out: Syncobj<'d>,
}

const GATE_VA: u64 = 0x1000_0000;
const GATE_SEM: u64 = 0x800;

impl<'d> Gate<'d> {
    fn new(d: &'d Device) -> Result<Self, String> {
        let vm = d.vm_create(0).map_err(e2s)?;
        let queue = d.exec_queue_create(vm, COMPUTE, NORMAL).map_err(e2s)?;
        let bo = Bo::new(d, SZ_4K, SYSTEM, vm).map_err(e2s)?;
        d.vm_bind(
            vm,
            DEFAULT,
            &[BindOp::map(bo.handle(), 0, GATE_VA, SZ_4K)],
            &[],
        )
        .map_err(e2s)?;
        let map = bo.mmap().map_err(e2s)?;
        let mut cb = CmdBuf::new();
        cb.sem_wait(GATE_VA + GATE_SEM, 1, SemCond::Eq32).end();
        map.write(0, &cb.to_bytes()).map_err(e2s)?;
        let out = Syncobj::new(d)?;
        let gate = Gate {
            d,
            vm,
            queue,
            bo: map,
            out,
        };
        d.exec(queue, GATE_VA, cb.len_bytes(), &[gate.out.signal()])
            .map_err(e2s)?;
        Ok(gate)
    }

    /// A wait entry for the gate.
    fn wait(&self) -> Sync {
        self.out.wait()
    }

    fn open(&self) {
        // The offset is in range and aligned: this cannot fail.
        let _ = self.bo.write_u32(GATE_SEM as usize, 1);
    }

    /// Opens the gate: checks that it was still closed (the job timeout did
    /// not open it, with an error, behind the test's back) and that it
    /// opens cleanly.
    fn release(&self) -> TestResult {
        check!(
            !self.out.signalled()?,
            "the gate opened before its release: the test held it past the job timeout"
        );
        self.open();
        self.out.expect_ok("the gate")
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        // A test that failed early must not leave work stuck behind it.
        self.open();
        let _ = self
            .d
            .syncobj_wait(self.out.handle, 0, deadline_in(DONE_MS));
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
    }
}

/// A VM under test with a compute exec queue and a command BO at `CMD_VA`
/// that gives each job a slot of its own, so that many jobs can be in
/// flight at once. Its BOs are private to it: it has no external BO, so no
/// job waits for another through implicit synchronisation.
struct Tvm<'d> {
    d: &'d Device,
    vm: u32,
    queue: u32,
    cmd: Bo<'d>,
    /// Offset of the next free slot of `cmd`.
    next: AtomicU64,
}

impl<'d> Tvm<'d> {
    fn new(d: &'d Device) -> Result<Self, String> {
        let vm = d.vm_create(0).map_err(e2s)?;
        let queue = d.exec_queue_create(vm, COMPUTE, NORMAL).map_err(e2s)?;
        let cmd = Bo::new(d, CMD_BO_SIZE, SYSTEM, vm).map_err(e2s)?;
        d.vm_bind(
            vm,
            DEFAULT,
            &[BindOp::map(cmd.handle(), 0, CMD_VA, CMD_BO_SIZE)],
            &[],
        )
        .map_err(e2s)?;
        Ok(Tvm {
            d,
            vm,
            queue,
            cmd,
            next: AtomicU64::new(0),
        })
    }

    /// A BO of `pages` 4 KiB pages private to the VM.
    fn bo(&self, pages: u64) -> Result<Bo<'d>, String> {
        Bo::new(self.d, pages * SZ_4K, SYSTEM, self.vm).map_err(e2s)
    }

    /// A new bind queue of the VM.
    fn bind_queue(&self) -> Result<u32, String> {
        self.d
            .exec_queue_create(self.vm, BIND, NORMAL)
            .map_err(|e| format!("EXEC_QUEUE_CREATE of a bind queue: {e}"))
    }

    /// Puts `cb` in a slot of its own; returns its GPU address.
    fn load(&self, cb: &CmdBuf) -> Result<u64, String> {
        let len = cb.len_bytes().next_multiple_of(64);
        let off = self.next.fetch_add(len, Relaxed);
        check!(off + len <= CMD_BO_SIZE, "the command BO is full");
        self.cmd
            .mmap()
            .map_err(e2s)?
            .write(off as usize, &cb.to_bytes())
            .map_err(e2s)?;
        Ok(CMD_VA + off)
    }

    /// Submits `cb` to compute queue `queue` with `syncs`.
    fn exec_on(&self, queue: u32, cb: &CmdBuf, syncs: &[Sync]) -> TestResult {
        let va = self.load(cb)?;
        self.d
            .exec(queue, va, cb.len_bytes(), syncs)
            .map_err(|e| format!("EXEC: {e}"))
    }

    /// Submits `cb` to the VM's compute queue after `waits`; returns the
    /// syncobj of its fence.
    fn exec(&self, cb: &CmdBuf, waits: &[Sync]) -> Result<Syncobj<'d>, String> {
        let out = Syncobj::new(self.d)?;
        let mut syncs = waits.to_vec();
        syncs.push(out.signal());
        self.exec_on(self.queue, cb, &syncs)?;
        Ok(out)
    }

    /// Runs `cb` and returns its fence's error (0 if it ended well).
    fn run(&self, cb: &CmdBuf) -> Result<i32, String> {
        self.exec(cb, &[])?.status_within(DONE_MS, "the job")
    }

    /// A synchronous bind on the default queue.
    fn bind_sync(&self, ops: &[BindOp]) -> TestResult {
        self.d
            .vm_bind(self.vm, DEFAULT, ops, &[])
            .map_err(|e| format!("sync VM_BIND: {e}"))
    }

    /// An asynchronous bind; returns the syncobj of its fence.
    fn bind_async(
        &self,
        queue: u32,
        ops: &[BindOp],
        waits: &[Sync],
    ) -> Result<Syncobj<'d>, String> {
        bind_out(self.d, self.vm, queue, ops, waits)
    }

    fn dbg(&self) -> Result<VmDebug, String> {
        vm_debug(self.vm)
    }

    fn state(&self) -> Result<u32, String> {
        self.d.vm_get_state(self.vm).map_err(e2s)
    }

    /// Checks that the page-table pool never ran dry: budgets are exact.
    fn check_pool(&self) -> TestResult {
        let dbg = self.dbg()?;
        check!(dbg.pool[4] == 0, "the pool ran dry: {:?}", dbg.pool);
        Ok(())
    }
}

impl Drop for Tvm<'_> {
    fn drop(&mut self) {
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
    }
}

/// Checks that every u32 of `m` in `[from, to)` is `want`.
fn expect_words(m: &Mapping, from: u64, to: u64, want: u32, what: &str) -> TestResult {
    let mut buf = vec![0u8; (to - from) as usize];
    m.read(from as usize, &mut buf).map_err(e2s)?;
    for (i, w) in buf.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        check!(
            v == want,
            "{what}: word at {:#x} is {v:#x}, want {want:#x}",
            from + 4 * i as u64
        );
    }
    Ok(())
}

/// Whether the VA tree has a mapping `[start, end)` at BO offset `offset`.
fn has_va(dbg: &VmDebug, start: u64, end: u64, offset: u64) -> bool {
    dbg.vas.contains(&(start, end, offset))
}

/// Whether any mapping of the VA tree overlaps `[start, end)`.
fn maps_any(dbg: &VmDebug, start: u64, end: u64) -> bool {
    dbg.vas.iter().any(|&(s, e, _)| s < end && e > start)
}

/// Writes `n` to injection knob `knob`, which must exist.
fn inject(knob: &str, n: u32) -> TestResult {
    let path = format!("{KNOBS}/{knob}");
    std::fs::write(&path, n.to_string()).map_err(|e| format!("{path}: {e}"))
}

/// The count injection knob `knob` holds.
fn knob(knob: &str) -> Result<u32, String> {
    let path = format!("{KNOBS}/{knob}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{path}: {text:?} is not a count"))
}

/// Waits up to `ms` for sync_file `fd` to signal; returns its status
/// (1 signalled, negative: the error).
fn sync_file_status_within(fd: &OwnedFd, ms: i32) -> Result<i32, String> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    check!(r >= 0, "poll: {}", io::Error::last_os_error());
    check!(r == 1, "the sync_file did not signal within {ms} ms");
    Ok(sync_file_info(fd)?.0)
}

/// The errno cases of bind queues, through synchronous and asynchronous
/// binds alike, then binds on a bind queue and the default one, used by
/// the GPU.
pub fn vm_bind_async_bind_queue_errors(d: &Device) -> TestResult {
    let t = Tvm::new(d)?;
    let other = Tvm::new(d)?;
    let bq = t.bind_queue()?;
    let other_bq = other.bind_queue()?;
    check!(
        bq != 0 && other_bq != 0,
        "bind queue ids {bq} and {other_bq}"
    );
    let gone = t.bind_queue()?;
    d.exec_queue_destroy(gone).map_err(e2s)?;
    let e = errno(d.exec_queue_destroy(gone));
    check!(
        e == Some(libc::ENOENT),
        "second destroy of a bind queue: {e:?}"
    );
    let e = errno(d.exec_queue_create(0x7777, BIND, NORMAL).map(drop));
    check!(
        e == Some(libc::ENOENT),
        "bind queue of an unknown VM: {e:?}"
    );

    let bo = t.bo(2)?;
    let op = BindOp::map(bo.handle(), 0, 0x2000_0000, SZ_4K);
    // A good op for the other VM, so that only the queue is wrong.
    let other_bo = other.bo(1)?;
    let other_op = BindOp::map(other_bo.handle(), 0, 0x2000_0000, SZ_4K);
    let before = t.dbg()?;
    let cases = [
        ("the VM's compute queue", t.vm, t.queue, op, libc::EINVAL),
        (
            "another VM's compute queue",
            t.vm,
            other.queue,
            op,
            libc::EINVAL,
        ),
        ("another VM's bind queue", t.vm, other_bq, op, libc::EINVAL),
        (
            "its bind queue, named with another VM",
            other.vm,
            bq,
            other_op,
            libc::EINVAL,
        ),
        ("an unknown queue", t.vm, 0x7777, op, libc::ENOENT),
        ("a destroyed bind queue", t.vm, gone, op, libc::ENOENT),
    ];
    for (what, vm, queue, op, want) in cases {
        let e = errno(d.vm_bind(vm, queue, &[op], &[]));
        check!(
            e == Some(want),
            "sync bind on {what}: got {e:?}, want {want}"
        );
        // Asynchronous: refused by the ioctl, so no fence reaches the syncobj.
        let out = Syncobj::new(d)?;
        let e = errno(d.vm_bind(vm, queue, &[op], &[out.signal()]));
        check!(
            e == Some(want),
            "async bind on {what}: got {e:?}, want {want}"
        );
        check!(
            errno(d.syncobj_wait(out.handle, 0, 0)) == Some(libc::ETIME),
            "a refused bind on {what} gave its out-syncobj a fence"
        );
    }
    let after = t.dbg()?;
    check!(
        after.vas == before.vas && after.leaves == before.leaves,
        "refused binds changed the VM: {:x?} {:?} -> {:x?} {:?}",
        before.vas,
        before.leaves,
        after.vas,
        after.leaves
    );
    check!(
        other.dbg()?.vas.len() == 1,
        "a refused bind changed the other VM"
    );
    // EXEC runs command buffers, which a bind queue does not.
    let mut cb = CmdBuf::new();
    cb.end();
    let va = t.load(&cb)?;
    let e = errno(d.exec(bq, va, cb.len_bytes(), &[]));
    check!(e == Some(libc::EINVAL), "EXEC on a bind queue: {e:?}");

    // The good cases: synchronous and asynchronous, on the bind queue and
    // on the default one (0), each used by one job.
    d.vm_bind(t.vm, bq, &[op], &[])
        .map_err(|e| format!("sync bind on a bind queue: {e}"))?;
    let second = BindOp::map(bo.handle(), SZ_4K, 0x2100_0000, SZ_4K);
    t.bind_async(bq, &[second], &[])?
        .expect_ok("an async bind on a bind queue")?;
    let third = BindOp::map(bo.handle(), 0, 0x2200_0000, SZ_4K);
    t.bind_async(DEFAULT, &[third], &[])?
        .expect_ok("an async bind on the default queue")?;
    let mut cb = CmdBuf::new();
    cb.fill(0x2000_0000, 16, 0xb1d0_0001)
        .fill(0x2100_0000, SZ_4K, 0xb1d0_0002)
        .store32(0x2200_0010, 0xb1d0_0003)
        .end();
    let status = t.run(&cb)?;
    check!(status == 0, "the job through the new mappings: {status}");
    let m = bo.mmap().map_err(e2s)?;
    expect_words(&m, 0, 16, 0xb1d0_0001, "page 0 through its first mapping")?;
    expect_words(&m, 16, 20, 0xb1d0_0003, "page 0 through its second mapping")?;
    expect_words(&m, 20, SZ_4K, 0, "the rest of page 0")?;
    expect_words(&m, SZ_4K, 2 * SZ_4K, 0xb1d0_0002, "page 1")?;
    check!(
        t.state()? == DRM_MIRAGE_VM_STATE_USABLE,
        "the VM is unusable after refused binds"
    );
    d.exec_queue_destroy(bq).map_err(e2s)?;
    d.exec_queue_destroy(other_bq).map_err(e2s)?;
    check!(
        t.state()? == DRM_MIRAGE_VM_STATE_USABLE,
        "destroying an idle bind queue made the VM unusable"
    );
    t.check_pool()
}

/// A bind waits for its in-fence (panthor's sync test): a job that waits
/// for the bind's out-fence and writes through the new mapping runs only
/// once the CPU opens the gate the bind waits for.
pub fn vm_bind_async_bind_fence_gates_submit(d: &Device) -> TestResult {
    const VA: u64 = 0x2000_0000;
    let t = Tvm::new(d)?;
    let bo = t.bo(1)?;
    let gate = Gate::new(d)?;
    let before = t.dbg()?;
    let bind = t.bind_async(
        DEFAULT,
        &[BindOp::map(bo.handle(), 0, VA, SZ_4K)],
        &[gate.wait()],
    )?;
    let mut cb = CmdBuf::new();
    cb.fill(VA, SZ_4K, 0x9a7e_0001)
        .store64(VA + 0x100, 0x9a7e_0002_9a7e_0003)
        .end();
    let job = t.exec(&cb, &[bind.wait()])?;
    // The VA tree changed at submission; the page table waits for the bind.
    let queued = t.dbg()?;
    check!(
        has_va(&queued, VA, VA + SZ_4K, 0),
        "the VA tree lacks the queued bind: {:x?}",
        queued.vas
    );
    std::thread::sleep(SETTLE);
    let m = bo.mmap().map_err(e2s)?;
    check!(
        m.read_u32(0).map_err(e2s)? == 0,
        "the job ran before the bind's in-fence signalled"
    );
    bind.expect_pending("the gated bind")?;
    job.expect_pending("the job behind the gated bind")?;
    let held = t.dbg()?;
    check!(
        held.leaves == before.leaves,
        "the page table changed before the bind's in-fence: {:?} -> {:?}",
        before.leaves,
        held.leaves
    );
    gate.release()?;
    job.expect_ok("the job")?;
    bind.expect_ok("the bind")?;
    expect_words(&m, 0, 0x100, 0x9a7e_0001, "the job's fill")?;
    check!(
        m.read_u64(0x100).map_err(e2s)? == 0x9a7e_0002_9a7e_0003,
        "the job's store"
    );
    expect_words(&m, 0x108, SZ_4K, 0x9a7e_0001, "the job's fill")?;
    let after = t.dbg()?;
    check!(
        after.leaves[2] == before.leaves[2] + 1 && after.leaves[..2] == before.leaves[..2],
        "pt leaves {:?} after the bind, {:?} before",
        after.leaves,
        before.leaves
    );
    t.check_pool()
}

/// An unmap waits for the job it names as in-fence (and, as an unmap, for
/// every job before it): the VA tree loses the mapping at once, the page
/// table only once the job is done, and the job writes through it.
pub fn vm_bind_async_submit_fence_gates_bind(d: &Device) -> TestResult {
    const VA: u64 = 0x2000_0000;
    let t = Tvm::new(d)?;
    let bo = t.bo(1)?;
    t.bind_sync(&[BindOp::map(bo.handle(), 0, VA, SZ_4K)])?;
    let mapped = t.dbg()?;
    let gate = Gate::new(d)?;
    let mut cb = CmdBuf::new();
    cb.fill(VA, SZ_4K, 0x5b3f_0001).end();
    let job = t.exec(&cb, &[gate.wait()])?;
    let unmap = t.bind_async(DEFAULT, &[BindOp::unmap(VA, SZ_4K)], &[job.wait()])?;
    let queued = t.dbg()?;
    check!(
        !maps_any(&queued, VA, VA + SZ_4K),
        "the VA tree still has the mapping after the unmap was queued: {:x?}",
        queued.vas
    );
    check!(
        queued.leaves == mapped.leaves,
        "the page table changed before the unmap ran: {:?} -> {:?}",
        mapped.leaves,
        queued.leaves
    );
    std::thread::sleep(SETTLE);
    unmap.expect_pending("the unmap behind the gated job")?;
    check!(
        t.dbg()?.leaves == mapped.leaves,
        "the page table lost the mapping before the job ran"
    );
    gate.release()?;
    let status = job.status_within(DONE_MS, "the job")?;
    check!(
        status == 0,
        "the job ended with {status}: the unmap ran before it?"
    );
    expect_words(
        &bo.mmap().map_err(e2s)?,
        0,
        SZ_4K,
        0x5b3f_0001,
        "the job's fill",
    )?;
    unmap.expect_ok("the unmap")?;
    let after = t.dbg()?;
    check!(
        after.leaves[2] + 1 == mapped.leaves[2],
        "pt leaves {:?} after the unmap, {:?} before",
        after.leaves,
        mapped.leaves
    );
    // The unmap reached the GPU: a store there faults.
    let mut cb = CmdBuf::new();
    cb.store32(VA, 0xbad).end();
    let status = t.run(&cb)?;
    check!(status == -libc::EIO, "a store after the unmap: {status}");
    t.check_pool()
}

/// 64 binds chained through one timeline syncobj, bind i waiting for point
/// i and signalling point i + 1, the first behind a gate: nothing reaches
/// the page table before the gate opens, everything after.
pub fn vm_bind_async_timeline_chain_64(d: &Device) -> TestResult {
    const N: u64 = 64;
    const BASE: u64 = 0x3000_0000;
    // Bind i maps page N - 1 - i at a VA of its own, 64 KiB apart.
    let va = |i: u64| BASE + i * SZ_64K;
    let page = |i: u64| N - 1 - i;
    let t = Tvm::new(d)?;
    let bo = t.bo(N)?;
    let gate = Gate::new(d)?;
    let tl = Syncobj::new(d)?;
    let before = t.dbg()?;
    for i in 0..N {
        let wait = if i == 0 {
            gate.wait()
        } else {
            Sync::wait_point(tl.handle, i)
        };
        let op = BindOp::map(bo.handle(), page(i) * SZ_4K, va(i), SZ_4K);
        d.vm_bind(
            t.vm,
            DEFAULT,
            &[op],
            &[wait, Sync::signal_point(tl.handle, i + 1)],
        )
        .map_err(|e| format!("bind {i}: {e}"))?;
    }
    let queued = t.dbg()?;
    for i in 0..N {
        check!(
            has_va(&queued, va(i), va(i) + SZ_4K, page(i) * SZ_4K),
            "the VA tree lacks queued bind {i}"
        );
    }
    std::thread::sleep(SETTLE);
    check!(
        d.syncobj_query(tl.handle).map_err(e2s)? == 0,
        "the timeline moved before the gate opened"
    );
    check!(
        t.dbg()?.leaves == before.leaves,
        "the page table changed before the gate opened"
    );
    gate.release()?;
    check!(
        tl.signals_within(N, DONE_MS)?,
        "point {N} did not signal within {DONE_MS} ms (timeline at {:?})",
        d.syncobj_query(tl.handle)
    );
    let after = t.dbg()?;
    check!(
        after.leaves[2] == before.leaves[2] + N,
        "pt leaves {:?} after the chain, {:?} before",
        after.leaves,
        before.leaves
    );
    let mut cb = CmdBuf::new();
    for i in 0..N {
        cb.fill(va(i), SZ_4K, 0xc4a1_0000 | i as u32);
    }
    cb.end();
    let status = t.run(&cb)?;
    check!(status == 0, "the job through the 64 mappings: {status}");
    let m = bo.mmap().map_err(e2s)?;
    for i in 0..N {
        let at = page(i) * SZ_4K;
        expect_words(
            &m,
            at,
            at + SZ_4K,
            0xc4a1_0000 | i as u32,
            &format!("page {} through bind {i}", page(i)),
        )?;
    }
    t.check_pool()
}

/// Bind queues are independent unless their binds overlap: a bind on queue
/// B completes, and a job uses it, while queue A's is held by a gate; a
/// later bind on A waits for A's; a bind on B over A's range waits for A's
/// too, and executes after it.
pub fn vm_bind_async_two_queues_independent(d: &Device) -> TestResult {
    const VA_A: u64 = 0x2000_0000;
    const VA_A2: u64 = 0x2100_0000;
    const VA_B: u64 = 0x2200_0000;
    let t = Tvm::new(d)?;
    let (qa, qb) = (t.bind_queue()?, t.bind_queue()?);
    let (bo_a, bo_a2, bo_b, bo_c) = (t.bo(2)?, t.bo(1)?, t.bo(1)?, t.bo(2)?);
    let gate = Gate::new(d)?;
    let before = t.dbg()?;
    let a = t.bind_async(
        qa,
        &[BindOp::map(bo_a.handle(), 0, VA_A, 2 * SZ_4K)],
        &[gate.wait()],
    )?;
    // Nothing holds this one back but the bind before it on its queue.
    let a2 = t.bind_async(qa, &[BindOp::map(bo_a2.handle(), 0, VA_A2, SZ_4K)], &[])?;
    let b = t.bind_async(qb, &[BindOp::map(bo_b.handle(), 0, VA_B, SZ_4K)], &[])?;
    // Well under the job timeout, which would open the gate.
    check!(
        b.signals_within(0, 700)?,
        "the bind on queue B waited for queue A's"
    );
    check!(b.status_within(0, "B's bind")? == 0, "B's bind failed");
    let mut cb = CmdBuf::new();
    cb.fill(VA_B, SZ_4K, 0x0b0b_0001).end();
    let job = t.exec(&cb, &[b.wait()])?;
    let status = job.status_within(700, "the job through B's mapping")?;
    check!(status == 0, "the job through B's mapping: {status}");
    expect_words(&bo_b.mmap().map_err(e2s)?, 0, SZ_4K, 0x0b0b_0001, "B's BO")?;
    a.expect_pending("A's gated bind")?;
    a2.expect_pending("the bind behind A's on queue A")?;

    // Over the second page of A's range, on queue B.
    let c = t.bind_async(
        qb,
        &[BindOp::map(bo_c.handle(), SZ_4K, VA_A + SZ_4K, SZ_4K)],
        &[],
    )?;
    std::thread::sleep(SETTLE);
    c.expect_pending("B's bind over A's gated range")?;
    a.expect_pending("A's gated bind")?;
    let held = t.dbg()?;
    check!(
        held.leaves[2] == before.leaves[2] + 1,
        "pt leaves {:?} while A is held, {:?} before: only B's bind should have run",
        held.leaves,
        before.leaves
    );
    check!(
        has_va(&held, VA_A, VA_A + SZ_4K, 0)
            && has_va(&held, VA_A + SZ_4K, VA_A + 2 * SZ_4K, SZ_4K),
        "the VA tree after the overlapping bind: {:x?}",
        held.vas
    );
    gate.release()?;
    a.expect_ok("A's bind")?;
    a2.expect_ok("the second bind on A")?;
    c.expect_ok("B's overlapping bind")?;
    // Had B's overlapping bind run first, A's would have put BO A back
    // under the second page.
    let mut cb = CmdBuf::new();
    cb.fill(VA_A, 2 * SZ_4K, 0x0a0a_0001)
        .fill(VA_A2, SZ_4K, 0x0a0a_0002)
        .end();
    let status = t.run(&cb)?;
    check!(status == 0, "the job through A's mappings: {status}");
    let ma = bo_a.mmap().map_err(e2s)?;
    expect_words(&ma, 0, SZ_4K, 0x0a0a_0001, "A's first page")?;
    expect_words(&ma, SZ_4K, 2 * SZ_4K, 0, "A's second page, replaced by C's")?;
    let mc = bo_c.mmap().map_err(e2s)?;
    expect_words(&mc, 0, SZ_4K, 0, "C's first page, never mapped")?;
    expect_words(&mc, SZ_4K, 2 * SZ_4K, 0x0a0a_0001, "C's second page")?;
    expect_words(
        &bo_a2.mmap().map_err(e2s)?,
        0,
        SZ_4K,
        0x0a0a_0002,
        "A2's page",
    )?;
    d.exec_queue_destroy(qa).map_err(e2s)?;
    d.exec_queue_destroy(qb).map_err(e2s)?;
    check!(
        t.state()? == DRM_MIRAGE_VM_STATE_USABLE,
        "destroying idle bind queues made the VM unusable"
    );
    t.check_pool()
}

/// A whole pipeline submitted at once behind one gate: bind, job, unbind,
/// rebind to another BO, job. Each job sees its own BO. A VA unbound and
/// not bound again faults.
pub fn vm_bind_async_pipelined_chain(d: &Device) -> TestResult {
    const V: u64 = 0x2000_0000;
    const W: u64 = 0x2100_0000;
    let t = Tvm::new(d)?;
    let (bo1, bo2, bo3) = (t.bo(1)?, t.bo(1)?, t.bo(1)?);
    let gate = Gate::new(d)?;
    let before = t.dbg()?;
    let bind1 = t.bind_async(
        DEFAULT,
        &[
            BindOp::map(bo1.handle(), 0, V, SZ_4K),
            BindOp::map(bo3.handle(), 0, W, SZ_4K),
        ],
        &[gate.wait()],
    )?;
    let mut cb = CmdBuf::new();
    cb.fill(V, SZ_4K, 0x9e11_0001)
        .fill(W, SZ_4K, 0x9e11_0003)
        .end();
    let exec1 = t.exec(&cb, &[bind1.wait()])?;
    let unbind = t.bind_async(
        DEFAULT,
        &[BindOp::unmap(V, SZ_4K), BindOp::unmap(W, SZ_4K)],
        &[],
    )?;
    let bind2 = t.bind_async(
        DEFAULT,
        &[BindOp::map(bo2.handle(), 0, V, SZ_4K)],
        &[unbind.wait()],
    )?;
    let mut cb = CmdBuf::new();
    cb.fill(V, SZ_4K, 0x9e11_0002).end();
    let exec2 = t.exec(&cb, &[bind2.wait()])?;
    let queued = t.dbg()?;
    check!(
        has_va(&queued, V, V + SZ_4K, 0) && !maps_any(&queued, W, W + SZ_4K),
        "the VA tree once all is queued: {:x?}",
        queued.vas
    );
    std::thread::sleep(SETTLE);
    for (s, what) in [
        (&bind1, "bind1"),
        (&exec1, "exec1"),
        (&unbind, "the unbind"),
        (&bind2, "bind2"),
        (&exec2, "exec2"),
    ] {
        s.expect_pending(what)?;
    }
    check!(
        t.dbg()?.leaves == before.leaves,
        "the page table changed before the gate opened"
    );
    let (m1, m2, m3) = (
        bo1.mmap().map_err(e2s)?,
        bo2.mmap().map_err(e2s)?,
        bo3.mmap().map_err(e2s)?,
    );
    for (m, what) in [(&m1, "BO1"), (&m2, "BO2"), (&m3, "BO3")] {
        expect_words(m, 0, SZ_4K, 0, &format!("{what} before the gate opened"))?;
    }
    gate.release()?;
    exec2.expect_ok("exec2")?;
    exec1.expect_ok("exec1")?;
    bind1.expect_ok("bind1")?;
    unbind.expect_ok("the unbind")?;
    bind2.expect_ok("bind2")?;
    expect_words(&m1, 0, SZ_4K, 0x9e11_0001, "BO1, written by exec1")?;
    expect_words(&m2, 0, SZ_4K, 0x9e11_0002, "BO2, written by exec2")?;
    expect_words(&m3, 0, SZ_4K, 0x9e11_0003, "BO3, written by exec1")?;
    let after = t.dbg()?;
    check!(
        after.leaves[2] == before.leaves[2] + 1,
        "pt leaves {:?} after the pipeline, {:?} before",
        after.leaves,
        before.leaves
    );
    // W was unbound and not bound again.
    let mut cb = CmdBuf::new();
    cb.store32(W, 0xbad).end();
    let status = t.run(&cb)?;
    check!(status == -libc::EIO, "a store to the unbound W: {status}");
    expect_words(&m3, 0, SZ_4K, 0x9e11_0003, "BO3 after the faulting store")?;
    t.check_pool()
}

/// xe's munmap-style-unbind-either-side-partial-hammer: jobs hammer page 3
/// of an 8-page mapping (4 KiB pages) while binds on two queues unmap,
/// remap, split and merge the pages on either side of it. Every job must
/// reach page 3.
pub fn vm_bind_async_hammer(d: &Device) -> TestResult {
    const P: u64 = SZ_4K;
    // 4 KiB aligned, not 2 MiB: the range is mapped with pages, and its
    // neighbours of page 3 share its last-level table.
    const V: u64 = 0x4010_5000;
    const HOT: u64 = V + 3 * P;
    const RES_VA: u64 = 0x5000_0000;
    const JOBS: u64 = 200;
    const IN_FLIGHT: usize = 4;
    let t = Tvm::new(d)?;
    let bo = t.bo(8)?;
    let res = t.bo(1)?;
    let h = bo.handle();
    t.bind_sync(&[
        BindOp::map(h, 0, V, 8 * P),
        BindOp::map(res.handle(), 0, RES_VA, P),
    ])?;
    let start = t.dbg()?;
    let hammer_queue = d.exec_queue_create(t.vm, COMPUTE, NORMAL).map_err(e2s)?;
    let bq = t.bind_queue()?;
    // No step touches page 3. After a whole round, [V, V + 3P) and
    // [V + 4P, V + 8P) are one mapping each, around page 3's piece of the
    // first mapping.
    let steps: Vec<Vec<BindOp>> = vec![
        vec![BindOp::unmap(V, 3 * P)],
        vec![BindOp::unmap(V + 4 * P, 4 * P)],
        vec![BindOp::map(h, 0, V, 3 * P)],
        vec![BindOp::map(h, 4 * P, V + 4 * P, 4 * P)],
        // Splits: a mapping of the same pages in the middle of each side.
        vec![BindOp::map(h, P, V + P, P)],
        vec![BindOp::map(h, 5 * P, V + 5 * P, 2 * P)],
        // The immediate neighbours of page 3, both at once.
        vec![BindOp::unmap(V + 2 * P, P), BindOp::unmap(V + 4 * P, P)],
        vec![
            BindOp::map(h, 2 * P, V + 2 * P, P),
            BindOp::map(h, 4 * P, V + 4 * P, P),
        ],
        // Merges: each side one mapping again.
        vec![
            BindOp::map(h, 0, V, 3 * P),
            BindOp::map(h, 4 * P, V + 4 * P, 4 * P),
        ],
    ];
    let done = AtomicBool::new(false);
    let hammer = || -> TestResult {
        let mut inflight = VecDeque::new();
        for i in 0..JOBS {
            let word = HOT + 4 * i;
            let mut cb = CmdBuf::new();
            // Store through page 3, then read it back through page 3 into
            // the results page.
            cb.store32(word, i as u32 + 1)
                .copy(RES_VA + 4 * i, word, 4)
                .end();
            let out = Syncobj::new(d)?;
            t.exec_on(hammer_queue, &cb, &[out.signal()])?;
            inflight.push_back((i, out));
            reap(&mut inflight, IN_FLIGHT)?;
        }
        reap(&mut inflight, 0)
    };
    let churn = || -> Result<usize, String> {
        let mut pending: VecDeque<(usize, Syncobj)> = VecDeque::new();
        let mut step = 0;
        // Until the hammer is done, and at least two rounds, ending on a
        // round's end.
        while !(done.load(Relaxed) && step >= 2 * steps.len() && step % steps.len() == 0) {
            let ops = &steps[step % steps.len()];
            // Alternate queues, so that overlapping binds of two queues must
            // be ordered; every fifth bind is synchronous.
            let queue = if step % 2 == 0 { DEFAULT } else { bq };
            if step % 5 == 4 {
                d.vm_bind(t.vm, queue, ops, &[])
                    .map_err(|e| format!("churn step {step}: {e}"))?;
            } else {
                pending.push_back((step, t.bind_async(queue, ops, &[])?));
            }
            while pending.len() > 8 {
                if let Some((s, out)) = pending.pop_front() {
                    out.expect_ok(&format!("churn step {s}"))?;
                }
            }
            step += 1;
        }
        for (s, out) in pending {
            out.expect_ok(&format!("churn step {s}"))?;
        }
        Ok(step)
    };
    let (hammered, churned) = std::thread::scope(|s| {
        let th = s.spawn(|| {
            let r = hammer();
            done.store(true, Relaxed);
            r
        });
        let churned = churn();
        // If the churn failed, the hammer still ends by itself.
        let hammered = th
            .join()
            .unwrap_or_else(|_| Err("the hammer thread panicked".into()));
        (hammered, churned)
    });
    hammered?;
    let steps_done = churned?;
    d.exec_queue_destroy(hammer_queue).map_err(e2s)?;
    d.exec_queue_destroy(bq).map_err(e2s)?;

    let m = bo.mmap().map_err(e2s)?;
    let r = res.mmap().map_err(e2s)?;
    for i in 0..JOBS {
        let at = (4 * i) as usize;
        let (got, copied) = (
            m.read_u32(3 * P as usize + at).map_err(e2s)?,
            r.read_u32(at).map_err(e2s)?,
        );
        check!(
            got == i as u32 + 1 && copied == got,
            "hammer job {i}: page 3 holds {got:#x}, its copy {copied:#x}"
        );
    }
    let end = t.dbg()?;
    for (s, e, off) in [
        (V, V + 3 * P, 0),
        (V + 3 * P, V + 4 * P, 3 * P),
        (V + 4 * P, V + 8 * P, 4 * P),
    ] {
        check!(
            has_va(&end, s, e, off),
            "after {steps_done} churn steps the VA tree lacks {s:#x}..{e:#x}: {:x?}",
            end.vas
        );
    }
    check!(
        end.leaves == start.leaves,
        "pt leaves {:?} after the churn, {:?} before",
        end.leaves,
        start.leaves
    );
    // Each page reaches its own BO page again.
    let mut cb = CmdBuf::new();
    for k in 0..8 {
        cb.fill(V + k * P, P, 0xfa11_0000 | k as u32);
    }
    cb.end();
    let status = t.run(&cb)?;
    check!(status == 0, "the job over all 8 pages: {status}");
    for k in 0..8 {
        expect_words(
            &m,
            k * P,
            (k + 1) * P,
            0xfa11_0000 | k as u32,
            &format!("page {k}"),
        )?;
    }
    check!(
        t.state()? == DRM_MIRAGE_VM_STATE_USABLE,
        "the VM is unusable"
    );
    t.check_pool()
}

/// Waits for the oldest jobs of `inflight` until `keep` are left; each
/// must end well.
fn reap(inflight: &mut VecDeque<(u64, Syncobj)>, keep: usize) -> TestResult {
    while inflight.len() > keep {
        if let Some((j, out)) = inflight.pop_front() {
            let status = out.status_within(DONE_MS, &format!("hammer job {j}"))?;
            check!(status == 0, "hammer job {j} ended with {status}");
        }
    }
    Ok(())
}

/// A bind that fails when it executes (injected through
/// `fail_next_bind_run`) leaves the page table alone, signals its
/// out-fence with the error and makes the VM unusable: maps and jobs are
/// refused, unmaps still work.
pub fn vm_bind_async_runtime_failure_makes_vm_unusable(d: &Device) -> TestResult {
    const KNOB: &str = "fail_next_bind_run";
    const V1: u64 = 0x2000_0000;
    const V2: u64 = 0x2100_0000;
    const V3: u64 = 0x2200_0000;
    let t = Tvm::new(d)?;
    let bo = t.bo(4)?;
    t.bind_sync(&[
        BindOp::map(bo.handle(), 0, V1, SZ_4K),
        BindOp::map(bo.handle(), SZ_4K, V3, SZ_4K),
    ])?;
    let mut cb = CmdBuf::new();
    cb.store32(V1, 0x0001_1111).end();
    check!(t.run(&cb)? == 0, "the job before the failure failed");
    let before = t.dbg()?;
    inject(KNOB, 1)?;
    let failing = t.bind_async(
        DEFAULT,
        &[BindOp::map(bo.handle(), 2 * SZ_4K, V2, SZ_4K)],
        &[],
    );
    let status = failing.and_then(|f| f.status_within(DONE_MS, "the failing bind"));
    // Whatever happened, no injection is left for later binds.
    let left = knob(KNOB);
    let _ = inject(KNOB, 0);
    let status = status?;
    check!(
        status == -libc::EIO,
        "the failing bind's out-fence: {status}"
    );
    check!(left? == 0, "the injection was not used up");
    check!(
        t.state()? == DRM_MIRAGE_VM_STATE_UNUSABLE,
        "VM_GET_STATE after a bind failed at run time"
    );
    let after = t.dbg()?;
    check!(!after.usable, "debugfs says the VM is usable");
    check!(
        after.leaves == before.leaves,
        "the failed bind changed the page table: {:?} -> {:?}",
        before.leaves,
        after.leaves
    );
    // Maps and jobs are refused, synchronous or not.
    let map = BindOp::map(bo.handle(), 3 * SZ_4K, 0x2300_0000, SZ_4K);
    let e = errno(d.vm_bind(t.vm, DEFAULT, &[map], &[]));
    check!(e == Some(libc::ENOENT), "sync MAP on an unusable VM: {e:?}");
    let out = Syncobj::new(d)?;
    let e = errno(d.vm_bind(t.vm, DEFAULT, &[map], &[out.signal()]));
    check!(
        e == Some(libc::ENOENT),
        "async MAP on an unusable VM: {e:?}"
    );
    let mut cb = CmdBuf::new();
    cb.store32(V1, 0xbad).end();
    let va = t.load(&cb)?;
    let e = errno(d.exec(t.queue, va, cb.len_bytes(), &[]));
    check!(e == Some(libc::ENOENT), "EXEC on an unusable VM: {e:?}");
    // Unmaps work, synchronous and not, and reach the page table.
    t.bind_sync(&[BindOp::unmap(V1, SZ_4K)])
        .map_err(|e| format!("UNMAP on an unusable VM: {e}"))?;
    t.bind_async(DEFAULT, &[BindOp::unmap(V3, SZ_4K)], &[])?
        .expect_ok("an async UNMAP on an unusable VM")?;
    let end = t.dbg()?;
    check!(
        !maps_any(&end, V1, V1 + SZ_4K) && !maps_any(&end, V3, V3 + SZ_4K),
        "the VA tree after the unmaps: {:x?}",
        end.vas
    );
    check!(
        end.leaves[2] + 2 == before.leaves[2],
        "pt leaves {:?} after two unmaps, {:?} before",
        end.leaves,
        before.leaves
    );
    check!(
        bo.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0x0001_1111,
        "the refused job wrote"
    );
    // Other VMs are unaffected.
    let other = Tvm::new(d)?;
    let obo = other.bo(1)?;
    other.bind_sync(&[BindOp::map(obo.handle(), 0, V1, SZ_4K)])?;
    let mut cb = CmdBuf::new();
    cb.store32(V1 + 8, 0x0002_2222).end();
    check!(other.run(&cb)? == 0, "a job of another VM failed");
    check!(
        obo.mmap().map_err(e2s)?.read_u32(8).map_err(e2s)? == 0x0002_2222,
        "a job of another VM did not write"
    );
    t.check_pool()
}

/// An asynchronous bind whose page tables cannot be reserved (injected
/// through `fail_next_reserve`) fails with ENOMEM in the ioctl and changes
/// nothing, neither the VM nor a bind queued before it; the GPU still
/// reads every mapping.
pub fn vm_bind_async_reserve_failure_changes_nothing(d: &Device) -> TestResult {
    const KNOB: &str = "fail_next_reserve";
    const RESULTS: u64 = 0x6000_0000;
    let t = Tvm::new(d)?;
    let (a, b, c, q) = (t.bo(4)?, t.bo(2)?, t.bo(1)?, t.bo(2)?);
    let res = t.bo(1)?;
    // Every word of every BO differs.
    let mut contents = Vec::new();
    for (n, bo) in [&a, &b, &c, &q].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..bo.size() / 8)
            .flat_map(|i| ((n as u64 + 1) << 56 | i).to_le_bytes())
            .collect();
        bo.mmap().map_err(e2s)?.write(0, &bytes).map_err(e2s)?;
        contents.push(bytes);
    }
    t.bind_sync(&[
        BindOp::map(a.handle(), 0, 0x2000_0000, 4 * SZ_4K),
        BindOp::map(b.handle(), 0, 0x2100_0000, 2 * SZ_4K),
        BindOp::map(res.handle(), 0, RESULTS, SZ_4K),
    ])?;
    // A bind queued behind a gate, before the failing one.
    let gate = Gate::new(d)?;
    let queued = t.bind_async(
        DEFAULT,
        &[BindOp::map(q.handle(), 0, 0x2300_0000, 2 * SZ_4K)],
        &[gate.wait()],
    )?;
    let before = t.dbg()?;
    let ops = [
        BindOp::unmap(0x2000_1000, SZ_4K),
        BindOp::map(c.handle(), 0, 0x2200_0000, SZ_4K),
        BindOp::unmap_all(b.handle()),
    ];
    inject(KNOB, 1)?;
    let out = Syncobj::new(d)?;
    let e = errno(d.vm_bind(t.vm, DEFAULT, &ops, &[out.signal()]));
    let left = knob(KNOB);
    let _ = inject(KNOB, 0);
    check!(
        e == Some(libc::ENOMEM),
        "async bind with the reservation failing: {e:?}"
    );
    check!(left? == 0, "the injection was not used up");
    check!(
        errno(d.syncobj_wait(out.handle, 0, 0)) == Some(libc::ETIME),
        "the failed bind gave its out-syncobj a fence"
    );
    let after = t.dbg()?;
    after.expect_unchanged(&before, "the failed bind")?;
    check!(after.usable, "the VM is unusable");
    queued.expect_pending("the bind queued before the failure")?;
    gate.release()?;
    queued.expect_ok("the bind queued before the failure")?;
    // The GPU checksums every mapping, the queued one included.
    let maps = [
        (0x2000_0000, 4 * SZ_4K, 0),
        (0x2100_0000, 2 * SZ_4K, 1),
        (0x2300_0000, 2 * SZ_4K, 3),
    ];
    let mut cb = CmdBuf::new();
    for (i, &(va, len, _)) in maps.iter().enumerate() {
        cb.checksum(va, len, RESULTS + 8 * i as u64);
    }
    cb.end();
    let status = t.run(&cb)?;
    check!(status == 0, "the checksum job: {status}");
    let r = res.mmap().map_err(e2s)?;
    for (i, &(va, len, n)) in maps.iter().enumerate() {
        let got = r.read_u64(8 * i).map_err(e2s)?;
        check!(
            got == mirage::cmd::fnv1a64(&contents[n][..len as usize]),
            "the GPU reads other bytes through {va:#x}"
        );
    }
    // The injection is spent: the same array goes through.
    t.bind_async(DEFAULT, &ops, &[])?
        .expect_ok("the array once memory is there")?;
    let end = t.dbg()?;
    check!(
        !maps_any(&end, 0x2100_0000, 0x2100_0000 + 2 * SZ_4K)
            && has_va(&end, 0x2200_0000, 0x2200_1000, 0)
            && !maps_any(&end, 0x2000_1000, 0x2000_2000),
        "the VA tree after the array: {:x?}",
        end.vas
    );
    t.check_pool()
}

/// Destroying a bind queue, a VM or the file cancels the binds that have
/// not executed: their out-fences signal -ECANCELED at once, without
/// waiting for the fence they were queued behind. A VM whose bind queue
/// lost binds so is unusable.
pub fn vm_bind_async_teardown_cancels(d: &Device) -> TestResult {
    const V: u64 = 0x2000_0000;
    // Cancelling waits for nothing; and past the job timeout the gate would
    // open and let the binds run.
    const CANCEL_MS: i64 = 1000;
    let cancelled = |s: &Syncobj, what: &str| -> TestResult {
        let status = s.status_within(CANCEL_MS, what)?;
        check!(
            status == -libc::ECANCELED,
            "{what}: status {status}, want -ECANCELED"
        );
        Ok(())
    };

    // A bind queue destroyed with two binds queued, the first behind a gate.
    {
        let t = Tvm::new(d)?;
        let bo = t.bo(3)?;
        t.bind_sync(&[BindOp::map(bo.handle(), 0, V, SZ_4K)])?;
        let gate = Gate::new(d)?;
        let before = t.dbg()?;
        let q = t.bind_queue()?;
        let first = t.bind_async(
            q,
            &[BindOp::map(bo.handle(), SZ_4K, V + SZ_64K, SZ_4K)],
            &[gate.wait()],
        )?;
        let second = t.bind_async(
            q,
            &[BindOp::map(bo.handle(), 2 * SZ_4K, V + 2 * SZ_64K, SZ_4K)],
            &[],
        )?;
        std::thread::sleep(SETTLE);
        second.expect_pending("the bind behind the gated one")?;
        d.exec_queue_destroy(q).map_err(e2s)?;
        cancelled(&first, "the gated bind of a destroyed bind queue")?;
        cancelled(&second, "the second bind of a destroyed bind queue")?;
        gate.out
            .expect_pending("the gate (the cancel waited for it?)")?;
        check!(
            t.state()? == DRM_MIRAGE_VM_STATE_UNUSABLE,
            "the VM is usable after its bind queue lost binds"
        );
        check!(
            t.dbg()?.leaves == before.leaves,
            "cancelled binds reached the page table"
        );
        let map = BindOp::map(bo.handle(), 0, V + 3 * SZ_64K, SZ_4K);
        let e = errno(d.vm_bind(t.vm, DEFAULT, &[map], &[]));
        check!(e == Some(libc::ENOENT), "MAP after the cancel: {e:?}");
        t.bind_sync(&[BindOp::unmap(V, SZ_4K)])
            .map_err(|e| format!("UNMAP after the cancel: {e}"))?;
        gate.release()?;
        check!(
            t.dbg()?.leaves[2] + 1 == before.leaves[2],
            "the unmap after the cancel did not reach the page table"
        );
    }

    // A VM destroyed with two binds queued on its default queue.
    {
        let gate = Gate::new(d)?;
        let vm = d.vm_create(0).map_err(e2s)?;
        let bo = Bo::new(d, SZ_4K, SYSTEM, vm).map_err(e2s)?;
        let first = bind_out(
            d,
            vm,
            DEFAULT,
            &[BindOp::map(bo.handle(), 0, V, SZ_4K)],
            &[gate.wait()],
        )?;
        let second = bind_out(
            d,
            vm,
            DEFAULT,
            &[BindOp::map(bo.handle(), 0, V + SZ_64K, SZ_4K)],
            &[],
        )?;
        d.vm_destroy(vm).map_err(e2s)?;
        cancelled(&first, "the gated bind of a destroyed VM")?;
        cancelled(&second, "the second bind of a destroyed VM")?;
        gate.out
            .expect_pending("the gate (the cancel waited for it?)")?;
        gate.release()?;
    }

    // A file closed with binds queued on a default and a user bind queue,
    // behind a gate of another file: only sync_files outlive the file.
    {
        let gate = Gate::new(d)?;
        let gate_fence = d.syncobj_export_sync_file(gate.out.handle).map_err(e2s)?;
        let d2 = Device::open().map_err(e2s)?;
        let vm = d2.vm_create(0).map_err(e2s)?;
        let q = d2.exec_queue_create(vm, BIND, NORMAL).map_err(e2s)?;
        let bo = Bo::new(&d2, SZ_4K, SYSTEM, vm).map_err(e2s)?;
        let held = Syncobj::new(&d2)?;
        d2.syncobj_import_sync_file(held.handle, gate_fence.as_fd())
            .map_err(e2s)?;
        let mut fences = Vec::new();
        for (queue, va) in [(DEFAULT, V), (q, V + SZ_64K)] {
            let out = bind_out(
                &d2,
                vm,
                queue,
                &[BindOp::map(bo.handle(), 0, va, SZ_4K)],
                &[held.wait()],
            )?;
            fences.push(d2.syncobj_export_sync_file(out.handle).map_err(e2s)?);
        }
        for f in &fences {
            check!(
                sync_file_info(f)?.0 == 0,
                "a bind behind the other file's gate is not pending"
            );
        }
        drop(held);
        drop(bo);
        drop(d2);
        for (f, what) in fences.iter().zip(["default", "user"]) {
            let status = sync_file_status_within(f, CANCEL_MS as i32)?;
            check!(
                status == -libc::ECANCELED,
                "the bind on the {what} bind queue of a closed file: status {status}"
            );
        }
        gate.out
            .expect_pending("the gate (the cancel waited for it?)")?;
        gate.release()?;
    }
    Ok(())
}

/// Unmaps never fail for lack of memory: with the page-table reservation
/// failing, an UNMAP that splits a 2 MiB block takes the tables the VM keeps
/// aside, and the GPU reads the rest of the block as before; a MAP under the
/// same failure gets ENOMEM.
pub fn vm_bind_async_unmap_without_memory_succeeds(d: &Device) -> TestResult {
    const KNOB: &str = "fail_next_reserve";
    const V: u64 = 0x4000_0000;
    const HOLE: u64 = V + SZ_2M / 2;
    const RESULTS: u64 = 0x6000_0000;
    // A 2 MiB folio, so that the mapping is one block.
    let huge = ShmemHugePages::force()?;
    let t = Tvm::new(d)?;
    let bo = Bo::new(d, SZ_2M, SYSTEM, t.vm).map_err(e2s)?;
    let bytes: Vec<u8> = (0..SZ_2M / 8)
        .flat_map(|i| (0xb10c << 48 | i).to_le_bytes())
        .collect();
    bo.mmap().map_err(e2s)?.write(0, &bytes).map_err(e2s)?;
    let res = t.bo(1)?;
    t.bind_sync(&[
        BindOp::map(bo.handle(), 0, V, SZ_2M),
        BindOp::map(res.handle(), 0, RESULTS, SZ_4K),
    ])?;
    let before = t.dbg()?;
    check!(
        before.leaves[1] == 1,
        "the 2 MiB mapping got no block: leaves {:?}",
        before.leaves
    );

    inject(KNOB, 1)?;
    let r = d.vm_bind(t.vm, DEFAULT, &[BindOp::unmap(HOLE, SZ_4K)], &[]);
    let left = knob(KNOB);
    let _ = inject(KNOB, 0);
    r.map_err(|e| format!("UNMAP with the reservation failing: {e}"))?;
    check!(left? == 0, "the injection was not used up");
    let after = t.dbg()?;
    check!(after.usable, "the VM is unusable");
    check!(
        after.leaves[1] == 0 && after.leaves[2] == before.leaves[2] + 511,
        "leaves {:?} after the split, {:?} before",
        after.leaves,
        before.leaves
    );
    // The GPU reads both sides of the hole as before.
    let sides = [(V, HOLE), (HOLE + SZ_4K, V + SZ_2M)];
    let mut cb = CmdBuf::new();
    for (i, &(s, e)) in sides.iter().enumerate() {
        cb.checksum(s, e - s, RESULTS + 8 * i as u64);
    }
    cb.end();
    let status = t.run(&cb)?;
    check!(status == 0, "the checksum job: {status}");
    let m = res.mmap().map_err(e2s)?;
    for (i, &(s, e)) in sides.iter().enumerate() {
        let got = m.read_u64(8 * i).map_err(e2s)?;
        let want = mirage::cmd::fnv1a64(&bytes[(s - V) as usize..(e - V) as usize]);
        check!(
            got == want,
            "the GPU reads other bytes through {s:#x}..{e:#x}"
        );
    }

    // A MAP has no tables aside: it fails.
    inject(KNOB, 1)?;
    let e = errno(d.vm_bind(
        t.vm,
        DEFAULT,
        &[BindOp::map(bo.handle(), 0, 0x8000_0000, SZ_2M)],
        &[],
    ));
    let _ = inject(KNOB, 0);
    check!(
        e == Some(libc::ENOMEM),
        "MAP with the reservation failing: {e:?}"
    );
    drop(huge);
    t.check_pool()
}
