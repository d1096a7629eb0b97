// SPDX-License-Identifier: GPL-2.0 or MIT

//! Per-client state, and the ioctls that manage it.

use kernel::{
    drm::{self, Registered},
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    sync::{Arc, Mutex},
    uapi,
};

use crate::{
    bind,
    driver::{MirageDevice, MirageDriver, MirageRegData},
    gem,
    vm::Vm,
};

/// Most VMs one file may have.
const MAX_VMS: usize = 1024;

/// The VMs of a file, by id.
struct Vms {
    by_id: RBTree<u32, Arc<Vm>>,
    count: usize,
    next_id: u32,
}

#[pin_data]
pub(crate) struct MirageFile {
    #[pin]
    vms: Mutex<Vms>,
}

pub(crate) type DrmFile = drm::file::File<MirageFile>;

impl drm::file::DriverFile for MirageFile {
    type Driver = MirageDriver;

    fn open(_dev: &drm::Device<Self::Driver>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                vms <- new_mutex!(Vms {
                    by_id: RBTree::new(),
                    count: 0,
                    next_id: 1,
                }),
            }),
            GFP_KERNEL,
        )
    }
}

impl MirageFile {
    /// The VM `id` of this file.
    pub(crate) fn vm(&self, id: u32) -> Result<Arc<Vm>> {
        self.vms.lock().by_id.get(&id).cloned().ok_or(ENOENT)
    }

    /// `DRM_IOCTL_MIRAGE_GET_PARAM`.
    pub(crate) fn get_param(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_get_param,
        _file: &DrmFile,
    ) -> Result<u32> {
        args.value = dev.info.get_param(args)?;
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_GEM_CREATE`.
    pub(crate) fn gem_create(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_gem_create,
        file: &DrmFile,
    ) -> Result<u32> {
        gem::create(dev, args, file)
    }

    /// `DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET`.
    pub(crate) fn gem_mmap_offset(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_gem_mmap_offset,
        file: &DrmFile,
    ) -> Result<u32> {
        gem::mmap_offset(args, file)
    }

    /// `DRM_IOCTL_MIRAGE_VM_CREATE`.
    pub(crate) fn vm_create(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_vm_create,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.extensions != 0 || args.flags != 0 || args.reserved != [0; 2] {
            return Err(EINVAL);
        }
        let vm = Vm::new(dev, dev.info.va_bits, dev.info.pgsize_bitmap.into())?;
        // The tree node is allocated before the lock: nothing is allocated under it.
        let node = kernel::rbtree::RBTreeNodeReservation::new(GFP_KERNEL)?;
        let inner = file.inner();
        let mut vms = inner.vms.lock();
        if vms.count >= MAX_VMS {
            return Err(ENOSPC);
        }
        let mut id = vms.next_id;
        while vms.by_id.get(&id).is_some() {
            id = id.checked_add(1).unwrap_or(1);
        }
        vms.next_id = id.checked_add(1).unwrap_or(1);
        vms.by_id.insert(node.into_node(id, vm));
        vms.count += 1;
        args.vm_id = id;
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_VM_DESTROY`.
    pub(crate) fn vm_destroy(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_vm_destroy,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.extensions != 0 || args.pad != 0 || args.reserved != [0; 2] {
            return Err(EINVAL);
        }
        let vm = {
            let inner = file.inner();
            let mut vms = inner.vms.lock();
            let vm = vms.by_id.remove(&args.vm_id).ok_or(ENOENT)?;
            vms.count -= 1;
            vm
        };
        // Torn down outside the file's lock; jobs that still hold the VM keep it until they end.
        drop(vm);
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_VM_BIND`.
    pub(crate) fn vm_bind(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_vm_bind,
        file: &DrmFile,
    ) -> Result<u32> {
        bind::vm_bind(dev, args, file)
    }
}
