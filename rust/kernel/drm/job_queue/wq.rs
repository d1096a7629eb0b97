// SPDX-License-Identifier: GPL-2.0

//! The workqueue a job queue runs on.

use crate::{bindings, prelude::*, workqueue::Queue};
use core::{ops::Deref, ptr::NonNull};

/// An ordered workqueue with a rescuer: its items run one at a time, in the order they were
/// queued, and make progress even when no new worker can be created for lack of memory.
///
/// A job queue signals its fences from these items, and memory reclaim may wait on the fences:
/// without `WQ_MEM_RECLAIM`, reclaim could wait for a worker that needs memory to start.
///
/// # Invariants
///
/// `ptr` is a workqueue made by `alloc_workqueue`, destroyed only when `self` is dropped.
pub(super) struct ReclaimQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues are used from any thread; every operation on them is thread-safe.
unsafe impl Send for ReclaimQueue {}
// SAFETY: See `Send`.
unsafe impl Sync for ReclaimQueue {}

impl ReclaimQueue {
    /// Makes an ordered reclaim-safe workqueue called `name`.
    pub(super) fn new_ordered(name: &CStr) -> Result<Self> {
        let flags = bindings::wq_flags_WQ_UNBOUND
            | bindings::wq_flags___WQ_ORDERED
            | bindings::wq_flags_WQ_MEM_RECLAIM;
        // SAFETY: The format takes one C string, `name`, which the workqueue copies.
        let ptr = unsafe {
            bindings::alloc_workqueue_noprof(c"%s".as_char_ptr(), flags, 1, name.as_char_ptr())
        };
        // INVARIANT: A non-NULL pointer is a new workqueue that only `self` destroys.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    /// Waits until every item queued before the call has finished.
    pub(super) fn flush(&self) {
        // SAFETY: By the type invariant the workqueue is alive.
        unsafe { bindings::__flush_workqueue(self.ptr.as_ptr()) };
    }
}

impl Deref for ReclaimQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: By the type invariant the workqueue lives as long as `self`.
        unsafe { Queue::from_raw(self.ptr.as_ptr()) }
    }
}

impl Drop for ReclaimQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the workqueue is alive and nothing else destroys it.
        // Destroying drains it first.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}
