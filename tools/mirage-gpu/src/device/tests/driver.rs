//! The kernel driver's register sequences (drivers/gpu/drm/mirage: reset.rs
//! quiesce, probe's self-tests, unbind), replayed word for word, twice:
//! a second bind must find the device as usable as the first.

use super::*;

const MAIR: u64 = 0xf404_ff44;
const PTE_PAGE: u64 = 0b11 | (1 << 10) | (1 << 2);
const PTE_TABLE: u64 = 0b11;
const COOKIE: u64 = 0x0123_4567_89ab_cdef;

/// reset.rs: quiesce(): stop every queue, switch every AS off, soft reset
/// (polling RESET_COUNT), clear interrupts.
fn quiesce(r: &Rig) {
    r.wr(IRQ_MASK, 0);
    for q in 0..N_QUEUES as u64 {
        r.wr(queue_reg(q, Q_CONTROL), 0);
        r.wr(queue_reg(q, Q_COMMAND), Q_CMD_RESET);
    }
    for a in 0..N_AS as u64 {
        r.wr(as_reg(a, AS_TRANSCFG), 0);
        r.wr(as_reg(a, AS_COMMAND), AS_CMD_UPDATE);
    }
    let before = r.rd(RESET_COUNT);
    r.wr(GPU_COMMAND, GPU_CMD_SOFT_RESET);
    assert_ne!(
        r.rd(RESET_COUNT),
        before,
        "reset not done when the write returned"
    );
    r.wr(IRQ_CLEAR, u32::MAX);
}

/// selftest.rs: mmu_job(), on 16 pages aligned to 64 KiB.
fn mmu_job(r: &mut Rig) {
    const CMD: u64 = 4;
    const RING: u64 = 5;
    const DONE: u64 = 6;
    const DATA: u64 = 7;
    let base = r.alloc_aligned(16 * 4096, 16 * 4096);
    let page = |i: u64| base + i * 4096;
    let w64 = |r: &Rig, pa: u64, v: u64| r.poke(pa, &v.to_le_bytes());
    for level in 0..3 {
        let idx = (page(CMD) >> (39 - 9 * level)) & 511;
        w64(r, page(level) + idx * 8, page(level + 1) | PTE_TABLE);
    }
    for p in CMD..=DATA {
        w64(r, page(3) + ((page(p) >> 12) & 511) * 8, page(p) | PTE_PAGE);
    }
    let data = page(DATA);
    let cmds = Builder::new()
        .store32(data, 0x5eed_0001)
        .store64(data + 8, COOKIE)
        .fill(data + 64, 256, 0xa5a5_5a5a)
        .atomic(data + 16, ATOMIC_INC32, 0, 0, data + 20)
        .bytes();
    r.poke(page(CMD), &cmds);
    w64(r, page(RING), page(CMD));
    w64(
        r,
        page(RING) + 8,
        cmds.len() as u64 | (u64::from(JOB_FLAG_IRQ) << 32),
    );
    w64(r, page(RING) + 16, 1);
    w64(r, data + 16, 41);

    r.wr64(as_reg(0, AS_TRANSTAB_LO), page(0));
    r.wr64(as_reg(0, AS_MEMATTR_LO), MAIR);
    r.wr(as_reg(0, AS_TRANSCFG), TRANSCFG_ENABLE);
    r.wr(as_reg(0, AS_COMMAND), AS_CMD_UPDATE);
    r.wr64(queue_reg(0, Q_RING_BASE_LO), page(RING));
    r.wr(queue_reg(0, Q_RING_SIZE), 2);
    r.wr(queue_reg(0, Q_AS), 0);
    r.wr64(queue_reg(0, Q_COMPLETION_LO), page(DONE));
    r.wr(queue_reg(0, Q_CONTROL), Q_CONTROL_ENABLE);
    r.wr(IRQ_MASK, IRQ_PING | IRQ_DMA | IRQ_JOB | IRQ_QUEUE_ERROR);
    let irqs = r.irqs.get(0);
    r.wr(db_queue(0), 1);
    r.run();
    assert_eq!(r.irqs.get(0), irqs + 1, "no job interrupt");
    r.wr(queue_reg(0, Q_CONTROL), 0);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESET);
    r.wr(as_reg(0, AS_TRANSCFG), 0);
    r.wr(as_reg(0, AS_COMMAND), AS_CMD_UPDATE);

    assert_eq!((r.peek64(page(DONE)), r.peek32(page(DONE) + 8)), (1, 0));
    assert_eq!(r.peek64(data), 0x5eed_0001);
    assert_eq!(r.peek64(data + 8), COOKIE);
    assert_eq!(r.peek64(data + 16), 42 | (41 << 32));
    for i in 0..32 {
        assert_eq!(r.peek64(data + 64 + 8 * i), 0xa5a5_5a5a_a5a5_5a5a);
    }
    assert_eq!(r.peek64(data + 320), 0);
}

fn probe(r: &mut Rig) {
    assert_eq!(r.rd(ID), ID_MAGIC);
    quiesce(r);
    r.gpu.set_bus_master(true);
    // Interrupt self-test.
    r.wr(IRQ_MASK, IRQ_PING);
    let irqs = r.irqs.get(0);
    r.wr(DB_PING, 0x1234);
    assert_eq!(r.irqs.get(0), irqs + 1);
    // DMA self-test.
    let buf = r.alloc(4096);
    r.wr64(DMA_ADDR_LO, buf);
    r.wr(DMA_LEN, 4096);
    r.wr(DMA_PATTERN, 0x6d69_7261);
    r.wr(DB_DMA_FILL, 1);
    assert_eq!(r.rd(DMA_STATUS), DMA_DONE);
    assert!(r
        .peek(buf, 4096)
        .chunks(4)
        .all(|w| w == 0x6d69_7261u32.to_le_bytes()));
    mmu_job(r);
}

fn unbind(r: &Rig) {
    quiesce(r);
    // pci_disable_device() clears bus mastering.
    r.gpu.set_bus_master(false);
}

#[test]
fn the_drivers_probe_unbind_probe_cycle_works() {
    let mut r = Rig::new();
    // The rig powers on as a driver that already set bus mastering; start
    // from the state a fresh boot leaves instead.
    r.gpu.set_bus_master(false);
    probe(&mut r);
    unbind(&r);
    probe(&mut r);
    unbind(&r);
    assert_eq!(r.rd(RESET_COUNT), 4);
}

#[test]
fn probe_recovers_a_device_left_running() {
    let mut r = Rig::new();
    // A previous driver instance left a queue running a hung job, in an
    // address space with a fault latched, and was unloaded without a reset.
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.submit(0, &Builder::new().hang());
    r.submit(0, &Builder::new().store32(0xdead_0000, 1));
    r.run();
    r.gpu.set_bus_master(false);
    r.ring[0] = None;
    probe(&mut r);
}
