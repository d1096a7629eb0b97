//! MADVISE and the memory-range attribute query on CPU-address mirrors
//! (xe_madvise's scenarios): splits, the query's two calls, the atomics
//! policy as the device enforces it, and which GPU mappings a MADVISE
//! invalidates.

use crate::exec::Ctx;
use crate::svm::{
    expect_fill, mirror_ctx, peek32, poke32, FAULT_MODE, MIRROR_END, MIRROR_START, SZ_2M, SZ_4K,
    SZ_64K,
};
use crate::userptr::Anon;
use crate::vm::vm_debug;
use crate::{check, e2s, errno, TestResult};
use mirage::cmd::{AtomicOp, CmdBuf};
use mirage::uapi::*;
use mirage::{Bo, Device, Madvise};

const SZ_1M: u64 = 1 << 20;
/// A mirror of the GPU address space far from any CPU memory: the attribute
/// tests need no pages.
const A: u64 = 1 << 40;
const DEVICE: u32 = DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE;
const SYSTEM_LOC: u32 = DRM_MIRAGE_PREFERRED_LOC_DEFAULT_SYSTEM as u32;
const ALL: u32 = DRM_MIRAGE_MIGRATE_ALL_PAGES;
const ONLY_SYSTEM: u32 = DRM_MIRAGE_MIGRATE_ONLY_SYSTEM_PAGES;
const UNDEF: u32 = DRM_MIRAGE_ATOMIC_UNDEFINED;
const WB: u32 = DRM_MIRAGE_PAT_WB as u32;
const UC: u32 = DRM_MIRAGE_PAT_UC as u32;

/// (start, end, preferred location, migration policy, atomic, PAT) of one
/// query entry.
type Entry = (u64, u64, u32, u32, u32, u32);

pub(crate) fn query(d: &Device, vm: u32, start: u64, range: u64) -> Result<Vec<Entry>, String> {
    let v = d.mem_range_attrs(vm, start, range).map_err(e2s)?;
    for e in &v {
        check!(
            e.extensions == 0
                && e.atomic.reserved == 0
                && e.pat_index.reserved == 0
                && e.reserved == [0; 2],
            "an entry with nonzero reserved fields: {e:?}"
        );
    }
    Ok(v.iter()
        .map(|e| {
            (
                e.start,
                e.end,
                e.preferred_mem_loc.devmem_fd,
                e.preferred_mem_loc.migration_policy,
                e.atomic.val,
                e.pat_index.val,
            )
        })
        .collect())
}

/// A mirror's default attributes over `[s, e)`.
const fn def(s: u64, e: u64) -> Entry {
    (s, e, DEVICE, ALL, UNDEF, WB)
}

/// A fault-mode VM with one mirror, `[A, A + len)`.
fn mirror_at_a(d: &Device, len: u64) -> Result<Ctx<'_>, String> {
    let c = Ctx::with_vm_flags(d, FAULT_MODE)?;
    d.vm_bind(c.vm, 0, &[DrmMirageVmBindOp::map_mirror(A, len)], &[])
        .map_err(e2s)?;
    Ok(c)
}

/// MADVISE splits one mirror into three, then five; the query shows exactly
/// those mappings, unclipped; a MADVISE that changes nothing splits nothing.
pub fn madvise_splits_a_mirror_and_the_query_shows_it(d: &Device) -> TestResult {
    let c = mirror_at_a(d, 8 * SZ_1M)?;
    let vm = c.vm;
    let all = |what: &str, want: &[Entry]| -> TestResult {
        let got = query(d, vm, A, 8 * SZ_1M)?;
        check!(got == want, "{what}: query {got:x?}, not {want:x?}");
        Ok(())
    };
    all("fresh", &[def(A, A + 8 * SZ_1M)])?;

    let atomic_dev = Madvise::Atomic(DRM_MIRAGE_ATOMIC_DEVICE);
    d.madvise(vm, A + 2 * SZ_1M, 2 * SZ_1M, atomic_dev)
        .map_err(e2s)?;
    let dev = DRM_MIRAGE_ATOMIC_DEVICE;
    let three = [
        def(A, A + 2 * SZ_1M),
        (A + 2 * SZ_1M, A + 4 * SZ_1M, DEVICE, ALL, dev, WB),
        def(A + 4 * SZ_1M, A + 8 * SZ_1M),
    ];
    all("atomic DEVICE on the third and fourth MiB", &three)?;
    // The same value again, and the default on a default part: no split.
    d.madvise(vm, A + 2 * SZ_1M + SZ_4K, SZ_4K, atomic_dev)
        .map_err(e2s)?;
    d.madvise(vm, A + 6 * SZ_1M, SZ_1M, Madvise::Atomic(UNDEF))
        .map_err(e2s)?;
    all("MADVISEs that change nothing", &three)?;

    let sys = Madvise::PreferredLoc {
        devmem_fd: SYSTEM_LOC,
        migration_policy: ONLY_SYSTEM as u16,
    };
    d.madvise(vm, A + 3 * SZ_1M, 2 * SZ_1M, sys).map_err(e2s)?;
    let five = [
        def(A, A + 2 * SZ_1M),
        (A + 2 * SZ_1M, A + 3 * SZ_1M, DEVICE, ALL, dev, WB),
        (
            A + 3 * SZ_1M,
            A + 4 * SZ_1M,
            SYSTEM_LOC,
            ONLY_SYSTEM,
            dev,
            WB,
        ),
        (
            A + 4 * SZ_1M,
            A + 5 * SZ_1M,
            SYSTEM_LOC,
            ONLY_SYSTEM,
            UNDEF,
            WB,
        ),
        def(A + 5 * SZ_1M, A + 8 * SZ_1M),
    ];
    all("preferred location across the split", &five)?;
    // Over the whole mirror: every mapping takes it, none splits or merges.
    d.madvise(vm, A, 8 * SZ_1M, Madvise::Pat(UC)).map_err(e2s)?;
    let uc: Vec<Entry> = five
        .iter()
        .map(|&(s, e, l, m, a, _)| (s, e, l, m, a, UC))
        .collect();
    all("PAT UC over everything", &uc)?;

    // A query of part of a mapping reports the whole mapping; one of a hole
    // reports nothing.
    let got = query(d, vm, A + 2 * SZ_1M + SZ_4K, SZ_4K)?;
    check!(got == uc[1..2], "query inside one mapping: {got:x?}");
    let got = query(d, vm, A + 8 * SZ_1M, SZ_4K)?;
    check!(got.is_empty(), "query of a hole: {got:x?}");
    let m = vm_debug(vm)?.mirror_vas;
    check!(m.len() == 5, "debugfs mirrors {m:x?}");
    Ok(())
}

/// The query's two calls by hand: the count and entry size, `ENOSPC` when
/// the array is short, and the argument checks.
pub fn madvise_query_two_calls(d: &Device) -> TestResult {
    let c = mirror_at_a(d, 4 * SZ_1M)?;
    let vm = c.vm;
    d.madvise(vm, A + SZ_1M, SZ_1M, Madvise::Pat(UC))
        .map_err(e2s)?;
    let base = DrmMirageVmQueryMemRangeAttr {
        vm_id: vm,
        start: A,
        range: 4 * SZ_1M,
        ..Default::default()
    };
    let mut count = base;
    // SAFETY: a counting call writes no entry.
    unsafe { d.vm_query_mem_range_attrs_raw(&mut count) }.map_err(e2s)?;
    let size = size_of::<DrmMirageMemRangeAttr>() as u64;
    check!(
        count.num_mem_ranges == 3 && count.sizeof_mem_range_attr == size,
        "count call: {} entries of {} bytes",
        count.num_mem_ranges,
        count.sizeof_mem_range_attr
    );

    let mut v = vec![DrmMirageMemRangeAttr::default(); 3];
    let ptr = v.as_mut_ptr() as u64;
    let with = |n: u32, sz: u64, p: u64| DrmMirageVmQueryMemRangeAttr {
        num_mem_ranges: n,
        sizeof_mem_range_attr: sz,
        vector_of_mem_attr: p,
        ..base
    };
    let gone = Anon::mmap(SZ_4K)?;
    let gone_addr = gone.addr();
    drop(gone);
    let bad = [
        ("a short array", with(2, size, ptr), libc::ENOSPC),
        ("a wrong entry size", with(3, size / 2, ptr), libc::EINVAL),
        ("no array", with(3, size, 0), libc::EINVAL),
        ("an array with a zero count", with(0, 0, ptr), libc::EINVAL),
        (
            "an entry size with a zero count",
            with(0, size, 0),
            libc::EINVAL,
        ),
        ("an unmapped array", with(3, size, gone_addr), libc::EFAULT),
        (
            "extensions",
            DrmMirageVmQueryMemRangeAttr {
                extensions: 1,
                ..with(3, size, ptr)
            },
            libc::EINVAL,
        ),
        (
            "reserved",
            DrmMirageVmQueryMemRangeAttr {
                reserved: [0, 1],
                ..with(3, size, ptr)
            },
            libc::EINVAL,
        ),
        (
            "an empty range",
            DrmMirageVmQueryMemRangeAttr {
                range: 0,
                ..with(3, size, ptr)
            },
            libc::EINVAL,
        ),
        (
            "an unaligned start",
            DrmMirageVmQueryMemRangeAttr {
                start: A + 1,
                ..with(3, size, ptr)
            },
            libc::EINVAL,
        ),
        (
            "a range past the VA space",
            DrmMirageVmQueryMemRangeAttr {
                start: MIRROR_END << 1,
                ..with(3, size, ptr)
            },
            libc::EINVAL,
        ),
        (
            "no such VM",
            DrmMirageVmQueryMemRangeAttr {
                vm_id: 0xdead,
                ..with(3, size, ptr)
            },
            libc::ENOENT,
        ),
    ];
    for (what, mut a, want) in bad {
        // SAFETY: `v` has room for three entries and lives across the call;
        // the other pointers are null or unmapped.
        let r = unsafe { d.vm_query_mem_range_attrs_raw(&mut a) };
        check!(
            errno(r) == Some(want),
            "a query with {what}: not errno {want}"
        );
    }
    check!(
        v.iter().all(|e| *e == DrmMirageMemRangeAttr::default()),
        "a failed query wrote entries"
    );

    // Room for more than there are: the count says how many were written.
    let mut v = vec![DrmMirageMemRangeAttr::default(); 5];
    let mut a = with(5, size, v.as_mut_ptr() as u64);
    // SAFETY: `v` has room for five entries and lives across the call.
    unsafe { d.vm_query_mem_range_attrs_raw(&mut a) }.map_err(e2s)?;
    let got: Vec<(u64, u64, u32)> = v
        .iter()
        .map(|e| (e.start, e.end, e.pat_index.val))
        .collect();
    check!(
        a.num_mem_ranges == 3
            && got
                == [
                    (A, A + SZ_1M, WB),
                    (A + SZ_1M, A + 2 * SZ_1M, UC),
                    (A + 2 * SZ_1M, A + 4 * SZ_1M, WB),
                    (0, 0, 0),
                    (0, 0, 0)
                ],
        "filled {} entries: {got:x?}",
        a.num_mem_ranges
    );
    Ok(())
}

/// Bad MADVISE arguments fail with exact errnos and change nothing; a range
/// with a BO's mapping in it is refused whole.
pub fn madvise_rejects_bad_input(d: &Device) -> TestResult {
    let c = mirror_at_a(d, 2 * SZ_1M)?;
    let vm = c.vm;
    const DATA_VA: u64 = 0x1000_0000;
    let bo = Bo::new(d, SZ_4K, DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM, vm).map_err(e2s)?;
    c.map(&bo, 0, DATA_VA, SZ_4K, 0)?;

    let value = |val: u32, pad: u32, reserved: u64| DrmMirageMadviseValue { val, pad, reserved };
    let loc = |fd: u32, policy: u16, region: u16, reserved: u64| {
        DrmMirageMadviseAttr::preferred_mem_loc(DrmMirageMadvisePreferredLoc {
            devmem_fd: fd,
            migration_policy: policy,
            region_instance: region,
            reserved,
        })
    };
    let base = DrmMirageMadvise {
        vm_id: vm,
        start: A,
        range: SZ_1M,
        type_: DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC,
        attr: DrmMirageMadviseAttr::atomic(value(DRM_MIRAGE_ATOMIC_DEVICE, 0, 0)),
        ..Default::default()
    };
    let atomic = |v| DrmMirageMadvise {
        attr: DrmMirageMadviseAttr::atomic(v),
        ..base
    };
    let pat = |v| DrmMirageMadvise {
        type_: DRM_MIRAGE_MEM_RANGE_ATTR_PAT,
        attr: DrmMirageMadviseAttr::pat_index(v),
        ..base
    };
    let pref = |attr| DrmMirageMadvise {
        type_: DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC,
        attr,
        ..base
    };
    let einval = libc::EINVAL;
    let bad = [
        (
            "extensions",
            DrmMirageMadvise {
                extensions: 1,
                ..base
            },
            einval,
        ),
        (
            "reserved",
            DrmMirageMadvise {
                reserved: [1, 0],
                ..base
            },
            einval,
        ),
        (
            "an unknown type",
            DrmMirageMadvise { type_: 3, ..base },
            einval,
        ),
        ("an unknown atomic value", atomic(value(4, 0, 0)), einval),
        ("atomic pad", atomic(value(1, 1, 0)), einval),
        ("atomic reserved", atomic(value(1, 0, 1)), einval),
        ("an unknown PAT", pat(value(2, 0, 0)), einval),
        ("PAT pad", pat(value(UC, 1, 0)), einval),
        ("PAT reserved", pat(value(UC, 0, 1)), einval),
        ("a device fd", pref(loc(3, 0, 0, 0)), einval),
        ("an unknown policy", pref(loc(SYSTEM_LOC, 2, 0, 0)), einval),
        ("a region instance", pref(loc(DEVICE, 0, 1, 0)), einval),
        ("location reserved", pref(loc(DEVICE, 0, 0, 1)), einval),
        (
            "an unaligned start",
            DrmMirageMadvise {
                start: A + 8,
                ..base
            },
            einval,
        ),
        (
            "an unaligned range",
            DrmMirageMadvise {
                range: SZ_4K + 1,
                ..base
            },
            einval,
        ),
        (
            "an empty range",
            DrmMirageMadvise { range: 0, ..base },
            einval,
        ),
        (
            "a range past the VA space",
            DrmMirageMadvise {
                start: MIRROR_END << 1,
                ..base
            },
            einval,
        ),
        (
            "a wrapping range",
            DrmMirageMadvise {
                range: u64::MAX - 4095,
                ..base
            },
            einval,
        ),
        (
            "no such VM",
            DrmMirageMadvise {
                vm_id: 0xdead,
                ..base
            },
            libc::ENOENT,
        ),
        (
            "a BO mapping in the range",
            DrmMirageMadvise {
                start: DATA_VA,
                range: A + SZ_1M - DATA_VA,
                ..base
            },
            einval,
        ),
        (
            "a BO mapping only",
            DrmMirageMadvise {
                start: DATA_VA,
                range: SZ_4K,
                ..base
            },
            einval,
        ),
    ];
    for (what, mut a, want) in bad {
        let r = d.madvise_raw(&mut a);
        check!(
            errno(r) == Some(want),
            "MADVISE with {what}: not errno {want}"
        );
        let got = query(d, vm, A, 2 * SZ_1M)?;
        check!(
            got == [def(A, A + 2 * SZ_1M)],
            "MADVISE with {what} changed the mirror: {got:x?}"
        );
    }
    // A VM that is not in fault mode has no mirrors to advise.
    let plain = Ctx::new(d)?;
    let r = d.madvise(plain.vm, A, SZ_1M, Madvise::Pat(UC));
    check!(
        errno(r) == Some(libc::EINVAL),
        "MADVISE of a VM without FAULT_MODE was not refused with EINVAL"
    );
    // A hole is fine: nothing to advise.
    d.madvise(vm, A + 4 * SZ_1M, SZ_1M, Madvise::Pat(UC))
        .map_err(e2s)?;
    Ok(())
}

/// One ATOMIC INC32 at `addr` (old value 41): whether it worked, checked
/// bit-exact either way.
fn inc_works(c: &Ctx, addr: u64, what: &str) -> Result<bool, String> {
    poke32(addr, 41);
    poke32(addr + 8, 0);
    let mut cb = CmdBuf::new();
    cb.atomic(addr, AtomicOp::Inc32, 0, 0, addr + 8).end();
    let status = c.run(&cb)?;
    let (v, old) = (peek32(addr), peek32(addr + 8));
    match status {
        0 => {
            check!(v == 42 && old == 41, "{what}: value {v}, old value {old}");
            Ok(true)
        }
        s if s == -libc::EIO => {
            check!(
                v == 41 && old == 0,
                "{what}: a failed atomic wrote {v}, {old}"
            );
            Ok(false)
        }
        s => Err(format!("{what}: the job ended with {s}")),
    }
}

/// ATOMIC DEVICE and GLOBAL map system pages with the atomic-capable
/// attribute, CPU without it (the device refuses the GPU atomic with a
/// MEMORY_ATTRIBUTE fault), and UNDEFINED follows the PAT: xe's atomic-cpu.
pub fn madvise_atomics_follow_the_policy(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    let buf = Anon::mmap(SZ_64K)?;
    let a = buf.addr();
    let steps: [(&str, &[Madvise], bool); 6] = [
        ("defaults (UNDEFINED, WB)", &[], true),
        ("DEVICE", &[Madvise::Atomic(DRM_MIRAGE_ATOMIC_DEVICE)], true),
        ("CPU", &[Madvise::Atomic(DRM_MIRAGE_ATOMIC_CPU)], false),
        ("GLOBAL", &[Madvise::Atomic(DRM_MIRAGE_ATOMIC_GLOBAL)], true),
        (
            "UNDEFINED with PAT UC",
            &[Madvise::Atomic(UNDEF), Madvise::Pat(UC)],
            false,
        ),
        (
            "DEVICE with PAT UC",
            &[Madvise::Atomic(DRM_MIRAGE_ATOMIC_DEVICE)],
            true,
        ),
    ];
    for (what, advice, want) in steps {
        for &adv in advice {
            d.madvise(c.vm, a, SZ_64K, adv).map_err(e2s)?;
        }
        let works = inc_works(&c, a, what)?;
        check!(
            works == want,
            "atomic {what}: the GPU atomic worked {works}, expected {want}"
        );
    }
    // CPU forbids GPU atomics only: stores still land.
    d.madvise(c.vm, a, SZ_64K, Madvise::Atomic(DRM_MIRAGE_ATOMIC_CPU))
        .map_err(e2s)?;
    let mut cb = CmdBuf::new();
    cb.fill(a, SZ_64K, 0x600d_f00d).end();
    check!(c.run(&cb)? == 0, "a fill under atomic CPU failed");
    expect_fill(a, SZ_64K, 0x600d_f00d, "atomic CPU fill")?;
    Ok(())
}

/// Faults the VM resolved so far.
fn resolved(vm: u32) -> Result<u64, String> {
    Ok(vm_debug(vm)?.faults[0])
}

/// A MADVISE that changes an attribute invalidates the GPU mappings of that
/// memory (the next job faults again, and maps it with the new attribute);
/// one that changes nothing, and memory outside the change, keep theirs.
pub fn madvise_invalidates_only_what_changes(d: &Device) -> TestResult {
    let c = mirror_ctx(d)?;
    let vm = c.vm;
    // Two 2 MiB regions, X and Y, each one range of the mirror.
    let map = Anon::mmap(6 * SZ_2M)?;
    let x = (map.addr() + SZ_2M - 1) & !(SZ_2M - 1);
    let y = x + 2 * SZ_2M;
    let fill = |addr: u64, pattern: u32, what: &str| -> Result<u64, String> {
        let before = resolved(vm)?;
        let mut cb = CmdBuf::new();
        cb.fill(addr, SZ_2M, pattern).end();
        let status = c.run(&cb)?;
        check!(status == 0, "{what}: the job ended with {status}");
        expect_fill(addr, SZ_2M, pattern, what)?;
        Ok(resolved(vm)? - before)
    };
    let n = fill(x, 1, "first fill of X")?;
    check!(n == 1, "the first fill of X took {n} faults, not 1");
    let n = fill(y, 2, "first fill of Y")?;
    check!(n == 1, "the first fill of Y took {n} faults, not 1");
    check!(
        fill(x, 3, "X again")? == 0,
        "X faulted again with nothing changed"
    );

    for (what, adv) in [
        ("PAT WB", Madvise::Pat(WB)),
        ("atomic UNDEFINED", Madvise::Atomic(UNDEF)),
        (
            "the default location",
            Madvise::PreferredLoc {
                devmem_fd: DEVICE,
                migration_policy: ALL as u16,
            },
        ),
    ] {
        d.madvise(vm, x, SZ_2M, adv).map_err(e2s)?;
        let n = fill(x, 4, what)?;
        check!(n == 0, "MADVISE of the unchanged {what} cost {n} faults");
    }
    d.madvise(vm, x, SZ_2M, Madvise::Atomic(DRM_MIRAGE_ATOMIC_DEVICE))
        .map_err(e2s)?;
    check!(
        fill(y, 5, "Y after X changed")? == 0,
        "Y faulted after a MADVISE of X"
    );
    let n = fill(x, 6, "X after it changed")?;
    check!(
        n == 1,
        "X took {n} faults after its attribute changed, not 1"
    );
    // The split left X a mapping of its own, with its attribute.
    let q = query(d, vm, x, SZ_2M)?;
    check!(
        q == [(x, x + SZ_2M, DEVICE, ALL, DRM_MIRAGE_ATOMIC_DEVICE, WB)],
        "X's attributes {q:x?}"
    );
    Ok(())
}

/// A fault-mode VM whose address space above 4 GiB mirrors the process's, as
/// [`mirror_ctx`]'s, with MADVISE_AUTORESET.
fn autoreset_ctx(d: &Device) -> Result<Ctx<'_>, String> {
    let c = Ctx::unordered(d, FAULT_MODE)?;
    let op = DrmMirageVmBindOp::map_mirror(MIRROR_START, MIRROR_END - MIRROR_START).with_flags(
        DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR | DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET,
    );
    d.vm_bind(c.vm, 0, &[op], &[]).map_err(e2s)?;
    Ok(c)
}

const ATOMIC_DEV: u32 = DRM_MIRAGE_ATOMIC_DEVICE;

fn dev(s: u64, e: u64) -> Entry {
    (s, e, DEVICE, ALL, ATOMIC_DEV, WB)
}

/// MADVISE_AUTORESET: munmap of part of madvised memory the GPU used gives
/// that span, and only it, the defaults back (the query shows it); the rest
/// keeps its attribute and its data, and the GPU keeps using it. Without
/// AUTORESET, nothing is reset.
pub fn madvise_autoreset_follows_munmap(d: &Device) -> TestResult {
    for autoreset in [true, false] {
        let what = |s: &str| format!("autoreset {autoreset}: {s}");
        let c = if autoreset {
            autoreset_ctx(d)?
        } else {
            mirror_ctx(d)?
        };
        let vm = c.vm;
        let map = Anon::mmap(6 * SZ_2M)?;
        let b = (map.addr() + SZ_2M - 1) & !(SZ_2M - 1);
        d.madvise(vm, b, 4 * SZ_1M, Madvise::Atomic(ATOMIC_DEV))
            .map_err(e2s)?;
        let mut cb = CmdBuf::new();
        cb.fill(b, 4 * SZ_1M, 0x1357_9bdf).end();
        check!(c.run(&cb)? == 0, "{}", what("the fill failed"));

        map.unmap(b + SZ_1M, SZ_1M)?;
        let got = query(d, vm, b, 4 * SZ_1M)?;
        let want = if autoreset {
            vec![
                dev(b, b + SZ_1M),
                def(b + SZ_1M, b + 2 * SZ_1M),
                dev(b + 2 * SZ_1M, b + 4 * SZ_1M),
            ]
        } else {
            vec![dev(b, b + 4 * SZ_1M)]
        };
        check!(got == want, "{}: {got:x?}", what("after a middle munmap"));

        // The end of the madvised span: the reset part joins the default
        // mirror after it.
        map.unmap(b + 3 * SZ_1M, SZ_1M)?;
        let got = query(d, vm, b, 4 * SZ_1M)?;
        let want = if autoreset {
            vec![
                dev(b, b + SZ_1M),
                def(b + SZ_1M, b + 2 * SZ_1M),
                dev(b + 2 * SZ_1M, b + 3 * SZ_1M),
                def(b + 3 * SZ_1M, MIRROR_END),
            ]
        } else {
            vec![dev(b, b + 4 * SZ_1M)]
        };
        check!(got == want, "{}: {got:x?}", what("after a back munmap"));

        // What is left keeps its data and takes GPU atomics (atomic DEVICE).
        expect_fill(b, SZ_1M, 0x1357_9bdf, &what("the first MiB"))?;
        check!(
            inc_works(&c, b + 2 * SZ_1M, &what("atomic"))?,
            "{}",
            what("the GPU atomic failed on the memory left")
        );
    }
    Ok(())
}

/// xe's open gap, closed: memory madvised and munmapped without the GPU ever
/// touching it (no SVM range exists) gets the defaults back too.
pub fn madvise_autoreset_without_gpu_access(d: &Device) -> TestResult {
    let c = autoreset_ctx(d)?;
    let vm = c.vm;
    let map = Anon::mmap(4 * SZ_1M)?;
    let b = map.addr();
    d.madvise(vm, b, 4 * SZ_1M, Madvise::Pat(UC)).map_err(e2s)?;
    d.madvise(vm, b, 4 * SZ_1M, Madvise::Atomic(DRM_MIRAGE_ATOMIC_CPU))
        .map_err(e2s)?;
    let cpu = DRM_MIRAGE_ATOMIC_CPU;
    let got = query(d, vm, b, 4 * SZ_1M)?;
    check!(
        got == [(b, b + 4 * SZ_1M, DEVICE, ALL, cpu, UC)],
        "after MADVISE: {got:x?}"
    );
    let ranges = vm_debug(vm)?.svm_ranges;
    check!(
        ranges == Some(0),
        "the GPU touched nothing, yet ranges {ranges:?}"
    );
    map.unmap(b, SZ_1M)?;
    let got = query(d, vm, b, 4 * SZ_1M)?;
    check!(
        got == [
            (MIRROR_START, b + SZ_1M, DEVICE, ALL, UNDEF, WB),
            (b + SZ_1M, b + 4 * SZ_1M, DEVICE, ALL, cpu, UC)
        ],
        "after munmap of the first MiB: {got:x?}"
    );
    // The rest is exactly one mirror: reset in place, as xe does.
    drop(map);
    let got = query(d, vm, b, 4 * SZ_1M)?;
    check!(
        got == [def(MIRROR_START, b + SZ_1M), def(b + SZ_1M, b + 4 * SZ_1M)],
        "after munmap of the rest: {got:x?}"
    );
    Ok(())
}

/// More unmaps than the collector's log holds, while its work item is held
/// (debugfs `pause_gc_work`): the collector finds what the CPU unmapped from
/// the CPU's mappings instead, and resets exactly that.
pub fn madvise_autoreset_after_the_log_overflows(d: &Device) -> TestResult {
    const KNOB: &str = "/sys/kernel/debug/mirage/pause_gc_work";
    // More than the log's 64 entries.
    const N: u64 = 100;
    let c = autoreset_ctx(d)?;
    let vm = c.vm;
    let map = Anon::mmap(2 * N * SZ_4K)?;
    let b = map.addr();
    let cpu = DRM_MIRAGE_ATOMIC_CPU;
    d.madvise(vm, b, 2 * N * SZ_4K, Madvise::Atomic(cpu))
        .map_err(e2s)?;
    std::fs::write(KNOB, "1").map_err(|e| format!("{KNOB}: {e}"))?;
    // Every other page, each its own munmap.
    let unmapped = (0..N).try_for_each(|i| map.unmap(b + 2 * i * SZ_4K, SZ_4K));
    std::fs::write(KNOB, "0").map_err(|e| format!("{KNOB}: {e}"))?;
    unmapped?;
    let got = query(d, vm, b, 2 * N * SZ_4K)?;
    let page = |i: u64| b + i * SZ_4K;
    // The first page's reset joins the default mirror before it.
    let mut want = vec![def(MIRROR_START, page(1))];
    for i in 0..N {
        if i > 0 {
            want.push(def(page(2 * i), page(2 * i + 1)));
        }
        want.push((page(2 * i + 1), page(2 * i + 2), DEVICE, ALL, cpu, WB));
    }
    check!(
        got == want,
        "after {N} munmaps: {} entries, not {}; first wrong: {:x?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).find(|(g, w)| g != w)
    );
    Ok(())
}
