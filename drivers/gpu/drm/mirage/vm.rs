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
            OpRemapped, OpUnmap, OpUnmapped, UniqueRefGpuVm, VaFlags,
        },
        job_queue::JobQueue,
    },
    iommu::pgtable::prot,
    list::{List, ListArc},
    mm::hmm::HmmPfn,
    new_mutex, new_spinlock,
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
    sync::{
        atomic::{Atomic, Relaxed},
        rwsem::ReadGuard,
        Arc, Mutex, MutexGuard, SpinLock,
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
        walker::{count_leaves, map_contiguous, unmap_range, zap_leaves, PtOps, SZ_4K},
    },
};

mod attrs;
mod fault;
mod gc;
mod madvise;
pub(crate) mod queue;
mod stats;
mod svm;
#[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
mod tests;
pub(crate) mod userptr;

pub(crate) use attrs::{Advice, Attrs, VaInfo, MIRROR};
use queue::{BindJob, BindOps, BindQueue, Held};
use userptr::{Faulted, Notifiers, Userptr};

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

    /// Maps a userptr's page for the device's DMA, for writing too if `write`; returns its bus
    /// address. Runs under the notifier lock: it allocates nothing.
    ///
    /// # Safety
    ///
    /// As [`HmmPfn::dma_map`]'s.
    unsafe fn dma_map_page(&self, page: HmmPfn, write: bool) -> Result<u64>;

    /// Unmaps a page `dma_map_page` mapped with the same `write`. Runs in reclaim.
    ///
    /// # Safety
    ///
    /// As [`kernel::mm::hmm::dma_unmap`]'s.
    unsafe fn dma_unmap_page(&self, addr: u64, write: bool);

    /// Whether the next bind to execute must fail, for tests of the error contract.
    fn fail_bind_run(&self) -> bool {
        false
    }

    /// Whether the next bind must allocate inside its signalling section, a violation that
    /// lockdep must report; for tests.
    fn alloc_in_signalling(&self) -> bool {
        false
    }

    /// Whether the SVM collector's work item must do nothing, so that the unmap log can fill
    /// up; for tests.
    fn gc_work_paused(&self) -> bool {
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

    unsafe fn dma_map_page(&self, page: HmmPfn, write: bool) -> Result<u64> {
        // SAFETY: The caller's requirements are the same.
        unsafe { Gpu::dma_map_page(self, page, write) }
    }

    unsafe fn dma_unmap_page(&self, addr: u64, write: bool) {
        // SAFETY: The caller's requirements are the same.
        unsafe { Gpu::dma_unmap_page(self, addr, write) }
    }

    fn fail_bind_run(&self) -> bool {
        self.inject_bind_run_failure()
    }

    fn alloc_in_signalling(&self) -> bool {
        self.inject_alloc_in_signalling()
    }

    fn gc_work_paused(&self) -> bool {
        self.test_pauses_gc_work()
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
    /// The data of the mapping a map inserts.
    data: VaInfo,
    /// The op is a madvise list: its map steps insert the inside part of the mapping the
    /// remap before split, with that mapping's data.
    madvise: bool,
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
    type VaData = VaInfo;
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
        Ok(op.insert(va, ctx.data))
    }

    fn sm_step_unmap<'op>(
        &mut self,
        op: OpUnmap<'op, Self>,
        ctx: &mut SmCtx<'_, B>,
    ) -> Result<OpUnmapped<'op, Self>> {
        if let Some(bo) = op.va().obj() {
            ctx.hold(bo);
        }
        let (done, _removed) = op.remove();
        ctx.added -= 1;
        Ok(done)
    }

    fn sm_step_remap<'op>(
        &mut self,
        op: OpRemap<'op, Self>,
        ctx: &mut SmCtx<'_, B>,
    ) -> Result<OpRemapped<'op, Self>> {
        if let Some(bo) = op.obj() {
            ctx.hold(bo);
        }
        let pair = [ctx.vas.take()?, ctx.vas.take()?];
        // The pieces of a userptr's or a mirror's mapping keep what it had.
        let data = *op.va_to_unmap().data();
        if ctx.madvise {
            ctx.data = data;
        }
        let (done, ret) = op.remap(pair, data, data);
        // One VA out, one or two in.
        ctx.added += 1;
        if let Some(unused) = ret.unused_va {
            ctx.vas.give(unused);
            ctx.added -= 1;
        }
        Ok(done)
    }
}

/// The `(bus address, length)` pieces a mapping maps, in order. Their number follows from
/// sizes userspace picks: a userptr of scattered pages has one per page.
pub(crate) type Segments = KVVec<(u64, u64)>;

/// One checked op of a bind.
pub(crate) enum BindOp<B: Backend = Gpu> {
    Map {
        range: Range<u64>,
        bo: ARef<B::Object>,
        offset: u64,
        prot: u32,
        /// The bus addresses of `[offset, offset + range length)` of `bo`, as
        /// [`gem::segments`] gives them.
        segments: Segments,
    },
    Unmap {
        range: Range<u64>,
    },
    UnmapAll {
        bo: ARef<B::Object>,
    },
    /// Maps `[cpu, cpu + range length)` of the calling process's memory.
    MapUserptr {
        range: Range<u64>,
        cpu: u64,
        prot: u32,
    },
    /// Makes `range` a mirror of the same CPU addresses, filled in on GPU fault.
    MapMirror {
        range: Range<u64>,
        pat: u16,
        autoreset: bool,
    },
}

/// The page-table work of one op: what the bind job does when it executes.
pub(crate) enum PtWork {
    /// Unmaps `range`, then maps the segments there.
    Map {
        range: Range<u64>,
        prot: u32,
        segments: Segments,
    },
    Unmap {
        range: Range<u64>,
    },
    /// Unmaps the leaves in `range` (a mirror's range), then maps the segments there. Frees
    /// no table.
    Fill {
        range: Range<u64>,
        prot: u32,
        segments: Segments,
    },
}

impl PtWork {
    fn range(&self) -> &Range<u64> {
        match self {
            PtWork::Map { range, .. } | PtWork::Unmap { range } | PtWork::Fill { range, .. } => {
                range
            }
        }
    }
}

type UserptrBox<B> = Pin<KBox<Userptr<B>>>;

/// A MAP_USERPTR's new userptr, and the bus address of each of its pages.
type NewUserptr<B> = (UserptrBox<B>, KVVec<u64>);

/// The VA-tree side of an op, with everything it needs.
enum TreeOp<B: Backend> {
    Map {
        range: Range<u64>,
        offset: u64,
        /// `None` for a mirror, which has no GEM object.
        vm_bo: Option<ARef<GpuVmBo<VmData<B>>>>,
        flags: VaFlags,
        /// The new mapping's data, but for a userptr's id, which `userptr` gives.
        data: VaInfo,
        vas: VaAllocs<B>,
        /// A MAP_USERPTR's new userptr, and the bus address of each of its pages.
        userptr: Option<NewUserptr<B>>,
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
    /// The userptrs, by id.
    userptrs: KVec<Slot<B>>,
    /// Userptrs no longer in the tree, kept until the bind that unmapped them executed.
    retired: KVec<(ARef<Fence>, UserptrBox<B>)>,
    /// A fault-mode VM's mirror of its process's address space, and the right to change it.
    svm: Option<svm::Svm<B>>,
}

/// A userptr id.
enum Slot<B: Backend> {
    Free,
    /// The VA tree maps the userptr.
    Live(UserptrBox<B>),
    /// The userptr is in `retired`.
    Retired,
}

impl<B: Backend> VmState<B> {
    fn userptr(&self, id: u32) -> Option<&Userptr<B>> {
        match self.userptrs.get(id as usize) {
            Some(Slot::Live(u)) => Some(u),
            _ => None,
        }
    }

    /// `n` ids for new userptrs: free ones first, then new ones, in increasing order.
    fn free_ids(&self, n: usize) -> Result<KVec<u32>> {
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        let free = self
            .userptrs
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Free))
            .map(|(i, _)| i);
        let free = Iterator::chain(free, self.userptrs.len()..).take(n);
        for i in free {
            out.push(u32::try_from(i).map_err(|_| ENOSPC)?, GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// The pieces of the mapping of userptr `u` left in the VA tree, with their CPU offsets
    /// into it.
    fn pieces(&self, u: &Userptr<B>) -> Result<KVec<(Range<u64>, u64)>> {
        let mut out = KVec::new();
        let mut res = Ok(());
        self.gpuvm.for_each_va(u.gpu().clone(), |va| {
            if res.is_ok() && va.data().userptr == Some(u.id()) {
                res = out
                    .push((va.range(), va.gem_offset() - u.cpu()), GFP_KERNEL)
                    .map_err(Error::from);
            }
        });
        res.map(|()| out)
    }
}

/// The VM lock, held by an EXEC that revalidates userptrs, and what it faulted in.
pub(crate) struct Revalidation<'a, B: Backend> {
    state: MutexGuard<'a, VmState<B>>,
    faults: Faults,
}

/// The invalidated userptrs, faulted in.
struct Faults {
    /// By id, sorted, with the sequence number each is current for (`None`: nothing to
    /// check, it is gone).
    done: KVec<(u32, Option<u64>)>,
    /// Their ids, sorted: what leaves the invalidated list if the final check passes. Made
    /// in advance: nothing may be allocated under the notifier lock.
    ids: KVec<u32>,
    /// Their pages, until the rebind takes them.
    faulted: KVec<(u32, Faulted)>,
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
    /// What the notifiers of the VM's userptrs share.
    notifiers: Arc<Notifiers<B>>,
    /// The page table's root and attributes, as the device needs them; they never change.
    ttbr: u64,
    mair: u64,
    /// Jobs stall on page faults, which the VM resolves ([`VmCore::handle_fault`]).
    fault_mode: bool,
    /// Page faults resolved (the job retried) and not (the job was aborted).
    faults_resolved: Atomic<u64>,
    faults_aborted: Atomic<u64>,
    /// What fault services and collector passes cost, by stage.
    stats: stats::Stats,
}

impl<B: Backend> VmCore<B> {
    pub(crate) fn new(
        dev: &drm::Device<B::Driver>,
        gpu: &Arc<B>,
        va_bits: u32,
        pgsizes: u64,
        fault_mode: bool,
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
        let notifiers = Arc::pin_init(Notifiers::new(root.clone(), gpu.clone()), GFP_KERNEL)?;
        Arc::pin_init(
            try_pin_init!(Self {
                gpuvm: shared,
                state <- new_mutex!(VmState {
                    gpuvm: unique,
                    future: Overlay::new(),
                    pending: KVec::new(),
                    vas: 0,
                    userptrs: KVec::new(),
                    retired: KVec::new(),
                    svm: None,
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
                notifiers,
                ttbr,
                mair,
                fault_mode,
                faults_resolved: Atomic::new(0),
                faults_aborted: Atomic::new(0),
                stats: stats::Stats::new(),
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
            stall: self.fault_mode,
        }
    }

    /// Whether the VM's jobs stall on page faults.
    pub(crate) fn fault_mode(&self) -> bool {
        self.fault_mode
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
        let live = state
            .userptrs
            .iter()
            .filter(|u| matches!(u, Slot::Live(_)))
            .count();
        self.notifiers.show(f, live)?;
        writeln!(
            f,
            "faults resolved {} aborted {}",
            self.faults_resolved.load(Relaxed),
            self.faults_aborted.load(Relaxed)
        )?;
        if let Some(svm) = &state.svm {
            writeln!(f, "svm ranges {}", svm.count())?;
            self.stats.show(f)?;
        }
        let mut res = Ok(());
        state.gpuvm.for_each_va(0..self.va_end, |va| {
            if res.is_err() {
                return;
            }
            res = write!(
                f,
                "va {:#x} {:#x} offset {:#x}",
                va.addr(),
                va.addr() + va.length(),
                va.gem_offset()
            );
            if let (Ok(()), Some(id)) = (&res, va.data().userptr) {
                res = write!(f, " userptr {id}");
            }
            if let (Ok(()), Some(a)) = (&res, va.data().mirror) {
                res = write!(
                    f,
                    " mirror pat {} autoreset {}",
                    a.pat,
                    u32::from(a.autoreset)
                );
            }
            if res.is_ok() {
                res = writeln!(f);
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
        // Userptrs whose unbind executed go, with their notifiers. After a failed or cancelled
        // unbind the page table may still map them: they stay until the VM goes.
        let mut i = 0;
        while i < state.retired.len() {
            let f = &state.retired[i].0;
            if !f.is_signaled() || matches!(f.status(), Some(Err(_))) {
                i += 1;
                continue;
            }
            if let Ok((_, u)) = state.retired.remove(i) {
                let id = u.id();
                drop(u);
                self.notifiers.free(id);
                if let Some(slot) = state.userptrs.get_mut(id as usize) {
                    *slot = Slot::Free;
                }
            }
        }
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
        if !self.is_usable()
            && ops
                .iter()
                .any(|op| matches!(op, BindOp::Map { .. } | BindOp::MapUserptr { .. }))
        {
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
        // The userptrs whose mappings the bind removes or cuts: it may retire them.
        let mut cut: KVec<u32> = KVec::new();
        let mut res = Ok(());
        for t in tree_ops.iter() {
            let rs: &[Range<u64>] = match t {
                TreeOp::Map { range, .. } => core::slice::from_ref(range),
                TreeOp::Unmap { ranges, .. } => ranges,
            };
            for r in rs {
                ranges.push(r.clone(), GFP_KERNEL)?;
                state.gpuvm.for_each_va(r.clone(), |va| {
                    removes = true;
                    if let Some(id) = va.data().userptr {
                        if res.is_ok() && !cut.contains(&id) {
                            res = cut.push(id, GFP_KERNEL).map_err(Error::from);
                        }
                    }
                });
            }
        }
        res?;

        // What the bind waits for besides `waits` and its queue's order.
        let mut deps = KVec::new();
        for p in state.pending.iter() {
            // The queue orders its own binds; a synchronous bind waits for them first.
            let dep = if p.queue == queue {
                sync
            } else {
                overlap(&p.ranges, &ranges)
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
        // Invalidated userptrs are rebound first, by a job of this queue.
        self.revalidate_for_bind(state, jobs, queue)?;
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
                (
                    BindOp::MapUserptr { range, prot, .. },
                    TreeOp::Map {
                        userptr: Some((_, dma)),
                        ..
                    },
                ) => {
                    let len = range.end - range.start;
                    work.push(
                        PtWork::Map {
                            segments: userptr::segments(dma, 0, len)?,
                            range,
                            prot,
                        },
                        GFP_KERNEL,
                    )?
                }
                // A mirror's pages come on fault: nothing of what was there stays.
                (BindOp::MapMirror { range, .. }, _) => {
                    work.push(PtWork::Unmap { range }, GFP_KERNEL)?
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

        // Room for the userptrs the bind adds and retires.
        let new_ids = tree_ops.iter().filter_map(|t| match t {
            TreeOp::Map {
                userptr: Some((u, _)),
                ..
            } => Some(u.id() as usize),
            _ => None,
        });
        let slots = new_ids.max().map_or(0, |m| m + 1);
        self.notifiers.reserve_ids(slots)?;
        state
            .userptrs
            .reserve(slots.saturating_sub(state.userptrs.len()), GFP_KERNEL)?;
        state.retired.reserve(cut.len(), GFP_KERNEL)?;
        let unmap_only = tree_ops.iter().all(|t| matches!(t, TreeOp::Unmap { .. }));
        self.reserve_work(state, job.data().work(), unmap_only)?;

        // Nothing can fail from here on.
        let mut tree_ops = tree_ops;
        for t in tree_ops.iter_mut() {
            let held = job.data_mut().held_mut();
            let (res, added) = match t {
                TreeOp::Map {
                    range,
                    offset,
                    vm_bo,
                    flags,
                    data,
                    vas,
                    userptr,
                } => {
                    let mut ctx = SmCtx {
                        vas,
                        held,
                        added: 0,
                        data: VaInfo {
                            userptr: userptr.as_ref().map(|(u, _)| u.id()),
                            ..*data
                        },
                        madvise: false,
                    };
                    let res = state.gpuvm.sm_map(OpMapRequest {
                        addr: range.start,
                        range: range.end - range.start,
                        gem_offset: *offset,
                        vm_bo: vm_bo.as_deref(),
                        flags: *flags,
                        context: &mut ctx,
                    });
                    (res, ctx.added)
                }
                TreeOp::Unmap { ranges, vas } => {
                    let mut ctx = SmCtx {
                        vas,
                        held,
                        added: 0,
                        data: VaInfo::default(),
                        madvise: false,
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
        // The new userptrs join the VM; those left with no mapping go once the bind executed.
        for t in tree_ops.into_iter() {
            if let TreeOp::Map {
                userptr: Some((u, _)),
                ..
            } = t
            {
                let id = u.id() as usize;
                match state.userptrs.get_mut(id) {
                    Some(slot) => *slot = Slot::Live(u),
                    // Ids past the end come in increasing order, and there is room.
                    None => {
                        let _ = state.userptrs.push_within_capacity(Slot::Live(u));
                    }
                }
            }
        }
        for &id in cut.iter() {
            let Some(u) = state.userptr(id) else {
                continue;
            };
            // Cannot fail for lack of memory: counting only.
            let mut mapped = false;
            state.gpuvm.for_each_va(u.gpu().clone(), |va| {
                mapped |= va.data().userptr == Some(id);
            });
            if mapped {
                continue;
            }
            self.notifiers.retire(id);
            if let Some(slot) = state.userptrs.get_mut(id as usize) {
                if let Slot::Live(u) = core::mem::replace(slot, Slot::Retired) {
                    let _ = state.retired.push_within_capacity((fence.clone(), u));
                }
            }
        }
        Ok(Submitted::Queued(fence))
    }

    /// Budgets the page tables `work` needs, from where the binds submitted before leave the
    /// page table, and takes them from the pool. The dry run allocates, so it takes the
    /// page-table lock for each read only. Unmaps never fail for lack of memory: the pool keeps
    /// tables aside for them (`unmap_only`).
    fn reserve_work(&self, state: &mut VmState<B>, work: &[PtWork], unmap_only: bool) -> Result {
        let mut dry = Budget::new(&self.pt, &mut state.future);
        for w in work {
            Self::apply_pt(&mut dry, self.pgsizes, w)?;
        }
        self.pool
            .reserve_for(dry.tables(), unmap_only, self.gpu.fail_reserve())?;
        dry.commit();
        Ok(())
    }

    /// The VA-tree side of each op, with what it needs; checks the ops.
    fn prepare(&self, state: &VmState<B>, ops: &[BindOp<B>]) -> Result<KVec<TreeOp<B>>> {
        let mut out = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
        let new = ops
            .iter()
            .filter(|op| matches!(op, BindOp::MapUserptr { .. }))
            .count();
        let mut ids = state.free_ids(new)?.into_iter();
        for (i, op) in ops.iter().enumerate() {
            // As xe: a mirror whose memory the GPU faulted in keeps its ranges until the CPU
            // unmaps it; a bind may not take the mirror away from under them.
            let changed = match op {
                BindOp::Map { range, .. }
                | BindOp::Unmap { range }
                | BindOp::MapUserptr { range, .. }
                | BindOp::MapMirror { range, .. } => Some(range),
                BindOp::UnmapAll { .. } => None,
            };
            if let (Some(r), Some(svm)) = (changed, &state.svm) {
                let mut busy = false;
                state.gpuvm.for_each_va(r.clone(), |va| {
                    if va.data().mirror.is_some() {
                        let span = va.range();
                        let cut = span.start.max(r.start)..span.end.min(r.end);
                        busy |= svm.has_ranges(&cut);
                    }
                });
                if busy {
                    return Err(EBUSY);
                }
            }
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
                        vm_bo: Some(self.gpuvm.obtain(bo, ())?),
                        flags: VaFlags::NONE,
                        data: VaInfo::default(),
                        vas: VaAllocs::new(VAS_PER_OP)?,
                        userptr: None,
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
                BindOp::MapUserptr { range, cpu, prot } => {
                    let id = ids.next().ok_or(EINVAL)?;
                    let task = kernel::current!();
                    let mm = task.mm().ok_or(EFAULT)?;
                    let write = *prot & prot::WRITE != 0;
                    let u =
                        Userptr::new(mm, &self.notifiers, id, *cpu, range.clone(), *prot, write)?;
                    let dma = match u.fault()? {
                        Faulted::Pages { dma, .. } => dma,
                        // xe's userptr-invalid: the range is not the process's to map.
                        Faulted::Gone => return Err(EFAULT),
                    };
                    // drm_gpuvm needs a GEM object per mapping: a userptr's is the VM's root,
                    // which nothing else maps, and its offset the CPU address, as in xe.
                    TreeOp::Map {
                        range: range.clone(),
                        offset: *cpu,
                        vm_bo: Some(self.gpuvm.obtain(&self.root, ())?),
                        flags: VaFlags::NONE,
                        data: VaInfo::default(),
                        vas: VaAllocs::new(VAS_PER_OP)?,
                        userptr: Some((u, dma)),
                    }
                }
                BindOp::MapMirror {
                    range,
                    pat,
                    autoreset,
                } => {
                    // As xe: a mirror lives in a VM whose jobs fault its pages in.
                    if !self.fault_mode {
                        return Err(EINVAL);
                    }
                    TreeOp::Map {
                        range: range.clone(),
                        // The GPU address is the CPU address: drm_gpuvm shifts the offset
                        // along with the pieces of a split mirror.
                        offset: range.start,
                        vm_bo: None,
                        flags: MIRROR,
                        data: VaInfo {
                            userptr: None,
                            mirror: Some(Attrs::new(*pat, *autoreset)),
                        },
                        vas: VaAllocs::new(VAS_PER_OP)?,
                        userptr: None,
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
            if res.is_ok() && va.obj().is_some_and(|o| core::ptr::eq(o, bo)) {
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
                BindOp::Unmap { range }
                | BindOp::MapUserptr { range, .. }
                | BindOp::MapMirror { range, .. } => (range.clone(), None),
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
            PtWork::Fill {
                range,
                prot,
                segments,
            } => {
                zap_leaves(pt, range.start, range.end)?;
                let mut va = range.start;
                for &(pa, len) in segments.iter() {
                    // SAFETY: The pages are the mirror's range's, mapped for DMA until its
                    // notifier zapped these entries and invalidated the TLB.
                    unsafe { map_contiguous(pt, pgsizes, va, pa, len, *prot)? };
                    va += len;
                }
                Ok(())
            }
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

    /// EXEC's first userptr step: if userptrs wait for revalidation, takes the VM lock and
    /// faults them in. `None` if none waits: EXEC then needs no VM lock, and its final check
    /// ([`Self::userptrs_current`]) tells if one came meanwhile.
    ///
    /// Takes the process's mmap lock: call it before locking any reservation object.
    pub(crate) fn fault_userptrs(&self) -> Result<Option<Revalidation<'_, B>>> {
        {
            let lock = self.notifiers.read();
            if self.notifiers.all_valid(&lock) {
                return Ok(None);
            }
        }
        let state = self.state.lock();
        let faults = self.fault_listed(&state)?;
        Ok(Some(Revalidation { state, faults }))
    }

    /// Faults in the userptrs waiting for revalidation. Takes the mmap lock.
    fn fault_listed(&self, state: &VmState<B>) -> Result<Faults> {
        let ids = self.notifiers.to_revalidate()?;
        let mut done = KVec::with_capacity(ids.len(), GFP_KERNEL)?;
        let mut faulted = KVec::with_capacity(ids.len(), GFP_KERNEL)?;
        // The list of ids is sorted, without repeats.
        for &id in ids.iter() {
            let Some(u) = state.userptr(id) else {
                // Left the tree since: nothing to map.
                let _ = done.push_within_capacity((id, None));
                continue;
            };
            let f = u.fault()?;
            let seq = match &f {
                Faulted::Pages { seq, .. } => Some(*seq),
                // Stays unmapped until it is invalidated again or rebound.
                Faulted::Gone => None,
            };
            let _ = done.push_within_capacity((id, seq));
            let _ = faulted.push_within_capacity((id, f));
        }
        Ok(Faults { done, ids, faulted })
    }

    /// EXEC's second userptr step, with the VM's reservation object locked: submits a job to
    /// `queue` that maps the pages `r` faulted in (or unmaps the userptrs that are gone), with
    /// page tables reserved now; returns its fence, which the EXEC's job, and every job
    /// submitted after it, must wait for.
    pub(crate) fn rebind(
        self: &Arc<Self>,
        r: &mut Revalidation<'_, B>,
        queue: &BindQueue<B>,
    ) -> Result<Option<ARef<Fence>>> {
        let (jobs, queue_id) = queue.jobs()?;
        self.rebind_locked(&mut r.state, jobs, queue_id, &r.faults)
    }

    /// Submits to `jobs` (queue `queue_id`) a job that maps the pages in `faults`, or unmaps
    /// the userptrs that are gone; returns its fence, if there was anything to do.
    fn rebind_locked(
        self: &Arc<Self>,
        state: &mut VmState<B>,
        jobs: &JobQueue<BindOps<B>>,
        queue_id: u64,
        faults: &Faults,
    ) -> Result<Option<ARef<Fence>>> {
        let mut work = KVec::new();
        let mut ranges = KVec::new();
        let mut ids = KVec::with_capacity(faults.faulted.len(), GFP_KERNEL)?;
        for (id, f) in faults.faulted.iter() {
            let Some(u) = state.userptr(*id) else {
                continue;
            };
            let _ = ids.push_within_capacity(*id);
            for (piece, off) in state.pieces(u)? {
                let w = match f {
                    Faulted::Pages { dma, .. } => PtWork::Map {
                        segments: userptr::segments(dma, off, piece.end - piece.start)?,
                        range: piece.clone(),
                        prot: u.prot(),
                    },
                    Faulted::Gone => PtWork::Unmap {
                        range: piece.clone(),
                    },
                };
                work.push(w, GFP_KERNEL)?;
                ranges.push(piece, GFP_KERNEL)?;
            }
        }
        if work.is_empty() {
            return Ok(None);
        }
        // The binds that change these ranges execute first. The jobs that used the old pages
        // are done: the notifier waited for them.
        let mut deps = KVec::new();
        for p in state.pending.iter() {
            if overlap(&p.ranges, &ranges) {
                deps.push(p.fence.clone(), GFP_KERNEL)?;
            }
        }
        let unmap_only = work.iter().all(|w| matches!(w, PtWork::Unmap { .. }));
        let mut job = jobs.prepare(BindJob::rebind(self.clone(), work, ids)?, 1, &deps)?;
        state.pending.reserve(1, GFP_KERNEL)?;
        self.reserve_work(state, job.data().work(), unmap_only)?;
        job.data_mut().committed();
        let fence = jobs.commit(job);
        let _ = state.pending.push_within_capacity(Pending {
            queue: queue_id,
            fence: fence.clone(),
            ranges,
        });
        Ok(Some(fence))
    }

    /// EXEC's final userptr check, under the notifier lock: whether no invalidation collided
    /// with the userptrs `r` revalidated, and none is left to revalidate. Those `r`
    /// revalidated leave the invalidated list if so. If not, EXEC starts again.
    pub(crate) fn userptrs_current(
        &self,
        lock: &ReadGuard<'_, ()>,
        r: Option<&Revalidation<'_, B>>,
    ) -> bool {
        let Some(r) = r else {
            return self.notifiers.all_valid(lock);
        };
        let f = &r.faults;
        for &(id, seq) in f.done.iter() {
            if let (Some(u), Some(seq)) = (r.state.userptr(id), seq) {
                if u.collided(lock, seq) {
                    return false;
                }
            }
        }
        let empty = self.notifiers.validated(lock, &f.ids);
        if empty {
            self.notifiers.count_revalidated(f.faulted.len());
        }
        empty
    }

    /// An async bind's revalidation, under the VM lock, before the bind's own job is queued
    /// to `jobs` (queue `queue_id`): the userptrs waiting for it are faulted in and rebound by
    /// a job queued first, whose fence goes into the VM's reservation object (KERNEL usage),
    /// so that every later job of the VM waits for it. Those no invalidation hit meanwhile
    /// leave the list; the others wait for the next EXEC or bind.
    fn revalidate_for_bind(
        self: &Arc<Self>,
        state: &mut VmState<B>,
        jobs: &JobQueue<BindOps<B>>,
        queue_id: u64,
    ) -> Result {
        {
            let lock = self.notifiers.read();
            if self.notifiers.all_valid(&lock) {
                return Ok(());
            }
        }
        let faults = self.fault_listed(state)?;
        let mut resv = self.resv().lock()?;
        resv.reserve_fences(1)?;
        let mut current = KVec::with_capacity(faults.ids.len(), GFP_KERNEL)?;
        if let Some(fence) = self.rebind_locked(state, jobs, queue_id, &faults)? {
            // There is a slot.
            resv.add_fence(&fence, Usage::Kernel)?;
        }
        drop(resv);
        let lock = self.notifiers.read();
        for &(id, seq) in faults.done.iter() {
            let hit = match (state.userptr(id), seq) {
                (Some(u), Some(seq)) => u.collided(&lock, seq),
                _ => false,
            };
            if !hit {
                let _ = current.push_within_capacity(id);
            }
        }
        self.notifiers.validated(&lock, &current);
        drop(lock);
        self.notifiers.count_revalidated(faults.faulted.len());
        Ok(())
    }

    /// The notifiers' shared state, for EXEC's final check.
    pub(crate) fn notifiers(&self) -> &Notifiers<B> {
        &self.notifiers
    }

    /// A rebind did not execute: its userptrs are revalidated again by the next EXEC.
    fn rebind_cancelled(&self, ids: &[u32]) {
        // Its tables stay reserved until no bind is pending.
        self.abandoned.store(true, Relaxed);
        self.notifiers.requeue(ids);
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
        // The mirror goes first: its notifier callback reaches into the VM (`svm::Mirror`).
        // Its ranges' pages are unmapped; no job of the VM runs any more.
        let svm = self.state.lock().svm.take();
        drop(svm);
        let mut state = self.state.lock();
        let mut none = VaAllocs(KVec::new());
        let mut ctx = SmCtx {
            vas: &mut none,
            held: None,
            added: 0,
            data: VaInfo::default(),
            madvise: false,
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
/// Whether a range of `a` overlaps a range of `b`.
fn overlap(a: &[Range<u64>], b: &[Range<u64>]) -> bool {
    a.iter()
        .any(|a| b.iter().any(|b| a.start < b.end && b.start < a.end))
}

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
