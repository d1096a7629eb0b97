// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Locking a GPUVM's reservation objects in a [`drm::exec`] transaction.
//!
//! A VM has one reservation object shared by its private objects (that of its root object), and
//! every external object has its own. A job on the VM locks all of them, then adds its fence to
//! all of them. The locking rules are those of [`drm::exec`].

use super::*;
use crate::{
    dma_buf::{fence::Fence, resv::Usage},
    drm::exec::{Exec, Locker},
    ffi::c_int,
};

impl<T: DriverGpuVm> GpuVm<T> {
    /// Locks the VM's own reservation object (shared by its private objects) and makes sure
    /// `num_fences` fence slots are free in it. Fails like
    /// [`Locker::prepare_obj`](drm::exec::Locker::prepare_obj).
    pub fn prepare_vm(&self, locker: &mut Locker<'_>, num_fences: u32) -> Result {
        let vm = self.as_raw();
        // SAFETY: The VM is alive, and the locker's context is in a round of its transaction.
        locker.run(|exec| unsafe { bindings::drm_gpuvm_prepare_vm(vm, exec, num_fences) })?;
        locker.record(self.raw_resv(), num_fences)
    }

    /// Locks the reservation objects of the VM's external objects and makes sure `num_fences`
    /// fence slots are free in each.
    ///
    /// The list of external objects is protected by the VM's reservation object: call
    /// [`GpuVm::prepare_vm`] first in the same round, or this fails with `EINVAL`. An external
    /// object the round locked before this call keeps only the slots it reserved then, as far as
    /// [`Exec::add_fence`] knows: prepare it again if it needs more.
    pub fn prepare_objects(&self, locker: &mut Locker<'_>, num_fences: u32) -> Result {
        let vm = self.as_raw();
        let vm_locked = locker.holds(self.raw_resv());
        let before = locker.num_locked();
        locker.run(|exec| {
            if !vm_locked {
                return EINVAL.to_errno() as c_int;
            }
            // SAFETY: The VM is alive and its reservation object, which protects the list of
            // external objects, is held by this round of the transaction.
            unsafe { bindings::drm_gpuvm_prepare_objects(vm, exec, num_fences) }
        })?;
        locker.record_locked_since(before, num_fences)
    }

    /// Adds `fence` to every object `exec` holds: with `private_usage` to those that share the
    /// VM's reservation object, with `extobj_usage` to the others.
    ///
    /// Every object the transaction locked (by any means) needs a free reserved slot: if one
    /// has none, this fails with `ENOSPC` and adds nothing. Fails with `EINVAL` if `exec` holds
    /// no locks. Never allocates nor sleeps.
    pub fn resv_add_fence(
        &self,
        exec: &Exec,
        fence: &Fence,
        private_usage: Usage,
        extobj_usage: Usage,
    ) -> Result {
        let vm = self.as_raw();
        exec.add_fence_to_all_locked(|exec| {
            // SAFETY: The VM is alive, `exec` holds its objects with a free slot in each, and
            // each reservation object takes its own reference to the fence.
            unsafe {
                bindings::drm_gpuvm_resv_add_fence(
                    vm,
                    exec,
                    fence.as_raw(),
                    private_usage as u32,
                    extobj_usage as u32,
                )
            }
        })
    }
}

#[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
#[macros::kunit_tests(rust_drm_gpuvm_exec)]
mod tests {
    use super::*;
    use crate::{
        dma_buf::fence::{FenceContext, FenceOps},
        drm::exec::{kunit_gem::*, Flag, Flags},
    };

    struct TestOps;

    impl FenceOps for TestOps {
        const DRIVER_NAME: &'static CStr = c"rust_drm_gpuvm_exec_test";
    }

    struct TestVm;

    impl DriverGpuVm for TestVm {
        type Driver = KunitDriver;
        type Object = Bo;
        type VaData = ();
        type VmBoData = ();
        type SmContext<'ctx> = ();

        fn sm_step_map<'op, 'ctx>(
            &mut self,
            _op: OpMap<'op, Self>,
            _context: &mut (),
        ) -> Result<OpMapped<'op, Self>, Error> {
            Err(EINVAL)
        }

        fn sm_step_unmap<'op, 'ctx>(
            &mut self,
            _op: OpUnmap<'op, Self>,
            _context: &mut (),
        ) -> Result<OpUnmapped<'op, Self>, Error> {
            Err(EINVAL)
        }

        fn sm_step_remap<'op, 'ctx>(
            &mut self,
            _op: OpRemap<'op, Self>,
            _context: &mut (),
        ) -> Result<OpRemapped<'op, Self>, Error> {
            Err(EINVAL)
        }
    }

    fn new_exec(flags: Flags) -> Result<Pin<KBox<Exec>>> {
        KBox::pin_init(Exec::new(flags, 0), GFP_KERNEL)
    }

    #[test]
    fn a_job_fence_reaches_the_vm_and_its_external_objects() -> Result {
        let (_faux, drm) = drm_dev(c"kunit-gpuvm-exec")?;
        let root = new_bo(&drm, None)?;
        let private = new_bo(&drm, Some(&root))?;
        let ext = new_bo(&drm, None)?;
        let other = new_bo(&drm, None)?;
        let vm = GpuVm::new::<Error, _>(c"exec-test", &drm, &*root, 0..1 << 32, 0..0, TestVm)?;
        let vm_bo = vm.obtain(&*ext, ())?;
        let private_bo = vm.obtain(&*private, ())?;
        assert!(vm.is_extobj(&*ext) && !vm.is_extobj(&*private));
        let ctx = FenceContext::<TestOps, ()>::new(c"gpuvm-exec-test");
        let (producer, fence) = ctx.publish(ctx.prepare((), GFP_KERNEL)?);
        let mut exec = new_exec(Flag::IgnoreDuplicates.into())?;

        // The list of external objects needs the VM's lock.
        assert_eq!(
            exec.as_mut().lock_all(|l| vm.prepare_objects(l, 1)),
            Err(EINVAL)
        );
        assert!(!is_locked(&ext));
        assert_eq!(
            vm.resv_add_fence(&exec, &fence, Usage::Bookkeep, Usage::Write),
            Err(EINVAL)
        );

        // An object locked without a slot stops the whole addition.
        exec.as_mut().lock_all(|l| {
            vm.prepare_vm(l, 1)?;
            vm.prepare_objects(l, 1)?;
            l.lock_obj(&*other)
        })?;
        assert!(is_locked(&root) && is_locked(&ext) && is_locked(&other));
        assert_eq!(
            vm.resv_add_fence(&exec, &fence, Usage::Bookkeep, Usage::Write),
            Err(ENOSPC)
        );
        assert!(resv(&root).test_signaled(Usage::Bookkeep));
        assert!(resv(&ext).test_signaled(Usage::Bookkeep));
        drop(exec);

        let mut exec = new_exec(Flag::IgnoreDuplicates.into())?;
        exec.as_mut().lock_all(|l| {
            vm.prepare_vm(l, 1)?;
            vm.prepare_objects(l, 1)
        })?;
        assert!(is_locked(&root) && is_locked(&ext) && !is_locked(&other));
        vm.resv_add_fence(&exec, &fence, Usage::Bookkeep, Usage::Write)?;
        // Each object got one fence, and had one slot.
        assert_eq!(
            vm.resv_add_fence(&exec, &fence, Usage::Bookkeep, Usage::Write),
            Err(ENOSPC)
        );
        assert_eq!(exec.add_fence(&*private, &fence, Usage::Read), Err(ENOSPC));
        drop(exec);
        assert!(!is_locked(&root) && !is_locked(&ext));
        // Private objects see the fence as bookkeeping, external ones as a write.
        assert!(resv(&private).test_signaled(Usage::Read));
        assert!(!resv(&private).test_signaled(Usage::Bookkeep));
        assert!(!resv(&ext).test_signaled(Usage::Write));
        producer.signal(Ok(()));
        assert!(resv(&ext).test_signaled(Usage::Bookkeep));
        assert!(resv(&root).test_signaled(Usage::Bookkeep));

        drop((vm_bo, private_bo));
        vm.deferred_cleanup();
        Ok(())
    }
}
