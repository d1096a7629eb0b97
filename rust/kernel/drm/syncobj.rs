// SPDX-License-Identifier: GPL-2.0

//! DRM sync objects.
//!
//! C header: [`include/drm/drm_syncobj.h`](srctree/include/drm/drm_syncobj.h)
//!
//! A sync object is a container for a fence that userspace names by a handle in its DRM file:
//! jobs wait on the fence it holds and install their own fences in it. A *binary* sync object
//! holds one fence, replaced as a whole. A *timeline* sync object holds a chain of points, each
//! with a fence; a point is reached when its fence and those of all earlier points signalled.
//!
//! Installing a fence is what makes a job's completion visible to userspace, so it happens
//! after the job was committed, where nothing may fail any more: [`Syncobj::add_point`] takes a
//! [`ChainNode`] allocated earlier, while failing was still allowed.
//!
//! # Locking rules
//!
//! - [`Syncobj::new`] and [`ChainNode::new`] allocate with `GFP_KERNEL`: call them before any
//!   fence of the submission is published, never in a fence signalling section.
//! - [`Syncobj::lookup`], [`Syncobj::fence`] and [`Syncobj::find_fence`] take spinlocks or RCU
//!   read locks only, and never wait.
//! - [`Syncobj::replace_fence`] and [`Syncobj::add_point`] take the object's spinlock, without
//!   disabling interrupts, and never allocate: they may run in a fence signalling section, but
//!   not in hard-interrupt context. The same holds for dropping the last reference to a sync
//!   object.

use crate::{
    bindings,
    dma_buf::fence::Fence,
    drm::{file::DriverFile, Driver, File},
    error::{to_result, Result},
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
    types::Opaque,
};
use core::{
    mem::ManuallyDrop,
    ptr::{self, NonNull},
};

/// A reference-counted DRM sync object.
///
/// # Invariants
///
/// The inner `drm_syncobj` is initialised and its reference count is nonzero for as long as a
/// `&Syncobj` exists.
#[repr(transparent)]
pub struct Syncobj(Opaque<bindings::drm_syncobj>);

// SAFETY: `drm_syncobj` is used from any thread: its fence is read under RCU and replaced under
// its spinlock.
unsafe impl Send for Syncobj {}
// SAFETY: See `Send`; shared references only call thread-safe C functions.
unsafe impl Sync for Syncobj {}

// SAFETY: `drm_syncobj_get`/`drm_syncobj_put` keep the object alive, and every `Syncobj` lives
// in a reference-counted `drm_syncobj`.
unsafe impl AlwaysRefCounted for Syncobj {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the object is alive.
        unsafe { bindings::drm_syncobj_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which it gives up here.
        unsafe { bindings::drm_syncobj_put(obj.cast::<bindings::drm_syncobj>().as_ptr()) };
    }
}

/// Takes over the reference a C function returned with a fence, if any.
///
/// # Safety
///
/// `ptr` is NULL or a fence the caller owns a reference to.
unsafe fn owned_fence(ptr: *mut bindings::dma_fence) -> Option<ARef<Fence>> {
    // SAFETY: `Fence` is a transparent wrapper of `dma_fence`, and the caller gives us its
    // reference.
    NonNull::new(ptr).map(|p| unsafe { ARef::from_raw(p.cast::<Fence>()) })
}

impl Syncobj {
    /// Creates a sync object that holds `fence` (or no fence), not known to any file.
    pub fn new(fence: Option<&Fence>) -> Result<ARef<Self>> {
        let mut obj = ptr::null_mut();
        let fence = fence.map_or(ptr::null_mut(), Fence::as_raw);
        // SAFETY: `obj` is valid for writes, and `fence` is NULL or a live fence, which the
        // object takes its own reference to.
        to_result(unsafe { bindings::drm_syncobj_create(&mut obj, 0, fence) })?;
        // SAFETY: On success `obj` is a new object with one reference, which we take over.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(obj.cast::<Self>())) })
    }

    /// Looks up the sync object that `handle` names in `file`; `ENOENT` if there is none.
    ///
    /// The driver must set [`Driver::FEAT_SYNCOBJ`], without which files have no sync objects.
    pub fn lookup<F: DriverFile>(file: &File<F>, handle: u32) -> Result<ARef<Self>> {
        const {
            assert!(
                <F::Driver as Driver>::FEAT_SYNCOBJ,
                "sync objects need Driver::FEAT_SYNCOBJ"
            )
        };
        // SAFETY: `file` is a live DRM file of a driver with sync objects, so its table of
        // sync objects is initialised.
        let obj = unsafe { bindings::drm_syncobj_find(file.as_raw(), handle) };
        let obj = NonNull::new(obj).ok_or(ENOENT)?;
        // SAFETY: `drm_syncobj_find` returned a reference, which we take over.
        Ok(unsafe { ARef::from_raw(obj.cast::<Self>()) })
    }

    /// Returns the raw `drm_syncobj`.
    pub fn as_raw(&self) -> *mut bindings::drm_syncobj {
        self.0.get()
    }

    /// The fence the object holds: for a timeline, that of its last point.
    pub fn fence(&self) -> Option<ARef<Fence>> {
        // SAFETY: By the type invariant the object is alive; the C function returns a new
        // reference, or NULL.
        unsafe { owned_fence(bindings::drm_syncobj_fence_get(self.as_raw())) }
    }

    /// The fence to wait on for timeline point `point`, or for the object's fence if `point`
    /// is 0.
    ///
    /// Fails with `EINVAL` if the object has no fence, or no point `point` or later yet. A
    /// point that already signalled (and was dropped from the chain) gives a signalled fence.
    pub fn find_fence(&self, point: u64) -> Result<ARef<Fence>> {
        let fence = self.fence().ok_or(EINVAL)?;
        let mut raw = ARef::into_raw(fence).as_ptr().cast::<bindings::dma_fence>();
        // SAFETY: We own the reference `raw` carries; the C function replaces it with one to
        // the fence of the point (or NULL), or leaves it alone on error.
        let ret = unsafe { bindings::dma_fence_chain_find_seqno(&mut raw, point) };
        // SAFETY: `raw` carries a reference (or is NULL), which we take over.
        let found = unsafe { owned_fence(raw) };
        to_result(ret)?;
        match found {
            Some(fence) => Ok(fence),
            // SAFETY: The C function returns a reference to the stub fence, always signalled.
            None => unsafe { owned_fence(bindings::dma_fence_get_stub()) }.ok_or(EINVAL),
        }
    }

    /// Replaces the object's fence (or its whole timeline) with `fence`, or with none.
    pub fn replace_fence(&self, fence: Option<&Fence>) {
        let fence = fence.map_or(ptr::null_mut(), Fence::as_raw);
        // SAFETY: The object is alive, and `fence` is NULL or a live fence, which the object
        // takes its own reference to.
        unsafe { bindings::drm_syncobj_replace_fence(self.as_raw(), fence) };
    }

    /// Adds timeline point `point`, reached when `fence` and every earlier point signalled,
    /// using `node`. Never fails nor allocates.
    ///
    /// Point 0 is no timeline point: as in the timeline ioctls, it replaces the object's fence
    /// with `fence` (and `node` is freed).
    pub fn add_point(&self, node: ChainNode, fence: &Fence, point: u64) {
        if point == 0 {
            self.replace_fence(Some(fence));
            return;
        }
        let node = ManuallyDrop::new(node);
        // SAFETY: The object and `fence` are alive; `node` is an unused chain node, which the
        // object takes over (we do not free it), and the fence gets its own reference.
        unsafe {
            bindings::drm_syncobj_add_point(self.as_raw(), node.0.as_ptr(), fence.as_raw(), point)
        };
    }
}

/// Memory for one point of a timeline, allocated before the fence of the point exists.
///
/// # Invariants
///
/// `self.0` was allocated by `dma_fence_chain_alloc` and is not used by anything else.
pub struct ChainNode(NonNull<bindings::dma_fence_chain>);

// SAFETY: The node is plain memory, owned by the `ChainNode` alone.
unsafe impl Send for ChainNode {}
// SAFETY: A shared reference gives no access to the memory.
unsafe impl Sync for ChainNode {}

impl ChainNode {
    /// Allocates a node (`GFP_KERNEL`).
    pub fn new() -> Result<Self> {
        // SAFETY: Allocating has no precondition.
        let node = unsafe { bindings::dma_fence_chain_alloc() };
        // INVARIANT: The node was just allocated.
        Ok(Self(NonNull::new(node).ok_or(ENOMEM)?))
    }
}

impl Drop for ChainNode {
    fn drop(&mut self) {
        // SAFETY: The node is unused and ours (type invariant).
        unsafe { bindings::dma_fence_chain_free(self.0.as_ptr()) };
    }
}

#[macros::kunit_tests(rust_drm_syncobj)]
mod tests {
    use super::*;
    use crate::dma_buf::fence::{FenceContext, FenceOps};

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_drm_syncobj_test";
    }

    fn same(a: &Fence, b: &Fence) -> bool {
        ptr::eq(a.as_raw(), b.as_raw())
    }

    #[test]
    fn a_binary_object_holds_one_fence() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"syncobj-test");
        let (p1, f1) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (p2, f2) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let obj = Syncobj::new(None)?;
        assert!(obj.fence().is_none());
        assert_eq!(obj.find_fence(0).err(), Some(EINVAL));
        obj.replace_fence(Some(&f1));
        assert!(same(&*obj.fence().ok_or(EINVAL)?, &f1));
        assert!(same(&*obj.find_fence(0)?, &f1));
        // A binary object has no timeline points.
        assert_eq!(obj.find_fence(1).err(), Some(EINVAL));
        // Point 0 replaces the fence.
        obj.add_point(ChainNode::new()?, &f2, 0);
        assert!(same(&*obj.fence().ok_or(EINVAL)?, &f2));
        obj.replace_fence(None);
        assert!(obj.fence().is_none());
        let born_with = Syncobj::new(Some(&f1))?;
        assert!(same(&*born_with.fence().ok_or(EINVAL)?, &f1));
        p1.signal(Ok(()));
        p2.signal(Ok(()));
        Ok(())
    }

    #[test]
    fn timeline_points_signal_in_order() -> Result {
        let ctx = FenceContext::<TestOps, ()>::new(c"syncobj-test");
        let (p1, f1) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let (p3, f3) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let obj = Syncobj::new(None)?;
        obj.add_point(ChainNode::new()?, &f1, 1);
        obj.add_point(ChainNode::new()?, &f3, 3);
        let at1 = obj.find_fence(1)?;
        let at2 = obj.find_fence(2)?;
        let at3 = obj.find_fence(3)?;
        // Point 2 was never added: point 3 covers it. Point 4 is not submitted yet.
        assert_eq!((at1.seqno(), at2.seqno(), at3.seqno()), (1, 3, 3));
        assert_eq!(obj.find_fence(4).err(), Some(EINVAL));
        assert_eq!(obj.fence().ok_or(EINVAL)?.seqno(), 3);
        assert!(!at1.is_signaled() && !at3.is_signaled());
        // Point 3 is reached only once point 1 is.
        p3.signal(Ok(()));
        assert!(!at1.is_signaled() && !at2.is_signaled() && !at3.is_signaled());
        p1.signal(Ok(()));
        assert!(at1.is_signaled() && at2.is_signaled() && at3.is_signaled());
        // Reached points still resolve, to a signalled fence.
        assert!(obj.find_fence(1)?.is_signaled());
        assert!(obj.find_fence(3)?.is_signaled());
        Ok(())
    }

    #[test]
    fn an_unused_chain_node_is_freed() -> Result {
        // kmemleak reports the node if dropping it does not free it.
        let node = ChainNode::new()?;
        drop(node);
        Ok(())
    }
}
