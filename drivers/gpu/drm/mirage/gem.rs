// SPDX-License-Identifier: GPL-2.0 or MIT

//! shmem-backed GEM objects, and `DRM_IOCTL_MIRAGE_GEM_CREATE` / `_GEM_MMAP_OFFSET`.

use kernel::{
    device::Bound,
    drm::gem::{self, shmem, BaseObject},
    prelude::*,
    sync::aref::ARef,
    sync::Arc,
    uapi,
};

use crate::{
    driver::{MirageDevice, MirageDriver},
    file::DrmFile,
    vm::{Segments, Vm},
};

/// What a BO is created with.
pub(crate) struct BoArgs {
    /// The serial number of the VM the BO is private to, or 0.
    pub(crate) private_vm: u64,
}

/// Driver data of a mirage buffer object.
#[pin_data]
pub(crate) struct BoData {
    /// The serial number of the VM whose reservation object the BO shares, or 0 for a BO with
    /// its own (an external BO, in drm_gpuvm's terms).
    private_vm: u64,
}

impl gem::DriverObject for BoData {
    type Driver = MirageDriver;
    type Args = BoArgs;

    fn new(_dev: &MirageDevice, _size: usize, args: BoArgs) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            private_vm: args.private_vm,
        })
    }

    /// A VM-private BO is refused, as xe refuses it: its dma-buf would carry the reservation
    /// object of the whole VM, for importers to wait on and to fence.
    fn export(bo: &Bo, _flags: u32) -> Result {
        if bo.private_vm != 0 {
            return Err(EPERM);
        }
        Ok(())
    }
}

pub(crate) type Bo = shmem::Object<BoData>;

impl BoData {
    /// The serial number of the VM the BO is private to, or 0.
    pub(crate) fn private_vm(&self) -> u64 {
        self.private_vm
    }
}

/// Largest BO: the guest's memory is far smaller, but the size must also fit the VA space.
const MAX_BO_SIZE: u64 = 1 << 40;

/// A BO with no users: the root of a VM's reservation object, shared by its private BOs.
pub(crate) fn new_resv_root(dev: &MirageDevice) -> Result<ARef<Bo>> {
    Bo::new(
        dev,
        4096,
        shmem::ObjectConfig {
            map_wc: false,
            parent_resv_obj: None,
        },
        BoArgs { private_vm: 0 },
    )
}

/// The DMA-mapped, physically contiguous pieces of `[offset, offset + len)` of `bo`, as
/// `(bus address, length)`, merged where they touch.
pub(crate) fn segments(
    bo: &Bo,
    dev: &kernel::device::Device<Bound>,
    offset: u64,
    len: u64,
) -> Result<Segments> {
    let sgt = bo.sg_table(dev)?;
    let mut out = Segments::new();
    let (mut skip, mut left) = (offset, len);
    for entry in sgt.iter() {
        if left == 0 {
            break;
        }
        #[allow(clippy::useless_conversion)]
        let (mut addr, mut n) = (u64::from(entry.dma_address()), u64::from(entry.dma_len()));
        let s = skip.min(n);
        addr += s;
        n -= s;
        skip -= s;
        let n = n.min(left);
        if n == 0 {
            continue;
        }
        left -= n;
        match out.last_mut() {
            Some(last) if last.0 + last.1 == addr => last.1 += n,
            _ => out.push((addr, n), GFP_KERNEL)?,
        }
    }
    if left != 0 {
        return Err(EINVAL);
    }
    Ok(out)
}

/// `DRM_IOCTL_MIRAGE_GEM_CREATE`.
pub(crate) fn create(
    dev: &MirageDevice,
    args: &mut uapi::drm_mirage_gem_create,
    file: &DrmFile,
) -> Result<u32> {
    if args.extensions != 0 || args.pad != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    // One placement, and only system memory until VRAM placement exists.
    if args.flags != uapi::DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM {
        return Err(EINVAL);
    }
    if args.size == 0 || args.size % 4096 != 0 || args.size > MAX_BO_SIZE {
        return Err(EINVAL);
    }
    let size = usize::try_from(args.size).map_err(|_| EINVAL)?;
    let vm: Option<Arc<Vm>> = match args.vm_id {
        0 => None,
        id => Some(file.inner().vm(id)?),
    };
    let bo = Bo::new(
        dev,
        size,
        shmem::ObjectConfig {
            map_wc: false,
            parent_resv_obj: vm.as_deref().map(Vm::resv_root),
        },
        BoArgs {
            private_vm: vm.as_deref().map_or(0, Vm::serial),
        },
    )?;
    args.handle = bo.create_handle(file)?;
    Ok(0)
}

/// `DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET`.
pub(crate) fn mmap_offset(
    args: &mut uapi::drm_mirage_gem_mmap_offset,
    file: &DrmFile,
) -> Result<u32> {
    if args.extensions != 0 || args.flags != 0 || args.reserved != [0; 2] {
        return Err(EINVAL);
    }
    let bo = Bo::lookup_handle(file, args.handle)?;
    args.offset = bo.create_mmap_offset()?;
    Ok(0)
}
