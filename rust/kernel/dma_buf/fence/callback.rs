// SPDX-License-Identifier: GPL-2.0

//! Callbacks run when a fence signals.

use super::Fence;
use crate::{bindings, prelude::*, sync::aref::ARef, types::Opaque};
use core::{marker::PhantomPinned, ptr};

/// What runs when a fence signals.
///
/// [`FenceCallback::called`] runs in the context of whoever signals the fence, with the fence's
/// lock held and possibly in hard-interrupt context: it must not sleep, must not allocate with
/// `GFP_KERNEL`, and must not drop anything whose drop could do either. It must not call what
/// takes the fence's lock either, such as [`Fence::status`] or [`Fence::wait`]:
/// [`Fence::is_signaled`] is fine. It borrows its data, so that the data is dropped later, with
/// the registration, in process context.
pub trait FenceCallback: Send + Sync {
    /// Called once, when `fence` signals.
    fn called(&self, fence: &Fence);
}

/// `data` registered to be called when a fence signals.
///
/// A registration made on a fence that had already signalled is not armed
/// ([`FenceCallbackRegistration::armed`] is `false`) and its callback never runs: the caller
/// treats the fence as done. Dropping an armed registration removes the callback; if the fence
/// is signalling on another CPU at that moment, the drop waits (on the fence's lock) until the
/// callback has returned, so the callback never runs on freed data.
///
/// # Invariants
///
/// If `armed`, `cb` is on `fence`'s callback list or its callback has run or is running; the
/// registration holds a reference to `fence` either way.
#[pin_data(PinnedDrop)]
pub struct FenceCallbackRegistration<T: FenceCallback> {
    #[pin]
    cb: Opaque<bindings::dma_fence_cb>,
    fence: ARef<Fence>,
    armed: bool,
    data: T,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The callback may run on any CPU and only reads `data`, which is `Send + Sync`; the
// fence reference is thread-safe.
unsafe impl<T: FenceCallback> Send for FenceCallbackRegistration<T> {}
// SAFETY: Shared references only read `armed` and `data` (`Sync`).
unsafe impl<T: FenceCallback> Sync for FenceCallbackRegistration<T> {}

impl<T: FenceCallback> FenceCallbackRegistration<T> {
    /// Registers `data` to be called when `fence` signals.
    ///
    /// Registering cannot fail: a caller that must not fail allocates the memory first (e.g.
    /// [`KBox::new_uninit`]) and initialises it in place later.
    pub fn new<'a>(fence: &'a Fence, data: T) -> impl PinInit<Self> + 'a
    where
        T: 'a,
    {
        pin_init!(&this in Self {
            cb: Opaque::uninit(),
            fence: ARef::from(fence),
            armed: false,
            data,
            _pin: PhantomPinned,
            _: {
                let this = this.as_ptr();
                // SAFETY: Every field is initialised and `this` is pinned, so `cb` keeps its
                // address until `PinnedDrop` removes it from the fence. The fence is alive: the
                // registration holds a reference.
                let ret = unsafe {
                    bindings::dma_fence_add_callback(
                        fence.as_raw(),
                        Opaque::cast_into(ptr::addr_of!((*this).cb)),
                        Some(Self::callback),
                    )
                };
                // INVARIANT: `armed` is set only when the callback went on the list.
                // SAFETY: `this` is valid for writes during initialisation.
                unsafe { (*this).armed = ret == 0 };
            },
        })
    }

    /// Whether the callback was registered: `false` means the fence had already signalled
    /// and the callback will never run.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// The fence the callback waits for.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The callback's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The `dma_fence_func_t` the C core calls when the fence signals.
    ///
    /// # Safety
    ///
    /// `cb` is the `cb` field of an armed, live `FenceCallbackRegistration<T>`, and `fence` the
    /// fence it was added to, which is signalling.
    unsafe extern "C" fn callback(
        fence: *mut bindings::dma_fence,
        cb: *mut bindings::dma_fence_cb,
    ) {
        // SAFETY: `cb` is the `cb` field of a pinned, armed `FenceCallbackRegistration<T>`
        // (only `new` registers this function), which is alive: its drop removes the callback
        // under the fence's lock, which the C core holds while calling us.
        let this = unsafe {
            &*crate::container_of!(cb.cast::<Opaque<bindings::dma_fence_cb>>(), Self, cb)
        };
        // SAFETY: The C core passes the fence that is signalling, alive while it does.
        this.data.called(unsafe { Fence::from_raw(fence) });
    }
}

#[pinned_drop]
impl<T: FenceCallback> PinnedDrop for FenceCallbackRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        if self.armed {
            // SAFETY: By the type invariant `cb` was added to the fence, which is alive. The
            // removal takes the fence's lock, so a callback running on another CPU has returned
            // when it does; one that already ran was unlinked by the C core, and removing it
            // again is a no-op.
            unsafe {
                bindings::dma_fence_remove_callback(self.fence.as_raw(), self.cb.get());
            }
        }
    }
}

#[macros::kunit_tests(rust_dma_fence_callback)]
mod tests {
    use super::*;
    use crate::{
        dma_buf::fence::{FenceContext, FenceOps},
        sync::atomic::{Atomic, Relaxed},
    };

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_dma_fence_callback_test";
    }

    /// Counts its calls, and whether the fence read as signalled when it was called.
    struct Counter {
        calls: Atomic<u32>,
        saw_signalled: Atomic<u32>,
    }

    impl Counter {
        fn new() -> Self {
            Self {
                calls: Atomic::new(0),
                saw_signalled: Atomic::new(0),
            }
        }
    }

    impl FenceCallback for Counter {
        fn called(&self, fence: &Fence) {
            self.calls.fetch_add(1, Relaxed);
            if fence.is_signaled() {
                self.saw_signalled.fetch_add(1, Relaxed);
            }
        }
    }

    #[test]
    fn callbacks_run_once_when_the_fence_signals() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"callback-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let a = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Counter::new()),
            GFP_KERNEL,
        )?;
        let b = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Counter::new()),
            GFP_KERNEL,
        )?;
        assert!(a.armed() && b.armed());
        assert_eq!(a.data().calls.load(Relaxed), 0);
        producer.signal(Err(EIO));
        for reg in [&a, &b] {
            assert_eq!(reg.data().calls.load(Relaxed), 1);
            assert_eq!(reg.data().saw_signalled.load(Relaxed), 1);
        }
        assert_eq!(fence.status(), Some(Err(EIO)));
        Ok(())
    }

    #[test]
    fn a_signalled_fence_does_not_arm() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"callback-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        producer.signal(Ok(()));
        let reg = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Counter::new()),
            GFP_KERNEL,
        )?;
        assert!(!reg.armed());
        assert_eq!(reg.data().calls.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn a_dropped_registration_is_not_called() -> Result {
        let calls = Atomic::new(0u32);
        struct Borrowing<'a>(&'a Atomic<u32>);
        impl FenceCallback for Borrowing<'_> {
            fn called(&self, _fence: &Fence) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let ctx = FenceContext::<TestOps, ()>::new(c"callback-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let kept = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Borrowing(&calls)),
            GFP_KERNEL,
        )?;
        let dropped = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Borrowing(&calls)),
            GFP_KERNEL,
        )?;
        drop(dropped);
        producer.signal(Ok(()));
        assert_eq!(calls.load(Relaxed), 1);
        assert!(kept.armed());
        Ok(())
    }

    #[test]
    fn the_registration_keeps_the_fence_alive() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"callback-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let reg = KBox::pin_init(
            FenceCallbackRegistration::new(&fence, Counter::new()),
            GFP_KERNEL,
        )?;
        drop(fence);
        producer.signal(Ok(()));
        assert_eq!(reg.data().calls.load(Relaxed), 1);
        assert!(reg.fence().is_signaled());
        Ok(())
    }
}
