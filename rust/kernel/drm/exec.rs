// SPDX-License-Identifier: GPL-2.0

//! Locking several GEM objects at once: DRM execution contexts.
//!
//! C header: [`include/drm/drm_exec.h`](srctree/include/drm/drm_exec.h)
//!
//! A job that reads or writes a set of buffers locks all of their reservation objects before it
//! is published, reserves fence slots in them, and adds its fence to them once published. The
//! locks are ww-mutexes: two transactions that lock overlapping sets in different orders detect
//! the deadlock, and the younger one backs off (drops its locks) and tries again.
//!
//! [`Exec::lock_all`] runs that loop around a closure: the closure locks (and prepares) what it
//! needs through a [`Locker`], and when a lock is contended, the abstraction unlocks everything,
//! takes the contended lock first (the ww slow path, keeping the transaction's age, so it cannot
//! starve) and runs the closure again. The closure must therefore be idempotent: whatever it
//! computed in a round that backed off is thrown away.
//!
//! Once [`Exec::lock_all`] returns, every object it locked stays locked until the [`Exec`] is
//! dropped. [`Exec::add_fence`] adds a fence only to an object whose reservation object this
//! transaction locked *and* reserved a slot in: it neither allocates nor fails in any other way,
//! so it can run after the fence was published.
//!
//! # Locking rules
//!
//! - [`Exec::lock_all`] (and the closure) sleeps, waits for other transactions and allocates
//!   memory: never call it inside a fence signalling section
//!   ([`SignallingSection`](crate::dma_buf::fence::SignallingSection)) or with a spinlock held.
//!   Reservation locks are taken around allocations that may recurse into reclaim, and reclaim
//!   waits for fences, so code that signals fences must never take them.
//! - A task holds at most one transaction in its locking phase at a time: two acquire contexts of
//!   the reservation class in one task can deadlock, and lockdep reports it. An [`Exec`] is not
//!   [`Send`], since its locks belong to the task that took them.
//! - [`Exec::add_fence`] (and `GpuVm::resv_add_fence`) neither sleeps nor allocates: call them
//!   between publishing a job's fence and dropping the [`Exec`].
//! - Dropping an [`Exec`] unlocks everything and drops its references to the objects, which may
//!   free them: process context only.

use crate::{
    bindings,
    bits::bit_u32,
    dma_buf::{fence::Fence, resv::Usage},
    drm::gem::IntoGEMObject,
    error::{to_result, Result},
    ffi::c_int,
    impl_flags,
    prelude::*,
    types::{NotThreadSafe, Opaque},
};
use core::{cell::Cell, ptr};

impl_flags!(
    /// How an [`Exec`] locks its objects.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Flags(u32);

    /// One of the [`Flags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Flag {
        /// A signal interrupts the wait for a contended lock: [`Exec::lock_all`] then fails with
        /// `EINTR`. Set it in ioctl paths.
        InterruptibleWait = bit_u32(0),
        /// Locking an object the transaction already holds (or another object that shares its
        /// reservation object) succeeds instead of failing with `EALREADY`.
        IgnoreDuplicates = bit_u32(1),
    }
);

// The C flags are `BIT()` macros, which bindgen cannot see through.
const _: () = {
    assert!(Flag::InterruptibleWait as u32 == bindings::DRM_EXEC_INTERRUPTIBLE_WAIT);
    assert!(Flag::IgnoreDuplicates as u32 == bindings::DRM_EXEC_IGNORE_DUPLICATES);
};

/// The fence slots this transaction reserved in one reservation object it holds.
struct Slots {
    resv: *mut bindings::dma_resv,
    /// Reserved slots no fence was added to yet.
    free: Cell<u32>,
}

/// Returns the reservation object of a GEM object.
///
/// # Safety
///
/// `gem` points to a live GEM object.
unsafe fn gem_resv(gem: *mut bindings::drm_gem_object) -> *mut bindings::dma_resv {
    // SAFETY: `gem` is live (safety requirement); `resv` is set before the object is published
    // and never changes after.
    unsafe { (*gem).resv }
}

/// A transaction that locks the reservation objects of a set of GEM objects.
///
/// It is pinned, because the locks it holds point at its acquire context.
///
/// # Examples
///
/// ```
/// use kernel::{
///     dma_buf::{fence::Fence, resv::Usage},
///     drm::{exec::{Exec, Flag, Flags}, gem::IntoGEMObject},
///     prelude::*,
/// };
///
/// /// Locks `bos`, then adds `fence` to them for writing.
/// fn attach<O: IntoGEMObject>(bos: &[&O], fence: &Fence) -> Result {
///     let mut exec = KBox::pin_init(Exec::new(Flag::InterruptibleWait.into(), 0), GFP_KERNEL)?;
///     exec.as_mut().lock_all(|locker| {
///         for bo in bos {
///             locker.prepare_obj(*bo, 1)?;
///         }
///         Ok(())
///     })?;
///     for bo in bos {
///         exec.add_fence(*bo, fence, Usage::Write)?;
///     }
///     Ok(())
/// }
/// ```
///
/// # Invariants
///
/// - `exec` is initialised by `drm_exec_init`, and finalised only when it is initialised again
///   right after, or on drop.
/// - `locked` is true exactly when the last [`Exec::lock_all`] succeeded; the transaction then
///   holds the objects of `exec.objects`, and no other lock.
/// - Every entry of `slots` is the reservation object of an object the transaction holds, with
///   at least `free` fence slots reserved that no fence of this transaction took.
#[pin_data(PinnedDrop)]
pub struct Exec {
    #[pin]
    exec: Opaque<bindings::drm_exec>,
    flags: Flags,
    nr_hint: u32,
    locked: bool,
    slots: KVec<Slots>,
    _not_send: NotThreadSafe,
}

impl Exec {
    /// Creates a transaction that locks nothing yet.
    ///
    /// `nr_hint` sizes the table of locked objects (0 picks a page's worth); it grows as needed.
    pub fn new(flags: Flags, nr_hint: u32) -> impl PinInit<Self> {
        // INVARIANT: `drm_exec_init` initialises `exec`; nothing is locked or reserved.
        pin_init!(Self {
            exec <- Opaque::ffi_init(move |slot| {
                // SAFETY: `slot` is valid for writes and pinned. A failed allocation of the
                // object table is not an error: the table is allocated again on first use.
                unsafe { bindings::drm_exec_init(slot, flags.into(), nr_hint) }
            }),
            flags,
            nr_hint,
            locked: false,
            slots: KVec::new(),
            _not_send: NotThreadSafe,
        })
    }

    /// Locks what `f` asks for, retrying on contention, and returns what `f` returned in the
    /// round that locked everything.
    ///
    /// `f` runs until one of its rounds sees no contention. When one of its locks is contended,
    /// the [`Locker`] fails every call with `EDEADLK`; whatever `f` returns then, the round is
    /// discarded: everything is unlocked, the contended object is locked first, and `f` runs
    /// again. So `f` may run several times, and must not keep state across rounds that a
    /// discarded round would leave wrong.
    ///
    /// Any other error (from `f`, or from a [`Locker`] call, even if `f` ignored it) ends the
    /// transaction: everything is unlocked and the error is returned. The [`Exec`] is then as
    /// new, and [`Exec::lock_all`] may be called again. Calling it while the transaction holds
    /// its locks fails with `EBUSY`.
    pub fn lock_all<R>(
        self: Pin<&mut Self>,
        mut f: impl FnMut(&mut Locker<'_>) -> Result<R>,
    ) -> Result<R> {
        // SAFETY: Nothing is moved out of `self`: the `drm_exec` stays where it is.
        let this = unsafe { self.get_unchecked_mut() };
        if this.locked {
            return Err(EBUSY);
        }
        let raw = this.exec.get();
        // SAFETY: `raw` is initialised and holds nothing (type invariant). Its first cleanup
        // starts the ww transaction (and returns true).
        unsafe { bindings::drm_exec_cleanup(raw) };
        loop {
            this.slots.clear();
            let mut locker = Locker {
                raw,
                slots: &mut this.slots,
                failed: None,
            };
            // The object the last round backed off for is locked first, with the ww slow
            // path. With no objects, the C function does only that: even a closure that no
            // longer asks for the object then makes progress.
            let ret = locker.run(|raw| {
                // SAFETY: `raw` is in a round of its transaction.
                unsafe { bindings::drm_exec_prepare_array(raw, ptr::null_mut(), 0, 0) }
            });
            let ret = ret.and_then(|()| f(&mut locker));
            // A failed lock fails the round, whatever `f` made of the error.
            let ret = match locker.failed {
                Some(e) => Err(e),
                None => ret,
            };
            // SAFETY: `raw` is initialised; `contended` is set exactly when a lock of this round
            // returned `EDEADLK`.
            if unsafe { !(*raw).contended.is_null() } {
                // Unlocks everything, keeping the ticket (and returns true).
                // SAFETY: `raw` is in a round of its transaction.
                unsafe { bindings::drm_exec_cleanup(raw) };
                continue;
            }
            return match ret {
                Ok(r) => {
                    // Ends the locking phase and drops the contended object if `f` did not
                    // lock it again (and returns false).
                    // SAFETY: `raw` is in a round of its transaction, without contention.
                    unsafe { bindings::drm_exec_cleanup(raw) };
                    // INVARIANT: Every lock of the round succeeded, and `slots` records what
                    // the round reserved.
                    this.locked = true;
                    Ok(r)
                }
                Err(e) => {
                    this.reset();
                    Err(e)
                }
            };
        }
    }

    /// Unlocks everything and makes the context new again.
    fn reset(&mut self) {
        // INVARIANT: The context is finalised and immediately initialised again, holding
        // nothing and reserving nothing.
        self.slots.clear();
        self.locked = false;
        let raw = self.exec.get();
        // SAFETY: `raw` is initialised (type invariant); `fini` unlocks everything, drops the
        // object references and ends the ww transaction.
        unsafe { bindings::drm_exec_fini(raw) };
        // SAFETY: `raw` was just finalised and is still pinned.
        unsafe { bindings::drm_exec_init(raw, self.flags.into(), self.nr_hint) };
    }

    fn slots_of(&self, resv: *mut bindings::dma_resv) -> Option<&Slots> {
        self.slots.iter().find(|s| s.resv == resv)
    }

    /// Adds `fence` to `obj`'s reservation object, using one of the slots this transaction
    /// reserved in it.
    ///
    /// Fails with `EINVAL`, adding nothing, if the transaction does not hold the reservation
    /// object, and with `ENOSPC` if it holds it but has no reserved slot left in it (it locked
    /// it without preparing it, or used its slots). Never allocates nor sleeps.
    pub fn add_fence<O: IntoGEMObject>(&self, obj: &O, fence: &Fence, usage: Usage) -> Result {
        // SAFETY: `obj` is a live GEM object.
        let resv = unsafe { gem_resv(obj.as_raw()) };
        let slots = self.slots_of(resv).ok_or(EINVAL)?;
        if slots.free.get() == 0 {
            return Err(ENOSPC);
        }
        // SAFETY: The transaction holds `resv`'s lock with a free reserved slot (type invariant);
        // the reservation object takes its own reference to the fence.
        unsafe { bindings::dma_resv_add_fence(resv, fence.as_raw(), usage as u32) };
        // INVARIANT: The fence took one of the free slots.
        slots.free.set(slots.free.get() - 1);
        Ok(())
    }

    /// Calls `f` on every fence of `usage` (or a stricter usage) in the reservation objects
    /// this transaction holds with reserved slots: the implicit dependencies of work that
    /// will add a fence to them. May allocate; fails with `EINVAL` outside a locked transaction.
    pub fn for_each_fence(&self, usage: Usage, mut f: impl FnMut(&Fence) -> Result) -> Result {
        if !self.locked {
            return Err(EINVAL);
        }
        for slots in self.slots.iter() {
            // SAFETY: The transaction holds `slots.resv`'s lock (type invariant).
            unsafe { crate::dma_buf::resv::for_each_fence_locked(slots.resv, usage, &mut f) }?;
        }
        Ok(())
    }

    /// Takes one reserved slot in every object the transaction holds, then runs `add`, which
    /// adds one fence to each of them. Fails with `EINVAL` if nothing is locked and `ENOSPC`
    /// if an object has no free slot, without running `add`.
    pub(crate) fn add_fence_to_all_locked(
        &self,
        add: impl FnOnce(*mut bindings::drm_exec),
    ) -> Result {
        if !self.locked {
            return Err(EINVAL);
        }
        let raw = self.exec.get();
        // SAFETY: The transaction holds its objects (type invariant), so the table is stable.
        let (objects, count) = unsafe { ((*raw).objects, (*raw).num_objects as usize) };
        let resv_at = |i: usize| {
            // SAFETY: `i < count`, so the entry is one of the live objects the context holds a
            // reference to.
            unsafe { gem_resv(*objects.add(i)) }
        };
        for i in 0..count {
            match self.slots_of(resv_at(i)) {
                Some(s) if s.free.get() > 0 => s.free.set(s.free.get() - 1),
                _ => {
                    for j in 0..i {
                        if let Some(s) = self.slots_of(resv_at(j)) {
                            s.free.set(s.free.get() + 1);
                        }
                    }
                    return Err(ENOSPC);
                }
            }
        }
        // INVARIANT: A slot was taken in each locked object for the fence `add` adds to it.
        add(raw);
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for Exec {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `exec` is initialised (type invariant) and not used after; `fini` unlocks
        // everything and drops the object references.
        unsafe { bindings::drm_exec_fini(self.exec.get()) };
    }
}

/// Locks objects for one round of [`Exec::lock_all`].
///
/// After a call failed, every later call fails with the same error without locking anything:
/// after `EDEADLK` the transaction has to back off before it can lock again, and any other
/// error fails the transaction anyway.
///
/// # Invariants
///
/// `raw` is in a round of its transaction, which holds the reservation objects of `slots` with
/// their free slots, unless `failed` is set.
pub struct Locker<'a> {
    raw: *mut bindings::drm_exec,
    slots: &'a mut KVec<Slots>,
    failed: Option<Error>,
}

impl Locker<'_> {
    /// Locks `obj`'s reservation object without reserving fence slots (to read or wait on it).
    ///
    /// Fails with `EDEADLK` on contention, `EALREADY` if the transaction holds it already
    /// (unless [`Flag::IgnoreDuplicates`]), `EINTR` if interrupted (with
    /// [`Flag::InterruptibleWait`]) and `ENOMEM`.
    pub fn lock_obj<O: IntoGEMObject>(&mut self, obj: &O) -> Result {
        let gem = obj.as_raw();
        // SAFETY: `raw` is in a round (type invariant) and `gem` is a live GEM object, which
        // the context takes its own reference to.
        self.run(|raw| unsafe { bindings::drm_exec_lock_obj(raw, gem) })?;
        // SAFETY: `gem` is live.
        self.record(unsafe { gem_resv(gem) }, 0)
    }

    /// Locks `obj`'s reservation object and makes sure `num_fences` fence slots are free in it,
    /// for [`Exec::add_fence`].
    ///
    /// Preparing the same reservation object again (with [`Flag::IgnoreDuplicates`]) reserves
    /// the larger of the two counts, not their sum. Fails like [`Locker::lock_obj`].
    pub fn prepare_obj<O: IntoGEMObject>(&mut self, obj: &O, num_fences: u32) -> Result {
        let gem = obj.as_raw();
        // SAFETY: As in `lock_obj`.
        self.run(|raw| unsafe { bindings::drm_exec_prepare_obj(raw, gem, num_fences) })?;
        // SAFETY: `gem` is live.
        self.record(unsafe { gem_resv(gem) }, num_fences)
    }

    /// Runs one C locking call on the context, unless an earlier call of the round failed.
    pub(crate) fn run(&mut self, op: impl FnOnce(*mut bindings::drm_exec) -> c_int) -> Result {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let ret = to_result(op(self.raw));
        if let Err(e) = ret {
            self.failed = Some(e);
        }
        ret
    }

    /// Fails the round with `e`.
    pub(crate) fn fail(&mut self, e: Error) -> Result {
        if self.failed.is_none() {
            self.failed = Some(e);
        }
        Err(e)
    }

    /// Whether the round holds `resv`.
    pub(crate) fn holds(&self, resv: *mut bindings::dma_resv) -> bool {
        self.slots.iter().any(|s| s.resv == resv)
    }

    /// How many objects the round holds in the context's table.
    pub(crate) fn num_locked(&self) -> u32 {
        // SAFETY: `raw` is initialised (type invariant).
        unsafe { (*self.raw).num_objects }
    }

    /// Records that the round holds `resv` with at least `num_fences` free slots.
    pub(crate) fn record(&mut self, resv: *mut bindings::dma_resv, num_fences: u32) -> Result {
        if let Some(s) = self.slots.iter().find(|s| s.resv == resv) {
            // Reserving ensures that many slots are free; it does not add to earlier ones.
            s.free.set(s.free.get().max(num_fences));
            return Ok(());
        }
        let slots = Slots {
            resv,
            free: Cell::new(num_fences),
        };
        if self.slots.push(slots, GFP_KERNEL).is_err() {
            return self.fail(ENOMEM);
        }
        Ok(())
    }

    /// Records the objects the context locked since it held `since` of them, each with at
    /// least `num_fences` free slots.
    pub(crate) fn record_locked_since(&mut self, since: u32, num_fences: u32) -> Result {
        for i in since..self.num_locked() {
            // SAFETY: `i < num_objects`, so the entry is a live object the context holds.
            let resv = unsafe { gem_resv(*(*self.raw).objects.add(i as usize)) };
            self.record(resv, num_fences)?;
        }
        Ok(())
    }
}

/// A faux DRM device and shmem GEM objects, for the KUnit tests of the GEM locking code.
#[cfg(all(CONFIG_KUNIT = "y", CONFIG_RUST_DRM_GEM_SHMEM_HELPER))]
pub(crate) mod kunit_gem {
    use crate::{
        device,
        dma_buf::resv::DmaResv,
        drm::{
            self,
            gem::{self, shmem, IntoGEMObject},
        },
        faux,
        page::PAGE_SIZE,
        prelude::*,
        sync::aref::ARef,
    };

    #[pin_data]
    pub(crate) struct KunitData {}
    pub(crate) struct KunitDriver;
    pub(crate) struct KunitFile;
    #[pin_data]
    pub(crate) struct KunitObject {}

    /// The test's buffer objects.
    pub(crate) type Bo = shmem::Object<KunitObject>;

    impl drm::file::DriverFile for KunitFile {
        type Driver = KunitDriver;

        fn open(_dev: &drm::Device<KunitDriver>) -> Result<Pin<KBox<Self>>> {
            Ok(KBox::new(Self, GFP_KERNEL)?.into())
        }
    }

    impl gem::DriverObject for KunitObject {
        type Driver = KunitDriver;
        type Args = ();

        fn new(
            _dev: &drm::Device<KunitDriver>,
            _size: usize,
            _args: Self::Args,
        ) -> impl PinInit<Self, Error> {
            try_pin_init!(KunitObject {})
        }
    }

    #[vtable]
    impl drm::Driver for KunitDriver {
        type Data = KunitData;
        type RegistrationData<'a> = ();
        type File = KunitFile;
        type Object = Bo;
        type ParentDevice<Ctx: device::DeviceContext> = faux::Device<Ctx>;

        const INFO: drm::DriverInfo = drm::DriverInfo {
            major: 0,
            minor: 0,
            patchlevel: 0,
            name: c"kunit-exec",
            desc: c"KUnit GEM locking",
        };
        const IOCTLS: &'static [drm::ioctl::DrmIoctlDescriptor] = &[];
    }

    /// A DRM device that is never registered, on a faux device named `name`, which must outlive
    /// it. Each test picks its own name: a test that fails an assertion leaks its device.
    pub(crate) fn drm_dev(
        name: &'static CStr,
    ) -> Result<(faux::Registration, drm::UnregisteredDevice<KunitDriver>)> {
        let reg = faux::Registration::new(name, None)?;
        let drm = drm::UnregisteredDevice::new(reg.as_ref(), try_pin_init!(KunitData {}))?;
        Ok((reg, drm))
    }

    /// A one-page object, with its own reservation object or `parent`'s.
    pub(crate) fn new_bo(dev: &drm::Device<KunitDriver>, parent: Option<&Bo>) -> Result<ARef<Bo>> {
        let config = shmem::ObjectConfig {
            map_wc: false,
            parent_resv_obj: parent,
        };
        Bo::new(dev, PAGE_SIZE, config, ())
    }

    /// The object's reservation object.
    pub(crate) fn resv(bo: &Bo) -> &DmaResv {
        // SAFETY: The object is alive, and so is its reservation object.
        unsafe { DmaResv::from_raw((*bo.as_raw()).resv) }
    }

    /// Whether some task holds the object's reservation lock.
    pub(crate) fn is_locked(bo: &Bo) -> bool {
        // SAFETY: The reservation object is alive; reading the owner of its mutex is racy only
        // in what it tells, and the tests ask only when the answer is stable.
        unsafe { bindings::mutex_is_locked(&raw mut (*resv(bo).as_raw()).lock.base) }
    }
}

#[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
#[macros::kunit_tests(rust_drm_exec)]
mod tests {
    use super::{kunit_gem::*, *};
    use crate::{
        current,
        dma_buf::fence::{FenceContext, FenceOps},
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, Completion,
        },
        workqueue,
    };

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_drm_exec_test";
    }

    fn new_exec(flags: Flags) -> Result<Pin<KBox<Exec>>> {
        KBox::pin_init(Exec::new(flags, 0), GFP_KERNEL)
    }

    #[test]
    fn fences_go_only_to_prepared_objects() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-fences")?;
        let (a, b, c) = (
            new_bo(&drm, None)?,
            new_bo(&drm, None)?,
            new_bo(&drm, None)?,
        );
        let ctx = FenceContext::<TestOps, ()>::new(c"exec-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let mut exec = new_exec(Flags::empty())?;
        assert_eq!(exec.add_fence(&*b, &fence, Usage::Write), Err(EINVAL));
        let got = exec.as_mut().lock_all(|locker| {
            locker.lock_obj(&*a)?;
            locker.prepare_obj(&*b, 1)?;
            Ok(42)
        })?;
        assert_eq!(got, 42);
        assert!(is_locked(&a) && is_locked(&b) && !is_locked(&c));
        // Locked without a reserved slot, and not locked at all.
        assert_eq!(exec.add_fence(&*a, &fence, Usage::Write), Err(ENOSPC));
        assert_eq!(exec.add_fence(&*c, &fence, Usage::Write), Err(EINVAL));
        assert_eq!(exec.add_fence(&*b, &fence, Usage::Write), Ok(()));
        assert_eq!(exec.add_fence(&*b, &fence, Usage::Write), Err(ENOSPC));
        assert_eq!(exec.as_mut().lock_all(|_| Ok(())), Err(EBUSY));
        drop(exec);
        assert!(!is_locked(&a) && !is_locked(&b));
        assert!(resv(&a).test_signaled(Usage::Bookkeep));
        assert!(resv(&c).test_signaled(Usage::Bookkeep));
        assert!(!resv(&b).test_signaled(Usage::Write));
        producer.signal(Ok(()));
        assert!(resv(&b).test_signaled(Usage::Bookkeep));
        Ok(())
    }

    #[test]
    fn for_each_fence_sees_the_implicit_dependencies() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-implicit")?;
        let (a, b) = (new_bo(&drm, None)?, new_bo(&drm, None)?);
        let ctx = FenceContext::<TestOps, ()>::new(c"exec-test");
        let (w, write) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (k, keep) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let mut exec = new_exec(Flags::empty())?;
        assert_eq!(exec.for_each_fence(Usage::Read, |_| Ok(())), Err(EINVAL));
        exec.as_mut().lock_all(|locker| {
            locker.prepare_obj(&*a, 2)?;
            locker.prepare_obj(&*b, 1)
        })?;
        exec.add_fence(&*a, &write, Usage::Write)?;
        exec.add_fence(&*a, &keep, Usage::Bookkeep)?;
        let seqnos = |usage| -> Result<KVec<u64>> {
            let mut seen = KVec::new();
            exec.for_each_fence(usage, |f| {
                seen.push(f.seqno(), GFP_KERNEL)?;
                Ok(())
            })?;
            Ok(seen)
        };
        // READ includes WRITE; only BOOKKEEP sees the bookkeeping fence.
        assert_eq!(&*seqnos(Usage::Read)?, &[write.seqno()]);
        let mut all = seqnos(Usage::Bookkeep)?;
        all.as_mut_slice().sort_unstable();
        assert_eq!(&*all, &[write.seqno(), keep.seqno()]);
        // An error from the callback stops the walk and comes back.
        assert_eq!(exec.for_each_fence(Usage::Read, |_| Err(EINTR)), Err(EINTR));
        w.signal(Ok(()));
        k.signal(Ok(()));
        Ok(())
    }

    #[test]
    fn a_failed_round_unlocks_everything() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-failed")?;
        let (a, b) = (new_bo(&drm, None)?, new_bo(&drm, None)?);
        let mut exec = new_exec(Flags::empty())?;
        let mut runs = 0;
        let ret = exec.as_mut().lock_all(|locker| {
            runs += 1;
            locker.prepare_obj(&*a, 1)?;
            assert!(is_locked(&a));
            Err::<(), _>(EINVAL)
        });
        assert_eq!((ret, runs), (Err(EINVAL), 1));
        assert!(!is_locked(&a));
        // A duplicate fails the transaction even when the closure ignores the error, and the
        // locker refuses to lock anything after it.
        let ret = exec.as_mut().lock_all(|locker| {
            locker.lock_obj(&*a)?;
            assert_eq!(locker.lock_obj(&*a), Err(EALREADY));
            assert_eq!(locker.prepare_obj(&*b, 1), Err(EALREADY));
            assert!(!is_locked(&b));
            Ok(())
        });
        assert_eq!(ret, Err(EALREADY));
        assert!(!is_locked(&a));
        // The context is as new.
        exec.as_mut()
            .lock_all(|locker| locker.prepare_obj(&*b, 1))?;
        assert!(is_locked(&b) && !is_locked(&a));
        Ok(())
    }

    #[test]
    fn duplicates_and_shared_reservations_reserve_the_largest_count() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-dups")?;
        let vm_root = new_bo(&drm, None)?;
        let private = new_bo(&drm, Some(&vm_root))?;
        // Two timelines: a reservation object keeps one fence per timeline.
        let ctx1 = FenceContext::<TestOps, ()>::new(c"exec-test-1");
        let ctx2 = FenceContext::<TestOps, ()>::new(c"exec-test-2");
        let (p1, f1) = ctx1.publish(ctx1.prepare((), GFP_KERNEL)?);
        let (p2, f2) = ctx2.publish(ctx2.prepare((), GFP_KERNEL)?);
        let mut exec = new_exec(Flag::IgnoreDuplicates.into())?;
        exec.as_mut().lock_all(|locker| {
            locker.prepare_obj(&*vm_root, 1)?;
            locker.lock_obj(&*vm_root)?;
            locker.prepare_obj(&*private, 2)?;
            locker.prepare_obj(&*vm_root, 1)
        })?;
        // Both objects share one reservation object, with two slots.
        exec.add_fence(&*private, &f1, Usage::Read)?;
        exec.add_fence(&*vm_root, &f2, Usage::Write)?;
        assert_eq!(exec.add_fence(&*private, &f2, Usage::Write), Err(ENOSPC));
        drop(exec);
        p2.signal(Ok(()));
        assert!(resv(&vm_root).test_signaled(Usage::Write));
        assert!(!resv(&private).test_signaled(Usage::Read));
        p1.signal(Ok(()));
        assert!(resv(&vm_root).test_signaled(Usage::Bookkeep));
        Ok(())
    }

    /// Two tasks meet in the middle of their transactions.
    #[pin_data]
    struct Rendezvous {
        #[pin]
        worker_locked: Completion,
        #[pin]
        test_locked: Completion,
        #[pin]
        release: Completion,
        #[pin]
        worker_done: Completion,
        worker_runs: Atomic<u32>,
        worker_err: Atomic<i32>,
    }

    fn rendezvous() -> Result<Arc<Rendezvous>> {
        Arc::pin_init(
            pin_init!(Rendezvous {
                worker_locked <- Completion::new(),
                test_locked <- Completion::new(),
                release <- Completion::new(),
                worker_done <- Completion::new(),
                worker_runs: Atomic::new(0),
                worker_err: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Runs `f` in a work item, so in another task than the test, and records its result.
    fn spawn(
        r: &Arc<Rendezvous>,
        f: impl FnOnce(&Rendezvous) -> Result + Send + 'static,
    ) -> Result {
        let r = r.clone();
        workqueue::system().try_spawn(GFP_KERNEL, move || {
            let err = f(&r).err().map_or(0, |e| e.to_errno());
            r.worker_err.store(err, Relaxed);
            r.worker_done.complete_all();
        })?;
        Ok(())
    }

    #[test]
    fn contention_backs_off_and_retries() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-contention")?;
        let (a, b) = (new_bo(&drm, None)?, new_bo(&drm, None)?);
        let r = rendezvous()?;
        let (wa, wb) = (a.clone(), b.clone());
        // The worker takes `b` then `a`, the test `a` then `b`, and each waits until the other
        // holds its first object: one of the two transactions must back off.
        spawn(&r, move |r| {
            let mut exec = new_exec(Flags::empty())?;
            exec.as_mut().lock_all(|locker| {
                r.worker_runs.fetch_add(1, Relaxed);
                locker.prepare_obj(&*wb, 1)?;
                r.worker_locked.complete_all();
                r.test_locked.wait_for_completion();
                locker.prepare_obj(&*wa, 1)
            })?;
            if is_locked(&wa) && is_locked(&wb) {
                Ok(())
            } else {
                Err(EINVAL)
            }
        })?;
        let ctx = FenceContext::<TestOps, ()>::new(c"exec-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let mut runs = 0;
        let mut exec = new_exec(Flags::empty())?;
        exec.as_mut().lock_all(|locker| {
            runs += 1;
            locker.prepare_obj(&*a, 1)?;
            r.test_locked.complete_all();
            r.worker_locked.wait_for_completion();
            locker.prepare_obj(&*b, 1)
        })?;
        assert!(is_locked(&a) && is_locked(&b));
        // The slots are those of the round that succeeded.
        exec.add_fence(&*a, &fence, Usage::Bookkeep)?;
        exec.add_fence(&*b, &fence, Usage::Bookkeep)?;
        drop(exec);
        r.worker_done.wait_for_completion();
        assert_eq!(r.worker_err.load(Relaxed), 0);
        // The younger transaction backed off once; the older one never did.
        assert_eq!(runs + r.worker_runs.load(Relaxed), 3);
        assert!(!is_locked(&a) && !is_locked(&b));
        assert!(!resv(&a).test_signaled(Usage::Bookkeep));
        producer.signal(Ok(()));
        assert!(resv(&a).test_signaled(Usage::Bookkeep));
        assert!(resv(&b).test_signaled(Usage::Bookkeep));
        Ok(())
    }

    /// Sets the handler of `sig` to the one `allow_signal()` uses (kernel threads ignore
    /// signals unless they ask for them), or back to `SIG_IGN`.
    fn allow_signal(sig: u32, allow: bool) {
        let handler: usize = if allow { 2 } else { 1 };
        // SAFETY: The C side compares the handler with its special values only, and never
        // calls it for a kernel thread.
        let handler = unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(crate::ffi::c_int)>(handler)
        };
        // SAFETY: Changing the current task's own handler has no precondition.
        unsafe { bindings::kernel_sigaction(sig as i32, Some(handler)) };
    }

    #[test]
    fn a_signal_interrupts_an_interruptible_wait() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-exec-signal")?;
        let (a, b) = (new_bo(&drm, None)?, new_bo(&drm, None)?);
        let r = rendezvous()?;
        let wa = a.clone();
        spawn(&r, move |r| {
            let mut exec = new_exec(Flags::empty())?;
            exec.as_mut().lock_all(|locker| locker.lock_obj(&*wa))?;
            r.worker_locked.complete_all();
            r.release.wait_for_completion();
            Ok(())
        })?;
        r.worker_locked.wait_for_completion();
        let task = current!().as_ptr();
        allow_signal(bindings::SIGUSR1, true);
        // SAFETY: `task` is the current task.
        unsafe { bindings::send_sig(bindings::SIGUSR1 as i32, task, 0) };
        let pending = current!().signal_pending();
        let mut runs = 0;
        let mut exec = new_exec(Flag::InterruptibleWait.into())?;
        let ret = if pending {
            exec.as_mut().lock_all(|locker| {
                runs += 1;
                locker.lock_obj(&*b)?;
                locker.lock_obj(&*a)
            })
        } else {
            Err(ENOENT)
        };
        // SAFETY: `task` is the current task.
        unsafe { bindings::flush_signals(task) };
        allow_signal(bindings::SIGUSR1, false);
        r.release.complete_all();
        r.worker_done.wait_for_completion();
        assert!(pending);
        assert_eq!((ret, runs), (Err(EINTR), 1));
        assert!(!is_locked(&b));
        assert_eq!(r.worker_err.load(Relaxed), 0);
        // Without a signal, the same context waits for the lock and gets it.
        exec.as_mut().lock_all(|locker| {
            locker.lock_obj(&*b)?;
            locker.lock_obj(&*a)
        })?;
        assert!(is_locked(&a) && is_locked(&b));
        Ok(())
    }
}
