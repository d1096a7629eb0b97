// SPDX-License-Identifier: GPL-2.0

//! Heterogeneous memory management: reading a process's CPU page tables for a device.
//!
//! [`fault`] faults in a range watched by an [`IntervalNotifier`] and returns its page frames,
//! without taking a reference to any page: the frames stay the range's only until the next
//! invalidation, which the notifier's sequence number tells. A driver therefore uses them (maps
//! them for DMA, writes them into device page tables) under its notifier lock, after
//! [`IntervalNotifier::read_retry`] said no invalidation collided, and stops using them in its
//! [`IntervalNotifierOps::invalidate`] (`Documentation/mm/hmm.rst`).
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)

use crate::{
    bindings,
    device::{Device, DeviceContext},
    dma::{DataDirection, DmaAddress},
    error::{to_result, Result},
    ffi::c_ulong,
    mm::{
        mmu_notifier::{IntervalNotifier, IntervalNotifierOps},
        MmWithUser,
    },
    page::{BorrowedPage, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    time::msecs_to_jiffies,
};
use core::{ops::Range, ptr::NonNull};

/// One page frame of a fault's output (an `hmm_pfn` value).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HmmPfn(c_ulong);

impl HmmPfn {
    /// An entry that asks nothing, for initialising the output array.
    pub const EMPTY: Self = Self(0);

    /// Whether the entry names a page frame, at least readable.
    pub fn is_valid(self) -> bool {
        self.0 & bindings::hmm_pfn_flags_HMM_PFN_VALID as c_ulong != 0
    }

    /// Whether the page may be written.
    pub fn is_writable(self) -> bool {
        self.is_valid() && self.0 & bindings::hmm_pfn_flags_HMM_PFN_WRITE as c_ulong != 0
    }

    /// The page frame number; meaningful when [`Self::is_valid`].
    pub fn pfn(self) -> usize {
        self.0 & !(bindings::hmm_pfn_flags_HMM_PFN_FLAGS as c_ulong)
    }

    /// The physical address of the page; meaningful when [`Self::is_valid`].
    pub fn phys(self) -> u64 {
        (self.pfn() as u64) << PAGE_SHIFT
    }

    /// The order of the CPU mapping the page is part of: it starts at the `1 << order` pages
    /// aligned address and spans that many pages, which may extend past the range faulted.
    pub fn order(self) -> u32 {
        ((self.0 >> bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT) & 0x1f) as u32
    }

    /// Maps the page for DMA by `dev`, in direction `dir`, and returns its bus address.
    ///
    /// Allocates nothing that may sleep, so that it may run under the driver's notifier lock.
    ///
    /// # Safety
    ///
    /// The entry is valid and came from a [`fault`] whose sequence number the caller checked
    /// with [`IntervalNotifier::read_retry`], under its notifier lock, which it holds across
    /// the call; the caller unmaps the page with [`dma_unmap`] in its
    /// [`IntervalNotifierOps::invalidate`] at the latest, before the page can be freed.
    pub unsafe fn dma_map<Ctx: DeviceContext>(
        self,
        dev: &Device<Ctx>,
        dir: DataDirection,
    ) -> Result<DmaAddress> {
        let dev = dev.as_raw();
        // SAFETY: `dev` is a valid device; the page is current and stays until the caller
        // unmaps it (safety requirements).
        let addr = unsafe { bindings::dma_map_phys(dev, self.phys(), PAGE_SIZE, dir.into(), 0) };
        // SAFETY: `addr` is what mapping for `dev` returned.
        if unsafe { bindings::dma_mapping_error(dev, addr) } != 0 {
            return Err(ENOMEM);
        }
        Ok(addr)
    }

    /// The page.
    ///
    /// # Safety
    ///
    /// The entry is valid and came from a [`fault`] whose sequence number the caller checked
    /// with [`IntervalNotifier::read_retry`], under its notifier lock, which it holds for `'a`:
    /// the page cannot be freed meanwhile.
    pub unsafe fn page<'a>(self) -> BorrowedPage<'a> {
        // SAFETY: The entry is valid, so it names a page frame that has a `struct page`.
        let page = unsafe { bindings::hmm_pfn_to_page(self.0) };
        // SAFETY: `pfn_to_page` never returns null; the caller guarantees the page stays for
        // `'a`.
        unsafe { BorrowedPage::from_raw(NonNull::new_unchecked(page)) }
    }
}

/// Unmaps a page [`HmmPfn::dma_map`] mapped.
///
/// # Safety
///
/// `addr` is what [`HmmPfn::dma_map`] returned for `dev` and `dir`, not unmapped since, and the
/// device no longer accesses it.
pub unsafe fn dma_unmap<Ctx: DeviceContext>(
    dev: &Device<Ctx>,
    addr: DmaAddress,
    dir: DataDirection,
) {
    // SAFETY: By the safety requirements `addr` is a live mapping of a page for `dev` in `dir`.
    unsafe { bindings::dma_unmap_phys(dev.as_raw(), addr, PAGE_SIZE, dir.into(), 0) };
}

/// What a [`fault`] needs of each page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Readable pages; an untouched anonymous page may come back as the shared zero page.
    Read,
    /// Writable pages: copy-on-write pages are broken and the zero page replaced.
    Write,
}

/// How long [`fault`] retries while invalidations of the range keep colliding with it.
const RETRY_TIMEOUT_MS: u32 = bindings::HMM_RANGE_DEFAULT_TIMEOUT;

/// Faults in `range` of the address space `notifier` watches, with `access`, and stores one
/// entry per page in `pfns`.
///
/// `range` is page aligned and inside the notifier's range, `pfns` has one entry per page of
/// it, and `mm` is the notifier's address space, which the caller keeps alive; else the call
/// fails with `EINVAL`. It takes the mmap lock itself, so the caller must not hold it.
///
/// Returns the notifier sequence number the entries are current for: they may be used only
/// under the driver's notifier lock, after [`IntervalNotifier::read_retry`] on it returned
/// `false`. Fails with `EFAULT` if a page is not mapped or does not allow `access`
/// (`EPERM` for a write to a read-only mapping), `EBUSY` if invalidations kept colliding for a
/// second, `EINTR` on a fatal signal, and `ENOMEM`.
pub fn fault<T: IntervalNotifierOps>(
    notifier: &IntervalNotifier<T>,
    mm: &MmWithUser,
    range: Range<usize>,
    access: Access,
    pfns: &mut [HmmPfn],
) -> Result<u64> {
    let within = notifier.range();
    if range.start >= range.end
        || range.start % PAGE_SIZE != 0
        || range.end % PAGE_SIZE != 0
        || range.start < within.start
        || range.end > within.end
        || pfns.len() != (range.end - range.start) / PAGE_SIZE
        || !core::ptr::eq(mm.as_raw(), notifier.mm().as_raw())
    {
        return Err(EINVAL);
    }
    let mut flags = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as c_ulong;
    if access == Access::Write {
        flags |= bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as c_ulong;
    }
    let mut r = bindings::hmm_range {
        notifier: notifier.as_raw(),
        notifier_seq: 0,
        start: range.start,
        end: range.end,
        hmm_pfns: pfns.as_mut_ptr().cast(),
        default_flags: flags,
        pfn_flags_mask: 0,
        dev_private_owner: core::ptr::null_mut(),
    };
    // SAFETY: `r` names an inserted notifier, a range inside it, and an output array of one
    // entry per page (`HmmPfn` is a transparent `unsigned long`); the caller holds a user of
    // the notifier's address space, and not its mmap lock.
    to_result(unsafe {
        bindings::hmm_range_fault_unlocked_timeout(&mut r, msecs_to_jiffies(RETRY_TIMEOUT_MS))
    })?;
    Ok(r.notifier_seq as u64)
}

#[macros::kunit_tests(rust_hmm)]
mod tests {
    use super::*;
    use crate::{
        current,
        mm::mmu_notifier::NotifierRange,
        sync::{
            atomic::{Atomic, Relaxed},
            new_mutex, Mutex,
        },
        uaccess::{UserPtr, UserSlice},
    };

    /// The notifier lock of the tests' "driver".
    struct Mirror {
        lock: Pin<KBox<Mutex<()>>>,
        calls: Atomic<u32>,
    }

    impl IntervalNotifierOps for Mirror {
        fn invalidate(n: &IntervalNotifier<Self>, _: &NotifierRange<'_>, seq: u64) -> bool {
            let _g = n.data().lock.lock();
            n.set_seq(seq);
            n.data().calls.fetch_add(1, Relaxed);
            true
        }
    }

    struct Space {
        addr: usize,
        pages: usize,
    }

    impl Space {
        fn new(pages: usize, prot: u32) -> Result<Self> {
            // SAFETY: Gives the KUnit thread an address space of its own if it has none.
            to_result(unsafe { bindings::kunit_attach_mm() })?;
            // SAFETY: No file; the arguments are plain values.
            let addr = unsafe {
                bindings::vm_mmap(
                    core::ptr::null_mut(),
                    0,
                    pages * PAGE_SIZE,
                    prot as usize,
                    (bindings::MAP_PRIVATE | bindings::MAP_ANONYMOUS) as usize,
                    0,
                )
            };
            if addr >= usize::MAX - 4095 {
                return Err(Error::from_errno(addr as i32));
            }
            Ok(Self { addr, pages })
        }

        fn page(&self, i: usize) -> usize {
            self.addr + i * PAGE_SIZE
        }

        fn write(&self, i: usize, v: u64) -> Result {
            UserSlice::new(UserPtr::from_addr(self.page(i)), 8)
                .writer()
                .write(&v)
        }

        fn watch(&self) -> Result<Pin<KBox<IntervalNotifier<Mirror>>>> {
            let task = current!();
            let mm = task.mm().ok_or(EINVAL)?;
            let mirror = Mirror {
                lock: KBox::pin_init(new_mutex!(()), GFP_KERNEL)?,
                calls: Atomic::new(0),
            };
            KBox::pin_init(
                IntervalNotifier::<Mirror>::insert(
                    mm,
                    self.addr,
                    self.pages * PAGE_SIZE,
                    Ok::<_, Error>(mirror),
                ),
                GFP_KERNEL,
            )
        }
    }

    impl Drop for Space {
        fn drop(&mut self) {
            // SAFETY: `vm_munmap` checks its arguments against the current address space.
            unsafe { bindings::vm_munmap(self.addr, self.pages * PAGE_SIZE) };
        }
    }

    /// Faults `n` in whole, then reads the first 8 bytes of each page through the page
    /// frames, under the notifier lock, as a device would. `None` if an invalidation
    /// collided.
    fn read_pages(
        s: &Space,
        n: &IntervalNotifier<Mirror>,
        access: Access,
    ) -> Result<Option<(KVec<HmmPfn>, KVec<u64>)>> {
        let mut pfns = KVec::from_elem(HmmPfn::EMPTY, s.pages, GFP_KERNEL)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let seq = fault(n, mm, s.addr..s.page(s.pages), access, &mut pfns)?;
        // The notifier takes the lock in reclaim: allocate nothing under it.
        let mut vals = KVec::with_capacity(s.pages, GFP_KERNEL)?;
        let _g = n.data().lock.lock();
        if n.read_retry(seq) {
            return Ok(None);
        }
        for p in pfns.iter() {
            assert!(p.is_valid());
            let mut v = 0u64;
            // SAFETY: `p` is valid and current: the notifier lock is held and no invalidation
            // collided; `v` has room for 8 bytes.
            unsafe { p.page().read_raw((&raw mut v).cast(), 0, 8)? };
            vals.push_within_capacity(v).map_err(|_| ENOMEM)?;
        }
        Ok(Some((pfns, vals)))
    }

    const RW: u32 = bindings::PROT_READ | bindings::PROT_WRITE;

    #[test]
    fn the_device_reads_what_the_cpu_wrote() -> Result {
        let s = Space::new(3, RW)?;
        for i in 0..3 {
            s.write(i, 0x1000 + i as u64)?;
        }
        let n = s.watch()?;
        let (pfns, vals) = read_pages(&s, &n, Access::Write)?.ok_or(EBUSY)?;
        assert_eq!(&vals[..], &[0x1000, 0x1001, 0x1002]);
        assert!(pfns.iter().all(|p| p.is_writable()));
        // Distinct pages.
        assert!(pfns[0].pfn() != pfns[1].pfn() && pfns[1].pfn() != pfns[2].pfn());
        assert_eq!(pfns[0].phys(), (pfns[0].pfn() as u64) << PAGE_SHIFT);
        Ok(())
    }

    #[test]
    fn reads_of_untouched_memory_need_no_writable_page() -> Result {
        let s = Space::new(1, RW)?;
        let n = s.watch()?;
        let (pfns, vals) = read_pages(&s, &n, Access::Read)?.ok_or(EBUSY)?;
        // The shared zero page.
        assert_eq!(vals[0], 0);
        assert!(!pfns[0].is_writable());
        let (pfns, _) = read_pages(&s, &n, Access::Write)?.ok_or(EBUSY)?;
        assert!(pfns[0].is_writable());
        Ok(())
    }

    #[test]
    fn writes_to_read_only_memory_fail() -> Result {
        let s = Space::new(1, bindings::PROT_READ)?;
        let n = s.watch()?;
        assert_eq!(read_pages(&s, &n, Access::Write).err(), Some(EPERM));
        assert!(read_pages(&s, &n, Access::Read)?.is_some());
        Ok(())
    }

    #[test]
    fn unmapped_memory_fails_with_efault() -> Result {
        let s = Space::new(2, RW)?;
        let n = s.watch()?;
        // SAFETY: `vm_munmap` checks its arguments against the current address space.
        to_result(unsafe { bindings::vm_munmap(s.page(1), PAGE_SIZE) })?;
        assert_eq!(n.data().calls.load(Relaxed), 1);
        assert_eq!(read_pages(&s, &n, Access::Read).err(), Some(EFAULT));
        Ok(())
    }

    #[test]
    fn an_invalidation_after_the_fault_is_seen_under_the_lock() -> Result {
        let s = Space::new(1, RW)?;
        s.write(0, 1)?;
        let n = s.watch()?;
        let mut pfns = KVec::from_elem(HmmPfn::EMPTY, 1, GFP_KERNEL)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let seq = fault(&n, mm, s.addr..s.page(1), Access::Write, &mut pfns)?;
        assert!(!n.check_retry(seq));
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        // SAFETY: `mm` has users; `do_madvise` checks the range against it.
        to_result(unsafe {
            bindings::do_madvise(
                mm.as_raw(),
                s.addr,
                PAGE_SIZE,
                bindings::MADV_DONTNEED as i32,
            )
        })?;
        assert!(n.read_retry(seq));
        // A new fault sees the new page: zero-filled, then the new data.
        s.write(0, 2)?;
        let (_, vals) = read_pages(&s, &n, Access::Write)?.ok_or(EBUSY)?;
        assert_eq!(vals[0], 2);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused() -> Result {
        let s = Space::new(2, RW)?;
        let n = s.watch()?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mut one = [HmmPfn::EMPTY; 1];
        let mut three = [HmmPfn::EMPTY; 3];
        // Too few and too many entries, unaligned, empty, and outside the notifier.
        assert_eq!(
            fault(&n, mm, s.addr..s.page(2), Access::Read, &mut one).err(),
            Some(EINVAL)
        );
        assert_eq!(
            fault(&n, mm, s.addr..s.page(1), Access::Read, &mut three).err(),
            Some(EINVAL)
        );
        assert_eq!(
            fault(&n, mm, s.addr + 8..s.page(1) + 8, Access::Read, &mut one).err(),
            Some(EINVAL)
        );
        assert_eq!(
            fault(&n, mm, s.addr..s.addr, Access::Read, &mut one[..0]).err(),
            Some(EINVAL)
        );
        assert_eq!(
            fault(
                &n,
                mm,
                s.page(1)..s.page(2) + PAGE_SIZE,
                Access::Read,
                &mut three[..2]
            )
            .err(),
            Some(EINVAL)
        );
        assert!(fault(&n, mm, s.page(1)..s.page(2), Access::Read, &mut one).is_ok());
        Ok(())
    }
}
