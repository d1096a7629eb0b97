//! Mirror of `include/uapi/drm/mirage_drm.h` and the bits of `drm.h` used.
//!
//! The test at the bottom checks every size, offset and constant here
//! against a C compiler's view of the header (see `build.rs`). The header's
//! documentation is not repeated: it says what each field means.

use std::fmt;
use std::mem::size_of;

/// `DRM_IOW()`: a request the kernel only reads.
const fn drm_iow(nr: u64, size: usize) -> u64 {
    // The kernel's request is an unsigned int; `as u32` keeps it so where
    // nix's type is signed (musl), and `as u64` is what `crate::ioctl` takes.
    nix::request_code_write!(b'd', nr, size) as u32 as u64
}

/// `DRM_IOWR()`: a request the kernel reads and writes back.
const fn drm_iowr(nr: u64, size: usize) -> u64 {
    nix::request_code_readwrite!(b'd', nr, size) as u32 as u64
}

pub const DRM_COMMAND_BASE: u64 = 0x40;

pub const DRM_MIRAGE_GET_PARAM: u64 = 0x00;
pub const DRM_MIRAGE_GEM_CREATE: u64 = 0x01;
pub const DRM_MIRAGE_GEM_MMAP_OFFSET: u64 = 0x02;
pub const DRM_MIRAGE_VM_CREATE: u64 = 0x03;
pub const DRM_MIRAGE_VM_DESTROY: u64 = 0x04;
pub const DRM_MIRAGE_VM_BIND: u64 = 0x05;
pub const DRM_MIRAGE_EXEC_QUEUE_CREATE: u64 = 0x06;
pub const DRM_MIRAGE_EXEC_QUEUE_DESTROY: u64 = 0x07;
pub const DRM_MIRAGE_EXEC: u64 = 0x08;
pub const DRM_MIRAGE_VM_GET_STATE: u64 = 0x09;
pub const DRM_MIRAGE_MADVISE: u64 = 0x0a;
pub const DRM_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS: u64 = 0x0b;

pub const DRM_MIRAGE_PARAM_DEVICE_ID: u32 = 0;
pub const DRM_MIRAGE_PARAM_HW_VERSION: u32 = 1;
pub const DRM_MIRAGE_PARAM_VRAM_SIZE: u32 = 2;
pub const DRM_MIRAGE_PARAM_VA_BITS: u32 = 3;
pub const DRM_MIRAGE_PARAM_PAGE_SIZES: u32 = 4;
pub const DRM_MIRAGE_PARAM_FEATURES: u32 = 5;

pub const DRM_MIRAGE_FEATURE_VRAM: u32 = 1 << 0;
pub const DRM_MIRAGE_FEATURE_PAGE_FAULTS: u32 = 1 << 1;
pub const DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageGetParam {
    pub extensions: u64,
    pub param: u32,
    pub pad: u32,
    pub value: u64,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM: u32 = 1 << 0;
pub const DRM_MIRAGE_GEM_CREATE_FLAG_VRAM: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageGemCreate {
    pub extensions: u64,
    pub size: u64,
    pub flags: u32,
    pub vm_id: u32,
    pub handle: u32,
    pub pad: u32,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageGemMmapOffset {
    pub extensions: u64,
    pub handle: u32,
    pub flags: u32,
    pub offset: u64,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmCreate {
    pub extensions: u64,
    pub flags: u32,
    pub vm_id: u32,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmDestroy {
    pub extensions: u64,
    pub vm_id: u32,
    pub pad: u32,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE: u32 = 1 << 2;

pub const DRM_MIRAGE_PAT_WB: u16 = 0;
pub const DRM_MIRAGE_PAT_UC: u16 = 1;

pub const DRM_MIRAGE_VM_BIND_OP_MAP: u32 = 0x0;
pub const DRM_MIRAGE_VM_BIND_OP_UNMAP: u32 = 0x1;
pub const DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR: u32 = 0x2;
pub const DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL: u32 = 0x3;

pub const DRM_MIRAGE_VM_BIND_FLAG_READONLY: u32 = 1 << 0;
pub const DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR: u32 = 1 << 5;
pub const DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET: u32 = 1 << 6;
pub const DRM_MIRAGE_VM_BIND_FLAG_NOEXEC: u32 = 1 << 16;

/// `struct drm_mirage_vm_bind_op`.
///
/// The C struct's anonymous union is the single u64 `obj_offset`: its other
/// members, `userptr` (a MAP_USERPTR's CPU address) and
/// `cpu_addr_mirror_offset` (zero), share that u64 (the layout test checks they do).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmBindOp {
    pub extensions: u64,
    pub obj: u32,
    pub pat_index: u16,
    pub pad: u16,
    pub obj_offset: u64,
    pub range: u64,
    pub addr: u64,
    pub op: u32,
    pub flags: u32,
    pub prefetch_mem_region_instance: u32,
    pub pad2: u32,
    pub reserved: [u64; 3],
}

pub const DRM_MIRAGE_SYNC_TYPE_SYNCOBJ: u32 = 0x0;
pub const DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ: u32 = 0x1;

pub const DRM_MIRAGE_SYNC_FLAG_SIGNAL: u32 = 1 << 0;

/// `struct drm_mirage_sync`; `type_` is C's `type`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageSync {
    pub extensions: u64,
    pub type_: u32,
    pub flags: u32,
    pub handle: u32,
    pub pad: u32,
    pub timeline_value: u64,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_MAX_BIND_OPS: u32 = 1024;
pub const DRM_MIRAGE_MAX_SYNCS: u32 = 64;

/// The anonymous union of `struct drm_mirage_vm_bind`: the op itself when
/// `num_binds` is 1, else a user pointer to `num_binds` ops.
///
/// # Invariants
///
/// All its bytes are initialised: the constructors start from a whole
/// [`DrmMirageVmBindOp`], and writing `vector_of_binds` changes only the
/// first eight. That is what makes both accessors safe, and lets a caller
/// compare and print it as a whole.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DrmMirageVmBindOps {
    bind: DrmMirageVmBindOp,
    vector_of_binds: u64,
}

impl DrmMirageVmBindOps {
    /// The union holding `op` inline (`num_binds` == 1).
    pub fn inline(op: DrmMirageVmBindOp) -> Self {
        Self { bind: op }
    }

    /// The union holding the user pointer `ptr` (`num_binds` > 1); the
    /// bytes after it are zero.
    pub fn vector(ptr: u64) -> Self {
        let mut u = Self::default();
        u.vector_of_binds = ptr;
        u
    }

    /// The union's bytes as the inline op.
    pub fn bind(&self) -> &DrmMirageVmBindOp {
        // SAFETY: by the type invariant every byte is initialised, and any
        // bit pattern is a valid `DrmMirageVmBindOp` (integers only).
        unsafe { &self.bind }
    }

    /// The union's first eight bytes as the user pointer.
    pub fn vector_of_binds(&self) -> u64 {
        // SAFETY: by the type invariant the first eight bytes are
        // initialised, and any bit pattern is a valid u64.
        unsafe { self.vector_of_binds }
    }
}

impl Default for DrmMirageVmBindOps {
    fn default() -> Self {
        Self::inline(DrmMirageVmBindOp::default())
    }
}

impl PartialEq for DrmMirageVmBindOps {
    fn eq(&self, other: &Self) -> bool {
        // The op spans the whole union, so this compares every byte.
        self.bind() == other.bind()
    }
}

impl Eq for DrmMirageVmBindOps {}

impl fmt::Debug for DrmMirageVmBindOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmMirageVmBindOps")
            .field("bind", self.bind())
            .field(
                "vector_of_binds",
                &format_args!("{:#x}", self.vector_of_binds()),
            )
            .finish()
    }
}

/// `struct drm_mirage_vm_bind`; `ops` is its anonymous union.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmBind {
    pub extensions: u64,
    pub vm_id: u32,
    pub exec_queue_id: u32,
    pub pad: u32,
    pub num_binds: u32,
    pub ops: DrmMirageVmBindOps,
    pub pad2: u32,
    pub num_syncs: u32,
    pub syncs: u64,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_ENGINE_CLASS_COMPUTE: u32 = 0;
pub const DRM_MIRAGE_ENGINE_CLASS_VM_BIND: u32 = 1;

pub const DRM_MIRAGE_EXEC_QUEUE_PRIORITY_LOW: u32 = 0;
pub const DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL: u32 = 1;
pub const DRM_MIRAGE_EXEC_QUEUE_PRIORITY_HIGH: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageExecQueueCreate {
    pub extensions: u64,
    pub vm_id: u32,
    pub engine_class: u32,
    pub flags: u32,
    pub priority: u32,
    pub exec_queue_id: u32,
    pub pad: u32,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageExecQueueDestroy {
    pub extensions: u64,
    pub exec_queue_id: u32,
    pub pad: u32,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageExec {
    pub extensions: u64,
    pub exec_queue_id: u32,
    pub num_syncs: u32,
    pub syncs: u64,
    pub address: u64,
    pub length: u64,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_VM_STATE_USABLE: u32 = 0;
pub const DRM_MIRAGE_VM_STATE_UNUSABLE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmGetState {
    pub extensions: u64,
    pub vm_id: u32,
    pub state: u32,
    pub reserved: [u64; 2],
}

pub const DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC: u32 = 0;
pub const DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC: u32 = 1;
pub const DRM_MIRAGE_MEM_RANGE_ATTR_PAT: u32 = 2;
pub const DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE: u32 = 0;
/// `(-1)` in C; `devmem_fd` is a `__u32`, so it goes there as `u32::MAX`.
pub const DRM_MIRAGE_PREFERRED_LOC_DEFAULT_SYSTEM: i32 = -1;
pub const DRM_MIRAGE_MIGRATE_ALL_PAGES: u32 = 0;
pub const DRM_MIRAGE_MIGRATE_ONLY_SYSTEM_PAGES: u32 = 1;
pub const DRM_MIRAGE_ATOMIC_UNDEFINED: u32 = 0;
pub const DRM_MIRAGE_ATOMIC_DEVICE: u32 = 1;
pub const DRM_MIRAGE_ATOMIC_GLOBAL: u32 = 2;
pub const DRM_MIRAGE_ATOMIC_CPU: u32 = 3;

/// `preferred_mem_loc` of `struct drm_mirage_madvise`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMadvisePreferredLoc {
    pub devmem_fd: u32,
    pub migration_policy: u16,
    pub region_instance: u16,
    pub reserved: u64,
}

/// `atomic` and `pat_index` of `struct drm_mirage_madvise`, which have one
/// shape.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMadviseValue {
    pub val: u32,
    pub pad: u32,
    pub reserved: u64,
}

/// The anonymous union of `struct drm_mirage_madvise`: the attribute that
/// `type` names.
///
/// # Invariants
///
/// All its 16 bytes are initialised: every member is 16 bytes of integers,
/// and the constructors write a whole member. That is what makes the
/// accessors safe.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DrmMirageMadviseAttr {
    preferred_mem_loc: DrmMirageMadvisePreferredLoc,
    atomic: DrmMirageMadviseValue,
    pat_index: DrmMirageMadviseValue,
}

impl DrmMirageMadviseAttr {
    pub fn preferred_mem_loc(l: DrmMirageMadvisePreferredLoc) -> Self {
        Self {
            preferred_mem_loc: l,
        }
    }

    pub fn atomic(v: DrmMirageMadviseValue) -> Self {
        Self { atomic: v }
    }

    pub fn pat_index(v: DrmMirageMadviseValue) -> Self {
        Self { pat_index: v }
    }

    /// The union's bytes as `preferred_mem_loc`.
    pub fn as_preferred_mem_loc(&self) -> DrmMirageMadvisePreferredLoc {
        // SAFETY: by the type invariant every byte is initialised, and any
        // bit pattern is a valid value of this integers-only struct.
        unsafe { self.preferred_mem_loc }
    }

    /// The union's bytes as `atomic` or `pat_index`.
    pub fn as_value(&self) -> DrmMirageMadviseValue {
        // SAFETY: as above.
        unsafe { self.atomic }
    }
}

impl Default for DrmMirageMadviseAttr {
    fn default() -> Self {
        Self::atomic(DrmMirageMadviseValue::default())
    }
}

impl PartialEq for DrmMirageMadviseAttr {
    fn eq(&self, other: &Self) -> bool {
        // One member spans the whole union.
        self.as_value() == other.as_value()
    }
}

impl Eq for DrmMirageMadviseAttr {}

impl fmt::Debug for DrmMirageMadviseAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmMirageMadviseAttr")
            .field("preferred_mem_loc", &self.as_preferred_mem_loc())
            .field("value", &self.as_value())
            .finish()
    }
}

/// `struct drm_mirage_madvise`; `attr` is its anonymous union.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMadvise {
    pub extensions: u64,
    pub start: u64,
    pub range: u64,
    pub vm_id: u32,
    pub type_: u32,
    pub attr: DrmMirageMadviseAttr,
    pub reserved: [u64; 2],
}

/// `preferred_mem_loc` of `struct drm_mirage_mem_range_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMemRangeLoc {
    pub devmem_fd: u32,
    pub migration_policy: u32,
}

/// `atomic` and `pat_index` of `struct drm_mirage_mem_range_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMemRangeValue {
    pub val: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageMemRangeAttr {
    pub extensions: u64,
    pub start: u64,
    pub end: u64,
    pub preferred_mem_loc: DrmMirageMemRangeLoc,
    pub atomic: DrmMirageMemRangeValue,
    pub pat_index: DrmMirageMemRangeValue,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageVmQueryMemRangeAttr {
    pub extensions: u64,
    pub vm_id: u32,
    pub num_mem_ranges: u32,
    pub start: u64,
    pub range: u64,
    pub sizeof_mem_range_attr: u64,
    pub vector_of_mem_attr: u64,
    pub reserved: [u64; 2],
}

pub const DRM_IOCTL_MIRAGE_GET_PARAM: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_GET_PARAM,
    size_of::<DrmMirageGetParam>(),
);
pub const DRM_IOCTL_MIRAGE_GEM_CREATE: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_GEM_CREATE,
    size_of::<DrmMirageGemCreate>(),
);
pub const DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_GEM_MMAP_OFFSET,
    size_of::<DrmMirageGemMmapOffset>(),
);
pub const DRM_IOCTL_MIRAGE_VM_CREATE: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_VM_CREATE,
    size_of::<DrmMirageVmCreate>(),
);
pub const DRM_IOCTL_MIRAGE_VM_DESTROY: u64 = drm_iow(
    DRM_COMMAND_BASE + DRM_MIRAGE_VM_DESTROY,
    size_of::<DrmMirageVmDestroy>(),
);
pub const DRM_IOCTL_MIRAGE_VM_BIND: u64 = drm_iow(
    DRM_COMMAND_BASE + DRM_MIRAGE_VM_BIND,
    size_of::<DrmMirageVmBind>(),
);
pub const DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_EXEC_QUEUE_CREATE,
    size_of::<DrmMirageExecQueueCreate>(),
);
pub const DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY: u64 = drm_iow(
    DRM_COMMAND_BASE + DRM_MIRAGE_EXEC_QUEUE_DESTROY,
    size_of::<DrmMirageExecQueueDestroy>(),
);
pub const DRM_IOCTL_MIRAGE_EXEC: u64 = drm_iow(
    DRM_COMMAND_BASE + DRM_MIRAGE_EXEC,
    size_of::<DrmMirageExec>(),
);
pub const DRM_IOCTL_MIRAGE_VM_GET_STATE: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_VM_GET_STATE,
    size_of::<DrmMirageVmGetState>(),
);
pub const DRM_IOCTL_MIRAGE_MADVISE: u64 = drm_iow(
    DRM_COMMAND_BASE + DRM_MIRAGE_MADVISE,
    size_of::<DrmMirageMadvise>(),
);
pub const DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS: u64 = drm_iowr(
    DRM_COMMAND_BASE + DRM_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS,
    size_of::<DrmMirageVmQueryMemRangeAttr>(),
);

/// `struct drm_version` from `drm.h`.
#[repr(C)]
#[derive(Debug)]
pub struct DrmVersion {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: *mut u8,
    pub date_len: usize,
    pub date: *mut u8,
    pub desc_len: usize,
    pub desc: *mut u8,
}

pub const DRM_IOCTL_VERSION: u64 = drm_iowr(0x00, size_of::<DrmVersion>());

/// `struct drm_gem_close` from `drm.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmGemClose {
    pub handle: u32,
    pub pad: u32,
}

pub const DRM_IOCTL_GEM_CLOSE: u64 = drm_iow(0x09, size_of::<DrmGemClose>());

/// `struct drm_prime_handle` from `drm.h`: `flags` only for HANDLE_TO_FD.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmPrimeHandle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
}

/// Export flags of `DRM_IOCTL_PRIME_HANDLE_TO_FD`: `drm.h` defines them as the `open(2)` flags.
pub const DRM_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const DRM_RDWR: u32 = libc::O_RDWR as u32;

pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: u64 = drm_iowr(0x2d, size_of::<DrmPrimeHandle>());
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: u64 = drm_iowr(0x2e, size_of::<DrmPrimeHandle>());

/// `struct drm_syncobj_create` from `drm.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjCreate {
    pub handle: u32,
    pub flags: u32,
}

/// `struct drm_syncobj_destroy` from `drm.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjDestroy {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_array` from `drm.h` (RESET, SIGNAL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjArray {
    pub handles: u64,
    pub count_handles: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_timeline_array` from `drm.h` (QUERY, TIMELINE_SIGNAL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjTimelineArray {
    pub handles: u64,
    pub points: u64,
    pub count_handles: u32,
    pub flags: u32,
}

/// `struct drm_syncobj_timeline_wait` from `drm.h`. `timeout_nsec` is absolute
/// (CLOCK_MONOTONIC): 0 polls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjTimelineWait {
    pub handles: u64,
    pub points: u64,
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
    pub deadline_nsec: u64,
}

/// `struct drm_syncobj_handle` from `drm.h` (HANDLE_TO_FD, FD_TO_HANDLE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjHandle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
    pub pad: u32,
    pub point: u64,
}

pub const DRM_SYNCOBJ_CREATE_SIGNALED: u32 = 1 << 0;
pub const DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE: u32 = 1 << 0;
pub const DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT: u32 = 1 << 1;

pub const DRM_IOCTL_SYNCOBJ_CREATE: u64 = drm_iowr(0xbf, size_of::<DrmSyncobjCreate>());
pub const DRM_IOCTL_SYNCOBJ_DESTROY: u64 = drm_iowr(0xc0, size_of::<DrmSyncobjDestroy>());
pub const DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD: u64 = drm_iowr(0xc1, size_of::<DrmSyncobjHandle>());
pub const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: u64 = drm_iowr(0xc2, size_of::<DrmSyncobjHandle>());
pub const DRM_IOCTL_SYNCOBJ_RESET: u64 = drm_iowr(0xc4, size_of::<DrmSyncobjArray>());
pub const DRM_IOCTL_SYNCOBJ_SIGNAL: u64 = drm_iowr(0xc5, size_of::<DrmSyncobjArray>());
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: u64 =
    drm_iowr(0xca, size_of::<DrmSyncobjTimelineWait>());
pub const DRM_IOCTL_SYNCOBJ_QUERY: u64 = drm_iowr(0xcb, size_of::<DrmSyncobjTimelineArray>());
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: u64 =
    drm_iowr(0xcd, size_of::<DrmSyncobjTimelineArray>());

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn value_size<T, F>(_: impl Fn(&T) -> F) -> usize {
        size_of::<F>()
    }

    /// Sizes and offsets of each mirrored struct and field, and the value of
    /// each constant, named as the C probe names them.
    fn rust_side() -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        // `layout!("c_struct", RustType { field, ... } { "c_member" =>
        // rust.path, |s| value; ... })`: the second list names C members
        // whose Rust mirror has another name or lies in a union, and how to
        // read it (for its size).
        macro_rules! layout {
            (
                $c:literal, $t:ty { $($f:ident),* $(,)? }
                $({ $($cf:literal => $($p:ident).+, |$s:ident| $e:expr);* $(;)? })?
            ) => {
                m.insert(format!("size {}", $c), size_of::<$t>() as u64);
                $(
                    m.insert(
                        format!("offset {}.{}", $c, stringify!($f)),
                        std::mem::offset_of!($t, $f) as u64,
                    );
                    m.insert(
                        format!("size {}.{}", $c, stringify!($f)),
                        value_size(|s: &$t| s.$f) as u64,
                    );
                )*
                $($(
                    m.insert(
                        format!("offset {}.{}", $c, $cf),
                        std::mem::offset_of!($t, $($p).+) as u64,
                    );
                    m.insert(
                        format!("size {}.{}", $c, $cf),
                        value_size(|$s: &$t| $e) as u64,
                    );
                )*)?
            };
        }
        macro_rules! consts {
            ($($c:ident),* $(,)?) => {
                $( m.insert(stringify!($c).to_string(), $c as u64); )*
            };
        }
        layout!(
            "drm_version",
            DrmVersion {
                version_major,
                version_minor,
                version_patchlevel,
                name_len,
                name,
                date_len,
                date,
                desc_len,
                desc,
            }
        );
        layout!("drm_syncobj_create", DrmSyncobjCreate { handle, flags });
        layout!("drm_syncobj_destroy", DrmSyncobjDestroy { handle, pad });
        layout!(
            "drm_syncobj_handle",
            DrmSyncobjHandle {
                handle,
                flags,
                fd,
                pad,
                point,
            }
        );
        layout!(
            "drm_syncobj_array",
            DrmSyncobjArray {
                handles,
                count_handles,
                pad,
            }
        );
        layout!(
            "drm_syncobj_timeline_array",
            DrmSyncobjTimelineArray {
                handles,
                points,
                count_handles,
                flags,
            }
        );
        layout!(
            "drm_syncobj_timeline_wait",
            DrmSyncobjTimelineWait {
                handles,
                points,
                timeout_nsec,
                count_handles,
                flags,
                first_signaled,
                pad,
                deadline_nsec,
            }
        );
        layout!(
            "drm_mirage_get_param",
            DrmMirageGetParam {
                extensions,
                param,
                pad,
                value,
                reserved,
            }
        );
        layout!("drm_gem_close", DrmGemClose { handle, pad });
        layout!("drm_prime_handle", DrmPrimeHandle { handle, flags, fd });
        layout!(
            "drm_mirage_gem_create",
            DrmMirageGemCreate {
                extensions,
                size,
                flags,
                vm_id,
                handle,
                pad,
                reserved,
            }
        );
        layout!(
            "drm_mirage_gem_mmap_offset",
            DrmMirageGemMmapOffset {
                extensions,
                handle,
                flags,
                offset,
                reserved,
            }
        );
        layout!(
            "drm_mirage_vm_create",
            DrmMirageVmCreate {
                extensions,
                flags,
                vm_id,
                reserved,
            }
        );
        layout!(
            "drm_mirage_vm_destroy",
            DrmMirageVmDestroy {
                extensions,
                vm_id,
                pad,
                reserved,
            }
        );
        layout!(
            "drm_mirage_vm_bind_op",
            DrmMirageVmBindOp {
                extensions,
                obj,
                pat_index,
                pad,
                obj_offset,
                range,
                addr,
                op,
                flags,
                prefetch_mem_region_instance,
                pad2,
                reserved,
            }
            {
                "userptr" => obj_offset, |s| s.obj_offset;
                "cpu_addr_mirror_offset" => obj_offset, |s| s.obj_offset;
            }
        );
        layout!(
            "drm_mirage_sync",
            DrmMirageSync {
                extensions,
                flags,
                handle,
                pad,
                timeline_value,
                reserved,
            }
            {
                "type" => type_, |s| s.type_;
            }
        );
        layout!(
            "drm_mirage_vm_bind",
            DrmMirageVmBind {
                extensions,
                vm_id,
                exec_queue_id,
                pad,
                num_binds,
                pad2,
                num_syncs,
                syncs,
                reserved,
            }
            {
                "bind" => ops.bind, |s| *s.ops.bind();
                "vector_of_binds" => ops.vector_of_binds, |s| s.ops.vector_of_binds();
            }
        );
        layout!(
            "drm_mirage_exec_queue_create",
            DrmMirageExecQueueCreate {
                extensions,
                vm_id,
                engine_class,
                flags,
                priority,
                exec_queue_id,
                pad,
                reserved,
            }
        );
        layout!(
            "drm_mirage_exec_queue_destroy",
            DrmMirageExecQueueDestroy {
                extensions,
                exec_queue_id,
                pad,
                reserved,
            }
        );
        layout!(
            "drm_mirage_exec",
            DrmMirageExec {
                extensions,
                exec_queue_id,
                num_syncs,
                syncs,
                address,
                length,
                reserved,
            }
        );
        layout!(
            "drm_mirage_vm_get_state",
            DrmMirageVmGetState {
                extensions,
                vm_id,
                state,
                reserved,
            }
        );
        layout!(
            "drm_mirage_madvise",
            DrmMirageMadvise {
                extensions,
                start,
                range,
                vm_id,
                reserved,
            }
            {
                "type" => type_, |s| s.type_;
                "preferred_mem_loc.devmem_fd" => attr.preferred_mem_loc.devmem_fd,
                    |s| s.attr.as_preferred_mem_loc().devmem_fd;
                "preferred_mem_loc.migration_policy" => attr.preferred_mem_loc.migration_policy,
                    |s| s.attr.as_preferred_mem_loc().migration_policy;
                "preferred_mem_loc.region_instance" => attr.preferred_mem_loc.region_instance,
                    |s| s.attr.as_preferred_mem_loc().region_instance;
                "preferred_mem_loc.reserved" => attr.preferred_mem_loc.reserved,
                    |s| s.attr.as_preferred_mem_loc().reserved;
                "atomic.val" => attr.atomic.val, |s| s.attr.as_value().val;
                "atomic.pad" => attr.atomic.pad, |s| s.attr.as_value().pad;
                "atomic.reserved" => attr.atomic.reserved, |s| s.attr.as_value().reserved;
                "pat_index.val" => attr.pat_index.val, |s| s.attr.as_value().val;
                "pat_index.pad" => attr.pat_index.pad, |s| s.attr.as_value().pad;
                "pat_index.reserved" => attr.pat_index.reserved, |s| s.attr.as_value().reserved;
            }
        );
        layout!(
            "drm_mirage_mem_range_attr",
            DrmMirageMemRangeAttr {
                extensions,
                start,
                end,
                reserved,
            }
            {
                "preferred_mem_loc.devmem_fd" => preferred_mem_loc.devmem_fd,
                    |s| s.preferred_mem_loc.devmem_fd;
                "preferred_mem_loc.migration_policy" => preferred_mem_loc.migration_policy,
                    |s| s.preferred_mem_loc.migration_policy;
                "atomic.val" => atomic.val, |s| s.atomic.val;
                "atomic.reserved" => atomic.reserved, |s| s.atomic.reserved;
                "pat_index.val" => pat_index.val, |s| s.pat_index.val;
                "pat_index.reserved" => pat_index.reserved, |s| s.pat_index.reserved;
            }
        );
        layout!(
            "drm_mirage_vm_query_mem_range_attr",
            DrmMirageVmQueryMemRangeAttr {
                extensions,
                vm_id,
                num_mem_ranges,
                start,
                range,
                sizeof_mem_range_attr,
                vector_of_mem_attr,
                reserved,
            }
        );
        consts!(
            DRM_COMMAND_BASE,
            DRM_IOCTL_VERSION,
            DRM_IOCTL_GEM_CLOSE,
            DRM_CLOEXEC,
            DRM_RDWR,
            DRM_IOCTL_PRIME_HANDLE_TO_FD,
            DRM_IOCTL_PRIME_FD_TO_HANDLE,
            DRM_SYNCOBJ_CREATE_SIGNALED,
            DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
            DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
            DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
            DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
            DRM_IOCTL_SYNCOBJ_CREATE,
            DRM_IOCTL_SYNCOBJ_DESTROY,
            DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD,
            DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE,
            DRM_IOCTL_SYNCOBJ_RESET,
            DRM_IOCTL_SYNCOBJ_SIGNAL,
            DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT,
            DRM_IOCTL_SYNCOBJ_QUERY,
            DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL,
            DRM_MIRAGE_GET_PARAM,
            DRM_MIRAGE_PARAM_DEVICE_ID,
            DRM_MIRAGE_PARAM_HW_VERSION,
            DRM_MIRAGE_PARAM_VRAM_SIZE,
            DRM_MIRAGE_PARAM_VA_BITS,
            DRM_MIRAGE_PARAM_PAGE_SIZES,
            DRM_MIRAGE_PARAM_FEATURES,
            DRM_MIRAGE_FEATURE_VRAM,
            DRM_MIRAGE_FEATURE_PAGE_FAULTS,
            DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS,
            DRM_IOCTL_MIRAGE_GET_PARAM,
            DRM_MIRAGE_GEM_CREATE,
            DRM_MIRAGE_GEM_MMAP_OFFSET,
            DRM_MIRAGE_VM_CREATE,
            DRM_MIRAGE_VM_DESTROY,
            DRM_MIRAGE_VM_BIND,
            DRM_MIRAGE_EXEC_QUEUE_CREATE,
            DRM_MIRAGE_EXEC_QUEUE_DESTROY,
            DRM_MIRAGE_EXEC,
            DRM_MIRAGE_VM_GET_STATE,
            DRM_MIRAGE_MADVISE,
            DRM_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS,
            DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC,
            DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC,
            DRM_MIRAGE_MEM_RANGE_ATTR_PAT,
            DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE,
            DRM_MIRAGE_PREFERRED_LOC_DEFAULT_SYSTEM,
            DRM_MIRAGE_MIGRATE_ALL_PAGES,
            DRM_MIRAGE_MIGRATE_ONLY_SYSTEM_PAGES,
            DRM_MIRAGE_ATOMIC_UNDEFINED,
            DRM_MIRAGE_ATOMIC_DEVICE,
            DRM_MIRAGE_ATOMIC_GLOBAL,
            DRM_MIRAGE_ATOMIC_CPU,
            DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM,
            DRM_MIRAGE_GEM_CREATE_FLAG_VRAM,
            DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE,
            DRM_MIRAGE_PAT_WB,
            DRM_MIRAGE_PAT_UC,
            DRM_MIRAGE_VM_BIND_OP_MAP,
            DRM_MIRAGE_VM_BIND_OP_UNMAP,
            DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR,
            DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL,
            DRM_MIRAGE_VM_BIND_FLAG_READONLY,
            DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR,
            DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET,
            DRM_MIRAGE_VM_BIND_FLAG_NOEXEC,
            DRM_MIRAGE_SYNC_TYPE_SYNCOBJ,
            DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ,
            DRM_MIRAGE_SYNC_FLAG_SIGNAL,
            DRM_MIRAGE_MAX_BIND_OPS,
            DRM_MIRAGE_MAX_SYNCS,
            DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
            DRM_MIRAGE_ENGINE_CLASS_VM_BIND,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_LOW,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_HIGH,
            DRM_MIRAGE_VM_STATE_USABLE,
            DRM_MIRAGE_VM_STATE_UNUSABLE,
            DRM_IOCTL_MIRAGE_GEM_CREATE,
            DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET,
            DRM_IOCTL_MIRAGE_VM_CREATE,
            DRM_IOCTL_MIRAGE_VM_DESTROY,
            DRM_IOCTL_MIRAGE_VM_BIND,
            DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE,
            DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY,
            DRM_IOCTL_MIRAGE_EXEC,
            DRM_IOCTL_MIRAGE_VM_GET_STATE,
            DRM_IOCTL_MIRAGE_MADVISE,
            DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS,
        );
        m
    }

    #[cfg(mirage_uapi_probe)]
    fn c_side() -> BTreeMap<String, u64> {
        use std::ffi::{c_char, c_ulong, CStr};

        #[repr(C)]
        struct Entry {
            name: *const c_char,
            value: u64,
        }
        extern "C" {
            static mirage_probe: [Entry; 0];
            static mirage_probe_len: c_ulong;
        }
        // SAFETY: build.rs's probe defines `mirage_probe` as a const array
        // of `mirage_probe_len` entries of this layout, whose names are
        // string literals; nothing writes to them.
        let entries = unsafe {
            std::slice::from_raw_parts(
                std::ptr::addr_of!(mirage_probe).cast::<Entry>(),
                mirage_probe_len as usize,
            )
        };
        entries
            .iter()
            .map(|e| {
                // SAFETY: each name is a NUL-terminated string literal.
                let name = unsafe { CStr::from_ptr(e.name) };
                (name.to_string_lossy().into_owned(), e.value)
            })
            .collect()
    }

    #[cfg(mirage_uapi_probe)]
    #[test]
    fn layout_matches_the_c_header() {
        let (c, rust) = (c_side(), rust_side());
        let mut wrong = Vec::new();
        for (name, &cv) in &c {
            match rust.get(name) {
                Some(&rv) if rv == cv => {}
                Some(&rv) => wrong.push(format!("{name}: C {cv:#x}, Rust {rv:#x}")),
                None => wrong.push(format!("{name}: in the C header, not mirrored in uapi.rs")),
            }
        }
        // The header promises this, so that 32- and 64-bit userspace agree.
        for (name, &size) in &c {
            if name.starts_with("size drm_mirage_") && !name.contains('.') && size % 8 != 0 {
                wrong.push(format!("{name}: {size} bytes, not a multiple of 8"));
            }
        }
        for name in rust.keys().filter(|n| !c.contains_key(*n)) {
            wrong.push(format!("{name}: in uapi.rs, not in the C header"));
        }
        assert!(
            wrong.is_empty(),
            "uapi.rs differs from include/uapi/drm/mirage_drm.h:\n  {}",
            wrong.join("\n  ")
        );
    }

    #[cfg(not(mirage_uapi_probe))]
    #[test]
    fn layout_matches_the_c_header() {
        panic!(
            "the C probe of mirage_drm.h was not built: {}",
            env!("MIRAGE_UAPI_PROBE_ERROR")
        );
    }
}
