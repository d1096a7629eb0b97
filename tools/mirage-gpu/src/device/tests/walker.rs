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
        if (d >> 48) & 0xf != 0 {
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

    /// Random descriptor words at every level, valid or not.
    #[test]
    fn walker_matches_reference_on_random_descriptors(
        words in prop::collection::vec(any::<u64>(), 4),
        kinds in prop::collection::vec(0u64..4, 4),
        va in 0u64..(1 << 48),
    ) {
        let r = Rig::new();
        // Four tables, one per level; each level's slot for `va` holds a
        // random word whose type bits and output address are steered so
        // that walks go deep often.
        let tables: Vec<u64> = (0..5).map(|i| RAM_IOVA + 0x10_0000 + i * 4096).collect();
        for level in 0..4usize {
            let bits = [39, 30, 21, 12][level];
            let slot = tables[level] + ((va >> bits) & 0x1ff) * 8;
            let mut d = (words[level] & !3 & !(0xfffu64 << 48 >> 16)) | kinds[level];
            if kinds[level] == 3 && words[level] & 0x10 == 0 {
                // Point at the next table most of the time.
                d = (d & !0x0000_ffff_ffff_f000) | tables[level + 1];
            }
            r.poke(slot, &d.to_le_bytes());
        }
        check_walk(&r, tables[0], va);
    }
}
