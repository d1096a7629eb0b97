//! The mirage GPU: register file, address spaces, job queues, the page-fault
//! queue and reset. `Documentation/gpu/mirage.rst` is its manual.
//!
//! It is transport-independent: the vfio-user server and the host tests
//! drive it through [`Gpu::mmio_read`] and [`Gpu::mmio_write`]. Queues run
//! either on engine threads ([`Gpu::start_engines`]) or, for deterministic
//! tests, on the caller's thread ([`Gpu::run_until_idle`]).
//!
//! Lock order: a queue's `exec`, then its `qregs`, then an address space,
//! then `globals`. MMIO handlers never take `exec` except for resets, which
//! wait at most for one command to finish.

use crate::bus::Bus;
use crate::dma::GuestMemory;
use crate::irq::IrqSink;
use crate::isa::*;
use crate::mmu::{Access, AddressSpace, Fault, FaultKind, LatchedFault, XlateStats};
use crate::regs::*;
use crate::vram::Vram;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// Counters for introspection (the control socket and the tests).
#[derive(Default, Debug)]
pub struct Stats {
    pub walks: AtomicU64,
    pub pte_reads: AtomicU64,
    pub tlb_hits: AtomicU64,
    pub tlb_misses: AtomicU64,
    pub faults: AtomicU64,
    pub jobs: AtomicU64,
    pub commands: AtomicU64,
    pub resets: AtomicU64,
    pub irqs: AtomicU64,
    pub irqs_dropped: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("walks", l(&self.walks)),
            ("pte_reads", l(&self.pte_reads)),
            ("tlb_hits", l(&self.tlb_hits)),
            ("tlb_misses", l(&self.tlb_misses)),
            ("faults", l(&self.faults)),
            ("jobs", l(&self.jobs)),
            ("commands", l(&self.commands)),
            ("resets", l(&self.resets)),
            ("irqs", l(&self.irqs)),
            ("irqs_dropped", l(&self.irqs_dropped)),
        ]
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

#[derive(Default)]
struct QueueRegs {
    ring_base: u64,
    ring_size: u32,
    as_idx: u32,
    completion: u64,
    enabled: bool,
    status: u32,
    head: u32,
    tail: u32,
    error: u32,
    delay_ms: u32,
    /// Bumped by resets: the engine drops its job when it sees a new value.
    generation: u64,
    /// The driver's answer to the fault this queue is stalled on.
    fault_response: Option<(u32, bool)>,
    /// Bumped by anything that may let a waiting engine go on.
    kick: u64,
}

struct Running {
    desc: JobDesc,
    pc: u64,
    /// Stalled on this fault id, with this fault.
    stalled: Option<(u32, Fault)>,
    not_before: Option<Instant>,
}

#[derive(Default)]
struct Exec {
    generation: u64,
    running: Option<Running>,
}

/// What one engine step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the driver acts.
    Idle,
    /// Work was done; step again.
    Progress,
    /// Blocked (semaphore, delay, stalled fault); retry after the duration
    /// or when kicked.
    Waiting(Option<Duration>),
}

enum Cmd {
    Next(u64),
    End,
    Wait(Duration),
    Fault(Fault),
    Invalid,
}

pub struct Gpu {
    cfg: Config,
    pub bus: Bus,
    irq: Arc<dyn IrqSink>,
    globals: Mutex<Globals>,
    aspaces: Vec<Mutex<AddressSpace>>,
    qregs: Vec<Mutex<QueueRegs>>,
    execs: Vec<Mutex<Exec>>,
    wake: Vec<Condvar>,
    pub stats: Stats,
    start: Instant,
    next_fault_id: AtomicU32,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            qregs: (0..N_QUEUES).map(|_| Mutex::default()).collect(),
            execs: (0..N_QUEUES).map(|_| Mutex::default()).collect(),
            wake: (0..N_QUEUES).map(|_| Condvar::new()).collect(),
            stats: Stats::default(),
            start: Instant::now(),
            next_fault_id: AtomicU32::new(1),
            stop: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // --- interrupts ---------------------------------------------------------

    /// Latches `bits` in IRQ_RAWSTAT and interrupts if any of them is unmasked.
    pub fn raise(&self, bits: u32) {
        let mut g = lock(&self.globals);
        g.irq_rawstat |= bits;
        if bits & g.irq_mask != 0 {
            self.signal(&mut g);
        }
    }

    fn signal(&self, g: &mut Globals) {
        if self.cfg.inject.drop_irqs || g.drop_next > 0 {
            g.drop_next = g.drop_next.saturating_sub(1);
            self.stats.irqs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        self.irq.raise(0);
    }

    /// Drops the next `n` interrupts (control socket).
    pub fn drop_next_irqs(&self, n: u32) {
        lock(&self.globals).drop_next = n;
    }

    fn kick(&self, q: usize) {
        lock(&self.qregs[q]).kick += 1;
        self.wake[q].notify_all();
    }

    fn kick_all(&self) {
        (0..N_QUEUES).for_each(|q| self.kick(q));
    }

    // --- reset --------------------------------------------------------------

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
                status: Q_STATUS_DISABLED,
                ..Default::default()
            };
            ex.generation = generation;
        }
        for a in &self.aspaces {
            lock(a).reset();
        }
        {
            let mut g = lock(&self.globals);
            let count = g.reset_count.wrapping_add(1);
            *g = Globals::new(count);
        }
        drop(execs);
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.wake.iter().for_each(Condvar::notify_all);
        self.raise(IRQ_RESET);
    }

    /// Function-level reset from the transport: as [`Gpu::soft_reset`], but
    /// IRQ_RAWSTAT ends clear.
    pub fn reset(&self) {
        self.soft_reset();
        lock(&self.globals).irq_rawstat = 0;
    }

    fn queue_reset(&self, q: usize) {
        let mut ex = lock(&self.execs[q]);
        ex.running = None;
        let mut r = lock(&self.qregs[q]);
        r.generation += 1;
        ex.generation = r.generation;
        r.head = r.tail;
        r.error = 0;
        r.fault_response = None;
        r.status = if r.enabled {
            Q_STATUS_IDLE
        } else {
            Q_STATUS_DISABLED
        };
        r.kick += 1;
        drop(r);
        drop(ex);
        lock(&self.globals).queue_error &= !(1 << q);
        self.wake[q].notify_all();
    }

    // --- MMIO ---------------------------------------------------------------

    fn read32(&self, off: u64) -> u32 {
        match off {
            0x000..=0x0ff => self.read_global(off),
            AS_BASE..AS_END => {
                let n = ((off - AS_BASE) / AS_STRIDE) as usize;
                let a = lock(&self.aspaces[n]);
                match (off - AS_BASE) % AS_STRIDE {
                    AS_TRANSTAB_LO => a.pending.transtab as u32,
                    AS_TRANSTAB_HI => (a.pending.transtab >> 32) as u32,
                    AS_MEMATTR_LO => a.pending.memattr as u32,
                    AS_MEMATTR_HI => (a.pending.memattr >> 32) as u32,
                    AS_LOCKADDR_LO => a.lockaddr as u32,
                    AS_LOCKADDR_HI => (a.lockaddr >> 32) as u32,
                    AS_FAULTSTATUS => a.fault.map_or(0, |f| f.status),
                    AS_FAULTADDRESS_LO => a.fault.map_or(0, |f| f.address as u32),
                    AS_FAULTADDRESS_HI => a.fault.map_or(0, |f| (f.address >> 32) as u32),
                    AS_STATUS => u32::from(a.fault.is_some()) * AS_STATUS_FAULTED,
                    AS_TRANSCFG => a.pending.transcfg,
                    _ => 0,
                }
            }
            QUEUE_BASE..QUEUE_END => {
                let q = ((off - QUEUE_BASE) / QUEUE_STRIDE) as usize;
                let r = lock(&self.qregs[q]);
                match (off - QUEUE_BASE) % QUEUE_STRIDE {
                    Q_RING_BASE_LO => r.ring_base as u32,
                    Q_RING_BASE_HI => (r.ring_base >> 32) as u32,
                    Q_RING_SIZE => r.ring_size,
                    Q_AS => r.as_idx,
                    Q_COMPLETION_LO => r.completion as u32,
                    Q_COMPLETION_HI => (r.completion >> 32) as u32,
                    Q_CONTROL => u32::from(r.enabled),
                    Q_STATUS => r.status,
                    Q_HEAD => r.head,
                    Q_TAIL => r.tail,
                    Q_ERROR => r.error,
                    Q_DELAY_MS => r.delay_ms,
                    _ => 0,
                }
            }
            // Write-only and unassigned offsets read as zero, as on most GPUs.
            _ => 0,
        }
    }

    fn read_global(&self, off: u64) -> u32 {
        if off == MMU_FAULT_STATUS {
            return self.mmu_fault_status();
        }
        let g = lock(&self.globals);
        match off {
            ID if self.cfg.inject.bad_id => !ID_MAGIC,
            ID => ID_MAGIC,
            VERSION => (u32::from(VERSION_MAJOR) << 16) | u32::from(VERSION_MINOR),
            FEATURES => FEATURES_ALL,
            SCRATCH => g.scratch,
            VRAM_SIZE_LO => self.cfg.vram_size as u32,
            VRAM_SIZE_HI => (self.cfg.vram_size >> 32) as u32,
            VA_BITS => GPU_VA_BITS,
            PGSIZE_BITMAP => GPU_PGSIZE_BITMAP,
            IRQ_RAWSTAT => g.irq_rawstat,
            IRQ_MASK => g.irq_mask,
            IRQ_STATUS => g.irq_rawstat & g.irq_mask,
            PING_COUNT => g.ping_count,
            PING_VALUE => g.ping_value,
            DMA_ADDR_LO => g.dma_addr as u32,
            DMA_ADDR_HI => (g.dma_addr >> 32) as u32,
            DMA_LEN => g.dma_len,
            DMA_PATTERN => g.dma_pattern,
            DMA_STATUS => g.dma_status,
            VRAM_BASE_LO => VRAM_BASE as u32,
            VRAM_BASE_HI => (VRAM_BASE >> 32) as u32,
            RESET_COUNT => g.reset_count,
            NUM_AS => N_AS as u32,
            NUM_QUEUES => N_QUEUES as u32,
            JOB_DONE_STATUS => g.job_done,
            QUEUE_ERROR_STATUS => g.queue_error,
            FAULTQ_BASE_LO => g.faultq.base as u32,
            FAULTQ_BASE_HI => (g.faultq.base >> 32) as u32,
            FAULTQ_SIZE => g.faultq.size,
            FAULTQ_TAIL_WB_LO => g.faultq.tail_wb as u32,
            FAULTQ_TAIL_WB_HI => (g.faultq.tail_wb >> 32) as u32,
            FAULTQ_TAIL => g.faultq.tail,
            FAULTQ_HEAD => g.faultq.head,
            TLB_ENTRIES => self.cfg.tlb_entries as u32,
            _ => 0,
        }
    }

    fn mmu_fault_status(&self) -> u32 {
        (0..N_AS).fold(0, |acc, n| {
            acc | (u32::from(lock(&self.aspaces[n]).fault.is_some()) << n)
        })
    }

    fn write32(&self, off: u64, val: u32) {
        match off {
            0x000..=0x0ff => self.write_global(off, val),
            DB_PING => {
                {
                    let mut g = lock(&self.globals);
                    g.ping_count = g.ping_count.wrapping_add(1);
                    g.ping_value = val;
                }
                self.raise(IRQ_PING);
            }
            DB_DMA_FILL => {
                let status = self.dma_fill();
                lock(&self.globals).dma_status = status;
                self.raise(IRQ_DMA);
            }
            DB_FAULTQ_HEAD => {
                lock(&self.globals).faultq.head = val;
                self.kick_all();
            }
            DB_FAULT_RESPONSE => {
                self.fault_response(val & !FAULT_RESPONSE_ABORT, val & FAULT_RESPONSE_ABORT != 0)
            }
            o if (db_queue(0)..db_queue(N_QUEUES as u64)).contains(&o) => {
                let q = ((o - db_queue(0)) / 4) as usize;
                lock(&self.qregs[q]).tail = val;
                self.kick(q);
            }
            AS_BASE..AS_END => {
                let n = ((off - AS_BASE) / AS_STRIDE) as usize;
                let mut a = lock(&self.aspaces[n]);
                match (off - AS_BASE) % AS_STRIDE {
                    AS_TRANSTAB_LO => set_lo(&mut a.pending.transtab, val),
                    AS_TRANSTAB_HI => set_hi(&mut a.pending.transtab, val),
                    AS_MEMATTR_LO => set_lo(&mut a.pending.memattr, val),
                    AS_MEMATTR_HI => set_hi(&mut a.pending.memattr, val),
                    AS_LOCKADDR_LO => set_lo(&mut a.lockaddr, val),
                    AS_LOCKADDR_HI => set_hi(&mut a.lockaddr, val),
                    AS_TRANSCFG => a.pending.transcfg = val & (TRANSCFG_ENABLE | TRANSCFG_STALL),
                    AS_COMMAND => a.command(val),
                    _ => {}
                }
            }
            QUEUE_BASE..QUEUE_END => {
                let q = ((off - QUEUE_BASE) / QUEUE_STRIDE) as usize;
                let reg = (off - QUEUE_BASE) % QUEUE_STRIDE;
                if reg == Q_COMMAND {
                    match val {
                        Q_CMD_RESET => self.queue_reset(q),
                        Q_CMD_RESUME => {
                            let mut r = lock(&self.qregs[q]);
                            if r.status == Q_STATUS_FAULTED {
                                r.status = Q_STATUS_IDLE;
                                r.error = 0;
                            }
                            drop(r);
                            lock(&self.globals).queue_error &= !(1 << q);
                            self.kick(q);
                        }
                        _ => {}
                    }
                    return;
                }
                let mut r = lock(&self.qregs[q]);
                match reg {
                    Q_RING_BASE_LO => set_lo(&mut r.ring_base, val),
                    Q_RING_BASE_HI => set_hi(&mut r.ring_base, val),
                    Q_RING_SIZE => r.ring_size = val,
                    Q_AS => r.as_idx = val,
                    Q_COMPLETION_LO => set_lo(&mut r.completion, val),
                    Q_COMPLETION_HI => set_hi(&mut r.completion, val),
                    Q_DELAY_MS => r.delay_ms = val,
                    Q_CONTROL => {
                        r.enabled = val & Q_CONTROL_ENABLE != 0;
                        if r.status == Q_STATUS_DISABLED || r.status == Q_STATUS_IDLE {
                            r.status = if r.enabled {
                                Q_STATUS_IDLE
                            } else {
                                Q_STATUS_DISABLED
                            };
                        }
                    }
                    _ => {}
                }
                drop(r);
                self.kick(q);
            }
            // Read-only and unassigned registers ignore writes.
            _ => {}
        }
    }

    fn write_global(&self, off: u64, val: u32) {
        match off {
            GPU_COMMAND if val == GPU_CMD_SOFT_RESET => return self.soft_reset(),
            MMU_FAULT_CLEAR => {
                for n in (0..N_AS).filter(|n| val & (1 << n) != 0) {
                    lock(&self.aspaces[n]).fault = None;
                }
                return self.kick_all();
            }
            _ => {}
        }
        let mut g = lock(&self.globals);
        match off {
            SCRATCH => g.scratch = val,
            IRQ_CLEAR => g.irq_rawstat &= !val,
            IRQ_MASK => {
                let newly = val & !g.irq_mask & g.irq_rawstat;
                g.irq_mask = val & IRQ_ALL;
                if newly != 0 {
                    self.signal(&mut g);
                }
            }
            JOB_DONE_CLEAR => g.job_done &= !val,
            QUEUE_ERROR_CLEAR => g.queue_error &= !val,
            DMA_ADDR_LO => set_lo(&mut g.dma_addr, val),
            DMA_ADDR_HI => set_hi(&mut g.dma_addr, val),
            DMA_LEN => g.dma_len = val,
            DMA_PATTERN => g.dma_pattern = val,
            FAULTQ_BASE_LO => set_lo(&mut g.faultq.base, val),
            FAULTQ_BASE_HI => set_hi(&mut g.faultq.base, val),
            FAULTQ_SIZE => {
                // Reprogramming the queue empties it.
                g.faultq.size = val;
                g.faultq.tail = 0;
                g.faultq.head = 0;
            }
            FAULTQ_TAIL_WB_LO => set_lo(&mut g.faultq.tail_wb, val),
            FAULTQ_TAIL_WB_HI => set_hi(&mut g.faultq.tail_wb, val),
            _ => {}
        }
    }

    /// Fills `DMA_LEN` bytes at `DMA_ADDR` with the 32-bit `DMA_PATTERN`.
    fn dma_fill(&self) -> u32 {
        let (addr, len, pattern) = {
            let g = lock(&self.globals);
            (g.dma_addr, g.dma_len, g.dma_pattern)
        };
        if len == 0 || !len.is_multiple_of(4) || len > DMA_MAX_LEN {
            return DMA_INVALID;
        }
        let buf: Vec<u8> = pattern
            .to_le_bytes()
            .into_iter()
            .cycle()
            .take(len as usize)
            .collect();
        match self.bus.mem.write(addr, &buf) {
            Ok(()) => DMA_DONE,
            Err(_) => DMA_FAULT,
        }
    }

    /// Reads `data.len()` bytes (1, 2, 4 or 8, naturally aligned) at `off`.
    /// Other shapes read as zero rather than failing, as a PCIe device
    /// completes any request.
    pub fn mmio_read(&self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || !off.is_multiple_of(len) || off + len > BAR0_SIZE {
            return;
        }
        let mut bytes = [0u8; 8];
        let base = off & !3;
        bytes[..4].copy_from_slice(&self.read32(base).to_le_bytes());
        if len == 8 {
            bytes[4..].copy_from_slice(&self.read32(base + 4).to_le_bytes());
        }
        let shift = (off - base) as usize;
        data.copy_from_slice(&bytes[shift..shift + data.len()]);
    }

    /// Writes `data` at `off`. Registers are 32 bits wide: 8-byte writes
    /// are split low dword first, narrower writes are ignored.
    pub fn mmio_write(&self, off: u64, data: &[u8]) {
        let len = data.len() as u64;
        if !matches!(len, 4 | 8) || !off.is_multiple_of(len) || off + len > BAR0_SIZE {
            return;
        }
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let val = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.write32(off + 4 * i as u64, val);
        }
    }

    pub fn read_reg(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write_reg(&self, off: u64, v: u32) {
        self.mmio_write(off, &v.to_le_bytes());
    }

    // --- page faults --------------------------------------------------------

    /// Posts a stalled fault to the fault queue. None if the queue is off or full.
    fn post_fault(&self, q: usize, as_idx: u32, f: &Fault) -> Option<u32> {
        let id = self.next_fault_id.fetch_add(1, Ordering::Relaxed) & !FAULT_RESPONSE_ABORT;
        {
            let mut g = lock(&self.globals);
            let fq = g.faultq;
            if fq.size < 2 || !fq.size.is_power_of_two() || fq.tail.wrapping_sub(fq.head) >= fq.size
            {
                return None;
            }
            let mut rec = [0u8; FAULT_RECORD_SIZE as usize];
            rec[0..8].copy_from_slice(&f.va.to_le_bytes());
            rec[8..12].copy_from_slice(&f.status(q as u32).to_le_bytes());
            rec[12..16].copy_from_slice(&as_idx.to_le_bytes());
            rec[16..20].copy_from_slice(&id.to_le_bytes());
            rec[20..24].copy_from_slice(&(q as u32).to_le_bytes());
            let slot = fq.base + u64::from(fq.tail % fq.size) * FAULT_RECORD_SIZE;
            if self.bus.write(slot, &rec).is_err() {
                return None;
            }
            g.faultq.tail = fq.tail.wrapping_add(1);
            // The record is written before the producer index that publishes it.
            let _ = self.bus.write_u32(fq.tail_wb, g.faultq.tail);
        }
        self.raise(IRQ_PAGE_FAULT);
        Some(id)
    }

    fn fault_response(&self, id: u32, abort: bool) {
        for q in 0..N_QUEUES {
            let mut r = lock(&self.qregs[q]);
            if r.status == Q_STATUS_STALLED {
                r.fault_response = Some((id, abort));
                r.kick += 1;
                self.wake[q].notify_all();
            }
        }
    }

    // --- memory through an address space -----------------------------------

    /// Translates `[va, va + len)` page by page; returns merged PA segments.
    fn xlate(
        &self,
        as_idx: usize,
        va: u64,
        len: u64,
        access: Access,
    ) -> Result<Vec<(u64, usize)>, Fault> {
        let mut segs: Vec<(u64, usize)> = Vec::new();
        let mut a = lock(&self.aspaces[as_idx]);
        let mut at = va;
        let end = va.checked_add(len).ok_or(Fault {
            kind: FaultKind::AddressSize,
            level: 0,
            va,
            access,
        })?;
        while at < end {
            let mut st = XlateStats::default();
            let r = a.translate(&self.bus, at, access, &mut st);
            if st.hit {
                self.stats.tlb_hits.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.tlb_misses.fetch_add(1, Ordering::Relaxed);
            }
            if st.walked {
                self.stats.walks.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .pte_reads
                    .fetch_add(u64::from(st.reads), Ordering::Relaxed);
            }
            let pa = r?;
            let n = ((at | 0xfff) + 1).min(end) - at;
            match segs.last_mut() {
                Some((p, l)) if *p + *l as u64 == pa => *l += n as usize,
                _ => segs.push((pa, n as usize)),
            }
            at += n;
        }
        Ok(segs)
    }

    fn data_fault(va: u64, access: Access) -> Fault {
        Fault {
            kind: FaultKind::DataBus,
            level: 0,
            va,
            access,
        }
    }

    fn read_segs(&self, segs: &[(u64, usize)], va: u64, access: Access) -> Result<Vec<u8>, Fault> {
        let mut out = vec![0u8; segs.iter().map(|s| s.1).sum()];
        let mut at = 0;
        for &(pa, n) in segs {
            self.bus
                .read(pa, &mut out[at..at + n])
                .map_err(|_| Self::data_fault(va + at as u64, access))?;
            at += n;
        }
        Ok(out)
    }

    fn write_segs(&self, segs: &[(u64, usize)], va: u64, data: &[u8]) -> Result<(), Fault> {
        let mut at = 0;
        for &(pa, n) in segs {
            self.bus
                .write(pa, &data[at..at + n])
                .map_err(|_| Self::data_fault(va + at as u64, Access::Write))?;
            at += n;
        }
        Ok(())
    }

    fn read_va(&self, as_idx: usize, va: u64, len: u64, access: Access) -> Result<Vec<u8>, Fault> {
        let segs = self.xlate(as_idx, va, len, access)?;
        self.read_segs(&segs, va, access)
    }

    // --- the engine ---------------------------------------------------------

    /// Runs one command of `run` in address space `as_idx`. Every address a
    /// command touches is translated before it writes anything, so a command
    /// that faults has had no effect and may be replayed after a stall.
    fn exec_cmd(&self, as_idx: usize, run: &Running) -> Cmd {
        let d = &run.desc;
        let va = d.cmdbuf_va + run.pc;
        let fetch = |va, len| self.read_va(as_idx, va, len, Access::Execute);
        let hdr = match fetch(va, 8) {
            Ok(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            Err(f) => return Cmd::Fault(f),
        };
        let op = hdr as u8;
        let words = (hdr >> 16) & 0xffff;
        let Some(nops) = operands(op) else {
            return Cmd::Invalid;
        };
        if (hdr >> 8) & 0xff != 0 || hdr >> 32 != 0 || words != nops as u64 + 1 {
            return Cmd::Invalid;
        }
        if run.pc + words * 8 > u64::from(d.cmdbuf_len) {
            return Cmd::Invalid;
        }
        let o: Vec<u64> = match fetch(va + 8, nops as u64 * 8) {
            Ok(b) => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Err(f) => return Cmd::Fault(f),
        };
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let next = Cmd::Next(words * 8);
        let r: Result<Cmd, Fault> = (|| {
            Ok(match op {
                OP_NOP => next,
                OP_END => Cmd::End,
                OP_HANG => Cmd::Wait(Duration::from_millis(1)),
                OP_STORE32 | OP_STORE64 | OP_FENCE_WRITE | OP_TIMESTAMP => {
                    let (n, v) = match op {
                        OP_STORE32 => (4, o[1] & 0xffff_ffff),
                        OP_TIMESTAMP => (8, self.start.elapsed().as_nanos() as u64),
                        _ => (8, o[1]),
                    };
                    let segs = self.xlate(as_idx, o[0], n, Access::Write)?;
                    if op == OP_FENCE_WRITE {
                        std::sync::atomic::fence(Ordering::SeqCst);
                    }
                    self.write_segs(&segs, o[0], &v.to_le_bytes()[..n as usize])?;
                    next
                }
                OP_COPY => {
                    let (dst, src, len) = (o[0], o[1], o[2]);
                    if len > MAX_LEN {
                        return Ok(Cmd::Invalid);
                    }
                    let ssegs = self.xlate(as_idx, src, len, Access::Read)?;
                    let dsegs = self.xlate(as_idx, dst, len, Access::Write)?;
                    let data = self.read_segs(&ssegs, src, Access::Read)?;
                    self.write_segs(&dsegs, dst, &data)?;
                    next
                }
                OP_FILL => {
                    let (dst, len) = (o[0], o[1]);
                    if len > MAX_LEN || !len.is_multiple_of(4) {
                        return Ok(Cmd::Invalid);
                    }
                    let segs = self.xlate(as_idx, dst, len, Access::Write)?;
                    let pat = (o[2] as u32).to_le_bytes();
                    let data: Vec<u8> = pat.into_iter().cycle().take(len as usize).collect();
                    self.write_segs(&segs, dst, &data)?;
                    next
                }
                OP_CHECKSUM => {
                    let (src, len, dst) = (o[0], o[1], o[2]);
                    if len > MAX_LEN {
                        return Ok(Cmd::Invalid);
                    }
                    let ssegs = self.xlate(as_idx, src, len, Access::Read)?;
                    let dsegs = self.xlate(as_idx, dst, 8, Access::Write)?;
                    let data = self.read_segs(&ssegs, src, Access::Read)?;
                    self.write_segs(&dsegs, dst, &fnv1a64(&data).to_le_bytes())?;
                    next
                }
                OP_ATOMIC => {
                    return self
                        .atomic(as_idx, &o)
                        .map(|ok| if ok { next } else { Cmd::Invalid })
                }
                OP_SEM_WAIT => {
                    let (va, want, cond) = (o[0], o[1], o[2]);
                    let n = match cond {
                        SEM_GE32 | SEM_EQ32 => 4,
                        SEM_GE64 | SEM_EQ64 => 8,
                        _ => return Ok(Cmd::Invalid),
                    };
                    let b = self.read_va(as_idx, va, n, Access::Read)?;
                    let mut w = [0u8; 8];
                    w[..n as usize].copy_from_slice(&b);
                    let v = u64::from_le_bytes(w);
                    let want = if n == 4 { want & 0xffff_ffff } else { want };
                    let met = match cond {
                        SEM_GE32 | SEM_GE64 => v >= want,
                        _ => v == want,
                    };
                    if met {
                        next
                    } else {
                        Cmd::Wait(Duration::from_micros(50))
                    }
                }
                OP_SAXPY => {
                    let (x, y, n, a) = (o[0], o[1], o[2], f32::from_bits(o[3] as u32));
                    let Some(bytes) = n.checked_mul(4).filter(|&b| b <= MAX_LEN) else {
                        return Ok(Cmd::Invalid);
                    };
                    let xsegs = self.xlate(as_idx, x, bytes, Access::Read)?;
                    let ysegs = self.xlate(as_idx, y, bytes, Access::Write)?;
                    let xs = self.read_segs(&xsegs, x, Access::Read)?;
                    let mut ys = self.read_segs(&ysegs, y, Access::Write)?;
                    for (yc, xc) in ys.chunks_exact_mut(4).zip(xs.chunks_exact(4)) {
                        let xv = f32::from_le_bytes([xc[0], xc[1], xc[2], xc[3]]);
                        let yv = f32::from_le_bytes([yc[0], yc[1], yc[2], yc[3]]);
                        yc.copy_from_slice(&a.mul_add(xv, yv).to_le_bytes());
                    }
                    self.write_segs(&ysegs, y, &ys)?;
                    next
                }
                _ => Cmd::Invalid,
            })
        })();
        r.unwrap_or_else(Cmd::Fault)
    }

    /// Runs OP_ATOMIC; Ok(false) for a malformed one.
    fn atomic(&self, as_idx: usize, o: &[u64]) -> Result<bool, Fault> {
        let (va, op, operand, compare, result_va) = (o[0], o[1], o[2], o[3], o[4]);
        let wide = match op {
            ATOMIC_ADD32 | ATOMIC_INC32 | ATOMIC_CMPXCHG32 => false,
            ATOMIC_ADD64 | ATOMIC_INC64 | ATOMIC_CMPXCHG64 => true,
            _ => return Ok(false),
        };
        let n = if wide { 8 } else { 4 };
        if !va.is_multiple_of(n) {
            return Ok(false);
        }
        let segs = self.xlate(as_idx, va, n, Access::Atomic)?;
        let rsegs = if result_va != 0 {
            Some(self.xlate(as_idx, result_va, n, Access::Write)?)
        } else {
            None
        };
        let pa = segs[0].0;
        let ptr = self
            .bus
            .host_ptr(pa, n as usize)
            .map_err(|_| Self::data_fault(va, Access::Atomic))?;
        let old = if wide {
            // SAFETY: `ptr` addresses 8 bytes of a live shared mapping, and
            // is 8-byte aligned because `pa` is and mappings are page-aligned.
            let a = unsafe { AtomicU64::from_ptr(ptr.cast()) };
            match op {
                ATOMIC_ADD64 => a.fetch_add(operand, Ordering::SeqCst),
                ATOMIC_INC64 => a.fetch_add(1, Ordering::SeqCst),
                _ => a
                    .compare_exchange(compare, operand, Ordering::SeqCst, Ordering::SeqCst)
                    .unwrap_or_else(|v| v),
            }
        } else {
            // SAFETY: as above, for 4 bytes and 4-byte alignment.
            let a = unsafe { AtomicU32::from_ptr(ptr.cast()) };
            u64::from(match op {
                ATOMIC_ADD32 => a.fetch_add(operand as u32, Ordering::SeqCst),
                ATOMIC_INC32 => a.fetch_add(1, Ordering::SeqCst),
                _ => a
                    .compare_exchange(
                        compare as u32,
                        operand as u32,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .unwrap_or_else(|v| v),
            })
        };
        if let Some(rsegs) = rsegs {
            self.write_segs(&rsegs, result_va, &old.to_le_bytes()[..n as usize])?;
        }
        Ok(true)
    }

    /// Ends the running job: writes its completion record, then interrupts.
    fn complete(&self, q: usize, ex: &mut Exec, status: u32, fault_status: u32) {
        let Some(run) = ex.running.take() else { return };
        let mut r = lock(&self.qregs[q]);
        let mut rec = [0u8; COMPLETION_SIZE as usize];
        rec[0..8].copy_from_slice(&run.desc.seqno.to_le_bytes());
        rec[8..12].copy_from_slice(&status.to_le_bytes());
        rec[12..16].copy_from_slice(&fault_status.to_le_bytes());
        // The job's writes happened before this point; the record publishes them.
        std::sync::atomic::fence(Ordering::SeqCst);
        let _ = self.bus.write(r.completion, &rec);
        r.head = r.head.wrapping_add(1);
        self.stats.jobs.fetch_add(1, Ordering::Relaxed);
        if status == JOB_OK {
            r.status = Q_STATUS_IDLE;
            drop(r);
            if run.desc.flags & JOB_FLAG_IRQ != 0 {
                lock(&self.globals).job_done |= 1 << q;
                self.raise(IRQ_JOB);
            }
        } else {
            r.status = Q_STATUS_FAULTED;
            r.error = status;
            drop(r);
            lock(&self.globals).queue_error |= 1 << q;
            self.raise(IRQ_QUEUE_ERROR);
        }
    }

    /// Latches an abort-mode fault in the address space and reports it.
    fn latch_fault(&self, q: usize, as_idx: usize, f: &Fault) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let mut a = lock(&self.aspaces[as_idx]);
        if a.fault.is_none() {
            a.fault = Some(LatchedFault {
                status: f.status(q as u32),
                address: f.va,
            });
        }
        drop(a);
        self.raise(IRQ_MMU);
    }

    /// Advances queue `q` by at most one command.
    pub fn step_queue(&self, q: usize) -> Step {
        let mut ex = lock(&self.execs[q]);
        let (ring_base, ring_size, as_idx, head, tail, enabled, status, delay_ms, response) = {
            let mut r = lock(&self.qregs[q]);
            if ex.generation != r.generation {
                ex.generation = r.generation;
                ex.running = None;
            }
            (
                r.ring_base,
                r.ring_size,
                r.as_idx as usize,
                r.head,
                r.tail,
                r.enabled,
                r.status,
                r.delay_ms,
                r.fault_response.take(),
            )
        };
        if !enabled || status == Q_STATUS_FAULTED {
            return Step::Idle;
        }
        if as_idx >= N_AS {
            // A misprogrammed queue fails its next job without running it.
            if head != tail {
                return self.fail_unstarted(q, &mut ex, JOB_INVALID_COMMAND);
            }
            return Step::Idle;
        }
        if ex.running.is_none() {
            if head == tail {
                return Step::Idle;
            }
            if lock(&self.aspaces[as_idx]).fault.is_some() {
                return Step::Waiting(None);
            }
            if ring_size < 2 || !ring_size.is_power_of_two() || ring_size > 4096 {
                return self.fail_unstarted(q, &mut ex, JOB_INVALID_COMMAND);
            }
            let mut b = [0u8; JOB_DESC_SIZE as usize];
            let slot = ring_base + u64::from(head % ring_size) * JOB_DESC_SIZE;
            if self.bus.read(slot, &mut b).is_err() {
                return self.fail_unstarted(q, &mut ex, JOB_DMA_ERROR);
            }
            ex.running = Some(Running {
                desc: JobDesc::from_bytes(&b),
                pc: 0,
                stalled: None,
                not_before: (delay_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(u64::from(delay_ms))),
            });
            lock(&self.qregs[q]).status = Q_STATUS_RUNNING;
        }
        let Some(run) = ex.running.as_mut() else {
            return Step::Idle;
        };
        if let Some(t) = run.not_before {
            let now = Instant::now();
            if now < t {
                return Step::Waiting(Some(t - now));
            }
            run.not_before = None;
        }
        if let Some((id, f)) = run.stalled {
            match response {
                Some((rid, abort)) if rid == id => {
                    run.stalled = None;
                    lock(&self.qregs[q]).status = Q_STATUS_RUNNING;
                    if abort {
                        self.complete(q, &mut ex, JOB_MMU_FAULT, f.status(q as u32));
                        return Step::Progress;
                    }
                }
                _ => return Step::Waiting(None),
            }
        }
        let Some(run) = ex.running.as_ref() else {
            return Step::Idle;
        };
        if run.pc >= u64::from(run.desc.cmdbuf_len) {
            self.complete(q, &mut ex, JOB_OK, 0);
            return Step::Progress;
        }
        match self.exec_cmd(as_idx, run) {
            Cmd::Next(n) => {
                if let Some(run) = ex.running.as_mut() {
                    run.pc += n;
                }
                Step::Progress
            }
            Cmd::End => {
                self.complete(q, &mut ex, JOB_OK, 0);
                Step::Progress
            }
            Cmd::Wait(d) => Step::Waiting(Some(d)),
            Cmd::Invalid => {
                self.complete(q, &mut ex, JOB_INVALID_COMMAND, 0);
                Step::Progress
            }
            Cmd::Fault(f) => {
                let stall = lock(&self.aspaces[as_idx]).stall_mode()
                    && matches!(f.kind, FaultKind::Translation | FaultKind::AccessFlag);
                if stall {
                    self.stats.faults.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = self.post_fault(q, as_idx as u32, &f) {
                        if let Some(run) = ex.running.as_mut() {
                            run.stalled = Some((id, f));
                        }
                        lock(&self.qregs[q]).status = Q_STATUS_STALLED;
                        return Step::Waiting(None);
                    }
                    // No room to report it: the fault cannot be serviced.
                    self.complete(q, &mut ex, JOB_MMU_FAULT, f.status(q as u32));
                    return Step::Progress;
                }
                self.latch_fault(q, as_idx, &f);
                self.complete(q, &mut ex, JOB_MMU_FAULT, f.status(q as u32));
                Step::Progress
            }
        }
    }

    /// Consumes the job at the head without running it, reporting `status`.
    fn fail_unstarted(&self, q: usize, ex: &mut Exec, status: u32) -> Step {
        ex.running = Some(Running {
            desc: JobDesc::default(),
            pc: 0,
            stalled: None,
            not_before: None,
        });
        self.complete(q, ex, status, 0);
        Step::Progress
    }

    /// Runs every queue on the caller's thread until none can progress
    /// without the driver or time passing. Deterministic: queues take
    /// turns one command at a time, in index order.
    pub fn run_until_idle(&self, max_steps: usize) -> usize {
        let mut steps = 0;
        while steps < max_steps {
            let mut progressed = false;
            for q in 0..N_QUEUES {
                if self.step_queue(q) == Step::Progress {
                    progressed = true;
                    steps += 1;
                }
            }
            if !progressed {
                break;
            }
        }
        steps
    }

    /// Starts one engine thread per queue. They run until [`Gpu::stop`].
    pub fn start_engines(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        (0..N_QUEUES)
            .map(|q| {
                let gpu = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("mirage-q{q}"))
                    .spawn(move || gpu.engine(q))
                    .expect("spawning an engine thread")
            })
            .collect()
    }

    fn engine(&self, q: usize) {
        while !self.stop.load(Ordering::Relaxed) {
            let kick = lock(&self.qregs[q]).kick;
            let wait = match self.step_queue(q) {
                Step::Progress => continue,
                Step::Idle => Duration::from_millis(100),
                Step::Waiting(d) => d.unwrap_or(Duration::from_millis(10)),
            };
            let r = lock(&self.qregs[q]);
            if r.kick == kick {
                let _ = self.wake[q].wait_timeout(r, wait);
            }
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.iter().for_each(Condvar::notify_all);
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
