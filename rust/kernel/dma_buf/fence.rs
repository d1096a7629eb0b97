// SPDX-License-Identifier: GPL-2.0

//! DMA fences.
//!
//! A DMA fence is the completion signal of work a device does: a GPU job, a page-table update,
//! a copy. Other drivers and userspace wait on it, through reservation objects and sync files,
//! so a fence can outlive the driver that made it.
//!
//! C header: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h)
//!
//! The producer and the consumers of a fence have different types:
//!
//! - A [`FenceContext`] is a timeline: its fences get increasing sequence numbers.
//! - [`FenceContext::prepare`] allocates a fence ([`PreparedFence`]) while the caller may still
//!   fail and allocate; it takes no sequence number, so dropping it leaves no hole.
//! - [`FenceContext::publish`] cannot fail: it assigns the next sequence number (so the caller
//!   serialises publishing to get submission order) and returns the unique producer,
//!   [`DriverFence`], and a consumer reference, [`ARef<Fence>`].
//! - Only the [`DriverFence`] can signal, once: [`DriverFence::signal`] consumes it. Dropping an
//!   unsignalled one signals the fence with `ECANCELED`, since a fence that never signals
//!   deadlocks whoever waits on it.
//! - A [`Fence`] can be waited on and queried, never signalled.
//!
//! Lifetime rules, so that fences outlive the module safely:
//!
//! - The fence ops have no `release` and no `wait` callback, so the C core detaches them when the
//!   fence signals and frees the fence itself (after an RCU grace period); nothing of a signalled
//!   fence points into the module.
//! - The ops read nothing but `'static` names, never the driver data, so the driver data is
//!   dropped as soon as the fence signals.
//! - A [`DriverFence`] borrows its [`FenceContext`], and dropping the context waits for an RCU
//!   grace period, so an op that started before the last fence signalled has finished before the
//!   module can go.
//!
//! The `dma_fence` signalling rules (no allocation, no lock taken around an allocation, on the
//! path that signals a published fence) are checked by lockdep inside a [`SignallingSection`].
//! Put one at the entry points of code that signals fences (a work item's `run`, an interrupt
//! thread), not around the lifetime of one fence.
//!
//! A [`FenceCallbackRegistration`] runs a [`FenceCallback`] when a fence signals.

mod callback;
pub use callback::{FenceCallback, FenceCallbackRegistration};

use crate::{
    alloc::Flags,
    bindings,
    error::{to_result, Result},
    prelude::*,
    sync::{
        aref::{ARef, AlwaysRefCounted},
        atomic::{Atomic, Relaxed},
        rcu, Arc,
    },
    time::{msecs_to_jiffies, Delta},
    types::{NotThreadSafe, Opaque},
};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::Deref,
    ptr::{self, NonNull},
};

/// A reference-counted DMA fence, seen by a consumer: it can be waited on, never signalled.
///
/// # Invariants
///
/// The inner `dma_fence` is initialised and its reference count is nonzero for as long as a
/// `&Fence` exists.
#[repr(transparent)]
pub struct Fence(Opaque<bindings::dma_fence>);

// SAFETY: `dma_fence` is designed to be used from any thread; every operation takes its lock or
// works on atomics.
unsafe impl Send for Fence {}
// SAFETY: See `Send`; shared references only call thread-safe C functions.
unsafe impl Sync for Fence {}

// SAFETY: `dma_fence_get`/`dma_fence_put` keep the fence alive, and every `Fence` lives in a
// reference-counted `dma_fence`.
unsafe impl AlwaysRefCounted for Fence {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the fence is initialised and alive.
        unsafe { bindings::dma_fence_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which it gives up here.
        unsafe { bindings::dma_fence_put(obj.cast::<bindings::dma_fence>().as_ptr()) };
    }
}

impl Fence {
    /// Returns a reference to the fence behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` points to an initialised `dma_fence` that stays alive for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::dma_fence) -> &'a Self {
        // SAFETY: `Fence` is a transparent wrapper of `dma_fence`, and the caller guarantees the
        // pointee is valid for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The DRM core's stub fence, which is always signalled: the out-fence of work done at once.
    pub fn signalled() -> ARef<Self> {
        // SAFETY: `dma_fence_get_stub` returns a new reference to a static fence that is
        // initialised and signalled.
        let ptr = unsafe { bindings::dma_fence_get_stub() };
        // SAFETY: `ptr` is non-null and carries the reference the `ARef` takes over; `Fence`
        // is a transparent wrapper of `dma_fence`.
        unsafe { ARef::from_raw(NonNull::new_unchecked(ptr.cast())) }
    }

    /// Returns the raw `dma_fence`.
    pub fn as_raw(&self) -> *mut bindings::dma_fence {
        self.0.get()
    }

    /// The fence context (timeline) the fence belongs to.
    pub fn context(&self) -> u64 {
        // SAFETY: By the type invariant the fence is initialised; `context` never changes after.
        unsafe { (*self.as_raw()).context }
    }

    /// The fence's sequence number in its context.
    pub fn seqno(&self) -> u64 {
        // SAFETY: By the type invariant the fence is initialised; `seqno` never changes after.
        unsafe { (*self.as_raw()).seqno }
    }

    /// Whether the fence has signalled.
    pub fn is_signaled(&self) -> bool {
        // SAFETY: By the type invariant the fence is initialised and alive.
        unsafe { bindings::dma_fence_is_signaled(self.as_raw()) }
    }

    /// How the fence ended: `None` while it is pending, else `Some(Ok(()))` or the error it
    /// was signalled with.
    pub fn status(&self) -> Option<Result> {
        // SAFETY: By the type invariant the fence is initialised and alive.
        match unsafe { bindings::dma_fence_get_status(self.as_raw()) } {
            0 => None,
            1 => Some(Ok(())),
            err => Some(to_result(err)),
        }
    }

    /// Waits until the fence signals or `timeout` passes; interruptible by signals if
    /// `interruptible`. Returns `ETIMEDOUT` on timeout and `ERESTARTSYS` when interrupted. The
    /// fence's own error is not returned: see [`Fence::status`].
    pub fn wait(&self, interruptible: bool, timeout: Delta) -> Result {
        let msecs = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let jiffies = crate::ffi::c_long::try_from(msecs_to_jiffies(msecs))
            .unwrap_or(crate::ffi::c_long::MAX);
        // SAFETY: By the type invariant the fence is initialised and alive.
        let ret =
            unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), interruptible, jiffies) };
        match ret {
            0 => Err(ETIMEDOUT),
            r if r > 0 => Ok(()),
            // An errno fits in an int.
            r => to_result(r as crate::ffi::c_int),
        }
    }
}

/// A fence's allocation: the `dma_fence` first, so that the C core can free it as a
/// `dma_fence` (`kfree_rcu`) once the last reference goes.
#[repr(C)]
struct FenceAlloc<T> {
    fence: Opaque<bindings::dma_fence>,
    /// The timeline name, `'static`, read by the `get_timeline_name` op.
    timeline_name: *const crate::ffi::c_char,
    /// Dropped when the fence signals; the C core frees the memory later without running it.
    data: ManuallyDrop<T>,
}

/// The name of the driver that owns a fence context's fences, and the ops that report it.
///
/// Implemented by a driver (usually by a zero-sized type) for each kind of fence it makes.
pub trait FenceOps: Send + Sync + 'static {
    /// The driver name reported for the fences (`dma_fence_ops.get_driver_name`).
    const DRIVER_NAME: &'static CStr;
}

struct OpsTable<O: FenceOps, T>(PhantomData<(O, T)>);

impl<O: FenceOps, T> OpsTable<O, T> {
    // No `release` and no `wait`: the C core then detaches the ops when the fence signals and
    // frees it itself, so a fence never calls into the module after it signalled.
    const OPS: bindings::dma_fence_ops = bindings::dma_fence_ops {
        get_driver_name: Some(Self::driver_name),
        get_timeline_name: Some(Self::timeline_name),
        // SAFETY: All other ops are optional, and zero means "not provided".
        ..unsafe { core::mem::zeroed() }
    };

    extern "C" fn driver_name(_fence: *mut bindings::dma_fence) -> *const crate::ffi::c_char {
        O::DRIVER_NAME.as_char_ptr()
    }

    extern "C" fn timeline_name(fence: *mut bindings::dma_fence) -> *const crate::ffi::c_char {
        // SAFETY: The C core calls the op only for fences made with `OPS`, which are all the
        // first field of a `FenceAlloc<T>`, and only while they are alive.
        unsafe { (*fence.cast::<FenceAlloc<T>>()).timeline_name }
    }
}

/// A timeline of fences: a `dma_fence` context and its sequence numbers.
///
/// # Invariants
///
/// `nr` was returned by `dma_fence_context_alloc`. `unsignalled` counts the fences of this
/// context that were published and have not signalled yet.
pub struct FenceContext<O: FenceOps, T: Send + Sync> {
    nr: u64,
    /// The last sequence number handed out.
    seqno: Atomic<u64>,
    unsignalled: Atomic<u64>,
    timeline_name: &'static CStr,
    _p: PhantomData<(O, T)>,
}

impl<O: FenceOps, T: Send + Sync> FenceContext<O, T> {
    /// Creates a timeline; its first fence gets sequence number 1.
    pub fn new(timeline_name: &'static CStr) -> Self {
        // INVARIANT: The number comes from `dma_fence_context_alloc`, and nothing is published.
        Self {
            // SAFETY: Allocating a context number has no precondition.
            nr: unsafe { bindings::dma_fence_context_alloc(1) },
            seqno: Atomic::new(0),
            unsignalled: Atomic::new(0),
            timeline_name,
            _p: PhantomData,
        }
    }

    /// The `dma_fence` context number of the timeline.
    pub fn nr(&self) -> u64 {
        self.nr
    }

    /// Allocates a fence carrying `data`, to publish later. Call it where failing is still
    /// allowed: publishing cannot fail.
    pub fn prepare(&self, data: T, flags: Flags) -> Result<PreparedFence<T>> {
        let alloc = KBox::new(
            FenceAlloc {
                fence: Opaque::uninit(),
                timeline_name: self.timeline_name.as_char_ptr(),
                data: ManuallyDrop::new(data),
            },
            flags,
        )?;
        Ok(PreparedFence { alloc })
    }

    /// Publishes a prepared fence with the timeline's next sequence number.
    ///
    /// Fences are numbered in the order they are published: a caller that needs submission
    /// order publishes under its submission lock.
    pub fn publish<'a>(
        &'a self,
        prepared: PreparedFence<T>,
    ) -> (DriverFence<'a, O, T>, ARef<Fence>) {
        let (ptr, consumer) = self.init(prepared);
        // INVARIANT: `init` returns a published, unsignalled fence of `self` with its data, and
        // a reference that the producer now owns.
        (DriverFence { ptr, ctx: self }, consumer)
    }

    /// Publishes a prepared fence like [`FenceContext::publish`], with a producer that keeps the
    /// context alive instead of borrowing it.
    ///
    /// For owners that keep a timeline and its producers side by side, such as a job queue.
    pub fn publish_owned(
        this: &Arc<Self>,
        prepared: PreparedFence<T>,
    ) -> (OwnedDriverFence<O, T>, ARef<Fence>) {
        let (ptr, consumer) = this.init(prepared);
        // INVARIANT: As in `publish`; `ctx` is the context that published the fence.
        let producer = OwnedDriverFence {
            ptr,
            ctx: this.clone(),
        };
        (producer, consumer)
    }

    /// Initialises a prepared fence with the next sequence number. Returns the fence, with one
    /// reference for the producer, and a consumer reference.
    fn init(&self, prepared: PreparedFence<T>) -> (NonNull<FenceAlloc<T>>, ARef<Fence>) {
        let seqno = self.seqno.fetch_add(1, Relaxed) + 1;
        self.unsignalled.fetch_add(1, Relaxed);
        let ptr = KBox::into_raw(prepared.alloc);
        // SAFETY: `ptr` is a live allocation whose first field is a `dma_fence`, not yet
        // initialised. The ops are `'static`, and a NULL lock selects the fence's inline lock.
        unsafe {
            bindings::dma_fence_init(
                Opaque::cast_into(ptr::addr_of!((*ptr).fence)),
                &OpsTable::<O, T>::OPS,
                ptr::null_mut(),
                self.nr,
                seqno,
            )
        };
        // SAFETY: The fence was just initialised with one reference, which stays with the
        // producer; the consumer takes a second one.
        let consumer = ARef::from(unsafe { Fence::from_raw(ptr.cast()) });
        // SAFETY: `KBox::into_raw` never returns NULL.
        (unsafe { NonNull::new_unchecked(ptr) }, consumer)
    }

    /// Fences published on this timeline that have not signalled yet.
    pub fn unsignalled(&self) -> u64 {
        self.unsignalled.load(Relaxed)
    }
}

impl<O: FenceOps, T: Send + Sync> Drop for FenceContext<O, T> {
    fn drop(&mut self) {
        // Every `DriverFence` borrows the context, so they all signalled unless one was leaked,
        // which would leave its waiters blocked for ever.
        if self.unsignalled.load(Relaxed) != 0 {
            pr_err!(
                "dma_fence context {} dropped with {} unsignalled fences (leaked producers)\n",
                self.nr,
                self.unsignalled.load(Relaxed)
            );
        }
        // An op that read the fence's ops before it signalled may still run: let it finish
        // before the module (the ops and the names) can go.
        rcu::synchronize_rcu();
    }
}

/// A fence allocated by [`FenceContext::prepare`], not published yet: dropping it frees it and
/// leaves no gap in the timeline.
pub struct PreparedFence<T> {
    alloc: KBox<FenceAlloc<T>>,
}

// SAFETY: The only field that is not `Send` by itself is the pointer to the `'static` timeline
// name, which any thread may read.
unsafe impl<T: Send> Send for PreparedFence<T> {}

impl<T> Drop for FenceAlloc<T> {
    fn drop(&mut self) {
        // Runs only for a fence that was never published: a published one is freed by the C
        // core after `DriverFence` already dropped the data.
        // SAFETY: The data was not dropped: it is dropped only when a published fence signals.
        unsafe { ManuallyDrop::drop(&mut self.data) };
    }
}

/// The producer of a published fence: the only handle that can signal it.
///
/// # Invariants
///
/// `ptr` is a published, unsignalled fence of `ctx` made by [`FenceContext::publish`], whose
/// data was not dropped; the `DriverFence` owns one reference to it.
pub struct DriverFence<'a, O: FenceOps, T: Send + Sync> {
    ptr: NonNull<FenceAlloc<T>>,
    ctx: &'a FenceContext<O, T>,
}

// SAFETY: Signalling and reading the data work from any thread; the data is `Send + Sync`.
unsafe impl<O: FenceOps, T: Send + Sync> Send for DriverFence<'_, O, T> {}
// SAFETY: Shared references only give `&T` and `&Fence`, both `Sync`.
unsafe impl<O: FenceOps, T: Send + Sync> Sync for DriverFence<'_, O, T> {}

impl<'a, O: FenceOps, T: Send + Sync> DriverFence<'a, O, T> {
    /// The fence, as its consumers see it.
    pub fn fence(&self) -> &Fence {
        // SAFETY: By the type invariant the fence is initialised and we hold a reference.
        unsafe { Fence::from_raw(self.ptr.as_ptr().cast()) }
    }

    /// Signals the fence, with `result`'s error if it failed, and drops the driver data.
    pub fn signal(self, result: Result) {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant the fence is a published, unsignalled fence of `ctx`
        // with its data, and `this` owns a reference that is not used again.
        unsafe { signal_fence(this.ptr, this.ctx, result) };
    }
}

impl<O: FenceOps, T: Send + Sync> Deref for DriverFence<'_, O, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The data lives until the fence signals, which consumes the producer.
        unsafe { &(*self.ptr.as_ptr()).data }
    }
}

impl<O: FenceOps, T: Send + Sync> Drop for DriverFence<'_, O, T> {
    fn drop(&mut self) {
        // A fence that never signals blocks its waiters for ever: cancel it.
        // SAFETY: As in `signal`; `self` is not used after its drop.
        unsafe { signal_fence(self.ptr, self.ctx, Err(ECANCELED)) };
    }
}

/// The producer of a published fence, like [`DriverFence`], that holds a reference to its
/// context rather than borrowing it: made by [`FenceContext::publish_owned`].
///
/// Signalling or dropping it may drop the last reference to the context, which waits for an RCU
/// grace period: do that in process context, or keep another reference to the context.
///
/// # Invariants
///
/// `ptr` is a published, unsignalled fence of `ctx` whose data was not dropped; the
/// `OwnedDriverFence` owns one reference to it.
pub struct OwnedDriverFence<O: FenceOps, T: Send + Sync> {
    ptr: NonNull<FenceAlloc<T>>,
    ctx: Arc<FenceContext<O, T>>,
}

// SAFETY: As for `DriverFence`; the context is only used through its atomics.
unsafe impl<O: FenceOps, T: Send + Sync> Send for OwnedDriverFence<O, T> {}
// SAFETY: As for `DriverFence`.
unsafe impl<O: FenceOps, T: Send + Sync> Sync for OwnedDriverFence<O, T> {}

impl<O: FenceOps, T: Send + Sync> OwnedDriverFence<O, T> {
    /// The fence, as its consumers see it.
    pub fn fence(&self) -> &Fence {
        // SAFETY: By the type invariant the fence is initialised and we hold a reference.
        unsafe { Fence::from_raw(self.ptr.as_ptr().cast()) }
    }

    /// Signals the fence, with `result`'s error if it failed, and drops the driver data.
    pub fn signal(self, result: Result) {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant the fence is a published, unsignalled fence of `ctx`
        // with its data, and `this` owns a reference that is not used again.
        unsafe { signal_fence(this.ptr, &this.ctx, result) };
        // SAFETY: `this` is never dropped, so its context reference is moved out only here.
        drop(unsafe { ptr::read(&this.ctx) });
    }
}

impl<O: FenceOps, T: Send + Sync> Deref for OwnedDriverFence<O, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The data lives until the fence signals, which consumes the producer.
        unsafe { &(*self.ptr.as_ptr()).data }
    }
}

impl<O: FenceOps, T: Send + Sync> Drop for OwnedDriverFence<O, T> {
    fn drop(&mut self) {
        // SAFETY: As in `signal`; `ptr` is not used after the drop.
        unsafe { signal_fence(self.ptr, &self.ctx, Err(ECANCELED)) };
    }
}

/// Signals the fence at `ptr`, with `result`'s error if it failed, drops its driver data and
/// gives up the producer's reference.
///
/// # Safety
///
/// `ptr` is a published, unsignalled fence of `ctx` whose data was not dropped, and the caller
/// owns one reference to it, which it does not use again.
unsafe fn signal_fence<O: FenceOps, T: Send + Sync>(
    ptr: NonNull<FenceAlloc<T>>,
    ctx: &FenceContext<O, T>,
    result: Result,
) {
    // SAFETY: The caller guarantees that the fence is alive.
    let fence = unsafe { Fence::from_raw(ptr.as_ptr().cast()) }.as_raw();
    if let Err(e) = result {
        // SAFETY: The fence is alive and not signalled yet, and `e` is a valid negative errno.
        unsafe { bindings::dma_fence_set_error(fence, e.to_errno()) };
    }
    // SAFETY: The fence is alive, and only its producer, our caller, signals it.
    unsafe { bindings::dma_fence_signal(fence) };
    // The ops read no driver data, so it can go now.
    // SAFETY: The data was not dropped yet, and the producer, its only user, is going away.
    unsafe { ManuallyDrop::drop(&mut (*ptr.as_ptr()).data) };
    ctx.unsignalled.fetch_sub(1, Relaxed);
    // SAFETY: The caller owns one reference and does not touch the fence after this.
    unsafe { bindings::dma_fence_put(fence) };
}

/// A fence signalling critical section, for lockdep: code in it must not allocate memory in a
/// way that can recurse into reclaim, nor take a lock that is held around such an allocation.
///
/// Wrap the entry points of code that signals published fences (the `run` of a work item, the
/// thread of an interrupt handler) in one, so that lockdep proves the rule on every path.
pub struct SignallingSection {
    cookie: bool,
    _not_send: NotThreadSafe,
}

impl SignallingSection {
    /// Enters a signalling section until the returned guard is dropped.
    pub fn begin() -> Self {
        Self {
            // SAFETY: Entering a section has no precondition; the guard ends it on this thread.
            cookie: unsafe { bindings::dma_fence_begin_signalling() },
            _not_send: NotThreadSafe,
        }
    }

    /// Whether the calling thread is inside a signalling section (or in atomic context, which
    /// lockdep checks by other means).
    ///
    /// Only lockdep tracks sections: without `CONFIG_LOCKDEP` this is always `true`.
    pub fn active() -> bool {
        // A section begun inside another one returns `true`, and ending it leaves the outer one.
        Self::begin().cookie
    }
}

impl Drop for SignallingSection {
    fn drop(&mut self) {
        // SAFETY: `cookie` came from `dma_fence_begin_signalling` on this thread (the guard is
        // not `Send`).
        unsafe { bindings::dma_fence_end_signalling(self.cookie) };
    }
}

#[macros::kunit_tests(rust_dma_fence)]
mod tests {
    use super::*;
    use crate::sync::atomic::Acquire;

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_dma_fence_test";
    }

    type Ctx<T> = FenceContext<TestOps, T>;

    fn ctx<T: Send + Sync>() -> Ctx<T> {
        FenceContext::new(c"test-timeline")
    }

    #[test]
    fn the_stub_fence_is_signalled() {
        let stub = Fence::signalled();
        assert!(stub.is_signaled());
        assert_eq!(stub.status(), Some(Ok(())));
        assert_eq!(stub.wait(false, Delta::from_millis(1)), Ok(()));
    }

    #[test]
    fn seqnos_follow_publish_order_not_prepare_order() -> Result {
        let ctx = ctx::<u32>();
        let first = ctx.prepare(1, GFP_KERNEL)?;
        let second = ctx.prepare(2, GFP_KERNEL)?;
        let dropped = ctx.prepare(3, GFP_KERNEL)?;
        drop(dropped);
        let (p2, f2) = ctx.publish(second);
        let (p1, f1) = ctx.publish(first);
        assert_eq!((*p2, f2.seqno()), (2, 1));
        assert_eq!((*p1, f1.seqno()), (1, 2));
        assert_eq!(f1.context(), ctx.nr());
        assert_eq!(ctx.unsignalled(), 2);
        p1.signal(Ok(()));
        p2.signal(Ok(()));
        assert_eq!(ctx.unsignalled(), 0);
        Ok(())
    }

    #[test]
    fn signal_reaches_consumers_with_its_result() -> Result {
        let ctx = ctx::<()>();
        let (ok, ok_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (bad, bad_fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        assert!(!ok_fence.is_signaled());
        assert_eq!(ok_fence.status(), None);
        assert_eq!(ok_fence.wait(false, Delta::from_millis(10)), Err(ETIMEDOUT));
        ok.signal(Ok(()));
        bad.signal(Err(EIO));
        assert!(ok_fence.is_signaled());
        assert_eq!(ok_fence.status(), Some(Ok(())));
        assert_eq!(ok_fence.wait(false, Delta::from_millis(10)), Ok(()));
        assert_eq!(bad_fence.status(), Some(Err(EIO)));
        Ok(())
    }

    #[test]
    fn dropping_an_unsignalled_producer_cancels_the_fence() -> Result {
        let ctx = ctx::<()>();
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        drop(producer);
        assert_eq!(fence.status(), Some(Err(ECANCELED)));
        assert_eq!(ctx.unsignalled(), 0);
        Ok(())
    }

    struct CountsDrops<'a>(&'a Atomic<u32>);

    impl Drop for CountsDrops<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn driver_data_goes_at_signal_or_with_an_unpublished_fence() -> Result {
        let drops = Atomic::new(0u32);
        let ctx = ctx::<CountsDrops<'_>>();
        drop(ctx.prepare(CountsDrops(&drops), GFP_KERNEL)?);
        assert_eq!(drops.load(Acquire), 1);
        let (producer, fence) = ctx.publish(ctx.prepare(CountsDrops(&drops), GFP_KERNEL)?);
        assert_eq!(drops.load(Acquire), 1);
        producer.signal(Ok(()));
        // The consumer still holds the fence; the data is gone all the same.
        assert_eq!(drops.load(Acquire), 2);
        assert!(fence.is_signaled());
        Ok(())
    }

    #[test]
    fn consumers_outlive_the_context() -> Result {
        let fence = {
            let ctx = ctx::<u64>();
            let (producer, fence) = ctx.publish(ctx.prepare(7, GFP_KERNEL)?);
            producer.signal(Err(ETIME));
            fence
        };
        assert!(fence.is_signaled());
        assert_eq!(fence.status(), Some(Err(ETIME)));
        assert_eq!(fence.seqno(), 1);
        Ok(())
    }

    #[test]
    fn owned_producers_keep_their_context() -> Result {
        let ctx = Arc::new(ctx::<u32>(), GFP_KERNEL)?;
        let (borrowed, first) = ctx.publish(ctx.prepare(1, GFP_KERNEL)?);
        let (signalled, second) = FenceContext::publish_owned(&ctx, ctx.prepare(2, GFP_KERNEL)?);
        let (dropped, third) = FenceContext::publish_owned(&ctx, ctx.prepare(3, GFP_KERNEL)?);
        assert_eq!((first.seqno(), second.seqno(), third.seqno()), (1, 2, 3));
        assert_eq!((*signalled, *dropped), (2, 3));
        assert_eq!(ctx.unsignalled(), 3);
        borrowed.signal(Ok(()));
        let nr = ctx.nr();
        drop(ctx);
        // The producers hold the context now: their fences still count and signal.
        assert_eq!(signalled.fence().context(), nr);
        signalled.signal(Err(EIO));
        assert_eq!(second.status(), Some(Err(EIO)));
        assert_eq!(third.status(), None);
        drop(dropped);
        assert_eq!(third.status(), Some(Err(ECANCELED)));
        Ok(())
    }

    #[test]
    fn signalling_sections_nest_and_are_visible() {
        // Only lockdep tracks sections; without it `active` is always true.
        let lockdep = cfg!(CONFIG_LOCKDEP);
        assert_eq!(SignallingSection::active(), !lockdep);
        let outer = SignallingSection::begin();
        assert!(SignallingSection::active());
        let inner = SignallingSection::begin();
        drop(inner);
        // Ending the nested section leaves the outer one.
        assert!(SignallingSection::active());
        drop(outer);
        assert_eq!(SignallingSection::active(), !lockdep);
    }
}
