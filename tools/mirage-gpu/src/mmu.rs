//! The GPU MMU: ARM LPAE stage-1 walks (VMSAv8-64, 4 KiB granule, 48-bit
//! VA, 4 levels, 2 MiB and 1 GiB blocks), a per-address-space TLB that only
//! explicit invalidation clears, and the permission and atomics checks.
//!
//! The descriptor format is exactly what Linux's io-pgtable-arm builds for
//! `ARM_64_LPAE_S1`, so the driver can use it unchanged.

use crate::bus::{Bus, Target};
use std::collections::{HashMap, VecDeque};

/// Bits of virtual address.
pub const VA_BITS: u32 = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Atomic = 0,
    Execute = 1,
    Read = 2,
    Write = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Invalid or reserved descriptor, or translation disabled.
    Translation,
    /// Write or atomic to read-only, or fetch from no-exec memory.
    Permission,
    /// A table could not be read: its address is not backed.
    TableBus,
    /// The access flag of the leaf is clear.
    AccessFlag,
    /// Input address size: the VA is not below 2^48 (this includes
    /// sign-extended "upper half" addresses; there is one VA range).
    AddressSizeIn,
    /// Output address size: TRANSTAB, a table address or a leaf's output
    /// address has bits 51:48 (or, for TRANSTAB, any bit above 47) set.
    AddressSizeOut,
    /// An atomic to system memory whose attribute does not allow it.
    MemoryAttribute,
    /// The translated address is not backed (no RAM, past VRAM).
    DataBus,
}

impl FaultKind {
    /// Exception-type byte of FAULTSTATUS, before the level is added.
    pub fn code(self) -> u32 {
        match self {
            FaultKind::Translation => 0xc0,
            FaultKind::Permission => 0xc8,
            FaultKind::TableBus => 0xd0,
            FaultKind::AccessFlag => 0xd8,
            FaultKind::AddressSizeIn => 0xe0,
            FaultKind::MemoryAttribute => 0xe8,
            FaultKind::DataBus => 0xf0,
            // Mali's ADDRESS_SIZE_OUT sits where this device already has
            // MEMORY_ATTRIBUTE, so it takes the next free code.
            FaultKind::AddressSizeOut => 0xf8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub level: u8,
    pub va: u64,
    pub access: Access,
}

impl Fault {
    /// FAULTSTATUS: [7:0] code + level, [9:8] access type, [31:16] source.
    pub fn status(&self, source: u32) -> u32 {
        (self.kind.code() + u32::from(self.level)) | ((self.access as u32) << 8) | (source << 16)
    }
}

/// A leaf translation: what a TLB entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub va_base: u64,
    pub pa_base: u64,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    pub attr_idx: u8,
    pub read_only: bool,
    pub no_exec: bool,
    pub level: u8,
}

impl Translation {
    pub fn pa(&self, va: u64) -> u64 {
        self.pa_base + (va - self.va_base)
    }
}

const DESC_VALID: u64 = 1 << 0;
const DESC_TABLE: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Bits 51:48 of a table descriptor: next-level address bits beyond the
/// 48-bit output size; nonzero is an output-size fault.
const TABLE_OA_HIGH_MASK: u64 = 0x000f_0000_0000_0000;
/// Bits 49:48 of a leaf: output address bits beyond 48. Bits 51 (DBM)
/// and 50 (GP) of a leaf are not address bits and are ignored.
const LEAF_OA_HIGH_MASK: u64 = 0x0003_0000_0000_0000;
const PTE_AP_RDONLY: u64 = 1 << 7;
const PTE_AF: u64 = 1 << 10;
const PTE_PXN: u64 = 1 << 53;
const PTE_UXN: u64 = 1 << 54;
const TABLE_PXN: u64 = 1 << 59;
const TABLE_XN: u64 = 1 << 60;
const TABLE_AP_RDONLY: u64 = 1 << 62;

/// Shift of the VA bits a level indexes.
fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - u32::from(level))
}

/// Walks the tables rooted at `ttbr` for `va`. Permissions are not checked
/// here: the result is what a TLB may cache. `reads` counts descriptor reads.
pub fn walk(
    bus: &Bus,
    ttbr: u64,
    va: u64,
    access: Access,
    reads: &mut u32,
) -> Result<Translation, Fault> {
    walk_cached(bus, ttbr, va, access, reads, None)
}

/// A table the walker reached: its address, and the permissions the table
/// descriptors above it take away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub table: u64,
    pub read_only: bool,
    pub no_exec: bool,
}

/// As [`walk`], starting from the deepest table `cache` holds for `va`, and
/// caching the tables it goes through.
pub fn walk_cached(
    bus: &Bus,
    ttbr: u64,
    va: u64,
    access: Access,
    reads: &mut u32,
    mut cache: Option<&mut WalkCache>,
) -> Result<Translation, Fault> {
    let fault = |kind, level| Fault {
        kind,
        level,
        va,
        access,
    };
    if va >> VA_BITS != 0 {
        return Err(fault(FaultKind::AddressSizeIn, 0));
    }
    // Bits 11:0 of TRANSTAB are ignored (the table is 4 KiB aligned);
    // bits above 47 are an output address the bus cannot carry.
    if ttbr >> 48 != 0 {
        return Err(fault(FaultKind::AddressSizeOut, 0));
    }
    let (start, mut table, mut read_only, mut no_exec) =
        match cache.as_deref().and_then(|c| c.lookup(va)) {
            Some((level, e)) => (level, e.table, e.read_only, e.no_exec),
            None => (0, ttbr & ADDR_MASK, false, false),
        };
    for level in start..4 {
        let shift = level_shift(level);
        let idx = (va >> shift) & 511;
        *reads += 1;
        let desc = bus
            .read_u64(table + idx * 8)
            .map_err(|_| fault(FaultKind::TableBus, level))?;
        if desc & DESC_VALID == 0 {
            return Err(fault(FaultKind::Translation, level));
        }
        let is_table = desc & DESC_TABLE != 0;
        let high = if is_table && level < 3 {
            TABLE_OA_HIGH_MASK
        } else {
            LEAF_OA_HIGH_MASK
        };
        if desc & high != 0 {
            return Err(fault(FaultKind::AddressSizeOut, level));
        }
        if is_table && level < 3 {
            read_only |= desc & TABLE_AP_RDONLY != 0;
            no_exec |= desc & (TABLE_XN | TABLE_PXN) != 0;
            table = desc & ADDR_MASK;
            if let Some(c) = cache.as_deref_mut() {
                c.insert(
                    level + 1,
                    va,
                    TableEntry {
                        table,
                        read_only,
                        no_exec,
                    },
                );
            }
            continue;
        }
        // A leaf: a page at level 3, a block at levels 1 and 2.
        let leaf_ok = (level == 3 && is_table) || (!is_table && (level == 1 || level == 2));
        if !leaf_ok {
            return Err(fault(FaultKind::Translation, level));
        }
        if desc & PTE_AF == 0 {
            return Err(fault(FaultKind::AccessFlag, level));
        }
        let size = 1u64 << shift;
        return Ok(Translation {
            va_base: va & !(size - 1),
            pa_base: desc & ADDR_MASK & !(size - 1),
            size,
            attr_idx: ((desc >> 2) & 7) as u8,
            read_only: read_only || desc & PTE_AP_RDONLY != 0,
            no_exec: no_exec || desc & (PTE_UXN | PTE_PXN) != 0,
            level,
        });
    }
    unreachable!("level 3 always returns")
}

/// The MAIR attribute that allows atomics to system memory: Normal,
/// inner and outer write-back, read/write-allocate. This is io-pgtable's
/// ARM_LPAE_MAIR_ATTR_WBRWA, used for IOMMU_CACHE mappings; as with PCIe
/// atomics, uncached system memory cannot take them. VRAM always can.
pub const MAIR_ATOMIC_OK: u8 = 0xff;

/// Checks `access` against a translation's permissions and attributes.
pub fn permit(t: &Translation, access: Access, mair: u64, target: Target) -> Result<(), FaultKind> {
    match access {
        Access::Read => Ok(()),
        Access::Write if t.read_only => Err(FaultKind::Permission),
        Access::Write => Ok(()),
        Access::Execute if t.no_exec => Err(FaultKind::Permission),
        Access::Execute => Ok(()),
        Access::Atomic if t.read_only => Err(FaultKind::Permission),
        Access::Atomic => {
            let attr = (mair >> (8 * u32::from(t.attr_idx))) as u8;
            if target == Target::Vram || attr == MAIR_ATOMIC_OK {
                Ok(())
            } else {
                Err(FaultKind::MemoryAttribute)
            }
        }
    }
}

/// Caches leaf translations of one address space. Nothing but
/// [`Tlb::invalidate_all`] and [`Tlb::invalidate_range`] removes an entry
/// early; when full, the oldest entry makes room.
pub struct Tlb {
    entries: Fifo<(u32, u64), Translation>,
}

impl Tlb {
    pub fn new(capacity: usize) -> Self {
        Tlb {
            entries: Fifo::new(capacity),
        }
    }

    pub fn lookup(&self, va: u64) -> Option<Translation> {
        [12u32, 21, 30]
            .iter()
            .find_map(|&s| self.entries.get(&(s, va >> s)).copied())
    }

    pub fn insert(&mut self, t: Translation) {
        let shift = t.size.trailing_zeros();
        self.entries.insert((shift, t.va_base >> shift), t);
    }

    pub fn invalidate_all(&mut self) {
        self.entries.clear();
    }

    /// Drops every entry overlapping `[start, start + len)`.
    pub fn invalidate_range(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        self.entries
            .retain(|_, t| t.va_base + t.size <= start || t.va_base >= end);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

/// A map of at most `capacity` entries; when it is full, the oldest entry
/// makes room. What the TLB and the walk cache are made of.
struct Fifo<K, V> {
    capacity: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Copy + Eq + std::hash::Hash, V> Fifo<K, V> {
    fn new(capacity: usize) -> Self {
        Fifo {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, v| keep(k, v));
        let map = &self.map;
        self.order.retain(|k| map.contains_key(k));
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Caches the tables a walk went through, as a hardware walk cache does:
/// a walk for an address whose level-`n` table is cached reads no
/// descriptor above level `n`. So a table freed or replaced while the cache
/// still points to it is walked, until [`WalkCache::invalidate_range`]
/// (FLUSH_RANGE over the span it translates) or
/// [`WalkCache::invalidate_all`] drops it; when full, the oldest entry
/// makes room.
pub struct WalkCache {
    /// By (level of the table, the VA bits above the span it translates).
    entries: Fifo<(u8, u64), TableEntry>,
}

impl WalkCache {
    pub fn new(capacity: usize) -> Self {
        WalkCache {
            entries: Fifo::new(capacity),
        }
    }

    /// Bits of VA the table of `level` (1 to 3) translates the low bits of.
    fn span_shift(level: u8) -> u32 {
        level_shift(level - 1)
    }

    /// The deepest cached table on the way to `va`, with its level.
    pub fn lookup(&self, va: u64) -> Option<(u8, TableEntry)> {
        (1u8..4).rev().find_map(|l| {
            self.entries
                .get(&(l, va >> Self::span_shift(l)))
                .map(|e| (l, *e))
        })
    }

    /// Records that the level-`level` table for `va` is `e`.
    pub fn insert(&mut self, level: u8, va: u64, e: TableEntry) {
        self.entries
            .insert((level, va >> Self::span_shift(level)), e);
    }

    pub fn invalidate_all(&mut self) {
        self.entries.clear();
    }

    /// Drops every table whose span overlaps `[start, start + len)`.
    pub fn invalidate_range(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        self.entries.retain(|&(l, idx), _| {
            let shift = Self::span_shift(l);
            let base = idx << shift;
            base.saturating_add(1 << shift) <= start || base >= end
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

/// Entries of each address space's walk cache.
pub const WALK_CACHE_ENTRIES: usize = 64;

/// The translation registers as last latched by AS_CMD_UPDATE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsConfig {
    pub transtab: u64,
    pub memattr: u64,
    pub transcfg: u32,
}

/// A fault latched in an address space (abort mode) until the driver clears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchedFault {
    pub status: u32,
    pub address: u64,
}

/// One address-space slot.
pub struct AddressSpace {
    /// Written by the driver, used only after AS_CMD_UPDATE.
    pub pending: AsConfig,
    pub active: AsConfig,
    pub lockaddr: u64,
    pub fault: Option<LatchedFault>,
    pub tlb: Tlb,
    pub walk_cache: WalkCache,
}

/// What one translation did, for the device's counters.
#[derive(Default, Clone, Copy, Debug)]
pub struct XlateStats {
    pub hit: bool,
    pub walked: bool,
    pub reads: u32,
}

impl AddressSpace {
    pub fn new(tlb_entries: usize) -> Self {
        AddressSpace {
            pending: AsConfig::default(),
            active: AsConfig::default(),
            lockaddr: 0,
            fault: None,
            tlb: Tlb::new(tlb_entries),
            walk_cache: WalkCache::new(WALK_CACHE_ENTRIES),
        }
    }

    pub fn reset(&mut self) {
        self.pending = AsConfig::default();
        self.active = AsConfig::default();
        self.lockaddr = 0;
        self.fault = None;
        self.tlb.invalidate_all();
        self.walk_cache.invalidate_all();
    }

    pub fn enabled(&self) -> bool {
        self.active.transcfg & crate::regs::TRANSCFG_ENABLE != 0
    }

    pub fn stall_mode(&self) -> bool {
        self.active.transcfg & crate::regs::TRANSCFG_STALL != 0
    }

    /// Translates `va` for `access`, through the TLB.
    pub fn translate(
        &mut self,
        bus: &Bus,
        va: u64,
        access: Access,
        st: &mut XlateStats,
    ) -> Result<u64, Fault> {
        if !self.enabled() {
            return Err(Fault {
                kind: FaultKind::Translation,
                level: 0,
                va,
                access,
            });
        }
        let t = match self.tlb.lookup(va) {
            Some(t) => {
                st.hit = true;
                t
            }
            None => {
                st.walked = true;
                let t = walk_cached(
                    bus,
                    self.active.transtab,
                    va,
                    access,
                    &mut st.reads,
                    Some(&mut self.walk_cache),
                )?;
                self.tlb.insert(t);
                t
            }
        };
        let pa = t.pa(va);
        permit(&t, access, self.active.memattr, bus.target(pa)).map_err(|kind| Fault {
            kind,
            level: t.level,
            va,
            access,
        })?;
        Ok(pa)
    }

    /// Applies an AS_COMMAND write.
    pub fn command(&mut self, cmd: u32) {
        use crate::regs::*;
        match cmd {
            AS_CMD_UPDATE => {
                self.active = self.pending;
                self.tlb.invalidate_all();
                self.walk_cache.invalidate_all();
            }
            AS_CMD_FLUSH_RANGE => {
                let (start, len) = lock_region(self.lockaddr);
                self.tlb.invalidate_range(start, len);
                self.walk_cache.invalidate_range(start, len);
            }
            AS_CMD_FLUSH_PT | AS_CMD_FLUSH_MEM => {
                self.tlb.invalidate_all();
                self.walk_cache.invalidate_all();
            }
            _ => {}
        }
    }
}

/// Decodes AS_LOCKADDR: bits 47:12 the base, bits 5:0 `w`, the region
/// being 2^(w+1) bytes aligned down to its size; `w` is clamped to 11..=47.
pub fn lock_region(lockaddr: u64) -> (u64, u64) {
    let w = (lockaddr & 0x3f).clamp(11, 47);
    let size = 1u64 << (w + 1);
    ((lockaddr & ADDR_MASK) & !(size - 1), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlb_lookup_matches_every_page_size() {
        let mut tlb = Tlb::new(8);
        let mk = |va_base, size| Translation {
            va_base,
            pa_base: 0x1000_0000,
            size,
            attr_idx: 0,
            read_only: false,
            no_exec: false,
            level: 3,
        };
        tlb.insert(mk(0x4000_0000, 1 << 30));
        tlb.insert(mk(0x20_0000, 1 << 21));
        tlb.insert(mk(0x1000, 1 << 12));
        assert_eq!(tlb.lookup(0x7fff_ffff).map(|t| t.size), Some(1 << 30));
        assert_eq!(tlb.lookup(0x3f_ffff).map(|t| t.size), Some(1 << 21));
        assert_eq!(tlb.lookup(0x1fff).map(|t| t.size), Some(1 << 12));
        assert_eq!(tlb.lookup(0x2000), None);
        tlb.invalidate_range(0x20_1000, 0x1000);
        assert_eq!(tlb.lookup(0x20_0000), None);
        assert_eq!(tlb.len(), 2);
    }

    #[test]
    fn tlb_evicts_oldest_when_full() {
        let mut tlb = Tlb::new(2);
        for i in 0..3u64 {
            tlb.insert(Translation {
                va_base: i << 12,
                pa_base: i << 12,
                size: 4096,
                attr_idx: 0,
                read_only: false,
                no_exec: false,
                level: 3,
            });
        }
        assert_eq!(tlb.len(), 2);
        assert!(tlb.lookup(0).is_none());
        assert!(tlb.lookup(0x1000).is_some());
        assert!(tlb.lookup(0x2000).is_some());
    }

    #[test]
    fn walk_cache_keeps_the_deepest_table_and_drops_overlapping_spans() {
        let e = |table| TableEntry {
            table,
            read_only: false,
            no_exec: false,
        };
        let mut c = WalkCache::new(8);
        c.insert(1, 0x80_4060_3000, e(0x1000));
        c.insert(2, 0x80_4060_3000, e(0x2000));
        c.insert(3, 0x80_4060_3000, e(0x3000));
        assert_eq!(c.lookup(0x80_4070_0000), Some((3, e(0x3000))));
        assert_eq!(c.lookup(0x80_4020_0000), Some((2, e(0x2000))));
        assert_eq!(c.lookup(0x80_8000_0000), Some((1, e(0x1000))));
        assert_eq!(c.lookup(0x100_0000_0000), None);
        // A page inside the level-3 table's 2 MiB drops that table and the
        // ones above it, whose spans hold it too.
        c.invalidate_range(0x80_4060_0000, 0x1000);
        assert!(c.is_empty());
        c.insert(3, 0x80_4060_3000, e(0x3000));
        c.invalidate_range(0x80_4080_0000, 0x20_0000);
        assert_eq!(c.len(), 1);
        c.invalidate_all();
        assert!(c.is_empty());
    }

    #[test]
    fn lock_region_aligns_and_clamps() {
        assert_eq!(lock_region(0x20_0000 | 20), (0x20_0000, 2 << 20));
        assert_eq!(lock_region(0x20_1000 | 20), (0x20_0000, 2 << 20));
        assert_eq!(lock_region(0x5000), (0x5000, 4096));
        assert_eq!(lock_region(63), (0, 1 << 48));
    }

    #[test]
    fn fault_status_encoding() {
        let f = Fault {
            kind: FaultKind::Permission,
            level: 3,
            va: 0,
            access: Access::Write,
        };
        assert_eq!(f.status(5), 0x0005_03cb);
        let f = Fault {
            kind: FaultKind::Translation,
            level: 1,
            va: 0,
            access: Access::Atomic,
        };
        assert_eq!(f.status(0), 0xc1);
    }
}
