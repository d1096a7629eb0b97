// SPDX-License-Identifier: GPL-2.0 or MIT

//! MADVISE and the attribute query: the memory attributes of CPU-address mirrors.
//!
//! MADVISE splits the mirrors at the ends of its range (drm_gpuvm's madvise lists: two remaps
//! and two maps at most, never an unmap) and sets the attribute on the mappings inside. The
//! GPU mappings of memory whose attribute changes go, so that the next fault maps the pages
//! with the new one; nothing else is invalidated, and a MADVISE that changes nothing splits
//! nothing.

use core::ops::Range;
use kernel::{prelude::*, sync::atomic::Relaxed};

use super::{Advice, Attrs, Backend, SmCtx, VaAllocs, VaInfo, VmCore};

/// VA nodes a madvise list may take: a remap takes two, and each of its two map steps one; a
/// remap that keeps one side gives one back.
const MADVISE_VAS: usize = 4;

impl<B: Backend> VmCore<B> {
    /// Gives the mirrors in `range` the attribute `advice`. `EINVAL` if a BO's or a userptr's
    /// mapping overlaps `range`, or the VM has no mirrors (not fault mode), `ENOENT` if it is
    /// unusable; nothing changes.
    pub(crate) fn madvise(&self, range: Range<u64>, advice: Advice) -> Result {
        if !self.fault_mode {
            return Err(EINVAL);
        }
        // As xe: a VM that takes no new mappings takes no advice either.
        if !self.is_usable() {
            return Err(ENOENT);
        }
        let mut vas = VaAllocs::new(MADVISE_VAS)?;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        self.collect_locked(state)?;

        // The parts of mirrors, inside `range`, whose attribute changes.
        let mut changed: KVec<Range<u64>> = KVec::new();
        let mut res = Ok(());
        state.gpuvm.for_each_va(range.clone(), |va| {
            if res.is_err() {
                return;
            }
            let Some(a) = va.data().mirror else {
                res = Err(EINVAL);
                return;
            };
            if a.advised(advice) != a {
                let end = va.addr() + va.length();
                let part = va.addr().max(range.start)..end.min(range.end);
                res = changed.push(part, GFP_KERNEL).map_err(Error::from);
            }
        });
        res?;
        let (Some(first), Some(last)) = (changed.first(), changed.last()) else {
            return Ok(());
        };
        // Mirrors at the ends whose attribute stays are not split.
        let span = first.start..last.end;

        let ops = state.gpuvm.madvise_ops(span.clone())?;
        if ops.vas_needed() > MADVISE_VAS {
            // drm_gpuvm's lists split two mappings at most.
            kernel::warn_on!(true);
            return Err(EINVAL);
        }
        // The GPU stops using the memory whose attribute changes first: ranges are removed
        // whole (drm_gpusvm does not split them), and a range that crosses a split would map
        // pages of two mappings with the attributes of one.
        if let Some(svm) = state.svm.as_mut() {
            for part in changed.iter() {
                self.invalidate_mirror(svm, part)?;
            }
            // Until the attributes are in the tree, the watcher may not know to log an unmap.
            svm.gc.widen(&span);
        }
        let mut ctx = SmCtx {
            vas: &mut vas,
            held: None,
            added: 0,
            data: VaInfo::default(),
            madvise: true,
        };
        let applied = ops.apply(&mut ctx);
        state.vas = state.vas.saturating_add_signed(ctx.added);
        if applied.is_err() {
            // The nodes were counted: the tree is no longer what the VM believes.
            kernel::warn_on!(true);
            self.usable.store(false, Relaxed);
            return applied;
        }
        state.gpuvm.for_each_va_mut(span, |va| {
            let info = va.data_mut().get_mut();
            if let Some(a) = info.mirror.as_mut() {
                *a = a.advised(advice);
            }
        });
        // An unmap of memory that now has non-default attributes resets them.
        self.rewatch(state);
        Ok(())
    }

    /// The mirrors that overlap `range`, in address order, with their attributes.
    pub(crate) fn mem_range_attrs(&self, range: Range<u64>) -> Result<KVec<(Range<u64>, Attrs)>> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        // Attributes the CPU's unmaps reset are reported reset.
        self.collect_locked(state)?;
        let mut out = KVec::new();
        let mut res = Ok(());
        state.gpuvm.for_each_va(range, |va| {
            if let (Ok(()), Some(a)) = (&res, va.data().mirror) {
                let r = va.addr()..va.addr() + va.length();
                res = out.push((r, a), GFP_KERNEL).map_err(Error::from);
            }
        });
        res.map(|()| out)
    }
}
