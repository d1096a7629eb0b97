// SPDX-License-Identifier: GPL-2.0 OR MIT

//! DRM GPU SVM: a GPU's mirror of a process's address space (`struct drm_gpusvm`).
//!
//! A GPU that shares its virtual addresses with a process (the "system allocator": the GPU
//! dereferences `malloc`ed pointers) maps the process's memory on GPU page fault, range by
//! range. [`GpuSvm`] keeps the ranges: [`GpuSvm::find_or_insert`] finds the range of a faulting
//! address, or makes one of the largest chunk size that fits the CPU mapping and the GPU
//! mapping; [`SvmRange::get_pages`] faults its pages in and maps them for DMA; the driver then
//! writes its page table under the notifier lock ([`GpuSvm::notifier_read`]), after checking
//! that no invalidation came in between ([`SvmRange::pages_valid`]).
//!
//! drm_gpusvm subscribes to the CPU page tables with MMU interval notifiers. Before they
//! change, it calls [`GpuSvmOps::invalidate`] with its notifier lock held for writing; the
//! driver stops the GPU's use of the ranges there (zaps its page-table entries and invalidates
//! its TLB), then unmaps their pages from DMA ([`Invalidation::unmap_pages`]). A range whose
//! CPU memory is unmapped ([`Invalidation::set_unmapped`]) can never be faulted in again: the
//! driver removes it later, under its own lock ([`GpuSvm::remove_ranges`]), and the next fault
//! makes a new one.
//!
//! Locks, outermost first: the driver's lock for the mirror, which every call that changes the
//! set of ranges needs (an [`SvmExclusive`] stands for it), the process's `mmap_lock`, taken
//! inside, and the notifier lock. The notifier lock is taken in reclaim (the callback runs
//! there): nothing may be allocated under it.
//!
//! C header: [`include/drm/drm_gpusvm.h`](srctree/include/drm/drm_gpusvm.h)

use crate::{
    bindings, drm,
    error::{from_err_ptr, to_result},
    ffi::{c_int, c_void},
    mm::{mmu_notifier::Event, Mm},
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
    },
    types::Opaque,
};
use core::ops::Range;

/// The driver side of a [`GpuSvm`].
pub trait GpuSvmOps: Sized + Send + Sync + 'static {
    /// The DRM driver whose device maps the pages.
    type Driver: drm::Driver;

    /// The driver's data of each range.
    type RangeData: Send + Sync;

    /// Initialises the data of a new range of `svm`. Called under the driver's lock and the
    /// process's `mmap_lock`: it may allocate, but not take `mmap_lock`.
    fn new_range(svm: &GpuSvm<Self>) -> impl PinInit<Self::RangeData, Error>;

    /// The CPU page tables of part of the mirror are about to change.
    ///
    /// Called with the notifier lock held for writing, for invalidations that may sleep only
    /// (drm_gpusvm retries the others). The driver stops the GPU's use of the ranges
    /// [`Invalidation::for_each_range`] gives, and unmaps their pages
    /// ([`Invalidation::unmap_pages`]). It must not allocate, take the driver's lock or the
    /// notifier lock, or remove ranges.
    fn invalidate(svm: &GpuSvm<Self>, inv: &Invalidation<'_, Self>);
}

/// How a range is found or made, and its pages got (`struct drm_gpusvm_ctx`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    /// The GPU only reads: the CPU mapping needs no write access, and pages are faulted in
    /// for reading.
    pub read_only: bool,
    /// Chunks up to this size are made only where every CPU page is present already.
    pub check_pages_threshold: usize,
}

impl Ctx {
    fn raw(&self) -> bindings::drm_gpusvm_ctx {
        // SAFETY: `drm_gpusvm_ctx` is integers, pointers and bitfields: all zeroes is valid.
        let mut c: bindings::drm_gpusvm_ctx = unsafe { core::mem::zeroed() };
        c.check_pages_threshold = self.check_pages_threshold;
        c.set_read_only(self.read_only.into());
        c
    }
}

/// A mirror of a process's address space (`struct drm_gpusvm`), with the driver's data `T`.
///
/// # Invariants
///
/// * `svm` was initialised by `drm_gpusvm_init` with the ops of `T`, for `drm`'s device, and
///   is finalised only by the drop.
/// * Every range of `svm` is the `range` field of an [`SvmRange<T>`] that `range_alloc` made.
/// * `exclusive_taken` is set once the [`SvmExclusive`] of this mirror exists.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct GpuSvm<T: GpuSvmOps> {
    #[pin]
    svm: Opaque<bindings::drm_gpusvm>,
    drm: ARef<drm::Device<T::Driver>>,
    exclusive_taken: Atomic<bool>,
    data: T,
}

// SAFETY: drm_gpusvm serialises itself with its notifier lock and the driver's lock (which the
// `SvmExclusive` of the mirror stands for); `T` is `Send + Sync`.
unsafe impl<T: GpuSvmOps> Send for GpuSvm<T> {}
// SAFETY: As above.
unsafe impl<T: GpuSvmOps> Sync for GpuSvm<T> {}

/// The right to change the set of ranges of one [`GpuSvm`]: the driver keeps it under the lock
/// that serialises its faults, binds and garbage collection, which drm_gpusvm calls the driver
/// lock.
///
/// # Invariants
///
/// There is at most one per mirror; `svm` is its address.
pub struct SvmExclusive {
    svm: *const c_void,
}

// SAFETY: The token carries no data; it only proves who may call some methods.
unsafe impl Send for SvmExclusive {}
// SAFETY: As above.
unsafe impl Sync for SvmExclusive {}

/// A range of the mirror (`struct drm_gpusvm_range`), with its pages and the driver's data.
///
/// # Invariants
///
/// `range` is a range of a [`GpuSvm<T>`]; `pages` was initialised by `drm_gpusvm_init_pages`
/// for the mirror's device.
#[repr(C)]
#[pin_data]
pub struct SvmRange<T: GpuSvmOps> {
    #[pin]
    range: Opaque<bindings::drm_gpusvm_range>,
    #[pin]
    pages: Opaque<bindings::drm_gpusvm_pages>,
    #[pin]
    data: T::RangeData,
}

/// The notifier lock, held for reading: the pages of ranges stay as they are.
///
/// # Invariants
///
/// The notifier lock of `svm` is held for reading until the drop.
pub struct NotifierReadGuard<'a, T: GpuSvmOps> {
    svm: &'a GpuSvm<T>,
}

/// An invalidation in progress, in [`GpuSvmOps::invalidate`]: the notifier lock is held for
/// writing.
///
/// # Invariants
///
/// `notifier` is a notifier of `svm`, and `mmu_range` the range it invalidates; the notifier
/// lock of `svm` is held for writing for `'a`.
pub struct Invalidation<'a, T: GpuSvmOps> {
    svm: &'a GpuSvm<T>,
    notifier: *mut bindings::drm_gpusvm_notifier,
    mmu_range: *const bindings::mmu_notifier_range,
}

impl<T: GpuSvmOps> GpuSvm<T> {
    /// The ops, in static memory: drm_gpusvm keeps the pointer.
    const fn ops() -> &'static bindings::drm_gpusvm_ops {
        &bindings::drm_gpusvm_ops {
            notifier_alloc: None,
            notifier_free: None,
            range_alloc: Some(Self::range_alloc),
            range_free: Some(Self::range_free),
            invalidate: Some(Self::invalidate_cb),
        }
    }

    /// Mirrors `span` of `mm` for `dev`.
    ///
    /// Ranges are made with the first of `chunks` that fits: descending powers of two, the
    /// last 4 KiB. The MMU notifiers cover `notifier_size` bytes each, a power of two no
    /// smaller than the first chunk.
    pub fn new(
        name: &'static CStr,
        dev: &drm::Device<T::Driver>,
        mm: &Mm,
        span: Range<usize>,
        notifier_size: usize,
        chunks: &'static [usize],
        data: T,
    ) -> impl PinInit<Self, Error> {
        let chunks_ok = chunks.last() == Some(&4096)
            && chunks.windows(2).all(|w| w[0] > w[1])
            && chunks.iter().all(|c| c.is_power_of_two())
            && notifier_size.is_power_of_two()
            && notifier_size >= chunks[0];
        let (start, len) = (span.start, span.end.saturating_sub(span.start));
        let mm = mm.as_raw();
        let drm: ARef<drm::Device<T::Driver>> = dev.into();
        try_pin_init!(Self {
            svm <- Opaque::try_ffi_init(move |slot: *mut bindings::drm_gpusvm| {
                if !chunks_ok || len == 0 {
                    return Err(EINVAL);
                }
                let num = c_int::try_from(chunks.len())?;
                // SAFETY: `slot` is ours to initialise. `name`, the ops and `chunks` are
                // static, as drm_gpusvm keeps the pointers; `mm` is alive (the caller's
                // reference), and drm_gpusvm takes its own (`mmgrab`).
                to_result(unsafe {
                    bindings::drm_gpusvm_init(
                        slot,
                        name.as_char_ptr(),
                        mm,
                        start,
                        len,
                        notifier_size,
                        Self::ops(),
                        chunks.as_ptr(),
                        num,
                    )
                })
            }),
            drm,
            exclusive_taken: Atomic::new(false),
            data,
        }? Error)
    }

    fn as_raw(&self) -> *mut bindings::drm_gpusvm {
        self.svm.get()
    }

    /// The driver's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// Takes the right to change the set of ranges; `EBUSY` if it was taken already.
    pub fn take_exclusive(&self) -> Result<SvmExclusive> {
        self.exclusive_taken
            .cmpxchg(false, true, Relaxed)
            .map_err(|_| EBUSY)?;
        // INVARIANT: The flag was clear: this is the first and only token.
        Ok(SvmExclusive {
            svm: core::ptr::from_ref(self).cast(),
        })
    }

    fn check(&self, tok: &SvmExclusive) -> Result {
        if tok.svm == core::ptr::from_ref(self).cast() {
            Ok(())
        } else {
            crate::warn_on!(true);
            Err(EINVAL)
        }
    }

    /// The range of the mirror at `addr`, made if there is none.
    ///
    /// A new range is the first chunk, aligned to its size, that lies inside the CPU mapping
    /// at `addr`, inside `gpuva` (the GPU mapping that mirrors it) and overlaps no other range.
    /// Errors: `ENOENT` if nothing is mapped at `addr` in the process, `EPERM` if the mapping
    /// is not writable and `ctx` does not say read-only, `EIO` for I/O and PFN mappings,
    /// `EFAULT` if the process is exiting, `EINVAL` if `addr` is outside the mirror or no
    /// chunk fits, `ENOMEM`.
    ///
    /// Takes `mmap_lock`; the caller must not hold it.
    pub fn find_or_insert<'a>(
        &'a self,
        tok: &'a mut SvmExclusive,
        addr: usize,
        gpuva: Range<usize>,
        ctx: &Ctx,
    ) -> Result<&'a SvmRange<T>> {
        self.check(tok)?;
        let c = ctx.raw();
        // SAFETY: The mirror is initialised; `tok` stands for the driver lock drm_gpusvm
        // needs; `c` lives across the call.
        let range = from_err_ptr(unsafe {
            bindings::drm_gpusvm_range_find_or_insert(
                self.as_raw(),
                addr,
                gpuva.start,
                gpuva.end,
                &c,
            )
        })?;
        // SAFETY: Ranges of the mirror are `SvmRange<T>`s (type invariants); removing one needs
        // `tok`, which the returned reference borrows.
        Ok(unsafe { SvmRange::from_raw(range) })
    }

    /// The range that holds `addr`, if there is one.
    pub fn find<'a>(&'a self, tok: &'a SvmExclusive, addr: usize) -> Option<&'a SvmRange<T>> {
        self.check(tok).ok()?;
        let mut found = None;
        // SAFETY: `tok` stands for the driver lock: the set of ranges does not change.
        unsafe {
            self.walk(addr..addr.saturating_add(1), |r| {
                found.get_or_insert(r);
            })
        };
        // SAFETY: Ranges of the mirror are `SvmRange<T>`s; removing one needs `tok` mutably,
        // which the returned reference borrows.
        found.map(|r| unsafe { SvmRange::from_raw(r) })
    }

    /// Calls `f` on every range that overlaps `span`, in address order.
    pub fn for_each_range(
        &self,
        tok: &SvmExclusive,
        span: Range<usize>,
        mut f: impl FnMut(&SvmRange<T>),
    ) -> Result {
        self.check(tok)?;
        // SAFETY: `tok` stands for the driver lock: the set of ranges does not change.
        unsafe { self.walk(span, |r| f(SvmRange::from_raw(r))) };
        Ok(())
    }

    /// Removes the ranges that overlap `span` and for which `pred` says so: unmaps their pages
    /// from DMA and takes them out of the mirror. Returns how many went.
    ///
    /// The GPU must no longer use them. May sleep: removing the last range of a notifier
    /// removes the notifier, which waits for its callbacks.
    pub fn remove_ranges(
        &self,
        tok: &mut SvmExclusive,
        span: Range<usize>,
        mut pred: impl FnMut(&SvmRange<T>) -> bool,
    ) -> Result<usize> {
        self.check(tok)?;
        let mut n = 0;
        let c = Ctx::default().raw();
        // SAFETY: `tok` stands for the driver lock, which removal needs; the walk reads the
        // next range before calling back, so removing the current one is fine.
        unsafe {
            self.walk(span, |r| {
                let range = SvmRange::<T>::from_raw(r);
                if !pred(range) {
                    return;
                }
                // The pages go first: drm_gpusvm_range_remove does not unmap them, and a
                // range out of the tree would escape the next invalidation.
                bindings::drm_gpusvm_unmap_pages(
                    self.as_raw(),
                    range.pages.get(),
                    range.npages(),
                    &c,
                );
                bindings::drm_gpusvm_range_remove(self.as_raw(), r);
                n += 1;
            })
        };
        Ok(n)
    }

    /// Takes the notifier lock for reading: until the guard goes, no invalidation runs, and
    /// [`SvmRange::pages_valid`] stays true if it is. Nothing may be allocated under it.
    pub fn notifier_read(&self) -> NotifierReadGuard<'_, T> {
        // SAFETY: The mirror is initialised, so its notifier lock is.
        unsafe { bindings::down_read(&raw mut (*self.as_raw()).notifier_lock) };
        // INVARIANT: The lock is held for reading.
        NotifierReadGuard { svm: self }
    }

    /// Calls `f` with every range overlapping `span`, in address order, reading the next
    /// range before each call.
    ///
    /// # Safety
    ///
    /// The caller holds the driver lock (or the notifier lock, if `f` removes nothing).
    unsafe fn walk(&self, span: Range<usize>, mut f: impl FnMut(*mut bindings::drm_gpusvm_range)) {
        if span.start >= span.end {
            return;
        }
        // SAFETY: The mirror is initialised; the caller keeps its notifiers still.
        let mut n =
            unsafe { bindings::drm_gpusvm_notifier_find(self.as_raw(), span.start, span.end) };
        while !n.is_null() {
            // SAFETY: `n` is a notifier of the mirror.
            if unsafe { (*n).itree.start } >= span.end {
                break;
            }
            // SAFETY: As above; the next notifier is read before `f` may remove `n`.
            let next_n = unsafe { bindings::__drm_gpusvm_notifier_next(n) };
            // SAFETY: `n` is a notifier of the mirror.
            let mut r = unsafe { bindings::drm_gpusvm_range_find(n, span.start, span.end) };
            while !r.is_null() {
                // SAFETY: `r` is a range of `n`.
                if unsafe { (*r).itree.start } >= span.end {
                    break;
                }
                // SAFETY: As above; read before `f` may remove `r`.
                let next_r = unsafe { bindings::__drm_gpusvm_range_next(r) };
                f(r);
                r = next_r;
            }
            n = next_n;
        }
    }

    /// # Safety
    ///
    /// Called by drm_gpusvm for a mirror of type `T`.
    unsafe extern "C" fn range_alloc(
        gpusvm: *mut bindings::drm_gpusvm,
    ) -> *mut bindings::drm_gpusvm_range {
        // SAFETY: `svm` is the first field of the `repr(C)` `GpuSvm<T>`.
        let svm = unsafe { &*gpusvm.cast::<GpuSvm<T>>() };
        let drm = svm.drm.as_raw();
        let init = try_pin_init!(SvmRange::<T> {
            // drm_gpusvm fills in the range; it needs its flags zeroed.
            range: Opaque::zeroed(),
            // SAFETY: `slot` is ours to initialise; `drm` outlives the mirror's ranges.
            pages <- Opaque::ffi_init(move |slot| unsafe {
                bindings::drm_gpusvm_init_pages(slot, drm)
            }),
            data <- T::new_range(svm),
        }? Error);
        match KBox::pin_init(init, GFP_KERNEL) {
            Ok(b) => {
                // SAFETY: The range is freed only by `range_free`, which rebuilds the box.
                let r = unsafe { Pin::into_inner_unchecked(b) };
                KBox::into_raw(r).cast()
            }
            Err(_) => core::ptr::null_mut(),
        }
    }

    /// # Safety
    ///
    /// Called by drm_gpusvm for a range `range_alloc` made, on its last reference.
    unsafe extern "C" fn range_free(range: *mut bindings::drm_gpusvm_range) {
        let r = range.cast::<SvmRange<T>>();
        // SAFETY: `range` is alive until freed here; its `gpusvm` is the mirror.
        unsafe {
            let npages = (*r).npages();
            bindings::drm_gpusvm_free_pages((*range).gpusvm, (*r).pages.get(), npages);
            drop(KBox::from_raw(r));
        }
    }

    /// # Safety
    ///
    /// Called by drm_gpusvm with the notifier lock held for writing.
    unsafe extern "C" fn invalidate_cb(
        gpusvm: *mut bindings::drm_gpusvm,
        notifier: *mut bindings::drm_gpusvm_notifier,
        mmu_range: *const bindings::mmu_notifier_range,
    ) {
        // SAFETY: `svm` is the first field of the `repr(C)` `GpuSvm<T>`.
        let svm = unsafe { &*gpusvm.cast::<GpuSvm<T>>() };
        // INVARIANT: drm_gpusvm holds the notifier lock for writing during the callback.
        let inv = Invalidation {
            svm,
            notifier,
            mmu_range,
        };
        T::invalidate(svm, &inv);
    }
}

#[pinned_drop]
impl<T: GpuSvmOps> PinnedDrop for GpuSvm<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: The mirror is initialised and goes now. `drm_gpusvm_fini` removes the
        // notifiers (waiting for their callbacks), then every range, whose `range_free` unmaps
        // its pages. Nothing else uses the mirror: the driver's token is gone with its owner.
        unsafe { bindings::drm_gpusvm_fini(self.as_raw()) };
    }
}

impl<T: GpuSvmOps> SvmRange<T> {
    /// # Safety
    ///
    /// `ptr` is a range of a [`GpuSvm<T>`] that stays in it for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::drm_gpusvm_range) -> &'a Self {
        // SAFETY: `range` is the first field of the `repr(C)` `SvmRange<T>` (type invariants
        // of `GpuSvm`).
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> *mut bindings::drm_gpusvm_range {
        self.range.get()
    }

    /// The first CPU (and GPU) address of the range.
    pub fn start(&self) -> usize {
        // SAFETY: The bounds of a range never change.
        unsafe { (*self.raw()).itree.start }
    }

    /// The address past the range.
    pub fn end(&self) -> usize {
        // SAFETY: The bounds of a range never change.
        unsafe { (*self.raw()).itree.last + 1 }
    }

    fn npages(&self) -> usize {
        (self.end() - self.start()) >> PAGE_SHIFT
    }

    /// The driver's data.
    pub fn data(&self) -> &T::RangeData {
        &self.data
    }

    /// Whether the CPU unmapped (part of) the range: it can never get pages again, and waits
    /// for the driver to remove it.
    pub fn is_unmapped(&self) -> bool {
        // SAFETY: The range is alive; the helper reads the flags once.
        unsafe { bindings::drm_gpusvm_range_is_unmapped(self.raw()) }
    }

    /// Whether the CPU unmapped part of the range only.
    pub fn is_partially_unmapped(&self) -> bool {
        // SAFETY: As above.
        unsafe { bindings::drm_gpusvm_range_is_partially_unmapped(self.raw()) }
    }

    /// Faults the range's pages in (for writing, unless `ctx` says read-only) and maps them
    /// for DMA. They are valid until the next invalidation of the range: check
    /// [`SvmRange::pages_valid`] under the notifier lock before the GPU uses them.
    ///
    /// Errors: `EFAULT` if the range was unmapped or the memory is not accessible, `EPERM`
    /// for write access to read-only memory, `EBUSY` if invalidations kept colliding for a
    /// second, `EINTR`, `ENOMEM`. Takes `mmap_lock` and the notifier lock; the caller must
    /// hold neither. The borrow of the mirror's token behind `&self` keeps the range alive.
    pub fn get_pages(&self, ctx: &Ctx) -> Result {
        let c = ctx.raw();
        // SAFETY: The range is in its mirror, kept there by the caller's token; its notifier
        // is alive while it is.
        to_result(unsafe {
            let r = self.raw();
            let svm = (*r).gpusvm;
            bindings::drm_gpusvm_get_pages(
                svm,
                self.pages.get(),
                (*svm).mm,
                &raw mut (*(*r).notifier).notifier,
                self.start(),
                self.end(),
                &c,
            )
        })
    }

    /// Whether the range's pages are mapped and no invalidation came since. `guard` must be
    /// the lock of the range's mirror; with another, the answer is `false`.
    pub fn pages_valid(&self, guard: &NotifierReadGuard<'_, T>) -> bool {
        // SAFETY: The range is alive; its mirror pointer never changes.
        let svm = unsafe { (*self.raw()).gpusvm };
        if svm != guard.svm.as_raw() {
            return false;
        }
        // SAFETY: The notifier lock of the range's mirror is held (the guard).
        unsafe { bindings::drm_gpusvm_pages_valid(svm, self.pages.get()) }
    }

    /// Calls `f` with the bus address and length of each piece of the range's pages, in
    /// order. The pages must be valid ([`SvmRange::pages_valid`]).
    pub fn for_each_dma(&self, guard: &NotifierReadGuard<'_, T>, mut f: impl FnMut(u64, u64)) {
        if !self.pages_valid(guard) {
            return;
        }
        let npages = self.npages();
        let mut i = 0;
        while i < npages {
            let mut order = 0;
            // SAFETY: With valid pages (checked, under the lock), `dma_addr` holds the entry
            // of the piece starting at page `i`.
            let addr = unsafe { bindings::drm_gpusvm_pages_dma(self.pages.get(), i, &mut order) };
            f(addr, (PAGE_SIZE << order) as u64);
            i += 1 << order;
        }
    }
}

impl<T: GpuSvmOps> Drop for NotifierReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: The lock is held for reading (type invariants).
        unsafe { bindings::up_read(&raw mut (*self.svm.as_raw()).notifier_lock) };
    }
}

impl<'a, T: GpuSvmOps> Invalidation<'a, T> {
    /// The CPU addresses whose page tables change, within the notifier's span.
    pub fn range(&self) -> Range<usize> {
        // SAFETY: Both are valid during the callback (type invariants).
        unsafe {
            let n = &(*self.notifier).itree;
            let m = &*self.mmu_range;
            m.start.max(n.start)..m.end.min(n.last + 1)
        }
    }

    /// Why they change.
    pub fn event(&self) -> Event {
        // SAFETY: The range is valid during the callback.
        Event::from_raw(unsafe { (*self.mmu_range).event })
    }

    /// Calls `f` on every range of the notifier that overlaps [`Invalidation::range`].
    pub fn for_each_range(&self, mut f: impl FnMut(&SvmRange<T>)) {
        let span = self.range();
        // SAFETY: Ranges change under the notifier lock (read) and the driver lock: the write
        // lock keeps them still.
        let mut r = unsafe { bindings::drm_gpusvm_range_find(self.notifier, span.start, span.end) };
        while !r.is_null() {
            // SAFETY: `r` is a range of the notifier, alive under the lock.
            unsafe {
                if (*r).itree.start >= span.end {
                    break;
                }
                f(SvmRange::from_raw(r));
                r = bindings::__drm_gpusvm_range_next(r);
            }
        }
    }

    /// Unmaps the range's pages from DMA: the GPU must no longer reach them.
    pub fn unmap_pages(&self, range: &SvmRange<T>) {
        let mut c = Ctx::default().raw();
        c.set_in_notifier(1);
        // SAFETY: The notifier lock is held for writing, as `in_notifier` says.
        unsafe {
            bindings::drm_gpusvm_unmap_pages(
                self.svm.as_raw(),
                range.pages.get(),
                range.npages(),
                &c,
            )
        };
    }

    /// Marks the range unmapped (for an [`Event::Unmap`]): it gets no pages again, and waits
    /// for the driver to remove it.
    pub fn set_unmapped(&self, range: &SvmRange<T>) {
        // SAFETY: The notifier lock is held for writing; the pages are the range's only set.
        unsafe {
            bindings::drm_gpusvm_range_set_unmapped(
                range.raw(),
                range.pages.get(),
                1,
                self.mmu_range,
            )
        };
    }
}

#[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
#[macros::kunit_tests(rust_drm_gpusvm)]
mod tests {
    use super::*;
    use crate::{
        device,
        drm::exec::kunit_gem::{drm_dev, KunitDriver},
        faux,
        sync::atomic::{Atomic, Relaxed},
    };

    const SZ_4K: usize = 4096;
    const SZ_64K: usize = 64 << 10;
    const SZ_2M: usize = 2 << 20;
    static CHUNKS: [usize; 3] = [SZ_2M, SZ_64K, SZ_4K];

    /// Zaps nothing (there is no GPU), unmaps the pages of every range it is told about, marks
    /// them unmapped on munmap, and counts what it saw.
    struct Mirror {
        calls: Atomic<u32>,
        unmap_events: Atomic<u32>,
        ranges_seen: Atomic<u32>,
    }

    impl GpuSvmOps for Mirror {
        type Driver = KunitDriver;
        type RangeData = u32;

        fn new_range(svm: &GpuSvm<Self>) -> impl PinInit<u32, Error> {
            Ok::<_, Error>(svm.data().calls.load(Relaxed))
        }

        fn invalidate(svm: &GpuSvm<Self>, inv: &Invalidation<'_, Self>) {
            let d = svm.data();
            d.calls.fetch_add(1, Relaxed);
            let unmap = inv.event() == Event::Unmap;
            if unmap {
                d.unmap_events.fetch_add(1, Relaxed);
            }
            inv.for_each_range(|r| {
                d.ranges_seen.fetch_add(1, Relaxed);
                inv.unmap_pages(r);
                if unmap {
                    inv.set_unmapped(r);
                }
            });
        }
    }

    /// Maps `len` bytes of anonymous, writable memory in the test's own address space.
    fn map(len: usize) -> Result<usize> {
        // SAFETY: Gives the KUnit thread an address space of its own if it has none; KUnit
        // tears it down with the thread.
        to_result(unsafe { bindings::kunit_attach_mm() })?;
        // SAFETY: No file; the arguments are plain values.
        let addr = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                0,
                len,
                (bindings::PROT_READ | bindings::PROT_WRITE) as usize,
                (bindings::MAP_PRIVATE | bindings::MAP_ANONYMOUS) as usize,
                0,
            )
        };
        if addr >= usize::MAX - 4095 {
            return Err(Error::from_errno(addr as i32));
        }
        Ok(addr)
    }

    fn unmap(addr: usize, len: usize) -> Result {
        // SAFETY: `vm_munmap` checks its arguments against the current address space.
        to_result(unsafe { bindings::vm_munmap(addr, len) })
    }

    /// Writes `v` to the user address `addr` of the current address space.
    fn poke(addr: usize, v: u64) -> Result {
        use crate::uaccess::{UserPtr, UserSlice};
        UserSlice::new(UserPtr::from_addr(addr), 8)
            .writer()
            .write(&v)
    }

    /// Lets the faux device map pages for DMA (directly: it has no IOMMU), as drm_gpusvm does
    /// for the device of the mirror.
    fn allow_dma(reg: &faux::Registration) -> Result {
        let fdev: &faux::Device<device::Bound> = reg.as_ref();
        let dev: &device::Device<device::Bound> = fdev.as_ref();
        let raw = dev.as_raw();
        // SAFETY: The device is alive, and nothing else touches its DMA masks: it is the
        // test's own.
        unsafe {
            (*raw).dma_mask = &raw mut (*raw).coherent_dma_mask;
            to_result(bindings::dma_set_mask_and_coherent(raw, u64::MAX))
        }
    }

    fn mirror(dev: &drm::Device<KunitDriver>) -> Result<(Pin<KBox<GpuSvm<Mirror>>>, SvmExclusive)> {
        let task = crate::current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let svm = KBox::pin_init(
            GpuSvm::new(
                c"kunit-gpusvm",
                dev,
                mm,
                0..1 << 47,
                SZ_2M * 4,
                &CHUNKS,
                Mirror {
                    calls: Atomic::new(0),
                    unmap_events: Atomic::new(0),
                    ranges_seen: Atomic::new(0),
                },
            ),
            GFP_KERNEL,
        )?;
        let tok = svm.take_exclusive()?;
        Ok((svm, tok))
    }

    fn count(svm: &GpuSvm<Mirror>, tok: &SvmExclusive, span: Range<usize>) -> Result<usize> {
        let mut n = 0;
        svm.for_each_range(tok, span, |_| n += 1)?;
        Ok(n)
    }

    #[test]
    fn ranges_take_the_largest_chunk_that_fits() -> Result {
        let (faux, drm) = drm_dev(c"kunit-gpusvm-chunks")?;
        allow_dma(&faux)?;
        let len = 3 * SZ_2M;
        let addr = map(len)?;
        let (svm, mut tok) = mirror(&drm)?;
        let a2 = (addr + SZ_2M - 1) & !(SZ_2M - 1);
        for off in (0..SZ_2M).step_by(SZ_4K) {
            poke(a2 + off, off as u64)?;
        }

        // Inside a CPU and a GPU mapping that both hold the 2 MiB block: one 2 MiB range.
        let r = svm.find_or_insert(&mut tok, a2 + 5 * SZ_4K, addr..addr + len, &Ctx::default())?;
        assert_eq!((r.start(), r.end()), (a2, a2 + SZ_2M));
        assert!(!r.is_unmapped());
        r.get_pages(&Ctx::default())?;
        {
            let guard = svm.notifier_read();
            assert!(r.pages_valid(&guard));
            let mut bytes = 0;
            r.for_each_dma(&guard, |_, l| bytes += l);
            assert_eq!(bytes, SZ_2M as u64);
        }
        // The same range for any address in it.
        let again =
            svm.find_or_insert(&mut tok, a2 + SZ_2M - 1, addr..addr + len, &Ctx::default())?;
        assert_eq!(again.start(), a2);

        // A GPU mapping of 8 KiB holds 4 KiB chunks only.
        let b = a2 + SZ_2M;
        let r = svm.find_or_insert(&mut tok, b + SZ_4K, b..b + 2 * SZ_4K, &Ctx::default())?;
        assert_eq!((r.start(), r.end()), (b + SZ_4K, b + 2 * SZ_4K));
        assert_eq!(count(&svm, &tok, addr..addr + len)?, 2);

        // Nothing is mapped past the CPU mapping; the mirror ends at 2^47.
        assert_eq!(
            svm.find_or_insert(&mut tok, addr + len, addr..addr + 2 * len, &Ctx::default())
                .map(|_| ()),
            Err(ENOENT)
        );
        assert_eq!(
            svm.find_or_insert(&mut tok, 1 << 48, 0..usize::MAX, &Ctx::default())
                .map(|_| ()),
            Err(EINVAL)
        );
        // One token per mirror.
        assert_eq!(svm.take_exclusive().map(|_| ()), Err(EBUSY));

        assert_eq!(svm.remove_ranges(&mut tok, 0..usize::MAX, |_| true)?, 2);
        assert_eq!(count(&svm, &tok, 0..usize::MAX)?, 0);
        drop(svm);
        unmap(addr, len)
    }

    #[test]
    fn munmap_marks_the_range_unmapped() -> Result {
        let (faux, drm) = drm_dev(c"kunit-gpusvm-munmap")?;
        allow_dma(&faux)?;
        let len = 2 * SZ_2M;
        let addr = map(len)?;
        let (svm, mut tok) = mirror(&drm)?;
        let a2 = (addr + SZ_2M - 1) & !(SZ_2M - 1);
        poke(a2, 1)?;
        let r = svm.find_or_insert(&mut tok, a2, a2..a2 + SZ_2M, &Ctx::default())?;
        r.get_pages(&Ctx::default())?;
        let (start, end) = (r.start(), r.end());
        assert_eq!(end - start, SZ_2M);

        // A page in the middle goes: the whole range is invalidated and marked.
        unmap(a2 + SZ_64K, SZ_4K)?;
        let d = svm.data();
        // A huge page under the range is split first, which invalidates it too.
        assert!(d.calls.load(Relaxed) >= 1);
        assert_eq!(d.unmap_events.load(Relaxed), 1);
        assert!(d.ranges_seen.load(Relaxed) >= 1);
        let mut marked = (false, false, false);
        svm.for_each_range(&tok, start..end, |r| {
            let guard = svm.notifier_read();
            marked = (
                r.is_unmapped(),
                r.is_partially_unmapped(),
                r.pages_valid(&guard),
            );
        })?;
        assert_eq!(marked, (true, true, false));
        // An unmapped range never gets pages again.
        let r = svm.find_or_insert(&mut tok, a2, a2..a2 + SZ_2M, &Ctx::default())?;
        assert_eq!(r.get_pages(&Ctx::default()), Err(EFAULT));

        // The collector's part: remove it; the next fault makes a new one, around the hole.
        assert_eq!(
            svm.remove_ranges(&mut tok, 0..usize::MAX, |r| r.is_unmapped())?,
            1
        );
        let r = svm.find_or_insert(&mut tok, a2, a2..a2 + SZ_2M, &Ctx::default())?;
        assert_eq!((r.start(), r.end()), (a2, a2 + SZ_64K));
        r.get_pages(&Ctx::default())?;
        assert_eq!(
            svm.find_or_insert(&mut tok, a2 + SZ_64K, a2..a2 + SZ_2M, &Ctx::default())
                .map(|_| ()),
            Err(ENOENT)
        );

        assert_eq!(svm.remove_ranges(&mut tok, 0..usize::MAX, |_| true)?, 1);
        drop(svm);
        unmap(addr, len)
    }
}
