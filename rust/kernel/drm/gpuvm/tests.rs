// SPDX-License-Identifier: GPL-2.0 OR MIT

//! KUnit tests of the VA tree: mappings with and without a GEM object, flags, split and data.

#![cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]

#[macros::kunit_tests(rust_drm_gpuvm)]
mod va_tree {
    use crate::drm::{
        exec::kunit_gem::*,
        gpuvm::*, //
    };

    /// Maps and splits with pre-allocated nodes, as an immediate-mode driver does; the data of
    /// a mapping is a number that its pieces keep.
    struct TestVm;

    /// VA nodes for the steps of one request.
    struct Nodes(KVec<GpuVaAlloc<TestVm>>);

    impl Nodes {
        fn new(n: usize) -> Result<Self> {
            let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
            for _ in 0..n {
                v.push(GpuVaAlloc::new(GFP_KERNEL)?, GFP_KERNEL)?;
            }
            Ok(Self(v))
        }

        fn take(&mut self) -> Result<GpuVaAlloc<TestVm>> {
            self.0.pop().ok_or(ENOMEM)
        }
    }

    /// The data a map step gives its new mapping: that of the mapping the last remap split,
    /// for a madvise list, else `data`.
    struct Ctx {
        nodes: Nodes,
        data: u32,
        split: Option<u32>,
    }

    impl DriverGpuVm for TestVm {
        type Driver = KunitDriver;
        type Object = Bo;
        type VaData = u32;
        type VmBoData = ();
        type SmContext<'ctx> = Ctx;

        fn sm_step_map<'op, 'ctx>(
            &mut self,
            op: OpMap<'op, Self>,
            ctx: &mut Ctx,
        ) -> Result<OpMapped<'op, Self>, Error> {
            let va = ctx.nodes.take()?;
            let data = ctx.split.take().unwrap_or(ctx.data);
            Ok(op.insert(va, data))
        }

        fn sm_step_unmap<'op, 'ctx>(
            &mut self,
            op: OpUnmap<'op, Self>,
            _ctx: &mut Ctx,
        ) -> Result<OpUnmapped<'op, Self>, Error> {
            Ok(op.remove().0)
        }

        fn sm_step_remap<'op, 'ctx>(
            &mut self,
            op: OpRemap<'op, Self>,
            ctx: &mut Ctx,
        ) -> Result<OpRemapped<'op, Self>, Error> {
            let pair = [ctx.nodes.take()?, ctx.nodes.take()?];
            let data = *op.va_to_unmap().data();
            // A madvise list's map step is the inside part of this mapping.
            if ctx.data == MADVISE {
                ctx.split = Some(data);
            }
            let (done, ret) = op.remap(pair, data, data);
            // A remap that keeps one side gives a node back: there is room for it.
            if let Some(unused) = ret.unused_va {
                let _ = ctx.nodes.0.push_within_capacity(unused);
            }
            Ok(done)
        }
    }

    /// What a mapping looks like from the tree: range, offset, whether it has an object,
    /// flags and data.
    type Seen = (u64, u64, u64, bool, u32, u32);

    fn seen(vm: &UniqueRefGpuVm<TestVm>) -> Result<KVec<Seen>> {
        let mut out = KVec::new();
        let mut res = Ok(());
        vm.for_each_va(0..u64::MAX, |va| {
            let s = (
                va.addr(),
                va.addr() + va.length(),
                va.gem_offset(),
                va.obj().is_some() && va.vm_bo().is_some(),
                va.flags().bits(),
                *va.data(),
            );
            if res.is_ok() {
                res = out.push(s, GFP_KERNEL).map_err(Error::from);
            }
        });
        res.map(|()| out)
    }

    /// The `data` of a context that applies a madvise list.
    const MADVISE: u32 = u32::MAX;

    fn ctx(nodes: usize, data: u32) -> Result<Ctx> {
        Ok(Ctx {
            nodes: Nodes::new(nodes)?,
            data,
            split: None,
        })
    }

    /// Empties the tree, as a driver must before it drops its VM.
    fn unmap_all(vm: &mut UniqueRefGpuVm<TestVm>) -> Result {
        vm.sm_unmap(0, 1 << 32, &mut ctx(0, 0)?)
    }

    #[test]
    fn gemless_pieces_keep_flags_offset_and_data() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-gpuvm-gemless")?;
        let root = new_bo(&drm, None)?;
        let mut vm = GpuVm::new::<Error, _>(c"gemless", &drm, &*root, 0..1 << 32, 0..0, TestVm)?;
        let flags = VaFlags::SPARSE | VaFlags::user(3);
        vm.sm_map(OpMapRequest {
            addr: 0x10000,
            range: 0x10000,
            gem_offset: 0x7000_0000,
            vm_bo: None,
            flags,
            context: &mut ctx(1, 7)?,
        })?;
        let f = flags.bits();
        assert_eq!(
            &seen(&vm)?[..],
            &[(0x10000, 0x20000, 0x7000_0000, false, f, 7)]
        );

        // A hole in the middle: the pieces keep the flags and data, and the offset follows the
        // address.
        vm.sm_unmap(0x14000, 0x4000, &mut ctx(2, 0)?)?;
        assert_eq!(
            &seen(&vm)?[..],
            &[
                (0x10000, 0x14000, 0x7000_0000, false, f, 7),
                (0x18000, 0x20000, 0x7000_8000, false, f, 7),
            ]
        );
        assert!(vm.find_va(0x15000).is_none());
        assert_eq!(vm.find_va(0x18000).map(|va| va.addr()), Some(0x18000));
        assert_eq!(vm.find_va(0x1ffff).map(|va| va.addr()), Some(0x18000));

        // The data can change in place; nothing else does.
        vm.for_each_va_mut(0x18000..0x18001, |va| *va.data_mut() = 9);
        assert_eq!(
            &seen(&vm)?[..],
            &[
                (0x10000, 0x14000, 0x7000_0000, false, f, 7),
                (0x18000, 0x20000, 0x7000_8000, false, f, 9),
            ]
        );

        // An empty request is refused, and changes nothing.
        let empty = vm.sm_map(OpMapRequest {
            addr: 0x30000,
            range: 0,
            gem_offset: 0,
            vm_bo: None,
            flags: VaFlags::NONE,
            context: &mut ctx(1, 1)?,
        });
        assert_eq!(empty, Err(EINVAL));
        assert_eq!(seen(&vm)?.len(), 2);

        unmap_all(&mut vm)?;
        assert!(seen(&vm)?.is_empty());
        Ok(())
    }

    #[test]
    fn gemless_and_object_mappings_split_each_other() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-gpuvm-mixed")?;
        let root = new_bo(&drm, None)?;
        let bo = new_bo(&drm, Some(&root))?;
        let mut vm = GpuVm::new::<Error, _>(c"mixed", &drm, &*root, 0..1 << 32, 0..0, TestVm)?;
        let vm_bo = vm.obtain(&*bo, ())?;
        vm.sm_map(OpMapRequest {
            addr: 0x100000,
            range: 0x4000,
            gem_offset: 0,
            vm_bo: Some(&vm_bo),
            flags: VaFlags::NONE,
            context: &mut ctx(1, 1)?,
        })?;
        // A GEM-less mapping over the middle of the object's splits it; the object's pieces
        // stay linked to it.
        let mirror = VaFlags::user(0);
        vm.sm_map(OpMapRequest {
            addr: 0x101000,
            range: 0x2000,
            gem_offset: 0,
            vm_bo: None,
            flags: mirror,
            context: &mut ctx(3, 2)?,
        })?;
        let m = mirror.bits();
        assert_eq!(
            &seen(&vm)?[..],
            &[
                (0x100000, 0x101000, 0, true, 0, 1),
                (0x101000, 0x103000, 0, false, m, 2),
                (0x103000, 0x104000, 0x3000, true, 0, 1),
            ]
        );
        let obj_of = |addr| {
            vm.find_va(addr)
                .and_then(|va| va.obj())
                .is_some_and(|o| core::ptr::eq(o, &*bo))
        };
        assert!(obj_of(0x100000) && obj_of(0x103fff) && !obj_of(0x101000));

        // The object's mapping back over the GEM-less one, which goes.
        vm.sm_map(OpMapRequest {
            addr: 0x101000,
            range: 0x2000,
            gem_offset: 0x1000,
            vm_bo: Some(&vm_bo),
            flags: VaFlags::NONE,
            context: &mut ctx(3, 3)?,
        })?;
        assert_eq!(
            &seen(&vm)?[..],
            &[
                (0x100000, 0x101000, 0, true, 0, 1),
                (0x101000, 0x103000, 0x1000, true, 0, 3),
                (0x103000, 0x104000, 0x3000, true, 0, 1),
            ]
        );

        unmap_all(&mut vm)?;
        drop(vm_bo);
        vm.deferred_cleanup();
        Ok(())
    }

    #[test]
    fn madvise_splits_gemless_mappings_at_the_ends_only() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-gpuvm-madvise")?;
        let root = new_bo(&drm, None)?;
        let bo = new_bo(&drm, Some(&root))?;
        let mut vm = GpuVm::new::<Error, _>(c"madvise", &drm, &*root, 0..1 << 32, 0..0, TestVm)?;
        let vm_bo = vm.obtain(&*bo, ())?;
        let f = VaFlags::user(1);
        for (addr, data) in [(0x10000, 1), (0x20000, 2)] {
            vm.sm_map(OpMapRequest {
                addr,
                range: 0x10000,
                gem_offset: 0x7000_0000 + addr,
                vm_bo: None,
                flags: f,
                context: &mut ctx(1, data)?,
            })?;
        }
        vm.sm_map(OpMapRequest {
            addr: 0x40000,
            range: 0x10000,
            gem_offset: 0,
            vm_bo: Some(&vm_bo),
            flags: VaFlags::NONE,
            context: &mut ctx(1, 9)?,
        })?;

        // Inside one mapping: nothing to split. Over an object's mapping: not split either.
        assert!(vm.madvise_ops(0x10000..0x20000)?.is_empty());
        assert!(vm.madvise_ops(0x44000..0x48000)?.is_empty());
        assert_eq!(vm.madvise_ops(0x1000..0x1000).map(|_| ()), Err(EINVAL));

        // Across both GEM-less mappings: a remap and a map at each end; the inside parts keep
        // their mapping's flags, data and offset.
        let ops = vm.madvise_ops(0x18000..0x28000)?;
        assert_eq!(ops.vas_needed(), 4);
        ops.apply(&mut ctx(4, MADVISE)?)?;
        let b = f.bits();
        assert_eq!(
            &seen(&vm)?[..],
            &[
                (0x10000, 0x18000, 0x7001_0000, false, b, 1),
                (0x18000, 0x20000, 0x7001_8000, false, b, 1),
                (0x20000, 0x28000, 0x7002_0000, false, b, 2),
                (0x28000, 0x30000, 0x7002_8000, false, b, 2),
                (0x40000, 0x50000, 0, true, 0, 9),
            ]
        );

        // Inside one mapping: a remap with both sides, then the middle.
        let ops = vm.madvise_ops(0x12000..0x14000)?;
        assert_eq!(ops.vas_needed(), 3);
        ops.apply(&mut ctx(3, MADVISE)?)?;
        assert_eq!(
            &seen(&vm)?[..3],
            &[
                (0x10000, 0x12000, 0x7001_0000, false, b, 1),
                (0x12000, 0x14000, 0x7001_2000, false, b, 1),
                (0x14000, 0x18000, 0x7001_4000, false, b, 1),
            ]
        );
        assert_eq!(seen(&vm)?.len(), 7);

        unmap_all(&mut vm)?;
        drop(vm_bo);
        vm.deferred_cleanup();
        Ok(())
    }
}
