// SPDX-License-Identifier: GPL-2.0 or MIT

//! Exec queues and `DRM_IOCTL_MIRAGE_EXEC`.
//!
//! An exec queue is a [`JobQueue`] with one credit: its jobs run one after another, each once
//! its in-fences signalled. A job that is ready goes to the device through [`Gpu::submit`],
//! with a hardware fence that the interrupt thread signals when the job's completion record is
//! written; the job queue then signals the job's fence with that fence's result.

use kernel::{
    dma_buf::{
        fence::{Fence, FenceContext, FenceOps, PreparedFence},
        resv::Usage,
    },
    drm::{
        exec::{Exec, Flag},
        job_queue::{JobQueue, JobQueueOps, TimeoutAction},
    },
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc,
    },
    time::Delta,
    uapi,
};

use crate::{
    file::DrmFile,
    gpu::{Gpu, HwFenceOps, Submission},
    syncs::Syncs,
    vm::{queue::BindQueue, Vm},
};

/// The fences of jobs, as userspace sees them.
pub(crate) struct JobFenceOps;

impl FenceOps for JobFenceOps {
    const DRIVER_NAME: &'static CStr = c"mirage";
}

/// What an exec queue does with its jobs.
pub(crate) struct ExecOps {
    gpu: Arc<Gpu>,
    /// Identifies the queue to the [`Gpu`].
    id: u64,
    /// The hardware fences of the queue's jobs, which end in order: one runs at a time.
    hw_fences: Arc<FenceContext<HwFenceOps, ()>>,
}

/// A job of an exec queue.
pub(crate) struct ExecJob {
    /// Keeps the VM, its page table and its mappings until the job's fence signalled.
    vm: Arc<Vm>,
    addr: u64,
    len: u32,
    /// Allocated by the ioctl, published when the job starts.
    hw_fence: HwFenceSlot,
    /// Its resolved faults when the timeout last looked.
    resumed: Atomic<u64>,
    /// Timeout periods it was given for the faults resolved in them.
    extended: Atomic<u32>,
}

/// The timeout periods a job may be given for resolved faults, past its first: its fence
/// still signals within `1 + MAX_EXTENSIONS` timeouts, whatever userspace does to its memory
/// (a process that invalidates a running job's pages forever would otherwise hold it).
const MAX_EXTENSIONS: u32 = 9;

/// The hardware fence of a job until it starts.
struct HwFenceSlot(Option<PreparedFence<()>>);

// SAFETY: A shared reference to the slot gives no access to the fence: only `&mut` does
// (`JobQueueOps::run` takes the job by `&mut`), so sharing it across threads shares nothing.
unsafe impl Sync for HwFenceSlot {}

impl JobQueueOps for ExecOps {
    type FenceOps = JobFenceOps;
    type Job = ExecJob;

    fn run(&self, job: &mut ExecJob) -> Result<ARef<Fence>> {
        let prepared = job.hw_fence.0.take().ok_or(EINVAL)?;
        let (done, fence) = FenceContext::publish_owned(&self.hw_fences, prepared);
        self.gpu.submit(
            self.id,
            Submission {
                vm: job.vm.hw(),
                addr: job.addr,
                len: job.len,
                done,
                faults: job.vm.fault_mode().then(|| job.vm.clone()),
            },
        );
        Ok(fence)
    }

    fn timed_out(&self, job: &ExecJob) -> TimeoutAction {
        // A job of a fault-mode VM whose faults the driver resolved since the last look made
        // progress: the time it stalled is the driver's, which services one fault at a time.
        // One that stalls on a fault nobody resolves (a service stuck behind a lock) is killed.
        if let Some(n) = self.gpu.resumed(self.id) {
            if job.resumed.xchg(n, Relaxed) != n
                && job.extended.fetch_add(1, Relaxed) < MAX_EXTENSIONS
            {
                return TimeoutAction::Continue;
            }
        }
        // The job ran past the timeout: reset its device queue, and refuse the queue's next
        // jobs (xe bans a queue whose job hung).
        self.gpu.kill(self.id);
        TimeoutAction::KillAndBan
    }
}

static NEXT_ID: Atomic<u64> = Atomic::new(1);

/// An exec queue of class COMPUTE.
pub(crate) struct ExecQueue {
    /// `None` only while dropping.
    jobs: Option<JobQueue<ExecOps>>,
    /// Where the queue's EXECs rebind the VM's invalidated userptrs.
    rebinds: BindQueue<Gpu>,
    vm: Arc<Vm>,
    gpu: Arc<Gpu>,
}

impl ExecQueue {
    pub(crate) fn new(gpu: &Arc<Gpu>, vm: Arc<Vm>, timeout: Delta) -> Result<Self> {
        gpu.add_exec_queue()?;
        let ops = ExecOps {
            gpu: gpu.clone(),
            id: NEXT_ID.fetch_add(1, Relaxed),
            hw_fences: Arc::new(FenceContext::new(c"mirage-hw"), GFP_KERNEL)
                .inspect_err(|_| gpu.remove_exec_queue())?,
        };
        let jobs = JobQueue::new(c"mirage-exec", ops, 1, timeout)
            .inspect_err(|_| gpu.remove_exec_queue())?;
        let rebinds = BindQueue::new(vm.clone()).inspect_err(|_| gpu.remove_exec_queue())?;
        Ok(Self {
            jobs: Some(jobs),
            rebinds,
            vm,
            gpu: gpu.clone(),
        })
    }

    fn jobs(&self) -> Result<&JobQueue<ExecOps>> {
        self.jobs.as_ref().ok_or(ENOENT)
    }

    /// Submits the command buffer at `addr`, after `syncs`' in-fences; returns the job's fence.
    ///
    /// The VM's userptrs must map their current pages when the job runs: this is the
    /// sequence of `Documentation/gpu/drm-vm-bind-locking.rst`, over the userptrs invalidated
    /// since the last EXEC only. It faults them in (under the VM lock), locks the reservation
    /// objects, rebinds them, then checks, holding the notifier lock until the job's fence is
    /// in the VM's reservation object, that no invalidation came meanwhile; if one did, it
    /// starts again.
    pub(crate) fn submit(&self, addr: u64, len: u32, syncs: &Syncs) -> Result<ARef<Fence>> {
        let jobs = self.jobs()?;
        if jobs.is_banned() {
            return Err(ECANCELED);
        }
        // xe's contract: a VM that failed behind userspace's back takes no new work.
        if !self.vm.is_usable() {
            return Err(ENOENT);
        }
        let hw_fence = jobs.ops().hw_fences.prepare((), GFP_KERNEL)?;
        let mut job = jobs.prepare(
            ExecJob {
                vm: self.vm.clone(),
                addr,
                len,
                hw_fence: HwFenceSlot(Some(hw_fence)),
                resumed: Atomic::new(0),
                extended: Atomic::new(0),
            },
            1,
            syncs.wait_fences(),
        )?;

        let gpuvm = self.vm.gpuvm();
        loop {
            // Invalidations that keep hitting the userptrs can keep EXEC retrying: let a
            // signal end it.
            if kernel::current!().signal_pending() {
                return Err(ERESTARTSYS);
            }
            // Takes the mmap lock: before any reservation object.
            let mut revalidation = self.vm.fault_userptrs()?;

            // Lock the VM's reservation object and its external BOs' for the job's fence, and
            // the VM's for a rebind's.
            let mut exec =
                KBox::pin_init(Exec::new(Flag::InterruptibleWait.into(), 0), GFP_KERNEL)?;
            exec.as_mut().lock_all(|locker| {
                gpuvm.prepare_vm(locker, 2)?;
                gpuvm.prepare_objects(locker, 1)
            })?;
            if let Some(r) = revalidation.as_mut() {
                if let Some(rebind) = self.vm.rebind(r, &self.rebinds)? {
                    // KERNEL usage: this job and every later one of the VM wait for it.
                    exec.add_fence(self.vm.resv_root(), &rebind, Usage::Kernel)?;
                }
            }
            // Implicit synchronisation: the job may write any external BO, so it waits for
            // their readers and writers (and for kernel work on any of them, such as
            // rebinds); BOOKKEEP fences, such as other jobs of this VM, do not order it.
            exec.for_each_fence(Usage::Read, |fence| job.add_dependency(fence))?;

            let delay = self.gpu.take_exec_check_delay();
            if delay != 0 {
                kernel::time::delay::fsleep(Delta::from_millis(i64::from(delay)));
            }
            let notifiers = self.vm.notifiers();
            let lock = notifiers.read();
            if !self.vm.userptrs_current(&lock, revalidation.as_ref()) {
                continue;
            }
            let fence = jobs.commit(job);
            // Cannot fail: every object locked above has a slot reserved for it.
            if gpuvm
                .resv_add_fence(&exec, &fence, Usage::Bookkeep, Usage::Write)
                .is_err()
            {
                kernel::warn_on!(true);
            }
            // The job is in the VM's reservation object: an invalidation waits for it now.
            drop(lock);
            drop(exec);
            drop(revalidation);
            return Ok(fence);
        }
    }
}

impl Drop for ExecQueue {
    fn drop(&mut self) {
        // Waits for the job on the device; jobs not started are cancelled.
        drop(self.jobs.take());
        self.gpu.remove_exec_queue();
    }
}

/// Checks `DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE`'s arguments.
pub(crate) fn check_create(args: &uapi::drm_mirage_exec_queue_create) -> Result {
    if args.extensions != 0 || args.flags != 0 || args.pad != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    if args.engine_class != uapi::drm_mirage_engine_class_DRM_MIRAGE_ENGINE_CLASS_COMPUTE
        && args.engine_class != uapi::drm_mirage_engine_class_DRM_MIRAGE_ENGINE_CLASS_VM_BIND
    {
        return Err(EINVAL);
    }
    match args.priority {
        uapi::drm_mirage_exec_queue_priority_DRM_MIRAGE_EXEC_QUEUE_PRIORITY_LOW
        | uapi::drm_mirage_exec_queue_priority_DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL => Ok(()),
        uapi::drm_mirage_exec_queue_priority_DRM_MIRAGE_EXEC_QUEUE_PRIORITY_HIGH => {
            // SAFETY: `capable` only reads the current task's credentials.
            if unsafe { kernel::bindings::capable(kernel::bindings::CAP_SYS_NICE as i32) } {
                Ok(())
            } else {
                Err(EPERM)
            }
        }
        _ => Err(EINVAL),
    }
}

/// `DRM_IOCTL_MIRAGE_EXEC`.
pub(crate) fn exec(args: &mut uapi::drm_mirage_exec, file: &DrmFile) -> Result<u32> {
    if args.extensions != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    if args.length == 0 || args.length % 8 != 0 || args.length > u64::from(u32::MAX - 7) {
        return Err(EINVAL);
    }
    let queue = file.inner().exec_queue(args.exec_queue_id)?;
    let syncs = Syncs::parse(file, args.syncs, args.num_syncs)?;
    let fence = queue.submit(args.address, args.length as u32, &syncs)?;
    syncs.signal(&fence);
    Ok(0)
}
