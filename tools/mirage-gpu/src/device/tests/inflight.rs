//! Flushes and UPDATE against commands in flight on engine threads.

use super::*;
use std::sync::mpsc;

/// Waits for queue `q`'s completion record to show `seq`.
fn wait_done(r: &Rig, q: usize, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.completion(q).0 != seq {
        assert!(Instant::now() < deadline, "queue {q} did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_flush_returns_only_when_no_command_uses_the_old_translations() {
    const LEN: u64 = 64 << 10;
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let src = r.map_new(0, 0x100_0000, LEN);
    let dst = r.map_new(0, 0x200_0000, LEN);
    r.poke(src, &[0x5a; LEN as usize]);
    // Once the COPY has translated both ranges and starts reading, tell
    // the test, then take a while before writing.
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    r.gpu
        .bus
        .set_access_hook(Some(Arc::new(move |pa, _, write| {
            if !write && pa == src {
                if let Some(tx) = tx.lock().unwrap().take() {
                    tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })));
    let engines = r.gpu.start_engines();
    let s = r.submit(0, &Builder::new().copy(0x200_0000, 0x100_0000, LEN));
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A correct unmap: clear the PTEs, flush, then free the pages, which
    // the next owner overwrites at once.
    let root = r.roots[0];
    for off in (0..LEN).step_by(4096) {
        r.clear_pte(root, 0x200_0000 + off, 4096);
    }
    r.as_cmd(0, AS_CMD_FLUSH_PT);
    r.poke(dst, &[0xee; LEN as usize]);
    wait_done(&r, 0, s);
    r.gpu.stop();
    for e in engines {
        e.join().unwrap();
    }
    r.gpu.bus.set_access_hook(None);
    assert_eq!(r.completion(0), (s, JOB_OK, 0));
    assert!(
        r.peek(dst, LEN as usize).iter().all(|&b| b == 0xee),
        "the COPY wrote into pages freed after the flush"
    );
}

#[test]
fn waiting_commands_do_not_hold_off_flushes_or_resets() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    r.setup_queue(1, 0, 16);
    r.map_new(0, 0x5000, 4096);
    let engines = r.gpu.start_engines();
    r.submit(0, &Builder::new().sem_wait(0x5000, 1, SEM_EQ32));
    r.submit(1, &Builder::new().hang());
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..2).any(|q| r.rd(queue_reg(q, Q_STATUS)) != Q_STATUS_RUNNING) {
        assert!(Instant::now() < deadline, "jobs did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let gpu = r.gpu.clone();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        for cmd in [AS_CMD_FLUSH_PT, AS_CMD_FLUSH_MEM, AS_CMD_UPDATE] {
            gpu.write_reg(as_reg(0, AS_COMMAND), cmd);
        }
        gpu.write_reg(GPU_COMMAND, GPU_CMD_SOFT_RESET);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a flush or reset waited for a waiting command");
    t.join().unwrap();
    assert_eq!(r.rd(RESET_COUNT), 1);
    r.gpu.stop();
    for e in engines {
        e.join().unwrap();
    }
}
