//! Fault-mode VMs: jobs that stall on GPU page faults, which the kernel
//! resolves or aborts.

use crate::exec::{fence_status, Ctx, CMD_VA, JOB_TIMEOUT_MS};
use crate::userptr::Anon;
use crate::vm::vm_debug;
use crate::{check, deadline_in, e2s, errno, TestResult};
use mirage::cmd::{CmdBuf, SemCond};
use mirage::uapi::*;
use mirage::{Bo, Device};

pub(crate) const SZ_4K: u64 = 4096;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;
pub(crate) const FAULT_MODE: u32 = DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE;
/// A mapped page of data.
const DATA_VA: u64 = 0x1000_0000;
/// Nothing is mapped here.
const HOLE_VA: u64 = 0x2000_0000;

/// FAULT_MODE is the only VM_CREATE flag; xe's other two bits stay
/// reserved.
pub fn fault_mode_vm_create_flags(d: &Device) -> TestResult {
    let vm = d.vm_create(FAULT_MODE).map_err(e2s)?;
    d.vm_destroy(vm).map_err(e2s)?;
    for bad in [1 << 0, 1 << 1, 1 << 3, 1 << 31, FAULT_MODE | 1] {
        let r = d.vm_create(bad).map(drop);
        check!(
            errno(r) == Some(libc::EINVAL),
            "VM_CREATE with flags {bad:#x} did not fail with EINVAL"
        );
    }
    Ok(())
}

/// A store to an address with no mapping stalls the job, the kernel finds
/// nothing to map and aborts it: its fence gets EIO, the commands before the
/// fault took effect, and the VM keeps running jobs.
pub fn fault_mode_unresolvable_fault_aborts(d: &Device) -> TestResult {
    let c = Ctx::with_vm_flags(d, FAULT_MODE)?;
    let data = Bo::new(d, SZ_4K, SYSTEM, c.vm).map_err(e2s)?;
    c.map(&data, 0, DATA_VA, SZ_4K, 0)?;
    let before = vm_debug(c.vm)?;
    check!(
        before.faults == [0, 0],
        "faults before: {:?}",
        before.faults
    );

    let mut cb = CmdBuf::new();
    cb.store32(DATA_VA, 0x1111_2222)
        .store32(HOLE_VA, 0xdead_beef)
        .store32(DATA_VA + 4, 0x3333_4444)
        .end();
    let status = c.run(&cb)?;
    check!(status == -libc::EIO, "the faulting job ended with {status}");
    let m = data.mmap().map_err(e2s)?;
    check!(
        m.read_u32(0).map_err(e2s)? == 0x1111_2222,
        "the store before the fault is missing"
    );
    check!(
        m.read_u32(4).map_err(e2s)? == 0,
        "the store after the fault ran"
    );
    let after = vm_debug(c.vm)?;
    check!(
        after.faults == [0, 1],
        "faults (resolved, aborted) {:?}, not [0, 1]",
        after.faults
    );

    // The VM and its queue go on.
    let mut ok = CmdBuf::new();
    ok.store32(DATA_VA + 8, 0x5555_6666).end();
    let status = c.run(&ok)?;
    check!(status == 0, "the next job ended with {status}");
    check!(
        m.read_u32(8).map_err(e2s)? == 0x5555_6666,
        "the next job did not write"
    );
    check!(
        vm_debug(c.vm)?.faults == [0, 1],
        "a job without fault counted one"
    );
    Ok(())
}

/// A permission fault (a store to a READONLY mapping) is not resolvable:
/// the device aborts the job at once, without asking the kernel.
pub fn fault_mode_permission_fault_aborts(d: &Device) -> TestResult {
    let c = Ctx::with_vm_flags(d, FAULT_MODE)?;
    let data = Bo::new(d, SZ_4K, SYSTEM, c.vm).map_err(e2s)?;
    c.map(&data, 0, DATA_VA, SZ_4K, DRM_MIRAGE_VM_BIND_FLAG_READONLY)?;
    let mut cb = CmdBuf::new();
    cb.store32(DATA_VA, 0xdead_beef).end();
    let status = c.run(&cb)?;
    check!(status == -libc::EIO, "the job ended with {status}");
    check!(
        data.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0,
        "the GPU wrote a READONLY mapping"
    );
    let f = vm_debug(c.vm)?.faults;
    check!(f == [0, 0], "a permission fault reached the kernel: {f:?}");
    Ok(())
}

/// Jobs on four exec queues of one fault-mode VM wait for one semaphore,
/// then fault at once: the faults are outstanding together, and each job is
/// aborted on its own.
pub fn fault_mode_faults_on_several_queues(d: &Device) -> TestResult {
    const QUEUES: usize = 4;
    // No external BO: the jobs of the four queues run at once.
    let c = Ctx::unordered(d, FAULT_MODE)?;
    let sem = Bo::new(d, SZ_4K, SYSTEM, c.vm).map_err(e2s)?;
    c.map(&sem, 0, DATA_VA, SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.sem_wait(DATA_VA, 1, SemCond::Eq32)
        .store32(HOLE_VA, 0xdead_beef)
        .end();
    c.cmd
        .mmap()
        .map_err(e2s)?
        .write(0, &cb.to_bytes())
        .map_err(e2s)?;

    let mut queues = Vec::new();
    let mut outs = Vec::new();
    for _ in 0..QUEUES {
        let q = d
            .exec_queue_create(
                c.vm,
                DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
                DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
            )
            .map_err(e2s)?;
        let out = d.syncobj_create(0).map_err(e2s)?;
        d.exec(q, CMD_VA, cb.len_bytes(), &[DrmMirageSync::signal(out)])
            .map_err(e2s)?;
        queues.push(q);
        outs.push(out);
    }
    sem.mmap().map_err(e2s)?.write_u32(0, 1).map_err(e2s)?;
    for &out in &outs {
        d.syncobj_wait(out, 0, deadline_in(20_000))
            .map_err(|e| format!("a faulting job did not end: {e}"))?;
        let status = fence_status(d, out)?;
        check!(status == -libc::EIO, "a faulting job ended with {status}");
    }
    let f = vm_debug(c.vm)?.faults;
    check!(
        f == [0, QUEUES as u64],
        "faults (resolved, aborted) {f:?}, not [0, {QUEUES}]"
    );
    for (q, out) in queues.into_iter().zip(outs) {
        d.syncobj_destroy(out).map_err(e2s)?;
        d.exec_queue_destroy(q).map_err(e2s)?;
    }
    Ok(())
}

/// Where the mirror of a test starts and ends: the process's whole address space above
/// 4 GiB, which holds its heap, its mmaps and its stack, and none of the BOs tests map.
pub(crate) const MIRROR_START: u64 = 1 << 32;
pub(crate) const MIRROR_END: u64 = 1 << 47;
pub(crate) const SZ_64K: u64 = 64 << 10;
pub(crate) const SZ_2M: u64 = 2 << 20;

/// A fault-mode VM whose address space above 4 GiB mirrors the process's.
pub(crate) fn mirror_ctx(d: &Device) -> Result<Ctx<'_>, String> {
    let c = Ctx::unordered(d, FAULT_MODE)?;
    d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::map_mirror(
            MIRROR_START,
            MIRROR_END - MIRROR_START,
        )],
        &[],
    )
    .map_err(e2s)?;
    Ok(c)
}

/// Reads the u32 at user address `addr`, which the GPU may have written behind the
/// compiler's back.
pub(crate) fn peek32(addr: u64) -> u32 {
    // SAFETY: the callers pass addresses of memory they own, 4-byte aligned.
    unsafe { (addr as *const u32).read_volatile() }
}

pub(crate) fn poke32(addr: u64, v: u32) {
    // SAFETY: as in `peek32`.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

/// Checks that every u32 of `[addr, addr + len)` is `want`.
pub(crate) fn expect_fill(addr: u64, len: u64, want: u32, what: &str) -> TestResult {
    for off in (0..len).step_by(4) {
        let v = peek32(addr + off);
        check!(v == want, "{what}: {v:#x} at +{off:#x}, not {want:#x}");
    }
    Ok(())
}

/// The FNV-1a checksum of `[addr, addr + len)` as the CPU reads it.
fn cpu_checksum(addr: u64, len: u64) -> u64 {
    let bytes: Vec<u8> = (0..len)
        .step_by(4)
        .flat_map(|off| peek32(addr + off).to_le_bytes())
        .collect();
    mirage::cmd::fnv1a64(&bytes)
}

/// VM_BIND of a mirror: xe's shape, FAULT_MODE VMs only; the VA tree shows it, and splits it
/// like any mapping while the GPU has faulted nothing in.
pub fn svm_mirror_bind_rejects_bad_input(d: &Device) -> TestResult {
    let plain = Ctx::new(d)?;
    let r = d.vm_bind(
        plain.vm,
        0,
        &[DrmMirageVmBindOp::map_mirror(MIRROR_START, SZ_2M)],
        &[],
    );
    check!(
        errno(r) == Some(libc::EINVAL),
        "a mirror in a VM without FAULT_MODE was not refused with EINVAL"
    );

    let c = Ctx::with_vm_flags(d, FAULT_MODE)?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, c.vm).map_err(e2s)?;
    let base = DrmMirageVmBindOp::map_mirror(MIRROR_START, SZ_2M);
    let bad = [
        (
            "an object",
            DrmMirageVmBindOp {
                obj: bo.handle(),
                ..base
            },
        ),
        (
            "an offset",
            DrmMirageVmBindOp {
                obj_offset: SZ_4K,
                ..base
            },
        ),
        (
            "READONLY",
            base.with_flags(
                DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR | DRM_MIRAGE_VM_BIND_FLAG_READONLY,
            ),
        ),
        (
            "a bad PAT",
            DrmMirageVmBindOp {
                pat_index: 2,
                ..base
            },
        ),
        (
            "an unaligned range",
            DrmMirageVmBindOp {
                range: SZ_4K + 1,
                ..base
            },
        ),
        (
            "AUTORESET on a BO",
            DrmMirageVmBindOp::map(bo.handle(), 0, MIRROR_START, SZ_4K)
                .with_flags(DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET),
        ),
        (
            "MIRROR on a userptr",
            DrmMirageVmBindOp::map_userptr(MIRROR_START, MIRROR_START, SZ_4K)
                .with_flags(DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR),
        ),
    ];
    for (what, op) in bad {
        let r = d.vm_bind(c.vm, 0, &[op], &[]);
        check!(
            errno(r) == Some(libc::EINVAL),
            "a mirror bind with {what} was not refused with EINVAL"
        );
    }
    check!(
        vm_debug(c.vm)?.mirror_vas.is_empty(),
        "a refused bind left a mirror"
    );

    let auto = base.with_flags(
        DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR | DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET,
    );
    d.vm_bind(c.vm, 0, &[auto], &[]).map_err(e2s)?;
    let m = vm_debug(c.vm)?.mirror_vas;
    check!(
        m == [(MIRROR_START, MIRROR_START + SZ_2M, 0, true)],
        "mirrors {m:x?}"
    );
    // Nothing faulted in: an UNMAP splits it.
    d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::unmap(MIRROR_START + SZ_64K, SZ_64K)],
        &[],
    )
    .map_err(e2s)?;
    let m = vm_debug(c.vm)?.mirror_vas;
    check!(
        m == [
            (MIRROR_START, MIRROR_START + SZ_64K, 0, true),
            (MIRROR_START + 2 * SZ_64K, MIRROR_START + SZ_2M, 0, true)
        ],
        "mirrors after a split {m:x?}"
    );
    Ok(())
}

/// The GPU writes `malloc`, `mmap` and stack memory through the mirror with no bind per
/// buffer: its faults map the pages, bit-exact.
pub fn svm_gpu_writes_malloc_mmap_and_stack(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    // A small allocation (brk heap), a large one (malloc's own mmap), an mmap of ours, and
    // the stack.
    let small = vec![0u64; 32].into_boxed_slice();
    let big = vec![0u32; 1 << 18].into_boxed_slice();
    let map = Anon::mmap(4 * SZ_2M)?;
    let mut stack = [0u64; 16];
    let small_va = small.as_ptr() as u64;
    let big_va = big.as_ptr() as u64;
    let stack_va = stack.as_mut_ptr() as u64;
    for va in [small_va, big_va, map.addr(), stack_va] {
        check!(
            (MIRROR_START..MIRROR_END).contains(&va),
            "buffer at {va:#x} is outside the mirror"
        );
    }

    let mut cb = CmdBuf::new();
    for i in 0..32 {
        cb.store64(small_va + 8 * i, 0x5a5a_0000_0000_0000 | i);
    }
    cb.fill(big_va, 1 << 20, 0x1111_2222);
    cb.fill(map.addr(), 4 * SZ_2M, 0x3333_4444);
    for i in 0..16 {
        cb.store64(stack_va + 8 * i, 0xc0de_0000_0000_0000 | i);
    }
    cb.end();
    let status = c.run(&cb)?;
    check!(status == 0, "the job ended with {status}");

    for i in 0..32 {
        // SAFETY: in bounds; the GPU wrote it.
        let v = unsafe { small.as_ptr().add(i).read_volatile() };
        check!(v == 0x5a5a_0000_0000_0000 | i as u64, "small[{i}] = {v:#x}");
    }
    expect_fill(big_va, 1 << 20, 0x1111_2222, "malloc")?;
    expect_fill(map.addr(), 4 * SZ_2M, 0x3333_4444, "mmap")?;
    for i in 0..16 {
        // SAFETY: in bounds of the live array; the GPU wrote it.
        let v = unsafe { stack.as_ptr().add(i).read_volatile() };
        check!(v == 0xc0de_0000_0000_0000 | i as u64, "stack[{i}] = {v:#x}");
    }
    let dbg = vm_debug(c.vm)?;
    check!(
        dbg.faults[0] > 0 && dbg.faults[1] == 0,
        "faults (resolved, aborted) {:?}",
        dbg.faults
    );
    check!(
        dbg.svm_ranges.is_some_and(|n| n > 0),
        "svm ranges {:?}",
        dbg.svm_ranges
    );
    drop((small, big));
    Ok(())
}

/// A store to a mirrored address the CPU has not mapped aborts the job.
pub fn svm_unmapped_cpu_memory_aborts(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    let gone = Anon::mmap(SZ_64K)?;
    let addr = gone.addr();
    drop(gone);
    let mut cb = CmdBuf::new();
    cb.store32(addr, 1).end();
    let status = c.run(&cb)?;
    check!(status == -libc::EIO, "the job ended with {status}");
    let f = vm_debug(c.vm)?.faults;
    check!(f == [0, 1], "faults (resolved, aborted) {f:?}");
    Ok(())
}

/// Partial munmap of a range the GPU faulted in (front, middle, back), with and without a
/// CPU touch before the next job: the rest keeps its data, faults back in, and takes new
/// writes; the unmapped page aborts a job that stores to it.
pub fn svm_partial_munmap_keeps_the_rest(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    for cpu_touch in [false, true] {
        for (name, off) in [
            ("front", 0),
            ("middle", SZ_2M / 2),
            ("back", 4 * SZ_2M - SZ_4K),
        ] {
            let what = format!("{name} munmap, cpu touch {cpu_touch}");
            // 4 MiB on a 2 MiB boundary, so that the GPU faults in 2 MiB ranges.
            let map = Anon::mmap(6 * SZ_2M)?;
            let base = (map.addr() + SZ_2M - 1) & !(SZ_2M - 1);
            let len = 4 * SZ_2M;
            let mut fill = CmdBuf::new();
            fill.fill(base, len, 0x1234_5678).end();
            check!(c.run(&fill)? == 0, "{what}: the first fill failed");
            expect_fill(base, len, 0x1234_5678, &what)?;

            let hole = base + off;
            map.unmap(hole, SZ_4K)?;
            let parts = [
                (base, hole - base),
                (hole + SZ_4K, base + len - hole - SZ_4K),
            ];
            if cpu_touch {
                for &(a, l) in &parts {
                    for p in (0..l).step_by(SZ_4K as usize) {
                        poke32(a + p, 0xfeed_0000 | (p / SZ_4K) as u32);
                    }
                }
            }
            // The GPU reads what is left as the CPU does.
            let out = Anon::mmap(SZ_4K)?;
            let mut sums = CmdBuf::new();
            for (i, &(a, l)) in parts.iter().enumerate() {
                if l > 0 {
                    sums.checksum(a, l, out.addr() + 8 * i as u64);
                }
            }
            sums.end();
            check!(c.run(&sums)? == 0, "{what}: the checksums failed");
            for (i, &(a, l)) in parts.iter().enumerate() {
                if l == 0 {
                    continue;
                }
                // SAFETY: `out` is ours; the GPU wrote the sum.
                let got = unsafe { ((out.addr() + 8 * i as u64) as *const u64).read_volatile() };
                let want = cpu_checksum(a, l);
                check!(
                    got == want,
                    "{what}: part {i}: GPU sum {got:#x}, CPU {want:#x}"
                );
            }
            // New writes land.
            let mut again = CmdBuf::new();
            for &(a, l) in &parts {
                if l > 0 {
                    again.fill(a, l, 0x0bad_cafe);
                }
            }
            again.end();
            check!(c.run(&again)? == 0, "{what}: the second fill failed");
            for &(a, l) in &parts {
                expect_fill(a, l, 0x0bad_cafe, &what)?;
            }
            // The hole is gone for the GPU too.
            let mut hole_store = CmdBuf::new();
            hole_store.store32(hole, 1).end();
            let status = c.run(&hole_store)?;
            check!(
                status == -libc::EIO,
                "{what}: a store to the hole ended with {status}"
            );
        }
    }
    Ok(())
}

/// Four threads, each with its own exec queue, run jobs whose command buffers and data are
/// in their own `mmap`ed memory, all at once: the faults of the four queues are serviced
/// concurrently, and every result is right.
pub fn svm_threads_fault_concurrently(d: &Device) -> TestResult {
    const THREADS: u32 = 4;
    let c = mirror_ctx(d)?;
    let vm = c.vm;
    let start = std::sync::Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let start = &start;
                s.spawn(move || -> TestResult {
                    let q = d
                        .exec_queue_create(
                            vm,
                            DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
                            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
                        )
                        .map_err(e2s)?;
                    let len = SZ_2M + 3 * SZ_64K;
                    let data = Anon::mmap(len)?;
                    let cmd = Anon::mmap(SZ_4K)?;
                    let pattern = 0x7700_0000 | t;
                    let mut cb = CmdBuf::new();
                    cb.fill(data.addr(), len, pattern).end();
                    let bytes = cb.to_bytes();
                    // SAFETY: `cmd` is a page of ours, larger than the commands.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            bytes.as_ptr(),
                            cmd.addr() as *mut u8,
                            bytes.len(),
                        )
                    };
                    let out = d.syncobj_create(0).map_err(e2s)?;
                    start.wait();
                    d.exec(q, cmd.addr(), cb.len_bytes(), &[DrmMirageSync::signal(out)])
                        .map_err(e2s)?;
                    d.syncobj_wait(out, 0, deadline_in(30_000))
                        .map_err(|e| format!("thread {t}: the job did not end: {e}"))?;
                    let status = fence_status(d, out)?;
                    check!(status == 0, "thread {t}: the job ended with {status}");
                    expect_fill(data.addr(), len, pattern, &format!("thread {t}"))?;
                    d.syncobj_destroy(out).map_err(e2s)?;
                    d.exec_queue_destroy(q).map_err(e2s)?;
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a thread panicked".to_string())??;
        }
        Ok::<(), String>(())
    })?;
    let f = vm_debug(vm)?.faults;
    check!(
        f[0] >= THREADS as u64 * 2 && f[1] == 0,
        "faults (resolved, aborted) {f:?}"
    );
    Ok(())
}

/// The job timeout measures a stall nobody resolves. debugfs `fault_delay_ms`
/// makes each fault service sleep first: a job whose twelve faults take a
/// quarter of the timeout each (three timeouts in all) runs to its end,
/// every store in place, as the driver resolved faults in each period; a
/// job whose one fault service outlasts the timeout is killed (-ETIME), and
/// so is one that resolves faults in every period for more than ten.
pub fn fault_mode_timeout_counts_resolved_faults_as_progress(d: &Device) -> TestResult {
    const PAGES: u64 = 12;
    let c = mirror_ctx(d)?;
    let p = PagesApart::new(PAGES)?;
    let status = run_with_fault_delay(&c, &p.stores(0x5a00_0000), JOB_TIMEOUT_MS / 4)?;
    check!(
        status == 0,
        "{PAGES} faults of {} ms each: the job ended with {status}",
        JOB_TIMEOUT_MS / 4
    );
    for i in 0..PAGES {
        let got = peek32(p.page(i));
        check!(
            got == 0x5a00_0000 | i as u32,
            "page {i}: {got:#x} after the job"
        );
    }
    let f = vm_debug(c.vm)?.faults;
    check!(f == [PAGES, 0], "faults (resolved, aborted) {f:?}");

    // One fault whose service outlasts the timeout: no progress in a period.
    let c = mirror_ctx(d)?;
    let p = PagesApart::new(1)?;
    let status = run_with_fault_delay(&c, &p.stores(1), JOB_TIMEOUT_MS * 3 / 2)?;
    check!(
        status == -libc::ETIME,
        "a fault served in {} ms: the job ended with {status}",
        JOB_TIMEOUT_MS * 3 / 2
    );
    wait_for_faults(c.vm, 1)?;

    // Progress in every period, for longer than ten periods: the job gets
    // nine more periods at most, so that its fence stays bounded.
    const LONG: u64 = 48;
    let c = mirror_ctx(d)?;
    let p = PagesApart::new(LONG)?;
    let status = run_with_fault_delay(&c, &p.stores(0x5b00_0000), JOB_TIMEOUT_MS / 4)?;
    check!(
        status == -libc::ETIME,
        "{LONG} faults of {} ms each, longer than ten timeouts: the job ended with {status}",
        JOB_TIMEOUT_MS / 4
    );
    let last = peek32(p.page(LONG - 1));
    check!(
        last == 0,
        "the last store of the killed job landed: {last:#x}"
    );
    // A fault service may still be under way (or not, if the kill came
    // between two faults): let the counts settle for twice its sleep.
    let mut f = vm_debug(c.vm)?.faults;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(JOB_TIMEOUT_MS / 2));
        let now = vm_debug(c.vm)?.faults;
        if now == f {
            break;
        }
        f = now;
    }
    check!(
        f[0] < LONG && f[1] == 0,
        "faults (resolved, aborted) {f:?} for a job killed before its end"
    );
    Ok(())
}

/// Pages with a hole after each: every page is a CPU mapping of its own, so
/// a range and a GPU fault of its own.
struct PagesApart(Anon, u64);

impl PagesApart {
    fn new(n: u64) -> Result<Self, String> {
        let map = Anon::mmap(2 * n * SZ_4K)?;
        for i in 0..n {
            map.unmap(map.addr() + (2 * i + 1) * SZ_4K, SZ_4K)?;
        }
        Ok(Self(map, n))
    }

    fn page(&self, i: u64) -> u64 {
        self.0.addr() + 2 * i * SZ_4K
    }

    /// Commands that store `tag | i` to page `i`, each.
    fn stores(&self, tag: u32) -> CmdBuf {
        let mut cb = CmdBuf::new();
        for i in 0..self.1 {
            cb.store32(self.page(i), tag | i as u32);
        }
        cb.end();
        cb
    }
}

/// Runs `cb` on `c` while each fault service sleeps `ms` first (debugfs
/// `fault_delay_ms`); returns the job's fence error.
fn run_with_fault_delay(c: &Ctx, cb: &CmdBuf, ms: u64) -> Result<i32, String> {
    const KNOB: &str = "/sys/kernel/debug/mirage/fault_delay_ms";
    let knob = |ms: u64| std::fs::write(KNOB, ms.to_string()).map_err(|e| format!("{KNOB}: {e}"));
    knob(ms)?;
    let status = c.run(cb);
    knob(0)?;
    status
}

/// Waits until VM `vm` resolved or aborted `n` faults in all: a fault
/// service goes on to its end for a job the timeout killed, and the test
/// lets it end before the VM goes.
fn wait_for_faults(vm: u32, n: u64) -> TestResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = vm_debug(vm)?.faults;
        if f[0] + f[1] >= n {
            return Ok(());
        }
        check!(
            std::time::Instant::now() < deadline,
            "the fault service did not end: faults {f:?}, not {n} in all"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// free() then malloc() again, maybe at the same address: the GPU writes the new memory,
/// never the old pages.
pub fn svm_free_and_malloc_again(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    for round in 0..4u32 {
        let buf = vec![0u32; 1 << 16].into_boxed_slice();
        let va = buf.as_ptr() as u64;
        let pattern = 0x4242_0000 | round;
        let mut cb = CmdBuf::new();
        cb.fill(va, 1 << 18, pattern).end();
        let status = c.run(&cb)?;
        check!(status == 0, "round {round}: the job ended with {status}");
        expect_fill(va, 1 << 18, pattern, &format!("round {round}"))?;
        drop(buf);
    }
    Ok(())
}
