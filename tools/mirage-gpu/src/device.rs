//! The register file of BAR0: what a driver sees through MMIO.
//!
//! It is transport-independent: the vfio-user server and the host tests
//! both drive it through [`Device::mmio_read`] and [`Device::mmio_write`].

use crate::dma::GuestMemory;
use crate::irq::IrqSink;
use crate::regs::*;
use std::sync::Arc;

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
}

struct Regs {
    scratch: u32,
    irq_rawstat: u32,
    irq_mask: u32,
    ping_count: u32,
    ping_value: u32,
    dma_addr: u64,
    dma_len: u32,
    dma_pattern: u32,
    dma_status: u32,
}

impl Regs {
    const RESET: Regs = Regs {
        scratch: 0,
        irq_rawstat: 0,
        irq_mask: 0,
        ping_count: 0,
        ping_value: 0,
        dma_addr: 0,
        dma_len: 0,
        dma_pattern: 0,
        dma_status: DMA_IDLE,
    };
}

pub struct Device {
    cfg: Config,
    regs: Regs,
    irq: Arc<dyn IrqSink>,
    mem: Arc<GuestMemory>,
}

impl Device {
    pub fn new(cfg: Config, irq: Arc<dyn IrqSink>, mem: Arc<GuestMemory>) -> Self {
        Device {
            cfg,
            regs: Regs::RESET,
            irq,
            mem,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Function-level reset: every register returns to its reset value.
    pub fn reset(&mut self) {
        self.regs = Regs::RESET;
    }

    fn read32(&self, off: u64) -> u32 {
        let r = &self.regs;
        match off {
            ID if self.cfg.inject.bad_id => !ID_MAGIC,
            ID => ID_MAGIC,
            VERSION => (u32::from(VERSION_MAJOR) << 16) | u32::from(VERSION_MINOR),
            FEATURES => FEATURE_VRAM | FEATURE_PING | FEATURE_DMA_FILL,
            SCRATCH => r.scratch,
            VRAM_SIZE_LO => self.cfg.vram_size as u32,
            VRAM_SIZE_HI => (self.cfg.vram_size >> 32) as u32,
            VA_BITS => GPU_VA_BITS,
            PGSIZE_BITMAP => GPU_PGSIZE_BITMAP,
            IRQ_RAWSTAT => r.irq_rawstat,
            IRQ_MASK => r.irq_mask,
            IRQ_STATUS => r.irq_rawstat & r.irq_mask,
            PING_COUNT => r.ping_count,
            PING_VALUE => r.ping_value,
            DMA_ADDR_LO => r.dma_addr as u32,
            DMA_ADDR_HI => (r.dma_addr >> 32) as u32,
            DMA_LEN => r.dma_len,
            DMA_PATTERN => r.dma_pattern,
            DMA_STATUS => r.dma_status,
            // Write-only and unassigned offsets read as zero, as on most GPUs.
            _ => 0,
        }
    }

    fn write32(&mut self, off: u64, val: u32) {
        match off {
            SCRATCH => self.regs.scratch = val,
            DMA_ADDR_LO => {
                self.regs.dma_addr = (self.regs.dma_addr & !0xffff_ffff) | u64::from(val)
            }
            DMA_ADDR_HI => {
                self.regs.dma_addr = (self.regs.dma_addr & 0xffff_ffff) | (u64::from(val) << 32)
            }
            DMA_LEN => self.regs.dma_len = val,
            DMA_PATTERN => self.regs.dma_pattern = val,
            DB_DMA_FILL => {
                self.regs.dma_status = self.dma_fill();
                self.raise(IRQ_DMA);
            }
            IRQ_CLEAR => self.regs.irq_rawstat &= !val,
            IRQ_MASK => {
                let newly = val & !self.regs.irq_mask & self.regs.irq_rawstat;
                self.regs.irq_mask = val & IRQ_ALL;
                if newly != 0 {
                    self.signal();
                }
            }
            DB_PING => {
                self.regs.ping_count = self.regs.ping_count.wrapping_add(1);
                self.regs.ping_value = val;
                self.raise(IRQ_PING);
            }
            // Read-only and unassigned registers ignore writes.
            _ => {}
        }
    }

    /// Fills `DMA_LEN` bytes at `DMA_ADDR` with the 32-bit `DMA_PATTERN`.
    fn dma_fill(&self) -> u32 {
        let r = &self.regs;
        if r.dma_len == 0 || !r.dma_len.is_multiple_of(4) || r.dma_len > DMA_MAX_LEN {
            return DMA_INVALID;
        }
        let buf: Vec<u8> = r
            .dma_pattern
            .to_le_bytes()
            .into_iter()
            .cycle()
            .take(r.dma_len as usize)
            .collect();
        match self.mem.write(r.dma_addr, &buf) {
            Ok(()) => DMA_DONE,
            Err(_) => DMA_FAULT,
        }
    }

    /// Latches `bits` in IRQ_RAWSTAT and interrupts if any of them is unmasked.
    pub fn raise(&mut self, bits: u32) {
        self.regs.irq_rawstat |= bits;
        if bits & self.regs.irq_mask != 0 {
            self.signal();
        }
    }

    fn signal(&self) {
        if !self.cfg.inject.drop_irqs {
            self.irq.raise(0);
        }
    }

    /// Reads `data.len()` bytes (1, 2, 4 or 8, naturally aligned) at `off`.
    /// Other shapes read as zero rather than failing, as a PCIe device
    /// completes any request.
    pub fn mmio_read(&mut self, off: u64, data: &mut [u8]) {
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
    pub fn mmio_write(&mut self, off: u64, data: &[u8]) {
        let len = data.len() as u64;
        if !matches!(len, 4 | 8) || !off.is_multiple_of(len) || off + len > BAR0_SIZE {
            return;
        }
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let val = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.write32(off + 4 * i as u64, val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::CountingIrqs;

    fn dev(inject: Inject) -> (Device, Arc<CountingIrqs>) {
        let (d, irqs, _) = dev_mem(inject);
        (d, irqs)
    }

    fn dev_mem(inject: Inject) -> (Device, Arc<CountingIrqs>, Arc<GuestMemory>) {
        let irqs = Arc::new(CountingIrqs::default());
        let mem = Arc::new(GuestMemory::default());
        let cfg = Config {
            vram_size: 64 << 20,
            inject,
        };
        (Device::new(cfg, irqs.clone(), mem.clone()), irqs, mem)
    }

    fn rd(d: &mut Device, off: u64) -> u32 {
        let mut b = [0u8; 4];
        d.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(d: &mut Device, off: u64, v: u32) {
        d.mmio_write(off, &v.to_le_bytes());
    }

    #[test]
    fn identity_registers() {
        let (mut d, _) = dev(Inject::default());
        assert_eq!(rd(&mut d, ID), 0x4741_524d);
        assert_eq!(rd(&mut d, VERSION), 0x0001_0000);
        assert_eq!(rd(&mut d, FEATURES), 0b111);
        assert_eq!(rd(&mut d, VRAM_SIZE_LO), 64 << 20);
        assert_eq!(rd(&mut d, VRAM_SIZE_HI), 0);
        assert_eq!(rd(&mut d, VA_BITS), 48);
        assert_eq!(rd(&mut d, PGSIZE_BITMAP), 0x4020_1000);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let (mut d, _) = dev(Inject::default());
        for off in [
            ID,
            VERSION,
            FEATURES,
            VRAM_SIZE_LO,
            VA_BITS,
            IRQ_STATUS,
            PING_COUNT,
        ] {
            let before = rd(&mut d, off);
            wr(&mut d, off, 0xdead_beef);
            assert_eq!(rd(&mut d, off), before, "offset {off:#x}");
        }
    }

    #[test]
    fn vram_size_above_4g_splits_across_two_registers() {
        let irqs = Arc::new(CountingIrqs::default());
        let cfg = Config {
            vram_size: (5 << 32) | 0x20_0000,
            inject: Inject::default(),
        };
        let mut d = Device::new(cfg, irqs, Arc::new(GuestMemory::default()));
        assert_eq!(rd(&mut d, VRAM_SIZE_LO), 0x20_0000);
        assert_eq!(rd(&mut d, VRAM_SIZE_HI), 5);
        let mut b = [0u8; 8];
        d.mmio_read(VRAM_SIZE_LO, &mut b);
        assert_eq!(u64::from_le_bytes(b), (5 << 32) | 0x20_0000);
    }

    #[test]
    fn scratch_reads_back_and_resets() {
        let (mut d, _) = dev(Inject::default());
        wr(&mut d, SCRATCH, 0x1234_5678);
        assert_eq!(rd(&mut d, SCRATCH), 0x1234_5678);
        let mut b = [0u8; 2];
        d.mmio_read(SCRATCH + 2, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x1234);
        d.reset();
        assert_eq!(rd(&mut d, SCRATCH), 0);
    }

    #[test]
    fn misaligned_or_odd_accesses_do_nothing() {
        let (mut d, _) = dev(Inject::default());
        wr(&mut d, SCRATCH, 7);
        d.mmio_write(SCRATCH + 1, &9u32.to_le_bytes());
        d.mmio_write(SCRATCH, &[1, 2]);
        assert_eq!(rd(&mut d, SCRATCH), 7);
        let mut b = [0xffu8; 4];
        d.mmio_read(SCRATCH + 2, &mut b);
        assert_eq!(b, [0; 4]);
        let mut b = [0xffu8; 3];
        d.mmio_read(SCRATCH, &mut b);
        assert_eq!(b, [0; 3]);
        let mut b = [0xffu8; 4];
        d.mmio_read(BAR0_SIZE, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn ping_latches_but_masked_ping_does_not_interrupt() {
        let (mut d, irqs) = dev(Inject::default());
        wr(&mut d, DB_PING, 0xabcd);
        assert_eq!(rd(&mut d, IRQ_RAWSTAT), IRQ_PING);
        assert_eq!(rd(&mut d, IRQ_STATUS), 0);
        assert_eq!(rd(&mut d, PING_COUNT), 1);
        assert_eq!(rd(&mut d, PING_VALUE), 0xabcd);
        assert_eq!(irqs.get(0), 0);
        // Unmasking a pending source interrupts at once.
        wr(&mut d, IRQ_MASK, IRQ_PING);
        assert_eq!(irqs.get(0), 1);
        assert_eq!(rd(&mut d, IRQ_STATUS), IRQ_PING);
    }

    #[test]
    fn unmasked_ping_interrupts_and_clear_acks() {
        let (mut d, irqs) = dev(Inject::default());
        wr(&mut d, IRQ_MASK, IRQ_PING);
        wr(&mut d, DB_PING, 1);
        wr(&mut d, DB_PING, 2);
        assert_eq!(irqs.get(0), 2);
        assert_eq!(rd(&mut d, PING_COUNT), 2);
        assert_eq!(rd(&mut d, IRQ_STATUS), IRQ_PING);
        wr(&mut d, IRQ_CLEAR, IRQ_PING);
        assert_eq!(rd(&mut d, IRQ_RAWSTAT), 0);
        assert_eq!(rd(&mut d, IRQ_STATUS), 0);
        // Re-unmasking with nothing pending does not interrupt.
        wr(&mut d, IRQ_MASK, 0);
        wr(&mut d, IRQ_MASK, IRQ_PING);
        assert_eq!(irqs.get(0), 2);
    }

    #[test]
    fn mask_keeps_only_existing_sources() {
        let (mut d, _) = dev(Inject::default());
        wr(&mut d, IRQ_MASK, u32::MAX);
        assert_eq!(rd(&mut d, IRQ_MASK), IRQ_ALL);
    }

    fn program_fill(d: &mut Device, addr: u64, len: u32, pattern: u32) {
        wr(d, DMA_ADDR_LO, addr as u32);
        wr(d, DMA_ADDR_HI, (addr >> 32) as u32);
        wr(d, DMA_LEN, len);
        wr(d, DMA_PATTERN, pattern);
        wr(d, DB_DMA_FILL, 1);
    }

    #[test]
    fn dma_fill_writes_guest_memory_and_interrupts() {
        let (mut d, irqs, mem) = dev_mem(Inject::default());
        let mut ram = vec![0u8; 8192];
        // SAFETY: `ram` outlives every access `d` makes below.
        unsafe { mem.map_host(0x1_0000_0000, ram.as_mut_ptr(), 8192) };
        wr(&mut d, IRQ_MASK, IRQ_DMA);
        program_fill(&mut d, 0x1_0000_0ff0, 24, 0xcafe_f00d);
        assert_eq!(rd(&mut d, DMA_STATUS), DMA_DONE);
        assert_eq!(rd(&mut d, IRQ_STATUS), IRQ_DMA);
        assert_eq!(irqs.get(0), 1);
        assert_eq!(rd(&mut d, DMA_ADDR_HI), 1);
        mem.clear();
        assert!(ram[..0xff0].iter().all(|&b| b == 0));
        for w in ram[0xff0..0xff0 + 24].chunks(4) {
            assert_eq!(w, 0xcafe_f00du32.to_le_bytes());
        }
        assert!(ram[0xff0 + 24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn dma_fill_rejects_bad_lengths_and_unmapped_memory() {
        let (mut d, irqs, mem) = dev_mem(Inject::default());
        let mut ram = vec![0u8; 4096];
        // SAFETY: `ram` outlives every access `d` makes below.
        unsafe { mem.map_host(0x2000, ram.as_mut_ptr(), 4096) };
        wr(&mut d, IRQ_MASK, IRQ_DMA);
        for len in [0, 6, DMA_MAX_LEN + 4] {
            program_fill(&mut d, 0x2000, len, 1);
            assert_eq!(rd(&mut d, DMA_STATUS), DMA_INVALID, "len {len}");
        }
        // Straddles the end of the mapping: faults, writes nothing.
        program_fill(&mut d, 0x2ff0, 32, 0xffff_ffff);
        assert_eq!(rd(&mut d, DMA_STATUS), DMA_FAULT);
        assert_eq!(irqs.get(0), 4);
        mem.clear();
        assert!(ram.iter().all(|&b| b == 0));
    }

    #[test]
    fn injected_faults() {
        let (mut d, irqs) = dev("bad-id,drop-irqs".parse().unwrap());
        assert_ne!(rd(&mut d, ID), ID_MAGIC);
        wr(&mut d, IRQ_MASK, IRQ_PING);
        wr(&mut d, DB_PING, 1);
        assert_eq!(rd(&mut d, IRQ_STATUS), IRQ_PING);
        assert_eq!(irqs.get(0), 0);
        assert_eq!(
            "bogus".parse::<Inject>(),
            Err("unknown injection 'bogus'".into())
        );
        assert_eq!("".parse::<Inject>(), Ok(Inject::default()));
    }
}
