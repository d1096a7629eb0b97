// SPDX-License-Identifier: GPL-2.0 or MIT

//! `DRM_IOCTL_MIRAGE_VM_BIND`: checking the arguments and turning them into [`BindOp`]s.

use kernel::{
    device::Bound,
    drm::{gem::BaseObject, Registered},
    pci,
    prelude::*,
    transmute::FromBytes,
    uaccess::{UserPtr, UserSlice},
    uapi,
};

use crate::{
    driver::MirageDevice,
    file::DrmFile,
    gem::{self, Bo},
    syncs::Syncs,
    vm::{BindOp, Vm},
};

/// A `struct drm_mirage_vm_bind_op` as read from userspace.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct UserOp(uapi::drm_mirage_vm_bind_op);

// SAFETY: `drm_mirage_vm_bind_op` is integers and a union of integers, with no padding (the
// uAPI keeps every struct padding-free): every bit pattern is a valid value.
unsafe impl FromBytes for UserOp {}

const MAX_OPS: u32 = uapi::DRM_MIRAGE_MAX_BIND_OPS;
const KNOWN_FLAGS: u32 =
    uapi::DRM_MIRAGE_VM_BIND_FLAG_READONLY | uapi::DRM_MIRAGE_VM_BIND_FLAG_NOEXEC;
const MIRROR: u32 = uapi::DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR;
const AUTORESET: u32 = uapi::DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET;

/// An op whose fields were checked on their own, before any lookup.
enum Checked {
    Map {
        obj: u32,
        offset: u64,
        addr: u64,
        range: u64,
        prot: u32,
    },
    Unmap {
        addr: u64,
        range: u64,
    },
    UnmapAll {
        obj: u32,
    },
    MapUserptr {
        cpu: u64,
        addr: u64,
        range: u64,
        prot: u32,
    },
    MapMirror {
        addr: u64,
        range: u64,
        pat: u16,
        autoreset: bool,
    },
}

fn aligned(v: u64) -> bool {
    v % 4096 == 0
}

/// Checks the fields of `op` that need no lookup.
fn check_op(op: &uapi::drm_mirage_vm_bind_op) -> Result<Checked> {
    if op.extensions != 0
        || op.pad != 0
        || op.pad2 != 0
        || op.reserved != [0; 3]
        || op.prefetch_mem_region_instance != 0
    {
        return Err(EINVAL);
    }
    // SAFETY: Every member of the union is an integer of the same size.
    let offset = unsafe { op.__bindgen_anon_1.obj_offset };
    let (addr, range) = (op.addr, op.range);
    let cached = || match u32::from(op.pat_index) {
        uapi::drm_mirage_pat_DRM_MIRAGE_PAT_WB => Ok(true),
        uapi::drm_mirage_pat_DRM_MIRAGE_PAT_UC => Ok(false),
        _ => Err(EINVAL),
    };
    let readonly = op.flags & uapi::DRM_MIRAGE_VM_BIND_FLAG_READONLY != 0;
    let noexec = op.flags & uapi::DRM_MIRAGE_VM_BIND_FLAG_NOEXEC != 0;
    match op.op {
        uapi::DRM_MIRAGE_VM_BIND_OP_MAP if op.flags & MIRROR != 0 => {
            // xe's shape: no object, no offset (`cpu_addr_mirror_offset`), and no other flag
            // but AUTORESET; the PAT is the mirror's default.
            cached()?;
            if op.obj != 0
                || offset != 0
                || op.flags & !(MIRROR | AUTORESET) != 0
                || range == 0
                || !aligned(addr | range)
            {
                return Err(EINVAL);
            }
            Ok(Checked::MapMirror {
                addr,
                range,
                pat: op.pat_index,
                autoreset: op.flags & AUTORESET != 0,
            })
        }
        uapi::DRM_MIRAGE_VM_BIND_OP_MAP => {
            let cached = cached()?;
            if op.obj == 0
                || op.flags & !KNOWN_FLAGS != 0
                || range == 0
                || !aligned(addr | range | offset)
            {
                return Err(EINVAL);
            }
            Ok(Checked::Map {
                obj: op.obj,
                offset,
                addr,
                range,
                prot: Vm::prot(readonly, noexec, cached),
            })
        }
        uapi::DRM_MIRAGE_VM_BIND_OP_UNMAP => {
            if op.obj != 0
                || offset != 0
                || op.flags != 0
                || op.pat_index != 0
                || range == 0
                || !aligned(addr | range)
            {
                return Err(EINVAL);
            }
            Ok(Checked::Unmap { addr, range })
        }
        uapi::DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL => {
            if op.obj == 0
                || offset != 0
                || op.flags != 0
                || op.pat_index != 0
                || addr != 0
                || range != 0
            {
                return Err(EINVAL);
            }
            Ok(Checked::UnmapAll { obj: op.obj })
        }
        uapi::DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR => {
            let cached = cached()?;
            // `offset` is the union's `userptr`.
            if op.obj != 0
                || op.flags & !KNOWN_FLAGS != 0
                || range == 0
                || !aligned(addr | range | offset)
                || offset.checked_add(range).is_none()
            {
                return Err(EINVAL);
            }
            Ok(Checked::MapUserptr {
                cpu: offset,
                addr,
                range,
                prot: Vm::prot(readonly, noexec, cached),
            })
        }
        // PREFETCH and the rest are not supported (yet).
        _ => Err(EINVAL),
    }
}

/// Copies the ops of `args` from userspace.
fn read_ops(args: &uapi::drm_mirage_vm_bind) -> Result<KVec<UserOp>> {
    let n = args.num_binds as usize;
    let mut ops = KVec::with_capacity(n, GFP_KERNEL)?;
    if n == 1 {
        // SAFETY: With one op, the union holds it; every bit pattern of it is valid.
        ops.push(UserOp(unsafe { args.__bindgen_anon_1.bind }), GFP_KERNEL)?;
        return Ok(ops);
    }
    // SAFETY: With several ops, the union holds their address; any u64 is valid.
    let addr = unsafe { args.__bindgen_anon_1.vector_of_binds };
    let size = n * core::mem::size_of::<UserOp>();
    let mut reader = UserSlice::new(UserPtr::from_addr(addr as usize), size).reader();
    for _ in 0..n {
        ops.push(reader.read::<UserOp>()?, GFP_KERNEL)?;
    }
    Ok(ops)
}

/// `DRM_IOCTL_MIRAGE_VM_BIND`.
pub(crate) fn vm_bind(
    dev: &MirageDevice<Registered>,
    args: &mut uapi::drm_mirage_vm_bind,
    file: &DrmFile,
) -> Result<u32> {
    if args.extensions != 0 || args.pad != 0 || args.pad2 != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    if args.num_binds == 0 {
        return Err(EINVAL);
    }
    if args.num_binds > MAX_OPS {
        return Err(ENOBUFS);
    }
    let user_ops = read_ops(args)?;
    let mut checked = KVec::with_capacity(user_ops.len(), GFP_KERNEL)?;
    for op in user_ops.iter() {
        checked.push(check_op(&op.0)?, GFP_KERNEL)?;
    }

    let queue = file.inner().bind_queue(args.vm_id, args.exec_queue_id)?;
    let vm = queue.vm();
    let pdev: &pci::Device<Bound> = dev.as_ref();
    let mut ops = KVec::with_capacity(checked.len(), GFP_KERNEL)?;
    for c in checked.into_iter() {
        let op = match c {
            Checked::Map {
                obj,
                offset,
                addr,
                range,
                prot,
            } => {
                let bo = Bo::lookup_handle(file, obj)?;
                let end = offset.checked_add(range).ok_or(EINVAL)?;
                if end > bo.size() as u64 {
                    return Err(EINVAL);
                }
                let range = vm.check_range(addr, range)?;
                // A BO private to another VM is refused when the VM checks the op; its pages
                // are not worth pinning for that.
                let private = bo.private_vm();
                if private != 0 && private != vm.serial() {
                    return Err(EINVAL);
                }
                BindOp::Map {
                    segments: gem::segments(&bo, pdev.as_ref(), offset, range.end - range.start)?,
                    range,
                    bo,
                    offset,
                    prot,
                }
            }
            Checked::Unmap { addr, range } => BindOp::Unmap {
                range: vm.check_range(addr, range)?,
            },
            Checked::UnmapAll { obj } => BindOp::UnmapAll {
                bo: Bo::lookup_handle(file, obj)?,
            },
            Checked::MapUserptr {
                cpu,
                addr,
                range,
                prot,
            } => BindOp::MapUserptr {
                range: vm.check_range(addr, range)?,
                cpu,
                prot,
            },
            Checked::MapMirror {
                addr,
                range,
                pat,
                autoreset,
            } => BindOp::MapMirror {
                range: vm.check_range(addr, range)?,
                pat,
                autoreset,
            },
        };
        ops.push(op, GFP_KERNEL)?;
    }
    let syncs = Syncs::parse(file, args.syncs, args.num_syncs)?;
    // Without syncs the bind is synchronous (drm-vm-bind-async.rst).
    let fence = queue.bind(ops, syncs.wait_fences(), args.num_syncs == 0)?;
    syncs.signal(&fence);
    Ok(0)
}
