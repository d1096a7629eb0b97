// SPDX-License-Identifier: GPL-2.0 or MIT

//! GPU VMs: a drm_gpuvm VA tree, a page table, and the binds that change them.
//!
//! A bind is *submitted* by the ioctl, then *executed* by a job of a bind queue
//! ([`queue::BindQueue`]), once its in-fences signalled.
//!
//! Submission, under the VM lock, may sleep, allocate and fail: it checks every op, takes what
//! each needs (the BO's `drm_gpuvm_bo` and VA nodes; its DMA segments come with the op), runs
//! the page-table work of the ops over a dry run that starts where every bind submitted before
//! leaves the page table (an [`Overlay`]), and reserves exactly the tables it counts. Then, with
//! nothing left that can fail, it updates the VA tree and queues the job. A failed submission
//! leaves the VM as it was. So the VA tree is always the VM as userspace has asked for it, and
//! later binds and EXECs can be submitted against it at once.
//!
//! Execution, in a `dma_fence` signalling section, changes the page table from the reservation
//! and invalidates the TLB: it can no longer fail for lack of memory, and allocates nothing.
//! A bind executes after the binds of its queue submitted before it, after the binds of other
//! queues whose ranges overlap its own, and, if it removes mappings, after every job of the VM
//! submitted before it (the GPU may be using them). Binds that do not overlap commute: the
//! tables they create add up to the same count in any order (the `mirage_pgtable` KUnit suite
//! checks it), so one pool per VM serves them all.
//!
//! Locks, outermost first (`Documentation/gpu/mirage.rst`): the VM's lock (`state`), which
//! protects the VA tree, the overlay and the list of pending binds, and, through drm_gpuvm, the
//! external-object list; the VM's `dma_resv` (taken inside drm_gpuvm for the external-object
//! list, by EXEC, and by a bind that looks for the jobs it must wait for); the page-table lock
//! (`pt`), which is never held while allocating, so that a signalling section may take it.

use core::{marker::PhantomData, ops::Range};
use kernel::{
    dma_buf::{
        fence::{Fence, SignallingSection},
        resv::{DmaResv, Usage},
    },
    drm::{
        self,
        gem::{BaseObject, IntoGEMObject},
        gpuvm::{
            DriverGpuVm, GpuVaAlloc, GpuVm, GpuVmBo, OpMap, OpMapRequest, OpMapped, OpRemap,
            OpRemapped, OpUnmap, OpUnmapped, UniqueRefGpuVm,
        },
        job_queue::JobQueue,
    },
    iommu::pgtable::prot,
    list::{List, ListArc},
    new_mutex, new_spinlock,
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLock,
    },
};

use crate::{
    driver::{MirageDevice, MirageDriver},
    gem::{self, Bo},
    gpu::{Gpu, VmHw},
    mmu::{
        budget::{Budget, Overlay},
        pgtable::PageTable,
        pool::PtPool,
        walker::{count_leaves, map_contiguous, unmap_range, PtOps, SZ_4K},
    },
};

pub(crate) mod queue;
#[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
mod tests;

use queue::{BindJob, BindOps, Held};

/// What a VM needs from the device that runs it and from the BOs it maps.
///
/// The driver's is the [`Gpu`]; the KUnit suite has one without hardware, so that it runs the
/// same bind code over a faux DRM device.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The DRM driver of the VM's device.
    type Driver: drm::Driver;
    /// The BOs the VM maps.
    type Object: drm::driver::AllocImpl<Driver = Self::Driver> + AlwaysRefCounted + Send + Sync;

    /// A BO that nothing maps, whose reservation object the VM's private BOs share.
    fn new_resv_root(dev: &drm::Device<Self::Driver>) -> Result<ARef<Self::Object>>;

    /// The serial number of the VM `bo` is private to, or 0.
    fn private_vm(bo: &Self::Object) -> u64;

    /// Invalidates the TLB for `[start, end)` of VM `serial`: when it returns, the device no
    /// longer uses what was mapped there.
    fn flush(&self, serial: u64, start: u64, end: u64);

    /// Takes VM `serial` out of the device; it has no job running.
    fn evict(&self, serial: u64);

    /// Whether the next page-table reservation must fail, for tests.
    fn fail_reserve(&self) -> bool;

    /// Whether the next bind to execute must fail, for tests of the error contract.
    fn fail_bind_run(&self) -> bool {
        false
    }

    /// Whether the next bind must allocate inside its signalling section, a violation that
    /// lockdep must report; for tests.
    fn alloc_in_signalling(&self) -> bool {
        false
    }
}

impl Backend for Gpu {
    type Driver = MirageDriver;
    type Object = Bo;

    fn new_resv_root(dev: &MirageDevice) -> Result<ARef<Bo>> {
        gem::new_resv_root(dev)
    }

    fn private_vm(bo: &Bo) -> u64 {
        bo.private_vm()
    }

    fn flush(&self, serial: u64, start: u64, end: u64) {
        Gpu::flush(self, serial, start, end)
    }

    fn evict(&self, serial: u64) {
        Gpu::evict(self, serial)
    }

    fn fail_reserve(&self) -> bool {
        self.inject_reserve_failure()
    }

    fn fail_bind_run(&self) -> bool {
        self.inject_bind_run_failure()
    }

    fn alloc_in_signalling(&self) -> bool {
        self.inject_alloc_in_signalling()
    }
}

/// A VM of the mirage device.
pub(crate) type Vm = VmCore<Gpu>;

/// VA nodes an op may need: one for the new mapping and two for the pieces of split mappings
/// (a remap takes two and gives one back when it keeps one side only).
const VAS_PER_OP: usize = 3;

/// The drm_gpuvm driver type of mirage VMs.
pub(crate) struct VmData<B>(PhantomData<fn() -> B>);

/// VA nodes reserved for one op, handed out by the drm_gpuvm callbacks.
pub(crate) struct VaAllocs<B: Backend>(KVec<GpuVaAlloc<VmData<B>>>);

impl<B: Backend> VaAllocs<B> {
    fn new(n: usize) -> Result<Self> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(GpuVaAlloc::new(GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(Self(v))
    }

    fn take(&mut self) -> Result<GpuVaAlloc<VmData<B>>> {
        // Submission reserved enough for any op; running out is a driver bug.
        self.0.pop().ok_or_else(|| {
            kernel::warn_on!(true);
            ENOMEM
        })
    }

    fn give(&mut self, va: GpuVaAlloc<VmData<B>>) {
        // There is room: the node came from here.
        let _ = self.0.push_within_capacity(va);
    }
}

/// What the drm_gpuvm callbacks of one op work with.
pub(crate) struct SmCtx<'a, B: Backend> {
    vas: &'a mut VaAllocs<B>,
    /// Where the BOs of the mappings the op removes or cuts go: the page table maps them until
    /// the bind executes. `None` when the page table goes too (VM teardown).
    held: Option<&'a mut KVec<ARef<B::Object>>>,
    /// VAs inserted minus VAs removed.
    added: isize,
}

impl<B: Backend> SmCtx<'_, B> {
    fn hold(&mut self, bo: &B::Object) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if let Err(e) = held.push_within_capacity(ARef::from(bo)) {
            // Submission made room for every VA the tree can lose. Keep the BO forever rather
            // than free pages the GPU may still reach.
            kernel::warn_on!(true);
            core::mem::forget(e);
        }
    }
}

impl<B: Backend> DriverGpuVm for VmData<B> {
    type Driver = B::Driver;
    type Object = B::Object;
    type VaData = ();
    type VmBoData = ();
    type SmContext<'ctx> = SmCtx<'ctx, B>;

    // The callbacks update the VA tree only: the page-table work of an op does not depend on
    // how drm_gpuvm splits it.
    fn sm_step_map<'op>(
        &mut self,
        op: OpMap<'op, Self>,
        ctx: &mut SmCtx<'_, B>,
    ) -> Result<OpMapped<'op, Self>> {
        let va = ctx.vas.take()?;
        ctx.added += 1;
        Ok(op.insert(va, pin_init::init_zeroed()))
    }

    fn sm_step_unmap<'op>(
        &mut self,
        op: OpUnmap<'op, Self>,
        ctx: &mut SmCtx<'_, B>,
    ) -> Result<OpUnmapped<'op, Self>> {
        ctx.hold(op.va().obj());
        let (done, _removed) = op.remove();
        ctx.added -= 1;
        Ok(done)
    }

    fn sm_step_remap<'op>(
        &mut self,
        op: OpRemap<'op, Self>,
        ctx: &mut SmCtx<'_, B>,
    ) -> Result<OpRemapped<'op, Self>> {
        ctx.hold(op.obj());
        let pair = [ctx.vas.take()?, ctx.vas.take()?];
        let (done, ret) = op.remap(pair, pin_init::init_zeroed(), pin_init::init_zeroed());
        // One VA out, one or two in.
        ctx.added += 1;
        if let Some(unused) = ret.unused_va {
            ctx.vas.give(unused);
            ctx.added -= 1;
        }
        Ok(done)
    }
}

/// One checked op of a bind.
pub(crate) enum BindOp<B: Backend = Gpu> {
    Map {
        range: Range<u64>,
        bo: ARef<B::Object>,
        offset: u64,
        prot: u32,
        /// The bus addresses of `[offset, offset + range length)` of `bo`, as
        /// [`gem::segments`] gives them.
        segments: KVec<(u64, u64)>,
    },
    Unmap {
        range: Range<u64>,
    },
    UnmapAll {
        bo: ARef<B::Object>,
    },
}

/// The page-table work of one op: what the bind job does when it executes.
pub(crate) enum PtWork {
    /// Unmaps `range`, then maps the segments there.
    Map {
        range: Range<u64>,
        prot: u32,
        segments: KVec<(u64, u64)>,
    },
    Unmap {
        range: Range<u64>,
    },
}

impl PtWork {
    fn range(&self) -> &Range<u64> {
        match self {
            PtWork::Map { range, .. } | PtWork::Unmap { range } => range,
        }
    }
}

/// The VA-tree side of an op, with everything it needs.
enum TreeOp<B: Backend> {
    Map {
        range: Range<u64>,
        offset: u64,
        vm_bo: ARef<GpuVmBo<VmData<B>>>,
        vas: VaAllocs<B>,
    },
    /// UNMAP, and each mapping UNMAP_ALL removes.
    Unmap {
        ranges: KVec<Range<u64>>,
        vas: VaAllocs<B>,
    },
}

/// A submitted bind whose fence may not have signalled.
struct Pending {
    queue: u64,
    fence: ARef<Fence>,
    ranges: KVec<Range<u64>>,
}

/// What the VM lock protects.
struct VmState<B: Backend> {
    gpuvm: UniqueRefGpuVm<VmData<B>>,
    /// The page table as the binds submitted so far leave it, where the real one differs or
    /// will.
    future: Overlay,
    /// The binds submitted and maybe not executed, oldest first.
    pending: KVec<Pending>,
    /// VAs in the tree.
    vas: usize,
}

/// What [`VmCore::submit`] did.
pub(crate) enum Submitted<B: Backend> {
    /// The bind is queued; its fence.
    Queued(ARef<Fence>),
    /// A synchronous bind must first wait for these fences; here are its ops back.
    WaitFirst(KVec<ARef<Fence>>, KVec<BindOp<B>>),
}

static NEXT_SERIAL: Atomic<u64> = Atomic::new(1);

/// A GPU VM, run by the device `B`.
#[pin_data(PinnedDrop)]
pub(crate) struct VmCore<B: Backend> {
    /// For `obtain` and `deferred_cleanup`, which need no VM lock.
    gpuvm: ARef<GpuVm<VmData<B>>>,
    /// The VM lock.
    #[pin]
    state: Mutex<VmState<B>>,
    /// The page-table lock.
    #[pin]
    pt: Mutex<PageTable>,
    pool: Arc<PtPool>,
    /// The BOs of binds that did not execute: the page table may still map them, so they stay
    /// until the VM goes.
    #[pin]
    graveyard: SpinLock<List<Held<B>>>,
    /// The reservation object's root: VM-private BOs share its `dma_resv`.
    root: ARef<B::Object>,
    /// Identifies the VM to the BOs private to it.
    serial: u64,
    va_end: u64,
    pgsizes: u64,
    usable: Atomic<bool>,
    /// A bind did not execute (cancelled, or failed): tables reserved for it are left over.
    abandoned: Atomic<bool>,
    /// The device, which runs the VM's jobs in one of its address spaces.
    gpu: Arc<B>,
    /// The page table's root and attributes, as the device needs them; they never change.
    ttbr: u64,
    mair: u64,
}

impl<B: Backend> VmCore<B> {
    pub(crate) fn new(
        dev: &drm::Device<B::Driver>,
        gpu: &Arc<B>,
        va_bits: u32,
        pgsizes: u64,
    ) -> Result<Arc<Self>> {
        let root = B::new_resv_root(dev)?;
        let pool = Arc::new(PtPool::new()?, GFP_KERNEL)?;
        // The level-0 table is allocated when the page table is created.
        pool.reserve(1)?;
        pool.refill_standing()?;
        let pt = PageTable::new(pool.clone(), va_bits, pgsizes)?;
        let va_end = 1u64 << va_bits;
        let unique =
            GpuVm::new::<Error, _>(c"mirage", dev, &*root, 0..va_end, 0..0, VmData(PhantomData))?;
        let shared = ARef::from(&*unique);
        let pgsizes = pt.pgsizes();
        // SAFETY: The VM leaves the device's address space before its page table goes (see
        // `drop`), and jobs, which hold the VM, end first.
        let ttbr = unsafe { pt.ttbr() };
        let mair = pt.mair();
        Arc::pin_init(
            try_pin_init!(Self {
                gpuvm: shared,
                state <- new_mutex!(VmState {
                    gpuvm: unique,
                    future: Overlay::new(),
                    pending: KVec::new(),
                    vas: 0,
                }),
                pt <- new_mutex!(pt),
                pool,
                graveyard <- new_spinlock!(List::new()),
                root,
                serial: NEXT_SERIAL.fetch_add(1, Relaxed),
                va_end,
                pgsizes,
                usable: Atomic::new(true),
                abandoned: Atomic::new(false),
                gpu: gpu.clone(),
                ttbr,
                mair,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    pub(crate) fn resv_root(&self) -> &B::Object {
        &self.root
    }

    /// What the device needs to run the VM's jobs.
    pub(crate) fn hw(&self) -> VmHw {
        VmHw {
            serial: self.serial,
            ttbr: self.ttbr,
            mair: self.mair,
        }
    }

    /// The VM's drm_gpuvm, for locking its reservation objects.
    pub(crate) fn gpuvm(&self) -> &GpuVm<VmData<B>> {
        &self.gpuvm
    }

    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Relaxed)
    }

    /// The VM's reservation object.
    fn resv(&self) -> &DmaResv {
        // SAFETY: A GEM object's `resv` points at its reservation object (or the one it
        // shares) from creation until it is freed, and the VM holds `root`.
        unsafe { DmaResv::from_raw((*self.root.as_raw()).resv) }
    }

    /// Writes the pool's counters and the VA tree, for debugfs.
    pub(crate) fn show(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        let s = self.pool.stats();
        writeln!(
            f,
            "pool reserved {} used {} returned {} live {} exhausted {} unused {} cancelled {} \
             available {}",
            s.reserved,
            s.used,
            s.returned,
            s.live,
            s.exhausted,
            s.unused,
            s.cancelled,
            self.pool.available()
        )?;
        let state = self.state.lock();
        let leaves = count_leaves(&*self.pt.lock(), self.va_end);
        writeln!(
            f,
            "pt leaves 1g {} 2m {} 4k {}",
            leaves[1], leaves[2], leaves[3]
        )?;
        let mut res = Ok(());
        state.gpuvm.for_each_va(0..self.va_end, |va| {
            if res.is_ok() {
                res = writeln!(
                    f,
                    "va {:#x} {:#x} offset {:#x}",
                    va.addr(),
                    va.addr() + va.length(),
                    va.gem_offset()
                );
            }
        });
        res
    }

    /// Checks that `[addr, addr + len)` is a valid, 4 KiB aligned range of this VM.
    pub(crate) fn check_range(&self, addr: u64, len: u64) -> Result<Range<u64>> {
        if len == 0 || (addr | len) % SZ_4K != 0 {
            return Err(EINVAL);
        }
        let end = addr.checked_add(len).ok_or(EINVAL)?;
        if end > self.va_end {
            return Err(EINVAL);
        }
        Ok(addr..end)
    }

    /// The protection of a mapping with the uAPI's `flags` and `pat_index`.
    pub(crate) fn prot(readonly: bool, noexec: bool, cached: bool) -> u32 {
        let mut p = prot::READ;
        if !readonly {
            p |= prot::WRITE;
        }
        if noexec {
            p |= prot::NOEXEC;
        }
        if cached {
            p |= prot::CACHE;
        }
        p
    }

    /// Forgets the binds that are done; once none is left, the page table has caught up with
    /// the overlay, and what the pool still holds was reserved for binds that never executed.
    fn reap_locked(&self, state: &mut VmState<B>) {
        state.pending.retain(|p| !p.fence.is_signaled());
        if !state.pending.is_empty() {
            return;
        }
        state.future.clear();
        let abandoned = self.abandoned.load(Relaxed);
        let left = self.pool.trim(abandoned);
        // After exact budgets, binds that all executed leave nothing.
        kernel::warn_on!(left != 0 && !abandoned);
    }

    /// Gives back what binds that did not execute had reserved, once none is pending.
    pub(crate) fn reap(&self) {
        self.reap_locked(&mut self.state.lock());
    }

    /// Submits `ops`, all or nothing, to bind queue `jobs` (whose id is `queue`), to execute
    /// after `waits`.
    ///
    /// A synchronous bind (`sync`) is submitted only once everything it would wait for has
    /// signalled: else it gets its ops back with the fences to wait for first, so that an
    /// interrupted wait leaves the VM unchanged.
    pub(crate) fn submit(
        self: &Arc<Self>,
        jobs: &JobQueue<BindOps<B>>,
        queue: u64,
        ops: KVec<BindOp<B>>,
        waits: &[ARef<Fence>],
        sync: bool,
    ) -> Result<Submitted<B>> {
        let mut state = self.state.lock();
        // An unusable VM takes no new mappings, but may still be torn down (xe's contract).
        if !self.is_usable() && ops.iter().any(|op| matches!(op, BindOp::Map { .. })) {
            return Err(ENOENT);
        }
        self.reap_locked(&mut state);
        let res = self.submit_locked(&mut state, jobs, queue, ops, waits, sync);
        drop(state);
        // Puts of `drm_gpuvm_bo`s, for nothing on failure or for removed mappings, take the
        // VM's reservation: deferred until the VM lock is dropped.
        self.gpuvm.deferred_cleanup();
        res
    }

    fn submit_locked(
        self: &Arc<Self>,
        state: &mut VmState<B>,
        jobs: &JobQueue<BindOps<B>>,
        queue: u64,
        ops: KVec<BindOp<B>>,
        waits: &[ARef<Fence>],
        sync: bool,
    ) -> Result<Submitted<B>> {
        let tree_ops = self.prepare(state, &ops)?;

        // The ranges the bind changes, and whether it removes mappings jobs may be using.
        let mut ranges = KVec::new();
        let mut removes = false;
        for t in tree_ops.iter() {
            let rs: &[Range<u64>] = match t {
                TreeOp::Map { range, .. } => core::slice::from_ref(range),
                TreeOp::Unmap { ranges, .. } => ranges,
            };
            for r in rs {
                ranges.push(r.clone(), GFP_KERNEL)?;
                state.gpuvm.for_each_va(r.clone(), |_| removes = true);
            }
        }

        // What the bind waits for besides `waits` and its queue's order.
        let mut deps = KVec::new();
        for p in state.pending.iter() {
            // The queue orders its own binds; a synchronous bind waits for them first.
            let dep = if p.queue == queue {
                sync
            } else {
                p.ranges
                    .iter()
                    .any(|a| ranges.iter().any(|b| a.start < b.end && b.start < a.end))
            };
            if dep {
                deps.push(p.fence.clone(), GFP_KERNEL)?;
            }
        }
        if removes {
            let resv = self.resv().lock()?;
            resv.for_each_fence(Usage::Bookkeep, |f| {
                deps.push(ARef::from(f), GFP_KERNEL)?;
                Ok(())
            })?;
        }
        if sync {
            deps.retain(|f| !f.is_signaled());
            if !deps.is_empty() {
                return Ok(Submitted::WaitFirst(deps, ops));
            }
        }
        for w in waits {
            deps.push(w.clone(), GFP_KERNEL)?;
        }

        // The job, with room for every BO whose pages it must keep until it executed: those it
        // maps, and those of every mapping it removes or cuts (each VA in the tree now, and each
        // VA the ops insert, at most three per op).
        let n = ops.len();
        let mut held = Held::new(state.vas + VAS_PER_OP * n + n)?;
        let mut work = KVec::with_capacity(n, GFP_KERNEL)?;
        for (op, t) in ops.into_iter().zip(tree_ops.iter()) {
            match (op, t) {
                (
                    BindOp::Map {
                        range,
                        prot,
                        segments,
                        bo,
                        ..
                    },
                    _,
                ) => {
                    held.as_mut().push(bo)?;
                    work.push(
                        PtWork::Map {
                            range,
                            prot,
                            segments,
                        },
                        GFP_KERNEL,
                    )?
                }
                (_, TreeOp::Unmap { ranges, .. }) => {
                    for r in ranges.iter() {
                        work.push(PtWork::Unmap { range: r.clone() }, GFP_KERNEL)?;
                    }
                }
                // `prepare` makes a `TreeOp::Map` of a MAP only.
                (_, TreeOp::Map { .. }) => return Err(EINVAL),
            }
        }
        let mut job = jobs.prepare(BindJob::new(self.clone(), work, held), 1, &deps)?;
        state.pending.reserve(1, GFP_KERNEL)?;

        // The dry run, from where the binds submitted before leave the page table. It
        // allocates, so it takes the page-table lock for each read only.
        let mut dry = Budget::new(&self.pt, &mut state.future);
        for w in job.data().work() {
            Self::apply_pt(&mut dry, self.pgsizes, w)?;
        }
        // Unmaps never fail for lack of memory: the pool keeps tables aside for them.
        let unmap_only = tree_ops.iter().all(|t| matches!(t, TreeOp::Unmap { .. }));
        self.pool
            .reserve_for(dry.tables(), unmap_only, self.gpu.fail_reserve())?;
        dry.commit();

        // Nothing can fail from here on.
        let mut tree_ops = tree_ops;
        for t in tree_ops.iter_mut() {
            let held = job.data_mut().held_mut();
            let (res, added) = match t {
                TreeOp::Map {
                    range,
                    offset,
                    vm_bo,
                    vas,
                } => {
                    let mut ctx = SmCtx {
                        vas,
                        held,
                        added: 0,
                    };
                    let res = state.gpuvm.sm_map(OpMapRequest {
                        addr: range.start,
                        range: range.end - range.start,
                        gem_offset: *offset,
                        vm_bo,
                        context: &mut ctx,
                    });
                    (res, ctx.added)
                }
                TreeOp::Unmap { ranges, vas } => {
                    let mut ctx = SmCtx {
                        vas,
                        held,
                        added: 0,
                    };
                    let gpuvm = &mut state.gpuvm;
                    let res = ranges
                        .iter()
                        .try_for_each(|r| gpuvm.sm_unmap(r.start, r.end - r.start, &mut ctx));
                    (res, ctx.added)
                }
            };
            state.vas = state.vas.saturating_add_signed(added);
            if res.is_err() {
                // Submission took what every op needs: the VA tree no longer matches what was
                // budgeted, so the VM takes no more mappings.
                kernel::warn_on!(true);
                self.usable.store(false, Relaxed);
            }
        }
        job.data_mut().committed();
        let fence = jobs.commit(job);
        let _ = state.pending.push_within_capacity(Pending {
            queue,
            fence: fence.clone(),
            ranges,
        });
        Ok(Submitted::Queued(fence))
    }

    /// The VA-tree side of each op, with what it needs; checks the ops.
    fn prepare(&self, state: &VmState<B>, ops: &[BindOp<B>]) -> Result<KVec<TreeOp<B>>> {
        let mut out = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
        for (i, op) in ops.iter().enumerate() {
            let p = match op {
                BindOp::Map {
                    range,
                    bo,
                    offset,
                    segments,
                    ..
                } => {
                    let private = B::private_vm(bo);
                    if private != 0 && private != self.serial {
                        return Err(EINVAL);
                    }
                    let len = range.end - range.start;
                    let bo_end = offset.checked_add(len).ok_or(EINVAL)?;
                    let covered: u64 = segments.iter().map(|s| s.1).sum();
                    if bo_end > bo.size() as u64 || covered != len {
                        return Err(EINVAL);
                    }
                    TreeOp::Map {
                        range: range.clone(),
                        offset: *offset,
                        vm_bo: self.gpuvm.obtain(bo, ())?,
                        vas: VaAllocs::new(VAS_PER_OP)?,
                    }
                }
                BindOp::Unmap { range } => {
                    let mut ranges = KVec::with_capacity(1, GFP_KERNEL)?;
                    ranges.push(range.clone(), GFP_KERNEL)?;
                    TreeOp::Unmap {
                        ranges,
                        vas: VaAllocs::new(VAS_PER_OP)?,
                    }
                }
                BindOp::UnmapAll { bo } => {
                    let ranges = self.mappings_of(state, bo, &ops[..i])?;
                    // Each range is one whole mapping: no split, no VA node.
                    TreeOp::Unmap {
                        ranges,
                        vas: VaAllocs::new(0)?,
                    }
                }
            };
            out.push(p, GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// The mappings `bo` will have in this VM once `before` ran, in address order.
    fn mappings_of(
        &self,
        state: &VmState<B>,
        bo: &B::Object,
        before: &[BindOp<B>],
    ) -> Result<KVec<Range<u64>>> {
        let mut ranges = KVec::new();
        let mut res: Result = Ok(());
        state.gpuvm.for_each_va(0..self.va_end, |va| {
            if res.is_ok() && core::ptr::eq(va.obj(), bo) {
                res = ranges.push(va.range(), GFP_KERNEL).map_err(Into::into);
            }
        });
        // A mapping left out would stay mapped: fail the bind instead.
        res?;
        for op in before {
            let (cut, add) = match op {
                BindOp::Map { range, bo: b, .. } => (
                    range.clone(),
                    core::ptr::eq(&**b, bo).then(|| range.clone()),
                ),
                BindOp::Unmap { range } => (range.clone(), None),
                BindOp::UnmapAll { bo: b } if core::ptr::eq(&**b, bo) => {
                    ranges.clear();
                    continue;
                }
                BindOp::UnmapAll { .. } => continue,
            };
            ranges = subtract(ranges, &cut)?;
            if let Some(r) = add {
                let at = ranges
                    .iter()
                    .position(|x| x.start > r.start)
                    .unwrap_or(ranges.len());
                ranges.insert_within_capacity(at, r.clone()).or_else(|_| {
                    ranges.reserve(1, GFP_KERNEL)?;
                    ranges.insert_within_capacity(at, r).map_err(|_| ENOMEM)
                })?;
            }
        }
        Ok(ranges)
    }

    /// The page-table work `w`, on the real page table or the dry run.
    fn apply_pt(pt: &mut impl PtOps, pgsizes: u64, w: &PtWork) -> Result {
        match w {
            PtWork::Map {
                range,
                prot,
                segments,
            } => {
                unmap_range(pt, pgsizes, range.start, range.end)?;
                let mut va = range.start;
                for &(pa, len) in segments.iter() {
                    // SAFETY: The bind job holds the BO, whose pages stay until it is freed,
                    // until it executed; then the VA it inserted does, or the job of the bind
                    // that removed the VA, which executes after this one (their ranges
                    // overlap) and flushes the TLB before letting go.
                    unsafe { map_contiguous(pt, pgsizes, va, pa, len, *prot)? };
                    va += len;
                }
                Ok(())
            }
            PtWork::Unmap { range } => unmap_range(pt, pgsizes, range.start, range.end),
        }
    }

    /// Executes the page-table work of a bind: the run step of its job. Allocates nothing.
    ///
    /// A failure leaves the VM unusable: its page table no longer matches the VA tree.
    pub(crate) fn execute(&self, work: &[PtWork]) -> Result {
        let _signalling = SignallingSection::begin();
        if self.gpu.alloc_in_signalling() {
            // The test hook: an allocation that may recurse into reclaim, where the fence
            // rules forbid it. Lockdep must report it.
            drop(KBox::new(0u64, GFP_KERNEL));
        }
        if self.gpu.fail_bind_run() {
            self.abandoned.store(true, Relaxed);
            self.usable.store(false, Relaxed);
            return Err(EIO);
        }
        for w in work {
            // Held across the invalidation: another bind's must not free tables this one
            // freed before the TLB forgot them.
            let mut pt = self.pt.lock();
            let res = Self::apply_pt(&mut *pt, self.pgsizes, w);
            // The GPU may hold what the op removed in its TLB: invalidate it before the
            // tables and pages it used are freed, and before the fence signals.
            let r = w.range();
            self.gpu.flush(self.serial, r.start, r.end);
            self.pool.release_freed();
            drop(pt);
            if let Err(e) = res {
                // The budget made this impossible.
                kernel::warn_on!(true);
                self.abandoned.store(true, Relaxed);
                self.usable.store(false, Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Bind queue `queue` goes: the binds of it that did not execute are cancelled, leaving
    /// their reservations over.
    fn closing(&self, queue: u64) {
        let state = self.state.lock();
        if state
            .pending
            .iter()
            .any(|p| p.queue == queue && !p.fence.is_signaled())
        {
            self.abandoned.store(true, Relaxed);
        }
    }

    /// A bind that did not execute, or failed: its BOs stay with the VM, and the VM takes no
    /// more mappings.
    fn abandon(&self, held: Option<ListArc<Held<B>>>) {
        self.abandoned.store(true, Relaxed);
        self.usable.store(false, Relaxed);
        if let Some(held) = held {
            self.graveyard.lock().push_back(held);
        }
    }
}

#[pinned_drop]
impl<B: Backend> PinnedDrop for VmCore<B> {
    fn drop(self: Pin<&mut Self>) {
        let mut state = self.state.lock();
        let mut none = VaAllocs(KVec::new());
        let mut ctx = SmCtx {
            vas: &mut none,
            held: None,
            added: 0,
        };
        // Unmapping the whole range splits nothing, so it needs no VA node; it removes every
        // VA, each of which holds a reference to the GPU VM and to a BO.
        if state.gpuvm.sm_unmap(0, self.va_end, &mut ctx).is_err() {
            kernel::warn_on!(true);
        }
        drop(state);
        self.gpuvm.deferred_cleanup();
        // No job of the VM runs (they hold it): take it out of the device before its page
        // table (and its tables, back to the pool) goes with the field.
        self.gpu.evict(self.serial);
    }
}

/// `ranges` without `cut`.
fn subtract(ranges: KVec<Range<u64>>, cut: &Range<u64>) -> Result<KVec<Range<u64>>> {
    let mut out = KVec::with_capacity(ranges.len() + 1, GFP_KERNEL)?;
    for r in ranges.into_iter() {
        if r.end <= cut.start || r.start >= cut.end {
            out.push(r, GFP_KERNEL)?;
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start, GFP_KERNEL)?;
        }
        if r.end > cut.end {
            out.push(cut.end..r.end, GFP_KERNEL)?;
        }
    }
    Ok(out)
}
