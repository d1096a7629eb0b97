// SPDX-License-Identifier: GPL-2.0 or MIT

//! CPU-address mirrors: a fault-mode VM's view of its process's address space, on drm_gpusvm.
//!
//! A mirror mapping (VM_BIND MAP with CPU_ADDR_MIRROR) is GEM-less and maps nothing when it is
//! bound. A GPU fault in it finds or makes the drm_gpusvm range of the address (2 MiB, 64 KiB
//! or 4 KiB, the largest that fits the CPU mapping and the mirror), faults its pages in with
//! hmm, and maps them: page tables are budgeted and reserved from the VM's pool first, then
//! written under the notifier lock once the pages are known to be still valid.
//!
//! The notifier (reclaim context, notifier lock held for writing) zaps the leaves of the
//! ranges it is told about, invalidates the TLB, and unmaps their pages from DMA; it takes no
//! VM lock and allocates nothing. On munmap it also marks them unmapped: the next fault
//! service removes them before it looks for its range.

use core::ops::Range;
use kernel::{
    drm::{
        self,
        gpusvm::{Ctx, GpuSvm, GpuSvmOps, Invalidation, SvmExclusive},
    },
    mm::{
        mmu_notifier::{Event, IntervalNotifier},
        Mm,
    },
    prelude::*,
    sync::Arc,
    time::Delta,
};

use super::{
    gc::{self, Gc, Watcher},
    overlap,
    stats::{Clock, Stages},
    Backend, PtWork, Segments, VmCore,
};
use crate::{
    faults::{Access, Fault},
    mmu::{
        budget::Budget,
        walker::{zap_leaves, SZ_2M, SZ_4K},
    },
};

/// Range sizes, largest first: xe's.
static CHUNKS: [usize; 3] = [SZ_2M as usize, 64 << 10, SZ_4K as usize];

/// The CPU span of each MMU notifier drm_gpusvm makes: xe's default.
const NOTIFIER_SIZE: usize = 512 << 20;

/// How often a fault service starts again when the CPU side keeps changing under it.
const TRIES: u32 = 8;

/// The driver side of a VM's mirror.
///
/// # Invariants
///
/// `vm` is the VM whose state holds the mirror: the VM drops the mirror first thing when it
/// goes, so it outlives every callback.
pub(crate) struct Mirror<B: Backend> {
    vm: *const VmCore<B>,
    /// Removes the ranges the CPU unmapped.
    gc: Arc<Gc<B>>,
}

// SAFETY: `vm` is only used for shared access to a `VmCore`, which is `Send + Sync`.
unsafe impl<B: Backend> Send for Mirror<B> {}
// SAFETY: As above.
unsafe impl<B: Backend> Sync for Mirror<B> {}

impl<B: Backend> GpuSvmOps for Mirror<B> {
    type Driver = B::Driver;
    type RangeData = ();

    fn new_range(_svm: &GpuSvm<Self>) -> impl PinInit<(), Error> {
        Ok::<_, Error>(())
    }

    fn invalidate(svm: &GpuSvm<Self>, inv: &Invalidation<'_, Self>) {
        // SAFETY: The VM outlives its mirror's callbacks (type invariants).
        let vm = unsafe { &*svm.data().vm };
        vm.zap(inv);
        if inv.event() == Event::Unmap {
            svm.data().gc.kick();
        }
    }
}

/// A VM's mirror, and the right to change its ranges, under the VM lock; its collector, and
/// the watcher that feeds it.
pub(crate) struct Svm<B: Backend> {
    pub(super) gc: Arc<Gc<B>>,
    watcher: Pin<KBox<IntervalNotifier<Watcher<B>>>>,
    svm: Pin<KBox<GpuSvm<Mirror<B>>>>,
    tok: SvmExclusive,
}

impl<B: Backend> Drop for Svm<B> {
    fn drop(&mut self) {
        // The collector's work reaches into the VM: it ends first. The watcher, then the
        // mirror, go with the fields.
        self.gc.stop();
    }
}

impl<B: Backend> Svm<B> {
    /// The address space the VM mirrors.
    pub(super) fn mm(&self) -> &Mm {
        self.watcher.mm()
    }

    /// Whether a range of the mirror overlaps `span`.
    pub(super) fn has_ranges(&self, span: &Range<u64>) -> bool {
        let mut any = false;
        let _ = self
            .svm
            .for_each_range(&self.tok, to_cpu(span), |_| any = true);
        any
    }

    /// Removes the ranges the CPU unmapped; their entries were zapped and their pages unmapped
    /// by the notifier.
    pub(super) fn collect(&mut self) -> Result<usize> {
        self.svm
            .remove_ranges(&mut self.tok, 0..usize::MAX, |r| r.is_unmapped())
    }

    /// Counts the ranges, for debugfs.
    pub(super) fn count(&self) -> usize {
        let mut n = 0;
        let _ = self
            .svm
            .for_each_range(&self.tok, 0..usize::MAX, |_| n += 1);
        n
    }
}

fn to_cpu(r: &Range<u64>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// The pages of a range, as a fault got them.
struct Got {
    range: Range<u64>,
    segments: Segments,
    writable: bool,
}

impl<B: Backend> VmCore<B> {
    /// Makes the VM a mirror of the calling process's address space.
    pub(crate) fn enable_svm(self: &Arc<Self>, dev: &drm::Device<B::Driver>) -> Result {
        let task = kernel::current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let len = usize::try_from(self.va_end)?;
        let gc = Gc::new(core::ptr::from_ref(&**self))?;
        // INVARIANT: The VM holds the mirror, and drops it first when it goes.
        let mirror = Mirror {
            vm: core::ptr::from_ref(&**self),
            gc: gc.clone(),
        };
        let svm = KBox::pin_init(
            GpuSvm::new(c"mirage", dev, mm, 0..len, NOTIFIER_SIZE, &CHUNKS, mirror),
            GFP_KERNEL,
        )?;
        let tok = svm.take_exclusive()?;
        let watcher = gc::watch(mm, len, gc.clone())?;
        self.state.lock().svm = Some(Svm {
            gc,
            watcher,
            svm,
            tok,
        });
        Ok(())
    }

    /// Removes the ranges that overlap `span`, mapped or not: the GPU stops using them first.
    pub(super) fn invalidate_mirror(&self, svm: &mut Svm<B>, span: &Range<u64>) -> Result<usize> {
        let mut hull: Option<Range<u64>> = None;
        {
            let mut pt = self.pt.lock();
            svm.svm.for_each_range(&svm.tok, to_cpu(span), |r| {
                let (s, e) = (r.start() as u64, r.end() as u64);
                if zap_leaves(&mut *pt, s, e).is_err() {
                    kernel::warn_on!(true);
                }
                hull = Some(match hull.take() {
                    Some(h) => h.start.min(s)..h.end.max(e),
                    None => s..e,
                });
            })?;
            if let Some(h) = &hull {
                self.gpu.flush(self.serial, h.start, h.end);
            }
        }
        svm.svm.remove_ranges(&mut svm.tok, to_cpu(span), |_| true)
    }

    /// The notifier's work: the GPU stops using the ranges `inv` names.
    fn zap(&self, inv: &Invalidation<'_, Mirror<B>>) {
        let mut span: Option<Range<u64>> = None;
        {
            let mut pt = self.pt.lock();
            inv.for_each_range(|r| {
                let (s, e) = (r.start() as u64, r.end() as u64);
                // A range is mapped with leaves no larger than itself, and its tables stay:
                // nothing the page-table budgets count changes.
                if zap_leaves(&mut *pt, s, e).is_err() {
                    kernel::warn_on!(true);
                }
                span = Some(match span.take() {
                    Some(sp) => sp.start.min(s)..sp.end.max(e),
                    None => s..e,
                });
            });
            // Before the pages go, the TLB forgets them.
            if let Some(sp) = &span {
                self.gpu.flush(self.serial, sp.start, sp.end);
            }
        }
        let unmapped = inv.event() == Event::Unmap;
        inv.for_each_range(|r| {
            inv.unmap_pages(r);
            if unmapped {
                inv.set_unmapped(r);
            }
        });
    }

    /// Resolves a fault in a mirror: maps the pages of the range around the address. Returns
    /// the range's size; adds what each stage took to `stages`.
    pub(super) fn resolve_mirror(&self, f: &Fault, stages: &mut Stages) -> Result<u64> {
        let write = matches!(f.access(), Access::Write | Access::Atomic);
        for _ in 0..TRIES {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            // What the CPU unmapped goes first, so that the mirror and range found are current.
            self.collect_locked(state)?;
            let Some(va) = state.gpuvm.find_va(f.addr) else {
                return Err(EFAULT);
            };
            let Some(attrs) = va.data().mirror else {
                return Err(EFAULT);
            };
            let mirror = va.range();

            // The binds that change the mirror execute first: its page-table entries are
            // theirs until then.
            let mut deps = KVec::new();
            for p in state.pending.iter() {
                if !p.fence.is_signaled() && overlap(&p.ranges, core::slice::from_ref(&mirror)) {
                    deps.push(p.fence.clone(), GFP_KERNEL)?;
                }
            }
            if !deps.is_empty() {
                drop(guard);
                for d in deps.iter() {
                    d.wait(false, Delta::from_secs(10))?;
                }
                continue;
            }

            let Some(svm) = state.svm.as_mut() else {
                return Err(EFAULT);
            };
            let t = Clock::now();
            let got = Self::get_pages(svm, f.addr, &mirror, write);
            stages.get_pages += t.elapsed();
            let got = match got {
                Err(e) if e == EAGAIN => continue,
                r => r?,
            };
            let t = Clock::now();

            let work = PtWork::Fill {
                prot: attrs.prot(got.writable),
                range: got.range.clone(),
                segments: got.segments,
            };
            // The tables the update creates, counted over the page table as queued binds leave
            // it. The dry run is undone: the update goes to the page table itself, now, and a
            // mirror's leaves must never be in the overlay, as the notifier removes them
            // without the VM lock.
            let tables = {
                let mut dry = Budget::new(&self.pt, &mut state.future);
                Self::apply_pt(&mut dry, self.pgsizes, &work)?;
                dry.tables()
            };
            self.pool
                .reserve_for(tables, false, self.gpu.fail_reserve())?;

            let Some(svm) = state.svm.as_ref() else {
                return Err(EFAULT);
            };
            let Some(range) = svm.svm.find(&svm.tok, f.addr as usize) else {
                self.pool.unreserve(tables);
                continue;
            };
            let lock = svm.svm.notifier_read();
            // An invalidation since the pages were got: get them again.
            if !range.pages_valid(&lock) {
                drop(lock);
                self.pool.unreserve(tables);
                continue;
            }
            let mut pt = self.pt.lock();
            let res = Self::apply_pt(&mut *pt, self.pgsizes, &work);
            stages.bind += t.elapsed();
            // Entries that were invalid are not cached; a table a block replaced may be.
            if self.pool.freed_pending() > 0 {
                let t = Clock::now();
                self.gpu.flush(self.serial, got.range.start, got.range.end);
                stages.tlb += t.elapsed();
                self.pool.release_freed();
            }
            drop(pt);
            drop(lock);
            if res.is_err() {
                // The budget made this impossible.
                kernel::warn_on!(true);
                self.usable.store(false, kernel::sync::atomic::Relaxed);
            }
            return res.map(|()| got.range.end - got.range.start);
        }
        // The CPU side kept changing: the job is aborted, and may be run again.
        Err(EBUSY)
    }

    /// Finds or makes the range at `addr` in `mirror`, faults its pages in, and copies their
    /// bus addresses out. `EAGAIN`: start again.
    fn get_pages(svm: &mut Svm<B>, addr: u64, mirror: &Range<u64>, write: bool) -> Result<Got> {
        let span = to_cpu(mirror);
        let rw = Ctx::default();
        let ro = Ctx {
            read_only: true,
            ..Ctx::default()
        };
        // Writable where the CPU mapping is, so that a later write does not fault again; a
        // read of read-only memory maps it read-only.
        let a = addr as usize;
        // drm_gpusvm refuses a writable range of a read-only mapping before it inserts one.
        let (range, ctx) = match svm.svm.find_or_insert(&mut svm.tok, a, span.clone(), &rw) {
            Ok(range) => (range, rw),
            Err(e) if e == EPERM && !write => {
                (svm.svm.find_or_insert(&mut svm.tok, a, span, &ro)?, ro)
            }
            Err(e) => return Err(e),
        };
        if range.is_unmapped() {
            return Err(EAGAIN);
        }
        match range.get_pages(&ctx) {
            // The CPU mapping changed meanwhile: the collector sorts it out.
            Err(e) if e == EFAULT && range.is_unmapped() => return Err(EAGAIN),
            r => r?,
        }
        let npages = (range.end() - range.start()) / SZ_4K as usize;
        // Allocated before the lock: nothing may be allocated under it.
        let mut segments = Segments::with_capacity(npages, GFP_KERNEL)?;
        {
            let lock = svm.svm.notifier_read();
            if !range.pages_valid(&lock) {
                return Err(EAGAIN);
            }
            range.for_each_dma(&lock, |addr, len| {
                // Contiguous pieces make one segment, so that blocks can map them.
                if let Some(last) = segments.last_mut() {
                    if last.0 + last.1 == addr {
                        last.1 += len;
                        return;
                    }
                }
                // Cannot fail: there is room for a piece per page.
                let _ = segments.push_within_capacity((addr, len));
            });
        }
        Ok(Got {
            range: range.start() as u64..range.end() as u64,
            segments,
            writable: !ctx.read_only,
        })
    }
}
