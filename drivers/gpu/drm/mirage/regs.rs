// SPDX-License-Identifier: GPL-2.0 or MIT

//! BAR0 register map of the mirage virtual GPU.
//!
//! `Documentation/gpu/mirage.rst` is the normative description; the device
//! model in `tools/mirage-gpu/src/regs.rs` implements the same offsets.

/// Bytes of BAR0 the driver maps; I/O offsets below it are checked at build time.
pub(crate) const BAR0_SIZE: usize = 0x4000;

/// ASCII "MRAG" read as a little-endian u32.
pub(crate) const ID_MAGIC: u32 = u32::from_le_bytes(*b"MRAG");
/// Device-physical base of VRAM; system memory bus addresses must stay below it.
pub(crate) const DMA_BITS: u32 = 47;
/// The only hardware major version this driver speaks.
pub(crate) const VERSION_MAJOR: u32 = 1;

pub(crate) const ID: usize = 0x000;
pub(crate) const VERSION: usize = 0x004;
pub(crate) const FEATURES: usize = 0x008;
pub(crate) const VRAM_SIZE_LO: usize = 0x010;
pub(crate) const VRAM_SIZE_HI: usize = 0x014;
pub(crate) const VA_BITS: usize = 0x018;
pub(crate) const PGSIZE_BITMAP: usize = 0x01c;
pub(crate) const IRQ_RAWSTAT: usize = 0x020;
pub(crate) const IRQ_CLEAR: usize = 0x024;
pub(crate) const IRQ_MASK: usize = 0x028;
pub(crate) const IRQ_STATUS: usize = 0x02c;
pub(crate) const PING_COUNT: usize = 0x030;
pub(crate) const DMA_ADDR_LO: usize = 0x040;
pub(crate) const DMA_ADDR_HI: usize = 0x044;
pub(crate) const DMA_LEN: usize = 0x048;
pub(crate) const DMA_PATTERN: usize = 0x04c;
pub(crate) const DMA_STATUS: usize = 0x050;
pub(crate) const JOB_DONE_STATUS: usize = 0x078;
pub(crate) const JOB_DONE_CLEAR: usize = 0x07c;
pub(crate) const QUEUE_ERROR_STATUS: usize = 0x080;
pub(crate) const QUEUE_ERROR_CLEAR: usize = 0x084;

pub(crate) const DB_PING: usize = 0x1000;
pub(crate) const DB_DMA_FILL: usize = 0x1004;

/// Queue `n`'s doorbell: the new tail.
pub(crate) const fn db_queue(n: usize) -> usize {
    0x1100 + 4 * n
}

/// Address space `n`'s register `r`.
pub(crate) const fn as_reg(n: usize, r: usize) -> usize {
    0x2000 + 0x40 * n + r
}
pub(crate) const AS_TRANSTAB_LO: usize = 0x00;
pub(crate) const AS_MEMATTR_LO: usize = 0x08;
pub(crate) const AS_COMMAND: usize = 0x18;
pub(crate) const AS_FAULTSTATUS: usize = 0x1c;
pub(crate) const AS_FAULTADDRESS_LO: usize = 0x20;
pub(crate) const AS_TRANSCFG: usize = 0x30;
pub(crate) const TRANSCFG_ENABLE: u32 = 1 << 0;
pub(crate) const AS_CMD_UPDATE: u32 = 1;

/// Queue `n`'s register `r`.
pub(crate) const fn queue_reg(n: usize, r: usize) -> usize {
    0x3000 + 0x40 * n + r
}
pub(crate) const Q_RING_BASE_LO: usize = 0x00;
pub(crate) const Q_RING_SIZE: usize = 0x08;
pub(crate) const Q_AS: usize = 0x0c;
pub(crate) const Q_COMPLETION_LO: usize = 0x10;
pub(crate) const Q_CONTROL: usize = 0x20;
pub(crate) const Q_COMMAND: usize = 0x30;
pub(crate) const Q_CONTROL_ENABLE: u32 = 1 << 0;
pub(crate) const Q_CMD_RESET: u32 = 1;

pub(crate) const IRQ_PING: u32 = 1 << 0;
pub(crate) const IRQ_DMA: u32 = 1 << 1;
pub(crate) const IRQ_JOB: u32 = 1 << 2;
pub(crate) const IRQ_QUEUE_ERROR: u32 = 1 << 4;

/// DMA_STATUS after a fill that wrote every byte.
pub(crate) const DMA_DONE: u32 = 1;
