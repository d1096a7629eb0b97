// SPDX-License-Identifier: GPL-2.0 or MIT

//! BAR0 register map of the mirage virtual GPU.
//!
//! `Documentation/gpu/mirage.rst` is the normative description; the device
//! model in `tools/mirage-gpu/src/regs.rs` implements the same offsets.

/// Bytes of BAR0 the driver maps; I/O offsets below it are checked at build time.
pub(crate) const BAR0_SIZE: usize = 0x2000;

/// ASCII "MRAG" read as a little-endian u32.
pub(crate) const ID_MAGIC: u32 = u32::from_le_bytes(*b"MRAG");
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

pub(crate) const DB_PING: usize = 0x1000;
pub(crate) const DB_DMA_FILL: usize = 0x1004;

pub(crate) const IRQ_PING: u32 = 1 << 0;
pub(crate) const IRQ_DMA: u32 = 1 << 1;

/// DMA_STATUS after a fill that wrote every byte.
pub(crate) const DMA_DONE: u32 = 1;
