// SPDX-License-Identifier: GPL-2.0 or MIT

//! PCI probe, the interrupt self-test, and DRM registration.

use kernel::{
    debugfs,
    device::{Bound, Core, DeviceContext},
    dma::{Device as _, DmaMask},
    drm::{self, ioctl},
    io::Io,
    irq, pci,
    prelude::*,
    sync::Arc,
    time::Delta,
    types::ScopeGuard,
    uapi,
};

use crate::{
    file::MirageFile,
    gem::Bo,
    gpu::{Gpu, Ping},
    irq::{self as mirage_irq, Bar0, IrqHandler, Vectors},
    params::DeviceInfo,
    regs, reset, selftest,
};

/// PCI device ID of the mirage GPU. It sits in Red Hat's QEMU vendor space, where QEMU has not
/// allocated it; it names only this virtual device.
const MIRAGE_DEVICE_ID: u32 = 0x4d47;

pub(crate) struct MirageDriver;

/// Data of the DRM device: immutable once probed.
pub(crate) struct MirageData {
    pub(crate) info: DeviceInfo,
    /// The device's queues and address spaces.
    pub(crate) gpu: Arc<Gpu>,
    /// How long a job may run (the `job_timeout_ms` parameter).
    pub(crate) job_timeout: Delta,
}

pub(crate) type MirageDevice<Ctx = drm::Normal> = drm::Device<MirageDriver, Ctx>;

/// Hardware resources, alive while the DRM device is registered.
#[pin_data]
pub(crate) struct MirageRegData<'bound> {
    /// `ping_ns`, whose reads ring the device: gone before the interrupt handler.
    _ping: Pin<KBox<debugfs::File<Ping>>>,
    // Declared before `_vectors`: it is made from them and must be freed first.
    _irq: Pin<KBox<irq::ThreadedRegistration<'bound, IrqHandler>>>,
    _vectors: Vectors<'bound>,
}

/// Data of the bound PCI device.
pub(crate) struct MiragePci<'bound> {
    _reg: drm::Registration<'bound, MirageDriver>,
    gpu: Arc<Gpu>,
}

kernel::pci_device_table!(
    PCI_TABLE,
    <MirageDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT, MIRAGE_DEVICE_ID),
        ()
    )]
);

/// Checks that BAR0 is a mirage GPU this driver speaks, and reads what it reports.
fn identify(pdev: &pci::Device<Bound>, bar: &Bar0<'_>) -> Result<DeviceInfo> {
    let id = bar.read(regs::ID).value().get();
    if id != regs::ID_MAGIC {
        dev_err!(
            pdev,
            "ID register reads {:#010x}, expected {:#010x}: not a mirage GPU\n",
            id,
            regs::ID_MAGIC
        );
        return Err(ENODEV);
    }
    let version = bar.read(regs::VERSION);
    let features = bar.read(regs::FEATURES);
    if version.major().get() != regs::VERSION_MAJOR {
        dev_err!(
            pdev,
            "hardware version {}.{} is not supported (need major {})\n",
            version.major().get(),
            version.minor().get(),
            regs::VERSION_MAJOR
        );
        return Err(ENODEV);
    }
    if !(features.ping() && features.dma_fill() && features.mmu() && features.queues()) {
        dev_err!(
            pdev,
            "FEATURES reads {:#x}: the driver needs ping, DMA fill, MMU and queues\n",
            features.into_raw()
        );
        return Err(ENODEV);
    }
    Ok(DeviceInfo {
        device_id: (u32::from(pdev.vendor_id().as_raw()) << 16) | u32::from(pdev.device_id()),
        hw_version: version.into_raw(),
        features: user_features(features),
        vram_size: u64::from(bar.read(regs::VRAM_SIZE_LO).value().get())
            | (u64::from(bar.read(regs::VRAM_SIZE_HI).value().get()) << 32),
        va_bits: bar.read(regs::VA_BITS).value().get(),
        pgsize_bitmap: bar.read(regs::PGSIZE_BITMAP).value().get(),
    })
}

/// The uAPI's `DRM_MIRAGE_FEATURE_*` mask for the device's `FEATURES`.
fn user_features(hw: regs::FEATURES) -> u32 {
    [
        (hw.vram(), uapi::drm_mirage_feature_DRM_MIRAGE_FEATURE_VRAM),
        (
            hw.stall(),
            uapi::drm_mirage_feature_DRM_MIRAGE_FEATURE_PAGE_FAULTS,
        ),
        (
            hw.atomics(),
            uapi::drm_mirage_feature_DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS,
        ),
    ]
    .into_iter()
    .filter(|&(has, _)| has)
    .fold(0, |mask, (_, bit)| mask | bit)
}

impl pci::Driver for MirageDriver {
    type IdInfo = ();
    type Data<'bound> = MiragePci<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pdev.enable_device_mem()?;

        let bar = pdev
            .iomap_region_sized::<{ regs::BAR0_MAPPED }>(0, c"mirage")?
            .into_devres()?;
        let info = {
            let b = bar.access(pdev.as_ref())?;
            let info = identify(pdev, b)?;
            // The device may be in any state: a previous driver instance may have left queues
            // running, or crashed. Bus mastering lets it DMA, so quiesce it first.
            reset::quiesce(b).inspect_err(|e| {
                dev_err!(pdev, "the device did not finish a soft reset: {:?}\n", e)
            })?;
            info
        };
        pdev.set_master();

        // SAFETY: Nothing else maps or allocates DMA memory for this device during probe.
        unsafe { pdev.dma_set_mask_and_coherent(DmaMask::try_new(regs::DMA_BITS)?)? };
        // The GPU's page tables map any length of contiguous memory: BOs are DMA-mapped in
        // segments as long as the pages allow.
        // SAFETY: As above, nothing is DMA-mapped for this device yet.
        unsafe { pdev.dma_set_max_seg_size(u32::MAX) };

        // The device is quiet and has been given no memory yet.
        let gpu = Arc::pin_init(Gpu::new(pdev, bar)?, GFP_KERNEL)?;
        let bar = gpu.bar(pdev.as_ref())?;
        // From here on the device may DMA into memory this function frees on failure.
        let quiesce_on_error = ScopeGuard::new(|| {
            if reset::quiesce(bar).is_err() {
                dev_err!(pdev, "cannot quiesce the device after a failed probe\n");
            }
            gpu.stop_faults();
        });

        let vectors = Vectors::alloc_msix(pdev, 1, 1)
            .inspect_err(|e| dev_err!(pdev, "cannot allocate an MSI-X vector: {:?}\n", e))?;
        // SAFETY: `irq` ends up in `MirageRegData` ahead of `vectors`, or is dropped before them
        // on the error paths below (locals drop in reverse order).
        let request = unsafe { vectors.request(0)? };
        let irq = KBox::pin_init(
            // SAFETY: The registration is owned by a `Pin<KBox>` that is never leaked.
            unsafe {
                irq::ThreadedRegistration::new(
                    request,
                    irq::Flags::TRIGGER_NONE,
                    c"mirage",
                    Ok::<_, Error>(IrqHandler::new(gpu.clone())),
                )
            },
            GFP_KERNEL,
        )?;
        gpu.start_faults(bar);
        bar.write_reg(mirage_irq::handled_sources());
        selftest::ping(pdev, bar, irq.handler())?;
        selftest::dma_fill(pdev, bar, irq.handler())?;
        selftest::mmu_job(pdev, bar, irq.handler())?;
        // The MMU self-test rang queue 0 once.
        gpu.set_tail(0, 1);

        let drm = drm::UnregisteredDevice::<MirageDriver>::new(
            pdev,
            Ok(MirageData {
                info,
                gpu: gpu.clone(),
                job_timeout: Delta::from_millis(i64::from(
                    crate::module_parameters::job_timeout_ms.value(),
                )),
            }),
        )?;
        // debugfs files are best effort: one that cannot be made is empty, not an error.
        let ping = KBox::pin_init(
            gpu.debugfs().read_only_file(c"ping_ns", Ping(gpu.clone())),
            GFP_KERNEL,
        )?;
        let reg_data = try_pin_init!(MirageRegData {
            _ping: ping,
            _irq: irq,
            _vectors: vectors,
        }? Error);
        // SAFETY: The registration is stored in `MiragePci` and dropped at unbind.
        let reg = unsafe { drm::Registration::new(pdev.as_ref(), drm, reg_data, 0)? };
        quiesce_on_error.dismiss();

        dev_info!(
            pdev,
            "mirage GPU v{}.{}: {} MiB VRAM, {}-bit VA; self-tests passed (irq, dma, mmu job)\n",
            info.hw_version >> 16,
            info.hw_version & 0xffff,
            info.vram_size >> 20,
            info.va_bits
        );
        Ok(MiragePci { _reg: reg, gpu })
    }

    fn unbind<'bound>(pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Nothing may DMA into memory the driver frees next, nor interrupt once the handler is
        // gone, and the next probe should find a quiet device.
        match this.gpu.bar(pdev.as_ref()) {
            Ok(bar) => {
                if let Err(e) = reset::quiesce(bar) {
                    dev_err!(pdev, "cannot quiesce the device at unbind: {:?}\n", e);
                }
            }
            Err(e) => dev_err!(pdev, "no BAR at unbind: {:?}\n", e),
        }
        // The device posts no more faults; the fault work runs driver code, which may go next.
        this.gpu.stop_faults();
        // The PCI core leaves bus mastering on after remove.
        pdev.clear_master();
    }
}

const INFO: drm::DriverInfo = drm::DriverInfo {
    major: 0,
    minor: 1,
    patchlevel: 0,
    name: c"mirage",
    desc: c"mirage virtual GPU",
};

#[vtable]
impl drm::Driver for MirageDriver {
    type Data = MirageData;
    type RegistrationData<'a> = MirageRegData<'a>;
    type File = MirageFile;
    type Object = Bo;
    type ParentDevice<Ctx: DeviceContext> = pci::Device<Ctx>;

    const INFO: drm::DriverInfo = INFO;
    const FEAT_RENDER: bool = true;
    // Binds and jobs take their in-fences from, and give their out-fences to, syncobjs.
    const FEAT_SYNCOBJ: bool = true;
    const FEAT_SYNCOBJ_TIMELINE: bool = true;

    kernel::declare_drm_ioctls! {
        (MIRAGE_GET_PARAM, drm_mirage_get_param, ioctl::RENDER_ALLOW, MirageFile::get_param),
        (MIRAGE_GEM_CREATE, drm_mirage_gem_create, ioctl::RENDER_ALLOW, MirageFile::gem_create),
        (MIRAGE_GEM_MMAP_OFFSET, drm_mirage_gem_mmap_offset, ioctl::RENDER_ALLOW,
            MirageFile::gem_mmap_offset),
        (MIRAGE_VM_CREATE, drm_mirage_vm_create, ioctl::RENDER_ALLOW, MirageFile::vm_create),
        (MIRAGE_VM_DESTROY, drm_mirage_vm_destroy, ioctl::RENDER_ALLOW, MirageFile::vm_destroy),
        (MIRAGE_VM_BIND, drm_mirage_vm_bind, ioctl::RENDER_ALLOW, MirageFile::vm_bind),
        (MIRAGE_EXEC_QUEUE_CREATE, drm_mirage_exec_queue_create, ioctl::RENDER_ALLOW,
            MirageFile::exec_queue_create),
        (MIRAGE_EXEC_QUEUE_DESTROY, drm_mirage_exec_queue_destroy, ioctl::RENDER_ALLOW,
            MirageFile::exec_queue_destroy),
        (MIRAGE_EXEC, drm_mirage_exec, ioctl::RENDER_ALLOW, MirageFile::exec),
        (MIRAGE_VM_GET_STATE, drm_mirage_vm_get_state, ioctl::RENDER_ALLOW,
            MirageFile::vm_get_state),
        (MIRAGE_MADVISE, drm_mirage_madvise, ioctl::RENDER_ALLOW, MirageFile::madvise),
        (MIRAGE_VM_QUERY_MEM_RANGE_ATTRS, drm_mirage_vm_query_mem_range_attr, ioctl::RENDER_ALLOW,
            MirageFile::vm_query_mem_range_attrs),
    }
}
