//! Userptrs: GPU mappings of this process's own memory (malloc, mmap),
//! kept current through invalidations (MADV_DONTNEED, munmap, mprotect,
//! fork's copy-on-write). What the GPU reads and writes is checked
//! bit-exact, and errnos exactly.

use crate::exec::{Ctx, CMD_VA};
use crate::vm::vm_debug;
use crate::{check, e2s, errno, TestResult};
use mirage::cmd::{fnv1a64, CmdBuf};
use mirage::uapi::*;
use mirage::{Bo, Device};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SZ_4K: u64 = 4096;
const SZ_64K: u64 = 64 << 10;
const SZ_2M: u64 = 2 << 20;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;
const READONLY: u32 = DRM_MIRAGE_VM_BIND_FLAG_READONLY;
/// Where tests map userptrs, and a BO for results.
const UP_VA: u64 = 0x4000_0000;
const OUT_VA: u64 = 0x6000_0000;

/// Page-aligned memory of this process: from `mmap` or from `malloc`.
pub(crate) struct Anon {
    ptr: *mut u8,
    len: usize,
    malloced: bool,
}

impl Anon {
    pub(crate) fn mmap(len: u64) -> Result<Self, String> {
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        check!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Ok(Self {
            ptr: p.cast(),
            len: len as usize,
            malloced: false,
        })
    }

    fn malloc(len: u64) -> Result<Self, String> {
        let mut p = std::ptr::null_mut();
        // SAFETY: `p` receives the allocation.
        let r = unsafe { libc::posix_memalign(&mut p, SZ_4K as usize, len as usize) };
        check!(r == 0 && !p.is_null(), "posix_memalign: {r}");
        // SAFETY: `len` bytes at `p` are ours.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len as usize) };
        Ok(Self {
            ptr: p.cast(),
            len: len as usize,
            malloced: true,
        })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    fn page(&self, i: usize) -> u64 {
        self.addr() + i as u64 * SZ_4K
    }

    pub(crate) fn write_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: in bounds and aligned; the GPU and the CPU share it, hence volatile.
        unsafe { self.ptr.add(off).cast::<u64>().write_volatile(v) }
    }

    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: as in `write_u64`.
        unsafe { self.ptr.add(off).cast::<u64>().read_volatile() }
    }

    fn bytes(&self) -> Vec<u8> {
        (0..self.len / 8)
            .flat_map(|i| self.read_u64(i * 8).to_le_bytes())
            .collect()
    }

    /// `madvise(MADV_NOHUGEPAGE)`: 4 KiB pages only, so that an invalidation
    /// of a page is not one of its whole 2 MiB.
    pub(crate) fn no_thp(&self) -> TestResult {
        // SAFETY: the pages are ours.
        let r = unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_NOHUGEPAGE) };
        check!(r == 0, "madvise: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)` on pages `pages`: they read as zero next.
    fn dontneed(&self, pages: std::ops::Range<usize>) -> TestResult {
        // SAFETY: the pages are ours.
        let r = unsafe {
            libc::madvise(
                self.ptr.add(pages.start * SZ_4K as usize).cast(),
                pages.len() * SZ_4K as usize,
                libc::MADV_DONTNEED,
            )
        };
        check!(r == 0, "madvise: {}", std::io::Error::last_os_error());
        Ok(())
    }

    fn protect(&self, page: usize, prot: i32) -> TestResult {
        // SAFETY: the page is ours.
        let r = unsafe {
            libc::mprotect(
                self.ptr.add(page * SZ_4K as usize).cast(),
                SZ_4K as usize,
                prot,
            )
        };
        check!(r == 0, "mprotect: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// munmaps `[addr, addr + len)`, which must lie inside; dropping unmaps the rest.
    pub(crate) fn unmap(&self, addr: u64, len: u64) -> TestResult {
        check!(
            !self.malloced && addr >= self.addr() && addr + len <= self.addr() + self.len as u64,
            "unmap outside the mapping"
        );
        // SAFETY: the pages are this mapping's, and nothing refers to them.
        let r = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
        check!(r == 0, "munmap: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Replaces page `page` with a new zero page: munmap, then mmap at the same address.
    fn remap(&self, page: usize) -> TestResult {
        let at = self.page(page) as *mut libc::c_void;
        // SAFETY: the page is ours; MAP_FIXED puts a new one where it was.
        let r = unsafe { libc::munmap(at, SZ_4K as usize) };
        check!(r == 0, "munmap: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let p = unsafe {
            libc::mmap(
                at,
                SZ_4K as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        check!(
            p == at,
            "mmap at {at:?}: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: the memory is ours and nothing refers to it any more.
        unsafe {
            if self.malloced {
                libc::free(self.ptr.cast());
            } else {
                libc::munmap(self.ptr.cast(), self.len);
            }
        }
    }
}

// SAFETY: the memory is plain anonymous memory; threads of a test share it on purpose.
unsafe impl Send for Anon {}
// SAFETY: as above; accesses are volatile.
unsafe impl Sync for Anon {}

/// A VM with an exec queue and its command BO, and a BO at [`OUT_VA`] for
/// what jobs read.
fn with_out(d: &Device) -> Result<(Ctx<'_>, Bo<'_>), String> {
    let c = Ctx::new(d)?;
    let out = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(&out, 0, OUT_VA, SZ_4K, 0)?;
    Ok((c, out))
}

fn bind_userptr(d: &Device, vm: u32, cpu: u64, va: u64, len: u64, flags: u32) -> TestResult {
    let op = DrmMirageVmBindOp::map_userptr(cpu, va, len).with_flags(flags);
    d.vm_bind(vm, 0, &[op], &[]).map_err(e2s)
}

fn unbind(d: &Device, vm: u32, va: u64, len: u64) -> TestResult {
    d.vm_bind(vm, 0, &[DrmMirageVmBindOp::unmap(va, len)], &[])
        .map_err(e2s)
}

/// The words of `data` that differ from `want(word index)`, for messages.
fn first_bad(data: &[u8], want: impl Fn(usize) -> u64) -> Option<(usize, u64, u64)> {
    data.chunks_exact(8).enumerate().find_map(|(i, w)| {
        let v = u64::from_le_bytes(w.try_into().unwrap_or_default());
        (v != want(i)).then(|| (i, v, want(i)))
    })
}

/// The GPU writes malloc'd and mmap'd memory through userptrs, the CPU reads
/// it; the CPU writes it, the GPU checksums it.
pub fn userptr_gpu_and_cpu_see_each_other(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let bufs = [
        ("malloc", Anon::malloc(SZ_64K)?, UP_VA),
        ("mmap", Anon::mmap(SZ_2M + SZ_4K)?, UP_VA + 0x100_0000),
    ];
    for (i, (what, m, va)) in bufs.iter().enumerate() {
        let len = m.len as u64;
        bind_userptr(d, c.vm, m.addr(), *va, len, 0).map_err(|e| format!("{what}: {e}"))?;
        // The GPU fills it and stores a word into its last page.
        let pattern = 0x5a00_0000 | i as u32;
        let mut cb = CmdBuf::new();
        cb.fill(*va, len, pattern)
            .store64(*va + len - 8, 0xfeed_0000_0000_0000 | i as u64)
            .end();
        let status = c.run(&cb)?;
        check!(status == 0, "{what}: GPU write: fence error {status}");
        let words = len as usize / 8;
        let want = |w: usize| {
            if w == words - 1 {
                0xfeed_0000_0000_0000 | i as u64
            } else {
                u64::from(pattern) << 32 | u64::from(pattern)
            }
        };
        let bad = first_bad(&m.bytes(), want);
        check!(
            bad.is_none(),
            "{what}: CPU reads {bad:x?} (word, got, want)"
        );
        // The CPU writes it, the GPU checksums it.
        for w in 0..words {
            m.write_u64(
                w * 8,
                (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64,
            );
        }
        let mut cb = CmdBuf::new();
        cb.checksum(*va, len, OUT_VA).end();
        let status = c.run(&cb)?;
        check!(status == 0, "{what}: GPU checksum: fence error {status}");
        let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
        let want = fnv1a64(&m.bytes());
        check!(
            got == want,
            "{what}: GPU checksum {got:#x}, CPU's {want:#x}"
        );
    }
    let dbg = vm_debug(c.vm)?;
    check!(dbg.userptr[0] == 2, "userptrs live: {:?}", dbg.userptr);
    check!(
        dbg.userptr_vas.len() == 2,
        "userptr mappings {:x?}",
        dbg.userptr_vas
    );
    Ok(())
}

/// A READONLY userptr: the GPU reads it, a GPU write faults and changes
/// nothing. Read-only memory binds READONLY only.
pub fn userptr_readonly_refuses_gpu_writes(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(2 * SZ_4K)?;
    for w in 0..(2 * SZ_4K as usize / 8) {
        m.write_u64(w * 8, 0x1111_0000 + w as u64);
    }
    let before = m.bytes();
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, READONLY)?;
    let mut cb = CmdBuf::new();
    cb.store32(UP_VA + SZ_4K, 0xbad).end();
    let status = c.run(&cb)?;
    check!(
        status == -libc::EIO,
        "GPU write to a READONLY userptr: fence error {status}"
    );
    check!(m.bytes() == before, "a READONLY userptr was written");
    let mut cb = CmdBuf::new();
    cb.checksum(UP_VA, 2 * SZ_4K, OUT_VA).end();
    check!(c.run(&cb)? == 0, "GPU read of a READONLY userptr failed");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(
        got == fnv1a64(&before),
        "GPU read {got:#x} of a READONLY userptr"
    );

    // Memory the process may only read: READONLY binds, writable fails with EFAULT.
    m.protect(0, libc::PROT_READ)?;
    m.protect(1, libc::PROT_READ)?;
    let e = errno(d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::map_userptr(
            m.addr(),
            UP_VA + SZ_2M,
            2 * SZ_4K,
        )],
        &[],
    ));
    check!(
        e == Some(libc::EFAULT),
        "writable userptr of read-only memory: {e:?}"
    );
    bind_userptr(d, c.vm, m.addr(), UP_VA + SZ_2M, 2 * SZ_4K, READONLY)?;
    let mut cb = CmdBuf::new();
    cb.checksum(UP_VA + SZ_2M, 2 * SZ_4K, OUT_VA).end();
    check!(c.run(&cb)? == 0, "GPU read of read-only memory failed");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(
        got == fnv1a64(&before),
        "GPU read {got:#x} of read-only memory"
    );
    Ok(())
}

/// MAP_USERPTR's argument errors, each exact, and a VM left unchanged.
pub fn userptr_bind_rejects_bad_input(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let m = Anon::mmap(4 * SZ_4K)?;
    // A hole: the third page is not mapped.
    // SAFETY: the page is ours.
    let r = unsafe { libc::munmap(m.page(2) as *mut libc::c_void, SZ_4K as usize) };
    check!(r == 0, "munmap: {}", std::io::Error::last_os_error());
    let base = DrmMirageVmBindOp::map_userptr(m.addr(), UP_VA, SZ_4K);
    let cases: Vec<(&str, DrmMirageVmBindOp, i32)> = vec![
        (
            "unaligned userptr",
            DrmMirageVmBindOp {
                obj_offset: m.addr() + 8,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unaligned addr",
            DrmMirageVmBindOp {
                addr: UP_VA + 8,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unaligned range",
            DrmMirageVmBindOp { range: 8, ..base },
            libc::EINVAL,
        ),
        (
            "zero range",
            DrmMirageVmBindOp { range: 0, ..base },
            libc::EINVAL,
        ),
        ("obj", DrmMirageVmBindOp { obj: 1, ..base }, libc::EINVAL),
        (
            "userptr + range wraps",
            DrmMirageVmBindOp {
                obj_offset: !(SZ_4K - 1),
                range: 2 * SZ_4K,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "past the VA space",
            DrmMirageVmBindOp {
                addr: (1 << 48) - SZ_4K,
                range: 2 * SZ_4K,
                ..base
            },
            libc::EINVAL,
        ),
        ("unknown flag", base.with_flags(1 << 3), libc::EINVAL),
        ("bad pat_index", base.with_pat(7), libc::EINVAL),
        ("pad", DrmMirageVmBindOp { pad: 1, ..base }, libc::EINVAL),
        (
            "reserved",
            DrmMirageVmBindOp {
                reserved: [0, 1, 0],
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unmapped memory",
            DrmMirageVmBindOp {
                obj_offset: m.page(2),
                ..base
            },
            libc::EFAULT,
        ),
        (
            "partly unmapped memory",
            DrmMirageVmBindOp {
                range: 4 * SZ_4K,
                ..base
            },
            libc::EFAULT,
        ),
        (
            "more than can be tracked",
            DrmMirageVmBindOp {
                range: 1 << 46,
                ..base
            },
            libc::ENOMEM,
        ),
        (
            "kernel address",
            DrmMirageVmBindOp {
                obj_offset: 0xffff_8880_0000_0000,
                ..base
            },
            libc::EFAULT,
        ),
    ];
    let before = vm_debug(c.vm)?;
    for (what, op, want) in cases {
        let e = errno(d.vm_bind(c.vm, 0, &[op], &[]));
        check!(e == Some(want), "{what}: got {e:?}, want {want}");
        // An array whose last op is bad changes nothing either.
        let good = DrmMirageVmBindOp::map_userptr(m.addr(), UP_VA + SZ_2M, SZ_4K);
        let e = errno(d.vm_bind(c.vm, 0, &[good, op], &[]));
        check!(
            e == Some(want),
            "{what} after a good op: got {e:?}, want {want}"
        );
        let now = vm_debug(c.vm)?;
        check!(
            now.vas == before.vas && now.userptr_vas.is_empty() && now.userptr[0] == 0,
            "{what}: the VM changed: {:x?} {:x?} {:?}",
            now.vas,
            now.userptr_vas,
            now.userptr
        );
    }
    Ok(())
}

/// MADV_DONTNEED drops a bound userptr's page; the CPU writes a new one; the
/// next EXEC sees it, and the GPU's writes land in it.
pub fn userptr_dontneed_exec_sees_new_pages(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(2 * SZ_4K)?;
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.fill(UP_VA, 2 * SZ_4K, 0xaaaa_aaaa).end();
    check!(c.run(&cb)? == 0, "first job failed");
    check!(m.read_u64(0) == 0xaaaa_aaaa_aaaa_aaaa, "GPU fill not seen");
    let before = vm_debug(c.vm)?;

    m.dontneed(0..1)?;
    check!(m.read_u64(0) == 0, "MADV_DONTNEED kept the page");
    m.write_u64(0, 0xb0b0_0001);
    m.write_u64(8, 0xb0b0_0002);
    // The GPU copies the new data out, and writes the page.
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 16)
        .store64(UP_VA + 24, 0xc0c0_0003)
        .end();
    check!(c.run(&cb)? == 0, "job after MADV_DONTNEED failed");
    let o = out.mmap().map_err(e2s)?;
    let got = (o.read_u64(0).map_err(e2s)?, o.read_u64(8).map_err(e2s)?);
    check!(
        got == (0xb0b0_0001, 0xb0b0_0002),
        "GPU read {got:x?}: the old page, not the new one"
    );
    check!(
        m.read_u64(24) == 0xc0c0_0003,
        "GPU write went to the old page: CPU reads {:#x}",
        m.read_u64(24)
    );
    // The untouched page kept the fill.
    check!(
        m.read_u64(SZ_4K as usize) == 0xaaaa_aaaa_aaaa_aaaa,
        "second page changed"
    );
    let after = vm_debug(c.vm)?;
    check!(
        after.userptr[2] > before.userptr[2] && after.userptr[3] == 1,
        "userptr counters before {:?} after {:?}",
        before.userptr,
        after.userptr
    );
    Ok(())
}

/// munmap of a bound userptr: the next EXEC runs with it unmapped on the GPU
/// (documented in mirage.rst), so jobs that touch it fault and never reach
/// the old pages, even once new memory is mapped at the same address. A new
/// MAP_USERPTR maps the new memory.
pub fn userptr_munmap_then_exec_faults(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(2 * SZ_4K)?;
    m.write_u64(0, 0x01d0_01d0);
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 8).end();
    check!(c.run(&cb)? == 0, "first read failed");
    check!(
        out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)? == 0x01d0_01d0,
        "first read wrong"
    );
    out.mmap().map_err(e2s)?.write_u64(0, 0).map_err(e2s)?;

    // The old page goes; a new one comes at the same address.
    m.remap(0)?;
    m.write_u64(0, 0x0e0e_0e0e);
    for (what, cb) in [
        ("read", CmdBuf::new().copy(OUT_VA, UP_VA, 8).end().clone()),
        (
            "write",
            CmdBuf::new().store64(UP_VA + 8, 0xbad).end().clone(),
        ),
        (
            "read of the other page",
            CmdBuf::new().copy(OUT_VA, UP_VA + SZ_4K, 8).end().clone(),
        ),
    ] {
        let status = c.run(&cb)?;
        check!(
            status == -libc::EIO,
            "{what} after munmap: fence error {status}, want -EIO"
        );
    }
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(got == 0, "the GPU read {got:#x} after munmap");
    check!(m.read_u64(8) == 0, "the GPU wrote the new page");
    // The rest of the VM works.
    let mut cb = CmdBuf::new();
    cb.store64(OUT_VA + 8, 0x600d).end();
    check!(c.run(&cb)? == 0, "job next to the dead userptr failed");

    // Bound again, it maps the new memory.
    unbind(d, c.vm, UP_VA, 2 * SZ_4K)?;
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 8).end();
    check!(c.run(&cb)? == 0, "read after rebinding failed");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(got == 0x0e0e_0e0e, "read {got:#x} after rebinding");
    Ok(())
}

/// UNMAP of part of a userptr keeps the rest working; UNMAP of all of it
/// removes its notifier.
pub fn userptr_unbind_removes_the_notifier(d: &Device) -> TestResult {
    let c = Ctx::new(d)?;
    let m = Anon::mmap(3 * SZ_4K)?;
    bind_userptr(d, c.vm, m.addr(), UP_VA, 3 * SZ_4K, 0)?;
    // A hole in the middle.
    unbind(d, c.vm, UP_VA + SZ_4K, SZ_4K)?;
    let dbg = vm_debug(c.vm)?;
    check!(
        dbg.userptr_vas.len() == 2 && dbg.userptr[0] == 1,
        "after a partial unbind: {:x?} {:?}",
        dbg.userptr_vas,
        dbg.userptr
    );
    let (a, b) = (&dbg.userptr_vas[0], &dbg.userptr_vas[1]);
    check!(
        a.3 == b.3 && a.2 == m.addr() && b.2 == m.page(2),
        "pieces {a:x?} {b:x?}: not the same userptr at its CPU addresses"
    );
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA, 0x1001)
        .store64(UP_VA + 2 * SZ_4K, 0x3003)
        .end();
    check!(c.run(&cb)? == 0, "write to the pieces failed");
    check!(
        (m.read_u64(0), m.read_u64(2 * SZ_4K as usize)) == (0x1001, 0x3003),
        "pieces not written"
    );
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA + SZ_4K, 0xbad).end();
    check!(c.run(&cb)? == -libc::EIO, "the hole did not fault");
    check!(m.read_u64(SZ_4K as usize) == 0, "the hole was written");
    // Invalidating the hole's page revalidates the userptr's pieces.
    m.dontneed(1..2)?;
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA + 8, 0x1002).end();
    check!(c.run(&cb)? == 0, "write after invalidation failed");
    check!(
        m.read_u64(8) == 0x1002,
        "piece not written after invalidation"
    );

    unbind(d, c.vm, UP_VA, 3 * SZ_4K)?;
    // The next bind lets the notifier of the executed unbind go.
    unbind(d, c.vm, UP_VA, SZ_4K)?;
    let before = vm_debug(c.vm)?;
    check!(
        before.userptr[0] == 0 && before.userptr_vas.is_empty(),
        "after unbinding: {:?} {:x?}",
        before.userptr,
        before.userptr_vas
    );
    m.dontneed(0..3)?;
    let after = vm_debug(c.vm)?;
    check!(
        after.userptr[2] == before.userptr[2],
        "an unbound userptr was invalidated: {:?} -> {:?}",
        before.userptr,
        after.userptr
    );
    Ok(())
}

/// With 10,000 userptrs bound, an EXEC revalidates none of them unless one
/// was invalidated, and then that one only.
pub fn userptr_exec_walks_only_the_invalidated(d: &Device) -> TestResult {
    const N: u64 = 10_000;
    let c = Ctx::new(d)?;
    let m = Anon::mmap(N * SZ_4K)?;
    m.no_thp()?;
    let ops: Vec<_> = (0..N)
        .map(|i| DrmMirageVmBindOp::map_userptr(m.page(i as usize), UP_VA + 2 * i * SZ_4K, SZ_4K))
        .collect();
    for chunk in ops.chunks(DRM_MIRAGE_MAX_BIND_OPS as usize) {
        d.vm_bind(c.vm, 0, chunk, &[]).map_err(e2s)?;
    }
    let dbg = vm_debug(c.vm)?;
    check!(dbg.userptr[0] == N, "{} userptrs live", dbg.userptr[0]);
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA + 2 * (N - 1) * SZ_4K, 0x7777).end();
    for round in 0..3 {
        check!(c.run(&cb)? == 0, "round {round}: job failed");
        let dbg = vm_debug(c.vm)?;
        check!(
            dbg.userptr[3] == 0 && dbg.userptr[4] == 0,
            "round {round}: EXEC revalidated userptrs none of which was invalidated: {:?}",
            dbg.userptr
        );
    }
    check!(m.read_u64(((N - 1) * SZ_4K) as usize) == 0x7777, "no write");
    m.dontneed(5000..5001)?;
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA + 2 * 5000 * SZ_4K, 0x5000).end();
    check!(c.run(&cb)? == 0, "job after an invalidation failed");
    let dbg = vm_debug(c.vm)?;
    check!(
        dbg.userptr[3] == 1 && dbg.userptr[4] == 1,
        "one invalidated userptr: {:?}",
        dbg.userptr
    );
    check!(
        m.read_u64(5000 * SZ_4K as usize) == 0x5000,
        "no write after revalidation"
    );
    Ok(())
}

/// fork() with a bound userptr: copy-on-write in the child and then in the
/// parent; the GPU sees the parent's memory, never the child's.
pub fn userptr_fork_keeps_the_parent_view(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(SZ_4K)?;
    m.write_u64(0, 0xa);
    bind_userptr(d, c.vm, m.addr(), UP_VA, SZ_4K, 0)?;
    let read = |what: &str| -> Result<u64, String> {
        let mut cb = CmdBuf::new();
        cb.copy(OUT_VA, UP_VA, 8).end();
        let status = c.run(&cb)?;
        check!(status == 0, "{what}: fence error {status}");
        out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)
    };
    check!(read("before fork")? == 0xa, "GPU view before fork");

    let (mut to_child, mut to_parent) = ([0i32; 2], [0i32; 2]);
    // SAFETY: two pipes for the handshake, into arrays of two fds.
    let piped = unsafe {
        libc::pipe(to_child.as_mut_ptr()) == 0 && libc::pipe(to_parent.as_mut_ptr()) == 0
    };
    check!(piped, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: the child only writes memory, reads and writes pipes and exits.
    let pid = unsafe { libc::fork() };
    check!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: the child's own copies of the pipes and of the page.
        unsafe {
            m.write_u64(0, 0xb);
            libc::write(to_parent[1], [1u8].as_ptr().cast(), 1);
            libc::read(to_child[0], (&raw mut b).cast(), 1);
            // The parent's writes and the GPU's never reach the child's page.
            let ok = m.read_u64(0) == 0xb;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut b = 0u8;
    // SAFETY: our end of the pipe.
    unsafe { libc::read(to_parent[0], (&raw mut b).cast(), 1) };
    check!(
        read("after the child's write")? == 0xa,
        "GPU sees the child's page"
    );
    // The parent writes while the child shares the page: the parent's copy.
    m.write_u64(0, 0xc);
    check!(
        read("after the parent's write")? == 0xc,
        "GPU misses the parent's new page"
    );
    let mut cb = CmdBuf::new();
    cb.store64(UP_VA + 8, 0xd).end();
    check!(c.run(&cb)? == 0, "GPU write after fork failed");
    check!(m.read_u64(8) == 0xd, "GPU write not in the parent's page");
    let mut status = 0;
    // SAFETY: our child and pipe.
    unsafe {
        libc::write(to_child[1], [1u8].as_ptr().cast(), 1);
        libc::waitpid(pid, &mut status, 0);
        for fd in to_child.iter().chain(to_parent.iter()) {
            libc::close(*fd);
        }
    }
    check!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw the parent's or the GPU's writes (status {status:#x})"
    );
    Ok(())
}

/// One thread loops EXECs through a userptr while another invalidates it:
/// MADV_DONTNEED of the page the GPU reads, then mprotect and munmap+mmap of
/// a neighbouring page of the same userptr. Every job either faults (the
/// userptr lost its memory, or the access) or reads the current data and
/// writes where the CPU sees it; none reads stale data.
pub fn userptr_invalidate_race(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(4 * SZ_4K)?;
    bind_userptr(d, c.vm, m.addr(), UP_VA, 4 * SZ_4K, 0)?;
    let omap = out.mmap().map_err(e2s)?;
    let mut report = Vec::new();
    for phase in ["dontneed", "mprotect", "munmap"] {
        let stop = AtomicBool::new(false);
        // Jobs done: the hammer strikes once per job, at a random point of the
        // next EXEC or job, so that EXEC's retries always end.
        let done = AtomicU64::new(0);
        let (jobs, faults) = std::thread::scope(|s| -> Result<(u64, u64), String> {
            let hammer = s.spawn(|| -> TestResult {
                let mut seen = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = done.load(Ordering::Relaxed);
                    if now == seen {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    seen = now;
                    n += 1;
                    std::thread::sleep(Duration::from_micros((n * 7919) % 3000));
                    match phase {
                        "dontneed" => m.dontneed(0..1)?,
                        "mprotect" => {
                            m.protect(2, libc::PROT_READ)?;
                            m.protect(2, libc::PROT_READ | libc::PROT_WRITE)?;
                        }
                        _ => m.remap(2)?,
                    }
                }
                Ok(())
            });
            let run = || -> Result<(u64, u64), String> {
                let (mut jobs, mut faults) = (0u64, 0u64);
                let end = Instant::now() + Duration::from_millis(1500);
                let mut i = 1u64;
                while Instant::now() < end || jobs < 20 {
                    i += 1;
                    m.write_u64(0, i);
                    omap.write_u64(0, 0).map_err(e2s)?;
                    let mut cb = CmdBuf::new();
                    cb.copy(OUT_VA, UP_VA, 8)
                        .store64(UP_VA + SZ_4K, i | 1 << 63)
                        .end();
                    let status = c.run(&cb)?;
                    jobs += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                    if status == -libc::EIO {
                        faults += 1;
                        // munmap leaves the userptr unmapped: bind it again.
                        unbind(d, c.vm, UP_VA, 4 * SZ_4K)?;
                        while let Err(e) = bind_userptr(d, c.vm, m.addr(), UP_VA, 4 * SZ_4K, 0) {
                            check!(e.contains("Bad address"), "rebind: {e}");
                        }
                        continue;
                    }
                    check!(status == 0, "{phase} job {i}: fence error {status}");
                    // The page the GPU read was current, or dropped since (zero).
                    let got = omap.read_u64(0).map_err(e2s)?;
                    check!(
                        got == i || got == 0,
                        "{phase} job {i}: the GPU read {got:#x}: stale"
                    );
                    // The page it wrote is never dropped: the CPU sees the write.
                    let w = m.read_u64(SZ_4K as usize);
                    check!(
                        w == i | 1 << 63,
                        "{phase} job {i}: the CPU reads {w:#x}: the GPU wrote an old page"
                    );
                }
                Ok((jobs, faults))
            };
            let r = run();
            stop.store(true, Ordering::Relaxed);
            hammer.join().map_err(|_| "hammer panicked".to_string())??;
            r
        })?;
        report.push(format!("{phase}: {jobs} jobs, {faults} faults"));
        if phase == "dontneed" {
            check!(faults == 0, "{phase}: {faults} faults");
        }
    }
    println!("# userptr_invalidate_race: {}", report.join("; "));
    let dbg = vm_debug(c.vm)?;
    check!(dbg.usable, "the VM became unusable");
    Ok(())
}

/// What a process that exits with jobs in flight on its userptrs does: see
/// [`userptr_exit_with_jobs_in_flight`].
pub fn userptr_client() -> TestResult {
    let d = Device::open().map_err(e2s)?;
    let c = Ctx::new(&d)?;
    let big = Bo::new(&d, 32 << 20, SYSTEM, 0).map_err(e2s)?;
    c.map(&big, 0, 0x1_0000_0000, 32 << 20, 0)?;
    let m = Anon::mmap(SZ_64K)?;
    bind_userptr(&d, c.vm, m.addr(), UP_VA, SZ_64K, 0)?;
    let mut cb = CmdBuf::new();
    cb.fill(0x1_0000_0000, 32 << 20, 0x1234_5678)
        .fill(UP_VA, SZ_64K, 0x8765_4321)
        .end();
    for _ in 0..4 {
        let bytes = cb.to_bytes();
        c.cmd.mmap().map_err(e2s)?.write(0, &bytes).map_err(e2s)?;
        d.exec(c.queue, CMD_VA, cb.len_bytes(), &[]).map_err(e2s)?;
    }
    // Exit with the jobs queued and running: the address space goes first
    // (its notifiers wait for the jobs), then the file.
    std::process::exit(0);
}

/// A process exits while the GPU runs jobs on its userptrs: it exits, and
/// nothing is left behind (kmemleak and lockdep check the rest).
pub fn userptr_exit_with_jobs_in_flight(_: &Device) -> TestResult {
    let exe = std::env::current_exe().map_err(e2s)?;
    let out = std::process::Command::new(&exe)
        .arg("--userptr-client")
        .output()
        .map_err(e2s)?;
    check!(
        out.status.success(),
        "client: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

/// Submits `cb` to `c`'s queue with a signal entry on a new syncobj, which
/// it returns, without waiting.
fn submit(d: &Device, c: &Ctx, cb: &CmdBuf) -> Result<u32, String> {
    c.cmd
        .mmap()
        .map_err(e2s)?
        .write(0, &cb.to_bytes())
        .map_err(e2s)?;
    let done = d.syncobj_create(0).map_err(e2s)?;
    d.exec(
        c.queue,
        CMD_VA,
        cb.len_bytes(),
        &[DrmMirageSync::signal(done)],
    )
    .map_err(e2s)?;
    Ok(done)
}

/// An invalidation returns only once the GPU is done with the old pages: a
/// job that reads a userptr, held on a semaphore, has finished when the
/// MADV_DONTNEED of its page returns, and read the page it was given.
pub fn userptr_invalidation_waits_for_the_gpu(d: &Device) -> TestResult {
    const SEM_VA: u64 = 0x7000_0000;
    let (c, out) = with_out(d)?;
    let sem = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    c.map(&sem, 0, SEM_VA, SZ_4K, 0)?;
    let m = Anon::mmap(SZ_4K)?;
    m.no_thp()?;
    m.write_u64(0, 0xa11ce);
    bind_userptr(d, c.vm, m.addr(), UP_VA, SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.sem_wait(SEM_VA, 1, mirage::cmd::SemCond::Eq32)
        .copy(OUT_VA, UP_VA, 8)
        .end();
    let done = submit(d, &c, &cb)?;
    // Mapped now: an mmap in the opener would wait for the mmap lock, which
    // the invalidation holds until the job ends.
    let smap = sem.mmap().map_err(e2s)?;
    let gate = smap.as_ptr() as usize;
    std::thread::scope(|s| -> TestResult {
        let opener = s.spawn(move || -> std::io::Result<()> {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: the first word of the semaphore BO's mapping, which
            // outlives the thread; the GPU reads it, hence volatile.
            unsafe { (gate as *mut u32).write_volatile(1) };
            Ok(())
        });
        m.dontneed(0..1)?;
        // The job must have ended before the invalidation returned.
        let r = d.syncobj_wait(done, 0, 0);
        opener
            .join()
            .map_err(|_| "opener panicked".to_string())?
            .map_err(e2s)?;
        check!(
            r.is_ok(),
            "MADV_DONTNEED returned while the GPU still used the page: {r:?}"
        );
        Ok(())
    })?;
    let status = crate::exec::fence_status(d, done)?;
    check!(status == 0, "the held job failed: fence error {status}");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(got == 0xa11ce, "the held job read {got:#x}");
    // The next job sees the new, zero page.
    out.mmap().map_err(e2s)?.write_u64(0, 0xff).map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 8).end();
    check!(c.run(&cb)? == 0, "job after the invalidation failed");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(got == 0, "the job after the invalidation read {got:#x}");
    Ok(())
}

/// An invalidation that comes after EXEC looked at its userptrs, before its
/// final check (debugfs `exec_check_delay_ms` holds it there), makes it
/// start again: here the page was unmapped, so the job faults instead of
/// reading the old page.
pub fn userptr_exec_rechecks_after_a_late_invalidation(d: &Device) -> TestResult {
    const KNOB: &str = "/sys/kernel/debug/mirage/exec_check_delay_ms";
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(2 * SZ_4K)?;
    m.no_thp()?;
    m.write_u64(0, 0x01d);
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, 0)?;
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 8).end();
    check!(c.run(&cb)? == 0, "first job failed");
    let omap = out.mmap().map_err(e2s)?;
    check!(omap.read_u64(0).map_err(e2s)? == 0x01d, "first read");
    omap.write_u64(0, 0).map_err(e2s)?;

    std::fs::write(KNOB, "600").map_err(|e| format!("{KNOB}: {e}"))?;
    let status = std::thread::scope(|s| -> Result<i32, String> {
        let unmapper = s.spawn(|| -> TestResult {
            std::thread::sleep(Duration::from_millis(200));
            m.remap(0)?;
            m.write_u64(0, 0x0e0);
            Ok(())
        });
        let status = c.run(&cb);
        unmapper
            .join()
            .map_err(|_| "unmapper panicked".to_string())??;
        status
    });
    let _ = std::fs::write(KNOB, "0");
    let status = status?;
    let got = omap.read_u64(0).map_err(e2s)?;
    check!(
        status == -libc::EIO && got == 0,
        "a job whose userptr was unmapped before its EXEC's final check: fence error \
         {status}, read {got:#x} (want -EIO, nothing)"
    );
    Ok(())
}

/// An async VM_BIND rebinds the invalidated userptrs too, before its own
/// ops: after it, none waits for revalidation, and the next EXEC finds the
/// new pages mapped without revalidating anything.
pub fn userptr_async_bind_revalidates(d: &Device) -> TestResult {
    let (c, out) = with_out(d)?;
    let m = Anon::mmap(2 * SZ_4K)?;
    m.no_thp()?;
    m.write_u64(0, 0x01d);
    bind_userptr(d, c.vm, m.addr(), UP_VA, 2 * SZ_4K, 0)?;
    m.dontneed(0..1)?;
    m.write_u64(0, 0x2e3);
    let before = vm_debug(c.vm)?;
    check!(
        before.userptr[1] == 1,
        "not invalidated: {:?}",
        before.userptr
    );
    // Any async bind: here, a BO elsewhere.
    let other = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let sig = d.syncobj_create(0).map_err(e2s)?;
    d.vm_bind(
        c.vm,
        0,
        &[DrmMirageVmBindOp::map(
            other.handle(),
            0,
            UP_VA + SZ_2M,
            SZ_4K,
        )],
        &[DrmMirageSync::signal(sig)],
    )
    .map_err(e2s)?;
    d.syncobj_wait(sig, 0, crate::deadline_in(20_000))
        .map_err(e2s)?;
    let after = vm_debug(c.vm)?;
    check!(
        after.userptr[1] == 0 && after.userptr[4] == before.userptr[4] + 1,
        "the async bind did not revalidate: {:?} -> {:?}",
        before.userptr,
        after.userptr
    );
    let mut cb = CmdBuf::new();
    cb.copy(OUT_VA, UP_VA, 8).end();
    check!(c.run(&cb)? == 0, "job after the bind failed");
    let got = out.mmap().map_err(e2s)?.read_u64(0).map_err(e2s)?;
    check!(got == 0x2e3, "the GPU read {got:#x}, not the new page");
    let last = vm_debug(c.vm)?;
    check!(
        last.userptr[4] == after.userptr[4],
        "the EXEC revalidated again: {:?}",
        last.userptr
    );
    Ok(())
}
