//! Benchmarks of the device model, with criterion: MMU translation with a
//! warm and a cold TLB side by side, and command throughput.
//!
//! `cargo bench -p mirage-gpu` measures; `cargo test --benches` runs each
//! benchmark once as a smoke test.

use criterion::{BenchmarkId, Criterion, Throughput};
use mirage_gpu::device::Config;
use mirage_gpu::isa::{Builder, ATOMIC_INC32, JOB_FLAG_IRQ};
use mirage_gpu::mmu::{Access, AddressSpace, XlateStats};
use mirage_gpu::regs::*;
use mirage_gpu::rig::{Rig, MAIR, RW};
use std::hint::black_box;

/// Translation of 4096 pages in a fixed pseudo-random order (nothing
/// sequential), through a TLB that holds them all ("warm TLB (hit)") or
/// that is emptied before each ("cold TLB (4-level walk)").
fn translation(c: &mut Criterion) {
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
    asp.pending.memattr = MAIR;
    asp.pending.transcfg = TRANSCFG_ENABLE;
    asp.command(AS_CMD_UPDATE);
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
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(PAGES));
    g.bench_function("cold TLB (4-level walk)", |b| {
        b.iter(|| run(true, &mut asp))
    });
    run(false, &mut asp); // warm it
    g.bench_function("warm TLB (hit)", |b| b.iter(|| run(false, &mut asp)));
    g.finish();
}

/// Whole jobs on queue 0, run to completion on the calling thread: small
/// commands (2000 STORE32 or ATOMIC INC32 in one page: TLB hits) and bulk
/// ones (a 4 MiB COPY, a 1 Mi-element SAXPY).
fn commands(c: &mut Criterion) {
    const N: u64 = 2000;
    let mut r = Rig::new();
    r.setup_as(0, TRANSCFG_ENABLE);
    r.setup_queue(0, 0, 64);
    r.map_new(0, 0x100_0000, 8 << 20);
    let stores = (0..N).fold(Builder::new(), |b, i| {
        b.store32(0x100_0000 + (i % 1024) * 4, i as u32)
    });
    let atomics = (0..N).fold(Builder::new(), |b, _| {
        b.atomic(0x100_0000, ATOMIC_INC32, 0, 0, 0)
    });
    let copy = Builder::new().copy(0x100_0000 + (4 << 20), 0x100_0000, 4 << 20);
    let saxpy = Builder::new().saxpy(0x100_0000, 0x100_0000 + (4 << 20), 1 << 20, 2.0);
    let jobs = [
        ("small", "STORE32", stores, Throughput::Elements(N)),
        ("small", "ATOMIC INC32", atomics, Throughput::Elements(N)),
        ("bulk", "COPY 4 MiB", copy, Throughput::Bytes(4 << 20)),
        (
            "bulk",
            "SAXPY 1 Mi floats",
            saxpy,
            Throughput::Bytes(4 << 20),
        ),
    ];
    for group in ["small", "bulk"] {
        let mut g = c.benchmark_group(format!("commands/{group}"));
        for (_, name, cmds, tp) in jobs.iter().filter(|j| j.0 == group) {
            // One command buffer per job, queued again for every iteration.
            let (va, len) = r.load_cmds(0, cmds);
            g.throughput(tp.clone());
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    r.queue_desc(0, va, len, JOB_FLAG_IRQ);
                    r.doorbell(0);
                    r.run();
                })
            });
            assert_eq!(r.completion(0).1, JOB_OK, "{name}");
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    translation(&mut c);
    commands(&mut c);
    c.final_summary();
}
