// SPDX-License-Identifier: GPL-2.0 or MIT

//! A VM's page table: io-pgtable's `ARM_64_LPAE_S1`, with tables from the VM's pool.

use kernel::{
    iommu::pgtable::{self, prot, IoPageTable, ARM64LPAES1},
    prelude::*,
    sync::{Arc, Mutex},
};

use super::{
    pool::PtPool,
    walker::{level_shift, Entry, PtOps, SZ_1G, SZ_2M, SZ_4K},
};

/// Output-address bits of a descriptor (47:12).
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Leaf bits io-pgtable-arm sets from the protection (`arm_lpae_prot_to_pte`).
const PTE_AP_RDONLY: u64 = 1 << 7;
const PTE_UXN: u64 = 1 << 54;
const PTE_ATTRINDX: u64 = 0b111 << 2;
const ATTR_IDX_CACHE: u64 = 1 << 2;

/// Decodes the descriptor `pte` found at `level` (0 to 3).
pub(crate) fn decode(pte: u64, level: usize) -> Entry {
    match (pte & 0b11, level) {
        (0b11, 0..=2) => Entry::Table,
        (0b11, 3) | (0b01, 1..=2) => {
            let mut p = prot::READ;
            if pte & PTE_AP_RDONLY == 0 {
                p |= prot::WRITE;
            }
            if pte & PTE_UXN != 0 {
                p |= prot::NOEXEC;
            }
            if pte & PTE_ATTRINDX == ATTR_IDX_CACHE {
                p |= prot::CACHE;
            }
            Entry::Leaf {
                pa: pte & OA_MASK & !((1u64 << level_shift(level)) - 1),
                prot: p,
            }
        }
        _ => Entry::Empty,
    }
}

/// A page table whose tables come from a [`PtPool`].
///
/// The page table keeps its pool alive; the pool outlives its last table.
pub(crate) struct PageTable {
    pt: IoPageTable<'static, ARM64LPAES1>,
    pgsizes: u64,
}

impl PageTable {
    /// Creates an empty page table for `va_bits` of VA with the page sizes of `pgsizes` (a
    /// mask of 4 KiB, 2 MiB and 1 GiB; 4 KiB is required).
    ///
    /// Its first table comes from `pool`, which must hold one reserved table.
    pub(crate) fn new(pool: Arc<PtPool>, va_bits: u32, pgsizes: u64) -> Result<Self> {
        let pgsizes = pgsizes & (SZ_4K | SZ_2M | SZ_1G);
        if pgsizes & SZ_4K == 0 || !(32..=48).contains(&va_bits) {
            return Err(EINVAL);
        }
        let config = pgtable::Config {
            quirks: 0,
            pgsize_bitmap: pgsizes as usize,
            ias: va_bits,
            // The device's output addresses are 48 bits; io-pgtable wants one of its sizes.
            oas: 48,
            // The device reads tables through the CPU's coherent view of memory.
            coherent_walk: true,
        };
        let pt = IoPageTable::new_with_allocator(config, pool)?;
        Ok(Self { pt, pgsizes })
    }

    /// The page sizes this table maps with.
    pub(crate) fn pgsizes(&self) -> u64 {
        self.pgsizes
    }

    /// The level-0 table's bus address, for the device's TRANSTAB.
    ///
    /// # Safety
    ///
    /// The device must stop using the page table before it is dropped.
    pub(crate) unsafe fn ttbr(&self) -> u64 {
        // SAFETY: Forwarded to the caller.
        unsafe { self.pt.ttbr() }
    }

    /// The memory attributes (MAIR) to program with [`PageTable::ttbr`].
    pub(crate) fn mair(&self) -> u64 {
        self.pt.mair()
    }

    /// The descriptors a walk for `va` reads, by level.
    pub(crate) fn walk(&self, va: u64) -> [u64; 4] {
        self.pt.walk(va as usize)
    }

    /// Where `va` translates to, if it is mapped.
    pub(crate) fn iova_to_phys(&self, va: u64) -> Option<u64> {
        self.pt.iova_to_phys(va as usize)
    }
}

/// Read access to a page table, for the budget's dry run.
pub(crate) trait PtRead {
    /// The descriptors a walk for `va` reads, by level.
    fn walk(&self, va: u64) -> [u64; 4];
}

impl PtRead for PageTable {
    fn walk(&self, va: u64) -> [u64; 4] {
        PageTable::walk(self, va)
    }
}

/// Takes the page-table lock for each walk only.
impl PtRead for Mutex<PageTable> {
    fn walk(&self, va: u64) -> [u64; 4] {
        self.lock().walk(va)
    }
}

impl PtOps for PageTable {
    fn entries(&self, va: u64) -> [Entry; 4] {
        let ptes = self.walk(va);
        let mut entries = [Entry::Empty; 4];
        for (level, (e, &pte)) in entries.iter_mut().zip(ptes.iter()).enumerate() {
            *e = decode(pte, level);
            if *e != Entry::Table {
                break;
            }
        }
        entries
    }

    unsafe fn map(&mut self, va: u64, pa: u64, size: u64, count: u64, prot: u32) -> Result {
        let (mut va, mut pa, mut count) = (va, pa, count);
        while count > 0 {
            // SAFETY: `&mut self` excludes other operations on the page table; no leaf maps
            // the range (the caller's promise), and the caller keeps `pa` alive for the device.
            // The pool ignores the flags: tables come from its reservation.
            let (mapped, res) = unsafe {
                self.pt.map_pages(
                    va as usize,
                    pa,
                    size as usize,
                    count as usize,
                    prot,
                    GFP_NOWAIT,
                )
            };
            res?;
            let n = mapped as u64 / size;
            if n == 0 {
                return Err(EINVAL);
            }
            va += n * size;
            pa += n * size;
            count -= n;
        }
        Ok(())
    }

    fn unmap(&mut self, va: u64, size: u64) -> Result {
        // SAFETY: `&mut self` excludes other operations on the page table, and the caller
        // promises a valid entry of `size` bytes at `va`.
        let unmapped = unsafe { self.pt.unmap_pages(va as usize, size as usize, 1) };
        if unmapped as u64 != size {
            kernel::warn_on!(true);
            return Err(EINVAL);
        }
        Ok(())
    }
}
