//! Userspace access to the mirage DRM driver: finding its render node,
//! typed wrappers for each ioctl of `include/uapi/drm/mirage_drm.h`, BO
//! mappings and a command-buffer builder ([`cmd`]).
//!
//! Each ioctl has a typed wrapper and a `_raw` one that passes a
//! caller-built argument unchanged, for tests of the driver's checks.

pub mod cmd;
pub mod uapi;

// build.rs's header parser, here for its unit tests.
#[cfg(test)]
#[path = "../build/uapi_header.rs"]
mod uapi_header;

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use uapi::*;

/// One VM_BIND operation; see its constructors.
pub type BindOp = DrmMirageVmBindOp;

/// One in- or out-fence of VM_BIND or EXEC; see its constructors.
pub type Sync = DrmMirageSync;

/// An open mirage render node.
pub struct Device {
    file: File,
    path: PathBuf,
}

/// One `DRM_IOCTL_MIRAGE_MADVISE` attribute and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Madvise {
    PreferredLoc {
        devmem_fd: u32,
        migration_policy: u16,
    },
    Atomic(u32),
    Pat(u32),
}

/// Name, version and description the DRM driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverVersion {
    pub name: String,
    pub desc: String,
    pub major: i32,
    pub minor: i32,
    pub patchlevel: i32,
}

/// Issues `ioctl(fd, req, arg)`, retrying on EINTR/EAGAIN as libdrm does.
///
/// # Safety
///
/// `arg` must point to the argument type `req` encodes.
pub unsafe fn ioctl<T>(fd: &File, req: u64, arg: *mut T) -> io::Result<()> {
    loop {
        // SAFETY: the caller guarantees `arg` matches `req`.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(e);
        }
    }
}

impl Device {
    /// Opens `path` and checks that the mirage driver is behind it.
    pub fn open_path(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let dev = Device {
            file,
            path: path.to_path_buf(),
        };
        if dev.version()?.name != "mirage" {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a mirage device",
            ));
        }
        Ok(dev)
    }

    /// Opens the first render node driven by mirage.
    pub fn open() -> io::Result<Device> {
        let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
            })
            .collect();
        nodes.sort();
        nodes
            .iter()
            .find_map(|p| Device::open_path(p).ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no mirage render node in /dev/dri")
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn version(&self) -> io::Result<DriverVersion> {
        let mut name = [0u8; 64];
        let mut desc = [0u8; 128];
        let mut date = [0u8; 64];
        let mut v = DrmVersion {
            version_major: 0,
            version_minor: 0,
            version_patchlevel: 0,
            name_len: name.len(),
            name: name.as_mut_ptr(),
            date_len: date.len(),
            date: date.as_mut_ptr(),
            desc_len: desc.len(),
            desc: desc.as_mut_ptr(),
        };
        // SAFETY: `v` is a `drm_version` whose buffers outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_VERSION, &mut v)? };
        let s = |b: &[u8], n: usize| String::from_utf8_lossy(&b[..n.min(b.len())]).into_owned();
        Ok(DriverVersion {
            name: s(&name, v.name_len),
            desc: s(&desc, v.desc_len),
            major: v.version_major,
            minor: v.version_minor,
            patchlevel: v.version_patchlevel,
        })
    }

    /// `DRM_IOCTL_MIRAGE_GET_PARAM` with a raw argument, for tests of validation.
    pub fn get_param_raw(&self, args: &mut DrmMirageGetParam) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_GET_PARAM, args) }
    }

    /// Creates a syncobj (`DRM_SYNCOBJ_CREATE_SIGNALED` starts it signalled).
    pub fn syncobj_create(&self, flags: u32) -> io::Result<u32> {
        let mut a = DrmSyncobjCreate { handle: 0, flags };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_CREATE, &mut a)? };
        Ok(a.handle)
    }

    pub fn syncobj_destroy(&self, handle: u32) -> io::Result<()> {
        let mut a = DrmSyncobjDestroy { handle, pad: 0 };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_DESTROY, &mut a) }
    }

    /// Signals point `point` of `handle`'s timeline from the CPU (0: a binary syncobj).
    pub fn syncobj_timeline_signal(&self, handle: u32, point: u64) -> io::Result<()> {
        let (handles, points) = ([handle], [point]);
        let mut a = DrmSyncobjTimelineArray {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL, &mut a) }
    }

    /// The last signalled point of `handle`'s timeline.
    pub fn syncobj_query(&self, handle: u32) -> io::Result<u64> {
        let handles = [handle];
        let mut points = [0u64];
        let mut a = DrmSyncobjTimelineArray {
            handles: handles.as_ptr() as u64,
            points: points.as_mut_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_QUERY, &mut a)? };
        Ok(points[0])
    }

    /// Waits until point `point` of `handle` signals or the absolute CLOCK_MONOTONIC time
    /// `deadline_ns` passes (0 polls): `ETIME` then. A point with no fence yet is waited for
    /// (WAIT_FOR_SUBMIT), as a job's out-syncobj would be.
    pub fn syncobj_wait(&self, handle: u32, point: u64, deadline_ns: i64) -> io::Result<()> {
        let (handles, points) = ([handle], [point]);
        let mut a = DrmSyncobjTimelineWait {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            timeout_nsec: deadline_ns,
            count_handles: 1,
            flags: DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL | DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
            ..Default::default()
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, &mut a) }
    }

    /// Resets a binary syncobj to unsignalled (it holds no fence).
    pub fn syncobj_reset(&self, handle: u32) -> io::Result<()> {
        let handles = [handle];
        let mut a = DrmSyncobjArray {
            handles: handles.as_ptr() as u64,
            count_handles: 1,
            pad: 0,
        };
        // SAFETY: `a` is the argument type of the request; its array outlives the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_RESET, &mut a) }
    }

    /// The fence of binary syncobj `handle` as a new sync_file: it outlives
    /// the syncobj and the file, and other files and processes can wait on
    /// it. A syncobj without a fence fails with `EINVAL`.
    pub fn syncobj_export_sync_file(&self, handle: u32) -> io::Result<OwnedFd> {
        let mut a = DrmSyncobjHandle {
            handle,
            flags: DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
            fd: -1,
            ..Default::default()
        };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, &mut a)? };
        // SAFETY: on success the kernel installed `a.fd` as a new descriptor
        // for us, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(a.fd) })
    }

    /// Replaces the fence of binary syncobj `handle` with the one of
    /// sync_file `fd`, which may come from another file or device.
    pub fn syncobj_import_sync_file(&self, handle: u32, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut a = DrmSyncobjHandle {
            handle,
            flags: DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
            fd: fd.as_raw_fd(),
            ..Default::default()
        };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, &mut a) }
    }

    /// Closes a GEM handle (`DRM_IOCTL_GEM_CLOSE`).
    pub fn gem_close(&self, handle: u32) -> io::Result<()> {
        let mut a = DrmGemClose { handle, pad: 0 };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_GEM_CLOSE, &mut a) }
    }

    /// `DRM_IOCTL_PRIME_HANDLE_TO_FD` with a raw argument.
    pub fn prime_handle_to_fd_raw(&self, args: &mut DrmPrimeHandle) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_PRIME_HANDLE_TO_FD, args) }
    }

    /// Exports BO `handle` as a dma-buf (`DRM_CLOEXEC`, `DRM_RDWR` `flags`).
    /// A BO already exported gives its existing dma-buf, whatever `flags`.
    pub fn prime_handle_to_fd(&self, handle: u32, flags: u32) -> io::Result<OwnedFd> {
        let mut a = DrmPrimeHandle {
            handle,
            flags,
            fd: -1,
        };
        self.prime_handle_to_fd_raw(&mut a)?;
        // SAFETY: on success the kernel installed `a.fd` as a new descriptor
        // for us, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(a.fd) })
    }

    /// `DRM_IOCTL_PRIME_FD_TO_HANDLE` with a raw argument.
    pub fn prime_fd_to_handle_raw(&self, args: &mut DrmPrimeHandle) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_PRIME_FD_TO_HANDLE, args) }
    }

    /// The handle in this file of the BO behind dma-buf `fd`: the file's
    /// existing handle of that BO if it has one (GEM handles are not
    /// counted: closing it closes that one), else a new handle.
    pub fn prime_fd_to_handle(&self, fd: BorrowedFd<'_>) -> io::Result<u32> {
        let mut a = DrmPrimeHandle {
            fd: fd.as_raw_fd(),
            ..Default::default()
        };
        self.prime_fd_to_handle_raw(&mut a)?;
        Ok(a.handle)
    }

    /// `DRM_IOCTL_MIRAGE_GEM_CREATE` with a raw argument.
    pub fn gem_create_raw(&self, args: &mut DrmMirageGemCreate) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_GEM_CREATE, args) }
    }

    /// Creates a BO of `size` bytes (`DRM_MIRAGE_GEM_CREATE_FLAG_*` `flags`),
    /// private to VM `vm_id` unless it is 0, and returns its handle. See
    /// [`Bo`] for one that closes itself.
    pub fn gem_create(&self, size: u64, flags: u32, vm_id: u32) -> io::Result<u32> {
        let mut a = DrmMirageGemCreate {
            size,
            flags,
            vm_id,
            ..Default::default()
        };
        self.gem_create_raw(&mut a)?;
        Ok(a.handle)
    }

    /// `DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET` with a raw argument.
    pub fn gem_mmap_offset_raw(&self, args: &mut DrmMirageGemMmapOffset) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET, args) }
    }

    /// The offset to mmap BO `handle` at through this file.
    pub fn gem_mmap_offset(&self, handle: u32) -> io::Result<u64> {
        let mut a = DrmMirageGemMmapOffset {
            handle,
            ..Default::default()
        };
        self.gem_mmap_offset_raw(&mut a)?;
        Ok(a.offset)
    }

    /// Maps the first `len` bytes of BO `handle`, shared and read-write.
    /// The mapping keeps the BO alive after its handle is closed.
    pub fn mmap(&self, handle: u32, len: usize) -> io::Result<Mapping> {
        let offset = self.gem_mmap_offset(handle)?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| invalid_input("mmap offset out of off_t's range"))?;
        let len = NonZeroUsize::new(len).ok_or_else(|| invalid_input("empty mapping"))?;
        use nix::sys::mman::{MapFlags, ProtFlags};
        // SAFETY: the kernel picks the address (no hint), so the new mapping
        // replaces nothing and aliases no Rust object.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &self.file,
                offset,
            )?
        };
        // INVARIANT: `ptr` is a new mapping of `len` bytes that only the
        // `Mapping` unmaps.
        Ok(Mapping {
            ptr: ptr.cast(),
            len: len.get(),
        })
    }

    /// `DRM_IOCTL_MIRAGE_VM_CREATE` with a raw argument.
    pub fn vm_create_raw(&self, args: &mut DrmMirageVmCreate) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_VM_CREATE, args) }
    }

    /// Creates a VM and returns its id.
    pub fn vm_create(&self, flags: u32) -> io::Result<u32> {
        let mut a = DrmMirageVmCreate {
            flags,
            ..Default::default()
        };
        self.vm_create_raw(&mut a)?;
        Ok(a.vm_id)
    }

    /// `DRM_IOCTL_MIRAGE_VM_DESTROY` with a raw argument.
    pub fn vm_destroy_raw(&self, args: &mut DrmMirageVmDestroy) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_VM_DESTROY, args) }
    }

    pub fn vm_destroy(&self, vm_id: u32) -> io::Result<()> {
        self.vm_destroy_raw(&mut DrmMirageVmDestroy {
            vm_id,
            ..Default::default()
        })
    }

    /// `DRM_IOCTL_MIRAGE_VM_GET_STATE` with a raw argument.
    pub fn vm_get_state_raw(&self, args: &mut DrmMirageVmGetState) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_VM_GET_STATE, args) }
    }

    /// The VM's `DRM_MIRAGE_VM_STATE_*`.
    pub fn vm_get_state(&self, vm_id: u32) -> io::Result<u32> {
        let mut a = DrmMirageVmGetState {
            vm_id,
            ..Default::default()
        };
        self.vm_get_state_raw(&mut a)?;
        Ok(a.state)
    }

    /// `DRM_IOCTL_MIRAGE_MADVISE` with a raw argument.
    pub fn madvise_raw(&self, args: &mut DrmMirageMadvise) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request, which has no
        // pointers.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_MADVISE, args) }
    }

    /// Gives the CPU-address mirrors in `[start, start + range)` of `vm_id`
    /// the attribute `advice`.
    pub fn madvise(&self, vm_id: u32, start: u64, range: u64, advice: Madvise) -> io::Result<()> {
        let (type_, attr) = match advice {
            Madvise::PreferredLoc {
                devmem_fd,
                migration_policy,
            } => (
                DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC,
                DrmMirageMadviseAttr::preferred_mem_loc(DrmMirageMadvisePreferredLoc {
                    devmem_fd,
                    migration_policy,
                    ..Default::default()
                }),
            ),
            Madvise::Atomic(val) => (
                DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC,
                DrmMirageMadviseAttr::atomic(DrmMirageMadviseValue {
                    val,
                    ..Default::default()
                }),
            ),
            Madvise::Pat(val) => (
                DRM_MIRAGE_MEM_RANGE_ATTR_PAT,
                DrmMirageMadviseAttr::pat_index(DrmMirageMadviseValue {
                    val,
                    ..Default::default()
                }),
            ),
        };
        self.madvise_raw(&mut DrmMirageMadvise {
            vm_id,
            start,
            range,
            type_,
            attr,
            ..Default::default()
        })
    }

    /// `DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS` with a raw argument.
    ///
    /// # Safety
    ///
    /// Unless `args.num_mem_ranges` is 0, `args.vector_of_mem_attr` must be
    /// null or point to `args.num_mem_ranges` writable entries of
    /// `args.sizeof_mem_range_attr` bytes that nothing else uses: the
    /// kernel writes them.
    pub unsafe fn vm_query_mem_range_attrs_raw(
        &self,
        args: &mut DrmMirageVmQueryMemRangeAttr,
    ) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request; the caller
        // vouches for the memory it points to.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS, args) }
    }

    /// The attributes of the CPU-address mirrors overlapping
    /// `[start, start + range)` of `vm_id`, by xe's two calls, started
    /// again if the mirrors changed between them (`ENOSPC`).
    pub fn mem_range_attrs(
        &self,
        vm_id: u32,
        start: u64,
        range: u64,
    ) -> io::Result<Vec<DrmMirageMemRangeAttr>> {
        loop {
            let mut a = DrmMirageVmQueryMemRangeAttr {
                vm_id,
                start,
                range,
                ..Default::default()
            };
            // SAFETY: a counting call: the kernel writes no entry.
            unsafe { self.vm_query_mem_range_attrs_raw(&mut a)? };
            if a.num_mem_ranges == 0 {
                return Ok(Vec::new());
            }
            let mut v = vec![DrmMirageMemRangeAttr::default(); a.num_mem_ranges as usize];
            a.sizeof_mem_range_attr = size_of::<DrmMirageMemRangeAttr>() as u64;
            a.vector_of_mem_attr = v.as_mut_ptr() as u64;
            // SAFETY: `v` has `num_mem_ranges` entries of the size given,
            // and lives across the call.
            match unsafe { self.vm_query_mem_range_attrs_raw(&mut a) } {
                Ok(()) => {
                    v.truncate(a.num_mem_ranges as usize);
                    return Ok(v);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `DRM_IOCTL_MIRAGE_VM_BIND` with a raw argument. The kernel only reads
    /// through its pointers, so any values are safe to send.
    pub fn vm_bind_raw(&self, args: &mut DrmMirageVmBind) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_VM_BIND, args) }
    }

    /// Runs `ops` on VM `vm_id` after the wait entries of `syncs`, then
    /// signals the signal entries. See [`vm_bind_args`].
    pub fn vm_bind(
        &self,
        vm_id: u32,
        exec_queue_id: u32,
        ops: &[BindOp],
        syncs: &[Sync],
    ) -> io::Result<()> {
        // The pointers in `a` point into `ops` and `syncs`, which outlive
        // the call.
        let mut a = vm_bind_args(vm_id, exec_queue_id, ops, syncs)?;
        self.vm_bind_raw(&mut a)
    }

    /// `DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE` with a raw argument.
    pub fn exec_queue_create_raw(&self, args: &mut DrmMirageExecQueueCreate) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE, args) }
    }

    /// Creates an exec queue in VM `vm_id` (`DRM_MIRAGE_ENGINE_CLASS_*`
    /// `class`, `DRM_MIRAGE_EXEC_QUEUE_PRIORITY_*` `priority`) and returns
    /// its id.
    pub fn exec_queue_create(&self, vm_id: u32, class: u32, priority: u32) -> io::Result<u32> {
        let mut a = DrmMirageExecQueueCreate {
            vm_id,
            engine_class: class,
            priority,
            ..Default::default()
        };
        self.exec_queue_create_raw(&mut a)?;
        Ok(a.exec_queue_id)
    }

    /// `DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY` with a raw argument.
    pub fn exec_queue_destroy_raw(&self, args: &mut DrmMirageExecQueueDestroy) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY, args) }
    }

    pub fn exec_queue_destroy(&self, exec_queue_id: u32) -> io::Result<()> {
        self.exec_queue_destroy_raw(&mut DrmMirageExecQueueDestroy {
            exec_queue_id,
            ..Default::default()
        })
    }

    /// `DRM_IOCTL_MIRAGE_EXEC` with a raw argument. The kernel only reads
    /// through its pointer, so any values are safe to send.
    pub fn exec_raw(&self, args: &mut DrmMirageExec) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_EXEC, args) }
    }

    /// Submits the `length`-byte command buffer at GPU address `address`
    /// to exec queue `exec_queue_id`, with the fences of `syncs`.
    pub fn exec(
        &self,
        exec_queue_id: u32,
        address: u64,
        length: u64,
        syncs: &[Sync],
    ) -> io::Result<()> {
        let (syncs, num_syncs) = array_arg(syncs)?;
        // `syncs` points into the caller's slice, which outlives the call.
        self.exec_raw(&mut DrmMirageExec {
            exec_queue_id,
            num_syncs,
            syncs,
            address,
            length,
            ..Default::default()
        })
    }

    pub fn get_param(&self, param: u32) -> io::Result<u64> {
        let mut a = DrmMirageGetParam {
            param,
            ..Default::default()
        };
        self.get_param_raw(&mut a)?;
        Ok(a.value)
    }
}

fn invalid_input(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// A user pointer to `s` and its length, as ioctl arguments take them; an
/// empty slice is a null pointer.
fn array_arg<T>(s: &[T]) -> io::Result<(u64, u32)> {
    let len = u32::try_from(s.len()).map_err(|_| invalid_input("more than 2^32 - 1 entries"))?;
    let ptr = if s.is_empty() { 0 } else { s.as_ptr() as u64 };
    Ok((ptr, len))
}

/// The argument of `DRM_IOCTL_MIRAGE_VM_BIND` for `ops` and `syncs`: one op
/// goes inline in `bind`, more through `vector_of_binds`. Its pointers
/// point into `ops` and `syncs`: the argument is good while they live.
pub fn vm_bind_args(
    vm_id: u32,
    exec_queue_id: u32,
    ops: &[BindOp],
    syncs: &[Sync],
) -> io::Result<DrmMirageVmBind> {
    let (vector, num_binds) = array_arg(ops)?;
    let (syncs, num_syncs) = array_arg(syncs)?;
    Ok(DrmMirageVmBind {
        vm_id,
        exec_queue_id,
        num_binds,
        ops: match ops {
            [op] => DrmMirageVmBindOps::inline(*op),
            _ => DrmMirageVmBindOps::vector(vector),
        },
        num_syncs,
        syncs,
        ..Default::default()
    })
}

impl DrmMirageVmBindOp {
    /// Maps `[obj_offset, obj_offset + range)` of BO `obj` at `addr`,
    /// write-back cacheable.
    pub fn map(obj: u32, obj_offset: u64, addr: u64, range: u64) -> Self {
        Self {
            obj,
            obj_offset,
            addr,
            range,
            op: DRM_MIRAGE_VM_BIND_OP_MAP,
            ..Default::default()
        }
    }

    /// Unmaps `[addr, addr + range)`.
    pub fn unmap(addr: u64, range: u64) -> Self {
        Self {
            addr,
            range,
            op: DRM_MIRAGE_VM_BIND_OP_UNMAP,
            ..Default::default()
        }
    }

    /// Maps `[userptr, userptr + range)` of this process's memory at `addr`,
    /// write-back cacheable.
    pub fn map_userptr(userptr: u64, addr: u64, range: u64) -> Self {
        Self {
            obj_offset: userptr,
            addr,
            range,
            op: DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR,
            ..Default::default()
        }
    }

    /// Makes `[addr, addr + range)` a mirror of the same CPU addresses, filled in on GPU
    /// fault (`DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR`).
    pub fn map_mirror(addr: u64, range: u64) -> Self {
        Self {
            addr,
            range,
            op: DRM_MIRAGE_VM_BIND_OP_MAP,
            flags: DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR,
            ..Default::default()
        }
    }

    /// Unmaps every mapping of BO `obj`.
    pub fn unmap_all(obj: u32) -> Self {
        Self {
            obj,
            op: DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL,
            ..Default::default()
        }
    }

    /// The op with `DRM_MIRAGE_VM_BIND_FLAG_*` `flags`.
    pub fn with_flags(self, flags: u32) -> Self {
        Self { flags, ..self }
    }

    /// The op with `DRM_MIRAGE_PAT_*` `pat_index`.
    pub fn with_pat(self, pat_index: u16) -> Self {
        Self { pat_index, ..self }
    }
}

impl DrmMirageSync {
    fn new(type_: u32, flags: u32, handle: u32, timeline_value: u64) -> Self {
        Self {
            type_,
            flags,
            handle,
            timeline_value,
            ..Default::default()
        }
    }

    /// Waits for binary syncobj `handle`.
    pub fn wait(handle: u32) -> Self {
        Self::new(DRM_MIRAGE_SYNC_TYPE_SYNCOBJ, 0, handle, 0)
    }

    /// Gives the operation's fence to binary syncobj `handle`.
    pub fn signal(handle: u32) -> Self {
        Self::new(
            DRM_MIRAGE_SYNC_TYPE_SYNCOBJ,
            DRM_MIRAGE_SYNC_FLAG_SIGNAL,
            handle,
            0,
        )
    }

    /// Waits for point `point` of timeline syncobj `handle`.
    pub fn wait_point(handle: u32, point: u64) -> Self {
        Self::new(DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ, 0, handle, point)
    }

    /// Adds the operation's fence to timeline syncobj `handle` as `point`.
    pub fn signal_point(handle: u32, point: u64) -> Self {
        Self::new(
            DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ,
            DRM_MIRAGE_SYNC_FLAG_SIGNAL,
            handle,
            point,
        )
    }
}

/// A BO whose handle is closed on drop.
pub struct Bo<'d> {
    dev: &'d Device,
    handle: u32,
    size: u64,
}

impl<'d> Bo<'d> {
    /// Creates a BO, as [`Device::gem_create`] does.
    pub fn new(dev: &'d Device, size: u64, flags: u32, vm_id: u32) -> io::Result<Self> {
        let handle = dev.gem_create(size, flags, vm_id)?;
        Ok(Bo { dev, handle, size })
    }

    pub fn handle(&self) -> u32 {
        self.handle
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Maps the whole BO.
    pub fn mmap(&self) -> io::Result<Mapping> {
        let len = usize::try_from(self.size).map_err(|_| invalid_input("BO larger than usize"))?;
        self.dev.mmap(self.handle, len)
    }

    /// The handle, which the caller must now close.
    pub fn into_handle(self) -> u32 {
        let handle = self.handle;
        std::mem::forget(self);
        handle
    }
}

impl Drop for Bo<'_> {
    fn drop(&mut self) {
        // Nothing to do about a failure here; the file's close frees it anyway.
        let _ = self.dev.gem_close(self.handle);
    }
}

/// A shared mapping of a BO, unmapped on drop.
///
/// The GPU may write the memory at any time, so there are no references
/// into it: accesses copy, and the word accessors are single volatile
/// accesses, which the GPU sees whole.
///
/// # Invariants
///
/// `ptr` is the start of a live, page-aligned, readable and writable
/// mapping of `len` (nonzero) bytes that only this value unmaps.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned, not tied to the thread that made it.
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: an empty mapping cannot be made.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the mapping, for accesses the methods do not offer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// A pointer to `[offset, offset + len)`, which must lie inside the
    /// mapping with `offset` a multiple of `align`.
    fn at(&self, offset: usize, len: usize, align: usize) -> io::Result<*mut u8> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| invalid_input("offset overflows"))?;
        if end > self.len {
            return Err(invalid_input("access past the end of the mapping"));
        }
        if !offset.is_multiple_of(align) {
            return Err(invalid_input("misaligned access"));
        }
        // SAFETY: `offset` <= `self.len`, so the result is inside the
        // mapping or one past its end.
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        let src = self.at(offset, buf.len(), 1)?;
        // SAFETY: `at()` checked that the source lies inside the mapping,
        // which is readable (type invariant) and cannot overlap `buf`, a
        // Rust object.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        let dst = self.at(offset, data.len(), 1)?;
        // SAFETY: `at()` checked that the destination lies inside the
        // mapping, which is writable (type invariant) and cannot overlap
        // `data`, a Rust object.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// The whole mapping's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        // The whole mapping is always in range.
        let _ = self.read(0, &mut v);
        v
    }

    /// The naturally aligned u32 at `offset`.
    pub fn read_u32(&self, offset: usize) -> io::Result<u32> {
        let p = self.at(offset, 4, 4)?;
        // SAFETY: `at()` checked that the u32 lies inside the readable
        // mapping and is aligned (the mapping is page-aligned).
        Ok(unsafe { p.cast::<u32>().read_volatile() })
    }

    /// The naturally aligned u64 at `offset`.
    pub fn read_u64(&self, offset: usize) -> io::Result<u64> {
        let p = self.at(offset, 8, 8)?;
        // SAFETY: as in `read_u32()`.
        Ok(unsafe { p.cast::<u64>().read_volatile() })
    }

    /// Stores `value` at the naturally aligned `offset`.
    pub fn write_u32(&self, offset: usize, value: u32) -> io::Result<()> {
        let p = self.at(offset, 4, 4)?;
        // SAFETY: `at()` checked that the u32 lies inside the writable
        // mapping and is aligned (the mapping is page-aligned).
        unsafe { p.cast::<u32>().write_volatile(value) };
        Ok(())
    }

    /// Stores `value` at the naturally aligned `offset`.
    pub fn write_u64(&self, offset: usize, value: u64) -> io::Result<()> {
        let p = self.at(offset, 8, 8)?;
        // SAFETY: as in `write_u32()`.
        unsafe { p.cast::<u64>().write_volatile(value) };
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `ptr` and `len` describe a live
        // mapping that nothing else unmaps; no reference into it exists.
        // A failure would mean the invariant is broken; nothing to do then.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// What `mirage info` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub driver: DriverVersion,
    pub device_id: u32,
    pub hw_version: u32,
    pub vram_size: u64,
    pub va_bits: u32,
    pub page_sizes: u64,
    pub features: u32,
}

impl Info {
    pub fn query(dev: &Device) -> io::Result<Info> {
        Ok(Info {
            driver: dev.version()?,
            device_id: dev.get_param(DRM_MIRAGE_PARAM_DEVICE_ID)? as u32,
            hw_version: dev.get_param(DRM_MIRAGE_PARAM_HW_VERSION)? as u32,
            vram_size: dev.get_param(DRM_MIRAGE_PARAM_VRAM_SIZE)?,
            va_bits: dev.get_param(DRM_MIRAGE_PARAM_VA_BITS)? as u32,
            page_sizes: dev.get_param(DRM_MIRAGE_PARAM_PAGE_SIZES)?,
            features: dev.get_param(DRM_MIRAGE_PARAM_FEATURES)? as u32,
        })
    }
}

/// Formats a `DRM_MIRAGE_FEATURE_*` mask as "vram page-faults sysmem-atomics"; unknown bits
/// in hex.
pub fn features_str(mask: u32) -> String {
    let names = [
        (DRM_MIRAGE_FEATURE_VRAM, "vram"),
        (DRM_MIRAGE_FEATURE_PAGE_FAULTS, "page-faults"),
        (DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS, "sysmem-atomics"),
    ];
    let known = names.iter().fold(0, |m, (bit, _)| m | bit);
    let mut words: Vec<String> = names
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect();
    if mask & !known != 0 {
        words.push(format!("{:#x}", mask & !known));
    }
    if words.is_empty() {
        words.push("none".into());
    }
    words.join(" ")
}

/// Formats a page-size bitmap as "4K 2M 1G".
pub fn page_sizes_str(bitmap: u64) -> String {
    (0..64)
        .filter(|b| bitmap & (1 << b) != 0)
        .map(|b| match b {
            30.. => format!("{}G", 1u64 << (b - 30)),
            20.. => format!("{}M", 1u64 << (b - 20)),
            10.. => format!("{}K", 1u64 << (b - 10)),
            _ => format!("{}", 1u64 << b),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.driver;
        writeln!(
            f,
            "driver:      {} {}.{}.{} ({})",
            d.name, d.major, d.minor, d.patchlevel, d.desc
        )?;
        writeln!(
            f,
            "device:      {:04x}:{:04x}",
            self.device_id >> 16,
            self.device_id & 0xffff
        )?;
        writeln!(
            f,
            "hw version:  {}.{}",
            self.hw_version >> 16,
            self.hw_version & 0xffff
        )?;
        writeln!(f, "vram:        {} MiB", self.vram_size >> 20)?;
        writeln!(f, "va bits:     {}", self.va_bits)?;
        writeln!(f, "page sizes:  {}", page_sizes_str(self.page_sizes))?;
        write!(f, "features:    {}", features_str(self.features))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bind_op_goes_inline() {
        let op =
            BindOp::map(3, 0x1000, 0x10_0000, 0x2000).with_flags(DRM_MIRAGE_VM_BIND_FLAG_READONLY);
        let syncs = [Sync::wait(7), Sync::signal_point(8, 2)];
        let a = vm_bind_args(5, 0, &[op], &syncs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.vm_id, a.exec_queue_id, a.num_binds), (5, 0, 1));
        assert_eq!(*a.ops.bind(), op);
        assert_eq!((a.num_syncs, a.syncs), (2, syncs.as_ptr() as u64));
        assert_eq!((a.pad, a.pad2, a.extensions, a.reserved), (0, 0, 0, [0; 2]));
    }

    #[test]
    fn more_bind_ops_go_by_pointer() {
        let ops = [BindOp::unmap(0x10_0000, 0x1000), BindOp::unmap_all(4)];
        let a = vm_bind_args(1, 2, &ops, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.num_binds, a.exec_queue_id), (2, 2));
        assert_eq!(a.ops.vector_of_binds(), ops.as_ptr() as u64);
        // The rest of the union is zero, not left over from an op.
        let mut rest = *a.ops.bind();
        rest.extensions = 0;
        assert_eq!(rest, BindOp::default());
        assert_eq!((a.num_syncs, a.syncs), (0, 0));
        let none = vm_bind_args(1, 0, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((none.num_binds, none.ops.vector_of_binds()), (0, 0));
    }

    #[test]
    fn bind_ops_and_syncs_encode_their_fields() {
        let op = BindOp::map(3, 0x1000, 0x20_0000, 0x4000).with_pat(DRM_MIRAGE_PAT_UC);
        assert_eq!(
            (
                op.op,
                op.obj,
                op.obj_offset,
                op.addr,
                op.range,
                op.pat_index
            ),
            (
                DRM_MIRAGE_VM_BIND_OP_MAP,
                3,
                0x1000,
                0x20_0000,
                0x4000,
                DRM_MIRAGE_PAT_UC
            )
        );
        let u = BindOp::unmap(0x1000, 0x2000);
        assert_eq!(
            (u.op, u.obj, u.addr, u.range),
            (DRM_MIRAGE_VM_BIND_OP_UNMAP, 0, 0x1000, 0x2000)
        );
        let up = BindOp::map_userptr(0x7000_0000, 0x1000, 0x2000);
        assert_eq!(
            (up.op, up.obj, up.obj_offset, up.addr, up.range),
            (
                DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR,
                0,
                0x7000_0000,
                0x1000,
                0x2000
            )
        );
        let all = BindOp::unmap_all(9);
        assert_eq!(
            (all.op, all.obj, all.range),
            (DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL, 9, 0)
        );
        let t = |s: Sync| (s.type_, s.flags, s.handle, s.timeline_value);
        let (bin, tl, sig) = (
            DRM_MIRAGE_SYNC_TYPE_SYNCOBJ,
            DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ,
            DRM_MIRAGE_SYNC_FLAG_SIGNAL,
        );
        assert_eq!(t(Sync::wait(1)), (bin, 0, 1, 0));
        assert_eq!(t(Sync::signal(2)), (bin, sig, 2, 0));
        assert_eq!(t(Sync::wait_point(3, 4)), (tl, 0, 3, 4));
        assert_eq!(t(Sync::signal_point(5, 6)), (tl, sig, 5, 6));
    }

    /// An anonymous mapping stands in for a BO's: the accessors do not
    /// care what is mapped.
    fn anonymous(len: usize) -> Mapping {
        use nix::sys::mman::{MapFlags, ProtFlags};
        let n = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a new mapping at an address the kernel picks.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .unwrap_or_else(|e| panic!("mmap: {e}"));
        Mapping {
            ptr: ptr.cast(),
            len: n.get(),
        }
    }

    #[test]
    fn mapping_accesses_stay_inside_and_aligned() {
        let m = anonymous(8192);
        assert_eq!(m.len(), 8192);
        m.write_u64(8184, 0x1122_3344_5566_7788)
            .unwrap_or_else(|e| panic!("{e}"));
        m.write_u32(16, 0xdead_beef)
            .unwrap_or_else(|e| panic!("{e}"));
        m.write(4000, b"mirage").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.read_u64(8184).ok(), Some(0x1122_3344_5566_7788));
        assert_eq!(m.read_u32(8188).ok(), Some(0x1122_3344));
        assert_eq!(m.read_u32(16).ok(), Some(0xdead_beef));
        let mut buf = [0u8; 6];
        m.read(4000, &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"mirage");
        assert_eq!(&m.to_vec()[4000..4006], b"mirage");

        let kind = |r: io::Result<()>| r.err().map(|e| e.kind());
        let bad = Some(io::ErrorKind::InvalidInput);
        assert_eq!(kind(m.write_u64(8192, 0)), bad);
        assert_eq!(kind(m.write_u64(8188, 0)), bad);
        assert_eq!(kind(m.write_u32(2, 0)), bad);
        assert_eq!(kind(m.read_u64(4).map(drop)), bad);
        assert_eq!(kind(m.write(8190, b"abc")), bad);
        assert_eq!(kind(m.read(usize::MAX, &mut buf)), bad);
        assert_eq!(kind(m.write(8192, b"")), None);
        // Nothing was written by the refused accesses.
        assert_eq!(m.read_u32(8188).ok(), Some(0x1122_3344));
        assert_eq!(m.read_u32(0).ok(), Some(0));
    }

    #[test]
    fn page_sizes_print_with_units() {
        assert_eq!(super::page_sizes_str(0x4020_1000), "4K 2M 1G");
        assert_eq!(super::page_sizes_str(0), "");
        assert_eq!(super::page_sizes_str(0x10), "16");
    }

    #[test]
    fn features_print_by_name() {
        assert_eq!(super::features_str(0x7), "vram page-faults sysmem-atomics");
        assert_eq!(super::features_str(0x2), "page-faults");
        assert_eq!(super::features_str(0), "none");
        assert_eq!(super::features_str(0x9), "vram 0x8");
    }
}
