// SPDX-License-Identifier: GPL-2.0

//! Reservation objects.
//!
//! A `dma_resv` holds the fences of the work that uses a buffer, each with a [`Usage`], behind a
//! ww-mutex. Waiting and testing need no lock. Adding a fence does, and needs a slot reserved
//! beforehand, because adding cannot fail: it often runs after the fence was published, where
//! failing is no longer allowed.
//!
//! C header: [`include/linux/dma-resv.h`](srctree/include/linux/dma-resv.h)
//!
//! Locking several reservation objects at once (ww-mutex acquire contexts and backoff) is the
//! job of `drm_exec`; [`DmaResv::lock`] takes one on its own.

use super::fence::Fence;
use crate::{
    bindings,
    error::{to_result, Result},
    prelude::*,
    time::{msecs_to_jiffies, Delta},
    types::{NotThreadSafe, Opaque},
};
use core::ptr;

/// How the work behind a fence uses the buffer, in the order of `enum dma_resv_usage`: asking
/// for one usage covers the fences of that usage and of every usage before it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Kernel memory management (moves, clears); everybody waits for it.
    Kernel = bindings::dma_resv_usage_DMA_RESV_USAGE_KERNEL,
    /// Implicit synchronisation: the work writes the buffer.
    Write = bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
    /// Implicit synchronisation: the work reads the buffer.
    Read = bindings::dma_resv_usage_DMA_RESV_USAGE_READ,
    /// Neither: explicitly synchronised work (a VM's jobs, page-table updates), which only
    /// memory management waits for.
    Bookkeep = bindings::dma_resv_usage_DMA_RESV_USAGE_BOOKKEEP,
}

/// A reservation object, wherever it lives (a GEM object, a VM, [`OwnedDmaResv`]).
///
/// # Invariants
///
/// The inner `dma_resv` is initialised and alive for as long as a `&DmaResv` exists.
#[repr(transparent)]
pub struct DmaResv(Opaque<bindings::dma_resv>);

// SAFETY: `dma_resv` is designed for use from any thread: its fence list is read under RCU and
// changed under its lock.
unsafe impl Send for DmaResv {}
// SAFETY: See `Send`.
unsafe impl Sync for DmaResv {}

impl DmaResv {
    /// Returns a reference to the reservation object behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` points to an initialised `dma_resv` that stays alive for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::dma_resv) -> &'a Self {
        // SAFETY: `DmaResv` is a transparent wrapper of `dma_resv`, and the caller guarantees
        // the pointee is valid for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw `dma_resv`.
    pub fn as_raw(&self) -> *mut bindings::dma_resv {
        self.0.get()
    }

    /// Whether every fence of `usage` (and of the usages before it) has signalled.
    pub fn test_signaled(&self, usage: Usage) -> bool {
        // SAFETY: By the type invariant the object is alive; testing takes no lock.
        unsafe { bindings::dma_resv_test_signaled(self.as_raw(), usage as u32) }
    }

    /// Waits for every fence of `usage` (and of the usages before it), or until `timeout`
    /// passes: `ETIMEDOUT` then, `ERESTARTSYS` if `interruptible` and a signal came.
    pub fn wait(&self, usage: Usage, interruptible: bool, timeout: Delta) -> Result {
        let msecs = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        // A zero timeout would only test: wait at least a jiffy, as asked.
        let jiffies = msecs_to_jiffies(msecs).max(1);
        // SAFETY: By the type invariant the object is alive; waiting takes no lock.
        let ret = unsafe {
            bindings::dma_resv_wait_timeout(self.as_raw(), usage as u32, interruptible, jiffies)
        };
        match ret {
            0 => Err(ETIMEDOUT),
            r if r > 0 => Ok(()),
            // An errno fits in an int.
            r => to_result(r as crate::ffi::c_int),
        }
    }

    /// Locks the object on its own (no acquire context), interruptibly.
    pub fn lock(&self) -> Result<DmaResvGuard<'_>> {
        // SAFETY: By the type invariant the object is alive; a NULL context takes the ww-mutex
        // as a plain mutex.
        to_result(unsafe {
            bindings::dma_resv_lock_interruptible(self.as_raw(), ptr::null_mut())
        })?;
        // INVARIANT: The lock was just taken, and no slot was reserved through this guard.
        Ok(DmaResvGuard {
            resv: self,
            reserved: 0,
            _not_send: NotThreadSafe,
        })
    }
}

/// A locked reservation object; dropping the guard unlocks it.
///
/// # Invariants
///
/// The guard holds `resv`'s lock, and at least `reserved` fence slots are free in it.
pub struct DmaResvGuard<'a> {
    resv: &'a DmaResv,
    reserved: u32,
    _not_send: NotThreadSafe,
}

impl DmaResvGuard<'_> {
    /// Makes room for `count` more fences, so that as many [`DmaResvGuard::add_fence`] calls
    /// cannot fail. It may allocate: call it before the fences are published.
    pub fn reserve_fences(&mut self, count: u32) -> Result {
        // SAFETY: The lock is held (type invariant).
        to_result(unsafe { bindings::dma_resv_reserve_fences(self.resv.as_raw(), count) })?;
        // INVARIANT: The C call guarantees `count` free slots; slots reserved earlier and not
        // used yet are still free.
        self.reserved = self.reserved.max(count);
        Ok(())
    }

    /// Adds `fence` with `usage`, taking a slot reserved by [`DmaResvGuard::reserve_fences`].
    /// It never allocates; without a reserved slot it fails with `ENOSPC` and adds nothing.
    pub fn add_fence(&mut self, fence: &Fence, usage: Usage) -> Result {
        if self.reserved == 0 {
            return Err(ENOSPC);
        }
        // SAFETY: The lock is held and a slot is free (type invariant); the object takes its
        // own reference to the fence.
        unsafe { bindings::dma_resv_add_fence(self.resv.as_raw(), fence.as_raw(), usage as u32) };
        // INVARIANT: The fence took one of the free slots.
        self.reserved -= 1;
        Ok(())
    }

    /// Calls `f` on every fence of `usage` (or a stricter usage) in the object: what work of
    /// that usage on the buffer must wait for. May allocate.
    pub fn for_each_fence(&self, usage: Usage, mut f: impl FnMut(&Fence) -> Result) -> Result {
        // SAFETY: The guard holds the lock (type invariant).
        unsafe { for_each_fence_locked(self.resv.as_raw(), usage, &mut f) }
    }

    /// The locked object.
    pub fn resv(&self) -> &DmaResv {
        self.resv
    }
}

impl Drop for DmaResvGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: The guard holds the lock (type invariant).
        unsafe { bindings::dma_resv_unlock(self.resv.as_raw()) };
    }
}

/// Calls `f` on every fence of `usage` (or a stricter usage) in `resv`, until it fails.
///
/// # Safety
///
/// `resv` is a live reservation object whose lock the caller holds.
pub(crate) unsafe fn for_each_fence_locked(
    resv: *mut bindings::dma_resv,
    usage: Usage,
    f: &mut dyn FnMut(&Fence) -> Result,
) -> Result {
    let mut count: u32 = 0;
    let mut fences: *mut *mut bindings::dma_fence = ptr::null_mut();
    // SAFETY: The caller holds `resv`'s lock; on success the C function returns an allocated
    // array of `count` fences, each with a reference.
    to_result(unsafe {
        bindings::dma_resv_get_fences(resv, usage as u32, &mut count, &mut fences)
    })?;
    let mut res = Ok(());
    for i in 0..count as usize {
        // SAFETY: `i < count`: the entry is a fence with a reference we own.
        let fence = unsafe { *fences.add(i) };
        if res.is_ok() {
            // SAFETY: `fence` is alive: we hold a reference to it.
            res = f(unsafe { Fence::from_raw(fence) });
        }
        // SAFETY: We give back the reference `dma_resv_get_fences` took.
        unsafe { bindings::dma_fence_put(fence) };
    }
    // SAFETY: The array was allocated by `dma_resv_get_fences` (kmalloc); NULL is fine.
    unsafe { bindings::kfree(fences.cast()) };
    res
}

/// A reservation object that is not embedded in anything else (most live in a GEM object).
///
/// # Invariants
///
/// `resv` was initialised by `dma_resv_init` and is finalised only on drop.
#[pin_data(PinnedDrop)]
pub struct OwnedDmaResv {
    #[pin]
    resv: Opaque<bindings::dma_resv>,
}

impl OwnedDmaResv {
    /// Creates an empty reservation object.
    pub fn new() -> impl PinInit<Self> {
        // INVARIANT: `dma_resv_init` initialises the object in place.
        pin_init!(Self {
            resv <- Opaque::ffi_init(|slot| {
                // SAFETY: `slot` is valid for writes and pinned; `dma_resv_init` initialises it.
                unsafe { bindings::dma_resv_init(slot) }
            }),
        })
    }
}

impl core::ops::Deref for OwnedDmaResv {
    type Target = DmaResv;

    fn deref(&self) -> &DmaResv {
        // SAFETY: The object is initialised (type invariant) and lives as long as `self`.
        unsafe { DmaResv::from_raw(self.resv.get()) }
    }
}

#[pinned_drop]
impl PinnedDrop for OwnedDmaResv {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: The object was initialised by `new` and nothing borrows it any more; `fini`
        // drops the references it holds to its fences.
        unsafe { bindings::dma_resv_fini(self.resv.get()) };
    }
}

#[macros::kunit_tests(rust_dma_resv)]
mod tests {
    use super::*;
    use crate::dma_buf::fence::{FenceContext, FenceOps};

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_dma_resv_test";
    }

    fn short() -> Delta {
        Delta::from_millis(10)
    }

    #[test]
    fn an_empty_object_is_idle() -> Result {
        let resv = KBox::pin_init(OwnedDmaResv::new(), GFP_KERNEL)?;
        assert!(resv.test_signaled(Usage::Bookkeep));
        assert_eq!(resv.wait(Usage::Bookkeep, false, short()), Ok(()));
        Ok(())
    }

    #[test]
    fn usages_nest_kernel_write_read_bookkeep() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"resv-test");
        let resv = KBox::pin_init(OwnedDmaResv::new(), GFP_KERNEL)?;
        let (write, write_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (book, book_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        {
            let mut guard = resv.lock()?;
            guard.reserve_fences(2)?;
            guard.add_fence(&write_fence, Usage::Write)?;
            guard.add_fence(&book_fence, Usage::Bookkeep)?;
        }
        assert!(resv.test_signaled(Usage::Kernel));
        assert!(!resv.test_signaled(Usage::Write));
        assert!(!resv.test_signaled(Usage::Read));
        assert_eq!(resv.wait(Usage::Read, false, short()), Err(ETIMEDOUT));
        write.signal(Ok(()));
        assert!(resv.test_signaled(Usage::Read));
        assert!(!resv.test_signaled(Usage::Bookkeep));
        book.signal(Ok(()));
        assert!(resv.test_signaled(Usage::Bookkeep));
        assert_eq!(resv.wait(Usage::Bookkeep, false, short()), Ok(()));
        Ok(())
    }

    #[test]
    fn a_locked_object_lists_its_fences_by_usage() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"resv-test");
        let resv = KBox::pin_init(OwnedDmaResv::new(), GFP_KERNEL)?;
        let (write, write_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (book, book_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let mut guard = resv.lock()?;
        guard.reserve_fences(2)?;
        guard.add_fence(&write_fence, Usage::Write)?;
        guard.add_fence(&book_fence, Usage::Bookkeep)?;
        let mut seen = KVec::new();
        guard.for_each_fence(Usage::Read, |f| {
            seen.push(f.seqno(), GFP_KERNEL)?;
            Ok(())
        })?;
        // A reader waits for the writer, not for bookkeeping.
        assert_eq!(&seen[..], &[write_fence.seqno()]);
        seen.clear();
        guard.for_each_fence(Usage::Bookkeep, |f| {
            seen.push(f.seqno(), GFP_KERNEL)?;
            Ok(())
        })?;
        seen.sort_unstable();
        assert_eq!(&seen[..], &[write_fence.seqno(), book_fence.seqno()]);
        // The first error stops the walk and comes back.
        let mut calls = 0;
        let res = guard.for_each_fence(Usage::Bookkeep, |_| {
            calls += 1;
            Err(EINTR)
        });
        assert_eq!((res, calls), (Err(EINTR), 1));
        drop(guard);
        write.signal(Ok(()));
        book.signal(Ok(()));
        Ok(())
    }

    #[test]
    fn adding_needs_a_reserved_slot() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"resv-test");
        let resv = KBox::pin_init(OwnedDmaResv::new(), GFP_KERNEL)?;
        let (a, fa) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (b, fb) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        {
            let mut guard = resv.lock()?;
            assert_eq!(guard.add_fence(&fa, Usage::Write), Err(ENOSPC));
            guard.reserve_fences(1)?;
            guard.add_fence(&fa, Usage::Write)?;
            assert_eq!(guard.add_fence(&fb, Usage::Write), Err(ENOSPC));
        }
        // Only `fa` went in: signalling it alone idles the object.
        a.signal(Ok(()));
        assert!(resv.test_signaled(Usage::Bookkeep));
        b.signal(Ok(()));
        Ok(())
    }

    #[test]
    fn the_object_keeps_its_fences_alive() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"resv-test");
        let resv = KBox::pin_init(OwnedDmaResv::new(), GFP_KERNEL)?;
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        {
            let mut guard = resv.lock()?;
            guard.reserve_fences(1)?;
            guard.add_fence(&fence, Usage::Bookkeep)?;
        }
        drop(fence);
        assert!(!resv.test_signaled(Usage::Bookkeep));
        producer.signal(Err(EIO));
        assert!(resv.test_signaled(Usage::Bookkeep));
        Ok(())
    }
}
