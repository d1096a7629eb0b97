//! BAR0 register map. `Documentation/gpu/mirage.rst` is the normative copy;
//! the driver's `regs.rs` mirrors these offsets.

/// Value of [`ID`]: ASCII "MRAG" read as a little-endian u32.
pub const ID_MAGIC: u32 = u32::from_le_bytes(*b"MRAG");
/// Major in bits 31:16, minor in 15:0. A driver rejects another major.
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;

/// Size of BAR0 (registers, doorbells, MSI-X table and PBA).
pub const BAR0_SIZE: u64 = 64 * 1024;

pub const ID: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const FEATURES: u64 = 0x008;
pub const SCRATCH: u64 = 0x00c;
pub const VRAM_SIZE_LO: u64 = 0x010;
pub const VRAM_SIZE_HI: u64 = 0x014;
pub const VA_BITS: u64 = 0x018;
pub const PGSIZE_BITMAP: u64 = 0x01c;
pub const IRQ_RAWSTAT: u64 = 0x020;
pub const IRQ_CLEAR: u64 = 0x024;
pub const IRQ_MASK: u64 = 0x028;
pub const IRQ_STATUS: u64 = 0x02c;
pub const PING_COUNT: u64 = 0x030;
pub const PING_VALUE: u64 = 0x034;
pub const DMA_ADDR_LO: u64 = 0x040;
pub const DMA_ADDR_HI: u64 = 0x044;
pub const DMA_LEN: u64 = 0x048;
pub const DMA_PATTERN: u64 = 0x04c;
pub const DMA_STATUS: u64 = 0x050;

/// Doorbells live on their own page so a driver may map it write-combined
/// and so that reads never need to be served on the hot path.
pub const DOORBELL_BASE: u64 = 0x1000;
pub const DB_PING: u64 = DOORBELL_BASE;
pub const DB_DMA_FILL: u64 = DOORBELL_BASE + 0x4;

/// MSI-X table and PBA, emulated by QEMU; the device never sees them.
pub const MSIX_TABLE: u64 = 0x8000;
pub const MSIX_PBA: u64 = 0xc000;
pub const MSIX_VECTORS: u16 = 4;

pub const FEATURE_VRAM: u32 = 1 << 0;
pub const FEATURE_PING: u32 = 1 << 1;
pub const FEATURE_DMA_FILL: u32 = 1 << 2;

pub const IRQ_PING: u32 = 1 << 0;
pub const IRQ_DMA: u32 = 1 << 1;
/// Every IRQ source that exists in this version of the device.
pub const IRQ_ALL: u32 = IRQ_PING | IRQ_DMA;

/// DMA_STATUS values.
pub const DMA_IDLE: u32 = 0;
pub const DMA_DONE: u32 = 1;
/// Part of the range is not mapped for DMA; nothing was written.
pub const DMA_FAULT: u32 = 2;
/// DMA_LEN is zero, not a multiple of 4, or above [`DMA_MAX_LEN`].
pub const DMA_INVALID: u32 = 3;
/// Longest fill one doorbell may ask for; it runs on the doorbell's thread.
pub const DMA_MAX_LEN: u32 = 1 << 20;

/// Virtual address bits of the GPU MMU (48-bit VA, 4 KiB granule).
pub const GPU_VA_BITS: u32 = 48;
/// 4 KiB pages, 2 MiB and 1 GiB blocks.
pub const GPU_PGSIZE_BITMAP: u32 = (1 << 12) | (1 << 21) | (1 << 30);
