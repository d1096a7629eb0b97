//! Jobs through the GPU: what they write is read back through the CPU and
//! checked bit-exact; faults, ordering and errors.

use crate::{check, deadline_in, e2s, errno, TestResult};
use mirage::cmd::{CmdBuf, SemCond};
use mirage::uapi::*;
use mirage::{Bo, Device};
use std::os::fd::{AsRawFd, OwnedFd};

const SZ_4K: u64 = 4096;
const SZ_64K: u64 = 64 << 10;
const SZ_2M: u64 = 2 << 20;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;
const COMPUTE: u32 = DRM_MIRAGE_ENGINE_CLASS_COMPUTE;
const NORMAL: u32 = DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL;
/// Where tests put their command buffers.
pub(crate) const CMD_VA: u64 = 0x7f00_0000;
/// Size of the command BO at `CMD_VA`.
pub(crate) const CMD_SIZE: u64 = SZ_64K;

/// The fence of `syncobj` as a sync_file (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`).
pub(crate) fn export_sync_file(d: &Device, syncobj: u32) -> Result<OwnedFd, String> {
    d.syncobj_export_sync_file(syncobj).map_err(e2s)
}

/// `struct sync_fence_info`.
#[repr(C)]
struct SyncFenceInfo {
    obj_name: [u8; 32],
    driver_name: [u8; 32],
    status: i32,
    flags: u32,
    timestamp_ns: u64,
}

/// What `SYNC_IOC_FILE_INFO` says of a sync_file of one fence: its status
/// (1 signalled, 0 pending, negative: the error) and the fence's driver name.
pub(crate) fn sync_file_info(fd: &OwnedFd) -> Result<(i32, String), String> {
    #[repr(C)]
    struct Info {
        name: [u8; 32],
        status: i32,
        flags: u32,
        num_fences: u32,
        pad: u32,
        fences: u64,
    }
    const FILE_INFO: u64 = 0xc038_3e04;
    let mut fence = SyncFenceInfo {
        obj_name: [0; 32],
        driver_name: [0; 32],
        status: 0,
        flags: 0,
        timestamp_ns: 0,
    };
    let mut info = Info {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: 1,
        pad: 0,
        fences: &raw mut fence as u64,
    };
    // SAFETY: `info` is the argument type of the request, and `fences` points
    // to room for the one fence it announces.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FILE_INFO as _, &mut info) };
    check!(
        r == 0,
        "SYNC_IOC_FILE_INFO: {}",
        std::io::Error::last_os_error()
    );
    let len = fence.driver_name.iter().position(|&b| b == 0).unwrap_or(32);
    let driver = String::from_utf8_lossy(&fence.driver_name[..len]).into_owned();
    Ok((info.status, driver))
}

/// The error a syncobj's fence was signalled with (0 for none), through a
/// sync_file.
pub(crate) fn fence_status(d: &Device, syncobj: u32) -> Result<i32, String> {
    let fd = export_sync_file(d, syncobj)?;
    let (status, _) = sync_file_info(&fd)?;
    Ok(if status == 1 { 0 } else { status })
}

/// Holds a job's fence (a sync_file, `fd`) across the unloading of the
/// module, then reads it: a fence must outlive the driver that made it
/// without reaching into the unloaded module. Prints its verdict for
/// `guest-init.sh`.
pub fn hold_fence_across_rmmod(fd: OwnedFd) -> TestResult {
    let gone = (0..1200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !std::path::Path::new("/sys/module/mirage").exists()
    });
    check!(gone, "the module was not unloaded within 60 s");
    let (status, driver) = sync_file_info(&fd)?;
    println!("MIRAGE: fence after rmmod status={status} driver={driver}");
    // The job was killed by the job timeout when its file was closed; the
    // fence's ops were detached from the module when it signalled.
    check!(status == -libc::ETIME, "fence status {status}, not -ETIME");
    check!(
        driver == "detached-driver",
        "the fence still names its driver {driver:?}"
    );
    drop(fd);
    Ok(())
}

/// A VM with an exec queue and a command BO mapped at `CMD_VA`.
pub(crate) struct Ctx<'d> {
    d: &'d Device,
    pub(crate) vm: u32,
    pub(crate) queue: u32,
    pub(crate) cmd: Bo<'d>,
}

impl<'d> Ctx<'d> {
    pub(crate) fn new(d: &'d Device) -> Result<Self, String> {
        Self::with_vm_flags(d, 0)
    }

    /// As [`Ctx::new`], with a VM made with `flags`.
    pub(crate) fn with_vm_flags(d: &'d Device, flags: u32) -> Result<Self, String> {
        Self::build(d, flags, false)
    }

    /// As [`Ctx::with_vm_flags`], with the command BO private to the VM. A VM with an
    /// external BO orders each job after the ones before through the BO's reservation
    /// (implicit sync); in this one, jobs of different exec queues run at once.
    pub(crate) fn unordered(d: &'d Device, flags: u32) -> Result<Self, String> {
        Self::build(d, flags, true)
    }

    fn build(d: &'d Device, flags: u32, private: bool) -> Result<Self, String> {
        let vm = d.vm_create(flags).map_err(e2s)?;
        let queue = d.exec_queue_create(vm, COMPUTE, NORMAL).map_err(e2s)?;
        let cmd = Bo::new(d, SZ_64K, SYSTEM, if private { vm } else { 0 }).map_err(e2s)?;
        d.vm_bind(
            vm,
            0,
            &[DrmMirageVmBindOp::map(cmd.handle(), 0, CMD_VA, SZ_64K)],
            &[],
        )
        .map_err(e2s)?;
        Ok(Ctx { d, vm, queue, cmd })
    }

    pub(crate) fn map(&self, bo: &Bo, offset: u64, va: u64, len: u64, flags: u32) -> TestResult {
        let op = DrmMirageVmBindOp::map(bo.handle(), offset, va, len).with_flags(flags);
        self.d.vm_bind(self.vm, 0, &[op], &[]).map_err(e2s)
    }

    /// Loads `cb` into the command BO and submits it with `syncs`.
    pub(crate) fn submit(&self, cb: &CmdBuf, syncs: &[DrmMirageSync]) -> TestResult {
        self.cmd
            .mmap()
            .map_err(e2s)?
            .write(0, &cb.to_bytes())
            .map_err(e2s)?;
        self.d
            .exec(self.queue, CMD_VA, cb.len_bytes(), syncs)
            .map_err(e2s)
    }

    /// Submits a job that waits until the first word of `sem`, mapped at
    /// 0x1000_0000, is `value`. Returns the syncobj its fence goes to, and
    /// the length of its command buffer, for more.
    fn start_job_waiting_for(&self, sem: &Bo, value: u64) -> Result<(u32, u64), String> {
        self.map(sem, 0, 0x1000_0000, SZ_4K, 0)?;
        let mut cb = CmdBuf::new();
        cb.sem_wait(0x1000_0000, value, SemCond::Eq32).end();
        let gate = self.d.syncobj_create(0).map_err(e2s)?;
        self.submit(&cb, &[DrmMirageSync::signal(gate)])?;
        Ok((gate, cb.len_bytes()))
    }

    /// A job waiting for a value nobody writes to `sem`: only the job
    /// timeout ends it.
    fn start_stuck_job(&self, sem: &Bo) -> Result<(u32, u64), String> {
        self.start_job_waiting_for(sem, 7)
    }

    /// Runs `cb` and returns its fence's error (0 if it ended well).
    pub(crate) fn run(&self, cb: &CmdBuf) -> Result<i32, String> {
        let out = self.d.syncobj_create(0).map_err(e2s)?;
        self.submit(cb, &[DrmMirageSync::signal(out)])?;
        self.d
            .syncobj_wait(out, 0, deadline_in(20_000))
            .map_err(|e| format!("job did not end: {e}"))?;
        let status = fence_status(self.d, out)?;
        self.d.syncobj_destroy(out).map_err(e2s)?;
        Ok(status)
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
    }
}

pub fn exec_fill_and_store_through_mappings(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    // BOs of 4K, 64K, 2M and 2M+4K at VAs of several alignments.
    let layout = [
        (SZ_4K, 0x1000_0000u64),
        (SZ_64K, 0x1001_0000),
        (SZ_2M, 0x4000_0000),
        (SZ_2M + SZ_4K, 0x4040_0000),
        (SZ_2M + SZ_4K, 0x5000_3000),
    ];
    let bos: Vec<Bo> = layout
        .iter()
        .map(|&(size, _)| Bo::new(d, size, SYSTEM, 0))
        .collect::<std::io::Result<_>>()
        .map_err(e2s)?;
    let mut cb = CmdBuf::new();
    for (i, (&(size, va), bo)) in layout.iter().zip(&bos).enumerate() {
        c.map(bo, 0, va, size, 0)?;
        cb.fill(va, size, 0xa5a5_0000 | i as u32);
        // A store in the last page and one in the first.
        cb.store64(va + size - 8, 0x5e5e_0000_0000_0000 | i as u64);
        cb.store32(va + 4, 0xc0de_0000 | i as u32);
    }
    cb.end();
    let status = c.run(&cb)?;
    check!(status == 0, "job ended with {status}");
    for (i, (&(size, _), bo)) in layout.iter().zip(&bos).enumerate() {
        let m = bo.mmap().map_err(e2s)?;
        let bytes = m.to_vec();
        for (w, chunk) in bytes.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let off = w as u64 * 4;
            let want = if off == 4 {
                0xc0de_0000 | i as u32
            } else if off == size - 8 {
                i as u32
            } else if off == size - 4 {
                0x5e5e_0000
            } else {
                0xa5a5_0000 | i as u32
            };
            check!(
                v == want,
                "BO {i} (size {size:#x}) word at {off:#x}: {v:#x}, want {want:#x}"
            );
        }
    }
    Ok(())
}

pub fn exec_readonly_and_noexec_fault(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(&bo, 0, 0x2000_0000, SZ_4K, DRM_MIRAGE_VM_BIND_FLAG_READONLY)?;
    let mut cb = CmdBuf::new();
    cb.store32(0x2000_0000, 0xbad).end();
    let status = c.run(&cb)?;
    check!(
        status == -libc::EIO,
        "write to a READONLY mapping: fence error {status}"
    );
    check!(
        bo.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0,
        "READONLY BO was written"
    );
    // The VM and the queue still work after the fault.
    let ok = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(&ok, 0, 0x2100_0000, SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.store32(0x2100_0000, 0x600d).end();
    check!(c.run(&cb)? == 0, "job after a fault failed");
    check!(
        ok.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0x600d,
        "no write after a fault"
    );

    // A command buffer in a NOEXEC mapping cannot be fetched.
    let noexec = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(
        &noexec,
        0,
        0x2200_0000,
        SZ_4K,
        DRM_MIRAGE_VM_BIND_FLAG_NOEXEC,
    )?;
    let mut cb = CmdBuf::new();
    cb.store32(0x2100_0000, 0xbad).end();
    noexec
        .mmap()
        .map_err(e2s)?
        .write(0, &cb.to_bytes())
        .map_err(e2s)?;
    let out = d.syncobj_create(0).map_err(e2s)?;
    d.exec(
        c.queue,
        0x2200_0000,
        cb.len_bytes(),
        &[DrmMirageSync::signal(out)],
    )
    .map_err(e2s)?;
    d.syncobj_wait(out, 0, deadline_in(20_000)).map_err(e2s)?;
    let status = fence_status(d, out)?;
    check!(
        status == -libc::EIO,
        "fetch from a NOEXEC mapping: fence error {status}"
    );
    check!(
        ok.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0x600d,
        "NOEXEC commands ran"
    );
    Ok(())
}

pub fn exec_after_unmap_faults(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let bo = Bo::new(d, SZ_2M, SYSTEM, 0).map_err(e2s)?;
    let va = 0x3000_0000;
    c.map(&bo, 0, va, SZ_2M, 0)?;
    // Touch every page, so that the device's TLB holds them, the page about to be unmapped
    // last.
    let mut cb = CmdBuf::new();
    cb.fill(va, SZ_2M, 0x1111_1111)
        .store32(va + SZ_64K + 8, 0x1111_1111)
        .end();
    check!(c.run(&cb)? == 0, "first job failed");
    // Unmap the middle of the mapping: the neighbours keep working, the hole faults.
    d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::unmap(va + SZ_64K, SZ_64K)],
        &[],
    )
    .map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.store32(va + SZ_64K + 8, 0xdead).end();
    let status = c.run(&cb)?;
    check!(
        status == -libc::EIO,
        "write to an unmapped page: fence error {status} (stale TLB?)"
    );
    let mut cb = CmdBuf::new();
    cb.store32(va, 0x2222)
        .store32(va + 2 * SZ_64K, 0x3333)
        .end();
    check!(c.run(&cb)? == 0, "write next to the hole failed");
    let m = bo.mmap().map_err(e2s)?;
    check!(
        m.read_u32(SZ_64K as usize + 8).map_err(e2s)? == 0x1111_1111,
        "unmapped page was written"
    );
    check!(m.read_u32(0).map_err(e2s)? == 0x2222, "front neighbour");
    check!(
        m.read_u32(2 * SZ_64K as usize).map_err(e2s)? == 0x3333,
        "back neighbour"
    );
    Ok(())
}

pub fn exec_in_and_out_syncobjs(d: &Device) -> TestResult {
    let a = Ctx::new(d)?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    a.map(&bo, 0, 0x1000_0000, SZ_4K, 0)?;
    // Job 1 waits on memory the CPU writes later; job 2, on another queue,
    // waits for job 1 through a timeline point and writes after it.
    let queue2 = d.exec_queue_create(a.vm, COMPUTE, NORMAL).map_err(e2s)?;
    let timeline = d.syncobj_create(0).map_err(e2s)?;
    let done = d.syncobj_create(0).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.sem_wait(0x1000_0000, 1, SemCond::Eq32)
        .store32(0x1000_0008, 0xaaaa)
        .end();
    let m = a.cmd.mmap().map_err(e2s)?;
    m.write(0, &cb.to_bytes()).map_err(e2s)?;
    d.exec(
        a.queue,
        CMD_VA,
        cb.len_bytes(),
        &[DrmMirageSync::signal_point(timeline, 3)],
    )
    .map_err(e2s)?;
    let mut cb2 = CmdBuf::new();
    cb2.store32(0x1000_000c, 0xbbbb).end();
    m.write(0x800, &cb2.to_bytes()).map_err(e2s)?;
    d.exec(
        queue2,
        CMD_VA + 0x800,
        cb2.len_bytes(),
        &[
            DrmMirageSync::wait_point(timeline, 3),
            DrmMirageSync::signal(done),
        ],
    )
    .map_err(e2s)?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let data = bo.mmap().map_err(e2s)?;
    check!(
        data.read_u32(12).map_err(e2s)? == 0,
        "job 2 ran before its in-fence"
    );
    check!(
        errno(d.syncobj_wait(done, 0, 0)) == Some(libc::ETIME),
        "out-syncobj signalled early"
    );
    data.write_u32(0, 1).map_err(e2s)?;
    d.syncobj_wait(done, 0, deadline_in(20_000)).map_err(e2s)?;
    check!(
        data.read_u32(8).map_err(e2s)? == 0xaaaa,
        "job 1 did not write"
    );
    check!(
        data.read_u32(12).map_err(e2s)? == 0xbbbb,
        "job 2 did not write"
    );
    check!(
        d.syncobj_query(timeline).map_err(e2s)? == 3,
        "timeline not at 3"
    );
    d.exec_queue_destroy(queue2).map_err(e2s)?;
    d.syncobj_destroy(timeline).map_err(e2s)?;
    d.syncobj_destroy(done).map_err(e2s)?;
    Ok(())
}

pub fn exec_rejects_bad_input(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let good = DrmMirageExec {
        exec_queue_id: c.queue,
        address: CMD_VA,
        length: 8,
        ..Default::default()
    };
    for (what, a, want) in [
        (
            "unknown queue",
            DrmMirageExec {
                exec_queue_id: 0x7777,
                ..good
            },
            libc::ENOENT,
        ),
        (
            "length 0",
            DrmMirageExec { length: 0, ..good },
            libc::EINVAL,
        ),
        (
            "length 12",
            DrmMirageExec { length: 12, ..good },
            libc::EINVAL,
        ),
        (
            "length 2^32",
            DrmMirageExec {
                length: 1 << 32,
                ..good
            },
            libc::EINVAL,
        ),
        (
            "extensions",
            DrmMirageExec {
                extensions: 1,
                ..good
            },
            libc::EINVAL,
        ),
        (
            "reserved",
            DrmMirageExec {
                reserved: [0, 1],
                ..good
            },
            libc::EINVAL,
        ),
        (
            "65 syncs",
            DrmMirageExec {
                num_syncs: 65,
                syncs: 0x1000,
                ..good
            },
            libc::EINVAL,
        ),
    ] {
        let mut a = a;
        let e = errno(d.exec_raw(&mut a));
        check!(e == Some(want), "EXEC {what}: got {e:?}, want {want}");
    }
    let base = DrmMirageExecQueueCreate {
        vm_id: c.vm,
        engine_class: COMPUTE,
        priority: NORMAL,
        ..Default::default()
    };
    for (what, a, want) in [
        (
            "unknown class",
            DrmMirageExecQueueCreate {
                engine_class: 7,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "flags",
            DrmMirageExecQueueCreate { flags: 1, ..base },
            libc::EINVAL,
        ),
        (
            "priority 3",
            DrmMirageExecQueueCreate {
                priority: 3,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "pad",
            DrmMirageExecQueueCreate { pad: 1, ..base },
            libc::EINVAL,
        ),
        (
            "reserved",
            DrmMirageExecQueueCreate {
                reserved: [1, 0],
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unknown VM",
            DrmMirageExecQueueCreate {
                vm_id: 0x7777,
                ..base
            },
            libc::ENOENT,
        ),
    ] {
        let mut a = a;
        let e = errno(d.exec_queue_create_raw(&mut a));
        check!(
            e == Some(want),
            "EXEC_QUEUE_CREATE {what}: got {e:?}, want {want}"
        );
    }
    let q = d
        .exec_queue_create(c.vm, COMPUTE, DRM_MIRAGE_EXEC_QUEUE_PRIORITY_LOW)
        .map_err(e2s)?;
    d.exec_queue_destroy(q).map_err(e2s)?;
    let e = errno(d.exec_queue_destroy(q));
    check!(e == Some(libc::ENOENT), "second destroy: {e:?}");
    check!(
        d.vm_get_state(c.vm).map_err(e2s)? == DRM_MIRAGE_VM_STATE_USABLE,
        "VM state"
    );
    let e = errno(d.vm_get_state(0x7777).map(|_| ()));
    check!(e == Some(libc::ENOENT), "state of an unknown VM: {e:?}");
    Ok(())
}

/// `make check` loads the driver with `job_timeout_ms=2000`.
pub(crate) const JOB_TIMEOUT_MS: u64 = 2000;

pub fn exec_hang_times_out_and_bans_the_queue(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let other = d.exec_queue_create(c.vm, COMPUTE, NORMAL).map_err(e2s)?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(&bo, 0, 0x1000_0000, SZ_4K, 0)?;
    let start = std::time::Instant::now();
    let mut cb = CmdBuf::new();
    cb.store32(0x1000_0000, 0x1).hang().end();
    let status = c.run(&cb)?;
    let took = start.elapsed().as_millis() as u64;
    check!(status == -libc::ETIME, "hung job: fence error {status}");
    check!(
        took >= JOB_TIMEOUT_MS,
        "killed after {took} ms, before the timeout"
    );
    check!(
        bo.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 1,
        "the hung job's first store is missing"
    );
    // The queue is banned; the VM and another queue keep working.
    let e = errno(d.exec(c.queue, CMD_VA, 8, &[]));
    check!(
        e == Some(libc::ECANCELED),
        "EXEC on the banned queue: {e:?}"
    );
    let mut cb = CmdBuf::new();
    cb.store32(0x1000_0004, 0x2).end();
    let m = c.cmd.mmap().map_err(e2s)?;
    m.write(0x400, &cb.to_bytes()).map_err(e2s)?;
    let out = d.syncobj_create(0).map_err(e2s)?;
    d.exec(
        other,
        CMD_VA + 0x400,
        cb.len_bytes(),
        &[DrmMirageSync::signal(out)],
    )
    .map_err(e2s)?;
    d.syncobj_wait(out, 0, deadline_in(20_000)).map_err(e2s)?;
    check!(fence_status(d, out)? == 0, "the other queue's job failed");
    check!(
        bo.mmap().map_err(e2s)?.read_u32(4).map_err(e2s)? == 2,
        "the other queue's job did not write"
    );
    check!(
        d.vm_get_state(c.vm).map_err(e2s)? == DRM_MIRAGE_VM_STATE_USABLE,
        "VM state"
    );
    d.syncobj_destroy(out).map_err(e2s)?;
    d.exec_queue_destroy(other).map_err(e2s)?;
    Ok(())
}

/// Many VMs (more than the device's 16 address spaces), each in a process of
/// its own with a job at once: every job writes its own data.
pub fn exec_more_vms_than_address_spaces(_: &Device) -> TestResult {
    // Twenty processes, each with its own file and VM, all at once.
    let exe = std::env::current_exe().map_err(e2s)?;
    let children: Vec<_> = (0..20u32)
        .map(|i| {
            std::process::Command::new(&exe)
                .arg("--vm-client")
                .arg(i.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(e2s)
        })
        .collect::<Result<_, _>>()?;
    let mut failures = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().map_err(e2s)?;
        if !out.status.success() {
            failures.push(format!(
                "process {i}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    }
    check!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// One of the processes of [`exec_more_vms_than_address_spaces`]: a VM of
/// its own whose BO the GPU fills three times, each checked bit-exact.
pub fn vm_client(i: u32) -> TestResult {
    let d = Device::open().map_err(e2s)?;
    let c = Ctx::new(&d)?;
    let bo = Bo::new(&d, SZ_64K, SYSTEM, 0).map_err(e2s)?;
    c.map(&bo, 0, 0x1000_0000, SZ_64K, 0)?;
    for round in 0..3u32 {
        let pattern = (i << 16) | round;
        let mut cb = CmdBuf::new();
        cb.fill(0x1000_0000, SZ_64K, pattern).end();
        let status = c.run(&cb)?;
        check!(status == 0, "VM {i} round {round}: fence error {status}");
        let data = bo.mmap().map_err(e2s)?.to_vec();
        let bad = data
            .chunks_exact(4)
            .position(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) != pattern);
        check!(bad.is_none(), "VM {i} round {round}: word {bad:?} wrong");
    }
    Ok(())
}

/// Closing a file whose queues have jobs waiting (on memory nobody will
/// write) must end them and free everything.
pub fn exec_close_with_work_in_flight(_: &Device) -> TestResult {
    let d = Device::open().map_err(e2s)?;
    let c = Ctx::new(&d)?;
    let bo = Bo::new(&d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let (gate, len) = c.start_stuck_job(&bo)?;
    // More jobs behind it, one waiting for it through a syncobj.
    d.exec(c.queue, CMD_VA, len, &[]).map_err(e2s)?;
    d.exec(c.queue, CMD_VA, len, &[DrmMirageSync::wait(gate)])
        .map_err(e2s)?;
    drop(bo);
    drop(c);
    drop(d);
    Ok(())
}

/// Implicit synchronisation through an external BO's reservation object:
/// a job of another VM that maps the same BO runs only after the first
/// job, though nothing orders them explicitly.
pub fn exec_ordered_through_an_external_bo(d: &Device) -> TestResult {
    let a = Ctx::new(d)?;
    let b = Ctx::new(d)?;
    let shared = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    a.map(&shared, 0, 0x1000_0000, SZ_4K, 0)?;
    b.map(&shared, 0, 0x2000_0000, SZ_4K, 0)?;
    let mut first = CmdBuf::new();
    first
        .sem_wait(0x1000_0000, 1, SemCond::Eq32)
        .store32(0x1000_0008, 0xaaaa)
        .end();
    a.submit(&first, &[])?;
    // The second job copies what the first one wrote.
    let mut second = CmdBuf::new();
    second
        .copy(0x2000_0010, 0x2000_0008, 4)
        .store32(0x2000_000c, 0xbbbb)
        .end();
    let done = d.syncobj_create(0).map_err(e2s)?;
    b.submit(&second, &[DrmMirageSync::signal(done)])?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let m = shared.mmap().map_err(e2s)?;
    check!(
        m.read_u32(12).map_err(e2s)? == 0,
        "the second job ran before the first"
    );
    m.write_u32(0, 1).map_err(e2s)?;
    d.syncobj_wait(done, 0, deadline_in(20_000)).map_err(e2s)?;
    check!(fence_status(d, done)? == 0, "second job failed");
    check!(
        m.read_u32(16).map_err(e2s)? == 0xaaaa,
        "the second job did not see the first one's write"
    );
    check!(
        m.read_u32(12).map_err(e2s)? == 0xbbbb,
        "the second job did not write"
    );
    d.syncobj_destroy(done).map_err(e2s)?;
    Ok(())
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A synchronous bind (no syncs) waits for the binds before it on its
/// queue: one queued behind an asynchronous bind held by an in-fence is
/// interrupted by a signal (a handler without SA_RESTART), fails with EINTR
/// and leaves the VM as it was: the VA tree has the asynchronous bind, not
/// the synchronous one.
pub fn vm_bind_interrupted_changes_nothing(d: &Device) -> TestResult {
    const HELD: u64 = 0x2000_0000;
    const SYNC: u64 = 0x2100_0000;
    let c = Ctx::new(d)?;
    let gate_bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let (pending, _) = c.start_job_waiting_for(&gate_bo, 1)?;
    let held_bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let held_out = d.syncobj_create(0).map_err(e2s)?;
    d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::map(held_bo.handle(), 0, HELD, SZ_4K)],
        &[
            DrmMirageSync::wait(pending),
            DrmMirageSync::signal(held_out),
        ],
    )
    .map_err(|e| format!("the async bind: {e}"))?;
    let before = crate::vm::vm_debug(c.vm)?;
    // SAFETY: installs a handler that does nothing, for SIGUSR1 only, without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let op = DrmMirageVmBindOp::map(bo.handle(), 0, SYNC, SZ_4K);
    let (tx, rx) = std::sync::mpsc::channel();
    let e = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut args = mirage::vm_bind_args(c.vm, 0, &[op], &[]).ok()?;
            // SAFETY: pthread_self has no preconditions.
            let _ = tx.send(unsafe { libc::pthread_self() });
            // Not `mirage::ioctl`, which retries on EINTR as libdrm does.
            // SAFETY: `args` is the request's argument; its pointer points into `op`, which
            // outlives the call.
            let r = unsafe {
                libc::ioctl(
                    d.file().as_raw_fd(),
                    DRM_IOCTL_MIRAGE_VM_BIND as _,
                    &mut args,
                )
            };
            (r != 0)
                .then(|| std::io::Error::last_os_error().raw_os_error())
                .flatten()
        });
        if let Ok(tid) = rx.recv() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            // SAFETY: the thread is alive until it is joined below.
            unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
        }
        t.join().unwrap_or(Some(-1))
    });
    let after = crate::vm::vm_debug(c.vm);
    let held_pending = errno(d.syncobj_wait(held_out, 0, 0)) == Some(libc::ETIME);
    // Opened before any check, so that a failure leaves nothing waiting for the job timeout.
    gate_bo.mmap().map_err(e2s)?.write_u32(0, 1).map_err(e2s)?;
    check!(e == Some(libc::EINTR), "interrupted sync bind: {e:?}");
    let after = after?;
    check!(
        after.vas == before.vas,
        "VA tree changed: {:x?} -> {:x?}",
        before.vas,
        after.vas
    );
    check!(
        before.vas.iter().any(|v| v.0 == HELD) && !after.vas.iter().any(|v| v.0 == SYNC),
        "the VA tree should have the async bind and not the sync one: {:x?}",
        after.vas
    );
    check!(held_pending, "the async bind ran before its in-fence");
    d.syncobj_wait(pending, 0, deadline_in(20_000))
        .map_err(e2s)?;
    d.syncobj_wait(held_out, 0, deadline_in(20_000))
        .map_err(|e| format!("the async bind did not run: {e}"))?;
    check!(fence_status(d, held_out)? == 0, "the async bind failed");
    // Now the same sync bind goes through.
    d.vm_bind(c.vm, 0, &[op], &[]).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.store32(HELD, 0x4e1d).store32(SYNC + 4, 0x5bc0).end();
    let status = c.run(&cb)?;
    check!(status == 0, "the job through both mappings: {status}");
    check!(
        held_bo.mmap().map_err(e2s)?.read_u32(0).map_err(e2s)? == 0x4e1d,
        "the async bind's mapping"
    );
    check!(
        bo.mmap().map_err(e2s)?.read_u32(4).map_err(e2s)? == 0x5bc0,
        "the sync bind's mapping"
    );
    d.syncobj_destroy(held_out).map_err(e2s)?;
    d.syncobj_destroy(pending).map_err(e2s)?;
    Ok(())
}

/// A map over an existing mapping replaces it (mmap semantics), and
/// UNMAP_ALL removes every mapping of a BO: checked through the GPU.
pub fn exec_map_over_and_unmap_all(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let a = Bo::new(d, SZ_64K, SYSTEM, 0).map_err(e2s)?;
    let b = Bo::new(d, SZ_64K, SYSTEM, 0).map_err(e2s)?;
    let (x, y) = (0x1000_0000u64, 0x1100_0000u64);
    c.map(&a, 0, x, SZ_64K, 0)?;
    // B over the middle of A's mapping, and B again elsewhere: in one array.
    let ops = [
        DrmMirageVmBindOp::map(b.handle(), 0, x + SZ_4K, 2 * SZ_4K),
        DrmMirageVmBindOp::map(b.handle(), 0, y, SZ_64K),
    ];
    d.vm_bind(c.vm, 0, &ops, &[]).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.store32(x, 0xa0)
        .store32(x + SZ_4K, 0xb0)
        .store32(x + 3 * SZ_4K, 0xa3)
        .store32(y + 8, 0xb8)
        .end();
    check!(c.run(&cb)? == 0, "job failed");
    let (ma, mb) = (a.mmap().map_err(e2s)?, b.mmap().map_err(e2s)?);
    check!(ma.read_u32(0).map_err(e2s)? == 0xa0, "A's first page");
    check!(
        ma.read_u32(SZ_4K as usize).map_err(e2s)? == 0,
        "A was written under B's mapping"
    );
    check!(
        ma.read_u32(3 * SZ_4K as usize).map_err(e2s)? == 0xa3,
        "A after B's mapping"
    );
    check!(
        mb.read_u32(0).map_err(e2s)? == 0xb0,
        "B through the replacing mapping"
    );
    check!(
        mb.read_u32(8).map_err(e2s)? == 0xb8,
        "B through its second mapping"
    );
    // Every mapping of B goes; A's stay.
    d.vm_bind(c.vm, 0, &[DrmMirageVmBindOp::unmap_all(b.handle())], &[])
        .map_err(e2s)?;
    for va in [x + SZ_4K, y] {
        let mut cb = CmdBuf::new();
        cb.store32(va, 0xbad).end();
        let status = c.run(&cb)?;
        check!(
            status == -libc::EIO,
            "store to {va:#x} after UNMAP_ALL: fence error {status}"
        );
    }
    let mut cb = CmdBuf::new();
    cb.store32(x + 3 * SZ_4K + 4, 0xa4).end();
    check!(c.run(&cb)? == 0, "A's mapping after UNMAP_ALL of B");
    check!(
        ma.read_u32(3 * SZ_4K as usize + 4).map_err(e2s)? == 0xa4,
        "A not written"
    );
    check!(
        mb.read_u32(SZ_4K as usize).map_err(e2s)? == 0,
        "B written after UNMAP_ALL"
    );
    Ok(())
}

/// A VM destroyed, and its exec queue too, while a job of it waits on the
/// GPU: the job's VM, page tables and mappings stay until it ends, so it
/// completes and writes its data once released.
pub fn exec_vm_destroyed_while_its_job_runs(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let queue = d.exec_queue_create(vm, COMPUTE, NORMAL).map_err(e2s)?;
    let cmd = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let data = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let ops = [
        DrmMirageVmBindOp::map(cmd.handle(), 0, CMD_VA, SZ_4K),
        DrmMirageVmBindOp::map(data.handle(), 0, 0x1000_0000, SZ_4K),
    ];
    d.vm_bind(vm, 0, &ops, &[]).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.sem_wait(0x1000_0000, 1, SemCond::Eq32)
        .store32(0x1000_0008, 0x0bad_f00d)
        .end();
    cmd.mmap()
        .map_err(e2s)?
        .write(0, &cb.to_bytes())
        .map_err(e2s)?;
    let out = d.syncobj_create(0).map_err(e2s)?;
    d.exec(queue, CMD_VA, cb.len_bytes(), &[DrmMirageSync::signal(out)])
        .map_err(e2s)?;
    let m = data.mmap().map_err(e2s)?;
    d.vm_destroy(vm).map_err(e2s)?;
    let destroyed = std::thread::scope(|s| {
        // Destroying the queue waits for its job on the device.
        let t = s.spawn(|| d.exec_queue_destroy(queue));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = m.write_u32(0, 1);
        t.join()
    });
    check!(
        matches!(destroyed, Ok(Ok(()))),
        "queue destroy: {destroyed:?}"
    );
    d.syncobj_wait(out, 0, deadline_in(20_000)).map_err(e2s)?;
    let status = fence_status(d, out)?;
    check!(status == 0, "the job of a destroyed VM ended with {status}");
    check!(
        m.read_u32(8).map_err(e2s)? == 0x0bad_f00d,
        "the job did not write"
    );
    d.syncobj_destroy(out).map_err(e2s)?;
    Ok(())
}

/// Leaves the device busy and exits without tearing anything down, so that
/// `guest-init.sh` unloads the module right behind it: the file is closed by
/// the process's exit while jobs run, wait on each other and on VMs that
/// were destroyed, and `rmmod` follows at once. Checks that the work is
/// still in flight when it leaves.
pub fn leave_work_in_flight(d: &Device) -> TestResult {
    // Everything slow (BOs, mappings) is set up first, so that the stuck job
    // is still short of the job timeout when the process leaves.
    let a = Ctx::new(d)?;
    let sem = Bo::new(d, SZ_4K, SYSTEM, a.vm).map_err(e2s)?;
    // An external BO mapped in a second VM too.
    let shared = Bo::new(d, 4 * SZ_2M, SYSTEM, 0).map_err(e2s)?;
    a.map(&shared, 0, 0x4000_0000, 4 * SZ_2M, 0)?;
    let b = Ctx::new(d)?;
    b.map(&shared, 0, 0x4000_0000, 4 * SZ_2M, 0)?;
    // A third VM with a long job of its own, mapped and mmapped at exit.
    let c = Ctx::new(d)?;
    let big = Bo::new(d, 16 * SZ_2M, SYSTEM, c.vm).map_err(e2s)?;
    c.map(&big, 0, 0x8000_0000, 16 * SZ_2M, 0)?;
    let _cpu_view = big.mmap().map_err(e2s)?;
    let extra = Bo::new(d, SZ_4K, SYSTEM, a.vm).map_err(e2s)?;
    let binds = d
        .exec_queue_create(
            c.vm,
            DRM_MIRAGE_ENGINE_CLASS_VM_BIND,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
        )
        .map_err(e2s)?;

    // A job that never ends by itself (it is killed by the job timeout),
    // two more behind it on its queue, and one on another queue that waits
    // for it through a syncobj.
    let (gate, len) = a.start_stuck_job(&sem)?;
    for _ in 0..2 {
        d.exec(a.queue, CMD_VA, len, &[]).map_err(e2s)?;
    }
    // The second VM's job writes the shared BO behind the stuck one; that VM
    // is destroyed with the job queued.
    let mut fill = CmdBuf::new();
    fill.fill(0x4000_0000, 4 * SZ_2M, 0x5a5a_5a5a).end();
    b.submit(&fill, &[DrmMirageSync::wait(gate)])?;
    d.vm_destroy(b.vm).map_err(e2s)?;
    let mut long = CmdBuf::new();
    for i in 0..16 {
        long.fill(0x8000_0000 + i * SZ_2M, SZ_2M, i as u32);
    }
    long.end();
    c.submit(&long, &[])?;

    // Binds queued behind the stuck job, on a VM's default bind queue and on
    // a bind queue of its own: the file's close cancels them.
    d.vm_bind(
        a.vm,
        0,
        &[
            DrmMirageVmBindOp::map(extra.handle(), 0, 0x6000_0000, SZ_4K),
            DrmMirageVmBindOp::unmap(0x4000_0000, SZ_4K),
        ],
        &[DrmMirageSync::wait(gate)],
    )
    .map_err(e2s)?;
    d.vm_bind(
        c.vm,
        binds,
        &[DrmMirageVmBindOp::unmap(0x8000_0000 + SZ_2M, SZ_4K)],
        &[DrmMirageSync::wait(gate)],
    )
    .map_err(e2s)?;

    // Still in flight: the stuck job has not ended.
    check!(
        errno(d.syncobj_wait(gate, 0, deadline_in(0))) == Some(libc::ETIME),
        "the stuck job ended before the process left"
    );
    // Its fence goes to a process that keeps it across the rmmod: the fd
    // alone, without the render node (opened close-on-exec) or any mapping.
    let fence = export_sync_file(d, gate)?;
    // SAFETY: `fence` is an open fd; clearing FD_CLOEXEC changes nothing else.
    let r = unsafe { libc::fcntl(fence.as_raw_fd(), libc::F_SETFD, 0) };
    check!(r == 0, "fcntl: {}", std::io::Error::last_os_error());
    let exe = std::env::current_exe().map_err(e2s)?;
    std::process::Command::new(exe)
        .arg("--hold-fence")
        .arg(fence.as_raw_fd().to_string())
        .spawn()
        .map_err(e2s)?;
    drop(fence);
    // Exit with every object alive: the kernel closes the file.
    std::process::exit(0);
}

/// Partial unmaps of 2 MiB blocks through the GPU: the middle of one block, the front and the
/// back of the next. The rest of each block is mapped back with pages and keeps its data, the
/// holes fault, and mapping the holes again makes them reachable.
pub fn exec_partial_unmaps_of_2m_blocks(d: &Device) -> TestResult {
    const VA: u64 = 0x4000_0000;
    const RESULTS: u64 = CMD_SIZE / 2;
    let huge = crate::vm::ShmemHugePages::force()?;
    let c = Ctx::new(d)?;
    let bo = Bo::new(d, 2 * SZ_2M, SYSTEM, c.vm).map_err(e2s)?;
    let bytes: Vec<u8> = (0..2 * SZ_2M / 8)
        .flat_map(|i| (0xb10c_0000_0000_0000u64 | i).to_le_bytes())
        .collect();
    let m = bo.mmap().map_err(e2s)?;
    m.write(0, &bytes).map_err(e2s)?;
    drop(huge);
    c.map(&bo, 0, VA, 2 * SZ_2M, 0)?;
    let cmd_pages = CMD_SIZE / SZ_4K;
    let dbg = crate::vm::vm_debug(c.vm)?;
    check!(
        dbg.leaves == [0, 2, cmd_pages],
        "a 2 MiB-aligned map of 2 MiB folios got leaves {:?}, not two blocks",
        dbg.leaves
    );

    // BO offsets of the holes.
    let holes = [SZ_2M / 2, SZ_2M, 2 * SZ_2M - SZ_4K];
    let ops: Vec<_> = holes
        .iter()
        .map(|&h| DrmMirageVmBindOp::unmap(VA + h, SZ_4K))
        .collect();
    d.vm_bind(c.vm, 0, &ops, &[]).map_err(e2s)?;
    let dbg = crate::vm::vm_debug(c.vm)?;
    let pages = (2 * SZ_2M / SZ_4K) - holes.len() as u64;
    check!(
        dbg.leaves == [0, 0, pages + cmd_pages],
        "after the partial unmaps: leaves {:?}",
        dbg.leaves
    );

    // What is left, checksummed by the GPU, then a store next to each side of each hole.
    let pieces = [
        (0, SZ_2M / 2),
        (SZ_2M / 2 + SZ_4K, SZ_2M),
        (SZ_2M + SZ_4K, 2 * SZ_2M - SZ_4K),
    ];
    let mut cb = CmdBuf::new();
    for (i, &(s, e)) in pieces.iter().enumerate() {
        cb.checksum(VA + s, e - s, CMD_VA + RESULTS + 8 * i as u64);
    }
    let neighbours = [
        SZ_2M / 2 - 8,
        SZ_2M / 2 + SZ_4K,
        SZ_2M + SZ_4K,
        2 * SZ_2M - SZ_4K - 8,
    ];
    for (i, &n) in neighbours.iter().enumerate() {
        cb.store64(VA + n, 0x4e16_4b00 + i as u64);
    }
    cb.end();
    let status = c.run(&cb)?;
    check!(
        status == 0,
        "the job over what is left failed with {status}"
    );
    let cmd = c.cmd.mmap().map_err(e2s)?;
    for (i, &(s, e)) in pieces.iter().enumerate() {
        let got = cmd
            .read_u64((RESULTS + 8 * i as u64) as usize)
            .map_err(e2s)?;
        check!(
            got == mirage::cmd::fnv1a64(&bytes[s as usize..e as usize]),
            "the GPU reads other bytes through {:#x}..{:#x}",
            VA + s,
            VA + e
        );
    }
    for (i, &n) in neighbours.iter().enumerate() {
        let v = m.read_u64(n as usize).map_err(e2s)?;
        check!(
            v == 0x4e16_4b00 + i as u64,
            "store next to a hole at {n:#x} read {v:#x}"
        );
    }

    // Each hole faults, and the GPU wrote nothing there.
    for &h in &holes {
        let mut cb = CmdBuf::new();
        cb.store64(VA + h + 8, 0xbad).end();
        let status = c.run(&cb)?;
        check!(
            status == -libc::EIO,
            "a store into the hole at {:#x} ended with {status}",
            VA + h
        );
        let v = m.read_u64(h as usize + 8).map_err(e2s)?;
        check!(
            v == 0xb10c_0000_0000_0000 | ((h + 8) / 8),
            "the hole at {h:#x} was written: {v:#x}"
        );
    }

    // Mapped again, the holes are reachable.
    let ops: Vec<_> = holes
        .iter()
        .map(|&h| DrmMirageVmBindOp::map(bo.handle(), h, VA + h, SZ_4K))
        .collect();
    d.vm_bind(c.vm, 0, &ops, &[]).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    for &h in &holes {
        cb.store64(VA + h + 16, 0x600d_0000 | h);
    }
    cb.end();
    let status = c.run(&cb)?;
    check!(
        status == 0,
        "stores into the mapped-again holes ended with {status}"
    );
    for &h in &holes {
        let v = m.read_u64(h as usize + 16).map_err(e2s)?;
        check!(
            v == 0x600d_0000 | h,
            "mapped-again hole at {h:#x} read {v:#x}"
        );
    }
    Ok(())
}
