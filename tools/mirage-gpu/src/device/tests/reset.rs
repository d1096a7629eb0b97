//! Hangs, resets, fault injection, the control socket and engine threads.

use super::*;

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
    // Inside the rig's RAM, so that only the injection can make it fail.
    let at = RAM_IOVA + 0x1000;
    assert!(r.gpu.bus.read_u32(at + 8).is_ok());
    assert_eq!(
        crate::control::handle(&r.gpu, &format!("inject-dma-error {at:#x} 16")),
        "ok"
    );
    assert!(r.gpu.bus.read_u32(at + 8).is_err());
    assert!(r.gpu.bus.read_u32(at + 12).is_err());
    assert!(r.gpu.bus.read_u32(at + 16).is_ok(), "the neighbour after");
    assert!(r.gpu.bus.read_u32(at - 4).is_ok(), "the neighbour before");
    assert_eq!(crate::control::handle(&r.gpu, "clear-dma-errors"), "ok");
    assert!(r.gpu.bus.read_u32(at + 8).is_ok());
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

#[test]
fn a_poisoned_device_lock_is_not_recovered() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let m = std::sync::Mutex::new(0u32);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = m.lock().unwrap();
        panic!("a device thread dies holding the lock");
    }));
    assert!(m.is_poisoned());
    assert!(catch_unwind(AssertUnwindSafe(|| *lock(&m))).is_err());
}
