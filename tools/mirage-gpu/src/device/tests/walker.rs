//! The walker against an independent reference decoder.

use super::*;
use crate::mmu::{walk, Translation};
use std::collections::BTreeMap;

/// An independent model of a VMSAv8-64 stage-1 walk, written from the
/// architecture's descriptor tables rather than from `walk`.
fn reference_walk(
    read: &dyn Fn(u64) -> Option<u64>,
    ttbr: u64,
    va: u64,
) -> Result<(u64, u64, bool, bool), (FaultKind, u8)> {
    if va >= 1 << 48 {
        return Err((FaultKind::AddressSizeIn, 0));
    }
    if ttbr >= 1 << 48 {
        return Err((FaultKind::AddressSizeOut, 0));
    }
    let mut base = ttbr & ((1 << 48) - 1) & !0xfff;
    let (mut ro, mut xn) = (false, false);
    for level in 0..4u8 {
        let bits = [39, 30, 21, 12][level as usize];
        let d = read(base + ((va >> bits) & 0x1ff) * 8).ok_or((FaultKind::TableBus, level))?;
        let kind = d & 3;
        let oa = d & ((1 << 48) - 1) & !0xfff;
        if kind == 0 || kind == 2 {
            return Err((FaultKind::Translation, level));
        }
        // Bits 51:48 of a table address the next level; a leaf's 51 (DBM)
        // and 50 (GP) are attributes this device ignores.
        let high = if level < 3 && kind == 3 { 0xf } else { 0x3 };
        if (d >> 48) & high != 0 {
            return Err((FaultKind::AddressSizeOut, level));
        }
        match (level, kind) {
            (0..=2, 3) => {
                ro |= (d >> 62) & 1 == 1;
                xn |= (d >> 59) & 3 != 0;
                base = oa;
            }
            (1 | 2, 1) | (3, 3) => {
                if (d >> 10) & 1 == 0 {
                    return Err((FaultKind::AccessFlag, level));
                }
                let size = 1u64 << bits;
                return Ok((
                    (oa & !(size - 1)) | (va & (size - 1)),
                    size,
                    ro || (d >> 7) & 1 == 1,
                    xn || (d >> 53) & 3 != 0,
                ));
            }
            _ => return Err((FaultKind::Translation, level)),
        }
    }
    unreachable!()
}

fn check_walk(r: &Rig, root: u64, va: u64) {
    let read = |pa: u64| r.gpu.bus.read_u64(pa).ok();
    let want = reference_walk(&read, root, va);
    let mut reads = 0;
    let got = walk(&r.gpu.bus, root, va, Access::Read, &mut reads)
        .map(|t: Translation| (t.pa(va), t.size, t.read_only, t.no_exec))
        .map_err(|f| (f.kind, f.level));
    assert_eq!(got, want, "va {va:#x}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random mappings of every size: the walker agrees with the reference
    /// and with what was mapped.
    #[test]
    fn walker_matches_reference_on_random_mappings(
        maps in prop::collection::vec((0u64..(1 << 36), 0u8..3, any::<bool>(), any::<bool>(), 0u64..8), 1..24),
        probes in prop::collection::vec(0u64..(1 << 49), 32),
    ) {
        let mut r = Rig::new();
        let root = r.alloc(4096);
        let mut model: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (i, &(va, sz, ro, xn, attr)) in maps.iter().enumerate() {
            let size = [4096u64, 2 << 20, 1 << 30][sz as usize];
            let va = (va << 12) & !(size - 1) & ((1 << 48) - 1);
            // Skip mappings that would overlap one already made at another size.
            if model.range(..va + size).next_back().is_some_and(|(&s, &(sz2, _))| s + sz2 > va) {
                continue;
            }
            let pa = (0x1_0000_0000u64 + (i as u64) * (1 << 30)) & !(size - 1);
            r.set_pte(root, va, pa, size, Prot { ro, xn, no_af: false, attr });
            model.insert(va, (size, pa));
        }
        for (&va, &(size, pa)) in model.iter().take(8) {
            for off in [0, size / 2 + 8, size - 8] {
                check_walk(&r, root, va + off);
                let mut reads = 0;
                let t = walk(&r.gpu.bus, root, va + off, Access::Read, &mut reads).unwrap();
                prop_assert_eq!(t.pa(va + off), pa + off);
            }
        }
        for va in probes {
            check_walk(&r, root, va & !7);
        }
    }
}

/// Where a walk ended: the level of its leaf or of its fault.
fn depth(res: &Result<(u64, u64, bool, bool), (FaultKind, u8)>) -> usize {
    match res {
        Ok((_, size, _, _)) => match size {
            0x1000 => 3,
            0x20_0000 => 2,
            _ => 1,
        },
        Err((_, level)) => usize::from(*level),
    }
}

/// Random descriptor words at every level, valid or not, steered so that
/// most walks go deep; the statistics prove they do.
#[test]
fn walker_matches_reference_on_random_descriptors() {
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    use std::cell::RefCell;
    const CASES: u32 = 256;
    let r = Rig::new();
    // One table per level; each level's slot for `va` holds the word.
    let tables: Vec<u64> = (0..4).map(|i| RAM_IOVA + 0x10_0000 + i * 4096).collect();
    let reached = RefCell::new([0u32; 4]);
    let out_size = RefCell::new(0u32);
    let cfg = ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    };
    // A fixed seed: the depth floors below are then exact, not flaky.
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let strategy = (
        prop::collection::vec((any::<u64>(), 0u8..8, 0u64..4), 4),
        0u64..(1 << 48),
    );
    TestRunner::new_with_rng(cfg, rng)
        .run(&strategy, |(levels, va)| {
            let mut slots = Vec::new();
            for (level, &(word, steer, kind)) in levels.iter().enumerate() {
                let bits = [39, 30, 21, 12][level];
                let slot = tables[level] + ((va >> bits) & 0x1ff) * 8;
                let d = if steer < 6 {
                    // A table (a page at level 3) with random attribute
                    // and ignored bits, pointing at the next level.
                    let next = tables
                        .get(level + 1)
                        .copied()
                        .unwrap_or(word & 0x0000_7fff_ffff_f000);
                    (word & !0x000f_ffff_ffff_f003) | next | 3
                } else if steer == 6 {
                    // Any type, any attributes, bits 51:48 clear.
                    (word & !3 & !(0xf << 48)) | kind
                } else {
                    // Anything at all, bits 51:48 included.
                    (word & !3) | kind
                };
                r.poke(slot, &d.to_le_bytes());
                slots.push(slot);
            }
            let read = |pa: u64| r.gpu.bus.read_u64(pa).ok();
            let want = reference_walk(&read, tables[0], va);
            reached.borrow_mut()[depth(&want)] += 1;
            if matches!(want, Err((FaultKind::AddressSizeOut, _))) {
                *out_size.borrow_mut() += 1;
            }
            let mut reads = 0;
            let got = walk(&r.gpu.bus, tables[0], va, Access::Read, &mut reads)
                .map(|t: Translation| (t.pa(va), t.size, t.read_only, t.no_exec))
                .map_err(|f| (f.kind, f.level));
            // Clean up before judging: shrinking reruns the closure.
            for slot in slots {
                r.poke(slot, &[0; 8]);
            }
            prop_assert_eq!(got, want, "va {:#x}", va);
            Ok(())
        })
        .unwrap();
    let reached = reached.into_inner();
    let deeper = |n: usize| reached[n..].iter().sum::<u32>();
    // With 3/4 of the words steered, about 42% of walks reach level 3.
    assert!(deeper(1) >= CASES / 2, "depths {reached:?}");
    assert!(deeper(3) >= CASES / 4, "depths {reached:?}");
    assert!(out_size.into_inner() > 0, "no output-size faults");
}

/// Golden vectors, computed by hand from the VMSAv8-64 descriptor formats
/// (4 KiB granule; bits 47:39, 38:30, 29:21, 20:12 index levels 0-3),
/// checked against both the reference walker and `walk`.
#[test]
fn walker_matches_golden_vectors() {
    let r = Rig::new();
    let t = |i: u64| RAM_IOVA + 0x10_0000 + i * 4096;
    let (t0, t1, t2, t3, t1b) = (t(0), t(1), t(2), t(3), t(4));
    let put = |table: u64, idx: u64, d: u64| r.poke(table + idx * 8, &d.to_le_bytes());
    const AF: u64 = 1 << 10;
    // VA 0x80_xxxx_xxxx: level-0 index 1.
    put(t0, 1, t1 | 3);
    put(t1, 1, t2 | 3); // 0x80_40xx_xxxx
    put(t2, 3, t3 | 3); // 0x80_406x_xxxx
    put(t3, 3, 0x1234_5000 | AF | (1 << 2) | 3); // page, AttrIndx 1
    put(t2, 4, 0x8000_0000 | AF | (1 << 7) | 1); // 2 MiB block, AP[2]
    put(t1, 2, 0x1_4000_0000 | (1 << 54) | AF | 1); // 1 GiB block, UXN
    put(t0, 2, t1b | (1 << 62) | (1 << 60) | 3); // APTable[1], XNTable
    put(t1b, 0, AF | 1); // 1 GiB block at 0 under it
    put(t0, 4, AF | 1); // a block at level 0: reserved
    put(t3, 5, 0x1234_6000 | 3); // AF clear
    put(t3, 6, 0x1234_7000 | AF | 1); // 0b01 at level 3: reserved
    put(t3, 7, (1 << 48) | 0x1234_8000 | AF | 3); // OA bit 48
    put(t2, 5, 0x7000_0000_0000 | 3); // level-3 table nobody backs
    put(t3, 8, 0x1234_9000 | (1 << 6) | AF | 3); // AP[1] is ignored
    put(t3, 9, (1 << 53) | 0x1234_a000 | AF | 3); // PXN
    put(
        t3,
        10,
        (0xfu64 << 55) | (1 << 52) | (3 << 8) | (1 << 5) | (1 << 11) | 0x1234_b000 | AF | 3,
    ); // ignored: software bits, contiguous, SH, NS, nG
    put(t2, 6, t3 | (1 << 61) | (1 << 63) | 3); // APTable[0] and NSTable: ignored
    put(t3, 11, (1 << 51) | (1 << 50) | 0x1234_c000 | AF | 3); // DBM, GP: ignored
    put(t2, 7, (1 << 51) | t3 | 3); // a table address above 48 bits
    type Want = Result<(u64, u64, bool, bool), (FaultKind, u8)>;
    let vectors: [(u64, u64, Want); 20] = [
        (t0, 0x80_4060_b000, Ok((0x1234_c000, 0x1000, false, false))),
        (t0, 0x80_40e0_0000, Err((FaultKind::AddressSizeOut, 2))),
        (t0, 0x80_4060_3abc, Ok((0x1234_5abc, 0x1000, false, false))),
        (
            t0,
            0x80_4092_3456,
            Ok((0x8012_3456, 0x20_0000, true, false)),
        ),
        (
            t0,
            0x80_bfff_fff8,
            Ok((0x1_7fff_fff8, 0x4000_0000, false, true)),
        ),
        (t0, 0x100_0000_1234, Ok((0x1234, 0x4000_0000, true, true))),
        (t0, 0x180_0000_0000, Err((FaultKind::Translation, 0))),
        (t0, 0x200_0000_0000, Err((FaultKind::Translation, 0))),
        (t0, 0x80_4060_5000, Err((FaultKind::AccessFlag, 3))),
        (t0, 0x80_4060_6000, Err((FaultKind::Translation, 3))),
        (t0, 0x80_4060_7000, Err((FaultKind::AddressSizeOut, 3))),
        (t0, 0x80_40a0_0000, Err((FaultKind::TableBus, 3))),
        (t0, 0x80_4060_8008, Ok((0x1234_9008, 0x1000, false, false))),
        (t0, 0x80_4060_9000, Ok((0x1234_a000, 0x1000, false, true))),
        (t0, 0x80_4060_a010, Ok((0x1234_b010, 0x1000, false, false))),
        (t0, 0x80_40c0_3004, Ok((0x1234_5004, 0x1000, false, false))),
        (t0, 0x80_4060_4000, Err((FaultKind::Translation, 3))),
        (t0, 1 << 48, Err((FaultKind::AddressSizeIn, 0))),
        (
            t0,
            0xffff_8000_0000_0000,
            Err((FaultKind::AddressSizeIn, 0)),
        ),
        (
            t0 | (1 << 48),
            0x80_4060_3abc,
            Err((FaultKind::AddressSizeOut, 0)),
        ),
    ];
    let read = |pa: u64| r.gpu.bus.read_u64(pa).ok();
    for (root, va, want) in vectors {
        assert_eq!(
            reference_walk(&read, root, va),
            want,
            "reference, va {va:#x}"
        );
        let mut reads = 0;
        let got = walk(&r.gpu.bus, root, va, Access::Read, &mut reads)
            .map(|t: Translation| (t.pa(va), t.size, t.read_only, t.no_exec))
            .map_err(|f| (f.kind, f.level));
        assert_eq!(got, want, "walk, va {va:#x}");
    }
}
