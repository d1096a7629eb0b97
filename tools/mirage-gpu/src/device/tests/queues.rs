//! Queues: completion records, ordering, rings, abort-mode faults.

use super::*;

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

#[test]
fn queue_registers_are_latched_while_enabled_and_per_job() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_as(1, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let qr = |reg| queue_reg(0, reg);
    let latched = [
        Q_RING_BASE_LO,
        Q_RING_BASE_HI,
        Q_RING_SIZE,
        Q_AS,
        Q_COMPLETION_LO,
        Q_COMPLETION_HI,
    ];
    let before: Vec<u32> = latched
        .iter()
        .map(|&reg| {
            let v = r.rd(qr(reg));
            r.wr(qr(reg), 0x40);
            v
        })
        .collect();
    let after: Vec<u32> = latched.iter().map(|&reg| r.rd(qr(reg))).collect();
    assert_eq!(after, before, "writes while ENABLE is set are ignored");
    // A job keeps the AS and COMPLETION it started with, even across a
    // disable, reprogram and enable while it waits.
    let sem = r.map_new(0, 0x5000, 4096);
    let (_, comp, _) = r.ring[0].unwrap();
    let s = r.submit(
        0,
        &Builder::new()
            .sem_wait(0x5000, 1, SEM_EQ32)
            .store32(0x5004, 0x77),
    );
    r.run();
    assert_eq!(r.rd(qr(Q_STATUS)), Q_STATUS_RUNNING);
    r.wr(qr(Q_CONTROL), 0);
    let comp2 = r.alloc(4096);
    r.wr64(qr(Q_COMPLETION_LO), comp2);
    r.wr(qr(Q_AS), 1);
    assert_eq!(
        (r.rd(qr(Q_AS)), r.rd(qr(Q_COMPLETION_LO))),
        (1, comp2 as u32)
    );
    r.wr(qr(Q_CONTROL), Q_CONTROL_ENABLE);
    r.poke(sem, &1u32.to_le_bytes());
    r.run();
    assert_eq!(
        r.peek32(sem + 4),
        0x77,
        "ran in AS 0, where 0x5000 is mapped"
    );
    assert_eq!(r.peek64(comp), s);
    assert_eq!(r.peek(comp + 8, 8), [0; 8]);
    assert_eq!(r.peek64(comp2), 0, "the record went to the latched address");
}

#[test]
fn enable_is_refused_without_a_usable_completion_address() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    let ring = r.alloc(16 * JOB_DESC_SIZE);
    let qr = |reg| queue_reg(0, reg);
    r.wr64(qr(Q_RING_BASE_LO), ring);
    r.wr(qr(Q_RING_SIZE), 16);
    for bad in [0u64, RAM_IOVA + 8] {
        r.wr64(qr(Q_COMPLETION_LO), bad);
        r.wr(qr(Q_CONTROL), Q_CONTROL_ENABLE);
        assert_eq!(r.rd(qr(Q_CONTROL)), 0, "COMPLETION {bad:#x}");
        assert_eq!(r.rd(qr(Q_STATUS)), Q_STATUS_DISABLED);
        assert_eq!(r.rd(qr(Q_ERROR)), Q_ERROR_BAD_COMPLETION);
    }
    // Nothing runs, so nothing lands at bus address 0 or anywhere else.
    r.wr(db_queue(0), 1);
    assert_eq!(r.run(), 0);
    let comp = r.alloc(COMPLETION_SIZE);
    r.wr64(qr(Q_COMPLETION_LO), comp);
    r.wr(qr(Q_CONTROL), Q_CONTROL_ENABLE);
    assert_eq!(r.rd(qr(Q_CONTROL)), 1);
    assert_eq!(r.rd(qr(Q_STATUS)), Q_STATUS_IDLE);
    assert_eq!(r.rd(qr(Q_ERROR)), 0);
}

#[test]
fn a_tail_more_than_a_ring_ahead_stops_the_queue() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 4);
    r.wr(IRQ_MASK, IRQ_QUEUE_ERROR);
    let pa = r.map_new(0, 0x5000, 4096);
    for _ in 0..4 {
        r.queue_job(0, &Builder::new().atomic(0x5000, ATOMIC_INC32, 0, 0, 0), 0);
    }
    // Five jobs claimed in a ring of four: slot 0 would run twice.
    r.wr(db_queue(0), 5);
    r.run();
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_FAULTED);
    assert_eq!(r.rd(queue_reg(0, Q_ERROR)), Q_ERROR_RING_OVERRUN);
    assert_eq!(r.rd(queue_reg(0, Q_HEAD)), 0);
    assert_eq!(r.rd(QUEUE_ERROR_STATUS), 1);
    assert_eq!(r.completion(0), (0, 0, 0), "no job ran, no record");
    assert_eq!(r.peek32(pa), 0);
    // Exactly a ring's worth is fine.
    r.doorbell(0);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    r.run();
    assert_eq!(r.completion(0), (4, JOB_OK, 0));
    assert_eq!(r.peek32(pa), 4);
}

#[test]
fn guest_values_near_the_top_of_the_address_space_fail_cleanly() {
    // A ring whose slot address would wrap: DMA_ERROR, no panic.
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.wr64(queue_reg(0, Q_RING_BASE_LO), 0); // ignored: enabled
    r.wr(queue_reg(0, Q_CONTROL), 0);
    r.wr64(queue_reg(0, Q_RING_BASE_LO), u64::MAX - 63);
    r.wr(queue_reg(0, Q_CONTROL), Q_CONTROL_ENABLE);
    // Slot 1 is past the end of the address space.
    r.wr(db_queue(0), 1);
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESET);
    r.wr(db_queue(0), 2);
    r.run();
    assert_eq!(r.completion(0), (0, JOB_DMA_ERROR, 0));
    // A command buffer at the top of the address space: a fault, no panic.
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let s = r.queue_desc(0, u64::MAX - 7, 16, 0);
    r.doorbell(0);
    r.run();
    let (seq, st, fs) = r.completion(0);
    assert_eq!((seq, st, fault_code(fs)), (s, JOB_MMU_FAULT, 0xe0));
    // MMIO offsets that would wrap read as zero and ignore writes.
    let mut b = [0xffu8; 8];
    r.gpu.mmio_read(u64::MAX - 3, &mut b);
    assert_eq!(b, [0; 8]);
    r.gpu.mmio_write(u64::MAX - 7, &[1; 8]);
}

#[test]
fn a_fault_queue_without_a_tail_address_reports_nothing() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(0, 0, 16);
    let base = r.alloc(4 * FAULT_RECORD_SIZE);
    r.wr64(FAULTQ_BASE_LO, base);
    r.wr(FAULTQ_SIZE, 4); // FAULTQ_TAIL_WB left 0
    let s = r.submit(0, &Builder::new().store32(0x8_0000, 1));
    r.run();
    let (seq, st, fs) = r.completion(0);
    assert_eq!((seq, st, fault_code(fs)), (s, JOB_MMU_FAULT, 0xc0));
    assert_eq!(r.rd(FAULTQ_TAIL), 0);
    assert_eq!(r.peek(base, 32), [0; 32]);
}

#[test]
fn jobs_failed_unstarted_report_their_own_seqno() {
    // AS out of range: the descriptor is read, the job fails with its seqno.
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let s = r.queue_job(0, &Builder::new().nop(), 0);
    r.wr(queue_reg(0, Q_CONTROL), 0);
    r.wr(queue_reg(0, Q_AS), N_AS as u32);
    r.wr(queue_reg(0, Q_CONTROL), Q_CONTROL_ENABLE);
    r.doorbell(0);
    r.run();
    assert_eq!(r.completion(0), (s, JOB_INVALID_COMMAND, 0));
    // A reserved flag bit, or a reserved byte: INVALID_COMMAND, own seqno.
    for (i, (flag, byte)) in [
        (1u32 << 1, None),
        (1 << 31, None),
        (0, Some(24)),
        (0, Some(63)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = Rig::new();
        r.setup_as(0, TRANSCFG_ENABLE);
        r.setup_queue(0, 0, 16);
        let pa = r.map_new(0, 0x5000, 4096);
        let s = r.queue_job(0, &Builder::new().store32(0x5000, 1), JOB_FLAG_IRQ | flag);
        if let Some(b) = byte {
            let (ring, _, _) = r.ring[0].unwrap();
            r.poke(ring + b, &[0x80]);
        }
        r.doorbell(0);
        r.run();
        assert_eq!(r.completion(0), (s, JOB_INVALID_COMMAND, 0), "case {i}");
        assert_eq!(r.peek32(pa), 0, "case {i}: the job ran");
    }
    // A ring that cannot be read: nothing to take a seqno from.
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let (ring, _, _) = r.ring[0].unwrap();
    r.gpu.bus.inject_error(ring, 4096);
    r.submit(0, &Builder::new().nop());
    r.run();
    assert_eq!(r.completion(0), (0, JOB_DMA_ERROR, 0));
}

#[test]
fn a_misaligned_ring_fails_its_jobs_unread() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let pa = r.map_new(0, 0x5000, 4096);
    let (ring, _, _) = r.ring[0].unwrap();
    r.queue_job(0, &Builder::new().store32(0x5000, 1), 0);
    r.wr(queue_reg(0, Q_CONTROL), 0);
    // Read there, the slot would be an empty job that completes OK.
    r.wr64(queue_reg(0, Q_RING_BASE_LO), ring + 32);
    r.wr(queue_reg(0, Q_CONTROL), Q_CONTROL_ENABLE);
    r.doorbell(0);
    r.run();
    assert_eq!(r.completion(0), (0, JOB_INVALID_COMMAND, 0));
    assert_eq!(r.peek32(pa), 0);
}
