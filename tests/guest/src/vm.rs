//! GEM objects, VMs and binds through the uAPI: every error with its exact
//! errno, and the paths that succeed.

use crate::exec::{fence_status, Ctx, CMD_SIZE, CMD_VA};
use crate::{check, deadline_in, e2s, errno, TestResult};
use mirage::cmd::{fnv1a64, CmdBuf};
use mirage::uapi::*;
use mirage::{vm_bind_args, Bo, Device};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

const SZ_4K: u64 = 4096;
const SZ_2M: u64 = 2 << 20;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;

pub fn gem_create_and_cpu_mmap(d: &Device) -> TestResult {
    let bo = Bo::new(d, 16 * SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let map = bo.mmap().map_err(e2s)?;
    check!(map.len() == 16 * 4096, "mapping of {} bytes", map.len());
    for i in 0..16 * 512 {
        check!(
            map.read_u64(i * 8).map_err(e2s)? == 0,
            "new BO not zero at {}",
            i * 8
        );
    }
    for i in 0..16 * 512u64 {
        map.write_u64(i as usize * 8, 0x5eed_0000_0000_0000 | i)
            .map_err(e2s)?;
    }
    // A second mapping of the same BO sees the first one's writes.
    let again = d.mmap(bo.handle(), 16 * 4096).map_err(e2s)?;
    for i in 0..16 * 512u64 {
        let v = again.read_u64(i as usize * 8).map_err(e2s)?;
        check!(v == 0x5eed_0000_0000_0000 | i, "word {i}: {v:#x}");
    }
    Ok(())
}

pub fn gem_create_rejects_bad_input(d: &Device) -> TestResult {
    let base = DrmMirageGemCreate {
        size: SZ_4K,
        flags: SYSTEM,
        ..Default::default()
    };
    let cases = [
        (
            "no placement",
            DrmMirageGemCreate { flags: 0, ..base },
            libc::EINVAL,
        ),
        (
            "VRAM",
            DrmMirageGemCreate {
                flags: DRM_MIRAGE_GEM_CREATE_FLAG_VRAM,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "two placements",
            DrmMirageGemCreate {
                flags: SYSTEM | DRM_MIRAGE_GEM_CREATE_FLAG_VRAM,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unknown flag",
            DrmMirageGemCreate {
                flags: SYSTEM | 4,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "size 0",
            DrmMirageGemCreate { size: 0, ..base },
            libc::EINVAL,
        ),
        (
            "size 4095",
            DrmMirageGemCreate { size: 4095, ..base },
            libc::EINVAL,
        ),
        (
            "size 4097",
            DrmMirageGemCreate { size: 4097, ..base },
            libc::EINVAL,
        ),
        (
            "huge size",
            DrmMirageGemCreate {
                size: !4095,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "extensions",
            DrmMirageGemCreate {
                extensions: 8,
                ..base
            },
            libc::EINVAL,
        ),
        ("pad", DrmMirageGemCreate { pad: 1, ..base }, libc::EINVAL),
        (
            "reserved",
            DrmMirageGemCreate {
                reserved: [0, 1],
                ..base
            },
            libc::EINVAL,
        ),
        (
            "unknown VM",
            DrmMirageGemCreate {
                vm_id: 0x7777,
                ..base
            },
            libc::ENOENT,
        ),
    ];
    for (what, mut a, want) in cases {
        let before = a;
        let e = errno(d.gem_create_raw(&mut a));
        check!(e == Some(want), "{what}: got {e:?}, want {want}");
        check!(a == before, "{what}: argument modified on failure");
    }
    let mut a = DrmMirageGemMmapOffset {
        handle: 0x7777,
        ..Default::default()
    };
    let e = errno(d.gem_mmap_offset_raw(&mut a));
    check!(e == Some(libc::ENOENT), "mmap offset of no BO: {e:?}");
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    for (what, a) in [
        (
            "flags",
            DrmMirageGemMmapOffset {
                handle: bo.handle(),
                flags: 1,
                ..Default::default()
            },
        ),
        (
            "extensions",
            DrmMirageGemMmapOffset {
                handle: bo.handle(),
                extensions: 1,
                ..Default::default()
            },
        ),
        (
            "reserved",
            DrmMirageGemMmapOffset {
                handle: bo.handle(),
                reserved: [1, 0],
                ..Default::default()
            },
        ),
    ] {
        let mut a = a;
        let e = errno(d.gem_mmap_offset_raw(&mut a));
        check!(e == Some(libc::EINVAL), "mmap offset {what}: {e:?}");
    }
    Ok(())
}

pub fn gem_prime_export_of_private_bo_is_refused(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let private = Bo::new(d, SZ_4K, SYSTEM, vm).map_err(e2s)?;
    let export = |flags| errno(d.prime_handle_to_fd(private.handle(), flags).map(drop));
    // Its dma-buf would carry the VM's reservation object: refused whatever the flags, and
    // as often as asked (a refusal leaves nothing behind that a retry could reuse).
    for flags in [0, DRM_CLOEXEC, DRM_CLOEXEC | DRM_RDWR, DRM_CLOEXEC] {
        let e = export(flags);
        check!(
            e == Some(libc::EPERM),
            "flags {flags:#x}: got {e:?}, want EPERM"
        );
    }
    // The BO stays private once its VM is gone.
    d.vm_destroy(vm).map_err(e2s)?;
    let e = export(DRM_CLOEXEC);
    check!(
        e == Some(libc::EPERM),
        "VM destroyed: got {e:?}, want EPERM"
    );
    drop(private);

    let e = errno(d.prime_handle_to_fd(0x7777, DRM_CLOEXEC).map(drop));
    check!(
        e == Some(libc::ENOENT),
        "no such handle: got {e:?}, want ENOENT"
    );
    let external = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let e = errno(
        d.prime_handle_to_fd(external.handle(), libc::O_WRONLY as u32)
            .map(drop),
    );
    check!(
        e == Some(libc::EINVAL),
        "unknown flag: got {e:?}, want EINVAL"
    );
    Ok(())
}

/// The flags of descriptor `fd` (`F_GETFD`) and of its open file (`F_GETFL`).
fn fd_flags(fd: BorrowedFd<'_>) -> Result<(i32, i32), String> {
    // SAFETY: F_GETFD and F_GETFL only read the state of a descriptor we hold.
    let (fd_flags, fl_flags) = unsafe {
        (
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
        )
    };
    check!(
        fd_flags >= 0 && fl_flags >= 0,
        "fcntl: {}",
        io::Error::last_os_error()
    );
    Ok((fd_flags, fl_flags))
}

pub fn gem_prime_external_bo_exports_and_imports(d: &Device) -> TestResult {
    let size = 4 * SZ_4K;
    let bo = Bo::new(d, size, SYSTEM, 0).map_err(e2s)?;
    let map = bo.mmap().map_err(e2s)?;
    for i in 0..size / 8 {
        let word = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1);
        map.write_u64(i as usize * 8, word).map_err(e2s)?;
    }
    let written = map.to_vec();

    let fd = d
        .prime_handle_to_fd(bo.handle(), DRM_CLOEXEC | DRM_RDWR)
        .map_err(e2s)?;
    // The flags reach the dma-buf: DRM_CLOEXEC the descriptor, DRM_RDWR the file.
    let (fd_flags, fl_flags) = fd_flags(fd.as_fd())?;
    check!(
        fd_flags & libc::FD_CLOEXEC != 0,
        "no FD_CLOEXEC: {fd_flags:#x}"
    );
    check!(
        fl_flags & libc::O_ACCMODE == libc::O_RDWR,
        "dma-buf not O_RDWR: {fl_flags:#x}"
    );
    // SAFETY: lseek on a descriptor we hold.
    let end = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
    check!(end == size as i64, "dma-buf of {end} bytes, want {size}");

    // Imported into the file that exported it: the BO's own handle.
    let h = d.prime_fd_to_handle(fd.as_fd()).map_err(e2s)?;
    check!(
        h == bo.handle(),
        "same file: handle {h}, want {}",
        bo.handle()
    );

    // Imported into another file: a handle of the same memory, bit for bit.
    let other = Device::open_path(d.path()).map_err(e2s)?;
    let h2 = other.prime_fd_to_handle(fd.as_fd()).map_err(e2s)?;
    let again = other.prime_fd_to_handle(fd.as_fd()).map_err(e2s)?;
    check!(again == h2, "second import: handle {again}, want {h2}");
    let map2 = other.mmap(h2, size as usize).map_err(e2s)?;
    let seen = map2.to_vec();
    if let Some(i) = (0..written.len()).find(|&i| seen[i] != written[i]) {
        return Err(format!(
            "importer sees {:#04x} at byte {i}, exporter wrote {:#04x}",
            seen[i], written[i]
        ));
    }
    // Shared, not copied: the importer's stores show through the exporter's mapping.
    map2.write_u64(size as usize - 8, 0x5eed_f00d_cafe_d00d)
        .map_err(e2s)?;
    let v = map.read_u64(size as usize - 8).map_err(e2s)?;
    check!(v == 0x5eed_f00d_cafe_d00d, "exporter reads {v:#x}");

    // Only dma-bufs import.
    let e = errno(other.prime_fd_to_handle(d.file().as_fd()).map(drop));
    check!(
        e == Some(libc::EINVAL),
        "a DRM file: got {e:?}, want EINVAL"
    );
    let mut a = DrmPrimeHandle {
        fd: -1,
        ..Default::default()
    };
    let e = errno(other.prime_fd_to_handle_raw(&mut a));
    check!(e == Some(libc::EBADF), "fd -1: got {e:?}, want EBADF");
    other.gem_close(h2).map_err(e2s)?;
    Ok(())
}

pub fn vm_create_and_destroy(d: &Device) -> TestResult {
    let a = d.vm_create(0).map_err(e2s)?;
    let b = d.vm_create(0).map_err(e2s)?;
    check!(a != 0 && b != 0 && a != b, "ids {a} and {b}");
    for (what, mut args) in [
        (
            "flags",
            DrmMirageVmCreate {
                flags: 1,
                ..Default::default()
            },
        ),
        (
            "extensions",
            DrmMirageVmCreate {
                extensions: 1,
                ..Default::default()
            },
        ),
        (
            "reserved",
            DrmMirageVmCreate {
                reserved: [0, 1],
                ..Default::default()
            },
        ),
    ] {
        let e = errno(d.vm_create_raw(&mut args));
        check!(e == Some(libc::EINVAL), "create with {what}: {e:?}");
    }
    let mut bad = DrmMirageVmDestroy {
        vm_id: a,
        pad: 1,
        ..Default::default()
    };
    let e = errno(d.vm_destroy_raw(&mut bad));
    check!(e == Some(libc::EINVAL), "destroy with pad: {e:?}");
    d.vm_destroy(a).map_err(e2s)?;
    let e = errno(d.vm_destroy(a));
    check!(e == Some(libc::ENOENT), "second destroy: {e:?}");
    // VM ids are per file.
    let other = Device::open().map_err(e2s)?;
    let e = errno(other.vm_destroy(b));
    check!(e == Some(libc::ENOENT), "another file's VM: {e:?}");
    d.vm_destroy(b).map_err(e2s)?;
    Ok(())
}

/// Sends `args` and checks the errno, and that the VM still works.
fn bind_fails(d: &Device, what: &str, mut args: DrmMirageVmBind, want: i32) -> TestResult {
    let e = errno(d.vm_bind_raw(&mut args));
    check!(e == Some(want), "{what}: got {e:?}, want {want}");
    Ok(())
}

pub fn vm_bind_rejects_bad_input(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let other_vm = d.vm_create(0).map_err(e2s)?;
    let bo = Bo::new(d, 4 * SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let private_other = Bo::new(d, SZ_4K, SYSTEM, other_vm).map_err(e2s)?;
    let h = bo.handle();
    let map = DrmMirageVmBindOp::map(h, 0, 0x10_0000, 4 * SZ_4K);
    let one = |op: DrmMirageVmBindOp| vm_bind_args(vm, 0, &[op], &[]).map_err(e2s);

    // The struct itself.
    let good = one(map)?;
    bind_fails(
        d,
        "extensions",
        DrmMirageVmBind {
            extensions: 1,
            ..good
        },
        libc::EINVAL,
    )?;
    bind_fails(d, "pad", DrmMirageVmBind { pad: 1, ..good }, libc::EINVAL)?;
    bind_fails(d, "pad2", DrmMirageVmBind { pad2: 1, ..good }, libc::EINVAL)?;
    bind_fails(
        d,
        "reserved",
        DrmMirageVmBind {
            reserved: [0, 1],
            ..good
        },
        libc::EINVAL,
    )?;
    bind_fails(
        d,
        "no ops",
        DrmMirageVmBind {
            num_binds: 0,
            ..good
        },
        libc::EINVAL,
    )?;
    bind_fails(
        d,
        "unknown VM",
        DrmMirageVmBind {
            vm_id: 0x7777,
            ..good
        },
        libc::ENOENT,
    )?;
    bind_fails(
        d,
        "unknown queue",
        DrmMirageVmBind {
            exec_queue_id: 5,
            ..good
        },
        libc::ENOENT,
    )?;
    bind_fails(
        d,
        "65 syncs",
        DrmMirageVmBind {
            num_syncs: 65,
            syncs: 0x1000,
            ..good
        },
        libc::EINVAL,
    )?;

    // Over 1024 ops: xe's bind-array-enobufs, refused before the array is read.
    let many = vec![map; 1025];
    bind_fails(
        d,
        "1025 ops",
        vm_bind_args(vm, 0, &many, &[]).map_err(e2s)?,
        libc::ENOBUFS,
    )?;
    // An array the kernel cannot read.
    let mut unreadable = vm_bind_args(vm, 0, &[map, map], &[]).map_err(e2s)?;
    unreadable.ops = DrmMirageVmBindOps::vector(0x1000);
    bind_fails(d, "unreadable ops", unreadable, libc::EFAULT)?;

    // Each op field.
    let unmap = DrmMirageVmBindOp::unmap(0x10_0000, SZ_4K);
    let all = DrmMirageVmBindOp::unmap_all(h);
    let cases: Vec<(&str, DrmMirageVmBindOp, i32)> = vec![
        (
            "op extensions",
            DrmMirageVmBindOp {
                extensions: 1,
                ..map
            },
            libc::EINVAL,
        ),
        ("op pad", DrmMirageVmBindOp { pad: 1, ..map }, libc::EINVAL),
        (
            "op pad2",
            DrmMirageVmBindOp { pad2: 1, ..map },
            libc::EINVAL,
        ),
        (
            "op reserved",
            DrmMirageVmBindOp {
                reserved: [0, 0, 1],
                ..map
            },
            libc::EINVAL,
        ),
        (
            "prefetch region",
            DrmMirageVmBindOp {
                prefetch_mem_region_instance: 1,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "MAP_USERPTR (not yet)",
            DrmMirageVmBindOp { op: 2, ..map },
            libc::EINVAL,
        ),
        (
            "PREFETCH (not yet)",
            DrmMirageVmBindOp { op: 4, ..map },
            libc::EINVAL,
        ),
        (
            "unknown op",
            DrmMirageVmBindOp { op: 5, ..map },
            libc::EINVAL,
        ),
        ("unknown flag", map.with_flags(1 << 1), libc::EINVAL),
        (
            "CPU_ADDR_MIRROR (not yet)",
            map.with_flags(1 << 4),
            libc::EINVAL,
        ),
        ("unknown pat", map.with_pat(2), libc::EINVAL),
        (
            "addr unaligned",
            DrmMirageVmBindOp {
                addr: 0x10_0800,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "range unaligned",
            DrmMirageVmBindOp { range: 100, ..map },
            libc::EINVAL,
        ),
        (
            "offset unaligned",
            DrmMirageVmBindOp {
                obj_offset: 512,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "range 0",
            DrmMirageVmBindOp { range: 0, ..map },
            libc::EINVAL,
        ),
        (
            "MAP of no object",
            DrmMirageVmBindOp { obj: 0, ..map },
            libc::EINVAL,
        ),
        (
            "past the BO",
            DrmMirageVmBindOp {
                obj_offset: SZ_4K,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "larger than the BO",
            DrmMirageVmBindOp {
                range: 5 * SZ_4K,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "past the VA space",
            DrmMirageVmBindOp {
                addr: (1 << 48) - SZ_4K,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "VA wraps",
            DrmMirageVmBindOp { addr: !4095, ..map },
            libc::EINVAL,
        ),
        (
            "unknown BO",
            DrmMirageVmBindOp { obj: 0x7777, ..map },
            libc::ENOENT,
        ),
        (
            "another VM's private BO",
            DrmMirageVmBindOp {
                obj: private_other.handle(),
                range: SZ_4K,
                ..map
            },
            libc::EINVAL,
        ),
        (
            "UNMAP with an object",
            DrmMirageVmBindOp { obj: h, ..unmap },
            libc::EINVAL,
        ),
        (
            "UNMAP with flags",
            unmap.with_flags(DRM_MIRAGE_VM_BIND_FLAG_READONLY),
            libc::EINVAL,
        ),
        ("UNMAP with pat", unmap.with_pat(1), libc::EINVAL),
        (
            "UNMAP range 0",
            DrmMirageVmBindOp { range: 0, ..unmap },
            libc::EINVAL,
        ),
        (
            "UNMAP past the VA space",
            DrmMirageVmBindOp {
                addr: 1 << 48,
                ..unmap
            },
            libc::EINVAL,
        ),
        (
            "UNMAP_ALL with a range",
            DrmMirageVmBindOp {
                range: SZ_4K,
                ..all
            },
            libc::EINVAL,
        ),
        (
            "UNMAP_ALL with an address",
            DrmMirageVmBindOp { addr: SZ_4K, ..all },
            libc::EINVAL,
        ),
        (
            "UNMAP_ALL of no object",
            DrmMirageVmBindOp { obj: 0, ..all },
            libc::EINVAL,
        ),
        (
            "UNMAP_ALL of an unknown BO",
            DrmMirageVmBindOp { obj: 0x7777, ..all },
            libc::ENOENT,
        ),
    ];
    for (what, op, want) in cases {
        bind_fails(d, what, one(op)?, want)?;
        // The same op last in an array of good ones fails the same way.
        let ops = [map, unmap, op];
        bind_fails(d, what, vm_bind_args(vm, 0, &ops, &[]).map_err(e2s)?, want)?;
    }
    // After all that, the VM takes a good bind.
    d.vm_bind(vm, 0, &[map], &[]).map_err(e2s)?;
    d.vm_destroy(vm).map_err(e2s)?;
    d.vm_destroy(other_vm).map_err(e2s)?;
    Ok(())
}

pub fn vm_bind_map_and_unmap(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let small = Bo::new(d, 16 * SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let big = Bo::new(d, 2 * SZ_2M + SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let private = Bo::new(d, 4 * SZ_4K, SYSTEM, vm).map_err(e2s)?;
    let bind = |ops: &[DrmMirageVmBindOp]| d.vm_bind(vm, 0, ops, &[]).map_err(e2s);
    // Sizes 4K, 64K, 2M, 2M+4K at several addresses, some over each other.
    bind(&[DrmMirageVmBindOp::map(
        small.handle(),
        0,
        0x1000_0000,
        SZ_4K,
    )])?;
    bind(&[DrmMirageVmBindOp::map(
        small.handle(),
        0,
        0x1001_0000,
        16 * SZ_4K,
    )])?;
    bind(&[DrmMirageVmBindOp::map(big.handle(), 0, 0x4000_0000, SZ_2M)])?;
    bind(&[DrmMirageVmBindOp::map(
        big.handle(),
        SZ_2M,
        0x4020_0000,
        SZ_2M + SZ_4K,
    )])?;
    bind(&[
        DrmMirageVmBindOp::map(private.handle(), 0, 0x4010_0000, 4 * SZ_4K)
            .with_flags(DRM_MIRAGE_VM_BIND_FLAG_READONLY | DRM_MIRAGE_VM_BIND_FLAG_NOEXEC)
            .with_pat(DRM_MIRAGE_PAT_UC),
    ])?;
    // Partial unmaps: front, back, middle.
    bind(&[
        DrmMirageVmBindOp::unmap(0x1001_0000, SZ_4K),
        DrmMirageVmBindOp::unmap(0x1001_f000, SZ_4K),
        DrmMirageVmBindOp::unmap(0x1001_4000, 2 * SZ_4K),
        DrmMirageVmBindOp::unmap(0x4030_0000, SZ_4K),
    ])?;
    // Unmapping where nothing is mapped is not an error.
    bind(&[DrmMirageVmBindOp::unmap(0x7000_0000, SZ_2M)])?;
    bind(&[
        DrmMirageVmBindOp::unmap_all(big.handle()),
        DrmMirageVmBindOp::unmap_all(big.handle()),
    ])?;
    // A map array, then every mapping of a BO at once.
    let ops: Vec<_> = (0..64)
        .map(|i| {
            DrmMirageVmBindOp::map(
                small.handle(),
                (i % 16) * SZ_4K,
                0x2000_0000 + i * SZ_4K,
                SZ_4K,
            )
        })
        .collect();
    bind(&ops)?;
    bind(&[DrmMirageVmBindOp::unmap_all(small.handle())])?;
    // Destroying a VM with mappings is allowed.
    bind(&[DrmMirageVmBindOp::map(
        small.handle(),
        0,
        0x3000_0000,
        16 * SZ_4K,
    )])?;
    d.vm_destroy(vm).map_err(e2s)?;
    Ok(())
}

pub fn vm_bind_syncs(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(e2s)?;
    let map = DrmMirageVmBindOp::map(bo.handle(), 0, 0x100_0000, SZ_4K);
    let unsignalled = d.syncobj_create(0).map_err(e2s)?;
    let binary = d.syncobj_create(0).map_err(e2s)?;
    let timeline = d.syncobj_create(0).map_err(e2s)?;
    let ready = d.syncobj_create(DRM_SYNCOBJ_CREATE_SIGNALED).map_err(e2s)?;

    // Out-fences: a binary syncobj gets the bind's fence, a timeline one a new point.
    d.vm_bind(
        vm,
        0,
        &[map],
        &[
            DrmMirageSync::signal(binary),
            DrmMirageSync::signal_point(timeline, 5),
        ],
    )
    .map_err(e2s)?;
    // The bind is asynchronous: its fences signal once it has executed.
    d.syncobj_wait(binary, 0, deadline_in(10_000))
        .map_err(|e| format!("binary out-syncobj not signalled: {e}"))?;
    d.syncobj_wait(timeline, 5, deadline_in(10_000))
        .map_err(|e| format!("timeline point 5 not signalled: {e}"))?;
    check!(
        d.syncobj_query(timeline).map_err(e2s)? == 5,
        "timeline not at point 5"
    );
    // In-fences that have signalled, binary and timeline.
    d.vm_bind(
        vm,
        0,
        &[DrmMirageVmBindOp::unmap(0x100_0000, SZ_4K)],
        &[
            DrmMirageSync::wait(ready),
            DrmMirageSync::wait_point(timeline, 5),
            DrmMirageSync::signal_point(timeline, 6),
        ],
    )
    .map_err(e2s)?;
    d.syncobj_wait(timeline, 6, deadline_in(10_000))
        .map_err(|e| format!("timeline point 6 not signalled: {e}"))?;
    check!(
        d.syncobj_query(timeline).map_err(e2s)? == 6,
        "timeline not at point 6"
    );

    let fails = |what: &str, syncs: &[DrmMirageSync], want: i32| -> TestResult {
        let e = errno(d.vm_bind(vm, 0, &[map], syncs));
        check!(e == Some(want), "{what}: got {e:?}, want {want}");
        Ok(())
    };
    // A wait for a syncobj with no fence, or a point not submitted yet, fails.
    fails(
        "wait on an empty syncobj",
        &[DrmMirageSync::wait(unsignalled)],
        libc::EINVAL,
    )?;
    fails(
        "wait on a future point",
        &[DrmMirageSync::wait_point(timeline, 7)],
        libc::EINVAL,
    )?;
    fails(
        "unknown syncobj",
        &[DrmMirageSync::signal(0x7777)],
        libc::ENOENT,
    )?;
    let s = DrmMirageSync::signal(binary);
    fails(
        "sync extensions",
        &[DrmMirageSync { extensions: 1, ..s }],
        libc::EINVAL,
    )?;
    fails("sync pad", &[DrmMirageSync { pad: 1, ..s }], libc::EINVAL)?;
    fails(
        "sync reserved",
        &[DrmMirageSync {
            reserved: [1, 0],
            ..s
        }],
        libc::EINVAL,
    )?;
    fails(
        "sync flags",
        &[DrmMirageSync { flags: 2, ..s }],
        libc::EINVAL,
    )?;
    fails(
        "sync type",
        &[DrmMirageSync { type_: 2, ..s }],
        libc::EINVAL,
    )?;
    fails(
        "binary with a point",
        &[DrmMirageSync {
            timeline_value: 1,
            ..s
        }],
        libc::EINVAL,
    )?;
    fails(
        "timeline point 0",
        &[DrmMirageSync::signal_point(timeline, 0)],
        libc::EINVAL,
    )?;
    // A failed bind signals nothing: the bad op comes after a good signal entry.
    let bad = DrmMirageVmBindOp { obj: 0x7777, ..map };
    let fresh = d.syncobj_create(0).map_err(e2s)?;
    let e = errno(d.vm_bind(vm, 0, &[bad], &[DrmMirageSync::signal(fresh)]));
    check!(e == Some(libc::ENOENT), "bad op: {e:?}");
    let e = errno(d.syncobj_wait(fresh, 0, 0));
    check!(
        e == Some(libc::ETIME),
        "a failed bind signalled its out-syncobj ({e:?})"
    );
    for h in [unsignalled, binary, timeline, ready, fresh] {
        d.syncobj_destroy(h).map_err(e2s)?;
    }
    d.vm_destroy(vm).map_err(e2s)?;
    Ok(())
}

/// What `/sys/kernel/debug/mirage/vm-*` says about VM `vm_id` of this process.
pub struct VmDebug {
    pub usable: bool,
    /// reserved, used, returned, live, exhausted, unused, cancelled,
    /// available: the pool's counters, in the order debugfs prints them.
    pub pool: [u64; 8],
    /// (start, end, BO offset) of each mapping, in address order.
    pub vas: Vec<(u64, u64, u64)>,
    /// Leaves of the page table: 1 GiB blocks, 2 MiB blocks, 4 KiB pages.
    pub leaves: [u64; 3],
    /// Userptrs: live, invalidated, invalidations, revalidated by the last
    /// EXEC that revalidated any, revalidated in all.
    pub userptr: [u64; 5],
    /// The userptr id of each mapping of a userptr, in address order.
    pub userptr_vas: Vec<(u64, u64, u64, u32)>,
    /// GPU page faults the VM resolved and the ones it did not (the job was aborted).
    pub faults: [u64; 2],
    /// (start, end, PAT, autoreset) of each CPU-address mirror, in address order.
    pub mirror_vas: Vec<(u64, u64, u16, bool)>,
    /// The SVM ranges of a fault-mode VM.
    pub svm_ranges: Option<u64>,
}

impl VmDebug {
    /// Checks that the VM shows what it showed as `before`: the VA tree, the pool's counters
    /// and the page table's leaves. `what` names the step.
    pub fn expect_unchanged(&self, before: &VmDebug, what: &str) -> TestResult {
        check!(
            self.vas == before.vas,
            "{what}: VA tree changed: {:x?} -> {:x?}",
            before.vas,
            self.vas
        );
        check!(
            self.pool == before.pool,
            "{what}: pool changed: {:?} -> {:?}",
            before.pool,
            self.pool
        );
        check!(
            self.leaves == before.leaves,
            "{what}: pt leaves changed: {:?} -> {:?}",
            before.leaves,
            self.leaves
        );
        Ok(())
    }

    /// Bytes the page table maps.
    pub fn mapped(&self) -> u64 {
        self.leaves[0] * (1 << 30) + self.leaves[1] * SZ_2M + self.leaves[2] * SZ_4K
    }
}

/// Makes shmem, and so BOs, use 2 MiB folios where they fit, so that mappings get 2 MiB blocks;
/// puts the old policy back when dropped.
pub struct ShmemHugePages(Vec<(&'static str, String)>);

impl ShmemHugePages {
    pub fn force() -> Result<Self, String> {
        let knobs = [
            ("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "force"),
            (
                "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled",
                "inherit",
            ),
        ];
        let mut old = Vec::new();
        for (path, want) in knobs {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            // The current choice is the bracketed one.
            let cur = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
                .ok_or(format!("{path}: {text:?}"))?;
            old.push((path, cur.to_string()));
            std::fs::write(path, want).map_err(|e| format!("{path}: {e}"))?;
        }
        check!(!old.is_empty(), "no shmem transparent huge page control");
        Ok(Self(old))
    }
}

impl Drop for ShmemHugePages {
    fn drop(&mut self) {
        for (path, v) in self.0.iter().rev() {
            let _ = std::fs::write(path, v);
        }
    }
}

pub fn vm_debug(vm_id: u32) -> Result<VmDebug, String> {
    let want = format!("vm {vm_id} pid {} ", std::process::id());
    let dir = std::fs::read_dir("/sys/kernel/debug/mirage").map_err(e2s)?;
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = text.lines();
        let Some(head) = lines.next().filter(|l| l.starts_with(&want)) else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(u64::MAX);
        let pool_line = lines.next().ok_or("no pool line")?;
        let nums: Vec<u64> = pool_line
            .split_whitespace()
            .skip(1)
            .skip(1)
            .step_by(2)
            .map(|x| x.parse().unwrap_or(u64::MAX))
            .collect();
        let pool: [u64; 8] = nums
            .try_into()
            .map_err(|_| format!("pool line {pool_line:?}"))?;
        let rest: Vec<&str> = lines.collect();
        let leaves_line = rest
            .iter()
            .find(|l| l.starts_with("pt leaves "))
            .ok_or("no pt line")?;
        let f: Vec<&str> = leaves_line.split_whitespace().collect();
        let leaves = match f[..] {
            ["pt", "leaves", "1g", a, "2m", b, "4k", c] => {
                [a, b, c].map(|x| x.parse().unwrap_or(u64::MAX))
            }
            _ => return Err(format!("pt line {leaves_line:?}")),
        };
        let vas = rest
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5 && f[0] == "va").then(|| (hex(f[1]), hex(f[2]), hex(f[4])))
            })
            .collect();
        let userptr_vas = rest
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 7 && f[0] == "va" && f[5] == "userptr").then(|| {
                    (
                        hex(f[1]),
                        hex(f[2]),
                        hex(f[4]),
                        f[6].parse().unwrap_or(u32::MAX),
                    )
                })
            })
            .collect();
        let up_line = rest
            .iter()
            .find(|l| l.starts_with("userptr live "))
            .ok_or("no userptr line")?;
        let nums: Vec<u64> = up_line
            .split_whitespace()
            .skip(2)
            .step_by(2)
            .map(|x| x.parse().unwrap_or(u64::MAX))
            .collect();
        let userptr: [u64; 5] = nums
            .try_into()
            .map_err(|_| format!("userptr line {up_line:?}"))?;
        let faults_line = rest
            .iter()
            .find(|l| l.starts_with("faults "))
            .ok_or("no faults line")?;
        let faults = match faults_line.split_whitespace().collect::<Vec<_>>()[..] {
            ["faults", "resolved", a, "aborted", b] => {
                [a, b].map(|x| x.parse().unwrap_or(u64::MAX))
            }
            _ => return Err(format!("faults line {faults_line:?}")),
        };
        let mirror_vas = rest
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 10 && f[0] == "va" && f[5] == "mirror").then(|| {
                    (
                        hex(f[1]),
                        hex(f[2]),
                        f[7].parse().unwrap_or(u16::MAX),
                        f[9] == "1",
                    )
                })
            })
            .collect();
        let svm_ranges = rest
            .iter()
            .find_map(|l| l.strip_prefix("svm ranges "))
            .map(|n| n.trim().parse().unwrap_or(u64::MAX));
        return Ok(VmDebug {
            faults,
            mirror_vas,
            svm_ranges,
            usable: head.ends_with("usable 1"),
            pool,
            vas,
            leaves,
            userptr,
            userptr_vas,
        });
    }
    Err(format!("no debugfs file for VM {vm_id}"))
}

/// drm_gpuvm's split semantics, by hand: (start, end, bo, offset), no merging.
#[derive(Clone, Default)]
struct Model(Vec<(u64, u64, usize, u64)>);

impl Model {
    fn unmap(&mut self, start: u64, end: u64) {
        let mut out = Vec::new();
        for &(s, e, bo, off) in &self.0 {
            if e <= start || s >= end {
                out.push((s, e, bo, off));
                continue;
            }
            if s < start {
                out.push((s, start, bo, off));
            }
            if e > end {
                out.push((end, e, bo, off + (end - s)));
            }
        }
        out.sort();
        self.0 = out;
    }

    fn map(&mut self, start: u64, end: u64, bo: usize, off: u64) {
        self.unmap(start, end);
        self.0.push((start, end, bo, off));
        self.0.sort();
    }

    fn unmap_all(&mut self, bo: usize) {
        self.0.retain(|m| m.2 != bo);
    }

    fn vas(&self) -> Vec<(u64, u64, u64)> {
        self.0.iter().map(|&(s, e, _, o)| (s, e, o)).collect()
    }
}

/// Random map, unmap and UNMAP_ALL arrays, 2 MiB blocks and pieces of them included. After
/// each bind:
/// - the VA tree (through debugfs) matches the model;
/// - every page of every mapping reaches the right BO bytes: the GPU checksums each mapping,
///   and each BO page holds different bytes;
/// - the page table maps nothing else: its leaves add up to the model's mapped bytes;
/// - the page-table budget was exact.
///
/// An array with one bad op must change nothing.
pub fn vm_bind_random_vs_model(d: &Device) -> TestResult {
    const BASE: u64 = 0x8000_0000;
    const WINDOW: u64 = 16 << 20;
    const RESULTS: u64 = CMD_SIZE / 2;
    // BOs get 2 MiB folios, so that 2 MiB-aligned maps get blocks and unmaps split them.
    let huge = ShmemHugePages::force()?;
    let c = Ctx::new(d)?;
    let vm = c.vm;
    let sizes = [4 * SZ_2M, SZ_2M + 64 * SZ_4K, 64 * SZ_4K];
    let bos: Vec<Bo> = sizes
        .iter()
        .map(|&s| Bo::new(d, s, SYSTEM, 0))
        .collect::<std::io::Result<_>>()
        .map_err(e2s)?;
    // Every 8 bytes of every BO differ. The pages are allocated here, while `huge` holds.
    let mut contents = Vec::new();
    for (b, bo) in bos.iter().enumerate() {
        let bytes: Vec<u8> = (0..bo.size() / 8)
            .flat_map(|i| ((b as u64 + 1) << 56 | i).to_le_bytes())
            .collect();
        bo.mmap().map_err(e2s)?.write(0, &bytes).map_err(e2s)?;
        contents.push(bytes);
    }
    // A BO private to another VM: an array whose last op maps it fails whole, after the ops
    // ahead of it were checked and their BOs' pages taken.
    let other_vm = d.vm_create(0).map_err(e2s)?;
    let foreign = Bo::new(d, SZ_4K, SYSTEM, other_vm).map_err(e2s)?;
    let mut model = Model::default();
    // The command BO, outside the window: no random op touches it.
    model.map(CMD_VA, CMD_VA + CMD_SIZE, usize::MAX, 0);
    let mut steps_with_blocks = 0;
    let mut seed: u64 = 0x5eed_b1d5;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..300 {
        let mut ops = Vec::new();
        let mut next = model.clone();
        for _ in 0..1 + rnd(4) {
            let align = if rnd(2) == 0 { SZ_2M } else { SZ_4K };
            let addr = BASE + rnd(WINDOW / align) * align;
            match rnd(6) {
                0..=2 => {
                    let b = rnd(3) as usize;
                    let size = sizes[b];
                    let off = rnd(size / SZ_4K) * SZ_4K;
                    let off = if rnd(2) == 0 { off & !(SZ_2M - 1) } else { off };
                    let max = (size - off).min(BASE + WINDOW - addr);
                    let range = (1 + rnd(max / SZ_4K)) * SZ_4K;
                    ops.push(DrmMirageVmBindOp::map(bos[b].handle(), off, addr, range));
                    next.map(addr, addr + range, b, off);
                }
                3..=4 => {
                    let range = (1 + rnd((BASE + WINDOW - addr) / SZ_4K).min(1024)) * SZ_4K;
                    ops.push(DrmMirageVmBindOp::unmap(addr, range));
                    next.unmap(addr, addr + range);
                }
                _ => {
                    let b = rnd(3) as usize;
                    ops.push(DrmMirageVmBindOp::unmap_all(bos[b].handle()));
                    next.unmap_all(b);
                }
            }
        }
        if step % 10 == 9 {
            // A bad op last: the whole array fails and the VM stays as it was.
            ops.push(DrmMirageVmBindOp::map(foreign.handle(), 0, BASE, SZ_4K));
            let e = errno(d.vm_bind(vm, 0, &ops, &[]));
            check!(e == Some(libc::EINVAL), "step {step}: bad array gave {e:?}");
        } else {
            d.vm_bind(vm, 0, &ops, &[])
                .map_err(|e| format!("step {step}: {e}"))?;
            model = next;
        }
        let dbg = vm_debug(vm)?;
        check!(dbg.usable, "step {step}: VM unusable");
        check!(
            dbg.vas == model.vas(),
            "step {step}: VA tree\n{:x?}\nmodel\n{:x?}",
            dbg.vas,
            model.vas()
        );
        let [reserved, used, _, _, exhausted, unused, _, _] = dbg.pool;
        check!(
            exhausted == 0 && unused == 0 && reserved == used,
            "step {step}: pool {:?}",
            dbg.pool
        );
        let want: u64 = model.0.iter().map(|m| m.1 - m.0).sum();
        check!(
            dbg.mapped() == want,
            "step {step}: the page table maps {:#x} bytes ({:?} leaves), the VA tree {want:#x}",
            dbg.mapped(),
            dbg.leaves
        );
        if dbg.leaves[1] > 0 {
            steps_with_blocks += 1;
        }
        // One GPU job checksums every mapping in the window.
        let maps: Vec<_> = model
            .0
            .iter()
            .filter(|m| m.2 < bos.len())
            .copied()
            .collect();
        let mut cb = CmdBuf::new();
        for (i, &(s, e, _, _)) in maps.iter().enumerate() {
            cb.checksum(s, e - s, CMD_VA + RESULTS + 8 * i as u64);
        }
        cb.end();
        check!(
            cb.len_bytes() <= RESULTS && 8 * maps.len() as u64 <= CMD_SIZE - RESULTS,
            "step {step}: {} mappings do not fit the command BO",
            maps.len()
        );
        let status = c.run(&cb)?;
        check!(
            status == 0,
            "step {step}: checksum job failed with {status}"
        );
        let cmd = c.cmd.mmap().map_err(e2s)?;
        for (i, &(s, e, b, off)) in maps.iter().enumerate() {
            let got = cmd
                .read_u64((RESULTS + 8 * i as u64) as usize)
                .map_err(e2s)?;
            let want = fnv1a64(&contents[b][off as usize..(off + e - s) as usize]);
            check!(
                got == want,
                "step {step}: the GPU reads other bytes through {s:#x}..{e:#x} (BO {b} at {off:#x})"
            );
        }
    }
    // With 2 MiB folios, 2 MiB-aligned maps of the large BO get blocks.
    check!(
        steps_with_blocks > 0,
        "no step had a 2 MiB block: the BOs got no 2 MiB folios"
    );
    drop(c);
    d.vm_destroy(other_vm).map_err(e2s)?;
    drop(huge);
    Ok(())
}

/// A bind whose page tables cannot be reserved (failure injected through
/// `/sys/kernel/debug/mirage/fail_next_reserve`) fails with ENOMEM and
/// leaves the VM exactly as it was.
pub fn vm_bind_without_memory_changes_nothing(d: &Device) -> TestResult {
    let vm = d.vm_create(0).map_err(e2s)?;
    let bo = Bo::new(d, 2 * SZ_2M, SYSTEM, 0).map_err(e2s)?;
    let h = bo.handle();
    d.vm_bind(
        vm,
        0,
        &[DrmMirageVmBindOp::map(h, 0, 0x4000_0000, SZ_2M)],
        &[],
    )
    .map_err(e2s)?;
    let before = vm_debug(vm)?;
    std::fs::write("/sys/kernel/debug/mirage/fail_next_reserve", "1").map_err(e2s)?;
    let ops = [
        DrmMirageVmBindOp::unmap(0x4000_0000, SZ_4K),
        DrmMirageVmBindOp::map(h, SZ_2M, 0x9000_0000, SZ_2M),
        DrmMirageVmBindOp::unmap_all(h),
    ];
    let e = errno(d.vm_bind(vm, 0, &ops, &[]));
    check!(
        e == Some(libc::ENOMEM),
        "bind with the reservation failing: {e:?}"
    );
    let after = vm_debug(vm)?;
    after.expect_unchanged(&before, "the bind without memory")?;
    check!(after.usable, "VM unusable");
    // The injection was used up: the same array now goes through.
    d.vm_bind(vm, 0, &ops, &[]).map_err(e2s)?;
    check!(vm_debug(vm)?.vas.is_empty(), "UNMAP_ALL left mappings");
    d.vm_destroy(vm).map_err(e2s)?;
    Ok(())
}

/// Debugfs knobs of the kernel's fault-injection capabilities, set for a test; the old values
/// go back when dropped, however the test ends.
struct FaultAttrs(Vec<(&'static str, String)>);

impl FaultAttrs {
    fn set(knobs: &[(&'static str, &str)]) -> Result<Self, String> {
        let mut saved = FaultAttrs(Vec::new());
        for &(path, want) in knobs {
            let old = std::fs::read_to_string(path)
                .map_err(|e| format!("{path}: {e} (no CONFIG_FAULT_INJECTION_DEBUG_FS?)"))?;
            // Saved before the write: a failing write is undone too.
            saved.0.push((path, old.trim().to_string()));
            std::fs::write(path, want).map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(saved)
    }
}

impl Drop for FaultAttrs {
    fn drop(&mut self) {
        for (path, v) in self.0.iter().rev() {
            let _ = std::fs::write(path, v);
        }
    }
}

/// This thread's `/proc/thread-self/fail-nth`. Written n, the thread's n-th allocation that
/// an enabled capability (failslab, fail_page_alloc) may fail, fails; each such allocation
/// counts it down, so it reads 0 once the failure was injected and n minus the allocations
/// seen otherwise. Disarmed (0) when dropped.
struct FailNth(std::fs::File);

impl FailNth {
    fn open() -> Result<Self, String> {
        let path = "/proc/thread-self/fail-nth";
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(FailNth)
            .map_err(|e| format!("{path}: {e} (a kernel without CONFIG_FAULT_INJECTION?)"))
    }

    /// Writes the decimal text `n`. The descriptor is open already and the kernel reads the
    /// count from the buffer: nothing here allocates in the kernel or faults a page in.
    fn write(&self, n: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_at(n, 0).map(drop)
    }

    /// Reads the count into `buf`, without allocating; see [`FailNth::parse`].
    fn read(&self, buf: &mut [u8; 16]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.0.read_at(buf, 0)
    }

    fn parse(read: io::Result<usize>, buf: &[u8; 16]) -> Result<u32, String> {
        let len = read.map_err(|e| format!("reading fail-nth: {e}"))?;
        let text = std::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("");
        text.trim()
            .parse()
            .map_err(|_| format!("fail-nth reads {text:?}"))
    }
}

impl Drop for FailNth {
    fn drop(&mut self) {
        let _ = self.write(b"0");
    }
}

/// The BOs and bytes of [`vm_bind_fail_nth_changes_nothing`], and what the CPU computed of
/// them.
struct FailNthBos<'d> {
    /// BOs mapped in every round's VM before its bind; the bind's new BO is made per round.
    bos: Vec<Bo<'d>>,
    /// The bytes of each BO, the new one's last.
    contents: Vec<Vec<u8>>,
    /// fnv1a64 of (BO, offset, length): the same mappings come back every round.
    sums: std::collections::HashMap<(usize, u64, u64), u64>,
}

impl FailNthBos<'_> {
    fn sum(&mut self, bo: usize, off: u64, len: u64) -> u64 {
        let contents = &self.contents;
        *self
            .sums
            .entry((bo, off, len))
            .or_insert_with(|| fnv1a64(&contents[bo][off as usize..(off + len) as usize]))
    }
}

/// Checks VM `c` against `model`: the VA tree, the page table's mapped bytes, a pool with
/// nothing left reserved, and the GPU's checksum of every mapping.
fn fail_nth_expect(c: &Ctx, model: &Model, data: &mut FailNthBos, what: &str) -> TestResult {
    const RESULTS: u64 = CMD_SIZE / 2;
    let dbg = vm_debug(c.vm)?;
    check!(dbg.usable, "{what}: the VM is unusable");
    check!(
        dbg.vas == model.vas(),
        "{what}: VA tree\n{:x?}\nwant\n{:x?}",
        dbg.vas,
        model.vas()
    );
    let [_, _, _, _, exhausted, _, _, available] = dbg.pool;
    check!(
        exhausted == 0 && available == 0,
        "{what}: pool {:?} (exhausted or tables left reserved)",
        dbg.pool
    );
    let want: u64 = model.0.iter().map(|m| m.1 - m.0).sum();
    check!(
        dbg.mapped() == want,
        "{what}: the page table maps {:#x} bytes ({:?} leaves), the VA tree {want:#x}",
        dbg.mapped(),
        dbg.leaves
    );
    // One job checksums every mapping but the command BO's.
    let maps: Vec<_> = model
        .0
        .iter()
        .filter(|m| m.2 < data.contents.len())
        .copied()
        .collect();
    let mut cb = CmdBuf::new();
    for (i, &(s, e, _, _)) in maps.iter().enumerate() {
        cb.checksum(s, e - s, CMD_VA + RESULTS + 8 * i as u64);
    }
    cb.end();
    let status = c.run(&cb)?;
    check!(status == 0, "{what}: the checksum job failed with {status}");
    let cmd = c.cmd.mmap().map_err(e2s)?;
    for (i, &(s, e, b, off)) in maps.iter().enumerate() {
        let got = cmd
            .read_u64((RESULTS + 8 * i as u64) as usize)
            .map_err(e2s)?;
        check!(
            got == data.sum(b, off, e - s),
            "{what}: the GPU reads other bytes through {s:#x}..{e:#x} (BO {b} at {off:#x})"
        );
    }
    Ok(())
}

/// What one round of [`vm_bind_fail_nth_changes_nothing`] saw.
enum FailNthRound {
    /// The injected failure failed the ioctl.
    Failed,
    /// An allocation failed, and the ioctl went through all the same.
    Tolerated,
    /// The ioctl made fewer allocations than n: this many.
    Done(u32),
}

/// Waits for the bind whose fence goes to `out` and checks it ended well.
fn fail_nth_wait(d: &Device, out: u32, what: &str) -> TestResult {
    d.syncobj_wait(out, 0, deadline_in(10_000))
        .map_err(|e| format!("{what}: the bind's out-fence did not signal: {e}"))?;
    let status = fence_status(d, out)?;
    check!(status == 0, "{what}: the bind's fence signalled {status}");
    Ok(())
}

/// One round: a fresh VM with mappings, then the bind with its `n`-th allocation failing.
fn fail_nth_round(
    d: &Device,
    fail: &FailNth,
    n: u32,
    ready: u32,
    data: &mut FailNthBos,
) -> Result<FailNthRound, String> {
    const A: u64 = 0x4000_0000;
    const B: u64 = 0x5000_0000;
    const E: u64 = 0x5800_0000;
    // Past the first 512 GiB: the bind must reserve tables at three levels.
    const C: u64 = 0x80_0000_0000;
    let c = Ctx::new(d)?;
    let (a, b, e) = (&data.bos[0], &data.bos[1], &data.bos[2]);
    // The bind's new BO: its pages are in, but it was never mapped, so the ioctl builds its
    // scatter list.
    let new = Bo::new(d, data.contents[3].len() as u64, SYSTEM, 0).map_err(e2s)?;
    new.mmap()
        .map_err(e2s)?
        .write(0, &data.contents[3])
        .map_err(e2s)?;
    let mut model = Model::default();
    model.map(CMD_VA, CMD_VA + CMD_SIZE, usize::MAX, 0);
    let setup = [
        (a, 0, A, SZ_2M, 0),
        (b, 0, B, b.size(), 1),
        (e, 0, E, 4 * SZ_4K, 2),
        (e, 4 * SZ_4K, E + 8 * SZ_4K, 4 * SZ_4K, 2),
    ];
    let ops: Vec<_> = setup
        .iter()
        .map(|&(bo, off, va, len, _)| DrmMirageVmBindOp::map(bo.handle(), off, va, len))
        .collect();
    d.vm_bind(c.vm, 0, &ops, &[]).map_err(e2s)?;
    for &(_, off, va, len, i) in &setup {
        model.map(va, va + len, i, off);
    }
    let before = vm_debug(c.vm)?;
    check!(
        before.leaves[1] == 1,
        "A's mapping is not one 2 MiB block ({:?} leaves): the BO got no 2 MiB folio",
        before.leaves
    );

    // Every kind of op, each needing memory: a MAP that splits A's mapping (and its block),
    // an UNMAP that splits B's, a MAP of the new BO where no table is, an UNMAP_ALL.
    let ops = [
        DrmMirageVmBindOp::map(b.handle(), 2 * SZ_4K, A + 0x10_1000, 3 * SZ_4K),
        DrmMirageVmBindOp::unmap(B + 4 * SZ_4K, 4 * SZ_4K),
        DrmMirageVmBindOp::map(new.handle(), 0, C, new.size()),
        DrmMirageVmBindOp::unmap_all(e.handle()),
    ];
    let mut after = model.clone();
    after.map(A + 0x10_1000, A + 0x10_4000, 1, 2 * SZ_4K);
    after.unmap(B + 4 * SZ_4K, B + 8 * SZ_4K);
    after.map(C, C + new.size(), 3, 0);
    after.unmap_all(2);
    let out = d.syncobj_create(0).map_err(e2s)?;
    let syncs = [DrmMirageSync::wait(ready), DrmMirageSync::signal(out)];

    // Everything the ioctl needs is built and touched before fail-nth is armed, and nothing
    // runs between the two but the syscalls: the n-th allocation is the ioctl's.
    let mut args = vm_bind_args(c.vm, 0, &ops, &syncs).map_err(e2s)?;
    let arm = n.to_string();
    let mut buf = [0u8; 16];
    fail.write(arm.as_bytes())
        .map_err(|e| format!("n={n}: arming fail-nth: {e}"))?;
    let r = d.vm_bind_raw(&mut args);
    let read = fail.read(&mut buf);
    fail.write(b"0")
        .map_err(|e| format!("n={n}: disarming fail-nth: {e}"))?;
    let left = FailNth::parse(read, &buf).map_err(|e| format!("n={n}: {e}"))?;

    let round = match r {
        Err(err) => {
            let what = format!("n={n}, the bind failed");
            check!(
                err.raw_os_error() == Some(libc::ENOMEM),
                "n={n}: the bind failed with {err} (errno {:?}), want ENOMEM",
                err.raw_os_error()
            );
            check!(
                left == 0,
                "{what}, but no allocation failed (fail-nth reads {left})"
            );
            match d.syncobj_export_sync_file(out) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Ok(_) => return Err(format!("{what}: its out-syncobj got a fence")),
                Err(e) => return Err(format!("{what}: exporting its out-syncobj: {e}")),
            }
            vm_debug(c.vm)?.expect_unchanged(&before, &what)?;
            fail_nth_expect(&c, &model, data, &what)?;
            // Nothing of the failed attempt stayed behind: the same bind now goes through.
            let what = format!("n={n}, the bind after the failure");
            d.vm_bind(c.vm, 0, &ops, &syncs)
                .map_err(|e| format!("{what}: {e}"))?;
            fail_nth_wait(d, out, &what)?;
            fail_nth_expect(&c, &after, data, &what)?;
            FailNthRound::Failed
        }
        Ok(()) => {
            let (what, round) = match left {
                0 => (
                    format!("n={n}, the bind went through a failed allocation"),
                    FailNthRound::Tolerated,
                ),
                _ => (
                    format!("n={n}, the bind with no failure"),
                    FailNthRound::Done(n - left),
                ),
            };
            fail_nth_wait(d, out, &what)?;
            fail_nth_expect(&c, &after, data, &what)?;
            round
        }
    };
    d.syncobj_destroy(out).map_err(e2s)?;
    Ok(round)
}

/// Every allocation of a VM_BIND ioctl fails in turn, injected by the kernel (failslab and
/// fail_page_alloc, through `/proc/thread-self/fail-nth`): the n-th allocation in round n, until
/// the ioctl makes fewer than n. The bind is asynchronous and has every kind of op, a wait and
/// a signal entry. Each time the ioctl fails, it fails with ENOMEM and leaves the VM as it was:
/// VA tree, page table, pool (nothing left reserved), an out-syncobj with no fence, and what the
/// GPU reads through every mapping; then the same bind goes through. An ioctl that gets past a
/// failed allocation must do the whole bind.
pub fn vm_bind_fail_nth_changes_nothing(d: &Device) -> TestResult {
    // Well over the ioctl's allocations (some 150, kmemleak's and KASAN's own among them).
    const MAX_N: u32 = 400;
    const MAX_ERRORS: usize = 10;
    let t0 = std::time::Instant::now();
    // Allocations that may sleep fail too (the driver's are GFP_KERNEL), and so do page
    // allocations of any order; without a word in the log for each.
    let _attrs = FaultAttrs::set(&[
        ("/sys/kernel/debug/failslab/ignore-gfp-wait", "N"),
        ("/sys/kernel/debug/failslab/verbose", "0"),
        ("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N"),
        ("/sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem", "N"),
        ("/sys/kernel/debug/fail_page_alloc/min-order", "0"),
        ("/sys/kernel/debug/fail_page_alloc/verbose", "0"),
    ])?;
    let fail = FailNth::open()?;
    // Nothing is armed yet; and the reads and writes of a round, which run while it is, have
    // run once, so that none faults in a page of code then.
    let mut buf = [0u8; 16];
    let read = fail.read(&mut buf);
    check!(
        FailNth::parse(read, &buf)? == 0,
        "fail-nth armed before the test"
    );
    fail.write(b"0").map_err(|e| format!("fail-nth: {e}"))?;
    // A (2 MiB, one 2 MiB folio, so that its mapping is a block), B, E, and the bytes of the
    // new BO each round makes: every 8 bytes differ.
    let sizes = [SZ_2M, 16 * SZ_4K, 8 * SZ_4K, 8 * SZ_4K];
    let huge = ShmemHugePages::force()?;
    let mut data = FailNthBos {
        bos: Vec::new(),
        contents: Vec::new(),
        sums: Default::default(),
    };
    for (i, &size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..size / 8)
            .flat_map(|w| ((i as u64 + 1) << 56 | w).to_le_bytes())
            .collect();
        if i < 3 {
            let bo = Bo::new(d, size, SYSTEM, 0).map_err(e2s)?;
            bo.mmap().map_err(e2s)?.write(0, &bytes).map_err(e2s)?;
            data.bos.push(bo);
        }
        data.contents.push(bytes);
    }
    drop(huge);
    let ready = d.syncobj_create(DRM_SYNCOBJ_CREATE_SIGNALED).map_err(e2s)?;
    let (mut failed, mut tolerated) = (0, 0);
    let mut points = None;
    // Rounds are independent (each has its VM): one that goes wrong does not stop the others,
    // so that one run shows every allocation the driver mishandles.
    let mut errors = Vec::new();
    for n in 1..=MAX_N {
        match fail_nth_round(d, &fail, n, ready, &mut data) {
            Ok(FailNthRound::Failed) => failed += 1,
            Ok(FailNthRound::Tolerated) => tolerated += 1,
            Ok(FailNthRound::Done(p)) => {
                points = Some(p);
                break;
            }
            Err(e) => {
                errors.push(e);
                if errors.len() == MAX_ERRORS {
                    break;
                }
            }
        }
    }
    d.syncobj_destroy(ready).map_err(e2s)?;
    println!(
        "    # vm_bind_fail_nth_changes_nothing: {} injection points: {failed} failed the ioctl \
         with ENOMEM, the ioctl got past {tolerated}; wrong results in {}{} ({:.1} s)",
        points.map_or("?".to_string(), |p| p.to_string()),
        errors.len(),
        if errors.len() == MAX_ERRORS {
            " (then the test stopped)"
        } else {
            ""
        },
        t0.elapsed().as_secs_f64()
    );
    check!(errors.is_empty(), "{}", errors.join("\n"));
    check!(
        points.is_some(),
        "the ioctl still made an allocation at n={MAX_N}"
    );
    check!(failed > 0, "no injected failure failed the ioctl");
    Ok(())
}
