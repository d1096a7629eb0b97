// SPDX-License-Identifier: GPL-2.0 or MIT

//! KUnit tests of VM binds: the driver's own bind code (drm_gpuvm's split and merge, the
//! page-table budget, the update in a signalling section) over a faux DRM device, against a
//! reference model of the VA space.
//!
//! The BOs are shmem objects whose pages are never taken: each op carries fake bus addresses
//! (BO `b`'s offset `o` at `(b + 1) << 32 | o`), so that 1 GiB blocks happen without the memory.
//! After every bind array: the VA tree equals the model, every leaf of the page table maps what
//! the model says (address and protection), and the budget equals the tables taken. A bind
//! whose reservation fails, and an array with a bad op, change nothing.

use kernel::{
    device,
    dma_buf::fence::{Fence, FenceContext, FenceOps},
    drm::{
        self,
        gem::{self, shmem},
    },
    faux,
    iommu::pgtable::prot,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc,
    },
    time::Delta,
};

use super::{queue::BindQueue, Advice, Attrs, Backend, BindOp, VmCore};
use crate::mmu::{
    pool::PoolStats,
    tests::{check, insert_sorted, random_prot, Mapping, Model, Rng},
    walker::{count_leaves, SZ_1G, SZ_2M, SZ_4K},
};

#[pin_data]
struct TestData {}

struct TestDriver;

struct TestFile;

/// A BO of the test driver; the serial of the VM it is private to, or 0.
#[pin_data]
struct TestBo {
    private_vm: u64,
}

type TestObject = shmem::Object<TestBo>;

const INFO: drm::DriverInfo = drm::DriverInfo {
    major: 0,
    minor: 0,
    patchlevel: 0,
    name: c"mirage-kunit",
    desc: c"mirage VM KUnit tests",
};

impl drm::file::DriverFile for TestFile {
    type Driver = TestDriver;

    fn open(_dev: &drm::Device<TestDriver>) -> Result<Pin<KBox<Self>>> {
        Ok(KBox::new(Self, GFP_KERNEL)?.into())
    }
}

impl gem::DriverObject for TestBo {
    type Driver = TestDriver;
    type Args = u64;

    fn new(
        _dev: &drm::Device<TestDriver>,
        _size: usize,
        private_vm: u64,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(TestBo { private_vm })
    }
}

#[vtable]
impl drm::Driver for TestDriver {
    type Data = TestData;
    type RegistrationData<'a> = ();
    type File = TestFile;
    type Object = TestObject;
    type ParentDevice<Ctx: device::DeviceContext> = faux::Device<Ctx>;

    const INFO: drm::DriverInfo = INFO;
    const IOCTLS: &'static [drm::ioctl::DrmIoctlDescriptor] = &[];
}

/// A device without hardware: it counts TLB invalidations and fails reservations on demand.
struct TestBackend {
    fail_reserve: Atomic<bool>,
    flushes: Atomic<u64>,
}

impl Backend for TestBackend {
    type Driver = TestDriver;
    type Object = TestObject;

    fn new_resv_root(dev: &drm::Device<TestDriver>) -> Result<ARef<TestObject>> {
        TestObject::new(dev, 4096, shmem::ObjectConfig::default(), 0)
    }

    fn private_vm(bo: &TestObject) -> u64 {
        bo.private_vm
    }

    fn flush(&self, _serial: u64, _start: u64, _end: u64) {
        self.flushes.fetch_add(1, Relaxed);
    }

    fn evict(&self, _serial: u64) {}

    fn fail_reserve(&self) -> bool {
        self.fail_reserve.xchg(false, Relaxed)
    }

    // Nothing reads the pages: their physical address stands for the bus address.
    unsafe fn dma_map_page(&self, page: kernel::mm::hmm::HmmPfn, _write: bool) -> Result<u64> {
        Ok(page.phys())
    }

    unsafe fn dma_unmap_page(&self, _addr: u64, _write: bool) {}
}

type TestVm = VmCore<TestBackend>;

const BASE: u64 = 1 << 36;
const WINDOW: u64 = 4 * SZ_1G;
const PGSIZES: u64 = SZ_4K | SZ_2M | SZ_1G;

/// A mapping of the model: `[start, end)` of the VA to BO `bo` at `offset`, with `prot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Va {
    start: u64,
    end: u64,
    bo: usize,
    offset: u64,
    prot: u32,
}

/// drm_gpuvm's split semantics, by hand: sorted, disjoint mappings, never merged.
#[derive(Default)]
struct VaModel(KVec<Va>);

impl VaModel {
    fn unmap(&mut self, start: u64, end: u64) -> Result {
        let mut out = KVec::new();
        for v in self.0.iter() {
            if v.end <= start || v.start >= end {
                out.push(*v, GFP_KERNEL)?;
                continue;
            }
            if v.start < start {
                out.push(Va { end: start, ..*v }, GFP_KERNEL)?;
            }
            if v.end > end {
                let offset = v.offset + (end - v.start);
                out.push(
                    Va {
                        start: end,
                        offset,
                        ..*v
                    },
                    GFP_KERNEL,
                )?;
            }
        }
        self.0 = out;
        Ok(())
    }

    fn map(&mut self, va: Va) -> Result {
        self.unmap(va.start, va.end)?;
        insert_sorted(&mut self.0, va, |x| x.start)
    }

    fn unmap_all(&mut self, bo: usize) {
        self.0.retain(|v| v.bo != bo);
    }

    /// The page-table model: each mapping at its fake bus address.
    fn leaves(&self) -> Result<Model> {
        let mut m = KVec::with_capacity(self.0.len(), GFP_KERNEL)?;
        for v in self.0.iter() {
            m.push(
                Mapping {
                    va: v.start,
                    len: v.end - v.start,
                    pa: bus(v.bo, v.offset),
                    prot: v.prot,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(Model(m))
    }
}

/// The fake bus address of BO `bo` at `offset`: 4 GiB apart, 1 GiB aligned.
fn bus(bo: usize, offset: u64) -> u64 {
    ((bo as u64 + 1) << 32) + offset
}

struct Fixture {
    _faux: faux::Registration,
    drm: drm::UnregisteredDevice<TestDriver>,
    backend: Arc<TestBackend>,
}

impl Fixture {
    /// `name` names the faux device: a failed assertion leaks the fixture of its case.
    fn new(name: &'static CStr) -> Result<Self> {
        let faux = faux::Registration::new(name, None)?;
        let drm =
            drm::UnregisteredDevice::<TestDriver>::new(faux.as_ref(), try_pin_init!(TestData {}))?;
        let backend = Arc::new(
            TestBackend {
                fail_reserve: Atomic::new(false),
                flushes: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        Ok(Self {
            _faux: faux,
            drm,
            backend,
        })
    }

    fn vm(&self) -> Result<Arc<TestVm>> {
        TestVm::new(&self.drm, &self.backend, 48, PGSIZES, false)
    }

    fn bo(&self, size: u64, private_vm: u64) -> Result<ARef<TestObject>> {
        let size = usize::try_from(size).map_err(|_| EINVAL)?;
        TestObject::new(&self.drm, size, shmem::ObjectConfig::default(), private_vm)
    }
}

/// The fences the tests hold binds behind.
struct Gates;

impl FenceOps for Gates {
    const DRIVER_NAME: &'static CStr = c"mirage-vm-kunit";
}

/// Submits `ops` to `q` as a synchronous bind.
fn bind(q: &BindQueue<TestBackend>, ops: KVec<BindOp<TestBackend>>) -> Result {
    q.bind(ops, &[], true).map(|_| ())
}

fn map_op(
    bos: &[ARef<TestObject>],
    vm: &TestVm,
    bo: usize,
    offset: u64,
    start: u64,
    len: u64,
    prot: u32,
) -> Result<BindOp<TestBackend>> {
    let mut segments = super::Segments::new();
    segments.push((bus(bo, offset), len), GFP_KERNEL)?;
    Ok(BindOp::Map {
        range: vm.check_range(start, len)?,
        bo: bos[bo].clone(),
        offset,
        prot,
        segments,
    })
}

/// Checks the VA tree, every leaf in `[start, end)` and the pool against the model.
fn check_vm(
    vm: &TestVm,
    bos: &[ARef<TestObject>],
    model: &VaModel,
    start: u64,
    end: u64,
) -> Result {
    let mut tree = KVec::new();
    let mut res = Ok(());
    vm.state.lock().gpuvm.for_each_va(0..1 << 48, |va| {
        let bo = bos
            .iter()
            .position(|b| va.obj().is_some_and(|o| core::ptr::eq(&**b, o)));
        if res.is_ok() {
            res = tree.push(
                (va.addr(), va.addr() + va.length(), bo, va.gem_offset()),
                GFP_KERNEL,
            );
        }
    });
    res?;
    let want = model
        .0
        .iter()
        .map(|v| (v.start, v.end, Some(v.bo), v.offset));
    if tree.len() != model.0.len() || !tree.iter().copied().eq(want) {
        pr_err!(
            "mirage_vm: VA tree {:x?}\nmodel {:x?}\n",
            &tree[..],
            &model.0[..]
        );
        return Err(EINVAL);
    }
    // Allocated before the page-table lock, which is never held around an allocation.
    let leaves = model.leaves()?;
    check(&vm.pt.lock(), &leaves, start, end)?;
    let s = vm.pool.stats();
    if s.reserved != s.used || s.exhausted != 0 || s.unused != 0 {
        pr_err!("mirage_vm: pool {:?}\n", s);
        return Err(EINVAL);
    }
    Ok(())
}

/// A random op over the window, applied to `next` too.
fn random_op(
    rng: &mut Rng,
    bos: &[ARef<TestObject>],
    sizes: &[u64],
    vm: &TestVm,
    next: &mut VaModel,
) -> Result<BindOp<TestBackend>> {
    let align = [SZ_4K, SZ_4K, SZ_2M, SZ_2M, SZ_1G][rng.below(5) as usize];
    let start = BASE + rng.below(WINDOW / align) * align;
    let room = BASE + WINDOW - start;
    match rng.below(8) {
        0..=4 => {
            let bo = rng.below(sizes.len() as u64) as usize;
            // Long maps keep the offset congruent to the VA modulo 1 GiB, so that they get
            // blocks rather than 2^18 pages; short ones often do modulo 2 MiB.
            let (start, offset, len) = match rng.below(4) {
                // A 1 GiB block and a little more, at a 1 GiB-aligned VA.
                0 if sizes[bo] > SZ_1G => {
                    let start = BASE + rng.below(WINDOW / SZ_1G) * SZ_1G;
                    let offset = rng.below(2) * SZ_1G;
                    (start, offset, SZ_1G + rng.below(3) * SZ_2M)
                }
                1 => {
                    let offset = rng.below((sizes[bo] / SZ_2M).max(1)) * SZ_2M + start % SZ_2M;
                    let offset = offset.min(sizes[bo] - SZ_4K) & !(SZ_4K - 1);
                    (
                        start,
                        offset,
                        (1 + rng.below(4)) * SZ_2M + rng.below(3) * SZ_4K,
                    )
                }
                _ => {
                    let offset = rng.below(sizes[bo] / SZ_4K) * SZ_4K;
                    (start, offset, (1 + rng.below(600)) * SZ_4K)
                }
            };
            let len = len.min(sizes[bo] - offset).min(BASE + WINDOW - start);
            let prot = random_prot(rng);
            next.map(Va {
                start,
                end: start + len,
                bo,
                offset,
                prot,
            })?;
            map_op(bos, vm, bo, offset, start, len, prot)
        }
        5..=6 => {
            let len = [
                SZ_4K * (1 + rng.below(16)),
                SZ_2M * (1 + rng.below(4)),
                SZ_1G,
            ][rng.below(3) as usize]
                .min(room);
            next.unmap(start, start + len)?;
            Ok(BindOp::Unmap {
                range: vm.check_range(start, len)?,
            })
        }
        _ => {
            let bo = rng.below(sizes.len() as u64) as usize;
            next.unmap_all(bo);
            Ok(BindOp::UnmapAll {
                bo: bos[bo].clone(),
            })
        }
    }
}

/// The pages of the mirrors of the attribute tests: an AUTORESET mirror of `AUTO` pages with
/// PAT 0, then a mirror without AUTORESET of `PLAIN` pages with PAT 1, from `BASE` on.
const AUTO: u64 = 32;
const PLAIN: u64 = 16;

fn page(i: u64) -> u64 {
    BASE + i * SZ_4K
}

/// Each mapping of the tree, as `(start, end, attributes)`; every one must be a mirror.
fn mirrors(vm: &TestVm) -> Result<KVec<(u64, u64, Attrs)>> {
    let state = vm.state.lock();
    let mut out = KVec::new();
    let mut res = Ok(());
    state.gpuvm.for_each_va(0..u64::MAX, |va| {
        let Some(a) = va.data().mirror else {
            res = Err(EINVAL);
            return;
        };
        if res.is_ok() {
            let e = (va.addr(), va.addr() + va.length(), a);
            res = out.push(e, GFP_KERNEL).map_err(Error::from);
        }
    });
    res.map(|()| out)
}

/// Checks that the mirrors tile the two mirrors' pages and have the model's attributes.
fn check_attrs(vm: &TestVm, model: &[Attrs]) -> Result {
    let m = mirrors(vm)?;
    let mut at = page(0);
    for &(s, e, a) in m.iter() {
        if s != at || e <= s {
            pr_err!("mirrors do not tile: {s:#x}..{e:#x} after {at:#x}\n");
            return Err(EINVAL);
        }
        for p in (s..e).step_by(SZ_4K as usize) {
            let i = ((p - BASE) / SZ_4K) as usize;
            if model.get(i) != Some(&a) {
                pr_err!("page {i}: tree {a:?}, model {:?}\n", model.get(i));
                return Err(EINVAL);
            }
        }
        at = e;
    }
    if at != page(AUTO + PLAIN) {
        pr_err!("mirrors end at {at:#x}\n");
        return Err(EINVAL);
    }
    Ok(())
}

fn random_advice(rng: &mut Rng) -> Advice {
    match rng.below(3) {
        0 => Advice::Atomic(rng.below(4) as u32),
        1 => Advice::Pat(rng.below(2) as u16),
        _ => Advice::PreferredLoc {
            devmem_fd: if rng.below(2) == 0 { 0 } else { u32::MAX },
            migration: rng.below(2) as u16,
        },
    }
}

/// A fault-mode VM (with no mirror of a process: the tests drive the collector's reset
/// directly) with the two mirrors, and the model of their pages' attributes.
fn two_mirrors(fx: &Fixture) -> Result<(Arc<TestVm>, BindQueue<TestBackend>, KVec<Attrs>)> {
    let vm = TestVm::new(&fx.drm, &fx.backend, 48, PGSIZES, true)?;
    let q = BindQueue::new(vm.clone())?;
    let mut ops = KVec::new();
    ops.push(
        BindOp::MapMirror {
            range: page(0)..page(AUTO),
            pat: 0,
            autoreset: true,
        },
        GFP_KERNEL,
    )?;
    ops.push(
        BindOp::MapMirror {
            range: page(AUTO)..page(AUTO + PLAIN),
            pat: 1,
            autoreset: false,
        },
        GFP_KERNEL,
    )?;
    bind(&q, ops)?;
    let mut model = KVec::new();
    for i in 0..AUTO + PLAIN {
        let a = if i < AUTO {
            Attrs::new(0, true)
        } else {
            Attrs::new(1, false)
        };
        model.push(a, GFP_KERNEL)?;
    }
    Ok((vm, q, model))
}

/// The collector's reset of `[page(a), page(b))`, as after a CPU unmap of it.
fn reset(vm: &TestVm, a: u64, b: u64) -> Result {
    let mut state = vm.state.lock();
    vm.reset_span(&mut state, page(a)..page(b))
}

#[kunit_tests(mirage_vm)]
mod kunit {
    use super::*;

    #[test]
    fn random_bind_arrays_match_the_model() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-random")?;
        let vm = fx.vm()?;
        let q = BindQueue::new(vm.clone())?;
        let sizes = [2 * SZ_1G + SZ_2M, 8 * SZ_2M, 64 * SZ_4K];
        let mut bos = KVec::new();
        for &size in &sizes {
            bos.push(fx.bo(size, 0)?, GFP_KERNEL)?;
        }
        // A BO private to another VM: an array with it fails whole.
        bos.push(fx.bo(SZ_4K, vm.serial() + 1000)?, GFP_KERNEL)?;
        let mut model = VaModel::default();
        let mut rng = Rng(0x6d69_7261_6765_766d);
        let mut blocks = [0u64; 4];
        for step in 0..120 {
            let mut next = VaModel(KVec::with_capacity(model.0.len(), GFP_KERNEL)?);
            for v in model.0.iter() {
                next.0.push(*v, GFP_KERNEL)?;
            }
            let mut ops = KVec::new();
            for _ in 0..1 + rng.below(4) {
                ops.push(
                    random_op(&mut rng, &bos, &sizes, &vm, &mut next)?,
                    GFP_KERNEL,
                )?;
            }
            let before = vm.pool.stats();
            let flushes = fx.backend.flushes.load(Relaxed);
            let res = match step % 10 {
                // The reservation fails: ENOMEM, and nothing changes; unless the array only
                // unmaps, which the standing reserve serves.
                3 => {
                    fx.backend.fail_reserve.store(true, Relaxed);
                    let maps = ops.iter().any(|o| matches!(o, BindOp::Map { .. }));
                    maps.then_some(ENOMEM)
                }
                // A bad op last: EINVAL, and nothing changes.
                7 => {
                    ops.push(
                        map_op(&bos, &vm, 3, 0, BASE, SZ_4K, prot::READ)?,
                        GFP_KERNEL,
                    )?;
                    Some(EINVAL)
                }
                _ => None,
            };
            // Every leaf of the window now and then, else the 1 GiB spans of the VA model
            // (an UNMAP_ALL may have removed anything: those steps check all).
            let all = step % 20 == 19 || ops.iter().any(|o| matches!(o, BindOp::UnmapAll { .. }));
            let (start, end) = if all {
                (BASE, BASE + WINDOW)
            } else {
                let mut lo = u64::MAX;
                let mut hi = 0;
                for o in ops.iter() {
                    if let BindOp::Map { range, .. } | BindOp::Unmap { range } = o {
                        lo = lo.min(range.start);
                        hi = hi.max(range.end);
                    }
                }
                (lo & !(SZ_1G - 1), hi.next_multiple_of(SZ_1G))
            };
            match (bind(&q, ops), res) {
                (Ok(()), None) => model = next,
                (Err(e), Some(want)) if e == want => {
                    let after: PoolStats = vm.pool.stats();
                    if after.used != before.used || fx.backend.flushes.load(Relaxed) != flushes {
                        pr_err!("mirage_vm: step {}: a failed bind changed the VM\n", step);
                        return Err(EINVAL);
                    }
                }
                (r, want) => {
                    pr_err!(
                        "mirage_vm: step {}: bind {:?}, expected {:?}\n",
                        step,
                        r,
                        want
                    );
                    return Err(EINVAL);
                }
            }
            check_vm(&vm, &bos, &model, start, end)?;
            let leaves = count_leaves(&*vm.pt.lock(), 1 << 48);
            for (total, n) in blocks.iter_mut().zip(leaves) {
                *total += n;
            }
        }
        // The sequence met 1 GiB and 2 MiB blocks, and pages.
        if blocks[1] == 0 || blocks[2] == 0 || blocks[3] == 0 {
            pr_err!("mirage_vm: leaves seen by level {:?}\n", blocks);
            return Err(EINVAL);
        }
        assert!(vm.pool.stats().returned > 0);
        Ok(())
    }

    #[test]
    fn partial_unmaps_of_2m_blocks() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-2m")?;
        let vm = fx.vm()?;
        let q = BindQueue::new(vm.clone())?;
        let bos = [fx.bo(2 * SZ_2M, 0)?];
        let rw = prot::READ | prot::WRITE;
        let mut model = VaModel::default();
        let start = BASE + SZ_1G;
        let mut ops = KVec::new();
        ops.push(map_op(&bos, &vm, 0, 0, start, 2 * SZ_2M, rw)?, GFP_KERNEL)?;
        bind(&q, ops)?;
        model.map(Va {
            start,
            end: start + 2 * SZ_2M,
            bo: 0,
            offset: 0,
            prot: rw,
        })?;
        check_vm(&vm, &bos, &model, BASE, BASE + WINDOW)?;
        assert_eq!(count_leaves(&*vm.pt.lock(), 1 << 48), [0, 0, 2, 0]);

        // The middle of the first block, the front and the back of the second.
        let mut ops = KVec::new();
        for hole in [SZ_2M / 2, SZ_2M, 2 * SZ_2M - SZ_4K] {
            ops.push(
                BindOp::Unmap {
                    range: vm.check_range(start + hole, SZ_4K)?,
                },
                GFP_KERNEL,
            )?;
            model.unmap(start + hole, start + hole + SZ_4K)?;
        }
        bind(&q, ops)?;
        check_vm(&vm, &bos, &model, BASE, BASE + WINDOW)?;
        assert_eq!(
            count_leaves(&*vm.pt.lock(), 1 << 48),
            [0, 0, 0, 2 * 512 - 3]
        );
        Ok(())
    }

    /// Binds queued on two queues behind gates that open in random order, some with an
    /// error: each executes once its gate and the overlapping binds before it did, and after
    /// each round the page table matches the model (in submission order) and the pool reserved
    /// exactly the tables the binds took, though they ran in another order than they were
    /// budgeted in.
    #[test]
    fn queued_binds_run_in_any_order_within_their_budget() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-queued")?;
        let vm = fx.vm()?;
        let queues = [BindQueue::new(vm.clone())?, BindQueue::new(vm.clone())?];
        let sizes = [2 * SZ_1G + SZ_2M, 8 * SZ_2M, 64 * SZ_4K];
        let mut bos = KVec::new();
        for &size in &sizes {
            bos.push(fx.bo(size, 0)?, GFP_KERNEL)?;
        }
        let gates = FenceContext::<Gates, ()>::new(c"mirage-vm-kunit-gates");
        let mut model = VaModel::default();
        let mut rng = Rng(0x7175_6575_6564_766d);
        let mut later = 0;
        for round in 0..16 {
            let mut held = KVec::new();
            let mut fences = KVec::new();
            for _ in 0..8 {
                let mut ops = KVec::new();
                for _ in 0..1 + rng.below(3) {
                    ops.push(
                        random_op(&mut rng, &bos, &sizes, &vm, &mut model)?,
                        GFP_KERNEL,
                    )?;
                }
                let (gate, gate_fence) = gates.publish(gates.prepare((), GFP_KERNEL)?);
                let q = &queues[rng.below(2) as usize];
                fences.push(q.bind(ops, &[gate_fence], false)?, GFP_KERNEL)?;
                held.push(gate, GFP_KERNEL)?;
            }
            // Nothing ran: every bind waits for its gate.
            if fences.iter().any(|f| f.is_signaled()) {
                pr_err!("mirage_vm: round {}: a bind ran before its gate\n", round);
                return Err(EINVAL);
            }
            while !held.is_empty() {
                let i = rng.below(held.len() as u64) as usize;
                if i + 1 != held.len() {
                    later += 1;
                }
                let gate = held.remove(i)?;
                gate.signal(if rng.below(4) == 0 { Err(EIO) } else { Ok(()) });
            }
            for f in fences.iter() {
                f.wait(false, Delta::from_secs(10))?;
                if f.status() != Some(Ok(())) {
                    pr_err!("mirage_vm: round {}: bind fence {:?}\n", round, f.status());
                    return Err(EINVAL);
                }
            }
            check_vm(&vm, &bos, &model, BASE, BASE + WINDOW)?;
            if vm.pool.available() != 0 || !vm.is_usable() {
                pr_err!(
                    "mirage_vm: round {}: {} tables left\n",
                    round,
                    vm.pool.available()
                );
                return Err(EINVAL);
            }
        }
        // Gates did open out of submission order.
        assert!(later > 0);
        Ok(())
    }

    /// Dropping a bind queue cancels the binds it holds: their fences signal ECANCELED, the
    /// page table does not change, the VM becomes unusable, and the tables reserved for them
    /// go back.
    #[test]
    fn dropping_a_queue_cancels_its_binds() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-cancel")?;
        let vm = fx.vm()?;
        let bos = [fx.bo(SZ_2M, 0)?];
        let q = BindQueue::new(vm.clone())?;
        let gates = FenceContext::<Gates, ()>::new(c"mirage-vm-kunit-gates");
        let (gate, gate_fence) = gates.publish(gates.prepare((), GFP_KERNEL)?);
        let mut ops = KVec::new();
        ops.push(
            map_op(&bos, &vm, 0, 0, BASE + SZ_1G + SZ_4K, SZ_4K, prot::READ)?,
            GFP_KERNEL,
        )?;
        let fence: ARef<Fence> = q.bind(ops, &[gate_fence], false)?;
        let reserved = vm.pool.available();
        assert!(reserved > 0);
        drop(q);
        assert_eq!(fence.status(), Some(Err(ECANCELED)));
        assert!(!vm.is_usable());
        assert_eq!(vm.pool.available(), 0);
        assert_eq!(vm.pool.stats().cancelled, reserved as u64);
        assert_eq!(count_leaves(&*vm.pt.lock(), 1 << 48), [0, 0, 0, 0]);
        gate.signal(Ok(()));
        Ok(())
    }

    /// Random MADVISEs and CPU unmaps over an AUTORESET mirror and one without: the attributes
    /// of every page follow a model where an unmap resets AUTORESET pages only, and the
    /// mirrors always tile the pages.
    #[test]
    fn autoreset_follows_unmaps_against_a_model() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-autoreset")?;
        let (vm, _q, mut model) = two_mirrors(&fx)?;
        check_attrs(&vm, &model)?;
        let mut rng = Rng(0x6761_7262_6167_6521);
        let span = AUTO + PLAIN + 8;
        for _ in 0..300 {
            // Ranges may start and end in the holes on either side.
            let a = rng.below(span);
            let b = a + 1 + rng.below(span - a);
            let (a, b) = (a as i64 - 4, b as i64 - 4);
            let lo = a.max(0) as u64;
            let hi = (b.max(0) as u64).min(AUTO + PLAIN);
            let start = (BASE as i64 + a * SZ_4K as i64) as u64;
            let end = (BASE as i64 + b * SZ_4K as i64) as u64;
            if rng.below(3) < 2 {
                let adv = random_advice(&mut rng);
                vm.madvise(start..end, adv)?;
                for i in lo..hi {
                    model[i as usize] = model[i as usize].advised(adv);
                }
            } else {
                let mut state = vm.state.lock();
                vm.reset_span(&mut state, start..end)?;
                drop(state);
                for i in lo..hi {
                    let m = &mut model[i as usize];
                    if m.autoreset {
                        *m = m.defaults();
                    }
                }
            }
            check_attrs(&vm, &model)?;
        }
        // Every piece went back to its defaults at some point, and pieces were made.
        assert!(mirrors(&vm)?.len() > 2);
        Ok(())
    }

    /// The reset of a span that a mirror covers exactly is in place; otherwise the span
    /// becomes a mirror of its own that takes in the neighbours that have the defaults
    /// already, while neighbours with other attributes keep theirs.
    #[test]
    fn reset_splits_and_merges_with_default_neighbours() -> Result {
        let fx = Fixture::new(c"mirage-vm-kunit-reset-merge")?;
        let (vm, _q, _) = two_mirrors(&fx)?;
        let uc = Advice::Pat(1);
        let dev = Advice::Atomic(1);
        // [0, 4) UC, [4, 8) defaults, [8, 12) UC, [12, 16) atomic DEVICE, the rest defaults.
        vm.madvise(page(0)..page(4), uc)?;
        vm.madvise(page(8)..page(12), uc)?;
        vm.madvise(page(12)..page(16), dev)?;
        let d = Attrs::new(0, true);
        let (a_uc, a_dev) = (d.advised(uc), d.advised(dev));
        // The AUTORESET mirrors must be these, each given by its end and attributes.
        let shape = |want: &[(u64, Attrs)]| -> Result {
            let mut auto = KVec::new();
            for m in mirrors(&vm)?.into_iter().filter(|m| m.2.autoreset) {
                auto.push(m, GFP_KERNEL)?;
            }
            let mut start = 0;
            let mut ok = auto.len() == want.len();
            for (g, &(end, a)) in auto.iter().zip(want) {
                ok &= g.0 == page(start) && g.1 == page(end) && g.2 == a;
                start = end;
            }
            if !ok {
                pr_err!("mirrors {auto:?}\n");
                return Err(EINVAL);
            }
            Ok(())
        };
        // The span reset (none at first), then the mirrors it leaves.
        type Step = (Option<(u64, u64)>, [(u64, Attrs); 5]);
        let steps: [Step; 5] = [
            (
                None,
                [(4, a_uc), (8, d), (12, a_uc), (16, a_dev), (AUTO, d)],
            ),
            // Inside one mirror, next to a default one: the two become one.
            (
                Some((2, 4)),
                [(2, a_uc), (8, d), (12, a_uc), (16, a_dev), (AUTO, d)],
            ),
            // Exactly one mirror: in place.
            (
                Some((8, 12)),
                [(2, a_uc), (8, d), (12, d), (16, a_dev), (AUTO, d)],
            ),
            // Across the end of one: its rest keeps its attributes, the default one after
            // merges.
            (
                Some((14, 20)),
                [(2, a_uc), (8, d), (12, d), (14, a_dev), (AUTO, d)],
            ),
            // Nothing to reset: nothing changes.
            (
                Some((20, 24)),
                [(2, a_uc), (8, d), (12, d), (14, a_dev), (AUTO, d)],
            ),
        ];
        for (span, want) in steps {
            if let Some((a, b)) = span {
                reset(&vm, a, b)?;
            }
            shape(&want)?;
        }
        Ok(())
    }
}
