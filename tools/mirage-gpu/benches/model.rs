//! Benchmarks of the device model, measured side by side in one run:
//! MMU translation with a warm and a cold TLB, and command throughput.
//!
//! `cargo bench -p mirage-gpu` prints ns per operation and the ratios.

use mirage_gpu::device::Config;
use mirage_gpu::isa::{Builder, ATOMIC_INC32};
use mirage_gpu::mmu::{Access, AddressSpace, XlateStats};
use mirage_gpu::regs::*;
use mirage_gpu::rig::{Rig, RW};
use std::hint::black_box;
use std::time::Instant;

/// Best of `reps` runs of `f`, in nanoseconds per `ops`.
fn best(reps: usize, ops: u64, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn translation() {
    const PAGES: u64 = 4096;
    let mut r = Rig::with(Config {
        tlb_entries: 8192,
        ..Config::default()
    });
    r.setup_as(0, TRANSCFG_ENABLE);
    let pa = r.alloc(PAGES * 4096);
    r.map(0, 0x10_0000_0000, pa, PAGES * 4096, RW);
    let mut asp = AddressSpace::new(8192);
    asp.pending.transtab = r.roots[0];
    asp.pending.memattr = 0xf404_ff44;
    asp.pending.transcfg = TRANSCFG_ENABLE;
    asp.command(AS_CMD_UPDATE);
    // A fixed pseudo-random page order, so that nothing is sequential.
    let order: Vec<u64> = (0..PAGES).map(|i| (i * 2654435761) % PAGES).collect();
    let bus = r.gpu.bus.clone();
    let run = |flush: bool, asp: &mut AddressSpace| {
        for &p in &order {
            if flush {
                asp.tlb.invalidate_all();
            }
            let mut st = XlateStats::default();
            black_box(
                asp.translate(&bus, 0x10_0000_0000 + p * 4096 + 8, Access::Read, &mut st)
                    .unwrap(),
            );
        }
    };
    let cold = best(5, PAGES, || run(true, &mut asp));
    run(false, &mut asp); // warm it
    let warm = best(5, PAGES, || run(false, &mut asp));
    println!(
        "translate, warm TLB (hit):         {warm:8.1} ns/op  {:6.2} M/s",
        1e3 / warm
    );
    println!(
        "translate, cold TLB (4-level walk): {cold:8.1} ns/op  {:6.2} M/s",
        1e3 / cold
    );
    println!("  ratio cold/warm: {:.1}x", cold / warm);
}

fn commands() {
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 64);
    r.map_new(0, 0x100_0000, 8 << 20);
    // Small commands: STORE32s within one page (TLB hits).
    const N: u64 = 2000;
    let mut b = Builder::new();
    for i in 0..N {
        b = b.store32(0x100_0000 + (i % 1024) * 4, i as u32);
    }
    let store = best(5, N, || {
        r.submit(0, &b);
        r.run();
    });
    let mut b = Builder::new();
    for _ in 0..N {
        b = b.atomic(0x100_0000, ATOMIC_INC32, 0, 0, 0);
    }
    let atomic = best(5, N, || {
        r.submit(0, &b);
        r.run();
    });
    // Bulk: 4 MiB copy and 1 Mi-element SAXPY, in bytes.
    let copy = best(5, 4 << 20, || {
        r.submit(
            0,
            &Builder::new().copy(0x100_0000 + (4 << 20), 0x100_0000, 4 << 20),
        );
        r.run();
    });
    let saxpy = best(5, 4 << 20, || {
        r.submit(
            0,
            &Builder::new().saxpy(0x100_0000, 0x100_0000 + (4 << 20), 1 << 20, 2.0),
        );
        r.run();
    });
    println!(
        "STORE32 command:      {store:8.1} ns/op  {:6.2} M cmd/s",
        1e3 / store
    );
    println!(
        "ATOMIC INC32 command: {atomic:8.1} ns/op  {:6.2} M cmd/s",
        1e3 / atomic
    );
    println!("COPY 4 MiB:           {:8.2} GB/s", 1.0 / copy);
    println!("SAXPY 1 Mi floats:    {:8.2} GB/s of x", 1.0 / saxpy);
    println!("  ratio ATOMIC/STORE32: {:.2}x", atomic / store);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // and expects a quick exit.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    translation();
    commands();
}
