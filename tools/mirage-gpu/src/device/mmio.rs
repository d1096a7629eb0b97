//! BAR0: one decode of an offset into the block it belongs to, and the
//! global registers and doorbells.

use super::{lock, set_hi, set_lo, Gpu};
use crate::regs::*;

/// Where a dword offset of BAR0 lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Global(u64),
    Doorbell(u64),
    /// Address space n, register offset.
    As(usize, u64),
    /// Queue n, register offset.
    Queue(usize, u64),
    Unassigned,
}

/// Whether `[off, off + len)` lies in BAR0; the transport's offset is not
/// trusted not to wrap.
fn in_bar0(off: u64, len: u64) -> bool {
    off.checked_add(len).is_some_and(|end| end <= BAR0_SIZE)
}

fn decode(off: u64) -> Block {
    match off {
        0x000..=0x0ff => Block::Global(off),
        DOORBELL_BASE..=0x1fff => Block::Doorbell(off),
        AS_BASE..AS_END => Block::As(
            ((off - AS_BASE) / AS_STRIDE) as usize,
            (off - AS_BASE) % AS_STRIDE,
        ),
        QUEUE_BASE..QUEUE_END => Block::Queue(
            ((off - QUEUE_BASE) / QUEUE_STRIDE) as usize,
            (off - QUEUE_BASE) % QUEUE_STRIDE,
        ),
        _ => Block::Unassigned,
    }
}

impl Gpu {
    /// Reads `data.len()` bytes (1, 2, 4 or 8, naturally aligned) at `off`.
    /// Other shapes read as zero rather than failing, as a PCIe device
    /// completes any request.
    pub fn mmio_read(&self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || !off.is_multiple_of(len) || !in_bar0(off, len) {
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
        if !matches!(len, 4 | 8) || !off.is_multiple_of(len) || !in_bar0(off, len) {
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

    fn read32(&self, off: u64) -> u32 {
        match decode(off) {
            Block::Global(off) => self.read_global(off),
            Block::As(n, reg) => self.read_as_reg(n, reg),
            Block::Queue(q, reg) => self.read_queue_reg(q, reg),
            // Doorbells, write-only and unassigned offsets read as zero.
            Block::Doorbell(_) | Block::Unassigned => 0,
        }
    }

    fn write32(&self, off: u64, val: u32) {
        match decode(off) {
            Block::Global(off) => self.write_global(off, val),
            Block::Doorbell(off) => self.doorbell(off, val),
            Block::As(n, reg) => self.write_as_reg(n, reg, val),
            Block::Queue(q, reg) => self.write_queue_reg(q, reg, val),
            Block::Unassigned => {}
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

    fn write_global(&self, off: u64, val: u32) {
        match off {
            GPU_COMMAND if val == GPU_CMD_SOFT_RESET => return self.soft_reset(),
            MMU_FAULT_CLEAR => return self.mmu_fault_clear(val),
            _ => {}
        }
        let mut g = lock(&self.globals);
        if g.faultq.size != 0
            && matches!(
                off,
                FAULTQ_BASE_LO | FAULTQ_BASE_HI | FAULTQ_TAIL_WB_LO | FAULTQ_TAIL_WB_HI
            )
        {
            // As for queues: an engine must never see half of a new address.
            log::debug!("write {val:#x} to {off:#x} ignored: the fault queue is on");
            return;
        }
        match off {
            SCRATCH => g.scratch = val,
            IRQ_CLEAR => g.irq_rawstat &= !val,
            IRQ_MASK => {
                let newly = val & !g.irq_mask & g.irq_rawstat;
                g.irq_mask = val & IRQ_ALL;
                if newly != 0 && self.should_send(&mut g) {
                    drop(g);
                    self.send_msi();
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

    fn doorbell(&self, off: u64, val: u32) {
        match off {
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
            _ => {}
        }
    }

    fn read_as_reg(&self, n: usize, reg: u64) -> u32 {
        let a = lock(&self.aspaces[n]);
        match reg {
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

    fn write_as_reg(&self, n: usize, reg: u64, val: u32) {
        if reg == AS_COMMAND {
            return self.as_command(n, val);
        }
        let mut a = lock(&self.aspaces[n]);
        match reg {
            AS_TRANSTAB_LO => set_lo(&mut a.pending.transtab, val),
            AS_TRANSTAB_HI => set_hi(&mut a.pending.transtab, val),
            AS_MEMATTR_LO => set_lo(&mut a.pending.memattr, val),
            AS_MEMATTR_HI => set_hi(&mut a.pending.memattr, val),
            AS_LOCKADDR_LO => set_lo(&mut a.lockaddr, val),
            AS_LOCKADDR_HI => set_hi(&mut a.lockaddr, val),
            AS_TRANSCFG => a.pending.transcfg = val & (TRANSCFG_ENABLE | TRANSCFG_STALL),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_covers_every_block() {
        assert_eq!(decode(SCRATCH), Block::Global(SCRATCH));
        assert_eq!(decode(db_queue(7)), Block::Doorbell(db_queue(7)));
        assert_eq!(decode(as_reg(15, AS_TRANSCFG)), Block::As(15, AS_TRANSCFG));
        assert_eq!(decode(AS_END), Block::Unassigned);
        assert_eq!(decode(queue_reg(3, Q_ERROR)), Block::Queue(3, Q_ERROR));
        assert_eq!(decode(QUEUE_END), Block::Unassigned);
        assert_eq!(decode(0x100), Block::Unassigned);
        assert_eq!(decode(MSIX_TABLE), Block::Unassigned);
    }
}
