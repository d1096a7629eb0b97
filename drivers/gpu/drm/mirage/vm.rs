// SPDX-License-Identifier: GPL-2.0 or MIT

//! GPU VMs: a drm_gpuvm VA tree, a page table, and synchronous binds.
//!
//! A bind runs in two phases. The *prepare* phase may sleep, allocate and fail: it checks every
//! op, takes what each needs (the BO's `drm_gpuvm_bo` and VA nodes; its DMA segments come with
//! the op, taken before the VM lock), runs the whole array over a dry run of the page table to
//! count the tables it will create, and reserves exactly that many. The *execute* phase runs in a `dma_fence` signalling section:
//! it updates the VA tree and the page table from what was reserved, and can no longer fail
//! for lack of memory. A failed prepare leaves the VM as it was.
//!
//! Locks, outermost first (`Documentation/gpu/mirage.rst`): the VM's lock (`state`), which
//! protects the VA tree and, through drm_gpuvm, the external-object list; the VM's `dma_resv`
//! (taken inside drm_gpuvm for the external-object list, and by EXEC); the page-table lock
//! (`pt`), which is never held while allocating, so that a signalling section may take it.

use core::{marker::PhantomData, ops::Range};
use kernel::{
    dma_buf::fence::SignallingSection,
    drm::{
        self,
        gem::BaseObject,
        gpuvm::{
            DriverGpuVm, GpuVaAlloc, GpuVm, GpuVmBo, OpMap, OpMapRequest, OpMapped, OpRemap,
            OpRemapped, OpUnmap, OpUnmapped, UniqueRefGpuVm,
        },
    },
    iommu::pgtable::prot,
    new_mutex,
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
};

use crate::{
    driver::{MirageDevice, MirageDriver},
    gem::{self, Bo},
    gpu::{Gpu, VmHw},
    mmu::{
        budget::Budget,
        pgtable::PageTable,
        pool::PtPool,
        walker::{count_leaves, map_contiguous, unmap_range, PtOps, SZ_4K},
    },
};

#[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
mod tests;

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
        // The prepare phase reserved enough for any op; running out is a driver bug.
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

impl<B: Backend> DriverGpuVm for VmData<B> {
    type Driver = B::Driver;
    type Object = B::Object;
    type VaData = ();
    type VmBoData = ();
    type SmContext<'ctx> = VaAllocs<B>;

    // The callbacks update the VA tree only: the page-table work of an op does not depend on
    // how drm_gpuvm splits it, so that the dry run sees the same page-table calls.
    fn sm_step_map<'op>(
        &mut self,
        op: OpMap<'op, Self>,
        vas: &mut VaAllocs<B>,
    ) -> Result<OpMapped<'op, Self>> {
        Ok(op.insert(vas.take()?, pin_init::init_zeroed()))
    }

    fn sm_step_unmap<'op>(
        &mut self,
        op: OpUnmap<'op, Self>,
        _vas: &mut VaAllocs<B>,
    ) -> Result<OpUnmapped<'op, Self>> {
        let (done, _removed) = op.remove();
        Ok(done)
    }

    fn sm_step_remap<'op>(
        &mut self,
        op: OpRemap<'op, Self>,
        vas: &mut VaAllocs<B>,
    ) -> Result<OpRemapped<'op, Self>> {
        let pair = [vas.take()?, vas.take()?];
        let (done, ret) = op.remap(pair, pin_init::init_zeroed(), pin_init::init_zeroed());
        if let Some(unused) = ret.unused_va {
            vas.give(unused);
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

/// An op with everything its execution needs.
enum Prepared<'a, B: Backend> {
    Map {
        range: Range<u64>,
        offset: u64,
        prot: u32,
        segments: &'a [(u64, u64)],
        vm_bo: ARef<GpuVmBo<VmData<B>>>,
        vas: VaAllocs<B>,
    },
    /// UNMAP, and each mapping UNMAP_ALL removes.
    Unmap {
        ranges: KVec<Range<u64>>,
        vas: VaAllocs<B>,
    },
}

/// What the VM lock protects.
struct VmState<B: Backend> {
    gpuvm: UniqueRefGpuVm<VmData<B>>,
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
    /// The reservation object's root: VM-private BOs share its `dma_resv`.
    root: ARef<B::Object>,
    /// Identifies the VM to the BOs private to it.
    serial: u64,
    va_end: u64,
    pgsizes: u64,
    usable: Atomic<bool>,
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
                state <- new_mutex!(VmState { gpuvm: unique }),
                pt <- new_mutex!(pt),
                pool,
                root,
                serial: NEXT_SERIAL.fetch_add(1, Relaxed),
                va_end,
                pgsizes,
                usable: Atomic::new(true),
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

    /// Writes the pool's counters and the VA tree, for debugfs.
    pub(crate) fn show(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        let s = self.pool.stats();
        writeln!(
            f,
            "pool reserved {} used {} returned {} live {} exhausted {} unused {}",
            s.reserved, s.used, s.returned, s.live, s.exhausted, s.unused
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

    /// Runs `ops` in order, all or nothing.
    pub(crate) fn bind(&self, ops: &[BindOp<B>]) -> Result {
        let mut state = self.state.lock();
        // An unusable VM takes no new mappings, but may still be torn down (xe's contract).
        if !self.is_usable() && ops.iter().any(|op| matches!(op, BindOp::Map { .. })) {
            return Err(ENOENT);
        }
        let prepared = self.prepare(&state, ops);
        let mut prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Drop the `drm_gpuvm_bo`s taken for nothing.
                drop(state);
                self.gpuvm.deferred_cleanup();
                return Err(e);
            }
        };
        let res = self.execute(&mut state, &mut prepared);
        drop(state);
        drop(prepared);
        // Puts of `drm_gpuvm_bo`s take the VM's reservation, which a signalling section must
        // not: they were deferred until here.
        self.gpuvm.deferred_cleanup();
        res
    }

    fn prepare<'a>(
        &self,
        state: &VmState<B>,
        ops: &'a [BindOp<B>],
    ) -> Result<KVec<Prepared<'a, B>>> {
        let mut out = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
        for (i, op) in ops.iter().enumerate() {
            let p = match op {
                BindOp::Map {
                    range,
                    bo,
                    offset,
                    prot,
                    segments,
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
                    Prepared::Map {
                        range: range.clone(),
                        offset: *offset,
                        prot: *prot,
                        segments,
                        vm_bo: self.gpuvm.obtain(bo, ())?,
                        vas: VaAllocs::new(VAS_PER_OP)?,
                    }
                }
                BindOp::Unmap { range } => {
                    let mut ranges = KVec::with_capacity(1, GFP_KERNEL)?;
                    ranges.push(range.clone(), GFP_KERNEL)?;
                    Prepared::Unmap {
                        ranges,
                        vas: VaAllocs::new(VAS_PER_OP)?,
                    }
                }
                BindOp::UnmapAll { bo } => {
                    let ranges = self.mappings_of(state, bo, &ops[..i])?;
                    // Each range is one whole mapping: no split, no VA node.
                    Prepared::Unmap {
                        ranges,
                        vas: VaAllocs::new(0)?,
                    }
                }
            };
            out.push(p, GFP_KERNEL)?;
        }

        // The dry run, over the page table as the ops ahead of each leave it. It allocates,
        // so it takes the page-table lock for each read only.
        let mut dry = Budget::new(&self.pt);
        for p in out.iter() {
            Self::apply_pt(&mut dry, self.pgsizes, p)?;
        }
        let need = dry.tables();
        drop(dry);
        if self.gpu.fail_reserve() {
            return Err(ENOMEM);
        }
        self.pool.reserve(need)?;
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
        state.gpuvm.for_each_va(0..self.va_end, |va| {
            if core::ptr::eq(va.obj(), bo) {
                // Allocation failures are reported below.
                let _ = ranges.push(va.range(), GFP_KERNEL);
            }
        });
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

    /// The page-table work of `op`, on the real page table or the dry run.
    fn apply_pt(pt: &mut impl PtOps, pgsizes: u64, op: &Prepared<'_, B>) -> Result {
        match op {
            Prepared::Map {
                range,
                prot,
                segments,
                ..
            } => {
                unmap_range(pt, pgsizes, range.start, range.end)?;
                let mut va = range.start;
                for &(pa, len) in segments.iter() {
                    // SAFETY: The VA the op inserts holds a reference to the BO, whose pages
                    // stay until the BO is freed; the mapping goes (and the TLB with it) when
                    // the VA does.
                    unsafe { map_contiguous(pt, pgsizes, va, pa, len, *prot)? };
                    va += len;
                }
                Ok(())
            }
            Prepared::Unmap { ranges, .. } => ranges
                .iter()
                .try_for_each(|r| unmap_range(pt, pgsizes, r.start, r.end)),
        }
    }

    fn execute(&self, state: &mut VmState<B>, ops: &mut [Prepared<'_, B>]) -> Result {
        let _signalling = SignallingSection::begin();
        if self.gpu.alloc_in_signalling() {
            // The test hook: an allocation that may recurse into reclaim, where the fence
            // rules forbid it. Lockdep must report it.
            drop(KBox::new(0u64, GFP_KERNEL));
        }
        for op in ops.iter_mut() {
            let res = match op {
                Prepared::Map {
                    range,
                    offset,
                    vm_bo,
                    vas,
                    ..
                } => state.gpuvm.sm_map(OpMapRequest {
                    addr: range.start,
                    range: range.end - range.start,
                    gem_offset: *offset,
                    vm_bo,
                    context: vas,
                }),
                Prepared::Unmap { ranges, vas } => ranges
                    .iter()
                    .try_for_each(|r| state.gpuvm.sm_unmap(r.start, r.end - r.start, vas)),
            };
            let res = res.and_then(|()| Self::apply_pt(&mut *self.pt.lock(), self.pgsizes, op));
            // The GPU may hold what the op removed in its TLB: invalidate it before the
            // tables and pages it used are freed, and before the ioctl returns.
            match op {
                Prepared::Map { range, .. } => self.gpu.flush(self.serial, range.start, range.end),
                Prepared::Unmap { ranges, .. } => {
                    for r in ranges.iter() {
                        self.gpu.flush(self.serial, r.start, r.end);
                    }
                }
            }
            self.pool.release_freed();
            if let Err(e) = res {
                // The prepare phase made this impossible: the VM no longer matches its page
                // table, so it takes no more mappings.
                kernel::warn_on!(true);
                self.usable.store(false, Relaxed);
                return Err(e);
            }
        }
        // After an exact budget nothing is left over.
        kernel::warn_on!(self.pool.trim() != 0);
        Ok(())
    }
}

#[pinned_drop]
impl<B: Backend> PinnedDrop for VmCore<B> {
    fn drop(self: Pin<&mut Self>) {
        let mut state = self.state.lock();
        let mut none = VaAllocs(KVec::new());
        // Unmapping the whole range splits nothing, so it needs no VA node; it removes every
        // VA, each of which holds a reference to the GPU VM and to a BO.
        if state.gpuvm.sm_unmap(0, self.va_end, &mut none).is_err() {
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
