// SPDX-License-Identifier: GPL-2.0 or MIT

//! What the VM keeps with each mapping, and the memory attributes of CPU-address mirrors.

use kernel::{drm::gpuvm::VaFlags, iommu::pgtable::prot, uapi};

/// The flag of a CPU-address-mirror mapping (GEM-less; its pages come on GPU fault).
pub(crate) const MIRROR: VaFlags = VaFlags::user(0);

/// The data of each mapping of the VA tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VaInfo {
    /// The userptr the mapping maps, by id.
    pub(crate) userptr: Option<u32>,
    /// A CPU-address mirror's memory attributes.
    pub(crate) mirror: Option<Attrs>,
}

/// The memory attributes of a CPU-address mirror (xe's `xe_vma_mem_attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// The PAT index pages are mapped with.
    pub(crate) pat: u16,
    /// The atomic access policy (`DRM_MIRAGE_ATOMIC_*`).
    pub(crate) atomic: u32,
    /// The preferred location (`DRM_MIRAGE_PREFERRED_LOC_*`), stored and reported only.
    pub(crate) devmem_fd: u32,
    /// The migration policy (`DRM_MIRAGE_MIGRATE_*`), stored and reported only.
    pub(crate) migration: u16,
    /// The PAT index of the bind: the default.
    pub(crate) default_pat: u16,
    /// Whether the attributes go back to their defaults when the CPU unmaps the memory
    /// (VM_BIND's MADVISE_AUTORESET).
    pub(crate) autoreset: bool,
}

/// One MADVISE: an attribute and its new value, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Advice {
    PreferredLoc { devmem_fd: u32, migration: u16 },
    Atomic(u32),
    Pat(u16),
}

impl Attrs {
    /// The attributes of a new mirror bound with `pat`.
    pub(crate) fn new(pat: u16, autoreset: bool) -> Self {
        Self {
            pat,
            atomic: uapi::DRM_MIRAGE_ATOMIC_UNDEFINED,
            devmem_fd: uapi::DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE,
            migration: uapi::DRM_MIRAGE_MIGRATE_ALL_PAGES as u16,
            default_pat: pat,
            autoreset,
        }
    }

    /// These attributes as the mirror's bind left them.
    pub(crate) fn defaults(&self) -> Self {
        Self::new(self.default_pat, self.autoreset)
    }

    /// Whether the attributes are the mirror's defaults.
    pub(crate) fn is_default(&self) -> bool {
        *self == self.defaults()
    }

    /// The attributes with `advice` applied.
    pub(crate) fn advised(&self, advice: Advice) -> Self {
        let mut a = *self;
        match advice {
            Advice::PreferredLoc {
                devmem_fd,
                migration,
            } => {
                a.devmem_fd = devmem_fd;
                a.migration = migration;
            }
            Advice::Atomic(v) => a.atomic = v,
            Advice::Pat(p) => a.pat = p,
        }
        a
    }

    /// The io-pgtable protection of the pages a fault maps: readable and executable (a job
    /// may run commands from `malloc`ed memory), writable unless the CPU mapping is not.
    /// Cacheable, the attribute that lets GPU atomics reach system memory, as the atomic
    /// policy says, or where it says nothing, as the PAT says.
    pub(crate) fn prot(&self, writable: bool) -> u32 {
        let mut p = prot::READ;
        if writable {
            p |= prot::WRITE;
        }
        let cached = match self.atomic {
            uapi::DRM_MIRAGE_ATOMIC_DEVICE | uapi::DRM_MIRAGE_ATOMIC_GLOBAL => true,
            uapi::DRM_MIRAGE_ATOMIC_CPU => false,
            _ => u32::from(self.pat) == uapi::drm_mirage_pat_DRM_MIRAGE_PAT_WB,
        };
        if cached {
            p |= prot::CACHE;
        }
        p
    }
}
