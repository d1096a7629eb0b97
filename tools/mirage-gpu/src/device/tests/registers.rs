//! Global registers, interrupts and the DMA fill.

use super::*;

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

#[test]
fn without_bus_mastering_nothing_reaches_memory() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    r.wr(IRQ_MASK, IRQ_ALL);
    r.gpu.set_bus_master(false);
    // DMA fill.
    r.wr64(DMA_ADDR_LO, pa);
    r.wr(DMA_LEN, 16);
    r.wr(DMA_PATTERN, 0x1234_5678);
    r.wr(DB_DMA_FILL, 1);
    assert_eq!(r.rd(DMA_STATUS), DMA_FAULT);
    // A job: the descriptor cannot be fetched, nor the record written.
    let s = r.submit(0, &Builder::new().store32(0x5000, 1));
    r.run();
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_FAULTED);
    assert_eq!(r.rd(queue_reg(0, Q_ERROR)), JOB_DMA_ERROR);
    assert_eq!(r.completion(0), (0, 0, 0), "completion record written");
    assert_eq!(r.peek(pa, 16), [0; 16]);
    // Page walks and data accesses fail too.
    let mut reads = 0;
    let f = crate::mmu::walk(&r.gpu.bus, r.roots[0], 0x5000, Access::Read, &mut reads);
    assert_eq!(
        f.map_err(|f| (f.kind, f.level)),
        Err((FaultKind::TableBus, 0))
    );
    assert!(r.gpu.bus.write_u32(pa, 1).is_err());
    // Sources latch but no MSI-X message goes out.
    assert_eq!(
        r.rd(IRQ_RAWSTAT) & (IRQ_DMA | IRQ_QUEUE_ERROR),
        IRQ_DMA | IRQ_QUEUE_ERROR
    );
    assert_eq!(r.irqs.get(0), 0);
    // With bus mastering back, the queue resumes where it stopped.
    r.gpu.set_bus_master(true);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    let s2 = r.submit(0, &Builder::new().store32(0x5000, 2));
    r.run();
    assert!(s2 > s);
    assert_eq!(r.completion(0), (s2, JOB_OK, 0));
    assert_eq!(r.peek32(pa), 2);
}
