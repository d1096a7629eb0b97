// SPDX-License-Identifier: GPL-2.0 or MIT

//! Bind queues: where binds wait for their in-fences, then execute, one after another.
//!
//! A bind queue is a [`JobQueue`] with one credit whose jobs are binds submitted by
//! [`VmCore::submit`]: the VA tree changed already, the tables are reserved, and the job's run
//! step only executes the page-table work. A bind runs even if an in-fence signalled an error:
//! the VA tree already says it happened.
//!
//! A bind that does not execute (its queue went first, or it failed) leaves its BOs to the VM:
//! the page table may still map them, and does until the VM goes.

use core::marker::PhantomData;
use kernel::{
    dma_buf::fence::{Fence, FenceOps},
    drm::job_queue::{JobQueue, JobQueueOps, TimeoutAction},
    list::{impl_list_arc_safe, impl_list_item, ListArc, ListLinks},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, UniqueArc,
    },
    time::Delta,
};

use super::{Backend, BindOp, PtWork, Submitted, VmCore};

/// The fences of binds, as userspace sees them.
pub(crate) struct BindFenceOps;

impl FenceOps for BindFenceOps {
    const DRIVER_NAME: &'static CStr = c"mirage";
}

/// The BOs a bind keeps until it executed: those it maps, and those of the mappings it removes
/// or cuts, which the page table maps until then.
#[pin_data]
pub(crate) struct Held<B: Backend> {
    #[pin]
    links: ListLinks,
    objects: KVec<ARef<B::Object>>,
}

impl_list_arc_safe! {
    impl{B: Backend} ListArcSafe<0> for Held<B> { untracked; }
}
impl_list_item! {
    impl{B: Backend} ListItem<0> for Held<B> { using ListLinks { self.links }; }
}

impl<B: Backend> Held<B> {
    /// Room for `capacity` BOs, so that holding them later allocates nothing.
    pub(super) fn new(capacity: usize) -> Result<Pin<UniqueArc<Self>>> {
        let objects = KVec::with_capacity(capacity, GFP_KERNEL)?;
        UniqueArc::pin_init(
            try_pin_init!(Self {
                links <- ListLinks::new(),
                objects,
            }),
            GFP_KERNEL,
        )
    }

    pub(super) fn push(self: Pin<&mut Self>, bo: ARef<B::Object>) -> Result {
        self.project().objects.push(bo, GFP_KERNEL)?;
        Ok(())
    }
}

/// A bind, from its submission until its fence signalled.
pub(crate) struct BindJob<B: Backend> {
    vm: Arc<VmCore<B>>,
    work: KVec<PtWork>,
    /// `None` once given to the VM.
    held: Option<Pin<UniqueArc<Held<B>>>>,
    /// The VA tree has the bind's changes: from here on, it must execute or be abandoned.
    committed: bool,
    executed: bool,
    /// The userptrs a rebind maps, by id; `None` for binds.
    rebinds: Option<KVec<u32>>,
}

impl<B: Backend> BindJob<B> {
    pub(super) fn new(
        vm: Arc<VmCore<B>>,
        work: KVec<PtWork>,
        held: Pin<UniqueArc<Held<B>>>,
    ) -> Self {
        Self {
            vm,
            work,
            held: Some(held),
            committed: false,
            executed: false,
            rebinds: None,
        }
    }

    /// A rebind of userptrs `ids` whose pages changed: the VA tree stays as it is.
    pub(super) fn rebind(vm: Arc<VmCore<B>>, work: KVec<PtWork>, ids: KVec<u32>) -> Result<Self> {
        let mut job = Self::new(vm, work, Held::new(0)?);
        job.rebinds = Some(ids);
        Ok(job)
    }

    pub(super) fn work(&self) -> &[PtWork] {
        &self.work
    }

    /// Where the BOs of the mappings the bind removes go.
    pub(super) fn held_mut(&mut self) -> Option<&mut KVec<ARef<B::Object>>> {
        self.held.as_mut().map(|h| h.as_mut().project().objects)
    }

    pub(super) fn committed(&mut self) {
        self.committed = true;
    }
}

impl<B: Backend> Drop for BindJob<B> {
    fn drop(&mut self) {
        if self.committed && !self.executed {
            match self.rebinds.take() {
                // The VA tree is right; the page table maps old pages, as before the rebind.
                Some(ids) => self.vm.rebind_cancelled(&ids),
                None => self.vm.abandon(self.held.take().map(ListArc::from)),
            }
        }
    }
}

/// What a bind queue does with its jobs.
pub(crate) struct BindOps<B>(PhantomData<fn() -> B>);

impl<B: Backend> JobQueueOps for BindOps<B> {
    type FenceOps = BindFenceOps;
    type Job = BindJob<B>;

    const RUN_AFTER_FAILED_DEPENDENCY: bool = true;

    fn run(&self, job: &mut BindJob<B>) -> Result<ARef<Fence>> {
        job.vm.execute(&job.work)?;
        job.executed = true;
        // Done on the CPU: nothing is left for the device.
        Ok(Fence::signalled())
    }

    fn timed_out(&self, _job: &BindJob<B>) -> TimeoutAction {
        // A bind's run step finishes it: nothing of it runs on the device.
        TimeoutAction::Continue
    }
}

static NEXT_ID: Atomic<u64> = Atomic::new(1);

/// A bind queue of a VM: the VM's default one, or one made with `EXEC_QUEUE_CREATE`.
pub(crate) struct BindQueue<B: Backend> {
    /// `None` only while dropping.
    jobs: Option<JobQueue<BindOps<B>>>,
    vm: Arc<VmCore<B>>,
    /// Tells the VM which pending binds are this queue's.
    id: u64,
}

/// As long as a wait for a fence can take: userspace asked for it, and a signal interrupts it.
const FOREVER: Delta = Delta::from_secs(u32::MAX as i64);

impl<B: Backend> BindQueue<B> {
    pub(crate) fn new(vm: Arc<VmCore<B>>) -> Result<Self> {
        // Binds finish in their run step, so the timeout never fires.
        let jobs = JobQueue::new(
            c"mirage-bind",
            BindOps(PhantomData),
            1,
            Delta::from_secs(60),
        )?;
        Ok(Self {
            jobs: Some(jobs),
            vm,
            id: NEXT_ID.fetch_add(1, Relaxed),
        })
    }

    pub(crate) fn vm(&self) -> &Arc<VmCore<B>> {
        &self.vm
    }

    /// The job queue, and the id the VM knows the queue by.
    pub(super) fn jobs(&self) -> Result<(&JobQueue<BindOps<B>>, u64)> {
        Ok((self.jobs.as_ref().ok_or(ENOENT)?, self.id))
    }

    /// Submits `ops` to execute after `waits`; returns the bind's fence.
    ///
    /// A synchronous bind (`sync`) first waits, interruptibly, for what it depends on, then
    /// executes and returns its result once its fence signalled.
    pub(crate) fn bind(
        &self,
        mut ops: KVec<BindOp<B>>,
        waits: &[ARef<Fence>],
        sync: bool,
    ) -> Result<ARef<Fence>> {
        let jobs = self.jobs.as_ref().ok_or(ENOENT)?;
        loop {
            match self.vm.submit(jobs, self.id, ops, waits, sync)? {
                Submitted::Queued(fence) => {
                    if sync {
                        // Nothing it depends on was pending: it executes at once.
                        fence.wait(false, FOREVER)?;
                        if let Some(Err(e)) = fence.status() {
                            return Err(e);
                        }
                    }
                    return Ok(fence);
                }
                Submitted::WaitFirst(deps, back) => {
                    for f in deps.iter() {
                        f.wait(true, FOREVER)?;
                    }
                    ops = back;
                }
            }
        }
    }
}

impl<B: Backend> Drop for BindQueue<B> {
    fn drop(&mut self) {
        self.vm.closing(self.id);
        // Cancels the binds that did not execute, and waits until every fence signalled and
        // every job was dropped.
        drop(self.jobs.take());
        self.vm.reap();
    }
}
