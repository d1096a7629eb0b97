// SPDX-License-Identifier: GPL-2.0 or MIT

//! Per-client state, and the ioctls that manage it.

use kernel::{
    debugfs,
    drm::{self, Registered},
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    str::CString,
    sync::{Arc, Mutex},
    uapi,
};

use crate::{
    bind,
    driver::{MirageDevice, MirageDriver, MirageRegData},
    exec::{self, ExecQueue},
    gem,
    gpu::Gpu,
    madvise,
    vm::{queue::BindQueue, Vm},
};

/// Most VMs one file may have.
const MAX_VMS: usize = 1024;

/// The first id from `*next` on that `tree` does not use, never 0; `*next` moves past it, so
/// that a destroyed object's id is not reused at once.
fn free_id<V>(tree: &RBTree<u32, V>, next: &mut u32) -> u32 {
    let mut id = *next;
    while id == 0 || tree.get(&id).is_some() {
        id = id.wrapping_add(1);
    }
    *next = id.wrapping_add(1);
    id
}

/// A VM of a file, with its debugfs file and its default bind queue.
struct VmEntry {
    // Removed first: a read in progress holds the VM.
    _debugfs: Pin<KBox<debugfs::File<VmDebug>>>,
    /// Dropped before the VM: its binds that did not execute are cancelled.
    binds: Arc<BindQueue<Gpu>>,
    vm: Arc<Vm>,
}

/// What `/sys/kernel/debug/mirage/vm-<serial>` shows: the VM's uAPI id, the process that made
/// it, whether it is usable, the page-table pool's counters and the VA tree.
struct VmDebug {
    vm: Arc<Vm>,
    id: u32,
    pid: i32,
}

impl debugfs::Writer for VmDebug {
    fn write(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        writeln!(
            f,
            "vm {} pid {} usable {}",
            self.id,
            self.pid,
            u8::from(self.vm.is_usable())
        )?;
        self.vm.show(f)
    }
}

/// The VMs of a file, by id.
struct Vms {
    by_id: RBTree<u32, VmEntry>,
    count: usize,
    next_id: u32,
}

/// An exec queue of a file, by class.
#[derive(Clone)]
enum Queue {
    Exec(Arc<ExecQueue>),
    Bind(Arc<BindQueue<Gpu>>),
}

/// The exec queues of a file, by id.
struct Queues {
    by_id: RBTree<u32, Queue>,
    next_id: u32,
}

/// Most exec queues one file may have.
const MAX_QUEUES: usize = 1024;

#[pin_data]
pub(crate) struct MirageFile {
    // Dropped first: a queue waits for its job on the device, and holds its VM.
    #[pin]
    queues: Mutex<Queues>,
    #[pin]
    vms: Mutex<Vms>,
}

pub(crate) type DrmFile = drm::file::File<MirageFile>;

impl drm::file::DriverFile for MirageFile {
    type Driver = MirageDriver;

    fn open(_dev: &drm::Device<Self::Driver>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                queues <- new_mutex!(Queues {
                    by_id: RBTree::new(),
                    next_id: 1,
                }),
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
        self.vms
            .lock()
            .by_id
            .get(&id)
            .map(|e| e.vm.clone())
            .ok_or(ENOENT)
    }

    /// The exec queue `id` of this file, of class COMPUTE.
    pub(crate) fn exec_queue(&self, id: u32) -> Result<Arc<ExecQueue>> {
        match self.queues.lock().by_id.get(&id).ok_or(ENOENT)? {
            Queue::Exec(q) => Ok(q.clone()),
            Queue::Bind(_) => Err(EINVAL),
        }
    }

    /// The bind queue `queue_id` of VM `vm_id` of this file, or the VM's default one if
    /// `queue_id` is 0.
    pub(crate) fn bind_queue(&self, vm_id: u32, queue_id: u32) -> Result<Arc<BindQueue<Gpu>>> {
        let default = self
            .vms
            .lock()
            .by_id
            .get(&vm_id)
            .map(|e| e.binds.clone())
            .ok_or(ENOENT)?;
        if queue_id == 0 {
            return Ok(default);
        }
        match self.queues.lock().by_id.get(&queue_id).ok_or(ENOENT)? {
            Queue::Bind(q) if q.vm().serial() == default.vm().serial() => Ok(q.clone()),
            // A queue of another class, or of another VM.
            _ => Err(EINVAL),
        }
    }

    /// `DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE`.
    pub(crate) fn exec_queue_create(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_exec_queue_create,
        file: &DrmFile,
    ) -> Result<u32> {
        exec::check_create(args)?;
        let vm = file.inner().vm(args.vm_id)?;
        let queue =
            if args.engine_class == uapi::drm_mirage_engine_class_DRM_MIRAGE_ENGINE_CLASS_VM_BIND {
                Queue::Bind(Arc::new(BindQueue::new(vm)?, GFP_KERNEL)?)
            } else {
                Queue::Exec(Arc::new(
                    ExecQueue::new(&dev.gpu, vm, dev.job_timeout)?,
                    GFP_KERNEL,
                )?)
            };
        let node = kernel::rbtree::RBTreeNodeReservation::new(GFP_KERNEL)?;
        let inner = file.inner();
        let mut queues = inner.queues.lock();
        if queues.by_id.iter().count() >= MAX_QUEUES {
            return Err(ENOSPC);
        }
        let q = &mut *queues;
        let id = free_id(&q.by_id, &mut q.next_id);
        queues.by_id.insert(node.into_node(id, queue));
        args.exec_queue_id = id;
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY`.
    pub(crate) fn exec_queue_destroy(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_exec_queue_destroy,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.extensions != 0 || args.pad != 0 || args.reserved != [0; 2] {
            return Err(EINVAL);
        }
        let queue = {
            let inner = file.inner();
            let mut queues = inner.queues.lock();
            queues.by_id.remove(&args.exec_queue_id).ok_or(ENOENT)?
        };
        // Outside the lock: the last reference waits for the queue's job on the device, or
        // cancels its binds.
        drop(queue);
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_EXEC`.
    pub(crate) fn exec(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_exec,
        file: &DrmFile,
    ) -> Result<u32> {
        exec::exec(args, file)
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
        const FAULT_MODE: u32 = uapi::DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE;
        if args.extensions != 0 || args.flags & !FAULT_MODE != 0 || args.reserved != [0; 2] {
            return Err(EINVAL);
        }
        let fault_mode = args.flags & FAULT_MODE != 0;
        // As xe: a device without page faults has no fault mode.
        if fault_mode
            && dev.info.features & uapi::drm_mirage_feature_DRM_MIRAGE_FEATURE_PAGE_FAULTS == 0
        {
            return Err(EINVAL);
        }
        let vm = Vm::new(
            dev,
            &dev.gpu,
            dev.info.va_bits,
            dev.info.pgsize_bitmap.into(),
            fault_mode,
        )?;
        if fault_mode {
            vm.enable_svm(dev)?;
        }
        let binds = Arc::new(BindQueue::new(vm.clone())?, GFP_KERNEL)?;
        let name = CString::try_from_fmt(fmt!("vm-{}", vm.serial()))?;
        // Allocated before the lock: nothing is allocated under it.
        let node = kernel::rbtree::RBTreeNodeReservation::new(GFP_KERNEL)?;
        let inner = file.inner();
        let mut vms = inner.vms.lock();
        if vms.count >= MAX_VMS {
            return Err(ENOSPC);
        }
        let v = &mut *vms;
        let id = free_id(&v.by_id, &mut v.next_id);
        let debug = VmDebug {
            vm: vm.clone(),
            id,
            pid: current!().tgid(),
        };
        // debugfs files are best effort: one that cannot be made is empty, not an error.
        let debugfs = KBox::pin_init(dev.gpu.debugfs().read_only_file(&name, debug), GFP_KERNEL)?;
        vms.by_id.insert(node.into_node(
            id,
            VmEntry {
                _debugfs: debugfs,
                binds,
                vm,
            },
        ));
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

    /// `DRM_IOCTL_MIRAGE_VM_GET_STATE`.
    pub(crate) fn vm_get_state(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_vm_get_state,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.extensions != 0 || args.reserved != [0; 2] {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(args.vm_id)?;
        args.state = if vm.is_usable() {
            uapi::drm_mirage_vm_state_DRM_MIRAGE_VM_STATE_USABLE
        } else {
            uapi::drm_mirage_vm_state_DRM_MIRAGE_VM_STATE_UNUSABLE
        };
        Ok(0)
    }

    /// `DRM_IOCTL_MIRAGE_MADVISE`.
    pub(crate) fn madvise(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_madvise,
        file: &DrmFile,
    ) -> Result<u32> {
        madvise::madvise(args, file)
    }

    /// `DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS`.
    pub(crate) fn vm_query_mem_range_attrs(
        _dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_vm_query_mem_range_attr,
        file: &DrmFile,
    ) -> Result<u32> {
        madvise::query(args, file)
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
