//! Host tests of the device model: a driver's-eye rig over test-owned
//! memory, with its own page-table builder (independent of the walker).

use super::*;
use crate::isa::Builder;
use crate::mmu::{walk, Translation};
use crate::rig::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn fault_code(status: u32) -> u32 {
    status & 0xff
}
fn fault_access(status: u32) -> u32 {
    (status >> 8) & 3
}

// --- registers ---------------------------------------------------------------

#[test]
fn identity_registers() {
    let r = Rig::new();
    assert_eq!(r.rd(ID), 0x4741_524d);
    assert_eq!(r.rd(VERSION), 0x0001_0001);
    assert_eq!(r.rd(FEATURES), 0x7f);
    assert_eq!(r.rd(VRAM_SIZE_LO), 64 << 20);
    assert_eq!(r.rd(VRAM_SIZE_HI), 0);
    assert_eq!(r.rd(VA_BITS), 48);
    assert_eq!(r.rd(PGSIZE_BITMAP), 0x4020_1000);
    assert_eq!(r.rd(VRAM_BASE_HI), 0x8000);
    assert_eq!(r.rd(VRAM_BASE_LO), 0);
    assert_eq!(r.rd(NUM_AS), 16);
    assert_eq!(r.rd(NUM_QUEUES), 8);
    assert_eq!(r.rd(TLB_ENTRIES), 64);
}

#[test]
fn read_only_registers_ignore_writes() {
    let r = Rig::new();
    for off in [
        ID,
        VERSION,
        FEATURES,
        VRAM_SIZE_LO,
        VA_BITS,
        IRQ_STATUS,
        PING_COUNT,
        RESET_COUNT,
        NUM_AS,
    ] {
        let before = r.rd(off);
        r.wr(off, 0xdead_beef);
        assert_eq!(r.rd(off), before, "offset {off:#x}");
    }
}

#[test]
fn scratch_and_narrow_accesses() {
    let r = Rig::new();
    r.wr(SCRATCH, 0x1234_5678);
    assert_eq!(r.rd(SCRATCH), 0x1234_5678);
    let mut b = [0u8; 2];
    r.gpu.mmio_read(SCRATCH + 2, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0x1234);
    r.gpu.mmio_write(SCRATCH + 1, &9u32.to_le_bytes());
    r.gpu.mmio_write(SCRATCH, &[1, 2]);
    assert_eq!(r.rd(SCRATCH), 0x1234_5678);
    let mut b = [0xffu8; 3];
    r.gpu.mmio_read(SCRATCH, &mut b);
    assert_eq!(b, [0; 3]);
    r.gpu.mmio_read(BAR0_SIZE, &mut b);
    assert_eq!(b, [0; 3]);
    r.gpu.reset();
    assert_eq!(r.rd(SCRATCH), 0);
}

#[test]
fn ping_interrupt_masking_and_clear() {
    let r = Rig::new();
    r.wr(DB_PING, 0xabcd);
    assert_eq!(r.rd(IRQ_RAWSTAT), IRQ_PING);
    assert_eq!(r.rd(IRQ_STATUS), 0);
    assert_eq!((r.rd(PING_COUNT), r.rd(PING_VALUE)), (1, 0xabcd));
    assert_eq!(r.irqs.get(0), 0);
    r.wr(IRQ_MASK, IRQ_PING); // unmasking a latched source interrupts at once
    assert_eq!(r.irqs.get(0), 1);
    r.wr(DB_PING, 2);
    assert_eq!(r.irqs.get(0), 2);
    r.wr(IRQ_CLEAR, IRQ_PING);
    assert_eq!((r.rd(IRQ_RAWSTAT), r.rd(IRQ_STATUS)), (0, 0));
    r.wr(IRQ_MASK, 0);
    r.wr(IRQ_MASK, IRQ_PING);
    assert_eq!(r.irqs.get(0), 2, "nothing latched, no interrupt");
    r.wr(IRQ_MASK, u32::MAX);
    assert_eq!(r.rd(IRQ_MASK), IRQ_ALL);
}

#[test]
fn injected_bad_id_and_dropped_irqs() {
    let r = Rig::with(Config {
        inject: "bad-id,drop-irqs".parse().unwrap(),
        ..Config::default()
    });
    assert_eq!(r.rd(ID), 0xb8be_adb2);
    r.wr(IRQ_MASK, IRQ_PING);
    r.wr(DB_PING, 1);
    assert_eq!(r.rd(IRQ_STATUS), IRQ_PING);
    assert_eq!(r.irqs.get(0), 0);
    assert_eq!(
        "bogus".parse::<Inject>(),
        Err("unknown injection 'bogus'".into())
    );
    // Dropping the next N only.
    let r = Rig::new();
    r.wr(IRQ_MASK, IRQ_PING);
    r.gpu.drop_next_irqs(2);
    for _ in 0..3 {
        r.wr(DB_PING, 1);
    }
    assert_eq!(r.irqs.get(0), 1);
    assert_eq!(r.gpu.stats.irqs_dropped.load(Ordering::Relaxed), 2);
}

#[test]
fn dma_fill_writes_guest_memory_and_checks_range() {
    let mut r = Rig::new();
    let pa = r.alloc(8192);
    r.wr(IRQ_MASK, IRQ_DMA);
    let fill = |r: &Rig, addr: u64, len: u32, pat: u32| {
        r.wr64(DMA_ADDR_LO, addr);
        r.wr(DMA_LEN, len);
        r.wr(DMA_PATTERN, pat);
        r.wr(DB_DMA_FILL, 1);
        r.rd(DMA_STATUS)
    };
    assert_eq!(fill(&r, pa + 0xff0, 24, 0xcafe_f00d), DMA_DONE);
    assert_eq!(r.peek(pa + 0xfec, 4), [0; 4]);
    for i in 0..6 {
        assert_eq!(r.peek32(pa + 0xff0 + 4 * i), 0xcafe_f00d);
    }
    assert_eq!(r.peek(pa + 0xff0 + 24, 4), [0; 4]);
    for len in [0, 6, DMA_MAX_LEN + 4] {
        assert_eq!(fill(&r, pa, len, 1), DMA_INVALID, "len {len}");
    }
    let end = RAM_IOVA + RAM_SIZE as u64;
    assert_eq!(fill(&r, end - 16, 32, 0xffff_ffff), DMA_FAULT);
    assert_eq!(
        r.peek(end - 16, 16),
        [0; 16],
        "a faulting fill writes nothing"
    );
    assert_eq!(r.irqs.get(0), 5);
}

// --- the MMU -----------------------------------------------------------------

#[test]
fn jobs_write_through_pages_and_blocks() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let page = r.alloc(4096);
    let block2m = r.alloc_aligned(2 << 20, 2 << 20);
    let root = r.roots[0];
    r.set_pte(root, 0x1000_0000, page, 4096, RW);
    r.set_pte(root, 0x4020_0000, block2m, 2 << 20, RW);
    // A 1 GiB block mapping VRAM.
    r.set_pte(root, 0x80_0000_0000, VRAM_BASE, 1 << 30, RW);
    let b = Builder::new()
        .store32(0x1000_0ffc, 0x1111_1111)
        .store32(0x4020_0000 + 0x1f_fff8, 0x2222_2222)
        .store64(0x80_0000_0000 + 0x3f_0008, 0x3333_3333_4444_4444);
    assert_eq!(r.exec(&b), (1, JOB_OK, 0));
    assert_eq!(r.peek32(page + 0xffc), 0x1111_1111);
    assert_eq!(r.peek32(block2m + 0x1f_fff8), 0x2222_2222);
    assert_eq!(r.peek64(VRAM_BASE + 0x3f_0008), 0x3333_3333_4444_4444);
    // VRAM is what the BAR2 memfd holds.
    let mut v = [0u8; 8];
    r.gpu.bus.vram.read(0x3f_0008, &mut v);
    assert_eq!(u64::from_le_bytes(v), 0x3333_3333_4444_4444);
}

/// Runs one store to `va` on a fresh rig with one mapping set up by `f`;
/// returns the completion (status, fault status) and AS 0's latched fault.
fn fault_of(f: impl FnOnce(&mut Rig), cmds: impl FnOnce(&Rig) -> Builder) -> (u32, u32, u32, u64) {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    f(&mut r);
    let b = cmds(&r);
    let (_, status, fstatus) = r.exec(&b);
    (
        status,
        fstatus,
        r.rd(as_reg(0, AS_FAULTSTATUS)),
        u64::from(r.rd(as_reg(0, AS_FAULTADDRESS_LO)))
            | (u64::from(r.rd(as_reg(0, AS_FAULTADDRESS_HI))) << 32),
    )
}

#[test]
fn unmapped_address_is_a_translation_fault_at_the_missing_level() {
    let (st, fs, latched, addr) = fault_of(|_| {}, |_| Builder::new().store32(0x1234_5678, 1));
    assert_eq!(st, JOB_MMU_FAULT);
    // The root is empty: level 0 is missing.
    assert_eq!(fault_code(fs), 0xc0);
    assert_eq!(fault_access(fs), Access::Write as u32);
    assert_eq!(latched, fs);
    assert_eq!(addr, 0x1234_5678);
    // Tables present down to level 3, leaf missing: level 3.
    let (_, fs, _, _) = fault_of(
        |r| {
            r.map_new(0, 0x1234_6000, 4096);
        },
        |_| Builder::new().store32(0x1234_5678, 1),
    );
    assert_eq!(fault_code(fs), 0xc3);
}

#[test]
fn permission_access_flag_size_and_bus_faults() {
    // Write to read-only.
    let (st, fs, _, _) = fault_of(
        |r| {
            let pa = r.alloc(4096);
            r.map(0, 0x5000, pa, 4096, Prot { ro: true, ..RW });
        },
        |_| Builder::new().store32(0x5000, 1),
    );
    assert_eq!(
        (st, fault_code(fs), fault_access(fs)),
        (JOB_MMU_FAULT, 0xcb, Access::Write as u32)
    );
    // Access flag clear.
    let (_, fs, _, _) = fault_of(
        |r| {
            let pa = r.alloc(4096);
            r.map(0, 0x5000, pa, 4096, Prot { no_af: true, ..RW });
        },
        |_| Builder::new().store32(0x5000, 1),
    );
    assert_eq!(fault_code(fs), 0xdb);
    // VA above 48 bits.
    let (_, fs, _, addr) = fault_of(|_| {}, |_| Builder::new().store32(1 << 48, 1));
    assert_eq!((fault_code(fs), addr), (0xe0, 1 << 48));
    // A table pointer to memory nobody backs: a bus fault on the table walk.
    let (_, fs, _, _) = fault_of(
        |r| {
            let root = r.roots[0];
            r.poke(root, &(0x7000_0000_0000u64 | 3).to_le_bytes());
        },
        |_| Builder::new().store32(0x1000, 1),
    );
    assert_eq!(fault_code(fs), 0xd1);
    // A leaf pointing at nothing: a data bus fault, nothing written.
    let (_, fs, _, _) = fault_of(
        |r| r.map(0, 0x5000, 0x7000_0000_0000, 4096, RW),
        |_| Builder::new().store32(0x5000, 1),
    );
    assert_eq!(fault_code(fs), 0xf0);
}

#[test]
fn fetch_from_no_exec_memory_faults_as_execute() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let b = Builder::new().nop();
    let pa = r.alloc(4096);
    r.poke(pa, &b.bytes());
    r.map(0, 0x9000, pa, 4096, Prot { xn: true, ..RW });
    r.queue_desc(0, 0x9000, 8, 0);
    r.doorbell(0);
    r.run();
    let (_, st, fs) = r.completion(0);
    assert_eq!(
        (st, fault_code(fs), fault_access(fs)),
        (JOB_MMU_FAULT, 0xcb, Access::Execute as u32)
    );
}

#[test]
fn translation_disabled_faults_every_access() {
    let mut r = Rig::new();
    r.setup_as(0, 0);
    r.setup_queue(0, 0, 16);
    r.submit(0, &Builder::new().nop());
    r.run();
    let (_, st, fs) = r.completion(0);
    assert_eq!(
        (st, fault_code(fs), fault_access(fs)),
        (JOB_MMU_FAULT, 0xc0, Access::Execute as u32)
    );
}

#[test]
fn tlb_serves_stale_translations_until_flushed() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let a = r.map_new(0, 0x20_0000, 4096);
    let b = r.alloc(4096);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 1)).1, JOB_OK);
    assert_eq!(r.peek32(a), 1);
    // Remap to `b` without invalidating: the device still writes `a`.
    let root = r.roots[0];
    r.set_pte(root, 0x20_0000, b, 4096, RW);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 2)).1, JOB_OK);
    assert_eq!((r.peek32(a), r.peek32(b)), (2, 0), "stale TLB entry used");
    // A range flush elsewhere changes nothing; one over the page does.
    r.wr64(as_reg(0, AS_LOCKADDR_LO), 0x4000_0000 | 11);
    r.as_cmd(0, AS_CMD_FLUSH_RANGE);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 3)).1, JOB_OK);
    assert_eq!((r.peek32(a), r.peek32(b)), (3, 0));
    r.wr64(as_reg(0, AS_LOCKADDR_LO), 0x20_0000 | 11);
    r.as_cmd(0, AS_CMD_FLUSH_RANGE);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 4)).1, JOB_OK);
    assert_eq!((r.peek32(a), r.peek32(b)), (3, 4));
    // Unmap without a flush: still reachable. After FLUSH_PT: a fault.
    r.clear_pte(root, 0x20_0000, 4096);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 5)).1, JOB_OK);
    assert_eq!(r.peek32(b), 5);
    r.as_cmd(0, AS_CMD_FLUSH_PT);
    let (_, st, fs) = r.exec(&Builder::new().store32(0x20_0000, 6));
    assert_eq!((st, fault_code(fs)), (JOB_MMU_FAULT, 0xc3));
    assert_eq!(r.peek32(b), 5);
}

#[test]
fn translation_registers_take_effect_only_on_update() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let a = r.map_new(0, 0x3000, 4096);
    // A second table tree mapping the same VA elsewhere.
    let root2 = r.alloc(4096);
    let b = r.alloc(4096);
    r.set_pte(root2, 0x3000, b, 4096, RW);
    r.wr64(as_reg(0, AS_TRANSTAB_LO), root2);
    assert_eq!(r.exec(&Builder::new().store32(0x3000, 7)).1, JOB_OK);
    assert_eq!(
        (r.peek32(a), r.peek32(b)),
        (7, 0),
        "TRANSTAB is latched by UPDATE only"
    );
    r.as_cmd(0, AS_CMD_UPDATE);
    r.roots[0] = root2;
    // The job's command buffer must be reachable in the new tree too.
    assert_eq!(r.exec(&Builder::new().store32(0x3000, 8)).1, JOB_OK);
    assert_eq!((r.peek32(a), r.peek32(b)), (7, 8));
}

#[test]
fn small_tlb_evicts_and_counts_misses() {
    let mut r = Rig::with(Config {
        tlb_entries: 1,
        ..Config::default()
    });
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let a = r.map_new(0, 0x10_0000, 4096);
    let b = r.map_new(0, 0x20_0000, 4096);
    let c = r.alloc(4096);
    assert_eq!(
        r.exec(&Builder::new().store32(0x10_0000, 1).store32(0x20_0000, 1))
            .1,
        JOB_OK
    );
    // Remap the first page without a flush: its entry was evicted by the
    // second page and the command fetch, so the new mapping is walked.
    let root = r.roots[0];
    r.set_pte(root, 0x10_0000, c, 4096, RW);
    let misses = r.gpu.stats.tlb_misses.load(Ordering::Relaxed);
    assert_eq!(r.exec(&Builder::new().store32(0x10_0000, 2)).1, JOB_OK);
    assert_eq!((r.peek32(a), r.peek32(b), r.peek32(c)), (1, 1, 2));
    assert!(r.gpu.stats.tlb_misses.load(Ordering::Relaxed) > misses);
}

// --- the walker against a reference decoder ---------------------------------

/// An independent model of a VMSAv8-64 stage-1 walk, written from the
/// architecture's descriptor tables rather than from `walk`.
fn reference_walk(
    read: &dyn Fn(u64) -> Option<u64>,
    ttbr: u64,
    va: u64,
) -> Result<(u64, u64, bool, bool), (FaultKind, u8)> {
    if va >= 1 << 48 {
        return Err((FaultKind::AddressSize, 0));
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
            return Err((FaultKind::AddressSize, level));
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

// --- commands, bit-exact -----------------------------------------------------

#[test]
fn stores_copy_fill_checksum() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    // Source and destination span pages whose physical pages are not adjacent.
    let src_va = 0x100_0000;
    let dst_va = 0x200_0000;
    let mut src_pa = Vec::new();
    for i in 0..3u64 {
        let pa = r.alloc(4096);
        r.alloc(4096); // a gap, so the pages are not contiguous
        r.map(0, src_va + i * 4096, pa, 4096, RW);
        src_pa.push(pa);
    }
    let dst_pa = r.map_new(0, dst_va, 3 * 4096);
    let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 + 3) as u8).collect();
    for (i, pa) in src_pa.iter().enumerate() {
        r.poke(*pa, &data[i * 4096..(i + 1) * 4096]);
    }
    let out_va = 0x300_0000;
    let out_pa = r.map_new(0, out_va, 4096);
    let b = Builder::new()
        .copy(dst_va + 100, src_va + 50, 10_000)
        .fill(dst_va + 10_200, 64, 0xa5a5_5a5a)
        .store32(out_va, 0x0102_0304)
        .store64(out_va + 8, 0x1122_3344_5566_7788)
        .checksum(src_va + 1, 8000, out_va + 16)
        .fence_write(out_va + 24, 0xfe);
    assert_eq!(r.exec(&b), (1, JOB_OK, 0));
    let dst = r.peek(dst_pa, 3 * 4096);
    assert_eq!(&dst[..100], &[0u8; 100][..]);
    assert_eq!(&dst[100..10_100], &data[50..10_050]);
    assert_eq!(&dst[10_100..10_200], &[0u8; 100][..]);
    for w in dst[10_200..10_264].chunks(4) {
        assert_eq!(w, 0xa5a5_5a5au32.to_le_bytes());
    }
    assert_eq!(r.peek(out_pa, 8), [4, 3, 2, 1, 0, 0, 0, 0]);
    assert_eq!(r.peek64(out_pa + 8), 0x1122_3344_5566_7788);
    // FNV-1a 64, computed here independently of the device.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in &data[1..8001] {
        h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
    }
    assert_eq!(r.peek64(out_pa + 16), h);
    assert_eq!(r.peek64(out_pa + 24), 0xfe);
}

#[test]
fn atomics_return_old_values() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let va = 0x40_0000;
    let pa = r.map_new(0, va, 4096);
    r.poke(pa, &10u32.to_le_bytes());
    r.poke(pa + 8, &u64::MAX.to_le_bytes());
    r.poke(pa + 16, &5u64.to_le_bytes());
    let res = va + 0x100;
    let b = Builder::new()
        .atomic(va, ATOMIC_ADD32, 0xffff_fffe, 0, res) // 10 + (-2) = 8
        .atomic(va, ATOMIC_INC32, 0, 0, res + 8)
        .atomic(va + 8, ATOMIC_INC64, 0, 0, res + 16) // wraps to 0
        .atomic(va + 16, ATOMIC_CMPXCHG64, 99, 5, res + 24) // succeeds
        .atomic(va + 16, ATOMIC_CMPXCHG64, 7, 5, res + 32) // fails: is 99
        .atomic(va + 24, ATOMIC_ADD64, 1 << 40, 0, 0)
        .atomic(va + 32, ATOMIC_CMPXCHG32, 3, 0, res + 40);
    assert_eq!(r.exec(&b), (1, JOB_OK, 0));
    assert_eq!(r.peek32(pa), 9);
    assert_eq!(r.peek64(pa + 8), 0);
    assert_eq!(r.peek64(pa + 16), 99);
    assert_eq!(r.peek64(pa + 24), 1 << 40);
    assert_eq!(r.peek32(pa + 32), 3);
    let o = |i: u64| r.peek64(pa + 0x100 + 8 * i);
    assert_eq!(r.peek32(pa + 0x100), 10);
    assert_eq!(r.peek32(pa + 0x108), 8);
    assert_eq!((o(2), o(3), o(4)), (u64::MAX, 5, 99));
    assert_eq!(r.peek32(pa + 0x128), 0);
    // Misaligned or unknown atomics are invalid commands, with no effect.
    let (_, st, _) = r.exec(&Builder::new().atomic(va + 2, ATOMIC_ADD32, 1, 0, 0));
    assert_eq!(st, JOB_INVALID_COMMAND);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    let (_, st, _) = r.exec(&Builder::new().atomic(va, 17, 1, 0, 0));
    assert_eq!(st, JOB_INVALID_COMMAND);
    assert_eq!(r.peek32(pa), 9);
}

#[test]
fn atomics_policy_follows_memory_attributes() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let nc = r.alloc(4096);
    r.map(
        0,
        0x1000,
        nc,
        4096,
        Prot {
            attr: ATTR_NC,
            ..RW
        },
    );
    let wb = r.alloc(4096);
    r.map(
        0,
        0x2000,
        wb,
        4096,
        Prot {
            attr: ATTR_WB,
            ..RW
        },
    );
    r.set_pte(
        r.roots[0],
        0x3000,
        VRAM_BASE,
        4096,
        Prot {
            attr: ATTR_NC,
            ..RW
        },
    );
    // Cacheable system memory and VRAM take atomics.
    let b =
        Builder::new()
            .atomic(0x2000, ATOMIC_INC32, 0, 0, 0)
            .atomic(0x3000, ATOMIC_INC32, 0, 0, 0);
    assert_eq!(r.exec(&b).1, JOB_OK);
    assert_eq!(r.peek32(wb), 1);
    assert_eq!(r.peek32(VRAM_BASE), 1);
    // Uncached system memory refuses them: a fault of access type atomic.
    let (_, st, fs) = r.exec(&Builder::new().atomic(0x1000, ATOMIC_INC32, 0, 0, 0));
    assert_eq!(
        (st, fault_code(fs), fault_access(fs)),
        (JOB_MMU_FAULT, 0xeb, Access::Atomic as u32)
    );
    assert_eq!(r.peek32(nc), 0);
    // Plain stores to uncached memory are fine.
    r.wr(MMU_FAULT_CLEAR, 1);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    assert_eq!(r.exec(&Builder::new().store32(0x1000, 5)).1, JOB_OK);
    assert_eq!(r.peek32(nc), 5);
    // A read-only page refuses atomics as a permission fault.
    let ro = r.alloc(4096);
    r.map(0, 0x4000, ro, 4096, Prot { ro: true, ..RW });
    let (_, _, fs) = r.exec(&Builder::new().atomic(0x4000, ATOMIC_INC32, 0, 0, 0));
    assert_eq!(
        (fault_code(fs), fault_access(fs)),
        (0xcb, Access::Atomic as u32)
    );
}

#[test]
fn saxpy_timestamp_and_sem_wait() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let n = 3000u64;
    let x = r.map_new(0, 0x10_0000, n * 4);
    let y = r.map_new(0, 0x20_0000, n * 4);
    let xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.25).collect();
    let ys: Vec<f32> = (0..n).map(|i| (i as f32).sqrt()).collect();
    r.poke(
        x,
        &xs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
    );
    r.poke(
        y,
        &ys.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
    );
    let t = r.map_new(0, 0x30_0000, 4096);
    let b = Builder::new()
        .timestamp(0x30_0000)
        .saxpy(0x10_0000, 0x20_0000, n, 1.5)
        .timestamp(0x30_0008);
    assert_eq!(r.exec(&b).1, JOB_OK);
    let out = r.peek(y, (n * 4) as usize);
    for i in 0..n as usize {
        let got = f32::from_le_bytes(out[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(
            got.to_bits(),
            1.5f32.mul_add(xs[i], ys[i]).to_bits(),
            "element {i}"
        );
    }
    let (t0, t1) = (r.peek64(t), r.peek64(t + 8));
    assert!(t0 > 0 && t1 > t0, "timestamps {t0} {t1}");

    // SEM_WAIT blocks the queue until the value is reached.
    let sem = r.map_new(0, 0x40_0000, 4096);
    let s = r.submit(
        0,
        &Builder::new()
            .sem_wait(0x40_0000, 3, SEM_GE32)
            .store32(0x40_0008, 1),
    );
    r.run();
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_RUNNING);
    assert_ne!(r.completion(0).0, s);
    r.poke(sem, &2u32.to_le_bytes());
    r.run();
    assert_ne!(r.completion(0).0, s);
    r.poke(sem, &3u32.to_le_bytes());
    r.run();
    assert_eq!(r.completion(0), (s, JOB_OK, 0));
    assert_eq!(r.peek32(sem + 8), 1);
}

#[test]
fn malformed_command_streams_are_invalid() {
    let bad = [
        Builder::new().raw(0x0001_00ff),                   // unknown opcode
        Builder::new().raw(header(OP_NOP, 0) | 0x100),     // flags set
        Builder::new().raw(header(OP_NOP, 0) | (1 << 40)), // reserved bits set
        Builder::new()
            .raw(u64::from(OP_STORE32) | (2 << 16))
            .raw(0)
            .raw(0), // wrong length
        Builder::new().raw(header(OP_STORE64, 2)).raw(0x1000), // runs past the buffer
        Builder::new().fill(0x1000, 6, 0),                 // unaligned fill length
        Builder::new().copy(0, 0, MAX_LEN + 1),            // too long
    ];
    for (i, b) in bad.iter().enumerate() {
        let mut r = Rig::new();
        r.setup_as(0, TRANSCFG_ENABLE);
        r.setup_queue(0, 0, 16);
        r.map_new(0, 0x1000, 4096);
        let (_, st, fs) = r.exec(b);
        assert_eq!((st, fs), (JOB_INVALID_COMMAND, 0), "case {i}");
        assert_eq!(r.rd(queue_reg(0, Q_ERROR)), JOB_INVALID_COMMAND);
        assert_eq!(r.rd(QUEUE_ERROR_STATUS), 1);
    }
    // END stops before the rest.
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x1000, 4096);
    assert_eq!(
        r.exec(&Builder::new().store32(0x1000, 1).end().store32(0x1000, 2))
            .1,
        JOB_OK
    );
    assert_eq!(r.peek32(pa), 1);
}

// --- queues, fences, ordering -----------------------------------------------

#[test]
fn completion_record_follows_every_write_of_the_job() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    let s = r.submit(
        0,
        &Builder::new()
            .store32(0x5000, 1)
            .store32(0x5004, 2)
            .store32(0x5008, 3),
    );
    // One command at a time: the record appears only after the last write.
    let mut seen = Vec::new();
    loop {
        let before = r.completion(0).0;
        if r.gpu.step_queue(0) != Step::Progress {
            break;
        }
        seen.push((before, r.peek(pa, 12)));
    }
    assert_eq!(r.completion(0), (s, JOB_OK, 0));
    for (seq, _) in &seen {
        assert_eq!(*seq, 0, "record written early");
    }
    assert_eq!(r.peek(pa, 12), [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(r.rd(JOB_DONE_STATUS), 1);
    assert_eq!(r.rd(IRQ_RAWSTAT) & IRQ_JOB, IRQ_JOB);
}

#[test]
fn jobs_complete_in_order_with_interrupts_only_when_asked() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.wr(IRQ_MASK, IRQ_JOB);
    let pa = r.map_new(0, 0x5000, 4096);
    let mut seqs = Vec::new();
    for i in 0..5u32 {
        let flags = if i == 4 { JOB_FLAG_IRQ } else { 0 };
        seqs.push(r.queue_job(
            0,
            &Builder::new().atomic(
                0x5000,
                ATOMIC_ADD32,
                u64::from(i),
                0,
                0x5000 + 8 + 4 * u64::from(i),
            ),
            flags,
        ));
    }
    r.doorbell(0);
    r.run();
    assert_eq!(r.completion(0), (5, JOB_OK, 0));
    assert_eq!(r.irqs.get(0), 1, "only the flagged job interrupts");
    // Each job saw the sum of the jobs before it: they ran in ring order.
    let olds: Vec<u32> = (0..5).map(|i| r.peek32(pa + 8 + 4 * i)).collect();
    assert_eq!(olds, [0, 0, 1, 3, 6]);
    assert_eq!(r.rd(queue_reg(0, Q_HEAD)), 5);
}

#[test]
fn rings_wrap_including_the_index() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 4);
    // Start the free-running indices just below 2^32.
    r.wr(db_queue(0), u32::MAX - 2);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESET);
    r.tail[0] = u32::MAX - 2;
    assert_eq!(r.rd(queue_reg(0, Q_HEAD)), u32::MAX - 2);
    let pa = r.map_new(0, 0x5000, 4096);
    let mut done = 0;
    for batch in 0..5 {
        for _ in 0..3 {
            r.queue_job(0, &Builder::new().atomic(0x5000, ATOMIC_INC32, 0, 0, 0), 0);
        }
        r.doorbell(0);
        r.run();
        done += 3;
        assert_eq!(r.completion(0), (done, JOB_OK, 0), "batch {batch}");
    }
    assert_eq!(r.peek32(pa), 15);
    assert_eq!(r.rd(queue_reg(0, Q_HEAD)), (u32::MAX - 2).wrapping_add(15));
}

#[test]
fn abort_mode_latches_the_fault_until_cleared() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.setup_queue(1, 0, 16);
    r.wr(IRQ_MASK, IRQ_ALL);
    let pa = r.map_new(0, 0x5000, 4096);
    let s = r.submit(0, &Builder::new().store32(0xdead_0000, 1));
    r.run();
    assert_eq!(r.completion(0).0, s);
    assert_eq!(r.rd(MMU_FAULT_STATUS), 1);
    assert_eq!(r.rd(as_reg(0, AS_STATUS)), AS_STATUS_FAULTED);
    assert_eq!(r.rd(as_reg(0, AS_FAULTADDRESS_LO)), 0xdead_0000);
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_FAULTED);
    assert_eq!(r.rd(QUEUE_ERROR_STATUS), 1);
    assert_eq!(
        r.rd(IRQ_RAWSTAT) & (IRQ_MMU | IRQ_QUEUE_ERROR),
        IRQ_MMU | IRQ_QUEUE_ERROR
    );
    // Another queue on the faulted AS does not start until the fault is cleared.
    let s1 = r.submit(1, &Builder::new().store32(0x5000, 9));
    r.run();
    assert_ne!(r.completion(1).0, s1);
    r.wr(MMU_FAULT_CLEAR, 1);
    r.run();
    assert_eq!(r.completion(1), (s1, JOB_OK, 0));
    assert_eq!(r.peek32(pa), 9);
    // The faulted queue waits for RESUME.
    let s2 = r.submit(0, &Builder::new().store32(0x5004, 7));
    r.run();
    assert_ne!(r.completion(0).0, s2);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    r.run();
    assert_eq!(r.completion(0), (s2, JOB_OK, 0));
    assert_eq!((r.rd(MMU_FAULT_STATUS), r.rd(QUEUE_ERROR_STATUS)), (0, 0));
}

// --- stall and replay --------------------------------------------------------

struct FaultRec {
    va: u64,
    status: u32,
    as_idx: u32,
    id: u32,
    queue: u32,
}

fn setup_faultq(r: &mut Rig, entries: u32) -> (u64, u64) {
    let base = r.alloc(u64::from(entries) * FAULT_RECORD_SIZE);
    let wb = r.alloc(8);
    r.wr64(FAULTQ_BASE_LO, base);
    r.wr64(FAULTQ_TAIL_WB_LO, wb);
    r.wr(FAULTQ_SIZE, entries);
    (base, wb)
}

fn read_fault(r: &Rig, base: u64, idx: u32, entries: u32) -> FaultRec {
    let b = r.peek(base + u64::from(idx % entries) * FAULT_RECORD_SIZE, 32);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    FaultRec {
        va: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        status: u32_at(8),
        as_idx: u32_at(12),
        id: u32_at(16),
        queue: u32_at(20),
    }
}

#[test]
fn stalled_faults_resume_after_the_driver_maps() {
    let mut r = Rig::new();
    r.setup_as(3, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(2, 3, 16);
    r.wr(IRQ_MASK, IRQ_ALL);
    let (base, wb) = setup_faultq(&mut r, 8);
    let s = r.submit(
        2,
        &Builder::new()
            .store32(0x7000_1000, 0x5151)
            .store32(0x7000_1004, 0x5252),
    );
    r.run();
    assert_eq!(r.rd(queue_reg(2, Q_STATUS)), Q_STATUS_STALLED);
    assert_eq!(r.peek32(wb), 1, "tail written back");
    let f = read_fault(&r, base, 0, 8);
    assert_eq!((f.va, f.as_idx, f.queue), (0x7000_1000, 3, 2));
    assert_eq!(
        (fault_code(f.status), fault_access(f.status), f.status >> 16),
        (0xc0, Access::Write as u32, 2)
    );
    assert_eq!(r.rd(IRQ_RAWSTAT) & IRQ_PAGE_FAULT, IRQ_PAGE_FAULT);
    assert_eq!(r.rd(MMU_FAULT_STATUS), 0, "stall mode latches nothing");
    // Map the page, answer, and the job replays the access.
    let pa = r.map_new(3, 0x7000_1000, 4096);
    r.wr(DB_FAULTQ_HEAD, 1);
    r.wr(DB_FAULT_RESPONSE, f.id);
    r.run();
    assert_eq!(r.completion(2), (s, JOB_OK, 0));
    assert_eq!((r.peek32(pa), r.peek32(pa + 4)), (0x5151, 0x5252));
}

#[test]
fn stalled_faults_can_be_aborted_and_several_can_be_outstanding() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_as(1, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(0, 0, 16);
    r.setup_queue(1, 1, 16);
    let (base, _) = setup_faultq(&mut r, 4);
    let s0 = r.submit(0, &Builder::new().copy(0x9_0000, 0x8_0000, 16));
    let s1 = r.submit(1, &Builder::new().store64(0xa_0000, 42));
    r.run();
    let f0 = read_fault(&r, base, 0, 4);
    let f1 = read_fault(&r, base, 1, 4);
    assert_eq!(
        (f0.queue, f0.va, fault_access(f0.status)),
        (0, 0x8_0000, Access::Read as u32)
    );
    assert_eq!(
        (f1.queue, f1.va, fault_access(f1.status)),
        (1, 0xa_0000, Access::Write as u32)
    );
    assert_ne!(f0.id, f1.id);
    // Answer the second first: queue 1 resumes, queue 0 stays stalled.
    let pa = r.map_new(1, 0xa_0000, 4096);
    r.wr(DB_FAULT_RESPONSE, f1.id);
    r.run();
    assert_eq!(r.completion(1), (s1, JOB_OK, 0));
    assert_eq!(r.peek64(pa), 42);
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_STALLED);
    // Abort the first: the job fails with the fault it stalled on.
    r.wr(DB_FAULT_RESPONSE, f0.id | FAULT_RESPONSE_ABORT);
    r.run();
    let (seq, st, fs) = r.completion(0);
    assert_eq!((seq, st, fs), (s0, JOB_MMU_FAULT, f0.status));
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_FAULTED);
}

#[test]
fn a_full_fault_queue_fails_the_job() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(0, 0, 16);
    r.setup_queue(1, 0, 16);
    r.setup_queue(2, 0, 16);
    setup_faultq(&mut r, 2);
    for q in 0..3 {
        r.submit(q, &Builder::new().store32(0x1_0000 + q as u64 * 4096, 1));
    }
    r.run();
    assert_eq!(r.rd(FAULTQ_TAIL), 2);
    assert_eq!(r.rd(queue_reg(2, Q_STATUS)), Q_STATUS_FAULTED);
    assert_eq!(r.completion(2).1, JOB_MMU_FAULT);
}

// --- hang, reset, injection --------------------------------------------------

#[test]
fn a_hung_job_is_cleared_by_a_queue_reset() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    let hung = r.submit(
        0,
        &Builder::new().store32(0x5000, 1).hang().store32(0x5000, 2),
    );
    r.run();
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_RUNNING);
    assert_ne!(r.completion(0).0, hung);
    assert_eq!(r.peek32(pa), 1);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESET);
    let next = r.submit(0, &Builder::new().store32(0x5004, 3));
    r.run();
    assert_eq!(r.completion(0), (next, JOB_OK, 0));
    assert_eq!(
        (r.peek32(pa), r.peek32(pa + 4)),
        (1, 3),
        "the hung job never went on"
    );
}

#[test]
fn soft_reset_clears_queues_address_spaces_and_tlbs() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    r.wr(IRQ_MASK, IRQ_ALL);
    r.exec(&Builder::new().store32(0x5000, 1));
    r.submit(0, &Builder::new().hang());
    r.run();
    r.wr(SCRATCH, 5);
    r.wr(GPU_COMMAND, GPU_CMD_SOFT_RESET);
    assert_eq!(r.rd(RESET_COUNT), 1);
    assert_eq!(r.rd(IRQ_RAWSTAT), IRQ_RESET);
    assert_eq!(r.rd(IRQ_MASK), 0);
    assert_eq!(r.rd(SCRATCH), 0);
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_DISABLED);
    assert_eq!(r.rd(queue_reg(0, Q_RING_SIZE)), 0);
    assert_eq!(r.rd(as_reg(0, AS_TRANSCFG)), 0);
    assert_eq!(r.gpu.stats.resets.load(Ordering::Relaxed), 1);
    // After reprogramming, the old TLB contents are gone: a remap is seen at once.
    let root = r.roots[0];
    let b = r.alloc(4096);
    r.set_pte(root, 0x5000, b, 4096, RW);
    r.ring[0] = None;
    assert_eq!(r.exec(&Builder::new().store32(0x5000, 2)).1, JOB_OK);
    assert_eq!((r.peek32(pa), r.peek32(b)), (1, 2));
}

#[test]
fn injected_dma_errors_fail_jobs() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    r.gpu.bus.inject_error(pa + 0x800, 4);
    let (_, st, fs) = r.exec(&Builder::new().store32(0x5800, 1));
    assert_eq!((st, fault_code(fs)), (JOB_MMU_FAULT, 0xf0));
    r.gpu.bus.clear_errors();
    r.wr(MMU_FAULT_CLEAR, 1);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    // An error on the ring itself: the job cannot even be read.
    let (ring, _, _) = r.ring[0].unwrap();
    r.gpu.bus.inject_error(ring, 4096);
    r.submit(0, &Builder::new().nop());
    r.run();
    assert_eq!(r.completion(0).1, JOB_DMA_ERROR);
    assert_eq!(r.rd(queue_reg(0, Q_ERROR)), JOB_DMA_ERROR);
}

#[test]
fn delayed_jobs_wait() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.map_new(0, 0x5000, 4096);
    assert_eq!(crate::control::handle(&r.gpu, "delay 0 40"), "ok");
    let s = r.submit(0, &Builder::new().store32(0x5000, 1));
    r.run();
    assert_ne!(r.completion(0).0, s);
    std::thread::sleep(Duration::from_millis(50));
    r.run();
    assert_eq!(r.completion(0).0, s);
}

#[test]
fn control_commands() {
    let r = Rig::new();
    assert!(crate::control::handle(&r.gpu, "stats").starts_with("ok walks=0 "));
    assert_eq!(crate::control::handle(&r.gpu, "drop-irqs 3"), "ok");
    assert_eq!(
        crate::control::handle(&r.gpu, "inject-dma-error 0x1000 16"),
        "ok"
    );
    assert!(r.gpu.bus.read_u32(0x1008).is_err());
    assert_eq!(crate::control::handle(&r.gpu, "clear-dma-errors"), "ok");
    assert!(crate::control::handle(&r.gpu, "delay 9 1").starts_with("error"));
    assert!(crate::control::handle(&r.gpu, "bogus").starts_with("error"));
}

#[test]
fn engine_threads_run_queues_concurrently() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    let pa = r.map_new(0, 0x5000, 4096);
    for q in 0..4 {
        r.setup_queue(q, 0, 64);
    }
    let handles = r.gpu.start_engines();
    let mut last = [0u64; 4];
    for (q, last) in last.iter_mut().enumerate() {
        for _ in 0..50 {
            *last = r.queue_job(q, &Builder::new().atomic(0x5000, ATOMIC_INC32, 0, 0, 0), 0);
        }
        r.doorbell(q);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..4).any(|q| r.completion(q).0 != last[q]) {
        assert!(Instant::now() < deadline, "engines did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(r.peek32(pa), 200);
    r.gpu.stop();
    for h in handles {
        h.join().unwrap();
    }
}
