//! The DMA fill engine (DMA_ADDR, DMA_LEN, DMA_PATTERN, DB_DMA_FILL).

use super::{lock, Gpu};
use crate::bus::Target;
use crate::regs::*;

impl Gpu {
    /// Fills `DMA_LEN` bytes at `DMA_ADDR` with the 32-bit `DMA_PATTERN`.
    pub(super) fn dma_fill(&self) -> u32 {
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
        // System memory only (the manual's contract), and through the bus
        // like every other device access, so that bus mastering and
        // injected errors apply to fills too.
        if self.bus.target(addr) != Target::System {
            return DMA_FAULT;
        }
        match self.bus.write(addr, &buf) {
            Ok(()) => DMA_DONE,
            Err(_) => DMA_FAULT,
        }
    }
}
