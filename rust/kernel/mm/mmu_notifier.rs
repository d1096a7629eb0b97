// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers.
//!
//! A device that maps a range of a process's memory without pinning it (a GPU's userptr, say)
//! subscribes to that range with an [`IntervalNotifier`]. The core mm calls
//! [`IntervalNotifierOps::invalidate`] before any change to the CPU page tables of the range
//! (munmap, page migration, reclaim, `madvise(MADV_DONTNEED)`, copy-on-write), and the device
//! must stop using the old pages before the callback returns.
//!
//! The device's reads of the CPU page tables follow a sequence-count protocol
//! (`Documentation/mm/hmm.rst`): [`IntervalNotifier::read_begin`] starts a read, and
//! [`IntervalNotifier::read_retry`], under a lock of the driver's that the callback also holds
//! when it calls [`IntervalNotifier::set_seq`], says whether an invalidation collided with it.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)

use crate::{
    bindings,
    error::{to_result, Error, Result},
    ffi::c_ulong,
    mm::{Mm, MmWithUser},
    prelude::*,
    types::Opaque,
};
use core::{
    marker::{PhantomData, PhantomPinned},
    ops::Range,
};

/// Why the CPU page tables of a range change (`enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The range is unmapped (munmap, or the old range of an mremap).
    Unmap,
    /// Page table entries are cleared (reclaim, `MADV_DONTNEED`, copy-on-write, ...).
    Clear,
    /// The protection of the VMA changes (mprotect).
    ProtectionVma,
    /// The protection of pages changes (write-protection of some pages).
    ProtectionPage,
    /// Soft-dirty tracking: same pages, same protection.
    SoftDirty,
    /// The notifier's address space goes (process exit).
    Release,
    /// Pages migrate.
    Migrate,
    /// Entries become device-exclusive.
    Exclusive,
    /// An event this abstraction does not know.
    Other(u32),
}

impl Event {
    pub(crate) fn from_raw(e: bindings::mmu_notifier_event) -> Self {
        match e {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Event::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR => Event::Clear,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Event::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Event::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Event::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Event::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Event::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Event::Exclusive,
            e => Event::Other(e),
        }
    }
}

/// The range an invalidation covers (`struct mmu_notifier_range`).
///
/// It may extend past the notifier's own range on either side.
///
/// # Invariants
///
/// `ptr` points at a valid `struct mmu_notifier_range` for `'a`.
pub struct NotifierRange<'a> {
    ptr: *const bindings::mmu_notifier_range,
    _p: PhantomData<&'a bindings::mmu_notifier_range>,
}

impl NotifierRange<'_> {
    /// The CPU addresses the invalidation covers.
    pub fn range(&self) -> Range<usize> {
        // SAFETY: By the type invariants `ptr` is valid.
        let (start, end) = unsafe { ((*self.ptr).start, (*self.ptr).end) };
        start..end
    }

    /// Why the page tables change.
    pub fn event(&self) -> Event {
        // SAFETY: By the type invariants `ptr` is valid.
        Event::from_raw(unsafe { (*self.ptr).event })
    }

    /// Whether the callback may sleep. When it may not and would need to, it must return
    /// `false` instead, and the core mm retries in a context that may.
    pub fn is_blockable(&self) -> bool {
        // SAFETY: By the type invariants `ptr` is valid.
        unsafe { bindings::mmu_notifier_range_blockable(self.ptr) }
    }
}

/// The callback of an [`IntervalNotifier`], implemented by the data the notifier carries.
pub trait IntervalNotifierOps: Sized + Send + Sync + 'static {
    /// The CPU page tables of `range`, which overlaps the notifier's range, are about to
    /// change.
    ///
    /// The callback runs in reclaim context: it must not allocate memory that may recurse into
    /// reclaim, and must not take a lock that is held anywhere such memory is allocated. When
    /// it returns `true`, the device no longer uses the old pages of the overlap. If it must
    /// sleep for that and `range` is not [blockable](NotifierRange::is_blockable), it returns
    /// `false` without doing anything.
    ///
    /// Unless it returns `false`, it calls [`IntervalNotifier::set_seq`] with `cur_seq`, under
    /// the lock its readers hold around [`IntervalNotifier::read_retry`].
    fn invalidate(
        notifier: &IntervalNotifier<Self>,
        range: &NotifierRange<'_>,
        cur_seq: u64,
    ) -> bool;
}

/// A subscription to changes of the CPU page tables of a range of an address space
/// (`struct mmu_interval_notifier`), carrying data of type `T`, whose
/// [`IntervalNotifierOps::invalidate`] the core mm calls.
///
/// Dropping it removes the subscription: the drop waits until no callback runs, so it must not
/// happen in the callback, nor under a lock the callback takes. It may sleep.
///
/// # Invariants
///
/// `inner` is a notifier inserted into the address space it names, with the ops of `T`, from
/// the end of initialisation until the drop; it holds an `mmgrab` reference to that address
/// space.
///
/// # Examples
///
/// ```
/// use kernel::mm::mmu_notifier::{IntervalNotifier, IntervalNotifierOps, NotifierRange};
/// use kernel::sync::atomic::{Atomic, Relaxed};
///
/// struct Counter(Atomic<u32>);
///
/// impl IntervalNotifierOps for Counter {
///     fn invalidate(n: &IntervalNotifier<Self>, _: &NotifierRange<'_>, seq: u64) -> bool {
///         // No reader checks the sequence under a lock here, so none is needed around it.
///         n.set_seq(seq);
///         n.data().0.fetch_add(1, Relaxed);
///         true
///     }
/// }
///
/// fn watch(mm: &kernel::mm::MmWithUser, addr: usize) -> Result<Pin<KBox<IntervalNotifier<Counter>>>> {
///     KBox::pin_init(
///         IntervalNotifier::insert(mm, addr, 4096, Counter(Atomic::new(0))),
///         GFP_KERNEL,
///     )
/// }
/// ```
#[pin_data(PinnedDrop)]
pub struct IntervalNotifier<T: IntervalNotifierOps> {
    #[pin]
    inner: Opaque<bindings::mmu_interval_notifier>,
    #[pin]
    data: T,
    /// The core mm links `inner` into its interval tree.
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The C notifier may be used and removed from any thread; `T` is `Send + Sync`.
unsafe impl<T: IntervalNotifierOps> Send for IntervalNotifier<T> {}

// SAFETY: Every method takes `&self` and is safe to call concurrently: the C functions
// synchronise internally, and the sequence number is read and written with `READ_ONCE` and
// `WRITE_ONCE`; `T` is `Sync`.
unsafe impl<T: IntervalNotifierOps> Sync for IntervalNotifier<T> {}

impl<T: IntervalNotifierOps> IntervalNotifier<T> {
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_callback),
        invalidate_start: None,
        invalidate_finish: None,
    };

    /// Subscribes to `[start, start + length)` of `mm`, with `data`.
    ///
    /// `data` is initialised first: callbacks may come as soon as the notifier is inserted.
    /// Fails with `EINVAL` if the range wraps, and with `ENOMEM` if the address space's
    /// notifier state cannot be allocated.
    pub fn insert<E>(
        mm: &MmWithUser,
        start: usize,
        length: usize,
        data: impl PinInit<T, E>,
    ) -> impl PinInit<Self, Error>
    where
        Error: From<E>,
    {
        let mm = mm.as_raw();
        // SAFETY: On success, `slot` holds a notifier inserted with `data` initialised, as the
        // type invariants require; on failure, `data` is dropped again and nothing is inserted.
        unsafe {
            pin_init::pin_init_from_closure(move |slot: *mut Self| {
                if start.checked_add(length).is_none() || length == 0 {
                    return Err(EINVAL);
                }
                let data_ptr = &raw mut (*slot).data;
                pin_init::raw_try_init(data_ptr, data)?;
                let inner = Opaque::cast_into(&raw const (*slot).inner);
                // The C code sets every field it reads; zero the rest rather than leave them
                // uninitialised.
                core::ptr::write_bytes(inner, 0, 1);
                // `mm` has users: `mm_users` is nonzero, as registering notifiers requires.
                let ret = to_result(bindings::mmu_interval_notifier_insert(
                    inner,
                    mm,
                    start,
                    length,
                    &Self::OPS,
                ));
                if let Err(e) = ret {
                    core::ptr::drop_in_place(data_ptr);
                    return Err(e);
                }
                Ok(())
            })
        }
    }

    /// The data the notifier carries.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The raw notifier, for C functions that take one.
    pub fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.inner.get()
    }

    /// The CPU addresses the notifier covers.
    pub fn range(&self) -> Range<usize> {
        // SAFETY: By the type invariants `inner` is inserted; its interval never changes.
        let (start, last) = unsafe {
            let it = &raw const (*self.inner.get()).interval_tree;
            ((*it).start, (*it).last)
        };
        start..last.wrapping_add(1)
    }

    /// The address space the notifier watches. The notifier holds it (`mmgrab`), so it stays
    /// valid, though it may have no users left.
    pub fn mm(&self) -> &Mm {
        // SAFETY: By the type invariants `inner` is inserted and holds an `mmgrab` reference
        // to `mm`, which it keeps until the drop.
        unsafe { Mm::from_raw((*self.inner.get()).mm) }
    }

    /// Starts a read of the CPU page tables of the range: returns the sequence number that
    /// [`Self::read_retry`] checks. Sleeps while an invalidation of the range is in progress.
    pub fn read_begin(&self) -> u64 {
        // SAFETY: By the type invariants `inner` is inserted.
        unsafe { bindings::mmu_interval_read_begin(self.as_raw()) as u64 }
    }

    /// Whether an invalidation collided with the read that [`Self::read_begin`] returned `seq`
    /// for. Only meaningful under the driver's lock that the callback holds around
    /// [`Self::set_seq`]; a `false` there means the pages read are current until the lock is
    /// released.
    pub fn read_retry(&self, seq: u64) -> bool {
        // SAFETY: By the type invariants `inner` is inserted.
        unsafe { bindings::mmu_interval_read_retry(self.as_raw(), seq as usize) }
    }

    /// Like [`Self::read_retry`], without the lock: `true` is reliable, `false` is only a hint.
    pub fn check_retry(&self, seq: u64) -> bool {
        // SAFETY: By the type invariants `inner` is inserted.
        unsafe { bindings::mmu_interval_check_retry(self.as_raw(), seq as usize) }
    }

    /// Records `cur_seq`, as passed to [`IntervalNotifierOps::invalidate`], so that readers
    /// that began before see a collision. Call it in the callback only, under the lock readers
    /// hold around [`Self::read_retry`].
    pub fn set_seq(&self, cur_seq: u64) {
        // SAFETY: By the type invariants `inner` is inserted.
        unsafe { bindings::mmu_interval_set_seq(self.as_raw(), cur_seq as usize) }
    }

    /// # Safety
    ///
    /// Called by the core mm with `sub` inserted by [`Self::insert`] and `range` valid for the
    /// call.
    unsafe extern "C" fn invalidate_callback(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        // SAFETY: `sub` is the `inner` field of a `Self` (only `insert` uses `Self::OPS`),
        // which the drop removes, waiting for this callback, before it is freed.
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(sub), Self, inner) };
        // INVARIANT: The core mm passes a range valid for the call.
        let range = NotifierRange {
            ptr: range,
            _p: PhantomData,
        };
        T::invalidate(this, &range, cur_seq as u64)
    }
}

#[pinned_drop]
impl<T: IntervalNotifierOps> PinnedDrop for IntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants `inner` is inserted; removing it waits for callbacks
        // in progress and drops the `mmgrab` reference. `data` is dropped after this, when no
        // callback can reach it.
        unsafe { bindings::mmu_interval_notifier_remove(self.inner.get()) };
    }
}

#[macros::kunit_tests(rust_mmu_interval_notifier)]
mod tests {
    use super::*;
    use crate::{
        current,
        sync::atomic::{Atomic, Relaxed},
    };

    const PAGE: usize = 4096;

    /// Counts invalidations and remembers the last one.
    struct Watch {
        calls: Atomic<u32>,
        last_start: Atomic<usize>,
        last_end: Atomic<usize>,
        last_unmap: Atomic<bool>,
    }

    impl IntervalNotifierOps for Watch {
        fn invalidate(n: &IntervalNotifier<Self>, r: &NotifierRange<'_>, seq: u64) -> bool {
            n.set_seq(seq);
            let d = n.data();
            d.last_start.store(r.range().start, Relaxed);
            d.last_end.store(r.range().end, Relaxed);
            d.last_unmap.store(r.event() == Event::Unmap, Relaxed);
            d.calls.fetch_add(1, Relaxed);
            true
        }
    }

    fn watch() -> Watch {
        Watch {
            calls: Atomic::new(0),
            last_start: Atomic::new(0),
            last_end: Atomic::new(0),
            last_unmap: Atomic::new(false),
        }
    }

    /// Maps `pages` anonymous, writable pages in the test's own address space.
    fn map(pages: usize) -> Result<usize> {
        // SAFETY: Gives the KUnit thread an address space of its own if it has none; KUnit
        // tears it down with the thread.
        to_result(unsafe { bindings::kunit_attach_mm() })?;
        // SAFETY: No file; the arguments are plain values.
        let addr = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                0,
                pages * PAGE,
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

    fn unmap(addr: usize, pages: usize) -> Result {
        // SAFETY: `vm_munmap` checks its arguments against the current address space.
        to_result(unsafe { bindings::vm_munmap(addr, pages * PAGE) })
    }

    /// Writes `v` to the user address `addr` of the current address space.
    fn poke(addr: usize, v: u64) -> Result {
        use crate::uaccess::{UserPtr, UserSlice};
        UserSlice::new(UserPtr::from_addr(addr), 8)
            .writer()
            .write(&v)
    }

    fn insert(addr: usize, len: usize) -> Result<Pin<KBox<IntervalNotifier<Watch>>>> {
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        KBox::pin_init(
            IntervalNotifier::<Watch>::insert(mm, addr, len, Ok::<_, Error>(watch())),
            GFP_KERNEL,
        )
    }

    #[test]
    fn munmap_invalidates_the_range_and_bumps_the_sequence() -> Result {
        let addr = map(4)?;
        let n = insert(addr + PAGE, 2 * PAGE)?;
        assert_eq!(n.range(), addr + PAGE..addr + 3 * PAGE);
        let task = current!();
        assert!(core::ptr::eq(
            n.mm().as_raw(),
            task.mm().ok_or(EINVAL)?.as_raw()
        ));
        let seq = n.read_begin();
        assert!(!n.read_retry(seq));
        assert_eq!(n.data().calls.load(Relaxed), 0);
        unmap(addr, 4)?;
        assert_eq!(n.data().calls.load(Relaxed), 1);
        assert!(n.data().last_unmap.load(Relaxed));
        // The range may be wider than the notifier's, never narrower.
        assert!(n.data().last_start.load(Relaxed) <= addr + PAGE);
        assert!(n.data().last_end.load(Relaxed) >= addr + 3 * PAGE);
        assert!(n.read_retry(seq));
        assert!(n.check_retry(seq));
        let again = n.read_begin();
        assert!(!n.read_retry(again));
        Ok(())
    }

    #[test]
    fn changes_outside_the_range_do_not_call_it() -> Result {
        let addr = map(4)?;
        let n = insert(addr + PAGE, PAGE)?;
        let seq = n.read_begin();
        unmap(addr + 2 * PAGE, 2)?;
        unmap(addr, 1)?;
        assert_eq!(n.data().calls.load(Relaxed), 0);
        assert!(!n.read_retry(seq));
        unmap(addr + PAGE, 1)?;
        assert_eq!(n.data().calls.load(Relaxed), 1);
        assert!(n.read_retry(seq));
        Ok(())
    }

    #[test]
    fn dontneed_clears_without_unmapping() -> Result {
        let addr = map(2)?;
        poke(addr, 7)?;
        let n = insert(addr, 2 * PAGE)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        // SAFETY: `mm` has users; `do_madvise` checks the range against it.
        to_result(unsafe {
            bindings::do_madvise(mm.as_raw(), addr, PAGE, bindings::MADV_DONTNEED as i32)
        })?;
        assert_eq!(n.data().calls.load(Relaxed), 1);
        assert!(!n.data().last_unmap.load(Relaxed));
        unmap(addr, 2)?;
        Ok(())
    }

    #[test]
    fn dropped_notifiers_are_not_called() -> Result {
        let addr = map(2)?;
        let kept = insert(addr, PAGE)?;
        drop(insert(addr, PAGE)?);
        unmap(addr, 2)?;
        assert_eq!(kept.data().calls.load(Relaxed), 1);
        Ok(())
    }

    #[test]
    fn empty_and_wrapping_ranges_are_refused() -> Result {
        let addr = map(1)?;
        assert_eq!(insert(addr, 0).err(), Some(EINVAL));
        assert_eq!(insert(usize::MAX - PAGE + 1, 2 * PAGE).err(), Some(EINVAL));
        unmap(addr, 1)?;
        Ok(())
    }

    /// Data whose initialiser fails is never inserted, and what it initialised is dropped.
    #[test]
    fn a_failed_data_init_inserts_nothing() -> Result {
        let addr = map(1)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let r = KBox::pin_init(
            IntervalNotifier::<Watch>::insert(mm, addr, PAGE, Err::<Watch, Error>(ENOSPC)),
            GFP_KERNEL,
        );
        assert_eq!(r.err(), Some(ENOSPC));
        unmap(addr, 1)?;
        Ok(())
    }
}
