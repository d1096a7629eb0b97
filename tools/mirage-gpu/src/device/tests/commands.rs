//! Commands, checked bit-exact.

use super::*;

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

#[test]
fn a_header_past_the_buffer_end_is_invalid_without_a_fetch() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    // Four bytes at the end of a mapped page; the next page is unmapped, so
    // fetching a header there would fault.
    let pa = r.map_new(0, 0x9000, 4096);
    r.poke(pa + 0xffc, &[0; 4]);
    let s = r.queue_desc(0, 0x9ffc, 4, 0);
    r.doorbell(0);
    r.run();
    assert_eq!(r.completion(0), (s, JOB_INVALID_COMMAND, 0));
    assert_eq!(r.rd(MMU_FAULT_STATUS), 0);
    // A NOP followed by a 4-byte tail: the NOP runs, the tail is invalid.
    r.wr(queue_reg(0, Q_COMMAND), Q_CMD_RESUME);
    r.poke(pa + 0xff0, &Builder::new().nop().bytes());
    let s = r.queue_desc(0, 0x9ff0, 12, 0);
    r.doorbell(0);
    r.run();
    assert_eq!(r.completion(0), (s, JOB_INVALID_COMMAND, 0));
}

#[test]
fn sem_wait_backs_off_exponentially() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 16);
    let sem = r.map_new(0, 0x5000, 4096);
    let s = r.submit(0, &Builder::new().sem_wait(0x5000, 1, SEM_GE32));
    // Start the job and reach the SEM_WAIT.
    while r.gpu.step_queue(0) == Step::Progress {}
    let mut waits = vec![];
    for _ in 0..9 {
        match r.gpu.step_queue(0) {
            Step::Waiting(Some(d)) => waits.push(d.as_micros()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 4000, 4000, 4000]);
    // Met: the interval starts over for the next wait.
    r.poke(sem, &1u32.to_le_bytes());
    r.run();
    assert_eq!(r.completion(0), (s, JOB_OK, 0));
}
