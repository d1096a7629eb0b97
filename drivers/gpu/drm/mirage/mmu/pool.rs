// SPDX-License-Identifier: GPL-2.0 or MIT

//! The page-table pool of a VM: tables reserved before an update, handed out while it runs.
//!
//! A bind computes how many tables its ops will create (see [`super::budget`]) and reserves
//! exactly that many here, where it may still allocate and fail. The update then runs in a
//! `dma_fence` signalling section, where io-pgtable's table allocations are served from the
//! reservation and nothing is allocated. Running dry there is a driver bug: the pool warns,
//! counts it, and fails the allocation.
//!
//! So that an unmap never fails for lack of memory (`Documentation/gpu/drm-vm-bind-async.rst`),
//! the pool keeps [`STANDING`] tables aside: a bind that only unmaps takes them when the
//! system cannot give it its tables, and the next reservation that can puts them back.
//!
//! Tables io-pgtable frees stay here until the device's TLB was invalidated for their range
//! ([`PtPool::release_freed`]): until then, the device may still hold translations through them.

use core::ptr::NonNull;
use kernel::{
    iommu::pgtable::TableAllocator,
    prelude::*,
    rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation},
    sync::SpinLock,
};

/// Bytes in a page table (4 KiB granule).
pub(crate) const TABLE_SIZE: usize = 4096;

/// One page table's memory, in the linear map and aligned to its size as io-pgtable needs.
#[repr(C, align(4096))]
pub(crate) struct Table([u64; 512]);

/// Tables kept aside for unmaps: an UNMAP splits at most a 1 GiB and a 2 MiB block at each end
/// of its range, which takes a level-2 and a level-3 table each.
pub(crate) const STANDING: usize = 4;

/// A table with the tree node that tracks it while io-pgtable uses it.
type TableNode = RBTreeNode<usize, KBox<Table>>;

/// Counters of a pool, for debugfs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PoolStats {
    /// Tables reserved, over the pool's life.
    pub(crate) reserved: u64,
    /// Tables handed to io-pgtable, over the pool's life.
    pub(crate) used: u64,
    /// Tables freed after a TLB invalidation, over the pool's life.
    pub(crate) returned: u64,
    /// Tables io-pgtable holds now.
    pub(crate) live: u64,
    /// Allocations refused because the reservation was used up (a driver bug).
    pub(crate) exhausted: u64,
    /// Reserved tables left over once every update ran (the budget was too large).
    pub(crate) unused: u64,
    /// Reserved tables given back because the updates they were for were cancelled.
    pub(crate) cancelled: u64,
    /// Tables unmaps took from the standing reserve.
    pub(crate) standing_used: u64,
}

struct Inner {
    /// Reserved, zeroed tables, ready to hand out, with their addresses.
    reserved: KVec<(usize, TableNode)>,
    /// Tables io-pgtable uses, by address. They are reachable from here only, as io-pgtable
    /// refers to them by physical address: this keeps kmemleak from reporting them.
    live: RBTree<usize, KBox<Table>>,
    /// Tables io-pgtable gave back, waiting for a TLB invalidation. Its capacity covers every
    /// live and reserved table, so that `free` never allocates.
    freed: KVec<TableNode>,
    /// Tables kept aside for unmaps, up to [`STANDING`]. Owned, not reserved: `reserved` and
    /// `freed` always have room for them.
    standing: KVec<(usize, TableNode)>,
    stats: PoolStats,
    /// Test hook: the next reservation fails with `ENOMEM`.
    fail_next_reserve: bool,
}

/// A zeroed table and its tree node, with its address.
fn new_table() -> Result<(usize, TableNode)> {
    let table = KBox::new(Table([0; 512]), GFP_KERNEL)?;
    let addr = core::ptr::from_ref(&*table) as usize;
    Ok((
        addr,
        RBTreeNodeReservation::new(GFP_KERNEL)?.into_node(addr, table),
    ))
}

/// A VM's page-table pool; the [`TableAllocator`] of its io-pgtable.
pub(crate) struct PtPool {
    inner: Pin<KBox<SpinLock<Inner>>>,
}

impl PtPool {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            inner: KBox::pin_init(
                kernel::new_spinlock!(Inner {
                    reserved: KVec::new(),
                    live: RBTree::new(),
                    freed: KVec::new(),
                    standing: KVec::with_capacity(STANDING, GFP_KERNEL)?,
                    stats: PoolStats::default(),
                    fail_next_reserve: false,
                }),
                GFP_KERNEL,
            )?,
        })
    }

    /// Reserves `count` more tables, on top of those reserved for updates not run yet.
    ///
    /// On failure nothing was reserved beyond what already was. Callers serialize `reserve`
    /// with each other (the VM lock). Updates may take tables meanwhile.
    pub(crate) fn reserve(&self, count: usize) -> Result {
        let (have, owned) = {
            let mut inner = self.inner.lock();
            if core::mem::take(&mut inner.fail_next_reserve) {
                return Err(ENOMEM);
            }
            let owned = inner.stats.live as usize + inner.reserved.len() + inner.freed.len();
            (inner.reserved.len(), owned)
        };
        let missing = count;
        if missing == 0 {
            return Ok(());
        }
        // Room for the standing tables too, so that moving them in never allocates.
        let mut reserved = KVec::with_capacity(have + missing + STANDING, GFP_KERNEL)?;
        for _ in 0..missing {
            reserved.push(new_table()?, GFP_KERNEL)?;
        }
        // `free` must never allocate: room for every table the pool will own.
        let mut freed = KVec::with_capacity(owned + missing + STANDING, GFP_KERNEL)?;

        let mut inner = self.inner.lock();
        // Updates that ran meanwhile took tables (fewer reserved) and gave some back (more
        // freed, fewer live): the new vectors still have room for everything.
        let owned_now = inner.stats.live as usize + inner.reserved.len() + inner.freed.len();
        if inner.reserved.len() > have || owned_now > owned {
            // Unserialized reservations: a driver bug. Nothing was reserved.
            drop(inner);
            kernel::warn_on!(true);
            return Err(EBUSY);
        }
        for entry in inner.reserved.drain_all() {
            // Cannot fail: `reserved` has room for `have + missing` entries.
            let _ = reserved.push_within_capacity(entry);
        }
        for node in inner.freed.drain_all() {
            let _ = freed.push_within_capacity(node);
        }
        inner.reserved = reserved;
        inner.freed = freed;
        inner.stats.reserved += missing as u64;
        Ok(())
    }

    /// Reserves `count` more tables for an update, as [`PtPool::reserve`]; one that only
    /// unmaps (`unmap`) takes them from the standing reserve if the system has none to give.
    /// `fail` makes the system's answer `ENOMEM`, for tests.
    pub(crate) fn reserve_for(&self, count: usize, unmap: bool, fail: bool) -> Result {
        let res = if fail {
            Err(ENOMEM)
        } else {
            self.reserve(count)
        };
        match res {
            Ok(()) => {
                // Best effort: another reservation will try again.
                let _ = self.refill_standing();
                Ok(())
            }
            Err(e) if e == ENOMEM && unmap => self.take_standing(count).map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    /// Moves `count` standing tables to the reservation.
    fn take_standing(&self, count: usize) -> Result {
        let mut inner = self.inner.lock();
        let room = inner.reserved.capacity() - inner.reserved.len();
        if count > inner.standing.len() || count > room {
            return Err(ENOMEM);
        }
        for _ in 0..count {
            if let Some(t) = inner.standing.pop() {
                // Cannot fail: there is room (checked above).
                let _ = inner.reserved.push_within_capacity(t);
            }
        }
        inner.stats.standing_used += count as u64;
        inner.stats.reserved += count as u64;
        Ok(())
    }

    /// Gives back `count` tables reserved by [`PtPool::reserve`] for an update that will not
    /// run after all (a GPU fault whose pages went meanwhile, and that starts again); counted
    /// as cancelled.
    pub(crate) fn unreserve(&self, count: usize) {
        let mut inner = self.inner.lock();
        let n = count.min(inner.reserved.len());
        // Freeing is fine under a spinlock; only allocating is not.
        for _ in 0..n {
            inner.reserved.pop();
        }
        inner.stats.cancelled += n as u64;
    }

    /// Allocates the standing tables that are missing.
    pub(crate) fn refill_standing(&self) -> Result {
        let missing = STANDING - self.inner.lock().standing.len();
        let mut tables = KVec::with_capacity(missing, GFP_KERNEL)?;
        for _ in 0..missing {
            tables.push(new_table()?, GFP_KERNEL)?;
        }
        let mut inner = self.inner.lock();
        for t in tables.into_iter() {
            // Callers are serialized: there is room for what was missing.
            if let Err(e) = inner.standing.push_within_capacity(t) {
                drop(e);
            }
        }
        Ok(())
    }

    /// Frees the reserved tables no update is left to use, and counts them as `unused`, or as
    /// `cancelled` if updates were: after updates whose budgets were exact, none is unused.
    pub(crate) fn trim(&self, cancelled: bool) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.reserved.len();
        if cancelled {
            inner.stats.cancelled += n as u64;
        } else {
            inner.stats.unused += n as u64;
        }
        // Freeing is fine under a spinlock; the vector keeps its room for the standing tables.
        while inner.reserved.pop().is_some() {}
        n
    }

    /// Frees the tables io-pgtable gave back. Call it only once the device can no longer use
    /// them: after the TLB invalidation that covered their range, or when the page table was
    /// never live.
    pub(crate) fn release_freed(&self) {
        let mut inner = self.inner.lock();
        let n = inner.freed.len() as u64;
        inner.stats.returned += n;
        // Freeing memory is allowed in a signalling section; only allocating is not.
        inner.freed.clear();
    }

    /// Tables waiting for [`PtPool::release_freed`].
    pub(crate) fn freed_pending(&self) -> usize {
        self.inner.lock().freed.len()
    }

    /// Reserved tables not yet handed out.
    pub(crate) fn available(&self) -> usize {
        self.inner.lock().reserved.len()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.inner.lock().stats
    }

    /// Test hook: makes the next [`PtPool::reserve`] fail with `ENOMEM`.
    #[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
    pub(crate) fn fail_next_reserve(&self) {
        self.inner.lock().fail_next_reserve = true;
    }
}

impl TableAllocator for PtPool {
    fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        if size > TABLE_SIZE {
            return None;
        }
        let mut inner = self.inner.lock();
        let Some((addr, node)) = inner.reserved.pop() else {
            inner.stats.exhausted += 1;
            drop(inner);
            // The budget was wrong: the update that asked fails, and the VM with it.
            kernel::warn_on!(true);
            return None;
        };
        // Reserved tables are zeroed and never recycled, so the table is zero as io-pgtable
        // needs; tables are never shared, so a smaller request may have a whole one.
        inner.stats.used += 1;
        inner.stats.live += 1;
        // A fresh address cannot be in the tree: every live table has its own allocation.
        let _ = inner.live.insert(node);
        NonNull::new(addr as *mut u8)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, _size: usize) {
        let mut inner = self.inner.lock();
        let Some(node) = inner.live.remove_node(&(ptr.as_ptr() as usize)) else {
            kernel::warn_on!(true);
            return;
        };
        inner.stats.live -= 1;
        if let Err(e) = inner.freed.push_within_capacity(node) {
            // Cannot happen: `freed` has room for every table the pool owns. Leak rather than
            // free memory the device may still reach.
            kernel::warn_on!(true);
            core::mem::forget(e);
        }
    }
}

impl Drop for PtPool {
    fn drop(&mut self) {
        let inner = self.inner.lock();
        // The page table frees every table before its allocator goes.
        kernel::warn_on!(inner.stats.live != 0);
    }
}
