//! How many page tables other drivers reserve before a bind, for the same
//! ops as mirage's: their formulas, transcribed from Linux 7.3.
//!
//! Both assume the ARM LPAE layout with a 4 KiB granule that mirage's MMU
//! uses: an L1 table covers 512 GiB, an L2 table 1 GiB, an L3 table 2 MiB.

const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const SZ_512G: u64 = 1 << 39;

/// One bind op, as the formulas see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Map { va: u64, size: u64 },
    Unmap { va: u64, size: u64 },
}

/// `(ALIGN(end, span) - ALIGN_DOWN(start, span)) >> log2(span)`, with C's
/// unsigned wrap-around: for `start` < `end`, the number of `span`-aligned
/// blocks `[start, end)` touches.
fn spans(start: u64, end: u64, span: u64) -> u64 {
    end.next_multiple_of(span)
        .wrapping_sub(start - start % span)
        / span
}

/// L1 + L2 + L3 tables a map of `[start, end)` may need, counted as if
/// none existed yet.
fn table_spans(start: u64, end: u64) -> u64 {
    spans(start, end, SZ_512G) + spans(start, end, SZ_1G) + spans(start, end, SZ_2M)
}

/// panthor (`panthor_vm_op_ctx_prealloc_pts()` for a map,
/// `panthor_vm_prepare_unmap_op_ctx()` for an unmap), per op: a map
/// reserves a table for every 512 GiB, 1 GiB and 2 MiB span it touches; an
/// unmap one L3 table for each end that may split a 2 MiB block.
pub fn panthor(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|op| match *op {
            Op::Map { va, size } => table_spans(va, va + size),
            Op::Unmap { va, size } => {
                let end = va + size;
                u64::from(!va.is_multiple_of(SZ_2M))
                    + u64::from(
                        !end.is_multiple_of(SZ_2M)
                            && end.next_multiple_of(SZ_2M) != va.next_multiple_of(SZ_2M),
                    )
            }
        })
        .sum()
}

/// msm (`vm_bind_prealloc_count()` in msm_gem_vma.c, with
/// `msm_iommu_pagetable_prealloc_count()`), per job: unmaps reserve
/// nothing; a run of maps, each starting in the 2 MiB block where the one
/// before it ended, counts as one range from the first's start to the
/// last's end, which reserves as panthor's map does. (A run whose last map
/// ends below its start wraps as msm's u64 arithmetic does.)
pub fn msm(job: &[Op]) -> u64 {
    let mut total = 0;
    // The current run: its start and the end of its last map.
    let mut run: Option<(u64, u64)> = None;
    for op in job {
        let Op::Map { va, size } = *op else { continue };
        match run {
            Some((start, end)) if end & !(SZ_2M - 1) == va & !(SZ_2M - 1) => {
                run = Some((start, va + size));
            }
            _ => {
                if let Some((start, end)) = run {
                    total += table_spans(start, end);
                }
                run = Some((va, va + size));
            }
        }
    }
    if let Some((start, end)) = run {
        total += table_spans(start, end);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SZ_4K: u64 = 4096;

    fn map(va: u64, size: u64) -> Op {
        Op::Map { va, size }
    }

    fn unmap(va: u64, size: u64) -> Op {
        Op::Unmap { va, size }
    }

    #[test]
    fn panthor_counts_every_span_of_a_map() {
        assert_eq!(panthor(&[map(0x1000_0000, SZ_4K)]), 3);
        // Crossing a 2 MiB boundary: a second L3 table.
        assert_eq!(panthor(&[map(SZ_2M - SZ_4K, 2 * SZ_4K)]), 4);
        // Crossing a 1 GiB boundary: a second L2 and L3.
        assert_eq!(panthor(&[map(SZ_1G - SZ_4K, 2 * SZ_4K)]), 5);
        // Crossing 512 GiB: one more of each.
        assert_eq!(panthor(&[map(SZ_512G - SZ_4K, 2 * SZ_4K)]), 6);
        // 4 MiB aligned: two L3 tables.
        assert_eq!(panthor(&[map(4 * SZ_2M, 2 * SZ_2M)]), 4);
        // Per op: ten 4 KiB maps in one 2 MiB block count ten times.
        let ops: Vec<_> = (0..10).map(|i| map(i * SZ_4K, SZ_4K)).collect();
        assert_eq!(panthor(&ops), 30);
    }

    #[test]
    fn panthor_counts_the_unaligned_ends_of_an_unmap() {
        assert_eq!(panthor(&[unmap(0, SZ_2M)]), 0);
        assert_eq!(panthor(&[unmap(SZ_4K, SZ_2M)]), 2);
        assert_eq!(panthor(&[unmap(0, SZ_4K)]), 1);
        // Both ends inside the same 2 MiB block: one table splits it.
        assert_eq!(panthor(&[unmap(SZ_4K, SZ_4K)]), 1);
        assert_eq!(panthor(&[unmap(SZ_2M - SZ_4K, 2 * SZ_4K)]), 2);
    }

    #[test]
    fn msm_merges_maps_that_continue_in_the_same_block() {
        // Contiguous 4 KiB maps over 4 MiB + 4 KiB: one range, 3 L3 tables.
        let ops: Vec<_> = (0..1025).map(|i| map(i * SZ_4K, SZ_4K)).collect();
        assert_eq!(msm(&ops), 1 + 1 + 3);
        // A gap of a whole block breaks the run.
        assert_eq!(msm(&[map(0, SZ_4K), map(4 * SZ_2M, SZ_4K)]), 6);
        // Out of order within the block still merges: only the block counts.
        assert_eq!(msm(&[map(SZ_4K, SZ_4K), map(0, SZ_4K)]), 3);
        // Unmaps reserve nothing and do not break a run.
        assert_eq!(msm(&[map(0, SZ_4K), unmap(0, SZ_4K), map(SZ_4K, SZ_4K)]), 3);
        assert_eq!(msm(&[unmap(SZ_4K, SZ_4K)]), 0);
        assert_eq!(msm(&[]), 0);
    }
}
