//! A seeded fuzz of the mirage ioctls: thousands of calls, each with random
//! argument bytes or with a nearly valid argument (live handles and VM ids,
//! one field corrupted), sent to every driver ioctl number, implemented or
//! not. Each call must succeed or fail with an errno the uAPI allows; any
//! other errno, a call that takes seconds, or a kernel splat (the runner's
//! business) fails.
//!
//! The generator is a seeded PRNG, so a run is replayed by its seed: the
//! default one, or `MIRAGE_FUZZ_SEED` (decimal or 0x-hex). It is printed
//! either way, with what the run did and how long it took.

use crate::{check, e2s, TestResult};
use mirage::uapi::*;
use mirage::Device;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How many fuzzed ioctls a run sends.
const CALLS: u32 = 10_000;
const DEFAULT_SEED: u64 = 0x6d69_7261_6765_0006;
/// Every so many calls the fuzz's objects are torn down and made afresh, so
/// that what corrupted calls leave behind stays bounded.
const EPOCH: u32 = 2_000;
/// A call running this long counts as a hang.
const HANG: Duration = Duration::from_secs(10);
/// Caps on the fuzz's own live objects.
const MAX_VMS: usize = 4;
const MAX_BOS: usize = 8;
const MAX_QUEUES: usize = 4;
/// Largest BO the fuzz creates on purpose.
const MAX_BO: u64 = SZ_2M + SZ_4K;

const SZ_4K: u64 = 4096;
const SZ_2M: u64 = 2 << 20;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;

/// What a call may fail with: the errnos `mirage_drm.h` documents (and
/// ENOMEM, ENOSPC, E2BIG, which any allocation or id space may give).
const ALLOWED: [i32; 7] = [
    libc::EINVAL,
    libc::ENOENT,
    libc::ENOBUFS,
    libc::EFAULT,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::E2BIG,
];

/// SplitMix64: tiny, fast, and fully determined by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }

    /// A value of `bits` bits that is often on an edge: zero, all ones, one
    /// bit, `cur` off by one or by a bit, or anything.
    fn wild(&mut self, cur: u64, bits: u32) -> u64 {
        let mask = u64::MAX >> (64 - bits);
        let v = match self.below(9) {
            0 => 0,
            1 => mask,
            2 => cur ^ (1 << self.below(bits.into())),
            3 => cur.wrapping_add(1),
            4 => cur.wrapping_sub(1),
            5 => cur.wrapping_add(SZ_4K),
            6 => 1 << self.below(bits.into()),
            7 => self.below(16),
            _ => self.next(),
        };
        v & mask
    }
}

/// `(offset, length)` of each field of a uAPI struct: what a corruption may
/// change. Fields longer than 8 bytes are arrays of u64.
type Fields = &'static [(usize, usize)];

macro_rules! fields {
    ($t:ty { $($f:ident: $len:expr),* $(,)? }) => {
        &[$((offset_of!($t, $f), $len)),*]
    };
}

const GET_PARAM: Fields = fields!(DrmMirageGetParam {
    extensions: 8,
    param: 4,
    pad: 4,
    value: 8,
    reserved: 16,
});
const GEM_CREATE: Fields = fields!(DrmMirageGemCreate {
    extensions: 8,
    size: 8,
    flags: 4,
    vm_id: 4,
    handle: 4,
    pad: 4,
    reserved: 16,
});
const GEM_MMAP_OFFSET: Fields = fields!(DrmMirageGemMmapOffset {
    extensions: 8,
    handle: 4,
    flags: 4,
    offset: 8,
    reserved: 16,
});
const VM_CREATE: Fields = fields!(DrmMirageVmCreate {
    extensions: 8,
    flags: 4,
    vm_id: 4,
    reserved: 16,
});
const VM_DESTROY: Fields = fields!(DrmMirageVmDestroy {
    extensions: 8,
    vm_id: 4,
    pad: 4,
    reserved: 16,
});
// `ops` is the vector pointer, or the first field of the inline op; the
// inline op's other fields are corrupted as an op.
const VM_BIND: Fields = fields!(DrmMirageVmBind {
    extensions: 8,
    vm_id: 4,
    exec_queue_id: 4,
    pad: 4,
    num_binds: 4,
    ops: 8,
    pad2: 4,
    num_syncs: 4,
    syncs: 8,
    reserved: 16,
});
const BIND_OP: Fields = fields!(DrmMirageVmBindOp {
    extensions: 8,
    obj: 4,
    pat_index: 2,
    pad: 2,
    obj_offset: 8,
    range: 8,
    addr: 8,
    op: 4,
    flags: 4,
    prefetch_mem_region_instance: 4,
    pad2: 4,
    reserved: 24,
});
const EXEC_QUEUE_CREATE: Fields = fields!(DrmMirageExecQueueCreate {
    extensions: 8,
    vm_id: 4,
    engine_class: 4,
    flags: 4,
    priority: 4,
    exec_queue_id: 4,
    pad: 4,
    reserved: 16,
});
const EXEC_QUEUE_DESTROY: Fields = fields!(DrmMirageExecQueueDestroy {
    extensions: 8,
    exec_queue_id: 4,
    pad: 4,
    reserved: 16,
});
const VM_GET_STATE: Fields = fields!(DrmMirageVmGetState {
    extensions: 8,
    vm_id: 4,
    state: 4,
    reserved: 16,
});
const SYNC: Fields = fields!(DrmMirageSync {
    extensions: 8,
    type_: 4,
    flags: 4,
    handle: 4,
    pad: 4,
    timeline_value: 8,
    reserved: 16,
});

/// `_IOC()` of x86 for a DRM request.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'd' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    GetParam,
    GemCreate,
    GemMmapOffset,
    VmCreate,
    VmDestroy,
    VmBind,
    ExecQueueCreate,
    ExecQueueDestroy,
    VmGetState,
    /// EXEC, MADVISE, the attribute query, or a number the uAPI does not
    /// define: random bytes only.
    Other,
}

struct Ioctl {
    name: &'static str,
    kind: Kind,
    /// The request the uAPI defines.
    req: u64,
    fields: Fields,
}

const fn other(name: &'static str, req: u64) -> Ioctl {
    Ioctl {
        name,
        kind: Kind::Other,
        req,
        fields: &[],
    }
}

/// Every number the uAPI defines, and a few it does not. EXEC gets random
/// bytes only: a nearly valid one would run GPU jobs, whose faults and
/// timeouts are the business of the EXEC tests.
const IOCTLS: &[Ioctl] = &[
    Ioctl {
        name: "GET_PARAM",
        kind: Kind::GetParam,
        req: DRM_IOCTL_MIRAGE_GET_PARAM,
        fields: GET_PARAM,
    },
    Ioctl {
        name: "GEM_CREATE",
        kind: Kind::GemCreate,
        req: DRM_IOCTL_MIRAGE_GEM_CREATE,
        fields: GEM_CREATE,
    },
    Ioctl {
        name: "GEM_MMAP_OFFSET",
        kind: Kind::GemMmapOffset,
        req: DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET,
        fields: GEM_MMAP_OFFSET,
    },
    Ioctl {
        name: "VM_CREATE",
        kind: Kind::VmCreate,
        req: DRM_IOCTL_MIRAGE_VM_CREATE,
        fields: VM_CREATE,
    },
    Ioctl {
        name: "VM_DESTROY",
        kind: Kind::VmDestroy,
        req: DRM_IOCTL_MIRAGE_VM_DESTROY,
        fields: VM_DESTROY,
    },
    Ioctl {
        name: "VM_BIND",
        kind: Kind::VmBind,
        req: DRM_IOCTL_MIRAGE_VM_BIND,
        fields: VM_BIND,
    },
    Ioctl {
        name: "EXEC_QUEUE_CREATE",
        kind: Kind::ExecQueueCreate,
        req: DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE,
        fields: EXEC_QUEUE_CREATE,
    },
    Ioctl {
        name: "EXEC_QUEUE_DESTROY",
        kind: Kind::ExecQueueDestroy,
        req: DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY,
        fields: EXEC_QUEUE_DESTROY,
    },
    other("EXEC", DRM_IOCTL_MIRAGE_EXEC),
    Ioctl {
        name: "VM_GET_STATE",
        kind: Kind::VmGetState,
        req: DRM_IOCTL_MIRAGE_VM_GET_STATE,
        fields: VM_GET_STATE,
    },
    other("MADVISE", DRM_IOCTL_MIRAGE_MADVISE),
    other(
        "VM_QUERY_MEM_RANGE_ATTRS",
        DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS,
    ),
    other(
        "nr 0x0c",
        ioc(IOC_READ | IOC_WRITE, DRM_COMMAND_BASE + 0x0c, 64),
    ),
    other("nr 0x1f", ioc(IOC_WRITE, DRM_COMMAND_BASE + 0x1f, 32)),
    // The last number of the driver range.
    other(
        "nr 0x5f",
        ioc(IOC_READ | IOC_WRITE, DRM_COMMAND_BASE + 0x5f, 128),
    ),
];

/// Relative frequency of each entry of [`IOCTLS`].
const WEIGHTS: [u64; 15] = [8, 8, 8, 6, 6, 22, 4, 4, 3, 6, 3, 3, 3, 3, 3];
const _: () = assert!(WEIGHTS.len() == IOCTLS.len());

/// Two pages, the first readable and writable, the second inaccessible: an
/// array placed at the end of the first faults part-way through.
///
/// # Invariants
///
/// `base` is a private anonymous mapping of two pages that only this value
/// unmaps; the first page is readable and writable, the second has no
/// access.
struct Guard {
    base: *mut u8,
}

impl Guard {
    fn new() -> Result<Self, String> {
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        // INVARIANT: the mapping is new and only `Drop` unmaps it; the
        // second page loses its access below, or the mapping is undone.
        let g = Guard { base: p.cast() };
        // SAFETY: the second page is part of the mapping just made, and no
        // Rust object lives in it.
        let r = unsafe { libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE) };
        if r != 0 {
            return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
        }
        Ok(g)
    }

    /// The address of the inaccessible page.
    fn edge(&self) -> u64 {
        self.base as u64 + 4096
    }

    /// Copies `bytes` to end `cut` bytes into the inaccessible page, or as
    /// near as fits, and returns their address: reading them faults.
    fn straddle(&mut self, bytes: &[u8], cut: usize) -> u64 {
        let head = bytes.len().saturating_sub(cut.max(1)).min(4096);
        // SAFETY: the `head` bytes end where the first page ends, so they lie
        // inside it, which is writable (type invariant); `bytes` is a Rust
        // object elsewhere.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(4096 - head), head);
        }
        self.edge() - head as u64
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `base` is a two-page mapping that
        // nothing else unmaps; nothing refers into it any more.
        unsafe { libc::munmap(self.base.cast(), 2 * 4096) };
    }
}

/// The bytes of a uAPI struct or an array of them.
fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only the uAPI structs come here, which are integers without
    // padding (the uapi layout test checks every offset), so every byte is
    // initialised; the slice covers exactly the memory of `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

/// Changes one element of one field of the struct in `bytes` (which starts
/// where the struct does) to a [`Rng::wild`] value; returns its offset.
fn corrupt(rng: &mut Rng, bytes: &mut [u8], fields: Fields) -> usize {
    let (off, len) = rng.pick(fields);
    let width = len.min(8);
    let at = off + width * rng.below((len / width) as u64) as usize;
    let mut cur = [0u8; 8];
    cur[..width].copy_from_slice(&bytes[at..at + width]);
    let v = rng.wild(u64::from_le_bytes(cur), width as u32 * 8);
    bytes[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    at
}

#[derive(Clone, Copy)]
struct BoInfo {
    handle: u32,
    size: u64,
}

/// Where an argument or an array went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Valid,
    Null,
    Inaccessible,
    Straddling,
    Kernel,
    NonCanonical,
    /// Any value; for arrays only, which the kernel only reads.
    Random,
}

/// One call, as much as a failure report needs.
struct Call {
    ioctl: usize,
    req: u64,
    place: Place,
    /// "random", "valid" or "corrupt @<offset> (<what>)".
    shape: String,
    head: Vec<u8>,
}

struct Fuzz<'d> {
    d: &'d Device,
    rng: Rng,
    vms: Vec<u32>,
    bos: Vec<BoInfo>,
    queues: Vec<u32>,
    /// Binary syncobjs; the first is made without a fence.
    binary: Vec<u32>,
    /// Timeline syncobjs and the last point handed out for each.
    timelines: Vec<(u32, u64)>,
    /// Ids and handles that named something once, or name another file's.
    stale: Vec<u32>,
    arg: Vec<u64>,
    ops: Vec<DrmMirageVmBindOp>,
    syncs: Vec<DrmMirageSync>,
    guard: Guard,
    /// Calls, successes and time in the kernel per ioctl; failures per errno.
    sent: [u32; IOCTLS.len()],
    ok: [u32; IOCTLS.len()],
    time: [Duration; IOCTLS.len()],
    errnos: BTreeMap<i32, u32>,
    /// Binds of more than one op that succeeded.
    multi_op_binds: u32,
}

impl<'d> Fuzz<'d> {
    fn new(d: &'d Device, seed: u64) -> Result<Self, String> {
        Ok(Fuzz {
            d,
            rng: Rng(seed),
            vms: Vec::new(),
            bos: Vec::new(),
            queues: Vec::new(),
            binary: Vec::new(),
            timelines: Vec::new(),
            stale: Vec::new(),
            arg: vec![0; 2048],
            ops: Vec::with_capacity(1024),
            syncs: Vec::with_capacity(65),
            guard: Guard::new()?,
            sent: [0; IOCTLS.len()],
            ok: [0; IOCTLS.len()],
            time: [Duration::ZERO; IOCTLS.len()],
            errnos: BTreeMap::new(),
            multi_op_binds: 0,
        })
    }

    /// Syncobjs that live for the whole run, and stale ids from a second
    /// file and from objects already gone.
    fn setup(&mut self, other: &Device) -> TestResult {
        let d = self.d;
        self.binary.push(d.syncobj_create(0).map_err(e2s)?);
        self.binary
            .push(d.syncobj_create(DRM_SYNCOBJ_CREATE_SIGNALED).map_err(e2s)?);
        self.binary.push(d.syncobj_create(0).map_err(e2s)?);
        for _ in 0..2 {
            self.timelines.push((d.syncobj_create(0).map_err(e2s)?, 0));
        }
        let gone = d.syncobj_create(0).map_err(e2s)?;
        d.syncobj_destroy(gone).map_err(e2s)?;
        let other_vm = other.vm_create(0).map_err(e2s)?;
        let other_bo = other.gem_create(SZ_4K, SYSTEM, 0).map_err(e2s)?;
        self.stale
            .extend([gone, other_vm, other_bo, 0x7777, u32::MAX]);
        self.epoch()
    }

    /// Tears down the fuzz's exec queues, VMs and BOs and makes a fresh set.
    fn epoch(&mut self) -> TestResult {
        let d = self.d;
        for q in std::mem::take(&mut self.queues) {
            d.exec_queue_destroy(q)
                .map_err(|e| format!("destroying exec queue {q}: {e}"))?;
            self.stale.push(q);
        }
        for vm in std::mem::take(&mut self.vms) {
            d.vm_destroy(vm)
                .map_err(|e| format!("destroying VM {vm}: {e}"))?;
            self.stale.push(vm);
        }
        for bo in std::mem::take(&mut self.bos) {
            d.gem_close(bo.handle)
                .map_err(|e| format!("closing BO {}: {e}", bo.handle))?;
            self.stale.push(bo.handle);
        }
        // Keep the stale list short: the first ones (other file, never
        // allocated) stay.
        if self.stale.len() > 32 {
            self.stale.drain(5..self.stale.len() - 16);
        }
        for _ in 0..2 {
            self.vms.push(d.vm_create(0).map_err(e2s)?);
        }
        for size in [SZ_4K, 16 * SZ_4K, MAX_BO] {
            let handle = d.gem_create(size, SYSTEM, 0).map_err(e2s)?;
            self.bos.push(BoInfo { handle, size });
        }
        let handle = d.gem_create(4 * SZ_4K, SYSTEM, self.vms[0]).map_err(e2s)?;
        self.bos.push(BoInfo {
            handle,
            size: 4 * SZ_4K,
        });
        Ok(())
    }

    /// A VM id: a live one mostly, else one that names nothing here.
    fn vm_id(&mut self) -> u32 {
        if !self.vms.is_empty() && !self.rng.one_in(10) {
            self.rng.pick(&self.vms)
        } else {
            self.rng.pick(&self.stale)
        }
    }

    /// An exec queue id: a live one mostly, else one that names nothing.
    fn queue_id(&mut self) -> u32 {
        if !self.queues.is_empty() && !self.rng.one_in(5) {
            self.rng.pick(&self.queues)
        } else {
            self.rng.pick(&self.stale)
        }
    }

    fn bo(&mut self) -> BoInfo {
        if !self.bos.is_empty() && !self.rng.one_in(12) {
            self.rng.pick(&self.bos)
        } else {
            BoInfo {
                handle: self.rng.pick(&self.stale),
                size: SZ_4K,
            }
        }
    }

    /// A GPU address for `range` bytes: near a table boundary of one of a
    /// few windows (so page tables stay bounded), at the top of the VA
    /// space, or rarely anywhere.
    fn va(&mut self, range: u64) -> u64 {
        const WINDOWS: [u64; 5] = [
            0x10_0000,
            (1 << 30) - SZ_2M,
            (1 << 39) - SZ_2M,
            0x1234_0000_0000,
            (1 << 48) - 2 * SZ_2M,
        ];
        if self.rng.one_in(50) {
            return self.rng.next() & !(SZ_4K - 1) & ((1 << 48) - 1);
        }
        let base = self.rng.pick(&WINDOWS);
        let va = base + self.rng.below(4 * SZ_2M / SZ_4K) * SZ_4K;
        // Mostly keep the range inside the VA space; sometimes cross its end.
        if va + range > 1 << 48 && !self.rng.one_in(4) {
            (1 << 48) - range.min(1 << 40)
        } else {
            va
        }
    }

    /// One bind op, valid as far as the fuzz knows.
    fn op(&mut self, small: bool) -> DrmMirageVmBindOp {
        match self.rng.below(10) {
            0..=5 => {
                let bo = self.bo();
                let pages = bo.size / SZ_4K;
                let first = self.rng.below(pages);
                let left = pages - first;
                let n = if !small && self.rng.one_in(16) {
                    left
                } else {
                    1 + self.rng.below(left.min(16))
                };
                let range = n * SZ_4K;
                let addr = self.va(range);
                let flags = self.rng.pick(&[
                    0,
                    DRM_MIRAGE_VM_BIND_FLAG_READONLY,
                    DRM_MIRAGE_VM_BIND_FLAG_NOEXEC,
                    DRM_MIRAGE_VM_BIND_FLAG_READONLY | DRM_MIRAGE_VM_BIND_FLAG_NOEXEC,
                ]);
                let pat = self.rng.pick(&[DRM_MIRAGE_PAT_WB, DRM_MIRAGE_PAT_UC]);
                DrmMirageVmBindOp::map(bo.handle, first * SZ_4K, addr, range)
                    .with_flags(flags)
                    .with_pat(pat)
            }
            6..=8 => {
                let range = SZ_4K * (1 + self.rng.below(if small { 16 } else { 768 }));
                DrmMirageVmBindOp::unmap(self.va(range), range)
            }
            _ => DrmMirageVmBindOp::unmap_all(self.bo().handle),
        }
    }

    fn sync(&mut self) -> DrmMirageSync {
        let signal = self.rng.one_in(2);
        if self.rng.one_in(2) {
            let i = self.rng.below(self.timelines.len() as u64) as usize;
            let (h, last) = self.timelines[i];
            if signal {
                // Points only grow, whether or not the call succeeds.
                self.timelines[i].1 = last + 1;
                DrmMirageSync::signal_point(h, last + 1)
            } else {
                // A point handed out (it may not have been submitted), or a
                // future one.
                DrmMirageSync::wait_point(h, 1 + self.rng.below(last + 2))
            }
        } else {
            let h = if self.rng.one_in(10) {
                self.rng.pick(&self.stale)
            } else {
                self.rng.pick(&self.binary)
            };
            if signal {
                DrmMirageSync::signal(h)
            } else {
                DrmMirageSync::wait(h)
            }
        }
    }

    /// Where an array of `items` goes, with the pointer to pass.
    fn place<T: Copy>(rng: &mut Rng, guard: &mut Guard, items: &[T]) -> (u64, Place) {
        match rng.below(40) {
            0 => (0, Place::Null),
            1 => (guard.edge(), Place::Inaccessible),
            2 => {
                let size = size_of::<T>().max(1);
                let bytes = bytes_of(items);
                (guard.straddle(bytes, size), Place::Straddling)
            }
            3 => (
                0xffff_8880_0000_0000 + (rng.below(1 << 30) & !7),
                Place::Kernel,
            ),
            4 => (0x8000_0000_0000_0000 | rng.next(), Place::NonCanonical),
            5 => (rng.next(), Place::Random),
            _ if items.is_empty() => (0, Place::Null),
            _ => (items.as_ptr() as u64, Place::Valid),
        }
    }

    /// A VM_BIND argument built from live objects, and the one field (of
    /// the struct, an op or a sync) that was corrupted, if any.
    fn vm_bind(&mut self) -> (DrmMirageVmBind, String) {
        let num_binds: u32 = match self.rng.below(100) {
            0..=39 => 1,
            40..=89 => 2 + self.rng.below(7) as u32,
            90..=92 => 17 + self.rng.below(48) as u32,
            93 => DRM_MIRAGE_MAX_BIND_OPS,
            94 | 95 => DRM_MIRAGE_MAX_BIND_OPS + 1,
            96 | 97 => 0,
            _ => self.rng.next() as u32,
        };
        // Past the limit the driver must refuse before reading the array:
        // a few ops stand for it.
        let n = if num_binds > DRM_MIRAGE_MAX_BIND_OPS {
            4
        } else {
            num_binds as usize
        };
        let small = n > 8;
        self.ops.clear();
        for _ in 0..n {
            let op = self.op(small);
            self.ops.push(op);
        }
        let num_syncs: u32 = match self.rng.below(100) {
            0..=54 => 0,
            55..=94 => 1 + self.rng.below(4) as u32,
            95 | 96 => DRM_MIRAGE_MAX_SYNCS,
            97 | 98 => DRM_MIRAGE_MAX_SYNCS + 1,
            _ => self.rng.next() as u32,
        };
        self.syncs.clear();
        for _ in 0..num_syncs.min(DRM_MIRAGE_MAX_SYNCS + 1) {
            let s = self.sync();
            self.syncs.push(s);
        }
        let mut what = String::new();
        match self.rng.below(10) {
            // A valid bind of ~1000 ops takes seconds under TCG (the
            // benchmark times those): a large array here gets a bad last op,
            // which the driver finds only after reading and checking the rest.
            _ if n > 64 => {
                let k = self.rng.below(3) as usize;
                self.ops[n - 1].reserved[k] = self.rng.next() | 1;
                what = format!("op {} reserved[{k}]", n - 1);
            }
            3..=5 if !self.ops.is_empty() => {
                let i = self.rng.below(self.ops.len() as u64) as usize;
                let mut b = bytes_of(&self.ops[i..=i]).to_vec();
                let at = corrupt(&mut self.rng, &mut b, BIND_OP);
                self.ops[i] = from_bytes(&b);
                what = format!("op {i} byte {at}");
            }
            6 | 7 if !self.syncs.is_empty() => {
                let i = self.rng.below(self.syncs.len() as u64) as usize;
                let mut b = bytes_of(&self.syncs[i..=i]).to_vec();
                let at = corrupt(&mut self.rng, &mut b, SYNC);
                self.syncs[i] = from_bytes(&b);
                what = format!("sync {i} byte {at}");
            }
            _ => {}
        }
        let (ops_ptr, ops_place) = Self::place(&mut self.rng, &mut self.guard, &self.ops);
        let (syncs_ptr, syncs_place) = if num_syncs == 0 && !self.rng.one_in(10) {
            (0, Place::Null)
        } else {
            Self::place(&mut self.rng, &mut self.guard, &self.syncs)
        };
        if ops_place != Place::Valid && num_binds > 1 {
            what += &format!(" ops {ops_place:?}");
        }
        if syncs_place != Place::Valid && num_syncs > 0 {
            what += &format!(" syncs {syncs_place:?}");
        }
        // Binds run on the VM's default queue only: an exec queue's id fails.
        let exec_queue_id = if self.rng.one_in(20) {
            self.queue_id()
        } else {
            0
        };
        let args = DrmMirageVmBind {
            vm_id: self.vm_id(),
            exec_queue_id,
            num_binds,
            ops: if num_binds == 1 {
                DrmMirageVmBindOps::inline(self.ops[0])
            } else {
                DrmMirageVmBindOps::vector(ops_ptr)
            },
            num_syncs,
            syncs: syncs_ptr,
            ..Default::default()
        };
        (args, what)
    }

    /// Writes the argument for `IOCTLS[i]` to the start of `self.arg`;
    /// returns its length and how it was made.
    fn build(&mut self, i: usize) -> (usize, String) {
        let io = &IOCTLS[i];
        if io.kind == Kind::Other || self.rng.one_in(5) {
            // Random bytes (zeros now and then): EINVAL, nearly always.
            let zero = self.rng.one_in(4);
            for w in &mut self.arg[..32] {
                *w = if zero { 0 } else { self.rng.next() };
            }
            return (256, if zero { "zeros" } else { "random" }.into());
        }
        let (bytes, mut what) = match io.kind {
            Kind::GetParam => {
                let a = DrmMirageGetParam {
                    param: self.rng.below(6) as u32,
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::GemCreate => {
                let size = self.rng.pick(&[SZ_4K, 4 * SZ_4K, 16 * SZ_4K, MAX_BO]);
                let vm_id = if self.rng.one_in(3) { self.vm_id() } else { 0 };
                let a = DrmMirageGemCreate {
                    size,
                    flags: SYSTEM,
                    vm_id,
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::GemMmapOffset => {
                let a = DrmMirageGemMmapOffset {
                    handle: self.bo().handle,
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::VmCreate => (
                bytes_of(&[DrmMirageVmCreate::default()]).to_vec(),
                String::new(),
            ),
            Kind::VmDestroy => {
                let a = DrmMirageVmDestroy {
                    vm_id: self.vm_id(),
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::VmBind => {
                let (a, what) = self.vm_bind();
                (bytes_of(&[a]).to_vec(), what)
            }
            Kind::ExecQueueCreate => {
                // HIGH priority needs CAP_SYS_NICE, which the guest's root has.
                let a = DrmMirageExecQueueCreate {
                    vm_id: self.vm_id(),
                    engine_class: DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
                    priority: self.rng.below(3) as u32,
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::ExecQueueDestroy => {
                let a = DrmMirageExecQueueDestroy {
                    exec_queue_id: self.queue_id(),
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::VmGetState => {
                let a = DrmMirageVmGetState {
                    vm_id: self.vm_id(),
                    ..Default::default()
                };
                (bytes_of(&[a]).to_vec(), String::new())
            }
            Kind::Other => unreachable!(),
        };
        let mut bytes = bytes;
        // VM_BIND corrupts at most one thing: its struct here only if
        // nothing inside was.
        let corrupt_struct = if io.kind == Kind::VmBind {
            what.is_empty() && self.rng.one_in(3)
        } else {
            !self.rng.one_in(4)
        };
        if corrupt_struct {
            let at = corrupt(&mut self.rng, &mut bytes, io.fields);
            what = format!("byte {at}");
        }
        let len = bytes.len();
        let arg = &mut self.arg;
        // SAFETY: `arg` holds 16 KiB, far more than any uAPI struct; the
        // source is a separate Vec.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), arg.as_mut_ptr().cast(), len) };
        let shape = if what.is_empty() {
            "valid".into()
        } else {
            format!("corrupt {}", what.trim())
        };
        (len, shape)
    }

    /// The request for `IOCTLS[i]`: mostly the uAPI's, sometimes with
    /// another direction or size (the DRM core copies what the request
    /// says and zero-fills the rest). Sizes stay below the 16 KiB of `arg`.
    fn request(&mut self, i: usize, len: usize) -> u64 {
        let req = IOCTLS[i].req;
        if !self.rng.one_in(8) {
            return req;
        }
        let nr = req & 0xff;
        let size = match self.rng.below(5) {
            0 => 0,
            1 => len.saturating_sub(8),
            2 => len + 8,
            3 => 4096,
            _ => self.rng.below(1 << 14) as usize,
        };
        ioc(self.rng.below(4), nr, size)
    }

    /// One call: returns `Err` with a description if its result is not
    /// allowed.
    fn call(&mut self, watch: &Watch) -> TestResult {
        let i = pick_weighted(&mut self.rng, &WEIGHTS);
        let (len, shape) = self.build(i);
        let mut req = self.request(i, len);
        // A BO whose handle might not come back could be bound later by a
        // stale handle and a corrupted range: shmem is lazy, but binding
        // gigabytes of it would not be. A large one goes with the uAPI's
        // request, whose output is read back, and is closed at once.
        let at = offset_of!(DrmMirageGemCreate, size);
        let size = bytes_of(&self.arg[at / 8..at / 8 + 1]);
        if IOCTLS[i].kind == Kind::GemCreate
            && u64::from_le_bytes(size.try_into().unwrap_or_default()) > MAX_BO
        {
            req = IOCTLS[i].req;
        }
        let standard = req == IOCTLS[i].req;
        let scratch = self.arg.as_mut_ptr() as u64;
        let (ptr, place) = match self.rng.below(40) {
            0 => (0, Place::Null),
            1 => (self.guard.edge(), Place::Inaccessible),
            2 => {
                let head = bytes_of(&self.arg[..len.div_ceil(8)]).to_vec();
                let cut = 1 + self.rng.below(len as u64) as usize;
                (self.guard.straddle(&head, cut), Place::Straddling)
            }
            3 => (0xffff_8880_0000_1000, Place::Kernel),
            4 => (0x8000_0000_0000_0000, Place::NonCanonical),
            _ => (scratch, Place::Valid),
        };
        let call = Call {
            ioctl: i,
            req,
            place,
            shape,
            head: bytes_of(&self.arg[..len.div_ceil(8).min(18)]).to_vec(),
        };
        watch.begin(i);
        // SAFETY: the kernel writes at most the request's size (under
        // 16 KiB) at `ptr`: `self.arg` (16 KiB, ours), the guard mapping
        // (its writable page, then a fault), or an address no Rust object is
        // at (null, kernel, non-canonical), where it fails with EFAULT. What
        // the argument points to is only read.
        let r = unsafe { libc::ioctl(self.d.file().as_raw_fd(), req as _, ptr as *mut u8) };
        let took = watch.end();
        self.sent[i] += 1;
        self.time[i] += took;
        let res = if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        };
        if took > HANG {
            return Err(format!("took {took:?}: {}", describe(&call, res)));
        }
        match res {
            Ok(()) => self.ok[i] += 1,
            Err(e) if ALLOWED.contains(&e) => *self.errnos.entry(e).or_default() += 1,
            Err(_) => return Err(describe(&call, res)),
        }
        if res.is_ok() {
            let seen = standard && place == Place::Valid;
            self.after_success(i, seen, call.shape == "valid")?;
        }
        Ok(())
    }

    /// Keeps the object lists true after a call that succeeded, and bounded.
    /// `seen`: the call wrote its output to `self.arg`. An object made by a
    /// call with another request size or direction, or a straddling
    /// argument, may not have had its id written back: it lives until the
    /// file closes.
    fn after_success(&mut self, i: usize, seen: bool, valid: bool) -> TestResult {
        let d = self.d;
        let arg = bytes_of(&self.arg[..32]).to_vec();
        let u32_at =
            |off: usize| u32::from_le_bytes([arg[off], arg[off + 1], arg[off + 2], arg[off + 3]]);
        match IOCTLS[i].kind {
            Kind::GemCreate if seen => {
                let handle = u32_at(offset_of!(DrmMirageGemCreate, handle));
                let at = offset_of!(DrmMirageGemCreate, size);
                let size = u64::from_le_bytes(arg[at..at + 8].try_into().unwrap_or_default());
                if valid && self.bos.len() < MAX_BOS {
                    self.bos.push(BoInfo { handle, size });
                } else {
                    // A corrupted size may be huge (shmem is lazy): never bind it.
                    d.gem_close(handle)
                        .map_err(|e| format!("closing new BO {handle}: {e}"))?;
                }
            }
            Kind::VmCreate if seen => {
                let vm = u32_at(offset_of!(DrmMirageVmCreate, vm_id));
                if valid && self.vms.len() < MAX_VMS {
                    self.vms.push(vm);
                } else {
                    d.vm_destroy(vm)
                        .map_err(|e| format!("destroying new VM {vm}: {e}"))?;
                }
            }
            // Whatever the request and wherever the argument went (a copy of
            // `self.arg`, or nothing read: zeros), only the id `self.arg`
            // holds could have named a VM; no VM is 0.
            Kind::VmDestroy => {
                let vm = u32_at(offset_of!(DrmMirageVmDestroy, vm_id));
                self.vms.retain(|&v| v != vm);
                self.stale.push(vm);
            }
            Kind::ExecQueueCreate if seen => {
                let q = u32_at(offset_of!(DrmMirageExecQueueCreate, exec_queue_id));
                if valid && self.queues.len() < MAX_QUEUES {
                    self.queues.push(q);
                } else {
                    d.exec_queue_destroy(q)
                        .map_err(|e| format!("destroying new exec queue {q}: {e}"))?;
                }
            }
            // As for VM_DESTROY.
            Kind::ExecQueueDestroy => {
                let q = u32_at(offset_of!(DrmMirageExecQueueDestroy, exec_queue_id));
                self.queues.retain(|&v| v != q);
                self.stale.push(q);
            }
            Kind::VmBind if u32_at(offset_of!(DrmMirageVmBind, num_binds)) > 1 => {
                self.multi_op_binds += 1;
            }
            _ => {}
        }
        // Whatever destroyed the last VM or BO, the next calls need some.
        if self.vms.is_empty() || self.bos.is_empty() {
            self.epoch()?;
        }
        Ok(())
    }
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> T {
    let mut v = T::default();
    assert_eq!(b.len(), size_of::<T>());
    // SAFETY: only uAPI structs come here: integers, for which any bytes are
    // a valid value; `b` holds exactly `size_of::<T>()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast(), b.len()) };
    v
}

fn pick_weighted(rng: &mut Rng, weights: &[u64]) -> usize {
    let mut x = rng.below(weights.iter().sum());
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::E2BIG => "E2BIG".into(),
        _ => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    }
}

fn describe(c: &Call, res: Result<(), i32>) -> String {
    let got = match res {
        Ok(()) => "success".to_string(),
        Err(e) => errno_name(e),
    };
    let head: Vec<String> = c
        .head
        .chunks(8)
        .map(|w| {
            let mut b = [0u8; 8];
            b[..w.len()].copy_from_slice(w);
            format!("{:016x}", u64::from_le_bytes(b))
        })
        .collect();
    format!(
        "{} (request {:#x}, argument {:?}, {}) gave {got}; argument starts {}",
        IOCTLS[c.ioctl].name,
        c.req,
        c.place,
        c.shape,
        head.join(" ")
    )
}

/// What the watchdog thread sees of the call in flight.
struct Watch {
    t0: Instant,
    /// Start of the call in flight, in µs since `t0` plus one; 0 if none.
    since: AtomicU64,
    ioctl: AtomicU64,
    done: AtomicBool,
    /// The slowest call so far, in µs, and its ioctl.
    slowest: AtomicU64,
    slowest_ioctl: AtomicU64,
}

impl Watch {
    fn begin(&self, i: usize) {
        self.ioctl.store(i as u64, Relaxed);
        self.since
            .store(self.t0.elapsed().as_micros() as u64 + 1, Relaxed);
    }

    fn end(&self) -> Duration {
        let start = Duration::from_micros(self.since.swap(0, Relaxed) - 1);
        let took = self.t0.elapsed() - start;
        if took.as_micros() as u64 > self.slowest.load(Relaxed) {
            self.slowest.store(took.as_micros() as u64, Relaxed);
            self.slowest_ioctl.store(self.ioctl.load(Relaxed), Relaxed);
        }
        took
    }

    /// Says once, on the console, which call has not returned for [`HANG`]:
    /// the runner's timeout ends the boot, this says why.
    fn watch(&self) {
        let mut told = false;
        while !self.done.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let since = self.since.load(Relaxed);
            if since == 0 || told {
                continue;
            }
            let running = self
                .t0
                .elapsed()
                .saturating_sub(Duration::from_micros(since - 1));
            if running > HANG {
                let name = IOCTLS[self.ioctl.load(Relaxed) as usize].name;
                println!("    # ioctl_fuzz: a {name} call has not returned for {running:?}");
                told = true;
            }
        }
    }
}

fn seed() -> Result<u64, String> {
    match std::env::var("MIRAGE_FUZZ_SEED") {
        Err(_) => Ok(DEFAULT_SEED),
        Ok(s) => {
            let r = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            r.map_err(|e| format!("MIRAGE_FUZZ_SEED={s}: {e}"))
        }
    }
}

pub fn ioctl_fuzz(_: &Device) -> TestResult {
    // Requests the fuzz builds itself must match the uAPI's.
    check!(
        ioc(
            IOC_READ | IOC_WRITE,
            DRM_COMMAND_BASE,
            size_of::<DrmMirageGetParam>()
        ) == DRM_IOCTL_MIRAGE_GET_PARAM
            && ioc(
                IOC_WRITE,
                DRM_COMMAND_BASE + 5,
                size_of::<DrmMirageVmBind>()
            ) == DRM_IOCTL_MIRAGE_VM_BIND,
        "ioc() encodes requests wrongly"
    );
    let seed = seed()?;
    println!("    # ioctl_fuzz: seed {seed:#x} (set MIRAGE_FUZZ_SEED to replay another)");
    // Files of their own: everything the fuzz leaves goes when they close.
    let d = Device::open().map_err(e2s)?;
    let other = Device::open().map_err(e2s)?;
    let mut f = Fuzz::new(&d, seed)?;
    f.setup(&other)?;
    let watch = Watch {
        t0: Instant::now(),
        since: AtomicU64::new(0),
        ioctl: AtomicU64::new(0),
        done: AtomicBool::new(false),
        slowest: AtomicU64::new(0),
        slowest_ioctl: AtomicU64::new(0),
    };
    let res = std::thread::scope(|s| {
        s.spawn(|| watch.watch());
        let mut res = Ok(());
        for n in 0..CALLS {
            if n > 0 && n % EPOCH == 0 {
                res = f.epoch();
            }
            if res.is_ok() {
                res = f.call(&watch).map_err(|e| format!("call {n}: {e}"));
            }
            if res.is_err() {
                break;
            }
        }
        watch.done.store(true, Relaxed);
        res
    });
    let took = watch.t0.elapsed();
    println!(
        "    # ioctl_fuzz: {} ioctls in {:.1} s, slowest {:.1} ms ({})",
        f.sent.iter().sum::<u32>(),
        took.as_secs_f64(),
        watch.slowest.load(Relaxed) as f64 / 1e3,
        IOCTLS[watch.slowest_ioctl.load(Relaxed) as usize].name
    );
    for (i, io) in IOCTLS.iter().enumerate() {
        println!(
            "    # ioctl_fuzz: {:<18} {:>5} calls {:>5} succeeded {:>7.2} s",
            io.name,
            f.sent[i],
            f.ok[i],
            f.time[i].as_secs_f64()
        );
    }
    let errs: Vec<String> = f
        .errnos
        .iter()
        .map(|(&e, n)| format!("{} {n}", errno_name(e)))
        .collect();
    println!(
        "    # ioctl_fuzz: failed: {}; multi-op binds that succeeded: {}",
        errs.join(", "),
        f.multi_op_binds
    );
    res?;
    // The fuzz reached the work behind each implemented ioctl, not only
    // its argument checks.
    for (io, n) in IOCTLS.iter().zip(f.ok) {
        check!(
            io.kind == Kind::Other || n > 0,
            "no {} call succeeded",
            io.name
        );
    }
    check!(f.multi_op_binds > 0, "no bind of several ops succeeded");
    // And the driver still works for this file.
    f.epoch()?;
    let (vm, bo) = (f.vms[0], f.bos[0].handle);
    d.vm_bind(
        vm,
        0,
        &[DrmMirageVmBindOp::map(bo, 0, 0x4000_0000, SZ_4K)],
        &[],
    )
    .map_err(|e| format!("a good bind after the fuzz: {e}"))?;
    Ok(())
}
