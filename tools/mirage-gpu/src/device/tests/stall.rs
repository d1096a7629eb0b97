//! Stall-and-replay faults and the page-fault queue.

use super::*;

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

#[test]
fn back_to_back_answers_each_reach_their_own_queue() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(0, 0, 16);
    r.setup_queue(1, 0, 16);
    let (base, _) = setup_faultq(&mut r, 4);
    let s0 = r.submit(0, &Builder::new().store32(0x8_0000, 0xa0));
    let s1 = r.submit(1, &Builder::new().store32(0x9_0000, 0xa1));
    r.run();
    let f0 = read_fault(&r, base, 0, 4);
    let f1 = read_fault(&r, base, 1, 4);
    assert_eq!((f0.queue, f1.queue), (0, 1));
    let p0 = r.map_new(0, 0x8_0000, 4096);
    let p1 = r.map_new(0, 0x9_0000, 4096);
    r.wr(DB_FAULTQ_HEAD, 2);
    // Both answers before either engine steps, in the other order.
    r.wr(DB_FAULT_RESPONSE, f1.id);
    r.wr(DB_FAULT_RESPONSE, f0.id);
    r.run();
    assert_eq!(r.completion(0), (s0, JOB_OK, 0));
    assert_eq!(r.completion(1), (s1, JOB_OK, 0));
    assert_eq!((r.peek32(p0), r.peek32(p1)), (0xa0, 0xa1));
    // An answer to a fault nobody is stalled on is ignored.
    r.wr(DB_FAULT_RESPONSE, f0.id | FAULT_RESPONSE_ABORT);
    let s = r.submit(0, &Builder::new().store32(0x8_0004, 1));
    r.run();
    assert_eq!(r.completion(0), (s, JOB_OK, 0));
}

#[test]
fn an_answer_before_the_queue_reads_stalled_is_kept() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE | TRANSCFG_STALL);
    r.setup_queue(0, 0, 16);
    let (base, wb) = setup_faultq(&mut r, 4);
    r.wr(IRQ_MASK, IRQ_PAGE_FAULT);
    // A handler that answers from the interrupt itself, which the device
    // raises before the engine has marked the queue STALLED.
    let gpu = Arc::downgrade(&r.gpu);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    r.irqs.set_hook(Some(Box::new(move |_| {
        let Some(gpu) = gpu.upgrade() else { return };
        let rd = |pa| {
            let mut b = [0u8; 4];
            gpu.bus.mem.read(pa, &mut b).unwrap();
            u32::from_le_bytes(b)
        };
        let tail = rd(wb);
        let id = rd(base + u64::from((tail - 1) % 4) * FAULT_RECORD_SIZE + 16);
        seen2
            .lock()
            .unwrap()
            .push(gpu.read_reg(queue_reg(0, Q_STATUS)));
        gpu.write_reg(DB_FAULTQ_HEAD, tail);
        gpu.write_reg(DB_FAULT_RESPONSE, id | FAULT_RESPONSE_ABORT);
    })));
    let s = r.submit(0, &Builder::new().store32(0x8_0000, 1));
    r.run();
    r.irqs.set_hook(None);
    assert_eq!(*seen.lock().unwrap(), [Q_STATUS_RUNNING]);
    // The single-threaded loop stops when a step only waits; an engine
    // thread would have been kicked by the answer.
    r.run();
    let f = read_fault(&r, base, 0, 4);
    assert_eq!(r.completion(0), (s, JOB_MMU_FAULT, f.status));
    assert_eq!(r.rd(queue_reg(0, Q_STATUS)), Q_STATUS_FAULTED);
}

#[test]
fn fault_queue_addresses_are_latched_while_it_is_on() {
    let mut r = Rig::new();
    let (base, wb) = setup_faultq(&mut r, 4);
    for reg in [
        FAULTQ_BASE_LO,
        FAULTQ_BASE_HI,
        FAULTQ_TAIL_WB_LO,
        FAULTQ_TAIL_WB_HI,
    ] {
        r.wr(reg, 0x40);
    }
    assert_eq!(
        (r.rd(FAULTQ_BASE_LO), r.rd(FAULTQ_BASE_HI)),
        (base as u32, 0)
    );
    assert_eq!(
        (r.rd(FAULTQ_TAIL_WB_LO), r.rd(FAULTQ_TAIL_WB_HI)),
        (wb as u32, 0)
    );
    // Off, they take writes again.
    r.wr(FAULTQ_SIZE, 0);
    r.wr64(FAULTQ_BASE_LO, 0x1_0000_0040);
    assert_eq!((r.rd(FAULTQ_BASE_LO), r.rd(FAULTQ_BASE_HI)), (0x40, 1));
}
