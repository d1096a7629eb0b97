//! A driver's-eye harness over the device model, for the host tests and
//! the benchmarks: test-owned guest memory, a page-table builder of its own
//! (independent of the walker, written the way io-pgtable-arm writes
//! descriptors), and queue helpers.

use crate::device::{Config, Gpu};
use crate::dma::GuestMemory;
use crate::irq::CountingIrqs;
use crate::isa::{Builder, JobDesc, JOB_FLAG_IRQ};
use crate::regs::*;
use crate::vram::Vram;
use std::sync::Arc;

pub const RAM_IOVA: u64 = 0x1000_0000;
pub const RAM_SIZE: usize = 32 << 20;
/// io-pgtable-arm's MAIR: 0 non-cacheable, 1 write-back, 2 device, 3 inner-NC/outer-WB.
pub const MAIR: u64 = 0xf404_ff44;
pub const ATTR_NC: u64 = 0;
pub const ATTR_WB: u64 = 1;

#[derive(Clone, Copy, Default)]
pub struct Prot {
    pub ro: bool,
    pub xn: bool,
    pub no_af: bool,
    pub attr: u64,
}

pub const RW: Prot = Prot {
    ro: false,
    xn: false,
    no_af: false,
    attr: ATTR_WB,
};

pub struct Rig {
    pub gpu: Arc<Gpu>,
    pub irqs: Arc<CountingIrqs>,
    _mem: Arc<GuestMemory>,
    /// Backs the rig's RAM the way QEMU's memfd backend does, so the
    /// mapping is page-aligned as in production.
    _ram: std::fs::File,
    next_page: u64,
    /// GPU VA allocator for command buffers.
    next_cmd_va: u64,
    /// (ring bus address, completion bus address, entries) per queue.
    pub ring: [Option<(u64, u64, u32)>; N_QUEUES],
    pub tail: [u32; N_QUEUES],
    seq: [u64; N_QUEUES],
    pub roots: [u64; N_AS],
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

impl Rig {
    pub fn new() -> Rig {
        Self::with(Config::default())
    }

    pub fn with(cfg: Config) -> Rig {
        let irqs = Arc::new(CountingIrqs::default());
        let mem = Arc::new(GuestMemory::default());
        let vram = Arc::new(Vram::new(cfg.vram_size).unwrap());
        let ram = crate::memfd("mirage-rig-ram", RAM_SIZE as u64).unwrap();
        mem.map_fd(RAM_IOVA, RAM_SIZE as u64, &ram, 0).unwrap();
        let gpu = Arc::new(Gpu::new(cfg, irqs.clone(), mem.clone(), vram));
        // As pci_set_master() in the driver's probe.
        gpu.set_bus_master(true);
        Rig {
            gpu,
            irqs,
            _mem: mem,
            _ram: ram,
            next_page: RAM_IOVA,
            next_cmd_va: 0x7f00_0000_0000,
            ring: [None; N_QUEUES],
            tail: [0; N_QUEUES],
            seq: [0; N_QUEUES],
            roots: [0; N_AS],
        }
    }

    pub fn rd(&self, off: u64) -> u32 {
        self.gpu.read_reg(off)
    }
    pub fn wr(&self, off: u64, v: u32) {
        self.gpu.write_reg(off, v)
    }
    pub fn wr64(&self, lo: u64, v: u64) {
        self.wr(lo, v as u32);
        self.wr(lo + 4, (v >> 32) as u32);
    }

    pub fn alloc(&mut self, bytes: u64) -> u64 {
        let pa = self.next_page;
        self.next_page += bytes.div_ceil(4096) * 4096;
        assert!(
            self.next_page <= RAM_IOVA + RAM_SIZE as u64,
            "rig RAM exhausted"
        );
        pa
    }

    /// Allocates `bytes` aligned to `align` (a power of two).
    pub fn alloc_aligned(&mut self, bytes: u64, align: u64) -> u64 {
        self.next_page = self.next_page.next_multiple_of(align);
        self.alloc(bytes)
    }

    /// CPU access to memory: not the device's, so injected DMA errors do not apply.
    pub fn poke(&self, pa: u64, b: &[u8]) {
        if pa >= VRAM_BASE {
            self.gpu.bus.vram.write(pa - VRAM_BASE, b);
        } else {
            self.gpu.bus.mem.write(pa, b).unwrap();
        }
    }
    pub fn peek(&self, pa: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        if pa >= VRAM_BASE {
            self.gpu.bus.vram.read(pa - VRAM_BASE, &mut b);
        } else {
            self.gpu.bus.mem.read(pa, &mut b).unwrap();
        }
        b
    }
    pub fn peek32(&self, pa: u64) -> u32 {
        u32::from_le_bytes(self.peek(pa, 4).try_into().unwrap())
    }
    pub fn peek64(&self, pa: u64) -> u64 {
        u64::from_le_bytes(self.peek(pa, 8).try_into().unwrap())
    }

    /// Bus address of the descriptor slot for a `size` leaf at `va` in the
    /// tables rooted at `root`, making missing tables on the way if `create`.
    fn leaf_slot(&mut self, root: u64, va: u64, size: u64, create: bool) -> (u64, u32) {
        let leaf_level = match size {
            0x1000 => 3,
            0x20_0000 => 2,
            0x4000_0000 => 1,
            _ => panic!("bad page size {size:#x}"),
        };
        let index = |level: u32| (va >> (39 - 9 * level)) & 511;
        let mut table = root;
        for level in 0..leaf_level {
            let slot = table + index(level) * 8;
            let d = self.peek64(slot);
            table = if d & 3 == 3 || !create {
                d & 0x0000_ffff_ffff_f000
            } else {
                let t = self.alloc(4096);
                self.poke(slot, &(t | 3).to_le_bytes());
                t
            };
        }
        (table + index(leaf_level) * 8, leaf_level)
    }

    /// Writes one descriptor the way io-pgtable-arm would.
    pub fn set_pte(&mut self, root: u64, va: u64, pa: u64, size: u64, p: Prot) {
        let (slot, leaf_level) = self.leaf_slot(root, va, size, true);
        let mut d = pa | if leaf_level == 3 { 3 } else { 1 };
        d |= p.attr << 2;
        if !p.no_af {
            d |= 1 << 10;
        }
        if p.ro {
            d |= 1 << 7;
        }
        if p.xn {
            d |= 3 << 53;
        }
        self.poke(slot, &d.to_le_bytes());
    }

    pub fn clear_pte(&mut self, root: u64, va: u64, size: u64) {
        let (slot, _) = self.leaf_slot(root, va, size, false);
        self.poke(slot, &[0; 8]);
    }

    pub fn map(&mut self, as_idx: usize, va: u64, pa: u64, len: u64, p: Prot) {
        let root = self.roots[as_idx];
        for off in (0..len).step_by(4096) {
            self.set_pte(root, va + off, pa + off, 4096, p);
        }
    }

    /// Allocates RAM and maps it at `va`; returns its bus address.
    pub fn map_new(&mut self, as_idx: usize, va: u64, len: u64) -> u64 {
        let pa = self.alloc(len);
        self.map(as_idx, va, pa, len, RW);
        pa
    }

    pub fn as_cmd(&self, n: usize, cmd: u32) {
        self.wr(as_reg(n as u64, AS_COMMAND), cmd);
    }

    pub fn setup_as(&mut self, n: usize, transcfg: u32) {
        if self.roots[n] == 0 {
            self.roots[n] = self.alloc(4096);
        }
        self.wr64(as_reg(n as u64, AS_TRANSTAB_LO), self.roots[n]);
        self.wr64(as_reg(n as u64, AS_MEMATTR_LO), MAIR);
        self.wr(as_reg(n as u64, AS_TRANSCFG), transcfg);
        self.as_cmd(n, AS_CMD_UPDATE);
    }

    pub fn setup_queue(&mut self, q: usize, as_idx: usize, entries: u32) {
        let ring = self.alloc(u64::from(entries) * JOB_DESC_SIZE);
        let comp = self.alloc(COMPLETION_SIZE);
        let qr = |r| queue_reg(q as u64, r);
        self.wr64(qr(Q_RING_BASE_LO), ring);
        self.wr(qr(Q_RING_SIZE), entries);
        self.wr(qr(Q_AS), as_idx as u32);
        self.wr64(qr(Q_COMPLETION_LO), comp);
        self.wr(qr(Q_CONTROL), Q_CONTROL_ENABLE);
        self.ring[q] = Some((ring, comp, entries));
        self.tail[q] = self.rd(qr(Q_TAIL));
    }

    /// Writes `cmds` to a fresh buffer mapped in the queue's AS; returns
    /// its VA and length, for [`Rig::queue_desc`].
    pub fn load_cmds(&mut self, q: usize, cmds: &Builder) -> (u64, u32) {
        let bytes = cmds.bytes();
        let as_idx = self.rd(queue_reg(q as u64, Q_AS)) as usize;
        let va = self.next_cmd_va;
        let len = (bytes.len() as u64).max(8).next_multiple_of(4096);
        self.next_cmd_va += len;
        let pa = self.map_new(as_idx, va, len);
        self.poke(pa, &bytes);
        (va, bytes.len() as u32)
    }

    /// Writes `cmds` to a fresh buffer mapped in the queue's AS, and queues
    /// it without ringing the doorbell; returns the seqno.
    pub fn queue_job(&mut self, q: usize, cmds: &Builder, flags: u32) -> u64 {
        let (va, len) = self.load_cmds(q, cmds);
        self.queue_desc(q, va, len, flags)
    }

    pub fn queue_desc(&mut self, q: usize, va: u64, len: u32, flags: u32) -> u64 {
        let (ring, _, entries) = self.ring[q].unwrap();
        self.seq[q] += 1;
        let d = JobDesc {
            cmdbuf_va: va,
            cmdbuf_len: len,
            flags,
            seqno: self.seq[q],
        };
        let slot = ring + u64::from(self.tail[q] % entries) * JOB_DESC_SIZE;
        self.poke(slot, &d.to_bytes());
        self.tail[q] = self.tail[q].wrapping_add(1);
        self.seq[q]
    }

    pub fn doorbell(&self, q: usize) {
        self.wr(db_queue(q as u64), self.tail[q]);
    }

    pub fn submit(&mut self, q: usize, cmds: &Builder) -> u64 {
        let s = self.queue_job(q, cmds, JOB_FLAG_IRQ);
        self.doorbell(q);
        s
    }

    /// (seqno, status, fault status) of the last completion record of `q`.
    pub fn completion(&self, q: usize) -> (u64, u32, u32) {
        let (_, comp, _) = self.ring[q].unwrap();
        (
            self.peek64(comp),
            self.peek32(comp + 8),
            self.peek32(comp + 12),
        )
    }

    pub fn run(&self) -> usize {
        self.gpu.run_until_idle(1_000_000)
    }

    /// Submits `cmds` on queue 0 (AS 0, set up if needed), runs it to the end.
    pub fn exec(&mut self, cmds: &Builder) -> (u64, u32, u32) {
        if self.ring[0].is_none() {
            self.setup_as(0, TRANSCFG_ENABLE);
            self.setup_queue(0, 0, 16);
        }
        self.submit(0, cmds);
        self.run();
        self.completion(0)
    }
}
