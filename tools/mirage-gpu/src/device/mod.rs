//! The mirage GPU: register file, address spaces, job queues, the page-fault
//! queue and reset. `Documentation/gpu/mirage.rst` is its manual.
//!
//! It is transport-independent: the vfio-user server and the host tests
//! drive it through [`Gpu::mmio_read`] and [`Gpu::mmio_write`]. Queues run
//! either on engine threads ([`Gpu::start_engines`]) or, for deterministic
//! tests, on the caller's thread ([`Gpu::run_until_idle`]).
//!
//! The hardware blocks live in submodules: [`mmio`] decodes BAR0,
//! [`queue`] holds the queue state machine, [`engine`] steps it,
//! [`exec`] is the command set, [`vmem`] the memory a command sees through
//! an address space, [`faults`] the fault latch and the page-fault queue.
//!
//! Lock order: a queue's `exec`, then an address space's `inflight` guard,
//! then the queue's `qregs`, then an address space, then `globals`;
//! `answers` is taken alone. Interrupts are signalled with no lock but
//! `exec` held. MMIO handlers never take `exec` except for resets, which
//! wait at most for one command to finish.

mod dma_fill;
mod engine;
mod exec;
mod faults;
mod irq;
mod mmio;
mod queue;
mod stats;
mod vmem;

pub use engine::Step;
pub use queue::{JobStatus, QStatus};
pub use stats::Stats;

use crate::bus::Bus;
use crate::dma::GuestMemory;
use crate::irq::IrqSink;
use crate::mmu::AddressSpace;
use crate::regs::*;
use crate::vram::Vram;
use queue::{Exec, QueueRegs};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Instant;

/// Faults a test can inject to prove the driver notices them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inject {
    /// [`ID`] reads back a wrong magic.
    pub bad_id: bool,
    /// Interrupts are latched in IRQ_RAWSTAT but never signalled.
    pub drop_irqs: bool,
}

impl std::str::FromStr for Inject {
    type Err = String;

    /// Parses a comma-separated list: `bad-id,drop-irqs`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut inj = Inject::default();
        for item in s.split(',').filter(|s| !s.is_empty()) {
            match item {
                "bad-id" => inj.bad_id = true,
                "drop-irqs" => inj.drop_irqs = true,
                other => return Err(format!("unknown injection '{other}'")),
            }
        }
        Ok(inj)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub vram_size: u64,
    pub inject: Inject,
    /// TLB entries per address space.
    pub tlb_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vram_size: 64 << 20,
            inject: Inject::default(),
            tlb_entries: 64,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct FaultQueue {
    base: u64,
    size: u32,
    tail_wb: u64,
    tail: u32,
    head: u32,
}

/// Global registers.
struct Globals {
    scratch: u32,
    irq_rawstat: u32,
    irq_mask: u32,
    ping_count: u32,
    ping_value: u32,
    dma_addr: u64,
    dma_len: u32,
    dma_pattern: u32,
    dma_status: u32,
    reset_count: u32,
    job_done: u32,
    queue_error: u32,
    faultq: FaultQueue,
    /// Interrupts still to drop (control socket).
    drop_next: u32,
}

impl Globals {
    fn new(reset_count: u32) -> Self {
        Globals {
            scratch: 0,
            irq_rawstat: 0,
            irq_mask: 0,
            ping_count: 0,
            ping_value: 0,
            dma_addr: 0,
            dma_len: 0,
            dma_pattern: 0,
            dma_status: DMA_IDLE,
            reset_count,
            job_done: 0,
            queue_error: 0,
            faultq: FaultQueue::default(),
            drop_next: 0,
        }
    }
}

pub struct Gpu {
    cfg: Config,
    pub bus: Bus,
    irq: Arc<dyn IrqSink>,
    globals: Mutex<Globals>,
    aspaces: Vec<Mutex<AddressSpace>>,
    /// Per address space: held shared by a running command, exclusively by
    /// UPDATE and the flushes (see vmem).
    inflight: Vec<RwLock<()>>,
    qregs: Vec<Mutex<QueueRegs>>,
    execs: Vec<Mutex<Exec>>,
    wake: Vec<Condvar>,
    pub stats: Stats,
    start: Instant,
    next_fault_id: AtomicU32,
    /// Bit q: queue q's engine panics on its next step (control socket),
    /// to prove that a model bug cannot go unnoticed.
    crash: AtomicU32,
    /// Stalled faults by id; a leaf lock.
    answers: Mutex<faults::Answers>,
    stop: AtomicBool,
    /// Per-queue job delay injected from the control socket. Like the other injections it
    /// models the test harness, not the device, so a device reset keeps it.
    injected_delay_ms: Vec<AtomicU32>,
}

/// Locks a device mutex. A poisoned one means a device thread panicked
/// while changing device state: going on would hide the bug, so this
/// panics in turn (and the binary's panic hook aborts).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("device state lock poisoned: a device thread panicked")
}

fn set_lo(v: &mut u64, lo: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(lo);
}

fn set_hi(v: &mut u64, hi: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(hi) << 32);
}

impl Gpu {
    pub fn new(cfg: Config, irq: Arc<dyn IrqSink>, mem: Arc<GuestMemory>, vram: Arc<Vram>) -> Self {
        Gpu {
            cfg,
            bus: Bus::new(mem, vram),
            irq,
            globals: Mutex::new(Globals::new(0)),
            aspaces: (0..N_AS)
                .map(|_| Mutex::new(AddressSpace::new(cfg.tlb_entries)))
                .collect(),
            inflight: (0..N_AS).map(|_| RwLock::new(())).collect(),
            qregs: (0..N_QUEUES).map(|_| Mutex::default()).collect(),
            execs: (0..N_QUEUES).map(|_| Mutex::default()).collect(),
            wake: (0..N_QUEUES).map(|_| Condvar::new()).collect(),
            stats: Stats::default(),
            start: Instant::now(),
            next_fault_id: AtomicU32::new(1),
            answers: Mutex::default(),
            crash: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            injected_delay_ms: (0..N_QUEUES).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The PCI command register's Bus Master Enable changed. Off, every DMA
    /// fails (see [`Bus`]) and no interrupt is sent.
    pub fn set_bus_master(&self, on: bool) {
        if self.bus.master() != on {
            log::debug!("bus master {}", if on { "on" } else { "off" });
        }
        self.bus.set_master(on);
    }

    /// Delays every job of queue `q` by `ms` milliseconds (0 ends it), on top of the queue's
    /// own Q_DELAY_MS, until changed again; a device reset keeps it (control socket).
    pub fn inject_delay(&self, q: usize, ms: u32) {
        if let Some(d) = self.injected_delay_ms.get(q) {
            d.store(ms, Ordering::Relaxed);
        }
    }

    /// Device reset: queues, address spaces, TLBs, the fault queue and the
    /// registers return to their reset values; VRAM is kept. Raises
    /// IRQ_RESET (and counts in RESET_COUNT) once every engine is quiet.
    pub fn soft_reset(&self) {
        // Taking every exec waits for in-flight commands to end.
        let mut execs: Vec<_> = self.execs.iter().map(lock).collect();
        for (q, ex) in execs.iter_mut().enumerate() {
            ex.running = None;
            let mut r = lock(&self.qregs[q]);
            let generation = r.generation + 1;
            let kick = r.kick + 1;
            *r = QueueRegs {
                generation,
                kick,
                ..Default::default()
            };
            ex.generation = generation;
        }
        for a in &self.aspaces {
            lock(a).reset();
        }
        lock(&self.answers).clear();
        {
            let mut g = lock(&self.globals);
            let count = g.reset_count.wrapping_add(1);
            // Dropped interrupts are injected from outside the device: a reset keeps them.
            let drop_next = g.drop_next;
            *g = Globals::new(count);
            g.drop_next = drop_next;
        }
        drop(execs);
        Stats::bump(&self.stats.resets);
        self.wake.iter().for_each(Condvar::notify_all);
        self.raise(IRQ_RESET);
    }

    /// Function-level reset from the transport: as [`Gpu::soft_reset`], but
    /// IRQ_RAWSTAT ends clear.
    pub fn reset(&self) {
        self.soft_reset();
        lock(&self.globals).irq_rawstat = 0;
    }
}

#[cfg(test)]
mod tests;
