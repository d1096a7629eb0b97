// SPDX-License-Identifier: GPL-2.0 or MIT

//! How the driver maps and unmaps ranges, over any page table: the real one, or the budget
//! simulation that counts the tables an update will create.
//!
//! Both run the same code, so the budget is exact by construction: the simulation sees the same
//! calls the real page table will get, in the same order.

use kernel::prelude::*;

/// Page and block sizes, largest first: 1 GiB, 2 MiB, 4 KiB.
pub(crate) const SZ_4K: u64 = 1 << 12;
pub(crate) const SZ_2M: u64 = 1 << 21;
pub(crate) const SZ_1G: u64 = 1 << 30;

/// Bits of VA an entry at `level` covers the low bits of: 39, 30, 21, 12.
pub(crate) const fn level_shift(level: usize) -> u32 {
    39 - 9 * level as u32
}

/// Bytes an entry at `level` maps (0 to 3).
pub(crate) const fn level_size(level: usize) -> u64 {
    1 << level_shift(level)
}

/// The level whose entries map `size` bytes.
pub(crate) const fn size_level(size: u64) -> usize {
    match size {
        SZ_1G => 1,
        SZ_2M => 2,
        _ => 3,
    }
}

/// An entry of a page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Invalid: nothing is mapped in its span.
    Empty,
    /// Points to a table of the next level.
    Table,
    /// A page (level 3) or block (levels 1 and 2) whose first byte maps to `pa`, with the
    /// io-pgtable protection `prot` (both 0 in the budget simulation, which does not track
    /// them).
    Leaf { pa: u64, prot: u32 },
}

/// The operations the walker needs from a page table.
pub(crate) trait PtOps {
    /// The entries on the way to `va`, by level (0 to 3), down to the first that is not a
    /// table; the entries below that one are [`Entry::Empty`].
    ///
    /// One call per address the walker visits: a walk reads every level at once.
    fn entries(&self, va: u64) -> [Entry; 4];

    /// Maps `count` leaves of `size` bytes from `va` to `pa`, creating the tables above them.
    /// They lie in one table, no leaf maps any of them yet, and tables where they go are
    /// freed.
    ///
    /// # Safety
    ///
    /// Once the page table is live, the device may access `[pa, pa + size * count)` until the
    /// leaves are unmapped and the TLB invalidated: the caller keeps that memory alive and
    /// owned by the device's user until then.
    unsafe fn map(&mut self, va: u64, pa: u64, size: u64, count: u64, prot: u32) -> Result;

    /// Removes the valid entry of `size` bytes at `va`: a leaf, or a table with everything
    /// below it.
    fn unmap(&mut self, va: u64, size: u64) -> Result;
}

/// The largest page size in `pgsizes` that `va` and `pa` are aligned to and `len` can hold.
fn pick_size(pgsizes: u64, va: u64, pa: u64, len: u64) -> u64 {
    [SZ_1G, SZ_2M, SZ_4K]
        .into_iter()
        .find(|&s| pgsizes & s != 0 && (va | pa) & (s - 1) == 0 && len >= s)
        .unwrap_or(SZ_4K)
}

/// Maps `[va, va + len)` to the physically contiguous `[pa, pa + len)`, with the largest pages
/// the alignment allows. Nothing may be mapped there.
///
/// # Safety
///
/// As for [`PtOps::map`], for `[pa, pa + len)`.
pub(crate) unsafe fn map_contiguous(
    pt: &mut impl PtOps,
    pgsizes: u64,
    mut va: u64,
    mut pa: u64,
    mut len: u64,
    prot: u32,
) -> Result {
    if (va | pa | len) & (SZ_4K - 1) != 0 {
        return Err(EINVAL);
    }
    while len > 0 {
        let size = pick_size(pgsizes, va, pa, len);
        // One call maps within one table: up to the end of the table holding `va`'s entry.
        let table_span = size * 512;
        let room = table_span - (va & (table_span - 1));
        let count = len.min(room) / size;
        // SAFETY: The caller's promise covers this part of `[pa, pa + len)`.
        unsafe { pt.map(va, pa, size, count, prot)? };
        let done = count * size;
        va += done;
        pa += done;
        len -= done;
    }
    Ok(())
}

/// Unmaps whatever is mapped in `[start, end)`, and nothing outside it.
///
/// It goes down from the top level and removes the largest entries inside the range: at
/// 2 MiB over a table of pages, that frees the table too. A block that straddles an end is
/// unmapped whole and its part outside the range mapped again with smaller pages (io-pgtable
/// no longer splits blocks), with the same protection.
///
/// Whether a level-3 entry is valid decides nothing but whether it is unmapped, which creates
/// or frees no table: the budget simulation relies on that.
pub(crate) fn unmap_range(pt: &mut impl PtOps, pgsizes: u64, start: u64, end: u64) -> Result {
    let mut va = start;
    'next: while va < end {
        for (level, &entry) in pt.entries(va).iter().enumerate() {
            let size = level_size(level);
            let base = va & !(size - 1);
            let inside = base >= start && base + size <= end;
            match entry {
                Entry::Empty => {
                    va = (base + size).min(end);
                    continue 'next;
                }
                Entry::Table if !(inside && level > 0 && pgsizes & size != 0) => continue,
                Entry::Table => {}
                Entry::Leaf { pa, prot: p } if !inside => {
                    pt.unmap(base, size)?;
                    // SAFETY: The parts mapped again were mapped to the same memory a moment
                    // ago, by a mapping the caller keeps.
                    unsafe {
                        if base < start {
                            map_contiguous(pt, pgsizes, base, pa, start - base, p)?;
                        }
                        if base + size > end {
                            let off = end - base;
                            map_contiguous(pt, pgsizes, end, pa + off, size - off, p)?;
                        }
                    }
                    va = (base + size).min(end);
                    continue 'next;
                }
                Entry::Leaf { .. } => {}
            }
            pt.unmap(base, size)?;
            va = base + size;
            continue 'next;
        }
        // A level-3 entry is never a table.
        return Err(EINVAL);
    }
    Ok(())
}

/// Unmaps the leaves in `[start, end)` and leaves every table in place, so that it frees
/// nothing: for an MMU notifier, which must not change what the page-table budgets count.
///
/// No leaf may straddle an end of the range: `EINVAL`.
pub(crate) fn zap_leaves(pt: &mut impl PtOps, start: u64, end: u64) -> Result {
    let mut va = start;
    'next: while va < end {
        for (level, &entry) in pt.entries(va).iter().enumerate() {
            let size = level_size(level);
            let base = va & !(size - 1);
            match entry {
                Entry::Empty => {
                    va = (base + size).min(end);
                    continue 'next;
                }
                Entry::Table => continue,
                Entry::Leaf { .. } => {
                    if base < start || base + size > end {
                        return Err(EINVAL);
                    }
                    pt.unmap(base, size)?;
                    va = base + size;
                    continue 'next;
                }
            }
        }
        // A level-3 entry is never a table.
        return Err(EINVAL);
    }
    Ok(())
}

/// The leaves below `end`, by level: 1 GiB blocks at 1, 2 MiB blocks at 2, pages at 3.
///
/// For debugfs and tests: userspace learns from it which block sizes its mappings got, and
/// that the page table maps no more than the VA tree says.
pub(crate) fn count_leaves(pt: &impl PtOps, end: u64) -> [u64; 4] {
    let mut n = [0; 4];
    let mut va = 0;
    'next: while va < end {
        let entries = pt.entries(va);
        for (level, (count, &entry)) in n.iter_mut().zip(entries.iter()).enumerate() {
            let size = level_size(level);
            match entry {
                Entry::Table if level < 3 => continue,
                Entry::Leaf { .. } => *count += 1,
                _ => {}
            }
            va = (va & !(size - 1)) + size;
            continue 'next;
        }
    }
    n
}
