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
    /// The PAT index of the bind: the default.
    pub(crate) default_pat: u16,
    /// Whether the attributes go back to their defaults when the CPU unmaps the memory
    /// (VM_BIND's MADVISE_AUTORESET).
    pub(crate) autoreset: bool,
}

impl Attrs {
    /// The attributes of a new mirror bound with `pat`.
    pub(crate) fn new(pat: u16, autoreset: bool) -> Self {
        Self {
            pat,
            default_pat: pat,
            autoreset,
        }
    }

    /// The io-pgtable protection of the pages a fault maps: readable and executable (a job
    /// may run commands from `malloc`ed memory), writable unless the CPU mapping is not, and
    /// cacheable (the attribute that allows atomics on system memory) for write-back PAT.
    pub(crate) fn prot(&self, writable: bool) -> u32 {
        let mut p = prot::READ;
        if writable {
            p |= prot::WRITE;
        }
        if u32::from(self.pat) == uapi::drm_mirage_pat_DRM_MIRAGE_PAT_WB {
            p |= prot::CACHE;
        }
        p
    }
}
