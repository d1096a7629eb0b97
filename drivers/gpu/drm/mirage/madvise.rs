// SPDX-License-Identifier: GPL-2.0 or MIT

//! `DRM_IOCTL_MIRAGE_MADVISE` and `DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS`: checking the
//! arguments; the VM does the rest ([`crate::vm::Vm::madvise`]).

use kernel::{
    prelude::*,
    transmute::AsBytes,
    uaccess::{UserPtr, UserSlice},
    uapi,
};

use crate::{file::DrmFile, vm::Advice};

/// Turns the union member `args.type` names into an [`Advice`], checking it.
fn advice(args: &uapi::drm_mirage_madvise) -> Result<Advice> {
    let u = &args.__bindgen_anon_1;
    match args.type_ {
        uapi::DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC => {
            // SAFETY: Every member of the union is plain integers over the same 16 bytes, all
            // of which userspace wrote.
            let l = unsafe { u.preferred_mem_loc };
            let fd_ok = l.devmem_fd == uapi::DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE
                || l.devmem_fd == uapi::DRM_MIRAGE_PREFERRED_LOC_DEFAULT_SYSTEM as u32;
            // Another device's memory (a real fd, with its region) comes with migration.
            if !fd_ok
                || u32::from(l.migration_policy) > uapi::DRM_MIRAGE_MIGRATE_ONLY_SYSTEM_PAGES
                || l.region_instance != 0
                || l.reserved != 0
            {
                return Err(EINVAL);
            }
            Ok(Advice::PreferredLoc {
                devmem_fd: l.devmem_fd,
                migration: l.migration_policy,
            })
        }
        uapi::DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC => {
            // SAFETY: As above.
            let a = unsafe { u.atomic };
            if a.val > uapi::DRM_MIRAGE_ATOMIC_CPU || a.pad != 0 || a.reserved != 0 {
                return Err(EINVAL);
            }
            Ok(Advice::Atomic(a.val))
        }
        uapi::DRM_MIRAGE_MEM_RANGE_ATTR_PAT => {
            // SAFETY: As above.
            let p = unsafe { u.pat_index };
            if p.pad != 0 || p.reserved != 0 {
                return Err(EINVAL);
            }
            match p.val {
                uapi::drm_mirage_pat_DRM_MIRAGE_PAT_WB | uapi::drm_mirage_pat_DRM_MIRAGE_PAT_UC => {
                    Ok(Advice::Pat(p.val as u16))
                }
                _ => Err(EINVAL),
            }
        }
        _ => Err(EINVAL),
    }
}

/// `DRM_IOCTL_MIRAGE_MADVISE`.
pub(crate) fn madvise(args: &uapi::drm_mirage_madvise, file: &DrmFile) -> Result<u32> {
    if args.extensions != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    let advice = advice(args)?;
    let vm = file.inner().vm(args.vm_id)?;
    let range = vm.check_range(args.start, args.range)?;
    vm.madvise(range, advice)?;
    Ok(0)
}

/// A `struct drm_mirage_mem_range_attr` as written to userspace.
#[repr(transparent)]
struct Entry(uapi::drm_mirage_mem_range_attr);

// SAFETY: `drm_mirage_mem_range_attr` is integers with no padding (the uAPI keeps every struct
// padding-free), so every byte of it is initialised.
unsafe impl AsBytes for Entry {}

const ENTRY_SIZE: usize = size_of::<uapi::drm_mirage_mem_range_attr>();

/// `DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS`: xe's two calls, counting then filling.
pub(crate) fn query(
    args: &mut uapi::drm_mirage_vm_query_mem_range_attr,
    file: &DrmFile,
) -> Result<u32> {
    if args.extensions != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    let counting = args.num_mem_ranges == 0;
    if counting && (args.sizeof_mem_range_attr != 0 || args.vector_of_mem_attr != 0) {
        return Err(EINVAL);
    }
    if !counting
        && (args.sizeof_mem_range_attr != ENTRY_SIZE as u64 || args.vector_of_mem_attr == 0)
    {
        return Err(EINVAL);
    }
    let vm = file.inner().vm(args.vm_id)?;
    let range = vm.check_range(args.start, args.range)?;
    let mirrors = vm.mem_range_attrs(range)?;
    let n = u32::try_from(mirrors.len()).map_err(|_| ENOSPC)?;
    if counting {
        args.num_mem_ranges = n;
        args.sizeof_mem_range_attr = ENTRY_SIZE as u64;
        return Ok(0);
    }
    if args.num_mem_ranges < n {
        return Err(ENOSPC);
    }
    let addr = usize::try_from(args.vector_of_mem_attr).map_err(|_| EFAULT)?;
    let mut w = UserSlice::new(UserPtr::from_addr(addr), mirrors.len() * ENTRY_SIZE).writer();
    for (r, a) in mirrors.iter() {
        let mut e = uapi::drm_mirage_mem_range_attr {
            start: r.start,
            end: r.end,
            ..Default::default()
        };
        e.preferred_mem_loc.devmem_fd = a.devmem_fd;
        e.preferred_mem_loc.migration_policy = a.migration.into();
        e.atomic.val = a.atomic;
        e.pat_index.val = a.pat.into();
        w.write(&Entry(e))?;
    }
    args.num_mem_ranges = n;
    Ok(0)
}
