// SPDX-License-Identifier: GPL-2.0 or MIT

//! In- and out-fences of VM_BIND and EXEC: `struct drm_mirage_sync` entries.
//!
//! Everything an entry needs is looked up and allocated when the entries are parsed, so that
//! signalling them later (possibly in a signalling section) neither fails nor allocates.

use kernel::{
    dma_buf::fence::Fence,
    drm::syncobj::{ChainNode, Syncobj},
    prelude::*,
    sync::aref::ARef,
    transmute::FromBytes,
    uaccess::{UserPtr, UserSlice},
    uapi,
};

use crate::file::DrmFile;

/// A `struct drm_mirage_sync` as read from userspace.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct UserSync(uapi::drm_mirage_sync);

// SAFETY: `drm_mirage_sync` is integers only, with no padding: every bit pattern is valid.
unsafe impl FromBytes for UserSync {}

/// Most entries one ioctl takes.
const MAX_SYNCS: u32 = uapi::DRM_MIRAGE_MAX_SYNCS;

/// Where an operation's fence goes.
struct Signal {
    syncobj: ARef<Syncobj>,
    /// The timeline point, with its chain node; `None` for a binary syncobj.
    point: Option<(u64, ChainNode)>,
}

/// The parsed entries of one ioctl.
pub(crate) struct Syncs {
    waits: KVec<ARef<Fence>>,
    signals: KVec<Signal>,
}

impl Syncs {
    /// Reads and checks `count` entries at `addr`, and looks up what they name.
    pub(crate) fn parse(file: &DrmFile, addr: u64, count: u32) -> Result<Self> {
        if count > MAX_SYNCS || (count == 0) != (addr == 0) {
            return Err(EINVAL);
        }
        let n = count as usize;
        let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut reader =
            UserSlice::new(UserPtr::from_addr(addr as usize), n * size_of::<UserSync>()).reader();
        for _ in 0..n {
            let e = reader.read::<UserSync>()?.0;
            if e.extensions != 0 || e.pad != 0 || e.reserved != [0; 2] {
                return Err(EINVAL);
            }
            if e.flags & !uapi::DRM_MIRAGE_SYNC_FLAG_SIGNAL != 0 {
                return Err(EINVAL);
            }
            let timeline = match e.type_ {
                uapi::DRM_MIRAGE_SYNC_TYPE_SYNCOBJ => false,
                uapi::DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ => true,
                _ => return Err(EINVAL),
            };
            // A binary syncobj has no points; a timeline point is never 0.
            if timeline == (e.timeline_value == 0) {
                return Err(EINVAL);
            }
            entries.push(e, GFP_KERNEL)?;
        }

        let mut syncs = Syncs {
            waits: KVec::new(),
            signals: KVec::new(),
        };
        for e in entries.iter() {
            let syncobj = Syncobj::lookup(file, e.handle)?;
            if e.flags & uapi::DRM_MIRAGE_SYNC_FLAG_SIGNAL != 0 {
                let point = match e.timeline_value {
                    0 => None,
                    p => Some((p, ChainNode::new()?)),
                };
                syncs.signals.push(Signal { syncobj, point }, GFP_KERNEL)?;
            } else {
                // No fence (yet) at what the entry names is an error, as in
                // drm_syncobj_find_fence() without WAIT_FOR_SUBMIT.
                let fence = syncobj.find_fence(e.timeline_value)?;
                syncs.waits.push(fence, GFP_KERNEL)?;
            }
        }
        Ok(syncs)
    }

    /// The fences of the wait entries, for a job to depend on.
    pub(crate) fn wait_fences(&self) -> &[ARef<Fence>] {
        &self.waits
    }

    /// Gives `fence` to every signal entry. Neither fails nor allocates.
    pub(crate) fn signal(self, fence: &Fence) {
        for s in self.signals.into_iter() {
            match s.point {
                Some((point, node)) => s.syncobj.add_point(node, fence, point),
                None => s.syncobj.replace_fence(Some(fence)),
            }
        }
    }
}
