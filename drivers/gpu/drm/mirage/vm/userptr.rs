// SPDX-License-Identifier: GPL-2.0 or MIT

//! Userptrs: GPU mappings of a range of a process's own memory, which stays unpinned.
//!
//! A userptr watches its CPU range with an MMU interval notifier and gets its pages with
//! `hmm_range_fault`, taking no page reference: the pages are the range's only until the next
//! invalidation. The protocol is `Documentation/gpu/drm-vm-bind-locking.rst`'s, with the
//! invalidated list that document leaves as an optimisation:
//!
//! - The invalidation (reclaim context: no VM lock, no `dma_resv`, no allocation) takes the
//!   VM's notifier lock for writing, records the new sequence number, queues the userptr on the
//!   VM's invalidated list, waits for every job of the VM (its reservation object's BOOKKEEP
//!   fences), and unmaps the old pages from DMA. When it returns the GPU no longer uses them.
//!   The page table still points at them, but no job that could use it can run any more: every
//!   later job's EXEC finds the userptr on the list and rebinds it first.
//! - EXEC, under the VM lock, faults in only the userptrs on the list, rebinds them with a job
//!   whose fence it adds to the VM's reservation object (KERNEL usage, which every later job of
//!   the VM waits for), then, holding the notifier lock for reading until its job is pushed,
//!   checks that no invalidation collided: a userptr it revalidated leaves the list only then,
//!   and an EXEC that still finds the list non-empty starts again.
//!
//! A userptr whose range is no longer mapped in the process (munmap), or no longer allows the
//! access (mprotect), is unmapped from the GPU at the next EXEC: jobs that touch it fault. It
//! stays so until it is bound again.

use core::ops::Range;
use kernel::{
    dma_buf::resv::{DmaResv, Usage},
    drm::gem::IntoGEMObject,
    mm::{
        hmm::{self, Access, HmmPfn},
        mmu_notifier::{Event, IntervalNotifier, IntervalNotifierOps, NotifierRange},
        MmWithUser,
    },
    new_mutex, new_rwsem, new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        rwsem::{ReadGuard, RwSemaphore},
        Arc, Mutex, SpinLock,
    },
    time::Delta,
};

use super::{Backend, Segments};
use crate::mmu::walker::SZ_4K;

/// The invalidated list and the state of each userptr id on it.
struct Invalidated {
    /// The ids of the userptrs to revalidate, in the order they were queued.
    list: KVec<u32>,
    /// By id: [`QUEUED`], [`RETIRED`].
    flags: KVec<u8>,
}

/// The id is on the list.
const QUEUED: u8 = 1;
/// The userptr left the VA tree: its notifier, still there until its unbind executed, no
/// longer queues it.
const RETIRED: u8 = 2;

/// What the notifiers of a VM's userptrs share.
#[pin_data]
pub(crate) struct Notifiers<B: Backend> {
    /// The VM's userptr notifier lock. An invalidation holds it for writing while it records
    /// its sequence number and queues its userptr; EXEC holds it for reading from its final
    /// check until its job's fence is in the VM's reservation object, so that the invalidation
    /// either waits for that job or the check sees it.
    #[pin]
    lock: RwSemaphore<()>,
    /// The userptrs invalidated since they were last revalidated, and those of rebinds that
    /// did not execute. It has room for every id the VM gave out, so that queueing never
    /// allocates.
    #[pin]
    invalidated: SpinLock<Invalidated>,
    /// Whose reservation object the VM's jobs are in.
    root: ARef<B::Object>,
    backend: Arc<B>,
    /// Userptrs revalidated by the last EXEC that had any to revalidate, and by all.
    revalidated_last: Atomic<u64>,
    revalidated_total: Atomic<u64>,
    /// Invalidations, for debugfs.
    invalidations: Atomic<u64>,
}

impl<B: Backend> Notifiers<B> {
    pub(crate) fn new(root: ARef<B::Object>, backend: Arc<B>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            lock <- new_rwsem!((), "mirage_userptr_notifier"),
            invalidated <- new_spinlock!(
                Invalidated {
                    list: KVec::new(),
                    flags: KVec::new(),
                },
                "mirage_userptr_invalidated"
            ),
            root,
            backend,
            revalidated_last: Atomic::new(0),
            revalidated_total: Atomic::new(0),
            invalidations: Atomic::new(0),
        })
    }

    fn resv(&self) -> &DmaResv {
        // SAFETY: A GEM object's `resv` points at its reservation object from creation until
        // it is freed, and `self` holds `root`.
        unsafe { DmaResv::from_raw((*self.root.as_raw()).resv) }
    }

    /// Makes room for ids below `ids`.
    pub(crate) fn reserve_ids(&self, ids: usize) -> Result {
        if self.invalidated.lock().flags.len() >= ids {
            return Ok(());
        }
        // Not under the spinlock: allocate, then move the entries across.
        let cap = ids.max(16).next_power_of_two();
        let mut list = KVec::with_capacity(cap, GFP_KERNEL)?;
        let mut flags = KVec::from_elem(0u8, cap, GFP_KERNEL)?;
        let mut inv = self.invalidated.lock();
        if inv.flags.len() >= cap {
            return Ok(());
        }
        for &id in inv.list.iter() {
            // `list` is larger than the old one.
            let _ = list.push_within_capacity(id);
        }
        flags[..inv.flags.len()].copy_from_slice(&inv.flags);
        core::mem::swap(&mut inv.list, &mut list);
        core::mem::swap(&mut inv.flags, &mut flags);
        drop(inv);
        // The old arrays are freed outside the spinlock.
        drop((list, flags));
        Ok(())
    }

    /// Queues `id`, unless it is queued already or retired. Allocates nothing.
    fn queue_locked(inv: &mut Invalidated, id: u32) {
        let Some(f) = inv.flags.get_mut(id as usize) else {
            kernel::warn_on!(true);
            return;
        };
        if *f != 0 {
            return;
        }
        // There is room for every id (`reserve_ids`).
        if inv.list.push_within_capacity(id).is_ok() {
            *f = QUEUED;
        } else {
            kernel::warn_on!(true);
        }
    }

    /// Queues the userptrs of a rebind that did not execute: the GPU does not map their
    /// current pages. Allocates nothing.
    pub(crate) fn requeue(&self, ids: &[u32]) {
        let mut inv = self.invalidated.lock();
        for &id in ids {
            Self::queue_locked(&mut inv, id);
        }
    }

    /// The ids of the userptrs to revalidate, sorted.
    pub(crate) fn to_revalidate(&self) -> Result<KVec<u32>> {
        let mut out = KVec::new();
        loop {
            let n = self.invalidated.lock().list.len();
            out.reserve(n, GFP_KERNEL)?;
            let inv = self.invalidated.lock();
            if inv.list.len() > out.capacity() {
                continue;
            }
            for &id in inv.list.iter() {
                let _ = out.push_within_capacity(id);
            }
            break;
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Takes the userptrs in `done` (sorted), which an EXEC revalidated, off the list, and
    /// says whether it is empty then. Call it under the notifier lock, for the final check.
    pub(crate) fn validated(&self, _lock: &ReadGuard<'_, ()>, done: &[u32]) -> bool {
        let mut inv = self.invalidated.lock();
        let Invalidated { list, flags } = &mut *inv;
        list.retain(|id| {
            let keep = done.binary_search(id).is_err();
            if !keep {
                if let Some(f) = flags.get_mut(*id as usize) {
                    *f &= !QUEUED;
                }
            }
            keep
        });
        list.is_empty()
    }

    /// Whether nothing is left to revalidate. Call it under the notifier lock, for the final
    /// check.
    pub(crate) fn all_valid(&self, _lock: &ReadGuard<'_, ()>) -> bool {
        self.invalidated.lock().list.is_empty()
    }

    /// The userptr `id` left the VA tree: it is no longer queued.
    pub(crate) fn retire(&self, id: u32) {
        let mut inv = self.invalidated.lock();
        let Invalidated { list, flags } = &mut *inv;
        if let Some(f) = flags.get_mut(id as usize) {
            if *f & QUEUED != 0 {
                list.retain(|x| *x != id);
            }
            *f = RETIRED;
        }
    }

    /// The userptr `id` and its notifier are gone: the id may be given out again.
    pub(crate) fn free(&self, id: u32) {
        if let Some(f) = self.invalidated.lock().flags.get_mut(id as usize) {
            *f = 0;
        }
    }

    /// Takes the notifier lock for reading, for EXEC's final check.
    pub(crate) fn read(&self) -> ReadGuard<'_, ()> {
        self.lock.read()
    }

    /// Counts an EXEC's revalidation of `n` userptrs.
    pub(crate) fn count_revalidated(&self, n: usize) {
        self.revalidated_last.store(n as u64, Relaxed);
        self.revalidated_total.fetch_add(n as u64, Relaxed);
    }

    /// Writes the counters, for debugfs.
    pub(crate) fn show(
        &self,
        f: &mut kernel::fmt::Formatter<'_>,
        live: usize,
    ) -> kernel::fmt::Result {
        writeln!(
            f,
            "userptr live {} invalidated {} invalidations {} revalidated_last {} \
             revalidated_total {}",
            live,
            self.invalidated.lock().list.len(),
            self.invalidations.load(Relaxed),
            self.revalidated_last.load(Relaxed),
            self.revalidated_total.load(Relaxed)
        )
    }
}

/// The bus addresses of a userptr's pages, while they are mapped for DMA.
struct Pages {
    /// One per page of the userptr.
    dma: KVVec<u64>,
    mapped: bool,
}

/// What a userptr's notifier carries.
#[pin_data]
pub(crate) struct Watch<B: Backend> {
    shared: Arc<Notifiers<B>>,
    id: u32,
    write: bool,
    /// Part of the range was unmapped (munmap, mremap): the userptr stays unmapped on the GPU
    /// until it is bound again, even if new memory comes at the same address. Set under the
    /// notifier lock, for writing.
    unmapped: Atomic<bool>,
    /// Changed under the notifier lock, read or write.
    #[pin]
    pages: Mutex<Pages>,
}

impl<B: Backend> Watch<B> {
    /// Unmaps the pages from DMA. The GPU no longer uses them.
    fn unmap(&self, pages: &mut Pages) {
        if !pages.mapped {
            return;
        }
        for &a in pages.dma.iter() {
            // SAFETY: `a` was mapped by `fault` with this direction, and is unmapped once
            // (`mapped`); the GPU no longer uses it: the invalidation waited for the VM's jobs,
            // or the VM no longer maps the userptr.
            unsafe { self.shared.backend.dma_unmap_page(a, self.write) };
        }
        pages.mapped = false;
    }
}

impl<B: Backend> IntervalNotifierOps for Watch<B> {
    fn invalidate(n: &IntervalNotifier<Self>, range: &NotifierRange<'_>, cur_seq: u64) -> bool {
        // Waiting for the GPU sleeps.
        if !range.is_blockable() {
            return false;
        }
        let w = n.data();
        let shared = &*w.shared;
        let _lock = shared.lock.write();
        n.set_seq(cur_seq);
        if range.event() == Event::Unmap {
            w.unmapped.store(true, Relaxed);
        }
        shared.invalidations.fetch_add(1, Relaxed);
        Notifiers::<B>::queue_locked(&mut shared.invalidated.lock(), w.id);
        // Every job that may use the old pages is in the VM's reservation object, or its EXEC
        // has yet to take the notifier lock and will see the userptr queued.
        let waited = shared.resv().wait(
            Usage::Bookkeep,
            false,
            Delta::from_secs(i64::from(i32::MAX)),
        );
        kernel::warn_on!(waited.is_err());
        let mut pages = w.pages.lock();
        w.unmap(&mut pages);
        true
    }
}

/// The flags of allocations whose size userspace picks.
fn nowarn() -> kernel::alloc::Flags {
    GFP_KERNEL | kernel::alloc::flags::__GFP_NOWARN
}

/// A userptr: where the VM maps it, and the notifier that keeps it current.
#[pin_data(PinnedDrop)]
pub(crate) struct Userptr<B: Backend> {
    #[pin]
    notifier: IntervalNotifier<Watch<B>>,
    /// The CPU address of its start.
    cpu: u64,
    /// The GPU range it was bound at; the VA tree may since have cut it.
    gpu: Range<u64>,
    prot: u32,
}

/// The pages of a userptr as a fault found them.
pub(crate) enum Faulted {
    /// The bus address of each page, current for sequence number `seq`.
    Pages { dma: KVVec<u64>, seq: u64 },
    /// The range is not mapped in the process, or does not allow the access.
    Gone,
}

impl<B: Backend> Userptr<B> {
    /// Watches `[cpu, cpu + gpu.len())` of `mm`, for a mapping at `gpu` with `prot`.
    pub(crate) fn new(
        mm: &MmWithUser,
        shared: &Arc<Notifiers<B>>,
        id: u32,
        cpu: u64,
        gpu: Range<u64>,
        prot: u32,
        write: bool,
    ) -> Result<Pin<KBox<Self>>> {
        let len = gpu.end - gpu.start;
        let start = usize::try_from(cpu).map_err(|_| EFAULT)?;
        let length = usize::try_from(len).map_err(|_| EFAULT)?;
        start.checked_add(length).ok_or(EFAULT)?;
        KBox::pin_init(
            try_pin_init!(Self {
                notifier <- IntervalNotifier::insert(
                    mm,
                    start,
                    length,
                    try_pin_init!(Watch {
                        shared: shared.clone(),
                        id,
                        write,
                        unmapped: Atomic::new(false),
                        pages <- new_mutex!(Pages { dma: KVVec::new(), mapped: false }),
                    }? Error),
                ),
                cpu,
                gpu,
                prot,
            }? Error),
            GFP_KERNEL,
        )
    }

    pub(crate) fn id(&self) -> u32 {
        self.notifier.data().id
    }

    pub(crate) fn cpu(&self) -> u64 {
        self.cpu
    }

    pub(crate) fn gpu(&self) -> &Range<u64> {
        &self.gpu
    }

    pub(crate) fn prot(&self) -> u32 {
        self.prot
    }

    /// Faults the pages in and maps them for DMA.
    ///
    /// Fails with `EFAULT` when the range is not mapped in the process or does not allow the
    /// access (a bind reports it), and with `EINTR`, `EBUSY` or `ENOMEM`.
    pub(crate) fn fault(&self) -> Result<Faulted> {
        let w = self.notifier.data();
        if w.unmapped.load(Relaxed) {
            return Ok(Faulted::Gone);
        }
        // The process may be exiting: its memory is then gone.
        let Some(mm) = self.notifier.mm().mmget_not_zero() else {
            return Ok(Faulted::Gone);
        };
        let range = self.notifier.range();
        let n = (range.end - range.start) / SZ_4K as usize;
        // Userspace picks the size: a range too large to track fails quietly, with ENOMEM.
        let mut pfns = KVVec::from_elem(HmmPfn::EMPTY, n, nowarn())?;
        let access = if w.write { Access::Write } else { Access::Read };
        loop {
            let seq = match hmm::fault(&self.notifier, &mm, range.clone(), access, &mut pfns) {
                Ok(seq) => seq,
                Err(e) if e == EFAULT || e == EPERM => return Ok(Faulted::Gone),
                Err(e) => return Err(e),
            };
            // The notifier takes the locks below in reclaim: allocate before them.
            let mut dma = KVVec::with_capacity(n, nowarn())?;
            let mut copy = KVVec::with_capacity(n, nowarn())?;
            let _lock = w.shared.lock.read();
            if self.notifier.read_retry(seq) {
                continue;
            }
            // An unmap after the check above collided with the fault.
            if w.unmapped.load(Relaxed) {
                return Ok(Faulted::Gone);
            }
            let mut pages = w.pages.lock();
            // The old pages may still be mapped if no invalidation came since.
            w.unmap(&mut pages);
            for &p in pfns.iter() {
                // SAFETY: `p` came from the fault whose sequence number was just checked under
                // the notifier lock, which is held; the notifier unmaps the page before it can
                // go (`Watch::unmap`).
                match unsafe { w.shared.backend.dma_map_page(p, w.write) } {
                    Ok(a) => {
                        let _ = dma.push_within_capacity(a);
                        let _ = copy.push_within_capacity(a);
                    }
                    Err(e) => {
                        for &a in dma.iter() {
                            // SAFETY: Mapped just above, and unmapped once.
                            unsafe { w.shared.backend.dma_unmap_page(a, w.write) };
                        }
                        return Err(e);
                    }
                }
            }
            pages.dma = dma;
            pages.mapped = true;
            return Ok(Faulted::Pages { dma: copy, seq });
        }
    }

    /// Whether an invalidation came after the fault that returned `seq`. Call it under the
    /// notifier lock.
    pub(crate) fn collided(&self, _lock: &ReadGuard<'_, ()>, seq: u64) -> bool {
        self.notifier.read_retry(seq)
    }
}

#[pinned_drop]
impl<B: Backend> PinnedDrop for Userptr<B> {
    fn drop(self: Pin<&mut Self>) {
        // The GPU no longer maps it: the pages go from DMA; the notifier goes with the field.
        let w = self.notifier.data();
        let _lock = w.shared.lock.read();
        let mut pages = w.pages.lock();
        w.unmap(&mut pages);
    }
}

/// The bus-address segments of `[start, start + len)` of a userptr whose pages are at `dma`
/// (one per page, from the userptr's CPU start), merged where they touch.
pub(crate) fn segments(dma: &[u64], start: u64, len: u64) -> Result<Segments> {
    let first = (start / SZ_4K) as usize;
    let n = (len / SZ_4K) as usize;
    let pages = dma.get(first..first + n).ok_or(EINVAL)?;
    let mut out = Segments::new();
    for &a in pages {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == a => last.1 += SZ_4K,
            _ => out.push((a, SZ_4K), nowarn())?,
        }
    }
    Ok(out)
}
