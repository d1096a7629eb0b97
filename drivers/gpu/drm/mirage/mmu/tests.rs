// SPDX-License-Identifier: GPL-2.0 or MIT

//! KUnit tests of the page-table code against a reference model.
//!
//! Random maps and unmaps, with fake physical addresses (the page table is never given to the
//! device), over a 4 GiB window where 1 GiB and 2 MiB blocks and partial unmaps of them happen.
//! After every step: the budget equals the tables the update took from the pool, and every leaf
//! of the page table agrees with the model, down to its protection bits.

use kernel::{iommu::pgtable::prot, prelude::*, sync::Arc};

use super::{
    budget::{Budget, Overlay},
    pgtable::PageTable,
    pool::{PtPool, STANDING},
    walker::{
        count_leaves, level_size, map_contiguous, unmap_range, Entry, PtOps, SZ_1G, SZ_2M, SZ_4K,
    },
};

const BASE: u64 = 1 << 36;
const WINDOW: u64 = 4 * SZ_1G;
const PGSIZES: u64 = SZ_4K | SZ_2M | SZ_1G;

/// A mapping of the model: `len` bytes at `va` to `pa`, with `prot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) va: u64,
    pub(crate) len: u64,
    pub(crate) pa: u64,
    pub(crate) prot: u32,
}

/// The reference: sorted, disjoint mappings.
pub(crate) struct Model(pub(crate) KVec<Mapping>);

impl Model {
    fn unmap(&mut self, start: u64, end: u64) -> Result {
        let mut out = KVec::new();
        for m in self.0.iter() {
            let m_end = m.va + m.len;
            if m_end <= start || m.va >= end {
                out.push(*m, GFP_KERNEL)?;
                continue;
            }
            if m.va < start {
                out.push(
                    Mapping {
                        len: start - m.va,
                        ..*m
                    },
                    GFP_KERNEL,
                )?;
            }
            if m_end > end {
                let off = end - m.va;
                out.push(
                    Mapping {
                        va: end,
                        len: m_end - end,
                        pa: m.pa + off,
                        prot: m.prot,
                    },
                    GFP_KERNEL,
                )?;
            }
        }
        self.0 = out;
        Ok(())
    }

    fn map(&mut self, m: Mapping) -> Result {
        self.unmap(m.va, m.va + m.len)?;
        insert_sorted(&mut self.0, m, |x| x.va)
    }
}

/// Inserts `item` into `v`, sorted by `key`, after the entries with an equal key.
pub(crate) fn insert_sorted<T: Copy>(v: &mut KVec<T>, item: T, key: impl Fn(&T) -> u64) -> Result {
    let at = v
        .iter()
        .position(|x| key(x) > key(&item))
        .unwrap_or(v.len());
    v.reserve(1, GFP_KERNEL)?;
    v.insert_within_capacity(at, item).map_err(|_| ENOMEM)
}

/// Deterministic xorshift, so that a failure reproduces.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Op {
    Map(Mapping),
    Unmap(u64, u64),
}

/// Runs `op` over `pt` (the real page table or the dry run).
fn apply(pt: &mut impl PtOps, op: &Op) -> Result {
    match *op {
        Op::Map(m) => {
            unmap_range(pt, PGSIZES, m.va, m.va + m.len)?;
            // SAFETY: The page table is never live: the device never sees these addresses.
            unsafe { map_contiguous(pt, PGSIZES, m.va, m.pa, m.len, m.prot) }
        }
        Op::Unmap(start, end) => unmap_range(pt, PGSIZES, start, end),
    }
}

/// The protection bits a leaf descriptor has for `prot`, as io-pgtable-arm builds them.
fn expected_bits(prot: u32) -> u64 {
    let ro = if prot & prot::WRITE == 0 { 1 << 7 } else { 0 };
    let xn = if prot & prot::NOEXEC != 0 { 1 << 54 } else { 0 };
    let attr = if prot & prot::CACHE != 0 { 1 << 2 } else { 0 };
    ro | xn | attr
}

const PROT_BITS: u64 = (1 << 7) | (1 << 54) | (0b111 << 2);

/// Checks every leaf in `[start, end)` (1 GiB aligned) against the model; returns the leaves
/// seen per level.
pub(crate) fn check(pt: &PageTable, model: &Model, start: u64, end: u64) -> Result<[u64; 4]> {
    let mut seen = [0u64; 4];
    let mut va = start;
    // The model is sorted and the walk goes up: `next` is the first mapping not below `va`.
    let mut next = 0;
    while va < end {
        while next < model.0.len() && model.0[next].va + model.0[next].len <= va {
            next += 1;
        }
        let current = model.0.get(next).filter(|m| m.va <= va).copied();
        let ptes = pt.walk(va);
        let mut step = SZ_4K;
        for level in 0..4 {
            let size = level_size(level);
            match super::pgtable::decode(ptes[level], level) {
                Entry::Table => continue,
                Entry::Empty => {
                    step = size - (va & (size - 1));
                    let hole_end = va + step;
                    if let Some(m) = model.0.get(next).filter(|m| m.va < hole_end) {
                        pr_err!("mirage_pgtable: {:#x} unmapped, model has {:?}\n", va, m);
                        return Err(EINVAL);
                    }
                }
                Entry::Leaf { pa, prot } => {
                    step = size;
                    seen[level] += 1;
                    let m = current.ok_or(EINVAL)?;
                    let want_pa = m.pa + (va - m.va);
                    let whole = m.va <= va && va + size <= m.va + m.len;
                    let bits = ptes[level] & PROT_BITS;
                    if !whole || pa != want_pa || bits != expected_bits(m.prot) || prot != m.prot {
                        pr_err!(
                            "mirage_pgtable: leaf {:#x} (level {}) -> {:#x} bits {:#x}, model {:?}\n",
                            va,
                            level,
                            pa,
                            bits,
                            m
                        );
                        return Err(EINVAL);
                    }
                }
            }
            break;
        }
        va += step;
    }
    Ok(seen)
}

fn random_op(rng: &mut Rng) -> Op {
    let align = [SZ_4K, SZ_4K, SZ_2M, SZ_2M, SZ_1G][rng.below(5) as usize];
    let va = BASE + (rng.below(WINDOW / align) * align);
    // Lengths up to 1 GiB plus a few pages, often block multiples, sometimes odd.
    let kind = rng.below(4);
    let len = match kind {
        0 => (1 + rng.below(16)) * SZ_4K,
        1 => (1 + rng.below(4)) * SZ_2M + rng.below(3) * SZ_4K,
        2 => SZ_1G + rng.below(2) * SZ_2M,
        _ => (1 + rng.below(600)) * SZ_4K,
    }
    .min(BASE + WINDOW - va);
    if rng.below(3) == 0 {
        return Op::Unmap(va, va + len);
    }
    // Physical addresses congruent to the VA modulo 1 GiB half of the time, so that blocks
    // fit; always for the long maps, which would otherwise be 2^18 pages.
    let pa_base = (1 + rng.below(8)) << 32;
    let pa = if kind == 2 || rng.below(2) == 0 {
        pa_base + (va & (SZ_1G - 1))
    } else {
        pa_base + rng.below(1 << 20) * SZ_4K
    };
    let prot = random_prot(rng);
    Op::Map(Mapping { va, len, pa, prot })
}

/// One of the protections the driver maps with.
pub(crate) fn random_prot(rng: &mut Rng) -> u32 {
    [
        prot::READ | prot::WRITE | prot::CACHE,
        prot::READ | prot::CACHE,
        prot::READ | prot::WRITE | prot::NOEXEC,
        prot::READ | prot::WRITE,
    ][rng.below(4) as usize]
}

#[kunit_tests(mirage_pgtable)]
mod kunit {
    use super::*;

    fn new_table() -> Result<(Arc<PtPool>, PageTable)> {
        let pool = Arc::new(PtPool::new()?, GFP_KERNEL)?;
        pool.reserve(1)?;
        let pt = PageTable::new(pool.clone(), 48, PGSIZES)?;
        Ok((pool, pt))
    }

    #[test]
    fn random_updates_match_the_model_and_the_budget() -> Result {
        let (pool, mut pt) = new_table()?;
        let mut model = Model(KVec::new());
        let mut rng = Rng(0x6d69_7261_6765_2131);
        let mut seen = [0u64; 4];
        let mut budgeted = 0;
        for step in 0..250 {
            let op = random_op(&mut rng);
            let need = {
                let mut overlay = Overlay::new();
                let mut dry = Budget::new(&pt, &mut overlay);
                apply(&mut dry, &op)?;
                dry.tables()
            };
            pool.reserve(need)?;
            let used = pool.stats().used;
            apply(&mut pt, &op)?;
            let took = (pool.stats().used - used) as usize;
            if took != need || pool.available() != 0 {
                pr_err!(
                    "mirage_pgtable: step {}: budget {} tables, took {}\n",
                    step,
                    need,
                    took
                );
                return Err(EINVAL);
            }
            budgeted += need;
            pool.release_freed();
            match op {
                Op::Map(m) => model.map(m)?,
                Op::Unmap(start, end) => model.unmap(start, end)?,
            }
            // An update changes nothing outside the 1 GiB blocks it touches; all of the window
            // is checked now and then, and at the end.
            let (start, end) = if step % 50 == 49 {
                (BASE, BASE + WINDOW)
            } else {
                match op {
                    Op::Map(m) => (m.va, m.va + m.len),
                    Op::Unmap(start, end) => (start, end),
                }
            };
            let s = check(
                &pt,
                &model,
                start & !(SZ_1G - 1),
                end.next_multiple_of(SZ_1G),
            )?;
            for (total, n) in seen.iter_mut().zip(s) {
                *total += n;
            }
        }
        // The sequence must have exercised blocks of both sizes, and tables.
        assert!(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
        // What debugfs reports: the last full check saw every leaf there is.
        let all = check(&pt, &model, BASE, BASE + WINDOW)?;
        assert_eq!(count_leaves(&pt, 1 << 48), all);
        assert!(budgeted > 0);
        let stats = pool.stats();
        assert!(stats.returned > 0);
        assert_eq!(stats.exhausted, 0);
        assert_eq!(stats.unused, 0);
        Ok(())
    }

    #[test]
    fn partial_unmap_of_a_2m_block_maps_the_rest_back() -> Result {
        let (pool, mut pt) = new_table()?;
        let mut model = Model(KVec::new());
        let m = Mapping {
            va: BASE,
            len: SZ_2M,
            pa: 1 << 33,
            prot: prot::READ | prot::WRITE | prot::CACHE,
        };
        for op in [Op::Map(m), Op::Unmap(BASE + 5 * SZ_4K, BASE + 9 * SZ_4K)] {
            let need = {
                let mut overlay = Overlay::new();
                let mut dry = Budget::new(&pt, &mut overlay);
                apply(&mut dry, &op)?;
                dry.tables()
            };
            pool.reserve(need)?;
            apply(&mut pt, &op)?;
            assert_eq!(pool.available(), 0);
            match op {
                Op::Map(m) => {
                    // Level 1 and 2 tables; the block itself needs none.
                    assert_eq!(need, 2);
                    model.map(m)?
                }
                Op::Unmap(start, end) => {
                    // The level-3 table that holds the remaining pages.
                    assert_eq!(need, 1);
                    model.unmap(start, end)?
                }
            }
        }
        let seen = check(&pt, &model, BASE, BASE + SZ_1G)?;
        assert_eq!(seen, [0, 0, 0, 512 - 4]);
        assert_eq!(
            pt.iova_to_phys(BASE + 4 * SZ_4K + 8),
            Some((1 << 33) + 4 * SZ_4K + 8)
        );
        assert_eq!(pt.iova_to_phys(BASE + 5 * SZ_4K), None);
        pool.release_freed();
        Ok(())
    }

    #[test]
    fn unmapping_2m_of_pages_frees_their_table() -> Result {
        let (pool, mut pt) = new_table()?;
        let op = Op::Map(Mapping {
            va: BASE + SZ_4K,
            len: SZ_2M,
            pa: 1 << 33,
            prot: prot::READ,
        });
        pool.reserve(4)?;
        apply(&mut pt, &op)?;
        // Levels 1 and 2, and two level-3 tables: the range straddles a 2 MiB boundary.
        assert_eq!(pool.stats().used, 1 + 4);
        unmap_range(&mut pt, PGSIZES, BASE, BASE + 4 * SZ_2M)?;
        // Each level-3 table went at its 2 MiB entry, the level-2 table stays.
        assert_eq!(pool.freed_pending(), 2);
        pool.release_freed();
        assert_eq!(pool.stats().returned, 2);
        assert_eq!(pool.stats().live, 3);
        Ok(())
    }

    /// The budget rule for queued binds (issue "async VM_BIND"): a sequence of ops is budgeted in
    /// submission order, into one pool, and then runs in any order that keeps the ops whose VA
    /// ranges overlap in submission order (as bind queues ordered by range fences would). The
    /// pool must never run dry, and must end exact; the page table ends as the model says.
    #[test]
    fn queued_sequences_run_in_any_range_respecting_order_within_their_budget() -> Result {
        let (pool, mut pt) = new_table()?;
        let mut model = Model(KVec::new());
        let mut rng = Rng(0x7175_6575_6564_2121);
        let range = |op: &Op| match *op {
            Op::Map(m) => (m.va, m.va + m.len),
            Op::Unmap(start, end) => (start, end),
        };
        let mut reordered = 0;
        for seq in 0..12 {
            let mut ops = KVec::new();
            for _ in 0..10 {
                ops.push(random_op(&mut rng), GFP_KERNEL)?;
            }
            // Submission: one dry run over the page table as it is, through every op in turn.
            let need = {
                let mut overlay = Overlay::new();
                let mut dry = Budget::new(&pt, &mut overlay);
                for op in ops.iter() {
                    apply(&mut dry, op)?;
                }
                dry.tables()
            };
            pool.reserve(need)?;
            for op in ops.iter() {
                match *op {
                    Op::Map(m) => model.map(m)?,
                    Op::Unmap(start, end) => model.unmap(start, end)?,
                }
            }
            // Execution: a random op whose earlier overlapping ops all ran, each time.
            let mut done = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
            for _ in 0..ops.len() {
                done.push(false, GFP_KERNEL)?;
            }
            for turn in 0..ops.len() {
                let mut ready = KVec::new();
                for (j, op) in ops.iter().enumerate() {
                    let (s, e) = range(op);
                    let blocked = (0..j).any(|i| {
                        let (si, ei) = range(&ops[i]);
                        !done[i] && si < e && s < ei
                    });
                    if !done[j] && !blocked {
                        ready.push(j, GFP_KERNEL)?;
                    }
                }
                let j = ready[rng.below(ready.len() as u64) as usize];
                if j != turn {
                    reordered += 1;
                }
                let now = {
                    let mut overlay = Overlay::new();
                    let mut dry = Budget::new(&pt, &mut overlay);
                    apply(&mut dry, &ops[j])?;
                    dry.tables()
                };
                if now > pool.available() {
                    pr_err!(
                        "mirage_pgtable: sequence {}: op {} needs {} tables, {} left\n",
                        seq,
                        j,
                        now,
                        pool.available()
                    );
                    return Err(EINVAL);
                }
                apply(&mut pt, &ops[j])?;
                pool.release_freed();
                done[j] = true;
            }
            if pool.available() != 0 {
                pr_err!(
                    "mirage_pgtable: sequence {}: {} tables left over\n",
                    seq,
                    pool.available()
                );
                return Err(EINVAL);
            }
            if seq % 4 == 3 {
                check(&pt, &model, BASE, BASE + WINDOW)?;
            }
        }
        // The orders did differ from submission order.
        assert!(reordered > 0);
        assert_eq!(pool.stats().exhausted, 0);
        Ok(())
    }

    #[test]
    fn unmaps_take_the_standing_reserve_when_memory_runs_out() -> Result {
        let (pool, _pt) = new_table()?;
        pool.refill_standing()?;
        assert_eq!(pool.reserve_for(2, false, true), Err(ENOMEM));
        assert_eq!(pool.available(), 0);
        pool.reserve_for(2, true, true)?;
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.stats().standing_used, 2);
        // More than is left aside: the unmap fails after all, and takes nothing.
        assert_eq!(pool.reserve_for(STANDING, true, true), Err(ENOMEM));
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.trim(false), 2);
        // A reservation that succeeds puts the standing tables back.
        pool.reserve_for(0, false, false)?;
        pool.reserve_for(STANDING, true, true)?;
        assert_eq!(pool.available(), STANDING);
        assert_eq!(pool.trim(false), STANDING);
        Ok(())
    }

    #[test]
    fn a_failed_reservation_reserves_nothing() -> Result {
        let (pool, _pt) = new_table()?;
        pool.fail_next_reserve();
        assert_eq!(pool.reserve(3), Err(ENOMEM));
        assert_eq!(pool.available(), 0);
        pool.reserve(3)?;
        assert_eq!(pool.available(), 3);
        assert_eq!(pool.trim(false), 3);
        assert_eq!(pool.stats().unused, 3);
        Ok(())
    }
}
