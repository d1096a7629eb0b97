//! The MMU through jobs: faults, the TLB and its invalidation.

use super::*;

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
    // A sign-extended ("upper half") VA: the same input-size fault.
    let (_, fs, _, addr) = fault_of(|_| {}, |_| Builder::new().store32(0xffff_8000_0000_1000, 1));
    assert_eq!((fault_code(fs), addr), (0xe0, 0xffff_8000_0000_1000));
    // An output address with bits 51:48 set: an output-size fault at the
    // leaf's level.
    let (_, fs, _, _) = fault_of(
        |r| r.map(0, 0x5000, 1 << 48, 4096, RW),
        |_| Builder::new().store32(0x5000, 1),
    );
    assert_eq!(fault_code(fs), 0xfb);
    // TRANSTAB above 48 bits: an output-size fault at level 0, not masked.
    let (_, fs, _, _) = fault_of(
        |r| {
            r.map_new(0, 0x5000, 4096);
            let root = r.roots[0] | (1 << 48);
            r.wr64(as_reg(0, AS_TRANSTAB_LO), root);
            r.as_cmd(0, AS_CMD_UPDATE);
        },
        |_| Builder::new().store32(0x5000, 1),
    );
    assert_eq!(fault_code(fs), 0xf8);
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

#[test]
fn walk_cache_reaches_a_freed_table_until_flushed() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    // Two pages under one level-3 table; a job touches the first only, so
    // the TLB holds it and the walk cache holds the tables on the way.
    let a = r.map_new(0, 0x20_0000, 2 * 4096);
    assert_eq!(r.exec(&Builder::new().store32(0x20_0000, 1)).1, JOB_OK);
    assert_eq!(r.peek32(a), 1);
    let root = r.roots[0];
    let desc = |r: &Rig, table: u64, level: u32| {
        r.peek64(table + ((0x20_0000u64 >> (39 - 9 * level)) & 511) * 8) & 0x0000_ffff_ffff_f000
    };
    let l1 = desc(&r, root, 0);
    let l2 = desc(&r, l1, 1);
    let l3 = desc(&r, l2, 2);
    // The driver frees the level-3 table (its level-2 entry goes) and the
    // table's memory is reused at once, before any invalidation: the
    // second page's entry now says `c`.
    r.clear_pte(root, 0x20_0000, 0x20_0000);
    let c = r.alloc(4096);
    r.poke(l3 + 8, &(c | 3 | 1 << 10).to_le_bytes());
    // A TLB miss walks from the cached table: the freed one.
    assert_eq!(r.exec(&Builder::new().store32(0x20_1000, 2)).1, JOB_OK);
    assert_eq!(
        (r.peek32(a + 4096), r.peek32(c)),
        (0, 2),
        "the walk did not use the cached table"
    );
    // A flush elsewhere keeps it; one over the table's span drops it, and
    // the walk meets the cleared level-2 entry.
    r.wr64(as_reg(0, AS_LOCKADDR_LO), 0x4000_0000 | 20);
    r.as_cmd(0, AS_CMD_FLUSH_RANGE);
    assert_eq!(r.exec(&Builder::new().store32(0x20_1000, 3)).1, JOB_OK);
    assert_eq!(r.peek32(c), 3);
    r.wr64(as_reg(0, AS_LOCKADDR_LO), 0x20_1000 | 11);
    r.as_cmd(0, AS_CMD_FLUSH_RANGE);
    let (_, st, fs) = r.exec(&Builder::new().store32(0x20_1000, 4));
    assert_eq!((st, fault_code(fs)), (JOB_MMU_FAULT, 0xc2));
    assert_eq!(r.peek32(c), 3);
}
